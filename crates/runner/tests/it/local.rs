//! The semantic cases on the local backend (host processes).

use std::sync::Arc;

use gantry_runner::LocalBackend;

use crate::support::{Flavour, job_id};

const LOCAL: Flavour = Flavour {
    pipeline_type: "exec",
    image: "unused",
};

fn local() -> Arc<LocalBackend> {
    Arc::new(LocalBackend::new(
        std::env::temp_dir()
            .join("gantry-tests")
            .join(job_id("local-backend")),
    ))
}

/// Nothing of any job is left in the backend's folder.
async fn nothing_left(backend: Arc<LocalBackend>) {
    let root = backend.root().to_owned();
    let left: Vec<_> = std::fs::read_dir(&root)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&root);
    assert!(left.is_empty(), "left behind: {left:?}");
}

crate::backend_cases!(local(), LOCAL, nothing_left;
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
    a_large_log_arrives_whole,
);
