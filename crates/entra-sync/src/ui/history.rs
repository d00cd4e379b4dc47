//! The history pages: runs filterable by connection and status, with a chart of created, updated
//! and removed users; a run's page with its per-user actions and before and after values; and
//! for a run a guard stopped, its stored plan with Approve and Discard.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Session;
use super::connections::run_json;
use super::queries::EntraNames;
use super::{Ui, UiError, chart};
use crate::clock;
use crate::serve::RunFailed;
use crate::store::ActionRecord;
use crate::sync::ApproveError;

/// Runs the history page lists at most, and how far back it looks for runs of one status.
const LISTED_RUNS: usize = 200;
const SEARCHED_RUNS: i64 = 5_000;
/// Actions a run's page shows at most; the CLI and the API have them all.
const SHOWN_ACTIONS: usize = 1_000;

/// The counts a page shows, in the contract's order, leaving out zeros.
const COUNT_NAMES: &[(&str, &str)] = &[
    ("created", "created"),
    ("updated", "updated"),
    ("disabled", "disabled"),
    ("soft_deleted", "soft-deleted"),
    ("deleted", "deleted"),
    ("purged", "purged"),
    ("restored", "restored"),
    ("unchanged", "unchanged"),
    ("skipped", "skipped"),
    ("conflicts", "conflicts"),
    ("unassigned", "unassigned"),
    ("groups_created", "groups created"),
    ("groups_updated", "groups updated"),
    ("groups_deleted", "groups deleted"),
    ("memberships_added", "memberships added"),
    ("memberships_removed", "memberships removed"),
    ("departments_created", "departments created"),
    ("departments_assigned", "departments assigned"),
    ("departments_deleted", "departments deleted"),
];

