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

const CSS: &str = include_str!("../../../web/static/app.css");
const JS: &str = include_str!("../../../web/static/app.js");

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
        .route("/{owner}/{name}/settings/roles", post(set_role))
        .route(
            "/{owner}/{name}/settings/credentials",
            post(save_credentials),
        )
        .route("/{owner}/{name}/{number}", get(build_page))
        .route("/{owner}/{name}/{number}/restart", post(restart))
        .route("/{owner}/{name}/{number}/{action}", post(act))
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

impl Page {
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
        event: build.event.clone(),
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
    }
}

// ----- pages ---------------------------------------------------------------------------

struct RepoItem {
    full_name: String,
    last: Option<BuildRow>,
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexTemplate {
    page: PageInfo,
    repos: Vec<RepoItem>,
}

async fn index(State(state): State<Arc<AppState>>, session: Session) -> Result<Page, Page> {
    let mut repos = Vec::new();
    let readable = ops::repos::list(&state, session.identity.as_ref()).await?;
    for repo in readable {
        let last = state
            .store
            .list_builds(
                repo.id,
                &BuildFilter {
                    limit: 1,
                    ..BuildFilter::default()
                },
            )
            .await?;
        repos.push(RepoItem {
            full_name: repo.full_name(),
            last: last.first().map(build_row),
        });
    }
    Ok(Page::render(IndexTemplate {
        page: page_info(&session),
        repos,
    }))
}

#[derive(Debug, Deserialize)]
struct RepoQuery {
    #[serde(default)]
    branch: String,
    #[serde(default)]
    status: String,
    before: Option<i64>,
}

#[derive(Template)]
#[template(path = "repo.html")]
struct RepoTemplate {
    page: PageInfo,
    repo: String,
    builds: Vec<BuildRow>,
    branch: String,
    status: String,
    statuses: Vec<String>,
    next: Option<i64>,
    can_admin: bool,
}

const PAGE_SIZE: i64 = 25;

/// Lines of a step's log rendered into its page.
const TAIL_IN_PAGE: u64 = 200;

async fn repo_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Query(query): Query<RepoQuery>,
) -> Result<Page, Page> {
    let query_ops = ops::builds::BuildQuery {
        branch: Some(query.branch.clone()),
        status: ops::builds::parse_status(&query.status)?,
        before: query.before,
        limit: Some(PAGE_SIZE),
    };
    let (repo, role, builds) =
        ops::builds::list(&state, session.identity.as_ref(), &owner, &name, query_ops).await?;
    let next = (builds.len() as i64 == PAGE_SIZE)
        .then(|| builds.last().map(|b| b.number))
        .flatten();
    Ok(Page::render(RepoTemplate {
        page: page_info(&session),
        repo: repo.full_name(),
        builds: builds.iter().map(build_row).collect(),
        branch: query.branch,
        status: query.status,
        statuses: Status::ALL
            .iter()
            .filter(|s| **s != Status::Waiting)
            .map(|s| s.as_str().to_owned())
            .collect(),
        next,
        can_admin: role >= Role::Admin,
    }))
}

struct StepItem {
    number: i64,
    name: String,
    status: &'static str,
    took: String,
    exit_code: Option<i64>,
}

struct StageItem {
    number: i64,
    name: String,
    status: &'static str,
    error: Option<String>,
    /// Why a pending stage has no runner.
    waiting: Option<String>,
    steps: Vec<StepItem>,
}

#[derive(Template)]
#[template(path = "build.html")]
struct BuildTemplate {
    page: PageInfo,
    repo: String,
    build: BuildRow,
    commit_link: String,
    stages: Vec<StageItem>,
    /// Reports (commit statuses, chat) that could not be sent.
    failed_reports: Vec<String>,
    can_write: bool,
    can_admin: bool,
}

