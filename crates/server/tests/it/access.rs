//! Who may do what: every API endpoint tried by callers one role short of what it needs (and
//! a table that must name every route in `api/mod.rs`), roles read from a fake GitHub with their
//! cache, refresh and an admin's override, and visibility deciding who reads.

use std::time::Duration;

use gantry_store::Visibility;
use gantry_test_support::{GitRepo, webhook};
use reqwest::Method;
use serde_json::{Value, json};

use crate::on_both;
use crate::support::{FakeGitHub, PIPELINE, TestServer, csrf_of};

on_both!(
    every_endpoint_refuses_callers_without_its_role,
    roles_come_from_github_cached_refreshed_and_overridden,
    visibility_decides_who_reads_and_pages_follow_roles,
);

/// What an endpoint needs, weakest first: the callers below are in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Anyone,
    SignedIn,
    Read,
    Write,
    RepoAdmin,
    ServerAdmin,
}

/// One endpoint: its route as `api/mod.rs` spells it, a concrete path on the private
/// repository `acme/app`, and whether it is about that repository (a caller who may not
/// read it is told it does not exist).
struct Endpoint {
    method: Method,
    route: &'static str,
    path: String,
    body: Option<Value>,
    need: Need,
    scoped: bool,
}

fn endpoint(
    method: Method,
    route: &'static str,
    path: impl Into<String>,
    body: Option<Value>,
    need: Need,
) -> Endpoint {
    Endpoint {
        scoped: route.starts_with("/api/repos/{owner}/{name}"),
        method,
        route,
        path: path.into(),
        body,
        need,
    }
}

