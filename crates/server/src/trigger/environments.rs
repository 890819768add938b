//! Environments stop by themselves: when their branch is deleted, when their pull request is
//! closed, when `auto_stop_in` passes without a new deployment, or when a writer presses
//! *Stop*. A stop runs the environment's `on_stop` pipeline from the commit it was last
//! deployed from (an environment without one is marked stopped). Each is stopped exactly
//! once: the stop build takes its environment in the build's own transaction, and a second
//! attempt (another server, a retried delivery, a second press) finds it taken.

use std::sync::Arc;
use std::time::Duration;

use gantry_pipeline::context::StoppingEnvironment;
use gantry_pipeline::plan::DeployAction;
use gantry_pipeline::{Context, Event};
use gantry_store::{Build, Environment, Repo, StageApproval, Status, StoreError};
use std::collections::BTreeMap;

use crate::AppState;
use crate::github::Trigger;
use crate::worker::Next;

/// The maintenance claim the auto-stopper holds while it stops what is due.
const JOB: &str = "environments";
const CLAIM: Duration = Duration::from_secs(60);

/// Why an environment could not be stopped.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error(
        "environment `{0}` is already stopped or being stopped (or its stop failed: deploy it again to stop it anew)"
    )]
    NotRunning(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies the repository's protected environments to a new build's plan: a deployment from
/// a branch its rule does not list is skipped with the reason, and one that needs approval
/// is returned, by stage number, to be held until it is given. The first rule (by pattern)
/// that protects an environment is its rule. Stops are not held: tearing down is always
/// allowed to the environment's own `on_stop` pipeline.
pub(crate) async fn protect(
    state: &AppState,
    repo: &Repo,
    ctx: &Context,
    plan: &mut gantry_pipeline::Plan,
) -> Result<BTreeMap<u32, StageApproval>, StoreError> {
    let mut approvals = BTreeMap::new();
    let deploys = |stage: &gantry_pipeline::Stage| {
        stage.run
            && stage
                .deploy
                .as_ref()
                .is_some_and(|d| d.action == DeployAction::Start)
    };
    if !plan.stages.iter().any(deploys) {
        return Ok(approvals);
    }
    let rules = state.store.protected_environments(repo.id).await?;
    for stage in plan.stages.iter_mut().filter(|s| deploys(s)) {
        let Some(deploy) = &stage.deploy else {
            continue;
        };
        let Some(rule) = rules.iter().find(|r| r.protects(&deploy.environment)) else {
            continue;
        };
        if !rule.allows_ref(&ctx.branch, ctx.tag.as_deref()) {
            let built = match &ctx.tag {
                Some(tag) => format!("tag `{tag}`"),
                None => format!("`{}`", ctx.branch),
            };
            let reason = format!(
                "environment `{}` is protected: only branches {} deploy to it, not {built}",
                deploy.environment,
                rule.branches
                    .iter()
                    .map(|b| format!("`{b}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            stage.skip(reason);
            continue;
        }
        if let Some(approval) = rule.approval(&deploy.environment) {
            approvals.insert(stage.number, approval);
        }
    }
    Ok(approvals)
}

/// Stops `environment` of `repo` for `sender`: the build that runs its `on_stop` pipeline,
/// or `None` when it has none and is only marked stopped.
pub async fn stop(
    state: &Arc<AppState>,
    repo: &Repo,
    environment: &Environment,
    sender: &str,
) -> Result<Option<Build>, StopError> {
    if !environment.state.can_stop() {
        return Err(StopError::NotRunning(environment.name.clone()));
    }
    let deployed = environment
        .deployments
        .iter()
        // The last deployment that ran: a declined or superseded one never deployed.
        .find(|d| {
            d.action == DeployAction::Start
                && !matches!(d.status, Status::Skipped | Status::Declined)
        });
    let (Some(pipeline), Some(deployed)) = (&environment.on_stop, deployed) else {
        return if state.store.mark_environment_stopped(environment.id).await? {
            Ok(None)
        } else {
            Err(StopError::NotRunning(environment.name.clone()))
        };
    };
    let build = state.store.build_by_id(deployed.build_id).await?;
    let stopping = StoppingEnvironment {
        name: environment.name.clone(),
        url: environment.url.clone(),
        pipeline: pipeline.clone(),
    };
    match super::stop_environment(state, repo, &build, stopping, sender).await {
        Ok(build) => Ok(Some(build)),
        Err(StoreError::Conflict(_)) => Err(StopError::NotRunning(environment.name.clone())),
        Err(e) => Err(e.into()),
    }
}

/// Stops the environments a webhook ends: those of a deleted branch, or of a closed pull
/// request. Run before the delivery's own build, so that a delivery retried after a crash
/// stops them (again: a no-op) too.
pub async fn on_trigger(state: &Arc<AppState>, repo: &Repo, trigger: &Trigger) {
    let closed_pull_request = match (trigger.event, trigger.action.as_deref()) {
        (Event::PullRequest, Some("closed")) => {
            trigger.pull_request.and_then(|p| i64::try_from(p).ok())
        }
        _ => None,
    };
    let deleted_branch = trigger.event == Event::Delete && trigger.tag.is_none();
    // Most deliveries (pushes, opened pull requests) end no environment: read none for them.
    if closed_pull_request.is_none() && !deleted_branch {
        return;
    }
    let ends = |environment: &Environment| {
        (deleted_branch && environment.branch == trigger.branch)
            || (closed_pull_request.is_some() && environment.pull_request == closed_pull_request)
    };
    let environments = match state.store.environments(repo.id).await {
        Ok(environments) => environments,
        Err(e) => {
            tracing::error!(repo = %repo.full_name(), error = %e, "reading environments failed");
            return;
        }
    };
    for environment in environments.iter().filter(|e| ends(e)) {
        if let Err(e) = state.store.mark_branch_gone(environment.id).await {
            tracing::error!(repo = %repo.full_name(), environment = %environment.name, error = %e, "marking an environment's branch gone failed");
        }
        stop_logged(state, repo, environment, &trigger.sender).await;
    }
}

async fn stop_logged(state: &Arc<AppState>, repo: &Repo, environment: &Environment, sender: &str) {
    match stop(state, repo, environment, sender).await {
        Ok(build) => tracing::info!(
            repo = %repo.full_name(),
            environment = %environment.name,
            build = build.map(|b| b.number),
            "environment stopped"
        ),
        Err(StopError::NotRunning(_)) => {}
        Err(e) => tracing::error!(
            repo = %repo.full_name(),
            environment = %environment.name,
            error = %e,
            "stopping an environment failed"
        ),
    }
}

/// Stops environments whose `auto_stop_in` passed, one server at a time.
pub(crate) struct AutoStopper;

impl crate::worker::Job for AutoStopper {
    const NAME: &'static str = "environments";

    fn wakes_on(_: &gantry_store::Event) -> bool {
        false
    }

    async fn pass(&mut self, state: &Arc<AppState>) -> Result<Next, StoreError> {
        crate::worker::maintenance(state, JOB, CLAIM, |_, now| stop_due(state, now)).await
    }
}

async fn stop_due(state: &Arc<AppState>, now: i64) {
    let due = match state.store.environments_due_to_stop(now).await {
        Ok(due) => due,
        Err(e) => {
            tracing::error!(error = %e, "listing environments due to stop failed");
            return;
        }
    };
    for (repo_id, name) in due {
        let found = match state.store.repo(repo_id).await {
            Ok(repo) => state
                .store
                .environment(repo_id, &name)
                .await
                .map(|e| e.map(|e| (repo, e))),
            Err(e) => Err(e),
        };
        match found {
            Ok(Some((repo, environment))) => {
                stop_logged(state, &repo, &environment, "gantry").await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, environment = %name, "reading an environment failed")
            }
        }
    }
}

/// Makes the context of the build that deployed an environment that of the build that
/// stops it: the same commit and event, with the environment to stop.
pub fn stop_context(ctx: &mut Context, stopping: StoppingEnvironment) {
    ctx.stopping = Some(stopping);
    // Deployed by a redeploy: its stop runs the `on_stop` pipeline, not the deployment.
    ctx.redeploy = None;
}
