//! The web UI's figures in headless Chromium (issue 5), beside a baseline page of the same
//! run (the server's 404 page: the same layout, CSS and JavaScript, no log):
//! - a 1,000,000-line (~100 MB) step log: time from navigation until its last line (the
//!   tail, the first screen) is shown, the renderer's memory, and how long a jump to an
//!   arbitrary line takes, plus the longest frame while scrolling through it. Targets: tail
//!   in <= 1 s, the tab under 300 MB, no freeze.
//! - find in that log: from a query typed until its first match is shown (target 300 ms),
//!   and until every match is counted, for a rare line, a frequent one and a regex.
//! - a live log of 10,000 lines arriving as fast as the runner can send them: the longest
//!   frame while they arrive, and the time until the last one is shown.
//!
//! Needs Debian's chromium and chromium-driver. `cargo bench -p gantry-server --bench ui`
//! (`GANTRY_BENCH_LINES` changes the big log's size, default 1,000,000).

use std::time::{Duration, Instant};

use gantry_pipeline::{Context, compile, parse};
use gantry_proto::{Assignment, LogBatch, LogLine, StepState, StepUpdate, WorkRequest};
use gantry_server::{Server, ServerConfig};
use gantry_store::{NewBuild, NewRepo, Store, Visibility};
use gantry_test_support::TempDir;
use gantry_test_support::browser::Browser;

const SECRET: &str = "bench-runner-secret-0123456789";

struct Bench {
    url: String,
    store: Store,
    repo_id: i64,
    http: reqwest::Client,
}

impl Bench {
    async fn build(&self, number: i64) -> Assignment {
        let config = parse(
            ".gantry.yml",
            "kind: pipeline\nname: ci\nclone: {disable: true}\nsteps:\n  - name: log\n    image: x\n    commands: [x]\n",
        )
        .config
        .expect("valid");
        let mut ctx = Context::push("acme/ui", "main");
        ctx.build_number = number as u64;
        let plan = compile(&config, &ctx).expect("plan");
        self.store
            .create_build(&NewBuild {
                repo_id: self.repo_id,
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
            wait_ms: 5_000,
        };
        let assignment: Assignment = self
            .http
            .post(format!("{}{}", self.url, gantry_proto::path::REQUEST))
            .bearer_auth(SECRET)
            .json(&request)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("assignment");
        self.step(&assignment, StepState::Running).await;
        assignment
    }

    async fn step(&self, assignment: &Assignment, state: StepState) {
        let update = StepUpdate {
            epoch: assignment.lease.epoch,
            step: "log".into(),
            state,
            exit_code: (state != StepState::Running).then_some(0),
            started_at: Some(chrono::Utc::now()),
            finished_at: (state != StepState::Running).then(chrono::Utc::now),
            error: None,
        };
        self.http
            .post(format!(
                "{}{}",
                self.url,
                gantry_proto::path::step(assignment.lease.stage)
            ))
            .bearer_auth(SECRET)
            .json(&update)
            .send()
            .await
            .expect("step");
    }

    async fn lines(&self, assignment: &Assignment, from: u64, count: u64) {
        let batch = LogBatch {
            epoch: assignment.lease.epoch,
            step: "log".into(),
            lines: (from..from + count)
                .map(|n| LogLine {
                    number: n,
                    elapsed_ms: n / 100,
                    // About 100 bytes a line, with a colour now and then.
                    text: if n % 50 == 0 {
                        format!("\u{1b}[33mwarning\u{1b}[0m line {n:>9} {}", "x".repeat(70))
                    } else {
                        format!("line {n:>9} of the big log {}", "-".repeat(72))
                    },
                })
                .collect(),
        };
        let response = self
            .http
            .post(format!(
                "{}{}",
                self.url,
                gantry_proto::path::logs(assignment.lease.stage)
            ))
            .bearer_auth(SECRET)
            .json(&batch)
            .send()
            .await
            .expect("logs");
        assert!(response.status().is_success(), "{}", response.status());
    }
}

/// The resident memory of Chromium's largest renderer process (the page's tab), in MB.
fn renderer_rss_mb() -> f64 {
    let mut largest_kb: f64 = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("chrom") || !cmdline.contains("--type=renderer") {
            continue;
        }
        if let Ok(status) = std::fs::read_to_string(path.join("status"))
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        {
            largest_kb = largest_kb.max(kb);
        }
    }
    largest_kb / 1024.0
}

