//! Schedules of a repository (Drone's `drone cron`): listed by anyone who may read it;
//! added, removed and run now by its writers, who may start builds anyway.

use std::collections::BTreeMap;
use std::sync::Arc;

use gantry_store::{Build, NewSchedule, Repo, Schedule, ScheduleRun};

use crate::AppState;
use crate::access::{self, Identity, Need};
use crate::error::{OpError, OpResult};
use crate::schedules::Cadence;

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCron {
    pub name: String,
    /// `0 3 * * 1-5`, `@daily`, ...
    pub expression: String,
    /// The repository's default branch when absent.
    pub branch: Option<String>,
    /// An IANA time zone; UTC when absent.
    pub timezone: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// A schedule with what its page and listing show beside it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub schedule: Schedule,
    /// The build its last run made (a later retention may have removed it).
    pub last_build: Option<Build>,
}

pub async fn list(
    state: &AppState,
    who: Option<&Identity>,
    owner: &str,
    name: &str,
) -> OpResult<(Repo, Vec<Listed>)> {
    let (repo, _) = access::authorize(state, who, owner, name, Need::Read).await?;
    let mut listed = Vec::new();
    for schedule in state.store.schedules(repo.id).await? {
        let last_build = match schedule.last_build_id {
            Some(id) => match state.store.build_by_id(id).await {
                Ok(build) => Some(build),
                Err(gantry_store::StoreError::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        listed.push(Listed {
            schedule,
            last_build,
        });
    }
    Ok((repo, listed))
}

/// Adds a schedule; its first run is its expression's next tick from now.
pub async fn add(
    state: &AppState,
    who: &Identity,
    owner: &str,
    name: &str,
    new: NewCron,
) -> OpResult<Schedule> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Write).await?;
    let cron_name = new.name.trim();
    super::check_name("schedule name", "name", cron_name)?;
    crate::ops::builds::check_params(&new.params)?;
    let timezone = new
        .timezone
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("UTC");
    let expression = new.expression.trim();
    let cadence = Cadence::parse(expression, timezone)?;
    let now = state.config.clock.now_ms();
    let next_run_at = cadence.next_after(now).ok_or_else(|| {
        OpError::invalid_field(
            "expression",
            format!("`{expression}` never fires: pick a date that exists"),
        )
    })?;
    let branch = new
        .branch
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .unwrap_or(&repo.default_branch);
    let schedule = state
        .store
        .create_schedule(&NewSchedule {
            repo_id: repo.id,
            name: cron_name.to_owned(),
            expression: expression.to_owned(),
            timezone: timezone.to_owned(),
            branch: branch.to_owned(),
            params: new.params,
            next_run_at,
            created_by: who.name().to_owned(),
        })
        .await?;
    Ok(schedule)
}

pub async fn remove(
    state: &AppState,
    who: &Identity,
    owner: &str,
    name: &str,
    cron_name: &str,
) -> OpResult<()> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Write).await?;
    if state.store.delete_schedule(repo.id, cron_name).await? {
        Ok(())
    } else {
        Err(not_found(&repo, cron_name))
    }
}

/// Runs a schedule now, as its tick would (event `cron`), leaving its next tick as it is.
pub async fn run(
    state: &Arc<AppState>,
    who: &Identity,
    owner: &str,
    name: &str,
    cron_name: &str,
) -> OpResult<(Repo, Build)> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Write).await?;
    let schedule = state
        .store
        .schedule(repo.id, cron_name)
        .await?
        .ok_or_else(|| not_found(&repo, cron_name))?;
    let run = ScheduleRun {
        schedule_id: schedule.id,
        tick: None,
    };
    let build = crate::schedules::run_now(state, &repo, &schedule, run).await?;
    Ok((repo, build))
}

fn not_found(repo: &Repo, cron_name: &str) -> OpError {
    OpError::NotFound(format!(
        "{} has no schedule named `{cron_name}` (`gantry cron ls {}` lists them)",
        repo.full_name(),
        repo.full_name()
    ))
}
