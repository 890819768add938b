//! What only the Kubernetes backend has: `type: kubernetes` files, services reached by name
//! in the pod, pull errors and unschedulable pods that end as errors, the sweep.

use gantry_runner::StepState;

use crate::support::{expect, run, stage_from, statuses};
use crate::{kubernetes, nothing_left};

const KUBE: crate::support::Flavour = crate::support::Flavour {
    pipeline_type: "kubernetes",
    image: "gantry-test/busybox:latest",
    start_secs: 3,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_pipeline_runs_its_steps_in_one_pod_with_services_by_name() {
    let backend = kubernetes().await;
    let stage = stage_from(
        KUBE,
        "clone:\n  disable: true\nservices:\n  - name: web\n    image: IMAGE\n    commands: [mkdir -p /www, echo hello-from-web > /www/index.html, httpd -f -p 8080 -h /www]\nsteps:
  - name: fetch
    image: IMAGE
    commands:
      - for i in $(seq 1 20); do wget -q -O - http://web:8080/ && exit 0; sleep 0.5; done; exit 1
  - name: exit
    image: IMAGE
    commands: [echo bye, exit 3]
",
    );
    let run = run(backend.clone(), stage, &[], None).await;
    assert_eq!(
        statuses(&run.result),
        expect(&[
            ("fetch", "success"),
            ("exit", "failure"),
            ("web", "success")
        ]),
        "{:?}\n{}",
        run.result,
        run.recorder.all_text()
    );
    assert_eq!(
        run.recorder.lines("fetch").last().map(String::as_str),
        Some("hello-from-web")
    );
    assert_eq!(run.result.step("exit").and_then(|s| s.exit_code), Some(3));
    assert_eq!(run.result.status, StepState::Failure);
    nothing_left(backend).await;
}

/// Woodpecker's `backend_options.kubernetes.securityContext` as the cluster applies it: the
/// step's user and group, and the pod's `fsGroup` owning the workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_security_context_is_what_its_process_runs_as() {
    let backend = kubernetes().await;
    let stage = stage_from(
        KUBE,
        "clone:\n  disable: true\nsteps:\n  - name: who\n    image: IMAGE\n    commands: [id -u, id -g, stat -c %g .]\n    backend_options:\n      kubernetes:\n        securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, runAsNonRoot: true}\n",
    );
    let run = run(backend.clone(), stage, &[], None).await;
    assert_eq!(
        statuses(&run.result),
        expect(&[("who", "success")]),
        "{:?}\n{}",
        run.result,
        run.recorder.all_text()
    );
    let said: Vec<String> = run
        .recorder
        .lines("who")
        .into_iter()
        .filter(|l| !l.starts_with("+ "))
        .collect();
    assert_eq!(said, ["1000", "3000", "2000"]);
    nothing_left(backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_within_the_nodes_rotation_arrives_whole() {
    let backend = kubernetes().await;
    let stage = stage_from(
        KUBE,
        "clone:\n  disable: true\nsteps:\n  - name: loud\n    image: IMAGE\n    commands:\n      - yes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -n 60000\n      - echo last\n",
    );
    let run = run(backend.clone(), stage, &[], None).await;
    assert_eq!(run.result.status, StepState::Success, "{:?}", run.result);
    let lines = run.recorder.lines("loud");
    assert_eq!(lines.len(), 60_003, "lines lost");
    assert_eq!(lines.last().map(String::as_str), Some("last"));
    nothing_left(backend).await;
}

/// What really happens to a missing image on a cluster (`ErrImagePull`, then
/// `ImagePullBackOff`) ends the step as an error with the kubelet's reason, in seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_ends_its_step_as_an_error_with_the_reason() {
    let backend = kubernetes().await;
    let stage = stage_from(
        KUBE,
        "clone:\n  disable: true\nsteps:\n  - name: ghost\n    image: 127.0.0.1:9/gantry/no-such-image:1\n    commands: [true]\n  - name: after\n    image: IMAGE\n    commands: [echo after]\n",
    );
    let started = std::time::Instant::now();
    let run = run(backend.clone(), stage, &[], None).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        statuses(&run.result),
        expect(&[("ghost", "error"), ("after", "skipped")]),
        "{:?}",
        run.result
    );
    let error = run
        .result
        .step("ghost")
        .and_then(|s| s.error.clone())
        .unwrap_or_default();
    assert!(
        error.contains("127.0.0.1:9/gantry/no-such-image:1") && error.contains("cannot be pulled"),
        "{error}"
    );
    nothing_left(backend).await;
}

