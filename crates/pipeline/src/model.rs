//! The typed model of a pipeline file, the same for every dialect: what the file says, with
//! positions, before it is applied to a build. `decode` makes it, `validate` checks it,
//! `compile` turns it into a [`Plan`](crate::plan::Plan).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::diag::Pos;

/// Which syntax a file is written in; detected from its content, not its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// gantry's own format: Drone 1.x documents (`kind: pipeline`, `steps:` lists).
    Gantry,
    /// Drone 0.8: a top-level `pipeline:` map of named steps.
    DroneLegacy,
    /// Woodpecker: `steps:` as a map or list, top-level `when`, `labels`, `matrix`.
    Woodpecker,
}

impl Dialect {
    pub fn describe(self) -> &'static str {
        match self {
            Dialect::Gantry => "gantry (Drone 1.x)",
            Dialect::DroneLegacy => "Drone 0.8 (legacy `pipeline:` map)",
            Dialect::Woodpecker => "Woodpecker",
        }
    }
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spanned<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Spanned<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Self { value, pos }
    }
}

/// The execution backend a pipeline asks for (`type:`): every type of Drone's runners, so
/// that a file written for one of them is read as its author meant, even where gantry has no
/// backend for it (a build that runs such a pipeline errors, saying so; it is never run on
/// another backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineType {
    Docker,
    /// Host processes: Drone's `exec`, Woodpecker's `local`.
    Local,
    Kubernetes,
    /// Drone's VM runners (`drone-runner-aws`: a fresh cloud machine per build).
    Vm,
    Ssh,
    DigitalOcean,
    MacStadium,
}

impl PipelineType {
    /// The word a pipeline file uses for it.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineType::Docker => "docker",
            PipelineType::Local => "exec",
            PipelineType::Kubernetes => "kubernetes",
            PipelineType::Vm => "vm",
            PipelineType::Ssh => "ssh",
            PipelineType::DigitalOcean => "digitalocean",
            PipelineType::MacStadium => "macstadium",
        }
    }

    /// Whether gantry has a backend for it. The others are read, planned and refused.
    pub fn is_supported(self) -> bool {
        match self {
            PipelineType::Docker | PipelineType::Local | PipelineType::Kubernetes => true,
            PipelineType::Vm
            | PipelineType::Ssh
            | PipelineType::DigitalOcean
            | PipelineType::MacStadium => false,
        }
    }

    /// Why a pipeline of this type cannot run, for one named `pipeline`; `None` when gantry
    /// has a backend for it.
    pub fn unsupported_reason(self, pipeline: &str) -> Option<String> {
        if self.is_supported() {
            return None;
        }
        Some(format!(
            "pipeline `{pipeline}` is `type: {}`, and gantry has no {} backend, so it cannot run as written: change it to `type: docker` to run its steps in containers on a Docker runner (or `type: exec` to run them on a trusted runner's host)",
            self.as_str(),
            self.as_str()
        ))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: Option<String>,
    pub arch: Option<String>,
    pub variant: Option<String>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneConfig {
    pub disable: bool,
    pub depth: Option<u32>,
    pub skip_verify: bool,
    pub tags: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceConfig {
    pub base: Option<String>,
    pub path: Option<String>,
}

/// One pipeline (Drone) or workflow (Woodpecker): a stage of a build.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub name: Spanned<String>,
    /// The file it was read from.
    pub file: String,
    pub dialect: Dialect,
    pub pos: Pos,
    pub kind: PipelineType,
    pub platform: Platform,
    /// Runner labels the stage needs (`node:` in Drone, `labels:` in Woodpecker).
    pub labels: BTreeMap<String, String>,
    pub steps: Vec<Step>,
    pub services: Vec<Step>,
    pub volumes: Vec<Volume>,
    /// Alternatives, any of which lets the pipeline run; empty means always.
    pub trigger: Vec<Conditions>,
    pub depends_on: Vec<Spanned<String>>,
    /// Entries of `depends_on` written `{name: X, optional: true}` (Woodpecker 3): a name the
    /// build does not have is dropped, not refused.
    pub optional_depends_on: BTreeSet<String>,
    /// Statuses of the pipelines it depends on under which it runs.
    pub runs_on: StatusFilter,
    pub clone: CloneConfig,
    pub workspace: WorkspaceConfig,
    pub environment: Vec<EnvVar>,
    pub matrix: Option<Matrix>,
    pub timeout: Option<Spanned<u64>>,
    /// Steps form a graph (some step has `depends_on`) rather than a sequence.
    pub graph: bool,
    /// Chat targets the pipeline's builds post to, beside the repository's.
    pub notify: Vec<NotifySpec>,
    /// Drone's `image_pull_secrets`: secrets holding a Docker `config.json` whose logins pull
    /// the stage's images.
    pub pull_secrets: Vec<String>,
    /// Drone's `concurrency: {limit: N}`: at most N stages of this pipeline (by name) run at
    /// once across the repository's builds.
    pub concurrency: Option<Spanned<u32>>,
    /// `lock: NAME`: no two stages holding NAME run at once, across builds and repositories.
    pub lock: Option<Spanned<String>>,
    /// Woodpecker's `concurrency: {limit: 1, group: NAME}`: one stage of the group at a time
    /// in the repository (a lock named after the repository and the group).
    pub group: Option<Spanned<String>>,
    /// Where and how its pod runs on Kubernetes.
    pub pod: PodOptions,
    /// The environment it deploys to (`deploy:`).
    pub deploy: Option<DeployConfig>,
}

/// `deploy: {environment, url, on_stop, auto_stop_in}`: the environment a pipeline deploys
/// to, as written (`${VAR}`s substituted when compiled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployConfig {
    pub environment: Spanned<String>,
    pub url: Option<String>,
    /// The pipeline of the same file that tears the environment down.
    pub on_stop: Option<Spanned<String>>,
    /// Seconds without a new deployment after which the environment stops by itself.
    pub auto_stop_secs: Option<u64>,
    pub pos: Pos,
}

