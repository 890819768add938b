//! The stage queue and its leases. A runner claims a pending stage atomically (PostgreSQL:
//! `FOR UPDATE SKIP LOCKED`; SQLite: a conditional update inside `BEGIN IMMEDIATE`), which
//! bumps the stage's lease epoch; every later write from that runner names the epoch and is
//! refused once the lease is gone. Leases expire unless heartbeated; the reaper ends (or
//! re-queues) what an expired lease held, so no stage stays running forever.

use std::collections::BTreeMap;

use gantry_pipeline::Stage as PlanStage;
use gantry_proto::{Offer, StepState, StepUpdate};

use crate::builds::advance_build;
use crate::{Event, Pool, Result, Status, Store, StoreError, with_pool};

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for LeaseError {
    fn from(e: sqlx::Error) -> Self {
        LeaseError::Store(e.into())
    }
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

/// A pending stage as the claim sees it.
#[derive(sqlx::FromRow)]
struct Candidate {
    id: i64,
    labels: String,
    platform: String,
    backend: String,
    trusted: bool,
    name: String,
    repo_id: i64,
    owner: String,
    locks: String,
    concurrency: Option<i64>,
}

impl Candidate {
    fn gated(&self) -> bool {
        self.locks != "[]" || self.concurrency.is_some()
    }
}

/// What running stages hold against gated candidates: their locks, and how many run of each
/// repository's pipeline. Read once per claim (running stages are as many as the runners'
/// capacity), so a queue of held-back stages costs no query each.
#[derive(Debug, Default)]
struct Gates {
    locks: std::collections::BTreeSet<String>,
    running: BTreeMap<(i64, String), i64>,
}

impl Gates {
    fn from_running(rows: Vec<(i64, String, String)>) -> Self {
        let mut gates = Gates::default();
        for (repo_id, name, locks) in rows {
            gates
                .locks
                .extend(serde_json::from_str::<Vec<String>>(&locks).unwrap_or_default());
            *gates.running.entry((repo_id, name)).or_default() += 1;
        }
        gates
    }

    /// Whether a gated candidate may start now: none of its locks is held, and its pipeline
    /// runs fewer than its limit in its repository.
    fn open(&self, candidate: &Candidate) -> bool {
        let wanted: Vec<String> = serde_json::from_str(&candidate.locks).unwrap_or_default();
        let free = wanted.iter().all(|lock| !self.locks.contains(lock));
        let under_limit = candidate.concurrency.is_none_or(|limit| {
            let key = (candidate.repo_id, candidate.name.clone());
            self.running.get(&key).copied().unwrap_or(0) < limit
        });
        free && under_limit
    }
}

/// Whether the runner's offer may run the stage, and its labels and platform match.
fn runner_can_take(request: &ClaimRequest, candidate: &Candidate) -> bool {
    let placeable = crate::builds::backend_from_column(&candidate.backend).is_some_and(|backend| {
        gantry_proto::place(request.offer, backend, candidate.trusted).is_ok()
    });
    let owner_allowed = request.owners.is_empty()
        || request
            .owners
            .iter()
            .any(|owner| owner.eq_ignore_ascii_case(&candidate.owner));
    owner_allowed
        && placeable
        && labels_and_platform_match(request, &candidate.labels, &candidate.platform)
}

/// Whether a stage's labels and platform are among what a runner offers.
fn labels_and_platform_match(request: &ClaimRequest, labels: &str, platform: &str) -> bool {
    serde_json::from_str::<BTreeMap<String, String>>(labels).is_ok_and(|wanted| {
        gantry_proto::labels_mismatch(&request.labels, &request.platform, &wanted, platform)
            .is_none()
    })
}

/// Writes one step's update if the lease `($stage, $epoch)` is held; evaluates to the number
/// of rows changed (0: lease lost or no such step).
macro_rules! write_step {
    ($conn:expr, $stage:expr, $epoch:expr, $update:expr) => {{
        let update: &StepUpdate = $update;
        sqlx::query(
            "UPDATE steps SET status = $4, exit_code = COALESCE($5, exit_code), \
             error = COALESCE($6, error), started_at = COALESCE(started_at, $7), \
             finished_at = COALESCE($8, finished_at) \
             WHERE stage_id = $1 AND name = $3 AND EXISTS (SELECT 1 FROM stages \
             WHERE id = $1 AND lease_epoch = $2 AND status = 'running')",
        )
        .bind($stage)
        .bind($epoch)
        .bind(&update.step)
        .bind(Status::from(update.state).as_str())
        .bind(update.exit_code.map(i64::from))
        .bind(update.error.as_deref())
        .bind(update.started_at.map(|t| t.timestamp_millis()))
        .bind(update.finished_at.map(|t| t.timestamp_millis()))
        .execute($conn)
        .await?
        .rows_affected()
    }};
}

/// Ends a stage that lost its runner, in the transaction `$tx`: back to the queue if no
/// step had started, else `error` with `$message`. Evaluates to a [`Reaped`], or `None` when
/// the stage was no longer running.
macro_rules! reap_stage {
    ($tx:ident, $stage:expr, $epoch:expr, $expired_before:expr, $message:expr, $now:expr) => {{
        let stage_id: i64 = $stage;
        let now: i64 = $now;
        // Taken first, as a compare-and-set on the epoch the reaper saw: a heartbeat that
        // renewed the lease since, or another server's reaper that got there first, leaves
        // nothing to take. Bumping the epoch shuts the runner's later writes out.
        let expired_before: Option<i64> = $expired_before;
        let build_id: Option<i64> = sqlx::query_scalar(
            "UPDATE stages SET lease_epoch = $4 WHERE id = $1 AND lease_epoch = $2 \
             AND status = 'running' \
             AND (CAST($3 AS BIGINT) IS NULL OR lease_expires_at < CAST($3 AS BIGINT)) \
             RETURNING build_id",
        )
        .bind(stage_id)
        .bind($epoch)
        .bind(expired_before)
        .bind($crate::queue::fresh_epoch())
        .fetch_optional(&mut *$tx)
        .await?;
        match build_id {
            Some(build_id) => {
                // Back to the queue only if the runner never confirmed it had the stage: a
                // confirmed one may have started a step it had not reported yet, and a step
                // (a migration, a deploy) must never run twice.
                let untouched: bool = sqlx::query_scalar(
                    "SELECT s.confirmed_at IS NULL AND NOT EXISTS (SELECT 1 FROM steps st \
                     WHERE st.stage_id = s.id AND st.started_at IS NOT NULL) \
                     FROM stages s WHERE s.id = $1",
                )
                .bind(stage_id)
                .fetch_one(&mut *$tx)
                .await?;
                let requeued = untouched;
                if requeued {
                    sqlx::query(
                        "UPDATE stages SET status = 'pending', runner = NULL, \
                         runner_instance = NULL, lease_expires_at = NULL, started_at = NULL, \
                         confirmed_at = NULL WHERE id = $1",
                    )
                    .bind(stage_id)
                    .execute(&mut *$tx)
                    .await?;
                } else {
                    let message: String = $message;
                    sqlx::query(
                        "UPDATE stages SET status = 'error', error = $2, finished_at = $3, \
                         lease_expires_at = NULL WHERE id = $1",
                    )
                    .bind(stage_id)
                    .bind(&message)
                    .bind(now)
                    .execute(&mut *$tx)
                    .await?;
                    sqlx::query(
                        "UPDATE steps SET status = 'error', error = $2, finished_at = $3 \
                         WHERE stage_id = $1 AND status = 'running'",
                    )
                    .bind(stage_id)
                    .bind(&message)
                    .bind(now)
                    .execute(&mut *$tx)
                    .await?;
                    sqlx::query(
                        "UPDATE steps SET status = 'skipped' WHERE stage_id = $1 \
                         AND status = 'pending'",
                    )
                    .bind(stage_id)
                    .execute(&mut *$tx)
                    .await?;
                }
                let advance = advance_build!($tx, build_id, now);
                Some(Reaped {
                    stage_id,
                    build_id,
                    requeued,
                    build_finished: advance.build.is_some(),
                    queued: requeued || advance.queued_any(),
                })
            }
            None => None,
        }
    }};
}

/// A lease's epoch: random, so only the runner that was given it can name it (a sequential
/// one let any runner report for another's stage by counting).
pub(crate) fn fresh_epoch() -> i64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    // Positive, and never 0 (the epoch of a stage never leased).
    (u64::from_le_bytes(bytes) >> 1).max(1) as i64
}

