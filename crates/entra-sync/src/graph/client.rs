//! Requests to Graph: delta rounds page by page, the bearer token with one renewal on 401,
//! retries that honour `Retry-After`, and the mapping of Graph's error bodies.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use entra_sync_core::delta::{GroupDelta, UserDelta};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;
use url::Url;

use super::auth::Authenticator;
use super::error::without_query;
use super::wire::{
    AppRegistration, Page, PageLink, PasswordCredential, SubscribedSku, UserRegistration, UserSignIns,
    graph_error,
};
use super::{DeltaStart, Error, GraphSettings, RoundEnd};

/// The user properties the sync reads (GRAPH.md §5.1). Delta returns only what is selected.
const USER_SELECT: &str = "id,userPrincipalName,mail,displayName,givenName,surname,jobTitle,department,companyName,officeLocation,streetAddress,city,state,postalCode,country,businessPhones,mobilePhone,employeeId,userType,accountEnabled,assignedLicenses";

/// The group properties the sync reads; `members` turns on `members@delta` (GRAPH.md §3).
const GROUP_SELECT: &str = "displayName,description,mail,securityEnabled,groupTypes,members";

/// The group properties a one-group sync reads: those of the delta round, without the members,
/// which come from `/members` page by page.
const GROUP_OBJECT_SELECT: &str = "id,displayName,description,mail,securityEnabled,groupTypes";

/// Attempts at one request while Graph throttles or is unavailable (429, 503, 504).
const MAX_ATTEMPTS: u32 = 8;

/// Attempts at one request while the connection fails. Fewer than for throttling: a wrong host
/// or a closed port should be reported within seconds, not after minutes of backoff.
const MAX_CONNECTION_ATTEMPTS: u32 = 4;

/// The first backoff wait when Graph gives no `Retry-After`; it doubles per attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The longest backoff wait without `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A Microsoft Graph client for one app in one tenant. Cheap to clone: clones share the token
/// cache and the request counter, so the users and groups rounds can run side by side.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    auth: Authenticator,
    /// Where full users and groups rounds start.
    users_delta_url: Url,
    groups_delta_url: Url,
    /// Every link followed must be on this origin: the access token goes with the request.
    graph_origin: url::Origin,
    /// Where single objects are read (`{graph_url}/v1.0/users/{id}`).
    graph_url: Url,
    /// The app's Application (client) ID, to read its own registration.
    client_id: String,
}

/// Sends requests with retries and counts them.
pub(super) struct Transport {
    http: reqwest::Client,
    requests: AtomicU64,
}

/// A response read to its end.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
}

