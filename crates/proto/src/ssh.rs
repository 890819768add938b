//! SSH for git: which clone URLs are SSH, the user they name, and whether a git server's host
//! key is one the server trusts. The trusted keys are OpenSSH `known_hosts` lines: GitHub's
//! published keys, plus the operator's file (`gantry server --ssh-known-hosts`). Pure: the
//! server's fetch and the runner's clone each call [`check_host_key`] from git's callback.

use base64::Engine as _;

/// GitHub's SSH host keys as GitHub publishes them ("GitHub's SSH key fingerprints").
pub const GITHUB_HOST_KEYS: &str = "\
github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl
github.com ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=
github.com ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQCj7ndNxQowgcQnjshcLrqPEiiphnt+VTTvDP6mHBL9j1aNUkY4Ue1gvwnGLVlOhGeYrnZaMgRK6+PKCUXaDbC7qtbW8gIkhL7aGCsOr/C56SJMy/BCZfxd1nWzAOxSDPgVsmerOBYfNqltV9/hWCqBywINIR+5dIg6JTJ72pcEpEjcYgXkE2YEFXV1JHnsKgbLWNlhScqb2UmyRkQyytRLtL+38TGxkxCflmO+5Z8CSSNY7GidjMIZ7Q4zMjA2n1nGrlTDkzwDCsw+wqFPGQA179cnfGWOWRVruj16z6XyvxvjJwbz0wQZ75XK5tKSb7FNyeIEs4TT4jk+S4dhPeAUC5y+bDYirYgM4GC7uEnztnZyaVWQ7B381AK4Qdrwt51ZqExKbQpTUNn+EjqoTwvqNj4kqx5QUCI0ThS/YkOxJCXmPUWZbhjpCg56i+2aB6CmK2JGhn57K5mj0MNdBXA4/WnwH6XoPWJzK5Nyu2zB3nAZp+S5hpQs+p1vN1/wsjk=
";

/// Why a host key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    #[error(
        "the SSH host key of {host} is not known: add its line (`ssh-keyscan {host}`, checked against what its operator publishes) to the file given to `gantry server --ssh-known-hosts`"
    )]
    Unknown { host: String },
    #[error(
        "the SSH host key of {host} is not the one the known hosts give for it: the key was changed, or the connection is intercepted; check the key with the host's operator, then update the file given to `gantry server --ssh-known-hosts`"
    )]
    Mismatch { host: String },
    #[error("the SSH host key of {host} is marked @revoked in the known hosts")]
    Revoked { host: String },
}

/// Whether `url` reaches its git server over SSH: `ssh://...`, `git+ssh://...`, or the
/// scp-like `[user@]host:path`.
pub fn is_ssh_url(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return matches!(scheme, "ssh" | "git+ssh" | "ssh+git");
    }
    // scp-like: a colon before any slash, and not a Windows drive letter.
    match (url.find(':'), url.find('/')) {
        (Some(colon), slash) => colon > 1 && slash.is_none_or(|s| colon < s),
        (None, _) => false,
    }
}

/// The user an SSH clone URL names (`git` in `git@github.com:acme/app.git`), else `git`, the
/// user GitHub, GitLab and Gitea take deploy keys for.
pub fn ssh_user(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', ':']).next().unwrap_or("");
    let before_at = rest.split_once('@').map(|(user, _)| user);
    match before_at {
        Some(user) if !user.is_empty() && !user.contains('/') && authority.contains('@') => {
            user.to_owned()
        }
        _ => "git".to_owned(),
    }
}

/// Whether `key` (the host key as sent on the wire) is one `known_hosts` trusts for `host`.
/// Lines are OpenSSH's: `HOSTS KEYTYPE BASE64 [comment]`, HOSTS comma-separated with `*`,
/// `?`, `!negation` and `[host]:port` (the port is not told apart: git gives only the host),
/// and the `@revoked` marker. Hashed host names (`|1|...`) never match: write names plainly.
pub fn check_host_key(known_hosts: &str, host: &str, key: &[u8]) -> Result<(), HostKeyError> {
    let mut known_for_host = false;
    let mut trusted = false;
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or("");
        let marker = first.strip_prefix('@').map(str::to_owned);
        if marker.is_some() {
            first = fields.next().unwrap_or("");
        }
        let (Some(_kind), Some(encoded)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !hosts_match(first, host) {
            continue;
        }
        let same = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .is_ok_and(|known| known == key);
        match marker.as_deref() {
            Some("revoked") if same => {
                return Err(HostKeyError::Revoked {
                    host: host.to_owned(),
                });
            }
            Some(_) => {}
            None => {
                known_for_host = true;
                trusted |= same;
            }
        }
    }
    match (trusted, known_for_host) {
        (true, _) => Ok(()),
        (false, true) => Err(HostKeyError::Mismatch {
            host: host.to_owned(),
        }),
        (false, false) => Err(HostKeyError::Unknown {
            host: host.to_owned(),
        }),
    }
}

