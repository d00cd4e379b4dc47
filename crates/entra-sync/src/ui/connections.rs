//! The connections pages: the list (status, last run and its result, next run), a connection's
//! settings (read-only here; `settings` edits those kept in the database), Test connection, and
//! Sync Now with its confirmation and the live progress of the run it starts.

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Session;
use super::{Ui, UiError};
use crate::clock;
use entra_sync_core::map::{Attributes, Field};

use crate::config::{Connection, SecretSource};
use crate::health::{self, ExpirySource, ExpiryState, SecretExpiry};
use crate::serve::{Origin, RunRefused};
use crate::store::{RunRecord, Trigger};
use crate::sync::{self, RunOptions};

/// Values of each scope section the connection page lists at most.
const TENANT_VALUES: i64 = 200;

/// A run as the connection pages summarise it.
pub(super) fn run_json(run: &RunRecord) -> Value {
    json!({
        "id": run.run_id,
        "connection": run.connection,
        "trigger": run.trigger,
        "mode": run.mode,
        "status": run.status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_ms": run.duration_ms,
        "graph_requests": run.graph_requests,
        "error": run.error,
        "warnings": run.warnings,
        "counts": super::history::counts_list(run.counts.as_ref()),
    })
}

fn credential_text(connection: &Connection, origin: Origin) -> String {
    match &connection.secret {
        SecretSource::Inline(_) if origin == Origin::Api => {
            "client secret (stored encrypted; not shown)".into()
        }
        SecretSource::Inline(_) => "client secret (in the config file; not shown)".into(),
        SecretSource::Env(variable) => format!("client secret from the environment variable {variable}"),
        SecretSource::File(path) => format!("client secret from the file {}", path.display()),
        SecretSource::Certificate { certificate_file, .. } => {
            format!("certificate {}", certificate_file.display())
        }
    }
}

/// The next `count` scheduled run times (without the jitter that spreads connections sharing a
/// schedule, which moves them by at most a minute).
fn next_runs(connection: &Connection, count: usize) -> Vec<String> {
    if !connection.enabled {
        return Vec::new();
    }
    let mut times = Vec::new();
    let mut after = clock::now();
    while times.len() < count {
        let Some(next) = connection.schedule.next_after(after) else {
            break;
        };
        times.push(crate::store::timestamp(next));
        after = next;
    }
    times
}

async fn connection_json(ui: &Ui, connection: &Connection) -> Result<Value, UiError> {
    let last = ui.store.runs(Some(&connection.name), 1).await?;
    Ok(json!({
        "name": connection.name,
        "organization": connection.organization,
        "enabled": connection.enabled,
        "running": ui.runner.is_running(&connection.name),
        "schedule": connection.schedule.to_string(),
        "next_runs": next_runs(connection, 3),
        "last_run": last.first().map(run_json),
        "health": ui
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&connection.name)
            .cloned(),
    }))
}

