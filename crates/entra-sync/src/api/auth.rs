//! Bearer tokens of the API: made by `entra-sync token create`, shown once, stored as SHA-256.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::ApiState;
use super::error::{ApiError, Code};
use crate::clock;
use crate::store::{Store, StoreError};

/// Marks entra-sync tokens, so that one pasted into the wrong place is recognisable.
const TOKEN_PREFIX: &str = "est_";

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named {0:?} exists; choose another name")]
    NameTaken(String),
    #[error("the system's random source failed: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes a token named `name`, stores its hash and returns the token, which is not kept.
pub async fn create_token(store: &Store, name: &str) -> Result<String, TokenError> {
    let mut secret = [0_u8; 32];
    getrandom::fill(&mut secret).map_err(|error| TokenError::Random(error.to_string()))?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    if !store
        .create_api_token(name, &token_hash(&token), clock::now())
        .await?
    {
        return Err(TokenError::NameTaken(name.to_owned()));
    }
    Ok(token)
}

/// Whether `token` is one `create_token` made; the admin UI's sign-in accepts it too.
pub async fn token_known(store: &Store, token: &str) -> Result<bool, StoreError> {
    store.api_token_exists(&token_hash(token.trim())).await
}

fn token_hash(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// Lets a request through only with `Authorization: Bearer <a known token>`.
pub(super) async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return Err(ApiError::new(
            Code::Unauthorized,
            "send a token as `Authorization: Bearer <token>`; `entra-sync token create` makes one",
        ));
    };
    if !state.store.api_token_exists(&token_hash(token)).await? {
        return Err(ApiError::new(Code::Unauthorized, "the token is not known"));
    }
    Ok(next.run(request).await)
}
