//! Secrets of a repository (its admins) or of an owner (server admins): listed by name,
//! added or replaced, removed. Values are sealed on the way in and never come back out.

use gantry_store::{SecretInfo, SecretScope};

use crate::AppState;
use crate::access::{self, Identity, Need};
use crate::error::{OpError, OpResult};

/// Largest secret value (a kubeconfig fits; a disk image does not).
const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Whose secrets: a repository's, or every repository's of an owner.
#[derive(Debug, Clone, Copy)]
pub enum Of<'a> {
    Repo { owner: &'a str, name: &'a str },
    Owner(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSecret {
    pub name: String,
    pub value: String,
    /// Given to pull requests from forks too.
    #[serde(default)]
    pub allow_pull_requests: bool,
    /// Given only to stages that deploy to an environment this glob matches.
    #[serde(default)]
    pub environment: Option<String>,
}

pub async fn list(state: &AppState, who: &Identity, of: Of<'_>) -> OpResult<Vec<SecretInfo>> {
    let scope = scope(state, who, of).await?;
    Ok(state.store.secrets(&scope).await?)
}

/// Adds or replaces a secret; returns its (trimmed) name.
pub async fn put(state: &AppState, who: &Identity, of: Of<'_>, new: NewSecret) -> OpResult<String> {
    let scope = scope(state, who, of).await?;
    let name = new.name.trim();
    check(name, &new.value)?;
    let environment = match new.environment.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(glob) => Some(super::environments::check_pattern("environment", glob)?),
    };
    crate::secrets::put(
        &state.store,
        &state.config.secret_key,
        &scope,
        name,
        &new.value,
        &gantry_store::SecretGrant {
            allow_pull_requests: new.allow_pull_requests,
            environment,
        },
    )
    .await?;
    Ok(name.to_owned())
}

pub async fn remove(state: &AppState, who: &Identity, of: Of<'_>, name: &str) -> OpResult<()> {
    let scope = scope(state, who, of).await?;
    Ok(state.store.delete_secret(&scope, name).await?)
}

async fn scope(state: &AppState, who: &Identity, of: Of<'_>) -> OpResult<SecretScope> {
    match of {
        Of::Repo { owner, name } => {
            let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Admin).await?;
            Ok(SecretScope::Repo(repo.id))
        }
        Of::Owner(owner) => {
            access::require_admin(who)?;
            Ok(SecretScope::Owner(owner.to_owned()))
        }
    }
}

fn check(name: &str, value: &str) -> OpResult<()> {
    super::check_name("secret name", "name", name)?;
    if value.is_empty() || value.len() > MAX_SECRET_BYTES {
        return Err(OpError::invalid_field(
            "value",
            format!(
                "a secret's value must be 1 byte to {} KiB",
                MAX_SECRET_BYTES / 1024
            ),
        ));
    }
    Ok(())
}