async fn build_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> Result<Page, Page> {
    let (repo, role, build) =
        ops::builds::get(&state, session.identity.as_ref(), &owner, &name, number).await?;
    let mut stages = Vec::new();
    let build_stages = state.store.stages(build.id).await?;
    // Read once, and only when a stage may need to say why it waits.
    let runners = if build_stages.iter().any(|s| s.status == Status::Pending) {
        state.store.runners().await?
    } else {
        Vec::new()
    };
    for stage in build_stages {
        let steps = state
            .store
            .steps(stage.id)
            .await?
            .into_iter()
            .map(|s| StepItem {
                number: s.number,
                name: s.name,
                status: s.status.as_str(),
                took: took(s.started_at, s.finished_at),
                exit_code: s.exit_code,
            })
            .collect();
        let waiting = crate::rpc::waiting_for(&state, &runners, &repo, &stage);
        stages.push(StageItem {
            number: stage.number,
            name: stage.name,
            status: stage.status.as_str(),
            error: stage.error,
            waiting,
            steps,
        });
    }
    let commit_link = if repo.link.is_empty() || build.commit.is_empty() {
        String::new()
    } else {
        format!(
            "{}/commit/{}",
            repo.link.trim_end_matches('/'),
            build.commit
        )
    };
    let failed_reports = state
        .store
        .build_messages(build.id)
        .await?
        .into_iter()
        .filter(|m| m.state == "failed" || (m.attempts > 0 && m.state == "pending"))
        .map(|m| {
            format!(
                "{} to {}: {} ({})",
                if m.kind == "github_status" {
                    "Commit status"
                } else {
                    "Message"
                },
                crate::notify::host_of(&m.url),
                m.last_error.unwrap_or_default(),
                if m.state == "failed" {
                    "given up"
                } else {
                    "retrying"
                }
            )
        })
        .collect();
    Ok(Page::render(BuildTemplate {
        page: page_info(&session),
        repo: repo.full_name(),
        build: build_row(&build),
        commit_link,
        stages,
        failed_reports,
        can_write: role >= Role::Write,
        can_admin: role >= Role::Admin,
    }))
}

#[derive(Template)]
#[template(path = "step.html")]
struct StepTemplate {
    page: PageInfo,
    repo: String,
    number: i64,
    stage_name: String,
    step_name: String,
    status: &'static str,
    exit_code: Option<i64>,
    api: String,
    total: u64,
    ended: bool,
    /// The log's last lines as JSON (`<` escaped): in the page itself, so its end shows
    /// at once and the page holds the lines a link in chat points at.
    tail: String,
}

async fn step_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, number, stage, step)): Path<(String, String, i64, i64, i64)>,
) -> Result<Page, Page> {
    let at = ops::builds::StepAt {
        owner: &owner,
        name: &name,
        number,
        stage,
        step,
    };
    let (repo, _, stage_row, found) =
        ops::builds::step(&state, session.identity.as_ref(), at).await?;
    let total = state.store.log_last_line(found.id).await?;
    let tail_lines = state
        .store
        .read_log(
            found.id,
            total.saturating_sub(TAIL_IN_PAGE - 1).max(1),
            TAIL_IN_PAGE as usize,
        )
        .await?;
    let tail = serde_json::to_string(
        &tail_lines
            .iter()
            .map(|l| serde_json::json!({ "n": l.number, "t": l.elapsed_ms, "text": l.text }))
            .collect::<Vec<_>>(),
    )
    .expect("plain data serialises")
    .replace('<', "\\u003c");
    Ok(Page::render(StepTemplate {
        page: page_info(&session),
        repo: repo.full_name(),
        number,
        stage_name: stage_row.name,
        step_name: found.name,
        status: found.status.as_str(),
        exit_code: found.exit_code,
        api: format!(
            "/api/repos/{}/builds/{number}/logs/{stage}/{step}",
            repo.full_name()
        ),
        total,
        ended: found.status.is_final(),
        tail,
    }))
}

// ----- badge ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct BadgeQuery {
    branch: Option<String>,
}

/// A shields-style SVG badge of the branch's last build (the default branch's by default).
async fn badge(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Query(query): Query<BadgeQuery>,
) -> Result<Response, Page> {
    let (repo, _) = ops::repos::get(&state, session.identity.as_ref(), &owner, &name).await?;
    let branch = query.branch.unwrap_or_else(|| repo.default_branch.clone());
    let last = state
        .store
        .list_builds(
            repo.id,
            &BuildFilter {
                branch: Some(branch),
                limit: 1,
                ..BuildFilter::default()
            },
        )
        .await?;
    let status = last.first().map_or("none", |b| b.status.as_str());
    let colour = match status {
        "success" => "#2e9e44",
        "failure" => "#d73a49",
        "error" | "killed" | "declined" => "#8a3ab9",
        "running" | "pending" | "blocked" => "#dbab09",
        _ => "#9f9f9f",
    };
    let right = 8 + 7 * status.len() as u32;
    let width = 44 + right;
    let svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="build: {status}"><title>build: {status}</title><rect width="44" height="20" fill="#555"/><rect x="44" width="{right}" height="20" fill="{colour}"/><g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11"><text x="6" y="14">build</text><text x="50" y="14">{status}</text></g></svg>"##
    );
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        svg,
    )
        .into_response())
}

