//! Registry logins of a repository (its admins), of an owner or of the whole server (server
//! admins): listed by host, added or replaced, removed. Passwords are sealed on the way in and
//! never come back out.

use gantry_proto::registry::registry_of_key;
use gantry_store::{RegistryInfo, RegistryScope};

use crate::AppState;
use crate::access::{self, Identity, Need};
use crate::error::{OpError, OpResult};

/// Whose logins: a repository's, an owner's, or the server's.
#[derive(Debug, Clone, Copy)]
pub enum Of<'a> {
    Repo { owner: &'a str, name: &'a str },
    Owner(&'a str),
    Server,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRegistry {
    /// The registry's host (and port); a URL or Docker Hub's aliases are taken too.
    pub host: String,
    pub username: String,
    pub password: String,
    /// Builds of pull requests from forks may pull with it too.
    #[serde(default)]
    pub allow_pull_requests: bool,
}

pub async fn list(state: &AppState, who: &Identity, of: Of<'_>) -> OpResult<Vec<RegistryInfo>> {
    let scope = scope(state, who, of).await?;
    Ok(state.store.registries(&scope).await?)
}

/// Adds or replaces the login for a host; returns the host as it is kept.
pub async fn put(
    state: &AppState,
    who: &Identity,
    of: Of<'_>,
    new: NewRegistry,
) -> OpResult<String> {
    let scope = scope(state, who, of).await?;
    let host = registry_of_key(&new.host);
    check(&host, &new)?;
    let sealed = state
        .config
        .secret_key
        .seal(&scope.associated_data(&host), new.password.as_bytes());
    state
        .store
        .put_registry(
            &scope,
            &host,
            new.username.trim(),
            &sealed,
            new.allow_pull_requests,
        )
        .await?;
    Ok(host)
}

pub async fn remove(state: &AppState, who: &Identity, of: Of<'_>, host: &str) -> OpResult<()> {
    let scope = scope(state, who, of).await?;
    Ok(state
        .store
        .delete_registry(&scope, &registry_of_key(host))
        .await?)
}

async fn scope(state: &AppState, who: &Identity, of: Of<'_>) -> OpResult<RegistryScope> {
    match of {
        Of::Repo { owner, name } => {
            let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Admin).await?;
            Ok(RegistryScope::Repo(repo.id))
        }
        Of::Owner(owner) => {
            access::require_admin(who)?;
            Ok(RegistryScope::Owner(owner.to_owned()))
        }
        Of::Server => {
            access::require_admin(who)?;
            Ok(RegistryScope::Server)
        }
    }
}

fn check(host: &str, new: &NewRegistry) -> OpResult<()> {
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !host_ok {
        return Err(OpError::invalid_field(
            "host",
            format!(
                "`{}` is not a registry host: give its name and port, like ghcr.io or registry.example.com:5000",
                new.host
            ),
        ));
    }
    let username = new.username.trim();
    if username.is_empty() || username.len() > 256 || username.chars().any(char::is_control) {
        return Err(OpError::invalid_field(
            "username",
            "the user name must be 1 to 256 printable characters",
        ));
    }
    if new.password.is_empty() || new.password.len() > 16 * 1024 {
        return Err(OpError::invalid_field(
            "password",
            "the password (or token) must be 1 byte to 16 KiB",
        ));
    }
    Ok(())
}
