//! Sending the outbox: each due message claimed, posted (through the guarded client when
//! someone else chose its address) and marked, or retried with backoff.

use super::*;

/// How long a claim on a message lasts without renewal (it is renewed while the message is
/// posted): a dead server's claims are due again after.
pub(super) const MESSAGE_LEASE: Duration = Duration::from_secs(30);

/// Sends due messages one claim at a time, until none is due.
pub(super) async fn send_due(state: &Arc<AppState>) -> Result<(), gantry_store::StoreError> {
    loop {
        let now = state.config.clock.now_ms();
        let lease_until = now + MESSAGE_LEASE.as_millis() as i64;
        let Some(message) = state.store.claim_message(now, lease_until).await? else {
            return Ok(());
        };
        let outcome = crate::worker::holding(
            &state.store,
            gantry_store::Claimed::Message(message.id),
            message.claim_epoch,
            MESSAGE_LEASE,
            send(state, &message),
        )
        .await;
        // Sent but not yet marked is the one window in which a message may go twice: a
        // server that dies here leaves the claim to run out, and another sends it again.
        match outcome {
            Ok(()) => {
                state
                    .store
                    .message_sent(message.id, message.claim_epoch)
                    .await?
            }
            Err((error, retry)) => {
                let attempts = message.attempts + 1;
                let retry_at = retry
                    .filter(|_| attempts < MAX_ATTEMPTS)
                    .map(|after| state.config.clock.now_ms() + after.as_millis() as i64);
                tracing::warn!(message.id = message.id, kind = %message.kind, attempts, %error, will_retry = retry_at.is_some(), "a notification failed");
                state
                    .store
                    .message_failed(message.id, message.claim_epoch, &error, retry_at)
                    .await?;
            }
        }
    }
}

/// The backoff before attempt `attempts + 1`.
pub(super) fn backoff(base: Duration, attempts: i64) -> Duration {
    let factor = 1u32 << attempts.clamp(0, 10);
    (base * factor).min(Duration::from_secs(600))
}

/// Why a message was not sent and, when worth trying again, after how long.
type Failed = (String, Option<Duration>);

