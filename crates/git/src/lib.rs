//! The git2 remote callbacks every fetch and clone of gantry uses, the server's (the
//! repository's git cache) and the runner's (a stage's workspace) alike:
//!
//! - the credential callback answers once: a server that refuses the credential and asks
//!   again gets an error naming what was refused, not the same credential in a loop; naming
//!   the SSH user is not an attempt (the key comes next);
//! - an SSH host key is checked against the given `known_hosts` lines whatever else is set,
//!   and a refusal is kept (`HostKeyRefusal`) so the caller can say why the fetch failed
//!   instead of git's generic message;
//! - TLS certificates are git's to check, unless the caller skips verification.

use std::sync::{Arc, Mutex};

use gantry_proto::GitCredential;
use git2::{Cred, CredentialType, RemoteCallbacks};

/// Why an SSH host key was refused, kept by the certificate callback.
#[derive(Debug, Clone, Default)]
pub struct HostKeyRefusal(Arc<Mutex<Option<String>>>);

impl HostKeyRefusal {
    /// The refusal, if the host key was refused.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn keep(&self, message: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
    }
}

/// Callbacks that give `credential` (if any) and check host keys against its known hosts;
/// with `skip_tls_verify`, a TLS certificate is accepted as it is.
pub fn remote_callbacks<'a>(
    credential: Option<&'a GitCredential>,
    skip_tls_verify: bool,
    refusal: &HostKeyRefusal,
) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    if let Some(credential) = credential {
        callbacks.credentials(credentials(credential));
    }
    let known_hosts = match credential {
        Some(GitCredential::SshKey { known_hosts, .. }) => Some(known_hosts.clone()),
        _ => None,
    };
    let refusal = refusal.clone();
    callbacks.certificate_check(move |cert, host| {
        match (cert.as_hostkey().and_then(|k| k.hostkey()), &known_hosts) {
            (Some(key), Some(known)) => gantry_proto::ssh::check_host_key(known, host, key)
                .map(|()| git2::CertificateCheckStatus::CertificateOk)
                .map_err(|e| {
                    let message = e.to_string();
                    refusal.keep(message.clone());
                    git2::Error::from_str(&message)
                }),
            (None, _) if skip_tls_verify => Ok(git2::CertificateCheckStatus::CertificateOk),
            _ => Ok(git2::CertificateCheckStatus::CertificatePassthrough),
        }
    });
    callbacks
}

/// git's credential callback for `credential`, answering once.
pub fn credentials(
    credential: &GitCredential,
) -> impl FnMut(&str, Option<&str>, CredentialType) -> Result<Cred, git2::Error> + '_ {
    let mut asked = false;
    move |_url, _user, allowed| {
        if let GitCredential::SshKey { username, .. } = credential
            && allowed == CredentialType::USERNAME
        {
            return Cred::username(username);
        }
        if std::mem::replace(&mut asked, true) {
            return Err(git2::Error::from_str(&format!(
                "authentication failed: the server refused {}",
                credential.describe()
            )));
        }
        match credential {
            GitCredential::Basic { username, password }
                if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
            {
                Cred::userpass_plaintext(username, password)
            }
            GitCredential::SshKey {
                username,
                private_key,
                ..
            } if allowed.contains(CredentialType::SSH_KEY) => {
                Cred::ssh_key_from_memory(username, None, private_key, None)
            }
            other => Err(git2::Error::from_str(&format!(
                "authentication failed: the server asks for credentials of another kind than {}",
                other.describe()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic() -> GitCredential {
        GitCredential::Basic {
            username: "x-access-token".into(),
            password: "s3cret".into(),
        }
    }

    #[test]
    fn a_credential_is_given_once_then_refused_by_name() {
        let credential = basic();
        let mut answer = credentials(&credential);
        assert!(
            answer(
                "https://git.example/a.git",
                None,
                CredentialType::USER_PASS_PLAINTEXT
            )
            .is_ok()
        );
        let again = answer(
            "https://git.example/a.git",
            None,
            CredentialType::USER_PASS_PLAINTEXT,
        )
        .err()
        .expect("a second ask is refused");
        assert!(
            again
                .message()
                .starts_with("authentication failed: the server refused"),
            "{}",
            again.message()
        );
        assert!(!again.message().contains("s3cret"), "never the value");
    }

    #[test]
    fn another_kind_of_credential_is_refused_and_naming_the_ssh_user_is_no_attempt() {
        let credential = basic();
        let mut answer = credentials(&credential);
        let refused = answer(
            "ssh://git.example/a.git",
            Some("git"),
            CredentialType::SSH_KEY,
        )
        .err()
        .expect("a password is no SSH key");
        assert!(
            refused.message().contains("another kind"),
            "{}",
            refused.message()
        );

        let key = GitCredential::SshKey {
            username: "git".into(),
            private_key: "not a key".into(),
            known_hosts: String::new(),
        };
        let mut answer = credentials(&key);
        assert!(answer("ssh://git.example/a.git", None, CredentialType::USERNAME).is_ok());
        assert!(answer("ssh://git.example/a.git", None, CredentialType::USERNAME).is_ok());
    }
}
