//! The control API under `/_emulator/` (no auth, JSON): tests, the demo and the bench change the
//! tenant, script faults, move the clock and read request counts through it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::faults::FaultSpec;
use crate::model::{Directory, ModelError};
use crate::server::AppState;

type Shared = State<Arc<AppState>>;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", delete(hard_delete_user).patch(patch_user))
        .route("/users/{id}/{action}", post(user_action))
        .route("/groups", get(list_groups).post(create_group))
        .route("/groups/{id}", delete(delete_group).patch(patch_group))
        .route("/groups/{id}/members", post(add_member))
        .route("/groups/{id}/members/{member}", delete(remove_member))
        .route("/faults", post(add_fault).delete(clear_faults))
        .route("/clock", post(advance_clock))
        .route("/secret/expire", post(expire_secret))
        .route("/churn", post(churn))
        .route("/requests", get(requests))
        .route("/stats", get(stats).delete(reset_stats))
        .route("/tenant", get(tenant))
        .route("/tenant/premium", put(set_premium))
        .route("/app/roles", put(set_roles))
        .route("/app/secret-expiry", put(set_secret_expiry))
}

fn user_json(directory: &Directory, id: &str) -> Result<Value, ModelError> {
    Ok(crate::render::user_control_json(id, directory.user(id)?))
}

fn group_json(directory: &Directory, id: &str) -> Result<Value, ModelError> {
    let group = directory
        .groups
        .get(id)
        .ok_or_else(|| ModelError::NotFound(format!("no group {id}")))?;
    let members: Vec<&str> = group
        .members
        .iter()
        .filter(|(member, kind)| directory.member_is_visible(member, **kind))
        .map(|(member, _)| &**member)
        .collect();
    Ok(json!({
        "id": id,
        "displayName": group.display_name,
        "description": group.description,
        "memberIds": members,
    }))
}

async fn list_users(State(state): Shared) -> Json<Value> {
    let directory = state.read();
    let mut users: Vec<Value> = directory
        .users
        .iter()
        .map(|(id, user)| crate::render::user_control_json(id, user))
        .collect();
    users.extend(directory.purged.iter().map(|(id, user)| {
        let mut value = crate::render::user_control_json(id, user);
        value["state"] = json!("deleted");
        value
    }));
    Json(Value::Array(users))
}

async fn create_user(State(state): Shared, Json(body): Json<Value>) -> Result<Response, ModelError> {
    let now = state.clock.now();
    let mut directory = state.write();
    let id = directory.create_user(&body, now, crate::model::UpnCheck::Scan)?;
    Ok((StatusCode::CREATED, Json(user_json(&directory, &id)?)).into_response())
}

async fn patch_user(
    State(state): Shared,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ModelError> {
    let mut directory = state.write();
    directory.patch_user(&id, &body)?;
    Ok(Json(user_json(&directory, &id)?))
}

async fn user_action(
    State(state): Shared,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Value>, ModelError> {
    let now = state.clock.now();
    let mut directory = state.write();
    match action.as_str() {
        "disable" => directory.set_enabled(&id, false)?,
        "enable" => directory.set_enabled(&id, true)?,
        "soft-delete" => directory.soft_delete_user(&id, now)?,
        "restore" => directory.restore_user(&id)?,
        _ => return Err(ModelError::NotFound(format!("no user action {action}"))),
    }
    Ok(Json(user_json(&directory, &id)?))
}

async fn hard_delete_user(State(state): Shared, Path(id): Path<String>) -> Result<StatusCode, ModelError> {
    state.write().hard_delete_user(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_groups(State(state): Shared) -> Result<Json<Value>, ModelError> {
    let directory = state.read();
    let groups = directory
        .groups
        .keys()
        .map(|id| group_json(&directory, id))
        .collect::<Result<Vec<Value>, ModelError>>()?;
    Ok(Json(Value::Array(groups)))
}

async fn create_group(State(state): Shared, Json(body): Json<Value>) -> Result<Response, ModelError> {
    let now = state.clock.now();
    let mut directory = state.write();
    let id = directory.create_group(&body, now)?;
    Ok((StatusCode::CREATED, Json(group_json(&directory, &id)?)).into_response())
}

async fn patch_group(
    State(state): Shared,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ModelError> {
    let mut directory = state.write();
    directory.patch_group(&id, &body)?;
    Ok(Json(group_json(&directory, &id)?))
}

async fn delete_group(State(state): Shared, Path(id): Path<String>) -> Result<StatusCode, ModelError> {
    state.write().delete_group(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct MemberRef {
    id: String,
}

async fn add_member(
    State(state): Shared,
    Path(id): Path<String>,
    Json(body): Json<MemberRef>,
) -> Result<Json<Value>, ModelError> {
    let mut directory = state.write();
    directory.add_member(&id, &body.id)?;
    Ok(Json(group_json(&directory, &id)?))
}

async fn remove_member(
    State(state): Shared,
    Path((id, member)): Path<(String, String)>,
) -> Result<StatusCode, ModelError> {
    state.write().remove_member(&id, &member)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_fault(State(state): Shared, Json(spec): Json<FaultSpec>) -> StatusCode {
    state
        .faults
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .add(spec);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(state): Shared) -> StatusCode {
    state
        .faults
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clear();
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
struct ClockMove {
    advance_seconds: i64,
}

async fn advance_clock(State(state): Shared, Json(body): Json<ClockMove>) -> Json<Value> {
    state.clock.advance(body.advance_seconds);
    let now = state.clock.now();
    state.write().sweep(now);
    Json(json!({ "now": crate::clock::iso(now) }))
}

async fn expire_secret(State(state): Shared) -> StatusCode {
    state.issuer.set_secret_end(state.clock.now());
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretExpiry {
    end_date_time: String,
}

async fn set_secret_expiry(
    State(state): Shared,
    Json(body): Json<SecretExpiry>,
) -> Result<StatusCode, ModelError> {
    let end = crate::clock::parse_iso(&body.end_date_time).ok_or_else(|| {
        ModelError::BadRequest(format!(
            "endDateTime {:?} is not a time such as 2027-01-10T00:00:00Z",
            body.end_date_time
        ))
    })?;
    state.issuer.set_secret_end(end);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct ChurnRequest {
    events: usize,
}

async fn churn(State(state): Shared, Json(body): Json<ChurnRequest>) -> Json<Value> {
    Json(json!({ "events": state.churn(body.events) }))
}

async fn requests(State(state): Shared) -> Json<Value> {
    Json(state.requests_json())
}

async fn stats(State(state): Shared) -> Json<Value> {
    Json(state.stats_json())
}

async fn reset_stats(State(state): Shared) -> StatusCode {
    state.reset_stats();
    StatusCode::NO_CONTENT
}

async fn tenant(State(state): Shared) -> Json<Value> {
    Json(state.read().to_fixture())
}

#[derive(serde::Deserialize)]
struct Premium {
    premium: bool,
}

async fn set_premium(State(state): Shared, Json(body): Json<Premium>) -> StatusCode {
    state.set_premium(body.premium);
    StatusCode::NO_CONTENT
}

async fn set_roles(State(state): Shared, Json(roles): Json<Vec<String>>) -> StatusCode {
    state.issuer.set_roles(roles);
    StatusCode::NO_CONTENT
}
