//! The chaos soak: gantry's promise that every build it starts finishes, once, with its
//! logs and its messages, while servers and runners are killed under it.
//!
//! `postgres_two_servers_three_runners`: two `gantry server` processes on one PostgreSQL
//! database behind one address (`gantry_test_support::balancer`), three `gantry runner`
//! processes (capacity 2, Docker with the busybox test image) talking to that address. N
//! pushes, each delivered one to three times (some at once); pipelines of two or three
//! stages with `depends_on`, failing steps and `status: [failure]` steps; a chat target and
//! GitHub statuses that a sink of the test's own counts. Through the run a server or a
//! runner is killed with SIGKILL every few seconds and started again.
//! `sqlite_one_server`: the same with one server on SQLite (killed and restarted too).
//!
//! A schedule (`*/20 * * * * *`, every 20 s) runs through the pushes too: its ticks are
//! claimed by whichever server is alive, so no two of its builds may come from one tick.
//!
//! At the end: every delivery made exactly one build; no two schedule builds are closer
//! than half its period, and there are no more of them than ticks; every build is final with the status
//! its pipeline implies, or `error` with the reason where its runner died mid-step; logs
//! have no gap up to the kill; each build's chat message and each commit status arrived
//! once (twice at most: sent but not yet marked when its server died); no step ran twice
//! (Docker's own events); Docker holds nothing labelled for a job; no stage stayed
//! `running` longer than the lease plus 20 s after its runner died.
//!
//! `GANTRY_SOAK_BUILDS` sets N (60 by default; the long form is 1000), `GANTRY_SOAK_SEED`
//! replays a run.

#[path = "../common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    IMAGE, Process, RUNNER_SECRET, SECRET, ServerProcess, cli, ok, require_docker, start_server,
};
use gantry_test_support::balancer::Balancer;
use gantry_test_support::sink::HttpSink;
use gantry_test_support::{GitRepo, TempDir, postgres_database, webhook};
use serde_json::Value;

const SECRET_KEY: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
/// The stage lease (`ServerConfig::lease`): a stage must not stay `running` longer than
/// this plus 20 s after its runner died.
const LEASE: Duration = Duration::from_secs(15);
const TICKS: u32 = 8;

/// One soak at a time: they share the machine's two cores and its Docker engine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn postgres_two_servers_three_runners() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let database = tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(postgres_database());
    soak("postgres", Some(&database), 2, 3);
}

#[test]
fn sqlite_one_server() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    soak("sqlite", None, 1, 3);
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.roll(100) < percent
    }
}

/// A pipeline of this run and the status it implies.
struct Variant {
    yaml: String,
    expected: &'static str,
}

/// A step that prints `tick 1`..`tick N` (the logs are checked for gaps) and then passes or
/// fails.
fn ticking_step(name: &str, fail: bool) -> String {
    let exit = if fail { "exit 3" } else { "true" };
    format!(
        "  - name: {name}\n    image: {IMAGE}\n    commands:\n      - for i in $(seq 1 {TICKS}); do echo \"tick $i\"; sleep 0.1; done\n      - {exit}\n"
    )
}

fn stage(name: &str, depends_on: Option<&str>, fail: bool) -> String {
    let needs = depends_on.map_or(String::new(), |d| format!("depends_on: [{d}]\n"));
    format!(
        "kind: pipeline\nname: {name}\nclone: {{disable: true}}\n{needs}steps:\n{}{}  - name: on-failure\n    image: {IMAGE}\n    commands: [echo cleaning up]\n    when: {{status: [failure]}}\n",
        ticking_step("work", fail),
        ticking_step("more", false),
    )
}

fn variant(dice: &mut Dice) -> Variant {
    let build_fails = dice.chance(20);
    let test_fails = dice.chance(20);
    let with_lint = dice.chance(50);
    let lint_fails = with_lint && dice.chance(20);
    let mut docs = vec![
        stage("build", None, build_fails),
        stage("test", Some("build"), test_fails),
    ];
    if with_lint {
        docs.push(stage("lint", None, lint_fails));
    }
    // `test` does not run when `build` failed; either failing fails the build.
    let failed = build_fails || test_fails || lint_fails;
    Variant {
        yaml: docs.join("---\n"),
        expected: if failed { "failure" } else { "success" },
    }
}

