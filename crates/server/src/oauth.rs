//! Sign-in with GitHub (OAuth authorization-code flow). `/login/github` sends the browser to
//! GitHub with a random `state`, also kept in a short-lived cookie; the callback accepts only
//! that state, trades the code for a token, asks GitHub who the user is, records the user
//! (their GitHub token sealed, to read their repository permissions with), reads their
//! roles on the registered repositories, and starts a session: a fresh random token of
//! theirs stored (hashed) like an API token, in the session cookie. Server admins are named
//! by login in the configuration.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::auth::random_secret;

const STATE_COOKIE: &str = "gantry_oauth_state";

/// GitHub OAuth settings; sign-in with GitHub is offered when they are set.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// GitHub's web address (GitHub Enterprise: `https://HOST`).
    pub github_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// Logins that are server admins.
    pub admins: Vec<String>,
}

fn refused(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

/// `GET /login/github`: to GitHub, with a fresh `state`.
pub(crate) async fn start(State(state): State<Arc<AppState>>) -> Response {
    let Some(oauth) = &state.config.oauth else {
        return (
            StatusCode::NOT_FOUND,
            "sign-in with GitHub is not configured on this server\n",
        )
            .into_response();
    };
    let nonce = random_secret();
    let redirect = format!("{}/login/github/callback", state.config.server_url);
    let location = format!(
        // `repo`: GitHub shows permissions on private repositories only to this scope.
        "{}/login/oauth/authorize?client_id={}&redirect_uri={}&state={nonce}&scope=repo%20read:user",
        oauth.github_url.trim_end_matches('/'),
        encode(&oauth.client_id),
        encode(&redirect),
    );
    let mut response = Redirect::to(&location).into_response();
    // Lax: the cookie must come back on GitHub's redirect to the callback.
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{STATE_COOKIE}={nonce}; Path=/login/github; HttpOnly; SameSite=Lax; Max-Age=600"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Debug, Deserialize)]
pub(crate) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error_description: Option<String>,
}

/// `GET /login/github/callback`: checks `state`, trades the code, starts a session.
pub(crate) async fn callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<Callback>,
) -> Response {
    let Some(oauth) = state.config.oauth.clone() else {
        return refused("sign-in with GitHub is not configured on this server");
    };
    if let Some(error) = query.error {
        return refused(&format!("GitHub refused the sign-in: {error}"));
    }
    let expected = crate::auth::cookie(&headers, STATE_COOKIE).unwrap_or("");
    let given = query.state.unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return refused(
            "the sign-in's state does not match this browser's: start again from /login/github",
        );
    }
    let Some(code) = query.code else {
        return refused("GitHub sent no code: start again from /login/github");
    };
    let token = match trade_code(&state, &oauth, &code).await {
        Ok(token) => token,
        Err(refusal) => return refusal,
    };
    let (login, github_id) = match state.github.user(&token).await {
        Ok(user) => user,
        Err(refusal @ crate::github_api::GitHubError::Refused { .. }) => {
            return refused(&refusal.to_string());
        }
        Err(e) => {
            tracing::error!(error = %e, "GitHub's API did not answer");
            return github_unreachable();
        }
    };
    // With an admin list, it decides; without one, admins are whom an admin made so.
    let admin = (!oauth.admins.is_empty())
        .then(|| oauth.admins.iter().any(|a| a.eq_ignore_ascii_case(&login)));
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "starting a session failed");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "could not start the session; try again\n",
        )
            .into_response()
    };
    let sealed = state.config.secret_key.seal(
        &crate::access::github_token_binding(&login),
        token.as_bytes(),
    );
    let user = match state
        .store
        .signed_in(github_id, &login, admin, &sealed)
        .await
    {
        Ok(user) => user,
        Err(e) => return unavailable(&e),
    };
    if let Err(reason) = crate::access::sync_github_roles(&state, &user, &token).await {
        // Roles are read one by one, when needed, instead.
        tracing::warn!(%login, %reason, "reading the user's repositories from GitHub failed");
    }
    let session = match crate::auth::issue_token(
        &state.store,
        "session (signed in with GitHub)",
        false,
        Some(user.id),
        true,
    )
    .await
    {
        Ok((session, _)) => session,
        Err(e) => return unavailable(&e),
    };
    tracing::info!(%login, admin = user.admin, "signed in with GitHub");
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        crate::auth::session_cookie(&state, &session, crate::auth::SESSION_LIFETIME.as_secs()),
    );
    if let Ok(clear) =
        HeaderValue::from_str(&format!("{STATE_COOKIE}=; Path=/login/github; Max-Age=0"))
    {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

/// Trades the sign-in's code for the user's token; a refusal is the page to answer with.
async fn trade_code(state: &AppState, oauth: &OAuthConfig, code: &str) -> Result<String, Response> {
    let answer = state
        .http
        .post(format!(
            "{}/login/oauth/access_token",
            oauth.github_url.trim_end_matches('/')
        ))
        .header("accept", "application/json")
        .json(&serde_json::json!({
            "client_id": oauth.client_id,
            "client_secret": oauth.client_secret,
            "code": code,
        }))
        .send()
        .await;
    match answer {
        Ok(response) => match response.json::<TokenAnswer>().await {
            Ok(TokenAnswer {
                access_token: Some(token),
                ..
            }) => Ok(token),
            Ok(TokenAnswer {
                error_description, ..
            }) => Err(refused(&format!(
                "GitHub did not grant a token: {}",
                error_description.unwrap_or_default()
            ))),
            Err(e) => Err(refused(&format!(
                "GitHub's token answer was unreadable: {e}"
            ))),
        },
        Err(e) => {
            tracing::error!(error = %e, "GitHub's token endpoint did not answer");
            Err(github_unreachable())
        }
    }
}

/// The answer when GitHub could not be reached.
fn github_unreachable() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        "GitHub did not answer; try again\n",
    )
        .into_response()
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