pub(super) async fn list(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, UiError> {
    let mut connections = Vec::new();
    for connection in ui.runner.connections() {
        connections.push(connection_json(&ui, &connection).await?);
    }
    ui.page(
        "connections.html",
        &session,
        json!({ "title": "Connections", "section": "connections", "connections": connections }),
    )
}

/// What the connection page shows, with an optional notice (a refused Sync Now, a test result).
async fn connection_page(
    ui: &Ui,
    session: &Session,
    name: &str,
    notice: Value,
) -> Result<Html<String>, UiError> {
    let shared = ui.connection(name)?;
    let connection = shared.as_ref();
    let mut context = connection_json(ui, connection).await?;
    let runs = ui.store.runs(Some(name), 10).await?;
    let policy = serde_json::to_value(&connection.policy).unwrap_or(Value::Null);
    context["title"] = json!(format!("Connection {name}"));
    context["section"] = json!("connections");
    context["tenant_id"] = json!(connection.tenant_id);
    context["client_id"] = json!(connection.client_id);
    let origin = ui
        .runner
        .connection(name)
        .map_or(Origin::Config, |(_, origin)| origin);
    context["credential"] = json!(credential_text(connection, origin));
    context["authority_url"] = json!(connection.authority_url.as_str());
    context["graph_url"] = json!(connection.graph_url.as_str());
    context["full_sync_every_hours"] = json!(connection.full_sync_every.as_secs() / 3600);
    context["policy"] = policy;
    context["runs"] = runs.iter().map(run_json).collect();
    context["progress"] = progress_json(ui, connection).await?;
    context["tenant"] = ui.store.tenant_values(name, TENANT_VALUES).await?;
    context["notice"] = notice;
    let microsoft = crate::microsoft::status(&ui.store, name).await?;
    context["microsoft_data"] = json!({
        "enabled": connection.microsoft_data,
        "read_at": microsoft.read_at,
        "warnings": microsoft.warnings,
    });
    context["welcome"] = welcome_preview(connection);
    // Only connections kept in the database can be edited here; the config file's are the file's.
    context["editable"] = json!(
        ui.runner
            .connection(name)
            .is_some_and(|(_, origin)| origin == Origin::Api)
    );
    ui.page("connection.html", session, context)
}

/// The welcome email's server and its template rendered for a sample new hire, so an admin sees
/// what a created user will receive before any is sent.
fn welcome_preview(connection: &Connection) -> Value {
    let Some(email) = &connection.email else {
        return Value::Null;
    };
    let sample: Attributes = [
        (Field::GivenName, "Ada"),
        (Field::Surname, "Lovelace"),
        (Field::DisplayName, "Ada Lovelace"),
        (Field::Email, "ada.lovelace@example.com"),
        (Field::UserPrincipalName, "ada.lovelace@example.com"),
        (Field::JobTitle, "Analyst"),
    ]
    .into_iter()
    .map(|(field, value)| (field, value.to_owned()))
    .collect();
    json!({
        "server": format!("{}:{} ({})", email.host, email.port, email.tls.as_str()),
        "from": email.from.to_string(),
        "subject": email.subject.render(&sample, &connection.organization),
        "body": email.body.render(&sample, &connection.organization),
    })
}

pub(super) async fn show(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Result<Html<String>, UiError> {
    connection_page(&ui, &session, &name, Value::Null).await
}

/// The progress block: the running sync's counters, or the last run's result once it is over.
async fn progress_json(ui: &Ui, connection: &Connection) -> Result<Value, UiError> {
    let name = &connection.name;
    let running = ui.runner.is_running(name);
    let live = if running {
        let expected = ui.store.last_good_users(name).await?;
        ui.runner.progress(name, expected)
    } else {
        None
    };
    let last = ui.store.runs(Some(name), 1).await?;
    Ok(json!({
        "name": name,
        "running": running,
        "live": live,
        "last_run": last.first().map(run_json),
    }))
}

/// The progress block alone, which htmx polls every second while a sync runs; without a sync
/// running it has no trigger, so the polling stops.
pub(super) async fn progress(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Result<Html<String>, UiError> {
    let shared = ui.connection(&name)?;
    let connection = shared.as_ref();
    let progress = progress_json(&ui, connection).await?;
    ui.page("progress.html", &session, json!({ "progress": progress }))
}

/// The confirmation step of Sync Now.
pub(super) async fn confirm_sync(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Result<Html<String>, UiError> {
    let shared = ui.connection(&name)?;
    let connection = shared.as_ref();
    ui.page(
        "confirm_sync.html",
        &session,
        json!({
            "title": format!("Sync {name} now?"),
            "section": "connections",
            "name": name,
            "enabled": connection.enabled,
            "running": ui.runner.is_running(&name),
        }),
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct SyncForm {
    #[serde(default)]
    mode: String,
}

/// Starts a run and goes to the connection's page, where its progress shows. The run is a task
/// of its own: it goes on whether or not anyone watches.
pub(super) async fn sync_now(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(form): Form<SyncForm>,
) -> Result<Response, UiError> {
    let shared = ui.connection(&name)?;
    let connection = shared.as_ref();
    // What keeps a run from starting (a secret that cannot be read, an insecure URL) is said
    // here: the run below goes on in the background, where its error would reach only the log.
    if let Err(error) = sync::graph_client(connection) {
        let notice = json!({ "kind": "error", "text": format!("The sync cannot start: {error}") });
        let page = connection_page(&ui, &session, &name, notice).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let permit = match ui.runner.try_begin(&name) {
        Ok(permit) => permit,
        Err(refused @ (RunRefused::InProgress(_) | RunRefused::Disabled(_))) => {
            let notice = json!({ "kind": "error", "text": refused.to_string() });
            let page = connection_page(&ui, &session, &name, notice).await?;
            return Ok((StatusCode::CONFLICT, page).into_response());
        }
        Err(RunRefused::UnknownConnection(name)) => {
            return Err(UiError::NotFound(format!(
                "There is no connection named {name:?}."
            )));
        }
    };
    let options = RunOptions {
        full: form.mode == "full",
        dry_run: false,
        trigger: Trigger::Manual,
    };
    let runner = ui.runner.clone();
    tokio::spawn(async move {
        if let Err(error) = runner.run(permit, options).await {
            tracing::error!(%error, "a run started from the admin UI failed to start");
        }
    });
    Ok(Redirect::to(&format!("/ui/connections/{}", url_segment(&name))).into_response())
}

/// Test connection: whether the credential gets a token, whether the token grants what a
/// sync reads, and when the credential expires; kept as the connection's health.
pub(super) async fn test(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Result<Html<String>, UiError> {
    let shared = ui.connection(&name)?;
    let test = health::test(shared.as_ref(), clock::now()).await;
    let notice = match (&test.token_error, &test.permissions) {
        (Some(error), _) => json!({ "kind": "error", "text": format!("No token: {error}") }),
        (None, Some(permissions)) if !permissions.missing.is_empty() => {
            json!({ "kind": "error", "text": format!("Token received, but permissions are missing: {}. Grant them and give admin consent.", permissions.missing.join(", ")) })
        }
        (None, Some(permissions)) => {
            json!({ "kind": "ok", "text": format!("Token received; permissions granted: {}.", permissions.granted.join(", ")) })
        }
        (None, None) => {
            json!({ "kind": "ok", "text": "Token received; the token does not list its permissions, so a sync will tell." })
        }
    };
    let mut health = notice.clone();
    health["tested_at"] = json!(crate::store::timestamp(clock::now()));
    health["expiry"] = expiry_json(&test.secret_expiry);
    ui.health
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(name.clone(), health);
    connection_page(&ui, &session, &name, notice).await
}

/// How the pages show a credential's expiry: `line`, such as "Secret expires 2027-01-10 (39
/// days)" or why it is unknown; `highlight`, the badge class when it is close or past; and
/// `note`, a warning that goes with a known date (several secrets matched, say).
fn expiry_json(expiry: &SecretExpiry) -> Value {
    let what = match expiry.source {
        ExpirySource::Certificate => "Certificate",
        ExpirySource::AppRegistration => "Secret",
    };
    let date = expiry.expires_at.as_deref().and_then(|at| at.get(..10));
    let line = match (expiry.state, date, expiry.days_left) {
        (ExpiryState::Expired, Some(date), _) => format!("{what} expired {date}"),
        (_, Some(date), Some(days)) => {
            let left = match days {
                0 => "less than a day".to_owned(),
                1 => "1 day".to_owned(),
                days => format!("{days} days"),
            };
            format!("{what} expires {date} ({left})")
        }
        _ => {
            let why = expiry.warning.as_deref().unwrap_or("the expiry is unknown");
            let mut letters = why.chars();
            letters
                .next()
                .map(|first| first.to_uppercase().chain(letters).collect())
                .unwrap_or_default()
        }
    };
    let highlight = match expiry.state {
        ExpiryState::Expired => Some("bad"),
        ExpiryState::Expiring => Some("warn"),
        ExpiryState::Valid | ExpiryState::Unknown => None,
    };
    // An unknown expiry's warning is its line already.
    let note = match expiry.state {
        ExpiryState::Unknown => None,
        _ => expiry.warning.clone(),
    };
    json!({ "line": line, "highlight": highlight, "note": note })
}

/// A connection name as one URL path segment.
pub(super) fn url_segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
