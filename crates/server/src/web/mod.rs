//! The web UI: server-rendered pages (askama templates in `web/templates`, compiled into
//! the binary) with plain JavaScript and CSS from `web/static`, served under hashed names
//! with long cache lifetimes. Pages read what the API reads, under the same rules
//! (`access`); forms that change state carry a CSRF token derived from the session, and the
//! session cookie is `SameSite=Strict`. A repository's admins have a settings page: its
//! settings, its secrets (names only, never values) and who holds which role.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use askama::Template;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use gantry_store::{Build, BuildFilter, Role, Status};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::access::Identity;
use crate::auth::{SESSION_LIFETIME, hash_token, session_cookie, session_token};
use crate::error::OpError;
use crate::human::took;
use crate::ops;

mod account;
mod environments;
mod pages;
mod picture;
mod settings;

use account::*;
use environments::*;
use pages::*;
use settings::*;

const CSS: &str = include_str!("../../../../web/static/app.css");
const JS: &str = include_str!("../../../../web/static/app.js");

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/login/github", get(crate::oauth::start))
        .route("/login/github/callback", get(crate::oauth::callback))
        .route("/account", get(account_page))
        .route("/account/tokens", post(create_token))
        .route("/account/tokens/{id}/revoke", post(revoke_token))
        .route("/static/{file}", get(asset))
        .route("/{owner}/{name}", get(repo_page))
        .route("/{owner}/{name}/badge.svg", get(badge))
        .route("/{owner}/{name}/branches", get(branches_page))
        .route("/{owner}/{name}/environments", get(environments_page))
        .route("/{owner}/{name}/environments/stop", post(stop_environment))
        .route(
            "/{owner}/{name}/environments/redeploy",
            post(redeploy_environment),
        )
        .route(
            "/{owner}/{name}/environments/protect",
            post(protect_environment),
        )
        .route(
            "/{owner}/{name}/environments/unprotect",
            post(unprotect_environment),
        )
        .route("/{owner}/{name}/builds", post(manual_build))
        .route(
            "/{owner}/{name}/settings",
            get(settings_page).post(save_settings),
        )
        .route("/{owner}/{name}/settings/secrets", post(add_secret))
        .route(
            "/{owner}/{name}/settings/secrets/{secret}/delete",
            post(delete_secret),
        )
        .route("/{owner}/{name}/settings/registries", post(add_registry))
        .route(
            "/{owner}/{name}/settings/registries/{host}/delete",
            post(delete_registry),
        )
        .route("/{owner}/{name}/settings/cron", post(add_schedule))
        .route(
            "/{owner}/{name}/settings/cron/{cron}/delete",
            post(delete_schedule),
        )
        .route(
            "/{owner}/{name}/settings/cron/{cron}/run",
            post(run_schedule),
        )
        .route("/{owner}/{name}/settings/roles", post(set_role))
        .route(
            "/{owner}/{name}/settings/credentials",
            post(save_credentials),
        )
        .route("/{owner}/{name}/{number}", get(build_page))
        .route("/{owner}/{name}/{number}/restart", post(restart))
        .route("/{owner}/{name}/{number}/promote", post(promote))
        .route("/{owner}/{name}/{number}/{action}", post(act))
        .route(
            "/{owner}/{name}/{number}/stages/{stage}/{decision}",
            post(decide),
        )
        .route("/{owner}/{name}/{number}/{stage}/{step}", get(step_page))
        .fallback(not_found)
}

/// An asset's URL: its name with a hash of its content, so it can be cached for ever.
fn asset_url(name: &str, ext: &str, content: &str) -> String {
    let hash = hex::encode(&Sha256::digest(content.as_bytes())[..6]);
    format!("/static/{name}.{hash}.{ext}")
}

fn css_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| asset_url("app", "css", CSS))
}

fn js_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| asset_url("app", "js", JS))
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = if format!("/static/{file}") == css_url() {
        (CSS, "text/css; charset=utf-8")
    } else if format!("/static/{file}") == js_url() {
        (JS, "text/javascript; charset=utf-8")
    } else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// The headers every answer carries: no script but gantry's own file (a stored link or a
