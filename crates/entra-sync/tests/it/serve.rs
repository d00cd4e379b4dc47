//! The service: the API router driven without a socket (auth, error codes, Sync Now, history,
//! the directory), and `entra-sync serve` run as a child process against two emulated tenants
//! (schedules, one run at a time, separate histories, metrics, the secret kept out of every
//! answer and log line, SIGTERM).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{DateTime, Utc};
use entra_sync::api::{self, ApiState, TokenError};
use entra_sync::config::Config;
use entra_sync::serve::Runner;
use entra_sync::store::{RunEnd, Store, Trigger};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tower::ServiceExt;

use crate::support::{Tenant, Workspace};

/// A router on a temp data folder, with a token, for the config text `connections`.
pub(crate) struct Api {
    _dir: tempfile::TempDir,
    config: Config,
    router: axum::Router,
    runner: Arc<Runner>,
    pub(crate) store: Store,
    pub(crate) token: String,
}

impl Api {
    pub(crate) async fn new(connections: &str) -> Api {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("entra-sync.toml");
        let config = Config::parse(&path, &format!("data_dir = \"data\"\n{connections}")).expect("valid");
        let store = Store::open(&config.data_dir).await.expect("the store opens");
        let runner = Arc::new(Runner::new(store.clone(), &config));
        let router = api::router(ApiState {
            store: store.clone(),
            runner: runner.clone(),
        });
        let token = api::create_token(&store, "tests").await.expect("a token");
        Api {
            _dir: dir,
            config,
            router,
            runner,
            store,
            token,
        }
    }

    /// Sends a request with the token (or `token`), returns the status and the body as JSON (or
    /// as a string when it is not JSON).
    pub(crate) async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = body.map_or_else(Body::empty, |body| Body::from(body.to_string()));
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).expect("a request"))
            .await
            .expect("an answer");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        let text = String::from_utf8(bytes.to_vec()).expect("UTF-8");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub(crate) async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, Some(&self.token.clone()), None).await
    }

    /// Sends a request with the token and a JSON body (or none).
    async fn send(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, uri, Some(&self.token.clone()), body).await
    }
}

/// An emulated tenant's connection as an API body: the config lines it prints, as JSON.
fn connection_body(tenant: &Tenant, name: &str) -> Value {
    let lines: toml::Table = toml::from_str(&tenant.emulator.config_lines()).expect("TOML lines");
    let mut body = serde_json::to_value(lines).expect("JSON");
    body["name"] = json!(name);
    body
}

/// Every byte of a data folder's database files, as text, to search for a secret.
fn database_text(data_dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(data_dir).expect("the data folder") {
        let path = entry.expect("an entry").path();
        if path.to_string_lossy().contains("entra-sync.db") {
            text.push_str(&String::from_utf8_lossy(
                &std::fs::read(&path).expect("a database file"),
            ));
        }
    }
    text
}

const UNREACHABLE: &str = r#"
[[connections]]
name = "contoso"
tenant_id = "t"
client_id = "c"
client_secret = "router-test-secret-4b1d"
authority_url = "http://127.0.0.1:9"
graph_url = "http://127.0.0.1:9"
schedule = "every 2h"
start_at = "01:30"

[[connections]]
name = "paused"
tenant_id = "t"
client_id = "c"
client_secret_env = "PAUSED_SECRET"
enabled = false
"#;

#[tokio::test]
async fn the_api_needs_a_token_and_health_checks_do_not() {
    let api = Api::new(UNREACHABLE).await;
    for uri in ["/healthz", "/readyz"] {
        let (status, _) = api.call(Method::GET, uri, None, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    let (status, body) = api.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.as_str()
            .expect("text")
            .contains("# TYPE entra_sync_runs_total counter")
    );
    for token in [None, Some("est_not-a-token"), Some("")] {
        for uri in ["/api/v1/connections", "/api/v1/runs", "/api/v1/users"] {
            let (status, body) = api.call(Method::GET, uri, token, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} with {token:?}");
            assert_eq!(body["code"], "unauthorized", "{body}");
            assert!(body["message"].is_string(), "{body}");
        }
    }
    let (status, _) = api.get("/api/v1/connections").await;
    assert_eq!(status, StatusCode::OK);
    match api::create_token(&api.store, "tests").await {
        Err(TokenError::NameTaken(name)) => assert_eq!(name, "tests"),
        other => panic!("a second token named tests: {other:?}"),
    }
}

#[tokio::test]
async fn connections_are_the_configs_without_their_secret() {
    let api = Api::new(UNREACHABLE).await;
    let (status, body) = api.get("/api/v1/connections").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.to_string().contains("router-test-secret-4b1d"), "{body}");
    let names: Vec<&str> = body
        .as_array()
        .expect("an array")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["contoso", "paused"]);
    let (status, contoso) = api.get("/api/v1/connections/contoso").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(contoso["schedule"], "every 2h from 01:30");
    assert_eq!(contoso["credential"], json!({ "kind": "client_secret" }));
    assert_eq!(contoso["organization"], "contoso");
    assert_eq!(contoso["source"], "config");
    assert_eq!(contoso["running"], false);
    let (_, paused) = api.get("/api/v1/connections/paused").await;
    assert_eq!(
        paused["credential"],
        json!({ "kind": "client_secret_env", "variable": "PAUSED_SECRET" })
    );
    assert_eq!(paused["enabled"], false);
}

#[tokio::test]
async fn errors_come_from_the_code_table() {
    let api = Api::new(UNREACHABLE).await;
    let sync = |name: &str| format!("/api/v1/connections/{name}/sync");
    let token = Some(api.token.clone());
    for (method, uri, body, status, code) in [
        (
            Method::GET,
            "/api/v1/connections/nope".to_owned(),
            None,
            404,
            "not_found",
        ),
        (Method::GET, "/api/v1/runs/12345".into(), None, 404, "not_found"),
        (
            Method::GET,
            "/api/v1/runs/12345/actions".into(),
            None,
            404,
            "not_found",
        ),
        (Method::GET, "/api/v1/runs/abc".into(), None, 400, "bad_request"),
        (Method::GET, "/api/v1/users/77".into(), None, 404, "not_found"),
        (
            Method::GET,
            "/api/v1/users?connection=nope".into(),
            None,
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/api/v1/runs?colour=blue".into(),
            None,
            400,
            "bad_request",
        ),
        (Method::GET, "/api/v1/nothing-here".into(), None, 404, "not_found"),
        (Method::POST, sync("nope"), None, 404, "not_found"),
        (Method::POST, sync("paused"), None, 409, "connection_disabled"),
        (
            Method::POST,
            sync("contoso"),
            Some(json!({ "mode": "sideways" })),
            400,
            "bad_request",
        ),
        (
            Method::POST,
            sync("contoso"),
            Some(json!({ "dry": true })),
            400,
            "bad_request",
        ),
    ] {
        let (got, body) = api.call(method, &uri, token.as_deref(), body).await;
        assert_eq!(got.as_u16(), status, "{uri}: {body}");
        assert_eq!(body["code"], code, "{uri}: {body}");
        assert_eq!(body.as_object().expect("an object").len(), 2, "{uri}: {body}");
    }
}

