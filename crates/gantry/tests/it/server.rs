//! `gantry server` and `gantry runner` as processes, end to end: a signed push to a real
//! server runs a real build (Docker with the offline busybox image, and host processes),
//! the CLI reads and drives it, and killing the server or a runner with SIGKILL mid-build
//! still ends every build in a final state with its logs.

use std::process::Command;
use std::time::{Duration, Instant};

use gantry_test_support::git_http::PrivateGitServer;
use gantry_test_support::sink::HttpSink;
use gantry_test_support::{GitRepo, TempDir, postgres_database};

use crate::common::*;

#[test]
fn a_push_runs_in_docker_and_leaves_nothing_behind() {
    require_docker();
    let dir = TempDir::new("e2e-docker");
    let runner = format!("e2e-docker-{}", std::process::id());
    let (mut server, token) = start_server(
        dir.path(),
        None,
        &["--runner-backend", "docker", "--runner-name", &runner],
    );
    let token = token.expect("the first start prints the admin token");
    let git = GitRepo::new();
    let pipeline = format!(
        "kind: pipeline\nname: ci\nsteps:\n  - name: build\n    image: {IMAGE}\n    commands:\n      - cat README\n      - echo built on $CI_COMMIT_BRANCH\n"
    );
    let sha = git.commit(
        &[
            (".gantry.yml", &pipeline),
            ("README", "hello from the repository"),
        ],
        "first",
    );
    add_repo(&server.url, &token, "app", &git, false);
    push(&server.url, "app", &sha, "d-1");
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    let text = log(&server.url, &token, "app", 1, 1, 2);
    assert!(
        text.contains("hello from the repository") && text.contains("built on main"),
        "{text}"
    );
    assert_eq!(
        docker_leftovers(&runner),
        "",
        "every container, network and volume is removed"
    );
    server.process.stop();
    let spares = Command::new("docker")
        .args([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=gantry.runner={runner}"),
        ])
        .output()
        .expect("runs docker");
    assert_eq!(
        String::from_utf8_lossy(&spares.stdout).trim(),
        "",
        "spare networks go on shutdown"
    );
}

/// A review app as users write one, run by real builds in Docker: a push to `feature/x`
/// deploys `review/feature-x` (the step sees its name), `gantry env ls` shows it available,
/// and deleting the branch runs `teardown` once, from the deployed commit.
#[test]
fn a_review_app_is_deployed_and_torn_down_by_real_builds() {
    require_docker();
    let dir = TempDir::new("e2e-environments");
    let runner = format!("e2e-env-{}", std::process::id());
    let (mut server, token) = start_server(
        dir.path(),
        None,
        &["--runner-backend", "docker", "--runner-name", &runner],
    );
    let token = token.expect("the first start prints the admin token");
    let git = GitRepo::new();
    let pipeline = format!(
        "kind: pipeline\nname: review\ndeploy:\n  environment: review/${{CI_COMMIT_REF_SLUG}}\n  url: https://${{CI_COMMIT_REF_SLUG}}.review.example.com\n  on_stop: teardown\n  auto_stop_in: 3d\ntrigger:\n  event: [push]\nsteps:\n  - name: deploy\n    image: {IMAGE}\n    commands: [echo deployed $CI_ENVIRONMENT_NAME at $CI_ENVIRONMENT_URL]\n---\nkind: pipeline\nname: teardown\nclone: {{disable: true}}\nsteps:\n  - name: uninstall\n    image: {IMAGE}\n    commands: [echo tore down $CI_ENVIRONMENT_NAME $CI_ENVIRONMENT_ACTION]\n"
    );
    let sha = git.commit(&[(".gantry.yml", &pipeline)], "first");
    add_repo(&server.url, &token, "app", &git, false);
    let payload = gantry_test_support::webhook::push("acme/app", "feature/x", &sha, "first");
    send_hook(&server.url, "push", "d-1", &payload);
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    let text = log(&server.url, &token, "app", 1, 1, 2);
    assert!(
        text.contains("deployed review/feature-x at https://feature-x.review.example.com"),
        "{text}"
    );
    let listed = ok(cli(&server.url, &token, &["env", "ls", "acme/app"]));
    assert!(
        listed.contains("review/feature-x")
            && listed.contains("available")
            && listed.contains("#1 success")
            && listed.contains("stops "),
        "{listed}"
    );

    let mut deleted = gantry_test_support::webhook::for_repo(
        gantry_test_support::webhook::fixture("push", "push_branch_delete.json"),
        "acme/app",
    );
    deleted["ref"] = serde_json::Value::from("refs/heads/feature/x");
    send_hook(&server.url, "push", "d-2", &deleted);
    let stop = wait_build(&server.url, &token, "app", 2, "finished", finished);
    assert_eq!(stop["status"], "success", "{stop:#}");
    assert_eq!(
        stop["commit"],
        sha.as_str(),
        "the teardown runs the deployed commit"
    );
    let text = log(&server.url, &token, "app", 2, 2, 1);
    assert!(text.contains("tore down review/feature-x stop"), "{text}");
    let listed = ok(cli(&server.url, &token, &["env", "ls", "acme/app"]));
    assert!(listed.contains("stopped"), "{listed}");
    let again = cli(
        &server.url,
        &token,
        &["env", "stop", "acme/app", "review/feature-x"],
    );
    assert!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("already stopped"),
        "{again:?}"
    );
    assert_eq!(docker_leftovers(&runner), "");
    server.process.stop();
}

