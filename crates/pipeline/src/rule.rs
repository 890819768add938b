//! The rules an untrusted stage must keep, by name: what `trust` checks a stage against,
//! what the file's model records of a step that needs trust, and what refusals name.

/// One rule an untrusted stage must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// `type: exec`: steps as processes of the runner's host.
    HostPipeline,
    Privileged,
    /// A directory or file of the runner's host, declared or mounted.
    HostVolume,
    /// The Docker socket of the runner's host: root on that host.
    DockerSocket,
    /// A declared `temp: {medium: memory}` volume.
    MemoryVolume,
    /// A mount under `/run/drone`, where Drone's runners keep their own files.
    RunDrone,
    NetworkMode,
    Devices,
    Dns,
    DnsSearch,
    ExtraHosts,
    HostPorts,
    CapAdd,
    Tmpfs,
    /// A Kubernetes service account for the pod: its rights in the cluster.
    ServiceAccount,
    /// Tolerated taints: nodes kept for other work.
    Tolerations,
    /// Pod annotations, which can loosen a pod's confinement (AppArmor, seccomp, meshes).
    PodAnnotations,
    /// The pod's own resolver (`dns_config`).
    PodDns,
    /// The pod's own hosts file entries (`host_aliases`).
    HostAliases,
    /// The pod's RuntimeClass: another runtime may isolate it less (`runc` where the
    /// cluster's default is a sandbox).
    RuntimeClass,
    /// A container's seccomp or AppArmor profile other than the runtime's default.
    SecurityProfile,
}

impl Rule {
    /// The rule's name, as refusals show it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::HostPipeline => "host-pipeline",
            Rule::Privileged => "privileged",
            Rule::HostVolume => "host-volume",
            Rule::DockerSocket => "docker-socket",
            Rule::MemoryVolume => "memory-volume",
            Rule::RunDrone => "run-drone-mount",
            Rule::NetworkMode => "network-mode",
            Rule::Devices => "devices",
            Rule::Dns => "dns",
            Rule::DnsSearch => "dns-search",
            Rule::ExtraHosts => "extra-hosts",
            Rule::HostPorts => "host-ports",
            Rule::CapAdd => "cap-add",
            Rule::Tmpfs => "tmpfs",
            Rule::ServiceAccount => "service-account",
            Rule::Tolerations => "tolerations",
            Rule::PodAnnotations => "pod-annotations",
            Rule::PodDns => "dns-config",
            Rule::HostAliases => "host-aliases",
            Rule::RuntimeClass => "runtime-class",
            Rule::SecurityProfile => "security-profile",
        }
    }

    /// The key of the file that sets it.
    pub fn key(self) -> &'static str {
        match self {
            Rule::HostPipeline => "type",
            Rule::Privileged => "privileged",
            Rule::HostVolume | Rule::DockerSocket | Rule::MemoryVolume | Rule::RunDrone => {
                "volumes"
            }
            Rule::NetworkMode => "network_mode",
            Rule::Devices => "devices",
            Rule::Dns => "dns",
            Rule::DnsSearch => "dns_search",
            Rule::ExtraHosts => "extra_hosts",
            Rule::HostPorts => "ports",
            Rule::CapAdd => "cap_add",
            Rule::Tmpfs => "tmpfs",
            Rule::ServiceAccount => "service_account_name",
            Rule::Tolerations => "tolerations",
            Rule::PodAnnotations => "metadata",
            Rule::PodDns => "dns_config",
            Rule::HostAliases => "host_aliases",
            Rule::RuntimeClass => "backend_options.kubernetes.runtimeClassName",
            Rule::SecurityProfile => "backend_options.kubernetes.securityContext",
        }
    }
}
