//! What a stage of an untrusted repository may not do, decided on the resolved [`Stage`]:
//! after matrix expansion and every `${VAR}` substitution, so no value can smuggle a host
//! path, a privilege or a host network past it. `compile` refuses such a plan; the runner
//! checks every untrusted stage it is given again before it creates anything.
//!
//! The rules are Drone's and Woodpecker's linter rules for untrusted repositories, plus
//! `cap_add` and `tmpfs`. Every field of a stage, a step and its container options is named
//! in an exhaustive destructuring below: a field added later does not compile until it is
//! decided here whether it needs trust.

use crate::model::{ContainerOptions, Mount, PipelineType, Port, SecurityProfile, VolumeSource};
use crate::plan::{PlanStep, Stage};

pub use crate::rule::Rule;

/// What in the stage breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// The stage itself (its pipeline's `type`).
    Stage,
    /// A volume the pipeline declares.
    Volume(String),
    /// A step or a service, by name.
    Step(String),
}

/// A rule broken, with what breaks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Violation {
    pub rule: Rule,
    pub subject: Subject,
    /// The value at fault, where one tells more than the rule (a host path, a mode).
    pub value: Option<String>,
}

impl Violation {
    /// A sentence naming `pipeline` (the file's name of the stage's pipeline).
    pub fn message(&self, pipeline: &str) -> String {
        let value = self.value.as_deref().unwrap_or_default();
        let who = match &self.subject {
            Subject::Stage => format!("pipeline `{pipeline}`"),
            Subject::Volume(name) => format!("pipeline `{pipeline}` declares volume `{name}`"),
            Subject::Step(name) => format!("step `{name}`"),
        };
        let declared = matches!(self.subject, Subject::Volume(_));
        let does = match self.rule {
            Rule::HostPipeline => "runs commands on the runner's host (`type: exec`)".to_owned(),
            Rule::Privileged => "is privileged".to_owned(),
            Rule::MemoryVolume if declared => {
                "on an in-memory volume (`medium: memory`)".to_owned()
            }
            Rule::HostVolume | Rule::DockerSocket if declared => {
                format!("on the host directory `{value}`")
            }
            Rule::HostVolume | Rule::MemoryVolume => format!("mounts the host path `{value}`"),
            Rule::DockerSocket => format!(
                "mounts the host path `{value}` (the Docker socket gives the step root on the runner's host)"
            ),
            Rule::RunDrone => {
                format!("mounts a volume at `{value}`, under /run/drone (the runner's own files)")
            }
            Rule::NetworkMode => format!("sets network_mode `{value}`"),
            Rule::Devices => "mounts devices of the runner's host (`devices`)".to_owned(),
            Rule::Dns => "sets its own DNS servers (`dns`)".to_owned(),
            Rule::DnsSearch => "sets its own DNS search domains (`dns_search`)".to_owned(),
            Rule::ExtraHosts => "adds names to its hosts file (`extra_hosts`)".to_owned(),
            Rule::HostPorts => {
                "publishes a port on the runner's host (`ports` with `host`)".to_owned()
            }
            Rule::CapAdd => "adds Linux capabilities (`cap_add`)".to_owned(),
            Rule::Tmpfs => "mounts in-memory file systems (`tmpfs`)".to_owned(),
            Rule::ServiceAccount => format!(
                "runs its pod as the Kubernetes service account `{value}` (`service_account_name`), with its rights in the cluster"
            ),
            Rule::Tolerations => {
                "tolerates node taints (`tolerations`), reaching nodes kept for other work"
                    .to_owned()
            }
            Rule::PodAnnotations => format!(
                "annotates its pod (`metadata.annotations`: `{value}`), which can loosen its confinement"
            ),
            Rule::PodDns => "sets its pod's own resolver (`dns_config`)".to_owned(),
            Rule::HostAliases => "adds names to its pod's hosts file (`host_aliases`)".to_owned(),
            Rule::RuntimeClass => format!(
                "runs its pod under the RuntimeClass `{value}` (`runtimeClassName`), which may isolate it less than the cluster's default"
            ),
            Rule::SecurityProfile => format!(
                "sets its own confinement ({value}), where the runtime's default is kept for untrusted code"
            ),
        };
        let (verb, unmounted) = match (self.rule, declared) {
            (Rule::Privileged, _) => ("be", ""),
            (_, true) => ("do", " (even when no step mounts it)"),
            (_, false) => ("do", ""),
        };
        format!("{who} {does}, which only trusted repositories may {verb}{unmounted}")
    }
}

