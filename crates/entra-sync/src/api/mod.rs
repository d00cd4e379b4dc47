//! The JSON API under `/api/v1`, the health checks and `/metrics`, as one `Router` built by
//! `router(state)` so that tests drive it without a socket.
//!
//! Connections are the config file's, read-only here, and those made through the API, which can
//! be edited and deleted. A connection's credential is shown only as its kind, never its value;
//! a client secret given to the API is write-only. Every route under `/api/v1` needs a bearer
//! token (`auth`); the health checks and the metrics are open, for load balancers and Prometheus.
//! `/changes` is the change feed for applications that read the directory; `/emails` shows the
//! welcome-email outbox.

mod auth;
mod error;
mod openapi;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::Deserialize;
use serde_json::{Value, json};

pub use auth::{TokenError, create_token, token_known};
pub use error::{ApiError, Code};

use entra_sync_core::explain;

use crate::config::{Connection, SecretSource};
use crate::graph::permissions;
use crate::serve::{EditRefused, Origin, RunFailed, RunRefused, Runner};
use crate::store::{Store, Trigger, UserRecord};
use crate::sync::{ApproveError, RunOptions, SyncError};
use crate::targeted::{OneMode, Subject};
use crate::targets::Target;
use crate::targets::directory::Directory;
use crate::{changes, clock, health, mail, microsoft};

/// Runs a list answers when the query gives no `limit`, and the most it answers.
const DEFAULT_RUNS: i64 = 100;
const MAX_RUNS: i64 = 1_000;
/// Changes a page of the feed holds when the query gives no `limit`, and the most it holds.
const DEFAULT_CHANGES: i64 = 500;
const MAX_CHANGES: i64 = 5_000;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub runner: Arc<Runner>,
}

/// The service's HTTP routes.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/connections", get(list_connections).post(create_connection))
        .route(
            "/connections/{name}",
            get(get_connection)
                .patch(patch_connection)
                .delete(delete_connection),
        )
        .route("/connections/{name}/sync", post(sync_now))
        .route("/connections/{name}/users/{id}/sync", post(sync_user))
        .route("/connections/{name}/groups/{id}/sync", post(sync_group))
        .route("/connections/{name}/test", post(test_connection))
        .route("/runs", get(list_runs))
        .route("/runs/{id}", get(get_run))
        .route("/runs/{id}/actions", get(run_actions))
        .route("/runs/{id}/approve", post(approve_run))
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user))
        .route("/users/{id}/explain", get(explain_user))
        .route("/groups", get(list_groups))
        .route("/departments", get(list_departments))
        .route("/changes", get(list_changes))
        .route("/emails", get(list_emails))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token))
        // After the token layer, which covers only the routes above it: the document is open.
        .route("/openapi.json", get(|| async { Json(openapi::document()) }));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(Code::NotFound, "no such route") })
        .layer(middleware::from_fn(error::log_requests))
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(json!({ "status": "ready" }))),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            Err(ApiError::new(Code::NotReady, "the database does not answer"))
        }
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.runner.metrics().render(),
    )
        .into_response()
}

/// A connection as the API shows it: everything but the credential's value.
fn connection_json(connection: &Connection, runner: &Runner) -> Value {
    let origin = runner
        .connection(&connection.name)
        .map_or(Origin::Config, |(_, origin)| origin);
    let credential = match &connection.secret {
        SecretSource::Inline(_) if origin == Origin::Api => {
            json!({ "kind": "client_secret", "stored": "encrypted" })
        }
        SecretSource::Inline(_) => json!({ "kind": "client_secret" }),
        SecretSource::Env(variable) => json!({ "kind": "client_secret_env", "variable": variable }),
        SecretSource::File(path) => json!({ "kind": "client_secret_file", "path": path }),
        SecretSource::Certificate { certificate_file, .. } => {
            json!({ "kind": "certificate", "certificate_file": certificate_file })
        }
    };
    json!({
        "name": connection.name,
        "organization": connection.organization,
        "tenant_id": connection.tenant_id,
        "client_id": connection.client_id,
        "credential": credential,
        "authority_url": connection.authority_url.as_str(),
        "graph_url": connection.graph_url.as_str(),
        "schedule": connection.schedule.to_string(),
        "enabled": connection.enabled,
        "running": runner.is_running(&connection.name),
        "source": origin.as_str(),
    })
}

