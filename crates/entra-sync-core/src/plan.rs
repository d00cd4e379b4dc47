//! The plan: a pure function of (source snapshot, target state, policy, read, now) that returns
//! the actions to apply, each with its reason, and the records put aside as conflicts.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use foldhash::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

use crate::assign::{self, Assigned};
use crate::guard::ReadHealth;
use crate::map::{Attributes, Field, clean, map_user, maps_to};
use crate::model::{EntraGroup, EntraId, EntraUser, IdList, Presence, SourceSnapshot};
use crate::packed::Strings;
use crate::policy::{
    ExistingUsers, FieldSetting, GroupsToSync, MatchBy, OnDeleted, OnDisabled, OnOutOfScope, Policy,
};
use crate::scope::ScopeIndex;
use crate::target::{
    DirectoryDepartment, DirectoryGroup, DirectoryId, DirectoryUser, TargetState, UserStatus,
};

/// Why a user is deprovisioned by the sync; rendered as the directory user's `status_reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisableReason {
    /// `accountEnabled` is false in Entra: "Disabled in Microsoft".
    DisabledInMicrosoft,
    /// The Entra user was deleted (soft or hard): "Deleted in Microsoft".
    DeletedInMicrosoft,
    /// A complete full read no longer holds the Entra user (`remove_users_not_in_entra`).
    NotInEntra,
    /// The user no longer meets the scope (`on_out_of_scope`).
    OutOfScope,
}

impl DisableReason {
    /// The text stored as the directory user's `status_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            DisableReason::DisabledInMicrosoft => "Disabled in Microsoft",
            DisableReason::DeletedInMicrosoft => "Deleted in Microsoft",
            DisableReason::NotInEntra => "Not found in Microsoft",
            DisableReason::OutOfScope => "Out of sync scope",
        }
    }

    /// The reason a `status_reason` text names, if the sync wrote it.
    pub fn from_status_reason(text: &str) -> Option<DisableReason> {
        [
            DisableReason::DisabledInMicrosoft,
            DisableReason::DeletedInMicrosoft,
            DisableReason::NotInEntra,
            DisableReason::OutOfScope,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }

    /// Whether a user deprovisioned for `self` needs nothing new for `other`: a user deleted in
    /// Entra and one a full read no longer finds are both gone, so a full read after a delete
    /// does not move the reason.
    fn settles(self, other: DisableReason) -> bool {
        let gone = |reason| {
            matches!(
                reason,
                DisableReason::DeletedInMicrosoft | DisableReason::NotInEntra
            )
        };
        self == other || (gone(self) && gone(other))
    }
}

/// One field's value before and after an update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: Field,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// One thing the executor does to the target. Users and groups are named by Entra id so that
/// memberships can refer to users created in the same plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// A new directory user for an Entra user seen for the first time. A user disabled in
    /// Entra is created disabled, with `status_reason`. With `sync_departments`, `department`
    /// names the department it is created in (created earlier in the plan when missing): a new
    /// user needs no separate assignment, which would write each new user twice.
    CreateUser {
        entra_id: EntraId,
        attributes: Attributes,
        status: UserStatus,
        status_reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        department: Option<String>,
    },
    /// An existing directory user matched on first sight (`match_existing_by`): link it, then
    /// apply `changes` (empty when existing users are skipped).
    LinkUser {
        directory_id: DirectoryId,
        entra_id: EntraId,
        changes: Vec<FieldChange>,
    },
    /// Entra attributes changed.
    UpdateUser {
        directory_id: DirectoryId,
        entra_id: EntraId,
        changes: Vec<FieldChange>,
    },
    /// The ladder's first rung: blocked, kept, with `reason` as its status reason.
    DisableUser {
        directory_id: DirectoryId,
        entra_id: EntraId,
        reason: DisableReason,
    },
    /// The ladder's second rung: hidden and kept `soft_delete_retention_days`, then purged.
    SoftDeleteUser {
        directory_id: DirectoryId,
        entra_id: EntraId,
        reason: DisableReason,
    },
    /// The ladder's last rung: the directory user and its memberships are removed.
    DeleteUser {
        directory_id: DirectoryId,
        entra_id: EntraId,
        reason: DisableReason,
    },
    /// The retention period of a user the sync soft-deleted is over: personal fields, memberships
    /// and department are cleared, ids and timestamps kept as a tombstone so references stay valid.
    PurgeUser {
        directory_id: DirectoryId,
        entra_id: EntraId,
    },
    /// Re-enabled, restored or back in scope after the sync deprovisioned the user; `changes`
    /// brings the attributes up to date at the same time.
    RestoreUser {
        directory_id: DirectoryId,
        entra_id: EntraId,
        changes: Vec<FieldChange>,
    },
    CreateGroup {
        entra_id: EntraId,
        name: String,
        description: Option<String>,
    },
    /// Renamed or re-described in Entra.
    UpdateGroup {
        directory_id: DirectoryId,
        entra_id: EntraId,
        name: String,
        description: Option<String>,
    },
    /// Deleted in Entra; only groups the sync owns.
    DeleteGroup {
        directory_id: DirectoryId,
        entra_id: EntraId,
    },
    AddMembership {
        group: EntraId,
        user: EntraId,
    },
    RemoveMembership {
        group: EntraId,
        user: EntraId,
    },
    /// A department an in-scope user's department value names and the directory lacks; the
    /// directory marks it as created by the sync.
    CreateDepartment {
        name: String,
    },
    /// Assigns a user to the department of that name (case-insensitive), or to none. By Entra
    /// id, since the user may be created in the same plan.
    SetDepartment {
        user: EntraId,
        department: Option<String>,
    },
    /// A department the sync created that no user belongs to any more.
    DeleteDepartment {
        directory_id: DirectoryId,
        name: String,
    },
}

impl Action {
    /// Whether the action takes something away: a deprovision, a purge, a membership removal or
    /// a group or department deletion.
    pub fn removes(&self) -> bool {
        matches!(
            self,
            Action::DisableUser { .. }
                | Action::SoftDeleteUser { .. }
                | Action::DeleteUser { .. }
                | Action::PurgeUser { .. }
                | Action::RemoveMembership { .. }
                | Action::DeleteGroup { .. }
                | Action::DeleteDepartment { .. }
        )
    }
}

/// A record put aside instead of applied, with the reason; never aborts a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub entra_id: Option<EntraId>,
    pub directory_id: Option<DirectoryId>,
    pub reason: String,
}

/// A user a unit or role rule left without a unit or roles, listed for the admin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unassigned {
    pub entra_id: EntraId,
    /// [`Field::Unit`] or [`Field::Roles`].
    pub field: Field,
    pub reason: String,
}

/// The plan as a value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub conflicts: Vec<Conflict>,
    /// Users the unit and role rules left unassigned; they are synced all the same.
    #[serde(default)]
    pub unassigned: Vec<Unassigned>,
    /// Linked users that needed no change.
    pub unchanged: usize,
    /// Users deliberately left alone: disabled in Entra with `on_disabled = ignore`, out of scope
    /// and kept, or put in their state by someone other than the sync.
    pub skipped: usize,
}

/// The counts a run reports, as named in the `sync --json` contract.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCounts {
    pub created: usize,
    pub updated: usize,
    pub disabled: usize,
    pub soft_deleted: usize,
    pub deleted: usize,
    pub purged: usize,
    pub restored: usize,
    pub unchanged: usize,
    pub skipped: usize,
    pub conflicts: usize,
    pub unassigned: usize,
    pub groups_created: usize,
    pub groups_updated: usize,
    pub groups_deleted: usize,
    pub memberships_added: usize,
    pub memberships_removed: usize,
    pub departments_created: usize,
    pub departments_assigned: usize,
    pub departments_deleted: usize,
}

impl Plan {
    /// Counts the plan's actions by kind. A link that changes nothing counts as unchanged.
    pub fn counts(&self) -> PlanCounts {
        let mut counts = PlanCounts {
            unchanged: self.unchanged,
            skipped: self.skipped,
            conflicts: self.conflicts.len(),
            unassigned: self.unassigned.len(),
            ..PlanCounts::default()
        };
        for action in &self.actions {
            match action {
                Action::CreateUser { department, .. } => {
                    counts.created += 1;
                    // Assigned in the same write, and counted as before it was.
                    if department.is_some() {
                        counts.departments_assigned += 1;
                    }
                }
                Action::LinkUser { changes, .. } if changes.is_empty() => counts.unchanged += 1,
                Action::LinkUser { .. } | Action::UpdateUser { .. } => counts.updated += 1,
                Action::DisableUser { .. } => counts.disabled += 1,
                Action::SoftDeleteUser { .. } => counts.soft_deleted += 1,
                Action::DeleteUser { .. } => counts.deleted += 1,
                Action::PurgeUser { .. } => counts.purged += 1,
                Action::RestoreUser { .. } => counts.restored += 1,
                Action::CreateGroup { .. } => counts.groups_created += 1,
                Action::UpdateGroup { .. } => counts.groups_updated += 1,
                Action::DeleteGroup { .. } => counts.groups_deleted += 1,
                Action::AddMembership { .. } => counts.memberships_added += 1,
                Action::RemoveMembership { .. } => counts.memberships_removed += 1,
                Action::CreateDepartment { .. } => counts.departments_created += 1,
                Action::SetDepartment { .. } => counts.departments_assigned += 1,
                Action::DeleteDepartment { .. } => counts.departments_deleted += 1,
            }
        }
        counts
    }
}

/// Computes the plan after a read that is not known to be a complete full round (a delta
/// round), so `remove_users_not_in_entra` does not act: see [`plan_after_read`].
pub fn plan(source: &SourceSnapshot, target: &TargetState, policy: &Policy, now: DateTime<Utc>) -> Plan {
    let delta_round = ReadHealth {
        full_round: false,
        delta_reset: false,
        complete: true,
        users_read: source.users.len(),
    };
    plan_after_read(source, target, policy, &delta_round, now)
}

/// Computes the plan. Pure: same inputs, same plan, in a stable order.
///
/// Scope: a user must meet every scope section that has a selection ([`ScopeIndex`]). A user
/// out of scope is never created; a linked user that leaves the scope is kept as it is and no
/// longer updated (memberships included), unless `on_out_of_scope` deprovisions it. Guests and
/// disabled accounts meet the same sections: a disabled user in scope follows `on_disabled`.
///
/// Users:
/// - A user seen for the first time is linked to the one directory user that `match_existing_by`
///   finds (keys tried in order, case-insensitive), or created. A key value shared by several
///   new Entra users, by several directory users, or by a directory user linked to another Entra
///   user is a conflict: the sync never merges on a guess.
/// - A linked user follows Entra: attribute changes update it (fields `on_create` and `never`
///   keep the directory's edits), `accountEnabled: false` disables it ("Disabled in Microsoft"),
///   and re-enabling, restoring or coming back in scope restores it with its attributes.
/// - The deprovisioning ladder (`on_deleted`, `on_out_of_scope`): disable, soft-delete or delete.
///   A user the sync soft-deleted is purged to a tombstone once `soft_delete_retention_days`
///   have passed since `soft_deleted_at`, by `now`.
/// - A user disabled or soft-deleted by someone other than the sync, or purged, stays as it is.
/// - A linked user missing from the snapshot is left alone, except after a complete full read
///   with `remove_users_not_in_entra` ("Not found in Microsoft"): a delta round or a failed read
///   that misses a user must never deprovision it.
/// - A directory user without an Entra id is never changed, only linked (Architecture Invariant:
///   the sync touches only what it owns).
/// - Unit and role rules add [`Field::Unit`] and [`Field::Roles`]; users they leave unassigned
///   are listed in `unassigned`.
///
/// Departments (with `sync_departments`): every department value of a user the sync creates or
/// follows names a department, created when missing; the user is assigned to it (or to none when
/// Entra has no value). A department the sync created is removed once no user belongs to it.
///
/// Groups (with `sync_groups`): an Entra group is imported once one of its direct member users
/// is in the directory (`groups_to_sync = "scoped"`: only the scope's groups); it is renamed with
/// Entra and deleted when Entra deletes it or it leaves the snapshot. Memberships follow the
/// direct member users that are present in Entra and in the directory, disabled ones included;
/// memberships Entra no longer has are removed when `remove_group_assignments_not_in_entra` says
/// so, except in groups being deleted and of users being deleted or purged.
///
/// After an incomplete read (a round stopped short) the plan only adds and updates: it holds no
/// deprovision, purge, membership removal or deletion.
///
/// A partial read ([`crate::target::Settled`]) gives the users a delta can reach; the plan is
/// the whole read's plan: the users left out count as unchanged and keep their departments and
/// memberships.
///
/// Actions come in the order the executor needs them: departments and groups created, groups
/// updated, users created, linked, updated, restored, disabled and soft-deleted, departments
/// assigned, memberships added and removed, users deleted and purged, groups and departments
/// deleted; within a kind by Entra id (departments by name).
pub fn plan_after_read(
    source: &SourceSnapshot,
    target: &TargetState,
    policy: &Policy,
    read: &ReadHealth,
    now: DateTime<Utc>,
) -> Plan {
    let users = source.users.iter().map(|(id, user)| (id.as_str(), user));
    plan_walking(users, &source.groups, target, policy, read, now)
}

/// [`plan_after_read`] for a caller that needs no more of the users than their ids afterwards,
/// such as a whole read's commit: the users are taken by value and each is let go of once it is
/// planned, so that the snapshot and the plan's copy of its text are never both whole (at a
/// million new users, about half a gigabyte less at the plan's peak). The same plan, and the
/// users' ids.
pub fn plan_after_read_taking(
    users: BTreeMap<EntraId, EntraUser>,
    groups: &BTreeMap<EntraId, EntraGroup>,
    target: &TargetState,
    policy: &Policy,
    read: &ReadHealth,
    now: DateTime<Utc>,
) -> (Plan, IdList) {
    let ids = IdList::of(users.keys().map(String::as_str));
    let plan = plan_walking(
        ids.iter().zip(users.into_values()),
        groups,
        target,
        policy,
        read,
        now,
    );
    (plan, ids)
}

/// The plan of [`plan_after_read`] from the snapshot's users in Entra id order, each named by
/// its id as the planner keeps it, and borrowed or owned: an owned user is let go of once it
/// is planned.
fn plan_walking<'a, U: Borrow<EntraUser>>(
    users: impl Iterator<Item = (&'a str, U)>,
    groups: &'a BTreeMap<EntraId, EntraGroup>,
    target: &'a TargetState,
    policy: &'a Policy,
    read: &ReadHealth,
    now: DateTime<Utc>,
) -> Plan {
    let mut planner = Planner::new(groups, target, policy, now);
    // Room for the most actions the plan can hold, reserved once: growing the buffer copied
    // it whole, old beside new (at a million users, 0.13 GB beside 0.16 GB). Room never
    // written to is address space, not memory.
    let room = most_actions(users.size_hint().0, groups, target, policy);
    planner.plan.actions.reserve_exact(room);
    planner.plan_users(users, target, read.full_round && read.complete);
    if policy.sync_departments {
        planner.plan_departments(target);
    }
    if policy.sync_groups {
        planner.plan_groups(groups, target);
    }
    let mut plan = planner.plan;
    if !read.complete {
        // What a read that stopped short did not reach looks gone (a full round) or out of
        // scope (a groups round cut short): nothing may be taken away on its word.
        plan.actions.retain(|action| !action.removes());
    }
    sort_actions(&mut plan.actions);
    plan.conflicts
        .sort_by(|left, right| left.entra_id.cmp(&right.entra_id));
    plan.unassigned
        .sort_by(|left, right| (&left.entra_id, left.field).cmp(&(&right.entra_id, right.field)));
    plan
}

