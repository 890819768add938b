//! One storage API, two databases: each case below runs on both (see `on_both!`).

use std::sync::Arc;

use gantry_pipeline::{Context, Plan, compile, parse};
use gantry_proto::{LogLine, StepState, StepUpdate};
use gantry_store::{
    BuildFilter, DeliveryState, LeaseError, NewBuild, NewDelivery, NewRepo, NewToken, Recorded,
    RegistryScope, RepoUpdate, Role, RoleSource, StageEnd, Status, Store, StoreError, Visibility,
    now_ms,
};
use gantry_test_support::{TempDir, test_databases};

pub(crate) use crate::fixtures::{TWO_STAGES, repo, runner};

/// Runs an async case once per database, each on a fresh one.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let dir = TempDir::new(stringify!($name));
                for (label, url) in test_databases(dir.path()).await {
                    let store = Store::open(&url)
                        .await
                        .unwrap_or_else(|e| panic!("{label}: opening {url}: {e}"));
                    assert_eq!(store.dialect(), label);
                    cases::$name(store).await;
                }
            }
        )*
    };
}

on_both!(
    repositories_are_created_read_updated_and_removed,
    a_build_runs_through_the_queue_to_its_final_state,
    a_stage_is_claimed_by_exactly_one_runner,
    runners_take_only_stages_whose_labels_they_offer,
    a_runner_finds_its_stage_behind_any_number_it_cannot_take,
    an_expired_lease_is_reaped_and_its_late_updates_refused,
    a_restarted_runner_loses_what_its_earlier_life_held,
    deliveries_are_recorded_once_and_rejected_ones_may_come_again,
    an_invalid_pipeline_makes_an_errored_build_and_a_fully_skipped_one_is_skipped,
    cancelling_kills_queued_stages_and_tells_running_ones,
    builds_are_listed_newest_first_by_branch_and_page,
    log_chunks_page_and_a_resent_batch_is_harmless,
    tokens_are_found_by_hash,
    users_hold_tokens_and_roles_from_two_sources,
    registry_logins_are_kept_per_scope_and_read_most_particular_first,
);

pub(crate) fn plan_of(yaml: &str, ctx: &Context) -> Plan {
    let config = parse(".gantry.yml", yaml)
        .config
        .unwrap_or_else(|| panic!("the test pipeline is valid:\n{yaml}"));
    compile(&config, ctx).expect("the test pipeline compiles")
}

pub(crate) async fn new_build(
    store: &Store,
    repo_id: i64,
    branch: &str,
    yaml: &str,
) -> gantry_store::Build {
    try_build(store, repo_id, branch, yaml, None)
        .await
        .expect("creates the build")
        .0
}

/// A build of `yaml` on `branch` with the next number, for `delivery` if given.
async fn try_build(
    store: &Store,
    repo_id: i64,
    branch: &str,
    yaml: &str,
    delivery: Option<i64>,
) -> Result<(gantry_store::Build, bool), gantry_store::StoreError> {
    try_build_for(store, repo_id, branch, yaml, delivery, None).await
}

/// A build of `yaml` on `branch` for `delivery` or `schedule`, if given.
pub(crate) async fn try_build_for(
    store: &Store,
    repo_id: i64,
    branch: &str,
    yaml: &str,
    delivery: Option<i64>,
    schedule: Option<gantry_store::ScheduleRun>,
) -> Result<(gantry_store::Build, bool), gantry_store::StoreError> {
    let number = store.take_build_number(repo_id).await.expect("a number");
    let mut ctx = Context::push("acme/app", branch);
    ctx.build_number = number as u64;
    ctx.commit = "0123456789abcdef0123456789abcdef01234567".into();
    let plan = plan_of(yaml, &ctx);
    store
        .create_build(&NewBuild {
            repo_id,
            number,
            context: ctx,
            sender: "octocat".into(),
            plan: Ok(plan),
            delivery,
            fork: false,
            hold: false,
            approvals: Default::default(),
            schedule,
        })
        .await
}

pub(crate) fn step(epoch: i64, name: &str, state: StepState, exit: Option<i32>) -> StepUpdate {
    StepUpdate {
        epoch,
        step: name.into(),
        state,
        exit_code: exit,
        started_at: Some(chrono::Utc::now()),
        finished_at: (state != StepState::Running).then(chrono::Utc::now),
        error: None,
    }
}

/// A runner's report that a stage ended.
pub(crate) fn end(status: Status, steps: Vec<StepUpdate>) -> StageEnd {
    StageEnd {
        status,
        error: None,
        steps,
    }
}

/// Finds the lines that end with a character.
struct EndsWith(char);

impl gantry_store::LineMatcher for EndsWith {
    fn matching_lines<'t>(&self, text: &'t str) -> Vec<(usize, &'t str)> {
        text.split('\n')
            .enumerate()
            .filter(|(_, line)| line.ends_with(self.0))
            .collect()
    }
}

pub(crate) fn lines(from: u64, count: u64) -> Vec<LogLine> {
    (from..from + count)
        .map(|n| LogLine {
            number: n,
            elapsed_ms: n * 10,
            text: format!("line {n}"),
        })
        .collect()
}

mod cases {
    use super::*;

