//! A repository's settings page: its settings, credentials, secrets and roles.

use super::*;
use crate::error::OpResult;

// ----- settings ------------------------------------------------------------------------

pub(super) struct SecretRow {
    name: String,
    allow_pull_requests: bool,
    /// Kept for the environments this glob matches; empty: every stage.
    environment: String,
    updated: String,
}

pub(super) struct RegistryRow {
    host: String,
    username: String,
    allow_pull_requests: bool,
    updated: String,
}

pub(super) struct ScheduleRow {
    name: String,
    expression: String,
    timezone: String,
    branch: String,
    next_run: String,
    /// Number and status of the last run's build.
    last_build: Option<(i64, String)>,
    /// Why its last tick made no build; empty when it did.
    last_error: String,
}

pub(super) struct RoleRow {
    login: String,
    role: &'static str,
    /// "set by an admin", or "GitHub, read 3 minutes ago".
    source: String,
}

#[derive(Template)]
#[template(path = "settings.html")]
pub(super) struct SettingsTemplate {
    page: PageInfo,
    repo: String,
    webhook_url: String,
    has_webhook_secret: bool,
    visibility: &'static str,
    fork_policy: String,
    config_path: String,
    default_branch: String,
    timeout_minutes: i64,
    trusted: bool,
    server_admin: bool,
    clone_url: String,
    clone_over_ssh: bool,
    has_github_token: bool,
    /// Where commit statuses' token comes from; empty when there is none (statuses are off).
    statuses_from: &'static str,
    has_ssh_key: bool,
    secrets: Vec<SecretRow>,
    registries: Vec<RegistryRow>,
    schedules: Vec<ScheduleRow>,
    roles: Vec<RoleRow>,
    /// The section (`repository`, `credentials`, `secrets`, `registries`, `roles`) whose form was just
    /// refused, and why; empty when none was.
    refused_section: &'static str,
    refused: String,
}

