//! The admin UI: server-rendered pages under `/ui` (minijinja templates embedded in the binary,
//! vendored htmx for the one live part, a running sync's progress). Every page works without
//! JavaScript; every page but sign-in needs a session, and every form carries the session's CSRF
//! token (`auth`). Built as one `Router` by `router(store, runner)`, which `serve` and `demo`
//! merge beside the JSON API and tests drive without a socket.

mod auth;
mod chart;
mod connections;
mod directory;
mod history;
mod queries;
mod settings;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use minijinja::value::Serde;
use serde_json::{Value, json};

pub use auth::{PasswordError, set_admin_password};

use crate::config::Connection;
use crate::serve::Runner;
use crate::store::{Store, StoreError};

/// The templates, embedded so the binary is all there is to deploy.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("connections.html", include_str!("templates/connections.html")),
    ("connection.html", include_str!("templates/connection.html")),
    ("confirm_sync.html", include_str!("templates/confirm_sync.html")),
    ("progress.html", include_str!("templates/progress.html")),
    ("runs.html", include_str!("templates/runs.html")),
    ("run.html", include_str!("templates/run.html")),
    ("users.html", include_str!("templates/users.html")),
    ("user.html", include_str!("templates/user.html")),
    ("user_rows.html", include_str!("templates/user_rows.html")),
    ("run_rows.html", include_str!("templates/run_rows.html")),
    ("groups.html", include_str!("templates/groups.html")),
    ("departments.html", include_str!("templates/departments.html")),
    ("members.html", include_str!("templates/members.html")),
    ("one_sync.html", include_str!("templates/one_sync.html")),
    (
        "connection_form.html",
        include_str!("templates/connection_form.html"),
    ),
    (
        "confirm_change.html",
        include_str!("templates/confirm_change.html"),
    ),
];

const HTMX: &str = include_str!("static/htmx.min.js");
const CSS: &str = include_str!("static/app.css");
const PICKER: &str = include_str!("static/picker.js");

/// What the pages share.
#[derive(Clone)]
pub(crate) struct Ui {
    store: Store,
    runner: Arc<Runner>,
    sessions: Arc<auth::Sessions>,
    /// Each connection's last Test connection result, shown as its health until the next test
    /// (in memory: a restart forgets it).
    health: Arc<std::sync::Mutex<std::collections::HashMap<String, Value>>>,
    templates: Arc<Environment<'static>>,
}

/// The admin UI's routes: `/ui/...`, and `/` sending a browser there.
pub fn router(store: Store, runner: Arc<Runner>) -> Router {
    let ui = Ui {
        store,
        runner,
        sessions: Arc::new(auth::Sessions::default()),
        health: Arc::default(),
        templates: Arc::new(templates()),
    };
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/connections") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/connections") }))
        .route("/ui/sign-out", post(auth::sign_out))
        .route("/ui/connections", get(connections::list))
        .route("/ui/connections/{name}", get(connections::show))
        .route(
            "/ui/new-connection",
            get(settings::new_form).post(settings::create),
        )
        .route(
            "/ui/connections/{name}/edit",
            get(settings::edit_form).post(settings::edit),
        )
        .route(
            "/ui/connections/{name}/change",
            get(settings::confirm_change).post(settings::change),
        )
        .route("/ui/connections/{name}/progress", get(connections::progress))
        .route(
            "/ui/connections/{name}/sync",
            get(connections::confirm_sync).post(connections::sync_now),
        )
        .route("/ui/connections/{name}/test", post(connections::test))
        .route("/ui/runs", get(history::list))
        .route("/ui/runs/{id}", get(history::show))
        .route("/ui/runs/{id}/approve", post(history::approve))
        .route("/ui/runs/{id}/discard", post(history::discard))
        .route("/ui/users", get(directory::users))
        .route("/ui/users/{id}", get(directory::user))
        .route("/ui/users/{id}/sync", post(directory::sync_user))
        .route("/ui/groups", get(directory::groups))
        .route("/ui/groups/{id}", get(directory::group))
        .route("/ui/groups/{id}/sync", post(directory::sync_group))
        .route("/ui/departments", get(directory::departments))
        .route("/ui/departments/{id}", get(directory::department))
        // Without it an unknown page would get the JSON API's 404.
        .route(
            "/ui/{*rest}",
            get(|| async { UiError::NotFound("There is no such page.".into()) }),
        )
        .route_layer(middleware::from_fn_with_state(ui.clone(), auth::require_session));
    Router::new()
        .merge(pages)
        .route("/", get(|| async { Redirect::to("/ui/connections") }))
        .route("/ui/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route(
            "/ui/static/htmx.min.js",
            get(|| async { asset(HTMX, "text/javascript") }),
        )
        .route("/ui/static/app.css", get(|| async { asset(CSS, "text/css") }))
        .route(
            "/ui/static/picker.js",
            get(|| async { asset(PICKER, "text/javascript") }),
        )
        .with_state(ui)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

