//! gantry's HTTP server: the GitHub webhook receiver (`hooks`), the trigger from a delivery
//! to a stored build with queued stages (`trigger`, `git`), the runner protocol (`rpc`), the
//! JSON API (`api`), live logs (`live`), who may do what (`access`) and the lease reaper. One entry point:
//! [`Server::run`] with a listener and a shutdown future; signals belong to the binary.
//!
//! # Code map
//!
//! `Server::new(store, ServerConfig)`, `Server::run(listener, shutdown)` with the trigger worker
//! and the reaper as tasks.
//!
//! ```text
//! api (JSON) ─┐                                   ┌─► access::authorize
//!             ├─► ops::{repos, builds, ...} ──────┼─► checks of the request (OpError naming the field)
//! web (pages) ┘   (caller's Identity + a typed    └─► store / trigger / git
//!                  request → what was made)
//! ```
//!
//! - `ops` — the operations layer: one module per resource (`repos`, `builds`, `secrets`,
//!   `notify`, `users` with roles, `tokens`, `runners`). Each
//!   operation authorises, validates, acts and returns what it made, once for the API and the
//!   pages. **Invariant:** a check of a request lives in its operation, never in an adapter; an
//!   adapter only turns its input format into the typed request (a form's `KEY=VALUE` lines, a
//!   JSON body) and renders the answer.
//! - `views` — store rows made into `gantry_api` answers, the one place that decides what of a
//!   row a caller sees.
//! - `error` — `OpError`, the one error of operations: a kind (`invalid` with the field,
//!   `unauthorized`, `forbidden` with the role needed, `not_found`, `conflict`, `too_large`,
//!   `upstream` for git and GitHub, `unavailable`, `internal`) and its HTTP status, decided here
//!   only. The API answers `{"error": kind, "message", "field"?, "needed"?}`; the pages show the
//!   message beside the refused form (the settings page, the account page, a build page's manual
//!   build form: the page again, with the refusal's status); internal causes are logged and
//!   shown opaquely.
//!
//! - `signing` — signed pipeline files: a repository with a sealed `signing_key` builds only
//!   files whose `kind: signature` HMAC matches (constant-time), checked in `trigger` before
//!   the file is compiled; `ops::repos::sign` makes the key on first use.
//! - `github` — `verify_signature` (HMAC-SHA256, constant time, before anything else is read
//!   but `repository.full_name`, which picks the secret), `parse_hook` into `Hook` / `Trigger`
//!   with `PayloadError` naming the field; `says_private` (visibility from a payload).
//! - `github_api` — `GitHubClient`, the one client of GitHub's REST API (visibility, the
//!   signed-in user, permissions, App tokens, commit status addresses), its errors naming
//!   what was asked, never the URL.
//! - `github_app` — `GitHubApp`: an RS256 JWT signed with the App's key (aws-lc-rs), and
//!   `repository_token` (the repository's installation, then a token for it alone with
//!   `contents: read`); `revoke`.
//! - `hooks` — `POST /hook/github`: body cap 25 MB; a missing or malformed signature header is
//!   401 before the repository is looked up; an unknown repository and a bad signature get the
//!   same 401 after the same work, and nothing is stored for either (a log line, at most one a
//!   second); 400 for payloads, 204 with a `gantry-reason` header for ignored events, 202 once
//!   the delivery is stored; a payload saying `private` makes a public repository private.
//!   **Invariant:** the clone URL is the registered one, never the payload's.
//! - `trigger` — delivery → `Context` → git → `parse_files` + `compile` → `create_build`;
//!   also manual builds and restarts (same context, new number, `parent`). A pipeline problem is
//!   an errored build, not an error. `work` processes 4 deliveries at once (a `JoinSet`, dropped at
//!   shutdown: their claims run out); compilation runs on a blocking thread under
//!   `ServerConfig::compile_limit`; a delivery failing 5 times (or whose tries never finished) is
//!   given up as an errored build saying why. Locks are scoped here (`scoped_lock`: `OWNER:NAME`,
//!   or `*:NAME` for `--global-locks`). **Invariant:** no delivery, file or expression can hold
//!   the worker or shutdown.
//! - `git` — a bare cache per repository; fetch by sha, else by ref, with the repository's
//!   credential; pipeline files at a commit; `changed_files` over a `ChangeSpan` (a push's
//!   `before..after`, a new branch's whole tree, a pull request's merge base to head) for
//!   `paths` conditions; `fetch_hint` turns a failed fetch into the credential used
//!   (described, never its value) and the fix. **Invariant:** changed files that cannot be
//!   computed are `Context::changed_files_error`, which errors a build that filters on paths;
//!   they are never guessed empty.
//! - `credentials` — the repository's git credential, by its clone URL: for HTTP(S) its own
//!   sealed GitHub token, else the server's `--github-token` only when the clone URL has the
//!   origin of `--github-url` (`same_origin`), as basic auth `x-access-token`; for SSH its sealed
//!   deploy key with the server's known hosts. `for_stage`: a GitHub App token minted for the
//!   stage when there is an App (kept sealed on the stage and revoked when it ends or is reaped),
//!   and the steps' `netrc` from the App's or the repository's own token only (HTTP only, never
//!   for a fork's pull request). **Invariant:** a credential's value reaches only the fetch, the
//!   stage's assignment and the masker; messages use `CredentialSource::describe`; the server's
//!   personal token never reaches a step or another host.
//! - `outbound` — `OutboundPolicy`: the client for addresses someone else chose (chat and
//!   webhook targets): names resolved and filtered here (loopback, private, link-local,
//!   shared, reserved refused unless `--notify-allow-net`), address literals and every redirect
//!   checked, no environment proxy. **Invariant:** the address connected to is one that was
//!   checked.
//! - `rpc` — the runner protocol: `RunnerAuth` (a runner's own token, looked up by its hash,
//!   binding its name and owners; or the deprecated shared secret compared on hashes), long-poll
//!   `request`, `step`, `logs`, `heartbeat`, `watch` (held until a cancel), `done`; with a token,
//!   a report is accepted only for a stage that runner holds.
//! - `auth` — who is calling: `Caller` (hashed bearer tokens, or the session cookie for
//!   reading only; every token is made by `auth::issue_token`, stored as its hash), the session
//!   cookie (`session_token`, `session_cookie`: one place for its flags), `random_secret`.
//! - `metrics` — `GET /metrics` (prometheus-client; counters of this server's deliveries by
//!   outcome, lease expiries and step durations, plus `Store::gauges` counted by the database at
//!   each scrape; behind `--metrics-token` when set) and `GET /readyz` (the database answers).
//! - `schedules` — the scheduler: `Cadence` (croner + chrono-tz: an expression in its time
//!   zone, the next tick strictly after a moment) and `work`, which claims due schedules and
//!   builds the branch's head with event `cron` through `trigger::head_build`. Time comes from
//!   `ServerConfig::clock` (`clock::Clock`: the system's, or a manual one in tests).
//! - `retention` — `Retention` (the operator's limits) and `work`: claims the `retention`
//!   maintenance job when due, prunes, reports (log, `/metrics`, `/api/retention`);
//!   `log_removed` is what a step's page and raw log say once its logs are gone.
//! - `waiting` — why a stage has not started, in words (approval; a lock and who holds it,
//!   named only when it is the same repository; its
//!   pipeline's concurrency limit; each runner seen lately and
//!   what it lacks, by `gantry_proto::place` and `gantry_proto::labels_mismatch`, the claim's
//!   own rules; every able runner busy), for the build page, the API's `Stage::waiting` and the
//!   CLI.
//! - `human` — how durations read on the pages, in chat and in the CLI (`took`).
//! - `api` — JSON API, a thin adapter over `ops` (`api/mod.rs` the routes, repositories and
//!   builds; `api/logs.rs` a step's log as text, pages and SSE; `api/admin.rs` targets,
//!   secrets, tokens, users and roles; `api/openapi.rs` the OpenAPI document at
//!   `/api/openapi.json`, its schemas derived from `gantry_api` with utoipa, its route table
//!   checked against `api/mod.rs` by a test). A handler takes the `Caller` (from `auth`: a reader
//!   may come with the session cookie, anything more needs the bearer token), parses its body
//!   (`parse_body` names the wrong field), calls its operation and renders; live logs follow
//!   `live`.
//! - `live` — per-step broadcast of log batches; readers subscribe before reading the store;
//!   `follow_store` turns the store's events into `LiveEvent`s (another server's lines come
//!   as `LiveEvent::Stored`: read the store) and ends.
//! - `worker` — the one loop every background job runs in (`Job`: a pass, then a wait for the
//!   store's news it cares about, its time, or shutdown; backoff on failure).
//! - `notify` — the notifier, the only producer of messages: it finds builds whose
//!   `notified_status` differs from their status (the first news of a build is its `pending`
//!   statuses, first even when it already ended), turns the change
//!   into messages (GitHub statuses; `chat_body` in each chat service's format, per target and
//!   rule, with the first failing step's link and last lines) and sends due messages from the
//!   outbox with backoff. **Invariant:** a status change is queued with its `notified_status`
//!   in one transaction, so it is reported once whichever path made it (runner, reaper,
//!   cancel); reporting never changes a build.
//! - `access` — who may do what, for the API and the pages alike. `Identity` (a token and its
//!   user), `Need` (read, write, admin), `authorize(who, owner, name, need)`: the visibility
//!   decides reading (public: anyone; internal: any identity; private: the read role); more
//!   needs the role. `role` is a server admin's `Role::Admin`, else the role an admin set, else
//!   the GitHub one cached in the store, read again with the user's own GitHub token
//!   (`github_role`) once older than `ServerConfig::role_ttl`; a GitHub error keeps the cached
//!   one. `sync_github_roles` reads all of a user's repositories at sign-in. **Invariant:** a
//!   caller who may not read a repository gets the same 404 as for one that does not exist;
//!   listings (`readable`) decide from the caller's stored roles in one query, never a
//!   GitHub call per repository.
//! - `oauth` — sign-in with GitHub: `start` redirects with a random `state` kept in a
//!   `SameSite=Lax` cookie; `callback` accepts only that state (constant-time), trades the code,
//!   reads `/user`, records the `User` (admin when the login is in `OAuthConfig::admins`; the
//!   GitHub token sealed, bound to `user:{login}/github_token`), syncs their roles and starts a
//!   session as a fresh hashed token (`session: true`); sign-out revokes it.
//! - `secrets` — `SecretKey` seals values (XChaCha20-Poly1305, random 24-byte nonce, bound to
//!   `repo:{id}/secret:{name}` or `owner:{owner}/secret:{name}`); `verify_key` checks the key
//!   against a sealed check value at start; `for_stage` opens, at claim time, only the secrets a
//!   stage references, and withholds from fork pull requests those that do not allow them (the
//!   runner's executor refuses a step needing one, with the reason). `seal_field` /
//!   `open_field` seal a repository's webhook secret and GitHub token into its row (bound to
//!   `repo:{owner}/{name}/{column}`; a value written in the clear by another tool is read as
//!   it is). **Invariant:** no API response, log or message carries a secret value; the store
//!   only ever sees sealed bytes of what the API wrote.
//! - `web` — the pages, a thin adapter over `ops` (`web/mod.rs` the router, `Page`, `Session`
//!   and assets; `web/pages.rs` what shows; `web/account.rs` sign-in, the build buttons and the
//!   account page; `web/settings.rs` a repository's settings): askama templates from
//!   `web/templates` compiled in, `web/static/app.css`
//!   and `app.js` served as `/static/app.<hash>.{css,js}` (cached for ever). `Session` reads the
//!   `gantry_session` cookie (an API token; `SameSite=Strict`, `HttpOnly`); every form that
//!   changes state carries a CSRF token derived from it, and the sign-in form one paired with a
//!   `gantry_login` cookie; `safe_next` resolves a redirect as a browser would before allowing
//!   it; `security_headers` gives every answer its CSP (no inline or foreign script,
//!   `frame-ancestors 'none'`), `nosniff`, `X-Frame-Options` and `Referrer-Policy`; a
//!   repository's link becomes an `href` only through `ops::repos::web_link` (http(s)). The API reads the cookie for reading
//!   only (`Caller::require_token` wants the bearer header). `app.js` is the log viewer: it
//!   fetches pages of lines (`.../lines?from=&limit=`) around the view, keeps at most ~40 pages,
//!   renders only visible rows, carries ANSI state from line to line, and follows
//!   `.../stream?after=N` (SSE; `Last-Event-ID` on reconnects). Buttons show by role, and every
//!   handler checks it again with `access::authorize`. `/{owner}/{repo}/settings` (admin role)
//!   edits the repository, its credentials (GitHub token, SSH deploy key: set or removed,
//!   never shown), its secrets (names only) and, for server admins, roles; `/account`
//!   lists a user's tokens and makes API tokens. **Invariant:** templates auto-escape; log text
//!   reaches the DOM only through `escapeHtml`; no stored value becomes a link unless http(s).
//!
//! **Boundary:** never runs steps; the embedded runner talks to it over HTTP like any other.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use gantry_store::{Store, StoreError};
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
pub mod github_api;
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
mod worker;

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
        match self {
            BuildAction::Cancel => state.store.cancel_build(build_id).await,
            BuildAction::Approve => state.store.approve_build(build_id).await,
            BuildAction::Decline => state.store.decline_build(build_id).await,
        }
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
    live: live::LiveLogs,
    http: reqwest::Client,
    /// Every call to GitHub's REST API.
    github: github_api::GitHubClient,
    /// For addresses someone else chose: [`outbound::OutboundPolicy::client`].
    outbound_http: reqwest::Client,
    metrics: metrics::Metrics,
    shutdown: CancellationToken,
    /// When a refused webhook was last logged (they are logged at most once a second).
    last_refusal_log: std::sync::atomic::AtomicI64,
    /// Searches across builds' logs running now: each may read for seconds.
    repo_searches: tokio::sync::Semaphore,
}