/// `auto_stop_in` on two servers sharing one PostgreSQL database, one of them killed with
/// SIGKILL as the environment falls due (it may hold the environments' claim, or be creating
/// the stop build): the environment is stopped exactly once, by the survivor once a dead
/// server's claim runs out, and the killed server, restarted, does not stop it again.
#[test]
fn an_environment_due_is_stopped_once_though_a_server_is_killed() {
    require_docker();
    let database = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(postgres_database());
    let key = "5e".repeat(32);
    let (dir_a, dir_b) = (
        TempDir::new("e2e-autostop-a"),
        TempDir::new("e2e-autostop-b"),
    );
    let runner = format!("e2e-autostop-{}", std::process::id());
    let a_args = ["--secret-key", key.as_str(), "--runner-capacity", "0"];
    let (mut a, token) = start_server(dir_a.path(), Some(&database), &a_args);
    let token = token.expect("the first start prints the admin token");
    let (mut b, _) = start_server(
        dir_b.path(),
        Some(&database),
        &[
            "--secret-key",
            &key,
            "--runner-backend",
            "docker",
            "--runner-name",
            &runner,
        ],
    );
    let git = GitRepo::new();
    let pipeline = format!(
        "kind: pipeline\nname: staging\nclone: {{disable: true}}\ndeploy: {{environment: staging, on_stop: teardown, auto_stop_in: 20s}}\ntrigger:\n  event: [push]\nsteps:\n  - name: up\n    image: {IMAGE}\n    commands: [echo up]\n---\nkind: pipeline\nname: teardown\nclone: {{disable: true}}\nsteps:\n  - name: down\n    image: {IMAGE}\n    commands: [echo tore down $CI_ENVIRONMENT_NAME]\n"
    );
    let sha = git.commit(&[(".gantry.yml", &pipeline)], "first");
    add_repo(&a.url, &token, "app", &git, false);
    let deployed_at = Instant::now();
    push(&a.url, "app", &sha, "d-1");
    let build = wait_build(&b.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");

    // Due 20 s after the deployment was recorded: A dies then.
    std::thread::sleep(Duration::from_secs(20).saturating_sub(deployed_at.elapsed()));
    a.process.kill_hard();
    let stop = wait_build(&b.url, &token, "app", 2, "finished", finished);
    assert_eq!(stop["status"], "success", "{stop:#}");
    assert_eq!(stop["stages"][1]["name"], "teardown");
    assert!(
        log(&b.url, &token, "app", 2, 2, 1).contains("tore down staging"),
        "the teardown ran"
    );

    // A comes back (with its claims long expired): nothing more is stopped.
    let (mut restarted, _) = start_server(dir_a.path(), Some(&database), &a_args);
    std::thread::sleep(Duration::from_secs(20));
    let builds: serde_json::Value = get(&b.url, &token, "/repos/acme/app/builds")
        .json()
        .expect("json");
    assert_eq!(
        builds.as_array().map(Vec::len),
        Some(2),
        "one deployment and one stop: {builds:#}"
    );
    let listed = ok(cli(&restarted.url, &token, &["env", "ls", "acme/app"]));
    assert!(
        listed.contains("staging") && listed.contains("stopped"),
        "{listed}"
    );
    assert_eq!(docker_leftovers(&runner), "");
    restarted.process.stop();
    b.process.stop();
}

#[test]
fn the_cli_lists_shows_creates_and_cancels_builds_on_postgres() {
    let database = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(postgres_database());
    let dir = TempDir::new("e2e-cli");
    let (mut server, token) = start_server(
        dir.path(),
        Some(&database),
        &[
            "--runner-backend",
            "local",
            "--runner-host-pipelines",
            "--runner-name",
            "e2e-cli",
        ],
    );
    let token = token.expect("the first start prints the admin token");
    let git = GitRepo::new();
    let pipeline = "kind: pipeline\ntype: exec\nname: ci\nsteps:\n  - name: greet\n    commands:\n      - echo target=$TARGET\n      - if [ \"$SLOW\" = yes ]; then echo sleeping; sleep 60; fi\n";
    let sha = git.commit(&[(".gantry.yml", pipeline)], "first");
    // Public: a user without a role reads it, and is refused writing with 403.
    add_public_repo(&server.url, &token, "app", &git);
    let repos = ok(cli(&server.url, &token, &["repo", "ls"]));
    assert!(repos.contains("acme/app"), "{repos}");
    let info = ok(cli(&server.url, &token, &["repo", "info", "acme/app"]));
    assert!(
        info.contains("\"has_webhook_secret\": true") && !info.contains(SECRET),
        "{info}"
    );

    push(&server.url, "app", &sha, "d-1");
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    let listed = ok(cli(&server.url, &token, &["build", "ls", "acme/app"]));
    assert!(
        listed.contains("#1") && listed.contains("success"),
        "{listed}"
    );
    let info = ok(cli(
        &server.url,
        &token,
        &["build", "info", "acme/app", "1"],
    ));
    assert!(info.contains("greet") && info.contains("success"), "{info}");

    let created = ok(cli(
        &server.url,
        &token,
        &[
            "build",
            "create",
            "acme/app",
            "--branch",
            "main",
            "--param",
            "TARGET=staging",
            "--param",
            "SLOW=yes",
        ],
    ));
    assert!(created.contains("#2"), "{created}");
    wait_build(&server.url, &token, "app", 2, "logged `sleeping`", |_| {
        log(&server.url, &token, "app", 2, 1, 2).contains("sleeping")
    });
    let logs = ok(cli(
        &server.url,
        &token,
        &["build", "logs", "acme/app", "2", "1", "2"],
    ));
    assert!(logs.contains("target=staging"), "{logs}");
    let cancelled_at = Instant::now();
    ok(cli(
        &server.url,
        &token,
        &["build", "cancel", "acme/app", "2"],
    ));
    let build = wait_build(&server.url, &token, "app", 2, "finished", finished);
    assert_eq!(build["status"], "killed", "{build:#}");
    eprintln!("cancel to final state: {:?}", cancelled_at.elapsed());

    // Which builds printed a line: newest first, with the line and a link to it.
    let grep = ok(cli(
        &server.url,
        &token,
        &["build", "grep", "acme/app", "TARGET=stag", "--last", "5"],
    ));
    let first = grep.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("#2 killed main ci/greet:") && first.ends_with(": target=staging"),
        "{grep}"
    );
    assert!(grep.contains("/acme/app/2/1/2#L"), "{grep}");
    assert!(!grep.contains("#1 "), "{grep}");
    let regex = ok(cli(
        &server.url,
        &token,
        &[
            "build",
            "grep",
            "acme/app",
            "-E",
            "^target=$",
            "--branch",
            "main",
        ],
    ));
    assert!(regex.starts_with("#1 success main ci/greet:"), "{regex}");
    let none = cli(
        &server.url,
        &token,
        &["build", "grep", "acme/app", "no such line"],
    );
    assert_eq!(
        none.status.code(),
        Some(1),
        "as grep, 1 when nothing matched"
    );
    assert!(
        String::from_utf8_lossy(&none.stderr)
            .contains("0 matching lines in 0 of the 2 builds searched"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );

    // Promote build #1, and a schedule added, listed, run and removed.
    let promoted = ok(cli(
        &server.url,
        &token,
        &[
            "build",
            "promote",
            "acme/app",
            "1",
            "production",
            "--param",
            "TARGET=prod",
        ],
    ));
    assert!(
        promoted.contains("#3") && promoted.contains("promote"),
        "{promoted}"
    );
    wait_build(&server.url, &token, "app", 3, "finished", finished);
    assert!(log(&server.url, &token, "app", 3, 1, 2).contains("target=prod"));
    let added = ok(cli(
        &server.url,
        &token,
        &[
            "cron",
            "add",
            "acme/app",
            "nightly",
            "@daily",
            "--timezone",
            "Europe/Berlin",
        ],
    ));
    assert!(
        added.contains("next run") && added.contains(":00 UTC"),
        "{added}"
    );
    let refused = cli(
        &server.url,
        &token,
        &["cron", "add", "acme/app", "bad", "daily"],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("5 fields"),
        "{refused:?}"
    );
    let ran = ok(cli(
        &server.url,
        &token,
        &["cron", "run", "acme/app", "nightly"],
    ));
    assert!(ran.contains("#4") && ran.contains("cron"), "{ran}");
    wait_build(&server.url, &token, "app", 4, "finished", finished);
    let listed = ok(cli(&server.url, &token, &["cron", "ls", "acme/app"]));
    assert!(
        listed.contains("nightly")
            && listed.contains("Europe/Berlin")
            && listed.contains("last build #4 success"),
        "{listed}"
    );
    ok(cli(
        &server.url,
        &token,
        &["cron", "rm", "acme/app", "nightly"],
    ));
    let listed = ok(cli(&server.url, &token, &["cron", "ls", "acme/app"]));
    assert!(listed.contains("no schedules"), "{listed}");

    // `gantry sign --save` writes a signature the server accepts; `--disable` stops the check.
    let dir = TempDir::new("sign");
    let file = dir.path().join(".drone.yml");
    let pipeline = "kind: pipeline\nname: ci\nsteps:\n  - name: t\n    image: busybox\n";
    std::fs::write(&file, pipeline).expect("write");
    let file_arg = file.to_string_lossy().into_owned();
    let printed = ok(cli(&server.url, &token, &["sign", "acme/app", &file_arg]));
    assert_eq!(printed.trim().len(), 64, "{printed}");
    let saved = ok(cli(
        &server.url,
        &token,
        &["sign", "acme/app", &file_arg, "--save"],
    ));
    assert!(
        saved.contains("now builds only signed pipeline files"),
        "{saved}"
    );
    let written = std::fs::read_to_string(&file).expect("read");
    assert_eq!(
        written,
        format!("{pipeline}---\nkind: signature\nhmac: {}\n", printed.trim())
    );
    ok(cli(&server.url, &token, &["sign", "acme/app", "--disable"]));
    let refused = cli(
        &server.url,
        "gantry_wrong",
        &["build", "restart", "acme/app", "1"],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );
    let added = ok(cli(
        &server.url,
        &token,
        &[
            "notify",
            "add",
            "acme/app",
            "--kind",
            "slack",
            "--url",
            "http://127.0.0.1:9/services/secret",
            "--on",
            "failure",
        ],
    ));
    assert!(added.contains("added target #1"), "{added}");
    let targets = ok(cli(&server.url, &token, &["notify", "ls", "acme/app"]));
    assert!(
        targets.contains("slack")
            && targets.contains("http://127.0.0.1:9/…")
            && !targets.contains("secret"),
        "{targets}"
    );
    let tested = ok(cli(
        &server.url,
        &token,
        &["notify", "test", "acme/app", "1"],
    ));
    assert!(tested.contains("queued"), "{tested}");
    let bad = cli(
        &server.url,
        &token,
        &[
            "notify", "add", "acme/app", "--kind", "irc", "--url", "http://x",
        ],
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("slack, mattermost"),
        "{bad:?}"
    );
    ok(cli(&server.url, &token, &["notify", "rm", "acme/app", "1"]));

    // Users, their tokens and roles.
    let added = ok(cli(&server.url, &token, &["user", "add", "dev"]));
    assert!(added.contains("added user dev"), "{added}");
    let made = ok(cli(
        &server.url,
        &token,
        &["token", "create", "laptop", "--user", "dev"],
    ));
    assert!(made.contains("acting for dev"), "{made}");
    let dev = made.lines().last().expect("the token").trim().to_owned();
    assert_eq!(
        ok(cli(&server.url, &dev, &["user", "whoami"])).trim(),
        "dev"
    );
    let refused = cli(&server.url, &dev, &["build", "restart", "acme/app", "1"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("403") && stderr.contains("write role"),
        "{refused:?}"
    );
    ok(cli(
        &server.url,
        &token,
        &["role", "set", "acme/app", "dev", "write"],
    ));
    let restarted = ok(cli(
        &server.url,
        &dev,
        &["build", "restart", "acme/app", "1"],
    ));
    assert!(restarted.contains("#5"), "{restarted}");
    let roles = ok(cli(&server.url, &token, &["role", "ls", "acme/app"]));
    assert!(
        roles.contains("dev") && roles.contains("write") && roles.contains("set by an admin"),
        "{roles}"
    );
    let updated = ok(cli(
        &server.url,
        &token,
        &[
            "repo",
            "update",
            "acme/app",
            "--visibility",
            "private",
            "--fork-policy",
            "approve",
            "--timeout",
            "20",
        ],
    ));
    assert!(updated.contains("updated acme/app"), "{updated}");
    let info = ok(cli(&server.url, &token, &["repo", "info", "acme/app"]));
    assert!(
        info.contains("\"visibility\": \"private\"")
            && info.contains("\"fork_policy\": \"approve\"")
            && info.contains("\"timeout_secs\": 1200"),
        "{info}"
    );
    ok(cli(&server.url, &token, &["role", "rm", "acme/app", "dev"]));
    let hidden = cli(&server.url, &dev, &["repo", "info", "acme/app"]);
    assert!(
        String::from_utf8_lossy(&hidden.stderr).contains("404"),
        "a private repository is not there for a user without a role: {hidden:?}"
    );
    ok(cli(&server.url, &token, &["user", "admin", "dev", "true"]));
    let users = ok(cli(&server.url, &dev, &["user", "ls"]));
    assert!(users.contains("dev") && users.contains("admin"), "{users}");
    ok(cli(&server.url, &token, &["user", "rm", "dev"]));
    let gone = cli(&server.url, &dev, &["user", "whoami"]);
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("401"),
        "a removed user's tokens stop working: {gone:?}"
    );

    ok(cli(&server.url, &token, &["repo", "rm", "acme/app"]));
    let gone = cli(&server.url, &token, &["repo", "info", "acme/app"]);
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("404"),
        "{gone:?}"
    );
    server.process.stop();
}

