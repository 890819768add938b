//! The `gantry` binaries against a real Kubernetes cluster (test-support's
//! `kubernetes::Cluster`): a server, and a runner started with `--backend kubernetes` as the
//! chart runs it (its service account's token, in its build namespace). Kept in a binary of
//! its own: the cluster starts once for it.

#[path = "../common/mod.rs"]
mod common;

use gantry_test_support::kubernetes::{Cluster, HELPER_IMAGE, chart_dir};
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

/// `helm lint --strict`, and `helm template` over a matrix of values: each set renders what
/// it should, and what cannot work (SQLite in two pods, or without a volume; a value the
/// schema refuses) is refused with the reason.
#[test]
fn the_chart_lints_and_renders_each_values_set() {
    let cluster = Cluster::shared();
    let chart = chart_dir().display().to_string();
    let (linted, said) = cluster.try_helm(&["lint", "--strict", &chart]);
    assert!(linted, "{said}");
    let kinds = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["template", "gantry", chart.as_str(), "--namespace", "ci"];
        all.extend_from_slice(args);
        cluster
            .helm(&all)
            .lines()
            .filter_map(|l| l.strip_prefix("kind: ").map(str::to_owned))
            .collect()
    };
    assert_eq!(
        kinds(&[]),
        [
            "PodDisruptionBudget",
            "PodDisruptionBudget",
            "ServiceAccount",
            "Secret",
            "PersistentVolumeClaim",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "StatefulSet"
        ]
    );
    let postgres = kinds(&[
        "--set",
        "server.replicas=3",
        "--set",
        "server.database.url=postgres://gantry:pw@db/gantry",
        "--set",
        "server.persistence.enabled=false",
        "--set",
        "runnerSecret.existingSecret=mine",
        "--set",
        "runner.buildNamespace=builds",
    ]);
    assert_eq!(
        postgres,
        [
            "PodDisruptionBudget",
            "PodDisruptionBudget",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "StatefulSet"
        ]
    );
    assert_eq!(
        kinds(&["--set", "runner.enabled=false"]),
        [
            "PodDisruptionBudget",
            "Secret",
            "PersistentVolumeClaim",
            "Service",
            "Deployment"
        ]
    );
    // The chart's own PostgreSQL: the server takes its URL from the Secret that keeps the
    // generated password, so it may run several replicas.
    let own_database = [
        "--set",
        "postgresql.enabled=true",
        "--set",
        "server.replicas=2",
        "--set",
        "server.persistence.enabled=false",
    ];
    assert_eq!(
        kinds(&own_database),
        [
            "PodDisruptionBudget",
            "PodDisruptionBudget",
            "ServiceAccount",
            "Secret",
            "Secret",
            "Role",
            "RoleBinding",
            "Service",
            "Service",
            "Deployment",
            "StatefulSet",
            "StatefulSet"
        ]
    );
    let mut args = vec!["template", "gantry", chart.as_str(), "--namespace", "ci"];
    args.extend_from_slice(&own_database);
    let rendered = cluster.helm(&args);
    let server = rendered
        .split("\n---")
        .find(|m| m.contains("kind: Deployment"))
        .expect("the server");
    assert!(
        server.contains("name: GANTRY_DATABASE_URL")
            && server.contains("name: gantry-postgresql\n                  key: database-url"),
        "{server}"
    );
    // Docker runners beside their own engine: only the engine is privileged, and the
    // runner reaches it by a socket in the pod.
    let mut args = vec!["template", "gantry", chart.as_str(), "--namespace", "ci"];
    args.extend_from_slice(&[
        "--set",
        "dockerRunner.enabled=true",
        "--set",
        "runner.enabled=false",
    ]);
    let rendered = cluster.helm(&args);
    let docker_runner = rendered
        .split("\n---")
        .find(|m| m.contains("kind: StatefulSet") && m.contains("name: gantry-docker-runner\n"))
        .expect("the Docker runners");
    assert!(
        docker_runner.contains("- docker\n")
            && docker_runner.contains("unix:///run/dind/docker.sock"),
        "{docker_runner}"
    );
    assert_eq!(
        rendered.matches("privileged: true").count(),
        1,
        "{rendered}"
    );
    assert!(
        rendered.contains("name: gantry-docker-runner\n  labels")
            && rendered.matches("kind: PodDisruptionBudget").count() == 2,
        "{rendered}"
    );
    // Every manifest of every set, against the schemas of several Kubernetes versions (the
    // chart targets current ones; 1.20, the test cluster's, is covered by installing it).
    let sets: [&[&str]; 5] = [
        &[],
        &[
            "--set",
            "server.replicas=2",
            "--set",
            "server.database.url=postgres://g:pw@db/g",
        ],
        &[
            "--set",
            "ingress.enabled=true",
            "--set",
            "ingress.host=ci.example.com",
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "runner.autoscaling.enabled=true",
        ],
        &[
            "--set",
            "runner.autoscaling.enabled=true",
            "--set",
            "runner.autoscaling.keda=true",
            "--set",
            "runner.autoscaling.prometheusUrl=http://prometheus:9090",
        ],
        &[
            "--set",
            "postgresql.enabled=true",
            "--set",
            "dockerRunner.enabled=true",
            "--set",
            "dockerRunner.labels.kind=docker",
        ],
    ];
    let dir = TempDir::new("chart-manifests");
    for version in ["1.25.0", "1.29.0", "1.33.0", "1.37.0"] {
        for (i, set) in sets.iter().enumerate() {
            let mut all = vec![
                "template",
                "gantry",
                chart.as_str(),
                "--namespace",
                "ci",
                "--kube-version",
                version,
            ];
            all.extend_from_slice(set);
            let file = dir.write(&format!("{version}-{i}.yaml"), &cluster.helm(&all));
            validate(&file, version);
        }
    }
    let rendered = cluster.helm(&[
        "template",
        "gantry",
        &chart,
        "--namespace",
        "ci",
        "--set",
        "runner.buildNamespace=builds",
    ]);
    assert!(
        rendered.contains("namespace: builds"),
        "the Role is in the build namespace"
    );
    assert!(
        rendered.contains("runAsNonRoot: true")
            && rendered.contains("readOnlyRootFilesystem: true")
    );
    assert!(rendered.contains("path: /healthz") && rendered.contains("path: /readyz"));
    for (args, says) in [
        (vec!["--set", "server.replicas=2"], "needs PostgreSQL"),
        (
            vec!["--set", "server.persistence.enabled=false"],
            "SQLite needs server.persistence.enabled",
        ),
        (vec!["--set", "runner.capacity=0"], "/runner/capacity"),
        (
            vec!["--set", "server.database.url=mysql://x"],
            "/server/database/url",
        ),
        (vec!["--set", "surprise=1"], "surprise"),
        (
            vec![
                "--set",
                "postgresql.enabled=true",
                "--set",
                "server.database.url=postgres://db/g",
            ],
            "postgresql.enabled runs a database for gantry",
        ),
        (
            vec!["--set", "dockerRunner.capacity=0"],
            "/dockerRunner/capacity",
        ),
    ] {
        let mut all = vec!["template", "gantry", chart.as_str()];
        all.extend_from_slice(&args);
        let (ok, said) = cluster.try_helm(&all);
        assert!(!ok && said.contains(says), "{args:?}: {said}");
    }
}

