//! Runner overheads, as ratios against baselines measured in the same run (the machines are
//! noisy, so variants are interleaved and each figure is a median):
//! - docker: a 20-step pipeline of `true` vs `docker run --rm IMAGE true` x20 with the CLI,
//!   vs a bare bollard loop (create, start, wait, remove) x20, and vs act running the same 20
//!   steps as a GitHub Actions job in the same image. Targets: <= 0.8x the CLI, <= 1.1x the
//!   bare loop, below act.
//! - local: 20 `true` steps vs `sh -c true` spawned 20 times. Target: <= 2x.
//! - logs: a step writing 200 MB of lines, until the last line reached the reporter, vs
//!   `docker run IMAGE ... > /dev/null`. Target: <= 1.3x.
//!
//! Needs the Docker engine and the test image (`scripts/test-image`); installs act with
//! `scripts/bench-tools`.
//! `cargo bench -p gantry-runner --bench runner` (`GANTRY_BENCH_ROUNDS`, default 3).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    RemoveContainerOptionsBuilder, StartContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use gantry_pipeline::{Context, PlanStep, Stage, compile, parse};
use gantry_runner::{
    Backend, DockerBackend, Executor, ExecutorConfig, Job, LocalBackend, LogLine, Reporter,
    StepResult, WorkspaceSource,
};
use gantry_test_support::bench::{self, median};
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "gantry-test/busybox:latest";
const STEPS: usize = 20;

/// Counts the lines that reach it.
struct Counting(AtomicU64);

impl Reporter for Counting {
    fn step_started(&self, _: &PlanStep) {}
    fn log(&self, _: &str, _: &LogLine) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn step_finished(&self, _: &StepResult) {}
}

fn stage(pipeline_type: &str, steps: &str) -> Stage {
    let yaml = format!(
        "kind: pipeline\ntype: {pipeline_type}\nname: bench\nclone:\n  disable: true\nsteps:\n{steps}"
    );
    let config = parse(".gantry.yml", &yaml)
        .config
        .expect("valid bench pipeline");
    let mut ctx = Context::push("acme/app", "main");
    ctx.trusted = true;
    compile(&config, &ctx).expect("plans").stages.remove(0)
}

fn true_steps(pipeline_type: &str) -> Stage {
    let steps: String = (0..STEPS)
        .map(|i| format!("  - name: s{i}\n    image: {IMAGE}\n    commands: [\"true\"]\n"))
        .collect();
    stage(pipeline_type, &steps)
}

