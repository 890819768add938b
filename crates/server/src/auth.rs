//! Who is calling: API tokens (`Authorization: Bearer`, stored as SHA-256 hashes) with the
//! user they act for, and the runners' shared secret (compared in constant time). What a
//! caller may do is `access`'s to decide.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use gantry_store::{Store, StoreError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::access::Identity;
use crate::error::OpError;

/// The HMAC-SHA256 of `data` under `key` (webhook signatures, signed pipeline files); check
/// one with `verify_slice`, which compares in constant time.
pub(crate) fn hmac_sha256(key: &str, data: &[u8]) -> hmac::Hmac<Sha256> {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(data);
    mac
}

/// A fresh random secret: 32 bytes as hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    hex::encode(bytes)
}

/// The browser session's cookie: the session token itself (stored as its hash).
pub const SESSION_COOKIE: &str = "gantry_session";

/// A cookie of the request by name.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session cookie's token, if any (the API also reads it, for the log viewer).
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE).filter(|t| !t.is_empty())
}

/// `Set-Cookie` for a session (`max_age` 0 ends it): `HttpOnly`, `SameSite=Strict`, and
/// `Secure` when the server's public URL is https.
pub(crate) fn session_cookie(state: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.config.server_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("gantry_session=; Path=/; Max-Age=0"))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Makes a fresh token and stores its hash; the token itself is returned to be shown once.
pub(crate) async fn issue_token(
    store: &Store,
    name: &str,
    admin: bool,
    user_id: Option<i64>,
    session: bool,
) -> Result<(String, gantry_store::Token), StoreError> {
    let token = format!("gantry_{}", random_secret());
    let stored = store
        .create_token(gantry_store::NewToken {
            name,
            hash: &hash_token(&token),
            admin,
            user_id,
            session,
        })
        .await?;
    Ok((token, stored))
}

pub async fn ensure_admin_token(store: &Store) -> Result<Option<String>, StoreError> {
    if store.token_count().await? > 0 {
        return Ok(None);
    }
    let (token, _) =
        issue_token(store, "admin (created at first start)", true, None, false).await?;
    Ok(Some(token))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Whether the request carries `secret` as its bearer token (the runner secret, the metrics
/// token). Both sides are hashed first so the comparison takes the same time whatever the
/// lengths.
pub fn carries_secret(headers: &HeaderMap, secret: &str) -> bool {
    match bearer(headers) {
        Some(given) if !secret.is_empty() => {
            let given = Sha256::digest(given.as_bytes());
            let wanted = Sha256::digest(secret.as_bytes());
            bool::from(given.as_slice().ct_eq(wanted.as_slice()))
        }
        _ => false,
    }
}

/// How long a browser session from a sign-in lasts (its cookie's `Max-Age` too).
pub(crate) const SESSION_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 3600);

/// The identity a token gives, if the token is valid: known, and for a session, not older
/// than `SESSION_LIFETIME` (the cookie's expiry is the browser's to honour; this is ours).
pub(crate) async fn identity(store: &Store, token: &str) -> Result<Option<Identity>, StoreError> {
    let now = store.clock().now_ms();
    Ok(store
        .token_by_hash(&hash_token(token))
        .await?
        .filter(|(token, _)| !expired(token, now))
        .map(|(token, user)| Identity { token, user }))
}

/// A session past its lifetime; API tokens last until revoked.
fn expired(token: &gantry_store::Token, now_ms: i64) -> bool {
    token.session && now_ms - token.created_at > SESSION_LIFETIME.as_millis() as i64
}

/// The API caller: a token holder, or anonymous. The web UI's session cookie counts for
/// reading (the log viewer's requests), never for changing state: that needs the bearer
/// header, which another site cannot make a browser send.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    identity: Option<Identity>,
    by_cookie: bool,
}

impl Caller {
    /// Who the caller is for reading (the session cookie counts).
    pub fn reader(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Who the caller is for changing state; refuses anonymous callers and cookies.
    pub fn require_identity(&self) -> Result<&Identity, OpError> {
        match &self.identity {
            Some(identity) if !self.by_cookie => Ok(identity),
            _ => Err(OpError::Unauthorized(
                "this needs an API token: pass `Authorization: Bearer <token>` (the CLI reads GANTRY_TOKEN)"
                    .to_owned(),
            )),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = OpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(given) = bearer(&parts.headers) {
            return match identity(&state.store, given).await? {
                Some(identity) => Ok(Caller {
                    identity: Some(identity),
                    by_cookie: false,
                }),
                None => Err(OpError::Unauthorized(
                    "the API token is not valid (revoked, or mistyped)".to_owned(),
                )),
            };
        }
        let identity = match session_token(&parts.headers) {
            Some(given) => identity(&state.store, given).await?,
            None => None,
        };
        Ok(Caller {
            identity,
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
        assert!(!carries_secret(&headers, "s3cret"));
        headers.insert("authorization", "Bearer s3cret".parse().expect("header"));
        assert!(carries_secret(&headers, "s3cret"));
        assert!(!carries_secret(&headers, "s3cre"));
        assert!(
            !carries_secret(&headers, ""),
            "an empty secret admits no one"
        );
        headers.insert("authorization", "Basic s3cret".parse().expect("header"));
        assert!(!carries_secret(&headers, "s3cret"));
    }

    #[test]
    fn sessions_expire_and_api_tokens_do_not() {
        let token = |session| gantry_store::Token {
            id: 1,
            name: "t".into(),
            admin: false,
            user_id: Some(1),
            session,
            created_at: 0,
            last_used_at: None,
        };
        let lifetime = SESSION_LIFETIME.as_millis() as i64;
        assert!(!expired(&token(true), lifetime));
        assert!(expired(&token(true), lifetime + 1));
        assert!(!expired(&token(false), lifetime * 10));
    }

    #[test]
    fn secrets_are_random_and_tokens_hash_stably() {
        assert_ne!(random_secret(), random_secret());
        assert_eq!(random_secret().len(), 64);
        assert_eq!(hash_token("a"), hash_token("a"));
        assert_ne!(hash_token("a"), hash_token("b"));
    }
}