/// How a stage's pod is placed and described on Kubernetes: Drone's keys of `type:
/// kubernetes` pipelines (`metadata`, `service_account_name`, `node_selector`, `tolerations`,
/// `dns_config`, `host_aliases`). Read only by a runner on a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<PodDns>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_aliases: Vec<HostAlias>,
    /// The RuntimeClass its containers run under (Woodpecker's `runtimeClassName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class: Option<String>,
    /// The group that owns the pod's volumes (Woodpecker's `securityContext.fsGroup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<i64>,
}

impl PodOptions {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A taint the pod tolerates (Kubernetes' fields, in Drone's spelling).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Exists` or `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// The pod's resolver (`dns_config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodDns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    /// `name` or `name:value` resolver options (e.g. `ndots:2`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<(String, Option<String>)>,
}

/// Names the pod's hosts file gives an address (`host_aliases`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAlias {
    pub ip: String,
    pub hostnames: Vec<String>,
}

/// A chat service a `notify:` entry (or a repository's chat target) posts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum ChatKind {
    Slack,
    Mattermost,
    RocketChat,
    Discord,
    Teams,
    GoogleChat,
}

impl ChatKind {
    pub const ALL: [ChatKind; 6] = [
        ChatKind::Slack,
        ChatKind::Mattermost,
        ChatKind::RocketChat,
        ChatKind::Discord,
        ChatKind::Teams,
        ChatKind::GoogleChat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::Slack => "slack",
            ChatKind::Mattermost => "mattermost",
            ChatKind::RocketChat => "rocketchat",
            ChatKind::Discord => "discord",
            ChatKind::Teams => "teams",
            ChatKind::GoogleChat => "googlechat",
        }
    }
}

/// When a `notify:` entry (or a repository's chat target) posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum NotifyRule {
    /// A build that failed or errored.
    Failure,
    /// The first success on a branch after a failure.
    Recovery,
    Success,
    /// Every build that ran.
    Always,
}

