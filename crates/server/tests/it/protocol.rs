//! The runner protocol against the real server: dispatch by long-poll, step states and
//! logs, cancellation through a watch, leases that expire, and deliveries that survive a
//! restart.

use std::time::{Duration, Instant};

use gantry_proto::{Heartbeat, StepState};
use gantry_store::{DeliveryState, NewDelivery};
use gantry_test_support::{GitRepo, webhook};

use crate::on_both;
use crate::support::{PIPELINE, TestServer};

on_both!(
    runners_with_their_own_tokens_take_and_report_only_what_is_theirs,
    a_waiting_runner_gets_the_stage_and_its_reports_make_the_build,
    the_runner_secret_is_required,
    a_cancel_reaches_a_watching_runner,
    a_runner_that_stops_heartbeating_loses_its_stage,
    a_stage_its_runner_confirmed_is_never_handed_out_again,
    a_waiting_stage_says_what_no_runner_offers,
    an_arm64_pipeline_runs_only_on_an_arm64_runner,
    a_delivery_accepted_before_a_crash_is_built_after_the_restart,
);

mod cases {
    use super::*;

    /// Finding 8, as found: one runner secret let any runner claim any stage, and sequential
    /// epochs let a runner report for a stage it did not hold.
    pub async fn runners_with_their_own_tokens_take_and_report_only_what_is_theirs(db: &str) {
        let server = TestServer::start(db).await;
        let (_git, _sha) = server.push_app().await;
        let mut other = server.runner("builder-other");
        other.credential = server.register_runner("builder-other", &["other"]).await;
        let mut acme = server.runner("builder-acme");
        acme.credential = server.register_runner("builder-acme", &["acme"]).await;
        let listed = server.get_json("/runners/tokens").await;
        assert!(!listed.to_string().contains(&acme.credential), "{listed}");

        // Another owner's runner never gets acme's stage (nor, with it, acme's secrets).
        assert!(other.request(Duration::from_millis(300)).await.is_none());
        let assignment = acme
            .request(Duration::from_secs(10))
            .await
            .expect("acme's runner takes acme's stage");

        // Knowing the lease is not holding it.
        assert_eq!(
            other
                .step(&assignment, "clone", StepState::Running, None)
                .await,
            409,
            "a runner reports only for stages it holds"
        );
        assert_eq!(other.done(&assignment, StepState::Failure).await, 409);
        assert_eq!(
            acme.step(&assignment, "clone", StepState::Running, None)
                .await,
            204
        );

        // A token acts under its own name only.
        let mut impostor = server.runner("builder-other");
        impostor.credential = acme.credential.clone();
        let refused = impostor
            .post(gantry_proto::path::REQUEST, &serde_json::json!({
                "runner": "builder-other", "instance": "x", "labels": {}, "platform": "linux/amd64",
                "capacity": 1, "offer": {"docker": true, "host": false}, "wait_ms": 0
            }))
            .await;
        assert_eq!(refused.status(), 403);

        // Revoked: refused at once.
        let revoked = server
            .api(
                reqwest::Method::DELETE,
                "/runners/tokens/builder-acme",
                None,
            )
            .await;
        assert_eq!(revoked.status(), 204);
        assert_eq!(acme.done(&assignment, StepState::Success).await, 401);
        server.stop().await;
    }