    pub async fn repositories_are_created_read_updated_and_removed(store: Store) {
        let created = repo(&store, "app").await;
        assert_eq!(created.full_name(), "acme/app");
        assert!(created.active);
        let again = store
            .create_repo(&NewRepo {
                owner: "acme".into(),
                name: "app".into(),
                clone_url: "x".into(),
                link: String::new(),
                webhook_secret: String::new(),
                config_path: String::new(),
                default_branch: "main".into(),
                trusted: false,
                visibility: Some(Visibility::Public),
                timeout_secs: 60,
                github_token: String::new(),
                fork_policy: "run".into(),
                ssh_key: String::new(),
            })
            .await;
        assert!(
            matches!(again, Err(StoreError::Conflict(ref m)) if m.contains("acme/app")),
            "{again:?}"
        );
        let found = store
            .repo_by_name("acme", "app")
            .await
            .expect("reads")
            .expect("exists");
        assert_eq!(found, created);
        let updated = store
            .update_repo(
                created.id,
                &RepoUpdate {
                    trusted: Some(true),
                    visibility: Some(Visibility::Private),
                    config_path: Some(".ci.yml".into()),
                    ..RepoUpdate::default()
                },
            )
            .await
            .expect("updates");
        assert!(updated.trusted);
        assert_eq!(updated.visibility, Visibility::Private);
        assert_eq!(updated.config_path, ".ci.yml");
        assert_eq!(updated.webhook_secret, "s3cret", "untouched fields stay");
        assert_eq!(store.take_build_number(created.id).await.expect("n"), 1);
        assert_eq!(store.take_build_number(created.id).await.expect("n"), 2);
        let build = new_build(&store, created.id, "main", TWO_STAGES).await;
        assert_eq!(build.number, 3);
        assert_eq!(store.list_repos().await.expect("lists").len(), 1);
        store.delete_repo(created.id).await.expect("removes");
        assert!(
            store
                .repo_by_name("acme", "app")
                .await
                .expect("reads")
                .is_none()
        );
        assert!(
            store.stages(build.id).await.expect("reads").is_empty(),
            "stages go with their repository"
        );
        assert!(matches!(
            store.delete_repo(created.id).await,
            Err(StoreError::NotFound(_))
        ));
    }

    pub async fn a_build_runs_through_the_queue_to_its_final_state(store: Store) {
        let repo = repo(&store, "app").await;
        let build = new_build(&store, repo.id, "main", TWO_STAGES).await;
        assert_eq!(build.status, Status::Pending);
        let stages = store.stages(build.id).await.expect("stages");
        assert_eq!(
            stages
                .iter()
                .map(|s| (s.name.as_str(), s.status))
                .collect::<Vec<_>>(),
            [("build", Status::Pending), ("deploy", Status::Waiting)]
        );
        // Read at once, each stage comes with its own steps, in order.
        let mut one_by_one = Vec::new();
        for stage in &stages {
            one_by_one.push((stage.clone(), store.steps(stage.id).await.expect("steps")));
        }
        assert!(one_by_one.iter().all(|(_, steps)| !steps.is_empty()));
        assert_eq!(
            store.stages_with_steps(build.id).await.expect("reads"),
            one_by_one
        );
        let r = runner("r1");
        let claim = store
            .claim_next(&r)
            .await
            .expect("claims")
            .expect("one is queued");
        assert_eq!(claim.plan.name, "build");
        assert_eq!(claim.build_id, build.id);
        assert!(
            store.claim_next(&r).await.expect("claims").is_none(),
            "deploy waits for build"
        );
        let running = store.build_by_id(build.id).await.expect("build");
        assert_eq!(running.status, Status::Running);
        assert!(running.started_at.is_some());

        let epoch = claim.epoch;
        assert!(
            !store
                .heartbeat(claim.stage_id, epoch, now_ms() + 60_000)
                .await
                .expect("held")
        );
        store
            .update_step(
                claim.stage_id,
                &step(epoch, "compile", StepState::Running, None),
            )
            .await
            .expect("step starts");
        store
            .append_logs(claim.stage_id, epoch, "compile", &lines(1, 3))
            .await
            .expect("logs");
        store
            .update_step(
                claim.stage_id,
                &step(epoch, "compile", StepState::Success, Some(0)),
            )
            .await
            .expect("step ends");
        let unknown = store
            .update_step(
                claim.stage_id,
                &step(epoch, "nope", StepState::Running, None),
            )
            .await;
        assert!(
            matches!(unknown, Err(LeaseError::NoSuchStep { .. })),
            "{unknown:?}"
        );
        let (build_id, queued, finished) = store
            .finish_stage(
                claim.stage_id,
                epoch,
                &end(
                    Status::Success,
                    vec![step(epoch, "test", StepState::Success, Some(0))],
                ),
            )
            .await
            .expect("ends");
        assert_eq!((build_id, queued, finished), (build.id, true, false));
        let steps = store.steps(claim.stage_id).await.expect("steps");
        assert_eq!(
            steps
                .iter()
                .map(|s| (s.name.as_str(), s.status, s.exit_code))
                .collect::<Vec<_>>(),
            [
                ("compile", Status::Success, Some(0)),
                ("test", Status::Success, Some(0))
            ]
        );
        let log = store.read_log(steps[0].id, 1, 100).await.expect("log");
        assert_eq!(
            log.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["line 1", "line 2", "line 3"]
        );

        let deploy = store
            .claim_next(&r)
            .await
            .expect("claims")
            .expect("deploy is queued now");
        assert_eq!(deploy.plan.name, "deploy");
        let (_, _, finished) = store
            .finish_stage(
                deploy.stage_id,
                deploy.epoch,
                &end(
                    Status::Failure,
                    vec![step(deploy.epoch, "ship", StepState::Failure, Some(2))],
                ),
            )
            .await
            .expect("ends");
        assert!(finished);
        let done = store.build_by_id(build.id).await.expect("build");
        assert_eq!(done.status, Status::Failure);
        assert!(done.finished_at.is_some());
        let again = store
            .finish_stage(deploy.stage_id, deploy.epoch, &end(Status::Success, vec![]))
            .await;
        assert!(
            matches!(again, Err(LeaseError::Lost { .. })),
            "an ended stage cannot end twice"
        );
    }

