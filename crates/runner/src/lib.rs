//! gantry's runner: executes one stage of a [`gantry_pipeline::Plan`] on a [`Backend`].
//!
//! The [`Executor`] owns everything that is the same for every backend: the order of steps,
//! status gating, timeouts, cancellation, secret masking, log capping and reporting. Backends
//! only set up a stage, run a step while streaming its output, and tear down.
//!
//! # Code map
//!
//! `Executor::run(Job, Arc<dyn Reporter>, CancellationToken) -> StageResult` runs one stage on
//! an `Arc<dyn Backend>`.
//!
//! - `backend` — the `Backend` trait: `setup`, `import_workspace`, `run_step` (streams raw
//!   output to a channel, stops within 2 s when its token fires), `destroy`. **Invariant:**
//!   `destroy` is idempotent, safe after a half-done setup, and always called — after the run,
//!   or by `TeardownGuard` when the executor's future is dropped.
//! - `schedule` — the stage's scheduler, pure state tested table by table: which step is
//!   due, skipped (and why) or readied ahead, what a step's end means for the rest, how the
//!   stage ends. The executor asks it and tells it; it decides alone.
//! - `executor` — services first, then steps as the scheduler hands them out, each gated with
//!   `PlanStep::runs_when` at the moment it is due (`executor::step` runs one); a failed step with `retry` runs again
//!   (`StepSpec::attempt`, a fresh container per try) with its lines numbered on; `failure: fast` cancels running steps, exit
//!   78 ends the stage as passed, step and stage timeouts, cancellation, missing secrets as
//!   errors before the step starts. Step failure is `StepState::Failure`; a backend error is
//!   `StepState::Error`.
//! - `logs` — `LineSplitter` (lines across writes, long lines cut, binary lossy), `Masker`
//!   (values, lines of multi-line values, base64 and URL forms; a secret split over two writes
//!   is joined before masking, and no prefix of one leaves early), `LogCap` (head and tail).
//! - `local` — host processes in their own process group (cancel kills the whole tree), a
//!   workspace folder per job.
//! - `clone` — git2: fetches the exact commit (or its ref: branch, tag, `refs/pull/N/head`),
//!   shallow where the server allows, the token only through the credential callback; the
//!   folder is then imported like any other source (`WorkspaceSource`).
//! - `docker` — bollard: a network and a workspace volume per job, containers aliased by step
//!   name (the container itself is `docker::spec`, a pure function of the job and the step), the
//!   pull policy, the workspace filled through the archive API (never a host path). Output is
//!   attached before start (never `/logs`, which loses lines when the engine rotates its log
//!   files). The next steps' containers are created while earlier steps run and attached to
//!   (`Backend::prepare_step`; `discard_step` removes one whose gate stays shut). Steps join the
//!   network namespace of the stage's holder container (`docker::holder`), so only `start` and
//!   `wait` are between two steps. A runner keeps spare bridge networks made ahead of time
//!   (`keep_spare_networks`, its capacity): creating one is the slowest call before a stage's
//!   first container starts. **Invariant:** everything created carries `gantry.runner` and
//!   `gantry.job` labels (a spare carries `gantry.spare` until a job takes it, and is removed by
//!   name with that job); `destroy` first waits for creations in flight, then removes by job
//!   label; `sweep` / `sweep_gone` remove by runner label. A step's `ContainerOptions` become the
//!   container's host config (DNS, hosts, devices, port bindings, capabilities, limits, tmpfs).
//! - `docker::cache` — caches between builds: a named volume per repository, scope and name
//!   (`gantry.cache` label, no runner or job label, so teardown and sweeps leave them), created
//!   at setup and filled from the fallback scope's through two never-started containers and the
//!   archive API; expired ones are removed at setup, one grown past the cap after the stage.
//! - `remote` — `RemoteRunner`: the runner protocol's client. `capacity` workers long-poll for
//!   an `Assignment`, run it on the `Executor`, and send reports in order from one task (log
//!   lines batched per step, 20 ms or 1,000 lines), a heartbeat task and a watch task (held
//!   open so a cancel arrives at once). A `409` means the lease is gone: the stage is cancelled
//!   here and nothing more is sent. The stage's end is retried while the server is unreachable.
//!   Every request carries the runner's `Offer` (Docker when it has an engine; host processes
//!   only when its operator passed `--host-pipelines`); `backend_for` checks each assignment
//!   again with `gantry_proto::place` and refuses (errors the stage) what the offer may not run.
//!   The clone's credential and the steps' `Netrc` come with the assignment and are masked.
//!   **Invariant:** a runner checks every untrusted assignment with
//!   `gantry_pipeline::trust::check_stage` before it creates anything, and errors the stage naming
//!   each broken rule: the executor never trusts the compiler alone. A runner's name is unique:
//!   it presents itself (`/rpc/v1/hello`) before it sweeps anything, the server refuses a second
//!   live runner of one name (`409`) unless its instance is of the same lineage (a token kept in
//!   the runner's data folder, `gantry_proto::same_lineage`: a restart), and the job
//!   id it gives the backend carries its name, so every Docker name and `gantry.job` label does.
//!
//! **Boundary:** backends know nothing of the graph, `when`, masking or reporting; the
//! executor knows nothing of HTTP.

pub mod backend;
pub mod clone;
pub mod docker;
pub mod executor;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod local;
pub mod logs;
pub mod remote;
mod schedule;

pub use backend::{Backend, BackendError, Output, StepExit, StepSpec};
pub use clone::{CloneError, CloneSource};
pub use docker::{DEFAULT_PULL_TIMEOUT, DockerBackend};
pub use executor::{
    Executor, ExecutorConfig, Job, Reporter, StageResult, StepResult, WorkspaceSource,
};
/// A step's state: what the executor reports and the protocol carries (a result is never
/// `Running`).
pub use gantry_proto::StepState;
pub use local::LocalBackend;
pub use logs::{LogLine, MASK, Masker};
pub use remote::{RemoteConfig, RemoteError, RemoteRunner, RunnerBackends};

/// `bytes` random bytes as hex: the one way the runner names what must not collide (its
/// instance, spare networks).
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the operating system provides randomness");
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}
