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
const UNSUPPORTED_PIPELINE_KEYS: &[(&str, &str)] = &[
    (
        "image_pull_secrets",
        "gantry does not read registry credentials from secrets yet",
    ),
    (
        "node_selector",
        "Kubernetes scheduling options are not used yet",
    ),
    (
        "tolerations",
        "Kubernetes scheduling options are not used yet",
    ),
    (
        "service_account_name",
        "Kubernetes options are not used yet",
    ),
    ("metadata", "Kubernetes options are not used yet"),
    ("host_aliases", "host aliases are not supported yet"),
    ("dns_config", "DNS options are not supported yet"),
    (
        "pool",
        "VM pools are Drone Cloud's; gantry runs the pipeline on its own runners",
    ),
];

const UNSUPPORTED_STEP_KEYS: &[(&str, &str)] = &[
    (
        "backend_options",
        "gantry's Docker backend has no per-step backend options (Woodpecker reads them for Kubernetes); set the container's options as step keys (`user`, `privileged`, `mem_limit`...)",
    ),
    ("when_files", "not supported"),
];

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

    fn timeout(&mut self, node: &Node, path: &At<'_>) -> Option<Spanned<u64>> {
        let text = self.text(node, path)?;
        match parse_duration(&text) {
            Some(secs) if secs > 0 => Some(Spanned::new(secs, node.pos)),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("`{text}` is not a duration"),
                    Some("write e.g. `90s`, `10m`, `1h30m`; a bare number counts minutes"),
                );
                None
            }
        }
    }

    /// A concurrency limit: a whole number of at least 1.
    fn limit_value(&mut self, node: &Node, path: &At<'_>) -> Option<Spanned<u32>> {
        let text = self.text(node, path)?;
        match text.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Some(Spanned::new(n, node.pos)),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("`{text}` is not a limit: write a number of at least 1"),
                    None,
                );
                None
            }
        }
    }

    /// Drone's `concurrency: {limit: N}`.
    fn concurrency(&mut self, node: &Node, path: &At<'_>) -> Option<Spanned<u32>> {
        let mut f = self.fields(node, path)?;
        let limit = f.get("limit");
        self.finish(&f, path, &["limit"], &[]);
        let Some(limit) = limit else {
            self.error(
                node.pos,
                path,
                "`concurrency` needs a `limit`",
                Some("write `concurrency: {limit: 1}`"),
            );
            return None;
        };
        self.limit_value(limit, &path.key("limit"))
    }

    /// `lock: NAME`.
    fn lock_name(&mut self, node: &Node, path: &At<'_>) -> Option<Spanned<String>> {
        let name = self.spanned_text(node, path)?;
        self.valid_lock(name, path)
    }

    fn valid_lock(&mut self, name: Spanned<String>, path: &At<'_>) -> Option<Spanned<String>> {
        let valid = !name.value.is_empty()
            && name.value.len() <= 100
            && name
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':'));
        if !valid {
            self.error(
                name.pos,
                path,
                format!("`{}` is not a lock name", name.value),
                Some("use letters, digits and `_-./:`, e.g. `lock: production-db`"),
            );
            return None;
        }
        Some(name)
    }

    /// `retry: N` or `retry: {count: N, delay: 10s}`.
    fn retry(&mut self, node: &Node, path: &At<'_>) -> Option<Spanned<Retry>> {
        const HINT: &str = "write `retry: 2`, or `retry: {count: 2, delay: 30s}`";
        let (count_node, delay_node) = match &node.value {
            Value::Map(_) => {
                let mut f = self.fields(node, path)?;
                let count = f.get("count");
                let delay = f.get("delay");
                self.finish(&f, path, &["count", "delay"], &[]);
                let Some(count) = count else {
                    self.error(node.pos, path, "`retry` needs a `count`", Some(HINT));
                    return None;
                };
                (count, delay)
            }
            _ => (node, None),
        };
        let text = self.text(count_node, path)?;
        let count = match text.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_RETRIES).contains(&n) => n,
            _ => {
                self.error(
                    count_node.pos,
                    path,
                    format!("`{text}` is not a number of retries from 1 to {MAX_RETRIES}"),
                    Some(HINT),
                );
                return None;
            }
        };
        let delay_secs = match delay_node {
            None => 0,
            Some(n) => {
                let delay_path = path.key("delay");
                let text = self.text(n, &delay_path)?;
                // A bare number is seconds here (a delay is short), unlike `timeout`.
                match text
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .or_else(|| parse_duration(&text))
                {
                    Some(secs) if secs <= 3600 => secs,
                    _ => {
                        self.error(
                            n.pos,
                            &delay_path,
                            format!("`{text}` is not a delay of at most an hour"),
                            Some("write e.g. `30s` or `2m`"),
                        );
                        return None;
                    }
                }
            }
        };
        Some(Spanned::new(Retry { count, delay_secs }, node.pos))
    }

    // ---- conditions -------------------------------------------------------------------------

    fn pattern_list(&mut self, node: &Node, path: &At<'_>) -> Vec<String> {
        let patterns = self.spanned_texts(node, path);
        for p in &patterns {
            if let Err(e) = Glob::new(&p.value, Mode::Path) {
                self.error(
                    p.pos,
                    path,
                    e.to_string(),
                    Some("close every `[` and `{`, or escape it with `\\`"),
                );
            }
        }
        patterns.into_iter().map(|p| p.value).collect()
    }

    /// `key: value`, `key: [values]` or `key: {include: ..., exclude: ...}`.
    pub fn constraint(&mut self, node: &Node, path: &At<'_>) -> Constraint {
        let mut constraint = Constraint {
            pos: node.pos,
            ..Constraint::default()
        };
        match &node.value {
            Value::Map(_) => {
                let Some(mut f) = self.fields(node, path) else {
                    return constraint;
                };
                if let Some(n) = f.get("include") {
                    constraint.include = self.pattern_list(n, &path.key("include"));
                }
                if let Some(n) = f.get("exclude") {
                    constraint.exclude = self.pattern_list(n, &path.key("exclude"));
                }
                self.finish(&f, path, &["include", "exclude"], &[]);
            }
            _ => constraint.include = self.pattern_list(node, path),
        }
        constraint
    }

    fn path_constraint(&mut self, node: &Node, path: &At<'_>) -> PathConstraint {
        let mut out = PathConstraint {
            include: Vec::new(),
            exclude: Vec::new(),
            on_empty: true,
            ignore_message: None,
            pos: node.pos,
        };
        match &node.value {
            Value::Map(_) => {
                let Some(mut f) = self.fields(node, path) else {
                    return out;
                };
                if let Some(n) = f.get("include") {
                    out.include = self.pattern_list(n, &path.key("include"));
                }
                if let Some(n) = f.get("exclude") {
                    out.exclude = self.pattern_list(n, &path.key("exclude"));
                }
                if let Some(n) = f.get("on_empty") {
                    out.on_empty = self.boolean(n, &path.key("on_empty")).unwrap_or(true);
                }
                if let Some(n) = f.get("ignore_message") {
                    out.ignore_message = self
                        .text(n, &path.key("ignore_message"))
                        .filter(|m| !m.is_empty());
                }
                self.finish(
                    &f,
                    path,
                    &["include", "exclude", "on_empty", "ignore_message"],
                    &[],
                );
            }
            _ => out.include = self.pattern_list(node, path),
        }
        out
    }

    /// A `when` or `trigger`: one mapping, or (Woodpecker) a list of alternatives.
    pub fn conditions(&mut self, node: &Node, path: &At<'_>) -> Vec<Conditions> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter(|(_, item)| !item.is_null())
                .map(|(i, item)| self.condition_block(item, &path.index(i)))
                .collect(),
            _ if node.is_null() => Vec::new(),
            _ => vec![self.condition_block(node, path)],
        }
    }

    fn condition_block(&mut self, node: &Node, path: &At<'_>) -> Conditions {
        let mut c = Conditions {
            pos: node.pos,
            ..Conditions::default()
        };
        let Some(mut f) = self.fields(node, path) else {
            return c;
        };
        if let Some(n) = f.get("branch") {
            c.branch = self.constraint(n, &path.key("branch"));
        }
        if let Some(n) = f.get("event") {
            c.event = self.constraint(n, &path.key("event"));
            for event in c.event.include.iter().chain(&c.event.exclude) {
                if !event.contains(['*', '?', '[', '{']) && !KNOWN_EVENTS.contains(&event.as_str())
                {
                    let hint = did_you_mean(event, KNOWN_EVENTS.iter().copied())
                        .map(|s| format!("did you mean `{s}`?"))
                        .unwrap_or_else(|| format!("known events: {}", KNOWN_EVENTS.join(", ")));
                    self.report(
                        Severity::Warning,
                        n.pos,
                        &path.key("event"),
                        format!("unknown event `{event}`: it never matches"),
                        Some(hint),
                    );
                }
            }
        }
        if let Some(n) = f.get("ref") {
            c.reference = self.constraint(n, &path.key("ref"));
        }
        if let Some(n) = f.get("status") {
            c.status = self.constraint(n, &path.key("status"));
            for status in c.status.include.iter().chain(&c.status.exclude) {
                if !matches!(status.as_str(), "success" | "failure") {
                    self.error(
                        n.pos,
                        &path.key("status"),
                        format!("unknown status `{status}`"),
                        Some("use `success` and/or `failure`"),
                    );
                }
            }
        }
        if let Some(n) = f.get("repo") {
            c.repo = self.constraint(n, &path.key("repo"));
        }
        if let Some(n) = f.get("target") {
            c.target = self.constraint(n, &path.key("target"));
        }
        if let Some(n) = f.get("environment") {
            // Woodpecker's name for the deployment target.
            c.target = self.constraint(n, &path.key("environment"));
        }
        if let Some(n) = f.get("cron") {
            c.cron = self.constraint(n, &path.key("cron"));
        }
        if let Some(n) = f.get("tag") {
            c.tag = self.constraint(n, &path.key("tag"));
        }
        if let Some(n) = f.get("action") {
            c.action = self.constraint(n, &path.key("action"));
        }
        if let Some(n) = f.get("instance") {
            c.instance = self.constraint(n, &path.key("instance"));
        }
        if let Some(n) = f.get("platform") {
            c.platform = self.constraint(n, &path.key("platform"));
        }
        for key in ["paths", "path"] {
            if let Some(n) = f.get(key) {
                c.paths = Some(self.path_constraint(n, &path.key(key)));
            }
        }
        if let Some(n) = f.get("matrix") {
            let at = path.key("matrix");
            match n.as_map() {
                Some(entries) => {
                    for (k, v) in entries {
                        let axis = k.as_str().unwrap_or_default();
                        if let Some(value) = self.text(v, &at.key(axis)) {
                            c.matrix.insert(axis.to_owned(), value);
                        }
                    }
                }
                None => self.expected(n, &at, "a mapping of matrix axes to values"),
            }
        }
        if let Some(n) = f.get("evaluate") {
            let at = path.key("evaluate");
            c.evaluate = self.spanned_text(n, &at);
            if let Some(source) = &c.evaluate
                && let Err(e) = crate::expr::check(&source.value)
            {
                let message = format!("invalid `evaluate` expression: {e}");
                self.error(n.pos, &at, message, Some("see Woodpecker's documentation of `evaluate`; gantry supports comparisons, `in`, `contains`, `startsWith`, `endsWith`, `matches`, `not`, `&&`, `||`, `+ - * / %`, member access (`$env.NAME`, `x.key`, `x[0]`), `len`, `fromJSON`, `int`, `string`, `lower`, `upper`, `trim`, `any`, `all`, `none`, `filter`"));
            }
        }
        self.finish(
            &f,
            path,
            CONDITION_KEYS,
            &[(
                "local",
                "gantry runs pipelines the same way locally and on a server",
            )],
        );
        c
    }

    // ---- environment, settings, volumes -----------------------------------------------------

    /// `environment` as a mapping (values or `from_secret`) or a `KEY=VALUE` list.
    pub fn environment(&mut self, node: &Node, path: &At<'_>) -> Vec<EnvVar> {
        let mut out = Vec::new();
        match &node.value {
            _ if node.is_null() => {}
            Value::Map(entries) => {
                for (k, v) in entries {
                    let name = k.as_str().unwrap_or_default().to_owned();
                    let var_path = path.key(&name);
                    let value = match &v.value {
                        _ if v.is_null() => EnvValue::Text(String::new()),
                        Value::Scalar(_) => {
                            EnvValue::Text(self.text(v, &var_path).unwrap_or_default())
                        }
                        Value::Map(_) => match v.get("from_secret").and_then(|s| s.as_str()) {
                            Some(secret) => EnvValue::Secret(self.subst(secret, v.pos, &var_path)),
                            None => {
                                self.error(
                                    v.pos,
                                    &var_path,
                                    "an environment value must be text or `from_secret: NAME`",
                                    None,
                                );
                                continue;
                            }
                        },
                        Value::Seq(_) => {
                            self.error(v.pos, &var_path, "an environment value must be text or `from_secret: NAME`, not a list", Some("join the values into one string"));
                            continue;
                        }
                    };
                    self.check_env_name(&name, k.pos, &var_path);
                    out.push(EnvVar {
                        name,
                        value,
                        pos: k.pos,
                    });
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = path.index(i);
                    let Some(text) = self.text(item, &item_path) else {
                        continue;
                    };
                    match text.split_once('=') {
                        Some((name, value)) => {
                            self.check_env_name(name, item.pos, &item_path);
                            out.push(EnvVar {
                                name: name.to_owned(),
                                value: EnvValue::Text(value.to_owned()),
                                pos: item.pos,
                            });
                        }
                        None => self.error(
                            item.pos,
                            &item_path,
                            format!("`{text}` is not KEY=VALUE"),
                            Some("write `NAME=value`, or use a mapping"),
                        ),
                    }
                }
            }
            Value::Scalar(_) => self.expected(node, path, "a mapping of variables"),
        }
        out
    }

    fn check_env_name(&mut self, name: &str, pos: Pos, path: &At<'_>) {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
        if !valid {
            self.error(
                pos,
                path,
                format!("`{name}` is not a valid environment variable name"),
                Some("use letters, digits and `_`"),
            );
        }
    }

    /// Drone 0.8 / old Woodpecker `secrets: [name, {source, target}]`, as environment.
    fn legacy_secrets(&mut self, node: &Node, path: &At<'_>) -> Vec<EnvVar> {
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of secret names");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let (source, target) = match &item.value {
                Value::Scalar(_) => {
                    let Some(name) = self.text(item, &item_path) else {
                        continue;
                    };
                    (name.clone(), name)
                }
                Value::Map(_) => {
                    let Some(mut f) = self.fields(item, &item_path) else {
                        continue;
                    };
                    let source = f.get("source").and_then(|n| self.text(n, &item_path));
                    let target = f.get("target").and_then(|n| self.text(n, &item_path));
                    self.finish(&f, &item_path, &["source", "target"], &[]);
                    let Some(source) = source else {
                        self.error(item.pos, &item_path, "a secret needs a `source`", None);
                        continue;
                    };
                    let target = target.unwrap_or_else(|| source.clone());
                    (source, target)
                }
                Value::Seq(_) => {
                    self.expected(item, &item_path, "a secret name");
                    continue;
                }
            };
            out.push(EnvVar {
                name: target.to_uppercase(),
                value: EnvValue::Secret(source),
                pos: item.pos,
            });
        }
        out
    }

    pub fn json(&mut self, node: &Node, path: &At<'_>) -> serde_json::Value {
        match &node.value {
            _ if node.is_null() => serde_json::Value::Null,
            Value::Scalar(s) => {
                let text = self.subst(&s.text, node.pos, path);
                if s.plain {
                    plain_scalar_json(&text)
                } else {
                    serde_json::Value::String(text)
                }
            }
            Value::Seq(items) => serde_json::Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| self.json(n, &path.index(i)))
                    .collect(),
            ),
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = k.as_str().unwrap_or_default().to_owned();
                        let value = self.json(v, &path.key(&key));
                        (key, value)
                    })
                    .collect(),
            ),
        }
    }

    fn setting(&mut self, name: &str, node: &Node, path: &At<'_>) -> Setting {
        let secret = node
            .as_map()
            .filter(|e| e.len() == 1)
            .and_then(|_| node.get("from_secret"))
            .and_then(Node::as_str);
        let value = match secret {
            Some(secret) => SettingValue::Secret(self.subst(secret, node.pos, path)),
            None => SettingValue::Value(self.json(node, path)),
        };
        Setting {
            name: name.to_owned(),
            value,
        }
    }

    fn settings(&mut self, node: &Node, path: &At<'_>) -> Vec<Setting> {
        let Some(entries) = node.as_map() else {
            self.expected(node, path, "a mapping of settings");
            return Vec::new();
        };
        entries
            .iter()
            .map(|(k, v)| {
                let name = k.as_str().unwrap_or_default();
                self.setting(name, v, &path.key(name))
            })
            .collect()
    }

    /// Pipeline-level volumes (Drone): `{name, host: {path}}` or `{name, temp: {medium}}`.
    fn volumes(&mut self, node: &Node, path: &At<'_>) -> Vec<Volume> {
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of volumes");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let Some(mut f) = self.fields(item, &item_path) else {
                continue;
            };
            let name = f
                .get("name")
                .and_then(|n| self.text(n, &item_path.key("name")));
            let host = f.get("host");
            let temp = f.get("temp");
            let has_temp = f.has("temp");
            self.finish(
                &f,
                &item_path,
                &["name", "host", "temp"],
                &[("claim", "persistent volume claims are not supported yet")],
            );
            let Some(name) = name else {
                self.error(item.pos, &item_path, "a volume needs a `name`", None);
                continue;
            };
            let source = if let Some(host) = host {
                let host_path = host
                    .get("path")
                    .and_then(|n| self.text(n, &item_path.key("host.path")));
                match host_path {
                    Some(path) => VolumeSource::Host { path },
                    None => {
                        self.error(
                            host.pos,
                            &item_path,
                            "a host volume needs `host: {path: /dir}`",
                            None,
                        );
                        continue;
                    }
                }
            } else if temp.is_some() || has_temp {
                let memory =
                    temp.and_then(|t| t.get("medium")).and_then(Node::as_str) == Some("memory");
                VolumeSource::Temp { memory }
            } else {
                self.error(
                    item.pos,
                    &item_path,
                    format!("volume `{name}` needs `host: {{path: ...}}` or `temp: {{}}`"),
                    None,
                );
                continue;
            };
            out.push(Volume {
                name,
                source,
                pos: item.pos,
            });
        }
        out
    }

    /// A `{name, path}` mapping (a mount, a device); `need` is the error and hint when one of
    /// them is missing.
    fn name_and_path(
        &mut self,
        item: &Node,
        at: &At<'_>,
        need: (&str, Option<&str>),
    ) -> Option<(String, String)> {
        let mut f = self.fields(item, at)?;
        let name = f.get("name").and_then(|n| self.text(n, &at.key("name")));
        let path = f.get("path").and_then(|n| self.text(n, &at.key("path")));
        self.finish(&f, at, &["name", "path"], &[]);
        if name.is_none() || path.is_none() {
            self.error(item.pos, at, need.0, need.1);
        }
        name.zip(path)
    }

    /// Step mounts: `{name, path}` (Drone) or `"src:dst[:ro]"` (Woodpecker, Drone 0.8).
    fn mounts(&mut self, node: &Node, path: &At<'_>) -> Vec<StepMount> {
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of volume mounts");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            match &item.value {
                Value::Scalar(_) => {
                    let Some(text) = self.text(item, &item_path) else {
                        continue;
                    };
                    let parts: Vec<&str> = text.split(':').collect();
                    let (src, dst, read_only) = match parts.as_slice() {
                        [src, dst] => (*src, *dst, false),
                        [src, dst, mode] => (*src, *dst, mode.split(',').any(|m| m == "ro")),
                        _ => {
                            self.error(
                                item.pos,
                                &item_path,
                                format!("`{text}` is not SOURCE:PATH[:ro]"),
                                Some("e.g. `/var/run/docker.sock:/var/run/docker.sock`"),
                            );
                            continue;
                        }
                    };
                    let mount = if src.starts_with('/') {
                        Mount::Host {
                            host: src.to_owned(),
                            path: dst.to_owned(),
                            read_only,
                        }
                    } else {
                        Mount::Named {
                            name: src.to_owned(),
                            path: dst.to_owned(),
                        }
                    };
                    out.push(StepMount {
                        mount,
                        pos: item.pos,
                    });
                }
                Value::Map(_) => {
                    let need = ("a volume mount needs `name` and `path`", None);
                    if let Some((name, path)) = self.name_and_path(item, &item_path, need) {
                        out.push(StepMount {
                            mount: Mount::Named { name, path },
                            pos: item.pos,
                        });
                    }
                }
                Value::Seq(_) => self.expected(item, &item_path, "a volume mount"),
            }
        }
        out
    }

    fn resources(&mut self, node: &Node, path: &At<'_>) -> Resources {
        let mut out = Resources::default();
        let Some(mut f) = self.fields(node, path) else {
            return out;
        };
        for (key, set) in [("limits", &mut out.limits), ("requests", &mut out.requests)] {
            let Some(n) = f.get(key) else { continue };
            let set_path = path.key(key);
            let Some(mut g) = self.fields(n, &set_path) else {
                continue;
            };
            if let Some(cpu) = g.get("cpu") {
                let text = self.text(cpu, &set_path).unwrap_or_default();
                set.cpu_millis = parse_cpu(&text);
                if set.cpu_millis.is_none() {
                    self.error(
                        cpu.pos,
                        &set_path,
                        format!("`{text}` is not a CPU amount"),
                        Some("write millicores (`500`, `500m`) or cores (`1.5`)"),
                    );
                }
            }
            if let Some(memory) = g.get("memory") {
                let text = self.text(memory, &set_path).unwrap_or_default();
                set.memory_bytes = parse_bytes(&text);
                if set.memory_bytes.is_none() {
                    self.error(
                        memory.pos,
                        &set_path,
                        format!("`{text}` is not an amount of memory"),
                        Some("write e.g. `512MiB`, `1Gi` or a number of bytes"),
                    );
                }
            }
            self.finish(&g, &set_path, &["cpu", "memory"], &[]);
        }
        self.finish(&f, path, &["limits", "requests"], &[]);
        out
    }

    fn pull(&mut self, node: &Node, path: &At<'_>) -> Pull {
        let Some(text) = self.text(node, path) else {
            return Pull::IfNotExists;
        };
        match text.as_str() {
            "always" | "true" => Pull::Always,
            "never" => Pull::Never,
            "if-not-exists" | "default" | "false" | "" => Pull::IfNotExists,
            other => {
                self.error(
                    node.pos,
                    path,
                    format!("unknown pull policy `{other}`"),
                    Some("use `always`, `if-not-exists` or `never`"),
                );
                Pull::IfNotExists
            }
        }
    }

    fn failure(&mut self, node: &Node, path: &At<'_>) -> Failure {
        let Some(text) = self.text(node, path) else {
            return Failure::Fail;
        };
        match text.as_str() {
            "ignore" => Failure::Ignore,
            "fast" | "fail-fast" | "fail_fast" => Failure::Fast,
            "" | "fail" | "always" => Failure::Fail,
            other => {
                self.error(
                    node.pos,
                    path,
                    format!("unknown failure mode `{other}`"),
                    Some("use `ignore`, `fast` or `fail`"),
                );
                Failure::Fail
            }
        }
    }

    /// `depends_on`: names, and Woodpecker 3's objects. `{name: X, optional: true}` is a name
    /// that is dropped when the build has no such workflow (or the workflow no such step);
    /// `{workflow: NAME, step: STEP}`, a step waiting on a step of another workflow, is
    /// refused with the way to write it (gantry orders stages, not steps across them).
    fn dependencies(
        &mut self,
        node: &Node,
        path: &At<'_>,
        in_step: bool,
    ) -> (Vec<Spanned<String>>, BTreeSet<String>) {
        let Value::Seq(items) = &node.value else {
            return (self.spanned_texts(node, path), BTreeSet::new());
        };
        let (mut names, mut optional) = (Vec::new(), BTreeSet::new());
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            if item.as_map().is_none() {
                names.extend(self.spanned_texts(item, &item_path));
                continue;
            }
            if item.get("workflow").is_some() {
                let workflow = item
                    .get("workflow")
                    .and_then(Node::as_str)
                    .unwrap_or("NAME");
                let (message, hint) = if in_step {
                    (
                        "gantry does not start a step after a step of another workflow",
                        format!(
                            "make the whole workflow wait for it instead: `depends_on: [{workflow}]` at the top of this file"
                        ),
                    )
                } else {
                    (
                        "a workflow's `depends_on` names workflows",
                        format!("write `depends_on: [{workflow}]`"),
                    )
                };
                self.error(item.pos, &item_path, message, Some(&hint));
                continue;
            }
            let Some(mut f) = self.fields(item, &item_path) else {
                continue;
            };
            let name = f
                .get("name")
                .and_then(|n| self.spanned_text(n, &item_path.key("name")));
            let is_optional = f
                .get("optional")
                .and_then(|n| self.boolean(n, &item_path.key("optional")))
                .unwrap_or(false);
            self.finish(&f, &item_path, &["name", "optional"], &[]);
            match name {
                Some(name) => {
                    if is_optional {
                        optional.insert(name.value.clone());
                    }
                    names.push(name);
                }
                None => self.error(
                    item.pos,
                    &item_path,
                    "a `depends_on` entry written as a map needs `name`",
                    Some("write `- name: build` (and `optional: true` to drop it when the build has no such one)"),
                ),
            }
        }
        (names, optional)
    }

    /// Woodpecker's `concurrency: N` or `{limit: N, group: NAME}`: at most N of the group's
    /// (by default this workflow's) builds run at once.
    fn woodpecker_concurrency(&mut self, node: &Node, path: &At<'_>, pipeline: &mut Pipeline) {
        if let Value::Scalar(_) = node.value {
            pipeline.concurrency = self.limit_value(node, path);
            return;
        }
        let Some(mut f) = self.fields(node, path) else {
            return;
        };
        let group = f
            .get("group")
            .and_then(|n| self.spanned_text(n, &path.key("group")));
        let limit = f.get("limit");
        self.finish(&f, path, &["limit", "group"], &[]);
        let Some(limit) = limit else {
            self.error(
                node.pos,
                path,
                "`concurrency` needs a `limit`",
                Some("write `concurrency: {limit: 1, group: NAME}`, or `concurrency: 1`"),
            );
            return;
        };
        pipeline.concurrency = self.limit_value(limit, &path.key("limit"));
        if let (Some(group), Some(limit)) = (group, &pipeline.concurrency) {
            if limit.value == 1 {
                // One at a time across the group: a lock of the repository's.
                pipeline.group = self.valid_lock(group, &path.key("group"));
            } else {
                self.error(
                    group.pos,
                    &path.key("group"),
                    "a concurrency `group` with a limit above 1 is not supported: gantry counts a limit per workflow",
                    Some("use `limit: 1` for a group (one at a time), or drop `group` to limit this workflow"),
                );
            }
        }
    }

    // ---- container options ------------------------------------------------------------------

    /// Reads the Docker container keys of a step (`dns`, `devices`, `ports`, `shm_size`...)
    /// into its [`ContainerOptions`], noting where trusted-only ones are set.
    fn container_options(&mut self, f: &mut Fields<'_>, path: &At<'_>, step: &mut Step) {
        let options = &mut step.options;
        if let Some(n) = f.get("dns") {
            let at = path.key("dns");
            for server in self.spanned_texts(n, &at) {
                if server.value.parse::<std::net::IpAddr>().is_err() {
                    self.error(
                        server.pos,
                        &at,
                        format!("`{}` is not the IP address of a DNS server", server.value),
                        Some("write addresses, e.g. `dns: [1.1.1.1, 8.8.8.8]`"),
                    );
                    continue;
                }
                options.dns.push(server.value);
            }
            step.trusted_only.push((Rule::Dns, n.pos));
        }
        if let Some(n) = f.get("dns_search") {
            options.dns_search = self.texts(n, &path.key("dns_search"));
            step.trusted_only.push((Rule::DnsSearch, n.pos));
        }
        if let Some(n) = f.get("extra_hosts") {
            let at = path.key("extra_hosts");
            for entry in self.spanned_texts(n, &at) {
                match extra_host(&entry.value) {
                    Some(line) => options.extra_hosts.push(line),
                    None => self.error(
                        entry.pos,
                        &at,
                        format!("`{}` is not NAME:ADDRESS", entry.value),
                        Some("write e.g. `extra_hosts: [\"db.local:10.0.0.5\"]` (or `host-gateway` for the runner's host)"),
                    ),
                }
            }
            step.trusted_only.push((Rule::ExtraHosts, n.pos));
        }
        if let Some(n) = f.get("devices") {
            options.devices = self.devices(n, &path.key("devices"));
            step.trusted_only.push((Rule::Devices, n.pos));
        }
        if let Some(n) = f.get("ports") {
            options.ports = self.ports(n, &path.key("ports"));
            if options.ports.iter().any(|p| p.host.is_some()) {
                step.trusted_only.push((Rule::HostPorts, n.pos));
            }
        }
        for (key, list) in [
            ("cap_add", &mut options.cap_add),
            ("cap_drop", &mut options.cap_drop),
        ] {
            let Some(n) = f.get(key) else { continue };
            let at = path.key(key);
            for cap in self.spanned_texts(n, &at) {
                let name = cap.value.trim().to_ascii_uppercase();
                let name = name.strip_prefix("CAP_").unwrap_or(&name).to_owned();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                    self.error(
                        cap.pos,
                        &at,
                        format!("`{}` is not a Linux capability", cap.value),
                        Some("write capability names, e.g. `cap_add: [NET_ADMIN, SYS_PTRACE]`"),
                    );
                    continue;
                }
                list.push(name);
            }
            if key == "cap_add" {
                step.trusted_only.push((Rule::CapAdd, n.pos));
            }
        }
        if let Some(n) = f.get("shm_size") {
            options.shm_size = self.byte_size(n, &path.key("shm_size"));
        }
        if let Some(n) = f.get("mem_limit") {
            let at = path.key("mem_limit");
            if step.resources.limits.memory_bytes.is_some() {
                self.error(
                    n.pos,
                    &at,
                    "the memory limit is set twice: `mem_limit` and `resources.limits.memory`",
                    Some("keep one of them"),
                );
            } else if let Some(bytes) = self.byte_size(n, &at) {
                step.resources.limits.memory_bytes = Some(bytes);
            }
        }
        if let Some(n) = f.get("memswap_limit") {
            let at = path.key("memswap_limit");
            options.memswap_limit = if self.text(n, &at).as_deref().map(str::trim) == Some("-1") {
                Some(-1)
            } else {
                self.byte_size(n, &at).and_then(|b| i64::try_from(b).ok())
            };
        }
        for (key, slot) in [
            ("cpu_shares", &mut options.cpu_shares),
            ("cpu_quota", &mut options.cpu_quota),
            ("cpu_period", &mut options.cpu_period),
        ] {
            if let Some(n) = f.get(key) {
                *slot = self.uint(n, &path.key(key));
            }
        }
        if let Some(n) = f.get("cpu_set") {
            let at = path.key("cpu_set");
            let set = self.texts(n, &at).join(",");
            if set.is_empty()
                || !set
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == '-')
            {
                self.error(
                    n.pos,
                    &at,
                    format!("`{set}` is not a set of CPUs"),
                    Some("write CPU numbers and ranges, e.g. `cpu_set: \"0-1\"` or `[0, 2]`"),
                );
            } else {
                options.cpu_set = Some(set);
            }
        }
        if let Some(n) = f.get("tmpfs") {
            let at = path.key("tmpfs");
            for entry in self.spanned_texts(n, &at) {
                let (mount, opts) = entry.value.split_once(':').unwrap_or((&entry.value, ""));
                if !mount.starts_with('/') {
                    self.error(
                        entry.pos,
                        &at,
                        format!("`{}` is not an absolute path", entry.value),
                        Some("write e.g. `tmpfs: [\"/run:size=64m\"]`"),
                    );
                    continue;
                }
                options.tmpfs.push((mount.to_owned(), opts.to_owned()));
            }
            step.trusted_only.push((Rule::Tmpfs, n.pos));
        }
    }

    /// An amount of bytes: `64m`, `1GiB`, a number of bytes.
    fn byte_size(&mut self, node: &Node, path: &At<'_>) -> Option<u64> {
        let text = self.text(node, path)?;
        let bytes = parse_bytes(&text);
        if bytes.is_none() {
            self.error(
                node.pos,
                path,
                format!("`{text}` is not an amount of memory"),
                Some("write e.g. `64m`, `1GiB` or a number of bytes"),
            );
        }
        bytes
    }

    /// `devices:` as `HOST[:CONTAINER[:PERMISSIONS]]` texts or Drone's `{name, path}`.
    fn devices(&mut self, node: &Node, path: &At<'_>) -> Vec<Device> {
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of devices");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = path.index(i);
            match &item.value {
                Value::Map(_) => {
                    let need = (
                        "a device needs `name` (a host volume of the pipeline) and `path`",
                        Some("or write `/dev/fuse:/dev/fuse`"),
                    );
                    if let Some((name, dest)) = self.name_and_path(item, &at, need) {
                        out.push(Device {
                            source: DeviceSource::Volume(name),
                            path: dest,
                            permissions: "rwm".to_owned(),
                        });
                    }
                }
                _ => {
                    let Some(text) = self.text(item, &at) else {
                        continue;
                    };
                    let parts: Vec<&str> = text.split(':').collect();
                    let (host, dest, permissions) = match parts.as_slice() {
                        [host] => (*host, *host, "rwm"),
                        [host, dest] => (*host, *dest, "rwm"),
                        [host, dest, perms] => (*host, *dest, *perms),
                        _ => ("", "", ""),
                    };
                    let valid = host.starts_with('/')
                        && dest.starts_with('/')
                        && !permissions.is_empty()
                        && permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
                    if !valid {
                        self.error(
                            item.pos,
                            &at,
                            format!("`{text}` is not HOST_DEVICE[:CONTAINER_PATH[:PERMISSIONS]]"),
                            Some("write e.g. `/dev/fuse:/dev/fuse:rwm`"),
                        );
                        continue;
                    }
                    out.push(Device {
                        source: DeviceSource::Host(host.to_owned()),
                        path: dest.to_owned(),
                        permissions: permissions.to_owned(),
                    });
                }
            }
        }
        out
    }

    /// `ports:` as numbers, `HOST:CONTAINER[/udp]` texts or `{port, host, protocol}`.
    fn ports(&mut self, node: &Node, path: &At<'_>) -> Vec<Port> {
        const HINT: &str =
            "write e.g. `ports: [6379]`, `[\"8080:80\"]` or `[{port: 80, host: 8080}]`";
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of ports");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = path.index(i);
            let port = match &item.value {
                Value::Map(_) => {
                    let Some(mut g) = self.fields(item, &at) else {
                        continue;
                    };
                    let container = g.get("port").and_then(|n| self.text(n, &at.key("port")));
                    let host = g.get("host").and_then(|n| self.text(n, &at.key("host")));
                    let protocol = g
                        .get("protocol")
                        .and_then(|n| self.text(n, &at.key("protocol")));
                    self.finish(&g, &at, &["port", "host", "protocol"], &[]);
                    let text = format!(
                        "{}{}/{}",
                        host.map(|h| format!("{h}:")).unwrap_or_default(),
                        container.unwrap_or_default(),
                        protocol
                            .unwrap_or_else(|| "tcp".to_owned())
                            .to_ascii_lowercase()
                    );
                    parse_port(&text)
                }
                _ => self.text(item, &at).and_then(|t| parse_port(&t)),
            };
            match port {
                Some(port) => out.push(port),
                None => self.error(item.pos, &at, "not a port", Some(HINT)),
            }
        }
        out
    }

    // ---- steps ------------------------------------------------------------------------------

    /// A step or service. `fallback_name` names steps of a map (Woodpecker, Drone 0.8).
    pub fn step(
        &mut self,
        node: &Node,
        path: &At<'_>,
        fallback_name: Option<Spanned<String>>,
        service: bool,
    ) -> Option<Step> {
        let mut f = self.fields(node, path)?;
        let name_node = f.get("name");
        let name = match (
            name_node.and_then(|n| self.spanned_text(n, &path.key("name"))),
            fallback_name,
        ) {
            (Some(name), _) => name,
            (None, Some(fallback)) => fallback,
            (None, None) => {
                let what = if service { "a service" } else { "a step" };
                self.error(
                    node.pos,
                    path,
                    format!("{what} needs a `name`"),
                    Some("add `name: build` (names must be unique in the pipeline)"),
                );
                Spanned::new(
                    format!(
                        "{}{}",
                        if service { "service-" } else { "step-" },
                        node.pos.line
                    ),
                    node.pos,
                )
            }
        };
        let mut step = Step {
            name,
            pos: node.pos,
            image: None,
            pull: Pull::IfNotExists,
            commands: Vec::new(),
            entrypoint: Vec::new(),
            command: Vec::new(),
            environment: Vec::new(),
            settings: Vec::new(),
            when: Vec::new(),
            depends_on: None,
            optional_depends_on: BTreeSet::new(),
            failure: Failure::Fail,
            detach: service,
            privileged: Spanned::new(false, node.pos),
            mounts: Vec::new(),
            network_mode: None,
            user: None,
            shell: None,
            working_dir: None,
            resources: Resources::default(),
            timeout: None,
            group: None,
            retry: None,
            lock: None,
            options: ContainerOptions::default(),
            caches: Vec::new(),
            trusted_only: Vec::new(),
        };
        if let Some(n) = f.get("image") {
            step.image = self.spanned_text(n, &path.key("image"));
        }
        if let Some(n) = f.get("pull") {
            step.pull = self.pull(n, &path.key("pull"));
        }
        if let Some(n) = f.get("commands") {
            step.commands = self.texts(n, &path.key("commands"));
        }
        if let Some(n) = f.get("entrypoint") {
            step.entrypoint = self.texts(n, &path.key("entrypoint"));
        }
        if let Some(n) = f.get("command") {
            step.command = self.texts(n, &path.key("command"));
        }
        if let Some(n) = f.get("environment") {
            step.environment = self.environment(n, &path.key("environment"));
        }
        if let Some(n) = f.get("secrets") {
            let secrets = self.legacy_secrets(n, &path.key("secrets"));
            step.environment.extend(secrets);
        }
        if let Some(n) = f.get("settings") {
            step.settings = self.settings(n, &path.key("settings"));
        }
        if let Some(n) = f.get("when") {
            step.when = self.conditions(n, &path.key("when"));
        }
        if f.has("depends_on") {
            let (names, optional) = f
                .get("depends_on")
                .map(|n| self.dependencies(n, &path.key("depends_on"), true))
                .unwrap_or_default();
            step.depends_on = Some(names);
            step.optional_depends_on = optional;
        }
        if let Some(n) = f.get("failure") {
            step.failure = self.failure(n, &path.key("failure"));
        }
        if let Some(n) = f.get("detach") {
            step.detach = self.boolean(n, &path.key("detach")).unwrap_or(false) || service;
        }
        if let Some(n) = f.get("privileged") {
            step.privileged = Spanned::new(
                self.boolean(n, &path.key("privileged")).unwrap_or(false),
                n.pos,
            );
        }
        if let Some(n) = f.get("volumes") {
            step.mounts = self.mounts(n, &path.key("volumes"));
        }
        if let Some(n) = f.get("network_mode") {
            step.network_mode = self.spanned_text(n, &path.key("network_mode"));
        }
        if let Some(n) = f.get("user") {
            step.user = self.text(n, &path.key("user"));
        }
        if let Some(n) = f.get("shell") {
            step.shell = self.text(n, &path.key("shell"));
        }
        for key in ["working_dir", "directory"] {
            if let Some(n) = f.get(key) {
                step.working_dir = self.text(n, &path.key(key));
            }
        }
        if let Some(n) = f.get("resources") {
            step.resources = self.resources(n, &path.key("resources"));
        }
        if let Some(n) = f.get("timeout") {
            step.timeout = self.timeout(n, &path.key("timeout"));
        }
        if let Some(n) = f.get("group") {
            step.group = self.text(n, &path.key("group"));
        }
        if let Some(n) = f.get("lock") {
            step.lock = self.lock_name(n, &path.key("lock"));
        }
        if let Some(n) = f.get("cache") {
            let at = path.key("cache");
            for dir in self.spanned_texts(n, &at) {
                let path_ok = !dir.value.is_empty()
                    && !dir.value.split('/').any(|part| part == "..")
                    && !dir.value.trim_matches('/').is_empty();
                if !path_ok {
                    self.error(
                        dir.pos,
                        &at,
                        format!("`{}` is not a directory to cache", dir.value),
                        Some("write absolute paths or paths in the workspace, e.g. `cache: [/go/pkg/mod, node_modules]`"),
                    );
                    continue;
                }
                step.caches.push(dir);
            }
            if step.detach {
                self.error(
                    n.pos,
                    &at,
                    "a service or detached step cannot keep a cache",
                    Some("give `cache:` to the steps that fill and read it"),
                );
                step.caches.clear();
            }
        }
        if let Some(n) = f.get("retry") {
            step.retry = self.retry(n, &path.key("retry"));
            if step.detach && step.retry.is_some() {
                self.error(
                    n.pos,
                    &path.key("retry"),
                    "a service or detached step is not retried: it runs for the whole stage",
                    Some("remove `retry`, or make it a plain step"),
                );
                step.retry = None;
            }
        }
        self.container_options(&mut f, path, &mut step);
        if self.dialect == Dialect::Woodpecker && !step.settings.is_empty() {
            // Woodpecker's linter: a plugin is configured by its settings alone.
            let at = path.key("settings");
            if !step.commands.is_empty() {
                self.error(
                    step.pos,
                    &at,
                    "a step cannot have both `commands` and `settings`",
                    Some("a plugin runs its own entrypoint with its settings: remove `commands`, or move the settings into `environment` of a commands step"),
                );
            }
            if !step.entrypoint.is_empty() {
                self.error(
                    step.pos,
                    &at,
                    "a step cannot have both `entrypoint` and `settings`",
                    Some("a plugin runs its own entrypoint: remove `entrypoint`"),
                );
            }
            if f.has("environment") {
                self.warn(
                    step.pos,
                    &at,
                    "a plugin should not have both `environment` and `settings`",
                    Some("give the plugin what it needs as settings (Woodpecker 3 refuses `environment` on plugins)"),
                );
            }
        }
        const STEP_KEYS: &[&str] = &[
            "name",
            "image",
            "pull",
            "commands",
            "entrypoint",
            "command",
            "environment",
            "secrets",
            "settings",
            "when",
            "depends_on",
            "failure",
            "detach",
            "privileged",
            "volumes",
            "network_mode",
            "user",
            "shell",
            "working_dir",
            "directory",
            "resources",
            "timeout",
            "group",
            "retry",
            "lock",
            "cache",
            "dns",
            "dns_search",
            "extra_hosts",
            "devices",
            "ports",
            "cap_add",
            "cap_drop",
            "shm_size",
            "mem_limit",
            "memswap_limit",
            "cpu_shares",
            "cpu_quota",
            "cpu_period",
            "cpu_set",
            "tmpfs",
        ];
        if self.dialect == Dialect::DroneLegacy {
            // Drone 0.8 plugins took their parameters as keys of the step itself.
            let rest: Vec<&(Node, Node)> = f.unused().collect();
            for (k, v) in rest {
                let key = k.as_str().unwrap_or_default();
                if UNSUPPORTED_STEP_KEYS.iter().any(|(u, _)| *u == key) {
                    continue;
                }
                if let Some(near) = did_you_mean(key, STEP_KEYS.iter().copied()) {
                    self.warn(
                        k.pos,
                        path,
                        format!(
                            "`{key}` is passed to the plugin as PLUGIN_{}",
                            key.to_uppercase()
                        ),
                        Some(&format!("did you mean `{near}`?")),
                    );
                }
                let setting = self.setting(key, v, &path.key(key));
                step.settings.push(setting);
            }
            f.used.iter_mut().zip(f.entries).for_each(|(u, (k, _))| {
                *u = *u
                    || !UNSUPPORTED_STEP_KEYS
                        .iter()
                        .any(|(x, _)| Some(*x) == k.as_str());
            });
        }
        self.finish(&f, path, STEP_KEYS, UNSUPPORTED_STEP_KEYS);
        Some(step)
    }

    /// Steps given as a list (each with `name`) or as a map from name to step.
    pub fn steps(&mut self, node: &Node, path: &At<'_>, service: bool) -> Vec<Step> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.step(item, &path.index(i), None, service))
                .collect(),
            Value::Map(entries) => entries
                .iter()
                .filter_map(|(k, v)| {
                    let name = k.as_str().unwrap_or_default();
                    let fallback = Spanned::new(name.to_owned(), k.pos);
                    self.step(v, &path.named(name), Some(fallback), service)
                })
                .collect(),
            _ => {
                self.expected(node, path, "a list or mapping of steps");
                Vec::new()
            }
        }
    }

    // ---- pipelines --------------------------------------------------------------------------

    fn empty_pipeline(&self, name: Spanned<String>, pos: Pos) -> Pipeline {
        Pipeline {
            name,
            file: self.file.to_owned(),
            dialect: self.dialect,
            pos,
            kind: PipelineType::Docker,
            platform: Platform::default(),
            labels: BTreeMap::new(),
            steps: Vec::new(),
            services: Vec::new(),
            volumes: Vec::new(),
            trigger: Vec::new(),
            depends_on: Vec::new(),
            optional_depends_on: BTreeSet::new(),
            runs_on: StatusFilter::SUCCESS,
            clone: CloneConfig::default(),
            workspace: WorkspaceConfig::default(),
            environment: Vec::new(),
            matrix: None,
            timeout: None,
            graph: false,
            notify: Vec::new(),
            concurrency: None,
            lock: None,
            group: None,
        }
    }

    fn labels(&mut self, node: &Node, path: &At<'_>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(entries) = node.as_map() else {
            self.expected(node, path, "a mapping of labels");
            return out;
        };
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default().to_owned();
            if let Some(value) = self.text(v, &path.key(&key)) {
                out.insert(key, value);
            }
        }
        out
    }

    fn platform(&mut self, node: &Node, path: &At<'_>) -> Platform {
        let mut out = Platform::default();
        if let Value::Scalar(_) = node.value {
            // `platform: linux/amd64` (Drone 0.8, old Woodpecker).
            let text = self.text(node, path).unwrap_or_default();
            let mut parts = text.splitn(3, '/');
            out.os = parts.next().filter(|s| !s.is_empty()).map(str::to_owned);
            out.arch = parts.next().map(str::to_owned);
            out.variant = parts.next().map(str::to_owned);
            return out;
        }
        let Some(mut f) = self.fields(node, path) else {
            return out;
        };
        out.os = f.get("os").and_then(|n| self.text(n, path));
        out.arch = f.get("arch").and_then(|n| self.text(n, path));
        out.variant = f.get("variant").and_then(|n| self.text(n, path));
        if let Some(n) = f.get("version") {
            out.version = self.text(n, path);
            self.warn(
                n.pos,
                &path.key("version"),
                "`platform.version` is not matched: gantry routes stages by os, arch and variant",
                Some("to pick runners of one Windows release, give them a label and name it in `node:`"),
            );
        }
        self.finish(&f, path, &["os", "arch", "variant", "version"], &[]);
        out
    }

    /// Drone's linter refuses a platform its runners do not run: Docker pipelines on
    /// `linux` or `windows` with `amd64`, `arm64` or `arm`; `exec` pipelines also on `darwin`.
    fn check_platform(
        &mut self,
        platform: &Platform,
        kind: PipelineType,
        node: &Node,
        path: &At<'_>,
    ) {
        let systems: &[&str] = if kind == PipelineType::Local {
            &["linux", "windows", "darwin"]
        } else {
            &["linux", "windows"]
        };
        const ARCHES: &[&str] = &["amd64", "arm64", "arm"];
        if let Some(os) = platform.os.as_deref().filter(|os| !systems.contains(os)) {
            let hint = format!("Drone's runners run {}", systems.join(", "));
            self.error(
                node.pos,
                &path.key("os"),
                format!("unsupported os `{os}`: no runner of a `type: {}` pipeline runs it, so the stage could never start", kind.as_str()),
                Some(&hint),
            );
        }
        if let Some(arch) = platform.arch.as_deref().filter(|a| !ARCHES.contains(a)) {
            let hint = format!("use one of {}", ARCHES.join(", "));
            self.error(
                node.pos,
                &path.key("arch"),
                format!("unsupported architecture `{arch}`: Drone's runners do not run it, so the stage could never start"),
                Some(&hint),
            );
        }
    }

    fn workspace(&mut self, node: &Node, path: &At<'_>) -> WorkspaceConfig {
        let mut out = WorkspaceConfig::default();
        let Some(mut f) = self.fields(node, path) else {
            return out;
        };
        out.base = f.get("base").and_then(|n| self.text(n, path));
        out.path = f.get("path").and_then(|n| self.text(n, path));
        self.finish(&f, path, &["base", "path"], &[]);
        out
    }

    /// `notify:` — a list of `{kind, url | url: {from_secret}, on, branch, event}`.
    fn notify(&mut self, node: &Node, path: &At<'_>) -> Vec<NotifySpec> {
        let Value::Seq(items) = &node.value else {
            self.expected(node, path, "a list of notification targets");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = path.index(i);
            let Some(mut f) = self.fields(item, &at) else {
                continue;
            };
            let kind = f.get("kind").and_then(|n| {
                let kind = self.text(n, &at.key("kind"))?;
                if NOTIFY_KINDS.contains(&kind.as_str()) {
                    Some(kind)
                } else {
                    let hint = format!("use one of {}", NOTIFY_KINDS.join(", "));
                    self.error(
                        n.pos,
                        &at.key("kind"),
                        format!("unknown chat service `{kind}`"),
                        Some(&hint),
                    );
                    None
                }
            });
            let (mut url, mut url_secret) = (None, None);
            match f.get("url") {
                Some(n) if n.as_map().is_some() => {
                    if let Some(mut secret) = self.fields(n, &at.key("url")) {
                        url_secret = secret
                            .get("from_secret")
                            .and_then(|s| self.text(s, &at.key("url").key("from_secret")));
                        self.finish(&secret, &at.key("url"), &["from_secret"], &[]);
                    }
                }
                Some(n) => {
                    url = self.text(n, &at.key("url"));
                    if let Some(text) = &url
                        && !(text.starts_with("https://") || text.starts_with("http://"))
                    {
                        self.error(
                            n.pos,
                            &at.key("url"),
                            "url must be an http(s) webhook URL",
                            Some("or take it from a secret: `url: {from_secret: NAME}`"),
                        );
                        url = None;
                    }
                }
                None => {}
            }
            if url.is_none() && url_secret.is_none() {
                self.error(
                    item.pos,
                    &at,
                    "a notify entry needs `url` (or `url: {from_secret: NAME}`)",
                    None,
                );
            }
            let mut on = f
                .get("on")
                .map(|n| self.texts(n, &at.key("on")))
                .unwrap_or_else(|| {
                    crate::model::DEFAULT_NOTIFY_RULES
                        .map(str::to_owned)
                        .to_vec()
                });
            if let Some(bad) = on.iter().find(|r| !NOTIFY_RULES.contains(&r.as_str())) {
                let hint = format!("use {}", NOTIFY_RULES.join(", "));
                self.error(
                    item.pos,
                    &at.key("on"),
                    format!("unknown rule `{bad}`"),
                    Some(&hint),
                );
                on.clear();
            }
            let branches = f
                .get("branch")
                .map(|n| self.texts(n, &at.key("branch")))
                .unwrap_or_default();
            let events = f
                .get("event")
                .map(|n| self.texts(n, &at.key("event")))
                .unwrap_or_default();
            self.finish(&f, &at, &["kind", "url", "on", "branch", "event"], &[]);
            if let Some(kind) = kind
                && (url.is_some() || url_secret.is_some())
                && !on.is_empty()
            {
                out.push(NotifySpec {
                    kind,
                    url,
                    url_secret,
                    on,
                    branches,
                    events,
                });
            }
        }
        out
    }

    /// Drone 1.x `clone: {disable, depth, skip_verify, tags, retries}`.
    fn clone_config(&mut self, node: &Node, path: &At<'_>) -> CloneConfig {
        let mut out = CloneConfig::default();
        let Some(mut f) = self.fields(node, path) else {
            return out;
        };
        if let Some(n) = f.get("disable") {
            out.disable = self.boolean(n, &path.key("disable")).unwrap_or(false);
        }
        if let Some(n) = f.get("depth") {
            out.depth = self
                .uint(n, &path.key("depth"))
                .and_then(|d| u32::try_from(d).ok())
                .filter(|d| *d > 0);
        }
        if let Some(n) = f.get("skip_verify") {
            out.skip_verify = self.boolean(n, &path.key("skip_verify")).unwrap_or(false);
        }
        if let Some(n) = f.get("tags") {
            out.tags = self.boolean(n, &path.key("tags")).unwrap_or(false);
        }
        self.finish(
            &f,
            path,
            &["disable", "depth", "skip_verify", "tags"],
            &[
                ("retries", "clone retries are not configurable yet"),
                ("trace", "clone tracing is not supported"),
            ],
        );
        out
    }

    /// Drone 0.8 / Woodpecker `clone:`: custom clone steps, as a map (Drone 0.8 and
    /// Woodpecker before 2) or a list (Woodpecker 2 and 3). A step of a git clone plugin is
    /// done by gantry's own clone, keeping its `depth`, `tags` and `skip_verify`; a step of
    /// any other image, or one cloning another `remote`, runs as written before the other
    /// steps (like Woodpecker, without clone credentials), and when no step is left to the
    /// built-in clone it replaces it.
    fn custom_clone(&mut self, node: &Node, path: &At<'_>) -> (CloneConfig, Vec<Step>) {
        let mut out = CloneConfig::default();
        let mut steps = Vec::new();
        let mut built_in = false;
        let entries: Vec<(Option<Spanned<String>>, &Node, At<'_>)> = match &node.value {
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| {
                    let name = k.as_str().unwrap_or_default();
                    (
                        Some(Spanned::new(name.to_owned(), k.pos)),
                        v,
                        path.named(name),
                    )
                })
                .collect(),
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (None, v, path.index(i)))
                .collect(),
            _ => {
                self.expected(node, path, "a list of clone steps");
                return (out, steps);
            }
        };
        for (name, v, step_path) in entries {
            let image = v.get("image").and_then(Node::as_str).unwrap_or_default();
            let settings = v.get("settings").unwrap_or(v);
            // A git plugin given another `remote` clones another repository: a step of its own.
            let other_repository = settings.get("remote").is_some();
            if !image.is_empty() && (!is_git_plugin(image) || other_repository) {
                let name = name.or_else(|| {
                    v.get("name")
                        .and_then(Node::as_str)
                        .map(|n| Spanned::new(n.to_owned(), v.pos))
                });
                steps.extend(self.step(v, &step_path, name, false));
                continue;
            }
            built_in = true;
            let mut unused = Vec::new();
            for (key, value) in settings.as_map().unwrap_or_default() {
                match key.as_str().unwrap_or_default() {
                    "depth" => {
                        out.depth = self
                            .uint(value, &step_path.key("depth"))
                            .and_then(|d| u32::try_from(d).ok())
                            .filter(|d| *d > 0);
                    }
                    "tags" => {
                        out.tags = self.boolean(value, &step_path.key("tags")).unwrap_or(false)
                    }
                    "skip_verify" => {
                        out.skip_verify = self
                            .boolean(value, &step_path.key("skip_verify"))
                            .unwrap_or(false);
                    }
                    "name" | "image" | "settings" | "pull" | "when" => {}
                    other => unused.push(format!("`{other}`")),
                }
            }
            let message = if unused.is_empty() {
                format!("the clone step of `{image}` is done by gantry's built-in clone")
            } else {
                format!(
                    "the clone step of `{image}` is done by gantry's built-in clone, which does not use {}",
                    unused.join(", ")
                )
            };
            self.warn(
                v.pos,
                &step_path,
                message,
                Some("`depth`, `tags` and `skip_verify` are kept; remove the step, or use `clone: {depth: N}`"),
            );
        }
        // Only clone steps of other images: they replace the built-in clone.
        out.disable = !built_in && !steps.is_empty();
        (out, steps)
    }

    /// Puts custom clone steps first: in order, and (in a graph) before every step that
    /// would otherwise start at once.
    fn prepend_clone_steps(pipeline: &mut Pipeline, clone_steps: Vec<Step>) {
        if clone_steps.is_empty() {
            return;
        }
        let names: Vec<Spanned<String>> = clone_steps.iter().map(|s| s.name.clone()).collect();
        let mut clone_steps = clone_steps;
        if pipeline.graph {
            for (i, step) in clone_steps.iter_mut().enumerate() {
                step.depends_on = Some(names[..i].last().cloned().into_iter().collect());
            }
            let last = names.last().cloned();
            for step in &mut pipeline.steps {
                if step.depends_on.as_ref().is_none_or(Vec::is_empty) {
                    step.depends_on = Some(last.clone().into_iter().collect());
                }
            }
        }
        pipeline.steps.splice(0..0, clone_steps);
    }

    fn matrix(&mut self, node: &Node, path: &At<'_>) -> Option<Matrix> {
        const MAX_COMBINATIONS: usize = 64;
        let entries = node.as_map().or_else(|| {
            self.expected(node, path, "a mapping of axes, or `include:` a list");
            None
        })?;
        let mut combinations: Vec<BTreeMap<String, String>> = Vec::new();
        if let Some(include) = node.get("include") {
            let Value::Seq(items) = &include.value else {
                self.expected(include, &path.key("include"), "a list of combinations");
                return None;
            };
            for (i, item) in items.iter().enumerate() {
                let include = path.key("include");
                let item_path = include.index(i);
                let Some(pairs) = item.as_map() else {
                    self.expected(item, &item_path, "a mapping of axis values");
                    continue;
                };
                let mut combination = BTreeMap::new();
                for (k, v) in pairs {
                    let key = k.as_str().unwrap_or_default().to_owned();
                    combination.insert(key, self.text(v, &item_path).unwrap_or_default());
                }
                combinations.push(combination);
            }
        } else {
            combinations.push(BTreeMap::new());
            for (k, v) in entries {
                let axis = k.as_str().unwrap_or_default().to_owned();
                let values = self.texts(v, &path.key(&axis));
                if values.is_empty() {
                    self.error(
                        v.pos,
                        &path.key(&axis),
                        format!("matrix axis `{axis}` has no values"),
                        None,
                    );
                    return None;
                }
                if combinations.len().saturating_mul(values.len()) > MAX_COMBINATIONS {
                    break;
                }
                combinations = combinations
                    .into_iter()
                    .flat_map(|c| {
                        let axis = &axis;
                        values.iter().map(move |value| {
                            let mut c = c.clone();
                            c.insert(axis.clone(), value.clone());
                            c
                        })
                    })
                    .collect();
            }
        }
        let total: usize = if node.get("include").is_some() {
            combinations.len()
        } else {
            entries
                .iter()
                .map(|(_, v)| match &v.value {
                    Value::Seq(items) => items.len().max(1),
                    _ => 1,
                })
                .fold(1usize, usize::saturating_mul)
        };
        if total > MAX_COMBINATIONS {
            self.error(
                node.pos,
                path,
                format!("the matrix has {total} combinations, more than {MAX_COMBINATIONS}"),
                Some("use `include:` to list only the combinations you need"),
            );
            return None;
        }
        if combinations.is_empty() {
            self.error(node.pos, path, "the matrix has no combinations", None);
            return None;
        }
        Some(Matrix {
            combinations,
            pos: node.pos,
        })
    }

    fn pipeline_type(&mut self, node: &Node, path: &At<'_>) -> PipelineType {
        let text = self.text(node, path).unwrap_or_default();
        let kind = match text.as_str() {
            "" | "docker" => PipelineType::Docker,
            "exec" | "local" => PipelineType::Local,
            "kubernetes" => PipelineType::Kubernetes,
            "vm" => PipelineType::Vm,
            "ssh" => PipelineType::Ssh,
            "digitalocean" => PipelineType::DigitalOcean,
            "macstadium" => PipelineType::MacStadium,
            other => {
                self.error(
                    node.pos,
                    path,
                    format!("pipeline type `{other}` is not a type of any Drone runner"),
                    Some("use `type: docker` (containers) or `type: exec` (the runner's host)"),
                );
                return PipelineType::Docker;
            }
        };
        if !kind.is_supported() {
            self.warn(
                node.pos,
                path,
                format!(
                    "gantry has no `{}` backend: a build that runs this pipeline errors instead of running it elsewhere",
                    kind.as_str()
                ),
                Some("use `type: docker` to run its steps in containers"),
            );
        }
        kind
    }

    /// One `kind: pipeline` document of a gantry / Drone 1.x file.
    pub fn drone_pipeline(&mut self, node: &Node, index: usize) -> Option<Pipeline> {
        let fallback_name = if index == 0 {
            "default".to_owned()
        } else {
            format!("default-{}", index + 1)
        };
        let mut f = self.fields(node, &At::ROOT)?;
        f.get("kind");
        let name = f
            .get("name")
            .and_then(|n| self.spanned_text(n, &At::ROOT.key("name")))
            .unwrap_or_else(|| Spanned::new(fallback_name, node.pos));
        let pipeline_name = name.value.clone();
        let pipelines = At::ROOT.key("pipeline");
        let root = pipelines.named(&pipeline_name);
        let mut pipeline = self.empty_pipeline(name, node.pos);
        if let Some(n) = f.get("type") {
            pipeline.kind = self.pipeline_type(n, &root.key("type"));
        }
        if let Some(n) = f.get("platform") {
            pipeline.platform = self.platform(n, &root.key("platform"));
            self.check_platform(&pipeline.platform, pipeline.kind, n, &root.key("platform"));
        }
        if let Some(n) = f.get("node") {
            pipeline.labels = self.labels(n, &root.key("node"));
        }
        match f.get("steps") {
            Some(n) => pipeline.steps = self.steps(n, &root.key("steps"), false),
            None => self.error(
                node.pos,
                &root,
                "a pipeline needs `steps`",
                Some("add `steps:` with at least one step"),
            ),
        }
        if let Some(n) = f.get("services") {
            pipeline.services = self.steps(n, &root.key("services"), true);
        }
        if let Some(n) = f.get("volumes") {
            pipeline.volumes = self.volumes(n, &root.key("volumes"));
        }
        if let Some(n) = f.get("trigger") {
            pipeline.trigger = self.conditions(n, &root.key("trigger"));
            pipeline.runs_on = crate::conditions::status_filter(&pipeline.trigger);
        }
        if let Some(n) = f.get("depends_on") {
            pipeline.depends_on = self.spanned_texts(n, &root.key("depends_on"));
        }
        if let Some(n) = f.get("clone") {
            pipeline.clone = self.clone_config(n, &root.key("clone"));
        }
        if let Some(n) = f.get("workspace") {
            pipeline.workspace = self.workspace(n, &root.key("workspace"));
        }
        if let Some(n) = f.get("environment") {
            pipeline.environment = self.environment(n, &root.key("environment"));
        }
        if let Some(n) = f.get("timeout") {
            pipeline.timeout = self.timeout(n, &root.key("timeout"));
        }
        if let Some(n) = f.get("notify") {
            pipeline.notify = self.notify(n, &root.key("notify"));
        }
        if let Some(n) = f.get("concurrency") {
            pipeline.concurrency = self.concurrency(n, &root.key("concurrency"));
        }
        if let Some(n) = f.get("lock") {
            pipeline.lock = self.lock_name(n, &root.key("lock"));
        }
        const KEYS: &[&str] = &[
            "kind",
            "type",
            "name",
            "platform",
            "node",
            "steps",
            "services",
            "volumes",
            "trigger",
            "depends_on",
            "clone",
            "workspace",
            "environment",
            "timeout",
            "notify",
            "concurrency",
            "lock",
        ];
        self.finish(&f, &root, KEYS, UNSUPPORTED_PIPELINE_KEYS);
        pipeline.graph = pipeline.steps.iter().any(|s| s.depends_on.is_some());
        Some(pipeline)
    }

    /// A Drone 0.8 file: one pipeline of named steps in file order.
    pub fn legacy_pipeline(&mut self, node: &Node) -> Option<Pipeline> {
        let mut f = self.fields(node, &At::ROOT)?;
        let mut pipeline =
            self.empty_pipeline(Spanned::new("default".to_owned(), node.pos), node.pos);
        if let Some(n) = f.get("pipeline") {
            pipeline.steps = self.steps(n, &At::ROOT.key("pipeline"), false);
        }
        if let Some(n) = f.get("services") {
            pipeline.services = self.steps(n, &At::ROOT.key("services"), true);
        }
        if let Some(n) = f.get("branches") {
            let branch = self.constraint(n, &At::ROOT.key("branches"));
            pipeline.trigger = vec![Conditions {
                pos: n.pos,
                branch,
                ..Conditions::default()
            }];
        }
        if let Some(n) = f.get("when") {
            pipeline.trigger = self.conditions(n, &At::ROOT.key("when"));
        }
        if let Some(n) = f.get("matrix") {
            pipeline.matrix = self.matrix(n, &At::ROOT.key("matrix"));
        }
        let mut clone_steps = Vec::new();
        if let Some(n) = f.get("clone") {
            (pipeline.clone, clone_steps) = self.custom_clone(n, &At::ROOT.key("clone"));
        }
        if let Some(n) = f.get("workspace") {
            pipeline.workspace = self.workspace(n, &At::ROOT.key("workspace"));
        }
        if let Some(n) = f.get("platform") {
            pipeline.platform = self.platform(n, &At::ROOT.key("platform"));
        }
        if let Some(n) = f.get("labels") {
            pipeline.labels = self.labels(n, &At::ROOT.key("labels"));
        }
        f.get("variables");
        self.finish(
            &f,
            &At::ROOT,
            &[
                "pipeline",
                "services",
                "branches",
                "when",
                "matrix",
                "clone",
                "workspace",
                "platform",
                "labels",
                "variables",
            ],
            &[],
        );
        self.group_steps(&mut pipeline);
        Self::prepend_clone_steps(&mut pipeline, clone_steps);
        Some(pipeline)
    }

    /// Turns Drone 0.8 `group:`s into graph edges: a run of steps with one group runs in
    /// parallel, after everything before it.
    fn group_steps(&mut self, pipeline: &mut Pipeline) {
        if pipeline.graph || !pipeline.steps.iter().any(|s| s.group.is_some()) {
            return;
        }
        let mut previous: Vec<Spanned<String>> = Vec::new();
        let mut current: Vec<Spanned<String>> = Vec::new();
        let mut current_group: Option<String> = None;
        for step in &mut pipeline.steps {
            let same = step.group.is_some() && step.group == current_group;
            if !same {
                previous = std::mem::take(&mut current);
                current_group = step.group.clone();
            }
            step.depends_on = Some(previous.clone());
            current.push(step.name.clone());
        }
        pipeline.graph = true;
    }

    /// One Woodpecker workflow file.
    pub fn woodpecker_pipeline(&mut self, node: &Node, name: &str) -> Option<Pipeline> {
        let mut f = self.fields(node, &At::ROOT)?;
        let mut pipeline = self.empty_pipeline(Spanned::new(name.to_owned(), node.pos), node.pos);
        match f.get("steps") {
            Some(n) => pipeline.steps = self.steps(n, &At::ROOT.key("steps"), false),
            None => self.error(
                node.pos,
                &At::ROOT,
                "a workflow needs `steps`",
                Some("add `steps:` with at least one step"),
            ),
        }
        if let Some(n) = f.get("services") {
            pipeline.services = self.steps(n, &At::ROOT.key("services"), true);
        }
        if let Some(n) = f.get("when") {
            pipeline.trigger = self.conditions(n, &At::ROOT.key("when"));
        }
        if let Some(n) = f.get("branches") {
            // Woodpecker before 2: a top-level branch filter, ANDed with `when`.
            let branch = self.constraint(n, &At::ROOT.key("branches"));
            if pipeline.trigger.is_empty() {
                pipeline.trigger.push(Conditions {
                    pos: n.pos,
                    ..Conditions::default()
                });
            }
            for alternative in &mut pipeline.trigger {
                if alternative.branch.is_empty() {
                    alternative.branch = branch.clone();
                }
            }
        }
        if let Some(n) = f.get("depends_on") {
            let at = At::ROOT.key("depends_on");
            (pipeline.depends_on, pipeline.optional_depends_on) = self.dependencies(n, &at, false);
        }
        if let Some(n) = f.get("runs_on") {
            let runs_on = self.constraint(n, &At::ROOT.key("runs_on"));
            pipeline.runs_on = crate::conditions::status_filter(&[Conditions {
                status: runs_on,
                ..Conditions::default()
            }]);
        }
        if let Some(n) = f.get("matrix") {
            pipeline.matrix = self.matrix(n, &At::ROOT.key("matrix"));
        }
        if let Some(n) = f.get("labels") {
            pipeline.labels = self.labels(n, &At::ROOT.key("labels"));
            // Woodpecker routes by a `platform` label its agents set to their own platform:
            // gantry's runners report theirs, so the label becomes the stage's platform.
            if let Some(platform) = pipeline.labels.remove("platform") {
                let mut parts = platform.splitn(3, '/');
                pipeline.platform.os = parts.next().filter(|s| !s.is_empty()).map(str::to_owned);
                pipeline.platform.arch = parts.next().map(str::to_owned);
                pipeline.platform.variant = parts.next().map(str::to_owned);
            }
        }
        if let Some(n) = f.get("platform") {
            pipeline.platform = self.platform(n, &At::ROOT.key("platform"));
        }
        let mut clone_steps = Vec::new();
        if let Some(n) = f.get("clone") {
            (pipeline.clone, clone_steps) = self.custom_clone(n, &At::ROOT.key("clone"));
        }
        if let Some(n) = f.get("skip_clone") {
            pipeline.clone.disable = self
                .boolean(n, &At::ROOT.key("skip_clone"))
                .unwrap_or(false);
        }
        if let Some(n) = f.get("workspace") {
            pipeline.workspace = self.workspace(n, &At::ROOT.key("workspace"));
        }
        if let Some(n) = f.get("concurrency") {
            self.woodpecker_concurrency(n, &At::ROOT.key("concurrency"), &mut pipeline);
        }
        if let Some(n) = f.get("compile") {
            self.error(
                n.pos,
                &At::ROOT.key("compile"),
                "`compile` steps generate the workflow at build time, and gantry does not run them",
                Some("commit the generated workflow files into `.woodpecker/` instead"),
            );
        }
        f.get("variables");
        f.get("version");
        const KEYS: &[&str] = &[
            "steps",
            "services",
            "when",
            "depends_on",
            "runs_on",
            "matrix",
            "labels",
            "platform",
            "clone",
            "skip_clone",
            "workspace",
            "concurrency",
            "compile",
            "branches",
            "variables",
            "version",
        ];
        self.finish(&f, &At::ROOT, KEYS, &[]);
        pipeline.graph = pipeline.steps.iter().any(|s| s.depends_on.is_some());
        self.group_steps(&mut pipeline);
        Self::prepend_clone_steps(&mut pipeline, clone_steps);
        Some(pipeline)
    }

    /// `kind: secret`.
    pub fn secret_document(&mut self, node: &Node) -> Option<SecretDocument> {
        let mut f = self.fields(node, &At::ROOT)?;
        f.get("kind");
        let name = f
            .get("name")
            .and_then(|n| self.text(n, &At::ROOT.key("name")));
        let mut doc = SecretDocument {
            name: name.clone().unwrap_or_default(),
            path: None,
            key: None,
            pos: node.pos,
        };
        if let Some(get) = f.get("get") {
            doc.path = get
                .get("path")
                .and_then(|n| self.text(n, &At::ROOT.key("get.path")));
            doc.key = get
                .get("name")
                .and_then(|n| self.text(n, &At::ROOT.key("get.name")));
        }
        if let Some(data) = f.get("data") {
            self.warn(data.pos, &At::ROOT.key("data"), "encrypted `data` secrets are Drone's and cannot be read by gantry", Some("add the secret in the repository's settings in gantry and refer to it with `from_secret`"));
        }
        self.finish(
            &f,
            &At::ROOT,
            &["kind", "name", "get", "data"],
            &[("type", "secret types are not used")],
        );
        if name.is_none() {
            self.error(
                node.pos,
                &At::ROOT,
                "a `kind: secret` document needs a `name`",
                None,
            );
            return None;
        }
        Some(doc)
    }
}

