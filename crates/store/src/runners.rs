//! Runners the server has heard from: name, labels, capacity and when they last asked for
//! work (shown in the API; the leases themselves live on the stages).

use std::collections::BTreeMap;

use gantry_proto::Offer;

use crate::{Result, Store, StoreError, db};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    pub name: String,
    pub instance: String,
    pub labels: BTreeMap<String, String>,
    pub platform: String,
    pub capacity: i64,
    pub offer: Offer,
    pub last_seen_at: i64,
}

impl Store {
    pub async fn runner_seen(
        &self,
        name: &str,
        instance: &str,
        labels: &BTreeMap<String, String>,
        platform: &str,
        capacity: u32,
        offer: Offer,
    ) -> Result<()> {
        let labels = serde_json::to_string(labels).expect("strings serialise");
        db::query(
            "INSERT INTO runners (name, instance, labels, platform, capacity, last_seen_at, \
             offer_docker, offer_host, offer_kubernetes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (name) DO UPDATE SET instance = $2, labels = $3, platform = $4, \
             capacity = $5, last_seen_at = $6, offer_docker = $7, offer_host = $8, \
             offer_kubernetes = $9",
        )
        .bind(name)
        .bind(instance)
        .bind(labels)
        .bind(platform)
        .bind(i64::from(capacity))
        .bind(self.clock.now_ms())
        .bind(offer.docker)
        .bind(offer.host)
        .bind(offer.kubernetes)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())?;
        Ok(())
    }

    /// Another live process of runner `name`: the instance the server last heard from, when
    /// it is not `instance` and was heard from since `since`, or still holds a stage under an
    /// unexpired lease (a runner busy with long stages asks for no work).
    pub async fn other_live_instance(
        &self,
        name: &str,
        instance: &str,
        since: i64,
    ) -> Result<Option<(String, i64)>> {
        let row: Option<(String, i64)> = db::query_as(
            "SELECT r.instance, r.last_seen_at FROM runners r WHERE r.name = $1 \
             AND r.instance <> $2 AND (r.last_seen_at >= $3 OR EXISTS (SELECT 1 FROM stages s \
             WHERE s.status = 'running' AND s.runner = r.name AND s.runner_instance = r.instance \
             AND s.lease_expires_at >= $4))",
        )
        .bind(name)
        .bind(instance)
        .bind(since)
        .bind(self.clock.now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    pub async fn runners(&self) -> Result<Vec<Runner>> {
        type Row = (String, String, String, String, i64, i64, bool, bool, bool);
        let rows: Vec<Row> = db::query_as(
            "SELECT name, instance, labels, platform, capacity, last_seen_at, offer_docker, \
             offer_host, offer_kubernetes FROM runners ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(
                |(
                    name,
                    instance,
                    labels,
                    platform,
                    capacity,
                    last_seen_at,
                    docker,
                    host,
                    kubernetes,
                )| {
                    Ok(Runner {
                        name,
                        instance,
                        labels: serde_json::from_str(&labels)
                            .map_err(|e| StoreError::corrupt("runner labels", e))?,
                        platform,
                        capacity,
                        offer: Offer {
                            docker,
                            kubernetes,
                            host,
                        },
                        last_seen_at,
                    })
                },
            )
            .collect()
    }
}

/// A runner's own token (`gantry runner register`); the token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerToken {
    pub id: i64,
    /// The runner it is for: a runner presenting it must use this name.
    pub name: String,
    /// What it may claim: stages of these owners' repositories; empty, any.
    pub owners: Vec<String>,
    pub created_at: i64,
}

type RunnerTokenRow = (i64, String, String, i64);

fn runner_token(row: RunnerTokenRow) -> RunnerToken {
    let (id, name, owners, created_at) = row;
    RunnerToken {
        id,
        name,
        owners: serde_json::from_str(&owners).unwrap_or_default(),
        created_at,
    }
}

impl Store {
    /// Records a runner's token by its hash; a name that has one already is a `Conflict`.
    pub async fn create_runner_token(
        &self,
        name: &str,
        hash: &str,
        owners: &[String],
    ) -> Result<RunnerToken> {
        let owners = serde_json::to_string(owners).expect("strings serialise");
        let row: Option<RunnerTokenRow> = db::query_as(
            "INSERT INTO runner_tokens (name, hash, owners, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING RETURNING id, name, owners, created_at",
        )
        .bind(name)
        .bind(hash)
        .bind(owners)
        .bind(self.clock.now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(runner_token).ok_or_else(|| {
            StoreError::Conflict(format!(
                "runner `{name}` has a token already: revoke it first (`gantry runner revoke`)"
            ))
        })
    }

    pub async fn runner_token_by_hash(&self, hash: &str) -> Result<Option<RunnerToken>> {
        let row: Option<RunnerTokenRow> =
            db::query_as("SELECT id, name, owners, created_at FROM runner_tokens WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(runner_token))
    }

    pub async fn runner_tokens(&self) -> Result<Vec<RunnerToken>> {
        let rows: Vec<RunnerTokenRow> =
            db::query_as("SELECT id, name, owners, created_at FROM runner_tokens ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(runner_token).collect())
    }

    /// Revokes runner `name`'s token; `false` when it has none.
    pub async fn delete_runner_token(&self, name: &str) -> Result<bool> {
        let removed = db::query("DELETE FROM runner_tokens WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())?;
        Ok(removed == 1)
    }

    /// The runner holding `stage`'s lease now, if it is running.
    pub async fn stage_holder(&self, stage: i64) -> Result<Option<String>> {
        let holder: Option<Option<String>> =
            db::query_scalar("SELECT runner FROM stages WHERE id = $1 AND status = 'running'")
                .bind(stage)
                .fetch_optional(&self.pool)
                .await?;
        Ok(holder.flatten())
    }
}
