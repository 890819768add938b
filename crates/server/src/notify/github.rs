//! GitHub commit statuses: one for the build (`gantry`) and one per pipeline
//! (`gantry/NAME`), linking the first failing step; and GitHub deployments with their
//! statuses, for the stages that deploy to an environment.

use gantry_pipeline::plan::DeployAction;

use super::*;

pub(super) fn github_state(status: Status) -> Option<&'static str> {
    match status {
        Status::Pending | Status::Running | Status::Blocked | Status::Waiting => Some("pending"),
        Status::Success => Some("success"),
        Status::Failure => Some("failure"),
        Status::Error | Status::Killed | Status::Declined => Some("error"),
        Status::Skipped => None,
    }
}

/// The commit statuses of the build and of each stage that runs, as they are now or, with
/// `as_if`, as if all of them were in that state.
pub(super) fn github_statuses(
    state: &AppState,
    repo: &Repo,
    build: &Build,
    stages: &[(Stage, Vec<Step>)],
    as_if: Option<Status>,
) -> Vec<NewMessage> {
    let build_status = as_if.unwrap_or(build.status);
    let Some(status) = github_state(build_status).filter(|_| !build.commit.is_empty()) else {
        return Vec::new();
    };
    let url = state
        .github
        .status_url(&repo.owner, &repo.name, &build.commit);
    let link = build_link(state, repo, build);
    let describe = |status: Status| match status {
        Status::Pending | Status::Waiting | Status::Blocked => "waiting to run".to_owned(),
        Status::Running => "running".to_owned(),
        Status::Success => format!("passed in {}", duration(build)),
        Status::Failure => format!("failed after {}", duration(build)),
        Status::Killed => "cancelled".to_owned(),
        other => other.as_str().to_owned(),
    };
    let mut out = vec![NewMessage {
        kind: MessageKind::GithubStatus,
        url: url.clone(),
        body: json!({
            "state": status,
            // A failed build's status opens its first failing step, where the side panel
            // holds the rest of the build.
            "target_url": first_failing(stages)
                .filter(|_| as_if.is_none())
                .map_or(link.clone(), |(stage, step)| format!("{link}/{}/{}", stage.number, step.number)),
            "description": format!("Build #{} {}", build.number, describe(build_status)),
            "context": "gantry",
        })
        .to_string(),
        auth: None,
    }];
    for (stage, steps) in stages {
        let stage_status = match as_if {
            Some(_) if stage.status == Status::Skipped => continue,
            Some(status) => status,
            None => stage.status,
        };
        let Some(stage_state) = github_state(stage_status) else {
            continue;
        };
        let target = steps
            .iter()
            .find(|s| matches!(s.status, Status::Failure | Status::Error))
            .filter(|_| as_if.is_none())
            .map_or(link.clone(), |step| {
                format!("{link}/{}/{}", stage.number, step.number)
            });
        out.push(NewMessage {
            kind: MessageKind::GithubStatus,
            url: url.clone(),
            body: json!({
                "state": stage_state,
                "target_url": target,
                "description": format!("{} {}", stage.name, describe(stage_status)),
                "context": format!("gantry/{}", stage.name),
            })
            .to_string(),
            auth: None,
        });
    }
    out
}

/// A deployment's state on GitHub for its stage's status.
fn deployment_state(status: Status) -> &'static str {
    match status {
        // Waiting for its approval.
        Status::Blocked => "queued",
        Status::Pending | Status::Waiting | Status::Running => "in_progress",
        Status::Success => "success",
        Status::Failure => "failure",
        Status::Error | Status::Killed | Status::Declined => "error",
        // Superseded before it started: it never deployed.
        Status::Skipped => "inactive",
    }
}

/// The GitHub deployment statuses of the build's deployments, as their stages are now or,
/// with `as_if`, as if each were in that state: a deployment is created on GitHub with its
/// first status (so the pull request shows "deployed to ..." with *View deployment*), and a
/// stop that succeeded makes the deployment it ended `inactive`.
pub(super) fn github_deployments(
    state: &AppState,
    repo: &Repo,
    build: &Build,
    (stages, deployments): (&[(Stage, Vec<Step>)], &[gantry_store::BuildDeployment]),
    as_if: Option<Status>,
) -> Vec<NewMessage> {
    if build.commit.is_empty() {
        return Vec::new();
    }
    let url = state.github.deployments_url(&repo.owner, &repo.name);
    let link = build_link(state, repo, build);
    let mut out = Vec::new();
    for deployment in deployments {
        let Some((stage, _)) = stages.iter().find(|(s, _)| s.id == deployment.stage_id) else {
            continue;
        };
        let status = as_if.unwrap_or(stage.status);
        let log_url = format!("{link}#stage-{}", stage.number);
        let body = match deployment.action {
            DeployAction::Start => json!({
                "deployment": deployment.id,
                "create": {
                    "ref": build.commit,
                    "environment": deployment.environment,
                    "auto_merge": false,
                    // gantry's own statuses are this build's; GitHub need not wait for them.
                    "required_contexts": [],
                    "production_environment": deployment.environment == "production",
                    "description": format!("gantry build #{}", build.number),
                    "payload": { "build": build.number, "stage": stage.name },
                },
                "status": {
                    "state": deployment_state(status),
                    "environment_url": deployment.url,
                    "log_url": log_url,
                    "description": match (status, &stage.error) {
                        (Status::Declined | Status::Skipped, Some(why)) => why.chars().take(140).collect(),
                        _ => format!("{} {}", stage.name, status),
                    },
                    "auto_inactive": true,
                },
            }),
            DeployAction::Stop => {
                let Some(stopped) = deployment.stopped.filter(|_| status == Status::Success) else {
                    continue;
                };
                json!({
                    "deployment": stopped,
                    "create": null,
                    "status": {
                        "state": "inactive",
                        "log_url": log_url,
                        "description": format!("stopped by build #{}", build.number),
                    },
                })
            }
        };
        out.push(NewMessage {
            kind: MessageKind::GithubDeployment,
            url: url.clone(),
            body: body.to_string(),
            auth: None,
        });
    }
    out
}
