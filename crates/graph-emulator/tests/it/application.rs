//! The app registration (`/applications(appId='…')`): its client secret's hint and expiry, the
//! permission it needs, an unknown app id, and the expiry set through the control API.

use graph_emulator::EmulatorOptions;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::Emulator;

fn registration_path(app_id: &str) -> String {
    format!("applications(appId='{app_id}')?$select=passwordCredentials,keyCredentials")
}

#[tokio::test]
async fn the_registration_needs_application_read_all_and_shows_the_secret_hint_and_expiry() {
    let mut emulator = Emulator::small(1, 1).await;
    emulator
        .control(
            Method::PUT,
            "app/roles",
            Some(json!(["User.Read.All", "GroupMember.Read.All"])),
        )
        .await;
    emulator.token = emulator.fetch_token().await;
    let app_id = EmulatorOptions::default().client_id;
    let refused = emulator.get(&registration_path(&app_id)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert_eq!(refused.json()["error"]["code"], "Authorization_RequestDenied");

    emulator
        .control(
            Method::PUT,
            "app/roles",
            Some(json!([
                "User.Read.All",
                "GroupMember.Read.All",
                "Application.Read.All"
            ])),
        )
        .await;
    emulator
        .control(
            Method::PUT,
            "app/secret-expiry",
            Some(json!({ "endDateTime": "2031-01-10T00:00:00Z" })),
        )
        .await;
    emulator.token = emulator.fetch_token().await;
    let registration = emulator.get_ok(&registration_path(&app_id)).await;
    assert_eq!(registration["keyCredentials"], json!([]));
    let secrets = registration["passwordCredentials"].as_array().unwrap();
    assert_eq!(secrets.len(), 1, "{registration}");
    assert_eq!(secrets[0]["hint"], "emu", "the secret's first three characters");
    assert_eq!(secrets[0]["endDateTime"], "2031-01-10T00:00:00Z");
    assert!(secrets[0]["startDateTime"].is_string(), "{registration}");
    assert!(secrets[0]["keyId"].is_string(), "{registration}");
    assert!(secrets[0]["secretText"].is_null(), "never the secret itself");
    assert_eq!(
        registration.as_object().unwrap().len(),
        3,
        "only what $select asked: {registration}"
    );

    let whole = emulator.get_ok(&format!("applications(appId='{app_id}')")).await;
    assert_eq!(whole["appId"], app_id.as_str());

    let unknown = emulator
        .get(&registration_path("11111111-2222-3333-4444-555555555555"))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    assert_eq!(unknown.json()["error"]["code"], "Request_ResourceNotFound");
    let unknown_property = emulator
        .get(&format!("applications(appId='{app_id}')?$select=secretText"))
        .await;
    assert_eq!(unknown_property.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_secret_past_its_end_date_gets_no_token() {
    let emulator = Emulator::small(1, 1).await;
    emulator
        .control(
            Method::PUT,
            "app/secret-expiry",
            Some(json!({ "endDateTime": "2020-01-01T00:00:00Z" })),
        )
        .await;
    let defaults = EmulatorOptions::default();
    let refused = emulator
        .post_form(
            &emulator.token_url(),
            &[
                ("client_id", defaults.client_id.as_str()),
                ("client_secret", defaults.client_secret.as_str()),
                ("scope", "https://graph.microsoft.com/.default"),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text);
    assert_eq!(refused.json()["error_codes"], json!([7000222]));
}