async fn list_connections(State(state): State<ApiState>) -> Json<Vec<Value>> {
    Json(
        state
            .runner
            .connections()
            .iter()
            .map(|connection| connection_json(connection, &state.runner))
            .collect(),
    )
}

fn find_connection(runner: &Runner, name: &str) -> Result<Arc<Connection>, ApiError> {
    runner
        .connection(name)
        .map(|(connection, _)| connection)
        .ok_or_else(|| ApiError::not_found(format!("connection {name:?}")))
}

/// A JSON body, or the answer that it is not one.
fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::new(
            Code::BadRequest,
            format!("the body must be a JSON object: {error}"),
        )
    })
}

/// Why a connection could not be made, edited or deleted, as an answer.
fn edit_refused(refused: EditRefused) -> ApiError {
    let code = match &refused {
        EditRefused::UnknownConnection(_) => Code::NotFound,
        EditRefused::ReadOnly(_) => Code::ConnectionReadOnly,
        EditRefused::Exists(_) => Code::ConnectionExists,
        EditRefused::OrganizationTaken { .. } => Code::OrganizationTaken,
        EditRefused::Invalid(_) => Code::InvalidConnection,
        EditRefused::InProgress(_) => Code::RunInProgress,
        EditRefused::SecretKey(_) | EditRefused::Store(_) => return ApiError::internal(refused),
    };
    ApiError::new(code, refused.to_string())
}

/// Makes a connection from the config file's keys as JSON, with `client_secret`; the secret is
/// stored sealed and never answered.
async fn create_connection(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let connection = state
        .runner
        .create(json_body(&body)?)
        .await
        .map_err(edit_refused)?;
    tracing::info!(connection = %connection.name, "connection made through the API");
    let document = connection_json(&connection, &state.runner);
    Ok((StatusCode::CREATED, Json(document)).into_response())
}

/// Edits a connection made through the API with a JSON merge patch of its definition.
async fn patch_connection(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Path(name) = name.map_err(bad_path)?;
    let connection = state
        .runner
        .update(&name, json_body(&body)?)
        .await
        .map_err(edit_refused)?;
    tracing::info!(connection = %connection.name, "connection edited through the API");
    Ok(Json(connection_json(&connection, &state.runner)))
}

/// Deletes a connection made through the API; its history and directory users stay.
async fn delete_connection(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(name) = name.map_err(bad_path)?;
    state.runner.delete(&name).await.map_err(edit_refused)?;
    tracing::info!(connection = %name, "connection deleted through the API");
    Ok(StatusCode::NO_CONTENT)
}

async fn get_connection(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(name) = name.map_err(bad_path)?;
    let connection = find_connection(&state.runner, &name)?;
    let mut document = connection_json(&connection, &state.runner);
    let status = microsoft::status(&state.store, &name).await?;
    document["microsoft_data"] = json!({
        "enabled": connection.microsoft_data,
        "read_at": status.read_at,
        "warnings": status.warnings,
    });
    Ok(Json(document))
}

/// The body of Sync Now; an empty body is a delta run that applies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncRequest {
    #[serde(default)]
    mode: SyncMode,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SyncMode {
    /// Continue from the stored delta links (a first run reads everything anyway).
    #[default]
    Delta,
    /// Read everything again.
    Full,
}

/// Sync Now: runs one sync and answers with its summary when it is done; 409 while one runs.
async fn sync_now(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Path(name) = name.map_err(bad_path)?;
    let request: SyncRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SyncRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            ApiError::new(
                Code::BadRequest,
                format!("the body must be {{\"mode\": \"delta\"|\"full\", \"dry_run\": bool}}: {error}"),
            )
        })?
    };
    let permit = state.runner.try_begin(&name).map_err(refused)?;
    let options = RunOptions {
        full: matches!(request.mode, SyncMode::Full),
        dry_run: request.dry_run,
        trigger: Trigger::Api,
    };
    let summary = state.runner.run(permit, options).await.map_err(run_failed)?;
    Ok((StatusCode::ACCEPTED, Json(summary)).into_response())
}