/// log line cannot run one), no framing, no sniffing of types, and no page address sent to
/// other sites. The log viewer colours lines with inline styles, so styles may be inline.
pub(crate) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers
            .entry(name)
            .or_insert(header::HeaderValue::from_static(value));
    }
    response
}

/// A form whose only field is its CSRF token (the buttons).
#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// The signed-in user of a page, from the session cookie.
#[derive(Debug, Clone, Default)]
pub(crate) struct Session {
    identity: Option<Identity>,
    /// The token itself (only to derive the CSRF token).
    token: Option<String>,
}

impl Session {
    fn csrf(&self) -> String {
        self.token.as_deref().map(csrf_for).unwrap_or_default()
    }

    /// Refuses a form post without the session's CSRF token.
    fn check(&self, csrf: &str) -> Result<(), Page> {
        let Some(token) = &self.token else {
            return Err(Page::error(
                StatusCode::UNAUTHORIZED,
                "Sign in first",
                "This needs a signed-in user.",
            ));
        };
        let expected = csrf_for(token);
        if bool::from(expected.as_bytes().ct_eq(csrf.as_bytes())) {
            Ok(())
        } else {
            Err(Page::error(
                StatusCode::FORBIDDEN,
                "Refused",
                "The form's CSRF token is missing or stale: reload the page and try again.",
            ))
        }
    }

    /// Who posts a form: the signed-in identity, once the form's CSRF token is checked.
    fn actor(&self, csrf: &str) -> Result<&Identity, Page> {
        self.check(csrf)?;
        self.identity.as_ref().ok_or_else(|| {
            Page::error(
                StatusCode::UNAUTHORIZED,
                "Sign in first",
                "This needs a signed-in user.",
            )
        })
    }
}

fn csrf_for(token: &str) -> String {
    hex::encode(Sha256::digest(format!("gantry-csrf:{token}").as_bytes()))
}

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = Page;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = session_token(&parts.headers) else {
            return Ok(Session::default());
        };
        match crate::auth::identity(&state.store, token).await {
            Ok(Some(identity)) => Ok(Session {
                identity: Some(identity),
                token: Some(token.to_owned()),
            }),
            Ok(None) => Ok(Session::default()),
            Err(e) => Err(Page::from(OpError::from(e))),
        }
    }
}

/// What every page's layout needs.
#[derive(Debug)]
pub struct PageInfo {
    pub css: &'static str,
    pub js: &'static str,
    pub user: Option<String>,
    pub csrf: String,
}

fn page_info(session: &Session) -> PageInfo {
    PageInfo {
        css: css_url(),
        js: js_url(),
        user: session.identity.as_ref().map(|i| i.name().to_owned()),
        csrf: session.csrf(),
    }
}

/// A rendered page, or an error page.
#[derive(Debug)]
pub struct Page(Box<Response>);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        *self.0
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorTemplate<'a> {
    page: PageInfo,
    code: u16,
    title: &'a str,
    message: &'a str,
}

/// Whether a refusal is shown beside the form that caused it (the page again), rather than
/// as an error page: a request's own faults are, not a missing sign-in or the server's.
fn shown_beside_the_form(error: &OpError) -> bool {
    error.status().is_client_error() && !matches!(error, OpError::Unauthorized(_))
}

impl Page {
    /// The page answered with `status` (a refused form's), when there is one.
    fn with_status(mut self, status: Option<StatusCode>) -> Page {
        if let Some(status) = status {
            *self.0.status_mut() = status;
        }
        self
    }

    fn render(template: impl Template) -> Page {
        match template.render() {
            Ok(html) => Page(Box::new(Html(html).into_response())),
            Err(e) => {
                tracing::error!(error = %e, "rendering a page failed");
                Page(Box::new(
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "rendering the page failed",
                    )
                        .into_response(),
                ))
            }
        }
    }

    fn error(code: StatusCode, title: &str, message: &str) -> Page {
        let mut page = Page::render(ErrorTemplate {
            page: page_info(&Session::default()),
            code: code.as_u16(),
            title,
            message,
        });
        *page.0.status_mut() = code;
        page
    }
}

impl From<OpError> for Page {
    fn from(e: OpError) -> Self {
        let code = e.status();
        let title = code.canonical_reason().unwrap_or("Error");
        Page::error(code, title, &e.public_message())
    }
}

