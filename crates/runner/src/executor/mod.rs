//! Runs one stage: services first, then the steps as their graph allows, each gated on the
//! stage's status at the moment it is due; masks and caps logs; enforces timeouts and
//! cancellation; and always tears down.
//!
//! Rules (Drone's): a step without a `status` condition runs only while the stage passes;
//! `failure: ignore` records a failure and the stage goes on passing; `failure: fast` stops the
//! steps that are running; exit code 78 ends the stage early as passed. A step whose parents
//! are done (or skipped) is due at once: independent branches run concurrently.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use gantry_pipeline::{PlanStep, Stage, StepKind};
use gantry_proto::registry::RegistryCredential;
use gantry_proto::{Netrc, StepState};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::{Backend, BackendError, JobSpec, StepExit, StepSpec};
use crate::clone::{CloneError, CloneSource, clone_into};
use crate::logs::{LineSplitter, LogCap, LogLine, Masker};
use crate::schedule::{Due, Reaction, Scheduler, Stop};

pub use crate::schedule::EXIT_EARLY;

mod step;

use step::{Running, ServiceOrStep, elapsed_ms, spawn_background};

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// A step's log past this size keeps its head and tail.
    pub log_limit_bytes: u64,
    /// Longer lines are emitted in pieces.
    pub max_line_bytes: usize,
    /// How long tearing down may take before it is given up (and reported).
    pub teardown_timeout: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            log_limit_bytes: 100 * 1024 * 1024,
            max_line_bytes: 256 * 1024,
            teardown_timeout: Duration::from_secs(120),
        }
    }
}

/// Where the workspace's files come from.
#[derive(Debug, Clone)]
pub enum WorkspaceSource {
    /// Nothing: the clone step is skipped.
    Empty,
    /// A folder whose files are copied in (the current folder of `gantry exec`).
    Directory(PathBuf),
    /// A git repository, cloned at an exact commit and copied in.
    Clone(CloneSource),
}

/// One stage to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// Unique among every job this runner ever runs; names what the backend creates.
    pub id: String,
    pub stage: Stage,
    /// Secret values by name; every one is masked in every log line.
    pub secrets: BTreeMap<String, String>,
    /// Secrets the stage may not have, with why: a step that needs one fails saying so.
    pub withheld: BTreeMap<String, String>,
    pub workspace: WorkspaceSource,
    /// Git credentials every step gets as `DRONE_NETRC_*` / `CI_NETRC_*` (masked).
    pub netrc: Option<Netrc>,
    /// Logins for the registries the stage's images come from (masked).
    pub registries: Vec<RegistryCredential>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    pub name: String,
    pub status: StepState,
    pub exit_code: Option<i32>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed to run, timed out or was skipped.
    pub error: Option<String>,
}

impl StepResult {
    fn skipped(name: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status: StepState::Skipped,
            exit_code: None,
            started_at: None,
            finished_at: None,
            error: Some(reason.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageResult {
    /// Success, failure, error or killed.
    pub status: StepState,
    pub error: Option<String>,
    /// Steps in plan order, then services.
    pub steps: Vec<StepResult>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

impl StageResult {
    pub fn step(&self, name: &str) -> Option<&StepResult> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Receives what happens, as it happens. Called from several tasks at once; keep it quick.
pub trait Reporter: Send + Sync {
    fn step_started(&self, step: &PlanStep);
    fn log(&self, step: &str, line: &LogLine);
    fn step_finished(&self, result: &StepResult);
}

pub struct Executor {
    backend: Arc<dyn Backend>,
    config: ExecutorConfig,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("backend", &self.backend.name())
            .finish()
    }
}

/// Tears the job down if the executor's future is dropped before it could (a panic, or a
/// caller that gave up): destroy runs on the runtime, detached from whatever was cancelled.
struct TeardownGuard {
    backend: Arc<dyn Backend>,
    spec: Arc<JobSpec>,
    armed: bool,
}

impl Drop for TeardownGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (backend, spec) = (Arc::clone(&self.backend), Arc::clone(&self.spec));
            handle.spawn(async move {
                let _ = backend.destroy(&spec).await;
            });
        }
    }
}

/// Everything a step task needs, shared.
struct Shared {
    backend: Arc<dyn Backend>,
    spec: Arc<JobSpec>,
    reporter: Arc<dyn Reporter>,
    masker: Masker,
    config: ExecutorConfig,
}

impl Executor {
    pub fn new(backend: Arc<dyn Backend>, config: ExecutorConfig) -> Self {
        Self { backend, config }
    }

