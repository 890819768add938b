//! A repository's environments: listed by anyone who may read it; stopped by its writers,
//! who may start builds anyway (the stop runs the `on_stop` pipeline).

use std::sync::Arc;

use gantry_store::{Build, Environment, Repo, Role};

use crate::AppState;
use crate::access::{self, Identity, Need};
use crate::error::{OpError, OpResult};
use crate::trigger::environments::StopError;

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// The environment's name, e.g. `review/feature-x`.
    pub name: String,
}

pub async fn list(
    state: &AppState,
    who: Option<&Identity>,
    owner: &str,
    name: &str,
) -> OpResult<(Repo, Role, Vec<Environment>)> {
    let (repo, role) = access::authorize(state, who, owner, name, Need::Read).await?;
    let environments = state.store.environments(repo.id).await?;
    Ok((repo, role, environments))
}

/// Stops an environment: the build of its `on_stop` pipeline, or `None` when it has none.
pub async fn stop(
    state: &Arc<AppState>,
    who: &Identity,
    owner: &str,
    name: &str,
    request: StopRequest,
) -> OpResult<(Repo, Option<Build>)> {
    let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Write).await?;
    let environment = state
        .store
        .environment(repo.id, &request.name)
        .await?
        .ok_or_else(|| {
            OpError::NotFound(format!(
                "{} has no environment `{}`: `gantry env ls` lists them",
                repo.full_name(),
                request.name
            ))
        })?;
    match crate::trigger::environments::stop(state, &repo, &environment, who.name()).await {
        Ok(build) => Ok((repo, build)),
        Err(e @ StopError::NotRunning(_)) => Err(OpError::Conflict(e.to_string())),
        Err(StopError::Store(e)) => Err(e.into()),
    }
}
