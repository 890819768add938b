//! Running one step or service on the backend: its output through masking and the log cap
//! to the reporter, its timeout, and its retries (each try in a fresh container, every
//! try's lines kept, numbered on).

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) enum ServiceOrStep {
    Service(usize),
    Step(usize),
}

impl ServiceOrStep {
    pub(super) fn of(self, stage: &Stage) -> &PlanStep {
        match self {
            ServiceOrStep::Service(i) => &stage.services[i],
            ServiceOrStep::Step(i) => &stage.steps[i],
        }
    }
}

/// Starts a service or detached step; it runs until the stage ends.
pub(super) fn spawn_background(
    set: &mut JoinSet<StepResult>,
    ids: &mut HashMap<tokio::task::Id, ServiceOrStep>,
    shared: &Arc<Shared>,
    which: ServiceOrStep,
    environment: BTreeMap<String, String>,
    stage_end: &CancellationToken,
) {
    let handle = set.spawn(
        run_one(
            Arc::clone(shared),
            which,
            environment,
            stage_end.child_token(),
        )
        .in_current_span(),
    );
    ids.insert(handle.id(), which);
}

/// Runs one step or service on the backend: streams its output through masking and the cap
/// to the reporter, enforces its timeout, and says how it ended. A failed step with `retry`
/// runs again in a fresh container; every try's lines stay in its log, numbered on, with a
/// line between tries saying why.
pub(super) async fn run_one(
    shared: Arc<Shared>,
    which: ServiceOrStep,
    environment: BTreeMap<String, String>,
    token: CancellationToken,
) -> StepResult {
    let step = which.of(&shared.spec.stage);
    let span = tracing::info_span!("step", step.name = %step.name, step.detach = step.detach);
    run_one_in(Arc::clone(&shared), which, environment, token)
        .instrument(span)
        .await
}

pub(super) async fn run_one_in(
    shared: Arc<Shared>,
    which: ServiceOrStep,
    environment: BTreeMap<String, String>,
    token: CancellationToken,
) -> StepResult {
    let step = which.of(&shared.spec.stage);
    shared.reporter.step_started(step);
    let started_at = Utc::now();
    let started = Instant::now();
    let tries = if step.detach {
        1
    } else {
        step.retry.count.saturating_add(1)
    };
    let mut last_line = 0u64;
    let mut attempt = 1;
    let (status, exit_code, error) = loop {
        let (ended, lines) = run_try(
            &shared,
            step,
            &environment,
            &token,
            attempt,
            started,
            last_line,
        )
        .await;
        last_line = lines;
        let failed = matches!(ended.0, StepState::Failure | StepState::Error);
        if !failed || attempt >= tries || token.is_cancelled() {
            let (status, exit_code, error) = ended;
            let error = match error {
                Some(e) if attempt > 1 => Some(format!("{e} (try {attempt} of {tries})")),
                None if failed && attempt > 1 => Some(format!("failed on each of {tries} tries")),
                other => other,
            };
            break (status, exit_code, error);
        }
        let why = match (ended.1, &ended.2) {
            (_, Some(error)) => error.clone(),
            (Some(code), None) => format!("exit code {code}"),
            (None, None) => format!("{:?}", ended.0).to_lowercase(),
        };
        let delay = step.retry.delay_secs;
        let after = if delay > 0 {
            format!(" in {}", describe_secs(delay))
        } else {
            String::new()
        };
        last_line += 1;
        shared.reporter.log(
            &step.name,
            &LogLine {
                number: last_line,
                elapsed_ms: elapsed_ms(started),
                text: format!(
                    "gantry: try {attempt} of {tries} failed ({why}); running it again{after} in a fresh container"
                ),
            },
        );
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(delay)) => {}
            () = token.cancelled() => break (StepState::Killed, None, None),
        }
        attempt += 1;
    };
    let result = StepResult {
        name: step.name.clone(),
        status,
        exit_code,
        started_at: Some(started_at),
        finished_at: Some(Utc::now()),
        error,
    };
    shared.reporter.step_finished(&result);
    result
}

