//! The app-only token (GRAPH.md §1): the client-credentials request with a secret or a signed
//! certificate assertion, the error mapping, and a cache shared by the rounds of one client.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use super::certificate::certificate_der;
use super::client::{Transport, random_u64};
use super::wire::{TokenErrorBody, TokenResponse};
use super::{Credential, Error, GraphSettings};

/// A token is renewed this long before it expires, so a page request never races its expiry.
const RENEWAL_MARGIN: Duration = Duration::from_secs(5 * 60);

/// A client assertion is valid this long; Microsoft asks for 5 to 10 minutes.
const ASSERTION_LIFETIME_SECONDS: i64 = 10 * 60;

/// Gets and caches the access token of one app in one tenant.
pub(super) struct Authenticator {
    token_url: Url,
    scope: String,
    client_id: String,
    proof: Proof,
    /// Held across a token request so rounds running side by side ask for one token, not two.
    cache: Mutex<Option<CachedToken>>,
}

/// The credential in the form the token request needs.
enum Proof {
    Secret(String),
    Certificate {
        key: jsonwebtoken::EncodingKey,
        /// Base64url SHA-256 of the certificate's DER, the `x5t#S256` header that tells Entra which
        /// uploaded certificate to check the signature with.
        thumbprint_sha256: String,
    },
}

struct CachedToken {
    access_token: String,
    renew_at: Instant,
}

/// The claims of a client assertion (certificate-credentials.md).
#[derive(serde::Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

