//! Chat messages: what a build's end says ([`Report`]), in each service's own format
//! (Slack, Discord, Teams, Google Chat, Mattermost, a plain webhook).

use gantry_pipeline::model::ChatKind;
use gantry_pipeline::plan::DeployAction;

use super::*;

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
    /// What it did to environments: "deployed to production (https://...)".
    pub environments: Vec<String>,
}

/// Lines of the failing step's log a message carries.
pub(super) const TAIL_LINES: u64 = 8;

impl Report {
    pub(super) async fn new(
        state: &AppState,
        repo: &Repo,
        build: &Build,
        (stages, deployments): (&[(Stage, Vec<Step>)], &[gantry_store::BuildDeployment]),
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
        let mut environments = Vec::new();
        for deployment in deployments {
            let Some((stage, _)) = stages.iter().find(|(s, _)| s.id == deployment.stage_id) else {
                continue;
            };
            let env = &deployment.environment;
            let url = deployment
                .url
                .as_ref()
                .map_or(String::new(), |u| format!(" ({u})"));
            environments.push(match (deployment.action, stage.status) {
                (DeployAction::Start, Status::Success) => format!("deployed to {env}{url}"),
                (DeployAction::Start, Status::Declined) => {
                    format!("deployment to {env} declined")
                }
                (DeployAction::Start, Status::Skipped) => continue,
                (DeployAction::Start, status) => format!("deployment to {env}: {status}"),
                (DeployAction::Stop, Status::Success) => format!("stopped {env}"),
                (DeployAction::Stop, Status::Skipped) => continue,
                (DeployAction::Stop, status) => format!("stopping {env}: {status}"),
            });
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
            environments,
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
            environments: Vec::new(),
        }
    }

    pub(super) fn colour(&self) -> &'static str {
        match self.status {
            Status::Success => "#2e9e44",
            Status::Failure => "#d73a49",
            _ => "#8a3ab9",
        }
    }

    pub(super) fn details(&self) -> String {
        let mut details = format!(
            "{} · {} {} · by {} · {}",
            self.reference, self.commit, self.message, self.author, self.duration
        );
        for environment in &self.environments {
            details.push_str(" · ");
            details.push_str(environment);
        }
        details
    }

    pub(super) fn tail_block(&self) -> String {
        if self.tail.is_empty() {
            String::new()
        } else {
            format!("```\n{}\n```", self.tail.join("\n"))
        }
    }
}

/// The message in the format of `kind`.
pub fn chat_body(kind: ChatKind, report: &Report) -> Value {
    let failing_text = report
        .failing
        .as_ref()
        .map(|(url, name)| (url.clone(), format!("Failing step: {name}")));
    match kind {
        ChatKind::Discord => {
            let mut fields = vec![
                json!({"name": "Commit", "value": format!("{} {}", report.commit, report.message), "inline": false}),
                json!({"name": "Author", "value": report.author, "inline": true}),
                json!({"name": "Duration", "value": report.duration, "inline": true}),
            ];
            if !report.environments.is_empty() {
                fields.push(json!({"name": "Environments", "value": report.environments.join("\n"), "inline": false}));
            }
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
        ChatKind::Teams => {
            let mut facts = vec![
                json!({"title": "Ref", "value": report.reference}),
                json!({"title": "Commit", "value": format!("{} {}", report.commit, report.message)}),
                json!({"title": "Author", "value": report.author}),
                json!({"title": "Duration", "value": report.duration}),
            ];
            if !report.environments.is_empty() {
                facts.push(
                    json!({"title": "Environments", "value": report.environments.join("; ")}),
                );
            }
            let mut body = vec![
                json!({"type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": report.headline, "wrap": true}),
                json!({"type": "FactSet", "facts": facts}),
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
        ChatKind::GoogleChat => {
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
        ChatKind::Slack | ChatKind::Mattermost | ChatKind::RocketChat => {
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

/// Drops ANSI escapes: chat shows plain text.
pub(super) fn plain(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_escapes_are_dropped_for_chat() {
        assert_eq!(plain("\u{1b}[31merror\u{1b}[0m: boom"), "error: boom");
        assert_eq!(plain("no colour"), "no colour");
    }
}
