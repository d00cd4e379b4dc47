//! `entra-sync serve`: one process with a scheduler task per enabled connection, the welcome-email
//! sender, the JSON API and the metrics. The connections are the config file's and those made
//! through the API, which the scheduler follows as they are made, edited and deleted. A
//! connection runs one sync at a time, whoever asks; on SIGTERM or Ctrl-C the schedules stop,
//! running syncs finish, and the process exits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::clock;
use crate::config::{Config, Connection, Schedule, SecretSource};
use crate::connections::{self, StoredConnection};
use crate::live::{LiveProgress, LiveRuns};
use crate::metrics::Metrics;
use crate::schedule::{jitter, jittered};
use crate::secrets::{SecretKey, SecretKeyError};
use crate::store::{Store, StoreError, Trigger};
use crate::sync::{self, ApproveError, RunOptions, RunSummary, SyncError};
use crate::targeted::{self, OneMode, Subject};
use crate::ui;
use crate::{changes, mail};

/// Why `serve` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {listen} ([server] listen): {source}")]
    Listen { listen: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    SecretKey(#[from] SecretKeyError),
    #[error(
        "connection {0:?} is in the config file and was also made through the API: rename or remove the config file's entry"
    )]
    DuplicateConnection(String),
    #[error("the connection {name:?} made through the API is no longer valid: {message}; fix it with PATCH")]
    InvalidStoredConnection { name: String, message: String },
    #[error("the HTTP server stopped: {0}")]
    Server(std::io::Error),
}

/// Why a run was not started. A caller sees these as answers, not failures.
#[derive(Debug, thiserror::Error)]
pub enum RunRefused {
    #[error("no connection named {0:?}")]
    UnknownConnection(String),
    #[error("connection {0:?} is disabled; enable it to sync")]
    Disabled(String),
    /// Refused rather than queued: the running sync reads Entra's changes up to its end, so a
    /// second run right after it would find next to nothing.
    #[error("connection {0:?} is running a sync; ask again when it has finished")]
    InProgress(String),
}

/// Why a connection could not be made, edited or deleted through the API.
#[derive(Debug, thiserror::Error)]
pub enum EditRefused {
    #[error("no connection named {0:?}")]
    UnknownConnection(String),
    #[error(
        "connection {0:?} comes from the config file and is read-only through the API: edit the config file and restart"
    )]
    ReadOnly(String),
    #[error("a connection named {0:?} exists; choose another name")]
    Exists(String),
    #[error(
        "organization {organization:?} belongs to connection {connection:?}: each tenant gets its own organization; set another `organization`"
    )]
    OrganizationTaken {
        organization: String,
        connection: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("connection {0:?} is running a sync; delete it when the run has finished")]
    InProgress(String),
    #[error(transparent)]
    SecretKey(#[from] SecretKeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a started run or approval has no summary.
#[derive(Debug, thiserror::Error)]
pub enum RunFailed {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Approve(#[from] ApproveError),
    #[error("the run stopped unexpectedly: {0}")]
    Aborted(String),
}

/// Where a connection is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The config file: read-only through the API.
    Config,
    /// Made through the API and kept in the database.
    Api,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Api => "api",
        }
    }
}

/// Starts runs, one at a time per connection, and counts them in the metrics. It holds the
/// connections, the config file's and those made through the API, and tells the scheduler
/// when they change.
pub struct Runner {
    store: Store,
    data_dir: PathBuf,
    connections: RwLock<BTreeMap<String, ConnectionSlot>>,
    /// Bumped whenever a connection is made, edited or deleted; the scheduler follows it.
    changed: watch::Sender<u64>,
    /// One edit at a time, so that two requests cannot take the same name or organization.
    editing: tokio::sync::Mutex<()>,
    /// Loaded on first need: at the start of `serve`, or when the API stores a secret.
    secret_key: tokio::sync::OnceCell<SecretKey>,
    metrics: Arc<Metrics>,
    /// The progress of the runs going on, for the admin UI.
    live: LiveRuns,
}

#[derive(Clone)]
struct ConnectionSlot {
    connection: Arc<Connection>,
    origin: Origin,
    /// One permit: the run in progress holds it. A semaphore rather than a mutex because its
    /// permits can be counted without taking one, so asking whether a run is going never
    /// refuses a run that starts at that moment. An edit keeps it, so a run going on during an
    /// edit still holds the connection.
    running: Arc<Semaphore>,
}

