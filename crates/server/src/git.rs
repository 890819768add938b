//! The server's git: a bare cache per repository (`DATA_DIR/git/<id>.git`) into which the
//! commit of a build is fetched, and from which its pipeline file is read at that commit.
//! Blocking (git2); callers run it on the blocking pool. Fetches into one cache are
//! serialised; different repositories fetch in parallel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gantry_proto::GitCredential;
use git2::{FetchOptions, Oid, Repository};

/// Where gantry looks for a pipeline when the repository names none, in order.
pub const DEFAULT_CONFIG_PATHS: [&str; 5] = [
    ".gantry.yml",
    ".drone.yml",
    ".woodpecker.yml",
    ".woodpecker.yaml",
    ".woodpecker",
];

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("could not fetch {what} from {url}: {message}")]
    Fetch {
        what: String,
        url: String,
        message: String,
    },
    #[error("{0}")]
    NoConfig(String),
    #[error("the git cache at {path}: {message}")]
    Cache { path: PathBuf, message: String },
}

/// A commit's description, for manual builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: String,
    pub message: String,
    pub author: String,
    pub author_email: String,
}

/// What a build's changed files are measured between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeSpan {
    /// A push: `before..after`. Without `before` (a new branch) every file of `after`'s tree
    /// counts as changed.
    Push {
        before: Option<String>,
        after: String,
    },
    /// A pull request: from the merge base of its base branch and `head` to `head` (what
    /// GitHub shows as the pull request's files). `base` is the base branch's head when the
    /// event was sent; without it (or when it cannot be fetched) `base_branch` is fetched.
    PullRequest {
        base: Option<String>,
        base_branch: String,
        head: String,
    },
}

#[derive(Debug)]
pub struct GitCache {
    root: PathBuf,
    locks: Mutex<HashMap<i64, Arc<Mutex<()>>>>,
}

