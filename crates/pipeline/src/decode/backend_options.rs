//! Woodpecker's `backend_options` of a step: `docker.user`, and `kubernetes`. gantry runs a stage's steps in one
//! pod, so what Woodpecker sets on a step's own pod (service account, node selector,
//! tolerations, runtime class, labels, annotations, `fsGroup`) is asked of the stage's pod:
//! steps that ask differently are an error. What belongs to a container (resources, user,
//! privileges, confinement) stays the step's. Woodpecker applies these options only on its
//! Kubernetes backend: a pipeline that has them runs only on a runner that offers Kubernetes.

use super::*;

const KUBERNETES_KEYS: &[&str] = &[
    "resources",
    "serviceAccountName",
    "nodeSelector",
    "tolerations",
    "securityContext",
    "runtimeClassName",
    "labels",
    "annotations",
    "secrets",
];

const SECURITY_CONTEXT_KEYS: &[&str] = &[
    "privileged",
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "seccompProfile",
    "apparmorProfile",
];

impl Decoder<'_> {
    /// Reads `backend_options` into the step: its container's settings, and in `step.pod`
    /// what it asks of the stage's pod.
    pub(super) fn backend_options(&mut self, node: &Node, path: &At<'_>, step: &mut Step) {
        let Some(mut f) = self.fields(node, path) else {
            return;
        };
        if let Some(n) = f.get("docker") {
            self.docker_options(n, &path.key("docker"), step);
        }
        if let Some(n) = f.get("kubernetes") {
            let at = path.key("kubernetes");
            let pod = self.kubernetes_options(n, &at, step);
            step.pod = Some(Spanned::new(pod, n.pos));
        }
        for (key, _) in f.unused() {
            let name = key.as_str().unwrap_or_default();
            self.error(
                key.pos,
                path,
                format!(
                    "gantry has no `{name}` backend options: it reads `docker` and `kubernetes`"
                ),
                Some(
                    "set a container's options as step keys (`user`, `privileged`, `resources`...)",
                ),
            );
        }
    }

    /// Woodpecker's Docker options: the user the container runs as, as `docker run --user`.
    fn docker_options(&mut self, node: &Node, path: &At<'_>, step: &mut Step) {
        let Some(mut f) = self.fields(node, path) else {
            return;
        };
        if let Some(n) = f.get("user") {
            let at = path.key("user");
            if let Some(user) = self.text(n, &at) {
                self.set_user(step, user, n.pos, &at);
            }
        }
        self.finish(&f, path, &["user"], &[]);
    }

    /// The step's user from its backend options: an error when the step names another.
    fn set_user(&mut self, step: &mut Step, user: String, pos: Pos, path: &At<'_>) {
        match &step.user {
            Some(existing) if existing != &user => self.error(
                pos,
                path,
                format!("the step's user is set twice: `{existing}` and `{user}`"),
                Some("keep one of `user`, `backend_options.docker.user` and `securityContext.runAsUser`"),
            ),
            _ => step.user = Some(user),
        }
    }

    fn kubernetes_options(&mut self, node: &Node, path: &At<'_>, step: &mut Step) -> PodOptions {
        let mut pod = PodOptions::default();
        let Some(mut f) = self.fields(node, path) else {
            return pod;
        };
        if let Some(n) = f.get("resources") {
            let at = path.key("resources");
            self.only_cpu_and_memory(n, &at);
            if step.resources != Resources::default() {
                self.error(
                    n.pos,
                    &at,
                    "the step's resources are set twice: `resources` and `backend_options.kubernetes.resources`",
                    Some("keep one of them"),
                );
            }
            step.resources = self.resources(n, &at);
        }
        if let Some(n) = f.get("serviceAccountName") {
            pod.service_account = self.text(n, &path.key("serviceAccountName"));
        }
        if let Some(n) = f.get("nodeSelector") {
            pod.node_selector = self.labels(n, &path.key("nodeSelector"));
        }
        if let Some(n) = f.get("tolerations") {
            pod.tolerations = self.tolerations(n, &path.key("tolerations"), "tolerationSeconds");
        }
        if let Some(n) = f.get("runtimeClassName") {
            pod.runtime_class = self.text(n, &path.key("runtimeClassName"));
        }
        if let Some(n) = f.get("labels") {
            pod.labels = self.labels(n, &path.key("labels"));
        }
        if let Some(n) = f.get("annotations") {
            pod.annotations = self.labels(n, &path.key("annotations"));
        }
        if let Some(n) = f.get("securityContext") {
            self.security_context(n, &path.key("securityContext"), step, &mut pod);
        }
        if let Some(n) = f.get("secrets") {
            self.error(
                n.pos,
                &path.key("secrets"),
                "gantry does not mount Kubernetes Secrets named by a pipeline: the runner's namespace holds every build's own Secrets, and a pipeline could read them all",
                Some("add the value as a gantry secret and use `from_secret`, which keeps it from pull requests of forks and masks it in logs"),
            );
        }
        self.finish(&f, path, KUBERNETES_KEYS, &[]);
        pod
    }

    /// Requests and limits of other resources (GPUs, ephemeral storage) are refused by name
    /// before `resources` reads the CPU and memory.
    fn only_cpu_and_memory(&mut self, node: &Node, path: &At<'_>) {
        let Some(sets) = node.as_map() else { return };
        for (set_key, set) in sets {
            let Some(entries) = set.as_map() else {
                continue;
            };
            let set_name = set_key.as_str().unwrap_or_default();
            for (key, _) in entries {
                let name = key.as_str().unwrap_or_default();
                if name != "cpu" && name != "memory" {
                    self.error(
                        key.pos,
                        &path.key(set_name),
                        format!("gantry asks a pod for `cpu` and `memory` only, not `{name}`"),
                        Some(
                            "remove it; a node with such devices can be chosen with `nodeSelector`",
                        ),
                    );
                }
            }
        }
    }

    fn security_context(
        &mut self,
        node: &Node,
        path: &At<'_>,
        step: &mut Step,
        pod: &mut PodOptions,
    ) {
        let Some(mut f) = self.fields(node, path) else {
            return;
        };
        let mut id = |decoder: &mut Self, key: &str| {
            let n = f.get(key)?;
            let value = decoder
                .uint(n, &path.key(key))
                .and_then(|v| i64::try_from(v).ok());
            value.map(|v| (v, n.pos))
        };
        let user = id(self, "runAsUser");
        let group = id(self, "runAsGroup");
        pod.fs_group = id(self, "fsGroup").map(|(v, _)| v);
        if let Some((uid, pos)) = user {
            let user = match group {
                Some((gid, _)) => format!("{uid}:{gid}"),
                None => uid.to_string(),
            };
            self.set_user(step, user, pos, &path.key("runAsUser"));
        } else if let Some((_, pos)) = group {
            self.error(
                pos,
                &path.key("runAsGroup"),
                "`runAsGroup` needs `runAsUser` beside it",
                Some("add `runAsUser` with the user's id"),
            );
        }
        if let Some(n) = f.get("privileged")
            && let Some(privileged) = self.boolean(n, &path.key("privileged"))
        {
            step.privileged = Spanned::new(privileged || step.privileged.value, n.pos);
        }
        if let Some(n) = f.get("runAsNonRoot") {
            step.options.run_as_non_root = self.boolean(n, &path.key("runAsNonRoot"));
            if step.options.run_as_non_root == Some(true) && step.user.is_none() {
                self.error(
                    n.pos,
                    &path.key("runAsNonRoot"),
                    "`runAsNonRoot` needs the user's id beside it: the step's container starts as gantry's helper image before the step's own, and Kubernetes would find that one running as root",
                    Some("add `runAsUser` (or the step's `user`) with a numeric id"),
                );
            }
        }
        for key in ["seccompProfile", "apparmorProfile"] {
            let Some(n) = f.get(key) else { continue };
            let profile = self.security_profile(n, &path.key(key));
            if matches!(
                profile,
                Some(SecurityProfile::Unconfined | SecurityProfile::Localhost(_))
            ) {
                step.trusted_only.push((Rule::SecurityProfile, n.pos));
            }
            if key == "seccompProfile" {
                step.options.seccomp_profile = profile;
            } else {
                step.options.apparmor_profile = profile;
            }
        }
        self.finish(&f, path, SECURITY_CONTEXT_KEYS, &[]);
    }

    fn security_profile(&mut self, node: &Node, path: &At<'_>) -> Option<SecurityProfile> {
        let mut f = self.fields(node, path)?;
        let kind = f.get("type").and_then(|n| self.text(n, &path.key("type")));
        let local = f
            .get("localhostProfile")
            .and_then(|n| self.text(n, &path.key("localhostProfile")));
        self.finish(&f, path, &["type", "localhostProfile"], &[]);
        match (kind.as_deref(), local) {
            (Some("RuntimeDefault"), None) => Some(SecurityProfile::RuntimeDefault),
            (Some("Unconfined"), None) => Some(SecurityProfile::Unconfined),
            (Some("Localhost"), Some(name)) if !name.is_empty() => {
                Some(SecurityProfile::Localhost(name))
            }
            _ => {
                self.error(
                    node.pos,
                    path,
                    "a profile is `{type: RuntimeDefault}`, `{type: Unconfined}` or `{type: Localhost, localhostProfile: NAME}`",
                    None,
                );
                None
            }
        }
    }

    /// Merges what the steps ask of the stage's pod into the pipeline's, and makes the
    /// pipeline one for Kubernetes: conflicting asks are errors at the step that asks.
    /// `steps` is where the file lists the pipeline's steps.
    pub(super) fn fold_step_pods(&mut self, pipeline: &mut Pipeline, steps: &At<'_>) {
        for step in pipeline.steps.iter().chain(&pipeline.services) {
            let Some(asked) = &step.pod else { continue };
            let at = steps.named(&step.name.value);
            let at = at.key("backend_options");
            match pipeline.kind {
                PipelineType::Docker => pipeline.kind = PipelineType::Kubernetes,
                PipelineType::Kubernetes => {}
                other => {
                    self.error(
                        asked.pos,
                        &at,
                        format!(
                            "`backend_options.kubernetes` needs a pipeline that runs in containers; this one is `type: {}`",
                            other.as_str()
                        ),
                        Some("remove it, or run the pipeline on Kubernetes"),
                    );
                    continue;
                }
            }
            if let Err(conflict) = merge_pod(&mut pipeline.pod, &asked.value) {
                self.error(
                    asked.pos,
                    &at,
                    format!(
                        "step `{}` asks for {conflict}, but another step or the pipeline asks for another: a stage's steps share one pod",
                        step.name.value
                    ),
                    Some("give the steps one value, or put them in pipelines of their own"),
                );
            }
        }
    }
}

