//! The pages that show: the repositories, a repository's builds, a build, a step's log, and
//! the status badge.

use super::*;
use gantry_pipeline::plan::DeployAction;
use gantry_store::MessageState;

// ----- pages ---------------------------------------------------------------------------

pub(super) struct RepoItem {
    full_name: String,
    last: Option<BuildRow>,
}

#[derive(Template)]
#[template(path = "index.html")]
pub(super) struct IndexTemplate {
    page: PageInfo,
    repos: Vec<RepoItem>,
}

pub(super) async fn index(
    State(state): State<Arc<AppState>>,
    session: Session,
) -> Result<Page, Page> {
    let mut repos = Vec::new();
    let readable = ops::repos::list(&state, session.identity.as_ref()).await?;
    for repo in readable {
        let last = state
            .store
            .list_builds(
                repo.id,
                &BuildFilter {
                    limit: 1,
                    ..BuildFilter::default()
                },
            )
            .await?;
        repos.push(RepoItem {
            full_name: repo.full_name(),
            last: last.first().map(build_row),
        });
    }
    Ok(Page::render(IndexTemplate {
        page: page_info(&session),
        repos,
    }))
}

#[derive(Debug, Deserialize)]
pub(super) struct RepoQuery {
    #[serde(default)]
    branch: String,
    #[serde(default)]
    status: String,
    before: Option<i64>,
}

#[derive(Template)]
#[template(path = "repo.html")]
pub(super) struct RepoTemplate {
    page: PageInfo,
    repo: String,
    builds: Vec<BuildRow>,
    branch: String,
    status: String,
    statuses: Vec<String>,
    next: Option<i64>,
    can_admin: bool,
}

pub(super) const PAGE_SIZE: i64 = 25;

/// Lines of a step's log rendered into its page.
pub(super) const TAIL_IN_PAGE: u64 = 200;

pub(super) async fn repo_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Query(query): Query<RepoQuery>,
) -> Result<Page, Page> {
    let query_ops = ops::builds::BuildQuery {
        branch: Some(query.branch.clone()),
        status: ops::builds::parse_status(&query.status)?,
        before: query.before,
        limit: Some(PAGE_SIZE),
    };
    let (repo, role, builds) =
        ops::builds::list(&state, session.identity.as_ref(), &owner, &name, query_ops).await?;
    let next = (builds.len() as i64 == PAGE_SIZE)
        .then(|| builds.last().map(|b| b.number))
        .flatten();
    Ok(Page::render(RepoTemplate {
        page: page_info(&session),
        repo: repo.full_name(),
        builds: builds.iter().map(build_row).collect(),
        branch: query.branch,
        status: query.status,
        statuses: Status::ALL
            .iter()
            .filter(|s| **s != Status::Waiting)
            .map(|s| s.as_str().to_owned())
            .collect(),
        next,
        can_admin: role >= Role::Admin,
    }))
}

#[derive(Template)]
#[template(path = "branches.html")]
pub(super) struct BranchesTemplate {
    page: PageInfo,
    repo: String,
    builds: Vec<BuildRow>,
    can_admin: bool,
}

/// Each branch's latest build, as Drone's branches view had it.
pub(super) async fn branches_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Page, Page> {
    let (repo, role, builds) =
        ops::builds::branches(&state, session.identity.as_ref(), &owner, &name).await?;
    Ok(Page::render(BranchesTemplate {
        page: page_info(&session),
        repo: repo.full_name(),
        builds: builds.iter().map(build_row).collect(),
        can_admin: role >= Role::Admin,
    }))
}

pub(super) struct StepItem {
    number: i64,
    name: String,
    status: &'static str,
    took: String,
    exit_code: Option<i64>,
}

pub(super) struct StageItem {
    number: i64,
    name: String,
    status: &'static str,
    error: Option<String>,
    /// Why a pending stage has no runner.
    waiting: Option<String>,
    steps: Vec<StepItem>,
    /// "Deploys to environment `production`", with its URL.
    deploy: Option<(String, String)>,
    /// Whether the viewer may approve or decline it now.
    can_decide: bool,
    /// "approved by alice", once decided.
    decided: Option<String>,
}

