//! Notifications, outside every build's critical path: a worker finds builds whose status
//! changed since they were last notified, writes the messages they call for into the
//! outbox (commit statuses and deployments on GitHub; chat messages for a build's end, per
//! target and rule), and sends what is due, retrying with backoff. Whatever fails is kept on
//! the build and never changes its result.
//!
//! Here: the worker and what a change calls for (detection, targets and rules); `github`
//! makes commit statuses and deployment statuses, `chat` each service's message, `outbox`
//! sends them.

use std::sync::Arc;
use std::time::Duration;

use gantry_pipeline::model::NotifyRule;
use gantry_store::{
    Build, MessageKind, NewMessage, NotifyTarget, OutboxMessage, Repo, Stage, Status, Step,
};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::AppState;

mod chat;
mod github;
mod outbox;

pub use chat::{Report, chat_body};
use github::{github_deployments, github_state, github_statuses};
pub use outbox::host_of;
use outbox::send_due;

/// A pipeline's target whose URL is in a secret: `secret:NAME`.
const SECRET_URL: &str = "secret:";

/// Attempts before a message is given up (about 17 minutes with the default backoff).
const MAX_ATTEMPTS: i64 = 10;

/// The longest the notifier goes without looking at the store (news from another server
/// can be lost with its `LISTEN` connection).
const NOTIFY_POLL: Duration = Duration::from_secs(2);

/// The shortest wait between passes: a message due now may still wait behind an earlier
/// one of its build that another server is sending.
const NOTIFY_MIN_WAIT: Duration = Duration::from_millis(200);

/// Makes the messages of builds that changed, and sends what is due.
pub(crate) struct Notifier;

impl crate::worker::Job for Notifier {
    const NAME: &'static str = "notifier";

    fn wakes_on(event: &gantry_store::Event) -> bool {
        matches!(
            event,
            gantry_store::Event::BuildChanged { .. } | gantry_store::Event::MessageQueued
        )
    }

    async fn pass(
        &mut self,
        state: &Arc<AppState>,
    ) -> Result<crate::worker::Next, gantry_store::StoreError> {
        queue_due_builds(state).await?;
        send_due(state).await?;
        let now = state.config.clock.now_ms();
        let wait = match state.store.next_message_due().await? {
            Some(due) => {
                Duration::from_millis((due - now).max(0) as u64).clamp(NOTIFY_MIN_WAIT, NOTIFY_POLL)
            }
            None => NOTIFY_POLL,
        };
        Ok(crate::worker::Next::After(wait))
    }
}

async fn queue_due_builds(state: &AppState) -> Result<(), gantry_store::StoreError> {
    for build in state.store.builds_to_notify(50).await? {
        let span = tracing::info_span!("build", build.id = build.id, status = %build.status);
        queue_for(state, build).instrument(span).await?;
    }
    Ok(())
}

/// Queues the messages of one build's change.
async fn queue_for(state: &AppState, build: Build) -> Result<(), gantry_store::StoreError> {
    let repo = state.store.repo(build.repo_id).await?;
    let messages = messages_for(state, &repo, &build).await?;
    // Another server may have queued this change already: then this one queues nothing.
    let queued = state
        .store
        .queue_notifications(build.id, build.notified_status, build.status, &messages)
        .await?;
    if queued {
        tracing::debug!(messages = messages.len(), "notifications queued");
    }
    Ok(())
}

fn build_link(state: &AppState, repo: &Repo, build: &Build) -> String {
    format!(
        "{}/{}/{}/{}",
        state.config.server_url, repo.owner, repo.name, build.number
    )
}

/// The first step that failed or errored, as (stage, step).
fn first_failing(stages: &[(Stage, Vec<Step>)]) -> Option<(&Stage, &Step)> {
    stages.iter().find_map(|(stage, steps)| {
        steps
            .iter()
            .find(|s| matches!(s.status, Status::Failure | Status::Error))
            .map(|step| (stage, step))
    })
}

fn duration(build: &Build) -> String {
    match crate::human::took(build.started_at, build.finished_at).as_str() {
        "" | "running" => "-".to_owned(),
        took => took.to_owned(),
    }
}

