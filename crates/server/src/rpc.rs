//! The runner protocol's server side (`/rpc/v1`, see `gantry_proto`). Every call carries
//! the runner's own token (`gantry runner register`: it names the runner, and may restrict it
//! to some owners' repositories) or, deprecated, the shared runner secret. A request for
//! work is held open until a stage the runner can take is queued (woken by a `Notify`, no
//! polling interval), so dispatch takes one claim's time. Every later call names its lease's
//! epoch (random: only its holder knows it), and a runner with its own token reports only
//! for stages it holds; a stale one gets `409 Conflict`.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use gantry_proto::{
    Assignment, Heartbeat, Lease, LeaseStatus, LogBatch, StageDone, StepState, StepUpdate,
    WorkRequest,
};
use gantry_store::{ClaimRequest, Event, StageEnd, Status};

use crate::AppState;
use crate::auth::carries_secret;
use crate::error::{OpError, OpResult};
use crate::worker::{News, Woken};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(gantry_proto::path::HELLO, post(hello))
        .route(gantry_proto::path::REQUEST, post(request))
        .route("/rpc/v1/stages/{stage}/step", post(step))
        .route("/rpc/v1/stages/{stage}/logs", post(logs))
        .route("/rpc/v1/stages/{stage}/heartbeat", post(heartbeat))
        .route("/rpc/v1/stages/{stage}/watch", post(watch))
        .route("/rpc/v1/stages/{stage}/done", post(done))
}

/// Proof that the request carries a runner's token or the shared runner secret; every
/// handler here takes one.
#[derive(Debug)]
struct RunnerAuth {
    /// The runner's own token; `None`: the shared secret, which may act as any runner.
    token: Option<gantry_store::RunnerToken>,
}

impl FromRequestParts<Arc<AppState>> for RunnerAuth {
    type Rejection = OpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if carries_secret(&parts.headers, &state.config.runner_secret) {
            return Ok(RunnerAuth { token: None });
        }
        if let Some(given) = crate::auth::bearer(&parts.headers) {
            let hash = crate::auth::hash_token(given);
            if let Some(token) = state.store.runner_token_by_hash(&hash).await? {
                return Ok(RunnerAuth { token: Some(token) });
            }
        }
        Err(OpError::Unauthorized(
            "the runner's token is missing, wrong or revoked: make one with `gantry runner register NAME` and start the runner with --token (GANTRY_RUNNER_TOKEN); the shared --secret (GANTRY_RUNNER_SECRET) still works but is deprecated"
                .to_owned(),
        ))
    }
}

impl RunnerAuth {
    /// A runner with its own token acts under its name only.
    fn as_runner(&self, name: &str) -> OpResult<()> {
        match &self.token {
            Some(token) if token.name != name => Err(OpError::forbidden(format!(
                "this token is runner `{}`'s: start the runner with --name {}, or register `{name}` its own",
                token.name, token.name
            ))),
            _ => Ok(()),
        }
    }

    /// What the runner may claim: its token's owners (empty: any).
    fn owners(&self) -> Vec<String> {
        self.token
            .as_ref()
            .map(|token| token.owners.clone())
            .unwrap_or_default()
    }

    /// A runner with its own token reports only for a stage it holds.
    async fn holds(&self, state: &AppState, stage: i64) -> OpResult<()> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        if state.store.stage_holder(stage).await?.as_deref() == Some(token.name.as_str()) {
            Ok(())
        } else {
            Err(OpError::Conflict(format!(
                "runner `{}` does not hold stage {stage}",
                token.name
            )))
        }
    }
}

fn lease_until(state: &AppState) -> i64 {
    state.config.clock.now_ms() + state.config.lease.as_millis() as i64
}

