//! Stored webhook deliveries become builds: the `Deliveries` job claims each (four at
//! once, one repository's in order), holds its claim while it is processed, tries again with
//! backoff, and gives up after `MAX_DELIVERY_ATTEMPTS` with an errored build that says why.

use gantry_store::Claimed;

use super::*;

/// How long a claim on a delivery lasts without renewal; renewed while it is processed
/// (a fetch of a big repository can take longer), so only a dead server's claim runs out.
pub(super) const DELIVERY_LEASE: Duration = Duration::from_secs(20);

/// Deliveries one server processes at once: a slow repository (a big fetch, a heavy file)
/// holds one of them, never the others' builds.
pub(super) const DELIVERY_WORKERS: usize = 4;

/// Tries before a delivery is given up (each failure, time-out or server death counts).
pub(super) const MAX_DELIVERY_ATTEMPTS: i64 = 5;

/// The longest one try at a delivery may take (fetch, compile and store).
pub(super) const DELIVERY_TIMEOUT: Duration = Duration::from_secs(600);

/// How often stored deliveries are looked at without news (one let go to be tried later
/// is due, another server's claim ran out).
pub(super) const DELIVERY_POLL: Duration = Duration::from_secs(2);

/// Processes stored deliveries: at start (what a crash left), and whenever the receiver
/// stores one, [`DELIVERY_WORKERS`] at a time, one repository's in order. Each is claimed
/// first, so servers sharing the database process each delivery once (and
/// [`gantry_store::Store::create_build`] makes one build of it even if two claims overlap).
/// Shutdown drops the ones in flight: their claims run out and they are processed again.
#[derive(Default)]
pub(crate) struct Deliveries {
    running: tokio::task::JoinSet<()>,
}

impl crate::worker::Job for Deliveries {
    const NAME: &'static str = "deliveries";

    fn wakes_on(event: &gantry_store::Event) -> bool {
        matches!(
            event,
            gantry_store::Event::DeliveryQueued | gantry_store::Event::DeliveryDone
        )
    }

    async fn pass(&mut self, state: &Arc<AppState>) -> Result<Next, StoreError> {
        while self.running.try_join_next().is_some() {}
        if self.running.len() >= DELIVERY_WORKERS {
            // A worker frees when one of its deliveries ends.
            tokio::select! {
                _ = self.running.join_next() => return Ok(Next::Again),
                _ = state.shutdown.cancelled() => return Ok(Next::After(Duration::ZERO)),
            }
        }
        let now = state.config.clock.now_ms();
        let lease = DELIVERY_LEASE.as_millis() as i64;
        let Some(delivery) = state.store.claim_delivery(now, now + lease).await? else {
            return Ok(Next::After(DELIVERY_POLL));
        };
        let state = Arc::clone(state);
        // Everything logged while it is processed names the delivery.
        let span = tracing::info_span!(
            "delivery",
            delivery.id = %delivery.delivery_id,
            repo.id = delivery.repo_id
        );
        self.running
            .spawn(async move { take_up(&state, delivery).await }.instrument(span));
        Ok(Next::Again)
    }

    fn stop(&mut self) {
        self.running.abort_all();
    }
}

/// One try at a claimed delivery: processed, released to be tried again later, or given up
/// once it has failed [`MAX_DELIVERY_ATTEMPTS`] times.
pub(super) async fn take_up(state: &Arc<AppState>, delivery: Delivery) {
    if delivery.attempts > MAX_DELIVERY_ATTEMPTS {
        let reason = format!(
            "gantry gave up on this webhook delivery ({}) after {MAX_DELIVERY_ATTEMPTS} tries that never finished: the server processing it stopped each time (see the server log)",
            delivery.delivery_id
        );
        return give_up(state, &delivery, reason).await;
    }
    let tried = crate::worker::holding(
        &state.store,
        Claimed::Delivery(delivery.id),
        delivery.claim_epoch,
        DELIVERY_LEASE,
        tokio::time::timeout(DELIVERY_TIMEOUT, process(state, &delivery)),
    )
    .await;
    let failure = match tried {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!(
            "processing took longer than {} s",
            DELIVERY_TIMEOUT.as_secs()
        ),
    };
    if delivery.attempts >= MAX_DELIVERY_ATTEMPTS {
        let reason = format!(
            "gantry gave up on this webhook delivery ({}) after {MAX_DELIVERY_ATTEMPTS} tries; the last one failed: {failure}",
            delivery.delivery_id
        );
        return give_up(state, &delivery, reason).await;
    }
    let backoff = 2_000 * (1_i64 << (delivery.attempts - 1).clamp(0, 6));
    tracing::error!(delivery = %delivery.delivery_id, attempt = delivery.attempts, error = %failure, "processing a delivery failed; will retry");
    if let Err(e) = state
        .store
        .release_delivery(
            delivery.id,
            delivery.claim_epoch,
            state.config.clock.now_ms() + backoff,
        )
        .await
    {
        tracing::warn!(error = %e, "letting go of a delivery failed; its claim runs out");
    }
}

