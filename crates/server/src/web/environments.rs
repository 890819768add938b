//! A repository's *Environments* page: each environment with its state, URL, last
//! deployment and when it stops by itself, its history, and *Stop* for writers.

use super::*;

pub(super) struct DeploymentRow {
    action: &'static str,
    build: i64,
    status: &'static str,
    short_sha: String,
    author: String,
    age: String,
    created_iso: String,
}

pub(super) struct EnvironmentItem {
    name: String,
    state: &'static str,
    url: Option<String>,
    branch: String,
    /// "in 3 days" while it will stop by itself.
    stops: Option<String>,
    can_stop: bool,
    deployments: Vec<DeploymentRow>,
}

#[derive(Template)]
#[template(path = "environments.html")]
pub(super) struct EnvironmentsTemplate {
    page: PageInfo,
    repo: String,
    environments: Vec<EnvironmentItem>,
    can_write: bool,
    can_admin: bool,
}

pub(super) async fn environments_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Page, Page> {
    let (repo, role, environments) =
        ops::environments::list(&state, session.identity.as_ref(), &owner, &name).await?;
    let now = state.config.clock.now_ms();
    let items = environments
        .into_iter()
        .map(|e| EnvironmentItem {
            state: e.state.as_str(),
            can_stop: e.state.can_stop(),
            stops: e.auto_stop_at.map(|at| until(at - now)),
            deployments: e
                .deployments
                .iter()
                .map(|d| DeploymentRow {
                    action: match d.action {
                        gantry_pipeline::plan::DeployAction::Start => "deploy",
                        gantry_pipeline::plan::DeployAction::Stop => "stop",
                    },
                    build: d.build_number,
                    status: d.status.as_str(),
                    short_sha: d.commit.chars().take(8).collect(),
                    author: d.author.clone(),
                    age: age(d.created_at),
                    created_iso: iso(d.created_at),
                })
                .collect(),
            name: e.name,
            url: e.url,
            branch: e.branch,
        })
        .collect();
    Ok(Page::render(EnvironmentsTemplate {
        page: page_info(&session),
        repo: repo.full_name(),
        environments: items,
        can_write: role >= Role::Write,
        can_admin: role >= Role::Admin,
    }))
}

/// "in 3 days", "in 5 hours", "any moment now": to the nearest unit, as a deadline 3 days
/// away reads "in 3 days" a second after it was set.
fn until(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let nearest = |unit: i64| (secs + unit / 2) / unit;
    let (n, unit) = match secs {
        0..=59 => return "any moment now".to_owned(),
        60..=3599 => (nearest(60), "minute"),
        3600..=86_399 => (nearest(3600), "hour"),
        _ => (nearest(86_400), "day"),
    };
    format!("in {n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[derive(Debug, Deserialize)]
pub(super) struct StopForm {
    #[serde(default)]
    csrf: String,
    environment: String,
}

/// *Stop*: runs the environment's `on_stop` pipeline, and shows its build.
pub(super) async fn stop_environment(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<StopForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let request = ops::environments::StopRequest {
        name: form.environment,
    };
    let (_, build) = ops::environments::stop(&state, who, &owner, &name, request).await?;
    Ok(Redirect::to(&match build {
        Some(build) => format!("/{owner}/{name}/{}", build.number),
        None => format!("/{owner}/{name}/environments"),
    }))
}