/// Takes the lease on stage `$id` inside `$tx`, if it is still pending. Evaluates to
/// `Option<(stage id, epoch, build id, plan)>`.
macro_rules! claim_update {
    ($tx:ident, $id:expr, $request:expr, $now:expr) => {{
        let request: &ClaimRequest = $request;
        let row: Option<(i64, i64, i64, String)> = sqlx::query_as(
            "UPDATE stages SET status = 'running', runner = $2, runner_instance = $3, \
             lease_epoch = $6, lease_expires_at = $4, started_at = $5 \
             WHERE id = $1 AND status = 'pending' RETURNING id, lease_epoch, build_id, plan",
        )
        .bind($id)
        .bind(&request.runner)
        .bind(&request.instance)
        .bind(request.lease_until)
        .bind($now)
        .bind($crate::queue::fresh_epoch())
        .fetch_optional(&mut *$tx)
        .await?;
        if let Some((_, _, build_id, _)) = &row {
            sqlx::query(
                "UPDATE builds SET status = 'running', started_at = COALESCE(started_at, $2) \
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(*build_id)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        }
        row
    }};
}

/// Pending stages a claim reads at once, in queue order, until it finds one to take.
const CLAIM_PAGE: i64 = 100;

/// PostgreSQL: a transaction-wide advisory lock taken before a claim looks at locks and
/// limits. The candidates' row locks alone would not keep two claims from both seeing a lock
/// free when the two stages are on different pages. (SQLite's
/// `BEGIN IMMEDIATE` serialises every claim.)
const SERIALISE_GATED_CLAIMS: &str = "SELECT pg_advisory_xact_lock(7254713498125541)";

impl Store {
    /// Claims the oldest pending stage this runner can take, or `None`.
    pub async fn claim_next(&self, request: &ClaimRequest) -> Result<Option<Claim>> {
        let now = self.clock.now_ms();
        // The pending stages in queue order, a page at a time, locked for this transaction;
        // the first one the runner can take is claimed, however many it cannot take wait
        // ahead of it.
        macro_rules! claim_first {
            ($tx:ident, $candidates:expr, $serialise_gates:expr) => {{
                let mut claimed = None;
                let mut gates: Option<Gates> = None;
                let mut after = 0_i64;
                'pages: loop {
                    let candidates: Vec<Candidate> = sqlx::query_as($candidates)
                        .bind(after)
                        .bind(CLAIM_PAGE)
                        .fetch_all(&mut *$tx)
                        .await?;
                    let Some(last) = candidates.last() else {
                        break;
                    };
                    after = last.id;
                    for candidate in candidates.iter().filter(|c| runner_can_take(request, c)) {
                        if candidate.gated() {
                            if gates.is_none() {
                                if let Some(serialise) = $serialise_gates {
                                    // One gated claim at a time: two claims of stages wanting
                                    // one lock must not both see it free.
                                    sqlx::query(serialise).execute(&mut *$tx).await?;
                                }
                                let running: Vec<(i64, String, String)> = sqlx::query_as(
                                    "SELECT b.repo_id, s.name, s.locks FROM stages s \
                                     JOIN builds b ON b.id = s.build_id WHERE s.status = 'running'",
                                )
                                .fetch_all(&mut *$tx)
                                .await?;
                                gates = Some(Gates::from_running(running));
                            }
                            if !gates.as_ref().is_some_and(|g| g.open(candidate)) {
                                continue;
                            }
                        }
                        claimed = claim_update!($tx, candidate.id, request, now);
                        break 'pages;
                    }
                    if (candidates.len() as i64) < CLAIM_PAGE {
                        break;
                    }
                }
                $tx.commit().await?;
                claimed
            }};
        }
        let claimed: Option<(i64, i64, i64, String)> = match &self.pool {
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                claim_first!(
                    tx,
                    "SELECT s.id, s.labels, s.platform, s.backend, (r.trusted AND NOT b.fork) AS trusted, s.name, \
                     b.repo_id, r.owner, s.locks, s.concurrency FROM stages s \
                     JOIN builds b ON b.id = s.build_id JOIN repos r ON r.id = b.repo_id \
                     WHERE s.status = 'pending' AND s.id > $1 ORDER BY s.id LIMIT $2 \
                     FOR UPDATE OF s SKIP LOCKED",
                    Some(SERIALISE_GATED_CLAIMS)
                )
            }
            Pool::Sqlite(pool) => {
                // IMMEDIATE takes the write lock first: the read and the update see one state.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                claim_first!(
                    tx,
                    "SELECT s.id, s.labels, s.platform, s.backend, (r.trusted AND NOT b.fork) AS trusted, s.name, \
                     b.repo_id, r.owner, s.locks, s.concurrency FROM stages s \
                     JOIN builds b ON b.id = s.build_id JOIN repos r ON r.id = b.repo_id \
                     WHERE s.status = 'pending' AND s.id > $1 ORDER BY s.id LIMIT $2",
                    None::<&str>
                )
            }
        };
        let Some((stage_id, epoch, build_id, plan)) = claimed else {
            return Ok(None);
        };
        // The build may have started with this stage.
        self.publish(Event::BuildChanged { build: build_id }).await;
        let plan = serde_json::from_str(&plan).map_err(|e| StoreError::corrupt("stage plan", e))?;
        Ok(Some(Claim {
            stage_id,
            epoch,
            build_id,
            plan,
        }))
    }

    /// Extends the lease; returns whether the build was cancelled.
    pub async fn heartbeat(
        &self,
        stage: i64,
        epoch: i64,
        lease_until: i64,
    ) -> Result<bool, LeaseError> {
        let changed = with_pool!(self, pool => sqlx::query(
            "UPDATE stages SET lease_expires_at = $3, confirmed_at = COALESCE(confirmed_at, $4) \
             WHERE id = $1 AND lease_epoch = $2 AND status = 'running'",
        )
        .bind(stage)
        .bind(epoch)
        .bind(lease_until)
        .bind(self.clock.now_ms())
        .execute(pool)
        .await?
        .rows_affected());
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
        with_pool!(self, pool => sqlx::query(
            "UPDATE stages SET scoped_token = $3 WHERE id = $1 AND lease_epoch = $2",
        )
        .bind(stage)
        .bind(epoch)
        .bind(sealed)
        .execute(pool)
        .await
        .map(|_| ()))?;
        Ok(())
    }

    /// Takes the sealed token kept for `stage`, once: whoever gets it revokes it.
    pub async fn take_stage_token(&self, stage: i64) -> Result<Option<String>, StoreError> {
        let sealed: Option<String> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT scoped_token FROM stages WHERE id = $1 AND scoped_token <> ''",
        )
        .bind(stage)
        .fetch_optional(pool)
        .await)?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let taken = with_pool!(self, pool => sqlx::query(
            "UPDATE stages SET scoped_token = '' WHERE id = $1 AND scoped_token = $2",
        )
        .bind(stage)
        .bind(&sealed)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))?;
        Ok((taken == 1).then_some(sealed))
    }

    /// Whether the build of a leased stage was cancelled.
    pub async fn lease_cancelled(&self, stage: i64, epoch: i64) -> Result<bool, LeaseError> {
        let row: Option<(bool, String)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT b.cancel_requested, s.status FROM stages s JOIN builds b ON b.id = s.build_id \
             WHERE s.id = $1 AND s.lease_epoch = $2",
        )
        .bind(stage)
        .bind(epoch)
        .fetch_optional(pool)
        .await)?;
        match row {
            Some((cancelled, status)) if status == "running" => Ok(cancelled),
            _ => Err(LeaseError::Lost { stage, epoch }),
        }
    }

    pub async fn update_step(&self, stage: i64, update: &StepUpdate) -> Result<(), LeaseError> {
        let epoch = update.epoch;
        let changed = with_pool!(self, pool => write_step!(pool, stage, epoch, update));
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
        let outcome = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let build_id: Option<i64> = sqlx::query_scalar(
                "UPDATE stages SET status = $3, error = $4, finished_at = $5, \
                 lease_expires_at = NULL WHERE id = $1 AND lease_epoch = $2 \
                 AND status = 'running' RETURNING build_id",
            )
            .bind(stage)
            .bind(epoch)
            .bind(end.status.as_str())
            .bind(end.error.as_deref())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(build_id) = build_id else {
                return Err(LeaseError::Lost { stage, epoch });
            };
            for update in &end.steps {
                // The stage is no longer 'running'; write steps directly.
                sqlx::query(
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
                .execute(&mut *tx)
                .await?;
            }
            // Whatever the runner did not mention did not run.
            sqlx::query(
                "UPDATE steps SET status = CASE WHEN status = 'running' THEN $2 ELSE 'skipped' END, \
                 finished_at = CASE WHEN status = 'running' THEN $3 ELSE finished_at END \
                 WHERE stage_id = $1 AND status IN ('pending', 'running')",
            )
            .bind(stage)
            .bind(if end.status == Status::Killed { "killed" } else { "error" })
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let advance = advance_build!(tx, build_id, now);
            tx.commit().await?;
            Ok::<_, LeaseError>((build_id, advance.queued_any(), advance.build.is_some()))
        })?;
        self.publish(Event::StageEnded { stage }).await;
        self.publish(Event::BuildChanged { build: outcome.0 }).await;
        if outcome.1 {
            self.publish(Event::Queued).await;
        }
        Ok(outcome)
    }

    /// Ends or re-queues every running stage whose lease expired before `now`. Several
    /// servers may reap at once: each stage is taken by one of them.
    pub async fn reap_expired(&self, now: i64) -> Result<Vec<Reaped>> {
        let expired: Vec<(i64, i64, Option<String>, Option<i64>)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT id, lease_epoch, runner, lease_expires_at FROM stages \
             WHERE status = 'running' AND lease_expires_at < $1 ORDER BY id",
        )
        .bind(now)
        .fetch_all(pool)
        .await)?;
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
        let stages: Vec<(i64, i64)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT id, lease_epoch FROM stages WHERE status = 'running' AND runner = $1 \
             AND runner_instance <> $2 ORDER BY id",
        )
        .bind(runner)
        .bind(instance)
        .fetch_all(pool)
        .await)?;
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
        let reaped = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let reaped = reap_stage!(tx, stage, epoch, expired_before, message, now);
            tx.commit().await?;
            Ok::<_, StoreError>(reaped)
        })?;
        if let Some(reaped) = &reaped {
            self.publish(Event::StageEnded { stage }).await;
            self.publish(Event::BuildChanged {
                build: reaped.build_id,
            })
            .await;
            if reaped.queued {
                self.publish(Event::Queued).await;
            }
        }
        Ok(reaped)
    }

    /// Pending stages, oldest first (to tell waiting runners there is work).
    pub async fn pending_stage_count(&self) -> Result<i64> {
        Ok(with_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM stages WHERE status = 'pending'"
        )
        .fetch_one(pool)
        .await)?)
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
        let rows: Vec<(String, String, String, i64, String)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT s.locks, r.owner, r.name, b.number, s.name FROM stages s \
             JOIN builds b ON b.id = s.build_id JOIN repos r ON r.id = b.repo_id \
             WHERE s.status = 'running' AND s.locks <> '[]' ORDER BY s.id",
        )
        .fetch_all(pool)
        .await)?;
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
        Ok(with_pool!(self, pool => sqlx::query_scalar(
            "SELECT b.number FROM stages s JOIN builds b ON b.id = s.build_id \
             WHERE b.repo_id = $1 AND s.name = $2 AND s.status = 'running' ORDER BY b.number",
        )
        .bind(repo_id)
        .bind(pipeline)
        .fetch_all(pool)
        .await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(labels: &[(&str, &str)], platform: &str) -> ClaimRequest {
        ClaimRequest {
            runner: "r".into(),
            instance: "i".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            platform: platform.into(),
            offer: Offer {
                docker: true,
                host: false,
            },
            lease_until: 0,
            owners: Vec::new(),
        }
    }

    fn candidate(labels: &str, platform: &str, backend: &str, trusted: bool) -> Candidate {
        Candidate {
            id: 1,
            labels: labels.into(),
            platform: platform.into(),
            backend: backend.into(),
            trusted,
            name: "ci".into(),
            repo_id: 1,
            owner: "acme".into(),
            locks: "[]".into(),
            concurrency: None,
        }
    }

    #[test]
    fn a_runner_of_some_owners_takes_their_stages_only() {
        let mut runner = request(&[], "linux/amd64");
        let stage = candidate("{}", "", "docker", false);
        assert!(runner_can_take(&runner, &stage), "no restriction");
        runner.owners = vec!["ACME".into()];
        assert!(
            runner_can_take(&runner, &stage),
            "owners compare without case"
        );
        runner.owners = vec!["evil".into()];
        assert!(!runner_can_take(&runner, &stage));
    }

    #[test]
    fn a_runner_takes_stages_whose_labels_and_platform_it_offers() {
        let runner = request(&[("gpu", "yes"), ("zone", "eu")], "linux/amd64");
        let takes = |labels, platform| {
            runner_can_take(&runner, &candidate(labels, platform, "docker", false))
        };
        assert!(takes("{}", ""));
        assert!(takes(r#"{"gpu":"yes"}"#, "linux/"));
        assert!(takes("{}", "linux/amd64"));
        assert!(!takes(r#"{"gpu":"no"}"#, ""));
        assert!(!takes(r#"{"arch":"x"}"#, ""));
        assert!(!takes("{}", "linux/arm64"));
        assert!(!takes("{}", "windows/"));
        assert!(!takes("not json", ""));
        assert!(takes("{}", "/amd64"));
    }

    /// An arm pipeline that names a variant runs only where the runner reports it (set with
    /// its `platform` label), never on a runner of another arch.
    #[test]
    fn a_variant_is_matched_when_the_stage_names_one() {
        let arm7 = request(&[], "linux/arm/v7");
        let arm = request(&[], "linux/arm");
        let takes = |runner: &ClaimRequest, platform| {
            runner_can_take(runner, &candidate("{}", platform, "docker", false))
        };
        assert!(takes(&arm7, "linux/arm/v7"));
        assert!(takes(&arm7, "linux/arm"));
        assert!(!takes(&arm7, "linux/arm/v6"));
        assert!(
            !takes(&arm, "linux/arm/v7"),
            "the runner's variant is unknown"
        );
        assert!(!takes(&arm7, "linux/arm64"));
    }

    #[test]
    fn a_runner_takes_only_stages_its_offer_may_run() {
        let docker = request(&[], "linux/amd64");
        let mut host = request(&[], "linux/amd64");
        host.offer = Offer {
            docker: false,
            host: true,
        };
        let takes = |runner: &ClaimRequest, backend, trusted| {
            runner_can_take(runner, &candidate("{}", "", backend, trusted))
        };
        assert!(takes(&docker, "docker", false));
        assert!(!takes(&docker, "local", true));
        assert!(!takes(&docker, "kubernetes", true));
        assert!(
            !takes(&host, "docker", false),
            "untrusted work never runs on a host"
        );
        assert!(!takes(&host, "local", false));
        assert!(takes(&host, "local", true));
        assert!(takes(&host, "docker", true));
        assert!(!takes(&host, "no such backend", true));
    }
}