impl GitCache {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self, repo_id: i64) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(repo_id).or_default())
    }

    fn open(&self, repo_id: i64) -> Result<Repository, GitError> {
        let path = self.root.join(format!("{repo_id}.git"));
        let cache_error = |e: git2::Error| GitError::Cache {
            path: path.clone(),
            message: e.message().to_owned(),
        };
        match Repository::open_bare(&path) {
            Ok(repo) => Ok(repo),
            Err(_) => {
                std::fs::create_dir_all(&path).map_err(|e| GitError::Cache {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                Repository::init_bare(&path).map_err(cache_error)
            }
        }
    }

    /// Makes sure `commit` is in the cache: fetches it by sha, else fetches `reference`
    /// (a branch, tag or pull request ref) and checks the commit came with it.
    pub fn fetch(
        &self,
        repo_id: i64,
        url: &str,
        credential: Option<&GitCredential>,
        reference: &str,
        commit: &str,
    ) -> Result<(), GitError> {
        let lock = self.lock(repo_id);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        let repo = self.open(repo_id)?;
        let oid = Oid::from_str(commit).map_err(|e| GitError::Fetch {
            what: format!("commit {commit}"),
            url: url.to_owned(),
            message: e.message().to_owned(),
        })?;
        if repo.find_commit(oid).is_ok() {
            return Ok(());
        }
        let by_sha = format!("+{commit}:refs/gantry/commits/{commit}");
        let by_sha_result = fetch(&repo, url, credential, &by_sha);
        if by_sha_result.is_ok() && repo.find_commit(oid).is_ok() {
            return Ok(());
        }
        let mut message = by_sha_result.err().map(|e| e.message().to_owned());
        if !reference.is_empty() {
            let by_ref = format!("+{reference}:refs/gantry/refs/{}", ref_key(reference));
            match fetch(&repo, url, credential, &by_ref) {
                Ok(()) if repo.find_commit(oid).is_ok() => return Ok(()),
                Ok(()) => {
                    message = Some(format!(
                        "{reference} no longer points at {commit} (a newer push may have moved it)"
                    ))
                }
                Err(e) => message = Some(e.message().to_owned()),
            }
        }
        Err(GitError::Fetch {
            what: format!("commit {commit}"),
            url: url.to_owned(),
            message: message.unwrap_or_else(|| "the commit is not on the server".to_owned()),
        })
    }

    /// Fetches `branch` and describes its head commit.
    pub fn resolve_branch(
        &self,
        repo_id: i64,
        url: &str,
        credential: Option<&GitCredential>,
        branch: &str,
    ) -> Result<CommitInfo, GitError> {
        let lock = self.lock(repo_id);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        let repo = self.open(repo_id)?;
        let commit = have_branch(&repo, url, credential, branch)?;
        Ok(describe(&commit))
    }

    /// The files changed over `span`, sorted, each path once (a rename counts as its old
    /// and its new path). The span's last commit must be in the cache already; an earlier
    /// one is fetched when missing.
    pub fn changed_files(
        &self,
        repo_id: i64,
        url: &str,
        credential: Option<&GitCredential>,
        span: &ChangeSpan,
    ) -> Result<Vec<String>, GitError> {
        let lock = self.lock(repo_id);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        let repo = self.open(repo_id)?;
        let cache = |message: String| GitError::Cache {
            path: self.root.join(format!("{repo_id}.git")),
            message,
        };
        let commit = |sha: &str| {
            Oid::from_str(sha)
                .and_then(|oid| repo.find_commit(oid))
                .map_err(|e| cache(format!("commit {sha}: {}", e.message())))
        };
        let (from, to) = match span {
            ChangeSpan::Push {
                before: None,
                after,
            } => {
                return every_file(&commit(after)?).map_err(|e| cache(e.message().to_owned()));
            }
            ChangeSpan::Push {
                before: Some(before),
                after,
            } => {
                let before = have_commit(&repo, url, credential, before, None)?;
                (before, commit(after)?)
            }
            ChangeSpan::PullRequest {
                base,
                base_branch,
                head,
            } => {
                let head = commit(head)?;
                let base = match base {
                    Some(sha) => {
                        have_commit(&repo, url, credential, sha, Some(base_branch.as_str()))
                    }
                    None => have_branch(&repo, url, credential, base_branch),
                }?;
                // Without a common ancestor (unrelated histories), the base itself.
                let from = repo
                    .merge_base(base.id(), head.id())
                    .and_then(|oid| repo.find_commit(oid))
                    .unwrap_or(base);
                (from, head)
            }
        };
        let (old, new) = from
            .tree()
            .and_then(|old| Ok((old, to.tree()?)))
            .map_err(|e| cache(e.message().to_owned()))?;
        let diff = repo
            .diff_tree_to_tree(Some(&old), Some(&new), None)
            .map_err(|e| cache(e.message().to_owned()))?;
        let mut files: Vec<String> = diff
            .deltas()
            .flat_map(|delta| [delta.old_file().path(), delta.new_file().path()])
            .flatten()
            .map(|path| path.to_string_lossy().into_owned())
            .collect();
        files.sort();
        files.dedup();
        Ok(files)
    }

    /// Describes a commit already in the cache.
    pub fn describe(&self, repo_id: i64, commit: &str) -> Result<CommitInfo, GitError> {
        let repo = self.open(repo_id)?;
        let found = Oid::from_str(commit)
            .and_then(|oid| repo.find_commit(oid))
            .map_err(|e| GitError::Cache {
                path: self.root.join(format!("{repo_id}.git")),
                message: format!("commit {commit}: {}", e.message()),
            })?;
        Ok(describe(&found))
    }

    /// The pipeline file(s) at `commit`: `config_path` if set (a file, or a folder of
    /// `.yml`/`.yaml` files), else the first of [`DEFAULT_CONFIG_PATHS`] that exists. Returns
    /// (path, text) pairs.
    pub fn read_config(
        &self,
        repo_id: i64,
        commit: &str,
        config_path: &str,
    ) -> Result<Vec<(String, String)>, GitError> {
        let repo = self.open(repo_id)?;
        let cache = |message: String| GitError::Cache {
            path: self.root.join(format!("{repo_id}.git")),
            message,
        };
        let tree = Oid::from_str(commit)
            .and_then(|oid| repo.find_commit(oid))
            .and_then(|c| c.tree())
            .map_err(|e| cache(format!("commit {commit}: {}", e.message())))?;
        let candidates: Vec<&str> = if config_path.is_empty() {
            DEFAULT_CONFIG_PATHS.to_vec()
        } else {
            vec![config_path.trim_end_matches('/')]
        };
        for candidate in &candidates {
            let Ok(entry) = tree.get_path(Path::new(candidate)) else {
                continue;
            };
            let object = entry
                .to_object(&repo)
                .map_err(|e| cache(e.message().to_owned()))?;
            if let Some(blob) = object.as_blob() {
                return Ok(vec![(
                    candidate.to_string(),
                    text(candidate, blob.content())?,
                )]);
            }
            if let Some(folder) = object.as_tree() {
                let mut files = Vec::new();
                for item in folder.iter() {
                    let Ok(name) = item.name() else { continue };
                    if !(name.ends_with(".yml") || name.ends_with(".yaml")) {
                        continue;
                    }
                    let path = format!("{candidate}/{name}");
                    if let Ok(object) = item.to_object(&repo)
                        && let Some(blob) = object.as_blob()
                    {
                        files.push((path.clone(), text(&path, blob.content())?));
                    }
                }
                files.sort();
                if !files.is_empty() {
                    return Ok(files);
                }
            }
        }
        Err(GitError::NoConfig(format!(
            "no pipeline file at commit {}: looked for {}; add one, or set the repository's config path",
            &commit[..commit.len().min(12)],
            candidates.join(", ")
        )))
    }
}

/// `sha` from the cache, fetched first when missing: by itself, else with `branch`.
fn have_commit<'r>(
    repo: &'r Repository,
    url: &str,
    credential: Option<&GitCredential>,
    sha: &str,
    branch: Option<&str>,
) -> Result<git2::Commit<'r>, GitError> {
    let failed = |message: String| GitError::Fetch {
        what: format!("commit {sha}"),
        url: url.to_owned(),
        message,
    };
    let oid = Oid::from_str(sha).map_err(|e| failed(e.message().to_owned()))?;
    if let Ok(found) = repo.find_commit(oid) {
        return Ok(found);
    }
    let by_sha = fetch(
        repo,
        url,
        credential,
        &format!("+{sha}:refs/gantry/commits/{sha}"),
    );
    if let Ok(found) = repo.find_commit(oid) {
        return Ok(found);
    }
    // The commit may be gone from the server (a force push moved the branch on): the
    // branch's current head serves as well for a pull request's base.
    match (branch, by_sha) {
        (Some(branch), _) => have_branch(repo, url, credential, branch),
        (None, Err(e)) => Err(failed(e.message().to_owned())),
        (None, Ok(())) => Err(failed("the commit is not on the server".to_owned())),
    }
}