impl From<gantry_store::StoreError> for Page {
    fn from(e: gantry_store::StoreError) -> Self {
        Page::from(OpError::from(e))
    }
}

async fn not_found() -> Page {
    Page::error(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no page at this address.",
    )
}

/// "3 minutes ago".
fn age(ms: i64) -> String {
    let secs = (gantry_store::now_ms() - ms).max(0) / 1000;
    match secs {
        0..=59 => "just now".to_owned(),
        60..=3599 => plural(secs / 60, "minute"),
        3600..=86_399 => plural(secs / 3600, "hour"),
        _ => plural(secs / 86_400, "day"),
    }
}

fn plural(n: i64, unit: &str) -> String {
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// A build as the pages show it.
#[derive(Debug)]
pub struct BuildRow {
    pub number: i64,
    pub status: &'static str,
    pub event: String,
    /// Branch, tag or pull request.
    pub target: String,
    pub message: String,
    pub message_line: String,
    pub author: String,
    pub age: String,
    pub created_iso: String,
    pub took: String,
    pub trigger: String,
    pub short_sha: String,
    pub branch: String,
    pub error: Option<String>,
    pub finished: bool,
    pub parent: Option<i64>,
    /// A pull request from a fork: never trusted, whatever the repository's setting.
    pub fork: bool,
}

fn build_row(build: &Build) -> BuildRow {
    let target = match (&build.tag, build.pull_request) {
        (Some(tag), _) => format!("tag {tag}"),
        (None, Some(pr)) => format!(
            "#{pr} {} → {}",
            build.branch,
            build.target_branch.as_deref().unwrap_or("")
        ),
        _ => build.branch.clone(),
    };
    let trigger = match (build.event.as_str(), &build.action) {
        ("pull_request", Some(action)) => format!("pull request {action} by {}", build.sender),
        ("custom", _) => format!("manual build by {}", build.sender),
        ("promote", _) => format!(
            "deployment to {} by {}",
            build.deploy_to.as_deref().unwrap_or("?"),
            build.sender
        ),
        (event, _) if build.parent.is_some() => format!("restart of a {event} by {}", build.sender),
        (event, _) => format!("{event} by {}", build.sender),
    };
    BuildRow {
        number: build.number,
        status: build.status.as_str(),
        event: build.event.as_str().to_owned(),
        target,
        message: build.message.lines().next().unwrap_or("").to_owned(),
        message_line: build.message.lines().next().unwrap_or("").to_owned(),
        author: build.author.clone(),
        age: age(build.created_at),
        created_iso: iso(build.created_at),
        took: took(build.started_at, build.finished_at),
        trigger,
        short_sha: build.commit.chars().take(10).collect(),
        branch: build.branch.clone(),
        error: build.error.clone(),
        finished: build.finished_at.is_some(),
        parent: build.parent,
        fork: build.fork,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(gantry_store::now_ms()), "just now");
        assert_eq!(age(gantry_store::now_ms() - 120_000), "2 minutes ago");
        assert_eq!(age(gantry_store::now_ms() - 3_600_000), "1 hour ago");
    }

    #[test]
    fn redirects_stay_on_this_server() {
        assert_eq!(safe_next("/acme/app/3"), "/acme/app/3");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/\\evil"), "/");
        assert_eq!(safe_next("/\t/evil.example"), "/");
        assert_eq!(safe_next("/\n/evil.example/x"), "/");
        assert_eq!(safe_next("/.//evil.example"), "/");
        assert_eq!(safe_next("http://gantry.invalid@evil.example/"), "/");
        assert_eq!(safe_next("/acme/../acme/app?x=1"), "/acme/app?x=1");
    }

    #[test]
    fn assets_are_named_by_their_content() {
        assert!(css_url().starts_with("/static/app.") && css_url().ends_with(".css"));
        assert_ne!(asset_url("app", "css", "a"), asset_url("app", "css", "b"));
    }

    #[test]
    fn the_csrf_token_depends_on_the_session() {
        assert_ne!(csrf_for("a"), csrf_for("b"));
        let session = Session {
            identity: None,
            token: Some("t".into()),
        };
        assert!(session.check(&csrf_for("t")).is_ok());
        assert!(session.check("").is_err());
        assert!(Session::default().check(&csrf_for("t")).is_err());
    }
}
