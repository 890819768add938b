//! From an event to a stored build: fetch the commit into the repository's git cache, read
//! the pipeline file at that commit, compile it with the build's context, and store the
//! build with its stages queued. The same path serves webhook deliveries (processed in the
//! background by [`work`]), manual builds and restarts.
//!
//! A pipeline file that cannot be read or compiled still makes a build: status `error`,
//! with the `FILE:LINE:COLUMN` problems as its message, so the author sees why.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gantry_pipeline::{CompileError, Context, Event, Limits, RepoInfo, Source};
use gantry_store::{Build, Delivery, NewBuild, Repo, ScheduleRun, StoreError, Visibility};

use tracing::Instrument;

use crate::AppState;
use crate::error::OpError;
use crate::git::{ChangeSpan, GitError};
use crate::github::Trigger;
use crate::worker::Next;

/// Who or what asks for a build, beyond its context.
#[derive(Debug, Clone)]
pub struct Origin {
    pub sender: String,
    pub delivery: Option<i64>,
    /// A pull request from a fork.
    pub fork: bool,
    /// What the build's changed files are measured over (webhooks of pushes and pull
    /// requests); `None` keeps the context's list as it is.
    pub changes: Option<ChangeSpan>,
    /// The schedule this build is a run of.
    pub schedule: Option<ScheduleRun>,
}

impl Origin {
    /// A build a person (or a schedule) asked for: no delivery, not a fork.
    fn asked_by(sender: &str) -> Self {
        Origin {
            sender: sender.to_owned(),
            delivery: None,
            fork: false,
            changes: None,
            schedule: None,
        }
    }
}

/// What a build of a branch's head (rather than of a webhook) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadBuild {
    /// Event `custom`: someone asked for it.
    Manual,
    /// Event `promote` to this target.
    Deploy(String),
    /// Event `cron`, by the schedule of this name.
    Cron { name: String, run: ScheduleRun },
}

/// The context a webhook's trigger gives a build of `repo` (number and link come later).
pub fn context_of(repo: &Repo, trigger: &Trigger) -> Context {
    let mut ctx = Context::push(&repo.full_name(), &trigger.branch);
    ctx.event = trigger.event;
    ctx.action = trigger.action.clone();
    ctx.reference = trigger.reference.clone();
    ctx.tag = trigger.tag.clone();
    ctx.commit = trigger.commit.clone();
    ctx.before = trigger.before.clone();
    ctx.message = trigger.message.clone();
    ctx.author = trigger.author.clone();
    ctx.author_email = trigger.author_email.clone();
    ctx.pull_request = trigger.pull_request;
    ctx.pull_request_title = trigger.pull_request_title.clone();
    ctx.pull_request_labels = trigger.pull_request_labels.clone();
    ctx.target_branch = trigger.target_branch.clone();
    ctx.changed_files = trigger.changed_files.clone();
    ctx
}

fn repo_info(repo: &Repo) -> RepoInfo {
    RepoInfo {
        owner: repo.owner.clone(),
        name: repo.name.clone(),
        default_branch: repo.default_branch.clone(),
        clone_url: repo.clone_url.clone(),
        link: repo.link.clone(),
        private: repo.visibility != Visibility::Public,
    }
}

/// Fetches, reads, compiles and stores one build. A git or pipeline problem becomes an
/// errored build; only a database failure is an `Err` (the caller retries).
pub async fn create_build(
    state: &Arc<AppState>,
    repo: &Repo,
    mut ctx: Context,
    origin: Origin,
) -> Result<Build, StoreError> {
    let started = std::time::Instant::now();
    ctx.repo = repo_info(repo);
    ctx.trusted = repo.trusts(origin.fork);
    ctx.cache_policy = state.config.retention.cache_policy();
    let fetched = fetch_config(state, repo, &mut ctx, origin.changes.as_ref()).await;
    let fetched_in = started.elapsed();
    let number = number_build(state, repo, &mut ctx).await?;
    let numbered_in = started.elapsed();
    let plan = match fetched {
        Ok(files) => match crate::signing::check(state, repo, &files) {
            Ok(()) => compile_bounded(state, repo, files, &ctx, origin.fork).await,
            Err(refused) => Err(refused),
        },
        Err(e) => Err(e),
    };
    let compiled_in = started.elapsed();
    let build = store_build(state, repo, ctx, origin, number, plan).await?;
    tracing::debug!(
        build = number,
        fetched_ms = fetched_in.as_secs_f64() * 1e3,
        numbered_ms = numbered_in.as_secs_f64() * 1e3,
        compiled_ms = compiled_in.as_secs_f64() * 1e3,
        stored_ms = started.elapsed().as_secs_f64() * 1e3,
        "build stored"
    );
    Ok(build)
}

