//! Schedules and promotion through the API: a schedule builds its branch once per tick with
//! event `cron` (on a clock the test moves), once across two servers and across a restart,
//! ticks missed while the server was down make one build; `cron run` builds now; a finished
//! build is promoted to a target with event `promote`.

use std::time::Duration;

use gantry_server::clock::Clock;
use gantry_test_support::{GitRepo, postgres_database};
use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both;
use crate::support::TestServer;

on_both!(
    a_schedule_builds_once_per_tick_and_once_after_missed_ticks,
    a_finished_build_is_promoted_to_a_target,
);

/// A cron pipeline beside a push one: a cron build runs only the first; a promotion to
/// production only the last.
const PIPELINES: &str = "\
kind: pipeline
name: nightly
trigger:
  event: [cron]
  cron: [nightly]
steps:
  - name: clean
    image: busybox
    commands: [echo $DRONE_CRON]
---
kind: pipeline
name: ci
trigger:
  event: [push, custom]
steps:
  - name: test
    image: busybox
    commands: [echo test]
---
kind: pipeline
name: deploy
trigger:
  event: [promote]
  target: [production]
steps:
  - name: ship
    image: busybox
    commands: [echo $DRONE_DEPLOY_TO]
";

fn ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("a time")
        .timestamp_millis()
}

async fn builds_of(server: &TestServer) -> Vec<Value> {
    let listed = server
        .api(Method::GET, "/repos/acme/app/builds?limit=50", None)
        .await;
    assert_eq!(listed.status(), 200);
    listed.json().await.expect("json")
}

/// Waits until the repository has `n` builds, then a while more to see that no other comes.
async fn expect_builds(server: &TestServer, n: usize, why: &str) -> Vec<Value> {
    for _ in 0..200 {
        if builds_of(server).await.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let builds = builds_of(server).await;
    assert_eq!(builds.len(), n, "{why}: {builds:#?}");
    builds
}

async fn schedule_named(server: &TestServer, name: &str) -> Value {
    let listed: Vec<Value> = server
        .api(Method::GET, "/repos/acme/app/cron", None)
        .await
        .json()
        .await
        .expect("json");
    listed
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("schedule {name} is listed"))
}

