//! Builds, their stages and steps. A build is created in one transaction with every stage
//! and step of its plan (and the delivery that caused it marked processed), so a build either
//! exists whole or not at all. Stages then move through the queue (`queue`), and
//! [`advance`] decides, each time one ends, which waiting stages are queued or skipped and
//! when the build is over.

use std::collections::{BTreeMap, HashMap};

use gantry_pipeline::{Context, Event as BuildEvent, Plan};
use serde::Serialize;

use crate::db::{self, FromText, Text, Tx, text_columns};
use crate::{Event, Result, Status, Store, StoreError};

pub(crate) mod advance;
pub(crate) mod approvals;
pub(crate) mod environments;

pub use approvals::{NewProtection, ProtectedEnvironment, StageApproval};

pub(crate) use advance::advance_build;

/// A build as its row holds it (`SELECT * FROM builds`): a new column is added in the
/// migrations, here and in the API's view, nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Build {
    pub id: i64,
    pub repo_id: i64,
    pub number: i64,
    /// The build this one restarts.
    pub parent: Option<i64>,
    #[sqlx(try_from = "Text<BuildEvent>")]
    pub event: BuildEvent,
    pub action: Option<String>,
    #[sqlx(rename = "ref")]
    pub reference: String,
    pub branch: String,
    pub tag: Option<String>,
    #[sqlx(rename = "commit_sha")]
    pub commit: String,
    pub message: String,
    pub author: String,
    pub sender: String,
    pub pull_request: Option<i64>,
    pub source_branch: Option<String>,
    pub target_branch: Option<String>,
    pub deploy_to: Option<String>,
    #[sqlx(try_from = "Text<BTreeMap<String, String>>")]
    pub params: BTreeMap<String, String>,
    #[sqlx(try_from = "Text<Status>")]
    pub status: Status,
    /// Why the build errored: for an invalid pipeline file, its `FILE:LINE:COLUMN` errors.
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The status its notifications were last made for.
    #[sqlx(try_from = "Text<Option<Status>>")]
    pub notified_status: Option<Status>,
    /// A pull request from a fork: it gets only secrets that allow pull requests.
    pub fork: bool,
    /// When retention removed its step logs (the build stays).
    pub logs_removed_at: Option<i64>,
}

impl FromText for BuildEvent {
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e| format!("{e}"))
    }
}

impl FromText for Status {
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
    }
}

impl FromText for BTreeMap<String, String> {
    fn from_text(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }
}