/// An errored build that says why gantry could not make the real one (a delivery given up).
async fn errored_build(
    state: &Arc<AppState>,
    repo: &Repo,
    mut ctx: Context,
    origin: Origin,
    reason: String,
) -> Result<Build, StoreError> {
    ctx.repo = repo_info(repo);
    ctx.trusted = repo.trusts(origin.fork);
    let number = number_build(state, repo, &mut ctx).await?;
    store_build(state, repo, ctx, origin, number, Err(reason)).await
}

/// Takes the build's number and fills what the context derives from it.
async fn number_build(
    state: &Arc<AppState>,
    repo: &Repo,
    ctx: &mut Context,
) -> Result<i64, StoreError> {
    let number = state.store.take_build_number(repo.id).await?;
    ctx.build_number = number as u64;
    ctx.link = format!(
        "{}/{}/{}/{number}",
        state.config.server_url, repo.owner, repo.name
    );
    ctx.instance = instance_of(&state.config.server_url);
    ctx.created = state.config.clock.now_ms() / 1000;
    Ok(number)
}

/// Compiles on a blocking thread, never on the async workers that answer requests, and
/// gives up after [`crate::ServerConfig::compile_limit`] (the thread finishes on its own: the
/// expression budget and the reader's limits bound it).
async fn compile_bounded(
    state: &Arc<AppState>,
    repo: &Repo,
    files: Vec<(String, String)>,
    ctx: &Context,
    fork: bool,
) -> Result<gantry_pipeline::Plan, String> {
    let limit = state.config.compile_limit;
    let (ctx, timeout_secs) = (ctx.clone(), repo.timeout_secs);
    let because = untrusted_because(repo, fork);
    let compiling =
        tokio::task::spawn_blocking(move || compile(&files, &ctx, timeout_secs, &because));
    match tokio::time::timeout(limit, compiling).await {
        Ok(Ok(plan)) => plan,
        Ok(Err(e)) => Err(format!("compiling the pipeline failed: {e}")),
        Err(_) => {
            tracing::warn!(repo = %repo.full_name(), "compiling a pipeline took longer than its limit");
            Err(format!(
                "compiling the pipeline took longer than gantry's limit of {} s: make the file smaller (fewer matrix combinations, simpler `evaluate:` expressions)",
                limit.as_secs()
            ))
        }
    }
}

/// A lock's name as it is held: the repository's owner's (`acme:production-db`), so a pull
/// request of another owner's repository cannot hold or wait on it, or server-wide
/// (`*:NAME`) when a server admin declared it global (`--global-locks`). Owner names never
/// hold `:` or `*`, so no lock of one owner can be spelled as another's.
pub fn scoped_lock(global_locks: &[String], owner: &str, lock: &str) -> String {
    if global_locks.iter().any(|global| global == lock) {
        format!("*:{lock}")
    } else {
        format!("{owner}:{lock}")
    }
}

/// A held lock's name as its pipeline wrote it.
pub fn shown_lock(held: &str) -> &str {
    held.split_once(':').map_or(held, |(_, lock)| lock)
}

