//! The runner's side of the runner protocol (`gantry_proto`): ask the server for a stage
//! (long-poll), run it on the executor, and send back step states, log batches, heartbeats
//! and the stage's end. The embedded runner of `gantry server` and a remote `gantry runner`
//! are the same code; only the URL differs.
//!
//! A lease the server takes back (409: the stage was reaped, or handed to another runner)
//! cancels the stage here at once: its work would be refused anyway.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use gantry_pipeline::PlanStep;
use gantry_proto::{
    Assignment, Heartbeat, Lease, LeaseStatus, LogBatch, Offer, Placement, StageDone, StepState,
    StepUpdate, WorkRequest,
};
use reqwest::StatusCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::backend::Backend;
use crate::clone::CloneSource;
use crate::executor::{
    Executor, ExecutorConfig, Job, Reporter, StageResult, StepResult, WorkspaceSource,
};
use crate::logs::LogLine;

/// How a runner presents itself and where it takes work from.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:8000`.
    pub server: String,
    pub secret: String,
    /// Stable across restarts.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Stages run at once.
    pub capacity: u32,
    /// `os/arch`.
    pub platform: String,
    pub executor: ExecutorConfig,
    /// A token kept in the runner's data folder: its instances are `LINEAGE.RANDOM`, so that
    /// a restart from the folder is known as one (`gantry_proto::same_lineage`).
    pub lineage: Option<String>,
}

impl RemoteConfig {
    /// This machine's `os/arch` in Docker's terms (`linux/amd64`).
    pub fn host_platform() -> String {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "arm" => "arm",
            other => other,
        };
        format!("{}/{arch}", std::env::consts::OS)
    }

    /// The platform a runner offers: its `platform` label (`os/arch[/variant]`, as
    /// Woodpecker's agents take it; taken out of the labels) or else this machine's.
    pub fn platform_from_labels(labels: &mut BTreeMap<String, String>) -> String {
        labels
            .remove("platform")
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(Self::host_platform)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the server at {url} could not be reached: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the server refused the runner: {0}")]
    Refused(String),
    #[error("the lease was taken back by the server")]
    LeaseLost,
    /// Another live runner has this runner's name.
    #[error("{0}")]
    NameTaken(String),
    #[error("the server answered {status}: {body}")]
    Server { status: StatusCode, body: String },
}

/// Takes stages from a server and runs them until shut down.
pub struct RemoteRunner {
    config: RemoteConfig,
    handle: Handle,
    instance: String,
    backends: RunnerBackends,
}

/// Where a runner can run stages: each backend it offers.
#[derive(Clone, Default)]
pub struct RunnerBackends {
    pub docker: Option<Arc<dyn Backend>>,
    pub kubernetes: Option<Arc<dyn Backend>>,
    /// Host processes, only when the runner's operator declared them (`--host-pipelines`).
    pub host: Option<Arc<dyn Backend>>,
}

impl std::fmt::Debug for RunnerBackends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerBackends")
            .field("docker", &self.docker.is_some())
            .field("kubernetes", &self.kubernetes.is_some())
            .field("host", &self.host.is_some())
            .finish()
    }
}

impl std::fmt::Debug for RemoteRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRunner")
            .field("server", &self.config.server)
            .field("name", &self.config.name)
            .field("capacity", &self.config.capacity)
            .field("offer", &self.offer())
            .finish()
    }
}

fn instance_id() -> String {
    crate::random_hex(8)
}

impl RemoteRunner {
    /// A runner that offers what `backends` has. It asks for, and runs, only what
    /// [`gantry_proto::place`] allows with that offer.
    pub fn new(config: RemoteConfig, backends: RunnerBackends) -> Self {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        if config.server.starts_with("http://") {
            // Plain HTTP (the embedded runner, a private network): loading the system's
            // root certificates would only cost memory.
            builder = builder.tls_certs_only([]);
        }
        let client = builder.build().expect("a client with default TLS builds");
        let server = config.server.trim_end_matches('/').to_owned();
        let instance = match &config.lineage {
            Some(lineage) => format!("{lineage}.{}", instance_id()),
            None => instance_id(),
        };
        Self {
            handle: Handle {
                server: server.clone(),
                secret: config.secret.clone(),
                client,
            },
            config: RemoteConfig { server, ..config },
            instance,
            backends,
        }
    }

