//! The admin UI's router driven without a socket: pages refuse a request without a session,
//! forms refuse one without the CSRF token, sign-in takes a token or the admin password and
//! limits failures, and the pages render against a synced emulated tenant. The browser test is
//! in `browser`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use entra_sync::config::Config;
use entra_sync::serve::Runner;
use entra_sync::store::Store;
use entra_sync::{api, ui};
use tower::ServiceExt;

use crate::support::{Tenant, Workspace};

/// The UI router on a temp data folder, and a browser's cookies.
struct Ui {
    _dir: tempfile::TempDir,
    router: axum::Router,
    store: Store,
    runner: Arc<Runner>,
    cookies: Vec<(String, String)>,
}

/// An answer: status, `Location`, body.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Ui {
    async fn new(connections: &str) -> Ui {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("entra-sync.toml");
        let config = Config::parse(&path, &format!("data_dir = \"data\"\n{connections}")).expect("valid");
        let store = Store::open(&config.data_dir).await.expect("the store opens");
        let runner = Arc::new(Runner::new(store.clone(), &config));
        let router = ui::router(store.clone(), runner.clone());
        Ui {
            _dir: dir,
            router,
            store,
            runner,
            cookies: Vec::new(),
        }
    }

    async fn send(&mut self, method: Method, uri: &str, form: Option<&[(&str, &str)]>) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if !self.cookies.is_empty() {
            let cookies: Vec<String> = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            request = request.header(header::COOKIE, cookies.join("; "));
        }
        let body = match form {
            Some(fields) => {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(fields)
                        .finish(),
                )
            }
            None => Body::empty(),
        };
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).expect("a request"))
            .await
            .expect("an answer");
        for set in response.headers().get_all(header::SET_COOKIE) {
            let set = set.to_str().expect("ASCII");
            let pair = set.split(';').next().expect("a pair");
            let (name, value) = pair.split_once('=').expect("name=value");
            self.cookies.retain(|(known, _)| known != name);
            // A removal sets an empty value with a past expiry.
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|value| value.to_str().expect("ASCII").to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        Answer {
            status,
            location,
            body: String::from_utf8(bytes.to_vec()).expect("UTF-8"),
        }
    }

    async fn get(&mut self, uri: &str) -> Answer {
        self.send(Method::GET, uri, None).await
    }

    async fn post(&mut self, uri: &str, form: &[(&str, &str)]) -> Answer {
        self.send(Method::POST, uri, Some(form)).await
    }

    /// Sync Now through its confirmation page; waits for the run to end and returns the progress
    /// block with its result.
    async fn sync_now(&mut self) -> String {
        self.sync_now_of("contoso").await
    }

    /// Sync Now of the connection `name`.
    async fn sync_now_of(&mut self, name: &str) -> String {
        let page = self.get(&format!("/ui/connections/{name}/sync")).await;
        let answer = self
            .post(
                &format!("/ui/connections/{name}/sync"),
                &[("csrf", &csrf(&page.body)), ("mode", "delta")],
            )
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.location, Some(format!("/ui/connections/{name}")));
        for _ in 0..400 {
            let progress = self.get(&format!("/ui/connections/{name}/progress")).await;
            if progress.body.contains("data-state=\"idle\"") {
                assert!(!progress.body.contains("hx-trigger"), "{}", progress.body);
                return progress.body;
            }
            assert!(
                progress.body.contains("hx-trigger=\"every 1s\""),
                "{}",
                progress.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the run did not finish");
    }

    /// Signs in with `secret` through the sign-in form; returns the answer to the form.
    async fn sign_in(&mut self, secret: &str) -> Answer {
        let page = self.get("/ui/sign-in").await;
        assert_eq!(page.status, StatusCode::OK);
        let csrf = csrf(&page.body);
        self.post("/ui/sign-in", &[("csrf", &csrf), ("secret", secret)])
            .await
    }
}

/// The CSRF token of the first form on a page.
fn csrf(page: &str) -> String {
    let start = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[start..][..page[start..].find('"').expect("the value ends")].to_owned()
}

const CONTOSO: &str = r#"
[[connections]]
name = "contoso"
tenant_id = "t"
client_id = "c"
client_secret = "ui-test-secret"
authority_url = "http://127.0.0.1:9"
graph_url = "http://127.0.0.1:9"
"#;

