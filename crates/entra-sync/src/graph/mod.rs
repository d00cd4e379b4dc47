//! The Microsoft Graph client: an app-only token (client secret or certificate), the users and
//! groups delta rounds with paging, `Retry-After`-honouring retries, and errors that say what to do.
//!
//! The wire semantics it follows are in `shared/design/GRAPH.md` (§1 token, §3 delta, §4
//! throttling). The parsing types are public in [`wire`] so the conformance test can hold them
//! against Microsoft's own sample bodies.

mod auth;
mod certificate;
mod client;
mod error;
pub mod permissions;
pub mod wire;

use std::fmt;

pub use certificate::certificate_not_after;
pub use client::{GraphClient, GroupMembers};
pub use error::Error;

/// Where a connection's tenant lives and how the app proves who it is.
#[derive(Clone, Debug)]
pub struct GraphSettings {
    /// The token authority root; tokens come from `{authority_url}/{tenant_id}/oauth2/v2.0/token`.
    pub authority_url: url::Url,
    /// The Graph root; requests go to `{graph_url}/v1.0/...`, and the token scope is
    /// `{graph_url}/.default`.
    pub graph_url: url::Url,
    /// The Directory (tenant) ID, or one of the tenant's domain names.
    pub tenant_id: String,
    /// The Application (client) ID of the app registration.
    pub client_id: String,
    /// The app's credential.
    pub credential: Credential,
}

/// The app registration's credential, already read from wherever the config points.
#[derive(Clone)]
pub enum Credential {
    /// A client secret's Value.
    Secret(String),
    /// A certificate uploaded to the app registration and its RSA private key, both PEM.
    Certificate {
        certificate_pem: String,
        private_key_pem: String,
    },
}

impl fmt::Debug for Credential {
    // The secret and the private key must never reach a log line, whatever prints the settings.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Secret(_) => formatter.write_str("Secret(<redacted>)"),
            Credential::Certificate { .. } => formatter.write_str("Certificate { <redacted> }"),
        }
    }
}

/// Where a delta round begins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeltaStart {
    /// Read every object: the first round, or after the stored link was rejected.
    Full,
    /// Continue from a `@odata.deltaLink` stored at the end of the previous round.
    From(String),
}

/// How a delta round ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundEnd {
    /// The `@odata.deltaLink` to start the next round from.
    pub delta_link: String,
    /// Pages read in this round.
    pub pages: u64,
}
