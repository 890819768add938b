//! The JSON API under `/api`: repositories, builds (list, get, restart, cancel, manual),
//! step logs as plain text and as a live Server-Sent-Events stream, runners, notification
//! targets, secrets, tokens, users and roles, and `/healthz`. What each endpoint needs is
//! decided by `access`: reading follows the repository's visibility, writing and settings
//! need the caller's role on it, server-wide settings a server admin.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use gantry_store::{Build, Repo, RepoUpdate, Role, Stage, Step};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{OpError, OpResult};
use crate::live::LiveEvent;
use crate::ops;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/repos", get(list_repos).post(add_repo))
        .route(
            "/api/repos/{owner}/{name}",
            get(get_repo).patch(update_repo).delete(remove_repo),
        )
        .route(
            "/api/repos/{owner}/{name}/builds",
            get(list_builds).post(create_build),
        )
        .route("/api/repos/{owner}/{name}/builds/{number}", get(get_build))
        .route(
            "/api/repos/{owner}/{name}/builds/{number}/restart",
            post(restart_build),
        )
        .route(
            "/api/repos/{owner}/{name}/builds/{number}/{action}",
            post(act_on_build),
        )
        .route(
            "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}",
            get(step_log),
        )
        .route(
            "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}/stream",
            get(stream_log),
        )
        .route(
            "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}/lines",
            get(log_lines),
        )
        .route("/api/runners", get(list_runners))
        .route("/api/tokens", get(list_tokens).post(create_token))
        .route("/api/tokens/{id}", axum::routing::delete(revoke_token))
        .route(
            "/api/repos/{owner}/{name}/notify",
            get(list_targets).post(add_target),
        )
        .route(
            "/api/repos/{owner}/{name}/notify/{id}",
            axum::routing::delete(remove_target),
        )
        .route(
            "/api/repos/{owner}/{name}/notify/{id}/test",
            post(test_target),
        )
        .route(
            "/api/notify",
            get(list_default_targets).post(add_default_target),
        )
        .route(
            "/api/notify/{id}",
            axum::routing::delete(remove_default_target),
        )
        .route("/api/notify/{id}/test", post(test_default_target))
        .route(
            "/api/repos/{owner}/{name}/secrets",
            get(list_repo_secrets).post(add_repo_secret),
        )
        .route(
            "/api/repos/{owner}/{name}/secrets/{secret}",
            axum::routing::delete(remove_repo_secret),
        )
        .route(
            "/api/orgs/{owner}/secrets",
            get(list_owner_secrets).post(add_owner_secret),
        )
        .route(
            "/api/orgs/{owner}/secrets/{secret}",
            axum::routing::delete(remove_owner_secret),
        )
        .route("/api/user", get(who_am_i))
        .route("/api/users", get(list_users).post(add_user))
        .route(
            "/api/users/{login}",
            axum::routing::patch(update_user).delete(remove_user),
        )
        .route("/api/repos/{owner}/{name}/roles", get(list_roles))
        .route(
            "/api/repos/{owner}/{name}/roles/{login}",
            axum::routing::put(set_role).delete(remove_role),
        )
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database does not answer: {e}\n"),
        )
            .into_response(),
    }
}

/// A repository as the API shows it: never the secret, only whether there is one.
#[derive(Debug, Serialize)]
struct RepoView {
    #[serde(flatten)]
    repo: Repo,
    full_name: String,
    has_webhook_secret: bool,
    has_github_token: bool,
    has_ssh_key: bool,
    webhook_url: String,
}

fn repo_view(state: &AppState, repo: Repo) -> RepoView {
    RepoView {
        full_name: repo.full_name(),
        has_webhook_secret: !repo.webhook_secret.is_empty(),
        has_github_token: !repo.github_token.is_empty(),
        has_ssh_key: !repo.ssh_key.is_empty(),
        webhook_url: format!("{}/hook/github", state.config.server_url),
        repo,
    }
}

async fn list_repos(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<Vec<RepoView>>> {
    let repos = ops::repos::list(&state, caller.reader()).await?;
    Ok(Json(
        repos.into_iter().map(|r| repo_view(&state, r)).collect(),
    ))
}

async fn add_repo(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<RepoView>)> {
    let repo = ops::repos::add(&state, caller.require_identity()?, parse_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(repo_view(&state, repo))))
}

/// A JSON body, or a 400 naming the field that is wrong.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> OpResult<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        OpError::invalid(if path == "." {
            format!("invalid JSON body: {}", e.into_inner())
        } else {
            format!("invalid JSON body at {path}: {}", e.into_inner())
        })
    })
}