/// What the chaos did.
#[derive(Default)]
struct Chaos {
    kills: usize,
    /// When each runner was killed.
    runner_kills: BTreeMap<String, Vec<i64>>,
}

/// The processes of a run, by slot: servers first, then runners.
struct Cluster {
    dir: PathBuf,
    database: Option<String>,
    servers: Vec<Option<ServerProcess>>,
    runners: Vec<Option<Process>>,
    runner_names: Vec<String>,
    balancer: Balancer,
    sink: String,
    starts: usize,
}

impl Cluster {
    fn start_server(&mut self, slot: usize) -> Option<String> {
        let data = self.dir.join(format!("server-{slot}"));
        let github = format!("{}/github", self.sink);
        let args = [
            "--runner-capacity",
            "0",
            "--server-url",
            &self.balancer.url,
            "--secret-key",
            SECRET_KEY,
            "--github-api-url",
            &github,
            "--github-token",
            "soak-github-token",
            // The sink (chat and GitHub's status API) listens on loopback.
            "--notify-allow-net",
            "127.0.0.1/32",
        ];
        let (server, token) = start_server(&data, self.database.as_deref(), &args);
        self.balancer.set(slot, Some(&server.url));
        self.servers[slot] = Some(server);
        token
    }

    fn start_runner(&mut self, slot: usize) {
        self.starts += 1;
        let log = self.dir.join(format!("runner-{slot}-{}.log", self.starts));
        let data_dir = self.dir.join(format!("runner-{slot}"));
        let data_dir = data_dir.to_string_lossy();
        let mut runner = Process::spawn(
            &[
                "runner",
                "--data-dir",
                &data_dir,
                "--server",
                &self.balancer.url,
                "--backend",
                "docker",
                "--name",
                &self.runner_names[slot],
                "--capacity",
                "2",
            ],
            &[("GANTRY_RUNNER_SECRET", RUNNER_SECRET)],
            log,
        );
        runner.wait_for("gantry runner started");
        self.runners[slot] = Some(runner);
    }

    /// Kills one process with SIGKILL, waits a moment and starts it again.
    fn kill_and_restart(&mut self, victim: usize, down_for: Duration, chaos: &Mutex<Chaos>) {
        let servers = self.servers.len();
        if victim < servers {
            if let Some(mut server) = self.servers[victim].take() {
                server.process.kill_hard();
            }
            self.balancer.set(victim, None);
            chaos.lock().expect("chaos").kills += 1;
            std::thread::sleep(down_for);
            self.start_server(victim);
        } else {
            let slot = victim - servers;
            if let Some(mut runner) = self.runners[slot].take() {
                runner.kill_hard();
            }
            let mut chaos = chaos.lock().expect("chaos");
            chaos.kills += 1;
            chaos
                .runner_kills
                .entry(self.runner_names[slot].clone())
                .or_default()
                .push(now_ms());
            drop(chaos);
            std::thread::sleep(down_for);
            self.start_runner(slot);
        }
    }
}

