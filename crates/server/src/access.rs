//! Who may do what on a repository, decided once for the API and the pages alike.
//!
//! An [`Identity`] is a token and the user it acts for. A server admin (the user's flag, or
//! a service token's) holds every role. A user's role on a repository is the one a server
//! admin set, else their permission on GitHub: read with their own GitHub token, cached in
//! the store and read again once older than `ServerConfig::role_ttl` (a GitHub that does
//! not answer leaves the cached role in force). Visibility decides reading: public for
//! anyone, internal for anyone signed in, private for the read role. Refusals never confirm
//! that a repository the caller may not read exists.

use gantry_store::{Repo, Role, RoleSource, Store, StoreError, Token, User, Visibility};
use serde::Deserialize;

use crate::AppState;
use crate::error::OpError;

/// Whom a request acts for: a token, and the user it belongs to (none for a service token).
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub token: Token,
    pub user: Option<User>,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.token.admin || self.user.as_ref().is_some_and(|u| u.admin)
    }

    /// Whether `token` is this caller's own: the one in use, or another of the same user's.
    pub fn owns(&self, token: &Token) -> bool {
        token.id == self.token.id
            || (token.user_id.is_some() && token.user_id == self.user.as_ref().map(|u| u.id))
    }

    /// The user's login, or the service token's name: what builds record as their sender.
    pub fn name(&self) -> &str {
        self.user.as_ref().map_or(&self.token.name, |u| &u.login)
    }
}

/// What a request wants to do with a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Builds and logs, as the visibility allows.
    Read,
    /// Restart, cancel, manual builds, approve, decline.
    Write,
    /// Settings, secrets, notification targets, roles, removal.
    Admin,
}

impl Need {
    fn role(self) -> Role {
        match self {
            Need::Read => Role::Read,
            Need::Write => Role::Write,
            Need::Admin => Role::Admin,
        }
    }
}

/// The associated data a user's sealed GitHub token is bound to.
pub(crate) fn github_token_binding(login: &str) -> String {
    format!("user:{}/github_token", login.to_ascii_lowercase())
}

/// The caller's role on `repo`.
pub(crate) async fn role(
    state: &AppState,
    who: Option<&Identity>,
    repo: &Repo,
) -> Result<Role, StoreError> {
    let Some(who) = who else {
        return Ok(Role::None);
    };
    if who.is_admin() {
        return Ok(Role::Admin);
    }
    let Some(user) = &who.user else {
        return Ok(Role::None);
    };
    let stored = state.store.roles_on(repo.id, user.id).await?;
    if let Some(set) = stored.iter().find(|r| r.source == RoleSource::Admin) {
        return Ok(set.role);
    }
    let cached = stored.iter().find(|r| r.source == RoleSource::GitHub);
    let fresh = cached.is_some_and(|r| {
        state.config.clock.now_ms() - r.fetched_at < state.config.role_ttl.as_millis() as i64
    });
    if fresh {
        return Ok(cached.map_or(Role::None, |r| r.role));
    }
    match github_role(state, user, &repo.owner, &repo.name).await {
        Ok(Some(role)) => {
            state
                .store
                .put_role(repo.id, user.id, RoleSource::GitHub, role)
                .await?;
            Ok(role)
        }
        Ok(None) => Ok(cached.map_or(Role::None, |r| r.role)),
        Err(reason) => {
            tracing::warn!(user = %user.login, repo = %repo.full_name(), %reason, "reading a GitHub permission failed; the cached role stays");
            let Some(cached) = cached else {
                return Ok(Role::None);
            };
            // Kept for another while, so a GitHub that hangs is not asked on every request.
            state
                .store
                .put_role(repo.id, user.id, RoleSource::GitHub, cached.role)
                .await?;
            Ok(cached.role)
        }
    }
}

/// Whether the caller may read the repository's builds and logs.
fn may_read(repo: &Repo, who: Option<&Identity>, role: Role) -> bool {
    match repo.visibility {
        Visibility::Public => true,
        Visibility::Internal => who.is_some(),
        Visibility::Private => role >= Role::Read,
    }
}

