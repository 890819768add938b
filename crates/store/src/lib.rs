//! gantry's storage: one cloneable [`Store`] over SQLite (the embedded default) or
//! PostgreSQL, with the same SQL text for both wherever the dialects agree. One file per
//! aggregate: `repos`, `builds` (builds, stages, steps), `queue` (claims, leases, the reaper),
//! `logs`, `deliveries`, `runners`, `tokens`, `users` (users and their repository roles).
//!
//! Times are milliseconds since the Unix epoch (UTC) in the database and in these types.
//!
//! # Code map
//!
//! One cloneable `Store` over `Pool::Sqlite` or `Pool::Postgres`. Every statement is written
//! once with `db::query` / `query_as` / `query_scalar` (SQLite accepts `$1`), which bind their
//! arguments and pick the driver only when they run, on the pool or in a `db::Tx`
//! (`Store::begin`, or `begin_writing` where the reads decide the writes). Migrations are
//! twins in `migrations/sqlite` and `migrations/postgres`; times are `BIGINT` milliseconds.
//!
//! - `repos`, `deliveries`, `runners`, `tokens` — plain rows. A delivery id is recorded once;
//!   a rejected one may come again; a pending one is processed under a claim
//!   (`claim_delivery`, `renew_claim`, `finish_delivery` with its epoch), only when no earlier
//!   delivery of its repository is pending (one repository's in order, others meanwhile), and
//!   each claim counts an attempt. `runners` also keeps runners' own tokens (`RunnerToken`: the
//!   hash, the name it binds, the owners it may claim for) and `stage_holder`. A `Token` acts for a user (`user_id`) or is a service token;
//!   `session` marks a browser session from a sign-in.
//! - `users` — `User` (the GitHub account `github_id`, its login compared without case and
//!   followed through renames, admin flag, the sealed GitHub token; `signed_in` never gives a
//!   login's earlier holder's user to a new account; `set_admins` makes `--admins` the truth) and
//!   `RepoRole`s: at most one per `RoleSource` (`github`, with the time it was read; `admin`,
//!   set by a server admin) for each user and repository. Deleting a user deletes their tokens
//!   and roles.
//! - `builds` — `create_build` writes build, stages, steps (and marks the delivery processed) in
//!   one transaction, taking the delivery first (`state = 'pending'`): a delivery already
//!   processed (by another server) is a `Conflict` and no build; `advance` (pure, unit-tested) decides which waiting stages are queued or
//!   skipped and the build's final status. **Invariant:** a build exists whole or not at all.
//! - `queue` — `claim_next` (PostgreSQL `FOR UPDATE SKIP LOCKED`; SQLite `BEGIN IMMEDIATE`)
//!   takes the oldest pending stage whose labels, platform and `backend` (with the repository's
//!   current `trusted`, never for a fork's build) the runner's offer may run (`gantry_proto::place`), none of whose
//!   `locks` a running stage holds and whose pipeline runs fewer than its `concurrency` limit in
//!   its repository (a lock lives only in running stages: it is released when the stage stops
//!   running, by its end or by the reaper), of an owner the runner's token allows, and sets a
//!   fresh random `lease_epoch` (a runner cannot guess another's); `update_step`, `append_logs`, `heartbeat`, `finish_stage`
//!   act only while `(stage, epoch)` is running, else `LeaseError::Lost`; `reap_expired` and
//!   `reap_previous_instance` re-queue (never confirmed by the runner, no step started) or error
//!   what a lost runner held, each by compare-and-set on the epoch it saw.
//!   **Invariant:** no stage is claimed twice; no write from a stale lease lands.
//! - `secrets` — sealed secret bytes per repository or owner, and `settings` (the key check);
//!   `registries` — registry logins (host, user, sealed password) per repository, owner or server.
//! - `approve_build` / `decline_build` (in `builds`) — a build created with `hold` (a fork's
//!   pull request, when the repository's `fork_policy` is `approve`) waits as `blocked`, its
//!   stages unclaimable, until one of them.
//! - `schedules` — `Schedule` rows (expression, time zone, branch, params, `next_run_at`);
//!   `claim_schedule` takes a due one under a lease and epoch; the build of a tick carries a
//!   `ScheduleRun` and `create_build` moves the schedule on in its own transaction, only while
//!   that epoch is current (else `Conflict`, no build). The store never reads cron expressions.
//! - `retention` — `prune(RetentionPolicy)`: one batch at a time (each its own transaction),
//!   builds first (finished, reported, nothing pending in the outbox, not among the newest K
//!   of their branch), then logs (`logs_removed_at` marks the build), deliveries, sent
//!   messages; `reclaim_space` (SQLite incremental vacuum); `claim_maintenance` /
//!   `maintenance_done` run a job once across servers.
//! - `gauges` — `Gauges`: builds by status, the stage queue, running stages per runner and the
//!   outbox, counted in a few queries for `/metrics`.
//! - `notify` — notification targets and the `outbox` (pending / sent / failed, attempts,
//!   next attempt, claim epoch); `builds_to_notify` and `queue_notifications` (a compare-and-set
//!   on `notified_status`); `claim_message` (in order per build and address).
//! - `logs` — one `log_chunks` row per batch (consecutive lines joined by `\n` plus their times);
//!   paging reads the chunks that hold the range.
//! - `events` — the `Event` every write publishes after its commit (`Store::subscribe`); on
//!   PostgreSQL also `NOTIFY` on `gantry_events`, forwarded by a `LISTEN` task, so servers
//!   sharing a database hear each other (a store ignores its own news from there).
//!
//! **Boundary:** no HTTP, no Docker; the server owns what a delivery means.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

