//! The control API: faults (truncated body, replayed page, throttle), churn, the request log and
//! the stats per endpoint.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::Emulator;

#[tokio::test]
async fn faults_truncate_replay_and_throttle() {
    let emulator = Emulator::small(20, 2).await;
    let first = emulator.get("users?$top=5").await;
    emulator
        .post("faults", json!({ "kind": "replay_page", "count": 1 }))
        .await;
    let second = emulator.get("users?$top=5").await;
    assert_eq!(second.text, first.text, "the page is served again");

    emulator
        .post("faults", json!({ "kind": "truncated_body", "count": 1 }))
        .await;
    let truncated = emulator.get("users").await;
    assert_eq!(truncated.status, StatusCode::OK);
    assert!(serde_json::from_str::<serde_json::Value>(&truncated.text).is_err());

    emulator
        .post(
            "faults",
            json!({ "kind": "throttle", "retry_after": 1.5, "path_contains": "/groups" }),
        )
        .await;
    let throttled = emulator.get("groups").await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after").as_deref(), Some("1.5"));
    assert_eq!(emulator.get("users").await.status, StatusCode::OK);
    emulator.control(Method::DELETE, "faults", None).await;
    assert_eq!(emulator.get("groups").await.status, StatusCode::OK);

    emulator
        .post("faults", json!({ "kind": "gateway_timeout", "share": 0.5 }))
        .await;
    let mut timeouts = 0;
    for _ in 0..40 {
        if emulator.get("groups").await.status == StatusCode::GATEWAY_TIMEOUT {
            timeouts += 1;
        }
    }
    assert!((5..=35).contains(&timeouts), "{timeouts} of 40");
}

#[tokio::test]
async fn churn_changes_the_tenant_and_requests_are_counted() {
    let emulator = Emulator::small(50, 5).await;
    let round = emulator.round("users/delta").await;
    let lines = emulator.post("churn", json!({ "events": 12 })).await;
    let lines = lines["events"].as_array().unwrap();
    assert_eq!(lines.len(), 12);
    assert!(emulator.emulator.churn(3).len() == 3);
    let changes = emulator.round(&round.delta_link).await;
    assert!(!changes.items.is_empty());

    let stats = emulator.control(Method::GET, "stats", None).await;
    assert!(stats["by_endpoint"]["token"].as_u64().unwrap() >= 1);
    assert!(stats["by_endpoint"]["users_delta"].as_u64().unwrap() >= 2);
    let requests = emulator.control(Method::GET, "requests", None).await;
    let last = requests.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["method"], "GET");
    assert!(
        last["path"]
            .as_str()
            .unwrap()
            .starts_with("/v1.0/users/delta?$deltatoken=")
    );
    assert_eq!(last["status"], 200);
    assert!(last.get("at_ms").is_some() && last["retry_after"].is_null());
    assert!(emulator.emulator.request_count() >= 3);

    emulator.control(Method::DELETE, "stats", None).await;
    let stats = emulator.control(Method::GET, "stats", None).await;
    assert_eq!(stats["total"], 0);
}

#[tokio::test]
async fn background_churn_and_latency_follow_the_options() {
    let emulator = Emulator::start(graph_emulator::EmulatorOptions {
        users: 20,
        groups: 2,
        churn_per_minute: 1200,
        latency_ms: 40,
        ..graph_emulator::EmulatorOptions::default()
    })
    .await;
    let round = emulator.round("users/delta").await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let started = std::time::Instant::now();
    let changes = emulator.round(&round.delta_link).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(40));
    assert!(
        !changes.items.is_empty(),
        "a churn event every 50 ms changed nothing"
    );
    emulator.emulator.shutdown().await;
}