text_columns!(BuildEvent, Status, BTreeMap<String, String>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub id: i64,
    pub build_id: i64,
    pub number: i64,
    pub name: String,
    pub status: Status,
    pub error: Option<String>,
    pub depends_on: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub platform: String,
    /// The pipeline's `type`.
    pub backend: gantry_pipeline::model::PipelineType,
    pub runner: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Lock names it holds while it runs.
    pub locks: Vec<String>,
    /// Its pipeline's `concurrency: {limit}`.
    pub concurrency: Option<i64>,
    /// Who may let it start, when it deploys to a protected environment.
    pub approval: Option<StageApproval>,
    /// Who approved or declined it.
    pub decided_by: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct StageRow {
    id: i64,
    build_id: i64,
    number: i64,
    name: String,
    #[sqlx(try_from = "String")]
    status: Status,
    error: Option<String>,
    depends_on: String,
    labels: String,
    platform: String,
    backend: String,
    runner: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    locks: String,
    concurrency: Option<i64>,
    approval: Option<String>,
    decided_by: Option<String>,
}

const STAGE_COLUMNS: &str = "id, build_id, number, name, status, error, depends_on, labels, \
     platform, backend, runner, created_at, started_at, finished_at, locks, concurrency, \
     approval, decided_by";

impl TryFrom<StageRow> for Stage {
    type Error = StoreError;
    fn try_from(row: StageRow) -> Result<Self> {
        Ok(Stage {
            id: row.id,
            build_id: row.build_id,
            number: row.number,
            name: row.name,
            status: row.status,
            error: row.error,
            depends_on: serde_json::from_str(&row.depends_on)
                .map_err(|e| StoreError::corrupt("stage dependencies", e))?,
            labels: serde_json::from_str(&row.labels)
                .map_err(|e| StoreError::corrupt("stage labels", e))?,
            platform: row.platform,
            backend: backend_from_column(&row.backend).ok_or_else(|| {
                StoreError::corrupt(
                    "stage backend",
                    format!("`{}` is no pipeline type", row.backend),
                )
            })?,
            runner: row.runner,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            locks: serde_json::from_str(&row.locks)
                .map_err(|e| StoreError::corrupt("stage locks", e))?,
            concurrency: row.concurrency,
            approval: row
                .approval
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| StoreError::corrupt("stage approval", e))?,
            decided_by: row.decided_by,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Step {
    pub id: i64,
    pub stage_id: i64,
    pub number: i64,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub kind: gantry_pipeline::StepKind,
    #[sqlx(try_from = "String")]
    pub status: Status,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

pub(crate) const STEP_COLUMNS: &str =
    "id, stage_id, number, name, kind, status, exit_code, error, started_at, finished_at";

/// A build to create: the context its plan was compiled with, and the plan or why there is
/// none.
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub repo_id: i64,
    /// From [`Store::take_build_number`]; the context's `build_number` is the same.
    pub number: i64,
    pub context: Context,
    pub sender: String,
    /// `Err` holds the message of a build that cannot run (an invalid pipeline file).
    pub plan: Result<Plan, String>,
    /// The delivery this build comes from: marked processed in the same transaction.
    pub delivery: Option<i64>,
    /// A pull request from a fork.
    pub fork: bool,
    /// Held as `blocked` until approved (`approve_build`) or declined.
    pub hold: bool,
    /// Stages (by number) that deploy to a protected environment: each is held as `blocked`
    /// until one of those named approves it (`approve_stage`) or declines it.
    pub approvals: BTreeMap<u32, StageApproval>,
    /// The schedule this build is a run of: moved on in the same transaction.
    pub schedule: Option<crate::ScheduleRun>,
}

/// Which builds to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    pub branch: Option<String>,
    pub status: Option<Status>,
    /// Only builds numbered below this (the next page).
    pub before: Option<i64>,
    pub limit: i64,
}

fn platform_label(platform: &gantry_pipeline::model::Platform) -> String {
    match (&platform.os, &platform.arch, &platform.variant) {
        (None, None, None) => String::new(),
        (os, arch, variant) => {
            let mut label = format!(
                "{}/{}",
                os.as_deref().unwrap_or(""),
                arch.as_deref().unwrap_or("")
            );
            if let Some(variant) = variant {
                label.push('/');
                label.push_str(variant);
            }
            label
        }
    }
}

/// `stages.backend` holds a pipeline type as the plan's JSON names it (`docker`, `local`...),
/// so the migration could fill it from stored plans.
fn backend_column(backend: gantry_pipeline::model::PipelineType) -> String {
    json(&backend).trim_matches('"').to_owned()
}

pub(crate) fn backend_from_column(text: &str) -> Option<gantry_pipeline::model::PipelineType> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

/// A delivery makes one build: the first transaction to take it wins; another (a second
/// server, a retry) finds it processed and makes none.
async fn take_delivery(tx: &mut Tx, delivery: i64) -> Result<()> {
    let taken =
        db::query("UPDATE deliveries SET state = 'processed' WHERE id = $1 AND state = 'pending'")
            .bind(delivery)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if taken == 0 {
        return Err(StoreError::Conflict(format!(
            "delivery #{delivery} was already processed"
        )));
    }
    Ok(())
}

/// The build's row and its compile context; its id.
async fn insert_build(tx: &mut Tx, new: &NewBuild, now: i64) -> Result<i64> {
    let ctx = &new.context;
    let (status, error) = match &new.plan {
        Ok(_) if new.hold => (Status::Blocked, None),
        Ok(_) => (Status::Pending, None),
        Err(message) => (Status::Error, Some(message.as_str())),
    };
    let build_id: i64 = db::query_scalar(
        "INSERT INTO builds (repo_id, number, parent, event, action, ref, branch, tag, \
         commit_sha, message, author, sender, pull_request, source_branch, target_branch, \
         deploy_to, params, status, error, created_at, finished_at, fork) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
         $17, $18, $19, $20, $21, $22) RETURNING id",
    )
    .bind(new.repo_id)
    .bind(new.number)
    .bind(ctx.parent.map(|p| p as i64))
    .bind(ctx.event.as_str())
    .bind(ctx.action.as_deref())
    .bind(&ctx.reference)
    .bind(&ctx.branch)
    .bind(ctx.tag.as_deref())
    .bind(&ctx.commit)
    .bind(&ctx.message)
    .bind(&ctx.author)
    .bind(&new.sender)
    .bind(ctx.pull_request.map(|p| p as i64))
    .bind(ctx.pull_request.map(|_| ctx.branch.as_str()))
    .bind(ctx.target_branch.as_deref())
    .bind(ctx.deploy_target.as_deref())
    .bind(json(&ctx.params))
    .bind(status.as_str())
    .bind(error)
    .bind(now)
    .bind(error.map(|_| now))
    .bind(new.fork)
    .fetch_one(&mut *tx)
    .await?;
    db::query("INSERT INTO build_contexts (build_id, context) VALUES ($1, $2)")
        .bind(build_id)
        .bind(json(ctx))
        .execute(&mut *tx)
        .await?;
    Ok(build_id)
}

/// Every stage and step of the plan, the stages without dependencies queued (unless the
/// build is held); whether any was, and the stages' ids in the plan's order.
async fn insert_stages(
    tx: &mut Tx,
    build_id: i64,
    plan: &Plan,
    (hold, approvals): (bool, &BTreeMap<u32, StageApproval>),
    now: i64,
) -> Result<(bool, Vec<i64>)> {
    let mut queued = false;
    let mut stage_ids = Vec::with_capacity(plan.stages.len());
    for stage in &plan.stages {
        let approval = approvals.get(&stage.number).filter(|_| stage.run);
        let stage_status = if !stage.run {
            Status::Skipped
        } else if hold || approval.is_some() {
            Status::Blocked
        } else if stage.depends_on.is_empty() {
            queued = true;
            Status::Pending
        } else {
            Status::Waiting
        };
        let stage_id: i64 = db::query_scalar(
            "INSERT INTO stages (build_id, number, name, status, error, depends_on, \
             runs_on, labels, platform, plan, created_at, finished_at, backend, \
             locks, concurrency, approval) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15, $16) RETURNING id",
        )
        .bind(build_id)
        .bind(i64::from(stage.number))
        .bind(&stage.name)
        .bind(stage_status.as_str())
        .bind(stage.reason.as_deref())
        .bind(json(&stage.depends_on))
        .bind(json(&stage.runs_on))
        .bind(json(&stage.labels))
        .bind(platform_label(&stage.platform))
        .bind(json(stage))
        .bind(now)
        .bind(stage_status.is_final().then_some(now))
        .bind(backend_column(stage.backend))
        .bind(json(&stage.locks))
        .bind(stage.concurrency.map(i64::from))
        .bind(approval.map(json))
        .fetch_one(&mut *tx)
        .await?;
        stage_ids.push(stage_id);
        for step in stage.steps.iter().chain(&stage.services) {
            let step_status = if stage.run && step.run {
                Status::Pending
            } else {
                Status::Skipped
            };
            db::query(
                "INSERT INTO steps (stage_id, number, name, kind, status, error) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(stage_id)
            .bind(i64::from(step.number))
            .bind(&step.name)
            .bind(step.kind.as_str())
            .bind(step_status.as_str())
            .bind(step.reason.as_deref())
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok((queued, stage_ids))
}

impl Store {
    /// Creates the build with its stages and steps, queues the stages that can start, and
    /// marks its delivery processed, in one transaction. Returns the build and whether any
    /// stage was queued.
    pub async fn create_build(&self, new: &NewBuild) -> Result<(Build, bool)> {
        let now = self.clock.now_ms();
        let mut tx = self.begin().await?;
        if let Some(delivery) = new.delivery {
            take_delivery(&mut tx, delivery).await?;
        }
        let build_id = insert_build(&mut tx, new, now).await?;
        if let Some(run) = &new.schedule {
            crate::schedules::record_schedule_run(&mut tx, run, build_id, now).await?;
        }
        let mut queued = false;
        let mut superseded = Vec::new();
        // A stop build takes its environment whatever becomes of it: one that cannot run
        // (an invalid file, an `on_stop` pipeline its trigger skips) shows the stop failed,
        // and is not stopped again by itself.
        let stopped = match &new.context.stopping {
            Some(stopping) => Some(
                environments::take_for_stop(&mut tx, new.repo_id, &stopping.name, build_id, now)
                    .await?,
            ),
            None => None,
        };
        if let Ok(plan) = &new.plan {
            let stage_ids;
            (queued, stage_ids) =
                insert_stages(&mut tx, build_id, plan, (new.hold, &new.approvals), now).await?;
            superseded = environments::record_deployments(
                &mut tx,
                new,
                build_id,
                (plan, &stage_ids),
                stopped,
                now,
            )
            .await?;
            if !new.hold {
                queued |= advance_build(&mut tx, build_id, now).await?.queued_any();
            }
        }
        if let Some(delivery) = new.delivery {
            db::query(
                "UPDATE deliveries SET build_id = $2, outcome = $3, processed_at = $4, \
                 payload = NULL WHERE id = $1",
            )
            .bind(delivery)
            .bind(build_id)
            .bind(format!("build #{}", new.number))
            .bind(now)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        let mut news = vec![Event::BuildChanged { build: build_id }];
        news.extend(
            superseded
                .into_iter()
                .map(|build| Event::BuildChanged { build }),
        );
        if queued {
            news.push(Event::Queued);
        }
        if new.delivery.is_some() {
            news.push(Event::DeliveryDone);
        }
        self.publish_all(news).await;
        let build = self
            .build(new.repo_id, new.number)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("build #{}", new.number)))?;
        Ok((build, queued))
    }

    pub async fn build(&self, repo_id: i64, number: i64) -> Result<Option<Build>> {
        let sql = "SELECT * FROM builds WHERE repo_id = $1 AND number = $2";
        db::query_as::<Build>(sql)
            .bind(repo_id)
            .bind(number)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn build_by_id(&self, id: i64) -> Result<Build> {
        let sql = "SELECT * FROM builds WHERE id = $1";
        db::query_as::<Build>(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("build id {id}")))
    }

    /// The context the build's plan was compiled with (a restart compiles with it again).
    pub async fn build_context(&self, id: i64) -> Result<Context> {
        let text: String =
            db::query_scalar("SELECT context FROM build_contexts WHERE build_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("build id {id}")))?;
        serde_json::from_str(&text).map_err(|e| StoreError::corrupt("build context", e))
    }

    /// Newest first.
    pub async fn list_builds(&self, repo_id: i64, filter: &BuildFilter) -> Result<Vec<Build>> {
        let sql = "SELECT * FROM builds WHERE repo_id = $1 \
             AND ($2 IS NULL OR branch = $2) AND ($3 IS NULL OR status = $3) \
             AND ($4 IS NULL OR number < $4) ORDER BY number DESC LIMIT $5";
        let rows = db::query_as::<Build>(sql)
            .bind(repo_id)
            .bind(filter.branch.as_deref())
            .bind(filter.status.map(Status::as_str))
            .bind(filter.before)
            .bind(filter.limit.clamp(1, 500))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Each branch's latest build (pushes, schedules and manual builds: not pull requests,
    /// which build on their target branch, nor tags), the most recently built branch first.
    pub async fn latest_per_branch(&self, repo_id: i64, limit: i64) -> Result<Vec<Build>> {
        let sql = "SELECT * FROM builds b WHERE b.repo_id = $1 AND b.pull_request IS NULL \
             AND b.tag IS NULL AND b.branch <> '' AND b.number = (SELECT MAX(o.number) FROM builds o \
             WHERE o.repo_id = $1 AND o.branch = b.branch AND o.pull_request IS NULL AND o.tag IS NULL) \
             ORDER BY b.number DESC LIMIT $2";
        let rows = db::query_as::<Build>(sql)
            .bind(repo_id)
            .bind(limit.clamp(1, 500))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// Builds not yet ended, oldest first.
    pub async fn unfinished_builds(&self) -> Result<Vec<Build>> {
        let sql = "SELECT * FROM builds WHERE finished_at IS NULL ORDER BY id";
        let rows = db::query_as::<Build>(sql).fetch_all(&self.pool).await?;
        Ok(rows)
    }

    pub async fn stages(&self, build_id: i64) -> Result<Vec<Stage>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {STAGE_COLUMNS} FROM stages WHERE build_id = $1 ORDER BY number"
        ));
        let rows = db::query_as::<StageRow>(sql)
            .bind(build_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(Stage::try_from).collect()
    }

    /// A build's stages, each with its steps: two queries, whatever the number of stages.
    pub async fn stages_with_steps(&self, build_id: i64) -> Result<Vec<(Stage, Vec<Step>)>> {
        let stages = self.stages(build_id).await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {STEP_COLUMNS} FROM steps \
             WHERE stage_id IN (SELECT id FROM stages WHERE build_id = $1) ORDER BY number"
        ));
        let mut steps: HashMap<i64, Vec<Step>> = HashMap::new();
        for step in db::query_as::<Step>(sql)
            .bind(build_id)
            .fetch_all(&self.pool)
            .await?
        {
            steps.entry(step.stage_id).or_default().push(step);
        }
        Ok(stages
            .into_iter()
            .map(|stage| {
                let its = steps.remove(&stage.id).unwrap_or_default();
                (stage, its)
            })
            .collect())
    }

    pub async fn stage(&self, stage_id: i64) -> Result<Stage> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {STAGE_COLUMNS} FROM stages WHERE id = $1"));
        db::query_as::<StageRow>(sql)
            .bind(stage_id)
            .fetch_optional(&self.pool)
            .await?
            .map(Stage::try_from)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("stage id {stage_id}")))
    }

    /// The plans of a build's stages, in order.
    pub async fn stage_plans(&self, build_id: i64) -> Result<Vec<gantry_pipeline::Stage>> {
        let plans: Vec<String> =
            db::query_scalar("SELECT plan FROM stages WHERE build_id = $1 ORDER BY number")
                .bind(build_id)
                .fetch_all(&self.pool)
                .await?;
        plans
            .iter()
            .map(|p| serde_json::from_str(p).map_err(|e| StoreError::corrupt("stage plan", e)))
            .collect()
    }

    /// Steps of a stage in plan order (steps, then services).
    pub async fn steps(&self, stage_id: i64) -> Result<Vec<Step>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE stage_id = $1 ORDER BY number"
        ));
        db::query_as::<Step>(sql)
            .bind(stage_id)
            .fetch_all(&self.pool)
            .await
    }

    /// A step by its build, its stage's number and its own number (as in the step's URL).
    pub async fn step_at(&self, build_id: i64, stage: i64, step: i64) -> Result<Option<Step>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM steps WHERE stage_id = \
             (SELECT id FROM stages WHERE build_id = $1 AND number = $2) AND number = $3",
            STEP_COLUMNS
        ));
        db::query_as::<Step>(sql)
            .bind(build_id)
            .bind(stage)
            .bind(step)
            .fetch_optional(&self.pool)
            .await
    }

    /// Lets a blocked build run: its stages are queued (or wait for their dependencies).
    /// Returns false when it was not blocked.
    pub async fn approve_build(&self, build_id: i64) -> Result<bool> {
        let now = self.clock.now_ms();
        let mut tx = self.begin().await?;
        let changed =
            db::query("UPDATE builds SET status = 'pending' WHERE id = $1 AND status = 'blocked'")
                .bind(build_id)
                .execute(&mut tx)
                .await?
                .rows_affected();
        if changed > 0 {
            db::query(
                "UPDATE stages SET status = CASE WHEN depends_on = '[]' THEN 'pending' \
                 ELSE 'waiting' END WHERE build_id = $1 AND status = 'blocked' \
                 AND approval IS NULL",
            )
            .bind(build_id)
            .execute(&mut tx)
            .await?;
            advance_build(&mut tx, build_id, now).await?;
        }
        tx.commit().await?;
        let approved = changed > 0;
        if approved {
            self.publish_all(vec![Event::BuildChanged { build: build_id }, Event::Queued])
                .await;
        }
        Ok(approved)
    }

    /// Ends a blocked build as `declined`; none of it runs.
    pub async fn decline_build(&self, build_id: i64) -> Result<bool> {
        let now = self.clock.now_ms();
        let mut tx = self.begin().await?;
        let changed = db::query(
            "UPDATE builds SET status = 'declined', finished_at = $2 \
             WHERE id = $1 AND status = 'blocked'",
        )
        .bind(build_id)
        .bind(now)
        .execute(&mut tx)
        .await?
        .rows_affected();
        if changed > 0 {
            db::query(
                "UPDATE stages SET status = 'skipped', error = 'the build was declined', \
                 finished_at = $2 WHERE build_id = $1 AND status = 'blocked'",
            )
            .bind(build_id)
            .bind(now)
            .execute(&mut tx)
            .await?;
            db::query(
                "UPDATE steps SET status = 'skipped' WHERE status = 'pending' \
                 AND stage_id IN (SELECT id FROM stages WHERE build_id = $1)",
            )
            .bind(build_id)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        let declined = changed > 0;
        if declined {
            self.publish(Event::BuildChanged { build: build_id }).await;
        }
        Ok(declined)
    }

    /// Asks the build to stop: stages not started are killed at once; running ones are told
    /// through their lease and end when their runner reports (or the reaper ends them).
    /// Returns false when the build had already ended.
    pub async fn cancel_build(&self, build_id: i64) -> Result<bool> {
        let now = self.clock.now_ms();
        let mut tx = self.begin().await?;
        let changed = db::query(
            "UPDATE builds SET cancel_requested = TRUE WHERE id = $1 AND finished_at IS NULL",
        )
        .bind(build_id)
        .execute(&mut tx)
        .await?
        .rows_affected();
        if changed > 0 {
            advance_build(&mut tx, build_id, now).await?;
        }
        tx.commit().await?;
        let cancelled = changed > 0;
        if cancelled {
            self.publish_all(vec![
                Event::Cancelled { build: build_id },
                Event::BuildChanged { build: build_id },
            ])
            .await;
        }
        Ok(cancelled)
    }
}
