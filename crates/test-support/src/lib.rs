//! Helpers shared by gantry's tests: where the shared fixtures are and how to load them.
//! A dev-dependency only; never a normal dependency of a product crate.
//!
//! # Code map
//!
//! `pipeline_fixtures()` (the shared real-world files), `fixture_upstream_path`, `repo_root`,
//! `TempDir`, `GitRepo`, `postgres_database()` / `test_databases()` (a fresh database per test),
//! `webhook` (real GitHub payloads re-pointed at a test repository, and their signatures),
//! `browser` (headless Chromium over chromedriver), `sink::HttpSink` (a chat webhook for
//! tests that run gantry as a process), `git_http::PrivateGitServer` (Git's `http-backend`
//! behind a front that answers 401 without the right basic auth: a private repository) and
//! `git_ssh::SshGitServer` (OpenSSH's `sshd` on a loopback port with a deploy key and a host key
//! made for the test), `balancer::Balancer` (one address, TCP round robin over servers that
//! come and go), `kubernetes::Cluster` (a real cluster on this machine: etcd, the API server,
//! controller manager, scheduler and a kubelet running pods in Docker). The server's own tests add a `FakeGitHub` (OAuth,
//! `/user`, repository permissions) and a `Receiver` (GitHub's status API, chat services).

use std::path::{Path, PathBuf};

pub mod balancer;
pub mod bench;
pub mod git_http;
pub mod git_ssh;
pub mod kubernetes;

/// The repository's root: the nearest folder above the test's package with a workspace
/// `Cargo.toml`. Found at run time, not compile time, because CI reuses one target folder for
/// checkouts in different places.
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .expect("a test runs in a folder");
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
        })
        .unwrap_or_else(|| panic!("no workspace Cargo.toml above {}", start.display()))
        .to_path_buf()
}

/// `../shared/fixtures` beside the repository (where the team's shared test data lives), or
/// `GANTRY_FIXTURES` when set.
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GANTRY_FIXTURES") {
        return PathBuf::from(dir);
    }
    let dir = repo_root().join("../shared/fixtures");
    assert!(
        dir.is_dir(),
        "shared fixtures not found at {}: check out the team's `shared/` folder beside the repository, or set GANTRY_FIXTURES",
        dir.display()
    );
    dir
}

/// Every real-world pipeline file in the shared fixtures, as (file name, text), sorted.
pub fn pipeline_fixtures() -> Vec<(String, String)> {
    let dir = fixtures_dir().join("pipelines");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("a file has a name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (name, text)
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no pipeline fixtures in {}",
        dir.display()
    );
    files
}

/// The original path of a fixture inside its repository, from its file name
/// (`owner__repo__.woodpecker_test.yml` → `.woodpecker/test.yml`), so that dialect rules that
/// depend on the path apply.
pub fn fixture_upstream_path(file_name: &str) -> String {
    let path = file_name.rsplit("__").next().unwrap_or(file_name);
    match path.strip_prefix(".woodpecker_") {
        Some(rest) => format!(".woodpecker/{rest}"),
        None => path.to_owned(),
    }
}

/// The private registry `scripts/test-registry` runs for the tests: its address, the one
/// login it accepts, and the test image it holds.
pub mod registry {
    pub const HOST: &str = "127.0.0.1:5055";
    pub const USERNAME: &str = "gantry-test";
    pub const PASSWORD: &str = "gantry-test-password";
    /// The test image, as the registry holds it (behind the login).
    pub const IMAGE: &str = "127.0.0.1:5055/gantry/busybox:latest";