#[derive(Debug, Clone)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    pub fn new(store: Store, config: ServerConfig) -> Self {
        // One clock: the store stamps and compares by the one the server goes by.
        let store = store.with_clock(config.clock.clone());
        let git = git::GitCache::new(config.data_dir.join("git"));
        let outbound_http = config.outbound.client();
        let http = reqwest::Client::new();
        let github = github_api::GitHubClient::new(http.clone(), &config.github_api);
        Self {
            state: Arc::new(AppState {
                store,
                config,
                git,
                live: live::LiveLogs::default(),
                github,
                http,
                outbound_http,
                metrics: metrics::Metrics::default(),
                shutdown: CancellationToken::new(),
                last_refusal_log: std::sync::atomic::AtomicI64::new(0),
                repo_searches: tokio::sync::Semaphore::new(ops::logs::REPO_SEARCHES_AT_ONCE),
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
        let state = &self.state;
        tasks.spawn(live::follow_store(Arc::clone(state)));
        tasks.spawn(worker::run(
            Arc::clone(state),
            trigger::Deliveries::default(),
        ));
        tasks.spawn(worker::run(Arc::clone(state), Reaper));
        tasks.spawn(worker::run(Arc::clone(state), notify::Notifier));
        tasks.spawn(worker::run(Arc::clone(state), schedules::Scheduler));
        tasks.spawn(worker::run(Arc::clone(state), retention::Pruner));
        tasks.spawn(worker::run(
            Arc::clone(state),
            trigger::environments::AutoStopper,
        ));
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
struct Reaper;

impl worker::Job for Reaper {
    const NAME: &'static str = "reaper";

    fn wakes_on(_: &gantry_store::Event) -> bool {
        false
    }

    async fn pass(&mut self, state: &Arc<AppState>) -> Result<worker::Next, StoreError> {
        for stage in state
            .store
            .reap_expired(state.config.clock.now_ms())
            .await?
        {
            tracing::warn!(
                stage.id = stage.stage_id,
                build.id = stage.build_id,
                requeued = stage.requeued,
                "a runner's lease expired"
            );
            state.metrics.lease_expired();
            credentials::revoke_stage_token(state, stage.stage_id).await;
        }
        Ok(worker::Next::After(state.config.reap_every))
    }
}