async fn gantry(backend: Arc<dyn Backend>, stage: Stage, round: usize) -> (Duration, u64) {
    let reporter = Arc::new(Counting(AtomicU64::new(0)));
    let job = Job {
        id: format!("bench-{}-{round}", std::process::id()),
        stage,
        secrets: Default::default(),
        withheld: Default::default(),
        workspace: WorkspaceSource::Empty,
        netrc: None,
        registries: Vec::new(),
    };
    let started = Instant::now();
    // Every line must reach the reporter: no cap.
    let config = ExecutorConfig {
        log_limit_bytes: u64::MAX,
        ..ExecutorConfig::default()
    };
    let result = Executor::new(backend, config)
        .run(
            job,
            Arc::clone(&reporter) as Arc<dyn Reporter>,
            CancellationToken::new(),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(
        result.status,
        gantry_runner::StepState::Success,
        "{result:?}"
    );
    (took, reporter.0.load(Ordering::Relaxed))
}

fn cli_loop() -> Duration {
    let started = Instant::now();
    for _ in 0..STEPS {
        let status = Command::new("docker")
            .args(["run", "--rm", IMAGE, "true"])
            .status()
            .expect("docker CLI");
        assert!(status.success());
    }
    started.elapsed()
}

async fn bollard_loop(docker: &Docker) -> Duration {
    let started = Instant::now();
    for _ in 0..STEPS {
        let body = ContainerCreateBody {
            image: Some(IMAGE.to_owned()),
            cmd: Some(vec!["true".to_owned()]),
            ..Default::default()
        };
        let id = docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
            .expect("create")
            .id;
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .expect("start");
        let mut wait = docker.wait_container(&id, None::<WaitContainerOptions>);
        while wait.next().await.is_some() {}
        docker
            .remove_container(
                &id,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await
            .expect("remove");
    }
    started.elapsed()
}

/// A folder holding a git repository whose one workflow runs `true` in 20 steps.
fn act_workflow() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gantry-bench-act-{}", std::process::id()));
    let workflows = dir.join(".github/workflows");
    std::fs::create_dir_all(&workflows).expect("a temp dir");
    let steps: String = (0..STEPS).map(|_| "      - run: \"true\"\n").collect();
    std::fs::write(
        workflows.join("bench.yml"),
        format!(
            "on: push\ndefaults:\n  run:\n    shell: sh\njobs:\n  bench:\n    runs-on: ubuntu-latest\n    steps:\n{steps}"
        ),
    )
    .expect("write the workflow");
    for args in [
        &["init", "-q"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
            "commit",
            "-qm",
            "bench",
        ],
    ] {
        let status = Command::new("git")
            .args(args)
            .current_dir(&dir)
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    }
    dir
}

fn act_loop(act: &Path, workflow: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new(act)
        .args(["push", "--pull=false", "-P"])
        .arg(format!("ubuntu-latest={IMAGE}"))
        .current_dir(workflow)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("act");
    assert!(status.success(), "act failed");
    started.elapsed()
}

fn sh_loop() -> Duration {
    let started = Instant::now();
    for _ in 0..STEPS {
        assert!(
            Command::new("sh")
                .args(["-c", "true"])
                .status()
                .expect("sh")
                .success()
        );
    }
    started.elapsed()
}

/// 200 MiB: 2,097,152 lines of 99 characters and a newline.
const LOG_LINES: u64 = 2_097_152;

fn log_script() -> String {
    format!("yes '{}' | head -n {LOG_LINES}", "x".repeat(99))
}

fn docker_logs_baseline() -> Duration {
    let started = Instant::now();
    let status = Command::new("docker")
        .args(["run", "--rm", IMAGE, "sh", "-c", &log_script()])
        .stdout(Stdio::null())
        .status()
        .expect("docker CLI");
    assert!(status.success());
    started.elapsed()
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn main() {
    if !bench::requested("runner", "cargo bench -p gantry-runner --bench runner") {
        return;
    }
    let rounds = bench::env_number("GANTRY_BENCH_ROUNDS", 3);
    bench::test_image();
    let tools = Command::new(gantry_test_support::repo_root().join("scripts/bench-tools"))
        .output()
        .expect("scripts/bench-tools");
    assert!(tools.status.success(), "scripts/bench-tools failed");
    let act = PathBuf::from(String::from_utf8_lossy(&tools.stdout).trim());
    let workflow = act_workflow();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let docker = Docker::connect_with_defaults()
            .expect("docker")
            .negotiate_version()
            .await
            .expect("docker");
        let backend: Arc<dyn Backend> = Arc::new(
            DockerBackend::connect(&format!("bench-{}", std::process::id()))
                .await
                .expect("docker backend"),
        );
        let local: Arc<dyn Backend> = Arc::new(LocalBackend::in_temp_dir());
        let mut figures: HashMap<&str, Vec<Duration>> = HashMap::new();
        for round in 0..rounds {
            figures.entry("docker gantry").or_default().push(
                gantry(Arc::clone(&backend), true_steps("docker"), round)
                    .await
                    .0,
            );
            figures.entry("docker cli").or_default().push(cli_loop());
            figures
                .entry("docker bollard")
                .or_default()
                .push(bollard_loop(&docker).await);
            figures
                .entry("docker act")
                .or_default()
                .push(act_loop(&act, &workflow));
            figures.entry("local gantry").or_default().push(
                gantry(Arc::clone(&local), true_steps("exec"), round + 100)
                    .await
                    .0,
            );
            figures.entry("local sh").or_default().push(sh_loop());
            let logs = stage(
                "docker",
                &format!(
                    "  - name: logs\n    image: {IMAGE}\n    commands: [\"{}\"]\n",
                    log_script()
                ),
            );
            let (took, lines) = gantry(Arc::clone(&backend), logs, round + 200).await;
            assert!(lines > LOG_LINES, "only {lines} lines reached the reporter");
            figures.entry("logs gantry").or_default().push(took);
            figures
                .entry("logs docker")
                .or_default()
                .push(docker_logs_baseline());
        }
        let m = |k: &str| median(figures.get(k).cloned().unwrap_or_default());
        println!("medians of {rounds} interleaved rounds, {STEPS} steps:");
        for key in [
            "docker gantry",
            "docker cli",
            "docker bollard",
            "docker act",
            "local gantry",
            "local sh",
            "logs gantry",
            "logs docker",
        ] {
            println!("  {key:<15} {:>8.3} s", m(key).as_secs_f64());
        }
        let _ = std::fs::remove_dir_all(&workflow);
        println!("ratios (target):");
        for (label, of, to, target) in [
            (
                "docker: gantry / CLI loop",
                "docker gantry",
                "docker cli",
                "<= 0.8",
            ),
            (
                "docker: gantry / bollard loop",
                "docker gantry",
                "docker bollard",
                "<= 1.1",
            ),
            ("docker: act / CLI loop", "docker act", "docker cli", "-"),
            ("docker: gantry / act", "docker gantry", "docker act", "< 1"),
            (
                "local:  gantry / sh -c true",
                "local gantry",
                "local sh",
                "<= 2",
            ),
            (
                "logs:   gantry / docker run",
                "logs gantry",
                "logs docker",
                "<= 1.3",
            ),
        ] {
            println!("  {label:<30} = {:.2} ({target})", ratio(m(of), m(to)));
        }
    });
}
