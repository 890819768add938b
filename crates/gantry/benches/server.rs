//! The server's figures (issue 4), each beside a baseline measured in the same run:
//! - dispatch: a stage committed to the queue until an idle, connected runner has it
//!   (in-process server; SQLite and PostgreSQL). Targets p50 <= 10 ms, p99 <= 50 ms.
//! - webhooks: acknowledgement latency at 50 requests/s (p99 <= 20 ms), and accepted
//!   deliveries per second from 32 concurrent clients with unique ids (>= 1,000/s), none
//!   lost, on SQLite and PostgreSQL (the real `gantry server` process).
//! - container start: from the webhook's response to the first step's container start
//!   (Docker's own start event), median of N builds, beside a bare bollard create+start of
//!   the same image. Target: gantry adds < 100 ms.
//! - log latency: a line printed by a step until an SSE client has it. Target p50 <= 100 ms.
//! - memory: idle RSS of `gantry server` (no embedded runner) and `gantry runner`, and
//!   their growth over 1,000 builds. Targets 30 MB, 15 MB, no growth.
//!
//! Needs Docker, the test image (`scripts/test-image`) and PostgreSQL
//! (`scripts/test-postgres`). `cargo bench -p gantry --bench server`
//! (`GANTRY_BENCH_BUILDS` scales the build counts, default 50 and 1000).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{RemoveContainerOptionsBuilder, StartContainerOptions};
use gantry_pipeline::{Context, compile, parse};
use gantry_proto::WorkRequest;
use gantry_server::{Server, ServerConfig};
use gantry_store::{NewBuild, NewRepo, Store, Visibility};
use gantry_test_support::{GitRepo, TempDir, postgres_database, webhook};

const IMAGE: &str = "gantry-test/busybox:latest";
const SECRET: &str = "bench-webhook-secret";
const RUNNER_SECRET: &str = "bench-runner-secret-0123456789";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        percentile(&ms, 1.0),
    )
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// A `gantry` process; killed when dropped.
struct Process(Child, std::path::PathBuf);

impl Process {
    fn spawn(args: &[&str], envs: &[(&str, &str)], log: std::path::PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .envs(envs.iter().copied())
            .env("GANTRY_LOG", "warn,gantry::server_cmd=info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starts gantry");
        Self(child, log)
    }

    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = std::fs::read_to_string(&self.1).unwrap_or_default();
            if out.contains(needle) {
                return out;
            }
            assert!(Instant::now() < deadline, "no `{needle}` in:\n{out}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn rss_mb(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `gantry server` on a free port; returns it, its URL and the admin token.
fn server(dir: &Path, database: Option<&str>, extra: &[&str]) -> (Process, String, String) {
    let data = dir.to_string_lossy().into_owned();
    let mut args = vec!["server", "--addr", "127.0.0.1:0", "--data-dir", &data];
    args.extend_from_slice(extra);
    let mut envs = vec![("GANTRY_RUNNER_SECRET", RUNNER_SECRET)];
    if let Some(url) = database {
        envs.push(("GANTRY_DATABASE_URL", url));
    }
    let process = Process::spawn(&args, &envs, dir.join("server.log"));
    let out = process.wait_for("gantry server listening");
    let addr = out
        .split("addr=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("address")
        .to_owned();
    let token = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("gantry_"))
        .expect("token")
        .to_owned();
    (process, format!("http://{addr}"), token)
}

fn add_repo(client: &reqwest::blocking::Client, url: &str, token: &str, name: &str, git: &GitRepo) {
    let response = client
        .post(format!("{url}/api/repos"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "owner": "acme", "name": name, "clone_url": git.url(),
            "webhook_secret": SECRET, "trusted": true
        }))
        .send()
        .expect("adds the repository");
    assert_eq!(response.status(), 201);
}

fn signed_push(name: &str, sha: &str) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&webhook::push(
        &format!("acme/{name}"),
        "main",
        sha,
        "bench",
    ))
    .expect("json");
    let signature = webhook::signature(SECRET, &body);
    (body, signature)
}

