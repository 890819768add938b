//! `when:` and `trigger:`: conditions of steps and pipelines, in every dialect's spelling.

use super::*;

impl Decoder<'_> {
    pub(super) fn pattern_list(&mut self, node: &Node, path: &At<'_>) -> Vec<String> {
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

    pub(super) fn path_constraint(&mut self, node: &Node, path: &At<'_>) -> PathConstraint {
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

    pub(super) fn condition_block(&mut self, node: &Node, path: &At<'_>) -> Conditions {
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
}
