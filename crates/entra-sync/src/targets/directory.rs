//! The embedded directory: organizations, users, groups and memberships in the SQLite database,
//! applied in transactions per batch with multi-row statements for the bulk kinds.
//!
//! Architecture Invariant: every UPDATE and DELETE the sync issues on a user or group is qualified
//! by the row's Entra id, so a directory user or group the sync neither created nor linked is never
//! touched. Departments have no Entra id: a DELETE of one is qualified by `created_by_sync` and by
//! having no users.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, Utc};
use entra_sync_core::map::{Attributes, Field};
use entra_sync_core::plan::{Action, FieldChange};
use entra_sync_core::target::{
    DirectoryDepartment, DirectoryGroup, DirectoryId, DirectoryUser, TargetState, UserStatus,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::{Outcome, Target, TargetError};
use crate::mail::Welcome;
use crate::store::{
    Doing, ROWS_PER_INSERT, ROWS_PER_READ, Store, StoreError, decode_json, decode_lines, insert_actions,
    timestamp, write_in_chunks,
};
use crate::{changes, clock};

/// Actions per apply transaction unless `ENTRA_SYNC_APPLY_BATCH` says otherwise: large enough for
/// throughput, small enough that a crash loses little work (a few seconds of it at a million
/// users) and progress moves. Each commit writes every index page its batch touched to the WAL,
/// and the checkpoint copies it again: new users' emails land all over their index, so a batch
/// of a big first sync touches nearly all of it. At 1M users 100,000 wrote 8.8 GB where 20,000
/// wrote 11 GB, with 6 s less system time (BENCHMARKS.md, log row 24).
const DEFAULT_APPLY_BATCH: usize = 100_000;

/// The environment variable that sets the actions per apply transaction. Smaller batches move the
/// progress more often and leave a crash less to redo; larger ones write a first sync of a big
/// tenant a little faster.
pub const APPLY_BATCH_VAR: &str = "ENTRA_SYNC_APPLY_BATCH";

/// The actions per apply transaction, read once from the environment.
fn apply_batch() -> usize {
    static BATCH: OnceLock<usize> = OnceLock::new();
    *BATCH.get_or_init(|| {
        let Ok(value) = std::env::var(APPLY_BATCH_VAR) else {
            return DEFAULT_APPLY_BATCH;
        };
        match value.trim().parse::<usize>() {
            Ok(batch) if batch > 0 => batch,
            _ => {
                tracing::warn!(
                    value,
                    "{APPLY_BATCH_VAR} must be a whole number above 0; applying {DEFAULT_APPLY_BATCH} actions per transaction"
                );
                DEFAULT_APPLY_BATCH
            }
        }
    })
}

/// The directory of one organization.
pub struct Directory {
    /// The database, whose WAL each applied batch has copied back in the background.
    store: Store,
    organization_id: i64,
    /// Entra id to directory id, kept across batches so memberships find users created earlier.
    ids: Mutex<IdMaps>,
    /// Welcome emails to queue for created users, when the connection sends them.
    welcome: Option<Welcome>,
}

/// Directory ids by Entra id, with foldhash's fast hash: a big first sync looks every new user
/// up here for its memberships and its change-feed row.
#[derive(Default)]
struct IdMaps {
    users: foldhash::HashMap<String, DirectoryId>,
    groups: foldhash::HashMap<String, DirectoryId>,
}

/// One user's change: its attribute changes and, for a lifecycle step, its new status and
/// reason.
struct UserChange<'a> {
    directory_id: DirectoryId,
    entra_id: &'a str,
    changes: &'a [FieldChange],
    status: Option<(UserStatus, Option<&'a str>)>,
}

impl<'a> UserChange<'a> {
    /// The change an update, restore, disable or soft-delete makes.
    fn of(action: &'a Action) -> Option<UserChange<'a>> {
        let (directory_id, entra_id, changes, status) = match action {
            Action::UpdateUser {
                directory_id,
                entra_id,
                changes,
            } => (directory_id, entra_id, changes.as_slice(), None),
            Action::RestoreUser {
                directory_id,
                entra_id,
                changes,
            } => (
                directory_id,
                entra_id,
                changes.as_slice(),
                Some((UserStatus::Active, None)),
            ),
            Action::DisableUser {
                directory_id,
                entra_id,
                reason,
            } => (
                directory_id,
                entra_id,
                &[][..],
                Some((UserStatus::Disabled, Some(reason.as_str()))),
            ),
            Action::SoftDeleteUser {
                directory_id,
                entra_id,
                reason,
            } => (
                directory_id,
                entra_id,
                &[][..],
                Some((UserStatus::SoftDeleted, Some(reason.as_str()))),
            ),
            _ => return None,
        };
        Some(UserChange {
            directory_id: *directory_id,
            entra_id,
            changes,
            status,
        })
    }
}

/// The columns of a user that `change_users` reads and writes.
struct StoredUser {
    entra_id: Option<String>,
    attributes: Attributes,
    status: String,
    status_reason: Option<String>,
    soft_deleted_at: Option<String>,
}

/// The directory users a partial read takes: see [`Directory::load_reach`].
struct Reach<'a> {
    entra_ids: &'a [String],
    match_values: &'a [String],
    by_upn: bool,
}

/// A `users` row as `read_state` reads it.
#[derive(serde::Deserialize)]
struct UserRow {
    id: DirectoryId,
    entra_id: Option<String>,
    attributes: Attributes,
    status: String,
    status_reason: Option<String>,
    soft_deleted_at: Option<String>,
    department_id: Option<DirectoryId>,
}

/// The stored name of a user status.
pub fn status_name(status: UserStatus) -> &'static str {
    match status {
        UserStatus::Active => "active",
        UserStatus::Disabled => "disabled",
        UserStatus::SoftDeleted => "soft_deleted",
        UserStatus::Purged => "purged",
    }
}

fn parse_status(name: &str) -> UserStatus {
    match name {
        "disabled" => UserStatus::Disabled,
        "soft_deleted" => UserStatus::SoftDeleted,
        "purged" => UserStatus::Purged,
        _ => UserStatus::Active,
    }
}

fn email_lower(attributes: &Attributes) -> Option<String> {
    attributes.get(Field::Email).map(str::to_lowercase)
}

fn target_error(source: StoreError) -> TargetError {
    TargetError {
        target: "directory",
        source,
    }
}

impl Directory {
    /// The directory of the organization with this id.
    pub fn new(store: &Store, organization_id: i64) -> Directory {
        Directory {
            store: store.clone(),
            organization_id,
            ids: Mutex::new(IdMaps::default()),
            welcome: None,
        }
    }

    /// Queues `welcome` emails for the users this directory creates, in the same transactions.
    pub fn with_welcome(mut self, welcome: Option<Welcome>) -> Directory {
        self.welcome = welcome;
        self
    }

    /// A batch's transaction, holding the write lock from its start. A batch can read before it
    /// writes (the departments before creating users, a user's row before updating it); in a
    /// deferred transaction that read would pin a snapshot, and a commit by another connection in
    /// between (the welcome sender, the run's record) would then fail the batch's first write
    /// with SQLITE_BUSY_SNAPSHOT, which no busy timeout can wait out.
    async fn begin_batch(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.store
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .doing("applying a batch")
    }

    fn user_id(&self, entra_id: &str) -> Option<DirectoryId> {
        self.ids.lock().ok()?.users.get(entra_id).copied()
    }

    fn group_id(&self, entra_id: &str) -> Option<DirectoryId> {
        self.ids.lock().ok()?.groups.get(entra_id).copied()
    }

    async fn load_state(&self) -> Result<TargetState, StoreError> {
        self.read_state(None).await
    }

