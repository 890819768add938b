//! The runner protocol: the JSON bodies a runner and the server exchange over HTTP. A runner
//! long-polls for a stage (`POST /rpc/v1/request`), holds it under a lease identified by the
//! stage id and an epoch, reports step states and log batches, heartbeats, watches for a
//! cancellation, and reports the stage's end. Every call after the claim carries the epoch, so
//! a runner that lost its lease (it stopped heartbeating and the reaper ended the stage, or
//! the stage was handed to another runner) is refused with `409 Conflict`.
//!
//! Pure types; the HTTP lives in `gantry-server` (server side) and `gantry-runner` (client).
//!
//! # Code map
//!
//! The JSON bodies of the runner protocol (`WorkRequest`, `Assignment`, `Lease`, `StepUpdate`,
//! `LogBatch`, `Heartbeat`, `LeaseStatus`, `StageDone`, `GitCredential` (a token as basic auth,
//! or an SSH deploy key with the known hosts), `Netrc`) and its paths, `ssh` (SSH clone URLs,
//! `check_host_key` against OpenSSH `known_hosts` lines, GitHub's keys built in),
//! and `place(Offer, PipelineType, trusted) -> Result<Placement, Refusal>`: the one rule of what
//! runs where, used by the claim (store), the build page (why a stage waits) and the runner;
//! `labels_mismatch` is the same for labels and platform.
//! **Invariant:** only Docker isolates: an untrusted repository's stage is placed only in
//! containers; host execution needs a trusted repository and a runner offering host pipelines; a
//! type without a gantry backend (`kubernetes`, `vm`, `ssh`, ...) is never placed, and the server
//! errors such a build at creation. The match is exhaustive, so a new type cannot fall through.
//! **Boundary:** types and pure rules only.

pub mod registry;
pub mod ssh;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use gantry_pipeline::model::PipelineType;
use gantry_pipeline::{Stage, plan::CloneSpec};

/// The header carrying the runner secret: `Authorization: Bearer <GANTRY_RUNNER_SECRET>`.
pub const AUTHORIZATION: &str = "authorization";

/// Paths, relative to the server's base URL.
pub mod path {
    pub const REQUEST: &str = "/rpc/v1/request";
    /// A runner presents itself before it starts (and before it removes what an earlier
    /// life left): `409 Conflict` when another live runner has its name.
    pub const HELLO: &str = "/rpc/v1/hello";
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
    /// Random per process, after the lineage of its data folder (`LINEAGE.RANDOM`, see
    /// [`same_lineage`]).
    pub instance: String,
    /// What the runner offers; a stage's `labels` must all be among them.
    pub labels: BTreeMap<String, String>,
    /// `os/arch`, e.g. `linux/amd64`.
    pub platform: String,
    pub capacity: u32,
    /// Where it can run steps; the server hands it only stages [`place`] lets it run.
    #[serde(default)]
    pub offer: Offer,
    /// How long the server may hold the request open, at most 60 s.
    pub wait_ms: u64,
}

/// Whether two instances of a runner come from one data folder: a restart, which takes the
/// other's place, not a second runner of the same name, which the server refuses with `409
/// Conflict` while the other is alive. An instance is `LINEAGE.RANDOM`, the lineage a token
/// kept in the folder; one without a lineage is of none.
pub fn same_lineage(a: &str, b: &str) -> bool {
    match (a.split_once('.'), b.split_once('.')) {
        (Some((a, _)), Some((b, _))) => !a.is_empty() && a == b,
        _ => false,
    }
}

/// What of an instance id may be shown: its random part. The lineage lets a runner that holds
/// the runner secret take the place of a live runner of that name, so it is shown to no one.
pub fn shown_instance(instance: &str) -> &str {
    instance
        .split_once('.')
        .map_or(instance, |(_, random)| random)
}

/// Where a runner can run steps. A runner that offers nothing takes no work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Containers on a Docker engine: isolated from the runner's host.
    pub docker: bool,
    /// Pods on a Kubernetes cluster (`--backend kubernetes`): isolated too; runs `docker`
    /// pipelines as well as `kubernetes` ones.
    #[serde(default)]
    pub kubernetes: bool,
    /// Host processes, declared by the runner's operator (`--host-pipelines`): for trusted
    /// repositories only, since their steps act with the runner's rights on its machine.
    pub host: bool,
}