    pub fn offer(&self) -> Offer {
        Offer {
            docker: self.backends.docker.is_some(),
            kubernetes: self.backends.kubernetes.is_some(),
            host: self.backends.host.is_some(),
        }
    }

    /// The backend for an assigned stage. The server already chose it by the same rule; the
    /// runner checks again, so that no server mistake runs an untrusted stage on this host.
    fn backend_for(&self, assignment: &Assignment) -> Result<Arc<dyn Backend>, String> {
        let stage = &assignment.stage;
        // The second line of defence: the compiler refused these already; a plan that breaks
        // one anyway (a server's mistake, or a forged assignment) creates nothing here.
        if !assignment.trusted {
            let broken = gantry_pipeline::trust::check_stage(stage);
            if !broken.is_empty() {
                let rules: Vec<String> = broken
                    .iter()
                    .map(|v| format!("rule {}: {}", v.rule.name(), v.message(&stage.name)))
                    .collect();
                return Err(format!(
                    "runner {} refused stage `{}` of an untrusted repository before creating anything: {}",
                    self.config.name,
                    stage.name,
                    rules.join("; ")
                ));
            }
        }
        let placed = gantry_proto::place(self.offer(), stage.backend, assignment.trusted);
        let backends = &self.backends;
        let chosen = match placed {
            Ok(Placement::Docker) => backends.docker.as_ref(),
            Ok(Placement::Kubernetes) => backends.kubernetes.as_ref(),
            Ok(Placement::Host) => backends.host.as_ref(),
            Err(refusal) => {
                return Err(format!(
                    "runner {} refused pipeline `{}`: {refusal}",
                    self.config.name, stage.name
                ));
            }
        };
        chosen
            .map(Arc::clone)
            .ok_or_else(|| "the runner has no backend for its own offer".to_owned())
    }

