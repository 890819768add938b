//! What the store holds right now, counted for `/metrics`: builds by status, the stage
//! queue, running stages per runner, and the outbox. Counted by the database, so every server
//! sharing it reports the same numbers.

use crate::{Result, Store, db};

/// A count of the store's contents at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// (status, builds).
    pub builds: Vec<(String, i64)>,
    /// Stages waiting for a runner.
    pub queued_stages: i64,
    /// When the oldest of them was created (milliseconds), if any.
    pub oldest_queued_at: Option<i64>,
    /// (runner, stages it runs).
    pub running_stages: Vec<(String, i64)>,
    /// (state, messages): pending, sent, failed.
    pub outbox: Vec<(String, i64)>,
}

impl Store {
    /// (runner, stages it holds), for runners holding any.
    pub async fn running_stages_by_runner(&self) -> Result<Vec<(String, i64)>> {
        db::query_as(
            "SELECT COALESCE(runner, ''), COUNT(*) FROM stages WHERE status = 'running' \
             GROUP BY runner ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
    }

    pub async fn gauges(&self) -> Result<Gauges> {
        let builds: Vec<(String, i64)> =
            db::query_as("SELECT status, COUNT(*) FROM builds GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await?;
        let (queued_stages, oldest_queued_at): (i64, Option<i64>) =
            db::query_as("SELECT COUNT(*), MIN(created_at) FROM stages WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        let running_stages = self.running_stages_by_runner().await?;
        let outbox: Vec<(String, i64)> =
            db::query_as("SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?;
        Ok(Gauges {
            builds,
            queued_stages,
            oldest_queued_at,
            running_stages,
            outbox,
        })
    }
}