/// `kubernetes-validate --strict` of `file` for Kubernetes `version`: only kinds it has no
/// schema for (the Prometheus Operator's and KEDA's) may go unchecked.
fn validate(file: &std::path::Path, version: &str) {
    let out = std::process::Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", version])
        .arg(file)
        .output()
        .expect("kubernetes-validate (PyPI's kubernetes-validate; scripts/test installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| !(l.starts_with("WARN") && l.contains("Couldn't find schema for kind")))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "{} for Kubernetes {version}: {said}",
        file.display()
    );
}

/// The pod builder's golden manifest is a valid Pod for current Kubernetes.
#[test]
fn the_pod_builders_golden_pod_is_valid() {
    let snapshot = gantry_test_support::repo_root()
        .join("crates/runner/src/kubernetes/snapshots/gantry_runner__kubernetes__pod__tests__stage_pod.snap");
    let text = std::fs::read_to_string(&snapshot).expect("the golden pod");
    // insta's header, then the JSON.
    let json = text.splitn(3, "---\n").nth(2).expect("a snapshot body");
    let dir = TempDir::new("golden-pod");
    let file = dir.write("pod.json", json);
    for version in ["1.25.0", "1.37.0"] {
        validate(&file, version);
    }
}

/// The chart installs into the cluster; its runner's account may do in the build namespace
/// exactly what the backend uses, and nothing elsewhere.
#[test]
fn the_installed_charts_runner_may_do_only_what_the_backend_needs() {
    let cluster = Cluster::shared();
    let release = cluster.namespace("chart");
    let builds = cluster.namespace("chart-builds");
    let chart = chart_dir().display().to_string();
    cluster.helm(&[
        "install",
        "gantry",
        &chart,
        "--namespace",
        &release,
        "--set",
        &format!("runner.buildNamespace={builds}"),
    ]);
    let account = format!("system:serviceaccount:{release}:gantry-runner");
    // Asked of the API server as a SubjectAccessReview, with the groups a service account's
    // token carries (`kubectl auth can-i` reads `pods/exec` as the pod named `exec`).
    let can = |verb: &str, resource: &str, namespace: &str| -> (bool, String) {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let review = format!(
            "apiVersion: authorization.k8s.io/v1
kind: SubjectAccessReview
spec:
  user: {account}
  groups: [system:serviceaccounts, 'system:serviceaccounts:{release}', system:authenticated]
  resourceAttributes: {{namespace: '{namespace}', verb: {verb}, resource: {resource}, subresource: '{subresource}'}}
"
        );
        let mut child = std::process::Command::new(cluster.kubectl_path())
            .arg(format!(
                "--kubeconfig={}",
                cluster.admin_kubeconfig().display()
            ))
            .args([
                "create",
                "-f",
                "-",
                "-o",
                "jsonpath={.status.allowed} {.status.reason}",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl create");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), review.as_bytes())
            .expect("the review");
        let out = child.wait_with_output().expect("kubectl create");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{said}");
        (said.starts_with("true"), said)
    };
    for (verb, resource) in [
        ("create", "pods"),
        ("watch", "pods"),
        ("patch", "pods"),
        ("delete", "pods"),
        ("get", "pods/log"),
        ("create", "pods/exec"),
        ("get", "pods/exec"),
        ("create", "secrets"),
        ("delete", "secrets"),
        ("list", "events"),
    ] {
        let (may, said) = can(verb, resource, &builds);
        assert!(may, "may {verb} {resource} in {builds}: {said}");
    }
    for (verb, resource, namespace) in [
        ("create", "pods", release.as_str()),
        ("get", "secrets", release.as_str()),
        ("create", "deployments", builds.as_str()),
        ("update", "pods", builds.as_str()),
        ("create", "pods/attach", builds.as_str()),
        ("create", "pods/portforward", builds.as_str()),
        ("create", "pods/eviction", builds.as_str()),
        ("create", "rolebindings", builds.as_str()),
        ("list", "nodes", ""),
    ] {
        let namespace = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let (may, said) = can(verb, resource, namespace);
        assert!(!may, "may not {verb} {resource} in {namespace}: {said}");
    }
    // The runner secret was generated, and is kept by an upgrade.
    let secret = || {
        cluster.kubectl(&[
            "-n",
            &release,
            "get",
            "secret",
            "gantry-runner-secret",
            "-o",
            "jsonpath={.data.runner-secret}",
        ])
    };
    let before = secret();
    assert!(before.len() > 40, "a generated secret: {before}");
    cluster.helm(&[
        "upgrade",
        "gantry",
        &chart,
        "--namespace",
        &release,
        "--set",
        &format!("runner.buildNamespace={builds}"),
    ]);
    assert_eq!(secret(), before, "kept across upgrades");
    cluster.helm(&["uninstall", "gantry", "--namespace", &release]);
}