#[test]
fn a_server_killed_mid_build_ends_the_build_after_restart() {
    require_docker();
    let dir = TempDir::new("e2e-kill-server");
    let runner = format!("e2e-kill-{}", std::process::id());
    let args = [
        "--runner-backend",
        "docker",
        "--runner-name",
        runner.as_str(),
    ];
    let (mut server, token) = start_server(dir.path(), None, &args);
    let token = token.expect("the first start prints the admin token");
    let git = GitRepo::new();
    let pipeline = format!(
        "kind: pipeline\nname: ci\nclone: {{disable: true}}\nsteps:\n  - name: long\n    image: {IMAGE}\n    commands:\n      - echo started\n      - sleep 120\n"
    );
    let sha = git.commit(&[(".gantry.yml", &pipeline)], "first");
    add_repo(&server.url, &token, "app", &git, false);
    push(&server.url, "app", &sha, "d-1");
    wait_build(&server.url, &token, "app", 1, "logged `started`", |_| {
        log(&server.url, &token, "app", 1, 1, 1).contains("started")
    });
    server.process.kill_hard();
    assert_ne!(
        docker_leftovers(&runner),
        "",
        "the killed server's build was running in Docker"
    );

    let (mut restarted, _) = start_server(dir.path(), None, &args);
    let build = wait_build(&restarted.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "error", "{build:#}");
    let stage = &build["stages"][0];
    assert!(
        stage["error"].as_str().unwrap_or("").contains("restarted"),
        "{stage:#}"
    );
    assert_eq!(stage["steps"][0]["status"], "error");
    assert!(
        log(&restarted.url, &token, "app", 1, 1, 1).contains("started"),
        "the logs received before the crash are kept"
    );
    assert_eq!(
        docker_leftovers(&runner),
        "",
        "the restarted runner removed what the killed one left"
    );
    restarted.process.stop();
}