/// Posts one message.
pub(super) async fn send(state: &AppState, message: &OutboxMessage) -> Result<(), Failed> {
    let url = match message.url.strip_prefix(SECRET_URL) {
        Some(secret) => secret_url(state, message.build_id, secret)
            .await
            .map_err(|e| (e, None))?,
        None => message.url.clone(),
    };
    match message.kind {
        // Commit statuses and deployments go to the configured GitHub API with its token.
        MessageKind::GithubStatus => {
            let token = github_token_of(state, message).await?;
            post(
                state,
                message,
                (&state.http, &url),
                &message.body,
                Some(&token),
            )
            .await?;
            Ok(())
        }
        MessageKind::GithubDeployment => send_deployment(state, message, &url).await,
        // Every other target was chosen by a repository's admin or a pipeline file, and goes
        // through the guarded client.
        MessageKind::Chat(_) => {
            let parsed = reqwest::Url::parse(&url).map_err(|_| {
                (
                    format!("{} is not a valid URL", host_of(&message.url)),
                    None,
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err((
                    format!("{} is not an http(s) URL", host_of(&message.url)),
                    None,
                ));
            }
            state
                .config
                .outbound
                .check_url(&parsed)
                .map_err(|refusal| (refusal.to_string(), None))?;
            post(
                state,
                message,
                (&state.outbound_http, &url),
                &message.body,
                None,
            )
            .await?;
            Ok(())
        }
    }
}

async fn github_token_of(state: &AppState, message: &OutboxMessage) -> Result<String, Failed> {
    let token = match message.build_id {
        Some(build) => github_token(state, build).await,
        None => None,
    };
    token.ok_or_else(|| {
        (
            "no GitHub token: set the repository's github_token or GANTRY_GITHUB_TOKEN".to_owned(),
            None,
        )
    })
}

/// A deployment status on GitHub: the deployment is created first when GitHub has none for
/// it yet (its id kept with the deployment), then the status is posted to it.
async fn send_deployment(
    state: &AppState,
    message: &OutboxMessage,
    url: &str,
) -> Result<(), Failed> {
    let corrupt = |what: &str| (format!("the queued deployment status has no {what}"), None);
    let body: Value = serde_json::from_str(&message.body).map_err(|_| corrupt("body"))?;
    let local = body["deployment"]
        .as_i64()
        .ok_or_else(|| corrupt("deployment"))?;
    let token = github_token_of(state, message).await?;
    let store_failed = |e: gantry_store::StoreError| {
        (
            format!("the store failed: {e}"),
            Some(backoff(state.config.notify_retry, message.attempts)),
        )
    };
    let github_id = match state
        .store
        .deployment_github_id(local)
        .await
        .map_err(store_failed)?
    {
        Some(id) => id,
        // A stop of a deployment GitHub never heard of: there is nothing to mark inactive.
        None if body["create"].is_null() => return Ok(()),
        None => {
            let created = post(
                state,
                message,
                (&state.http, url),
                &body["create"].to_string(),
                Some(&token),
            )
            .await?;
            let id = serde_json::from_str::<Value>(&created)
                .ok()
                .and_then(|answer| answer["id"].as_i64())
                .ok_or_else(|| {
                    (
                        format!("{} created a deployment but gave no id", host_of(url)),
                        None,
                    )
                })?;
            state
                .store
                .set_deployment_github_id(local, id)
                .await
                .map_err(store_failed)?;
            id
        }
    };
    let statuses = format!("{url}/{github_id}/statuses");
    post(
        state,
        message,
        (&state.http, &statuses),
        &body["status"].to_string(),
        Some(&token),
    )
    .await?;
    Ok(())
}

/// Posts `body` to `url` with `client` (and GitHub's `token`); the answer's text, or why it
/// failed and whether to try again.
async fn post(
    state: &AppState,
    message: &OutboxMessage,
    (client, url): (&reqwest::Client, &str),
    body: &str,
    token: Option<&str>,
) -> Result<String, Failed> {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "gantry")
        .timeout(Duration::from_secs(15))
        .body(body.to_owned());
    if let Some(token) = token {
        request = request
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json");
    }
    let retry = backoff(state.config.notify_retry, message.attempts);
    let response = request.send().await.map_err(|e| {
        // The reason, never the URL (a webhook's path is its secret); a refused address
        // is not tried again.
        let refused = crate::outbound::Refused::cause_of(&e).map(ToString::to_string);
        let e = e.without_url();
        tracing::info!(target = %host_of(&message.url), error = %e, "a notification was not delivered");
        let reason = refused.clone().unwrap_or_else(|| e.to_string());
        (
            format!("{} did not answer: {reason}", host_of(&message.url)),
            refused.is_none().then_some(retry),
        )
    })?;
    let status = response.status();
    let rate_limited = status.as_u16() == 429
        || (status.as_u16() == 403
            && response
                .headers()
                .get("x-ratelimit-remaining")
                .is_some_and(|v| v == "0"));
    let reset = response
        .headers()
        .get("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .map(|at| Duration::from_secs((at - chrono::Utc::now().timestamp()).clamp(1, 3600) as u64));
    let text = answer_text(response).await;
    if status.is_success() {
        return Ok(text);
    }
    // Readers see the status and the host; the answer's body (which may hold what an
    // internal service says) goes only to the server's log, for its admins.
    let answer: String = text.chars().take(300).collect();
    tracing::info!(target = %host_of(&message.url), %status, %answer, "a notification was refused");
    let error = format!("{} answered {status}", host_of(&message.url));
    if rate_limited {
        Err((error, Some(reset.unwrap_or(retry))))
    } else if status.is_server_error() {
        Err((error, Some(retry)))
    } else {
        Err((error, None))
    }
}

/// The most of an answer read: a deployment's id is near its start, and a chat service
/// chosen by a repository's admin could answer without end.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The start of an answer's body (at most [`MAX_ANSWER_BYTES`]), as text; the rest is never
/// read.
async fn answer_text(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_ANSWER_BYTES);
    String::from_utf8_lossy(&body).into_owned()
}

/// The webhook URL a pipeline's `notify:` keeps in a secret of its repository.
pub(super) async fn secret_url(
    state: &AppState,
    build_id: Option<i64>,
    name: &str,
) -> Result<String, String> {
    let lookup = async {
        let build = state.store.build_by_id(build_id?).await.ok()?;
        let repo = state.store.repo(build.repo_id).await.ok()?;
        let sealed = state
            .store
            .sealed_secrets(repo.id, &repo.owner)
            .await
            .ok()?
            .into_iter()
            .rev()
            .find(|s| s.name == name)?;
        Some((build.fork && !sealed.allow_pull_requests, sealed))
    };
    match lookup.await {
        Some((true, _)) => Err(format!(
            "secret `{name}` is withheld from pull requests from forks"
        )),
        // Only a stage deploying to its environment may have it; a notification is none.
        Some((false, sealed)) if sealed.environment.is_some() => Err(format!(
            "secret `{name}` is kept for environment `{}`: a notify URL cannot come from it",
            sealed.environment.as_deref().unwrap_or_default()
        )),
        Some((false, sealed)) => state
            .config
            .secret_key
            .open(&sealed.scope().associated_data(name), &sealed.sealed)
            .map(|v| String::from_utf8_lossy(&v).trim().to_owned())
            .map_err(|e| format!("secret `{name}` could not be opened: {e}")),
        None => Err(format!(
            "the webhook URL is in the secret `{name}`, which the repository does not have: add it with `gantry secret add`"
        )),
    }
}

pub(super) async fn github_token(state: &AppState, build_id: i64) -> Option<String> {
    let build = state.store.build_by_id(build_id).await.ok()?;
    let repo = state.store.repo(build.repo_id).await.ok()?;
    crate::credentials::github_token(state, &repo).0
}

/// `https://hooks.slack.com/…`: where a message went, without the secret part of its URL
/// (no path, query or credentials).
pub fn host_of(url: &str) -> String {
    if let Some(secret) = url.strip_prefix(SECRET_URL) {
        return format!("(the URL in secret {secret})");
    }
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let scheme = url.split_once("://").map_or("https", |(s, _)| s);
    format!("{scheme}://{host}/…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff(base, 0), Duration::from_secs(1));
        assert_eq!(backoff(base, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, 20), Duration::from_secs(600));
    }

    #[tokio::test]
    async fn an_answer_is_read_only_to_its_bound() {
        let endless = vec![b'x'; 4 * MAX_ANSWER_BYTES];
        let response = reqwest::Response::from(axum::http::Response::new(endless));
        assert_eq!(answer_text(response).await.len(), MAX_ANSWER_BYTES);
        let short = reqwest::Response::from(axum::http::Response::new("{\"id\": 7}"));
        assert_eq!(answer_text(short).await, "{\"id\": 7}");
    }

    #[test]
    fn webhook_urls_are_shown_without_their_secret_path() {
        assert_eq!(
            host_of("https://hooks.slack.com/services/T/B/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            host_of("https://user:pass@chat.example?token=x"),
            "https://chat.example/…"
        );
    }
}