/// A pod no node can take errors the stage with the scheduler's reason once the runner's
/// bound passes (3 s here), instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_pod_errors_with_the_schedulers_reason() {
    let backend = kubernetes().await;
    let stage = stage_from(
        KUBE,
        "clone:\n  disable: true\nnode_selector: {gantry-test/no-such-node: \"yes\"}\nsteps:\n  - name: a\n    image: IMAGE\n    commands: [true]\n",
    );
    let started = std::time::Instant::now();
    let run = run(backend.clone(), stage, &[], None).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(run.result.status, StepState::Error, "{:?}", run.result);
    let error = run.result.error.clone().unwrap_or_default();
    assert!(
        error.contains("no node could take the stage's pod") && error.contains("didn't match"),
        "{error}"
    );
    nothing_left(backend).await;
}

/// A runner killed mid-stage leaves its pod running; the same runner, started again, sweeps
/// it (by its label) before it takes work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runner_sweeps_the_pods_it_left() {
    use gantry_runner::Backend;
    let name = crate::support::job_id("kube-killed-runner");
    let backend = crate::kubernetes_named(&name).await;
    let stage = stage_from(
        KUBE,
        "clone:\n  disable: true\nsteps:\n  - name: long\n    image: IMAGE\n    commands: [sleep 300]\n",
    );
    let job = gantry_runner::backend::JobSpec {
        id: crate::support::job_id("killed"),
        environments: stage
            .steps
            .iter()
            .map(|s| (s.name.clone(), std::collections::BTreeMap::new()))
            .collect(),
        stage,
        registries: Vec::new(),
    };
    // Set up and left as a killed runner leaves it: no destroy.
    backend.setup(&job).await.expect("the pod is made");
    drop(backend);
    let restarted = crate::kubernetes_named(&name).await;
    assert_eq!(restarted.leftovers().await.expect("listed"), (1, 1));
    restarted.sweep().await.expect("swept");
    assert_eq!(restarted.leftovers().await.expect("listed"), (0, 0));
}

/// A pod evicted while its step runs (as `kubectl drain` evicts, through the API's eviction)
/// errors that step with the reason at once, instead of waiting for the step's 300 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_pod_errors_its_running_step() {
    let name = crate::support::job_id("kube-evicted");
    let backend = crate::kubernetes_named(&name).await;
    let stage = stage_from(
        KUBE,
        "clone:\n  disable: true\nsteps:\n  - name: long\n    image: IMAGE\n    commands: [sleep 300]\n  - name: after\n    image: IMAGE\n    commands: [echo after]\n",
    );
    let selector = format!(
        "gantry.runner={}",
        gantry_runner::kubernetes::pod::label_value(&name)
    );
    let evictor = tokio::task::spawn_blocking(move || evict_once_running(&selector));
    let run = run(backend.clone(), stage, &[], None).await;
    evictor.await.expect("the eviction");
    assert_eq!(
        statuses(&run.result),
        expect(&[("long", "error"), ("after", "skipped")]),
        "{:?}",
        run.result
    );
    let error = run
        .result
        .step("long")
        .and_then(|s| s.error.clone())
        .unwrap_or_default();
    assert!(error.contains("the stage's pod"), "{error}");
    nothing_left(backend).await;
}

/// Waits for the pod of `selector` to run the test image in some container, then evicts it.
fn evict_once_running(selector: &str) {
    let cluster = gantry_test_support::kubernetes::Cluster::shared();
    let namespace = crate::build_namespace().0.as_str();
    let mut images = String::new();
    for _ in 0..240 {
        images = cluster.kubectl(&[
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {range .status.containerStatuses[*]}{.image}={.state.running.startedAt} {end}{end}",
        ]);
        let mut words = images.split_whitespace();
        if let Some(pod) = words.next()
            && words.any(|w| w.contains("busybox") && !w.ends_with('='))
        {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let eviction = format!(
                r#"{{"apiVersion":"policy/v1beta1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"{namespace}"}}}}"#
            );
            let dir = gantry_test_support::TempDir::new("eviction");
            let file = dir.write("eviction.json", &eviction);
            cluster.kubectl(&[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/{namespace}/pods/{pod}/eviction"),
                "-f",
                &file.display().to_string(),
            ]);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("the step never ran in a pod of {selector}: {images}");
}
