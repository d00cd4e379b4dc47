//! Offline Microsoft Graph and Entra token endpoint: a real HTTP server on loopback that tests, the
//! `entra-sync demo` and `bench` commands and `entra-sync emulator` talk to instead of a tenant.
//!
//! The wire semantics follow `../shared/design/GRAPH.md`. Nothing here is shared with the project's
//! Graph client, so a misreading of Graph cannot hide on both sides.
//!
//! # Endpoints
//!
//! - `POST /{tenant}/oauth2/v2.0/token`: client credentials with a secret (form or Basic) or a
//!   certificate assertion (RS256 + `x5t` or PS256 + `x5t#S256`), with Entra's error bodies.
//! - `GET /v1.0/users`, `/users/{id|upn}`, `/users/delta`, `/groups`, `/groups/{id}`,
//!   `/groups/{id}/members`, `/groups/{id}/transitiveMembers`, `/groups/delta`, `/subscribedSkus`;
//!   `/directory/deletedItems/microsoft.graph.user` (and `.group`, always empty: groups are deleted
//!   for good); `/reports/authenticationMethods/userRegistrationDetails`;
//!   `/applications(appId='{client_id}')`, the app's registration with its client secret as a
//!   `passwordCredential` (`hint`: the secret's first three characters; `startDateTime`: the
//!   emulator's start; `endDateTime`: two years later, or what `PUT app/secret-expiry` set), 404
//!   `Request_ResourceNotFound` for another app id; `POST /v1.0/$batch` with up to 20 of those
//!   GETs.
//! - Permissions are enforced from the token's `roles` as Graph does: `subscribedSkus` needs
//!   `LicenseAssignment.Read.All` (or Organization/Directory.Read.All), else 403
//!   `Authorization_RequestDenied`; `signInActivity` and `userRegistrationDetails` need
//!   `AuditLog.Read.All` (403 `Authentication_MSGraphPermissionMissing`) and a premium tenant (403
//!   `Authentication_RequestFromNonPremiumTenantOrB2CTenant`); the app registration needs
//!   `Application.Read.All` (or Application.ReadWrite.All, Directory.Read.All,
//!   Directory.ReadWrite.All), else 403 `Authorization_RequestDenied`.
//!
//! # Control API (`/_emulator/`, JSON, no auth)
//!
//! | Route | Effect |
//! |---|---|
//! | `GET users` | every user, Graph-shaped with all properties, plus `state`: `active`, `soft_deleted` or `deleted`, and `isMfaRegistered` |
//! | `POST users` | create from Graph-shaped JSON (`id` optional) → 201 and the user |
//! | `PATCH users/{id}` | update some properties (`null` clears); `signInActivity` `{"lastSignInDateTime"}` and `isMfaRegistered` change no delta |
//! | `POST users/{id}/disable`, `enable`, `soft-delete`, `restore` | lifecycle |
//! | `DELETE users/{id}` | delete for good |
//! | `GET groups` | `[{"id","displayName","description","memberIds"}]` |
//! | `POST groups`, `PATCH groups/{id}`, `DELETE groups/{id}` | create (`{"displayName","description"?,"memberIds"?}`), rename, delete |
//! | `POST groups/{id}/members` `{"id"}`, `DELETE groups/{id}/members/{member}` | membership |
//! | `POST faults` `{"kind","share"?,"count"?,"retry_after"?,"path_contains"?}`, `DELETE faults` | script faults: `throttle`, `service_unavailable`, `gateway_timeout`, `delta_reset`, `truncated_body`, `replay_page`, `empty_page` |
//! | `POST clock` `{"advance_seconds"}` | move the emulated clock (token expiry, soft-delete purge) |
//! | `POST secret/expire` | the client secret is expired from now on (AADSTS7000222) |
//! | `PUT app/secret-expiry` `{"endDateTime"}` | when the client secret expires: the registration's `endDateTime`, and from then on the token endpoint refuses the secret (AADSTS7000222) |
//! | `PUT app/roles` `["User.Read.All", …]` | the permissions granted to the app; tokens issued afterwards carry them |
//! | `PUT tenant/premium` `{"premium"}` | whether the tenant has an Entra ID P1/P2 licence |
//! | `POST churn` `{"events"}` | hires, leavers, moves, new titles, disabled accounts → `{"events":[lines]}` |
//! | `GET requests` | the last 100,000 token and Graph requests: `at_ms`, `method`, `path`, `status`, `retry_after` |
//! | `GET stats`, `DELETE stats` | `{"total","by_endpoint"}`; reset with the log |
//! | `GET tenant` | the tenant as a fixture (what `EmulatorOptions::fixture` loads) |

//!
//! # Simplifications, on purpose
//!
//! - Only the app+tenant resource-unit bucket is modelled (not the per-app 150,000 RU / 20 s
//!   limit, nor write quotas: Graph is read-only here). A throttled request costs nothing, so a
//!   client that waits `Retry-After` is served.
//! - Groups are deleted for good at once (`@removed` `deleted`), as security groups are.
//! - `$orderby` is refused; `$expand` is refused on collections; members accept no `$filter`.
//! - Graph's address `state` property is never set: `state` in control JSON is the lifecycle.
//! - A removed manager shows as `"manager@delta": []`.
//! - The app registration is served by app id only (not `/applications/{id}` nor the list), with
//!   one client secret and `keyCredentials` always empty: a registered certificate is not listed,
//!   since the emulator does not read certificates' dates.

// Handlers answer with an axum `Response` on both paths; boxing the error side of a test server's
// `Result`s would only add noise.
#![allow(clippy::result_large_err)]

