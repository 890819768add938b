//! gantry's HTTP server: the GitHub webhook receiver (`hooks`), the trigger from a delivery
//! to a stored build with queued stages (`trigger`, `git`), the runner protocol (`rpc`), the
//! JSON API (`api`), live logs (`live`), who may do what (`access`) and the lease reaper. One entry point:
//! [`Server::run`] with a listener and a shutdown future; signals belong to the binary.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use gantry_store::{Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod access;
mod api;
mod auth;
pub mod clock;
mod credentials;
mod error;
pub mod git;
pub mod github;
pub mod github_app;
mod hooks;
pub mod human;
mod live;
mod metrics;
mod notify;
pub mod oauth;
mod ops;
pub mod outbound;
mod retention;
mod rpc;
mod schedules;
pub mod secrets;
mod signing;
mod trigger;
mod views;
mod waiting;
mod web;

pub use auth::random_secret;
pub use error::OpError;
pub use retention::Retention;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Holds the SQLite database (when used) and the git caches.
    pub data_dir: PathBuf,
    /// The public base URL, used in links (`CI_BUILD_LINK`, commit statuses, chat).
    pub server_url: String,
    /// The shared secret runners present.
    pub runner_secret: String,
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// How often runners are asked to heartbeat (well under `lease`).
    pub heartbeat: Duration,
    /// How often expired leases are looked for.
    pub reap_every: Duration,
    /// How long a runner's request for work is held open when there is none.
    pub max_poll: Duration,
    /// GitHub's API (GitHub Enterprise: `https://HOST/api/v3`).
    pub github_api: String,
    /// GitHub's web address (`--github-url`): the only host the server's own token is ever
    /// sent to by git.
    pub github_url: String,
    /// For commit statuses of repositories without a token of their own, and for fetches
    /// from `github_url`; never given to steps.
    pub github_token: Option<String>,
    /// Mints the tokens steps get, each restricted to its repository.
    pub github_app: Option<Arc<github_app::GitHubApp>>,
    /// Which addresses chat and webhook targets may reach.
    pub outbound: outbound::OutboundPolicy,
    /// The first retry of a failed notification; each next one waits twice as long.
    pub notify_retry: Duration,
    /// Seals and opens secrets at rest.
    pub secret_key: secrets::SecretKey,
    /// Sign-in with GitHub, when configured.
    pub oauth: Option<oauth::OAuthConfig>,
    /// How long a user's role read from GitHub is trusted before it is read again.
    pub role_ttl: Duration,
    /// OpenSSH `known_hosts` lines: the host keys an SSH git server may present (GitHub's,
    /// plus the operator's `--ssh-known-hosts`).
    pub ssh_known_hosts: String,
    /// When set, `/metrics` answers only requests bearing it.
    pub metrics_token: Option<String>,
    /// What schedules (and retention) go by.
    pub clock: clock::Clock,
    /// What old builds, logs, deliveries and messages are kept.
    pub retention: retention::Retention,
    /// How often schedules are looked at when none is due sooner (a test with a manual
    /// clock sets it short).
    pub schedule_poll: Duration,
    /// Lock names shared by every owner's repositories (`--global-locks`); any other lock
    /// is its owner's alone.
    pub global_locks: Vec<String>,
    /// The longest a pipeline's compilation may take before its build errors.
    pub compile_limit: Duration,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf, server_url: String, runner_secret: String) -> Self {
        Self {
            data_dir,
            server_url: server_url.trim_end_matches('/').to_owned(),
            runner_secret,
            lease: Duration::from_secs(15),
            heartbeat: Duration::from_secs(4),
            reap_every: Duration::from_secs(2),
            max_poll: Duration::from_secs(30),
            github_api: "https://api.github.com".to_owned(),
            github_url: "https://github.com".to_owned(),
            github_token: None,
            github_app: None,
            outbound: outbound::OutboundPolicy::default(),
            notify_retry: Duration::from_secs(2),
            // The binary sets the configured key; a fresh one suits a server that starts
            // on a database without secrets.
            secret_key: secrets::SecretKey::generate().0,
            oauth: None,
            role_ttl: Duration::from_secs(600),
            ssh_known_hosts: gantry_proto::ssh::GITHUB_HOST_KEYS.to_owned(),
            metrics_token: None,
            clock: clock::Clock::system(),
            retention: retention::Retention::default(),
            schedule_poll: Duration::from_secs(15),
            global_locks: Vec::new(),
            compile_limit: Duration::from_secs(30),
        }
    }
}

/// What a user may do to a build besides restarting it (API and pages alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BuildAction {
    Cancel,
    Approve,
    Decline,
}