// ----- sign-in and actions -------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginTemplate {
    page: PageInfo,
    message: String,
    next: String,
    /// Sign-in with GitHub is configured.
    github: bool,
}

async fn login_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(query): Query<LoginQuery>,
) -> Page {
    Page::render(LoginTemplate {
        page: page_info(&session),
        message: String::new(),
        next: query.next,
        github: state.config.oauth.is_some(),
    })
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// Only paths of this server: never an open redirect.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

async fn login(
    State(state): State<Arc<AppState>>,
    Form(form): Form<LoginForm>,
) -> Result<Response, Page> {
    let token = form.token.trim();
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_graphic())
        && state
            .store
            .token_by_hash(&hash_token(token))
            .await?
            .is_some();
    if !valid {
        let mut page = Page::render(LoginTemplate {
            page: page_info(&Session::default()),
            message: "That token is not valid.".to_owned(),
            next: form.next,
            github: state.config.oauth.is_some(),
        });
        *page.0.status_mut() = StatusCode::UNAUTHORIZED;
        return Err(page);
    }
    let mut response = Redirect::to(safe_next(&form.next)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&state, token, SESSION_LIFETIME.as_secs()),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Page> {
    session.check(&form.csrf)?;
    // A GitHub session ends for good; an API token used to sign in stays valid.
    if let Some(identity) = &session.identity
        && identity.token.session
    {
        state.store.revoke_token(identity.token.id).await?;
    }
    let mut response = Redirect::to("/").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    Ok(response)
}

async fn restart(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, number)): Path<(String, String, i64)>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let (_, restarted) = ops::builds::restart(&state, who, &owner, &name, number).await?;
    Ok(Redirect::to(&format!(
        "/{owner}/{name}/{}",
        restarted.number
    )))
}

/// The Cancel, Approve and Decline buttons.
async fn act(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, number, action)): Path<(String, String, i64, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, Page> {
    let Some(action) = crate::BuildAction::parse(&action) else {
        return Err(not_found().await);
    };
    let who = session.actor(&form.csrf)?;
    ops::builds::act(&state, who, &owner, &name, number, action).await?;
    Ok(Redirect::to(&format!("/{owner}/{name}/{number}")))
}

#[derive(Debug, Deserialize)]
struct ManualForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    branch: String,
    /// KEY=VALUE lines.
    #[serde(default)]
    params: String,
}

async fn manual_build(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<ManualForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let mut params = BTreeMap::new();
    for line in form.params.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((key, value)) = line.split_once('=') else {
            return Err(Page::from(OpError::invalid_field(
                "params",
                format!("`{line}` is not KEY=VALUE."),
            )));
        };
        params.insert(key.trim().to_owned(), value.to_owned());
    }
    let request = ops::builds::ManualBuild {
        branch: Some(form.branch),
        params,
        ..ops::builds::ManualBuild::default()
    };
    let (_, build) = ops::builds::create(&state, who, &owner, &name, request).await?;
    Ok(Redirect::to(&format!("/{owner}/{name}/{}", build.number)))
}

// ----- account -------------------------------------------------------------------------