/// Stores a build with its plan (or the reason it has none), and the statuses it starts.
async fn store_build(
    state: &Arc<AppState>,
    repo: &Repo,
    ctx: Context,
    origin: Origin,
    number: i64,
    mut plan: Result<gantry_pipeline::Plan, String>,
) -> Result<Build, StoreError> {
    if let Ok(plan) = &mut plan {
        for stage in &mut plan.stages {
            for lock in &mut stage.locks {
                *lock = scoped_lock(&state.config.global_locks, &repo.owner, lock);
            }
        }
    }
    if let Err(message) = &plan {
        tracing::info!(repo = %repo.full_name(), build = number, %message, "build errored before it ran");
    }
    let (build, _queued) = state
        .store
        .create_build(&NewBuild {
            repo_id: repo.id,
            number,
            context: ctx,
            sender: origin.sender,
            plan,
            delivery: origin.delivery,
            fork: origin.fork,
            // A pull request from a fork waits for a user with write access, if the
            // repository says so.
            hold: origin.fork && repo.fork_policy == "approve",
            schedule: origin.schedule,
        })
        .await?;
    tracing::info!(build.id = build.id, build.number = build.number, repo = %repo.full_name(), status = %build.status, "build created");
    Ok(build)
}

/// What a webhook's build measures its changed files over: pushes to a branch and pull
/// requests (the events `path` conditions apply to).
pub fn change_span(trigger: &Trigger) -> Option<ChangeSpan> {
    match trigger.event {
        Event::Push => Some(ChangeSpan::Push {
            before: trigger.before.clone(),
            after: trigger.commit.clone(),
        }),
        Event::PullRequest => Some(ChangeSpan::PullRequest {
            base: trigger.base_commit.clone(),
            base_branch: trigger.target_branch.clone().unwrap_or_default(),
            head: trigger.commit.clone(),
        }),
        _ => None,
    }
}

/// The pipeline files at the build's commit. For a deleted branch or tag, the commit is
/// the default branch's head (the deleted ref is gone). With `changes`, also the changed
/// files, into the context.
async fn fetch_config(
    state: &Arc<AppState>,
    repo: &Repo,
    ctx: &mut Context,
    changes: Option<&ChangeSpan>,
) -> Result<Vec<(String, String)>, String> {
    let state2 = Arc::clone(state);
    let (repo_id, url, config_path) = (repo.id, repo.clone_url.clone(), repo.config_path.clone());
    let default_branch = repo.default_branch.clone();
    let (reference, commit) = (ctx.reference.clone(), ctx.commit.clone());
    let credential = crate::credentials::for_repo(state, repo);
    let used = credential.source.describe(repo);
    let changes = changes.cloned();
    let result = tokio::task::spawn_blocking(move || {
        let git = &state2.git;
        let auth = credential.credential.as_ref();
        let commit = if commit.is_empty() {
            let head = git.resolve_branch(repo_id, &url, auth, &default_branch)?;
            (format!("refs/heads/{default_branch}"), head.sha)
        } else {
            git.fetch(repo_id, &url, auth, &reference, &commit)?;
            (reference, commit)
        };
        let files = git.read_config(repo_id, &commit.1, &config_path)?;
        let changed = changes.map(|span| git.changed_files(repo_id, &url, auth, &span));
        Ok::<_, GitError>((commit, files, changed))
    })
    .await;
    match result {
        Ok(Ok(((reference, commit), files, changed))) => {
            ctx.reference = reference;
            ctx.commit = commit;
            match changed {
                Some(Ok(changed)) if changed.len() > gantry_pipeline::MAX_CHANGED_FILES => {
                    ctx.changed_files = Vec::new();
                    ctx.changed_files_overflow = true;
                }
                Some(Ok(changed)) => ctx.changed_files = changed,
                // GitHub's own list from a push's payload, when the commit before the push
                // is gone; with none, `path` conditions error the build with the reason.
                Some(Err(e)) if ctx.changed_files.is_empty() => {
                    ctx.changed_files_error = Some(explain(&e, &used, repo));
                }
                Some(Err(e)) => {
                    tracing::warn!(repo = %repo.full_name(), error = %e, "computing the changed files failed; the push payload's list is used");
                }
                None => {}
            }
            Ok(files)
        }
        Ok(Err(e)) => Err(explain(&e, &used, repo)),
        Err(e) => Err(format!("reading the pipeline file failed: {e}")),
    }
}