/// Why a run that was to start has no summary, as an answer.
fn run_failed(error: RunFailed) -> ApiError {
    match error {
        RunFailed::Sync(SyncError::Store(error)) => ApiError::internal(error),
        RunFailed::Sync(error) => ApiError::new(Code::RunNotStarted, error.to_string()),
        RunFailed::Approve(_) | RunFailed::Aborted(_) => ApiError::internal(error),
    }
}

/// The body of a one-user or one-group sync; an empty body is `full`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OneSyncRequest {
    #[serde(default)]
    mode: OneMode,
}

/// One-user sync: `info` pulls the user from Entra and applies it, `downstream` pushes the
/// directory's values to the targets, `full` does both. Answers with the run's summary.
async fn sync_user(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Path((name, id)) = path.map_err(bad_path)?;
    sync_one(state, name, Subject::User(id), &body).await
}

/// One-group sync: the group and every direct member user, as a one-user sync does them.
async fn sync_group(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Path((name, id)) = path.map_err(bad_path)?;
    sync_one(state, name, Subject::Group(id), &body).await
}

async fn sync_one(
    state: ApiState,
    name: String,
    subject: Subject,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let request: OneSyncRequest = if body.iter().all(u8::is_ascii_whitespace) {
        OneSyncRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|error| {
            ApiError::new(
                Code::BadRequest,
                format!("the body must be {{\"mode\": \"info\"|\"downstream\"|\"full\"}}: {error}"),
            )
        })?
    };
    let permit = state.runner.try_begin(&name).map_err(refused)?;
    let summary = state
        .runner
        .run_one(permit, subject, request.mode)
        .await
        .map_err(run_failed)?;
    Ok((StatusCode::ACCEPTED, Json(summary)).into_response())
}

/// Checks a connection: whether it gets a token, and whether the token grants what a sync reads.
/// A connection that fails the check is an answer (`ok: false`), not an API error.
async fn test_connection(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(name) = name.map_err(bad_path)?;
    let connection = find_connection(&state.runner, &name)?;
    let test = health::test(&connection, clock::now()).await;
    let token = match &test.token_error {
        None => json!({ "ok": true }),
        Some(error) => json!({ "ok": false, "error": error }),
    };
    Ok(Json(json!({
        "connection": name,
        "ok": test.ok,
        "token": token,
        "permissions": test.permissions,
        "required": permissions::REQUIRED.iter().map(|r| r.permission).collect::<Vec<_>>(),
        "secret_expires_at": test.secret_expiry.expires_at,
        "secret_expiry": test.secret_expiry,
    })))
}

/// Why a run could not start, as an answer.
fn refused(refused: RunRefused) -> ApiError {
    let code = match refused {
        RunRefused::UnknownConnection(_) => Code::NotFound,
        RunRefused::Disabled(_) => Code::ConnectionDisabled,
        RunRefused::InProgress(_) => Code::RunInProgress,
    };
    ApiError::new(code, refused.to_string())
}

/// Applies the plan a safety guard stopped in a run, as `entra-sync approve` does, while no other
/// run of the connection goes.
async fn approve_run(
    State(state): State<ApiState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    let run = state
        .store
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id}")))?;
    let permit = state.runner.try_begin(&run.connection).map_err(refused)?;
    let summary = state
        .runner
        .approve(permit, id)
        .await
        .map_err(|error| match error {
            RunFailed::Approve(ApproveError::NoPlan(_)) => ApiError::new(Code::NotFound, error.to_string()),
            RunFailed::Approve(ApproveError::AlreadyApplied(_)) => {
                ApiError::new(Code::AlreadyApproved, error.to_string())
            }
            RunFailed::Approve(ApproveError::Discarded(_)) => {
                ApiError::new(Code::PlanDiscarded, error.to_string())
            }
            RunFailed::Approve(ApproveError::Stale { .. }) => {
                ApiError::new(Code::PlanStale, error.to_string())
            }
            error => ApiError::internal(error),
        })?;
    Ok(Json(json!(summary)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    connection: Option<String>,
    limit: Option<i64>,
}

async fn list_runs(
    State(state): State<ApiState>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let limit = query.limit.unwrap_or(DEFAULT_RUNS).clamp(1, MAX_RUNS);
    let runs = state.store.runs(query.connection.as_deref(), limit).await?;
    Ok(Json(json!(runs)))
}

async fn get_run(
    State(state): State<ApiState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    let run = state
        .store
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id}")))?;
    let conflicts = state.store.run_conflicts(id).await?;
    let mut document = json!(run);
    document["conflicts"] = json!(conflicts);
    document["welcome_emails"] = json!(mail::run_email_counts(&state.store, id).await?);
    Ok(Json(document))
}

