//! Which git credential the server uses for a repository, for its own fetches and for the
//! runner's clone. For an HTTP(S) clone URL: the repository's own GitHub token (`gantry repo
//! add|update --github-token`, the API, the settings page), else the server's
//! (`--github-token`), else none; a token is HTTP basic auth, user `x-access-token`, as
//! GitHub takes personal and app installation tokens. For an SSH clone URL (`ssh://`,
//! `git@host:`): the repository's deploy key (`--ssh-key-file`), with the host keys the
//! server trusts. A value lives only in the sealed repository row and in the assignment of
//! a stage; messages name where it came from, never what it is.

use gantry_proto::{GitCredential, Netrc};
use gantry_store::Repo;

use crate::AppState;

/// Where a credential came from, for messages that say how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Repository,
    Server,
    DeployKey,
    None,
}

impl CredentialSource {
    pub fn describe(self, repo: &Repo) -> String {
        match self {
            CredentialSource::DeployKey => format!("the SSH deploy key of {}", repo.full_name()),
            CredentialSource::Repository => format!(
                "the GitHub token of {} (as HTTP user `x-access-token`)",
                repo.full_name()
            ),
            CredentialSource::Server => {
                "the server's GitHub token (GANTRY_GITHUB_TOKEN, as HTTP user `x-access-token`)"
                    .to_owned()
            }
            CredentialSource::None => "no credential (anonymous)".to_owned(),
        }
    }
}

/// A repository's credential and where it came from.
#[derive(Debug, Clone)]
pub struct RepoCredential {
    pub credential: Option<GitCredential>,
    pub source: CredentialSource,
}

/// The token GitHub calls (commit statuses) and git fetches use for `repo`.
pub fn github_token(state: &AppState, repo: &Repo) -> (Option<String>, CredentialSource) {
    if repo.github_token.is_empty() {
        return match &state.config.github_token {
            Some(token) => (Some(token.clone()), CredentialSource::Server),
            None => (None, CredentialSource::None),
        };
    }
    match crate::secrets::open_field(
        &state.config.secret_key,
        &repo.owner,
        &repo.name,
        "github_token",
        &repo.github_token,
    ) {
        Ok(token) => (Some(token), CredentialSource::Repository),
        Err(e) => {
            tracing::error!(repo = %repo.full_name(), error = %e, "the repository's GitHub token cannot be opened");
            (None, CredentialSource::None)
        }
    }
}

/// The credential for `repo`'s clone URL: its deploy key for SSH, a token for HTTP(S).
pub fn for_repo(state: &AppState, repo: &Repo) -> RepoCredential {
    if gantry_proto::ssh::is_ssh_url(&repo.clone_url) {
        return ssh_credential(state, repo);
    }
    let (token, source) = github_token(state, repo);
    RepoCredential {
        credential: token.map(|password| GitCredential::Basic {
            username: "x-access-token".to_owned(),
            password,
        }),
        source,
    }
}

fn ssh_credential(state: &AppState, repo: &Repo) -> RepoCredential {
    let none = RepoCredential {
        credential: None,
        source: CredentialSource::None,
    };
    if repo.ssh_key.is_empty() {
        return none;
    }
    match crate::secrets::open_field(
        &state.config.secret_key,
        &repo.owner,
        &repo.name,
        "ssh_key",
        &repo.ssh_key,
    ) {
        Ok(private_key) => RepoCredential {
            credential: Some(GitCredential::SshKey {
                username: gantry_proto::ssh::ssh_user(&repo.clone_url),
                private_key,
                known_hosts: state.config.ssh_known_hosts.clone(),
            }),
            source: CredentialSource::DeployKey,
        },
        Err(e) => {
            tracing::error!(repo = %repo.full_name(), error = %e, "the repository's SSH deploy key cannot be opened");
            none
        }
    }
}

/// The `.netrc` steps get: the host of an HTTP clone URL with the repository's token, as
/// Drone's runners give it. None for SSH URLs or without a token.
pub fn netrc(clone_url: &str, credential: Option<&GitCredential>) -> Option<Netrc> {
    let Some(GitCredential::Basic { username, password }) = credential else {
        return None;
    };
    let rest = clone_url
        .strip_prefix("https://")
        .or_else(|| clone_url.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?;
    let machine = host.split(':').next()?.to_owned();
    (!machine.is_empty()).then(|| Netrc {
        machine,
        username: username.clone(),
        password: password.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> GitCredential {
        GitCredential::Basic {
            username: "x-access-token".into(),
            password: "ghs_abc".into(),
        }
    }

    #[test]
    fn the_netrc_machine_is_the_clone_urls_host() {
        let https = netrc_of("https://github.com/acme/app.git").expect("https");
        assert_eq!(https.machine, "github.com");
        assert_eq!(https.username, "x-access-token");
        assert_eq!(https.password, "ghs_abc");
        let with_port = netrc_of("http://git.local:8080/acme/app.git");
        assert_eq!(with_port.expect("http with a port").machine, "git.local");
        assert!(netrc_of("git@github.com:acme/app.git").is_none());
        assert!(netrc("https://github.com/acme/app.git", None).is_none());
    }

    fn netrc_of(url: &str) -> Option<Netrc> {
        netrc(url, Some(&token()))
    }

    #[test]
    fn a_credential_never_shows_its_value() {
        let shown = format!("{:?} {}", token(), token().describe());
        assert!(!shown.contains("ghs_abc"), "{shown}");
        let netrc = netrc_of("https://github.com/a/b").expect("https");
        assert!(!format!("{netrc:?}").contains("ghs_abc"));
    }
}
