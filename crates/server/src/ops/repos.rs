//! Repositories: register, change (settings and credentials alike), remove. The checks of a
//! change live here once, so the API's PATCH and the settings page give the same verdict.

use gantry_store::{
    NewRepo, Repo, RepoRole, RepoUpdate, Role, SecretInfo, SecretScope, Visibility,
};

use crate::AppState;
use crate::access::{self, Identity, Need};
use crate::error::{OpError, OpResult};
use crate::secrets::seal_field;

/// The longest build timeout a repository may set: a day.
pub const MAX_TIMEOUT_SECS: i64 = 24 * 3600;

/// The repositories the caller may read (anyone: the public ones).
pub async fn list(state: &AppState, who: Option<&Identity>) -> OpResult<Vec<Repo>> {
    Ok(access::readable(state, who, state.store.list_repos().await?).await?)
}

/// A repository the caller may read, with the caller's role on it.
pub async fn get(
    state: &AppState,
    who: Option<&Identity>,
    owner: &str,
    name: &str,
) -> OpResult<(Repo, Role)> {
    access::authorize(state, who, owner, name, Need::Read).await
}

/// What a repository's admins see of it: the repository, its secrets (names) and the roles
/// held on it.
pub async fn settings(
    state: &AppState,
    who: Option<&Identity>,
    owner: &str,
    name: &str,
) -> OpResult<(Repo, Vec<SecretInfo>, Vec<RepoRole>)> {
    let (repo, _) = access::authorize(state, who, owner, name, Need::Admin).await?;
    let secrets = state.store.secrets(&SecretScope::Repo(repo.id)).await?;
    let roles = state.store.roles_of_repo(repo.id).await?;
    Ok((repo, secrets, roles))
}

/// Registers a repository: a server admin, or a user GitHub says administers it (who then
/// holds its admin role here too).
pub async fn add(state: &AppState, who: &Identity, mut new: NewRepo) -> OpResult<Repo> {
    check_new(who, &new)?;
    let may_add = who.is_admin() || github_admin_of(state, who, &new).await?;
    if !may_add {
        return Err(OpError::needs(
            Role::Admin,
            format!(
                "adding {}/{} needs a server admin, or your admin permission on it on GitHub (sign in with GitHub)",
                new.owner, new.name
            ),
        ));
    }
    if new.visibility.is_none() {
        new.visibility = Some(visibility_from_github(state, who, &new).await);
    }
    let key = &state.config.secret_key;
    for (field, value) in [
        ("webhook_secret", &mut new.webhook_secret),
        ("github_token", &mut new.github_token),
        ("ssh_key", &mut new.ssh_key),
    ] {
        *value = seal_field(key, &new.owner, &new.name, field, value);
    }
    let repo = state.store.create_repo(&new).await?;
    if let Some(user) = who.user.as_ref().filter(|_| !who.is_admin()) {
        state
            .store
            .put_role(
                repo.id,
                user.id,
                gantry_store::RoleSource::GitHub,
                Role::Admin,
            )
            .await?;
    }
    Ok(repo)
}

/// Changes the settings and credentials given (`None` keeps a value); needs the admin role,
/// and a server admin to change trust.
pub async fn update(
    state: &AppState,
    who: &Identity,
    owner: &str,
    name: &str,
    mut changes: RepoUpdate,
) -> OpResult<Repo> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Admin).await?;
    check_changes(who, &repo, &changes)?;
    let key = &state.config.secret_key;
    for (field, value) in [
        ("webhook_secret", &mut changes.webhook_secret),
        ("github_token", &mut changes.github_token),
        ("ssh_key", &mut changes.ssh_key),
    ] {
        if let Some(value) = value {
            *value = seal_field(key, &repo.owner, &repo.name, field, value);
        }
    }
    Ok(state.store.update_repo(repo.id, &changes).await?)
}