impl GraphClient {
    /// A client for `settings`. Refuses plain `http://` unless the host is loopback, since the
    /// secret and the tokens would otherwise cross the network in clear text.
    pub fn new(settings: GraphSettings) -> Result<Self, Error> {
        require_secure(&settings.authority_url)?;
        require_secure(&settings.graph_url)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("entra-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // Graph's own SDKs wait 100 s for a response; a large delta page can be slow.
            .timeout(Duration::from_secs(100))
            .build()
            .map_err(|error| Error::HttpClient {
                cause: error_chain(&error),
            })?;
        let auth = Authenticator::new(&settings)?;
        Ok(GraphClient {
            inner: Arc::new(Inner {
                transport: Transport {
                    http,
                    requests: AtomicU64::new(0),
                },
                auth,
                users_delta_url: first_delta_url(&settings.graph_url, "users", USER_SELECT)?,
                groups_delta_url: first_delta_url(&settings.graph_url, "groups", GROUP_SELECT)?,
                graph_origin: settings.graph_url.origin(),
                graph_url: settings.graph_url.clone(),
                client_id: settings.client_id.clone(),
            }),
        })
    }

    /// Gets an access token (or finds one cached), proving the tenant, app and credential work.
    pub async fn check_token(&self) -> Result<(), Error> {
        self.inner.auth.token(&self.inner.transport).await.map(drop)
    }

    /// The application permissions the tenant granted the app, as a fresh (or cached) access
    /// token's `roles` claim lists them; `None` when the token does not say.
    pub async fn granted_roles(&self) -> Result<Option<Vec<String>>, Error> {
        let token = self.inner.auth.token(&self.inner.transport).await?;
        Ok(super::permissions::token_roles(&token))
    }

    /// HTTP requests sent so far, token requests and retries included.
    pub fn requests(&self) -> u64 {
        self.inner.transport.requests.load(Ordering::Relaxed)
    }

    /// Reads one users delta round, handing each page's entries to `on_page` as it arrives.
    pub async fn users_delta(
        &self,
        start: DeltaStart,
        on_page: impl FnMut(Vec<UserDelta>) + Send,
    ) -> Result<RoundEnd, Error> {
        self.delta_round("users", &self.inner.users_delta_url, start, on_page)
            .await
    }

    /// Reads one groups delta round (with `members@delta`), handing each page's entries to
    /// `on_page` as it arrives. A large group may appear on several pages.
    pub async fn groups_delta(
        &self,
        start: DeltaStart,
        on_page: impl FnMut(Vec<GroupDelta>) + Send,
    ) -> Result<RoundEnd, Error> {
        self.delta_round("groups", &self.inner.groups_delta_url, start, on_page)
            .await
    }

    async fn delta_round<T: DeserializeOwned + Send>(
        &self,
        resource: &'static str,
        first_url: &Url,
        start: DeltaStart,
        mut on_page: impl FnMut(Vec<T>) + Send,
    ) -> Result<RoundEnd, Error> {
        let mut url = match start {
            DeltaStart::Full => first_url.clone(),
            DeltaStart::From(link) => match Url::parse(&link) {
                Ok(url) if url.origin() == self.inner.graph_origin => url,
                _ => {
                    return Err(Error::StoredLinkMismatch {
                        link: shorten(&link),
                        graph_url: self.inner.graph_origin.ascii_serialization(),
                    });
                }
            },
        };
        let mut pages = 0;
        loop {
            let page: Page<T> = self.get_json(&url).await?;
            pages += 1;
            let (entries, link) = page.into_delta_parts().map_err(|problem| Error::BrokenRound {
                url: without_query(&url),
                problem,
            })?;
            tracing::debug!(resource, page = pages, entries = entries.len(), "delta page");
            on_page(entries);
            match link {
                PageLink::Next(next) => {
                    url = match Url::parse(&next) {
                        Ok(next) if next.origin() == self.inner.graph_origin => next,
                        _ => return Err(Error::ForeignLink { link: shorten(&next) }),
                    }
                }
                PageLink::Delta(delta_link) => {
                    tracing::debug!(resource, pages, "delta round complete");
                    return Ok(RoundEnd { delta_link, pages });
                }
            }
        }
    }

    /// One user by object id or UPN with the properties a sync reads, for a one-user sync;
    /// `None` when Entra has no such user (a wrong id, or deleted).
    pub async fn user(&self, id: &str) -> Result<Option<UserDelta>, Error> {
        let url = self.object_url(&["users", id], USER_SELECT)?;
        none_when_not_found(self.get_json(&url).await)
    }

    /// One group without its members, for a one-group sync; `None` when Entra has no such group.
    pub async fn group(&self, id: &str) -> Result<Option<GroupDelta>, Error> {
        let url = self.object_url(&["groups", id], GROUP_OBJECT_SELECT)?;
        none_when_not_found(self.get_json(&url).await)
    }

    /// A group's direct members, every page: the users with the properties a sync reads, and
    /// the ids of nested groups. `None` when Entra has no such group.
    pub async fn group_members(&self, id: &str) -> Result<Option<GroupMembers>, Error> {
        let mut url = self.object_url(&["groups", id, "members"], USER_SELECT)?;
        url.query_pairs_mut().append_pair("$top", "999");
        let mut members = GroupMembers::default();
        loop {
            let page: Page<serde_json::Value> = match none_when_not_found(self.get_json(&url).await)? {
                Some(page) => page,
                None => return Ok(None),
            };
            for member in page.value {
                match member.get("@odata.type").and_then(|kind| kind.as_str()) {
                    Some("#microsoft.graph.user") => {
                        let user: UserDelta =
                            serde_json::from_value(member).map_err(|error| Error::InvalidBody {
                                url: without_query(&url),
                                reason: error.to_string(),
                            })?;
                        members.users.push(user);
                    }
                    Some("#microsoft.graph.group") => {
                        if let Some(id) = member.get("id").and_then(|id| id.as_str()) {
                            members.groups.push(id.to_owned());
                        }
                    }
                    // Devices, service principals and contacts are not synced.
                    _ => {}
                }
            }
            match page.next_link {
                None => return Ok(Some(members)),
                Some(next) => {
                    url = match Url::parse(&next) {
                        Ok(next) if next.origin() == self.inner.graph_origin => next,
                        _ => return Err(Error::ForeignLink { link: shorten(&next) }),
                    }
                }
            }
        }
    }

    /// The licences the tenant bought, for their names (one request: the list is not paged).
    /// Needs `LicenseAssignment.Read.All`, `Organization.Read.All` or `Directory.Read.All`.
    pub async fn subscribed_skus(&self) -> Result<Vec<SubscribedSku>, Error> {
        let url = self.object_url(&["subscribedSkus"], "skuId,skuPartNumber")?;
        let page: Page<SubscribedSku> = self.get_json(&url).await?;
        Ok(page.value)
    }

    /// Every user's sign-in activity, at the largest page Graph allows for it (500). Needs
    /// `AuditLog.Read.All` and an Entra ID P1/P2 tenant; Graph throttles these reads harder than
    /// others, so the sync asks only in full runs.
    pub async fn sign_in_activity(&self) -> Result<Vec<UserSignIns>, Error> {
        let mut url = self.object_url(&["users"], "id,signInActivity")?;
        url.query_pairs_mut().append_pair("$top", "500");
        self.all_pages(url).await
    }

    /// The MFA registration report, one entry per user. Same requirements as sign-in activity.
    pub async fn mfa_registrations(&self) -> Result<Vec<UserRegistration>, Error> {
        let mut url = self.object_url(
            &["reports", "authenticationMethods", "userRegistrationDetails"],
            "",
        )?;
        // The report's page size and columns are Graph's defaults: no documented maximum to ask for.
        url.set_query(None);
        self.all_pages(url).await
    }

    /// The client secrets of the app's own registration, without their values; `None` when the
    /// tenant has no such registration (a multi-tenant app's lives in its home tenant). Needs
    /// `Application.Read.All` or a permission that includes it. Only `passwordCredentials` is
    /// selected: Graph limits reads that select `keyCredentials` to 150 a minute per tenant, and a
    /// certificate's expiry is read from the certificate itself.
    pub async fn own_password_credentials(&self) -> Result<Option<Vec<PasswordCredential>>, Error> {
        // An OData string key: a quote inside is doubled.
        let key = format!(
            "applications(appId='{}')",
            self.inner.client_id.replace('\'', "''")
        );
        let url = self.object_url(&[&key], "passwordCredentials")?;
        let registration: Option<AppRegistration> = none_when_not_found(self.get_json(&url).await)?;
        Ok(registration.map(|registration| registration.password_credentials))
    }

    /// Every page of a (non-delta) collection.
    async fn all_pages<T: DeserializeOwned>(&self, mut url: Url) -> Result<Vec<T>, Error> {
        let mut entries = Vec::new();
        loop {
            let page: Page<T> = self.get_json(&url).await?;
            entries.extend(page.value);
            match page.next_link {
                None => return Ok(entries),
                Some(next) => {
                    url = match Url::parse(&next) {
                        Ok(next) if next.origin() == self.inner.graph_origin => next,
                        _ => return Err(Error::ForeignLink { link: shorten(&next) }),
                    }
                }
            }
        }
    }

    /// `{graph_url}/v1.0/{segments}?$select=...`, each segment escaped.
    fn object_url(&self, segments: &[&str], select: &str) -> Result<Url, Error> {
        let mut url = self.inner.graph_url.clone();
        url.path_segments_mut()
            .map_err(|()| Error::InsecureUrl {
                url: self.inner.graph_url.to_string(),
            })?
            .pop_if_empty()
            .push("v1.0")
            .extend(segments);
        url.set_query(Some(&format!("$select={select}")));
        Ok(url)
    }

    /// GETs one JSON body (a page or an object). A 401 renews the token once (it may have been revoked or expired early);
    /// a body that does not parse is fetched once more before giving up, since a connection cut
    /// mid-body looks the same as garbage.
    async fn get_json<B: DeserializeOwned>(&self, url: &Url) -> Result<B, Error> {
        let mut renewed_token = false;
        let mut refetched = false;
        loop {
            let token = self.inner.auth.token(&self.inner.transport).await?;
            let reply = self
                .inner
                .transport
                .send(url, |http| {
                    http.get(url.clone())
                        .bearer_auth(&token)
                        .header(ACCEPT, "application/json")
                })
                .await?;
            if reply.status == StatusCode::UNAUTHORIZED && !renewed_token {
                tracing::info!(url = %without_query(url), "Graph refused the access token; getting a new one");
                self.inner.auth.forget(&token).await;
                renewed_token = true;
                continue;
            }
            if !reply.status.is_success() {
                return Err(graph_error(url, reply.status.as_u16(), &reply.body));
            }
            match serde_json::from_slice::<B>(&reply.body) {
                Ok(page) => return Ok(page),
                Err(error) if !refetched => {
                    tracing::warn!(url = %without_query(url), %error, "unreadable page; fetching it again");
                    refetched = true;
                }
                Err(error) => {
                    return Err(Error::InvalidBody {
                        url: without_query(url),
                        reason: error.to_string(),
                    });
                }
            }
        }
    }
}

impl Transport {
    /// Sends the request `build` makes (again on every attempt) and reads the whole body.
    /// 429, 503 and 504 are retried after `Retry-After`, or after an exponential backoff with
    /// jitter when Graph gives none; broken connections are retried after a backoff, and a body
    /// cut short once more.
    pub(super) async fn send(
        &self,
        url: &Url,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply, Error> {
        let (mut busy, mut broken, mut cut_short) = (0, 0, 0);
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let failure = match build(&self.http).send().await {
                Ok(response) if matches!(response.status().as_u16(), 429 | 503 | 504) => {
                    Failure::Busy(response.status(), retry_after(response.headers()))
                }
                Ok(response) => {
                    let status = response.status();
                    match response.bytes().await {
                        Ok(body) => {
                            return Ok(Reply {
                                status,
                                body: Vec::from(body),
                            });
                        }
                        Err(error) if error.is_body() && !error.is_timeout() => Failure::CutShort(error),
                        Err(error) => Failure::Broken(error),
                    }
                }
                Err(error) => Failure::Broken(error),
            };
            let wait = match failure {
                Failure::Busy(status, retry_after) => {
                    busy += 1;
                    if busy >= MAX_ATTEMPTS {
                        return Err(Error::Unavailable {
                            url: without_query(url),
                            status: status.as_u16(),
                            attempts: busy,
                        });
                    }
                    // Never earlier than Graph asks: an early retry is throttled again and
                    // counts against the app's limit.
                    let wait = retry_after.unwrap_or_else(|| backoff(busy));
                    tracing::warn!(
                        url = %without_query(url),
                        status = status.as_u16(),
                        wait_ms = wait.as_millis() as u64,
                        attempt = busy,
                        "Graph is throttling or unavailable; waiting"
                    );
                    wait
                }
                Failure::Broken(error) => {
                    broken += 1;
                    let cause = error_chain(&error);
                    if broken >= MAX_CONNECTION_ATTEMPTS {
                        return Err(Error::Unreachable {
                            url: without_query(url),
                            cause,
                        });
                    }
                    let wait = backoff(broken);
                    tracing::warn!(url = %without_query(url), %cause, wait_ms = wait.as_millis() as u64, attempt = broken, "request failed; retrying");
                    wait
                }
                Failure::CutShort(error) => {
                    cut_short += 1;
                    let reason = format!("the body was cut short ({})", error_chain(&error));
                    if cut_short >= 2 {
                        return Err(Error::InvalidBody {
                            url: without_query(url),
                            reason,
                        });
                    }
                    tracing::warn!(url = %without_query(url), %reason, "fetching it again");
                    backoff(cut_short)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A group's direct members as `group_members` reads them.
#[derive(Debug, Default)]
pub struct GroupMembers {
    pub users: Vec<UserDelta>,
    /// Nested groups' ids.
    pub groups: Vec<String>,
}

/// A 404 from Graph means the object does not exist; any other error stays one.
fn none_when_not_found<T>(result: Result<T, Error>) -> Result<Option<T>, Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::Graph { status: 404, .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Why an attempt did not produce a reply.
enum Failure {
    /// 429, 503 or 504, with the `Retry-After` wait if Graph gave one.
    Busy(StatusCode, Option<Duration>),
    /// No connection, or it broke or timed out.
    Broken(reqwest::Error),
    /// The response started but its body ended early.
    CutShort(reqwest::Error),
}

/// A random number for backoff jitter and assertion ids. `RandomState` is seeded per instance
/// from the OS, which is random enough for both and needs no extra dependency.
pub(super) fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// `{graph_url}/v1.0/{resource}/delta?$select=...`. No `$top`: delta rejects it and chooses its
/// own page size.
fn first_delta_url(graph_url: &Url, resource: &str, select: &str) -> Result<Url, Error> {
    let mut url = graph_url.clone();
    url.path_segments_mut()
        // Only URLs that cannot be a base fail here, and `require_secure` let only http(s) through.
        .map_err(|()| Error::InsecureUrl {
            url: graph_url.to_string(),
        })?
        .pop_if_empty()
        .extend(["v1.0", resource, "delta"]);
    url.set_query(Some(&format!("$select={select}")));
    Ok(url)
}

fn require_secure(url: &Url) -> Result<(), Error> {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(address)) => IpAddr::V4(address).is_loopback(),
        Some(url::Host::Ipv6(address)) => IpAddr::V6(address).is_loopback(),
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(Error::InsecureUrl { url: url.to_string() }),
    }
}

/// `Retry-After` as seconds (Graph sends fractions such as `2.128`) or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (date.with_timezone(&chrono::Utc) - crate::clock::now())
        .to_std()
        .ok()
}

/// Exponential backoff from `FIRST_BACKOFF`, capped, with up to 50% added at random so rounds
/// that failed together do not retry together.
fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(MAX_BACKOFF);
    let jitter_millis = random_u64() % (base.as_millis() as u64 / 2 + 1);
    base + Duration::from_millis(jitter_millis)
}

/// A link for messages, cut to a readable length.
fn shorten(link: &str) -> String {
    match link.char_indices().nth(120) {
        Some((end, _)) => format!("{}...", &link[..end]),
        None => link.to_owned(),
    }
}

/// An error and its causes on one line: reqwest's own text names only the URL, the cause
/// ("Connection refused") is further down the chain.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        error.to_string()
    } else {
        causes.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, retry_after.parse().expect("a header value"));
        headers
    }

