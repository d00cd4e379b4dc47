//! The change feed (`GET /api/v1/changes?since=CURSOR`): after a full sync and a delta run, the
//! feed read from the first run's last cursor holds exactly the second run's applied actions, in
//! order, page by page.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::serve::Api;
use crate::support::{Tenant, count};

/// Reads the feed after `since`, `limit` changes a page, until it says there is no more; returns
/// the changes and the last cursor.
async fn read_feed(api: &Api, since: i64, limit: usize) -> (Vec<Value>, i64) {
    let mut changes = Vec::new();
    let mut cursor = since;
    loop {
        let (status, page) = api
            .get(&format!("/api/v1/changes?since={cursor}&limit={limit}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let batch = page["changes"].as_array().expect("changes").clone();
        assert!(batch.len() <= limit, "{page}");
        for change in &batch {
            let next = change["cursor"].as_i64().expect("a cursor");
            assert!(next > cursor, "cursors increase: {next} after {cursor}");
            cursor = next;
        }
        assert_eq!(page["next"], cursor, "{page}");
        changes.extend(batch);
        if page["more"] == false {
            return (changes, cursor);
        }
    }
}

/// A run's applied actions as (action, Entra id), in order.
async fn applied_actions(api: &Api, run_id: &Value) -> Vec<(Value, Value)> {
    let (_, actions) = api.get(&format!("/api/v1/runs/{run_id}/actions")).await;
    actions
        .as_array()
        .expect("actions")
        .iter()
        .filter(|action| action["outcome"].is_null())
        .map(|action| (action["kind"].clone(), action["entra_id"].clone()))
        .collect()
}

fn as_actions(changes: &[Value]) -> Vec<(Value, Value)> {
    changes
        .iter()
        .map(|change| (change["detail"]["action"].clone(), change["entra_id"].clone()))
        .collect()
}

async fn sync(api: &Api) -> Value {
    let (status, summary) = api
        .call(
            axum::http::Method::POST,
            "/api/v1/connections/contoso/sync",
            Some(&api.token.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{summary}");
    assert_eq!(summary["status"], "succeeded", "{summary}");
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_after_a_cursor_holds_exactly_the_later_changes() {
    let tenant = Tenant::start(30, 4).await;
    let api = Api::new(&tenant.connection("contoso")).await;
    let (_, empty) = api.get("/api/v1/changes").await;
    assert_eq!(empty, json!({ "changes": [], "next": 0, "more": false }));

    let first = sync(&api).await;
    let (changes, cursor) = read_feed(&api, 0, 1_000).await;
    assert_eq!(
        as_actions(&changes),
        applied_actions(&api, &first["run_id"]).await
    );
    let of = |object: &str, change: &str| {
        changes
            .iter()
            .filter(|c| c["object"] == object && c["change"] == change)
            .count() as u64
    };
    assert_eq!(of("user", "created"), count(&first, "created"));
    assert_eq!(of("group", "created"), count(&first, "groups_created"));
    assert_eq!(of("membership", "added"), count(&first, "memberships_added"));
    let created = changes
        .iter()
        .find(|c| c["object"] == "user" && c["change"] == "created")
        .expect("a created user");
    assert!(created["directory_id"].is_i64(), "{created}");
    assert_eq!(created["organization"], "contoso");
    assert!(created["detail"]["attributes"]["email"].is_string(), "{created}");

    // A delta run: an update, a hire, a disable, a membership removed.
    let users: Vec<String> = tenant
        .users()
        .await
        .iter()
        .filter(|user| user["accountEnabled"] == true && user["state"] == "active")
        .map(|user| user["id"].as_str().expect("id").to_owned())
        .collect();
    let id = |index: usize| users[index].clone();
    tenant
        .control(
            reqwest::Method::PATCH,
            &format!("users/{}", id(0)),
            Some(json!({ "jobTitle": "Feed Reader" })),
        )
        .await;
    tenant.post(&format!("users/{}/disable", id(1)), json!({})).await;
    tenant
        .post(
            "users",
            json!({
                "displayName": "Feed Hire", "givenName": "Feed", "surname": "Hire",
                "userPrincipalName": "feed.hire@contoso.example", "mail": "feed.hire@contoso.example",
                "department": "Feeds", "accountEnabled": true, "userType": "Member",
            }),
        )
        .await;
    let is_other_user = |member: &Value| {
        member.as_str().is_some_and(|member| {
            member != id(0) && member != id(1) && users.iter().any(|user| user == member)
        })
    };
    let (group, member) = tenant
        .groups()
        .await
        .into_iter()
        .find_map(|group| {
            let member = group["memberIds"]
                .as_array()
                .expect("members")
                .iter()
                .find(|member| is_other_user(member))?
                .as_str()?
                .to_owned();
            Some((group, member))
        })
        .expect("a group with an active member");
    tenant
        .control(
            reqwest::Method::DELETE,
            &format!("groups/{}/members/{member}", group["id"].as_str().expect("id")),
            None,
        )
        .await;
    let second = sync(&api).await;
    assert_eq!(second["mode"], "delta");
    let (later, last) = read_feed(&api, cursor, 2).await;
    let expected = applied_actions(&api, &second["run_id"]).await;
    assert!(expected.len() >= 4, "{expected:?}");
    assert_eq!(as_actions(&later), expected);
    for (object, change) in [
        ("user", "updated"),
        ("user", "disabled"),
        ("user", "created"),
        ("membership", "removed"),
        ("department", "created"),
    ] {
        assert!(
            later
                .iter()
                .any(|c| c["object"] == object && c["change"] == change),
            "{object} {change} in {later:?}"
        );
    }
    let (_, after) = api.get(&format!("/api/v1/changes?since={last}")).await;
    assert_eq!(after, json!({ "changes": [], "next": last, "more": false }));
    // The history's retention takes the feed along; an older cursor is told where to go on.
    let tomorrow = entra_sync::clock::now() + chrono::TimeDelta::days(1);
    entra_sync::changes::delete_before(&api.store, tomorrow)
        .await
        .unwrap();
    let (status, expired) = api.get(&format!("/api/v1/changes?since={cursor}")).await;
    assert_eq!(status, StatusCode::GONE, "{expired}");
    assert_eq!(expired["code"], "cursor_expired");
    assert!(
        expired["message"]
            .as_str()
            .unwrap()
            .contains(&format!("from cursor {last}")),
        "{expired}"
    );
    let (status, _) = api.get(&format!("/api/v1/changes?since={last}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, bad) = api.get("/api/v1/changes?since=-1").await;
    assert_eq!(
        (status, &bad["code"]),
        (StatusCode::BAD_REQUEST, &json!("bad_request"))
    );
}
