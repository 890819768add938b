//! The stage queue and its leases. A runner claims a pending stage atomically (PostgreSQL:
//! `FOR UPDATE SKIP LOCKED`; SQLite: a conditional update inside `BEGIN IMMEDIATE`), which
//! bumps the stage's lease epoch; every later write from that runner names the epoch and is
//! refused once the lease is gone. Leases expire unless heartbeated; the reaper ends (or
//! re-queues) what an expired lease held, so no stage stays running forever.

use std::collections::BTreeMap;

use gantry_pipeline::Stage as PlanStage;
use gantry_proto::{Offer, StepState, StepUpdate};

use crate::builds::advance_build;
use crate::db::{self, Target, Tx};
use crate::{Event, Result, Status, Store, StoreError};

mod claim;

/// What a runner asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub runner: String,
    pub instance: String,
    pub labels: BTreeMap<String, String>,
    /// `os/arch`.
    pub platform: String,
    /// Where it can run steps: it is handed only stages `gantry_proto::place` allows.
    pub offer: Offer,
    /// The lease lasts until this time unless heartbeated.
    pub lease_until: i64,
    /// Only stages of these owners' repositories (compared without case); empty: any.
    pub owners: Vec<String>,
}

/// A claimed stage.
#[derive(Debug, Clone)]
pub struct Claim {
    pub stage_id: i64,
    pub epoch: i64,
    pub build_id: i64,
    pub plan: PlanStage,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "the lease on stage {stage} (epoch {epoch}) is no longer held: the stage ended or was handed to another runner"
    )]
    Lost { stage: i64, epoch: i64 },
    #[error("stage {stage} has no step named `{step}`")]
    NoSuchStep { stage: i64, step: String },
    #[error(
        "log line {number} of step `{step}` is out of range: lines are numbered from 1 to {}",
        crate::MAX_LINE_NUMBER
    )]
    LineOutOfRange { step: String, number: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a runner says a stage ended.
#[derive(Debug, Clone)]
pub struct StageEnd {
    pub status: Status,
    pub error: Option<String>,
    pub steps: Vec<StepUpdate>,
}

/// What the reaper did to one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub stage_id: i64,
    pub build_id: i64,
    /// Whether it went back to the queue (no step had started) instead of ending in error.
    pub requeued: bool,
    /// Whether the build ended with it.
    pub build_finished: bool,
    /// Whether stages were queued by it (re-queued, or dependents now free to run).
    pub queued: bool,
}

/// Writes one step's update if the lease `(stage, epoch)` is held; the number of rows
/// changed (0: lease lost or no such step).
async fn write_step(on: Target<'_>, stage: i64, epoch: i64, update: &StepUpdate) -> Result<u64> {
    Ok(db::query(
        "UPDATE steps SET status = $4, exit_code = COALESCE($5, exit_code), \
         error = COALESCE($6, error), started_at = COALESCE(started_at, $7), \
         finished_at = COALESCE($8, finished_at) \
         WHERE stage_id = $1 AND name = $3 AND EXISTS (SELECT 1 FROM stages \
         WHERE id = $1 AND lease_epoch = $2 AND status = 'running')",
    )
    .bind(stage)
    .bind(epoch)
    .bind(&update.step)
    .bind(Status::from(update.state).as_str())
    .bind(update.exit_code.map(i64::from))
    .bind(update.error.as_deref())
    .bind(update.started_at.map(|t| t.timestamp_millis()))
    .bind(update.finished_at.map(|t| t.timestamp_millis()))
    .execute(on)
    .await?
    .rows_affected())
}

