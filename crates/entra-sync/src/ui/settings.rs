//! The connection settings forms: Set up and Edit for connections kept in the database (the
//! config file's stay read-only), and Enable, Disable and Delete behind a confirmation. A form
//! becomes the JSON API's definition and goes through the `Runner`, so it is validated exactly
//! as an API request is; a refusal's message is shown above the form, which keeps what was typed
//! except the client secret.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use entra_sync_core::map::Field;
use entra_sync_core::policy::Policy;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth::Session;
use super::connections::url_segment;
use super::{Ui, UiError};
use crate::clock;
use crate::config::Schedule;
use crate::serve::{EditRefused, Origin};

/// Values of each scope section the picker offers at most.
const TENANT_VALUES: i64 = 500;

/// The definition keys the form edits; an edit keeps every other key (`enabled`) as it is, and
/// the email keys the form has no field for (`retry_initial`, `max_attempts`).
const FORM_KEYS: [&str; 14] = [
    "email",
    "organization",
    "tenant_id",
    "client_id",
    "authority_url",
    "graph_url",
    "schedule",
    "start_at",
    "full_sync_every",
    "scope",
    "options",
    "fields",
    "assignments",
    "guards",
];

const SCOPE_SECTIONS: [&str; 5] = [
    "groups",
    "user_types",
    "domains",
    "office_locations",
    "departments",
];

/// Options that are yes or no: a checkbox, absent from the form when unticked.
const OPTION_FLAGS: [&str; 5] = [
    "sync_departments",
    "sync_groups",
    "remove_group_assignments_not_in_entra",
    "remove_users_not_in_entra",
    "welcome_email",
];

/// Options chosen from a list, sent as the config file writes them.
const OPTION_CHOICES: [&str; 5] = [
    "existing_users",
    "groups_to_sync",
    "on_disabled",
    "on_deleted",
    "on_out_of_scope",
];

const GUARDS: [&str; 4] = [
    "max_deprovisions",
    "max_deprovision_percent",
    "max_membership_removals_percent",
    "max_source_drop_percent",
];

/// The welcome email's keys the form edits, each as `email_<key>` in the form. A mail server
/// that needs a login is set in the config file: the API keeps no SMTP password.
const EMAIL_KEYS: [&str; 6] = ["host", "port", "tls", "from", "subject", "body"];

/// A posted form, with repeated names kept (a picker's ticked values).
struct Posted(Vec<(String, String)>);

