//! GitHub commit statuses: one for the build (`gantry`) and one per pipeline
//! (`gantry/NAME`), linking the first failing step.

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
