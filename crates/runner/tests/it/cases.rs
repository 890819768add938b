//! The semantics every backend must give, as cases generic over the backend. A backend's
//! test module instantiates them with `backend_cases!`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_runner::{Backend, MASK, StepState};

use gantry_runner::WorkspaceSource;
use gantry_test_support::TempDir;

use crate::support::{Flavour, expect, run, run_in, stage, stage_from, statuses};

pub async fn passing_steps_share_the_workspace(backend: Arc<dyn Backend>, f: Flavour) {
    let stage = stage(
        f,
        "",
        "
  - name: write
    image: IMAGE
    commands: [echo hello > greeting.txt, echo wrote]
  - name: read
    image: IMAGE
    commands: [cat greeting.txt]
",
    );
    let run = run(backend, stage, &[], None).await;
    assert_eq!(
        statuses(&run.result),
        expect(&[("write", "success"), ("read", "success")])
    );
    assert_eq!(run.result.status, StepState::Success);
    assert_eq!(
        run.recorder.lines("write"),
        ["+ echo hello > greeting.txt", "+ echo wrote", "wrote"]
    );
    assert_eq!(run.recorder.lines("read"), ["+ cat greeting.txt", "hello"]);
}

pub async fn a_failure_stops_later_steps_and_runs_failure_handlers(
    backend: Arc<dyn Backend>,
    f: Flavour,
) {
    let stage = stage(
        f,
        "",
        "
  - name: flaky
    image: IMAGE
    commands: [exit 3]
    failure: ignore
  - name: build
    image: IMAGE
    commands: [echo building, exit 2]
  - name: deploy
    image: IMAGE
    commands: [echo must not run]
  - name: notify
    image: IMAGE
    commands: [echo build failed]
    when:
      status: [failure]
  - name: always
    image: IMAGE
    commands: [echo cleanup]
    when:
      status: [success, failure]
",
    );
    let run = run(backend, stage, &[], None).await;
    assert_eq!(
        statuses(&run.result),
        expect(&[
            ("flaky", "failure"),
            ("build", "failure"),
            ("deploy", "skipped"),
            ("notify", "success"),
            ("always", "success")
        ])
    );
    assert_eq!(run.result.status, StepState::Failure);
    assert_eq!(run.result.step("build").and_then(|s| s.exit_code), Some(2));
    assert_eq!(run.result.step("flaky").and_then(|s| s.exit_code), Some(3));
    assert_eq!(
        run.result.step("deploy").and_then(|s| s.error.as_deref()),
        Some("an earlier step failed")
    );
    assert!(!run.recorder.all_text().contains("must not run"));
}

pub async fn graph_steps_run_concurrently(backend: Arc<dyn Backend>, f: Flavour) {
    let stage = stage(
        f,
        "",
        "
  - name: left
    image: IMAGE
    commands: [sleep 1]
    depends_on: []
  - name: right
    image: IMAGE
    commands: [sleep 1]
    depends_on: []
  - name: join
    image: IMAGE
    commands: [echo joined]
    depends_on: [left, right]
",
    );
    let run = run(backend, stage, &[], None).await;
    assert_eq!(run.result.status, StepState::Success, "{:?}", run.result);
    let left = run.result.step("left").expect("left");
    let right = run.result.step("right").expect("right");
    let join = run.result.step("join").expect("join");
    let (ls, le) = (
        left.started_at.expect("started"),
        left.finished_at.expect("finished"),
    );
    let (rs, re) = (
        right.started_at.expect("started"),
        right.finished_at.expect("finished"),
    );
    assert!(
        ls < re && rs < le,
        "left {ls}..{le} and right {rs}..{re} do not overlap"
    );
    assert!(
        join.started_at.expect("started") >= le.max(re),
        "join started before its parents finished"
    );
}

