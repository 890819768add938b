//! Helpers shared by gantry's process tests (`tests/it` and `tests/soak`): `gantry server`
//! and `gantry runner` as child processes, the CLI, webhooks, and what Docker holds.
// Each test binary uses its own part of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gantry_test_support::{GitRepo, webhook};
use serde_json::Value;

pub const SECRET: &str = "e2e-webhook-secret";
/// The runner secret of every server these tests start.
pub const RUNNER_SECRET: &str = "e2e-runner-secret-0123456789";
pub const IMAGE: &str = "gantry-test/busybox:latest";

/// A `gantry` process whose stderr goes to a file.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(args: &[&str], envs: &[(&str, &str)], log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .envs(envs.iter().copied())
            .env("GANTRY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starts gantry");
        Self { child, log }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `needle` in the process's output.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gantry exited ({status}) before printing `{needle}`:\n{out}");
            }
            assert!(Instant::now() < deadline, "no `{needle}` in:\n{out}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill_hard(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to 30 s for the process to end; whether it did.
    fn ask_to_stop(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops it with SIGTERM, as an operator would; it must stop within 30 s.
    pub fn stop(&mut self) {
        if !self.ask_to_stop() {
            self.kill_hard();
            panic!("gantry did not stop on SIGTERM:\n{}", self.output());
        }
    }

    /// Stops it with SIGTERM (so a runner removes its spare networks), or SIGKILL after 30 s;
    /// never panics, for use while a failed test unwinds.
    pub fn terminate(&mut self) {
        if !self.ask_to_stop() {
            self.kill_hard();
        }
    }
}

impl Drop for Process {
    /// A process a failed test leaves is stopped as an operator would (SIGTERM, SIGKILL after
    /// 30 s): a runner then removes its spare networks, which would otherwise pile up on the
    /// engine across failed runs until Docker has no address pool left for a new network.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// A running `gantry server`.
pub struct ServerProcess {
    pub process: Process,
    pub url: String,
}

pub fn start_server(
    data: &Path,
    database: Option<&str>,
    extra: &[&str],
) -> (ServerProcess, Option<String>) {
    let data_dir = data.to_string_lossy().into_owned();
    let mut args = vec!["server", "--addr", "127.0.0.1:0", "--data-dir", &data_dir];
    args.extend_from_slice(extra);
    let mut envs = vec![("GANTRY_RUNNER_SECRET", RUNNER_SECRET)];
    if let Some(url) = database {
        envs.push(("GANTRY_DATABASE_URL", url));
    }
    static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::fs::create_dir_all(data).expect("the data dir");
    let log = data.join(format!("server-{n}.log"));
    let mut process = Process::spawn(&args, &envs, log);
    let out = process.wait_for("gantry server listening");
    let addr = out
        .split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the address in the log")
        .to_owned();
    let token = out
        .lines()
        .any(|l| l.trim().starts_with("gantry_"))
        .then(|| printed_token(&out, "gantry_"));
    (
        ServerProcess {
            process,
            url: format!("http://{addr}"),
        },
        token,
    )
}

pub fn cli(server: &str, token: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env("GANTRY_SERVER", server)
        .env("GANTRY_TOKEN", token)
        .output()
        .expect("runs gantry")
}

pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "gantry failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn add_repo(server: &str, token: &str, name: &str, git: &GitRepo, trusted: bool) {
    let trust: &[&str] = if trusted { &["--trusted"] } else { &[] };
    add_repo_from(server, token, name, &git.url(), trust);
}

/// A trusted public `acme/NAME` (anyone may read it, signed in or not).
pub fn add_public_repo(server: &str, token: &str, name: &str, git: &GitRepo) {
    add_repo_from(
        server,
        token,
        name,
        &git.url(),
        &["--trusted", "--visibility", "public"],
    );
}

/// `gantry repo add acme/NAME` cloned from `clone_url`, with `extra` flags.
pub fn add_repo_from(server: &str, token: &str, name: &str, clone_url: &str, extra: &[&str]) {
    let full_name = format!("acme/{name}");
    let mut args = vec![
        "repo",
        "add",
        &full_name,
        "--clone-url",
        clone_url,
        "--secret",
        SECRET,
    ];
    args.extend_from_slice(extra);
    ok(cli(server, token, &args));
}

pub fn push(server: &str, repo: &str, sha: &str, delivery: &str) {
    let payload = webhook::push(&format!("acme/{repo}"), "main", sha, "e2e");
    send_hook(server, "push", delivery, &payload);
}

/// Delivers a signed GitHub webhook; the server must accept it.
pub fn send_hook(server: &str, event: &str, delivery: &str, payload: &Value) {
    let body = serde_json::to_vec(payload).expect("json");
    let response = reqwest::blocking::Client::new()
        .post(format!("{server}/hook/github"))
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", webhook::signature(SECRET, &body))
        .body(body)
        .send()
        .expect("the server answers");
    assert_eq!(response.status(), 202, "{:?}", response.text());
}

/// A `gantry runner` of `server` named `name`, its data folder and log in `dir`, with
/// `extra` flags (e.g. the backend).
pub fn spawn_runner(
    server: &str,
    name: &str,
    data_dir: &Path,
    log: &Path,
    extra: &[&str],
) -> Process {
    let data_dir = data_dir.to_string_lossy();
    let mut args = vec![
        "runner",
        "--server",
        server,
        "--name",
        name,
        "--data-dir",
        &data_dir,
    ];
    args.extend_from_slice(extra);
    Process::spawn(
        &args,
        &[("GANTRY_RUNNER_SECRET", RUNNER_SECRET)],
        log.to_owned(),
    )
}

pub fn get(server: &str, token: &str, path: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new()
        .get(format!("{server}/api{path}"))
        .bearer_auth(token)
        .send()
        .expect("the server answers")
}

/// Polls build `number` of `acme/REPO` until `done` says so; returns it.
pub fn wait_build(
    server: &str,
    token: &str,
    repo: &str,
    number: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    wait_build_of(server, token, &format!("acme/{repo}"), number, what, done)
}

/// Polls build `number` of `OWNER/NAME` until `done` says so; returns it.
pub fn wait_build_of(
    server: &str,
    token: &str,
    full_name: &str,
    number: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let response = get(
            server,
            token,
            &format!("/repos/{full_name}/builds/{number}"),
        );
        if response.status().is_success() {
            let build: Value = response.json().expect("json");
            if done(&build) {
                return build;
            }
            assert!(
                Instant::now() < deadline,
                "{full_name} #{number} never {what}: {build:#}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "{full_name} #{number} never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The token a command printed once, on a line of its own starting with `prefix`.
pub fn printed_token(output: &str, prefix: &str) -> String {
    output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}...` token in: {output}"))
        .to_owned()
}

pub fn finished(build: &Value) -> bool {
    !build["finished_at"].is_null()
}

pub fn log(server: &str, token: &str, repo: &str, number: u64, stage: u64, step: u64) -> String {
    get(
        server,
        token,
        &format!("/repos/acme/{repo}/builds/{number}/logs/{stage}/{step}"),
    )
    .text()
    .expect("a log")
}

/// What Docker holds for this runner's jobs (its spare networks, made ahead of time and
/// belonging to no job, are not leftovers).
pub fn docker_leftovers(runner: &str) -> String {
    let filter = format!("label=gantry.runner={runner}");
    let mut found = String::new();
    for kind in [["ps", "-aq"], ["network", "ls"], ["volume", "ls"]] {
        let out = Command::new("docker")
            .args(kind)
            .args(["-q", "--filter", &filter, "--filter", "label=gantry.job"])
            .output()
            .expect("runs docker");
        found.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    found.trim().to_owned()
}

pub fn require_docker() {
    let out = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output();
    assert!(
        out.is_ok_and(|o| o.status.success()),
        "the Docker engine or the test image {IMAGE} is missing: run ./scripts/test-image (./scripts/test does)"
    );
}
