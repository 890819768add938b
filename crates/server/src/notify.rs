//! Notifications, outside every build's critical path: a worker finds builds whose status
//! changed since they were last notified, writes the messages they call for into the
//! outbox (commit statuses on GitHub; chat messages for a build's end, per target and rule),
//! and sends what is due, retrying with backoff. Whatever fails is kept on the build and
//! never changes its result.

use std::sync::Arc;
use std::time::Duration;

use gantry_store::{Build, NewMessage, NotifyTarget, OutboxMessage, Repo, Stage, Status, Step};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::AppState;

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
        .queue_notifications(
            build.id,
            build.notified_status.as_deref(),
            build.status,
            &messages,
        )
        .await?;
    if queued {
        tracing::debug!(messages = messages.len(), "notifications queued");
    }
    Ok(())
}

/// A build's stages with their steps.
async fn stages_of(
    state: &AppState,
    build: &Build,
) -> Result<Vec<(Stage, Vec<Step>)>, gantry_store::StoreError> {
    let mut out = Vec::new();
    for stage in state.store.stages(build.id).await? {
        let steps = state.store.steps(stage.id).await?;
        out.push((stage, steps));
    }
    Ok(out)
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

/// Drops ANSI escapes: chat shows plain text.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

async fn messages_for(
    state: &AppState,
    repo: &Repo,
    build: &Build,
) -> Result<Vec<NewMessage>, gantry_store::StoreError> {
    let mut messages = Vec::new();
    let before = build_notified_before(build);
    let stages = stages_of(state, build).await?;
    if github_state(build.status).is_some() {
        // Pending once (the first news of a build, even one that ended before the
        // notifier saw it: then pending comes first), the final states once.
        let any_ran = stages.iter().any(|(s, _)| s.status != Status::Skipped);
        if !before && build.status.is_final() && any_ran {
            messages.extend(github_statuses(
                state,
                repo,
                build,
                &stages,
                Some(Status::Pending),
            ));
        }
        if build.status.is_final() || !before {
            messages.extend(github_statuses(state, repo, build, &stages, None));
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
            let report = Report::new(state, repo, build, &stages).await?;
            for target in targets.iter().filter(|t| wants(t, build, recovered)) {
                messages.push(NewMessage {
                    kind: target.kind.clone(),
                    url: target.url.clone(),
                    body: chat_body(&target.kind, &report).to_string(),
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

fn github_state(status: Status) -> Option<&'static str> {
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
fn github_statuses(
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
    let url = format!(
        "{}/repos/{}/{}/statuses/{}",
        state.config.github_api.trim_end_matches('/'),
        repo.owner,
        repo.name,
        build.commit
    );
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
        kind: "github_status".to_owned(),
        url: url.clone(),
        body: json!({
            "state": status,
            "target_url": link,
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
            kind: "github_status".to_owned(),
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
    let event_ok = target.events.is_empty() || target.events.iter().any(|e| e == &build.event);
    let failed = matches!(build.status, Status::Failure | Status::Error);
    let rule_ok = target.rules.iter().any(|rule| match rule.as_str() {
        "always" => build.status != Status::Skipped,
        "failure" => failed,
        "recovery" => recovered,
        "success" => build.status == Status::Success,
        _ => false,
    });
    branch_ok && event_ok && rule_ok
}

/// What a chat message says about a build.
#[derive(Debug, Clone)]
pub struct Report {
    pub number: i64,
    pub status: Status,
    pub headline: String,
    /// Branch, tag or pull request.
    pub reference: String,
    pub commit: String,
    pub message: String,
    pub author: String,
    pub duration: String,
    pub link: String,
    /// The first failing step's log, and its name.
    pub failing: Option<(String, String)>,
    /// Its last lines, masked as every log is.
    pub tail: Vec<String>,
}

/// Lines of the failing step's log a message carries.
const TAIL_LINES: u64 = 8;

impl Report {
    async fn new(
        state: &AppState,
        repo: &Repo,
        build: &Build,
        stages: &[(Stage, Vec<Step>)],
    ) -> Result<Self, gantry_store::StoreError> {
        let link = build_link(state, repo, build);
        let mut failing = None;
        let mut tail = Vec::new();
        if let Some((stage, step)) = first_failing(stages) {
            failing = Some((
                format!("{link}/{}/{}", stage.number, step.number),
                format!("{} / {}", stage.name, step.name),
            ));
            let last = state.store.log_last_line(step.id).await?;
            let from = last.saturating_sub(TAIL_LINES - 1).max(1);
            tail = state
                .store
                .read_log(step.id, from, TAIL_LINES as usize)
                .await?
                .into_iter()
                .map(|l| plain(&l.text))
                .collect();
        }
        let reference = match (&build.tag, build.pull_request) {
            (Some(tag), _) => format!("tag {tag}"),
            (None, Some(pr)) => format!("pull request #{pr} ({})", build.branch),
            _ => build.branch.clone(),
        };
        let verb = match build.status {
            Status::Success if failing.is_none() => "passed",
            Status::Success => "passed",
            Status::Failure => "failed",
            Status::Error => "errored",
            Status::Killed => "was cancelled",
            other => other.as_str(),
        };
        Ok(Report {
            number: build.number,
            status: build.status,
            headline: format!(
                "{} build #{} {verb} on {reference}",
                repo.full_name(),
                build.number
            ),
            reference,
            commit: build.commit.chars().take(8).collect(),
            message: build.message.lines().next().unwrap_or("").to_owned(),
            author: build.author.clone(),
            duration: duration(build),
            link,
            failing,
            tail,
        })
    }

    /// A message for `gantry notify test`.
    pub fn test(state: &AppState, repo: &str) -> Self {
        Report {
            number: 0,
            status: Status::Success,
            headline: format!("gantry test notification for {repo}"),
            reference: "-".to_owned(),
            commit: "-".to_owned(),
            message: "If you can read this, gantry reaches this chat.".to_owned(),
            author: "gantry".to_owned(),
            duration: "-".to_owned(),
            link: state.config.server_url.clone(),
            failing: None,
            tail: Vec::new(),
        }
    }

    fn colour(&self) -> &'static str {
        match self.status {
            Status::Success => "#2e9e44",
            Status::Failure => "#d73a49",
            _ => "#8a3ab9",
        }
    }

    fn details(&self) -> String {
        format!(
            "{} · {} {} · by {} · {}",
            self.reference, self.commit, self.message, self.author, self.duration
        )
    }

    fn tail_block(&self) -> String {
        if self.tail.is_empty() {
            String::new()
        } else {
            format!("```\n{}\n```", self.tail.join("\n"))
        }
    }
}

/// The message in the format of `kind`.
pub fn chat_body(kind: &str, report: &Report) -> Value {
    let failing_text = report
        .failing
        .as_ref()
        .map(|(url, name)| (url.clone(), format!("Failing step: {name}")));
    match kind {
        "discord" => {
            let mut fields = vec![
                json!({"name": "Commit", "value": format!("{} {}", report.commit, report.message), "inline": false}),
                json!({"name": "Author", "value": report.author, "inline": true}),
                json!({"name": "Duration", "value": report.duration, "inline": true}),
            ];
            if let Some((url, name)) = &report.failing {
                fields.push(json!({"name": "Failing step", "value": format!("[{name}]({url})"), "inline": false}));
            }
            let mut description = format!("[Build #{}]({})", report.number, report.link);
            if !report.tail.is_empty() {
                description.push('\n');
                description.push_str(&report.tail_block());
            }
            json!({
                "content": report.headline,
                "embeds": [{
                    "title": report.headline,
                    "url": report.failing.as_ref().map_or(&report.link, |(u, _)| u),
                    "description": description,
                    "color": u32::from_str_radix(report.colour().trim_start_matches('#'), 16).unwrap_or(0),
                    "fields": fields,
                }]
            })
        }
        "teams" => {
            let mut body = vec![
                json!({"type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": report.headline, "wrap": true}),
                json!({"type": "FactSet", "facts": [
                    {"title": "Ref", "value": report.reference},
                    {"title": "Commit", "value": format!("{} {}", report.commit, report.message)},
                    {"title": "Author", "value": report.author},
                    {"title": "Duration", "value": report.duration},
                ]}),
            ];
            if !report.tail.is_empty() {
                body.push(json!({"type": "TextBlock", "text": report.tail.join("\n"), "fontType": "Monospace", "wrap": true}));
            }
            let mut actions = vec![
                json!({"type": "Action.OpenUrl", "title": "Open the build", "url": report.link}),
            ];
            if let Some((url, title)) = &failing_text {
                actions.insert(
                    0,
                    json!({"type": "Action.OpenUrl", "title": title, "url": url}),
                );
            }
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": body,
                        "actions": actions,
                    }
                }]
            })
        }
        "googlechat" => {
            let mut text = format!(
                "*{}*\n{}\n<{}|Build #{}>",
                report.headline,
                report.details(),
                report.link,
                report.number
            );
            if let Some((url, title)) = &failing_text {
                text.push_str(&format!(" · <{url}|{title}>"));
            }
            if !report.tail.is_empty() {
                text.push('\n');
                text.push_str(&report.tail_block());
            }
            json!({ "text": text })
        }
        // Slack, and the Slack-compatible incoming webhooks of Mattermost and Rocket.Chat.
        _ => {
            let mut text = format!(
                "<{}|Build #{}> · {}",
                report.link,
                report.number,
                report.details()
            );
            if let Some((url, title)) = &failing_text {
                text.push_str(&format!("\n<{url}|{title}>"));
            }
            if !report.tail.is_empty() {
                text.push('\n');
                text.push_str(&report.tail_block());
            }
            json!({
                "text": report.headline,
                "attachments": [{
                    "color": report.colour(),
                    "title": report.headline,
                    "title_link": report.failing.as_ref().map_or(&report.link, |(u, _)| u),
                    "text": text,
                    "fallback": report.headline,
                }]
            })
        }
    }
}

/// How long a claim on a message lasts: longer than one attempt (its 15 s timeout), so a
/// live server never loses a message to another; a dead one's claims are due again after.
const MESSAGE_LEASE: Duration = Duration::from_secs(30);

/// Sends due messages one claim at a time, until none is due.
async fn send_due(state: &Arc<AppState>) -> Result<(), gantry_store::StoreError> {
    loop {
        let now = state.config.clock.now_ms();
        let lease_until = now + MESSAGE_LEASE.as_millis() as i64;
        let Some(message) = state.store.claim_message(now, lease_until).await? else {
            return Ok(());
        };
        let outcome = send(state, &message).await;
        // Sent but not yet marked is the one window in which a message may go twice: a
        // server that dies here leaves the claim to run out, and another sends it again.
        match outcome {
            Ok(()) => {
                state
                    .store
                    .message_sent(message.id, message.claim_epoch)
                    .await?
            }
            Err((error, retry)) => {
                let attempts = message.attempts + 1;
                let retry_at = retry
                    .filter(|_| attempts < MAX_ATTEMPTS)
                    .map(|after| state.config.clock.now_ms() + after.as_millis() as i64);
                tracing::warn!(message.id = message.id, kind = %message.kind, attempts, %error, will_retry = retry_at.is_some(), "a notification failed");
                state
                    .store
                    .message_failed(message.id, message.claim_epoch, &error, retry_at)
                    .await?;
            }
        }
    }
}

/// The backoff before attempt `attempts + 1`.
fn backoff(base: Duration, attempts: i64) -> Duration {
    let factor = 1u32 << attempts.clamp(0, 10);
    (base * factor).min(Duration::from_secs(600))
}

/// Posts one message. `Err` carries the reason and, when worth trying again, after how long.
async fn send(state: &AppState, message: &OutboxMessage) -> Result<(), (String, Option<Duration>)> {
    let url = match message.url.strip_prefix(SECRET_URL) {
        Some(secret) => secret_url(state, message.build_id, secret)
            .await
            .map_err(|e| (e, None))?,
        None => message.url.clone(),
    };
    // Commit statuses go to the configured GitHub API; every other target was chosen by a
    // repository's admin or a pipeline file, and goes through the guarded client.
    let client = if message.kind == "github_status" {
        &state.http
    } else {
        let parsed = reqwest::Url::parse(&url).map_err(|_| {
            (
                format!("{} is not a valid URL", host_of(&message.url)),
                None,
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err((
                format!("{} is not an http(s) URL", host_of(&message.url)),
                None,
            ));
        }
        state
            .config
            .outbound
            .check_url(&parsed)
            .map_err(|refusal| (refusal.to_string(), None))?;
        &state.outbound_http
    };
    let mut request = client
        .post(&url)
        .header("content-type", "application/json")
        .header("user-agent", "gantry")
        .timeout(Duration::from_secs(15))
        .body(message.body.clone());
    if message.kind == "github_status" {
        let token = match message.build_id {
            Some(build) => github_token(state, build).await,
            None => None,
        };
        let Some(token) = token else {
            return Err((
                "no GitHub token: set the repository's github_token or GANTRY_GITHUB_TOKEN"
                    .to_owned(),
                None,
            ));
        };
        request = request
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json");
    }
    let retry = backoff(state.config.notify_retry, message.attempts);
    let response = request.send().await.map_err(|e| {
        // The reason, never the URL (a webhook's path is its secret); a refused address
        // is not tried again.
        let refused = crate::outbound::Refused::cause_of(&e).map(ToString::to_string);
        let e = e.without_url();
        tracing::info!(target = %host_of(&message.url), error = %e, "a notification was not delivered");
        let reason = refused.clone().unwrap_or_else(|| e.to_string());
        (
            format!("{} did not answer: {reason}", host_of(&message.url)),
            refused.is_none().then_some(retry),
        )
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let rate_limited = status.as_u16() == 429
        || (status.as_u16() == 403
            && response
                .headers()
                .get("x-ratelimit-remaining")
                .is_some_and(|v| v == "0"));
    let reset = response
        .headers()
        .get("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .map(|at| Duration::from_secs((at - chrono::Utc::now().timestamp()).clamp(1, 3600) as u64));
    // Readers see the status and the host; the answer's body (which may hold what an
    // internal service says) goes only to the server's log, for its admins.
    let text: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    tracing::info!(target = %host_of(&message.url), %status, answer = %text, "a notification was refused");
    let error = format!("{} answered {status}", host_of(&message.url));
    if rate_limited {
        Err((error, Some(reset.unwrap_or(retry))))
    } else if status.is_server_error() {
        Err((error, Some(retry)))
    } else {
        Err((error, None))
    }
}

/// The webhook URL a pipeline's `notify:` keeps in a secret of its repository.
async fn secret_url(state: &AppState, build_id: Option<i64>, name: &str) -> Result<String, String> {
    let lookup = async {
        let build = state.store.build_by_id(build_id?).await.ok()?;
        let repo = state.store.repo(build.repo_id).await.ok()?;
        let sealed = state
            .store
            .sealed_secrets(repo.id, &repo.owner)
            .await
            .ok()?
            .into_iter()
            .rev()
            .find(|s| s.name == name)?;
        Some((build.fork && !sealed.allow_pull_requests, sealed))
    };
    match lookup.await {
        Some((true, _)) => Err(format!(
            "secret `{name}` is withheld from pull requests from forks"
        )),
        Some((false, sealed)) => state
            .config
            .secret_key
            .open(&sealed.scope().associated_data(name), &sealed.sealed)
            .map(|v| String::from_utf8_lossy(&v).trim().to_owned())
            .map_err(|e| format!("secret `{name}` could not be opened: {e}")),
        None => Err(format!(
            "the webhook URL is in the secret `{name}`, which the repository does not have: add it with `gantry secret add`"
        )),
    }
}

async fn github_token(state: &AppState, build_id: i64) -> Option<String> {
    let build = state.store.build_by_id(build_id).await.ok()?;
    let repo = state.store.repo(build.repo_id).await.ok()?;
    crate::credentials::github_token(state, &repo).0
}

/// `https://hooks.slack.com/…`: where a message went, without the secret part of its URL
/// (no path, query or credentials).
pub fn host_of(url: &str) -> String {
    if let Some(secret) = url.strip_prefix(SECRET_URL) {
        return format!("(the URL in secret {secret})");
    }
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let scheme = url.split_once("://").map_or("https", |(s, _)| s);
    format!("{scheme}://{host}/…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_escapes_are_dropped_for_chat() {
        assert_eq!(plain("\u{1b}[31merror\u{1b}[0m: boom"), "error: boom");
        assert_eq!(plain("no colour"), "no colour");
    }

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff(base, 0), Duration::from_secs(1));
        assert_eq!(backoff(base, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, 20), Duration::from_secs(600));
    }

    #[test]
    fn webhook_urls_are_shown_without_their_secret_path() {
        assert_eq!(
            host_of("https://hooks.slack.com/services/T/B/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            host_of("https://user:pass@chat.example?token=x"),
            "https://chat.example/…"
        );
    }
}
