//! The HTTP server: shared state, routes, and the pipeline every Graph request goes through
//! (latency, access token, injected faults, throttling, dispatch, request log).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use std::sync::Arc;

use crate::EmulatorOptions;
use crate::clock::Clock;
use crate::collections::UserListing;
use crate::faults::{FaultKind, Faults};
use crate::generate::Rng;
use crate::json::graph_error;
use crate::model::Directory;
use crate::query::Query;
use crate::throttle::{Bucket, Charge};
use crate::token::Issuer;

/// Entries kept in the request log (older ones are dropped).
const REQUEST_LOG_LIMIT: usize = 100_000;

pub(crate) struct AppState {
    pub(crate) options: EmulatorOptions,
    pub(crate) url: String,
    pub(crate) clock: Clock,
    directory: RwLock<Directory>,
    pub(crate) issuer: Issuer,
    bucket: Mutex<Bucket>,
    pub(crate) faults: Mutex<Faults>,
    requests: Mutex<RequestLog>,
    /// The last body served per Graph path, for `replay_page` faults.
    last_bodies: Mutex<HashMap<String, Bytes>>,
    pub(crate) churn_rng: Mutex<Rng>,
    /// Key of the delta and paging tokens' integrity tag.
    pub(crate) token_key: [u8; 16],
    served: AtomicU64,
    next_request: AtomicU64,
    /// Whether the tenant has an Entra ID P1/P2 licence (sign-in activity, MFA report).
    premium: AtomicBool,
}

#[derive(Default)]
struct RequestLog {
    entries: VecDeque<serde_json::Value>,
    total: u64,
    by_endpoint: BTreeMap<&'static str, u64>,
}

impl AppState {
    pub(crate) fn new(
        options: EmulatorOptions,
        directory: Directory,
        url: String,
    ) -> anyhow::Result<AppState> {
        let clock = Clock::new();
        // Keys differ between instances (start time and port), so a token of one emulator is
        // refused by another.
        let key_seed = url.bytes().fold(options.seed ^ clock.now() as u64, |key, byte| {
            key.rotate_left(7) ^ u64::from(byte)
        });
        let issuer = Issuer::new(&options, key_seed, clock.now())?;
        let budget = crate::throttle::budget_for(directory.users.len());
        let mut token_key = [0u8; 16];
        let mut rng = Rng::new(key_seed);
        for chunk in token_key.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        Ok(AppState {
            faults: Mutex::new(Faults::new(options.seed)),
            premium: AtomicBool::new(options.premium),
            churn_rng: Mutex::new(Rng::new(options.seed ^ 0xc4u64)),
            options,
            url,
            clock,
            directory: RwLock::new(directory),
            issuer,
            bucket: Mutex::new(Bucket::new(budget)),
            requests: Mutex::new(RequestLog::default()),
            last_bodies: Mutex::new(HashMap::new()),
            token_key,
            served: AtomicU64::new(0),
            next_request: AtomicU64::new(rng.next_u64()),
        })
    }

    /// Read access to the tenant. A panic while holding the lock poisons it; the data is still
    /// consistent enough for a test emulator, so poisoning is ignored.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Directory> {
        self.directory
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh GUID for `request-id` headers and error bodies. The counter starts at a value drawn
    /// from the instance's key so that two emulators in one test run do not repeat each other's ids.
    pub(crate) fn request_id(&self) -> String {
        crate::generate::guid(self.next_request.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn premium(&self) -> bool {
        self.premium.load(Ordering::Relaxed)
    }

    pub(crate) fn set_premium(&self, premium: bool) {
        self.premium.store(premium, Ordering::Relaxed);
    }

    pub(crate) fn request_count(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn record(&self, method: &Method, path: &str, endpoint: &'static str, response: &Response) {
        self.served.fetch_add(1, Ordering::Relaxed);
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<f64>().ok());
        let entry = serde_json::json!({
            "at_ms": self.clock.elapsed_ms(),
            "method": method.as_str(),
            "path": path,
            "status": response.status().as_u16(),
            "retry_after": retry_after,
        });
        let mut log = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if log.entries.len() == REQUEST_LOG_LIMIT {
            log.entries.pop_front();
        }
        log.entries.push_back(entry);
        log.total += 1;
        *log.by_endpoint.entry(endpoint).or_insert(0) += 1;
    }

    pub(crate) fn requests_json(&self) -> serde_json::Value {
        let log = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        serde_json::Value::Array(log.entries.iter().cloned().collect())
    }

    pub(crate) fn stats_json(&self) -> serde_json::Value {
        let log = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        serde_json::json!({ "total": log.total, "by_endpoint": log.by_endpoint })
    }

    pub(crate) fn reset_stats(&self) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = RequestLog::default();
    }

    pub(crate) fn churn(&self, events: usize) -> Vec<String> {
        crate::churn::apply(self, events)
    }
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/v1.0/{*rest}", any(graph))
        .nest("/_emulator", crate::control::router())
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "UnknownError",
        &format!("No route for {}", uri.path()),
        state.clock.now(),
        &state.request_id(),
    )
}

