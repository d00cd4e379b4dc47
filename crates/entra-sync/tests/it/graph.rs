//! The Graph client: its parsing types against Microsoft's own sample bodies, and whole delta
//! rounds, throttling, resets and token failures against the emulated tenant.

use std::collections::BTreeSet;
use std::path::PathBuf;

use entra_sync::graph::wire::{GraphErrorBody, Page, PageLink, TokenErrorBody, TokenResponse, graph_error};
use entra_sync::graph::{Credential, DeltaStart, Error, GraphClient, GraphSettings, RoundEnd};
use entra_sync_core::delta::{GroupDelta, Patch, RemovalReason, UserDelta};
use serde_json::{Value, json};

use crate::support::{Tenant, openssl_certificate};

/// Microsoft's sample bodies, beside the checkout; `None` (and a message) when they are absent.
fn graph_samples() -> Option<Vec<(String, Vec<u8>)>> {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/graph-samples");
    let Ok(entries) = std::fs::read_dir(&folder) else {
        eprintln!("skipped: no Graph samples at {}", folder.display());
        return None;
    };
    let mut samples: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "json"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    samples.sort();
    assert!(!samples.is_empty(), "no samples in {}", folder.display());
    Some(samples)
}

/// Parses a delta page sample and checks it ends the way Graph says every page does.
fn delta_page<T: serde::de::DeserializeOwned>(name: &str, body: &[u8]) -> (Vec<T>, PageLink) {
    let page: Page<T> = serde_json::from_slice(body).unwrap_or_else(|error| panic!("{name}: {error}"));
    page.into_delta_parts()
        .unwrap_or_else(|problem| panic!("{name}: {problem}"))
}

/// Doc samples (marked *shape* in the samples README) leave some entries' `id` out; the real
/// service always sends it.
fn shape_sample(name: &str) -> bool {
    name.contains("-api-")
}

#[test]
fn every_graph_sample_parses_with_the_client_types() {
    let Some(samples) = graph_samples() else {
        return;
    };
    for (name, body) in &samples {
        let name = name.as_str();
        match name {
            _ if name.starts_with("user-delta-") => {
                let (users, _) = delta_page::<UserDelta>(name, body);
                assert!(
                    shape_sample(name) || users.iter().all(|user| !user.id.is_empty()),
                    "{name}"
                );
            }
            _ if name.starts_with("group-delta-") => {
                let (groups, _) = delta_page::<GroupDelta>(name, body);
                assert!(
                    shape_sample(name) || groups.iter().all(|group| !group.id.is_empty()),
                    "{name}"
                );
            }
            "token-response-success.json" => {
                let token: TokenResponse = serde_json::from_slice(body).unwrap();
                assert_eq!((token.token_type.as_str(), token.expires_in), ("Bearer", 3599));
            }
            _ if name.starts_with("token-error-") => {
                let error: TokenErrorBody = serde_json::from_slice(body).unwrap();
                let code = error.error_codes[0];
                let message = error.into_error(400).to_string();
                assert!(
                    message.starts_with(&format!("AADSTS{code}: ")),
                    "{name}: {message}"
                );
                assert!(!message.contains('\n'), "{name}: {message}");
            }
            _ if name.starts_with("error-") => {
                let error: GraphErrorBody = serde_json::from_slice(body).unwrap();
                assert!(!error.error.code.is_empty(), "{name}");
                assert!(error.error.inner_error.is_some(), "{name}: innerError");
            }
            _ if name.starts_with("user-list-")
                || name.starts_with("group-list-")
                || name.starts_with("directory-") =>
            {
                let page: Page<Value> =
                    serde_json::from_slice(body).unwrap_or_else(|error| panic!("{name}: {error}"));
                assert!(!page.value.is_empty(), "{name}");
            }
            // Single users: the delta entry type reads any user object.
            "user-get-by-id-app-only.json" | "user-expand-manager-levels-max.json" => {
                let user: UserDelta = serde_json::from_slice(body).unwrap();
                assert!(matches!(user.display_name, Patch::Set(_)), "{name}");
            }
            "batch-response.json" => {
                let batch: Value = serde_json::from_slice(body).unwrap();
                for response in batch["responses"].as_array().unwrap() {
                    let status = response["status"].as_u64().unwrap();
                    let body = serde_json::to_vec(&response["body"]).unwrap();
                    if status >= 400 {
                        serde_json::from_slice::<GraphErrorBody>(&body).unwrap();
                    } else if status == 200 {
                        serde_json::from_slice::<Page<Value>>(&body).unwrap();
                    }
                }
            }
            // A request body: the client sends no batches, so there is nothing of ours to parse.
            "batch-request.json" => {
                serde_json::from_slice::<Value>(body).unwrap();
            }
            _ => panic!("{name}: a new sample; decide which client type reads it"),
        }
    }
}

