//! GitHub webhook payloads, parsed at the edge into a [`Hook`]: what gantry needs from a
//! delivery, typed, or a [`PayloadError`] naming the missing or wrong field. The signature
//! check (`verify_signature`) runs on the raw body before anything here is trusted.

use hmac::Mac;
use serde::{Deserialize, Serialize};

use gantry_pipeline::Event;

/// GitHub's cap on a delivery's body.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the repository has no webhook secret, so no delivery can be verified: set one in gantry (`gantry repo update`) and the same in the GitHub webhook's settings"
    )]
    NoSecret,
    #[error(
        "X-Hub-Signature-256 is missing (only the SHA-1 X-Hub-Signature was sent, which gantry does not accept): set a secret in the GitHub webhook's settings"
    )]
    OnlySha1,
    #[error(
        "X-Hub-Signature-256 is missing: set a secret in the GitHub webhook's settings, the same as the repository's in gantry"
    )]
    Missing,
    #[error("X-Hub-Signature-256 is malformed: expected `sha256=` and 64 hex digits")]
    Malformed,
    #[error(
        "X-Hub-Signature-256 does not match the body: the webhook's secret in GitHub differs from the repository's in gantry"
    )]
    Mismatch,
}

/// Checks `X-Hub-Signature-256` (`sha256=<hex of HMAC-SHA256(secret, body)>`) in constant
/// time. `sha1_header` says whether the old `X-Hub-Signature` header was present, to say so.
pub fn verify_signature(
    secret: &str,
    body: &[u8],
    header: Option<&str>,
    sha1_header: bool,
) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let header = match header {
        Some(h) => h,
        None if sha1_header => return Err(SignatureError::OnlySha1),
        None => return Err(SignatureError::Missing),
    };
    let hex_part = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_part).map_err(|_| SignatureError::Malformed)?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    crate::auth::hmac_sha256(secret, body)
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// `sha256=<hex>` for a body, as GitHub computes it (for tests and the CLI).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mac = crate::auth::hmac_sha256(secret, body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A payload that is not what its event promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {event} payload: {detail}")]
pub struct PayloadError {
    pub event: String,
    pub detail: String,
}

fn parse<'a, T: Deserialize<'a>>(event: &str, body: &'a [u8]) -> Result<T, PayloadError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        PayloadError {
            event: event.to_owned(),
            detail: if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            },
        }
    })
}

/// The one field read before the signature is checked: which repository's secret to check
/// it with. Nothing else of an unverified body is used.
pub fn repository_of(event: &str, body: &[u8]) -> Result<String, PayloadError> {
    #[derive(Deserialize)]
    struct Probe {
        repository: Option<Named>,
    }
    let probe: Probe = parse(event, body)?;
    probe.repository.map(|r| r.full_name).ok_or_else(|| PayloadError {
        event: event.to_owned(),
        detail: "repository.full_name: missing field `repository` (organization-wide webhooks are not supported: add the webhook to the repository)".to_owned(),
    })
}

#[derive(Debug, Deserialize)]
struct Named {
    full_name: String,
}

/// Whether a (verified) payload says its repository is private: `repository.private`.
pub fn says_private(body: &[u8]) -> Option<bool> {
    #[derive(Deserialize)]
    struct Probe {
        repository: Option<Flag>,
    }
    #[derive(Deserialize)]
    struct Flag {
        private: Option<bool>,
    }
    serde_json::from_slice::<Probe>(body)
        .ok()?
        .repository?
        .private
}

#[derive(Debug, Deserialize)]
struct User {
    login: String,
}

#[derive(Debug, Deserialize)]
struct Person {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    username: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Commit {
    id: String,
    #[serde(default)]
    message: String,
    author: Person,
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    reference: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    head_commit: Option<Commit>,
    #[serde(default)]
    commits: Vec<Commit>,
    sender: User,
}

#[derive(Debug, Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    reference: String,
    sha: String,
    repo: Option<Named>,
}

#[derive(Debug, Deserialize)]
struct Label {
    name: String,
}

#[derive(Debug, Deserialize)]
struct PullRequest {
    number: u64,
    #[serde(default)]
    title: String,
    head: Branch,
    base: Branch,
    user: User,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Debug, Deserialize)]
struct PullRequestEvent {
    action: String,
    pull_request: PullRequest,
    repository: Named,
    sender: User,
}

