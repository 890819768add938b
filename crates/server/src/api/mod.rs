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
use gantry_store::{RepoUpdate, Stage, Step};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{OpError, OpResult};
use crate::live::LiveEvent;
use crate::{ops, views};

mod admin;
mod logs;
mod openapi;

use admin::*;
use logs::*;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route("/api/repos", get(list_repos).post(add_repo))
        .route(
            "/api/repos/{owner}/{name}",
            get(get_repo).patch(update_repo).delete(remove_repo),
        )
        .route(
            "/api/repos/{owner}/{name}/builds",
            get(list_builds).post(create_build),
        )
        .route("/api/repos/{owner}/{name}/branches", get(list_branches))
        .route("/api/repos/{owner}/{name}/builds/{number}", get(get_build))
        .route(
            "/api/repos/{owner}/{name}/builds/{number}/restart",
            post(restart_build),
        )
        .route(
            "/api/repos/{owner}/{name}/builds/{number}/promote",
            post(promote_build),
        )
        .route(
            "/api/repos/{owner}/{name}/sign",
            post(sign_file).delete(stop_signing),
        )
        .route(
            "/api/repos/{owner}/{name}/environments",
            get(list_environments),
        )
        .route(
            "/api/repos/{owner}/{name}/environments/stop",
            post(stop_environment),
        )
        .route(
            "/api/repos/{owner}/{name}/environments/redeploy",
            post(redeploy_environment),
        )
        .route(
            "/api/repos/{owner}/{name}/environments/protected",
            get(list_protections).put(protect_environment),
        )
        .route(
            "/api/repos/{owner}/{name}/environments/unprotect",
            post(unprotect_environment),
        )
        .route(
            "/api/repos/{owner}/{name}/builds/{number}/stages/{stage}/{decision}",
            post(decide_deployment),
        )
        .route(
            "/api/repos/{owner}/{name}/cron",
            get(list_schedules).post(add_schedule),
        )
        .route(
            "/api/repos/{owner}/{name}/cron/{cron}",
            axum::routing::delete(remove_schedule),
        )
        .route(
            "/api/repos/{owner}/{name}/cron/{cron}/run",
            post(run_schedule),
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
            "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}/search",
            get(search_step_log),
        )
        .route(
            "/api/repos/{owner}/{name}/logs/search",
            get(search_repo_logs),
        )
        .route(
            "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}/lines",
            get(log_lines),
        )
        .route("/api/runners", get(list_runners))
        .route(
            "/api/runners/tokens",
            get(list_runner_tokens).post(register_runner),
        )
        .route(
            "/api/runners/tokens/{name}",
            axum::routing::delete(revoke_runner_token),
        )
        .route("/api/retention", get(retention_status))
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
        .route(
            "/api/repos/{owner}/{name}/registries",
            get(list_repo_registries).post(add_repo_registry),
        )
        .route(
            "/api/repos/{owner}/{name}/registries/{host}",
            axum::routing::delete(remove_repo_registry),
        )
        .route(
            "/api/orgs/{owner}/registries",
            get(list_owner_registries).post(add_owner_registry),
        )
        .route(
            "/api/orgs/{owner}/registries/{host}",
            axum::routing::delete(remove_owner_registry),
        )
        .route(
            "/api/registries",
            get(list_server_registries).post(add_server_registry),
        )
        .route(
            "/api/registries/{host}",
            axum::routing::delete(remove_server_registry),
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

/// The process is up and serving (cheap: no database; `/readyz` asks the database).
async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn list_repos(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<Vec<gantry_api::Repo>>> {
    let repos = ops::repos::list(&state, caller.reader()).await?;
    Ok(Json(
        repos.into_iter().map(|r| views::repo(&state, r)).collect(),
    ))
}

async fn add_repo(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::Repo>)> {
    let repo = ops::repos::add(&state, caller.require_identity()?, parse_body(&body)?).await?;
    Ok((StatusCode::CREATED, Json(views::repo(&state, repo))))
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
) -> OpResult<Json<gantry_api::Repo>> {
    let (repo, _) = ops::repos::get(&state, caller.reader(), &owner, &name).await?;
    Ok(Json(views::repo(&state, repo)))
}

async fn update_repo(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<Json<gantry_api::Repo>> {
    let who = caller.require_identity()?;
    let changes: RepoUpdate = parse_body(&body)?;
    let repo = ops::repos::update(&state, who, &owner, &name, changes).await?;
    Ok(Json(views::repo(&state, repo)))
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
) -> OpResult<Json<Vec<gantry_api::Build>>> {
    let query = ops::builds::BuildQuery {
        branch: query.branch,
        status: ops::builds::parse_status(query.status.as_deref().unwrap_or(""))?,
        before: query.before,
        limit: query.limit,
    };
    let (_, _, builds) = ops::builds::list(&state, caller.reader(), &owner, &name, query).await?;
    Ok(Json(builds.into_iter().map(views::build).collect()))
}

async fn list_branches(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<Json<Vec<gantry_api::Build>>> {
    let (_, _, builds) = ops::builds::branches(&state, caller.reader(), &owner, &name).await?;
    Ok(Json(builds.into_iter().map(views::build).collect()))
}

async fn get_build(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> OpResult<Json<gantry_api::BuildDetail>> {
    let (repo, _, build) = ops::builds::get(&state, caller.reader(), &owner, &name, number).await?;
    Ok(Json(views::build_detail(&state, &repo, build).await?))
}

async fn create_build(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::BuildDetail>)> {
    let who = caller.require_identity()?;
    let request = parse_body(&body)?;
    let (repo, build) = ops::builds::create(&state, who, &owner, &name, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(views::build_detail(&state, &repo, build).await?),
    ))
}

async fn restart_build(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> OpResult<(StatusCode, Json<gantry_api::BuildDetail>)> {
    let who = caller.require_identity()?;
    let (repo, build) = ops::builds::restart(&state, who, &owner, &name, number).await?;
    Ok((
        StatusCode::CREATED,
        Json(views::build_detail(&state, &repo, build).await?),
    ))
}

async fn promote_build(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, number)): Path<(String, String, i64)>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::BuildDetail>)> {
    let who = caller.require_identity()?;
    let request = parse_body(&body)?;
    let (repo, build) = ops::builds::promote(&state, who, &owner, &name, number, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(views::build_detail(&state, &repo, build).await?),
    ))
}

/// The body of `POST .../sign`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignRequest {
    /// The pipeline file's text.
    data: String,
}

async fn sign_file(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<Json<gantry_api::Signed>> {
    let who = caller.require_identity()?;
    let request: SignRequest = parse_body(&body)?;
    Ok(Json(
        ops::repos::sign(&state, who, &owner, &name, &request.data).await?,
    ))
}

async fn stop_signing(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<StatusCode> {
    let who = caller.require_identity()?;
    ops::repos::unsign(&state, who, &owner, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_environments(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<Json<Vec<gantry_api::Environment>>> {
    let (_, _, listed) = ops::environments::list(&state, caller.reader(), &owner, &name).await?;
    Ok(Json(listed.into_iter().map(views::environment).collect()))
}

/// `POST .../environments/redeploy` with `{"name": ..., "build": N}`: the new build (201).
async fn redeploy_environment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::BuildDetail>)> {
    let who = caller.require_identity()?;
    let (repo, build) =
        ops::environments::redeploy(&state, who, &owner, &name, parse_body(&body)?).await?;
    Ok((
        StatusCode::CREATED,
        Json(views::build_detail(&state, &repo, build).await?),
    ))
}

async fn list_protections(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<Json<Vec<gantry_api::ProtectedEnvironment>>> {
    let (_, rules) = ops::environments::protections(&state, caller.reader(), &owner, &name).await?;
    Ok(Json(rules.into_iter().map(views::protection).collect()))
}

async fn protect_environment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<Json<gantry_api::ProtectedEnvironment>> {
    let who = caller.require_identity()?;
    let rule = ops::environments::protect(&state, who, &owner, &name, parse_body(&body)?).await?;
    Ok(Json(views::protection(rule)))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Unprotect {
    pattern: String,
}

async fn unprotect_environment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<StatusCode> {
    let who = caller.require_identity()?;
    let request: Unprotect = parse_body(&body)?;
    ops::environments::unprotect(&state, who, &owner, &name, &request.pattern).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../builds/{n}/stages/{s}/approve` or `/decline`: a deployment to a protected
/// environment.
async fn decide_deployment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, number, stage, decision)): Path<(String, String, i64, i64, String)>,
) -> OpResult<Json<gantry_api::BuildDetail>> {
    let Some(decision) = ops::environments::Decision::parse(&decision) else {
        return Err(OpError::NotFound(format!(
            "there is no stage action `{decision}`: use approve or decline"
        )));
    };
    // A caller without a token is asked for one only where it may read the repository.
    let who = caller.require_identity().ok();
    let (repo, build) =
        ops::environments::decide(&state, who, (&owner, &name), (number, stage), decision).await?;
    Ok(Json(views::build_detail(&state, &repo, build).await?))
}

/// `POST .../environments/stop` with `{"name": ...}`: the stop build (201), or 204 when the
/// environment has no `on_stop` pipeline and is only marked stopped.
async fn stop_environment(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let who = caller.require_identity()?;
    let (repo, build) =
        ops::environments::stop(&state, who, &owner, &name, parse_body(&body)?).await?;
    Ok(match build {
        Some(build) => (
            StatusCode::CREATED,
            Json(views::build_detail(&state, &repo, build).await?),
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn list_schedules(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> OpResult<Json<Vec<gantry_api::Schedule>>> {
    let (_, listed) = ops::schedules::list(&state, caller.reader(), &owner, &name).await?;
    Ok(Json(listed.into_iter().map(views::schedule).collect()))
}

async fn add_schedule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::Schedule>)> {
    let who = caller.require_identity()?;
    let schedule = ops::schedules::add(&state, who, &owner, &name, parse_body(&body)?).await?;
    let listed = ops::schedules::Listed {
        schedule,
        last_build: None,
    };
    Ok((StatusCode::CREATED, Json(views::schedule(listed))))
}

async fn remove_schedule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, cron)): Path<(String, String, String)>,
) -> OpResult<StatusCode> {
    ops::schedules::remove(&state, caller.require_identity()?, &owner, &name, &cron).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn run_schedule(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, cron)): Path<(String, String, String)>,
) -> OpResult<(StatusCode, Json<gantry_api::BuildDetail>)> {
    let who = caller.require_identity()?;
    let (repo, build) = ops::schedules::run(&state, who, &owner, &name, &cron).await?;
    Ok((
        StatusCode::CREATED,
        Json(views::build_detail(&state, &repo, build).await?),
    ))
}

/// `POST .../builds/{n}/cancel`, `/approve` or `/decline`.
async fn act_on_build(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name, number, action)): Path<(String, String, i64, String)>,
) -> OpResult<Json<gantry_api::BuildDetail>> {
    let Some(action) = crate::BuildAction::parse(&action) else {
        return Err(OpError::NotFound(format!(
            "there is no build action `{action}`: use cancel, approve, decline or restart"
        )));
    };
    let who = caller.require_identity()?;
    let (repo, build) = ops::builds::act(&state, who, &owner, &name, number, action).await?;
    Ok(Json(views::build_detail(&state, &repo, build).await?))
}

async fn retention_status(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<gantry_api::Retention>> {
    let (retention, last) = ops::retention::status(&state, caller.require_identity()?).await?;
    Ok(Json(views::retention(retention, last)))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RunnerRegistration {
    name: String,
    #[serde(default)]
    owners: Vec<String>,
}

async fn register_runner(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> OpResult<(StatusCode, Json<gantry_api::CreatedRunnerToken>)> {
    let asked: RunnerRegistration = parse_body(&body)?;
    let (stored, token) = ops::runners::register(
        &state,
        caller.require_identity()?,
        &asked.name,
        &asked.owners,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(gantry_api::CreatedRunnerToken {
            name: stored.name,
            owners: stored.owners,
            token,
        }),
    ))
}

async fn list_runner_tokens(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<Vec<gantry_api::RunnerToken>>> {
    let tokens = ops::runners::tokens(&state, caller.require_identity()?).await?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| gantry_api::RunnerToken {
                id: t.id,
                name: t.name,
                owners: t.owners,
                created_at: t.created_at,
            })
            .collect(),
    ))
}

async fn revoke_runner_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> OpResult<StatusCode> {
    ops::runners::revoke(&state, caller.require_identity()?, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_runners(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> OpResult<Json<Vec<gantry_api::Runner>>> {
    let runners = ops::runners::list(&state, caller.require_identity()?).await?;
    Ok(Json(runners.into_iter().map(views::runner).collect()))
}
