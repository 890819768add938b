//! Builds a caller starts or changes: a manual build (with parameters, or a deployment), a
//! restart, and cancel / approve / decline.

use std::collections::BTreeMap;

use gantry_store::{Build, Repo};

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
    let build = trigger::manual_build(
        state,
        &repo,
        branch.trim(),
        request.commit.as_deref(),
        request.params,
        request.deploy_to.filter(|t| !t.trim().is_empty()),
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
    for key in request.params.keys() {
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
