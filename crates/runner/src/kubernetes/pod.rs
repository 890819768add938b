//! A stage's pod, its Secret and its pull Secret, as a pure function of the job: tested here
//! without a cluster (golden manifests); the backend only creates what this describes.
//!
//! One container per service and per try of each step, all created with the stage. Each
//! starts as the helper image's waiter (the *placeholder*) and becomes its step when the
//! backend swaps its image: the kubelet replaces a running container whose spec changed
//! whatever the restart policy, and the pod's `Never` keeps it from running twice. A
//! container's command and variables are fixed when the pod is created, so the helper image
//! has its waiter at the usual shell paths (a commands step's `sh -c script` waits in it); a
//! step with its own `entrypoint` runs through `/bin/sh` of its image. No variable's value is
//! in the pod: each comes from the stage's Secret by key.

use std::collections::{BTreeMap, BTreeSet};

use gantry_pipeline::model::{Mount, Pull, SecurityProfile, VolumeSource};
use gantry_pipeline::plan::PlanStep;
use gantry_proto::registry::RegistryCredential;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HostAlias, HostPathVolumeSource, LocalObjectReference, Pod, PodDNSConfig, PodDNSConfigOption,
    PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{LABEL_JOB, LABEL_RUNNER};
use crate::backend::{BackendError, JobSpec};

/// Shell paths at which the helper image has its waiter: a commands step whose shell is one
/// of these waits in the placeholder; any other command runs through `/bin/sh`.
pub const WAITER_PATHS: &[&str] = &[
    "/bin/sh",
    "/bin/bash",
    "/bin/ash",
    "/usr/bin/sh",
    "/usr/bin/bash",
    "sh",
    "bash",
    "ash",
];

/// The helper container's name: the workspace is filled through it.
pub const HELPER: &str = "gantry";

/// Where the helper image keeps its busybox (the waiter is at the shell paths).
pub const HELPER_BUSYBOX: &str = "/gantry/busybox";

/// What the runner's operator decides for every pod.
#[derive(Debug, Clone)]
pub struct PodSettings {
    pub namespace: String,
    /// The image whose waiter holds each container until its turn, and which fills the
    /// workspace (busybox's `tar`).
    pub helper_image: String,
    /// Seconds a stopped step gets between SIGTERM and SIGKILL.
    pub grace_secs: i64,
}

/// What `build` makes: created in this order (the pod's variables come from the Secret).
#[derive(Debug, Clone)]
pub struct Manifests {
    pub env: Secret,
    pub pull: Option<Secret>,
    pub pod: Pod,
}

/// A Kubernetes name (DNS label) from any text: lower case letters, digits and `-`, at most
/// `max` characters, with a hash of the whole text when it had to be cut or changed.
pub fn dns_label(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-').to_owned();
    if clean.len() <= max && clean == text && !clean.is_empty() {
        return clean;
    }
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(text.as_bytes())[..4]);
    let keep = max.saturating_sub(hash.len() + 1);
    let head = clean[..clean.len().min(keep)].trim_end_matches('-');
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// A label value from any text (labels allow `.` and `_` too, 63 characters).
pub fn label_value(text: &str) -> String {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        text.to_owned()
    } else {
        dns_label(text, 63)
    }
}

pub fn pod_name(job: &JobSpec) -> String {
    format!("gantry-{}", dns_label(&job.id, 56))
}

fn env_secret_name(job: &JobSpec) -> String {
    format!("{}-env", pod_name(job))
}

fn pull_secret_name(job: &JobSpec) -> String {
    format!("{}-pull", pod_name(job))
}

/// The container of a step's try (`attempt` from 1) or of a service.
pub fn container_name(step: &PlanStep, attempt: u32) -> String {
    if attempt <= 1 {
        format!("step-{}", step.number)
    } else {
        format!("step-{}-try-{attempt}", step.number)
    }
}

pub fn labels(runner: &str, job: &JobSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_RUNNER.to_owned(), label_value(runner)),
        (LABEL_JOB.to_owned(), label_value(&job.id)),
    ])
}

