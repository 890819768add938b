//! The executor's own guarantees, with a scripted fake backend: whatever happens (a step's
//! task panics, setup fails, the executor is dropped half-way), the stage ends in a final
//! state and `destroy` runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use gantry_runner::backend::JobSpec;
use gantry_runner::{
    Backend, BackendError, Executor, ExecutorConfig, Job, Output, Reporter, StepExit, StepSpec,
    StepState, WorkspaceSource,
};
use tokio_util::sync::CancellationToken;

use crate::support::{Flavour, Recorder, expect, stage, statuses};

const FAKE: Flavour = Flavour {
    pipeline_type: "docker",
    image: "fake",
    start_secs: 0,
};

#[derive(Default)]
struct Scripted {
    fail_setup: bool,
    panic_in: Option<&'static str>,
    block_in: Option<&'static str>,
    destroyed: AtomicUsize,
}

#[async_trait]
impl Backend for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    async fn setup(&self, _: &JobSpec) -> Result<(), BackendError> {
        if self.fail_setup {
            return Err(BackendError::Engine("the engine is gone".into()));
        }
        Ok(())
    }

    async fn import_workspace(&self, _: &JobSpec, _: &std::path::Path) -> Result<(), BackendError> {
        Ok(())
    }

    async fn run_step(
        &self,
        _: &JobSpec,
        step: &StepSpec<'_>,
        output: Output,
        cancel: CancellationToken,
    ) -> Result<StepExit, BackendError> {
        let name = step.step.name.as_str();
        let _ = output.send(format!("running {name}\n").into_bytes()).await;
        if self.panic_in == Some(name) {
            panic!("scripted panic in {name}");
        }
        if self.block_in == Some(name) {
            cancel.cancelled().await;
            return Ok(StepExit::Killed);
        }
        Ok(StepExit::Exited(0))
    }

    async fn destroy(&self, _: &JobSpec) -> Result<(), BackendError> {
        self.destroyed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

const STEPS: &str =
    "  - {name: a, image: IMAGE, commands: [a]}\n  - {name: b, image: IMAGE, commands: [b]}\n";

fn job() -> Job {
    Job {
        id: crate::support::job_id("fake"),
        stage: stage(FAKE, "", STEPS),
        secrets: Default::default(),
        withheld: Default::default(),
        workspace: WorkspaceSource::Empty,
        netrc: None,
        registries: Vec::new(),
    }
}

async fn run(backend: Arc<Scripted>) -> gantry_runner::StageResult {
    let reporter: Arc<dyn Reporter> = Arc::new(Recorder::default());
    Executor::new(backend, ExecutorConfig::default())
        .run(job(), reporter, CancellationToken::new())
        .await
}

#[tokio::test]
async fn a_panicking_step_is_an_error_and_the_stage_still_tears_down() {
    let backend = Arc::new(Scripted {
        panic_in: Some("a"),
        ..Scripted::default()
    });
    let result = run(Arc::clone(&backend)).await;
    assert_eq!(
        statuses(&result),
        expect(&[("a", "error"), ("b", "skipped")])
    );
    assert_eq!(result.status, StepState::Error);
    let error = result
        .step("a")
        .and_then(|s| s.error.clone())
        .unwrap_or_default();
    assert!(
        error.contains("the runner's task for this step failed"),
        "{error}"
    );
    assert_eq!(backend.destroyed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_setup_is_an_error_and_still_tears_down() {
    let backend = Arc::new(Scripted {
        fail_setup: true,
        ..Scripted::default()
    });
    let result = run(Arc::clone(&backend)).await;
    assert_eq!(result.status, StepState::Error);
    assert_eq!(
        result.error.as_deref(),
        Some("the stage could not be set up on the scripted backend: the engine is gone")
    );
    assert_eq!(
        statuses(&result),
        expect(&[("a", "skipped"), ("b", "skipped")])
    );
    assert_eq!(backend.destroyed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dropping_the_executor_half_way_still_tears_down() {
    let backend = Arc::new(Scripted {
        block_in: Some("a"),
        ..Scripted::default()
    });
    let running = {
        let backend = Arc::clone(&backend);
        tokio::spawn(async move { run(backend).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        backend.destroyed.load(Ordering::SeqCst),
        0,
        "torn down while running"
    );
    running.abort();
    let _ = running.await;
    for _ in 0..100 {
        if backend.destroyed.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("destroy did not run after the executor was dropped");
}

/// The last step's end and the cancellation are ready together; whichever the executor takes
/// first, a cancelled stage ends killed (it once ended `success`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_last_step_makes_a_killed_stage_every_time() {
    for _ in 0..40 {
        let backend = Arc::new(Scripted {
            block_in: Some("b"),
            ..Scripted::default()
        });
        let cancel = CancellationToken::new();
        let reporter: Arc<dyn Reporter> = Arc::new(Recorder::default());
        let running = {
            let (backend, cancel) = (Arc::clone(&backend), cancel.clone());
            tokio::spawn(async move {
                Executor::new(backend, ExecutorConfig::default())
                    .run(job(), reporter, cancel)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        cancel.cancel();
        let result = running.await.expect("the run");
        assert_eq!(result.status, StepState::Killed, "{:?}", statuses(&result));
        assert_eq!(result.error.as_deref(), Some("cancelled"));
    }
}
