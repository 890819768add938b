//! Retention: what is old enough to go, removed in small batches so no statement holds a lock
//! for long (each batch is its own transaction). Builds go when they finished before a
//! cutoff and are not among the newest of their branch; a build's logs may go sooner (the
//! build row stays, with `logs_removed_at`); processed deliveries and sent (or given up)
//! messages go after their own cutoffs. Nothing that is still running, still to be
//! reported, or still to be sent is ever removed. Runs are claimed through the
//! `maintenance` table, so one server does each.

use serde::{Deserialize, Serialize};

use crate::{Pool, Result, Store, db};

/// What to remove; a `None` cutoff keeps that kind for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Builds that finished before this (milliseconds) may go...
    pub builds_before: Option<i64>,
    /// ...unless they are among this many newest of their repository and branch.
    pub keep_per_branch: i64,
    /// Step logs of builds that finished before this.
    pub logs_before: Option<i64>,
    /// Processed or rejected deliveries received before this.
    pub deliveries_before: Option<i64>,
    /// Sent or failed outbox messages created before this.
    pub messages_before: Option<i64>,
    /// The most rows of one kind (builds: builds) one batch removes.
    pub batch: i64,
}

/// What a retention run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    pub builds: i64,
    /// Builds whose step logs were removed (the builds stay).
    pub build_logs: i64,
    pub log_lines: i64,
    pub deliveries: i64,
    pub messages: i64,
    /// Bytes the database file gave back (SQLite's incremental vacuum); 0 on PostgreSQL,
    /// whose autovacuum reuses the space.
    pub bytes_freed: i64,
    /// Batches it took.
    pub batches: i64,
}

impl RetentionReport {
    fn add(&mut self, other: RetentionReport) {
        self.builds += other.builds;
        self.build_logs += other.build_logs;
        self.log_lines += other.log_lines;
        self.deliveries += other.deliveries;
        self.messages += other.messages;
        self.bytes_freed += other.bytes_freed;
    }

    fn is_empty(&self) -> bool {
        self.builds + self.build_logs + self.deliveries + self.messages == 0
    }
}

