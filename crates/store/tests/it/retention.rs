//! Retention on both databases: a store filled with builds on two branches (with logs, a
//! running one, one not yet reported), deliveries and messages; a prune keeps what the
//! policy says and nothing else, in batches, and SQLite gives space back.

use gantry_proto::StepState;
use gantry_store::{
    DeliveryState, NewDelivery, NewMessage, RetentionPolicy, Status, Store, now_ms,
};
use gantry_test_support::{TempDir, test_databases};

use crate::conformance::{end, lines, repo, runner};

const ONE_STAGE: &str = "\
kind: pipeline
name: build
clone: {disable: true}
steps:
  - name: compile
    image: busybox
    commands: [make]
";

/// A build of `branch` run to success with `log_lines` lines of log, and reported.
async fn finished_build(store: &Store, repo_id: i64, branch: &str, log_lines: u64) -> i64 {
    let build = crate::conformance::new_build(store, repo_id, branch, ONE_STAGE).await;
    let claim = store
        .claim_next(&runner("r"))
        .await
        .expect("claims")
        .expect("queued");
    store
        .append_logs(claim.stage_id, claim.epoch, "compile", &lines(1, log_lines))
        .await
        .expect("logs");
    let step = gantry_proto::StepUpdate {
        epoch: claim.epoch,
        step: "compile".into(),
        state: StepState::Success,
        exit_code: Some(0),
        started_at: Some(chrono::Utc::now()),
        finished_at: Some(chrono::Utc::now()),
        error: None,
    };
    store
        .finish_stage(
            claim.stage_id,
            claim.epoch,
            &end(Status::Success, vec![step]),
        )
        .await
        .expect("finishes");
    let message = NewMessage {
        kind: gantry_store::MessageKind::Chat(gantry_pipeline::model::ChatKind::Slack),
        url: "http://127.0.0.1:9/hook".into(),
        body: "{}".into(),
        auth: None,
    };
    assert!(
        store
            .queue_notifications(build.id, None, Status::Success, &[message])
            .await
            .expect("queues")
    );
    build.id
}

/// Sends every pending message, as the notifier would.
async fn send_all(store: &Store) {
    while let Some(m) = store
        .claim_message(now_ms(), now_ms() + 30_000)
        .await
        .expect("claims")
    {
        store.message_sent(m.id, m.claim_epoch).await.expect("sent");
    }
}