pub async fn exit_78_ends_the_stage_early_as_passed(backend: Arc<dyn Backend>, f: Flavour) {
    let stage = stage(
        f,
        "",
        "
  - name: check
    image: IMAGE
    commands: [echo nothing to do, exit 78]
  - name: build
    image: IMAGE
    commands: [echo must not run]
",
    );
    let run = run(backend, stage, &[], None).await;
    assert_eq!(
        statuses(&run.result),
        expect(&[("check", "success"), ("build", "skipped")])
    );
    assert_eq!(run.result.status, StepState::Success);
}

pub async fn failure_fast_stops_running_steps(backend: Arc<dyn Backend>, f: Flavour) {
    let stage = stage(
        f,
        "",
        "
  - name: slow
    image: IMAGE
    commands: [sleep 30]
    depends_on: []
  - name: broken
    image: IMAGE
    commands: [sleep 0.3, exit 1]
    failure: fast
    depends_on: []
",
    );
    let started = Instant::now();
    let run = run(backend, stage, &[], None).await;
    assert!(
        // Far below the slow step's 30 s; two containers' start-up on top.
        started.elapsed() < Duration::from_secs(10 + 2 * f.start_secs),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        statuses(&run.result),
        expect(&[("slow", "killed"), ("broken", "failure")])
    );
    assert_eq!(run.result.status, StepState::Failure);
}

pub async fn cancel_stops_within_seconds_and_skips_the_rest(backend: Arc<dyn Backend>, f: Flavour) {
    let stage = stage(
        f,
        "",
        "
  - name: long
    image: IMAGE
    commands: [echo started, sleep 60]
  - name: after
    image: IMAGE
    commands: [echo after]
",
    );
    let started = Instant::now();
    let run = run(backend, stage, &[], Some(Duration::from_millis(800))).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(800) + Duration::from_secs(4 + f.start_secs),
        "cancel took {elapsed:?}"
    );
    assert_eq!(
        statuses(&run.result),
        expect(&[("long", "killed"), ("after", "skipped")])
    );
    assert_eq!(run.result.status, StepState::Killed);
    assert_eq!(run.result.error.as_deref(), Some("cancelled"));
}

pub async fn step_and_stage_timeouts(backend: Arc<dyn Backend>, f: Flavour) {
    let stage_def = stage(
        f,
        "",
        "
  - name: slow
    image: IMAGE
    commands: [sleep 60]
    timeout: 1s
  - name: on-failure
    image: IMAGE
    commands: [echo timed out]
    when:
      status: [failure]
",
    );
    let result = run(Arc::clone(&backend), stage_def, &[], None).await.result;
    assert_eq!(
        statuses(&result),
        expect(&[("slow", "failure"), ("on-failure", "success")])
    );
    assert_eq!(
        result.step("slow").and_then(|s| s.error.as_deref()),
        Some("timed out after 1s")
    );

    let stage_def = stage(
        f,
        "timeout: 2s\n",
        "\n  - name: slow\n    image: IMAGE\n    commands: [sleep 60]\n  - name: next\n    image: IMAGE\n    commands: [echo next]\n",
    );
    let started = Instant::now();
    let result = run(backend, stage_def, &[], None).await.result;
    assert!(
        started.elapsed() < Duration::from_secs(8 + f.start_secs),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        statuses(&result),
        expect(&[("slow", "killed"), ("next", "skipped")])
    );
    assert_eq!(result.status, StepState::Killed);
    assert_eq!(
        result.error.as_deref(),
        Some("the stage timed out after 2s")
    );
}

