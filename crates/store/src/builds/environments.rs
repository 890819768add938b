//! Environments and their deployments. A build's stages that deploy (`deploy:` in the plan)
//! are recorded as deployments in the build's own transaction; a deployment's status is its
//! stage's, read by a join, so it ends however the stage ends. An environment's state is
//! derived from its deployments ([`EnvironmentState::of`]). A build that stops an
//! environment takes it in the same transaction (`stop_build_id`), so an environment is
//! stopped by exactly one build however many servers try at once.

use gantry_pipeline::Plan;
use gantry_pipeline::plan::DeployAction;

use crate::db::{self, Tx};
use crate::{NewBuild, Result, Status, Store, StoreError};

/// Where an environment stands, from its deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvironmentState {
    /// Its first deployment has not ended.
    Deploying,
    /// A deployment succeeded since it was last stopped.
    Available,
    /// Every deployment since it was last stopped failed.
    Failed,
    /// Its `on_stop` pipeline runs.
    Stopping,
    Stopped,
    /// Its `on_stop` pipeline did not succeed: it may still be up.
    StopFailed,
    /// No deployment to it ran: each was declined or superseded before it started.
    NotDeployed,
}

impl EnvironmentState {
    pub const ALL: [EnvironmentState; 7] = [
        Self::Deploying,
        Self::Available,
        Self::Failed,
        Self::Stopping,
        Self::Stopped,
        Self::StopFailed,
        Self::NotDeployed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploying => "deploying",
            Self::Available => "available",
            Self::Failed => "failed",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::StopFailed => "stop_failed",
            Self::NotDeployed => "not_deployed",
        }
    }

    /// Whether it may be stopped: a stop that ran (or failed) is not run again until the
    /// environment is deployed anew.
    pub fn can_stop(self) -> bool {
        matches!(self, Self::Deploying | Self::Available | Self::Failed)
    }

    /// From the deployments, newest first.
    pub fn of(deployments: &[Deployment]) -> Self {
        let mut since_stop = Vec::new();
        for deployment in deployments {
            if deployment.action == DeployAction::Stop {
                if since_stop.is_empty() {
                    return match deployment.status {
                        Status::Success => Self::Stopped,
                        status if status.is_final() => Self::StopFailed,
                        _ => Self::Stopping,
                    };
                }
                if deployment.status == Status::Success {
                    break;
                }
                continue;
            }
            // Declined or superseded: it never touched the environment.
            if !matches!(deployment.status, Status::Skipped | Status::Declined) {
                since_stop.push(deployment.status);
            }
        }
        if since_stop.is_empty() {
            Self::NotDeployed
        } else if since_stop.contains(&Status::Success) {
            Self::Available
        } else if since_stop.iter().any(|s| !s.is_final()) {
            Self::Deploying
        } else {
            Self::Failed
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub id: i64,
    pub repo_id: i64,
    pub name: String,
    pub slug: String,
    pub url: Option<String>,
    pub on_stop: Option<String>,
    /// Milliseconds since the epoch.
    pub auto_stop_at: Option<i64>,
    pub branch: String,
    pub pull_request: Option<i64>,
    /// Its branch was deleted, or its pull request closed, since it was last deployed.
    pub branch_gone: bool,
    pub stop_build_id: Option<i64>,
    /// When it was stopped without a pipeline (it has no `on_stop`).
    pub stopped_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub state: EnvironmentState,
    /// Its deployments, newest first (at most [`HISTORY`]).
    pub deployments: Vec<Deployment>,
}

/// How many deployments an environment is read with.
pub const HISTORY: i64 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: i64,
    pub build_id: i64,
    pub build_number: i64,
    pub stage_id: i64,
    pub action: DeployAction,
    pub status: Status,
    pub url: Option<String>,
    pub commit: String,
    pub branch: String,
    pub author: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// What one stage of a build does to an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildDeployment {
    /// The deployment's own id.
    pub id: i64,
    pub stage_id: i64,
    pub environment: String,
    pub url: Option<String>,
    pub action: DeployAction,
    /// For a stop: the deployment it ends (the environment's last successful one).
    pub stopped: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
struct EnvironmentRow {
    id: i64,
    repo_id: i64,
    name: String,
    slug: String,
    url: Option<String>,
    on_stop: Option<String>,
    auto_stop_at: Option<i64>,
    branch: String,
    pull_request: Option<i64>,
    branch_gone: bool,
    stop_build_id: Option<i64>,
    stopped_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

const ENVIRONMENT_COLUMNS: &str = "id, repo_id, name, slug, url, on_stop, auto_stop_at, branch, \
     pull_request, branch_gone, stop_build_id, stopped_at, created_at, updated_at";

#[derive(Debug, sqlx::FromRow)]
struct DeploymentRow {
    id: i64,
    environment_id: i64,
    build_id: i64,
    build_number: i64,
    stage_id: i64,
    action: String,
    #[sqlx(try_from = "String")]
    status: Status,
    url: Option<String>,
    commit_sha: String,
    branch: String,
    author: String,
    created_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<DeploymentRow> for Deployment {
    type Error = StoreError;
    fn try_from(row: DeploymentRow) -> Result<Self> {
        let action = parse_action(&row.action)?;
        Ok(Deployment {
            id: row.id,
            build_id: row.build_id,
            build_number: row.build_number,
            stage_id: row.stage_id,
            action,
            status: row.status,
            url: row.url,
            commit: row.commit_sha,
            branch: row.branch,
            author: row.author,
            created_at: row.created_at,
            finished_at: row.finished_at,
        })
    }
}

fn parse_action(action: &str) -> Result<DeployAction> {
    match action {
        "start" => Ok(DeployAction::Start),
        "stop" => Ok(DeployAction::Stop),
        other => Err(StoreError::corrupt(
            "deployment action",
            format!("`{other}` is neither start nor stop"),
        )),
    }
}

/// Records the plan's deploying stages of a new build (with their ids, in the plan's
/// order) as deployments, creating their environments; the stop of a build that stops an
/// environment is recorded against `stopped`, the environment [`take_for_stop`] gave it. A
/// deployment supersedes the older ones to its environment that have not started: they end
/// `skipped`, saying by which build. Returns the builds it superseded stages of.
pub(crate) async fn record_deployments(
    tx: &mut Tx,
    new: &NewBuild,
    build_id: i64,
    (plan, stage_ids): (&Plan, &[i64]),
    stopped: Option<i64>,
    now: i64,
) -> Result<Vec<i64>> {
    let ctx = &new.context;
    let mut superseded_builds = Vec::new();
    for (stage, &stage_id) in plan.stages.iter().zip(stage_ids) {
        let Some(deploy) = stage.deploy.as_ref().filter(|_| stage.run) else {
            continue;
        };
        let environment_id: i64 = match deploy.action {
            DeployAction::Start => {
                let auto_stop_at = deploy
                    .auto_stop_secs
                    .and_then(|secs| i64::try_from(secs).ok())
                    .map(|secs| now.saturating_add(secs.saturating_mul(1000)));
                db::query_scalar(
                    "INSERT INTO environments (repo_id, name, slug, url, on_stop, auto_stop_at, \
                     branch, pull_request, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                     ON CONFLICT (repo_id, name) DO UPDATE SET slug = $3, url = $4, \
                     on_stop = $5, auto_stop_at = $6, branch = $7, pull_request = $8, \
                     branch_gone = FALSE, stop_build_id = NULL, stopped_at = NULL, \
                     updated_at = $9 RETURNING id",
                )
                .bind(new.repo_id)
                .bind(&deploy.environment)
                .bind(&deploy.slug)
                .bind(deploy.url.as_deref())
                .bind(deploy.on_stop.as_deref())
                .bind(auto_stop_at)
                .bind(&ctx.branch)
                .bind(ctx.pull_request.and_then(|p| i64::try_from(p).ok()))
                .bind(now)
                .fetch_one(&mut *tx)
                .await?
            }
            DeployAction::Stop => match stopped {
                Some(id) => id,
                // Only a build made to stop an environment plans a stop.
                None => continue,
            },
        };
        db::query(
            "INSERT INTO deployments (environment_id, build_id, stage_id, action, url, \
             commit_sha, branch, author, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(environment_id)
        .bind(build_id)
        .bind(stage_id)
        .bind(deploy.action.as_str())
        .bind(deploy.url.as_deref())
        .bind(&ctx.commit)
        .bind(&ctx.branch)
        .bind(&ctx.author)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if deploy.action == DeployAction::Start {
            superseded_builds
                .extend(supersede(tx, environment_id, build_id, new.number, now).await?);
        }
    }
    superseded_builds.sort_unstable();
    superseded_builds.dedup();
    Ok(superseded_builds)
}

/// Skips the deployments to the environment of builds older than `build_id` that have not
/// started, and moves their builds on. Returns those builds.
async fn supersede(
    tx: &mut Tx,
    environment_id: i64,
    build_id: i64,
    number: i64,
    now: i64,
) -> Result<Vec<i64>> {
    let waiting: Vec<(i64, i64)> = db::query_as::<(i64, i64)>(
        "SELECT s.id, s.build_id FROM deployments d JOIN stages s ON s.id = d.stage_id \
         WHERE d.environment_id = $1 AND d.build_id < $2 AND d.action = 'start' \
         AND s.status IN ('waiting', 'pending', 'blocked')",
    )
    .bind(environment_id)
    .bind(build_id)
    .fetch_all(&mut *tx)
    .await?;
    let reason = format!("superseded by build #{number}, a newer deployment to this environment");
    let mut builds = Vec::new();
    for (stage_id, older) in waiting {
        let skipped = db::query(
            "UPDATE stages SET status = 'skipped', error = $2, finished_at = $3 \
             WHERE id = $1 AND status IN ('waiting', 'pending', 'blocked')",
        )
        .bind(stage_id)
        .bind(reason.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if skipped.rows_affected() == 0 {
            continue;
        }
        db::query("UPDATE steps SET status = 'skipped' WHERE stage_id = $1 AND status = 'pending'")
            .bind(stage_id)
            .execute(&mut *tx)
            .await?;
        super::advance_build(tx, older, now).await?;
        builds.push(older);
    }
    Ok(builds)
}

/// Makes `build_id` the one build that stops the environment: `Conflict` when another
/// already does (or it was stopped, or does not exist). Its id.
pub(crate) async fn take_for_stop(
    tx: &mut Tx,
    repo_id: i64,
    name: &str,
    build_id: i64,
    now: i64,
) -> Result<i64> {
    let taken: Option<i64> = db::query_scalar(
        "UPDATE environments SET stop_build_id = $3, auto_stop_at = NULL, updated_at = $4 \
         WHERE repo_id = $1 AND name = $2 AND stop_build_id IS NULL AND stopped_at IS NULL \
         RETURNING id",
    )
    .bind(repo_id)
    .bind(name)
    .bind(build_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    taken.ok_or_else(|| {
        StoreError::Conflict(format!(
            "environment `{name}` is already being stopped, or was stopped, or does not exist"
        ))
    })
}

impl Store {
    /// Stops an environment that has no `on_stop` pipeline: it is marked stopped, once;
    /// `false` when it already was, or is being stopped.
    pub async fn mark_environment_stopped(&self, id: i64) -> Result<bool> {
        let now = self.clock.now_ms();
        let done = db::query(
            "UPDATE environments SET stopped_at = $2, auto_stop_at = NULL, updated_at = $2 \
             WHERE id = $1 AND stop_build_id IS NULL AND stopped_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks that the environment's branch was deleted (or its pull request closed); its
    /// next deployment clears it.
    pub async fn mark_branch_gone(&self, id: i64) -> Result<()> {
        db::query("UPDATE environments SET branch_gone = TRUE WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// What each stage of a build does to an environment.
    pub async fn build_deployments(&self, build_id: i64) -> Result<Vec<BuildDeployment>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            id: i64,
            stage_id: i64,
            environment: String,
            url: Option<String>,
            action: String,
            stopped: Option<i64>,
        }
        let rows: Vec<Row> = db::query_as(
            "SELECT d.id, d.stage_id, e.name AS environment, d.url, d.action, \
             (SELECT MAX(p.id) FROM deployments p JOIN stages ps ON ps.id = p.stage_id \
              WHERE p.environment_id = d.environment_id AND p.action = 'start' \
              AND ps.status = 'success' AND p.id < d.id) AS stopped \
             FROM deployments d JOIN environments e ON e.id = d.environment_id \
             WHERE d.build_id = $1 ORDER BY d.id",
        )
        .bind(build_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let action = parse_action(&row.action)?;
                Ok(BuildDeployment {
                    id: row.id,
                    stage_id: row.stage_id,
                    environment: row.environment,
                    url: row.url,
                    action,
                    stopped: row.stopped.filter(|_| action == DeployAction::Stop),
                })
            })
            .collect()
    }

    /// The id GitHub gave the deployment, once reported there.
    pub async fn deployment_github_id(&self, id: i64) -> Result<Option<i64>> {
        let found: Option<Option<i64>> =
            db::query_scalar("SELECT github_id FROM deployments WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.flatten())
    }

    pub async fn set_deployment_github_id(&self, id: i64, github_id: i64) -> Result<()> {
        db::query("UPDATE deployments SET github_id = $2 WHERE id = $1")
            .bind(id)
            .bind(github_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Environments of every repository whose `auto_stop_in` passed before `now`, not yet
    /// being stopped.
    pub async fn environments_due_to_stop(&self, now: i64) -> Result<Vec<(i64, String)>> {
        db::query_as::<(i64, String)>(
            "SELECT repo_id, name FROM environments WHERE auto_stop_at <= $1 \
             AND stop_build_id IS NULL AND stopped_at IS NULL ORDER BY auto_stop_at",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
    }

    /// A repository's environments, by name, each with its state and latest deployments:
    /// two queries, however many environments.
    pub async fn environments(&self, repo_id: i64) -> Result<Vec<Environment>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ENVIRONMENT_COLUMNS} FROM environments WHERE repo_id = $1 ORDER BY name"
        ));
        let rows = db::query_as::<EnvironmentRow>(sql)
            .bind(repo_id)
            .fetch_all(&self.pool)
            .await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "{DEPLOYMENTS} WHERE e.repo_id = $1) ranked WHERE recency <= $2 \
             ORDER BY environment_id, id DESC"
        ));
        let deployments = db::query_as::<DeploymentRow>(sql)
            .bind(repo_id)
            .bind(HISTORY)
            .fetch_all(&self.pool)
            .await?;
        with_deployments(rows, deployments)
    }

    /// One environment of a repository, by name.
    pub async fn environment(&self, repo_id: i64, name: &str) -> Result<Option<Environment>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ENVIRONMENT_COLUMNS} FROM environments WHERE repo_id = $1 AND name = $2"
        ));
        let Some(row) = db::query_as::<EnvironmentRow>(sql)
            .bind(repo_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "{DEPLOYMENTS} WHERE e.id = $1) ranked WHERE recency <= $2 ORDER BY id DESC"
        ));
        let deployments = db::query_as::<DeploymentRow>(sql)
            .bind(row.id)
            .bind(HISTORY)
            .fetch_all(&self.pool)
            .await?;
        Ok(with_deployments(vec![row], deployments)?.pop())
    }

    /// How many environments of every repository are in each state (`/metrics`).
    pub async fn environment_states(&self) -> Result<Vec<(EnvironmentState, i64)>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {ENVIRONMENT_COLUMNS} FROM environments"));
        let rows = db::query_as::<EnvironmentRow>(sql)
            .fetch_all(&self.pool)
            .await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "{DEPLOYMENTS}) ranked WHERE recency <= $1 ORDER BY environment_id, id DESC"
        ));
        let deployments = db::query_as::<DeploymentRow>(sql)
            .bind(HISTORY)
            .fetch_all(&self.pool)
            .await?;
        let mut counts: Vec<(EnvironmentState, i64)> =
            EnvironmentState::ALL.iter().map(|s| (*s, 0)).collect();
        for environment in with_deployments(rows, deployments)? {
            if let Some((_, n)) = counts.iter_mut().find(|(s, _)| *s == environment.state) {
                *n += 1;
            }
        }
        Ok(counts)
    }
}

