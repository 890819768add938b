//! The semantic cases on the Docker backend, against the real engine and the offline busybox
//! image (`scripts/test-image`), plus what only containers have: services reached by name,
//! plugins configured by `PLUGIN_*`, images that cannot be pulled.

use std::sync::Arc;

use gantry_runner::{DockerBackend, StepState};

use gantry_proto::registry::RegistryCredential;
use gantry_test_support::registry;

use crate::support::{Flavour, expect, job_id, run, run_job, stage, statuses, test_image};

const IMAGE: &str = "gantry-test/busybox:latest";
pub const DOCKER: Flavour = Flavour {
    pipeline_type: "docker",
    image: IMAGE,
    start_secs: 0,
};

pub async fn docker() -> Arc<DockerBackend> {
    test_image();
    let backend = DockerBackend::connect(&job_id("test-runner"))
        .await
        .unwrap_or_else(|e| panic!("these tests need a running Docker engine: {e}"));
    Arc::new(backend)
}

/// The engine holds no container, network or volume of this backend any more.
pub async fn nothing_left(backend: Arc<DockerBackend>) {
    let left = backend
        .leftovers()
        .await
        .expect("list the engine's objects");
    let _ = backend.sweep().await;
    assert_eq!(
        left,
        (0, 0, 0),
        "containers, networks and volumes left behind"
    );
}

crate::backend_cases!(docker().await, DOCKER, nothing_left);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_reached_by_name_and_plugins_get_their_settings() {
    let backend = docker().await;
    let stage = stage(
        DOCKER,
        "services:\n  - name: web\n    image: IMAGE\n    commands: [mkdir -p /www, echo hello-from-web > /www/index.html, httpd -f -p 80 -h /www]\n",
        "
  - name: fetch
    image: IMAGE
    commands:
      - for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://web/ && exit 0; sleep 0.5; done; exit 1
  - name: plugin
    image: IMAGE
    entrypoint: [sh, -c]
    command: ['echo \"plugin says $PLUGIN_GREETING to $PLUGIN_TARGETS\"']
    settings:
      greeting: hi
      targets: [a, b]
",
    );
    let run = run(backend.clone(), stage, &[], None).await;
    assert_eq!(
        statuses(&run.result),
        expect(&[
            ("fetch", "success"),
            ("plugin", "success"),
            ("web", "success")
        ])
    );
    assert!(
        run.recorder
            .lines("fetch")
            .contains(&"hello-from-web".to_owned()),
        "{:?}",
        run.recorder.lines("fetch")
    );
    assert_eq!(run.recorder.lines("plugin"), ["plugin says hi to a,b"]);
    nothing_left(backend).await;
}