mod builds;
mod claims;
mod clock;
mod db;
mod deliveries;
mod events;
mod gauges;
mod logs;
mod notify;
mod queue;
mod registries;
mod repos;
mod retention;
mod runners;
mod schedules;
mod secrets;
mod tokens;
mod users;

pub use builds::environments::{
    BuildDeployment, Deployment, Environment, EnvironmentState, HISTORY as ENVIRONMENT_HISTORY,
};
pub use builds::{
    Build, BuildFilter, NewBuild, NewProtection, ProtectedEnvironment, Stage, StageApproval, Step,
};
pub use claims::Claimed;
pub use clock::Clock;
pub use deliveries::{Delivery, DeliveryState, NewDelivery, Recorded};
pub use events::Event;
pub use gauges::Gauges;
pub use logs::{LineMatcher, LogSearch, MAX_LINE_NUMBER, SearchBounds, StoredLine};
pub use notify::{MessageKind, MessageState, NewMessage, NewTarget, NotifyTarget, OutboxMessage};
pub use queue::{Claim, ClaimRequest, LeaseError, LockHolder, Reaped, StageEnd};
pub use registries::{RegistryInfo, RegistryScope, SealedRegistry};
pub use repos::{ForkPolicy, NewRepo, Repo, RepoUpdate, Visibility};
pub use retention::{RetentionPolicy, RetentionReport};
pub use runners::{Runner, RunnerToken};
pub use schedules::{NewSchedule, Schedule, ScheduleRun};
pub use secrets::{SealedSecret, SecretGrant, SecretInfo, SecretScope};
pub use tokens::{NewToken, Token};
pub use users::{RepoRole, Role, RoleSource, User};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("could not apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A value in the database that this version cannot read.
    #[error("unreadable {what} in the database: {detail}")]
    Corrupt { what: String, detail: String },
    #[error(
        "unsupported database URL `{0}`: use postgres://user:password@host/database, or leave it unset for SQLite in the data directory"
    )]
    UnsupportedUrl(String),
}

impl From<sqlx::Error> for StoreError {
    /// A column a row could not be read from is a value this version cannot read, named by
    /// its column; anything else is the database's own error.
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { index, source } => StoreError::Corrupt {
                what: format!("column `{index}`"),
                detail: source.to_string(),
            },
            other => StoreError::Database(other),
        }
    }
}

impl StoreError {
    /// The database could not be reached (as opposed to refusing a statement).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
            )
        )
    }

    pub(crate) fn corrupt(what: &'static str, detail: impl ToString) -> Self {
        StoreError::Corrupt {
            what: what.to_owned(),
            detail: detail.to_string(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The database. Cheap to clone; every clone shares the pool and the [`Event`] subscribers.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    events: Arc<events::Events>,
    /// What every row is stamped with and every lease compared against.
    clock: Clock,
    /// Tells this store's own `NOTIFY`s from other servers'.
    instance: Arc<str>,
    listener: Option<Arc<ListenerTask>>,
}

/// Stops the `LISTEN` task when the last clone of the store goes.
#[derive(Debug)]
struct ListenerTask(tokio::task::JoinHandle<()>);

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Store {
    /// Opens the SQLite database `path` (created if missing) in WAL mode, and migrates it.
    pub async fn open_sqlite(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Set before the first table exists, so retention can give space back
            // (`reclaim_space`); an older database is switched by one VACUUM there.
            .auto_vacuum(sqlx::sqlite::SqliteAutoVacuum::Incremental);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../../migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
            events: Arc::default(),
            clock: Clock::system(),
            instance: new_instance(),
            listener: None,
        })
    }

    /// Opens a PostgreSQL database by URL, and migrates it.
    pub async fn open_postgres(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("../../migrations/postgres")
            .run(&pool)
            .await?;
        let events: Arc<events::Events> = Arc::default();
        let instance = new_instance();
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        listener.listen(events::EVENTS_CHANNEL).await?;
        let forward = Arc::clone(&events);
        let own = Arc::clone(&instance);
        let task = tokio::spawn(async move {
            loop {
                // `recv` reconnects by itself when the connection drops; what was sent in
                // between is lost, so every subscriber also looks at the store now and then.
                match listener.recv().await {
                    Ok(note) => {
                        for line in note.payload().lines() {
                            match Event::from_payload(line) {
                                Some((from, event)) if from != &*own => forward.forward(event),
                                _ => {}
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for other servers' news failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Self {
            pool: Pool::Postgres(pool),
            events,
            clock: Clock::system(),
            instance,
            listener: Some(Arc::new(ListenerTask(task))),
        })
    }

    /// `postgres://...` opens PostgreSQL; `sqlite://PATH` or a bare path opens SQLite.
    pub async fn open(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url).await
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Self::open_sqlite(Path::new(path)).await
        } else if !url.contains("://") {
            Self::open_sqlite(Path::new(url)).await
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }

    /// The store going by `clock` (a test's manual one) from now on, in every clone made
    /// from the result.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// `sqlite` or `postgres`.
    pub fn dialect(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        db::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, once every connection is back: the `LISTEN` task's first (it holds
    /// one for ever).
    pub async fn close(&self) {
        if let Some(listener) = &self.listener {
            listener.0.abort();
        }
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// A name for this process's store, unique enough among servers sharing a database.
fn new_instance() -> Arc<str> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}", std::process::id()).into()
}

/// Milliseconds since the Unix epoch, now, by the system's clock (a [`Store`] goes by its
/// [`Clock`]).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub use gantry_proto::Status;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ended_states_are_final() {
        let finals: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            [
                Status::Success,
                Status::Failure,
                Status::Error,
                Status::Killed,
                Status::Skipped,
                Status::Declined
            ]
        );
    }
}
