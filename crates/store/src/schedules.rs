//! Schedules: named cron builds of a repository. The store keeps when each is next due
//! (`next_run_at`, computed by the server, which owns the cron expression) and hands a due
//! one to one server at a time ([`Store::claim_schedule`]); the build it makes moves the
//! schedule on in the build's own transaction ([`ScheduleRun`] in `NewBuild`), so a tick
//! makes one build across servers and restarts.

use std::collections::BTreeMap;

use crate::db::{self, Tx};
use crate::{Event, Result, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub id: i64,
    pub repo_id: i64,
    pub name: String,
    /// The cron expression as its author wrote it (`0 3 * * 1-5`, `@daily`).
    pub expression: String,
    /// An IANA time zone name (`Europe/Berlin`, `UTC`) the expression is read in.
    pub timezone: String,
    pub branch: String,
    pub params: BTreeMap<String, String>,
    /// Milliseconds since the epoch.
    pub next_run_at: i64,
    /// Which claim on it is current (see [`Store::claim_schedule`]).
    pub claim_epoch: i64,
    pub last_build_id: Option<i64>,
    pub last_run_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSchedule {
    pub repo_id: i64,
    pub name: String,
    pub expression: String,
    pub timezone: String,
    pub branch: String,
    pub params: BTreeMap<String, String>,
    pub next_run_at: i64,
    pub created_by: String,
}

/// A build a schedule makes, recorded in the build's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleRun {
    pub schedule_id: i64,
    /// The due tick this build is for: the claim's epoch and the next tick after it. The
    /// build is stored only while that claim is still current; `None` for a run a user
    /// asked for (`gantry cron run`), which leaves the next tick as it is.
    pub tick: Option<(i64, i64)>,
}

#[derive(Debug, sqlx::FromRow)]
struct ScheduleRow {
    id: i64,
    repo_id: i64,
    name: String,
    expression: String,
    timezone: String,
    branch: String,
    params: String,
    next_run_at: i64,
    claim_epoch: i64,
    last_build_id: Option<i64>,
    last_run_at: Option<i64>,
    last_error: Option<String>,
    created_by: String,
    created_at: i64,
}

const COLUMNS: &str = "id, repo_id, name, expression, timezone, branch, params, next_run_at, \
     claim_epoch, last_build_id, last_run_at, last_error, created_by, created_at";

impl TryFrom<ScheduleRow> for Schedule {
    type Error = StoreError;
    fn try_from(row: ScheduleRow) -> Result<Self> {
        Ok(Schedule {
            params: serde_json::from_str(&row.params)
                .map_err(|e| StoreError::corrupt("schedule parameters", e))?,
            id: row.id,
            repo_id: row.repo_id,
            name: row.name,
            expression: row.expression,
            timezone: row.timezone,
            branch: row.branch,
            next_run_at: row.next_run_at,
            claim_epoch: row.claim_epoch,
            last_build_id: row.last_build_id,
            last_run_at: row.last_run_at,
            last_error: row.last_error,
            created_by: row.created_by,
            created_at: row.created_at,
        })
    }
}

impl Store {
    /// Adds a schedule; a name the repository already uses is a `Conflict`.
    pub async fn create_schedule(&self, new: &NewSchedule) -> Result<Schedule> {
        let params = serde_json::to_string(&new.params)
            .map_err(|e| StoreError::corrupt("schedule parameters", e))?;
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO schedules (repo_id, name, expression, timezone, branch, params, \
             next_run_at, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING {COLUMNS}"
        ));
        let row = db::query_as::<ScheduleRow>(sql)
            .bind(new.repo_id)
            .bind(&new.name)
            .bind(&new.expression)
            .bind(&new.timezone)
            .bind(&new.branch)
            .bind(&params)
            .bind(new.next_run_at)
            .bind(&new.created_by)
            .bind(self.clock.now_ms())
            .fetch_one(&self.pool)
            .await;
        match row {
            Ok(row) => {
                self.publish(Event::ScheduleChanged).await;
                row.try_into()
            }
            // Two adds of one name at once: the unique index decides.
            Err(StoreError::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => Err(
                StoreError::Conflict(format!("a schedule named `{}` exists", new.name)),
            ),
            Err(e) => Err(e),
        }
    }

