//! Background work held under a claim: a delivery, an outbox message, a schedule's tick or
//! a maintenance job is taken by one server under a lease and an epoch (each by its own
//! `claim_*`, whose choice of what is due differs), renewed here while it is processed, and
//! finished by its own write under the same epoch. A claim that ran out (a stalled or dead
//! server) is taken by another with a higher epoch, and the first one's later writes
//! change nothing.

use crate::db;
use crate::{Result, Store};

/// What a claim holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed<'a> {
    /// A webhook delivery, by its row id.
    Delivery(i64),
    /// An outbox message, by its id.
    Message(i64),
    /// A schedule's due tick, by the schedule's id.
    Schedule(i64),
    /// A maintenance job (retention), by its name.
    Maintenance(&'a str),
}

impl Store {
    /// Extends the claim `(what, epoch)` until `lease_until`; `false` when it is no longer
    /// held (another server took it over, or it was finished).
    pub async fn renew_claim(
        &self,
        what: Claimed<'_>,
        epoch: i64,
        lease_until: i64,
    ) -> Result<bool> {
        let renew = match what {
            Claimed::Delivery(id) => db::query(
                "UPDATE deliveries SET next_attempt_at = $3 WHERE id = $1 AND claim_epoch = $2 \
                 AND state = 'pending'",
            )
            .bind(id),
            Claimed::Message(id) => db::query(
                "UPDATE outbox SET next_attempt_at = $3 WHERE id = $1 AND claim_epoch = $2 \
                 AND state = 'pending'",
            )
            .bind(id),
            Claimed::Schedule(id) => db::query(
                "UPDATE schedules SET claimed_until = $3 WHERE id = $1 AND claim_epoch = $2",
            )
            .bind(id),
            Claimed::Maintenance(name) => db::query(
                "UPDATE maintenance SET claimed_until = $3 WHERE name = $1 AND claim_epoch = $2",
            )
            .bind(name),
        };
        let renewed = renew
            .bind(epoch)
            .bind(lease_until)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(renewed == 1)
    }
}