    /// Starts the registry (and pushes the test image) once per test binary, and removes
    /// this machine's copy of [`IMAGE`], so that using it means pulling it.
    pub fn ready() {
        static STARTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        STARTED.get_or_init(|| {
            let script = super::repo_root().join("scripts/test-registry");
            let status = std::process::Command::new(&script).status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "{} failed: these tests need Debian's docker-registry and a Docker engine",
                script.display()
            );
        });
        let _ = std::process::Command::new("docker")
            .args(["image", "rm", "--force", IMAGE])
            .output();
    }

    /// [`ready`], held until the guard goes: tests of one binary that pull [`IMAGE`] take
    /// turns, so that one's pull never makes the image present for another.
    pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
        static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let turn = TURN.lock().await;
        ready();
        turn
    }

    /// A Docker `config.json` holding `password` for the registry's login.
    pub fn docker_config(password: &str) -> String {
        use base64::Engine;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{password}"));
        format!(r#"{{"auths": {{"{HOST}": {{"auth": "{auth}"}}}}}}"#)
    }
}

/// A directory that is removed when dropped, under the target directory's `tmp`.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join("gantry-tests").join(unique);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` (creating parent folders) and returns the file's path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real git repository for tests, made with git2: commits on `main`, and any other refs.
pub struct GitRepo {
    dir: TempDir,
    repo: git2::Repository,
}

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepo").field("dir", &self.dir).finish()
    }
}

impl GitRepo {
    pub fn new() -> Self {
        let dir = TempDir::new("git-repo");
        let mut options = git2::RepositoryInitOptions::new();
        options.initial_head("main");
        let repo =
            git2::Repository::init_opts(dir.path(), &options).expect("init a test repository");
        Self { dir, repo }
    }

    /// Where to clone it from.
    pub fn url(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Writes `files` and commits them on `main`; returns the commit id.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (name, text) in files {
            self.dir.write(name, text);
        }
        let mut index = self.repo.index().expect("the index");
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .expect("add files");
        index.write().expect("write the index");
        let tree = self
            .repo
            .find_tree(index.write_tree().expect("write a tree"))
            .expect("the tree");
        let signature =
            git2::Signature::now("gantry tests", "tests@gantry.invalid").expect("a signature");
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let id = self
            .repo
            .commit(
                Some("refs/heads/main"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .expect("commit");
        id.to_string()
    }

    /// Points `name` (e.g. `refs/pull/7/head`, `refs/tags/v1`) at `commit`.
    pub fn set_ref(&self, name: &str, commit: &str) {
        let id = git2::Oid::from_str(commit).expect("a commit id");
        self.repo
            .reference(name, id, true, "test ref")
            .expect("set a ref");
    }

    /// Moves `main` back to `commit`, so that later commits are reachable only from other refs.
    pub fn reset_main(&self, commit: &str) {
        self.set_ref("refs/heads/main", commit);
    }
}

impl Default for GitRepo {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the tests find PostgreSQL: `GANTRY_TEST_POSTGRES`, by default the server and role
/// that `scripts/test-postgres` sets up.
pub fn postgres_admin_url() -> String {
    std::env::var("GANTRY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://gantry:gantry@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty PostgreSQL database for one test; returns its URL. Databases are named
/// `gantry_test_*`; `scripts/test-postgres` drops the ones earlier runs left.
pub async fn postgres_database() -> String {
    use sqlx::Connection;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {admin}: {e}. Start it with ./scripts/test-postgres \
             (or point GANTRY_TEST_POSTGRES at a server where the role may create databases)"
        )
    });
    let name = format!(
        "gantry_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("creating the test database {name}: {e}"));
    let _ = conn.close().await;
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("GANTRY_TEST_POSTGRES has no database part: {admin}"),
    }
}

/// The databases every storage test runs on: a SQLite file in `dir`, and a fresh
/// PostgreSQL database. Each as (label, URL).
pub async fn test_databases(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "sqlite",
            dir.join("gantry.db").to_string_lossy().into_owned(),
        ),
        ("postgres", postgres_database().await),
    ]
}

/// GitHub webhook deliveries for tests, built from the real payloads in the shared
/// fixtures (`github-webhooks/`).
pub mod webhook {
    use hmac::{Hmac, KeyInit, Mac};
    use serde_json::Value;

    /// A fixture payload, e.g. `("push", "push.json")`.
    pub fn fixture(event: &str, file: &str) -> Value {
        let path = super::fixtures_dir()
            .join("github-webhooks")
            .join(event)
            .join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
    }

