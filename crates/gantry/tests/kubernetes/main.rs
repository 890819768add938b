//! The `gantry` binaries against a real Kubernetes cluster (test-support's
//! `kubernetes::Cluster`): a server, and a runner started with `--backend kubernetes` as the
//! chart runs it (its service account's token, in its build namespace). Kept in a binary of
//! its own: the cluster starts once for it.

#[path = "../common/mod.rs"]
mod common;

use gantry_test_support::kubernetes::{Cluster, HELPER_IMAGE};
use gantry_test_support::{GitRepo, TempDir};

use common::{add_repo, finished, log, push, spawn_runner, start_server, wait_build};

/// A push builds on the cluster: a `type: docker` file and a `type: kubernetes` one with a
/// service, each stage one pod, logs and statuses back on the server, nothing left after.
#[test]
fn a_runner_on_kubernetes_builds_a_push() {
    let cluster = Cluster::shared();
    let (namespace, kubeconfig) = cluster.runner_namespace("e2e");
    let status =
        std::process::Command::new(gantry_test_support::repo_root().join("scripts/test-image"))
            .status();
    assert!(status.is_ok_and(|s| s.success()), "scripts/test-image");
    let dir = TempDir::new("e2e-kube");
    let (mut server, token) = start_server(dir.path(), None, &["--runner-capacity", "0"]);
    let token = token.expect("the first start prints the admin token");
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let mut runner = spawn_runner(
        &server.url,
        "e2e-kube",
        &dir.path().join("runner"),
        &dir.path().join("runner.log"),
        &[
            "--backend",
            "kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--kube-helper-image",
            HELPER_IMAGE,
            "--capacity",
            "2",
        ],
    );
    runner.wait_for("gantry runner started");
    let git = GitRepo::new();
    let pipelines = "kind: pipeline
type: docker
name: docker-file
steps:
  - name: files
    image: gantry-test/busybox:latest
    commands: [ls, cat .gantry.yml | head -n 2]
---
kind: pipeline
type: kubernetes
name: kube-file
clone: {disable: true}
metadata:
  labels: {team: e2e}
services:
  - name: web
    image: gantry-test/busybox:latest
    commands: [mkdir -p /www, echo served > /www/index.html, httpd -f -p 8080 -h /www]
steps:
  - name: fetch
    image: gantry-test/busybox:latest
    commands:
      - for i in $(seq 1 20); do wget -q -O - http://web:8080/ && exit 0; sleep 0.5; done; exit 1
";
    let sha = git.commit(&[(".gantry.yml", pipelines)], "first");
    add_repo(&server.url, &token, "app", &git, false);
    push(&server.url, "app", &sha, "d-1");
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}\n{}", runner.output());
    let files = log(&server.url, &token, "app", 1, 1, 2);
    assert!(
        files.contains(".gantry.yml") && files.contains("kind: pipeline"),
        "the clone is in the pod's workspace: {files}"
    );
    assert!(log(&server.url, &token, "app", 1, 2, 1).contains("served"));
    // Deleted pods go once the kubelet has stopped their containers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = cluster.kubectl(&[
            "-n",
            &namespace,
            "get",
            "pods,secrets",
            "-l",
            "gantry.runner",
            "-o",
            "name",
        ]);
        if left.trim().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "left behind: {left}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    runner.stop();
    server.process.stop();
}
