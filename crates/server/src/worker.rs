//! One way to run background work. Every loop the server keeps (deliveries, the notifier,
//! the reaper, schedules, retention) is a [`Job`]: a pass claims what is due from the store
//! (each claim is a lease and an epoch another server cannot take while it lasts), processes
//! it [`holding`] the claim (renewed every quarter of its lease), finishes it under the same
//! epoch, and says when to look again. [`run`] drives every job the same way: a pass, then a
//! wait for the store's news the job cares about, for the time it asked, or for shutdown; a
//! failed pass backs off, doubling up to [`MAX_BACKOFF`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use gantry_store::{Claimed, Event, Store, StoreError};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// The longest a failing job waits before it tries again.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// There may be more due now: pass again at once.
    Again,
    /// Nothing is due before this long (or before news).
    After(Duration),
}

/// A kind of background work.
pub(crate) trait Job: Send + 'static {
    /// For the log.
    const NAME: &'static str;

    /// The news that may make something due before the time a pass asked for.
    fn wakes_on(event: &Event) -> bool;

    /// Claims and processes what is due.
    fn pass(
        &mut self,
        state: &Arc<AppState>,
    ) -> impl Future<Output = Result<Next, StoreError>> + Send;

    /// Called once at shutdown, before [`run`] returns (a job with work of its own in
    /// flight stops it here).
    fn stop(&mut self) {}
}

/// Runs `job` until the server shuts down.
pub(crate) async fn run<J: Job>(state: Arc<AppState>, mut job: J) {
    // Subscribed before the first pass: news committed while a pass runs wakes the next.
    let mut news = News::new(&state.store, J::wakes_on);
    let mut failures = 0u32;
    loop {
        let wait = match job.pass(&state).await {
            Ok(next) => {
                failures = 0;
                match next {
                    Next::Again => continue,
                    Next::After(wait) => wait,
                }
            }
            Err(e) => {
                failures += 1;
                let wait = backoff(failures);
                tracing::error!(job = J::NAME, error = %e, retry_in_ms = wait.as_millis() as u64, "background work failed; will retry");
                wait
            }
        };
        if news.wait(wait, &state.shutdown).await == Woken::Shutdown {
            job.stop();
            return;
        }
    }
}

/// The wait after `failures` failed passes in a row: 1 s, 2 s, 4 s ... up to [`MAX_BACKOFF`].
pub(crate) fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(5);
    (Duration::from_secs(1) * factor).min(MAX_BACKOFF)
}

/// Runs `work` while renewing the claim `(what, epoch)` every quarter of `lease`, so only a
/// dead or stalled server's claim runs out. A claim lost meanwhile (another server took the
/// work over) lets the work go on: the store refuses its writes under the old epoch, and the
/// first build stored wins.
/// A maintenance job's pass: `work` (given the claim's epoch and the time) runs only on the
/// server that takes the claim `job`, holding it; the others look again after the poll.
pub(crate) async fn maintenance<F: Future<Output = ()>>(
    state: &Arc<AppState>,
    job: &'static str,
    lease: Duration,
    work: impl FnOnce(i64, i64) -> F,
) -> Result<Next, StoreError> {
    let now = state.config.clock.now_ms();
    if let Some(epoch) = state
        .store
        .claim_maintenance(job, now, now + lease.as_millis() as i64)
        .await?
    {
        holding(
            &state.store,
            Claimed::Maintenance(job),
            epoch,
            lease,
            work(epoch, now),
        )
        .await;
    }
    Ok(Next::After(state.config.schedule_poll))
}

pub(crate) async fn holding<T>(
    store: &Store,
    what: Claimed<'_>,
    epoch: i64,
    lease: Duration,
    work: impl Future<Output = T>,
) -> T {
    let renew = async {
        let mut lost = false;
        loop {
            tokio::time::sleep(lease / 4).await;
            let until = store.clock().now_ms() + lease.as_millis() as i64;
            match store.renew_claim(what, epoch, until).await {
                Ok(true) => {}
                Ok(false) if !lost => {
                    lost = true;
                    tracing::warn!(claim = ?what, "another server took this work over; its writes under this claim will be refused");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(claim = ?what, error = %e, "renewing a claim failed"),
            }
        }
    };
    tokio::select! {
        out = work => out,
        never = renew => never,
    }
}

/// Why a [`News::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// Wanted news arrived (or news was missed: it may have been wanted).
    News,
    Timeout,
    Shutdown,
}

/// A subscription to the store's news, filtered.
pub(crate) struct News {
    receiver: broadcast::Receiver<Event>,
    wanted: fn(&Event) -> bool,
}

impl News {
    pub(crate) fn new(store: &Store, wanted: fn(&Event) -> bool) -> Self {
        Self {
            receiver: store.subscribe(),
            wanted,
        }
    }

    /// Waits for wanted news, at most `limit`, or for `shutdown`.
    pub(crate) async fn wait(&mut self, limit: Duration, shutdown: &CancellationToken) -> Woken {
        self.wait_until(tokio::time::Instant::now() + limit, shutdown)
            .await
    }

    pub(crate) async fn wait_until(
        &mut self,
        deadline: tokio::time::Instant,
        shutdown: &CancellationToken,
    ) -> Woken {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Woken::Shutdown,
                _ = tokio::time::sleep_until(deadline) => return Woken::Timeout,
                received = self.receiver.recv() => match received {
                    Ok(event) if (self.wanted)(&event) => return Woken::News,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return Woken::News,
                    // The store is gone: only the time is left to wait for.
                    Err(RecvError::Closed) => {
                        tokio::select! {
                            _ = shutdown.cancelled() => return Woken::Shutdown,
                            _ = tokio::time::sleep_until(deadline) => return Woken::Timeout,
                        }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work that outlasts its lease keeps its claim while [`holding`] renews it, and loses
    /// it to another server once it no longer does.
    #[tokio::test]
    async fn a_claim_is_held_while_its_work_runs() {
        let dir = gantry_test_support::TempDir::new("gantry-holding");
        let store = Store::open_sqlite(&dir.path().join("gantry.db"))
            .await
            .expect("opens");
        let delivery = gantry_store::NewDelivery {
            delivery_id: "d-1",
            event: "push",
            repo_id: None,
            state: gantry_store::DeliveryState::Pending,
            outcome: "",
            payload: Some(b"{}"),
        };
        store.record_delivery(&delivery).await.expect("records");
        let lease = Duration::from_millis(400);
        let now = store.clock().now_ms();
        let held = store
            .claim_delivery(now, now + lease.as_millis() as i64)
            .await
            .expect("claims")
            .expect("due");
        let taken_while_held = holding(
            &store,
            Claimed::Delivery(held.id),
            held.claim_epoch,
            lease,
            async {
                tokio::time::sleep(lease * 3).await;
                let now = store.clock().now_ms();
                store
                    .claim_delivery(now, now + 60_000)
                    .await
                    .expect("claims")
            },
        )
        .await;
        assert!(
            taken_while_held.is_none(),
            "a renewed claim is not due to anyone else"
        );
        tokio::time::sleep(lease + Duration::from_millis(100)).await;
        let now = store.clock().now_ms();
        let taken = store
            .claim_delivery(now, now + 60_000)
            .await
            .expect("claims")
            .expect("once no longer renewed, the claim runs out");
        assert!(taken.claim_epoch > held.claim_epoch);
    }

    #[test]
    fn backoff_doubles_up_to_its_limit() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
