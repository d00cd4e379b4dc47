//! The `entra-sync` command line: parses arguments, sets up logging, runs one command and maps
//! its result to the exit codes of the contract (0 done, 1 failed, 2 usage or configuration,
//! 3 blocked by a safety guard).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use entra_sync::config::{Config, ConfigError};
use entra_sync::store::{Store, Trigger, UserRecord};
use entra_sync::sync::{self, ProgressEvent, RunOptions, SyncError};
use entra_sync::{api, bench, connections, demo, mail, progress, serve, ui};

#[derive(Parser)]
#[command(
    name = "entra-sync",
    version,
    about = "Keeps an application's user directory in step with Microsoft Entra ID"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// An emulated tenant syncing into the embedded directory, with churn, until Ctrl-C.
    Demo(DemoArgs),
    /// Serve an offline Microsoft Graph and token endpoint until Ctrl-C.
    Emulator(EmulatorArgs),
    /// Run one sync of a connection.
    Sync(SyncArgs),
    /// List the directory's users of a connection.
    Users(ListArgs),
    /// List the directory's groups of a connection.
    Groups(ListArgs),
    /// Show past runs, or one run's actions.
    History(HistoryArgs),
    /// Validate a config file without connecting to anything.
    CheckConfig(ConfigArg),
    /// Measure full, no-change and 1 % delta runs against an emulated tenant.
    Bench(BenchArgs),
    /// Run the service: every enabled connection on its schedule, the JSON API and /metrics,
    /// until SIGTERM or Ctrl-C.
    Serve(ConfigArg),
    /// Apply exactly the plan a safety guard stopped in a run.
    Approve(ApproveArgs),
    /// Why an Entra user is in or out of scope: the rule, the link, the record, recent actions.
    Explain(ExplainArgs),
    /// Manage the JSON API's bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the admin UI's sign-in.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Set the admin UI's password, read from standard input (one line); only its argon2 hash
    /// is stored. API tokens sign in too.
    SetPassword(ConfigArg),
}