const PAGES: &[&str] = &[
    "/ui/connections",
    "/ui/connections/contoso",
    "/ui/connections/contoso/sync",
    "/ui/connections/contoso/progress",
    "/ui/new-connection",
    "/ui/runs",
    "/ui/runs/1",
    "/ui/users",
    "/ui/users/1",
    "/ui/groups",
    "/ui/groups/1",
    "/ui/departments",
    "/ui/departments/1",
];

const FORMS: &[&str] = &[
    "/ui/connections/contoso/sync",
    "/ui/connections/contoso/test",
    "/ui/runs/1/approve",
    "/ui/runs/1/discard",
    "/ui/new-connection",
    "/ui/connections/contoso/edit",
    "/ui/connections/contoso/change",
    "/ui/users/1/sync",
    "/ui/groups/1/sync",
    "/ui/sign-out",
];

#[tokio::test]
async fn pages_and_forms_refuse_a_request_without_a_session() {
    let mut ui = Ui::new(CONTOSO).await;
    for page in PAGES {
        let answer = ui.get(page).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{page}");
        assert_eq!(answer.location.as_deref(), Some("/ui/sign-in"), "{page}");
    }
    for form in FORMS {
        let answer = ui.post(form, &[("csrf", "anything")]).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{form}");
        assert_eq!(answer.location.as_deref(), Some("/ui/sign-in"), "{form}");
    }
    // htmx polling without a session is sent to the sign-in page as a whole page.
    let request = Request::get("/ui/connections/contoso/progress")
        .header("hx-request", "true")
        .body(Body::empty())
        .expect("a request");
    let answer = ui.router.clone().oneshot(request).await.expect("an answer");
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers()["hx-redirect"], "/ui/sign-in");
    // A made-up session is no session.
    ui.cookies.push(("entra_sync_session".into(), "made-up".into()));
    let answer = ui.get("/ui/connections").await;
    assert_eq!(answer.location.as_deref(), Some("/ui/sign-in"));
    assert!(!ui.runner.is_running("contoso"));
}

#[tokio::test]
async fn forms_refuse_a_request_without_the_csrf_token() {
    let mut ui = Ui::new(CONTOSO).await;
    let token = api::create_token(&ui.store, "ui").await.expect("a token");
    // The sign-in form itself: without its token, or with one that is not the cookie's.
    let answer = ui.post("/ui/sign-in", &[("secret", &token)]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    ui.get("/ui/sign-in").await;
    let answer = ui
        .post("/ui/sign-in", &[("csrf", "forged"), ("secret", &token)])
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = ui.sign_in(&token).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.location.as_deref(), Some("/ui/connections"));
    let page = ui.get("/ui/connections").await;
    assert_eq!(page.status, StatusCode::OK);
    let good = csrf(&page.body);
    for form in FORMS {
        for fields in [vec![], vec![("csrf", "forged")], vec![("csrf", "")]] {
            let answer = ui.post(form, &fields).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{form} with {fields:?}");
            assert!(answer.body.contains("security token"), "{}", answer.body);
        }
    }
    assert!(!ui.runner.is_running("contoso"), "a refused form started a run");
    // With the token, the same form goes through.
    let answer = ui.post("/ui/sign-out", &[("csrf", &good)]).await;
    assert_eq!(answer.location.as_deref(), Some("/ui/sign-in"));
    assert_eq!(ui.get("/ui/connections").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_in_takes_a_token_or_the_password_and_limits_failures() {
    let mut ui = Ui::new(CONTOSO).await;
    assert!(matches!(
        ui::set_admin_password(&ui.store, "short").await,
        Err(ui::PasswordError::TooShort)
    ));
    ui::set_admin_password(&ui.store, "correct horse battery")
        .await
        .expect("the password is set");
    let answer = ui.sign_in("correct horse battery").await;
    assert_eq!(
        answer.location.as_deref(),
        Some("/ui/connections"),
        "{}",
        answer.body
    );
    let page = ui.get("/ui/connections").await;
    assert!(
        page.body.contains("Signed in with the admin password"),
        "{}",
        page.body
    );

    let mut stranger = Ui {
        cookies: Vec::new(),
        _dir: tempfile::tempdir().expect("a temp dir"),
        router: ui.router.clone(),
        store: ui.store.clone(),
        runner: ui.runner.clone(),
    };
    for attempt in 0..5 {
        let answer = stranger.sign_in("wrong horse battery").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
        assert!(answer.body.contains("not a known API token"), "{}", answer.body);
    }
    // Limited now, even with the right password.
    let answer = stranger.sign_in("correct horse battery").await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        answer.body.contains("Too many failed sign-ins"),
        "{}",
        answer.body
    );
    assert_eq!(
        stranger.get("/ui/connections").await.status,
        StatusCode::SEE_OTHER
    );
    // The stored hash is argon2, not the password.
    let stored: String = sqlx::query_scalar("SELECT argon2_hash FROM admin_password")
        .fetch_one(&ui.store.pool())
        .await
        .expect("a hash");
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains("horse"));
}

