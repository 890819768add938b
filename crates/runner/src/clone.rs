//! Fills a folder with a repository at an exact commit, with git2. The folder is then copied
//! into the workspace by the backend, like any other source.
//!
//! Fetches the commit itself when the server allows it (GitHub does, also shallow), else the
//! ref it was announced on (`refs/heads/main`, `refs/tags/v1`, `refs/pull/7/head`), and checks
//! the commit out detached. A token or an SSH deploy key goes through git's credential
//! callback, never into a URL that could be stored or logged; an SSH server's host key must be
//! one the server's known hosts trust.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gantry_pipeline::plan::CloneSpec;
use gantry_proto::GitCredential;
use git2::{AutotagOption, FetchOptions, Oid, Repository};

/// What to clone: the plan's clone, and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneSource {
    /// URL, ref, exact commit (empty: whatever the ref points at), depth, tags, TLS checks.
    pub spec: CloneSpec,
    /// Given to git when the server asks for credentials.
    pub credential: Option<GitCredential>,
}

#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error("cloning {url} failed: {message}")]
    Git { url: String, message: String },
    #[error("the clone was cancelled")]
    Cancelled,
}

const FETCHED: &str = "refs/remotes/origin/gantry";

/// Clones `clone` into `dir` (which must be empty or absent), calling `log` with progress.
pub fn clone_into(
    clone: &CloneSource,
    dir: &Path,
    cancelled: &Arc<AtomicBool>,
    log: &mut dyn FnMut(String),
) -> Result<(), CloneError> {
    let source = &clone.spec;
    let fail = |message: String| CloneError::Git {
        url: source.url.clone(),
        message,
    };
    let repo = Repository::init(dir).map_err(|e| {
        fail(format!(
            "creating a repository in {}: {}",
            dir.display(),
            e.message()
        ))
    })?;
    let mut remote = repo
        .remote_anonymous(&source.url)
        .map_err(|e| fail(e.message().to_owned()))?;
    let commit = source.commit.trim();
    let exact = !commit.is_empty() && commit.chars().any(|c| c != '0');
    let mut attempts: Vec<(String, Option<u32>)> = Vec::new();
    if exact {
        attempts.push((format!("+{commit}:{FETCHED}"), source.depth));
    }
    attempts.push((format!("+{}:{FETCHED}", source.reference), source.depth));
    if source.depth.is_some() {
        attempts.push((format!("+{}:{FETCHED}", source.reference), None));
    }
    let mut last_error = String::new();
    let mut fetched = false;
    // libgit2 replaces the host key check's message with its own; the check keeps it here.
    let host_key_refusal = gantry_git::HostKeyRefusal::default();
    for (refspec, depth) in &attempts {
        if cancelled.load(Ordering::Relaxed) {
            return Err(CloneError::Cancelled);
        }
        let mut options = fetch_options(clone, cancelled, &host_key_refusal);
        if let Some(depth) = depth {
            options.depth(i32::try_from(*depth).unwrap_or(i32::MAX));
        }
        options.download_tags(if source.tags {
            AutotagOption::All
        } else {
            AutotagOption::None
        });
        let shallow = depth.map_or_else(|| "full history".to_owned(), |d| format!("depth {d}"));
        log(format!("fetching {refspec} ({shallow})"));
        match remote.fetch(&[refspec.as_str()], Some(&mut options), None) {
            Ok(()) => {
                fetched = true;
                break;
            }
            Err(e) if cancelled.load(Ordering::Relaxed) => {
                let _ = e;
                return Err(CloneError::Cancelled);
            }
            Err(e) => {
                last_error = host_key_refusal
                    .take()
                    .unwrap_or_else(|| e.message().to_owned());
                log(format!("could not fetch {refspec}: {last_error}"));
            }
        }
    }
    if !fetched {
        return Err(fail(last_error));
    }
    let target = if exact {
        Oid::from_str(commit)
            .map_err(|e| fail(format!("`{commit}` is not a commit id: {}", e.message())))?
    } else {
        repo.refname_to_id(FETCHED)
            .map_err(|e| fail(e.message().to_owned()))?
    };
    let object = repo.find_commit(target).map_err(|_| {
        fail(format!(
            "commit {commit} is not on {} (was the branch force-pushed?)",
            source.reference
        ))
    })?;
    repo.checkout_tree(
        object.as_object(),
        Some(git2::build::CheckoutBuilder::new().force()),
    )
    .map_err(|e| fail(format!("checking out {target}: {}", e.message())))?;
    repo.set_head_detached(target)
        .map_err(|e| fail(e.message().to_owned()))?;
    let summary = object
        .summary()
        .ok()
        .flatten()
        .unwrap_or_default()
        .to_owned();
    log(format!("checked out {target} {summary}"));
    Ok(())
}

fn fetch_options<'a>(
    clone: &'a CloneSource,
    cancelled: &'a Arc<AtomicBool>,
    host_key_refusal: &gantry_git::HostKeyRefusal,
) -> FetchOptions<'a> {
    // An SSH host key is checked against the server's known hosts whatever the plan says
    // (`skip_verify` is about TLS); TLS follows `skip_verify`.
    let mut callbacks = gantry_git::remote_callbacks(
        clone.credential.as_ref(),
        clone.spec.skip_verify,
        host_key_refusal,
    );
    let cancelled = Arc::clone(cancelled);
    callbacks.transfer_progress(move |_| !cancelled.load(Ordering::Relaxed));
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks);
    options
}