/// The names of the engine's containers whose name holds `part`.
fn containers_named(part: &str) -> Vec<String> {
    let listed = std::process::Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
        .arg(format!("name={part}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Steps one after another share one network namespace (the stage's network holder), steps
/// that may run at once do not, and every name resolves from both: a service, a detached step,
/// a step running beside. A step made ahead whose gate then stays shut leaves no container
/// behind while the stage goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_reach_services_detached_and_parallel_steps_by_name() {
    let backend = docker().await;
    // A plain YAML scalar in a block list: no `: ` in it, quotes only inside.
    let address = "ip -o -4 addr show eth0 | awk '{print \"address\", $4}'";
    let stage = stage(
        DOCKER,
        "services:\n  - name: db\n    image: IMAGE\n    commands: [mkdir -p /www, echo from-service > /www/index.html, httpd -f -p 80 -h /www]\n",
        &format!(
            "
  - name: server
    image: IMAGE
    detach: true
    depends_on: []
    commands: [mkdir -p /www, echo from-detached > /www/index.html, httpd -f -p 8080 -h /www]
  - name: listener
    image: IMAGE
    depends_on: []
    commands: [mkdir -p /w, echo from-beside > /w/index.html, httpd -p 8081 -h /w, sleep 4]
  - name: fetch
    image: IMAGE
    depends_on: []
    commands:
      - for url in db server:8080 listener:8081; do for i in $(seq 50); do wget -q -O /dev/null http://$url/ 2>/dev/null && break; sleep 0.2; done; done
      - wget -q -O - http://db/ && wget -q -O - http://server:8080/ && wget -q -O - http://listener:8081/
      - {address}
  - name: own-address
    image: IMAGE
    extra_hosts: ['gantry-extra:127.0.0.1']
    depends_on: [fetch]
    commands:
      - wget -q -O - http://db/ && wget -q -O - http://server:8080/ && wget -q -O - http://listener:8081/
      - {address}
  - name: first-joined
    image: IMAGE
    depends_on: [own-address, listener]
    commands:
      - wget -q -O - http://db/ && wget -q -O - http://server:8080/
      - {address}
      - sleep 2
  - name: gated-out-on-success
    image: IMAGE
    depends_on: [first-joined]
    when: {{status: [failure]}}
    commands: [echo must not run]
  - name: second-joined
    image: IMAGE
    depends_on: [gated-out-on-success]
    commands:
      - {address}
      - sleep 3
"
        ),
    );
    let running = tokio::spawn(run(backend.clone(), stage, &[], None));
    // Made ahead while `first-joined` runs (it sleeps to be seen), gone while
    // `second-joined` runs.
    let (mut gated_made_ahead, mut gated_gone) = (false, false);
    for _ in 0..300 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if running.is_finished() {
            break;
        }
        let gated = !containers_named("-gated-out-on-success").is_empty();
        gated_made_ahead |= gated;
        if gated_made_ahead && !gated && !containers_named("-second-joined").is_empty() {
            gated_gone = true;
            break;
        }
    }
    let run = running.await.expect("the stage ran");
    let text = run.recorder.all_text();
    assert_eq!(
        statuses(&run.result),
        expect(&[
            ("server", "success"),
            ("listener", "success"),
            ("fetch", "success"),
            ("own-address", "success"),
            ("first-joined", "success"),
            ("gated-out-on-success", "skipped"),
            ("second-joined", "success"),
            ("db", "success"),
        ]),
        "{text}"
    );
    // What a step printed, without the shell's echo of each command.
    let lines = |step| {
        let mut printed = run.recorder.lines(step);
        printed.retain(|l| !l.starts_with("+ "));
        printed
    };
    let address_of = |step| {
        lines(step)
            .into_iter()
            .find_map(|l| l.strip_prefix("address ").map(str::to_owned))
            .unwrap_or_else(|| panic!("`{step}` printed no address: {text}"))
    };
    let fetched = ["from-service", "from-detached", "from-beside"];
    assert_eq!(lines("fetch")[..3], fetched, "{text}");
    assert_eq!(lines("own-address")[..3], fetched, "{text}");
    assert_eq!(lines("first-joined")[..2], fetched[..2], "{text}");
    assert_eq!(
        address_of("first-joined"),
        address_of("second-joined"),
        "steps one after another share the holder's address"
    );
    assert_ne!(address_of("fetch"), address_of("first-joined"));
    assert_ne!(address_of("own-address"), address_of("first-joined"));
    assert!(
        gated_made_ahead,
        "no container was made ahead for the step after `first-joined`"
    );
    assert!(
        gated_gone,
        "the container made ahead for the step whose gate stayed shut was still there while the stage went on"
    );
    nothing_left(backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_is_a_clear_error() {
    let backend = docker().await;
    let stage = stage(
        DOCKER,
        "",
        "\n  - name: build\n    image: gantry-test/does-not-exist:1.0\n    commands: [echo hi]\n  - name: after\n    image: IMAGE\n    commands: [echo after]\n",
    );
    let run = run(backend.clone(), stage, &[], None).await;
    assert_eq!(
        statuses(&run.result),
        expect(&[("build", "error"), ("after", "skipped")])
    );
    assert_eq!(run.result.status, StepState::Error);
    let error = run
        .result
        .step("build")
        .and_then(|s| s.error.clone())
        .unwrap_or_default();
    assert!(
        error.starts_with(
            "image `gantry-test/does-not-exist:1.0` is not available and cannot be pulled: "
        ),
        "{error}"
    );
    nothing_left(backend).await;
}

/// A stage of one step `name` running `command` in the test registry's image.
fn private_stage(name: &str, command: &str) -> gantry_pipeline::Stage {
    stage(
        DOCKER,
        "",
        &format!(
            "\n  - name: {name}\n    image: {}\n    commands: [{command}]\n",
            registry::IMAGE
        ),
    )
}

/// The test registry's login with `password`, as from a pull secret named `docker`.
fn login(password: &str) -> RegistryCredential {
    RegistryCredential {
        host: registry::HOST.into(),
        username: registry::USERNAME.into(),
        password: password.into(),
        source: "secret `docker`".into(),
    }
}

/// A job of `stage` with `registries` as its logins.
fn job_pulling_with(
    stage: &gantry_pipeline::Stage,
    registries: Vec<RegistryCredential>,
) -> gantry_runner::Job {
    gantry_runner::Job {
        id: job_id("registry"),
        stage: stage.clone(),
        secrets: Default::default(),
        withheld: Default::default(),
        workspace: gantry_runner::WorkspaceSource::Empty,
        netrc: None,
        registries,
    }
}

/// An image of a private registry (`scripts/test-registry`, password auth) pulls with the
/// stage's login for that registry; without one, or with a wrong one, the step is an error
/// that names the registry, where the login came from and what to do, never its password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_pulls_with_the_stages_login() {
    let backend = docker().await;
    let _turn = registry::exclusive().await;
    let stage = private_stage("private", "echo pulled-and-ran");
    let mut outcomes = Vec::new();
    for registries in [
        vec![],
        vec![login("not-the-password")],
        vec![login(registry::PASSWORD)],
    ] {
        let run = run_job(backend.clone(), job_pulling_with(&stage, registries), None).await;
        let step = run.result.step("private").expect("the step");
        outcomes.push((
            step.status,
            step.error.clone().unwrap_or_default(),
            run.recorder.said("private"),
        ));
    }
    let (status, error, _) = &outcomes[0];
    assert_eq!(*status, StepState::Error);
    assert!(
        error.contains(&format!(
            "registry {} needs a login and gantry has none for it: add one with `gantry registry add",
            registry::HOST
        )),
        "{error}"
    );
    let (status, error, _) = &outcomes[1];
    assert_eq!(*status, StepState::Error);
    assert!(
        error.contains(&format!(
            "registry {} refused the login of `{}` from secret `docker`",
            registry::HOST,
            registry::USERNAME
        )),
        "{error}"
    );
    assert!(!error.contains("not-the-password"), "{error}");
    let (status, error, lines) = &outcomes[2];
    assert_eq!(*status, StepState::Success, "{error}");
    assert!(lines.contains(&"pulled-and-ran".to_owned()), "{lines:?}");
    // The pull is told first: from where, with which login, each layer, bytes and time.
    assert_eq!(
        lines[0],
        format!(
            "gantry: pulling {} from {} with the login of `{}` from secret `docker`",
            registry::IMAGE,
            registry::HOST,
            registry::USERNAME
        ),
        "{lines:?}"
    );
    // Its one layer may be here already (the local test image holds the same bytes): the
    // engine then downloads none.
    let done = format!("gantry: pulled {}: ", registry::IMAGE);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&done) && l.contains(" new layer") && l.ends_with(" s")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains(registry::PASSWORD)));
    nothing_left(backend).await;
}

