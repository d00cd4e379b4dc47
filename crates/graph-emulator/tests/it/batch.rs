//! `$batch`: up to 20 requests answered together, each through the usual pipeline, with 424 for
//! the dependents of a failed request.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Emulator, read};

async fn batch(emulator: &Emulator, body: Value) -> (StatusCode, Value) {
    let response = emulator
        .http
        .post(format!("{}/v1.0/$batch", emulator.url()))
        .bearer_auth(&emulator.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let answer = read(response).await;
    (answer.status, answer.json())
}

#[tokio::test]
async fn requests_are_answered_together_and_dependents_of_failures_get_424() {
    let emulator = Emulator::small(20, 3).await;
    emulator
        .post(
            "faults",
            json!({ "kind": "throttle", "count": 1, "retry_after": 2.5, "path_contains": "/groups" }),
        )
        .await;
    let (status, body) = batch(
        &emulator,
        json!({ "requests": [
            { "id": "1", "method": "GET", "url": "/users?$top=2" },
            { "id": "2", "method": "GET", "url": "/groups" },
            { "id": "3", "method": "GET", "url": "/users/no-such-user" },
            { "id": "4", "method": "GET", "url": "/users/$count", "headers": { "ConsistencyLevel": "eventual" }, "dependsOn": ["1"] },
            { "id": "5", "method": "GET", "url": "/subscribedSkus", "dependsOn": ["3"] },
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let responses = body["responses"].as_array().unwrap();
    let item = |id: &str| responses.iter().find(|item| item["id"] == id).unwrap().clone();
    assert_eq!(item("1")["status"], 200);
    assert_eq!(item("1")["body"]["value"].as_array().unwrap().len(), 2);
    assert_eq!(item("2")["status"], 429);
    assert_eq!(item("2")["headers"]["retry-after"], "2.5");
    assert_eq!(item("3")["status"], 404);
    assert_eq!(item("4")["status"], 200);
    assert_eq!(item("4")["body"], "20");
    assert_eq!(item("5")["status"], 424);

    let many: Vec<Value> = (0..21)
        .map(|index| json!({ "id": index.to_string(), "method": "GET", "url": "/users" }))
        .collect();
    let (status, _) = batch(&emulator, json!({ "requests": many })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