impl Authenticator {
    pub(super) fn new(settings: &GraphSettings) -> Result<Self, Error> {
        let mut token_url = settings.authority_url.clone();
        token_url
            .path_segments_mut()
            .map_err(|()| Error::InsecureUrl {
                url: settings.authority_url.to_string(),
            })?
            .pop_if_empty()
            .extend([settings.tenant_id.as_str(), "oauth2", "v2.0", "token"]);
        let scope = format!("{}/.default", settings.graph_url.as_str().trim_end_matches('/'));
        let proof = match &settings.credential {
            Credential::Secret(secret) => Proof::Secret(secret.clone()),
            Credential::Certificate {
                certificate_pem,
                private_key_pem,
            } => Proof::Certificate {
                key: jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).map_err(
                    |error| Error::Certificate {
                        reason: format!("the private key is not a PEM RSA key ({error})"),
                    },
                )?,
                thumbprint_sha256: URL_SAFE_NO_PAD.encode(Sha256::digest(certificate_der(certificate_pem)?)),
            },
        };
        Ok(Authenticator {
            token_url,
            scope,
            client_id: settings.client_id.clone(),
            proof,
            cache: Mutex::new(None),
        })
    }

    /// The cached access token, or a new one when there is none or it is close to expiry.
    pub(super) async fn token(&self, transport: &Transport) -> Result<String, Error> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref()
            && Instant::now() < cached.renew_at
        {
            return Ok(cached.access_token.clone());
        }
        let requested_at = Instant::now();
        let response = self.request_token(transport).await?;
        // Short-lived tokens (the emulator's, say) would never be cached with the full margin.
        let lifetime = Duration::from_secs(response.expires_in);
        let margin = RENEWAL_MARGIN.min(lifetime / 2);
        tracing::debug!(expires_in = response.expires_in, "got an access token");
        *cache = Some(CachedToken {
            access_token: response.access_token.clone(),
            renew_at: requested_at + lifetime - margin,
        });
        Ok(response.access_token)
    }

    /// Drops `rejected` from the cache after Graph refused it, unless another round already
    /// replaced it.
    pub(super) async fn forget(&self, rejected: &str) {
        let mut cache = self.cache.lock().await;
        if cache
            .as_ref()
            .is_some_and(|cached| cached.access_token == rejected)
        {
            *cache = None;
        }
    }

    async fn request_token(&self, transport: &Transport) -> Result<TokenResponse, Error> {
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ];
        match &self.proof {
            Proof::Secret(secret) => form.push(("client_secret", secret.clone())),
            Proof::Certificate {
                key,
                thumbprint_sha256,
            } => {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ));
                form.push(("client_assertion", self.assertion(key, thumbprint_sha256)?));
            }
        }
        let reply = transport
            .send(&self.token_url, |http| {
                http.post(self.token_url.clone()).form(&form)
            })
            .await?;
        if reply.status.is_success() {
            return serde_json::from_slice(&reply.body).map_err(|error| Error::TokenEndpoint {
                url: self.token_url.to_string(),
                status: reply.status.as_u16(),
                body: format!("not a token response: {error}"),
            });
        }
        match serde_json::from_slice::<TokenErrorBody>(&reply.body) {
            Ok(body) => Err(body.into_error(reply.status.as_u16())),
            Err(_) => Err(Error::TokenEndpoint {
                url: self.token_url.to_string(),
                status: reply.status.as_u16(),
                body: String::from_utf8_lossy(&reply.body).chars().take(200).collect(),
            }),
        }
    }

    /// A fresh client assertion: PS256 with `x5t#S256`, as Microsoft's current docs ask.
    fn assertion(&self, key: &jsonwebtoken::EncodingKey, thumbprint_sha256: &str) -> Result<String, Error> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
        header.x5t_s256 = Some(thumbprint_sha256.to_owned());
        let now = crate::clock::now().timestamp();
        let claims = AssertionClaims {
            aud: self.token_url.as_str(),
            iss: &self.client_id,
            sub: &self.client_id,
            jti: format!("{:016x}{:016x}", random_u64(), random_u64()),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECONDS,
        };
        jsonwebtoken::encode(&header, &claims, key).map_err(|error| Error::Certificate {
            reason: format!("signing the client assertion failed ({error})"),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// A self-signed certificate, its key, its DER and public key, made by the `openssl` CLI so
    /// the PEM reading is checked against another implementation. `None` without openssl.
    fn openssl_certificate(dir: &std::path::Path) -> Option<(String, String, Vec<u8>, Vec<u8>)> {
        let run = |args: &[&str]| {
            Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .is_ok_and(|output| output.status.success())
        };
        let made = run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=entra-sync-test",
        ]) && run(&["x509", "-in", "cert.pem", "-outform", "der", "-out", "cert.der"])
            && run(&[
                "x509",
                "-in",
                "cert.pem",
                "-pubkey",
                "-noout",
                "-out",
                "public.pem",
            ]);
        if !made {
            eprintln!("skipped: the openssl CLI is not available to make a test certificate");
            return None;
        }
        let read = |name: &str| std::fs::read(dir.join(name)).expect("openssl wrote the file");
        Some((
            String::from_utf8(read("cert.pem")).expect("PEM is text"),
            String::from_utf8(read("key.pem")).expect("PEM is text"),
            read("cert.der"),
            read("public.pem"),
        ))
    }

    #[test]
    fn the_client_assertion_is_a_ps256_jwt_for_the_token_endpoint() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let Some((certificate_pem, private_key_pem, der, public_pem)) = openssl_certificate(dir.path())
        else {
            return;
        };
        let settings = GraphSettings {
            authority_url: Url::parse("https://login.microsoftonline.com/").expect("a URL"),
            graph_url: Url::parse("https://graph.microsoft.com").expect("a URL"),
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "app-id".into(),
            credential: Credential::Certificate {
                certificate_pem,
                private_key_pem,
            },
        };
        let authenticator = Authenticator::new(&settings).expect("the certificate is usable");
        assert_eq!(
            authenticator.token_url.as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(authenticator.scope, "https://graph.microsoft.com/.default");
        let Proof::Certificate {
            key,
            thumbprint_sha256,
        } = &authenticator.proof
        else {
            panic!("a certificate credential");
        };
        let assertion = authenticator.assertion(key, thumbprint_sha256).expect("signed");

        let header = jsonwebtoken::decode_header(&assertion).expect("a JWT header");
        assert_eq!(header.alg, jsonwebtoken::Algorithm::PS256);
        assert_eq!(
            header.x5t_s256,
            Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)))
        );
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::PS256);
        validation.set_audience(&[authenticator.token_url.as_str()]);
        validation.set_issuer(&["app-id"]);
        validation.validate_nbf = true;
        let public_key = jsonwebtoken::DecodingKey::from_rsa_pem(&public_pem).expect("a public key");
        let claims = jsonwebtoken::decode::<serde_json::Value>(&assertion, &public_key, &validation)
            .expect("the signature and claims verify")
            .claims;
        assert_eq!(claims["sub"], "app-id");
        assert_eq!(
            claims["exp"].as_i64(),
            claims["nbf"].as_i64().map(|nbf| nbf + 600)
        );
        let again = authenticator.assertion(key, thumbprint_sha256).expect("signed");
        let jti = |jwt: &str| {
            jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(jwt)
                .expect("a JWT")
                .claims["jti"]
                .clone()
        };
        assert_ne!(jti(&assertion), jti(&again), "jti must be unique per assertion");
    }
}