async fn post_hook(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    signature: &str,
    delivery: &str,
) -> u16 {
    client
        .post(format!("{url}/hook/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature)
        .body(body.to_vec())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn wait_finished(
    client: &reqwest::blocking::Client,
    url: &str,
    token: &str,
    name: &str,
    number: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(response) = client
            .get(format!("{url}/api/repos/acme/{name}/builds/{number}"))
            .bearer_auth(token)
            .send()
            && response.status().is_success()
            && let Ok(build) = response.json::<serde_json::Value>()
            && !build["finished_at"].is_null()
        {
            return;
        }
        assert!(Instant::now() < deadline, "build #{number} never finished");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The baseline for request latencies: `GET /healthz` (one `SELECT 1`) on the same server,
/// `n` times, one after another; milliseconds each.
async fn healthz_round_trips(client: &reqwest::Client, url: &str, n: usize) -> Vec<f64> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let response = client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .expect("healthz");
        assert!(response.status().is_success());
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    samples
}

// ----- dispatch ------------------------------------------------------------------------

async fn dispatch(label: &str, database: &str, rounds: usize) {
    let dir = TempDir::new("bench-dispatch");
    let store = Store::open(database).await.expect("store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = Server::new(
        store.clone(),
        ServerConfig::new(dir.path().to_owned(), url.clone(), RUNNER_SECRET.into()),
    );
    let serving = tokio::spawn(server.run(listener, std::future::pending()));
    let repo = store
        .create_repo(&NewRepo {
            owner: "acme".into(),
            name: "dispatch".into(),
            clone_url: "/nonexistent".into(),
            link: String::new(),
            webhook_secret: SECRET.into(),
            config_path: String::new(),
            default_branch: "main".into(),
            trusted: false,
            visibility: Some(Visibility::Public),
            timeout_secs: 60,
            github_token: String::new(),
            fork_policy: "run".into(),
            ssh_key: String::new(),
        })
        .await
        .expect("repo");
    let config = parse(
        ".gantry.yml",
        "kind: pipeline\nname: ci\nclone: {disable: true}\nsteps:\n  - name: t\n    image: x\n    commands: [t]\n",
    )
    .config
    .expect("valid");
    let client = reqwest::Client::new();
    let request = WorkRequest {
        runner: "bench".into(),
        instance: "bench-1".into(),
        labels: Default::default(),
        platform: "linux/amd64".into(),
        capacity: 1,
        offer: gantry_proto::Offer {
            docker: true,
            kubernetes: false,
            host: false,
        },
        wait_ms: 30_000,
    };
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let poll = {
            let (client, url, request) = (client.clone(), url.clone(), request.clone());
            tokio::spawn(async move {
                let response = client
                    .post(format!("{url}{}", gantry_proto::path::REQUEST))
                    .bearer_auth(RUNNER_SECRET)
                    .json(&request)
                    .send()
                    .await
                    .expect("request");
                let got = Instant::now();
                let assignment: gantry_proto::Assignment =
                    response.json().await.expect("assignment");
                (got, assignment)
            })
        };
        // Let the request park on the empty queue.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let number = store.take_build_number(repo.id).await.expect("number");
        let mut ctx = Context::push("acme/dispatch", "main");
        ctx.build_number = number as u64;
        let plan = compile(&config, &ctx).expect("plan");
        // From before the insert: an upper bound that includes the build's own transaction
        // (the runner may already have the stage when `create_build` returns).
        let committed = Instant::now();
        store
            .create_build(&NewBuild {
                repo_id: repo.id,
                number,
                context: ctx,
                sender: "bench".into(),
                plan: Ok(plan),
                delivery: None,
                fork: false,
                hold: false,
                approvals: Default::default(),
                schedule: None,
            })
            .await
            .expect("build");
        let (got, assignment) = poll.await.expect("poll");
        samples.push(got.duration_since(committed).as_secs_f64() * 1000.0);
        let done = gantry_proto::StageDone {
            epoch: assignment.lease.epoch,
            state: gantry_proto::StepState::Success,
            error: None,
            steps: vec![],
        };
        client
            .post(format!(
                "{url}{}",
                gantry_proto::path::done(assignment.lease.stage)
            ))
            .bearer_auth(RUNNER_SECRET)
            .json(&done)
            .send()
            .await
            .expect("done");
    }
    let (base50, base99, _) = summary(healthz_round_trips(&client, &url, rounds).await);
    serving.abort();
    let (p50, p99, max) = summary(samples);
    println!(
        "dispatch ({label}, {rounds} stages, from before the build's insert): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (targets 10 / 50); \
         baseline GET /healthz round trip p50 {base50:.2} ms, p99 {base99:.2} ms: {:.1}x at p50",
        p50 / base50
    );
}

// ----- webhooks ------------------------------------------------------------------------

async fn webhooks(label: &str, database: Option<&str>, total: usize) {
    let dir = TempDir::new("bench-hooks");
    let (process, url, token) = server(dir.path(), database, &["--runner-capacity", "0"]);
    let git = GitRepo::new();
    let sha = git.commit(&[(".gantry.yml", "kind: pipeline\nname: ci\nclone: {disable: true}\nsteps:\n  - name: t\n    image: x\n    commands: [t]\n")], "bench");
    let blocking = reqwest::blocking::Client::new();
    add_repo(&blocking, &url, &token, "hooks", &git);
    let (body, signature) = signed_push("hooks", &sha);
    let body = Arc::new(body);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");

    // Acknowledgement latency, paced at 50 requests per second.
    let mut paced = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut handles = Vec::new();
    for i in 0..250 {
        ticker.tick().await;
        let (client, url, body, signature) = (
            client.clone(),
            url.clone(),
            Arc::clone(&body),
            signature.clone(),
        );
        handles.push(tokio::spawn(async move {
            let start = Instant::now();
            let status = post_hook(&client, &url, &body, &signature, &format!("paced-{i}")).await;
            (status, start.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    for handle in handles {
        let (status, ms) = handle.await.expect("task");
        assert_eq!(status, 202);
        paced.push(ms);
    }
    let (p50, p99, max) = summary(paced);

    // Throughput: 32 clients, unique delivery ids.
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (client, url, body, signature, next) = (
            client.clone(),
            url.clone(),
            Arc::clone(&body),
            signature.clone(),
            Arc::clone(&next),
        );
        clients.push(tokio::spawn(async move {
            let mut accepted = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return accepted;
                }
                if post_hook(&client, &url, &body, &signature, &format!("burst-{i}")).await == 202 {
                    accepted += 1;
                }
            }
        }));
    }
    let mut accepted = 0;
    for c in clients {
        accepted += c.await.expect("client");
    }
    let rate = accepted as f64 / started.elapsed().as_secs_f64();
    // None lost: every accepted delivery is stored.
    let store = match database {
        Some(url) => Store::open(url).await,
        None => Store::open(&dir.path().join("gantry.db").to_string_lossy()).await,
    }
    .expect("store");
    let mut stored = 0;
    for i in 0..total {
        if store
            .delivery(&format!("burst-{i}"))
            .await
            .expect("reads")
            .is_some()
        {
            stored += 1;
        }
    }
    // Baselines on the same server: GET /healthz paced the same way, and from 32 clients.
    let mut paced_health = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..250 {
        ticker.tick().await;
        paced_health.extend(healthz_round_trips(&client, &url, 1).await);
    }
    let (_, health99, _) = summary(paced_health);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..32 {
        let (client, url) = (client.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            healthz_round_trips(&client, &url, total / 32).await.len()
        }));
    }
    let mut served = 0;
    for c in clients {
        served += c.await.expect("client");
    }
    let health_rate = served as f64 / started.elapsed().as_secs_f64();
    drop(process);
    println!(
        "webhooks ({label}): ack at 50/s p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (target p99 20; \
         GET /healthz p99 {health99:.2} ms, {:.1}x); 32 clients: {rate:.0} accepted/s ({accepted}/{total} accepted, \
         {stored} stored; target 1000/s, none lost; GET /healthz {health_rate:.0}/s, {:.2}x)",
        p99 / health99,
        rate / health_rate
    );
}

// ----- container start -----------------------------------------------------------------

/// Docker's container start events as (time in ns, gantry.runner label).
fn start_events() -> (Child, mpsc::Receiver<(i128, String)>) {
    let mut child = Command::new("docker")
        .args([
            "events",
            "--filter",
            "type=container",
            "--filter",
            "event=start",
            "--format",
            "{{.TimeNano}} {{index .Actor.Attributes \"gantry.runner\"}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker events");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut parts = line.splitn(2, ' ');
            let time = parts.next().and_then(|t| t.parse::<i128>().ok());
            let runner = parts.next().unwrap_or("").trim().to_owned();
            if let Some(time) = time
                && tx.send((time, runner)).is_err()
            {
                return;
            }
        }
    });
    (child, rx)
}