/// Records the runner as seen, after making sure no other live runner has its name (a
/// restart, from the same data folder, is of the same lineage and takes its place).
async fn present(state: &AppState, req: &WorkRequest) -> OpResult<()> {
    // A live runner asks for work at least once per long poll, or holds a lease.
    let alive_since =
        state.config.clock.now_ms() - 2 * state.config.max_poll.as_millis() as i64 - 5_000;
    if let Some((other, last_seen)) = state
        .store
        .other_live_instance(&req.runner, &req.instance, alive_since)
        .await?
        && !gantry_proto::same_lineage(&other, &req.instance)
    {
        tracing::warn!(runner = %req.runner, instance = %gantry_proto::shown_instance(&req.instance), live = %gantry_proto::shown_instance(&other), "refused a runner whose name a live runner has");
        return Err(OpError::Conflict(format!(
            "a runner named `{}` is already connected (instance {}, heard from {} s ago): two runners of one name would remove each other's containers; give this one its own name (--name, GANTRY_RUNNER_NAME) or its own data folder",
            req.runner,
            gantry_proto::shown_instance(&other),
            (state.config.clock.now_ms() - last_seen).max(0) / 1000
        )));
    }
    state
        .store
        .runner_seen(
            &req.runner,
            &req.instance,
            &req.labels,
            &req.platform,
            req.capacity,
            req.offer,
        )
        .await?;
    Ok(())
}