#[test]
fn a_killed_runner_errors_its_stage_and_the_build_ends() {
    let dir = TempDir::new("e2e-kill-runner");
    let (mut server, token) = start_server(dir.path(), None, &["--runner-capacity", "0"]);
    let token = token.expect("the first start prints the admin token");
    let mut runner = spawn_runner(
        &server.url,
        "e2e-remote",
        &dir.path().join("runner"),
        &dir.path().join("runner.log"),
        &["--backend", "local", "--host-pipelines", "--capacity", "2"],
    );
    runner.wait_for("gantry runner started");
    let git = GitRepo::new();
    let pipeline = "kind: pipeline\ntype: exec\nname: ci\nclone: {disable: true}\nsteps:\n  - name: long\n    commands:\n      - echo started\n      - sleep 120\n";
    let sha = git.commit(&[(".gantry.yml", pipeline)], "first");
    add_repo(&server.url, &token, "app", &git, true);
    push(&server.url, "app", &sha, "d-1");
    wait_build(&server.url, &token, "app", 1, "logged `started`", |_| {
        log(&server.url, &token, "app", 1, 1, 1).contains("started")
    });
    runner.kill_hard();
    let killed_at = Instant::now();
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    let took = killed_at.elapsed();
    assert_eq!(build["status"], "error", "{build:#}");
    let stage = &build["stages"][0];
    assert!(
        stage["error"]
            .as_str()
            .unwrap_or("")
            .contains("stopped heartbeating"),
        "{stage:#}"
    );
    assert!(log(&server.url, &token, "app", 1, 1, 1).contains("started"));
    eprintln!("runner killed to stage ended: {took:?}");
    assert!(
        took < Duration::from_secs(25),
        "the lease (15 s) and the reaper (every 2 s) end it in time: {took:?}"
    );
    server.process.stop();
}