/// Every `.route("PATH", ...)` of `api/mod.rs` with the methods it serves.
pub(crate) fn routes_in_source() -> Vec<(String, String)> {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/mod.rs"),
    )
    .expect("reads api/mod.rs");
    let mut found = Vec::new();
    for part in source.split(".route(").skip(1) {
        let Some(path) = part
            .trim_start()
            .strip_prefix('"')
            .and_then(|p| p.split('"').next())
        else {
            continue;
        };
        // The handlers, up to the call's closing parenthesis at depth zero.
        let mut depth = 0;
        let mut handlers = String::new();
        for c in part.chars() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => break,
                ')' => depth -= 1,
                _ => {}
            }
            handlers.push(c);
        }
        for method in ["get", "post", "patch", "put", "delete"] {
            let called = handlers.match_indices(&format!("{method}(")).any(|(i, _)| {
                i == 0 || !handlers[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if called {
                found.push((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    found.sort();
    found
}

async fn finished_build(server: &TestServer, repo: &str, visibility: Visibility) -> GitRepo {
    let git = GitRepo::new();
    let sha = git.commit(&[(".gantry.yml", PIPELINE)], "first");
    server.add_repo_with(repo, &git, visibility).await;
    let full_name = format!("acme/{repo}");
    let response = server
        .deliver(
            "push",
            &format!("d-{repo}"),
            &webhook::push(&full_name, "main", &sha, "first"),
        )
        .await;
    assert_eq!(response.status(), 202);
    let (runner, assignment) = server.claim(&format!("runner-{repo}")).await;
    runner.pass(&assignment).await;
    server.wait_finished(repo, 1).await;
    git
}

mod cases {
    use super::*;

    pub async fn every_endpoint_refuses_callers_without_its_role(db: &str) {
        let server = TestServer::start(db).await;
        let git = finished_build(&server, "app", Visibility::Private).await;
        // An environment for the stop to stop: a manual build deploys `staging`.
        git.commit(
            &[(
                ".gantry.yml",
                &format!(
                    "{PIPELINE}---\nkind: pipeline\nname: ship\ndeploy: {{environment: staging}}\nsteps:\n  - name: up\n    image: busybox\n    commands: [true]\n"
                ),
            )],
            "deploys",
        );
        let deployed = server
            .api(
                Method::POST,
                "/repos/acme/app/builds",
                Some(json!({"branch": "main"})),
            )
            .await;
        assert_eq!(deployed.status(), 201);
        let mut callers: Vec<(&str, Option<String>)> = vec![("anonymous", None)];
        for (login, role) in [
            ("stranger", None),
            ("reader", Some("read")),
            ("writer", Some("write")),
            ("owner", Some("admin")),
        ] {
            let token = server.user_with_token(login).await;
            if let Some(role) = role {
                server.set_role("app", login, role).await;
            }
            callers.push((login, Some(token)));
        }
        callers.push(("admin", Some(server.token.clone())));
        server.user_with_token("bystander").await;
        server.user_with_token("leaver").await;

        // What the removals remove.
        let target = |path: &str| {
            let path = path.to_owned();
            let server = &server;
            async move {
                let made = server
                    .api(
                        Method::POST,
                        &path,
                        Some(json!({"kind": "slack", "url": "http://127.0.0.1:9/hook"})),
                    )
                    .await;
                assert_eq!(made.status(), 201);
                made.json::<Value>().await.expect("json")["id"]
                    .as_i64()
                    .expect("an id")
            }
        };
        let repo_target = target("/repos/acme/app/notify").await;
        let default_target = target("/notify").await;
        for path in ["/repos/acme/app/secrets", "/orgs/acme/secrets"] {
            let made = server
                .api(
                    Method::POST,
                    path,
                    Some(json!({"name": "old", "value": "v"})),
                )
                .await;
            assert_eq!(made.status(), 201);
        }
        for path in [
            "/repos/acme/app/registries",
            "/orgs/acme/registries",
            "/registries",
        ] {
            let made = server
                .api(
                    Method::POST,
                    path,
                    Some(json!({"host": "old.example.com", "username": "u", "password": "p"})),
                )
                .await;
            assert_eq!(made.status(), 201);
        }
        let spare = server
            .api(
                Method::POST,
                "/tokens",
                Some(json!({"name": "spare", "admin": true})),
            )
            .await;
        let spare = spare.json::<Value>().await.expect("json")["id"]
            .as_i64()
            .expect("an id");
        server.set_role("app", "bystander", "read").await;
        let made = server
            .api(
                Method::POST,
                "/repos/acme/app/cron",
                Some(json!({"name": "old", "expression": "@daily"})),
            )
            .await;
        assert_eq!(made.status(), 201);

        let logs = "/api/repos/acme/app/builds/1/logs/1/1";
        let table = vec![
            endpoint(Method::GET, "/healthz", "/healthz", None, Need::Anyone),
            endpoint(
                Method::GET,
                "/api/openapi.json",
                "/api/openapi.json",
                None,
                Need::Anyone,
            ),
            endpoint(Method::GET, "/api/repos", "/api/repos", None, Need::Anyone),
            endpoint(
                Method::POST,
                "/api/repos",
                "/api/repos",
                Some(json!({"owner": "acme", "name": "other", "clone_url": "/x"})),
                Need::ServerAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}",
                "/api/repos/acme/app",
                None,
                Need::Read,
            ),
            endpoint(
                Method::PATCH,
                "/api/repos/{owner}/{name}",
                "/api/repos/acme/app",
                Some(json!({"timeout_secs": 900})),
                Need::RepoAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/builds",
                "/api/repos/acme/app/builds",
                None,
                Need::Read,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/builds",
                "/api/repos/acme/app/builds",
                Some(json!({"branch": "main"})),
                Need::Write,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/builds/{number}",
                "/api/repos/acme/app/builds/1",
                None,
                Need::Read,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/builds/{number}/restart",
                "/api/repos/acme/app/builds/1/restart",
                None,
                Need::Write,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/builds/{number}/promote",
                "/api/repos/acme/app/builds/1/promote",
                Some(json!({"target": "production"})),
                Need::Write,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/sign",
                "/api/repos/acme/app/sign",
                Some(json!({"data": "kind: pipeline\nname: ci\nsteps: []\n"})),
                Need::RepoAdmin,
            ),
            endpoint(
                Method::DELETE,
                "/api/repos/{owner}/{name}/sign",
                "/api/repos/acme/app/sign",
                None,
                Need::RepoAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/cron",
                "/api/repos/acme/app/cron",
                None,
                Need::Read,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/cron",
                "/api/repos/acme/app/cron",
                Some(json!({"name": "nightly", "expression": "0 3 * * *"})),
                Need::Write,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/environments",
                "/api/repos/acme/app/environments",
                None,
                Need::Read,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/environments/redeploy",
                "/api/repos/acme/app/environments/redeploy",
                Some(json!({"name": "staging", "build": 2})),
                Need::Write,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/environments/stop",
                "/api/repos/acme/app/environments/stop",
                Some(json!({"name": "staging"})),
                Need::Write,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/environments/protected",
                "/api/repos/acme/app/environments/protected",
                None,
                Need::Read,
            ),
            endpoint(
                Method::PUT,
                "/api/repos/{owner}/{name}/environments/protected",
                "/api/repos/acme/app/environments/protected",
                Some(json!({"pattern": "production", "approvers": ["owner"]})),
                Need::RepoAdmin,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/environments/unprotect",
                "/api/repos/acme/app/environments/unprotect",
                Some(json!({"pattern": "production"})),
                Need::RepoAdmin,
            ),
            // Reading suffices to ask; the rule decides who may (here: nobody waits).
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/builds/{number}/stages/{stage}/{decision}",
                "/api/repos/acme/app/builds/2/stages/1/approve",
                None,
                Need::Read,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/cron/{cron}/run",
                "/api/repos/acme/app/cron/nightly/run",
                None,
                Need::Write,
            ),
            endpoint(
                Method::DELETE,
                "/api/repos/{owner}/{name}/cron/{cron}",
                "/api/repos/acme/app/cron/old",
                None,
                Need::Write,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/builds/{number}/{action}",
                "/api/repos/acme/app/builds/1/cancel",
                None,
                Need::Write,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/builds/{number}/{action}",
                "/api/repos/acme/app/builds/1/approve",
                None,
                Need::Write,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}",
                logs,
                None,
                Need::Read,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}/stream",
                format!("{logs}/stream"),
                None,
                Need::Read,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}/lines",
                format!("{logs}/lines"),
                None,
                Need::Read,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}/search",
                format!("{logs}/search?q=test"),
                None,
                Need::Read,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/branches",
                "/api/repos/acme/app/branches",
                None,
                Need::Read,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/logs/search",
                "/api/repos/acme/app/logs/search?q=test",
                None,
                Need::Read,
            ),
            endpoint(
                Method::GET,
                "/api/runners",
                "/api/runners",
                None,
                Need::SignedIn,
            ),
            endpoint(
                Method::GET,
                "/api/retention",
                "/api/retention",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/tokens",
                "/api/tokens",
                None,
                Need::SignedIn,
            ),
            endpoint(
                Method::POST,
                "/api/tokens",
                "/api/tokens",
                Some(json!({"name": "another"})),
                Need::SignedIn,
            ),
            endpoint(Method::GET, "/api/user", "/api/user", None, Need::SignedIn),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/notify",
                "/api/repos/acme/app/notify",
                None,
                Need::RepoAdmin,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/notify",
                "/api/repos/acme/app/notify",
                Some(json!({"kind": "discord", "url": "http://127.0.0.1:9/d"})),
                Need::RepoAdmin,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/notify/{id}/test",
                format!("/api/repos/acme/app/notify/{repo_target}/test"),
                None,
                Need::RepoAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/notify",
                "/api/notify",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::POST,
                "/api/notify",
                "/api/notify",
                Some(json!({"kind": "teams", "url": "http://127.0.0.1:9/t"})),
                Need::ServerAdmin,
            ),
            endpoint(
                Method::POST,
                "/api/notify/{id}/test",
                format!("/api/notify/{default_target}/test"),
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/secrets",
                "/api/repos/acme/app/secrets",
                None,
                Need::RepoAdmin,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/secrets",
                "/api/repos/acme/app/secrets",
                Some(json!({"name": "deploy", "value": "v"})),
                Need::RepoAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/orgs/{owner}/secrets",
                "/api/orgs/acme/secrets",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::POST,
                "/api/orgs/{owner}/secrets",
                "/api/orgs/acme/secrets",
                Some(json!({"name": "registry", "value": "v"})),
                Need::ServerAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/registries",
                "/api/repos/acme/app/registries",
                None,
                Need::RepoAdmin,
            ),
            endpoint(
                Method::POST,
                "/api/repos/{owner}/{name}/registries",
                "/api/repos/acme/app/registries",
                Some(json!({"host": "ghcr.io", "username": "bot", "password": "p"})),
                Need::RepoAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/orgs/{owner}/registries",
                "/api/orgs/acme/registries",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::POST,
                "/api/orgs/{owner}/registries",
                "/api/orgs/acme/registries",
                Some(json!({"host": "ghcr.io", "username": "bot", "password": "p"})),
                Need::ServerAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/registries",
                "/api/registries",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::POST,
                "/api/registries",
                "/api/registries",
                Some(json!({"host": "ghcr.io", "username": "bot", "password": "p"})),
                Need::ServerAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/runners/tokens",
                "/api/runners/tokens",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::POST,
                "/api/runners/tokens",
                "/api/runners/tokens",
                Some(json!({"name": "builder-1", "owners": ["acme"]})),
                Need::ServerAdmin,
            ),
            endpoint(
                Method::DELETE,
                "/api/runners/tokens/{name}",
                "/api/runners/tokens/builder-1",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/users",
                "/api/users",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::POST,
                "/api/users",
                "/api/users",
                Some(json!({"login": "newcomer"})),
                Need::ServerAdmin,
            ),
            endpoint(
                Method::PATCH,
                "/api/users/{login}",
                "/api/users/leaver",
                Some(json!({"admin": false})),
                Need::ServerAdmin,
            ),
            endpoint(
                Method::GET,
                "/api/repos/{owner}/{name}/roles",
                "/api/repos/acme/app/roles",
                None,
                Need::RepoAdmin,
            ),
            endpoint(
                Method::PUT,
                "/api/repos/{owner}/{name}/roles/{login}",
                "/api/repos/acme/app/roles/bystander",
                Some(json!({"role": "write"})),
                Need::ServerAdmin,
            ),
            // Removals last: each takes away what it was tried on.
            endpoint(
                Method::DELETE,
                "/api/repos/{owner}/{name}/roles/{login}",
                "/api/repos/acme/app/roles/bystander",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::DELETE,
                "/api/repos/{owner}/{name}/notify/{id}",
                format!("/api/repos/acme/app/notify/{repo_target}"),
                None,
                Need::RepoAdmin,
            ),
            endpoint(
                Method::DELETE,
                "/api/notify/{id}",
                format!("/api/notify/{default_target}"),
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::DELETE,
                "/api/repos/{owner}/{name}/secrets/{secret}",
                "/api/repos/acme/app/secrets/old",
                None,
                Need::RepoAdmin,
            ),
            endpoint(
                Method::DELETE,
                "/api/orgs/{owner}/secrets/{secret}",
                "/api/orgs/acme/secrets/old",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::DELETE,
                "/api/repos/{owner}/{name}/registries/{host}",
                "/api/repos/acme/app/registries/old.example.com",
                None,
                Need::RepoAdmin,
            ),
            endpoint(
                Method::DELETE,
                "/api/orgs/{owner}/registries/{host}",
                "/api/orgs/acme/registries/old.example.com",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::DELETE,
                "/api/registries/{host}",
                "/api/registries/old.example.com",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::DELETE,
                "/api/tokens/{id}",
                format!("/api/tokens/{spare}"),
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::DELETE,
                "/api/users/{login}",
                "/api/users/leaver",
                None,
                Need::ServerAdmin,
            ),
            endpoint(
                Method::DELETE,
                "/api/repos/{owner}/{name}",
                "/api/repos/acme/app",
                None,
                Need::RepoAdmin,
            ),
        ];

        // The table names every route the API has.
        let mut tried: Vec<(String, String)> = table
            .iter()
            .map(|e| (e.method.to_string(), e.route.to_owned()))
            .collect();
        tried.sort();
        tried.dedup();
        assert_eq!(
            tried,
            routes_in_source(),
            "every route in api/mod.rs needs a row in this table"
        );

        let levels = [
            Need::Anyone,
            Need::SignedIn,
            Need::Read,
            Need::Write,
            Need::RepoAdmin,
            Need::ServerAdmin,
        ];
        for e in &table {
            for ((who, token), level) in callers.iter().zip(levels) {
                let response = server
                    .http
                    .request(e.method.clone(), format!("{}{}", server.url, e.path));
                let response = match token {
                    Some(token) => response.bearer_auth(token),
                    None => response,
                };
                let response = match &e.body {
                    Some(body) => response.json(body),
                    None => response,
                };
                let response = response.send().await.expect("answers");
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                if level < e.need {
                    let expected = match (*who, e.scoped) {
                        // Whoever may not read the private repository is told it is not there.
                        ("anonymous", true) if e.need == Need::Read => 404,
                        ("anonymous", _) => 401,
                        ("stranger", true) => 404,
                        _ => 403,
                    };
                    assert_eq!(
                        status, expected,
                        "{} {} as {who} must be refused: {body}",
                        e.method, e.path
                    );
                    assert!(body.contains("\"error\""), "a refusal says why: {body}");
                } else {
                    assert!(
                        ![401, 403, 404].contains(&status) && status < 500,
                        "{} {} as {who} must be allowed, got {status}: {body}",
                        e.method,
                        e.path
                    );
                    // The weakest caller allowed has shown it; the others would repeat it.
                    break;
                }
            }
        }
        server.stop().await;
    }

    pub async fn roles_come_from_github_cached_refreshed_and_overridden(db: &str) {
        let github = FakeGitHub::start().await;
        let server = TestServer::start_with(db, |config| {
            github.configure(config, &["boss"]);
            config.role_ttl = Duration::from_millis(300);
        })
        .await;
        let _git = finished_build(&server, "app", Visibility::Private).await;
        let stale = || tokio::time::sleep(Duration::from_millis(400));
        let this = &server;
        let restart = |token: &str| {
            let token = token.to_owned();
            async move {
                this.api_as(
                    Some(&token),
                    Method::POST,
                    "/repos/acme/app/builds/1/restart",
                    None,
                )
                .await
            }
        };
        let read = |token: &str| {
            let token = token.to_owned();
            async move {
                this.api_as(Some(&token), Method::GET, "/repos/acme/app/builds/1", None)
                    .await
            }
        };

        // Signing in reads the user's repositories once, with their permissions.
        github.grant("mona", "acme/app", "push");
        let mona = github.sign_in(&server, "mona").await;
        let roles = server.get_json("/repos/acme/app/roles").await;
        assert_eq!(roles[0]["login"], "mona");
        assert_eq!(
            (roles[0]["role"].as_str(), roles[0]["source"].as_str()),
            (Some("write"), Some("github"))
        );
        let listed = server
            .api_as(Some(&mona), Method::GET, "/repos", None)
            .await;
        assert!(listed.text().await.expect("body").contains("acme/app"));
        assert_eq!(read(&mona).await.status(), 200);
        assert_eq!(restart(&mona).await.status(), 201);
        assert_eq!(restart(&mona).await.status(), 201);
        assert_eq!(github.repo_reads(), 0, "a fresh role is not asked again");

        // GitHub lowers her to pull: once the cache is stale, she reads but cannot restart.
        github.grant("mona", "acme/app", "pull");
        stale().await;
        let refused = restart(&mona).await;
        assert_eq!(refused.status(), 403);
        assert!(
            refused
                .text()
                .await
                .expect("body")
                .contains("needs the write role on acme/app; mona has read")
        );
        assert_eq!(github.repo_reads(), 1);
        assert_eq!(read(&mona).await.status(), 200);

        // GitHub down: the cached role stays.
        github.set_down(true);
        stale().await;
        assert_eq!(read(&mona).await.status(), 200);
        assert_eq!(restart(&mona).await.status(), 403);

        // A server admin's role wins over GitHub's, until it is removed.
        server.set_role("app", "mona", "write").await;
        assert_eq!(restart(&mona).await.status(), 201);
        let removed = server
            .api(Method::DELETE, "/repos/acme/app/roles/mona", None)
            .await;
        assert_eq!(removed.status(), 204);
        assert_eq!(restart(&mona).await.status(), 403);

        // No access on GitHub: the repository is not there for her.
        github.set_down(false);
        github.grant("mona", "acme/app", "none");
        stale().await;
        assert_eq!(read(&mona).await.status(), 404);

        // A new sign-in reads her roles again: admin now, so she changes settings.
        github.grant("mona", "acme/app", "admin");
        let again = github.sign_in(&server, "mona").await;
        let patched = server
            .api_as(
                Some(&again),
                Method::PATCH,
                "/repos/acme/app",
                Some(json!({"visibility": "internal"})),
            )
            .await;
        assert_eq!(patched.status(), 200);
        let trusted = server
            .api_as(
                Some(&again),
                Method::PATCH,
                "/repos/acme/app",
                Some(json!({"trusted": true})),
            )
            .await;
        assert_eq!(trusted.status(), 403, "trust is for server admins");

        // Adding a repository takes its admin permission on GitHub.
        github.grant("mona", "acme/new", "admin");
        github.grant("mona", "acme/pushed", "push");
        let add = |name: &str| {
            server.api_as(
                Some(&again),
                Method::POST,
                "/repos",
                Some(json!({"owner": "acme", "name": name, "clone_url": format!("https://github.com/acme/{name}.git"), "visibility": "private"})),
            )
        };
        assert_eq!(add("new").await.status(), 201);
        assert_eq!(add("pushed").await.status(), 403);
        let new_repo = server
            .api_as(Some(&again), Method::GET, "/repos/acme/new/secrets", None)
            .await;
        assert_eq!(
            new_repo.status(),
            200,
            "who adds a repository administers it"
        );

        // Admins by login; strangers see nothing private.
        let boss = github.sign_in(&server, "boss").await;
        assert_eq!(
            server
                .api_as(Some(&boss), Method::GET, "/users", None)
                .await
                .status(),
            200
        );
        let eve = github.sign_in(&server, "eve").await;
        let listed = server.api_as(Some(&eve), Method::GET, "/repos", None).await;
        let listed = listed.text().await.expect("body");
        assert!(
            listed.contains("acme/app"),
            "internal now: any signed-in user reads it"
        );
        assert!(!listed.contains("acme/new"), "{listed}");
        assert_eq!(
            server
                .api_as(Some(&eve), Method::GET, "/repos/acme/new", None)
                .await
                .status(),
            404
        );
        server.stop().await;
        github.stop();
    }

    pub async fn visibility_decides_who_reads_and_pages_follow_roles(db: &str) {
        let server = TestServer::start(db).await;
        for (name, visibility) in [
            ("open", Visibility::Public),
            ("inside", Visibility::Internal),
            ("closed", Visibility::Private),
        ] {
            finished_build(&server, name, visibility).await;
        }
        let stranger = server.user_with_token("stranger").await;
        let reader = server.user_with_token("reader").await;
        let writer = server.user_with_token("writer").await;
        server.set_role("closed", "reader", "read").await;
        server.set_role("closed", "writer", "write").await;

        // The API: listings and reads.
        for (who, token, sees) in [
            ("anonymous", None, vec!["open"]),
            ("stranger", Some(&stranger), vec!["inside", "open"]),
            ("reader", Some(&reader), vec!["closed", "inside", "open"]),
        ] {
            let listed: Value = server
                .api_as(token.map(String::as_str), Method::GET, "/repos", None)
                .await
                .json()
                .await
                .expect("json");
            let names: Vec<&str> = listed
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["name"].as_str())
                .collect();
            assert_eq!(names, sees, "{who} lists");
            for repo in ["open", "inside", "closed"] {
                let status = server
                    .api_as(
                        token.map(String::as_str),
                        Method::GET,
                        &format!("/repos/acme/{repo}/builds/1"),
                        None,
                    )
                    .await
                    .status();
                let expected = if sees.contains(&repo) { 200 } else { 404 };
                assert_eq!(status, expected, "{who} reads {repo}");
            }
        }

        // The pages, with the session cookie: the same rules, and buttons by role.
        let page = |token: Option<&str>, path: &str| {
            let request = server.http.get(format!("{}{path}", server.url));
            let request = match token {
                Some(token) => request.header("cookie", format!("gantry_session={token}")),
                None => request,
            };
            request.send()
        };
        assert_eq!(
            page(None, "/acme/inside/1")
                .await
                .expect("answers")
                .status(),
            404
        );
        assert_eq!(
            page(Some(&stranger), "/acme/inside/1")
                .await
                .expect("answers")
                .status(),
            200
        );
        let hidden = page(Some(&stranger), "/acme/closed/1")
            .await
            .expect("answers");
        assert_eq!(hidden.status(), 404);
        assert!(
            hidden
                .text()
                .await
                .expect("html")
                .contains("ask its admins for access")
        );
        let as_reader = page(Some(&reader), "/acme/closed/1")
            .await
            .expect("answers");
        assert_eq!(as_reader.status(), 200);
        let as_reader = as_reader.text().await.expect("html");
        assert!(
            !as_reader.contains("id=\"restart\""),
            "no buttons for a reader"
        );
        let as_writer = page(Some(&writer), "/acme/closed/1")
            .await
            .expect("answers")
            .text()
            .await
            .expect("html");
        assert!(as_writer.contains("id=\"restart\""));
        assert!(
            !as_writer.contains("/acme/closed/settings"),
            "settings are for admins"
        );
        let index = page(Some(&stranger), "/")
            .await
            .expect("answers")
            .text()
            .await
            .expect("html");
        assert!(index.contains("acme/inside") && !index.contains("acme/closed"));

        // A form from a reader is refused even with a good CSRF token.
        let post = |token: &str, path: &str, form: String| {
            server
                .http
                .post(format!("{}{path}", server.url))
                .header("cookie", format!("gantry_session={token}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
        };
        let refused = post(
            &reader,
            "/acme/closed/1/restart",
            format!("csrf={}", csrf_of(&as_reader)),
        )
        .await
        .expect("answers");
        assert_eq!(refused.status(), 403);
        let settings = page(Some(&writer), "/acme/closed/settings")
            .await
            .expect("answers");
        assert_eq!(settings.status(), 403, "a writer is no admin");
        let allowed = post(
            &writer,
            "/acme/closed/1/restart",
            format!("csrf={}", csrf_of(&as_writer)),
        )
        .await
        .expect("answers");
        assert_eq!(
            (allowed.status().as_u16(), allowed.url().path()),
            (200, "/acme/closed/2"),
            "a writer's restart leads to the new build"
        );
        server.stop().await;
    }
}
