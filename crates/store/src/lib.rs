//! gantry's storage: one cloneable [`Store`] over SQLite (the embedded default) or
//! PostgreSQL, with the same SQL text for both wherever the dialects agree. One file per
//! aggregate: `repos`, `builds` (builds, stages, steps), `queue` (claims, leases, the reaper),
//! `logs`, `deliveries`, `runners`, `tokens`, `users` (users and their repository roles).
//!
//! Times are milliseconds since the Unix epoch (UTC) in the database and in these types.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

mod builds;
mod deliveries;
mod gauges;
mod logs;
mod notify;
mod queue;
mod repos;
mod retention;
mod runners;
mod schedules;
mod secrets;
mod tokens;
mod users;

pub use builds::{Build, BuildFilter, NewBuild, Stage, Step};
pub use deliveries::{Delivery, DeliveryState, NewDelivery, Recorded};
pub use gauges::Gauges;
pub use logs::StoredLine;
pub use notify::{NewMessage, NewTarget, NotifyTarget, OutboxMessage};
pub use queue::{Claim, ClaimRequest, LeaseError, LockHolder, Reaped, StageEnd};
pub use repos::{NewRepo, Repo, RepoUpdate, Visibility};
pub use retention::{RetentionPolicy, RetentionReport};
pub use runners::{Runner, RunnerToken};
pub use schedules::{NewSchedule, Schedule, ScheduleRun};
pub use secrets::{SealedSecret, SecretInfo, SecretScope};
pub use tokens::{NewToken, Token};
pub use users::{RepoRole, Role, RoleSource, User};

/// Runs `$body` with `$pool` bound to whichever pool the store holds: the SQL is shared text,
/// the code is compiled once per database.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::Pool::Sqlite($pool) => $body,
            $crate::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("could not apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A value in the database that this version cannot read.
    #[error("unreadable {what} in the database: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error(
        "unsupported database URL `{0}`: use postgres://user:password@host/database, or leave it unset for SQLite in the data directory"
    )]
    UnsupportedUrl(String),
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
            what,
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

/// The database. Cheap to clone; every clone shares the pool and the [`Signals`].
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    signals: Arc<Signals>,
    /// Tells this store's own `NOTIFY`s from other servers'.
    instance: Arc<str>,
    listener: Option<Arc<ListenerTask>>,
}

/// Wake-ups for those waiting on the queue: fired after a commit that queued stages or
/// cancelled a build. On PostgreSQL they also travel by `NOTIFY`, so runners waiting on
/// another server sharing the database wake too. Register (`Notify::notified` + `enable`)
/// before querying, so nothing committed in between is missed.
#[derive(Debug)]
pub struct Signals {
    pub queued: tokio::sync::Notify,
    pub cancelled: tokio::sync::Notify,
    /// What other servers sharing the database stored of step logs (PostgreSQL only; a
    /// server hears its own writes from its own code, not from here). A wake-up only: the
    /// store holds the lines.
    pub logs: tokio::sync::broadcast::Sender<LogNews>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            queued: tokio::sync::Notify::new(),
            cancelled: tokio::sync::Notify::new(),
            logs: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

/// News of a step's log, from another server: lines were stored, or the step (or with no
/// step, the whole stage) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogNews {
    pub stage: i64,
    pub step: Option<String>,
    pub ended: bool,
}

impl LogNews {
    pub fn lines(stage: i64, step: &str) -> Self {
        Self {
            stage,
            step: Some(step.to_owned()),
            ended: false,
        }
    }

    pub fn step_ended(stage: i64, step: &str) -> Self {
        Self {
            stage,
            step: Some(step.to_owned()),
            ended: true,
        }
    }

    pub fn stage_ended(stage: i64) -> Self {
        Self {
            stage,
            step: None,
            ended: true,
        }
    }