pub async fn secrets_are_masked(backend: Arc<dyn Backend>, f: Flavour) {
    let stage = stage(
        f,
        "",
        "
  - name: leak
    image: IMAGE
    environment:
      TOKEN:
        from_secret: token
      KEY:
        from_secret: key
    commands:
      - echo \"token=$TOKEN\"
      - printf 'split=%s' \"$(printf '%s' \"$TOKEN\" | head -c 8)\"; sleep 0.2; printf '%s\\n' \"$(printf '%s' \"$TOKEN\" | tail -c +9)\"
      - echo \"$KEY\"
      - printf '%s' \"$TOKEN\" | base64
",
    );
    let token = "tok-1234567890-abcdef";
    let key = "-----BEGIN KEY-----\nmultilinesecretbody\n-----END KEY-----";
    let run = run(backend, stage, &[("token", token), ("key", key)], None).await;
    assert_eq!(run.result.status, StepState::Success, "{:?}", run.result);
    let text = run.recorder.all_text();
    for leak in [
        "tok-1234",
        "567890-abcdef",
        "multilinesecretbody",
        "BEGIN KEY",
        "dG9rLTEyMzQ1Njc4OTAtYWJjZGVm",
    ] {
        assert!(!text.contains(leak), "`{leak}` leaked:\n{text}");
    }
    let lines = run.recorder.lines("leak");
    assert!(lines.contains(&format!("token={MASK}")), "{lines:?}");
    assert!(lines.contains(&format!("split={MASK}")), "{lines:?}");
}

pub async fn missing_secrets_are_an_error_before_the_step_runs(
    backend: Arc<dyn Backend>,
    f: Flavour,
) {
    let stage = stage(
        f,
        "",
        "
  - name: deploy
    image: IMAGE
    environment:
      TOKEN:
        from_secret: deploy_token
    commands: [echo must not run]
",
    );
    let run = run(backend, stage, &[], None).await;
    assert_eq!(statuses(&run.result), expect(&[("deploy", "error")]));
    assert_eq!(run.result.status, StepState::Error);
    let error = run
        .result
        .step("deploy")
        .and_then(|s| s.error.clone())
        .unwrap_or_default();
    assert!(
        error.starts_with("secret `deploy_token` (for `TOKEN`) is not set"),
        "{error}"
    );
}

pub async fn long_lines_and_binary_output(backend: Arc<dyn Backend>, f: Flavour) {
    let stage = stage(
        f,
        "",
        "
  - name: noisy
    image: IMAGE
    commands:
      - i=0; while [ $i -lt 2000 ]; do printf 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'; i=$((i+1)); done; echo
      - printf '\\377\\376\\000binary\\n'
      - echo done
",
    );
    let run = run(backend, stage, &[], None).await;
    assert_eq!(run.result.status, StepState::Success, "{:?}", run.result);
    let lines = run.recorder.lines("noisy");
    let long: usize = lines
        .iter()
        .filter(|l| l.starts_with('x'))
        .map(String::len)
        .sum();
    assert_eq!(long, 200_000);
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("binary") && l.contains('\u{fffd}')),
        "{lines:?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("done"));
}

pub async fn the_workspace_is_filled_from_a_directory(backend: Arc<dyn Backend>, f: Flavour) {
    let source = TempDir::new("workspace-source");
    source.write("README.md", "# from the repository\n");
    source.write("src/main.sh", "echo nested\n");
    let stage = stage_from(
        f,
        "steps:\n  - name: list\n    image: IMAGE\n    commands: [cat README.md, sh src/main.sh]\n",
    );
    let run = run_in(
        backend,
        stage,
        &[],
        None,
        WorkspaceSource::Directory(source.path().to_owned()),
    )
    .await;
    assert_eq!(
        statuses(&run.result),
        expect(&[("clone", "success"), ("list", "success")]),
        "{:?}",
        run.result
    );
    assert_eq!(
        run.recorder.lines("list"),
        [
            "+ cat README.md",
            "# from the repository",
            "+ sh src/main.sh",
            "nested"
        ]
    );
}

/// More output than an engine's rotating log files hold (here 40 MB; many hosts rotate at
/// 10 MB x 3): every line arrives, in order.
pub async fn a_large_log_arrives_whole(backend: Arc<dyn Backend>, f: Flavour) {
    let stage = stage(
        f,
        "",
        "\n  - name: loud\n    image: IMAGE\n    commands:\n      - yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 | head -n 400000\n      - echo last\n",
    );
    let run = run(backend, stage, &[], None).await;
    assert_eq!(run.result.status, StepState::Success, "{:?}", run.result);
    let lines = run.recorder.lines("loud");
    assert_eq!(lines.len(), 400_003, "lines lost");
    assert_eq!(lines.last().map(String::as_str), Some("last"));
}