impl BuildAction {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "cancel" => Some(BuildAction::Cancel),
            "approve" => Some(BuildAction::Approve),
            "decline" => Some(BuildAction::Decline),
            _ => None,
        }
    }

    /// Applies it; false when the build was not in a state it applies to.
    pub(crate) async fn apply(self, state: &AppState, build_id: i64) -> Result<bool, StoreError> {
        let done = match self {
            BuildAction::Cancel => state.store.cancel_build(build_id).await?,
            BuildAction::Approve => state.store.approve_build(build_id).await?,
            BuildAction::Decline => state.store.decline_build(build_id).await?,
        };
        if done {
            state.notifications.notify_one();
        }
        Ok(done)
    }

    /// Why it did not apply.
    pub(crate) fn refused(self) -> &'static str {
        match self {
            BuildAction::Cancel => "already ended",
            BuildAction::Approve | BuildAction::Decline => "is not waiting for approval",
        }
    }
}

/// What every handler and background task shares.
#[derive(Debug)]
struct AppState {
    store: Store,
    config: ServerConfig,
    git: git::GitCache,
    /// Woken when a delivery is stored: the trigger worker processes it.
    deliveries: Notify,
    live: live::LiveLogs,
    /// Woken when builds change: the notifier looks for what to report.
    notifications: Notify,
    /// Woken when a schedule is added: the scheduler looks again.
    schedules: Notify,
    http: reqwest::Client,
    /// For addresses someone else chose: [`outbound::OutboundPolicy::client`].
    outbound_http: reqwest::Client,
    metrics: metrics::Metrics,
    shutdown: CancellationToken,
    /// When a refused webhook was last logged (they are logged at most once a second).
    last_refusal_log: std::sync::atomic::AtomicI64,
}

#[derive(Debug, Clone)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    pub fn new(store: Store, config: ServerConfig) -> Self {
        let git = git::GitCache::new(config.data_dir.join("git"));
        let outbound_http = config.outbound.client();
        Self {
            state: Arc::new(AppState {
                store,
                config,
                git,
                deliveries: Notify::new(),
                live: live::LiveLogs::default(),
                notifications: Notify::new(),
                schedules: Notify::new(),
                http: reqwest::Client::new(),
                outbound_http,
                metrics: metrics::Metrics::default(),
                shutdown: CancellationToken::new(),
                last_refusal_log: std::sync::atomic::AtomicI64::new(0),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// On a database without API tokens, creates an admin token and returns it (to be shown
    /// once; only its hash is stored).
    pub async fn ensure_admin_token(&self) -> Result<Option<String>, StoreError> {
        auth::ensure_admin_token(&self.state.store).await
    }

    /// Checks the secret key against the database (a wrong key is a start-up error).
    pub async fn verify_secret_key(&self) -> Result<(), secrets::SecretError> {
        secrets::verify_key(&self.state.store, &self.state.config.secret_key).await
    }

    pub fn router(&self) -> Router {
        Router::new()
            .merge(hooks::routes())
            .route("/metrics", axum::routing::get(metrics::scrape))
            .route("/readyz", axum::routing::get(metrics::ready))
            .merge(rpc::routes())
            .merge(api::routes())
            .merge(web::routes())
            .layer(axum::middleware::map_response(web::security_headers))
            .with_state(Arc::clone(&self.state))
    }

    /// Serves until `shutdown` completes, with the trigger worker and the lease reaper.
    /// Deliveries accepted before a crash are processed, and leases that expired while the
    /// server was down are reaped, as soon as it starts.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let tasks = TaskTracker::new();
        tasks.spawn(trigger::work(Arc::clone(&self.state)));
        tasks.spawn(reap(Arc::clone(&self.state)));
        tasks.spawn(notify::work(Arc::clone(&self.state)));
        tasks.spawn(schedules::work(Arc::clone(&self.state)));
        tasks.spawn(retention::work(Arc::clone(&self.state)));
        tasks.spawn(live::follow_others(Arc::clone(&self.state)));
        let token = self.state.shutdown.clone();
        let router = self.router();
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                token.cancel();
            })
            .await;
        self.state.shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        served
    }
}

/// Ends or re-queues stages whose runner stopped heartbeating.
async fn reap(state: Arc<AppState>) {
    loop {
        match state.store.reap_expired(gantry_store::now_ms()).await {
            Ok(reaped) => {
                for stage in &reaped {
                    tracing::warn!(
                        stage.id = stage.stage_id,
                        build.id = stage.build_id,
                        requeued = stage.requeued,
                        "a runner's lease expired"
                    );
                    state.metrics.lease_expired();
                    state.live.stage_ended(stage.stage_id);
                    credentials::revoke_stage_token(&state, stage.stage_id).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "reaping expired leases failed"),
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(state.config.reap_every) => {}
        }
    }
}
