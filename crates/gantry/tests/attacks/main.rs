//! Attacks on gantry, replayed as they were found, against real `gantry server` and `gantry
//! runner` processes and the Docker engine: each asserts from the host's side (no container
//! made, nothing mounted, no marker file) and from the API (the build says which rule refused
//! it), and each has a control that shows the same file does what it says where it is
//! allowed, so a test that passes cannot be one that could not fail.

#[path = "../common/mod.rs"]
mod common;
mod server;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gantry_test_support::{GitRepo, TempDir, webhook};
use serde_json::Value;

use common::*;

/// Containers Docker holds for `runner`, with their privileged flag and mounts.
fn containers_of(runner: &str) -> String {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=gantry.runner={runner}"),
            "--format",
            "{{.Names}} {{.Mounts}}",
        ])
        .output()
        .expect("runs docker");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Sends a pull request of `sha` from the fork `evil/app` (or from the repository itself).
fn pull_request(server: &str, repo: &str, number: u64, sha: &str, fork: bool, delivery: &str) {
    let mut payload =
        webhook::pull_request(&format!("acme/{repo}"), number, "feature", "main", sha);
    if fork {
        payload["pull_request"]["head"]["repo"]["full_name"] = Value::from("evil/app");
    }
    send_hook(server, "pull_request", delivery, &payload);
}

fn error_of(build: &Value) -> String {
    build["error"].as_str().unwrap_or_default().to_owned()
}

/// A step's log of build `number`, every stage and step joined.
fn all_logs(server: &str, token: &str, repo: &str, build: &Value) -> String {
    let number = build["number"].as_u64().unwrap_or_default();
    let mut text = String::new();
    for stage in build["stages"].as_array().into_iter().flatten() {
        let stage_number = stage["number"].as_u64().unwrap_or_default();
        for step in stage["steps"].as_array().into_iter().flatten() {
            let step_number = step["number"].as_u64().unwrap_or_default();
            text.push_str(&log(server, token, repo, number, stage_number, step_number));
        }
    }
    text
}

/// A server whose embedded runner is a Docker one named `runner`, with `extra` flags; and its
/// admin token.
fn server_with_runner(dir: &Path, runner: &str, extra: &[&str]) -> (ServerProcess, String) {
    require_docker();
    let mut args = vec!["--runner-backend", "docker", "--runner-name", runner];
    args.extend_from_slice(extra);
    let (server, token) = start_server(dir, None, &args);
    (
        server,
        token.expect("the first start prints the admin token"),
    )
}

/// Attack 1 (critical), as found: a matrix value gave a fork's pull request the runner's
/// Docker socket. The second combination mounted it; only the first was checked.
#[test]
fn a_matrix_value_cannot_mount_the_docker_socket() {
    let dir = TempDir::new("attack-matrix");
    let runner = format!("attack-matrix-{}", std::process::id());
    let (mut server, token) = server_with_runner(dir.path(), &runner, &[]);
    let pipeline = format!(
        "matrix:\n  SRC: [cache1, /var/run/docker.sock]\nsteps:\n  - name: escape\n    image: {IMAGE}\n    commands:\n      - test -S /var/run/docker.sock && echo SOCKET-MOUNTED || echo no-socket\n    volumes: ['${{SRC}}:/var/run/docker.sock']\n"
    );
    let git = GitRepo::new();
    let sha = git.commit(&[(".woodpecker.yml", &pipeline)], "matrix");
    git.set_ref("refs/pull/7/head", &sha);
    add_repo(&server.url, &token, "app", &git, false);
    pull_request(&server.url, "app", 7, &sha, true, "fork-1");
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "error", "{build:#}");
    let error = error_of(&build);
    assert!(
        error.contains("mounts the host path `/var/run/docker.sock`")
            && error.contains("trust rule `docker-socket`"),
        "{error}"
    );
    assert_eq!(containers_of(&runner), "", "no container was created");

    // The control: the same file in a trusted repository does mount the socket.
    let trusted = GitRepo::new();
    let sha = trusted.commit(&[(".woodpecker.yml", &pipeline)], "matrix");
    add_repo(&server.url, &token, "ops", &trusted, true);
    push(&server.url, "ops", &sha, "push-1");
    let build = wait_build(&server.url, &token, "ops", 1, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    let text = all_logs(&server.url, &token, "ops", &build);
    assert!(text.contains("SOCKET-MOUNTED"), "{text}");
    server.process.stop();
}

