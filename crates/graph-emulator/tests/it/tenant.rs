//! The generated tenant: deterministic from its seed, realistic, and round-tripping as a fixture.

use std::collections::BTreeSet;

use graph_emulator::EmulatorOptions;
use reqwest::Method;
use serde_json::Value;

use crate::support::Emulator;

async fn tenant(emulator: &Emulator) -> Value {
    emulator.control(Method::GET, "tenant", None).await
}

fn options(seed: u64) -> EmulatorOptions {
    EmulatorOptions {
        users: 1000,
        groups: 30,
        seed,
        ..EmulatorOptions::default()
    }
}

#[tokio::test]
async fn the_same_seed_gives_the_same_tenant() {
    let one = tenant(&Emulator::start(options(3)).await).await;
    let two = tenant(&Emulator::start(options(3)).await).await;
    let other = tenant(&Emulator::start(options(4)).await).await;
    assert_eq!(one, two);
    assert_ne!(one, other);
}

#[tokio::test]
async fn the_generated_tenant_looks_like_a_company() {
    let fixture = tenant(&Emulator::start(options(1)).await).await;
    let users = fixture["users"].as_array().unwrap();
    let groups = fixture["groups"].as_array().unwrap();
    assert_eq!(users.len(), 1000);
    assert_eq!(groups.len(), 30);
    let share = |predicate: &dyn Fn(&Value) -> bool| users.iter().filter(|user| predicate(user)).count();
    let guests = share(&|user| user["userType"] == "Guest");
    assert!((20..=90).contains(&guests), "{guests} guests");
    assert!(
        users
            .iter()
            .filter(|user| user["userType"] == "Guest")
            .all(|user| user["userPrincipalName"].as_str().unwrap().contains("#EXT#@"))
    );
    let disabled = share(&|user| user["accountEnabled"] == false);
    assert!((10..=60).contains(&disabled), "{disabled} disabled");
    assert!(share(&|user| user["mail"].is_null()) > 0);
    assert!(share(&|user| user["givenName"].is_null() && user["displayName"].is_string()) > 0);
    assert!(share(&|user| !user["displayName"].as_str().unwrap().is_ascii()) > 100);
    assert!(share(&|user| user["department"].is_string() && user["city"].is_string()) > 800);
    assert!(share(&|user| user["manager"].is_string()) > 500);
    let upns: BTreeSet<String> = users
        .iter()
        .map(|user| user["userPrincipalName"].as_str().unwrap().to_lowercase())
        .collect();
    assert_eq!(upns.len(), users.len());
    assert!(users.iter().all(|user| user["id"].as_str().unwrap().len() == 36));

    assert!(
        groups
            .iter()
            .any(|group| group["displayName"] == "Support Operations")
    );
    let group_ids: BTreeSet<&str> = groups.iter().map(|group| group["id"].as_str().unwrap()).collect();
    let nested = groups.iter().any(|group| {
        group["memberIds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|member| group_ids.contains(member.as_str().unwrap()))
    });
    assert!(nested, "some groups nest others");
    let sizes: Vec<usize> = groups
        .iter()
        .map(|group| group["memberIds"].as_array().unwrap().len())
        .collect();
    let average = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    assert!((10.0..=30.0).contains(&average), "{average} members per group");
    assert!(*sizes.iter().max().unwrap() >= 100, "a very large group");
}

#[tokio::test]
async fn a_fixture_round_trips() {
    let emulator = Emulator::start(options(9)).await;
    let users = emulator.control(Method::GET, "users", None).await;
    let first = users[0]["id"].as_str().unwrap().to_owned();
    emulator
        .post(&format!("users/{first}/soft-delete"), serde_json::json!({}))
        .await;
    let saved = tenant(&emulator).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenant.json");
    std::fs::write(&path, serde_json::to_string_pretty(&saved).unwrap()).unwrap();
    let loaded = Emulator::start(EmulatorOptions {
        fixture: Some(path),
        ..EmulatorOptions::default()
    })
    .await;
    assert_eq!(tenant(&loaded).await, saved);
    // `state` in a fixture is the lifecycle, never Graph's address state.
    let states = loaded.get_ok("users?$select=state&$top=999").await;
    assert!(
        states["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|user| user["state"].is_null())
    );
}
