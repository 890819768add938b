//! Chat targets: a repository's (its admins) or the server-wide defaults for repositories
//! without their own (server admins). Added, listed, removed, and sent a test message.

use gantry_pipeline::model::NotifyRule;
use gantry_store::{NewTarget, NotifyTarget};

use crate::AppState;
use crate::access::{self, Identity, Need};
use crate::error::{OpError, OpResult};

/// Whose targets: a repository's, or the server's defaults.
#[derive(Debug, Clone, Copy)]
pub enum Of<'a> {
    Repo { owner: &'a str, name: &'a str },
    Server,
}

/// The repository id the targets belong to (`None`: the server's), once the caller may
/// manage them, and the name a test message gives.
async fn scope(state: &AppState, who: &Identity, of: Of<'_>) -> OpResult<(Option<i64>, String)> {
    match of {
        Of::Repo { owner, name } => {
            let (repo, _) = access::authorize(state, Some(who), owner, name, Need::Admin).await?;
            Ok((Some(repo.id), repo.full_name()))
        }
        Of::Server => {
            access::require_admin(who)?;
            Ok((None, "(server-wide default)".to_owned()))
        }
    }
}

pub async fn list(state: &AppState, who: &Identity, of: Of<'_>) -> OpResult<Vec<NotifyTarget>> {
    let (repo_id, _) = scope(state, who, of).await?;
    Ok(state.store.targets(repo_id).await?)
}

pub async fn add(
    state: &AppState,
    who: &Identity,
    of: Of<'_>,
    new: NewTarget,
) -> OpResult<NotifyTarget> {
    let (repo_id, _) = scope(state, who, of).await?;
    check(&new)?;
    Ok(state.store.add_target(repo_id, &new).await?)
}

pub async fn remove(state: &AppState, who: &Identity, of: Of<'_>, id: i64) -> OpResult<()> {
    let (repo_id, _) = scope(state, who, of).await?;
    owned(state, repo_id, id).await?;
    Ok(state.store.remove_target(id).await?)
}

/// Queues a test message to target `id`; returns the outbox message's id.
pub async fn test(state: &AppState, who: &Identity, of: Of<'_>, id: i64) -> OpResult<i64> {
    let (repo_id, label) = scope(state, who, of).await?;
    let target = owned(state, repo_id, id).await?;
    let report = crate::notify::Report::test(state, &label);
    Ok(state
        .store
        .queue_message(&gantry_store::NewMessage {
            kind: gantry_store::MessageKind::Chat(target.kind),
            url: target.url.clone(),
            body: crate::notify::chat_body(target.kind, &report).to_string(),
            auth: None,
        })
        .await?)
}

/// Target `id`, if it belongs where the caller asked.
async fn owned(state: &AppState, repo_id: Option<i64>, id: i64) -> OpResult<NotifyTarget> {
    let target = state.store.target(id).await?;
    if target.repo_id != repo_id {
        return Err(OpError::NotFound(format!(
            "notification target #{id} not found here"
        )));
    }
    Ok(target)
}

fn check(new: &NewTarget) -> OpResult<()> {
    if !(new.url.starts_with("https://") || new.url.starts_with("http://")) {
        return Err(OpError::invalid_field(
            "url",
            "url must be the chat service's incoming webhook URL (http:// or https://)",
        ));
    }
    if new.rules.is_empty() {
        return Err(OpError::invalid_field(
            "rules",
            format!(
                "rules is empty: give one or more of {}",
                NotifyRule::ALL.map(NotifyRule::as_str).join(", ")
            ),
        ));
    }
    Ok(())
}