#[derive(Args)]
struct ApproveArgs {
    #[arg(long)]
    config: PathBuf,
    /// The blocked run whose stored plan to apply.
    #[arg(long)]
    run: i64,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ExplainArgs {
    #[arg(long)]
    config: PathBuf,
    /// The user's UPN, email or Entra object id.
    #[arg(long)]
    user: String,
    #[arg(long)]
    connection: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token and print it once; only its hash is stored.
    Create(TokenCreateArgs),
}

#[derive(Args)]
struct TokenCreateArgs {
    #[arg(long)]
    config: PathBuf,
    /// A name for the token, such as the application that uses it.
    #[arg(long)]
    name: String,
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    #[arg(long, default_value_t = 2_000)]
    groups: usize,
    /// Latency the emulator adds to every Graph request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Throttle by Graph's resource-unit budgets.
    #[arg(long)]
    throttle: bool,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ConfigArg {
    /// The TOML config file.
    #[arg(long)]
    config: PathBuf,
}

#[derive(Args)]
struct DemoArgs {
    /// Users in the emulated tenant.
    #[arg(long, default_value_t = 2_000)]
    users: usize,
    /// Address of the emulated tenant (Graph and token endpoint).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Data folder for the demo's database and config file.
    #[arg(long, default_value = "entra-sync-demo")]
    data: PathBuf,
    /// Seconds between syncs.
    #[arg(long, default_value_t = 30)]
    interval: u64,
    /// Address of the admin UI; when it is taken, the demo picks a free port and prints it.
    #[arg(long, default_value = "127.0.0.1:8080")]
    ui_listen: SocketAddr,
}

#[derive(Args)]
struct EmulatorArgs {
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Users to generate.
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Groups to generate.
    #[arg(long, default_value_t = 10)]
    groups: usize,
    /// Seed of the generated tenant.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Load the tenant from a JSON fixture instead of generating it.
    #[arg(long)]
    fixture: Option<PathBuf>,
    #[arg(long)]
    tenant_id: Option<String>,
    #[arg(long)]
    client_id: Option<String>,
    #[arg(long)]
    client_secret: Option<String>,
    /// Latency added to every Graph request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Throttle by Graph's resource-unit budgets.
    #[arg(long)]
    throttle: bool,
    /// Hires, leavers and moves per minute.
    #[arg(long, default_value_t = 0)]
    churn_per_minute: u32,
}

#[derive(Args)]
struct SyncArgs {
    #[arg(long)]
    config: PathBuf,
    /// The connection to sync (needed when the config has several).
    #[arg(long)]
    connection: Option<String>,
    /// Read everything instead of continuing from the stored delta links.
    #[arg(long)]
    full: bool,
    /// Print the plan, apply nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the run summary as one JSON document on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ListArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    connection: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct HistoryArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    connection: Option<String>,
    /// Show one run with its actions and conflicts.
    #[arg(long)]
    run: Option<i64>,
    #[arg(long)]
    json: bool,
}

/// An error whose exit code is 2: the user must fix the command or the configuration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// A sync builds and drops millions of small strings (attribute values, the JSON of actions and
/// snapshot rows, SQL arguments): with glibc's malloc, allocating and freeing them took about a
/// quarter of a 100k-user full sync's CPU samples. The `override` feature gives SQLite's own
/// allocations (every value sqlx copies out of a row, every page it builds) to mimalloc too:
/// a 1 % delta run at 100k users loads its snapshot and directory a fifth faster with it.
/// `no_thp` keeps mimalloc's memory in 4 KiB pages: with transparent huge pages on (Debian's
/// default), every first touch of a 2 MiB page zeroes all of it, and zeroing fresh pages was the
/// largest single item of a 100k full sync's profile (a sixth of its samples).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The service logs its runs; the one-shot commands print their results instead.
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    init_logging(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            let usage = error.downcast_ref::<UsageError>().is_some()
                || error.downcast_ref::<ConfigError>().is_some()
                || matches!(
                    error.downcast_ref::<connections::FindError>(),
                    Some(
                        connections::FindError::Config(_)
                            | connections::FindError::SecretKey(_)
                            | connections::FindError::Invalid { .. }
                    )
                )
                || matches!(
                    error.downcast_ref::<SyncError>(),
                    Some(SyncError::Credential { .. })
                )
                || matches!(
                    error.downcast_ref::<SyncError>(),
                    Some(SyncError::Graph(
                        entra_sync::graph::Error::InsecureUrl { .. }
                            | entra_sync::graph::Error::Certificate { .. }
                    ))
                );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo(args) => {
            demo::run(demo::DemoOptions {
                users: args.users,
                listen: args.listen,
                data_dir: args.data,
                interval: std::time::Duration::from_secs(args.interval),
                ui_listen: args.ui_listen,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Emulator(args) => emulator(args).await,
        Command::Sync(args) => sync_command(args).await,
        Command::Users(args) => users(args).await,
        Command::Groups(args) => groups(args).await,
        Command::History(args) => history(args).await,
        Command::CheckConfig(args) => check_config(args),
        Command::Bench(args) => bench(args).await,
        Command::Serve(args) => serve_command(args).await,
        Command::Token(TokenCommand::Create(args)) => token_create(args).await,
        Command::Admin(AdminCommand::SetPassword(args)) => set_password(args).await,
        Command::Approve(args) => approve(args).await,
        Command::Explain(args) => explain(args).await,
    }
}

#[allow(clippy::print_stdout)]
async fn serve_command(args: ConfigArg) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    serve::run(config, serve::shutdown_signal(), |address| {
        println!("entra-sync serving on http://{address}");
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
async fn token_create(args: TokenCreateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let store = Store::open(&config.data_dir).await?;
    match api::create_token(&store, &args.name).await {
        Ok(token) => {
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Err(error @ api::TokenError::NameTaken(_)) => Err(UsageError(error.to_string()).into()),
        Err(error) => Err(error.into()),
    }
}

#[allow(clippy::print_stdout)]
async fn set_password(args: ConfigArg) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let config = Config::load(&args.config)?;
    let store = Store::open(&config.data_dir).await?;
    if std::io::stdin().is_terminal() {
        // No echo control without another dependency: say so rather than pretend.
        eprint!("New admin UI password (shown as typed; pipe it in to hide it): ");
    }
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']);
    match ui::set_admin_password(&store, password).await {
        Ok(()) => {
            println!("admin UI password set; sign in at /ui/sign-in on the `serve` address");
            Ok(ExitCode::SUCCESS)
        }
        Err(error @ ui::PasswordError::TooShort) => Err(UsageError(error.to_string()).into()),
        Err(error) => Err(error.into()),
    }
}

#[allow(clippy::print_stdout)]
async fn emulator(args: EmulatorArgs) -> anyhow::Result<ExitCode> {
    let defaults = graph_emulator::EmulatorOptions::default();
    let options = graph_emulator::EmulatorOptions {
        tenant_id: args.tenant_id.unwrap_or(defaults.tenant_id.clone()),
        client_id: args.client_id.unwrap_or(defaults.client_id.clone()),
        client_secret: args.client_secret.unwrap_or(defaults.client_secret.clone()),
        users: args.users,
        groups: args.groups,
        seed: args.seed,
        fixture: args.fixture,
        latency_ms: args.latency_ms,
        throttle: args.throttle,
        churn_per_minute: args.churn_per_minute,
        ..defaults
    };
    let emulator = graph_emulator::start(options, args.listen)
        .await
        .with_context(|| format!("cannot start the emulator on {}", args.listen))?;
    println!(
        "# entra-sync emulator listening on {}; add these lines to a [[connections]] entry:",
        emulator.url()
    );
    println!("{}", emulator.config_lines());
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    emulator.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
async fn sync_command(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let store = Store::open(&config.data_dir).await?;
    let connection = connections::find(&config, &store, args.connection.as_deref()).await?;
    let bar = (!args.json).then(progress::RunProgress::new);
    let report = |event: ProgressEvent| {
        if let Some(bar) = &bar {
            bar.report(event);
        }
    };
    let options = RunOptions {
        full: args.full,
        dry_run: args.dry_run,
        trigger: Trigger::Manual,
    };
    let summary = sync::run(&store, &connection, options, &report).await?;
    if let Some(bar) = &bar {
        bar.finish();
    }
    if !args.dry_run {
        deliver_emails(&store, &config).await;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        if let Some(plan) = summary.plan.as_ref().filter(|_| args.dry_run) {
            print!("{plan}");
        }
        println!("{}", progress::summary_line(&summary));
        for conflict in &summary.conflict_details {
            println!(
                "  conflict: {} ({})",
                conflict.reason,
                conflict.entra_id.as_deref().unwrap_or("-")
            );
        }
    }
    if let Some(error) = &summary.error {
        eprintln!("error: run {} failed: {error}", summary.run_id);
    }
    if summary.status == "blocked" {
        for guard in &summary.guards {
            eprintln!("blocked: {guard}");
        }
        eprintln!(
            "nothing was applied: review the plan with `entra-sync history --config {config} --run {run}`, apply exactly it with `entra-sync approve --config {config} --run {run}`",
            config = args.config.display(),
            run = summary.run_id
        );
    }
    Ok(match summary.status {
        "failed" => ExitCode::FAILURE,
        "blocked" => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    })
}

/// Sends the welcome emails that are due, after a run applied, and says how it went on stderr.
async fn deliver_emails(store: &Store, config: &Config) {
    if config
        .connections
        .iter()
        .all(|connection| connection.email.is_none())
    {
        return;
    }
    match mail::deliver_due(store, &config.connections, entra_sync::clock::now()).await {
        Ok(delivery) if delivery.is_empty() => {}
        Ok(delivery) => {
            eprintln!(
                "welcome emails: {} sent, {} to retry, {} failed",
                delivery.sent, delivery.retrying, delivery.failed
            );
            if delivery.retrying + delivery.failed > 0 {
                eprintln!("  GET /api/v1/emails shows why; `serve` or a later sync retries the queued ones");
            }
        }
        Err(error) => {
            eprintln!("warning: welcome emails not sent: {error}; `serve` or the next sync sends them")
        }
    }
}

#[allow(clippy::print_stdout)]
async fn approve(args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let store = Store::open(&config.data_dir).await?;
    let summary = match sync::approve(&store, args.run, &config.connections).await {
        Ok(summary) => summary,
        Err(error) if error.is_usage() => return Err(UsageError(error.to_string()).into()),
        Err(error) => return Err(error.into()),
    };
    deliver_emails(&store, &config).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{}", progress::summary_line(&summary));
    }
    Ok(if summary.failed_actions > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[allow(clippy::print_stdout)]
async fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let store = Store::open(&config.data_dir).await?;
    let connection = connections::find(&config, &store, args.connection.as_deref()).await?;
    let state = store
        .connection_state(
            &connection.name,
            &connection.organization,
            entra_sync::clock::now(),
        )
        .await?;
    let snapshot = store.load_snapshot(state.id).await?;
    let directory = entra_sync::targets::directory::Directory::new(&store, state.organization_id);
    let target = entra_sync::targets::Target::load(&directory).await?;
    let user = match entra_sync_core::explain::find_users(&snapshot, &args.user).as_slice() {
        [user] => *user,
        [] => {
            return Err(UsageError(format!(
                "no Entra user {:?} in what connection {:?} last read: give an object id, UPN or email, and sync first",
                args.user, connection.name
            ))
            .into());
        }
        several => {
            let ids: Vec<&str> = several.iter().map(|user| user.id.as_str()).collect();
            return Err(UsageError(format!(
                "{:?} names {} Entra users ({}): give the object id",
                args.user,
                several.len(),
                ids.join(", ")
            ))
            .into());
        }
    };
    let explanation = entra_sync_core::explain::explain(user, &snapshot, &target, &connection.policy);
    let actions = store.user_actions(&user.id, 20).await?;
    if args.json {
        let actions: Vec<serde_json::Value> = actions
            .iter()
            .map(|(run_id, action)| serde_json::json!({ "run_id": run_id, "action": action }))
            .collect();
        let document = serde_json::json!({ "explanation": explanation, "recent_actions": actions });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{explanation}");
    println!("recent actions:");
    for (run_id, action) in &actions {
        let outcome = action
            .outcome
            .as_deref()
            .map(|o| format!("  ({o})"))
            .unwrap_or_default();
        println!("  run {run_id}: {}{outcome}", action.detail);
    }
    if actions.is_empty() {
        println!("  none");
    }
    Ok(ExitCode::SUCCESS)
}

fn user_json(user: &UserRecord, sku_names: &std::collections::BTreeMap<String, String>) -> serde_json::Value {
    let mut object = user.attributes.clone();
    let field = |name: &str| {
        user.attributes
            .get(name)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    };
    for name in [
        "user_principal_name",
        "email",
        "display_name",
        "given_name",
        "surname",
        "job_title",
        "department",
        "office_location",
        "user_type",
    ] {
        object.insert(name.to_owned(), field(name));
    }
    object.insert("id".into(), user.id.into());
    object.insert("entra_id".into(), user.entra_id.clone().into());
    object.insert("status".into(), user.status.clone().into());
    object.insert("status_reason".into(), user.status_reason.clone().into());
    object.insert("groups".into(), user.groups.clone().into());
    object.insert("unit".into(), serde_json::Value::Null);
    object.insert("roles".into(), serde_json::Value::Array(Vec::new()));
    object.insert(
        "microsoft".into(),
        entra_sync::microsoft::user_json(user, sku_names),
    );
    serde_json::Value::Object(object)
}

#[allow(clippy::print_stdout)]
async fn users(args: ListArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let store = Store::open(&config.data_dir).await?;
    let connection = connections::find(&config, &store, args.connection.as_deref()).await?;
    let users = store.users(&connection.organization).await?;
    if args.json {
        let sku_names = entra_sync::microsoft::sku_names(&store, &connection.organization).await?;
        let users: Vec<serde_json::Value> = users.iter().map(|user| user_json(user, &sku_names)).collect();
        println!("{}", serde_json::to_string_pretty(&users)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8} {:<13} {:<40} {:<30} GROUPS",
        "ID", "STATUS", "EMAIL", "NAME"
    );
    for user in &users {
        let text = |name: &str| {
            user.attributes
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or("-")
                .to_owned()
        };
        println!(
            "{:<8} {:<13} {:<40} {:<30} {}",
            user.id,
            user.status,
            text("email"),
            text("display_name"),
            user.groups.len()
        );
    }
    println!(
        "{} users in organization {:?}",
        users.len(),
        connection.organization
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
async fn groups(args: ListArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let store = Store::open(&config.data_dir).await?;
    let connection = connections::find(&config, &store, args.connection.as_deref()).await?;
    let groups = store.groups(&connection.organization).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&groups)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<8} {:<8} NAME", "ID", "MEMBERS");
    for group in &groups {
        println!("{:<8} {:<8} {}", group.id, group.members, group.name);
    }
    println!(
        "{} groups in organization {:?}",
        groups.len(),
        connection.organization
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let store = Store::open(&config.data_dir).await?;
    if let Some(name) = &args.connection {
        connections::find(&config, &store, Some(name)).await?;
    }
    let runs = store.runs(args.connection.as_deref(), 1_000).await?;
    let Some(run_id) = args.run else {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&runs)?);
        } else {
            println!(
                "{:<6} {:<16} {:<10} {:<6} {:<11} {:<25} COUNTS",
                "RUN", "CONNECTION", "TRIGGER", "MODE", "STATUS", "STARTED"
            );
            for run in &runs {
                println!(
                    "{:<6} {:<16} {:<10} {:<6} {:<11} {:<25} {}",
                    run.run_id,
                    run.connection,
                    run.trigger,
                    run.mode,
                    run.status,
                    run.started_at,
                    counts_text(run.counts.as_ref())
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let run = runs.into_iter().find(|run| run.run_id == run_id).ok_or_else(|| {
        UsageError(format!(
            "no run {run_id}: `entra-sync history --config ...` lists the runs"
        ))
    })?;
    let actions = store.run_actions(run_id).await?;
    let conflicts = store.run_conflicts(run_id).await?;
    if args.json {
        let document = serde_json::json!({ "run": run, "actions": actions, "conflicts": conflicts });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "run {} of {}: {} {} {}, started {}, {}",
        run.run_id,
        run.connection,
        run.trigger,
        run.mode,
        run.status,
        run.started_at,
        counts_text(run.counts.as_ref())
    );
    if let Some(error) = &run.error {
        println!("error: {error}");
    }
    for warning in &run.warnings {
        println!("warning: {warning}");
    }
    for action in &actions {
        let outcome = action
            .outcome
            .as_deref()
            .map(|o| format!("  FAILED: {o}"))
            .unwrap_or_default();
        println!("{:>6}  {}{outcome}", action.seq, action.detail);
    }
    for conflict in &conflicts {
        println!(
            "conflict: {} ({})",
            conflict.reason,
            conflict.entra_id.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn counts_text(counts: Option<&serde_json::Value>) -> String {
    let Some(serde_json::Value::Object(counts)) = counts else {
        return "-".into();
    };
    counts
        .iter()
        .filter(|(_, value)| value.as_u64().unwrap_or(0) > 0)
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[allow(clippy::print_stdout)]
fn check_config(args: ConfigArg) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    println!(
        "{}: valid, data in {}",
        args.config.display(),
        config.data_dir.display()
    );
    for connection in &config.connections {
        println!(
            "  connection {:?} -> organization {:?}: tenant {}, graph {}, schedule {:?}{}",
            connection.name,
            connection.organization,
            connection.tenant_id,
            connection.graph_url,
            connection.schedule,
            if connection.enabled { "" } else { " (disabled)" }
        );
        if let Err(error) = sync::resolve_credential(connection) {
            println!("  warning: {error}");
        }
        if let Some(email) = &connection.email {
            println!(
                "    welcome emails {} via {}:{} (tls {}) from {}",
                if connection.policy.welcome_email {
                    "on"
                } else {
                    "off"
                },
                email.host,
                email.port,
                email.tls.as_str(),
                email.from
            );
            if let Err(error) = mail::check_password(email) {
                println!("  warning: connection {:?}: {error}", connection.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let report = bench::run(&bench::BenchOptions {
        users: args.users,
        groups: args.groups,
        latency_ms: args.latency_ms,
        throttle: args.throttle,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} users, {} groups, {} ms latency a request",
        report.users, report.groups, report.latency_ms
    );
    println!(
        "  full sync        {:>8} ms  {} Graph requests (minimum {})",
        report.full_sync_ms, report.graph_requests_full, report.min_pages
    );
    println!("  fetch only       {:>8} ms", report.fetch_only_ms);
    println!(
        "  delta, no change {:>8} ms  {} Graph requests",
        report.delta_noop_ms, report.delta_noop_requests
    );
    println!(
        "  delta, 1 %       {:>8} ms  {} users changed",
        report.delta_1pct_ms, report.users_updated_1pct
    );
    println!("  peak memory      {:>8} MiB", report.peak_rss_mb);
    Ok(ExitCode::SUCCESS)
}
