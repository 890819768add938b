//! The scheduler: runs each due schedule once, across servers and restarts. A server claims
//! a due schedule in the store (a lease, an epoch), makes its build with event `cron`, and
//! the build's transaction moves the schedule to its next tick only while the claim is still
//! its own; a server that dies mid-way leaves the claim to run out, and another server makes
//! the build. The next tick is counted from now, so ticks missed while every server was down
//! make one build, not one each.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use gantry_store::{Schedule, ScheduleRun, StoreError};

use crate::AppState;
use crate::error::OpError;
use crate::trigger::{self, HeadBuild};
use crate::worker::Next;

/// How long a claim on a due schedule lasts without renewal: it is renewed while the build is
/// made (a git fetch of a big repository is the slow part), so only a dead server's runs out.
const CLAIM: Duration = Duration::from_secs(30);

/// A cron expression read in a time zone.
#[derive(Debug, Clone)]
pub struct Cadence {
    cron: Cron,
    zone: chrono_tz::Tz,
}

impl Cadence {
    /// Reads `expression` (5 fields, Drone's 6 with seconds first, or `@hourly`, `@daily`,
    /// `@weekly`, `@monthly`, `@yearly`) in `timezone` (an IANA name; empty means UTC).
    pub fn parse(expression: &str, timezone: &str) -> Result<Cadence, OpError> {
        let zone: chrono_tz::Tz = match timezone.trim() {
            "" => chrono_tz::UTC,
            name => name.parse().map_err(|_| {
                OpError::invalid_field(
                    "timezone",
                    format!(
                        "unknown time zone `{name}`: use an IANA name such as `UTC`, `Europe/Berlin` or `America/New_York`"
                    ),
                )
            })?,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| {
                OpError::invalid_field(
                    "expression",
                    format!(
                        "`{expression}` is not a cron expression ({e}): use 5 fields (minute hour day-of-month month day-of-week, e.g. `0 3 * * 1-5`) or @hourly, @daily, @weekly, @monthly, @yearly"
                    ),
                )
            })?;
        Ok(Cadence { cron, zone })
    }

    /// The first tick strictly after `after_ms`, in milliseconds; `None` for an expression
    /// that never fires again (Feb 30th).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let at = self.zone.timestamp_millis_opt(after_ms).single()?;
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        Some(next.with_timezone(&Utc).timestamp_millis())
    }
}

/// Makes each due schedule's build, once across servers.
pub(crate) struct Scheduler;

impl crate::worker::Job for Scheduler {
    const NAME: &'static str = "schedules";

    fn wakes_on(event: &gantry_store::Event) -> bool {
        matches!(event, gantry_store::Event::ScheduleChanged)
    }

    async fn pass(&mut self, state: &Arc<AppState>) -> Result<Next, StoreError> {
        let now = state.config.clock.now_ms();
        if let Some(schedule) = state
            .store
            .claim_schedule(now, now + CLAIM.as_millis() as i64)
            .await?
        {
            let (id, epoch) = (schedule.id, schedule.claim_epoch);
            crate::worker::holding(
                &state.store,
                gantry_store::Claimed::Schedule(id),
                epoch,
                CLAIM,
                run_tick(state, schedule, now),
            )
            .await;
            return Ok(Next::Again);
        }
        let wait = match state.store.next_schedule_due().await? {
            Some(due) => Duration::from_millis((due - now).max(0) as u64),
            None => state.config.schedule_poll,
        };
        // Another server may add a schedule due sooner, and a test's clock moves by itself.
        Ok(Next::After(wait.min(state.config.schedule_poll)))
    }
}

