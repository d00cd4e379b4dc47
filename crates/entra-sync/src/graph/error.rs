//! `graph::Error`: every way talking to Entra and Graph can fail, each rendered as one line that
//! names the problem and the fix, with the stable code kept in a field for callers to match on.

/// A failure of the Graph client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL would carry the credential or tokens in clear text.
    #[error(
        "{url} is plain http: use https (plain http is allowed only for loopback hosts such as 127.0.0.1): fix authority_url/graph_url"
    )]
    InsecureUrl { url: String },

    /// The certificate or private key could not be used to sign a client assertion.
    #[error(
        "the certificate credential cannot be used: {reason}: give a PEM certificate and its PEM RSA private key"
    )]
    Certificate { reason: String },

    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot set up the HTTP client: {cause}")]
    HttpClient { cause: String },

    /// The token endpoint refused the request with an OAuth error.
    #[error("{}", token_advice(*aadsts, error, description))]
    Token {
        /// HTTP status of the token response.
        status: u16,
        /// The OAuth `error`, such as `invalid_client`.
        error: String,
        /// The first AADSTS number of `error_codes`, the stable code.
        aadsts: Option<u64>,
        /// The first line of `error_description`.
        description: String,
    },

    /// The token endpoint answered something that is not OAuth.
    #[error(
        "the token endpoint {url} answered {status} without an OAuth error ({body}): check authority_url"
    )]
    TokenEndpoint { url: String, status: u16, body: String },

    /// No connection, or it broke, on every attempt.
    #[error("cannot reach {url}: {cause}: check authority_url/graph_url and the network")]
    Unreachable { url: String, cause: String },

    /// 429, 503 or 504 on every attempt.
    #[error("Graph kept throttling/unavailable ({status} on {url}, {attempts} attempts); try again later")]
    Unavailable { url: String, status: u16, attempts: u32 },

    /// Graph refused for lack of permission (403 `Authorization_RequestDenied`).
    #[error(
        "missing application permission ({code} on {url}): grant User.Read.All and GroupMember.Read.All (Application) and admin consent"
    )]
    PermissionDenied { url: String, code: String },

    /// Graph no longer knows the delta state: expired, reset (410) or malformed. The caller drops
    /// its delta links and reads everything again.
    #[error(
        "Graph rejected the delta link ({status} {code}: {message}): the sync state expired or was reset; a full read is needed"
    )]
    DeltaReset {
        status: u16,
        code: String,
        message: String,
    },

    /// A stored delta link does not belong to the configured `graph_url` (it was changed, or the
    /// link is damaged); it cannot be used, so the caller reads everything again.
    #[error("the stored delta link {link} does not belong to graph_url {graph_url}: a full read is needed")]
    StoredLinkMismatch { link: String, graph_url: String },

    /// A page pointed the round at another host, which would receive the access token.
    #[error(
        "Graph sent a link outside graph_url ({link}): refusing to send the token there; check graph_url"
    )]
    ForeignLink { link: String },

    /// A page was unreadable twice in a row (cut short, not JSON, or missing `value`).
    #[error("Graph sent an unreadable page from {url}: {reason}; try again later")]
    InvalidBody { url: String, reason: String },

    /// A delta page ended a round wrongly (both links or neither): the round cannot be trusted.
    #[error(
        "Graph sent a delta page from {url} with {problem}: the round was not read to its end; try again"
    )]
    BrokenRound { url: String, problem: &'static str },

    /// Any other Graph error.
    #[error("Graph answered {status} {code} to GET {url}: {message}; {}", graph_advice(*status))]
    Graph {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
}

impl Error {
    /// Graph's code when it refused the request as not allowed (HTTP 403: a permission the app
    /// lacks, or a licence the tenant lacks), for reads a sync can do without.
    pub fn refused_code(&self) -> Option<&str> {
        match self {
            Error::PermissionDenied { code, .. } => Some(code),
            Error::Graph {
                status: 403, code, ..
            } => Some(code),
            _ => None,
        }
    }

    /// True when the delta links must be discarded and the next round started with
    /// `DeltaStart::Full`.
    pub fn is_delta_reset(&self) -> bool {
        matches!(self, Error::DeltaReset { .. } | Error::StoredLinkMismatch { .. })
    }
}

/// The one-line advice for a token endpoint error, keyed on the AADSTS number because Microsoft
/// says never to react to the description text.
fn token_advice(aadsts: Option<u64>, error: &str, description: &str) -> String {
    let advice = match aadsts {
        Some(7000215) => {
            "the client secret is wrong: use the secret's Value, not its Secret ID (Certificates & secrets in the app registration)"
        }
        Some(7000222) => {
            "the client secret has expired: create a new secret (Certificates & secrets in the app registration) and update the config"
        }
        Some(700016) => {
            "the application was not found in the tenant: check client_id is the Application (client) ID and that the app is consented in that tenant"
        }
        Some(90002) => {
            "the tenant was not found: check tenant_id (the Directory (tenant) ID) and the cloud (authority_url)"
        }
        Some(70011) => {
            "the scope was refused: graph_url must be the Graph root of the tenant's cloud, such as https://graph.microsoft.com"
        }
        Some(7000218) => {
            "the token request carried no credential: set a client secret or a certificate for the connection"
        }
        Some(65001) => {
            "the app lacks consent in this tenant: grant admin consent for its API permissions (Enterprise applications > Permissions)"
        }
        Some(700027) => {
            "the client assertion signature failed: upload this certificate to the app registration (Certificates & secrets) or use its matching private key"
        }
        Some(500133) => "the client assertion is outside its valid time: check this machine's clock",
        _ => return format!("the token request was refused: {error}: {description}"),
    };
    let code = aadsts.unwrap_or_default();
    format!("AADSTS{code}: {advice}")
}

/// What to do about an otherwise unclassified Graph error.
fn graph_advice(status: u16) -> &'static str {
    if status >= 500 {
        "try again later"
    } else {
        "the request was refused; report this with the message above"
    }
}

/// A URL for messages and logs: delta and skip tokens are long and say nothing to a person.
pub(super) fn without_query(url: &url::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}
