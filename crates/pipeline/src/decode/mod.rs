//! From YAML nodes to the typed [model](crate::model), for every dialect, collecting every
//! problem with its position instead of stopping at the first.
//!
//! Substitution of `${VAR}` happens here, on scalar values as they are read: `compile` decodes
//! with the build's variables, `lint` decodes with none and only checks the syntax. Substituting
//! values after parsing (not the raw text, as Drone does) means a branch name can never inject
//! YAML structure into the file.

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::{Diagnostic, Diagnostics, Pos, Severity, did_you_mean};
use crate::envsubst::{self, Lookup};
use crate::glob::{Glob, Mode};
use crate::model::*;
use crate::trust::Rule;
use crate::yaml::{Node, Value};

mod backend_options;
mod conditions;
mod container;
mod drone;
mod env;
mod pipeline;
mod pod;
mod step;
mod woodpecker;

pub use container::parse_bytes;
pub use step::parse_duration;
use step::{is_git_plugin, misplaced_key_hint};

/// Pipelines and secrets of one file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Decoded {
    pub pipelines: Vec<Pipeline>,
    pub secrets: Vec<SecretDocument>,
}

pub(crate) struct Decoder<'a> {
    pub file: &'a str,
    pub dialect: Dialect,
    /// `Some` when compiling for a build; `None` when linting.
    pub vars: Option<&'a dyn Lookup>,
    pub diags: Diagnostics,
}

/// Every event name gantry or the dialects it reads know; others get a warning.
pub(crate) const KNOWN_EVENTS: &[&str] = &[
    "push",
    "pull_request",
    "pull_request_closed",
    "pull_request_metadata",
    "tag",
    "promote",
    "rollback",
    "deployment",
    "cron",
    "custom",
    "manual",
    "delete",
    "release",
];

const CONDITION_KEYS: &[&str] = &[
    "branch",
    "event",
    "ref",
    "status",
    "repo",
    "target",
    "cron",
    "tag",
    "action",
    "instance",
    "paths",
    "path",
    "platform",
    "matrix",
    "evaluate",
    "environment",
];

/// Keys gantry reads but does not act on; each gets a warning that says so.
const UNSUPPORTED_PIPELINE_KEYS: &[(&str, &str)] = &[(
    "pool",
    "VM pools are Drone Cloud's; gantry runs the pipeline on its own runners",
)];

const UNSUPPORTED_STEP_KEYS: &[(&str, &str)] = &[("when_files", "not supported")];

/// A mapping being read: remembers which keys were taken, to report the rest.
pub(crate) struct Fields<'n> {
    entries: &'n [(Node, Node)],
    used: Vec<bool>,
}

impl<'n> Fields<'n> {
    fn new(entries: &'n [(Node, Node)]) -> Self {
        Self {
            entries,
            used: vec![false; entries.len()],
        }
    }

    /// The value of `key`, unless absent or null.
    pub fn get(&mut self, key: &str) -> Option<&'n Node> {
        let i = self
            .entries
            .iter()
            .position(|(k, _)| k.as_str() == Some(key))?;
        self.used[i] = true;
        let value = &self.entries[i].1;
        (!value.is_null()).then_some(value)
    }

    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k.as_str() == Some(key))
    }

    /// Keys not taken yet, in file order.
    fn unused(&self) -> impl Iterator<Item = &'n (Node, Node)> + '_ {
        self.entries
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|(e, _)| e)
    }
}