/// A run's non-zero counts as `[{name, label, value}]`.
pub(super) fn counts_list(counts: Option<&Value>) -> Vec<Value> {
    let Some(counts) = counts else {
        return Vec::new();
    };
    COUNT_NAMES
        .iter()
        .filter_map(|(name, label)| {
            let value = counts.get(*name)?.as_u64().filter(|value| *value > 0)?;
            Some(json!({ "name": name, "label": label, "value": value }))
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub(super) struct RunsFilter {
    #[serde(default)]
    connection: String,
    #[serde(default)]
    status: String,
}

/// The statuses a run can have, for the filter.
const STATUSES: &[&str] = &[
    "succeeded",
    "failed",
    "blocked",
    "approved",
    "discarded",
    "dry_run",
    "running",
    "interrupted",
];

pub(super) async fn list(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Query(filter): Query<RunsFilter>,
) -> Result<Html<String>, UiError> {
    let connection = Some(filter.connection.as_str()).filter(|name| !name.is_empty());
    if let Some(name) = connection {
        ui.connection(name)?;
    }
    let searched = if filter.status.is_empty() {
        LISTED_RUNS as i64
    } else {
        SEARCHED_RUNS
    };
    let runs: Vec<_> = ui
        .store
        .runs(connection, searched)
        .await?
        .into_iter()
        .filter(|run| filter.status.is_empty() || run.status == filter.status)
        .take(LISTED_RUNS)
        .collect();
    let connections: Vec<String> = ui
        .runner
        .connections()
        .iter()
        .map(|connection| connection.name.clone())
        .collect();
    ui.page(
        "runs.html",
        &session,
        json!({
            "title": "History",
            "section": "runs",
            "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
            "chart": chart::runs_chart(&runs),
            "connections": connections,
            "statuses": STATUSES,
            "filter": { "connection": filter.connection, "status": filter.status },
        }),
    )
}

/// Whether an action's `entra_id` names a user (the others name a group or nothing).
fn on_user(kind: &str) -> bool {
    kind.ends_with("_user") || matches!(kind, "add_membership" | "remove_membership" | "set_department")
}

/// Whom an action touches, by name, with a link to its page when it is in the directory.
fn subject(action: &ActionRecord, names: &EntraNames) -> Value {
    let Some(entra_id) = action.entra_id.as_deref() else {
        return Value::Null;
    };
    if on_user(&action.kind) {
        let (id, name) = match names.users.get(entra_id) {
            Some((id, name)) => (Some(*id), name.clone()),
            // Not in the directory (yet): a created user's name is in its attributes.
            None => (
                action.directory_id,
                action.detail["attributes"]["display_name"]
                    .as_str()
                    .unwrap_or(entra_id)
                    .to_owned(),
            ),
        };
        json!({ "name": name, "href": id.map(|id| format!("/ui/users/{id}")) })
    } else {
        match names.groups.get(entra_id) {
            Some((id, name)) => json!({ "name": name, "href": format!("/ui/groups/{id}") }),
            None => {
                json!({ "name": action.detail["name"].as_str().unwrap_or(entra_id), "href": Value::Null })
            }
        }
    }
}

/// An action as the run page shows it: what, on whom, and the fields before and after.
fn action_json(action: &ActionRecord, names: &EntraNames) -> Value {
    let detail = &action.detail;
    let text = |key: &str| detail.get(key).and_then(Value::as_str).map(str::to_owned);
    let mut changes: Vec<Value> = detail
        .get("changes")
        .and_then(Value::as_array)
        .map(|changes| {
            changes
                .iter()
                .map(|change| json!({ "field": change["field"], "before": change["before"], "after": change["after"] }))
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Object(attributes)) = detail.get("attributes") {
        changes.extend(
            attributes
                .iter()
                .map(|(field, value)| json!({ "field": field, "before": Value::Null, "after": value })),
        );
    }
    let note = match action.kind.as_str() {
        "disable_user" | "soft_delete_user" | "delete_user" => {
            text("reason").map(|reason| reason.replace('_', " "))
        }
        "create_group" | "update_group" | "create_department" | "delete_department" => text("name"),
        "add_membership" | "remove_membership" => text("group").map(|group| {
            let name = names
                .groups
                .get(&group)
                .map_or(group.as_str(), |(_, name)| name.as_str());
            format!("group {name}")
        }),
        "set_department" => Some(text("department").unwrap_or_else(|| "no department".into())),
        _ => None,
    };
    json!({
        "seq": action.seq,
        "kind": action.kind.replace('_', " "),
        "subject": subject(action, names),
        "changes": changes,
        "note": note,
        "outcome": action.outcome,
    })
}

pub(super) async fn show(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
) -> Result<Html<String>, UiError> {
    let run = ui
        .store
        .run(id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("There is no run {id}.")))?;
    let actions = ui.store.run_actions(id).await?;
    let conflicts = ui.store.run_conflicts(id).await?;
    let plan = ui.store.plan_guards(id).await?;
    let shown = &actions[..actions.len().min(SHOWN_ACTIONS)];
    let mentioned: Vec<&str> = shown
        .iter()
        .flat_map(|action| [action.entra_id.as_deref(), action.detail["group"].as_str()])
        .flatten()
        .collect();
    // A run of a connection no longer in the config shows ids instead of names.
    let names = match ui.connection(&run.connection) {
        Ok(connection) => ui.store.entra_names(&connection.organization, &mentioned).await?,
        Err(_) => EntraNames::default(),
    };
    let shown: Vec<Value> = shown.iter().map(|action| action_json(action, &names)).collect();
    ui.page(
        "run.html",
        &session,
        json!({
            "title": format!("Run {id}"),
            "section": "runs",
            "run": run_json(&run),
            "actions": shown,
            "actions_total": actions.len(),
            "conflicts": conflicts,
            "plan": plan.map(|(guards, state)| json!({ "guards": guards, "state": state })),
        }),
    )
}

/// Applies exactly the stored plan, while no other run of the connection goes.
pub(super) async fn approve(State(ui): State<Ui>, Path(id): Path<i64>) -> Result<Response, UiError> {
    let run = ui
        .store
        .run(id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("There is no run {id}.")))?;
    let permit = ui
        .runner
        .try_begin(&run.connection)
        .map_err(|refused| UiError::Conflict(format!("{refused}.")))?;
    match ui.runner.approve(permit, id).await {
        Ok(_) => Ok(Redirect::to(&format!("/ui/runs/{id}")).into_response()),
        Err(RunFailed::Approve(
            error @ (ApproveError::NoPlan(_) | ApproveError::AlreadyApplied(_) | ApproveError::Discarded(_)),
        )) => Err(UiError::Conflict(format!("{error}."))),
        Err(RunFailed::Approve(error @ ApproveError::Stale { .. })) => Err(UiError::Conflict(format!(
            "{error}. Discard this plan; the next sync plans afresh."
        ))),
        Err(error) => Err(UiError::Internal(error.to_string())),
    }
}

/// Drops the stored plan: nothing of it is applied, and the next run plans afresh from Entra.
pub(super) async fn discard(State(ui): State<Ui>, Path(id): Path<i64>) -> Result<Response, UiError> {
    if ui.store.discard_plan(id, clock::now()).await? {
        tracing::info!(run_id = id, "stored plan discarded from the admin UI");
        Ok(Redirect::to(&format!("/ui/runs/{id}")).into_response())
    } else {
        Err(UiError::Conflict(format!(
            "Run {id} has no plan awaiting approval."
        )))
    }
}
