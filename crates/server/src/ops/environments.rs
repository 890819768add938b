//! A repository's environments: listed by anyone who may read it; stopped by its writers,
//! who may start builds anyway (the stop runs the `on_stop` pipeline), and a protected one
//! only by its approvers; protected by its admins; deployments decided by their approvers.

use std::sync::Arc;

use gantry_pipeline::plan::DeployAction;
use gantry_store::{Build, Environment, NewProtection, ProtectedEnvironment, Repo, Role, Status};

use crate::AppState;
use crate::access::{self, Identity, Need};
use crate::error::{OpError, OpResult};
use crate::trigger::environments::StopError;

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// The environment's name, e.g. `review/feature-x`.
    pub name: String,
}

pub async fn list(
    state: &AppState,
    who: Option<&Identity>,
    owner: &str,
    name: &str,
) -> OpResult<(Repo, Role, Vec<Environment>)> {
    let (repo, role) = access::authorize(state, who, owner, name, Need::Read).await?;
    let environments = state.store.environments(repo.id).await?;
    Ok((repo, role, environments))
}

/// Stops an environment: the build of its `on_stop` pipeline, or `None` when it has none.
pub async fn stop(
    state: &Arc<AppState>,
    who: &Identity,
    owner: &str,
    name: &str,
    request: StopRequest,
) -> OpResult<(Repo, Option<Build>)> {
    let (repo, role) = access::authorize(state, Some(who), owner, name, Need::Write).await?;
    let environment = find(state, &repo, &request.name).await?;
    // Tearing down a protected environment by hand is for those who may deploy to it.
    let rules = state.store.protected_environments(repo.id).await?;
    if let Some(approval) = rules
        .iter()
        .find(|rule| rule.protects(&environment.name))
        .and_then(|rule| rule.approval(&environment.name))
    {
        let login = who.user.as_ref().map(|u| u.login.as_str());
        if !approval.allows(login, role) {
            return Err(OpError::Forbidden {
                needed: approval.role,
                message: format!(
                    "environment `{}` is protected: only {} may stop it by hand",
                    environment.name,
                    approval.approvers()
                ),
            });
        }
    }
    match crate::trigger::environments::stop(state, &repo, &environment, who.name()).await {
        Ok(build) => Ok((repo, build)),
        Err(e @ StopError::NotRunning(_)) => Err(OpError::Conflict(e.to_string())),
        Err(StopError::Store(e)) => Err(e.into()),
    }
}

/// The longest environment pattern or branch glob a rule may hold.
const MAX_PATTERN: usize = 200;

/// A glob over environment or branch names, trimmed, or an error naming `field`.
pub(crate) fn check_pattern(field: &str, pattern: &str) -> OpResult<String> {
    let pattern = pattern.trim();
    if pattern.is_empty() || pattern.len() > MAX_PATTERN || pattern.chars().any(char::is_control) {
        return Err(OpError::invalid_field(
            field,
            format!(
                "`{pattern}` is not a name pattern: use 1 to {MAX_PATTERN} printable characters, e.g. `production` or `review/*`"
            ),
        ));
    }
    gantry_pipeline::glob::Glob::new(pattern, gantry_pipeline::glob::Mode::Path).map_err(|e| {
        OpError::invalid_field(field, format!("`{pattern}` is not a valid glob: {e}"))
    })?;
    Ok(pattern.to_owned())
}

/// A protected environment rule to add or replace (`PUT .../environments/protected`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectRequest {
    /// A glob over environment names: `production`, `review/*`.
    pub pattern: String,
    /// Logins who may approve its deployments.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// `write` or `admin`: anyone with at least this role may approve.
    #[serde(default)]
    pub approver_role: Option<String>,
    /// Branch globs that may deploy to it (`refs/tags/GLOB` for tags); none: any.
    #[serde(default)]
    pub branches: Vec<String>,
}

/// The repository's protected environments; anyone who may read it may see who approves.
pub async fn protections(
    state: &AppState,
    who: Option<&Identity>,
    owner: &str,
    name: &str,
) -> OpResult<(Repo, Vec<ProtectedEnvironment>)> {
    let (repo, _) = access::authorize(state, who, owner, name, Need::Read).await?;
    let rules = state.store.protected_environments(repo.id).await?;
    Ok((repo, rules))
}

/// Adds or replaces a rule; needs the admin role.
pub async fn protect(
    state: &AppState,
    who: &Identity,
    owner: &str,
    name: &str,
    request: ProtectRequest,
) -> OpResult<ProtectedEnvironment> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Admin).await?;
    let pattern = check_pattern("pattern", &request.pattern)?;
    let approver_role = match request.approver_role.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(role) => match role.parse::<Role>() {
            Ok(role @ (Role::Write | Role::Admin)) => Some(role),
            _ => {
                return Err(OpError::invalid_field(
                    "approver_role",
                    format!("approver role `{role}` is not one: use write or admin"),
                ));
            }
        },
    };
    let mut approvers = Vec::new();
    for login in &request.approvers {
        let login = login.trim();
        let valid = !login.is_empty()
            && login.len() <= 39
            && login.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid {
            return Err(OpError::invalid_field(
                "approvers",
                format!("`{login}` is not a GitHub login: letters, digits and `-`, at most 39"),
            ));
        }
        approvers.push(login.to_owned());
    }
    let branches = request
        .branches
        .iter()
        .map(|branch| check_pattern("branches", branch))
        .collect::<OpResult<Vec<_>>>()?;
    if request.branches.len() > 50 || approvers.len() > 50 {
        return Err(OpError::invalid(
            "a rule holds at most 50 approvers and 50 branches: name a role instead".to_owned(),
        ));
    }
    let new = NewProtection {
        pattern: pattern.clone(),
        approvers,
        approver_role,
        branches,
    };
    state.store.put_protected_environment(repo.id, &new).await?;
    let rules = state.store.protected_environments(repo.id).await?;
    rules
        .into_iter()
        .find(|r| r.pattern == pattern)
        .ok_or_else(|| OpError::Internal(format!("rule `{pattern}` was saved but not found")))
}