pub async fn a_failed_step_is_retried_with_every_try_logged(backend: Arc<dyn Backend>, f: Flavour) {
    let timeout = 1 + f.start_secs;
    let stage = stage(
        f,
        "",
        &format!(
            "
  - name: flaky
    image: IMAGE
    retry: {{count: 3, delay: 1s}}
    commands:
      - echo try
      - test -f tried2 && echo passes && exit 0
      - test -f tried1 && touch tried2 && exit 4
      - touch tried1 && exit 3
  - name: slow
    image: IMAGE
    retry: 1
    timeout: {timeout}s
    commands:
      - test -f slowed && echo quick && exit 0
      - touch slowed && sleep 30
  - name: hopeless
    image: IMAGE
    retry: 1
    commands: [echo no, exit 5]
"
        ),
    );
    let run = run(backend, stage, &[], None).await;
    assert_eq!(
        statuses(&run.result),
        expect(&[
            ("flaky", "success"),
            ("slow", "success"),
            ("hopeless", "failure")
        ]),
        "{:?}\n{}",
        run.result,
        run.recorder.all_text()
    );
    let slow = run.recorder.said("slow");
    assert!(
        slow.iter().any(|l| l.starts_with(&format!(
            "gantry: try 1 of 2 failed (timed out after {timeout}s)"
        ))),
        "a timed-out try is retried: {slow:#?}"
    );
    assert_eq!(slow.last().map(String::as_str), Some("quick"));
    let lines = run.recorder.said("flaky");
    let notes: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("gantry: try"))
        .collect();
    assert_eq!(
        notes,
        [
            "gantry: try 1 of 4 failed (exit code 3); running it again in 1s in a fresh container",
            "gantry: try 2 of 4 failed (exit code 4); running it again in 1s in a fresh container",
        ],
        "{lines:#?}"
    );
    assert_eq!(
        lines.iter().filter(|l| *l == "try").count(),
        3,
        "every try's lines are kept: {lines:#?}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("passes"));
    let numbers = run.recorder.numbers("flaky");
    assert_eq!(
        numbers,
        (1..=numbers.len() as u64).collect::<Vec<_>>(),
        "the tries' lines are numbered on"
    );
    let hopeless = run.result.step("hopeless").expect("ran");
    assert_eq!(hopeless.exit_code, Some(5));
    assert_eq!(hopeless.error.as_deref(), Some("failed on each of 2 tries"));
    assert_eq!(
        run.recorder
            .lines("hopeless")
            .iter()
            .filter(|l| *l == "no")
            .count(),
        2
    );
}

/// Instantiates every case for a backend: `backend_cases!(make_backend(), FLAVOUR, after)`,
/// where `after` is an async check run after every case (e.g. nothing left behind).
#[macro_export]
macro_rules! backend_cases {
    ($backend:expr, $flavour:expr, $after:path) => {
        $crate::backend_cases!(@each $backend, $flavour, $after;
            passing_steps_share_the_workspace,
            a_failure_stops_later_steps_and_runs_failure_handlers,
            graph_steps_run_concurrently,
            exit_78_ends_the_stage_early_as_passed,
            failure_fast_stops_running_steps,
            cancel_stops_within_seconds_and_skips_the_rest,
            step_and_stage_timeouts,
            secrets_are_masked,
            missing_secrets_are_an_error_before_the_step_runs,
            long_lines_and_binary_output,
            the_workspace_is_filled_from_a_directory,
            a_large_log_arrives_whole,
            a_failed_step_is_retried_with_every_try_logged,
        );
    };
    (@each $backend:expr, $flavour:expr, $after:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $backend;
                let shared: std::sync::Arc<dyn gantry_runner::Backend> = backend.clone();
                $crate::cases::$case(shared, $flavour).await;
                $after(backend).await;
            }
        )*
    };
}