/// What a delivery asks of gantry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    Ping,
    /// May create a build.
    Trigger(Box<Trigger>),
    /// Deliberately does nothing, for this reason.
    Ignored(String),
}

/// The parts of a push or pull request that a build needs. Stored with a pending delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    pub event: Event,
    pub action: Option<String>,
    /// The ref to fetch and clone: `refs/heads/B`, `refs/tags/T`, `refs/pull/N/head`. Empty
    /// for a deleted branch or tag (the build uses the default branch's head).
    pub reference: String,
    pub branch: String,
    pub tag: Option<String>,
    /// Empty for a deletion.
    pub commit: String,
    pub before: Option<String>,
    pub message: String,
    pub author: String,
    pub author_email: String,
    pub sender: String,
    pub pull_request: Option<u64>,
    pub pull_request_title: Option<String>,
    pub pull_request_labels: Vec<String>,
    pub target_branch: Option<String>,
    /// The head of a pull request's base branch when the event was sent: with the head,
    /// it gives the pull request's changed files.
    #[serde(default)]
    pub base_commit: Option<String>,
    /// The pull request comes from another repository.
    pub fork: bool,
    /// The files GitHub lists in a push's commits: the changed files when the commit
    /// before the push cannot be fetched.
    pub changed_files: Vec<String>,
}

impl Trigger {
    /// Why the commit asks for no build (`[ci skip]`, `[skip ci]` in its message, or in a
    /// pull request's title).
    pub fn skip_reason(&self) -> Option<String> {
        let text = format!(
            "{}\n{}",
            self.message,
            self.pull_request_title.as_deref().unwrap_or("")
        )
        .to_lowercase();
        ["[ci skip]", "[skip ci]"]
            .into_iter()
            .find(|marker| text.contains(marker))
            .map(|marker| format!("{marker} in the commit message: no build"))
    }
}

/// Parses a (verified) delivery of `event`.
pub fn parse_hook(event: &str, body: &[u8]) -> Result<Hook, PayloadError> {
    match event {
        "ping" => Ok(Hook::Ping),
        "push" => parse_push(parse(event, body)?).map(|t| Hook::Trigger(Box::new(t))),
        "pull_request" => {
            let pr: PullRequestEvent = parse(event, body)?;
            Ok(match pr.action.as_str() {
                "opened" | "synchronize" | "reopened" | "closed" => {
                    Hook::Trigger(Box::new(pull_request(pr)))
                }
                other => Hook::Ignored(format!(
                    "pull_request action `{other}` does not start builds (only opened, synchronize, reopened and closed do)"
                )),
            })
        }
        other => Ok(Hook::Ignored(format!(
            "the `{other}` event does not start builds: gantry builds push, pull_request and ping deliveries (branch and tag deletions arrive as pushes)"
        ))),
    }
}

fn parse_push(push: Push) -> Result<Trigger, PayloadError> {
    let bad = |detail: &str| PayloadError {
        event: "push".to_owned(),
        detail: detail.to_owned(),
    };
    let (branch, tag) = if let Some(branch) = push.reference.strip_prefix("refs/heads/") {
        (branch.to_owned(), None)
    } else if let Some(tag) = push.reference.strip_prefix("refs/tags/") {
        (String::new(), Some(tag.to_owned()))
    } else {
        return Err(bad(&format!(
            "ref: `{}` is neither refs/heads/... nor refs/tags/...",
            push.reference
        )));
    };
    let is_sha = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if push.deleted {
        return Ok(Trigger {
            event: Event::Delete,
            action: None,
            reference: String::new(),
            branch: tag.clone().unwrap_or(branch),
            tag,
            commit: String::new(),
            before: is_sha(&push.before).then(|| push.before.clone()),
            message: String::new(),
            author: push.sender.login.clone(),
            author_email: String::new(),
            sender: push.sender.login,
            pull_request: None,
            pull_request_title: None,
            pull_request_labels: Vec::new(),
            target_branch: None,
            base_commit: None,
            fork: false,
            changed_files: Vec::new(),
        });
    }
    if !is_sha(&push.after) || push.after == ZERO_SHA {
        return Err(bad(&format!("after: `{}` is not a commit sha", push.after)));
    }
    let mut changed: Vec<String> = push
        .commits
        .iter()
        .flat_map(|c| c.added.iter().chain(&c.removed).chain(&c.modified))
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();
    let head = push.head_commit.as_ref();
    let author = head
        .map(|c| {
            c.author
                .username
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| c.author.name.clone())
        })
        .unwrap_or_else(|| push.sender.login.clone());
    Ok(Trigger {
        event: if tag.is_some() {
            Event::Tag
        } else {
            Event::Push
        },
        action: None,
        reference: push.reference.clone(),
        branch,
        tag,
        commit: head.map(|c| c.id.clone()).unwrap_or(push.after),
        before: (is_sha(&push.before) && push.before != ZERO_SHA).then_some(push.before),
        message: head.map(|c| c.message.clone()).unwrap_or_default(),
        author,
        author_email: head.map(|c| c.author.email.clone()).unwrap_or_default(),
        sender: push.sender.login,
        pull_request: None,
        pull_request_title: None,
        pull_request_labels: Vec::new(),
        target_branch: None,
        base_commit: None,
        fork: false,
        changed_files: changed,
    })
}