/// The repositories of `repos` the caller may read, for listings: decided from the roles
/// stored for the caller (one query, no GitHub call however many repositories there are).
pub(crate) async fn readable(
    state: &AppState,
    who: Option<&Identity>,
    repos: Vec<Repo>,
) -> Result<Vec<Repo>, StoreError> {
    let mut roles = std::collections::HashMap::new();
    match who {
        Some(who) if who.is_admin() => return Ok(repos),
        Some(Identity {
            user: Some(user), ..
        }) => {
            for stored in state.store.roles_of_user(user.id).await? {
                // An admin's role wins over GitHub's, as in `role`.
                if stored.source == RoleSource::Admin || !roles.contains_key(&stored.repo_id) {
                    roles.insert(stored.repo_id, stored.role);
                }
            }
        }
        _ => {}
    }
    Ok(repos
        .into_iter()
        .filter(|repo| {
            let role = roles.get(&repo.id).copied().unwrap_or(Role::None);
            may_read(repo, who, role)
        })
        .collect())
}

/// The repository and the caller's role on it, when the caller has `need`; else the
/// refusal to give: 404 for what the caller may not read, 401 without a token, 403 with
/// one that lacks the role.
pub(crate) async fn authorize(
    state: &AppState,
    who: Option<&Identity>,
    owner: &str,
    name: &str,
    need: Need,
) -> Result<(Repo, Role), OpError> {
    let hidden = || {
        OpError::NotFound(if who.is_some() {
            format!(
                "repository {owner}/{name} not found (or you may not read it: ask its admins for access)"
            )
        } else {
            format!(
                "repository {owner}/{name} not found (or it is not public: sign in, or pass a token)"
            )
        })
    };
    let repo = state
        .store
        .repo_by_name(owner, name)
        .await?
        .ok_or_else(hidden)?;
    let role = role(state, who, &repo).await?;
    if !may_read(&repo, who, role) {
        return Err(hidden());
    }
    // Reading was decided by the visibility above; more needs the role.
    if need != Need::Read && role < need.role() {
        return Err(match who {
            None => OpError::Unauthorized(
                "this needs an API token: pass `Authorization: Bearer <token>` (the CLI reads GANTRY_TOKEN)"
                    .to_owned(),
            ),
            Some(who) => OpError::needs(
                need.role(),
                format!(
                    "this needs the {} role on {owner}/{name}; {} has {role}",
                    need.role(),
                    who.name()
                ),
            ),
        });
    }
    Ok((repo, role))
}

/// Refuses anyone but a server admin.
pub(crate) fn require_admin(who: &Identity) -> Result<(), OpError> {
    if who.is_admin() {
        Ok(())
    } else {
        Err(OpError::forbidden(
            "this needs a server admin (an admin token, or a user named in --admins)".to_owned(),
        ))
    }
}

/// A repository's `permissions` as GitHub's API gives them.
#[derive(Debug, Default, Deserialize)]
struct Permissions {
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    maintain: bool,
    #[serde(default)]
    push: bool,
    #[serde(default)]
    triage: bool,
    #[serde(default)]
    pull: bool,
}

impl Permissions {
    fn role(&self) -> Role {
        if self.admin {
            Role::Admin
        } else if self.maintain || self.push {
            Role::Write
        } else if self.triage || self.pull {
            Role::Read
        } else {
            Role::None
        }
    }
}

#[derive(Debug, Deserialize)]
struct GitHubRepo {
    full_name: String,
    #[serde(default)]
    permissions: Option<Permissions>,
}

/// The user's GitHub token, opened; `None` when they never signed in with GitHub.
pub(crate) async fn github_token(state: &AppState, user: &User) -> Result<Option<String>, String> {
    let sealed = state
        .store
        .user_github_token(user.id)
        .await
        .map_err(|e| e.to_string())?;
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let token = state
        .config
        .secret_key
        .open(&github_token_binding(&user.login), &sealed)
        .map_err(|e| e.to_string())?;
    Ok(Some(String::from_utf8_lossy(&token).into_owned()))
}