    /// A repository's schedules, by name.
    pub async fn schedules(&self, repo_id: i64) -> Result<Vec<Schedule>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM schedules WHERE repo_id = $1 ORDER BY name"
        ));
        let rows = db::query_as::<ScheduleRow>(sql)
            .bind(repo_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(Schedule::try_from).collect()
    }

    pub async fn schedule(&self, repo_id: i64, name: &str) -> Result<Option<Schedule>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM schedules WHERE repo_id = $1 AND name = $2"
        ));
        let row = db::query_as::<ScheduleRow>(sql)
            .bind(repo_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Schedule::try_from).transpose()
    }

    /// Removes a schedule; `false` when there was none of that name.
    pub async fn delete_schedule(&self, repo_id: i64, name: &str) -> Result<bool> {
        let deleted = db::query("DELETE FROM schedules WHERE repo_id = $1 AND name = $2")
            .bind(repo_id)
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if deleted > 0 {
            self.publish(Event::ScheduleChanged).await;
        }
        Ok(deleted > 0)
    }

    /// Takes the schedule most overdue at `now` (not claimed by a live claim) until
    /// `lease_until`, bumping its epoch. The build for it must be stored with that epoch
    /// ([`ScheduleRun::tick`]) before the lease runs out, or another server takes it.
    pub async fn claim_schedule(&self, now: i64, lease_until: i64) -> Result<Option<Schedule>> {
        let lock = self.skip_locked();
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE schedules SET claimed_until = $2, claim_epoch = claim_epoch + 1 \
             WHERE id = (SELECT id FROM schedules WHERE next_run_at <= $1 \
             AND claimed_until <= $1 ORDER BY next_run_at, id LIMIT 1{lock}) \
             AND next_run_at <= $1 AND claimed_until <= $1 RETURNING {COLUMNS}"
        ));
        let row = db::query_as::<ScheduleRow>(sql)
            .bind(now)
            .bind(lease_until)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Schedule::try_from).transpose()
    }

    /// Records that the claimed tick made no build, and why, and moves the schedule on to
    /// `next_run_at`; `false` when the claim was no longer this server's.
    pub async fn schedule_failed(
        &self,
        id: i64,
        epoch: i64,
        now: i64,
        next_run_at: i64,
        error: &str,
    ) -> Result<bool> {
        let updated = db::query(
            "UPDATE schedules SET next_run_at = $3, claimed_until = 0, last_run_at = $4, \
             last_error = $5 WHERE id = $1 AND claim_epoch = $2",
        )
        .bind(id)
        .bind(epoch)
        .bind(next_run_at)
        .bind(now)
        .bind(error)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// When the next schedule is due (milliseconds), if there is any.
    pub async fn next_schedule_due(&self) -> Result<Option<i64>> {
        db::query_scalar(
            "SELECT MIN(CASE WHEN claimed_until > next_run_at THEN claimed_until \
             ELSE next_run_at END) FROM schedules",
        )
        .fetch_one(&self.pool)
        .await
    }
}

/// Records `run` in a build's transaction; a claim that is no longer current is a
/// `Conflict` (another server made this tick's build).
pub(crate) async fn record_schedule_run(
    tx: &mut Tx,
    run: &ScheduleRun,
    build_id: i64,
    now: i64,
) -> Result<()> {
    let updated = match run.tick {
        Some((epoch, next_run_at)) => db::query(
            "UPDATE schedules SET next_run_at = $3, claimed_until = 0, last_build_id = $4, \
             last_run_at = $5, last_error = NULL WHERE id = $1 AND claim_epoch = $2",
        )
        .bind(run.schedule_id)
        .bind(epoch)
        .bind(next_run_at)
        .bind(build_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected(),
        None => db::query(
            "UPDATE schedules SET last_build_id = $2, last_run_at = $3, last_error = NULL \
             WHERE id = $1",
        )
        .bind(run.schedule_id)
        .bind(build_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected(),
    };
    if updated == 0 {
        return Err(StoreError::Conflict(format!(
            "schedule #{} was run by another server, or removed",
            run.schedule_id
        )));
    }
    Ok(())
}
