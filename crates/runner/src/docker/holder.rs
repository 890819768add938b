//! The stage's network holder: one small container per stage, on the stage's own network,
//! whose network namespace the stage's steps join (`network_mode: container:<holder>`), as
//! the containers of a Kubernetes pod join its pause container.
//!
//! Why: attaching a container to a user-defined network (a veth pair, the bridge port, the
//! engine's DNS rules) is most of what starting it costs, about 2.5x the start of a container
//! that joins an existing namespace. The holder pays that once per stage instead of once per
//! step, and the stage keeps its own network, so one build still cannot reach another's
//! containers. The steps that join it are reached by name as before (the holder carries their
//! names as aliases).
//!
//! Only steps that never run at the same time as another joining step join: a step's
//! processes end with its container, and without `NET_ADMIN` it cannot change the namespace,
//! so a step that ran before leaves nothing there for the next. Steps that may run beside
//! another (parallel branches of `depends_on`), detached steps, and steps with network
//! options of their own get an address of their own, as every step had before: none can
//! listen on another's loopback or ports, or see its packets.
//!
//! The holder runs a program that only waits: a few machine instructions in an ELF file made
//! here, imported as the local image [`IMAGE`], since no image can be assumed to be pullable
//! or to hold a `sleep`. Engines other than Linux on x86-64 or arm64 get no holder, and their
//! steps join the stage's network each on their own, as they always did.

use std::collections::{HashMap, HashSet};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, CreateImageOptionsBuilder};
use futures_util::StreamExt;
use gantry_pipeline::plan::{PlanStep, Stage};

use super::engine;
use crate::backend::{BackendError, JobSpec};

/// The holder's image: made on the engine by the runner, never pulled.
pub(super) const IMAGE: &str = "gantry/network-holder:1";
const PROGRAM: &str = "/holder";

/// The steps of a stage that join its holder: every step that may join (see [`may_join`])
/// and is ordered, by `depends_on` directly or through other steps, with every other such
/// step, so that no two of them ever run at once.
pub(super) fn members(stage: &Stage) -> HashSet<String> {
    let steps = &stage.steps;
    let parents = crate::schedule::parents(steps);
    // Each step's ancestors: the steps it waits for, directly or through others.
    let ancestors: Vec<HashSet<usize>> = (0..steps.len())
        .map(|i| {
            let mut seen = HashSet::new();
            let mut next = parents[i].clone();
            while let Some(p) = next.pop() {
                if seen.insert(p) {
                    next.extend(&parents[p]);
                }
            }
            seen
        })
        .collect();
    let candidates: Vec<usize> = (0..steps.len())
        .filter(|&i| steps[i].run && may_join(&steps[i]))
        .collect();
    let ordered = |a: usize, b: usize| ancestors[a].contains(&b) || ancestors[b].contains(&a);
    candidates
        .iter()
        .filter(|&&i| candidates.iter().all(|&j| j == i || ordered(i, j)))
        .map(|&i| steps[i].name.clone())
        .collect()
}

/// Whether a step may join the holder's namespace: not one that is reached on its own
/// address (a detached step), nor one whose options are its own network's (the engine
/// refuses them on a joined namespace, or they would change it for the steps after).
fn may_join(step: &PlanStep) -> bool {
    let options = &step.options;
    !step.detach
        && step.network_mode.is_none()
        && !step.privileged
        && options.dns.is_empty()
        && options.dns_search.is_empty()
        && options.extra_hosts.is_empty()
        && options.ports.is_empty()
        && options.cap_add.is_empty()
}

