//! Glob patterns for `when` / `trigger` conditions and `${VAR#pattern}` substitutions.
//!
//! In conditions (`Mode::Path`), `*` and `?` never cross `/` (as Drone's `filepath.Match`), so
//! `feature/*` matches `feature/login` but not `feature/a/b`; `**` crosses `/` (as Woodpecker's
//! doublestar), so `refs/pull/**` matches `refs/pull/7/head`, and `docs/**/*.md` matches
//! `docs/a.md`. `[abc]`, `[a-z]`, `[!x]` are classes, `{a,b}` alternatives, `\` escapes.
//! In shell patterns (`Mode::Shell`), `*` matches anything, `/` included, as in `${VAR##*/}`.
//! Matching is linear in pattern × text, so hostile patterns cannot make it slow.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Path,
    Shell,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    AnyChar,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `*`: any run of characters, not crossing `/` in path mode.
    Star,
    /// `**`: any run of characters, `/` included.
    Globstar,
    /// `**/`: nothing, or anything that ends with `/`.
    Dirs,
}

/// A compiled pattern. Alternatives `{a,b}` compile to several token lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    alternatives: Vec<Vec<Token>>,
    mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("unclosed `[` in pattern `{0}`")]
    UnclosedClass(String),
    #[error("unclosed `{{` in pattern `{0}`")]
    UnclosedBrace(String),
    #[error("pattern `{0}` has too many `{{a,b}}` alternatives (more than 64)")]
    TooManyAlternatives(String),
    #[error("pattern `{0}` ends with a lone `\\`")]
    TrailingEscape(String),
}

const MAX_ALTERNATIVES: usize = 64;

impl Glob {
    pub fn new(pattern: &str, mode: Mode) -> Result<Self, GlobError> {
        let expanded = expand_braces(pattern)?;
        let alternatives = expanded
            .iter()
            .map(|alt| tokenize(alt, pattern, mode))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            source: pattern.to_owned(),
            alternatives,
            mode,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        self.alternatives
            .iter()
            .any(|tokens| matches(tokens, &chars, self.mode))
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Matches a one-off pattern; an invalid pattern matches nothing.
pub fn glob_match(pattern: &str, text: &str, mode: Mode) -> bool {
    if !pattern.contains(['*', '?', '[', '{', '\\']) {
        return pattern == text;
    }
    Glob::new(pattern, mode).is_ok_and(|g| g.is_match(text))
}

fn expand_braces(pattern: &str) -> Result<Vec<String>, GlobError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut open = None;
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' => {
                // Braces inside a class are literal.
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
            }
            '{' => {
                if depth == 0 {
                    open = Some(i);
                }
                depth += 1;
            }
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let start = open.unwrap_or(0);
                    let prefix: String = chars[..start].iter().collect();
                    let suffix: String = chars[i + 1..].iter().collect();
                    let body: Vec<char> = chars[start + 1..i].to_vec();
                    let mut out = Vec::new();
                    for alt in split_top_level(&body) {
                        for rest in expand_braces(&format!("{alt}{suffix}"))? {
                            out.push(format!("{prefix}{rest}"));
                            if out.len() > MAX_ALTERNATIVES {
                                return Err(GlobError::TooManyAlternatives(pattern.to_owned()));
                            }
                        }
                    }
                    return Ok(out);
                }
            }
            _ => {}
        }
        i += 1;
    }
    if depth > 0 {
        return Err(GlobError::UnclosedBrace(pattern.to_owned()));
    }
    Ok(vec![pattern.to_owned()])
}

fn split_top_level(body: &[char]) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0usize;
    let mut escaped = false;
    for &c in body {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '{' {
            depth += 1;
        } else if c == '}' {
            depth = depth.saturating_sub(1);
        } else if c == ',' && depth == 0 {
            parts.push(String::new());
            continue;
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

fn tokenize(pattern: &str, source: &str, mode: Mode) -> Result<Vec<Token>, GlobError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                i += 1;
                let Some(&c) = chars.get(i) else {
                    return Err(GlobError::TrailingEscape(source.to_owned()));
                };
                tokens.push(Token::Char(c));
            }
            '?' => tokens.push(Token::AnyChar),
            '*' => {
                let mut stars = 1;
                while chars.get(i + 1) == Some(&'*') {
                    stars += 1;
                    i += 1;
                }
                let at_segment_start = i + 1 == stars || chars.get(i - stars) == Some(&'/');
                if mode == Mode::Shell {
                    tokens.push(Token::Globstar);
                } else if stars >= 2 && at_segment_start && chars.get(i + 1) == Some(&'/') {
                    tokens.push(Token::Dirs);
                    i += 1;
                } else if stars >= 2 {
                    tokens.push(Token::Globstar);
                } else {
                    tokens.push(Token::Star);
                }
            }
            '[' => {
                let mut j = i + 1;
                let negated = matches!(chars.get(j), Some('!' | '^'));
                if negated {
                    j += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let Some(&c) = chars.get(j) else {
                        return Err(GlobError::UnclosedClass(source.to_owned()));
                    };
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    let lo = if c == '\\' {
                        j += 1;
                        *chars
                            .get(j)
                            .ok_or_else(|| GlobError::UnclosedClass(source.to_owned()))?
                    } else {
                        c
                    };
                    if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|&h| h != ']')
                    {
                        let hi = chars[j + 2];
                        ranges.push((lo, hi));
                        j += 3;
                    } else {
                        ranges.push((lo, lo));
                        j += 1;
                    }
                }
                tokens.push(Token::Class { negated, ranges });
                i = j;
            }
            c => tokens.push(Token::Char(c)),
        }
        i += 1;
    }
    Ok(tokens)
}

