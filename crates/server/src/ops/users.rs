//! Users and their roles on repositories: server admins add, promote and remove users, and
//! set a role that wins over the one GitHub gives; a repository's admins read its roles.

use gantry_store::{RepoRole, Role, RoleSource, User};

use crate::AppState;
use crate::access::{self, Identity, Need, require_admin};
use crate::error::{OpError, OpResult};

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub login: String,
    #[serde(default)]
    pub admin: bool,
}

/// A user by login, or a 404 that says how users come to be.
pub async fn find(state: &AppState, login: &str) -> OpResult<User> {
    state.store.user_by_login(login).await?.ok_or_else(|| {
        OpError::NotFound(format!(
            "there is no user {login}: they sign in with GitHub, or an admin adds them (gantry user add {login})"
        ))
    })
}

pub async fn list(state: &AppState, who: &Identity) -> OpResult<Vec<User>> {
    require_admin(who)?;
    Ok(state.store.users().await?)
}

pub async fn add(state: &AppState, who: &Identity, new: NewUser) -> OpResult<User> {
    require_admin(who)?;
    if !valid_login(&new.login) {
        return Err(OpError::invalid_field(
            "login",
            format!(
                "`{}` is not a GitHub login: use letters, digits and single hyphens, at most 39",
                new.login
            ),
        ));
    }
    Ok(state.store.create_user(&new.login, new.admin).await?)
}

pub async fn set_admin(
    state: &AppState,
    who: &Identity,
    login: &str,
    admin: bool,
) -> OpResult<User> {
    require_admin(who)?;
    let user = find(state, login).await?;
    Ok(state.store.set_user_admin(user.id, admin).await?)
}

pub async fn remove(state: &AppState, who: &Identity, login: &str) -> OpResult<()> {
    require_admin(who)?;
    let user = find(state, login).await?;
    Ok(state.store.delete_user(user.id).await?)
}

/// Every stored role on the repository: set by an admin, or GitHub's as last read.
pub async fn roles(
    state: &AppState,
    who: &Identity,
    owner: &str,
    name: &str,
) -> OpResult<Vec<RepoRole>> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Admin).await?;
    Ok(state.store.roles_of_repo(repo.id).await?)
}

/// A server admin sets `login`'s role on a repository (it wins over GitHub's), or with
/// `None` removes the one set, so that GitHub's applies again. Returns the repository's
/// full name and the user.
pub async fn set_role(
    state: &AppState,
    who: &Identity,
    owner: &str,
    name: &str,
    login: &str,
    role: Option<Role>,
) -> OpResult<(String, User)> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Admin).await?;
    require_admin(who)?;
    let user = find(state, login.trim()).await?;
    match role {
        Some(role) => {
            state
                .store
                .put_role(repo.id, user.id, RoleSource::Admin, role)
                .await?;
        }
        None => {
            if !state
                .store
                .remove_role(repo.id, user.id, RoleSource::Admin)
                .await?
            {
                return Err(OpError::NotFound(format!(
                    "{} has no role set by an admin on {}",
                    user.login,
                    repo.full_name()
                )));
            }
        }
    }
    Ok((repo.full_name(), user))
}

/// A role by its name (`none`, `read`, `write`, `admin`), or a refusal naming the field.
pub fn role_named(name: &str) -> OpResult<Role> {
    name.parse::<Role>()
        .map_err(|e| OpError::invalid_field("role", e))
}

/// GitHub's rule for logins: letters, digits and single inner hyphens, at most 39.
fn valid_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 39
        && login.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !login.starts_with('-')
        && !login.ends_with('-')
        && !login.contains("--")
}

#[cfg(test)]
mod tests {
    use super::valid_login;

    #[test]
    fn logins_follow_githubs_rule() {
        assert!(valid_login("octocat"));
        assert!(valid_login("mona-lisa"));
        assert!(!valid_login(""));
        assert!(!valid_login("-x"));
        assert!(!valid_login("x-"));
        assert!(!valid_login("a--b"));
        assert!(!valid_login("a/b"));
        assert!(!valid_login(&"a".repeat(40)));
    }
}