/// A stage's steps as pages show them.
fn step_items(steps: &[gantry_store::Step]) -> Vec<StepItem> {
    steps
        .iter()
        .map(|s| StepItem {
            number: s.number,
            name: s.name.clone(),
            status: s.status.as_str(),
            took: took(s.started_at, s.finished_at),
            exit_code: s.exit_code,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "build.html")]
pub(super) struct BuildTemplate {
    page: PageInfo,
    repo: String,
    build: BuildRow,
    commit_link: String,
    stages: Vec<StageItem>,
    /// Reports (commit statuses, chat) that could not be sent.
    failed_reports: Vec<String>,
    can_write: bool,
    can_admin: bool,
    /// Why the manual build form was just refused; empty when it was not.
    refused: String,
    picture: super::picture::Picture,
    timeline: Option<super::picture::Timeline>,
}

pub(super) async fn build_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> Result<Page, Page> {
    build_view(&state, &session, (&owner, &name, number), None).await
}

/// A build's page; with `refused`, the manual build form's refusal shown beside the form
/// (and its status).
pub(super) async fn build_view(
    state: &AppState,
    session: &Session,
    (owner, name, number): (&str, &str, i64),
    refused: Option<OpError>,
) -> Result<Page, Page> {
    let (repo, role, build) =
        ops::builds::get(state, session.identity.as_ref(), owner, name, number).await?;
    let mut stages = Vec::new();
    let with_steps = state.store.stages_with_steps(build.id).await?;
    // Read once, and only when a stage may need to say why it waits.
    let runners = if with_steps.iter().any(|(s, _)| s.status == Status::Pending) {
        crate::waiting::runners_seen(state).await?
    } else {
        Vec::new()
    };
    let deployments = state.store.build_deployments(build.id).await?;
    let login = session
        .identity
        .as_ref()
        .and_then(|who| who.user.as_ref())
        .map(|user| user.login.as_str());
    for (stage, steps) in &with_steps {
        let waiting = crate::waiting::reason(state, &runners, &repo, stage).await?;
        let deploy = deployments
            .iter()
            .find(|d| d.stage_id == stage.id)
            .map(|d| {
                let verb = match d.action {
                    DeployAction::Start => "Deploys to",
                    DeployAction::Stop => "Stops",
                };
                // Only an http(s) link becomes an `href`.
                let url = d.url.as_deref().and_then(crate::ops::repos::web_link);
                (
                    format!("{verb} environment {}", d.environment),
                    url.unwrap_or_default().to_owned(),
                )
            });
        let decided = stage.decided_by.as_ref().map(|by| {
            let verb = if stage.status == Status::Declined {
                "declined"
            } else {
                "approved"
            };
            format!("{verb} by {by}")
        });
        let can_decide = stage.status == Status::Blocked
            && session.identity.is_some()
            && stage
                .approval
                .as_ref()
                .is_some_and(|approval| approval.allows(login, role));
        stages.push(StageItem {
            number: stage.number,
            name: stage.name.clone(),
            status: stage.status.as_str(),
            error: stage.error.clone(),
            waiting,
            steps: step_items(steps),
            deploy,
            can_decide,
            decided,
        });
    }
    let base = format!("/{}/{}", repo.full_name(), build.number);
    let picture = super::picture::picture(&base, &with_steps);
    let timeline = super::picture::timeline(&base, &with_steps, state.config.clock.now_ms());
    let commit_link = match crate::ops::repos::web_link(&repo.link) {
        // A link stored before links were checked (or written by another tool) is left out.
        Some(link) if !build.commit.is_empty() => {
            format!(
                "{}/commit/{}",
                link.trim().trim_end_matches('/'),
                build.commit
            )
        }
        _ => String::new(),
    };
    let failed_reports = once_per_kind(
        state
            .store
            .build_messages(build.id)
            .await?
            .into_iter()
            .filter(|m| {
                m.state == MessageState::Failed
                    || (m.attempts > 0 && m.state == MessageState::Pending)
            })
            .map(|m| {
                format!(
                    "{} to {}: {} ({})",
                    if m.kind == gantry_store::MessageKind::GithubStatus {
                        "Commit status"
                    } else {
                        "Message"
                    },
                    crate::notify::host_of(&m.url),
                    m.last_error.unwrap_or_default(),
                    if m.state == MessageState::Failed {
                        "given up"
                    } else {
                        "retrying"
                    }
                )
            }),
    );
    let status = refused.as_ref().map(OpError::status);
    let page = Page::render(BuildTemplate {
        page: page_info(session),
        repo: repo.full_name(),
        build: build_row(&build),
        commit_link,
        stages,
        failed_reports,
        can_write: role >= Role::Write,
        can_admin: role >= Role::Admin,
        refused: refused.map(|e| e.public_message()).unwrap_or_default(),
        picture,
        timeline,
    });
    Ok(page.with_status(status))
}

/// Each problem once, in the order first seen, with how many times it happened when more
/// than once (a build's statuses to one host fail alike, one per stage).
fn once_per_kind(problems: impl Iterator<Item = String>) -> Vec<String> {
    let mut counted: Vec<(String, usize)> = Vec::new();
    for problem in problems {
        match counted.iter_mut().find(|(seen, _)| *seen == problem) {
            Some((_, count)) => *count += 1,
            None => counted.push((problem, 1)),
        }
    }
    counted
        .into_iter()
        .map(|(problem, count)| match count {
            1 => problem,
            n => format!("{problem} × {n}"),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "step.html")]
pub(super) struct StepTemplate {
    page: PageInfo,
    repo: String,
    number: i64,
    stage_name: String,
    step_name: String,
    status: &'static str,
    exit_code: Option<i64>,
    api: String,
    total: u64,
    ended: bool,
    /// The log's last lines as JSON (`<` escaped): in the page itself, so its end shows
    /// at once and the page holds the lines a link in chat points at.
    tail: String,
    /// Why the log is empty when retention removed it; empty otherwise.
    removed: String,
    /// The build's stages and steps, beside the log.
    stages: Vec<StageItem>,
    build_finished: bool,
}

pub(super) async fn step_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(path): Path<(String, String, i64, i64, i64)>,
) -> Result<Page, Page> {
    let at = ops::builds::StepAt::from(&path);
    let (_, _, number, stage, step) = &path;
    let (repo, build, stage_row, found) =
        ops::builds::step(&state, session.identity.as_ref(), at).await?;
    let total = state.store.log_last_line(found.id).await?;
    let removed = crate::retention::log_removed(&state, &build).unwrap_or_default();
    let tail_lines = state
        .store
        .read_log(
            found.id,
            total.saturating_sub(TAIL_IN_PAGE - 1).max(1),
            TAIL_IN_PAGE as usize,
        )
        .await?;
    let tail = serde_json::to_string(
        &tail_lines
            .iter()
            .map(|l| serde_json::json!({ "n": l.number, "t": l.elapsed_ms, "text": l.text }))
            .collect::<Vec<_>>(),
    )
    .expect("plain data serialises")
    .replace('<', "\\u003c");
    let stages = state
        .store
        .stages_with_steps(build.id)
        .await?
        .into_iter()
        .map(|(stage, steps)| StageItem {
            number: stage.number,
            steps: step_items(&steps),
            name: stage.name,
            status: stage.status.as_str(),
            error: stage.error,
            waiting: None,
            deploy: None,
            can_decide: false,
            decided: None,
        })
        .collect();
    Ok(Page::render(StepTemplate {
        page: page_info(&session),
        repo: repo.full_name(),
        number: *number,
        stage_name: stage_row.name,
        step_name: found.name,
        status: found.status.as_str(),
        exit_code: found.exit_code,
        api: format!(
            "/api/repos/{}/builds/{number}/logs/{stage}/{step}",
            repo.full_name()
        ),
        total,
        ended: found.status.is_final(),
        tail,
        removed,
        stages,
        build_finished: build.finished_at.is_some(),
    }))
}

// ----- badge ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(super) struct BadgeQuery {
    branch: Option<String>,
}

