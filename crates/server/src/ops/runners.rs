//! Runners as the server last saw them: for any signed-in caller (what they offer, their
//! labels and use say why a stage waits); and runners' own tokens, which only server admins
//! make (shown once, stored as a hash), list and revoke.

use gantry_store::{Runner, RunnerToken};

use crate::AppState;
use crate::access::{Identity, require_admin};
use crate::error::{OpError, OpResult};

pub async fn list(state: &AppState, _who: &Identity) -> OpResult<Vec<Runner>> {
    Ok(state.store.runners().await?)
}

/// Makes runner `name`'s token, restricted to `owners`' repositories when given; returns the
/// token, shown this once.
pub async fn register(
    state: &AppState,
    who: &Identity,
    name: &str,
    owners: &[String],
) -> OpResult<(RunnerToken, String)> {
    require_admin(who)?;
    let valid = |text: &str| {
        !text.is_empty()
            && text.len() <= 100
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !valid(name) {
        return Err(OpError::invalid_field(
            "name",
            format!("`{name}` is not a runner name: use letters, digits, `-`, `_` and `.`"),
        ));
    }
    if let Some(owner) = owners.iter().find(|owner| !valid(owner)) {
        return Err(OpError::invalid_field(
            "owners",
            format!("`{owner}` is not an owner (a GitHub user or organisation)"),
        ));
    }
    let token = format!("gantry_runner_{}", crate::auth::random_secret());
    let stored = state
        .store
        .create_runner_token(name, &crate::auth::hash_token(&token), owners)
        .await?;
    Ok((stored, token))
}

pub async fn tokens(state: &AppState, who: &Identity) -> OpResult<Vec<RunnerToken>> {
    require_admin(who)?;
    Ok(state.store.runner_tokens().await?)
}

/// Revokes runner `name`'s token at once: its next request is refused.
pub async fn revoke(state: &AppState, who: &Identity, name: &str) -> OpResult<()> {
    require_admin(who)?;
    if state.store.delete_runner_token(name).await? {
        Ok(())
    } else {
        Err(OpError::NotFound(format!("runner `{name}` has no token")))
    }
}
