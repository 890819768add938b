//! How a build moves on when a stage ends: [`advance`] (pure, unit-tested) queues the
//! waiting stages whose dependencies have ended, skips those whose `depends_on` outcome
//! does not let them run, kills what has not started when the build is cancelled, and gives
//! the build's status once every stage has one; `advance_build` applies it inside a
//! transaction, under the build's row lock.

use std::collections::HashMap;

use gantry_pipeline::model::StatusFilter;

use crate::db::{self, Tx};
use crate::{Result, Status, StoreError};

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
                Status::Waiting | Status::Pending | Status::Blocked if cancelled => Some((
                    Status::Killed,
                    Some("the build was cancelled before this stage started".to_owned()),
                )),
                // Waiting for an approval that no longer matters: what it depends on did
                // not let it run.
                Status::Blocked
                    if stage
                        .depends_on
                        .iter()
                        .all(|d| status.get(d.as_str()).is_none_or(|s| s.is_final())) =>
                {
                    not_runnable(stages, &status, stage)
                }
                Status::Waiting => {
                    let deps: Vec<Status> = stage
                        .depends_on
                        .iter()
                        .filter_map(|d| status.get(d.as_str()).copied())
                        .collect();
                    if deps.iter().any(|s| !s.is_final()) {
                        None
                    } else if let Some(skip) = not_runnable(stages, &status, stage) {
                        Some(skip)
                    } else if stage.runs_on.success
                        // A failure upstream that `not_runnable` let through: it runs on one.
                        || stage
                            .depends_on
                            .iter()
                            .any(|d| reached_upstream(stages, &status, d, Status::is_failed, 0))
                    {
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

/// The skip of a stage that what it depends on does not let run: a failure upstream (unless
/// it runs on failure), or a declined deployment upstream.
fn not_runnable(
    stages: &[StageState],
    status: &HashMap<&str, Status>,
    stage: &StageState,
) -> Option<(Status, Option<String>)> {
    let upstream = |wanted: fn(Status) -> bool| {
        stage
            .depends_on
            .iter()
            .any(|d| reached_upstream(stages, status, d, wanted, 0))
    };
    if upstream(|s| s == Status::Declined) {
        Some((
            Status::Skipped,
            Some("a deployment it depends on was declined".to_owned()),
        ))
    } else if !stage.runs_on.failure && upstream(Status::is_failed) {
        Some((
            Status::Skipped,
            Some("a stage it depends on did not succeed".to_owned()),
        ))
    } else {
        None
    }
}

/// Whether stage `name` ended as `wanted` says, or was skipped because something it depends
/// on did (so an outcome reaches past the stages it skipped).
fn reached_upstream(
    stages: &[StageState],
    status: &HashMap<&str, Status>,
    name: &str,
    wanted: fn(Status) -> bool,
    depth: usize,
) -> bool {
    match status.get(name) {
        Some(s) if wanted(*s) => true,
        Some(Status::Skipped) if depth < stages.len() => {
            stages.iter().find(|s| s.name == name).is_some_and(|stage| {
                stage
                    .depends_on
                    .iter()
                    .any(|d| reached_upstream(stages, status, d, wanted, depth + 1))
            })
        }
        _ => false,
    }
}

/// The status of a build whose stages all ended.
pub(super) fn build_status(stages: &[Status], cancelled: bool) -> Status {
    let any = |wanted: Status| stages.contains(&wanted);
    if cancelled && any(Status::Killed) {
        Status::Killed
    } else if any(Status::Error) {
        Status::Error
    } else if any(Status::Failure) {
        Status::Failure
    } else if any(Status::Killed) {
        Status::Killed
    } else if any(Status::Declined) {
        Status::Declined
    } else if stages.iter().all(|s| *s == Status::Skipped) {
        Status::Skipped
    } else {
        Status::Success
    }
}

/// Loads the build's stages inside the transaction `tx`, applies [`advance`] and returns
/// its [`Advance`].
pub(crate) async fn advance_build(tx: &mut Tx, build_id: i64, now: i64) -> Result<Advance> {
    // One advance of a build at a time: two stages ending at once on two servers would
    // each read the other as still running, and neither would end the build. The row
    // lock makes the second wait for the first to commit, then read what it wrote (each
    // statement reads afresh under READ COMMITTED; SQLite has one writer anyway).
    db::query("UPDATE builds SET id = id WHERE id = $1")
        .bind(build_id)
        .execute(&mut *tx)
        .await?;
    let rows = db::query_as::<StageStateRow>(
        "SELECT id, name, status, depends_on, runs_on FROM stages WHERE build_id = $1 \
         ORDER BY number",
    )
    .bind(build_id)
    .fetch_all(&mut *tx)
    .await?;
    let cancelled: bool = db::query_scalar("SELECT cancel_requested FROM builds WHERE id = $1")
        .bind(build_id)
        .fetch_one(&mut *tx)
        .await?;
    let states = rows
        .into_iter()
        .map(StageState::try_from)
        .collect::<Result<Vec<_>>>()?;
    let advance = advance(&states, cancelled);
    for (id, status, reason) in &advance.stages {
        let ended = status.is_final();
        db::query(
            "UPDATE stages SET status = $2, error = COALESCE($3, error), \
             finished_at = CASE WHEN $4 THEN $5 ELSE finished_at END WHERE id = $1",
        )
        .bind(*id)
        .bind(status.as_str())
        .bind(reason.as_deref())
        .bind(ended)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if ended {
            db::query(
                "UPDATE steps SET status = 'skipped' WHERE stage_id = $1 AND status = 'pending'",
            )
            .bind(*id)
            .execute(&mut *tx)
            .await?;
        }
    }
    if let Some(status) = advance.build {
        db::query(
            "UPDATE builds SET status = $2, finished_at = $3, \
             started_at = COALESCE(started_at, $3) WHERE id = $1 AND finished_at IS NULL",
        )
        .bind(build_id)
        .bind(status.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(advance)
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
            // Waiting for an approval: nobody need give it now.
            stage(4, "deploy", Status::Blocked, &["a"], StatusFilter::SUCCESS),
        ];
        let advance = advance(&stages, true);
        assert_eq!(
            advance
                .stages
                .iter()
                .map(|(id, s, _)| (*id, *s))
                .collect::<Vec<_>>(),
            vec![
                (2, Status::Killed),
                (3, Status::Killed),
                (4, Status::Killed)
            ]
        );
        assert_eq!(advance.build, None, "stage a is still running");
    }

    #[test]
    fn a_stage_waiting_for_approval_is_skipped_when_what_it_needs_fails() {
        let stages = [
            stage(1, "test", Status::Failure, &[], StatusFilter::SUCCESS),
            stage(
                2,
                "deploy",
                Status::Blocked,
                &["test"],
                StatusFilter::SUCCESS,
            ),
        ];
        let skipped = advance(&stages, false);
        assert_eq!(skipped.stages[0].0, 2);
        assert_eq!(skipped.stages[0].1, Status::Skipped);
        assert_eq!(skipped.build, Some(Status::Failure));
        // Still waiting for its approval while its dependency succeeded or runs.
        for upstream in [Status::Success, Status::Running] {
            let stages = [
                stage(1, "test", upstream, &[], StatusFilter::SUCCESS),
                stage(
                    2,
                    "deploy",
                    Status::Blocked,
                    &["test"],
                    StatusFilter::SUCCESS,
                ),
            ];
            assert_eq!(advance(&stages, false), Advance::default());
        }
    }

    #[test]
    fn a_declined_deployment_skips_what_follows_and_declines_the_build() {
        let stages = [
            stage(1, "test", Status::Success, &[], StatusFilter::SUCCESS),
            stage(
                2,
                "deploy",
                Status::Declined,
                &["test"],
                StatusFilter::SUCCESS,
            ),
            stage(
                3,
                "smoke",
                Status::Waiting,
                &["deploy"],
                StatusFilter::ALWAYS,
            ),
            stage(
                4,
                "report",
                Status::Waiting,
                &["smoke"],
                StatusFilter::ALWAYS,
            ),
        ];
        let advance = advance(&stages, false);
        assert_eq!(
            advance
                .stages
                .iter()
                .map(|(id, s, _)| (*id, *s))
                .collect::<Vec<_>>(),
            vec![(3, Status::Skipped), (4, Status::Skipped)],
            "even a stage that runs always: nothing was deployed to check"
        );
        assert_eq!(advance.build, Some(Status::Declined));
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
