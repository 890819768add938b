//! The JSON API's answers, shared by the server (which builds them from its store rows, so
//! that no row, and no credential a row holds, is ever serialised) and by the CLI (which
//! reads them typed). What a field means is said here once; the server's `views` module
//! fills them, the CLI prints them.
//!
//! # Code map
//!
//! The API's answers (`Repo`, `Build`, `BuildDetail`, `Stage`, `Step`, `Token`, `User`, ...):
//! what a caller sees of each resource, said once. The server's `views` fills them from store
//! rows; the CLI decodes them. **Invariant:** store rows are not `Serialize`: nothing reaches a
//! caller but through a view, and a view has no field for a credential.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use gantry_pipeline::model::PipelineType;
pub use gantry_proto::{ErrorBody, Offer, Status};

/// A repository: never its webhook secret, token or deploy key, only whether each is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Repo {
    pub id: i64,
    pub owner: String,
    pub name: String,
    pub full_name: String,
    /// Where gantry fetches it from.
    pub clone_url: String,
    /// Its web page (commit links).
    pub link: String,
    /// The pipeline file's path; empty for the defaults.
    pub config_path: String,
    pub default_branch: String,
    /// May run privileged steps, host volumes and host pipelines.
    pub trusted: bool,
    /// `public`, `internal` or `private`.
    pub visibility: String,
    pub timeout_secs: i64,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// Pull requests from forks: `run`, or `approve`.
    pub fork_policy: String,
    pub has_webhook_secret: bool,
    pub has_github_token: bool,
    pub has_ssh_key: bool,
    /// Builds only signed pipeline files (`gantry sign`).
    pub signed_files: bool,
    /// Where GitHub sends this repository's webhooks.
    pub webhook_url: String,
}

/// A build as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Build {
    pub id: i64,
    pub repo_id: i64,
    pub number: i64,
    /// The build this one restarts.
    pub parent: Option<i64>,
    pub event: String,
    pub action: Option<String>,
    #[serde(rename = "ref")]
    pub reference: String,
    pub branch: String,
    pub tag: Option<String>,
    pub commit: String,
    pub message: String,
    pub author: String,
    /// Who or what started it.
    pub sender: String,
    pub pull_request: Option<i64>,
    pub source_branch: Option<String>,
    pub target_branch: Option<String>,
    pub deploy_to: Option<String>,
    pub params: BTreeMap<String, String>,
    /// waiting, pending, running, success, failure, error, killed, skipped, blocked or declined.
    #[schema(value_type = String)]
    pub status: Status,
    /// Why it errored: for an invalid pipeline file, its `FILE:LINE:COLUMN` errors.
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// A pull request from a fork.
    pub fork: bool,
    /// When retention removed its step logs (the build and its steps stay).
    #[serde(default)]
    pub logs_removed_at: Option<i64>,
}

/// One build with its stages, their steps, and what was reported about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildDetail {
    #[serde(flatten)]
    pub build: Build,
    /// `owner/name`.
    pub repo: String,
    /// The build's page.
    pub link: String,
    pub stages: Vec<Stage>,
    /// Commit statuses and chat messages, with their state and last error.
    pub notifications: Vec<Notification>,
}

/// A stage (one pipeline of the file) with its steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stage {
    pub id: i64,
    pub build_id: i64,
    pub number: i64,
    pub name: String,
    /// waiting, pending, running, success, failure, error, killed, skipped, blocked or declined.
    #[schema(value_type = String)]
    pub status: Status,
    pub error: Option<String>,
    pub depends_on: Vec<String>,
    /// Runner labels it needs.
    pub labels: BTreeMap<String, String>,
    /// `os/arch`.
    pub platform: String,
    /// The pipeline's `type`.
    #[schema(value_type = String)]
    pub backend: PipelineType,
    /// The runner that ran it.
    pub runner: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub steps: Vec<Step>,
    /// Why a stage that has not started waits: approval, no runner that can take it (and
    /// what each runner lacks), or every such runner busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The environment it deploys to, or stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<StageDeploy>,
    /// Who may approve it, when it deploys to a protected environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<StageApproval>,
}

/// What a stage does to an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StageDeploy {
    pub environment: String,
    pub url: Option<String>,
    /// `start` (a deployment) or `stop` (its `on_stop` pipeline).
    pub action: String,
}

/// The approval a deployment to a protected environment needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StageApproval {
    pub environment: String,
    /// Logins who may approve.
    pub users: Vec<String>,
    /// Anyone with at least this role may approve.
    pub role: Option<String>,
    /// Who approved or declined it, once someone did.
    pub decided_by: Option<String>,
}