/// Two stages on one runner that need the same image not yet here wait for one pull: one
/// step's log tells the pull, the other's that the image came while it waited; a third
/// stage's that the image is already here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_needing_one_image_wait_for_one_pull() {
    let backend = docker().await;
    let _turn = registry::exclusive().await;
    let stage = private_stage("private", "echo ran");
    let job = || job_pulling_with(&stage, vec![login(registry::PASSWORD)]);
    let (first, second) = tokio::join!(
        run_job(backend.clone(), job(), None),
        run_job(backend.clone(), job(), None)
    );
    let third = run_job(backend.clone(), job(), None).await;
    let mut firsts = Vec::new();
    for run in [&first, &second, &third] {
        let step = run.result.step("private").expect("the step");
        assert_eq!(step.status, StepState::Success, "{:?}", step.error);
        let lines = run.recorder.said("private");
        assert_eq!(lines.last().map(String::as_str), Some("ran"), "{lines:?}");
        firsts.push(lines[0].clone());
    }
    let pulling = format!("gantry: pulling {} from ", registry::IMAGE);
    let waited = format!(
        "gantry: {} was pulled for another stage on this runner while this one waited",
        registry::IMAGE
    );
    let present = format!(
        "gantry: image {} is already on this runner",
        registry::IMAGE
    );
    let mut concurrent = firsts[..2].to_vec();
    concurrent.sort();
    // The second stage waits for the first's pull, unless it asks after that pull ended.
    assert!(
        (concurrent[0] == waited || concurrent[0] == present)
            && concurrent[1].starts_with(&pulling),
        "one pull for both stages: {firsts:?}"
    );
    assert_eq!(firsts[2], present);
    nothing_left(backend).await;
}

