//! Fills a folder with a repository at an exact commit, with git2. The folder is then copied
//! into the workspace by the backend, like any other source.
//!
//! Fetches the commit itself when the server allows it (GitHub does, also shallow), else the
//! ref it was announced on (`refs/heads/main`, `refs/tags/v1`, `refs/pull/7/head`), and checks
//! the commit out detached. A token or an SSH deploy key goes through git's credential
//! callback, never into a URL that could be stored or logged; an SSH server's host key must be
//! one the server's known hosts trust.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use gantry_pipeline::plan::CloneSpec;
use gantry_proto::GitCredential;
use git2::{AutotagOption, Cred, FetchOptions, Oid, RemoteCallbacks, Repository};

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
    let host_key_refusal: Arc<Mutex<Option<String>>> = Arc::default();
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
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
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
    host_key_refusal: &Arc<Mutex<Option<String>>>,
) -> FetchOptions<'a> {
    let source = &clone.spec;
    let mut callbacks = RemoteCallbacks::new();
    if let Some(credential) = &clone.credential {
        callbacks.credentials(credentials(credential));
    }
    let known_hosts = match &clone.credential {
        Some(GitCredential::SshKey { known_hosts, .. }) => Some(known_hosts.as_str()),
        _ => None,
    };
    let skip_verify = source.skip_verify;
    let refusal = Arc::clone(host_key_refusal);
    callbacks.certificate_check(move |cert, host| {
        // An SSH host key is checked against the server's known hosts whatever the plan
        // says (`skip_verify` is about TLS); TLS follows `skip_verify`.
        match (cert.as_hostkey().and_then(|k| k.hostkey()), known_hosts) {
            (Some(key), Some(known)) => gantry_proto::ssh::check_host_key(known, host, key)
                .map(|()| git2::CertificateCheckStatus::CertificateOk)
                .map_err(|e| {
                    let message = e.to_string();
                    *refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
                    git2::Error::from_str(&message)
                }),
            (None, _) if skip_verify => Ok(git2::CertificateCheckStatus::CertificateOk),
            _ => Ok(git2::CertificateCheckStatus::CertificatePassthrough),
        }
    });
    let cancelled = Arc::clone(cancelled);
    callbacks.transfer_progress(move |_| !cancelled.load(Ordering::Relaxed));
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks);
    options
}

/// git's credential callback for `credential`. It answers once: a server that refuses the
/// credential and asks again gets an error, not the same credential in a loop.
fn credentials(
    credential: &GitCredential,
) -> impl FnMut(&str, Option<&str>, git2::CredentialType) -> Result<Cred, git2::Error> + '_ {
    let mut asked = false;
    move |_url, _user, allowed| {
        // Naming the SSH user is not an attempt: the key comes next.
        if let GitCredential::SshKey { username, .. } = credential
            && allowed == git2::CredentialType::USERNAME
        {
            return Cred::username(username);
        }
        if std::mem::replace(&mut asked, true) {
            return Err(git2::Error::from_str(&format!(
                "the server refused {}",
                credential.describe()
            )));
        }
        match credential {
            GitCredential::Basic { username, password }
                if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) =>
            {
                Cred::userpass_plaintext(username, password)
            }
            GitCredential::SshKey {
                username,
                private_key,
                ..
            } if allowed.contains(git2::CredentialType::SSH_KEY) => {
                Cred::ssh_key_from_memory(username, None, private_key, None)
            }
            other => Err(git2::Error::from_str(&format!(
                "the server asks for credentials of another kind than {}",
                other.describe()
            ))),
        }
    }
}
