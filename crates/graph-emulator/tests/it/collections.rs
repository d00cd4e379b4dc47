//! Collections: paging, `$select`, `$top`, `$filter`, `$count`, lookups by UPN, members and
//! transitive members, subscribed SKUs.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::Emulator;

const EVENTUAL: [(&str, &str); 1] = [("ConsistencyLevel", "eventual")];

async fn all_pages(emulator: &Emulator, start: &str) -> (usize, Vec<Value>) {
    let mut pages = 0;
    let mut items = Vec::new();
    let mut link = start.to_owned();
    loop {
        let page = emulator.get_ok(&link).await;
        pages += 1;
        items.extend(page["value"].as_array().unwrap().iter().cloned());
        match page["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with(&emulator.url()) && next.contains("$skiptoken="),
                    "{next}"
                );
                link = next.to_owned();
            }
            None => return (pages, items),
        }
    }
}

#[tokio::test]
async fn users_page_by_a_hundred_with_default_properties() {
    let emulator = Emulator::small(250, 3).await;
    let (pages, users) = all_pages(&emulator, "users").await;
    assert_eq!((pages, users.len()), (3, 250));
    let keys: Vec<&str> = users[0].as_object().unwrap().keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "businessPhones",
            "displayName",
            "givenName",
            "id",
            "jobTitle",
            "mail",
            "mobilePhone",
            "officeLocation",
            "preferredLanguage",
            "surname",
            "userPrincipalName"
        ]
    );
    let (pages, selected) = all_pages(&emulator, "users?$select=displayName,department&$top=999").await;
    assert_eq!((pages, selected.len()), (1, 250));
    assert!(selected.iter().all(|user| user.as_object().unwrap().len() == 3));
}

#[tokio::test]
async fn query_limits_answer_with_graph_errors() {
    let emulator = Emulator::small(20, 2).await;
    for (path, status, code) in [
        ("users?$top=1000", StatusCode::BAD_REQUEST, "Request_BadRequest"),
        ("users?$top=0", StatusCode::BAD_REQUEST, "Request_BadRequest"),
        (
            "users?$select=signInActivity&$top=600",
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
        ),
        ("users?$skip=5", StatusCode::BAD_REQUEST, "Request_BadRequest"),
        ("users?$count=true", StatusCode::BAD_REQUEST, "Request_BadRequest"),
        (
            "users?$filter=endsWith(mail,'@fabrikam.com')",
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
        ),
        (
            "users?$select=skills",
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
        ),
        (
            "users?$select=nonsense",
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
        ),
        (
            "users/does-not-exist",
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
        ),
    ] {
        let answer = emulator.get(path).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.text);
        assert_eq!(answer.json()["error"]["code"], code, "{path}");
    }
    assert_eq!(emulator.get("users?$top=999").await.status, StatusCode::OK);
    assert_eq!(
        emulator
            .get("users?$select=displayName,signInActivity&$top=500")
            .await
            .status,
        StatusCode::OK
    );
    let count_error = emulator.get("users?$count=true").await.json();
    assert_eq!(
        count_error["error"]["message"],
        "$count is not currently supported."
    );
}