    pub async fn a_waiting_runner_gets_the_stage_and_its_reports_make_the_build(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PIPELINE)], "first");
        let repo = server.add_repo("app", &git).await;
        let runner = server.runner("r1");
        // The runner is already waiting when the push arrives.
        let waiting = tokio::spawn(async move {
            let started = Instant::now();
            (
                runner.request(Duration::from_secs(20)).await,
                started.elapsed(),
                runner,
            )
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut payload = webhook::push("acme/app", "main", &sha, "first");
        payload["repository"]["clone_url"] = "https://evil.example/clone.git".into();
        assert_eq!(server.deliver("push", "d-1", &payload).await.status(), 202);
        let (assignment, waited, runner) = waiting.await.expect("task");
        let assignment = assignment.expect("the stage reached the waiting runner");
        assert!(
            waited < Duration::from_secs(20),
            "dispatched, not timed out ({waited:?})"
        );
        assert_eq!(assignment.stage.name, "ci");
        let clone = assignment.clone.as_ref().expect("a clone");
        assert_eq!(
            clone.url, repo.clone_url,
            "the registered clone URL, never the payload's"
        );
        assert_eq!(clone.commit, sha);

        assert_eq!(
            runner
                .step(&assignment, "clone", StepState::Running, None)
                .await,
            204
        );
        assert_eq!(
            runner.logs(&assignment, "clone", 1, &["cloning"]).await,
            204
        );
        assert_eq!(
            runner
                .step(&assignment, "clone", StepState::Success, Some(0))
                .await,
            204
        );
        assert_eq!(
            runner
                .step(&assignment, "test", StepState::Running, None)
                .await,
            204
        );
        assert_eq!(
            runner
                .logs(&assignment, "test", 1, &["+ echo test", "test"])
                .await,
            204
        );
        assert_eq!(
            runner
                .logs(&assignment, "test", 3, &["\u{1b}[31mred\u{1b}[0m"])
                .await,
            204
        );
        assert_eq!(
            runner.logs(&assignment, "nope", 1, &["x"]).await,
            400,
            "an unknown step"
        );
        assert_eq!(
            runner.logs(&assignment, "test", u64::MAX, &["x"]).await,
            400,
            "a line numbered beyond any log"
        );
        assert_eq!(
            runner
                .step(&assignment, "test", StepState::Failure, Some(2))
                .await,
            204
        );
        assert_eq!(runner.done(&assignment, StepState::Failure).await, 204);
        assert_eq!(
            runner.done(&assignment, StepState::Success).await,
            409,
            "a stage ends once"
        );

        let build = server.wait_finished("app", 1).await;
        assert_eq!(build["status"], "failure");
        let steps = &build["stages"][0]["steps"];
        assert_eq!(steps[1]["name"], "test");
        assert_eq!(steps[1]["status"], "failure");
        assert_eq!(steps[1]["exit_code"], 2);
        let log = server
            .api(
                reqwest::Method::GET,
                "/repos/acme/app/builds/1/logs/1/2",
                None,
            )
            .await
            .text()
            .await
            .expect("log");
        assert_eq!(log, "+ echo test\ntest\n\u{1b}[31mred\u{1b}[0m\n");
        let runners = server.get_json("/runners").await;
        assert_eq!(runners[0]["name"], "r1");
        server.stop().await;
    }

    pub async fn the_runner_secret_is_required(db: &str) {
        let server = TestServer::start(db).await;
        let response = server
            .http
            .post(format!("{}{}", server.url, gantry_proto::path::REQUEST))
            .bearer_auth("wrong")
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), 401);
        assert!(response.text().await.expect("body").contains("--secret"));
        let response = server
            .http
            .post(format!(
                "{}{}",
                server.url,
                gantry_proto::path::heartbeat(1)
            ))
            .json(&Heartbeat { epoch: 1 })
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), 401);
        server.stop().await;
    }

    pub async fn a_cancel_reaches_a_watching_runner(db: &str) {
        let server = TestServer::start(db).await;
        let (_git, _sha) = server.push_app().await;
        let (runner, assignment) = server.claim("r1").await;
        assert_eq!(
            runner
                .step(&assignment, "clone", StepState::Running, None)
                .await,
            204
        );
        let watching = {
            let assignment = assignment.clone();
            tokio::spawn(async move {
                let status = runner.watch(&assignment).await;
                (status, Instant::now(), runner)
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = Instant::now();
        let response = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/builds/1/cancel",
                None,
            )
            .await;
        assert_eq!(response.status(), 200);
        let (status, answered, runner) = watching.await.expect("task");
        assert!(status.cancelled);
        assert!(
            answered.duration_since(asked) < Duration::from_secs(1),
            "within a second"
        );
        assert_eq!(
            runner
                .step(&assignment, "clone", StepState::Killed, Some(137))
                .await,
            204
        );
        assert_eq!(runner.done(&assignment, StepState::Killed).await, 204);
        let build = server.wait_finished("app", 1).await;
        assert_eq!(build["status"], "killed");
        let again = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/builds/1/cancel",
                None,
            )
            .await;
        assert_eq!(again.status(), 409);
        server.stop().await;
    }

    pub async fn a_runner_that_stops_heartbeating_loses_its_stage(db: &str) {
        let server = TestServer::start_with(db, |config| {
            config.lease = Duration::from_millis(600);
            config.reap_every = Duration::from_millis(100);
        })
        .await;
        let (_git, _sha) = server.push_app().await;
        let runner = server.runner("r1");
        // Claimed, nothing started, lease lost: back to the queue.
        let first = runner
            .request(Duration::from_secs(10))
            .await
            .expect("a stage");
        let second = runner
            .request(Duration::from_secs(10))
            .await
            .expect("re-queued after the lease expired");
        assert_eq!(second.lease.stage, first.lease.stage);
        assert_ne!(second.lease.epoch, first.lease.epoch);
        assert_eq!(
            runner.step(&first, "clone", StepState::Running, None).await,
            409,
            "a stale epoch is refused"
        );
        // A step started, then silence: the stage ends in error, saying why.
        assert_eq!(
            runner
                .step(&second, "clone", StepState::Running, None)
                .await,
            204
        );
        assert_eq!(
            runner
                .logs(&second, "clone", 1, &["before the runner died"])
                .await,
            204
        );
        let build = server.wait_finished("app", 1).await;
        assert_eq!(build["status"], "error");
        let stage = &build["stages"][0];
        assert!(
            stage["error"]
                .as_str()
                .unwrap_or("")
                .contains("stopped heartbeating"),
            "{stage}"
        );
        assert_eq!(stage["steps"][0]["status"], "error");
        assert_eq!(stage["steps"][1]["status"], "skipped");
        let log = server
            .api(
                reqwest::Method::GET,
                "/repos/acme/app/builds/1/logs/1/1",
                None,
            )
            .await
            .text()
            .await
            .expect("log");
        assert_eq!(
            log, "before the runner died\n",
            "the logs it had received are kept"
        );
        assert_eq!(runner.logs(&second, "clone", 2, &["too late"]).await, 409);
        server.stop().await;
    }

    pub async fn a_stage_its_runner_confirmed_is_never_handed_out_again(db: &str) {
        let server = TestServer::start_with(db, |config| {
            config.lease = Duration::from_millis(600);
            config.reap_every = Duration::from_millis(100);
        })
        .await;
        let (_git, _sha) = server.push_app().await;
        let (runner, assignment) = server.claim("r1").await;
        // The runner confirms (its first heartbeat) and dies before it reports a step: the
        // step may have started, so the stage errors rather than run again elsewhere.
        let beat = runner
            .post(
                &gantry_proto::path::heartbeat(assignment.lease.stage),
                &Heartbeat {
                    epoch: assignment.lease.epoch,
                },
            )
            .await;
        assert_eq!(beat.status(), 200);
        let build = server.wait_finished("app", 1).await;
        assert_eq!(build["status"], "error", "{build}");
        assert!(
            build["stages"][0]["error"]
                .as_str()
                .unwrap_or("")
                .contains("stopped heartbeating"),
            "{build}"
        );
        assert!(
            server
                .runner("r2")
                .request(Duration::from_millis(500))
                .await
                .is_none(),
            "nothing is queued again"
        );
        server.stop().await;
    }

    pub async fn a_waiting_stage_says_what_no_runner_offers(db: &str) {
        let server = TestServer::start(db).await;
        let waiting = || async {
            let build = server.get_json("/repos/acme/app/builds/1").await;
            build["stages"][0]["waiting"].as_str().map(str::to_owned)
        };
        let git = GitRepo::new();
        let pipeline = "kind: pipeline\nname: ci\nnode: {gpu: \"yes\"}\nclone: {disable: true}\nsteps:\n  - name: test\n    image: busybox\n    commands: [nvidia-smi]\n";
        let sha = git.commit(&[(".gantry.yml", pipeline)], "first");
        server.add_repo("app", &git).await;
        let payload = webhook::push("acme/app", "main", &sha, "first");
        assert_eq!(server.deliver("push", "d-1", &payload).await.status(), 202);
        server.wait_build("app", 1).await;
        let none = waiting().await.expect("it waits");
        assert!(
            none.contains("no runner has asked for work lately"),
            "{none}"
        );

        // A runner without the label asks, and is not given the stage.
        let plain = server.runner("plain");
        assert!(plain.request(Duration::from_millis(200)).await.is_none());
        let why = waiting().await.expect("it waits");
        assert_eq!(
            why,
            "waiting: no runner can take it; plain (docker, linux/amd64, no labels): no label `gpu=yes`"
        );
        let page = server
            .http
            .get(format!("{}/acme/app/1", server.url))
            .send()
            .await
            .expect("the page")
            .text()
            .await
            .expect("html");
        assert!(
            page.contains("no label `gpu=yes`"),
            "the build page says it too"
        );

        // One with the label takes it: nothing waits any more.
        let mut gpu = server.runner("gpu");
        gpu.labels.insert("gpu".into(), "yes".into());
        assert!(gpu.request(Duration::from_secs(5)).await.is_some());
        assert_eq!(waiting().await, None);
        server.stop().await;
    }

    /// Drone's `platform: {arch: arm64}` beside an amd64 pipeline: the amd64 runner takes
    /// only its own, the arm64 stage waits saying why, and an arm64 runner takes it.
    pub async fn an_arm64_pipeline_runs_only_on_an_arm64_runner(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let pipeline = "kind: pipeline\nname: amd64\nclone: {disable: true}\nsteps:\n  - name: t\n    image: busybox\n    commands: [uname -m]\n---\nkind: pipeline\nname: arm64\nplatform: {os: linux, arch: arm64}\nclone: {disable: true}\nsteps:\n  - name: t\n    image: busybox\n    commands: [uname -m]\n";
        let sha = git.commit(&[(".gantry.yml", pipeline)], "first");
        server.add_repo("app", &git).await;
        let payload = webhook::push("acme/app", "main", &sha, "first");
        assert_eq!(server.deliver("push", "d-1", &payload).await.status(), 202);
        server.wait_build("app", 1).await;

        let amd = server.runner("amd");
        let first = amd
            .request(Duration::from_secs(5))
            .await
            .expect("the amd64 stage");
        assert_eq!(first.stage.name, "amd64");
        assert!(
            amd.request(Duration::from_millis(300)).await.is_none(),
            "the arm64 stage is never given to an amd64 runner"
        );
        let build = server.get_json("/repos/acme/app/builds/1").await;
        let arm_stage = build["stages"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "arm64"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            arm_stage["waiting"],
            "waiting: no runner can take it; amd (docker, linux/amd64, no labels): it is linux/amd64, not linux/arm64",
            "{build}"
        );

        let mut arm = server.runner("arm");
        arm.platform = "linux/arm64".into();
        let second = arm
            .request(Duration::from_secs(5))
            .await
            .expect("the arm64 runner takes it");
        assert_eq!(second.stage.name, "arm64");
        server.stop().await;
    }

    pub async fn a_delivery_accepted_before_a_crash_is_built_after_the_restart(db: &str) {
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PIPELINE)], "first");
        // The first server stored the delivery and died before processing it.
        let first = TestServer::start(db).await;
        let repo = first.add_repo("app", &git).await;
        let other = first.add_repo("other", &git).await.id;
        first.stop().await;
        let trigger = serde_json::json!({
            "event": "push", "action": null, "reference": "refs/heads/main", "branch": "main",
            "tag": null, "commit": sha, "before": null, "message": "first", "author": "octocat",
            "author_email": "", "sender": "octocat", "pull_request": null,
            "pull_request_title": null, "pull_request_labels": [], "target_branch": null,
            "fork": false, "changed_files": []
        });
        let payload = serde_json::to_vec(&trigger).expect("json");
        let store = gantry_store::Store::open(db).await.expect("opens");
        store
            .record_delivery(&NewDelivery {
                delivery_id: "before-crash",
                event: "push",
                repo_id: Some(repo.id),
                state: DeliveryState::Pending,
                outcome: "",
                payload: Some(&payload),
            })
            .await
            .expect("records");
        // Another one (of another repository) killed the server every time it was taken up:
        // the next try gives it up and says so in an errored build, instead of dying again.
        store
            .record_delivery(&NewDelivery {
                delivery_id: "kills-servers",
                event: "push",
                repo_id: Some(other),
                state: DeliveryState::Pending,
                outcome: "",
                payload: Some(&payload),
            })
            .await
            .expect("records");
        let mut held = Vec::new();
        for _ in 0..6 {
            let taken = store
                .claim_delivery(gantry_store::now_ms(), gantry_store::now_ms() + 60_000)
                .await
                .expect("claims")
                .expect("one is due");
            held.push(taken);
            // A dead server's claim runs out.
            let taken = held.last().expect("just taken");
            if taken.delivery_id == "kills-servers" {
                store
                    .release_delivery(taken.id, taken.claim_epoch, 0)
                    .await
                    .expect("lets go");
            }
        }
        assert_eq!(
            held.iter()
                .filter(|d| d.delivery_id == "kills-servers")
                .map(|d| d.attempts)
                .max(),
            Some(5)
        );
        for taken in held.iter().filter(|d| d.delivery_id == "before-crash") {
            store
                .release_delivery(taken.id, taken.claim_epoch, 0)
                .await
                .expect("lets go");
        }
        let second = TestServer::start(db).await;
        let build = second.wait_build("app", 1).await;
        assert_eq!(build["commit"], sha.as_str());
        let given_up = second.wait_finished("other", 1).await;
        assert_eq!(given_up["status"], "error", "{given_up:#}");
        assert!(
            given_up["error"]
                .as_str()
                .unwrap_or_default()
                .contains("gave up on this webhook delivery (kills-servers) after 5 tries"),
            "{given_up:#}"
        );
        let delivery = second
            .store
            .delivery("before-crash")
            .await
            .expect("reads")
            .expect("kept");
        assert_eq!(delivery.state, DeliveryState::Processed);
        second.stop().await;
    }
}

/// Two servers on one PostgreSQL database: a runner waiting on one gets a stage queued
/// through the other, woken by `NOTIFY` rather than by its next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_on_another_server_is_woken_through_postgres() {
    let db = gantry_test_support::postgres_database().await;
    let front = TestServer::start(&db).await;
    let back = TestServer::start(&db).await;
    let git = GitRepo::new();
    let sha = git.commit(&[(".gantry.yml", PIPELINE)], "first");
    front.add_repo("app", &git).await;
    let runner = back.runner("r-back");
    let waiting = tokio::spawn(async move { runner.request(Duration::from_secs(25)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    assert_eq!(
        front
            .deliver("push", "d-1", &webhook::push("acme/app", "main", &sha, "x"))
            .await
            .status(),
        202
    );
    let assignment = waiting
        .await
        .expect("task")
        .expect("woken before its poll timed out");
    assert_eq!(assignment.stage.name, "ci");
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "{:?}",
        sent.elapsed()
    );
    front.stop().await;
    back.stop().await;
}
