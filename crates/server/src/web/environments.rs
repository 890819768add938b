//! A repository's *Environments* page: each environment with its state, URL, last
//! deployment and when it stops by itself, its history, and *Stop* for writers.

use gantry_pipeline::plan::DeployAction;

use super::*;

pub(super) struct DeploymentRow {
    action: &'static str,
    /// A successful deployment that may be run again (*Redeploy*).
    redeployable: bool,
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
    branch_gone: bool,
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
    rules: Vec<RuleRow>,
    can_write: bool,
    can_admin: bool,
}

pub(super) struct RuleRow {
    pattern: String,
    /// "alice, bob or a user with the admin role", or empty.
    approvers: String,
    /// "`main`, `release/*`", or empty: any branch.
    branches: String,
}

pub(super) async fn environments_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Page, Page> {
    let (repo, role, environments) =
        ops::environments::list(&state, session.identity.as_ref(), &owner, &name).await?;
    let (_, rules) =
        ops::environments::protections(&state, session.identity.as_ref(), &owner, &name).await?;
    let rules = rules
        .into_iter()
        .map(|rule| RuleRow {
            approvers: rule
                .approval(&rule.pattern)
                .map(|a| a.approvers())
                .unwrap_or_default(),
            branches: rule
                .branches
                .iter()
                .map(|b| format!("`{b}`"))
                .collect::<Vec<_>>()
                .join(", "),
            pattern: rule.pattern,
        })
        .collect();
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
                        DeployAction::Start => "deploy",
                        DeployAction::Stop => "stop",
                    },
                    redeployable: d.action == DeployAction::Start
                        && d.status == gantry_store::Status::Success,
                    build: d.build_number,
                    status: d.status.as_str(),
                    short_sha: d.commit.chars().take(8).collect(),
                    author: d.author.clone(),
                    age: age(d.created_at),
                    created_iso: iso(d.created_at),
                })
                .collect(),
            name: e.name,
            url: e.url.filter(|u| crate::ops::repos::web_link(u).is_some()),
            branch: e.branch,
            branch_gone: e.branch_gone,
        })
        .collect();
    Ok(Page::render(EnvironmentsTemplate {
        page: page_info(&session),
        repo: repo.full_name(),
        environments: items,
        rules,
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

#[derive(Debug, Deserialize)]
pub(super) struct RedeployForm {
    #[serde(default)]
    csrf: String,
    environment: String,
    build: i64,
}

/// *Redeploy*: runs an earlier deployment's build again for its environment.
pub(super) async fn redeploy_environment(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<RedeployForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let request = ops::environments::RedeployRequest {
        name: form.environment,
        build: form.build,
    };
    let (_, build) = ops::environments::redeploy(&state, who, &owner, &name, request).await?;
    Ok(Redirect::to(&format!("/{owner}/{name}/{}", build.number)))
}

#[derive(Debug, Deserialize)]
pub(super) struct ProtectForm {
    #[serde(default)]
    csrf: String,
    pattern: String,
    /// Logins, separated by commas or spaces.
    #[serde(default)]
    approvers: String,
    #[serde(default)]
    approver_role: String,
    /// Branch globs, separated by commas or spaces.
    #[serde(default)]
    branches: String,
}

fn list(text: &str) -> Vec<String> {
    text.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Adds or replaces a protected environment rule (admins).
pub(super) async fn protect_environment(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<ProtectForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    let request = ops::environments::ProtectRequest {
        pattern: form.pattern,
        approvers: list(&form.approvers),
        approver_role: Some(form.approver_role).filter(|r| !r.is_empty()),
        branches: list(&form.branches),
    };
    ops::environments::protect(&state, who, &owner, &name, request).await?;
    Ok(Redirect::to(&format!("/{owner}/{name}/environments")))
}

#[derive(Debug, Deserialize)]
pub(super) struct UnprotectForm {
    #[serde(default)]
    csrf: String,
    pattern: String,
}

/// Removes a protected environment rule (admins).
pub(super) async fn unprotect_environment(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<UnprotectForm>,
) -> Result<Redirect, Page> {
    let who = session.actor(&form.csrf)?;
    ops::environments::unprotect(&state, who, &owner, &name, &form.pattern).await?;
    Ok(Redirect::to(&format!("/{owner}/{name}/environments")))
}
