//! Licences, sign-in activity and the MFA registration report, and Graph's 403s when the app lacks
//! the permission or the tenant lacks a premium licence.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::Emulator;

const REPORT: &str = "reports/authenticationMethods/userRegistrationDetails";

#[tokio::test]
async fn sign_ins_and_mfa_registration_are_served_and_change_no_delta() {
    let emulator = Emulator::small(250, 2).await;
    let users = emulator.control(Method::GET, "users", None).await;
    let id = users[0]["id"].as_str().unwrap().to_owned();
    let round = emulator.round("users/delta?$select=displayName").await;
    emulator
        .control(
            Method::PATCH,
            &format!("users/{id}"),
            Some(json!({
                "signInActivity": { "lastSignInDateTime": "2026-10-01T08:30:00Z" },
                "isMfaRegistered": false
            })),
        )
        .await;
    let after = emulator.round(&round.delta_link).await;
    assert!(after.items.is_empty(), "{:?}", after.items);

    let page = emulator.get_ok("users?$select=id,signInActivity&$top=500").await;
    let mine = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        mine["signInActivity"]["lastSignInDateTime"],
        "2026-10-01T08:30:00Z"
    );

    let mut registered = Vec::new();
    let mut link = format!("{REPORT}?$top=100");
    loop {
        let page = emulator.get_ok(&link).await;
        registered.extend(page["value"].as_array().unwrap().iter().cloned());
        match page["@odata.nextLink"].as_str() {
            Some(next) => link = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(registered.len(), 250);
    let entry = registered
        .iter()
        .find(|entry| entry["id"] == id.as_str())
        .unwrap();
    assert_eq!(entry["isMfaRegistered"], false);
    assert!(registered.iter().any(|entry| entry["isMfaRegistered"] == true));
}

fn error_code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn missing_permissions_and_a_tenant_without_premium_answer_graphs_403s() {
    let mut emulator = Emulator::small(5, 1).await;
    emulator
        .control(
            Method::PUT,
            "app/roles",
            Some(json!(["User.Read.All", "GroupMember.Read.All"])),
        )
        .await;
    emulator.token = emulator.fetch_token().await;
    for (path, code) in [
        ("subscribedSkus", "Authorization_RequestDenied"),
        (
            "users?$select=id,signInActivity",
            "Authentication_MSGraphPermissionMissing",
        ),
        (REPORT, "Authentication_MSGraphPermissionMissing"),
    ] {
        let answer = emulator.get(path).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(error_code(&answer.json()), code, "{path}");
    }
    assert_eq!(emulator.get("users").await.status, StatusCode::OK);

    emulator
        .control(
            Method::PUT,
            "app/roles",
            Some(json!([
                "User.Read.All",
                "GroupMember.Read.All",
                "Organization.Read.All",
                "AuditLog.Read.All"
            ])),
        )
        .await;
    emulator
        .control(Method::PUT, "tenant/premium", Some(json!({ "premium": false })))
        .await;
    emulator.token = emulator.fetch_token().await;
    assert_eq!(emulator.get("subscribedSkus").await.status, StatusCode::OK);
    let one = emulator.get_ok("users?$top=1").await["value"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = format!("users/{one}?$select=id,signInActivity");
    for path in ["users?$select=id,signInActivity", REPORT, one.as_str()] {
        let answer = emulator.get(path).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            error_code(&answer.json()),
            "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
            "{path}"
        );
    }
}
