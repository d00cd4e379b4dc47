//! Welcome emails against a real SMTP server written by others: aiosmtpd on 127.0.0.1 (see
//! PEERS.md), whose messages Python's own `email` package decodes. The sink's Python comes from
//! `ENTRA_SYNC_TEST_SMTP_PYTHON`, which `.ci/run` sets to a venv with aiosmtpd; without it these
//! tests say so and pass without running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use entra_sync::store::Store;
use serde_json::{Value, json};

use crate::serve::Service;
use crate::support::{Tenant, Workspace, count};

const PYTHON_VAR: &str = "ENTRA_SYNC_TEST_SMTP_PYTHON";

/// Decodes every message of a Maildir into JSON with Python's `email` package.
const DECODE: &str = r#"
import email, email.policy, json, os, sys
out = []
for sub in ("new", "cur"):
    folder = os.path.join(sys.argv[1], sub)
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        with open(os.path.join(folder, name), "rb") as f:
            m = email.message_from_binary_file(f, policy=email.policy.default)
        out.append({"rcpt": str(m["X-RcptTo"]), "to": str(m["To"]), "from": str(m["From"]),
                    "subject": str(m["Subject"]), "message_id": str(m["Message-ID"]),
                    "body": m.get_body().get_content().replace("\r\n", "\n")})
print(json.dumps(out))
"#;

/// An aiosmtpd sink on a port of its own; each message it accepts lands in a Maildir.
struct Sink {
    python: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

impl Sink {
    /// A sink that does not listen yet, or `None` (with a message) when the tests cannot run one.
    fn new() -> Option<Sink> {
        let Some(python) = std::env::var_os(PYTHON_VAR).filter(|value| !value.is_empty()) else {
            eprintln!(
                "skipping: {PYTHON_VAR} is not set; .ci/run sets it to a venv with aiosmtpd (PEERS.md)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Some(Sink {
            python: python.into(),
            port,
            dir: tempfile::tempdir().expect("a temp dir"),
            child: None,
        })
    }