/// Set-of-positions simulation: `reach[j]` says the tokens so far can consume `text[..j]`.
fn matches(tokens: &[Token], text: &[char], mode: Mode) -> bool {
    let n = text.len();
    let mut reach = vec![false; n + 1];
    reach[0] = true;
    let mut next = vec![false; n + 1];
    let crosses = |c: char| mode == Mode::Shell || c != '/';
    for token in tokens {
        next.iter_mut().for_each(|r| *r = false);
        match token {
            Token::Char(c) => {
                for j in 0..n {
                    next[j + 1] = reach[j] && text[j] == *c;
                }
            }
            Token::AnyChar => {
                for j in 0..n {
                    next[j + 1] = reach[j] && crosses(text[j]);
                }
            }
            Token::Class { negated, ranges } => {
                for j in 0..n {
                    let c = text[j];
                    let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                    next[j + 1] = reach[j] && crosses(c) && inside != *negated;
                }
            }
            Token::Star => {
                let mut open = false;
                for j in 0..=n {
                    open = reach[j] || (open && j > 0 && crosses(text[j - 1]));
                    next[j] = open;
                }
            }
            Token::Globstar => {
                let mut open = false;
                for j in 0..=n {
                    open = open || reach[j];
                    next[j] = open;
                }
            }
            Token::Dirs => {
                let mut seen = false;
                for j in 0..=n {
                    next[j] = reach[j] || (seen && j > 0 && text[j - 1] == '/');
                    seen = seen || reach[j];
                }
            }
        }
        std::mem::swap(&mut reach, &mut next);
        if !reach.iter().any(|&r| r) {
            return false;
        }
    }
    reach[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str, t: &str) -> bool {
        Glob::new(p, Mode::Path).expect("valid pattern").is_match(t)
    }

    #[test]
    fn star_stays_in_its_segment() {
        assert!(path("feature/*", "feature/login"));
        assert!(!path("feature/*", "feature/a/b"));
        assert!(!path("*", "feature/x"));
        assert!(path("refs/tags/v*", "refs/tags/v1.2.3"));
        assert!(path("release/*", "release/1.0"));
        assert!(!path("master", "main"));
    }

    #[test]
    fn globstar_crosses_segments() {
        assert!(path("refs/pull/**", "refs/pull/7/head"));
        assert!(path("refs/tags/**", "refs/tags/v1"));
        assert!(path("**/*.go", "cmd/server/main.go"));
        assert!(path("**/*.go", "main.go"));
        assert!(path("docs/**/*.md", "docs/a.md"));
        assert!(path("docs/**/*.md", "docs/x/y/a.md"));
        assert!(!path("docs/**/*.md", "src/a.md"));
        assert!(path("pipeline/schema/**", "pipeline/schema/a/b.json"));
    }

    #[test]
    fn classes_alternatives_and_escapes() {
        assert!(path("v[0-9]*", "v1.0"));
        assert!(!path("v[!0-9]*", "v1.0"));
        assert!(path("go.{mod,sum}", "go.sum"));
        assert!(!path("go.{mod,sum}", "go.work"));
        assert!(path(r"a\*b", "a*b"));
        assert!(!path(r"a\*b", "axb"));
        assert!(path("?.txt", "a.txt"));
        assert!(!path("?.txt", "/.txt"));
    }

    #[test]
    fn shell_mode_star_crosses_slashes() {
        let g = Glob::new("*/", Mode::Shell).expect("valid");
        assert!(g.is_match("path/to/"));
    }

    #[test]
    fn invalid_patterns_are_errors() {
        assert!(matches!(
            Glob::new("a[bc", Mode::Path),
            Err(GlobError::UnclosedClass(_))
        ));
        assert!(matches!(
            Glob::new("a{b,c", Mode::Path),
            Err(GlobError::UnclosedBrace(_))
        ));
        let many = "{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}";
        assert!(matches!(
            Glob::new(many, Mode::Path),
            Err(GlobError::TooManyAlternatives(_))
        ));
    }

    #[test]
    fn hostile_patterns_stay_fast() {
        let pattern = "*a".repeat(200) + "b";
        let text = "a".repeat(2000);
        assert!(!path(&pattern, &text));
    }
}