/// Ends a stage that lost its runner, in the transaction `tx`: back to the queue if no
/// step had started, else `error` with `message`. A [`Reaped`], or `None` when the stage was
/// no longer running.
async fn reap_stage(
    tx: &mut Tx,
    stage_id: i64,
    epoch: i64,
    expired_before: Option<i64>,
    message: String,
    now: i64,
) -> Result<Option<Reaped>> {
    // Taken first, as a compare-and-set on the epoch the reaper saw: a heartbeat that
    // renewed the lease since, or another server's reaper that got there first, leaves
    // nothing to take. Bumping the epoch shuts the runner's later writes out.
    let build_id: Option<i64> = db::query_scalar(
        "UPDATE stages SET lease_epoch = $4 WHERE id = $1 AND lease_epoch = $2 \
         AND status = 'running' \
         AND (CAST($3 AS BIGINT) IS NULL OR lease_expires_at < CAST($3 AS BIGINT)) \
         RETURNING build_id",
    )
    .bind(stage_id)
    .bind(epoch)
    .bind(expired_before)
    .bind(fresh_epoch())
    .fetch_optional(&mut *tx)
    .await?;
    Ok(match build_id {
        Some(build_id) => {
            // Back to the queue only if the runner never confirmed it had the stage: a
            // confirmed one may have started a step it had not reported yet, and a step
            // (a migration, a deploy) must never run twice.
            let untouched: bool = db::query_scalar(
                "SELECT s.confirmed_at IS NULL AND NOT EXISTS (SELECT 1 FROM steps st \
                 WHERE st.stage_id = s.id AND st.started_at IS NOT NULL) \
                 FROM stages s WHERE s.id = $1",
            )
            .bind(stage_id)
            .fetch_one(&mut *tx)
            .await?;
            let requeued = untouched;
            if requeued {
                db::query(
                    "UPDATE stages SET status = 'pending', runner = NULL, \
                     runner_instance = NULL, lease_expires_at = NULL, started_at = NULL, \
                     confirmed_at = NULL WHERE id = $1",
                )
                .bind(stage_id)
                .execute(&mut *tx)
                .await?;
            } else {
                db::query(
                    "UPDATE stages SET status = 'error', error = $2, finished_at = $3, \
                     lease_expires_at = NULL WHERE id = $1",
                )
                .bind(stage_id)
                .bind(&message)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                db::query(
                    "UPDATE steps SET status = 'error', error = $2, finished_at = $3 \
                     WHERE stage_id = $1 AND status = 'running'",
                )
                .bind(stage_id)
                .bind(&message)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                db::query(
                    "UPDATE steps SET status = 'skipped' WHERE stage_id = $1 \
                     AND status = 'pending'",
                )
                .bind(stage_id)
                .execute(&mut *tx)
                .await?;
            }
            let advance = advance_build(&mut *tx, build_id, now).await?;
            Some(Reaped {
                stage_id,
                build_id,
                requeued,
                build_finished: advance.build.is_some(),
                queued: requeued || advance.queued_any(),
            })
        }
        None => None,
    })
}

/// A lease's epoch: random, so only the runner that was given it can name it (a sequential
/// one let any runner report for another's stage by counting).
pub(crate) fn fresh_epoch() -> i64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    // Positive, and never 0 (the epoch of a stage never leased).
    (u64::from_le_bytes(bytes) >> 1).max(1) as i64
}

impl Store {
    /// Extends the lease; returns whether the build was cancelled.
    pub async fn heartbeat(
        &self,
        stage: i64,
        epoch: i64,
        lease_until: i64,
    ) -> Result<bool, LeaseError> {
        let changed = db::query(
            "UPDATE stages SET lease_expires_at = $3, confirmed_at = COALESCE(confirmed_at, $4) \
             WHERE id = $1 AND lease_epoch = $2 AND status = 'running'",
        )
        .bind(stage)
        .bind(epoch)
        .bind(lease_until)
        .bind(self.clock.now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(LeaseError::Lost { stage, epoch });
        }
        self.lease_cancelled(stage, epoch).await
    }

    /// Keeps the (sealed) token minted for the lease `epoch` of `stage`, to be revoked when
    /// it ends.
    pub async fn set_stage_token(
        &self,
        stage: i64,
        epoch: i64,
        sealed: &str,
    ) -> Result<(), StoreError> {
        db::query("UPDATE stages SET scoped_token = $3 WHERE id = $1 AND lease_epoch = $2")
            .bind(stage)
            .bind(epoch)
            .bind(sealed)
            .execute(&self.pool)
            .await
            .map(|_| ())?;
        Ok(())
    }

    /// Takes the sealed token kept for `stage`, once: whoever gets it revokes it.
    pub async fn take_stage_token(&self, stage: i64) -> Result<Option<String>, StoreError> {
        let sealed: Option<String> = db::query_scalar(
            "SELECT scoped_token FROM stages WHERE id = $1 AND scoped_token <> ''",
        )
        .bind(stage)
        .fetch_optional(&self.pool)
        .await?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let taken =
            db::query("UPDATE stages SET scoped_token = '' WHERE id = $1 AND scoped_token = $2")
                .bind(stage)
                .bind(&sealed)
                .execute(&self.pool)
                .await
                .map(|r| r.rows_affected())?;
        Ok((taken == 1).then_some(sealed))
    }

