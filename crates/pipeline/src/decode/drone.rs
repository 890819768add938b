//! Drone's documents: `kind: pipeline` (and the 0.8 layout), and `kind: secret`.

use super::*;

impl Decoder<'_> {
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
        if let Some(n) = f.get("image_pull_secrets") {
            pipeline.pull_secrets = self.texts(n, &root.key("image_pull_secrets"));
        }
        if let Some(n) = f.get("lock") {
            pipeline.lock = self.lock_name(n, &root.key("lock"));
        }
        self.pod_options(&mut f, &root, pipeline.kind, &mut pipeline.pod);
        if let Some(n) = f.get("deploy") {
            pipeline.deploy = self.deploy(n, &root.key("deploy"));
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
            "image_pull_secrets",
            "deploy",
        ];
        let keys: Vec<&str> = KEYS.iter().chain(pod::POD_KEYS).copied().collect();
        self.finish(&f, &root, &keys, UNSUPPORTED_PIPELINE_KEYS);
        self.fold_step_pods(&mut pipeline, &root.key("steps"));
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
        self.fold_step_pods(&mut pipeline, &At::ROOT.key("pipeline"));
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
