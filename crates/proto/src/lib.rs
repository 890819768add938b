//! The runner protocol: the JSON bodies a runner and the server exchange over HTTP. A runner
//! long-polls for a stage (`POST /rpc/v1/request`), holds it under a lease identified by the
//! stage id and an epoch, reports step states and log batches, heartbeats, watches for a
//! cancellation, and reports the stage's end. Every call after the claim carries the epoch, so
//! a runner that lost its lease (it stopped heartbeating and the reaper ended the stage, or
//! the stage was handed to another runner) is refused with `409 Conflict`.
//!
//! Pure types; the HTTP lives in `gantry-server` (server side) and `gantry-runner` (client).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use gantry_pipeline::{Stage, plan::CloneSpec};

/// The header carrying the runner secret: `Authorization: Bearer <GANTRY_RUNNER_SECRET>`.
pub const AUTHORIZATION: &str = "authorization";

/// Paths, relative to the server's base URL.
pub mod path {
    pub const REQUEST: &str = "/rpc/v1/request";
    pub fn step(stage: i64) -> String {
        format!("/rpc/v1/stages/{stage}/step")
    }
    pub fn logs(stage: i64) -> String {
        format!("/rpc/v1/stages/{stage}/logs")
    }
    pub fn heartbeat(stage: i64) -> String {
        format!("/rpc/v1/stages/{stage}/heartbeat")
    }
    pub fn watch(stage: i64) -> String {
        format!("/rpc/v1/stages/{stage}/watch")
    }
    pub fn done(stage: i64) -> String {
        format!("/rpc/v1/stages/{stage}/done")
    }
}

/// A runner asking for work. The server answers with an [`Assignment`] as soon as a stage the
/// runner can take is queued, or `204 No Content` after `wait_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkRequest {
    /// Stable across restarts: stages leased to a runner of this name but another
    /// `instance` are known to be lost and are ended at once.
    pub runner: String,
    /// Random per process.
    pub instance: String,
    /// What the runner offers; a stage's `labels` must all be among them.
    pub labels: BTreeMap<String, String>,
    /// `os/arch`, e.g. `linux/amd64`.
    pub platform: String,
    pub capacity: u32,
    /// How long the server may hold the request open, at most 60 s.
    pub wait_ms: u64,
}

/// A stage handed to a runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub lease: Lease,
    /// Names what the backend creates; unique per claim.
    pub job_id: String,
    pub stage: Stage,
    /// The clone, with the credentials to use for it (never part of a logged URL).
    pub clone: Option<CloneSpec>,
    pub clone_token: Option<String>,
    /// Secret values by name, for the stage's `from_secret` references.
    pub secrets: BTreeMap<String, String>,
    /// Secrets the stage references but may not have, with the reason (a step that needs
    /// one fails, saying it).
    #[serde(default)]
    pub withheld_secrets: BTreeMap<String, String>,
    /// Heartbeat at least this often, or lose the lease.
    pub heartbeat_ms: u64,
}

/// A runner's claim on a stage: the stage id and the claim's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    pub stage: i64,
    pub epoch: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Running,
    Success,
    Failure,
    Error,
    Killed,
    Skipped,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Running => "running",
            StepState::Success => "success",
            StepState::Failure => "failure",
            StepState::Error => "error",
            StepState::Killed => "killed",
            StepState::Skipped => "skipped",
        }
    }
}

/// A step started or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUpdate {
    pub epoch: i64,
    pub step: String,
    pub state: StepState,
    pub exit_code: Option<i32>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// Consecutive log lines of one step, already masked. Resending a batch is harmless: lines
/// are stored by number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBatch {
    pub epoch: i64,
    pub step: String,
    pub lines: Vec<LogLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// 1-based within the step.
    pub number: u64,
    /// Milliseconds since the step started.
    pub elapsed_ms: u64,
    pub text: String,
}

/// Keeps the lease, and learns whether the stage was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub epoch: i64,
}

/// Answer to a heartbeat or a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    pub cancelled: bool,
}

/// The stage ended. `state` is success, failure, error or killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageDone {
    pub epoch: i64,
    pub state: StepState,
    pub error: Option<String>,
    /// Final states of every step, in case a step update was lost.
    pub steps: Vec<StepUpdate>,
}

/// The body of every refusal: what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_states_are_lowercase_on_the_wire() {
        let json = serde_json::to_string(&StepState::Killed).expect("serialises");
        assert_eq!(json, "\"killed\"");
        for state in [
            StepState::Running,
            StepState::Success,
            StepState::Failure,
            StepState::Error,
            StepState::Killed,
            StepState::Skipped,
        ] {
            let json = serde_json::to_string(&state).expect("serialises");
            assert_eq!(json.trim_matches('"'), state.as_str());
        }
    }

    #[test]
    fn a_log_batch_round_trips() {
        let batch = LogBatch {
            epoch: 3,
            step: "test".into(),
            lines: vec![LogLine {
                number: 1,
                elapsed_ms: 12,
                text: "ok \u{1b}[32mgreen\u{1b}[0m".into(),
            }],
        };
        let json = serde_json::to_string(&batch).expect("serialises");
        assert_eq!(
            serde_json::from_str::<LogBatch>(&json).expect("parses"),
            batch
        );
    }
}