/// Each environment's newest deployments (at most [`HISTORY`] each, by recency), to be closed
/// with `WHERE ...) ranked WHERE recency <= $N`.
const DEPLOYMENTS: &str = "SELECT * FROM (SELECT d.id, d.environment_id, d.build_id, \
     b.number AS build_number, d.stage_id, d.action, s.status, d.url, d.commit_sha, d.branch, \
     d.author, d.created_at, s.finished_at, \
     ROW_NUMBER() OVER (PARTITION BY d.environment_id ORDER BY d.id DESC) AS recency \
     FROM deployments d JOIN stages s ON s.id = d.stage_id \
     JOIN builds b ON b.id = d.build_id JOIN environments e ON e.id = d.environment_id";

/// The environments with their deployments (newest first within each), and their states.
fn with_deployments(
    rows: Vec<EnvironmentRow>,
    deployments: Vec<DeploymentRow>,
) -> Result<Vec<Environment>> {
    let mut by_environment: std::collections::HashMap<i64, Vec<Deployment>> =
        std::collections::HashMap::new();
    for row in deployments {
        by_environment
            .entry(row.environment_id)
            .or_default()
            .push(Deployment::try_from(row)?);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let deployments = by_environment.remove(&row.id).unwrap_or_default();
            let state = state_of(&row, &deployments);
            Environment {
                state,
                deployments,
                id: row.id,
                repo_id: row.repo_id,
                name: row.name,
                slug: row.slug,
                url: row.url,
                on_stop: row.on_stop,
                auto_stop_at: row.auto_stop_at,
                branch: row.branch,
                pull_request: row.pull_request,
                branch_gone: row.branch_gone,
                stop_build_id: row.stop_build_id,
                stopped_at: row.stopped_at,
                created_at: row.created_at,
                updated_at: row.updated_at,
            }
        })
        .collect())
}

