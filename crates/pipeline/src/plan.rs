//! The plan: what a build will execute, stage by stage and step by step, with everything
//! resolved (conditions, environment, scripts, order). The runner executes it without reading
//! the pipeline file again; `gantry plan` prints it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{
    ContainerOptions, Failure, Mount, PipelineType, Platform, Pull, Resources, Retry, StatusFilter,
    Volume,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub stages: Vec<Stage>,
}

/// One pipeline (or one matrix combination of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    /// 1-based, in file order; used in links.
    pub number: u32,
    pub run: bool,
    /// Why the stage is skipped.
    pub reason: Option<String>,
    /// Stages that must finish first. Skipped stages are looked through: a stage depends on
    /// what its skipped dependencies depended on.
    pub depends_on: Vec<String>,
    /// Which outcomes of `depends_on` let the stage run.
    pub runs_on: StatusFilter,
    pub file: String,
    pub backend: PipelineType,
    pub platform: Platform,
    /// Runner labels the stage needs.
    pub labels: BTreeMap<String, String>,
    pub matrix: BTreeMap<String, String>,
    /// Absolute path of the shared workspace inside containers.
    pub workspace: String,
    pub clone: Option<CloneSpec>,
    /// Variables every step and service of the stage gets (`CI_*`, `DRONE_*`, the pipeline's
    /// `environment`, matrix axes). A step's own `environment` overrides them.
    pub environment: BTreeMap<String, String>,
    pub secrets: Vec<SecretEnv>,
    pub volumes: Vec<Volume>,
    pub services: Vec<PlanStep>,
    /// In execution order: every step comes after the steps it depends on.
    pub steps: Vec<PlanStep>,
    pub timeout_secs: Option<u64>,
    /// The pipeline's own chat targets (`notify:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::model::NotifySpec>,
    /// Secrets (by name) holding Docker `config.json` logins for the stage's images
    /// (`image_pull_secrets`); the server reads them into registry credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
    /// Locks the stage holds while it runs: the pipeline's `lock` and its running steps'.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<String>,
    /// At most this many stages of this pipeline run at once in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Where the stage's caches live, when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// Where and how its pod runs when a runner on Kubernetes takes it.
    #[serde(default, skip_serializing_if = "crate::model::PodOptions::is_empty")]
    pub pod: crate::model::PodOptions,
    /// The environment the stage deploys to, or (`action` stop) tears down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeploySpec>,
}

/// An environment a stage deploys to or stops, its name and URL substituted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySpec {
    pub environment: String,
    /// `CI_ENVIRONMENT_SLUG`.
    pub slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub action: DeployAction,
    /// The pipeline that stops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_stop: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_stop_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployAction {
    Start,
    Stop,
}

impl DeployAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployAction::Start => "start",
            DeployAction::Stop => "stop",
        }
    }
}

impl DeploySpec {
    /// The variables its steps see: GitLab's names, and Drone's `DRONE_DEPLOY_TO`.
    pub fn variables(&self) -> [(String, String); 5] {
        let action = self.action.as_str();
        [
            ("CI_ENVIRONMENT_NAME".to_owned(), self.environment.clone()),
            ("CI_ENVIRONMENT_SLUG".to_owned(), self.slug.clone()),
            (
                "CI_ENVIRONMENT_URL".to_owned(),
                self.url.clone().unwrap_or_default(),
            ),
            ("CI_ENVIRONMENT_ACTION".to_owned(), action.to_owned()),
            ("DRONE_DEPLOY_TO".to_owned(), self.environment.clone()),
        ]
    }
}

/// The scope of a stage's caches: a cache belongs to a repository and a scope (a branch, a
/// pull request or a tag), and a scope that has none yet starts from its `fallback` (the
/// default branch's). Pull requests never write to a branch's cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSpec {
    pub repo: String,
    pub scope: String,
    pub fallback: Option<String>,
    pub max_bytes: u64,
    pub max_age_secs: u64,
}

/// How the workspace is filled before the first step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneSpec {
    pub url: String,
    pub reference: String,
    pub commit: String,
    pub depth: Option<u32>,
    pub tags: bool,
    pub skip_verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// The built-in clone of the repository into the workspace.
    Clone,
    /// Runs `script` in `image`.
    Commands,
    /// Runs the image's own entrypoint, configured by `PLUGIN_*` variables.
    Plugin,
    /// A service container, detached for the stage's lifetime.
    Service,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Clone => "clone",
            StepKind::Commands => "commands",
            StepKind::Plugin => "plugin",
            StepKind::Service => "service",
        }
    }
}

impl std::str::FromStr for StepKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            StepKind::Clone,
            StepKind::Commands,
            StepKind::Plugin,
            StepKind::Service,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == s)
        .ok_or_else(|| {
            format!("unknown step kind `{s}`: expected clone, commands, plugin or service")
        })
    }
}

