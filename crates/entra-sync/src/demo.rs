//! `entra-sync demo`: an emulated tenant syncing into the embedded directory. It starts the
//! Graph emulator in-process, writes a config file next to the database (so the other commands
//! can look at the result), serves the admin UI and the JSON API with a fresh API token to sign
//! in with, runs a first full sync with a progress bar, then every interval applies a little
//! churn to the tenant (hires, leavers, moves) and syncs it, one line per run, until Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::progress::{RunProgress, summary_line};
use crate::serve::{RunFailed, Runner};
use crate::store::{Store, Trigger};
use crate::sync::{self, RunOptions, SyncError};
use crate::ui;

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
    /// Where the admin UI listens; a free port instead when this one is taken.
    pub ui_listen: SocketAddr,
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
    #[error(transparent)]
    Run(#[from] RunFailed),
    #[error("cannot serve the admin UI: {0}")]
    Ui(std::io::Error),
    #[error("cannot make the demo's API token: {0}")]
    Token(#[from] api::TokenError),
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
    let runner = Arc::new(Runner::new(store.clone(), &config));
    let (ui_address, stop_ui) = serve_ui(&store, &runner, options.ui_listen).await?;
    let token = api::create_token(&store, "demo").await?;
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

    println!("  admin UI: http://{ui_address}/ui/ (sign in with this API token, shown once: {token})");

    // Listen for Ctrl-C from the start, so that one arriving during a run lets that run finish
    // and then stops the demo, instead of killing the process mid-write.
    let mut stop = tokio::spawn(tokio::signal::ctrl_c());
    let bar = RunProgress::new();
    // Holding the connection's run slot, so that a Sync Now from the UI waits its turn; run
    // here rather than through the runner to show the progress bar.
    let first_permit = runner.try_begin(&connection.name);
    let first = sync::run(&store, &connection, manual(), &|event| bar.report(event)).await?;
    drop(first_permit);
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
        match runner.try_begin(&connection.name) {
            Ok(permit) => {
                let summary = runner.run(permit, scheduled()).await?;
                println!("{}", summary_line(&summary));
            }
            Err(refused) => println!("  skipped: {refused}"),
        }
    }
    println!(
        "stopping: the directory and its history stay in {}",
        options.data_dir.display()
    );
    // The receiver only goes when the server has stopped on its own.
    let _ = stop_ui.send(());
    emulator.shutdown().await;
    Ok(())
}

/// Serves the admin UI and the JSON API at `listen`, or at a free port when it is taken (the
/// demo is for trying things out, and another program may hold the default port).
async fn serve_ui(
    store: &Store,
    runner: &Arc<Runner>,
    listen: SocketAddr,
) -> Result<(SocketAddr, tokio::sync::oneshot::Sender<()>), DemoError> {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(%listen, "the admin UI's address is taken; using a free port");
            tokio::net::TcpListener::bind(SocketAddr::new(listen.ip(), 0))
                .await
                .map_err(DemoError::Ui)?
        }
        Err(error) => return Err(DemoError::Ui(error)),
    };
    let address = listener.local_addr().map_err(DemoError::Ui)?;
    let app = api::router(ApiState {
        store: store.clone(),
        runner: runner.clone(),
    })
    .merge(ui::router(store.clone(), runner.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the demo's admin UI stopped");
        }
    });
    Ok((address, stop))
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
