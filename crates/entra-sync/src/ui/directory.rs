//! The directory pages: users (searchable, with status badges), a user's page (its directory
//! record, its Microsoft data, why it is in or out of scope, its history, Sync this user), and
//! groups (with Sync this group) and departments with their members.

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use entra_sync_core::explain;
use entra_sync_core::scope::ScopeDecision;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Session;
use super::queries::{MAX_LISTED_USERS, UserRow};
use super::{Ui, UiError};
use crate::clock;
use crate::serve::RunFailed;
use crate::targeted::{OneMode, Subject};
use crate::targets::Target;
use crate::targets::directory::Directory;

/// A user's status as a badge: its text and its tone (`ok`, `warn`, `bad`).
fn badge(ui: &Ui, user: &UserRow) -> Value {
    let (text, tone) = match user.status.as_str() {
        "active" => ("Active".to_owned(), "ok"),
        "disabled" => (
            user.status_reason
                .clone()
                .unwrap_or_else(|| "Disabled".to_owned()),
            "warn",
        ),
        "soft_deleted" => {
            let retention = ui
                .connection_of(&user.organization)
                .map_or(90, |connection| connection.policy.soft_delete_retention_days);
            let text = match user.soft_deleted_at {
                Some(at) => {
                    let gone = (clock::now() - at).num_days();
                    let left = (i64::from(retention) - gone).max(0);
                    format!("Soft-deleted: {left} days left before purge")
                }
                None => "Soft-deleted".to_owned(),
            };
            (text, "bad")
        }
        "purged" => ("Purged (tombstone)".to_owned(), "bad"),
        other => (other.to_owned(), "warn"),
    };
    json!({ "text": text, "tone": tone })
}

fn user_json(ui: &Ui, user: &UserRow) -> Value {
    let text = |name: &str| user.attributes.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "id": user.id,
        "organization": user.organization,
        "entra_id": user.entra_id,
        "display_name": text("display_name"),
        "email": text("email"),
        "user_principal_name": text("user_principal_name"),
        "job_title": text("job_title"),
        "department": text("department"),
        "unit": text("unit"),
        "roles": text("roles"),
        "groups": user.groups,
        "status": user.status,
        "badge": badge(ui, user),
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct UsersQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
}

const USER_STATUSES: &[(&str, &str)] = &[
    ("active", "Active"),
    ("disabled", "Disabled"),
    ("soft_deleted", "Soft-deleted"),
    ("purged", "Purged"),
];

pub(super) async fn users(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Query(query): Query<UsersQuery>,
) -> Result<Html<String>, UiError> {
    let status = Some(query.status.as_str()).filter(|status| !status.is_empty());
    let (rows, total) = ui
        .store
        .search_users(&ui.organizations(), &query.q, status)
        .await?;
    let statuses: Vec<Value> = USER_STATUSES
        .iter()
        .map(|(value, label)| json!({ "value": value, "label": label }))
        .collect();
    ui.page(
        "users.html",
        &session,
        json!({
            "title": "Users",
            "section": "users",
            "users": rows.iter().map(|user| user_json(&ui, user)).collect::<Vec<_>>(),
            "total": total,
            "limit": MAX_LISTED_USERS,
            "q": query.q,
            "status": query.status,
            "statuses": statuses,
        }),
    )
}