impl NotifyRule {
    pub const ALL: [NotifyRule; 4] = [
        NotifyRule::Failure,
        NotifyRule::Recovery,
        NotifyRule::Success,
        NotifyRule::Always,
    ];

    /// The rules of a target that names none: a failure, and the first success after one.
    pub const DEFAULT: [NotifyRule; 2] = [NotifyRule::Failure, NotifyRule::Recovery];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyRule::Failure => "failure",
            NotifyRule::Recovery => "recovery",
            NotifyRule::Success => "success",
            NotifyRule::Always => "always",
        }
    }
}

/// Names from a closed list: parsed with an error that lists them, shown as written.
macro_rules! named {
    ($($ty:ident: $what:literal),* $(,)?) => {
        $(
            impl std::str::FromStr for $ty {
                type Err = String;
                fn from_str(s: &str) -> Result<Self, String> {
                    $ty::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
                        let names: Vec<&str> = $ty::ALL.iter().map(|v| v.as_str()).collect();
                        format!(concat!("unknown ", $what, " `{}`: use one of {}"), s, names.join(", "))
                    })
                }
            }

            impl TryFrom<String> for $ty {
                type Error = String;
                fn try_from(s: String) -> Result<Self, String> {
                    s.parse()
                }
            }

            impl std::fmt::Display for $ty {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str(self.as_str())
                }
            }

            impl PartialEq<&str> for $ty {
                fn eq(&self, other: &&str) -> bool {
                    self.as_str() == *other
                }
            }
        )*
    };
}

named!(ChatKind: "chat service", NotifyRule: "rule");

/// One entry of a pipeline's `notify:` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifySpec {
    pub kind: ChatKind,
    /// The incoming webhook's URL, given in the file.
    pub url: Option<String>,
    /// Or the name of the secret that holds it (`url: {from_secret: NAME}`).
    pub url_secret: Option<String>,
    /// By default [`NotifyRule::DEFAULT`].
    pub on: Vec<NotifyRule>,
    pub branches: Vec<String>,
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pull {
    /// Pull only when the image is missing (Drone's `default` / `if-not-exists`).
    IfNotExists,
    Always,
    Never,
}

