//! Cloning real repositories (made with git2 by the test) at exact commits into the
//! workspace, on the local backend and on Docker.

use std::sync::Arc;

use gantry_pipeline::plan::CloneSpec;
use gantry_runner::{Backend, CloneSource, LocalBackend, StepState, WorkspaceSource};
use gantry_test_support::GitRepo;
use gantry_test_support::git_ssh::SshGitServer;

use crate::support::{Flavour, expect, job_id, run_in, stage_from, statuses};

const LOCAL: Flavour = Flavour {
    pipeline_type: "exec",
    image: "unused",
    start_secs: 0,
};

fn local() -> Arc<dyn Backend> {
    Arc::new(LocalBackend::new(
        std::env::temp_dir()
            .join("gantry-tests")
            .join(job_id("clone")),
    ))
}

fn source(repo: &GitRepo, reference: &str, commit: &str) -> CloneSource {
    CloneSource {
        spec: CloneSpec {
            url: repo.url(),
            reference: reference.to_owned(),
            commit: commit.to_owned(),
            depth: Some(1),
            tags: false,
            skip_verify: false,
        },
        credential: Some(gantry_proto::GitCredential::Basic {
            username: "x-access-token".to_owned(),
            password: "ghs_test_token_value".to_owned(),
        }),
    }
}

const SHOW: &str = "steps:\n  - name: show\n    image: IMAGE\n    commands: [cat version.txt]\n";

async fn show(backend: Arc<dyn Backend>, f: Flavour, source: CloneSource) -> crate::support::Run {
    run_in(
        backend,
        stage_from(f, SHOW),
        &[],
        None,
        WorkspaceSource::Clone(source),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_the_exact_commit_not_the_branch_head() {
    let repo = GitRepo::new();
    let first = repo.commit(&[("version.txt", "one\n")], "first");
    repo.commit(&[("version.txt", "two\n")], "second");
    let run = show(local(), LOCAL, source(&repo, "refs/heads/main", &first)).await;
    assert_eq!(
        statuses(&run.result),
        expect(&[("clone", "success"), ("show", "success")]),
        "{:?}",
        run.result
    );
    assert_eq!(run.recorder.lines("show"), ["+ cat version.txt", "one"]);
    assert!(!run.recorder.all_text().contains("ghs_test_token_value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_pull_request_and_tag_refs() {
    let repo = GitRepo::new();
    let base = repo.commit(&[("version.txt", "main\n")], "main");
    let pr = repo.commit(&[("version.txt", "pull request\n")], "pr");
    repo.set_ref("refs/pull/7/head", &pr);
    repo.reset_main(&base);
    let run = show(local(), LOCAL, source(&repo, "refs/pull/7/head", &pr)).await;
    assert_eq!(
        run.recorder.lines("show"),
        ["+ cat version.txt", "pull request"],
        "{:?}",
        run.result
    );

    repo.set_ref("refs/tags/v1.0.0", &base);
    let run = show(local(), LOCAL, source(&repo, "refs/tags/v1.0.0", "")).await;
    assert_eq!(
        run.recorder.lines("show"),
        ["+ cat version.txt", "main"],
        "{:?}",
        run.result
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_cannot_be_found_errors_the_build() {
    let repo = GitRepo::new();
    repo.commit(&[("version.txt", "one\n")], "first");
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let run = show(local(), LOCAL, source(&repo, "refs/heads/main", missing)).await;
    assert_eq!(
        statuses(&run.result),
        expect(&[("clone", "error"), ("show", "skipped")])
    );
    assert_eq!(run.result.status, StepState::Error);
    let error = run
        .result
        .step("clone")
        .and_then(|s| s.error.clone())
        .unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "cloning {} failed: commit {missing} is not on refs/heads/main",
            repo.url()
        )),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_into_a_docker_volume() {
    let backend = crate::docker::docker().await;
    let repo = GitRepo::new();
    let commit = repo.commit(
        &[
            ("version.txt", "in a volume\n"),
            ("nested/dir/file.txt", "deep\n"),
        ],
        "first",
    );
    let f = crate::docker::DOCKER;
    let stage = stage_from(
        f,
        "steps:\n  - name: show\n    image: IMAGE\n    commands: [cat version.txt nested/dir/file.txt]\n",
    );
    let run = run_in(
        backend.clone(),
        stage,
        &[],
        None,
        WorkspaceSource::Clone(source(&repo, "refs/heads/main", &commit)),
    )
    .await;
    assert_eq!(
        run.recorder.lines("show"),
        [
            "+ cat version.txt nested/dir/file.txt",
            "in a volume",
            "deep"
        ],
        "{:?}",
        run.result
    );
    crate::docker::nothing_left(backend).await;
}

fn over_ssh(server: &SshGitServer, key: &str, known_hosts: &str, commit: &str) -> CloneSource {
    CloneSource {
        spec: CloneSpec {
            url: server.url.clone(),
            reference: "refs/heads/main".to_owned(),
            commit: commit.to_owned(),
            depth: Some(1),
            tags: false,
            skip_verify: false,
        },
        credential: Some(gantry_proto::GitCredential::SshKey {
            username: gantry_proto::ssh::ssh_user(&server.url),
            private_key: key.to_owned(),
            known_hosts: known_hosts.to_owned(),
        }),
    }
}

fn clone_error(run: &crate::support::Run) -> String {
    run.result
        .step("clone")
        .and_then(|s| s.error.clone())
        .unwrap_or_default()
}

/// A deploy key clones over SSH from a real sshd; another key is refused, and so is a
/// server whose host key the known hosts do not hold. The key never reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_over_ssh_with_a_deploy_key_from_a_known_host_only() {
    let repo = GitRepo::new();
    let commit = repo.commit(&[("version.txt", "over ssh\n")], "first");
    let server = SshGitServer::start(&repo);

    let run = show(
        local(),
        LOCAL,
        over_ssh(&server, &server.deploy_key, &server.known_hosts, &commit),
    )
    .await;
    assert_eq!(
        run.recorder.lines("show"),
        ["+ cat version.txt", "over ssh"],
        "{:?}\n{}",
        run.result,
        server.log()
    );
    let key_line = server.deploy_key.lines().nth(1).expect("a key body");
    assert!(!run.recorder.all_text().contains(key_line));

    let run = show(
        local(),
        LOCAL,
        over_ssh(&server, &server.stranger_key, &server.known_hosts, &commit),
    )
    .await;
    assert_eq!(run.result.status, StepState::Error);
    let error = clone_error(&run);
    assert!(
        error.contains("the server refused an SSH deploy key"),
        "{error}"
    );

    let run = show(
        local(),
        LOCAL,
        over_ssh(
            &server,
            &server.deploy_key,
            gantry_proto::ssh::GITHUB_HOST_KEYS,
            &commit,
        ),
    )
    .await;
    assert_eq!(run.result.status, StepState::Error);
    let error = clone_error(&run);
    assert!(
        error.contains("the SSH host key of 127.0.0.1 is not known"),
        "{error}"
    );
    let impostor = server.known_hosts.replace("AAAA", "AAAB");
    let run = show(
        local(),
        LOCAL,
        over_ssh(&server, &server.deploy_key, &impostor, &commit),
    )
    .await;
    assert!(
        clone_error(&run).contains("is not the one the known hosts give"),
        "{}",
        clone_error(&run)
    );
}