async fn get_repo(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<Json<RepoView>> {
    let (repo, _) = ops::repos::get(&state, caller.reader(), &owner, &name).await?;
    Ok(Json(repo_view(&state, repo)))
}

async fn update_repo(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<Json<RepoView>> {
    let who = caller.require_identity()?;
    let changes: RepoUpdate = parse_body(&body)?;
    let repo = ops::repos::update(&state, who, &owner, &name, changes).await?;
    Ok(Json(repo_view(&state, repo)))
}

async fn remove_repo(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<StatusCode> {
    ops::repos::remove(&state, caller.require_identity()?, &owner, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    branch: Option<String>,
    status: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

async fn list_builds(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> OpResult<Json<Vec<Build>>> {
    let query = ops::builds::BuildQuery {
        branch: query.branch,
        status: ops::builds::parse_status(query.status.as_deref().unwrap_or(""))?,
        before: query.before,
        limit: query.limit,
    };
    let (_, _, builds) = ops::builds::list(&state, caller.reader(), &owner, &name, query).await?;
    Ok(Json(builds))
}

#[derive(Debug, Serialize)]
struct StageView {
    #[serde(flatten)]
    stage: Stage,
    steps: Vec<Step>,
}

#[derive(Debug, Serialize)]
struct BuildView {
    #[serde(flatten)]
    build: Build,
    repo: String,
    link: String,
    stages: Vec<StageView>,
    /// What was reported about it (commit statuses, chat), and what failed to be.
    notifications: Vec<gantry_store::OutboxMessage>,
}

async fn build_view(state: &AppState, repo: &Repo, build: Build) -> OpResult<BuildView> {
    let mut stages = Vec::new();
    for stage in state.store.stages(build.id).await? {
        let steps = state.store.steps(stage.id).await?;
        stages.push(StageView { stage, steps });
    }
    let notifications = state.store.build_messages(build.id).await?;
    Ok(BuildView {
        notifications,
        link: format!(
            "{}/{}/{}/{}",
            state.config.server_url, repo.owner, repo.name, build.number
        ),
        repo: repo.full_name(),
        build,
        stages,
    })
}

async fn get_build(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> OpResult<Json<BuildView>> {
    let (repo, _, build) = ops::builds::get(&state, caller.reader(), &owner, &name, number).await?;
    Ok(Json(build_view(&state, &repo, build).await?))
}

async fn create_build(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<BuildView>)> {
    let who = caller.require_identity()?;
    let request = parse_body(&body)?;
    let (repo, build) = ops::builds::create(&state, who, &owner, &name, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(build_view(&state, &repo, build).await?),
    ))
}

async fn restart_build(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> OpResult<(StatusCode, Json<BuildView>)> {
    let who = caller.require_identity()?;
    let (repo, build) = ops::builds::restart(&state, who, &owner, &name, number).await?;
    Ok((
        StatusCode::CREATED,
        Json(build_view(&state, &repo, build).await?),
    ))
}

/// `POST .../builds/{n}/cancel`, `/approve` or `/decline`.
async fn act_on_build(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, number, action)): Path<(String, String, i64, String)>,
) -> OpResult<Json<BuildView>> {
    let Some(action) = crate::BuildAction::parse(&action) else {
        return Err(OpError::NotFound(format!(
            "there is no build action `{action}`: use cancel, approve, decline or restart"
        )));
    };
    let who = caller.require_identity()?;
    let (repo, build) = ops::builds::act(&state, who, &owner, &name, number, action).await?;
    Ok(Json(build_view(&state, &repo, build).await?))
}

async fn find_step(
    state: &AppState,
    caller: &Caller,
    (owner, name, number, stage, step): (String, String, i64, i64, i64),
) -> OpResult<(Stage, Step)> {
    let at = ops::builds::StepAt {
        owner: &owner,
        name: &name,
        number,
        stage,
        step,
    };
    let (_, _, stage, step) = ops::builds::step(state, caller.reader(), at).await?;
    Ok((stage, step))
}

const PAGE: usize = 5000;

#[derive(Debug, Deserialize)]
struct LogQuery {
    #[serde(default)]
    download: bool,
    from: Option<u64>,
    limit: Option<usize>,
    after: Option<u64>,
}

/// The whole log as text, streamed page by page; `?download=1` as a file.
async fn step_log(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(path): Path<(String, String, i64, i64, i64)>,
    Query(query): Query<LogQuery>,
) -> OpResult<Response> {
    let file = format!("{}-{}-{}-{}-{}.log", path.0, path.1, path.2, path.3, path.4);
    let (_, step) = find_step(&state, &caller, path).await?;
    let store = state.store.clone();
    let pages = stream::unfold(Some(1u64), move |next| {
        let store = store.clone();
        async move {
            let from = next?;
            match store.read_log(step.id, from, PAGE).await {
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => {
                    let after = lines.last().map(|l| l.number + 1);
                    let mut text = String::new();
                    for line in &lines {
                        text.push_str(&line.text);
                        text.push('\n');
                    }
                    Some((Ok::<_, std::io::Error>(text), after))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    });
    let mut response = (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(pages),
    )
        .into_response();
    if query.download
        && let Ok(value) = format!("attachment; filename=\"{file}\"").parse()
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// A page of lines as JSON, for the log viewer: `{total, ended, lines: [{n, t, text}]}`.
async fn log_lines(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(path): Path<(String, String, i64, i64, i64)>,
    Query(query): Query<LogQuery>,
) -> OpResult<Json<serde_json::Value>> {
    let (_, step) = find_step(&state, &caller, path).await?;
    let lines = state
        .store
        .read_log(
            step.id,
            query.from.unwrap_or(1),
            query.limit.unwrap_or(500).min(PAGE),
        )
        .await?;
    let total = state.store.log_last_line(step.id).await?;
    Ok(Json(json!({
        "total": total,
        "ended": step.status.is_final(),
        "lines": lines
            .iter()
            .map(|l| json!({ "n": l.number, "t": l.elapsed_ms, "text": l.text }))
            .collect::<Vec<_>>(),
    })))
}

/// One line as an SSE event: `id` is its number (so `Last-Event-ID` resumes after it).
fn line_event(number: u64, elapsed_ms: u64, text: &str) -> SseEvent {
    SseEvent::default()
        .id(number.to_string())
        .event("line")
        .data(json!({ "n": number, "t": elapsed_ms, "text": text }).to_string())
}

/// Live log: what is stored after `Last-Event-ID`, then lines as they arrive, then an
/// `end` event once the step has ended.
async fn stream_log(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(path): Path<(String, String, i64, i64, i64)>,
    Query(query): Query<LogQuery>,
) -> OpResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let (stage, step) = find_step(&state, &caller, path).await?;
    // `Last-Event-ID` (a reconnecting EventSource) or `?after=` (a page that already has
    // lines): whichever is further.
    let after: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
        .max(query.after.unwrap_or(0));
    // Subscribe before reading what is stored: a line stored in between arrives live too.
    let live = state.live.subscribe(stage.id, &step.name);
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(256);
    let state2 = Arc::clone(&state);
    tokio::spawn(async move {
        let _ = forward_log(state2, stage, step, after, live, tx).await;
    });
    let events = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

async fn forward_log(
    state: Arc<AppState>,
    stage: Stage,
    step: Step,
    mut sent: u64,
    mut live: tokio::sync::broadcast::Receiver<LiveEvent>,
    tx: tokio::sync::mpsc::Sender<SseEvent>,
) -> Result<(), ()> {
    let send_stored = |from: u64| {
        let (state, tx) = (Arc::clone(&state), tx.clone());
        async move {
            let mut next = from;
            loop {
                let lines = state
                    .store
                    .read_log(step.id, next, PAGE)
                    .await
                    .map_err(|_| ())?;
                let Some(last) = lines.last().map(|l| l.number) else {
                    return Ok::<u64, ()>(next - 1);
                };
                for line in &lines {
                    tx.send(line_event(line.number, line.elapsed_ms, &line.text))
                        .await
                        .map_err(|_| ())?;
                }
                next = last + 1;
            }
        }
    };
    sent = sent.max(send_stored(sent + 1).await?);
    if step_has_ended(&state, stage.id, step.id).await {
        state.live.step_ended(stage.id, &step.name);
        send_stored(sent + 1).await?;
        return tx
            .send(SseEvent::default().event("end").data("end"))
            .await
            .map_err(|_| ());
    }
    loop {
        let received = tokio::select! {
            // A stream must not hold the server open past its shutdown.
            _ = state.shutdown.cancelled() => return Err(()),
            received = live.recv() => received,
        };
        match received {
            Ok(LiveEvent::Lines(lines)) => {
                for line in lines.iter() {
                    if line.number <= sent {
                        continue;
                    }
                    tx.send(line_event(line.number, line.elapsed_ms, &line.text))
                        .await
                        .map_err(|_| ())?;
                    sent = line.number;
                }
            }
            Ok(LiveEvent::End) | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                // Lines stored after the last live batch (a lagging reader) come from the store.
                send_stored(sent + 1).await?;
                return tx
                    .send(SseEvent::default().event("end").data("end"))
                    .await
                    .map_err(|_| ());
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                sent = sent.max(send_stored(sent + 1).await?);
            }
        }
    }
}

async fn step_has_ended(state: &AppState, stage_id: i64, step_id: i64) -> bool {
    state.store.steps(stage_id).await.map_or(true, |steps| {
        steps
            .iter()
            .find(|s| s.id == step_id)
            .is_none_or(|s| s.status.is_final())
    })
}

async fn list_runners(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<Vec<gantry_store::Runner>>> {
    Ok(Json(
        ops::runners::list(&state, caller.require_identity()?).await?,
    ))
}

// ----- notification targets -------------------------------------------------------------

#[derive(Debug, Serialize)]
struct TargetView {
    #[serde(flatten)]
    target: gantry_store::NotifyTarget,
    /// The webhook's host only: its path is a credential.
    url: String,
}

fn target_view(target: gantry_store::NotifyTarget) -> TargetView {
    TargetView {
        url: crate::notify::host_of(&target.url),
        target,
    }
}

async fn targets(
    state: &AppState,
    caller: &Caller,
    of: ops::notify::Of<'_>,
) -> OpResult<Json<Vec<TargetView>>> {
    let targets = ops::notify::list(state, caller.require_identity()?, of).await?;
    Ok(Json(targets.into_iter().map(target_view).collect()))
}

async fn add_target_to(
    state: &AppState,
    caller: &Caller,
    of: ops::notify::Of<'_>,
    body: &[u8],
) -> OpResult<(StatusCode, Json<TargetView>)> {
    let who = caller.require_identity()?;
    let target = ops::notify::add(state, who, of, parse_body(body)?).await?;
    Ok((StatusCode::CREATED, Json(target_view(target))))
}

async fn remove_target_of(
    state: &AppState,
    caller: &Caller,
    of: ops::notify::Of<'_>,
    id: i64,
) -> OpResult<StatusCode> {
    ops::notify::remove(state, caller.require_identity()?, of, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn test_target_of(
    state: &AppState,
    caller: &Caller,
    of: ops::notify::Of<'_>,
    id: i64,
) -> OpResult<(StatusCode, Json<serde_json::Value>)> {
    let queued = ops::notify::test(state, caller.require_identity()?, of, id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": queued }))))
}

fn repo_targets<'a>(owner: &'a str, name: &'a str) -> ops::notify::Of<'a> {
    ops::notify::Of::Repo { owner, name }
}

async fn list_targets(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<Json<Vec<TargetView>>> {
    targets(&state, &caller, repo_targets(&owner, &name)).await
}

async fn add_target(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<TargetView>)> {
    add_target_to(&state, &caller, repo_targets(&owner, &name), &body).await
}

async fn remove_target(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> OpResult<StatusCode> {
    remove_target_of(&state, &caller, repo_targets(&owner, &name), id).await
}

async fn test_target(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> OpResult<(StatusCode, Json<serde_json::Value>)> {
    test_target_of(&state, &caller, repo_targets(&owner, &name), id).await
}

async fn list_default_targets(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<Vec<TargetView>>> {
    targets(&state, &caller, ops::notify::Of::Server).await
}

async fn add_default_target(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<TargetView>)> {
    add_target_to(&state, &caller, ops::notify::Of::Server, &body).await
}

async fn remove_default_target(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> OpResult<StatusCode> {
    remove_target_of(&state, &caller, ops::notify::Of::Server, id).await
}

async fn test_default_target(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> OpResult<(StatusCode, Json<serde_json::Value>)> {
    test_target_of(&state, &caller, ops::notify::Of::Server, id).await
}

// ----- secrets ----------------------------------------------------------------------------

async fn list_repo_secrets(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<Json<Vec<gantry_store::SecretInfo>>> {
    let who = caller.require_identity()?;
    let of = ops::secrets::Of::Repo {
        owner: &owner,
        name: &name,
    };
    Ok(Json(ops::secrets::list(&state, who, of).await?))
}

async fn add_repo_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<serde_json::Value>)> {
    let of = ops::secrets::Of::Repo {
        owner: &owner,
        name: &name,
    };
    put_secret(&state, &caller, of, &body).await
}

async fn put_secret(
    state: &AppState,
    caller: &Caller,
    of: ops::secrets::Of<'_>,
    body: &[u8],
) -> OpResult<(StatusCode, Json<serde_json::Value>)> {
    let who = caller.require_identity()?;
    let new: ops::secrets::NewSecret = parse_body(body)?;
    let allow = new.allow_pull_requests;
    let name = ops::secrets::put(state, who, of, new).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "allow_pull_requests": allow })),
    ))
}

async fn remove_repo_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, secret)): Path<(String, String, String)>,
) -> OpResult<StatusCode> {
    let who = caller.require_identity()?;
    let of = ops::secrets::Of::Repo {
        owner: &owner,
        name: &name,
    };
    ops::secrets::remove(&state, who, of, &secret).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_owner_secrets(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(owner): Path<String>,
) -> OpResult<Json<Vec<gantry_store::SecretInfo>>> {
    let who = caller.require_identity()?;
    Ok(Json(
        ops::secrets::list(&state, who, ops::secrets::Of::Owner(&owner)).await?,
    ))
}

async fn add_owner_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(owner): Path<String>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<serde_json::Value>)> {
    put_secret(&state, &caller, ops::secrets::Of::Owner(&owner), &body).await
}

async fn remove_owner_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, secret)): Path<(String, String)>,
) -> OpResult<StatusCode> {
    let who = caller.require_identity()?;
    ops::secrets::remove(&state, who, ops::secrets::Of::Owner(&owner), &secret).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- API tokens -------------------------------------------------------------------------

/// A server admin sees every token; anyone else their own.
async fn list_tokens(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<Vec<gantry_store::Token>>> {
    Ok(Json(
        ops::tokens::list(&state, caller.require_identity()?).await?,
    ))
}

/// Creates a token and shows it this once; only its hash is kept.
async fn create_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<serde_json::Value>)> {
    let who = caller.require_identity()?;
    let created = ops::tokens::create(&state, who, parse_body(&body)?).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": created.stored.id,
            "name": created.stored.name,
            "admin": created.stored.admin,
            "user": created.user.map(|u| u.login),
            "token": created.token,
        })),
    ))
}

async fn revoke_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> OpResult<StatusCode> {
    ops::tokens::revoke(&state, caller.require_identity()?, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- users and roles --------------------------------------------------------------------

/// The caller: their login and whether they are a server admin.
async fn who_am_i(caller: Caller) -> OpResult<Json<serde_json::Value>> {
    let who = caller.require_identity()?;
    Ok(Json(json!({
        "login": who.user.as_ref().map(|u| &u.login),
        "token": who.token.name,
        "admin": who.is_admin(),
    })))
}

async fn list_users(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<Vec<gantry_store::User>>> {
    Ok(Json(
        ops::users::list(&state, caller.require_identity()?).await?,
    ))
}

async fn add_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_store::User>)> {
    let who = caller.require_identity()?;
    let user = ops::users::add(&state, who, parse_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    admin: bool,
}

async fn update_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(login): Path<String>,
    body: axum::body::Bytes,
) -> OpResult<Json<gantry_store::User>> {
    let who = caller.require_identity()?;
    let update: UserUpdate = parse_body(&body)?;
    Ok(Json(
        ops::users::set_admin(&state, who, &login, update.admin).await?,
    ))
}

async fn remove_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(login): Path<String>,
) -> OpResult<StatusCode> {
    ops::users::remove(&state, caller.require_identity()?, &login).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every stored role on the repository: set by an admin, or GitHub's as last read.
async fn list_roles(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<Json<Vec<gantry_store::RepoRole>>> {
    let who = caller.require_identity()?;
    Ok(Json(ops::users::roles(&state, who, &owner, &name).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleUpdate {
    role: Role,
}

/// A server admin sets a user's role on a repository; it wins over GitHub's.
async fn set_role(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, login)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> OpResult<Json<serde_json::Value>> {
    let who = caller.require_identity()?;
    let update: RoleUpdate = parse_body(&body)?;
    let (repo, user) =
        ops::users::set_role(&state, who, &owner, &name, &login, Some(update.role)).await?;
    Ok(Json(
        json!({ "login": user.login, "repo": repo, "role": update.role }),
    ))
}

/// Removes the role an admin set; GitHub's permission applies again.
async fn remove_role(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, login)): Path<(String, String, String)>,
) -> OpResult<StatusCode> {
    let who = caller.require_identity()?;
    ops::users::set_role(&state, who, &owner, &name, &login, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