/// The chaos thread; dropped (the test failed), it calms down first, so the cluster it
/// holds is dropped, and its runners stopped, before the test ends.
struct ChaosThread(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl ChaosThread {
    fn calm_down(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        if let Some(thread) = self.1.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ChaosThread {
    fn drop(&mut self) {
        self.calm_down();
    }
}

impl Drop for Cluster {
    /// A failed soak still stops its runners with SIGTERM: killed, they would leave their
    /// spare networks, and nothing would ever sweep a runner of that name again.
    fn drop(&mut self) {
        for runner in self.runners.iter_mut().flatten() {
            runner.terminate();
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Delivers a push until one server has stored it (202, or 200 for an id it already has);
/// a server killed mid-request is another try.
fn deliver(url: &str, sha: &str, delivery: &str) {
    let body = serde_json::to_vec(&webhook::push("acme/soak", "main", sha, "soak")).expect("json");
    let signature = webhook::signature(SECRET, &body);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sent = client
            .post(format!("{url}/hook/github"))
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", &signature)
            .body(body.clone())
            .send();
        match sent {
            Ok(response) if response.status().is_success() => return,
            Ok(response) if response.status().is_server_error() => {}
            Ok(response) => panic!(
                "delivery {delivery} refused: {} {:?}",
                response.status(),
                response.text()
            ),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "no server took delivery {delivery}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// GETs an API path through the balancer, trying again while servers restart.
fn api_text(url: &str, token: &str, path: &str) -> String {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client
            .get(format!("{url}/api{path}"))
            .bearer_auth(token)
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.text().ok());
        if let Some(text) = answer {
            return text;
        }
        assert!(Instant::now() < deadline, "{path} never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn api(url: &str, token: &str, path: &str) -> Value {
    let text = api_text(url, token, path);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

/// Every build of `acme/soak`, oldest first.
fn all_builds(url: &str, token: &str) -> Vec<Value> {
    let mut builds: Vec<Value> = Vec::new();
    let mut before = String::new();
    loop {
        let got = api(
            url,
            token,
            &format!("/repos/acme/soak/builds?limit=200{before}"),
        );
        let got = got.as_array().cloned().unwrap_or_default();
        // Pages go by number, newest first: the next one is below this one's last.
        let last = got.last().and_then(|b| b["number"].as_i64());
        builds.extend(got);
        match last {
            Some(last) if last > 1 => before = format!("&before={last}"),
            _ => break,
        }
    }
    builds.sort_by_key(|b| b["number"].as_i64());
    builds
}

/// `docker events` for the run's containers, recorded from the start: the engine keeps only
/// its last few hundred events, far fewer than a soak makes.
struct DockerEvents {
    child: std::process::Child,
    file: PathBuf,
    runners: Vec<String>,
}

impl DockerEvents {
    fn record(runners: &[String], file: PathBuf) -> Self {
        let out = std::fs::File::create(&file).expect("an events file");
        // One label filter on the key: several `label=` filters must all hold at once.
        let mut command = Command::new("docker");
        command.args([
            "events",
            "--filter",
            "type=container",
            "--filter",
            "event=start",
            "--filter",
            "label=gantry.runner",
            "--format",
            "{{index .Actor.Attributes \"gantry.runner\"}} {{.Actor.Attributes.name}}",
        ]);
        let child = command
            .stdout(out)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("runs docker events");
        Self {
            child,
            file,
            runners: runners.to_vec(),
        }
    }

    /// Steps whose container started more than once (a stage run by two runners, or twice
    /// by one): names are `gantry-<job>-<step number>-<step>`, a job
    /// `<runner>-gantry-STAGE-EPOCH` (the runner's name first, so that no two runners on one
    /// engine share a name).
    fn double_runs(mut self) -> Vec<String> {
        // Events written just now reach the file within a moment.
        std::thread::sleep(Duration::from_secs(2));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let mut starts: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            let Some((runner, name)) = line.trim().split_once(' ') else {
                continue;
            };
            if !self.runners.iter().any(|r| r == runner) {
                continue;
            }
            let runner_in_name: String = runner
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let Some(rest) = name.strip_prefix(&format!("gantry-{runner_in_name}-gantry-")) else {
                continue;
            };
            if let [stage, epoch, step, _name] = rest.splitn(4, '-').collect::<Vec<_>>()[..] {
                starts
                    .entry((stage.to_owned(), step.to_owned()))
                    .or_default()
                    .push(epoch.to_owned());
            }
        }
        assert!(
            !starts.is_empty(),
            "docker events recorded no step: {}",
            self.file.display()
        );
        starts
            .into_iter()
            .filter(|(_, epochs)| epochs.len() > 1)
            .map(|((stage, step), epochs)| format!("stage {stage} step {step}: epochs {epochs:?}"))
            .collect()
    }
}

impl Drop for DockerEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn soak(label: &str, database: Option<&str>, server_count: usize, runner_count: usize) {
    require_docker();
    let n: usize = std::env::var("GANTRY_SOAK_BUILDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("GANTRY_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| now_ms() as u64 | 1);
    eprintln!("soak {label}: {n} pushes, seed {seed} (GANTRY_SOAK_SEED replays it)");
    let started = Instant::now();
    let dir = TempDir::new(&format!("soak-{label}"));
    let sink = HttpSink::start();
    let tag = format!("soak-{label}-{}", std::process::id());
    let mut cluster = Cluster {
        dir: dir.path().to_owned(),
        database: database.map(str::to_owned),
        servers: (0..server_count).map(|_| None).collect(),
        runners: (0..runner_count).map(|_| None).collect(),
        runner_names: (0..runner_count).map(|i| format!("{tag}-r{i}")).collect(),
        balancer: Balancer::start(server_count),
        sink: sink.url.clone(),
        starts: 0,
    };
    // SQLite: one server, one data directory, restarted in place.
    let token = cluster
        .start_server(0)
        .expect("the first start prints the admin token");
    for slot in 1..server_count {
        cluster.start_server(slot);
    }
    for slot in 0..runner_count {
        cluster.start_runner(slot);
    }
    let url = cluster.balancer.url.clone();
    let events = DockerEvents::record(&cluster.runner_names, dir.path().join("docker-events.txt"));

    let git = GitRepo::new();
    let mut dice = Dice(seed);
    let first = variant(&mut dice);
    let sha = git.commit(&[(".gantry.yml", &first.yaml)], "soak 0");
    ok(cli(
        &url,
        &token,
        &[
            "repo",
            "add",
            "acme/soak",
            "--clone-url",
            &git.url(),
            "--secret",
            SECRET,
        ],
    ));
    ok(cli(
        &url,
        &token,
        &[
            "notify",
            "add",
            "acme/soak",
            "--kind",
            "slack",
            "--url",
            &format!("{}/chat", sink.url),
            "--on",
            "always",
        ],
    ));

    ok(cli(
        &url,
        &token,
        &["cron", "add", "acme/soak", "tick", CRON_EVERY_20S],
    ));
    let schedule_added = now_ms();

    // The chaos: a victim every few seconds until the pushes are in and the builds end.
    let chaos = Arc::new(Mutex::new(Chaos::default()));
    let calm = Arc::new(AtomicBool::new(false));
    let cluster = Arc::new(Mutex::new(cluster));
    let mut chaos_thread = ChaosThread(calm.clone(), None);
    chaos_thread.1 = Some({
        let (chaos, calm, cluster) = (Arc::clone(&chaos), Arc::clone(&calm), Arc::clone(&cluster));
        let mut dice = Dice(seed.rotate_left(17) | 1);
        std::thread::spawn(move || {
            while !calm.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(2_000 + dice.roll(3_000)));
                if calm.load(Ordering::SeqCst) {
                    break;
                }
                let victim = dice.roll((server_count + runner_count) as u64) as usize;
                let down_for = Duration::from_millis(300 + dice.roll(1_500));
                cluster
                    .lock()
                    .expect("the cluster")
                    .kill_and_restart(victim, down_for, &chaos);
            }
        })
    });

    // The pushes: one commit each, delivered one to three times, some at once.
    let mut expected: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut deliveries = Vec::new();
    let mut variant_now = first;
    let mut sha_now = sha;
    for push in 0..n {
        if push > 0 {
            variant_now = variant(&mut dice);
            sha_now = git.commit(
                &[(".gantry.yml", &variant_now.yaml)],
                &format!("soak {push}"),
            );
        }
        expected.insert(sha_now.clone(), variant_now.expected);
        let delivery = format!("{tag}-d{push}");
        let copies = 1 + dice.roll(3) as usize;
        let together = dice.chance(40);
        let senders: Vec<_> = (0..copies)
            .map(|_| {
                let (url, sha, delivery) = (url.clone(), sha_now.clone(), delivery.clone());
                std::thread::spawn(move || deliver(&url, &sha, &delivery))
            })
            .map(|sender| {
                if !together {
                    let _ = sender.join();
                    None
                } else {
                    Some(sender)
                }
            })
            .collect();
        for sender in senders.into_iter().flatten() {
            sender.join().expect("a delivery went through");
        }
        deliveries.push(delivery);
        std::thread::sleep(Duration::from_millis(dice.roll(1_500)));
    }
    eprintln!(
        "soak {label}: {n} pushes delivered in {:?}",
        started.elapsed()
    );
    // A tick in flight after this makes no build: its transaction finds the schedule gone.
    // The chaos goes on: the only server may be down for a moment, as a user would find.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let removed = cli(&url, &token, &["cron", "rm", "acme/soak", "tick"]);
        let said = String::from_utf8_lossy(&removed.stderr).into_owned();
        // A removal whose answer was lost is seen as gone on the next try.
        if removed.status.success() || said.contains("no schedule named") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule could not be removed: {said}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let schedule_removed = now_ms();

    // Every delivery becomes a build, and every build ends, while the chaos goes on.
    let deadline = Instant::now() + Duration::from_secs(60 + 3 * n as u64);
    let builds = loop {
        let builds = all_builds(&url, &token);
        let open = builds.iter().filter(|b| b["finished_at"].is_null()).count();
        let pushed = builds.iter().filter(|b| b["event"] == "push").count();
        if pushed >= n && open == 0 {
            break builds;
        }
        assert!(
            Instant::now() < deadline,
            "{} builds of {n}, {open} not final after {:?}",
            builds.len(),
            started.elapsed()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    chaos_thread.calm_down();
    let chaos = chaos.lock().expect("chaos");

    // Every delivery made exactly one build.
    let pushes: Vec<&Value> = builds.iter().filter(|b| b["event"] == "push").collect();
    let shas: Vec<&str> = pushes.iter().filter_map(|b| b["commit"].as_str()).collect();
    let unique: BTreeSet<&str> = shas.iter().copied().collect();
    let double_builds = shas.len() - unique.len();
    assert_eq!(double_builds, 0, "a push was built twice");
    assert_eq!(pushes.len(), n, "one build per push");
    let cron_builds = check_schedule(&builds, schedule_added, schedule_removed);
    assert_eq!(
        unique,
        expected.keys().map(String::as_str).collect(),
        "every push was built"
    );
    check_deliveries(database, &cluster.lock().expect("the cluster"), &deliveries);

    // Every build is final with the status its pipeline implies, or `error` where a
    // runner died mid-step; its logs have no gap; it was not left running.
    let mut correct = 0;
    let mut died = 0;
    let mut wrong = Vec::new();
    for summary in &builds {
        let number = summary["number"].as_i64().expect("a number");
        let build = api(&url, &token, &format!("/repos/acme/soak/builds/{number}"));
        let want = expected[build["commit"].as_str().expect("a commit")];
        let status = build["status"].as_str().unwrap_or("");
        // When the stage's runner was last killed before the stage ended: a stage errored
        // for a lost runner that was never killed is a wrong result, not chaos.
        let killed_before_end = |stage: &Value| {
            let runner = stage["runner"].as_str().unwrap_or("");
            let ended = stage["finished_at"].as_i64().unwrap_or(0);
            chaos
                .runner_kills
                .get(runner)
                .and_then(|kills| kills.iter().filter(|k| **k <= ended).max().copied())
        };
        let lost_runner = |stage: &Value| {
            let error = stage["error"].as_str().unwrap_or("");
            (error.contains("stopped heartbeating") || error.contains("restarted while running"))
                && killed_before_end(stage).is_some()
        };
        let stages = build["stages"].as_array().cloned().unwrap_or_default();
        if status == want {
            correct += 1;
        } else if status == "error" && stages.iter().any(lost_runner) {
            died += 1;
        } else {
            wrong.push(format!("#{number}: {status}, expected {want}: {build:#}"));
        }
        for stage in &stages {
            check_logs(&url, &token, number, stage);
            if let Some(killed) = killed_before_end(stage)
                && lost_runner(stage)
            {
                let ended = stage["finished_at"].as_i64().unwrap_or(0);
                let held = Duration::from_millis((ended - killed).max(0) as u64);
                assert!(
                    held <= LEASE + Duration::from_secs(20),
                    "build #{number} stage {} stayed running {held:?} after {} died",
                    stage["name"],
                    stage["runner"]
                );
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "builds with the wrong status:\n{}",
        wrong.join("\n")
    );

    // Each build's chat message, and each commit status, arrived once (twice at most).
    let deadline = Instant::now() + Duration::from_secs(90);
    let (chat, statuses) = loop {
        let (chat, statuses) = count_messages(&sink.bodies());
        let all_chatted = builds
            .iter()
            .all(|b| chat.contains_key(&b["number"].as_i64().unwrap_or(0)));
        let all_final = builds.iter().all(|b| {
            statuses.keys().any(|(number, context, state)| {
                *number == b["number"].as_i64().unwrap_or(0)
                    && context == "gantry"
                    && !state.starts_with("pending")
            })
        });
        if all_chatted && all_final {
            break (chat, statuses);
        }
        assert!(
            Instant::now() < deadline,
            "messages missing: chat for {} of {} builds",
            chat.len(),
            builds.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let chat_dups: usize = chat.values().map(|c| c - 1).sum();
    let status_dups: usize = statuses.values().map(|c| c - 1).sum();
    assert!(
        chat.values().all(|c| *c <= 2),
        "a chat message went out more than twice: {chat:?}"
    );
    assert!(
        statuses.values().all(|c| *c <= 2),
        "a commit status went out more than twice: {statuses:?}"
    );

    // No step ran twice, by Docker's own account; Docker holds nothing of a job.
    let names = cluster.lock().expect("the cluster").runner_names.clone();
    let double_runs = events.double_runs();
    assert!(
        double_runs.is_empty(),
        "steps that ran twice: {double_runs:?}"
    );
    let leftovers = wait_for_no_leftovers(&names);
    assert_eq!(leftovers, "", "Docker still holds what jobs made");

    let final_rate = 100.0 * (correct + died) as f64 / builds.len() as f64;
    eprintln!(
        "soak {label}: {n} pushes and {cron_builds} schedule builds in {:?}; {} kills; \
         {correct} with their pipeline's status, \
         {died} errored where a runner died, 0 wrong, 0 lost, 0 double builds, 0 double runs; \
         duplicates: {chat_dups} chat, {status_dups} status; final and correct: {final_rate:.1}%",
        started.elapsed(),
        chaos.kills,
    );
    let mut cluster = cluster.lock().expect("the cluster");
    for runner in cluster.runners.iter_mut().flatten() {
        runner.stop();
    }
    for server in cluster.servers.iter_mut().flatten() {
        server.process.stop();
    }
}

/// Drone's six fields, seconds first: a tick every 20 seconds.
const CRON_EVERY_20S: &str = "*/20 * * * * *";
const CRON_PERIOD_MS: i64 = 20_000;

/// The schedule made at most one build per tick: no more builds than ticks while it existed,
/// at least one, and no two closer than half a period (two builds of one tick would be).
/// Returns how many it made.
fn check_schedule(builds: &[Value], added: i64, removed: i64) -> usize {
    let mut made: Vec<i64> = builds
        .iter()
        .filter(|b| b["event"] == "cron")
        .map(|b| b["created_at"].as_i64().expect("a creation time"))
        .collect();
    made.sort();
    let ticks = ((removed - added) / CRON_PERIOD_MS + 1) as usize;
    // A claim held by a server killed mid-tick lapses after two minutes; a run this long
    // has several ticks to spare.
    if removed - added >= 8 * CRON_PERIOD_MS {
        assert!(
            !made.is_empty(),
            "the schedule never ran in {} s",
            (removed - added) / 1000
        );
    }
    assert!(
        made.len() <= ticks,
        "{} schedule builds in {ticks} ticks: {made:?}",
        made.len()
    );
    for pair in made.windows(2) {
        assert!(
            pair[1] - pair[0] >= CRON_PERIOD_MS / 2,
            "two schedule builds {} ms apart: one tick built twice? {made:?}",
            pair[1] - pair[0]
        );
    }
    made.len()
}

/// Each stored delivery points at a build, and no two at the same one.
fn check_deliveries(database: Option<&str>, cluster: &Cluster, deliveries: &[String]) {
    let url = match database {
        Some(url) => url.to_owned(),
        None => cluster
            .dir
            .join("server-0")
            .join("gantry.db")
            .to_string_lossy()
            .into_owned(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let store = gantry_store::Store::open(&url)
            .await
            .expect("opens the store");
        let mut builds = BTreeSet::new();
        for id in deliveries {
            let delivery = store
                .delivery(id)
                .await
                .expect("reads")
                .unwrap_or_else(|| panic!("delivery {id} was stored"));
            assert_eq!(
                delivery.state,
                gantry_store::DeliveryState::Processed,
                "{id}: {delivery:?}"
            );
            let build = delivery
                .build_id
                .unwrap_or_else(|| panic!("{id} made no build: {}", delivery.outcome));
            assert!(builds.insert(build), "two deliveries made build {build}");
        }
        store.close().await;
    });
}

/// Every `tick` line a step printed, in order, from 1 with no gap; all of them unless the
/// step errored (its runner died).
fn check_logs(url: &str, token: &str, number: i64, stage: &Value) {
    for step in stage["steps"].as_array().cloned().unwrap_or_default() {
        let status = step["status"].as_str().unwrap_or("");
        if !matches!(step["name"].as_str(), Some("work" | "more"))
            || matches!(status, "skipped" | "pending")
        {
            continue;
        }
        let text = api_text(
            url,
            token,
            &format!(
                "/repos/acme/soak/builds/{number}/logs/{}/{}",
                stage["number"], step["number"]
            ),
        );
        let ticks: Vec<u32> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("tick "))
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        let in_order: Vec<u32> = (1..=ticks.len() as u32).collect();
        assert_eq!(
            ticks, in_order,
            "build #{number} {}/{}: the log has a gap or a repeat:\n{text}",
            stage["name"], step["name"]
        );
        if matches!(status, "success" | "failure") {
            assert_eq!(
                ticks.len(),
                TICKS as usize,
                "build #{number} {}/{} ended {status} without its whole log:\n{text}",
                stage["name"],
                step["name"]
            );
        }
    }
}

/// Chat messages per build number, and commit statuses per (build, context, state).
#[allow(clippy::type_complexity)]
fn count_messages(
    bodies: &[String],
) -> (BTreeMap<i64, usize>, BTreeMap<(i64, String, String), usize>) {
    // A link goes to the build, or to one of its stages or steps (`.../acme/soak/N/S/P`).
    let number_in = |link: &str| {
        link.split("/acme/soak/")
            .nth(1)
            .and_then(|path| path.split(['/', '#', '?']).next())
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let mut chat = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for body in bodies {
        let Ok(value) = serde_json::from_str::<Value>(body) else {
            continue;
        };
        if let Some(context) = value["context"].as_str() {
            let number = number_in(value["target_url"].as_str().unwrap_or(""));
            // A state with its description: `pending` is sent for a queued build and again,
            // described otherwise, for a running one.
            let state = format!(
                "{}: {}",
                value["state"].as_str().unwrap_or(""),
                value["description"].as_str().unwrap_or("")
            );
            *statuses
                .entry((number, context.to_owned(), state))
                .or_insert(0) += 1;
        } else if let Some(link) = value["attachments"][0]["title_link"].as_str() {
            *chat.entry(number_in(link)).or_insert(0) += 1;
        }
    }
    (chat, statuses)
}

fn wait_for_no_leftovers(runners: &[String]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: String = runners
            .iter()
            .map(|r| common::docker_leftovers(r))
            .collect::<Vec<_>>()
            .join(" ")
            .trim()
            .to_owned();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