fn github_get(state: &AppState, path: &str, token: &str) -> reqwest::RequestBuilder {
    state
        .github
        .request(reqwest::Method::GET, path, Some(token))
        .timeout(std::time::Duration::from_secs(5))
}

/// The user's role on `owner/name` as GitHub says now (the repository need not be
/// registered yet). `Ok(None)`: the user has no GitHub token to ask with. `Err`: GitHub did
/// not give an answer.
pub(crate) async fn github_role(
    state: &AppState,
    user: &User,
    owner: &str,
    name: &str,
) -> Result<Option<Role>, String> {
    let Some(token) = github_token(state, user).await? else {
        return Ok(None);
    };
    let response = github_get(state, &format!("/repos/{owner}/{name}"), &token)
        .send()
        .await
        .map_err(|e| format!("GitHub did not answer: {e}"))?;
    match response.status().as_u16() {
        200 => {
            let found: GitHubRepo = response
                .json()
                .await
                .map_err(|e| format!("GitHub's answer was unreadable: {e}"))?;
            Ok(Some(found.permissions.unwrap_or_default().role()))
        }
        // Not visible to the user, or their token was revoked: no role until GitHub says
        // otherwise.
        401 | 403 | 404 => Ok(Some(Role::None)),
        status => Err(format!("GitHub answered {status}")),
    }
}

/// GitHub lists at most this many pages of a user's repositories at sign-in.
const MAX_REPO_PAGES: u32 = 50;

/// At sign-in: reads every repository the user can see on GitHub, with permissions, and
/// caches the role for each registered one (none for the others), so listings show what
/// they may read at once. Keeps the old cache when GitHub fails midway.
pub(crate) async fn sync_github_roles(
    state: &AppState,
    user: &User,
    token: &str,
) -> Result<(), String> {
    let mut roles = std::collections::HashMap::new();
    for page in 1..=MAX_REPO_PAGES {
        let response = github_get(
            state,
            &format!("/user/repos?per_page=100&page={page}"),
            token,
        )
        .send()
        .await
        .map_err(|e| format!("GitHub did not answer: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "GitHub answered {} for the user's repositories",
                response.status()
            ));
        }
        let repos: Vec<GitHubRepo> = response
            .json()
            .await
            .map_err(|e| format!("GitHub's answer was unreadable: {e}"))?;
        let last = repos.len() < 100;
        for repo in repos {
            roles.insert(
                repo.full_name.to_ascii_lowercase(),
                repo.permissions.unwrap_or_default().role(),
            );
        }
        if last {
            break;
        }
    }
    store_roles(&state.store, user, &roles)
        .await
        .map_err(|e| e.to_string())
}

async fn store_roles(
    store: &Store,
    user: &User,
    roles: &std::collections::HashMap<String, Role>,
) -> Result<(), StoreError> {
    for repo in store.list_repos().await? {
        let role = roles
            .get(&repo.full_name().to_ascii_lowercase())
            .copied()
            .unwrap_or(Role::None);
        store
            .put_role(repo.id, user.id, RoleSource::GitHub, role)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_permissions_map_to_the_highest_role_they_carry() {
        let role = |json: &str| {
            serde_json::from_str::<Permissions>(json)
                .expect("permissions")
                .role()
        };
        assert_eq!(
            role(r#"{"admin":true,"push":true,"pull":true}"#),
            Role::Admin
        );
        assert_eq!(role(r#"{"maintain":true,"pull":true}"#), Role::Write);
        assert_eq!(role(r#"{"push":true,"pull":true}"#), Role::Write);
        assert_eq!(role(r#"{"triage":true,"pull":true}"#), Role::Read);
        assert_eq!(role(r#"{"pull":true}"#), Role::Read);
        assert_eq!(role(r#"{"pull":false}"#), Role::None);
        assert_eq!(role("{}"), Role::None);
    }

    #[test]
    fn a_users_token_binding_ignores_the_logins_case() {
        assert_eq!(
            github_token_binding("OctoCat"),
            github_token_binding("octocat")
        );
        assert_ne!(
            github_token_binding("octocat"),
            github_token_binding("hubot")
        );
    }
}