/// The label selector of everything a runner made.
pub fn runner_selector(runner: &str) -> String {
    format!("{LABEL_RUNNER}={}", label_value(runner))
}

pub fn job_selector(runner: &str, job: &JobSpec) -> String {
    format!(
        "{LABEL_RUNNER}={},{LABEL_JOB}={}",
        label_value(runner),
        label_value(&job.id)
    )
}

fn unsupported(step: &PlanStep, what: &str) -> BackendError {
    BackendError::Unsupported(format!(
        "step `{}` {what}, which gantry's Kubernetes backend cannot do; run this pipeline on a Docker runner",
        step.name
    ))
}

/// The stage's pod and Secrets. Refuses, naming the step and the key, what a pod cannot do.
pub fn build(
    runner: &str,
    job: &JobSpec,
    settings: &PodSettings,
) -> Result<Manifests, BackendError> {
    let options = &job.stage.pod;
    if let Some(namespace) = &options.namespace
        && namespace != &settings.namespace
    {
        return Err(BackendError::Unsupported(format!(
            "pipeline `{}` asks for namespace `{namespace}` (`metadata.namespace`), but this runner runs build pods in `{}`: remove it, or run the pipeline on a runner of that namespace",
            job.stage.name, settings.namespace
        )));
    }
    let labels = labels(runner, job);
    if let Some(key) = options.labels.keys().find(|k| labels.contains_key(*k)) {
        return Err(BackendError::Unsupported(format!(
            "pipeline `{}` sets the label `{key}`, which gantry keeps for itself to find the pods it made",
            job.stage.name
        )));
    }
    let meta = |name: String| ObjectMeta {
        name: Some(name),
        namespace: Some(settings.namespace.clone()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };
    let mut env_data = BTreeMap::new();
    let mut volumes = vec![Volume {
        name: "workspace".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    let workspace_mount = VolumeMount {
        name: "workspace".to_owned(),
        mount_path: job.stage.workspace.clone(),
        ..VolumeMount::default()
    };
    let mut stage_volumes = BTreeSet::new();
    let mut containers = vec![Container {
        name: HELPER.to_owned(),
        image: Some(settings.helper_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        volume_mounts: Some(vec![workspace_mount.clone()]),
        ..Container::default()
    }];
    let mut host_names = BTreeSet::new();
    for step in job.stage.services.iter().chain(&job.stage.steps) {
        host_names.insert(dns_label(&step.name, 63));
        let Some(environment) = job.environments.get(&step.name) else {
            // Its secrets are missing: it errors before it runs, and never starts.
            continue;
        };
        let env_key = |i: usize| format!("step-{}.{i}", step.number);
        let mut env = Vec::with_capacity(environment.len());
        for (i, (name, value)) in environment.iter().enumerate() {
            if !is_env_name(name) {
                return Err(unsupported(
                    step,
                    &format!("has the variable `{name}`, a name Kubernetes refuses"),
                ));
            }
            env_data.insert(env_key(i), ByteString(value.clone().into_bytes()));
            env.push(EnvVar {
                name: name.clone(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: env_secret_name(job),
                        key: env_key(i),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
        let mut mounts = vec![workspace_mount.clone()];
        for mount in &step.mounts {
            mounts.push(volume_mount(
                job,
                step,
                mount,
                &mut volumes,
                &mut stage_volumes,
            )?);
        }
        let (command, args) = command_of(step);
        let template = Container {
            name: String::new(),
            image: Some(settings.helper_image.clone()),
            image_pull_policy: Some(pull_policy(step.pull).to_owned()),
            command,
            args,
            env: Some(env),
            working_dir: Some(step.working_dir.clone()),
            volume_mounts: Some(mounts),
            resources: resources(step),
            security_context: security_context(step)?,
            ..Container::default()
        };
        check_container_options(step)?;
        let tries = if step.kind == gantry_pipeline::plan::StepKind::Service {
            1
        } else {
            1 + step.retry.count
        };
        for attempt in 1..=tries {
            containers.push(Container {
                name: container_name(step, attempt),
                ..template.clone()
            });
        }
    }
    let env = Secret {
        metadata: meta(env_secret_name(job)),
        data: Some(env_data),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    };
    let pull = pull_secret(job, &settings.namespace, &labels);
    let mut aliases = vec![HostAlias {
        ip: "127.0.0.1".to_owned(),
        hostnames: Some(host_names.into_iter().collect()),
    }];
    aliases.extend(extra_hosts(&job.stage)?);
    aliases.extend(options.host_aliases.iter().map(|a| HostAlias {
        ip: a.ip.clone(),
        hostnames: Some(a.hostnames.clone()),
    }));
    let mut pod_meta = meta(pod_name(job));
    pod_meta.labels = Some(
        options
            .labels
            .clone()
            .into_iter()
            .chain(labels.clone())
            .collect(),
    );
    pod_meta.annotations = (!options.annotations.is_empty()).then(|| options.annotations.clone());
    let pod = Pod {
        metadata: pod_meta,
        spec: Some(PodSpec {
            containers,
            volumes: Some(volumes),
            restart_policy: Some("Never".to_owned()),
            termination_grace_period_seconds: Some(settings.grace_secs),
            // The pod acts with no account's rights unless the pipeline names one.
            service_account_name: options.service_account.clone(),
            automount_service_account_token: options.service_account.is_none().then_some(false),
            enable_service_links: Some(false),
            host_aliases: Some(aliases),
            dns_config: dns_config(&job.stage),
            node_selector: (!options.node_selector.is_empty())
                .then(|| options.node_selector.clone()),
            tolerations: (!options.tolerations.is_empty()).then(|| {
                options
                    .tolerations
                    .iter()
                    .map(|t| Toleration {
                        key: t.key.clone(),
                        operator: t.operator.clone(),
                        value: t.value.clone(),
                        effect: t.effect.clone(),
                        toleration_seconds: t.toleration_seconds,
                    })
                    .collect()
            }),
            runtime_class_name: options.runtime_class.clone(),
            security_context: options.fs_group.map(|group| PodSecurityContext {
                fs_group: Some(group),
                ..PodSecurityContext::default()
            }),
            image_pull_secrets: pull.as_ref().map(|s| {
                vec![LocalObjectReference {
                    name: s.metadata.name.clone().unwrap_or_default(),
                }]
            }),
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    Ok(Manifests { env, pull, pod })
}

/// Kubernetes' rule for variable names (`[-._a-zA-Z][-._a-zA-Z0-9]*`).
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_'))
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

fn pull_policy(pull: Pull) -> &'static str {
    match pull {
        Pull::IfNotExists => "IfNotPresent",
        Pull::Always => "Always",
        Pull::Never => "Never",
    }
}

/// The container's command and arguments: what the step runs once its image is swapped in,
/// and what the placeholder's waiter is started with (and ignores) until then.
fn command_of(step: &PlanStep) -> (Option<Vec<String>>, Option<Vec<String>>) {
    if let Some(script) = &step.script {
        let shell = step.shell.clone();
        if WAITER_PATHS.contains(&shell.as_str()) {
            return (
                Some(vec![shell, "-c".to_owned()]),
                Some(vec![script.clone()]),
            );
        }
        return through_sh(std::iter::once(shell).chain(["-c".to_owned(), script.clone()]));
    }
    if step.entrypoint.is_empty() {
        // The image's own entrypoint: the placeholder's is its waiter.
        return (
            None,
            (!step.command.is_empty()).then(|| step.command.clone()),
        );
    }
    if WAITER_PATHS.contains(&step.entrypoint[0].as_str()) {
        return (
            Some(step.entrypoint.clone()),
            (!step.command.is_empty()).then(|| step.command.clone()),
        );
    }
    through_sh(step.entrypoint.iter().chain(&step.command).cloned())
}

/// `/bin/sh -c 'exec "$0" "$@"' program args...`: the waiter is at /bin/sh in the
/// placeholder, and the step's image runs the program.
fn through_sh(program: impl Iterator<Item = String>) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let mut args = vec!["exec \"$0\" \"$@\"".to_owned()];
    args.extend(program);
    (
        Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]),
        Some(args),
    )
}

fn volume_mount(
    job: &JobSpec,
    step: &PlanStep,
    mount: &Mount,
    volumes: &mut Vec<Volume>,
    stage_volumes: &mut BTreeSet<String>,
) -> Result<VolumeMount, BackendError> {
    match mount {
        Mount::Named { name, path } => {
            let volume_name = format!("v-{}", dns_label(name, 50));
            if stage_volumes.insert(volume_name.clone()) {
                let source = job
                    .stage
                    .volumes
                    .iter()
                    .find(|v| &v.name == name)
                    .map(|v| v.source.clone());
                volumes.push(match source {
                    Some(VolumeSource::Host { path }) => Volume {
                        name: volume_name.clone(),
                        host_path: Some(HostPathVolumeSource {
                            path,
                            type_: None,
                        }),
                        ..Volume::default()
                    },
                    Some(VolumeSource::Temp { memory }) => Volume {
                        name: volume_name.clone(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            medium: memory.then(|| "Memory".to_owned()),
                            size_limit: None,
                        }),
                        ..Volume::default()
                    },
                    Some(VolumeSource::Cache) | None => {
                        return Err(unsupported(
                            step,
                            &format!("mounts the cache `{name}`: caches are kept between builds only on Docker runners"),
                        ));
                    }
                });
            }
            Ok(VolumeMount {
                name: volume_name,
                mount_path: path.clone(),
                ..VolumeMount::default()
            })
        }
        Mount::Host {
            host,
            path,
            read_only,
        } => {
            let volume_name = format!("h-{}", dns_label(host, 50));
            if stage_volumes.insert(volume_name.clone()) {
                volumes.push(Volume {
                    name: volume_name.clone(),
                    host_path: Some(HostPathVolumeSource {
                        path: host.clone(),
                        type_: None,
                    }),
                    ..Volume::default()
                });
            }
            Ok(VolumeMount {
                name: volume_name,
                mount_path: path.clone(),
                read_only: read_only.then_some(true),
                ..VolumeMount::default()
            })
        }
    }
}

fn resources(step: &PlanStep) -> Option<ResourceRequirements> {
    let set = |r: &gantry_pipeline::model::ResourceSet| {
        let mut map = BTreeMap::new();
        if let Some(cpu) = r.cpu_millis {
            map.insert("cpu".to_owned(), Quantity(format!("{cpu}m")));
        }
        if let Some(memory) = r.memory_bytes {
            map.insert("memory".to_owned(), Quantity(memory.to_string()));
        }
        (!map.is_empty()).then_some(map)
    };
    let limits = set(&step.resources.limits);
    let requests = set(&step.resources.requests);
    (limits.is_some() || requests.is_some()).then(|| ResourceRequirements {
        limits,
        requests,
        ..ResourceRequirements::default()
    })
}

/// `user`, `privileged`, `cap_add`/`cap_drop` as the container's security context. A pod takes
/// only numeric users and groups.
fn security_context(step: &PlanStep) -> Result<Option<SecurityContext>, BackendError> {
    let mut context = SecurityContext::default();
    if let Some(user) = &step.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        let number = |text: &str| {
            text.parse::<i64>().map_err(|_| {
                unsupported(
                    step,
                    &format!("runs as the user `{user}`: a pod takes only numeric user and group ids (e.g. `1000:1000`)"),
                )
            })
        };
        context.run_as_user = Some(number(uid)?);
        if let Some(gid) = gid {
            context.run_as_group = Some(number(gid)?);
        }
    }
    if step.privileged {
        context.privileged = Some(true);
    }
    let options = &step.options;
    context.run_as_non_root = options.run_as_non_root;
    context.seccomp_profile = options.seccomp_profile.as_ref().map(|p| {
        let (type_, localhost_profile) = profile(p);
        SeccompProfile {
            type_,
            localhost_profile,
        }
    });
    context.app_armor_profile = options.apparmor_profile.as_ref().map(|p| {
        let (type_, localhost_profile) = profile(p);
        AppArmorProfile {
            type_,
            localhost_profile,
        }
    });
    if !options.cap_add.is_empty() || !options.cap_drop.is_empty() {
        context.capabilities = Some(Capabilities {
            add: (!options.cap_add.is_empty()).then(|| options.cap_add.clone()),
            drop: (!options.cap_drop.is_empty()).then(|| options.cap_drop.clone()),
        });
    }
    Ok((context != SecurityContext::default()).then_some(context))
}

/// Kubernetes' `type` and `localhostProfile` of a seccomp or AppArmor profile.
fn profile(profile: &SecurityProfile) -> (String, Option<String>) {
    match profile {
        SecurityProfile::RuntimeDefault => ("RuntimeDefault".to_owned(), None),
        SecurityProfile::Unconfined => ("Unconfined".to_owned(), None),
        SecurityProfile::Localhost(name) => ("Localhost".to_owned(), Some(name.clone())),
    }
}

/// Docker options a pod has no place for are refused by name; the others become the pod's
/// (`extra_hosts`, `dns`) or the container's (capabilities).
fn check_container_options(step: &PlanStep) -> Result<(), BackendError> {
    let gantry_pipeline::model::ContainerOptions {
        dns: _,
        dns_search: _,
        extra_hosts: _,
        devices,
        ports,
        cap_add: _,
        cap_drop: _,
        shm_size,
        memswap_limit,
        cpu_shares,
        cpu_quota,
        cpu_period,
        cpu_set,
        tmpfs,
        run_as_non_root: _,
        seccomp_profile: _,
        apparmor_profile: _,
    } = &step.options;
    let refused = [
        (!devices.is_empty(), "mounts host devices (`devices`)"),
        (
            ports.iter().any(|p| p.host.is_some()),
            "publishes a port on the host (`ports` with a host port)",
        ),
        (shm_size.is_some(), "sets `shm_size`"),
        (memswap_limit.is_some(), "sets `memswap_limit`"),
        (cpu_shares.is_some(), "sets `cpu_shares` (use `resources`)"),
        (
            cpu_quota.is_some() || cpu_period.is_some(),
            "sets `cpu_quota` (use `resources`)",
        ),
        (cpu_set.is_some(), "sets `cpuset`"),
        (
            !tmpfs.is_empty(),
            "mounts `tmpfs` (use a `temp` volume with `medium: memory`)",
        ),
        (step.network_mode.is_some(), "sets `network_mode`"),
    ];
    match refused.iter().find(|(refused, _)| *refused) {
        Some((_, what)) => Err(unsupported(step, what)),
        None => Ok(()),
    }
}

/// Every step's `extra_hosts` (`name:address`) as the pod's host aliases: the containers of a
/// pod share one hosts file.
fn extra_hosts(stage: &gantry_pipeline::Stage) -> Result<Vec<HostAlias>, BackendError> {
    let mut by_ip: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for step in stage.services.iter().chain(&stage.steps) {
        for line in &step.options.extra_hosts {
            let Some((name, ip)) = line.split_once(':') else {
                return Err(unsupported(
                    step,
                    &format!("has the extra host `{line}`, not `name:address`"),
                ));
            };
            by_ip
                .entry(ip.to_owned())
                .or_default()
                .insert(name.to_owned());
        }
    }
    Ok(by_ip
        .into_iter()
        .map(|(ip, names)| HostAlias {
            ip,
            hostnames: Some(names.into_iter().collect()),
        })
        .collect())
}

/// The pipeline's `dns_config` and the steps' `dns` and `dns_search`, on top of the
/// cluster's (a pod has one resolver).
fn dns_config(stage: &gantry_pipeline::Stage) -> Option<PodDNSConfig> {
    let mut nameservers = BTreeSet::new();
    let mut searches = BTreeSet::new();
    let mut options = Vec::new();
    if let Some(dns) = &stage.pod.dns {
        nameservers.extend(dns.nameservers.iter().cloned());
        searches.extend(dns.searches.iter().cloned());
        options.extend(dns.options.iter().map(|(name, value)| PodDNSConfigOption {
            name: Some(name.clone()),
            value: value.clone(),
        }));
    }
    for step in stage.services.iter().chain(&stage.steps) {
        nameservers.extend(step.options.dns.iter().cloned());
        searches.extend(step.options.dns_search.iter().cloned());
    }
    (!nameservers.is_empty() || !searches.is_empty() || !options.is_empty()).then(|| PodDNSConfig {
        nameservers: (!nameservers.is_empty()).then(|| nameservers.into_iter().collect()),
        searches: (!searches.is_empty()).then(|| searches.into_iter().collect()),
        options: (!options.is_empty()).then_some(options),
    })
}

/// The stage's registry logins as a `kubernetes.io/dockerconfigjson` Secret.
fn pull_secret(
    job: &JobSpec,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<Secret> {
    if job.registries.is_empty() {
        return None;
    }
    let config = RegistryCredential::docker_config_json(&job.registries);
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(pull_secret_name(job)),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".to_owned()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            ByteString(config.into_bytes()),
        )])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_job;

    fn settings() -> PodSettings {
        PodSettings {
            namespace: "builds".into(),
            helper_image: "gantry/kube-helper:1".into(),
            grace_secs: 2,
        }
    }

    fn build_of(head: &str, steps: &str) -> Result<Manifests, BackendError> {
        build("runner 1", &test_job(head, steps), &settings())
    }

    #[test]
    fn a_stage_is_one_pod_of_placeholders_with_its_variables_in_a_secret() {
        let manifests = build_of(
            "services:\n  - name: db\n    image: postgres:16\n",
            "  - name: test\n    image: golang:1.22\n    commands: [go test ./...]\n    retry: 1\n    resources: {limits: {cpu: 1500, memory: 1GiB}}\n  - name: publish\n    image: plugins/docker\n    settings: {repo: acme/app}\n  - name: tool\n    image: acme/tool\n    entrypoint: [/usr/local/bin/tool]\n    command: [--fast]\n",
        )
        .expect("a pod");
        insta::assert_json_snapshot!("stage_pod", manifests.pod);
        let env = manifests.env.data.expect("the stage's variables");
        assert_eq!(env.get("step-1.0"), Some(&ByteString(b"true".to_vec())));
        let pod = serde_json::to_string(&manifests.pod).expect("json");
        assert!(!pod.contains("\"value\":"), "no value in the pod: {pod}");
        assert!(manifests.pull.is_none());
    }

    #[test]
    fn registry_logins_become_the_pods_pull_secret() {
        let mut job = test_job("", "  - name: a\n    image: registry.example.com/app\n");
        job.registries.push(RegistryCredential {
            host: "registry.example.com".into(),
            username: "bot".into(),
            password: "hunter2".into(),
            source: "test".into(),
        });
        let manifests = build("r", &job, &settings()).expect("a pod");
        let pull = manifests.pull.expect("a pull secret");
        assert_eq!(
            pull.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        let spec = manifests.pod.spec.expect("spec");
        assert_eq!(
            spec.image_pull_secrets.expect("referenced")[0].name,
            pull.metadata.name.expect("named")
        );
        assert!(
            !serde_json::to_string(&spec.containers)
                .expect("json")
                .contains("hunter2")
        );
    }

    #[test]
    fn what_a_pod_cannot_do_is_refused_by_name() {
        for (step, says) in [
            ("    devices: [/dev/fuse]\n", "`devices`"),
            ("    network_mode: host\n", "`network_mode`"),
            ("    user: builder\n", "numeric user"),
            ("    shm_size: 1g\n", "`shm_size`"),
        ] {
            let error = build_of(
                "",
                &format!("  - name: a\n    image: alpine\n    commands: [true]\n{step}"),
            )
            .expect_err(step);
            let text = error.to_string();
            assert!(
                text.contains(says) && text.contains("step `a`"),
                "{step}: {text}"
            );
        }
    }

    #[test]
    fn a_kubernetes_pipelines_pod_options_are_the_pods() {
        let mut job = test_job(
            "type: kubernetes\nmetadata:\n  namespace: builds\n  labels: {team: web}\n  annotations: {note: hi}\nservice_account_name: deployer\nnode_selector: {disk: ssd}\ntolerations:\n  - {key: dedicated, operator: Equal, value: ci, effect: NoSchedule}\ndns_config:\n  nameservers: [10.0.0.10]\n  options: [{name: ndots, value: \"2\"}]\nhost_aliases:\n  - {ip: 10.0.0.5, hostnames: [db.internal]}\n",
            "  - name: a\n    image: alpine\n    commands: [true]\n",
        );
        let pod = build("r", &job, &settings()).expect("a pod").pod;
        let labels = pod.metadata.labels.expect("labels");
        assert_eq!(labels.get("team").map(String::as_str), Some("web"));
        assert!(labels.contains_key(LABEL_JOB));
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.service_account_name.as_deref(), Some("deployer"));
        assert_eq!(spec.automount_service_account_token, None);
        assert_eq!(spec.node_selector.expect("selector")["disk"], "ssd");
        assert_eq!(
            spec.tolerations.expect("tolerations")[0].value.as_deref(),
            Some("ci")
        );
        let dns = spec.dns_config.expect("dns");
        assert_eq!(dns.nameservers, Some(vec!["10.0.0.10".to_owned()]));
        let aliases = spec.host_aliases.expect("aliases");
        assert!(aliases.iter().any(|a| a.ip == "10.0.0.5"));

        job.stage.pod.namespace = Some("elsewhere".into());
        let refused = build("r", &job, &settings()).expect_err("another namespace");
        assert!(
            refused.to_string().contains("runs build pods in `builds`"),
            "{refused}"
        );
        job.stage.pod.namespace = None;
        job.stage
            .pod
            .labels
            .insert(LABEL_RUNNER.into(), "other".into());
        let refused = build("r", &job, &settings()).expect_err("gantry's label");
        assert!(
            refused.to_string().contains("keeps for itself"),
            "{refused}"
        );
    }

    /// Woodpecker's `backend_options.kubernetes`: the pod's settings on the pod, the
    /// container's on the step's containers.
    #[test]
    fn a_steps_backend_options_are_its_containers_and_its_pods() {
        let manifests = build_of(
            "",
            "  - name: a\n    image: alpine\n    commands: [true]\n    backend_options:\n      kubernetes:\n        runtimeClassName: gvisor\n        securityContext:\n          runAsUser: 1000\n          fsGroup: 2000\n          runAsNonRoot: true\n          seccompProfile: {type: Localhost, localhostProfile: profiles/audit.json}\n          apparmorProfile: {type: RuntimeDefault}\n",
        )
        .expect("a pod");
        let spec = manifests.pod.spec.expect("spec");
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(spec.security_context.and_then(|c| c.fs_group), Some(2000));
        let step = spec
            .containers
            .iter()
            .find(|c| c.name != HELPER)
            .expect("the step's container");
        let context = step.security_context.clone().expect("a security context");
        assert_eq!(context.run_as_user, Some(1000));
        assert_eq!(context.run_as_non_root, Some(true));
        let seccomp = context.seccomp_profile.expect("seccomp");
        assert_eq!(
            (seccomp.type_.as_str(), seccomp.localhost_profile.as_deref()),
            ("Localhost", Some("profiles/audit.json"))
        );
        assert_eq!(
            context.app_armor_profile.expect("apparmor").type_,
            "RuntimeDefault"
        );
    }

    #[test]
    fn names_fit_kubernetes_rules() {
        assert_eq!(dns_label("abc-1", 63), "abc-1");
        let long = dns_label(&"x".repeat(100), 40);
        assert!(long.len() <= 40, "{long}");
        assert_ne!(
            dns_label("A_b", 63),
            dns_label("a-b", 63),
            "a changed name keeps its hash"
        );
        assert_eq!(label_value("runner-1.a_b"), "runner-1.a_b");
        assert!(
            label_value("runner 1")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        );
    }
}