    /// Runs the job to a final state. Cancelling `cancel` stops running steps within seconds,
    /// skips the rest, and still tears down.
    pub async fn run(
        &self,
        job: Job,
        reporter: Arc<dyn Reporter>,
        cancel: CancellationToken,
    ) -> StageResult {
        let started_at = Utc::now();
        let spec = Arc::new(JobSpec {
            id: job.id.clone(),
            stage: job.stage.clone(),
            registries: job.registries.clone(),
            environments: job
                .stage
                .services
                .iter()
                .chain(&job.stage.steps)
                .filter_map(|step| Some((step.name.clone(), self.resolve(&job, step).ok()?)))
                .collect(),
        });
        let mut guard = TeardownGuard {
            backend: Arc::clone(&self.backend),
            spec: Arc::clone(&spec),
            armed: true,
        };
        let shared = Arc::new(Shared {
            backend: Arc::clone(&self.backend),
            spec: Arc::clone(&spec),
            reporter,
            masker: Masker::new(
                job.secrets
                    .values()
                    .map(String::as_str)
                    .chain(clone_secret(&job.workspace))
                    .chain(job.netrc.as_ref().map(|n| n.password.as_str()))
                    .chain(job.registries.iter().map(|r| r.password.as_str())),
            ),
            config: self.config.clone(),
        });
        let (mut status, mut error, steps) = match self.backend.setup(&spec).await {
            Ok(()) => self.run_steps(&job, &shared, &cancel).await,
            Err(e) => {
                let message = format!(
                    "the stage could not be set up on the {} backend: {e}",
                    self.backend.name()
                );
                let steps = spec
                    .stage
                    .steps
                    .iter()
                    .chain(&spec.stage.services)
                    .map(|s| StepResult::skipped(&s.name, "the stage could not be set up"))
                    .collect();
                (StepState::Error, Some(message), steps)
            }
        };
        let teardown =
            tokio::time::timeout(self.config.teardown_timeout, self.backend.destroy(&spec)).await;
        guard.armed = false;
        let teardown_error = match teardown {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("tearing down failed: {e}")),
            Err(_) => Some(format!(
                "tearing down took longer than {:?} and was given up",
                self.config.teardown_timeout
            )),
        };
        if let Some(problem) = teardown_error {
            error = Some(match error {
                Some(e) => format!("{e}; {problem}"),
                None => problem,
            });
            if status == StepState::Success {
                status = StepState::Error;
            }
        }
        StageResult {
            status,
            error,
            steps,
            started_at,
            finished_at: Utc::now(),
        }
    }