/// The most actions a plan of `users` snapshot users can hold: two a user (a link and a
/// disable), one a linked user the snapshot lacks, a department created and assigned a user and
/// one deleted a department, and for the groups one a group, one an owned group and one a
/// membership Entra or the directory holds.
fn most_actions(
    users: usize,
    groups: &BTreeMap<EntraId, EntraGroup>,
    target: &TargetState,
    policy: &Policy,
) -> usize {
    let mut most = 2 * users + target.users.len();
    if policy.sync_departments {
        most += 2 * users + target.departments.len();
    }
    if policy.sync_groups {
        let members: usize = groups.values().map(|group| group.member_users.len()).sum();
        most += groups.len() + target.groups.len() + members + target.memberships.len();
    }
    most
}

/// A rung of the deprovisioning ladder.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rung {
    Disable,
    SoftDelete,
    Delete,
}

impl From<OnDeleted> for Rung {
    fn from(on_deleted: OnDeleted) -> Self {
        match on_deleted {
            OnDeleted::Disable => Rung::Disable,
            OnDeleted::SoftDelete => Rung::SoftDelete,
            OnDeleted::Delete => Rung::Delete,
        }
    }
}

/// Which kind of write a field change belongs to, for the field settings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Linking an existing directory user: `on_create` fields fill only values it lacks.
    Link,
    /// Following Entra on a linked user: only `always` fields.
    Update,
}

/// One planning pass over borrowed inputs.
struct Planner<'a> {
    policy: &'a Policy,
    now: DateTime<Utc>,
    scope: ScopeIndex<'a>,
    /// Directory users the sync owns, sorted by Entra id. A sorted list rather than a map: the
    /// users pass merges it with the snapshot's ordered users, which costs no lookups.
    linked: Vec<(&'a str, &'a DirectoryUser)>,
    /// Entra users this plan links or creates, in order; with `linked`, the users in the
    /// directory once the plan is applied. Sorted lists, since newcomers are planned in id
    /// order: a first sync puts a million users in them, and a hash set of a million ids took
    /// twice the room.
    joined: Vec<&'a str>,
    /// Entra users this plan creates, in order: their department is in their `CreateUser`.
    created: Vec<&'a str>,
    /// Directory users claimed by a link in this plan, so two Entra users never link to one.
    claimed: BTreeSet<DirectoryId>,
    /// Linked users out of scope and kept: the sync changes nothing of theirs, memberships
    /// included. This set and the two below are only asked whether they hold a user: hash sets
    /// with a fast hash.
    frozen: HashSet<&'a str>,
    /// Users this plan deletes or purges: their memberships and department go with them.
    removed: HashSet<&'a str>,
    /// The department value of each user the plan creates, links or follows.
    departments: BTreeMap<&'a str, Option<DepartmentName>>,
    department_names: DepartmentNames,
    /// The snapshot's users in order, and those it holds as gone: what is asked of the users
    /// once the walk may have let go of them.
    ids: Vec<&'a str>,
    absent: HashSet<&'a str>,
    plan: Plan,
}

/// What the planner keeps of a user seen for the first time until every newcomer's match keys
/// are known: the user itself may be let go of by then.
struct Newcomer<'a> {
    id: &'a str,
    attributes: Attributes,
    account_enabled: Option<bool>,
    department: Option<DepartmentName>,
}

/// The newcomers' match keys, their values in one text: a string of its own each was 80 bytes a
/// key at a million newcomers, at the plan's peak.
#[derive(Default)]
struct MatchKeys {
    values: Strings,
    kinds: Vec<MatchBy>,
}

impl MatchKeys {
    fn push(&mut self, by: MatchBy, value: &str) {
        self.values.push(value);
        self.kinds.push(by);
    }

    fn len(&self) -> usize {
        self.kinds.len()
    }

    fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    fn get(&self, index: usize) -> (MatchBy, &str) {
        (self.kinds[index], self.values.get(index))
    }
}

/// A department value, by its index in [`DepartmentNames`].
type DepartmentName = u32;

/// The department values users hold, each once: a million users name a few hundred, and a
/// user's own text may be let go of before the departments are planned.
#[derive(Default)]
struct DepartmentNames {
    names: Vec<String>,
    indexes: HashMap<String, DepartmentName>,
}

impl DepartmentNames {
    fn intern(&mut self, name: Option<&str>) -> Option<DepartmentName> {
        let name = name?;
        if let Some(&index) = self.indexes.get(name) {
            return Some(index);
        }
        let index = self.names.len() as DepartmentName;
        self.names.push(name.to_owned());
        self.indexes.insert(name.to_owned(), index);
        Some(index)
    }

    fn name(&self, index: DepartmentName) -> &str {
        &self.names[index as usize]
    }
}

impl<'a> Planner<'a> {
    fn new(
        groups: &'a BTreeMap<EntraId, EntraGroup>,
        target: &'a TargetState,
        policy: &'a Policy,
        now: DateTime<Utc>,
    ) -> Self {
        let mut linked: Vec<(&str, &DirectoryUser)> = target
            .users
            .iter()
            .filter_map(|user| Some((user.entra_id.as_deref()?, user)))
            .collect();
        // The store keeps one directory user per Entra id; should two claim one, the first (in
        // the target's order, which the stable sort keeps) is the one the sync follows.
        linked.sort_by(|left, right| left.0.cmp(right.0));
        linked.dedup_by(|later, earlier| later.0 == earlier.0);
        Planner {
            policy,
            now,
            scope: ScopeIndex::new(&policy.scope, groups),
            linked,
            joined: Vec::new(),
            created: Vec::new(),
            claimed: BTreeSet::new(),
            frozen: HashSet::default(),
            removed: HashSet::default(),
            departments: BTreeMap::new(),
            department_names: DepartmentNames::default(),
            ids: Vec::new(),
            absent: HashSet::default(),
            plan: Plan::default(),
        }
    }

    /// Whether the snapshot holds the user, present or not.
    fn in_source(&self, entra_id: &str) -> bool {
        self.ids.binary_search_by(|&id| id.cmp(entra_id)).is_ok()
    }

    /// Whether the snapshot holds the user as present in Entra.
    fn present_in_source(&self, entra_id: &str) -> bool {
        self.in_source(entra_id) && !self.absent.contains(entra_id)
    }