/// Where an environment stands: marked stopped without a pipeline, a stop build that errored
/// before its `on_stop` pipeline could run, or what its deployments say.
fn state_of(row: &EnvironmentRow, deployments: &[Deployment]) -> EnvironmentState {
    let newest = deployments.first().map(|d| d.created_at);
    if row
        .stopped_at
        .is_some_and(|at| newest.is_none_or(|n| at >= n))
    {
        EnvironmentState::Stopped
    } else if row.stop_build_id.is_some_and(|stop| {
        !deployments
            .iter()
            .any(|d| d.action == DeployAction::Stop && d.build_id == stop)
    }) {
        EnvironmentState::StopFailed
    } else {
        EnvironmentState::of(deployments)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(action: DeployAction, status: Status) -> Deployment {
        Deployment {
            id: 0,
            build_id: 0,
            build_number: 0,
            stage_id: 0,
            action,
            status,
            url: None,
            commit: String::new(),
            branch: String::new(),
            author: String::new(),
            created_at: 0,
            finished_at: None,
        }
    }

    #[test]
    fn the_state_follows_the_newest_deployments() {
        use DeployAction::{Start, Stop};
        use EnvironmentState as S;
        let state = |history: &[(DeployAction, Status)]| {
            let deployments: Vec<Deployment> =
                history.iter().map(|(a, s)| deployment(*a, *s)).collect();
            EnvironmentState::of(&deployments)
        };
        assert_eq!(state(&[(Start, Status::Running)]), S::Deploying);
        let stoppable: Vec<S> = [
            S::Deploying,
            S::Available,
            S::Failed,
            S::Stopping,
            S::Stopped,
            S::StopFailed,
            S::NotDeployed,
        ]
        .into_iter()
        .filter(|s| s.can_stop())
        .collect();
        assert_eq!(stoppable, [S::Deploying, S::Available, S::Failed]);
        assert_eq!(state(&[(Start, Status::Failure)]), S::Failed);
        assert_eq!(state(&[(Start, Status::Declined)]), S::NotDeployed);
        assert_eq!(
            state(&[(Start, Status::Declined), (Start, Status::Success)]),
            S::Available,
            "a declined deployment leaves the one before it up"
        );
        // A failed redeployment leaves the earlier one up.
        assert_eq!(
            state(&[(Start, Status::Failure), (Start, Status::Success)]),
            S::Available
        );
        assert_eq!(
            state(&[(Start, Status::Pending), (Start, Status::Success)]),
            S::Available
        );
        assert_eq!(
            state(&[(Stop, Status::Running), (Start, Status::Success)]),
            S::Stopping
        );
        assert_eq!(
            state(&[(Stop, Status::Success), (Start, Status::Success)]),
            S::Stopped
        );
        assert_eq!(
            state(&[(Stop, Status::Error), (Start, Status::Success)]),
            S::StopFailed
        );
        // Deployed again after a stop: what came before the stop does not count.
        assert_eq!(
            state(&[
                (Start, Status::Failure),
                (Stop, Status::Success),
                (Start, Status::Success)
            ]),
            S::Failed
        );
        assert_eq!(
            state(&[(Start, Status::Success), (Stop, Status::Success)]),
            S::Available
        );
    }
}