/// A git error as a build's or a form's message: a failed fetch says which credential was
/// used and how to fix it.
fn explain(error: &GitError, used: &str, repo: &Repo) -> String {
    match error {
        GitError::Fetch { message, .. } => format!(
            "{error}\n{}",
            crate::git::fetch_hint(
                message,
                used,
                &repo.full_name(),
                gantry_proto::ssh::is_ssh_url(&repo.clone_url)
            )
        ),
        GitError::NoConfig(_) | GitError::Cache { .. } => error.to_string(),
    }
}

/// Why a build is not trusted, and what would change it.
fn untrusted_because(repo: &Repo, fork: bool) -> String {
    if fork {
        format!(
            "this pull request comes from a fork, and a fork's code is never trusted, whatever {}'s own setting: only its own branches may use these options",
            repo.full_name()
        )
    } else {
        format!(
            "the repository is not trusted: a server admin can trust it with `gantry repo update {} --trusted true` or on its settings page",
            repo.full_name()
        )
    }
}

/// Parses and compiles the files; `Err` holds every problem, one per line.
fn compile(
    files: &[(String, String)],
    ctx: &Context,
    timeout_secs: i64,
    untrusted_because: &str,
) -> Result<gantry_pipeline::Plan, String> {
    let sources: Vec<Source<'_>> = files
        .iter()
        .map(|(name, text)| Source { name, text })
        .collect();
    let parsed = gantry_pipeline::parse_files(&sources, &Limits::default());
    let errors = |d: &gantry_pipeline::Diagnostics| {
        d.errors()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let config = match parsed.config {
        Some(config) if !parsed.diagnostics.has_errors() => config,
        _ => return Err(errors(&parsed.diagnostics)),
    };
    let mut plan = gantry_pipeline::compile(&config, ctx).map_err(|e| match &e {
        CompileError::Invalid(d) => errors(d),
        CompileError::Untrusted(d) => format!("{}\n({untrusted_because})", errors(d)),
    })?;
    // A type no gantry runner can run is refused now, not left waiting for ever.
    let unsupported: Vec<String> = plan
        .stages
        .iter()
        .filter(|stage| stage.run)
        .filter_map(|stage| {
            stage
                .backend
                .unsupported_reason(&stage.name)
                .map(|reason| format!("{}: {reason}", stage.file))
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(unsupported.join("\n"));
    }
    if timeout_secs > 0 {
        for stage in &mut plan.stages {
            stage.timeout_secs.get_or_insert(timeout_secs as u64);
        }
    }
    Ok(plan)
}

fn instance_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', ':']).next().unwrap_or("").to_owned()
}

/// A build of a branch (its head, or `commit` on it) with parameters: a manual build, a
/// deployment of a branch, or a schedule's run.
pub async fn head_build(
    state: &Arc<AppState>,
    repo: &Repo,
    branch: &str,
    commit: Option<&str>,
    params: BTreeMap<String, String>,
    kind: HeadBuild,
    sender: &str,
) -> Result<Build, OpError> {
    let state2 = Arc::clone(state);
    let (repo_id, url) = (repo.id, repo.clone_url.clone());
    let (branch_owned, commit_owned) = (branch.to_owned(), commit.map(str::to_owned));
    let credential = crate::credentials::for_repo(state, repo);
    let used = credential.source.describe(repo);
    let described = tokio::task::spawn_blocking(move || {
        let auth = credential.credential.as_ref();
        match commit_owned {
            Some(sha) => {
                let reference = format!("refs/heads/{branch_owned}");
                state2.git.fetch(repo_id, &url, auth, &reference, &sha)?;
                state2.git.describe(repo_id, &sha)
            }
            None => state2
                .git
                .resolve_branch(repo_id, &url, auth, &branch_owned),
        }
    })
    .await;
    let head = match described {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => return Err(git_refusal(&e, explain(&e, &used, repo))),
        Err(e) => {
            return Err(OpError::Internal(format!(
                "resolving the commit failed: {e}"
            )));
        }
    };
    let mut ctx = Context::push(&repo.full_name(), branch);
    ctx.commit = head.sha;
    ctx.message = head.message;
    ctx.author = head.author;
    ctx.author_email = head.author_email;
    ctx.params = params;
    let mut origin = Origin::asked_by(sender);
    match kind {
        HeadBuild::Manual => ctx.event = Event::Custom,
        HeadBuild::Deploy(target) => {
            ctx.event = Event::Promote;
            ctx.deploy_target = Some(target);
        }
        HeadBuild::Cron { name, run } => {
            ctx.event = Event::Cron;
            ctx.cron = Some(name);
            origin.schedule = Some(run);
        }
    }
    Ok(create_build(state, repo, ctx, origin).await?)
}

/// A git failure of a manual build, by whose it is: a branch or commit the repository does
/// not have is the request's; a refused credential or an unreachable server is upstream; a
/// broken cache is the server's own.
fn git_refusal(error: &GitError, message: String) -> OpError {
    match error {
        GitError::Fetch {
            what, message: git, ..
        } => {
            let lower = git.to_ascii_lowercase();
            let missing = lower.contains("couldn't find remote ref")
                || lower.contains("not found")
                || lower.contains("no longer points at")
                || lower.contains("not on the server")
                || lower.contains("is not a commit");
            match what.split_whitespace().next() {
                Some(field @ ("branch" | "commit"))
                    if missing && !lower.contains("status code") =>
                {
                    OpError::invalid_field(field, message)
                }
                _ => OpError::Upstream(message),
            }
        }
        GitError::NoConfig(_) => OpError::invalid(message),
        GitError::Cache { .. } => OpError::Internal(message),
    }
}

/// A new build of the same commit and context as `build`.
pub async fn restart(
    state: &Arc<AppState>,
    repo: &Repo,
    build: &Build,
    sender: &str,
) -> Result<Build, StoreError> {
    let mut ctx = state.store.build_context(build.id).await?;
    ctx.parent = Some(build.number as u64);
    let origin = Origin {
        fork: build.fork,
        ..Origin::asked_by(sender)
    };
    create_build(state, repo, ctx, origin).await
}

/// Deploys what `build` built to `target`, as Drone's promote does: a new build of the same
/// commit and context with event `promote`, `DRONE_DEPLOY_TO` set and `params` added (they
/// win over the build's own of the same name). The `target` condition picks its pipelines.
pub async fn promote(
    state: &Arc<AppState>,
    repo: &Repo,
    build: &Build,
    target: &str,
    params: BTreeMap<String, String>,
    sender: &str,
) -> Result<Build, StoreError> {
    let mut ctx = state.store.build_context(build.id).await?;
    ctx.parent = Some(build.number as u64);
    ctx.event = Event::Promote;
    ctx.action = None;
    ctx.deploy_target = Some(target.to_owned());
    ctx.params.extend(params);
    let origin = Origin {
        fork: build.fork,
        ..Origin::asked_by(sender)
    };
    create_build(state, repo, ctx, origin).await
}

/// How long a claim on a delivery lasts without renewal; renewed while it is processed
/// (a fetch of a big repository can take longer), so only a dead server's claim runs out.
const DELIVERY_LEASE: Duration = Duration::from_secs(20);

/// Deliveries one server processes at once: a slow repository (a big fetch, a heavy file)
/// holds one of them, never the others' builds.
const DELIVERY_WORKERS: usize = 4;

/// Tries before a delivery is given up (each failure, time-out or server death counts).
pub const MAX_DELIVERY_ATTEMPTS: i64 = 5;

/// The longest one try at a delivery may take (fetch, compile and store).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(600);

/// How often stored deliveries are looked at without news (one let go to be tried later
/// is due, another server's claim ran out).
const DELIVERY_POLL: Duration = Duration::from_secs(2);

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
async fn take_up(state: &Arc<AppState>, delivery: Delivery) {
    if delivery.attempts > MAX_DELIVERY_ATTEMPTS {
        let reason = format!(
            "gantry gave up on this webhook delivery ({}) after {MAX_DELIVERY_ATTEMPTS} tries that never finished: the server processing it stopped each time (see the server log)",
            delivery.delivery_id
        );
        return give_up(state, &delivery, reason).await;
    }
    let tried = holding(
        state,
        &delivery,
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
async fn give_up(state: &Arc<AppState>, delivery: &Delivery, reason: String) {
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

fn delivery_trigger(delivery: &Delivery) -> Result<Trigger, String> {
    match delivery.payload.as_deref() {
        Some(payload) => {
            serde_json::from_slice(payload).map_err(|e| format!("unreadable stored payload: {e}"))
        }
        None => Err("no payload was stored".to_owned()),
    }
}

fn origin_of(delivery: &Delivery, trigger: &Trigger) -> Origin {
    Origin {
        sender: trigger.sender.clone(),
        delivery: Some(delivery.id),
        fork: trigger.fork,
        changes: change_span(trigger),
        schedule: None,
    }
}

/// Runs `work` while renewing the claim on `delivery`.
async fn holding<T>(state: &AppState, delivery: &Delivery, work: impl Future<Output = T>) -> T {
    let renew = async {
        loop {
            tokio::time::sleep(DELIVERY_LEASE / 4).await;
            let until = state.config.clock.now_ms() + DELIVERY_LEASE.as_millis() as i64;
            match state
                .store
                .renew_delivery(delivery.id, delivery.claim_epoch, until)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(delivery = %delivery.delivery_id, "another server took this delivery over; the first build stored wins");
                }
                Err(e) => tracing::warn!(error = %e, "renewing a delivery's claim failed"),
            }
        }
    };
    tokio::select! {
        out = work => out,
        never = renew => never,
    }
}

async fn process(state: &Arc<AppState>, delivery: &Delivery) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_belong_to_their_owner_unless_declared_global() {
        let global = ["deploy".to_owned()];
        assert_eq!(
            scoped_lock(&global, "acme", "production-db"),
            "acme:production-db"
        );
        assert_eq!(
            scoped_lock(&global, "evil", "production-db"),
            "evil:production-db"
        );
        assert_eq!(scoped_lock(&global, "acme", "deploy"), "*:deploy");
        // A lock named like another owner's stays this owner's.
        assert_eq!(
            scoped_lock(&global, "evil", "acme:production-db"),
            "evil:acme:production-db"
        );
        assert_eq!(shown_lock("evil:acme:production-db"), "acme:production-db");
        assert_eq!(shown_lock("*:deploy"), "deploy");
    }

    #[test]
    fn the_instance_is_the_server_host() {
        assert_eq!(instance_of("https://ci.example.com/"), "ci.example.com");
        assert_eq!(instance_of("http://127.0.0.1:8000"), "127.0.0.1");
        assert_eq!(instance_of("ci.local"), "ci.local");
    }

    #[test]
    fn compile_errors_keep_file_line_and_column() {
        let files = vec![(
            ".gantry.yml".to_owned(),
            "kind: pipeline\nname: a\nsteps:\n  - name: x\n    imag: busybox\n".to_owned(),
        )];
        let err =
            compile(&files, &Context::push("a/b", "main"), 60, "untrusted").expect_err("invalid");
        assert!(
            err.starts_with(".gantry.yml:4:5: error: step `x` has no image"),
            "{err}"
        );
    }

    #[test]
    fn stages_get_the_repository_timeout_unless_they_set_one() {
        let files = vec![(
            ".gantry.yml".to_owned(),
            "kind: pipeline\nname: a\nclone: {disable: true}\nsteps:\n  - name: x\n    image: busybox\n    commands: [true]\n".to_owned(),
        )];
        let plan = compile(&files, &Context::push("a/b", "main"), 600, "untrusted").expect("valid");
        assert_eq!(plan.stages[0].timeout_secs, Some(600));
    }
}