/// A real build whose step prints slowly, watched in Chromium as it runs: lines arrive
/// while the step is still running, and the page ends with the step's status.
#[test]
fn a_slow_step_s_log_arrives_live_in_the_browser() {
    let dir = TempDir::new("e2e-browser");
    let (mut server, token) = start_server(
        dir.path(),
        None,
        &[
            "--runner-backend",
            "local",
            "--runner-host-pipelines",
            "--runner-name",
            "e2e-browser",
        ],
    );
    let token = token.expect("the first start prints the admin token");
    let git = GitRepo::new();
    let pipeline = "kind: pipeline\ntype: exec\nname: ci\nclone: {disable: true}\nsteps:\n  - name: slow\n    commands:\n      - for i in $(seq 1 12); do echo \"tick $i\"; sleep 0.5; done\n";
    let sha = git.commit(&[(".gantry.yml", pipeline)], "slow");
    // Public: the browser reads it without signing in.
    add_public_repo(&server.url, &token, "app", &git);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        // The browser first: it takes a moment to start.
        let browser = gantry_test_support::browser::Browser::start().await;
        // The helpers use a blocking client: off the runtime's threads.
        tokio::task::block_in_place(|| {
            push(&server.url, "app", &sha, "d-1");
            wait_build(&server.url, &token, "app", 1, "logged `tick 1`", |_| {
                log(&server.url, &token, "app", 1, 1, 1).contains("tick 1")
            });
        });
        browser.open(&format!("{}/acme/app/1/1/1", server.url)).await;
        browser
            .until("a tick", "document.body.innerText.includes('tick 1')")
            .await;
        let running = browser
            .value("document.querySelector('#step-status .s-running') !== null")
            .await;
        assert_eq!(running, serde_json::json!(true), "the step was still running when the page opened");
        // The rest arrive live, each once, then the final status.
        browser
            .until("tick 12", "document.getElementById('L13') && document.getElementById('L13').textContent.includes('tick 12')")
            .await;
        browser
            .until("the step's success", "document.querySelector('#step-status .s-success') !== null")
            .await;
        let ticks = browser
            .value("Array.from(document.querySelectorAll('#log .line .text')).map(t => t.textContent).filter(t => t.startsWith('tick')).join('|')")
            .await;
        let expected: Vec<String> = (1..=12).map(|i| format!("tick {i}")).collect();
        assert_eq!(ticks, serde_json::json!(expected.join("|")), "every line once, in order");
        browser
            .screenshot(
                &std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
                "e2e-step-live",
            )
            .await;
        browser.stop().await;
    });
    server.process.stop();
}

