//! Drone's signed pipeline files: a `kind: signature` document holds the HMAC of the rest of
//! the file. This module only handles the text: what a signature covers, the one a file
//! carries, and the file with a new one; the key and the HMAC are the server's.
//!
//! The signature is recognised from the parsed file, never from a line that looks like one:
//! a file carries at most one signature document, it is the file's last, and it holds only
//! `kind` and `hmac`. What it covers is every byte before its `---` line, and the documents
//! of those bytes must be exactly the file's other documents, so nothing the compiler reads
//! is left out of the HMAC.

use crate::yaml::{self, Limits, Node};

/// What a file says of its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature<'a> {
    Unsigned,
    Signed {
        /// The bytes the HMAC covers: the file before its signature document.
        covered: &'a str,
        hmac: String,
    },
}

/// A file whose signature cannot be read as one; says why and how to mend it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignatureError(String);

fn is_signature(document: &Node) -> bool {
    document.get("kind").and_then(Node::as_str) == Some("signature")
}

/// The file's signature and what it covers.
pub fn read(text: &str) -> Result<Signature<'_>, SignatureError> {
    let full = yaml::read(text, &Limits::default())
        .map_err(|e| {
            SignatureError(format!(
                "the file is not valid YAML ({}, line {}), so its signature cannot be checked",
                e.message, e.pos.line
            ))
        })?
        .documents;
    let signatures = full.iter().filter(|d| is_signature(d)).count();
    let Some(last) = full.last() else {
        return Ok(Signature::Unsigned);
    };
    if signatures == 0 {
        return Ok(Signature::Unsigned);
    }
    let sign_again = "sign the file again with `gantry sign OWNER/NAME FILE --save`, which writes one signature last";
    if signatures > 1 {
        return Err(SignatureError(format!(
            "the file holds {signatures} `kind: signature` documents, and exactly one is allowed: {sign_again}"
        )));
    }
    if !is_signature(last) {
        return Err(SignatureError(format!(
            "the `kind: signature` document must be the file's last document: {sign_again}"
        )));
    }
    let only_kind_and_hmac = last.as_map().is_some_and(|entries| entries.len() == 2);
    let hmac = match last.get("hmac").and_then(Node::as_str) {
        Some(hmac) if only_kind_and_hmac => hmac.to_owned(),
        _ => {
            return Err(SignatureError(format!(
                "a `kind: signature` document holds `kind` and `hmac` and nothing else: {sign_again}"
            )));
        }
    };
    let covered = &text[..last_document_start(text)];
    let before = yaml::read(covered, &Limits::default())
        .map(|d| d.documents)
        .unwrap_or_default();
    if before.as_slice() != &full[..full.len() - 1] {
        return Err(SignatureError(format!(
            "the signature document must start with its own `---` line, after everything it signs: {sign_again}"
        )));
    }
    Ok(Signature::Signed { covered, hmac })
}

/// The text a new signature of `text` covers: the file without its signature, ending in a
/// newline (what [`with_signature`] writes before the signature document).
pub fn signed_text(text: &str) -> Result<String, SignatureError> {
    let mut out = match read(text)? {
        Signature::Unsigned => text.to_owned(),
        Signature::Signed { covered, .. } => covered.to_owned(),
    };
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// The `kind: signature` document that holds `hmac`.
pub fn document(hmac: &str) -> String {
    format!("kind: signature\nhmac: {hmac}\n")
}

/// The file with `hmac` as its only signature document, last.
pub fn with_signature(text: &str, hmac: &str) -> Result<String, SignatureError> {
    Ok(format!("{}---\n{}", signed_text(text)?, document(hmac)))
}

/// Where the file's last document begins: the start of its last `---` line (0 when it has
/// none).
fn last_document_start(text: &str) -> usize {
    let mut start = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace) {
            start = at;
        }
        at += line.len();
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "kind: pipeline\nname: ci\nsteps:\n  - name: t\n    image: alpine\n";

    fn hmac_of(text: &str) -> Option<String> {
        match read(text).expect("readable") {
            Signature::Unsigned => None,
            Signature::Signed { hmac, .. } => Some(hmac),
        }
    }

    #[test]
    fn a_signed_file_reads_back_its_signature_and_covers_only_the_rest() {
        let signed = with_signature(FILE, "abc123").expect("signs");
        assert_eq!(
            signed,
            format!("{FILE}---\nkind: signature\nhmac: abc123\n")
        );
        assert_eq!(
            read(&signed),
            Ok(Signature::Signed {
                covered: FILE,
                hmac: "abc123".into()
            })
        );
        // Signing again replaces the signature; what it covers is the same.
        let again = with_signature(&signed, "def456").expect("signs");
        assert_eq!(hmac_of(&again).as_deref(), Some("def456"));
        assert_eq!(signed_text(&again).expect("readable"), FILE);
        assert_eq!(hmac_of(FILE), None);
        assert_eq!(
            signed_text("kind: pipeline").expect("readable"),
            "kind: pipeline\n"
        );
    }

    #[test]
    fn a_quoted_hmac_and_a_leading_marker_are_read() {
        let text = format!("---\n{FILE}---\nkind: signature\nhmac: \"x1\"\n");
        assert_eq!(hmac_of(&text).as_deref(), Some("x1"));
        assert_eq!(
            signed_text(&text).expect("readable"),
            format!("---\n{FILE}")
        );
    }

    /// The attack that passed: a document appended after the signature, whose duplicate
    /// `kind` made the old reader take it for a second signature and leave it unsigned.
    #[test]
    fn nothing_can_be_added_beside_a_signature() {
        let signed = with_signature(FILE, "abc").expect("signs");
        let appended = format!(
            "{signed}---\nkind: pipeline\nkind: signature\nname: evil\nsteps:\n  - name: x\n    image: alpine\n"
        );
        let err = read(&appended).expect_err("refused");
        assert!(err.to_string().contains("not valid YAML"), "{err}");
        // Without the duplicate key: a second document after the signature.
        let after = format!("{signed}---\nkind: pipeline\nname: evil\nsteps: []\n");
        let err = read(&after).expect_err("refused");
        assert!(err.to_string().contains("must be the file's last"), "{err}");
        // Two signatures.
        let twice = format!("{signed}---\nkind: signature\nhmac: abc\n");
        assert!(
            read(&twice)
                .expect_err("refused")
                .to_string()
                .contains("exactly one")
        );
        // A pipeline hidden in the signature document.
        let hidden = format!("{FILE}---\nkind: signature\nhmac: abc\nsteps: []\n");
        assert!(
            read(&hidden)
                .expect_err("refused")
                .to_string()
                .contains("nothing else")
        );
        // A document ended with `...` and another one begun without a marker.
        let sneaked = format!(
            "{FILE}---\nkind: pipeline\nname: evil\nsteps: []\n...\nkind: signature\nhmac: abc\n"
        );
        assert!(read(&sneaked).is_err(), "{:?}", read(&sneaked));
    }

    #[test]
    fn any_change_to_the_rest_changes_what_is_covered() {
        let signed = with_signature(FILE, "abc").expect("signs");
        let tampered = signed.replace("alpine", "evil");
        assert_ne!(
            signed_text(&tampered).expect("readable"),
            signed_text(&signed).expect("readable")
        );
    }
}
