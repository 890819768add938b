//! The semantic cases on the Kubernetes backend, against a real cluster on this machine
//! (test-support's `kubernetes::Cluster`: the API server, controller manager, scheduler and a
//! kubelet running pods in the local Docker engine). The runner authenticates as a service
//! account holding only the backend's Role, so RBAC is real. Kept in a binary of its own: the
//! cluster starts once for it.

#[path = "../it/cases.rs"]
#[expect(
    dead_code,
    reason = "a_large_log_arrives_whole does not run on Kubernetes (see backend_cases! below)"
)]
mod cases;
#[path = "../it/support.rs"]
mod support;

mod backend;

use std::sync::Arc;
use std::time::Duration;

use gantry_runner::kubernetes::{KubernetesBackend, KubernetesConfig};
use gantry_test_support::kubernetes::{Cluster, HELPER_IMAGE};

use crate::support::{Flavour, job_id, test_image};

/// Files of `type: docker` run on Kubernetes unchanged.
pub const KUBERNETES: Flavour = Flavour {
    pipeline_type: "docker",
    image: "gantry-test/busybox:latest",
    start_secs: 3,
};

/// The build namespace of this test binary, with the runner's account, and its kubeconfig.
pub fn build_namespace() -> &'static (String, std::path::PathBuf) {
    static NAMESPACE: std::sync::OnceLock<(String, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    NAMESPACE.get_or_init(|| {
        test_image();
        Cluster::shared().runner_namespace("builds")
    })
}

/// A runner's backend in the build namespace, as its service account.
pub async fn kubernetes() -> Arc<KubernetesBackend> {
    kubernetes_named(&job_id("kube-runner")).await
}

/// The backend of the runner `name` (the same name again: the runner restarted).
pub async fn kubernetes_named(name: &str) -> Arc<KubernetesBackend> {
    let (_, kubeconfig) = tokio::task::spawn_blocking(build_namespace)
        .await
        .expect("the test cluster starts");
    let config = KubernetesConfig {
        kubeconfig: Some(kubeconfig.clone()),
        helper_image: HELPER_IMAGE.to_owned(),
        schedule_timeout: Duration::from_secs(3),
        ..KubernetesConfig::default()
    };
    let backend = KubernetesBackend::connect(name, config)
        .await
        .unwrap_or_else(|e| panic!("the test cluster's API server: {e}"));
    Arc::new(backend)
}

/// The cluster holds no pod or Secret of this runner any more.
pub async fn nothing_left(backend: Arc<KubernetesBackend>) {
    let left = backend
        .leftovers()
        .await
        .expect("list the runner's objects");
    let _ = backend.sweep().await;
    assert_eq!(left, (0, 0), "pods and secrets left behind");
}

// Every case but `a_large_log_arrives_whole`: a pod's log is read from the files the node
// keeps, which the container runtime rotates (here Docker's 10 MB x 3), and 40 MB written at
// once outrun any reader; `backend::a_log_within_the_nodes_rotation_arrives_whole` checks
// what the node keeps.
crate::backend_cases!(@each kubernetes().await, KUBERNETES, nothing_left;
    passing_steps_share_the_workspace,
    a_failure_stops_later_steps_and_runs_failure_handlers,
    graph_steps_run_concurrently,
    exit_78_ends_the_stage_early_as_passed,
    failure_fast_stops_running_steps,
    cancel_stops_within_seconds_and_skips_the_rest,
    step_and_stage_timeouts,
    secrets_are_masked,
    missing_secrets_are_an_error_before_the_step_runs,
    long_lines_and_binary_output,
    the_workspace_is_filled_from_a_directory,
    a_failed_step_is_retried_with_every_try_logged,
);
