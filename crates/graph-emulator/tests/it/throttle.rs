//! Throttling: a sustained burst meets 429 at the documented budget, with Retry-After and the
//! throttle headers, and a client that waits as told is served.

use graph_emulator::EmulatorOptions;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::Emulator;

#[tokio::test]
async fn a_burst_is_throttled_at_the_budget_and_served_after_waiting() {
    // 10 users: a small tenant, 3,500 resource units per 10 seconds.
    let emulator = Emulator::start(EmulatorOptions {
        users: 10,
        groups: 2,
        throttle: true,
        ..EmulatorOptions::default()
    })
    .await;
    let groups = emulator.control(reqwest::Method::GET, "groups", None).await;
    let group = groups[0]["id"].as_str().unwrap().to_owned();
    let path = format!("groups/{group}/transitiveMembers");
    let started = std::time::Instant::now();
    let mut spent = 0u64;
    let throttled = loop {
        let answer = emulator.get(&path).await;
        let cost: u64 = answer.header("x-ms-resource-unit").unwrap().parse().unwrap();
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            break answer;
        }
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(cost, 5, "transitiveMembers costs 5");
        spent += cost;
        assert!(spent <= 20_000, "never throttled");
    };
    let elapsed = started.elapsed().as_secs_f64();
    // The budget plus what refilled (350 RU/s) while the burst ran.
    let ceiling = 3500.0 + 350.0 * elapsed + 5.0;
    assert!(
        (3500..=ceiling as u64).contains(&spent),
        "throttled after {spent} RU in {elapsed:.2}s"
    );
    let retry_after: f64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after > 0.0 && retry_after < 1.0, "{retry_after}");
    assert_eq!(
        throttled.header("x-ms-throttle-information").as_deref(),
        Some("ResourceUnitLimitExceeded")
    );
    let scope = throttled.header("x-ms-throttle-scope").unwrap();
    assert!(scope.starts_with("Tenant_Application/ReadWrite/"), "{scope}");
    assert_eq!(throttled.json()["error"]["code"], "TooManyRequests");

    tokio::time::sleep(std::time::Duration::from_secs_f64(retry_after)).await;
    assert_eq!(emulator.get(&path).await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_response_carries_its_resource_units() {
    let emulator = Emulator::small(10, 2).await;
    for (path, cost) in [
        ("users", "2"),
        ("users?$select=id", "1"),
        ("users/delta", "1"),
        ("subscribedSkus", "3"),
    ] {
        assert_eq!(
            emulator.get(path).await.header("x-ms-resource-unit").as_deref(),
            Some(cost),
            "{path}"
        );
    }
    emulator
        .post(
            "faults",
            json!({ "kind": "service_unavailable", "count": 2, "retry_after": 0.25 }),
        )
        .await;
    for _ in 0..2 {
        let answer = emulator.get("users").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.header("retry-after").as_deref(), Some("0.25"));
    }
    assert_eq!(emulator.get("users").await.status, StatusCode::OK);
}
