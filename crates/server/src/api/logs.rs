//! A step's log over the API: as text (a range of lines, or the whole log to download), as
//! JSON pages of lines for the log viewer, and live as server-sent events that resume after
//! a dropped connection without losing or repeating a line.

use super::*;

pub(super) async fn find_step(
    state: &AppState,
    caller: &Caller,
    path: (String, String, i64, i64, i64),
) -> OpResult<(Stage, Step)> {
    let at = ops::builds::StepAt::from(&path);
    let (_, _, stage, step) = ops::builds::step(state, caller.reader(), at).await?;
    Ok((stage, step))
}

pub(super) const PAGE: usize = 5000;

#[derive(Debug, Deserialize)]
pub(super) struct LogQuery {
    #[serde(default)]
    download: bool,
    from: Option<u64>,
    limit: Option<usize>,
    after: Option<u64>,
}

/// The whole log as text, streamed page by page; `?download=1` as a file.
pub(super) async fn step_log(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(path): Path<(String, String, i64, i64, i64)>,
    Query(query): Query<LogQuery>,
) -> OpResult<Response> {
    let file = format!("{}-{}-{}-{}-{}.log", path.0, path.1, path.2, path.3, path.4);
    let at = ops::builds::StepAt::from(&path);
    let (_, build, _, step) = ops::builds::step(&state, caller.reader(), at).await?;
    if let Some(removed) = crate::retention::log_removed(&state, &build) {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{removed}\n"),
        )
            .into_response());
    }
    let store = state.store.clone();
    let pages = stream::unfold(Some(1u64), move |next| {
        let store = store.clone();
        async move {
            let from = next?;
            match store.read_log(step.id, from, PAGE).await {
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => {
                    let after = lines.last().map(|l| l.number + 1);
                    let mut text = String::new();
                    for line in &lines {
                        text.push_str(&line.text);
                        text.push('\n');
                    }
                    Some((Ok::<_, std::io::Error>(text), after))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    });
    let mut response = (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(pages),
    )
        .into_response();
    if query.download
        && let Ok(value) = format!("attachment; filename=\"{file}\"").parse()
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// A page of lines as JSON, for the log viewer: `{total, ended, lines: [{n, t, text}]}`.
pub(super) async fn log_lines(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(path): Path<(String, String, i64, i64, i64)>,
    Query(query): Query<LogQuery>,
) -> OpResult<Json<serde_json::Value>> {
    let (_, step) = find_step(&state, &caller, path).await?;
    let lines = state
        .store
        .read_log(
            step.id,
            query.from.unwrap_or(1),
            query.limit.unwrap_or(500).min(PAGE),
        )
        .await?;
    let total = state.store.log_last_line(step.id).await?;
    Ok(Json(json!({
        "total": total,
        "ended": step.status.is_final(),
        "lines": lines
            .iter()
            .map(|l| json!({ "n": l.number, "t": l.elapsed_ms, "text": l.text }))
            .collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
pub(super) struct SearchQuery {
    #[serde(default)]
    q: String,
    /// Match case (text searches ignore it by default).
    #[serde(default)]
    case: bool,
    /// `q` is a regular expression.
    #[serde(default)]
    regex: bool,
    from: Option<u64>,
    /// How many lines one window reads at most.
    lines: Option<u64>,
    branch: Option<String>,
    since: Option<String>,
    last: Option<i64>,
}

impl SearchQuery {
    fn pattern(&self) -> OpResult<ops::logs::Pattern> {
        ops::logs::Pattern::new(&self.q, self.case, self.regex)
    }
}

/// One window of a search of a step's log.
pub(super) async fn search_step_log(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(path): Path<(String, String, i64, i64, i64)>,
    Query(query): Query<SearchQuery>,
) -> OpResult<Json<gantry_api::StepLogSearch>> {
    let pattern = query.pattern()?;
    let at = ops::builds::StepAt::from(&path);
    let window = (
        query.from.unwrap_or(1),
        query.lines.unwrap_or(ops::logs::STEP_WINDOW_LINES),
    );
    let found = ops::logs::search_step(&state, caller.reader(), at, &pattern, window).await?;
    Ok(Json(found))
}

/// A search across a repository's recent builds.
pub(super) async fn search_repo_logs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    Query(query): Query<SearchQuery>,
) -> OpResult<Json<gantry_api::RepoLogSearch>> {
    let pattern = query.pattern()?;
    let since = match query.since.as_deref().filter(|s| !s.is_empty()) {
        Some(since) => Some(ops::logs::parse_since(since, state.config.clock.now_ms())?),
        None => None,
    };
    let search = ops::logs::RepoSearch {
        branch: query.branch,
        since,
        last: query.last,
    };
    let found =
        ops::logs::search_repo(&state, caller.reader(), (&owner, &name), &pattern, search).await?;
    Ok(Json(found))
}

/// One line as an SSE event: `id` is its number (so `Last-Event-ID` resumes after it).
pub(super) fn line_event(number: u64, elapsed_ms: u64, text: &str) -> SseEvent {
    SseEvent::default()
        .id(number.to_string())
        .event("line")
        .data(json!({ "n": number, "t": elapsed_ms, "text": text }).to_string())
}

/// Live log: what is stored after `Last-Event-ID`, then lines as they arrive, then an
/// `end` event once the step has ended.
pub(super) async fn stream_log(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    Path(path): Path<(String, String, i64, i64, i64)>,
    Query(query): Query<LogQuery>,
) -> OpResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let (stage, step) = find_step(&state, &caller, path).await?;
    // `Last-Event-ID` (a reconnecting EventSource) or `?after=` (a page that already has
    // lines): whichever is further.
    let after: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
        .max(query.after.unwrap_or(0));
    // Subscribe before reading what is stored: a line stored in between arrives live too.
    let live = state.live.subscribe(stage.id, &step.name);
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(256);
    let state2 = Arc::clone(&state);
    tokio::spawn(async move {
        let _ = forward_log(state2, stage, step, after, live, tx).await;
    });
    let events = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// How often a live reader looks at the store when no news came.
const STORE_POLL: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) async fn forward_log(
    state: Arc<AppState>,
    stage: Stage,
    step: Step,
    mut sent: u64,
    mut live: tokio::sync::broadcast::Receiver<LiveEvent>,
    tx: tokio::sync::mpsc::Sender<SseEvent>,
) -> Result<(), ()> {
    let send_stored = |from: u64| {
        let (state, tx) = (Arc::clone(&state), tx.clone());
        async move {
            let mut next = from;
            loop {
                let lines = state
                    .store
                    .read_log(step.id, next, PAGE)
                    .await
                    .map_err(|_| ())?;
                let Some(last) = lines.last().map(|l| l.number) else {
                    return Ok::<u64, ()>(next - 1);
                };
                for line in &lines {
                    tx.send(line_event(line.number, line.elapsed_ms, &line.text))
                        .await
                        .map_err(|_| ())?;
                }
                next = last + 1;
            }
        }
    };
    sent = sent.max(send_stored(sent + 1).await?);
    if step_has_ended(&state, stage.id, step.id).await {
        state.live.step_ended(stage.id, &step.name);
        send_stored(sent + 1).await?;
        return tx
            .send(SseEvent::default().event("end").data("end"))
            .await
            .map_err(|_| ());
    }
    loop {
        let received = tokio::select! {
            // A stream must not hold the server open past its shutdown.
            _ = state.shutdown.cancelled() => return Err(()),
            received = live.recv() => received,
            // News from another server can be lost (its `LISTEN` connection dropped): the
            // store is looked at now and then anyway.
            _ = tokio::time::sleep(STORE_POLL) => {
                sent = sent.max(send_stored(sent + 1).await?);
                if step_has_ended(&state, stage.id, step.id).await {
                    Ok(LiveEvent::End)
                } else {
                    continue;
                }
            }
        };
        match received {
            Ok(LiveEvent::Lines(lines)) => {
                // Lines before this batch that this server never saw live (the runner
                // reported them to another server) are in the store.
                if lines.first().is_some_and(|l| l.number > sent + 1) {
                    sent = sent.max(send_stored(sent + 1).await?);
                }
                for line in lines.iter() {
                    if line.number <= sent {
                        continue;
                    }
                    tx.send(line_event(line.number, line.elapsed_ms, &line.text))
                        .await
                        .map_err(|_| ())?;
                    sent = line.number;
                }
            }
            Ok(LiveEvent::End) | Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                // Lines stored after the last live batch (a lagging reader) come from the store.
                send_stored(sent + 1).await?;
                return tx
                    .send(SseEvent::default().event("end").data("end"))
                    .await
                    .map_err(|_| ());
            }
            Ok(LiveEvent::Stored) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                sent = sent.max(send_stored(sent + 1).await?);
            }
        }
    }
}

pub(super) async fn step_has_ended(state: &AppState, stage_id: i64, step_id: i64) -> bool {
    state.store.steps(stage_id).await.map_or(true, |steps| {
        steps
            .iter()
            .find(|s| s.id == step_id)
            .is_none_or(|s| s.status.is_final())
    })
}