    /// Reads the directory users a delta run's plan can reach, and every group, department and
    /// membership: the users linked to `entra_ids` (the caller reads their snapshot rows), every
    /// user not linked yet, and every user whose email (or, with `by_upn`, UPN) is one of
    /// `match_values`, which a newcomer may match. The users left out are counted in `settled`
    /// ([`entra_sync_core::target::Settled`]), out of the `linked_users` the directory links in
    /// all (`Store::linked_user_count`).
    pub async fn load_reach(
        &self,
        entra_ids: &[String],
        match_values: &[String],
        by_upn: bool,
        linked_users: usize,
    ) -> Result<TargetState, StoreError> {
        let reach = Reach {
            entra_ids,
            match_values,
            by_upn,
        };
        let mut state = self.read_state(Some(&reach)).await?;
        let read_linked = state.users.iter().filter(|user| user.entra_id.is_some()).count();
        state.settled.linked_users = linked_users.saturating_sub(read_linked);
        let members: Vec<(DirectoryId, i64)> = sqlx::query_as(
            "SELECT d.id, (SELECT count(*) FROM users u WHERE u.department_id = d.id) FROM departments d \
             WHERE d.organization_id = ?",
        )
        .bind(self.organization_id)
        .fetch_all(&self.store.pool)
        .await
        .doing("counting department members")?;
        let mut members: BTreeMap<DirectoryId, usize> = members
            .into_iter()
            .map(|(id, count)| (id, count as usize))
            .collect();
        for department in state.users.iter().filter_map(|user| user.department) {
            if let Some(count) = members.get_mut(&department) {
                *count = count.saturating_sub(1);
            }
        }
        members.retain(|_, count| *count > 0);
        state.settled.department_members = members;
        // The sync adds memberships only for linked users and never unlinks one, so its
        // memberships are counted without looking at their users.
        let memberships: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM memberships m JOIN groups g ON g.id = m.group_id \
             WHERE g.organization_id = ? AND m.managed_by_sync = 1 AND g.entra_id IS NOT NULL",
        )
        .bind(self.organization_id)
        .fetch_one(&self.store.pool)
        .await
        .doing("counting memberships")?;
        state.settled.memberships = (memberships as usize).saturating_sub(state.memberships.len());
        Ok(state)
    }

    /// The Entra ids of the soft-deleted users the sync owns: a run may purge any of them.
    pub async fn soft_deleted_entra_ids(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT entra_id FROM users WHERE organization_id = ? AND status = 'soft_deleted' AND entra_id IS NOT NULL",
        )
        .bind(self.organization_id)
        .fetch_all(&self.store.pool)
        .await
        .doing("finding soft-deleted users")
    }

    /// Reads the directory: every user, or those `reach` names.
    async fn read_state(&self, reach: Option<&Reach<'_>>) -> Result<TargetState, StoreError> {
        let mut state = TargetState::default();
        let mut ids = IdMaps::default();
        // The users a reach names, by the indexes on the Entra id and on the email; `id IN`
        // takes each once, by its primary key.
        let users = match reach {
            None => "organization_id = ?1".to_owned(),
            Some(reach) => {
                let by_upn = if reach.by_upn {
                    " UNION ALL SELECT id FROM users WHERE organization_id = ?1 \
                     AND lower(attributes ->> 'user_principal_name') IN (SELECT value FROM json_each(?3))"
                } else {
                    ""
                };
                format!(
                    "id IN (SELECT id FROM users WHERE organization_id = ?1 AND entra_id IN (SELECT value FROM json_each(?2)) \
                     UNION ALL SELECT id FROM users WHERE organization_id = ?1 AND entra_id IS NULL \
                     UNION ALL SELECT id FROM users WHERE organization_id = ?1 AND email_lower IN (SELECT value FROM json_each(?3)){by_upn})"
                )
            }
        };
        // Each row as a line of JSON (the attributes as stored), `ROWS_PER_READ` rows a value.
        let sql = format!(
            "SELECT group_concat(printf('{{\"id\":%d,\"entra_id\":%s,\"attributes\":%s,\"status\":%s,\
             \"status_reason\":%s,\"soft_deleted_at\":%s,\"department_id\":%s}}', id, json_quote(entra_id), \
             attributes, json_quote(status), json_quote(status_reason), json_quote(soft_deleted_at), \
             json_quote(department_id)), char(10)) \
             FROM users WHERE {users} GROUP BY id / {ROWS_PER_READ}"
        );
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(self.organization_id);
        if let Some(reach) = reach {
            query = query
                .bind(serde_json::to_string(reach.entra_ids).unwrap_or_default())
                .bind(serde_json::to_string(reach.match_values).unwrap_or_default());
        }
        let chunks = query.fetch(&self.store.pool);
        let rows: Vec<UserRow> = decode_lines(chunks, "loading directory users", "a directory user").await?;
        for row in rows {
            let user = DirectoryUser {
                id: row.id,
                entra_id: row.entra_id,
                attributes: row.attributes,
                status: parse_status(&row.status),
                status_reason: row.status_reason,
                soft_deleted_at: row
                    .soft_deleted_at
                    .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
                    .map(|time| time.with_timezone(&Utc)),
                department: row.department_id,
            };
            if let Some(entra_id) = &user.entra_id {
                ids.users.insert(entra_id.clone(), user.id);
            }
            state.users.push(user);
        }
        let rows =
            sqlx::query("SELECT id, entra_id, name, description FROM groups WHERE organization_id = ?")
                .bind(self.organization_id)
                .fetch_all(&self.store.pool)
                .await
                .doing("loading directory groups")?;
        for row in rows {
            let group = DirectoryGroup {
                id: row.get(0),
                entra_id: row.get(1),
                name: row.get(2),
                description: row.get(3),
            };
            if let Some(entra_id) = &group.entra_id {
                ids.groups.insert(entra_id.clone(), group.id);
            }
            state.groups.push(group);
        }
        let rows = sqlx::query(
            "SELECT id, name, created_by_sync FROM departments WHERE organization_id = ? ORDER BY id",
        )
        .bind(self.organization_id)
        .fetch_all(&self.store.pool)
        .await
        .doing("loading departments")?;
        for row in rows {
            state.departments.push(DirectoryDepartment {
                id: row.get(0),
                name: row.get(1),
                created_by_sync: row.get::<i64, _>(2) != 0,
            });
        }
        let query = match reach {
            None => sqlx::query(
                "SELECT g.entra_id, u.entra_id FROM memberships m JOIN groups g ON g.id = m.group_id JOIN users u ON u.id = m.user_id \
                 WHERE g.organization_id = ? AND m.managed_by_sync = 1 AND g.entra_id IS NOT NULL AND u.entra_id IS NOT NULL",
            ),
            // A partial read takes the memberships of the users it read (the planner changes no
            // other user's), found from each user: CROSS JOIN keeps SQLite from walking every
            // group's memberships for each.
            Some(_) => {
                let users_read: Vec<DirectoryId> = state.users.iter().map(|user| user.id).collect();
                sqlx::query(
                    "SELECT g.entra_id, u.entra_id FROM json_each(?) read CROSS JOIN memberships m CROSS JOIN groups g \
                     CROSS JOIN users u WHERE m.user_id = read.value AND g.id = m.group_id AND u.id = m.user_id \
                     AND g.organization_id = ? AND m.managed_by_sync = 1 AND g.entra_id IS NOT NULL AND u.entra_id IS NOT NULL",
                )
                .bind(serde_json::to_string(&users_read).unwrap_or_default())
            }
        };
        let rows = query
            .bind(self.organization_id)
            .fetch_all(&self.store.pool)
            .await
            .doing("loading memberships")?;
        for row in rows {
            state.memberships.insert((row.get(0), row.get(1)));
        }
        if let Ok(mut shared) = self.ids.lock() {
            *shared = ids;
        }
        Ok(state)
    }

    async fn apply_batch(&self, actions: &[Action], now: DateTime<Utc>) -> Result<Vec<Outcome>, StoreError> {
        let mut transaction = self.begin_batch().await?;
        let outcomes = self.apply_in(&mut transaction, actions, now, None).await?;
        transaction.commit().await.doing("committing a batch")?;
        Ok(outcomes)
    }

    /// Applies a plan's actions in batches of `apply_batch()` actions, each batch recording its actions
    /// and outcomes in the run's history in the same transaction: one commit per batch, and the
    /// history never misses an applied action. `applied` hears after each batch how many actions
    /// are done. Returns how many actions the directory refused.
    ///
    /// Each batch is let go of once it is committed: the history holds it from then on, and a
    /// first sync's million `CreateUser`s are most of its plan, whose room the rest of the apply
    /// (the id maps, SQLite's pages) takes over instead of adding to.
    pub async fn apply_plan(
        &self,
        actions: Vec<Action>,
        run_id: i64,
        mut applied: impl FnMut(usize),
    ) -> Result<usize, TargetError> {
        let mut done = 0;
        let mut failed = 0;
        let mut actions = actions.into_iter();
        loop {
            let batch: Vec<Action> = actions.by_ref().take(apply_batch()).collect();
            if batch.is_empty() {
                break;
            }
            let outcomes = async {
                let mut transaction = self.begin_batch().await?;
                let outcomes = self
                    .apply_in(&mut transaction, &batch, clock::now(), Some((run_id, done)))
                    .await?;
                insert_actions(&mut transaction, run_id, done, &batch, &outcomes).await?;
                transaction.commit().await.doing("committing a batch")?;
                Ok(outcomes)
            }
            .await
            .map_err(target_error)?;
            // The next batch goes on while another connection copies this one into the database.
            self.store.checkpoint_in_background();
            failed += outcomes.iter().filter(|outcome| outcome.is_some()).count();
            done += batch.len();
            applied(done);
        }
        Ok(failed)
    }

    async fn apply_in(
        &self,
        transaction: &mut Transaction<'_, Sqlite>,
        actions: &[Action],
        now: DateTime<Utc>,
        run: Option<(i64, usize)>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let now = timestamp(now);
        let mut outcomes = Vec::with_capacity(actions.len());
        let mut index = 0;
        while index < actions.len() {
            // Runs of the bulk kinds go through multi-row statements.
            let run_end = actions[index..]
                .iter()
                .position(|action| std::mem::discriminant(action) != std::mem::discriminant(&actions[index]))
                .map_or(actions.len(), |offset| index + offset);
            match &actions[index] {
                Action::CreateUser { .. } => {
                    outcomes.extend(
                        self.create_users(transaction, &actions[index..run_end], &now)
                            .await?,
                    );
                    index = run_end;
                }
                Action::AddMembership { .. } => {
                    outcomes.extend(
                        self.add_memberships(transaction, &actions[index..run_end])
                            .await?,
                    );
                    index = run_end;
                }
                Action::CreateGroup { .. } => {
                    outcomes.extend(
                        self.create_groups(transaction, &actions[index..run_end], &now)
                            .await?,
                    );
                    index = run_end;
                }
                Action::SetDepartment { .. } => {
                    outcomes.extend(
                        self.set_departments(transaction, &actions[index..run_end], &now)
                            .await?,
                    );
                    index = run_end;
                }
                Action::UpdateUser { .. }
                | Action::RestoreUser { .. }
                | Action::DisableUser { .. }
                | Action::SoftDeleteUser { .. } => {
                    for chunk in actions[index..run_end].chunks(ROWS_PER_INSERT) {
                        let changes: Vec<UserChange> = chunk.iter().filter_map(UserChange::of).collect();
                        outcomes.extend(self.change_users(transaction, &changes, &now).await?);
                    }
                    index = run_end;
                }
                action => {
                    outcomes.push(self.apply_one(transaction, action, &now).await?);
                    index += 1;
                }
            }
        }
        // The change feed and the welcome outbox commit with the changes they describe.
        let directory_id_of = |action: &Action| match action {
            Action::CreateUser { entra_id, .. } => self.user_id(entra_id),
            Action::SetDepartment { user, .. } => self.user_id(user),
            Action::CreateGroup { entra_id, .. } => self.group_id(entra_id),
            _ => None,
        };
        changes::record(
            transaction,
            self.organization_id,
            actions,
            &outcomes,
            &directory_id_of,
            run,
            &now,
        )
        .await?;
        if let Some(welcome) = &self.welcome {
            welcome
                .enqueue(transaction, self.organization_id, actions, &outcomes, &now)
                .await?;
        }
        Ok(outcomes)
    }

    async fn create_users(
        &self,
        transaction: &mut Transaction<'_, Sqlite>,
        actions: &[Action],
        now: &str,
    ) -> Result<Vec<Outcome>, StoreError> {
        // Department ids are looked up here rather than by a subquery per row: SQLite opens a
        // cursor for each row's subquery and walks every open cursor to open the next, so a
        // multi-row INSERT with one subquery a row costs the square of its rows.
        let mut department_ids = self.department_ids(transaction).await?;
        for action in actions {
            if let Action::CreateUser {
                department: Some(name),
                ..
            } = action
                && !department_ids.contains_key(&name.to_lowercase())
            {
                // The plan creates a missing department before its users; one deleted by hand
                // since (between the batches, or before a held plan was approved) comes back, as
                // its `CreateDepartment` would have made it.
                self.create_department(transaction, name, now).await?;
                department_ids = self.department_ids(transaction).await?;
            }
        }
        let build = |_, chunk: &[Action]| {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO users (organization_id, entra_id, email_lower, attributes, status, status_reason, department_id, created_at, updated_at) ",
            );
            insert.push_values(chunk, |mut row, action| {
                if let Action::CreateUser {
                    entra_id,
                    attributes,
                    status,
                    status_reason,
                    department,
                } = action
                {
                    let department_id = department
                        .as_ref()
                        .and_then(|name| department_ids.get(&name.to_lowercase()).copied());
                    row.push_bind(self.organization_id)
                        .push_bind(entra_id.clone())
                        .push_bind(email_lower(attributes))
                        .push_bind(serde_json::to_string(attributes).unwrap_or_default())
                        .push_bind(status_name(*status))
                        .push_bind(status_reason.clone())
                        .push_bind(department_id)
                        .push_bind(now.to_owned())
                        .push_bind(now.to_owned());
                }
            });
            // A re-run after a crash may find the user already there: converge instead of
            // failing. Its department stays unless this plan names one.
            insert.push(
                " ON CONFLICT (organization_id, entra_id) DO UPDATE SET email_lower = excluded.email_lower, \
                 attributes = excluded.attributes, status = excluded.status, status_reason = excluded.status_reason, \
                 department_id = coalesce(excluded.department_id, users.department_id), \
                 updated_at = excluded.updated_at RETURNING id, entra_id",
            );
            insert
        };
        write_in_chunks(transaction, actions, "creating users", build, |rows| {
            self.remember_ids(rows, |ids| &mut ids.users)
        })
        .await?;
        Ok(vec![None; actions.len()])
    }

    /// Remembers the directory ids that rows of (id, Entra id) give, so that later actions in the
    /// run find the users or groups just created.
    fn remember_ids(
        &self,
        rows: Vec<SqliteRow>,
        map: impl Fn(&mut IdMaps) -> &mut foldhash::HashMap<String, DirectoryId>,
    ) {
        if let Ok(mut ids) = self.ids.lock() {
            let ids = map(&mut ids);
            for row in rows {
                ids.insert(row.get(1), row.get(0));
            }
        }
    }

    /// Creates groups with one multi-row statement (a first sync of 20,000 groups made 20,000
    /// round trips to SQLite's thread one at a time). A re-run after a crash finds a group there
    /// already and converges on it.
    async fn create_groups(
        &self,
        transaction: &mut Transaction<'_, Sqlite>,
        actions: &[Action],
        now: &str,
    ) -> Result<Vec<Outcome>, StoreError> {
        let build = |_, chunk: &[Action]| {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO groups (organization_id, entra_id, name, description, created_at, updated_at) ",
            );
            insert.push_values(chunk, |mut row, action| {
                if let Action::CreateGroup {
                    entra_id,
                    name,
                    description,
                } = action
                {
                    row.push_bind(self.organization_id)
                        .push_bind(entra_id.clone())
                        .push_bind(name.clone())
                        .push_bind(description.clone())
                        .push_bind(now.to_owned())
                        .push_bind(now.to_owned());
                }
            });
            insert.push(
                " ON CONFLICT (organization_id, entra_id) DO UPDATE SET name = excluded.name, \
                 description = excluded.description, updated_at = excluded.updated_at RETURNING id, entra_id",
            );
            insert
        };
        write_in_chunks(transaction, actions, "creating groups", build, |rows| {
            self.remember_ids(rows, |ids| &mut ids.groups)
        })
        .await?;
        Ok(vec![None; actions.len()])
    }

    /// Creates a department the sync owns, unless one of that name (in any case) exists.
    async fn create_department(
        &self,
        transaction: &mut Transaction<'_, Sqlite>,
        name: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO departments (organization_id, name, name_lower, created_by_sync, created_at) VALUES (?, ?, ?, 1, ?) \
             ON CONFLICT (organization_id, name_lower) DO NOTHING",
        )
        .bind(self.organization_id)
        .bind(name)
        .bind(name.to_lowercase())
        .bind(now)
        .execute(&mut **transaction)
        .await
        .doing("creating a department")?;
        Ok(())
    }

    /// The organization's departments by lowercase name, as this transaction sees them.
    async fn department_ids(
        &self,
        transaction: &mut Transaction<'_, Sqlite>,
    ) -> Result<HashMap<String, DirectoryId>, StoreError> {
        let rows = sqlx::query("SELECT name_lower, id FROM departments WHERE organization_id = ?")
            .bind(self.organization_id)
            .fetch_all(&mut **transaction)
            .await
            .doing("reading departments")?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    async fn add_memberships(
        &self,
        transaction: &mut Transaction<'_, Sqlite>,
        actions: &[Action],
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(actions.len());
        let mut pairs = Vec::with_capacity(actions.len());
        for action in actions {
            if let Action::AddMembership { group, user } = action {
                match (self.group_id(group), self.user_id(user)) {
                    (Some(group_id), Some(user_id)) => {
                        pairs.push((group_id, user_id));
                        outcomes.push(None);
                    }
                    (None, _) => outcomes.push(Some(format!("group {group} is not in the directory"))),
                    (_, None) => outcomes.push(Some(format!("user {user} is not in the directory"))),
                }
            }
        }
        let build = |_, chunk: &[(DirectoryId, DirectoryId)]| {
            let mut insert =
                QueryBuilder::<Sqlite>::new("INSERT INTO memberships (group_id, user_id, managed_by_sync) ");
            insert.push_values(chunk, |mut row, (group_id, user_id)| {
                row.push_bind(*group_id).push_bind(*user_id).push_bind(1);
            });
            insert.push(" ON CONFLICT (group_id, user_id) DO UPDATE SET managed_by_sync = 1");
            insert
        };
        write_in_chunks(transaction, &pairs, "adding memberships", build, |_| {}).await?;
        Ok(outcomes)
    }

    /// Assigns departments by name, one statement for up to `ROWS_PER_INSERT` assignments: a first
    /// sync assigns one to nearly every user, and one UPDATE each would make that the slowest part
    /// of the run.
    async fn set_departments(
        &self,
        transaction: &mut Transaction<'_, Sqlite>,
        actions: &[Action],
        now: &str,
    ) -> Result<Vec<Outcome>, StoreError> {
        let build = |_, chunk: &[Action]| {
            let mut update = QueryBuilder::<Sqlite>::new("WITH wanted (entra_id, name_lower) AS (");
            update.push_values(chunk, |mut row, action| {
                if let Action::SetDepartment { user, department } = action {
                    row.push_bind(user.clone())
                        .push_bind(department.as_deref().map(str::to_lowercase));
                }
            });
            update.push(") UPDATE users SET department_id = d.id, updated_at = ");
            update.push_bind(now.to_owned());
            update.push(" FROM wanted LEFT JOIN departments d ON d.organization_id = ");
            update.push_bind(self.organization_id);
            update.push(" AND d.name_lower = wanted.name_lower WHERE users.organization_id = ");
            update.push_bind(self.organization_id);
            update.push(" AND users.entra_id = wanted.entra_id RETURNING users.entra_id");
            update
        };
        let mut assigned: HashSet<String> = HashSet::new();
        write_in_chunks(transaction, actions, "assigning departments", build, |rows| {
            assigned.extend(rows.iter().map(|row| row.get::<String, _>(0)))
        })
        .await?;
        Ok(actions
            .iter()
            .map(|action| match action {
                Action::SetDepartment { user, .. } if !assigned.contains(user) => {
                    Some(format!("user {user} is not in the directory"))
                }
                _ => None,
            })
            .collect())
    }

    async fn apply_one(
        &self,
        transaction: &mut Transaction<'_, Sqlite>,
        action: &Action,
        now: &str,
    ) -> Result<Outcome, StoreError> {
        let organization_id = self.organization_id;
        match action {
            Action::CreateUser { .. }
            | Action::AddMembership { .. }
            | Action::SetDepartment { .. }
            | Action::UpdateUser { .. }
            | Action::RestoreUser { .. }
            | Action::DisableUser { .. }
            | Action::SoftDeleteUser { .. }
            | Action::CreateGroup { .. } => {
                unreachable!(
                    "bulk kinds are applied by create_users, add_memberships, set_departments, change_users and create_groups"
                )
            }
            Action::LinkUser {
                directory_id,
                entra_id,
                changes,
            } => {
                // Only an unlinked user may be linked, so a link never steals another's record.
                let linked = sqlx::query("UPDATE users SET entra_id = ?, updated_at = ? WHERE id = ? AND organization_id = ? AND entra_id IS NULL")
                    .bind(entra_id)
                    .bind(now)
                    .bind(directory_id)
                    .bind(organization_id)
                    .execute(&mut **transaction)
                    .await
                    .doing("linking a user")?;
                if linked.rows_affected() == 0 {
                    return Ok(Some(format!(
                        "directory user {directory_id} is no longer unlinked"
                    )));
                }
                if let Ok(mut ids) = self.ids.lock() {
                    ids.users.insert(entra_id.clone(), *directory_id);
                }
                let change = UserChange {
                    directory_id: *directory_id,
                    entra_id,
                    changes,
                    status: None,
                };
                let outcomes = self.change_users(transaction, &[change], now).await?;
                Ok(outcomes.into_iter().next().flatten())
            }
            Action::DeleteUser {
                directory_id,
                entra_id,
                ..
            } => {
                // Memberships go with the row (ON DELETE CASCADE).
                let deleted =
                    sqlx::query("DELETE FROM users WHERE id = ? AND organization_id = ? AND entra_id = ?")
                        .bind(directory_id)
                        .bind(organization_id)
                        .bind(entra_id)
                        .execute(&mut **transaction)
                        .await
                        .doing("deleting a user")?;
                if let Ok(mut ids) = self.ids.lock() {
                    ids.users.remove(entra_id);
                }
                Ok(not_owned(deleted.rows_affected(), "user", *directory_id))
            }
            Action::PurgeUser {
                directory_id,
                entra_id,
            } => {
                // A tombstone: the ids, status reason and timestamps stay so that references to the
                // user remain valid; its personal fields, department and the sync's memberships go.
                let purged = sqlx::query(
                    "UPDATE users SET attributes = '{}', email_lower = NULL, department_id = NULL, status = 'purged', updated_at = ? \
                     WHERE id = ? AND organization_id = ? AND entra_id = ?",
                )
                .bind(now)
                .bind(directory_id)
                .bind(organization_id)
                .bind(entra_id)
                .execute(&mut **transaction)
                .await
                .doing("purging a user")?;
                sqlx::query("DELETE FROM memberships WHERE user_id = ? AND managed_by_sync = 1")
                    .bind(directory_id)
                    .execute(&mut **transaction)
                    .await
                    .doing("purging a user's memberships")?;
                Ok(not_owned(purged.rows_affected(), "user", *directory_id))
            }
            Action::CreateDepartment { name } => {
                self.create_department(transaction, name, now).await?;
                Ok(None)
            }
            Action::DeleteDepartment { directory_id, name } => {
                let deleted = sqlx::query(
                    "DELETE FROM departments WHERE id = ? AND organization_id = ? AND created_by_sync = 1 \
                     AND NOT EXISTS (SELECT 1 FROM users WHERE users.department_id = departments.id)",
                )
                .bind(directory_id)
                .bind(organization_id)
                .execute(&mut **transaction)
                .await
                .doing("deleting a department")?;
                Ok((deleted.rows_affected() == 0).then(|| {
                    format!("department {name:?} has users again or was not created by the sync; it is kept")
                }))
            }
            Action::UpdateGroup {
                directory_id,
                entra_id,
                name,
                description,
            } => {
                let updated = sqlx::query("UPDATE groups SET name = ?, description = ?, updated_at = ? WHERE id = ? AND organization_id = ? AND entra_id = ?")
                    .bind(name)
                    .bind(description)
                    .bind(now)
                    .bind(directory_id)
                    .bind(organization_id)
                    .bind(entra_id)
                    .execute(&mut **transaction)
                    .await
                    .doing("updating a group")?;
                Ok(not_owned(updated.rows_affected(), "group", *directory_id))
            }
            Action::DeleteGroup {
                directory_id,
                entra_id,
            } => {
                let deleted =
                    sqlx::query("DELETE FROM groups WHERE id = ? AND organization_id = ? AND entra_id = ?")
                        .bind(directory_id)
                        .bind(organization_id)
                        .bind(entra_id)
                        .execute(&mut **transaction)
                        .await
                        .doing("deleting a group")?;
                if let Ok(mut ids) = self.ids.lock() {
                    ids.groups.remove(entra_id);
                }
                Ok(not_owned(deleted.rows_affected(), "group", *directory_id))
            }
            Action::RemoveMembership { group, user } => {
                let (Some(group_id), Some(user_id)) = (self.group_id(group), self.user_id(user)) else {
                    return Ok(None);
                };
                sqlx::query(
                    "DELETE FROM memberships WHERE group_id = ? AND user_id = ? AND managed_by_sync = 1",
                )
                .bind(group_id)
                .bind(user_id)
                .execute(&mut **transaction)
                .await
                .doing("removing a membership")?;
                Ok(None)
            }
        }
    }

    /// Applies field changes and an optional new status to a user the sync owns.
    /// Applies changes to users the sync owns: one read of their rows, then one statement that
    /// writes them all. A user whose row is not linked to the action's Entra object is left as
    /// it is and reported, as every qualified write is.
    async fn change_users(
        &self,
        transaction: &mut Transaction<'_, Sqlite>,
        changes: &[UserChange<'_>],
        now: &str,
    ) -> Result<Vec<Outcome>, StoreError> {
        let ids: Vec<DirectoryId> = changes.iter().map(|change| change.directory_id).collect();
        // `+organization_id`: a check on each row found by id, not an index to scan the
        // organization's users by (SQLite would pick one).
        let rows = sqlx::query(
            "SELECT id, entra_id, attributes, status, status_reason, soft_deleted_at FROM users \
             WHERE id IN (SELECT value FROM json_each(?)) AND +organization_id = ?",
        )
        .bind(serde_json::to_string(&ids).unwrap_or_default())
        .bind(self.organization_id)
        .fetch_all(&mut **transaction)
        .await
        .doing("reading users")?;
        let mut current: HashMap<DirectoryId, StoredUser> = HashMap::with_capacity(rows.len());
        for row in rows {
            current.insert(
                row.get(0),
                StoredUser {
                    entra_id: row.get(1),
                    attributes: decode_json(row.get::<&str, _>(2), "a user's attributes")?,
                    status: row.get(3),
                    status_reason: row.get(4),
                    soft_deleted_at: row.get(5),
                },
            );
        }
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut written: Vec<DirectoryId> = Vec::new();
        for change in changes {
            let Some(user) = current
                .get_mut(&change.directory_id)
                .filter(|user| user.entra_id.as_deref() == Some(change.entra_id))
            else {
                outcomes.push(not_owned(0, "user", change.directory_id));
                continue;
            };
            for field in change.changes {
                match &field.after {
                    Some(value) => user.attributes.insert(field.field, value.clone()),
                    None => user.attributes.remove(field.field),
                };
            }
            // The retention period counts from the first soft-delete; any other status ends it.
            match change.status {
                Some((UserStatus::SoftDeleted, reason)) => {
                    user.status = status_name(UserStatus::SoftDeleted).to_owned();
                    user.status_reason = reason.map(str::to_owned);
                    user.soft_deleted_at.get_or_insert_with(|| now.to_owned());
                }
                Some((status, reason)) => {
                    user.status = status_name(status).to_owned();
                    user.status_reason = reason.map(str::to_owned);
                    user.soft_deleted_at = None;
                }
                None => {}
            }
            if !written.contains(&change.directory_id) {
                written.push(change.directory_id);
            }
            outcomes.push(None);
        }
        let rows: Vec<serde_json::Value> = written
            .iter()
            .filter_map(|id| {
                let user = current.get(id)?;
                Some(serde_json::json!({
                    "id": id,
                    "entra_id": user.entra_id,
                    "attributes": serde_json::to_string(&user.attributes).unwrap_or_default(),
                    "email_lower": email_lower(&user.attributes),
                    "status": user.status,
                    "status_reason": user.status_reason,
                    "soft_deleted_at": user.soft_deleted_at,
                }))
            })
            .collect();
        if !rows.is_empty() {
            sqlx::query(
                "UPDATE users SET attributes = c.value ->> 'attributes', email_lower = c.value ->> 'email_lower', \
                 status = c.value ->> 'status', status_reason = c.value ->> 'status_reason', \
                 soft_deleted_at = c.value ->> 'soft_deleted_at', updated_at = ? \
                 FROM json_each(?) c WHERE users.id = c.value ->> 'id' AND users.entra_id = c.value ->> 'entra_id'",
            )
            .bind(now)
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&mut **transaction)
            .await
            .doing("updating users")?;
        }
        Ok(outcomes)
    }
}

