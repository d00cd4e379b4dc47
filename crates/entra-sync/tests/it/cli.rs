//! The command line's contract for people: one-line errors that name the problem and the fix,
//! the exit codes, and the demo.

use std::process::Output;

use crate::support::{Tenant, Workspace};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The run's one error line on stderr.
fn error_line(output: &Output) -> String {
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().filter(|line| line.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, stderr: {text:?}");
    lines[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_usual_mistakes_exit_non_zero_with_one_line_that_says_what_to_do() {
    let tenant = Tenant::start(50, 5).await;
    let good = tenant.connection("contoso");
    let workspace = Workspace::new(&good);
    let output = workspace.run(&["sync"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let before = workspace.users().await;
    assert_eq!(before.len(), 50);

    let secret_line = good
        .lines()
        .find(|line| line.starts_with("client_secret"))
        .expect("the emulator prints a client_secret line")
        .to_owned();
    let tenant_line = good
        .lines()
        .find(|line| line.starts_with("tenant_id"))
        .expect("tenant_id")
        .to_owned();
    let client_line = good
        .lines()
        .find(|line| line.starts_with("client_id"))
        .expect("client_id")
        .to_owned();
    let graph_line = good
        .lines()
        .find(|line| line.starts_with("graph_url"))
        .expect("graph_url")
        .to_owned();
    let authority_line = good
        .lines()
        .find(|line| line.starts_with("authority_url"))
        .expect("authority_url")
        .to_owned();
    let cases: Vec<(String, i32, Vec<&str>)> = vec![
        (
            good.replace(&secret_line, "client_secret = \"0a1b2c3d-secret-id-not-value\""),
            1,
            vec!["AADSTS7000215", "Value"],
        ),
        (
            good.replace(
                &tenant_line,
                "tenant_id = \"11111111-2222-3333-4444-555555555555\"",
            ),
            1,
            vec!["AADSTS90002", "tenant_id"],
        ),
        (
            good.replace(
                &client_line,
                "client_id = \"99999999-2222-3333-4444-555555555555\"",
            ),
            1,
            vec!["AADSTS700016", "client_id"],
        ),
        (
            good.replace(&graph_line, "graph_url = \"http://127.0.0.1:9\"")
                .replace(&authority_line, "authority_url = \"http://127.0.0.1:9\""),
            1,
            vec!["cannot reach", "127.0.0.1:9"],
        ),
        (
            good.replace(&graph_line, "graph_url = \"http://graph.example.com\""),
            2,
            vec!["graph_url", "https"],
        ),
        (format!("{good}colour = \"blue\"\n"), 2, vec!["colour", "line"]),
    ];
    for (config, expected_code, needles) in cases {
        workspace.rewrite(&config);
        let output = workspace.run(&["sync"]).await;
        let line = error_line(&output);
        assert_eq!(output.status.code(), Some(expected_code), "{line}");
        for needle in needles {
            assert!(line.contains(needle), "{line:?} should mention {needle:?}");
        }
        workspace.rewrite(&good);
        assert_eq!(
            workspace.users().await,
            before,
            "the directory changed after: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_validates_without_connecting() {
    let workspace = Workspace::new(
        "[[connections]]\nname = \"contoso\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"ENTRA_SYNC_TEST_UNSET_SECRET\"\nschedule = \"every 2h\"\nstart_at = \"02:00\"\n",
    );
    let output = workspace.run(&["check-config"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(
        stdout.contains("ENTRA_SYNC_TEST_UNSET_SECRET"),
        "warns about the unset secret: {stdout}"
    );

    workspace.rewrite("[[connections]]\nname = \"contoso\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"S\"\nschedule = \"now and then\"\n");
    let output = workspace.run(&["check-config"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("schedule"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h_demo_syncs_then_shows_churn_and_stops_on_ctrl_c() {
    let data = tempfile::tempdir().expect("temp dir");
    let folder = data.path().join("demo");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
        .args([
            "demo",
            "--users",
            "300",
            "--interval",
            "2",
            "--ui-listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&folder)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("demo starts");
    let pid = child.id().expect("a pid").to_string();
    tokio::time::sleep(std::time::Duration::from_secs(9)).await;
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    let output = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the demo stops on Ctrl-C")
        .expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout {stdout}, stderr {}",
        stderr(&output)
    );
    let runs: Vec<&str> = stdout.lines().filter(|line| line.starts_with("run ")).collect();
    assert!(runs.len() >= 2, "{stdout}");
    assert!(runs[0].contains("full succeeded, 300 created"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|line| line.contains("admin UI: http://127.0.0.1:")
                && line.contains("token, shown once: est_")),
        "no admin UI address: {stdout}"
    );
    assert!(
        stdout.lines().any(|line| line.starts_with("  entra: ")),
        "no churn shown: {stdout}"
    );
    assert!(runs[1].contains("delta succeeded"), "{stdout}");
    assert!(stdout.contains("stopping"), "{stdout}");
    assert!(folder.join("entra-sync.toml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_smoke_run_reports_every_measure_within_the_request_budget() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_entra-sync"))
        .args(["bench", "--users", "1000", "--groups", "20", "--json"])
        .output()
        .await
        .expect("bench runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("bench --json prints JSON");
    for key in [
        "full_sync_ms",
        "delta_noop_ms",
        "delta_1pct_ms",
        "fetch_only_ms",
        "graph_requests_full",
        "min_pages",
        "delta_noop_requests",
        "peak_rss_mb",
    ] {
        assert!(report[key].is_u64(), "{key} missing from {report}");
    }
    assert_eq!(report["users_created"], 1000, "{report}");
    assert!(
        report["users_updated_1pct"].as_u64().expect("count") > 0,
        "{report}"
    );
    assert!(
        report["delta_noop_requests"].as_u64().expect("count") <= 3,
        "{report}"
    );
    let requests = report["graph_requests_full"].as_f64().expect("requests");
    let minimum = report["min_pages"].as_f64().expect("pages");
    assert!(
        requests <= minimum * 1.05 + 1.0,
        "{requests} requests for {minimum} pages"
    );
}
