//! The Entra token endpoint (`POST /{tenant}/oauth2/v2.0/token`, client credentials with a secret or
//! a certificate assertion) and the check of the access token on every Graph request.

use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde_json::json;
use sha1::Digest as _;

use crate::EmulatorOptions;
use crate::server::AppState;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long the client secret is valid from the emulator's start: two years, the longest the
/// Entra admin center offers, so no test that moves the clock by weeks expires it by accident.
const SECRET_LIFETIME_SECONDS: i64 = 2 * 365 * 24 * 3600;

/// The registered certificate: its public key and both thumbprint forms.
struct Certificate {
    key: DecodingKey,
    x5t: String,
    x5t_s256: String,
}

/// Issues and checks access tokens, and knows the app's credentials.
pub(crate) struct Issuer {
    signing: EncodingKey,
    verifying: DecodingKey,
    certificate: Option<Certificate>,
    /// When the client secret became valid (the emulator's start), Unix seconds.
    secret_start: i64,
    /// When the client secret expires, Unix seconds on the emulated clock: from then on the token
    /// endpoint refuses it (AADSTS7000222), and the app registration shows it as its
    /// `endDateTime`.
    secret_end: AtomicI64,
    /// The application permissions the tenant granted the app; a token carries those granted
    /// when it was issued, as Entra's do.
    roles: RwLock<Vec<String>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct AccessClaims {
    aud: String,
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    appid: String,
    tid: String,
    roles: Vec<String>,
}

#[derive(serde::Deserialize)]
struct AssertionClaims {
    aud: Option<serde_json::Value>,
    iss: Option<String>,
    sub: Option<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
}

/// A token endpoint error: its `error`, AADSTS number, status and message.
struct TokenError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    message: String,
}

impl TokenError {
    fn new(status: StatusCode, error: &'static str, code: u32, message: impl Into<String>) -> TokenError {
        TokenError {
            status,
            error,
            code,
            message: message.into(),
        }
    }
}

impl Issuer {
    pub(crate) fn new(options: &EmulatorOptions, key_seed: u64, now: i64) -> anyhow::Result<Issuer> {
        let mut key = sha2::Sha256::new();
        key.update(key_seed.to_le_bytes());
        key.update(options.client_secret.as_bytes());
        let key = key.finalize();
        let certificate = match &options.certificate_pem {
            Some(pem) => Some(parse_certificate(pem)?),
            None => None,
        };
        Ok(Issuer {
            signing: EncodingKey::from_secret(&key),
            verifying: DecodingKey::from_secret(&key),
            certificate,
            secret_start: now,
            secret_end: AtomicI64::new(now + SECRET_LIFETIME_SECONDS),
            roles: RwLock::new(options.roles.clone()),
        })
    }

    /// The client secret expires at `end` (Unix seconds); a time already past expires it now.
    pub(crate) fn set_secret_end(&self, end: i64) {
        self.secret_end.store(end, Ordering::Relaxed);
    }

    /// When the client secret became valid and when it expires, Unix seconds.
    pub(crate) fn secret_validity(&self) -> (i64, i64) {
        (self.secret_start, self.secret_end.load(Ordering::Relaxed))
    }

    /// Grants exactly `roles`; tokens issued from now on carry them.
    pub(crate) fn set_roles(&self, roles: Vec<String>) {
        *self
            .roles
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = roles;
    }

