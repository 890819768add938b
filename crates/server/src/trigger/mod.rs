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

mod deliveries;
pub(crate) mod environments;

pub(crate) use deliveries::Deliveries;

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
    ctx.fork = origin.fork;
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
    ctx.fork = origin.fork;
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
    let approvals = match &mut plan {
        Ok(plan) => environments::protect(state, repo, &ctx, plan).await?,
        Err(_) => Default::default(),
    };
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
            hold: origin.fork && repo.fork_policy == gantry_store::ForkPolicy::Approve,
            approvals,
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

/// A new build of `build`'s commit and context, as `shape` changes it, asked for by `sender`
/// (a fork's build stays one).
async fn build_again(
    state: &Arc<AppState>,
    repo: &Repo,
    build: &Build,
    sender: &str,
    shape: impl FnOnce(&mut Context),
) -> Result<Build, StoreError> {
    let mut ctx = state.store.build_context(build.id).await?;
    ctx.parent = Some(build.number as u64);
    shape(&mut ctx);
    let origin = Origin {
        fork: build.fork,
        ..Origin::asked_by(sender)
    };
    create_build(state, repo, ctx, origin).await
}

/// A new build of the same commit and context as `build`.
pub async fn restart(
    state: &Arc<AppState>,
    repo: &Repo,
    build: &Build,
    sender: &str,
) -> Result<Build, StoreError> {
    build_again(state, repo, build, sender, |_| {}).await
}

/// The build that stops an environment `deployed` deployed: its commit and context, running
/// only the environment's `on_stop` pipeline. `Conflict` when another build stops it.
pub async fn stop_environment(
    state: &Arc<AppState>,
    repo: &Repo,
    deployed: &Build,
    stopping: gantry_pipeline::context::StoppingEnvironment,
    sender: &str,
) -> Result<Build, StoreError> {
    build_again(state, repo, deployed, sender, |ctx| {
        environments::stop_context(ctx, stopping)
    })
    .await
}

/// Deploys what `build` deployed to `environment` there again (a rollback): a new build of
/// its commit and context in which only the stages deploying there run. The environment's
/// protection applies to it as to any deployment.
pub async fn redeploy(
    state: &Arc<AppState>,
    repo: &Repo,
    build: &Build,
    environment: &str,
    sender: &str,
) -> Result<Build, StoreError> {
    build_again(state, repo, build, sender, |ctx| {
        ctx.redeploy = Some(environment.to_owned());
        ctx.stopping = None;
    })
    .await
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
    build_again(state, repo, build, sender, |ctx| {
        ctx.event = Event::Promote;
        ctx.action = None;
        ctx.deploy_target = Some(target.to_owned());
        // A promote deploys: it neither redeploys nor stops what the build did.
        ctx.redeploy = None;
        ctx.stopping = None;
        ctx.params.extend(params);
    })
    .await
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
