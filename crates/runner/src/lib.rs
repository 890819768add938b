//! gantry's runner: executes one stage of a [`gantry_pipeline::Plan`] on a [`Backend`].
//!
//! The [`Executor`] owns everything that is the same for every backend: the order of steps,
//! status gating, timeouts, cancellation, secret masking, log capping and reporting. Backends
//! only set up a stage, run a step while streaming its output, and tear down.

pub mod backend;
pub mod clone;
pub mod docker;
pub mod executor;
pub mod local;
pub mod logs;
pub mod remote;

pub use backend::{Backend, BackendError, Output, StepExit, StepSpec};
pub use clone::{CloneError, CloneSource};
pub use docker::DockerBackend;
pub use executor::{
    Executor, ExecutorConfig, Job, Reporter, StageResult, StepResult, WorkspaceSource,
};
/// A step's state: what the executor reports and the protocol carries (a result is never
/// `Running`).
pub use gantry_proto::StepState;
pub use local::LocalBackend;
pub use logs::{LogLine, MASK, Masker};
pub use remote::{RemoteConfig, RemoteError, RemoteRunner};

/// `bytes` random bytes as hex: the one way the runner names what must not collide (its
/// instance, spare networks).
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the operating system provides randomness");
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}
