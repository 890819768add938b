//! Secrets at rest: every value is sealed with XChaCha20-Poly1305 under the server's key, with
//! a random 24-byte nonce and bound (as associated data) to its scope and name, so a sealed
//! value cannot be read under another name. The key comes from `GANTRY_SECRET_KEY` or a file
//! the binary manages; a check value in the database proves at start that the key is the
//! one the secrets were sealed with.
//!
//! A repository's own credentials (its webhook secret, its GitHub token) are sealed the same
//! way into its row (`seal_field`, `open_field`), bound to the repository and the column.
//!
//! Values leave the server only toward a runner holding the stage that references them, and
//! only those that stage references; a pull request from a fork gets only the secrets that
//! allow it, and the runner is told why the others are withheld.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use gantry_pipeline::Stage;
use gantry_store::{Build, Repo, SecretScope, Store, StoreError};

const NONCE: usize = 24;
const CHECK_SETTING: &str = "secret_key_check";
const CHECK_TEXT: &[u8] = b"gantry secret key check";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "the secret key is not the one this database's secrets were sealed with: set GANTRY_SECRET_KEY (or restore the data directory's secret-key file) to the original key"
    )]
    WrongKey,
    #[error("a sealed secret is damaged (or was sealed for another name)")]
    Damaged,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The server's key for secrets. Its bytes are never printed.
#[derive(Clone)]
pub struct SecretKey(Key);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(Key::from(bytes))
    }

    /// A key from 64 hex digits (`GANTRY_SECRET_KEY`).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
        Some(Self::from_bytes(bytes))
    }

    pub fn generate() -> (Self, String) {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system provides randomness");
        (Self::from_bytes(bytes), hex::encode(bytes))
    }

    /// `nonce || ciphertext`.
    pub fn seal(&self, associated: &str, value: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).expect("the operating system provides randomness");
        let cipher = XChaCha20Poly1305::new(&self.0);
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: value,
                    aad: associated.as_bytes(),
                },
            )
            .expect("sealing in memory cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        out
    }

    pub fn open(&self, associated: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < NONCE {
            return Err(SecretError::Damaged);
        }
        let (nonce, body) = sealed.split_at(NONCE);
        let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| SecretError::Damaged)?;
        XChaCha20Poly1305::new(&self.0)
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: body,
                    aad: associated.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Damaged)
    }
}

/// What a sealed value in a repository's row starts with.
const SEALED_FIELD: &str = "sealed:";

fn field_binding(owner: &str, name: &str, field: &str) -> String {
    format!("repo:{owner}/{name}/{field}")
}

/// A credential of repository `owner/name` sealed for its `field` column (`sealed:` and hex);
/// empty stays empty (none set).
pub fn seal_field(key: &SecretKey, owner: &str, name: &str, field: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    let sealed = key.seal(&field_binding(owner, name, field), value.as_bytes());
    format!("{SEALED_FIELD}{}", hex::encode(sealed))
}

/// The credential `seal_field` sealed. A value without the prefix was written in the clear
/// (straight into the database by another tool) and is taken as it is.
pub fn open_field(
    key: &SecretKey,
    owner: &str,
    name: &str,
    field: &str,
    stored: &str,
) -> Result<String, SecretError> {
    let Some(sealed) = stored.strip_prefix(SEALED_FIELD) else {
        return Ok(stored.to_owned());
    };
    let sealed = hex::decode(sealed).map_err(|_| SecretError::Damaged)?;
    let value = key.open(&field_binding(owner, name, field), &sealed)?;
    String::from_utf8(value).map_err(|_| SecretError::Damaged)
}

/// Checks the key against the database's check value (writing one on first use).
pub async fn verify_key(store: &Store, key: &SecretKey) -> Result<(), SecretError> {
    match store.setting(CHECK_SETTING).await? {
        Some(sealed) => key
            .open(CHECK_SETTING, &sealed)
            .map(|_| ())
            .map_err(|_| SecretError::WrongKey),
        None => {
            store
                .put_setting(CHECK_SETTING, &key.seal(CHECK_SETTING, CHECK_TEXT))
                .await?;
            Ok(())
        }
    }
}