    fn linked_user(&self, entra_id: &str) -> Option<&'a DirectoryUser> {
        self.linked
            .binary_search_by(|&(linked, _)| linked.cmp(entra_id))
            .ok()
            .map(|index| self.linked[index].1)
    }

    fn plan_users<U: Borrow<EntraUser>>(
        &mut self,
        users: impl Iterator<Item = (&'a str, U)>,
        target: &'a TargetState,
        full_read: bool,
    ) {
        self.plan.unchanged += target.settled.linked_users;
        self.ids.reserve_exact(users.size_hint().0);
        // New users wait until all are mapped, so that a key two of them share is a conflict
        // for both whichever comes first. Their keys go in one list, `key_ends[i]` closing the
        // i-th newcomer's: a list of its own per newcomer was two allocations each, at a
        // million newcomers. Room for every user to be one is reserved once: room never
        // written to is address space, and growing the lists copied them, old beside new.
        let most = users.size_hint().0;
        let mut newcomers: Vec<Newcomer> = Vec::with_capacity(most);
        let mut keys = MatchKeys::default();
        let mut key_ends: Vec<usize> = Vec::with_capacity(most);
        let mut cursor = 0;
        for (id, walked) in users {
            let user = walked.borrow();
            self.ids.push(id);
            if user.presence != Presence::Present {
                self.absent.insert(id);
            }
            while self.linked.get(cursor).is_some_and(|&(linked, _)| linked < id) {
                cursor += 1;
            }
            let directory_user = self
                .linked
                .get(cursor)
                .filter(|&&(linked, _)| linked == id)
                .map(|&(_, directory_user)| directory_user);
            if let Some(directory_user) = directory_user {
                self.plan_linked(id, user, directory_user);
            } else if user.presence == Presence::Present && self.scope.decide(user).is_in() {
                match self.desired(user) {
                    Ok(attributes) => {
                        for (by, value) in match_keys(self.policy, user, &attributes) {
                            keys.push(by, &value);
                        }
                        key_ends.push(keys.len());
                        let department = user.department().and_then(clean);
                        newcomers.push(Newcomer {
                            id,
                            attributes,
                            account_enabled: user.account_enabled,
                            department: self.department_names.intern(department),
                        });
                    }
                    Err(problem) => self.conflict(id, None, problem),
                }
            }
            // An unlinked user gone from Entra, or out of scope, has nothing in the directory.
        }
        for index in 0..self.linked.len() {
            let (entra_id, directory_user) = self.linked[index];
            if self.in_source(entra_id) {
                continue;
            }
            if full_read && self.policy.remove_users_not_in_entra {
                let rung = Rung::from(self.policy.on_deleted);
                self.deprovision(entra_id, directory_user, rung, DisableReason::NotInEntra);
            } else if directory_user.status == UserStatus::SoftDeleted && disabled_by_sync(directory_user) {
                // The retention the sync started runs out even when Entra has forgotten the user.
                self.purge_if_due(entra_id, directory_user);
            }
        }
        let keys_of =
            |index: usize| index.checked_sub(1).map_or(0, |before| key_ends[before])..key_ends[index];
        // The keys in key order (ties by newcomer), so that the newcomers sharing one sit side
        // by side: a hash map of every key was 50 MB at a million newcomers, at the plan's peak.
        let mut in_order: Vec<usize> = (0..keys.len()).collect();
        in_order
            .sort_unstable_by(|&left, &right| keys.get(left).cmp(&keys.get(right)).then(left.cmp(&right)));
        let holder = |key: usize| newcomers[key_ends.partition_point(|&end| end <= key)].id;
        // Hash maps: they are only asked for a key. With foldhash's hash rather than the
        // standard SipHash, which was a tenth of a million-user plan's time.
        let mut shared: HashMap<(MatchBy, &str), Vec<&str>> = HashMap::default();
        for run in in_order.chunk_by(|&left, &right| keys.get(left) == keys.get(right)) {
            if let [first, _, ..] = run {
                shared.insert(keys.get(*first), run.iter().map(|&key| holder(key)).collect());
            }
        }
        // Directory users by key, limited to the keys of new users: a run without new users does
        // not index the directory at all.
        let mut by_key: HashMap<(MatchBy, &str), Vec<&DirectoryUser>> = HashMap::default();
        if !keys.is_empty() {
            for directory_user in &target.users {
                for &by in &self.policy.match_existing_by {
                    for value in directory_keys(directory_user, by) {
                        let key = (by, value.as_str());
                        let Ok(found) = in_order.binary_search_by(|&held| keys.get(held).cmp(&key)) else {
                            continue;
                        };
                        let users = by_key.entry(keys.get(in_order[found])).or_default();
                        if users.last().is_none_or(|last| last.id != directory_user.id) {
                            users.push(directory_user);
                        }
                    }
                }
            }
        }
        drop(in_order);
        self.joined.reserve_exact(newcomers.len());
        self.created.reserve_exact(newcomers.len());
        for (index, newcomer) in newcomers.into_iter().enumerate() {
            let keys = keys_of(index).map(|key| keys.get(key));
            self.plan_newcomer(newcomer, keys, &shared, &by_key);
        }
    }

    /// An Entra user with no directory user linked to it yet.
    fn plan_newcomer<'k>(
        &mut self,
        newcomer: Newcomer<'a>,
        keys: impl Iterator<Item = (MatchBy, &'k str)>,
        shared: &HashMap<(MatchBy, &str), Vec<&str>>,
        by_key: &HashMap<(MatchBy, &str), Vec<&'a DirectoryUser>>,
    ) {
        for key in keys {
            let (by, value) = key;
            let name = match by {
                MatchBy::Email => "email",
                MatchBy::Upn => "upn",
            };
            if let Some(sharing) = shared.get(&key) {
                let reason = format!(
                    "{name} {value} is shared by {} Entra users ({}); none is created or linked",
                    sharing.len(),
                    sharing.join(", ")
                );
                return self.conflict(newcomer.id, None, reason);
            }
            match by_key.get(&key).map(Vec::as_slice) {
                None | Some([]) => {}
                Some([directory_user]) => match &directory_user.entra_id {
                    None if self.claimed.contains(&directory_user.id) => {
                        let reason = format!(
                            "{name} {value} matches directory user #{}, which another Entra user links to in this run",
                            directory_user.id
                        );
                        return self.conflict(newcomer.id, Some(directory_user.id), reason);
                    }
                    None => return self.link(newcomer, directory_user),
                    Some(other) => {
                        let reason = format!(
                            "{name} {value} belongs to directory user #{}, already linked to Entra user {other}",
                            directory_user.id
                        );
                        return self.conflict(newcomer.id, Some(directory_user.id), reason);
                    }
                },
                Some(several) => {
                    // By id, so the reason does not depend on the order the target came in.
                    let mut ids: Vec<DirectoryId> = several.iter().map(|user| user.id).collect();
                    ids.sort_unstable();
                    let ids: Vec<String> = ids.iter().map(|id| format!("#{id}")).collect();
                    let reason = format!(
                        "{name} {value} matches {} directory users ({}); none is linked",
                        several.len(),
                        ids.join(", ")
                    );
                    return self.conflict(newcomer.id, None, reason);
                }
            }
        }
        let (status, status_reason) = if self.enters_disabled(newcomer.account_enabled) {
            let reason = DisableReason::DisabledInMicrosoft.as_str().to_owned();
            (UserStatus::Disabled, Some(reason))
        } else {
            (UserStatus::Active, None)
        };
        let Newcomer {
            id,
            mut attributes,
            department,
            ..
        } = newcomer;
        attributes.retain(|field, _| self.policy.field_setting(field) != FieldSetting::Never);
        self.joined.push(id);
        self.created.push(id);
        self.departments.insert(id, department);
        self.plan.actions.push(Action::CreateUser {
            entra_id: id.to_owned(),
            attributes,
            status,
            status_reason,
            department: department
                .filter(|_| self.policy.sync_departments)
                .map(|department| self.department_names.name(department).to_owned()),
        });
    }

    fn link(&mut self, newcomer: Newcomer<'a>, directory_user: &DirectoryUser) {
        let changes = match self.policy.existing_users {
            ExistingUsers::Update => {
                self.changes(&directory_user.attributes, &newcomer.attributes, Write::Link)
            }
            ExistingUsers::Skip => Vec::new(),
        };
        self.joined.push(newcomer.id);
        self.claimed.insert(directory_user.id);
        // A skipped existing user keeps its department on the link too.
        if self.policy.existing_users == ExistingUsers::Update {
            self.departments.insert(newcomer.id, newcomer.department);
        }
        self.plan.actions.push(Action::LinkUser {
            directory_id: directory_user.id,
            entra_id: newcomer.id.to_owned(),
            changes,
        });
        // A matched user that someone already disabled keeps its status and reason.
        if self.enters_disabled(newcomer.account_enabled) && directory_user.status == UserStatus::Active {
            self.plan.actions.push(Action::DisableUser {
                directory_id: directory_user.id,
                entra_id: newcomer.id.to_owned(),
                reason: DisableReason::DisabledInMicrosoft,
            });
        }
    }

    /// An Entra user whose directory user the sync owns.
    fn plan_linked(&mut self, id: &'a str, user: &EntraUser, directory_user: &'a DirectoryUser) {
        if user.presence != Presence::Present {
            let rung = Rung::from(self.policy.on_deleted);
            return self.deprovision(id, directory_user, rung, DisableReason::DeletedInMicrosoft);
        }
        if !self.scope.decide(user).is_in() {
            let rung = match self.policy.on_out_of_scope {
                OnOutOfScope::Keep => {
                    self.frozen.insert(id);
                    self.plan.skipped += 1;
                    return;
                }
                OnOutOfScope::Disable => Rung::Disable,
                OnOutOfScope::SoftDelete => Rung::SoftDelete,
                OnOutOfScope::Delete => Rung::Delete,
            };
            return self.deprovision(id, directory_user, rung, DisableReason::OutOfScope);
        }
        if user.account_enabled == Some(false) {
            return match self.policy.on_disabled {
                OnDisabled::Disable => self.deprovision(
                    id,
                    directory_user,
                    Rung::Disable,
                    DisableReason::DisabledInMicrosoft,
                ),
                OnDisabled::Ignore => self.plan.skipped += 1,
            };
        }
        self.follow(id, user, directory_user);
    }

    /// Brings a linked user present, enabled and in scope up to date, restoring it if the sync
    /// had deprovisioned it.
    fn follow(&mut self, id: &'a str, user: &EntraUser, directory_user: &DirectoryUser) {
        let restore = match directory_user.status {
            UserStatus::Active => false,
            UserStatus::Disabled | UserStatus::SoftDeleted if disabled_by_sync(directory_user) => true,
            // Someone else disabled or soft-deleted it, or it is a purged tombstone: that stands.
            UserStatus::Disabled | UserStatus::SoftDeleted | UserStatus::Purged => {
                self.plan.skipped += 1;
                return;
            }
        };
        let department = self.department_names.intern(user.department().and_then(clean));
        // Most linked users did not change: without unit or role rules their wanted attributes
        // are the mapping's, compared field by field without building them.
        let rules = &self.policy.assignments;
        if !restore
            && rules.unit_from.is_none()
            && rules.roles_from.is_none()
            && maps_to(user, &directory_user.attributes)
        {
            self.departments.insert(id, department);
            self.plan.unchanged += 1;
            return;
        }
        let attributes = match self.desired(user) {
            Ok(attributes) => attributes,
            Err(problem) => return self.conflict(id, Some(directory_user.id), problem),
        };
        self.departments.insert(id, department);
        let changes = self.changes(&directory_user.attributes, &attributes, Write::Update);
        let (directory_id, entra_id) = (directory_user.id, user.id.clone());
        if restore {
            self.plan.actions.push(Action::RestoreUser {
                directory_id,
                entra_id,
                changes,
            });
        } else if changes.is_empty() {
            self.plan.unchanged += 1;
        } else {
            self.plan.actions.push(Action::UpdateUser {
                directory_id,
                entra_id,
                changes,
            });
        }
    }

    /// Moves a linked user to `rung` of the ladder, or keeps it where it is when it is there
    /// already. A user someone else disabled or soft-deleted stays as it is.
    fn deprovision(
        &mut self,
        entra_id: &'a str,
        directory_user: &DirectoryUser,
        rung: Rung,
        reason: DisableReason,
    ) {
        let current = directory_user
            .status_reason
            .as_deref()
            .and_then(DisableReason::from_status_reason);
        let settled = current.is_some_and(|current| current.settles(reason));
        let directory_id = directory_user.id;
        let entra_id_owned = entra_id.to_owned();
        let action = match (directory_user.status, rung) {
            (UserStatus::Purged, _) => {
                self.plan.unchanged += 1;
                return;
            }
            (UserStatus::Disabled | UserStatus::SoftDeleted, _) if current.is_none() => {
                self.plan.skipped += 1;
                return;
            }
            (UserStatus::SoftDeleted, Rung::Delete) => Action::DeleteUser {
                directory_id,
                entra_id: entra_id_owned,
                reason,
            },
            // Disabled in Microsoft after a restore from deleted items: the user comes back as
            // disabled rather than staying hidden.
            (UserStatus::SoftDeleted, Rung::Disable) if !settled => Action::DisableUser {
                directory_id,
                entra_id: entra_id_owned,
                reason,
            },
            (UserStatus::SoftDeleted, _) => {
                if !self.purge_if_due(entra_id, directory_user) {
                    self.plan.unchanged += 1;
                }
                return;
            }
            (UserStatus::Disabled, Rung::Disable) if settled => {
                self.plan.unchanged += 1;
                return;
            }
            (_, Rung::Disable) => Action::DisableUser {
                directory_id,
                entra_id: entra_id_owned,
                reason,
            },
            (_, Rung::SoftDelete) => Action::SoftDeleteUser {
                directory_id,
                entra_id: entra_id_owned,
                reason,
            },
            (_, Rung::Delete) => Action::DeleteUser {
                directory_id,
                entra_id: entra_id_owned,
                reason,
            },
        };
        if matches!(action, Action::DeleteUser { .. }) {
            self.removed.insert(entra_id);
        }
        self.plan.actions.push(action);
    }

    /// Purges a user the sync soft-deleted once its retention period is over; `false` when it
    /// is not over yet (or the soft-delete time is unknown, which never purges).
    fn purge_if_due(&mut self, entra_id: &'a str, directory_user: &DirectoryUser) -> bool {
        let retention = TimeDelta::days(i64::from(self.policy.soft_delete_retention_days));
        let due = directory_user
            .soft_deleted_at
            .and_then(|at| at.checked_add_signed(retention))
            .is_some_and(|purge_at| purge_at <= self.now);
        if due {
            self.removed.insert(entra_id);
            self.plan.actions.push(Action::PurgeUser {
                directory_id: directory_user.id,
                entra_id: entra_id.to_owned(),
            });
        }
        due
    }

    /// The attributes the directory should hold for a user: the mapping plus the unit and roles
    /// its rules give. Users a rule leaves unassigned are listed.
    fn desired(&mut self, user: &EntraUser) -> Result<Attributes, String> {
        let mut attributes = map_user(user).map_err(|problem| problem.to_string())?;
        let rules = &self.policy.assignments;
        for (field, assigned) in [
            (Field::Unit, assign::unit(user, rules.unit_from, &rules.units)),
            (Field::Roles, assign::roles(user, rules.roles_from, &rules.roles)),
        ] {
            match assigned {
                Assigned::NoRule => {}
                Assigned::Names { names, .. } => {
                    attributes.insert(field, names.join(", "));
                }
                Assigned::Unassigned { reason } => self.plan.unassigned.push(Unassigned {
                    entra_id: user.id.clone(),
                    field,
                    reason,
                }),
            }
        }
        Ok(attributes)
    }

    /// The changes the field settings allow. The unit and roles are the sync's only when a rule
    /// gives them; otherwise the directory's values are not touched.
    fn changes(&self, before: &Attributes, after: &Attributes, write: Write) -> Vec<FieldChange> {
        let rules = &self.policy.assignments;
        diff(before, after)
            .into_iter()
            .filter(|change| match change.field {
                Field::Unit => rules.unit_from.is_some(),
                Field::Roles => rules.roles_from.is_some(),
                _ => true,
            })
            .filter(|change| match (self.policy.field_setting(change.field), write) {
                (FieldSetting::Always, _) => true,
                (FieldSetting::OnCreate, Write::Link) => change.before.is_none(),
                (FieldSetting::OnCreate, Write::Update) | (FieldSetting::Never, _) => false,
            })
            .collect()
    }

    /// Whether a user seen for the first time enters the directory disabled.
    fn enters_disabled(&self, account_enabled: Option<bool>) -> bool {
        account_enabled == Some(false) && self.policy.on_disabled == OnDisabled::Disable
    }

    fn conflict(&mut self, entra_id: &str, directory_id: Option<DirectoryId>, reason: String) {
        self.plan.conflicts.push(Conflict {
            entra_id: Some(entra_id.to_owned()),
            directory_id,
            reason,
        });
    }

    fn plan_departments(&mut self, target: &'a TargetState) {
        let existing: BTreeMap<String, &DirectoryDepartment> = target
            .departments
            .iter()
            .map(|department| (department.name.to_lowercase(), department))
            .collect();
        // Members per department once the plan is applied; users deleted or purged leave theirs.
        let mut members: BTreeMap<DirectoryId, usize> = BTreeMap::new();
        for user in &target.users {
            let leaving = user
                .entra_id
                .as_deref()
                .is_some_and(|entra_id| self.removed.contains(entra_id));
            if let (Some(department), false) = (user.department, leaving) {
                *members.entry(department).or_default() += 1;
            }
        }
        for (&department, &count) in &target.settled.department_members {
            *members.entry(department).or_default() += count;
        }
        let departments = std::mem::take(&mut self.departments);
        let names = std::mem::take(&mut self.department_names);
        // Each value's lowercase once, not once a user.
        let lowercase: Vec<String> = names.names.iter().map(|name| name.to_lowercase()).collect();
        let mut created: BTreeSet<&str> = BTreeSet::new();
        // Both in id order: the created users are found by walking them alongside.
        let created_users = std::mem::take(&mut self.created);
        let mut created_users = created_users.iter().peekable();
        for (&entra_id, &wanted_index) in &departments {
            let wanted = wanted_index.map(|index| names.name(index));
            let current = self.linked_user(entra_id).and_then(|user| user.department);
            let wanted_id = match wanted_index {
                Some(index) => {
                    let lower = lowercase[index as usize].as_str();
                    match existing.get(lower) {
                        Some(department) => Some(department.id),
                        None => {
                            if created.insert(lower) {
                                self.plan.actions.push(Action::CreateDepartment {
                                    name: names.name(index).to_owned(),
                                });
                            }
                            None
                        }
                    }
                }
                None => None,
            };
            while created_users.next_if(|&&user| user < entra_id).is_some() {}
            if created_users.next_if(|&&user| user == entra_id).is_some() {
                // Its `CreateUser` names the department.
                if let Some(wanted_id) = wanted_id {
                    *members.entry(wanted_id).or_default() += 1;
                }
                continue;
            }
            let unchanged = match wanted {
                Some(_) => wanted_id.is_some() && current == wanted_id,
                None => current.is_none(),
            };
            if unchanged {
                continue;
            }
            if let Some(current) = current {
                members
                    .entry(current)
                    .and_modify(|count| *count = count.saturating_sub(1));
            }
            if let Some(wanted_id) = wanted_id {
                *members.entry(wanted_id).or_default() += 1;
            }
            self.plan.actions.push(Action::SetDepartment {
                user: entra_id.to_owned(),
                department: wanted.map(str::to_owned),
            });
        }
        for department in &target.departments {
            if department.created_by_sync && members.get(&department.id).is_none_or(|&count| count == 0) {
                self.plan.actions.push(Action::DeleteDepartment {
                    directory_id: department.id,
                    name: department.name.clone(),
                });
            }
        }
    }

    fn plan_groups(&mut self, groups: &'a BTreeMap<EntraId, EntraGroup>, target: &'a TargetState) {
        let owned: BTreeMap<&str, &DirectoryGroup> = target
            .groups
            .iter()
            .filter_map(|group| Some((group.entra_id.as_deref()?, group)))
            .collect();
        let selected = |id: &str| match self.policy.groups_to_sync {
            GroupsToSync::WithMembers => true,
            GroupsToSync::Scoped => self.scope.named_groups().contains(id),
        };
        let mut desired: BTreeSet<(&str, &str)> = BTreeSet::new();
        for group in groups.values() {
            if group.presence != Presence::Present || !selected(&group.id) {
                continue;
            }
            let members: Vec<&str> = group
                .member_users
                .iter()
                .map(String::as_str)
                .filter(|&id| {
                    let in_directory = match self.linked_user(id) {
                        Some(user) => user.status != UserStatus::Purged,
                        None => self.joined.binary_search(&id).is_ok(),
                    };
                    in_directory
                        && !self.frozen.contains(id)
                        && !self.removed.contains(id)
                        && self.present_in_source(id)
                })
                .collect();
            let name = group.display_name.as_deref().and_then(clean).unwrap_or(&group.id);
            let description = group.description.as_deref().and_then(clean);
            match owned.get(group.id.as_str()) {
                Some(existing) => {
                    if existing.name != name || existing.description.as_deref() != description {
                        self.plan.actions.push(Action::UpdateGroup {
                            directory_id: existing.id,
                            entra_id: group.id.clone(),
                            name: name.to_owned(),
                            description: description.map(str::to_owned),
                        });
                    }
                }
                None if !members.is_empty() => self.plan.actions.push(Action::CreateGroup {
                    entra_id: group.id.clone(),
                    name: name.to_owned(),
                    description: description.map(str::to_owned),
                }),
                // No member of it is in the directory: importing it would add an empty group.
                None => continue,
            }
            desired.extend(members.into_iter().map(|user| (group.id.as_str(), user)));
        }
        let mut deleted: BTreeSet<&str> = BTreeSet::new();
        for (&entra_id, existing) in &owned {
            let gone = groups
                .get(entra_id)
                .is_none_or(|group| group.presence != Presence::Present);
            if gone {
                deleted.insert(entra_id);
                self.plan.actions.push(Action::DeleteGroup {
                    directory_id: existing.id,
                    entra_id: entra_id.to_owned(),
                });
            }
        }
        let current: BTreeSet<(&str, &str)> = target
            .memberships
            .iter()
            .map(|(group, user)| (group.as_str(), user.as_str()))
            .collect();
        for &(group, user) in desired.difference(&current) {
            self.plan.actions.push(Action::AddMembership {
                group: group.to_owned(),
                user: user.to_owned(),
            });
        }
        if self.policy.remove_group_assignments_not_in_entra {
            for &(group, user) in current.difference(&desired) {
                // The executor drops a deleted group's or user's memberships with it; a kept
                // out-of-scope user and a group no longer selected are not the sync's to change,
                // nor is a user a partial read left out (settled: not in `desired` for want of
                // its data, not because Entra took it out).
                let untouched = deleted.contains(group)
                    || self.removed.contains(user)
                    || self.frozen.contains(user)
                    || !selected(group)
                    || (self.linked_user(user).is_none() && !self.in_source(user));
                if !untouched {
                    self.plan.actions.push(Action::RemoveMembership {
                        group: group.to_owned(),
                        user: user.to_owned(),
                    });
                }
            }
        }
    }
}

/// The lowercase values a new user is matched by, in `match_existing_by` order.
fn match_keys<'v>(
    policy: &'v Policy,
    user: &'v EntraUser,
    attributes: &'v Attributes,
) -> impl Iterator<Item = (MatchBy, String)> + 'v {
    policy.match_existing_by.iter().filter_map(|&by| {
        let value = match by {
            MatchBy::Email => attributes.get(Field::Email),
            MatchBy::Upn => user.user_principal_name().and_then(clean),
        };
        Some((by, value?.to_lowercase()))
    })
}