fn templates() -> Environment<'static> {
    let mut environment = Environment::new();
    for (name, source) in TEMPLATES {
        // The templates are part of the binary: one that does not parse is a bug that the
        // tests catch on the first page they render, where `render` reports it.
        if let Err(error) = environment.add_template(name, source) {
            tracing::error!(template = name, %error, "a UI template does not parse");
        }
    }
    environment.add_filter("when", when);
    environment
}

/// A stored RFC 3339 time as a page shows it: `2026-12-02 03:45 UTC`.
fn when(text: String) -> String {
    match chrono::DateTime::parse_from_rfc3339(&text) {
        Ok(time) => time
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
        Err(_) => text,
    }
}

impl Ui {
    /// Renders a page for a signed-in admin: `context` plus the session's CSRF token, which
    /// every form sends back.
    fn page(
        &self,
        template: &str,
        session: &auth::Session,
        mut context: Value,
    ) -> Result<Html<String>, UiError> {
        context["csrf"] = json!(session.csrf);
        context["signed_in_as"] = json!(session.subject);
        self.render(template, &context).map(Html)
    }

    fn render(&self, template: &str, context: &Value) -> Result<String, UiError> {
        self.templates
            .get_template(template)
            .and_then(|template| template.render(Serde(context)))
            .map_err(|error| UiError::Internal(format!("rendering {template}: {error:#}")))
    }

    fn connection(&self, name: &str) -> Result<Arc<Connection>, UiError> {
        self.runner
            .connections()
            .into_iter()
            .find(|connection| connection.name == name)
            .ok_or_else(|| UiError::NotFound(format!("There is no connection named {name:?}.")))
    }

    /// The configured connections' organizations: the directory the pages show.
    fn organizations(&self) -> Vec<String> {
        let mut organizations: Vec<String> = self
            .runner
            .connections()
            .iter()
            .map(|connection| connection.organization.clone())
            .collect();
        organizations.sort();
        organizations.dedup();
        organizations
    }

    /// The connection that syncs into `organization`.
    fn connection_of(&self, organization: &str) -> Option<Arc<Connection>> {
        self.runner
            .connections()
            .into_iter()
            .find(|connection| connection.organization == organization)
    }
}

/// Why a page could not be shown, as an HTML page with the status to match.
#[derive(Debug)]
pub(crate) enum UiError {
    NotFound(String),
    BadRequest(String),
    /// The request is understood but cannot be done now (a sync running, a stale plan).
    Conflict(String),
    Forbidden(String),
    /// Details go to the log only.
    Internal(String),
}

impl From<StoreError> for UiError {
    fn from(error: StoreError) -> UiError {
        UiError::Internal(error.to_string())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            UiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            UiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            UiError::Conflict(message) => (StatusCode::CONFLICT, message),
            UiError::Forbidden(message) => (StatusCode::FORBIDDEN, message),
            UiError::Internal(detail) => {
                tracing::error!(error = %detail, "admin UI request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong; the service's log has the details.".to_owned(),
                )
            }
        };
        // Rendered without the template engine, so that an error page never fails itself.
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/ui/static/app.css\"><title>{code} · entra-sync</title></head><body><main><h1>{code}</h1><p class=\"notice error\">{message}</p><p><a href=\"/ui/connections\">Back to the connections</a></p></main></body></html>",
            code = status.as_u16(),
            message = escape(&message),
        );
        (status, Html(body)).into_response()
    }
}

/// HTML-escapes text put into a page by hand.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let mut environment = Environment::new();
        for (name, source) in TEMPLATES {
            environment
                .add_template(name, source)
                .unwrap_or_else(|error| panic!("{name}: {error:#}"));
        }
    }

    #[test]
    fn times_show_in_utc_and_anything_else_as_it_is() {
        assert_eq!(when("2026-12-02T03:45:31.123Z".into()), "2026-12-02 03:45:31 UTC");
        assert_eq!(when("soon".into()), "soon");
        assert_eq!(
            escape("<a href=\"x\">O'Neil & co</a>"),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Neil &amp; co&lt;/a&gt;"
        );
    }
}