/// Ids as SQL text: they come from the database as integers, never from a caller.
fn id_list(ids: &[i64]) -> String {
    ids.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Removes one batch of old builds, or, when none is left, one batch of each other kind
    /// the policy names; an empty report means nothing is left to remove.
    pub async fn prune_batch(&self, policy: &RetentionPolicy, now: i64) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        if let Some(before) = policy.builds_before {
            // Ranked among all builds of their branch, newest first; only finished ones that
            // are reported and have nothing left to send may go.
            let ids: Vec<i64> = db::query_scalar(
                "SELECT id FROM (SELECT id, finished_at, status, notified_status, \
                 ROW_NUMBER() OVER (PARTITION BY repo_id, branch ORDER BY number DESC) AS newer \
                 FROM builds) ranked \
                 WHERE newer > $1 AND finished_at IS NOT NULL AND finished_at < $2 \
                 AND notified_status = status \
                 AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.build_id = ranked.id \
                 AND outbox.state = 'pending') ORDER BY id LIMIT $3",
            )
            .bind(policy.keep_per_branch)
            .bind(before)
            .bind(policy.batch)
            .fetch_all(&self.pool)
            .await?;
            if !ids.is_empty() {
                let list = id_list(&ids);
                let lines = self
                    .drop_logs_then(&ids, format!("DELETE FROM builds WHERE id IN ({list})"))
                    .await?;
                report.builds = ids.len() as i64;
                report.log_lines += lines;
                // Builds first, to the end: their logs are not counted twice.
                return Ok(report);
            }
        }
        if let Some(before) = policy.logs_before {
            let ids: Vec<i64> = db::query_scalar(
                "SELECT id FROM builds WHERE finished_at IS NOT NULL AND finished_at < $1 \
                 AND logs_removed_at IS NULL ORDER BY id LIMIT $2",
            )
            .bind(before)
            .bind(policy.batch)
            .fetch_all(&self.pool)
            .await?;
            if !ids.is_empty() {
                let list = id_list(&ids);
                let lines = self
                    .drop_logs_then(
                        &ids,
                        format!("UPDATE builds SET logs_removed_at = {now} WHERE id IN ({list})"),
                    )
                    .await?;
                report.build_logs = ids.len() as i64;
                report.log_lines += lines;
            }
        }
        if let Some(before) = policy.deliveries_before {
            report.deliveries = db::query(
                "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
                 WHERE state <> 'pending' AND received_at < $1 ORDER BY id LIMIT $2)",
            )
            .bind(before)
            .bind(policy.batch * 10)
            .execute(&self.pool)
            .await?
            .rows_affected() as i64;
        }
        if let Some(before) = policy.messages_before {
            report.messages = db::query(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
                 WHERE state <> 'pending' AND created_at < $1 ORDER BY id LIMIT $2)",
            )
            .bind(before)
            .bind(policy.batch * 10)
            .execute(&self.pool)
            .await?
            .rows_affected() as i64;
        }
        Ok(report)
    }

    /// Removes the step logs of builds `ids` and then runs `then` (SQL made of integers only:
    /// ids and times from the database and the clock), in one transaction; returns how many
    /// log lines went.
    async fn drop_logs_then(&self, ids: &[i64], then: String) -> Result<i64> {
        let list = id_list(ids);
        let steps = format!(
            "SELECT steps.id FROM steps JOIN stages ON steps.stage_id = stages.id \
             WHERE stages.build_id IN ({list})"
        );
        let mut tx = self.begin().await?;
        let lines: Option<i64> = db::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(SUM(line_count) AS BIGINT) FROM log_chunks WHERE step_id IN ({steps})"
        )))
        .fetch_one(&mut tx)
        .await?;
        db::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM log_chunks WHERE step_id IN ({steps})"
        )))
        .execute(&mut tx)
        .await?;
        db::query(sqlx::AssertSqlSafe(then))
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(lines.unwrap_or(0))
    }

    /// Removes everything the policy names, batch by batch, then gives SQLite's free pages
    /// back to the file system.
    pub async fn prune(&self, policy: &RetentionPolicy, now: i64) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        loop {
            let batch = self.prune_batch(policy, now).await?;
            if batch.is_empty() {
                break;
            }
            report.batches += 1;
            report.add(batch);
            // Let other writers in between batches (SQLite has one writer at a time).
            tokio::task::yield_now().await;
        }
        report.bytes_freed = self.reclaim_space().await?;
        Ok(report)
    }

    /// SQLite: returns free pages to the file system (incremental vacuum; the first time on
    /// a database made before that mode was set, a full `VACUUM` switches it on). PostgreSQL
    /// reuses free space by itself: 0.
    pub async fn reclaim_space(&self) -> Result<i64> {
        let Pool::Sqlite(pool) = &self.pool else {
            return Ok(0);
        };
        let size = async || -> Result<i64> {
            let pages: i64 = db::query_scalar("PRAGMA page_count")
                .fetch_one(pool)
                .await?;
            let page_size: i64 = db::query_scalar("PRAGMA page_size").fetch_one(pool).await?;
            Ok(pages * page_size)
        };
        let before = size().await?;
        let mode: i64 = db::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(pool)
            .await?;
        if mode != 2 {
            db::query("PRAGMA auto_vacuum = INCREMENTAL")
                .execute(pool)
                .await?;
            db::query("VACUUM").execute(pool).await?;
        } else {
            db::query("PRAGMA incremental_vacuum").execute(pool).await?;
        }
        Ok((before - size().await?).max(0))
    }

    /// Takes the run of maintenance job `name` when it is due at `now`, until `lease_until`;
    /// its claim epoch, or `None` when it is not due or another server has it. A job never
    /// run before is due.
    pub async fn claim_maintenance(
        &self,
        name: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<i64>> {
        db::query(
            "INSERT INTO maintenance (name, next_run_at) VALUES ($1, 0) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        db::query_scalar(
            "UPDATE maintenance SET claimed_until = $3, claim_epoch = claim_epoch + 1 \
             WHERE name = $1 AND next_run_at <= $2 AND claimed_until <= $2 \
             RETURNING claim_epoch",
        )
        .bind(name)
        .bind(now)
        .bind(lease_until)
        .fetch_optional(&self.pool)
        .await
    }

    /// Records a finished run under its claim and when the next is due; `false` when the
    /// claim was no longer this server's.
    pub async fn maintenance_done(
        &self,
        name: &str,
        epoch: i64,
        now: i64,
        next_run_at: i64,
        report: &RetentionReport,
    ) -> Result<bool> {
        let report = serde_json::to_string(report)
            .map_err(|e| crate::StoreError::corrupt("maintenance report", e))?;
        Ok(db::query(
            "UPDATE maintenance SET next_run_at = $3, claimed_until = 0, last_run_at = $4, \
             last_report = $5 WHERE name = $1 AND claim_epoch = $2",
        )
        .bind(name)
        .bind(epoch)
        .bind(next_run_at)
        .bind(now)
        .bind(report)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }

    /// When job `name` last ran and what it did, if it ever did.
    pub async fn last_maintenance(&self, name: &str) -> Result<Option<(i64, RetentionReport)>> {
        let row: Option<(Option<i64>, Option<String>)> =
            db::query_as("SELECT last_run_at, last_report FROM maintenance WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some((Some(at), Some(report))) => {
                let report = serde_json::from_str(&report)
                    .map_err(|e| crate::StoreError::corrupt("maintenance report", e))?;
                Ok(Some((at, report)))
            }
            _ => Ok(None),
        }
    }
}