    /// Whether the build of a leased stage was cancelled.
    pub async fn lease_cancelled(&self, stage: i64, epoch: i64) -> Result<bool, LeaseError> {
        let row: Option<(bool, String)> = db::query_as(
            "SELECT b.cancel_requested, s.status FROM stages s JOIN builds b ON b.id = s.build_id \
             WHERE s.id = $1 AND s.lease_epoch = $2",
        )
        .bind(stage)
        .bind(epoch)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some((cancelled, status)) if status == "running" => Ok(cancelled),
            _ => Err(LeaseError::Lost { stage, epoch }),
        }
    }

    pub async fn update_step(&self, stage: i64, update: &StepUpdate) -> Result<(), LeaseError> {
        let epoch = update.epoch;
        let changed = write_step((&self.pool).into(), stage, epoch, update).await?;
        if changed == 0 {
            self.lease_cancelled(stage, epoch).await?;
            return Err(LeaseError::NoSuchStep {
                stage,
                step: update.step.clone(),
            });
        }
        if update.state != StepState::Running {
            self.publish(Event::StepEnded {
                stage,
                step: update.step.clone(),
            })
            .await;
        }
        Ok(())
    }

    /// Ends a leased stage with its steps' final states, and advances its build. Returns
    /// the build id, whether stages were queued, and whether the build ended.
    pub async fn finish_stage(
        &self,
        stage: i64,
        epoch: i64,
        end: &StageEnd,
    ) -> Result<(i64, bool, bool), LeaseError> {
        let now = self.clock.now_ms();
        let mut tx = self.begin().await?;
        let build_id: Option<i64> = db::query_scalar(
            "UPDATE stages SET status = $3, error = $4, finished_at = $5, \
             lease_expires_at = NULL WHERE id = $1 AND lease_epoch = $2 \
             AND status = 'running' RETURNING build_id",
        )
        .bind(stage)
        .bind(epoch)
        .bind(end.status.as_str())
        .bind(end.error.as_deref())
        .bind(now)
        .fetch_optional(&mut tx)
        .await?;
        let Some(build_id) = build_id else {
            return Err(LeaseError::Lost { stage, epoch });
        };
        for update in &end.steps {
            // The stage is no longer 'running'; write steps directly.
            db::query(
                "UPDATE steps SET status = $3, exit_code = COALESCE($4, exit_code), \
                 error = COALESCE($5, error), started_at = COALESCE(started_at, $6), \
                 finished_at = COALESCE(finished_at, $7) WHERE stage_id = $1 AND name = $2",
            )
            .bind(stage)
            .bind(&update.step)
            .bind(Status::from(update.state).as_str())
            .bind(update.exit_code.map(i64::from))
            .bind(update.error.as_deref())
            .bind(update.started_at.map(|t| t.timestamp_millis()))
            .bind(update.finished_at.map(|t| t.timestamp_millis()))
            .execute(&mut tx)
            .await?;
        }
        // Whatever the runner did not mention did not run.
        db::query(
            "UPDATE steps SET status = CASE WHEN status = 'running' THEN $2 ELSE 'skipped' END, \
             finished_at = CASE WHEN status = 'running' THEN $3 ELSE finished_at END \
             WHERE stage_id = $1 AND status IN ('pending', 'running')",
        )
        .bind(stage)
        .bind(if end.status == Status::Killed {
            "killed"
        } else {
            "error"
        })
        .bind(now)
        .execute(&mut tx)
        .await?;
        let advance = advance_build(&mut tx, build_id, now).await?;
        tx.commit().await?;
        let outcome = (build_id, advance.queued_any(), advance.build.is_some());
        let mut news = vec![
            Event::StageEnded { stage },
            Event::BuildChanged { build: outcome.0 },
        ];
        if outcome.1 {
            news.push(Event::Queued);
        }
        self.publish_all(news).await;
        Ok(outcome)
    }

    /// Ends or re-queues every running stage whose lease expired before `now`. Several
    /// servers may reap at once: each stage is taken by one of them.
    pub async fn reap_expired(&self, now: i64) -> Result<Vec<Reaped>> {
        let expired: Vec<(i64, i64, Option<String>, Option<i64>)> = db::query_as(
            "SELECT id, lease_epoch, runner, lease_expires_at FROM stages \
             WHERE status = 'running' AND lease_expires_at < $1 ORDER BY id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut reaped = Vec::new();
        for (stage, epoch, runner, expired_at) in expired {
            let when = expired_at
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default();
            let message = format!(
                "runner {} stopped heartbeating: its lease on this stage expired at {when}; \
                 the steps it was running are marked as errors",
                runner.as_deref().unwrap_or("(unknown)")
            );
            if let Some(done) = self.reap_one(stage, epoch, Some(now), message, now).await? {
                reaped.push(done);
            }
        }
        Ok(reaped)
    }

    /// Ends or re-queues the stages a runner held in an earlier life: it restarted (the
    /// same name, another instance), so they can never be finished.
    pub async fn reap_previous_instance(
        &self,
        runner: &str,
        instance: &str,
    ) -> Result<Vec<Reaped>> {
        let now = self.clock.now_ms();
        let stages: Vec<(i64, i64)> = db::query_as(
            "SELECT id, lease_epoch FROM stages WHERE status = 'running' AND runner = $1 \
             AND runner_instance <> $2 ORDER BY id",
        )
        .bind(runner)
        .bind(instance)
        .fetch_all(&self.pool)
        .await?;
        let mut reaped = Vec::new();
        for (stage, epoch) in stages {
            let message = format!(
                "runner {runner} restarted while running this stage; the steps it was running \
                 are marked as errors"
            );
            if let Some(done) = self.reap_one(stage, epoch, None, message, now).await? {
                reaped.push(done);
            }
        }
        Ok(reaped)
    }

    /// Reaps `stage` if it is still held under `epoch` (and, with `expired_before`, its
    /// lease still ended before then).
    async fn reap_one(
        &self,
        stage: i64,
        epoch: i64,
        expired_before: Option<i64>,
        message: String,
        now: i64,
    ) -> Result<Option<Reaped>> {
        let mut tx = self.begin().await?;
        let reaped = reap_stage(&mut tx, stage, epoch, expired_before, message, now).await?;
        tx.commit().await?;
        if let Some(reaped) = &reaped {
            let mut news = vec![
                Event::StageEnded { stage },
                Event::BuildChanged {
                    build: reaped.build_id,
                },
            ];
            if reaped.queued {
                news.push(Event::Queued);
            }
            self.publish_all(news).await;
        }
        Ok(reaped)
    }

    /// Pending stages, oldest first (to tell waiting runners there is work).
    pub async fn pending_stage_count(&self) -> Result<i64> {
        db::query_scalar("SELECT COUNT(*) FROM stages WHERE status = 'pending'")
            .fetch_one(&self.pool)
            .await
    }
}