/// Keys that belong to another dialect or another level, with where they go instead.
fn misplaced_key_hint(name: &str, known: &[&str]) -> Option<&'static str> {
    match name {
        "when" if known.contains(&"trigger") => Some(
            "conditions of a whole pipeline go in `trigger:`; Drone ignores `when` here, and so does gantry",
        ),
        "trigger" if known.contains(&"when") && known.contains(&"runs_on") => {
            Some("Woodpecker workflows take their conditions in a top-level `when:`")
        }
        "branches" if known.contains(&"trigger") => {
            Some("Drone 1.x files filter branches with `trigger: {branch: [...]}`")
        }
        _ => None,
    }
}

/// Whether `image` is a git clone plugin (Drone's, Woodpecker's), whose work gantry's own
/// clone does.
fn is_git_plugin(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    matches!(
        name,
        "plugins/git"
            | "drone/git"
            | "woodpeckerci/plugin-git"
            | "quay.io/woodpeckerci/plugin-git"
            | "codeberg.org/woodpecker-plugins/git"
    )
}

/// A plain YAML scalar as JSON: null, booleans and numbers that read back the same; anything
/// else stays text (so `1.10` stays `"1.10"`, not `1.1`).
fn plain_scalar_json(text: &str) -> serde_json::Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return serde_json::Value::Null,
        "true" | "True" | "TRUE" => return serde_json::Value::Bool(true),
        "false" | "False" | "FALSE" => return serde_json::Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = text.parse::<i64>()
        && n.to_string() == text
    {
        return serde_json::Value::from(n);
    }
    if let Ok(x) = text.parse::<f64>()
        && x.is_finite()
        && x.to_string() == text
        && let Some(n) = serde_json::Number::from_f64(x)
    {
        return serde_json::Value::Number(n);
    }
    serde_json::Value::String(text.to_owned())
}

