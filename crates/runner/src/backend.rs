//! The contract between the executor and a way of running steps (local processes, Docker,
//! later Kubernetes). Backends are thin: they know nothing of the order of steps, `when`,
//! masking or reporting.
//!
//! Call order for one job: [`Backend::setup`], then (optionally) [`Backend::import_workspace`],
//! then [`Backend::run_step`] for each step that runs, several at once for steps that run in
//! parallel, then [`Backend::destroy`]. `destroy` is always called, also after a failed or
//! half-done `setup`, and may be called more than once: it must remove everything the job
//! created and succeed when there is nothing left. It is called with no cancellation, so that
//! cancelling a build can never leave containers behind.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use gantry_pipeline::{PlanStep, Stage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where a step's output goes: stdout and stderr together, raw, as they are produced.
pub type Output = mpsc::Sender<Vec<u8>>;

/// The job a backend runs: one stage of a build.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Unique among all jobs ever run by this runner: names and labels derive from it.
    pub id: String,
    pub stage: Stage,
    /// Logins for private registries, chosen per image by its registry's host.
    pub registries: Vec<gantry_proto::registry::RegistryCredential>,
    /// Each step's and service's variables, by name, as `run_step` will get them (steps
    /// whose secrets are missing are left out: they error before they run). For backends
    /// that fix every container before the first step runs (a Kubernetes pod).
    pub environments: BTreeMap<String, BTreeMap<String, String>>,
}

/// One step, ready to run.
#[derive(Debug, Clone)]
pub struct StepSpec<'a> {
    pub step: &'a PlanStep,
    /// Every variable of the step: the stage's, the step's own, and its secrets' values.
    pub environment: BTreeMap<String, String>,
    /// Which try of the step this is (1 first; more with `retry`): each runs afresh.
    pub attempt: u32,
}

/// How a step ended when it could run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepExit {
    /// The process exited with this code.
    Exited(i32),
    /// The process was stopped because its cancellation token fired.
    Killed,
}

/// Why a backend could not do what was asked: an infrastructure problem, never a step that
/// ran and failed (that is a [`StepExit::Exited`] with a non-zero code).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("image `{image}` is not available and cannot be pulled: {reason}")]
    ImagePull { image: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Engine(String),
    #[error("{0}")]
    Unsupported(String),
}

impl BackendError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BackendError::Io {
            context: context.into(),
            source,
        }
    }
}

#[async_trait]
pub trait Backend: Send + Sync {
    /// `local`, `docker`, ...
    fn name(&self) -> &'static str;

    /// Creates what the stage needs before its first step (workspace, network...).
    async fn setup(&self, job: &JobSpec) -> Result<(), BackendError>;

    /// Fills the workspace with the files of `dir` (a clone, or the current folder for
    /// `gantry exec`). Called after `setup`, before any step.
    async fn import_workspace(&self, job: &JobSpec, dir: &Path) -> Result<(), BackendError>;

    /// Gets a step ready ahead of time (creates its container, pulls its image) while earlier
    /// steps run, so that `run_step` can start it at once. Speculative: the step may still be
    /// skipped, and whatever was prepared is then removed by `destroy`. Must return at once
    /// (start background work, don't wait for it); `run_step` of the same step waits for it.
    fn prepare_step(&self, _job: &JobSpec, _step: &StepSpec<'_>) {}

    /// Lets go of what `prepare_step` got ready for a step that will not run after all (its
    /// gate did not open). Must return at once, like `prepare_step`.
    fn discard_step(&self, _job: &JobSpec, _step: &PlanStep) {}

    /// Runs one step to its end, sending its output to `output` as it comes. When `cancel`
    /// fires, the step is stopped within two seconds and `Ok(StepExit::Killed)` returned.
    /// Detached steps and services run the same way; the executor decides when to cancel them.
    async fn run_step(
        &self,
        job: &JobSpec,
        step: &StepSpec<'_>,
        output: Output,
        cancel: CancellationToken,
    ) -> Result<StepExit, BackendError>;

    /// Removes everything the job created. Idempotent; see the module comment.
    async fn destroy(&self, job: &JobSpec) -> Result<(), BackendError>;
}

/// `dir` as a tar archive of its contents (symbolic links kept as links), for a backend that
/// copies the workspace in.
pub async fn pack_directory(dir: &Path) -> Result<Vec<u8>, BackendError> {
    let from = dir.to_owned();
    tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.follow_symlinks(false);
        builder.append_dir_all(".", &from)?;
        builder.into_inner()
    })
    .await
    .map_err(|e| BackendError::Engine(format!("packing the workspace failed: {e}")))?
    .map_err(|e| BackendError::io(format!("packing {}", dir.display()), e))
}

/// The job of a trusted repository's pipeline whose steps are `steps` (YAML list items after
/// `head`), every step with the variable `CI=true`.
#[cfg(test)]
pub(crate) fn test_job(head: &str, steps: &str) -> JobSpec {
    let yaml = format!("kind: pipeline\nname: ci\nclone: {{disable: true}}\n{head}steps:\n{steps}");
    let config = gantry_pipeline::parse(".gantry.yml", &yaml)
        .config
        .unwrap_or_else(|| panic!("a valid test pipeline:\n{yaml}"));
    let mut ctx = gantry_pipeline::Context::push("acme/app", "main");
    ctx.trusted = true;
    let stage = gantry_pipeline::compile(&config, &ctx)
        .unwrap_or_else(|e| panic!("{e}"))
        .stages
        .remove(0);
    let environments = stage
        .services
        .iter()
        .chain(&stage.steps)
        .map(|s| {
            (
                s.name.clone(),
                BTreeMap::from([("CI".to_owned(), "true".to_owned())]),
            )
        })
        .collect();
    JobSpec {
        id: "7/1 x".into(),
        stage,
        registries: Vec::new(),
        environments,
    }
}
