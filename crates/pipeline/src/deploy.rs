//! Environments a pipeline deploys to (`deploy:`): their names, slugs (GitLab's rules, so
//! that `CI_ENVIRONMENT_SLUG` is what GitLab users expect) and `auto_stop_in` durations.

use sha2::{Digest, Sha256};

/// The longest environment name.
pub const MAX_NAME_LEN: usize = 255;

/// Whether `name` is a valid environment name, as GitLab's: letters, digits, spaces and
/// `- _ / . $ { }`, not starting or ending with `/`.
pub fn is_valid_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " -_/.${}".contains(c))
}

/// GitLab's `CI_ENVIRONMENT_SLUG`: lower case, `[a-z0-9-]` only, starting with a letter, no
/// repeated dashes, at most 24 characters; a name that had to change gets a suffix from its
/// hash, so that two names never share a slug by accident. Fit for DNS labels and
/// Kubernetes names.
pub fn slug(name: &str) -> String {
    let mut slug = dashed(name);
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        slug.insert_str(0, "env-");
    }
    let mut squeezed = String::with_capacity(slug.len());
    for c in slug.chars() {
        if !(c == '-' && squeezed.ends_with('-')) {
            squeezed.push(c);
        }
    }
    if squeezed.len() > 24 || squeezed != name {
        let short: String = squeezed.chars().take(17).collect();
        format!("{short}-{}", suffix(name))
    } else {
        squeezed.trim_end_matches('-').to_owned()
    }
}

/// The last six base-36 digits of the name's SHA-256 read as one number (GitLab's suffix).
fn suffix(name: &str) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    const MODULUS: u64 = 36u64.pow(6);
    let rest = Sha256::digest(name.as_bytes())
        .iter()
        .fold(0u64, |rest, &byte| (rest * 256 + u64::from(byte)) % MODULUS);
    let mut digits = [b'0'; 6];
    let mut value = rest;
    for digit in digits.iter_mut().rev() {
        *digit = DIGITS[(value % 36) as usize];
        value /= 36;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

/// GitLab's `CI_COMMIT_REF_SLUG`: the branch or tag in lower case, `[a-z0-9-]` only, at most
/// 63 characters, no dash at either end (`feature/X` is `feature-x`).
pub fn ref_slug(reference: &str) -> String {
    let slug: String = dashed(reference).chars().take(63).collect();
    slug.trim_matches('-').to_owned()
}

/// `text` in lower case with every character but `[a-z0-9]` a dash.
fn dashed(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `auto_stop_in` as seconds: `3d`, `1h30m`, `2 days`, `1 week`, `30 minutes`... (days and
/// weeks besides the usual units); `None` when it is not a duration.
pub fn parse_stop_after(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match rest[..letters].to_ascii_lowercase().as_str() {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(unit)?)?;
        rest = rest[letters..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
        rest = rest.strip_prefix("and ").unwrap_or(rest).trim_start();
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_gitlabs() {
        // A name that fits is its own slug.
        assert_eq!(slug("production"), "production");
        assert_eq!(slug("staging-2"), "staging-2");
        // Anything changed gets the hash suffix, and at most 24 characters.
        let review = slug("review/feature-x");
        assert!(review.starts_with("review-feature-x-"), "{review}");
        assert_eq!(review.len(), "review-feature-x".len() + 7);
        assert_ne!(slug("review/feature-x"), slug("review/feature_x"));
        assert!(slug("1st").starts_with("env-1st-"));
        assert!(
            slug("Review/A very long branch name for sure").len() <= 24,
            "{}",
            slug("Review/A very long branch name for sure")
        );
        for name in ["review/feature-x", "1st", "a--b", "Production"] {
            let s = slug(name);
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !s.contains("--")
                    && !s.ends_with('-'),
                "{name}: {s}"
            );
        }
    }

    #[test]
    fn names_and_ref_slugs() {
        assert!(is_valid_name("review/feature-x"));
        assert!(is_valid_name("review/${DRONE_BRANCH}"));
        assert!(is_valid_name("release 1.2"));
        for bad in ["", "/review", "review/", "a\nb", "review/x@y", "a:b"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        assert_eq!(ref_slug("feature/X"), "feature-x");
        assert_eq!(ref_slug("-v1.2-"), "v1-2");
    }

    #[test]
    fn stop_durations() {
        assert_eq!(parse_stop_after("3d"), Some(3 * 86_400));
        assert_eq!(parse_stop_after("1h30m"), Some(5_400));
        assert_eq!(parse_stop_after("2 days"), Some(2 * 86_400));
        assert_eq!(parse_stop_after("1 week"), Some(604_800));
        assert_eq!(
            parse_stop_after("1 day, 2 hours and 30 minutes"),
            Some(86_400 + 9_000)
        );
        for bad in ["", "soon", "3", "d", "3 fortnights", "-1d"] {
            assert_eq!(parse_stop_after(bad), None, "{bad:?}");
        }
    }
}
