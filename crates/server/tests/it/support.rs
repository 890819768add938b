//! A server on port 0 over a fresh database, and the HTTP calls tests make to it.

use std::time::Duration;

use gantry_proto::{
    Assignment, Heartbeat, LeaseStatus, LogBatch, LogLine, StageDone, StepState, StepUpdate,
    WorkRequest,
};
use gantry_server::{Server, ServerConfig};
use gantry_store::{NewRepo, Store, Visibility};
use gantry_test_support::{GitRepo, TempDir, webhook};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "webhook-secret";
pub const RUNNER_SECRET: &str = "runner-secret-for-tests";

/// Runs an async test once per database: `async fn case(db: &str)` gets a database URL.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let dir = gantry_test_support::TempDir::new(stringify!($name));
                    super::cases::$name(&dir.path().join("gantry.db").to_string_lossy()).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let url = gantry_test_support::postgres_database().await;
                    super::cases::$name(&url).await;
                }
            }
        )*
    };
}

pub struct TestServer {
    pub url: String,
    pub store: Store,
    pub token: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

impl TestServer {
    pub async fn start(database: &str) -> Self {
        Self::start_with(database, |_| {}).await
    }

    pub async fn start_with(database: &str, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = TempDir::new("server");
        let store = Store::open(database).await.expect("opens the database");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let mut config =
            ServerConfig::new(dir.path().to_owned(), url.clone(), RUNNER_SECRET.to_owned());
        tweak(&mut config);
        let server = Server::new(store.clone(), config);
        let token = server
            .ensure_admin_token()
            .await
            .expect("token")
            .unwrap_or_default();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(server.run(listener, async move { stop.cancelled().await }));
        Self {
            url,
            store,
            token,
            http: reqwest::Client::new(),
            shutdown,
            task: Some(task),
            _dir: dir,
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran");
        }
    }

    /// Registers `acme/<name>` cloned from `git`.
    pub async fn add_repo(&self, name: &str, git: &GitRepo) -> gantry_store::Repo {
        self.store
            .create_repo(&NewRepo {
                owner: "acme".into(),
                name: name.into(),
                clone_url: git.url(),
                link: format!("https://github.com/acme/{name}"),
                webhook_secret: SECRET.into(),
                config_path: String::new(),
                default_branch: "main".into(),
                trusted: false,
                visibility: Visibility::Public,
                timeout_secs: 600,
                github_token: String::new(),
                fork_policy: "run".into(),
            })
            .await
            .expect("adds the repository")
    }

    /// Posts a delivery signed with `SECRET`.
    pub async fn deliver(&self, event: &str, delivery: &str, payload: &Value) -> reqwest::Response {
        let body = serde_json::to_vec(payload).expect("json");
        self.deliver_raw(
            event,
            delivery,
            body.clone(),
            Some(&webhook::signature(SECRET, &body)),
        )
        .await
    }

