//! The change feed: every change the sync applies to the directory (users, groups, memberships,
//! departments), written in the same transaction as the change itself, for applications that
//! read the directory (`GET /api/v1/changes?since=CURSOR`).
//!
//! The cursor is the row's `seq`, an `AUTOINCREMENT` key: SQLite serialises writers and never
//! reuses a value, so a change committed later always has a larger cursor, and a reader that
//! resumes from the last cursor it saw misses nothing and sees nothing twice.

use chrono::{DateTime, Utc};
use entra_sync_core::plan::Action;
use serde::Serialize;
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use crate::store::{Doing, Store, StoreError, action_key, decode_json, timestamp, write_in_chunks};
use crate::targets::Outcome;

/// What kind of directory object an action changes, and how.
fn object_and_change(action: &Action) -> (&'static str, &'static str) {
    match action {
        Action::CreateUser { .. } => ("user", "created"),
        Action::LinkUser { .. } => ("user", "linked"),
        Action::UpdateUser { .. } => ("user", "updated"),
        Action::DisableUser { .. } => ("user", "disabled"),
        Action::SoftDeleteUser { .. } => ("user", "soft_deleted"),
        Action::DeleteUser { .. } => ("user", "deleted"),
        Action::PurgeUser { .. } => ("user", "purged"),
        Action::RestoreUser { .. } => ("user", "restored"),
        Action::SetDepartment { .. } => ("user", "department_set"),
        Action::CreateGroup { .. } => ("group", "created"),
        Action::UpdateGroup { .. } => ("group", "updated"),
        Action::DeleteGroup { .. } => ("group", "deleted"),
        Action::AddMembership { .. } => ("membership", "added"),
        Action::RemoveMembership { .. } => ("membership", "removed"),
        Action::CreateDepartment { .. } => ("department", "created"),
        Action::DeleteDepartment { .. } => ("department", "deleted"),
    }
}

/// Records the applied actions of a batch (those whose outcome is `None`) in the batch's
/// transaction. `directory_id_of` gives the directory id of the user or group an action names by
/// Entra id only (one the batch may have created). `run` is the run and the history seq of the
/// batch's first action when the batch records its actions in the run's history: a change then
/// refers to its action there instead of storing the action a second time.
pub(crate) async fn record(
    transaction: &mut Transaction<'_, Sqlite>,
    organization_id: i64,
    actions: &[Action],
    outcomes: &[Outcome],
    directory_id_of: &(dyn Fn(&Action) -> Option<i64> + Sync),
    run: Option<(i64, usize)>,
    now: &str,
) -> Result<(), StoreError> {
    let applied: Vec<(usize, &Action)> = actions
        .iter()
        .enumerate()
        .zip(outcomes)
        .filter(|(_, outcome)| outcome.is_none())
        .map(|(action, _)| action)
        .collect();
    write_in_chunks(
        transaction,
        &applied,
        "recording directory changes",
        |_, chunk| {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO directory_changes (organization_id, object, change, entra_id, directory_id, detail, run_id, run_seq, at) ",
            );
            insert.push_values(chunk, |mut row, &(index, action)| {
                let (object, change) = object_and_change(action);
                let (_, entra_id, directory_id) = action_key(action);
                let detail = match run {
                    Some(_) => String::new(),
                    None => serde_json::to_string(action).unwrap_or_default(),
                };
                row.push_bind(organization_id)
                    .push_bind(object)
                    .push_bind(change)
                    .push_bind(entra_id.map(str::to_owned))
                    .push_bind(directory_id.or_else(|| directory_id_of(action)))
                    .push_bind(detail)
                    .push_bind(run.map(|(run_id, _)| run_id))
                    .push_bind(run.map(|(_, first_seq)| (first_seq + index) as i64))
                    .push_bind(now.to_owned());
            });
            insert
        },
        |_| {},
    )
    .await
}

/// Deletes the changes recorded before `cutoff`, with the run history's retention; returns how
/// many went.
pub async fn delete_before(store: &Store, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    let deleted = sqlx::query("DELETE FROM directory_changes WHERE at < ?")
        .bind(timestamp(cutoff))
        .execute(&store.pool)
        .await
        .doing("deleting old changes")?;
    Ok(deleted.rows_affected())
}

/// The oldest cursor the feed still answers in full: the changes after an older one were
/// deleted by the retention. Deletes take the oldest changes first and cursors are never
/// reused, so everything after this cursor is still there.
pub async fn oldest_cursor(store: &Store) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT min(seq) - 1 FROM directory_changes), \
         (SELECT seq FROM sqlite_sequence WHERE name = 'directory_changes'), 0)",
    )
    .fetch_one(&store.pool)
    .await
    .doing("reading the change feed's oldest cursor")
}

/// One change as the feed shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Resume after this change with `since=cursor`.
    pub cursor: i64,
    pub at: String,
    pub organization: String,
    /// `user`, `group`, `membership` or `department`.
    pub object: String,
    /// `created`, `linked`, `updated`, `disabled`, `soft_deleted`, `deleted`, `purged`,
    /// `restored`, `department_set` (users); `created`, `updated`, `deleted` (groups and
    /// departments); `added`, `removed` (memberships).
    pub change: String,
    /// The user's or group's Entra id (a membership's user); none for departments.
    pub entra_id: Option<String>,
    /// The user's, group's or department's directory id, where known.
    pub directory_id: Option<i64>,
    /// The applied action with its values (a user's attributes, before and after values).
    pub detail: serde_json::Value,
}