mod application;
mod batch;
mod churn;
mod clock;
mod collections;
mod control;
mod delta;
mod faults;
mod generate;
mod json;
mod model;
mod query;
mod render;
mod server;
mod throttle;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

/// Objects per page of a users or groups delta round.
pub const DELTA_PAGE_SIZE: usize = 999;

/// `members@delta` references per groups delta page; a group with more is split over several pages
/// and repeated on each, as Graph does with large groups. Graph documents no number. At about 20
/// members per group this keeps a full groups round near `groups / DELTA_PAGE_SIZE` pages (the
/// bench's minimum page count) while a page stays around 2 MB.
pub const MEMBERS_PER_DELTA_PAGE: usize = 20_000;

/// How to start an emulator: the app registration it accepts, the tenant it serves and its faults.
#[derive(Clone, Debug)]
pub struct EmulatorOptions {
    /// The tenant id accepted in the token endpoint path.
    pub tenant_id: String,
    /// The one registered application.
    pub client_id: String,
    /// That application's client secret value.
    pub client_secret: String,
    /// Users to generate (ignored with `fixture`).
    pub users: usize,
    /// Groups to generate (ignored with `fixture`).
    pub groups: usize,
    /// Seed of the generated tenant, of `share` faults and of churn.
    pub seed: u64,
    /// Load the tenant from this JSON fixture instead of generating it.
    pub fixture: Option<PathBuf>,
    /// Milliseconds added to every Graph request.
    pub latency_ms: u64,
    /// Turns on the resource-unit throttling model of GRAPH.md §4.3.
    pub throttle: bool,
    /// Background churn events per minute (0 = none).
    pub churn_per_minute: u32,
    /// How long a delta token stays valid.
    pub delta_token_lifetime: Duration,
    /// How long an access token stays valid (`expires_in`).
    pub access_token_lifetime: Duration,
    /// A registered certificate (PEM) for `client_assertion` authentication.
    pub certificate_pem: Option<String>,
    /// The application permissions granted to the app, carried in its tokens' `roles`.
    pub roles: Vec<String>,
    /// Whether the tenant has an Entra ID P1/P2 licence; without one, sign-in activity and the
    /// MFA registration report answer 403.
    pub premium: bool,
}

/// What [`EmulatorOptions::default`] grants: what a sync needs, plus what licence names
/// (`LicenseAssignment.Read.All`), sign-in and MFA data (`AuditLog.Read.All`) and the client
/// secret's expiry (`Application.Read.All`) need.
pub const DEFAULT_ROLES: &[&str] = &[
    "User.Read.All",
    "GroupMember.Read.All",
    "LicenseAssignment.Read.All",
    "AuditLog.Read.All",
    "Application.Read.All",
];

impl Default for EmulatorOptions {
    fn default() -> EmulatorOptions {
        EmulatorOptions {
            tenant_id: "00000000-0000-0000-0000-000000000001".to_owned(),
            client_id: "00000000-0000-0000-0000-000000000002".to_owned(),
            client_secret: "emulator-secret-value".to_owned(),
            users: 100,
            groups: 10,
            seed: 1,
            fixture: None,
            latency_ms: 0,
            throttle: false,
            churn_per_minute: 0,
            delta_token_lifetime: Duration::from_secs(7 * 24 * 3600),
            access_token_lifetime: Duration::from_secs(3599),
            certificate_pem: None,
            roles: DEFAULT_ROLES.iter().map(|role| (*role).to_owned()).collect(),
            premium: true,
        }
    }
}

/// A started emulator. Dropping it without `shutdown` leaves the server running until the runtime
/// stops.
pub struct RunningEmulator {
    url: String,
    state: Arc<server::AppState>,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
    churn: Option<tokio::task::JoinHandle<()>>,
}

/// Starts an emulator listening on `listen` (port 0 picks a free port).
pub async fn start(options: EmulatorOptions, listen: SocketAddr) -> anyhow::Result<RunningEmulator> {
    let directory = match &options.fixture {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the fixture {}", path.display()))?;
            model::Directory::from_fixture(&text)
                .with_context(|| format!("cannot load the fixture {}", path.display()))?
        }
        None => generate::tenant(options.users, options.groups, options.seed),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr().context("the listener has no address")?;
    let url = format!("http://{address}");
    let state = Arc::new(server::AppState::new(options, directory, url.clone())?);
    let router = server::router(state.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "the emulator stopped serving");
        }
    });
    let churn = churn::spawn_background(state.clone());
    Ok(RunningEmulator {
        url,
        state,
        stop,
        served,
        churn,
    })
}

impl RunningEmulator {
    /// The base URL, both the authority URL and the Graph URL: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// TOML lines for a connection to this emulator: tenant, client, secret and both URLs.
    pub fn config_lines(&self) -> String {
        let options = &self.state.options;
        format!(
            "tenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\nauthority_url = \"{}\"\ngraph_url = \"{}\"\n",
            options.tenant_id, options.client_id, options.client_secret, self.url, self.url
        )
    }

    /// Applies `events` churn events now and returns one human line for each.
    pub fn churn(&self, events: usize) -> Vec<String> {
        self.state.churn(events)
    }

    /// All token and Graph requests served so far.
    pub fn request_count(&self) -> u64 {
        self.state.request_count()
    }

    /// Stops serving and waits for open connections to finish.
    pub async fn shutdown(self) {
        if let Some(churn) = self.churn {
            churn.abort();
        }
        let _ = self.stop.send(());
        let _ = self.served.await;
    }
}