/// One try of a step: its lines are numbered on from `last_line`; returns how it ended and
/// the number of its last line.
pub(super) async fn run_try(
    shared: &Arc<Shared>,
    step: &PlanStep,
    environment: &BTreeMap<String, String>,
    token: &CancellationToken,
    attempt: u32,
    started: Instant,
    last_line: u64,
) -> ((StepState, Option<i32>, Option<String>), u64) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let logs = {
        let shared = Arc::clone(shared);
        let name = step.name.clone();
        tokio::spawn(async move {
            let mut splitter =
                LineSplitter::new(shared.masker.clone(), shared.config.max_line_bytes);
            let mut cap = LogCap::new(shared.config.log_limit_bytes);
            let mut number = last_line;
            let mut emit = |text: String, cap: &mut LogCap| {
                number += 1;
                let line = LogLine {
                    number,
                    elapsed_ms: elapsed_ms(started),
                    text,
                };
                if let Some(line) = cap.admit(line) {
                    shared.reporter.log(&name, &line);
                }
            };
            while let Some(chunk) = rx.recv().await {
                let mut lines = Vec::new();
                splitter.push(&chunk, &mut |l| lines.push(l));
                lines.into_iter().for_each(|l| emit(l, &mut cap));
            }
            let mut lines = Vec::new();
            splitter.finish(&mut |l| lines.push(l));
            lines.into_iter().for_each(|l| emit(l, &mut cap));
            let mut last = number;
            for line in cap.finish(elapsed_ms(started)) {
                last = last.max(line.number);
                shared.reporter.log(&name, &line);
            }
            last
        })
    };
    let spec = StepSpec {
        step,
        environment: environment.clone(),
        attempt,
    };
    // A timeout stops this try only: a step with `retry` runs again after one.
    let try_token = token.child_token();
    let run = shared
        .backend
        .run_step(&shared.spec, &spec, tx, try_token.clone());
    tokio::pin!(run);
    let mut timed_out = false;
    let outcome: Result<StepExit, BackendError> = match step.timeout_secs {
        Some(secs) => {
            tokio::select! {
                outcome = &mut run => outcome,
                () = tokio::time::sleep(Duration::from_secs(secs)) => {
                    timed_out = true;
                    try_token.cancel();
                    run.await
                }
            }
        }
        None => run.await,
    };
    let last_line = logs.await.unwrap_or(last_line);
    let ended = match outcome {
        Ok(StepExit::Exited(0)) => (StepState::Success, Some(0), None),
        Ok(StepExit::Exited(EXIT_EARLY)) => (StepState::Success, Some(EXIT_EARLY), None),
        Ok(StepExit::Exited(code)) => (StepState::Failure, Some(code), None),
        Ok(StepExit::Killed) if timed_out => (
            StepState::Failure,
            None,
            Some(format!(
                "timed out after {}",
                describe_secs(step.timeout_secs.unwrap_or(0))
            )),
        ),
        // Services and detached steps are stopped when the stage ends: that is how they end.
        Ok(StepExit::Killed) if step.detach => (StepState::Success, None, None),
        Ok(StepExit::Killed) => (StepState::Killed, None, None),
        Err(e) => (StepState::Error, None, Some(e.to_string())),
    };
    (ended, last_line)
}

pub(super) fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The stage's steps running now, each with the token that cancels it.
#[derive(Default)]
pub(super) struct Running {
    tasks: JoinSet<StepResult>,
    steps: HashMap<tokio::task::Id, (usize, CancellationToken)>,
}

impl Running {
    pub(super) fn spawn(
        &mut self,
        shared: &Arc<Shared>,
        i: usize,
        environment: BTreeMap<String, String>,
        token: CancellationToken,
    ) {
        let handle = self.tasks.spawn(
            run_one(
                Arc::clone(shared),
                ServiceOrStep::Step(i),
                environment,
                token.clone(),
            )
            .in_current_span(),
        );
        self.steps.insert(handle.id(), (i, token));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub(super) fn cancel_all(&self) {
        self.steps.values().for_each(|(_, token)| token.cancel());
    }

    /// The next step to end, and how (a task that failed is the step's error, reported).
    /// `None` when none runs.
    pub(super) async fn next(&mut self, shared: &Shared) -> Option<(usize, StepResult)> {
        loop {
            let (id, result) = match self.tasks.join_next_with_id().await? {
                Ok(ended) => ended,
                Err(e) => {
                    let name = self
                        .steps
                        .get(&e.id())
                        .map(|(i, _)| shared.spec.stage.steps[*i].name.clone())
                        .unwrap_or_default();
                    let result = StepResult {
                        status: StepState::Error,
                        error: Some(format!("the runner's task for this step failed: {e}")),
                        ..StepResult::skipped(&name, "")
                    };
                    shared.reporter.step_finished(&result);
                    (e.id(), result)
                }
            };
            if let Some((i, _)) = self.steps.remove(&id) {
                return Some((i, result));
            }
        }
    }
}