/// The Entra user's attributes as Microsoft has them, by Graph's names.
fn microsoft_data(user: &entra_sync_core::model::EntraUser) -> Vec<Value> {
    let value = serde_json::to_value(user).unwrap_or(Value::Null);
    let Value::Object(fields) = value else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter(|(_, value)| !value.is_null() && value != &json!([]))
        .map(|(name, value)| {
            let text = match value {
                Value::String(text) => text,
                Value::Array(items) => items
                    .iter()
                    .map(|item| item.as_str().map_or_else(|| item.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            json!({ "name": name.replace('_', " "), "value": text })
        })
        .collect()
}

pub(super) async fn user(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
) -> Result<Html<String>, UiError> {
    user_page(&ui, &session, id, Value::Null).await
}

/// A user's page, with the result of a one-user sync when there was one.
async fn user_page(ui: &Ui, session: &Session, id: i64, notice: Value) -> Result<Html<String>, UiError> {
    let not_found = || UiError::NotFound(format!("There is no user {id}."));
    let user = ui.store.user_row(id).await?.ok_or_else(not_found)?;
    let shared = ui.connection_of(&user.organization).ok_or_else(not_found)?;
    let connection = shared.as_ref();
    let attributes: Vec<Value> = user
        .attributes
        .iter()
        .map(|(name, value)| json!({ "name": name.replace('_', " "), "value": value.as_str().map_or_else(|| value.to_string(), str::to_owned) }))
        .collect();
    let mut context = json!({
        "title": user.attributes.get("display_name").and_then(Value::as_str).unwrap_or("User"),
        "section": "users",
        "user": user_json(ui, &user),
        "connection": connection.name,
        "attributes": attributes,
        "groups": user.groups,
        "notice": notice,
    });
    if let Some(entra_id) = &user.entra_id {
        let state = ui
            .store
            .connection_state(&connection.name, &connection.organization, clock::now())
            .await?;
        let snapshot = ui.store.load_snapshot(state.id).await?;
        if let Some(entra_user) = snapshot.users.get(entra_id) {
            let directory = Directory::new(&ui.store, state.organization_id);
            let target = directory
                .load()
                .await
                .map_err(|error| UiError::Internal(error.to_string()))?;
            let explanation = explain::explain(entra_user, &snapshot, &target, &connection.policy);
            let (in_scope, rule) = match &explanation.scope {
                ScopeDecision::In(rule) => (true, rule),
                ScopeDecision::Out(rule) => (false, rule),
            };
            context["scope"] = json!({ "in": in_scope, "rule": rule });
            context["explanation"] = json!(explanation.to_string());
            context["microsoft"] = json!(microsoft_data(entra_user));
        }
        let actions: Vec<Value> = ui
            .store
            .user_actions(entra_id, 50)
            .await?
            .iter()
            .map(|(run_id, action)| {
                json!({
                    "run_id": run_id,
                    "kind": action.kind.replace('_', " "),
                    "detail": action.detail.to_string(),
                    "outcome": action.outcome,
                })
            })
            .collect();
        context["actions"] = json!(actions);
        if let Some((organization, record)) = ui.store.user(id).await? {
            let names = crate::microsoft::sku_names(&ui.store, &organization).await?;
            context["microsoft_data"] = crate::microsoft::user_json(&record, &names);
        }
    }
    ui.page("user.html", session, context)
}

#[derive(Debug, Deserialize)]
pub(super) struct OneSyncForm {
    #[serde(default)]
    mode: OneMode,
}

/// Sync this user: info, downstream or full, through the same one-user sync as the API; the
/// page shows the run's result with a link to it.
pub(super) async fn sync_user(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Form(form): Form<OneSyncForm>,
) -> Result<Response, UiError> {
    let not_found = || UiError::NotFound(format!("There is no user {id}."));
    let user = ui.store.user_row(id).await?.ok_or_else(not_found)?;
    let connection = ui.connection_of(&user.organization).ok_or_else(not_found)?;
    let Some(entra_id) = user.entra_id.clone() else {
        return Err(UiError::Conflict(
            "This user is not linked to Entra, so there is nothing to sync it from.".into(),
        ));
    };
    let (status, notice) = one_sync(&ui, &connection.name, Subject::User(entra_id), form.mode).await?;
    let page = user_page(&ui, &session, id, notice).await?;
    Ok((status, page).into_response())
}

/// Runs a one-user or one-group sync and says how it went, as a page notice.
async fn one_sync(
    ui: &Ui,
    connection: &str,
    subject: Subject,
    mode: OneMode,
) -> Result<(StatusCode, Value), UiError> {
    let permit = match ui.runner.try_begin(connection) {
        Ok(permit) => permit,
        Err(refused) => {
            return Ok((
                StatusCode::CONFLICT,
                json!({ "kind": "error", "text": refused.to_string() }),
            ));
        }
    };
    match ui.runner.run_one(permit, subject, mode).await {
        Ok(summary) => {
            let kind = if summary.status == "succeeded" {
                "ok"
            } else {
                "error"
            };
            let mut text = format!("Sync ({}) {}", mode.as_str(), summary.status);
            if let Some(error) = &summary.error {
                text.push_str(&format!(": {error}"));
            }
            Ok((
                StatusCode::OK,
                json!({ "kind": kind, "text": text, "run_id": summary.run_id }),
            ))
        }
        Err(RunFailed::Sync(error)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "kind": "error", "text": format!("The sync cannot start: {error}") }),
        )),
        Err(error) => Err(UiError::Internal(error.to_string())),
    }
}