impl Offer {
    pub fn describe(self) -> String {
        let mut offers = Vec::new();
        if self.docker {
            offers.push("docker");
        }
        if self.kubernetes {
            offers.push("kubernetes");
        }
        let containers = offers.join(" and ");
        match (containers.is_empty(), self.host) {
            (false, true) => format!("{containers} and host pipelines"),
            (false, false) => containers,
            (true, true) => "host pipelines of trusted repositories".to_owned(),
            (true, false) => "nothing".to_owned(),
        }
    }
}

/// How a runner runs a stage it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In containers.
    Docker,
    /// In a pod of a Kubernetes cluster.
    Kubernetes,
    /// As processes on the runner's host.
    Host,
}

/// Why a runner may not run a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No gantry runner can run it: the build errors at once.
    #[error("gantry has no `{}` backend", .0.as_str())]
    NoBackend(PipelineType),
    /// This runner cannot, but another could: the stage waits for it.
    #[error("a `{}` stage of {} repository needs a runner that offers {}", .backend.as_str(), if *.trusted { "a trusted" } else { "an untrusted" }, .needs)]
    NotOffered {
        backend: PipelineType,
        trusted: bool,
        needs: &'static str,
    },
}

/// Why a runner offering `labels` on `platform` (`os/arch`) cannot take a stage that wants
/// `wanted` labels on `wanted_platform` (either part may be empty: any); `None` when it can.
/// The claim and the "why is it waiting" message both use this one rule.
pub fn labels_mismatch(
    labels: &BTreeMap<String, String>,
    platform: &str,
    wanted: &BTreeMap<String, String>,
    wanted_platform: &str,
) -> Option<String> {
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(k, v)| labels.get(*k) != Some(*v))
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect();
    if !missing.is_empty() {
        return Some(format!("no label {}", missing.join(", ")));
    }
    let mut want = wanted_platform.split('/');
    let mut have = platform.split('/');
    // os, arch, variant: each part the stage names must be the runner's.
    let fits = (0..3).all(|_| match (want.next(), have.next()) {
        (None | Some(""), _) => true,
        (Some(wanted), have) => have == Some(wanted),
    });
    (!fits).then(|| format!("it is {platform}, not {wanted_platform}"))
}

/// The one rule of what runs where: only containers isolate (Docker's, or a Kubernetes
/// pod's), so an untrusted repository's stage runs only in them; host execution needs a
/// trusted repository and a runner that declares it. A type is never run on a backend other
/// than the one it names, except that a `docker` stage runs in a pod on a runner that offers
/// Kubernetes and no Docker (the team's files run on the cluster unchanged), and a trusted
/// repository's `docker` stage may run on a host-only runner (its operator chose host
/// execution for trusted work).
pub fn place(offer: Offer, backend: PipelineType, trusted: bool) -> Result<Placement, Refusal> {
    let not_offered = |needs| Refusal::NotOffered {
        backend,
        trusted,
        needs,
    };
    match backend {
        PipelineType::Docker if offer.docker => Ok(Placement::Docker),
        PipelineType::Docker if offer.kubernetes => Ok(Placement::Kubernetes),
        PipelineType::Docker if offer.host && trusted => Ok(Placement::Host),
        PipelineType::Docker if trusted => Err(not_offered("docker, kubernetes or host pipelines")),
        PipelineType::Docker => Err(not_offered("docker or kubernetes")),
        PipelineType::Local if offer.host && trusted => Ok(Placement::Host),
        PipelineType::Local => Err(not_offered("host pipelines (`--host-pipelines`)")),
        PipelineType::Kubernetes if offer.kubernetes => Ok(Placement::Kubernetes),
        PipelineType::Kubernetes => Err(not_offered("kubernetes (`--backend kubernetes`)")),
        PipelineType::Vm
        | PipelineType::Ssh
        | PipelineType::DigitalOcean
        | PipelineType::MacStadium => Err(Refusal::NoBackend(backend)),
    }
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
    /// For this stage only: never stored with the build, masked in every log.
    #[serde(default)]
    pub clone_credential: Option<GitCredential>,
    /// Drone's `DRONE_NETRC_*` for steps that run git themselves; absent for a pull request
    /// from a fork unless the repository gives forks its secrets.
    #[serde(default)]
    pub netrc: Option<Netrc>,
    /// Whether the repository is trusted: the runner checks [`place`] again with it.
    #[serde(default)]
    pub trusted: bool,
    /// Secret values by name, for the stage's `from_secret` references.
    pub secrets: BTreeMap<String, String>,
    /// Secrets the stage references but may not have, with the reason (a step that needs
    /// one fails, saying it).
    #[serde(default)]
    pub withheld_secrets: BTreeMap<String, String>,
    /// Logins for private registries the stage's images come from (its `image_pull_secrets`
    /// and the repository's, owner's and server's registry entries); masked in every log.
    #[serde(default)]
    pub registries: Vec<registry::RegistryCredential>,
    /// Heartbeat at least this often, or lose the lease.
    pub heartbeat_ms: u64,
}