/// A secret set with the CLI reaches its step, is masked in the log, and is never shown;
/// the server refuses to start with another key, or with none, once secrets are stored.
#[test]
fn secrets_are_masked_and_the_key_guards_them() {
    let dir = TempDir::new("e2e-secrets");
    let args = [
        "--runner-backend",
        "local",
        "--runner-host-pipelines",
        "--runner-name",
        "e2e-secrets",
        // The chat service of this test listens on loopback.
        "--notify-allow-net",
        "127.0.0.1/32",
    ];
    let (mut server, token) = start_server(dir.path(), None, &args);
    let token = token.expect("the first start prints the admin token");
    let git = GitRepo::new();
    let pipeline = "kind: pipeline\ntype: exec\nname: ci\nclone: {disable: true}\nsteps:\n  - name: use\n    environment:\n      TOKEN: {from_secret: deploy_token}\n    commands:\n      - echo \"token is $TOKEN\"\n  - name: leak\n    environment:\n      TOKEN: {from_secret: deploy_token}\n    commands:\n      - echo \"leaking $TOKEN\"\n      - exit 3\n";
    let sha = git.commit(&[(".gantry.yml", pipeline)], "use a secret");
    add_repo(&server.url, &token, "app", &git, true);
    ok(cli(
        &server.url,
        &token,
        &[
            "secret",
            "add",
            "acme/app",
            "deploy_token",
            "--value",
            "tok-e2e-91",
        ],
    ));
    let listed = ok(cli(&server.url, &token, &["secret", "ls", "acme/app"]));
    assert!(
        listed.contains("deploy_token") && !listed.contains("tok-e2e-91"),
        "{listed}"
    );
    let chat = HttpSink::start();
    ok(cli(
        &server.url,
        &token,
        &[
            "notify",
            "add",
            "acme/app",
            "--kind",
            "slack",
            "--url",
            &format!("{}/services/hook", chat.url),
        ],
    ));
    push(&server.url, "app", &sha, "d-1");
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "failure", "{build:#}");
    let text = log(&server.url, &token, "app", 1, 1, 1);
    assert!(
        text.contains("token is ********") && !text.contains("tok-e2e-91"),
        "{text}"
    );
    // The chat message quotes the failing step's last lines, masked like its log.
    let messages = chat.wait(Duration::from_secs(20));
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("leaking ********") && !messages[0].contains("tok-e2e-91"),
        "{}",
        messages[0]
    );
    server.process.stop();

    let data = dir.path().to_string_lossy().into_owned();
    let wrong = "ab".repeat(32);
    let mut refused = Process::spawn(
        &[
            "server",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--secret-key",
            &wrong,
        ],
        &[("GANTRY_RUNNER_SECRET", "e2e-runner-secret-0123456789")],
        dir.path().join("wrong-key.log"),
    );
    let status = refused.child.wait().expect("exits");
    assert!(!status.success());
    assert!(
        refused.output().contains("secret key is not the one"),
        "{}",
        refused.output()
    );

    std::fs::remove_file(dir.path().join("secret-key")).expect("removes the key file");
    let mut keyless = Process::spawn(
        &["server", "--addr", "127.0.0.1:0", "--data-dir", &data],
        &[("GANTRY_RUNNER_SECRET", "e2e-runner-secret-0123456789")],
        dir.path().join("no-key.log"),
    );
    let status = keyless.child.wait().expect("exits");
    assert!(!status.success());
    assert!(
        keyless
            .output()
            .contains("holds secrets, but no secret key"),
        "{}",
        keyless.output()
    );
}

/// One case of the isolation matrix: a pipeline of `kind` in a repository trusted or not,
/// whose step tries to leave a marker file on the runner's host.
struct Isolation {
    kind: &'static str,
    trusted: bool,
    /// What the build must come to: `Some(status)`, or `None` for "waits, saying why".
    expect: Option<&'static str>,
    /// Whether the marker may appear on this machine (only for host runs of trusted work).
    on_host: bool,
    /// A text the build's error (or the page's waiting note) must hold.
    reason: &'static str,
}

fn run_isolation_matrix(server: &ServerProcess, token: &str, cases: &[Isolation], tag: &str) {
    let markers = TempDir::new(&format!("markers-{tag}"));
    let mut pushed = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let marker = markers
            .path()
            .join(format!("{}-{}", case.kind, case.trusted));
        let image = if case.kind == "exec" {
            String::new()
        } else {
            format!("    image: {IMAGE}\n")
        };
        let pipeline = format!(
            "kind: pipeline\ntype: {}\nname: ci\nclone: {{disable: true}}\nsteps:\n  - name: escape\n{image}    commands:\n      - mkdir -p {} && hostname > {}\n",
            case.kind,
            markers.path().display(),
            marker.display()
        );
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", &pipeline)], "try the host");
        let name = format!("iso-{tag}-{i}");
        add_repo(&server.url, token, &name, &git, case.trusted);
        push(&server.url, &name, &sha, &format!("iso-{tag}-{i}"));
        pushed.push((case, name, marker, git));
    }
    let client = reqwest::blocking::Client::new();
    for (case, name, marker, _repository) in &pushed {
        let what = format!("type: {} trusted={}", case.kind, case.trusted);
        match case.expect {
            Some(status) => {
                let build = wait_build(&server.url, token, name, 1, "finished", finished);
                assert_eq!(build["status"], status, "{what}: {build:#}");
                let error = build["error"].as_str().unwrap_or_default();
                assert!(error.contains(case.reason), "{what}: {error}");
            }
            None => {
                // Pending, with a note on the build page that says which runner it needs.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let page = client
                        .get(format!("{}/acme/{name}/1", server.url))
                        .header("cookie", format!("gantry_session={token}"))
                        .send()
                        .and_then(|r| r.text())
                        .unwrap_or_default();
                    if page.contains("waiting: no runner can take it") {
                        assert!(page.contains(case.reason), "{what}: {page}");
                        break;
                    }
                    assert!(Instant::now() < deadline, "{what}: no waiting note: {page}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                let build = wait_build(&server.url, token, name, 1, "listed", |_| true);
                assert_eq!(build["status"], "pending", "{what}: {build:#}");
            }
        }
        assert_eq!(
            marker.exists(),
            case.on_host,
            "{what}: the marker on the host at {}",
            marker.display()
        );
    }
}

