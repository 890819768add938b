//! Environments through a server, on both databases: a push to `feature/x` deploys
//! `review/feature-x` (its stage is given the environment's variables), the branch's
//! deletion runs `teardown` once from the deployed commit however often it is delivered,
//! and a writer stops an environment without `on_stop` from the API, once.

use gantry_test_support::{GitRepo, webhook};
use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both;
use crate::support::TestServer;

on_both!(
    a_branchs_review_app_is_deployed_and_torn_down_once,
    a_closed_pull_request_and_auto_stop_in_stop_environments,
);

const PULL_REQUESTS: &str = "\
kind: pipeline
name: review
deploy:
  environment: review/pr-${DRONE_PULL_REQUEST}
  on_stop: teardown
trigger:
  event: [pull_request]
  action:
    exclude: [closed]
steps:
  - name: deploy
    image: busybox
    commands: [true]
---
kind: pipeline
name: teardown
steps:
  - name: uninstall
    image: busybox
    commands: [true]
---
kind: pipeline
name: staging
deploy: {environment: staging, auto_stop_in: 1h}
trigger:
  event: [push]
steps:
  - name: ship
    image: busybox
    commands: [true]
";

/// Waits until `name` is in `state`.
async fn wait_state(server: &TestServer, name: &str, state: &str) -> Value {
    let mut found = Value::Null;
    for _ in 0..200 {
        if let Some(e) = environments(server)
            .await
            .into_iter()
            .find(|e| e["name"] == name)
        {
            found = e;
            if found["state"] == state {
                return found;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{name} never became {state}: {found}");
}

const PIPELINES: &str = "\
kind: pipeline
name: review
deploy:
  environment: review/${CI_COMMIT_REF_SLUG}
  url: https://${CI_COMMIT_REF_SLUG}.review.example.com
  on_stop: teardown
  auto_stop_in: 3d
trigger:
  event: [push]
steps:
  - name: deploy
    image: busybox
    commands: [echo $CI_ENVIRONMENT_NAME > /marker]
---
kind: pipeline
name: teardown
steps:
  - name: uninstall
    image: busybox
    commands: [echo $CI_ENVIRONMENT_NAME]
---
kind: pipeline
name: staging
deploy: {environment: staging}
trigger:
  branch: [main]
  event: [push]
steps:
  - name: ship
    image: busybox
    commands: [true]
";

async fn environments(server: &TestServer) -> Vec<Value> {
    let listed = server
        .api(Method::GET, "/repos/acme/app/environments", None)
        .await;
    assert_eq!(listed.status(), 200);
    listed.json().await.expect("json")
}

async fn environment(server: &TestServer, name: &str) -> Value {
    environments(server)
        .await
        .into_iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("environment {name} is listed"))
}

mod cases {
    use super::*;

    pub async fn a_branchs_review_app_is_deployed_and_torn_down_once(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PIPELINES)], "first");
        server.add_repo("app", &git).await;
        let pushed = server
            .deliver(
                "push",
                "d-1",
                &webhook::push("acme/app", "feature/x", &sha, "first"),
            )
            .await;
        assert_eq!(pushed.status(), 202);
        server.wait_build("app", 1).await;
        let (runner, assignment) = server.claim("r1").await;
        assert_eq!(assignment.stage.name, "review");
        let env = &assignment.stage.environment;
        assert_eq!(
            env.get("CI_ENVIRONMENT_NAME").map(String::as_str),
            Some("review/feature-x")
        );
        assert_eq!(
            env.get("CI_ENVIRONMENT_URL").map(String::as_str),
            Some("https://feature-x.review.example.com")
        );
        assert!(
            assignment
                .stage
                .locks
                .iter()
                .any(|l| l.ends_with("environment:acme/app:review/feature-x")),
            "{:?}",
            assignment.stage.locks
        );
        let review = environment(&server, "review/feature-x").await;
        assert_eq!(review["state"], "deploying", "{review}");
        runner.pass(&assignment).await;
        server.wait_finished("app", 1).await;
        let review = environment(&server, "review/feature-x").await;
        assert_eq!(review["state"], "available", "{review}");
        assert_eq!(review["branch"], "feature/x");
        assert_eq!(review["deployments"][0]["build"], 1);
        assert_eq!(review["deployments"][0]["commit"], sha.as_str());
        assert!(review["auto_stop_at"].as_i64().is_some(), "{review}");
        // The Environments page shows it, and no Stop button to a reader who may not write.
        let page = server
            .http
            .get(format!("{}/acme/app/environments", server.url))
            .send()
            .await
            .expect("the environments page")
            .text()
            .await
            .expect("html");
        assert!(
            page.contains("data-environment=\"review/feature-x\" data-state=\"available\"")
                && page.contains("https://feature-x.review.example.com")
                && page.contains("stops by itself <span class=\"env-stops\">in 3 days</span>")
                && !page.contains("class=\"danger env-stop\""),
            "{page}"
        );

        // The branch is deleted, and GitHub delivers it twice: one teardown.
        let mut deleted = webhook::fixture("push", "push_branch_delete.json");
        deleted = webhook::for_repo(deleted, "acme/app");
        deleted["ref"] = Value::from("refs/heads/feature/x");
        for delivery in ["d-2", "d-3"] {
            let response = server.deliver("push", delivery, &deleted).await;
            assert_eq!(response.status(), 202);
        }
        wait_state(&server, "review/feature-x", "stopping").await;
        let (runner, assignment) = server.claim("r1").await;
        assert_eq!(assignment.stage.name, "teardown");
        assert_eq!(
            assignment
                .stage
                .environment
                .get("CI_ENVIRONMENT_ACTION")
                .map(String::as_str),
            Some("stop")
        );
        runner.pass(&assignment).await;
        let stopped = wait_state(&server, "review/feature-x", "stopped").await;
        let stops = stopped["deployments"]
            .as_array()
            .expect("deployments")
            .iter()
            .filter(|d| d["action"] == "stop")
            .count();
        assert_eq!(stops, 1, "one teardown: {stopped}");
        // The teardown ran from the deployed commit.
        assert_eq!(stopped["deployments"][0]["commit"], sha.as_str());

        // staging has no `on_stop`: a writer's stop marks it stopped, once.
        let main = server
            .deliver(
                "push",
                "d-4",
                &webhook::push("acme/app", "main", &sha, "first"),
            )
            .await;
        assert_eq!(main.status(), 202);
        wait_state(&server, "staging", "deploying").await;
        let stop = || {
            server.api(
                Method::POST,
                "/repos/acme/app/environments/stop",
                Some(json!({"name": "staging"})),
            )
        };
        assert_eq!(stop().await.status(), 204);
        assert_eq!(stop().await.status(), 409);
        assert_eq!(environment(&server, "staging").await["state"], "stopped");
        let missing = server
            .api(
                Method::POST,
                "/repos/acme/app/environments/stop",
                Some(json!({"name": "nowhere"})),
            )
            .await;
        assert_eq!(missing.status(), 404);
    }

    pub async fn a_closed_pull_request_and_auto_stop_in_stop_environments(db: &str) {
        use gantry_server::clock::Clock;
        let start = 1_796_371_200_000; // 2026-12-04T00:00:00Z
        let clock = Clock::manual(start);
        let server = TestServer::start_with(db, |config| {
            config.clock = clock.clone();
            config.schedule_poll = std::time::Duration::from_millis(30);
        })
        .await;
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PULL_REQUESTS)], "first");
        server.add_repo("app", &git).await;
        let opened = webhook::pull_request("acme/app", 7, "feature/y", "main", &sha);
        assert_eq!(
            server
                .deliver("pull_request", "d-1", &opened)
                .await
                .status(),
            202
        );
        server.wait_build("app", 1).await;
        let (runner, assignment) = server.claim("r1").await;
        assert_eq!(assignment.stage.name, "review");
        runner.pass(&assignment).await;
        let review = wait_state(&server, "review/pr-7", "available").await;
        assert_eq!(review["pull_request"], 7);

        // Closed: its environment is torn down, and the closing itself deploys nothing.
        let mut closed = opened.clone();
        closed["action"] = Value::from("closed");
        assert_eq!(
            server
                .deliver("pull_request", "d-2", &closed)
                .await
                .status(),
            202
        );
        wait_state(&server, "review/pr-7", "stopping").await;
        let (runner, assignment) = server.claim("r1").await;
        assert_eq!(assignment.stage.name, "teardown");
        runner.pass(&assignment).await;
        wait_state(&server, "review/pr-7", "stopped").await;

        // staging stops by itself an hour after its deployment, by the server's clock.
        let pushed = webhook::push("acme/app", "main", &sha, "first");
        assert_eq!(server.deliver("push", "d-3", &pushed).await.status(), 202);
        let staging = wait_state(&server, "staging", "deploying").await;
        assert_eq!(staging["auto_stop_at"], start + 3_600_000, "{staging}");
        clock.set(start + 3_500_000);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(environment(&server, "staging").await["state"], "deploying");
        clock.set(start + 3_700_000);
        let stopped = wait_state(&server, "staging", "stopped").await;
        assert!(stopped["auto_stop_at"].is_null(), "{stopped}");
    }
}