/// The head of `branch`, freshly fetched.
fn have_branch<'r>(
    repo: &'r Repository,
    url: &str,
    credential: Option<&GitCredential>,
    branch: &str,
) -> Result<git2::Commit<'r>, GitError> {
    let local = format!(
        "refs/gantry/refs/{}",
        ref_key(&format!("refs/heads/{branch}"))
    );
    fetch(
        repo,
        url,
        credential,
        &format!("+refs/heads/{branch}:{local}"),
    )
    .and_then(|()| repo.find_reference(&local)?.peel_to_commit())
    .map_err(|e| GitError::Fetch {
        what: format!("branch {branch}"),
        url: url.to_owned(),
        message: e.message().to_owned(),
    })
}

/// Every file of a commit's tree: what a new branch changes.
fn every_file(commit: &git2::Commit<'_>) -> Result<Vec<String>, git2::Error> {
    let mut files = Vec::new();
    commit
        .tree()?
        .walk(git2::TreeWalkMode::PreOrder, |folder, entry| {
            if entry.kind() != Some(git2::ObjectType::Tree)
                && let Ok(name) = entry.name()
            {
                files.push(format!("{folder}{name}"));
            }
            git2::TreeWalkResult::Ok
        })?;
    files.sort();
    Ok(files)
}

fn text(path: &str, bytes: &[u8]) -> Result<String, GitError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|e| GitError::NoConfig(format!("{path}: the file is not UTF-8 text ({e})")))
}

fn describe(commit: &git2::Commit<'_>) -> CommitInfo {
    let author = commit.author();
    CommitInfo {
        sha: commit.id().to_string(),
        message: commit.message().unwrap_or("").to_owned(),
        author: author.name().unwrap_or("").to_owned(),
        author_email: author.email().unwrap_or("").to_owned(),
    }
}

