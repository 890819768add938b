//! Signed pipeline files, as Drone's `drone sign`: a repository with a signing key builds
//! only files whose `kind: signature` document holds the HMAC-SHA256 (hex) of the rest of
//! the file under that key, so a pipeline changed by someone without the key (a pull request
//! from a fork, say) errors instead of running. The key is sealed like the repository's
//! other credentials; `gantry sign` makes it the first time it signs a file.

use gantry_pipeline::signature::{Signature, SignatureError, read, signed_text};
use gantry_store::Repo;
use hmac::Mac;

use crate::AppState;
use crate::auth::hmac_sha256;
use crate::secrets::{SecretError, open_field};

/// The credential field the key is sealed as.
pub const FIELD: &str = "signing_key";

/// The repository's signing key, opened.
pub fn key_of(state: &AppState, repo: &Repo) -> Result<String, SecretError> {
    open_field(
        &state.config.secret_key,
        &repo.owner,
        &repo.name,
        FIELD,
        &repo.signing_key,
    )
}

/// The signature of a file's text under `key` (of the file without its own signature).
pub fn sign(key: &str, text: &str) -> Result<String, SignatureError> {
    Ok(hex::encode(
        hmac_sha256(key, signed_text(text)?.as_bytes())
            .finalize()
            .into_bytes(),
    ))
}

/// Whether `hmac` is the signature of `covered` under `key` (compared in constant time).
fn verify(key: &str, covered: &str, hmac: &str) -> bool {
    hex::decode(hmac).is_ok_and(|expected| {
        hmac_sha256(key, covered.as_bytes())
            .verify_slice(&expected)
            .is_ok()
    })
}

/// For a repository with a signing key, that every pipeline file is signed with it; `Err`
/// says which file is not, and how to sign it.
pub fn check(state: &AppState, repo: &Repo, files: &[(String, String)]) -> Result<(), String> {
    if repo.signing_key.is_empty() {
        return Ok(());
    }
    let full_name = repo.full_name();
    let key = key_of(state, repo)
        .map_err(|e| format!("the repository's signing key cannot be opened: {e}"))?;
    let how = |file: &str| {
        format!(
            "sign it with `gantry sign {full_name} {file} --save` and commit it (a repository admin can stop requiring signed files with `gantry sign {full_name} --disable`)"
        )
    };
    for (file, text) in files {
        match read(text) {
            Err(e) => return Err(format!("the signature of {file} cannot be checked: {e}")),
            Ok(Signature::Unsigned) => {
                return Err(format!(
                    "{file} is not signed, and {full_name} builds only signed pipeline files: {}",
                    how(file)
                ));
            }
            Ok(Signature::Signed { covered, hmac }) if !verify(&key, covered, &hmac) => {
                return Err(format!(
                    "the signature of {file} does not match it: the file changed after it was signed, or it was signed for another repository; if the change is yours, {}",
                    how(file)
                ));
            }
            Ok(Signature::Signed { .. }) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_pipeline::signature::with_signature;

    #[test]
    fn a_signature_verifies_under_its_key_only() {
        let file = "kind: pipeline\nname: ci\nsteps: []\n";
        let signed = with_signature(file, &sign("k1", file).expect("signs")).expect("signs");
        let Ok(Signature::Signed { covered, hmac }) = read(&signed) else {
            panic!("signed: {signed}")
        };
        assert!(verify("k1", covered, &hmac));
        assert!(!verify("k2", covered, &hmac));
        assert!(!verify("k1", &covered.replace("ci", "cd"), &hmac));
        assert!(!verify("k1", covered, "not hex"));
        // Signing a signed file signs what it covers.
        assert_eq!(sign("k1", &signed), sign("k1", file));
    }
}
