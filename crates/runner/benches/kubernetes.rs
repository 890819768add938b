//! A stage on Kubernetes against the same stage on Docker, measured in one run, interleaved,
//! medians of `GANTRY_BENCH_ROUNDS` (default 3): a one-step stage (start-up: the pod, its
//! Secret, the first container) and a five-step stage (each step's swap in the pod), from
//! `Executor::run` to its result. Starts the test cluster (test-support's
//! `kubernetes::Cluster`); the runner authenticates as the backend's service account.
//! `cargo bench -p gantry-runner --bench kubernetes`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_pipeline::{Context, PlanStep, Stage, compile, parse};
use gantry_runner::kubernetes::{KubernetesBackend, KubernetesConfig};
use gantry_runner::{
    Backend, DockerBackend, Executor, ExecutorConfig, Job, LogLine, Reporter, StepResult,
    StepState, WorkspaceSource,
};
use gantry_test_support::bench::{self, median};
use gantry_test_support::kubernetes::{Cluster, HELPER_IMAGE};
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "gantry-test/busybox:latest";

struct Quiet;

impl Reporter for Quiet {
    fn step_started(&self, _: &PlanStep) {}
    fn log(&self, _: &str, _: &LogLine) {}
    fn step_finished(&self, _: &StepResult) {}
}

fn stage(steps: usize) -> Stage {
    let steps: String = (1..=steps)
        .map(|i| format!("  - name: s{i}\n    image: {IMAGE}\n    commands: [true]\n"))
        .collect();
    let yaml = format!("kind: pipeline\nname: bench\nclone:\n  disable: true\nsteps:\n{steps}");
    let config = parse(".gantry.yml", &yaml)
        .config
        .expect("valid bench pipeline");
    let mut ctx = Context::push("acme/app", "main");
    ctx.trusted = true;
    compile(&config, &ctx).expect("plans").stages.remove(0)
}

async fn time(backend: &Arc<dyn Backend>, stage: &Stage, n: usize) -> Duration {
    let job = Job {
        id: format!("bench-{}-{n}", std::process::id()),
        stage: stage.clone(),
        secrets: Default::default(),
        withheld: Default::default(),
        workspace: WorkspaceSource::Empty,
        netrc: None,
        registries: Vec::new(),
    };
    let started = Instant::now();
    let result = Executor::new(Arc::clone(backend), ExecutorConfig::default())
        .run(job, Arc::new(Quiet), CancellationToken::new())
        .await;
    assert_eq!(result.status, StepState::Success, "{result:?}");
    started.elapsed()
}

fn main() {
    if !bench::requested(
        "kubernetes",
        "cargo bench -p gantry-runner --bench kubernetes",
    ) {
        return;
    }
    let rounds = bench::env_number("GANTRY_BENCH_ROUNDS", 3);
    bench::test_image();
    let (_, kubeconfig) = Cluster::shared().runner_namespace("bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let name = format!("bench-{}", std::process::id());
        let docker: Arc<dyn Backend> =
            Arc::new(DockerBackend::connect(&name).await.expect("docker backend"));
        let config = KubernetesConfig {
            kubeconfig: Some(kubeconfig),
            helper_image: HELPER_IMAGE.to_owned(),
            ..KubernetesConfig::default()
        };
        let kubernetes: Arc<dyn Backend> = Arc::new(
            KubernetesBackend::connect(&name, config)
                .await
                .expect("kubernetes backend"),
        );
        let mut n = 0;
        for steps in [1, 5] {
            let stage = stage(steps);
            let (mut on_docker, mut on_kubernetes) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                n += 1;
                on_docker.push(time(&docker, &stage, n).await);
                n += 1;
                on_kubernetes.push(time(&kubernetes, &stage, n).await);
            }
            let (d, k) = (median(on_docker), median(on_kubernetes));
            println!(
                "{steps}-step stage: kubernetes {k:.2?}, docker {d:.2?}: {:.1}x",
                k.as_secs_f64() / d.as_secs_f64()
            );
        }
    });
}
