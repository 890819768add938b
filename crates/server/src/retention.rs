//! The retention job: once an hour (by default), one server removes what is older than the
//! operator's limits (`Retention`), in small batches through
//! [`gantry_store::Store::prune`], and records what it removed. The run is claimed in the
//! store (`maintenance`), so servers sharing a database do it once.

use std::sync::Arc;
use std::time::Duration;

use gantry_store::{RetentionPolicy, RetentionReport};

use crate::AppState;

/// The name of the job in the store's `maintenance` table.
pub const JOB: &str = "retention";

/// How long a claim on a retention run lasts without renewal: it is renewed while the run
/// goes on, so another server starts one only after a dead server's claim ran out.
const CLAIM: Duration = Duration::from_secs(60);

const DAY_MS: i64 = 24 * 3600 * 1000;

/// What is kept. A limit of 0 days keeps that kind for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Builds that finished more than this many days ago are removed...
    pub build_days: u32,
    /// ...but never the newest this many of each repository's branch.
    pub builds_per_branch: u32,
    /// Step logs of builds that finished more than this many days ago (the builds stay).
    pub log_days: u32,
    /// Processed webhook deliveries.
    pub delivery_days: u32,
    /// Sent (or given up) chat messages and commit statuses.
    pub message_days: u32,
    /// How often the job runs.
    pub every: Duration,
    /// Caches on runners' engines: started afresh after this many days...
    pub cache_days: u32,
    /// ...and removed after a stage that grew one past this many MiB.
    pub cache_max_mib: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            build_days: 365,
            builds_per_branch: 50,
            log_days: 90,
            delivery_days: 30,
            message_days: 30,
            every: Duration::from_secs(3600),
            cache_days: 7,
            cache_max_mib: 1024,
        }
    }
}

impl Retention {
    /// What the stages of a build are told of their caches.
    pub fn cache_policy(&self) -> gantry_pipeline::context::CachePolicy {
        gantry_pipeline::context::CachePolicy {
            max_bytes: self.cache_max_mib.saturating_mul(1 << 20),
            max_age_secs: u64::from(self.cache_days).saturating_mul(24 * 3600),
        }
    }

    /// The cutoffs as of `now` (milliseconds).
    pub fn policy(&self, now: i64) -> RetentionPolicy {
        let before = |days: u32| (days > 0).then(|| now - i64::from(days) * DAY_MS);
        RetentionPolicy {
            builds_before: before(self.build_days),
            keep_per_branch: i64::from(self.builds_per_branch),
            logs_before: before(self.log_days),
            deliveries_before: before(self.delivery_days),
            messages_before: before(self.message_days),
            batch: 100,
        }
    }
}

/// Runs retention when due, once across servers.
pub(crate) struct Pruner;

impl crate::worker::Job for Pruner {
    const NAME: &'static str = "retention";

    fn wakes_on(_: &gantry_store::Event) -> bool {
        false
    }

    async fn pass(
        &mut self,
        state: &Arc<AppState>,
    ) -> Result<crate::worker::Next, gantry_store::StoreError> {
        crate::worker::maintenance(state, JOB, CLAIM, |epoch, now| run(state, epoch, now)).await
    }
}

/// What a step's page and its raw log say when retention removed the build's logs.
pub fn log_removed(state: &AppState, build: &gantry_store::Build) -> Option<String> {
    let at = build.logs_removed_at?;
    let days = state.config.retention.log_days;
    Some(format!(
        "This log was removed on {} by retention: the server keeps step logs {days} days after a build ends (`--keep-logs-days`).",
        crate::human::at_ms(at)
    ))
}

async fn run(state: &AppState, epoch: i64, now: i64) {
    let retention = state.config.retention;
    let started = std::time::Instant::now();
    let report = match state.store.prune(&retention.policy(now), now).await {
        Ok(report) => report,
        Err(e) => {
            // What was removed stays removed; the claim runs out and the rest goes next time.
            tracing::error!(error = %e, "retention failed part-way; it runs again when its claim runs out");
            return;
        }
    };
    state.metrics.retention(&report);
    log(&report, started.elapsed());
    let next = now + retention.every.as_millis() as i64;
    if let Err(e) = state
        .store
        .maintenance_done(JOB, epoch, now, next, &report)
        .await
    {
        tracing::warn!(error = %e, "recording the retention run failed");
    }
}

fn log(report: &RetentionReport, took: Duration) {
    tracing::info!(
        builds = report.builds,
        build_logs = report.build_logs,
        log_lines = report.log_lines,
        deliveries = report.deliveries,
        messages = report.messages,
        bytes_freed = report.bytes_freed,
        batches = report.batches,
        took_ms = took.as_millis() as u64,
        "retention removed old builds, logs, deliveries and messages"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_days_keeps_for_ever() {
        let retention = Retention {
            build_days: 0,
            log_days: 2,
            ..Retention::default()
        };
        let policy = retention.policy(10 * DAY_MS);
        assert_eq!(policy.builds_before, None);
        assert_eq!(policy.logs_before, Some(8 * DAY_MS));
        assert_eq!(policy.keep_per_branch, 50);
    }
}
