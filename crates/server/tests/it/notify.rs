//! Notifications against receivers of the test's own: commit statuses as GitHub's API takes
//! them, chat messages in each service's format with a link to the failing step, retries on
//! a 500, the failure/recovery rules, and messages that outlive a restart; deployments on
//! GitHub with their statuses, and the environment a build deployed to in its chat message.

use std::time::Duration;

use gantry_proto::StepState;
use gantry_test_support::{GitRepo, webhook};
use serde_json::json;

use crate::on_both;
use crate::support::{DownService, PIPELINE, Receiver, TestServer};

on_both!(
    github_s_rate_limit_is_waited_out,
    a_pipeline_s_notify_block_posts_too,
    a_notify_url_in_a_secret_is_opened_when_sent,
    a_failed_build_reaches_github_and_every_chat_with_a_link_to_its_failing_step,
    chat_follows_the_failure_and_recovery_rules,
    a_waiting_message_outlives_a_dead_receiver_and_a_restart,
    a_repository_s_own_credentials_are_sealed_and_used,
    a_review_app_s_deployment_reaches_github_and_chat_and_its_stop_ends_it,
);

async fn server_for(db: &str, receiver: &Receiver) -> TestServer {
    let github = format!("{}/github", receiver.url);
    TestServer::start_with(db, move |config| {
        config.github_api = github;
        config.github_token = Some("gh-token".into());
        config.notify_retry = Duration::from_millis(50);
    })
    .await
}

async fn add_target(server: &TestServer, kind: &str, url: &str, rules: Option<&[&str]>) {
    let mut body = json!({ "kind": kind, "url": url });
    if let Some(rules) = rules {
        body["rules"] = json!(rules);
    }
    let response = server
        .api(reqwest::Method::POST, "/repos/acme/app/notify", Some(body))
        .await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
}

/// Runs the next stage to `state`, its `test` step printing `lines`.
async fn run_build(server: &TestServer, state: StepState, lines: &[&str]) {
    let (runner, assignment) = server.claim("r1").await;
    runner
        .step(&assignment, "clone", StepState::Success, Some(0))
        .await;
    runner
        .step(&assignment, "test", StepState::Running, None)
        .await;
    runner.logs(&assignment, "test", 1, lines).await;
    let exit = if state == StepState::Success { 0 } else { 1 };
    runner.step(&assignment, "test", state, Some(exit)).await;
    runner.done(&assignment, state).await;
}

mod cases {
    use super::*;