    async fn run_steps(
        &self,
        job: &Job,
        shared: &Arc<Shared>,
        cancel: &CancellationToken,
    ) -> (StepState, Option<String>, Vec<StepResult>) {
        let stage = &shared.spec.stage;
        let steps = &stage.steps;
        let mut results: Vec<Option<StepResult>> = vec![None; steps.len()];
        // Services and detached steps: cancelled when the stage ends.
        let background_cancel = cancel.child_token();
        let mut background: JoinSet<StepResult> = JoinSet::new();
        let mut background_ids: HashMap<tokio::task::Id, ServiceOrStep> = HashMap::new();
        let (mut service_results, services_errored) = self.start_services(
            job,
            shared,
            &mut background,
            &mut background_ids,
            &background_cancel,
        );
        let mut scheduler = Scheduler::new(steps, services_errored);
        let mut running = Running::default();
        let timer = stage_timer(stage);
        tokio::pin!(timer);

        loop {
            while let Some(due) = scheduler.next_due() {
                let i = match due {
                    Due::Skip(i, reason) => {
                        if scheduler.was_prepared(i) {
                            shared.backend.discard_step(&shared.spec, &steps[i]);
                        }
                        let result = StepResult::skipped(&steps[i].name, reason);
                        shared.reporter.step_finished(&result);
                        results[i] = Some(result);
                        continue;
                    }
                    Due::Start(i) => i,
                };
                let step = &steps[i];
                let environment = match self.begin(job, shared, step, cancel).await {
                    Begun::Ended(result) => {
                        if scheduler.finished(i, result.status, result.exit_code)
                            == Reaction::CancelRunning
                        {
                            running.cancel_all();
                        }
                        results[i] = Some(result);
                        continue;
                    }
                    Begun::Refused(result) => {
                        results[i] = Some(result);
                        scheduler.could_not_start(i);
                        continue;
                    }
                    Begun::Ready(environment) => environment,
                };
                if step.detach {
                    spawn_background(
                        &mut background,
                        &mut background_ids,
                        shared,
                        ServiceOrStep::Step(i),
                        environment,
                        &background_cancel,
                    );
                    scheduler.detached(i);
                    continue;
                }
                running.spawn(shared, i, environment, cancel.child_token());
            }
            self.prepare_ahead(job, shared, &mut scheduler);
            if running.is_empty() {
                break;
            }
            let stopping = scheduler.stopped().is_some();
            tokio::select! {
                ended = running.next(shared) => {
                    let Some((i, result)) = ended else { break };
                    if scheduler.finished(i, result.status, result.exit_code) == Reaction::CancelRunning {
                        running.cancel_all();
                    }
                    results[i] = Some(result);
                }
                () = cancel.cancelled(), if !stopping => {
                    scheduler.stop(Stop::Cancelled);
                }
                () = &mut timer, if !stopping => {
                    if scheduler.stop(Stop::TimedOut) == Reaction::CancelRunning {
                        running.cancel_all();
                    }
                }
            }
        }

        // A cancelled step's result can be taken before the cancellation itself (both are
        // ready at once); the stage was cancelled all the same.
        if cancel.is_cancelled() {
            scheduler.stop(Stop::Cancelled);
        }

        // The stage is over: stop services and detached steps, and collect their results.
        background_cancel.cancel();
        collect_background(
            &mut background,
            &background_ids,
            stage,
            &mut results,
            &mut service_results,
        )
        .await;
        let (status, error) = scheduler.outcome(|| {
            format!(
                "the stage timed out after {}",
                describe_secs(stage.timeout_secs.unwrap_or(0))
            )
        });
        (status, error, all_results(stage, results, service_results))
    }

    /// What a due step needs before it can run: the clone step runs here (it ends); any
    /// other gets its environment, or errors (reported) when it cannot.
    async fn begin(
        &self,
        job: &Job,
        shared: &Arc<Shared>,
        step: &PlanStep,
        cancel: &CancellationToken,
    ) -> Begun {
        if step.kind == StepKind::Clone {
            return Begun::Ended(self.clone_step(job, shared, step, cancel).await);
        }
        match self.resolve(job, step) {
            Ok(environment) => Begun::Ready(environment),
            Err(message) => {
                let result = StepResult {
                    error: Some(message),
                    status: StepState::Error,
                    ..StepResult::skipped(&step.name, "")
                };
                shared.reporter.step_finished(&result);
                Begun::Refused(result)
            }
        }
    }

    /// Gets the next steps ready while these run: their containers are created now, so
    /// they start as soon as they are due.
    fn prepare_ahead(&self, job: &Job, shared: &Arc<Shared>, scheduler: &mut Scheduler<'_>) {
        for i in scheduler.ready_ahead() {
            let step = &shared.spec.stage.steps[i];
            if let Ok(environment) = self.resolve(job, step) {
                shared.backend.prepare_step(
                    &shared.spec,
                    &StepSpec {
                        step,
                        environment,
                        attempt: 1,
                    },
                );
            }
        }
    }

    /// Starts the stage's services in the background. Returns what is known of them so far
    /// (the ones that could not start) and whether any could not.
    fn start_services(
        &self,
        job: &Job,
        shared: &Arc<Shared>,
        background: &mut JoinSet<StepResult>,
        background_ids: &mut HashMap<tokio::task::Id, ServiceOrStep>,
        background_cancel: &CancellationToken,
    ) -> (Vec<Option<StepResult>>, bool) {
        let services = &shared.spec.stage.services;
        let mut results: Vec<Option<StepResult>> = vec![None; services.len()];
        let mut errored = false;
        for (i, service) in services.iter().enumerate() {
            if !service.run {
                continue;
            }
            match self.resolve(job, service) {
                Ok(environment) => spawn_background(
                    background,
                    background_ids,
                    shared,
                    ServiceOrStep::Service(i),
                    environment,
                    background_cancel,
                ),
                Err(message) => {
                    let result = StepResult {
                        error: Some(message),
                        status: StepState::Error,
                        ..StepResult::skipped(&service.name, "")
                    };
                    shared.reporter.step_finished(&result);
                    results[i] = Some(result);
                    errored = true;
                }
            }
        }
        (results, errored)
    }

