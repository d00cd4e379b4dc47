//! `entra-sync serve`: one process with a scheduler task per enabled connection, the JSON API and
//! the metrics. A connection runs one sync at a time, whoever asks; on SIGTERM or Ctrl-C the
//! schedules stop, running syncs finish, and the process exits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::api::{self, ApiState};
use crate::clock;
use crate::config::{Config, Connection, Schedule};
use crate::live::{LiveProgress, LiveRuns};
use crate::metrics::Metrics;
use crate::schedule::{jitter, jittered};
use crate::store::{Store, StoreError, Trigger};
use crate::sync::{self, ApproveError, RunOptions, RunSummary, SyncError};
use crate::ui;

/// Why `serve` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {listen} ([server] listen): {source}")]
    Listen { listen: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the HTTP server stopped: {0}")]
    Server(std::io::Error),
}

/// Why a run was not started. A caller sees these as answers, not failures.
#[derive(Debug, thiserror::Error)]
pub enum RunRefused {
    #[error("no connection named {0:?}")]
    UnknownConnection(String),
    #[error("connection {0:?} is disabled in the config; enable it to sync")]
    Disabled(String),
    /// Refused rather than queued: the running sync reads Entra's changes up to its end, so a
    /// second run right after it would find next to nothing.
    #[error("connection {0:?} is running a sync; ask again when it has finished")]
    InProgress(String),
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

/// Starts runs, one at a time per connection, and counts them in the metrics.
pub struct Runner {
    store: Store,
    connections: BTreeMap<String, ConnectionSlot>,
    metrics: Arc<Metrics>,
    /// The progress of the runs going on, for the admin UI.
    live: LiveRuns,
}

struct ConnectionSlot {
    connection: Arc<Connection>,
    /// One permit: the run in progress holds it. A semaphore rather than a mutex because its
    /// permits can be counted without taking one, so asking whether a run is going never
    /// refuses a run that starts at that moment.
    running: Arc<Semaphore>,
}

/// The right to run one sync of a connection; the connection is free again when it is dropped.
pub struct RunPermit {
    connection: Arc<Connection>,
    _running: OwnedSemaphorePermit,
}

impl Runner {
    /// A runner for the config's connections.
    pub fn new(store: Store, config: &Config) -> Runner {
        let connections = config
            .connections
            .iter()
            .map(|connection| {
                let slot = ConnectionSlot {
                    connection: Arc::new(connection.clone()),
                    running: Arc::new(Semaphore::new(1)),
                };
                (connection.name.clone(), slot)
            })
            .collect();
        Runner {
            store,
            connections,
            metrics: Arc::new(Metrics::default()),
            live: LiveRuns::default(),
        }
    }

    /// Takes the connection's run slot, or says why not.
    pub fn try_begin(&self, name: &str) -> Result<RunPermit, RunRefused> {
        let slot = self
            .connections
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
        self.connections
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
            tracing::info!(
                connection = %connection.name,
                run_id = summary.run_id,
                trigger = ?options.trigger,
                mode = summary.mode,
                status = summary.status,
                duration_ms = summary.duration_ms,
                graph_requests = summary.graph_requests,
                error = summary.error.as_deref().unwrap_or(""),
                "run finished"
            );
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
            let summary = sync::approve(&store, run_id).await?;
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

    /// The connections as the config has them.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.connections.values().map(|slot| slot.connection.as_ref())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Waits until no sync is running.
    async fn wait_idle(&self) {
        for slot in self.connections.values() {
            // The semaphore is never closed, so acquiring fails only if it were.
            drop(slot.running.acquire().await);
        }
    }
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
    let mut tasks = vec![tokio::spawn(keep_history(
        store.clone(),
        config.history_days,
        stopped.clone(),
    ))];
    for connection in config.connections.iter().filter(|c| c.enabled) {
        let shared = config
            .connections
            .iter()
            .filter(|other| other.enabled && other.schedule == connection.schedule)
            .count()
            > 1;
        tasks.push(tokio::spawn(schedule_loop(
            runner.clone(),
            connection.name.clone(),
            connection.schedule.clone(),
            connection.full_sync_every,
            shared,
            stopped.clone(),
        )));
    }
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

/// Deletes runs older than the history's retention, at the start and then once a day.
async fn keep_history(store: Store, days: u32, mut stopped: watch::Receiver<bool>) {
    loop {
        let cutoff = clock::now() - TimeDelta::days(i64::from(days));
        match store.delete_runs_before(cutoff).await {
            Ok(0) => {}
            Ok(runs) => tracing::info!(runs, days, "deleted runs older than the history's retention"),
            Err(error) => tracing::warn!(%error, "cannot delete old runs; the next day tries again"),
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(Duration::from_secs(24 * 3600)) => {}
        }
    }
}

/// One connection's schedule: sleep until the next run is due, run it, repeat until told to stop.
async fn schedule_loop(
    runner: Arc<Runner>,
    name: String,
    schedule: Schedule,
    full_sync_every: Duration,
    shared: bool,
    mut stopped: watch::Receiver<bool>,
) {
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
        let Some(at) = due else {
            tracing::warn!(connection = %name, %schedule, "the schedule has no next time; not scheduling");
            return;
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
                    Ok(last_full) => full_due(last_full, full_sync_every, clock::now()),
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

/// Whether a scheduled run should read everything (`full_sync_every`). A delta run that brings
/// no change does not look at the directory, so this is what corrects changes made there behind
/// the sync's back. A connection that never had a full round gets one from `sync::run` anyway:
/// it has no delta links.
fn full_due(last_full: Option<DateTime<Utc>>, every: Duration, now: DateTime<Utc>) -> bool {
    last_full.is_some_and(|last| (now - last).to_std().is_ok_and(|age| age >= every))
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
                full_due(last_full.map(at), day, now),
                full,
                "last full {last_full:?}"
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
