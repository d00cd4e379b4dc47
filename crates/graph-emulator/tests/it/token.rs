//! The token endpoint: secret (form and Basic) and certificate assertions (RS256 + x5t, PS256 +
//! x5t#S256) succeed, every documented error has its status and body, and Graph checks the token.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use graph_emulator::EmulatorOptions;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha1::Digest as _;

use crate::support::{Emulator, read};

const CERT: &str = include_str!("../fixtures/test-cert.pem");
const KEY: &str = include_str!("../fixtures/test-key.pem");
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

fn defaults() -> EmulatorOptions {
    EmulatorOptions::default()
}

async fn with_certificate() -> Emulator {
    Emulator::start(EmulatorOptions {
        users: 5,
        groups: 2,
        certificate_pem: Some(CERT.to_owned()),
        ..EmulatorOptions::default()
    })
    .await
}

fn certificate_der() -> Vec<u8> {
    let body: String = CERT.lines().filter(|line| !line.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A client assertion as Microsoft's SDKs build it, RS256 with `x5t` or PS256 with `x5t#S256`.
fn assertion(emulator: &Emulator, algorithm: Algorithm, audience: Option<&str>, exp_offset: i64) -> String {
    let der = certificate_der();
    let mut header = Header::new(algorithm);
    match algorithm {
        Algorithm::RS256 => header.x5t = Some(URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&der))),
        _ => header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der))),
    }
    let now = unix_now();
    let claims = json!({
        "aud": audience.map(str::to_owned).unwrap_or_else(|| emulator.token_url()),
        "iss": defaults().client_id,
        "sub": defaults().client_id,
        "jti": "a4a4ffd3-9d3b-4bd1-8c44-7c6d2c5b4f1e",
        "nbf": now,
        "iat": now,
        "exp": now + exp_offset,
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(KEY.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn assertion_grant(emulator: &Emulator, assertion: &str) -> crate::support::Answer {
    let client_id = defaults().client_id;
    emulator
        .post_form(
            &emulator.token_url(),
            &[
                ("client_id", client_id.as_str()),
                ("scope", GRAPH_SCOPE),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
                ("grant_type", "client_credentials"),
            ],
        )
        .await
}

fn assert_success(body: &Value) {
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert!(body["access_token"].as_str().unwrap().starts_with("eyJ"));
}

/// Checks an error body: status, `error`, the AADSTS code in `error_codes` and the description.
fn assert_token_error(answer: &crate::support::Answer, status: StatusCode, error: &str, code: u64) {
    assert_eq!(answer.status, status, "{}", answer.text);
    let body = answer.json();
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(description.contains("\r\nTrace ID: "), "{description}");
    for key in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body.get(key).is_some(), "{key} missing from {body}");
    }
}

fn form<'a>(secret: &'a str, client_id: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", client_id),
        ("client_secret", secret),
        ("scope", scope),
        ("grant_type", "client_credentials"),
    ]
}