    pub async fn deliver_raw(
        &self,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
        signature: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/hook/github", self.url))
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request.send().await.expect("the server answers")
    }

    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}/api{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("the server answers")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.api(reqwest::Method::GET, path, None).await;
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    /// Waits until build `number` of `acme/<repo>` exists (deliveries are processed in the
    /// background) and returns it.
    pub async fn wait_build(&self, repo: &str, number: u64) -> Value {
        for _ in 0..200 {
            let response = self
                .api(
                    reqwest::Method::GET,
                    &format!("/repos/acme/{repo}/builds/{number}"),
                    None,
                )
                .await;
            if response.status().is_success() {
                return response.json().await.expect("json");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("build #{number} of acme/{repo} never appeared");
    }

    /// Waits until build `number` has a final status and returns it.
    pub async fn wait_finished(&self, repo: &str, number: u64) -> Value {
        for _ in 0..400 {
            let build = self.wait_build(repo, number).await;
            if !build["finished_at"].is_null() {
                return build;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("build #{number} of acme/{repo} never finished");
    }

    /// Registers `acme/app` with the test pipeline and pushes it once (delivery `d-1`).
    pub async fn push_app(&self) -> (GitRepo, String) {
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", PIPELINE)], "first");
        self.add_repo("app", &git).await;
        let response = self
            .deliver(
                "push",
                "d-1",
                &webhook::push("acme/app", "main", &sha, "first"),
            )
            .await;
        assert_eq!(response.status(), 202);
        (git, sha)
    }

    /// A runner named `name` that has claimed the next stage.
    pub async fn claim(&self, name: &str) -> (FakeRunner, Assignment) {
        let runner = self.runner(name);
        let assignment = runner
            .request(Duration::from_secs(10))
            .await
            .expect("a stage is queued");
        (runner, assignment)
    }

    pub fn runner(&self, name: &str) -> FakeRunner {
        FakeRunner {
            url: self.url.clone(),
            name: name.to_owned(),
            instance: format!("{name}-instance"),
            http: reqwest::Client::new(),
        }
    }
}

/// The test playing a runner over the protocol.
pub struct FakeRunner {
    url: String,
    pub name: String,
    pub instance: String,
    http: reqwest::Client,
}

impl FakeRunner {
    pub async fn post(&self, path: &str, body: &impl serde::Serialize) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(RUNNER_SECRET)
            .json(body)
            .send()
            .await
            .expect("the server answers")
    }

    /// Asks for work, waiting at most `wait`.
    pub async fn request(&self, wait: Duration) -> Option<Assignment> {
        let request = WorkRequest {
            runner: self.name.clone(),
            instance: self.instance.clone(),
            labels: Default::default(),
            platform: "linux/amd64".into(),
            capacity: 1,
            wait_ms: wait.as_millis() as u64,
        };
        let response = self.post(gantry_proto::path::REQUEST, &request).await;
        match response.status().as_u16() {
            200 => Some(response.json().await.expect("an assignment")),
            204 => None,
            other => panic!(
                "request for work answered {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }

    pub async fn step(
        &self,
        assignment: &Assignment,
        step: &str,
        state: StepState,
        exit: Option<i32>,
    ) -> u16 {
        let update = StepUpdate {
            epoch: assignment.lease.epoch,
            step: step.into(),
            state,
            exit_code: exit,
            started_at: Some(chrono::Utc::now()),
            finished_at: (state != StepState::Running).then(chrono::Utc::now),
            error: None,
        };
        self.post(&gantry_proto::path::step(assignment.lease.stage), &update)
            .await
            .status()
            .as_u16()
    }

    pub async fn logs(
        &self,
        assignment: &Assignment,
        step: &str,
        from: u64,
        texts: &[&str],
    ) -> u16 {
        let batch = LogBatch {
            epoch: assignment.lease.epoch,
            step: step.into(),
            lines: texts
                .iter()
                .enumerate()
                .map(|(i, t)| LogLine {
                    number: from + i as u64,
                    elapsed_ms: i as u64,
                    text: t.to_string(),
                })
                .collect(),
        };
        self.post(&gantry_proto::path::logs(assignment.lease.stage), &batch)
            .await
            .status()
            .as_u16()
    }

    pub async fn watch(&self, assignment: &Assignment) -> LeaseStatus {
        let response = self
            .post(
                &gantry_proto::path::watch(assignment.lease.stage),
                &Heartbeat {
                    epoch: assignment.lease.epoch,
                },
            )
            .await;
        assert!(
            response.status().is_success(),
            "watch: {}",
            response.status()
        );
        response.json().await.expect("a lease status")
    }

    pub async fn done(&self, assignment: &Assignment, state: StepState) -> u16 {
        let done = StageDone {
            epoch: assignment.lease.epoch,
            state,
            error: None,
            steps: vec![],
        };
        self.post(&gantry_proto::path::done(assignment.lease.stage), &done)
            .await
            .status()
            .as_u16()
    }

    /// Runs every step of the assignment as passing, with one log line each.
    pub async fn pass(&self, assignment: &Assignment) {
        for step in &assignment.stage.steps {
            if !step.run {
                continue;
            }
            assert_eq!(
                self.step(assignment, &step.name, StepState::Running, None)
                    .await,
                204
            );
            assert_eq!(
                self.logs(
                    assignment,
                    &step.name,
                    1,
                    &[&format!("running {}", step.name)]
                )
                .await,
                204
            );
            assert_eq!(
                self.step(assignment, &step.name, StepState::Success, Some(0))
                    .await,
                204
            );
        }
        assert_eq!(self.done(assignment, StepState::Success).await, 204);
    }
}

pub const PIPELINE: &str = "\
kind: pipeline
name: ci
steps:
  - name: test
    image: busybox
    commands: [echo test]
";

/// A chat service or GitHub API of the test's own on 127.0.0.1: records every request, and
/// answers 500 to the first `fail_first` ones.
pub struct Receiver {
    pub url: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    pub fail_first: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Answers this many requests as GitHub does when the rate limit is spent (403,
    /// `x-ratelimit-remaining: 0`, a reset one second ahead).
    pub rate_limit_first: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

/// A loopback port held by a socket that is bound but not listening: connections to it are
/// refused (a service that is down), and no other test can take the port meanwhile.
pub struct DownService(tokio::net::TcpSocket);

impl DownService {
    pub fn reserve() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("binds a loopback port");
        Self(socket)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.0.local_addr().expect("bound"))
    }

    /// The service comes back on the same port.
    pub fn come_back(self) -> Receiver {
        Receiver::serve(self.0.listen(128).expect("listens"))
    }
}

impl Receiver {
    pub async fn start() -> Self {
        Self::serve(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("binds"),
        )
    }

    fn serve(listener: tokio::net::TcpListener) -> Self {
        use std::sync::atomic::Ordering;
        let received: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = Default::default();
        let fail_first = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let rate_limit_first = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (log, fail, limit) = (
            received.clone(),
            fail_first.clone(),
            rate_limit_first.clone(),
        );
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (log, fail, limit) = (log.clone(), fail.clone(), limit.clone());
                async move {
                    use axum::response::IntoResponse;
                    let limited = limit
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let failing = fail
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    log.lock().expect("the log").push(Received {
                        path: uri.path().to_owned(),
                        authorization: headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    if limited {
                        let reset = (std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0)
                            + 1)
                        .to_string();
                        (
                            axum::http::StatusCode::FORBIDDEN,
                            [
                                ("x-ratelimit-remaining", "0".to_owned()),
                                ("x-ratelimit-reset", reset),
                            ],
                            "API rate limit exceeded",
                        )
                            .into_response()
                    } else if failing {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    } else {
                        axum::http::StatusCode::OK.into_response()
                    }
                }
            },
        );
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            received,
            fail_first,
            rate_limit_first,
            task,
        }
    }

    /// What arrived at `path` so far.
    pub fn at(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .expect("the log")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `n` requests arrived at `path`.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        for _ in 0..400 {
            let got = self.at(path);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{n} request(s) never arrived at {path}: {:?}",
            self.received.lock().map(|r| r.clone())
        );
    }

    pub fn stop(self) {
        self.task.abort();
    }
}