/// Every pipeline type, trusted and not, against a runner without Docker that declares
/// host pipelines: only trusted work runs on the host; an untrusted `docker` stage waits
/// for a Docker runner, a `kubernetes` one for a runner on a cluster; a type gantry has no
/// backend for errors, naming the way out.
#[test]
fn a_host_runner_runs_trusted_work_only() {
    let dir = TempDir::new("e2e-iso-host");
    let args = [
        "--runner-backend",
        "local",
        "--runner-host-pipelines",
        "--runner-name",
        "e2e-iso-host",
    ];
    let (mut server, token) = start_server(dir.path(), None, &args);
    let token = token.expect("the first start prints the admin token");
    let no_backend = |kind| Isolation {
        kind,
        trusted: false,
        expect: Some("error"),
        on_host: false,
        reason: "change it to `type: docker`",
    };
    let cases = [
        Isolation {
            kind: "docker",
            trusted: false,
            expect: None,
            on_host: false,
            reason: "needs a runner that offers docker",
        },
        Isolation {
            kind: "exec",
            trusted: false,
            expect: Some("error"),
            on_host: false,
            reason: "--trusted true",
        },
        Isolation {
            kind: "kubernetes",
            trusted: false,
            expect: None,
            on_host: false,
            reason: "needs a runner that offers kubernetes",
        },
        no_backend("vm"),
        no_backend("ssh"),
        Isolation {
            kind: "docker",
            trusted: true,
            expect: Some("success"),
            on_host: true,
            reason: "",
        },
        Isolation {
            kind: "exec",
            trusted: true,
            expect: Some("success"),
            on_host: true,
            reason: "",
        },
        Isolation {
            trusted: true,
            ..no_backend("ssh")
        },
    ];
    run_isolation_matrix(&server, &token, &cases, "host");
    server.process.stop();
}

/// The same against a Docker runner that does not declare host pipelines: an untrusted
/// `docker` stage runs in a container (the marker lands there, not here); `exec` waits for
/// a host runner even when trusted.
#[test]
fn a_docker_runner_never_runs_on_its_host() {
    require_docker();
    let dir = TempDir::new("e2e-iso-docker");
    let runner = format!("e2e-iso-docker-{}", std::process::id());
    let args = [
        "--runner-backend",
        "docker",
        "--runner-name",
        runner.as_str(),
    ];
    let (mut server, token) = start_server(dir.path(), None, &args);
    let token = token.expect("the first start prints the admin token");
    let cases = [
        Isolation {
            kind: "docker",
            trusted: false,
            expect: Some("success"),
            on_host: false,
            reason: "",
        },
        Isolation {
            kind: "exec",
            trusted: true,
            expect: None,
            on_host: false,
            reason: "host pipelines",
        },
        Isolation {
            kind: "exec",
            trusted: false,
            expect: Some("error"),
            on_host: false,
            reason: "only trusted repositories",
        },
        Isolation {
            kind: "kubernetes",
            trusted: false,
            expect: None,
            on_host: false,
            reason: "needs a runner that offers kubernetes",
        },
    ];
    run_isolation_matrix(&server, &token, &cases, "docker");
    server.process.stop();
    assert_eq!(docker_leftovers(&runner), "", "nothing is left behind");
}