/// The right to run one sync of a connection; the connection is free again when it is dropped.
pub struct RunPermit {
    connection: Arc<Connection>,
    _running: OwnedSemaphorePermit,
}

impl RunPermit {
    /// The connection as it was when the permit was taken.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl Runner {
    /// A runner for the config's connections; `load_stored` adds those made through the API.
    pub fn new(store: Store, config: &Config) -> Runner {
        let connections = config
            .connections
            .iter()
            .map(|connection| {
                let slot = ConnectionSlot {
                    connection: Arc::new(connection.clone()),
                    origin: Origin::Config,
                    running: Arc::new(Semaphore::new(1)),
                };
                (connection.name.clone(), slot)
            })
            .collect();
        Runner {
            store,
            data_dir: config.data_dir.clone(),
            connections: RwLock::new(connections),
            changed: watch::Sender::new(0),
            editing: tokio::sync::Mutex::new(()),
            secret_key: tokio::sync::OnceCell::new(),
            metrics: Arc::new(Metrics::default()),
            live: LiveRuns::default(),
        }
    }

    fn slots(&self) -> RwLockReadGuard<'_, BTreeMap<String, ConnectionSlot>> {
        // A panic while holding the lock leaves the map whole: every write is one insert or remove.
        self.connections.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn slots_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<String, ConnectionSlot>> {
        self.connections.write().unwrap_or_else(PoisonError::into_inner)
    }

    async fn secret_key(&self) -> Result<&SecretKey, SecretKeyError> {
        self.secret_key
            .get_or_try_init(|| async { SecretKey::load(&self.data_dir) })
            .await
    }

