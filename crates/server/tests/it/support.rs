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
        // The chat services and GitHub of these tests listen on loopback.
        config.outbound.allowed = vec!["127.0.0.0/8".parse().expect("a range")];
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

    /// Registers `acme/<name>` cloned from `git`, public.
    pub async fn add_repo(&self, name: &str, git: &GitRepo) -> gantry_store::Repo {
        self.add_repo_with(name, git, Visibility::Public).await
    }

    pub async fn add_repo_with(
        &self,
        name: &str,
        git: &GitRepo,
        visibility: Visibility,
    ) -> gantry_store::Repo {
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
                visibility: Some(visibility),
                timeout_secs: 600,
                github_token: String::new(),
                fork_policy: "run".into(),
                ssh_key: String::new(),
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
        self.api_as(Some(&self.token), method, path, body).await
    }

    /// An API call with `token` (`None`: anonymous).
    pub async fn api_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self.http.request(method, format!("{}/api{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
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

    /// Whether runner `name` finds no stage to run within 300 ms.
    pub async fn nothing_to_claim(&self, name: &str) -> bool {
        self.runner(name)
            .request(Duration::from_millis(300))
            .await
            .is_none()
    }

    /// Delivers GitHub's push of `sha` to `branch` of `acme/app`; the answer's status.
    pub async fn push_to(&self, branch: &str, sha: &str, delivery: &str) -> u16 {
        let payload = webhook::push("acme/app", branch, sha, "a change");
        self.deliver("push", delivery, &payload)
            .await
            .status()
            .as_u16()
    }

    /// Gives user `login` `role` on `acme/<repo>` (as a server admin sets it).
    pub async fn set_role(&self, repo: &str, login: &str, role: &str) {
        let response = self
            .api(
                reqwest::Method::PUT,
                &format!("/repos/acme/{repo}/roles/{login}"),
                Some(serde_json::json!({ "role": role })),
            )
            .await;
        assert_eq!(response.status(), 200, "sets {login}'s role on {repo}");
    }

    /// Adds user `login` (through the API, as the admin) with a token of theirs.
    pub async fn user_with_token(&self, login: &str) -> String {
        let added = self
            .api(
                reqwest::Method::POST,
                "/users",
                Some(serde_json::json!({ "login": login })),
            )
            .await;
        assert_eq!(added.status(), 201, "adds {login}");
        let created = self
            .api(
                reqwest::Method::POST,
                "/tokens",
                Some(serde_json::json!({ "name": format!("{login}'s laptop"), "user": login })),
            )
            .await;
        assert_eq!(created.status(), 201, "a token for {login}");
        let created: Value = created.json().await.expect("json");
        assert_eq!(created["user"], login);
        created["token"].as_str().expect("the token").to_owned()
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
        self.push_app_with(PIPELINE).await
    }

    /// Registers `acme/app` with `pipeline` as its `.gantry.yml` and pushes it to main.
    pub async fn push_app_with(&self, pipeline: &str) -> (GitRepo, String) {
        let git = GitRepo::new();
        let sha = git.commit(&[(".gantry.yml", pipeline)], "first");
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

    /// Registers runner `name` (restricted to `owners`) and returns its token.
    pub async fn register_runner(&self, name: &str, owners: &[&str]) -> String {
        let created = self
            .api(
                reqwest::Method::POST,
                "/runners/tokens",
                Some(serde_json::json!({"name": name, "owners": owners})),
            )
            .await;
        assert_eq!(created.status(), 201);
        let created: serde_json::Value = created.json().await.expect("json");
        created["token"].as_str().expect("the token").to_owned()
    }

    pub fn runner(&self, name: &str) -> FakeRunner {
        FakeRunner {
            url: self.url.clone(),
            name: name.to_owned(),
            instance: format!("{name}-instance"),
            labels: Default::default(),
            platform: "linux/amd64".into(),
            http: reqwest::Client::new(),
            credential: RUNNER_SECRET.to_owned(),
        }
    }
}

/// The test playing a runner over the protocol.
pub struct FakeRunner {
    url: String,
    pub name: String,
    pub instance: String,
    /// What it offers beside Docker.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `os/arch[/variant]`, as a runner reports it.
    pub platform: String,
    http: reqwest::Client,
    /// What it presents: the shared secret, or a runner's own token.
    pub credential: String,
}

impl FakeRunner {
    pub async fn post(&self, path: &str, body: &impl serde::Serialize) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.credential)
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
            labels: self.labels.clone(),
            platform: self.platform.clone(),
            capacity: 1,
            offer: gantry_proto::Offer {
                docker: true,
                kubernetes: false,
                host: false,
            },
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

    /// Sends `count` log lines from line 1, in batches of `batch`: line `n` is `text(n)`.
    pub async fn log_lines(
        &self,
        assignment: &Assignment,
        step: &str,
        (count, batch): (u64, u64),
        text: impl Fn(u64) -> String,
    ) {
        let mut from = 1;
        while from <= count {
            let texts: Vec<String> = (from..(from + batch).min(count + 1)).map(&text).collect();
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            assert_eq!(self.logs(assignment, step, from, &texts).await, 204);
            from += batch;
        }
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
                    } else if uri.path().ends_with("/deployments") {
                        // GitHub's answer to a new deployment: the deployment, with its id.
                        let created = log
                            .lock()
                            .expect("the log")
                            .iter()
                            .filter(|r| r.path == uri.path())
                            .count();
                        let mut deployment = gantry_test_support::webhook::fixture(
                            "deployment",
                            "payload.json",
                        )["deployment"]
                            .clone();
                        // `created` counts this request too: the first deployment is 1001.
                        deployment["id"] = Value::from(1000 + created);
                        (axum::http::StatusCode::CREATED, axum::Json(deployment)).into_response()
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

/// A fake GitHub of the test's own: the OAuth endpoints (`/login/oauth/...`, the browser
/// comes back as whoever `sign_in_as` named), `/user`, a repository with the caller's
/// `permissions` (`/repos/{owner}/{name}`) and the caller's repositories (`/user/repos`).
/// Its web and API addresses are one: `url`.
pub struct FakeGitHub {
    pub url: String,
    state: std::sync::Arc<std::sync::Mutex<GitHubState>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct GitHubState {
    next_login: String,
    /// (login, "owner/name") → GitHub's `permissions` object.
    permissions: std::collections::HashMap<(String, String), Value>,
    /// Answers 500 to the repository endpoints.
    down: bool,
    /// How often `/repos/{owner}/{name}` was asked.
    repo_reads: usize,
}

/// The account id the fake GitHub gives `login` (stable, and different for each login).
pub fn github_id_of(login: &str) -> i64 {
    login
        .to_lowercase()
        .bytes()
        .fold(1_469_598_103_i64, |h, b| {
            h.wrapping_mul(31).wrapping_add(i64::from(b))
        })
        .abs()
}

/// The token the fake GitHub grants `login`.
pub fn github_token_of(login: &str) -> String {
    format!("gho_{login}")
}

impl FakeGitHub {
    pub const CLIENT_SECRET: &str = "shh";

    pub async fn start() -> Self {
        use axum::extract::{Path, Query};
        use axum::response::{IntoResponse, Redirect};
        use axum::routing::{get, post};
        use std::collections::HashMap;
        let state: std::sync::Arc<std::sync::Mutex<GitHubState>> = Default::default();
        let login_of = |headers: &axum::http::HeaderMap| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer gho_"))
                .map(str::to_owned)
        };
        let (s1, s2, s3) = (state.clone(), state.clone(), state.clone());
        let app = axum::Router::new()
            .route(
                "/login/oauth/authorize",
                get(move |Query(q): Query<HashMap<String, String>>| {
                    let login = s1.lock().expect("state").next_login.clone();
                    async move {
                        Redirect::to(&format!(
                            "{}?code=code-{login}&state={}",
                            q.get("redirect_uri").cloned().unwrap_or_default(),
                            q.get("state").cloned().unwrap_or_default()
                        ))
                    }
                }),
            )
            .route(
                "/login/oauth/access_token",
                post(|axum::Json(body): axum::Json<Value>| async move {
                    match body["code"].as_str().and_then(|c| c.strip_prefix("code-")) {
                        Some(login) if body["client_secret"] == FakeGitHub::CLIENT_SECRET => {
                            axum::Json(serde_json::json!({"access_token": github_token_of(login), "token_type": "bearer"}))
                        }
                        _ => axum::Json(serde_json::json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."})),
                    }
                }),
            )
            .route(
                "/user",
                get(move |headers: axum::http::HeaderMap| async move {
                    match login_of(&headers) {
                        Some(login) => axum::Json(serde_json::json!({"login": login, "id": github_id_of(&login)})).into_response(),
                        None => axum::http::StatusCode::UNAUTHORIZED.into_response(),
                    }
                }),
            )
            .route(
                "/user/repos",
                get(move |headers: axum::http::HeaderMap, Query(q): Query<HashMap<String, String>>| {
                    let state = s2.clone();
                    async move {
                        let Some(login) = login_of(&headers) else {
                            return axum::http::StatusCode::UNAUTHORIZED.into_response();
                        };
                        let state = state.lock().expect("state");
                        if state.down {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
                        }
                        if q.get("page").is_some_and(|p| p != "1") {
                            return axum::Json(Value::Array(vec![])).into_response();
                        }
                        let repos: Vec<Value> = state
                            .permissions
                            .iter()
                            .filter(|((who, _), _)| *who == login)
                            .map(|((_, repo), permissions)| serde_json::json!({"full_name": repo, "permissions": permissions}))
                            .collect();
                        axum::Json(Value::Array(repos)).into_response()
                    }
                }),
            )
            .route(
                "/repos/{owner}/{name}",
                get(move |headers: axum::http::HeaderMap, Path((owner, name)): Path<(String, String)>| {
                    let state = s3.clone();
                    async move {
                        let Some(login) = login_of(&headers) else {
                            return axum::http::StatusCode::UNAUTHORIZED.into_response();
                        };
                        let mut state = state.lock().expect("state");
                        state.repo_reads += 1;
                        if state.down {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
                        }
                        let full_name = format!("{owner}/{name}");
                        match state.permissions.get(&(login, full_name.clone())) {
                            Some(permissions) => axum::Json(serde_json::json!({"full_name": full_name, "permissions": permissions})).into_response(),
                            None => axum::http::StatusCode::NOT_FOUND.into_response(),
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    /// The server configuration that signs in with this GitHub, `admins` by login.
    pub fn configure(&self, config: &mut ServerConfig, admins: &[&str]) {
        config.github_api = self.url.clone();
        config.oauth = Some(gantry_server::oauth::OAuthConfig {
            github_url: self.url.clone(),
            client_id: "client-1".into(),
            client_secret: Self::CLIENT_SECRET.into(),
            admins: admins.iter().map(|a| a.to_string()).collect(),
        });
    }

    /// Who the next sign-in is.
    pub fn sign_in_as(&self, login: &str) {
        self.state.lock().expect("state").next_login = login.to_owned();
    }

    /// `login`'s permission on `repo` ("owner/name"): `admin`, `push`, `pull`, or `none`
    /// (no access: the repository is not found for them).
    pub fn grant(&self, login: &str, repo: &str, permission: &str) {
        let mut state = self.state.lock().expect("state");
        let key = (login.to_owned(), repo.to_owned());
        let level = ["pull", "push", "admin"]
            .iter()
            .position(|p| *p == permission);
        match level {
            Some(level) => {
                state.permissions.insert(
                    key,
                    serde_json::json!({"pull": true, "push": level >= 1, "admin": level >= 2}),
                );
            }
            None => {
                state.permissions.remove(&key);
            }
        }
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().expect("state").down = down;
    }

    pub fn repo_reads(&self) -> usize {
        self.state.lock().expect("state").repo_reads
    }

    /// Signs `login` in through the whole OAuth flow; the session cookie's value (a token).
    pub async fn sign_in(&self, server: &TestServer, login: &str) -> String {
        self.sign_in_as(login);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client");
        let start = http
            .get(format!("{}/login/github", server.url))
            .send()
            .await
            .expect("answers");
        let state = set_cookie(&start, "gantry_oauth_state").expect("a state cookie");
        let to_github = start.headers()["location"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let back = http.get(&to_github).send().await.expect("answers");
        let callback = back.headers()["location"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let done = http
            .get(&callback)
            .header("cookie", format!("gantry_oauth_state={state}"))
            .send()
            .await
            .expect("answers");
        assert!(done.status().is_redirection(), "{}", done.status());
        set_cookie(&done, "gantry_session").expect("a session cookie")
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// The value a response sets for cookie `name`.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix(&format!("{name}="))
                .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
        })
}

/// The CSRF token of the first form on a page.
pub fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form with a CSRF token")
        .to_owned()
}

/// Signs in with the server's admin token through the login form.
pub async fn sign_in(browser: &gantry_test_support::browser::Browser, server: &TestServer) {
    sign_in_with(browser, server, &server.token).await;
}

pub async fn sign_in_with(
    browser: &gantry_test_support::browser::Browser,
    server: &TestServer,
    token: &str,
) {
    browser.open(&format!("{}/login", server.url)).await;
    browser.fill("input[name=token]", token).await;
    browser.click("form.login button").await;
    // The login page of a browser already signed in shows a user too: wait for the page the
    // form leads to.
    browser
        .until(
            "the signed-in user",
            "location.pathname !== '/login' && document.querySelector('.who') !== null",
        )
        .await;
}

/// Where browser tests save their screenshots: `$CARGO_TARGET_TMPDIR/screenshots/`.
pub fn shots() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

/// A script that is true when log line `n` is shown inside the log's box.
pub fn line_in_view(n: u64) -> String {
    format!(
        "(function(){{ const e = document.getElementById('L{n}'); if (!e) return false; const r = e.getBoundingClientRect(); const l = document.getElementById('log').getBoundingClientRect(); return r.top >= l.top && r.bottom <= l.bottom; }})()"
    )
}

impl TestServer {
    /// `acme/app` pushed, its stage claimed by runner `r1`, and its `test` step running.
    pub async fn running_step(&self) -> (FakeRunner, Assignment) {
        let (_git, _) = self.push_app().await;
        let (runner, assignment) = self.claim("r1").await;
        runner
            .step(&assignment, "test", StepState::Running, None)
            .await;
        (runner, assignment)
    }
}
