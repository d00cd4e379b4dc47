//! The harness of the integration tests: an emulated tenant on loopback, a workspace (a temp
//! data folder and config file) and the real `entra-sync` binary run as a child process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Output;

use serde_json::{Value, json};

/// The emulated tenant of a test, reached over its control API like any other client would.
pub(crate) struct Tenant {
    pub(crate) emulator: graph_emulator::RunningEmulator,
    http: reqwest::Client,
}

impl Tenant {
    /// Starts an emulator with a generated tenant.
    pub(crate) async fn start(users: usize, groups: usize) -> Tenant {
        Tenant::start_seeded(users, groups, 7).await
    }

    /// Starts an emulator whose tenant and injected faults follow `seed`.
    pub(crate) async fn start_seeded(users: usize, groups: usize, seed: u64) -> Tenant {
        Tenant::start_with(graph_emulator::EmulatorOptions {
            users,
            groups,
            seed,
            ..graph_emulator::EmulatorOptions::default()
        })
        .await
    }

    /// Starts an emulator with these options (another secret, another seed).
    pub(crate) async fn start_with(options: graph_emulator::EmulatorOptions) -> Tenant {
        let emulator = graph_emulator::start(options, "127.0.0.1:0".parse().expect("address"))
            .await
            .expect("the emulator starts");
        Tenant {
            emulator,
            http: reqwest::Client::new(),
        }
    }

    /// A control API call; panics unless it succeeds.
    pub(crate) async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_emulator/{path}", self.emulator.url());
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the control API answers");
        let status = response.status();
        let text = response.text().await.expect("a body");
        assert!(status.is_success(), "{method} {url}: {status}: {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON")
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        self.control(reqwest::Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        self.control(reqwest::Method::POST, path, Some(body)).await
    }

    /// The tenant's users as the control API lists them.
    pub(crate) async fn users(&self) -> Vec<Value> {
        self.get("users").await.as_array().expect("an array").clone()
    }

    /// The tenant's groups with their member ids.
    pub(crate) async fn groups(&self) -> Vec<Value> {
        self.get("groups").await.as_array().expect("an array").clone()
    }

    /// The config lines of a connection to this tenant, with another secret if given.
    pub(crate) fn connection(&self, name: &str) -> String {
        format!(
            "[[connections]]\nname = \"{name}\"\n{}\n",
            self.emulator.config_lines().trim_end()
        )
    }
}

/// A data folder and config file for the binary.
pub(crate) struct Workspace {
    _dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
}

impl Workspace {
    /// A workspace whose config holds `connections` (TOML text).
    pub(crate) fn new(connections: &str) -> Workspace {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = dir.path().join("entra-sync.toml");
        std::fs::write(&config, format!("data_dir = \"data\"\n\n{connections}")).expect("config written");
        Workspace { _dir: dir, config }
    }

    /// Replaces the config text.
    pub(crate) fn rewrite(&self, connections: &str) {
        std::fs::write(&self.config, format!("data_dir = \"data\"\n\n{connections}"))
            .expect("config written");
    }

