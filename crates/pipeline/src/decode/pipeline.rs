//! What every dialect's pipeline shares: platform and labels, workspace, clone, matrix,
//! notify targets and type.

use super::*;

impl Decoder<'_> {
    /// Woodpecker's `concurrency: N` or `{limit: N, group: NAME}`: at most N of the group's
    /// (by default this workflow's) builds run at once.
    pub(super) fn woodpecker_concurrency(
        &mut self,
        node: &Node,
        path: &At<'_>,
        pipeline: &mut Pipeline,
    ) {
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

    pub(super) fn empty_pipeline(&self, name: Spanned<String>, pos: Pos) -> Pipeline {
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
            pull_secrets: Vec::new(),
            concurrency: None,
            lock: None,
            group: None,
            pod: PodOptions::default(),
            deploy: None,
        }
    }

    pub(super) fn labels(&mut self, node: &Node, path: &At<'_>) -> BTreeMap<String, String> {
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

    pub(super) fn platform(&mut self, node: &Node, path: &At<'_>) -> Platform {
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
    pub(super) fn check_platform(
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

    pub(super) fn workspace(&mut self, node: &Node, path: &At<'_>) -> WorkspaceConfig {
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
    pub(super) fn notify(&mut self, node: &Node, path: &At<'_>) -> Vec<NotifySpec> {
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
                match kind.parse::<ChatKind>() {
                    Ok(kind) => Some(kind),
                    Err(_) => {
                        let hint = format!(
                            "use one of {}",
                            ChatKind::ALL.map(ChatKind::as_str).join(", ")
                        );
                        self.error(
                            n.pos,
                            &at.key("kind"),
                            format!("unknown chat service `{kind}`"),
                            Some(&hint),
                        );
                        None
                    }
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
            let named_rules = f
                .get("on")
                .map(|n| self.texts(n, &at.key("on")))
                .unwrap_or_else(|| NotifyRule::DEFAULT.map(|r| r.as_str().to_owned()).to_vec());
            let on = match named_rules
                .iter()
                .map(|r| r.parse::<NotifyRule>().map_err(|_| r))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(on) => on,
                Err(bad) => {
                    let hint =
                        format!("use {}", NotifyRule::ALL.map(NotifyRule::as_str).join(", "));
                    self.error(
                        item.pos,
                        &at.key("on"),
                        format!("unknown rule `{bad}`"),
                        Some(&hint),
                    );
                    Vec::new()
                }
            };
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
    pub(super) fn clone_config(&mut self, node: &Node, path: &At<'_>) -> CloneConfig {
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
    pub(super) fn custom_clone(&mut self, node: &Node, path: &At<'_>) -> (CloneConfig, Vec<Step>) {
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
    pub(super) fn prepend_clone_steps(pipeline: &mut Pipeline, clone_steps: Vec<Step>) {
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

    pub(super) fn matrix(&mut self, node: &Node, path: &At<'_>) -> Option<Matrix> {
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

    pub(super) fn pipeline_type(&mut self, node: &Node, path: &At<'_>) -> PipelineType {
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

    /// Turns Drone 0.8 `group:`s into graph edges: a run of steps with one group runs in
    /// parallel, after everything before it.
    pub(super) fn group_steps(&mut self, pipeline: &mut Pipeline) {
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
}

impl Decoder<'_> {
    /// `deploy: {environment, url, on_stop, auto_stop_in}`.
    pub(super) fn deploy(&mut self, node: &Node, path: &At<'_>) -> Option<DeployConfig> {
        let mut f = self.fields(node, path)?;
        let environment = f
            .get("environment")
            .and_then(|n| self.spanned_text(n, &path.key("environment")));
        let url = f.get("url").and_then(|n| self.text(n, &path.key("url")));
        let on_stop = f
            .get("on_stop")
            .and_then(|n| self.spanned_text(n, &path.key("on_stop")));
        let auto_stop_secs = f.get("auto_stop_in").and_then(|n| {
            let at = path.key("auto_stop_in");
            let text = self.text(n, &at)?;
            let secs = crate::deploy::parse_stop_after(&text);
            if secs.is_none() {
                self.error(
                    n.pos,
                    &at,
                    format!("`{text}` is not a duration"),
                    Some("write e.g. `3d`, `12h`, `1 week` or `2 days 12 hours`"),
                );
            }
            secs
        });
        self.finish(
            &f,
            path,
            &["environment", "url", "on_stop", "auto_stop_in"],
            &[],
        );
        let Some(environment) = environment else {
            self.error(
                node.pos,
                path,
                "`deploy` needs the `environment` it deploys to",
                Some("e.g. `deploy: {environment: review/${CI_COMMIT_REF_SLUG}}`"),
            );
            return None;
        };
        // For a build, the name is checked only where the pipeline runs (`compile`): a
        // `${DRONE_DEPLOY_TO}` is empty in the builds whose trigger skips its pipeline.
        if self.vars.is_none() && !crate::deploy::is_valid_name(&environment.value) {
            self.error(
                environment.pos,
                &path.key("environment"),
                format!(
                    "`{}` is not an environment name: letters, digits, spaces and `- _ / .` only, not starting or ending with `/`, at most {} characters",
                    environment.value,
                    crate::deploy::MAX_NAME_LEN
                ),
                Some("name it from slugs, e.g. `review/${CI_COMMIT_REF_SLUG}`"),
            );
        }
        if url.as_deref().is_some_and(|u| {
            !(u.starts_with("https://") || u.starts_with("http://"))
                || u.contains(char::is_whitespace)
        }) {
            self.error(
                node.pos,
                &path.key("url"),
                format!(
                    "`{}` is not an http(s) URL",
                    url.as_deref().unwrap_or_default()
                ),
                Some("e.g. `url: https://${CI_COMMIT_REF_SLUG}.review.example.com`"),
            );
        }
        Some(DeployConfig {
            environment,
            url,
            on_stop,
            auto_stop_secs,
            pos: node.pos,
        })
    }
}
