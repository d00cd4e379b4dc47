//! The target side as the planner sees it: the directory's users, groups and the memberships
//! the sync made, loaded by the service before planning.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::map::Attributes;
use crate::model::EntraId;

/// The directory's own id for a user or group.
pub type DirectoryId = i64;

/// A directory user's lifecycle state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// Can sign in to the application.
    #[default]
    Active,
    /// Kept but blocked; `status_reason` says why.
    Disabled,
    /// Hidden and kept for the retention period before purge.
    SoftDeleted,
    /// Personal fields cleared; ids and timestamps kept as a tombstone.
    Purged,
}

impl UserStatus {
    /// The status as serialized (`soft_deleted`).
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
            UserStatus::SoftDeleted => "soft_deleted",
            UserStatus::Purged => "purged",
        }
    }
}

/// A user in the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DirectoryUser {
    pub id: DirectoryId,
    /// The Entra object id this user is linked to; `None` for users the sync does not own.
    pub entra_id: Option<EntraId>,
    pub attributes: Attributes,
    pub status: UserStatus,
    /// Why the user is not active, such as "Disabled in Microsoft".
    pub status_reason: Option<String>,
    /// When the user was soft-deleted, for the retention period.
    pub soft_deleted_at: Option<DateTime<Utc>>,
    /// The department the user is assigned to.
    pub department: Option<DirectoryId>,
}

/// A user group in the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DirectoryGroup {
    pub id: DirectoryId,
    /// The Entra group this group was imported from; `None` for groups the sync does not own.
    pub entra_id: Option<EntraId>,
    pub name: String,
    pub description: Option<String>,
}

/// A department in the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DirectoryDepartment {
    pub id: DirectoryId,
    /// Unique in the organization, compared case-insensitively.
    pub name: String,
    /// Only a department the sync created is removed by it, and only once it is empty.
    pub created_by_sync: bool,
}

/// The directory of one organization, as far as the planner needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetState {
    pub users: Vec<DirectoryUser>,
    pub groups: Vec<DirectoryGroup>,
    pub departments: Vec<DirectoryDepartment>,
    /// Memberships the sync made, as (group Entra id, user Entra id).
    pub memberships: BTreeSet<(EntraId, EntraId)>,
    /// The users a partial read left out (none when every user was read).
    pub settled: Settled,
}

/// What a partial read of the directory left out: a delta run reads only the users its changes
/// can reach (those the delta names, those it moves between groups, every user not linked yet,
/// every soft-deleted one and those sharing a match key with a newcomer), with their snapshot
/// rows. Every other user is settled: the last run left it as Entra asks and nothing of it
/// changed since, so the planner plans nothing for it, but counts it where a whole count matters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settled {
    /// Linked users left out: they count as unchanged, and in the guards' percentages.
    pub linked_users: usize,
    /// Users left out, by the department they belong to: a department keeps its members.
    pub department_members: BTreeMap<DirectoryId, usize>,
    /// Memberships the sync made of the users left out (`memberships` holds those of the users
    /// read): they count in the guards' percentages.
    pub memberships: usize,
}
