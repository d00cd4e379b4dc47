//! Test connection, for the API and the admin UI alike: whether the credential gets a token,
//! whether the token grants what a sync reads (and what the optional reads need), and when the
//! credential expires where that can be known.
//!
//! A certificate's expiry is its own `notAfter`, read from the file the connection signs with: no
//! request and no permission. A client secret's is the `endDateTime` of the app registration's
//! secret whose `hint` (its first three characters) matches ours, which needs
//! `Application.Read.All`; like the Microsoft data, an expiry that cannot be read is a warning
//! and never makes the test fail.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::{Connection, SecretSource};
use crate::graph::permissions;
use crate::graph::wire::PasswordCredential;
use crate::graph::{Credential, GraphClient};
use crate::sync;

/// A credential expiring within this many days is highlighted, so there is time to make a new
/// one and roll it out before the sync stops.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// What Test connection found.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionTest {
    /// A token was granted, with the permissions a sync needs (as far as the token says).
    pub ok: bool,
    /// Why there is no token; `None` when there is one.
    pub token_error: Option<String>,
    /// The permissions the token grants; `None` without a token, or when it lists none.
    pub permissions: Option<Permissions>,
    pub secret_expiry: SecretExpiry,
}

/// The application permissions a token grants, against those a sync and the optional reads need.
#[derive(Debug, Clone, Serialize)]
pub struct Permissions {
    pub granted: Vec<String>,
    /// Required to sync: the test fails without them.
    pub missing: Vec<&'static str>,
    /// What the Microsoft data and the secret's expiry also need.
    pub optional_missing: Vec<&'static str>,
}

/// When the connection's credential expires, or why that is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretExpiry {
    pub source: ExpirySource,
    pub state: ExpiryState,
    /// RFC 3339, in UTC; `None` when unknown.
    pub expires_at: Option<String>,
    /// Whole days until then, negative once past; `None` when unknown.
    pub days_left: Option<i64>,
    /// One line for an admin: why the expiry is unknown or uncertain, or that it is close.
    pub warning: Option<String>,
}

/// Where the expiry is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpirySource {
    /// The certificate's `notAfter`, read from the certificate file.
    Certificate,
    /// The matching client secret's `endDateTime` in the app registration, read from Graph.
    AppRegistration,
}

/// How the expiry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryState {
    /// More than [`EXPIRY_WARNING_DAYS`] days left.
    Valid,
    /// Fewer days left than that.
    Expiring,
    /// The end date is past: Entra refuses the credential.
    Expired,
    /// Not known; `warning` says why.
    Unknown,
}

impl SecretExpiry {
    fn unknown(source: ExpirySource, warning: String) -> SecretExpiry {
        SecretExpiry {
            source,
            state: ExpiryState::Unknown,
            expires_at: None,
            days_left: None,
            warning: Some(warning),
        }
    }

