//! `${VAR}` substitution in pipeline files, as Drone's envsubst does it: only the braced form
//! is substituted (`$HOME` is left for the shell), `$$` escapes a `$`, unknown variables become
//! empty, and the bash operators Drone supports work: `${#V}`, `${V^}`, `${V^^}`, `${V,}`,
//! `${V,,}`, `${V:pos}`, `${V:pos:len}`, `${V#pat}`, `${V##pat}`, `${V%pat}`, `${V%%pat}`,
//! `${V/old/new}`, `${V//old/new}`, `${V/#old/new}`, `${V/%old/new}`, `${V=default}`,
//! `${V:=default}`, `${V-default}`, `${V:-default}`, `${V+alt}`, `${V:+alt}`, `${V?msg}`.
//! Defaults and alternatives may themselves contain `${...}`.

use crate::glob::{Mode, glob_match};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstError {
    #[error("unclosed `${{` in `{0}`")]
    Unclosed(String),
    #[error("bad substitution `${{{0}}}`")]
    Bad(String),
    #[error("{0}")]
    Required(String),
}

/// Values for substitution; a missing name is empty.
pub trait Lookup {
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Lookup for std::collections::BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Lookup for std::collections::HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// Nesting of `${a=${b=${c}}}` allowed; deeper is an error rather than a deep recursion.
const MAX_NESTING: usize = 16;

/// Substitutes `text`. Returns the input unchanged (without allocating a new pattern) when it
/// has no `$`.
pub fn substitute(text: &str, vars: &dyn Lookup) -> Result<String, SubstError> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    expand(&chars, &mut i, vars, &mut out, false, 0)?;
    Ok(out)
}