    /// Presents the runner to the server before it touches anything: refused (`Err`) while
    /// another live runner has its name. Retried while the server cannot be reached, until
    /// `stop` fires.
    pub async fn introduce(&self, stop: &CancellationToken) -> Result<(), RemoteError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            let hello = self.work_request(Duration::ZERO);
            let sent = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                sent = self.handle.post(gantry_proto::path::HELLO, &hello, Duration::from_secs(30)) => sent,
            };
            match sent {
                Ok(_) => return Ok(()),
                Err(e @ (RemoteError::NameTaken(_) | RemoteError::Refused(_))) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "presenting the runner to the server failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Runs `capacity` workers until `shutdown` fires; stages already running finish
    /// (cancel them with `abort`). Ends early, with the reason, when the server says another
    /// live runner has this one's name.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        abort: CancellationToken,
    ) -> Result<(), RemoteError> {
        let this = Arc::new(self);
        let tasks = TaskTracker::new();
        let stopping = shutdown.child_token();
        let refused = Arc::new(std::sync::Mutex::new(None));
        for slot in 0..this.config.capacity.max(1) {
            let (this, stopping, abort, refused) = (
                Arc::clone(&this),
                stopping.clone(),
                abort.clone(),
                Arc::clone(&refused),
            );
            tasks.spawn(async move {
                if let Err(e) = this.work(slot, stopping.clone(), abort).await {
                    tracing::error!(error = %e, "the server refused this runner: it stops");
                    if let Ok(mut refused) = refused.lock() {
                        refused.get_or_insert(e);
                    }
                    stopping.cancel();
                }
            });
        }
        tasks.close();
        tasks.wait().await;
        let refused = refused.lock().ok().and_then(|mut r| r.take());
        refused.map_or(Ok(()), Err)
    }

    async fn work(
        &self,
        slot: u32,
        shutdown: CancellationToken,
        abort: CancellationToken,
    ) -> Result<(), RemoteError> {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let polled = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                polled = self.poll() => polled,
            };
            match polled {
                Ok(Some(assignment)) => {
                    backoff = Duration::from_millis(200);
                    // Every line logged about this stage, here and in the executor, names it.
                    let span = tracing::info_span!(
                        "stage",
                        stage.id = assignment.lease.stage,
                        stage.name = %assignment.stage.name
                    );
                    self.run_assignment(assignment, abort.child_token())
                        .instrument(span)
                        .await;
                }
                Ok(None) => backoff = Duration::from_millis(200),
                Err(e @ (RemoteError::NameTaken(_) | RemoteError::Refused(_))) => return Err(e),
                Err(e) => {
                    tracing::warn!(slot, error = %e, "asking the server for work failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        Ok(())
    }

    fn work_request(&self, wait: Duration) -> WorkRequest {
        WorkRequest {
            runner: self.config.name.clone(),
            instance: self.instance.clone(),
            labels: self.config.labels.clone(),
            platform: self.config.platform.clone(),
            capacity: self.config.capacity,
            offer: self.offer(),
            wait_ms: wait.as_millis() as u64,
        }
    }

    async fn poll(&self) -> Result<Option<Assignment>, RemoteError> {
        let wait = Duration::from_secs(25);
        let request = self.work_request(wait);
        let response = self
            .handle
            .post(
                gantry_proto::path::REQUEST,
                &request,
                wait + Duration::from_secs(10),
            )
            .await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let url = self.config.server.clone();
        response
            .json::<Assignment>()
            .await
            .map(Some)
            .map_err(|source| RemoteError::Unreachable { url, source })
    }

    async fn run_assignment(&self, assignment: Assignment, cancel: CancellationToken) {
        let lease = assignment.lease;
        tracing::info!(stage.id = lease.stage, epoch = lease.epoch, stage = %assignment.stage.name, "running a stage");
        // Confirm the stage before anything runs: an unconfirmed lease that lapses goes back
        // to the queue, a confirmed one errors, so no step ever runs twice.
        let confirm = Heartbeat { epoch: lease.epoch };
        if let Err(e) = self
            .handle
            .post_reliably(&gantry_proto::path::heartbeat(lease.stage), &confirm)
            .await
        {
            tracing::warn!(stage.id = lease.stage, error = %e, "the stage was taken back before it started");
            return;
        }
        let lost = Arc::new(AtomicBool::new(false));
        let (reports, receiver) = mpsc::unbounded_channel();
        let sender = tokio::spawn(send_reports(
            self.handle.clone(),
            lease,
            receiver,
            cancel.clone(),
            Arc::clone(&lost),
        ));
        let keepalive = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            self.handle.clone(),
            lease,
            Duration::from_millis(assignment.heartbeat_ms.max(100)),
            cancel.clone(),
            keepalive.clone(),
            Arc::clone(&lost),
        ));
        let watcher = tokio::spawn(watch(
            self.handle.clone(),
            lease,
            cancel.clone(),
            keepalive.clone(),
        ));

        let backend = match self.backend_for(&assignment) {
            Ok(backend) => backend,
            Err(reason) => {
                tracing::error!(stage.id = lease.stage, %reason, "refusing a stage");
                drop(reports);
                let _ = sender.await;
                let now = Utc::now();
                let refused = StageResult {
                    status: StepState::Error,
                    error: Some(reason),
                    steps: Vec::new(),
                    started_at: now,
                    finished_at: now,
                };
                if !lost.load(Ordering::SeqCst) {
                    self.report_done(lease, &refused).await;
                }
                keepalive.cancel();
                let _ = heartbeat.await;
                watcher.abort();
                return;
            }
        };
        let workspace = match assignment.clone {
            Some(spec) => WorkspaceSource::Clone(CloneSource {
                spec,
                credential: assignment.clone_credential,
            }),
            None => WorkspaceSource::Empty,
        };
        let job = Job {
            // The server's job id is unique in its database only: two installations (or two
            // runners) on one Docker engine must never share a name, nor remove by a label,
            // what the other made.
            id: format!("{}-{}", self.config.name, assignment.job_id),
            stage: assignment.stage,
            secrets: assignment.secrets,
            withheld: assignment.withheld_secrets,
            workspace,
            netrc: assignment.netrc,
            registries: assignment.registries,
        };
        let reporter = Arc::new(RemoteReporter { reports });
        let result = Executor::new(backend, self.config.executor.clone())
            .run(job, reporter, cancel.clone())
            .await;
        // Every log line and step state goes out before the stage's end.
        let _ = sender.await;
        if !lost.load(Ordering::SeqCst) {
            self.report_done(lease, &result).await;
        }
        keepalive.cancel();
        let _ = heartbeat.await;
        watcher.abort();
        tracing::info!(stage.id = lease.stage, status = ?result.status, "stage ended");
    }

    /// Reports the stage's end, retrying while the server is unreachable (it may be
    /// restarting) for as long as the lease could still be held.
    async fn report_done(&self, lease: Lease, result: &StageResult) {
        let done = StageDone {
            epoch: lease.epoch,
            state: result.status,
            error: result.error.clone(),
            steps: result.steps.iter().map(|s| update_of(lease, s)).collect(),
        };
        let mut delay = Duration::from_millis(100);
        for _ in 0..40 {
            match self
                .handle
                .post(
                    &gantry_proto::path::done(lease.stage),
                    &done,
                    Duration::from_secs(30),
                )
                .await
            {
                Ok(_) => return,
                Err(RemoteError::LeaseLost) => {
                    tracing::warn!(
                        stage.id = lease.stage,
                        "the server had already taken the stage back"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(stage.id = lease.stage, error = %e, "reporting the stage's end failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
        tracing::error!(
            stage.id = lease.stage,
            "gave up reporting the stage's end; the server's reaper will end it"
        );
    }
}

/// What the background tasks of one stage need to talk to the server.
#[derive(Clone)]
struct Handle {
    server: String,
    secret: String,
    client: reqwest::Client,
}

impl Handle {
    async fn post<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
        timeout: Duration,
    ) -> Result<reqwest::Response, RemoteError> {
        let url = format!("{}{path}", self.server);
        let response = self
            .client
            .post(&url)
            .bearer_auth(&self.secret)
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|source| RemoteError::Unreachable { url, source })?;
        match response.status() {
            s if s.is_success() => Ok(response),
            StatusCode::CONFLICT
                if path == gantry_proto::path::REQUEST || path == gantry_proto::path::HELLO =>
            {
                Err(RemoteError::NameTaken(
                    response.text().await.unwrap_or_default(),
                ))
            }
            StatusCode::CONFLICT => Err(RemoteError::LeaseLost),
            // A missing, wrong or revoked token, or one of another runner's name: trying
            // again changes nothing.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(RemoteError::Refused(
                response.text().await.unwrap_or_default(),
            )),
            status => Err(RemoteError::Server {
                status,
                body: response.text().await.unwrap_or_default(),
            }),
        }
    }

    /// Posts until it is accepted, the lease is lost, or the request is plainly wrong.
    async fn post_reliably<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<(), RemoteError> {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.post(path, body, Duration::from_secs(30)).await {
                Ok(_) => return Ok(()),
                Err(RemoteError::LeaseLost) => return Err(RemoteError::LeaseLost),
                Err(RemoteError::Server { status, body }) if status.is_client_error() => {
                    tracing::warn!(%status, %body, path, "the server refused a report");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, path, "a report failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

enum Report {
    Step(StepUpdate),
    Line(String, LogLine),
}

struct RemoteReporter {
    reports: mpsc::UnboundedSender<Report>,
}

impl Reporter for RemoteReporter {
    fn step_started(&self, step: &PlanStep) {
        let _ = self.reports.send(Report::Step(StepUpdate {
            epoch: 0,
            step: step.name.clone(),
            state: StepState::Running,
            exit_code: None,
            started_at: Some(Utc::now()),
            finished_at: None,
            error: None,
        }));
    }

    fn log(&self, step: &str, line: &LogLine) {
        let _ = self
            .reports
            .send(Report::Line(step.to_owned(), line.clone()));
    }

    fn step_finished(&self, result: &StepResult) {
        let _ = self.reports.send(Report::Step(update_of(
            Lease { stage: 0, epoch: 0 },
            result,
        )));
    }
}

fn update_of(lease: Lease, result: &StepResult) -> StepUpdate {
    StepUpdate {
        epoch: lease.epoch,
        step: result.name.clone(),
        state: result.status,
        exit_code: result.exit_code,
        started_at: result.started_at,
        finished_at: result.finished_at,
        error: result.error.clone(),
    }
}

/// Most lines a batch carries, and how long a line may wait for company.
const BATCH_LINES: usize = 1000;
const BATCH_WAIT: Duration = Duration::from_millis(20);

/// Sends reports in order, batching consecutive lines of one step. Ends when the reporter
/// is dropped and everything is sent, or when the lease is lost (which cancels the stage).
async fn send_reports(
    handle: Handle,
    lease: Lease,
    mut receiver: mpsc::UnboundedReceiver<Report>,
    cancel: CancellationToken,
    lost: Arc<AtomicBool>,
) {
    let mut batch: Option<LogBatch> = None;
    let flush = |batch: &mut Option<LogBatch>| {
        let taken = batch.take();
        let handle = handle.clone();
        async move {
            match taken {
                Some(b) if !b.lines.is_empty() => {
                    handle
                        .post_reliably(&gantry_proto::path::logs(lease.stage), &b)
                        .await
                }
                _ => Ok(()),
            }
        }
    };
    loop {
        let next = if batch.is_some() {
            match tokio::time::timeout(BATCH_WAIT, receiver.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    if flush(&mut batch).await.is_err() {
                        break;
                    }
                    continue;
                }
            }
        } else {
            receiver.recv().await
        };
        let outcome = match next {
            None => {
                let _ = flush(&mut batch).await;
                return;
            }
            Some(Report::Line(step, line)) => {
                let line = gantry_proto::LogLine {
                    number: line.number,
                    elapsed_ms: line.elapsed_ms,
                    text: line.text,
                };
                match &mut batch {
                    Some(b) if b.step == step && b.lines.len() < BATCH_LINES => {
                        b.lines.push(line);
                        Ok(())
                    }
                    _ => {
                        let sent = flush(&mut batch).await;
                        batch = Some(LogBatch {
                            epoch: lease.epoch,
                            step,
                            lines: vec![line],
                        });
                        sent
                    }
                }
            }
            Some(Report::Step(mut update)) => {
                update.epoch = lease.epoch;
                match flush(&mut batch).await {
                    Ok(()) => {
                        handle
                            .post_reliably(&gantry_proto::path::step(lease.stage), &update)
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        if outcome.is_err() {
            break;
        }
    }
    // The lease is gone: stop the stage, and drain what is left unsent.
    lost.store(true, Ordering::SeqCst);
    cancel.cancel();
    while receiver.recv().await.is_some() {}
}

async fn heartbeat(
    handle: Handle,
    lease: Lease,
    every: Duration,
    cancel: CancellationToken,
    stop: CancellationToken,
    lost: Arc<AtomicBool>,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let beat = Heartbeat { epoch: lease.epoch };
        match handle
            .post(
                &gantry_proto::path::heartbeat(lease.stage),
                &beat,
                every * 2,
            )
            .await
        {
            Ok(response) => {
                if let Ok(status) = response.json::<LeaseStatus>().await
                    && status.cancelled
                {
                    cancel.cancel();
                }
            }
            Err(RemoteError::LeaseLost) => {
                tracing::warn!(
                    stage.id = lease.stage,
                    "the server took the lease back; stopping the stage"
                );
                lost.store(true, Ordering::SeqCst);
                cancel.cancel();
                return;
            }
            Err(e) => tracing::warn!(stage.id = lease.stage, error = %e, "a heartbeat failed"),
        }
    }
}

/// Holds a watch open so a cancellation arrives at once, not at the next heartbeat.
async fn watch(handle: Handle, lease: Lease, cancel: CancellationToken, stop: CancellationToken) {
    let beat = Heartbeat { epoch: lease.epoch };
    while !stop.is_cancelled() && !cancel.is_cancelled() {
        match handle
            .post(
                &gantry_proto::path::watch(lease.stage),
                &beat,
                Duration::from_secs(45),
            )
            .await
        {
            Ok(response) => {
                if let Ok(status) = response.json::<LeaseStatus>().await
                    && status.cancelled
                {
                    cancel.cancel();
                    return;
                }
            }
            Err(RemoteError::LeaseLost) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