/// Where a value sits in a document, e.g. `pipeline[ci].steps[0].image`: a chain of
/// segments on the stack, rendered into text only when a problem is reported.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At<'a> {
    parent: Option<&'a At<'a>>,
    segment: Segment<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Segment<'a> {
    Root,
    Key(&'a str),
    Index(usize),
    Named(&'a str),
}

impl<'a> At<'a> {
    pub const ROOT: At<'static> = At {
        parent: None,
        segment: Segment::Root,
    };

    pub fn key(&'a self, key: &'a str) -> At<'a> {
        At {
            parent: Some(self),
            segment: Segment::Key(key),
        }
    }

    pub fn index(&'a self, index: usize) -> At<'a> {
        At {
            parent: Some(self),
            segment: Segment::Index(index),
        }
    }

    pub fn named(&'a self, name: &'a str) -> At<'a> {
        At {
            parent: Some(self),
            segment: Segment::Named(name),
        }
    }

    pub fn render(&self) -> String {
        let mut segments = Vec::new();
        let mut at = Some(self);
        while let Some(a) = at {
            segments.push(a.segment);
            at = a.parent;
        }
        let mut out = String::new();
        for segment in segments.iter().rev() {
            match segment {
                Segment::Root => {}
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
                Segment::Named(name) => {
                    out.push('[');
                    out.push_str(name);
                    out.push(']');
                }
            }
        }
        out
    }
}

impl<'a> Decoder<'a> {
    pub fn new(file: &'a str, dialect: Dialect, vars: Option<&'a dyn Lookup>) -> Self {
        Self {
            file,
            dialect,
            vars,
            diags: Diagnostics::default(),
        }
    }

    pub fn report(
        &mut self,
        severity: Severity,
        pos: Pos,
        path: &At<'_>,
        message: String,
        hint: Option<String>,
    ) {
        self.diags.push(Diagnostic {
            severity,
            file: self.file.to_owned(),
            pos,
            path: path.render(),
            message,
            hint,
        });
    }

    pub fn error(
        &mut self,
        pos: Pos,
        path: &At<'_>,
        message: impl Into<String>,
        hint: Option<&str>,
    ) {
        self.report(
            Severity::Error,
            pos,
            path,
            message.into(),
            hint.map(str::to_owned),
        );
    }

    pub fn warn(
        &mut self,
        pos: Pos,
        path: &At<'_>,
        message: impl Into<String>,
        hint: Option<&str>,
    ) {
        self.report(
            Severity::Warning,
            pos,
            path,
            message.into(),
            hint.map(str::to_owned),
        );
    }

    fn expected(&mut self, node: &Node, path: &At<'_>, what: &str) {
        let found = node.kind_name();
        self.error(
            node.pos,
            path,
            format!("expected {what}, found {found}"),
            None,
        );
    }

    /// Substitutes `${VAR}` in a scalar (or checks its syntax when linting).
    pub fn subst(&mut self, text: &str, pos: Pos, path: &At<'_>) -> String {
        if !text.contains('$') {
            return text.to_owned();
        }
        match self.vars {
            Some(vars) => match envsubst::substitute(text, vars) {
                Ok(s) => s,
                Err(e) => {
                    self.error(
                        pos,
                        path,
                        e.to_string(),
                        Some("write `$${` for a literal `${`"),
                    );
                    text.to_owned()
                }
            },
            None => {
                if let Err(e) = envsubst::check(text) {
                    self.error(
                        pos,
                        path,
                        e.to_string(),
                        Some("write `$${` for a literal `${`"),
                    );
                }
                text.to_owned()
            }
        }
    }

