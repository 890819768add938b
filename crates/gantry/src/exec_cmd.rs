//! `gantry exec`: runs a pipeline file of the current folder on this machine, like
//! `drone exec`: the same parse → plan → executor as a server, with the terminal as the log.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use gantry_pipeline::model::PipelineType;
use gantry_pipeline::{PlanStep, Stage, StepKind, compile, parse_bytes, parse_duration};
use gantry_runner::{
    Backend, DockerBackend, Executor, ExecutorConfig, Job, LocalBackend, LogLine, Reporter,
    StageResult, StepResult, StepState, WorkspaceSource,
};
use tokio_util::sync::CancellationToken;

use crate::pipeline_cmd::{
    BuildArgs, context, parse_config, parse_param, print_diagnostics, read_config, refusal,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// Each pipeline on the backend its `type` names (docker, or local for `exec`).
    Auto,
    Docker,
    Local,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The pipeline file; by default the first of .gantry.yml, .drone.yml, .woodpecker.yml,
    /// .woodpecker/ in the current folder.
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub build: BuildArgs,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// Run only the pipeline of this name; repeat for several.
    #[arg(long = "pipeline")]
    pub pipelines: Vec<String>,
    /// A secret NAME=VALUE for `from_secret`; repeat for several. Masked in the output.
    #[arg(long = "secret", value_parser = parse_param)]
    pub secrets: Vec<(String, String)>,
    /// A variable NAME=VALUE for every step; repeat for several.
    #[arg(long = "env", value_parser = parse_param)]
    pub env: Vec<(String, String)>,
    /// A time limit for each pipeline, e.g. `30m`.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Past this size a step's log keeps its head and tail, e.g. `100MiB`.
    #[arg(long, default_value = "100MiB")]
    pub log_limit: String,
}

/// `gantry exec` names its runner after its process, `gantry-exec-PID`.
const EXEC_RUNNER: &str = "gantry-exec-";

/// An exec runner whose process no longer exists.
fn exec_run_is_gone(runner: &str) -> bool {
    runner
        .strip_prefix(EXEC_RUNNER)
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

const DEFAULT_FILES: &[&str] = &[
    ".gantry.yml",
    ".drone.yml",
    ".woodpecker.yml",
    ".woodpecker",
];

fn default_file() -> anyhow::Result<PathBuf> {
    DEFAULT_FILES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "no pipeline file here: looked for {}",
                DEFAULT_FILES.join(", ")
            )
        })
}

enum Placement {
    Docker,
    Host,
}

/// Where a stage runs: its `type`'s backend, or the host when asked with `--backend local`.
/// A type gantry has no backend for is refused, never run on another one.
fn placement(choice: BackendChoice, stage: &Stage) -> anyhow::Result<Placement> {
    Ok(match (choice, stage.backend) {
        (_, PipelineType::Kubernetes) => bail!(
            "pipeline `{}` is `type: kubernetes`: it runs in a pod on a cluster, through a runner started with `--backend kubernetes`; `gantry exec` runs Docker and host pipelines only (`type: docker` files run on both)",
            stage.name
        ),
        (
            _,
            unsupported @ (PipelineType::Vm
            | PipelineType::Ssh
            | PipelineType::DigitalOcean
            | PipelineType::MacStadium),
        ) => bail!(
            "{}",
            unsupported
                .unsupported_reason(&stage.name)
                .unwrap_or_default()
        ),
        (BackendChoice::Local, PipelineType::Docker | PipelineType::Local)
        | (BackendChoice::Auto, PipelineType::Local) => Placement::Host,
        (BackendChoice::Docker, PipelineType::Local) => bail!(
            "pipeline `{}` is `type: exec`: its steps have no image and run on this machine, not in containers; drop `--backend docker`",
            stage.name
        ),
        (BackendChoice::Docker | BackendChoice::Auto, PipelineType::Docker) => Placement::Docker,
    })
}