/// Removes a rule; needs the admin role.
pub async fn unprotect(
    state: &AppState,
    who: &Identity,
    owner: &str,
    name: &str,
    pattern: &str,
) -> OpResult<()> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Admin).await?;
    Ok(state
        .store
        .delete_protected_environment(repo.id, pattern)
        .await?)
}

/// Approving or declining a deployment that waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Decline,
}

impl Decision {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "approve" => Some(Decision::Approve),
            "decline" => Some(Decision::Decline),
            _ => None,
        }
    }
}

/// Approves or declines stage `stage` of build `number`, a deployment to a protected
/// environment; only those its rule names may. Returns the build as it now is.
pub async fn decide(
    state: &Arc<AppState>,
    who: Option<&Identity>,
    (owner, name): (&str, &str),
    (number, stage): (i64, i64),
    decision: Decision,
) -> OpResult<(Repo, Build)> {
    // Whoever may not read the repository is told it is not there before being asked who
    // they are.
    let (repo, role) = access::authorize(state, who, owner, name, Need::Read).await?;
    let who = who.ok_or_else(|| {
        OpError::Unauthorized(
            "approving a deployment needs an API token: pass `Authorization: Bearer <token>` (the CLI reads GANTRY_TOKEN)"
                .to_owned(),
        )
    })?;
    let build = super::builds::find(state, &repo, number).await?;
    let stages = state.store.stages(build.id).await?;
    let found = stages
        .iter()
        .find(|s| s.number == stage)
        .ok_or_else(|| OpError::NotFound(format!("build #{number} has no stage {stage}")))?;
    let (Some(approval), Status::Blocked) = (&found.approval, found.status) else {
        return Err(OpError::Conflict(format!(
            "stage {stage} (`{}`) of build #{number} is not waiting for an approval ({})",
            found.name, found.status
        )));
    };
    let login = who.user.as_ref().map(|u| u.login.as_str());
    if !approval.allows(login, role) {
        return Err(OpError::Forbidden {
            needed: approval.role,
            message: format!(
                "only {} may approve or decline deployments to environment `{}`",
                approval.approvers(),
                approval.environment
            ),
        });
    }
    let done = match decision {
        Decision::Approve => state.store.approve_stage(found.id, who.name()).await?,
        Decision::Decline => state.store.decline_stage(found.id, who.name()).await?,
    };
    if !done {
        return Err(OpError::Conflict(format!(
            "stage {stage} of build #{number} was decided meanwhile"
        )));
    }
    tracing::info!(repo = %repo.full_name(), build = number, stage, by = who.name(), ?decision, environment = %approval.environment, "deployment decided");
    let build = super::builds::find(state, &repo, number).await?;
    Ok((repo, build))
}

/// Deploys an earlier deployment's build to its environment again (`POST
/// .../environments/redeploy`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeployRequest {
    /// The environment's name.
    pub name: String,
    /// The number of the build whose deployment to run again.
    pub build: i64,
}

/// Redeploys: a new build of that deployment's commit, running only what deploys there.
/// Needs the write role; the deployment must have succeeded.
pub async fn redeploy(
    state: &Arc<AppState>,
    who: &Identity,
    owner: &str,
    name: &str,
    request: RedeployRequest,
) -> OpResult<(Repo, Build)> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Write).await?;
    let environment = find(state, &repo, &request.name).await?;
    let deployment = environment
        .deployments
        .iter()
        .find(|d| d.build_number == request.build && d.action == DeployAction::Start)
        .ok_or_else(|| {
            OpError::NotFound(format!(
                "build #{} did not deploy to environment `{}` (or is older than its last {} deployments)",
                request.build,
                environment.name,
                gantry_store::ENVIRONMENT_HISTORY
            ))
        })?;
    if deployment.status != Status::Success {
        return Err(OpError::Conflict(format!(
            "the deployment of build #{} to `{}` did not succeed ({}): redeploy one that did",
            request.build, environment.name, deployment.status
        )));
    }
    let build = state.store.build_by_id(deployment.build_id).await?;
    let redeployed =
        crate::trigger::redeploy(state, &repo, &build, &environment.name, who.name()).await?;
    Ok((repo, redeployed))
}

/// An environment of `repo` by name, or a 404 that says how to list them.
async fn find(state: &AppState, repo: &Repo, name: &str) -> OpResult<Environment> {
    state
        .store
        .environment(repo.id, name)
        .await?
        .ok_or_else(|| {
            OpError::NotFound(format!(
                "{} has no environment `{name}`: `gantry env ls` lists them",
                repo.full_name()
            ))
        })
}
