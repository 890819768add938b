//! Every store write that changes a build, a stage, a step, a log, the delivery queue, the
//! outbox or the schedules publishes its news after it commits; a write that changes
//! nothing, or fails, publishes none. Each write method is called here in turn and what it
//! published is recorded.

use std::collections::BTreeMap;

use gantry_pipeline::Context;
use gantry_proto::StepState;
use gantry_store::{
    DeliveryState, Event, NewBuild, NewDelivery, NewMessage, NewSchedule, Recorded, Status, Store,
    now_ms,
};
use gantry_test_support::{TempDir, test_databases};
use tokio::sync::broadcast::Receiver;

use crate::conformance::{TWO_STAGES, end, lines, plan_of, repo, runner, step};

/// What was published since the last call. Local news is sent before the write returns.
fn published(news: &mut Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(event) = news.try_recv() {
        out.push(event);
    }
    out
}

async fn build(store: &Store, repo_id: i64, hold: bool) -> i64 {
    let number = store.take_build_number(repo_id).await.expect("a number");
    let mut ctx = Context::push("acme/app", "main");
    ctx.build_number = number as u64;
    let plan = plan_of(TWO_STAGES, &ctx);
    let (build, _) = store
        .create_build(&NewBuild {
            repo_id,
            number,
            context: ctx,
            sender: "octocat".into(),
            plan: Ok(plan),
            delivery: None,
            fork: false,
            hold,
            approvals: Default::default(),
            schedule: None,
        })
        .await
        .expect("creates the build");
    build.id
}

/// What reaping a stage tells: it ended, its build changed, and when it went back to the
/// queue (no step had started), that stages are queued.
fn reaped_news(reaped: &gantry_store::Reaped) -> Vec<Event> {
    let mut news = vec![
        Event::StageEnded {
            stage: reaped.stage_id,
        },
        Event::BuildChanged {
            build: reaped.build_id,
        },
    ];
    if reaped.queued {
        news.push(Event::Queued);
    }
    news
}