struct TokenRow {
    id: i64,
    name: String,
    kind: &'static str,
    created: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountTemplate {
    page: PageInfo,
    login: Option<String>,
    admin: bool,
    tokens: Vec<TokenRow>,
    /// A token just created: shown this once.
    created: Option<String>,
}

/// The signed-in identity, or a redirect to the sign-in page that comes back here.
fn signed_in(session: &Session) -> Result<&Identity, Page> {
    session.identity.as_ref().ok_or_else(|| {
        Page(Box::new(
            Redirect::to("/login?next=/account").into_response(),
        ))
    })
}

async fn account(
    state: &AppState,
    session: &Session,
    created: Option<String>,
) -> Result<Page, Page> {
    let who = signed_in(session)?;
    let tokens = match &who.user {
        Some(user) => state.store.tokens_of(user.id).await?,
        None => vec![who.token.clone()],
    };
    Ok(Page::render(AccountTemplate {
        page: page_info(session),
        login: who.user.as_ref().map(|u| u.login.clone()),
        admin: who.is_admin(),
        tokens: tokens
            .into_iter()
            .map(|t| TokenRow {
                current: t.id == who.token.id,
                kind: if t.session {
                    "browser session"
                } else if t.admin {
                    "admin token"
                } else {
                    "API token"
                },
                id: t.id,
                name: t.name,
                created: age(t.created_at),
            })
            .collect(),
        created,
    }))
}

async fn account_page(State(state): State<Arc<AppState>>, session: Session) -> Result<Page, Page> {
    account(&state, &session, None).await
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

/// Creates an API token for the signed-in user and shows it once.
async fn create_token(
    State(state): State<Arc<AppState>>,
    session: Session,
    Form(form): Form<TokenForm>,
) -> Result<Page, Page> {
    let who = session.actor(&form.csrf)?;
    let new = ops::tokens::NewToken {
        name: form.name,
        ..ops::tokens::NewToken::default()
    };
    let created = ops::tokens::create(&state, who, new).await?;
    account(&state, &session, Some(created.token)).await
}

async fn revoke_token(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let token = ops::tokens::revoke(&state, who, id).await?;
    Ok(Redirect::to(if token.id == who.token.id {
        "/"
    } else {
        "/account"
    }))
}

// ----- settings ------------------------------------------------------------------------

struct SecretRow {
    name: String,
    allow_pull_requests: bool,
    updated: String,
}

struct RoleRow {
    login: String,
    role: &'static str,
    /// "set by an admin", or "GitHub, read 3 minutes ago".
    source: String,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsTemplate {
    page: PageInfo,
    repo: String,
    webhook_url: String,
    has_webhook_secret: bool,
    visibility: &'static str,
    fork_policy: String,
    config_path: String,
    default_branch: String,
    timeout_minutes: i64,
    trusted: bool,
    server_admin: bool,
    clone_url: String,
    clone_over_ssh: bool,
    has_github_token: bool,
    has_ssh_key: bool,
    secrets: Vec<SecretRow>,
    roles: Vec<RoleRow>,
}

async fn settings_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Page, Page> {
    let (repo, secrets, roles) =
        ops::repos::settings(&state, session.identity.as_ref(), &owner, &name).await?;
    let secrets = secrets
        .into_iter()
        .map(|s| SecretRow {
            name: s.name,
            allow_pull_requests: s.allow_pull_requests,
            updated: age(s.updated_at),
        })
        .collect();
    let roles = roles
        .into_iter()
        .map(|r| RoleRow {
            login: r.login,
            role: r.role.as_str(),
            source: match r.source {
                gantry_store::RoleSource::Admin => "set by an admin".to_owned(),
                gantry_store::RoleSource::GitHub => format!("GitHub, read {}", age(r.fetched_at)),
            },
        })
        .collect();
    Ok(Page::render(SettingsTemplate {
        page: page_info(&session),
        repo: repo.full_name(),
        webhook_url: format!("{}/hook/github", state.config.server_url),
        has_webhook_secret: !repo.webhook_secret.is_empty(),
        visibility: repo.visibility.as_str(),
        fork_policy: repo.fork_policy.clone(),
        config_path: repo.config_path.clone(),
        default_branch: repo.default_branch.clone(),
        timeout_minutes: repo.timeout_secs / 60,
        trusted: repo.trusted,
        server_admin: session.identity.as_ref().is_some_and(Identity::is_admin),
        clone_over_ssh: gantry_proto::ssh::is_ssh_url(&repo.clone_url),
        clone_url: repo.clone_url.clone(),
        has_github_token: !repo.github_token.is_empty(),
        has_ssh_key: !repo.ssh_key.is_empty(),
        secrets,
        roles,
    }))
}

#[derive(Debug, Deserialize)]
struct SettingsForm {
    #[serde(default)]
    csrf: String,
    visibility: String,
    fork_policy: String,
    #[serde(default)]
    config_path: String,
    default_branch: String,
    timeout_minutes: String,
    /// A checkbox: present ("on") when ticked.
    trusted: Option<String>,
}

async fn save_settings(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<SettingsForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let visibility = form
        .visibility
        .parse::<gantry_store::Visibility>()
        .map_err(|e| OpError::invalid_field("visibility", e))?;
    let timeout_minutes: i64 = form.timeout_minutes.trim().parse().map_err(|_| {
        OpError::invalid_field("timeout_secs", "the timeout is a number of minutes")
    })?;
    let changes = gantry_store::RepoUpdate {
        config_path: Some(form.config_path.trim().to_owned()),
        default_branch: Some(form.default_branch.trim().to_owned()),
        // Only a server admin changes trust; for anyone else the box shows it, read-only
        // (and a disabled box is not sent).
        trusted: who.is_admin().then_some(form.trusted.is_some()),
        visibility: Some(visibility),
        timeout_secs: Some(timeout_minutes.saturating_mul(60)),
        fork_policy: Some(form.fork_policy.clone()),
        ..gantry_store::RepoUpdate::default()
    };
    ops::repos::update(&state, who, &owner, &name, changes).await?;
    Ok(Redirect::to(&format!("/{owner}/{name}/settings")))
}

#[derive(Debug, Deserialize)]
struct CredentialsForm {
    #[serde(default)]
    csrf: String,
    /// Empty keeps the current one.
    #[serde(default)]
    github_token: String,
    #[serde(default)]
    ssh_key: String,
    /// Checkboxes: present ("on") when ticked.
    remove_github_token: Option<String>,
    remove_ssh_key: Option<String>,
}

/// The repository's GitHub token and SSH deploy key: set, replaced or removed, never shown.
async fn save_credentials(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<CredentialsForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    // A textarea sends CRLF line ends; a key file has LF.
    let ssh_key = form.ssh_key.replace("\r\n", "\n");
    let change = |remove: bool, value: String| {
        if remove {
            Some(String::new())
        } else {
            Some(value).filter(|v| !v.trim().is_empty())
        }
    };
    let changes = gantry_store::RepoUpdate {
        github_token: change(
            form.remove_github_token.is_some(),
            form.github_token.trim().to_owned(),
        ),
        ssh_key: change(form.remove_ssh_key.is_some(), ssh_key),
        ..gantry_store::RepoUpdate::default()
    };
    ops::repos::update(&state, who, &owner, &name, changes).await?;
    Ok(Redirect::to(&format!(
        "/{owner}/{name}/settings#credentials"
    )))
}

#[derive(Debug, Deserialize)]
struct SecretForm {
    #[serde(default)]
    csrf: String,
    name: String,
    value: String,
    allow_pull_requests: Option<String>,
}

async fn add_secret(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<SecretForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let new = ops::secrets::NewSecret {
        name: form.name,
        // A browser's textarea sends CRLF line ends; a secret holds what was pasted.
        value: form.value.replace("\r\n", "\n"),
        allow_pull_requests: form.allow_pull_requests.is_some(),
    };
    let of = ops::secrets::Of::Repo {
        owner: &owner,
        name: &name,
    };
    ops::secrets::put(&state, who, of, new).await?;
    Ok(Redirect::to(&format!("/{owner}/{name}/settings#secrets")))
}

async fn delete_secret(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, secret)): Path<(String, String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let of = ops::secrets::Of::Repo {
        owner: &owner,
        name: &name,
    };
    ops::secrets::remove(&state, who, of, &secret).await?;
    Ok(Redirect::to(&format!("/{owner}/{name}/settings#secrets")))
}

#[derive(Debug, Deserialize)]
struct RoleForm {
    #[serde(default)]
    csrf: String,
    login: String,
    /// A role, or `github` to let GitHub's permission apply again.
    role: String,
}

async fn set_role(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<RoleForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let role = match form.role.as_str() {
        "github" => None,
        role => Some(
            role.parse::<Role>()
                .map_err(|e| OpError::invalid_field("role", e))?,
        ),
    };
    ops::users::set_role(&state, who, &owner, &name, &form.login, role).await?;
    Ok(Redirect::to(&format!("/{owner}/{name}/settings#roles")))
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