#[tokio::test]
async fn every_page_renders_against_a_synced_tenant() {
    let tenant = Tenant::start(40, 5).await;
    let mut ui = Ui::new(&tenant.connection("contoso")).await;
    let token = api::create_token(&ui.store, "ui").await.expect("a token");
    ui.sign_in(&token).await;
    let progress = ui.sync_now().await;
    assert!(progress.contains("data-test=\"run-counts\""), "{progress}");
    assert!(progress.contains("<dt>created</dt> <dd>40</dd>"), "{progress}");
    for page in PAGES {
        let answer = ui.get(page).await;
        assert_eq!(answer.status, StatusCode::OK, "{page}: {}", answer.body);
        // The progress block is a fragment for htmx; every other page is a whole one.
        let whole = !page.ends_with("/progress");
        assert_eq!(answer.body.contains("<main>"), whole, "{page}: {}", answer.body);
    }
    let connection = ui.get("/ui/connections/contoso").await;
    assert!(
        connection.body.contains("data-test=\"tenant-values\""),
        "{}",
        connection.body
    );
    assert!(
        connection.body.contains("<span class=\"value\">Member "),
        "{}",
        connection.body
    );
    assert!(
        connection.body.contains("data-test=\"microsoft-data\"")
            && !connection.body.contains("notice warning"),
        "{}",
        connection.body
    );
    let user = ui.get("/ui/users/1").await;
    assert!(user.body.contains("In scope"), "{}", user.body);
    assert!(
        user.body.contains("data-test=\"microsoft-data\"") && user.body.contains("<dt>MFA registered</dt>"),
        "{}",
        user.body
    );
    let history = ui.get("/ui/runs?connection=contoso&status=succeeded").await;
    assert!(history.body.contains("<svg class=\"chart\""), "{}", history.body);
    let answer = ui.get("/ui/runs?connection=nope").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    for missing in [
        "/ui/users/9999",
        "/ui/runs/9999",
        "/ui/connections/nope",
        "/ui/no-such-page",
    ] {
        let answer = ui.get(missing).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{missing}");
        assert!(answer.body.contains("<main>"), "{missing}: {}", answer.body);
    }
}