/// The lowercase values `user` would be matched by were it new: a partial read loads the
/// directory users holding any of them (as their email, or for `upn` their UPN), the only ones
/// whose match with the user the planner may need.
pub fn match_values(user: &EntraUser, policy: &Policy) -> Vec<String> {
    match map_user(user) {
        Ok(attributes) => match_keys(policy, user, &attributes)
            .map(|(_, value)| value)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The lowercase values a directory user is matched by: its email, and for `upn` its UPN too.
fn directory_keys(directory_user: &DirectoryUser, by: MatchBy) -> BTreeSet<String> {
    let fields: &[Field] = match by {
        MatchBy::Email => &[Field::Email],
        MatchBy::Upn => &[Field::UserPrincipalName, Field::Email],
    };
    fields
        .iter()
        .filter_map(|&field| directory_user.attributes.get(field))
        .map(|value| value.to_lowercase())
        .collect()
}

/// Whether the sync put the directory user in its current state (its reason is the sync's).
fn disabled_by_sync(directory_user: &DirectoryUser) -> bool {
    directory_user
        .status_reason
        .as_deref()
        .and_then(DisableReason::from_status_reason)
        .is_some()
}

/// The fields whose value differs; a field set before and absent now changes to `None`.
fn diff(before: &Attributes, after: &Attributes) -> Vec<FieldChange> {
    // Most linked users did not change: one walk over both maps settles them.
    if before == after {
        return Vec::new();
    }
    Field::ALL
        .iter()
        .filter_map(|field| {
            let (old, new) = (before.get(*field), after.get(*field));
            (old != new).then(|| FieldChange {
                field: *field,
                before: old.map(str::to_owned),
                after: new.map(str::to_owned),
            })
        })
        .collect()
}

/// Sorts the actions by [`order_key`], ties in the order they came, as a stable sort would, but
/// without its scratch buffer of half the actions (84 MB at a million new users, the plan's
/// peak): a list of indices is sorted, then applied by following its cycles.
fn sort_actions(actions: &mut [Action]) {
    let mut order: Vec<usize> = (0..actions.len()).collect();
    order.sort_unstable_by(|&left, &right| {
        order_key(&actions[left])
            .cmp(&order_key(&actions[right]))
            .then(left.cmp(&right))
    });
    // `order[i]` names the action that belongs at `i`; a placed slot names itself.
    for start in 0..actions.len() {
        let mut current = start;
        loop {
            let source = order[current];
            order[current] = current;
            if source == start || source == current {
                break;
            }
            actions.swap(current, source);
            current = source;
        }
    }
}

/// Where an action goes in the plan: its kind's rank, then the ids it names.
fn order_key(action: &Action) -> (u8, &str, &str) {
    match action {
        Action::CreateDepartment { name } => (0, name, ""),
        Action::CreateGroup { entra_id, .. } => (1, entra_id, ""),
        Action::UpdateGroup { entra_id, .. } => (2, entra_id, ""),
        Action::CreateUser { entra_id, .. } => (3, entra_id, ""),
        Action::LinkUser { entra_id, .. } => (4, entra_id, ""),
        Action::UpdateUser { entra_id, .. } => (5, entra_id, ""),
        Action::RestoreUser { entra_id, .. } => (6, entra_id, ""),
        Action::DisableUser { entra_id, .. } => (7, entra_id, ""),
        Action::SoftDeleteUser { entra_id, .. } => (8, entra_id, ""),
        Action::SetDepartment { user, .. } => (9, user, ""),
        Action::AddMembership { group, user } => (10, group, user),
        Action::RemoveMembership { group, user } => (11, group, user),
        Action::DeleteUser { entra_id, .. } => (12, entra_id, ""),
        Action::PurgeUser { entra_id, .. } => (13, entra_id, ""),
        Action::DeleteGroup { entra_id, .. } => (14, entra_id, ""),
        Action::DeleteDepartment { name, .. } => (15, name, ""),
    }
}

impl fmt::Display for DisableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for FieldChange {
    /// `job_title "Analyst" -> "Senior Analyst"`, with `none` for an unset value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.field)?;
        write_value(f, self.before.as_deref())?;
        f.write_str(" -> ")?;
        write_value(f, self.after.as_deref())
    }
}

impl fmt::Display for Action {
    /// One line: the verb, the object, then what changes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateUser {
                entra_id,
                attributes,
                status,
                status_reason,
                department,
            } => {
                write!(f, "create  user {entra_id}")?;
                if *status != UserStatus::Active {
                    write!(f, " as {}", status.as_str())?;
                    if let Some(reason) = status_reason {
                        write!(f, " ({reason})")?;
                    }
                }
                if let Some(department) = department {
                    write!(f, " in department {department:?}")?;
                }
                for (index, (field, value)) in attributes.iter().enumerate() {
                    f.write_str(if index == 0 { ": " } else { ", " })?;
                    write!(f, "{field} {value:?}")?;
                }
                Ok(())
            }
            Action::LinkUser {
                directory_id,
                entra_id,
                changes,
            } => {
                write!(f, "link    user {entra_id} to #{directory_id}")?;
                write_changes(f, changes)
            }
            Action::UpdateUser {
                directory_id,
                entra_id,
                changes,
            } => {
                write!(f, "update  user {entra_id} #{directory_id}")?;
                write_changes(f, changes)
            }
            Action::RestoreUser {
                directory_id,
                entra_id,
                changes,
            } => {
                write!(f, "restore user {entra_id} #{directory_id}")?;
                write_changes(f, changes)
            }
            Action::DisableUser {
                directory_id,
                entra_id,
                reason,
            } => write!(f, "disable user {entra_id} #{directory_id}: {reason}"),
            Action::SoftDeleteUser {
                directory_id,
                entra_id,
                reason,
            } => write!(f, "soft-delete user {entra_id} #{directory_id}: {reason}"),
            Action::DeleteUser {
                directory_id,
                entra_id,
                reason,
            } => write!(f, "delete  user {entra_id} #{directory_id}: {reason}"),
            Action::PurgeUser {
                directory_id,
                entra_id,
            } => write!(
                f,
                "purge   user {entra_id} #{directory_id}: retention over, tombstone kept"
            ),
            Action::CreateGroup {
                entra_id,
                name,
                description,
            } => {
                write!(f, "create  group {entra_id}: name {name:?}, description ")?;
                write_value(f, description.as_deref())
            }
            Action::UpdateGroup {
                directory_id,
                entra_id,
                name,
                description,
            } => {
                write!(
                    f,
                    "update  group {entra_id} #{directory_id}: name {name:?}, description "
                )?;
                write_value(f, description.as_deref())
            }
            Action::DeleteGroup {
                directory_id,
                entra_id,
            } => write!(f, "delete  group {entra_id} #{directory_id}"),
            Action::AddMembership { group, user } => {
                write!(f, "add     member {user} to group {group}")
            }
            Action::RemoveMembership { group, user } => {
                write!(f, "remove  member {user} from group {group}")
            }
            Action::CreateDepartment { name } => write!(f, "create  department {name:?}"),
            Action::SetDepartment { user, department } => {
                write!(f, "assign  user {user} to department ")?;
                write_value(f, department.as_deref())
            }
            Action::DeleteDepartment { directory_id, name } => {
                write!(f, "delete  department {name:?} #{directory_id}")
            }
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("conflict")?;
        if let Some(entra_id) = &self.entra_id {
            write!(f, " user {entra_id}")?;
        }
        if let Some(directory_id) = self.directory_id {
            write!(f, " #{directory_id}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl fmt::Display for Unassigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unassigned user {} {}: {}",
            self.entra_id, self.field, self.reason
        )
    }
}

impl fmt::Display for Plan {
    /// The plan as `sync --dry-run` prints it: one line per action, then the conflicts and the
    /// unassigned users, then what needed nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for action in &self.actions {
            writeln!(f, "{action}")?;
        }
        for conflict in &self.conflicts {
            writeln!(f, "{conflict}")?;
        }
        for unassigned in &self.unassigned {
            writeln!(f, "{unassigned}")?;
        }
        writeln!(f, "unchanged {}, skipped {}", self.unchanged, self.skipped)
    }
}

fn write_changes(f: &mut fmt::Formatter<'_>, changes: &[FieldChange]) -> fmt::Result {
    for (index, change) in changes.iter().enumerate() {
        f.write_str(if index == 0 { ": " } else { ", " })?;
        write!(f, "{change}")?;
    }
    Ok(())
}