/// A ref name made safe to nest under `refs/gantry/refs/`.
fn ref_key(reference: &str) -> String {
    reference
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '/' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn fetch(
    repo: &Repository,
    url: &str,
    credential: Option<&GitCredential>,
    refspec: &str,
) -> Result<(), git2::Error> {
    let mut remote = repo.remote_anonymous(url)?;
    let mut options = FetchOptions::new();
    options.download_tags(git2::AutotagOption::None);
    // libgit2 replaces the host key check's message with its own; the check keeps it here.
    let host_key_refusal = gantry_git::HostKeyRefusal::default();
    options.remote_callbacks(gantry_git::remote_callbacks(
        credential,
        false,
        &host_key_refusal,
    ));
    remote
        .fetch(&[refspec], Some(&mut options), None)
        .map_err(|e| match host_key_refusal.take() {
            Some(message) => git2::Error::from_str(&message),
            None => e,
        })
}

/// What to do about a failed fetch, from git's message: the credential that was used
/// (described, never its value) and how to fix it.
pub fn fetch_hint(message: &str, used: &str, repo: &str, ssh: bool) -> String {
    let lower = message.to_ascii_lowercase();
    if ssh && let Some(hint) = ssh_hint(&lower, used, repo) {
        return hint;
    }
    let set_token = format!(
        "set a token with read access to it: `gantry repo update {repo} --github-token TOKEN` (or the repository's settings page), or the server's GANTRY_GITHUB_TOKEN"
    );
    if lower.contains("authentication required") || lower.contains("status code: 401") {
        if used.starts_with("no credential") {
            format!(
                "the git server wants credentials and {used} was used: the repository is private? {set_token}"
            )
        } else {
            format!("{used} was refused (401): it may be expired or revoked; {set_token}")
        }
    } else if lower.contains("authentication failed")
        || lower.contains("status code: 403")
        || lower.contains("too many redirects or authentication replays")
    {
        format!(
            "{used} was refused: check that it is valid and has read access (GitHub: the `repo` scope, or Contents: read); {set_token}"
        )
    } else if lower.contains("status code: 404") || lower.contains("not found") {
        format!(
            "the git server answered 404 with {used}: check the clone URL (`gantry repo update {repo} --clone-url URL`); GitHub answers 404 for a private repository the credential cannot read, so also {set_token}"
        )
    } else if lower.contains("resolve") || lower.contains("name or service") {
        "the git server's host name could not be resolved: check the clone URL and the server's DNS"
            .to_owned()
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "the git server did not answer in time: check that it is reachable from the gantry server"
            .to_owned()
    } else {
        format!("{used} was used")
    }
}

/// The fix for an SSH fetch that was refused (other failures share the HTTP hints).
fn ssh_hint(lower: &str, used: &str, repo: &str) -> Option<String> {
    let set_key = format!(
        "give gantry the private half of a deploy key: `gantry repo update {repo} --ssh-key-file KEY`, and add its public half to the repository's deploy keys on GitHub (read access is enough)"
    );
    if lower.contains("ssh host key") {
        // The message says it all: which host, and the known-hosts fix.
        return Some(format!("{used} was not offered: the host was not trusted"));
    }
    let refused = [
        "authenticat",
        "publickey",
        "refused the credential",
        "permission denied",
    ];
    if !refused.iter().any(|word| lower.contains(word)) {
        return None;
    }
    Some(if used.starts_with("no credential") {
        format!("the git server wants a key and {used} was used; {set_key}")
    } else {
        format!(
            "{used} was refused: is its public half one of the repository's deploy keys? {set_key}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ssh_fetch_hint_names_the_deploy_key() {
        let anonymous = fetch_hint(
            "failed to authenticate SSH session: callback returned unsupported credentials type",
            "no credential (anonymous)",
            "acme/app",
            true,
        );
        assert!(anonymous.contains("--ssh-key-file"), "{anonymous}");
        let refused = fetch_hint(
            "authentication failed: the server refused the credential",
            "the SSH deploy key of acme/app",
            "acme/app",
            true,
        );
        assert!(
            refused.contains("the SSH deploy key of acme/app was refused")
                && refused.contains("deploy keys"),
            "{refused}"
        );
        assert!(
            fetch_hint(
                "failed to resolve address for git.invalid",
                "x",
                "a/b",
                true
            )
            .contains("resolved")
        );
    }

    #[test]
    fn a_fetch_hint_names_the_credential_and_the_fix() {
        let anonymous = fetch_hint(
            "remote authentication required but no callback set",
            "no credential (anonymous)",
            "acme/app",
            false,
        );
        assert!(
            anonymous.contains("private") && anonymous.contains("--github-token"),
            "{anonymous}"
        );
        let refused = fetch_hint(
            "authentication failed: the server refused the credential",
            "the GitHub token of acme/app",
            "acme/app",
            false,
        );
        assert!(
            refused.contains("the GitHub token of acme/app was refused"),
            "{refused}"
        );
        assert!(
            fetch_hint("unexpected http status code: 404", "x", "acme/app", false)
                .contains("--clone-url")
        );
        assert!(
            fetch_hint(
                "failed to resolve address for nowhere.invalid",
                "x",
                "a/b",
                false
            )
            .contains("resolved")
        );
    }
}
