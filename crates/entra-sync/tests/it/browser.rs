//! The admin UI in a real browser: `entra-sync serve` against an emulated tenant that answers
//! slowly enough for a sync's progress to be seen, driven by `tests/browser/ui.test.mjs`
//! (playwright-core and Debian's Chromium). `.ci/run` installs both and sets
//! `ENTRA_SYNC_BROWSER_TEST=1`, which makes a missing one a failure; elsewhere the test says
//! what is missing and passes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{Tenant, Workspace};

const CHROMIUM: &str = "/usr/bin/chromium";

/// What the browser test needs that is not there.
fn missing_tools(browser_dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (apt-get install -y chromium)"));
    }
    if !browser_dir.join("node_modules/playwright-core").exists() {
        missing.push(format!("playwright-core (npm ci in {})", browser_dir.display()));
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        missing.push("node".into());
    }
    missing
}

/// The emulated tenant's credentials as the form takes them: `TENANT_ID`, `CLIENT_ID` and
/// `CLIENT_SECRET` from its config lines.
fn credentials(config_lines: &str) -> Vec<(String, String)> {
    config_lines
        .lines()
        .filter_map(|line| line.split_once(" = "))
        .filter(|(key, _)| matches!(*key, "tenant_id" | "client_id" | "client_secret"))
        .map(|(key, value)| (key.to_uppercase(), value.trim_matches('"').to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_ui_end_to_end_in_chromium() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = manifest.join("tests/browser");
    let missing = missing_tools(&browser_dir);
    if !missing.is_empty() {
        assert!(
            std::env::var_os("ENTRA_SYNC_BROWSER_TEST").is_none(),
            "the browser test must run here, but these are missing: {}",
            missing.join(", ")
        );
        eprintln!("skipping the browser test: missing {}", missing.join(", "));
        return;
    }
    // Every Graph request waits, so a run lasts a few seconds: long enough to watch.
    let tenant = Tenant::start_with(graph_emulator::EmulatorOptions {
        users: 40,
        groups: 4,
        seed: 11,
        latency_ms: 1_200,
        ..graph_emulator::EmulatorOptions::default()
    })
    .await;
    // No connection in the config file: the browser sets one up through the form, and the
    // scheduler gives it its first run at once.
    let workspace = Workspace::new("[server]\nlisten = \"127.0.0.1:0\"\n");
    let output = workspace.run(&["token", "create", "--name", "browser"]).await;
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned();

    let mut service = tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
        .args(["serve", "--config"])
        .arg(&workspace.config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let mut stdout = BufReader::new(service.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .expect("serve prints its address")
        .expect("stdout")
        .expect("a line");
    let base = first
        .strip_prefix("entra-sync serving on ")
        .unwrap_or_else(|| panic!("not an address line: {first}"))
        .to_owned();

    let screenshots: PathBuf = manifest.join("../../target/ui-screenshots");
    let run = tokio::process::Command::new("node")
        .arg("ui.test.mjs")
        .current_dir(&browser_dir)
        .env("BASE_URL", &base)
        .env("TOKEN", &token)
        .env("EMULATOR_URL", tenant.emulator.url())
        .envs(credentials(&tenant.emulator.config_lines()))
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", CHROMIUM)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser test ends within 5 minutes")
        .expect("node runs");
    let _ = service.start_kill();
    assert!(
        output.status.success(),
        "the browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for page in [
        "01-sign-in",
        "03-set-up",
        "05-edit",
        "05-edit-refused",
        "06-user-synced",
        "09-run-blocked",
        "11-history",
        "20-disable-confirm",
    ] {
        for width in [1280, 390] {
            let shot = screenshots.join(format!("{page}-{width}.png"));
            assert!(shot.exists(), "no screenshot {}", shot.display());
        }
    }
}
