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
            "waiting for lock `production-db`, held by a build of another repository",
            "a lock held by another repository does not name it"
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

        // Locks are their owner's: another owner's `production-db` is free while acme's is
        // held.
        let evil = GitRepo::new();
        evil.commit(&[(".gantry.yml", PIPELINES)], "first");
        server
            .store
            .create_repo(&gantry_store::NewRepo {
                owner: "evil".into(),
                name: "evil-app".into(),
                clone_url: evil.url(),
                link: String::new(),
                webhook_secret: "s".into(),
                config_path: String::new(),
                default_branch: "main".into(),
                trusted: false,
                visibility: Some(gantry_store::Visibility::Public),
                timeout_secs: 600,
                github_token: String::new(),
                fork_policy: "run".into(),
                ssh_key: String::new(),
            })
            .await
            .expect("adds another owner's repository");
        let created = server
            .api(
                Method::POST,
                "/repos/evil/evil-app/builds",
                Some(json!({"branch": "main"})),
            )
            .await;
        assert_eq!(created.status(), 201);
        let mut claimed = Vec::new();
        for runner in ["r5", "r6"] {
            let (_, assignment) = server.claim(runner).await;
            claimed.push(assignment.stage.name.clone());
        }
        claimed.sort();
        assert_eq!(claimed, ["deploy", "migrate"], "evil's lock is not acme's");
        server.stop().await;
    }
}
