//! Secrets: sealed at rest, never in an API response, given to a runner only for the stages
//! that reference them, and withheld (with the reason) from pull requests from forks.

use std::time::Duration;

use gantry_store::SecretScope;
use gantry_test_support::{GitRepo, webhook};
use serde_json::json;

use crate::on_both;
use crate::support::TestServer;

on_both!(
    fork_pull_requests_wait_for_approval_when_the_repository_asks,
    secrets_reach_only_the_stages_that_use_them_and_never_the_api,
    pull_requests_from_forks_get_only_the_secrets_that_allow_them,
    image_pull_secrets_become_registry_logins_but_not_for_forks,
    registry_entries_reach_builds_of_their_scope_most_particular_first,
);

const PULLS_PRIVATE_IMAGES: &str = "\
kind: pipeline
name: ci
clone: {disable: true}
image_pull_secrets: [docker_login, not_a_config]
steps:
  - name: test
    image: 127.0.0.1:5055/gantry/busybox:latest
    commands: [true]
";

const USES_SECRETS: &str = "\
kind: pipeline
name: deploy
clone: {disable: true}
steps:
  - name: ship
    image: busybox
    environment:
      TOKEN: {from_secret: deploy_token}
      REGISTRY: {from_secret: registry}
      PUBLIC: {from_secret: public_one}
    commands: [ship]
";

