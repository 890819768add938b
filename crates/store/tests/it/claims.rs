//! Several servers on one database: two `Store`s opened on the same database stand for two
//! servers, and every piece of background work (a delivery, an outbox message, a build's
//! notifications, an expired lease) is taken by exactly one of them, even when both reach
//! for it at once. On PostgreSQL the stores also hear each other's log news.

use std::collections::BTreeSet;
use std::time::Duration;

use gantry_proto::{LogLine, StepState, StepUpdate};
use gantry_store::{
    ClaimRequest, Claimed, DeliveryState, Event, NewDelivery, NewMessage, Recorded, StageEnd,
    Status, Store, now_ms,
};
use gantry_test_support::{TempDir, test_databases};

use crate::conformance::{TWO_STAGES, new_build, repo, runner, try_build_for};

/// Two stores on each database in turn, the second opened on the first's database.
async fn each_pair(name: &str, case: impl AsyncFn(&'static str, Store, Store)) {
    let dir = TempDir::new(name);
    for (label, url) in test_databases(dir.path()).await {
        let open = || async {
            Store::open(&url)
                .await
                .unwrap_or_else(|e| panic!("{label}: opening {url}: {e}"))
        };
        let (a, b) = (open().await, open().await);
        case(label, a.clone(), b.clone()).await;
        for store in [a, b] {
            tokio::time::timeout(Duration::from_secs(10), store.close())
                .await
                .unwrap_or_else(|_| panic!("{label}: closing the store hung"));
        }
    }
}

async fn pending_delivery(store: &Store, id: &str) -> i64 {
    pending_delivery_of(store, id, None).await
}

async fn pending_delivery_of(store: &Store, id: &str, repo_id: Option<i64>) -> i64 {
    let new = NewDelivery {
        delivery_id: id,
        event: "push",
        repo_id,
        state: DeliveryState::Pending,
        outcome: "",
        payload: Some(b"{}"),
    };
    match store.record_delivery(&new).await.expect("records") {
        Recorded::New(id) => id,
        Recorded::Duplicate(d) => panic!("{id} is new, not {d:?}"),
    }
}

/// Claims deliveries until none is left, as one server's worker would.
async fn drain_deliveries(store: &Store) -> Vec<i64> {
    let mut taken = Vec::new();
    while let Some(d) = store
        .claim_delivery(now_ms(), now_ms() + 60_000)
        .await
        .expect("claims")
    {
        taken.push(d.id);
        store
            .finish_delivery(d.id, d.claim_epoch, "done")
            .await
            .expect("finishes");
    }
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_delivery_is_claimed_by_one_server() {
    each_pair("claims-deliveries", async |label, a, b| {
        let mut ids = BTreeSet::new();
        for n in 0..40 {
            ids.insert(pending_delivery(&a, &format!("d-{n}")).await);
        }
        let (from_a, from_b) = tokio::join!(drain_deliveries(&a), drain_deliveries(&b));
        let both: Vec<i64> = from_a.iter().chain(&from_b).copied().collect();
        let unique: BTreeSet<i64> = both.iter().copied().collect();
        assert_eq!(
            both.len(),
            unique.len(),
            "{label}: a delivery was taken twice"
        );
        assert_eq!(unique, ids, "{label}: every delivery was taken");
        assert!(a.pending_deliveries(100).await.expect("lists").is_empty());

        // A server that dies holding a claim: once its lease has run out the other takes
        // the delivery, and the first's late word changes nothing.
        let id = pending_delivery(&a, "d-dead").await;
        let held = a
            .claim_delivery(now_ms(), now_ms() + 60_000)
            .await
            .expect("claims")
            .expect("due");
        assert_eq!(held.id, id);
        assert!(
            b.claim_delivery(now_ms(), now_ms() + 60_000)
                .await
                .expect("claims")
                .is_none(),
            "{label}: a held claim is not taken"
        );
        assert!(
            a.renew_claim(Claimed::Delivery(id), held.claim_epoch, now_ms() - 1)
                .await
                .expect("renews")
        );
        let taken = b
            .claim_delivery(now_ms(), now_ms() + 60_000)
            .await
            .expect("claims")
            .expect("the lapsed claim is due again");
        assert!(taken.claim_epoch > held.claim_epoch);
        assert!(
            !a.renew_claim(Claimed::Delivery(id), held.claim_epoch, now_ms() + 60_000)
                .await
                .expect("renews")
        );
        a.finish_delivery(id, held.claim_epoch, "stale")
            .await
            .expect("runs");
        let stored = a.delivery("d-dead").await.expect("reads").expect("exists");
        assert_eq!(
            stored.state,
            DeliveryState::Pending,
            "{label}: a stale claim finished nothing"
        );
        b.finish_delivery(id, taken.claim_epoch, "done")
            .await
            .expect("runs");
        let stored = a.delivery("d-dead").await.expect("reads").expect("exists");
        assert_eq!(
            (stored.state, stored.outcome.as_str()),
            (DeliveryState::Processed, "done")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repositorys_deliveries_wait_for_its_earlier_ones_but_not_for_others() {
    each_pair("claims-delivery-order", async |label, a, _b| {
        let (slow, other) = (repo(&a, "slow").await, repo(&a, "other").await);
        let first = pending_delivery_of(&a, "slow-1", Some(slow.id)).await;
        let second = pending_delivery_of(&a, "slow-2", Some(slow.id)).await;
        let elsewhere = pending_delivery_of(&a, "other-1", Some(other.id)).await;
        let claim = || async {
            a.claim_delivery(now_ms(), now_ms() + 60_000)
                .await
                .expect("claims")
        };
        let held = claim().await.expect("the oldest is due");
        assert_eq!((held.id, held.attempts), (first, 1), "{label}");
        // While the first of `slow` is held, its second waits; `other` does not.
        let next = claim().await.expect("another repository's is due");
        assert_eq!(next.id, elsewhere, "{label}");
        assert!(claim().await.is_none(), "{label}: slow-2 waits for slow-1");
        // A released claim is taken again, counted.
        a.release_delivery(first, held.claim_epoch, now_ms() - 1)
            .await
            .expect("releases");
        let again = claim().await.expect("due again");
        assert_eq!((again.id, again.attempts), (first, 2), "{label}");
        a.finish_delivery(first, again.claim_epoch, "done")
            .await
            .expect("finishes");
        assert_eq!(claim().await.map(|d| d.id), Some(second), "{label}");
    })
    .await;
}

fn message(url: &str, body: &str) -> NewMessage {
    NewMessage {
        kind: gantry_store::MessageKind::Chat(gantry_pipeline::model::ChatKind::Slack),
        url: url.into(),
        body: body.into(),
        auth: None,
    }
}

/// Claims and sends messages until none is due; returns their bodies.
async fn drain_outbox(store: &Store) -> Vec<String> {
    let mut sent = Vec::new();
    while let Some(m) = store
        .claim_message(now_ms(), now_ms() + 60_000)
        .await
        .expect("claims")
    {
        sent.push(m.body.clone());
        store
            .message_sent(m.id, m.claim_epoch)
            .await
            .expect("marks");
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_is_sent_by_one_server_in_order() {
    each_pair("claims-outbox", async |label, a, b| {
        let repo = repo(&a, "app").await;
        let mut expected = BTreeSet::new();
        for n in 0..12 {
            let build = new_build(&a, repo.id, "main", TWO_STAGES).await;
            let messages: Vec<NewMessage> = (0..3)
                .map(|k| message(&format!("http://chat/{k}"), &format!("build {n} to {k}")))
                .collect();
            expected.extend(messages.iter().map(|m| m.body.clone()));
            // Both servers saw the same change; one of them queues it.
            let (first, second) = tokio::join!(
                a.queue_notifications(build.id, None, Status::Pending, &messages),
                b.queue_notifications(build.id, None, Status::Pending, &messages),
            );
            let (first, second) = (first.expect("queues"), second.expect("queues"));
            assert!(
                first ^ second,
                "{label}: exactly one server queues a change ({first}, {second})"
            );
        }
        let (from_a, from_b) = tokio::join!(drain_outbox(&a), drain_outbox(&b));
        let both: Vec<&String> = from_a.iter().chain(&from_b).collect();
        let unique: BTreeSet<String> = both.iter().map(|s| (*s).clone()).collect();
        assert_eq!(
            both.len(),
            unique.len(),
            "{label}: a message was sent twice"
        );
        assert_eq!(unique, expected, "{label}: every message was sent");

        // Two messages of one build to one address: the second waits for the first.
        let build = new_build(&a, repo.id, "main", TWO_STAGES).await;
        let to_github = [
            message("http://github/statuses/abc", "pending"),
            message("http://github/statuses/abc", "success"),
        ];
        assert!(
            a.queue_notifications(build.id, None, Status::Pending, &to_github)
                .await
                .expect("queues")
        );
        let first = a
            .claim_message(now_ms(), now_ms() + 60_000)
            .await
            .expect("claims")
            .expect("due");
        assert_eq!(first.body, "pending");
        assert!(
            b.claim_message(now_ms(), now_ms() + 60_000)
                .await
                .expect("claims")
                .is_none(),
            "{label}: `success` waits while `pending` is being sent"
        );
        // The first server died mid-send: its claim runs out, the other sends it again (the
        // one duplicate allowed), and the dead server's late mark changes nothing.
        a.message_failed(first.id, first.claim_epoch, "timed out", Some(now_ms() - 1))
            .await
            .expect("marks");
        let again = b
            .claim_message(now_ms(), now_ms() + 60_000)
            .await
            .expect("claims")
            .expect("due");
        assert_eq!((again.id, again.body.as_str()), (first.id, "pending"));
        a.message_sent(first.id, first.claim_epoch)
            .await
            .expect("runs");
        b.message_sent(again.id, again.claim_epoch)
            .await
            .expect("marks");
        let then = a
            .claim_message(now_ms(), now_ms() + 60_000)
            .await
            .expect("claims")
            .expect("due");
        assert_eq!(then.body, "success");
        let stored = a.build_messages(build.id).await.expect("reads");
        assert_eq!(
            stored[0].attempts, 2,
            "{label}: one failed try, one sent: {stored:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_expired_lease_is_reaped_by_one_server() {
    each_pair("claims-reaper", async |label, a, b| {
        let repo = repo(&a, "app").await;
        let mut r = runner("r1");
        r.lease_until = now_ms() - 1;
        let mut stages = BTreeSet::new();
        for _ in 0..10 {
            new_build(&a, repo.id, "main", TWO_STAGES).await;
            let claim = a.claim_next(&r).await.expect("claims").expect("queued");
            stages.insert(claim.stage_id);
        }
        let now = now_ms();
        let (by_a, by_b) = tokio::join!(a.reap_expired(now), b.reap_expired(now));
        let both: Vec<i64> = by_a
            .expect("reaps")
            .iter()
            .chain(&by_b.expect("reaps"))
            .map(|r| r.stage_id)
            .collect();
        let unique: BTreeSet<i64> = both.iter().copied().collect();
        assert_eq!(
            both.len(),
            unique.len(),
            "{label}: a stage was reaped twice: {both:?}"
        );
        assert_eq!(unique, stages, "{label}: every expired stage was reaped");

        // A lease renewed after the reaper saw it expired is not reaped.
        let mut live = runner("r2");
        live.lease_until = now_ms() - 1;
        let claim = a.claim_next(&live).await.expect("claims").expect("queued");
        let seen_expired_at = now_ms();
        a.heartbeat(claim.stage_id, claim.epoch, now_ms() + 60_000)
            .await
            .expect("renews");
        let reaped = b.reap_expired(seen_expired_at).await.expect("reaps");
        assert!(
            reaped.iter().all(|r| r.stage_id != claim.stage_id),
            "{label}: a renewed lease was reaped"
        );
        a.heartbeat(claim.stage_id, claim.epoch, now_ms() + 60_000)
            .await
            .expect("the lease is still held");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_hears_what_another_committed_once() {
    each_pair("claims-log-news", async |label, a, b| {
        if label != "postgres" {
            return; // one SQLite file serves one server
        }
        let mut news = b.subscribe();
        let mut own = a.subscribe();
        let repo = repo(&a, "app").await;
        new_build(&a, repo.id, "main", TWO_STAGES).await;
        let claim = a
            .claim_next(&runner("r1"))
            .await
            .expect("claims")
            .expect("queued");
        let update = |state| StepUpdate {
            epoch: claim.epoch,
            step: "compile".into(),
            state,
            exit_code: None,
            error: None,
            started_at: None,
            finished_at: None,
        };
        a.update_step(claim.stage_id, &update(StepState::Running))
            .await
            .expect("starts");
        let line = LogLine {
            number: 1,
            elapsed_ms: 0,
            text: "hello".into(),
        };
        a.append_logs(claim.stage_id, claim.epoch, "compile", &[line])
            .await
            .expect("appends");
        a.update_step(claim.stage_id, &update(StepState::Success))
            .await
            .expect("ends");
        let stage = claim.stage_id;
        let step_ended = Event::StepEnded {
            stage,
            step: "compile".into(),
        };
        let mut heard = Vec::new();
        while heard.last() != Some(&step_ended) {
            let next = tokio::time::timeout(Duration::from_secs(10), news.recv())
                .await
                .expect("the news arrives")
                .expect("the channel is open");
            heard.push(next);
        }
        let build = claim.build_id;
        assert_eq!(
            heard,
            [
                Event::BuildChanged { build },
                Event::Queued,
                Event::BuildChanged { build },
                Event::LinesStored {
                    stage,
                    step: "compile".into(),
                    lines: None
                },
                step_ended.clone(),
            ],
            "the other server hears each commit, lines without their text"
        );
        let mut mine = Vec::new();
        while let Ok(event) = own.try_recv() {
            mine.push(event);
        }
        assert_eq!(
            mine.len(),
            5,
            "a server hears its own news once, not again from the database: {mine:?}"
        );
        assert!(
            matches!(&mine[3], Event::LinesStored { lines: Some(lines), .. } if lines[0].text == "hello"),
            "its own lines come with their text: {mine:?}"
        );
    })
    .await;
}

/// Two stages that do not depend on each other.
const SIDE_BY_SIDE: &str = "\
kind: pipeline
name: one
clone: {disable: true}
steps:
  - name: a
    image: busybox
    commands: [true]
---
kind: pipeline
name: two
clone: {disable: true}
steps:
  - name: b
    image: busybox
    commands: [true]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stages_ending_at_once_on_two_servers_end_their_build() {
    each_pair("claims-advance", async |label, a, b| {
        let repo = repo(&a, "app").await;
        let mut builds = Vec::new();
        for _ in 0..25 {
            let build = new_build(&a, repo.id, "main", SIDE_BY_SIDE).await;
            let first = a
                .claim_next(&runner("r1"))
                .await
                .expect("claims")
                .expect("queued");
            let second = a
                .claim_next(&runner("r2"))
                .await
                .expect("claims")
                .expect("queued");
            builds.push((build.id, first, second));
        }
        let end = |status| StageEnd {
            status,
            error: None,
            steps: Vec::new(),
        };
        let (passed, failed) = (end(Status::Success), end(Status::Failure));
        for (build, first, second) in &builds {
            // One stage passes through one server, the other fails through the other, at once.
            let (x, y) = tokio::join!(
                a.finish_stage(first.stage_id, first.epoch, &passed),
                b.finish_stage(second.stage_id, second.epoch, &failed),
            );
            x.expect("ends");
            y.expect("ends");
            let ended = a.build_by_id(*build).await.expect("reads");
            assert_eq!(
                ended.status,
                Status::Failure,
                "{label}: build {build} ended: {ended:?}"
            );
        }
    })
    .await;
}

/// A due schedule is claimed by one server; the build of its tick is stored only under the
/// current claim, so a server whose claim ran out (and was taken over) makes no second build,
/// and the tick moves the schedule on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_schedule_makes_one_build_across_servers() {
    each_pair("claims-schedules", async |label, a, b| {
        let repo_id = repo(&a, "sched").await.id;
        let due = 1_000_000;
        let schedule = a
            .create_schedule(&gantry_store::NewSchedule {
                repo_id,
                name: "nightly".into(),
                expression: "@daily".into(),
                timezone: "UTC".into(),
                branch: "main".into(),
                params: Default::default(),
                next_run_at: due,
                created_by: "octocat".into(),
            })
            .await
            .expect("adds");
        let duplicate = a
            .create_schedule(&gantry_store::NewSchedule {
                repo_id,
                name: "nightly".into(),
                expression: "@hourly".into(),
                timezone: "UTC".into(),
                branch: "main".into(),
                params: Default::default(),
                next_run_at: due,
                created_by: "octocat".into(),
            })
            .await;
        assert!(
            matches!(duplicate, Err(gantry_store::StoreError::Conflict(_))),
            "{label}: {duplicate:?}"
        );
        assert_eq!(a.next_schedule_due().await.expect("reads"), Some(due));
        assert!(
            a.claim_schedule(due - 1, due + 60_000)
                .await
                .expect("claims")
                .is_none(),
            "{label}: not due yet"
        );
        let (from_a, from_b) = tokio::join!(
            a.claim_schedule(due, due + 60_000),
            b.claim_schedule(due, due + 60_000)
        );
        let claims: Vec<_> = [from_a.expect("claims"), from_b.expect("claims")]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(claims.len(), 1, "{label}: one server claims a due schedule");
        let first = claims[0].clone();
        assert_eq!(first.id, schedule.id);
        // Its server stalls; the claim runs out and the other server takes the tick.
        let second = b
            .claim_schedule(due + 60_000, due + 120_000)
            .await
            .expect("claims")
            .expect("a lapsed claim is due again");
        assert_eq!(second.claim_epoch, first.claim_epoch + 1);
        let next = due + 86_400_000;
        let run = |epoch| gantry_store::ScheduleRun {
            schedule_id: schedule.id,
            tick: Some((epoch, next)),
        };
        try_build_for(
            &b,
            repo_id,
            "main",
            TWO_STAGES,
            None,
            Some(run(second.claim_epoch)),
        )
        .await
        .expect("the current claim stores its build");
        let late = try_build_for(
            &a,
            repo_id,
            "main",
            TWO_STAGES,
            None,
            Some(run(first.claim_epoch)),
        )
        .await;
        assert!(
            matches!(late, Err(gantry_store::StoreError::Conflict(_))),
            "{label}: a stale claim makes no build: {late:?}"
        );
        let builds = a
            .list_builds(
                repo_id,
                &gantry_store::BuildFilter {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .expect("lists");
        assert_eq!(builds.len(), 1, "{label}: one build for the tick");
        let after = a
            .schedule(repo_id, "nightly")
            .await
            .expect("reads")
            .expect("there");
        assert_eq!(after.next_run_at, next, "{label}: the tick moved it on");
        assert_eq!(after.last_build_id, Some(builds[0].id));
        assert!(
            a.claim_schedule(due + 120_000, due + 180_000)
                .await
                .expect("claims")
                .is_none(),
            "{label}: nothing is due until the next tick"
        );
        // A tick that makes no build says why and moves on too.
        let third = a
            .claim_schedule(next, next + 60_000)
            .await
            .expect("claims")
            .expect("due");
        assert!(
            a.schedule_failed(
                third.id,
                third.claim_epoch,
                next,
                next + 86_400_000,
                "no branch"
            )
            .await
            .expect("records")
        );
        let failed = a
            .schedule(repo_id, "nightly")
            .await
            .expect("reads")
            .expect("there");
        assert_eq!(failed.last_error.as_deref(), Some("no branch"));
        assert_eq!(failed.next_run_at, next + 86_400_000);
        assert!(
            a.delete_schedule(repo_id, "nightly")
                .await
                .expect("removes")
        );
        assert!(
            !a.delete_schedule(repo_id, "nightly")
                .await
                .expect("removes")
        );
    })
    .await;
}

const LOCKED: &str = "\
kind: pipeline
name: migrate
clone: {disable: true}
lock: production-db
steps:
  - name: up
    image: busybox
    commands: [migrate up]
";

const LIMITED: &str = "\
kind: pipeline
name: deploy
clone: {disable: true}
concurrency: {limit: 1}
steps:
  - name: ship
    image: busybox
    commands: [ship]
---
kind: pipeline
name: docs
clone: {disable: true}
steps:
  - name: lock-in-a-step
    image: busybox
    commands: [publish]
    lock: docs-site
";

/// A lock is held by a running stage across builds and repositories, and released when it
/// ends or its lease lapses; a concurrency limit counts a pipeline's running stages in its
/// repository; two servers claiming at once never both take a lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_and_concurrency_limits_hold_stages_back() {
    each_pair("claims-gates", async |label, a, b| {
        let app = repo(&a, "app").await.id;
        let api = repo(&a, "api").await.id;
        let first = new_build(&a, app, "main", LOCKED).await;
        let second = new_build(&a, api, "main", LOCKED).await;
        let held = a
            .claim_next(&runner("r1"))
            .await
            .expect("claims")
            .expect("the first takes the lock");
        assert_eq!(held.build_id, first.id);
        assert!(
            b.claim_next(&runner("r2")).await.expect("claims").is_none(),
            "{label}: another repository's stage waits for the lock"
        );
        let holders = a
            .lock_holders(&["production-db".to_owned()])
            .await
            .expect("reads");
        assert_eq!(holders.len(), 1, "{label}");
        assert_eq!(
            (holders[0].repo.as_str(), holders[0].build),
            ("acme/app", first.number)
        );
        a.finish_stage(
            held.stage_id,
            held.epoch,
            &crate::conformance::end(Status::Success, vec![]),
        )
        .await
        .expect("ends");
        let next = b
            .claim_next(&runner("r2"))
            .await
            .expect("claims")
            .expect("the lock is free");
        assert_eq!(next.build_id, second.id);
        // Its runner dies: the lease lapses, the reaper takes it back, the lock is free.
        let third = new_build(&a, app, "main", LOCKED).await;
        assert!(a.claim_next(&runner("r1")).await.expect("claims").is_none());
        a.reap_expired(now_ms() + 120_000).await.expect("reaps");
        let after = a
            .claim_next(&ClaimRequest {
                lease_until: now_ms() + 60_000,
                owners: Vec::new(),
                ..runner("r1")
            })
            .await
            .expect("claims")
            .expect("a lapsed lease releases the lock");
        assert!(
            after.build_id == second.id || after.build_id == third.id,
            "{label}"
        );

        // Concurrency: one `deploy` at a time in a repository; `docs` holds its step's lock.
        let web = repo(&a, "web").await.id;
        let other = repo(&a, "other").await.id;
        a.reap_expired(now_ms() + 240_000).await.expect("reaps");
        let one = new_build(&a, web, "main", LIMITED).await;
        let two = new_build(&a, web, "main", LIMITED).await;
        let elsewhere = new_build(&a, other, "main", LIMITED).await;
        let mut taken = Vec::new();
        while let Some(claim) = a
            .claim_next(&ClaimRequest {
                lease_until: now_ms() + 600_000,
                owners: Vec::new(),
                ..runner("r3")
            })
            .await
            .expect("claims")
        {
            taken.push((claim.build_id, claim.plan.name.clone()));
        }
        let of = |build: i64| {
            taken
                .iter()
                .filter(|(b, _)| *b == build)
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(of(one.id), ["deploy", "docs"], "{label}: {taken:?}");
        assert!(
            of(two.id).is_empty(),
            "{label}: deploy is at its limit, docs waits for the lock: {taken:?}"
        );
        assert_eq!(
            of(elsewhere.id),
            ["deploy"],
            "{label}: another repository's deploy is not limited: {taken:?}"
        );
        assert_eq!(
            a.running_pipeline(web, "deploy").await.expect("reads"),
            [one.number]
        );
    })
    .await;
}

/// Two servers claiming stages that want one lock at the same moment: one wins each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_never_both_take_a_lock() {
    each_pair("claims-lock-race", async |label, a, b| {
        for round in 0..30 {
            let app = repo(&a, &format!("app{round}")).await.id;
            for _ in 0..4 {
                new_build(&a, app, "main", LOCKED).await;
            }
            let start = std::sync::Arc::new(tokio::sync::Barrier::new(4));
            let claims: Vec<_> = [&a, &b, &a, &b]
                .into_iter()
                .enumerate()
                .map(|(n, store)| {
                    let store = store.clone();
                    let start = std::sync::Arc::clone(&start);
                    tokio::spawn(async move {
                        start.wait().await;
                        store.claim_next(&runner(&format!("r{n}"))).await
                    })
                })
                .collect();
            let mut won = Vec::new();
            for claim in claims {
                won.extend(claim.await.expect("joins").expect("claims"));
            }
            assert_eq!(won.len(), 1, "{label}: round {round}: one holds the lock");
            let mut next = won.pop();
            while let Some(claim) = next {
                a.finish_stage(
                    claim.stage_id,
                    claim.epoch,
                    &crate::conformance::end(Status::Success, vec![]),
                )
                .await
                .expect("ends");
                next = a.claim_next(&runner("r1")).await.expect("claims");
            }
        }
    })
    .await;
}

/// Every kind of background claim is renewed the same way: while renewed it is not taken,
/// once it lapses another server takes it under a higher epoch, and the first one's renewal
/// then says it lost it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_claim_is_held_while_renewed() {
    each_pair("claims-renewal", async |label, a, b| {
        let repo_id = repo(&a, "renew").await.id;

        let delivery = pending_delivery(&a, "d-renew").await;
        let build = new_build(&a, repo_id, "main", TWO_STAGES).await;
        a.queue_notifications(
            build.id,
            None,
            Status::Pending,
            &[message("http://c/", "hi")],
        )
        .await
        .expect("queues");
        a.create_schedule(&gantry_store::NewSchedule {
            repo_id,
            name: "renewed".into(),
            expression: "@daily".into(),
            timezone: "UTC".into(),
            branch: "main".into(),
            params: Default::default(),
            next_run_at: 1,
            created_by: "octocat".into(),
        })
        .await
        .expect("adds");
        // Everything above is due from here on.
        let now = now_ms();
        let soon = now + 1_000;
        let later = now + 60_000;

        // A claim of each kind from `store`, at `at` until `until`: its id and epoch.
        async fn take_until(kind: &str, store: &Store, at: i64, until: i64) -> Option<(i64, i64)> {
            match kind {
                "delivery" => store
                    .claim_delivery(at, until)
                    .await
                    .expect("claims")
                    .map(|d| (d.id, d.claim_epoch)),
                "message" => store
                    .claim_message(at, until)
                    .await
                    .expect("claims")
                    .map(|m| (m.id, m.claim_epoch)),
                "schedule" => store
                    .claim_schedule(at, until)
                    .await
                    .expect("claims")
                    .map(|s| (s.id, s.claim_epoch)),
                _ => store
                    .claim_maintenance("retention", at, until)
                    .await
                    .expect("claims")
                    .map(|e| (0, e)),
            }
        }
        let take = async |kind, store, at| take_until(kind, store, at, at + 60_000).await;
        for kind in ["delivery", "message", "schedule", "maintenance"] {
            let (id, epoch) = take_until(kind, &a, now, soon)
                .await
                .unwrap_or_else(|| panic!("{label}: a {kind} is due"));
            if kind == "delivery" {
                assert_eq!(id, delivery);
            }
            let claimed = match kind {
                "delivery" => Claimed::Delivery(id),
                "message" => Claimed::Message(id),
                "schedule" => Claimed::Schedule(id),
                _ => Claimed::Maintenance("retention"),
            };
            assert!(
                take(kind, &b, now).await.is_none(),
                "{label}: a held {kind} claim is not taken"
            );
            // Renewed past `soon`: still held after it.
            assert!(
                a.renew_claim(claimed, epoch, later).await.expect("renews"),
                "{label}: {kind}"
            );
            assert!(
                take(kind, &b, soon + 1).await.is_none(),
                "{label}: a renewed {kind} claim is not taken"
            );
            // Not renewed again: after it lapses the other server takes it, and the first
            // one's renewal says it is lost.
            let (_, taken) = take(kind, &b, later + 1)
                .await
                .unwrap_or_else(|| panic!("{label}: a lapsed {kind} claim is taken"));
            assert!(taken > epoch, "{label}: {kind}");
            assert!(
                !a.renew_claim(claimed, epoch, later + 120_000)
                    .await
                    .expect("renews"),
                "{label}: a lost {kind} claim is not renewed"
            );
            assert!(
                b.renew_claim(claimed, taken, later + 120_000)
                    .await
                    .expect("renews"),
                "{label}: {kind}"
            );
        }
    })
    .await;
}
