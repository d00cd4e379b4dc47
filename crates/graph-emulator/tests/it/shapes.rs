//! Every response type has the shape of Microsoft's sample in `../shared/graph-samples`: the same
//! top-level keys and `@odata` annotations, and the same keys on items for the same `$select`.
//! Skipped, with a message, when the samples folder is absent.

use std::collections::BTreeSet;
use std::path::PathBuf;

use graph_emulator::EmulatorOptions;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Emulator, read};

fn samples_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/graph-samples");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping the sample shape checks: {} is absent", dir.display());
        None
    }
}

fn sample(dir: &std::path::Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// Same keys at the top; `extra` lists keys the emulator may add (documented elsewhere).
fn same_top(ours: &Value, theirs: &Value, extra: &[&str], name: &str) {
    let mut ours = keys(ours);
    for key in extra {
        ours.remove(*key);
    }
    let mut theirs = keys(theirs);
    for key in extra {
        theirs.remove(*key);
    }
    assert_eq!(ours, theirs, "top-level keys differ from {name}");
}

/// Some item of ours has exactly the keys of the sample's first item.
fn some_item_like(ours: &Value, theirs: &Value, name: &str) {
    let wanted = keys(&theirs["value"][0]);
    let found: Vec<BTreeSet<String>> = ours["value"].as_array().unwrap().iter().map(keys).collect();
    assert!(
        found.contains(&wanted),
        "no item with the keys {wanted:?} of {name}; ours: {:?}",
        found.first()
    );
}

/// Same keys in an error body, down to `error`; `innerError` may carry more than the sample.
fn same_error(ours: &Value, theirs: &Value, name: &str) {
    same_top(ours, theirs, &[], name);
    same_top(&ours["error"], &theirs["error"], &[], name);
    let inner_ours = keys(&ours["error"]["innerError"]);
    let inner_theirs = keys(&theirs["error"]["innerError"]);
    assert!(
        inner_theirs.is_subset(&inner_ours),
        "{name}: {inner_ours:?} lacks some of {inner_theirs:?}"
    );
}

#[tokio::test]
async fn collections_match_the_samples() {
    let Some(dir) = samples_dir() else { return };
    let emulator = Emulator::small(60, 4).await;
    let users = emulator.control(Method::GET, "users", None).await;
    let users = users.as_array().unwrap();
    let pick = |predicate: &dyn Fn(&Value) -> bool| {
        users.iter().find(|user| predicate(user)).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let any_two = format!(
        "users?$filter=id in ('{}','{}')",
        users[0]["id"].as_str().unwrap(),
        users[1]["id"].as_str().unwrap()
    );

    let list = emulator.get_ok(&any_two).await;
    let theirs = sample(&dir, "user-list-default-properties.json");
    same_top(&list, &theirs, &[], "user-list-default-properties.json");
    some_item_like(&list, &theirs, "user-list-default-properties.json");

    let single = emulator
        .get_ok(&format!("users/{}", users[0]["id"].as_str().unwrap()))
        .await;
    same_top(
        &single,
        &sample(&dir, "user-get-by-id-app-only.json"),
        &[],
        "user-get-by-id-app-only.json",
    );

    let guest = pick(&|user| user["userType"] == "Guest");
    let counted = emulator
        .get_with(
            &format!("users?$filter=id eq '{guest}'&$count=true&$select=displayName,mail,mailNickname,otherMails,proxyAddresses,userPrincipalName"),
            &[("ConsistencyLevel", "eventual")],
        )
        .await
        .json();
    let theirs = sample(&dir, "user-list-filter-count-top.json");
    same_top(&counted, &theirs, &[], "user-list-filter-count-top.json");
    // The sample leaves out `id`, which Graph always returns; compare the rest.
    let mut item = counted["value"][0].clone();
    item.as_object_mut().unwrap().remove("id");
    assert_eq!(keys(&item), keys(&theirs["value"][0]));

    let licensed = emulator
        .get_ok(&format!(
            "users?$filter=id eq '{}'&$select=id,mail,assignedLicenses",
            pick(&|user| user["assignedLicenses"]
                .as_array()
                .is_some_and(|list| !list.is_empty()))
        ))
        .await;
    let theirs = sample(&dir, "user-list-filter-assignedlicenses.json");
    some_item_like(&licensed, &theirs, "user-list-filter-assignedlicenses.json");
    assert_eq!(
        keys(&licensed["value"][0]["assignedLicenses"][0]),
        keys(&theirs["value"][0]["assignedLicenses"][0])
    );

    let sign_in = emulator
        .get_ok(&format!(
            "{any_two}&$select=displayName,userPrincipalName,signInActivity"
        ))
        .await;
    let theirs = sample(&dir, "user-list-signinactivity.json");
    same_top(&sign_in, &theirs, &[], "user-list-signinactivity.json");
    some_item_like(&sign_in, &theirs, "user-list-signinactivity.json");
    assert_eq!(
        keys(&sign_in["value"][0]["signInActivity"]),
        keys(&theirs["value"][0]["signInActivity"])
    );

    let groups = emulator.get_ok("groups?$top=2").await;
    let theirs = sample(&dir, "group-list-default.json");
    same_top(&groups, &theirs, &["@odata.nextLink"], "group-list-default.json");
    some_item_like(&groups, &theirs, "group-list-default.json");

    let group = emulator.control(Method::GET, "groups", None).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let members = emulator
        .get_ok(&format!("groups/{group}/members?$select=id,mail"))
        .await;
    let theirs = sample(&dir, "group-list-members-direct.json");
    same_top(
        &members,
        &theirs,
        &["@odata.nextLink"],
        "group-list-members-direct.json",
    );
    // GRAPH.md §7.3: every member carries `@odata.type`; the doc sample leaves it out.
    let mut member = members["value"][0].clone();
    member.as_object_mut().unwrap().remove("@odata.type");
    assert_eq!(keys(&member), keys(&theirs["value"][0]));

    let transitive = emulator
        .get_ok(&format!("groups/{group}/transitiveMembers?$select=id,mail"))
        .await;
    let theirs = sample(&dir, "group-list-transitivemembers.json");
    same_top(
        &transitive,
        &theirs,
        &["@odata.context", "@odata.nextLink"],
        "group-list-transitivemembers.json",
    );
    some_item_like(&transitive, &theirs, "group-list-transitivemembers.json");

    let cast = emulator
        .get_with(
            &format!("groups/{group}/members/microsoft.graph.user?$count=true&$select=displayName,id"),
            &[("ConsistencyLevel", "eventual")],
        )
        .await
        .json();
    let theirs = sample(&dir, "group-list-members-cast-user-search-count.json");
    same_top(
        &cast,
        &theirs,
        &["@odata.nextLink"],
        "group-list-members-cast-user-search-count.json",
    );
    let mut item = cast["value"][0].clone();
    item.as_object_mut().unwrap().remove("@odata.type");
    assert_eq!(keys(&item), keys(&theirs["value"][0]));
}

#[tokio::test]
async fn delta_pages_match_the_samples() {
    let Some(dir) = samples_dir() else { return };
    let emulator = Emulator::small(1200, 4).await;
    let round = emulator
        .round("users/delta?$select=displayName,givenName,surname")
        .await;
    assert_eq!(round.pages.len(), 2);
    let theirs = sample(&dir, "user-delta-initial-page.json");
    same_top(&round.pages[0], &theirs, &[], "user-delta-initial-page.json");
    some_item_like(&round.pages[0], &theirs, "user-delta-initial-page.json");
    assert!(
        round.pages[0]["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("#users(displayName,givenName,surname)")
    );
    let theirs = sample(&dir, "user-delta-final-page-deltalink.json");
    same_top(
        &round.pages[1],
        &theirs,
        &[],
        "user-delta-final-page-deltalink.json",
    );
    some_item_like(&round.pages[1], &theirs, "user-delta-final-page-deltalink.json");

    let quiet = emulator.get_ok(&round.delta_link).await;
    same_top(
        &quiet,
        &sample(&dir, "user-delta-deltalink-no-changes.json"),
        &[],
        "user-delta-deltalink-no-changes.json",
    );

    let users = emulator.control(Method::GET, "users", None).await;
    let first = users[0]["id"].as_str().unwrap().to_owned();
    let second = users[1]["id"].as_str().unwrap().to_owned();
    emulator
        .control(
            Method::PATCH,
            &format!("users/{first}"),
            Some(json!({ "displayName": "Joe Doe", "givenName": "Joe", "surname": "Doe" })),
        )
        .await;
    emulator
        .post(&format!("users/{second}/soft-delete"), json!({}))
        .await;
    let changes = emulator.get_ok(&round.delta_link).await;
    let theirs = sample(&dir, "user-delta-deltalink-changes-removed.json");
    same_top(
        &changes,
        &theirs,
        &[],
        "user-delta-deltalink-changes-removed.json",
    );
    let ours: Vec<BTreeSet<String>> = changes["value"].as_array().unwrap().iter().map(keys).collect();
    let wanted: Vec<BTreeSet<String>> = theirs["value"].as_array().unwrap().iter().map(keys).collect();
    for shape in &wanted {
        assert!(ours.contains(shape), "no entry shaped {shape:?}");
    }

    let defaults = emulator.get_ok("users/delta").await;
    let theirs = sample(&dir, "user-delta-api-default-properties.json");
    same_top(&defaults, &theirs, &[], "user-delta-api-default-properties.json");
    some_item_like(&defaults, &theirs, "user-delta-api-default-properties.json");
}

#[tokio::test]
async fn group_delta_pages_match_the_samples() {
    let Some(dir) = samples_dir() else { return };
    let emulator = Emulator::small(40, 3).await;
    let users = emulator.control(Method::GET, "users", None).await;
    let user = |index: usize| users[index]["id"].as_str().unwrap().to_owned();
    emulator
        .post(
            "groups",
            json!({ "displayName": "TestGroup2", "description": "Empty" }),
        )
        .await;
    let group = emulator
        .post(
            "groups",
            json!({ "displayName": "TestGroup3", "description": "Tracked", "memberIds": [user(0)] }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let round = emulator
        .round("groups/delta?$select=displayName,description,members")
        .await;
    let theirs = sample(&dir, "group-delta-initial-page-members.json");
    let page = &round.pages[0];
    same_top(
        page,
        &theirs,
        &["@odata.nextLink", "@odata.deltaLink"],
        "group-delta-initial-page-members.json",
    );
    let shapes: Vec<BTreeSet<String>> = page["value"].as_array().unwrap().iter().map(keys).collect();
    for item in theirs["value"].as_array().unwrap() {
        assert!(shapes.contains(&keys(item)), "no group shaped {:?}", keys(item));
    }
    let member = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|item| item["members@delta"].get(0))
        .unwrap();
    assert_eq!(keys(member), keys(&theirs["value"][0]["members@delta"][0]));
    let theirs = sample(&dir, "group-delta-final-page-deltalink.json");
    same_top(
        round.pages.last().unwrap(),
        &theirs,
        &[],
        "group-delta-final-page-deltalink.json",
    );

    emulator
        .post(&format!("groups/{group}/members"), json!({ "id": user(1) }))
        .await;
    emulator
        .control(
            Method::DELETE,
            &format!("groups/{group}/members/{}", user(0)),
            None,
        )
        .await;
    let changes = emulator.get_ok(&round.delta_link).await;
    let theirs = sample(&dir, "group-delta-deltalink-members-changed.json");
    same_top(
        &changes,
        &theirs,
        &[],
        "group-delta-deltalink-members-changed.json",
    );
    some_item_like(&changes, &theirs, "group-delta-deltalink-members-changed.json");
    let ours: Vec<BTreeSet<String>> = changes["value"][0]["members@delta"]
        .as_array()
        .unwrap()
        .iter()
        .map(keys)
        .collect();
    for member in theirs["value"][0]["members@delta"].as_array().unwrap() {
        assert!(
            ours.contains(&keys(member)),
            "no member shaped {:?}",
            keys(member)
        );
    }
    let quiet = emulator
        .get_ok(changes["@odata.deltaLink"].as_str().unwrap())
        .await;
    same_top(
        &quiet,
        &sample(&dir, "group-delta-deltalink-no-changes.json"),
        &[],
        "group-delta-deltalink-no-changes.json",
    );
}

#[tokio::test]
async fn errors_and_tokens_match_the_samples() {
    let Some(dir) = samples_dir() else { return };
    let emulator = Emulator::start(EmulatorOptions {
        users: 5,
        groups: 1,
        throttle: true,
        ..EmulatorOptions::default()
    })
    .await;
    let count = emulator.get("users?$count=true").await;
    same_error(
        &count.json(),
        &sample(&dir, "error-400-count-requires-consistencylevel.json"),
        "count",
    );
    let advanced = emulator.get("users?$filter=endsWith(mail,'@outlook.com')").await;
    same_error(
        &advanced.json(),
        &sample(&dir, "error-400-unsupported-query-advanced-required.json"),
        "advanced",
    );
    let eventual = [("ConsistencyLevel", "eventual")];
    let not_indexed = emulator
        .get_with(
            "users?$filter=id ge '398164b1-5196-49dd-ada2-364b49f99b27'&$count=true",
            &eventual,
        )
        .await;
    let theirs = sample(&dir, "error-400-filter-property-not-indexed.json");
    same_error(&not_indexed.json(), &theirs, "not indexed");
    assert_eq!(not_indexed.json()["error"]["message"], theirs["error"]["message"]);
    let search = emulator.get("users?$search=\"displayName:Ana\"").await;
    let theirs = sample(&dir, "error-400-search-requires-consistencylevel.json");
    same_error(&search.json(), &theirs, "search");
    assert_eq!(search.json()["error"]["message"], theirs["error"]["message"]);
    let searched = emulator
        .get_with("users?$search=\"displayName:a\"", &eventual)
        .await;
    assert_eq!(searched.status, StatusCode::OK);
    let not_implemented = emulator.get("users?$select=skills").await;
    assert_eq!(not_implemented.status, StatusCode::NOT_IMPLEMENTED);
    same_error(
        &not_implemented.json(),
        &sample(&dir, "error-501-delta-unsupported-property.json"),
        "501",
    );
    emulator
        .post("faults", json!({ "kind": "throttle", "count": 1 }))
        .await;
    let throttled = emulator.get("users").await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        keys(&throttled.json()["error"]["innerError"]),
        keys(&sample(&dir, "error-429-throttled.json")["error"]["innerError"])
    );
    same_error(
        &throttled.json(),
        &sample(&dir, "error-429-throttled.json"),
        "429",
    );

    let options = EmulatorOptions::default();
    let token = |secret: &str| {
        vec![
            ("client_id", options.client_id.clone()),
            ("client_secret", secret.to_owned()),
            ("scope", "https://graph.microsoft.com/.default".to_owned()),
            ("grant_type", "client_credentials".to_owned()),
        ]
    };
    let post = |form: Vec<(&'static str, String)>| {
        let request = emulator.http.post(emulator.token_url()).form(&form);
        async move { read(request.send().await.unwrap()).await.json() }
    };
    let success = post(token(&options.client_secret)).await;
    same_top(
        &success,
        &sample(&dir, "token-response-success.json"),
        &["ext_expires_in"],
        "token-response-success.json",
    );
    let wrong = post(token("wrong")).await;
    same_top(
        &wrong,
        &sample(&dir, "token-error-aadsts7000215-invalid-secret.json"),
        &[],
        "7000215",
    );
    let mut scope = token(&options.client_secret);
    scope[2].1 = "https://example.contoso.com/activity.read".to_owned();
    let invalid_scope = post(scope).await;
    let theirs = sample(&dir, "token-error-invalid-scope-with-error-uri.json");
    same_top(&invalid_scope, &theirs, &[], "70011");
    // The description up to its trace lines is the sample's, word for word.
    let first_line = |body: &Value| {
        body["error_description"]
            .as_str()
            .unwrap()
            .split("\r\n")
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(first_line(&invalid_scope), first_line(&theirs));
    emulator.post("secret/expire", json!({})).await;
    let expired = post(token(&options.client_secret)).await;
    same_top(
        &expired,
        &sample(&dir, "token-error-aadsts7000222-expired-secret.json"),
        &["error_uri"],
        "7000222",
    );
}

#[tokio::test]
async fn batch_matches_the_sample() {
    let Some(dir) = samples_dir() else { return };
    let emulator = Emulator::small(5, 1).await;
    let response = emulator
        .http
        .post(format!("{}/v1.0/$batch", emulator.url()))
        .bearer_auth(&emulator.token)
        .json(&json!({ "requests": [{ "id": "1", "method": "GET", "url": "/users" }] }))
        .send()
        .await
        .unwrap();
    let ours = read(response).await.json();
    let theirs = sample(&dir, "batch-response.json");
    same_top(&ours, &theirs, &[], "batch-response.json");
    let allowed: BTreeSet<String> = ["id", "status", "headers", "body"]
        .iter()
        .map(|key| (*key).to_owned())
        .collect();
    for item in theirs["responses"]
        .as_array()
        .unwrap()
        .iter()
        .chain(ours["responses"].as_array().unwrap())
    {
        assert!(keys(item).is_subset(&allowed), "{item}");
    }
}