fn next_start(events: &mpsc::Receiver<(i128, String)>, runner: &str) -> i128 {
    loop {
        let (time, label) = events
            .recv_timeout(Duration::from_secs(60))
            .expect("a container start event");
        if label == runner {
            return time;
        }
    }
}

async fn container_start(builds: usize) {
    let dir = TempDir::new("bench-start");
    let runner = format!("bench-start-{}", std::process::id());
    let (_process, url, token) = server(
        dir.path(),
        None,
        &[
            "--runner-backend",
            "docker",
            "--runner-name",
            &runner,
            "--runner-capacity",
            "1",
        ],
    );
    let git = GitRepo::new();
    let pipeline = format!(
        "kind: pipeline\nname: ci\nclone: {{disable: true}}\nsteps:\n  - name: t\n    image: {IMAGE}\n    commands: [\"true\"]\n"
    );
    let sha = git.commit(&[(".gantry.yml", &pipeline)], "bench");
    let blocking = reqwest::blocking::Client::new();
    add_repo(&blocking, &url, &token, "start", &git);
    let (body, signature) = signed_push("start", &sha);
    let client = reqwest::Client::new();
    let docker = Docker::connect_with_defaults()
        .expect("docker")
        .negotiate_version()
        .await
        .expect("docker");
    let (mut events_process, events) = start_events();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bare_label = format!("bench-bare-{}", std::process::id());
    let mut through_gantry = Vec::new();
    let mut bare = Vec::new();
    for i in 0..builds {
        // Bare: create and start the same image with bollard.
        let t0 = now_ns();
        let created = docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                ContainerCreateBody {
                    image: Some(IMAGE.to_owned()),
                    cmd: Some(vec!["true".to_owned()]),
                    labels: Some([("gantry.runner".to_owned(), bare_label.clone())].into()),
                    ..Default::default()
                },
            )
            .await
            .expect("create");
        docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .expect("start");
        let started = next_start(&events, &bare_label);
        bare.push((started - t0) as f64 / 1e6);
        let _ = docker
            .remove_container(
                &created.id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;

        // Through gantry: from the webhook's response to the step container's start.
        let status = post_hook(&client, &url, &body, &signature, &format!("start-{i}")).await;
        let answered = now_ns();
        assert_eq!(status, 202);
        let started = next_start(&events, &runner);
        through_gantry.push((started - answered) as f64 / 1e6);
        let (blocking, url, token) = (blocking.clone(), url.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            wait_finished(&blocking, &url, &token, "start", i as u64 + 1)
        })
        .await
        .expect("waits");
    }
    let _ = events_process.kill();
    let (g50, g99, _) = summary(through_gantry);
    let (b50, b99, _) = summary(bare);
    println!(
        "container start ({builds} builds): webhook answered -> step container started p50 {g50:.1} ms (p99 {g99:.1}); \
         bare create+start p50 {b50:.1} ms (p99 {b99:.1}); gantry adds {:.1} ms at the median (target < 100), {:.2}x the bare start",
        g50 - b50,
        g50 / b50
    );
}

