//! Tokens scoped to one repository, from a GitHub App: the server signs a short JWT with the
//! App's private key (RS256, as GitHub asks: `iat` a minute back for clock drift, `exp` nine
//! minutes on, `iss` the App's id), finds the repository's installation and asks for an
//! installation token restricted to that repository with `contents: read`. A stage gets a
//! fresh one with its assignment and it is revoked when the stage ends; GitHub ends it after
//! an hour in any case.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::Method;
use serde::Deserialize;

use crate::github_api::{GitHubClient, GitHubError};

/// A GitHub App the server acts as (`--github-app-id`, `--github-app-key-file`).
pub struct GitHubApp {
    pub id: u64,
    key: RsaKeyPair,
}

impl fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubApp")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(
        "the GitHub App key is not a PEM RSA private key ({0}): download it from the App's settings page on GitHub (\"Generate a private key\") and pass the .pem file"
    )]
    Key(String),
    #[error(transparent)]
    GitHub(#[from] GitHubError),
}

/// An installation token and when GitHub ends it.
#[derive(Clone, PartialEq, Eq)]
pub struct ScopedToken {
    pub token: String,
    pub expires_at: String,
}

impl fmt::Debug for ScopedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl GitHubApp {
    /// Reads the App's key: PKCS#1 (`BEGIN RSA PRIVATE KEY`, what GitHub gives) or PKCS#8
    /// (`BEGIN PRIVATE KEY`).
    pub fn from_pem(id: u64, pem: &str) -> Result<Self, AppError> {
        let (label, der) = pem_block(pem).ok_or_else(|| AppError::Key("no PEM block".into()))?;
        let key = match label.as_str() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            other => return Err(AppError::Key(format!("a PEM block of `{other}`"))),
        }
        .map_err(|e| AppError::Key(e.to_string()))?;
        Ok(Self { id, key })
    }

    /// The JWT that authenticates as the App, valid from a minute before `now` (seconds)
    /// for ten minutes, GitHub's longest.
    pub fn jwt(&self, now: i64) -> Result<String, AppError> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            serde_json::json!({ "iat": now - 60, "exp": now + 540, "iss": self.id.to_string() })
                .to_string(),
        );
        let signed = format!("{header}.{claims}");
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .map_err(|e| AppError::Key(format!("signing failed: {e}")))?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// A token for `owner/name` alone, reading its contents only.
    pub async fn repository_token(
        &self,
        github: &GitHubClient,
        owner: &str,
        name: &str,
    ) -> Result<ScopedToken, AppError> {
        #[derive(Deserialize)]
        struct Installation {
            id: u64,
        }
        #[derive(Deserialize)]
        struct Issued {
            token: String,
            #[serde(default)]
            expires_at: String,
        }
        // GitHub checks the JWT's times against its own clock: the system's, never a test's.
        let jwt = self.jwt(chrono::Utc::now().timestamp())?;
        let installation: Installation = github
            .json(
                github.request(
                    Method::GET,
                    &format!("/repos/{owner}/{name}/installation"),
                    Some(&jwt),
                ),
                &format!("the installation of the App on {owner}/{name}"),
                " (install the App on the repository, or give the repository its own token)",
            )
            .await?;
        let issued: Issued = github
            .json(
                github
                    .request(
                        Method::POST,
                        &format!("/app/installations/{}/access_tokens", installation.id),
                        Some(&jwt),
                    )
                    .json(&serde_json::json!({
                        "repositories": [name],
                        "permissions": { "contents": "read" },
                    })),
                &format!("a token for {owner}/{name}"),
                " (the App needs read access to the repository's contents)",
            )
            .await?;
        Ok(ScopedToken {
            token: issued.token,
            expires_at: issued.expires_at,
        })
    }
}

/// Ends an installation token before its hour is up (its stage is over).
pub async fn revoke(github: &GitHubClient, token: &str) -> Result<(), AppError> {
    let what = "revoking an installation token";
    let status = github
        .status(
            github.request(Method::DELETE, "/installation/token", Some(token)),
            what,
        )
        .await?;
    match status {
        // 401: already ended.
        204 | 401 => Ok(()),
        status => Err(GitHubError::Refused {
            what: what.to_owned(),
            status,
            hint: "",
        }
        .into()),
    }
}

/// The label and bytes of the first PEM block of `text`.
fn pem_block(text: &str) -> Option<(String, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----")?;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let body: String = rest[..end].split_whitespace().collect();
    let der = STANDARD.decode(body).ok()?;
    Some((label.to_owned(), der))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    fn pem_of(key: &RsaKeyPair) -> String {
        let der: Pkcs8V1Der = key.as_der().expect("encodes");
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(der.as_ref())
        )
    }

    #[test]
    fn the_jwt_is_rs256_signed_with_the_apps_key_and_names_the_app() {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("generates");
        let app = GitHubApp::from_pem(42, &pem_of(&key)).expect("reads its key");
        let jwt = app.jwt(1_000_000).expect("signs");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("base64url");
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref())
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("verifies with the App's public key");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url"))
                .expect("json");
        assert_eq!(
            claims,
            serde_json::json!({"iat": 999_940, "exp": 1_000_540, "iss": "42"})
        );
    }

    #[test]
    fn a_key_that_is_not_an_rsa_pem_says_where_to_get_one() {
        let e = GitHubApp::from_pem(1, "hello").expect_err("no PEM");
        assert!(e.to_string().contains("Generate a private key"), "{e}");
        let e = GitHubApp::from_pem(
            1,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
        )
        .expect_err("a certificate");
        assert!(e.to_string().contains("CERTIFICATE"), "{e}");
    }
}