    /// The clone step: fills the workspace from the job's source.
    async fn clone_step(
        &self,
        job: &Job,
        shared: &Arc<Shared>,
        step: &PlanStep,
        cancel: &CancellationToken,
    ) -> StepResult {
        shared.reporter.step_started(step);
        let started_at = Utc::now();
        let started = Instant::now();
        let mut number = 0u64;
        let mut say = |text: String| {
            number += 1;
            let masked = shared.masker.mask(text.as_bytes());
            let line = LogLine {
                number,
                elapsed_ms: elapsed_ms(started),
                text: String::from_utf8_lossy(&masked).into_owned(),
            };
            shared.reporter.log(&step.name, &line);
        };
        let outcome: Result<(), String> = match &job.workspace {
            WorkspaceSource::Empty => {
                let result =
                    StepResult::skipped(&step.name, "no source to fill the workspace from");
                shared.reporter.step_finished(&result);
                return result;
            }
            WorkspaceSource::Directory(dir) => {
                say(format!("copying {} into the workspace", dir.display()));
                self.backend
                    .import_workspace(&shared.spec, dir)
                    .await
                    .map_err(|e| e.to_string())
            }
            WorkspaceSource::Clone(source) => {
                say(format!(
                    "cloning {} at {} ({})",
                    source.spec.url,
                    if source.spec.commit.is_empty() {
                        "its head"
                    } else {
                        &source.spec.commit
                    },
                    source.spec.reference
                ));
                let dir = std::env::temp_dir()
                    .join(format!("gantry-clone-{}", job.id.replace(['/', '\\'], "_")));
                let _ = std::fs::remove_dir_all(&dir);
                let cancelled = Arc::new(AtomicBool::new(false));
                let watcher = {
                    let (cancel, cancelled) = (cancel.clone(), Arc::clone(&cancelled));
                    tokio::spawn(async move {
                        cancel.cancelled().await;
                        cancelled.store(true, Ordering::Relaxed);
                    })
                };
                let (source, target) = (source.clone(), dir.clone());
                let (lines_tx, mut lines_rx) = mpsc::unbounded_channel::<String>();
                let cloning = tokio::task::spawn_blocking(move || {
                    clone_into(&source, &target, &cancelled, &mut |line| {
                        let _ = lines_tx.send(line);
                    })
                });
                while let Some(line) = lines_rx.recv().await {
                    say(line);
                }
                let cloned = cloning.await;
                watcher.abort();
                let outcome = match cloned {
                    Ok(Ok(())) => self
                        .backend
                        .import_workspace(&shared.spec, &dir)
                        .await
                        .map_err(|e| e.to_string()),
                    Ok(Err(CloneError::Cancelled)) => Err("cancelled".to_owned()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("the clone's task failed: {e}")),
                };
                let _ = tokio::fs::remove_dir_all(&dir).await;
                outcome
            }
        };
        let status = match &outcome {
            Ok(()) => StepState::Success,
            Err(_) if cancel.is_cancelled() => StepState::Killed,
            Err(_) => StepState::Error,
        };
        let result = StepResult {
            name: step.name.clone(),
            status,
            exit_code: outcome.is_ok().then_some(0),
            started_at: Some(started_at),
            finished_at: Some(Utc::now()),
            error: outcome.err(),
        };
        shared.reporter.step_finished(&result);
        result
    }

