//! Graph's and the token endpoint's JSON bodies as the client reads them. Unknown fields are
//! ignored everywhere (`ext_expires_in`, `@odata.context`, `innerError` details), because Microsoft
//! adds fields without notice.

use serde::{Deserialize, Deserializer};
use url::Url;

use super::Error;
use super::error::without_query;

/// One page of a collection or a delta round: `{"value": [...], "@odata.nextLink"?, "@odata.deltaLink"?}`.
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    /// The page's entries. Required: a body without it was cut short or is not a page.
    pub value: Vec<T>,
    /// Where the next page of this round is.
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
    /// Where the next round starts; only on the last page of a delta round.
    #[serde(rename = "@odata.deltaLink", default)]
    pub delta_link: Option<String>,
}

/// Where a delta round goes after a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageLink {
    /// More pages follow at this link.
    Next(String),
    /// The round is complete; the next round starts at this link.
    Delta(String),
}

impl<T> Page<T> {
    /// Splits a delta page into its entries and where the round continues. Graph puts exactly one
    /// of the two links on every delta page; anything else means the read is broken, and
    /// treating it as the end would drop or invent changes.
    pub fn into_delta_parts(self) -> Result<(Vec<T>, PageLink), &'static str> {
        match (self.next_link, self.delta_link) {
            (Some(next), None) => Ok((self.value, PageLink::Next(next))),
            (None, Some(delta)) => Ok((self.value, PageLink::Delta(delta))),
            (Some(_), Some(_)) => Err("both @odata.nextLink and @odata.deltaLink"),
            (None, None) => Err("neither @odata.nextLink nor @odata.deltaLink"),
        }
    }
}

/// A successful token response (GRAPH.md §1.3).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    /// The bearer token. Never logged.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds. The v1 endpoint sent it as a string, so both forms are read.
    #[serde(deserialize_with = "seconds_number_or_string")]
    pub expires_in: u64,
}

/// A token endpoint error (GRAPH.md §1.4). React to `error_codes`, not to the description.
#[derive(Debug, Deserialize)]
pub struct TokenErrorBody {
    /// The OAuth error, such as `invalid_client`.
    pub error: String,
    /// Human text that starts with `AADSTSnnn:` and ends with trace lines.
    #[serde(default)]
    pub error_description: String,
    /// The AADSTS numbers, the stable part.
    #[serde(default)]
    pub error_codes: Vec<u64>,
}

/// A Graph error body: `{"error": {"code", "message", "innerError"}}`.
#[derive(Debug, Deserialize)]
pub struct GraphErrorBody {
    /// The error itself.
    pub error: GraphErrorDetail,
}

/// The inside of a Graph error body. Older and newer docs spell the keys differently, so the
/// variants seen are all accepted.
#[derive(Debug, Deserialize)]
pub struct GraphErrorDetail {
    /// The stable code, such as `Authorization_RequestDenied` or `syncStateNotFound`.
    #[serde(default, alias = "Code")]
    pub code: String,
    /// Human text.
    #[serde(default, alias = "Message")]
    pub message: String,
    /// Request id, date and sometimes a more specific code.
    #[serde(default, rename = "innerError", alias = "innererror", alias = "InnerError")]
    pub inner_error: Option<serde_json::Value>,
}

impl TokenErrorBody {
    /// The client's error for this body, keyed on the first AADSTS number.
    pub fn into_error(self, status: u16) -> Error {
        Error::Token {
            status,
            error: self.error,
            aadsts: self.error_codes.first().copied(),
            description: self
                .error_description
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

/// One entry of `GET /subscribedSkus`: a licence the tenant bought.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribedSku {
    pub sku_id: String,
    /// The licence's name as Microsoft's admin centres show it, such as `ENTERPRISEPACK`.
    pub sku_part_number: String,
}

/// A user's sign-in activity, from `GET /users?$select=id,signInActivity`.
#[derive(Debug, Deserialize)]
pub struct UserSignIns {
    pub id: String,
    #[serde(rename = "signInActivity", default)]
    pub sign_in_activity: Option<SignInActivity>,
}

/// The parts of `signInActivity` the sync keeps. Graph writes `0001-01-01T00:00:00Z` for never.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SignInActivity {
    pub last_sign_in_date_time: Option<String>,
    pub last_non_interactive_sign_in_date_time: Option<String>,
}

impl SignInActivity {
    /// The latest sign-in, interactive or not: a user on a long-lived session or a service
    /// account signs in only non-interactively, and showing "never" for them would mislead an
    /// admin looking for inactive accounts. `None` when Entra has none on record.
    pub fn latest(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        [
            &self.last_sign_in_date_time,
            &self.last_non_interactive_sign_in_date_time,
        ]
        .into_iter()
        .flatten()
        .filter_map(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.with_timezone(&chrono::Utc))
        .filter(|time| chrono::Datelike::year(time) > 1)
        .max()
    }
}

/// An entry of the MFA registration report (`/reports/authenticationMethods/userRegistrationDetails`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistration {
    pub id: String,
    #[serde(default)]
    pub is_mfa_registered: Option<bool>,
}

/// The app registration's client secrets, from
/// `GET /applications(appId='…')?$select=passwordCredentials`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppRegistration {
    #[serde(default)]
    pub password_credentials: Vec<PasswordCredential>,
}

/// One client secret of an app registration (Graph's `passwordCredential`), without its value,
/// which Graph never answers again after it was made.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PasswordCredential {
    pub key_id: Option<String>,
    pub display_name: Option<String>,
    /// The secret's first three characters: the only way to tell which secret is ours.
    pub hint: Option<String>,
    pub end_date_time: Option<String>,
}

impl PasswordCredential {
    /// When the secret expires; `None` when Graph gives no date or one that does not parse.
    pub fn expires_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let text = self.end_date_time.as_deref()?;
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| time.with_timezone(&chrono::Utc))
    }
}

/// Classifies a Graph error response to a GET of `url` (GRAPH.md §3 and §4): the delta reset
/// class, a missing permission, or any other error with its code and message.
pub fn graph_error(url: &Url, status: u16, body: &[u8]) -> Error {
    let (code, message) = match serde_json::from_slice::<GraphErrorBody>(body) {
        Ok(body) => (body.error.code, body.error.message),
        Err(_) => (
            String::new(),
            String::from_utf8_lossy(body).chars().take(200).collect(),
        ),
    };
    let message = message.lines().next().unwrap_or_default().to_owned();
    let reset_code = ["syncStateNotFound", "resyncRequired"]
        .iter()
        .any(|reset| code.eq_ignore_ascii_case(reset));
    let is_delta_url = url.path().ends_with("/delta") || url.path().ends_with("/delta()");
    let reset = status == 410
        || ((400..500).contains(&status) && reset_code)
        || (status == 400 && is_delta_url && message.trim() == "Badly formed token.");
    if reset {
        return Error::DeltaReset {
            status,
            code,
            message,
        };
    }
    if status == 403 && code.eq_ignore_ascii_case("Authorization_RequestDenied") {
        return Error::PermissionDenied {
            url: without_query(url),
            code,
        };
    }
    Error::Graph {
        url: without_query(url),
        status,
        code,
        message,
    }
}

fn seconds_number_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seconds {
        Number(u64),
        Text(String),
    }
    match Seconds::deserialize(deserializer)? {
        Seconds::Number(seconds) => Ok(seconds),
        Seconds::Text(text) => text.trim().parse().map_err(serde::de::Error::custom),
    }
}