pub fn exec(args: &ExecArgs) -> anyhow::Result<ExitCode> {
    let file = match &args.file {
        Some(file) => file.clone(),
        None => default_file()?,
    };
    let mut ctx = context(&args.build)?;
    ctx.params.extend(args.env.iter().cloned());
    let files = read_config(&file)?;
    let parsed = parse_config(&files);
    print_diagnostics(&mut std::io::stderr(), &parsed.diagnostics)?;
    let Some(config) = parsed.config else {
        bail!("{} is invalid", file.display());
    };
    let plan = compile(&config, &ctx).map_err(|e| anyhow::anyhow!("{}", refusal(&e)))?;
    for name in &args.pipelines {
        if !plan.stages.iter().any(|s| &s.name == name) {
            let known: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "there is no pipeline `{name}` in {}; it has: {}",
                file.display(),
                known.join(", ")
            );
        }
    }
    // Nothing starts when a pipeline that would run cannot: a half-run build helps no one.
    for stage in plan
        .stages
        .iter()
        .filter(|s| s.run && (args.pipelines.is_empty() || args.pipelines.contains(&s.name)))
    {
        placement(args.backend, stage)?;
    }
    let timeout = match &args.timeout {
        Some(text) => Some(
            parse_duration(text)
                .with_context(|| format!("`{text}` is not a duration, e.g. 30m or 1h"))?,
        ),
        None => None,
    };
    let log_limit = parse_bytes(&args.log_limit)
        .with_context(|| format!("`{}` is not a size, e.g. 100MiB", args.log_limit))?;
    let workspace = std::env::current_dir().context("while finding the current folder")?;
    let secrets: BTreeMap<String, String> = args.secrets.iter().cloned().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("while starting the runtime")?;
    let config = ExecutorConfig {
        log_limit_bytes: log_limit,
        ..ExecutorConfig::default()
    };
    runtime.block_on(run_stages(
        plan.stages,
        args,
        timeout,
        secrets,
        &workspace,
        config,
    ))
}