/// A runner presents itself before it removes what its earlier life left, then asks for work:
/// what that life held is ended at its first request, after the clean-up.
async fn hello(
    auth: RunnerAuth,
    State(state): State<Arc<AppState>>,
    Json(req): Json<WorkRequest>,
) -> OpResult<StatusCode> {
    auth.as_runner(&req.runner)?;
    present(&state, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn request(
    auth: RunnerAuth,
    State(state): State<Arc<AppState>>,
    Json(req): Json<WorkRequest>,
) -> OpResult<Response> {
    auth.as_runner(&req.runner)?;
    present(&state, &req).await?;
    // What this runner held in an earlier life can never be finished.
    state
        .store
        .reap_previous_instance(&req.runner, &req.instance)
        .await?;
    let wait = std::time::Duration::from_millis(req.wait_ms).min(state.config.max_poll);
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribed before the first claim: a stage queued in between wakes the next.
    let mut queued = News::new(&state.store, |event| matches!(event, Event::Queued));
    loop {
        let claim = state
            .store
            .claim_next(&ClaimRequest {
                runner: req.runner.clone(),
                instance: req.instance.clone(),
                labels: req.labels.clone(),
                platform: req.platform.clone(),
                offer: req.offer,
                lease_until: lease_until(&state),
                owners: auth.owners(),
            })
            .await?;
        if let Some(claim) = claim {
            tracing::info!(stage.id = claim.stage_id, build.id = claim.build_id, epoch = claim.epoch, runner = %req.runner, "stage claimed");
            let clone = claim.plan.clone.clone();
            let build = state.store.build_by_id(claim.build_id).await?;
            let repo = state.store.repo(build.repo_id).await?;
            let (secrets, mut withheld_secrets) = crate::secrets::for_stage(
                &state.store,
                &state.config.secret_key,
                &repo,
                &build,
                &claim.plan,
            )
            .await?;
            // The pipeline's own `image_pull_secrets` first: the first login for a host wins.
            let mut registries =
                crate::secrets::pull_logins(&claim.plan, &secrets, &mut withheld_secrets);
            // A runner restricted to some owners is theirs: it gets their logins, never the
            // server's.
            registries.extend(
                crate::secrets::registry_logins(
                    &state.store,
                    &state.config.secret_key,
                    &repo,
                    &build,
                    auth.owners().is_empty(),
                )
                .await?,
            );
            let (credential, netrc) =
                crate::credentials::for_stage(&state, &repo, build.fork).await;
            if credential.source == crate::credentials::CredentialSource::App
                && let Some(gantry_proto::GitCredential::Basic { password, .. }) =
                    &credential.credential
            {
                crate::credentials::keep_for_revocation(
                    &state,
                    claim.stage_id,
                    claim.epoch,
                    password,
                )
                .await?;
            }
            let credential = credential.credential;
            return Ok(Json(Assignment {
                lease: Lease {
                    stage: claim.stage_id,
                    epoch: claim.epoch,
                },
                job_id: format!("gantry-{}-{}", claim.stage_id, claim.epoch),
                stage: claim.plan,
                clone,
                clone_credential: credential,
                netrc,
                trusted: repo.trusts(build.fork),
                secrets,
                withheld_secrets,
                registries,
                heartbeat_ms: state.config.heartbeat.as_millis() as u64,
            })
            .into_response());
        }
        if queued.wait_until(deadline, &state.shutdown).await != Woken::News {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

#[tracing::instrument(name = "stage", skip_all, fields(stage.id = stage))]
async fn step(
    auth: RunnerAuth,
    State(state): State<Arc<AppState>>,
    Path(stage): Path<i64>,
    Json(update): Json<StepUpdate>,
) -> OpResult<StatusCode> {
    auth.holds(&state, stage).await?;
    state.store.update_step(stage, &update).await?;
    if let (Some(started), Some(finished)) = (update.started_at, update.finished_at)
        && update.state != StepState::Running
    {
        state
            .metrics
            .step_took((finished - started).as_seconds_f64());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[tracing::instrument(name = "stage", skip_all, fields(stage.id = stage))]
async fn logs(
    auth: RunnerAuth,
    State(state): State<Arc<AppState>>,
    Path(stage): Path<i64>,
    Json(batch): Json<LogBatch>,
) -> OpResult<StatusCode> {
    auth.holds(&state, stage).await?;
    if batch.lines.is_empty() {
        return Ok(StatusCode::NO_CONTENT);
    }
    state
        .store
        .append_logs(stage, batch.epoch, &batch.step, &batch.lines)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn heartbeat(
    auth: RunnerAuth,
    State(state): State<Arc<AppState>>,
    Path(stage): Path<i64>,
    Json(beat): Json<Heartbeat>,
) -> OpResult<Json<LeaseStatus>> {
    auth.holds(&state, stage).await?;
    let cancelled = state
        .store
        .heartbeat(stage, beat.epoch, lease_until(&state))
        .await?;
    Ok(Json(LeaseStatus { cancelled }))
}

/// Held open until the stage's build is cancelled, or for at most the poll time.
async fn watch(
    auth: RunnerAuth,
    State(state): State<Arc<AppState>>,
    Path(stage): Path<i64>,
    Json(beat): Json<Heartbeat>,
) -> OpResult<Json<LeaseStatus>> {
    auth.holds(&state, stage).await?;
    let deadline = tokio::time::Instant::now() + state.config.max_poll;
    let mut cancels = News::new(&state.store, |event| {
        matches!(event, Event::Cancelled { .. })
    });
    loop {
        if state.store.lease_cancelled(stage, beat.epoch).await? {
            return Ok(Json(LeaseStatus { cancelled: true }));
        }
        if cancels.wait_until(deadline, &state.shutdown).await != Woken::News {
            return Ok(Json(LeaseStatus { cancelled: false }));
        }
    }
}

#[tracing::instrument(name = "stage", skip_all, fields(stage.id = stage))]
async fn done(
    auth: RunnerAuth,
    State(state): State<Arc<AppState>>,
    Path(stage): Path<i64>,
    Json(done): Json<StageDone>,
) -> OpResult<StatusCode> {
    auth.holds(&state, stage).await?;
    let status = match done.state {
        StepState::Success | StepState::Failure | StepState::Killed | StepState::Error => {
            Status::from(done.state)
        }
        other => {
            return Err(OpError::invalid_field(
                "state",
                format!(
                    "a stage ends as success, failure, error or killed, not {}",
                    other.as_str()
                ),
            ));
        }
    };
    let (build_id, _queued, finished) = state
        .store
        .finish_stage(
            stage,
            done.epoch,
            &StageEnd {
                status,
                error: done.error,
                steps: done.steps,
            },
        )
        .await?;
    crate::credentials::revoke_stage_token(&state, stage).await;
    tracing::info!(stage.id = stage, build.id = build_id, %status, build_finished = finished, "stage ended");
    Ok(StatusCode::NO_CONTENT)
}
