//! The store's benchmark: the queries of a build's life (create, claim, heartbeat, step
//! states, a log batch and its read, the stage's end, the build and the list pages), each
//! timed on SQLite and on PostgreSQL, median and 90th percentile in microseconds. Its figures
//! are compared as ratios between two builds of the store run one after the other on one
//! machine (the machines are noisy), e.g. before and after a change of how queries reach
//! the two databases.
//!
//! `cargo bench -p gantry-store --bench store` (`GANTRY_BENCH_ROUNDS`, default 300); under
//! `cargo test` it runs three rounds, so that it cannot rot.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gantry_pipeline::{Context, compile, parse};
use gantry_proto::{LogLine, StepState, StepUpdate};
use gantry_store::{BuildFilter, NewBuild, StageEnd, Status, Store, now_ms};
use gantry_test_support::{TempDir, test_databases};

#[path = "../tests/it/fixtures.rs"]
mod fixtures;

use fixtures::{TWO_STAGES, repo, runner};

/// Each query's durations, by name, in the order first timed.
#[derive(Default)]
struct Timings(BTreeMap<&'static str, Vec<Duration>>);

impl Timings {
    async fn time<T>(&mut self, query: &'static str, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = work.await;
        self.0.entry(query).or_default().push(started.elapsed());
        out
    }

    fn print(&self, label: &str) {
        for (query, times) in &self.0 {
            let mut micros: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e6).collect();
            micros.sort_by(f64::total_cmp);
            let at = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize];
            println!(
                "store {label:8} {query:16} median {:8.0} µs  p90 {:8.0} µs  ({} runs)",
                at(0.5),
                at(0.9),
                micros.len()
            );
        }
    }
}

fn step(epoch: i64, name: &str, state: StepState) -> StepUpdate {
    StepUpdate {
        epoch,
        step: name.into(),
        state,
        exit_code: (state != StepState::Running).then_some(0),
        started_at: Some(chrono::Utc::now()),
        finished_at: (state != StepState::Running).then(chrono::Utc::now),
        error: None,
    }
}

async fn one_database(label: &str, store: &Store, rounds: usize) {
    let repo = repo(store, "bench").await;
    let config = parse(".gantry.yml", TWO_STAGES)
        .config
        .expect("the bench pipeline is valid");
    let lines: Vec<LogLine> = (1..=50)
        .map(|number| LogLine {
            number,
            elapsed_ms: number * 10,
            text: format!("line {number} of a step's output, as long as a real one is"),
        })
        .collect();
    let mut timings = Timings::default();
    for _ in 0..rounds {
        let number = store.take_build_number(repo.id).await.expect("a number");
        let mut ctx = Context::push("acme/bench", "main");
        ctx.build_number = number as u64;
        let plan = compile(&config, &ctx).expect("plans");
        let new = NewBuild {
            repo_id: repo.id,
            number,
            context: ctx,
            sender: "octocat".into(),
            plan: Ok(plan),
            delivery: None,
            fork: false,
            hold: false,
            approvals: Default::default(),
            schedule: None,
        };
        timings
            .time("create_build", store.create_build(&new))
            .await
            .expect("creates");
        let claim = timings
            .time("claim_next", store.claim_next(&runner("bench")))
            .await
            .expect("claims")
            .expect("a stage is queued");
        let (stage, epoch) = (claim.stage_id, claim.epoch);
        timings
            .time(
                "heartbeat",
                store.heartbeat(stage, epoch, now_ms() + 60_000),
            )
            .await
            .expect("renews");
        let running = step(epoch, "compile", StepState::Running);
        timings
            .time("update_step", store.update_step(stage, &running))
            .await
            .expect("starts");
        timings
            .time(
                "append_logs",
                store.append_logs(stage, epoch, "compile", &lines),
            )
            .await
            .expect("appends");
        let step_id = store.steps(stage).await.expect("steps")[0].id;
        timings
            .time("read_log", store.read_log(step_id, 1, 500))
            .await
            .expect("reads");
        let end = StageEnd {
            status: Status::Success,
            error: None,
            steps: vec![
                step(epoch, "compile", StepState::Success),
                step(epoch, "test", StepState::Success),
            ],
        };
        timings
            .time("finish_stage", store.finish_stage(stage, epoch, &end))
            .await
            .expect("finishes");
        timings
            .time("build", store.build(repo.id, number))
            .await
            .expect("reads");
        let page = BuildFilter {
            limit: 25,
            ..BuildFilter::default()
        };
        timings
            .time("list_builds", store.list_builds(repo.id, &page))
            .await
            .expect("lists");
        // The deploy stage: claimed and ended, so the queue stays short.
        let deploy = store
            .claim_next(&runner("bench"))
            .await
            .expect("claims")
            .expect("deploy is queued");
        store
            .finish_stage(
                deploy.stage_id,
                deploy.epoch,
                &StageEnd {
                    status: Status::Success,
                    error: None,
                    steps: vec![],
                },
            )
            .await
            .expect("finishes");
    }
    timings.print(label);
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rounds = if bench {
        std::env::var("GANTRY_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(300)
    } else {
        3
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = TempDir::new("bench-store");
        for (label, url) in test_databases(dir.path()).await {
            let store = Store::open(&url).await.expect("opens");
            one_database(label, &store, rounds).await;
            store.close().await;
        }
    });
}