    /// `INSTANCE STAGE ENDED STEP`: the step name last, as it may hold spaces.
    fn to_payload(&self, instance: &str) -> String {
        format!(
            "{instance} {} {} {}",
            self.stage,
            u8::from(self.ended),
            self.step.as_deref().unwrap_or("")
        )
    }

    /// The news and the instance that sent it.
    fn from_payload(payload: &str) -> Option<(&str, Self)> {
        let mut parts = payload.splitn(4, ' ');
        let instance = parts.next()?;
        let stage = parts.next()?.parse().ok()?;
        let ended = parts.next()? == "1";
        let step = parts.next().filter(|s| !s.is_empty()).map(str::to_owned);
        Some((instance, Self { stage, step, ended }))
    }
}

const QUEUE_CHANNEL: &str = "gantry_queue";
const CANCEL_CHANNEL: &str = "gantry_cancel";
const LOGS_CHANNEL: &str = "gantry_logs";

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
            signals: Arc::default(),
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
        let signals: Arc<Signals> = Arc::default();
        let instance = new_instance();
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        listener
            .listen_all([QUEUE_CHANNEL, CANCEL_CHANNEL, LOGS_CHANNEL])
            .await?;
        let forward = Arc::clone(&signals);
        let own = Arc::clone(&instance);
        let task = tokio::spawn(async move {
            loop {
                // `recv` reconnects by itself when the connection drops; what was sent in
                // between is lost, so readers of logs also poll the store.
                match listener.recv().await {
                    Ok(note) if note.channel() == CANCEL_CHANNEL => {
                        forward.cancelled.notify_waiters()
                    }
                    Ok(note) if note.channel() == LOGS_CHANNEL => {
                        match LogNews::from_payload(note.payload()) {
                            Some((from, news)) if from != &*own => {
                                let _ = forward.logs.send(news);
                            }
                            _ => {}
                        }
                    }
                    Ok(_) => forward.queued.notify_waiters(),
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for queue notifications failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Self {
            pool: Pool::Postgres(pool),
            signals,
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

    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    /// Wakes runners waiting for work, here and on other servers.
    pub(crate) async fn signal_queued(&self) {
        self.signals.queued.notify_waiters();
        self.notify_others(QUEUE_CHANNEL).await;
    }

    pub(crate) async fn signal_cancelled(&self) {
        self.signals.cancelled.notify_waiters();
        self.notify_others(CANCEL_CHANNEL).await;
    }

    /// Tells other servers sharing the database about a step's log (their live readers
    /// then read the store).
    pub(crate) async fn announce_logs(&self, news: LogNews) {
        self.notify_others_with(LOGS_CHANNEL, &news.to_payload(&self.instance))
            .await;
    }

    async fn notify_others(&self, channel: &str) {
        self.notify_others_with(channel, "").await;
    }

    async fn notify_others_with(&self, channel: &str, payload: &str) {
        if let Pool::Postgres(pool) = &self.pool
            && let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(pool)
                .await
        {
            tracing::warn!(error = %e, channel, "NOTIFY failed; other servers wake at their next poll");
        }
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
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Closes the pool, once every connection is back: the `LISTEN` task's first (it holds
    /// one for ever).
    pub async fn close(&self) {
        if let Some(listener) = &self.listener {
            listener.0.abort();
        }
        with_pool!(self, pool => pool.close().await)
    }
}

/// A name for this process's store, unique enough among servers sharing a database.
fn new_instance() -> Arc<str> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}", std::process::id()).into()
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub use gantry_proto::Status;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_news_travels_as_text_and_back() {
        for news in [
            LogNews::lines(7, "unit tests"),
            LogNews::step_ended(7, "build"),
            LogNews::stage_ended(9),
        ] {
            let payload = news.to_payload("abc-1");
            assert_eq!(LogNews::from_payload(&payload), Some(("abc-1", news)));
        }
        assert_eq!(LogNews::from_payload("abc 12"), None);
        assert_eq!(LogNews::from_payload("abc x 0 step"), None);
    }

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