/// Makes the build of one claimed tick, or records why it could not.
async fn run_tick(state: &Arc<AppState>, schedule: Schedule, now: i64) {
    let next_run_at = match Cadence::parse(&schedule.expression, &schedule.timezone)
        .map(|cadence| cadence.next_after(now))
    {
        Ok(Some(next)) => next,
        // Stored schedules were checked when added; one that can no longer be read (or never
        // fires again) is parked a year ahead, with the reason shown.
        unusable => {
            let why = match unusable {
                Err(e) => format!("the schedule cannot be read: {e}"),
                _ => format!(
                    "`{}` never fires again: change the expression",
                    schedule.expression
                ),
            };
            let parked = now + 365 * 24 * 3600 * 1000;
            return record_failure(state, &schedule, now, parked, why).await;
        }
    };
    let repo = match state.store.repo(schedule.repo_id).await {
        Ok(repo) => repo,
        Err(e) => {
            tracing::warn!(error = %e, "reading a schedule's repository failed; its claim runs out and it is tried again");
            return;
        }
    };
    let run = ScheduleRun {
        schedule_id: schedule.id,
        tick: Some((schedule.claim_epoch, next_run_at)),
    };
    match run_now(state, &repo, &schedule, run).await {
        Ok(build) => tracing::info!(
            repo = %repo.full_name(),
            schedule = %schedule.name,
            build = build.number,
            "schedule ran"
        ),
        Err(OpError::Conflict(reason)) => {
            tracing::info!(schedule = %schedule.name, %reason, "schedule already ran")
        }
        Err(e @ (OpError::Unavailable(_) | OpError::Internal(_))) => {
            tracing::warn!(schedule = %schedule.name, error = %e, "a schedule's build could not be stored; its claim runs out and it is tried again");
        }
        Err(e) => record_failure(state, &schedule, now, next_run_at, e.to_string()).await,
    }
}

async fn record_failure(
    state: &AppState,
    schedule: &Schedule,
    now: i64,
    next_run_at: i64,
    message: String,
) {
    tracing::warn!(schedule = %schedule.name, repo.id = schedule.repo_id, %message, "a schedule made no build");
    if let Err(e) = state
        .store
        .schedule_failed(
            schedule.id,
            schedule.claim_epoch,
            now,
            next_run_at,
            &message,
        )
        .await
    {
        tracing::warn!(error = %e, "recording a schedule's failure failed; its claim runs out and it is tried again");
    }
}

/// Builds the head of `schedule`'s branch with event `cron`.
pub async fn run_now(
    state: &Arc<AppState>,
    repo: &gantry_store::Repo,
    schedule: &Schedule,
    run: ScheduleRun,
) -> Result<gantry_store::Build, OpError> {
    trigger::head_build(
        state,
        repo,
        &schedule.branch,
        None,
        schedule.params.clone(),
        HeadBuild::Cron {
            name: schedule.name.clone(),
            run,
        },
        &format!("cron:{}", schedule.name),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .expect("a time")
            .timestamp_millis()
    }

    #[test]
    fn five_fields_read_in_their_time_zone() {
        let cadence = Cadence::parse("0 3 * * *", "Europe/Berlin").expect("valid");
        // 03:00 in Berlin in winter is 02:00 UTC.
        assert_eq!(
            cadence.next_after(ms("2026-12-03T09:00:00Z")),
            Some(ms("2026-12-04T02:00:00Z"))
        );
    }

    #[test]
    fn nicknames_and_drones_seconds_field() {
        let daily = Cadence::parse("@daily", "").expect("valid");
        assert_eq!(
            daily.next_after(ms("2026-12-03T09:00:00Z")),
            Some(ms("2026-12-04T00:00:00Z"))
        );
        let hourly = Cadence::parse("0 30 * * * *", "UTC").expect("valid");
        assert_eq!(
            hourly.next_after(ms("2026-12-03T09:00:00Z")),
            Some(ms("2026-12-03T09:30:00Z"))
        );
    }

    #[test]
    fn a_tick_is_strictly_after() {
        let cadence = Cadence::parse("*/15 * * * *", "UTC").expect("valid");
        assert_eq!(
            cadence.next_after(ms("2026-12-03T09:15:00Z")),
            Some(ms("2026-12-03T09:30:00Z"))
        );
    }

    #[test]
    fn a_spring_forward_gap_is_skipped_not_repeated() {
        // 02:30 does not exist in Berlin on 2027-03-28; the next day's 02:30 does.
        let cadence = Cadence::parse("30 2 * * *", "Europe/Berlin").expect("valid");
        let first = cadence
            .next_after(ms("2027-03-27T12:00:00Z"))
            .expect("fires");
        assert!(first > ms("2027-03-28T00:00:00Z"), "{first}");
        let second = cadence.next_after(first).expect("fires");
        assert!(second - first >= 22 * 3600 * 1000, "{first} {second}");
    }

    #[test]
    fn bad_expressions_and_zones_say_what_to_write() {
        let err = Cadence::parse("every day", "UTC").expect_err("invalid");
        assert!(err.to_string().contains("5 fields"), "{err}");
        let err = Cadence::parse("0 3 * * *", "Mars/Olympus").expect_err("invalid");
        assert!(err.to_string().contains("IANA"), "{err}");
    }
}
