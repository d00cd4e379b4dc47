//! Signing in to the admin UI: with an API token (`entra-sync token create`) or the admin
//! password (`entra-sync admin set-password`, kept as an argon2 hash). A session is a random id
//! in an HttpOnly, SameSite=Strict cookie, held in memory (a restart signs everyone out); each
//! has a CSRF token that every form must send back. Failed sign-ins are limited per address.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::Extension;
use axum::body::{Body, to_bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::{Ui, UiError};
use crate::clock;
use crate::store::{Store, StoreError};

const SESSION_COOKIE: &str = "entra_sync_session";
/// Carries the sign-in form's CSRF token before there is a session (a double-submit check).
const SIGN_IN_COOKIE: &str = "entra_sync_sign_in";
/// A session ends this long after sign-in, used or not.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Failed sign-ins an address may make in `FAILURE_WINDOW` before it must wait.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// The most a form body may be: forms here send a token and a few choices.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// The shortest admin password `set-password` accepts.
const MIN_PASSWORD_CHARS: usize = 12;

/// A signed-in admin.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) csrf: String,
    /// How the admin signed in, as the header shows it.
    pub(crate) subject: String,
    expires: Instant,
}

/// The sessions and the failed sign-ins, in memory.
#[derive(Default)]
pub(crate) struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Lock guards that survive a panicking holder: the maps stay consistent entry by entry.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sessions {
    fn get(&self, id: &str) -> Option<Session> {
        let mut sessions = lock(&self.sessions);
        match sessions.get(id) {
            Some(session) if session.expires > Instant::now() => Some(session.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    fn create(&self, subject: String) -> Result<(String, Session), UiError> {
        let session = Session {
            csrf: random_token()?,
            subject,
            expires: Instant::now() + SESSION_LIFETIME,
        };
        let id = random_token()?;
        let mut sessions = lock(&self.sessions);
        let now = Instant::now();
        sessions.retain(|_, session| session.expires > now);
        sessions.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    fn remove(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }

    /// How long `address` must wait before trying again, if it failed too often lately.
    fn wait_before_trying(&self, address: &str) -> Option<Duration> {
        let mut failures = lock(&self.failures);
        let recent = failures.get_mut(address)?;
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= FAILURE_WINDOW)
        {
            recent.pop_front();
        }
        if recent.len() < MAX_FAILURES {
            return None;
        }
        recent
            .front()
            .map(|oldest| FAILURE_WINDOW.saturating_sub(now.duration_since(*oldest)))
    }

    fn record_failure(&self, address: &str) {
        let mut failures = lock(&self.failures);
        let now = Instant::now();
        // Addresses whose failures are all old are forgotten, so that many addresses trying
        // once each do not grow the map for ever.
        failures.retain(|_, recent| {
            recent
                .back()
                .is_some_and(|last| now.duration_since(*last) < FAILURE_WINDOW)
        });
        failures.entry(address.to_owned()).or_default().push_back(now);
    }
}

/// 32 random bytes, URL-safe base64.
fn random_token() -> Result<String, UiError> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| UiError::Internal(format!("the system's random source failed: {error}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Compares secrets in a time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn cookie(name: &'static str, value: String) -> Cookie<'static> {
    // Not `Secure`: the service also runs on plain http on loopback (the demo, tests). Behind
    // a TLS proxy the browser never sends it to another site anyway, being SameSite=Strict.
    Cookie::build((name, value))
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .build()
}

/// Lets a request through only with a live session; a form (any method but GET and HEAD)
/// also needs the session's CSRF token in its `csrf` field. The session goes to the handler.
pub(super) async fn require_session(
    State(ui): State<Ui>,
    jar: CookieJar,
    request: Request,
    next: Next,
) -> Response {
    let Some(session) = jar
        .get(SESSION_COOKIE)
        .and_then(|cookie| ui.sessions.get(cookie.value()))
    else {
        if request.headers().contains_key("hx-request") {
            // htmx would swap a followed redirect's sign-in page into the polled block; this
            // header makes it load the sign-in page as a whole instead.
            return (StatusCode::UNAUTHORIZED, [("hx-redirect", "/ui/sign-in")]).into_response();
        }
        return Redirect::to("/ui/sign-in").into_response();
    };
    let request = if matches!(*request.method(), Method::GET | Method::HEAD) {
        request
    } else {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
            return UiError::BadRequest("The form is too large.".into()).into_response();
        };
        let sent = url::form_urlencoded::parse(&bytes)
            .find(|(name, _)| name == "csrf")
            .map(|(_, value)| value.into_owned());
        if !sent.is_some_and(|sent| same_secret(&sent, &session.csrf)) {
            return UiError::Forbidden(
                "The form came without its security token, or with an old one: reload the page and try again."
                    .into(),
            )
            .into_response();
        }
        Request::from_parts(parts, Body::from(bytes))
    };
    let mut request = request;
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// The sign-in page, with a fresh CSRF token in the form and in a cookie.
pub(super) async fn sign_in_page(State(ui): State<Ui>, jar: CookieJar) -> Result<Response, UiError> {
    if jar
        .get(SESSION_COOKIE)
        .and_then(|cookie| ui.sessions.get(cookie.value()))
        .is_some()
    {
        return Ok(Redirect::to("/ui/connections").into_response());
    }
    sign_in_form(&ui, jar, StatusCode::OK, None).await
}

async fn sign_in_form(
    ui: &Ui,
    jar: CookieJar,
    status: StatusCode,
    error: Option<String>,
) -> Result<Response, UiError> {
    let csrf = random_token()?;
    let password_set = ui.store.admin_password_hash().await?.is_some();
    let html = ui.render(
        "sign_in.html",
        &json!({ "title": "Sign in", "sign_in_csrf": csrf, "error": error, "password_set": password_set }),
    )?;
    Ok((status, jar.add(cookie(SIGN_IN_COOKIE, csrf)), Html(html)).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    secret: String,
}

/// Checks a token or the password; on success starts a session and goes to the connections.
pub(super) async fn sign_in(
    State(ui): State<Ui>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    jar: CookieJar,
    form: axum::Form<SignInForm>,
) -> Result<Response, UiError> {
    let axum::Form(form) = form;
    let expected = jar.get(SIGN_IN_COOKIE).map(|cookie| cookie.value().to_owned());
    if !expected.is_some_and(|expected| !form.csrf.is_empty() && same_secret(&form.csrf, &expected)) {
        return Err(UiError::Forbidden(
            "The sign-in form came without its security token: open the sign-in page again.".into(),
        ));
    }
    // In-process callers (tests) have no peer address; they share one budget.
    let address = peer.map_or_else(
        || "local".to_owned(),
        |Extension(ConnectInfo(peer))| peer.ip().to_string(),
    );
    if let Some(wait) = ui.sessions.wait_before_trying(&address) {
        let message = format!(
            "Too many failed sign-ins from this address: try again in {} seconds.",
            wait.as_secs().max(1)
        );
        return sign_in_form(&ui, jar, StatusCode::TOO_MANY_REQUESTS, Some(message)).await;
    }
    let Some(subject) = check_secret(&ui.store, form.secret.trim()).await? else {
        ui.sessions.record_failure(&address);
        tracing::warn!(%address, "failed admin UI sign-in");
        return sign_in_form(
            &ui,
            jar,
            StatusCode::UNAUTHORIZED,
            Some("That is not a known API token or the admin password.".into()),
        )
        .await;
    };
    let (id, _) = ui.sessions.create(subject)?;
    let jar = jar
        .remove(Cookie::build(SIGN_IN_COOKIE).path("/ui"))
        .add(cookie(SESSION_COOKIE, id));
    Ok((jar, Redirect::to("/ui/connections")).into_response())
}

/// Who `secret` signs in as: an API token, or the admin password; `None` for neither.
async fn check_secret(store: &Store, secret: &str) -> Result<Option<String>, UiError> {
    if secret.is_empty() {
        return Ok(None);
    }
    if crate::api::token_known(store, secret).await? {
        return Ok(Some("an API token".into()));
    }
    let Some(hash) = store.admin_password_hash().await? else {
        return Ok(None);
    };
    let secret = secret.to_owned();
    // Hashing takes tens of milliseconds of CPU on purpose: off the async threads.
    let matches = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &hash)
                .is_ok()
        })
    })
    .await
    .map_err(|error| UiError::Internal(format!("checking the password: {error}")))?;
    Ok(matches.then(|| "the admin password".into()))
}

/// Ends the session.
pub(super) async fn sign_out(State(ui): State<Ui>, jar: CookieJar) -> Response {
    if let Some(cookie) = jar.get(SESSION_COOKIE) {
        ui.sessions.remove(cookie.value());
    }
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/ui"));
    (jar, Redirect::to("/ui/sign-in")).into_response()
}

/// Why the admin password could not be set.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is too short: use at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sets the admin UI's password; only its argon2 hash is stored.
pub async fn set_admin_password(store: &Store, password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|error| PasswordError::Hash(error.to_string()))?
        .to_string();
    store.set_admin_password_hash(&hash, clock::now()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn an_address_waits_after_too_many_failures() {
        let sessions = Sessions::default();
        for _ in 0..MAX_FAILURES - 1 {
            sessions.record_failure("192.0.2.1");
        }
        assert_eq!(sessions.wait_before_trying("192.0.2.1"), None);
        sessions.record_failure("192.0.2.1");
        let wait = sessions.wait_before_trying("192.0.2.1").expect("a wait");
        assert!(wait <= FAILURE_WINDOW && wait > FAILURE_WINDOW - Duration::from_secs(5));
        assert_eq!(sessions.wait_before_trying("192.0.2.2"), None);
    }
}