/// A running stage that holds a lock another stage waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub lock: String,
    /// `owner/name`.
    pub repo: String,
    pub build: i64,
    pub stage: String,
}

impl Store {
    /// Which running stages hold any of `locks`.
    pub async fn lock_holders(&self, locks: &[String]) -> Result<Vec<LockHolder>> {
        if locks.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String, String, i64, String)> = db::query_as(
            "SELECT s.locks, r.owner, r.name, b.number, s.name FROM stages s \
             JOIN builds b ON b.id = s.build_id JOIN repos r ON r.id = b.repo_id \
             WHERE s.status = 'running' AND s.locks <> '[]' ORDER BY s.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut holders = Vec::new();
        for (held, owner, name, build, stage) in rows {
            let held: Vec<String> = serde_json::from_str(&held).unwrap_or_default();
            for lock in held.into_iter().filter(|l| locks.contains(l)) {
                holders.push(LockHolder {
                    lock,
                    repo: format!("{owner}/{name}"),
                    build,
                    stage: stage.clone(),
                });
            }
        }
        Ok(holders)
    }

    /// The numbers of the builds of `repo_id` whose stage `pipeline` is running.
    pub async fn running_pipeline(&self, repo_id: i64, pipeline: &str) -> Result<Vec<i64>> {
        db::query_scalar(
            "SELECT b.number FROM stages s JOIN builds b ON b.id = s.build_id \
             WHERE b.repo_id = $1 AND s.name = $2 AND s.status = 'running' ORDER BY b.number",
        )
        .bind(repo_id)
        .bind(pipeline)
        .fetch_all(&self.pool)
        .await
    }
}