/// Attack 3: a fork's pull request to a trusted repository was trusted. The step writes a
/// marker into a host folder; a push of the same commit (the control) does.
#[test]
fn a_fork_pull_request_to_a_trusted_repository_is_untrusted() {
    let dir = TempDir::new("attack-fork");
    let runner = format!("attack-fork-{}", std::process::id());
    let (mut server, token) = server_with_runner(dir.path(), &runner, &[]);
    let host = dir.path().join("host-folder");
    std::fs::create_dir_all(&host).expect("a host folder");
    let marker = host.join("marker");
    let pipeline = format!(
        "kind: pipeline\nname: ci\nsteps:\n  - name: write\n    image: {IMAGE}\n    commands: [touch /host/marker]\n    volumes:\n      - name: host\n        path: /host\nvolumes:\n  - name: host\n    host:\n      path: {}\n",
        host.display()
    );
    let git = GitRepo::new();
    let sha = git.commit(&[(".gantry.yml", &pipeline)], "host volume");
    git.set_ref("refs/pull/3/head", &sha);
    add_repo(&server.url, &token, "app", &git, true);

    pull_request(&server.url, "app", 3, &sha, true, "fork-1");
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "error", "{build:#}");
    let error = error_of(&build);
    assert!(
        error.contains("trust rule `host-volume`") && error.contains("comes from a fork"),
        "{error}"
    );
    assert!(!marker.exists(), "the fork wrote to the runner's host");
    assert_eq!(containers_of(&runner), "", "no container was created");
    let page = reqwest::blocking::Client::new()
        .get(format!("{}/acme/app/1", server.url))
        // The repository is private (no GitHub said otherwise): a signed-in page.
        .header("cookie", format!("gantry_session={token}"))
        .send()
        .and_then(|r| r.text())
        .expect("the build page");
    assert!(page.contains("from a fork: untrusted"), "{page}");

    // The same pull request from a branch of the repository itself, and then a push: trusted.
    pull_request(&server.url, "app", 3, &sha, false, "own-1");
    let build = wait_build(&server.url, &token, "app", 2, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    assert!(marker.exists(), "the control wrote its marker");
    server.process.stop();
}