/// Checks the syntax of every `${...}` without values; for `lint`.
pub fn check(text: &str) -> Result<(), SubstError> {
    struct Empty;
    impl Lookup for Empty {
        fn lookup(&self, _: &str) -> Option<&str> {
            None
        }
    }
    match substitute(text, &Empty) {
        Ok(_) | Err(SubstError::Required(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies `chars[*i..]` into `out`, expanding `${...}`, until the end or, inside a default
/// (`nested`), until the `}` that closes it.
fn expand(
    chars: &[char],
    i: &mut usize,
    vars: &dyn Lookup,
    out: &mut String,
    nested: bool,
    depth: usize,
) -> Result<(), SubstError> {
    while *i < chars.len() {
        let c = chars[*i];
        if nested && c == '}' {
            return Ok(());
        }
        if c == '$' && chars.get(*i + 1) == Some(&'$') {
            out.push('$');
            *i += 2;
            continue;
        }
        if c == '$' && chars.get(*i + 1) == Some(&'{') {
            if depth >= MAX_NESTING {
                return Err(SubstError::Bad("... nested too deeply".into()));
            }
            *i += 2;
            let value = expression(chars, i, vars, depth + 1)?;
            out.push_str(&value);
            continue;
        }
        out.push(c);
        *i += 1;
    }
    if nested {
        return Err(SubstError::Unclosed(chars.iter().collect()));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads an expression after `${` up to and including its `}` and returns its value.
fn expression(
    chars: &[char],
    i: &mut usize,
    vars: &dyn Lookup,
    depth: usize,
) -> Result<String, SubstError> {
    let start = *i;
    let unclosed = || SubstError::Unclosed(chars.iter().collect());
    let length_of =
        chars.get(*i) == Some(&'#') && chars.get(*i + 1).is_some_and(|&c| is_name_char(c));
    if length_of {
        *i += 1;
    }
    let name_start = *i;
    while *i < chars.len() && is_name_char(chars[*i]) {
        *i += 1;
    }
    let name: String = chars[name_start..*i].iter().collect();
    if name.is_empty() {
        let rest: String = chars[start..].iter().take_while(|&&c| c != '}').collect();
        return Err(SubstError::Bad(rest));
    }
    let value = vars.lookup(&name).unwrap_or("").to_owned();
    let Some(&op) = chars.get(*i) else {
        return Err(unclosed());
    };
    if op == '}' {
        *i += 1;
        return Ok(if length_of {
            value.chars().count().to_string()
        } else {
            value
        });
    }
    if length_of {
        return Err(SubstError::Bad(
            chars[start..].iter().take_while(|&&c| c != '}').collect(),
        ));
    }
    // Operators whose argument may hold `${...}`: defaults and alternatives.
    let two: String = chars[*i..(*i + 2).min(chars.len())].iter().collect();
    let (default_op, skip) = match two.as_str() {
        ":=" | ":-" | ":+" | ":?" => (Some(two.clone()), 2),
        _ if matches!(op, '=' | '-' | '+' | '?') => (Some(op.to_string()), 1),
        _ => (None, 0),
    };
    if let Some(default_op) = default_op {
        *i += skip;
        let mut argument = String::new();
        expand(chars, i, vars, &mut argument, true, depth)?;
        *i += 1; // the closing brace
        return Ok(match default_op.trim_start_matches(':') {
            "=" | "-" if value.is_empty() => argument,
            "+" if !value.is_empty() => argument,
            "+" => String::new(),
            "?" if value.is_empty() => {
                let message = if argument.is_empty() {
                    format!("{name} is required")
                } else {
                    argument
                };
                return Err(SubstError::Required(message));
            }
            _ => value,
        });
    }
    // The other operators take literal arguments up to the closing brace.
    let arg_start = *i;
    while *i < chars.len() && chars[*i] != '}' {
        if chars[*i] == '\\' {
            *i += 1;
        }
        *i += 1;
    }
    if *i >= chars.len() {
        return Err(unclosed());
    }
    let argument: String = chars[arg_start..*i].iter().collect();
    *i += 1;
    let bad = || SubstError::Bad(format!("{name}{argument}"));
    apply(&value, &argument).ok_or_else(bad)
}

fn apply(value: &str, op: &str) -> Option<String> {
    let mut it = op.chars();
    let first = it.next()?;
    let rest = it.as_str();
    match first {
        '^' if rest.is_empty() => {
            let mut c = value.chars();
            Some(
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default(),
            )
        }
        '^' if rest == "^" => Some(value.to_uppercase()),
        ',' if rest.is_empty() => {
            let mut c = value.chars();
            Some(
                c.next()
                    .map(|f| f.to_lowercase().chain(c).collect())
                    .unwrap_or_default(),
            )
        }
        ',' if rest == "," => Some(value.to_lowercase()),
        ':' => substring(value, rest),
        '#' => Some(match rest.strip_prefix('#') {
            Some(pattern) => trim_prefix(value, pattern, true),
            None => trim_prefix(value, rest, false),
        }),
        '%' => Some(match rest.strip_prefix('%') {
            Some(pattern) => trim_suffix(value, pattern, true),
            None => trim_suffix(value, rest, false),
        }),
        '/' => replace(value, rest),
        _ => None,
    }
}

fn substring(value: &str, spec: &str) -> Option<String> {
    let chars: Vec<char> = value.chars().collect();
    let len = i64::try_from(chars.len()).ok()?;
    let (pos, count) = match spec.split_once(':') {
        Some((p, c)) => (p.trim(), Some(c.trim())),
        None => (spec.trim(), None),
    };
    let pos: i64 = pos.parse().ok()?;
    let start = if pos < 0 {
        (len + pos).max(0)
    } else {
        pos.min(len)
    };
    let end = match count {
        None => len,
        Some(c) => {
            let c: i64 = c.parse().ok()?;
            if c < 0 {
                (len + c).max(start)
            } else {
                (start + c).min(len)
            }
        }
    };
    let (start, end) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
    Some(chars[start..end].iter().collect())
}

fn unescape(pattern: &str) -> String {
    pattern.replace("\\/", "/").replace("\\\\", "\\")
}

fn trim_prefix(value: &str, pattern: &str, longest: bool) -> String {
    let bounds: Vec<usize> = value
        .char_indices()
        .map(|(i, _)| i)
        .chain([value.len()])
        .collect();
    let candidates: Box<dyn Iterator<Item = &usize>> = if longest {
        Box::new(bounds.iter().rev())
    } else {
        Box::new(bounds.iter())
    };
    for &end in candidates {
        if glob_match(pattern, &value[..end], Mode::Shell) {
            return value[end..].to_owned();
        }
    }
    value.to_owned()
}

fn trim_suffix(value: &str, pattern: &str, longest: bool) -> String {
    let bounds: Vec<usize> = value
        .char_indices()
        .map(|(i, _)| i)
        .chain([value.len()])
        .collect();
    let candidates: Box<dyn Iterator<Item = &usize>> = if longest {
        Box::new(bounds.iter())
    } else {
        Box::new(bounds.iter().rev())
    };
    for &start in candidates {
        if glob_match(pattern, &value[start..], Mode::Shell) {
            return value[..start].to_owned();
        }
    }
    value.to_owned()
}

fn replace(value: &str, spec: &str) -> Option<String> {
    let (all, anchor, spec) = match spec.chars().next() {
        Some('/') => (true, None, &spec[1..]),
        Some('#') => (false, Some('#'), &spec[1..]),
        Some('%') => (false, Some('%'), &spec[1..]),
        _ => (false, None, spec),
    };
    // Split at the first `/` that is not escaped.
    let mut split = None;
    let mut escaped = false;
    for (i, c) in spec.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '/' {
            split = Some(i);
            break;
        }
    }
    let (old, new) = match split {
        Some(i) => (unescape(&spec[..i]), unescape(&spec[i + 1..])),
        None => (unescape(spec), String::new()),
    };
    if old.is_empty() {
        return Some(value.to_owned());
    }
    Some(match anchor {
        Some('#') => match value.strip_prefix(old.as_str()) {
            Some(rest) => format!("{new}{rest}"),
            None => value.to_owned(),
        },
        Some(_) => match value.strip_suffix(old.as_str()) {
            Some(rest) => format!("{rest}{new}"),
            None => value.to_owned(),
        },
        None if all => value.replace(&old, &new),
        None => value.replacen(&old, &new, 1),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn sub(vars: &[(&str, &str)], input: &str) -> String {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        substitute(input, &vars).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    #[test]
    fn drones_reference_cases() {
        let v = [("var01", "abcdEFGH28ij")];
        assert_eq!(sub(&v, "${#var01}"), "12");
        assert_eq!(sub(&v, "${var01^}"), "AbcdEFGH28ij");
        assert_eq!(sub(&v, "${var01^^}"), "ABCDEFGH28IJ");
        assert_eq!(sub(&[("v", "ABCD")], "${v,}"), "aBCD");
        assert_eq!(sub(&[("v", "ABCD")], "${v,,}"), "abcd");
        let p = [("path_name", "/home/bozo/ideas/thoughts.for.today")];
        assert_eq!(sub(&p, "${path_name:11}"), "ideas/thoughts.for.today");
        assert_eq!(sub(&p, "${path_name:11:5}"), "ideas");
        assert_eq!(sub(&[("var", "abc")], "${var=xyz}"), "abc");
        assert_eq!(sub(&[], "${var=xyz}"), "xyz");
        assert_eq!(
            sub(&[("d", "foo")], "something ${var=${d}}"),
            "something foo"
        );
        assert_eq!(
            sub(&[("d", "foo1")], "foo: ${var=prefix${d}-suffix}"),
            "foo: prefixfoo1-suffix"
        );
        assert_eq!(sub(&[], "${var:=xyz}"), "xyz");
        let z = [("stringZ", "abcABC123ABCabc")];
        assert_eq!(sub(&z, "${stringZ/%abc/XYZ}"), "abcABC123ABCXYZ");
        assert_eq!(sub(&z, "${stringZ/#abc/XYZ}"), "XYZABC123ABCabc");
        assert_eq!(sub(&z, "${stringZ//abc/xyz}"), "xyzABC123ABCxyz");
        assert_eq!(sub(&z, "${stringZ/abc/xyz}"), "xyzABC123ABCabc");
        assert_eq!(sub(&[("f", "bash.string.txt")], "${f#*.}"), "string.txt");
        assert_eq!(sub(&[("f", "bash.string.txt")], "${f##*.}"), "txt");
        assert_eq!(sub(&[("f", "/path/to/file")], "${f##*/}"), "file");
        assert_eq!(sub(&[("f", "path/to/file")], "${f#*/}"), "to/file");
        assert_eq!(sub(&[("f", "bash.string.txt")], "${f%.*}"), "bash.string");
        assert_eq!(sub(&[("f", "bash.string.txt")], "${f%%.*}"), "bash");
        assert_eq!(sub(&v, "${var=${var01^^}}"), "ABCDEFGH28IJ");
        assert_eq!(sub(&[("s", "foo/bar/baz")], r"${s//\//-}"), "foo-bar-baz");
        assert_eq!(sub(&[("s", "foo.bar")], "${s/./}"), "foobar");
    }

    #[test]
    fn escapes_and_unbraced_names_are_left_for_the_shell() {
        let v = [("var01", "abc")];
        assert_eq!(sub(&v, "$${var01}"), "${var01}");
        assert_eq!(
            sub(&v, "some text ${var01}$${var$${var01}$var01${var01}"),
            "some text abc${var${var01}$var01abc"
        );
        assert_eq!(
            sub(&[("d", "foo")], "something $${var=${d}}"),
            "something ${var=foo}"
        );
        assert_eq!(sub(&[], "echo $HOME"), "echo $HOME");
        assert_eq!(sub(&[], "cost: 5$"), "cost: 5$");
    }

    #[test]
    fn drone_commit_and_tag_idioms() {
        let v = [
            ("DRONE_COMMIT_SHA", "0123456789abcdef"),
            ("DRONE_TAG", "v1.2.3"),
        ];
        assert_eq!(sub(&v, "${DRONE_COMMIT_SHA:0:8}"), "01234567");
        assert_eq!(sub(&v, "${DRONE_TAG##v}"), "1.2.3");
        assert_eq!(sub(&[], "${CI_COMMIT_TAG=nightly}"), "nightly");
        assert_eq!(sub(&[], "${MISSING}"), "");
        assert_eq!(sub(&[("A", "x")], "${A:+set}${B:+set}"), "set");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let vars = BTreeMap::new();
        assert!(matches!(
            substitute("${unclosed", &vars),
            Err(SubstError::Unclosed(_))
        ));
        assert!(matches!(substitute("${}", &vars), Err(SubstError::Bad(_))));
        assert!(matches!(
            substitute("${A@Q}", &vars),
            Err(SubstError::Bad(_))
        ));
        assert!(
            matches!(substitute("${A?needs A}", &vars), Err(SubstError::Required(m)) if m == "needs A")
        );
        assert!(check("${A?needs A}").is_ok());
        let deep = "${a=".repeat(40) + &"}".repeat(40);
        assert!(substitute(&deep, &vars).is_err());
    }
}