impl Posted {
    fn parse(body: &[u8]) -> Posted {
        Posted(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `name`, trimmed; empty when absent.
    fn one(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.trim())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    }
}

fn field_name(field: Field) -> String {
    serde_json::to_value(field)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A whole number typed in a field; empty is "the default".
fn number(form: &Posted, key: &str, errors: &mut Vec<String>) -> Option<Value> {
    let text = form.one(key);
    if text.is_empty() {
        return None;
    }
    match text.parse::<u64>() {
        Ok(number) => Some(json!(number)),
        Err(_) => {
            errors.push(format!("{key}: {text:?} is not a whole number"));
            None
        }
    }
}

/// A unit or role rule typed one a line: names, or `Entra value = name` on every line.
fn name_rule(text: &str) -> Result<Option<Value>, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let pairs: Vec<(&str, &str)> = lines.iter().filter_map(|line| line.split_once('=')).collect();
    if lines.is_empty() {
        Ok(None)
    } else if pairs.is_empty() {
        Ok(Some(json!(lines)))
    } else if pairs.len() == lines.len() {
        let table: Map<String, Value> = pairs
            .into_iter()
            .map(|(from, to)| (from.trim().to_owned(), json!(to.trim())))
            .collect();
        Ok(Some(Value::Object(table)))
    } else {
        Err("write one name a line, or `Entra value = name` on every line, not both".into())
    }
}

/// The definition keys the form sets (`FORM_KEYS`), and what in the form could not be read.
fn definition_from(form: &Posted) -> (Map<String, Value>, Vec<String>) {
    let mut definition = Map::new();
    let mut errors = Vec::new();
    for key in [
        "organization",
        "tenant_id",
        "client_id",
        "authority_url",
        "graph_url",
        "full_sync_every",
    ] {
        let value = form.one(key);
        if !value.is_empty() {
            definition.insert(key.into(), json!(value));
        }
    }
    if form.one("schedule_kind") == "cron" {
        match form.one("cron") {
            "" => errors
                .push("schedule: give a cron expression, as in `0 6 * * 1-5`, or choose an interval".into()),
            cron => {
                definition.insert("schedule".into(), json!(cron));
            }
        }
    } else {
        let interval = form.one("interval");
        if !interval.is_empty() {
            definition.insert("schedule".into(), json!(format!("every {interval}")));
        }
        let start_at = form.one("start_at");
        if !start_at.is_empty() {
            definition.insert("start_at".into(), json!(start_at));
        }
    }

    let mut scope = Map::new();
    for section in SCOPE_SECTIONS {
        let picked = format!("scope_{section}");
        let mut values: Vec<String> = form.all(&picked).map(str::to_owned).collect();
        for other in form.one(&format!("{picked}_other")).split(',').map(str::trim) {
            if !other.is_empty() && !values.iter().any(|value| value.eq_ignore_ascii_case(other)) {
                values.push(other.to_owned());
            }
        }
        if !values.is_empty() {
            scope.insert(section.into(), json!(values));
        }
    }
    if !form.one("group_membership").is_empty() {
        scope.insert("group_membership".into(), json!(form.one("group_membership")));
    }
    if !scope.is_empty() {
        definition.insert("scope".into(), Value::Object(scope));
    }

    let mut options = Map::new();
    for flag in OPTION_FLAGS {
        options.insert(flag.into(), json!(form.one(flag) == "true"));
    }
    for choice in OPTION_CHOICES {
        if !form.one(choice).is_empty() {
            options.insert(choice.into(), json!(form.one(choice)));
        }
    }
    let match_by: Vec<&str> = form
        .one("match_existing_by")
        .split(',')
        .filter(|key| !key.is_empty())
        .collect();
    if !match_by.is_empty() {
        options.insert("match_existing_by".into(), json!(match_by));
    }
    if let Some(days) = number(form, "soft_delete_retention_days", &mut errors) {
        options.insert("soft_delete_retention_days".into(), days);
    }
    definition.insert("options".into(), Value::Object(options));

    let fields: Map<String, Value> = Field::ALL
        .iter()
        .map(|field| field_name(*field))
        .filter_map(|name| match form.one(&format!("field_{name}")) {
            "" | "always" => None,
            setting => Some((name, json!(setting))),
        })
        .collect();
    if !fields.is_empty() {
        definition.insert("fields".into(), Value::Object(fields));
    }

    let mut assignments = Map::new();
    for (from, rule) in [("unit_from", "units"), ("roles_from", "roles")] {
        if !form.one(from).is_empty() {
            assignments.insert(from.into(), json!(form.one(from)));
        }
        match name_rule(form.one(rule)) {
            Ok(Some(value)) => {
                assignments.insert(rule.into(), value);
            }
            Ok(None) => {}
            Err(error) => errors.push(format!("{rule}: {error}")),
        }
    }
    if !assignments.is_empty() {
        definition.insert("assignments".into(), Value::Object(assignments));
    }

    let mut guards = Map::new();
    for guard in GUARDS {
        if let Some(limit) = number(form, guard, &mut errors) {
            guards.insert(guard.into(), limit);
        }
    }
    if !guards.is_empty() {
        definition.insert("guards".into(), Value::Object(guards));
    }

    let mut email = Map::new();
    for key in EMAIL_KEYS {
        let value = form.one(&format!("email_{key}")).trim().to_owned();
        if value.is_empty() || (key == "tls" && email.is_empty() && form.one("email_host").trim().is_empty())
        {
            continue;
        }
        if key == "port" {
            if let Some(port) = number(form, "email_port", &mut errors) {
                email.insert(key.into(), port);
            }
        } else {
            email.insert(key.into(), json!(value));
        }
    }
    if !email.is_empty() {
        if email.contains_key("host") {
            definition.insert("email".into(), Value::Object(email));
        } else {
            errors.push(
                "email: give the mail server's host, or clear the welcome email fields to send none".into(),
            );
        }
    }
    (definition, errors)
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`, for `Runner::update`.
fn merge_patch_between(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut patch: Map<String, Value> = old
        .keys()
        .filter(|key| !new.contains_key(*key))
        .map(|key| (key.clone(), Value::Null))
        .collect();
    for (key, value) in new {
        match (old.get(key), value) {
            (Some(Value::Object(before)), Value::Object(after)) => {
                let inner = merge_patch_between(before, after);
                if !inner.is_empty() {
                    patch.insert(key.clone(), Value::Object(inner));
                }
            }
            (Some(before), after) if before == after => {}
            _ => {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
    patch
}

/// Puts `source`'s keys over `target`'s, when both are objects.
fn overlay(target: &mut Value, source: Option<&Value>) {
    if let (Value::Object(target), Some(Value::Object(source))) = (target, source) {
        for (key, value) in source {
            target.insert(key.clone(), value.clone());
        }
    }
}

/// A unit or role rule as the form's text box shows it.
fn rule_text(rule: Option<&Value>) -> String {
    match rule {
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        Some(Value::Object(table)) => table
            .iter()
            .map(|(from, to)| format!("{from} = {}", to.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// What the form shows for a definition: its values, with the defaults where it has none.
fn form_values(definition: &Map<String, Value>) -> Value {
    let text = |key: &str| {
        definition
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let schedule = text("schedule");
    let (kind, interval, cron) = match schedule.strip_prefix("every ") {
        Some(interval) => ("interval", interval.trim().to_owned(), String::new()),
        None if schedule.is_empty() => ("interval", "1h".to_owned(), String::new()),
        None => ("cron", String::new(), schedule.clone()),
    };
    let defaults = serde_json::to_value(Policy::default()).unwrap_or(Value::Null);
    let mut options = defaults.clone();
    overlay(&mut options, definition.get("options"));
    let mut scope = defaults["scope"].clone();
    overlay(&mut scope, definition.get("scope"));
    let mut guards = defaults["guards"].clone();
    overlay(&mut guards, definition.get("guards"));
    let fields: Vec<Value> = Field::ALL
        .iter()
        .map(|field| {
            let name = field_name(*field);
            let setting = definition
                .get("fields")
                .and_then(|fields| fields.get(&name))
                .and_then(Value::as_str)
                .unwrap_or("always")
                .to_owned();
            json!({ "label": name.replace('_', " "), "name": name, "setting": setting })
        })
        .collect();
    let match_by: Vec<&str> = options["match_existing_by"]
        .as_array()
        .map(|keys| keys.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let assignments = definition.get("assignments");
    let assignment = |key: &str| {
        assignments
            .and_then(|assignments| assignments.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    json!({
        "name": text("name"),
        "organization": text("organization"),
        "tenant_id": text("tenant_id"),
        "client_id": text("client_id"),
        "authority_url": text("authority_url"),
        "graph_url": text("graph_url"),
        "schedule_kind": kind,
        "interval": interval,
        "start_at": text("start_at"),
        "cron": cron,
        "full_sync_every": text("full_sync_every"),
        "options": options,
        "match_existing_by": match_by.join(","),
        "scope": scope,
        "guards": guards,
        "fields": fields,
        "unit_from": assignment("unit_from"),
        "units": rule_text(assignments.and_then(|assignments| assignments.get("units"))),
        "roles_from": assignment("roles_from"),
        "roles": rule_text(assignments.and_then(|assignments| assignments.get("roles"))),
        "email": email_values(definition.get("email")),
    })
}

/// The welcome email's form fields, as text, from the definition's `email`.
fn email_values(email: Option<&Value>) -> Value {
    let values: Map<String, Value> = EMAIL_KEYS
        .iter()
        .map(|key| {
            let value = match email.and_then(|email| email.get(*key)) {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Number(number)) => number.to_string(),
                _ => String::new(),
            };
            ((*key).to_owned(), json!(value))
        })
        .collect();
    Value::Object(values)
}

/// Each scope section's choices: the tenant's values with how many users have each, the
/// selected values the tenant does not show, and for user types the two Entra knows.
fn scope_choices(scope: &Value, tenant: &Value) -> Value {
    let mut sections = Map::new();
    for section in SCOPE_SECTIONS {
        let selected: Vec<&str> = scope[section]
            .as_array()
            .map(|values| values.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let is_selected = |value: &str| selected.iter().any(|chosen| chosen.eq_ignore_ascii_case(value));
        let mut choices: Vec<Value> = Vec::new();
        let known = tenant[section].as_array().cloned().unwrap_or_default();
        let mut listed: Vec<String> = Vec::new();
        for pair in &known {
            if let Some(value) = pair[0].as_str() {
                choices.push(json!({ "value": value, "count": pair[1], "checked": is_selected(value) }));
                listed.push(value.to_lowercase());
            }
        }
        let extra = if section == "user_types" {
            vec!["Member", "Guest"]
        } else {
            Vec::new()
        };
        for value in selected.iter().copied().chain(extra) {
            if !listed.contains(&value.to_lowercase()) {
                choices.push(json!({ "value": value, "count": null, "checked": is_selected(value) }));
                listed.push(value.to_lowercase());
            }
        }
        sections.insert(section.into(), Value::Array(choices));
    }
    Value::Object(sections)
}

/// The next three run times of the definition's schedule (the default hourly one without), or why
/// it has none.
fn schedule_preview(definition: &Map<String, Value>) -> Result<Vec<String>, String> {
    let text = |key: &str| definition.get(key).and_then(Value::as_str);
    let schedule = Schedule::parse(text("schedule").unwrap_or("every 1h"), text("start_at"))?;
    let mut times = Vec::new();
    let mut after = clock::now();
    while times.len() < 3 {
        let Some(next) = schedule.next_after(after) else {
            break;
        };
        times.push(crate::store::timestamp(next));
        after = next;
    }
    Ok(times)
}

/// The Set up or Edit page for `definition`, with `errors` above the form.
async fn form_page(
    ui: &Ui,
    session: &Session,
    editing: Option<&str>,
    definition: &Map<String, Value>,
    errors: &[String],
) -> Result<Html<String>, UiError> {
    let values = form_values(definition);
    let tenant = match editing {
        Some(name) => ui.store.tenant_values(name, TENANT_VALUES).await?,
        None => Value::Null,
    };
    let preview = match schedule_preview(definition) {
        Ok(times) => json!({ "times": times }),
        Err(error) => json!({ "error": error }),
    };
    let title = match editing {
        Some(name) => format!("Edit connection {name}"),
        None => "Set up a connection".to_owned(),
    };
    ui.page(
        "connection_form.html",
        session,
        json!({
            "title": title,
            "section": "connections",
            "editing": editing,
            "form": values,
            "choices": scope_choices(&values["scope"], &tenant),
            "tenant_read": !tenant.is_null(),
            "schedule_preview": preview,
            "enabled": definition.get("enabled").and_then(Value::as_bool).unwrap_or(true),
            "errors": errors,
        }),
    )
}

/// A refusal's message for the page; a failure of the key or the database is the service's.
fn refusal_text(refused: EditRefused) -> Result<String, UiError> {
    match refused {
        EditRefused::SecretKey(_) | EditRefused::Store(_) => Err(UiError::Internal(refused.to_string())),
        other => Ok(other.to_string()),
    }
}

fn connection_url(name: &str) -> String {
    format!("/ui/connections/{}", url_segment(name))
}

pub(super) async fn new_form(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
) -> Result<Html<String>, UiError> {
    form_page(&ui, &session, None, &Map::new(), &[]).await
}

/// Set up: makes the connection and goes to its page, or shows the form again with why not.
pub(super) async fn create(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Result<Response, UiError> {
    let form = Posted::parse(&body);
    let (mut definition, mut errors) = definition_from(&form);
    definition.insert("name".into(), json!(form.one("name")));
    if errors.is_empty() {
        let mut request = definition.clone();
        if !form.one("client_secret").is_empty() {
            request.insert("client_secret".into(), json!(form.one("client_secret")));
        }
        match ui.runner.create(Value::Object(request)).await {
            Ok(connection) => {
                tracing::info!(connection = %connection.name, "connection set up in the admin UI");
                return Ok(Redirect::to(&connection_url(&connection.name)).into_response());
            }
            Err(refused) => errors.push(refusal_text(refused)?),
        }
    }
    let page = form_page(&ui, &session, None, &definition, &errors).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

/// The stored definition of a connection the UI may edit.
async fn editable(ui: &Ui, name: &str) -> Result<Map<String, Value>, UiError> {
    match ui.runner.connection(name) {
        None => {
            return Err(UiError::NotFound(format!(
                "There is no connection named {name:?}."
            )));
        }
        Some((_, Origin::Config)) => {
            return Err(UiError::Conflict(format!(
                "Connection {name:?} comes from the config file and is read-only here: edit the config file and restart the service."
            )));
        }
        Some((_, Origin::Api)) => {}
    }
    ui.store
        .api_connections()
        .await?
        .into_iter()
        .find(|stored| stored.name == name)
        .map(|stored| stored.definition)
        .ok_or_else(|| UiError::NotFound(format!("There is no connection named {name:?}.")))
}

pub(super) async fn edit_form(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Result<Html<String>, UiError> {
    let definition = editable(&ui, &name).await?;
    form_page(&ui, &session, Some(&name), &definition, &[]).await
}

/// Edit: the form's keys replace the stored ones (others stay); an empty client secret keeps
/// the stored one.
pub(super) async fn edit(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, UiError> {
    let stored = editable(&ui, &name).await?;
    let form = Posted::parse(&body);
    let (from_form, mut errors) = definition_from(&form);
    let mut definition = stored.clone();
    for key in FORM_KEYS {
        definition.remove(key);
    }
    definition.extend(from_form);
    // The email keys the form has no field for stay as they were.
    if let (Some(Value::Object(before)), Some(Value::Object(after))) =
        (stored.get("email"), definition.get_mut("email"))
    {
        for (key, value) in before {
            if !EMAIL_KEYS.contains(&key.as_str()) {
                after.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }
    if errors.is_empty() {
        let mut patch = merge_patch_between(&stored, &definition);
        if !form.one("client_secret").is_empty() {
            patch.insert("client_secret".into(), json!(form.one("client_secret")));
        }
        match ui.runner.update(&name, Value::Object(patch)).await {
            Ok(_) => {
                tracing::info!(connection = %name, "connection edited in the admin UI");
                return Ok(Redirect::to(&connection_url(&name)).into_response());
            }
            Err(refused) => errors.push(refusal_text(refused)?),
        }
    }
    let page = form_page(&ui, &session, Some(&name), &definition, &errors).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

/// Enable, Disable or Delete.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum Change {
    Enable,
    Disable,
    Delete,
}

/// Which change a confirmation page asks about, and its form makes.
#[derive(Debug, Deserialize)]
pub(super) struct ChangeTo {
    to: Change,
}

/// The confirmation of Enable, Disable or Delete.
pub(super) async fn confirm_change(
    State(ui): State<Ui>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Query(query): Query<ChangeTo>,
) -> Result<Html<String>, UiError> {
    editable(&ui, &name).await?;
    let (title, text, button) = match query.to {
        Change::Enable => (
            format!("Enable {name}?"),
            "Its schedule runs again, and Sync Now is possible.",
            "Enable the connection",
        ),
        Change::Disable => (
            format!("Disable {name}?"),
            "It is no longer synced, on schedule or by Sync Now; its users are kept as they are.",
            "Disable the connection",
        ),
        Change::Delete => (
            format!("Delete {name}?"),
            "The connection and what the sync knew of its tenant are deleted; its history and its users in the directory stay. This cannot be undone.",
            "Delete the connection",
        ),
    };
    ui.page(
        "confirm_change.html",
        &session,
        json!({
            "title": title,
            "section": "connections",
            "name": name,
            "change": query.to,
            "text": text,
            "button": button,
        }),
    )
}

pub(super) async fn change(
    State(ui): State<Ui>,
    Path(name): Path<String>,
    Form(form): Form<ChangeTo>,
) -> Result<Response, UiError> {
    let result = match form.to {
        Change::Enable | Change::Disable => ui
            .runner
            .update(&name, json!({ "enabled": form.to == Change::Enable }))
            .await
            .map(|_| connection_url(&name)),
        Change::Delete => ui
            .runner
            .delete(&name)
            .await
            .map(|()| "/ui/connections".to_owned()),
    };
    match result {
        Ok(next) => {
            tracing::info!(connection = %name, change = ?form.to, "connection changed in the admin UI");
            Ok(Redirect::to(&next).into_response())
        }
        Err(EditRefused::UnknownConnection(name)) => Err(UiError::NotFound(format!(
            "There is no connection named {name:?}."
        ))),
        Err(refused) => Err(UiError::Conflict(refusal_text(refused)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(pairs: &[(&str, &str)]) -> Posted {
        Posted(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_form_becomes_the_config_keys() {
        let (definition, errors) = definition_from(&posted(&[
            ("tenant_id", " t "),
            ("client_id", "c"),
            ("interval", "1d"),
            ("start_at", "02:30"),
            ("scope_groups", "Sales"),
            ("scope_groups_other", "Support, sales"),
            ("sync_groups", "true"),
            ("on_deleted", "soft_delete"),
            ("match_existing_by", "email,upn"),
            ("field_job_title", "on_create"),
            ("field_email", "always"),
            ("unit_from", "officeLocation"),
            ("units", "CPH HQ = Copenhagen\nAarhus = Aarhus"),
            ("max_deprovisions", "50"),
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        let definition = Value::Object(definition);
        assert_eq!(definition["tenant_id"], "t");
        assert_eq!(definition["schedule"], "every 1d");
        assert_eq!(definition["start_at"], "02:30");
        assert_eq!(definition["scope"]["groups"], json!(["Sales", "Support"]));
        assert_eq!(definition["options"]["sync_groups"], true);
        assert_eq!(definition["options"]["sync_departments"], false);
        assert_eq!(
            definition["options"]["match_existing_by"],
            json!(["email", "upn"])
        );
        assert_eq!(definition["fields"], json!({ "job_title": "on_create" }));
        assert_eq!(
            definition["assignments"]["units"],
            json!({ "CPH HQ": "Copenhagen", "Aarhus": "Aarhus" })
        );
        assert_eq!(definition["guards"], json!({ "max_deprovisions": 50 }));

        let (_, errors) = definition_from(&posted(&[
            ("schedule_kind", "cron"),
            ("max_deprovisions", "many"),
            ("roles", "Admin\nx = y"),
        ]));
        assert_eq!(errors.len(), 3, "{errors:?}");
    }

    #[test]
    fn the_form_shows_a_definition_with_defaults() {
        let definition = json!({ "schedule": "0 6 * * *", "options": { "on_deleted": "delete" }, "assignments": { "roles": ["A", "B"] } });
        let values = form_values(definition.as_object().expect("an object"));
        assert_eq!(values["schedule_kind"], "cron");
        assert_eq!(values["cron"], "0 6 * * *");
        assert_eq!(values["options"]["on_deleted"], "delete");
        assert_eq!(values["options"]["sync_groups"], true);
        assert_eq!(values["match_existing_by"], "email");
        assert_eq!(values["guards"]["max_deprovisions"], 500);
        assert_eq!(values["roles"], "A\nB");
    }

    #[test]
    fn the_patch_turns_the_old_definition_into_the_new() {
        let old = json!({ "name": "x", "email": { "host": "h" }, "scope": { "groups": ["a"], "domains": ["d"] }, "guards": { "max_deprovisions": 5 } });
        let new = json!({ "name": "x", "email": { "host": "h" }, "scope": { "groups": ["b"] } });
        let patch = merge_patch_between(
            old.as_object().expect("an object"),
            new.as_object().expect("an object"),
        );
        assert_eq!(
            Value::Object(patch.clone()),
            json!({ "guards": null, "scope": { "domains": null, "groups": ["b"] } })
        );
        let mut patched = old.as_object().cloned().expect("an object");
        crate::connections::merge_patch(&mut patched, patch);
        assert_eq!(Value::Object(patched), new);
    }
}
