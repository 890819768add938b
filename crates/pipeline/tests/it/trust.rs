//! Trust is decided on what will run: every matrix combination and every substituted value
//! of an untrusted repository's file is checked, and `trust::check_stage` (the runner's
//! second check) finds the same rules broken in a plan made for a trusted repository.

use gantry_pipeline::trust::{Rule, Subject, check_stage};
use gantry_pipeline::{CompileError, Context, compile, parse};

use crate::support::{plan, push};

/// The refusals of `file` for an untrusted push, one line each (empty when it plans).
fn refusals(name: &str, yaml: &str, ctx: &Context) -> Vec<String> {
    let parsed = parse(name, yaml);
    let Some(config) = parsed.config else {
        panic!("invalid:\n{}", parsed.diagnostics);
    };
    match compile(&config, ctx) {
        Err(CompileError::Untrusted(diags)) => diags.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("{other}"),
        Ok(_) => Vec::new(),
    }
}

fn woodpecker(matrix: &str, step: &str) -> String {
    format!(
        "matrix:\n{matrix}steps:\n  - name: build\n    image: alpine\n    commands: [id]\n{step}"
    )
}

/// The attack as found: the first combination mounts a named volume, the second the Docker
/// socket. Only the first used to be checked.
#[test]
fn a_matrix_value_cannot_smuggle_the_docker_socket() {
    let yaml = woodpecker(
        "  SRC: [cache1, /var/run/docker.sock]\n",
        "    volumes: ['${SRC}:/var/run/docker.sock']\n",
    );
    let refused = refusals(".woodpecker.yml", &yaml, &push());
    assert_eq!(
        refused,
        vec![
            ".woodpecker.yml:7:15: error: step `build` mounts the host path `/var/run/docker.sock` (the Docker socket gives the step root on the runner's host), which only trusted repositories may do (at pipeline[woodpecker].steps[build].volumes); trust rule `docker-socket`"
        ]
    );
}

/// Every verdict a substituted value can change, through a matrix whose first value is
/// allowed: mount sources and paths. (`privileged: ${V}` and `ports: ['${V}']` are lint
/// errors before any substitution; `dns`, `extra_hosts`, `cap_add`... are refused whatever
/// their value.)
#[test]
fn every_mount_is_checked_in_every_combination() {
    let cases = [
        (
            "  V: [cache, /etc]\n",
            "    volumes: ['${V}:/host']\n",
            "mounts the host path `/etc`",
        ),
        (
            "  V: [/cache, /run/drone/env]\n",
            "    volumes: ['cache:${V}']\n",
            "mounts a volume at `/run/drone/env`, under /run/drone",
        ),
        (
            "  V: [cache, /var/lib/../run/docker.sock]\n",
            "    volumes: ['${V}:/sock']\n",
            "(the Docker socket gives the step root",
        ),
    ];
    for (matrix, step, says) in cases {
        let yaml = woodpecker(matrix, step);
        let refused = refusals(".woodpecker.yml", &yaml, &push());
        assert_eq!(refused.len(), 1, "{yaml}\n{refused:?}");
        assert!(refused[0].contains(says), "{yaml}\n{refused:?}");
        let mut trusted = push();
        trusted.trusted = true;
        assert_eq!(plan(&yaml, &trusted).stages.len(), 2, "{yaml}");
    }
}

/// A build's own variables reach a substituted value: a branch name cannot name a host
/// path, and a YAML anchor cannot carry one into a step the check skipped.
#[test]
fn substitutions_and_anchors_are_checked_after_they_are_resolved() {
    let yaml = "steps:\n  - name: build\n    image: alpine\n    commands: [id]\n    volumes: ['${CI_COMMIT_BRANCH}:/data']\n";
    let mut ctx = push();
    ctx.branch = "cache".into();
    assert_eq!(
        refusals(".woodpecker.yml", yaml, &ctx),
        Vec::<String>::new()
    );
    ctx.branch = "/srv".into();
    let refused = refusals(".woodpecker.yml", yaml, &ctx);
    assert!(
        refused.len() == 1 && refused[0].contains("mounts the host path `/srv`"),
        "{refused:?}"
    );

    let anchored = "x-mount: &sock /var/run/docker.sock:/var/run/docker.sock\nsteps:\n  - name: a\n    image: alpine\n    commands: [id]\n  - name: b\n    image: alpine\n    commands: [id]\n    volumes: [*sock]\n";
    let refused = refusals(".woodpecker.yml", anchored, &push());
    assert!(
        refused.len() == 1 && refused[0].contains("step `b` mounts the host path"),
        "{refused:?}"
    );
}

/// Drone's linter verdicts that were missing: a mount under `/run/drone`, and a step and a
/// service of one name.
#[test]
fn drone_linter_verdicts_for_run_drone_and_names() {
    let yaml = "kind: pipeline\nname: ci\nsteps:\n  - name: a\n    image: alpine\n    commands: [id]\n    volumes:\n      - name: env\n        path: /run/drone/x\nvolumes:\n  - name: env\n    temp: {}\n";
    let refused = refusals(".gantry.yml", yaml, &push());
    assert!(
        refused.len() == 1 && refused[0].contains("under /run/drone"),
        "{refused:?}"
    );

    let same = "kind: pipeline\nname: ci\nsteps:\n  - name: db\n    image: alpine\n    commands: [id]\nservices:\n  - name: db\n    image: postgres\n";
    let errors = crate::support::errors(".gantry.yml", same);
    assert!(
        errors.len() == 1 && errors[0].contains("a step and a service are both named `db`"),
        "{errors:?}"
    );
}

