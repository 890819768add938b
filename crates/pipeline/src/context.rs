//! What is known about a build when its pipeline is compiled: the event, the commit, the
//! repository. Conditions are evaluated against it and the `CI_*` / `DRONE_*` variables come
//! from it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What triggered a build. Woodpecker's names are accepted as aliases: `manual` is `custom`,
/// `deployment` is `promote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Push,
    PullRequest,
    Tag,
    Promote,
    Rollback,
    Cron,
    Custom,
    /// A branch or tag was deleted: lets a pipeline tear down a review environment.
    Delete,
}

impl Event {
    pub const ALL: [Event; 8] = [
        Event::Push,
        Event::PullRequest,
        Event::Tag,
        Event::Promote,
        Event::Rollback,
        Event::Cron,
        Event::Custom,
        Event::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Push => "push",
            Event::PullRequest => "pull_request",
            Event::Tag => "tag",
            Event::Promote => "promote",
            Event::Rollback => "rollback",
            Event::Cron => "cron",
            Event::Custom => "custom",
            Event::Delete => "delete",
        }
    }

    /// The name Woodpecker gives the same event (`CI_PIPELINE_EVENT`).
    pub fn woodpecker_name(self) -> &'static str {
        match self {
            Event::Promote | Event::Rollback => "deployment",
            Event::Custom => "manual",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown event `{0}`: expected one of push, pull_request, tag, promote, rollback, cron, custom, delete"
)]
pub struct UnknownEvent(pub String);

impl FromStr for Event {
    type Err = UnknownEvent;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "push" => Event::Push,
            "pull_request" | "pr" => Event::PullRequest,
            "tag" => Event::Tag,
            "promote" | "deployment" | "deploy" => Event::Promote,
            "rollback" => Event::Rollback,
            "cron" => Event::Cron,
            "custom" | "manual" => Event::Custom,
            "delete" => Event::Delete,
            other => return Err(UnknownEvent(other.to_owned())),
        })
    }
}

/// The repository a build belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoInfo {
    pub owner: String,
    pub name: String,
    pub default_branch: String,
    /// The clone URL registered for the repository (never one taken from a webhook payload).
    pub clone_url: String,
    /// The repository's web page, e.g. `https://github.com/owner/name`.
    pub link: String,
    pub private: bool,
}

impl RepoInfo {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// The most changed files a build keeps (they are stored with it).
pub const MAX_CHANGED_FILES: usize = 10_000;

/// Everything a pipeline may depend on for one build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub event: Event,
    /// Pull request action (`opened`, `synchronize`, `reopened`, `closed`) and the like.
    pub action: Option<String>,
    /// The branch pushed to; for a pull request its source branch; for a tag, empty.
    pub branch: String,
    /// The git ref, e.g. `refs/heads/main`, `refs/tags/v1.0`, `refs/pull/7/head`.
    pub reference: String,
    pub tag: Option<String>,
    pub commit: String,
    pub before: Option<String>,
    pub message: String,
    pub author: String,
    pub author_email: String,
    pub pull_request: Option<u64>,
    pub pull_request_title: Option<String>,
    /// Labels of the pull request (`CI_COMMIT_PULL_REQUEST_LABELS`, comma-joined).
    pub pull_request_labels: Vec<String>,
    /// The pull request's base branch (what `branch` conditions compare for pull requests).
    pub target_branch: Option<String>,
    pub deploy_target: Option<String>,
    pub cron: Option<String>,
    /// Files changed by the push or pull request: before..after of a push (the whole tree
    /// of a new branch), base...head of a pull request.
    pub changed_files: Vec<String>,
    /// Why the changed files could not be computed; `path` conditions then cannot be
    /// decided and the build errors with this reason rather than guess.
    #[serde(default)]
    pub changed_files_error: Option<String>,
    /// More files changed than a build keeps ([`MAX_CHANGED_FILES`], a new branch of a large
    /// repository): `changed_files` is empty and every `path` condition holds, so that
    /// nothing that may need to run is skipped.
    #[serde(default)]
    pub changed_files_overflow: bool,
    pub repo: RepoInfo,
    /// Whether the repository may use privileged steps and host volumes.
    pub trusted: bool,
    /// A pull request from a fork: its code is another's, and deploys nowhere.
    #[serde(default)]
    pub fork: bool,
    pub build_number: u64,
    pub parent: Option<u64>,
    /// The build's page, used in links.
    pub link: String,
    /// The server's host name, for `instance` conditions.
    pub instance: String,
    /// Parameters of a manual build, given to steps as environment variables.
    pub params: BTreeMap<String, String>,
    /// When the build was created, seconds since the epoch.
    pub created: i64,
    /// How big and how old a cache may grow on a runner.
    #[serde(default)]
    pub cache_policy: CachePolicy,
    /// Set in a build made to stop an environment: only its `on_stop` pipeline runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<StoppingEnvironment>,
    /// Set in a build that deploys an earlier build's commit to this environment again
    /// (a rollback): only the stages deploying there run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeploy: Option<String>,
}

/// The environment a build stops, and the pipeline that tears it down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppingEnvironment {
    pub name: String,
    pub url: Option<String>,
    /// The `on_stop` pipeline, by name.
    pub pipeline: String,
}

/// Limits of the caches a build's stages keep between builds (set by the server's
/// retention settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachePolicy {
    /// A cache bigger than this after a stage is removed (the next build starts it afresh).
    pub max_bytes: u64,
    /// A cache created longer ago than this is removed and started afresh.
    pub max_age_secs: u64,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            max_age_secs: 7 * 24 * 3600,
        }
    }
}

impl Context {
    /// A push to `branch` of `owner/name`; the other fields are empty and may be set after.
    pub fn push(repo: &str, branch: &str) -> Self {
        let (owner, name) = repo.split_once('/').unwrap_or(("", repo));
        Self {
            event: Event::Push,
            action: None,
            branch: branch.to_owned(),
            reference: format!("refs/heads/{branch}"),
            tag: None,
            commit: String::new(),
            before: None,
            message: String::new(),
            author: String::new(),
            author_email: String::new(),
            pull_request: None,
            pull_request_title: None,
            pull_request_labels: Vec::new(),
            target_branch: None,
            deploy_target: None,
            cron: None,
            changed_files: Vec::new(),
            changed_files_error: None,
            changed_files_overflow: false,
            repo: RepoInfo {
                owner: owner.to_owned(),
                name: name.to_owned(),
                default_branch: branch.to_owned(),
                clone_url: String::new(),
                link: String::new(),
                private: false,
            },
            trusted: false,
            fork: false,
            build_number: 1,
            parent: None,
            link: String::new(),
            instance: String::new(),
            cache_policy: CachePolicy::default(),
            stopping: None,
            redeploy: None,
            params: BTreeMap::new(),
            created: 0,
        }
    }

    /// The branch `branch` conditions compare: the target branch of a pull request.
    pub fn condition_branch(&self) -> &str {
        match (self.event, &self.target_branch) {
            (Event::PullRequest, Some(target)) => target,
            _ => &self.branch,
        }
    }

    pub fn is_closed_pull_request(&self) -> bool {
        self.event == Event::PullRequest && self.action.as_deref() == Some("closed")
    }
}
