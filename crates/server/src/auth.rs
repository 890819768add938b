//! Who is calling: API tokens (`Authorization: Bearer`, stored as SHA-256 hashes) and the
//! runners' shared secret (compared in constant time).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use gantry_store::{Store, StoreError, Token};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

/// A fresh random secret: 32 bytes as hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    hex::encode(bytes)
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub async fn ensure_admin_token(store: &Store) -> Result<Option<String>, StoreError> {
    if store.token_count().await? > 0 {
        return Ok(None);
    }
    let token = format!("gantry_{}", random_secret());
    store
        .create_token("admin (created at first start)", &hash_token(&token), true)
        .await?;
    Ok(Some(token))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Whether the request carries the runner secret. Both sides are hashed first so the
/// comparison takes the same time whatever the lengths.
pub fn is_runner(headers: &HeaderMap, secret: &str) -> bool {
    match bearer(headers) {
        Some(given) if !secret.is_empty() => {
            let given = Sha256::digest(given.as_bytes());
            let wanted = Sha256::digest(secret.as_bytes());
            bool::from(given.as_slice().ct_eq(wanted.as_slice()))
        }
        _ => false,
    }
}

/// The API caller: a token holder, or anonymous. The web UI's session cookie counts for
/// reading (the log viewer's requests), never for changing state: that needs the bearer
/// header, which another site cannot make a browser send.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: Option<Token>,
    by_cookie: bool,
}

impl Caller {
    /// Refuses anonymous callers of what changes state.
    pub fn require_token(&self) -> Result<&Token, ApiError> {
        match &self.token {
            Some(token) if !self.by_cookie => Ok(token),
            _ => Err(ApiError::Unauthorized(
                "this needs an API token: pass `Authorization: Bearer <token>` (the CLI reads GANTRY_TOKEN)"
                    .to_owned(),
            )),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(given) = bearer(&parts.headers) {
            return match state.store.token_by_hash(&hash_token(given)).await? {
                Some(token) => Ok(Caller {
                    token: Some(token),
                    by_cookie: false,
                }),
                None => Err(ApiError::Unauthorized(
                    "the API token is not valid (revoked, or mistyped)".to_owned(),
                )),
            };
        }
        let token = match crate::web::session_token(&parts.headers) {
            Some(given) => state.store.token_by_hash(&hash_token(given)).await?,
            None => None,
        };
        Ok(Caller {
            token,
            by_cookie: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_secret_is_checked_exactly() {
        let mut headers = HeaderMap::new();
        assert!(!is_runner(&headers, "s3cret"));
        headers.insert("authorization", "Bearer s3cret".parse().expect("header"));
        assert!(is_runner(&headers, "s3cret"));
        assert!(!is_runner(&headers, "s3cre"));
        assert!(!is_runner(&headers, ""), "an empty secret admits no one");
        headers.insert("authorization", "Basic s3cret".parse().expect("header"));
        assert!(!is_runner(&headers, "s3cret"));
    }

    #[test]
    fn secrets_are_random_and_tokens_hash_stably() {
        assert_ne!(random_secret(), random_secret());
        assert_eq!(random_secret().len(), 64);
        assert_eq!(hash_token("a"), hash_token("a"));
        assert_ne!(hash_token("a"), hash_token("b"));
    }
}