    /// Runs `entra-sync <args> --config <config>`.
    pub(crate) async fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[]).await
    }

    /// Runs `entra-sync <args> --config <config>` with `env` set.
    pub(crate) async fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .output()
            .await
            .expect("the binary runs")
    }

    /// `sync --json` plus extra arguments; returns the summary and the exit code.
    pub(crate) async fn sync(&self, extra: &[&str]) -> (Value, i32) {
        let mut args = vec!["sync", "--json"];
        args.extend_from_slice(extra);
        let output = self.run(&args).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary = serde_json::from_str(&stdout).unwrap_or_else(|error| {
            panic!(
                "sync --json printed no JSON ({error}): stdout {stdout:?}, stderr {:?}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (summary, output.status.code().unwrap_or(-1))
    }

    /// `users --json`, keyed by Entra id.
    pub(crate) async fn users(&self) -> BTreeMap<String, Value> {
        let output = self.run(&["users", "--json"]).await;
        assert!(
            output.status.success(),
            "users: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let users: Vec<Value> = serde_json::from_slice(&output.stdout).expect("users --json is JSON");
        let listed = users.len();
        let users: BTreeMap<String, Value> = users
            .into_iter()
            .map(|user| (user["entra_id"].as_str().expect("linked").to_owned(), user))
            .collect();
        assert_eq!(
            users.len(),
            listed,
            "two directory users are linked to one Entra user"
        );
        users
    }
}

/// Reads a count out of a run summary.
pub(crate) fn count(summary: &Value, name: &str) -> u64 {
    summary[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no count {name} in {summary}"))
}

/// The directory as comparable data: per Entra id, the fields a sync sets and the group names.
pub(crate) async fn directory_state(workspace: &Workspace) -> BTreeMap<String, Value> {
    workspace
        .users()
        .await
        .into_iter()
        .map(|(id, user)| {
            let mut groups: Vec<Value> = user["groups"].as_array().cloned().unwrap_or_default();
            groups.sort_by_key(|group| group.to_string());
            let state = json!({
                "email": user["email"], "display_name": user["display_name"], "given_name": user["given_name"],
                "surname": user["surname"], "job_title": user["job_title"], "department": user["department"],
                "status": user["status"], "status_reason": user["status_reason"], "groups": groups,
            });
            (id, state)
        })
        .collect()
}

/// Asserts the directory reflects the tenant: every user Entra has is there with its job title,
/// department and status; users deleted in Entra are disabled; group memberships are Entra's.
pub(crate) async fn assert_directory_matches_tenant(workspace: &Workspace, tenant: &Tenant) {
    let directory = workspace.users().await;
    let groups = tenant.groups().await;
    let mut expected_groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for group in &groups {
        for member in group["memberIds"].as_array().expect("memberIds") {
            expected_groups
                .entry(member.as_str().expect("id").to_owned())
                .or_default()
                .insert(group["displayName"].as_str().expect("name").to_owned());
        }
    }
    for user in tenant.users().await {
        let id = user["id"].as_str().expect("id");
        let state = user["state"].as_str().expect("state");
        let Some(synced) = directory.get(id) else {
            assert_ne!(state, "active", "user {id} is in Entra but not in the directory");
            continue;
        };
        if state != "active" {
            assert_eq!(synced["status"], "disabled", "{id} was deleted in Entra");
            assert_eq!(synced["status_reason"], "Deleted in Microsoft", "{id}");
            continue;
        }
        assert_eq!(synced["job_title"], user["jobTitle"], "job title of {id}");
        assert_eq!(synced["department"], user["department"], "department of {id}");
        if user["accountEnabled"] == false {
            assert_eq!(synced["status"], "disabled", "{id} is disabled in Entra");
            assert_eq!(synced["status_reason"], "Disabled in Microsoft", "{id}");
        } else {
            assert_eq!(synced["status"], "active", "{id}");
        }
        let groups: BTreeSet<String> = synced["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .map(|name| name.as_str().expect("name").to_owned())
            .collect();
        assert_eq!(
            groups,
            expected_groups.remove(id).unwrap_or_default(),
            "groups of {id}"
        );
    }
}

/// A self-signed certificate valid for `days` and its key (PEM) from the `openssl` CLI, written
/// to `dir` as `cert.pem` and `key.pem`; `None` (and a message) without it.
pub(crate) fn openssl_certificate(dir: &std::path::Path, days: u32) -> Option<(String, String)> {
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            &days.to_string(),
        ])
        .args([
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=entra-sync-test",
        ])
        .current_dir(dir)
        .output()
        .is_ok_and(|output| output.status.success());
    if !made {
        eprintln!("skipped: the openssl CLI is not available to make a test certificate");
        return None;
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("openssl wrote it");
    Some((read("cert.pem"), read("key.pem")))
}
