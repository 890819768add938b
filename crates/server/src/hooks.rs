//! `POST /hook/github`: verify, record, answer fast, build in the background. Order
//! matters: the body's size is capped, the repository is looked up by
//! `repository.full_name`, the signature is checked with that repository's secret, and only
//! then is the payload parsed and acted on. An accepted delivery is stored durably before
//! the answer; the trigger worker turns it into a build.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use gantry_store::{DeliveryState, NewDelivery, Recorded, Repo, Visibility};
use serde_json::json;

use crate::AppState;
use crate::error::{OpError, OpResult};
use crate::github::{self, Hook, MAX_BODY_BYTES};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/hook/github",
        post(receive).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
    )
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What became of a delivery, for `/metrics` (set on the answers that are not errors).
#[derive(Debug, Clone, Copy)]
struct Outcome(&'static str);

fn tagged(outcome: &'static str, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(Outcome(outcome));
    response
}

async fn receive(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> OpResult<Response> {
    let answered = answer(State(Arc::clone(&state)), headers, body).await;
    let outcome = match &answered {
        Ok(response) => response
            .extensions()
            .get::<Outcome>()
            .map_or("answered", |o| o.0),
        Err(OpError::Unauthorized(_)) => "refused",
        Err(OpError::Invalid { .. }) => "bad_request",
        Err(_) => "error",
    };
    state.metrics.delivery(outcome);
    answered
}

async fn answer(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> OpResult<Response> {
    let (event, delivery_id) = delivery_headers(&headers)?;
    let repo = verified_repository(&state, &headers, event, &body).await?;
    let record = Recorder {
        state: &state,
        event,
        delivery_id,
        repo_id: repo.id,
    };
    let hook = match github::parse_hook(event, &body) {
        Ok(hook) => hook,
        Err(e) => {
            record
                .record(DeliveryState::Rejected, e.to_string(), None)
                .await?;
            return Err(OpError::invalid(e.to_string()));
        }
    };
    respond(&record, &repo, hook).await
}

/// The event and the delivery id GitHub names a webhook by.
fn delivery_headers(headers: &HeaderMap) -> OpResult<(&str, &str)> {
    let event = header(headers, "x-github-event").ok_or_else(|| {
        OpError::invalid(
            "the X-GitHub-Event header is missing: is this a GitHub webhook?".to_owned(),
        )
    })?;
    let delivery_id = header(headers, "x-github-delivery").ok_or_else(|| {
        OpError::invalid(
            "the X-GitHub-Delivery header is missing: is this a GitHub webhook?".to_owned(),
        )
    })?;
    if delivery_id.is_empty() || delivery_id.len() > 200 {
        return Err(OpError::invalid(
            "X-GitHub-Delivery must be 1 to 200 characters".to_owned(),
        ));
    }
    Ok((event, delivery_id))
}

/// The registered repository the payload names, once its signature is checked with that
/// repository's secret. An unknown repository and a bad signature get the same refusal, and
/// nothing is stored for either.
async fn verified_repository(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    event: &str,
    body: &[u8],
) -> OpResult<Repo> {
    // What the request itself lacks is said before the repository is looked at (the same
    // for every repository); checking against a key of no repository also makes an unknown
    // repository cost what a known one does.
    let signature = header(headers, "x-hub-signature-256");
    if let Err(
        refused @ (github::SignatureError::Missing
        | github::SignatureError::OnlySha1
        | github::SignatureError::Malformed),
    ) = github::verify_signature(
        UNKNOWN_REPOSITORY_KEY,
        body,
        signature,
        headers.contains_key("x-hub-signature"),
    ) {
        return Err(OpError::Unauthorized(refused.to_string()));
    }
    let full_name =
        github::repository_of(event, body).map_err(|e| OpError::invalid(e.to_string()))?;
    let (owner, name) = full_name.split_once('/').ok_or_else(|| {
        OpError::invalid(format!(
            "repository.full_name `{full_name}` is not OWNER/NAME"
        ))
    })?;
    let Some(repo) = state.store.repo_by_name(owner, name).await? else {
        // The same answer as a bad signature: the webhook is no oracle for which (private)
        // repositories gantry builds.
        refused_delivery(
            state,
            &full_name,
            "the repository is not registered in gantry",
        );
        return Err(refusal());
    };
    let secret = crate::secrets::open_field(
        &state.config.secret_key,
        &repo.owner,
        &repo.name,
        "webhook_secret",
        &repo.webhook_secret,
    )
    .map_err(|e| {
        OpError::Internal(format!(
            "the webhook secret of {full_name} cannot be opened: {e}"
        ))
    })?;
    if let Err(refused) = github::verify_signature(&secret, body, signature, false) {
        // Nothing is written for a request that is not GitHub's: a log line, at most one a
        // second, says why (no secret, or another one).
        refused_delivery(state, &full_name, &refused.to_string());
        return Err(refusal());
    }
    if github::says_private(body) == Some(true) && repo.visibility != Visibility::Private {
        tracing::warn!(repo = %full_name, was = repo.visibility.as_str(), "GitHub says the repository is private: it is private in gantry from now on");
        state
            .store
            .update_repo(
                repo.id,
                &gantry_store::RepoUpdate {
                    visibility: Some(Visibility::Private),
                    ..Default::default()
                },
            )
            .await?;
    }
    Ok(repo)
}

/// Records what became of one delivery of a verified repository.
struct Recorder<'a> {
    state: &'a AppState,
    event: &'a str,
    delivery_id: &'a str,
    repo_id: i64,
}

impl Recorder<'_> {
    async fn record(
        &self,
        state: DeliveryState,
        outcome: String,
        payload: Option<Vec<u8>>,
    ) -> Result<Recorded, gantry_store::StoreError> {
        self.state
            .store
            .record_delivery(&NewDelivery {
                delivery_id: self.delivery_id,
                event: self.event,
                repo_id: Some(self.repo_id),
                state,
                outcome: &outcome,
                payload: payload.as_deref(),
            })
            .await
    }

    async fn done(&self, outcome: String) -> Result<Recorded, gantry_store::StoreError> {
        self.record(DeliveryState::Processed, outcome, None).await
    }
}

/// The answer to a verified hook: a ping is answered, an ignored or skipped event is
/// recorded as processed, and a trigger is stored for the trigger worker (a redelivery of
/// one already stored is a duplicate).
async fn respond(record: &Recorder<'_>, repo: &Repo, hook: Hook) -> OpResult<Response> {
    let full_name = repo.full_name();
    match hook {
        Hook::Ping => {
            record.done("pong".to_owned()).await?;
            Ok(tagged(
                "pong",
                Json(json!({ "status": "pong", "repository": full_name })),
            ))
        }
        Hook::Ignored(reason) => {
            record.done(reason.clone()).await?;
            Ok(tagged(
                "ignored",
                (
                    StatusCode::NO_CONTENT,
                    [("gantry-reason", header_safe(&reason))],
                ),
            ))
        }
        Hook::Trigger(_) if !repo.active => {
            let reason = format!("repository {full_name} is not active in gantry: no build");
            record.done(reason.clone()).await?;
            Ok(tagged(
                "ignored",
                Json(json!({ "status": "ignored", "reason": reason })),
            ))
        }
        Hook::Trigger(trigger) => {
            if let Some(reason) = trigger.skip_reason() {
                record.done(reason.clone()).await?;
                return Ok(tagged(
                    "skipped",
                    Json(json!({ "status": "skipped", "reason": reason })),
                ));
            }
            let payload = serde_json::to_vec(&trigger).expect("plain data serialises");
            let delivery_id = record.delivery_id;
            match record
                .record(DeliveryState::Pending, String::new(), Some(payload))
                .await?
            {
                Recorded::New(_) => Ok(tagged(
                    "queued",
                    (
                        StatusCode::ACCEPTED,
                        Json(json!({ "status": "queued", "delivery": delivery_id })),
                    ),
                )),
                Recorded::Duplicate(earlier) => Ok(tagged(
                    "duplicate",
                    Json(json!({
                        "status": "duplicate",
                        "delivery": delivery_id,
                        "outcome": earlier.outcome,
                    })),
                )),
            }
        }
    }
}

/// Any key: an unknown repository's request is checked against it so that it costs what a
/// known one's does.
const UNKNOWN_REPOSITORY_KEY: &str = "gantry: no such repository";

/// What both an unknown repository and a bad signature get.
fn refusal() -> OpError {
    OpError::Unauthorized(
        "X-Hub-Signature-256 does not match: the repository is not registered in gantry, or its webhook secret differs from the one in the webhook's settings on GitHub (`gantry repo add`, `gantry repo update --secret`; the server's log says which)".to_owned(),
    )
}

/// Logs a refused delivery, at most once a second (a flood of bad requests writes nothing
/// and fills no log).
fn refused_delivery(state: &AppState, full_name: &str, reason: &str) {
    let now = state.config.clock.now_ms();
    let last = state
        .last_refusal_log
        .load(std::sync::atomic::Ordering::Relaxed);
    if now - last >= 1_000
        && state
            .last_refusal_log
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        tracing::warn!(repo = %full_name, %reason, "a webhook was refused (further refusals within a second are not logged)");
    }
}

/// A reason fit for a response header: visible ASCII only.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}
