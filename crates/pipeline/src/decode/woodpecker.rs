//! Woodpecker's workflows: one file, or each file of `.woodpecker/`.

use super::*;

impl Decoder<'_> {
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
        if let Some(n) = f.get("deploy") {
            pipeline.deploy = self.deploy(n, &At::ROOT.key("deploy"));
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
            "deploy",
            "branches",
            "variables",
            "version",
        ];
        self.finish(&f, &At::ROOT, KEYS, &[]);
        self.fold_step_pods(&mut pipeline, &At::ROOT.key("steps"));
        pipeline.graph = pipeline.steps.iter().any(|s| s.depends_on.is_some());
        self.group_steps(&mut pipeline);
        Self::prepend_clone_steps(&mut pipeline, clone_steps);
        Some(pipeline)
    }
}