#[tokio::test]
async fn the_openapi_document_lists_only_routes_that_exist() {
    let api = Api::new(UNREACHABLE).await;
    let (status, document) = api.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 12, "{paths:?}");
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            // The disabled connection answers Sync Now at once, without reaching for a tenant.
            let uri = path.replace("{name}", "paused").replace("{id}", "1");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            let needs_token = operation.get("security").is_some();
            if needs_token {
                let (status, _) = api.call(method.clone(), &uri, None, None).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} without a token");
            }
            let (status, body) = api
                .call(method.clone(), &uri, Some(&api.token.clone()), None)
                .await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert_ne!(body["message"], "no such route", "{method} {uri}");
        }
    }
    let codes = &document["components"]["schemas"]["Error"]["properties"]["code"]["enum"];
    assert!(
        codes
            .as_array()
            .expect("codes")
            .contains(&json!("run_in_progress")),
        "{codes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testing_a_connection_reports_its_token_and_permissions() {
    let tenant = Tenant::start(5, 1).await;
    let wrong = tenant
        .connection("wrong")
        .replace("emulator-secret-value", "the-secret-id-not-its-value");
    let unset = "[[connections]]\nname = \"unset\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"UNSET_SECRET\"\n";
    let api = Api::new(&format!("{}\n{wrong}\n{unset}", tenant.connection("contoso"))).await;
    let test = |name: &str| format!("/api/v1/connections/{name}/test");
    let token = Some(api.token.clone());
    let (status, good) = api
        .call(Method::POST, &test("contoso"), token.as_deref(), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{good}");
    assert_eq!(good["ok"], true, "{good}");
    assert_eq!(good["token"], json!({ "ok": true }));
    assert_eq!(good["permissions"]["missing"], json!([]), "{good}");
    assert_eq!(good["permissions"]["optional_missing"], json!([]), "{good}");
    assert_eq!(good["required"], json!(["User.Read.All", "GroupMember.Read.All"]));

    let (status, bad) = api
        .call(Method::POST, &test("wrong"), token.as_deref(), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{bad}");
    assert_eq!(bad["ok"], false, "{bad}");
    let error = bad["token"]["error"].as_str().expect("an error");
    assert!(error.contains("7000215"), "{error}");
    assert!(!bad.to_string().contains("the-secret-id-not-its-value"), "{bad}");

    let (_, unset) = api
        .call(Method::POST, &test("unset"), token.as_deref(), None)
        .await;
    assert_eq!(unset["ok"], false, "{unset}");
    assert!(
        unset["token"]["error"]
            .as_str()
            .expect("an error")
            .contains("UNSET_SECRET"),
        "{unset}"
    );
}

/// `days` whole days and twelve hours from now, as the emulator's control API takes a time.
fn in_days(days: i64) -> String {
    (entra_sync::clock::now() + chrono::Duration::days(days) + chrono::Duration::hours(12))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testing_a_connection_reports_when_its_client_secret_expires() {
    let tenant = Tenant::start(5, 1).await;
    let expires = in_days(20);
    tenant
        .control(
            reqwest::Method::PUT,
            "app/secret-expiry",
            Some(json!({ "endDateTime": expires })),
        )
        .await;
    let api = Api::new(&tenant.connection("contoso")).await;
    let test = "/api/v1/connections/contoso/test";
    let (status, answer) = api.send(Method::POST, test, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["secret_expires_at"], expires.as_str(), "{answer}");
    let expiry = &answer["secret_expiry"];
    assert_eq!(expiry["source"], "app_registration", "{answer}");
    assert_eq!(expiry["expires_at"], expires.as_str(), "{answer}");
    assert_eq!(expiry["days_left"], 20, "{answer}");
    assert_eq!(expiry["state"], "expiring", "under 30 days: {answer}");
    let warning = expiry["warning"].as_str().expect("a warning");
    assert!(warning.contains("in 20 days"), "{warning}");
    assert!(
        !answer.to_string().contains("emu"),
        "not even the secret's first characters: {answer}"
    );

    // Without Application.Read.All the expiry is unknown, and says why; the test still passes.
    tenant
        .control(
            reqwest::Method::PUT,
            "app/roles",
            Some(json!(["User.Read.All", "GroupMember.Read.All"])),
        )
        .await;
    let (status, answer) = api.send(Method::POST, test, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["secret_expires_at"], Value::Null, "{answer}");
    let expiry = &answer["secret_expiry"];
    assert_eq!(expiry["state"], "unknown", "{answer}");
    assert_eq!(expiry["days_left"], Value::Null, "{answer}");
    let warning = expiry["warning"].as_str().expect("why it is unknown");
    assert!(
        warning.contains("Application.Read.All") && warning.contains("403"),
        "{warning}"
    );
    assert!(
        answer["permissions"]["optional_missing"]
            .as_array()
            .expect("optional_missing")
            .contains(&json!("Application.Read.All")),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testing_a_certificate_connection_reads_the_expiry_from_the_certificate() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let Some((certificate_pem, _)) = crate::support::openssl_certificate(dir.path(), 20) else {
        return;
    };
    let tenant = Tenant::start_with(graph_emulator::EmulatorOptions {
        users: 5,
        groups: 1,
        certificate_pem: Some(certificate_pem),
        roles: vec!["User.Read.All".to_owned(), "GroupMember.Read.All".to_owned()],
        ..graph_emulator::EmulatorOptions::default()
    })
    .await;
    let options = graph_emulator::EmulatorOptions::default();
    let url = tenant.emulator.url();
    let connection = format!(
        "[[connections]]\nname = \"contoso\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\ncertificate_file = \"{}\"\nprivate_key_file = \"{}\"\nauthority_url = \"{url}\"\ngraph_url = \"{url}\"\n",
        options.tenant_id,
        options.client_id,
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display(),
    );
    let api = Api::new(&connection).await;
    let (status, answer) = api
        .send(Method::POST, "/api/v1/connections/contoso/test", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["ok"], true, "{answer}");
    let expiry = &answer["secret_expiry"];
    assert_eq!(expiry["source"], "certificate", "{answer}");
    // `-days 20` from a moment ago: 19 whole days and almost 24 hours, or 20 within its second.
    assert!(matches!(expiry["days_left"].as_i64(), Some(19 | 20)), "{answer}");
    assert_eq!(expiry["state"], "expiring", "{answer}");
    assert_eq!(answer["secret_expires_at"], expiry["expires_at"], "{answer}");
    assert!(
        expiry["warning"]
            .as_str()
            .expect("a warning")
            .contains("upload it to the app registration"),
        "{answer}"
    );
    let requests = tenant.get("requests").await;
    assert!(
        !requests.to_string().contains("applications"),
        "no Graph request and no permission for a certificate's expiry: {requests}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_a_guard_stopped_is_approved_through_the_api_once() {
    let tenant = Tenant::start(100, 4).await;
    let api = Api::new(&tenant.connection("contoso")).await;
    let token = Some(api.token.clone());
    let sync = "/api/v1/connections/contoso/sync";
    let (status, first) = api.call(Method::POST, sync, token.as_deref(), None).await;
    assert_eq!(
        (status, first["created"].as_u64()),
        (StatusCode::ACCEPTED, Some(100)),
        "{first}"
    );

    // 40 of 100 linked users leave at once: over the 20 % limit, so the run stops.
    let users = tenant.users().await;
    for user in users.iter().take(40) {
        let id = user["id"].as_str().expect("id");
        tenant.post(&format!("users/{id}/soft-delete"), json!({})).await;
    }
    let (status, blocked) = api.call(Method::POST, sync, token.as_deref(), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{blocked}");
    assert_eq!(blocked["status"], "blocked", "{blocked}");
    let approve = format!("/api/v1/runs/{}/approve", blocked["run_id"]);

    let permit = api.runner.try_begin("contoso").expect("free");
    let (status, busy) = api.call(Method::POST, &approve, token.as_deref(), None).await;
    assert_eq!(
        (status, &busy["code"]),
        (StatusCode::CONFLICT, &json!("run_in_progress"))
    );
    drop(permit);

    let (status, approved) = api.call(Method::POST, &approve, token.as_deref(), None).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["mode"], "approved");
    assert_eq!(approved["disabled"], 40, "{approved}");
    let (status, again) = api.call(Method::POST, &approve, token.as_deref(), None).await;
    assert_eq!(
        (status, &again["code"]),
        (StatusCode::CONFLICT, &json!("already_approved"))
    );
    let (status, none) = api
        .call(
            Method::POST,
            &format!("/api/v1/runs/{}/approve", first["run_id"]),
            token.as_deref(),
            None,
        )
        .await;
    assert_eq!(
        (status, &none["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found")),
        "{none}"
    );

    let (_, metrics) = api.call(Method::GET, "/metrics", None, None).await;
    let metrics = metrics.as_str().expect("text");
    for line in [
        "entra_sync_runs_total{connection=\"contoso\",status=\"blocked\"} 1",
        "entra_sync_actions_total{connection=\"contoso\",kind=\"disabled\"} 40",
    ] {
        assert!(metrics.lines().any(|got| got == line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn sync_now_during_a_run_is_refused_with_409() {
    let api = Api::new(UNREACHABLE).await;
    let permit = api.runner.try_begin("contoso").expect("the connection is free");
    let (_, contoso) = api.get("/api/v1/connections/contoso").await;
    assert_eq!(contoso["running"], true);
    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/connections/contoso/sync",
            Some(&api.token.clone()),
            Some(json!({ "mode": "full" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "run_in_progress");
    drop(permit);
    assert!(api.runner.try_begin("contoso").is_ok(), "free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_now_runs_and_the_history_and_directory_show_it() {
    let tenant = Tenant::start(40, 5).await;
    let api = Api::new(&tenant.connection("contoso")).await;
    let (status, summary) = api
        .call(
            Method::POST,
            "/api/v1/connections/contoso/sync",
            Some(&api.token.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{summary}");
    assert_eq!(summary["status"], "succeeded");
    assert_eq!(summary["mode"], "full", "a first run reads everything");
    assert_eq!(summary["created"], 40);
    let run_id = summary["run_id"].as_i64().expect("run_id");

    let (_, dry) = api
        .call(
            Method::POST,
            "/api/v1/connections/contoso/sync",
            Some(&api.token.clone()),
            Some(json!({ "mode": "full", "dry_run": true })),
        )
        .await;
    assert_eq!(dry["status"], "dry_run", "{dry}");
    assert_eq!(dry["mode"], "full");

    let (status, runs) = api.get("/api/v1/runs?connection=contoso").await;
    assert_eq!(status, StatusCode::OK);
    let runs = runs.as_array().expect("an array");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|run| run["trigger"] == "api"), "{runs:?}");
    let (_, limited) = api.get("/api/v1/runs?limit=1").await;
    assert_eq!(limited.as_array().expect("an array").len(), 1);

    let (status, run) = api.get(&format!("/api/v1/runs/{run_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["run_id"], run_id);
    assert_eq!(run["conflicts"], json!([]));
    let (_, actions) = api.get(&format!("/api/v1/runs/{run_id}/actions")).await;
    let creates = actions
        .as_array()
        .expect("an array")
        .iter()
        .filter(|action| action["kind"] == "create_user")
        .count();
    assert_eq!(creates, 40);

    let (_, users) = api.get("/api/v1/users?connection=contoso").await;
    let users = users.as_array().expect("an array");
    assert_eq!(users.len(), 40);
    let first = &users[0];
    assert_eq!(first["organization"], "contoso");
    let (status, one) = api.get(&format!("/api/v1/users/{}", first["id"])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&one, first);
    let (status, explained) = api.get(&format!("/api/v1/users/{}/explain", first["id"])).await;
    assert_eq!(status, StatusCode::OK, "{explained}");
    assert_eq!(
        explained["explanation"]["entra_id"], first["entra_id"],
        "{explained}"
    );
    let recent = explained["recent_actions"].as_array().expect("recent actions");
    assert!(
        recent
            .iter()
            .any(|recent| recent["run_id"] == run_id && recent["action"]["kind"] == "create_user"),
        "{explained}"
    );
    let (_, departments) = api.get("/api/v1/departments?connection=contoso").await;
    let departments = departments.as_array().expect("an array");
    let users_in_departments: u64 = departments
        .iter()
        .map(|d| d["users"].as_u64().expect("users"))
        .sum();
    let with_department = users.iter().filter(|user| user["department"].is_string()).count();
    assert_eq!(users_in_departments as usize, with_department, "{departments:?}");
    assert!(
        departments
            .iter()
            .all(|d| d["created_by_sync"] == true && d["organization"] == "contoso")
    );
    let (_, groups) = api.get("/api/v1/groups").await;
    assert!(!groups.as_array().expect("an array").is_empty());

    let (_, metrics) = api.call(Method::GET, "/metrics", None, None).await;
    let metrics = metrics.as_str().expect("text");
    for line in [
        "entra_sync_runs_total{connection=\"contoso\",status=\"succeeded\"} 1",
        "entra_sync_runs_total{connection=\"contoso\",status=\"dry_run\"} 1",
        "entra_sync_actions_total{connection=\"contoso\",kind=\"created\"} 40",
    ] {
        assert!(metrics.lines().any(|got| got == line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn history_older_than_its_retention_is_deleted() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Store::open(dir.path()).await.expect("the store opens");
    let now = entra_sync::clock::now();
    let days_ago = |days: i64| now - chrono::TimeDelta::days(days);
    let state = store
        .connection_state("contoso", "contoso", now)
        .await
        .expect("a connection");
    let mut runs = Vec::new();
    for (started, finished) in [(days_ago(91), true), (days_ago(100), false), (days_ago(1), true)] {
        let run = store
            .begin_run(state.id, Trigger::Scheduled, "delta", started)
            .await
            .expect("a run");
        if finished {
            store
                .finish_run(run, &succeeded_delta(), started)
                .await
                .expect("finished");
        }
        // A row that refers to the run, which goes with it.
        let conflict = entra_sync_core::plan::Conflict {
            entra_id: Some("e1".into()),
            directory_id: None,
            reason: "two directory users have this email".into(),
        };
        store
            .record_conflicts(run, &[conflict])
            .await
            .expect("a conflict");
        runs.push(run);
    }
    assert_eq!(store.delete_runs_before(days_ago(90)).await.expect("deleted"), 1);
    let kept: Vec<i64> = store
        .runs(None, 10)
        .await
        .expect("runs")
        .iter()
        .map(|run| run.run_id)
        .collect();
    assert_eq!(kept, [runs[2], runs[1]], "a run still going is never deleted");
    assert!(store.run_conflicts(runs[0]).await.expect("conflicts").is_empty());
    assert_eq!(store.run_conflicts(runs[2]).await.expect("conflicts").len(), 1);

    let config = |server: &str| {
        Config::parse(
            &dir.path().join("entra-sync.toml"),
            &format!("[server]\n{server}\n{UNREACHABLE}"),
        )
        .map(|config| config.history_days)
        .map_err(|error| error.to_string())
    };
    assert_eq!(config(""), Ok(90));
    assert_eq!(config("history_days = 30"), Ok(30));
    assert!(
        config("history_days = 0")
            .expect_err("zero")
            .contains("at least 1")
    );

    let full_sync_every = |line: &str| {
        let text = UNREACHABLE.replace(
            "schedule = \"every 2h\"",
            &format!("schedule = \"every 2h\"\n{line}"),
        );
        Config::parse(&dir.path().join("entra-sync.toml"), &text)
            .map(|config| config.connections[0].full_sync_every)
            .map_err(|error| error.to_string())
    };
    assert_eq!(full_sync_every(""), Ok(Duration::from_secs(86_400)));
    assert_eq!(
        full_sync_every("full_sync_every = \"12h\""),
        Ok(Duration::from_secs(43_200))
    );
    for bad in ["0d", "soon", "*/5 * * * *"] {
        let error = full_sync_every(&format!("full_sync_every = \"{bad}\"")).expect_err(bad);
        assert!(error.contains("full_sync_every"), "{error}");
    }
}

/// `entra-sync serve` as a child process, with everything it prints kept.
pub(crate) struct Service {
    child: tokio::process::Child,
    url: String,
    output: Arc<Mutex<String>>,
    http: reqwest::Client,
    token: String,
    /// Every API answer of the scenario, to search for secrets.
    answers: Mutex<String>,
}

impl Service {
    /// Starts `serve`, with `extra` arguments such as `--log-format json`.
    pub(crate) async fn start(workspace: &Workspace, token: &str, extra: &[&str]) -> Service {
        Service::start_with_env(workspace, token, extra, &[]).await
    }

    /// Starts `serve` with these environment variables besides its own.
    pub(crate) async fn start_with_env(
        workspace: &Workspace,
        token: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Service {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
            .args(extra)
            .args(["serve", "--config"])
            .arg(&workspace.config)
            .env("RUST_LOG", "entra_sync=debug,info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("serve starts");
        let output = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let log = output.clone();
        tokio::spawn(async move {
            let mut buffer = [0_u8; 8192];
            while let Ok(read @ 1..) = stderr.read(&mut buffer).await {
                log.lock()
                    .expect("the log")
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("serve prints its address")
            .expect("stdout")
            .unwrap_or_else(|| panic!("serve exited: {}", output.lock().expect("the log")));
        output.lock().expect("the log").push_str(&format!("{first}\n"));
        let log = output.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                log.lock().expect("the log").push_str(&format!("{line}\n"));
            }
        });
        let url = first
            .strip_prefix("entra-sync serving on ")
            .unwrap_or_else(|| panic!("first line {first:?}"))
            .to_owned();
        Service {
            child,
            url,
            output,
            http: reqwest::Client::new(),
            token: token.to_owned(),
            answers: Mutex::new(String::new()),
        }
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: bool,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if token {
            request = request.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("serve answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        self.answers.lock().expect("answers").push_str(&text);
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, true, None).await;
        assert_eq!(status, 200, "{path}: {body}\n{}", self.output());
        body
    }

    pub(crate) async fn runs(&self, connection: &str) -> Vec<Value> {
        let runs = self.get(&format!("/api/v1/runs?connection={connection}")).await;
        let mut runs = runs.as_array().expect("an array").clone();
        runs.reverse();
        runs
    }

    fn output(&self) -> String {
        self.output.lock().expect("the log").clone()
    }

    /// Kills the service with SIGKILL, as a crash would, and waits until it is gone.
    pub(crate) async fn kill(&mut self) {
        self.child.kill().await.expect("serve is killed");
    }

    /// Sends SIGTERM, asserts the service exits 0, and returns everything it printed.
    pub(crate) async fn terminate(&mut self) -> String {
        let pid = self.child.id().expect("serve is running");
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("serve stops after SIGTERM")
            .expect("an exit status");
        // The readers drain the pipes after the exit.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let output = self.output();
        assert_eq!(status.code(), Some(0), "{output}");
        output
    }
}

/// How a delta run that changed nothing ends, for runs written straight into the history.
fn succeeded_delta() -> RunEnd<'static> {
    RunEnd {
        mode: "delta",
        status: "succeeded",
        counts: None,
        graph_requests: 3,
        duration_ms: 10,
        error: None,
        warnings: &[],
    }
}

fn time(run: &Value, field: &str) -> DateTime<Utc> {
    let text = run[field].as_str().unwrap_or_else(|| panic!("{field} in {run}"));
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// Asserts a connection's runs never overlapped and its scheduled runs fell on its grid.
fn assert_on_schedule(connection: &str, runs: &[Value], every_ms: i64, at_least: usize) {
    for pair in runs.windows(2) {
        assert!(
            time(&pair[0], "finished_at") <= time(&pair[1], "started_at"),
            "{connection}: runs overlap: {pair:?}"
        );
    }
    let scheduled: Vec<&Value> = runs.iter().filter(|run| run["trigger"] == "scheduled").collect();
    assert!(
        scheduled.len() >= at_least,
        "{connection}: {} scheduled runs, expected at least {at_least}: {runs:?}",
        scheduled.len()
    );
    // The first run is at once (no earlier success); the others start on the interval's grid,
    // give or take a loaded machine.
    for run in &scheduled[1..] {
        let late = time(run, "started_at").timestamp_millis().rem_euclid(every_ms);
        assert!(
            late < 1_200,
            "{connection}: started {late} ms after its tick: {run}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_two_tenants_on_their_schedules_until_sigterm() {
    let alpha_secret = "alpha-secret-value-5c2e91";
    let beta_secret = "beta-secret-value-0d7a44";
    let alpha = Tenant::start_with(graph_emulator::EmulatorOptions {
        users: 30,
        groups: 4,
        client_secret: alpha_secret.into(),
        ..graph_emulator::EmulatorOptions::default()
    })
    .await;
    let beta = Tenant::start_with(graph_emulator::EmulatorOptions {
        users: 45,
        groups: 5,
        seed: 11,
        client_secret: beta_secret.into(),
        ..graph_emulator::EmulatorOptions::default()
    })
    .await;
    let workspace = Workspace::new(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n{}schedule = \"every 2s\"\n\n{}schedule = \"every 3s\"\n\n{}schedule = \"every 1s\"\nenabled = false\n",
        alpha.connection("alpha"),
        beta.connection("beta"),
        alpha.connection("gamma"),
    ));
    let created = workspace.run(&["token", "create", "--name", "e2e"]).await;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8(created.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned();
    assert!(token.starts_with("est_"), "{token}");

    let mut service = Service::start(&workspace, &token, &[]).await;
    let (status, body) = service
        .call(reqwest::Method::GET, "/api/v1/runs", false, None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "unauthorized");

    tokio::time::sleep(Duration::from_secs(4)).await;
    // Sync Now; a scheduled run of the same connection may hold it for a moment.
    let summary = loop {
        let (status, body) = service
            .call(
                reqwest::Method::POST,
                "/api/v1/connections/alpha/sync",
                true,
                Some(json!({ "mode": "full" })),
            )
            .await;
        match status {
            202 => break body,
            409 => {
                assert_eq!(body["code"], "run_in_progress", "{body}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("Sync Now: {other}: {body}"),
        }
    };
    assert_eq!(summary["status"], "succeeded", "{summary}");
    assert_eq!(summary["mode"], "full");
    tokio::time::sleep(Duration::from_secs(4)).await;

    let alpha_runs = service.runs("alpha").await;
    let beta_runs = service.runs("beta").await;
    for (connection, runs) in [("alpha", &alpha_runs), ("beta", &beta_runs)] {
        assert!(
            runs.iter().all(|run| run["connection"] == connection),
            "{connection}: {runs:?}"
        );
        assert!(
            runs.iter()
                .all(|run| run["status"] == "succeeded" || run["status"] == "running"),
            "{connection}: {runs:?}"
        );
    }
    assert_on_schedule("alpha", &alpha_runs, 2_000, 3);
    assert_on_schedule("beta", &beta_runs, 3_000, 2);
    let api_runs: Vec<&Value> = alpha_runs.iter().filter(|run| run["trigger"] == "api").collect();
    assert_eq!(api_runs.len(), 1, "{alpha_runs:?}");
    assert_eq!(api_runs[0]["run_id"], summary["run_id"]);
    assert!(beta_runs.iter().all(|run| run["trigger"] == "scheduled"));
    assert_eq!(
        service.runs("gamma").await,
        Vec::<Value>::new(),
        "a disabled connection never runs"
    );
    let all = service.get("/api/v1/runs").await;
    assert_eq!(
        all.as_array().expect("an array").len(),
        alpha_runs.len() + beta_runs.len()
    );

    // Each tenant went to its own organization.
    for (connection, tenant, users) in [("alpha", &alpha, 30), ("beta", &beta, 45)] {
        let listed = service
            .get(&format!("/api/v1/users?connection={connection}"))
            .await;
        let listed = listed.as_array().expect("an array");
        assert_eq!(listed.len(), users, "{connection}");
        assert!(listed.iter().all(|user| user["organization"] == connection));
        let tenant_ids: std::collections::BTreeSet<String> = tenant
            .users()
            .await
            .iter()
            .map(|user| user["id"].as_str().expect("id").to_owned())
            .collect();
        assert!(
            listed
                .iter()
                .all(|user| tenant_ids.contains(user["entra_id"].as_str().expect("linked"))),
            "{connection} holds only its tenant's users"
        );
    }

    // The metrics count the runs the history shows; read both until no run ends in between.
    let finished = |runs: &[Value]| runs.iter().filter(|run| run["status"] == "succeeded").count();
    let mut consistent = false;
    for _ in 0..20 {
        let before = (
            finished(&service.runs("alpha").await),
            finished(&service.runs("beta").await),
        );
        let (status, metrics) = service.call(reqwest::Method::GET, "/metrics", false, None).await;
        assert_eq!(status, 200);
        let after = (
            finished(&service.runs("alpha").await),
            finished(&service.runs("beta").await),
        );
        if before != after {
            continue;
        }
        let metrics = metrics.as_str().expect("text");
        for line in [
            format!(
                "entra_sync_runs_total{{connection=\"alpha\",status=\"succeeded\"}} {}",
                before.0
            ),
            format!(
                "entra_sync_runs_total{{connection=\"beta\",status=\"succeeded\"}} {}",
                before.1
            ),
            "entra_sync_actions_total{connection=\"alpha\",kind=\"created\"} 30".to_owned(),
            "entra_sync_actions_total{connection=\"beta\",kind=\"created\"} 45".to_owned(),
            format!(
                "entra_sync_run_duration_seconds_count{{connection=\"alpha\"}} {}",
                before.0
            ),
            format!(
                "entra_sync_run_duration_seconds_bucket{{connection=\"beta\",le=\"+Inf\"}} {}",
                before.1
            ),
        ] {
            assert!(metrics.lines().any(|got| got == line), "{line} in\n{metrics}");
        }
        for series in [
            "entra_sync_graph_requests_total{connection=\"alpha\"} ",
            "entra_sync_last_success_timestamp_seconds{connection=\"beta\"} ",
        ] {
            assert!(metrics.contains(series), "{series} in\n{metrics}");
        }
        consistent = true;
        break;
    }
    assert!(consistent, "runs kept ending while reading the metrics");

    let output = service.terminate().await;
    assert!(output.contains("run finished"), "runs are logged: {output}");
    assert!(output.contains("stopped"), "{output}");
    let answers = service.answers.lock().expect("answers").clone();
    for secret in [alpha_secret, beta_secret] {
        assert!(!output.contains(secret), "a log line holds the secret: {output}");
        assert!(!answers.contains(secret), "an API answer holds the secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_syncs_at_once_only_when_a_scheduled_time_was_missed() {
    use chrono::Timelike;

    let tenant = Tenant::start(20, 3).await;
    // Daily, twelve hours from now: no scheduled time falls inside the test.
    let start_at = format!("{:02}:00", (entra_sync::clock::now().hour() + 12) % 24);
    let workspace = Workspace::new(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n{}schedule = \"every 1d\"\nstart_at = \"{start_at}\"\n",
        tenant.connection("daily")
    ));
    let created = workspace.run(&["token", "create", "--name", "restart"]).await;
    let token = String::from_utf8(created.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned();
    let (manual, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{manual}");

    // The last success is after the last scheduled time: nothing runs at the start.
    let mut service = Service::start(&workspace, &token, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = service.runs("daily").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["trigger"], "manual");
    service.terminate().await;

    // A success from two days ago missed yesterday's time: the restart syncs at once.
    let data = workspace.config.parent().expect("a folder").join("data");
    let store = Store::open(&data).await.expect("the store opens");
    let now = entra_sync::clock::now();
    let state = store
        .connection_state("daily", "daily", now)
        .await
        .expect("the connection");
    let two_days_ago = now - chrono::TimeDelta::days(2);
    let old = store
        .begin_run(state.id, Trigger::Scheduled, "delta", two_days_ago)
        .await
        .expect("a run");
    store
        .finish_run(old, &succeeded_delta(), two_days_ago)
        .await
        .expect("finished");
    drop(store);
    let mut service = Service::start(&workspace, &token, &["--log-format", "json"]).await;
    let restarted = entra_sync::clock::now();
    let mut caught_up = None;
    for _ in 0..100 {
        let runs = service.runs("daily").await;
        if let Some(run) = runs
            .iter()
            .find(|run| run["run_id"].as_i64() > Some(old) && !run["finished_at"].is_null())
        {
            caught_up = Some(run.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = caught_up.expect("a run at the restart");
    assert_eq!(run["trigger"], "scheduled", "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(
        time(&run, "started_at") - restarted < chrono::TimeDelta::seconds(5),
        "{run}"
    );
    let output = service.terminate().await;
    // With --log-format json every log line is one JSON object; stdout has the address line.
    let logs: Vec<Value> = output
        .lines()
        .filter(|line| !line.starts_with("entra-sync serving on "))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        logs.iter()
            .any(|log| log["fields"]["message"] == "run finished" && log["fields"]["connection"] == "daily"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_through_the_api_syncs_keeps_its_secret_sealed_and_is_edited_and_deleted() {
    let secret = "api-made-secret-value-7e3f10";
    let tenant = Tenant::start_with(graph_emulator::EmulatorOptions {
        users: 20,
        groups: 3,
        client_secret: secret.into(),
        ..graph_emulator::EmulatorOptions::default()
    })
    .await;
    let api = Api::new(UNREACHABLE).await;
    let body = connection_body(&tenant, "alpha");
    assert_eq!(body["client_secret"], secret);

    for (change, status, code) in [
        (json!({ "client_secret": null }), 422, "invalid_connection"),
        (
            json!({ "client_secret_file": "/etc/shadow" }),
            422,
            "invalid_connection",
        ),
        (json!({ "name": "a/b" }), 422, "invalid_connection"),
        (json!({ "schedule": "sometimes" }), 422, "invalid_connection"),
        (json!({ "colour": "blue" }), 422, "invalid_connection"),
        (json!({ "name": "contoso" }), 409, "connection_exists"),
        (json!({ "organization": "contoso" }), 409, "organization_taken"),
    ] {
        let mut wrong = body.clone();
        for (key, value) in change.as_object().expect("an object") {
            wrong[key] = value.clone();
        }
        let (got, answer) = api.send(Method::POST, "/api/v1/connections", Some(wrong)).await;
        assert_eq!(
            (got.as_u16(), &answer["code"]),
            (status, &json!(code)),
            "{change}: {answer}"
        );
        assert!(!answer.to_string().contains(secret), "{answer}");
    }

    let (status, created) = api
        .send(Method::POST, "/api/v1/connections", Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["source"], "api");
    assert_eq!(created["organization"], "alpha");
    assert_eq!(
        created["credential"],
        json!({ "kind": "client_secret", "stored": "encrypted" })
    );
    let (status, again) = api.send(Method::POST, "/api/v1/connections", Some(body)).await;
    assert_eq!(
        (status, &again["code"]),
        (StatusCode::CONFLICT, &json!("connection_exists"))
    );

    let (status, summary) = api
        .send(Method::POST, "/api/v1/connections/alpha/sync", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{summary}");
    assert_eq!(
        (&summary["status"], &summary["created"]),
        (&json!("succeeded"), &json!(20))
    );
    let (_, users) = api.get("/api/v1/users?connection=alpha").await;
    assert_eq!(users.as_array().expect("an array").len(), 20);
    assert!(
        users
            .as_array()
            .expect("an array")
            .iter()
            .all(|user| user["organization"] == "alpha")
    );

    let (_, listed) = api.get("/api/v1/connections").await;
    let names: Vec<&str> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|connection| connection["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["alpha", "contoso", "paused"]);
    let (_, alpha) = api.get("/api/v1/connections/alpha").await;
    for answer in [&listed, &alpha, &created] {
        assert!(
            !answer.to_string().contains(secret),
            "an answer holds the secret: {answer}"
        );
    }
    let (definition, sealed): (String, String) =
        sqlx::query_as("SELECT definition, client_secret_sealed FROM api_connections WHERE name = 'alpha'")
            .fetch_one(&api.store.pool())
            .await
            .expect("the stored connection");
    assert!(sealed.starts_with("v1:"), "{sealed}");
    assert!(!definition.contains(secret) && !sealed.contains(secret));
    assert!(
        !database_text(&api.config.data_dir).contains(secret),
        "the database files hold the secret in clear"
    );

    // The config file's connections are read-only through the API.
    for method in [Method::PATCH, Method::DELETE] {
        let body = (method == Method::PATCH).then(|| json!({ "enabled": false }));
        let (status, answer) = api
            .send(method.clone(), "/api/v1/connections/contoso", body)
            .await;
        assert_eq!(
            (status, &answer["code"]),
            (StatusCode::CONFLICT, &json!("connection_read_only")),
            "{method}: {answer}"
        );
    }

    // A wrong secret, then the right one again: the secret is write-only but replaceable.
    let test = "/api/v1/connections/alpha/test";
    let (status, patched) = api
        .send(
            Method::PATCH,
            "/api/v1/connections/alpha",
            Some(json!({ "client_secret": "not-the-secret" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(api.send(Method::POST, test, None).await.1["ok"], false);
    api.send(
        Method::PATCH,
        "/api/v1/connections/alpha",
        Some(json!({ "client_secret": secret })),
    )
    .await;
    assert_eq!(api.send(Method::POST, test, None).await.1["ok"], true);
    let (status, moved) = api
        .send(
            Method::PATCH,
            "/api/v1/connections/alpha",
            Some(json!({ "authority_url": "https://login.attacker.example" })),
        )
        .await;
    assert_eq!(
        (status.as_u16(), &moved["code"]),
        (422, &json!("invalid_connection")),
        "the stored secret never goes to a new host: {moved}"
    );
    let (status, renamed) = api
        .send(
            Method::PATCH,
            "/api/v1/connections/alpha",
            Some(json!({ "name": "beta" })),
        )
        .await;
    assert_eq!(
        (status.as_u16(), &renamed["code"]),
        (422, &json!("invalid_connection"))
    );

    // A second runner on the same data folder, as after a restart, opens the sealed secret.
    let restarted = Runner::new(api.store.clone(), &api.config);
    restarted
        .load_stored()
        .await
        .expect("the stored connections load");
    let (connection, origin) = restarted.connection("alpha").expect("alpha after a restart");
    assert_eq!(origin, entra_sync::serve::Origin::Api);
    let permit = restarted.try_begin("alpha").expect("free");
    let options = entra_sync::sync::RunOptions {
        full: false,
        dry_run: false,
        trigger: Trigger::Manual,
    };
    let delta = restarted.run(permit, options).await.expect("a run");
    assert_eq!((delta.status, delta.mode), ("succeeded", "delta"), "{delta:?}");
    assert_eq!(connection.organization, "alpha");

    let (status, disabled) = api
        .send(
            Method::PATCH,
            "/api/v1/connections/alpha",
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(
        (status, &disabled["enabled"]),
        (StatusCode::OK, &json!(false)),
        "{disabled}"
    );
    let (status, refused) = api
        .send(Method::POST, "/api/v1/connections/alpha/sync", None)
        .await;
    assert_eq!(
        (status, &refused["code"]),
        (StatusCode::CONFLICT, &json!("connection_disabled"))
    );

    let permit = api.runner.try_begin("contoso").expect("free");
    drop(permit);
    let (status, _) = api.send(Method::DELETE, "/api/v1/connections/alpha", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get("/api/v1/connections/alpha").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, runs) = api.get("/api/v1/runs?connection=alpha").await;
    assert_eq!(
        runs.as_array().expect("an array").len(),
        2,
        "the history stays: {runs}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM api_connections")
        .fetch_one(&api.store.pool())
        .await
        .expect("a count");
    assert_eq!(stored, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_and_one_group_syncs_apply_only_their_objects_and_leave_the_delta_links() {
    let tenant = Tenant::start(30, 4).await;
    let api = Api::new(&tenant.connection("contoso")).await;
    let (_, first) = api
        .send(Method::POST, "/api/v1/connections/contoso/sync", None)
        .await;
    assert_eq!(first["created"], 30, "{first}");
    let links = || async {
        let state = api
            .store
            .connection_state("contoso", "contoso", entra_sync::clock::now())
            .await
            .expect("the state");
        (state.users_delta_link, state.groups_delta_link)
    };
    let links_before = links().await;
    let job_title = |id: String| {
        let api = &api;
        async move {
            let (_, users) = api.get("/api/v1/users?connection=contoso").await;
            users
                .as_array()
                .expect("an array")
                .iter()
                .find(|user| user["entra_id"] == id.as_str())
                .map(|user| user["job_title"].clone())
                .expect("the user")
        }
    };
    let active: Vec<String> = tenant
        .users()
        .await
        .iter()
        .filter(|user| user["state"] == "active" && user["accountEnabled"] == true)
        .map(|user| user["id"].as_str().expect("id").to_owned())
        .collect();
    let (one, other) = (&active[0], &active[1]);
    for (id, title) in [(one, "Chief Synchroniser"), (other, "Left For Later")] {
        tenant
            .control(
                reqwest::Method::PATCH,
                &format!("users/{id}"),
                Some(json!({ "jobTitle": title })),
            )
            .await;
    }

    let user_sync = |id: &str| format!("/api/v1/connections/contoso/users/{id}/sync");
    let (status, info) = api
        .send(Method::POST, &user_sync(one), Some(json!({ "mode": "info" })))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{info}");
    assert_eq!(
        (&info["status"], &info["mode"], &info["updated"]),
        (&json!("succeeded"), &json!("info"), &json!(1)),
        "{info}"
    );
    assert_eq!(job_title(one.clone()).await, "Chief Synchroniser");
    assert_ne!(job_title(other.clone()).await, "Left For Later", "only that user");
    assert_eq!(
        links().await,
        links_before,
        "a one-user sync leaves the delta links"
    );
    let (_, run) = api.get(&format!("/api/v1/runs/{}", info["run_id"])).await;
    assert_eq!(
        (&run["trigger"], &run["mode"], &run["subject"]),
        (&json!("user"), &json!("info"), &json!(one))
    );
    let (_, actions) = api.get(&format!("/api/v1/runs/{}/actions", info["run_id"])).await;
    let actions = actions.as_array().expect("an array");
    assert!(!actions.is_empty());
    assert!(
        actions.iter().all(|action| action["entra_id"] == one.as_str()),
        "{actions:?}"
    );

    // The next run reads both changes from the unchanged links; the first is already applied.
    let (_, delta) = api
        .send(Method::POST, "/api/v1/connections/contoso/sync", None)
        .await;
    assert_eq!(
        (&delta["mode"], &delta["updated"]),
        (&json!("delta"), &json!(1)),
        "{delta}"
    );
    assert_eq!(job_title(other.clone()).await, "Left For Later");

    let (_, downstream) = api
        .send(
            Method::POST,
            &user_sync(one),
            Some(json!({ "mode": "downstream" })),
        )
        .await;
    assert_eq!(
        (
            &downstream["status"],
            &downstream["unchanged"],
            &downstream["graph_requests"]
        ),
        (&json!("succeeded"), &json!(1), &json!(0)),
        "{downstream}"
    );
    let (_, full) = api.send(Method::POST, &user_sync(one), None).await;
    assert_eq!(
        (&full["status"], &full["mode"]),
        (&json!("succeeded"), &json!("full")),
        "{full}"
    );
    let (_, missing) = api
        .send(
            Method::POST,
            &user_sync("no-such-user"),
            Some(json!({ "mode": "info" })),
        )
        .await;
    assert_eq!(missing["status"], "failed", "{missing}");
    assert!(
        missing["error"]
            .as_str()
            .expect("an error")
            .contains("Entra has no user"),
        "{missing}"
    );
    let (status, bad) = api
        .send(Method::POST, &user_sync(one), Some(json!({ "mode": "sideways" })))
        .await;
    assert_eq!(
        (status, &bad["code"]),
        (StatusCode::BAD_REQUEST, &json!("bad_request"))
    );

    // One group: a member added in Entra and a member's new title arrive; nothing else.
    let groups = tenant.groups().await;
    let group = groups
        .iter()
        .min_by_key(|group| group["memberIds"].as_array().map_or(0, Vec::len))
        .expect("a group");
    let group_id = group["id"].as_str().expect("id");
    let members: Vec<&str> = group["memberIds"]
        .as_array()
        .expect("memberIds")
        .iter()
        .map(|id| id.as_str().expect("id"))
        .collect();
    let joiner = active
        .iter()
        .find(|id| !members.contains(&id.as_str()) && *id != one && *id != other)
        .expect("a user outside the group");
    tenant
        .post(&format!("groups/{group_id}/members"), json!({ "id": joiner }))
        .await;
    tenant
        .control(
            reqwest::Method::PATCH,
            &format!("users/{joiner}"),
            Some(json!({ "jobTitle": "New Joiner" })),
        )
        .await;
    let bystander = active
        .iter()
        .find(|id| !members.contains(&id.as_str()) && *id != joiner && *id != one && *id != other)
        .expect("another user outside the group");
    tenant
        .control(
            reqwest::Method::PATCH,
            &format!("users/{bystander}"),
            Some(json!({ "jobTitle": "Not In The Group" })),
        )
        .await;
    let links_before = links().await;
    let (status, grouped) = api
        .send(
            Method::POST,
            &format!("/api/v1/connections/contoso/groups/{group_id}/sync"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{grouped}");
    assert_eq!(grouped["status"], "succeeded", "{grouped}");
    assert_eq!(grouped["memberships_added"], 1, "{grouped}");
    assert_eq!(grouped["updated"], 1, "{grouped}");
    assert_eq!(job_title(joiner.clone()).await, "New Joiner");
    assert_ne!(job_title(bystander.clone()).await, "Not In The Group");
    assert_eq!(links().await, links_before);
    let (_, runs) = api.get("/api/v1/runs?connection=contoso&limit=1").await;
    assert_eq!(
        (&runs[0]["trigger"], &runs[0]["subject"]),
        (&json!("group"), &json!(group_id))
    );

    // The last successful run, which a restart's catch-up goes by, is the whole delta run.
    let (_, delta_run) = api.get(&format!("/api/v1/runs/{}", delta["run_id"])).await;
    let last = api.store.last_success("contoso").await.expect("the last success");
    assert_eq!(last, Some(time(&delta_run, "started_at")), "{delta_run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_schedules_a_connection_made_through_the_api_and_keeps_it_across_a_restart() {
    let secret = "scheduled-api-secret-31c9aa";
    let tenant = Tenant::start_with(graph_emulator::EmulatorOptions {
        users: 15,
        groups: 2,
        client_secret: secret.into(),
        ..graph_emulator::EmulatorOptions::default()
    })
    .await;
    let workspace = Workspace::new("[server]\nlisten = \"127.0.0.1:0\"\n");
    let created = workspace.run(&["token", "create", "--name", "e2e"]).await;
    let token = String::from_utf8(created.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned();
    let mut service = Service::start(&workspace, &token, &[]).await;
    let mut body = connection_body(&tenant, "alpha");
    body["schedule"] = json!("every 1s");
    let (status, created) = service
        .call(reqwest::Method::POST, "/api/v1/connections", true, Some(body))
        .await;
    assert_eq!(status, 201, "{created}");

    let scheduled = |runs: &[Value]| runs.iter().filter(|run| run["trigger"] == "scheduled").count();
    let mut runs = Vec::new();
    for _ in 0..100 {
        runs = service.runs("alpha").await;
        if scheduled(&runs) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(scheduled(&runs) >= 2, "the scheduler runs it: {runs:?}");
    assert_eq!(runs[0]["counts"]["created"], 15, "{runs:?}");

    let (status, disabled) = service
        .call(
            reqwest::Method::PATCH,
            "/api/v1/connections/alpha",
            true,
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!((status, &disabled["enabled"]), (200, &json!(false)), "{disabled}");
    // A run that had started finishes; then nothing more starts.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stopped = service.runs("alpha").await.len();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        service.runs("alpha").await.len(),
        stopped,
        "a disabled connection never runs"
    );
    service.terminate().await;

    let data = workspace.config.parent().expect("a folder").join("data");
    let key_file = data.join(entra_sync::secrets::KEY_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("the key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key_file.display());
    }
    assert!(
        !database_text(&data).contains(secret),
        "the database holds the secret in clear"
    );

    // The command line finds the connection made through the API, and opens its secret.
    let listed = workspace.run(&["users", "--json", "--connection", "alpha"]).await;
    let users: Vec<Value> = serde_json::from_slice(&listed.stdout).expect("users --json");
    assert_eq!(users.len(), 15);
    let history = workspace
        .run(&["history", "--json", "--connection", "alpha"])
        .await;
    let history: Vec<Value> = serde_json::from_slice(&history.stdout).expect("history --json");
    assert_eq!(history.len(), stopped);
    let (summary, code) = workspace.sync(&["--connection", "alpha"]).await;
    assert_eq!((code, &summary["status"]), (0, &json!("succeeded")), "{summary}");
    let unknown = workspace.run(&["users", "--connection", "nope"]).await;
    assert_eq!(unknown.status.code(), Some(2));
    let stopped = stopped + 1;

    let mut service = Service::start(&workspace, &token, &[]).await;
    let alpha = service.get("/api/v1/connections/alpha").await;
    assert_eq!(
        (&alpha["source"], &alpha["enabled"]),
        (&json!("api"), &json!(false)),
        "{alpha}"
    );
    service
        .call(
            reqwest::Method::PATCH,
            "/api/v1/connections/alpha",
            true,
            Some(json!({ "enabled": true })),
        )
        .await;
    let mut resumed = false;
    for _ in 0..100 {
        if service.runs("alpha").await.len() > stopped {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        resumed,
        "enabled again, it runs again (with the secret opened after the restart)"
    );
    let latest = service.runs("alpha").await;
    let newest = latest.last().expect("a run");
    assert_ne!(newest["status"], "failed", "{newest}");
    let (status, _) = service
        .call(reqwest::Method::DELETE, "/api/v1/connections/alpha", true, None)
        .await;
    assert!(
        status == 204 || status == 409,
        "deleted, or refused while it syncs: {status}"
    );
    let output = service.terminate().await;
    let answers = service.answers.lock().expect("answers").clone();
    assert!(!output.contains(secret), "a log line holds the secret: {output}");
    assert!(!answers.contains(secret), "an API answer holds the secret");
}
