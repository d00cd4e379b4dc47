//! Delta rounds: a full round, then control-API changes yield exactly those entries; no-change
//! rounds, expiry, reset, malformed tokens, `latest`, `return=minimal`, filters and large groups.

use graph_emulator::{EmulatorOptions, MEMBERS_PER_DELTA_PAGE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Emulator, by_id, ids};

const USER_SELECT: &str = "users/delta?$select=displayName,jobTitle,accountEnabled";
const GROUP_SELECT: &str = "groups/delta?$select=displayName,description,members";

/// Active, enabled users (so that disabling one is a change).
async fn user_ids(emulator: &Emulator) -> Vec<String> {
    let users = emulator.control(Method::GET, "users", None).await;
    users
        .as_array()
        .unwrap()
        .iter()
        .filter(|user| user["state"] == "active" && user["accountEnabled"] == true)
        .map(|user| user["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn groups(emulator: &Emulator) -> Vec<Value> {
    emulator
        .control(Method::GET, "groups", None)
        .await
        .as_array()
        .unwrap()
        .clone()
}

/// Groups whose member list holds any of `users`.
fn groups_holding(groups: &[Value], users: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = groups
        .iter()
        .filter(|group| {
            group["memberIds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|member| users.contains(&member.as_str().unwrap()))
        })
        .map(|group| group["id"].as_str().unwrap().to_owned())
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn changes_through_the_control_api_yield_exactly_those_entries() {
    let emulator = Emulator::small(40, 4).await;
    let users = user_ids(&emulator).await;
    let (updated, disabled, soft_deleted, hard_deleted, restored, joiner, leaver) = (
        &users[0], &users[1], &users[2], &users[3], &users[4], &users[5], &users[6],
    );
    // Memberships as stored: the control API hides soft-deleted members.
    let groups_before = groups(&emulator).await;
    emulator
        .post(&format!("users/{restored}/soft-delete"), json!({}))
        .await;
    let target = groups(&emulator).await.into_iter().find(|group| {
        let members = group["memberIds"].as_array().unwrap();
        members.iter().any(|member| member == leaver.as_str())
            && !members.iter().any(|member| member == joiner.as_str())
    });
    let target = match target {
        Some(group) => group["id"].as_str().unwrap().to_owned(),
        None => {
            let created = emulator
                .post(
                    "groups",
                    json!({ "displayName": "Delta Test", "memberIds": [leaver] }),
                )
                .await;
            created["id"].as_str().unwrap().to_owned()
        }
    };

    let users_round = emulator.round(USER_SELECT).await;
    let groups_round = emulator.round(GROUP_SELECT).await;
    let active = emulator
        .control(Method::GET, "users", None)
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|user| user["state"] == "active")
        .count();
    assert_eq!(
        users_round.items.len(),
        active,
        "the soft-deleted user is not in the initial round"
    );
    assert!(by_id(&users_round.items, restored).is_none());

    let created = emulator
        .post(
            "users",
            json!({
                "displayName": "Zoë Ñúñez",
                "userPrincipalName": "zoe.nunez@northwind.onmicrosoft.com",
                "jobTitle": "Recruiter",
            }),
        )
        .await;
    let created_id = created["id"].as_str().unwrap().to_owned();
    emulator
        .control(
            Method::PATCH,
            &format!("users/{updated}"),
            Some(json!({ "jobTitle": "Chief Emulator" })),
        )
        .await;
    emulator
        .post(&format!("users/{disabled}/disable"), json!({}))
        .await;
    emulator
        .post(&format!("users/{soft_deleted}/soft-delete"), json!({}))
        .await;
    emulator
        .control(Method::DELETE, &format!("users/{hard_deleted}"), None)
        .await;
    emulator
        .post(&format!("users/{restored}/restore"), json!({}))
        .await;
    emulator
        .post(&format!("groups/{target}/members"), json!({ "id": joiner }))
        .await;
    emulator
        .control(Method::DELETE, &format!("groups/{target}/members/{leaver}"), None)
        .await;

    let next = emulator.round(&users_round.delta_link).await;
    let mut expected = vec![
        created_id.clone(),
        updated.clone(),
        disabled.clone(),
        soft_deleted.clone(),
        hard_deleted.clone(),
        restored.clone(),
    ];
    expected.sort();
    assert_eq!(ids(&next.items), expected, "{:#?}", next.items);
    let item = |id: &str| by_id(&next.items, id).unwrap().clone();
    assert_eq!(item(&created_id)["displayName"], "Zoë Ñúñez");
    assert!(item(&created_id).get("@removed").is_none());
    assert_eq!(item(updated)["jobTitle"], "Chief Emulator");
    assert_eq!(item(disabled)["accountEnabled"], false);
    assert_eq!(
        item(soft_deleted),
        json!({ "id": soft_deleted, "@removed": { "reason": "changed" } })
    );
    assert_eq!(
        item(hard_deleted),
        json!({ "id": hard_deleted, "@removed": { "reason": "deleted" } })
    );
    assert!(
        item(restored).get("@removed").is_none(),
        "a restore is a plain entry"
    );
    assert!(item(restored).get("displayName").is_some());
    let listed = emulator.control(Method::GET, "users", None).await;
    let state = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|user| user["id"] == id)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state(soft_deleted), "soft_deleted");
    assert_eq!(state(hard_deleted), "deleted");
    assert_eq!(state(restored), "active");

    // Groups: the membership change, and the groups of the deleted and restored users.
    let next_groups = emulator.round(&groups_round.delta_link).await;
    let mut expected_groups = groups_holding(&groups_before, &[soft_deleted, hard_deleted, restored]);
    expected_groups.push(target.clone());
    expected_groups.sort();
    expected_groups.dedup();
    assert_eq!(
        ids(&next_groups.items),
        expected_groups,
        "{:#?}",
        next_groups.items
    );
    let target_entry = by_id(&next_groups.items, &target).unwrap();
    let members = target_entry["members@delta"].as_array().unwrap();
    let entry = |id: &str| members.iter().find(|member| member["id"] == id).cloned();
    assert_eq!(
        entry(joiner),
        Some(json!({ "@odata.type": "#microsoft.graph.user", "id": joiner }))
    );
    assert_eq!(
        entry(leaver),
        Some(
            json!({ "@odata.type": "#microsoft.graph.user", "id": leaver, "@removed": { "reason": "deleted" } })
        )
    );
    for group in groups_holding(&groups_before, &[hard_deleted]) {
        let entry = by_id(&next_groups.items, &group).unwrap();
        let removal = entry["members@delta"]
            .as_array()
            .unwrap()
            .iter()
            .find(|member| member["id"] == hard_deleted.as_str())
            .unwrap();
        assert_eq!(removal["@removed"]["reason"], "deleted");
    }

    let quiet = emulator.round(&next.delta_link).await;
    assert_eq!(quiet.pages.len(), 1);
    assert_eq!(quiet.pages[0]["value"], json!([]));
    assert!(quiet.delta_link.contains("$deltatoken="));
}

#[tokio::test]
async fn unselected_properties_do_not_show_and_minimal_returns_only_changes() {
    let emulator = Emulator::small(10, 2).await;
    let users = user_ids(&emulator).await;
    let narrow = emulator.round("users/delta?$select=displayName").await;
    let wide = emulator
        .round("users/delta?$select=displayName,jobTitle,mobilePhone")
        .await;
    emulator
        .control(
            Method::PATCH,
            &format!("users/{}", users[0]),
            Some(json!({ "jobTitle": "Tester", "mobilePhone": null })),
        )
        .await;
    assert_eq!(
        emulator.round(&narrow.delta_link).await.items,
        Vec::<Value>::new()
    );

    let full = emulator.round(&wide.delta_link).await;
    assert_eq!(full.items.len(), 1);
    assert_eq!(full.items[0]["jobTitle"], "Tester");
    assert!(
        full.items[0].get("displayName").is_some(),
        "the default returns every selected property"
    );
    assert_eq!(
        full.items[0]["mobilePhone"],
        Value::Null,
        "a cleared property is null"
    );

    let minimal = emulator
        .round_with(&wide.delta_link, &[("Prefer", "return=minimal")])
        .await;
    assert_eq!(minimal.items.len(), 1);
    let keys: Vec<&String> = minimal.items[0].as_object().unwrap().keys().collect();
    assert!(
        keys.iter()
            .all(|key| ["id", "jobTitle", "mobilePhone"].contains(&key.as_str())),
        "{keys:?}"
    );
    assert!(minimal.items[0].get("displayName").is_none());
}

#[tokio::test]
async fn tokens_expire_reset_and_reject_garbage() {
    let emulator = Emulator::small(10, 2).await;
    let round = emulator.round("users/delta").await;

    let garbage = emulator.get("users/delta?$deltatoken=not-a-real-token").await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert_eq!(garbage.json()["error"]["message"], "Badly formed token.");
    let mut mutated = round.delta_link.clone();
    let last = mutated.pop().unwrap();
    mutated.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(emulator.get(&mutated).await.status, StatusCode::BAD_REQUEST);

    emulator
        .post(
            "faults",
            json!({ "kind": "delta_reset", "count": 1, "path_contains": "/users/delta" }),
        )
        .await;
    let reset = emulator.get(&round.delta_link).await;
    assert_eq!(reset.status, StatusCode::GONE);
    let location = reset.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{}/v1.0/users/delta", emulator.url())),
        "{location}"
    );
    let again = emulator.round(&location).await;
    assert_eq!(again.items.len(), 10, "the Location starts a full round");

    // Fresh tokens need a fresh access token after the clock moves past its lifetime.
    emulator
        .post("clock", json!({ "advance_seconds": 8 * 24 * 3600 }))
        .await;
    let mut emulator = emulator;
    emulator.token = emulator.fetch_token().await;
    let expired = emulator.get(&round.delta_link).await;
    assert_eq!(expired.status, StatusCode::BAD_REQUEST);
    let error = expired.json()["error"].clone();
    assert_eq!(error["code"], "syncStateNotFound");
    assert_eq!(
        error["message"],
        "The sync state generation is not found. The delta token is expired and data must be synchronized again."
    );
}