/// A shields-style SVG badge of the branch's last build (the default branch's by default).
pub(super) async fn badge(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Query(query): Query<BadgeQuery>,
) -> Result<Response, Page> {
    let (repo, _) = ops::repos::get(&state, session.identity.as_ref(), &owner, &name).await?;
    let branch = query.branch.unwrap_or_else(|| repo.default_branch.clone());
    let last = state
        .store
        .list_builds(
            repo.id,
            &BuildFilter {
                branch: Some(branch),
                limit: 1,
                ..BuildFilter::default()
            },
        )
        .await?;
    let latest = last.first().map(|b| b.status);
    let status = latest.map_or("none", Status::as_str);
    let colour = match latest {
        Some(Status::Success) => "#2e9e44",
        Some(Status::Failure) => "#d73a49",
        Some(Status::Error | Status::Killed | Status::Declined) => "#8a3ab9",
        Some(Status::Running | Status::Pending | Status::Blocked) => "#dbab09",
        Some(Status::Waiting | Status::Skipped) | None => "#9f9f9f",
    };
    let right = 8 + 7 * status.len() as u32;
    let width = 44 + right;
    let svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="build: {status}"><title>build: {status}</title><rect width="44" height="20" fill="#555"/><rect x="44" width="{right}" height="20" fill="{colour}"/><g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11"><text x="6" y="14">build</text><text x="50" y="14">{status}</text></g></svg>"##
    );
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        svg,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_problem_is_shown_once_with_its_count() {
        let problems = ["a", "b", "a", "a"].map(str::to_owned).into_iter();
        assert_eq!(super::once_per_kind(problems), ["a × 3", "b"]);
    }
}