    pub(crate) fn roles(&self) -> Vec<String> {
        self.roles
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Checks `Authorization: Bearer …` and answers the token's roles; the error is Graph's 401
    /// `InvalidAuthenticationToken`.
    pub(crate) fn check_bearer(
        &self,
        headers: &HeaderMap,
        now: i64,
        request_id: &str,
    ) -> Result<Vec<String>, Response> {
        let unauthorized = |message: &str| {
            let mut response = crate::json::graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                message,
                now,
                request_id,
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(
                    "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
                ),
            );
            response
        };
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
        else {
            return Err(unauthorized("Access token is empty."));
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or("")
            .trim();
        if token.is_empty() {
            return Err(unauthorized("Access token is empty."));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &self.verifying, &validation)
            .map_err(|_| unauthorized("CompactToken parsing failed with error code: 80049217"))?
            .claims;
        if claims.exp <= now {
            return Err(unauthorized("Lifetime validation failed, the token is expired."));
        }
        Ok(claims.roles)
    }

    /// Serves one token request.
    pub(crate) fn token(&self, state: &AppState, tenant: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        let options = &state.options;
        let now = state.clock.now();
        let correlation = state.request_id();
        match self.grant(state, tenant, headers, body, now) {
            Ok(access_token) => {
                let lifetime = options.access_token_lifetime.as_secs();
                let body = json!({
                    "token_type": "Bearer",
                    "expires_in": lifetime,
                    "ext_expires_in": lifetime,
                    "access_token": access_token,
                });
                crate::json::response(StatusCode::OK, body.to_string().into_bytes())
            }
            Err(error) => {
                let timestamp = crate::clock::token_timestamp(now);
                let body = json!({
                    "error": error.error,
                    "error_description": format!(
                        "AADSTS{}: {}\r\nTrace ID: {correlation}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}",
                        error.code, error.message
                    ),
                    "error_codes": [error.code],
                    "timestamp": timestamp,
                    "trace_id": correlation,
                    "correlation_id": correlation,
                    "error_uri": format!("https://login.microsoftonline.com/error?code={}", error.code),
                });
                (
                    error.status,
                    [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                    body.to_string(),
                )
                    .into_response()
            }
        }
    }

    fn grant(
        &self,
        state: &AppState,
        tenant: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<String, TokenError> {
        let options = &state.options;
        let base_url = &state.url;
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        let field = |name: &str| {
            form.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
                .filter(|value| !value.is_empty())
        };
        let domain = state.read().domain.clone();
        if !tenant.eq_ignore_ascii_case(&options.tenant_id) && !tenant.eq_ignore_ascii_case(&domain) {
            return Err(TokenError::new(
                StatusCode::BAD_REQUEST,
                "invalid_tenant",
                90002,
                format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
                ),
            ));
        }
        let missing = |name: &str| {
            TokenError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                format!("The request body must contain the following parameter: '{name}'."),
            )
        };
        let grant_type = field("grant_type").ok_or_else(|| missing("grant_type"))?;
        if grant_type != "client_credentials" {
            return Err(TokenError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{grant_type}'."),
            ));
        }
        let basic = basic_credentials(headers);
        let client_id = field("client_id")
            .map(str::to_owned)
            .or_else(|| basic.as_ref().map(|(id, _)| id.clone()))
            .ok_or_else(|| missing("client_id"))?;
        if client_id != options.client_id {
            return Err(TokenError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
                ),
            ));
        }
        let scope = field("scope").ok_or_else(|| missing("scope"))?;
        let scopes: Vec<&str> = scope.split_whitespace().collect();
        if scopes.len() != 1 || !scopes[0].ends_with("/.default") {
            return Err(TokenError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                70011,
                // The wording of sample token-error-invalid-scope-with-error-uri.json.
                format!(
                    "The provided value for the input parameter 'scope' isn't valid. The scope {scope} isn't valid."
                ),
            ));
        }
        let secret = field("client_secret")
            .map(str::to_owned)
            .or_else(|| basic.map(|(_, secret)| secret));
        match (secret, field("client_assertion")) {
            (Some(secret), _) => {
                if secret != options.client_secret {
                    return Err(TokenError::new(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        7000215,
                        format!(
                            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                        ),
                    ));
                }
                if now >= self.secret_end.load(Ordering::Relaxed) {
                    return Err(TokenError::new(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        7000222,
                        format!(
                            "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
                        ),
                    ));
                }
            }
            (None, Some(assertion)) => {
                if field("client_assertion_type") != Some(ASSERTION_TYPE) {
                    return Err(TokenError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        50027,
                        format!("client_assertion_type must be '{ASSERTION_TYPE}'."),
                    ));
                }
                let audiences = [
                    format!("{base_url}/{tenant}/oauth2/v2.0/token"),
                    format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
                ];
                self.check_assertion(assertion, &client_id, &audiences, now)?;
            }
            (None, None) => {
                return Err(TokenError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000218,
                    "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                ));
            }
        }
        let claims = AccessClaims {
            aud: "https://graph.microsoft.com".to_owned(),
            iss: format!("https://sts.windows.net/{}/", options.tenant_id),
            iat: now,
            nbf: now,
            exp: now + options.access_token_lifetime.as_secs() as i64,
            appid: client_id,
            tid: options.tenant_id.clone(),
            roles: self.roles(),
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &self.signing,
        )
        .map_err(|error| {
            TokenError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "temporarily_unavailable",
                90033,
                format!("cannot sign the access token: {error}"),
            )
        })
    }

    fn check_assertion(
        &self,
        assertion: &str,
        client_id: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<(), TokenError> {
        let invalid = |code: u32, message: String| {
            TokenError::new(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
        };
        let Some(certificate) = &self.certificate else {
            return Err(invalid(
                700027,
                format!(
                    "Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
                ),
            ));
        };
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| invalid(50027, "JWT token is invalid or malformed.".to_owned()))?;
        let thumbprint_matches = header.x5t.as_deref() == Some(certificate.x5t.as_str())
            || header.x5t_s256.as_deref() == Some(certificate.x5t_s256.as_str());
        if !thumbprint_matches || !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
            let used = header.x5t_s256.or(header.x5t).unwrap_or_default();
            return Err(invalid(
                700027,
                format!(
                    "Client assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '{used}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
                ),
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &certificate.key, &validation)
            .map_err(|_| invalid(700027, "Client assertion failed signature validation.".to_owned()))?
            .claims;
        let audience_ok = match &claims.aud {
            Some(serde_json::Value::String(aud)) => audiences.contains(aud),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(serde_json::Value::as_str)
                .any(|aud| audiences.iter().any(|wanted| wanted == aud)),
            _ => false,
        };
        if !audience_ok {
            return Err(invalid(
                700212,
                format!("The client assertion audience claim must be '{}'.", audiences[0]),
            ));
        }
        if claims.iss.as_deref() != Some(client_id) || claims.sub.as_deref() != Some(client_id) {
            return Err(invalid(
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter: iss and sub must be the client id.".to_owned(),
            ));
        }
        // Entra allows five minutes of clock skew.
        let in_range =
            claims.exp.is_some_and(|exp| exp + 300 > now) && claims.nbf.is_none_or(|nbf| nbf - 300 <= now);
        if !in_range {
            return Err(invalid(
                500133,
                "Assertion is not within its valid time range.".to_owned(),
            ));
        }
        Ok(())
    }
}

/// `Authorization: Basic` client id and secret, form-decoded as RFC 6749 §2.3.1 says.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |text: &str| {
        url::form_urlencoded::parse(format!("x={text}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// The public key and thumbprints of a PEM certificate. jsonwebtoken reads the key out of the
/// certificate itself (its SubjectPublicKeyInfo), so no X.509 crate is needed.
fn parse_certificate(pem: &str) -> anyhow::Result<Certificate> {
    let body: String = pem
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END CERTIFICATE-----"))
        .map(str::trim)
        .collect();
    let der = STANDARD
        .decode(body)
        .map_err(|error| anyhow::anyhow!("the certificate is not PEM: {error}"))?;
    let key = DecodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|error| anyhow::anyhow!("the certificate has no RSA public key: {error}"))?;
    Ok(Certificate {
        key,
        x5t: URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&der)),
        x5t_s256: URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der)),
    })
}