fn stage_statuses(detail: &Value) -> Vec<(String, String)> {
    detail["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_owned(),
                s["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

mod cases {
    use super::*;

    pub async fn a_schedule_builds_once_per_tick_and_once_after_missed_ticks(db: &str) {
        let clock = Clock::manual(ms("2026-12-03T09:00:00Z"));
        let config = |config: &mut gantry_server::ServerConfig| {
            config.clock = clock.clone();
            config.schedule_poll = Duration::from_millis(30);
        };
        let server = TestServer::start_with(db, config).await;
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PIPELINES)], "first");
        server.add_repo("app", &git).await;

        for (body, field) in [
            (
                json!({"name": "x", "expression": "every night"}),
                "expression",
            ),
            (
                json!({"name": "x", "expression": "@daily", "timezone": "Mars/Base"}),
                "timezone",
            ),
            (json!({"name": "a b", "expression": "@daily"}), "name"),
        ] {
            let refused = server
                .api(Method::POST, "/repos/acme/app/cron", Some(body))
                .await;
            assert_eq!(refused.status(), 400);
            let refused: Value = refused.json().await.expect("json");
            assert_eq!(refused["field"], field, "{refused}");
        }
        let added = server
            .api(
                Method::POST,
                "/repos/acme/app/cron",
                Some(json!({"name": "nightly", "expression": "0 3 * * *", "timezone": "Europe/Berlin"})),
            )
            .await;
        assert_eq!(added.status(), 201);
        let added: Value = added.json().await.expect("json");
        // 03:00 in Berlin in December is 02:00 UTC.
        assert_eq!(added["next_run_at"], ms("2026-12-04T02:00:00Z"));
        assert_eq!(added["branch"], "main", "the default branch");
        let again = server
            .api(
                Method::POST,
                "/repos/acme/app/cron",
                Some(json!({"name": "nightly", "expression": "@hourly"})),
            )
            .await;
        assert_eq!(again.status(), 409, "one name, one schedule");

        clock.set(ms("2026-12-04T01:59:00Z"));
        expect_builds(&server, 0, "not due yet").await;
        clock.set(ms("2026-12-04T02:00:05Z"));
        let builds = expect_builds(&server, 1, "the tick makes one build").await;
        assert_eq!(builds[0]["event"], "cron");
        assert_eq!(builds[0]["commit"], sha.as_str());
        assert_eq!(builds[0]["sender"], "cron:nightly");
        let detail = server.wait_build("app", 1).await;
        assert_eq!(
            stage_statuses(&detail),
            vec![
                ("nightly".to_owned(), "pending".to_owned()),
                ("ci".to_owned(), "skipped".to_owned()),
                ("deploy".to_owned(), "skipped".to_owned()),
            ],
            "the cron condition picks the pipelines"
        );
        let (runner, assignment) = server.claim("r1").await;
        let clean = assignment.stage.step("clean").expect("the step");
        assert_eq!(
            clean
                .environment
                .get("DRONE_CRON")
                .or(assignment.stage.environment.get("DRONE_CRON"))
                .map(String::as_str),
            Some("nightly")
        );
        assert_eq!(
            clean
                .environment
                .get("CI_PIPELINE_CRON")
                .or(assignment.stage.environment.get("CI_PIPELINE_CRON"))
                .map(String::as_str),
            Some("nightly")
        );
        runner.pass(&assignment).await;
        server.wait_finished("app", 1).await;
        let listed = schedule_named(&server, "nightly").await;
        assert_eq!(listed["last_build"]["number"], 1);
        assert_eq!(listed["last_build"]["status"], "success");
        assert_eq!(listed["next_run_at"], ms("2026-12-05T02:00:00Z"));

        // A run now builds at once and leaves the next tick alone.
        let run = server
            .api(Method::POST, "/repos/acme/app/cron/nightly/run", None)
            .await;
        assert_eq!(run.status(), 201);
        let run: Value = run.json().await.expect("json");
        assert_eq!(run["event"], "cron");
        assert_eq!(run["number"], 2);
        let listed = schedule_named(&server, "nightly").await;
        assert_eq!(listed["next_run_at"], ms("2026-12-05T02:00:00Z"));
        assert_eq!(listed["last_build"]["number"], 2);

        // Every server is down for three nights: one build when one comes back, and the
        // next tick counts from then.
        let token = server.token.clone();
        server.stop().await;
        clock.set(ms("2026-12-08T12:00:00Z"));
        let mut server = TestServer::start_with(db, config).await;
        server.token = token;
        let builds = expect_builds(&server, 3, "missed ticks make one build").await;
        assert_eq!(builds[0]["event"], "cron");
        let listed = schedule_named(&server, "nightly").await;
        assert_eq!(listed["next_run_at"], ms("2026-12-09T02:00:00Z"));
        assert_eq!(listed["last_build"]["number"], 3);

        // A branch that is gone: the tick makes no build, says why, and moves on.
        let gone = server
            .api(
                Method::POST,
                "/repos/acme/app/cron",
                Some(json!({"name": "old", "expression": "@hourly", "branch": "release-1"})),
            )
            .await;
        assert_eq!(gone.status(), 201);
        clock.set(ms("2026-12-08T13:00:01Z"));
        let mut failed = Value::Null;
        for _ in 0..200 {
            failed = schedule_named(&server, "old").await;
            if !failed["last_error"].is_null() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            failed["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("release-1")),
            "{failed}"
        );
        assert_eq!(failed["next_run_at"], ms("2026-12-08T14:00:00Z"));
        expect_builds(&server, 3, "a failed tick makes no build").await;

        let removed = server
            .api(Method::DELETE, "/repos/acme/app/cron/old", None)
            .await;
        assert_eq!(removed.status(), 204);
        let missing = server
            .api(Method::POST, "/repos/acme/app/cron/old/run", None)
            .await;
        assert_eq!(missing.status(), 404);
        server.stop().await;
    }

    pub async fn a_finished_build_is_promoted_to_a_target(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PIPELINES)], "first");
        server.add_repo("app", &git).await;
        let created = server
            .api(
                Method::POST,
                "/repos/acme/app/builds",
                Some(json!({"branch": "main", "params": {"LEVEL": "1"}})),
            )
            .await;
        assert_eq!(created.status(), 201);
        let early = server
            .api(
                Method::POST,
                "/repos/acme/app/builds/1/promote",
                Some(json!({"target": "production"})),
            )
            .await;
        assert_eq!(early.status(), 409, "only a finished build is promoted");
        let (runner, assignment) = server.claim("r1").await;
        runner.pass(&assignment).await;
        server.wait_finished("app", 1).await;

        let bad = server
            .api(
                Method::POST,
                "/repos/acme/app/builds/1/promote",
                Some(json!({"target": "prod; rm -rf /"})),
            )
            .await;
        assert_eq!(bad.status(), 400);
        let promoted = server
            .api(
                Method::POST,
                "/repos/acme/app/builds/1/promote",
                Some(json!({"target": "production", "params": {"LEVEL": "2", "REGION": "eu"}})),
            )
            .await;
        assert_eq!(promoted.status(), 201);
        let promoted: Value = promoted.json().await.expect("json");
        assert_eq!(promoted["event"], "promote");
        assert_eq!(promoted["deploy_to"], "production");
        assert_eq!(promoted["commit"], sha.as_str());
        assert_eq!(promoted["parent"], 1);
        assert_eq!(promoted["params"]["LEVEL"], "2", "the promotion's own win");
        assert_eq!(
            stage_statuses(&promoted),
            vec![
                ("nightly".to_owned(), "skipped".to_owned()),
                ("ci".to_owned(), "skipped".to_owned()),
                ("deploy".to_owned(), "pending".to_owned()),
            ]
        );
        let (runner, assignment) = server.claim("r1").await;
        let ship = assignment.stage.step("ship").expect("the step");
        let env = |name: &str| {
            ship.environment
                .get(name)
                .or(assignment.stage.environment.get(name))
                .cloned()
        };
        assert_eq!(env("DRONE_DEPLOY_TO").as_deref(), Some("production"));
        assert_eq!(env("REGION").as_deref(), Some("eu"));
        runner.pass(&assignment).await;
        server.wait_finished("app", 2).await;

        // To a target no pipeline deploys to: every pipeline is skipped, and it says so.
        let staging = server
            .api(
                Method::POST,
                "/repos/acme/app/builds/1/promote",
                Some(json!({"target": "staging"})),
            )
            .await;
        assert_eq!(staging.status(), 201);
        let staging: Value = staging.json().await.expect("json");
        assert_eq!(staging["status"], "skipped");
        server.stop().await;
    }
}

/// Two servers on one PostgreSQL database with one clock: a tick makes one build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_make_one_build_per_tick() {
    let url = postgres_database().await;
    let clock = Clock::manual(ms("2026-12-03T09:00:00Z"));
    let config = |config: &mut gantry_server::ServerConfig| {
        config.clock = clock.clone();
        config.schedule_poll = Duration::from_millis(10);
    };
    let a = TestServer::start_with(&url, config).await;
    let mut b = TestServer::start_with(&url, config).await;
    b.token = a.token.clone();
    let git = GitRepo::new();
    git.commit(&[(".gantry.yml", PIPELINES)], "first");
    a.add_repo("app", &git).await;
    let added = b
        .api(
            Method::POST,
            "/repos/acme/app/cron",
            Some(json!({"name": "nightly", "expression": "*/5 * * * *"})),
        )
        .await;
    assert_eq!(added.status(), 201);
    for tick in 1..=5 {
        clock.advance(Duration::from_secs(300));
        expect_builds(&a, tick, "both servers look; one builds").await;
    }
    a.stop().await;
    b.stop().await;
}
