//! The container a step runs in, as a pure function of the job and the step: image,
//! command or script, environment, labels, the job's network and alias, binds of the
//! workspace, volumes, caches and host paths, resources and every Docker option. Tested
//! here without an engine; the backend only creates what this describes.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointSettings, HostConfig, NetworkingConfig, PortBinding,
};
use gantry_pipeline::model::{ContainerOptions, DeviceSource, Mount, Port, Pull, VolumeSource};
use gantry_pipeline::plan::PlanStep;

use gantry_proto::registry::RegistryCredential;

use super::{LABEL_JOB, LABEL_RUNNER, cache};
use crate::backend::{BackendError, JobSpec, StepSpec};

/// The container a step runs in: on the stage's `network`, or in the namespace of the
/// network `holder` it joins.
pub(super) fn container_spec(
    job: &JobSpec,
    step: &StepSpec<'_>,
    network: &str,
    holder: Option<&str>,
    labels: HashMap<String, String>,
) -> Result<ContainerSpec, BackendError> {
    let plan_step = step.step;
    let Some(image) = plan_step.image.clone() else {
        return Err(BackendError::Unsupported(format!(
            "step `{}` has no image",
            plan_step.name
        )));
    };
    let options = &plan_step.options;
    if options.run_as_non_root.is_some()
        || options.seccomp_profile.is_some()
        || options.apparmor_profile.is_some()
    {
        // Such a stage is placed on Kubernetes only; refused here should one ever arrive.
        return Err(BackendError::Unsupported(format!(
            "step `{}` sets a pod's confinement (`backend_options.kubernetes.securityContext`), which only a runner on Kubernetes applies",
            plan_step.name
        )));
    }
    let network_mode = match (&plan_step.network_mode, holder) {
        (Some(mode), _) => mode.clone(),
        (None, Some(holder)) => format!("container:{holder}"),
        (None, _) => network.to_owned(),
    };
    // Joined to the stage's network on its own, reached there by its name.
    let own_endpoint = network_mode == network;
    let (entrypoint, cmd) = match &plan_step.script {
        Some(script) => (
            Some(vec![plan_step.shell.clone(), "-c".to_owned()]),
            Some(vec![script.clone()]),
        ),
        None => (
            (!plan_step.entrypoint.is_empty()).then(|| plan_step.entrypoint.clone()),
            (!plan_step.command.is_empty()).then(|| plan_step.command.clone()),
        ),
    };
    let limits = &plan_step.resources.limits;
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        env: Some(
            step.environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        labels: Some(labels),
        working_dir: Some(plan_step.working_dir.clone()),
        entrypoint,
        cmd,
        user: plan_step.user.clone(),
        host_config: Some(HostConfig {
            binds: Some(binds(job, &plan_step.mounts)),
            network_mode: Some(network_mode),
            privileged: Some(plan_step.privileged),
            memory: limits.memory_bytes.and_then(|m| i64::try_from(m).ok()),
            nano_cpus: limits
                .cpu_millis
                .and_then(|c| i64::try_from(c.saturating_mul(1_000_000)).ok()),
            ..option_config(&plan_step.options)
        }),
        exposed_ports: (!plan_step.options.ports.is_empty())
            .then(|| plan_step.options.ports.iter().map(port_key).collect()),
        networking_config: own_endpoint.then(|| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_owned(),
                EndpointSettings {
                    aliases: Some(vec![plan_step.name.clone()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    Ok(ContainerSpec {
        name: container_name(job, plan_step, step.attempt),
        step: plan_step.name.clone(),
        login: RegistryCredential::for_image(&job.registries, &image).cloned(),
        image,
        pull: plan_step.pull,
        body,
    })
}

/// The name of the container of a step's `attempt`.
pub(super) fn container_name(job: &JobSpec, step: &PlanStep, attempt: u32) -> String {
    let mut name = format!(
        "gantry-{}-{}-{}",
        docker_name(&job.id),
        step.number,
        docker_name(&step.name)
    );
    if attempt > 1 {
        // A retry runs in a fresh container; the earlier try's stays until `destroy`.
        name.push_str(&format!("-try{attempt}"));
    }
    name
}

/// The host settings of a step's [`ContainerOptions`], each as Docker names it.
pub(super) fn option_config(options: &ContainerOptions) -> HostConfig {
    let some = |list: &Vec<String>| (!list.is_empty()).then(|| list.clone());
    let published: Vec<&Port> = options.ports.iter().filter(|p| p.host.is_some()).collect();
    HostConfig {
        dns: some(&options.dns),
        dns_search: some(&options.dns_search),
        extra_hosts: some(&options.extra_hosts),
        devices: (!options.devices.is_empty()).then(|| {
            options
                .devices
                .iter()
                .filter_map(|d| match &d.source {
                    DeviceSource::Host(host) => Some(DeviceMapping {
                        path_on_host: Some(host.clone()),
                        path_in_container: Some(d.path.clone()),
                        cgroup_permissions: Some(d.permissions.clone()),
                    }),
                    // `compile` resolves every volume to its host path.
                    DeviceSource::Volume(_) => None,
                })
                .collect()
        }),
        port_bindings: (!published.is_empty()).then(|| {
            published
                .iter()
                .map(|p| {
                    let binding = PortBinding {
                        host_ip: None,
                        host_port: p.host.map(|h| h.to_string()),
                    };
                    (port_key(p), Some(vec![binding]))
                })
                .collect()
        }),
        cap_add: some(&options.cap_add),
        cap_drop: some(&options.cap_drop),
        shm_size: options.shm_size.and_then(|s| i64::try_from(s).ok()),
        memory_swap: options.memswap_limit,
        cpu_shares: options.cpu_shares.and_then(|c| i64::try_from(c).ok()),
        cpu_quota: options.cpu_quota.and_then(|c| i64::try_from(c).ok()),
        cpu_period: options.cpu_period.and_then(|c| i64::try_from(c).ok()),
        cpuset_cpus: options.cpu_set.clone(),
        tmpfs: (!options.tmpfs.is_empty()).then(|| options.tmpfs.iter().cloned().collect()),
        ..Default::default()
    }
}

pub(super) fn binds(job: &JobSpec, mounts: &[Mount]) -> Vec<String> {
    let mut binds = vec![format!("{}:{}", workspace_volume(job), job.stage.workspace)];
    for mount in mounts {
        match mount {
            Mount::Named { name, path } => {
                let host = job
                    .stage
                    .volumes
                    .iter()
                    .find(|v| &v.name == name)
                    .and_then(|v| match (&v.source, &job.stage.cache) {
                        (VolumeSource::Host { path }, _) => Some(path.clone()),
                        (VolumeSource::Cache, Some(spec)) => {
                            Some(cache::volume_name(spec, &spec.scope, name))
                        }
                        (VolumeSource::Cache | VolumeSource::Temp { .. }, _) => None,
                    });
                let source = host.unwrap_or_else(|| stage_volume(job, name));
                binds.push(format!("{source}:{path}"));
            }
            Mount::Host {
                host,
                path,
                read_only,
            } => {
                binds.push(format!(
                    "{host}:{path}{}",
                    if *read_only { ":ro" } else { "" }
                ));
            }
        }
    }
    binds
}

/// What everything a job creates is labelled with.
pub(super) fn labels(runner: &str, job: &JobSpec) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_RUNNER.to_owned(), runner.to_owned()),
        (LABEL_JOB.to_owned(), job.id.clone()),
        ("gantry.stage".to_owned(), job.stage.name.clone()),
    ])
}

pub(super) fn network(job: &JobSpec) -> String {
    format!("gantry-{}", docker_name(&job.id))
}

pub(super) fn workspace_volume(job: &JobSpec) -> String {
    format!("gantry-{}-workspace", docker_name(&job.id))
}

pub(super) fn stage_volume(job: &JobSpec, name: &str) -> String {
    format!(
        "gantry-{}-volume-{}",
        docker_name(&job.id),
        docker_name(name)
    )
}

/// Docker's name of a container port: `80/tcp`.
pub(super) fn port_key(port: &Port) -> String {
    format!(
        "{}/{}",
        port.container,
        if port.udp { "udp" } else { "tcp" }
    )
}

/// Docker names: letters, digits, `_`, `.`, `-`.
pub(super) fn docker_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Everything to create a step's container.
pub(super) struct ContainerSpec {
    pub name: String,
    pub step: String,
    pub image: String,
    pub pull: Pull,
    /// The login for the image's registry, when the stage has one.
    pub login: Option<RegistryCredential>,
    pub body: ContainerCreateBody,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    use crate::backend::test_job as job;

    fn spec_of(job: &JobSpec, step: usize, attempt: u32) -> Result<ContainerSpec, BackendError> {
        let environment = BTreeMap::from([("CI".to_owned(), "true".to_owned())]);
        container_spec(
            job,
            &StepSpec {
                step: &job.stage.steps[step],
                environment,
                attempt,
            },
            "gantry-net",
            None,
            labels("runner-1", job),
        )
    }

    #[test]
    fn a_step_with_commands_runs_its_script_in_the_shell_on_the_jobs_network() {
        let job = job(
            "",
            "  - name: unit tests\n    image: busybox:1.36\n    commands: [make test]\n",
        );
        let spec = spec_of(&job, 0, 1).expect("a spec");
        assert_eq!(spec.name, "gantry-7-1-x-1-unit-tests");
        assert_eq!(spec.image, "busybox:1.36");
        let body = &spec.body;
        let entrypoint = body.entrypoint.as_ref().expect("an entrypoint");
        assert_eq!(entrypoint[1], "-c", "{entrypoint:?}");
        let script = &body.cmd.as_ref().expect("a command")[0];
        assert!(script.contains("make test"), "{script}");
        assert_eq!(body.env.as_deref(), Some(&["CI=true".to_owned()][..]));
        let labels = body.labels.as_ref().expect("labels");
        assert_eq!(labels[LABEL_RUNNER], "runner-1");
        assert_eq!(labels[LABEL_JOB], "7/1 x");
        let host = body.host_config.as_ref().expect("host settings");
        assert_eq!(host.network_mode.as_deref(), Some("gantry-net"));
        assert_eq!(
            host.binds.as_deref(),
            Some(&[format!("gantry-7-1-x-workspace:{}", job.stage.workspace)][..])
        );
        assert_eq!(host.privileged, Some(false));
        let endpoints = body
            .networking_config
            .as_ref()
            .and_then(|n| n.endpoints_config.as_ref())
            .expect("the job's network");
        assert_eq!(
            endpoints["gantry-net"].aliases.as_deref(),
            Some(&["unit tests".to_owned()][..]),
            "other steps reach it by its name"
        );
        assert_eq!(
            spec_of(&job, 0, 2).expect("a spec").name,
            "gantry-7-1-x-1-unit-tests-try2",
            "a retry runs in a fresh container"
        );
    }

    /// A step given a holder joins its namespace and carries no name of its own there;
    /// without one it is on the stage's network under its name.
    #[test]
    fn a_step_joins_the_network_holder_it_is_given() {
        let job = job(
            "",
            "  - name: unit\n    image: busybox\n    commands: [true]\n",
        );
        let spec = |holder| {
            let step = StepSpec {
                step: &job.stage.steps[0],
                environment: BTreeMap::new(),
                attempt: 1,
            };
            container_spec(&job, &step, "gantry-net", holder, labels("runner-1", &job))
                .expect("a spec")
                .body
        };
        let joined = spec(Some("holder-id"));
        let mode = joined.host_config.and_then(|h| h.network_mode);
        assert_eq!(mode.as_deref(), Some("container:holder-id"));
        assert!(
            joined.networking_config.is_none(),
            "the holder carries its name"
        );
        let alone = spec(None);
        let mode = alone.host_config.and_then(|h| h.network_mode);
        assert_eq!(mode.as_deref(), Some("gantry-net"));
        let aliases = alone
            .networking_config
            .and_then(|n| n.endpoints_config)
            .and_then(|mut e| e.remove("gantry-net"))
            .and_then(|e| e.aliases);
        assert_eq!(aliases, Some(vec!["unit".to_owned()]));
    }

    /// Each container pulls with the login of its own image's registry, and with none when
    /// the stage has no login for it.
    #[test]
    fn a_step_pulls_with_the_login_of_its_images_registry() {
        let mut job = job(
            "",
            "  - name: private\n    image: 127.0.0.1:5055/gantry/busybox\n    commands: [true]\n  - name: hub\n    image: busybox\n    commands: [true]\n  - name: elsewhere\n    image: ghcr.io/acme/tool\n    commands: [true]\n",
        );
        let login = |host: &str, user: &str| RegistryCredential {
            host: host.into(),
            username: user.into(),
            password: "pw".into(),
            source: "secret `docker`".into(),
        };
        job.registries = vec![login("docker.io", "hub-bot"), login("127.0.0.1:5055", "ci")];
        let user = |step| {
            spec_of(&job, step, 1)
                .expect("a spec")
                .login
                .map(|l| l.username)
        };
        assert_eq!(user(0).as_deref(), Some("ci"));
        assert_eq!(user(1).as_deref(), Some("hub-bot"));
        assert_eq!(user(2), None);
    }

    #[test]
    fn volumes_options_and_resources_reach_the_engine_as_docker_names_them() {
        let job = job(
            "volumes:\n  - name: scratch\n    temp: {}\n  - name: sock\n    host: {path: /var/run/docker.sock}\n",
            "  - name: build
    image: docker:cli
    entrypoint: [/bin/tool]
    command: [--flag]
    privileged: true
    volumes:
      - name: scratch
        path: /scratch
      - name: sock
        path: /var/run/docker.sock
    network_mode: host
    ports: [8080, '9000:9001/udp']
    cap_add: [NET_ADMIN]
    dns: [1.1.1.1]
    extra_hosts: ['db:10.0.0.5']
    shm_size: 64m
",
        );
        let body = spec_of(&job, 0, 1).expect("a spec").body;
        assert_eq!(body.entrypoint, Some(vec!["/bin/tool".to_owned()]));
        assert_eq!(body.cmd, Some(vec!["--flag".to_owned()]));
        assert!(
            body.networking_config.is_none(),
            "a step on another network joins no job network"
        );
        let host = body.host_config.expect("host settings");
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.privileged, Some(true));
        let binds = host.binds.expect("binds");
        assert!(
            binds.contains(&"gantry-7-1-x-volume-scratch:/scratch".to_owned()),
            "{binds:?}"
        );
        assert!(
            binds.contains(&"/var/run/docker.sock:/var/run/docker.sock".to_owned()),
            "{binds:?}"
        );
        assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_owned()]));
        assert_eq!(host.dns, Some(vec!["1.1.1.1".to_owned()]));
        assert_eq!(host.extra_hosts, Some(vec!["db:10.0.0.5".to_owned()]));
        assert_eq!(host.shm_size, Some(64 * 1024 * 1024));
        let exposed = body.exposed_ports.expect("exposed ports");
        assert!(exposed.contains(&"8080/tcp".to_owned()), "{exposed:?}");
        assert!(exposed.contains(&"9001/udp".to_owned()), "{exposed:?}");
        let published = host.port_bindings.expect("published ports");
        assert_eq!(
            published.len(),
            1,
            "only the port given a host port is published"
        );
        let binding = &published["9001/udp"].as_ref().expect("a binding")[0];
        assert_eq!(binding.host_port.as_deref(), Some("9000"));
    }

    #[test]
    fn a_step_without_an_image_is_refused_by_name() {
        let mut job = job("", "  - name: a\n    image: x\n    commands: [x]\n");
        job.stage.steps[0].image = None;
        let refused = spec_of(&job, 0, 1).err().expect("refused");
        assert!(
            refused.to_string().contains("step `a` has no image"),
            "{refused}"
        );
    }
}