fn pull_request(event: PullRequestEvent) -> Trigger {
    let pr = event.pull_request;
    let fork = pr
        .head
        .repo
        .as_ref()
        .is_none_or(|r| r.full_name != event.repository.full_name);
    Trigger {
        event: Event::PullRequest,
        action: Some(event.action),
        reference: format!("refs/pull/{}/head", pr.number),
        branch: pr.head.reference,
        tag: None,
        commit: pr.head.sha,
        before: None,
        message: pr.title.clone(),
        author: pr.user.login,
        author_email: String::new(),
        sender: event.sender.login,
        pull_request: Some(pr.number),
        pull_request_title: Some(pr.title),
        pull_request_labels: pr.labels.into_iter().map(|l| l.name).collect(),
        target_branch: Some(pr.base.reference),
        base_commit: Some(pr.base.sha).filter(|sha| !sha.is_empty()),
        fork,
        changed_files: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in GitHub's documentation, "Validating webhook deliveries".
    #[test]
    fn github_documentation_known_answer() {
        let secret = "It's a Secret to Everybody";
        let body = b"Hello, World!";
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, body), expected);
        assert_eq!(
            verify_signature(secret, body, Some(expected), false),
            Ok(())
        );
    }

    #[test]
    fn refused_signatures_say_why() {
        let body = b"{}";
        let good = sign("s", body);
        assert_eq!(
            verify_signature("", body, Some(&good), false),
            Err(SignatureError::NoSecret)
        );
        assert_eq!(
            verify_signature("s", body, None, true),
            Err(SignatureError::OnlySha1)
        );
        assert_eq!(
            verify_signature("s", body, None, false),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature("s", body, Some("sha1=abc"), false),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature("s", body, Some("sha256=zz"), false),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature("other", body, Some(&good), false),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature("s", b"{ }", Some(&good), false),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn payload_errors_name_the_field() {
        let err = parse_hook(
            "push",
            br#"{"ref": "refs/heads/main", "before": "x", "sender": {"login": "a"}}"#,
        )
        .expect_err("after is missing");
        assert!(err.to_string().contains("after"), "{err}");
        let err = parse_hook(
            "pull_request",
            br#"{"action": "opened", "pull_request": {"number": "seven"}}"#,
        )
        .expect_err("number is a string");
        assert!(err.to_string().contains("pull_request.number"), "{err}");
        let err = repository_of("push", b"not json").expect_err("not JSON");
        assert!(err.to_string().contains("malformed push payload"), "{err}");
    }

    #[test]
    fn skip_markers_are_found_in_any_case() {
        let mut trigger = Trigger {
            event: Event::Push,
            action: None,
            reference: "refs/heads/main".into(),
            branch: "main".into(),
            tag: None,
            commit: "a".repeat(40),
            before: None,
            message: "Fix docs [CI SKIP]".into(),
            author: String::new(),
            author_email: String::new(),
            sender: String::new(),
            pull_request: None,
            pull_request_title: None,
            pull_request_labels: vec![],
            target_branch: None,
            base_commit: None,
            fork: false,
            changed_files: vec![],
        };
        assert!(trigger.skip_reason().is_some());
        trigger.message = "skip ci please".into();
        assert!(trigger.skip_reason().is_none());
    }
}