    async fn started() -> Option<Sink> {
        let mut sink = Sink::new()?;
        sink.start().await;
        Some(sink)
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// Starts `python -m aiosmtpd` and waits until it accepts connections.
    async fn start(&mut self) {
        let child = tokio::process::Command::new(&self.python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.maildir())
            .kill_on_drop(true)
            .spawn()
            .expect("aiosmtpd starts");
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("aiosmtpd does not listen on 127.0.0.1:{}", self.port);
    }

    /// The messages received so far, decoded.
    async fn messages(&self) -> Vec<Value> {
        let output = tokio::process::Command::new(&self.python)
            .args(["-c", DECODE])
            .arg(self.maildir())
            .output()
            .await
            .expect("python runs");
        assert!(
            output.status.success(),
            "decoding the Maildir: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON")
    }

    /// The config of a connection's email settings pointing at this sink.
    fn email_config(&self, extra: &str) -> String {
        format!(
            "[connections.email]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"Contoso IT <it@contoso.example>\"\n\
             subject = \"Welcome to {{organization}}, {{first_name}}\"\n\
             body = \"Hello {{display_name}},\\nyour account {{email}} is ready.\\n\"\n{extra}",
            self.port
        )
    }
}

/// The workspace's data folder, as `Workspace::new` writes it.
fn data_dir(workspace: &Workspace) -> PathBuf {
    workspace
        .config
        .parent()
        .map(|dir| dir.join("data"))
        .expect("a folder")
}

async fn emails(data: &Path) -> Vec<entra_sync::mail::EmailRecord> {
    let store = Store::open(data).await.expect("the store opens");
    entra_sync::mail::emails(&store, None, None, 1_000)
        .await
        .expect("emails")
}

/// Per recipient, how many messages the sink got.
fn per_recipient(messages: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for message in messages {
        *counts
            .entry(message["rcpt"].as_str().expect("rcpt").to_lowercase())
            .or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_users_get_one_rendered_email_and_linked_or_updated_users_none() {
    let Some(sink) = Sink::started().await else { return };
    let tenant = Tenant::start(20, 3).await;
    let workspace = Workspace::new(&format!(
        "{}[connections.options]\nwelcome_email = true\n\n{}",
        tenant.connection("contoso"),
        sink.email_config("")
    ));
    // A user the application already has: the first sync links it and must not welcome it.
    let entra_users = tenant.users().await;
    let existing = entra_users
        .iter()
        .find(|user| user["mail"].is_string() && user["accountEnabled"] == true && user["state"] == "active")
        .expect("an enabled user with a mail");
    let existing_mail = existing["mail"].as_str().expect("mail").to_lowercase();
    {
        let store = Store::open(&data_dir(&workspace)).await.expect("the store opens");
        let state = store
            .connection_state("contoso", "contoso", entra_sync::clock::now())
            .await
            .expect("the connection");
        sqlx::query(
            "INSERT INTO users (organization_id, email_lower, attributes, status, created_at, updated_at) VALUES (?, ?, ?, 'active', '', '')",
        )
        .bind(state.organization_id)
        .bind(&existing_mail)
        .bind(json!({ "email": existing_mail }).to_string())
        .execute(&store.pool())
        .await
        .expect("an unlinked user");
    }

    let (summary, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{summary}");
    assert!(count(&summary, "created") > 0, "{summary}");
    let directory = workspace.users().await;
    let expected: BTreeMap<String, &Value> = directory
        .values()
        .filter(|user| user["status"] == "active" && user["email"].is_string())
        .map(|user| (user["email"].as_str().expect("email").to_lowercase(), user))
        .filter(|(email, _)| *email != existing_mail)
        .collect();
    assert!(!expected.is_empty());
    let messages = sink.messages().await;
    assert_eq!(
        per_recipient(&messages),
        expected.keys().map(|email| (email.clone(), 1)).collect(),
        "one email per created active user, none for the linked one"
    );
    for message in &messages {
        let user = expected[&message["rcpt"].as_str().expect("rcpt").to_lowercase()];
        let first_name = user["given_name"].as_str().expect("given name");
        assert_eq!(message["subject"], format!("Welcome to contoso, {first_name}"));
        assert_eq!(
            message["body"].as_str().expect("body").trim_end(),
            format!(
                "Hello {},\nyour account {} is ready.",
                user["display_name"].as_str().expect("display name"),
                user["email"].as_str().expect("email")
            )
        );
        assert!(
            message["from"]
                .as_str()
                .expect("from")
                .contains("it@contoso.example")
        );
        assert!(
            message["message_id"]
                .as_str()
                .expect("id")
                .starts_with("<welcome.")
        );
    }
    let outbox = emails(&data_dir(&workspace)).await;
    assert_eq!(outbox.len(), expected.len());
    assert!(
        outbox
            .iter()
            .all(|email| email.status == "sent" && email.attempts == 1),
        "{outbox:?}"
    );

    // Updates send nothing; one hire gets one email.
    for user in entra_users.iter().take(3) {
        let id = user["id"].as_str().expect("id");
        tenant
            .control(
                reqwest::Method::PATCH,
                &format!("users/{id}"),
                Some(json!({ "jobTitle": "Welcome Tester" })),
            )
            .await;
    }
    tenant
        .post(
            "users",
            json!({
                "displayName": "New Hire", "givenName": "New", "surname": "Hire",
                "userPrincipalName": "new.hire@contoso.example", "mail": "new.hire@contoso.example",
                "accountEnabled": true, "userType": "Member",
            }),
        )
        .await;
    let (summary, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{summary}");
    assert_eq!(
        (count(&summary, "created"), summary["mode"].clone()),
        (1, json!("delta"))
    );
    assert!(count(&summary, "updated") >= 1, "{summary}");
    let messages = sink.messages().await;
    let mut expected: BTreeMap<String, usize> = expected.keys().map(|email| (email.clone(), 1)).collect();
    expected.insert("new.hire@contoso.example".into(), 1);
    assert_eq!(per_recipient(&messages), expected);
    let hire = messages
        .iter()
        .find(|message| message["rcpt"] == "new.hire@contoso.example")
        .expect("the hire's email");
    assert_eq!(hire["subject"], "Welcome to contoso, New");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_email_when_welcome_email_is_off() {
    let Some(sink) = Sink::started().await else { return };
    let tenant = Tenant::start(10, 2).await;
    let workspace = Workspace::new(&format!(
        "{}[connections.options]\nwelcome_email = false\n\n{}",
        tenant.connection("contoso"),
        sink.email_config("")
    ));
    let (summary, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "created"), 10);
    assert!(sink.messages().await.is_empty());
    assert!(emails(&data_dir(&workspace)).await.is_empty());
}

/// A workspace for `serve`: the connection welcomes its new users through the sink, retries a
/// second after a failed send, and runs hourly (the first run at once); with an API token.
async fn service_workspace(tenant: &Tenant, sink: &Sink) -> (Workspace, String) {
    let workspace = Workspace::new(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n{}schedule = \"every 1h\"\n[connections.options]\nwelcome_email = true\n\n{}",
        tenant.connection("contoso"),
        sink.email_config("retry_initial = \"1s\"\n")
    ));
    let created = workspace.run(&["token", "create", "--name", "mail"]).await;
    assert!(created.status.success());
    let token = String::from_utf8(created.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned();
    (workspace, token)
}

/// Polls the service's email list until `done` holds, or fails after a minute.
async fn wait_for_emails(service: &Service, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..600 {
        let emails = service.get("/api/v1/emails").await;
        let emails = emails.as_array().expect("an array").clone();
        if done(&emails) {
            return emails;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: {}", service.get("/api/v1/emails").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_wait_queued_while_the_server_is_down_and_go_once_after_a_crash_and_restart() {
    let Some(mut sink) = Sink::new() else { return };
    let tenant = Tenant::start(8, 2).await;
    let (workspace, token) = service_workspace(&tenant, &sink).await;

    // The first run is at once; nobody listens on the SMTP port.
    let mut service = Service::start(&workspace, &token, &[]).await;
    let queued = wait_for_emails(&service, "emails queued with an error", |emails| {
        !emails.is_empty()
            && emails.iter().all(|email| {
                email["status"] == "queued"
                    && email["attempts"].as_i64() >= Some(1)
                    && email["last_error"]
                        .as_str()
                        .is_some_and(|error| error.contains("SMTP server 127.0.0.1"))
                    && email["next_attempt_at"].is_string()
            })
    })
    .await;
    assert!(queued.iter().all(|email| email["run_id"].is_i64()), "{queued:?}");
    let queued = queued.len();
    // A crash keeps them: a new process sends what the killed one could not.
    service.kill().await;
    sink.start().await;
    let service = Service::start(&workspace, &token, &[]).await;
    let sent = wait_for_emails(&service, "emails sent once the server is up", |emails| {
        emails.len() == queued && emails.iter().all(|email| email["status"] == "sent")
    })
    .await;
    assert!(
        sent.iter().all(|email| email["attempts"].as_i64() >= Some(2)),
        "{sent:?}"
    );
    let run = service.get(&format!("/api/v1/runs/{}", sent[0]["run_id"])).await;
    assert_eq!(run["welcome_emails"], json!({ "sent": queued }), "{run}");
    let (status, filtered) = service
        .call(reqwest::Method::GET, "/api/v1/emails?status=queued", true, None)
        .await;
    assert_eq!((status, filtered), (200, json!([])));
    let messages = sink.messages().await;
    let recipients = per_recipient(&messages);
    assert_eq!(recipients.len(), queued, "{messages:?}");
    assert!(recipients.values().all(|&n| n == 1), "{recipients:?}");
    // The process sends nothing more: still one each a little later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(per_recipient(&sink.messages().await), recipients);
    let mut service = service;
    service.terminate().await;
}

/// A SIGKILL while a run applies its plan, then a restart: the users and outbox rows of the
/// committed batches are kept together, the next run creates the rest, and every created user gets
/// exactly one email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_in_the_middle_of_a_run_loses_no_email_and_doubles_none() {
    let Some(mut sink) = Sink::new() else { return };
    let tenant = Tenant::start(300, 4).await;
    let (workspace, token) = service_workspace(&tenant, &sink).await;
    // Small apply transactions, so that the kill lands with part of the users created. The sink
    // is down meanwhile: what the outbox holds at the kill is what the killed run committed.
    let small_batches = [(entra_sync::targets::directory::APPLY_BATCH_VAR, "5")];
    let mut service = Service::start_with_env(&workspace, &token, &[], &small_batches).await;
    for _ in 0..3_000 {
        let queued = service.get("/api/v1/emails?limit=1").await;
        if queued.as_array().is_some_and(|emails| !emails.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    service.kill().await;

    let data = data_dir(&workspace);
    let at_kill = emails(&data).await.len();
    let users_at_kill = workspace.users().await.len();
    let store = Store::open(&data).await.expect("the store opens");
    let runs = store.runs(Some("contoso"), 10).await.expect("runs");
    assert_eq!(
        runs.iter().map(|run| run.status.as_str()).collect::<Vec<_>>(),
        ["running"],
        "the killed run never ended"
    );
    drop(store);

    sink.start().await;
    let service = Service::start_with_env(&workspace, &token, &[], &small_batches).await;
    // The first run after the restart is at once: the connection never had a successful one.
    let mut runs = Vec::new();
    for _ in 0..600 {
        runs = service.runs("contoso").await;
        if runs.iter().any(|run| run["status"] == "succeeded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        runs.iter().map(|run| run["status"].clone()).collect::<Vec<_>>(),
        [json!("interrupted"), json!("succeeded")],
        "{runs:?}"
    );
    let directory = workspace.users().await;
    let expected: BTreeMap<String, usize> = directory
        .values()
        .filter(|user| user["status"] == "active" && user["email"].is_string())
        .map(|user| (user["email"].as_str().expect("email").to_lowercase(), 1))
        .collect();
    assert!(
        0 < at_kill && at_kill < expected.len(),
        "the kill came after the first batch and before the last: {at_kill} of {} emails",
        expected.len()
    );
    assert_eq!(
        count(&runs[1]["counts"], "created") as usize,
        directory.len() - users_at_kill,
        "the next run created exactly the users the killed one had not: {}",
        runs[1]
    );
    for _ in 0..600 {
        let outbox = emails(&data).await;
        if outbox.len() == expected.len() && outbox.iter().all(|email| email.status == "sent") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let messages = sink.messages().await;
    assert_eq!(per_recipient(&messages), expected, "one email per created user");
    let mut service = service;
    service.terminate().await;
}