fn message() -> NewMessage {
    NewMessage {
        kind: gantry_store::MessageKind::Chat(gantry_pipeline::model::ChatKind::Slack),
        url: "https://chat.example/hook".into(),
        body: "{}".into(),
        auth: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_that_changes_a_build_publishes_its_news() {
    let dir = TempDir::new("events");
    for (label, url) in test_databases(dir.path()).await {
        let store = Store::open(&url).await.expect("opens");
        let mut news = store.subscribe();
        let repo = repo(&store, "app").await;
        assert_eq!(published(&mut news), [], "{label}: a repository is no news");

        // A build is created, and its first stage queued.
        let b = build(&store, repo.id, false).await;
        assert_eq!(
            published(&mut news),
            [Event::BuildChanged { build: b }, Event::Queued],
            "{label}: create_build"
        );

        let claim = store
            .claim_next(&runner("r1"))
            .await
            .expect("claims")
            .expect("queued");
        assert_eq!(
            published(&mut news),
            [Event::BuildChanged { build: b }],
            "{label}: claim_next (the build starts)"
        );
        let stage = claim.stage_id;
        let running = step(claim.epoch, "compile", StepState::Running, None);
        store.update_step(stage, &running).await.expect("starts");
        assert_eq!(
            published(&mut news),
            [],
            "{label}: a step starting is no news"
        );
        let batch = lines(1, 3);
        store
            .append_logs(stage, claim.epoch, "compile", &batch)
            .await
            .expect("appends");
        assert_eq!(
            published(&mut news),
            [Event::LinesStored {
                stage,
                step: "compile".into(),
                lines: Some(batch.into()),
            }],
            "{label}: append_logs"
        );
        let ended = step(claim.epoch, "compile", StepState::Success, Some(0));
        store.update_step(stage, &ended).await.expect("ends");
        assert_eq!(
            published(&mut news),
            [Event::StepEnded {
                stage,
                step: "compile".into()
            }],
            "{label}: update_step (ended)"
        );
        let stale = step(claim.epoch + 1, "test", StepState::Running, None);
        assert!(store.update_step(stage, &stale).await.is_err());
        assert_eq!(
            published(&mut news),
            [],
            "{label}: a refused write is no news"
        );
        store
            .finish_stage(stage, claim.epoch, &end(Status::Success, vec![]))
            .await
            .expect("finishes");
        assert_eq!(
            published(&mut news),
            [
                Event::StageEnded { stage },
                Event::BuildChanged { build: b },
                Event::Queued
            ],
            "{label}: finish_stage (the next stage is queued)"
        );

        // Its second stage's runner is lost: the reaper ends it.
        let mut short = runner("r2");
        short.lease_until = now_ms() - 1;
        let second = store
            .claim_next(&short)
            .await
            .expect("claims")
            .expect("queued");
        assert_eq!(
            published(&mut news),
            [],
            "{label}: claiming a stage of a build that runs already is no news"
        );
        let reaped = store.reap_expired(now_ms()).await.expect("reaps");
        assert_eq!(reaped.len(), 1, "{label}");
        assert_eq!(
            (reaped[0].stage_id, reaped[0].build_id),
            (second.stage_id, b),
            "{label}"
        );
        assert_eq!(
            published(&mut news),
            reaped_news(&reaped[0]),
            "{label}: reap_expired"
        );
        assert_eq!(store.reap_expired(now_ms()).await.expect("reaps").len(), 0);
        assert_eq!(published(&mut news), [], "{label}: nothing reaped, no news");

        // A runner that restarted loses what it held (the stage just re-queued).
        let held = store
            .claim_next(&runner("r3"))
            .await
            .expect("claims")
            .expect("queued");
        published(&mut news);
        let lost = store
            .reap_previous_instance("r3", "r3-2")
            .await
            .expect("reaps");
        assert_eq!(lost.len(), 1, "{label}");
        assert_eq!(lost[0].stage_id, held.stage_id, "{label}");
        assert_eq!(
            published(&mut news),
            reaped_news(&lost[0]),
            "{label}: reap_previous_instance"
        );

        let c = build(&store, repo.id, false).await;
        published(&mut news);

        assert!(store.cancel_build(c).await.expect("cancels"));
        assert_eq!(
            published(&mut news),
            [
                Event::Cancelled { build: c },
                Event::BuildChanged { build: c }
            ],
            "{label}: cancel_build"
        );
        assert!(!store.cancel_build(c).await.expect("answers"));
        assert_eq!(
            published(&mut news),
            [],
            "{label}: an ended build cancelled again"
        );

        // Builds waiting for approval.
        let held = build(&store, repo.id, true).await;
        assert_eq!(
            published(&mut news),
            [Event::BuildChanged { build: held }],
            "{label}: a held build is created, nothing queued"
        );
        assert!(store.approve_build(held).await.expect("approves"));
        assert_eq!(
            published(&mut news),
            [Event::BuildChanged { build: held }, Event::Queued],
            "{label}: approve_build"
        );
        let declined = build(&store, repo.id, true).await;
        published(&mut news);
        assert!(store.decline_build(declined).await.expect("declines"));
        assert_eq!(
            published(&mut news),
            [Event::BuildChanged { build: declined }],
            "{label}: decline_build"
        );
        assert!(!store.approve_build(declined).await.expect("answers"));
        assert_eq!(
            published(&mut news),
            [],
            "{label}: approving a declined build"
        );

        // Deliveries.
        let delivery = |id, state| NewDelivery {
            delivery_id: id,
            event: "push",
            repo_id: Some(repo.id),
            state,
            outcome: "",
            payload: Some(b"{}"),
        };
        store
            .record_delivery(&delivery("d-rejected", DeliveryState::Rejected))
            .await
            .expect("records");
        assert_eq!(published(&mut news), [], "{label}: a rejected delivery");
        let Recorded::New(_) = store
            .record_delivery(&delivery("d-1", DeliveryState::Pending))
            .await
            .expect("records")
        else {
            panic!("{label}: a new delivery")
        };
        assert_eq!(
            published(&mut news),
            [Event::DeliveryQueued],
            "{label}: record_delivery"
        );
        let claimed = store
            .claim_delivery(now_ms(), now_ms() + 60_000)
            .await
            .expect("claims")
            .expect("pending");
        store
            .finish_delivery(claimed.id, claimed.claim_epoch, "ignored")
            .await
            .expect("finishes");
        assert_eq!(
            published(&mut news),
            [Event::DeliveryDone],
            "{label}: finish_delivery"
        );

        // The outbox.
        store.queue_message(&message()).await.expect("queues");
        assert_eq!(
            published(&mut news),
            [Event::MessageQueued],
            "{label}: queue_message"
        );
        let due = store.builds_to_notify(10).await.expect("reads");
        let first = due.iter().find(|d| d.id == held).expect("due");
        assert!(
            store
                .queue_notifications(first.id, first.notified_status, first.status, &[message()])
                .await
                .expect("queues")
        );
        assert_eq!(
            published(&mut news),
            [Event::MessageQueued],
            "{label}: queue_notifications"
        );

        // Schedules.
        store
            .create_schedule(&NewSchedule {
                repo_id: repo.id,
                name: "nightly".into(),
                expression: "0 0 * * *".into(),
                timezone: "UTC".into(),
                branch: "main".into(),
                params: BTreeMap::new(),
                next_run_at: now_ms() + 3_600_000,
                created_by: "octocat".into(),
            })
            .await
            .expect("adds");
        assert_eq!(
            published(&mut news),
            [Event::ScheduleChanged],
            "{label}: create_schedule"
        );
        assert!(
            store
                .delete_schedule(repo.id, "nightly")
                .await
                .expect("removes")
        );
        assert_eq!(
            published(&mut news),
            [Event::ScheduleChanged],
            "{label}: delete_schedule"
        );
        assert!(
            !store
                .delete_schedule(repo.id, "nightly")
                .await
                .expect("answers")
        );
        assert_eq!(published(&mut news), [], "{label}: no schedule removed");
        store.close().await;
    }
}