    pub fn fields<'n>(&mut self, node: &'n Node, path: &At<'_>) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(entries) => Some(Fields::new(entries)),
            _ => {
                self.expected(node, path, "a mapping of keys to values");
                None
            }
        }
    }

    /// Reports keys nobody took: known-but-unsupported ones with why, others as unknown with a
    /// "did you mean" among `known`.
    pub fn finish(
        &mut self,
        fields: &Fields<'_>,
        path: &At<'_>,
        known: &[&str],
        unsupported: &[(&str, &str)],
    ) {
        for (key, _) in fields.unused() {
            let name = key.as_str().unwrap_or_default();
            if let Some((_, why)) = unsupported.iter().find(|(k, _)| *k == name) {
                self.warn(key.pos, path, format!("`{name}` is ignored: {why}"), None);
                continue;
            }
            let hint = misplaced_key_hint(name, known)
                .map(str::to_owned)
                .or_else(|| {
                    did_you_mean(name, known.iter().copied())
                        .map(|s| format!("did you mean `{s}`?"))
                });
            let message = format!("unknown key `{name}`");
            self.report(
                Severity::Warning,
                key.pos,
                path,
                message,
                hint.or_else(|| Some(format!("known keys here: {}", known.join(", ")))),
            );
        }
    }

    pub fn text(&mut self, node: &Node, path: &At<'_>) -> Option<String> {
        match &node.value {
            _ if node.is_null() => None,
            Value::Scalar(s) => Some(self.subst(&s.text, node.pos, path)),
            _ => {
                self.expected(node, path, "text");
                None
            }
        }
    }

    pub fn spanned_text(&mut self, node: &Node, path: &At<'_>) -> Option<Spanned<String>> {
        self.text(node, path).map(|t| Spanned::new(t, node.pos))
    }

    /// A list of texts; a single text counts as a list of one, as in Drone.
    pub fn texts(&mut self, node: &Node, path: &At<'_>) -> Vec<String> {
        self.spanned_texts(node, path)
            .into_iter()
            .map(|s| s.value)
            .collect()
    }

    pub fn spanned_texts(&mut self, node: &Node, path: &At<'_>) -> Vec<Spanned<String>> {
        match &node.value {
            _ if node.is_null() => Vec::new(),
            Value::Scalar(_) => self.spanned_text(node, path).into_iter().collect(),
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let item_path = path.index(i);
                    match &item.value {
                        Value::Scalar(_) if item.is_null() => {}
                        Value::Scalar(_) => out.extend(self.spanned_text(item, &item_path)),
                        _ => self.expected(item, &item_path, "text"),
                    }
                }
                out
            }
            Value::Map(_) => {
                self.expected(node, path, "a list of texts");
                Vec::new()
            }
        }
    }

    pub fn boolean(&mut self, node: &Node, path: &At<'_>) -> Option<bool> {
        let text = self.text(node, path)?;
        match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Some(true),
            "false" | "no" | "off" => Some(false),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected true or false, found `{text}`"),
                    None,
                );
                None
            }
        }
    }

    pub fn uint(&mut self, node: &Node, path: &At<'_>) -> Option<u64> {
        let text = self.text(node, path)?;
        match text.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a whole number, found `{text}`"),
                    None,
                );
                None
            }
        }
    }

    // ---- conditions -------------------------------------------------------------------------

    // ---- environment, settings, volumes -----------------------------------------------------

    // ---- container options ------------------------------------------------------------------

    // ---- steps ------------------------------------------------------------------------------

    // ---- pipelines --------------------------------------------------------------------------
}

#[cfg(test)]
mod tests {
    use super::container::parse_cpu;
    use super::env::plain_scalar_json;
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("10m"), Some(600));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("15"), Some(900));
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration("10"), Some(600));
        assert_eq!(parse_duration("m"), None);
    }

    #[test]
    fn resource_amounts() {
        assert_eq!(parse_cpu("500m"), Some(500));
        assert_eq!(parse_cpu("1.5"), Some(1500));
        assert_eq!(parse_cpu("1000"), Some(1000));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("1Gi"), Some(1 << 30));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("lots"), None);
    }

    #[test]
    fn plain_scalars_keep_their_text() {
        assert_eq!(plain_scalar_json("1.10"), serde_json::json!("1.10"));
        assert_eq!(plain_scalar_json("1.5"), serde_json::json!(1.5));
        assert_eq!(plain_scalar_json("42"), serde_json::json!(42));
        assert_eq!(plain_scalar_json("007"), serde_json::json!("007"));
        assert_eq!(plain_scalar_json("true"), serde_json::json!(true));
        assert_eq!(plain_scalar_json("yes"), serde_json::json!("yes"));
    }
}