#[tokio::test]
async fn a_secret_in_the_form_or_in_basic_auth_gets_a_token() {
    let emulator = Emulator::small(5, 2).await;
    let options = defaults();
    let answer = emulator
        .post_form(
            &emulator.token_url(),
            &form(&options.client_secret, &options.client_id, GRAPH_SCOPE),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_success(&answer.json());
    let basic = emulator
        .http
        .post(emulator.token_url())
        .basic_auth(&options.client_id, Some(&options.client_secret))
        .form(&[("scope", GRAPH_SCOPE), ("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let answer = read(basic).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_success(&answer.json());
}

#[tokio::test]
async fn both_certificate_assertion_styles_get_a_token() {
    let emulator = with_certificate().await;
    for algorithm in [Algorithm::RS256, Algorithm::PS256] {
        let answer = assertion_grant(&emulator, &assertion(&emulator, algorithm, None, 600)).await;
        assert_eq!(answer.status, StatusCode::OK, "{algorithm:?}: {}", answer.text);
        assert_success(&answer.json());
        let token = answer.json()["access_token"].as_str().unwrap().to_owned();
        let users = emulator
            .http
            .get(format!("{}/v1.0/users", emulator.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(users.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn bad_assertions_are_refused() {
    let emulator = with_certificate().await;
    let wrong_audience = assertion(
        &emulator,
        Algorithm::PS256,
        Some("https://example.com/token"),
        600,
    );
    assert_eq!(
        assertion_grant(&emulator, &wrong_audience).await.status,
        StatusCode::UNAUTHORIZED
    );
    let expired = assertion(&emulator, Algorithm::PS256, None, -3600);
    assert_token_error(
        &assertion_grant(&emulator, &expired).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        500133,
    );
    let mut tampered = assertion(&emulator, Algorithm::RS256, None, 600);
    tampered.truncate(tampered.len() - 4);
    tampered.push_str("AAAA");
    assert_token_error(
        &assertion_grant(&emulator, &tampered).await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        700027,
    );
    let without_certificate = Emulator::small(5, 2).await;
    let answer = assertion_grant(
        &without_certificate,
        &assertion(&without_certificate, Algorithm::PS256, None, 600),
    )
    .await;
    assert_token_error(&answer, StatusCode::UNAUTHORIZED, "invalid_client", 700027);
}

#[tokio::test]
async fn each_documented_error_has_its_status_and_body() {
    let emulator = Emulator::small(5, 2).await;
    let options = defaults();
    let url = emulator.token_url();

    let wrong_secret = emulator
        .post_form(&url, &form("the-secret-id", &options.client_id, GRAPH_SCOPE))
        .await;
    assert_token_error(&wrong_secret, StatusCode::UNAUTHORIZED, "invalid_client", 7000215);
    assert!(
        wrong_secret
            .text
            .contains("client secret value, not the client secret ID")
    );

    let unknown_client = emulator
        .post_form(
            &url,
            &form(
                &options.client_secret,
                "11111111-1111-1111-1111-111111111111",
                GRAPH_SCOPE,
            ),
        )
        .await;
    assert_token_error(
        &unknown_client,
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700016,
    );
    assert!(unknown_client.text.contains("was not found in the directory"));

    let other_tenant = format!(
        "{}/22222222-2222-2222-2222-222222222222/oauth2/v2.0/token",
        emulator.url()
    );
    let unknown_tenant = emulator
        .post_form(
            &other_tenant,
            &form(&options.client_secret, &options.client_id, GRAPH_SCOPE),
        )
        .await;
    assert_token_error(&unknown_tenant, StatusCode::BAD_REQUEST, "invalid_tenant", 90002);

    let bad_scope = emulator
        .post_form(
            &url,
            &form(&options.client_secret, &options.client_id, "User.Read"),
        )
        .await;
    assert_token_error(&bad_scope, StatusCode::BAD_REQUEST, "invalid_scope", 70011);

    let no_credentials = emulator
        .post_form(
            &url,
            &[
                ("client_id", options.client_id.as_str()),
                ("scope", GRAPH_SCOPE),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    assert_token_error(
        &no_credentials,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        7000218,
    );

    let mut password = form(&options.client_secret, &options.client_id, GRAPH_SCOPE);
    password[3] = ("grant_type", "password");
    let unsupported = emulator.post_form(&url, &password).await;
    assert_token_error(
        &unsupported,
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
        70003,
    );

    emulator.post("secret/expire", json!({})).await;
    let expired = emulator
        .post_form(
            &url,
            &form(&options.client_secret, &options.client_id, GRAPH_SCOPE),
        )
        .await;
    assert_token_error(&expired, StatusCode::UNAUTHORIZED, "invalid_client", 7000222);
}

#[tokio::test]
async fn graph_refuses_missing_malformed_and_expired_tokens() {
    let emulator = Emulator::small(5, 2).await;
    let url = format!("{}/v1.0/users", emulator.url());
    let missing = read(emulator.http.get(&url).send().await.unwrap()).await;
    let malformed = read(
        emulator
            .http
            .get(&url)
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    for answer in [&missing, &malformed] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.json()["error"]["code"], "InvalidAuthenticationToken");
    }
    assert_eq!(emulator.get("users").await.status, StatusCode::OK);
    emulator.post("clock", json!({ "advance_seconds": 3600 })).await;
    let expired = emulator.get("users").await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.json()["error"]["code"], "InvalidAuthenticationToken");
}
