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