/// A protected environment rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProtectedEnvironment {
    /// A glob over environment names: `production`, `review/*`.
    pub pattern: String,
    /// Logins who may approve its deployments.
    pub approvers: Vec<String>,
    /// `write` or `admin`: anyone with at least this role may approve.
    pub approver_role: Option<String>,
    /// Branch globs that may deploy to it (`refs/tags/GLOB` for tags); empty: any.
    pub branches: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub id: i64,
    pub stage_id: i64,
    pub number: i64,
    pub name: String,
    /// `clone`, `commands`, `plugin` or `service`.
    pub kind: String,
    /// waiting, pending, running, success, failure, error, killed, skipped, blocked or declined.
    #[schema(value_type = String)]
    pub status: Status,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A commit status or chat message about a build (never its URL or body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    pub id: i64,
    pub build_id: Option<i64>,
    /// `github` or a chat service.
    pub kind: String,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

/// An API token or a browser session (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub id: i64,
    pub name: String,
    /// A service token with every right.
    pub admin: bool,
    /// The user it acts for; `None` for a service token.
    pub user_id: Option<i64>,
    /// A browser session from a sign-in.
    pub session: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A token just made: the only time it is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub id: i64,
    pub name: String,
    pub admin: bool,
    /// The login it acts for.
    pub user: Option<String>,
    pub token: String,
}

/// The caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    pub login: Option<String>,
    /// The token's name.
    pub token: String,
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: i64,
    pub login: String,
    /// A server admin.
    pub admin: bool,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

/// A role held on a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RepoRole {
    pub repo_id: i64,
    pub user_id: i64,
    pub login: String,
    /// `github` (as GitHub gives it, cached) or `admin` (set by a server admin).
    pub source: String,
    /// `read`, `write` or `admin`.
    pub role: String,
    pub fetched_at: i64,
}

/// A role just set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoleSet {
    pub login: String,
    pub repo: String,
    pub role: String,
}

/// A secret by name (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    pub name: String,
    /// Given to pull requests from forks too.
    pub allow_pull_requests: bool,
    /// Given only to stages that deploy to an environment this glob matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A secret just added or replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretSaved {
    pub name: String,
    pub allow_pull_requests: bool,
}

/// A registry login (never its password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Registry {
    /// The registry's host and port (`docker.io` for Docker Hub).
    pub host: String,
    pub username: String,
    /// Builds of pull requests from forks may pull with it too.
    pub allow_pull_requests: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A runner as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Runner {
    pub name: String,
    pub instance: String,
    pub labels: BTreeMap<String, String>,
    pub platform: String,
    pub capacity: i64,
    /// What it may run: containers, host pipelines.
    #[schema(value_type = Object)]
    pub offer: Offer,
    pub last_seen_at: i64,
}

/// A runner's own token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunnerToken {
    pub id: i64,
    /// The runner it is for: a runner presenting it must use this name.
    pub name: String,
    /// The owners whose repositories' stages it may claim; empty: any.
    pub owners: Vec<String>,
    pub created_at: i64,
}

/// A runner's token just made: the only time it is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedRunnerToken {
    pub name: String,
    pub owners: Vec<String>,
    pub token: String,
}

/// A chat target: its webhook shown as its host only (the path is a credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Target {
    pub id: i64,
    /// `None`: a server-wide default.
    pub repo_id: Option<i64>,
    pub kind: String,
    pub url: String,
    pub rules: Vec<String>,
    pub branches: Vec<String>,
    pub events: Vec<String>,
    pub created_at: i64,
}

/// A schedule (`gantry cron`): a cron build of a branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Schedule {
    pub name: String,
    /// `0 3 * * 1-5`, `@daily`, ... read in `timezone`.
    pub expression: String,
    /// An IANA time zone name.
    pub timezone: String,
    pub branch: String,
    pub params: BTreeMap<String, String>,
    /// When it runs next (milliseconds since the epoch).
    pub next_run_at: i64,
    /// When it last ran, by its clock or by `gantry cron run`.
    pub last_run_at: Option<i64>,
    /// The number and status of the build its last run made.
    pub last_build: Option<ScheduledBuild>,
    /// Why its last tick made no build (its branch could not be read), until one does.
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

/// An environment a repository's pipelines deploy to (`deploy:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Environment {
    pub name: String,
    /// `CI_ENVIRONMENT_SLUG`.
    pub slug: String,
    pub url: Option<String>,
    /// `deploying`, `available`, `failed`, `stopping`, `stopped`, `stop_failed` or
    /// `not_deployed`.
    pub state: String,
    /// Its branch no longer exists (it was deleted, or its pull request closed).
    #[serde(default)]
    pub branch_gone: bool,
    /// The pipeline that stops it.
    pub on_stop: Option<String>,
    /// When it stops by itself (milliseconds since the epoch).
    pub auto_stop_at: Option<i64>,
    /// The branch (and pull request) its last deployment came from.
    pub branch: String,
    pub pull_request: Option<i64>,
    /// Its deployments and stops, newest first.
    pub deployments: Vec<Deployment>,
}