/// Networks made ahead of time serve the next stages (services still reached by name), are
/// removed with the stage that used them, are replaced, and go on `remove_spares`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spare_networks_serve_stages_and_are_removed() {
    let backend = docker().await;
    backend.keep_spare_networks(1);
    let ready = |backend: Arc<DockerBackend>, networks: usize| async move {
        for _ in 0..200 {
            if backend.leftovers().await.expect("lists") == (0, networks, 0) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!(
            "expected only {networks} spare network(s): {:?}",
            backend.leftovers().await
        );
    };
    ready(Arc::clone(&backend), 1).await;
    for _ in 0..2 {
        let stage = stage(
            DOCKER,
            "services:\n  - name: web\n    image: IMAGE\n    commands: [mkdir -p /www, echo spare > /www/index.html, httpd -f -p 80 -h /www]\n",
            "  - name: get\n    image: IMAGE\n    commands: [sleep 1, wget -q -O - http://web/]\n",
        );
        let run = run(backend.clone(), stage, &[], None).await;
        assert_eq!(
            run.result.status,
            StepState::Success,
            "{:?}",
            statuses(&run.result)
        );
        assert!(
            run.recorder.lines("get").iter().any(|l| l == "spare"),
            "{:?}",
            run.recorder.all_text()
        );
        // The used network is gone; a new spare takes its place.
        ready(Arc::clone(&backend), 1).await;
    }
    backend.remove_spares().await;
    nothing_left(backend).await;
}

/// Every Docker option a step can set reaches its container: each command below fails the
/// step unless the engine applied the option.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_options_are_applied_by_the_engine() {
    let backend = docker().await;
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let stage = stage(
        DOCKER,
        &format!(
            "services:\n  - name: web\n    image: IMAGE\n    commands: [mkdir -p /www, echo published > /www/index.html, httpd -f -p 80 -h /www]\n    ports: [{{port: 80, host: {host_port}}}]\n"
        ),
        &format!(
            r#"
  - name: options
    image: IMAGE
    dns: [10.9.8.7]
    dns_search: [corp.example]
    extra_hosts: ["gantry-extra:127.0.0.1"]
    devices: ["/dev/null:/dev/gantry-null"]
    cap_add: [NET_ADMIN]
    shm_size: 96m
    mem_limit: 64m
    cpu_set: "0"
    cpu_quota: 50000
    cpu_period: 100000
    tmpfs: ["/gantry-tmp:size=8m"]
    working_dir: /tmp
    commands:
      - grep -x 'search corp.example' /etc/resolv.conf
      - ping -c1 -W2 gantry-extra
      - test -c /dev/gantry-null
      - cap=$(awk '/^CapEff/ {{print $2}}' /proc/self/status); test $(( 0x$cap >> 12 & 1 )) = 1
      - df -k /dev/shm | tail -1 | awk '{{print "shm " $2}}'
      - df -k /dev/shm | tail -1 | awk '{{exit !($2 == 98304)}}'
      - mem=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes); echo "memory $mem"; test "$mem" = 67108864
      - cpus=$(cat /sys/fs/cgroup/cpuset.cpus.effective 2>/dev/null || cat /sys/fs/cgroup/cpuset/cpuset.cpus); test "$cpus" = 0
      - quota=$(cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo "$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"); echo "cpu $quota"; test "$quota" = "50000 100000"
      - df -k /gantry-tmp | tail -1 | awk '{{exit !($1 == "tmpfs" && $2 == 8192)}}'
      - test "$(pwd)" = /tmp
  # On the stage's own network the engine's resolver (127.0.0.11) forwards to the `dns`
  # servers; on Docker's default bridge they are written into resolv.conf itself.
  - name: dns-on-bridge
    image: IMAGE
    network_mode: bridge
    dns: [10.9.8.7]
    commands: [grep -x 'nameserver 10.9.8.7' /etc/resolv.conf]
  - name: as-user
    image: IMAGE
    user: "4321"
    commands: [id -u]
  - name: no-extra-caps
    image: IMAGE
    commands:
      - cap=$(awk '/^CapEff/ {{print $2}}' /proc/self/status); test $(( 0x$cap >> 12 & 1 )) = 0
  - name: host-network
    image: IMAGE
    network_mode: host
    commands:
      - for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://127.0.0.1:{host_port}/ && exit 0; sleep 0.5; done; exit 1
  - name: entrypoint
    image: IMAGE
    entrypoint: [echo, from-entrypoint]
    command: [and-command]
"#
        ),
    );
    let run = run(backend.clone(), stage, &[], None).await;
    let report: Vec<(String, Vec<String>)> =
        ["options", "dns-on-bridge", "as-user", "host-network"]
            .iter()
            .map(|s| ((*s).to_owned(), run.recorder.lines(s)))
            .collect();
    assert_eq!(
        statuses(&run.result),
        expect(&[
            ("options", "success"),
            ("dns-on-bridge", "success"),
            ("as-user", "success"),
            ("no-extra-caps", "success"),
            ("host-network", "success"),
            ("entrypoint", "success"),
            ("web", "success"),
        ]),
        "{report:#?}"
    );
    assert!(run.recorder.lines("as-user").contains(&"4321".to_owned()));
    assert!(
        run.recorder
            .lines("host-network")
            .contains(&"published".to_owned()),
        "the service's port is published on the host: {report:#?}"
    );
    assert_eq!(
        run.recorder.lines("entrypoint"),
        ["from-entrypoint and-command"]
    );
    nothing_left(backend).await;
}

