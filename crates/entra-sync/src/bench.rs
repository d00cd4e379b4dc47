//! `entra-sync bench`: measures the performance budget of BRIEF.md on this machine. The emulator
//! runs as a child process (so the sync's peak memory is this process's own), and the sync runs
//! in-process: a full initial sync, a delta run with no change, a delta run after 1 % of users
//! changed, and a fetch-only pass that pages through the same data with the same client.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::config::Config;
use crate::graph::DeltaStart;
use crate::store::{Store, Trigger};
use crate::sync::{self, RunOptions, RunSummary};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub users: usize,
    pub groups: usize,
    pub latency_ms: u64,
    pub throttle: bool,
}

/// The measurements, as `bench --json` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub users: usize,
    pub groups: usize,
    pub latency_ms: u64,
    pub full_sync_ms: u64,
    pub delta_noop_ms: u64,
    pub delta_1pct_ms: u64,
    pub fetch_only_ms: u64,
    pub graph_requests_full: u64,
    /// Requests a full read needs at the emulator's page size: the token and every page.
    pub min_pages: u64,
    pub delta_noop_requests: u64,
    pub users_created: usize,
    pub users_updated_1pct: usize,
    /// The sync process's peak resident memory (VmHWM).
    pub peak_rss_mb: u64,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot start the emulator child process: {0}")]
    Emulator(String),
    #[error("benchmark I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Sync(#[from] sync::SyncError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Graph(#[from] crate::graph::Error),
    #[error("a benchmark run did not succeed: {0}")]
    RunFailed(String),
    #[error("the emulator's control API failed: {0}")]
    Control(String),
}

/// Runs the benchmark once.
pub async fn run(options: &BenchOptions) -> Result<BenchReport, BenchError> {
    let executable = std::env::current_exe()?;
    let mut command = tokio::process::Command::new(executable);
    command
        .args(["emulator", "--listen", "127.0.0.1:0", "--users"])
        .arg(options.users.to_string())
        .arg("--groups")
        .arg(options.groups.to_string())
        .arg("--latency-ms")
        .arg(options.latency_ms.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    if options.throttle {
        command.arg("--throttle");
    }
    let mut emulator = command.spawn()?;
    let stdout = emulator
        .stdout
        .take()
        .ok_or_else(|| BenchError::Emulator("no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut config_lines = String::new();
    let mut url = None;
    // The emulator prints a comment with its address, then the config lines.
    while let Some(line) = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
        .await
        .map_err(|_| BenchError::Emulator("it printed no config within 5 minutes".into()))??
    {
        if line.starts_with('#') {
            continue;
        }
        if let Some(value) = line.strip_prefix("graph_url = ") {
            url = Some(value.trim_matches('"').to_owned());
        }
        config_lines.push_str(&line);
        config_lines.push('\n');
        if line.trim().is_empty() || (config_lines.lines().count() >= 5 && url.is_some()) {
            break;
        }
    }
    let url = url.ok_or_else(|| BenchError::Emulator(format!("no graph_url in {config_lines:?}")))?;
    let data = tempfile_dir()?;
    let config_path = data.join("bench.toml");
    std::fs::write(
        &config_path,
        // The bench measures speed: the 1 % churn's leavers must apply at every tenant size, so the
        // deprovisioning limits, which would hold them for approval beyond 500, are lifted; and
        // Microsoft data would add its own reads to the full run the bench holds to the minimum
        // page count.
        format!(
            "data_dir = \"data\"

[[connections]]
name = \"bench\"
microsoft_data = false
{config_lines}
[connections.guards]
max_deprovisions = 1000000000
max_deprovision_percent = 100
max_membership_removals_percent = 100
"
        ),
    )?;
    let config = Config::load(&config_path)?;
    let connection = config.connection(Some("bench"))?.clone();
    let store = Store::open(&config.data_dir).await?;
    let options_full = RunOptions {
        full: false,
        dry_run: false,
        trigger: Trigger::Manual,
    };

    let (full, full_ms) = timed_run(&store, &connection, options_full).await?;
    let (noop, delta_noop_ms) = timed_run(&store, &connection, options_full).await?;
    let changed = (options.users / 100).max(1);
    churn(&url, changed).await?;
    let (one_percent, delta_1pct_ms) = timed_run(&store, &connection, options_full).await?;

    let client = sync::graph_client(&connection)?;
    client.check_token().await?;
    let started = Instant::now();
    let (users, groups) = tokio::join!(
        client.users_delta(DeltaStart::Full, |_| {}),
        client.groups_delta(DeltaStart::Full, |_| {})
    );
    // The fewest requests a full read can make: the token and every page the rounds really
    // have at the emulator's page size (groups split large memberships over extra pages).
    let min_pages = 1 + users?.pages + groups?.pages;
    let fetch_only_ms = started.elapsed().as_millis() as u64;

    let _ = emulator.kill().await;
    let _ = std::fs::remove_dir_all(&data);
    Ok(BenchReport {
        users: options.users,
        groups: options.groups,
        latency_ms: options.latency_ms,
        full_sync_ms: full_ms,
        delta_noop_ms,
        delta_1pct_ms,
        fetch_only_ms,
        graph_requests_full: full.graph_requests,
        min_pages,
        delta_noop_requests: noop.graph_requests,
        users_created: full.counts.created,
        users_updated_1pct: one_percent.counts.updated
            + one_percent.counts.created
            + one_percent.counts.disabled,
        peak_rss_mb: peak_rss_kb() / 1024,
    })
}

async fn timed_run(
    store: &Store,
    connection: &crate::config::Connection,
    options: RunOptions,
) -> Result<(RunSummary, u64), BenchError> {
    let started = Instant::now();
    let summary = sync::run(store, connection, options, &|_| {}).await?;
    let elapsed = started.elapsed().as_millis() as u64;
    if summary.status != "succeeded" {
        return Err(BenchError::RunFailed(summary.error.unwrap_or_default()));
    }
    Ok((summary, elapsed))
}

/// Changes `events` users in the emulated tenant through its control API.
async fn churn(url: &str, events: usize) -> Result<(), BenchError> {
    let response = reqwest::Client::new()
        .post(format!("{url}/_emulator/churn"))
        .json(&serde_json::json!({ "events": events }))
        .send()
        .await
        .map_err(|error| BenchError::Control(error.to_string()))?;
    if !response.status().is_success() {
        return Err(BenchError::Control(format!(
            "churn answered {}",
            response.status()
        )));
    }
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf, std::io::Error> {
    let dir = std::env::temp_dir().join(format!("entra-sync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Peak resident memory of this process in KiB, from /proc (0 where there is none).
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