/// One deployment to an environment, or one run of its `on_stop` pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deployment {
    /// `start` or `stop`.
    pub action: String,
    pub build: i64,
    #[schema(value_type = String)]
    pub status: Status,
    pub commit: String,
    pub branch: String,
    pub author: String,
    pub url: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// The build a schedule's last run made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScheduledBuild {
    pub number: i64,
    #[schema(value_type = String)]
    pub status: Status,
}

/// A pipeline file's signature (`gantry sign`): the `kind: signature` document to end the
/// file with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Signed {
    /// HMAC-SHA256 (hex) of the file without its signature documents, under the
    /// repository's signing key.
    pub hmac: String,
    /// The document itself, to append after a `---` line.
    pub document: String,
}

/// What the server keeps (days; 0 keeps for ever), and its last retention run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Retention {
    pub build_days: u32,
    pub builds_per_branch: u32,
    pub log_days: u32,
    pub delivery_days: u32,
    pub message_days: u32,
    /// How often it runs, in seconds.
    pub every_secs: u64,
    /// Caches on runners are started afresh after this many days...
    pub cache_days: u32,
    /// ...and removed after a stage that grew one past this many MiB.
    pub cache_max_mib: u64,
    pub last_run: Option<RetentionRun>,
}

/// What one retention run removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetentionRun {
    /// When it ran (milliseconds since the epoch).
    pub at: i64,
    pub builds: i64,
    /// Builds whose step logs were removed (the builds stay).
    pub build_logs: i64,
    pub log_lines: i64,
    pub deliveries: i64,
    pub messages: i64,
    /// What the SQLite file gave back (0 on PostgreSQL).
    pub bytes_freed: i64,
    pub batches: i64,
}

/// A message queued in the outbox (a test message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Queued {
    pub queued: i64,
}

/// One window of a search of a step's log: `GET .../logs/{stage}/{step}/search?q=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepLogSearch {
    /// Numbers of the matching lines, in order.
    pub matches: Vec<u64>,
    /// Where the next window starts (`from=`) when this one stopped at a bound; null once
    /// the search reached the end of what is stored.
    pub next: Option<u64>,
    /// The last line this window looked at.
    pub searched_to: u64,
    /// The log's last stored line when the window ended.
    pub total: u64,
    /// Whether the step has ended (no line will be added).
    pub ended: bool,
}

/// A line of a build's log that matched a search across builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogHit {
    pub build: i64,
    pub branch: String,
    pub commit: String,
    /// The build's status.
    #[schema(value_type = String)]
    pub status: Status,
    pub created_at: i64,
    pub stage: String,
    pub step: String,
    pub line: u64,
    /// The line's text, cut to 500 characters.
    pub text: String,
    /// The line in the web UI (`.../{stage}/{step}#L{line}`).
    pub link: String,
}

/// What a search across a repository's builds found, newest build first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RepoLogSearch {
    pub hits: Vec<LogHit>,
    /// How many builds were searched.
    pub builds_searched: usize,
    /// Why the search stopped before the builds asked for, when it did (a bound).
    pub stopped: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build as the server writes it reads back whole: `ref` keeps git's name, statuses
    /// and the pipeline type are their lowercase names, and the detail's fields sit beside
    /// the build's.
    #[test]
    fn a_build_detail_round_trips_through_its_json() {
        let detail = BuildDetail {
            build: Build {
                id: 1,
                repo_id: 2,
                number: 3,
                parent: None,
                event: "push".into(),
                action: None,
                reference: "refs/heads/main".into(),
                branch: "main".into(),
                tag: None,
                commit: "a".repeat(40),
                message: "fix".into(),
                author: "octocat".into(),
                sender: "octocat".into(),
                pull_request: None,
                source_branch: None,
                target_branch: None,
                deploy_to: None,
                params: BTreeMap::new(),
                status: Status::Failure,
                error: None,
                cancel_requested: false,
                created_at: 10,
                started_at: Some(11),
                finished_at: Some(12),
                fork: false,
                logs_removed_at: None,
            },
            repo: "acme/app".into(),
            link: "http://ci/acme/app/3".into(),
            stages: vec![Stage {
                id: 4,
                build_id: 1,
                number: 1,
                name: "ci".into(),
                status: Status::Failure,
                error: None,
                depends_on: vec![],
                labels: BTreeMap::new(),
                platform: "linux/amd64".into(),
                backend: PipelineType::Docker,
                runner: Some("r1".into()),
                created_at: 10,
                started_at: Some(11),
                finished_at: Some(12),
                steps: vec![],
                waiting: None,
                deploy: None,
                approval: None,
            }],
            notifications: vec![],
        };
        let json = serde_json::to_value(&detail).expect("serialises");
        assert_eq!(json["ref"], "refs/heads/main");
        assert_eq!(json["status"], "failure");
        assert_eq!(json["stages"][0]["backend"], "docker");
        assert_eq!(json["repo"], "acme/app");
        let back: BuildDetail = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, detail);
    }
}