/// Every rule the stage breaks, were its repository untrusted: each step and service,
/// whether it runs or not, and every declared volume. Sorted, without repeats.
pub fn check_stage(stage: &Stage) -> Vec<Violation> {
    let Stage {
        name: _,
        number: _,
        run: _,
        reason: _,
        depends_on: _,
        runs_on: _,
        file: _,
        backend,
        platform: _,
        labels: _,
        matrix: _,
        // A Docker volume, whatever its path: never the host's.
        workspace: _,
        // The clone's URL and credential are the server's to choose, not the file's.
        clone: _,
        environment: _,
        secrets: _,
        volumes,
        services,
        steps,
        timeout_secs: _,
        notify: _,
        pull_secrets: _,
        locks: _,
        concurrency: _,
        // Scoped by the server to the repository and its branch or pull request.
        cache: _,
        pod,
        // Names and URLs; what a deployment may do is its steps'.
        deploy: _,
    } = stage;
    let mut found = Vec::new();
    check_pod(pod, &mut found);
    match backend {
        PipelineType::Local => found.push(Violation {
            rule: Rule::HostPipeline,
            subject: Subject::Stage,
            value: None,
        }),
        // Containers; the others are never placed on any runner (`gantry_proto::place`).
        PipelineType::Docker
        | PipelineType::Kubernetes
        | PipelineType::Vm
        | PipelineType::Ssh
        | PipelineType::DigitalOcean
        | PipelineType::MacStadium => {}
    }
    for volume in volumes {
        let subject = Subject::Volume(volume.name.clone());
        match &volume.source {
            VolumeSource::Host { path } => found.push(Violation {
                rule: if is_docker_socket(path) {
                    Rule::DockerSocket
                } else {
                    Rule::HostVolume
                },
                subject,
                value: Some(path.clone()),
            }),
            VolumeSource::Temp { memory: true } => found.push(Violation {
                rule: Rule::MemoryVolume,
                subject,
                value: None,
            }),
            VolumeSource::Temp { memory: false } | VolumeSource::Cache => {}
        }
    }
    for step in steps.iter().chain(services) {
        check_step(step, &mut found);
    }
    found.sort();
    found.dedup();
    found
}

/// What of a pod's options needs trust. Its namespace is the runner's to allow, labels
/// cannot touch gantry's own, and node selectors only choose among nodes open to any pod.
fn check_pod(pod: &crate::model::PodOptions, found: &mut Vec<Violation>) {
    let crate::model::PodOptions {
        namespace: _,
        labels: _,
        annotations,
        service_account,
        node_selector: _,
        tolerations,
        dns,
        host_aliases,
        runtime_class,
        // The group of the pod's own volumes.
        fs_group: _,
    } = pod;
    let mut refuse = |rule: Rule, value: Option<String>| {
        found.push(Violation {
            rule,
            subject: Subject::Stage,
            value,
        });
    };
    if let Some(account) = service_account {
        refuse(Rule::ServiceAccount, Some(account.clone()));
    }
    if !tolerations.is_empty() {
        refuse(Rule::Tolerations, None);
    }
    if !annotations.is_empty() {
        let keys: Vec<&str> = annotations.keys().map(String::as_str).collect();
        refuse(Rule::PodAnnotations, Some(keys.join("`, `")));
    }
    if dns.is_some() {
        refuse(Rule::PodDns, None);
    }
    if !host_aliases.is_empty() {
        refuse(Rule::HostAliases, None);
    }
    if let Some(class) = runtime_class {
        refuse(Rule::RuntimeClass, Some(class.clone()));
    }
}

