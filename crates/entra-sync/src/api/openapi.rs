//! The OpenAPI document at `/api/v1/openapi.json`, built from one table of the routes. A test
//! calls every route the table lists, so the document cannot name a route the router lacks.

use serde_json::{Map, Value, json};

/// One route as the document describes it.
struct Operation {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    /// Query parameters, all optional.
    query: &'static [(&'static str, &'static str)],
    /// The success status and what its body is.
    success: (&'static str, &'static str),
    /// Whether the route needs a bearer token.
    token: bool,
}

const OPERATIONS: &[Operation] = &[
    Operation {
        method: "get",
        path: "/api/v1/connections",
        summary: "The connections, the config file's and those made through the API \
                  (`source`: config or api), without credential values",
        query: &[],
        success: ("200", "an array of connections"),
        token: true,
    },
    Operation {
        method: "post",
        path: "/api/v1/connections",
        summary: "Makes a connection: the config file's connection keys as JSON (name, tenant_id, \
                  client_id, client_secret, authority_url, graph_url, schedule, start_at, \
                  full_sync_every, enabled, organization, scope, options, fields, assignments, \
                  guards). client_secret is required, stored encrypted and never answered; \
                  client_secret_env, client_secret_file and certificate files are config-file only. \
                  409 connection_exists or organization_taken, 422 invalid_connection",
        query: &[],
        success: ("201", "the connection"),
        token: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/connections/{name}",
        summary: "One connection, with microsoft_data {enabled, read_at, warnings}: what the last \
                  full run could read of licence names, sign-ins and MFA registration, and what \
                  the tenant refused",
        query: &[],
        success: ("200", "a connection"),
        token: true,
    },
    Operation {
        method: "patch",
        path: "/api/v1/connections/{name}",
        summary: "Edits a connection made through the API with a JSON merge patch of its definition \
                  (such as {\"enabled\": false}); a client_secret replaces the secret, and must \
                  come with any change of authority_url or graph_url. \
                  409 connection_read_only for the config file's connections",
        query: &[],
        success: ("200", "the connection"),
        token: true,
    },
    Operation {
        method: "delete",
        path: "/api/v1/connections/{name}",
        summary: "Deletes a connection made through the API and what the sync knew of its tenant; \
                  its history and directory users stay. 409 connection_read_only for the config \
                  file's connections, run_in_progress while it syncs",
        query: &[],
        success: ("204", "deleted"),
        token: true,
    },
    Operation {
        method: "post",
        path: "/api/v1/connections/{name}/sync",
        summary: "Sync Now: body {\"mode\": \"delta\"|\"full\", \"dry_run\": bool}, both optional; \
                  answers when the run is done; 409 run_in_progress while one runs",
        query: &[],
        success: ("202", "the run summary, as `entra-sync sync --json` prints it"),
        token: true,
    },
    Operation {
        method: "post",
        path: "/api/v1/connections/{name}/users/{id}/sync",
        summary: "One-user sync of an Entra user (object id or UPN): body {\"mode\": \"info\"|\"downstream\"|\"full\"} \
                  (default full). info reads the user from Graph and applies only its actions; \
                  downstream pushes the directory's values to the targets (with the embedded \
                  directory alone, a recorded run that changes nothing); the delta links do not \
                  move. Recorded with trigger user",
        query: &[],
        success: ("202", "the run summary"),
        token: true,
    },
    Operation {
        method: "post",
        path: "/api/v1/connections/{name}/groups/{id}/sync",
        summary: "One-group sync of an Entra group (object id): the group and every direct member \
                  user, with the body and modes of the one-user sync. Recorded with trigger group",
        query: &[],
        success: ("202", "the run summary"),
        token: true,
    },
    Operation {
        method: "post",
        path: "/api/v1/connections/{name}/test",
        summary: "Checks the connection: a token, the permissions it grants (User.Read.All and \
                  GroupMember.Read.All, or roles that include them; optional_missing lists what \
                  the Microsoft data and the secret's expiry would also need), and when the \
                  credential expires: a certificate's notAfter, or the endDateTime of the app \
                  registration's client secret whose hint matches (needs Application.Read.All). \
                  An expiry that cannot be read is a warning and leaves ok as it is",
        query: &[],
        success: (
            "200",
            "{connection, ok, token: {ok, error}, permissions: {granted, missing, optional_missing}, required, \
             secret_expires_at: RFC 3339 or null, secret_expiry: {source: certificate|app_registration, \
             state: valid|expiring|expired|unknown, expires_at, days_left, warning}}",
        ),
        token: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/runs",
        summary: "Runs, newest first",
        query: &[
            ("connection", "only this connection's runs"),
            ("limit", "at most this many (default 100, at most 1000)"),
        ],
        success: ("200", "an array of runs"),
        token: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/runs/{id}",
        summary: "One run with its conflicts and its welcome emails by status",
        query: &[],
        success: ("200", "a run"),
        token: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/runs/{id}/actions",
        summary: "One run's actions with before and after values and outcomes",
        query: &[],
        success: ("200", "an array of actions"),
        token: true,
    },
    Operation {
        method: "post",
        path: "/api/v1/runs/{id}/approve",
        summary: "Applies exactly the plan a safety guard stopped in this run, once; \
                  409 already_approved, plan_discarded, or plan_stale when a later run read a newer source",
        query: &[],
        success: ("200", "the summary of the applied plan (mode approved)"),
        token: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/users",
        summary: "Directory users, each with microsoft {licenses: [{sku_id, sku_part_number}], \
                  last_sign_in, mfa_registered} (null where unknown; null for unlinked users)",
        query: &[("connection", "only the users of this connection's organization")],
        success: ("200", "an array of users"),
        token: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/users/{id}",
        summary: "One directory user by directory id, with its Microsoft data as in GET /users",
        query: &[],
        success: ("200", "a user"),
        token: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/users/{id}/explain",
        summary: "Why the sync treats this user as it does (scope, link, unit, roles), from what its \
                  connection last read, with its 20 most recent actions",
        query: &[],
        success: ("200", "{explanation, recent_actions}"),
        token: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/groups",
        summary: "Directory groups with member counts",
        query: &[("connection", "only the groups of this connection's organization")],
        success: ("200", "an array of groups"),
        token: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/departments",
        summary: "Directory departments with user counts and whether the sync made them",
        query: &[(
            "connection",
            "only the departments of this connection's organization",
        )],
        success: ("200", "an array of departments"),
        token: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/changes",
        summary: "The change feed: directory changes (users, groups, memberships, departments) after \
                  a cursor, oldest first, each with its cursor, object, change, ids and the applied \
                  action as detail; ask again with since=next. 410 cursor_expired when the history's \
                  retention deleted changes after the cursor",
        query: &[
            (
                "since",
                "the cursor to continue after: `next` of an earlier answer; 0 (default) is the beginning",
            ),
            ("limit", "at most this many changes (default 500, at most 5000)"),
            ("connection", "only the changes of this connection's organization"),
        ],
        success: ("200", "{changes: [...], next: cursor, more: bool}"),
        token: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/emails",
        summary: "Welcome emails, newest first: recipient, subject, status (queued, sending, sent, \
                  failed), attempts, next attempt, last error and the run that created the user",
        query: &[
            ("connection", "only this connection's emails"),
            ("status", "only emails in this status"),
            ("limit", "at most this many (default 100, at most 1000)"),
        ],
        success: ("200", "an array of emails"),
        token: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/openapi.json",
        summary: "This document",
        query: &[],
        success: ("200", "an OpenAPI 3.1 document"),
        token: false,
    },
    Operation {
        method: "get",
        path: "/healthz",
        summary: "The process answers",
        query: &[],
        success: ("200", "{\"status\": \"ok\"}"),
        token: false,
    },
    Operation {
        method: "get",
        path: "/readyz",
        summary: "The database answers; 503 not_ready otherwise",
        query: &[],
        success: ("200", "{\"status\": \"ready\"}"),
        token: false,
    },
    Operation {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics in the text exposition format",
        query: &[],
        success: ("200", "Prometheus text"),
        token: false,
    },
];