/// A static ELF executable for `architecture` (as the engine names it) that waits for ever
/// without using any memory: `pause()` on x86-64, `ppoll()` of nothing on arm64 (which has no
/// `pause`), in a loop. None for other architectures.
pub(super) fn program(architecture: &str) -> Option<Vec<u8>> {
    // mov eax, 34 (pause); syscall; jmp back to the mov.
    const X86_64: [u8; 9] = [0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7];
    // mov x0..x3, #0 (no fds, no timeout, no mask); mov x8, #73 (ppoll); svc #0; b back 6.
    const AARCH64: [u32; 7] = [
        0xd280_0000,
        0xd280_0001,
        0xd280_0002,
        0xd280_0003,
        0xd280_0928,
        0xd400_0001,
        0x17ff_fffa,
    ];
    let (machine, code): (u16, Vec<u8>) = match architecture {
        "x86_64" | "amd64" => (62, X86_64.to_vec()),
        "aarch64" | "arm64" => (183, AARCH64.iter().flat_map(|w| w.to_le_bytes()).collect()),
        _ => return None,
    };
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let size = HEADERS + code.len() as u64;
    let mut elf = Vec::with_capacity(usize::try_from(size).ok()?);
    // The file header: 64-bit, little-endian, version 1, an executable for `machine`,
    // entered at the code that follows the headers, with one program header.
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes());
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes());
    elf.extend_from_slice(&64u64.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes());
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 64, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    // The program header: the whole file loaded, readable and executable, at BASE.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    for word in [0, BASE, BASE, size, size, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&code);
    Some(elf)
}

/// Makes the holder's image on the engine unless it is there. Ok(false) when the engine is
/// not a Linux one or its architecture has no holder program.
pub(super) async fn ensure_image(docker: &Docker) -> Result<bool, BackendError> {
    if docker.inspect_image(IMAGE).await.is_ok() {
        return Ok(true);
    }
    let info = docker
        .info()
        .await
        .map_err(|e| engine("asking the engine for its architecture", e))?;
    // The program is a Linux one; a Windows engine's steps join the network one by one.
    if info.os_type.as_deref() != Some("linux") {
        return Ok(false);
    }
    let Some(program) = info.architecture.as_deref().and_then(program) else {
        return Ok(false);
    };
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(program.len() as u64);
    header.set_mode(0o555);
    header.set_cksum();
    archive
        .append_data(&mut header, &PROGRAM[1..], program.as_slice())
        .map_err(|e| BackendError::io("packing the network holder's image", e))?;
    let archive = archive
        .into_inner()
        .map_err(|e| BackendError::io("packing the network holder's image", e))?;
    let (repo, tag) = super::split_image(IMAGE);
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(vec![format!("CMD [\"{PROGRAM}\"]")])
        .build();
    let mut events = docker.create_image(
        Some(options),
        Some(bollard::body_full(archive.into())),
        None,
    );
    while let Some(event) = events.next().await {
        event.map_err(|e| engine("making the network holder's image", e))?;
    }
    Ok(true)
}

/// The holder's container name for a job.
pub(super) fn name(job: &JobSpec) -> String {
    format!("gantry-{}-network", super::docker_name(&job.id))
}