async fn log_lines_of(store: &Store, build_id: i64) -> u64 {
    let mut total = 0;
    for stage in store.stages(build_id).await.expect("stages") {
        for step in store.steps(stage.id).await.expect("steps") {
            total += store.log_line_count(step.id).await.expect("counts");
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_keeps_what_the_policy_says() {
    let dir = TempDir::new("retention");
    for (label, url) in test_databases(dir.path()).await {
        let store = Store::open(&url).await.expect("opens");
        let repo_id = repo(&store, "app").await.id;
        // Old: 12 builds of main and 3 of a feature branch, each with 400 lines of log.
        let mut old_main = Vec::new();
        for _ in 0..12 {
            old_main.push(finished_build(&store, repo_id, "main", 400).await);
        }
        let mut old_feature = Vec::new();
        for _ in 0..3 {
            old_feature.push(finished_build(&store, repo_id, "feature", 400).await);
        }
        let unsent = finished_build(&store, repo_id, "feature", 10).await;
        send_all(&store).await;
        // Its message is left pending: the build must stay until it is sent.
        let unsent_again = finished_build(&store, repo_id, "main", 10).await;
        for n in 0..30 {
            store
                .record_delivery(&NewDelivery {
                    delivery_id: &format!("old-{n}"),
                    event: "push",
                    repo_id: Some(repo_id),
                    state: DeliveryState::Processed,
                    outcome: "built",
                    payload: None,
                })
                .await
                .expect("records");
        }
        store
            .record_delivery(&NewDelivery {
                delivery_id: "pending-1",
                event: "push",
                repo_id: Some(repo_id),
                state: DeliveryState::Pending,
                outcome: "",
                payload: Some(b"{}"),
            })
            .await
            .expect("records");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let cutoff = now_ms();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        // New: two builds of main, after the cutoff, and one still running.
        let new_main = [
            finished_build(&store, repo_id, "main", 50).await,
            finished_build(&store, repo_id, "main", 50).await,
        ];
        let running = crate::conformance::new_build(&store, repo_id, "main", ONE_STAGE).await;

        let policy = RetentionPolicy {
            builds_before: Some(cutoff),
            keep_per_branch: 3,
            logs_before: Some(cutoff),
            deliveries_before: Some(cutoff),
            messages_before: Some(cutoff),
            batch: 4,
        };
        let report = store.prune(&policy, now_ms()).await.expect("prunes");
        eprintln!("{label}: retention removed {report:?}");

        // main: 12 old, 1 old whose message is still pending, 2 new, 1 running; the newest 3
        // are the new and running ones, so the 12 old go, but not the one with a message to
        // send. feature: 3 old + 1 old; the newest 3 stay.
        let exists = async |id: i64| store.build_by_id(id).await.is_ok();
        for id in old_main.iter().chain([&old_feature[0]]) {
            assert!(!exists(*id).await, "{label}: old build {id} is gone");
        }
        for id in old_feature[1..].iter().chain([&unsent]) {
            assert!(
                exists(*id).await,
                "{label}: build {id} is among its branch's newest"
            );
        }
        assert!(
            exists(unsent_again).await,
            "{label}: its message is still to be sent"
        );
        for id in new_main.iter().chain([&running.id]) {
            assert!(exists(*id).await, "{label}: new build {id} is kept");
        }
        assert_eq!(report.builds, 13, "{label}: {report:?}");
        // Kept old builds lose their logs, keep their rows; new ones keep both.
        let kept_old = store.build_by_id(old_feature[1]).await.expect("kept");
        assert_eq!(kept_old.status, Status::Success);
        assert_eq!(log_lines_of(&store, old_feature[1]).await, 0, "{label}");
        assert_eq!(log_lines_of(&store, unsent_again).await, 0, "{label}");
        assert_eq!(log_lines_of(&store, new_main[0]).await, 50, "{label}");
        assert_eq!(report.build_logs, 4, "{label}: {report:?}");
        assert_eq!(
            report.log_lines,
            13 * 400 + 2 * 400 + 2 * 10,
            "{label}: {report:?}"
        );
        assert_eq!(
            report.deliveries, 30,
            "{label}: the pending one stays: {report:?}"
        );
        assert!(
            store
                .claim_delivery(now_ms(), now_ms() + 1_000)
                .await
                .expect("claims")
                .is_some(),
            "{label}: the pending delivery is still there"
        );
        // Old sent messages go (those of removed builds went with them); pending ones stay.
        assert_eq!(report.messages, 16 - 13, "{label}: {report:?}");
        assert!(
            report.batches >= 4,
            "{label}: 13 builds in batches of 4: {report:?}"
        );
        if label == "sqlite" {
            assert!(
                report.bytes_freed > 0,
                "{label}: SQLite gives space back: {report:?}"
            );
        }
        // Nothing more is due: a second run removes nothing.
        let again = store.prune(&policy, now_ms()).await.expect("prunes");
        assert_eq!(
            again.builds + again.build_logs + again.deliveries + again.messages,
            0,
            "{label}: {again:?}"
        );

        // The run is claimed once and reported.
        let now = now_ms();
        let epoch = store
            .claim_maintenance("retention", now, now + 60_000)
            .await
            .expect("claims")
            .expect("never run: due");
        assert!(
            store
                .claim_maintenance("retention", now, now + 60_000)
                .await
                .expect("claims")
                .is_none(),
            "{label}: one run at a time"
        );
        assert!(
            store
                .maintenance_done("retention", epoch, now, now + 3_600_000, &report)
                .await
                .expect("records")
        );
        assert_eq!(
            store.last_maintenance("retention").await.expect("reads"),
            Some((now, report))
        );
        assert!(
            store
                .claim_maintenance("retention", now + 60_000, now + 120_000)
                .await
                .expect("claims")
                .is_none(),
            "{label}: not due until the next run"
        );
        store.close().await;
    }
}