/// Adds `asked` to `pod`; `Err` names the first setting that differs.
fn merge_pod(pod: &mut PodOptions, asked: &PodOptions) -> Result<(), String> {
    fn one<T: Clone + PartialEq + std::fmt::Display>(
        mine: &mut Option<T>,
        asked: &Option<T>,
        what: &str,
    ) -> Result<(), String> {
        match (mine.as_ref(), asked) {
            (Some(a), Some(b)) if a != b => Err(format!("{what} `{b}`")),
            (None, Some(b)) => {
                *mine = Some(b.clone());
                Ok(())
            }
            _ => Ok(()),
        }
    }
    fn map(
        mine: &mut BTreeMap<String, String>,
        asked: &BTreeMap<String, String>,
        what: &str,
    ) -> Result<(), String> {
        for (key, value) in asked {
            match mine.get(key) {
                Some(existing) if existing != value => {
                    return Err(format!("{what} `{key}: {value}`"));
                }
                _ => {
                    mine.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(())
    }
    one(
        &mut pod.service_account,
        &asked.service_account,
        "the service account",
    )?;
    one(
        &mut pod.runtime_class,
        &asked.runtime_class,
        "the runtime class",
    )?;
    one(&mut pod.fs_group, &asked.fs_group, "the `fsGroup`")?;
    map(
        &mut pod.node_selector,
        &asked.node_selector,
        "the node selector",
    )?;
    map(&mut pod.labels, &asked.labels, "the label")?;
    map(&mut pod.annotations, &asked.annotations, "the annotation")?;
    for toleration in &asked.tolerations {
        if !pod.tolerations.contains(toleration) {
            pod.tolerations.push(toleration.clone());
        }
    }
    Ok(())
}