async fn run_actions(
    State(state): State<ApiState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    if state.store.run(id).await?.is_none() {
        return Err(ApiError::not_found(format!("run {id}")));
    }
    Ok(Json(json!(state.store.run_actions(id).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryQuery {
    connection: Option<String>,
}

/// The organizations a directory query reads: the connection's, or every connection's.
fn organizations(runner: &Runner, connection: Option<&str>) -> Result<BTreeSet<String>, ApiError> {
    match connection {
        Some(name) => Ok(BTreeSet::from([find_connection(runner, name)?
            .organization
            .clone()])),
        None => Ok(runner
            .connections()
            .iter()
            .map(|connection| connection.organization.clone())
            .collect()),
    }
}

/// A directory user: its attributes at the top level, like `entra-sync users --json`.
fn user_json(user: &UserRecord, organization: &str, sku_names: &BTreeMap<String, String>) -> Value {
    let mut object = user.attributes.clone();
    object.insert("id".into(), user.id.into());
    object.insert("organization".into(), organization.into());
    object.insert("entra_id".into(), user.entra_id.clone().into());
    object.insert("status".into(), user.status.clone().into());
    object.insert("status_reason".into(), user.status_reason.clone().into());
    object.insert("groups".into(), user.groups.clone().into());
    object.insert("microsoft".into(), microsoft::user_json(user, sku_names));
    Value::Object(object)
}

async fn list_users(
    State(state): State<ApiState>,
    query: Result<Query<DirectoryQuery>, QueryRejection>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let mut users = Vec::new();
    for organization in organizations(&state.runner, query.connection.as_deref())? {
        let sku_names = microsoft::sku_names(&state.store, &organization).await?;
        for user in state.store.users(&organization).await? {
            users.push(user_json(&user, &organization, &sku_names));
        }
    }
    Ok(Json(users))
}

/// One directory user by its directory id, if it belongs to a configured connection's
/// organization.
async fn get_user(
    State(state): State<ApiState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    match state.store.user(id).await? {
        Some((organization, user)) if organizations(&state.runner, None)?.contains(&organization) => {
            let sku_names = microsoft::sku_names(&state.store, &organization).await?;
            Ok(Json(user_json(&user, &organization, &sku_names)))
        }
        _ => Err(ApiError::not_found(format!("user {id}"))),
    }
}

/// Why the sync treats a directory user as it does (scope, link, unit, roles), from what its
/// connection last read, with the user's recent actions: what `entra-sync explain` prints.
async fn explain_user(
    State(state): State<ApiState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    let Some((organization, user)) = state.store.user(id).await? else {
        return Err(ApiError::not_found(format!("user {id}")));
    };
    let connection = state
        .runner
        .connections()
        .into_iter()
        .find(|connection| connection.organization == organization)
        .ok_or_else(|| ApiError::not_found(format!("user {id}")))?;
    let Some(entra_id) = user.entra_id else {
        return Err(ApiError::new(
            Code::NotFound,
            format!("user {id} is not linked to Entra: the sync has nothing to explain"),
        ));
    };
    let sync_state = state
        .store
        .connection_state(&connection.name, &connection.organization, clock::now())
        .await?;
    let snapshot = state.store.load_snapshot(sync_state.id).await?;
    let Some(entra_user) = snapshot.users.get(&entra_id) else {
        return Err(ApiError::new(
            Code::NotFound,
            format!(
                "Entra user {entra_id} is not in what connection {:?} last read",
                connection.name
            ),
        ));
    };
    let directory = Directory::new(&state.store, sync_state.organization_id);
    let target = directory.load().await.map_err(ApiError::internal)?;
    let explanation = explain::explain(entra_user, &snapshot, &target, &connection.policy);
    let actions: Vec<Value> = state
        .store
        .user_actions(&entra_id, 20)
        .await?
        .iter()
        .map(|(run_id, action)| json!({ "run_id": run_id, "action": action }))
        .collect();
    Ok(Json(
        json!({ "explanation": explanation, "recent_actions": actions }),
    ))
}

async fn list_groups(
    State(state): State<ApiState>,
    query: Result<Query<DirectoryQuery>, QueryRejection>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let mut groups = Vec::new();
    for organization in organizations(&state.runner, query.connection.as_deref())? {
        for group in state.store.groups(&organization).await? {
            let mut group = json!(group);
            group["organization"] = json!(organization);
            groups.push(group);
        }
    }
    Ok(Json(groups))
}

async fn list_departments(
    State(state): State<ApiState>,
    query: Result<Query<DirectoryQuery>, QueryRejection>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let mut departments = Vec::new();
    for organization in organizations(&state.runner, query.connection.as_deref())? {
        for department in state.store.departments(&organization).await? {
            let mut department = json!(department);
            department["organization"] = json!(organization);
            departments.push(department);
        }
    }
    Ok(Json(departments))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesQuery {
    since: Option<i64>,
    limit: Option<i64>,
    connection: Option<String>,
}

/// The change feed: the directory changes after cursor `since` (0, the default, is the
/// beginning), oldest first; 410 `cursor_expired` when the retention deleted some of them. `next` is the cursor to ask with next time; `more` says whether
/// another page is already waiting.
async fn list_changes(
    State(state): State<ApiState>,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let since = query.since.unwrap_or(0);
    if since < 0 {
        return Err(ApiError::new(
            Code::BadRequest,
            "since must be a cursor from an earlier answer, or 0 for the beginning",
        ));
    }
    let oldest = changes::oldest_cursor(&state.store).await?;
    if since < oldest {
        return Err(ApiError::new(
            Code::CursorExpired,
            format!(
                "the changes after cursor {since} were deleted with the history ([server] history_days): \
                 read the directory again (GET /api/v1/users, /groups, /departments), then follow the feed from cursor {oldest}"
            ),
        ));
    }
    let limit = query.limit.unwrap_or(DEFAULT_CHANGES).clamp(1, MAX_CHANGES);
    let organizations: Vec<String> = organizations(&state.runner, query.connection.as_deref())?
        .into_iter()
        .collect();
    let mut changes = changes::since(&state.store, &organizations, since, limit + 1).await?;
    let more = changes.len() as i64 > limit;
    changes.truncate(limit as usize);
    let next = changes.last().map_or(since, |change| change.cursor);
    Ok(Json(json!({ "changes": changes, "next": next, "more": more })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailsQuery {
    connection: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

/// Welcome emails, newest first, with their status, attempts and last error.
async fn list_emails(
    State(state): State<ApiState>,
    query: Result<Query<EmailsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    if let Some(status) = &query.status
        && !["queued", "sending", "sent", "failed"].contains(&status.as_str())
    {
        return Err(ApiError::new(
            Code::BadRequest,
            format!("status {status:?}: use queued, sending, sent or failed"),
        ));
    }
    if let Some(name) = &query.connection {
        find_connection(&state.runner, name)?;
    }
    let limit = query.limit.unwrap_or(DEFAULT_RUNS).clamp(1, MAX_RUNS);
    let emails = mail::emails(
        &state.store,
        query.connection.as_deref(),
        query.status.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(json!(emails)))
}

fn bad_path(rejection: PathRejection) -> ApiError {
    ApiError::new(Code::BadRequest, rejection.body_text())
}

fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::new(Code::BadRequest, rejection.body_text())
}