/// Ends a delivery that keeps failing: an errored build saying why, where its readers look
/// (the repository's builds), or, when even that cannot be stored, the delivery's outcome.
pub(super) async fn give_up(state: &Arc<AppState>, delivery: &Delivery, reason: String) {
    tracing::error!(delivery = %delivery.delivery_id, %reason, "delivery given up");
    let built = match (delivery_trigger(delivery), delivery.repo_id) {
        (Ok(trigger), Some(repo_id)) => match state.store.repo(repo_id).await {
            Ok(repo) => {
                let origin = origin_of(delivery, &trigger);
                errored_build(
                    state,
                    &repo,
                    context_of(&repo, &trigger),
                    origin,
                    reason.clone(),
                )
                .await
                .map(|_| ())
            }
            Err(e) => Err(e),
        },
        _ => Err(StoreError::NotFound("the delivery's repository".to_owned())),
    };
    if built.is_err()
        && let Err(e) = state
            .store
            .finish_delivery(delivery.id, delivery.claim_epoch, &reason)
            .await
    {
        tracing::error!(delivery = %delivery.delivery_id, error = %e, "recording a given-up delivery failed");
    }
}

pub(super) fn delivery_trigger(delivery: &Delivery) -> Result<Trigger, String> {
    match delivery.payload.as_deref() {
        Some(payload) => {
            serde_json::from_slice(payload).map_err(|e| format!("unreadable stored payload: {e}"))
        }
        None => Err("no payload was stored".to_owned()),
    }
}

pub(super) fn origin_of(delivery: &Delivery, trigger: &Trigger) -> Origin {
    Origin {
        sender: trigger.sender.clone(),
        delivery: Some(delivery.id),
        fork: trigger.fork,
        changes: change_span(trigger),
        schedule: None,
    }
}

pub(super) async fn process(state: &Arc<AppState>, delivery: &Delivery) -> Result<(), StoreError> {
    let trigger = match delivery_trigger(delivery) {
        Ok(trigger) => trigger,
        Err(reason) => {
            return state
                .store
                .finish_delivery(delivery.id, delivery.claim_epoch, &reason)
                .await;
        }
    };
    let repo = match delivery.repo_id {
        Some(id) => match state.store.repo(id).await {
            Ok(repo) => repo,
            Err(StoreError::NotFound(_)) => {
                return state
                    .store
                    .finish_delivery(
                        delivery.id,
                        delivery.claim_epoch,
                        "the repository was removed",
                    )
                    .await;
            }
            Err(e) => return Err(e),
        },
        None => {
            return state
                .store
                .finish_delivery(delivery.id, delivery.claim_epoch, "no repository")
                .await;
        }
    };
    super::environments::on_trigger(state, &repo, &trigger).await;
    let ctx = context_of(&repo, &trigger);
    let origin = origin_of(delivery, &trigger);
    let build = match create_build(state, &repo, ctx, origin).await {
        Ok(build) => build,
        // Another server (or an earlier try) built it: one delivery, one build.
        Err(StoreError::Conflict(reason)) => {
            tracing::info!(delivery = %delivery.delivery_id, %reason, "delivery already built");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    tracing::info!(
        repo = %repo.full_name(),
        build = build.number,
        status = %build.status,
        delivery = %delivery.delivery_id,
        "build created"
    );
    Ok(())
}
