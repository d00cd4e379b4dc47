//! One-user and one-group syncs, the seeds' "sync info / sync downstream / full" on one user and
//! "sync" on one linked group: read just that object from Graph (`/users/{id}`, or
//! `/groups/{id}` and its `/members`), fold it into the snapshot, plan the whole connection as
//! usual and apply only the actions on that object (`narrow`). The delta links do not move, so
//! the connection's next run still reads every change since its last one; the objects' snapshot
//! rows are saved, so that run finds them already applied.

use std::collections::BTreeSet;
use std::time::Instant;

use entra_sync_core::fold::{Touched, fold_groups, fold_users};
use entra_sync_core::guard::{self, ReadHealth};
use entra_sync_core::model::{EntraGroup, EntraUser, Presence, SourceSnapshot};
use entra_sync_core::narrow::narrow;
use entra_sync_core::plan::plan;
use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Sqlite};

use crate::clock;
use crate::config::Connection;
use crate::graph::GraphClient;
use crate::mail::Welcome;
use crate::store::{ConnectionState, Doing, Store, StoreError, Trigger};
use crate::sync::{RunSummary, SyncError, graph_client};
use crate::targets::directory::Directory;
use crate::targets::{Target, TargetError};

/// What a one-object sync is about.
#[derive(Debug, Clone)]
pub enum Subject {
    /// One user, by Entra object id or user principal name.
    User(String),
    /// One group, by Entra object id, with every direct member user.
    Group(String),
}

impl Subject {
    /// The trigger its run is recorded with.
    pub fn trigger(&self) -> Trigger {
        match self {
            Subject::User(_) => Trigger::User,
            Subject::Group(_) => Trigger::Group,
        }
    }

    fn id(&self) -> &str {
        match self {
            Subject::User(id) | Subject::Group(id) => id,
        }
    }
}

/// The seeds' three kinds of one-user sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OneMode {
    /// "Sync info": pull the object from Entra and apply it to the directory.
    Info,
    /// "Sync downstream": push the directory's current values to the targets. The embedded
    /// directory is the only target so far and already holds those values, so this records a
    /// run that changes nothing.
    Downstream,
    /// Both, info first.
    #[default]
    Full,
}

impl OneMode {
    pub fn as_str(self) -> &'static str {
        match self {
            OneMode::Info => "info",
            OneMode::Downstream => "downstream",
            OneMode::Full => "full",
        }
    }
}