async fn add(server: &TestServer, path: &str, name: &str, value: &str, allow: bool) {
    let response = server
        .api(
            reqwest::Method::POST,
            path,
            Some(json!({"name": name, "value": value, "allow_pull_requests": allow})),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body = response.text().await.expect("body");
    assert!(!body.contains(value), "the value is never echoed: {body}");
}

async fn setup(db: &str) -> (TestServer, GitRepo, String) {
    let server = TestServer::start(db).await;
    let git = GitRepo::new();
    let sha = git.commit(&[(".gantry.yml", USES_SECRETS)], "deploy");
    server.add_repo("app", &git).await;
    add(
        &server,
        "/repos/acme/app/secrets",
        "deploy_token",
        "tok-7f3a9c",
        false,
    )
    .await;
    add(
        &server,
        "/repos/acme/app/secrets",
        "public_one",
        "pub-1234",
        true,
    )
    .await;
    add(
        &server,
        "/repos/acme/app/secrets",
        "unused",
        "never-sent",
        false,
    )
    .await;
    add(
        &server,
        "/orgs/acme/secrets",
        "registry",
        "reg-pass-55",
        false,
    )
    .await;
    (server, git, sha)
}

/// Pull request #9 of acme/app from a fork (`stranger/app`), delivered; build `number` of it.
async fn fork_pull_request(server: &TestServer, git: &GitRepo, number: u64) -> serde_json::Value {
    let sha = git.commit(&[("fork-change.txt", "x")], "from a fork");
    git.set_ref("refs/pull/9/head", &sha);
    let mut pr = webhook::pull_request("acme/app", 9, "patch-1", "main", &sha);
    pr["pull_request"]["head"]["repo"]["full_name"] = "stranger/app".into();
    assert_eq!(
        server.deliver("pull_request", "pr-9", &pr).await.status(),
        202
    );
    server.wait_build("app", number).await
}

mod cases {
    use super::*;

    pub async fn fork_pull_requests_wait_for_approval_when_the_repository_asks(db: &str) {
        let (server, git, _) = setup(db).await;
        let bad = server
            .api(
                reqwest::Method::PATCH,
                "/repos/acme/app",
                Some(json!({"fork_policy": "sometimes"})),
            )
            .await;
        assert_eq!(bad.status(), 400);
        let set = server
            .api(
                reqwest::Method::PATCH,
                "/repos/acme/app",
                Some(json!({"fork_policy": "approve"})),
            )
            .await;
        assert_eq!(set.status(), 200);
        for n in [11u64, 12] {
            let sha = git.commit(&[("fork.txt", &n.to_string())], "from a fork");
            git.set_ref(&format!("refs/pull/{n}/head"), &sha);
            let mut pr = webhook::pull_request("acme/app", n, "patch", "main", &sha);
            pr["pull_request"]["head"]["repo"]["full_name"] = "stranger/app".into();
            assert_eq!(
                server
                    .deliver("pull_request", &format!("pr-{n}"), &pr)
                    .await
                    .status(),
                202
            );
        }
        let first = server.wait_build("app", 1).await;
        assert_eq!(first["status"], "blocked");
        server.wait_build("app", 2).await;
        let runner = server.runner("r1");
        assert!(
            runner.request(Duration::from_millis(300)).await.is_none(),
            "nothing runs before approval"
        );
        let approved = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/builds/1/approve",
                None,
            )
            .await;
        assert_eq!(approved.status(), 200);
        let assignment = runner
            .request(Duration::from_secs(10))
            .await
            .expect("queued once approved");
        assert_eq!(assignment.stage.name, "deploy");
        let again = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/builds/1/approve",
                None,
            )
            .await;
        assert_eq!(again.status(), 409, "only a blocked build is approved");
        let declined = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/builds/2/decline",
                None,
            )
            .await;
        assert_eq!(declined.status(), 200);
        let second = server.wait_finished("app", 2).await;
        assert_eq!(second["status"], "declined");
        assert_eq!(second["stages"][0]["status"], "skipped");
        assert!(
            runner.request(Duration::from_millis(300)).await.is_none(),
            "a declined build never runs"
        );
        server.stop().await;
    }

    pub async fn secrets_reach_only_the_stages_that_use_them_and_never_the_api(db: &str) {
        let (server, _git, sha) = setup(db).await;
        let listed = server.get_json("/repos/acme/app/secrets").await;
        let names: Vec<&str> = listed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert_eq!(names, ["deploy_token", "public_one", "unused"]);
        let text = listed.to_string();
        assert!(
            !text.contains("tok-7f3a9c") && !text.contains("pub-1234"),
            "{text}"
        );
        let bad = server
            .api(
                reqwest::Method::POST,
                "/repos/acme/app/secrets",
                Some(json!({"name": "a b", "value": "x"})),
            )
            .await;
        assert_eq!(bad.status(), 400);
        // Sealed at rest.
        let repo = server
            .store
            .repo_by_name("acme", "app")
            .await
            .expect("reads")
            .expect("exists");
        for sealed in server
            .store
            .sealed_secrets(repo.id, "acme")
            .await
            .expect("reads")
        {
            assert!(!String::from_utf8_lossy(&sealed.sealed).contains("tok-7f3a9c"));
        }
        assert_eq!(
            server
                .store
                .secrets(&SecretScope::Owner("acme".into()))
                .await
                .expect("reads")
                .len(),
            1
        );

        server
            .deliver(
                "push",
                "d-1",
                &webhook::push("acme/app", "main", &sha, "deploy"),
            )
            .await;
        let (_runner, assignment) = server.claim("r1").await;
        assert_eq!(
            assignment.secrets.get("deploy_token").map(String::as_str),
            Some("tok-7f3a9c")
        );
        assert_eq!(
            assignment.secrets.get("registry").map(String::as_str),
            Some("reg-pass-55"),
            "the owner's secret"
        );
        assert_eq!(
            assignment.secrets.get("public_one").map(String::as_str),
            Some("pub-1234")
        );
        assert!(
            !assignment.secrets.contains_key("unused"),
            "only what the stage references"
        );
        assert!(assignment.withheld_secrets.is_empty());
        let build = server.get_json("/repos/acme/app/builds/1").await;
        assert!(
            !build.to_string().contains("tok-7f3a9c"),
            "never in the build's JSON"
        );
        assert_eq!(
            server
                .api(
                    reqwest::Method::DELETE,
                    "/repos/acme/app/secrets/unused",
                    None
                )
                .await
                .status(),
            204
        );
        server.stop().await;
    }

    pub async fn pull_requests_from_forks_get_only_the_secrets_that_allow_them(db: &str) {
        let (server, git, _) = setup(db).await;
        let build = fork_pull_request(&server, &git, 1).await;
        assert_eq!(build["fork"], true);
        let (_runner, assignment) = server.claim("r1").await;
        assert_eq!(
            assignment.secrets.get("public_one").map(String::as_str),
            Some("pub-1234")
        );
        assert!(!assignment.secrets.contains_key("deploy_token"));
        assert!(!assignment.secrets.contains_key("registry"));
        let reason = assignment
            .withheld_secrets
            .get("deploy_token")
            .expect("a reason");
        assert!(
            reason.contains("withheld from pull requests from forks"),
            "{reason}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        server.stop().await;
    }

    pub async fn image_pull_secrets_become_registry_logins_but_not_for_forks(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PULLS_PRIVATE_IMAGES)], "private images");
        server.add_repo("app", &git).await;
        let config = gantry_test_support::registry::docker_config("s3cret-registry-pass");
        add(
            &server,
            "/repos/acme/app/secrets",
            "docker_login",
            &config,
            false,
        )
        .await;
        add(
            &server,
            "/repos/acme/app/secrets",
            "not_a_config",
            "hunter2",
            false,
        )
        .await;

        server
            .deliver(
                "push",
                "d-1",
                &webhook::push("acme/app", "main", &sha, "push"),
            )
            .await;
        let (_runner, assignment) = server.claim("r1").await;
        let logins: Vec<(String, String, String, String)> = assignment
            .registries
            .iter()
            .map(|r| {
                (
                    r.host.clone(),
                    r.username.clone(),
                    r.password.clone(),
                    r.source.clone(),
                )
            })
            .collect();
        assert_eq!(
            logins,
            [(
                "127.0.0.1:5055".to_owned(),
                "gantry-test".to_owned(),
                "s3cret-registry-pass".to_owned(),
                "secret `docker_login`".to_owned()
            )]
        );
        let unusable = assignment
            .withheld_secrets
            .get("not_a_config")
            .expect("the unusable one says why");
        assert!(
            unusable.contains("is not a Docker config.json"),
            "{unusable}"
        );
        assert!(!unusable.contains("hunter2"), "{unusable}");
        let build = server.get_json("/repos/acme/app/builds/1").await;
        assert!(!build.to_string().contains("s3cret-registry-pass"));

        // A fork's pull request gets no login from a secret that does not allow it.
        fork_pull_request(&server, &git, 2).await;
        let (_runner, assignment) = server.claim("r2").await;
        assert!(
            assignment.registries.is_empty(),
            "{:?}",
            assignment.registries
        );
        let reason = assignment
            .withheld_secrets
            .get("docker_login")
            .expect("a reason");
        assert!(
            reason.contains("withheld from pull requests from forks"),
            "{reason}"
        );
        server.stop().await;
    }

    pub async fn registry_entries_reach_builds_of_their_scope_most_particular_first(db: &str) {
        let server = TestServer::start(db).await;
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PULLS_PRIVATE_IMAGES)], "private images");
        server.add_repo("app", &git).await;
        for (path, host, user, password, forks) in [
            (
                "/registries",
                "https://index.docker.io/v1/",
                "hub-bot",
                "hub-pass",
                false,
            ),
            (
                "/registries",
                "127.0.0.1:5055",
                "server-bot",
                "server-pass",
                false,
            ),
            (
                "/orgs/acme/registries",
                "127.0.0.1:5055",
                "acme-bot",
                "acme-pass",
                false,
            ),
            (
                "/repos/acme/app/registries",
                "ghcr.io",
                "app-bot",
                "app-pass",
                true,
            ),
        ] {
            let response = server
                .api(
                    reqwest::Method::POST,
                    path,
                    Some(json!({"host": host, "username": user, "password": password, "allow_pull_requests": forks})),
                )
                .await;
            assert_eq!(response.status(), 201);
            let body = response.text().await.expect("body");
            assert!(
                !body.contains(password),
                "the password is never echoed: {body}"
            );
        }
        let listed = server.get_json("/registries").await;
        assert_eq!(listed[0]["host"], "127.0.0.1:5055");
        assert_eq!(
            listed[1]["host"], "docker.io",
            "Docker Hub's aliases are one host"
        );
        assert!(!listed.to_string().contains("pass"), "{listed}");
        let bad = server
            .api(
                reqwest::Method::POST,
                "/registries",
                Some(json!({"host": "not a host!", "username": "u", "password": "p"})),
            )
            .await;
        assert_eq!(bad.status(), 400);

        // A runner restricted to acme is acme's: its logins, never the server's.
        server
            .deliver(
                "push",
                "d-0",
                &webhook::push("acme/app", "main", &sha, "push"),
            )
            .await;
        let mut acme_runner = server.runner("builder-acme");
        acme_runner.credential = server.register_runner("builder-acme", &["acme"]).await;
        let assignment = acme_runner
            .request(Duration::from_secs(10))
            .await
            .expect("acme's runner takes acme's stage");
        let hosts: Vec<(&str, &str)> = assignment
            .registries
            .iter()
            .map(|r| (r.host.as_str(), r.username.as_str()))
            .collect();
        assert_eq!(
            hosts,
            [("ghcr.io", "app-bot"), ("127.0.0.1:5055", "acme-bot")],
            "no server-wide login on an owner's runner"
        );

        server
            .deliver(
                "push",
                "d-1",
                &webhook::push("acme/app", "main", &sha, "push"),
            )
            .await;
        let (_runner, assignment) = server.claim("r1").await;
        let logins: Vec<(String, String, String)> = assignment
            .registries
            .iter()
            .map(|r| (r.host.clone(), r.username.clone(), r.source.clone()))
            .collect();
        assert_eq!(
            logins,
            [
                (
                    "ghcr.io".to_owned(),
                    "app-bot".to_owned(),
                    "the registry entry of acme/app".to_owned()
                ),
                (
                    "127.0.0.1:5055".to_owned(),
                    "acme-bot".to_owned(),
                    "the registry entry of acme".to_owned()
                ),
                (
                    "127.0.0.1:5055".to_owned(),
                    "server-bot".to_owned(),
                    "the server's registry entry".to_owned()
                ),
                (
                    "docker.io".to_owned(),
                    "hub-bot".to_owned(),
                    "the server's registry entry".to_owned()
                ),
            ],
            "the repository's, the owner's, then the server's: the first for a host is used"
        );
        assert_eq!(
            gantry_proto::registry::RegistryCredential::for_image(
                &assignment.registries,
                "127.0.0.1:5055/gantry/busybox"
            )
            .map(|r| r.password.as_str()),
            Some("acme-pass")
        );

        // A fork's pull request gets only the entries that allow pull requests.
        fork_pull_request(&server, &git, 3).await;
        let (_runner, assignment) = server.claim("r2").await;
        let hosts: Vec<&str> = assignment
            .registries
            .iter()
            .map(|r| r.host.as_str())
            .collect();
        assert_eq!(hosts, ["ghcr.io"]);
        server.stop().await;
    }
}
