//! Docker container options of steps and services, the trust rules of Drone's linter, and
//! the platforms it accepts: each verdict gantry shares with Drone, on files of our own.

use gantry_pipeline::model::{Device, DeviceSource, Port};
use gantry_pipeline::{CompileError, Context, compile, lint, parse};

use crate::support::{pipeline, plan, push};

fn trusted() -> Context {
    let mut ctx = push();
    ctx.trusted = true;
    ctx
}

/// The refusals of `yaml` for an untrusted repository, one line each.
fn refusals(yaml: &str) -> Vec<String> {
    let parsed = parse(".gantry.yml", yaml);
    let Some(config) = parsed.config else {
        panic!("invalid:\n{}", parsed.diagnostics);
    };
    match compile(&config, &push()) {
        Err(CompileError::Untrusted(diags)) => diags.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("{other}"),
        Ok(_) => Vec::new(),
    }
}

/// Errors `gantry lint` reports for `yaml`, one line each.
fn errors(yaml: &str) -> Vec<String> {
    crate::support::errors(".gantry.yml", yaml)
}

const EVERY_OPTION: &str = "
kind: pipeline
name: ci
volumes:
  - name: fuse
    host:
      path: /dev/fuse
steps:
  - name: build
    image: alpine
    commands: [make]
    dns: [10.0.0.2, 1.1.1.1]
    dns_search: [corp.example]
    extra_hosts: [\"db.local:10.0.0.5\", \"gw=host-gateway\"]
    devices:
      - /dev/kvm
      - /dev/net/tun:/dev/tun:rw
      - name: fuse
        path: /dev/fuse
    ports: [6379, \"8080:80\", \"53/udp\", {port: 443, host: 8443}]
    cap_add: [net_admin, CAP_SYS_PTRACE]
    cap_drop: [MKNOD]
    shm_size: 256m
    mem_limit: 1GiB
    memswap_limit: -1
    cpu_shares: 512
    cpu_quota: 50000
    cpu_period: 100000
    cpu_set: [0, 1]
    tmpfs: [\"/run:size=64m\", /tmp]
    user: \"1000:1000\"
    working_dir: sub
    entrypoint: [/bin/sh, -c]
";

#[test]
fn every_container_option_reaches_the_plan() {
    let diagnostics = lint(".gantry.yml", EVERY_OPTION);
    assert!(diagnostics.is_empty(), "{diagnostics}");
    let plan = plan_trusted(EVERY_OPTION);
    let step = plan.stages[0].step("build").expect("build");
    let options = &step.options;
    assert_eq!(options.dns, ["10.0.0.2", "1.1.1.1"]);
    assert_eq!(options.dns_search, ["corp.example"]);
    assert_eq!(
        options.extra_hosts,
        ["db.local:10.0.0.5", "gw:host-gateway"]
    );
    let device = |host: &str, path: &str, permissions: &str| Device {
        source: DeviceSource::Host(host.into()),
        path: path.into(),
        permissions: permissions.into(),
    };
    assert_eq!(
        options.devices,
        vec![
            device("/dev/kvm", "/dev/kvm", "rwm"),
            device("/dev/net/tun", "/dev/tun", "rw"),
            // Drone's form names a host volume: the plan holds its path.
            device("/dev/fuse", "/dev/fuse", "rwm"),
        ]
    );
    let port = |container, host, udp| Port {
        container,
        host,
        udp,
    };
    assert_eq!(
        options.ports,
        vec![
            port(6379, None, false),
            port(80, Some(8080), false),
            port(53, None, true),
            port(443, Some(8443), false),
        ]
    );
    assert_eq!(options.cap_add, ["NET_ADMIN", "SYS_PTRACE"]);
    assert_eq!(options.cap_drop, ["MKNOD"]);
    assert_eq!(options.shm_size, Some(256 << 20));
    assert_eq!(step.resources.limits.memory_bytes, Some(1 << 30));
    assert_eq!(options.memswap_limit, Some(-1));
    assert_eq!(options.cpu_shares, Some(512));
    assert_eq!(options.cpu_quota, Some(50_000));
    assert_eq!(options.cpu_period, Some(100_000));
    assert_eq!(options.cpu_set.as_deref(), Some("0,1"));
    assert_eq!(
        options.tmpfs,
        vec![
            ("/run".to_owned(), "size=64m".to_owned()),
            ("/tmp".to_owned(), String::new())
        ]
    );
    assert_eq!(step.user.as_deref(), Some("1000:1000"));
    assert_eq!(step.working_dir, "/drone/src/sub");
}

fn plan_trusted(yaml: &str) -> gantry_pipeline::Plan {
    plan(yaml, &trusted())
}

#[test]
fn options_are_left_out_of_a_plan_that_sets_none() {
    let plan = plan(
        &pipeline("  - name: t\n    image: alpine\n    commands: [true]\n"),
        &push(),
    );
    let json = serde_json::to_value(&plan).expect("json");
    assert!(
        json["stages"][0]["steps"][1].get("options").is_none(),
        "{json}"
    );
}

/// Drone's linter: untrusted repositories cannot use devices, dns, dns_search, extra_hosts,
/// network_mode, privileged, host ports, host or in-memory volumes. gantry adds `cap_add` and
/// `tmpfs` (Woodpecker's linter refuses tmpfs too).
#[test]
fn each_trusted_only_option_is_refused_for_an_untrusted_repository_naming_it() {
    let cases = [
        ("dns: [1.1.1.1]", "sets its own DNS servers (`dns`)"),
        (
            "dns_search: [corp]",
            "sets its own DNS search domains (`dns_search`)",
        ),
        (
            "extra_hosts: [\"a:10.0.0.1\"]",
            "adds names to its hosts file (`extra_hosts`)",
        ),
        (
            "devices: [/dev/kvm]",
            "mounts devices of the runner's host (`devices`)",
        ),
        (
            "ports: [\"8080:80\"]",
            "publishes a port on the runner's host (`ports` with `host`)",
        ),
        (
            "ports: [{port: 80, host: 8080}]",
            "publishes a port on the runner's host (`ports` with `host`)",
        ),
        (
            "cap_add: [NET_ADMIN]",
            "adds Linux capabilities (`cap_add`)",
        ),
        ("tmpfs: [/run]", "mounts in-memory file systems (`tmpfs`)"),
        ("network_mode: host", "sets network_mode `host`"),
        ("privileged: true", "is privileged"),
        (
            "volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]",
            "mounts the host path `/var/run/docker.sock` (the Docker socket gives the step root on the runner's host)",
        ),
    ];
    for (option, says) in cases {
        let yaml = pipeline(&format!(
            "  - name: s\n    image: alpine\n    commands: [true]\n    {option}\n"
        ));
        let refused = refusals(&yaml);
        assert_eq!(refused.len(), 1, "{option}: {refused:?}");
        assert!(
            refused[0].contains(&format!("step `s` {says}, which only trusted")),
            "{option}: {refused:?}"
        );
        assert!(
            refused[0].starts_with(".gantry.yml:7:"),
            "points at the setting: {refused:?}"
        );
        let plan = plan_trusted(&yaml);
        assert!(plan.stages[0].step("s").expect("s").run, "{option}");
    }
}

#[test]
fn options_drone_allows_untrusted_repositories_are_allowed() {
    let yaml = pipeline(
        "  - name: s\n    image: alpine\n    commands: [true]\n    ports: [6379, \"53/udp\"]\n    shm_size: 1g\n    mem_limit: 512m\n    cpu_quota: 50000\n    cap_drop: [ALL]\n    user: nobody\n",
    );
    assert_eq!(refusals(&yaml), Vec::<String>::new());
}

/// Drone's linter refuses host volumes and `medium: memory` temp volumes where they are
/// declared, whether or not a step mounts them.
#[test]
fn declaring_a_host_or_memory_volume_is_refused_even_unmounted() {
    let yaml = "kind: pipeline
name: ci
volumes:
  - name: sock
    host:
      path: /var/run/docker.sock
  - name: ram
    temp:
      medium: memory
  - name: scratch
    temp: {}
steps:
  - name: s
    image: alpine
    commands: [true]
";
    assert_eq!(
        refusals(yaml),
        vec![
            ".gantry.yml:4:5: error: pipeline `ci` declares volume `sock` on the host directory `/var/run/docker.sock`, which only trusted repositories may do (even when no step mounts it) (at pipeline[ci].volumes); trust rule `docker-socket`",
            ".gantry.yml:7:5: error: pipeline `ci` declares volume `ram` on an in-memory volume (`medium: memory`), which only trusted repositories may do (even when no step mounts it) (at pipeline[ci].volumes); trust rule `memory-volume`",
        ]
    );
}

#[test]
fn drones_reserved_volume_names_are_errors() {
    let yaml = "kind: pipeline
name: ci
volumes:
  - name: _docker_socket
    temp: {}
steps:
  - name: s
    image: alpine
    commands: [true]
    volumes:
      - name: _workspace
        path: /x
";
    let errors = errors(yaml);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("`_docker_socket` is a reserved volume name"));
    assert!(errors[1].contains("`_workspace` is a reserved volume name"));
}

#[test]
fn bad_option_values_are_errors_with_the_fix() {
    let cases = [
        ("dns: [dns.google]", "is not the IP address of a DNS server"),
        ("extra_hosts: [justaname]", "is not NAME:ADDRESS"),
        ("extra_hosts: [\"a:not-an-ip\"]", "is not NAME:ADDRESS"),
        ("devices: [dev/kvm]", "is not HOST_DEVICE"),
        ("devices: [\"/dev/kvm:/dev/kvm:rwx\"]", "is not HOST_DEVICE"),
        ("ports: [\"http\"]", "not a port"),
        ("ports: [70000]", "not a port"),
        ("ports: [\"80/sctp\"]", "not a port"),
        ("cap_add: [\"NET ADMIN\"]", "is not a Linux capability"),
        ("shm_size: lots", "is not an amount of memory"),
        ("cpu_set: \"0-a\"", "is not a set of CPUs"),
        ("tmpfs: [run]", "is not an absolute path"),
        (
            "mem_limit: 1g\n    resources: {limits: {memory: 2g}}",
            "the memory limit is set twice",
        ),
        (
            "devices: [{name: nope, path: /dev/x}]",
            "device `nope` of step `s` is not a host volume",
        ),
    ];
    for (option, says) in cases {
        let yaml = pipeline(&format!(
            "  - name: s\n    image: alpine\n    commands: [true]\n    {option}\n"
        ));
        let errors = errors(&yaml);
        assert_eq!(errors.len(), 1, "{option}: {errors:?}");
        assert!(errors[0].contains(says), "{option}: {errors:?}");
        assert!(errors[0].contains("; "), "a hint: {errors:?}");
    }
}

/// Drone's linter: os `linux` or `windows`, arch `amd64`, `arm64` or `arm`.
#[test]
fn platforms_drone_refuses_are_errors() {
    let with = |platform: &str, kind: &str| {
        format!(
            "kind: pipeline\ntype: {kind}\nname: ci\nplatform:\n{platform}\nsteps:\n  - name: s\n    image: alpine\n    commands: [true]\n"
        )
    };
    for ok in [
        "  os: linux\n  arch: arm64",
        "  os: linux\n  arch: arm\n  variant: v7",
        "  os: windows\n  arch: amd64",
        "  arch: amd64",
    ] {
        assert_eq!(errors(&with(ok, "docker")), Vec::<String>::new(), "{ok}");
    }
    assert_eq!(
        errors(&with("  os: darwin\n  arch: arm64", "exec")),
        Vec::<String>::new()
    );
    let openbsd = errors(&with("  os: openbsd\n  arch: amd64", "docker"));
    assert_eq!(openbsd.len(), 1, "{openbsd:?}");
    assert!(
        openbsd[0].contains("unsupported os `openbsd`"),
        "{openbsd:?}"
    );
    let s390x = errors(&with("  os: linux\n  arch: s390x", "docker"));
    assert_eq!(s390x.len(), 1, "{s390x:?}");
    assert!(
        s390x[0].contains("unsupported architecture `s390x`")
            && s390x[0].contains("amd64, arm64, arm"),
        "{s390x:?}"
    );
    assert_eq!(
        errors(&with("  os: darwin\n  arch: arm64", "docker")).len(),
        1,
        "darwin has no Docker runner"
    );
}

#[test]
fn a_pipelines_platform_reaches_its_stage() {
    let yaml = "kind: pipeline\nname: arm\nplatform:\n  os: linux\n  arch: arm64\nsteps:\n  - name: s\n    image: alpine\n    commands: [true]\n";
    let plan = plan(yaml, &push());
    let platform = &plan.stages[0].platform;
    assert_eq!(platform.os.as_deref(), Some("linux"));
    assert_eq!(platform.arch.as_deref(), Some("arm64"));
}

/// Woodpecker routes by a `platform` label: it becomes the stage's platform (what runners
/// report), not a label a runner would have to carry.
#[test]
fn a_woodpecker_platform_label_routes_by_platform() {
    let yaml = "labels:\n  platform: linux/arm64\n  gpu: yes\nsteps:\n  build:\n    image: alpine\n    commands: [true]\n";
    let plan = plan(yaml, &push());
    let stage = &plan.stages[0];
    assert_eq!(stage.platform.os.as_deref(), Some("linux"));
    assert_eq!(stage.platform.arch.as_deref(), Some("arm64"));
    assert_eq!(
        stage.labels.iter().collect::<Vec<_>>(),
        [(&"gpu".to_owned(), &"yes".to_owned())]
    );
}

#[test]
fn a_windows_version_is_said_to_be_unmatched() {
    let yaml = "kind: pipeline\nname: w\nplatform:\n  os: windows\n  arch: amd64\n  version: 1809\nsteps:\n  - name: s\n    image: alpine\n    commands: [true]\n";
    let warnings = crate::support::warnings(".gantry.yml", yaml);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("`platform.version` is not matched"));
}

/// Caches belong to the repository and the build's branch, pull request or tag, start from
/// the default branch's, and carry the server's limits.
#[test]
fn caches_are_scoped_by_repository_and_branch_pull_request_or_tag() {
    let yaml = pipeline(
        "  - name: s\n    image: alpine\n    commands: [true]\n    cache: [/go/pkg/mod, node_modules]\n",
    );
    let mut ctx = push();
    ctx.repo.default_branch = "main".into();
    ctx.cache_policy.max_bytes = 5 << 20;
    let scope = |ctx: &Context| {
        let plan = plan(&yaml, ctx);
        let stage = &plan.stages[0];
        let step = stage.step("s").expect("s");
        assert_eq!(
            step.mounts,
            vec![
                gantry_pipeline::model::Mount::Named {
                    name: "cache:/go/pkg/mod".into(),
                    path: "/go/pkg/mod".into()
                },
                gantry_pipeline::model::Mount::Named {
                    name: "cache:/drone/src/node_modules".into(),
                    path: "/drone/src/node_modules".into()
                },
            ]
        );
        let cache = stage.cache.clone().expect("a cache scope");
        assert_eq!(cache.repo, "acme/app");
        assert_eq!(cache.max_bytes, 5 << 20);
        (cache.scope, cache.fallback)
    };
    assert_eq!(scope(&ctx), ("branch/main".into(), None));
    let mut feature = ctx.clone();
    feature.branch = "feature".into();
    assert_eq!(
        scope(&feature),
        ("branch/feature".into(), Some("branch/main".into()))
    );
    let mut pull = feature.clone();
    pull.event = gantry_pipeline::Event::PullRequest;
    pull.pull_request = Some(9);
    assert_eq!(scope(&pull), ("pull/9".into(), Some("branch/main".into())));
    let mut tag = ctx.clone();
    tag.event = gantry_pipeline::Event::Tag;
    tag.tag = Some("v1".into());
    assert_eq!(scope(&tag), ("tag/v1".into(), Some("branch/main".into())));

    let none = plan(
        &pipeline("  - name: s\n    image: alpine\n    commands: [true]\n"),
        &ctx,
    );
    assert!(none.stages[0].cache.is_none());
    let bad = errors(&pipeline(
        "  - name: s\n    image: alpine\n    commands: [true]\n    cache: [../up]\n",
    ));
    assert!(bad[0].contains("is not a directory to cache"), "{bad:?}");
}

/// A named volume a Woodpecker or Drone 0.8 step mounts without declaring it persists, as
/// there (a cache of the repository); in a gantry file it lives as long as the stage.
#[test]
fn undeclared_named_volumes_are_caches_in_woodpecker_and_drone_0_8() {
    use gantry_pipeline::model::VolumeSource;
    let woodpecker = "steps:\n  build:\n    image: golang\n    commands: [go build]\n    volumes: [\"gocache:/root/.cache\"]\n";
    let stage = plan(woodpecker, &push()).stages.remove(0);
    assert_eq!(stage.volumes[0].name, "gocache");
    assert_eq!(stage.volumes[0].source, VolumeSource::Cache);
    assert!(stage.cache.is_some());
    let legacy = "pipeline:\n  build:\n    image: golang\n    commands: [go build]\n    volumes: [\"gocache:/root/.cache\"]\n";
    assert_eq!(
        plan(legacy, &push()).stages[0].volumes[0].source,
        VolumeSource::Cache
    );
    let gantry = pipeline(
        "  - name: s\n    image: alpine\n    commands: [true]\n    volumes:\n      - name: scratch\n        path: /scratch\n",
    );
    let stage = plan(&gantry, &push()).stages.remove(0);
    assert_eq!(
        stage.volumes[0].source,
        VolumeSource::Temp { memory: false }
    );
    assert!(stage.cache.is_none());
}

/// Drone's `image_pull_secrets` reaches the stage (the server reads the secrets into registry
/// logins), and is no longer warned about as ignored.
#[test]
fn image_pull_secrets_reach_the_stage() {
    let yaml = "kind: pipeline\nname: ci\nimage_pull_secrets: [dockerconfig, ghcr_login]\nsteps:\n  - name: t\n    image: registry.example.com/acme/ci:1\n    commands: [true]\n";
    let parsed = parse(".drone.yml", yaml);
    assert!(
        parsed.diagnostics.is_empty(),
        "no warning: {}",
        parsed.diagnostics
    );
    let plan = compile(&parsed.config.expect("valid"), &push()).expect("plans");
    assert_eq!(plan.stages[0].pull_secrets, ["dockerconfig", "ghcr_login"]);
    let none = plan_trusted(
        "kind: pipeline\nname: ci\nsteps:\n  - name: t\n    image: alpine\n    commands: [true]\n",
    );
    assert!(none.stages[0].pull_secrets.is_empty());
}
