//! Builds a caller starts or changes: a manual build (with parameters, or a deployment), a
//! restart, and cancel / approve / decline.

use std::collections::BTreeMap;

use gantry_store::{Build, BuildFilter, Repo, Role, Stage, Status, Step};

use crate::access::{self, Identity, Need};
use crate::error::{OpError, OpResult};
use std::sync::Arc;

use crate::{AppState, BuildAction, trigger};

/// A manual build: the head of `branch` (the default branch when `None`), or `commit` on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualBuild {
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// Given to steps as environment variables.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Makes it a deployment (`promote`) to this target.
    pub deploy_to: Option<String>,
}

/// Which builds of a repository, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildQuery {
    pub branch: Option<String>,
    pub status: Option<Status>,
    /// Only builds numbered below this (the next page).
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

/// The most builds one listing returns.
pub const MAX_LIST: i64 = 200;

/// A page of a repository's builds; needs the read role where the repository is not public.
pub async fn list(
    state: &AppState,
    who: Option<&Identity>,
    owner: &str,
    name: &str,
    query: BuildQuery,
) -> OpResult<(Repo, Role, Vec<Build>)> {
    let (repo, role) = access::authorize(state, who, owner, name, Need::Read).await?;
    let limit = query.limit.unwrap_or(25);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(OpError::invalid_field(
            "limit",
            format!("limit must be 1 to {MAX_LIST}"),
        ));
    }
    let filter = BuildFilter {
        branch: query.branch.filter(|b| !b.is_empty()),
        status: query.status,
        before: query.before,
        limit,
    };
    let builds = state.store.list_builds(repo.id, &filter).await?;
    Ok((repo, role, builds))
}

/// Each branch's latest build of a repository the caller may read, newest first.
pub async fn branches(
    state: &AppState,
    who: Option<&Identity>,
    owner: &str,
    name: &str,
) -> OpResult<(Repo, Role, Vec<Build>)> {
    let (repo, role) = access::authorize(state, who, owner, name, Need::Read).await?;
    let builds = state.store.latest_per_branch(repo.id, MAX_LIST).await?;
    Ok((repo, role, builds))
}

/// A build of a repository the caller may read.
pub async fn get(
    state: &AppState,
    who: Option<&Identity>,
    owner: &str,
    name: &str,
    number: i64,
) -> OpResult<(Repo, Role, Build)> {
    let (repo, role) = access::authorize(state, who, owner, name, Need::Read).await?;
    let build = find(state, &repo, number).await?;
    Ok((repo, role, build))
}

/// Where a step is: `stage` and `step` are the numbers of its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepAt<'a> {
    pub owner: &'a str,
    pub name: &'a str,
    pub number: i64,
    pub stage: i64,
    pub step: i64,
}

impl<'a> From<&'a (String, String, i64, i64, i64)> for StepAt<'a> {
    /// The path of a step's URL: owner, name, build, stage and step numbers.
    fn from((owner, name, number, stage, step): &'a (String, String, i64, i64, i64)) -> Self {
        StepAt {
            owner,
            name,
            number: *number,
            stage: *stage,
            step: *step,
        }
    }
}

/// A step of a build the caller may read, with its repository, build and stage.
pub async fn step(
    state: &AppState,
    who: Option<&Identity>,
    at: StepAt<'_>,
) -> OpResult<(Repo, Build, Stage, Step)> {
    let (repo, _, build) = get(state, who, at.owner, at.name, at.number).await?;
    let step = state
        .store
        .step_at(build.id, at.stage, at.step)
        .await?
        .ok_or_else(|| {
            OpError::NotFound(format!(
                "build #{} of {} has no step {}/{}",
                at.number,
                repo.full_name(),
                at.stage,
                at.step
            ))
        })?;
    let stage = state.store.stage(step.stage_id).await?;
    Ok((repo, build, stage, step))
}

/// A build's status filter as text (`success`, `failure`, ...), checked.
pub fn parse_status(text: &str) -> OpResult<Option<Status>> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<Status>()
        .map(Some)
        .map_err(|e| OpError::invalid_field("status", e))
}