/// The runner's check finds, in a plan made for a trusted repository, each rule the
/// compiler would have refused, named.
#[test]
fn the_runner_check_names_each_broken_rule_of_a_plan() {
    let yaml = "kind: pipeline\nname: ci\nvolumes:\n  - name: sock\n    host:\n      path: /var/run/docker.sock\n  - name: ram\n    temp:\n      medium: memory\nsteps:\n  - name: a\n    image: alpine\n    commands: [id]\n    privileged: true\n    network_mode: host\n    dns: [1.1.1.1]\n    cap_add: [SYS_ADMIN]\n    volumes:\n      - name: sock\n        path: /var/run/docker.sock\n  - name: b\n    image: alpine\n    commands: [id]\n    when:\n      event: tag\n    devices: [/dev/kvm]\n";
    let mut trusted = push();
    trusted.trusted = true;
    let plan = plan(yaml, &trusted);
    let found: Vec<(Rule, Subject)> = check_stage(&plan.stages[0])
        .into_iter()
        .map(|v| (v.rule, v.subject))
        .collect();
    let step = |s: &str| Subject::Step(s.to_owned());
    for expected in [
        (Rule::DockerSocket, Subject::Volume("sock".into())),
        (Rule::MemoryVolume, Subject::Volume("ram".into())),
        (Rule::Privileged, step("a")),
        (Rule::NetworkMode, step("a")),
        (Rule::Dns, step("a")),
        (Rule::CapAdd, step("a")),
        // A step that would not run is checked all the same.
        (Rule::Devices, step("b")),
    ] {
        assert!(found.contains(&expected), "{expected:?} in {found:?}");
    }
    assert_eq!(found.len(), 7, "{found:?}");

    let exec = "kind: pipeline\ntype: exec\nname: host\nsteps:\n  - name: t\n    commands: [id]\n";
    let plan = crate::support::plan(exec, &trusted);
    let found = check_stage(&plan.stages[0]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule.name(), "host-pipeline");
}

/// A pull request's `type: kubernetes` pipeline cannot borrow a service account's rights,
/// reach tainted nodes, loosen its pod's confinement or point its resolver elsewhere; node
/// selectors and labels are its own to choose.
#[test]
fn a_pods_identity_and_placement_need_trust() {
    let yaml = "kind: pipeline
type: kubernetes
name: ci
metadata:
  labels: {team: web}
  annotations: {container.apparmor.security.beta.kubernetes.io/step-1: unconfined}
service_account_name: cluster-admin
node_selector: {disk: ssd}
tolerations:
  - {operator: Exists}
dns_config: {nameservers: [10.0.0.10]}
host_aliases:
  - {ip: 10.0.0.5, hostnames: [registry.internal]}
steps:
  - name: a
    image: alpine
    commands: [id]
";
    let refused = refusals(".drone.yml", yaml, &push()).join("\n");
    for rule in [
        "service-account",
        "tolerations",
        "pod-annotations",
        "dns-config",
        "host-aliases",
    ] {
        assert!(
            refused.contains(&format!("trust rule `{rule}`")),
            "{rule}: {refused}"
        );
    }
    assert!(refused.contains("`cluster-admin`"), "{refused}");
    assert_eq!(refused.lines().count(), 5, "{refused}");
    let trusted = plan(yaml, &{
        let mut ctx = push();
        ctx.trusted = true;
        ctx
    });
    let pod = &trusted.stages[0].pod;
    assert_eq!(pod.service_account.as_deref(), Some("cluster-admin"));
    assert_eq!(
        pod.node_selector.get("disk").map(String::as_str),
        Some("ssd")
    );
    assert_eq!(pod.host_aliases[0].hostnames, ["registry.internal"]);
}

/// Woodpecker's per-step pod options need the same trust as Drone's pipeline keys, and a
/// runtime class or a confinement other than the runtime's default needs trust of its own.
#[test]
fn kubernetes_backend_options_need_trust() {
    let yaml = "steps:
  - name: build
    image: alpine
    commands: [id]
    backend_options:
      kubernetes:
        serviceAccountName: deployer
        runtimeClassName: runc
        tolerations: [{operator: Exists}]
        securityContext:
          privileged: true
          runAsUser: 1000
          runAsNonRoot: true
          seccompProfile: {type: Unconfined}
          apparmorProfile: {type: RuntimeDefault}
";
    let refused = refusals(".woodpecker.yml", yaml, &push()).join("\n");
    for rule in [
        "service-account",
        "runtime-class",
        "tolerations",
        "privileged",
        "security-profile",
    ] {
        assert!(
            refused.contains(&format!("trust rule `{rule}`")),
            "{rule}: {refused}"
        );
    }
    assert!(refused.contains("seccomp `Unconfined`"), "{refused}");
    assert_eq!(refused.lines().count(), 5, "{refused}");
    let harmless = "steps:
  - name: build
    image: alpine
    commands: [id]
    backend_options:
      kubernetes:
        nodeSelector: {disk: ssd}
        labels: {team: web}
        resources: {limits: {memory: 1Gi}}
        securityContext: {runAsUser: 1000, runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
";
    assert_eq!(
        refusals(".woodpecker.yml", harmless, &push()),
        Vec::<String>::new()
    );
}