/// How a clone authenticates. Its `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GitCredential {
    /// HTTP basic auth: GitHub takes user `x-access-token` and a token as the password.
    Basic { username: String, password: String },
    /// An SSH private key (a deploy key) for `ssh://` and `user@host:` URLs, as the user the
    /// URL names; the git server's host key must be one of `known_hosts`
    /// ([`ssh::check_host_key`]).
    SshKey {
        username: String,
        private_key: String,
        known_hosts: String,
    },
}

impl GitCredential {
    /// The values to mask in logs.
    pub fn secret(&self) -> &str {
        match self {
            GitCredential::Basic { password, .. } => password,
            GitCredential::SshKey { private_key, .. } => private_key,
        }
    }

    /// What the credential is, for messages, without its value.
    pub fn describe(&self) -> String {
        match self {
            GitCredential::Basic { username, .. } => {
                format!("HTTP basic auth as `{username}` with a token")
            }
            GitCredential::SshKey { username, .. } => {
                format!("an SSH deploy key as `{username}`")
            }
        }
    }
}

impl std::fmt::Debug for GitCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GitCredential({})", self.describe())
    }
}

/// A `.netrc` entry as Drone's runners give it to steps.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Netrc {
    pub machine: String,
    pub username: String,
    pub password: String,
}

impl Netrc {
    /// `DRONE_NETRC_*` and Woodpecker's `CI_NETRC_*`.
    pub fn environment(&self) -> [(String, String); 6] {
        let pairs = [
            ("MACHINE", &self.machine),
            ("USERNAME", &self.username),
            ("PASSWORD", &self.password),
        ];
        let var =
            |prefix: &str, i: usize| (format!("{prefix}_NETRC_{}", pairs[i].0), pairs[i].1.clone());
        [
            var("DRONE", 0),
            var("DRONE", 1),
            var("DRONE", 2),
            var("CI", 0),
            var("CI", 1),
            var("CI", 2),
        ]
    }
}

impl std::fmt::Debug for Netrc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netrc")
            .field("machine", &self.machine)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The state of a build, a stage or a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A stage waiting for the stages it depends on.
    Waiting,
    /// Queued (stage), created but not started (build, step).
    Pending,
    Running,
    Success,
    Failure,
    /// Could not run: an invalid pipeline file, a lost runner, a missing image.
    Error,
    /// Cancelled.
    Killed,
    Skipped,
    /// Waiting for an approval.
    Blocked,
    Declined,
}