fn write_value(f: &mut fmt::Formatter<'_>, value: Option<&str>) -> fmt::Result {
    match value {
        Some(value) => write!(f, "{value:?}"),
        None => f.write_str("none"),
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;
    use crate::delta::{GroupDelta, MemberDelta, Patch, UserDelta};
    use crate::fold::{Touched, fold_groups, fold_users};
    use crate::target::Settled;

    /// Plans with the default policy. `source` is `{"users": [...], "groups": [...]}` in Graph's
    /// delta shape, folded into an empty snapshot; `target` is a `TargetState` as JSON.
    fn check(source: &str, target: &str, expect: Expect) {
        check_with(Policy::default(), source, target, expect);
    }

    fn check_with(policy: Policy, source: &str, target: &str, expect: Expect) {
        let delta_round = ReadHealth {
            full_round: false,
            delta_reset: false,
            complete: true,
            users_read: 0,
        };
        check_read(policy, &delta_round, now(), source, target, expect);
    }

    /// Plans with `policy` after `read`, at `at`; `check_with` is this after a delta round at
    /// `now()`.
    fn check_read(
        policy: Policy,
        read: &ReadHealth,
        at: DateTime<Utc>,
        source: &str,
        target: &str,
        expect: Expect,
    ) {
        let target = parse_target(target);
        let plan = plan_taking_too(&snapshot(source), &target, &policy, read, at);
        assert_touches_only_owned(&plan, &target);
        expect.assert_eq(&render(&plan));
    }

    /// Plans with both entry points, checked on every plan here: the taking one gives the same
    /// plan and the users' ids.
    fn plan_taking_too(
        source: &SourceSnapshot,
        target: &TargetState,
        policy: &Policy,
        read: &ReadHealth,
        at: DateTime<Utc>,
    ) -> Plan {
        let plan = plan_after_read(source, target, policy, read, at);
        let (plan_taking, ids) =
            plan_after_read_taking(source.users.clone(), &source.groups, target, policy, read, at);
        assert_eq!(plan, plan_taking, "the taking planner's plan differs");
        assert!(ids.iter().eq(source.users.keys().map(String::as_str)), "{ids:?}");
        let most = most_actions(source.users.len(), &source.groups, target, policy);
        assert!(
            plan.actions.len() <= most,
            "{} actions, at most {most} reserved",
            plan.actions.len()
        );
        plan
    }

    /// Architecture Invariant, checked on every plan here: an action that names a directory
    /// record names one the sync owns for that Entra id, or an unowned user it links in the same
    /// plan.
    fn assert_touches_only_owned(plan: &Plan, target: &TargetState) {
        let mut user_owner: BTreeMap<DirectoryId, Option<&str>> = target
            .users
            .iter()
            .map(|user| (user.id, user.entra_id.as_deref()))
            .collect();
        let group_owner: BTreeMap<DirectoryId, Option<&str>> = target
            .groups
            .iter()
            .map(|group| (group.id, group.entra_id.as_deref()))
            .collect();
        for action in &plan.actions {
            if let Action::LinkUser {
                directory_id,
                entra_id,
                ..
            } = action
            {
                assert_eq!(user_owner.get(directory_id), Some(&None), "{action}");
                user_owner.insert(*directory_id, Some(entra_id));
            }
        }
        for action in &plan.actions {
            match action {
                Action::UpdateUser {
                    directory_id,
                    entra_id,
                    ..
                }
                | Action::RestoreUser {
                    directory_id,
                    entra_id,
                    ..
                }
                | Action::DisableUser {
                    directory_id,
                    entra_id,
                    ..
                }
                | Action::SoftDeleteUser {
                    directory_id,
                    entra_id,
                    ..
                }
                | Action::DeleteUser {
                    directory_id,
                    entra_id,
                    ..
                }
                | Action::PurgeUser {
                    directory_id,
                    entra_id,
                } => {
                    let owner = user_owner.get(directory_id).copied().flatten();
                    assert_eq!(owner, Some(entra_id.as_str()), "{action}");
                }
                Action::UpdateGroup {
                    directory_id,
                    entra_id,
                    ..
                }
                | Action::DeleteGroup {
                    directory_id,
                    entra_id,
                } => {
                    let owner = group_owner.get(directory_id).copied().flatten();
                    assert_eq!(owner, Some(entra_id.as_str()), "{action}");
                }
                _ => {}
            }
        }
    }

    fn snapshot(source: &str) -> SourceSnapshot {
        #[derive(serde::Deserialize)]
        struct Source {
            #[serde(default)]
            users: Vec<UserDelta>,
            #[serde(default)]
            groups: Vec<GroupDelta>,
        }
        let source: Source = serde_json::from_str(source).expect("source parses");
        let mut snapshot = SourceSnapshot::default();
        let mut touched = Touched::default();
        fold_groups(&mut snapshot, source.groups, &mut touched);
        fold_users(&mut snapshot, source.users, &mut touched);
        snapshot
    }

    fn parse_target(target: &str) -> TargetState {
        serde_json::from_str(target).expect("target parses")
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T08:00:00Z")
            .expect("valid time")
            .with_timezone(&Utc)
    }

    /// The plan as printed, then the counts that are not zero.
    fn render(plan: &Plan) -> String {
        let counts = serde_json::to_value(plan.counts()).expect("serializable");
        let counts: Vec<String> = counts
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, count)| count.as_u64() != Some(0))
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        format!("{plan}counts: {}\n", counts.join(", "))
    }

    const JANE: &str = r#"{"id": "u-jane", "givenName": "Jane", "surname": "Doe",
        "mail": "jane@contoso.example", "jobTitle": "Analyst"}"#;
    const JANE_IN_DIRECTORY: &str = r#"{"id": 3, "entra_id": "u-jane", "attributes": {
        "given_name": "Jane", "surname": "Doe", "email": "jane@contoso.example",
        "job_title": "Analyst"}}"#;

    fn users(users: &[&str]) -> String {
        format!(r#"{{"users": [{}]}}"#, users.join(","))
    }

    fn directory(users: &[&str]) -> String {
        format!(r#"{{"users": [{}]}}"#, users.join(","))
    }

    /// The actions come out as a stable sort by `order_key` leaves them, ties (two departments
    /// of one name) in the order they came, whatever the order they went in.
    #[test]
    fn actions_sort_as_a_stable_sort_would() {
        let mut actions: Vec<Action> = Vec::new();
        for index in 0..300u32 {
            // A fixed scramble of kinds and ids, with repeated keys.
            let id = format!("u-{:03}", index.wrapping_mul(7919) % 97);
            actions.push(match index % 5 {
                0 => Action::AddMembership {
                    group: format!("g-{}", index % 3),
                    user: id,
                },
                1 => Action::DeleteDepartment {
                    directory_id: i64::from(index),
                    name: format!("Dept {}", index % 4),
                },
                2 => Action::CreateUser {
                    entra_id: id,
                    attributes: Attributes::new(),
                    status: UserStatus::Active,
                    status_reason: None,
                    department: None,
                },
                3 => Action::SetDepartment {
                    user: id,
                    department: Some(index.to_string()),
                },
                _ => Action::CreateDepartment {
                    name: format!("Dept {}", index % 4),
                },
            });
        }
        let mut stable = actions.clone();
        stable.sort_by(|left, right| order_key(left).cmp(&order_key(right)));
        sort_actions(&mut actions);
        assert_eq!(actions, stable);
    }

    #[test]
    fn creates_new_users() {
        check(
            &users(&[
                JANE,
                r#"{"id": "u-john", "displayName": "John Roe", "accountEnabled": true,
                    "userPrincipalName": "john@contoso.example"}"#,
            ]),
            "{}",
            expect![[r#"
                create  user u-jane: given_name "Jane", surname "Doe", email "jane@contoso.example", job_title "Analyst"
                create  user u-john: given_name "John", surname "Roe", display_name "John Roe", email "john@contoso.example", user_principal_name "john@contoso.example", account_enabled "true"
                unchanged 0, skipped 0
                counts: created 2
            "#]],
        );
    }

    #[test]
    fn a_user_disabled_in_entra_is_created_disabled() {
        let source = users(&[r#"{"id": "u-jane", "givenName": "Jane", "surname": "Doe",
            "accountEnabled": false}"#]);
        check(
            &source,
            "{}",
            expect![[r#"
            create  user u-jane as disabled (Disabled in Microsoft): given_name "Jane", surname "Doe", account_enabled "false"
            unchanged 0, skipped 0
            counts: created 1
        "#]],
        );
        let ignore = Policy {
            on_disabled: OnDisabled::Ignore,
            ..Policy::default()
        };
        check_with(
            ignore,
            &source,
            "{}",
            expect![[r#"
            create  user u-jane: given_name "Jane", surname "Doe", account_enabled "false"
            unchanged 0, skipped 0
            counts: created 1
        "#]],
        );
    }

    #[test]
    fn updates_only_the_fields_that_differ() {
        check(
            &users(&[r#"{"id": "u-jane", "givenName": "Jane", "surname": "Doe",
                "mail": "jane@contoso.example", "jobTitle": "Senior Analyst",
                "mobilePhone": "+45 1234"}"#]),
            &directory(&[r#"{"id": 3, "entra_id": "u-jane", "attributes": {
                "given_name": "Jane", "surname": "Doe", "email": "jane@contoso.example",
                "job_title": "Analyst", "department": "Finance"}}"#]),
            expect![[r#"
                update  user u-jane #3: job_title "Analyst" -> "Senior Analyst", department "Finance" -> none, mobile_phone none -> "+45 1234"
                unchanged 0, skipped 0
                counts: updated 1
            "#]],
        );
    }

    #[test]
    fn an_unchanged_user_needs_no_action() {
        check(
            &users(&[JANE]),
            &directory(&[JANE_IN_DIRECTORY]),
            expect![[r#"
            unchanged 1, skipped 0
            counts: unchanged 1
        "#]],
        );
    }

    #[test]
    fn links_by_email_case_insensitively() {
        let source = users(&[r#"{"id": "u-jane", "givenName": "Jane", "surname": "Doe",
            "mail": "Jane.Doe@Contoso.example"}"#]);
        let target = directory(&[
            r#"{"id": 7, "attributes": {"given_name": "Jane", "surname": "Smith",
                "email": "jane.doe@contoso.EXAMPLE"}}"#,
            r#"{"id": 8, "attributes": {"email": "someone@contoso.example"}}"#,
        ]);
        check(
            &source,
            &target,
            expect![[r#"
            link    user u-jane to #7: surname "Smith" -> "Doe", email "jane.doe@contoso.EXAMPLE" -> "Jane.Doe@Contoso.example"
            unchanged 0, skipped 0
            counts: updated 1
        "#]],
        );
        let skip = Policy {
            existing_users: ExistingUsers::Skip,
            ..Policy::default()
        };
        check_with(
            skip,
            &source,
            &target,
            expect![[r#"
            link    user u-jane to #7
            unchanged 0, skipped 0
            counts: unchanged 1
        "#]],
        );
    }

    #[test]
    fn a_linked_user_disabled_in_entra_is_linked_then_disabled() {
        check(
            &users(&[r#"{"id": "u-jane", "givenName": "Jane", "surname": "Doe",
                "mail": "jane@contoso.example", "accountEnabled": false}"#]),
            &directory(&[
                r#"{"id": 7, "attributes": {"given_name": "Jane", "surname": "Doe",
                    "email": "jane@contoso.example"}}"#,
            ]),
            expect![[r#"
                link    user u-jane to #7: account_enabled none -> "false"
                disable user u-jane #7: Disabled in Microsoft
                unchanged 0, skipped 0
                counts: disabled 1, updated 1
            "#]],
        );
    }

    #[test]
    fn an_email_shared_in_entra_is_a_conflict_for_each_sharer() {
        check(
            &users(&[
                r#"{"id": "u-a", "givenName": "Ann", "surname": "Lee", "mail": "team@contoso.example"}"#,
                r#"{"id": "u-b", "givenName": "Bob", "surname": "Lee", "mail": "TEAM@contoso.example"}"#,
                JANE,
            ]),
            &directory(&[r#"{"id": 9, "attributes": {"email": "team@contoso.example"}}"#]),
            expect![[r#"
                create  user u-jane: given_name "Jane", surname "Doe", email "jane@contoso.example", job_title "Analyst"
                conflict user u-a: email team@contoso.example is shared by 2 Entra users (u-a, u-b); none is created or linked
                conflict user u-b: email team@contoso.example is shared by 2 Entra users (u-a, u-b); none is created or linked
                unchanged 0, skipped 0
                counts: conflicts 2, created 1
            "#]],
        );
    }

    #[test]
    fn an_email_shared_in_the_directory_is_a_conflict() {
        check(
            &users(&[JANE]),
            &directory(&[
                r#"{"id": 7, "attributes": {"email": "jane@contoso.example"}}"#,
                r#"{"id": 8, "attributes": {"email": "Jane@Contoso.example"}}"#,
            ]),
            expect![[r#"
                conflict user u-jane: email jane@contoso.example matches 2 directory users (#7, #8); none is linked
                unchanged 0, skipped 0
                counts: conflicts 1
            "#]],
        );
    }

    #[test]
    fn an_email_linked_to_another_entra_user_is_a_conflict() {
        check(
            &users(&[JANE]),
            &directory(&[r#"{"id": 7, "entra_id": "u-other",
                "attributes": {"email": "jane@contoso.example"}}"#]),
            expect![[r#"
                conflict user u-jane #7: email jane@contoso.example belongs to directory user #7, already linked to Entra user u-other
                unchanged 0, skipped 0
                counts: conflicts 1
            "#]],
        );
    }

    #[test]
    fn a_user_without_a_usable_name_is_a_conflict() {
        check(
            &users(&[
                r#"{"id": "u-new", "displayName": "Reception", "mail": "reception@contoso.example"}"#,
                r#"{"id": "u-jane", "givenName": null, "surname": null, "displayName": "Jane"}"#,
            ]),
            &directory(&[JANE_IN_DIRECTORY]),
            expect![[r#"
                conflict user u-jane #3: no usable name: given name and surname are not set and the display name does not provide them
                conflict user u-new: no usable name: given name and surname are not set and the display name does not provide them
                unchanged 0, skipped 0
                counts: conflicts 2
            "#]],
        );
    }

    #[test]
    fn a_user_disabled_in_entra_is_disabled_once() {
        let source = users(&[r#"{"id": "u-jane", "givenName": "Jane", "surname": "Doe",
            "mail": "jane@contoso.example", "jobTitle": "Retired", "accountEnabled": false}"#]);
        check(
            &source,
            &directory(&[JANE_IN_DIRECTORY]),
            expect![[r#"
            disable user u-jane #3: Disabled in Microsoft
            unchanged 0, skipped 0
            counts: disabled 1
        "#]],
        );
        check(
            &source,
            &directory(&[r#"{"id": 3, "entra_id": "u-jane", "status": "disabled",
                "status_reason": "Disabled in Microsoft"}"#]),
            expect![[r#"
                unchanged 1, skipped 0
                counts: unchanged 1
            "#]],
        );
        let ignore = Policy {
            on_disabled: OnDisabled::Ignore,
            ..Policy::default()
        };
        check_with(
            ignore,
            &source,
            &directory(&[JANE_IN_DIRECTORY]),
            expect![[r#"
            unchanged 0, skipped 1
            counts: skipped 1
        "#]],
        );
    }

    #[test]
    fn a_user_re_enabled_in_entra_is_restored() {
        check(
            &users(&[r#"{"id": "u-jane", "givenName": "Jane", "surname": "Doe",
                "mail": "jane@contoso.example", "jobTitle": "Analyst", "accountEnabled": true}"#]),
            &directory(&[r#"{"id": 3, "entra_id": "u-jane", "status": "disabled",
                "status_reason": "Disabled in Microsoft", "attributes": {
                "given_name": "Jane", "surname": "Doe", "email": "jane@contoso.example",
                "account_enabled": "true"}}"#]),
            expect![[r#"
                restore user u-jane #3: job_title none -> "Analyst"
                unchanged 0, skipped 0
                counts: restored 1
            "#]],
        );
    }

    #[test]
    fn a_deleted_user_is_disabled_as_deleted_in_microsoft() {
        let source = users(&[
            r#"{"id": "u-soft", "@removed": {"reason": "changed"}}"#,
            r#"{"id": "u-hard", "@removed": {"reason": "deleted"}}"#,
            r#"{"id": "u-was-disabled", "@removed": {"reason": "changed"}}"#,
            r#"{"id": "u-done", "@removed": {"reason": "deleted"}}"#,
            r#"{"id": "u-never-linked", "@removed": {"reason": "deleted"}}"#,
        ]);
        let target = directory(&[
            r#"{"id": 1, "entra_id": "u-soft"}"#,
            r#"{"id": 2, "entra_id": "u-hard"}"#,
            r#"{"id": 3, "entra_id": "u-was-disabled", "status": "disabled",
                "status_reason": "Disabled in Microsoft"}"#,
            r#"{"id": 4, "entra_id": "u-done", "status": "disabled",
                "status_reason": "Deleted in Microsoft"}"#,
        ]);
        check(
            &source,
            &target,
            expect![[r#"
            disable user u-hard #2: Deleted in Microsoft
            disable user u-soft #1: Deleted in Microsoft
            disable user u-was-disabled #3: Deleted in Microsoft
            unchanged 1, skipped 0
            counts: disabled 3, unchanged 1
        "#]],
        );
        let on_deleted = |on_deleted| Policy {
            on_deleted,
            ..Policy::default()
        };
        // u-was-disabled and u-done were disabled by the sync: the next rung follows from there.
        check_with(
            on_deleted(OnDeleted::SoftDelete),
            &source,
            &target,
            expect![[r#"
            soft-delete user u-done #4: Deleted in Microsoft
            soft-delete user u-hard #2: Deleted in Microsoft
            soft-delete user u-soft #1: Deleted in Microsoft
            soft-delete user u-was-disabled #3: Deleted in Microsoft
            unchanged 0, skipped 0
            counts: soft_deleted 4
        "#]],
        );
        check_with(
            on_deleted(OnDeleted::Delete),
            &source,
            &target,
            expect![[r#"
            delete  user u-done #4: Deleted in Microsoft
            delete  user u-hard #2: Deleted in Microsoft
            delete  user u-soft #1: Deleted in Microsoft
            delete  user u-was-disabled #3: Deleted in Microsoft
            unchanged 0, skipped 0
            counts: deleted 4
        "#]],
        );
    }

    #[test]
    fn a_user_restored_in_entra_comes_back() {
        // Restored from deleted items: a plain entry after the removal (GRAPH.md §3.4).
        check(
            r#"{"users": [
                {"id": "u-jane", "@removed": {"reason": "changed"}},
                {"id": "u-jane", "givenName": "Jane", "surname": "Doe", "mail": "jane@contoso.example",
                 "jobTitle": "Analyst"}
            ]}"#,
            &directory(&[r#"{"id": 3, "entra_id": "u-jane", "status": "disabled",
                "status_reason": "Deleted in Microsoft", "attributes": {
                "given_name": "Jane", "surname": "Doe", "email": "jane@contoso.example",
                "job_title": "Analyst"}}"#]),
            expect![[r#"
                restore user u-jane #3
                unchanged 0, skipped 0
                counts: restored 1
            "#]],
        );
    }

    #[test]
    fn a_user_disabled_by_someone_else_is_left_alone() {
        check(
            &users(&[
                JANE,
                r#"{"id": "u-gone", "@removed": {"reason": "deleted"}}"#,
                r#"{"id": "u-purged", "givenName": "Pat", "surname": "Doe"}"#,
            ]),
            &directory(&[
                r#"{"id": 3, "entra_id": "u-jane", "status": "disabled",
                    "status_reason": "Left the company"}"#,
                r#"{"id": 4, "entra_id": "u-gone", "status": "soft_deleted",
                    "status_reason": "Removed by an admin"}"#,
                r#"{"id": 5, "entra_id": "u-purged", "status": "purged",
                    "status_reason": "Deleted in Microsoft"}"#,
            ]),
            expect![[r#"
                unchanged 0, skipped 3
                counts: skipped 3
            "#]],
        );
    }

    #[test]
    fn a_linked_user_missing_from_the_snapshot_is_left_alone() {
        check(
            &users(&[JANE]),
            &directory(&[
                JANE_IN_DIRECTORY,
                r#"{"id": 4, "entra_id": "u-missing",
                "attributes": {"given_name": "Max", "surname": "Doe"}}"#,
            ]),
            expect![[r#"
                unchanged 1, skipped 0
                counts: unchanged 1
            "#]],
        );
    }

    #[test]
    fn of_two_directory_users_claiming_one_entra_id_the_first_is_followed() {
        // The store's unique key rules this out; the planner still answers deterministically.
        check(
            &users(&[r#"{"id": "u-jane", "givenName": "Jane", "surname": "Doe",
                "mail": "jane@contoso.example", "jobTitle": "Lead"}"#]),
            &directory(&[
                r#"{"id": 9, "entra_id": "u-jane", "attributes": {"given_name": "J"}}"#,
                JANE_IN_DIRECTORY,
            ]),
            expect![[r#"
                update  user u-jane #9: given_name "J" -> "Jane", surname none -> "Doe", email none -> "jane@contoso.example", job_title none -> "Lead"
                unchanged 0, skipped 0
                counts: updated 1
            "#]],
        );
    }

    /// Architecture Invariant: the sync touches only what it owns. A directory user without an
    /// Entra id may be linked on first sight and is otherwise never changed, disabled or deleted.
    #[test]
    fn unowned_directory_users_are_never_touched() {
        let source = users(&[
            r#"{"id": "u-gone", "givenName": "Gus", "surname": "Doe", "mail": "gus@contoso.example"}"#,
            r#"{"id": "u-gone", "@removed": {"reason": "deleted"}}"#,
            r#"{"id": "u-off", "givenName": "Olga", "surname": "Doe", "mail": "olga@contoso.example",
                "accountEnabled": false}"#,
            JANE,
        ]);
        // `check` also asserts that no action names a directory user the sync does not own.
        let target = directory(&[
            JANE_IN_DIRECTORY,
            r#"{"id": 4, "attributes": {"email": "Jane@contoso.example", "job_title": "Clerk"}}"#,
            r#"{"id": 1, "attributes": {"email": "gus@contoso.example"}}"#,
            r#"{"id": 2, "attributes": {"email": "olga@contoso.example"}, "status": "disabled",
                "status_reason": "On leave"}"#,
            r#"{"id": 3, "attributes": {"email": "admin@contoso.example"}}"#,
        ]);
        check(
            &source,
            &target,
            expect![[r#"
            link    user u-off to #2: given_name none -> "Olga", surname none -> "Doe", account_enabled none -> "false"
            unchanged 1, skipped 0
            counts: unchanged 1, updated 1
        "#]],
        );
    }

    const GROUPS_TARGET: &str = r#"{
        "users": [
            {"id": 1, "entra_id": "u-ann", "attributes": {"given_name": "Ann", "surname": "Lee"}},
            {"id": 2, "entra_id": "u-bob", "attributes": {"given_name": "Bob", "surname": "Lee"}},
            {"id": 3, "attributes": {"given_name": "Cy", "surname": "Lee", "email": "cy@contoso.example"}}
        ],
        "groups": [
            {"id": 10, "entra_id": "g-sales", "name": "Sales", "description": "All sales"},
            {"id": 11, "entra_id": "g-old", "name": "Old"},
            {"id": 12, "entra_id": "g-vanished", "name": "Vanished"},
            {"id": 13, "name": "Made by hand"}
        ],
        "memberships": [["g-sales", "u-ann"], ["g-sales", "u-bob"], ["g-old", "u-ann"]]
    }"#;

    const GROUPS_SOURCE: &str = r##"{
        "users": [
            {"id": "u-ann", "givenName": "Ann", "surname": "Lee"},
            {"id": "u-bob", "givenName": "Bob", "surname": "Lee"},
            {"id": "u-cy", "givenName": "Cy", "surname": "Lee", "mail": "cy@contoso.example"},
            {"id": "u-dee", "givenName": "Dee", "surname": "Lee", "accountEnabled": false},
            {"id": "u-eve", "displayName": "Eve"}
        ],
        "groups": [
            {"id": "g-sales", "displayName": "Sales EMEA", "description": "All sales",
             "members@delta": [{"id": "u-ann"}, {"id": "u-cy"}, {"id": "u-dee"}]},
            {"id": "g-old", "@removed": {"reason": "deleted"}},
            {"id": "g-new", "displayName": " ", "members@delta": [
                {"@odata.type": "#microsoft.graph.user", "id": "u-bob"},
                {"@odata.type": "#microsoft.graph.group", "id": "g-sales"},
                {"@odata.type": "#microsoft.graph.device", "id": "d-1"}]},
            {"id": "g-conflicts-only", "displayName": "Nobody here",
             "members@delta": [{"id": "u-eve"}, {"id": "u-unknown"}]}
        ]
    }"##;

    #[test]
    fn groups_and_memberships_follow_entra() {
        check(
            GROUPS_SOURCE,
            GROUPS_TARGET,
            expect![[r#"
            create  group g-new: name "g-new", description none
            update  group g-sales #10: name "Sales EMEA", description "All sales"
            create  user u-dee as disabled (Disabled in Microsoft): given_name "Dee", surname "Lee", account_enabled "false"
            link    user u-cy to #3
            add     member u-bob to group g-new
            add     member u-cy to group g-sales
            add     member u-dee to group g-sales
            remove  member u-bob from group g-sales
            delete  group g-old #11
            delete  group g-vanished #12
            conflict user u-eve: no usable name: given name and surname are not set and the display name does not provide them
            unchanged 2, skipped 0
            counts: conflicts 1, created 1, groups_created 1, groups_deleted 2, groups_updated 1, memberships_added 3, memberships_removed 1, unchanged 3
        "#]],
        );
    }

    /// The same changes after a read that stopped short: adds and updates only.
    #[test]
    fn an_incomplete_read_takes_nothing_away() {
        check_read(
            Policy::default(),
            &read(false, false),
            now(),
            GROUPS_SOURCE,
            GROUPS_TARGET,
            expect![[r#"
            create  group g-new: name "g-new", description none
            update  group g-sales #10: name "Sales EMEA", description "All sales"
            create  user u-dee as disabled (Disabled in Microsoft): given_name "Dee", surname "Lee", account_enabled "false"
            link    user u-cy to #3
            add     member u-bob to group g-new
            add     member u-cy to group g-sales
            add     member u-dee to group g-sales
            conflict user u-eve: no usable name: given name and surname are not set and the display name does not provide them
            unchanged 2, skipped 0
            counts: conflicts 1, created 1, groups_created 1, groups_updated 1, memberships_added 3, unchanged 3
        "#]],
        );
    }

    #[test]
    fn memberships_entra_no_longer_has_can_stay() {
        let keep = Policy {
            remove_group_assignments_not_in_entra: false,
            ..Policy::default()
        };
        check_with(
            keep,
            GROUPS_SOURCE,
            GROUPS_TARGET,
            expect![[r#"
            create  group g-new: name "g-new", description none
            update  group g-sales #10: name "Sales EMEA", description "All sales"
            create  user u-dee as disabled (Disabled in Microsoft): given_name "Dee", surname "Lee", account_enabled "false"
            link    user u-cy to #3
            add     member u-bob to group g-new
            add     member u-cy to group g-sales
            add     member u-dee to group g-sales
            delete  group g-old #11
            delete  group g-vanished #12
            conflict user u-eve: no usable name: given name and surname are not set and the display name does not provide them
            unchanged 2, skipped 0
            counts: conflicts 1, created 1, groups_created 1, groups_deleted 2, groups_updated 1, memberships_added 3, unchanged 3
        "#]],
        );
    }

    #[test]
    fn groups_are_left_alone_without_sync_groups() {
        let no_groups = Policy {
            sync_groups: false,
            ..Policy::default()
        };
        check_with(
            no_groups,
            GROUPS_SOURCE,
            GROUPS_TARGET,
            expect![[r#"
            create  user u-dee as disabled (Disabled in Microsoft): given_name "Dee", surname "Lee", account_enabled "false"
            link    user u-cy to #3
            conflict user u-eve: no usable name: given name and surname are not set and the display name does not provide them
            unchanged 2, skipped 0
            counts: conflicts 1, created 1, unchanged 3
        "#]],
        );
    }

    #[test]
    fn counts_by_kind() {
        let change = FieldChange {
            field: Field::JobTitle,
            before: None,
            after: Some("Analyst".to_owned()),
        };
        let plan = Plan {
            actions: vec![
                Action::CreateGroup {
                    entra_id: "g-1".to_owned(),
                    name: "One".to_owned(),
                    description: None,
                },
                Action::UpdateGroup {
                    directory_id: 11,
                    entra_id: "g-2".to_owned(),
                    name: "Two".to_owned(),
                    description: None,
                },
                // Created in its department: one assignment with the one below.
                Action::CreateUser {
                    entra_id: "u-new".to_owned(),
                    attributes: Attributes::new(),
                    status: UserStatus::Active,
                    status_reason: None,
                    department: Some("Support".to_owned()),
                },
                Action::LinkUser {
                    directory_id: 1,
                    entra_id: "u-1".to_owned(),
                    changes: Vec::new(),
                },
                Action::LinkUser {
                    directory_id: 2,
                    entra_id: "u-2".to_owned(),
                    changes: vec![change.clone()],
                },
                Action::UpdateUser {
                    directory_id: 3,
                    entra_id: "u-3".to_owned(),
                    changes: vec![change.clone()],
                },
                Action::RestoreUser {
                    directory_id: 4,
                    entra_id: "u-4".to_owned(),
                    changes: vec![change],
                },
                Action::DisableUser {
                    directory_id: 5,
                    entra_id: "u-5".to_owned(),
                    reason: DisableReason::DisabledInMicrosoft,
                },
                Action::AddMembership {
                    group: "g-1".to_owned(),
                    user: "u-new".to_owned(),
                },
                Action::RemoveMembership {
                    group: "g-2".to_owned(),
                    user: "u-6".to_owned(),
                },
                Action::DeleteGroup {
                    directory_id: 12,
                    entra_id: "g-3".to_owned(),
                },
                Action::SoftDeleteUser {
                    directory_id: 8,
                    entra_id: "u-8".to_owned(),
                    reason: DisableReason::DeletedInMicrosoft,
                },
                Action::DeleteUser {
                    directory_id: 9,
                    entra_id: "u-9".to_owned(),
                    reason: DisableReason::OutOfScope,
                },
                Action::PurgeUser {
                    directory_id: 10,
                    entra_id: "u-10".to_owned(),
                },
                Action::CreateDepartment {
                    name: "Support".to_owned(),
                },
                Action::SetDepartment {
                    user: "u-1".to_owned(),
                    department: Some("Support".to_owned()),
                },
                Action::DeleteDepartment {
                    directory_id: 3,
                    name: "Old".to_owned(),
                },
            ],
            conflicts: vec![Conflict {
                entra_id: Some("u-7".to_owned()),
                directory_id: None,
                reason: "email shared".to_owned(),
            }],
            unassigned: vec![Unassigned {
                entra_id: "u-new".to_owned(),
                field: Field::Unit,
                reason: "no unit matches officeLocation \"Odense\"".to_owned(),
            }],
            unchanged: 5,
            skipped: 2,
        };
        assert_eq!(
            plan.counts(),
            PlanCounts {
                created: 1,
                updated: 2,
                disabled: 1,
                soft_deleted: 1,
                deleted: 1,
                purged: 1,
                restored: 1,
                unchanged: 6,
                skipped: 2,
                conflicts: 1,
                unassigned: 1,
                groups_created: 1,
                groups_updated: 1,
                groups_deleted: 1,
                memberships_added: 1,
                memberships_removed: 1,
                departments_created: 1,
                departments_assigned: 2,
                departments_deleted: 1,
            }
        );
    }

    #[test]
    fn the_plan_does_not_depend_on_input_order() {
        let source = snapshot(GROUPS_SOURCE);
        let mut target = parse_target(GROUPS_TARGET);
        target.users.push(DirectoryUser {
            id: 4,
            attributes: Attributes::from([(Field::Email, "cy@contoso.example".to_owned())]),
            ..DirectoryUser::default()
        });
        let first = plan(&source, &target, &Policy::default(), now());
        assert_eq!(first, plan(&source, &target, &Policy::default(), now()));
        target.users.reverse();
        target.groups.reverse();
        let reversed = plan(&source, &target, &Policy::default(), now());
        assert_eq!(first, reversed);
        assert_eq!(first.to_string(), reversed.to_string());
    }

    /// Folds and plans 50,000 users in 50 groups, a tenant's first sync against a directory that
    /// already holds most of them. The bounds are generous so that only a gross regression (a
    /// quadratic step, a clone per user of a whole map) fails, even in an unoptimized build.
    #[test]
    fn fifty_thousand_users_fold_and_plan_quickly() {
        const USERS: usize = 50_000;
        let entries: Vec<UserDelta> = (0..USERS)
            .map(|n| UserDelta {
                id: format!("u-{n:06}"),
                given_name: Patch::Set(format!("Given{n}")),
                surname: Patch::Set("Doe".to_owned()),
                mail: Patch::Set(format!("user{n}@contoso.example")),
                job_title: Patch::Set(if n % 10 == 0 { "Lead" } else { "Analyst" }.to_owned()),
                account_enabled: Patch::Set(n % 100 != 0),
                ..UserDelta::default()
            })
            .collect();
        let groups: Vec<GroupDelta> = (0..50)
            .map(|g| GroupDelta {
                id: format!("g-{g:02}"),
                display_name: Patch::Set(format!("Group {g}")),
                members_delta: Some(
                    (0..USERS)
                        .filter(|n| n % 50 == g)
                        .map(|n| MemberDelta {
                            odata_type: None,
                            id: format!("u-{n:06}"),
                            removed: None,
                        })
                        .collect(),
                ),
                ..GroupDelta::default()
            })
            .collect();
        // Four in five users are already linked with last run's attributes; the rest are new.
        let target = TargetState {
            users: (0..USERS)
                .filter(|n| n % 5 != 0)
                .map(|n| DirectoryUser {
                    id: n as DirectoryId,
                    entra_id: Some(format!("u-{n:06}")),
                    attributes: Attributes::from([
                        (Field::GivenName, format!("Given{n}")),
                        (Field::Surname, "Doe".to_owned()),
                        (Field::Email, format!("user{n}@contoso.example")),
                        (Field::JobTitle, "Analyst".to_owned()),
                        (Field::AccountEnabled, "true".to_owned()),
                    ]),
                    ..DirectoryUser::default()
                })
                .collect(),
            ..TargetState::default()
        };

        let started = std::time::Instant::now();
        let mut snapshot = SourceSnapshot::default();
        let mut touched = Touched::default();
        fold_groups(&mut snapshot, groups, &mut touched);
        fold_users(&mut snapshot, entries, &mut touched);
        let folded = started.elapsed();
        let started = std::time::Instant::now();
        let planned = plan(&snapshot, &target, &Policy::default(), now());
        let planning = started.elapsed();

        let counts = planned.counts();
        assert_eq!(counts.created, USERS / 5);
        assert_eq!(counts.memberships_added, USERS);
        assert_eq!(counts.groups_created, 50);
        let bound = std::time::Duration::from_secs(if cfg!(debug_assertions) { 20 } else { 2 });
        assert!(folded < bound, "folding took {folded:?}");
        assert!(planning < bound, "planning took {planning:?}");
    }

    #[test]
    fn a_deleted_user_leaves_its_groups() {
        check(
            r#"{"groups": [{"id": "g-sales", "displayName": "Sales",
                            "members@delta": [{"id": "u-ann"}, {"id": "u-bob"}]}],
                "users": [{"id": "u-ann", "givenName": "Ann", "surname": "Lee"},
                          {"id": "u-bob", "@removed": {"reason": "changed"}}]}"#,
            r#"{"users": [{"id": 1, "entra_id": "u-ann", "attributes": {"given_name": "Ann", "surname": "Lee"}},
                          {"id": 2, "entra_id": "u-bob"}],
                "groups": [{"id": 10, "entra_id": "g-sales", "name": "Sales"}],
                "memberships": [["g-sales", "u-ann"], ["g-sales", "u-bob"]]}"#,
            expect![[r#"
                disable user u-bob #2: Deleted in Microsoft
                remove  member u-bob from group g-sales
                unchanged 1, skipped 0
                counts: disabled 1, memberships_removed 1, unchanged 1
            "#]],
        );
    }

    /// Users of a tenant with offices and departments, for the scope cases.
    const OFFICES: &str = r##"{
        "groups": [{"id": "g-support", "displayName": "Support Operations",
                    "members@delta": [{"id": "u-cph"}, {"id": "u-aar"}, {"id": "u-guest"}]}],
        "users": [
            {"id": "u-cph", "givenName": "Ann", "surname": "Cph", "userType": "Member",
             "userPrincipalName": "ann@pinnacle.example", "officeLocation": "Copenhagen", "department": "Support"},
            {"id": "u-aar", "givenName": "Bo", "surname": "Aar", "userType": "Member",
             "userPrincipalName": "bo@pinnacle.example", "officeLocation": "Aarhus", "department": "Sales"},
            {"id": "u-odense", "givenName": "Cy", "surname": "Ode", "userType": "Member",
             "userPrincipalName": "cy@other.example", "mail": "cy@pinnacle.example",
             "officeLocation": "Odense", "department": "Support"},
            {"id": "u-guest", "givenName": "Gus", "surname": "Guest", "userType": "Guest",
             "userPrincipalName": "gus_x.example#EXT#@pinnacle.onmicrosoft.com", "mail": "gus@x.example",
             "officeLocation": "Copenhagen", "department": "Support"},
            {"id": "u-off", "givenName": "Dee", "surname": "Off", "userType": "Member", "accountEnabled": false,
             "userPrincipalName": "dee@pinnacle.example", "officeLocation": "Copenhagen", "department": "Support"}
        ]
    }"##;

    fn scoped(scope: &str) -> Policy {
        Policy {
            scope: serde_json::from_str(scope).expect("scope parses"),
            sync_groups: false,
            sync_departments: false,
            ..Policy::default()
        }
    }

    /// A user must meet every section with a selection; guests and disabled accounts follow the
    /// same sections, and a disabled user in scope is created disabled.
    #[test]
    fn scope_sections_are_all_met() {
        check_with(
            scoped(
                r#"{"user_types": ["Member"], "domains": ["pinnacle.example"], "departments": ["support"]}"#,
            ),
            OFFICES,
            "{}",
            expect![[r#"
                create  user u-cph: given_name "Ann", surname "Cph", email "ann@pinnacle.example", user_principal_name "ann@pinnacle.example", department "Support", office_location "Copenhagen", user_type "Member"
                create  user u-odense: given_name "Cy", surname "Ode", email "cy@pinnacle.example", user_principal_name "cy@other.example", department "Support", office_location "Odense", user_type "Member"
                create  user u-off as disabled (Disabled in Microsoft): given_name "Dee", surname "Off", email "dee@pinnacle.example", user_principal_name "dee@pinnacle.example", department "Support", office_location "Copenhagen", user_type "Member", account_enabled "false"
                unchanged 0, skipped 0
                counts: created 3
            "#]],
        );
        check_with(
            scoped(r#"{"groups": ["Support Operations"], "office_locations": ["Copenhagen"]}"#),
            OFFICES,
            "{}",
            expect![[r#"
                create  user u-cph: given_name "Ann", surname "Cph", email "ann@pinnacle.example", user_principal_name "ann@pinnacle.example", department "Support", office_location "Copenhagen", user_type "Member"
                create  user u-guest: given_name "Gus", surname "Guest", email "gus@x.example", user_principal_name "gus_x.example#EXT#@pinnacle.onmicrosoft.com", department "Support", office_location "Copenhagen", user_type "Guest"
                unchanged 0, skipped 0
                counts: created 2
            "#]],
        );
    }

    /// An empty section selects everyone, so an office location that appears later is in scope.
    #[test]
    fn an_empty_section_includes_values_that_appear_later() {
        let policy = scoped(r#"{"domains": ["pinnacle.example"], "office_locations": []}"#);
        check_with(
            policy,
            r#"{"users": [{"id": "u-new-office", "givenName": "Eva", "surname": "New",
                "userPrincipalName": "eva@pinnacle.example", "officeLocation": "Reykjavik (opened this week)"}]}"#,
            "{}",
            expect![[r#"
                create  user u-new-office: given_name "Eva", surname "New", email "eva@pinnacle.example", user_principal_name "eva@pinnacle.example", office_location "Reykjavik (opened this week)"
                unchanged 0, skipped 0
                counts: created 1
            "#]],
        );
    }

    /// Editing the scope so that linked users fall out keeps them and stops updating them, unless
    /// `on_out_of_scope` says otherwise; coming back in scope restores what the sync disabled.
    #[test]
    fn users_that_fall_out_of_scope() {
        let source = r#"{"users": [
            {"id": "u-cph", "givenName": "Ann", "surname": "Cph", "officeLocation": "Copenhagen", "jobTitle": "Lead"},
            {"id": "u-aar", "givenName": "Bo", "surname": "Aar", "officeLocation": "Aarhus", "jobTitle": "Lead"}
        ]}"#;
        let target = directory(&[
            r#"{"id": 1, "entra_id": "u-cph", "attributes": {"given_name": "Ann", "surname": "Cph",
                "office_location": "Copenhagen", "job_title": "Analyst"}}"#,
            r#"{"id": 2, "entra_id": "u-aar", "attributes": {"given_name": "Bo", "surname": "Aar",
                "office_location": "Aarhus", "job_title": "Analyst"}}"#,
        ]);
        let out_of_scope = |on_out_of_scope| Policy {
            on_out_of_scope,
            ..scoped(r#"{"office_locations": ["Copenhagen"]}"#)
        };
        check_with(
            out_of_scope(OnOutOfScope::Keep),
            source,
            &target,
            expect![[r#"
            update  user u-cph #1: job_title "Analyst" -> "Lead"
            unchanged 0, skipped 1
            counts: skipped 1, updated 1
        "#]],
        );
        check_with(
            out_of_scope(OnOutOfScope::Disable),
            source,
            &target,
            expect![[r#"
            update  user u-cph #1: job_title "Analyst" -> "Lead"
            disable user u-aar #2: Out of sync scope
            unchanged 0, skipped 0
            counts: disabled 1, updated 1
        "#]],
        );
        check_with(
            out_of_scope(OnOutOfScope::SoftDelete),
            source,
            &target,
            expect![[r#"
            update  user u-cph #1: job_title "Analyst" -> "Lead"
            soft-delete user u-aar #2: Out of sync scope
            unchanged 0, skipped 0
            counts: soft_deleted 1, updated 1
        "#]],
        );
        check_with(
            out_of_scope(OnOutOfScope::Delete),
            source,
            &target,
            expect![[r#"
            update  user u-cph #1: job_title "Analyst" -> "Lead"
            delete  user u-aar #2: Out of sync scope
            unchanged 0, skipped 0
            counts: deleted 1, updated 1
        "#]],
        );
        // Still out of scope it stays disabled; back in scope (the selection emptied) it comes
        // back up to date.
        let disabled = directory(&[r#"{"id": 2, "entra_id": "u-aar", "status": "disabled",
            "status_reason": "Out of sync scope", "attributes": {"given_name": "Bo", "surname": "Aar",
            "office_location": "Aarhus", "job_title": "Analyst"}}"#]);
        check_with(
            out_of_scope(OnOutOfScope::Disable),
            source,
            &disabled,
            expect![[r#"
            create  user u-cph: given_name "Ann", surname "Cph", job_title "Lead", office_location "Copenhagen"
            unchanged 1, skipped 0
            counts: created 1, unchanged 1
        "#]],
        );
        check_with(
            scoped("{}"),
            source,
            &disabled,
            expect![[r#"
            create  user u-cph: given_name "Ann", surname "Cph", job_title "Lead", office_location "Copenhagen"
            restore user u-aar #2: job_title "Analyst" -> "Lead"
            unchanged 0, skipped 0
            counts: created 1, restored 1
        "#]],
        );
    }

    /// A kept out-of-scope user's memberships are not the sync's to change any more.
    #[test]
    fn a_kept_out_of_scope_user_keeps_its_memberships() {
        let policy = Policy {
            sync_groups: true,
            ..scoped(r#"{"groups": ["Support Operations"]}"#)
        };
        check_with(
            policy,
            r#"{"groups": [{"id": "g-support", "displayName": "Support Operations", "members@delta": [{"id": "u-ann"}]},
                           {"id": "g-all", "displayName": "All", "members@delta": [{"id": "u-ann"}, {"id": "u-bob"}]}],
                "users": [{"id": "u-ann", "givenName": "Ann", "surname": "Lee"},
                          {"id": "u-bob", "givenName": "Bob", "surname": "Lee", "jobTitle": "Moved on"}]}"#,
            r#"{"users": [{"id": 1, "entra_id": "u-ann", "attributes": {"given_name": "Ann", "surname": "Lee"}},
                          {"id": 2, "entra_id": "u-bob", "attributes": {"given_name": "Bob", "surname": "Lee"}}],
                "groups": [{"id": 10, "entra_id": "g-support", "name": "Support Operations"},
                           {"id": 11, "entra_id": "g-all", "name": "All"}],
                "memberships": [["g-support", "u-ann"], ["g-support", "u-bob"], ["g-all", "u-ann"]]}"#,
            expect![[r#"
                unchanged 1, skipped 1
                counts: skipped 1, unchanged 1
            "#]],
        );
    }

    fn read(full_round: bool, complete: bool) -> ReadHealth {
        ReadHealth {
            full_round,
            delta_reset: false,
            complete,
            users_read: 1,
        }
    }

    /// Each rung of the ladder for a user deleted in Entra, soft-deleted then purged after the
    /// retention period by a controlled clock, and restored with its memberships in between.
    #[test]
    fn the_deprovisioning_ladder() {
        let soft_delete = Policy {
            on_deleted: OnDeleted::SoftDelete,
            ..Policy::default()
        };
        const JANE_SOFT_DELETED: &str = r#"{"id": 3, "entra_id": "u-jane", "status": "soft_deleted",
            "status_reason": "Deleted in Microsoft", "soft_deleted_at": "2026-08-24T08:00:00Z",
            "attributes": {"given_name": "Jane", "surname": "Doe", "email": "jane@contoso.example",
            "job_title": "Analyst"}}"#;
        let soft_deleted = &directory(&[JANE_SOFT_DELETED]);
        let deleted = r#"{"users": [{"id": "u-jane", "@removed": {"reason": "deleted"}}]}"#;
        let day = TimeDelta::days(1);
        // 89 days after the soft-delete nothing happens; at 90 days the user is purged.
        check_read(
            soft_delete.clone(),
            &read(false, true),
            now() - day,
            deleted,
            soft_deleted,
            expect![[r#"
                unchanged 1, skipped 0
                counts: unchanged 1
            "#]],
        );
        check_read(
            soft_delete.clone(),
            &read(false, true),
            now(),
            deleted,
            soft_deleted,
            expect![[r#"
            purge   user u-jane #3: retention over, tombstone kept
            unchanged 0, skipped 0
            counts: purged 1
        "#]],
        );
        // A shorter retention purges sooner; a later full read that no longer holds the user
        // still lets the retention run out.
        let short = Policy {
            soft_delete_retention_days: 30,
            ..soft_delete.clone()
        };
        check_read(
            short,
            &read(true, true),
            now() - day * 60,
            "{}",
            soft_deleted,
            expect![[r#"
            purge   user u-jane #3: retention over, tombstone kept
            unchanged 0, skipped 0
            counts: purged 1
        "#]],
        );
        // Restored in Entra before the purge: it comes back, with its memberships.
        check_with(
            soft_delete,
            r#"{"groups": [{"id": "g-sales", "displayName": "Sales", "members@delta": [{"id": "u-jane"}]}],
                "users": [{"id": "u-jane", "givenName": "Jane", "surname": "Doe",
                           "mail": "jane@contoso.example", "jobTitle": "Analyst"}]}"#,
            &format!(
                r#"{{"users": [{JANE_SOFT_DELETED}],
                    "groups": [{{"id": 10, "entra_id": "g-sales", "name": "Sales"}}]}}"#
            ),
            expect![[r#"
                restore user u-jane #3
                add     member u-jane to group g-sales
                unchanged 0, skipped 0
                counts: memberships_added 1, restored 1
            "#]],
        );
        // A tombstone stays a tombstone, whatever Entra says.
        check_with(
            Policy::default(),
            &users(&[JANE, r#"{"id": "u-gone", "@removed": {"reason": "deleted"}}"#]),
            &directory(&[
                r#"{"id": 3, "entra_id": "u-jane", "status": "purged", "status_reason": "Deleted in Microsoft"}"#,
                r#"{"id": 4, "entra_id": "u-gone", "status": "purged", "status_reason": "Deleted in Microsoft"}"#,
            ]),
            expect![[r#"
                unchanged 1, skipped 1
                counts: skipped 1, unchanged 1
            "#]],
        );
    }

    /// `remove_users_not_in_entra` acts only after a complete full read, and only on linked users.
    #[test]
    fn users_not_in_entra_are_deprovisioned_only_after_a_complete_full_read() {
        let remove = |on_deleted| Policy {
            remove_users_not_in_entra: true,
            on_deleted,
            ..Policy::default()
        };
        let target = directory(&[
            JANE_IN_DIRECTORY,
            r#"{"id": 4, "entra_id": "u-gone", "attributes": {"given_name": "Max", "surname": "Doe"}}"#,
            r#"{"id": 5, "attributes": {"given_name": "Own", "surname": "User"}}"#,
        ]);
        let source = users(&[JANE]);
        check_read(
            remove(OnDeleted::Disable),
            &read(true, true),
            now(),
            &source,
            &target,
            expect![[r#"
            disable user u-gone #4: Not found in Microsoft
            unchanged 1, skipped 0
            counts: disabled 1, unchanged 1
        "#]],
        );
        check_read(
            remove(OnDeleted::Delete),
            &read(true, true),
            now(),
            &source,
            &target,
            expect![[r#"
            delete  user u-gone #4: Not found in Microsoft
            unchanged 1, skipped 0
            counts: deleted 1, unchanged 1
        "#]],
        );
        check_read(
            remove(OnDeleted::Delete),
            &read(true, false),
            now(),
            &source,
            &target,
            expect![[r#"
            unchanged 1, skipped 0
            counts: unchanged 1
        "#]],
        );
        check_read(
            remove(OnDeleted::Delete),
            &read(false, true),
            now(),
            &source,
            &target,
            expect![[r#"
            unchanged 1, skipped 0
            counts: unchanged 1
        "#]],
        );
        // Already deprovisioned for its deletion: a full read that no longer holds it changes nothing.
        let deleted_before = directory(&[
            JANE_IN_DIRECTORY,
            r#"{"id": 4, "entra_id": "u-gone", "status": "disabled", "status_reason": "Deleted in Microsoft"}"#,
        ]);
        check_read(
            remove(OnDeleted::Disable),
            &read(true, true),
            now(),
            &source,
            &deleted_before,
            expect![[r#"
                unchanged 2, skipped 0
                counts: unchanged 2
            "#]],
        );
        check_read(
            Policy::default(),
            &read(true, true),
            now(),
            &source,
            &target,
            expect![[r#"
            unchanged 1, skipped 0
            counts: unchanged 1
        "#]],
        );
    }

    /// `on_create` and `never` keep edits made in the directory; `never` fields are not written
    /// on create either, and `on_create` fills a linked user's empty values only.
    #[test]
    fn field_settings_keep_directory_edits() {
        let policy = Policy {
            fields: BTreeMap::from([
                (Field::JobTitle, FieldSetting::Always),
                (Field::MobilePhone, FieldSetting::OnCreate),
                (Field::Department, FieldSetting::Never),
            ]),
            sync_departments: false,
            ..Policy::default()
        };
        let entra = |id: &str, mail: &str| {
            format!(
                r#"{{"id": "{id}", "givenName": "Jane", "surname": "Doe", "mail": "{mail}",
                    "jobTitle": "Lead", "mobilePhone": "+45 1111", "department": "Support"}}"#
            )
        };
        check_with(
            policy,
            &users(&[
                &entra("u-linked", "linked@contoso.example"),
                &entra("u-new", "new@contoso.example"),
                &entra("u-match", "match@contoso.example"),
                &entra("u-match-empty", "empty@contoso.example"),
            ]),
            &directory(&[
                r#"{"id": 1, "entra_id": "u-linked", "attributes": {"given_name": "Jane", "surname": "Doe",
                    "email": "linked@contoso.example", "job_title": "Analyst", "mobile_phone": "+45 9999 (edited)",
                    "department": "Edited"}}"#,
                r#"{"id": 2, "attributes": {"email": "match@contoso.example", "mobile_phone": "+45 2222",
                    "department": "Own"}}"#,
                r#"{"id": 3, "attributes": {"email": "empty@contoso.example"}}"#,
            ]),
            expect![[r#"
                create  user u-new: given_name "Jane", surname "Doe", email "new@contoso.example", job_title "Lead", mobile_phone "+45 1111"
                link    user u-match to #2: given_name none -> "Jane", surname none -> "Doe", job_title none -> "Lead"
                link    user u-match-empty to #3: given_name none -> "Jane", surname none -> "Doe", job_title none -> "Lead", mobile_phone none -> "+45 1111"
                update  user u-linked #1: job_title "Analyst" -> "Lead"
                unchanged 0, skipped 0
                counts: created 1, updated 3
            "#]],
        );
    }

    /// Unit and role rules write `unit` and `roles`, list the users they leave unassigned, and
    /// leave the directory's values alone when there is no rule.
    #[test]
    fn unit_and_role_rules() {
        let policy = Policy {
            assignments: crate::policy::Assignments {
                unit_from: Some(crate::policy::SourceAttribute::OfficeLocation),
                units: crate::policy::NameRule::Aliases(BTreeMap::from([
                    ("CPH HQ".to_owned(), "Copenhagen".to_owned()),
                    ("Aarhus".to_owned(), "Aarhus".to_owned()),
                ])),
                roles_from: Some(crate::policy::SourceAttribute::JobTitle),
                roles: crate::policy::NameRule::Names(vec![
                    "Support Analyst".to_owned(),
                    "Senior Support Analyst".to_owned(),
                ]),
            },
            sync_departments: false,
            ..Policy::default()
        };
        let source = users(&[
            r#"{"id": "u-one", "givenName": "Ann", "surname": "One", "officeLocation": "cph hq",
                "jobTitle": "Support Analyst"}"#,
            r#"{"id": "u-comma", "givenName": "Bo", "surname": "Comma", "officeLocation": "Aarhus",
                "jobTitle": "Senior Support Analyst, Support Analyst"}"#,
            r#"{"id": "u-none", "givenName": "Cy", "surname": "None", "officeLocation": "Odense",
                "jobTitle": "Cook"}"#,
            r#"{"id": "u-two", "givenName": "Di", "surname": "Two", "officeLocation": "CPH HQ, Aarhus"}"#,
        ]);
        let target = directory(&[
            r#"{"id": 1, "entra_id": "u-one", "attributes": {"given_name": "Ann",
            "surname": "One", "office_location": "cph hq", "job_title": "Support Analyst",
            "unit": "Old unit", "roles": "Support Analyst"}}"#,
        ]);
        check_with(
            policy,
            &source,
            &target,
            expect![[r#"
            create  user u-comma: given_name "Bo", surname "Comma", job_title "Senior Support Analyst, Support Analyst", office_location "Aarhus", unit "Aarhus", roles "Senior Support Analyst, Support Analyst"
            create  user u-none: given_name "Cy", surname "None", job_title "Cook", office_location "Odense"
            create  user u-two: given_name "Di", surname "Two", office_location "CPH HQ, Aarhus"
            update  user u-one #1: unit "Old unit" -> "Copenhagen"
            unassigned user u-none unit: no unit matches officeLocation "Odense"
            unassigned user u-none roles: no role matches jobTitle "Cook"
            unassigned user u-two unit: officeLocation "CPH HQ, Aarhus" matches several units (Aarhus, Copenhagen); a user has one
            unassigned user u-two roles: jobTitle is not set
            unchanged 0, skipped 0
            counts: created 3, unassigned 4, updated 1
        "#]],
        );
        let one = r#"{"id": "u-one", "givenName": "Ann", "surname": "One", "officeLocation": "cph hq",
            "jobTitle": "Support Analyst"}"#;
        check_with(
            Policy::default(),
            &users(&[one]),
            &target,
            expect![[r#"
            unchanged 1, skipped 0
            counts: unchanged 1
        "#]],
        );
    }

    /// Departments come from the department values of users the sync creates or follows; a
    /// department the sync created is removed once empty, one made in the directory never.
    #[test]
    fn departments_follow_users() {
        check(
            r#"{"users": [
                {"id": "u-new", "givenName": "Ann", "surname": "New", "department": "Support"},
                {"id": "u-moved", "givenName": "Bo", "surname": "Moved", "department": "support"},
                {"id": "u-cleared", "givenName": "Cy", "surname": "Cleared"},
                {"id": "u-same", "givenName": "Di", "surname": "Same", "department": "FINANCE"},
                {"id": "u-fresh", "givenName": "Ed", "surname": "Fresh", "department": "Research"}
            ]}"#,
            r#"{"users": [
                {"id": 2, "entra_id": "u-moved", "department": 20,
                 "attributes": {"given_name": "Bo", "surname": "Moved", "department": "support"}},
                {"id": 3, "entra_id": "u-cleared", "department": 21,
                 "attributes": {"given_name": "Cy", "surname": "Cleared"}},
                {"id": 4, "entra_id": "u-same", "department": 22,
                 "attributes": {"given_name": "Di", "surname": "Same", "department": "FINANCE"}},
                {"id": 5, "department": 23, "attributes": {"given_name": "Own", "surname": "User"}}
            ],
            "departments": [
                {"id": 20, "name": "Old Support", "created_by_sync": true},
                {"id": 21, "name": "Made by hand", "created_by_sync": false},
                {"id": 22, "name": "Finance", "created_by_sync": true},
                {"id": 23, "name": "Kept by its own user", "created_by_sync": true},
                {"id": 24, "name": "Support", "created_by_sync": false}
            ]}"#,
            expect![[r#"
                create  department "Research"
                create  user u-fresh in department "Research": given_name "Ed", surname "Fresh", department "Research"
                create  user u-new in department "Support": given_name "Ann", surname "New", department "Support"
                assign  user u-cleared to department none
                assign  user u-moved to department "support"
                delete  department "Old Support" #20
                unchanged 3, skipped 0
                counts: created 2, departments_assigned 4, departments_created 1, departments_deleted 1, unchanged 3
            "#]],
        );
        let off = Policy {
            sync_departments: false,
            ..Policy::default()
        };
        check_with(
            off,
            r#"{"users": [{"id": "u-new", "givenName": "Ann", "surname": "New", "department": "Support"}]}"#,
            r#"{"departments": [{"id": 20, "name": "Empty", "created_by_sync": true}]}"#,
            expect![[r#"
                create  user u-new: given_name "Ann", surname "New", department "Support"
                unchanged 0, skipped 0
                counts: created 1
            "#]],
        );
    }

    /// `match_existing_by`: the keys in order, case-insensitive; `upn` also finds a directory
    /// user whose email is the UPN.
    #[test]
    fn match_existing_by_upn() {
        let source = users(&[
            r#"{"id": "u-jane", "givenName": "Jane", "surname": "Doe", "mail": "jane.doe@contoso.example",
                "userPrincipalName": "JDoe@contoso.example"}"#,
        ]);
        let target = directory(&[
            r#"{"id": 7, "attributes": {"given_name": "Jane", "surname": "Doe",
            "email": "jdoe@contoso.example"}}"#,
        ]);
        let by = |keys: Vec<MatchBy>| Policy {
            match_existing_by: keys,
            ..Policy::default()
        };
        check_with(
            by(vec![MatchBy::Email]),
            &source,
            &target,
            expect![[r#"
            create  user u-jane: given_name "Jane", surname "Doe", email "jane.doe@contoso.example", user_principal_name "JDoe@contoso.example"
            unchanged 0, skipped 0
            counts: created 1
        "#]],
        );
        check_with(
            by(vec![MatchBy::Upn]),
            &source,
            &target,
            expect![[r#"
            link    user u-jane to #7: email "jdoe@contoso.example" -> "jane.doe@contoso.example", user_principal_name none -> "JDoe@contoso.example"
            unchanged 0, skipped 0
            counts: updated 1
        "#]],
        );
        check_with(
            by(vec![MatchBy::Email, MatchBy::Upn]),
            &source,
            &target,
            expect![[r#"
            link    user u-jane to #7: email "jdoe@contoso.example" -> "jane.doe@contoso.example", user_principal_name none -> "JDoe@contoso.example"
            unchanged 0, skipped 0
            counts: updated 1
        "#]],
        );
    }

    /// `groups_to_sync = "scoped"` imports only the scope's groups.
    #[test]
    fn scoped_groups_only() {
        let policy = Policy {
            scope: serde_json::from_str(r#"{"groups": ["Support Operations"]}"#).expect("scope"),
            groups_to_sync: GroupsToSync::Scoped,
            sync_departments: false,
            ..Policy::default()
        };
        check_with(
            policy,
            r#"{"groups": [{"id": "g-support", "displayName": "Support Operations", "members@delta": [{"id": "u-ann"}]},
                           {"id": "g-all", "displayName": "All", "members@delta": [{"id": "u-ann"}]}],
                "users": [{"id": "u-ann", "givenName": "Ann", "surname": "Lee"}]}"#,
            "{}",
            expect![[r#"
                create  group g-support: name "Support Operations", description none
                create  user u-ann: given_name "Ann", surname "Lee"
                add     member u-ann to group g-support
                unchanged 0, skipped 0
                counts: created 1, groups_created 1, memberships_added 1
            "#]],
        );
    }

    /// The issue's weekly org update in one delta run, scope `groups = ["Support Operations"]`:
    /// new hires added to the group are created, changed job titles updated, departed employees
    /// deprovisioned as configured (soft-delete here), a disabled account marked, people outside
    /// the group untouched.
    #[test]
    fn weekly_org_update() {
        let policy = Policy {
            scope: serde_json::from_str(r#"{"groups": ["Support Operations"]}"#).expect("scope"),
            on_deleted: OnDeleted::SoftDelete,
            ..Policy::default()
        };
        check_with(
            policy,
            r#"{
                "groups": [{"id": "g-support", "displayName": "Support Operations", "members@delta": [
                    {"id": "u-ann"}, {"id": "u-off"}, {"id": "u-left"}, {"id": "u-hire"}]}],
                "users": [
                    {"id": "u-ann", "givenName": "Ann", "surname": "Lee", "mail": "ann@pinnacle.example",
                     "jobTitle": "Senior Support Analyst", "department": "Support"},
                    {"id": "u-off", "givenName": "Olga", "surname": "Off", "mail": "olga@pinnacle.example",
                     "jobTitle": "Support Analyst", "department": "Support", "accountEnabled": false},
                    {"id": "u-left", "@removed": {"reason": "deleted"}},
                    {"id": "u-hire", "givenName": "Hal", "surname": "Hire", "mail": "hal@pinnacle.example",
                     "jobTitle": "Support Analyst", "department": "Support", "accountEnabled": true},
                    {"id": "u-outside", "givenName": "Oscar", "surname": "Out", "mail": "oscar@pinnacle.example",
                     "jobTitle": "Sales Lead", "department": "Sales"},
                    {"id": "u-outside-linked", "givenName": "Una", "surname": "Out", "jobTitle": "Changed"}
                ]
            }"#,
            r#"{
                "users": [
                    {"id": 1, "entra_id": "u-ann", "department": 30, "attributes": {"given_name": "Ann",
                     "surname": "Lee", "email": "ann@pinnacle.example", "job_title": "Support Analyst",
                     "department": "Support"}},
                    {"id": 2, "entra_id": "u-off", "department": 30, "attributes": {"given_name": "Olga",
                     "surname": "Off", "email": "olga@pinnacle.example", "job_title": "Support Analyst",
                     "department": "Support", "account_enabled": "false"}},
                    {"id": 3, "entra_id": "u-left", "department": 30, "attributes": {"given_name": "Lee",
                     "surname": "Left"}},
                    {"id": 4, "entra_id": "u-outside-linked", "attributes": {"given_name": "Una",
                     "surname": "Out", "job_title": "Before"}}
                ],
                "groups": [{"id": 10, "entra_id": "g-support", "name": "Support Operations"}],
                "departments": [{"id": 30, "name": "Support", "created_by_sync": true}],
                "memberships": [["g-support", "u-ann"], ["g-support", "u-off"], ["g-support", "u-left"]]
            }"#,
            expect![[r#"
                create  user u-hire in department "Support": given_name "Hal", surname "Hire", email "hal@pinnacle.example", job_title "Support Analyst", department "Support", account_enabled "true"
                update  user u-ann #1: job_title "Support Analyst" -> "Senior Support Analyst"
                disable user u-off #2: Disabled in Microsoft
                soft-delete user u-left #3: Deleted in Microsoft
                add     member u-hire to group g-support
                remove  member u-left from group g-support
                unchanged 0, skipped 1
                counts: created 1, departments_assigned 1, disabled 1, memberships_added 1, memberships_removed 1, skipped 1, soft_deleted 1, updated 1
            "#]],
        );
    }

    /// A partial read plans exactly what a whole one does: it leaves out only settled users (here
    /// u-bob, linked, unchanged, the one member of a department the sync made and of two
    /// groups) and their memberships, and `settled` keeps their counts and their department.
    /// Without `settled` that department would look empty and be deleted. A user left out is
    /// neither added to nor taken out of a group.
    #[test]
    fn a_partial_read_plans_what_the_whole_read_plans() {
        let source = r#"{"users": [
            {"id": "u-ann", "givenName": "Ann", "surname": "Lee", "mail": "ann@contoso.example",
             "jobTitle": "Lead", "department": "Sales"},
            {"id": "u-bob", "givenName": "Bob", "surname": "Ray", "mail": "bob@contoso.example",
             "department": "Research"},
            {"id": "u-cy", "@removed": {"reason": "deleted"}},
            {"id": "u-eve", "givenName": "Eve", "surname": "Orr", "mail": "eve@contoso.example"},
            {"id": "u-eve-twin", "givenName": "Eva", "surname": "Orr", "mail": "EVE@contoso.example"},
            {"id": "u-dup1", "givenName": "Dee", "surname": "One", "mail": "dup@contoso.example"},
            {"id": "u-dup2", "givenName": "Dee", "surname": "Two", "mail": "dup@contoso.example"},
            {"id": "u-new", "givenName": "Nia", "surname": "New", "mail": "nia@contoso.example",
             "department": "Support"}
        ], "groups": [
            {"id": "g-all", "displayName": "All", "members@delta": [
                {"id": "u-ann"}, {"id": "u-bob"}, {"id": "u-cy"}, {"id": "u-eve"}]},
            {"id": "g-bob", "displayName": "Bob's", "members@delta": [{"id": "u-bob"}]},
            {"id": "g-new", "displayName": "New", "members@delta": [{"id": "u-new"}]}
        ]}"#;
        let target = r#"{"users": [
            {"id": 1, "entra_id": "u-ann", "department": 20, "attributes": {"given_name": "Ann",
             "surname": "Lee", "email": "ann@contoso.example", "department": "Sales"}},
            {"id": 2, "entra_id": "u-bob", "department": 21, "attributes": {"given_name": "Bob",
             "surname": "Ray", "email": "bob@contoso.example", "department": "Research"}},
            {"id": 3, "entra_id": "u-cy", "department": 22, "attributes": {"given_name": "Cy",
             "surname": "Ode", "email": "cy@contoso.example", "department": "Old"}},
            {"id": 5, "entra_id": "u-eve", "attributes": {"given_name": "Eve", "surname": "Orr",
             "email": "eve@contoso.example"}},
            {"id": 6, "entra_id": "u-sam", "status": "soft_deleted", "status_reason": "Deleted in Microsoft",
             "soft_deleted_at": "2026-01-02T08:00:00Z", "attributes": {"given_name": "Sam"}},
            {"id": 7, "attributes": {"given_name": "Own", "surname": "User", "email": "nia@contoso.example"}}
        ],
        "groups": [{"id": 10, "entra_id": "g-all", "name": "All"}, {"id": 11, "entra_id": "g-bob", "name": "Bob's"}],
        "departments": [
            {"id": 20, "name": "Sales", "created_by_sync": false},
            {"id": 21, "name": "Research", "created_by_sync": true},
            {"id": 22, "name": "Old", "created_by_sync": true}
        ],
        "memberships": [["g-all", "u-ann"], ["g-all", "u-bob"], ["g-all", "u-cy"], ["g-all", "u-eve"],
                        ["g-bob", "u-bob"]]}"#;
        let policy = Policy::default();
        let whole_source = snapshot(source);
        let whole_target = parse_target(target);
        let whole = plan(&whole_source, &whole_target, &policy, now());
        expect![[r#"
            create  department "Support"
            create  group g-new: name "New", description none
            link    user u-new to #7: given_name "Own" -> "Nia", surname "User" -> "New", department none -> "Support"
            update  user u-ann #1: job_title none -> "Lead"
            disable user u-cy #3: Deleted in Microsoft
            assign  user u-new to department "Support"
            add     member u-new to group g-new
            remove  member u-cy from group g-all
            purge   user u-sam #6: retention over, tombstone kept
            conflict user u-dup1: email dup@contoso.example is shared by 2 Entra users (u-dup1, u-dup2); none is created or linked
            conflict user u-dup2: email dup@contoso.example is shared by 2 Entra users (u-dup1, u-dup2); none is created or linked
            conflict user u-eve-twin #5: email eve@contoso.example belongs to directory user #5, already linked to Entra user u-eve
            unchanged 2, skipped 0
            counts: conflicts 3, departments_assigned 1, departments_created 1, disabled 1, groups_created 1, memberships_added 1, memberships_removed 1, purged 1, unchanged 2, updated 2
        "#]]
        .assert_eq(&render(&whole));

        let mut partial_source = whole_source.clone();
        partial_source.users.remove("u-bob");
        let mut partial_target = whole_target.clone();
        partial_target
            .users
            .retain(|user| user.entra_id.as_deref() != Some("u-bob"));
        partial_target.memberships.retain(|(_, user)| user != "u-bob");
        let unsettled = plan(&partial_source, &partial_target, &policy, now());
        partial_target.settled = Settled {
            linked_users: 1,
            department_members: BTreeMap::from([(21, 1)]),
            memberships: 2,
        };
        let partial = plan(&partial_source, &partial_target, &policy, now());
        assert_eq!(partial, whole);
        assert_eq!(render(&partial), render(&whole));
        assert!(
            render(&unsettled).contains(r#"delete  department "Research" #21"#),
            "{unsettled}"
        );
    }
}