/// Signs a pipeline file's text for the repository (`gantry sign`, as `drone sign`): the
/// HMAC its `kind: signature` document must hold. The first signature makes the repository's
/// key, and from then on its builds run only signed files. Needs the admin role.
pub async fn sign(
    state: &AppState,
    who: &Identity,
    owner: &str,
    name: &str,
    text: &str,
) -> OpResult<gantry_api::Signed> {
    let (mut repo, _) = access::authorize(state, Some(who), owner, name, Need::Admin).await?;
    let parsed = gantry_pipeline::parse("the file", text);
    if parsed.dialects.first().and_then(|(_, d)| *d) != Some(gantry_pipeline::Dialect::Gantry) {
        return Err(OpError::invalid_field(
            "data",
            "only files of `kind: pipeline` documents (Drone 1.x, gantry) can be signed: a Woodpecker or Drone 0.8 file holds one document, with no room for a signature",
        ));
    }
    let key = &state.config.secret_key;
    if repo.signing_key.is_empty() {
        let sealed = seal_field(
            key,
            &repo.owner,
            &repo.name,
            crate::signing::FIELD,
            &crate::auth::random_secret(),
        );
        repo = state.store.set_signing_key(repo.id, &sealed).await?;
    }
    let signing_key = crate::signing::key_of(state, &repo).map_err(|e| {
        OpError::Internal(format!(
            "the repository's signing key cannot be opened: {e}"
        ))
    })?;
    let hmac = crate::signing::sign(&signing_key, text)
        .map_err(|e| OpError::invalid_field("data", e.to_string()))?;
    Ok(gantry_api::Signed {
        document: gantry_pipeline::signature::document(&hmac),
        hmac,
    })
}

/// Stops requiring signed pipeline files: removes the repository's signing key (a later
/// `gantry sign` makes a new one). Needs the admin role.
pub async fn unsign(state: &AppState, who: &Identity, owner: &str, name: &str) -> OpResult<()> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Admin).await?;
    state.store.set_signing_key(repo.id, "").await?;
    Ok(())
}

/// Removes a repository with its builds and logs; needs the admin role.
pub async fn remove(state: &AppState, who: &Identity, owner: &str, name: &str) -> OpResult<()> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Admin).await?;
    Ok(state.store.delete_repo(repo.id).await?)
}

fn check_new(who: &Identity, new: &NewRepo) -> OpResult<()> {
    if !valid_name_part(&new.owner) || !valid_name_part(&new.name) {
        return Err(OpError::invalid_field(
            "name",
            format!(
                "`{}/{}` is not a repository name: use OWNER/NAME with letters, digits, `-`, `_` and `.`",
                new.owner, new.name
            ),
        ));
    }
    if new.trusted && !who.is_admin() {
        return Err(only_admins_trust());
    }
    check_clone_url(who, &new.clone_url)?;
    check_link(&new.link)?;
    check_default_branch(&new.default_branch)?;
    check_timeout(new.timeout_secs)?;
    check_fork_policy(&new.fork_policy)?;
    check_ssh_key(&new.ssh_key)
}

fn check_changes(who: &Identity, repo: &Repo, changes: &RepoUpdate) -> OpResult<()> {
    if changes.trusted.is_some_and(|t| t != repo.trusted) && !who.is_admin() {
        return Err(only_admins_trust());
    }
    if let Some(url) = &changes.clone_url {
        check_clone_url(who, url)?;
    }
    if let Some(link) = &changes.link {
        check_link(link)?;
    }
    if let Some(branch) = &changes.default_branch {
        check_default_branch(branch)?;
    }
    if let Some(timeout) = changes.timeout_secs {
        check_timeout(timeout)?;
    }
    if let Some(policy) = &changes.fork_policy {
        check_fork_policy(policy)?;
    }
    check_ssh_key(changes.ssh_key.as_deref().unwrap_or(""))
}

fn only_admins_trust() -> OpError {
    OpError::forbidden("only a server admin can change whether a repository is trusted")
}

fn valid_name_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 100
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && part != "."
        && part != ".."
}