    /// Loads the key (creating the key file on first start) and the connections made through
    /// the API, opening their secrets.
    pub async fn load_stored(&self) -> Result<(), ServeError> {
        let key = self.secret_key().await?;
        let stored = self.store.api_connections().await?;
        let mut slots = Vec::new();
        for connection in stored {
            if self.slots().contains_key(&connection.name) {
                return Err(ServeError::DuplicateConnection(connection.name));
            }
            let secret = key.open(&connection.name, &connection.sealed_secret)?;
            let built = connections::build(&connection.definition, &secret).map_err(|message| {
                ServeError::InvalidStoredConnection {
                    name: connection.name.clone(),
                    message,
                }
            })?;
            slots.push(built);
        }
        let mut map = self.slots_mut();
        for connection in slots {
            let slot = ConnectionSlot {
                connection: Arc::new(connection),
                origin: Origin::Api,
                running: Arc::new(Semaphore::new(1)),
            };
            map.insert(slot.connection.name.clone(), slot);
        }
        drop(map);
        self.changed.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Makes a connection from an API body (the config file's keys, with `client_secret`),
    /// stores it with its secret sealed, and schedules it.
    pub async fn create(&self, body: serde_json::Value) -> Result<Arc<Connection>, EditRefused> {
        let _editing = self.editing.lock().await;
        let (definition, secret) = connections::take_secret(body).map_err(EditRefused::Invalid)?;
        let name = match definition.get("name") {
            Some(serde_json::Value::String(name)) => name.clone(),
            _ => return Err(EditRefused::Invalid("name is required, a string".into())),
        };
        connections::check_name(&name).map_err(EditRefused::Invalid)?;
        let secret = secret.ok_or_else(|| {
            EditRefused::Invalid(
                "client_secret is required: the client secret's Value from Certificates & secrets".into(),
            )
        })?;
        let connection = connections::build(&definition, &secret).map_err(EditRefused::Invalid)?;
        if self.slots().contains_key(&name) {
            return Err(EditRefused::Exists(name));
        }
        self.check_organization(&connection)?;
        let sealed_secret = self.secret_key().await?.seal(&name, &secret)?;
        let stored = StoredConnection {
            name,
            definition,
            sealed_secret,
        };
        self.install(stored, connection, Arc::new(Semaphore::new(1)))
            .await
    }

    /// Saves a connection made or edited through the API and puts it in its slot, keeping the
    /// slot's `running` permit so that a run going on still holds the connection.
    async fn install(
        &self,
        stored: StoredConnection,
        connection: Connection,
        running: Arc<Semaphore>,
    ) -> Result<Arc<Connection>, EditRefused> {
        self.store
            .save_api_connection(&stored, &connection.organization, clock::now())
            .await?;
        let connection = Arc::new(connection);
        self.slots_mut().insert(
            stored.name,
            ConnectionSlot {
                connection: connection.clone(),
                origin: Origin::Api,
                running,
            },
        );
        self.changed.send_modify(|generation| *generation += 1);
        Ok(connection)
    }

    /// Edits a connection made through the API with a JSON merge patch of its definition; a
    /// `client_secret` in the patch replaces the secret. A run going on finishes with the
    /// connection as it was.
    pub async fn update(&self, name: &str, patch: serde_json::Value) -> Result<Arc<Connection>, EditRefused> {
        let _editing = self.editing.lock().await;
        let slot = self.editable(name)?;
        let (patch, new_secret) = connections::take_secret(patch).map_err(EditRefused::Invalid)?;
        if patch.get("name").is_some_and(|new| new.as_str() != Some(name)) {
            return Err(EditRefused::Invalid(
                "a connection cannot be renamed: make a new one and delete this one".into(),
            ));
        }
        let stored = self
            .store
            .api_connections()
            .await?
            .into_iter()
            .find(|stored| stored.name == name)
            .ok_or_else(|| EditRefused::UnknownConnection(name.to_owned()))?;
        let mut definition = stored.definition;
        connections::merge_patch(&mut definition, patch);
        let secret = match (&new_secret, &slot.connection.secret) {
            (Some(secret), _) => secret.clone(),
            (None, SecretSource::Inline(secret)) => secret.clone(),
            (None, _) => self.secret_key().await?.open(name, &stored.sealed_secret)?,
        };
        let connection = connections::build(&definition, &secret).map_err(EditRefused::Invalid)?;
        // The stored secret goes only where it went when it was given: whoever moves the
        // endpoints must know the secret, or the write-only secret could be sent to a host of
        // the caller's choosing.
        let moved = connection.authority_url != slot.connection.authority_url
            || connection.graph_url != slot.connection.graph_url;
        if moved && new_secret.is_none() {
            return Err(EditRefused::Invalid(
                "authority_url and graph_url change only with the client_secret given again in the same PATCH".into(),
            ));
        }
        self.check_organization(&connection)?;
        let sealed_secret = match new_secret {
            Some(secret) => self.secret_key().await?.seal(name, &secret)?,
            None => stored.sealed_secret,
        };
        let stored = StoredConnection {
            name: name.to_owned(),
            definition,
            sealed_secret,
        };
        self.install(stored, connection, slot.running).await
    }

    /// Deletes a connection made through the API, unless a run of it is going on. Its history
    /// and directory users stay.
    pub async fn delete(&self, name: &str) -> Result<(), EditRefused> {
        let _editing = self.editing.lock().await;
        let slot = self.editable(name)?;
        let _running = slot
            .running
            .clone()
            .try_acquire_owned()
            .map_err(|_| EditRefused::InProgress(name.to_owned()))?;
        self.store.delete_api_connection(name).await?;
        self.slots_mut().remove(name);
        self.changed.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// The slot of a connection the API may edit.
    fn editable(&self, name: &str) -> Result<ConnectionSlot, EditRefused> {
        match self.slots().get(name) {
            None => Err(EditRefused::UnknownConnection(name.to_owned())),
            Some(slot) if slot.origin == Origin::Config => Err(EditRefused::ReadOnly(name.to_owned())),
            Some(slot) => Ok(slot.clone()),
        }
    }

    /// Refuses an organization another connection syncs into: tenants stay apart.
    fn check_organization(&self, connection: &Connection) -> Result<(), EditRefused> {
        let slots = self.slots();
        let taken = slots.values().find(|slot| {
            slot.connection.name != connection.name && slot.connection.organization == connection.organization
        });
        match taken {
            Some(slot) => Err(EditRefused::OrganizationTaken {
                organization: connection.organization.clone(),
                connection: slot.connection.name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Takes the connection's run slot, or says why not.
    pub fn try_begin(&self, name: &str) -> Result<RunPermit, RunRefused> {
        let slots = self.slots();
        let slot = slots
            .get(name)
            .ok_or_else(|| RunRefused::UnknownConnection(name.to_owned()))?;
        if !slot.connection.enabled {
            return Err(RunRefused::Disabled(name.to_owned()));
        }
        let running = slot
            .running
            .clone()
            .try_acquire_owned()
            .map_err(|_| RunRefused::InProgress(name.to_owned()))?;
        Ok(RunPermit {
            connection: slot.connection.clone(),
            _running: running,
        })
    }

    /// Whether a sync of the connection is running.
    pub fn is_running(&self, name: &str) -> bool {
        self.slots()
            .get(name)
            .is_some_and(|slot| slot.running.available_permits() == 0)
    }

    /// Runs one sync. The run is a task of its own, so it finishes and is recorded even when the
    /// caller goes away (an HTTP client that hangs up, a scheduler told to stop).
    pub async fn run(&self, permit: RunPermit, options: RunOptions) -> Result<RunSummary, RunFailed> {
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let live = self.live.clone();
        let task = tokio::spawn(async move {
            let connection = &permit.connection;
            live.begin(&connection.name, clock::now());
            let result = sync::run(&store, connection, options, &|event| {
                live.report(&connection.name, event)
            })
            .await;
            live.end(&connection.name);
            let summary = result?;
            metrics.record_run(&summary, clock::now());
            log_run(connection, options.trigger, &summary);
            drop(permit);
            Ok::<_, SyncError>(summary)
        });
        match task.await {
            Ok(result) => Ok(result?),
            Err(error) => Err(RunFailed::Aborted(error.to_string())),
        }
    }

    /// Runs a one-user or one-group sync, holding the connection's slot like a run, as a task
    /// of its own for the same reason.
    pub async fn run_one(
        &self,
        permit: RunPermit,
        subject: Subject,
        mode: OneMode,
    ) -> Result<RunSummary, RunFailed> {
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let task = tokio::spawn(async move {
            let connection = &permit.connection;
            let summary = targeted::run_one(&store, connection, &subject, mode).await?;
            metrics.record_one_object_run(&summary);
            log_run(connection, subject.trigger(), &summary);
            drop(permit);
            Ok::<_, SyncError>(summary)
        });
        match task.await {
            Ok(result) => Ok(result?),
            Err(error) => Err(RunFailed::Aborted(error.to_string())),
        }
    }

    /// Applies the plan a guard stopped in run `run_id`, holding the connection's slot like a
    /// run, as a task of its own for the same reason.
    pub async fn approve(&self, permit: RunPermit, run_id: i64) -> Result<RunSummary, RunFailed> {
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let task = tokio::spawn(async move {
            let summary =
                sync::approve(&store, run_id, std::slice::from_ref(permit.connection.as_ref())).await?;
            metrics.record_approval(&summary);
            tracing::info!(
                connection = %permit.connection.name,
                run_id,
                failed_actions = summary.failed_actions,
                "plan approved and applied"
            );
            drop(permit);
            Ok::<_, ApproveError>(summary)
        });
        match task.await {
            Ok(result) => Ok(result?),
            Err(error) => Err(RunFailed::Aborted(error.to_string())),
        }
    }

    /// The progress of the connection's run, if one is going; `expected_users` is what the last
    /// good read found, for an estimate while reading.
    pub fn progress(&self, name: &str, expected_users: Option<u64>) -> Option<LiveProgress> {
        self.live.progress(name, expected_users)
    }

    /// The connections, by name: the config file's and those made through the API.
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        self.slots()
            .values()
            .map(|slot| slot.connection.clone())
            .collect()
    }

    /// One connection and where it is defined.
    pub fn connection(&self, name: &str) -> Option<(Arc<Connection>, Origin)> {
        self.slots()
            .get(name)
            .map(|slot| (slot.connection.clone(), slot.origin))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What the scheduler runs: per enabled connection, its schedule and whether another
    /// enabled connection shares it (and so jitter applies).
    fn schedules(&self) -> BTreeMap<String, ScheduleKey> {
        let connections = self.connections();
        let enabled: Vec<&Connection> = connections
            .iter()
            .map(|connection| connection.as_ref())
            .filter(|connection| connection.enabled)
            .collect();
        enabled
            .iter()
            .map(|connection| {
                let shared = enabled
                    .iter()
                    .filter(|other| other.schedule == connection.schedule)
                    .count()
                    > 1;
                let key = ScheduleKey {
                    schedule: connection.schedule.clone(),
                    full_sync_every: connection.full_sync_every,
                    shared,
                };
                (connection.name.clone(), key)
            })
            .collect()
    }

    /// Waits until no sync is running.
    async fn wait_idle(&self) {
        let semaphores: Vec<Arc<Semaphore>> =
            self.slots().values().map(|slot| slot.running.clone()).collect();
        for running in semaphores {
            // The semaphore is never closed, so acquiring fails only if it were.
            drop(running.acquire().await);
        }
    }
}

/// Logs the end of a run.
fn log_run(connection: &Connection, trigger: Trigger, summary: &RunSummary) {
    tracing::info!(
        connection = %connection.name,
        run_id = summary.run_id,
        trigger = ?trigger,
        mode = summary.mode,
        status = summary.status,
        duration_ms = summary.duration_ms,
        graph_requests = summary.graph_requests,
        error = summary.error.as_deref().unwrap_or(""),
        "run finished"
    );
}

/// What a connection's schedule loop runs by; a change restarts the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScheduleKey {
    schedule: Schedule,
    full_sync_every: Duration,
    shared: bool,
}

/// Runs the service until `shutdown` completes, then lets running syncs finish. `listening` is
/// told the bound address (the config may ask for port 0).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let store = Store::open(&config.data_dir).await?;
    let runner = Arc::new(Runner::new(store.clone(), &config));
    runner.load_stored().await?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            listen: config.listen.clone(),
            source,
        })?;
    let address = listener.local_addr().map_err(|source| ServeError::Listen {
        listen: config.listen.clone(),
        source,
    })?;
    let (stop, stopped) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(keep_history(store.clone(), config.history_days, stopped.clone())),
        tokio::spawn(scheduler(runner.clone(), stopped.clone())),
        tokio::spawn(send_welcome_emails(
            store.clone(),
            runner.clone(),
            stopped.clone(),
        )),
    ];
    let app = api::router(ApiState {
        store: store.clone(),
        runner: runner.clone(),
    })
    .merge(ui::router(store, runner.clone()));
    let mut server_stopped = stopped.clone();
    let mut server = tokio::spawn(
        // With the peer's address: the sign-in page limits failed attempts per address.
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                // An error means the sender is gone, which also means stop.
                let _ = server_stopped.wait_for(|stop| *stop).await;
            })
            .into_future(),
    );
    tracing::info!(%address, "serving");
    listening(address);
    let server_result = tokio::select! {
        () = shutdown => None,
        result = &mut server => Some(result),
    };
    tracing::info!("stopping: no new runs; running syncs finish first");
    stop.send_replace(true);
    for task in tasks {
        // A task that panicked has nothing left to stop.
        let _ = task.await;
    }
    let server_result = match server_result {
        Some(result) => result,
        None => server.await,
    };
    runner.wait_idle().await;
    tracing::info!("stopped");
    match server_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(ServeError::Server(error)),
        Err(error) => Err(ServeError::Server(std::io::Error::other(error.to_string()))),
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Deletes runs and changes older than the history's retention, and forgets old emails' personal
/// data, at the start and then once a day.
async fn keep_history(store: Store, days: u32, mut stopped: watch::Receiver<bool>) {
    loop {
        let cutoff = clock::now() - TimeDelta::days(i64::from(days));
        // The change feed and sent emails hold the same personal data as the actions: same days.
        // Changes first: a run stays while the feed takes details from its actions.
        if let Err(error) = changes::delete_before(&store, cutoff).await {
            tracing::warn!(%error, "cannot delete old changes; the next day tries again");
        }
        match store.delete_runs_before(cutoff).await {
            Ok(0) => {}
            Ok(runs) => tracing::info!(runs, days, "deleted runs older than the history's retention"),
            Err(error) => tracing::warn!(%error, "cannot delete old runs; the next day tries again"),
        }
        if let Err(error) = mail::forget_before(&store, cutoff).await {
            tracing::warn!(%error, "cannot forget old welcome emails; the next day tries again");
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(Duration::from_secs(24 * 3600)) => {}
        }
    }
}

/// Keeps one schedule loop per enabled connection, following the runner's connections: a loop
/// starts for a connection made or enabled, restarts when its schedule changes, and stops when
/// it is disabled or deleted. On stop, every loop stops and is waited for.
async fn scheduler(runner: Arc<Runner>, mut stopped: watch::Receiver<bool>) {
    let mut changes = runner.changed.subscribe();
    let mut loops: BTreeMap<String, (ScheduleKey, watch::Sender<bool>, JoinHandle<()>)> = BTreeMap::new();
    loop {
        changes.mark_unchanged();
        let wanted = runner.schedules();
        let (keep, retire): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut loops)
            .into_iter()
            .partition(|(name, (key, _, _))| wanted.get(name) == Some(key));
        loops = keep;
        // A retired loop stops at its next wait; a run it started goes on as its own task.
        for (_, (_, stop, _)) in retire {
            stop.send_replace(true);
        }
        for (name, key) in wanted {
            if loops.contains_key(&name) {
                continue;
            }
            let (stop, stop_loop) = watch::channel(false);
            let task = tokio::spawn(schedule_loop(
                runner.clone(),
                name.clone(),
                key.clone(),
                stop_loop,
            ));
            loops.insert(name, (key, stop, task));
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
    for (_, (_, stop, task)) in loops {
        stop.send_replace(true);
        // A task that panicked has nothing left to stop.
        let _ = task.await;
    }
}

/// How long before Graph's delta links expire (seven days for directory objects, GRAPH.md §3)
/// the scheduler reads everything instead: a planned full round is a healthy read, whereas an
/// expired link is a delta reset, after which the guards hold back every removal.
const DELTA_LINK_REFRESH: TimeDelta = TimeDelta::days(6);

/// How often `serve` looks for welcome emails that fall due.
const EMAIL_POLL: Duration = Duration::from_secs(2);

/// Sends welcome emails as they fall due until told to stop, beginning with those an earlier
/// process left unsent. A pass in progress finishes before the process stops. Each pass takes the
/// runner's connections as they are then, API-made ones included.
async fn send_welcome_emails(store: Store, runner: Arc<Runner>, mut stopped: watch::Receiver<bool>) {
    loop {
        let connections: Vec<Connection> = runner
            .connections()
            .iter()
            .map(|connection| Connection::clone(connection))
            .collect();
        match mail::deliver_due(&store, &connections, clock::now()).await {
            Ok(delivery) if delivery.is_empty() => {}
            Ok(delivery) => tracing::info!(
                sent = delivery.sent,
                retrying = delivery.retrying,
                failed = delivery.failed,
                "welcome emails delivered"
            ),
            Err(error) => tracing::warn!(%error, "cannot send welcome emails; trying again shortly"),
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(EMAIL_POLL) => {}
        }
    }
}

/// One connection's schedule: sleep until the next run is due, run it, repeat until told to stop.
async fn schedule_loop(
    runner: Arc<Runner>,
    name: String,
    key: ScheduleKey,
    mut stopped: watch::Receiver<bool>,
) {
    let ScheduleKey {
        schedule,
        full_sync_every,
        shared,
    } = key;
    let now = clock::now();
    let jitter = match schedule.period_after(now) {
        Some(period) if shared => jitter(&name, period),
        _ => Duration::ZERO,
    };
    let last_success = match runner.store.last_success(&name).await {
        Ok(last) => last,
        Err(error) => {
            tracing::warn!(connection = %name, %error, "cannot read the last run; syncing now");
            None
        }
    };
    let mut due = first_due(&schedule, jitter, last_success, now);
    loop {
        let links_at = runner.store.delta_links_at(&name).await.unwrap_or_else(|error| {
            tracing::warn!(connection = %name, %error, "cannot read the delta links' age");
            None
        });
        // However far the schedule's next tick, run before the delta links expire. Once that
        // time has passed (a run failed, or the connection was disabled), the next tick runs
        // full instead, so a failing run is not retried at once, again and again.
        let refresh = links_at
            .map(|issued| issued + DELTA_LINK_REFRESH)
            .filter(|refresh| *refresh > clock::now());
        let at = match (due, refresh) {
            (Some(due), Some(refresh)) => due.min(refresh),
            (due, refresh) => match due.or(refresh) {
                Some(at) => at,
                None => {
                    tracing::warn!(connection = %name, %schedule, "the schedule has no next time; not scheduling");
                    return;
                }
            },
        };
        tracing::debug!(connection = %name, due = %at, "next scheduled run");
        let wait = (at - clock::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(wait) => {}
        }
        match runner.try_begin(&name) {
            Ok(permit) => {
                let full = match runner.store.last_full_at(&name).await {
                    Ok(last_full) => full_due(last_full, full_sync_every, links_at, clock::now()),
                    Err(error) => {
                        tracing::warn!(connection = %name, %error, "cannot read the last full run; running delta");
                        false
                    }
                };
                let options = RunOptions {
                    full,
                    dry_run: false,
                    trigger: Trigger::Scheduled,
                };
                if let Err(error) = runner.run(permit, options).await {
                    tracing::error!(connection = %name, %error, "scheduled run failed to start");
                }
            }
            Err(refused) => tracing::info!(connection = %name, %refused, "scheduled run skipped"),
        }
        // From the end of the run: ticks a long run overlapped are skipped, not run back to back.
        due = schedule
            .next_after(clock::now())
            .map(|next| jittered(next, jitter));
    }
}

/// When a connection's first run after a start is due: at once when a scheduled run was missed
/// since its last successful run (or it never had one), else at the next tick.
fn first_due(
    schedule: &Schedule,
    jitter: Duration,
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let missed = match last_success {
        None => true,
        Some(last) => schedule.next_after(last).is_some_and(|next| next <= now),
    };
    if missed {
        Some(now)
    } else {
        schedule.next_after(now).map(|next| jittered(next, jitter))
    }
}

/// Whether a scheduled run should read everything: `full_sync_every` has passed since the last
/// full round, or the delta links are about to expire (`DELTA_LINK_REFRESH`). A delta run that
/// brings no change does not look at the directory, so this is what corrects changes made there
/// behind the sync's back. A connection that never had a full round gets one from `sync::run`
/// anyway: it has no delta links.
fn full_due(
    last_full: Option<DateTime<Utc>>,
    every: Duration,
    links_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    let links_expiring = links_at.is_some_and(|issued| now - issued >= DELTA_LINK_REFRESH);
    links_expiring || last_full.is_some_and(|last| (now - last).to_std().is_ok_and(|age| age >= every))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|error| panic!("{text}: {error}"))
            .with_timezone(&Utc)
    }