#[tokio::test]
async fn latest_filters_and_unsupported_options() {
    let emulator = Emulator::small(10, 2).await;
    let users = user_ids(&emulator).await;
    let latest = emulator.get_ok("users/delta?$deltatoken=latest").await;
    assert_eq!(latest["value"], json!([]));
    let link = latest["@odata.deltaLink"].as_str().unwrap().to_owned();
    emulator
        .control(
            Method::PATCH,
            &format!("users/{}", users[3]),
            Some(json!({ "department": "Emulation" })),
        )
        .await;
    let changed = emulator.round(&link).await;
    assert_eq!(ids(&changed.items), vec![users[3].clone()]);

    let filter = format!("users/delta?$filter=id eq '{}' or id eq '{}'", users[1], users[2]);
    let mut expected = vec![users[1].clone(), users[2].clone()];
    expected.sort();
    assert_eq!(ids(&emulator.round(&filter).await.items), expected);

    for option in ["$top=5", "$expand=manager", "$orderby=displayName"] {
        let answer = emulator.get(&format!("users/delta?{option}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{option}");
    }
    let too_many: Vec<String> = (0..51).map(|index| format!("id eq '{index}'")).collect();
    let answer = emulator
        .get(&format!("users/delta?$filter={}", too_many.join(" or ")))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        emulator.get_ok("users/delta()").await["value"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
}

#[tokio::test]
async fn manager_changes_show_as_manager_delta() {
    let emulator = Emulator::small(10, 1).await;
    let users = user_ids(&emulator).await;
    let round = emulator.round("users/delta?$select=displayName,manager").await;
    let with_manager = round
        .items
        .iter()
        .filter(|item| item.get("manager@delta").is_some())
        .count();
    assert!(with_manager > 0, "generated users have managers");
    emulator
        .control(
            Method::PATCH,
            &format!("users/{}", users[0]),
            Some(json!({ "manager": users[1] })),
        )
        .await;
    let next = emulator.round(&round.delta_link).await;
    assert_eq!(next.items.len(), 1);
    assert_eq!(
        next.items[0]["manager@delta"],
        json!([{ "@odata.type": "#microsoft.graph.user", "id": users[1] }])
    );
    emulator
        .control(
            Method::PATCH,
            &format!("users/{}", users[0]),
            Some(json!({ "manager": null })),
        )
        .await;
    let cleared = emulator.round(&next.delta_link).await;
    assert_eq!(cleared.items[0]["manager@delta"], json!([]));
}

#[tokio::test]
async fn soft_deleted_users_turn_deleted_after_thirty_days() {
    let emulator = Emulator::start(EmulatorOptions {
        users: 5,
        groups: 1,
        delta_token_lifetime: std::time::Duration::from_secs(90 * 24 * 3600),
        ..EmulatorOptions::default()
    })
    .await;
    let users = user_ids(&emulator).await;
    let first = emulator.round("users/delta").await;
    emulator
        .post(&format!("users/{}/soft-delete", users[0]), json!({}))
        .await;
    let second = emulator.round(&first.delta_link).await;
    assert_eq!(
        second.items,
        vec![json!({ "id": users[0], "@removed": { "reason": "changed" } })]
    );
    emulator
        .post("clock", json!({ "advance_seconds": 31 * 24 * 3600 }))
        .await;
    let mut emulator = emulator;
    emulator.token = emulator.fetch_token().await;
    let third = emulator.round(&second.delta_link).await;
    assert_eq!(
        third.items,
        vec![json!({ "id": users[0], "@removed": { "reason": "deleted" } })]
    );
}

#[tokio::test]
async fn a_large_group_is_split_over_pages_and_repeated() {
    let emulator = Emulator::small(MEMBERS_PER_DELTA_PAGE + 1500, 1).await;
    let users = user_ids(&emulator).await;
    let big = emulator
        .post(
            "groups",
            json!({ "displayName": "Everyone Large", "memberIds": users }),
        )
        .await;
    let big_id = big["id"].as_str().unwrap().to_owned();
    let round = emulator.round("groups/delta?$select=displayName,members").await;
    let entries: Vec<&Value> = round
        .items
        .iter()
        .filter(|item| item["id"] == big_id.as_str())
        .collect();
    assert!(
        entries.len() >= 2,
        "the group is repeated on {} pages",
        entries.len()
    );
    let mut members: Vec<&str> = entries
        .iter()
        .flat_map(|entry| entry["members@delta"].as_array().unwrap())
        .map(|member| member["id"].as_str().unwrap())
        .collect();
    assert!(
        entries
            .iter()
            .all(|entry| entry["displayName"] == "Everyone Large")
    );
    members.sort();
    members.dedup();
    assert_eq!(members.len(), users.len());
    for page in &round.pages {
        let refs: usize = page["value"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|item| item["members@delta"].as_array())
            .map(Vec::len)
            .sum();
        assert!(refs <= MEMBERS_PER_DELTA_PAGE);
    }
}