/// A clone URL is fetched by the server itself: anything but a network URL (`https://`,
/// `http://`, SSH) reads the server's own disk, so only a server admin may set one (mirrors,
/// tests).
fn check_clone_url(who: &Identity, url: &str) -> OpResult<()> {
    let url = url.trim();
    if url.is_empty() {
        return Err(OpError::invalid_field(
            "clone_url",
            "clone_url is empty: give the URL gantry fetches the repository from",
        ));
    }
    let lower = url.to_ascii_lowercase();
    let network = ["https://", "http://", "ssh://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
        || gantry_proto::ssh::is_ssh_url(url);
    if !network && !who.is_admin() {
        return Err(OpError::forbidden(format!(
            "clone_url `{url}` is a local path or a file:// URL, which reads the server's own disk: only a server admin can set one; use the repository's https:// or SSH URL"
        )));
    }
    Ok(())
}

/// The repository's web page is a link on every build page: only an http(s) URL.
fn check_link(link: &str) -> OpResult<()> {
    if link.is_empty() || web_link(link).is_some() {
        return Ok(());
    }
    Err(OpError::invalid_field(
        "link",
        format!(
            "link `{link}` is not an http:// or https:// URL: give the repository's web page, like https://github.com/OWNER/NAME"
        ),
    ))
}

/// `link` when it is an http(s) URL, else nothing: the one test of what may become an `href`
/// (a `javascript:` or `data:` link would run in gantry's origin).
pub fn web_link(link: &str) -> Option<&str> {
    let parsed = reqwest::Url::parse(link.trim()).ok()?;
    (matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some()).then_some(link)
}

fn check_default_branch(branch: &str) -> OpResult<()> {
    if branch.trim().is_empty() {
        return Err(OpError::invalid_field(
            "default_branch",
            "the default branch cannot be empty",
        ));
    }
    Ok(())
}

fn check_timeout(secs: i64) -> OpResult<()> {
    if !(60..=MAX_TIMEOUT_SECS).contains(&secs) {
        return Err(OpError::invalid_field(
            "timeout_secs",
            format!("the timeout must be 1 to {} minutes", MAX_TIMEOUT_SECS / 60),
        ));
    }
    Ok(())
}

fn check_fork_policy(policy: &str) -> OpResult<()> {
    policy
        .parse::<gantry_store::ForkPolicy>()
        .map(|_| ())
        .map_err(|refusal| OpError::invalid_field("fork_policy", refusal))
}

/// A deploy key must be a private key in PEM or OpenSSH form (empty removes it): a public
/// key pasted by mistake is refused here, not at the next fetch.
fn check_ssh_key(key: &str) -> OpResult<()> {
    let key = key.trim();
    if key.is_empty() || (key.starts_with("-----BEGIN ") && key.contains("PRIVATE KEY-----")) {
        return Ok(());
    }
    let hint = if key.starts_with("ssh-") || key.starts_with("ecdsa-") {
        "this is a public key: give gantry the private half (the file without .pub), and GitHub the public one"
    } else {
        "expected a private key file, starting with `-----BEGIN OPENSSH PRIVATE KEY-----`"
    };
    Err(OpError::invalid_field(
        "ssh_key",
        format!("ssh_key: {hint}"),
    ))
}

/// A repository is private unless GitHub says it is public: asked with the repository's own
/// token, the caller's GitHub token, or the server's, in that order.
async fn visibility_from_github(state: &AppState, who: &Identity, new: &NewRepo) -> Visibility {
    let user_token = match &who.user {
        Some(user) => access::github_token(state, user).await.ok().flatten(),
        None => None,
    };
    let token = [
        Some(new.github_token.clone()).filter(|t| !t.is_empty()),
        user_token,
        state.config.github_token.clone(),
    ]
    .into_iter()
    .flatten()
    .next();
    let answer = state
        .github
        .repository_private(&new.owner, &new.name, token.as_deref())
        .await;
    match answer {
        Ok(false) => Visibility::Public,
        Ok(true) => Visibility::Private,
        Err(reason) => {
            tracing::info!(repo = %format!("{}/{}", new.owner, new.name), %reason, "GitHub could not say whether the repository is public; it starts private");
            Visibility::Private
        }
    }
}

/// Whether GitHub says the caller administers the repository about to be added.
async fn github_admin_of(state: &AppState, who: &Identity, new: &NewRepo) -> OpResult<bool> {
    let Some(user) = &who.user else {
        return Ok(false);
    };
    match access::github_role(state, user, &new.owner, &new.name).await {
        Ok(role) => Ok(role == Some(Role::Admin)),
        Err(reason) => Err(OpError::Upstream(format!(
            "could not ask GitHub whether you administer {}/{}: {reason}",
            new.owner, new.name
        ))),
    }
}