pub(super) async fn settings_page(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Page, Page> {
    settings_view(&state, &session, &owner, &name, None).await
}

/// A form's refusal, shown above that form.
struct Refusal {
    section: &'static str,
    error: OpError,
}

async fn settings_view(
    state: &AppState,
    session: &Session,
    owner: &str,
    name: &str,
    refusal: Option<Refusal>,
) -> Result<Page, Page> {
    let (repo, secrets, roles) =
        ops::repos::settings(state, session.identity.as_ref(), owner, name).await?;
    let secrets = secrets
        .into_iter()
        .map(|s| SecretRow {
            name: s.name,
            allow_pull_requests: s.allow_pull_requests,
            environment: s.environment.unwrap_or_default(),
            updated: age(s.updated_at),
        })
        .collect();
    let registries = match session.identity.as_ref() {
        Some(who) => ops::registries::list(state, who, ops::registries::Of::Repo { owner, name })
            .await?
            .into_iter()
            .map(|r| RegistryRow {
                host: r.host,
                username: r.username,
                allow_pull_requests: r.allow_pull_requests,
                updated: age(r.updated_at),
            })
            .collect(),
        None => Vec::new(),
    };
    let (_, schedules) =
        ops::schedules::list(state, session.identity.as_ref(), owner, name).await?;
    let schedules = schedules
        .into_iter()
        .map(|listed| ScheduleRow {
            last_build: listed
                .last_build
                .map(|b| (b.number, b.status.as_str().to_owned())),
            name: listed.schedule.name,
            expression: listed.schedule.expression,
            timezone: listed.schedule.timezone,
            branch: listed.schedule.branch,
            next_run: crate::human::at_ms(listed.schedule.next_run_at),
            last_error: listed.schedule.last_error.unwrap_or_default(),
        })
        .collect();
    let roles = roles
        .into_iter()
        .map(|r| RoleRow {
            login: r.login,
            role: r.role.as_str(),
            source: match r.source {
                gantry_store::RoleSource::Admin => "set by an admin".to_owned(),
                gantry_store::RoleSource::GitHub => format!("GitHub, read {}", age(r.fetched_at)),
            },
        })
        .collect();
    let status = refusal.as_ref().map(|r| r.error.status());
    let page = Page::render(SettingsTemplate {
        page: page_info(session),
        repo: repo.full_name(),
        webhook_url: format!("{}/hook/github", state.config.server_url),
        has_webhook_secret: !repo.webhook_secret.is_empty(),
        visibility: repo.visibility.as_str(),
        fork_policy: repo.fork_policy.as_str().to_owned(),
        config_path: repo.config_path.clone(),
        default_branch: repo.default_branch.clone(),
        timeout_minutes: repo.timeout_secs / 60,
        trusted: repo.trusted,
        server_admin: session.identity.as_ref().is_some_and(Identity::is_admin),
        clone_over_ssh: gantry_proto::ssh::is_ssh_url(&repo.clone_url),
        clone_url: repo.clone_url.clone(),
        has_github_token: !repo.github_token.is_empty(),
        statuses_from: match crate::credentials::github_token(state, &repo).1 {
            crate::credentials::CredentialSource::Repository => "the repository's GitHub token",
            crate::credentials::CredentialSource::None => "",
            _ => "the server's GitHub token",
        },
        has_ssh_key: !repo.ssh_key.is_empty(),
        secrets,
        registries,
        schedules,
        roles,
        refused_section: refusal.as_ref().map_or("", |r| r.section),
        refused: refusal
            .map(|r| r.error.public_message())
            .unwrap_or_default(),
    });
    Ok(page.with_status(status))
}

/// A settings form's answer: back to its section of the page; or, refused, the page again
/// with the reason above that form (and the refusal's status). The server's own failures
/// are the error page.
async fn settled(
    state: &AppState,
    session: &Session,
    (owner, name): (&str, &str),
    section: &'static str,
    result: OpResult<()>,
) -> Result<Response, Page> {
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/{owner}/{name}/settings#{section}")).into_response()),
        Err(error) if shown_beside_the_form(&error) => {
            let refusal = Refusal { section, error };
            let page = settings_view(state, session, owner, name, Some(refusal)).await?;
            Ok(page.into_response())
        }
        Err(error) => Err(Page::from(error)),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct SettingsForm {
    #[serde(default)]
    csrf: String,
    visibility: String,
    fork_policy: String,
    #[serde(default)]
    config_path: String,
    default_branch: String,
    timeout_minutes: String,
    /// A checkbox: present ("on") when ticked.
    trusted: Option<String>,
}

pub(super) async fn save_settings(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<SettingsForm>,
) -> Result<Response, Page> {
    let who = session.actor(&form.csrf)?;
    let result = async {
        let visibility = form
            .visibility
            .parse::<gantry_store::Visibility>()
            .map_err(|e| OpError::invalid_field("visibility", e))?;
        let timeout_minutes: i64 = form.timeout_minutes.trim().parse().map_err(|_| {
            OpError::invalid_field("timeout_secs", "the timeout is a number of minutes")
        })?;
        let changes = gantry_store::RepoUpdate {
            config_path: Some(form.config_path.trim().to_owned()),
            default_branch: Some(form.default_branch.trim().to_owned()),
            // Only a server admin changes trust; for anyone else the box shows it, read-only
            // (and a disabled box is not sent).
            trusted: who.is_admin().then_some(form.trusted.is_some()),
            visibility: Some(visibility),
            timeout_secs: Some(timeout_minutes.saturating_mul(60)),
            fork_policy: Some(form.fork_policy.clone()),
            ..gantry_store::RepoUpdate::default()
        };
        ops::repos::update(&state, who, &owner, &name, changes).await?;
        Ok(())
    }
    .await;
    settled(&state, &session, (&owner, &name), "repository", result).await
}

#[derive(Debug, Deserialize)]
pub(super) struct CredentialsForm {
    #[serde(default)]
    csrf: String,
    /// Empty keeps the current one.
    #[serde(default)]
    github_token: String,
    #[serde(default)]
    ssh_key: String,
    /// Checkboxes: present ("on") when ticked.
    remove_github_token: Option<String>,
    remove_ssh_key: Option<String>,
}

/// The repository's GitHub token and SSH deploy key: set, replaced or removed, never shown.
pub(super) async fn save_credentials(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<CredentialsForm>,
) -> Result<Response, Page> {
    let who = session.actor(&form.csrf)?;
    // A textarea sends CRLF line ends; a key file has LF.
    let ssh_key = form.ssh_key.replace("\r\n", "\n");
    let change = |remove: bool, value: String| {
        if remove {
            Some(String::new())
        } else {
            Some(value).filter(|v| !v.trim().is_empty())
        }
    };
    let changes = gantry_store::RepoUpdate {
        github_token: change(
            form.remove_github_token.is_some(),
            form.github_token.trim().to_owned(),
        ),
        ssh_key: change(form.remove_ssh_key.is_some(), ssh_key),
        ..gantry_store::RepoUpdate::default()
    };
    let result = ops::repos::update(&state, who, &owner, &name, changes)
        .await
        .map(drop);
    settled(&state, &session, (&owner, &name), "credentials", result).await
}

#[derive(Debug, Deserialize)]
pub(super) struct SecretForm {
    #[serde(default)]
    csrf: String,
    name: String,
    value: String,
    allow_pull_requests: Option<String>,
    #[serde(default)]
    environment: String,
}

pub(super) async fn add_secret(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<SecretForm>,
) -> Result<Response, Page> {
    let who = session.actor(&form.csrf)?;
    let new = ops::secrets::NewSecret {
        name: form.name,
        // A browser's textarea sends CRLF line ends; a secret holds what was pasted.
        value: form.value.replace("\r\n", "\n"),
        allow_pull_requests: form.allow_pull_requests.is_some(),
        environment: Some(form.environment).filter(|e| !e.trim().is_empty()),
    };
    let of = ops::secrets::Of::Repo {
        owner: &owner,
        name: &name,
    };
    let result = ops::secrets::put(&state, who, of, new).await.map(drop);
    settled(&state, &session, (&owner, &name), "secrets", result).await
}

pub(super) async fn delete_secret(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, secret)): Path<(String, String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Page> {
    let who = session.actor(&form.csrf)?;
    let of = ops::secrets::Of::Repo {
        owner: &owner,
        name: &name,
    };
    let result = ops::secrets::remove(&state, who, of, &secret).await;
    settled(&state, &session, (&owner, &name), "secrets", result).await
}

#[derive(Debug, Deserialize)]
pub(super) struct RegistryForm {
    #[serde(default)]
    csrf: String,
    host: String,
    username: String,
    password: String,
    allow_pull_requests: Option<String>,
}

pub(super) async fn add_registry(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<RegistryForm>,
) -> Result<Response, Page> {
    let who = session.actor(&form.csrf)?;
    let new = ops::registries::NewRegistry {
        host: form.host,
        username: form.username,
        password: form.password,
        allow_pull_requests: form.allow_pull_requests.is_some(),
    };
    let of = ops::registries::Of::Repo {
        owner: &owner,
        name: &name,
    };
    let result = ops::registries::put(&state, who, of, new).await.map(drop);
    settled(&state, &session, (&owner, &name), "registries", result).await
}

pub(super) async fn delete_registry(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, host)): Path<(String, String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Page> {
    let who = session.actor(&form.csrf)?;
    let of = ops::registries::Of::Repo {
        owner: &owner,
        name: &name,
    };
    let result = ops::registries::remove(&state, who, of, &host).await;
    settled(&state, &session, (&owner, &name), "registries", result).await
}

#[derive(Debug, Deserialize)]
pub(super) struct ScheduleForm {
    #[serde(default)]
    csrf: String,
    name: String,
    expression: String,
    #[serde(default)]
    timezone: String,
    #[serde(default)]
    branch: String,
}

pub(super) async fn add_schedule(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<ScheduleForm>,
) -> Result<Response, Page> {
    let who = session.actor(&form.csrf)?;
    let new = ops::schedules::NewCron {
        name: form.name,
        expression: form.expression,
        branch: Some(form.branch),
        timezone: Some(form.timezone),
        params: Default::default(),
    };
    let result = ops::schedules::add(&state, who, &owner, &name, new)
        .await
        .map(drop);
    settled(&state, &session, (&owner, &name), "schedules", result).await
}

pub(super) async fn delete_schedule(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, cron)): Path<(String, String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Page> {
    let who = session.actor(&form.csrf)?;
    let result = ops::schedules::remove(&state, who, &owner, &name, &cron).await;
    settled(&state, &session, (&owner, &name), "schedules", result).await
}

/// Runs a schedule now and shows the build it made.
pub(super) async fn run_schedule(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name, cron)): Path<(String, String, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Page> {
    let who = session.actor(&form.csrf)?;
    match ops::schedules::run(&state, who, &owner, &name, &cron).await {
        Ok((_, build)) => {
            Ok(Redirect::to(&format!("/{owner}/{name}/{}", build.number)).into_response())
        }
        Err(error) => settled(&state, &session, (&owner, &name), "schedules", Err(error)).await,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RoleForm {
    #[serde(default)]
    csrf: String,
    login: String,
    /// A role, or `github` to let GitHub's permission apply again.
    role: String,
}

pub(super) async fn set_role(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
    Form(form): Form<RoleForm>,
) -> Result<Response, Page> {
    let who = session.actor(&form.csrf)?;
    let result = async {
        let role = match form.role.as_str() {
            "github" => None,
            role => Some(ops::users::role_named(role)?),
        };
        ops::users::set_role(&state, who, &owner, &name, &form.login, role).await?;
        Ok(())
    }
    .await;
    settled(&state, &session, (&owner, &name), "roles", result).await
}
