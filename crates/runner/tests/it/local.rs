//! The semantic cases on the local backend (host processes).

use std::sync::Arc;

use gantry_runner::LocalBackend;

use crate::support::{Flavour, job_id};

const LOCAL: Flavour = Flavour {
    pipeline_type: "exec",
    image: "unused",
    start_secs: 0,
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

crate::backend_cases!(local(), LOCAL, nothing_left);