fn hosts_match(patterns: &str, host: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        let name = pattern
            .strip_prefix('[')
            .and_then(|rest| rest.split_once(']'))
            .map_or(pattern, |(name, _port)| name);
        if wildcard(name.as_bytes(), host.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// `*` and `?` as in `known_hosts`, case-insensitive (host names are).
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p].eq_ignore_ascii_case(&text[t])) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github_ed25519() -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode("AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
            .expect("base64")
    }

    #[test]
    fn github_keys_are_trusted_for_github_only() {
        let key = github_ed25519();
        assert_eq!(check_host_key(GITHUB_HOST_KEYS, "github.com", &key), Ok(()));
        assert_eq!(check_host_key(GITHUB_HOST_KEYS, "GitHub.com", &key), Ok(()));
        assert_eq!(
            check_host_key(GITHUB_HOST_KEYS, "git.example.com", &key),
            Err(HostKeyError::Unknown {
                host: "git.example.com".into()
            })
        );
        assert_eq!(
            check_host_key(GITHUB_HOST_KEYS, "github.com", b"another key"),
            Err(HostKeyError::Mismatch {
                host: "github.com".into()
            })
        );
        let every = GITHUB_HOST_KEYS.lines().count();
        assert_eq!(every, 3, "ed25519, ecdsa and rsa");
    }

    #[test]
    fn patterns_ports_negation_and_revocation() {
        let key = github_ed25519();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&key);
        let known = format!(
            "# comment\n[127.0.0.1]:2222 ssh-ed25519 {encoded}\n*.corp.example,!bad.corp.example ssh-ed25519 {encoded} a comment\n|1|salt=|hash= ssh-ed25519 {encoded}\n"
        );
        assert_eq!(check_host_key(&known, "127.0.0.1", &key), Ok(()));
        assert_eq!(check_host_key(&known, "git.corp.example", &key), Ok(()));
        assert!(matches!(
            check_host_key(&known, "bad.corp.example", &key),
            Err(HostKeyError::Unknown { .. })
        ));
        let revoked = format!("{known}@revoked 127.0.0.1 ssh-ed25519 {encoded}\n");
        assert!(matches!(
            check_host_key(&revoked, "127.0.0.1", &key),
            Err(HostKeyError::Revoked { .. })
        ));
        let message = check_host_key("", "git.local", &key)
            .expect_err("unknown")
            .to_string();
        assert!(
            message.contains("ssh-keyscan git.local") && message.contains("--ssh-known-hosts"),
            "{message}"
        );
    }

    #[test]
    fn ssh_urls_and_their_users() {
        for url in [
            "git@github.com:acme/app.git",
            "ssh://git@github.com/acme/app.git",
            "ssh://deploy@git.local:2222/srv/app.git",
            "git+ssh://github.com/acme/app",
            "github.com:acme/app.git",
        ] {
            assert!(is_ssh_url(url), "{url}");
        }
        for url in [
            "https://github.com/acme/app.git",
            "http://127.0.0.1:8080/app.git",
            "/srv/git/app",
            "file:///srv/git/app",
            "C:/repos/app",
        ] {
            assert!(!is_ssh_url(url), "{url}");
        }
        assert_eq!(ssh_user("git@github.com:acme/app.git"), "git");
        assert_eq!(
            ssh_user("ssh://deploy@git.local:2222/srv/app.git"),
            "deploy"
        );
        assert_eq!(ssh_user("ssh://git.local/srv/app.git"), "git");
        assert_eq!(ssh_user("github.com:acme/app.git"), "git");
    }
}