/// The OpenAPI 3.1 document of the routes.
pub(super) fn document() -> Value {
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let mut parameters: Vec<Value> = operation
            .path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                // Under a connection, `id` is an Entra id; elsewhere a run's or a directory user's.
                let entra = operation.path.starts_with("/api/v1/connections/");
                let kind = if name == "id" && !entra {
                    "integer"
                } else {
                    "string"
                };
                json!({ "name": name, "in": "path", "required": true, "schema": { "type": kind } })
            })
            .collect();
        parameters.extend(operation.query.iter().map(|(name, description)| {
            let kind = if matches!(*name, "limit" | "since") { "integer" } else { "string" };
            json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": kind } })
        }));
        let (status, description) = operation.success;
        let mut entry = json!({
            "summary": operation.summary,
            "parameters": parameters,
            "responses": {
                status: { "description": description },
                "default": {
                    "description": "an error",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
                },
            },
        });
        if operation.token {
            entry["security"] = json!([{ "bearer": [] }]);
        }
        let path = paths
            .entry(operation.path)
            .or_insert_with(|| Value::Object(Map::new()));
        path[operation.method] = entry;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "entra-sync", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `entra-sync token create`",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string", "enum": super::error::code_names() },
                        "message": { "type": "string" },
                    },
                },
            },
        },
    })
}