fn check_step(step: &PlanStep, found: &mut Vec<Violation>) {
    let PlanStep {
        name,
        number: _,
        kind: _,
        run: _,
        reason: _,
        depends_on: _,
        run_on: _,
        image: _,
        pull: _,
        environment: _,
        secrets: _,
        commands: _,
        script: _,
        shell: _,
        entrypoint: _,
        command: _,
        failure: _,
        detach: _,
        privileged,
        mounts,
        network_mode,
        // Inside the container: its own users and folders.
        user: _,
        working_dir: _,
        resources: _,
        timeout_secs: _,
        retry: _,
        options,
    } = step;
    let mut refuse = |rule: Rule, value: Option<String>| {
        found.push(Violation {
            rule,
            subject: Subject::Step(name.clone()),
            value,
        });
    };
    if *privileged {
        refuse(Rule::Privileged, None);
    }
    if let Some(mode) = network_mode {
        refuse(Rule::NetworkMode, Some(mode.clone()));
    }
    for mount in mounts {
        let path = match mount {
            Mount::Host { host, path, .. } => {
                let rule = if is_docker_socket(host) {
                    Rule::DockerSocket
                } else {
                    Rule::HostVolume
                };
                refuse(rule, Some(host.clone()));
                path
            }
            // A declared host volume is refused where it is declared.
            Mount::Named { path, .. } => path,
        };
        if is_under_run_drone(path) {
            refuse(Rule::RunDrone, Some(path.clone()));
        }
    }
    let ContainerOptions {
        dns,
        dns_search,
        extra_hosts,
        devices,
        ports,
        cap_add,
        // Dropping capabilities and limiting resources only takes rights away (Drone
        // allows them).
        cap_drop: _,
        shm_size: _,
        memswap_limit: _,
        cpu_shares: _,
        cpu_quota: _,
        cpu_period: _,
        cpu_set: _,
        tmpfs,
        // Only forbids running as root.
        run_as_non_root: _,
        seccomp_profile,
        apparmor_profile,
    } = options;
    for (kind, profile) in [("seccomp", seccomp_profile), ("AppArmor", apparmor_profile)] {
        match profile {
            None | Some(SecurityProfile::RuntimeDefault) => {}
            Some(SecurityProfile::Unconfined) => {
                refuse(Rule::SecurityProfile, Some(format!("{kind} `Unconfined`")));
            }
            Some(SecurityProfile::Localhost(name)) => refuse(
                Rule::SecurityProfile,
                Some(format!("the node's {kind} profile `{name}`")),
            ),
        }
    }
    for (rule, set) in [
        (Rule::Dns, !dns.is_empty()),
        (Rule::DnsSearch, !dns_search.is_empty()),
        (Rule::ExtraHosts, !extra_hosts.is_empty()),
        (Rule::Devices, !devices.is_empty()),
        (
            Rule::HostPorts,
            ports.iter().any(|Port { host, .. }| host.is_some()),
        ),
        (Rule::CapAdd, !cap_add.is_empty()),
        (Rule::Tmpfs, !tmpfs.is_empty()),
    ] {
        if set {
            refuse(rule, None);
        }
    }
}

/// `path` with `.`, `..` and repeated slashes resolved, as the kernel would find it.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

fn is_docker_socket(host: &str) -> bool {
    let path = clean(host);
    // The socket itself, or a folder that holds it.
    path.ends_with("/docker.sock") || matches!(path.as_str(), "/" | "/var" | "/var/run" | "/run")
}

fn is_under_run_drone(path: &str) -> bool {
    let path = clean(path);
    path == "/run/drone" || path.starts_with("/run/drone/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_before_they_are_judged() {
        assert!(is_docker_socket("/var/run/docker.sock"));
        assert!(is_docker_socket("//var/run/./docker.sock/"));
        assert!(is_docker_socket("/var/lib/../run/docker.sock"));
        assert!(is_docker_socket("/run"));
        assert!(!is_docker_socket("/srv/data"));
        assert!(is_under_run_drone("/run/drone"));
        assert!(is_under_run_drone("/run//drone/env"));
        assert!(is_under_run_drone("/tmp/../run/drone/x"));
        assert!(!is_under_run_drone("/run/droned"));
        assert_eq!(clean("../../etc"), "/etc");
    }
}