async fn messages_for(
    state: &AppState,
    repo: &Repo,
    build: &Build,
) -> Result<Vec<NewMessage>, gantry_store::StoreError> {
    let mut messages = Vec::new();
    let before = build_notified_before(build);
    let stages = state.store.stages_with_steps(build.id).await?;
    // Without a GitHub token no status could be sent: none is queued (the settings page
    // says statuses are off and how to turn them on), rather than one failure per stage.
    let statuses_on = crate::credentials::github_token(state, repo).0.is_some();
    // What the build does to environments: for GitHub and for chat (a fork's does nothing).
    let deployments = if build.fork {
        Vec::new()
    } else {
        state.store.build_deployments(build.id).await?
    };
    if statuses_on && github_state(build.status).is_some() {
        // Pending once (the first news of a build, even one that ended before the
        // notifier saw it: then pending comes first), the final states once.
        let any_ran = stages.iter().any(|(s, _)| s.status != Status::Skipped);
        if !before && build.status.is_final() && any_ran {
            let pending = Some(Status::Pending);
            messages.extend(github_statuses(state, repo, build, &stages, pending));
            let started: Vec<_> = deployments
                .iter()
                .filter(|d| {
                    stages
                        .iter()
                        .any(|(s, _)| s.id == d.stage_id && s.status != Status::Skipped)
                })
                .cloned()
                .collect();
            messages.extend(github_deployments(
                state,
                repo,
                build,
                (&stages, &started),
                Some(Status::Running),
            ));
        }
        if build.status.is_final() || !before {
            messages.extend(github_statuses(state, repo, build, &stages, None));
            messages.extend(github_deployments(
                state,
                repo,
                build,
                (&stages, &deployments),
                None,
            ));
        }
    }
    if build.status.is_final() {
        let mut targets = state.store.targets_for(repo.id).await?;
        // The pipelines' own `notify:` targets, once each; never a fork's, whose author
        // would choose where the server sends requests from.
        let own_targets = if build.fork {
            Vec::new()
        } else {
            state.store.stage_plans(build.id).await?
        };
        for plan in own_targets {
            for spec in plan.notify {
                let url = match (spec.url, spec.url_secret) {
                    (Some(url), _) => url,
                    (None, Some(secret)) => format!("{SECRET_URL}{secret}"),
                    (None, None) => continue,
                };
                if targets.iter().any(|t| t.kind == spec.kind && t.url == url) {
                    continue;
                }
                targets.push(NotifyTarget {
                    id: 0,
                    repo_id: Some(repo.id),
                    kind: spec.kind,
                    url,
                    rules: spec.on,
                    branches: spec.branches,
                    events: spec.events,
                    created_at: 0,
                });
            }
        }
        if !targets.is_empty() {
            let recovered = recovered(state, build).await?;
            let report = Report::new(state, repo, build, (&stages, &deployments)).await?;
            for target in targets.iter().filter(|t| wants(t, build, recovered)) {
                messages.push(NewMessage {
                    kind: MessageKind::Chat(target.kind),
                    url: target.url.clone(),
                    body: chat_body(target.kind, &report).to_string(),
                    auth: None,
                });
            }
        }
    }
    Ok(messages)
}

/// Whether this build's statuses were notified before (it is past its first notification).
fn build_notified_before(build: &Build) -> bool {
    build.notified_status.is_some()
}

/// A success after a failure on the same branch.
async fn recovered(state: &AppState, build: &Build) -> Result<bool, gantry_store::StoreError> {
    if build.status != Status::Success {
        return Ok(false);
    }
    let previous = state
        .store
        .previous_finished_build(build.repo_id, &build.branch, build.number)
        .await?;
    Ok(previous.is_some_and(|p| matches!(p.status, Status::Failure | Status::Error)))
}

/// Whether a target wants this build: its branches, events and rules.
fn wants(target: &NotifyTarget, build: &Build, recovered: bool) -> bool {
    let branch_ok =
        target.branches.is_empty() || target.branches.iter().any(|b| b == &build.branch);
    let event_ok =
        target.events.is_empty() || target.events.iter().any(|e| e == build.event.as_str());
    let failed = matches!(build.status, Status::Failure | Status::Error);
    let rule_ok = target.rules.iter().any(|rule| match rule {
        NotifyRule::Always => build.status != Status::Skipped,
        NotifyRule::Failure => failed,
        NotifyRule::Recovery => recovered,
        NotifyRule::Success => build.status == Status::Success,
    });
    branch_ok && event_ok && rule_ok
}