/// Whether the database holds anything sealed (so a missing key is an error, not a fresh
/// start).
pub async fn has_sealed_data(store: &Store) -> Result<bool, StoreError> {
    Ok(store.setting(CHECK_SETTING).await?.is_some() || store.secret_count().await? > 0)
}

/// The names of the secrets a stage references.
fn referenced(stage: &Stage) -> Vec<&str> {
    let mut names: Vec<&str> = stage
        .secrets
        .iter()
        .chain(
            stage
                .steps
                .iter()
                .chain(&stage.services)
                .flat_map(|s| &s.secrets),
        )
        .map(|s| s.secret.as_str())
        .chain(stage.pull_secrets.iter().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The registry logins of the stage's `image_pull_secrets`, from the values it was given
/// (`for_stage`: a fork's build gets only secrets that allow pull requests). A secret that is
/// not a Docker `config.json` gives none: its reason is kept as the secret's, so a step that
/// names it fails saying why, and the image's pull says it has no login.
pub fn pull_logins(
    stage: &Stage,
    values: &BTreeMap<String, String>,
    withheld: &mut BTreeMap<String, String>,
) -> Vec<gantry_proto::registry::RegistryCredential> {
    let mut logins = Vec::new();
    for name in &stage.pull_secrets {
        let Some(value) = values.get(name) else {
            continue;
        };
        match gantry_proto::registry::parse_docker_config(value, &format!("secret `{name}`")) {
            Ok(found) => logins.extend(found),
            Err(reason) => {
                tracing::warn!(secret = %name, %reason, "an image pull secret is unusable");
                withheld.insert(name.clone(), reason);
            }
        }
    }
    logins
}

/// The values a stage gets, and the reasons for those it does not.
pub async fn for_stage(
    store: &Store,
    key: &SecretKey,
    repo: &Repo,
    build: &Build,
    stage: &Stage,
) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>), StoreError> {
    let wanted = referenced(stage);
    let mut values = BTreeMap::new();
    let mut withheld = BTreeMap::new();
    if wanted.is_empty() {
        return Ok((values, withheld));
    }
    // Owner secrets first, so the repository's own win on a shared name.
    for secret in store.sealed_secrets(repo.id, &repo.owner).await? {
        if !wanted.contains(&secret.name.as_str()) {
            continue;
        }
        if build.fork && !secret.allow_pull_requests {
            values.remove(&secret.name);
            withheld.insert(
                secret.name.clone(),
                format!(
                    "secret `{}` is withheld from pull requests from forks (allow it with --allow-pull-requests if it is safe to)",
                    secret.name
                ),
            );
            continue;
        }
        if let Some(kept_for) = &secret.environment {
            let deploys_there = stage.deploy.as_ref().is_some_and(|deploy| {
                gantry_pipeline::glob::glob_match(
                    kept_for,
                    &deploy.environment,
                    gantry_pipeline::glob::Mode::Path,
                )
            });
            if !deploys_there {
                values.remove(&secret.name);
                withheld.insert(
                    secret.name.clone(),
                    format!(
                        "secret `{}` is kept for environment `{kept_for}`: only a stage that deploys to it (`deploy: {{environment: ...}}`) gets it",
                        secret.name
                    ),
                );
                continue;
            }
        }
        match key.open(
            &secret.scope().associated_data(&secret.name),
            &secret.sealed,
        ) {
            Ok(value) => {
                withheld.remove(&secret.name);
                values.insert(
                    secret.name.clone(),
                    String::from_utf8_lossy(&value).into_owned(),
                );
            }
            Err(e) => {
                tracing::error!(secret = %secret.name, error = %e, "a secret could not be opened");
                withheld.insert(
                    secret.name.clone(),
                    format!(
                        "secret `{}` could not be opened on the server: {e}",
                        secret.name
                    ),
                );
            }
        }
    }
    Ok((values, withheld))
}

/// Seals a value for `scope` and stores it.
pub async fn put(
    store: &Store,
    key: &SecretKey,
    scope: &SecretScope,
    name: &str,
    value: &str,
    grant: &gantry_store::SecretGrant,
) -> Result<(), StoreError> {
    let sealed = key.seal(&scope.associated_data(name), value.as_bytes());
    store.put_secret(scope, name, &sealed, grant).await
}

/// The registry entries a build of `repo` may pull with: the repository's, its owner's and,
/// when `server_wide`, the server's, the most particular first (the first for a host is
/// used); a fork's build gets only those that allow pull requests.
pub async fn registry_logins(
    store: &Store,
    key: &SecretKey,
    repo: &Repo,
    build: &Build,
    server_wide: bool,
) -> Result<Vec<gantry_proto::registry::RegistryCredential>, StoreError> {
    let mut logins = Vec::new();
    for entry in store.sealed_registries(repo.id, &repo.owner).await? {
        if build.fork && !entry.allow_pull_requests {
            continue;
        }
        let scope = entry.scope();
        if scope == gantry_store::RegistryScope::Server && !server_wide {
            continue;
        }
        let source = match &scope {
            gantry_store::RegistryScope::Repo(_) => {
                format!("the registry entry of {}", repo.full_name())
            }
            gantry_store::RegistryScope::Owner(owner) => format!("the registry entry of {owner}"),
            gantry_store::RegistryScope::Server => "the server's registry entry".to_owned(),
        };
        match key.open(&scope.associated_data(&entry.host), &entry.sealed) {
            Ok(password) => logins.push(gantry_proto::registry::RegistryCredential {
                host: entry.host,
                username: entry.username,
                password: String::from_utf8_lossy(&password).into_owned(),
                source,
            }),
            Err(e) => {
                tracing::error!(host = %entry.host, %source, error = %e, "a registry login could not be opened");
            }
        }
    }
    Ok(logins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_name() {
        let (key, _) = SecretKey::generate();
        let sealed = key.seal("repo:1/secret:token", b"hunter2");
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "no plaintext at rest"
        );
        assert_eq!(
            key.open("repo:1/secret:token", &sealed).expect("opens"),
            b"hunter2"
        );
        assert!(matches!(
            key.open("repo:2/secret:token", &sealed),
            Err(SecretError::Damaged)
        ));
        let (other, _) = SecretKey::generate();
        assert!(other.open("repo:1/secret:token", &sealed).is_err());
        assert_ne!(
            key.seal("a", b"x"),
            key.seal("a", b"x"),
            "a fresh nonce each time"
        );
    }

    #[test]
    fn a_repository_field_is_sealed_for_its_repository_and_column() {
        let (key, _) = SecretKey::generate();
        let sealed = seal_field(&key, "acme", "app", "github_token", "ghp_123");
        assert!(sealed.starts_with("sealed:") && !sealed.contains("ghp_123"));
        assert_eq!(
            open_field(&key, "acme", "app", "github_token", &sealed).expect("opens"),
            "ghp_123"
        );
        assert!(open_field(&key, "acme", "other", "github_token", &sealed).is_err());
        assert!(open_field(&key, "acme", "app", "webhook_secret", &sealed).is_err());
        assert!(
            open_field(
                &SecretKey::generate().0,
                "acme",
                "app",
                "github_token",
                &sealed
            )
            .is_err()
        );
        assert_eq!(seal_field(&key, "acme", "app", "github_token", ""), "");
        assert_eq!(
            open_field(&key, "acme", "app", "webhook_secret", "plain").expect("as it is"),
            "plain"
        );
    }

    #[test]
    fn keys_are_64_hex_digits() {
        let (key, hex) = SecretKey::generate();
        let again = SecretKey::from_hex(&hex).expect("parses");
        assert_eq!(
            again.open("a", &key.seal("a", b"v")).expect("same key"),
            b"v"
        );
        assert!(SecretKey::from_hex("abc").is_none());
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
    }
}