/// Starts a manual build; needs the write role.
pub async fn create(
    state: &Arc<AppState>,
    who: &Identity,
    owner: &str,
    name: &str,
    request: ManualBuild,
) -> OpResult<(Repo, Build)> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Write).await?;
    check_manual(&request)?;
    let branch = request
        .branch
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| repo.default_branch.clone());
    let kind = match request.deploy_to.filter(|t| !t.trim().is_empty()) {
        Some(target) => trigger::HeadBuild::Deploy(target.trim().to_owned()),
        None => trigger::HeadBuild::Manual,
    };
    let build = trigger::head_build(
        state,
        &repo,
        branch.trim(),
        request.commit.as_deref(),
        request.params,
        kind,
        who.name(),
    )
    .await?;
    Ok((repo, build))
}

/// Builds build `number`'s commit and context again, as a new build; needs the write role.
pub async fn restart(
    state: &Arc<AppState>,
    who: &Identity,
    owner: &str,
    name: &str,
    number: i64,
) -> OpResult<(Repo, Build)> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Write).await?;
    let build = find(state, &repo, number).await?;
    let restarted = trigger::restart(state, &repo, &build, who.name()).await?;
    Ok((repo, restarted))
}

/// A deployment of a finished build (`gantry build promote REPO N TARGET`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    /// `production`, `staging`, ...: `DRONE_DEPLOY_TO`, matched by `target` conditions.
    pub target: String,
    /// Given to steps as environment variables, over the build's own.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// Deploys build `number`'s commit to a target as a new build; needs the write role. The
/// build must have finished (what is promoted is what was tested).
pub async fn promote(
    state: &Arc<AppState>,
    who: &Identity,
    owner: &str,
    name: &str,
    number: i64,
    request: Promotion,
) -> OpResult<(Repo, Build)> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Write).await?;
    let target = request.target.trim();
    if target.is_empty()
        || target.len() > 100
        || !target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
    {
        return Err(OpError::invalid_field(
            "target",
            format!(
                "target `{target}` is not valid: name an environment with letters, digits, `_`, `-`, `.` and `/` (e.g. `production`)"
            ),
        ));
    }
    check_params(&request.params)?;
    let build = find(state, &repo, number).await?;
    if !build.status.is_final() {
        return Err(OpError::Conflict(format!(
            "build #{number} is {}: promote it when it has finished",
            build.status
        )));
    }
    let promoted =
        trigger::promote(state, &repo, &build, target, request.params, who.name()).await?;
    Ok((repo, promoted))
}

/// Cancels, approves or declines build `number`; needs the write role. A build the action
/// does not apply to (already finished, not blocked) is a conflict.
pub async fn act(
    state: &Arc<AppState>,
    who: &Identity,
    owner: &str,
    name: &str,
    number: i64,
    action: BuildAction,
) -> OpResult<(Repo, Build)> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Write).await?;
    let build = find(state, &repo, number).await?;
    if !action.apply(state, build.id).await? {
        return Err(OpError::Conflict(format!(
            "build #{number} {} ({})",
            action.refused(),
            build.status
        )));
    }
    let build = find(state, &repo, number).await?;
    Ok((repo, build))
}

/// Build `number` of `repo`, or a 404 that names it.
pub async fn find(state: &AppState, repo: &Repo, number: i64) -> OpResult<Build> {
    state.store.build(repo.id, number).await?.ok_or_else(|| {
        OpError::NotFound(format!("build #{number} of {} not found", repo.full_name()))
    })
}

fn check_manual(request: &ManualBuild) -> OpResult<()> {
    check_params(&request.params)?;
    if let Some(commit) = &request.commit
        && !(commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(OpError::invalid_field(
            "commit",
            format!("commit `{commit}` is not a full 40-hex-digit sha"),
        ));
    }
    Ok(())
}

/// Parameters become environment variables: their names must be ones.
pub fn check_params(params: &BTreeMap<String, String>) -> OpResult<()> {
    for key in params.keys() {
        if key.is_empty()
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || key.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(OpError::invalid_field(
                "params",
                format!(
                    "parameter name `{key}` is not an environment variable name: use letters, digits and `_`, not starting with a digit"
                ),
            ));
        }
    }
    Ok(())
}