/// Creates the job's holder on `network`, named by the steps that will join it
/// (`members`), and returns its id. It may do nothing else: no capability, a read-only root,
/// no new privileges.
pub(super) async fn create(
    docker: &Docker,
    job: &JobSpec,
    network: &str,
    members: &HashSet<String>,
    labels: HashMap<String, String>,
) -> Result<String, BackendError> {
    let mut aliases: Vec<String> = members.iter().cloned().collect();
    aliases.sort();
    let body = ContainerCreateBody {
        image: Some(IMAGE.to_owned()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_owned()),
            cap_drop: Some(vec!["ALL".to_owned()]),
            readonly_rootfs: Some(true),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_owned(),
                EndpointSettings {
                    aliases: Some(aliases),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default()
        .name(&name(job))
        .build();
    let id = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| engine("creating the stage's network holder", e))?
        .id;
    docker
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(|e| engine("starting the stage's network holder", e))?;
    // A program the engine's machine cannot run ends at once; steps could not join it.
    let running = docker
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(|e| engine("inspecting the stage's network holder", e))?
        .state
        .and_then(|state| state.running)
        .unwrap_or(false);
    if !running {
        return Err(BackendError::Engine(
            "the stage's network holder stopped as soon as it started".to_owned(),
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program for this machine's own architecture runs, and waits until killed.
    #[test]
    fn the_holder_program_waits_until_killed() {
        let Some(program) = program(std::env::consts::ARCH) else {
            panic!("no holder program for {}", std::env::consts::ARCH);
        };
        let dir = std::env::temp_dir().join(format!("gantry-holder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let path = dir.join("holder");
        std::fs::write(&path, &program).expect("write the program");
        let mut permissions = std::fs::metadata(&path).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&path, permissions).expect("chmod");
        let mut child = std::process::Command::new(&path)
            .spawn()
            .expect("the program starts");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let still_running = child.try_wait().expect("its state").is_none();
        let _ = child.kill();
        let ended = child.wait().expect("it ends when killed");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            still_running,
            "the holder program exited by itself: {ended}"
        );
        assert!(!ended.success(), "it ended only because it was killed");
    }

    fn stage(steps: &str) -> Stage {
        let yaml = format!("kind: pipeline\nname: ci\nclone: {{disable: true}}\nsteps:\n{steps}");
        let config = gantry_pipeline::parse(".gantry.yml", &yaml)
            .config
            .unwrap_or_else(|| panic!("a valid test pipeline:\n{yaml}"));
        let mut ctx = gantry_pipeline::Context::push("acme/app", "main");
        ctx.trusted = true;
        gantry_pipeline::compile(&config, &ctx)
            .unwrap_or_else(|e| panic!("{e}"))
            .stages
            .remove(0)
    }

    fn sorted(members: HashSet<String>) -> Vec<String> {
        let mut names: Vec<String> = members.into_iter().collect();
        names.sort();
        names
    }

    /// Steps one after another all join, but not a detached one or one with network
    /// options of its own.
    #[test]
    fn steps_in_sequence_join_unless_detached_or_with_network_options() {
        let step = |name: &str, extra: &str| {
            format!("  - name: {name}\n    image: busybox\n    commands: [true]\n{extra}")
        };
        let steps = [
            step("build", ""),
            step("server", "    detach: true\n"),
            step("test", ""),
            step("hosts", "    extra_hosts: ['db:10.0.0.5']\n"),
            step("dns", "    dns: [10.0.0.53]\n"),
            step("ports", "    ports: [8080]\n"),
            step("caps", "    cap_add: [NET_ADMIN]\n"),
            step("host", "    network_mode: host\n"),
            step("never", "    when: {branch: [elsewhere]}\n"),
            step("after-failure", "    when: {status: [failure]}\n"),
        ]
        .concat();
        assert_eq!(
            sorted(members(&stage(&steps))),
            ["after-failure", "build", "test"]
        );
    }

    /// Of a graph, only the steps ordered with every other join: never two at once.
    #[test]
    fn steps_that_may_run_at_once_keep_their_own_address() {
        let stage = stage(
            "  - name: lint\n    image: busybox\n    commands: [true]\n    depends_on: []
  - name: unit\n    image: busybox\n    commands: [true]\n    depends_on: []
  - name: e2e\n    image: busybox\n    commands: [true]\n    depends_on: [unit]
  - name: package\n    image: busybox\n    commands: [true]\n    depends_on: [lint, e2e]
  - name: publish\n    image: busybox\n    commands: [true]\n    depends_on: [package]
",
        );
        assert_eq!(sorted(members(&stage)), ["package", "publish"]);
    }

    #[test]
    fn only_x86_64_and_arm64_have_a_holder_program() {
        for (arch, machine) in [
            ("x86_64", 62),
            ("amd64", 62),
            ("aarch64", 183),
            ("arm64", 183),
        ] {
            let elf = program(arch).expect("a program");
            assert_eq!(&elf[..4], b"\x7fELF");
            assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), machine, "{arch}");
            let entry = elf[24..32]
                .iter()
                .rev()
                .fold(0u64, |n, b| n << 8 | u64::from(*b));
            assert_eq!(
                entry,
                0x40_0000 + 120,
                "{arch}: entered right after the headers"
            );
        }
        assert!(program("s390x").is_none());
        assert!(program("ppc64le").is_none());
    }
}