async fn token(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = state.issuer.token(&state, &tenant, &headers, &body);
    state.record(&Method::POST, &path_and_query(&uri), "token", &response);
    response
}

fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default()
}

/// Percent-decodes a path segment (`%23EXT%23` in guest UPNs).
fn decode_segment(segment: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

pub(crate) fn is_delta_segment(segment: &str) -> bool {
    matches!(
        segment,
        "delta" | "delta()" | "microsoft.graph.delta" | "microsoft.graph.delta()"
    )
}

/// What a Graph handler needs to know about its request.
pub(crate) struct Request<'a> {
    pub(crate) state: &'a AppState,
    pub(crate) query: Query,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) now: i64,
    pub(crate) request_id: String,
    /// The application permissions the access token carries.
    pub(crate) roles: Vec<String>,
}

impl Request<'_> {
    /// Whether the token carries one of `roles`.
    pub(crate) fn has_role(&self, roles: &[&str]) -> bool {
        self.roles.iter().any(|granted| roles.contains(&granted.as_str()))
    }

    pub(crate) fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        graph_error(status, code, message, self.now, &self.request_id)
    }

    /// Whether the request carries `ConsistencyLevel: eventual`.
    pub(crate) fn eventual(&self) -> bool {
        self.headers
            .get("consistencylevel")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.eq_ignore_ascii_case("eventual"))
    }
}

async fn graph(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if state.options.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(state.options.latency_ms)).await;
    }
    let segments = segments_of(&uri);
    let endpoint = endpoint_name(&segments);
    let full_path = path_and_query(&uri);
    let response = if method == Method::POST && segments == ["$batch"] {
        crate::batch::serve(&state, &headers, &body).await
    } else {
        serve_graph(&state, &method, &uri, &headers, &segments).await
    };
    state.record(&method, &full_path, endpoint, &response);
    response
}

/// The decoded path segments after `/v1.0/`.
pub(crate) fn segments_of(uri: &Uri) -> Vec<String> {
    uri.path()
        .trim_start_matches("/v1.0/")
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(decode_segment)
        .collect()
}

/// One Graph request through the pipeline: access token, faults, throttling, dispatch.
pub(crate) async fn serve_graph(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    segments: &[String],
) -> Response {
    let now = state.clock.now();
    let request_id = state.request_id();
    let query = Query::parse(uri.query());
    let cost = crate::throttle::cost(segments, &query);
    let identify = |response: &mut Response| {
        insert_header(response, "x-ms-resource-unit", &cost.to_string());
        insert_header(response, "request-id", &request_id);
        insert_header(response, "client-request-id", &request_id);
    };
    let roles = match state.issuer.check_bearer(headers, now, &request_id) {
        Ok(roles) => roles,
        Err(mut response) => {
            identify(&mut response);
            return response;
        }
    };
    let request = Request {
        state,
        query,
        headers,
        now,
        request_id: request_id.clone(),
        roles,
    };
    let is_delta = segments.get(1).is_some_and(|segment| is_delta_segment(segment));
    let fired = state
        .faults
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .pick(&path_and_query(uri), is_delta);
    let mut response = match fired {
        Some(fired) if fired.kind.replaces_response() => {
            crate::faults::respond(&request, fired, segments, &path_and_query(uri))
        }
        _ => match charge(state, cost, &request) {
            Err(throttled) => throttled,
            Ok(used) => {
                let replayed = match fired.map(|fired| fired.kind) {
                    Some(FaultKind::ReplayPage) => replay(state, uri.path()),
                    _ => None,
                };
                let mut response = replayed.unwrap_or_else(|| dispatch(&request, method, segments));
                if used > 0.8 {
                    insert_header(
                        &mut response,
                        "x-ms-throttle-limit-percentage",
                        &format!("{:.1}", used.min(1.8)),
                    );
                }
                response
            }
        },
    };
    // Pages of collections and delta rounds are kept for `replay_page`; one per path, so a
    // million-user tenant costs one page, not its member lists.
    let replayable = is_delta || segments.len() == 1;
    let truncate = fired.is_some_and(|fired| fired.kind == FaultKind::TruncatedBody);
    if response.status() == StatusCode::OK && (replayable || truncate) {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        if replayable {
            state
                .last_bodies
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(uri.path().to_owned(), bytes.clone());
        }
        let bytes = match fired.map(|fired| fired.kind) {
            Some(FaultKind::TruncatedBody) => bytes.slice(..bytes.len() / 2),
            _ => bytes,
        };
        response = Response::from_parts(parts, Body::from(bytes));
    }
    identify(&mut response);
    response
}

fn replay(state: &AppState, path: &str) -> Option<Response> {
    let bodies = state
        .last_bodies
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let body = bodies.get(path)?.clone();
    Some(crate::json::response(StatusCode::OK, body.to_vec()))
}

