//! Environments through a server, on both databases: a push to `feature/x` deploys
//! `review/feature-x` (its stage is given the environment's variables), the branch's
//! deletion runs `teardown` once from the deployed commit however often it is delivered,
//! and a writer stops an environment without `on_stop` from the API, once. A protected
//! environment holds its deployments for its approvers, keeps them to its branches, keeps its
//! secrets from other stages, and an earlier deployment is redeployed from its own commit.

use gantry_test_support::{GitRepo, webhook};
use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both;
use crate::support::TestServer;

on_both!(
    a_branchs_review_app_is_deployed_and_torn_down_once,
    a_closed_pull_request_and_auto_stop_in_stop_environments,
    a_protected_environment_waits_for_its_approvers_and_redeploys,
    a_newer_push_supersedes_a_deployment_still_waiting,
);

const PRODUCTION: &str = "\
kind: pipeline
name: test
steps:
  - name: unit
    image: busybox
    environment:
      KEY: {from_secret: prod_key}
    commands: [true]
---
kind: pipeline
name: production
depends_on: [test]
deploy: {environment: production, url: https://app.example.com}
steps:
  - name: ship
    image: busybox
    environment:
      KEY: {from_secret: prod_key}
    commands: [true]
";

/// The stage of build `number` named `name`, as the API shows it.
async fn stage_of(server: &TestServer, number: u64, name: &str) -> Value {
    let build = server.wait_build("app", number).await;
    build["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("build #{number} has stage {name}: {build}"))
}

/// Waits until stage `name` of build `number` is `status`.
async fn wait_stage(server: &TestServer, number: u64, name: &str, status: &str) -> Value {
    let mut stage = Value::Null;
    for _ in 0..200 {
        stage = stage_of(server, number, name).await;
        if stage["status"] == status {
            return stage;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("stage {name} of #{number} never became {status}: {stage}");
}

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

/// The holder of `token` approves or declines stage `stage` of build `number`.
async fn decide(
    server: &TestServer,
    token: &str,
    (number, stage): (u64, u64),
    decision: &str,
) -> reqwest::Response {
    server
        .api_as(
            Some(token),
            Method::POST,
            &format!("/repos/acme/app/builds/{number}/stages/{stage}/{decision}"),
            None,
        )
        .await
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

    pub async fn a_protected_environment_waits_for_its_approvers_and_redeploys(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let first = git.commit(&[(".gantry.yml", PRODUCTION)], "first");
        server.add_repo("app", &git).await;
        let alice = server.user_with_token("alice").await;
        let bob = server.user_with_token("bob").await;
        server.set_role("app", "alice", "read").await;
        server.set_role("app", "bob", "write").await;
        let rule = server
            .api(
                Method::PUT,
                "/repos/acme/app/environments/protected",
                Some(
                    json!({"pattern": "production", "approvers": ["alice"], "branches": ["main"]}),
                ),
            )
            .await;
        assert_eq!(rule.status(), 200);
        let secret = server
            .api(
                Method::POST,
                "/repos/acme/app/secrets",
                Some(json!({"name": "prod_key", "value": "s3cret-prod", "environment": "production"})),
            )
            .await;
        assert_eq!(secret.status(), 201);

        // From another branch: production is not deployed to, and says why.
        assert_eq!(server.push_to("feature/x", &first, "d-1").await, 202);
        let skipped = stage_of(&server, 1, "production").await;
        assert_eq!(skipped["status"], "skipped");
        assert_eq!(
            skipped["error"],
            "environment `production` is protected: only branches `main` deploy to it, not `feature/x`"
        );
        let (runner, test) = server.claim("r1").await;
        assert_eq!(test.stage.name, "test");
        runner.pass(&test).await;
        server.wait_finished("app", 1).await;

        // From main: the deployment waits for alice, after its tests.
        assert_eq!(server.push_to("main", &first, "d-2").await, 202);
        let (runner, test) = server.claim("r1").await;
        assert_eq!(test.stage.name, "test");
        assert!(
            !test.secrets.contains_key("prod_key"),
            "only the deployment gets it"
        );
        assert!(
            test.withheld_secrets["prod_key"].contains("kept for environment `production`"),
            "{:?}",
            test.withheld_secrets
        );
        runner.pass(&test).await;
        let held = wait_stage(&server, 2, "production", "blocked").await;
        assert_eq!(
            held["waiting"],
            "waiting for approval by alice to deploy to environment `production` (Approve on the build page, or `gantry env approve`)"
        );
        assert_eq!(held["deploy"]["environment"], "production");
        assert_eq!(held["deploy"]["url"], "https://app.example.com");
        assert_eq!(
            environment(&server, "production").await["state"],
            "deploying"
        );
        assert!(
            server.nothing_to_claim("r1").await,
            "nothing runs before the approval"
        );
        // bob may write to the repository, but is not an approver; the stage is numbered 2.
        let refused = decide(&server, &bob, (2, 2), "approve").await;
        assert_eq!(refused.status(), 403);
        let refused = refused.text().await.expect("body");
        assert!(
            refused.contains(
                "only alice may approve or decline deployments to environment `production`"
            ),
            "{refused}"
        );
        let approved = decide(&server, &alice, (2, 2), "approve").await;
        assert_eq!(approved.status(), 200);
        assert_eq!(
            decide(&server, &alice, (2, 2), "approve").await.status(),
            409,
            "approved once"
        );
        let (runner, ship) = server.claim("r1").await;
        assert_eq!(ship.stage.name, "production");
        assert_eq!(ship.secrets["prod_key"], "s3cret-prod");
        runner.pass(&ship).await;
        let done = server.wait_finished("app", 2).await;
        assert_eq!(done["status"], "success");
        let shipped = stage_of(&server, 2, "production").await;
        assert_eq!(shipped["approval"]["decided_by"], "alice");
        let production = wait_state(&server, "production", "available").await;
        assert_eq!(production["deployments"][0]["commit"], first.as_str());

        // A second commit is approved and deployed; a third is declined.
        let second = git.commit(&[("README", "two")], "second");
        assert_eq!(server.push_to("main", &second, "d-3").await, 202);
        let (runner, test) = server.claim("r1").await;
        runner.pass(&test).await;
        wait_stage(&server, 3, "production", "blocked").await;
        assert_eq!(
            decide(&server, &alice, (3, 2), "approve").await.status(),
            200
        );
        let (runner, ship) = server.claim("r1").await;
        runner.pass(&ship).await;
        server.wait_finished("app", 3).await;
        let third = git.commit(&[("README", "three")], "third");
        assert_eq!(server.push_to("main", &third, "d-4").await, 202);
        let (runner, test) = server.claim("r1").await;
        runner.pass(&test).await;
        wait_stage(&server, 4, "production", "blocked").await;
        assert_eq!(
            decide(&server, &alice, (4, 2), "decline").await.status(),
            200
        );
        let declined = server.wait_finished("app", 4).await;
        assert_eq!(declined["status"], "declined");
        let stage = stage_of(&server, 4, "production").await;
        assert_eq!(stage["status"], "declined");
        assert_eq!(stage["error"], "declined by alice");
        let production = environment(&server, "production").await;
        assert_eq!(production["state"], "available", "{production}");
        assert_eq!(production["deployments"][0]["status"], "declined");
        assert_eq!(production["deployments"][1]["commit"], second.as_str());

        // Redeploy the first deployment (a rollback): its commit, only the deployment, and
        // still for alice to approve.
        let readers_may_not = server
            .api_as(
                Some(&alice),
                Method::POST,
                "/repos/acme/app/environments/redeploy",
                Some(json!({"name": "production", "build": 2})),
            )
            .await;
        assert_eq!(readers_may_not.status(), 403, "redeploying needs write");
        let declined_one = server
            .api(
                Method::POST,
                "/repos/acme/app/environments/redeploy",
                Some(json!({"name": "production", "build": 4})),
            )
            .await;
        assert_eq!(
            declined_one.status(),
            409,
            "only a deployment that succeeded"
        );
        let redeployed = server
            .api_as(
                Some(&bob),
                Method::POST,
                "/repos/acme/app/environments/redeploy",
                Some(json!({"name": "production", "build": 2})),
            )
            .await;
        assert_eq!(redeployed.status(), 201);
        let redeployed: Value = redeployed.json().await.expect("json");
        assert_eq!(redeployed["number"], 5);
        assert_eq!(redeployed["commit"], first.as_str());
        let test = stage_of(&server, 5, "test").await;
        assert_eq!(test["status"], "skipped");
        assert_eq!(
            test["error"],
            "this build redeploys environment `production`: only `production` runs again"
        );
        // Its tests passed in build 2; the deployment is all that runs again.
        wait_stage(&server, 5, "production", "blocked").await;
        assert_eq!(
            decide(&server, &alice, (5, 2), "approve").await.status(),
            200
        );
        let (runner, ship) = server.claim("r1").await;
        assert_eq!(ship.stage.name, "production");
        runner.pass(&ship).await;
        server.wait_finished("app", 5).await;
        let production = wait_state(&server, "production", "available").await;
        assert_eq!(production["deployments"][0]["build"], 5);
        assert_eq!(production["deployments"][0]["commit"], first.as_str());

        // bob may stop environments, but not this protected one.
        let stop = server
            .api_as(
                Some(&bob),
                Method::POST,
                "/repos/acme/app/environments/stop",
                Some(json!({"name": "production"})),
            )
            .await;
        assert_eq!(stop.status(), 403);
        let refused = stop.text().await.expect("body");
        assert!(
            refused
                .contains("environment `production` is protected: only alice may stop it by hand"),
            "{refused}"
        );

        let metrics = server
            .http
            .get(format!("{}/metrics", server.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            metrics.contains("gantry_environments{state=\"available\"} 1"),
            "{metrics}"
        );
    }

    pub async fn a_newer_push_supersedes_a_deployment_still_waiting(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let first = git.commit(&[(".gantry.yml", PIPELINES)], "first");
        server.add_repo("app", &git).await;
        assert_eq!(server.push_to("feature/x", &first, "d-1").await, 202);
        server.wait_build("app", 1).await;
        // No runner took it yet: a second push to the branch supersedes it.
        let second = git.commit(&[("README", "two")], "second");
        assert_eq!(server.push_to("feature/x", &second, "d-2").await, 202);
        server.wait_build("app", 2).await;
        let superseded = wait_stage(&server, 1, "review", "skipped").await;
        assert_eq!(
            superseded["error"],
            "superseded by build #2, a newer deployment to this environment"
        );
        assert_eq!(server.wait_finished("app", 1).await["status"], "skipped");
        let (runner, assignment) = server.claim("r1").await;
        assert_eq!(assignment.stage.name, "review");
        assert_eq!(
            assignment
                .stage
                .environment
                .get("DRONE_COMMIT_SHA")
                .map(String::as_str),
            Some(second.as_str())
        );
        runner.pass(&assignment).await;
        let review = wait_state(&server, "review/feature-x", "available").await;
        assert_eq!(review["deployments"][0]["commit"], second.as_str());
        assert_eq!(review["deployments"][1]["status"], "skipped");
    }
}