/// What a runner reports, as a build's, stage's or step's status: the one conversion.
impl From<StepState> for Status {
    fn from(state: StepState) -> Self {
        match state {
            StepState::Running => Status::Running,
            StepState::Success => Status::Success,
            StepState::Failure => Status::Failure,
            StepState::Error => Status::Error,
            StepState::Killed => Status::Killed,
            StepState::Skipped => Status::Skipped,
        }
    }
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Waiting,
        Status::Pending,
        Status::Running,
        Status::Success,
        Status::Failure,
        Status::Error,
        Status::Killed,
        Status::Skipped,
        Status::Blocked,
        Status::Declined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Error => "error",
            Status::Killed => "killed",
            Status::Skipped => "skipped",
            Status::Blocked => "blocked",
            Status::Declined => "declined",
        }
    }

    /// Nothing will change it any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Success
                | Status::Failure
                | Status::Error
                | Status::Killed
                | Status::Skipped
                | Status::Declined
        )
    }

    /// A final state that lets only `status: failure` work run after it.
    pub fn is_failed(self) -> bool {
        matches!(self, Status::Failure | Status::Error | Status::Killed)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status `{s}`: expected one of {}",
                    Status::ALL.map(Status::as_str).join(", ")
                )
            })
    }
}

impl TryFrom<String> for Status {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        value.parse()
    }
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

/// The body of every refusal: its kind (`invalid`, `unauthorized`, `forbidden`, `not_found`,
/// `conflict`, `too_large`, `upstream`, `unavailable`, `internal`) and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
    /// The request's field that is wrong, for `invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The role that would be allowed, for `forbidden`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_of_one_folder_are_of_one_lineage() {
        assert!(same_lineage("ab12.0001", "ab12.ffff"));
        assert!(!same_lineage("ab12.0001", "cd34.0001"));
        // Without a lineage (older runners, tests), never.
        assert!(!same_lineage("0001", "0001"));
        assert!(!same_lineage(".0001", ".0002"));
        assert_eq!(shown_instance("ab12.0001"), "0001");
        assert_eq!(shown_instance("0001"), "0001");
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
        }
        assert!(
            "done"
                .parse::<Status>()
                .expect_err("unknown")
                .contains("expected one of")
        );
    }

    const EVERY_TYPE: [PipelineType; 7] = [
        PipelineType::Docker,
        PipelineType::Local,
        PipelineType::Kubernetes,
        PipelineType::Vm,
        PipelineType::Ssh,
        PipelineType::DigitalOcean,
        PipelineType::MacStadium,
    ];

    #[test]
    fn an_untrusted_stage_runs_only_in_containers() {
        for docker in [false, true] {
            for kubernetes in [false, true] {
                for host in [false, true] {
                    let offer = Offer {
                        docker,
                        kubernetes,
                        host,
                    };
                    for backend in EVERY_TYPE {
                        let placed = place(offer, backend, false);
                        let expected = match backend {
                            PipelineType::Docker if docker => Some(Placement::Docker),
                            PipelineType::Docker | PipelineType::Kubernetes if kubernetes => {
                                Some(Placement::Kubernetes)
                            }
                            _ => None,
                        };
                        assert_eq!(placed.ok(), expected, "{offer:?} {backend:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn host_execution_needs_trust_and_a_runner_that_declares_it() {
        let host_only = Offer {
            host: true,
            ..Offer::default()
        };
        let both = Offer {
            docker: true,
            host: true,
            ..Offer::default()
        };
        let docker_only = Offer {
            docker: true,
            ..Offer::default()
        };
        assert_eq!(
            place(host_only, PipelineType::Local, true),
            Ok(Placement::Host)
        );
        assert_eq!(
            place(host_only, PipelineType::Docker, true),
            Ok(Placement::Host)
        );
        assert_eq!(
            place(both, PipelineType::Docker, true),
            Ok(Placement::Docker)
        );
        assert!(matches!(
            place(docker_only, PipelineType::Local, true),
            Err(Refusal::NotOffered { .. })
        ));
        assert!(matches!(
            place(Offer::default(), PipelineType::Docker, true),
            Err(Refusal::NotOffered { .. })
        ));
    }

    #[test]
    fn a_type_without_a_backend_is_never_placed() {
        let both = Offer {
            docker: true,
            kubernetes: true,
            host: true,
        };
        for backend in EVERY_TYPE.into_iter().filter(|b| !b.is_supported()) {
            for trusted in [false, true] {
                assert_eq!(
                    place(both, backend, trusted),
                    Err(Refusal::NoBackend(backend))
                );
            }
        }
    }

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