/// Charges the throttling bucket (when throttling is on); the share of the budget in use, or 429.
fn charge(state: &AppState, cost: u32, request: &Request<'_>) -> Result<f64, Response> {
    if !state.options.throttle {
        return Ok(0.0);
    }
    let outcome = state
        .bucket
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .charge(cost);
    match outcome {
        Charge::Served { used } => Ok(used),
        Charge::Throttled { retry_after } => Err(throttled(request, retry_after)),
    }
}

/// Graph's 429 (sample error-429-throttled.json) with its headers.
pub(crate) fn throttled(request: &Request<'_>, retry_after: f64) -> Response {
    let state = request.state;
    let body = serde_json::json!({
        "error": {
            "code": "TooManyRequests",
            "innerError": {
                "code": "429",
                "date": crate::clock::iso(request.now).trim_end_matches('Z'),
                "message": "Please retry after",
                "request-id": request.request_id,
                "status": "429",
            },
            "message": "Please retry again later.",
        }
    });
    let mut response = crate::json::response(StatusCode::TOO_MANY_REQUESTS, body.to_string().into_bytes());
    insert_header(
        &mut response,
        "retry-after",
        &crate::throttle::format_seconds(retry_after),
    );
    insert_header(
        &mut response,
        "x-ms-throttle-scope",
        &format!(
            "Tenant_Application/ReadWrite/{}/{}",
            state.options.client_id, state.options.tenant_id
        ),
    );
    insert_header(
        &mut response,
        "x-ms-throttle-information",
        "ResourceUnitLimitExceeded",
    );
    response
}

pub(crate) fn insert_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn endpoint_name(segments: &[String]) -> &'static str {
    let segment = |index: usize| segments.get(index).map(String::as_str);
    match (segment(0), segment(1), segment(2)) {
        (Some("users"), None, _) => "users",
        (Some("users"), Some(delta), _) if is_delta_segment(delta) => "users_delta",
        (Some("users"), Some(_), _) => "user",
        (Some("groups"), None, _) => "groups",
        (Some("groups"), Some(delta), _) if is_delta_segment(delta) => "groups_delta",
        (Some("groups"), Some(_), Some("members")) => "group_members",
        (Some("groups"), Some(_), Some("transitiveMembers")) => "group_transitive_members",
        (Some("groups"), Some(_), _) => "group",
        (Some("subscribedSkus"), _, _) => "subscribed_skus",
        (Some("reports"), _, _) => "user_registration_details",
        (Some("$batch"), _, _) => "batch",
        (Some("directory"), _, _) => "deleted_items",
        (Some(application), None, _) if application.starts_with("applications(") => "application",
        _ => "other",
    }
}

fn dispatch(request: &Request<'_>, method: &Method, segments: &[String]) -> Response {
    if method != Method::GET {
        return request.error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "The emulator serves Graph reads only; change the tenant through /_emulator/.",
        );
    }
    let segment: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segment.as_slice() {
        ["users"] => crate::collections::list_users(request, UserListing::Active, false),
        ["users", "$count"] => crate::collections::list_users(request, UserListing::Active, true),
        ["directory", "deletedItems", "microsoft.graph.user"] => {
            crate::collections::list_users(request, UserListing::DeletedItems, false)
        }
        // Groups are deleted for good at once (security groups skip deletedItems).
        ["directory", "deletedItems", "microsoft.graph.group"] => crate::json::response(
            StatusCode::OK,
            format!(
                r#"{{"@odata.context":"{}/v1.0/$metadata#groups","value":[]}}"#,
                request.state.url
            )
            .into_bytes(),
        ),
        ["directory", "deletedItems"] => request.error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            "Calling GET /directory/deletedItems without a type is not supported.",
        ),
        ["users", delta] if is_delta_segment(delta) => crate::delta::users(request),
        ["users", id] => crate::collections::get_user(request, id),
        ["groups"] => crate::collections::list_groups(request, false),
        ["groups", "$count"] => crate::collections::list_groups(request, true),
        ["groups", delta] if is_delta_segment(delta) => crate::delta::groups(request),
        ["groups", id] => crate::collections::get_group(request, id),
        ["groups", id, "members", rest @ ..] => crate::collections::members(request, id, false, rest),
        ["groups", id, "transitiveMembers", rest @ ..] => {
            crate::collections::members(request, id, true, rest)
        }
        ["subscribedSkus"] => crate::collections::subscribed_skus(request),
        ["reports", "authenticationMethods", "userRegistrationDetails"] => {
            crate::collections::user_registration_details(request)
        }
        [application] if application.starts_with("applications(") => {
            crate::application::get(request, application)
        }
        _ => request.error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                segments.last().map(String::as_str).unwrap_or("")
            ),
        ),
    }
}

impl IntoResponse for crate::model::ModelError {
    fn into_response(self) -> Response {
        let status = match self {
            crate::model::ModelError::NotFound(_) => StatusCode::NOT_FOUND,
            crate::model::ModelError::BadRequest(_) => StatusCode::BAD_REQUEST,
            crate::model::ModelError::Conflict(_) => StatusCode::CONFLICT,
        };
        (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
