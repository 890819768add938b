//! `GET /metrics` in Prometheus' text format, and `GET /readyz`. What happened on this
//! server (webhook deliveries by outcome, lease expiries its reaper found, step durations its
//! runners reported) is counted here as it happens; what the store holds (builds by status,
//! the stage queue, runners and their use, the outbox, environments by state) is counted by
//! the database at each scrape, so every replica reports the same numbers for those.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;
use crate::error::{OpError, OpResult};

type Labels = Vec<(String, String)>;

/// A runner that asked for work this recently counts as connected (its long poll is 25 s).
const CONNECTED_WITHIN_MS: i64 = 60_000;

/// The counts this server keeps; cheap to clone (each metric shares its value).
#[derive(Debug, Clone)]
pub struct Metrics {
    deliveries: Family<Labels, Counter>,
    lease_expiries: Counter,
    step_seconds: Histogram,
    retention_removed: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            deliveries: Family::default(),
            lease_expiries: Counter::default(),
            // 0.25 s to about 34 minutes.
            step_seconds: Histogram::new(exponential_buckets(0.25, 2.0, 14)),
            retention_removed: Family::default(),
        };
        // Every kind from the first scrape, at 0, so a rate over it is defined before this
        // server's first run.
        metrics.retention(&gantry_store::RetentionReport::default());
        metrics
    }
}

impl Metrics {
    /// A webhook delivery answered with `outcome` (queued, duplicate, ignored, ...).
    pub fn delivery(&self, outcome: &str) {
        self.deliveries
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }

    pub fn lease_expired(&self) {
        self.lease_expiries.inc();
    }

    pub fn step_took(&self, seconds: f64) {
        self.step_seconds.observe(seconds.max(0.0));
    }

    /// What a retention run of this server removed.
    pub fn retention(&self, report: &gantry_store::RetentionReport) {
        for (kind, n) in [
            ("builds", report.builds),
            ("build_logs", report.build_logs),
            ("log_lines", report.log_lines),
            ("deliveries", report.deliveries),
            ("messages", report.messages),
            ("bytes", report.bytes_freed),
        ] {
            self.retention_removed
                .get_or_create(&vec![("kind".to_owned(), kind.to_owned())])
                .inc_by(n.max(0) as u64);
        }
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

fn family(registry: &mut Registry, name: &str, help: &str, label: &str, values: &[(String, i64)]) {
    let family = Family::<Labels, Gauge>::default();
    for (key, value) in values {
        family
            .get_or_create(&vec![(label.to_owned(), key.clone())])
            .set(*value);
    }
    registry.register(name, help, family);
}

/// The text of one scrape.
async fn render(state: &AppState) -> Result<String, OpError> {
    let gauges = state.store.gauges().await?;
    let runners = state.store.runners().await?;
    let now = state.config.clock.now_ms();
    let mut registry = Registry::default();
    family(
        &mut registry,
        "gantry_builds",
        "Builds in the store, by status",
        "status",
        &gauges.builds,
    );
    gauge(
        &mut registry,
        "gantry_stage_queue_depth",
        "Stages waiting for a runner",
        gauges.queued_stages,
    );
    let oldest = Gauge::<f64, AtomicU64>::default();
    oldest.set(
        gauges
            .oldest_queued_at
            .map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0),
    );
    registry.register(
        "gantry_stage_queue_oldest_wait_seconds",
        "How long the oldest stage waiting for a runner has waited",
        oldest,
    );
    let running: i64 = gauges.running_stages.iter().map(|(_, n)| n).sum();
    gauge(
        &mut registry,
        "gantry_stages_running",
        "Stages a runner holds",
        running,
    );
    let connected: Vec<_> = runners
        .iter()
        .filter(|r| now - r.last_seen_at < CONNECTED_WITHIN_MS)
        .collect();
    gauge(
        &mut registry,
        "gantry_runners_connected",
        "Runners that asked for work in the last minute",
        connected.len() as i64,
    );
    let capacity: Vec<(String, i64)> = connected
        .iter()
        .map(|r| (r.name.clone(), r.capacity))
        .collect();
    family(
        &mut registry,
        "gantry_runner_capacity",
        "Stages a connected runner may run at once",
        "runner",
        &capacity,
    );
    let busy: Vec<(String, i64)> = connected
        .iter()
        .map(|r| {
            let held = gauges
                .running_stages
                .iter()
                .find(|(name, _)| *name == r.name)
                .map_or(0, |(_, n)| *n);
            (r.name.clone(), held)
        })
        .collect();
    family(
        &mut registry,
        "gantry_runner_busy",
        "Stages a connected runner is running",
        "runner",
        &busy,
    );
    family(
        &mut registry,
        "gantry_outbox_messages",
        "Chat messages and commit statuses in the outbox, by state",
        "state",
        &gauges.outbox,
    );
    let environments: Vec<(String, i64)> = state
        .store
        .environment_states()
        .await?
        .into_iter()
        .map(|(environment, n)| (environment.as_str().to_owned(), n))
        .collect();
    family(
        &mut registry,
        "gantry_environments",
        "Environments of every repository, by state (available, stop_failed, ...)",
        "state",
        &environments,
    );
    let metrics = &state.metrics;
    registry.register(
        "gantry_webhook_deliveries",
        "Webhook deliveries this server answered, by outcome",
        metrics.deliveries.clone(),
    );
    registry.register(
        "gantry_lease_expiries",
        "Stage leases this server's reaper found expired",
        metrics.lease_expiries.clone(),
    );
    registry.register(
        "gantry_retention_removed",
        "What this server's retention runs removed, by kind (builds, build_logs, log_lines, deliveries, messages, bytes)",
        metrics.retention_removed.clone(),
    );
    registry.register(
        "gantry_step_duration_seconds",
        "How long steps ran, as their runners reported",
        metrics.step_seconds.clone(),
    );
    let mut text = String::new();
    encode(&mut text, &registry)
        .map_err(|e| OpError::Internal(format!("encoding the metrics failed: {e}")))?;
    Ok(text)
}

/// `GET /metrics`: open, or behind `--metrics-token` when it is set.
pub async fn scrape(State(state): State<Arc<AppState>>, headers: HeaderMap) -> OpResult<Response> {
    if let Some(token) = &state.config.metrics_token
        && !crate::auth::carries_secret(&headers, token)
    {
        return Err(OpError::Unauthorized(
            "/metrics needs the metrics token: send `Authorization: Bearer TOKEN` with the server's --metrics-token".to_owned(),
        ));
    }
    let text = render(&state).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `GET /readyz`: ready when the database answers (`/healthz` only says the process is up).
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the database does not answer: {e}\n"),
        )
            .into_response(),
    }
}