/// What a step's failure does to its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    /// The stage fails; later steps run only if their `status` condition allows.
    Fail,
    /// The step is recorded as failed; the stage goes on as passing.
    Ignore,
    /// The stage fails and running steps are cancelled.
    Fast,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum EnvValue {
    Text(String),
    /// `from_secret: name`, filled in by the runner.
    Secret(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: EnvValue,
    pub pos: Pos,
}

/// A plugin setting: a JSON value, or a secret to fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum SettingValue {
    Value(serde_json::Value),
    Secret(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub name: String,
    pub value: SettingValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum VolumeSource {
    /// A directory of the host: only for trusted repositories.
    Host { path: String },
    /// A volume that lives as long as the stage; `memory` asks for tmpfs.
    Temp { memory: bool },
    /// A cache that persists across builds of the repository, on the runner's engine, scoped
    /// by the stage's [`CacheSpec`](crate::plan::CacheSpec): a step's `cache:` paths, and the
    /// named volumes Woodpecker and Drone 0.8 steps mount.
    Cache,
}

/// A volume declared at the pipeline level (`volumes:` with `host` or `temp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub source: VolumeSource,
    pub pos: Pos,
}

/// Where a step mounts a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Mount {
    /// A pipeline volume by name.
    Named { name: String, path: String },
    /// `/host/path:/container/path[:ro]`, written in the step (Woodpecker, Drone 0.8).
    Host {
        host: String,
        path: String,
        read_only: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMount {
    pub mount: Mount,
    pub pos: Pos,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSet {
    /// Thousandths of a CPU.
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub limits: ResourceSet,
    pub requests: ResourceSet,
}

/// A host device a container gets (`devices:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub source: DeviceSource,
    /// Where the container sees it.
    pub path: String,
    /// cgroup permissions, e.g. `rwm` (Docker's default).
    pub permissions: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum DeviceSource {
    /// A device path of the runner's host (`/dev/fuse:/dev/fuse`, Woodpecker and Compose).
    Host(String),
    /// A pipeline volume with a host path (`{name, path}`, Drone); a plan holds only `Host`.
    Volume(String),
}

/// A port of a service or step (`ports:`); a host port publishes it on the runner's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub container: u16,
    pub host: Option<u16>,
    pub udp: bool,
}

/// Docker options of a step or service beyond its image, command and mounts (Drone's and
/// Woodpecker's container keys), each applied through the engine's create options. Empty
/// by default and left out of a plan's JSON when empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerOptions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `name:address` lines added to the container's `/etc/hosts`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Size of `/dev/shm` in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// Memory plus swap in bytes; `-1` is unlimited swap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memswap_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// Microseconds of CPU per `cpu_period` (100 ms unless given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<u64>,
    /// CPUs the container may use, e.g. `0-1` or `0,2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_set: Option<String>,
    /// In-memory mounts: a path, and Docker's tmpfs options (`size=64m,mode=1777`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<(String, String)>,
    /// Kubernetes refuses to start the container as root (Woodpecker's
    /// `securityContext.runAsNonRoot`); only a pod can check it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    /// The container's seccomp profile on Kubernetes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SecurityProfile>,
    /// The container's AppArmor profile on Kubernetes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apparmor_profile: Option<SecurityProfile>,
}

/// A seccomp or AppArmor profile, as Kubernetes names one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "name")]
pub enum SecurityProfile {
    /// The container runtime's default confinement.
    RuntimeDefault,
    /// A profile loaded on the node, by its name (AppArmor) or its file under the kubelet's
    /// seccomp folder.
    Localhost(String),
    /// No confinement at all.
    Unconfined,
}

impl ContainerOptions {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A step or a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: Spanned<String>,
    pub pos: Pos,
    pub image: Option<Spanned<String>>,
    pub pull: Pull,
    pub commands: Vec<String>,
    pub entrypoint: Vec<String>,
    pub command: Vec<String>,
    pub environment: Vec<EnvVar>,
    pub settings: Vec<Setting>,
    /// Alternatives (Woodpecker lists them), any of which lets the step run; empty means always.
    pub when: Vec<Conditions>,
    /// `None` when the key is absent: in a graph such a step starts at once.
    pub depends_on: Option<Vec<Spanned<String>>>,
    /// Entries of `depends_on` written `{name: X, optional: true}`: dropped when the pipeline
    /// has no such step.
    pub optional_depends_on: BTreeSet<String>,
    pub failure: Failure,
    pub detach: bool,
    pub privileged: Spanned<bool>,
    pub mounts: Vec<StepMount>,
    pub network_mode: Option<Spanned<String>>,
    pub user: Option<String>,
    pub shell: Option<String>,
    pub working_dir: Option<String>,
    pub resources: Resources,
    pub timeout: Option<Spanned<u64>>,
    /// Drone 0.8 `group:`: consecutive steps of one group run in parallel.
    pub group: Option<String>,
    /// `retry: N` or `retry: {count: N, delay: 10s}`: a failed step runs again.
    pub retry: Option<Spanned<Retry>>,
    /// `lock: NAME`: held by the step's stage while the stage runs.
    pub lock: Option<Spanned<String>>,
    pub options: ContainerOptions,
    /// `cache: [paths]`: directories kept between builds (see [`VolumeSource::Cache`]).
    pub caches: Vec<Spanned<String>>,
    /// The container options only trusted repositories may set, by their rule, with where
    /// the step sets them (for refusals that point at the line).
    pub trusted_only: Vec<(crate::rule::Rule, Pos)>,
    /// What the step asks of its stage's pod (Woodpecker's `backend_options.kubernetes`),
    /// where it asks: merged into the pipeline's [`PodOptions`] when the pipeline is read.
    pub pod: Option<Spanned<PodOptions>>,
}

/// How often a failed step runs again, and after how long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Runs after the first (so at most `count + 1` in all).
    pub count: u32,
    pub delay_secs: u64,
}

