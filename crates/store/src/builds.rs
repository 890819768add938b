//! Builds, their stages and steps. A build is created in one transaction with every stage
//! and step of its plan (and the delivery that caused it marked processed), so a build either
//! exists whole or not at all. Stages then move through the queue (`queue`), and
//! [`advance`] decides, each time one ends, which waiting stages are queued or skipped and
//! when the build is over.

use std::collections::{BTreeMap, HashMap};

use gantry_pipeline::model::StatusFilter;
use gantry_pipeline::{Context, Plan};
use serde::Serialize;

use crate::{Event, Result, Status, Store, StoreError, with_pool};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub id: i64,
    pub repo_id: i64,
    pub number: i64,
    /// The build this one restarts.
    pub parent: Option<i64>,
    pub event: String,
    pub action: Option<String>,
    pub reference: String,
    pub branch: String,
    pub tag: Option<String>,
    pub commit: String,
    pub message: String,
    pub author: String,
    pub sender: String,
    pub pull_request: Option<i64>,
    pub source_branch: Option<String>,
    pub target_branch: Option<String>,
    pub deploy_to: Option<String>,
    pub params: BTreeMap<String, String>,
    pub status: Status,
    /// Why the build errored: for an invalid pipeline file, its `FILE:LINE:COLUMN` errors.
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The status its notifications were last made for.
    pub notified_status: Option<String>,
    /// A pull request from a fork: it gets only secrets that allow pull requests.
    pub fork: bool,
    /// When retention removed its step logs (the build stays).
    pub logs_removed_at: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct BuildRow {
    id: i64,
    repo_id: i64,
    number: i64,
    parent: Option<i64>,
    event: String,
    action: Option<String>,
    #[sqlx(rename = "ref")]
    reference: String,
    branch: String,
    tag: Option<String>,
    commit_sha: String,
    message: String,
    author: String,
    sender: String,
    pull_request: Option<i64>,
    source_branch: Option<String>,
    target_branch: Option<String>,
    deploy_to: Option<String>,
    params: String,
    #[sqlx(try_from = "String")]
    status: Status,
    error: Option<String>,
    cancel_requested: bool,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    notified_status: Option<String>,
    fork: bool,
    logs_removed_at: Option<i64>,
}

pub(crate) const BUILD_COLUMNS: &str = "id, repo_id, number, parent, event, action, ref, branch, tag, \
     commit_sha, message, author, sender, pull_request, source_branch, target_branch, deploy_to, \
     params, status, error, cancel_requested, created_at, started_at, finished_at, \
     notified_status, fork, logs_removed_at";

impl TryFrom<BuildRow> for Build {
    type Error = StoreError;
    fn try_from(row: BuildRow) -> Result<Self> {
        Ok(Build {
            id: row.id,
            repo_id: row.repo_id,
            number: row.number,
            parent: row.parent,
            event: row.event,
            action: row.action,
            reference: row.reference,
            branch: row.branch,
            tag: row.tag,
            commit: row.commit_sha,
            message: row.message,
            author: row.author,
            sender: row.sender,
            pull_request: row.pull_request,
            source_branch: row.source_branch,
            target_branch: row.target_branch,
            deploy_to: row.deploy_to,
            params: serde_json::from_str(&row.params)
                .map_err(|e| StoreError::corrupt("build parameters", e))?,
            status: row.status,
            error: row.error,
            cancel_requested: row.cancel_requested,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            notified_status: row.notified_status,
            fork: row.fork,
            logs_removed_at: row.logs_removed_at,
        })
    }
}

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
}

