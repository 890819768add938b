//! Git credentials for SSH clone URLs: a repository's deploy key fetches over SSH from a real
//! sshd, goes to the runner with the stage (never elsewhere), and a refused key or an
//! unknown host key errors the build, naming the credential and the fix.

use gantry_proto::GitCredential;
use gantry_test_support::git_ssh::SshGitServer;
use gantry_test_support::{GitRepo, webhook};
use serde_json::json;

use crate::on_both;
use crate::support::{PIPELINE, TestServer};

on_both!(a_deploy_key_fetches_over_ssh_and_goes_to_the_runner_only);

mod cases {
    use super::*;

    pub async fn a_deploy_key_fetches_over_ssh_and_goes_to_the_runner_only(db: &str) {
        let git = GitRepo::new();
        let first = git.commit(&[(".gantry.yml", PIPELINE)], "first");
        let ssh = SshGitServer::start(&git);
        let known_hosts = ssh.known_hosts.clone();
        let server =
            TestServer::start_with(db, |config| config.ssh_known_hosts.push_str(&known_hosts))
                .await;
        server.add_repo("app", &git).await;

        let public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl deploy";
        let refused = server
            .api(
                reqwest::Method::PATCH,
                "/repos/acme/app",
                Some(json!({"ssh_key": public})),
            )
            .await;
        assert_eq!(refused.status(), 400);
        let text = refused.text().await.expect("body");
        assert!(text.contains("this is a public key"), "{text}");

        let updated = server
            .api(
                reqwest::Method::PATCH,
                "/repos/acme/app",
                Some(json!({"clone_url": ssh.url, "ssh_key": ssh.deploy_key})),
            )
            .await;
        assert_eq!(updated.status(), 200);
        let view: serde_json::Value = updated.json().await.expect("json");
        assert_eq!(view["has_ssh_key"], true);
        let key_line = ssh.deploy_key.lines().nth(1).expect("a key body");
        assert!(!view.to_string().contains(key_line), "{view}");
        let row = server
            .store
            .repo_by_name("acme", "app")
            .await
            .expect("reads")
            .expect("exists");
        assert!(
            row.ssh_key.starts_with("sealed:") && !row.ssh_key.contains(key_line),
            "sealed at rest"
        );

        let push = webhook::push("acme/app", "main", &first, "change");
        assert_eq!(server.deliver("push", "s-1", &push).await.status(), 202);
        let build = server.wait_build("app", 1).await;
        assert_eq!(build["status"], "pending", "fetched over SSH: {build}");
        let (_runner, assignment) = server.claim("r1").await;
        match &assignment.clone_credential {
            Some(GitCredential::SshKey {
                username,
                private_key,
                known_hosts,
            }) => {
                assert_eq!(username, &gantry_proto::ssh::ssh_user(&ssh.url));
                assert_eq!(private_key, &ssh.deploy_key);
                assert!(known_hosts.contains(ssh.known_hosts.trim()));
            }
            other => panic!("the deploy key goes with the stage: {other:?}"),
        }
        assert!(assignment.netrc.is_none(), "no netrc for an SSH clone");
        let stored = server
            .api(reqwest::Method::GET, "/repos/acme/app/builds/1", None)
            .await
            .text()
            .await
            .expect("body");
        assert!(!stored.contains(key_line), "never with the build");

        // A key the git server does not accept.
        let error = errored(&server, &git, 2, json!({"ssh_key": ssh.stranger_key})).await;
        assert!(
            error.contains("the SSH deploy key of acme/app was refused")
                && error.contains("--ssh-key-file"),
            "{error}"
        );

        // Another host on the same address whose key the known hosts do not hold.
        let impostor = SshGitServer::start(&git);
        let change = json!({"clone_url": impostor.url, "ssh_key": impostor.deploy_key});
        let error = errored(&server, &git, 3, change).await;
        assert!(
            error.contains("the SSH host key of 127.0.0.1 is not the one the known hosts give")
                && error.contains("--ssh-known-hosts"),
            "{error}"
        );
        server.stop().await;
    }

    /// Applies `change` to acme/app, pushes a new commit, and returns the error of build
    /// `number`, which must have errored.
    async fn errored(
        server: &TestServer,
        git: &GitRepo,
        number: u64,
        change: serde_json::Value,
    ) -> String {
        let patched = server
            .api(reqwest::Method::PATCH, "/repos/acme/app", Some(change))
            .await;
        assert_eq!(patched.status(), 200);
        let sha = git.commit(&[("README", &number.to_string())], "change");
        let push = webhook::push("acme/app", "main", &sha, "change");
        let delivery = format!("s-{number}");
        assert_eq!(server.deliver("push", &delivery, &push).await.status(), 202);
        let build = server.wait_finished("app", number).await;
        assert_eq!(build["status"], "error", "{build}");
        build["error"].as_str().unwrap_or_default().to_owned()
    }
}
