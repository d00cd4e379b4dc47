//! `entra-sync demo`: an emulated tenant syncing into the embedded directory. It starts the
//! Graph emulator in-process, writes a config file next to the database (so the other commands
//! can look at the result), runs a first full sync with a progress bar, then every interval
//! applies a little churn to the tenant (hires, leavers, moves) and syncs it, one line per run,
//! until Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::progress::{RunProgress, summary_line};
use crate::store::{Store, Trigger};
use crate::sync::{self, RunOptions, SyncError};

/// Marks a data folder as the demo's, so the demo may clear it on the next start.
const MARKER: &str = ".entra-sync-demo";

/// Churn events applied to the emulated tenant before each scheduled sync.
const CHURN_PER_RUN: usize = 6;

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub users: usize,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub interval: Duration,
}

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "the data folder {0} exists and is not a demo folder: choose another with --data (the demo clears its folder on start)"
    )]
    NotDemoFolder(PathBuf),
    #[error("cannot prepare the demo folder {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot start the emulated tenant: {0}")]
    Emulator(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Runs the demo until Ctrl-C.
#[allow(clippy::print_stdout)]
pub async fn run(options: DemoOptions) -> Result<(), DemoError> {
    prepare_folder(&options.data_dir)?;
    let emulator = graph_emulator::start(
        graph_emulator::EmulatorOptions {
            users: options.users,
            groups: (options.users / 40).max(10),
            ..graph_emulator::EmulatorOptions::default()
        },
        options.listen,
    )
    .await
    .map_err(|error| DemoError::Emulator(format!("{error:#}")))?;
    let config_path = options.data_dir.join("entra-sync.toml");
    let config_text = format!(
        "# Written by `entra-sync demo`: the emulated tenant at {url}.\ndata_dir = \".\"\n\n[[connections]]\nname = \"demo\"\n{lines}\nschedule = \"every {seconds}s\"\n",
        url = emulator.url(),
        lines = emulator.config_lines().trim_end(),
        seconds = options.interval.as_secs().max(1),
    );
    std::fs::write(&config_path, config_text).map_err(|source| DemoError::Io {
        path: config_path.clone(),
        source,
    })?;
    let config = Config::load(&config_path)?;
    let connection = config.connection(Some("demo"))?.clone();
    let store = Store::open(&config.data_dir).await?;
    println!(
        "entra-sync demo: an emulated tenant of {} users at {}; data in {}",
        options.users,
        emulator.url(),
        options.data_dir.display()
    );
    println!(
        "  look around in another terminal: entra-sync users --config {0} | groups --config {0} | history --config {0}",
        config_path.display()
    );

    // Listen for Ctrl-C from the start, so that one arriving during a run lets that run finish
    // and then stops the demo, instead of killing the process mid-write.
    let mut stop = tokio::spawn(tokio::signal::ctrl_c());
    let bar = RunProgress::new();
    let first = sync::run(&store, &connection, manual(), &|event| bar.report(event)).await?;
    bar.finish();
    println!("{}", summary_line(&first));

    println!(
        "syncing every {} s while people join, leave and move; Ctrl-C stops",
        options.interval.as_secs()
    );
    while !stop.is_finished() {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(options.interval) => {}
        }
        for event in emulator.churn(CHURN_PER_RUN) {
            println!("  entra: {event}");
        }
        let summary = sync::run(&store, &connection, scheduled(), &|_| {}).await?;
        println!("{}", summary_line(&summary));
    }
    println!(
        "stopping: the directory and its history stay in {}",
        options.data_dir.display()
    );
    emulator.shutdown().await;
    Ok(())
}

fn manual() -> RunOptions {
    RunOptions {
        full: false,
        dry_run: false,
        trigger: Trigger::Manual,
    }
}

fn scheduled() -> RunOptions {
    RunOptions {
        trigger: Trigger::Scheduled,
        ..manual()
    }
}

/// Creates the demo folder, or clears one a previous demo left (the emulated tenant is new on
/// every start, so its old delta links and ids mean nothing). Refuses any other folder.
fn prepare_folder(path: &Path) -> Result<(), DemoError> {
    let io = |source| DemoError::Io {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        let empty = std::fs::read_dir(path).map_err(io)?.next().is_none();
        if !empty && !path.join(MARKER).exists() {
            return Err(DemoError::NotDemoFolder(path.to_owned()));
        }
        std::fs::remove_dir_all(path).map_err(io)?;
    }
    std::fs::create_dir_all(path).map_err(io)?;
    std::fs::write(
        path.join(MARKER),
        "entra-sync demo data; cleared by the next `entra-sync demo`\n",
    )
    .map_err(io)?;
    Ok(())
}
