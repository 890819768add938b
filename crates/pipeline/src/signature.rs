//! Drone's signed pipeline files: a `kind: signature` document holds the HMAC of the rest of
//! the file. This module only handles the text: what a signature covers, the one a file
//! carries, and the file with a new one; the key and the HMAC are the server's.

/// The text a signature covers: the file without its `kind: signature` documents, ending in
/// a newline.
pub fn signed_text(text: &str) -> String {
    let mut out: String = documents(text)
        .into_iter()
        .filter(|d| !is_signature(d))
        .collect();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The `hmac` of the file's `kind: signature` document, if it has one.
pub fn signature_hmac(text: &str) -> Option<String> {
    documents(text)
        .into_iter()
        .filter(|d| is_signature(d))
        .find_map(|d| {
            d.lines().find_map(|line| {
                let value = line.strip_prefix("hmac:")?.trim();
                let value = value.trim_matches(|c| c == '"' || c == '\'');
                (!value.is_empty()).then(|| value.to_owned())
            })
        })
}

/// The `kind: signature` document that holds `hmac`.
pub fn document(hmac: &str) -> String {
    format!("kind: signature\nhmac: {hmac}\n")
}

/// The file with `hmac` as its only signature document, last.
pub fn with_signature(text: &str, hmac: &str) -> String {
    format!("{}---\n{}", signed_text(text), document(hmac))
}

/// The file cut before each document marker (`---` at the start of a line), markers kept
/// with the document they open.
fn documents(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if marker && at > start {
            out.push(&text[start..at]);
            start = at;
        }
        at += line.len();
    }
    if at > start {
        out.push(&text[start..at]);
    }
    out
}

fn is_signature(document: &str) -> bool {
    document.lines().any(|line| {
        line.strip_prefix("kind:")
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\''))
            == Some("signature")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "kind: pipeline\nname: ci\nsteps:\n  - name: t\n    image: alpine\n";

    #[test]
    fn a_signed_file_reads_back_its_signature_and_covers_only_the_rest() {
        let signed = with_signature(FILE, "abc123");
        assert_eq!(
            signed,
            format!("{FILE}---\nkind: signature\nhmac: abc123\n")
        );
        assert_eq!(signature_hmac(&signed).as_deref(), Some("abc123"));
        assert_eq!(signed_text(&signed), FILE);
        // Signing again replaces the signature; what it covers is the same.
        let again = with_signature(&signed, "def456");
        assert_eq!(signature_hmac(&again).as_deref(), Some("def456"));
        assert_eq!(signed_text(&again), FILE);
    }

    #[test]
    fn a_signature_anywhere_among_the_documents_is_found_and_left_out() {
        let text =
            format!("---\n{FILE}---\nkind: signature\nhmac: \"x1\"\n---\nkind: secret\nname: s\n");
        assert_eq!(signature_hmac(&text).as_deref(), Some("x1"));
        assert_eq!(
            signed_text(&text),
            format!("---\n{FILE}---\nkind: secret\nname: s\n")
        );
        assert_eq!(signature_hmac(FILE), None);
        assert_eq!(signed_text("kind: pipeline"), "kind: pipeline\n");
    }

    #[test]
    fn any_change_to_the_rest_changes_what_is_covered() {
        let signed = with_signature(FILE, "abc");
        let tampered = signed.replace("alpine", "evil");
        assert_ne!(signed_text(&tampered), signed_text(&signed));
    }
}