/// Why a started one-object run failed; recorded in the history.
#[derive(Debug, thiserror::Error)]
enum OneError {
    #[error(
        "Entra has no user {0:?}: check the id; a user deleted in Entra is handled by the connection's next run"
    )]
    UserNotInEntra(String),
    #[error(
        "Entra has no group {0:?}: check the id; a group deleted in Entra is handled by the connection's next run"
    )]
    GroupNotInEntra(String),
    #[error("no directory user or group is linked to {0:?}: sync it with mode info or full first")]
    NotInDirectory(String),
    #[error(transparent)]
    Graph(#[from] crate::graph::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// Runs a one-user or one-group sync of `connection` and records it with its trigger and
/// subject. A failure after the run started is in the summary (status `failed`), not `Err`.
pub async fn run_one(
    store: &Store,
    connection: &Connection,
    subject: &Subject,
    mode: OneMode,
) -> Result<RunSummary, SyncError> {
    let started = Instant::now();
    let client = match mode {
        OneMode::Info | OneMode::Full => Some(graph_client(connection)?),
        OneMode::Downstream => None,
    };
    let state = store
        .connection_state(&connection.name, &connection.organization, clock::now())
        .await?;
    store.mark_interrupted_runs(state.id).await?;
    let run_id = store
        .begin_run(state.id, subject.trigger(), mode.as_str(), clock::now())
        .await?;
    store.set_run_subject(run_id, subject.id()).await?;
    let mut summary = RunSummary::begun(run_id, &connection.name, mode.as_str());
    let result = match &client {
        Some(client) => pull(store, connection, client, &state, subject, &mut summary).await,
        None => downstream(store, &state, subject, &mut summary).await,
    };
    let requests = client.as_ref().map_or(0, GraphClient::requests);
    summary.record_end(store, result, requests, started).await?;
    Ok(summary)
}

/// "Sync info": reads the object, folds it, plans, applies the object's actions, saves its
/// snapshot rows. Downstream, the second half of `full`, has nothing to add after it (see
/// `OneMode::Downstream`).
async fn pull(
    store: &Store,
    connection: &Connection,
    client: &GraphClient,
    state: &ConnectionState,
    subject: &Subject,
    summary: &mut RunSummary,
) -> Result<(), OneError> {
    let mut snapshot = store.load_snapshot(state.id).await?;
    let mut touched = Touched::default();
    let (users, groups) = match subject {
        Subject::User(id) => {
            let user = client
                .user(id)
                .await?
                .filter(|user| !user.id.is_empty())
                .ok_or_else(|| OneError::UserNotInEntra(id.clone()))?;
            let entra_id = user.id.clone();
            fold_users(&mut snapshot, vec![user], &mut touched);
            (BTreeSet::from([entra_id]), BTreeSet::new())
        }
        Subject::Group(id) => {
            let not_found = || OneError::GroupNotInEntra(id.clone());
            let group = client
                .group(id)
                .await?
                .filter(|group| !group.id.is_empty())
                .ok_or_else(not_found)?;
            let members = client.group_members(id).await?.ok_or_else(not_found)?;
            let entra_id = group.id.clone();
            let member_users: BTreeSet<String> = members
                .users
                .iter()
                .map(|user| user.id.clone())
                .filter(|id| !id.is_empty())
                .collect();
            // Users who left the group are synced too: their membership goes.
            let mut users = snapshot
                .groups
                .get(&entra_id)
                .map(|group| group.member_users.clone())
                .unwrap_or_default();
            users.extend(member_users.iter().cloned());
            fold_users(&mut snapshot, members.users, &mut touched);
            fold_groups(&mut snapshot, vec![group], &mut touched);
            if let Some(folded) = snapshot.groups.get_mut(&entra_id) {
                folded.member_users = member_users;
                folded.member_groups = members.groups.into_iter().collect();
            }
            (users, BTreeSet::from([entra_id]))
        }
    };
    // A user a one-user or one-group sync creates is welcomed like any other the sync creates.
    let directory = Directory::new(store, state.organization_id)
        .with_welcome(Welcome::for_connection(connection, Some(summary.run_id)));
    let target = directory.load().await?;
    let plan = narrow(
        plan(&snapshot, &target, &connection.policy, clock::now()),
        &target,
        &users,
        &groups,
    );
    summary.counts = plan.counts();
    summary.conflict_details = plan.conflicts.clone();
    store.record_conflicts(summary.run_id, &plan.conflicts).await?;
    let read = ReadHealth {
        full_round: false,
        delta_reset: false,
        complete: true,
        users_read: snapshot
            .users
            .values()
            .filter(|user| user.presence == Presence::Present)
            .count(),
    };
    let verdict = guard::check(&plan, &read, &target, state.last_good_users, &connection.policy);
    summary.guards = verdict
        .tripped
        .iter()
        .map(|tripped| tripped.message.clone())
        .collect();
    if verdict.blocked() {
        summary.hold_for_approval(store, state.id, plan).await?;
        return Ok(());
    }
    summary.failed_actions = directory.apply_plan(plan.actions, summary.run_id, |_| {}).await?;
    store.save_source_objects(state.id, &snapshot, &touched).await?;
    Ok(())
}

/// "Sync downstream" alone: the object must be in the directory; there is nothing to push to
/// the embedded directory, so the run records its users as unchanged.
async fn downstream(
    store: &Store,
    state: &ConnectionState,
    subject: &Subject,
    summary: &mut RunSummary,
) -> Result<(), OneError> {
    let users = store
        .linked_users_of(state.organization_id, subject)
        .await?
        .ok_or_else(|| OneError::NotInDirectory(subject.id().to_owned()))?;
    summary.counts.unchanged = users;
    Ok(())
}

impl Store {
    /// Records which user or group a one-object run synced.
    async fn set_run_subject(&self, run_id: i64, subject: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET subject = ? WHERE id = ?")
            .bind(subject)
            .bind(run_id)
            .execute(&self.pool)
            .await
            .doing("recording the run's subject")?;
        Ok(())
    }

    /// Saves the snapshot rows of the objects a one-object sync read, leaving the delta links
    /// and every other row as they are.
    async fn save_source_objects(
        &self,
        connection_id: i64,
        snapshot: &SourceSnapshot,
        touched: &Touched,
    ) -> Result<(), StoreError> {
        let users: Vec<&EntraUser> = touched
            .users
            .iter()
            .filter_map(|id| snapshot.users.get(id))
            .collect();
        let groups: Vec<&EntraGroup> = touched
            .groups
            .iter()
            .filter_map(|id| snapshot.groups.get(id))
            .collect();
        let mut transaction = self.pool.begin().await.doing("saving the source snapshot")?;
        let rows = users
            .iter()
            .map(|user| ("source_users", user.id.as_str(), serde_json::to_string(user)))
            .chain(
                groups
                    .iter()
                    .map(|group| ("source_groups", group.id.as_str(), serde_json::to_string(group))),
            );
        for (table, entra_id, data) in rows {
            let mut insert = QueryBuilder::<Sqlite>::new(format!(
                "INSERT OR REPLACE INTO {table} (connection_id, entra_id, data) VALUES ("
            ));
            insert
                .push_bind(connection_id)
                .push(", ")
                .push_bind(entra_id.to_owned())
                .push(", ")
                .push_bind(data.unwrap_or_default())
                .push(")");
            insert
                .build()
                .execute(&mut *transaction)
                .await
                .doing("saving the source snapshot")?;
        }
        transaction.commit().await.doing("saving the source snapshot")
    }

    /// The directory users a downstream sync of `subject` pushes: the user linked to that Entra
    /// id (or UPN), or the linked members of the group. `None` when the user or group is not in
    /// the directory.
    async fn linked_users_of(
        &self,
        organization_id: i64,
        subject: &Subject,
    ) -> Result<Option<usize>, StoreError> {
        match subject {
            Subject::User(id) => {
                let found: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM users WHERE organization_id = ? AND entra_id IS NOT NULL \
                     AND (entra_id = ? OR lower(json_extract(attributes, '$.user_principal_name')) = lower(?)) LIMIT 1",
                )
                .bind(organization_id)
                .bind(id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .doing("finding the user in the directory")?;
                Ok(found.map(|_| 1))
            }
            Subject::Group(id) => {
                let group: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM groups WHERE organization_id = ? AND entra_id = ?")
                        .bind(organization_id)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .doing("finding the group in the directory")?;
                let Some(group) = group else {
                    return Ok(None);
                };
                let members: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM memberships m JOIN users u ON u.id = m.user_id \
                     WHERE m.group_id = ? AND u.entra_id IS NOT NULL",
                )
                .bind(group)
                .fetch_one(&self.pool)
                .await
                .doing("counting the group's members")?;
                Ok(Some(members as usize))
            }
        }
    }
}