/// The outcome when a qualified statement matched no row: the record is not the sync's.
fn not_owned(rows_affected: u64, kind: &str, directory_id: DirectoryId) -> Outcome {
    (rows_affected == 0).then(|| {
        format!("directory {kind} {directory_id} is not linked to this Entra object; the sync only changes what it owns")
    })
}

impl Target for Directory {
    async fn load(&self) -> Result<TargetState, TargetError> {
        self.load_state().await.map_err(target_error)
    }

    async fn apply(&self, actions: &[Action], now: DateTime<Utc>) -> Result<Vec<Outcome>, TargetError> {
        self.apply_batch(actions, now).await.map_err(target_error)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::TimeZone;
    use entra_sync_core::plan::DisableReason;

    use super::*;
    use crate::store::Store;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 8, 0, 0).unwrap()
    }

    async fn directory() -> (tempfile::TempDir, Store, Directory) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let state = store.connection_state("contoso", "Contoso", now()).await.unwrap();
        let directory = Directory::new(&store, state.organization_id);
        (dir, store, directory)
    }

    fn create(entra_id: &str, email: &str) -> Action {
        Action::CreateUser {
            entra_id: entra_id.into(),
            attributes: Attributes::from([
                (Field::Email, email),
                (Field::GivenName, "Ada"),
                (Field::Surname, "Lovelace"),
            ]),
            status: UserStatus::Active,
            status_reason: None,
            department: None,
        }
    }

    /// A user the application made itself, without an Entra link.
    async fn unlinked_user(directory: &Directory, email: &str) -> DirectoryId {
        sqlx::query_scalar(
            "INSERT INTO users (organization_id, email_lower, attributes, status, created_at, updated_at) \
             VALUES (?, ?, '{}', 'active', '', '') RETURNING id",
        )
        .bind(directory.organization_id)
        .bind(email)
        .fetch_one(&directory.store.pool)
        .await
        .unwrap()
    }

    /// A batch that reads before it writes must still be able to write when another connection
    /// commits in between (the welcome sender does, during a run): the batch holds the write
    /// lock from its start, so the other writer waits for it instead of failing it.
    #[tokio::test]
    async fn a_batch_that_reads_first_is_not_failed_by_another_writer() {
        let (_dir, _store, directory) = directory().await;
        let mut batch = directory.begin_batch().await.unwrap();
        let departments = directory.department_ids(&mut batch).await.unwrap();
        assert!(departments.is_empty());
        let pool = directory.store.pool.clone();
        let organization_id = directory.organization_id;
        let other = tokio::spawn(async move {
            sqlx::query(
                "INSERT INTO departments (organization_id, name, name_lower, created_by_sync, created_at) VALUES (?, 'Other', 'other', 0, '')",
            )
            .bind(organization_id)
            .execute(&pool)
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!other.is_finished(), "the other writer waits for the batch");
        directory
            .create_department(&mut batch, "Support", "")
            .await
            .unwrap();
        batch.commit().await.unwrap();
        other.await.unwrap().unwrap();
        let state = directory.load().await.unwrap();
        assert_eq!(state.departments.len(), 2);
    }

    #[tokio::test]
    async fn creating_twice_converges_on_one_user() {
        let (_dir, _store, directory) = directory().await;
        directory.load().await.unwrap();
        let actions = [create("e1", "ada@contoso.example")];
        assert_eq!(directory.apply(&actions, now()).await.unwrap(), vec![None]);
        assert_eq!(directory.apply(&actions, now()).await.unwrap(), vec![None]);
        let state = directory.load().await.unwrap();
        assert_eq!(state.users.len(), 1);
        assert_eq!(state.users[0].entra_id.as_deref(), Some("e1"));
    }

    /// Groups are created by one statement; a second run converges on the same groups, and a
    /// membership added in the batch that created its group finds the group's id.
    #[tokio::test]
    async fn groups_are_created_together_and_creating_twice_converges() {
        let (_dir, _store, directory) = directory().await;
        directory.load().await.unwrap();
        let group = |entra_id: &str, name: &str| Action::CreateGroup {
            entra_id: entra_id.into(),
            name: name.into(),
            description: None,
        };
        let first = [
            create("e1", "ada@contoso.example"),
            group("g1", "Support"),
            group("g2", "Sales"),
            Action::AddMembership {
                group: "g2".into(),
                user: "e1".into(),
            },
        ];
        assert_eq!(directory.apply(&first, now()).await.unwrap(), vec![None; 4]);
        let again = [group("g1", "Support Operations"), group("g2", "Sales")];
        assert_eq!(directory.apply(&again, now()).await.unwrap(), vec![None; 2]);
        let state = directory.load().await.unwrap();
        let groups: Vec<(Option<&str>, &str)> = state
            .groups
            .iter()
            .map(|group| (group.entra_id.as_deref(), group.name.as_str()))
            .collect();
        assert_eq!(
            groups,
            [(Some("g1"), "Support Operations"), (Some("g2"), "Sales")]
        );
        assert_eq!(
            state.memberships.into_iter().collect::<Vec<_>>(),
            [("g2".to_owned(), "e1".to_owned())]
        );
    }

    /// A run of one kind longer than a statement holds goes through several statements, each
    /// built while the one before runs: every user is created, every membership and department
    /// assignment finds its user whichever statement created it, and the history numbers the
    /// actions in the plan's order.
    #[tokio::test]
    async fn runs_longer_than_one_statement_apply_every_action_and_record_them_in_order() {
        let (_dir, store, directory) = directory().await;
        directory.load().await.unwrap();
        let run = store
            .begin_run(1, crate::store::Trigger::Manual, "full", now())
            .await
            .unwrap();
        let users = 2 * ROWS_PER_INSERT + 1;
        let entra_ids: Vec<String> = (0..users).map(|n| format!("e{n:05}")).collect();
        let mut actions: Vec<Action> = entra_ids
            .iter()
            .map(|id| create(id, &format!("{id}@contoso.example")))
            .collect();
        actions.push(Action::CreateDepartment {
            name: "Support".into(),
        });
        actions.push(Action::CreateGroup {
            entra_id: "g1".into(),
            name: "Everyone".into(),
            description: None,
        });
        actions.extend(entra_ids.iter().map(|id| Action::AddMembership {
            group: "g1".into(),
            user: id.clone(),
        }));
        actions.extend(entra_ids.iter().map(|id| Action::SetDepartment {
            user: id.clone(),
            department: Some("Support".into()),
        }));
        let failed = directory.apply_plan(actions.clone(), run, |_| {}).await.unwrap();
        assert_eq!(failed, 0);
        let state = directory.load().await.unwrap();
        assert_eq!(state.users.len(), users);
        assert_eq!(state.memberships.len(), users);
        let support = state
            .departments
            .iter()
            .find(|d| d.name == "Support")
            .map(|d| d.id);
        assert!(support.is_some());
        assert!(state.users.iter().all(|user| user.department == support));
        let recorded: Vec<(i64, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT seq, kind, entra_id, outcome FROM run_actions WHERE run_id = ? ORDER BY seq",
        )
        .bind(run)
        .fetch_all(&store.pool)
        .await
        .unwrap();
        let planned: Vec<(i64, String, Option<String>, Option<String>)> = actions
            .iter()
            .enumerate()
            .map(|(seq, action)| {
                let (kind, entra_id, _) = crate::store::action_key(action);
                (seq as i64, kind.to_owned(), entra_id.map(str::to_owned), None)
            })
            .collect();
        assert_eq!(recorded, planned);
    }

    /// Each applied batch is copied from the WAL into the database in the background, so a run
    /// never leaves its writes to SQLite's own checkpoint inside a later commit.
    #[tokio::test]
    async fn an_applied_batch_is_copied_into_the_database_in_the_background() {
        let (dir, store, directory) = directory().await;
        directory.load().await.unwrap();
        let run = store
            .begin_run(1, crate::store::Trigger::Manual, "full", now())
            .await
            .unwrap();
        let database_bytes = || std::fs::metadata(dir.path().join("entra-sync.db")).unwrap().len();
        let before = database_bytes();
        let actions: Vec<Action> = (0..2_000)
            .map(|n| create(&format!("e{n:05}"), &format!("user{n}@contoso.example")))
            .collect();
        directory.apply_plan(actions, run, |_| {}).await.unwrap();
        // About 1 MB of users, history and changes: far under SQLite's own threshold.
        let copied = async {
            while database_bytes() < before + 500_000 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), copied)
            .await
            .expect("the batch reached the database file");
    }

    #[tokio::test]
    async fn a_user_the_sync_does_not_own_is_never_disabled_or_changed() {
        let (_dir, _store, directory) = directory().await;
        let id = unlinked_user(&directory, "own@contoso.example").await;
        directory.load().await.unwrap();
        let actions = [
            Action::DisableUser {
                directory_id: id,
                entra_id: "e-other".into(),
                reason: DisableReason::DeletedInMicrosoft,
            },
            Action::UpdateUser {
                directory_id: id,
                entra_id: "e-other".into(),
                changes: vec![FieldChange {
                    field: Field::JobTitle,
                    before: None,
                    after: Some("Hacked".into()),
                }],
            },
        ];
        let outcomes = directory.apply(&actions, now()).await.unwrap();
        assert!(outcomes.iter().all(|outcome| {
            outcome
                .as_deref()
                .is_some_and(|o| o.contains("only changes what it owns"))
        }));
        let state = directory.load().await.unwrap();
        assert_eq!(state.users[0].status, UserStatus::Active);
        assert!(state.users[0].attributes.is_empty());
    }

    /// Updates apply as one batch, each to its own user: a user whose row another Entra user is
    /// linked to is reported and left as it is, the others change, their email index too.
    #[tokio::test]
    async fn a_batch_of_updates_changes_each_owned_user_and_no_other() {
        let (_dir, _store, directory) = directory().await;
        directory.load().await.unwrap();
        let created = [
            create("e1", "a@contoso.example"),
            create("e2", "b@contoso.example"),
            create("e3", "c@contoso.example"),
        ];
        directory.apply(&created, now()).await.unwrap();
        let id = |entra_id: &str| directory.user_id(entra_id).unwrap();
        let change = |field: Field, after: &str| FieldChange {
            field,
            before: None,
            after: Some(after.into()),
        };
        let updates = [
            Action::UpdateUser {
                directory_id: id("e1"),
                entra_id: "e1".into(),
                changes: vec![change(Field::JobTitle, "Lead")],
            },
            Action::UpdateUser {
                directory_id: id("e2"),
                entra_id: "e3".into(),
                changes: vec![change(Field::JobTitle, "Hacked")],
            },
            Action::UpdateUser {
                directory_id: id("e3"),
                entra_id: "e3".into(),
                changes: vec![change(Field::Email, "C.New@Contoso.example")],
            },
        ];
        let outcomes = directory.apply(&updates, now()).await.unwrap();
        assert_eq!(outcomes[0], None);
        assert!(
            outcomes[1]
                .as_deref()
                .is_some_and(|o| o.contains("only changes what it owns")),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[2], None);
        let state = directory.load().await.unwrap();
        let user = |entra_id: &str| {
            state
                .users
                .iter()
                .find(|user| user.entra_id.as_deref() == Some(entra_id))
                .unwrap()
        };
        assert_eq!(user("e1").attributes.get(Field::JobTitle), Some("Lead"));
        assert_eq!(user("e2").attributes.get(Field::JobTitle), None);
        let email: Option<String> = sqlx::query_scalar("SELECT email_lower FROM users WHERE id = ?")
            .bind(id("e3"))
            .fetch_one(&directory.store.pool)
            .await
            .unwrap();
        assert_eq!(email.as_deref(), Some("c.new@contoso.example"));
    }

    #[tokio::test]
    async fn linking_takes_an_unlinked_user_once_then_updates_apply() {
        let (_dir, _store, directory) = directory().await;
        let id = unlinked_user(&directory, "ada@contoso.example").await;
        directory.load().await.unwrap();
        let change = FieldChange {
            field: Field::JobTitle,
            before: None,
            after: Some("Engineer".into()),
        };
        let link = |entra_id: &str| Action::LinkUser {
            directory_id: id,
            entra_id: entra_id.into(),
            changes: vec![change.clone()],
        };
        assert_eq!(directory.apply(&[link("e1")], now()).await.unwrap(), vec![None]);
        let second = directory.apply(&[link("e2")], now()).await.unwrap();
        assert!(
            second[0]
                .as_deref()
                .is_some_and(|o| o.contains("no longer unlinked"))
        );
        let state = directory.load().await.unwrap();
        assert_eq!(state.users[0].entra_id.as_deref(), Some("e1"));
        assert_eq!(state.users[0].attributes.get(Field::JobTitle), Some("Engineer"));
    }

    /// A partial read takes the users it names, every unlinked one and those holding a match
    /// value (as their email, or with `by_upn` as their UPN), with their memberships; the rest is
    /// counted: linked users, department members and memberships.
    #[tokio::test]
    async fn a_partial_read_takes_the_users_reached_and_counts_the_rest() {
        let (_dir, store, directory) = directory().await;
        directory.load().await.unwrap();
        let mut in_sales = create("e2", "b@contoso.example");
        if let Action::CreateUser { department, .. } = &mut in_sales {
            *department = Some("Sales".into());
        }
        let with_upn = Action::CreateUser {
            entra_id: "e4".into(),
            attributes: Attributes::from([
                (Field::Email, "d@contoso.example"),
                (Field::UserPrincipalName, "D.Upn@Contoso.example"),
            ]),
            status: UserStatus::Active,
            status_reason: None,
            department: None,
        };
        let actions = [
            Action::CreateGroup {
                entra_id: "g1".into(),
                name: "Support".into(),
                description: None,
            },
            create("e1", "a@contoso.example"),
            in_sales,
            create("e3", "match@contoso.example"),
            with_upn,
            Action::AddMembership {
                group: "g1".into(),
                user: "e1".into(),
            },
            Action::AddMembership {
                group: "g1".into(),
                user: "e2".into(),
            },
        ];
        let outcomes = directory.apply(&actions, now()).await.unwrap();
        assert!(outcomes.iter().all(Option::is_none), "{outcomes:?}");
        let own = unlinked_user(&directory, "own@contoso.example").await;
        let values = [
            "match@contoso.example".to_owned(),
            "d.upn@contoso.example".to_owned(),
        ];
        let reached = ["e1".to_owned()];
        let linked = store.linked_user_count(directory.organization_id).await.unwrap() as usize;
        let read = |by_upn| directory.load_reach(&reached, &values, by_upn, linked);

        let state = read(false).await.unwrap();
        let mut ids: Vec<DirectoryId> = state.users.iter().map(|user| user.id).collect();
        ids.sort_unstable();
        let id_of = |entra_id: &str| directory.user_id(entra_id).unwrap();
        let mut expected = vec![id_of("e1"), id_of("e3"), own];
        expected.sort_unstable();
        assert_eq!(ids, expected);
        assert_eq!(state.groups.len(), 1);
        assert_eq!(state.departments.len(), 1);
        assert_eq!(
            state.memberships,
            std::collections::BTreeSet::from([("g1".to_owned(), "e1".to_owned())])
        );
        assert_eq!(state.settled.linked_users, 2);
        assert_eq!(state.settled.memberships, 1);
        let sales = state.departments[0].id;
        assert_eq!(state.settled.department_members, BTreeMap::from([(sales, 1)]));

        let state = read(true).await.unwrap();
        assert_eq!(state.users.len(), 4);
        assert_eq!(state.settled.linked_users, 1);
    }

    #[tokio::test]
    async fn memberships_are_added_in_bulk_and_only_the_syncs_are_removed() {
        let (_dir, _store, directory) = directory().await;
        directory.load().await.unwrap();
        let group = Action::CreateGroup {
            entra_id: "g1".into(),
            name: "Support Operations".into(),
            description: None,
        };
        let actions = [
            group,
            create("e1", "a@contoso.example"),
            create("e2", "b@contoso.example"),
            Action::AddMembership {
                group: "g1".into(),
                user: "e1".into(),
            },
            Action::AddMembership {
                group: "g1".into(),
                user: "e2".into(),
            },
            Action::AddMembership {
                group: "g1".into(),
                user: "missing".into(),
            },
        ];
        let outcomes = directory.apply(&actions, now()).await.unwrap();
        assert_eq!(outcomes[..5], [None, None, None, None, None]);
        assert!(
            outcomes[5]
                .as_deref()
                .is_some_and(|o| o.contains("not in the directory"))
        );
        let state = directory.load().await.unwrap();
        assert_eq!(state.memberships.len(), 2);
        // A membership the application made itself is not the sync's to remove.
        sqlx::query("UPDATE memberships SET managed_by_sync = 0 WHERE user_id = (SELECT id FROM users WHERE entra_id = 'e2')")
            .execute(&directory.store.pool)
            .await
            .unwrap();
        let removals = [
            Action::RemoveMembership {
                group: "g1".into(),
                user: "e1".into(),
            },
            Action::RemoveMembership {
                group: "g1".into(),
                user: "e2".into(),
            },
        ];
        directory.apply(&removals, now()).await.unwrap();
        let remaining: i64 = sqlx::query_scalar("SELECT count(*) FROM memberships")
            .fetch_one(&directory.store.pool)
            .await
            .unwrap();
        assert_eq!(remaining, 1);
    }

    #[tokio::test]
    async fn the_ladder_soft_deletes_restores_purges_and_deletes_only_what_the_sync_owns() {
        let (_dir, _store, directory) = directory().await;
        directory.load().await.unwrap();
        let group = Action::CreateGroup {
            entra_id: "g1".into(),
            name: "Support Operations".into(),
            description: None,
        };
        let member = |user: &str| Action::AddMembership {
            group: "g1".into(),
            user: user.into(),
        };
        let setup = [
            group,
            create("e1", "a@contoso.example"),
            create("e2", "b@contoso.example"),
            member("e1"),
            member("e2"),
        ];
        directory.apply(&setup, now()).await.unwrap();
        let state = directory.load().await.unwrap();
        let id = |entra_id: &str| {
            state
                .users
                .iter()
                .find(|user| user.entra_id.as_deref() == Some(entra_id))
                .unwrap()
                .id
        };
        let (e1, e2) = (id("e1"), id("e2"));
        let soft_delete = Action::SoftDeleteUser {
            directory_id: e1,
            entra_id: "e1".into(),
            reason: DisableReason::DeletedInMicrosoft,
        };
        directory
            .apply(std::slice::from_ref(&soft_delete), now())
            .await
            .unwrap();
        // A second soft-delete keeps the first time: the retention counts from there.
        let later = now() + chrono::TimeDelta::days(3);
        directory.apply(&[soft_delete], later).await.unwrap();
        let user = |state: &TargetState, id: DirectoryId| state.users.iter().find(|u| u.id == id).cloned();
        let state = directory.load().await.unwrap();
        let soft = user(&state, e1).unwrap();
        assert_eq!(soft.status, UserStatus::SoftDeleted);
        assert_eq!(soft.status_reason.as_deref(), Some("Deleted in Microsoft"));
        assert_eq!(soft.soft_deleted_at, Some(now()));

        let restore = Action::RestoreUser {
            directory_id: e1,
            entra_id: "e1".into(),
            changes: Vec::new(),
        };
        directory.apply(&[restore], later).await.unwrap();
        let restored = user(&directory.load().await.unwrap(), e1).unwrap();
        assert_eq!(
            (restored.status, restored.soft_deleted_at),
            (UserStatus::Active, None)
        );

        let purge = Action::PurgeUser {
            directory_id: e1,
            entra_id: "e1".into(),
        };
        let delete = Action::DeleteUser {
            directory_id: e2,
            entra_id: "e2".into(),
            reason: DisableReason::OutOfScope,
        };
        assert_eq!(
            directory.apply(&[purge, delete], later).await.unwrap(),
            vec![None, None]
        );
        let state = directory.load().await.unwrap();
        let tombstone = user(&state, e1).unwrap();
        assert_eq!(tombstone.status, UserStatus::Purged);
        assert_eq!(tombstone.entra_id.as_deref(), Some("e1"));
        assert!(tombstone.attributes.is_empty());
        assert!(user(&state, e2).is_none());
        assert!(state.memberships.is_empty());

        // Neither reaches a user the sync does not own.
        let own = unlinked_user(&directory, "own@contoso.example").await;
        let not_owned = [
            Action::SoftDeleteUser {
                directory_id: own,
                entra_id: "e-other".into(),
                reason: DisableReason::OutOfScope,
            },
            Action::PurgeUser {
                directory_id: own,
                entra_id: "e-other".into(),
            },
            Action::DeleteUser {
                directory_id: own,
                entra_id: "e-other".into(),
                reason: DisableReason::OutOfScope,
            },
        ];
        let outcomes = directory.apply(&not_owned, later).await.unwrap();
        assert!(outcomes.iter().all(|outcome| {
            outcome
                .as_deref()
                .is_some_and(|o| o.contains("only changes what it owns"))
        }));
        let state = directory.load().await.unwrap();
        assert_eq!(user(&state, own).unwrap().status, UserStatus::Active);
    }

    #[tokio::test]
    async fn a_plan_creates_users_in_their_departments_even_one_deleted_since_it_was_planned() {
        let (_dir, store, directory) = directory().await;
        directory.load().await.unwrap();
        let run = store
            .begin_run(1, crate::store::Trigger::Manual, "full", now())
            .await
            .unwrap();
        let in_department = |entra_id: &str, email: &str, name: &str| match create(entra_id, email) {
            Action::CreateUser {
                entra_id,
                attributes,
                status,
                status_reason,
                ..
            } => Action::CreateUser {
                entra_id,
                attributes,
                status,
                status_reason,
                department: Some(name.into()),
            },
            other => other,
        };
        let actions = [
            Action::CreateDepartment {
                name: "Support".into(),
            },
            in_department("e1", "a@contoso.example", "Support"),
            in_department("e2", "b@contoso.example", "support"),
            // Planned while it existed and deleted by hand before the plan ran: made again.
            in_department("e3", "c@contoso.example", "Research"),
            Action::SetDepartment {
                user: "missing".into(),
                department: Some("Support".into()),
            },
        ];
        let failed = directory.apply_plan(actions.into(), run, |_| {}).await.unwrap();
        assert_eq!(failed, 1);
        let state = directory.load().await.unwrap();
        let id_of = |name: &str| state.departments.iter().find(|d| d.name == name).map(|d| d.id);
        let department_of = |entra_id: &str| {
            state
                .users
                .iter()
                .find(|user| user.entra_id.as_deref() == Some(entra_id))
                .and_then(|user| user.department)
        };
        assert_eq!(
            [department_of("e1"), department_of("e2"), department_of("e3")],
            [id_of("Support"), id_of("Support"), id_of("Research")]
        );
        assert!(id_of("Research").is_some());
        assert!(state.departments.iter().all(|d| d.created_by_sync));
        // The feed's "created" change names the department: no separate assignment follows.
        let feed = crate::changes::since(&store, &["Contoso".to_owned()], 0, 10)
            .await
            .unwrap();
        let created: Vec<Option<&str>> = feed
            .iter()
            .filter(|change| change.detail["action"] == "create_user")
            .map(|change| change.detail["department"].as_str())
            .collect();
        assert_eq!(created, [Some("Support"), Some("support"), Some("Research")]);
        assert!(!feed.iter().any(|change| change.change == "department_set"));
    }

    #[tokio::test]
    async fn departments_are_created_assigned_and_removed_only_when_the_syncs_and_empty() {
        let (_dir, _store, directory) = directory().await;
        sqlx::query(
            "INSERT INTO departments (organization_id, name, name_lower, created_by_sync, created_at) VALUES (?, 'Made by hand', 'made by hand', 0, '')",
        )
        .bind(directory.organization_id)
        .execute(&directory.store.pool)
        .await
        .unwrap();
        directory.load().await.unwrap();
        let assign = |user: &str, department: Option<&str>| Action::SetDepartment {
            user: user.into(),
            department: department.map(str::to_owned),
        };
        let actions = [
            Action::CreateDepartment {
                name: "Support".into(),
            },
            create("e1", "a@contoso.example"),
            create("e2", "b@contoso.example"),
            assign("e1", Some("support")),
            assign("e2", Some("Made by hand")),
            assign("missing", Some("Support")),
        ];
        let outcomes = directory.apply(&actions, now()).await.unwrap();
        assert_eq!(outcomes[..5], [None, None, None, None, None]);
        assert!(
            outcomes[5]
                .as_deref()
                .is_some_and(|o| o.contains("not in the directory"))
        );
        let state = directory.load().await.unwrap();
        let department = |name: &str| state.departments.iter().find(|d| d.name == name).unwrap().clone();
        let (support, by_hand) = (department("Support"), department("Made by hand"));
        assert!(support.created_by_sync && !by_hand.created_by_sync);
        let of = |entra_id: &str| {
            state
                .users
                .iter()
                .find(|user| user.entra_id.as_deref() == Some(entra_id))
                .unwrap()
                .department
        };
        assert_eq!((of("e1"), of("e2")), (Some(support.id), Some(by_hand.id)));

        let delete = |department: &DirectoryDepartment| Action::DeleteDepartment {
            directory_id: department.id,
            name: department.name.clone(),
        };
        // Still in use, or not the sync's: kept.
        let kept = directory
            .apply(&[delete(&support), assign("e2", None), delete(&by_hand)], now())
            .await
            .unwrap();
        assert!(kept[0].as_deref().is_some_and(|o| o.contains("is kept")));
        assert!(kept[2].as_deref().is_some_and(|o| o.contains("is kept")));
        let removed = directory
            .apply(&[assign("e1", None), delete(&support)], now())
            .await
            .unwrap();
        assert_eq!(removed, vec![None, None]);
        let state = directory.load().await.unwrap();
        assert_eq!(state.departments.len(), 1);
        assert_eq!(state.departments[0].name, "Made by hand");
    }
}
