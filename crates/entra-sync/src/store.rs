//! The state store on SQLite: connections' delta links, the source snapshot, the run history and
//! the read side of the embedded directory. The directory's writes live in `targets::directory`.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use entra_sync_core::fold::Touched;
use entra_sync_core::model::{EntraGroup, EntraUser, IdList, SourceSnapshot};
use entra_sync_core::plan::{Action, Conflict, Plan, PlanCounts};
use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, QueryBuilder, Row, Sqlite, SqlitePool};

/// The schema, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_departments.sql"),
    include_str!("../migrations/sqlite/0003_api_tokens.sql"),
    include_str!("../migrations/sqlite/0004_guards.sql"),
    include_str!("../migrations/sqlite/0005_api_connections.sql"),
    include_str!("../migrations/sqlite/0006_outbox_and_changes.sql"),
    include_str!("../migrations/sqlite/0007_admin_ui.sql"),
    include_str!("../migrations/sqlite/0008_microsoft_data.sql"),
    include_str!("../migrations/sqlite/0009_run_warnings.sql"),
    include_str!("../migrations/sqlite/0010_changes_refer_to_history.sql"),
    include_str!("../migrations/sqlite/0011_source_users_present.sql"),
];

/// Rows per multi-row INSERT; SQLite allows 32,766 bound values per statement.
pub(crate) const ROWS_PER_INSERT: usize = 500;

/// Rows joined into one value when a whole table of an organization or connection is read (a
/// few MB each): see [`decode_lines`].
pub(crate) const ROWS_PER_READ: i64 = 5_000;

/// Page cache per connection, in KiB.
const PAGE_CACHE_KIB: u32 = 32 * 1024;

/// WAL pages (4 KiB each) after which a commit checkpoints the WAL into the database itself. A
/// ceiling: runs have a background checkpoint copy their batches back as they go
/// ([`Store::checkpoint_in_background`]), so such a commit finds little left to copy.
const WAL_CHECKPOINT_PAGES: u32 = 65_536;

/// Bytes the WAL file is cut back to once a checkpoint has copied all of it: a full sync may
/// grow it to hundreds of MB, which need not stay on disk.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// A store failure, with what the store was doing.
#[derive(Debug, thiserror::Error)]
#[error("database error while {doing}: {source}")]
pub struct StoreError {
    pub doing: &'static str,
    #[source]
    pub source: sqlx::Error,
}

/// Adds what the store was doing to a sqlx error.
pub(crate) trait Doing<T> {
    fn doing(self, doing: &'static str) -> Result<T, StoreError>;
}

impl<T> Doing<T> for Result<T, sqlx::Error> {
    fn doing(self, doing: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError { doing, source })
    }
}

/// The SQLite database of one data folder.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
    /// Whether a background checkpoint is running.
    checkpointing: Arc<AtomicBool>,
}

/// A connection's sync state.
#[derive(Debug, Clone)]
pub struct ConnectionState {
    pub id: i64,
    pub organization_id: i64,
    pub users_delta_link: Option<String>,
    pub groups_delta_link: Option<String>,
    pub needs_replan: bool,
    /// Users present in Entra after the last applied run, for the read-health guard.
    pub last_good_users: Option<usize>,
    /// The policy (as JSON) the last applied run planned with.
    pub applied_policy: Option<String>,
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `entra-sync sync` or Sync Now.
    Manual,
    /// The schedule.
    Scheduled,
    /// Sync Now through the JSON API.
    Api,
    /// A one-user sync through the JSON API.
    User,
    /// A one-group sync through the JSON API.
    Group,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Scheduled => "scheduled",
            Trigger::Api => "api",
            Trigger::User => "user",
            Trigger::Group => "group",
        }
    }
}

/// A run as the history shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: i64,
    pub connection: String,
    pub trigger: String,
    pub mode: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub counts: Option<serde_json::Value>,
    pub graph_requests: i64,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    /// The Entra id of the user or group a one-user or one-group run synced.
    pub subject: Option<String>,
    /// What the run warned about without failing, such as a Microsoft data read Graph refused.
    pub warnings: Vec<String>,
}

/// How a run ended, as the history records it.
pub struct RunEnd<'a> {
    pub mode: &'a str,
    pub status: &'a str,
    pub counts: Option<&'a PlanCounts>,
    pub graph_requests: u64,
    pub duration_ms: u64,
    pub error: Option<&'a str>,
    pub warnings: &'a [String],
}

/// One recorded action of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    pub seq: i64,
    pub kind: String,
    pub entra_id: Option<String>,
    pub directory_id: Option<i64>,
    pub detail: serde_json::Value,
    pub outcome: Option<String>,
}

/// A directory user as `users` lists it.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: i64,
    pub entra_id: Option<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub status: String,
    pub status_reason: Option<String>,
    pub groups: Vec<String>,
    /// What Microsoft says about the linked Entra user (`microsoft.rs`).
    pub microsoft: MicrosoftFacts,
}

/// A user's licences from what the sync last read, and the sign-in and MFA data of the last
/// full run; `None` where unknown.
#[derive(Debug, Clone, Default)]
pub struct MicrosoftFacts {
    /// Assigned licence SKU ids, sorted.
    pub license_ids: Vec<String>,
    pub last_sign_in: Option<String>,
    pub mfa_registered: Option<bool>,
}

/// A directory group as `groups` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRecord {
    pub id: i64,
    pub entra_id: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub members: i64,
}

/// A directory department as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct DepartmentRecord {
    pub id: i64,
    pub name: String,
    /// Made by the sync, which removes it once no user belongs to it.
    pub created_by_sync: bool,
    pub users: i64,
}