    /// The expiry `expires_at` as seen at `now`; `note` is said first in the warning (an
    /// ambiguous match, say).
    fn known(
        source: ExpirySource,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        note: Option<String>,
    ) -> SecretExpiry {
        let days_left = (expires_at - now).num_seconds().div_euclid(24 * 3600);
        let state = if expires_at <= now {
            ExpiryState::Expired
        } else if days_left < EXPIRY_WARNING_DAYS {
            ExpiryState::Expiring
        } else {
            ExpiryState::Valid
        };
        let date = expires_at.format("%Y-%m-%d");
        let renew = match source {
            ExpirySource::Certificate => {
                "make a new certificate, upload it to the app registration (Certificates & secrets) and point certificate_file and private_key_file at it"
            }
            ExpirySource::AppRegistration => {
                "create a new client secret in the app registration (Certificates & secrets) and give it to the connection"
            }
        };
        let what = match source {
            ExpirySource::Certificate => "the certificate",
            ExpirySource::AppRegistration => "the client secret",
        };
        let urgent = match state {
            ExpiryState::Expired => Some(format!("{what} expired on {date}: {renew}")),
            ExpiryState::Expiring => Some(format!(
                "{what} expires on {date}, in {days_left} days: {renew} before then"
            )),
            ExpiryState::Valid | ExpiryState::Unknown => None,
        };
        let warning = match (note, urgent) {
            (Some(note), Some(urgent)) => Some(format!("{note}; {urgent}")),
            (note, urgent) => note.or(urgent),
        };
        SecretExpiry {
            source,
            state,
            expires_at: Some(expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
            days_left: Some(days_left),
            warning,
        }
    }
}

/// Where a credential's expiry comes from, once the credential is read.
enum ExpiryLookup {
    /// Read from the certificate already.
    Certificate(SecretExpiry),
    /// To be read from the app registration, matching this secret.
    Secret(String),
}

impl ExpiryLookup {
    /// The expiry as far as it is known without a token.
    fn without_token(&self) -> SecretExpiry {
        match self {
            ExpiryLookup::Certificate(expiry) => expiry.clone(),
            ExpiryLookup::Secret(_) => SecretExpiry::unknown(
                ExpirySource::AppRegistration,
                "without a token the app registration cannot be read, so the secret's expiry is unknown"
                    .to_owned(),
            ),
        }
    }
}

/// Tests a connection at `now`: its token, the token's permissions and its credential's expiry.
pub async fn test(connection: &Connection, now: DateTime<Utc>) -> ConnectionTest {
    let credential = match sync::resolve_credential(connection) {
        Ok(credential) => credential,
        Err(error) => {
            let source = match connection.secret {
                SecretSource::Certificate { .. } => ExpirySource::Certificate,
                SecretSource::Inline(_) | SecretSource::Env(_) | SecretSource::File(_) => {
                    ExpirySource::AppRegistration
                }
            };
            let expiry = SecretExpiry::unknown(
                source,
                "the credential cannot be read, so its expiry is unknown".to_owned(),
            );
            return ConnectionTest::no_token(error.to_string(), expiry);
        }
    };
    // A certificate's expiry needs no token, so it is known even when the token is refused
    // (because the certificate expired, say).
    let lookup = match &credential {
        Credential::Certificate { certificate_pem, .. } => {
            ExpiryLookup::Certificate(certificate_expiry(certificate_pem, now))
        }
        Credential::Secret(secret) => ExpiryLookup::Secret(secret.clone()),
    };
    let client = match sync::graph_client_with(connection, credential) {
        Ok(client) => client,
        Err(error) => return ConnectionTest::no_token(error.to_string(), lookup.without_token()),
    };
    let roles = match client.granted_roles().await {
        Ok(roles) => roles,
        Err(error) => return ConnectionTest::no_token(error.to_string(), lookup.without_token()),
    };
    let permissions = roles.map(|granted| Permissions {
        missing: permissions::missing(&granted),
        optional_missing: permissions::missing_of(permissions::OPTIONAL, &granted),
        granted,
    });
    let secret_expiry = match lookup {
        ExpiryLookup::Certificate(expiry) => expiry,
        ExpiryLookup::Secret(secret) => app_registration_expiry(&client, &secret, now).await,
    };
    ConnectionTest {
        // Only a sync can tell when the token lists no roles: Graph enforces them either way.
        ok: permissions
            .as_ref()
            .is_none_or(|permissions| permissions.missing.is_empty()),
        token_error: None,
        permissions,
        secret_expiry,
    }
}

impl ConnectionTest {
    fn no_token(error: String, secret_expiry: SecretExpiry) -> ConnectionTest {
        ConnectionTest {
            ok: false,
            token_error: Some(error),
            permissions: None,
            secret_expiry,
        }
    }
}

fn certificate_expiry(certificate_pem: &str, now: DateTime<Utc>) -> SecretExpiry {
    match crate::graph::certificate_not_after(certificate_pem) {
        Ok(not_after) => SecretExpiry::known(ExpirySource::Certificate, not_after, now, None),
        Err(error) => SecretExpiry::unknown(
            ExpirySource::Certificate,
            format!("the certificate's expiry is unknown: {error}"),
        ),
    }
}

/// The expiry of our secret as the app registration lists it.
async fn app_registration_expiry(client: &GraphClient, secret: &str, now: DateTime<Utc>) -> SecretExpiry {
    let source = ExpirySource::AppRegistration;
    match client.own_password_credentials().await {
        Ok(Some(credentials)) => matching_expiry(&credentials, secret, now),
        Ok(None) => SecretExpiry::unknown(
            source,
            "the secret's expiry is unknown: this tenant has no app registration with the connection's client_id (404); a multi-tenant app's secrets are in its home tenant: see Certificates & secrets there".to_owned(),
        ),
        Err(error) => match error.refused_code() {
            Some(code) => SecretExpiry::unknown(
                source,
                format!(
                    "the secret's expiry is unknown: the app lacks Application.Read.All (403 {code} on its app registration): grant it as an Application permission with admin consent"
                ),
            ),
            None => SecretExpiry::unknown(source, format!("the secret's expiry is unknown: the app registration could not be read: {error}")),
        },
    }
}

/// The expiry of the registration's secret that is ours: the one whose `hint` is our secret's
/// first three characters. Several can share a hint; then which one is ours cannot be told, and
/// the earliest end date is the one that may stop the sync first.
fn matching_expiry(credentials: &[PasswordCredential], secret: &str, now: DateTime<Utc>) -> SecretExpiry {
    let source = ExpirySource::AppRegistration;
    let hint: String = secret.chars().take(3).collect();
    let matching: Vec<&PasswordCredential> = credentials
        .iter()
        .filter(|credential| credential.hint.as_deref() == Some(hint.as_str()))
        .collect();
    let earliest = matching
        .iter()
        .filter_map(|credential| credential.expires_at())
        .min();
    match (matching.len(), earliest) {
        (0, _) => SecretExpiry::unknown(
            source,
            format!(
                "the secret's expiry is unknown: none of the app registration's {} client secrets begins like the connection's",
                credentials.len()
            ),
        ),
        (_, None) => SecretExpiry::unknown(
            source,
            "the secret's expiry is unknown: the app registration gives the matching client secret no end date".to_owned(),
        ),
        (1, Some(end)) => SecretExpiry::known(source, end, now, None),
        (count, Some(end)) => SecretExpiry::known(
            source,
            end,
            now,
            Some(format!(
                "{count} of the app registration's client secrets begin like the connection's, so which one it uses cannot be told: the earliest end date of them is shown"
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(hint: &str, end: Option<&str>) -> PasswordCredential {
        PasswordCredential {
            hint: Some(hint.to_owned()),
            end_date_time: end.map(str::to_owned),
            ..PasswordCredential::default()
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a time")
            .with_timezone(&Utc)
    }

    #[test]
    fn the_secret_is_found_by_its_hint() {
        let now = at("2026-12-02T12:00:00Z");
        let credentials = [
            secret("old", Some("2027-06-01T00:00:00Z")),
            secret("abc", Some("2027-01-10T00:00:00Z")),
        ];
        let expiry = matching_expiry(&credentials, "abcdefgh", now);
        assert_eq!(expiry.state, ExpiryState::Valid);
        assert_eq!(expiry.expires_at.as_deref(), Some("2027-01-10T00:00:00Z"));
        assert_eq!(expiry.days_left, Some(38));
        assert_eq!(expiry.warning, None);

        let soon = matching_expiry(&credentials, "abcdefgh", at("2026-12-31T00:00:00Z"));
        assert_eq!((soon.state, soon.days_left), (ExpiryState::Expiring, Some(10)));
        let warning = soon.warning.expect("a warning");
        assert!(warning.contains("expires on 2027-01-10, in 10 days"), "{warning}");

        let past = matching_expiry(&credentials, "abcdefgh", at("2027-01-11T00:00:00Z"));
        assert_eq!((past.state, past.days_left), (ExpiryState::Expired, Some(-1)));
    }

    #[test]
    fn no_match_or_several_matches_are_said() {
        let now = at("2026-12-02T12:00:00Z");
        let none = matching_expiry(&[secret("xyz", Some("2027-01-10T00:00:00Z"))], "abcdefgh", now);
        assert_eq!(none.state, ExpiryState::Unknown);
        assert!(
            none.warning
                .expect("why")
                .contains("none of the app registration's 1 client secrets")
        );

        let several = [
            secret("abc", Some("2027-06-01T00:00:00Z")),
            secret("abc", Some("2027-02-01T00:00:00Z")),
        ];
        let expiry = matching_expiry(&several, "abcdefgh", now);
        assert_eq!(expiry.expires_at.as_deref(), Some("2027-02-01T00:00:00Z"));
        assert_eq!(expiry.state, ExpiryState::Valid);
        let warning = expiry.warning.expect("ambiguous");
        assert!(
            warning.starts_with("2 of the app registration's client secrets"),
            "{warning}"
        );
        assert!(
            !warning.contains("abc"),
            "the hint is part of the secret: {warning}"
        );
    }
}