#[test]
fn sample_delta_pages_keep_removals_and_cleared_values_apart() {
    let Some(samples) = graph_samples() else {
        return;
    };
    let body = |wanted: &str| &samples.iter().find(|(name, _)| name == wanted).unwrap().1;

    let (users, link) = delta_page::<UserDelta>("", body("user-delta-initial-page-with-removed.json"));
    assert!(matches!(link, PageLink::Next(next) if next.contains("$skiptoken=")));
    let removed: Vec<_> = users.iter().filter(|user| user.removed.is_some()).collect();
    assert_eq!(removed.len(), 1);
    assert_eq!(
        removed[0].removed.as_ref().unwrap().reason,
        RemovalReason::Deleted
    );
    assert_eq!(removed[0].display_name, Patch::Absent);

    let (_, link) = delta_page::<UserDelta>("", body("user-delta-final-page-deltalink.json"));
    assert!(matches!(link, PageLink::Delta(delta) if delta.contains("$deltatoken=")));

    let (groups, _) = delta_page::<GroupDelta>("", body("group-delta-deltalink-members-changed.json"));
    let members = groups[0].members_delta.as_ref().unwrap();
    assert!(members.iter().any(|member| member.removed.is_some()));
    assert!(members.iter().any(|member| member.removed.is_none()));

    let user: UserDelta = serde_json::from_slice(body("user-get-by-id-app-only.json")).unwrap();
    assert_eq!(user.mail, Patch::Cleared);
    assert_eq!(user.department, Patch::Absent);
}

#[test]
fn sample_errors_map_to_their_advice() {
    let Some(samples) = graph_samples() else {
        return;
    };
    let body = |wanted: &str| &samples.iter().find(|(name, _)| name == wanted).unwrap().1;
    let token_error = |name: &str| {
        serde_json::from_slice::<TokenErrorBody>(body(name))
            .unwrap()
            .into_error(401)
            .to_string()
    };
    assert_eq!(
        token_error("token-error-aadsts7000215-invalid-secret.json"),
        "AADSTS7000215: the client secret is wrong: use the secret's Value, not its Secret ID (Certificates & secrets in the app registration)"
    );
    assert!(token_error("token-error-aadsts7000222-expired-secret.json").contains("create a new secret"));
    assert!(token_error("token-error-invalid-scope.json").contains("graph_url"));

    let delta_url = url::Url::parse("https://graph.microsoft.com/v1.0/users/delta?$deltatoken=abc").unwrap();
    let throttled = graph_error(&delta_url, 429, body("error-429-throttled.json"));
    assert!(!throttled.is_delta_reset());
    let message = throttled.to_string();
    assert!(
        message.contains("TooManyRequests") && !message.contains("deltatoken"),
        "{message}"
    );
}