/// A fork's pull request that names an environment under `deploy:` would replace its
/// deployment, its `on_stop` pipeline and its link (here: production's, pointed at the
/// attacker's site), and supersede the deployments waiting for it. The control: the same
/// pull request from the repository's own branch does replace it.
#[test]
fn a_fork_pull_request_deploys_to_no_environment() {
    let dir = TempDir::new("attack-deploy");
    let runner = format!("attack-deploy-{}", std::process::id());
    let (mut server, token) = server_with_runner(dir.path(), &runner, &[]);
    let deploy = |url: &str| {
        format!(
            "kind: pipeline\nname: ship\ndeploy: {{environment: production, url: \"{url}\"}}\nsteps:\n  - name: ship\n    image: {IMAGE}\n    commands: [echo shipped]\n"
        )
    };
    let git = GitRepo::new();
    let legit = git.commit(
        &[(".gantry.yml", &deploy("https://prod.example.com"))],
        "ship",
    );
    add_repo(&server.url, &token, "app", &git, false);
    push(&server.url, "app", &legit, "push-1");
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    let production = || -> Value {
        let listed: Value = get(&server.url, &token, "/repos/acme/app/environments")
            .json()
            .expect("json");
        listed
            .as_array()
            .and_then(|all| all.iter().find(|e| e["name"] == "production"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(production()["url"], "https://prod.example.com");

    let evil = git.commit(
        &[(".gantry.yml", &deploy("https://evil.example.com"))],
        "mine",
    );
    git.set_ref("refs/pull/5/head", &evil);
    pull_request(&server.url, "app", 5, &evil, true, "fork-1");
    let build = wait_build(&server.url, &token, "app", 2, "finished", finished);
    assert_eq!(build["status"], "skipped", "{build:#}");
    let reason = build["stages"][0]["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("a pull request from a fork deploys to no environment (`production`)"),
        "{build:#}"
    );
    let after = production();
    assert_eq!(after["url"], "https://prod.example.com", "{after:#}");
    assert_eq!(
        after["deployments"].as_array().map(Vec::len),
        Some(1),
        "{after:#}"
    );

    // The control: from the repository's own branch, the pull request deploys.
    pull_request(&server.url, "app", 5, &evil, false, "own-1");
    let build = wait_build(&server.url, &token, "app", 3, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    assert_eq!(production()["url"], "https://evil.example.com");
    server.process.stop();
}

/// A protected environment's secret and deployment, tried by a writer without approval: a
/// stage that does not deploy asks for the secret, and the deployment is pushed from a branch
/// the rule does not list, and from a branch named like a tag the rule lists. None gets the
/// secret or deploys. The control: from `main`, once an admin approves with `gantry env
/// approve`, the deployment runs with it.
#[test]
fn a_protected_environment_s_secret_reaches_only_its_approved_deployment() {
    let dir = TempDir::new("attack-protected");
    let runner = format!("attack-protected-{}", std::process::id());
    let (mut server, token) = server_with_runner(dir.path(), &runner, &[]);
    let probe = "['if [ -n \"$KEY\" ]; then echo has-key; else echo no-key; fi']";
    let file = format!(
        "kind: pipeline\nname: peek\nsteps:\n  - name: peek\n    image: {IMAGE}\n    environment: {{KEY: {{from_secret: prod_key}}}}\n    commands: {probe}\n---\nkind: pipeline\nname: ship\ndeploy: {{environment: production}}\nsteps:\n  - name: ship\n    image: {IMAGE}\n    environment: {{KEY: {{from_secret: prod_key}}}}\n    commands: {probe}\n"
    );
    let git = GitRepo::new();
    let sha = git.commit(&[(".gantry.yml", &file)], "ship");
    add_repo(&server.url, &token, "app", &git, false);
    ok(cli(
        &server.url,
        &token,
        &[
            "env",
            "protect",
            "acme/app",
            "production",
            "--approver-role",
            "admin",
            "--branch",
            "main",
            "--branch",
            "refs/tags/v*",
        ],
    ));
    ok(cli(
        &server.url,
        &token,
        &[
            "secret",
            "add",
            "acme/app",
            "prod_key",
            "--value",
            "s3cret-prod",
            "--environment",
            "production",
        ],
    ));
    let push_branch = |branch: &str, delivery: &str| {
        git.set_ref(&format!("refs/heads/{branch}"), &sha);
        let payload = webhook::push("acme/app", branch, &sha, "attack");
        send_hook(&server.url, "push", delivery, &payload);
    };
    let stage = |build: &Value, name: &str| -> Value {
        build["stages"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    for (number, branch) in [(1, "feature/x"), (2, "refs/tags/v1")] {
        push_branch(branch, &format!("attack-{number}"));
        let build = wait_build(&server.url, &token, "app", number, "finished", finished);
        let ship = stage(&build, "ship");
        assert_eq!(ship["status"], "skipped", "{build:#}");
        assert!(
            ship["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with("environment `production` is protected: only branches `main`, `refs/tags/v*` deploy to it"),
            "{build:#}"
        );
        let peek = stage(&build, "peek");
        assert_ne!(peek["status"], "success", "{build:#}");
        let logs = all_logs(&server.url, &token, "app", &build);
        assert!(!logs.contains("has-key"), "{logs}");
        let said = peek["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["name"] == "peek"))
            .map(|s| s["error"].to_string())
            .unwrap_or_default();
        assert!(
            said.contains("kept for environment `production`"),
            "the step says why it has no secret: {build:#}"
        );
    }

    // The control: from main, held for an admin, approved from the CLI, deployed with it.
    push_branch("main", "control-1");
    wait_build(&server.url, &token, "app", 3, "held", |b| {
        stage(b, "ship")["status"] == "blocked"
    });
    let approved = ok(cli(
        &server.url,
        &token,
        &["env", "approve", "acme/app", "3"],
    ));
    assert!(
        approved.contains("approved stage 2 of build #3"),
        "{approved}"
    );
    let build = wait_build(&server.url, &token, "app", 3, "finished", finished);
    assert_eq!(stage(&build, "ship")["status"], "success", "{build:#}");
    let ship_log = log(&server.url, &token, "app", 3, 2, 2);
    assert!(ship_log.contains("has-key"), "{ship_log}");
    assert!(!ship_log.contains("s3cret-prod"), "masked: {ship_log}");
    server.process.stop();
}

/// Attack 2: a document appended to a signed file ran unsigned (a duplicate `kind` key
/// made the reader take it for a signature).
#[test]
fn a_signed_file_cannot_be_extended() {
    let dir = TempDir::new("attack-signature");
    let (mut server, token) = start_server(dir.path(), None, &["--runner-capacity", "0"]);
    let token = token.expect("the first start prints the admin token");
    let git = GitRepo::new();
    add_repo(&server.url, &token, "app", &git, false);
    let file = dir.write(
        "pipeline.yml",
        &format!("kind: pipeline\nname: ci\nsteps:\n  - name: t\n    image: {IMAGE}\n    commands: [true]\n"),
    );
    ok(cli(
        &server.url,
        &token,
        &["sign", "acme/app", &file.to_string_lossy(), "--save"],
    ));
    let signed = std::fs::read_to_string(&file).expect("the signed file");
    let sha = git.commit(&[(".gantry.yml", &signed)], "signed");
    push(&server.url, "app", &sha, "d-1");
    let build = wait_build(&server.url, &token, "app", 1, "created", |_| true);
    assert_eq!(
        build["status"], "pending",
        "the signed file builds: {build:#}"
    );

    let extensions = [
        (
            "---\nkind: pipeline\nkind: signature\nname: evil\nsteps:\n  - name: x\n    image: busybox\n    commands: [id]\n",
            "not valid YAML",
        ),
        (
            "---\nkind: pipeline\nname: evil\nsteps:\n  - name: x\n    image: busybox\n    commands: [id]\n",
            "must be the file's last document",
        ),
    ];
    for (n, (extra, says)) in extensions.iter().enumerate() {
        let sha = git.commit(&[(".gantry.yml", &format!("{signed}{extra}"))], "extended");
        let number = n as u64 + 2;
        push(&server.url, "app", &sha, &format!("d-{number}"));
        let build = wait_build(&server.url, &token, "app", number, "finished", finished);
        assert_eq!(build["status"], "error", "{build:#}");
        let error = error_of(&build);
        assert!(
            error.contains("the signature of .gantry.yml cannot be checked")
                && error.contains(says),
            "{error}"
        );
    }
    server.process.stop();
}

/// The runner's own check: a stage planned while the repository was trusted reaches a runner
/// after trust was taken away. The server hands it over as untrusted; the runner refuses it,
/// naming the rule, before it creates anything.
#[test]
fn the_runner_refuses_an_untrusted_stage_that_breaks_a_rule() {
    require_docker();
    let dir = TempDir::new("attack-runner-check");
    let (mut server, token) = start_server(dir.path(), None, &["--runner-capacity", "0"]);
    let token = token.expect("the first start prints the admin token");
    let host = dir.path().join("host-folder");
    std::fs::create_dir_all(&host).expect("a host folder");
    let pipeline = format!(
        "matrix:\n  X: [a]\nsteps:\n  - name: write\n    image: {IMAGE}\n    commands: [touch /host/marker]\n    volumes: ['{}:/host']\n",
        host.display()
    );
    let git = GitRepo::new();
    let sha = git.commit(&[(".woodpecker.yml", &pipeline)], "host path");
    add_repo(&server.url, &token, "app", &git, true);
    push(&server.url, "app", &sha, "d-1");
    let build = wait_build(&server.url, &token, "app", 1, "created", |_| true);
    assert_eq!(build["status"], "pending", "{build:#}");
    ok(cli(
        &server.url,
        &token,
        &["repo", "update", "acme/app", "--trusted", "false"],
    ));

    let name = format!("attack-check-{}", std::process::id());
    let mut runner = spawn_runner(
        &server.url,
        &name,
        &dir.path().join("runner"),
        &dir.path().join("runner.log"),
        &["--backend", "docker"],
    );
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "error", "{build:#}");
    let stage_error = build["stages"][0]["error"].as_str().unwrap_or_default();
    assert!(
        stage_error.contains("refused stage")
            && stage_error.contains("rule host-volume")
            && stage_error.contains("before creating anything"),
        "{build:#}"
    );
    assert!(
        !host.join("marker").exists(),
        "the step ran on the host's folder"
    );
    assert_eq!(
        docker_leftovers(&name),
        "",
        "nothing was created for the job"
    );
    assert_eq!(containers_of(&name), "", "no container was created");
    runner.stop();
    server.process.stop();
}

/// Attack 4 (reliability): two servers with their own data folders on one Docker engine used
/// one runner name, and the second's start removed the first's running build's network.
/// Now each embedded runner has a name of its own (generated into its data folder): both
/// builds run side by side, the first one started before the second server.
#[test]
fn two_servers_on_one_engine_run_builds_side_by_side() {
    require_docker();
    let dirs = [TempDir::new("attack-two-a"), TempDir::new("attack-two-b")];
    let pipeline = format!(
        "kind: pipeline\nname: ci\nservices:\n  - name: web\n    image: {IMAGE}\n    commands: [httpd -f -p 8080]\nsteps:\n  - name: wait\n    image: {IMAGE}\n    commands:\n      - sleep 6\n      - wget -q -O /dev/null http://web:8080/ || true\n      - echo done\n"
    );
    let start = |dir: &TempDir| {
        let (server, token) = start_server(dir.path(), None, &["--runner-backend", "docker"]);
        (
            server,
            token.expect("the first start prints the admin token"),
        )
    };
    let (mut first, first_token) = start(&dirs[0]);
    let git = GitRepo::new();
    let sha = git.commit(&[(".gantry.yml", &pipeline)], "slow");
    add_repo(&first.url, &first_token, "app", &git, false);
    push(&first.url, "app", &sha, "d-1");
    wait_build(&first.url, &first_token, "app", 1, "running", |b| {
        b["status"] == "running"
    });

    let (mut second, second_token) = start(&dirs[1]);
    add_repo(&second.url, &second_token, "app", &git, false);
    push(&second.url, "app", &sha, "d-1");
    for (server, token) in [(&first, &first_token), (&second, &second_token)] {
        let build = wait_build(&server.url, token, "app", 1, "finished", finished);
        assert_eq!(build["status"], "success", "{build:#}");
    }
    let names: Vec<String> = dirs
        .iter()
        .map(|d| std::fs::read_to_string(d.path().join("runner-name")).expect("a generated name"))
        .collect();
    assert_ne!(names[0], names[1], "each server's runner has its own name");
    first.process.stop();
    second.process.stop();
}

/// Attack 5 (isolation), tried when steps began to share a namespace for speed: steps that run
/// one after another join their stage's network holder, a container made once per stage.
/// Another build on the same runner, told the holder's address, still reaches nothing of it
/// (each stage is on its own network), while its own service answers by name (the control),
/// and the page is served where it runs (the first build fetches it itself).
#[test]
fn another_build_cannot_reach_the_steps_of_a_stage() {
    let dir = TempDir::new("attack-holder");
    let runner = format!("attack-holder-{}", std::process::id());
    let (mut server, token) = server_with_runner(dir.path(), &runner, &["--runner-capacity", "2"]);
    let victim = GitRepo::new();
    let serving = format!(
        "kind: pipeline\nname: ci\nclone: {{disable: true}}\nsteps:\n  - name: serve\n    image: {IMAGE}\n    commands:\n      - mkdir -p /w && echo victim-page > /w/index.html\n      - httpd -p 8080 -h /w\n      - wget -q -O - http://127.0.0.1:8080/\n      - sleep 20\n  - name: after\n    image: {IMAGE}\n    commands: [echo after]\n"
    );
    let sha = victim.commit(&[(".gantry.yml", &serving)], "serve");
    add_repo(&server.url, &token, "victim", &victim, false);
    push(&server.url, "victim", &sha, "d-victim");
    wait_build(&server.url, &token, "victim", 1, "serving", |b| {
        b["stages"][0]["steps"][0]["status"] == "running"
    });
    let docker = |args: &[&str]| {
        let out = Command::new("docker")
            .args(args)
            .output()
            .expect("runs docker");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let holder = docker(&[
        "ps",
        "--filter",
        &format!("label=gantry.runner={runner}"),
        "--filter",
        "name=-network$",
        "--format",
        "{{.Names}}",
    ]);
    assert!(
        !holder.is_empty() && !holder.contains('\n'),
        "one network holder: {holder:?} of {}",
        containers_of(&runner)
    );
    let address = docker(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &holder,
    ]);
    assert!(
        address.parse::<std::net::Ipv4Addr>().is_ok(),
        "the holder's address: {address:?}"
    );

    let attacker = GitRepo::new();
    let probing = format!(
        "kind: pipeline\nname: ci\nclone: {{disable: true}}\nservices:\n  - name: web\n    image: {IMAGE}\n    commands: [mkdir -p /w, echo own-service > /w/index.html, httpd -f -p 8080 -h /w]\nsteps:\n  - name: probe\n    image: {IMAGE}\n    commands:\n      - for i in $(seq 50); do wget -q -O /dev/null http://web:8080/ 2>/dev/null && break; sleep 0.2; done\n      - wget -q -O - http://web:8080/\n      - if wget -q -T 3 -O - http://{address}:8080/; then echo reached-the-victim; else echo victim-unreachable; fi\n  - name: after\n    image: {IMAGE}\n    commands: [echo after]\n"
    );
    let sha = attacker.commit(&[(".gantry.yml", &probing)], "probe");
    add_repo(&server.url, &token, "attacker", &attacker, false);
    push(&server.url, "attacker", &sha, "d-attacker");
    let probe = wait_build(&server.url, &token, "attacker", 1, "finished", finished);
    let probed = all_logs(&server.url, &token, "attacker", &probe);
    assert_eq!(probe["status"], "success", "{probe:#}\n{probed}");
    assert!(
        probed.contains("own-service"),
        "the control: its own service answers by name:\n{probed}"
    );
    assert!(
        probed.contains("victim-unreachable") && !probed.contains("victim-page"),
        "another build reached the victim's steps at {address}:\n{probed}"
    );
    let victim_build = wait_build(&server.url, &token, "victim", 1, "finished", finished);
    let served = all_logs(&server.url, &token, "victim", &victim_build);
    assert_eq!(
        victim_build["status"], "success",
        "{victim_build:#}\n{served}"
    );
    assert!(
        served.contains("victim-page"),
        "the page was served where it runs:\n{served}"
    );
    server.process.stop();
}

/// Found in review: a reader's `from=` beyond any line (`u64::MAX`, a negative `BIGINT` once
/// cast) made the page-of-lines and search endpoints loop for ever on the database, one task
/// per request. Each now answers at once with nothing; the control reads and finds the lines.
#[test]
fn a_line_number_beyond_any_log_answers_at_once() {
    let dir = TempDir::new("attack-from");
    let runner = format!("attack-from-{}", std::process::id());
    let (mut server, token) = server_with_runner(dir.path(), &runner, &[]);
    let git = GitRepo::new();
    let pipeline = format!(
        "kind: pipeline\nname: ci\nclone: {{disable: true}}\nsteps:\n  - name: say\n    image: {IMAGE}\n    commands: [echo needle]\n"
    );
    let sha = git.commit(&[(".gantry.yml", &pipeline)], "say");
    add_repo(&server.url, &token, "app", &git, false);
    push(&server.url, "app", &sha, "d-from");
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client");
    let ask = |query: &str| -> Value {
        let path = format!(
            "{}/api/repos/acme/app/builds/1/logs/1/1/{query}",
            server.url
        );
        let response = client
            .get(&path)
            .bearer_auth(&token)
            .send()
            .unwrap_or_else(|e| panic!("{query} never answered: {e}"));
        assert!(
            response.status().is_success(),
            "{query}: {}",
            response.status()
        );
        response.json().expect("json")
    };
    for from in [u64::MAX, i64::MAX as u64 + 1] {
        let page = ask(&format!("lines?from={from}&limit=10"));
        assert_eq!(page["lines"], serde_json::json!([]), "{page}");
        let found = ask(&format!("search?q=needle&from={from}"));
        assert_eq!(found["matches"], serde_json::json!([]), "{found}");
    }
    // The control: from the start, the line is read and found.
    let page = ask("lines?from=1&limit=10");
    assert!(page["lines"].to_string().contains("needle"), "{page}");
    let found = ask("search?q=needle&from=1");
    assert_ne!(found["matches"], serde_json::json!([]), "{found}");
    server.process.stop();
}

/// A second runner of a live runner's name is refused before it touches anything; one that
/// shares another's data folder is refused at once; a restarted runner (same folder) is not.
#[test]
fn a_second_runner_of_one_name_is_refused_and_a_restart_is_not() {
    let dir = TempDir::new("attack-names");
    let (mut server, token) = start_server(dir.path(), None, &["--runner-capacity", "0"]);
    let token = token.expect("the first start prints the admin token");
    let name = format!("attack-dup-{}", std::process::id());
    let spawn = |data: &str, log: &str| {
        spawn_runner(
            &server.url,
            &name,
            &dir.path().join(data),
            &dir.path().join(log),
            &["--backend", "local", "--host-pipelines"],
        )
    };
    let connected = |runners: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list: Value = get(&server.url, &token, "/runners").json().expect("json");
            if list.to_string().contains(runners) {
                return list;
            }
            assert!(
                Instant::now() < deadline,
                "{runners} never connected: {list}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut first = spawn("one", "first.log");
    first.wait_for("gantry runner started");
    connected(&name);

    for (data, log, says) in [
        ("two", "second.log", "is already connected"),
        (
            "one",
            "third.log",
            "another gantry process runs a runner named",
        ),
    ] {
        let mut second = spawn(data, log);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(Some(status)) = second.child.try_wait() {
                break status;
            }
            assert!(Instant::now() < deadline, "{}", second.output());
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "{}", second.output());
        assert!(second.output().contains(says), "{}", second.output());
    }
    // The lineage lets a runner take a live one's place: neither the refusal nor the API
    // shows it.
    let lineage = std::fs::read_dir(dir.path().join("one"))
        .expect("the runner's data folder")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(".lineage"))
        .and_then(|e| std::fs::read_to_string(e.path()).ok())
        .expect("a lineage kept in the data folder");
    let lineage = lineage.trim();
    assert!(!lineage.is_empty());
    let listed = connected(&name).to_string();
    assert!(!listed.contains(lineage), "{listed}");
    let refused = std::fs::read_to_string(dir.path().join("second.log")).unwrap_or_default();
    assert!(!refused.contains(lineage), "{refused}");

    // A restart from the same folder names its earlier life: taken at once.
    first.kill_hard();
    let mut restarted = spawn("one", "restarted.log");
    restarted.wait_for("gantry runner started");
    let git = GitRepo::new();
    let pipeline = "kind: pipeline\ntype: exec\nname: ci\nclone: {disable: true}\nsteps:\n  - name: t\n    commands: [echo restarted-runner-works]\n";
    let sha = git.commit(&[(".gantry.yml", pipeline)], "exec");
    add_repo(&server.url, &token, "app", &git, true);
    push(&server.url, "app", &sha, "d-1");
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    assert!(
        restarted.child.try_wait().is_ok_and(|s| s.is_none()),
        "{}",
        restarted.output()
    );
    restarted.stop();
    server.process.stop();
}