async fn run_stages(
    stages: Vec<Stage>,
    args: &ExecArgs,
    timeout: Option<u64>,
    secrets: BTreeMap<String, String>,
    workspace: &Path,
    config: ExecutorConfig,
) -> anyhow::Result<ExitCode> {
    let cancel = cancel_on_signals()?;
    let colour = std::io::stdout().is_terminal();
    let reporter = Arc::new(TerminalReporter {
        colour,
        width: stages
            .iter()
            .flat_map(|s| s.steps.iter().chain(&s.services))
            .map(|s| s.name.len())
            .max()
            .unwrap_or(4),
    });
    let mut docker: Option<Arc<dyn Backend>> = None;
    let local: Arc<dyn Backend> = Arc::new(LocalBackend::in_temp_dir());
    let mut outcomes: HashMap<String, StepState> = HashMap::new();
    let mut results: Vec<(String, StageResult)> = Vec::new();
    let selected = |s: &Stage| args.pipelines.is_empty() || args.pipelines.contains(&s.name);
    for mut stage in stages {
        if !stage.run || !selected(&stage) {
            continue;
        }
        let deps: Vec<StepState> = stage
            .depends_on
            .iter()
            .filter_map(|d| outcomes.get(d).copied())
            .collect();
        let any_failed = deps.iter().any(|s| *s != StepState::Success);
        if (any_failed && !stage.runs_on.failure)
            || (!any_failed && !stage.runs_on.success)
            || cancel.is_cancelled()
        {
            reporter.note(&format!(
                "○ pipeline {} skipped: {}",
                stage.name,
                if cancel.is_cancelled() {
                    "cancelled"
                } else {
                    "its dependencies' outcome does not let it run"
                }
            ));
            outcomes.insert(stage.name.clone(), StepState::Skipped);
            continue;
        }
        if let Some(secs) = timeout {
            stage.timeout_secs = Some(secs);
        }
        let backend = match placement(args.backend, &stage)? {
            Placement::Host => Arc::clone(&local),
            Placement::Docker => match &docker {
                Some(d) => Arc::clone(d),
                None => {
                    let connected = connect_docker(&reporter).await?;
                    docker = Some(Arc::clone(&connected));
                    connected
                }
            },
        };
        reporter.note(&format!(
            "▶ pipeline {} ({} backend)",
            stage.name,
            backend.name()
        ));
        let name = stage.name.clone();
        let job = Job {
            id: format!("exec-{}-{}", std::process::id(), stage.number),
            stage,
            secrets: secrets.clone(),
            withheld: Default::default(),
            workspace: WorkspaceSource::Directory(workspace.to_owned()),
            netrc: None,
            registries: Vec::new(),
        };
        let executor = Executor::new(backend, config.clone());
        let result = executor
            .run(
                job,
                Arc::clone(&reporter) as Arc<dyn Reporter>,
                cancel.clone(),
            )
            .await;
        outcomes.insert(name.clone(), result.status);
        results.push((name, result));
    }
    print_summary(&results, colour)?;
    let passed = !results.is_empty() && results.iter().all(|(_, r)| r.status == StepState::Success);
    if results.is_empty() {
        eprintln!("no pipeline ran for this event and branch (see `gantry plan`)");
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Cancelled by Ctrl-C or SIGTERM: steps stop and everything is cleaned up; a second
/// Ctrl-C leaves at once.
fn cancel_on_signals() -> anyhow::Result<CancellationToken> {
    let cancel = CancellationToken::new();
    let cancelled = cancel.clone();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("while listening for SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("\ncancelling: stopping steps and cleaning up (Ctrl-C again to leave at once)");
        cancelled.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    Ok(cancel)
}

/// The Docker backend of this run, once it has removed what earlier `gantry exec` runs left
/// when they were killed outright.
async fn connect_docker(reporter: &TerminalReporter) -> anyhow::Result<Arc<dyn Backend>> {
    let backend = DockerBackend::connect(&format!("{EXEC_RUNNER}{}", std::process::id())).await?;
    if let Ok(swept) = backend.sweep_gone(exec_run_is_gone).await
        && !swept.is_empty()
    {
        reporter.note(&format!(
            "removed what {} earlier killed run(s) left behind",
            swept.len()
        ));
    }
    Ok(Arc::new(backend))
}

struct TerminalReporter {
    colour: bool,
    width: usize,
}

impl TerminalReporter {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn note(&self, text: &str) {
        println!("{}", self.paint("1", text));
    }
}

impl Reporter for TerminalReporter {
    fn step_started(&self, step: &PlanStep) {
        let what = match step.kind {
            StepKind::Clone => "workspace".to_owned(),
            _ => step.image.clone().unwrap_or_else(|| "host".to_owned()),
        };
        println!(
            "{}",
            self.paint("36", &format!("  ▶ {} ({what})", step.name))
        );
    }

    fn log(&self, step: &str, line: &LogLine) {
        let prefix = self.paint("2", &format!("{step:>width$} │", width = self.width));
        println!("  {prefix} {}", line.text);
    }

    fn step_finished(&self, result: &StepResult) {
        let (mark, code) = match result.status {
            StepState::Success => ("✔", "32"),
            StepState::Skipped => ("○", "2"),
            StepState::Failure | StepState::Error | StepState::Killed => ("✘", "31"),
            // A result is final; a running one is shown as such rather than guessed.
            StepState::Running => ("…", "33"),
        };
        let mut text = format!("  {mark} {} {}", result.name, describe(result));
        if let Some(error) = &result.error {
            text.push_str(&format!(": {error}"));
        }
        println!("{}", self.paint(code, &text));
    }
}

fn duration(result: &StepResult) -> Option<Duration> {
    let (Some(start), Some(end)) = (result.started_at, result.finished_at) else {
        return None;
    };
    (end - start).to_std().ok()
}

fn describe(result: &StepResult) -> String {
    let status = result.status.as_str().to_owned();
    let mut out = status;
    if let Some(code) = result.exit_code.filter(|c| *c != 0) {
        out.push_str(&format!(" (exit code {code})"));
    }
    if let Some(d) = duration(result) {
        out.push_str(&format!(" in {:.1}s", d.as_secs_f64()));
    }
    out
}

fn print_summary(results: &[(String, StageResult)], colour: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    writeln!(
        out,
        "{:<28} {:<10} {:>9}  EXIT",
        "STEP", "STATUS", "DURATION"
    )?;
    for (stage, result) in results {
        for step in &result.steps {
            let status = step.status.as_str();
            let status = if colour {
                let code = match step.status {
                    StepState::Success => "32",
                    StepState::Skipped => "2",
                    _ => "31",
                };
                format!("\x1b[{code}m{status:<10}\x1b[0m")
            } else {
                format!("{status:<10}")
            };
            let took = duration(step)
                .map(|d| format!("{:.1}s", d.as_secs_f64()))
                .unwrap_or_default();
            let exit = step.exit_code.map(|c| c.to_string()).unwrap_or_default();
            writeln!(
                out,
                "{:<28} {status} {took:>9}  {exit}",
                format!("{stage}/{}", step.name)
            )?;
        }
        let verdict = result.status.as_str();
        match &result.error {
            Some(error) => writeln!(out, "pipeline {stage}: {verdict}: {error}")?,
            None => writeln!(out, "pipeline {stage}: {verdict}")?,
        }
    }
    Ok(())
}
