//! Microsoft data (licence names, last sign-in, MFA registration): read in full runs only, shown
//! with each user, and a tenant that refuses it leaves a warning, not a failed run.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::serve::Api;
use crate::support::{Tenant, Workspace, count};

const SIGNED_IN: &str = "2026-10-01T08:30:00";

/// Gives the tenant's first active user a known sign-in and no MFA registration; its id.
async fn mark_first_user(tenant: &Tenant) -> String {
    let users = tenant.users().await;
    let id = users
        .iter()
        .find(|user| user["state"] == "active")
        .expect("an active user")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    tenant
        .control(
            reqwest::Method::PATCH,
            &format!("users/{id}"),
            Some(json!({
                "signInActivity": { "lastSignInDateTime": format!("{SIGNED_IN}Z") },
                "isMfaRegistered": false
            })),
        )
        .await;
    id
}

fn served(stats: &Value, endpoint: &str) -> u64 {
    stats["by_endpoint"][endpoint].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_runs_read_licence_names_sign_ins_and_mfa_and_delta_runs_read_none() {
    // More users than one sign-in page (500) holds.
    let tenant = Tenant::start(600, 5).await;
    let marked = mark_first_user(&tenant).await;
    let workspace = Workspace::new(&tenant.connection("contoso"));

    let (first, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["mode"], "full");
    assert_eq!(first["warnings"], json!([]), "{first}");

    let users = workspace.users().await;
    let microsoft = &users[&marked]["microsoft"];
    assert!(
        microsoft["last_sign_in"]
            .as_str()
            .expect("a sign-in")
            .starts_with(SIGNED_IN),
        "{microsoft}"
    );
    assert_eq!(microsoft["mfa_registered"], false, "{microsoft}");
    let tenant_users = tenant.users().await;
    let assigned = |id: &str| -> Vec<String> {
        let user = tenant_users
            .iter()
            .find(|user| user["id"] == id)
            .expect("in the tenant");
        let mut skus: Vec<String> = user["assignedLicenses"]
            .as_array()
            .expect("licences")
            .iter()
            .map(|licence| licence["skuId"].as_str().expect("skuId").to_owned())
            .collect();
        skus.sort();
        skus
    };
    let mut named = 0;
    for (id, user) in &users {
        let licenses = user["microsoft"]["licenses"].as_array().expect("licenses");
        let ids: Vec<String> = licenses
            .iter()
            .map(|licence| licence["sku_id"].as_str().expect("sku_id").to_owned())
            .collect();
        assert_eq!(ids, assigned(id), "{user}");
        for licence in licenses {
            assert!(licence["sku_part_number"].is_string(), "{licence}");
            named += 1;
        }
    }
    assert!(named > 0, "no user has a licence");
    assert!(
        users
            .values()
            .any(|user| user["microsoft"]["mfa_registered"] == true),
        "the generated tenant has MFA-registered users"
    );

    // A no-change delta run stays at three requests and reads no Microsoft data; what the full
    // run read stays.
    tenant.control(reqwest::Method::DELETE, "stats", None).await;
    let (delta, code) = workspace.sync(&[]).await;
    assert_eq!(code, 0, "{delta}");
    assert_eq!(delta["mode"], "delta");
    assert!(count(&delta, "graph_requests") <= 3, "{delta}");
    let stats = tenant.get("stats").await;
    assert!(stats["total"].as_u64().expect("total") <= 3, "{stats}");
    assert!(
        workspace.users().await[&marked]["microsoft"]["last_sign_in"]
            .as_str()
            .is_some_and(|at| at.starts_with(SIGNED_IN))
    );

    // `sync --full` reads it again: one subscribedSkus, two sign-in pages, the report's pages.
    tenant
        .control(
            reqwest::Method::PATCH,
            &format!("users/{marked}"),
            Some(json!({ "signInActivity": null, "isMfaRegistered": true })),
        )
        .await;
    tenant.control(reqwest::Method::DELETE, "stats", None).await;
    let (full, code) = workspace.sync(&["--full"]).await;
    assert_eq!(code, 0, "{full}");
    let stats = tenant.get("stats").await;
    assert_eq!(served(&stats, "subscribed_skus"), 1, "{stats}");
    assert!(served(&stats, "user_registration_details") >= 1, "{stats}");
    let microsoft = &workspace.users().await[&marked]["microsoft"];
    assert_eq!(
        microsoft["last_sign_in"],
        Value::Null,
        "never signed in: {microsoft}"
    );
    assert_eq!(microsoft["mfa_registered"], true, "{microsoft}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_refuses_the_data_leaves_a_warning_on_the_connection_not_a_failed_run() {
    let tenant = Tenant::start(30, 3).await;
    let marked = mark_first_user(&tenant).await;
    // What the README asks for at least: no licence or audit log permission.
    tenant
        .control(
            reqwest::Method::PUT,
            "app/roles",
            Some(json!(["User.Read.All", "GroupMember.Read.All"])),
        )
        .await;
    let api = Api::new(&tenant.connection("contoso")).await;
    let (_, test) = api
        .call(
            Method::POST,
            "/api/v1/connections/contoso/test",
            Some(&api.token.clone()),
            None,
        )
        .await;
    assert_eq!(test["ok"], true, "enough to sync: {test}");
    assert_eq!(
        test["permissions"]["optional_missing"],
        json!([
            "LicenseAssignment.Read.All",
            "AuditLog.Read.All",
            "Application.Read.All"
        ]),
        "{test}"
    );
    let (status, summary) = api
        .call(
            Method::POST,
            "/api/v1/connections/contoso/sync",
            Some(&api.token.clone()),
            Some(json!({ "mode": "full" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{summary}");
    assert_eq!(summary["status"], "succeeded", "{summary}");
    assert_eq!(summary["created"], 30, "{summary}");
    let warnings = summary["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 2, "{summary}");
    assert!(
        warnings[0]
            .as_str()
            .expect("text")
            .contains("LicenseAssignment.Read.All")
    );
    assert!(warnings[1].as_str().expect("text").contains("AuditLog.Read.All"));

    let (_, connection) = api.get("/api/v1/connections/contoso").await;
    assert_eq!(
        connection["microsoft_data"]["warnings"],
        json!(warnings),
        "{connection}"
    );
    assert!(
        connection["microsoft_data"]["read_at"].is_string(),
        "{connection}"
    );
    // The history keeps them with the run.
    let (_, run) = api.get(&format!("/api/v1/runs/{}", summary["run_id"])).await;
    assert_eq!(run["warnings"], json!(warnings), "{run}");

    let (_, users) = api.get("/api/v1/users").await;
    let users = users.as_array().expect("users");
    assert_eq!(users.len(), 30);
    for user in users {
        let microsoft = &user["microsoft"];
        assert_eq!(microsoft["last_sign_in"], Value::Null, "{user}");
        assert_eq!(microsoft["mfa_registered"], Value::Null, "{user}");
        for licence in microsoft["licenses"].as_array().expect("licenses") {
            assert!(licence["sku_id"].is_string(), "{licence}");
            assert_eq!(licence["sku_part_number"], Value::Null, "{licence}");
        }
    }

    // Permissions granted, but the tenant has no premium licence: names, and one warning.
    tenant
        .control(
            reqwest::Method::PUT,
            "app/roles",
            Some(json!([
                "User.Read.All",
                "GroupMember.Read.All",
                "Organization.Read.All",
                "AuditLog.Read.All"
            ])),
        )
        .await;
    tenant
        .control(
            reqwest::Method::PUT,
            "tenant/premium",
            Some(json!({ "premium": false })),
        )
        .await;
    let (status, summary) = api
        .call(
            Method::POST,
            "/api/v1/connections/contoso/sync",
            Some(&api.token.clone()),
            Some(json!({ "mode": "full" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{summary}");
    assert_eq!(summary["status"], "succeeded", "{summary}");
    let warnings = summary["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{summary}");
    assert!(
        warnings[0]
            .as_str()
            .expect("text")
            .contains("Authentication_RequestFromNonPremiumTenantOrB2CTenant"),
        "{summary}"
    );
    let (_, users) = api.get("/api/v1/users").await;
    let user = users
        .as_array()
        .expect("users")
        .iter()
        .find(|user| user["entra_id"] == marked.as_str())
        .expect("the marked user")
        .clone();
    assert_eq!(user["microsoft"]["last_sign_in"], Value::Null, "{user}");
    assert!(
        user["microsoft"]["licenses"]
            .as_array()
            .expect("licenses")
            .iter()
            .all(|licence| licence["sku_part_number"].is_string()),
        "{user}"
    );
}
