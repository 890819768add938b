//! One step (or service) of any dialect, with its timeout, retry, failure policy, locks and
//! dependencies.

use super::*;

impl Decoder<'_> {
    pub(super) fn timeout(&mut self, node: &Node, path: &At<'_>) -> Option<Spanned<u64>> {
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
    pub(super) fn limit_value(&mut self, node: &Node, path: &At<'_>) -> Option<Spanned<u32>> {
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
    pub(super) fn concurrency(&mut self, node: &Node, path: &At<'_>) -> Option<Spanned<u32>> {
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
    pub(super) fn lock_name(&mut self, node: &Node, path: &At<'_>) -> Option<Spanned<String>> {
        let name = self.spanned_text(node, path)?;
        self.valid_lock(name, path)
    }

    pub(super) fn valid_lock(
        &mut self,
        name: Spanned<String>,
        path: &At<'_>,
    ) -> Option<Spanned<String>> {
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
    pub(super) fn retry(&mut self, node: &Node, path: &At<'_>) -> Option<Spanned<Retry>> {
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

    pub(super) fn failure(&mut self, node: &Node, path: &At<'_>) -> Failure {
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
    pub(super) fn dependencies(
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

    /// A step or service. `fallback_name` names steps of a map (Woodpecker, Drone 0.8).
    pub fn step(
        &mut self,
        node: &Node,
        path: &At<'_>,
        fallback_name: Option<Spanned<String>>,
        service: bool,
    ) -> Option<Step> {
        let mut f = self.fields(node, path)?;
        let name = self.step_name(f.get("name"), node, path, fallback_name, service);
        let mut step = blank_step(name, node.pos, service);
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
            self.step_caches(n, &path.key("cache"), &mut step);
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
        if let Some(n) = f.get("backend_options") {
            self.backend_options(n, &path.key("backend_options"), &mut step);
        }
        if self.dialect == Dialect::Woodpecker && !step.settings.is_empty() {
            self.plugin_rules(&step, f.has("environment"), path);
        }
        if self.dialect == Dialect::DroneLegacy {
            self.legacy_plugin_keys(&mut f, path, &mut step);
        }
        self.finish(&f, path, STEP_KEYS, UNSUPPORTED_STEP_KEYS);
        Some(step)
    }

    /// A step's name: its own, the key it is under, or (an error) one made from its line.
    fn step_name(
        &mut self,
        name_node: Option<&Node>,
        node: &Node,
        path: &At<'_>,
        fallback_name: Option<Spanned<String>>,
        service: bool,
    ) -> Spanned<String> {
        match (
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
        }
    }

    /// `cache:` directories: in the workspace or absolute, never up and out; none for a
    /// service.
    fn step_caches(&mut self, n: &Node, at: &At<'_>, step: &mut Step) {
        for dir in self.spanned_texts(n, at) {
            let path_ok = !dir.value.is_empty()
                && !dir.value.split('/').any(|part| part == "..")
                && !dir.value.trim_matches('/').is_empty();
            if !path_ok {
                self.error(
                    dir.pos,
                    at,
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
                at,
                "a service or detached step cannot keep a cache",
                Some("give `cache:` to the steps that fill and read it"),
            );
            step.caches.clear();
        }
    }

    /// Woodpecker's linter: a plugin is configured by its settings alone.
    fn plugin_rules(&mut self, step: &Step, has_environment: bool, path: &At<'_>) {
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
        if has_environment {
            self.warn(
                step.pos,
                &at,
                "a plugin should not have both `environment` and `settings`",
                Some("give the plugin what it needs as settings (Woodpecker 3 refuses `environment` on plugins)"),
            );
        }
    }

    /// Drone 0.8 plugins took their parameters as keys of the step itself.
    fn legacy_plugin_keys(&mut self, f: &mut Fields<'_>, path: &At<'_>, step: &mut Step) {
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
}

/// Keys that belong to another dialect or another level, with where they go instead.
pub(super) fn misplaced_key_hint(name: &str, known: &[&str]) -> Option<&'static str> {
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
pub(super) fn is_git_plugin(image: &str) -> bool {
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

/// A step with nothing set but its name.
fn blank_step(name: Spanned<String>, pos: Pos, service: bool) -> Step {
    Step {
        name,
        pos,
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
        privileged: Spanned::new(false, pos),
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
        pod: None,
    }
}

/// The keys a step may have (others are warned about, or refused when another dialect's).
const STEP_KEYS: &[&str] = &[
    "name",
    "backend_options",
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
