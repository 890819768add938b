//! Locks and concurrency limits as a user sees them: a stage held back says which build holds
//! its lock, or that its pipeline is at its limit, in the API (the page and the CLI read the
//! same words), and runs once that ends.

use gantry_proto::StepState;
use gantry_test_support::GitRepo;
use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both;
use crate::support::TestServer;

on_both!(a_held_back_stage_says_what_holds_it);

const PIPELINES: &str = "\
kind: pipeline
name: migrate
lock: production-db
steps:
  - name: up
    image: busybox
    commands: [migrate up]
---
kind: pipeline
name: deploy
concurrency: {limit: 1}
steps:
  - name: ship
    image: busybox
    commands: [ship]
";

async fn build(server: &TestServer, repo: &str) -> Value {
    let created = server
        .api(
            Method::POST,
            &format!("/repos/acme/{repo}/builds"),
            Some(json!({"branch": "main"})),
        )
        .await;
    assert_eq!(created.status(), 201);
    created.json().await.expect("json")
}

fn waiting_of(build: &Value, stage: &str) -> String {
    build["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == stage)
        .and_then(|s| s["waiting"].as_str())
        .unwrap_or("")
        .to_owned()
}

mod cases {
    use super::*;

    pub async fn a_held_back_stage_says_what_holds_it(db: &str) {
        let server = TestServer::start(db).await;
        let (app, api) = (GitRepo::new(), GitRepo::new());
        app.commit(&[(".gantry.yml", PIPELINES)], "first");
        api.commit(&[(".gantry.yml", PIPELINES)], "first");
        server.add_repo("app", &app).await;
        server.add_repo("api", &api).await;
        build(&server, "app").await;
        let (r1, first) = server.claim("r1").await;
        let (r2, second) = server.claim("r2").await;
        let mut held = vec![first.stage.name.clone(), second.stage.name.clone()];
        held.sort();
        assert_eq!(held, ["deploy", "migrate"]);
        build(&server, "api").await;
        build(&server, "app").await;
        let (_r3, third) = server.claim("r3").await;
        assert_eq!(
            third.stage.name, "deploy",
            "api's deploy is not limited by app's"
        );
        assert!(
            server
                .runner("r4")
                .request(std::time::Duration::from_millis(300))
                .await
                .is_none(),
            "the rest wait"
        );

        let api_build = server.wait_build("api", 1).await;
        assert_eq!(
            waiting_of(&api_build, "migrate"),
            "waiting for lock `production-db`, held by acme/app #1 (stage migrate)"
        );
        let app_second = server.wait_build("app", 2).await;
        assert_eq!(
            waiting_of(&app_second, "deploy"),
            "waiting: pipeline `deploy` runs in at most 1 build(s) of acme/app at once (concurrency limit); running now: #1"
        );

        // The holder ends: the lock goes to the next in the queue.
        for (runner, assignment) in [(&r1, &first), (&r2, &second)] {
            assert_eq!(runner.done(assignment, StepState::Success).await, 204);
        }
        let (_, next) = server.claim("r4").await;
        assert_eq!(next.stage.name, "migrate");
        let api_build = server.wait_build("api", 1).await;
        assert_eq!(waiting_of(&api_build, "migrate"), "");
        server.stop().await;
    }
}