    pub async fn a_stage_is_claimed_by_exactly_one_runner(store: Store) {
        let repo = repo(&store, "app").await;
        const BUILDS: usize = 6;
        for _ in 0..BUILDS {
            new_build(&store, repo.id, "main", TWO_STAGES).await;
        }
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut won = Vec::new();
                while let Some(claim) = store
                    .claim_next(&runner(&format!("r{i}")))
                    .await
                    .expect("claims")
                {
                    won.push(claim.stage_id);
                }
                won
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("task"));
        }
        all.sort();
        let claimed = all.len();
        all.dedup();
        assert_eq!(all.len(), claimed, "no stage was claimed twice");
        assert_eq!(claimed, BUILDS, "every queued stage was claimed");
    }

    pub async fn runners_take_only_stages_whose_labels_they_offer(store: Store) {
        let repo = repo(&store, "app").await;
        let yaml = "kind: pipeline\nname: gpu\nclone: {disable: true}\nnode: {gpu: 'yes'}\nsteps:\n  - name: a\n    image: x\n    commands: [a]\n";
        new_build(&store, repo.id, "main", yaml).await;
        assert!(
            store
                .claim_next(&runner("plain"))
                .await
                .expect("claims")
                .is_none()
        );
        let mut gpu = runner("gpu");
        gpu.labels.insert("gpu".into(), "yes".into());
        assert!(store.claim_next(&gpu).await.expect("claims").is_some());
    }

    /// 500 pending stages only a GPU runner can take, then one any runner can: a plain
    /// runner takes that one at once (the claim once read the 100 oldest only).
    pub async fn a_runner_finds_its_stage_behind_any_number_it_cannot_take(store: Store) {
        let repo = repo(&store, "app").await;
        let gpu_only: Vec<String> = (0..500)
            .map(|n| {
                format!(
                    "kind: pipeline\nname: gpu-{n}\nclone: {{disable: true}}\nnode: {{gpu: 'yes'}}\nsteps:\n  - name: a\n    image: x\n    commands: [a]\n"
                )
            })
            .collect();
        new_build(&store, repo.id, "main", &gpu_only.join("---\n")).await;
        let anyone = "kind: pipeline\nname: plain\nclone: {disable: true}\nsteps:\n  - name: a\n    image: x\n    commands: [a]\n";
        new_build(&store, repo.id, "main", anyone).await;
        let claimed = store
            .claim_next(&runner("plain"))
            .await
            .expect("claims")
            .expect("the one stage it can take");
        assert_eq!(claimed.plan.name, "plain");
        assert!(
            store
                .claim_next(&runner("plain-2"))
                .await
                .expect("claims")
                .is_none(),
            "nothing else is for it"
        );
        let mut gpu = runner("gpu");
        gpu.labels.insert("gpu".into(), "yes".into());
        let first = store
            .claim_next(&gpu)
            .await
            .expect("claims")
            .expect("queued");
        assert_eq!(first.plan.name, "gpu-0", "queue order holds");
    }

    pub async fn an_expired_lease_is_reaped_and_its_late_updates_refused(store: Store) {
        let repo = repo(&store, "app").await;
        let build = new_build(&store, repo.id, "main", TWO_STAGES).await;
        let mut r = runner("r1");
        r.lease_until = now_ms() - 1;
        // No step started: the stage goes back to the queue.
        let first = store.claim_next(&r).await.expect("claims").expect("queued");
        let reaped = store.reap_expired(now_ms()).await.expect("reaps");
        assert_eq!(reaped.len(), 1);
        assert!(reaped[0].requeued);
        let late = store
            .heartbeat(first.stage_id, first.epoch, now_ms() + 1000)
            .await;
        assert!(matches!(late, Err(LeaseError::Lost { .. })), "{late:?}");
        // Claimed again, a step starts, and the lease expires: the stage ends in error.
        let second = store
            .claim_next(&r)
            .await
            .expect("claims")
            .expect("queued again");
        assert_eq!(second.stage_id, first.stage_id);
        assert_ne!(second.epoch, first.epoch);
        store
            .update_step(
                second.stage_id,
                &step(second.epoch, "compile", StepState::Running, None),
            )
            .await
            .expect("starts");
        let reaped = store.reap_expired(now_ms()).await.expect("reaps");
        assert_eq!(reaped.len(), 1);
        assert!(!reaped[0].requeued);
        assert!(
            reaped[0].build_finished,
            "deploy is skipped, so the build ends"
        );
        let stage = store.stage(second.stage_id).await.expect("stage");
        assert_eq!(stage.status, Status::Error);
        assert!(
            stage
                .error
                .as_deref()
                .unwrap_or("")
                .contains("stopped heartbeating"),
            "{stage:?}"
        );
        let steps = store.steps(second.stage_id).await.expect("steps");
        assert_eq!(steps[0].status, Status::Error);
        assert_eq!(steps[1].status, Status::Skipped);
        let late = store
            .append_logs(second.stage_id, second.epoch, "compile", &lines(1, 1))
            .await;
        assert!(matches!(late, Err(LeaseError::Lost { .. })), "{late:?}");
        let build = store.build_by_id(build.id).await.expect("build");
        assert_eq!(build.status, Status::Error);
        assert!(
            store
                .reap_expired(now_ms())
                .await
                .expect("reaps")
                .is_empty()
        );
    }

    pub async fn a_restarted_runner_loses_what_its_earlier_life_held(store: Store) {
        let repo = repo(&store, "app").await;
        new_build(&store, repo.id, "main", TWO_STAGES).await;
        let claim = store
            .claim_next(&runner("r1"))
            .await
            .expect("claims")
            .expect("queued");
        store
            .update_step(
                claim.stage_id,
                &step(claim.epoch, "compile", StepState::Running, None),
            )
            .await
            .expect("starts");
        assert!(
            store
                .reap_previous_instance("r1", "r1-1")
                .await
                .expect("reaps")
                .is_empty()
        );
        let reaped = store
            .reap_previous_instance("r1", "r1-2")
            .await
            .expect("reaps");
        assert_eq!(reaped.len(), 1);
        let stage = store.stage(claim.stage_id).await.expect("stage");
        assert_eq!(stage.status, Status::Error);
        assert!(stage.error.as_deref().unwrap_or("").contains("restarted"));
    }

    pub async fn deliveries_are_recorded_once_and_rejected_ones_may_come_again(store: Store) {
        let repo = repo(&store, "app").await;
        let rejected = NewDelivery {
            delivery_id: "d-1",
            event: "push",
            repo_id: Some(repo.id),
            state: DeliveryState::Rejected,
            outcome: "bad signature",
            payload: None,
        };
        assert!(matches!(
            store.record_delivery(&rejected).await.expect("records"),
            Recorded::New(_)
        ));
        let accepted = NewDelivery {
            state: DeliveryState::Pending,
            outcome: "",
            payload: Some(b"{}"),
            ..rejected.clone()
        };
        let Recorded::New(id) = store.record_delivery(&accepted).await.expect("records") else {
            panic!("a rejected delivery may come again");
        };
        let Recorded::Duplicate(earlier) = store.record_delivery(&accepted).await.expect("records")
        else {
            panic!("an accepted delivery is recorded once");
        };
        assert_eq!(earlier.id, id);
        let pending = store.pending_deliveries(10).await.expect("lists");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].payload.as_deref(), Some(&b"{}"[..]));

        let (build, queued) = try_build(&store, repo.id, "main", TWO_STAGES, Some(id))
            .await
            .expect("creates");
        assert!(queued);
        assert!(
            store
                .pending_deliveries(10)
                .await
                .expect("lists")
                .is_empty()
        );
        let stored = store.delivery("d-1").await.expect("reads").expect("exists");
        assert_eq!(stored.state, DeliveryState::Processed);
        assert_eq!(stored.build_id, Some(build.id));

        // The same delivery again (a second server that read it as pending): no second build.
        let second = try_build(&store, repo.id, "main", TWO_STAGES, Some(id)).await;
        assert!(
            matches!(second, Err(gantry_store::StoreError::Conflict(_))),
            "{second:?}"
        );
        assert!(
            store
                .build(repo.id, build.number + 1)
                .await
                .expect("reads")
                .is_none(),
            "nothing of the second build was written"
        );
        let stored = store.delivery("d-1").await.expect("reads").expect("exists");
        assert_eq!(stored.build_id, Some(build.id), "the first build keeps it");
        assert_eq!(
            stored.payload, None,
            "the payload is dropped once processed"
        );
    }

    pub async fn an_invalid_pipeline_makes_an_errored_build_and_a_fully_skipped_one_is_skipped(
        store: Store,
    ) {
        let repo = repo(&store, "app").await;
        let number = store.take_build_number(repo.id).await.expect("n");
        let (build, queued) = store
            .create_build(&NewBuild {
                repo_id: repo.id,
                number,
                context: Context::push("acme/app", "main"),
                sender: "octocat".into(),
                plan: Err(".gantry.yml:3:5: error: unknown field `imag`".into()),
                delivery: None,
                fork: false,
                hold: false,
                approvals: Default::default(),
                schedule: None,
            })
            .await
            .expect("creates");
        assert!(!queued);
        assert_eq!(build.status, Status::Error);
        assert!(
            build
                .error
                .as_deref()
                .unwrap_or("")
                .contains(".gantry.yml:3:5")
        );
        assert!(build.finished_at.is_some());

        let only_main = "kind: pipeline\nname: a\ntrigger: {branch: [main]}\nsteps:\n  - name: a\n    image: x\n    commands: [a]\n";
        let skipped = new_build(&store, repo.id, "feature", only_main).await;
        assert_eq!(skipped.status, Status::Skipped);
        assert!(skipped.finished_at.is_some());
        assert!(
            store
                .claim_next(&runner("r"))
                .await
                .expect("claims")
                .is_none()
        );
    }

    pub async fn cancelling_kills_queued_stages_and_tells_running_ones(store: Store) {
        let repo = repo(&store, "app").await;
        let yaml = format!(
            "{TWO_STAGES}---\nkind: pipeline\nname: lint\nclone: {{disable: true}}\nsteps:\n  - name: l\n    image: x\n    commands: [l]\n"
        );
        let build = new_build(&store, repo.id, "main", &yaml).await;
        let claim = store
            .claim_next(&runner("r"))
            .await
            .expect("claims")
            .expect("queued");
        assert!(store.cancel_build(build.id).await.expect("cancels"));
        assert!(
            store
                .lease_cancelled(claim.stage_id, claim.epoch)
                .await
                .expect("held")
        );
        let stages = store.stages(build.id).await.expect("stages");
        assert_eq!(
            stages.iter().map(|s| s.status).collect::<Vec<_>>(),
            [Status::Running, Status::Killed, Status::Killed]
        );
        assert!(
            store
                .claim_next(&runner("r"))
                .await
                .expect("claims")
                .is_none()
        );
        store
            .finish_stage(
                claim.stage_id,
                claim.epoch,
                &end(
                    Status::Killed,
                    vec![step(claim.epoch, "compile", StepState::Killed, Some(137))],
                ),
            )
            .await
            .expect("ends");
        let build = store.build_by_id(build.id).await.expect("build");
        assert_eq!(build.status, Status::Killed);
        assert!(
            !store.cancel_build(build.id).await.expect("cancels"),
            "already over"
        );
    }

    pub async fn builds_are_listed_newest_first_by_branch_and_page(store: Store) {
        let repo = repo(&store, "app").await;
        for branch in ["main", "feature", "main", "main"] {
            new_build(&store, repo.id, branch, TWO_STAGES).await;
        }
        let all = store
            .list_builds(
                repo.id,
                &BuildFilter {
                    limit: 10,
                    ..BuildFilter::default()
                },
            )
            .await
            .expect("lists");
        assert_eq!(
            all.iter().map(|b| b.number).collect::<Vec<_>>(),
            [4, 3, 2, 1]
        );
        let main = store
            .list_builds(
                repo.id,
                &BuildFilter {
                    branch: Some("main".into()),
                    limit: 2,
                    ..BuildFilter::default()
                },
            )
            .await
            .expect("lists");
        assert_eq!(main.iter().map(|b| b.number).collect::<Vec<_>>(), [4, 3]);
        let next = store
            .list_builds(
                repo.id,
                &BuildFilter {
                    branch: Some("main".into()),
                    before: Some(3),
                    limit: 2,
                    ..BuildFilter::default()
                },
            )
            .await
            .expect("lists");
        assert_eq!(next.iter().map(|b| b.number).collect::<Vec<_>>(), [1]);
        let pending = store
            .list_builds(
                repo.id,
                &BuildFilter {
                    status: Some(Status::Success),
                    limit: 10,
                    ..BuildFilter::default()
                },
            )
            .await
            .expect("lists");
        assert!(pending.is_empty());
        let ctx = store.build_context(all[0].id).await.expect("context");
        assert_eq!(ctx.build_number, 4);
        assert_eq!(ctx.branch, "main");
    }

    pub async fn log_chunks_page_and_a_resent_batch_is_harmless(store: Store) {
        let repo = repo(&store, "app").await;
        new_build(&store, repo.id, "main", TWO_STAGES).await;
        let claim = store
            .claim_next(&runner("r"))
            .await
            .expect("claims")
            .expect("queued");
        for batch in [lines(1, 100), lines(101, 50), lines(101, 50), lines(500, 2)] {
            store
                .append_logs(claim.stage_id, claim.epoch, "compile", &batch)
                .await
                .expect("appends");
        }
        let step = &store.steps(claim.stage_id).await.expect("steps")[0];
        assert_eq!(store.log_line_count(step.id).await.expect("counts"), 152);
        let page = store.read_log(step.id, 95, 10).await.expect("reads");
        assert_eq!(
            page.iter().map(|l| l.number).collect::<Vec<_>>(),
            (95..105).collect::<Vec<_>>()
        );
        assert_eq!(page[0].elapsed_ms, 950);
        let tail = store.read_log(step.id, 149, 10).await.expect("reads");
        assert_eq!(
            tail.iter().map(|l| l.number).collect::<Vec<_>>(),
            [149, 150, 500, 501]
        );
        assert!(
            store
                .read_log(step.id, 502, 10)
                .await
                .expect("reads")
                .is_empty()
        );

        // A search goes window by window across chunks and over the gap, each window within
        // its bounds, and says where the next starts.
        let ending_in_0 = EndsWith('0');
        let bounds = |max_matches, max_lines| gantry_store::SearchBounds {
            max_matches,
            max_lines,
        };
        let mut windows = Vec::new();
        let mut from = Some(1);
        while let Some(at) = from {
            let found = store
                .search_log(step.id, at, bounds(100, 60), &ending_in_0)
                .await
                .expect("searches");
            from = found.next;
            let numbers: Vec<u64> = found.matches.iter().map(|(n, _)| *n).collect();
            windows.push((numbers, found.searched_to, found.next));
        }
        assert_eq!(
            windows,
            [
                ((10..=60).step_by(10).collect(), 60, Some(61)),
                ((70..=120).step_by(10).collect(), 120, Some(121)),
                (vec![130, 140, 150, 500], 501, None),
            ]
        );
        // The match bound stops a window at the first match it does not return.
        let few = store
            .search_log(step.id, 95, bounds(2, 1_000), &ending_in_0)
            .await
            .expect("searches");
        assert_eq!(
            (few.matches, few.next),
            (
                vec![(100, "line 100".to_owned()), (110, "line 110".to_owned())],
                Some(120)
            )
        );
        let past_the_end = store
            .search_log(step.id, 502, bounds(10, 10), &ending_in_0)
            .await
            .expect("searches");
        assert_eq!(past_the_end, gantry_store::LogSearch::default());

        // A number from a request beyond any line (once cast to a negative BIGINT, it made
        // readers loop for ever) finds nothing, at once.
        for from in [
            u64::MAX,
            i64::MAX as u64 + 1,
            gantry_store::MAX_LINE_NUMBER + 1,
        ] {
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                store.read_log(step.id, from, 10),
            )
            .await
            .expect("answers at once")
            .expect("reads");
            assert!(read.is_empty(), "from {from}");
            let found = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                store.search_log(step.id, from, bounds(10, 10), &ending_in_0),
            )
            .await
            .expect("answers at once")
            .expect("searches");
            assert_eq!(found, gantry_store::LogSearch::default(), "from {from}");
        }
        // A runner's line numbered out of range is refused, and nothing of its batch kept.
        for number in [0, gantry_store::MAX_LINE_NUMBER + 1, u64::MAX] {
            let mut batch = lines(600, 2);
            batch[1].number = number;
            let refused = store
                .append_logs(claim.stage_id, claim.epoch, "compile", &batch)
                .await;
            assert!(
                matches!(refused, Err(LeaseError::LineOutOfRange { number: n, .. }) if n == number),
                "{refused:?}"
            );
        }
        assert_eq!(store.log_line_count(step.id).await.expect("counts"), 152);
    }

    pub async fn tokens_are_found_by_hash(store: Store) {
        assert_eq!(store.token_count().await.expect("counts"), 0);
        let token = store
            .create_token(NewToken {
                name: "admin",
                hash: "abc123",
                admin: true,
                user_id: None,
                session: false,
            })
            .await
            .expect("creates");
        assert!(token.admin);
        assert_eq!(
            store.token_by_hash("abc123").await.expect("finds"),
            Some((token, None))
        );
        assert_eq!(store.token_by_hash("abc124").await.expect("finds"), None);
    }

    pub async fn users_hold_tokens_and_roles_from_two_sources(store: Store) {
        let app = repo(&store, "app").await;
        let alice = store.create_user("Alice", false).await.expect("creates");
        assert!(
            matches!(
                store.create_user("alice", true).await,
                Err(StoreError::Conflict(_))
            ),
            "logins compare without case"
        );
        assert_eq!(
            store.user_by_login("ALICE").await.expect("reads"),
            Some(alice.clone())
        );
        assert_eq!(
            store.user_github_token(alice.id).await.expect("reads"),
            None
        );

        // A sign-in claims the login an admin added, stores the sealed token, and the admin
        // list (when there is one) sets the flag.
        let signed = store
            .signed_in(1, "alice", Some(true), b"sealed-1")
            .await
            .expect("signs in");
        assert_eq!(signed.id, alice.id);
        assert_eq!(signed.github_id, Some(1));
        assert!(signed.admin && signed.last_login_at.is_some());
        let again = store
            .signed_in(1, "alice", None, b"sealed-2")
            .await
            .expect("signs in");
        assert!(again.admin, "without an admin list the flag is left");
        assert_eq!(
            store.user_github_token(alice.id).await.expect("reads"),
            Some(b"sealed-2".to_vec())
        );
        let lowered = store
            .signed_in(1, "alice", Some(false), b"sealed-2")
            .await
            .expect("signs in");
        assert!(!lowered.admin, "the admin list is the truth");
        let bob = store
            .signed_in(2, "bob", None, b"s")
            .await
            .expect("new user");
        assert!(!bob.admin);
        assert_eq!(
            store
                .users()
                .await
                .expect("lists")
                .iter()
                .map(|u| u.login.as_str())
                .collect::<Vec<_>>(),
            ["alice", "bob"]
        );

        // GitHub renamed alice's account: the same user, renamed.
        let renamed = store
            .signed_in(1, "alice-2", None, b"sealed-3")
            .await
            .expect("signs in");
        assert_eq!((renamed.id, renamed.login.as_str()), (alice.id, "alice-2"));
        // Someone else's account took the login `alice-2` before alice signed in again: a new
        // user, who inherits nothing; alice's user steps aside.
        let taker = store
            .signed_in(9, "alice-2", None, b"sealed-9")
            .await
            .expect("signs in");
        assert_ne!(taker.id, alice.id);
        assert!(!taker.admin);
        assert_eq!(
            store.user(alice.id).await.expect("reads").login,
            "alice-2~1",
            "the first account's user keeps its roles under another name"
        );
        let back = store
            .signed_in(1, "alice", None, b"sealed-4")
            .await
            .expect("signs in");
        assert_eq!((back.id, back.login.as_str()), (alice.id, "alice"));

        // The server's admin list is the truth at each start.
        store.set_user_admin(alice.id, true).await.expect("sets");
        store.set_admins(&["BOB".to_owned()]).await.expect("sets");
        assert!(store.user(bob.id).await.expect("reads").admin);
        assert!(!store.user(alice.id).await.expect("reads").admin);
        let demoted = store.set_user_admin(alice.id, false).await.expect("sets");
        assert!(!demoted.admin);

        // A token carries its user.
        let token = store
            .create_token(NewToken {
                name: "laptop",
                hash: "h-alice",
                admin: false,
                user_id: Some(alice.id),
                session: false,
            })
            .await
            .expect("creates");
        let (found, user) = store
            .token_by_hash("h-alice")
            .await
            .expect("reads")
            .expect("exists");
        assert_eq!(found, token);
        assert_eq!(user, Some(demoted.clone()));
        assert_eq!(store.tokens_of(alice.id).await.expect("lists"), [token]);
        assert!(store.tokens_of(bob.id).await.expect("lists").is_empty());

        // Roles: one per source, replaced in place; the admin's and GitHub's side by side.
        store
            .put_role(app.id, alice.id, RoleSource::GitHub, Role::Read)
            .await
            .expect("puts");
        store
            .put_role(app.id, alice.id, RoleSource::GitHub, Role::Write)
            .await
            .expect("replaces");
        store
            .put_role(app.id, alice.id, RoleSource::Admin, Role::None)
            .await
            .expect("puts");
        let mut roles = store.roles_on(app.id, alice.id).await.expect("reads");
        roles.sort_by_key(|r| r.source.as_str());
        assert_eq!(
            roles.iter().map(|r| (r.source, r.role)).collect::<Vec<_>>(),
            [
                (RoleSource::Admin, Role::None),
                (RoleSource::GitHub, Role::Write)
            ]
        );
        assert!(roles.iter().all(|r| r.login == "alice" && r.fetched_at > 0));
        assert_eq!(store.roles_of_repo(app.id).await.expect("lists").len(), 2);
        assert_eq!(store.roles_of_user(bob.id).await.expect("lists"), []);
        assert!(
            store
                .remove_role(app.id, alice.id, RoleSource::Admin)
                .await
                .expect("removes")
        );
        assert!(
            !store
                .remove_role(app.id, alice.id, RoleSource::Admin)
                .await
                .expect("removes")
        );

        // Removing the user takes their tokens and roles with them.
        store.delete_user(alice.id).await.expect("removes");
        assert_eq!(store.token_by_hash("h-alice").await.expect("reads"), None);
        assert!(store.roles_of_repo(app.id).await.expect("lists").is_empty());
        assert!(matches!(
            store.delete_user(alice.id).await,
            Err(StoreError::NotFound(_))
        ));
    }

    pub async fn registry_logins_are_kept_per_scope_and_read_most_particular_first(store: Store) {
        let app = repo(&store, "app").await;
        let other = repo(&store, "other").await;
        let acme = RegistryScope::Owner("acme".into());
        for (scope, host, user) in [
            (RegistryScope::Server, "ghcr.io", "server-bot"),
            (RegistryScope::Server, "docker.io", "hub-bot"),
            (acme.clone(), "ghcr.io", "acme-bot"),
            (RegistryScope::Repo(app.id), "ghcr.io", "app-bot"),
            (RegistryScope::Repo(other.id), "quay.io", "other-bot"),
        ] {
            store
                .put_registry(&scope, host, user, user.as_bytes(), false)
                .await
                .expect("saves");
        }
        // Saving a host again replaces that scope's login only.
        store
            .put_registry(
                &RegistryScope::Repo(app.id),
                "ghcr.io",
                "app-bot-2",
                b"x",
                true,
            )
            .await
            .expect("replaces");
        let listed = |infos: Vec<gantry_store::RegistryInfo>| -> Vec<(String, String, bool)> {
            infos
                .into_iter()
                .map(|i| (i.host, i.username, i.allow_pull_requests))
                .collect()
        };
        assert_eq!(
            listed(
                store
                    .registries(&RegistryScope::Repo(app.id))
                    .await
                    .expect("lists")
            ),
            [("ghcr.io".to_owned(), "app-bot-2".to_owned(), true)]
        );
        assert_eq!(
            listed(
                store
                    .registries(&RegistryScope::Server)
                    .await
                    .expect("lists")
            ),
            [
                ("docker.io".to_owned(), "hub-bot".to_owned(), false),
                ("ghcr.io".to_owned(), "server-bot".to_owned(), false)
            ]
        );
        assert_eq!(
            listed(store.registries(&acme).await.expect("lists")),
            [("ghcr.io".to_owned(), "acme-bot".to_owned(), false)]
        );
        let usable: Vec<(RegistryScope, String)> = store
            .sealed_registries(app.id, "acme")
            .await
            .expect("reads")
            .into_iter()
            .map(|r| (r.scope(), r.username))
            .collect();
        assert_eq!(
            usable,
            [
                (RegistryScope::Repo(app.id), "app-bot-2".to_owned()),
                (acme.clone(), "acme-bot".to_owned()),
                (RegistryScope::Server, "hub-bot".to_owned()),
                (RegistryScope::Server, "server-bot".to_owned()),
            ],
            "the repository's, its owner's, the server's; never another repository's"
        );
        store
            .delete_registry(&RegistryScope::Server, "ghcr.io")
            .await
            .expect("removes");
        assert!(matches!(
            store
                .delete_registry(&RegistryScope::Server, "ghcr.io")
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            store.registries(&acme).await.expect("lists").len(),
            1,
            "removing the server's login leaves the owner's"
        );
        store
            .delete_repo(app.id)
            .await
            .expect("removes the repository");
        assert!(
            store
                .registries(&RegistryScope::Repo(app.id))
                .await
                .expect("lists")
                .is_empty(),
            "a repository's logins go with it"
        );
    }
}