/// Up to `limit` changes after cursor `since` in these organizations, oldest first.
pub async fn since(
    store: &Store,
    organizations: &[String],
    since: i64,
    limit: i64,
) -> Result<Vec<Change>, StoreError> {
    if organizations.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = QueryBuilder::<Sqlite>::new(
        "SELECT c.seq, c.at, o.name, c.object, c.change, c.entra_id, c.directory_id, coalesce(a.detail, c.detail) \
         FROM directory_changes c JOIN organizations o ON o.id = c.organization_id \
         LEFT JOIN run_actions a ON a.run_id = c.run_id AND a.seq = c.run_seq WHERE c.seq > ",
    );
    query.push_bind(since);
    query.push(" AND o.name IN (");
    let mut names = query.separated(", ");
    for organization in organizations {
        names.push_bind(organization.clone());
    }
    query.push(") ORDER BY c.seq LIMIT ");
    query.push_bind(limit);
    let rows = query
        .build()
        .fetch_all(&store.pool)
        .await
        .doing("reading the change feed")?;
    rows.iter()
        .map(|row| {
            Ok(Change {
                cursor: row.get(0),
                at: row.get(1),
                organization: row.get(2),
                object: row.get(3),
                change: row.get(4),
                entra_id: row.get(5),
                directory_id: row.get(6),
                // Empty only if the run's actions were deleted, which the retention avoids.
                detail: match row.get::<&str, _>(7) {
                    "" => serde_json::Value::Null,
                    detail => decode_json(detail, "a change's detail")?,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::TimeZone;

    use super::*;
    use crate::store::{RunEnd, Trigger, insert_actions};

    /// The first of the month, in 2026.
    fn at(month: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, month, 1, 0, 0, 0).unwrap()
    }

    /// A store with the connection and organization `contoso`, made at `at(1)`.
    async fn contoso() -> (tempfile::TempDir, Store, crate::store::ConnectionState) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let state = store.connection_state("contoso", "contoso", at(1)).await.unwrap();
        (dir, store, state)
    }

    #[tokio::test]
    async fn retention_deletes_the_oldest_changes_and_moves_the_oldest_cursor() {
        let (_dir, store, state) = contoso().await;
        let department = |name: &str| Action::CreateDepartment { name: name.into() };
        for (month, names) in [(1, ["a", "b", "c"].as_slice()), (6, ["d", "e"].as_slice())] {
            let actions: Vec<Action> = names.iter().map(|name| department(name)).collect();
            let mut transaction = store.pool.begin().await.unwrap();
            let outcomes = vec![None; actions.len()];
            record(
                &mut transaction,
                state.organization_id,
                &actions,
                &outcomes,
                &|_| None,
                None,
                &timestamp(at(month)),
            )
            .await
            .unwrap();
            transaction.commit().await.unwrap();
        }
        let organizations = ["contoso".to_owned()];
        assert_eq!(oldest_cursor(&store).await.unwrap(), 0);
        assert_eq!(delete_before(&store, at(3)).await.unwrap(), 3);
        assert_eq!(oldest_cursor(&store).await.unwrap(), 3);
        let kept = since(&store, &organizations, 3, 10).await.unwrap();
        assert_eq!(kept.iter().map(|c| c.cursor).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(delete_before(&store, at(12)).await.unwrap(), 2);
        assert_eq!(oldest_cursor(&store).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn a_change_applied_in_a_run_takes_its_detail_from_the_run_which_the_feed_keeps() {
        let (_dir, store, state) = contoso().await;
        let run = store
            .begin_run(state.id, Trigger::Manual, "full", at(1))
            .await
            .unwrap();
        store
            .finish_run(
                run,
                &RunEnd {
                    mode: "full",
                    status: "succeeded",
                    counts: None,
                    graph_requests: 3,
                    duration_ms: 10,
                    error: None,
                    warnings: &[],
                },
                at(1),
            )
            .await
            .unwrap();
        let actions = [Action::CreateDepartment {
            name: "Support".into(),
        }];
        let outcomes = vec![None];
        let mut transaction = store.pool.begin().await.unwrap();
        record(
            &mut transaction,
            state.organization_id,
            &actions,
            &outcomes,
            &|_| None,
            Some((run, 0)),
            &timestamp(at(1)),
        )
        .await
        .unwrap();
        insert_actions(&mut transaction, run, 0, &actions, &outcomes)
            .await
            .unwrap();
        transaction.commit().await.unwrap();
        let feed = since(&store, &["contoso".to_owned()], 0, 10).await.unwrap();
        assert_eq!(
            feed[0].detail,
            serde_json::json!({ "action": "create_department", "name": "Support" })
        );
        assert_eq!(store.delete_runs_before(at(3)).await.unwrap(), 0);
        assert_eq!(delete_before(&store, at(3)).await.unwrap(), 1);
        assert_eq!(store.delete_runs_before(at(3)).await.unwrap(), 1);
    }
}