impl Retry {
    /// No retry: the default, left out of a plan's JSON.
    pub fn is_never(&self) -> bool {
        self.count == 0
    }
}

/// The most retries a step may ask for.
pub const MAX_RETRIES: u32 = 10;

/// A list of patterns to include and to exclude. Both empty matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub pos: Pos,
}

impl Constraint {
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

/// `path:` / `paths:` on changed files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathConstraint {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Whether the condition holds when the list of changed files is empty.
    pub on_empty: bool,
    /// Woodpecker's `ignore_message`: a commit message containing it (any case) lets the
    /// condition hold whatever changed.
    #[serde(default)]
    pub ignore_message: Option<String>,
    pub pos: Pos,
}

/// Which outcomes of what ran before let something run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusFilter {
    pub success: bool,
    pub failure: bool,
}

impl StatusFilter {
    pub const SUCCESS: Self = Self {
        success: true,
        failure: false,
    };
    pub const ALWAYS: Self = Self {
        success: true,
        failure: true,
    };
    pub const NEVER: Self = Self {
        success: false,
        failure: false,
    };

    pub fn union(self, other: Self) -> Self {
        Self {
            success: self.success || other.success,
            failure: self.failure || other.failure,
        }
    }
}

/// One `when` / `trigger` block: every key given must match (they are ANDed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conditions {
    pub pos: Pos,
    pub branch: Constraint,
    pub event: Constraint,
    pub reference: Constraint,
    pub status: Constraint,
    pub repo: Constraint,
    pub target: Constraint,
    pub cron: Constraint,
    /// Woodpecker's `tag:`: the tag's name (a build without a tag never matches).
    #[serde(default)]
    pub tag: Constraint,
    pub action: Constraint,
    pub instance: Constraint,
    pub platform: Constraint,
    pub paths: Option<PathConstraint>,
    /// Woodpecker's `matrix:` condition: every axis given must equal.
    pub matrix: BTreeMap<String, String>,
    /// Woodpecker's `evaluate:` expression.
    pub evaluate: Option<Spanned<String>>,
}

/// A build matrix: one stage per combination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    pub combinations: Vec<BTreeMap<String, String>>,
    pub pos: Pos,
}

/// A `kind: secret` document (Drone): a secret fetched from an external store or given
/// encrypted in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDocument {
    pub name: String,
    pub path: Option<String>,
    pub key: Option<String>,
    pub pos: Pos,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored plans and targets hold these names: what is written (serde, `as_str`) reads
    /// back as the same value, and a name that is none of them is refused with the list.
    #[test]
    fn chat_kinds_and_rules_read_back_as_written() {
        for kind in ChatKind::ALL {
            let json = serde_json::to_string(&kind).expect("serialises");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<ChatKind>(&json).ok(), Some(kind));
            assert_eq!(kind.as_str().parse::<ChatKind>(), Ok(kind));
        }
        for rule in NotifyRule::ALL {
            let json = serde_json::to_string(&rule).expect("serialises");
            assert_eq!(json, format!("\"{}\"", rule.as_str()));
            assert_eq!(serde_json::from_str::<NotifyRule>(&json).ok(), Some(rule));
        }
        let refused = serde_json::from_str::<ChatKind>("\"irc\"")
            .expect_err("irc is no chat service gantry speaks")
            .to_string();
        assert!(
            refused.contains(
                "unknown chat service `irc`: use one of slack, mattermost, rocketchat, discord, teams, googlechat"
            ),
            "{refused}"
        );
        assert_eq!(
            "sometimes".parse::<NotifyRule>(),
            Err(
                "unknown rule `sometimes`: use one of failure, recovery, success, always"
                    .to_owned()
            )
        );
    }
}
