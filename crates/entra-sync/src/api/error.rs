//! The API's one error type. Every error answer is `{ "code", "message" }` with a code from the
//! one table in `Code::status_and_name`; internal details go to the log, never to the client.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// What went wrong, as clients match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// No bearer token, or one that is not known.
    Unauthorized,
    /// No such route, connection, run or user.
    NotFound,
    /// The request's path, query or body could not be read.
    BadRequest,
    /// The connection is running a sync; Sync Now is refused, not queued.
    RunInProgress,
    /// The connection is disabled.
    ConnectionDisabled,
    /// The connection comes from the config file: edit the file, not the API.
    ConnectionReadOnly,
    /// A connection of that name exists.
    ConnectionExists,
    /// Another connection syncs into that organization.
    OrganizationTaken,
    /// The connection's definition fails validation (the message names the key).
    InvalidConnection,
    /// The run's stored plan was approved and applied before.
    AlreadyApproved,
    /// A later run of the connection read a newer source; the stored plan may undo it.
    PlanStale,
    /// The run's stored plan was discarded from the admin UI.
    PlanDiscarded,
    /// The run could not start (a credential that cannot be read, an unusable URL).
    RunNotStarted,
    /// The change feed no longer holds the changes after the cursor asked for (retention).
    CursorExpired,
    /// The database does not answer.
    NotReady,
    /// Anything else; the details are in the service's log.
    Internal,
}

impl Code {
    /// Every code, for the OpenAPI document.
    const ALL: [Code; 16] = [
        Code::Unauthorized,
        Code::NotFound,
        Code::BadRequest,
        Code::RunInProgress,
        Code::ConnectionDisabled,
        Code::ConnectionReadOnly,
        Code::ConnectionExists,
        Code::OrganizationTaken,
        Code::InvalidConnection,
        Code::AlreadyApproved,
        Code::PlanStale,
        Code::PlanDiscarded,
        Code::RunNotStarted,
        Code::CursorExpired,
        Code::NotReady,
        Code::Internal,
    ];

    /// The code table: each code's HTTP status and its name on the wire.
    fn status_and_name(self) -> (StatusCode, &'static str) {
        match self {
            Code::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Code::BadRequest => (StatusCode::BAD_REQUEST, "bad_request"),
            Code::RunInProgress => (StatusCode::CONFLICT, "run_in_progress"),
            Code::ConnectionDisabled => (StatusCode::CONFLICT, "connection_disabled"),
            Code::ConnectionReadOnly => (StatusCode::CONFLICT, "connection_read_only"),
            Code::ConnectionExists => (StatusCode::CONFLICT, "connection_exists"),
            Code::OrganizationTaken => (StatusCode::CONFLICT, "organization_taken"),
            Code::InvalidConnection => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_connection"),
            Code::AlreadyApproved => (StatusCode::CONFLICT, "already_approved"),
            Code::PlanStale => (StatusCode::CONFLICT, "plan_stale"),
            Code::PlanDiscarded => (StatusCode::CONFLICT, "plan_discarded"),
            Code::RunNotStarted => (StatusCode::UNPROCESSABLE_ENTITY, "run_not_started"),
            Code::CursorExpired => (StatusCode::GONE, "cursor_expired"),
            Code::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            Code::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// The codes' names on the wire.
pub(super) fn code_names() -> Vec<&'static str> {
    Code::ALL.iter().map(|code| code.status_and_name().1).collect()
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    message: String,
    /// What really happened, for the log only.
    internal: Option<String>,
}

/// An internal error's details, carried from the response to `log_errors`.
#[derive(Debug, Clone)]
struct InternalDetail(String);

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            internal: None,
        }
    }

    /// An error whose details stay in the log.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        ApiError {
            code: Code::Internal,
            message: "internal error; the service's log has the details".into(),
            internal: Some(detail.to_string()),
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(Code::NotFound, format!("{what} not found"))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::internal(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, name) = self.code.status_and_name();
        let body = serde_json::json!({ "code": name, "message": self.message });
        let mut response = (status, Json(body)).into_response();
        if self.code == Code::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(detail) = self.internal {
            response.extensions_mut().insert(InternalDetail(detail));
        }
        response
    }
}

/// Logs every request's outcome, and an internal error's details, which the answer leaves out.
/// Headers are never logged: they carry the bearer token.
pub(super) async fn log_requests(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    match response.extensions().get::<InternalDetail>() {
        Some(InternalDetail(detail)) => {
            tracing::error!(%method, path, status, error = %detail, "API request failed");
        }
        None => tracing::debug!(%method, path, status, "API request"),
    }
    response
}