    /// The step's variables with its secrets' values filled in; an error names a missing secret.
    fn resolve(&self, job: &Job, step: &PlanStep) -> Result<BTreeMap<String, String>, String> {
        let mut environment = job.stage.environment.clone();
        if let Some(netrc) = &job.netrc {
            environment.extend(netrc.environment());
        }
        for secret in &job.stage.secrets {
            match job.secrets.get(&secret.secret) {
                Some(value) => {
                    environment.insert(secret.env.clone(), value.clone());
                }
                None => return Err(missing_secret(job, &secret.secret, &secret.env)),
            }
        }
        environment.extend(step.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
        for secret in &step.secrets {
            match job.secrets.get(&secret.secret) {
                Some(value) => {
                    environment.insert(secret.env.clone(), value.clone());
                }
                None => return Err(missing_secret(job, &secret.secret, &secret.env)),
            }
        }
        Ok(environment)
    }
}

/// The clone's credential, masked like a secret.
fn clone_secret(source: &WorkspaceSource) -> Option<&str> {
    match source {
        WorkspaceSource::Clone(CloneSource {
            credential: Some(credential),
            ..
        }) => Some(credential.secret()),
        _ => None,
    }
}

fn missing_secret(job: &Job, secret: &str, env: &str) -> String {
    if let Some(reason) = job.withheld.get(secret) {
        return format!("{reason} (for `{env}`)");
    }
    format!(
        "secret `{secret}` (for `{env}`) is not set: add it to the repository's secrets, or pass `--secret {secret}=...` to `gantry exec`"
    )
}

fn describe_secs(secs: u64) -> String {
    if secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Ends when the stage's `timeout` is up (never without one).
fn stage_timer(stage: &Stage) -> impl Future<Output = ()> + use<> {
    let deadline = stage
        .timeout_secs
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    async move {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

/// What [`Executor::begin`] made of a due step.
enum Begun {
    /// It ran to its end (the clone step).
    Ended(StepResult),
    /// It could not start; its error is reported.
    Refused(StepResult),
    /// Its environment: start it.
    Ready(BTreeMap<String, String>),
}

/// Waits for the (cancelled) services and detached steps and files their results.
async fn collect_background(
    background: &mut JoinSet<StepResult>,
    background_ids: &HashMap<tokio::task::Id, ServiceOrStep>,
    stage: &Stage,
    results: &mut [Option<StepResult>],
    service_results: &mut [Option<StepResult>],
) {
    while let Some(joined) = background.join_next_with_id().await {
        let (id, mut result) = match joined {
            Ok((id, result)) => (id, result),
            Err(e) => (
                e.id(),
                StepResult {
                    status: StepState::Error,
                    error: Some(format!("the runner's task failed: {e}")),
                    ..StepResult::skipped("", "")
                },
            ),
        };
        match background_ids.get(&id) {
            Some(ServiceOrStep::Service(i)) => {
                result.name.clone_from(&stage.services[*i].name);
                service_results[*i] = Some(result);
            }
            Some(ServiceOrStep::Step(i)) => {
                result.name.clone_from(&stage.steps[*i].name);
                results[*i] = Some(result);
            }
            None => {}
        }
    }
}

/// Every step's and service's result, in order: what never ran is skipped, with why.
fn all_results(
    stage: &Stage,
    results: Vec<Option<StepResult>>,
    service_results: Vec<Option<StepResult>>,
) -> Vec<StepResult> {
    let mut all: Vec<StepResult> = results
        .into_iter()
        .zip(&stage.steps)
        .map(|(r, s)| r.unwrap_or_else(|| StepResult::skipped(&s.name, "not reached")))
        .collect();
    all.extend(
        service_results
            .into_iter()
            .zip(&stage.services)
            .map(|(r, s)| {
                r.unwrap_or_else(|| {
                    StepResult::skipped(
                        &s.name,
                        s.reason
                            .clone()
                            .unwrap_or_else(|| "its conditions do not hold".into()),
                    )
                })
            }),
    );
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(withheld: &[(&str, &str)]) -> Job {
        let parsed = gantry_pipeline::parse(
            ".gantry.yml",
            "kind: pipeline\nname: ci\nsteps:\n  - name: s\n    image: x\n    commands: [x]\n",
        );
        let config = parsed.config.expect("valid");
        let ctx = gantry_pipeline::Context::push("a/b", "main");
        Job {
            id: "j".into(),
            stage: gantry_pipeline::compile(&config, &ctx)
                .expect("plans")
                .stages
                .remove(0),
            secrets: BTreeMap::new(),
            withheld: withheld
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            workspace: WorkspaceSource::Empty,
            netrc: None,
            registries: Vec::new(),
        }
    }

    #[test]
    fn a_withheld_secret_is_refused_with_its_reason() {
        let job = job(&[(
            "tok",
            "secret `tok` is withheld from pull requests from forks",
        )]);
        assert_eq!(
            missing_secret(&job, "tok", "TOKEN"),
            "secret `tok` is withheld from pull requests from forks (for `TOKEN`)"
        );
        assert!(missing_secret(&job, "other", "X").contains("is not set"));
    }
}