/// `90s`, `10m`, `1h30m`, `2h`; a bare number counts minutes.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(minutes) = text.parse::<u64>() {
        return minutes.checked_mul(60);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut any = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        number.clear();
        any = true;
    }
    (any && number.is_empty()).then_some(total)
}

fn parse_cpu(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Some(millis) = text.strip_suffix('m') {
        return millis.parse().ok();
    }
    if text.contains('.') {
        let cores: f64 = text.parse().ok()?;
        return (cores.is_finite() && cores >= 0.0).then(|| (cores * 1000.0).round() as u64);
    }
    text.parse().ok()
}

pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "ki" | "kib" => 1 << 10,
        "m" | "mb" | "mi" | "mib" => 1 << 20,
        "g" | "gb" | "gi" | "gib" => 1 << 30,
        "t" | "tb" | "ti" | "tib" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// `name:address` (or Compose's `name=address`) as Docker's `name:address`; the address is an
/// IP or `host-gateway`.
fn extra_host(text: &str) -> Option<String> {
    let (name, address) = text.split_once('=').or_else(|| text.split_once(':'))?;
    let (name, address) = (name.trim(), address.trim());
    let address_ok = address == "host-gateway" || address.parse::<std::net::IpAddr>().is_ok();
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    (name_ok && address_ok).then(|| format!("{name}:{address}"))
}

/// `6379`, `6379/udp`, `8080:80`, `8080:80/tcp`.
fn parse_port(text: &str) -> Option<Port> {
    let (ports, protocol) = text.trim().split_once('/').unwrap_or((text.trim(), "tcp"));
    let udp = match protocol {
        "tcp" => false,
        "udp" => true,
        _ => return None,
    };
    let (host, container) = match ports.split_once(':') {
        Some((host, container)) => (
            Some(host.parse::<u16>().ok().filter(|p| *p > 0)?),
            container,
        ),
        None => (None, ports),
    };
    let container = container.parse::<u16>().ok().filter(|p| *p > 0)?;
    Some(Port {
        container,
        host,
        udp,
    })
}

#[cfg(test)]
mod tests {
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