/// A private repository behind a git server that answers 401 without the right basic
/// auth: the server fetches it with the repository's GitHub token, the embedded runner and
/// a remote `gantry runner` each clone it, steps get the token as a masked netrc, and a
/// missing or wrong token errors the build naming the credential and the fix.
#[test]
fn a_private_repository_builds_with_its_token() {
    require_docker();
    let dir = TempDir::new("e2e-private");
    let token_value = "ghs_private0123456789abcdefTOKEN";
    let git = GitRepo::new();
    let pipeline = format!(
        "kind: pipeline\nname: embedded\nnode: {{where: embedded}}\nsteps:\n  - name: build\n    image: {IMAGE}\n    commands:\n      - cat README\n      - echo netrc $DRONE_NETRC_MACHINE $DRONE_NETRC_USERNAME $DRONE_NETRC_PASSWORD $CI_NETRC_PASSWORD\n---\nkind: pipeline\nname: remote\nnode: {{where: remote}}\nsteps:\n  - name: build\n    image: {IMAGE}\n    commands:\n      - cat README\n      - echo netrc $DRONE_NETRC_PASSWORD\n"
    );
    let sha = git.commit(
        &[(".drone.yml", &pipeline), ("README", "private contents")],
        "first",
    );
    let private = PrivateGitServer::start(&git, "app", "x-access-token", token_value);

    let runner = format!("e2e-private-{}", std::process::id());
    let (mut server, token) = start_server(
        dir.path(),
        None,
        &[
            "--runner-backend",
            "docker",
            "--runner-name",
            &runner,
            "--runner-label",
            "where=embedded",
        ],
    );
    let token = token.expect("the first start prints the admin token");
    let mut remote = spawn_runner(
        &server.url,
        &format!("{runner}-remote"),
        &dir.path().join("remote"),
        &dir.path().join("runner.log"),
        &["--backend", "docker", "--labels", "where=remote"],
    );
    remote.wait_for("gantry runner started");

    add_repo_from(
        &server.url,
        &token,
        "app",
        &private.url,
        &["--github-token", token_value],
    );
    push(&server.url, "app", &sha, "p-1");
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    let runners: Vec<&str> = build["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["runner"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        runners,
        [runner.clone(), format!("{runner}-remote")],
        "each runner cloned one stage"
    );
    for stage in [1, 2] {
        let text = log(&server.url, &token, "app", 1, stage, 2);
        assert!(text.contains("private contents"), "stage {stage}: {text}");
        assert!(!text.contains(token_value), "stage {stage}: {text}");
    }
    assert!(
        log(&server.url, &token, "app", 1, 1, 2)
            .contains("netrc 127.0.0.1 x-access-token ******** ********"),
        "steps get the credential as a masked netrc"
    );
    let api = get(&server.url, &token, "/repos/acme/app/builds/1")
        .text()
        .expect("the build");
    assert!(!api.contains(token_value), "never in an API answer");
    assert!(
        private.refused() > 0 && private.served() > 0,
        "the git server asked for credentials ({} refused, {} served)",
        private.refused(),
        private.served()
    );

    // Without a token, and with a wrong one: the build errors, naming what was used.
    add_repo_from(&server.url, &token, "anonymous", &private.url, &[]);
    push(&server.url, "anonymous", &sha, "p-2");
    let build = wait_build(&server.url, &token, "anonymous", 1, "finished", finished);
    assert_eq!(build["status"], "error", "{build:#}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no credential (anonymous)") && error.contains("--github-token"),
        "{error}"
    );
    add_repo_from(
        &server.url,
        &token,
        "wrong",
        &private.url,
        &["--github-token", "ghs_not_the_right_one"],
    );
    push(&server.url, "wrong", &sha, "p-3");
    let build = wait_build(&server.url, &token, "wrong", 1, "finished", finished);
    assert_eq!(build["status"], "error", "{build:#}");
    let error = build["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the GitHub token of acme/wrong")
            && !error.contains("ghs_not_the_right_one"),
        "{error}"
    );
    // The right token mends it: a restart fetches again.
    ok(cli(
        &server.url,
        &token,
        &[
            "repo",
            "update",
            "acme/wrong",
            "--github-token",
            token_value,
        ],
    ));
    ok(cli(
        &server.url,
        &token,
        &["build", "restart", "acme/wrong", "1"],
    ));
    let build = wait_build(&server.url, &token, "wrong", 2, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    assert_eq!(docker_leftovers(&runner), "");
    remote.stop();
    server.process.stop();
}

/// Images of a private registry (`scripts/test-registry`, password auth) for a step, a
/// service and a plugin: without a login the build errors saying what to add; after
/// `gantry registry add` it pulls them and passes, and the password is never shown.
#[test]
fn a_registry_login_added_with_the_cli_pulls_private_images() {
    require_docker();
    gantry_test_support::registry::ready();
    let image = gantry_test_support::registry::IMAGE;
    let dir = TempDir::new("e2e-registry");
    let runner = format!("e2e-registry-{}", std::process::id());
    let (mut server, token) = start_server(
        dir.path(),
        None,
        &["--runner-backend", "docker", "--runner-name", &runner],
    );
    let token = token.expect("the first start prints the admin token");
    let git = GitRepo::new();
    let pipeline = format!(
        "kind: pipeline\nname: ci\nclone: {{disable: true}}\nservices:\n  - name: web\n    image: {image}\n    commands: [mkdir -p /www, echo private-web > /www/index.html, httpd -f -p 80 -h /www]\nsteps:\n  - name: build\n    image: {image}\n    commands:\n      - for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://web/ && exit 0; sleep 0.5; done; exit 1\n  - name: plugin\n    image: {image}\n    settings:\n      greeting: hi\n"
    );
    let sha = git.commit(&[(".gantry.yml", &pipeline)], "private images");
    add_repo(&server.url, &token, "app", &git, false);

    push(&server.url, "app", &sha, "d-1");
    let build = wait_build(&server.url, &token, "app", 1, "finished", finished);
    assert_eq!(build["status"], "error", "{build:#}");
    let refused = build.to_string();
    assert!(
        refused.contains(
            "needs a login and gantry has none for it: add one with `gantry registry add"
        ),
        "{build:#}"
    );

    let password = dir.write("password", gantry_test_support::registry::PASSWORD);
    ok(cli(
        &server.url,
        &token,
        &[
            "registry",
            "add",
            "acme/app",
            gantry_test_support::registry::HOST,
            "--username",
            gantry_test_support::registry::USERNAME,
            "--password-file",
            password.to_str().expect("a UTF-8 path"),
        ],
    ));
    let listed = ok(cli(&server.url, &token, &["registry", "ls", "acme/app"]));
    assert!(
        listed.contains(gantry_test_support::registry::HOST)
            && listed.contains(gantry_test_support::registry::USERNAME)
            && !listed.contains(gantry_test_support::registry::PASSWORD),
        "{listed}"
    );
    push(&server.url, "app", &sha, "d-2");
    let build = wait_build(&server.url, &token, "app", 2, "finished", finished);
    assert_eq!(build["status"], "success", "{build:#}");
    let text = log(&server.url, &token, "app", 2, 1, 1);
    assert!(text.contains("private-web"), "{text}");
    assert_eq!(
        docker_leftovers(&runner),
        "",
        "every container, network and volume is removed"
    );
    server.process.stop();
}