const STAGE_COLUMNS: &str = "id, build_id, number, name, status, error, depends_on, labels, \
     platform, backend, runner, created_at, started_at, finished_at, locks, concurrency";

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
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Step {
    pub id: i64,
    pub stage_id: i64,
    pub number: i64,
    pub name: String,
    /// `clone`, `commands`, `plugin` or `service`.
    pub kind: String,
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

/// The part of a stage [`advance`] needs.
#[derive(Debug, Clone)]
pub(crate) struct StageState {
    pub id: i64,
    pub name: String,
    pub status: Status,
    pub depends_on: Vec<String>,
    pub runs_on: StatusFilter,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct StageStateRow {
    id: i64,
    name: String,
    #[sqlx(try_from = "String")]
    status: Status,
    depends_on: String,
    runs_on: String,
}

impl TryFrom<StageStateRow> for StageState {
    type Error = StoreError;
    fn try_from(row: StageStateRow) -> Result<Self> {
        Ok(StageState {
            id: row.id,
            name: row.name,
            status: row.status,
            depends_on: serde_json::from_str(&row.depends_on)
                .map_err(|e| StoreError::corrupt("stage dependencies", e))?,
            runs_on: serde_json::from_str(&row.runs_on)
                .map_err(|e| StoreError::corrupt("stage status filter", e))?,
        })
    }
}

/// What [`advance`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Advance {
    /// Stages that change state, with the reason for a skip.
    pub stages: Vec<(i64, Status, Option<String>)>,
    /// The build's final status, once every stage has one.
    pub build: Option<Status>,
}

impl Advance {
    pub fn queued_any(&self) -> bool {
        self.stages.iter().any(|(_, s, _)| *s == Status::Pending)
    }
}

/// Given a build's stages, queues the waiting ones whose dependencies have ended (or skips
/// them when their `depends_on` outcome does not let them run), kills what has not started
/// when the build is cancelled, and gives the build's final status once all have ended.
pub(crate) fn advance(stages: &[StageState], cancelled: bool) -> Advance {
    let mut status: HashMap<&str, Status> =
        stages.iter().map(|s| (s.name.as_str(), s.status)).collect();
    let mut changes: Vec<(i64, Status, Option<String>)> = Vec::new();
    loop {
        let mut changed = false;
        for stage in stages {
            let current = status[stage.name.as_str()];
            let next = match current {
                Status::Waiting | Status::Pending if cancelled => Some((
                    Status::Killed,
                    Some("the build was cancelled before this stage started".to_owned()),
                )),
                Status::Waiting => {
                    let deps: Vec<Status> = stage
                        .depends_on
                        .iter()
                        .filter_map(|d| status.get(d.as_str()).copied())
                        .collect();
                    if deps.iter().any(|s| !s.is_final()) {
                        None
                    } else if stage
                        .depends_on
                        .iter()
                        .any(|d| failed_upstream(stages, &status, d, 0))
                    {
                        Some(if stage.runs_on.failure {
                            (Status::Pending, None)
                        } else {
                            (
                                Status::Skipped,
                                Some("a stage it depends on did not succeed".to_owned()),
                            )
                        })
                    } else if stage.runs_on.success {
                        Some((Status::Pending, None))
                    } else {
                        Some((
                            Status::Skipped,
                            Some("it runs only when a stage it depends on fails".to_owned()),
                        ))
                    }
                }
                _ => None,
            };
            if let Some((next, reason)) = next {
                status.insert(stage.name.as_str(), next);
                changes.retain(|(id, _, _)| *id != stage.id);
                changes.push((stage.id, next, reason));
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let all: Vec<Status> = stages.iter().map(|s| status[s.name.as_str()]).collect();
    let build = all
        .iter()
        .all(|s| s.is_final())
        .then(|| build_status(&all, cancelled));
    Advance {
        stages: changes,
        build,
    }
}

/// Whether stage `name` failed, or was skipped because something it depends on failed
/// (so a failure reaches past the stages it skipped).
fn failed_upstream(
    stages: &[StageState],
    status: &HashMap<&str, Status>,
    name: &str,
    depth: usize,
) -> bool {
    match status.get(name) {
        Some(s) if s.is_failed() => true,
        Some(Status::Skipped) if depth < stages.len() => {
            stages.iter().find(|s| s.name == name).is_some_and(|stage| {
                stage
                    .depends_on
                    .iter()
                    .any(|d| failed_upstream(stages, status, d, depth + 1))
            })
        }
        _ => false,
    }
}

/// The status of a build whose stages all ended.
fn build_status(stages: &[Status], cancelled: bool) -> Status {
    let any = |wanted: Status| stages.contains(&wanted);
    if cancelled && any(Status::Killed) {
        Status::Killed
    } else if any(Status::Error) {
        Status::Error
    } else if any(Status::Failure) {
        Status::Failure
    } else if any(Status::Killed) {
        Status::Killed
    } else if stages.iter().all(|s| *s == Status::Skipped) {
        Status::Skipped
    } else {
        Status::Success
    }
}

/// Loads the build's stages inside the transaction `$tx`, applies [`advance`] and returns
/// its [`Advance`]. A macro because the transaction's type differs per database.
macro_rules! advance_build {
    ($tx:ident, $build_id:expr, $now:expr) => {{
        let build_id: i64 = $build_id;
        let now: i64 = $now;
        // One advance of a build at a time: two stages ending at once on two servers would
        // each read the other as still running, and neither would end the build. The row
        // lock makes the second wait for the first to commit, then read what it wrote (each
        // statement reads afresh under READ COMMITTED; SQLite has one writer anyway).
        sqlx::query("UPDATE builds SET id = id WHERE id = $1")
            .bind(build_id)
            .execute(&mut *$tx)
            .await?;
        let rows = sqlx::query_as::<_, $crate::builds::StageStateRow>(
            "SELECT id, name, status, depends_on, runs_on FROM stages WHERE build_id = $1 \
             ORDER BY number",
        )
        .bind(build_id)
        .fetch_all(&mut *$tx)
        .await?;
        let cancelled: bool =
            sqlx::query_scalar("SELECT cancel_requested FROM builds WHERE id = $1")
                .bind(build_id)
                .fetch_one(&mut *$tx)
                .await?;
        let states = rows
            .into_iter()
            .map($crate::builds::StageState::try_from)
            .collect::<$crate::Result<Vec<_>>>()?;
        let advance = $crate::builds::advance(&states, cancelled);
        for (id, status, reason) in &advance.stages {
            let ended = status.is_final();
            sqlx::query(
                "UPDATE stages SET status = $2, error = COALESCE($3, error), \
                 finished_at = CASE WHEN $4 THEN $5 ELSE finished_at END WHERE id = $1",
            )
            .bind(*id)
            .bind(status.as_str())
            .bind(reason.as_deref())
            .bind(ended)
            .bind(now)
            .execute(&mut *$tx)
            .await?;
            if ended {
                sqlx::query(
                    "UPDATE steps SET status = 'skipped' WHERE stage_id = $1 AND status = 'pending'",
                )
                .bind(*id)
                .execute(&mut *$tx)
                .await?;
            }
        }
        if let Some(status) = advance.build {
            sqlx::query(
                "UPDATE builds SET status = $2, finished_at = $3, \
                 started_at = COALESCE(started_at, $3) WHERE id = $1 AND finished_at IS NULL",
            )
            .bind(build_id)
            .bind(status.as_str())
            .bind(now)
            .execute(&mut *$tx)
            .await?;
        }
        advance
    }};
}
pub(crate) use advance_build;

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

impl Store {
    /// Creates the build with its stages and steps, queues the stages that can start, and
    /// marks its delivery processed, in one transaction. Returns the build and whether any
    /// stage was queued.
    pub async fn create_build(&self, new: &NewBuild) -> Result<(Build, bool)> {
        let ctx = &new.context;
        let now = self.clock.now_ms();
        let (status, error) = match &new.plan {
            Ok(_) if new.hold => (Status::Blocked, None),
            Ok(_) => (Status::Pending, None),
            Err(message) => (Status::Error, Some(message.as_str())),
        };
        let params = json(&ctx.params);
        let context = json(ctx);
        let (build_id, queued) = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // A delivery makes one build: the first transaction to take it wins; another
            // (a second server, a retry) finds it processed and makes none.
            if let Some(delivery) = new.delivery {
                let taken = sqlx::query(
                    "UPDATE deliveries SET state = 'processed' WHERE id = $1 AND state = 'pending'",
                )
                .bind(delivery)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if taken == 0 {
                    return Err(StoreError::Conflict(format!(
                        "delivery #{delivery} was already processed"
                    )));
                }
            }
            let build_id: i64 = sqlx::query_scalar(
                "INSERT INTO builds (repo_id, number, parent, event, action, ref, branch, tag, \
                 commit_sha, message, author, sender, pull_request, source_branch, target_branch, \
                 deploy_to, params, context, status, error, created_at, finished_at, fork) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 $17, $18, $19, $20, $21, $22, $23) RETURNING id",
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
            .bind(&params)
            .bind(&context)
            .bind(status.as_str())
            .bind(error)
            .bind(now)
            .bind(error.map(|_| now))
            .bind(new.fork)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(run) = &new.schedule {
                crate::schedules::record_schedule_run!(tx, run, build_id, now);
            }
            let mut queued = false;
            if let Ok(plan) = &new.plan {
                for stage in &plan.stages {
                    let stage_status = if !stage.run {
                        Status::Skipped
                    } else if new.hold {
                        Status::Blocked
                    } else if stage.depends_on.is_empty() {
                        queued = true;
                        Status::Pending
                    } else {
                        Status::Waiting
                    };
                    let stage_id: i64 = sqlx::query_scalar(
                        "INSERT INTO stages (build_id, number, name, status, error, depends_on, \
                         runs_on, labels, platform, plan, created_at, finished_at, backend, \
                         locks, concurrency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                         $11, $12, $13, $14, $15) RETURNING id",
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
                    .fetch_one(&mut *tx)
                    .await?;
                    for step in stage.steps.iter().chain(&stage.services) {
                        let step_status = if stage.run && step.run {
                            Status::Pending
                        } else {
                            Status::Skipped
                        };
                        sqlx::query(
                            "INSERT INTO steps (stage_id, number, name, kind, status, error) \
                             VALUES ($1, $2, $3, $4, $5, $6)",
                        )
                        .bind(stage_id)
                        .bind(i64::from(step.number))
                        .bind(&step.name)
                        .bind(json(&step.kind).trim_matches('"').to_owned())
                        .bind(step_status.as_str())
                        .bind(step.reason.as_deref())
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                if !new.hold {
                    let advance = advance_build!(tx, build_id, now);
                    queued |= advance.queued_any();
                }
            }
            if let Some(delivery) = new.delivery {
                sqlx::query(
                    "UPDATE deliveries SET build_id = $2, outcome = $3, processed_at = $4, \
                     payload = NULL WHERE id = $1",
                )
                .bind(delivery)
                .bind(build_id)
                .bind(format!("build #{}", new.number))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            (build_id, queued)
        });
        self.publish(Event::BuildChanged { build: build_id }).await;
        if queued {
            self.publish(Event::Queued).await;
        }
        if new.delivery.is_some() {
            self.publish(Event::DeliveryDone).await;
        }
        let build = self
            .build(new.repo_id, new.number)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("build #{}", new.number)))?;
        Ok((build, queued))
    }

    pub async fn build(&self, repo_id: i64, number: i64) -> Result<Option<Build>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE repo_id = $1 AND number = $2"
        ));
        with_pool!(self, pool => sqlx::query_as::<_, BuildRow>(sql)
            .bind(repo_id)
            .bind(number)
            .fetch_optional(pool)
            .await)?
        .map(Build::try_from)
        .transpose()
    }

    pub async fn build_by_id(&self, id: i64) -> Result<Build> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {BUILD_COLUMNS} FROM builds WHERE id = $1"));
        with_pool!(self, pool => sqlx::query_as::<_, BuildRow>(sql)
            .bind(id)
            .fetch_optional(pool)
            .await)?
        .map(Build::try_from)
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("build id {id}")))
    }

    /// The context the build's plan was compiled with (a restart compiles with it again).
    pub async fn build_context(&self, id: i64) -> Result<Context> {
        let text: String = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT context FROM builds WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(pool)
        .await)?
        .ok_or_else(|| StoreError::NotFound(format!("build id {id}")))?;
        serde_json::from_str(&text).map_err(|e| StoreError::corrupt("build context", e))
    }

    /// Newest first.
    pub async fn list_builds(&self, repo_id: i64, filter: &BuildFilter) -> Result<Vec<Build>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE repo_id = $1 \
             AND ($2 IS NULL OR branch = $2) AND ($3 IS NULL OR status = $3) \
             AND ($4 IS NULL OR number < $4) ORDER BY number DESC LIMIT $5"
        ));
        let rows = with_pool!(self, pool => sqlx::query_as::<_, BuildRow>(sql)
            .bind(repo_id)
            .bind(filter.branch.as_deref())
            .bind(filter.status.map(Status::as_str))
            .bind(filter.before)
            .bind(filter.limit.clamp(1, 500))
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(Build::try_from).collect()
    }

    /// Builds not yet ended, oldest first.
    pub async fn unfinished_builds(&self) -> Result<Vec<Build>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE finished_at IS NULL ORDER BY id"
        ));
        let rows =
            with_pool!(self, pool => sqlx::query_as::<_, BuildRow>(sql).fetch_all(pool).await)?;
        rows.into_iter().map(Build::try_from).collect()
    }

    pub async fn stages(&self, build_id: i64) -> Result<Vec<Stage>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {STAGE_COLUMNS} FROM stages WHERE build_id = $1 ORDER BY number"
        ));
        let rows = with_pool!(self, pool => sqlx::query_as::<_, StageRow>(sql)
            .bind(build_id)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(Stage::try_from).collect()
    }

    pub async fn stage(&self, stage_id: i64) -> Result<Stage> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {STAGE_COLUMNS} FROM stages WHERE id = $1"));
        with_pool!(self, pool => sqlx::query_as::<_, StageRow>(sql)
            .bind(stage_id)
            .fetch_optional(pool)
            .await)?
        .map(Stage::try_from)
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("stage id {stage_id}")))
    }

    /// The plans of a build's stages, in order.
    pub async fn stage_plans(&self, build_id: i64) -> Result<Vec<gantry_pipeline::Stage>> {
        let plans: Vec<String> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT plan FROM stages WHERE build_id = $1 ORDER BY number"
        )
        .bind(build_id)
        .fetch_all(pool)
        .await)?;
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
        Ok(with_pool!(self, pool => sqlx::query_as::<_, Step>(sql)
            .bind(stage_id)
            .fetch_all(pool)
            .await)?)
    }

    /// A step by its build, its stage's number and its own number (as in the step's URL).
    pub async fn step_at(&self, build_id: i64, stage: i64, step: i64) -> Result<Option<Step>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM steps WHERE stage_id = \
             (SELECT id FROM stages WHERE build_id = $1 AND number = $2) AND number = $3",
            STEP_COLUMNS
        ));
        Ok(with_pool!(self, pool => sqlx::query_as::<_, Step>(sql)
            .bind(build_id)
            .bind(stage)
            .bind(step)
            .fetch_optional(pool)
            .await)?)
    }

    /// Lets a blocked build run: its stages are queued (or wait for their dependencies).
    /// Returns false when it was not blocked.
    pub async fn approve_build(&self, build_id: i64) -> Result<bool> {
        let now = self.clock.now_ms();
        let approved = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE builds SET status = 'pending' WHERE id = $1 AND status = 'blocked'",
            )
            .bind(build_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed > 0 {
                sqlx::query(
                    "UPDATE stages SET status = CASE WHEN depends_on = '[]' THEN 'pending' \
                     ELSE 'waiting' END WHERE build_id = $1 AND status = 'blocked'",
                )
                .bind(build_id)
                .execute(&mut *tx)
                .await?;
                advance_build!(tx, build_id, now);
            }
            tx.commit().await?;
            Ok::<_, StoreError>(changed > 0)
        })?;
        if approved {
            self.publish(Event::BuildChanged { build: build_id }).await;
            self.publish(Event::Queued).await;
        }
        Ok(approved)
    }

    /// Ends a blocked build as `declined`; none of it runs.
    pub async fn decline_build(&self, build_id: i64) -> Result<bool> {
        let now = self.clock.now_ms();
        let declined = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE builds SET status = 'declined', finished_at = $2 \
                 WHERE id = $1 AND status = 'blocked'",
            )
            .bind(build_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed > 0 {
                sqlx::query(
                    "UPDATE stages SET status = 'skipped', error = 'the build was declined', \
                     finished_at = $2 WHERE build_id = $1 AND status = 'blocked'",
                )
                .bind(build_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE steps SET status = 'skipped' WHERE status = 'pending' \
                     AND stage_id IN (SELECT id FROM stages WHERE build_id = $1)",
                )
                .bind(build_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(changed > 0)
        })?;
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
        let cancelled = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE builds SET cancel_requested = TRUE WHERE id = $1 AND finished_at IS NULL",
            )
            .bind(build_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed > 0 {
                advance_build!(tx, build_id, now);
            }
            tx.commit().await?;
            Ok::<_, StoreError>(changed > 0)
        })?;
        if cancelled {
            self.publish(Event::Cancelled { build: build_id }).await;
            self.publish(Event::BuildChanged { build: build_id }).await;
        }
        Ok(cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(
        id: i64,
        name: &str,
        status: Status,
        deps: &[&str],
        runs_on: StatusFilter,
    ) -> StageState {
        StageState {
            id,
            name: name.into(),
            status,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            runs_on,
        }
    }

    #[test]
    fn a_stage_is_queued_when_its_dependencies_succeed() {
        let stages = [
            stage(1, "build", Status::Success, &[], StatusFilter::SUCCESS),
            stage(
                2,
                "deploy",
                Status::Waiting,
                &["build"],
                StatusFilter::SUCCESS,
            ),
        ];
        let advance = advance(&stages, false);
        assert_eq!(advance.stages, vec![(2, Status::Pending, None)]);
        assert_eq!(advance.build, None);
    }

    #[test]
    fn skips_chain_and_the_build_ends() {
        let stages = [
            stage(1, "build", Status::Failure, &[], StatusFilter::SUCCESS),
            stage(
                2,
                "deploy",
                Status::Waiting,
                &["build"],
                StatusFilter::SUCCESS,
            ),
            stage(
                3,
                "smoke",
                Status::Waiting,
                &["deploy"],
                StatusFilter::SUCCESS,
            ),
        ];
        let advance = advance(&stages, false);
        assert_eq!(
            advance
                .stages
                .iter()
                .map(|(id, s, _)| (*id, *s))
                .collect::<Vec<_>>(),
            vec![(2, Status::Skipped), (3, Status::Skipped)]
        );
        assert_eq!(advance.build, Some(Status::Failure));
    }

    #[test]
    fn an_on_failure_stage_runs_after_a_failure_only() {
        let notify = StatusFilter {
            success: false,
            failure: true,
        };
        let failed = [
            stage(1, "test", Status::Error, &[], StatusFilter::SUCCESS),
            stage(2, "notify", Status::Waiting, &["test"], notify),
        ];
        assert_eq!(advance(&failed, false).stages[0].1, Status::Pending);
        let passed = [
            stage(1, "test", Status::Success, &[], StatusFilter::SUCCESS),
            stage(2, "notify", Status::Waiting, &["test"], notify),
        ];
        let advance = advance(&passed, false);
        assert_eq!(advance.stages[0].1, Status::Skipped);
        assert_eq!(advance.build, Some(Status::Success));
    }

    #[test]
    fn cancelling_kills_what_has_not_started_and_waits_for_what_runs() {
        let stages = [
            stage(1, "a", Status::Running, &[], StatusFilter::SUCCESS),
            stage(2, "b", Status::Pending, &[], StatusFilter::SUCCESS),
            stage(3, "c", Status::Waiting, &["a"], StatusFilter::ALWAYS),
        ];
        let advance = advance(&stages, true);
        assert_eq!(
            advance
                .stages
                .iter()
                .map(|(id, s, _)| (*id, *s))
                .collect::<Vec<_>>(),
            vec![(2, Status::Killed), (3, Status::Killed)]
        );
        assert_eq!(advance.build, None, "stage a is still running");
    }

    #[test]
    fn build_status_ranks_error_over_failure_and_all_skipped_is_skipped() {
        assert_eq!(
            build_status(&[Status::Failure, Status::Error], false),
            Status::Error
        );
        assert_eq!(
            build_status(&[Status::Success, Status::Skipped], false),
            Status::Success
        );
        assert_eq!(build_status(&[Status::Skipped], false), Status::Skipped);
        assert_eq!(build_status(&[], false), Status::Skipped);
        assert_eq!(
            build_status(&[Status::Failure, Status::Killed], true),
            Status::Killed
        );
    }
}
