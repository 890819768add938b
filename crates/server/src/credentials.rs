//! Which git credential the server uses for a repository, for its own fetches and for the
//! runner's clone, and which token steps get. For an HTTP(S) clone URL: the repository's own
//! GitHub token (`gantry repo add|update --github-token`, the API, the settings page), else
//! the server's (`--github-token`) but only when the clone URL is on the GitHub it belongs
//! to (`--github-url`: same scheme, host and port), else none; a token is HTTP basic auth,
//! user `x-access-token`, as GitHub takes personal and app installation tokens. For an SSH
//! clone URL (`ssh://`, `git@host:`): the repository's deploy key (`--ssh-key-file`), with
//! the host keys the server trusts.
//!
//! A stage's steps (`.netrc`, `DRONE_NETRC_*`) get a token scoped to their repository: a
//! GitHub App installation token minted for the stage (`--github-app-id`), else the
//! repository's own token, else none; **never** the server's personal token, which reads
//! every repository it can. A value lives only in the sealed repository row and in the
//! assignment of a stage; messages name where it came from, never what it is.

use gantry_proto::{GitCredential, Netrc};
use gantry_store::Repo;

use crate::AppState;

/// Where a credential came from, for messages that say how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Repository,
    Server,
    /// A GitHub App installation token for this repository alone.
    App,
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
            CredentialSource::App => format!(
                "a GitHub App installation token for {} (as HTTP user `x-access-token`)",
                repo.full_name()
            ),
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

/// The token GitHub API calls (commit statuses, sent to `--github-api-url` only) use for
/// `repo`.
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

/// The credential for `repo`'s clone URL: its deploy key for SSH, a token for HTTP(S) (the
/// server's only for a clone URL on its GitHub).
pub fn for_repo(state: &AppState, repo: &Repo) -> RepoCredential {
    if gantry_proto::ssh::is_ssh_url(&repo.clone_url) {
        return ssh_credential(state, repo);
    }
    let (mut token, mut source) = github_token(state, repo);
    if source == CredentialSource::Server && !same_origin(&state.config.github_url, &repo.clone_url)
    {
        (token, source) = (None, CredentialSource::None);
    }
    basic(token, source)
}

fn basic(token: Option<String>, source: CredentialSource) -> RepoCredential {
    RepoCredential {
        credential: token.map(|password| GitCredential::Basic {
            username: "x-access-token".to_owned(),
            password,
        }),
        source,
    }
}

/// What a stage gets: the credential its clone uses and the `.netrc` its steps see. With a
/// GitHub App, a token minted now for this repository alone (both); else the clone uses
/// [`for_repo`] and the steps only a token of the repository's own. Steps of a fork's pull
/// request get none (as they get no secrets); the clone itself runs outside every step.
pub async fn for_stage(
    state: &AppState,
    repo: &Repo,
    fork: bool,
) -> (RepoCredential, Option<Netrc>) {
    let mut credential = for_repo(state, repo);
    if let Some(app) = &state.config.github_app
        && !gantry_proto::ssh::is_ssh_url(&repo.clone_url)
        && same_origin(&state.config.github_url, &repo.clone_url)
    {
        match app
            .repository_token(&state.github, &repo.owner, &repo.name)
            .await
        {
            Ok(minted) => credential = basic(Some(minted.token), CredentialSource::App),
            Err(e) => {
                tracing::warn!(repo = %repo.full_name(), error = %e, "minting a GitHub App token failed; steps get no token");
            }
        }
    }
    let for_steps = matches!(
        credential.source,
        CredentialSource::App | CredentialSource::Repository
    ) && !fork;
    let netrc = if for_steps {
        netrc(&repo.clone_url, credential.credential.as_ref())
    } else {
        None
    };
    (credential, netrc)
}

fn token_binding(stage: i64) -> String {
    format!("stage:{stage}/scoped_token")
}

/// Keeps a minted token, sealed, with the stage's lease: whichever server sees the stage end
/// revokes it.
pub async fn keep_for_revocation(
    state: &AppState,
    stage: i64,
    epoch: i64,
    token: &str,
) -> Result<(), gantry_store::StoreError> {
    let sealed = hex::encode(
        state
            .config
            .secret_key
            .seal(&token_binding(stage), token.as_bytes()),
    );
    state.store.set_stage_token(stage, epoch, &sealed).await
}

/// Revokes the token minted for `stage`, if one was and nobody revoked it yet. Failures are
/// logged: GitHub ends the token within the hour anyway.
pub async fn revoke_stage_token(state: &AppState, stage: i64) {
    let sealed = match state.store.take_stage_token(stage).await {
        Ok(Some(sealed)) => sealed,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(stage.id = stage, error = %e, "reading a stage's token to revoke failed");
            return;
        }
    };
    let token = hex::decode(&sealed)
        .ok()
        .and_then(|bytes| {
            state
                .config
                .secret_key
                .open(&token_binding(stage), &bytes)
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let Some(token) = token else {
        tracing::warn!(
            stage.id = stage,
            "a stage's token cannot be opened to revoke it"
        );
        return;
    };
    if let Err(e) = crate::github_app::revoke(&state.github, &token).await {
        tracing::warn!(stage.id = stage, error = %e, "revoking a stage's GitHub App token failed; it ends within the hour");
    }
}

/// Whether `url` has the scheme, host and port of `origin` (GitHub's web address).
pub fn same_origin(origin: &str, url: &str) -> bool {
    let (Ok(origin), Ok(url)) = (reqwest::Url::parse(origin), reqwest::Url::parse(url)) else {
        return false;
    };
    origin.scheme() == url.scheme()
        && origin.host_str().is_some()
        && origin.host_str().map(str::to_ascii_lowercase)
            == url.host_str().map(str::to_ascii_lowercase)
        && origin.port_or_known_default() == url.port_or_known_default()
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
    fn the_servers_host_is_matched_by_scheme_host_and_port() {
        let github = "https://github.com";
        assert!(same_origin(github, "https://github.com/acme/app.git"));
        assert!(same_origin(github, "https://GitHub.com:443/acme/app"));
        for elsewhere in [
            "http://github.com/acme/app.git",
            "https://github.com.evil.example/acme/app.git",
            "https://github.com@evil.example/acme/app.git",
            "https://evil.example/github.com/acme/app.git",
            "https://github.com:8443/acme/app.git",
            "file:///srv/git/app.git",
            "/srv/git/app.git",
            "git@github.com:acme/app.git",
        ] {
            assert!(!same_origin(github, elsewhere), "{elsewhere}");
        }
    }

    #[test]
    fn a_credential_never_shows_its_value() {
        let shown = format!("{:?} {}", token(), token().describe());
        assert!(!shown.contains("ghs_abc"), "{shown}");
        let netrc = netrc_of("https://github.com/a/b").expect("https");
        assert!(!format!("{netrc:?}").contains("ghs_abc"));
    }
}