pub(super) async fn groups(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, UiError> {
    let mut groups = Vec::new();
    for organization in ui.organizations() {
        for group in ui.store.groups(&organization).await? {
            let mut group = json!(group);
            group["organization"] = json!(organization);
            groups.push(group);
        }
    }
    ui.page(
        "groups.html",
        &session,
        json!({ "title": "Groups", "section": "groups", "groups": groups }),
    )
}

pub(super) async fn group(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
) -> Result<Html<String>, UiError> {
    group_page(&ui, &session, id, Value::Null).await
}

async fn group_page(ui: &Ui, session: &Session, id: i64, notice: Value) -> Result<Html<String>, UiError> {
    let group = ui
        .store
        .group_members(id)
        .await?
        .filter(|group| ui.connection_of(&group.organization).is_some())
        .ok_or_else(|| UiError::NotFound(format!("There is no group {id}.")))?;
    let mut page = members_context(
        ui,
        "groups",
        "Group",
        &group.name,
        &group.organization,
        &group.members,
    );
    page["group"] = json!({ "id": id, "linked": group.entra_id.is_some() });
    page["notice"] = notice;
    ui.page("members.html", session, page)
}

/// Sync this group: the group and every direct member user, as the API's one-group sync.
pub(super) async fn sync_group(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Form(form): Form<OneSyncForm>,
) -> Result<Response, UiError> {
    let not_found = || UiError::NotFound(format!("There is no group {id}."));
    let group = ui.store.group_members(id).await?.ok_or_else(not_found)?;
    let connection = ui.connection_of(&group.organization).ok_or_else(not_found)?;
    let Some(entra_id) = group.entra_id else {
        return Err(UiError::Conflict(
            "This group is not linked to Entra, so there is nothing to sync it from.".into(),
        ));
    };
    let (status, notice) = one_sync(&ui, &connection.name, Subject::Group(entra_id), form.mode).await?;
    let page = group_page(&ui, &session, id, notice).await?;
    Ok((status, page).into_response())
}

pub(super) async fn departments(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, UiError> {
    let mut departments = Vec::new();
    for organization in ui.organizations() {
        for department in ui.store.departments(&organization).await? {
            let mut department = json!(department);
            department["organization"] = json!(organization);
            departments.push(department);
        }
    }
    ui.page(
        "departments.html",
        &session,
        json!({ "title": "Departments", "section": "departments", "departments": departments }),
    )
}

pub(super) async fn department(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
) -> Result<Html<String>, UiError> {
    let (name, organization, members) = ui
        .store
        .department_members(id)
        .await?
        .filter(|(_, organization, _)| ui.connection_of(organization).is_some())
        .ok_or_else(|| UiError::NotFound(format!("There is no department {id}.")))?;
    members_page(
        &ui,
        &session,
        "departments",
        "Department",
        &name,
        &organization,
        &members,
    )
}

fn members_page(
    ui: &Ui,
    session: &Session,
    section: &str,
    kind: &str,
    name: &str,
    organization: &str,
    members: &[UserRow],
) -> Result<Html<String>, UiError> {
    let context = members_context(ui, section, kind, name, organization, members);
    ui.page("members.html", session, context)
}

fn members_context(
    ui: &Ui,
    section: &str,
    kind: &str,
    name: &str,
    organization: &str,
    members: &[UserRow],
) -> Value {
    json!({
        "title": format!("{kind} {name}"),
        "section": section,
        "kind": kind,
        "name": name,
        "organization": organization,
        "users": members.iter().map(|user| user_json(ui, user)).collect::<Vec<_>>(),
    })
}
