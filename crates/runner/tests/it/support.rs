//! Compiling test pipelines, running them, and recording what the executor reports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_pipeline::{Context, PlanStep, Stage, compile, parse};
use gantry_runner::{
    Backend, Executor, ExecutorConfig, Job, LogLine, Reporter, StageResult, StepResult,
    WorkspaceSource,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started(String),
    Line(String, LogLine),
    Finished(StepResult),
}

#[derive(Debug, Default)]
pub struct Recorder(pub Mutex<Vec<Event>>);

impl Reporter for Recorder {
    fn step_started(&self, step: &PlanStep) {
        self.push(Event::Started(step.name.clone()));
    }
    fn log(&self, step: &str, line: &LogLine) {
        self.push(Event::Line(step.to_owned(), line.clone()));
    }
    fn step_finished(&self, result: &StepResult) {
        self.push(Event::Finished(result.clone()));
    }
}

impl Recorder {
    fn push(&self, event: Event) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
    }

    /// Every line a step logged, in order.
    fn step_lines(&self, step: &str) -> Vec<LogLine> {
        self.0
            .lock()
            .map(|events| {
                events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Line(s, line) if s == step => Some(line.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The text of every line a step logged, in order, gantry's own (`gantry: ...`) among
    /// them.
    pub fn said(&self, step: &str) -> Vec<String> {
        self.step_lines(step).into_iter().map(|l| l.text).collect()
    }

    /// What the step itself printed, in order: its log without gantry's lines (pulls,
    /// retries), which differ between backends.
    pub fn lines(&self, step: &str) -> Vec<String> {
        self.said(step)
            .into_iter()
            .filter(|l| !l.starts_with("gantry: "))
            .collect()
    }

    /// The numbers of a step's lines, in the order they were logged.
    pub fn numbers(&self, step: &str) -> Vec<u64> {
        self.step_lines(step)
            .into_iter()
            .map(|l| l.number)
            .collect()
    }

    /// Everything logged by every step, joined.
    pub fn all_text(&self) -> String {
        self.0
            .lock()
            .map(|events| {
                events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Line(_, line) => Some(line.text.as_str()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

/// Which kind of pipeline a backend runs, and the image its steps use.
#[derive(Debug, Clone, Copy)]
pub struct Flavour {
    pub pipeline_type: &'static str,
    pub image: &'static str,
    /// Seconds a step may take to start, within its timeout (a Kubernetes pod's container
    /// starts when the kubelet next syncs the pod).
    pub start_secs: u64,
}

/// Compiles `steps` (YAML list items, `IMAGE` standing for the flavour's image) as the one
/// stage of a pipeline without a clone, for a trusted push to main.
pub fn stage(flavour: Flavour, head: &str, steps: &str) -> Stage {
    stage_from(
        flavour,
        &format!("clone:\n  disable: true\n{head}steps:\n{steps}"),
    )
}

/// Compiles a pipeline named `test` of the flavour's type from the rest of its body.
pub fn stage_from(flavour: Flavour, body: &str) -> Stage {
    let yaml = format!(
        "kind: pipeline\ntype: {}\nname: test\n{}",
        flavour.pipeline_type,
        body.replace("IMAGE", flavour.image)
    );
    let parsed = parse(".gantry.yml", &yaml);
    let config = parsed
        .config
        .unwrap_or_else(|| panic!("{}\n{yaml}", parsed.diagnostics));
    let mut ctx = Context::push("acme/app", "main");
    ctx.trusted = true;
    let plan = compile(&config, &ctx).unwrap_or_else(|e| panic!("{e}"));
    plan.stages.into_iter().next().expect("one stage")
}

/// Builds the offline test image once per test run.
pub fn test_image() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let script = gantry_test_support::repo_root().join("scripts/test-image");
        let status = std::process::Command::new(&script).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "{} failed: these tests need a running Docker engine (start it, or set DOCKER_HOST) and Debian's busybox-static",
            script.display()
        );
    });
}

static NEXT_JOB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub fn job_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT_JOB.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

pub struct Run {
    pub result: StageResult,
    pub recorder: Arc<Recorder>,
}

/// Runs a stage; `cancel_after` cancels the build that long after it started.
pub async fn run(
    backend: Arc<dyn Backend>,
    stage: Stage,
    secrets: &[(&str, &str)],
    cancel_after: Option<Duration>,
) -> Run {
    run_in(
        backend,
        stage,
        secrets,
        cancel_after,
        WorkspaceSource::Empty,
    )
    .await
}

/// `run`, with the workspace filled from `workspace`.
pub async fn run_in(
    backend: Arc<dyn Backend>,
    stage: Stage,
    secrets: &[(&str, &str)],
    cancel_after: Option<Duration>,
    workspace: WorkspaceSource,
) -> Run {
    let job = Job {
        id: job_id("test"),
        stage,
        secrets: secrets
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        withheld: BTreeMap::new(),
        workspace,
        netrc: None,
        registries: Vec::new(),
    };
    run_job(backend, job, cancel_after).await
}

/// Runs `job` as it is; `cancel_after` cancels it that long after it started.
pub async fn run_job(backend: Arc<dyn Backend>, job: Job, cancel_after: Option<Duration>) -> Run {
    let recorder = Arc::new(Recorder::default());
    let executor = Executor::new(backend, ExecutorConfig::default());
    let cancel = CancellationToken::new();
    if let Some(after) = cancel_after {
        let token = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            token.cancel();
        });
    }
    let reporter: Arc<dyn Reporter> = Arc::clone(&recorder) as Arc<dyn Reporter>;
    let result = executor.run(job, reporter, cancel).await;
    Run { result, recorder }
}

/// `(name, status)` of every step, in plan order (services last).
pub fn statuses(result: &StageResult) -> Vec<(String, String)> {
    result
        .steps
        .iter()
        .map(|s| (s.name.clone(), format!("{:?}", s.status).to_lowercase()))
        .collect()
}

pub fn expect(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}