    pub async fn github_s_rate_limit_is_waited_out(db: &str) {
        let receiver = Receiver::start().await;
        // The first commit status meets a spent rate limit.
        receiver
            .rate_limit_first
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let server = server_for(db, &receiver).await;
        let (_git, sha) = server.push_app().await;
        let path = format!("/github/repos/acme/app/statuses/{sha}");
        // Two pending statuses (build and pipeline): one refused, then both accepted.
        let got = receiver.wait_for(&path, 3).await;
        assert_eq!(got.len(), 3);
        for _ in 0..100 {
            let build = server.get_json("/repos/acme/app/builds/1").await;
            let notes: Vec<serde_json::Value> = build["notifications"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if notes.len() == 2 && notes.iter().all(|n| n["state"] == "sent") {
                assert!(
                    notes.iter().any(|n| n["attempts"] == 2),
                    "one was tried twice: {notes:?}"
                );
                server.stop().await;
                receiver.stop();
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the rate-limited status was never sent");
    }

    pub async fn a_pipeline_s_notify_block_posts_too(db: &str) {
        let receiver = Receiver::start().await;
        let server = server_for(db, &receiver).await;
        let git = GitRepo::new();
        let pipeline = format!(
            "{PIPELINE}notify:\n  - kind: discord\n    url: {}/from-the-file\n  - kind: slack\n    url: {{from_secret: slack_hook}}\n",
            receiver.url
        );
        let sha = git.commit(&[(".gantry.yml", &pipeline)], "first");
        server.add_repo("app", &git).await;
        server
            .deliver(
                "push",
                "d-1",
                &webhook::push("acme/app", "main", &sha, "first"),
            )
            .await;
        run_build(&server, StepState::Failure, &["boom"]).await;
        let message = &receiver.wait_for("/from-the-file", 1).await[0].body;
        assert_eq!(message["content"], "acme/app build #1 failed on main");
        // The one whose URL is in a secret the repository lacks says so on the build.
        for _ in 0..100 {
            let build = server.get_json("/repos/acme/app/builds/1").await;
            if let Some(slack) = build["notifications"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["kind"] == "slack")
                && slack["state"] == "failed"
            {
                assert!(
                    slack["last_error"]
                        .as_str()
                        .unwrap_or("")
                        .contains("secret `slack_hook`, which the repository does not have"),
                    "{slack}"
                );
                server.stop().await;
                receiver.stop();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the secret-URL target was not reported as failed");
    }

    pub async fn a_notify_url_in_a_secret_is_opened_when_sent(db: &str) {
        let receiver = Receiver::start().await;
        let server = server_for(db, &receiver).await;
        let git = GitRepo::new();
        let pipeline = format!(
            "{PIPELINE}notify:\n  - kind: slack\n    url: {{from_secret: slack_hook}}\n  - kind: discord\n    url: {{from_secret: prod_hook}}\n"
        );
        let sha = git.commit(&[(".gantry.yml", &pipeline)], "first");
        server.add_repo("app", &git).await;
        for secret in [
            json!({"name": "slack_hook", "value": format!("{}/hidden-hook", receiver.url)}),
            // Kept for production's deployments: no notification may open it.
            json!({"name": "prod_hook", "value": format!("{}/prod-hook", receiver.url), "environment": "production"}),
        ] {
            let response = server
                .api(
                    reqwest::Method::POST,
                    "/repos/acme/app/secrets",
                    Some(secret),
                )
                .await;
            assert_eq!(response.status(), 201);
        }
        server
            .deliver(
                "push",
                "d-1",
                &webhook::push("acme/app", "main", &sha, "first"),
            )
            .await;
        run_build(&server, StepState::Failure, &["boom"]).await;
        let message = &receiver.wait_for("/hidden-hook", 1).await[0].body;
        assert_eq!(message["text"], "acme/app build #1 failed on main");
        let build = server.get_json("/repos/acme/app/builds/1").await;
        assert!(
            !build.to_string().contains("hidden-hook"),
            "the URL stays secret"
        );
        for _ in 0..100 {
            let build = server.get_json("/repos/acme/app/builds/1").await;
            if let Some(kept) = build["notifications"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["kind"] == "discord" && n["state"] == "failed")
            {
                assert!(
                    kept["last_error"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("secret `prod_hook` is kept for environment `production`"),
                    "{kept}"
                );
                assert!(receiver.at("/prod-hook").is_empty());
                server.stop().await;
                receiver.stop();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the environment's secret was opened for a notification");
    }

    pub async fn a_failed_build_reaches_github_and_every_chat_with_a_link_to_its_failing_step(
        db: &str,
    ) {
        let receiver = Receiver::start().await;
        let server = server_for(db, &receiver).await;
        let (_git, sha) = server.push_app().await;
        // Slack's receiver answers 500 once: the message is sent again.
        let flaky = Receiver::start().await;
        flaky
            .fail_first
            .store(1, std::sync::atomic::Ordering::SeqCst);
        add_target(&server, "slack", &format!("{}/slack", flaky.url), None).await;
        for (kind, path) in [
            ("mattermost", "/mm"),
            ("discord", "/discord"),
            ("teams", "/teams"),
            ("googlechat", "/gchat"),
        ] {
            add_target(&server, kind, &format!("{}{path}", receiver.url), None).await;
        }
        let refused = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/notify",
                Some(json!({"kind": "irc", "url": "http://x"})),
            )
            .await;
        assert_eq!(refused.status(), 400);
        let listed = server.get_json("/repos/acme/app/notify").await;
        assert_eq!(listed.as_array().map(Vec::len), Some(5));
        assert!(
            !listed.to_string().contains("/slack"),
            "a webhook's path is a credential: {listed}"
        );

        receiver
            .fail_first
            .store(1, std::sync::atomic::Ordering::SeqCst);
        run_build(
            &server,
            StepState::Failure,
            &[
                "compiling",
                "\u{1b}[31merror: the widget is broken\u{1b}[0m",
            ],
        )
        .await;
        let link = format!("{}/acme/app/1", server.url);
        let failing = format!("{link}/1/2");

        // Slack (after a 500 it is sent again) and Mattermost: attachments.
        let slack = flaky.wait_for("/slack", 2).await;
        assert_eq!(slack.len(), 2, "one 500, then sent again");
        assert_eq!(slack[0].body, slack[1].body);
        let mattermost = receiver.wait_for("/mm", 1).await;
        for message in [
            slack.last().expect("a message"),
            mattermost.last().expect("a message"),
        ] {
            let body = &message.body;
            assert_eq!(body["text"], "acme/app build #1 failed on main");
            let attachment = &body["attachments"][0];
            assert_eq!(attachment["title_link"], failing.as_str());
            assert_eq!(attachment["color"], "#d73a49");
            let text = attachment["text"].as_str().expect("text");
            assert!(text.contains(&format!("<{link}|Build #1>")), "{text}");
            assert!(
                text.contains(&format!("<{failing}|Failing step: ci / test>")),
                "{text}"
            );
            assert!(
                text.contains(&sha[..8]) && text.contains("first") && text.contains("Codertocat"),
                "{text}"
            );
            assert!(
                text.contains("error: the widget is broken") && !text.contains('\u{1b}'),
                "{text}"
            );
        }
        let discord = &receiver.wait_for("/discord", 1).await[0].body;
        assert_eq!(discord["embeds"][0]["url"], failing.as_str());
        assert_eq!(discord["embeds"][0]["color"], 0xd73a49);
        assert!(
            discord["embeds"][0]["description"]
                .as_str()
                .unwrap_or("")
                .contains("the widget is broken")
        );
        let teams = &receiver.wait_for("/teams", 1).await[0].body;
        assert_eq!(teams["type"], "message");
        let card = &teams["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(card["content"]["actions"][0]["url"], failing.as_str());
        let chat = &receiver.wait_for("/gchat", 1).await[0].body;
        assert!(
            chat["text"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("<{failing}|Failing step: ci / test>"))
        );

        // The commit statuses: pending at creation, then the end, per pipeline and build.
        let statuses_path = format!("/github/repos/acme/app/statuses/{sha}");
        let statuses = receiver.wait_for(&statuses_path, 4).await;
        assert!(
            statuses
                .iter()
                .all(|s| s.authorization.as_deref() == Some("Bearer gh-token"))
        );
        let seen: Vec<(String, String)> = statuses
            .iter()
            .map(|s| {
                (
                    s.body["context"].as_str().unwrap_or("").to_owned(),
                    s.body["state"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        for expected in [
            ("gantry", "pending"),
            ("gantry/ci", "pending"),
            ("gantry", "failure"),
            ("gantry/ci", "failure"),
        ] {
            assert!(
                seen.contains(&(expected.0.to_owned(), expected.1.to_owned())),
                "{seen:?}"
            );
        }
        let stage_failure = statuses
            .iter()
            .find(|s| s.body["context"] == "gantry/ci" && s.body["state"] == "failure")
            .expect("the pipeline's failure");
        assert_eq!(stage_failure.body["target_url"], failing.as_str());
        // So does the build's own: a link to a build whose step failed opens that step.
        let build_failure = statuses
            .iter()
            .find(|s| s.body["context"] == "gantry" && s.body["state"] == "failure")
            .expect("the build's failure");
        assert_eq!(build_failure.body["target_url"], failing.as_str());
        let build_pending = statuses
            .iter()
            .find(|s| s.body["context"] == "gantry" && s.body["state"] == "pending")
            .expect("the build's pending");
        assert!(
            build_pending.body["target_url"]
                .as_str()
                .is_some_and(|url| url.ends_with("/acme/app/1")),
            "{}",
            build_pending.body
        );

        // The link opens the failing step's page, with the failing line in it.
        let page = server
            .http
            .get(&failing)
            .send()
            .await
            .expect("opens")
            .text()
            .await
            .expect("html");
        assert!(page.contains("error: the widget is broken"), "{page}");

        // What was reported is on the build.
        for _ in 0..100 {
            let build = server.get_json("/repos/acme/app/builds/1").await;
            let states: Vec<&str> = build["notifications"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n["state"].as_str())
                .collect();
            if !states.is_empty() && states.iter().all(|s| *s == "sent") {
                assert_eq!(
                    build["status"], "failure",
                    "reporting never changes the result"
                );
                server.stop().await;
                receiver.stop();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("not every notification was sent");
    }

    pub async fn chat_follows_the_failure_and_recovery_rules(db: &str) {
        let receiver = Receiver::start().await;
        let server = server_for(db, &receiver).await;
        let (git, _) = server.push_app().await;
        add_target(&server, "slack", &format!("{}/chat", receiver.url), None).await;
        run_build(&server, StepState::Success, &["ok"]).await;
        server.wait_finished("app", 1).await;
        let mut n = 1;
        for (state, expected_messages) in [
            (StepState::Failure, 1),
            (StepState::Success, 2),
            (StepState::Success, 2),
        ] {
            n += 1;
            let sha = git.commit(&[("change.txt", &n.to_string())], "change");
            server
                .deliver(
                    "push",
                    &format!("d-{n}"),
                    &webhook::push("acme/app", "main", &sha, "change"),
                )
                .await;
            run_build(&server, state, &["line"]).await;
            server.wait_finished("app", n).await;
            // Let the notifier catch up before counting.
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(
                receiver.at("/chat").len(),
                expected_messages,
                "after build #{n}"
            );
        }
        let messages = receiver.at("/chat");
        assert_eq!(messages[0].body["text"], "acme/app build #2 failed on main");
        assert_eq!(
            messages[1].body["text"], "acme/app build #3 passed on main",
            "the recovery"
        );
        server.stop().await;
        receiver.stop();
    }

    pub async fn a_waiting_message_outlives_a_dead_receiver_and_a_restart(db: &str) {
        // The chat service is down: its port refuses connections.
        let down = DownService::reserve();
        let offline = Receiver::start().await;
        let first = server_for(db, &offline).await;
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PIPELINE)], "first");
        first.add_repo("app", &git).await;
        add_target(&first, "slack", &format!("{}/chat", down.url()), None).await;
        first
            .deliver(
                "push",
                "d-1",
                &webhook::push("acme/app", "main", &sha, "first"),
            )
            .await;
        run_build(&first, StepState::Failure, &["boom"]).await;
        first.wait_finished("app", 1).await;
        // It was tried and failed, and waits for its next attempt.
        for _ in 0..100 {
            let build = first.get_json("/repos/acme/app/builds/1").await;
            let chat = build["notifications"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|n| n["kind"] == "slack")
                .cloned();
            if chat
                .as_ref()
                .is_some_and(|c| c["attempts"].as_i64().unwrap_or(0) >= 1)
            {
                let chat = chat.expect("the chat message");
                assert_eq!(chat["state"], "pending");
                assert!(
                    chat["last_error"]
                        .as_str()
                        .unwrap_or("")
                        .contains("did not answer"),
                    "{chat}"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let page = first
            .http
            .get(format!("{}/acme/app/1", first.url))
            .send()
            .await
            .expect("opens")
            .text()
            .await
            .expect("html");
        assert!(
            page.contains("Reporting problems") && page.contains("retrying"),
            "the failure is visible on the build"
        );
        first.stop().await;
        // The service comes back, and so does gantry: the message arrives.
        let back = down.come_back();
        let second = server_for(db, &offline).await;
        let messages = back.wait_for("/chat", 1).await;
        assert_eq!(messages[0].body["text"], "acme/app build #1 failed on main");
        second.stop().await;
        back.stop();
        offline.stop();
    }

    pub async fn a_repository_s_own_credentials_are_sealed_and_used(db: &str) {
        let receiver = Receiver::start().await;
        let server = server_for(db, &receiver).await;
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PIPELINE)], "first");
        server.add_repo("app", &git).await;
        let updated = server
            .api(
                reqwest::Method::PATCH,
                "/repos/acme/app",
                Some(json!({"github_token": "ghp_repo_own", "webhook_secret": "rotated-secret"})),
            )
            .await;
        assert_eq!(updated.status(), 200);
        let body = updated.text().await.expect("body");
        assert!(
            !body.contains("ghp_repo_own") && !body.contains("rotated-secret"),
            "{body}"
        );
        let row = server
            .store
            .repo_by_name("acme", "app")
            .await
            .expect("reads")
            .expect("exists");
        for (column, clear) in [
            (&row.github_token, "ghp_repo_own"),
            (&row.webhook_secret, "rotated-secret"),
        ] {
            assert!(
                column.starts_with("sealed:") && !column.contains(clear),
                "sealed at rest: {column}"
            );
        }

        // The old secret no longer signs; the new one does.
        let payload = webhook::push("acme/app", "main", &sha, "first");
        assert_eq!(
            server.deliver("push", "d-old", &payload).await.status(),
            401
        );
        let body = serde_json::to_vec(&payload).expect("json");
        let signed = server
            .deliver_raw(
                "push",
                "d-new",
                body.clone(),
                Some(&webhook::signature("rotated-secret", &body)),
            )
            .await;
        assert_eq!(signed.status(), 202);

        // Commit statuses go with the repository's own token, not the server's.
        let statuses = receiver
            .wait_for(&format!("/github/repos/acme/app/statuses/{sha}"), 2)
            .await;
        assert!(
            statuses
                .iter()
                .all(|s| s.authorization.as_deref() == Some("Bearer ghp_repo_own")),
            "{statuses:?}"
        );
        server.stop().await;
        receiver.stop();
    }

    pub async fn a_review_app_s_deployment_reaches_github_and_chat_and_its_stop_ends_it(db: &str) {
        let receiver = Receiver::start().await;
        let server = server_for(db, &receiver).await;
        let git = GitRepo::new();
        let sha = git.commit(
            &[(
                ".gantry.yml",
                "kind: pipeline\nname: review\ndeploy:\n  environment: review/${CI_COMMIT_REF_SLUG}\n  url: https://${CI_COMMIT_REF_SLUG}.review.example.com\n  on_stop: teardown\nsteps:\n  - name: up\n    image: busybox\n    commands: [true]\n---\nkind: pipeline\nname: teardown\nsteps:\n  - name: down\n    image: busybox\n    commands: [true]\n",
            )],
            "first",
        );
        server.add_repo("app", &git).await;
        add_target(
            &server,
            "slack",
            &format!("{}/slack", receiver.url),
            Some(&["always"]),
        )
        .await;
        let pushed = webhook::push("acme/app", "feature/x", &sha, "first");
        assert_eq!(server.deliver("push", "d-1", &pushed).await.status(), 202);
        let (runner, assignment) = server.claim("r1").await;
        runner.pass(&assignment).await;
        server.wait_finished("app", 1).await;

        let created = receiver
            .wait_for("/github/repos/acme/app/deployments", 1)
            .await;
        assert_eq!(created.len(), 1, "one GitHub deployment per deployment");
        let created = &created[0];
        assert_eq!(created.authorization.as_deref(), Some("Bearer gh-token"));
        assert_eq!(created.body["ref"], sha.as_str());
        assert_eq!(created.body["environment"], "review/feature-x");
        assert_eq!(created.body["required_contexts"], json!([]));
        assert_eq!(created.body["production_environment"], false);
        let statuses_path = "/github/repos/acme/app/deployments/1001/statuses";
        let statuses = receiver.wait_for(statuses_path, 2).await;
        let states: Vec<&str> = statuses
            .iter()
            .map(|s| s.body["state"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(states, ["in_progress", "success"]);
        assert_eq!(
            statuses[1].body["environment_url"],
            "https://feature-x.review.example.com"
        );
        assert!(
            statuses[1].body["log_url"]
                .as_str()
                .unwrap_or_default()
                .ends_with("/acme/app/1#stage-1"),
            "{}",
            statuses[1].body
        );
        let slack = &receiver.wait_for("/slack", 1).await[0].body;
        let text = slack["attachments"][0]["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("deployed to review/feature-x (https://feature-x.review.example.com)"),
            "{slack}"
        );

        // The branch goes: its teardown runs, and GitHub's deployment becomes inactive.
        let mut deleted = webhook::fixture("push", "push_branch_delete.json");
        deleted = webhook::for_repo(deleted, "acme/app");
        deleted["ref"] = serde_json::Value::from("refs/heads/feature/x");
        assert_eq!(server.deliver("push", "d-2", &deleted).await.status(), 202);
        let (runner, assignment) = server.claim("r1").await;
        assert_eq!(assignment.stage.name, "teardown");
        runner.pass(&assignment).await;
        server.wait_finished("app", 2).await;
        let statuses = receiver.wait_for(statuses_path, 3).await;
        assert_eq!(statuses[2].body["state"], "inactive");
        assert_eq!(
            receiver.at("/github/repos/acme/app/deployments").len(),
            1,
            "a stop creates no deployment"
        );
        let slack = receiver.wait_for("/slack", 2).await;
        let text = slack[1].body["attachments"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(text.contains("stopped review/feature-x"), "{text}");
        server.stop().await;
        receiver.stop();
    }
}
