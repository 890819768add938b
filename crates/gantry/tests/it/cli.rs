//! `gantry lint` and `gantry plan` as a user runs them.

use std::path::Path;
use std::process::{Command, Output};

use gantry_test_support::{TempDir, pipeline_fixtures, repo_root};

fn gantry(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run the gantry binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const VALID: &str = "kind: pipeline
name: ci
steps:
  - name: test
    image: alpine
    commands: [make test]
";

#[test]
fn lint_passes_valid_files_and_prints_warnings() {
    let dir = TempDir::new("lint");
    dir.write(
        ".gantry.yml",
        &VALID.replace("  - name: test\n", "  - name: test\n    imagee: x\n"),
    );
    let out = gantry(&["lint", ".gantry.yml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(".gantry.yml:5:5: warning: unknown key `imagee`"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            ".gantry.yml: ok: gantry (Drone 1.x), 1 pipeline(s), 1 step(s), 1 warning(s)"
        ),
        "{stdout}"
    );
}

#[test]
fn lint_fails_when_any_file_has_errors() {
    let dir = TempDir::new("lint");
    dir.write("good.yml", VALID);
    dir.write(
        "bad.yml",
        &VALID.replace("    image: alpine\n", "    depends_on: [nope]\n"),
    );
    let out = gantry(&["lint", "good.yml", "bad.yml", "missing.yml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("good.yml: ok"), "{stdout}");
    assert!(
        stdout.contains("bad.yml:4:5: error: step `test` has no image"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bad.yml:5:18: error: depends_on names an unknown step `nope`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bad.yml: invalid: gantry (Drone 1.x), 2 error(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("missing.yml: error: while reading missing.yml"),
        "{stdout}"
    );
}

#[test]
fn lint_accepts_every_shared_fixture() {
    let dir = TempDir::new("fixtures");
    let names: Vec<String> = pipeline_fixtures()
        .into_iter()
        .map(|(name, text)| {
            dir.write(&name, &text);
            name
        })
        .collect();
    let mut args = vec!["lint", "--quiet"];
    args.extend(names.iter().map(String::as_str));
    let out = gantry(&args, dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(!text(&out.stdout).contains(": error:"));
}

#[test]
fn the_example_file_lints_clean_and_plans() {
    let root = repo_root();
    let out = gantry(&["lint", "pipelines.example.yml"], &root);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stdout),
        "pipelines.example.yml: ok: gantry (Drone 1.x), 7 pipeline(s), 14 step(s), 0 warning(s)\n"
    );
    let out = gantry(&["plan", "pipelines.example.yml", "--trusted"], &root);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("▶ stage test\n"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn plan_json_has_the_documented_shape() {
    let dir = TempDir::new("plan");
    dir.write(
        ".drone.yml",
        "kind: pipeline
name: build
steps:
  - {name: test, image: alpine, commands: [make]}
  - {name: release, image: alpine, commands: [make release], when: {event: [tag]}}
---
kind: pipeline
name: docs
depends_on: [build]
trigger: {branch: [gh-pages]}
steps:
  - {name: publish, image: alpine, commands: [make docs]}
",
    );
    let out = gantry(
        &[
            "plan",
            ".drone.yml",
            "--event",
            "push",
            "--branch",
            "main",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let summary: Vec<serde_json::Value> = plan["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|stage| {
            serde_json::json!({
                "name": stage["name"], "run": stage["run"], "reason": stage["reason"], "depends_on": stage["depends_on"],
                "steps": stage["steps"].as_array().expect("steps").iter().map(|s| serde_json::json!({
                    "name": s["name"], "run": s["run"], "reason": s["reason"], "depends_on": s["depends_on"],
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    assert_eq!(
        serde_json::Value::Array(summary),
        serde_json::json!([
            {"name": "build", "run": true, "reason": null, "depends_on": [], "steps": [
                {"name": "clone", "run": true, "reason": null, "depends_on": []},
                {"name": "test", "run": true, "reason": null, "depends_on": ["clone"]},
                {"name": "release", "run": false, "reason": "event `push` does not match [`tag`]", "depends_on": ["test"]},
            ]},
            {"name": "docs", "run": false, "reason": "branch `main` does not match [`gh-pages`]", "depends_on": ["build"], "steps": [
                {"name": "clone", "run": false, "reason": "the stage does not run", "depends_on": []},
                {"name": "publish", "run": false, "reason": "the stage does not run", "depends_on": ["clone"]},
            ]},
        ])
    );
}

#[test]
fn plan_takes_every_context_flag() {
    let dir = TempDir::new("plan");
    dir.write(
        ".gantry.yml",
        "kind: pipeline
name: ci
steps:
  - {name: pr, image: alpine, commands: [x], when: {event: pull_request, branch: main, action: opened, ref: 'refs/pull/*/head'}}
  - {name: tag, image: alpine, commands: [x], when: {event: tag, ref: 'refs/tags/v*'}}
  - {name: deploy, image: alpine, commands: ['echo ${DRONE_DEPLOY_TO} ${VERSION}'], when: {event: promote, target: production}}
  - {name: nightly, image: alpine, commands: [x], when: {event: cron, cron: nightly}}
  - {name: docs, image: alpine, commands: [x], when: {paths: ['docs/**']}}
",
    );
    let running = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["plan", ".gantry.yml", "--json"];
        all.extend_from_slice(args);
        let out = gantry(&all, dir.path());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        plan["stages"][0]["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter(|s| s["run"] == true && s["name"] != "clone")
            .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        running(&[
            "--event",
            "pull_request",
            "--branch",
            "main",
            "--pr",
            "3",
            "--action",
            "opened"
        ]),
        ["pr", "docs"]
    );
    assert_eq!(
        running(&["--event", "tag", "--tag", "v1.0"]),
        ["tag", "docs"]
    );
    assert_eq!(
        running(&[
            "--event",
            "promote",
            "--target",
            "production",
            "--param",
            "VERSION=1"
        ]),
        ["deploy", "docs"]
    );
    assert_eq!(
        running(&["--event", "cron", "--cron", "nightly"]),
        ["nightly", "docs"]
    );
    assert_eq!(running(&["--changed", "src/main.rs"]), Vec::<String>::new());
    assert_eq!(running(&["--changed", "docs/index.md"]), ["docs"]);
}

#[test]
fn plan_refuses_untrusted_privileges_and_bad_flags() {
    let dir = TempDir::new("plan");
    dir.write(
        ".gantry.yml",
        &VALID.replace(
            "    image: alpine\n",
            "    image: alpine\n    privileged: true\n",
        ),
    );
    let out = gantry(&["plan", ".gantry.yml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(".gantry.yml:6:17: error: step `test` is privileged"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        gantry(&["plan", ".gantry.yml", "--trusted"], dir.path())
            .status
            .code(),
        Some(0)
    );
    let out = gantry(&["plan", ".gantry.yml", "--event", "merge"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown event `merge`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plan_reads_a_woodpecker_folder_as_one_build() {
    let dir = TempDir::new("woodpecker");
    dir.write(
        ".woodpecker/build.yml",
        "steps:\n  build:\n    image: golang\n    commands: [go build]\n",
    );
    dir.write(
        ".woodpecker/deploy.yml",
        "depends_on: [build]\nsteps:\n  deploy:\n    image: alpine\n    commands: [./deploy]\n",
    );
    let out = gantry(&["plan", ".woodpecker"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "▶ stage build\n    ● clone (clone)\n    ● build (golang) after clone\n▶ stage deploy (after build)\n    ● clone (clone)\n    ● deploy (alpine) after clone\n"
    );
}

#[test]
fn lint_points_at_bytes_that_are_not_utf8() {
    let dir = TempDir::new("lint");
    std::fs::write(dir.path().join("bin.yml"), b"kind: pipeline\nname: \xff\n").expect("write");
    let out = gantry(&["lint", "bin.yml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "bin.yml:2:7: error: the file is not UTF-8 text; save it as UTF-8\n"
    );
}

#[test]
fn exec_runs_the_default_file_locally_and_reports_the_outcome() {
    let dir = TempDir::new("exec");
    dir.write("data.txt", "from the current folder\n");
    dir.write(
        ".gantry.yml",
        "kind: pipeline
type: exec
name: local
steps:
  - name: read
    commands: [cat data.txt, echo \"token=$TOKEN\"]
    environment:
      TOKEN:
        from_secret: token
  - name: fail
    commands: [exit 4]
  - name: after
    commands: [echo must not run]
  - name: report
    commands: [echo reporting failure]
    when:
      status: [failure]
",
    );
    let out = gantry(
        &["exec", "--trusted", "--secret", "token=t0ps3cret"],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    for expected in [
        "from the current folder",
        "token=********",
        "reporting failure",
        "local/fail",
        "pipeline local: failure",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("t0ps3cret") && !stdout.contains("must not run"),
        "{stdout}"
    );
    // Untrusted, a host pipeline is refused before anything runs.
    let out = gantry(&["exec"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("runs commands on the runner's host"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn exec_on_docker_passes_and_says_which_pipeline_is_unknown() {
    let image = repo_root().join("scripts/test-image");
    assert!(
        Command::new(&image).status().is_ok_and(|s| s.success()),
        "needs Docker and scripts/test-image"
    );
    let dir = TempDir::new("exec-docker");
    dir.write(
        "ci.yml",
        "kind: pipeline
name: build
steps:
  - name: hello
    image: gantry-test/busybox:latest
    commands: [echo hello from docker]
",
    );
    let out = gantry(&["exec", "ci.yml"], dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("hello from docker"));
    let out = gantry(&["exec", "ci.yml", "--pipeline", "deploy"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("there is no pipeline `deploy` in ci.yml; it has: build"),
        "{}",
        text(&out.stderr)
    );
}

/// Containers, networks and volumes of a `gantry exec` process still in the engine.
fn exec_leftovers(pid: u32) -> usize {
    let label = format!("label=gantry.runner=gantry-exec-{pid}");
    [
        vec!["ps", "-aq", "--filter", &label],
        vec!["network", "ls", "-q", "--filter", &label],
        vec!["volume", "ls", "-q", "--filter", &label],
    ]
    .iter()
    .map(|args| {
        let out = Command::new("docker")
            .args(args)
            .output()
            .expect("docker CLI");
        text(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    })
    .sum()
}

/// Whether the `sleeper` step of a `gantry exec` process is running.
fn sleeper_running(pid: u32) -> bool {
    let label = format!("label=gantry.runner=gantry-exec-{pid}");
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &label,
            "--filter",
            "name=sleeper",
            "--filter",
            "status=running",
        ])
        .output()
        .expect("docker CLI");
    !text(&out.stdout).trim().is_empty()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

const SLEEPER: &str = "kind: pipeline
name: slow
steps:
  - name: sleeper
    image: gantry-test/busybox:latest
    commands: [echo sleeping, sleep 300]
";

#[test]
fn exec_stops_and_cleans_up_on_sigterm_and_sweeps_what_a_killed_run_left() {
    let image = repo_root().join("scripts/test-image");
    assert!(
        Command::new(&image).status().is_ok_and(|s| s.success()),
        "needs Docker and scripts/test-image"
    );
    let dir = TempDir::new("exec-signals");
    dir.write("slow.yml", SLEEPER);
    dir.write("quick.yml", "kind: pipeline\nname: quick\nsteps:\n  - {name: hi, image: gantry-test/busybox:latest, commands: [echo hi]}\n");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["exec", "slow.yml"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start gantry exec")
    };

    // SIGTERM: the step is stopped, the build ends as killed, nothing is left.
    let child = spawn();
    let pid = child.id();
    wait_for("the step's container", || sleeper_running(pid));
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    );
    let out = child.wait_with_output().expect("gantry exec ends");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("pipeline slow: killed: cancelled"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(exec_leftovers(pid), 0);

    // SIGKILL leaves everything behind; the next run removes it.
    let mut child = spawn();
    let pid = child.id();
    wait_for("the step's container", || sleeper_running(pid));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(exec_leftovers(pid) >= 3);
    let out = gantry(&["exec", "quick.yml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("earlier killed run(s) left behind"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(exec_leftovers(pid), 0);
}

/// One workflow of a `.woodpecker/` folder is linted alone: a dependency on a workflow of
/// another file is a warning there; linting the folder checks it (an unknown one is an error).
#[test]
fn lint_of_one_woodpecker_workflow_checks_that_file_alone() {
    let dir = TempDir::new("lint-woodpecker");
    let deploy = "depends_on: [build, test]\nsteps:\n  deploy:\n    image: alpine\n    commands: [./deploy]\n";
    dir.write(".woodpecker/deploy.yml", deploy);
    dir.write(
        ".woodpecker/build.yml",
        "steps:\n  build:\n    image: alpine\n    commands: [make]\n",
    );
    let alone = gantry(&["lint", ".woodpecker/deploy.yml"], dir.path());
    let stdout = text(&alone.stdout);
    assert_eq!(alone.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("warning: depends_on names `build`, which is not in this file"),
        "{stdout}"
    );
    let folder = gantry(&["lint", ".woodpecker"], dir.path());
    let stdout = text(&folder.stdout);
    assert_eq!(folder.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("error: depends_on names an unknown pipeline `test`")
            && !stdout.contains("unknown pipeline `build`"),
        "{stdout}"
    );
}