    #[test]
    fn retry_after_reads_fractional_seconds_and_dates() {
        assert_eq!(retry_after(&headers("2.128")), Some(Duration::from_millis(2128)));
        assert_eq!(retry_after(&headers("10")), Some(Duration::from_secs(10)));
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&headers("-1")), None);
        let in_a_minute = (crate::clock::now() + chrono::Duration::seconds(60)).to_rfc2822();
        let wait = retry_after(&headers(&in_a_minute)).expect("a date");
        assert!(
            wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
    }

    #[test]
    fn backoff_doubles_from_half_a_second_with_bounded_jitter() {
        for (attempt, base_millis) in [(1, 500), (2, 1000), (3, 2000), (8, 30_000), (40, 30_000)] {
            let wait = backoff(attempt).as_millis() as u64;
            assert!(
                (base_millis..=base_millis * 3 / 2).contains(&wait),
                "{attempt}: {wait}"
            );
        }
    }

    #[test]
    fn rounds_can_run_on_other_tasks() {
        fn assert_send<T: Send>(_: &T) {}
        let client = GraphClient::new(GraphSettings {
            authority_url: Url::parse("https://login.microsoftonline.com").expect("a URL"),
            graph_url: Url::parse("https://graph.microsoft.com").expect("a URL"),
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "app-id".into(),
            credential: super::super::Credential::Secret("secret".into()),
        })
        .expect("a client");
        assert_send(&client.users_delta(DeltaStart::Full, |_| {}));
        assert_send(&client.groups_delta(DeltaStart::Full, |_| {}));
        assert_send(&client.check_token());
    }

    #[test]
    fn full_rounds_start_at_the_delta_url_with_select_and_no_top() {
        let root = Url::parse("https://graph.microsoft.us/").expect("a URL");
        assert_eq!(
            first_delta_url(&root, "groups", GROUP_SELECT)
                .expect("a URL")
                .as_str(),
            "https://graph.microsoft.us/v1.0/groups/delta?$select=displayName,description,mail,securityEnabled,groupTypes,members"
        );
        let prefixed = Url::parse("http://127.0.0.1:8080/graph").expect("a URL");
        let users = first_delta_url(&prefixed, "users", USER_SELECT).expect("a URL");
        assert!(
            users
                .as_str()
                .starts_with("http://127.0.0.1:8080/graph/v1.0/users/delta?$select=id,userPrincipalName,")
        );
    }

    #[test]
    fn plain_http_only_for_loopback() {
        for allowed in [
            "https://graph.microsoft.com",
            "http://127.0.0.1:9",
            "http://127.8.0.1",
            "http://[::1]:80",
            "http://localhost:1",
        ] {
            assert!(
                require_secure(&Url::parse(allowed).expect("a URL")).is_ok(),
                "{allowed}"
            );
        }
        for refused in [
            "http://example.com",
            "http://10.0.0.1",
            "ftp://127.0.0.1",
            "http://localhost.example.com",
        ] {
            let error = require_secure(&Url::parse(refused).expect("a URL")).expect_err(refused);
            assert!(matches!(error, Error::InsecureUrl { .. }), "{refused}");
        }
    }
}