/// Compiles `steps` as one docker stage for `ctx` (no clone).
fn stage_for(ctx: &gantry_pipeline::Context, steps: &str) -> gantry_pipeline::Stage {
    let yaml = format!(
        "kind: pipeline\nname: test\nclone:\n  disable: true\nsteps:\n{}",
        steps.replace("IMAGE", IMAGE)
    );
    let config = gantry_pipeline::parse(".gantry.yml", &yaml)
        .config
        .expect("valid");
    let plan = gantry_pipeline::compile(&config, ctx).unwrap_or_else(|e| panic!("{e}"));
    plan.stages.into_iter().next().expect("one stage")
}

/// Removes the cache volumes of `repo` from the engine.
async fn remove_caches(repo: &str) {
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let filters = std::collections::HashMap::from([("label", vec!["gantry.cache".to_owned()])]);
    let volumes = docker
        .list_volumes(Some(
            bollard::query_parameters::ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("volumes");
    for volume in volumes.volumes.unwrap_or_default() {
        if volume
            .labels
            .get("gantry.cache")
            .is_some_and(|l| l.starts_with(&format!("{repo} ")))
        {
            let _ = docker
                .remove_volume(
                    &volume.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await;
        }
    }
}

/// A step's `cache:` and a Woodpecker-style named volume keep their files between builds
/// of a repository and branch; a new branch starts from the default branch's; a pull request
/// and another repository never see or touch them; a cache over the size cap is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_persist_between_builds_of_a_repository_only() {
    let backend = docker().await;
    let repo = format!("cache-{}/app", std::process::id());
    let other = format!("cache-{}/other", std::process::id());
    remove_caches(&repo).await;
    remove_caches(&other).await;
    let steps = "
  - name: use
    image: IMAGE
    cache: [/cache, deps]
    commands:
      - cat /cache/note 2>/dev/null || echo none
      - cat /drone/src/deps/note 2>/dev/null || echo no-deps
      - echo \"$WRITE\" > /cache/note
      - echo \"$WRITE\" > /drone/src/deps/note
";
    let push = |repo: &str, branch: &str| {
        let mut ctx = gantry_pipeline::Context::push(repo, branch);
        ctx.repo.default_branch = "main".into();
        ctx
    };
    let build = |ctx: gantry_pipeline::Context, write: &str| {
        let mut ctx = ctx;
        ctx.params.insert("WRITE".into(), write.into());
        let backend = backend.clone();
        async move {
            let ran = run(backend, stage_for(&ctx, steps), &[], None).await;
            assert_eq!(statuses(&ran.result), expect(&[("use", "success")]));
            ran.recorder.lines("use")
        }
    };
    let seen = |lines: Vec<String>| -> (String, String) {
        let outputs: Vec<String> = lines.into_iter().filter(|l| !l.starts_with("+ ")).collect();
        (outputs[0].clone(), outputs[1].clone())
    };

    assert_eq!(
        seen(build(push(&repo, "main"), "first").await),
        ("none".into(), "no-deps".into())
    );
    assert_eq!(
        seen(build(push(&repo, "main"), "second").await),
        ("first".into(), "first".into())
    );
    // Another repository has caches of its own.
    assert_eq!(
        seen(build(push(&other, "main"), "x").await),
        ("none".into(), "no-deps".into())
    );
    // A new branch starts from main's, and what it writes stays its own.
    assert_eq!(
        seen(build(push(&repo, "feature"), "feature").await),
        ("second".into(), "second".into())
    );
    assert_eq!(
        seen(build(push(&repo, "feature"), "feature-2").await),
        ("feature".into(), "feature".into())
    );
    // A pull request reads a copy of main's and never writes to it.
    let mut pull = push(&repo, "feature");
    pull.event = gantry_pipeline::Event::PullRequest;
    pull.pull_request = Some(7);
    assert_eq!(
        seen(build(pull, "from-a-fork").await),
        ("second".into(), "second".into())
    );
    assert_eq!(
        seen(build(push(&repo, "main"), "third").await),
        ("second".into(), "second".into())
    );

    // Past the size cap, a cache is removed after the stage: the next build starts afresh.
    let mut small = push(&repo, "main");
    small.cache_policy.max_bytes = 64 * 1024;
    small.params.insert("WRITE".into(), "big".into());
    let big = stage_for(
        &small,
        "\n  - name: fill\n    image: IMAGE\n    cache: [/cache]\n    commands: [dd if=/dev/zero of=/cache/blob bs=1024 count=256]\n",
    );
    let filled = run(backend.clone(), big, &[], None).await;
    assert_eq!(statuses(&filled.result), expect(&[("fill", "success")]));
    assert_eq!(seen(build(push(&repo, "main"), "after").await).0, "none");

    // A Woodpecker step's named volume is such a cache too.
    let woodpecker = format!(
        "steps:\n  - name: w\n    image: {IMAGE}\n    volumes: [\"go:/go\"]\n    commands: [\"cat /go/x 2>/dev/null || echo none\", \"echo kept > /go/x\"]\n"
    );
    let config = gantry_pipeline::parse(".woodpecker.yml", &woodpecker)
        .config
        .expect("valid");
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let mut ctx = push(&repo, "main");
        ctx.trusted = true;
        let plan = gantry_pipeline::compile(&config, &ctx).expect("plans");
        let run = run(
            backend.clone(),
            plan.stages.into_iter().next().expect("stage"),
            &[],
            None,
        )
        .await;
        outputs.push(
            run.recorder
                .lines("w")
                .into_iter()
                .filter(|l| !l.starts_with("+ "))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(outputs, [vec!["none".to_owned()], vec!["kept".to_owned()]]);

    remove_caches(&repo).await;
    remove_caches(&other).await;
    nothing_left(backend).await;
}

/// A pull that outlasts the runner's pull timeout ends its step as an error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_past_the_timeout_is_an_error_that_says_so() {
    test_image();
    let backend = DockerBackend::connect(&job_id("test-runner"))
        .await
        .unwrap_or_else(|e| panic!("these tests need a running Docker engine: {e}"))
        .with_pull_timeout(std::time::Duration::from_millis(1));
    let backend = Arc::new(backend);
    let _turn = registry::exclusive().await;
    let stage = private_stage("slow", "true");
    let run = run(backend.clone(), stage, &[], None).await;
    let step = run.result.step("slow").expect("the step");
    assert_eq!(step.status, StepState::Error);
    let error = step.error.clone().unwrap_or_default();
    assert!(
        error.contains(
            "the pull took longer than this runner's pull timeout (1 ms; `--pull-timeout`)"
        ),
        "{error}"
    );
    nothing_left(backend).await;
}