/// Formats a time the way every table stores it (sortable RFC 3339).
pub(crate) fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir` and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| StoreError {
            doing: "creating the data folder",
            source: sqlx::Error::Io(error),
        })?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .doing("configuring SQLite")?
            .filename(data_dir.join("entra-sync.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            // A full sync writes a few hundred MB through B-trees keyed by random GUIDs: with
            // SQLite's default 2 MB page cache it spills and re-reads pages mid-transaction.
            // The cache is a ceiling, filled only as pages are used.
            .pragma("cache_size", format!("-{}", PAGE_CACHE_KIB))
            // Multi-row upserts keep a statement journal; in memory it is never written to disk.
            .pragma("temp_store", "memory")
            .pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES.to_string())
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
            // Whole-directory reads stream rows from SQLite's thread; a deeper buffer means
            // fewer thread hand-offs per row.
            .row_buffer_size(1024)
            // Whole-tenant reads are long by design; sqlx's slow-statement warning is noise here.
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .doing("opening the database")?;
        let store = Store {
            pool,
            checkpointing: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Starts copying what the WAL holds back into the database on a connection of its own,
    /// unless a copy is already running (then `None`). A commit that crosses SQLite's automatic
    /// threshold copies the whole WAL itself, on the writer's clock: at 100k users a full sync
    /// spent about a sixth of its time so. A passive checkpoint blocks no reader or writer, so
    /// a run calls this after each batch it commits and its next batch goes on meanwhile.
    pub(crate) fn checkpoint_in_background(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.checkpointing.swap(true, Ordering::AcqRel) {
            return None;
        }
        let pool = self.pool.clone();
        let checkpointing = self.checkpointing.clone();
        Some(tokio::spawn(async move {
            let started = std::time::Instant::now();
            // (busy, frames in the WAL, frames copied): a failure only leaves the copy to the
            // next checkpoint.
            let result: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&pool)
                .await;
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                ?result,
                "checkpointed the WAL in the background"
            );
            checkpointing.store(false, Ordering::Release);
        }))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.doing("migrating")?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *transaction)
            .await
            .doing("reading the schema version")?;
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(*migration)
                .execute(&mut *transaction)
                .await
                .doing("applying a schema migration")?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "PRAGMA user_version = {}",
                index + 1
            )))
            .execute(&mut *transaction)
            .await
            .doing("recording the schema version")?;
        }
        transaction.commit().await.doing("migrating")
    }

    /// The connection pool, for the targets that live in this database.
    pub fn pool(&self) -> SqlitePool {
        self.pool.clone()
    }

    /// The state of a connection, creating it and its organization on first use.
    pub async fn connection_state(
        &self,
        name: &str,
        organization: &str,
        now: DateTime<Utc>,
    ) -> Result<ConnectionState, StoreError> {
        let mut transaction = self.pool.begin().await.doing("loading the connection")?;
        ensure_organization(&mut transaction, organization, now).await?;
        let organization_id: i64 = sqlx::query_scalar("SELECT id FROM organizations WHERE name = ?")
            .bind(organization)
            .fetch_one(&mut *transaction)
            .await
            .doing("loading the organization")?;
        sqlx::query(
            "INSERT INTO connections (name, organization_id) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(organization_id)
        .execute(&mut *transaction)
        .await
        .doing("creating the connection")?;
        let row = sqlx::query(
            "SELECT id, organization_id, users_delta_link, groups_delta_link, needs_replan, last_good_users, applied_policy FROM connections WHERE name = ?",
        )
        .bind(name)
        .fetch_one(&mut *transaction)
        .await
        .doing("loading the connection")?;
        transaction.commit().await.doing("loading the connection")?;
        Ok(ConnectionState {
            id: row.get(0),
            organization_id: row.get(1),
            users_delta_link: row.get(2),
            groups_delta_link: row.get(3),
            needs_replan: row.get::<i64, _>(4) != 0,
            last_good_users: row.get::<Option<i64>, _>(5).map(|users| users as usize),
            applied_policy: row.get(6),
        })
    }

    /// Loads a connection's source snapshot.
    pub async fn load_snapshot(&self, connection_id: i64) -> Result<SourceSnapshot, StoreError> {
        let mut snapshot = SourceSnapshot::default();
        for user in self
            .load_source_rows::<EntraUser>("source_users", connection_id, "", None, "a snapshot user")
            .await?
        {
            snapshot.users.insert(user.id.clone(), user);
        }
        for group in self.load_source_groups(connection_id).await? {
            snapshot.groups.insert(group.id.clone(), group);
        }
        Ok(snapshot)
    }

    /// The snapshot's groups, every one: a partial read of a delta run plans them whole.
    pub async fn load_source_groups(&self, connection_id: i64) -> Result<Vec<EntraGroup>, StoreError> {
        self.load_source_rows("source_groups", connection_id, "", None, "a snapshot group")
            .await
    }

    /// The snapshot rows of the users `entra_ids` names (those it holds).
    pub async fn load_source_users_of(
        &self,
        connection_id: i64,
        entra_ids: &[String],
    ) -> Result<Vec<EntraUser>, StoreError> {
        let ids = serde_json::to_string(entra_ids).unwrap_or_default();
        self.load_source_rows(
            "source_users",
            connection_id,
            " AND entra_id IN (SELECT value FROM json_each(?))",
            Some(ids),
            "a snapshot user",
        )
        .await
    }

    /// The Entra ids of the snapshot's users that no directory user of `organization_id` is
    /// linked to: the newcomers (and those out of scope or put aside), planned by every run.
    pub async fn unlinked_source_users(
        &self,
        connection_id: i64,
        organization_id: i64,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT s.entra_id FROM source_users s WHERE s.connection_id = ? AND NOT EXISTS \
             (SELECT 1 FROM users u WHERE u.organization_id = ? AND u.entra_id = s.entra_id)",
        )
        .bind(connection_id)
        .bind(organization_id)
        .fetch_all(&self.pool)
        .await
        .doing("finding the snapshot's users not linked yet")
    }

    /// The snapshot's users present in Entra, the count the source-drop guard compares.
    pub async fn present_source_users(&self, connection_id: i64) -> Result<usize, StoreError> {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM source_users WHERE connection_id = ? AND present")
                .bind(connection_id)
                .fetch_one(&self.pool)
                .await
                .doing("counting the snapshot's users")?;
        Ok(count as usize)
    }

    /// The objects of one snapshot table. SQLite joins each `ROWS_PER_READ` rows' JSON
    /// into one value, a line each: handing 100,000 rows one by one from SQLite's thread (each
    /// value copied, each row sent) cost more than decoding their JSON.
    /// `filter` narrows the rows with one more condition, whose parameter is `argument`.
    async fn load_source_rows<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        connection_id: i64,
        filter: &str,
        argument: Option<String>,
        what: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        // `table` and `filter` are this module's constants, never input.
        let sql = format!(
            "SELECT group_concat(data, char(10)) FROM {table} WHERE connection_id = ?{filter} \
             GROUP BY rowid / {ROWS_PER_READ}"
        );
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(connection_id);
        if let Some(argument) = argument {
            query = query.bind(argument);
        }
        decode_lines(query.fetch(&self.pool), "loading the source snapshot", what).await
    }

    /// Stores the folded snapshot and the new delta links in one transaction, so that both
    /// advance together and only after the run's changes were applied (Architecture Invariant 3).
    /// A full round replaces the snapshot; a delta round writes only what it touched.
    pub async fn commit_source(
        &self,
        connection_id: i64,
        snapshot: &SourceSnapshot,
        touched: SourceWrite<'_>,
        links: &DeltaLinks,
        mark: &RunMark,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Holding the write lock from the start: a whole read reads the stored ids before it
        // writes, and in a deferred transaction another connection's commit in between (another
        // connection's run, the welcome sender) would fail the first write with
        // SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out.
        let mut transaction = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .doing("saving the source snapshot")?;
        let (users, groups): (Vec<&EntraUser>, Vec<&EntraGroup>) = match touched {
            SourceWrite::WholeRead(read) => {
                // The read's users are stored already (`SourceUsersWriter`): those it did not
                // name are gone from the tenant. Found by reading the stored ids against the
                // snapshot rather than handing SQLite every id the read named, which at a
                // million users was a 40 MB argument and a set as big inside SQLite.
                let gone = stored_ids_not_in(&mut transaction, connection_id, read).await?;
                sqlx::query(
                    "DELETE FROM source_users WHERE connection_id = ? \
                     AND entra_id IN (SELECT value FROM json_each(?))",
                )
                .bind(connection_id)
                .bind(serde_json::to_string(&gone).unwrap_or_default())
                .execute(&mut *transaction)
                .await
                .doing("replacing the source snapshot")?;
                sqlx::query("DELETE FROM source_groups WHERE connection_id = ?")
                    .bind(connection_id)
                    .execute(&mut *transaction)
                    .await
                    .doing("replacing the source snapshot")?;
                (Vec::new(), snapshot.groups.values().collect())
            }
            SourceWrite::Touched(touched) => (
                touched
                    .users
                    .iter()
                    .filter_map(|id| snapshot.users.get(id))
                    .collect(),
                touched
                    .groups
                    .iter()
                    .filter_map(|id| snapshot.groups.get(id))
                    .collect(),
            ),
        };
        upsert_source_rows(&mut transaction, "source_users", connection_id, &users).await?;
        upsert_source_rows(&mut transaction, "source_groups", connection_id, &groups).await?;
        let full = matches!(touched, SourceWrite::WholeRead(_));
        sqlx::query(
            "UPDATE connections SET users_delta_link = ?, groups_delta_link = ?, delta_links_at = ?, \
             last_full_at = CASE WHEN ? THEN ? ELSE last_full_at END, needs_replan = ?, \
             last_good_users = coalesce(?, last_good_users), applied_policy = coalesce(?, applied_policy) WHERE id = ?",
        )
        .bind(&links.users)
        .bind(&links.groups)
        .bind(timestamp(now))
        .bind(full)
        .bind(timestamp(now))
        .bind(mark.needs_replan)
        .bind(mark.present_users.map(|users| users as i64))
        .bind(mark.policy.as_deref())
        .bind(connection_id)
        .execute(&mut *transaction)
        .await
        .doing("saving the delta links")?;
        transaction.commit().await.doing("saving the source snapshot")
    }

    /// Records the start of a run and returns its id.
    pub async fn begin_run(
        &self,
        connection_id: i64,
        trigger: Trigger,
        mode: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO runs (connection_id, trigger, mode, status, started_at) VALUES (?, ?, ?, 'running', ?) RETURNING id",
        )
        .bind(connection_id)
        .bind(trigger.as_str())
        .bind(mode)
        .bind(timestamp(now))
        .fetch_one(&self.pool)
        .await
        .doing("recording the run")
    }

    /// Records how a run ended.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_run(
        &self,
        run_id: i64,
        end: &RunEnd<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let counts = end
            .counts
            .map(|counts| serde_json::to_string(counts).unwrap_or_default());
        let warnings =
            (!end.warnings.is_empty()).then(|| serde_json::to_string(end.warnings).unwrap_or_default());
        sqlx::query(
            "UPDATE runs SET mode = ?, status = ?, counts = ?, graph_requests = ?, duration_ms = ?, error = ?, warnings = ?, finished_at = ? WHERE id = ?",
        )
        .bind(end.mode)
        .bind(end.status)
        .bind(counts)
        .bind(end.graph_requests as i64)
        .bind(end.duration_ms as i64)
        .bind(end.error)
        .bind(warnings)
        .bind(timestamp(now))
        .bind(run_id)
        .execute(&self.pool)
        .await
        .doing("recording the end of the run")?;
        Ok(())
    }

    /// Marks runs left `running` by a process that died as `interrupted`.
    pub async fn mark_interrupted_runs(&self, connection_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET status = 'interrupted', error = 'the process stopped during the run' WHERE connection_id = ? AND status = 'running'")
            .bind(connection_id)
            .execute(&self.pool)
            .await
            .doing("closing interrupted runs")?;
        Ok(())
    }

    /// Records a run's actions with their outcomes (a plan not applied: dry run or blocked).
    pub async fn record_actions(
        &self,
        run_id: i64,
        first_seq: usize,
        actions: &[Action],
        outcomes: &[Option<String>],
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.doing("recording the run's actions")?;
        insert_actions(&mut transaction, run_id, first_seq, actions, outcomes).await?;
        transaction.commit().await.doing("recording the run's actions")
    }

    /// Records the conflicts a run put aside.
    pub async fn record_conflicts(&self, run_id: i64, conflicts: &[Conflict]) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.doing("recording conflicts")?;
        write_in_chunks(
            &mut transaction,
            conflicts,
            "recording conflicts",
            |start, chunk| {
                let mut insert = QueryBuilder::<Sqlite>::new(
                    "INSERT OR REPLACE INTO run_conflicts (run_id, seq, entra_id, directory_id, reason) ",
                );
                let mut seq = start as i64;
                insert.push_values(chunk, |mut row, conflict| {
                    row.push_bind(run_id)
                        .push_bind(seq)
                        .push_bind(conflict.entra_id.clone())
                        .push_bind(conflict.directory_id)
                        .push_bind(conflict.reason.clone());
                    seq += 1;
                });
                insert
            },
            |_| {},
        )
        .await?;
        transaction.commit().await.doing("recording conflicts")
    }

    /// Runs, newest first, optionally of one connection.
    pub async fn runs(&self, connection: Option<&str>, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.id, c.name, r.trigger, r.mode, r.status, r.started_at, r.finished_at, r.counts, r.graph_requests, r.duration_ms, r.error, r.subject, r.warnings \
             FROM runs r JOIN connections c ON c.id = r.connection_id \
             WHERE ? IS NULL OR c.name = ? ORDER BY r.id DESC LIMIT ?",
        )
        .bind(connection)
        .bind(connection)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .doing("reading the history")?;
        rows.iter().map(run_record).collect()
    }

    /// One run.
    pub async fn run(&self, run_id: i64) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT r.id, c.name, r.trigger, r.mode, r.status, r.started_at, r.finished_at, r.counts, r.graph_requests, r.duration_ms, r.error, r.subject, r.warnings \
             FROM runs r JOIN connections c ON c.id = r.connection_id WHERE r.id = ?",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .doing("reading the history")?;
        row.as_ref().map(run_record).transpose()
    }

    /// When the last successful run of a connection started, if it had one. One-user and
    /// one-group runs do not count: they do not bring the whole tenant in step.
    pub async fn last_success(&self, connection: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let started: Option<String> = sqlx::query_scalar(
            "SELECT r.started_at FROM runs r JOIN connections c ON c.id = r.connection_id \
             WHERE c.name = ? AND r.status = 'succeeded' AND r.trigger NOT IN ('user', 'group') \
             ORDER BY r.id DESC LIMIT 1",
        )
        .bind(connection)
        .fetch_optional(&self.pool)
        .await
        .doing("reading the last successful run")?;
        Ok(started
            .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
            .map(|time| time.with_timezone(&Utc)))
    }

    /// When a connection's last full round was committed, if it had one.
    pub async fn last_full_at(&self, connection: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let last: Option<Option<String>> =
            sqlx::query_scalar("SELECT last_full_at FROM connections WHERE name = ?")
                .bind(connection)
                .fetch_optional(&self.pool)
                .await
                .doing("reading the last full run")?;
        Ok(last
            .flatten()
            .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
            .map(|time| time.with_timezone(&Utc)))
    }

    /// Deletes the finished runs that started before `cutoff`, with their actions and conflicts;
    /// returns how many runs went. A run the change feed still refers to stays: the feed's
    /// changes take their detail from the run's actions (delete the old changes first).
    pub async fn delete_runs_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut transaction = self.pool.begin().await.doing("deleting old history")?;
        let old = "SELECT id FROM runs WHERE started_at < ? AND status != 'running' \
                   AND id NOT IN (SELECT run_id FROM directory_changes WHERE run_id IS NOT NULL)";
        // Every table that refers to runs, read from the schema, so that a table added later
        // (actions, conflicts, stored plans, ...) never blocks the delete.
        let referring: Vec<(String, String)> = sqlx::query_as(
            "SELECT m.name, f.\"from\" FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) f \
             WHERE m.type = 'table' AND f.\"table\" = 'runs'",
        )
        .fetch_all(&mut *transaction)
        .await
        .doing("deleting old history")?;
        for (table, column) in referring {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM \"{table}\" WHERE \"{column}\" IN ({old})"
            )))
            .bind(timestamp(cutoff))
            .execute(&mut *transaction)
            .await
            .doing("deleting old history")?;
        }
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM runs WHERE id IN ({old})"
        )))
        .bind(timestamp(cutoff))
        .execute(&mut *transaction)
        .await
        .doing("deleting old history")?;
        transaction.commit().await.doing("deleting old history")?;
        Ok(deleted.rows_affected())
    }

    /// Stores an API token's hash under a name; `false` when the name is taken.
    pub async fn create_api_token(
        &self,
        name: &str,
        token_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO api_tokens (name, token_sha256, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(token_sha256)
        .bind(timestamp(now))
        .execute(&self.pool)
        .await
        .doing("creating the API token")?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Whether an API token with this hash exists.
    pub async fn api_token_exists(&self, token_sha256: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM api_tokens WHERE token_sha256 = ?")
            .bind(token_sha256)
            .fetch_optional(&self.pool)
            .await
            .doing("checking the API token")?;
        Ok(found.is_some())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .doing("checking the database")?;
        Ok(())
    }

    /// One run's recorded actions, in order.
    pub async fn run_actions(&self, run_id: i64) -> Result<Vec<ActionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, entra_id, directory_id, detail, outcome FROM run_actions WHERE run_id = ? ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .doing("reading the run's actions")?;
        rows.into_iter()
            .map(|row| {
                Ok(ActionRecord {
                    seq: row.get(0),
                    kind: row.get(1),
                    entra_id: row.get(2),
                    directory_id: row.get(3),
                    detail: decode_json(row.get::<&str, _>(4), "a recorded action")?,
                    outcome: row.get(5),
                })
            })
            .collect()
    }

    /// One run's recorded conflicts.
    pub async fn run_conflicts(&self, run_id: i64) -> Result<Vec<Conflict>, StoreError> {
        let rows = sqlx::query(
            "SELECT entra_id, directory_id, reason FROM run_conflicts WHERE run_id = ? ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .doing("reading the run's conflicts")?;
        Ok(rows
            .into_iter()
            .map(|row| Conflict {
                entra_id: row.get(0),
                directory_id: row.get(1),
                reason: row.get(2),
            })
            .collect())
    }

    /// The directory users of an organization, with their group names.
    pub async fn users(&self, organization: &str) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(users_query()))
            .bind(organization)
            .fetch_all(&self.pool)
            .await
            .doing("listing users")?;
        rows.iter().map(user_record).collect()
    }

    /// One directory user by its directory id, with the name of its organization.
    pub async fn user(&self, id: i64) -> Result<Option<(String, UserRecord)>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT u.id, u.entra_id, u.attributes, u.status, u.status_reason, \
             (SELECT group_concat(g.name, char(31)) FROM memberships m JOIN groups g ON g.id = m.group_id WHERE m.user_id = u.id), \
             {MICROSOFT_COLUMNS}, \
             o.name FROM users u JOIN organizations o ON o.id = u.organization_id WHERE u.id = ?",
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .doing("reading a user")?;
        row.map(|row| Ok((row.get(9), user_record(&row)?))).transpose()
    }

    /// The directory groups of an organization, with member counts.
    pub async fn groups(&self, organization: &str) -> Result<Vec<GroupRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.id, g.entra_id, g.name, g.description, (SELECT count(*) FROM memberships m WHERE m.group_id = g.id) \
             FROM groups g JOIN organizations o ON o.id = g.organization_id WHERE o.name = ? ORDER BY g.name, g.id",
        )
        .bind(organization)
        .fetch_all(&self.pool)
        .await
        .doing("listing groups")?;
        Ok(rows
            .into_iter()
            .map(|row| GroupRecord {
                id: row.get(0),
                entra_id: row.get(1),
                name: row.get(2),
                description: row.get(3),
                members: row.get(4),
            })
            .collect())
    }

    /// Keeps a plan a guard stopped, with the guards' messages, until it is approved.
    pub async fn store_plan(
        &self,
        run_id: i64,
        connection_id: i64,
        plan: &Plan,
        guards: &[String],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stored_plans (run_id, connection_id, plan, guards, state) VALUES (?, ?, ?, ?, 'awaiting')",
        )
        .bind(run_id)
        .bind(connection_id)
        .bind(serde_json::to_string(plan).unwrap_or_default())
        .bind(serde_json::to_string(guards).unwrap_or_default())
        .execute(&self.pool)
        .await
        .doing("storing the plan for approval")?;
        Ok(())
    }

    /// A stored plan with its connection's organization and whether it still awaits approval.
    pub async fn stored_plan(&self, run_id: i64) -> Result<Option<StoredPlan>, StoreError> {
        let row = sqlx::query(
            "SELECT p.connection_id, c.name, c.organization_id, p.plan, p.state, \
             (SELECT max(r.id) FROM runs r WHERE r.connection_id = p.connection_id AND r.id > p.run_id AND r.status = 'succeeded') \
             FROM stored_plans p JOIN connections c ON c.id = p.connection_id WHERE p.run_id = ?",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .doing("loading the stored plan")?;
        row.map(|row| {
            Ok(StoredPlan {
                run_id,
                connection_id: row.get(0),
                connection: row.get(1),
                organization_id: row.get(2),
                plan: decode_json(row.get::<&str, _>(3), "a stored plan")?,
                state: match row.get::<&str, _>(4) {
                    "awaiting" => PlanState::Awaiting,
                    "discarded" => PlanState::Discarded,
                    _ => PlanState::Applied,
                },
                later_run: row.get(5),
            })
        })
        .transpose()
    }

    /// Marks a stored plan applied and its run approved.
    pub async fn mark_approved(&self, run_id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.doing("recording the approval")?;
        sqlx::query("UPDATE stored_plans SET state = 'applied', decided_at = ? WHERE run_id = ?")
            .bind(timestamp(now))
            .bind(run_id)
            .execute(&mut *transaction)
            .await
            .doing("recording the approval")?;
        sqlx::query("UPDATE runs SET status = 'approved' WHERE id = ?")
            .bind(run_id)
            .execute(&mut *transaction)
            .await
            .doing("recording the approval")?;
        transaction.commit().await.doing("recording the approval")
    }

    /// The latest recorded actions on one Entra user, newest first.
    pub async fn user_actions(
        &self,
        entra_id: &str,
        limit: i64,
    ) -> Result<Vec<(i64, ActionRecord)>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, seq, kind, entra_id, directory_id, detail, outcome FROM run_actions \
             WHERE entra_id = ? ORDER BY run_id DESC, seq DESC LIMIT ?",
        )
        .bind(entra_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .doing("reading a user's actions")?;
        rows.into_iter()
            .map(|row| {
                Ok((
                    row.get(0),
                    ActionRecord {
                        seq: row.get(1),
                        kind: row.get(2),
                        entra_id: row.get(3),
                        directory_id: row.get(4),
                        detail: decode_json(row.get::<&str, _>(5), "a recorded action")?,
                        outcome: row.get(6),
                    },
                ))
            })
            .collect()
    }

    /// How many directory users of the organization are soft-deleted (each may fall due for
    /// purge without any change in Entra).
    pub async fn soft_deleted_user_count(&self, organization_id: i64) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM users WHERE organization_id = ? AND status = 'soft_deleted'",
        )
        .bind(organization_id)
        .fetch_one(&self.pool)
        .await
        .doing("counting soft-deleted users")?;
        Ok(count as u64)
    }

    /// The directory departments of an organization, with user counts.
    pub async fn departments(&self, organization: &str) -> Result<Vec<DepartmentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.name, d.created_by_sync, (SELECT count(*) FROM users u WHERE u.department_id = d.id) \
             FROM departments d JOIN organizations o ON o.id = d.organization_id WHERE o.name = ? ORDER BY d.name, d.id",
        )
        .bind(organization)
        .fetch_all(&self.pool)
        .await
        .doing("listing departments")?;
        Ok(rows
            .into_iter()
            .map(|row| DepartmentRecord {
                id: row.get(0),
                name: row.get(1),
                created_by_sync: row.get::<i64, _>(2) != 0,
                users: row.get(3),
            })
            .collect())
    }

    /// How many directory users of the organization are linked to Entra.
    pub async fn linked_user_count(&self, organization_id: i64) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM users WHERE organization_id = ? AND entra_id IS NOT NULL",
        )
        .bind(organization_id)
        .fetch_one(&self.pool)
        .await
        .doing("counting linked users")?;
        Ok(count as u64)
    }
}

/// A row of `runs` joined with its connection's name, in the column order `runs` and `run` select.
fn run_record(row: &sqlx::sqlite::SqliteRow) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        run_id: row.get(0),
        connection: row.get(1),
        trigger: row.get(2),
        mode: row.get(3),
        status: row.get(4),
        started_at: row.get(5),
        finished_at: row.get(6),
        counts: row
            .get::<Option<&str>, _>(7)
            .map(|text| decode_json(text, "a run's counts"))
            .transpose()?,
        graph_requests: row.get(8),
        duration_ms: row.get(9),
        error: row.get(10),
        subject: row.get(11),
        warnings: row
            .get::<Option<&str>, _>(12)
            .map(|text| decode_json(text, "a run's warnings"))
            .transpose()?
            .unwrap_or_default(),
    })
}

/// A plan a safety guard stopped.
#[derive(Debug, Clone)]
pub struct StoredPlan {
    pub run_id: i64,
    pub connection_id: i64,
    pub connection: String,
    pub organization_id: i64,
    pub plan: Plan,
    pub state: PlanState,
    /// A later run of the connection that succeeded: the source moved on since this plan.
    pub later_run: Option<i64>,
}

/// Where a stored plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanState {
    /// Waiting for approval.
    Awaiting,
    /// Approved and applied.
    Applied,
    /// Dropped from the admin UI: nothing of it was applied.
    Discarded,
}

/// Creates the organization of that name unless it exists.
pub(crate) async fn ensure_organization(
    transaction: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    name: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO organizations (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(timestamp(now))
        .execute(&mut **transaction)
        .await
        .doing("creating the organization")?;
    Ok(())
}

/// The users of the organization named by the one parameter, in the column order of `user_record`.
fn users_query() -> String {
    format!(
        "SELECT u.id, u.entra_id, u.attributes, u.status, u.status_reason, \
         (SELECT group_concat(g.name, char(31)) FROM memberships m JOIN groups g ON g.id = m.group_id WHERE m.user_id = u.id), \
         {MICROSOFT_COLUMNS} \
         FROM users u JOIN organizations o ON o.id = u.organization_id WHERE o.name = ? ORDER BY u.id",
    )
}

/// A user's licence ids (from the source snapshot, so they follow every delta run) and sign-in and
/// MFA data, from the connection that syncs the user's organization.
///
/// `CROSS JOIN` keeps the connections as the outer loop, so each user is one index lookup by
/// (connection, Entra id); left to itself SQLite scanned every snapshot row for every user, which
/// made listing 20,000 users take minutes.
const MICROSOFT_COLUMNS: &str = "\
    (SELECT json_extract(s.data, '$.assigned_licenses') FROM connections c CROSS JOIN source_users s \
     WHERE s.connection_id = c.id AND c.organization_id = u.organization_id AND s.entra_id = u.entra_id LIMIT 1), \
    (SELECT mu.last_sign_in FROM connections c CROSS JOIN microsoft_users mu \
     WHERE mu.connection_id = c.id AND c.organization_id = u.organization_id AND mu.entra_id = u.entra_id LIMIT 1), \
    (SELECT mu.mfa_registered FROM connections c CROSS JOIN microsoft_users mu \
     WHERE mu.connection_id = c.id AND c.organization_id = u.organization_id AND mu.entra_id = u.entra_id LIMIT 1)";

/// A user row in the column order `users` and `user` select.
fn user_record(row: &sqlx::sqlite::SqliteRow) -> Result<UserRecord, StoreError> {
    let mut groups: Vec<String> = row
        .get::<Option<String>, _>(5)
        .map(|names| names.split('\u{1f}').map(str::to_owned).collect())
        .unwrap_or_default();
    groups.sort();
    Ok(UserRecord {
        id: row.get(0),
        entra_id: row.get(1),
        attributes: decode_json(row.get::<&str, _>(2), "a user's attributes")?,
        status: row.get(3),
        status_reason: row.get(4),
        groups,
        microsoft: MicrosoftFacts {
            license_ids: row
                .get::<Option<String>, _>(6)
                .and_then(|ids| serde_json::from_str(&ids).ok())
                .unwrap_or_default(),
            last_sign_in: row.get(7),
            mfa_registered: row.get::<Option<i64>, _>(8).map(|registered| registered != 0),
        },
    })
}

/// Which part of the snapshot a commit writes.
#[derive(Debug, Clone, Copy)]
pub enum SourceWrite<'a> {
    /// A full round whose users a [`SourceUsersWriter`] stored as they were read, named here by
    /// their ids in order (the snapshot's users are not needed again): the stored users it did
    /// not read are deleted, and the snapshot's groups replace the stored ones.
    WholeRead(&'a IdList),
    /// A delta round: only these objects changed.
    Touched(&'a Touched),
}

/// Stores the users of a full round while the round goes on, so that the run's commit has only
/// the groups and the delta links left to write (with 200 ms a page, a full read of 100k users
/// waits 20 s on Graph, and writing the snapshot after it took a second more).
///
/// Rows written before the run commits are safe to keep if it never does: each holds the user
/// as Entra has it now, and the delta links stay where they were, so the next delta run still
/// names every user changed since them. The plan compares the snapshot with the directory, not
/// with an older snapshot, so a row newer than the directory is planned like any other.
pub(crate) struct SourceUsersWriter {
    pages: tokio::sync::mpsc::UnboundedSender<Vec<EntraUser>>,
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
}

impl SourceUsersWriter {
    /// Starts a writer of `connection_id`'s snapshot users, on a task of its own.
    pub(crate) fn start(store: &Store, connection_id: i64) -> SourceUsersWriter {
        let (pages, mut received) = tokio::sync::mpsc::unbounded_channel::<Vec<EntraUser>>();
        let store = store.clone();
        let task = tokio::spawn(async move {
            while let Some(mut users) = received.recv().await {
                // Pages that arrived while the last transaction ran go into the next one.
                while let Ok(more) = received.try_recv() {
                    users.extend(more);
                }
                let users: Vec<&EntraUser> = users.iter().collect();
                let mut transaction = store.pool.begin().await.doing("saving the source snapshot")?;
                upsert_source_rows(&mut transaction, "source_users", connection_id, &users).await?;
                transaction.commit().await.doing("saving the source snapshot")?;
                store.checkpoint_in_background();
            }
            Ok(())
        });
        SourceUsersWriter { pages, task }
    }

    /// Queues users, as folded from a page, to be stored.
    pub(crate) fn write(&self, users: Vec<EntraUser>) {
        // A send fails only once the task has stopped on an error, which `finish` returns.
        let _ = self.pages.send(users);
    }

    /// Waits until every queued user is stored. A panic of the writing task carries on here,
    /// with its own message.
    pub(crate) async fn finish(self) -> Result<(), StoreError> {
        drop(self.pages);
        match self.task.await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Cancelled: only when the runtime shuts down under the run.
            Err(_) => Err(StoreError {
                doing: "saving the source snapshot",
                source: sqlx::Error::WorkerCrashed,
            }),
        }
    }
}

/// What a run leaves for the next one to know, saved with the snapshot.
#[derive(Debug, Clone, Default)]
pub struct RunMark {
    /// Some actions failed: the next run plans even if nothing changed in Entra.
    pub needs_replan: bool,
    /// Users present in Entra after this run; `None` keeps the last value.
    pub present_users: Option<usize>,
    /// The policy this run planned with, as JSON; `None` keeps the last value.
    pub policy: Option<String>,
}

/// The delta links that end a run's users and groups rounds.
#[derive(Debug, Clone, Default)]
pub struct DeltaLinks {
    pub users: Option<String>,
    pub groups: Option<String>,
}

/// Runs one multi-row statement per `ROWS_PER_INSERT` items, `build` making the statement of
/// the chunk that starts at the given index. Each statement is built while SQLite's thread runs
/// the one before it, and the rows a statement returns go to `returned` while the next one
/// runs: encoding the values (the JSON above all) had SQLite's thread wait for a fifth of a big
/// apply.
pub(crate) async fn write_in_chunks<'i, T>(
    connection: &mut SqliteConnection,
    items: &'i [T],
    doing: &'static str,
    mut build: impl FnMut(usize, &'i [T]) -> QueryBuilder<Sqlite>,
    mut returned: impl FnMut(Vec<SqliteRow>),
) -> Result<(), StoreError> {
    let mut chunks = items.chunks(ROWS_PER_INSERT).enumerate();
    let mut build_next = || {
        chunks
            .next()
            .map(|(index, chunk)| build(index * ROWS_PER_INSERT, chunk))
    };
    let mut next = build_next();
    let mut rows: Vec<SqliteRow> = Vec::new();
    while let Some(mut statement) = next {
        // `join!` polls the statement first, which hands it to SQLite's thread; the next one is
        // built meanwhile.
        let (result, following) = tokio::join!(statement.build().fetch_all(&mut *connection), async {
            if !rows.is_empty() {
                returned(std::mem::take(&mut rows));
            }
            build_next()
        });
        rows = result.doing(doing)?;
        next = following;
    }
    if !rows.is_empty() {
        returned(rows);
    }
    Ok(())
}

/// Writes a run's actions and outcomes in `transaction`, numbered from `first_seq`: the apply
/// batch that executed them records them in the same commit.
pub(crate) async fn insert_actions(
    transaction: &mut sqlx::Transaction<'_, Sqlite>,
    run_id: i64,
    first_seq: usize,
    actions: &[Action],
    outcomes: &[Option<String>],
) -> Result<(), StoreError> {
    let recorded: Vec<(&Action, &Option<String>)> = actions.iter().zip(outcomes).collect();
    write_in_chunks(
        transaction,
        &recorded,
        "recording the run's actions",
        |start, chunk| {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT OR REPLACE INTO run_actions (run_id, seq, kind, entra_id, directory_id, detail, outcome) ",
            );
            let mut seq = (first_seq + start) as i64;
            insert.push_values(chunk, |mut row, &(action, outcome)| {
                let (kind, entra_id, directory_id) = action_key(action);
                row.push_bind(run_id)
                    .push_bind(seq)
                    .push_bind(kind)
                    .push_bind(entra_id.map(str::to_owned))
                    .push_bind(directory_id)
                    .push_bind(serde_json::to_string(action).unwrap_or_default())
                    .push_bind(outcome.clone());
                seq += 1;
            });
            insert
        },
        |_| {},
    )
    .await
}

async fn upsert_source_rows<T: Serialize + HasEntraId>(
    transaction: &mut sqlx::Transaction<'_, Sqlite>,
    table: &str,
    connection_id: i64,
    rows: &[&T],
) -> Result<(), StoreError> {
    write_in_chunks(
        transaction,
        rows,
        "saving the source snapshot",
        |_, chunk| {
            let mut insert = QueryBuilder::<Sqlite>::new(format!(
                "INSERT OR REPLACE INTO {table} (connection_id, entra_id, data) "
            ));
            insert.push_values(chunk, |mut row, object| {
                row.push_bind(connection_id)
                    .push_bind(object.entra_id().to_owned())
                    .push_bind(serde_json::to_string(object).unwrap_or_default());
            });
            insert
        },
        |_| {},
    )
    .await
}

/// The ids of `connection_id`'s stored snapshot users that `read` (in order) does not hold, read
/// `ROWS_PER_READ` ids a query from the `(connection_id, entra_id)` index alone. Paged by id
/// rather than grouped in one query: a `GROUP BY` over the table had SQLite sort every id in
/// memory first (0.1 GB at a million users).
async fn stored_ids_not_in(
    transaction: &mut sqlx::Transaction<'_, Sqlite>,
    connection_id: i64,
    read: &IdList,
) -> Result<Vec<String>, StoreError> {
    let mut gone = Vec::new();
    let mut after = String::new();
    loop {
        let page: (Option<String>, Option<String>) = sqlx::query_as(
            "SELECT group_concat(entra_id, char(10)), max(entra_id) FROM \
             (SELECT entra_id FROM source_users WHERE connection_id = ? AND entra_id > ? \
              ORDER BY entra_id LIMIT ?)",
        )
        .bind(connection_id)
        .bind(&after)
        .bind(ROWS_PER_READ)
        .fetch_one(&mut **transaction)
        .await
        .doing("replacing the source snapshot")?;
        let (Some(ids), Some(last)) = page else {
            return Ok(gone);
        };
        // Entra ids are GUIDs: no line break inside one.
        gone.extend(ids.split('\n').filter(|id| !read.contains(id)).map(str::to_owned));
        after = last;
    }
}

/// Snapshot objects keyed by their Entra id.
trait HasEntraId {
    fn entra_id(&self) -> &str;
}

impl HasEntraId for EntraUser {
    fn entra_id(&self) -> &str {
        &self.id
    }
}

impl HasEntraId for EntraGroup {
    fn entra_id(&self) -> &str {
        &self.id
    }
}

/// The kind, Entra id and directory id of an action, as the history indexes them. Department
/// actions name no Entra object (the department is in the action's detail); assigning a user to
/// one names the user.
pub(crate) fn action_key(action: &Action) -> (&'static str, Option<&str>, Option<i64>) {
    match action {
        Action::CreateUser { entra_id, .. } => ("create_user", Some(entra_id), None),
        Action::LinkUser {
            entra_id,
            directory_id,
            ..
        } => ("link_user", Some(entra_id), Some(*directory_id)),
        Action::UpdateUser {
            entra_id,
            directory_id,
            ..
        } => ("update_user", Some(entra_id), Some(*directory_id)),
        Action::DisableUser {
            entra_id,
            directory_id,
            ..
        } => ("disable_user", Some(entra_id), Some(*directory_id)),
        Action::SoftDeleteUser {
            entra_id,
            directory_id,
            ..
        } => ("soft_delete_user", Some(entra_id), Some(*directory_id)),
        Action::DeleteUser {
            entra_id,
            directory_id,
            ..
        } => ("delete_user", Some(entra_id), Some(*directory_id)),
        Action::PurgeUser {
            entra_id,
            directory_id,
        } => ("purge_user", Some(entra_id), Some(*directory_id)),
        Action::RestoreUser {
            entra_id,
            directory_id,
            ..
        } => ("restore_user", Some(entra_id), Some(*directory_id)),
        Action::CreateGroup { entra_id, .. } => ("create_group", Some(entra_id), None),
        Action::UpdateGroup {
            entra_id,
            directory_id,
            ..
        } => ("update_group", Some(entra_id), Some(*directory_id)),
        Action::DeleteGroup {
            entra_id,
            directory_id,
        } => ("delete_group", Some(entra_id), Some(*directory_id)),
        Action::AddMembership { user, .. } => ("add_membership", Some(user), None),
        Action::RemoveMembership { user, .. } => ("remove_membership", Some(user), None),
        Action::CreateDepartment { .. } => ("create_department", None, None),
        Action::SetDepartment { user, .. } => ("set_department", Some(user), None),
        Action::DeleteDepartment { directory_id, .. } => ("delete_department", None, Some(*directory_id)),
    }
}

/// Decodes values that hold one JSON document a line, as `group_concat(…, char(10))` over
/// `ROWS_PER_READ` rows gives them, each as it arrives: reading a large table so, rather than a
/// row at a time, spares the copy and the hand-over of every row from SQLite's thread.
pub(crate) async fn decode_lines<T: serde::de::DeserializeOwned>(
    mut chunks: impl futures_util::TryStream<Ok = String, Error = sqlx::Error> + Unpin,
    doing: &'static str,
    what: &'static str,
) -> Result<Vec<T>, StoreError> {
    use futures_util::TryStreamExt;
    let mut objects = Vec::new();
    while let Some(chunk) = chunks.try_next().await.doing(doing)? {
        for object in serde_json::Deserializer::from_str(&chunk).into_iter::<T>() {
            objects.push(object.map_err(|error| decode_error(what, error))?);
        }
    }
    Ok(objects)
}

pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|error| decode_error(what, error))
}

/// Stored JSON that does not decode as `what`.
fn decode_error(what: &'static str, error: serde_json::Error) -> StoreError {
    StoreError {
        doing: what,
        source: sqlx::Error::Decode(Box::new(error)),
    }
}

#[cfg(test)]
mod tests {
    use entra_sync_core::model::{Presence, UserProperty};

    use super::*;

    /// A store in a temporary folder with one connection, "contoso"; the folder lives as long
    /// as the first value.
    async fn store_with_connection() -> (tempfile::TempDir, Store, ConnectionState) {
        let data = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(data.path()).await.expect("the store opens");
        let state = store
            .connection_state("contoso", "Contoso", crate::clock::now())
            .await
            .expect("a connection");
        (data, store, state)
    }

    /// A background checkpoint copies the WAL's committed pages into the database file, and only
    /// one runs at a time.
    #[tokio::test]
    async fn a_background_checkpoint_copies_the_wal_into_the_database() {
        let data = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(data.path()).await.expect("the store opens");
        let database_bytes = || {
            std::fs::metadata(data.path().join("entra-sync.db"))
                .expect("the database file")
                .len()
        };
        // About 4 MB, under SQLite's own checkpoint threshold: it stays in the WAL.
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000) \
             INSERT INTO organizations (name, created_at) SELECT printf('%d%.1000c', i, 'x'), '' FROM n",
        )
        .execute(&store.pool)
        .await
        .expect("rows written");
        let before = database_bytes();
        let running = store
            .checkpoint_in_background()
            .expect("no checkpoint was running");
        assert!(
            store.checkpoint_in_background().is_none(),
            "a second checkpoint started"
        );
        running.await.expect("the checkpoint task ends");
        let after = database_bytes();
        assert!(
            after > before + 4_000_000,
            "database file {before} -> {after} bytes"
        );
        assert!(
            store.checkpoint_in_background().is_some(),
            "the next checkpoint could not start"
        );
    }

    /// Listing users looks each one's memberships, snapshot row and Microsoft data up by index:
    /// a scan of any of those tables per user makes the list quadratic in the directory's size.
    #[tokio::test]
    async fn listing_users_scans_no_table_per_user() {
        let data = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(data.path()).await.expect("the store opens");
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            users_query()
        )))
        .bind("contoso")
        .fetch_all(&store.pool)
        .await
        .expect("the query plan")
        .iter()
        .map(|step| step.get("detail"))
        .collect();
        // `c` is the connections table: a row per tenant, not per user.
        let scans: Vec<&String> = plan
            .iter()
            .filter(|step| step.starts_with("SCAN") && step.as_str() != "SCAN c")
            .collect();
        assert!(scans.is_empty(), "{plan:#?}");
    }

    /// The present users are counted from the index the stored JSON fills: users soft-deleted or
    /// deleted in Entra are not, whatever their values hold.
    #[tokio::test]
    async fn present_snapshot_users_are_counted_by_their_stored_presence() {
        let (_data, store, state) = store_with_connection().await;
        let user = |id: &str, presence: Presence| {
            let mut user = EntraUser::new(id).with(UserProperty::JobTitle, r#"says "presence":"present""#);
            user.presence = presence;
            user
        };
        let mut snapshot = SourceSnapshot::default();
        for user in [
            user("u-1", Presence::Present),
            user("u-2", Presence::Present),
            user("u-3", Presence::SoftDeleted),
            user("u-4", Presence::Deleted),
        ] {
            snapshot.users.insert(user.id.clone(), user);
        }
        save_whole_read(&store, state.id, &snapshot, &DeltaLinks::default()).await;
        let present = store.present_source_users(state.id).await.expect("a count");
        assert_eq!(present, 2);
    }

    /// Saves `snapshot` as a full run does: its users as they are read, then the commit.
    async fn save_whole_read(
        store: &Store,
        connection_id: i64,
        snapshot: &SourceSnapshot,
        links: &DeltaLinks,
    ) {
        let writer = SourceUsersWriter::start(store, connection_id);
        for user in snapshot.users.values() {
            writer.write(vec![user.clone()]);
        }
        writer.finish().await.expect("the users are stored");
        store
            .commit_source(
                connection_id,
                snapshot,
                SourceWrite::WholeRead(&IdList::of(snapshot.users.keys().map(String::as_str))),
                links,
                &RunMark::default(),
                crate::clock::now(),
            )
            .await
            .expect("the snapshot is saved");
    }

    /// A whole read reads the stored ids before it writes; another connection committing
    /// meanwhile (another tenant's run) makes it wait, never fail.
    #[tokio::test]
    async fn a_whole_read_commits_while_another_connection_writes() {
        let (_data, store, state) = store_with_connection().await;
        let snapshot = SourceSnapshot {
            users: (0..2 * ROWS_PER_READ)
                .map(|index| {
                    let user = EntraUser::new(format!("u-{index:05}"));
                    (user.id.clone(), user)
                })
                .collect(),
            groups: Default::default(),
        };
        save_whole_read(&store, state.id, &snapshot, &DeltaLinks::default()).await;
        let read = IdList::of(snapshot.users.keys().map(String::as_str));
        sqlx::query("CREATE TABLE scratch (at INTEGER)")
            .execute(&store.pool)
            .await
            .expect("a scratch table");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let other = tokio::spawn({
            let (pool, stop) = (store.pool.clone(), stop.clone());
            async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sqlx::query("INSERT INTO scratch (at) VALUES (1)")
                        .execute(&pool)
                        .await
                        .expect("the other connection writes");
                }
            }
        });
        for round in 0..10 {
            let committed = store
                .commit_source(
                    state.id,
                    &snapshot,
                    SourceWrite::WholeRead(&read),
                    &DeltaLinks::default(),
                    &RunMark::default(),
                    crate::clock::now(),
                )
                .await;
            assert!(committed.is_ok(), "round {round}: {committed:?}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        other.await.expect("the other writer stops");
    }

    /// A whole read replaces the stored snapshot: users and groups it did not read are gone,
    /// those it read hold what it read, and the delta links are its own.
    #[tokio::test]
    async fn a_whole_read_replaces_the_stored_snapshot() {
        let (_data, store, state) = store_with_connection().await;
        let snapshot = |users: &[(&str, &str)], groups: &[&str]| SourceSnapshot {
            users: users
                .iter()
                .map(|(id, title)| {
                    let user = EntraUser::new(*id).with(UserProperty::JobTitle, *title);
                    (user.id.clone(), user)
                })
                .collect(),
            groups: groups
                .iter()
                .map(|id| {
                    let group = EntraGroup {
                        id: (*id).to_owned(),
                        ..EntraGroup::default()
                    };
                    (group.id.clone(), group)
                })
                .collect(),
        };
        let links = |round: &str| DeltaLinks {
            users: Some(format!("users-{round}")),
            groups: Some(format!("groups-{round}")),
        };
        let first = snapshot(
            &[("u-1", "Clerk"), ("u-2", "Clerk"), ("u-3", "Clerk")],
            &["g-1", "g-2"],
        );
        save_whole_read(&store, state.id, &first, &links("1")).await;
        assert_eq!(store.load_snapshot(state.id).await.expect("the snapshot"), first);
        let second = snapshot(&[("u-2", "Manager"), ("u-4", "Clerk")], &["g-2"]);
        save_whole_read(&store, state.id, &second, &links("2")).await;
        assert_eq!(store.load_snapshot(state.id).await.expect("the snapshot"), second);
        let state = store
            .connection_state("contoso", "Contoso", crate::clock::now())
            .await
            .expect("the connection");
        assert_eq!(state.users_delta_link.as_deref(), Some("users-2"));
        assert_eq!(state.groups_delta_link.as_deref(), Some("groups-2"));
        // The stored ids are compared a page of `ROWS_PER_READ` at a time: users gone from the
        // first page, the last and one at a page's edge all go.
        let count = 2 * ROWS_PER_READ as usize + 1;
        let ids: Vec<String> = (0..count).map(|index| format!("u-{index:05}")).collect();
        let many: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "Clerk")).collect();
        save_whole_read(&store, state.id, &snapshot(&many, &[]), &links("3")).await;
        let edge = ROWS_PER_READ as usize;
        let fewer: Vec<(&str, &str)> = many
            .iter()
            .enumerate()
            .filter(|(index, _)| ![0, edge - 1, edge, count - 1].contains(index))
            .map(|(_, user)| *user)
            .collect();
        save_whole_read(&store, state.id, &snapshot(&fewer, &[]), &links("4")).await;
        assert_eq!(
            store.load_snapshot(state.id).await.expect("the snapshot"),
            snapshot(&fewer, &[])
        );
    }
}
