//! The JSON API: tokens for what changes state, repositories, manual builds with
//! parameters, restarts, an invalid pipeline file's errors, and live logs over SSE.

use std::time::Duration;

use gantry_proto::StepState;
use gantry_test_support::{GitRepo, webhook};
use serde_json::json;

use crate::on_both;
use crate::support::{PIPELINE, TestServer};

on_both!(
    tokens_are_shown_once_scoped_and_revoked,
    changing_state_needs_a_token_and_repositories_round_trip,
    manual_builds_and_restarts_keep_their_context,
    an_invalid_pipeline_file_errors_the_build_with_positions,
    live_logs_stream_stored_then_new_lines_and_resume_without_gaps,
    logs_are_searched_in_bounded_windows_and_across_builds,
);

mod cases {
    use super::*;

    pub async fn tokens_are_shown_once_scoped_and_revoked(db: &str) {
        let server = TestServer::start(db).await;
        let userless = server
            .api(
                reqwest::Method::POST,
                "/tokens",
                Some(json!({"name": "ci-bot"})),
            )
            .await;
        assert_eq!(
            userless.status(),
            400,
            "a service token makes tokens for users"
        );
        assert!(userless.text().await.expect("body").contains("`user`"));
        let missing = server
            .api(
                reqwest::Method::POST,
                "/tokens",
                Some(json!({"name": "ci-bot", "user": "robot"})),
            )
            .await;
        assert_eq!(missing.status(), 404);
        assert!(
            missing
                .text()
                .await
                .expect("body")
                .contains("gantry user add robot")
        );

        let bot = server.user_with_token("robot").await;
        assert!(bot.starts_with("gantry_"));
        let listed = server.get_json("/tokens").await;
        assert!(
            listed.to_string().contains("robot's laptop") && !listed.to_string().contains(&bot),
            "listed by name, never the token: {listed}"
        );
        let (this, bot) = (&server, bot.as_str());
        let as_bot = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
            let path = path.to_owned();
            async move { this.api_as(Some(bot), method, &path, body).await }
        };
        let me = as_bot(reqwest::Method::GET, "/user", None).await;
        let me: serde_json::Value = me.json().await.expect("json");
        assert_eq!(
            (me["login"].as_str(), me["admin"].as_bool()),
            (Some("robot"), Some(false))
        );
        let own = as_bot(
            reqwest::Method::POST,
            "/tokens",
            Some(json!({"name": "second"})),
        )
        .await;
        assert_eq!(own.status(), 201, "a user makes tokens of their own");
        let own: serde_json::Value = own.json().await.expect("json");
        assert_eq!(own["user"], "robot");
        let mine = as_bot(reqwest::Method::GET, "/tokens", None).await;
        let mine: serde_json::Value = mine.json().await.expect("json");
        assert_eq!(
            mine.as_array().map(Vec::len),
            Some(2),
            "a user sees their own tokens only: {mine}"
        );
        for (method, path, body) in [
            (
                reqwest::Method::POST,
                "/tokens",
                Some(json!({"name": "escalate", "admin": true})),
            ),
            (
                reqwest::Method::POST,
                "/tokens",
                Some(json!({"name": "borrow", "user": "someone"})),
            ),
            (
                reqwest::Method::POST,
                "/orgs/acme/secrets",
                Some(json!({"name": "n", "value": "v"})),
            ),
            (reqwest::Method::GET, "/notify", None),
            (reqwest::Method::GET, "/users", None),
            (
                reqwest::Method::POST,
                "/repos",
                Some(json!({"owner": "acme", "name": "app", "clone_url": "/x"})),
            ),
        ] {
            let response = as_bot(method.clone(), path, body).await;
            assert_eq!(
                response.status(),
                403,
                "{method} {path} needs a server admin"
            );
        }
        let first = listed
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"] == "robot's laptop")
            .and_then(|t| t["id"].as_i64())
            .expect("an id");
        let admin_token = listed
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["admin"] == true)
            .and_then(|t| t["id"].as_i64())
            .expect("the first admin token");
        let not_yours = as_bot(
            reqwest::Method::DELETE,
            &format!("/tokens/{admin_token}"),
            None,
        )
        .await;
        assert_eq!(not_yours.status(), 403);
        let revoked = as_bot(reqwest::Method::DELETE, &format!("/tokens/{first}"), None).await;
        assert_eq!(revoked.status(), 204);
        let after = as_bot(reqwest::Method::GET, "/repos", None).await;
        assert_eq!(after.status(), 401, "a revoked token stops working at once");
        server.stop().await;
    }

    pub async fn changing_state_needs_a_token_and_repositories_round_trip(db: &str) {
        let server = TestServer::start(db).await;
        let anonymous = server
            .http
            .post(format!("{}/api/repos", server.url))
            .json(&json!({"owner": "acme", "name": "app", "clone_url": "/tmp/x"}))
            .send()
            .await
            .expect("answers");
        assert_eq!(anonymous.status(), 401);
        let wrong = server
            .http
            .get(format!("{}/api/repos", server.url))
            .bearer_auth("gantry_not-a-token")
            .send()
            .await
            .expect("answers");
        assert_eq!(wrong.status(), 401);

        let created = server
            .api(reqwest::Method::POST, "/repos", Some(json!({"owner": "acme", "name": "app", "clone_url": "/tmp/x", "webhook_secret": "s"})))
            .await;
        assert_eq!(created.status(), 201);
        let created: serde_json::Value = created.json().await.expect("json");
        assert_eq!(created["full_name"], "acme/app");
        assert_eq!(created["has_webhook_secret"], true);
        assert!(
            created.get("webhook_secret").is_none(),
            "the secret is never returned"
        );
        let conflict = server
            .api(
                reqwest::Method::POST,
                "/repos",
                Some(json!({"owner": "acme", "name": "app", "clone_url": "/tmp/x"})),
            )
            .await;
        assert_eq!(conflict.status(), 409);
        let bad = server
            .api(
                reqwest::Method::POST,
                "/repos",
                Some(json!({"owner": "acme", "name": "app"})),
            )
            .await;
        assert_eq!(bad.status(), 400);
        assert!(bad.text().await.expect("body").contains("clone_url"));
        let bad_name = server
            .api(
                reqwest::Method::POST,
                "/repos",
                Some(json!({"owner": "acme", "name": "a b", "clone_url": "/x"})),
            )
            .await;
        assert_eq!(bad_name.status(), 400);

        let updated = server
            .api(
                reqwest::Method::PATCH,
                "/repos/acme/app",
                Some(json!({"visibility": "private", "config_path": ".ci/pipeline.yml"})),
            )
            .await;
        assert_eq!(updated.status(), 200);
        let hidden = server
            .http
            .get(format!("{}/api/repos/acme/app", server.url))
            .send()
            .await
            .expect("answers");
        assert_eq!(
            hidden.status(),
            404,
            "a private repository is not shown without a token"
        );
        let listed = server
            .http
            .get(format!("{}/api/repos", server.url))
            .send()
            .await
            .expect("answers");
        assert_eq!(
            listed.json::<serde_json::Value>().await.expect("json"),
            json!([])
        );
        let unknown_field = server
            .api(
                reqwest::Method::PATCH,
                "/repos/acme/app",
                Some(json!({"colour": "red"})),
            )
            .await;
        assert_eq!(unknown_field.status(), 400);
        assert_eq!(
            server
                .api(reqwest::Method::DELETE, "/repos/acme/app", None)
                .await
                .status(),
            204
        );
        assert_eq!(
            server
                .api(reqwest::Method::GET, "/repos/acme/app", None)
                .await
                .status(),
            404
        );
        let health = server
            .http
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .expect("answers");
        assert_eq!(health.status(), 200);
        server.stop().await;
    }

    pub async fn manual_builds_and_restarts_keep_their_context(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PIPELINE)], "first");
        server.add_repo("app", &git).await;
        let anonymous = server
            .http
            .post(format!("{}/api/repos/acme/app/builds", server.url))
            .json(&json!({}))
            .send()
            .await
            .expect("answers");
        assert_eq!(anonymous.status(), 401);
        let bad_param = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/builds",
                Some(json!({"params": {"1BAD": "x"}})),
            )
            .await;
        assert_eq!(bad_param.status(), 400);
        let missing = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/builds",
                Some(json!({"branch": "nope"})),
            )
            .await;
        assert_eq!(missing.status(), 400);
        assert!(missing.text().await.expect("body").contains("nope"));

        let created = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/builds",
                Some(json!({"branch": "main", "params": {"TARGET": "staging"}})),
            )
            .await;
        assert_eq!(created.status(), 201);
        let build: serde_json::Value = created.json().await.expect("json");
        assert_eq!(build["event"], "custom");
        assert_eq!(build["commit"], sha.as_str());
        assert_eq!(build["params"]["TARGET"], "staging");
        let (runner, assignment) = server.claim("r1").await;
        let test = assignment.stage.step("test").expect("the step");
        assert_eq!(
            assignment
                .stage
                .environment
                .get("TARGET")
                .or(test.environment.get("TARGET"))
                .map(String::as_str),
            Some("staging"),
            "parameters become environment variables"
        );
        runner.pass(&assignment).await;
        let done = server.wait_finished("app", 1).await;
        assert_eq!(done["status"], "success");

        let restarted = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/builds/1/restart",
                None,
            )
            .await;
        assert_eq!(restarted.status(), 201);
        let restarted: serde_json::Value = restarted.json().await.expect("json");
        assert_eq!(restarted["number"], 2);
        assert_eq!(restarted["parent"], 1);
        assert_eq!(restarted["commit"], sha.as_str());
        assert_eq!(restarted["params"]["TARGET"], "staging");
        let page = server.get_json("/repos/acme/app/builds?limit=1").await;
        assert_eq!(page[0]["number"], 2);
        let next = server
            .get_json("/repos/acme/app/builds?limit=1&before=2")
            .await;
        assert_eq!(next[0]["number"], 1);
        let bad_status = server
            .api(
                reqwest::Method::GET,
                "/repos/acme/app/builds?status=done",
                None,
            )
            .await;
        assert_eq!(bad_status.status(), 400);
        server.stop().await;
    }

    pub async fn an_invalid_pipeline_file_errors_the_build_with_positions(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let broken = "kind: pipeline\nname: ci\nsteps:\n  - name: test\n    commands: [make]\n";
        let sha = git.commit(&[(".gantry.yml", broken)], "broken");
        server.add_repo("app", &git).await;
        server
            .deliver(
                "push",
                "d-1",
                &webhook::push("acme/app", "main", &sha, "broken"),
            )
            .await;
        let build = server.wait_finished("app", 1).await;
        assert_eq!(build["status"], "error");
        let error = build["error"].as_str().expect("a message");
        assert!(error.starts_with(".gantry.yml:4:5: error:"), "{error}");

        let nothing = git.commit(&[("README", "no pipeline")], "x");
        std::fs::remove_file(std::path::Path::new(&git.url()).join(".gantry.yml"))
            .expect("removes");
        let gone = git.commit(&[], "remove the pipeline");
        let _ = nothing;
        server
            .deliver(
                "push",
                "d-2",
                &webhook::push("acme/app", "main", &gone, "gone"),
            )
            .await;
        let build = server.wait_finished("app", 2).await;
        assert_eq!(build["status"], "error");
        assert!(
            build["error"]
                .as_str()
                .unwrap_or("")
                .contains("no pipeline file"),
            "{build}"
        );

        let unknown = GitRepo::new();
        let repo = server.add_repo("lost", &unknown).await;
        server
            .store
            .update_repo(
                repo.id,
                &gantry_store::RepoUpdate {
                    clone_url: Some("/nonexistent/repo".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("updates");
        server
            .deliver(
                "push",
                "d-3",
                &webhook::push("acme/lost", "main", &sha, "x"),
            )
            .await;
        let build = server.wait_finished("lost", 1).await;
        assert_eq!(build["status"], "error");
        assert!(
            build["error"]
                .as_str()
                .unwrap_or("")
                .contains("could not fetch"),
            "{build}"
        );
        server.stop().await;
    }

    pub async fn live_logs_stream_stored_then_new_lines_and_resume_without_gaps(db: &str) {
        let server = TestServer::start(db).await;
        let (_git, _sha) = server.push_app().await;
        let (runner, assignment) = server.claim("r1").await;
        runner
            .step(&assignment, "test", StepState::Running, None)
            .await;
        runner.logs(&assignment, "test", 1, &["one", "two"]).await;

        let url = format!("{}/api/repos/acme/app/builds/1/logs/1/2/stream", server.url);
        let mut stream = server.http.get(&url).send().await.expect("streams");
        assert_eq!(stream.headers()["content-type"], "text/event-stream");
        let mut seen = String::new();
        let mut wrote_more = false;
        while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("lines arrive")
            .expect("reads")
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("\"two\"") && !wrote_more {
                wrote_more = true;
                runner.logs(&assignment, "test", 3, &["three"]).await;
                runner
                    .step(&assignment, "test", StepState::Success, Some(0))
                    .await;
            }
            if seen.contains("event: end") {
                break;
            }
        }
        let ids: Vec<&str> = seen
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .collect();
        assert_eq!(ids, ["1", "2", "3"], "{seen}");

        // Resuming after line 1 gives 2 and 3 once each, then the end.
        let resumed = server
            .http
            .get(&url)
            .header("last-event-id", "1")
            .send()
            .await
            .expect("streams")
            .text()
            .await
            .expect("ends");
        let ids: Vec<&str> = resumed
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .collect();
        assert_eq!(ids, ["2", "3"], "{resumed}");
        assert!(resumed.contains("event: end"));
        server.stop().await;
    }

    pub async fn logs_are_searched_in_bounded_windows_and_across_builds(db: &str) {
        let server = TestServer::start(db).await;
        let (git, _) = server.push_app().await;
        let (runner, first) = server.claim("r1").await;
        runner.step(&first, "test", StepState::Running, None).await;
        runner
            .log_lines(&first, "test", (3_000, 1_000), |n| match n {
                10 => "test a ... FAILED".to_owned(),
                1_500 => "NEEDLE in the middle".to_owned(),
                2_999 => "a needle near the end".to_owned(),
                n => format!("line {n}"),
            })
            .await;
        let search = "/repos/acme/app/builds/1/logs/1/2/search";

        // Window by window: each reads at most `lines`, and says where the next starts.
        let mut windows = Vec::new();
        let mut from = Some(1);
        while let Some(at) = from {
            let window = server
                .get_json(&format!("{search}?q=needle&from={at}&lines=1000"))
                .await;
            from = window["next"].as_u64();
            windows.push((window["matches"].clone(), window["searched_to"].clone()));
        }
        assert_eq!(
            windows,
            [
                (json!([]), json!(1000)),
                (json!([1500]), json!(2000)),
                (json!([2999]), json!(3000)),
            ]
        );
        let whole = server.get_json(&format!("{search}?q=needle")).await;
        assert_eq!(whole["matches"], json!([1500, 2999]));
        assert_eq!(whole["total"], 3000);
        assert_eq!(whole["ended"], false);
        let cased = server
            .get_json(&format!("{search}?q=needle&case=true"))
            .await;
        assert_eq!(cased["matches"], json!([2999]));
        let regex = server
            .get_json(&format!(
                "{search}?regex=true&q={}",
                "%5Etest%20%5Cw%2B%20.*FAILED%24"
            ))
            .await;
        assert_eq!(regex["matches"], json!([10]));
        for (query, field) in [
            ("q=", "q"),
            ("q=(unclosed&regex=true", "q"),
            (&*format!("q={}", "x".repeat(257)), "q"),
        ] {
            let refused = server
                .api(reqwest::Method::GET, &format!("{search}?{query}"), None)
                .await;
            assert_eq!(refused.status(), 400, "{query}");
            let body: serde_json::Value = refused.json().await.expect("json");
            assert_eq!(body["field"], field, "{body}");
        }
        runner
            .step(&first, "test", StepState::Failure, Some(1))
            .await;
        runner.done(&first, StepState::Failure).await;

        // A second build on another branch that prints the needle too.
        let sha = git.commit(&[("b.txt", "b")], "second");
        server
            .deliver(
                "push",
                "d-2",
                &webhook::push("acme/app", "fix", &sha, "second"),
            )
            .await;
        let (runner, second) = server.claim("r1").await;
        runner.step(&second, "test", StepState::Running, None).await;
        runner
            .logs(&second, "test", 1, &["ok", "needle again"])
            .await;
        runner
            .step(&second, "test", StepState::Success, Some(0))
            .await;
        runner.done(&second, StepState::Success).await;
        server.wait_finished("app", 2).await;

        // Each branch's latest build, the most recently built first, in the API and the page.
        let branches = server.get_json("/repos/acme/app/branches").await;
        let latest: Vec<(String, i64)> = branches
            .as_array()
            .expect("builds")
            .iter()
            .map(|b| {
                (
                    b["branch"].as_str().unwrap_or("").to_owned(),
                    b["number"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(latest, [("fix".to_owned(), 2), ("main".to_owned(), 1)]);
        let page = server
            .http
            .get(format!("{}/acme/app/branches", server.url))
            .send()
            .await
            .expect("the branches page")
            .text()
            .await
            .expect("html");
        let fix = page.find("data-branch=\"fix\"").expect("fix's row");
        let main = page.find("data-branch=\"main\"").expect("main's row");
        assert!(fix < main, "{page}");

        let across = server
            .get_json("/repos/acme/app/logs/search?q=needle")
            .await;
        let hits: Vec<(i64, String, u64, String)> = across["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| {
                (
                    h["build"].as_i64().unwrap_or(0),
                    h["step"].as_str().unwrap_or("").to_owned(),
                    h["line"].as_u64().unwrap_or(0),
                    h["text"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            hits,
            [
                (2, "test".into(), 2, "needle again".into()),
                (1, "test".into(), 1500, "NEEDLE in the middle".into()),
                (1, "test".into(), 2999, "a needle near the end".into()),
            ],
            "newest build first"
        );
        assert_eq!(across["builds_searched"], 2);
        assert!(
            across["hits"][0]["link"]
                .as_str()
                .unwrap_or("")
                .ends_with("/acme/app/2/1/2#L2"),
            "{across}"
        );
        let main_only = server
            .get_json("/repos/acme/app/logs/search?q=needle&branch=main&last=5&since=1d")
            .await;
        assert_eq!(main_only["hits"].as_array().map(Vec::len), Some(2));
        let future = server
            .get_json("/repos/acme/app/logs/search?q=needle&since=2999-01-01")
            .await;
        assert_eq!(future["builds_searched"], 0);
        for (query, field) in [("q=x&last=0", "last"), ("q=x&since=someday", "since")] {
            let refused = server
                .api(
                    reqwest::Method::GET,
                    &format!("/repos/acme/app/logs/search?{query}"),
                    None,
                )
                .await;
            assert_eq!(refused.status(), 400, "{query}");
            let body: serde_json::Value = refused.json().await.expect("json");
            assert_eq!(body["field"], field, "{body}");
        }
        server.stop().await;
    }
}