    /// Every fixture payload of `event`, as (file name, payload).
    pub fn fixtures(event: &str) -> Vec<(String, Value)> {
        let dir = super::fixtures_dir().join("github-webhooks").join(event);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let payload = fixture(event, &name);
                (name, payload)
            })
            .collect()
    }

    /// Points a payload at the repository `full_name` (as registered in gantry).
    pub fn for_repo(mut payload: Value, full_name: &str) -> Value {
        if let Some(repo) = payload.get_mut("repository") {
            repo["full_name"] = Value::from(full_name);
            if let Some((owner, name)) = full_name.split_once('/') {
                repo["name"] = Value::from(name);
                repo["owner"]["login"] = Value::from(owner);
            }
        }
        payload
    }

    /// The real `push.json`, made a push of `sha` to `branch` of `full_name`.
    pub fn push(full_name: &str, branch: &str, sha: &str, message: &str) -> Value {
        let mut payload = for_repo(fixture("push", "push.json"), full_name);
        payload["ref"] = Value::from(format!("refs/heads/{branch}"));
        payload["after"] = Value::from(sha);
        payload["head_commit"]["id"] = Value::from(sha);
        payload["head_commit"]["message"] = Value::from(message);
        payload["commits"][0]["id"] = Value::from(sha);
        payload["commits"][0]["message"] = Value::from(message);
        payload
    }

    /// The real `pr_opened.json`, made pull request `number` of `full_name` with head `sha`
    /// from `branch` into `base`.
    pub fn pull_request(
        full_name: &str,
        number: u64,
        branch: &str,
        base: &str,
        sha: &str,
    ) -> Value {
        let mut payload = for_repo(fixture("pull_request", "pr_opened.json"), full_name);
        payload["number"] = Value::from(number);
        let pr = &mut payload["pull_request"];
        pr["number"] = Value::from(number);
        pr["head"]["ref"] = Value::from(branch);
        pr["head"]["sha"] = Value::from(sha);
        pr["head"]["repo"]["full_name"] = Value::from(full_name);
        pr["base"]["ref"] = Value::from(base);
        payload
    }

    /// `X-Hub-Signature-256` for `body`.
    /// The `Authorization` value of HTTP basic auth.
    pub fn basic_auth(username: &str, password: &str) -> String {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        )
    }

    pub fn signature(secret: &str, body: &[u8]) -> String {
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`),
/// for the web UI's tests and benchmarks.
pub mod browser {
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use fantoccini::{Client, ClientBuilder};
    use serde_json::json;

    /// A headless Chromium behind its own chromedriver, with a fresh profile.
    #[derive(Debug)]
    pub struct Browser {
        pub client: Client,
        driver: Child,
        _profile: crate::TempDir,
    }

    impl Browser {
        pub async fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let driver = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver runs: install Debian's chromium and chromium-driver (./scripts/test does)");
            let profile = crate::TempDir::new("chromium-profile");
            let mut capabilities = serde_json::Map::new();
            capabilities.insert(
                "goog:chromeOptions".to_owned(),
                json!({
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--window-size=1200,900",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }),
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            let client = loop {
                match ClientBuilder::native()
                    .capabilities(capabilities.clone())
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await
                {
                    Ok(client) => break client,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("cannot drive Chromium through chromedriver: {e}"),
                }
            };
            Self {
                client,
                driver,
                _profile: profile,
            }
        }

        /// Opens `url` and waits for it to load.
        pub async fn open(&self, url: &str) {
            self.client
                .goto(url)
                .await
                .unwrap_or_else(|e| panic!("opening {url}: {e}"));
        }

        /// Waits until `script` (an expression) is true in the page.
        pub async fn until(&self, what: &str, script: &str) {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let value = self
                    .client
                    .execute(&format!("return !!({script});"), vec![])
                    .await
                    .unwrap_or(serde_json::Value::Bool(false));
                if value == serde_json::Value::Bool(true) {
                    return;
                }
                if Instant::now() > deadline {
                    let html = self
                        .client
                        .execute("return document.body.innerText;", vec![])
                        .await
                        .unwrap_or_default();
                    panic!("the page never showed {what}:\n{html}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// Types `text` into the element `css` names.
        pub async fn fill(&self, css: &str, text: &str) {
            self.client
                .find(fantoccini::Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
                .send_keys(text)
                .await
                .unwrap_or_else(|e| panic!("typing into `{css}`: {e}"));
        }

        /// Clicks the element `css` names.
        pub async fn click(&self, css: &str) {
            self.client
                .find(fantoccini::Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
                .click()
                .await
                .unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
        }

        pub async fn value(&self, script: &str) -> serde_json::Value {
            self.client
                .execute(&format!("return {script};"), vec![])
                .await
                .expect("the script runs")
        }

        /// Saves a PNG of the page as `dir/name.png`.
        pub async fn screenshot(&self, dir: &Path, name: &str) {
            std::fs::create_dir_all(dir).expect("the screenshots folder");
            let png = self.client.screenshot().await.expect("a screenshot");
            std::fs::write(dir.join(format!("{name}.png")), png).expect("writes the screenshot");
        }

        pub async fn stop(mut self) {
            let _ = self.client.clone().close().await;
            let _ = self.driver.kill();
            let _ = self.driver.wait();
        }
    }
}

/// A plain HTTP sink on 127.0.0.1 that answers 200 to every request and keeps the bodies:
/// a chat service's incoming webhook, for tests that run gantry as a process. It can also
/// answer something else (a 401 challenge, a 500 with a body, a redirect) and keeps each
/// request's head (request line and headers), to see what a caller sent.
pub mod sink {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    #[derive(Debug)]
    pub struct HttpSink {
        pub url: String,
        bodies: Arc<Mutex<Vec<String>>>,
        heads: Arc<Mutex<Vec<String>>>,
    }

    impl HttpSink {
        pub fn start() -> Self {
            Self::start_on("127.0.0.1")
        }

        /// A sink answering 200 on another loopback address (`127.0.0.2`).
        pub fn start_on(ip: &str) -> Self {
            Self::answering(ip, "200 OK", "", "ok")
        }

        /// A sink on `ip` answering `status` (e.g. `401 Unauthorized`) with `headers` (each
        /// ending in `\r\n`) and `body`.
        pub fn answering(ip: &str, status: &str, headers: &str, body: &str) -> Self {
            let listener = TcpListener::bind((ip, 0)).expect("binds a loopback port");
            let url = format!("http://{}", listener.local_addr().expect("bound"));
            let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
            let heads: Arc<Mutex<Vec<String>>> = Arc::default();
            let (kept, kept_heads) = (Arc::clone(&bodies), Arc::clone(&heads));
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
                body.len()
            );
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let mut reader = BufReader::new(stream);
                    let mut length = 0usize;
                    let mut head = String::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                        head.push_str(&line);
                        line.clear();
                    }
                    kept_heads.lock().expect("the heads").push(head);
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_ok() {
                        kept.lock()
                            .expect("the bodies")
                            .push(String::from_utf8_lossy(&body).into_owned());
                    }
                    let _ = reader.get_mut().write_all(answer.as_bytes());
                }
            });
            Self { url, bodies, heads }
        }

        /// The head of every request received so far.
        pub fn heads(&self) -> Vec<String> {
            self.heads.lock().expect("the heads").clone()
        }

        /// Every body received so far.
        pub fn bodies(&self) -> Vec<String> {
            self.bodies.lock().expect("the bodies").clone()
        }

        /// Waits up to `within` for a first body and returns every body so far.
        pub fn wait(&self, within: Duration) -> Vec<String> {
            let until = Instant::now() + within;
            loop {
                let bodies = self.bodies.lock().expect("the bodies").clone();
                if !bodies.is_empty() || Instant::now() > until {
                    return bodies;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