/// Environments on both databases: a build that deploys records its deployment, whose
/// status is its stage's; a build that stops the environment takes it once, and a second
/// one is refused with nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_follow_their_deployments_and_stop_once() {
    use gantry_pipeline::context::StoppingEnvironment;
    use gantry_store::EnvironmentState;
    const REVIEW: &str = "kind: pipeline
name: review
clone: {disable: true}
deploy: {environment: \"review/${CI_COMMIT_REF_SLUG}\", on_stop: teardown, auto_stop_in: 1d}
steps:
  - name: up
    image: busybox
    commands: [true]
---
kind: pipeline
name: teardown
clone: {disable: true}
steps:
  - name: down
    image: busybox
    commands: [true]
";
    const STAGING: &str = "kind: pipeline\nname: ship\nclone: {disable: true}\ndeploy: {environment: staging}\nsteps:\n  - name: up\n    image: busybox\n    commands: [true]\n";
    /// A build of `yaml` on `branch`, stopping `stopping` if given.
    async fn build_of(
        store: &Store,
        repo_id: i64,
        branch: &str,
        yaml: &str,
        stopping: Option<StoppingEnvironment>,
    ) -> Result<gantry_store::Build, StoreError> {
        let number = store.take_build_number(repo_id).await.expect("a number");
        let mut ctx = Context::push("acme/app", branch);
        ctx.build_number = number as u64;
        ctx.commit = "0123456789abcdef0123456789abcdef01234567".into();
        ctx.author = "octocat".into();
        ctx.stopping = stopping;
        let plan = plan_of(yaml, &ctx);
        store
            .create_build(&NewBuild {
                repo_id,
                number,
                context: ctx,
                sender: "octocat".into(),
                plan: Ok(plan),
                delivery: None,
                fork: false,
                hold: false,
                approvals: Default::default(),
                schedule: None,
            })
            .await
            .map(|(build, _)| build)
    }
    async fn run_next(store: &Store, step: &str, status: Status) {
        let claim = store
            .claim_next(&runner("r"))
            .await
            .expect("claims")
            .expect("a queued stage");
        let state = if status == Status::Success {
            StepState::Success
        } else {
            StepState::Failure
        };
        store
            .finish_stage(
                claim.stage_id,
                claim.epoch,
                &end(status, vec![self::step(claim.epoch, step, state, Some(0))]),
            )
            .await
            .expect("finishes");
    }
    let dir = TempDir::new("environments");
    for (label, url) in test_databases(dir.path()).await {
        let store = Store::open(&url).await.expect("opens");
        let repo_id = repo(&store, "app").await.id;
        let deployed = build_of(&store, repo_id, "feature/x", REVIEW, None)
            .await
            .expect("a deploy");
        let environments = store.environments(repo_id).await.expect("listed");
        assert_eq!(environments.len(), 1, "{label}");
        let review = &environments[0];
        assert_eq!(review.name, "review/feature-x", "{label}");
        assert_eq!(review.branch, "feature/x");
        assert_eq!(review.on_stop.as_deref(), Some("teardown"));
        assert!(review.auto_stop_at.is_some_and(|t| t > now_ms()));
        assert_eq!(review.state, EnvironmentState::Deploying, "{label}");
        assert_eq!(review.deployments[0].build_id, deployed.id);
        assert_eq!(review.deployments[0].author, "octocat");
        run_next(&store, "up", Status::Success).await;
        let review = store
            .environment(repo_id, "review/feature-x")
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(review.state, EnvironmentState::Available, "{label}");

        let day = 86_400_000;
        assert_eq!(
            store
                .environments_due_to_stop(now_ms() + 2 * day)
                .await
                .expect("due"),
            [(repo_id, "review/feature-x".to_owned())],
            "{label}"
        );
        assert_eq!(
            store.environments_due_to_stop(now_ms()).await.expect("due"),
            [],
            "{label}: not yet"
        );
        let stopping = StoppingEnvironment {
            name: review.name.clone(),
            url: review.url.clone(),
            pipeline: "teardown".into(),
        };
        let stop = build_of(&store, repo_id, "feature/x", REVIEW, Some(stopping.clone()))
            .await
            .expect("a stop");
        let again = build_of(&store, repo_id, "feature/x", REVIEW, Some(stopping)).await;
        assert!(
            matches!(again, Err(StoreError::Conflict(ref m)) if m.contains("already being stopped")),
            "{label}: {again:?}"
        );
        let review = store
            .environment(repo_id, "review/feature-x")
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(review.stop_build_id, Some(stop.id), "{label}");
        assert_eq!(review.auto_stop_at, None);
        assert_eq!(review.state, EnvironmentState::Stopping, "{label}");
        assert_eq!(review.deployments.len(), 2, "the refused stop left nothing");
        run_next(&store, "down", Status::Failure).await;
        let review = store
            .environment(repo_id, "review/feature-x")
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(review.state, EnvironmentState::StopFailed, "{label}");
        assert_eq!(
            store
                .environments_due_to_stop(now_ms() + 2 * day)
                .await
                .expect("due"),
            [],
            "{label}: a stopped one is not due again"
        );
        // Without `on_stop`, stopping marks it stopped, once.
        assert!(
            store
                .mark_environment_stopped(review.id)
                .await
                .is_ok_and(|taken| !taken)
        );
        let _first = build_of(&store, repo_id, "main", STAGING, None)
            .await
            .expect("a deploy");
        let staging = store
            .environment(repo_id, "staging")
            .await
            .expect("read")
            .expect("exists");
        assert!(
            store
                .mark_environment_stopped(staging.id)
                .await
                .expect("stops")
        );
        assert!(
            !store
                .mark_environment_stopped(staging.id)
                .await
                .expect("once")
        );
        let staging = store
            .environment(repo_id, "staging")
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(staging.state, EnvironmentState::Stopped, "{label}");

        // A newer deployment supersedes one still waiting: it ends skipped, saying why.
        let waiting = staging.deployments[0].build_id;
        let shipped = build_of(&store, repo_id, "main", STAGING, None)
            .await
            .expect("a newer deploy");
        let older = store.build_by_id(waiting).await.expect("the older build");
        assert_eq!(older.status, Status::Skipped, "{label}: {older:?}");
        let stage = &store.stages(waiting).await.expect("stages")[0];
        assert_eq!(stage.status, Status::Skipped, "{label}");
        assert_eq!(
            stage.error.as_deref(),
            Some(
                format!(
                    "superseded by build #{}, a newer deployment to this environment",
                    shipped.number
                )
                .as_str()
            ),
            "{label}"
        );
        let staging = store
            .environment(repo_id, "staging")
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(staging.state, EnvironmentState::Deploying, "{label}");

        // A stop whose `on_stop` pipeline its own trigger skips still takes the environment:
        // it shows that the stop failed, and is not due to stop again.
        const SKIPPED: &str = "kind: pipeline\nname: review\nclone: {disable: true}\ndeploy: {environment: gone, on_stop: teardown, auto_stop_in: 1h}\nsteps:\n  - name: up\n    image: busybox\n    commands: [true]\n---\nkind: pipeline\nname: teardown\nclone: {disable: true}\ntrigger: {event: [delete]}\nsteps:\n  - name: down\n    image: busybox\n    commands: [true]\n";
        build_of(&store, repo_id, "feature/z", SKIPPED, None)
            .await
            .expect("a deploy");
        let stopping = StoppingEnvironment {
            name: "gone".into(),
            url: None,
            pipeline: "teardown".into(),
        };
        let stop = build_of(&store, repo_id, "feature/z", SKIPPED, Some(stopping))
            .await
            .expect("a stop that runs nothing");
        assert_eq!(stop.status, Status::Skipped, "{label}");
        let gone = store
            .environment(repo_id, "gone")
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(gone.stop_build_id, Some(stop.id), "{label}");
        assert_eq!(gone.state, EnvironmentState::StopFailed, "{label}");
        assert!(
            store
                .environments_due_to_stop(now_ms() + 2 * day)
                .await
                .expect("due")
                .iter()
                .all(|(_, name)| name != "gone"),
            "{label}: not stopped again and again"
        );
    }
}