#[tokio::test]
async fn filters_count_and_lookups() {
    let emulator = Emulator::small(300, 3).await;
    let all = emulator.control(Method::GET, "users", None).await;
    let all = all.as_array().unwrap();
    let guests: Vec<&Value> = all.iter().filter(|user| user["userType"] == "Guest").collect();
    assert!(!guests.is_empty());

    let answer = emulator
        .get_with(
            "users?$filter=endsWith(userPrincipalName,'%23EXT%23@northwind.onmicrosoft.com')&$count=true",
            &EVENTUAL,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let body = answer.json();
    assert_eq!(body["@odata.count"], guests.len());

    let disabled = all.iter().filter(|user| user["accountEnabled"] == false).count();
    let (_, found) = all_pages(&emulator, "users?$filter=accountEnabled eq false&$select=id").await;
    assert_eq!(found.len(), disabled);

    let first = all[0]["id"].as_str().unwrap();
    let second = all[1]["id"].as_str().unwrap();
    let listed = emulator
        .get_ok(&format!("users?$filter=id in ('{first}','{second}')"))
        .await;
    assert_eq!(listed["value"].as_array().unwrap().len(), 2);

    let name = all[2]["displayName"].as_str().unwrap();
    let prefix: String = name.chars().take(3).collect();
    let (_, matching) = all_pages(
        &emulator,
        &format!("users?$filter=startsWith(displayName,'{prefix}')"),
    )
    .await;
    assert!(matching.iter().any(|user| user["displayName"] == name));

    let count = emulator.get_with("users/$count", &EVENTUAL).await;
    assert_eq!(count.status, StatusCode::OK);
    let active = all.iter().filter(|user| user["state"] == "active").count();
    assert_eq!(count.text, active.to_string());

    let guest_upn = guests[0]["userPrincipalName"]
        .as_str()
        .unwrap()
        .replace('#', "%23");
    let by_upn = emulator.get_ok(&format!("users/{guest_upn}")).await;
    assert_eq!(by_upn["id"], guests[0]["id"]);
    assert!(
        by_upn["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#users/$entity")
    );

    let gone = guests[1]["id"].as_str().unwrap();
    emulator
        .post(&format!("users/{gone}/soft-delete"), json!({}))
        .await;
    let deleted = emulator
        .get_ok("directory/deletedItems/microsoft.graph.user?$select=id,deletedDateTime")
        .await;
    assert_eq!(deleted["value"].as_array().unwrap().len(), 1);
    assert_eq!(deleted["value"][0]["id"], gone);
    assert!(deleted["value"][0]["deletedDateTime"].is_string());
    assert_eq!(
        emulator.get("directory/deletedItems").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        emulator.get(&format!("users/{gone}")).await.status,
        StatusCode::NOT_FOUND
    );
    let licensed = emulator
        .get_ok("users?$filter=assignedLicenses/any(x:x/skuId eq 6fd2c87f-b296-42f0-b197-1e91e994b900)&$select=id,assignedLicenses")
        .await;
    assert!(!licensed["value"].as_array().unwrap().is_empty());
    let skus = emulator.get_ok("subscribedSkus").await;
    assert!(
        skus["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|sku| sku["skuPartNumber"] == "ENTERPRISEPACK")
    );
}

#[tokio::test]
async fn members_and_transitive_members_survive_cycles() {
    let emulator = Emulator::small(30, 2).await;
    let users = emulator.control(Method::GET, "users", None).await;
    let user = |index: usize| users[index]["id"].as_str().unwrap().to_owned();
    let outer = emulator
        .post(
            "groups",
            json!({ "displayName": "Outer", "memberIds": [user(0), user(1)] }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let inner = emulator
        .post(
            "groups",
            json!({ "displayName": "Inner", "memberIds": [user(2), outer] }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    emulator
        .post(&format!("groups/{outer}/members"), json!({ "id": inner }))
        .await;

    let direct = emulator.get_ok(&format!("groups/{outer}/members")).await;
    assert!(
        direct["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#directoryObjects")
    );
    let types: Vec<&str> = direct["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| member["@odata.type"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 3);
    assert_eq!(
        types
            .iter()
            .filter(|kind| **kind == "#microsoft.graph.group")
            .count(),
        1
    );

    let transitive = emulator
        .get_ok(&format!("groups/{outer}/transitiveMembers?$select=id"))
        .await;
    let mut ids: Vec<&str> = transitive["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| member["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![user(0), user(1), user(2), inner.clone(), outer.clone()];
    expected.sort();
    assert_eq!(ids, expected);

    let only_users = emulator
        .get_with(
            &format!("groups/{outer}/members/microsoft.graph.user?$count=true&$select=displayName,id"),
            &EVENTUAL,
        )
        .await
        .json();
    assert_eq!(only_users["@odata.count"], 2);
    assert!(
        only_users["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#users(displayName,id)")
    );

    let (pages, paged) = all_pages(
        &emulator,
        &format!("groups/{outer}/transitiveMembers?$top=2&$select=id"),
    )
    .await;
    assert_eq!((pages, paged.len()), (3, 5));
    let count = emulator
        .get_with(&format!("groups/{outer}/members/$count"), &EVENTUAL)
        .await;
    assert_eq!(count.text, "3");
    let groups_count = emulator.get_with("groups/$count", &EVENTUAL).await;
    assert_eq!(groups_count.text, "4");
    let (pages, groups) = all_pages(&emulator, "groups?$top=1&$select=id,displayName").await;
    assert_eq!((pages, groups.len()), (4, 4));
    let plain_cast = emulator
        .get(&format!("groups/{outer}/members/microsoft.graph.user"))
        .await;
    assert_eq!(
        plain_cast.status,
        StatusCode::BAD_REQUEST,
        "a cast is an advanced query"
    );
    assert_eq!(plain_cast.json()["error"]["code"], "Request_UnsupportedQuery");
    let group = emulator.get_ok(&format!("groups/{outer}")).await;
    assert_eq!(group["displayName"], "Outer");
    let groups = emulator.get_ok("groups?$filter=displayName eq 'Inner'").await;
    assert_eq!(groups["value"].as_array().unwrap().len(), 1);
}