#[test]
fn graph_errors_in_the_reset_class() {
    let delta_url = url::Url::parse("https://graph.microsoft.com/v1.0/groups/delta?$deltatoken=abc").unwrap();
    let error = |status: u16, body: &str| graph_error(&delta_url, status, body.as_bytes());
    let body =
        |code: &str, message: &str| format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);

    assert!(error(410, "").is_delta_reset());
    assert!(error(410, &body("Gone", "")).is_delta_reset());
    assert!(error(400, &body("syncStateNotFound", "The delta token is expired")).is_delta_reset());
    assert!(error(404, &body("SyncStateNotFound", "")).is_delta_reset());
    assert!(error(400, &body("resyncRequired", "")).is_delta_reset());
    assert!(error(400, &body("Request_BadRequest", "Badly formed token.")).is_delta_reset());
    assert!(!error(400, &body("Request_BadRequest", "Invalid $select")).is_delta_reset());
    assert!(!error(500, &body("syncStateNotFound", "")).is_delta_reset());
    // Older bodies spell the keys with capitals and `innererror` in lower case.
    assert!(error(400, r#"{"error":{"Code":"SyncStateNotFound","innererror":{}}}"#).is_delta_reset());

    let denied = error(
        403,
        &body("Authorization_RequestDenied", "Insufficient privileges"),
    );
    assert!(!denied.is_delta_reset());
    assert!(
        denied
            .to_string()
            .contains("grant User.Read.All and GroupMember.Read.All")
    );
}

/// Settings for the emulated tenant, with the tenant's own ids and secret unless changed.
fn settings(tenant: &Tenant) -> GraphSettings {
    let options = graph_emulator::EmulatorOptions::default();
    let url = url::Url::parse(&tenant.emulator.url()).unwrap();
    GraphSettings {
        authority_url: url.clone(),
        graph_url: url,
        tenant_id: options.tenant_id,
        client_id: options.client_id,
        credential: Credential::Secret(options.client_secret),
    }
}

/// The ids read by one users round and one groups round, run side by side as the sync does.
struct Rounds {
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
    users_end: RoundEnd,
    groups_end: RoundEnd,
}

async fn read_rounds(client: &GraphClient, users_start: DeltaStart, groups_start: DeltaStart) -> Rounds {
    let mut users = BTreeSet::new();
    let mut groups = BTreeSet::new();
    let (users_end, groups_end) = tokio::join!(
        client.users_delta(users_start, |page| users
            .extend(page.into_iter().map(|user| user.id))),
        client.groups_delta(groups_start, |page| groups
            .extend(page.into_iter().map(|group| group.id))),
    );
    Rounds {
        users,
        groups,
        users_end: users_end.unwrap(),
        groups_end: groups_end.unwrap(),
    }
}

/// The ids the control API lists for `what` (`users` or `groups`).
async fn tenant_ids(tenant: &Tenant, what: &str) -> BTreeSet<String> {
    let objects = tenant.get(what).await;
    objects
        .as_array()
        .unwrap()
        .iter()
        .map(|object| object["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn full_rounds_read_the_whole_tenant_and_the_next_round_is_empty() {
    // More users than one delta page holds, so the round follows nextLinks.
    let tenant = Tenant::start(2 * graph_emulator::DELTA_PAGE_SIZE + 100, 30).await;
    let client = GraphClient::new(settings(&tenant)).unwrap();

    let full = read_rounds(&client, DeltaStart::Full, DeltaStart::Full).await;
    assert_eq!(full.users, tenant_ids(&tenant, "users").await);
    assert_eq!(full.groups, tenant_ids(&tenant, "groups").await);
    assert!(
        full.users_end.pages > 1,
        "250 users fit one page: paging is not exercised"
    );
    let after_full = client.requests();

    let next = read_rounds(
        &client,
        DeltaStart::From(full.users_end.delta_link),
        DeltaStart::From(full.groups_end.delta_link),
    )
    .await;
    assert!(next.users.is_empty() && next.groups.is_empty());
    // The token is cached: one request per round, none for a token.
    assert_eq!(
        client.requests() - after_full,
        next.users_end.pages + next.groups_end.pages
    );
}

#[tokio::test]
async fn throttled_requests_are_retried_no_earlier_than_retry_after() {
    // Six users pages and a groups page per read, read twice: the seeded 30% share throttles
    // some of them, and which ones does not matter.
    let tenant = Tenant::start(5 * graph_emulator::DELTA_PAGE_SIZE + 1, 30).await;
    let client = GraphClient::new(settings(&tenant)).unwrap();
    tenant
        .post(
            "faults",
            json!({"kind": "throttle", "share": 0.3, "retry_after": 0.2}),
        )
        .await;

    for _ in 0..2 {
        let rounds = read_rounds(&client, DeltaStart::Full, DeltaStart::Full).await;
        assert_eq!(rounds.users, tenant_ids(&tenant, "users").await);
        assert_eq!(rounds.groups, tenant_ids(&tenant, "groups").await);
    }

    let log = tenant.get("requests").await;
    let log = log.as_array().unwrap();
    let throttled: Vec<&Value> = log.iter().filter(|entry| entry["status"] == 429).collect();
    assert!(!throttled.is_empty(), "no request was throttled");
    assert_eq!(client.requests(), log.len() as u64);
    for refusal in throttled {
        let at = refusal["at_ms"].as_f64().unwrap();
        let wait_ms = refusal["retry_after"].as_f64().unwrap() * 1000.0;
        let retry = log
            .iter()
            .filter(|entry| entry["path"] == refusal["path"] && entry["at_ms"].as_f64().unwrap() > at)
            .map(|entry| entry["at_ms"].as_f64().unwrap())
            .fold(f64::INFINITY, f64::min);
        assert!(
            retry - at >= wait_ms,
            "{refusal}: retried after {} ms",
            retry - at
        );
    }
}

#[tokio::test]
async fn a_reset_or_an_expired_delta_link_asks_for_a_full_read() {
    let tenant = Tenant::start(20, 5).await;
    let client = GraphClient::new(settings(&tenant)).unwrap();
    let full = read_rounds(&client, DeltaStart::Full, DeltaStart::Full).await;

    tenant
        .post("faults", json!({"kind": "delta_reset", "count": 1}))
        .await;
    let reset = client
        .users_delta(DeltaStart::From(full.users_end.delta_link.clone()), |_| {})
        .await
        .unwrap_err();
    assert!(reset.is_delta_reset(), "{reset}");

    tenant.post("clock", json!({"advance_seconds": 700_000})).await;
    let expired = client
        .groups_delta(DeltaStart::From(full.groups_end.delta_link), |_| {})
        .await
        .unwrap_err();
    assert!(expired.is_delta_reset(), "{expired}");

    let elsewhere = client
        .users_delta(
            DeltaStart::From("https://graph.microsoft.com/v1.0/users/delta?$deltatoken=x".into()),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(elsewhere.is_delta_reset(), "{elsewhere}");
}

#[tokio::test]
async fn token_failures_name_the_aadsts_code_and_the_fix() {
    let tenant = Tenant::start(1, 1).await;
    let refusal = |change: fn(&mut GraphSettings)| {
        let mut settings = settings(&tenant);
        change(&mut settings);
        async move {
            let client = GraphClient::new(settings).unwrap();
            client.check_token().await.unwrap_err()
        }
    };

    let wrong_secret =
        refusal(|settings| settings.credential = Credential::Secret("not-the-secret".into())).await;
    assert!(
        matches!(
            wrong_secret,
            Error::Token {
                aadsts: Some(7000215),
                ..
            }
        ),
        "{wrong_secret:?}"
    );
    assert!(
        wrong_secret
            .to_string()
            .contains("use the secret's Value, not its Secret ID")
    );

    let unknown_tenant =
        refusal(|settings| settings.tenant_id = "11111111-2222-3333-4444-555555555555".into()).await;
    assert!(
        matches!(
            unknown_tenant,
            Error::Token {
                aadsts: Some(90002),
                ..
            }
        ),
        "{unknown_tenant:?}"
    );
    assert!(unknown_tenant.to_string().contains("check tenant_id"));

    let unknown_client =
        refusal(|settings| settings.client_id = "66666666-7777-8888-9999-000000000000".into()).await;
    assert!(
        matches!(
            unknown_client,
            Error::Token {
                aadsts: Some(700016),
                ..
            }
        ),
        "{unknown_client:?}"
    );
    assert!(unknown_client.to_string().contains("Application (client) ID"));
}

#[tokio::test]
async fn an_unreachable_host_is_reported_with_what_to_check() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = url::Url::parse(&format!("http://{}", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    let client = GraphClient::new(GraphSettings {
        authority_url: url.clone(),
        graph_url: url.clone(),
        tenant_id: "contoso.onmicrosoft.com".into(),
        client_id: "client".into(),
        credential: Credential::Secret("secret".into()),
    })
    .unwrap();
    let error = client.check_token().await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");
    assert!(message.starts_with(&format!("cannot reach {url}")), "{message}");
    assert!(
        message.ends_with("check authority_url/graph_url and the network"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let remote = url::Url::parse("http://example.com").unwrap();
    let settings = GraphSettings {
        authority_url: url::Url::parse("https://login.microsoftonline.com").unwrap(),
        graph_url: remote,
        tenant_id: "contoso.onmicrosoft.com".into(),
        client_id: "client".into(),
        credential: Credential::Secret("do-not-print".into()),
    };
    assert!(!format!("{settings:?}").contains("do-not-print"));
    let error = GraphClient::new(settings).err().unwrap();
    assert!(matches!(error, Error::InsecureUrl { .. }), "{error:?}");
    assert!(error.to_string().contains("use https"), "{error}");
}

#[tokio::test]
async fn certificate_credentials_get_a_token_and_read_a_round() {
    let dir = tempfile::tempdir().unwrap();
    let Some((certificate_pem, private_key_pem)) = openssl_certificate(dir.path(), 1) else {
        return;
    };
    let options = graph_emulator::EmulatorOptions {
        users: 5,
        groups: 2,
        certificate_pem: Some(certificate_pem.clone()),
        ..graph_emulator::EmulatorOptions::default()
    };
    let emulator = graph_emulator::start(options.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = url::Url::parse(&emulator.url()).unwrap();
    let client = GraphClient::new(GraphSettings {
        authority_url: url.clone(),
        graph_url: url,
        tenant_id: options.tenant_id,
        client_id: options.client_id,
        credential: Credential::Certificate {
            certificate_pem,
            private_key_pem,
        },
    })
    .unwrap();

    let mut users = 0;
    client
        .users_delta(DeltaStart::Full, |page| users += page.len())
        .await
        .unwrap();
    assert_eq!(users, 5);
    emulator.shutdown().await;
}

#[tokio::test]
async fn an_expired_secret_or_an_unregistered_certificate_says_what_to_do() {
    let tenant = Tenant::start(1, 1).await;
    tenant.post("secret/expire", json!({})).await;
    let expired = GraphClient::new(settings(&tenant))
        .unwrap()
        .check_token()
        .await
        .unwrap_err();
    assert!(
        matches!(
            expired,
            Error::Token {
                aadsts: Some(7000222),
                ..
            }
        ),
        "{expired:?}"
    );
    assert!(expired.to_string().contains("create a new secret"), "{expired}");

    let dir = tempfile::tempdir().unwrap();
    let Some((certificate_pem, private_key_pem)) = openssl_certificate(dir.path(), 1) else {
        return;
    };
    let unregistered = GraphClient::new(GraphSettings {
        credential: Credential::Certificate {
            certificate_pem,
            private_key_pem,
        },
        ..settings(&tenant)
    })
    .unwrap()
    .check_token()
    .await
    .unwrap_err();
    assert!(
        matches!(
            unregistered,
            Error::Token {
                aadsts: Some(700027),
                ..
            }
        ),
        "{unregistered:?}"
    );
    assert!(
        unregistered.to_string().contains("upload this certificate"),
        "{unregistered}"
    );
}

#[tokio::test]
async fn an_access_token_refused_by_graph_is_renewed_once() {
    let tenant = Tenant::start(20, 5).await;
    let client = GraphClient::new(settings(&tenant)).unwrap();
    let full = read_rounds(&client, DeltaStart::Full, DeltaStart::Full).await;
    // Past the access token's hour but well within the delta token's week.
    tenant.post("clock", json!({"advance_seconds": 4000})).await;

    client
        .users_delta(DeltaStart::From(full.users_end.delta_link), |_| {})
        .await
        .unwrap();
    let log = tenant.get("requests").await;
    let statuses: Vec<(bool, u64)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let is_token = entry["path"].as_str().unwrap().ends_with("/oauth2/v2.0/token");
            (is_token, entry["status"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        statuses[statuses.len() - 3..],
        [(false, 401), (true, 200), (false, 200)]
    );
}

#[tokio::test]
async fn a_body_cut_short_is_fetched_again_once() {
    let tenant = Tenant::start(20, 5).await;
    let client = GraphClient::new(settings(&tenant)).unwrap();
    let expected = tenant_ids(&tenant, "users").await;

    tenant
        .post("faults", json!({"kind": "truncated_body", "count": 1}))
        .await;
    let mut users = BTreeSet::new();
    client
        .users_delta(DeltaStart::Full, |page| {
            users.extend(page.into_iter().map(|user| user.id))
        })
        .await
        .unwrap();
    assert_eq!(users, expected);

    tenant
        .post("faults", json!({"kind": "truncated_body", "count": 2}))
        .await;
    let error = client.users_delta(DeltaStart::Full, |_| {}).await.unwrap_err();
    assert!(matches!(error, Error::InvalidBody { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("Graph sent an unreadable page from"),
        "{error}"
    );
}

#[tokio::test]
async fn unavailability_without_retry_after_backs_off_and_persistent_throttling_gives_up() {
    let tenant = Tenant::start(20, 5).await;
    let client = GraphClient::new(settings(&tenant)).unwrap();

    tenant
        .post("faults", json!({"kind": "gateway_timeout", "count": 2}))
        .await;
    client.groups_delta(DeltaStart::Full, |_| {}).await.unwrap();
    let log = tenant.get("requests").await;
    let graph: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["path"].as_str().unwrap().starts_with("/v1.0/"))
        .collect();
    let statuses: Vec<u64> = graph
        .iter()
        .map(|entry| entry["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [504, 504, 200]);
    let at = |index: usize| graph[index]["at_ms"].as_u64().unwrap();
    assert!(
        at(1) - at(0) >= 500 && at(2) - at(1) >= 1000,
        "backoff too short: {graph:?}"
    );

    tenant
        .post(
            "faults",
            json!({"kind": "throttle", "retry_after": 0.01, "path_contains": "/users/delta"}),
        )
        .await;
    let error = client.users_delta(DeltaStart::Full, |_| {}).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Unavailable {
                status: 429,
                attempts: 8,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("try again later"), "{error}");
}