#[tokio::test]
async fn the_connection_page_shows_microsoft_data_the_tenant_refuses() {
    let tenant = Tenant::start(10, 2).await;
    tenant
        .control(
            reqwest::Method::PUT,
            "tenant/premium",
            Some(serde_json::json!({ "premium": false })),
        )
        .await;
    let mut ui = Ui::new(&tenant.connection("contoso")).await;
    let token = api::create_token(&ui.store, "ui").await.expect("a token");
    ui.sign_in(&token).await;
    ui.sync_now().await;
    let connection = ui.get("/ui/connections/contoso").await;
    assert!(
        connection.body.contains("<p class=\"notice warning\">last sign-in and MFA registration unavailable: the tenant has no Entra ID P1 or P2 licence"),
        "{}",
        connection.body
    );
    let user = ui.get("/ui/users/1").await;
    assert!(
        user.body.contains("<dt>MFA registered</dt> <dd>unknown</dd>"),
        "{}",
        user.body
    );
    // The run that met the refusal keeps the warning in the history.
    let run = ui.get("/ui/runs/1").await;
    let warnings = run
        .body
        .split("data-test=\"run-warnings\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no warnings on the run page: {}", run.body));
    assert!(
        warnings.contains("the tenant has no Entra ID P1 or P2 licence"),
        "{}",
        run.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_set_password_reads_stdin_and_refuses_a_short_one() {
    use tokio::io::AsyncWriteExt;
    let workspace = Workspace::new(CONTOSO);
    for (password, code) in [("short\n", 2), ("a long enough password\n", 0)] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
            .args(["admin", "set-password", "--config"])
            .arg(&workspace.config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(password.as_bytes()).await.expect("written");
        drop(stdin);
        let output = child.wait_with_output().await.expect("it ends");
        assert_eq!(
            output.status.code(),
            Some(code),
            "{password:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let config = Config::load(&workspace.config).expect("valid");
    let store = Store::open(&config.data_dir).await.expect("the store opens");
    let runner = Arc::new(Runner::new(store.clone(), &config));
    let mut ui = Ui {
        _dir: tempfile::tempdir().expect("a temp dir"),
        router: ui::router(store.clone(), runner.clone()),
        store,
        runner,
        cookies: Vec::new(),
    };
    let answer = ui.sign_in("a long enough password").await;
    assert_eq!(
        answer.location.as_deref(),
        Some("/ui/connections"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn a_blocked_run_shows_its_plan_and_discard_drops_it() {
    let tenant = Tenant::start(20, 3).await;
    let mut ui = Ui::new(&tenant.connection("contoso")).await;
    let token = api::create_token(&ui.store, "ui").await.expect("a token");
    ui.sign_in(&token).await;
    ui.sync_now().await;
    let mut names = Vec::new();
    for user in tenant.users().await.iter().take(5) {
        let id = user["id"].as_str().expect("an id");
        tenant
            .post(&format!("users/{id}/soft-delete"), serde_json::json!({}))
            .await;
        names.push(user["displayName"].as_str().expect("a name").to_owned());
    }
    let progress = ui.sync_now().await;
    assert!(
        progress.contains("data-test=\"last-status\">blocked"),
        "{progress}"
    );
    let run = ui.store.runs(Some("contoso"), 1).await.expect("runs")[0].run_id;
    let page = ui.get(&format!("/ui/runs/{run}")).await;
    for text in [
        "Plan awaiting approval",
        "max_deprovision_percent",
        "Approve and apply",
        "Discard",
        "disable user",
    ] {
        assert!(page.body.contains(text), "{text} missing: {}", page.body);
    }
    // The plan names whom it would disable, with a link to each.
    let plain = names
        .iter()
        .find(|name| name.chars().all(|c| c.is_alphanumeric() || c == ' '))
        .expect("a name without characters HTML escapes");
    assert!(
        page.body.contains(&format!("\">{plain}</a>")),
        "{plain}: {}",
        page.body
    );
    let answer = ui
        .post(&format!("/ui/runs/{run}/discard"), &[("csrf", &csrf(&page.body))])
        .await;
    assert_eq!(
        answer.location,
        Some(format!("/ui/runs/{run}")),
        "{}",
        answer.body
    );
    let page = ui.get(&format!("/ui/runs/{run}")).await;
    assert!(
        page.body.contains("data-test=\"run-status\">discarded"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("Approve and apply"), "{}", page.body);
    let answer = ui
        .post(&format!("/ui/runs/{run}/approve"), &[("csrf", &csrf(&page.body))])
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    assert!(answer.body.contains("was discarded"), "{}", answer.body);
    let answer = ui
        .post(&format!("/ui/runs/{run}/discard"), &[("csrf", &csrf(&page.body))])
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    let active = ui
        .store
        .users("contoso")
        .await
        .expect("users")
        .iter()
        .filter(|user| user.status == "active")
        .count();
    assert_eq!(active, 20, "a discarded plan changed the directory");
}

#[tokio::test]
async fn sync_now_says_why_a_run_cannot_start() {
    let mut ui = Ui::new(
        "[[connections]]\nname = \"contoso\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"ENTRA_SYNC_UI_TEST_UNSET\"\n",
    )
    .await;
    let token = api::create_token(&ui.store, "ui").await.expect("a token");
    ui.sign_in(&token).await;
    let page = ui.get("/ui/connections/contoso/sync").await;
    let answer = ui
        .post("/ui/connections/contoso/sync", &[("csrf", &csrf(&page.body))])
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.body);
    assert!(
        answer.body.contains("ENTRA_SYNC_UI_TEST_UNSET"),
        "{}",
        answer.body
    );
    assert!(!ui.runner.is_running("contoso"));
    // Test connection says the same, and the list shows it as the connection's health.
    let answer = ui
        .post("/ui/connections/contoso/test", &[("csrf", &csrf(&page.body))])
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.contains("No token"), "{}", answer.body);
    let list = ui.get("/ui/connections").await;
    assert!(list.body.contains("Test failed"), "{}", list.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_connection_shows_when_the_secret_expires_highlighted_when_close() {
    let tenant = Tenant::start(5, 1).await;
    let expires = entra_sync::clock::now() + chrono::Duration::days(10) + chrono::Duration::hours(12);
    tenant
        .control(
            reqwest::Method::PUT,
            "app/secret-expiry",
            Some(serde_json::json!({ "endDateTime": expires.format("%Y-%m-%dT%H:%M:%SZ").to_string() })),
        )
        .await;
    let mut ui = Ui::new(&tenant.connection("contoso")).await;
    let token = api::create_token(&ui.store, "ui").await.expect("a token");
    ui.sign_in(&token).await;
    let page = ui.get("/ui/connections/contoso").await;
    assert!(
        !page.body.contains("data-test=\"secret-expiry\""),
        "not tested yet"
    );
    let answer = ui
        .post("/ui/connections/contoso/test", &[("csrf", &csrf(&page.body))])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let line = format!("Secret expires {} (10 days)", expires.format("%Y-%m-%d"));
    let highlighted = format!("<span data-test=\"secret-expiry\" class=\"badge warn\">{line}</span>");
    assert!(answer.body.contains(&highlighted), "{}", answer.body);
    let list = ui.get("/ui/connections").await;
    assert!(list.body.contains(&line), "{}", list.body);
    assert!(list.body.contains("class=\"badge warn\""), "{}", list.body);

    // Without the permission the page says why the expiry is unknown, and the test still passes.
    tenant
        .control(
            reqwest::Method::PUT,
            "app/roles",
            Some(serde_json::json!(["User.Read.All", "GroupMember.Read.All"])),
        )
        .await;
    let answer = ui
        .post("/ui/connections/contoso/test", &[("csrf", &csrf(&page.body))])
        .await;
    assert!(answer.body.contains("notice ok"), "{}", answer.body);
    assert!(
        answer
            .body
            .contains("The secret&#x27;s expiry is unknown: the app lacks Application.Read.All"),
        "{}",
        answer.body
    );
}

/// The Set up form's fields for a connection named `name` to the emulated tenant: its config
/// lines (ids, secret, endpoints) as form fields.
fn set_up_fields(tenant: &Tenant, name: &str) -> Vec<(String, String)> {
    let mut fields = vec![("name".to_owned(), name.to_owned())];
    for line in tenant.emulator.config_lines().lines() {
        let (key, value) = line.split_once(" = ").expect("key = value");
        fields.push((key.to_owned(), value.trim_matches('"').to_owned()));
    }
    fields.extend([
        ("interval".to_owned(), "1d".to_owned()),
        ("start_at".to_owned(), "03:30".to_owned()),
        ("sync_departments".to_owned(), "true".to_owned()),
        ("sync_groups".to_owned(), "true".to_owned()),
        (
            "remove_group_assignments_not_in_entra".to_owned(),
            "true".to_owned(),
        ),
    ]);
    fields
}

fn with<'a>(
    fields: &'a [(String, String)],
    csrf: &'a str,
    changes: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut form: Vec<(&str, &str)> = vec![("csrf", csrf)];
    for (key, value) in fields {
        match changes.iter().find(|(changed, _)| changed == key) {
            Some(change) => form.push(*change),
            None => form.push((key, value)),
        }
    }
    for change in changes {
        if !fields.iter().any(|(key, _)| key == change.0) {
            form.push(*change);
        }
    }
    form
}

#[tokio::test]
async fn connections_are_set_up_edited_and_deleted_through_the_forms() {
    let tenant = Tenant::start(20, 3).await;
    let secret = tenant
        .emulator
        .config_lines()
        .lines()
        .find_map(|line| line.strip_prefix("client_secret = "))
        .expect("a secret")
        .trim_matches('"')
        .to_owned();
    let mut ui = Ui::new(CONTOSO).await;
    let token = api::create_token(&ui.store, "ui").await.expect("a token");
    ui.sign_in(&token).await;

    // The config file's connection is read-only here: no Edit, and its edit page refuses.
    let page = ui.get("/ui/connections/contoso").await;
    assert!(page.body.contains("data-test=\"read-only\""), "{}", page.body);
    assert!(!page.body.contains("/edit\""), "{}", page.body);
    assert!(!page.body.contains("change?to="), "{}", page.body);
    assert_eq!(
        ui.get("/ui/connections/contoso/edit").await.status,
        StatusCode::CONFLICT
    );

    let page = ui.get("/ui/new-connection").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // The default schedule's next three runs: hourly, on the hour.
    assert_eq!(page.body.matches(":00:00 UTC").count(), 3, "{}", page.body);
    let good = csrf(&page.body);
    let fields = set_up_fields(&tenant, "fabrikam");

    // Without the CSRF token, or with a forged one, nothing is made.
    for token in ["", "forged"] {
        let mut form = with(&fields, token, &[]);
        if token.is_empty() {
            form.remove(0);
        }
        let answer = ui.post("/ui/new-connection", &form).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        assert!(!answer.body.contains(&secret), "{}", answer.body);
    }
    assert!(ui.runner.connection("fabrikam").is_none());

    // Validation errors are shown above the form with the Runner's message, and what was typed
    // is kept, except the secret.
    for (changes, message) in [
        (vec![("client_secret", "")], "client_secret is required"),
        (vec![("name", "with space")], "use 1 to 64 letters"),
        (vec![("organization", "contoso")], "belongs to connection"),
        (vec![("start_at", "25:99")], "start_at"),
        (
            vec![("schedule_kind", "cron"), ("cron", "not a cron")],
            "schedule",
        ),
        (vec![("max_deprovisions", "many")], "is not a whole number"),
        (
            vec![("roles_from", "jobTitle"), ("unit_from", "jobTitle")],
            "roles_from",
        ),
    ] {
        let answer = ui
            .post("/ui/new-connection", &with(&fields, &good, &changes))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{changes:?}: {}",
            answer.body
        );
        assert!(
            answer.body.contains("data-test=\"form-errors\""),
            "{}",
            answer.body
        );
        assert!(
            answer.body.contains(message),
            "{message} missing for {changes:?}: {}",
            answer.body
        );
        assert!(
            !answer.body.contains(&secret),
            "the secret is echoed: {}",
            answer.body
        );
        assert!(
            answer.body.contains("value=\"03:30\"")
                || changes[0].0 == "start_at"
                || changes[0].0 == "schedule_kind",
            "{}",
            answer.body
        );
    }
    assert!(ui.runner.connection("fabrikam").is_none());

    let answer = ui.post("/ui/new-connection", &with(&fields, &good, &[])).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.location.as_deref(), Some("/ui/connections/fabrikam"));
    let page = ui.get("/ui/connections/fabrikam").await;
    assert!(
        page.body.contains("/ui/connections/fabrikam/edit"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("data-test=\"read-only\""), "{}", page.body);
    assert!(page.body.contains("stored encrypted; not shown"), "{}", page.body);
    let progress = ui.sync_now_of("fabrikam").await;
    assert!(progress.contains("<dt>created</dt> <dd>20</dd>"), "{progress}");

    // Edit: the secret field is empty, the picker lists the tenant's groups; leaving the secret
    // empty keeps the stored one.
    let page = ui.get("/ui/connections/fabrikam/edit").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains("name=\"client_secret\" value=\"\""),
        "{}",
        page.body
    );
    let group = tenant.groups().await[0]["displayName"]
        .as_str()
        .expect("a name")
        .to_owned();
    assert!(
        page.body.contains(&format!("value=\"{group}\"")),
        "{group}: {}",
        page.body
    );
    assert!(page.body.contains("data-test=\"next-runs\""), "{}", page.body);
    let good = csrf(&page.body);
    let answer = ui
        .post(
            "/ui/connections/fabrikam/edit",
            &with(
                &fields,
                &good,
                &[
                    ("client_secret", ""),
                    ("name", ""),
                    ("scope_groups", &group),
                    ("on_out_of_scope", "disable"),
                ],
            ),
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let (connection, _) = ui.runner.connection("fabrikam").expect("the connection");
    assert_eq!(connection.policy.scope.groups, vec![group.clone()]);
    assert_eq!(
        serde_json::to_value(connection.policy.on_out_of_scope).expect("JSON"),
        "disable"
    );
    let progress = ui.sync_now_of("fabrikam").await;
    assert!(
        progress.contains("data-test=\"last-status\">succeeded"),
        "{progress}"
    );

    // The edit form keeps what it was given, and a refused edit says why.
    let page = ui.get("/ui/connections/fabrikam/edit").await;
    assert!(
        page.body.contains(&format!("value=\"{group}\" checked")),
        "{}",
        page.body
    );
    let answer = ui
        .post(
            "/ui/connections/fabrikam/edit",
            &with(
                &fields,
                &csrf(&page.body),
                &[("client_secret", ""), ("graph_url", "http://127.0.0.1:1")],
            ),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.body);
    assert!(
        answer.body.contains("client_secret given again"),
        "{}",
        answer.body
    );

    // Sync this user: the one-user sync, its run linked.
    let user = ui
        .store
        .users("fabrikam")
        .await
        .expect("users")
        .into_iter()
        .next()
        .expect("a user");
    let page = ui.get(&format!("/ui/users/{}", user.id)).await;
    assert!(page.body.contains("Sync this user"), "{}", page.body);
    let answer = ui
        .post(
            &format!("/ui/users/{}/sync", user.id),
            &[("csrf", &csrf(&page.body)), ("mode", "info")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.body.contains("Sync (info) succeeded"), "{}", answer.body);
    assert!(answer.body.contains("href=\"/ui/runs/"), "{}", answer.body);

    // Sync this group: the group and its members.
    let group_id: i64 = sqlx::query_scalar("SELECT id FROM groups WHERE entra_id IS NOT NULL LIMIT 1")
        .fetch_one(&ui.store.pool())
        .await
        .expect("a synced group");
    let page = ui.get(&format!("/ui/groups/{group_id}")).await;
    assert!(page.body.contains("Sync this group"), "{}", page.body);
    let answer = ui
        .post(
            &format!("/ui/groups/{group_id}/sync"),
            &[("csrf", &csrf(&page.body)), ("mode", "full")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.body.contains("Sync (full) succeeded"), "{}", answer.body);

    // No page ever shows the secret.
    for page in [
        "/ui/connections",
        "/ui/connections/fabrikam",
        "/ui/connections/fabrikam/edit",
        "/ui/connections/fabrikam/sync",
        "/ui/runs",
    ] {
        let answer = ui.get(page).await;
        assert!(!answer.body.contains(&secret), "{page} shows the secret");
    }

    // Disable and Enable, then Delete, each behind a confirmation.
    for (to, enabled) in [("disable", false), ("enable", true)] {
        let page = ui.get(&format!("/ui/connections/fabrikam/change?to={to}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let answer = ui
            .post(
                "/ui/connections/fabrikam/change",
                &[("csrf", &csrf(&page.body)), ("to", to)],
            )
            .await;
        assert_eq!(
            answer.location.as_deref(),
            Some("/ui/connections/fabrikam"),
            "{}",
            answer.body
        );
        assert_eq!(
            ui.runner.connection("fabrikam").expect("there").0.enabled,
            enabled
        );
    }
    let page = ui.get("/ui/connections/fabrikam/change?to=delete").await;
    assert!(page.body.contains("Delete the connection"), "{}", page.body);
    let answer = ui
        .post("/ui/connections/fabrikam/change", &[("to", "delete")])
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = ui
        .post(
            "/ui/connections/fabrikam/change",
            &[("csrf", &csrf(&page.body)), ("to", "delete")],
        )
        .await;
    assert_eq!(
        answer.location.as_deref(),
        Some("/ui/connections"),
        "{}",
        answer.body
    );
    assert!(ui.runner.connection("fabrikam").is_none());
    let answer = ui
        .post(
            "/ui/connections/contoso/change",
            &[("csrf", &csrf(&page.body)), ("to", "delete")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
}

#[tokio::test]
async fn the_connection_page_previews_the_welcome_email() {
    let mut ui = Ui::new(concat!(
        "[[connections]]\nname = \"contoso\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"ENTRA_SYNC_UI_TEST_UNSET\"\n",
        "[connections.options]\nwelcome_email = true\n",
        "[connections.email]\nhost = \"127.0.0.1\"\ntls = \"none\"\nfrom = \"IT <it@contoso.example>\"\n",
        "subject = \"Welcome to {organization}, {first_name}\"\nbody = \"Hello {display_name}, your login is {email}.\"\n",
    ))
    .await;
    let token = api::create_token(&ui.store, "ui").await.expect("a token");
    ui.sign_in(&token).await;
    let page = ui.get("/ui/connections/contoso").await;
    assert_eq!(page.status, StatusCode::OK);
    for expected in [
        "data-test=\"welcome-preview\"",
        "Welcome to contoso, Ada",
        "Hello Ada Lovelace, your login is ada.lovelace@example.com.",
        "127.0.0.1:25 (none)",
    ] {
        assert!(page.body.contains(expected), "{expected} in {}", page.body);
    }
}

#[tokio::test]
async fn the_welcome_email_is_set_up_and_edited_in_the_connection_form() {
    let tenant = Tenant::start(20, 3).await;
    let mut ui = Ui::new(CONTOSO).await;
    let token = api::create_token(&ui.store, "ui").await.expect("a token");
    ui.sign_in(&token).await;
    let page = ui.get("/ui/new-connection").await;
    for label in [
        "for=\"email_host\"",
        "for=\"email_subject\"",
        "for=\"email_body\"",
    ] {
        assert!(page.body.contains(label), "{label} in {}", page.body);
    }
    let good = csrf(&page.body);
    let fields = set_up_fields(&tenant, "fabrikam");

    // A template without a server is refused, with the reason.
    let answer = ui
        .post(
            "/ui/new-connection",
            &with(&fields, &good, &[("email_subject", "Hi")]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.body);
    assert!(
        answer.body.contains("email: give the mail server"),
        "{}",
        answer.body
    );

    let email = [
        ("welcome_email", "true"),
        ("email_host", "127.0.0.1"),
        ("email_tls", "none"),
        ("email_from", "IT <it@fabrikam.example>"),
        ("email_subject", "Welcome, {first_name}"),
        ("email_body", "Your login is {email}."),
    ];
    let answer = ui.post("/ui/new-connection", &with(&fields, &good, &email)).await;
    assert_eq!(
        answer.location.as_deref(),
        Some("/ui/connections/fabrikam"),
        "{}",
        answer.body
    );
    let page = ui.get("/ui/connections/fabrikam").await;
    assert!(page.body.contains("Welcome, Ada"), "{}", page.body);
    assert!(
        page.body.contains("Your login is ada.lovelace@example.com."),
        "{}",
        page.body
    );

    // Edit shows the template and saves a new subject; the server stays.
    let form = ui.get("/ui/connections/fabrikam/edit").await;
    assert!(form.body.contains("Welcome, {first_name}"), "{}", form.body);
    let mut edited = email.to_vec();
    edited[4] = ("email_subject", "Hello {display_name}");
    let answer = ui
        .post(
            "/ui/connections/fabrikam/edit",
            &with(&fields, &csrf(&form.body), &edited)
                .into_iter()
                .filter(|(key, _)| *key != "name" && *key != "client_secret")
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(
        answer.location.as_deref(),
        Some("/ui/connections/fabrikam"),
        "{}",
        answer.body
    );
    let page = ui.get("/ui/connections/fabrikam").await;
    assert!(page.body.contains("Hello Ada Lovelace"), "{}", page.body);
    assert!(page.body.contains("127.0.0.1:25 (none)"), "{}", page.body);
}