// ----- log latency and memory ----------------------------------------------------------

async fn log_latency() {
    let dir = TempDir::new("bench-logs");
    let (_process, url, token) = server(
        dir.path(),
        None,
        &[
            "--runner-backend",
            "local",
            "--runner-host-pipelines",
            "--runner-name",
            "bench-logs",
        ],
    );
    let git = GitRepo::new();
    let pipeline = "kind: pipeline\ntype: exec\nname: ci\nclone: {disable: true}\nsteps:\n  - name: tick\n    commands:\n      - for i in $(seq 1 100); do date +%s%N; sleep 0.05; done\n";
    let sha = git.commit(&[(".gantry.yml", pipeline)], "bench");
    let blocking = reqwest::blocking::Client::new();
    add_repo(&blocking, &url, &token, "logs", &git);
    let (body, signature) = signed_push("logs", &sha);
    let client = reqwest::Client::new();
    assert_eq!(
        post_hook(&client, &url, &body, &signature, "logs-1").await,
        202
    );
    // Wait for the build, then follow the step live.
    let stream_url = format!("{url}/api/repos/acme/logs/builds/1/logs/1/1/stream");
    let mut response = loop {
        let r = client
            .get(&stream_url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("stream");
        if r.status().is_success() {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut pending = String::new();
    let mut samples = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let arrived = now_ns();
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if let Some(data) = line.strip_prefix("data: ")
                && let Ok(value) = serde_json::from_str::<serde_json::Value>(data.trim())
                && let Some(printed) = value["text"]
                    .as_str()
                    .and_then(|t| t.trim().parse::<i128>().ok())
            {
                samples.push((arrived - printed) as f64 / 1e6);
            }
        }
        if pending.contains("event: end") {
            break;
        }
    }
    // Lines already printed when the stream opened come from the store: skip the first few.
    let live: Vec<f64> = samples.iter().skip(5).copied().collect();
    let (p50, p99, max) = summary(live);
    println!(
        "log latency ({} lines): step printed -> SSE client p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (target p50 100)",
        samples.len()
    );
}

async fn memory(builds: usize) {
    let dir = TempDir::new("bench-memory");
    let (server_process, url, token) = server(dir.path(), None, &["--runner-capacity", "0"]);
    let runner_data = dir.path().join("runner");
    let runner = Process::spawn(
        &[
            "runner",
            "--data-dir",
            &runner_data.to_string_lossy(),
            "--server",
            &url,
            "--backend",
            "local",
            "--name",
            "bench-memory",
            "--capacity",
            "4",
        ],
        &[("GANTRY_RUNNER_SECRET", RUNNER_SECRET)],
        dir.path().join("runner.log"),
    );
    runner.wait_for("gantry runner started");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (server_idle, runner_idle) = (server_process.rss_mb(), runner.rss_mb());
    let git = GitRepo::new();
    let pipeline = "kind: pipeline\ntype: exec\nname: ci\nclone: {disable: true}\nsteps:\n  - name: t\n    commands: [echo hello]\n";
    let sha = git.commit(&[(".gantry.yml", pipeline)], "bench");
    let blocking = reqwest::blocking::Client::new();
    add_repo(&blocking, &url, &token, "memory", &git);
    let (body, signature) = signed_push("memory", &sha);
    let client = reqwest::Client::new();
    // RSS after every tenth of the builds: growth that levels off is a cache filling
    // (SQLite's page cache, at most 2 MB per pooled connection); a leak keeps climbing.
    let mut curve = Vec::new();
    let started = Instant::now();
    for i in 0..builds {
        assert_eq!(
            post_hook(&client, &url, &body, &signature, &format!("mem-{i}")).await,
            202
        );
        if i % 4 == 3 || i + 1 == builds {
            let (blocking, url, token) = (blocking.clone(), url.clone(), token.clone());
            tokio::task::spawn_blocking(move || {
                wait_finished(&blocking, &url, &token, "memory", i as u64 + 1)
            })
            .await
            .expect("waits");
        }
        if (i + 1) % (builds / 10).max(1) == 0 {
            curve.push((i + 1, server_process.rss_mb(), runner.rss_mb()));
        }
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (server_end, runner_end) = (server_process.rss_mb(), runner.rss_mb());
    println!(
        "memory: idle server {server_idle:.1} MB (target 30), runner {runner_idle:.1} MB (target 15); \
         after {builds} builds ({:.1} builds/s) server {server_end:.1} MB, runner {runner_end:.1} MB",
        builds as f64 / took.as_secs_f64()
    );
    let half = curve.len() / 2;
    for (done, server_mb, runner_mb) in &curve {
        println!("  after {done:>5} builds: server {server_mb:.1} MB, runner {runner_mb:.1} MB");
    }
    if let (Some(mid), Some(last)) = (curve.get(half.saturating_sub(1)), curve.last()) {
        println!(
            "  second half of the builds: server {:+.1} MB, runner {:+.1} MB (target: no growth)",
            last.1 - mid.1,
            last.2 - mid.2
        );
    }
}

fn main() {
    if !gantry_test_support::bench::requested("server", "cargo bench -p gantry --bench server") {
        return;
    }
    let scale = gantry_test_support::bench::env_number("GANTRY_BENCH_BUILDS", 50);
    gantry_test_support::bench::test_image();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // GANTRY_BENCH_ONLY=dispatch,webhooks,logs,start,memory runs some of them.
    let only = std::env::var("GANTRY_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    runtime.block_on(async {
        if wanted("dispatch") {
            let sqlite_dir = TempDir::new("bench-sqlite");
            let sqlite = sqlite_dir
                .path()
                .join("dispatch.db")
                .to_string_lossy()
                .into_owned();
            dispatch("sqlite", &sqlite, 200).await;
            dispatch("postgres", &postgres_database().await, 200).await;
        }
        if wanted("webhooks") {
            webhooks("sqlite", None, 3000).await;
            webhooks("postgres", Some(&postgres_database().await), 3000).await;
        }
        if wanted("logs") {
            log_latency().await;
        }
        if wanted("start") {
            container_start(scale).await;
        }
        if wanted("memory") {
            memory(scale * 20).await;
        }
    });
}