    #[test]
    fn a_full_round_every_full_sync_every() {
        let now = at("2026-11-22T08:47:00Z");
        for (last_full, full) in [
            (None, false),
            (Some("2026-11-22T02:00:00Z"), false),
            (Some("2026-11-21T08:47:01Z"), false),
            (Some("2026-11-21T08:47:00Z"), true),
            (Some("2026-11-14T08:00:00Z"), true),
        ] {
            let day = Duration::from_secs(24 * 3600);
            assert_eq!(
                full_due(last_full.map(at), day, None, now),
                full,
                "last full {last_full:?}"
            );
        }
    }

    #[test]
    fn a_full_round_before_the_delta_links_expire() {
        let now = at("2026-11-22T08:47:00Z");
        let monthly = Duration::from_secs(30 * 86_400);
        let last_full = Some(at("2026-11-10T00:00:00Z"));
        for (links_at, full) in [
            (None, false),
            (Some("2026-11-21T08:47:00Z"), false),
            (Some("2026-11-16T08:47:01Z"), false),
            (Some("2026-11-16T08:47:00Z"), true),
            (Some("2026-11-01T00:00:00Z"), true),
        ] {
            assert_eq!(
                full_due(last_full, monthly, links_at.map(at), now),
                full,
                "links issued {links_at:?}"
            );
        }
    }

    #[test]
    fn a_restart_runs_at_once_only_after_a_missed_run() {
        let hourly = Schedule::Every {
            seconds: 3600,
            start_at_minutes: None,
        };
        let now = at("2026-11-22T08:47:00Z");
        let jitter = Duration::from_secs(7);
        for (last_success, expected) in [
            (None, "2026-11-22T08:47:00Z"),
            (Some("2026-11-22T08:00:05Z"), "2026-11-22T09:00:07Z"),
            (Some("2026-11-22T07:59:00Z"), "2026-11-22T08:47:00Z"),
            (Some("2026-11-21T08:00:00Z"), "2026-11-22T08:47:00Z"),
        ] {
            assert_eq!(
                first_due(&hourly, jitter, last_success.map(at), now),
                Some(at(expected)),
                "last success {last_success:?}"
            );
        }
    }
}