/// Milliseconds from navigation start until `condition` holds, polled every 5 ms.
async fn time_until(browser: &Browser, condition: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = browser
            .client
            .execute(
                &format!("return ({condition}) ? performance.now() : null;"),
                vec![],
            )
            .await
            .unwrap_or(serde_json::Value::Null);
        if let Some(ms) = value.as_f64() {
            return ms;
        }
        if Instant::now() > deadline {
            let shown = browser
                .value("document.body.innerText.slice(0, 2000)")
                .await;
            panic!("never: {condition}\n{}", shown.as_str().unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts recording the longest gap between animation frames.
const FRAMES: &str = "window.__gap = 0; window.__last = performance.now(); (function f(t) { window.__gap = Math.max(window.__gap, t - window.__last); window.__last = t; requestAnimationFrame(f); })(performance.now());";

fn main() {
    if !gantry_test_support::bench::requested("ui", "cargo bench -p gantry-server --bench ui") {
        return;
    }
    let total = gantry_test_support::bench::env_number("GANTRY_BENCH_LINES", 1_000_000) as u64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = TempDir::new("bench-ui");
        let store = Store::open(&dir.path().join("gantry.db").to_string_lossy()).await.expect("store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = Server::new(store.clone(), ServerConfig::new(dir.path().to_owned(), url.clone(), SECRET.into()));
        let serving = tokio::spawn(server.run(listener, std::future::pending()));
        let repo = store
            .create_repo(&NewRepo {
                owner: "acme".into(),
                name: "ui".into(),
                clone_url: "/nonexistent".into(),
                link: String::new(),
                webhook_secret: "s".into(),
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
        let bench = Bench { url: url.clone(), store: store.clone(), repo_id: repo.id, http: reqwest::Client::new() };

        // The big log, stored before the page opens.
        let big = bench.build(1).await;
        let started = Instant::now();
        let batch = 10_000;
        let mut from = 1;
        while from <= total {
            let count = batch.min(total - from + 1);
            bench.lines(&big, from, count).await;
            from += count;
        }
        bench.step(&big, StepState::Success).await;
        println!("stored {total} lines in {:.1} s", started.elapsed().as_secs_f64());

        let browser = Browser::start().await;
        // Baseline: the 404 page (same layout, CSS and script), until its text is shown.
        let mut baseline = Vec::new();
        for _ in 0..3 {
            browser.open(&format!("{url}/acme/ui/999")).await;
            baseline.push(time_until(&browser, "document.querySelector('h1') && document.querySelector('h1').textContent.includes('404')").await);
        }
        baseline.sort_by(|a, b| a.total_cmp(b));
        let base = baseline[1];

        let mut tails = Vec::new();
        for _ in 0..3 {
            browser.open(&format!("{url}/acme/ui/1/1/1")).await;
            tails.push(time_until(&browser, &format!("document.getElementById('L{total}') && document.getElementById('L{total}').textContent.includes('{total}')")).await);
        }
        tails.sort_by(|a, b| a.total_cmp(b));
        let tail = tails[1];
        let rss_open = renderer_rss_mb();

        // Jumps to arbitrary lines.
        let mut jumps = Vec::new();
        for target in [total / 2, total / 7, total - total / 3, 1, total / 3] {
            let target = target.max(1);
            let start = browser
                .client
                .execute(&format!("const l = document.getElementById('log'); l.scrollTop = ({target} - 1) * 20; return performance.now();"), vec![])
                .await
                .expect("scrolls")
                .as_f64()
                .unwrap_or(0.0);
            let shown = time_until(&browser, &format!("document.getElementById('L{target}') && document.getElementById('L{target}').querySelector('.text').textContent !== ''")).await;
            jumps.push(shown - start);
        }
        jumps.sort_by(|a, b| a.total_cmp(b));

        // Find in the whole log: the time from a query being typed (its 50 ms pause
        // included) until the first match is marked and scrolled to, and until every match
        // is counted.
        let mut searches = Vec::new();
        for (what, query, regex) in [
            ("one line in the middle", format!("{:>9} of the big", total / 2 + 1), false),
            ("every 50th line", "warning".to_owned(), false),
            ("a regular expression, near the end", format!("^line\\s+{}\\d of", (total - 10) / 10), true),
        ] {
            // The last search closed (its marks cleared), as Esc does.
            browser.client.execute("document.getElementById('find-close').click();", vec![]).await.expect("closes");
            browser.until("no search", "document.querySelectorAll('#log mark').length === 0").await;
            browser.fill("#log", "/").await;
            browser.until("the find bar", "document.activeElement && document.activeElement.id === 'find-q'").await;
            let typed = browser
                .client
                .execute(
                    "const q = document.getElementById('find-q'); document.getElementById('find-regex').checked = arguments[1]; q.value = arguments[0]; q.dispatchEvent(new Event('input')); return performance.now();",
                    vec![serde_json::json!(query), serde_json::json!(regex)],
                )
                .await
                .expect("types")
                .as_f64()
                .unwrap_or(0.0);
            let first = time_until(&browser, "document.querySelector('#log .line.current mark') !== null").await;
            let all = time_until(&browser, "/^\\d+ of \\d+$/.test(document.getElementById('find-count').textContent)").await;
            let count = browser.value("document.getElementById('find-count').textContent").await;
            searches.push(format!(
                "{what}: first match {:.0} ms, all counted {:.0} ms ({count})",
                first - typed,
                all - typed
            ));
        }
        println!("find in the big log ({total} lines; target: first matches within 300 ms): {}", searches.join("; "));

        // A continuous scroll through the log for two seconds: the longest frame.
        browser.client.execute(FRAMES, vec![]).await.expect("frames");
        browser
            .client
            .execute("const l = document.getElementById('log'); const end = performance.now() + 2000; (function s() { l.scrollTop += 4000; if (performance.now() < end) requestAnimationFrame(s); })();", vec![])
            .await
            .expect("scrolls");
        tokio::time::sleep(Duration::from_millis(2300)).await;
        let scroll_gap = browser.value("window.__gap").await.as_f64().unwrap_or(f64::NAN);
        let rss_scrolled = renderer_rss_mb();
        let heap = browser.value("performance.memory ? performance.memory.usedJSHeapSize / 1048576 : -1").await.as_f64().unwrap_or(-1.0);

        println!(
            "big log ({total} lines): tail shown {tail:.0} ms after navigation (baseline page {base:.0} ms, {:.1}x; target 1000 ms); \
             jump to a line p50 {:.0} ms, max {:.0} ms; longest frame while scrolling {scroll_gap:.0} ms; \
             renderer RSS {rss_open:.0} MB opened, {rss_scrolled:.0} MB after scrolling, JS heap {heap:.0} MB (target 300 MB)",
            tail / base,
            jumps[jumps.len() / 2],
            jumps[jumps.len() - 1]
        );

        // A live log of 10,000 lines arriving fast.
        let live = bench.build(2).await;
        browser.open(&format!("{url}/acme/ui/2/1/1")).await;
        browser.until("the live log", "document.getElementById('log') !== null").await;
        browser.client.execute(FRAMES, vec![]).await.expect("frames");
        let sent = Instant::now();
        let mut from = 1;
        while from <= 10_000 {
            bench.lines(&live, from, 100).await;
            from += 100;
        }
        let sent_in = sent.elapsed();
        browser.until("line 10000", "document.getElementById('L10000') && document.getElementById('L10000').textContent.includes('10000')").await;
        let shown_in = sent.elapsed();
        let live_gap = browser.value("window.__gap").await.as_f64().unwrap_or(f64::NAN);
        bench.step(&live, StepState::Success).await;
        println!(
            "live log (10,000 lines sent in {:.0} ms): last line shown {:.0} ms after the first was sent; longest frame {live_gap:.0} ms",
            sent_in.as_secs_f64() * 1000.0,
            shown_in.as_secs_f64() * 1000.0
        );
        browser.stop().await;
        serving.abort();
    });
}