impl TryFrom<String> for StepKind {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

/// An environment variable whose value is a secret, filled in by the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEnv {
    pub env: String,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    pub name: String,
    /// 1-based within the stage, in execution order; services are numbered after steps.
    pub number: u32,
    pub kind: StepKind,
    pub run: bool,
    /// Why the step is skipped.
    pub reason: Option<String>,
    pub depends_on: Vec<String>,
    /// At which stage status (at the moment the step is due) it runs. Steps without a
    /// `status` condition run only while the stage is passing.
    pub run_on: StatusFilter,
    pub image: Option<String>,
    pub pull: Pull,
    /// The step's own variables, on top of the stage's.
    pub environment: BTreeMap<String, String>,
    pub secrets: Vec<SecretEnv>,
    pub commands: Vec<String>,
    /// `commands` as one POSIX shell script (`set -e`, each command echoed as `+ command`).
    pub script: Option<String>,
    pub shell: String,
    pub entrypoint: Vec<String>,
    pub command: Vec<String>,
    pub failure: Failure,
    pub detach: bool,
    pub privileged: bool,
    pub mounts: Vec<Mount>,
    pub network_mode: Option<String>,
    pub user: Option<String>,
    pub working_dir: String,
    pub resources: Resources,
    pub timeout_secs: Option<u64>,
    /// A failed try runs again, in a fresh container, up to `retry.count` times.
    #[serde(default, skip_serializing_if = "Retry::is_never")]
    pub retry: Retry,
    /// Docker's container options (DNS, hosts, devices, ports, capabilities, limits, tmpfs).
    #[serde(default, skip_serializing_if = "ContainerOptions::is_empty")]
    pub options: ContainerOptions,
}

impl Plan {
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// Names of the steps that will run (or may run, by status), stage by stage.
    pub fn running_steps(&self) -> Vec<(&str, Vec<&str>)> {
        self.stages
            .iter()
            .filter(|s| s.run)
            .map(|s| {
                (
                    s.name.as_str(),
                    s.steps
                        .iter()
                        .filter(|st| st.run)
                        .map(|st| st.name.as_str())
                        .collect(),
                )
            })
            .collect()
    }
}

impl Stage {
    pub fn step(&self, name: &str) -> Option<&PlanStep> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Makes it a stage that does not run, for `reason`; its steps say why.
    pub fn skip(&mut self, reason: String) {
        self.run = false;
        self.reason = Some(reason);
        for step in self.steps.iter_mut().chain(self.services.iter_mut()) {
            step.run = false;
            step.reason
                .get_or_insert_with(|| "the stage does not run".to_owned());
        }
    }
}

/// A stage's status at the moment a step is due: what `status` conditions look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Passing,
    Failing,
}

impl PlanStep {
    /// Whether the step starts when it is due and the stage is `status`: statically selected,
    /// and its `status` condition allows it (no condition: only while passing).
    pub fn runs_when(&self, status: StageStatus) -> bool {
        self.run
            && match status {
                StageStatus::Passing => self.run_on.success,
                StageStatus::Failing => self.run_on.failure,
            }
    }

    /// Whether a failure of this step fails the stage (`failure: ignore` does not).
    pub fn fails_stage(&self) -> bool {
        self.failure != Failure::Ignore
    }
}

fn status_note(filter: StatusFilter) -> &'static str {
    match (filter.success, filter.failure) {
        (true, false) => "",
        (true, true) => " [always]",
        (false, true) => " [on failure]",
        (false, false) => " [never]",
    }
}

/// The readable tree `gantry plan` prints.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for stage in &self.stages {
            let mark = if stage.run { "▶" } else { "○" };
            write!(f, "{mark} stage {}", stage.name)?;
            if !stage.depends_on.is_empty() {
                write!(f, " (after {})", stage.depends_on.join(", "))?;
            }
            match &stage.reason {
                Some(reason) => writeln!(f, " — skipped: {reason}")?,
                None => writeln!(
                    f,
                    "{}",
                    if stage.depends_on.is_empty() {
                        ""
                    } else {
                        status_note(stage.runs_on)
                    }
                )?,
            }
            if !stage.run {
                continue;
            }
            for service in &stage.services {
                let mark = if service.run { "●" } else { "○" };
                write!(
                    f,
                    "    {mark} service {} ({})",
                    service.name,
                    service.image.as_deref().unwrap_or("-")
                )?;
                match &service.reason {
                    Some(reason) => writeln!(f, " — skipped: {reason}")?,
                    None => writeln!(f)?,
                }
            }
            for step in &stage.steps {
                let mark = if step.run { "●" } else { "○" };
                let what = match step.kind {
                    StepKind::Clone => "clone".to_owned(),
                    _ => step.image.clone().unwrap_or_else(|| "host".to_owned()),
                };
                write!(f, "    {mark} {} ({what})", step.name)?;
                if !step.depends_on.is_empty() {
                    write!(f, " after {}", step.depends_on.join(", "))?;
                }
                match &step.reason {
                    Some(reason) => write!(f, " — skipped: {reason}")?,
                    None => write!(f, "{}", status_note(step.run_on))?,
                }
                if step.failure == Failure::Ignore {
                    write!(f, " [failure ignored]")?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_kind_is_stored_as_its_serde_name_and_read_back() {
        for kind in [
            StepKind::Clone,
            StepKind::Commands,
            StepKind::Plugin,
            StepKind::Service,
        ] {
            // Rows written before `as_str` existed hold the serde name.
            let serde_name = serde_json::to_string(&kind).expect("serialises");
            assert_eq!(serde_name, format!("\"{}\"", kind.as_str()));
            assert_eq!(kind.as_str().parse::<StepKind>(), Ok(kind));
        }
        assert!("container".parse::<StepKind>().is_err());
    }
}
