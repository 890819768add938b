//! Webhook deliveries: every request to the receiver leaves one record (GitHub's
//! `X-GitHub-Delivery` id, the event, what became of it). An accepted delivery is stored
//! with its payload before the request is answered and processed in the background, so one
//! accepted before a crash is processed after the restart; its id makes a redelivery a no-op.

use serde::Serialize;

use crate::claims::Claimed;
use crate::{Event, Result, Store, StoreError, db};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Verified and stored, waiting to be processed.
    Pending,
    /// Processed: a build was created, or the event was deliberately ignored.
    Processed,
    /// Refused (bad signature, malformed payload): may be delivered again.
    Rejected,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Processed => "processed",
            DeliveryState::Rejected => "rejected",
        }
    }
}

impl TryFrom<String> for DeliveryState {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "pending" => Ok(DeliveryState::Pending),
            "processed" => Ok(DeliveryState::Processed),
            "rejected" => Ok(DeliveryState::Rejected),
            other => Err(format!("unknown delivery state `{other}`")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub delivery_id: &'a str,
    pub event: &'a str,
    pub repo_id: Option<i64>,
    pub state: DeliveryState,
    pub outcome: &'a str,
    /// Kept only while the delivery is pending.
    pub payload: Option<&'a [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub delivery_id: String,
    pub event: String,
    pub repo_id: Option<i64>,
    #[sqlx(try_from = "String")]
    pub state: DeliveryState,
    pub outcome: String,
    pub payload: Option<Vec<u8>>,
    pub build_id: Option<i64>,
    pub received_at: i64,
    /// Which claim on it is current (see [`Store::claim_delivery`]).
    pub claim_epoch: i64,
    /// How many times it was taken up, this claim included.
    pub attempts: i64,
}

/// What recording a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new record (or one that replaced a rejected attempt with the same id).
    New(i64),
    /// The id was seen before and not rejected: the earlier record.
    Duplicate(Delivery),
}

const COLUMNS: &str = "id, delivery_id, event, repo_id, state, outcome, payload, build_id, \
     received_at, claim_epoch, attempts";

impl Store {
    /// Stores a delivery unless its id was accepted before. A delivery that was rejected
    /// may come again (GitHub's "redeliver" after a secret was fixed) and is then replaced.
    pub async fn record_delivery(&self, new: &NewDelivery<'_>) -> Result<Recorded> {
        let now = self.clock.now_ms();
        let inserted: Option<i64> = db::query_scalar(
            "INSERT INTO deliveries (delivery_id, event, repo_id, state, outcome, payload, \
             received_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (delivery_id) DO UPDATE SET event = $2, repo_id = $3, state = $4, \
             outcome = $5, payload = $6, received_at = $7 \
             WHERE deliveries.state = 'rejected' RETURNING id",
        )
        .bind(new.delivery_id)
        .bind(new.event)
        .bind(new.repo_id)
        .bind(new.state.as_str())
        .bind(new.outcome)
        .bind(new.payload)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match inserted {
            Some(id) => {
                if new.state == DeliveryState::Pending {
                    self.publish(Event::DeliveryQueued).await;
                }
                Ok(Recorded::New(id))
            }
            None => {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM deliveries WHERE delivery_id = $1"
                ));
                let existing = db::query_as::<Delivery>(sql)
                    .bind(new.delivery_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("delivery {}", new.delivery_id)))?;
                Ok(Recorded::Duplicate(existing))
            }
        }
    }

    pub async fn delivery(&self, delivery_id: &str) -> Result<Option<Delivery>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM deliveries WHERE delivery_id = $1"
        ));
        db::query_as::<Delivery>(sql)
            .bind(delivery_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Deliveries accepted but not processed yet, oldest first.
    pub async fn pending_deliveries(&self, limit: i64) -> Result<Vec<Delivery>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM deliveries WHERE state = 'pending' ORDER BY id LIMIT $1"
        ));
        db::query_as::<Delivery>(sql)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// Takes the oldest pending delivery that nobody holds (or whose holder's lease ran
    /// out before `now`) until `lease_until`, and that no earlier pending delivery of its
    /// repository waits before: one repository's deliveries are processed in the order they
    /// came, while other repositories' go on. Servers sharing the database each take a
    /// different one; the returned `claim_epoch` names this claim, and `attempts` counts it.
    pub async fn claim_delivery(&self, now: i64, lease_until: i64) -> Result<Option<Delivery>> {
        let lock = self.skip_locked();
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE deliveries SET next_attempt_at = $2, claim_epoch = claim_epoch + 1, \
             attempts = attempts + 1 \
             WHERE id = (SELECT d.id FROM deliveries d WHERE d.state = 'pending' \
             AND d.next_attempt_at <= $1 AND NOT EXISTS (SELECT 1 FROM deliveries e \
             WHERE e.repo_id = d.repo_id AND e.state = 'pending' AND e.id < d.id) \
             ORDER BY d.id LIMIT 1{lock}) \
             AND state = 'pending' AND next_attempt_at <= $1 RETURNING {COLUMNS}"
        ));
        db::query_as::<Delivery>(sql)
            .bind(now)
            .bind(lease_until)
            .fetch_optional(&self.pool)
            .await
    }

    /// Lets go of a claim, to be taken again from `retry_at` (the work failed for a reason
    /// that may pass, like the database).
    pub async fn release_delivery(&self, id: i64, epoch: i64, retry_at: i64) -> Result<()> {
        self.renew_claim(Claimed::Delivery(id), epoch, retry_at)
            .await?;
        self.publish(Event::DeliveryDone).await;
        Ok(())
    }

    /// Marks a claimed delivery processed without a build (ignored, skipped, or failed for
    /// good); nothing changes if the claim is no longer the current one.
    pub async fn finish_delivery(&self, id: i64, epoch: i64, outcome: &str) -> Result<()> {
        db::query(
            "UPDATE deliveries SET state = 'processed', outcome = $2, processed_at = $3, \
             payload = NULL WHERE id = $1 AND claim_epoch = $4 AND state = 'pending'",
        )
        .bind(id)
        .bind(outcome)
        .bind(self.clock.now_ms())
        .bind(epoch)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())?;
        self.publish(Event::DeliveryDone).await;
        Ok(())
    }
}
