//! Checks that need the whole file: names unique, `depends_on` pointing at something that
//! exists, no cycles, images where a backend needs them, volumes declared before use.

use std::collections::HashMap;

use crate::Scope;
use crate::diag::{Diagnostic, Diagnostics, Pos, Severity, did_you_mean};
use crate::graph::topological_order;
use crate::model::{
    DeviceSource, Dialect, Mount, Pipeline, PipelineType, Spanned, Step, VolumeSource,
};

struct Report<'a> {
    diags: &'a mut Diagnostics,
}

impl Report<'_> {
    fn error(&mut self, file: &str, pos: Pos, path: String, message: String, hint: Option<String>) {
        self.push(Severity::Error, file, pos, path, message, hint);
    }

    fn warn(&mut self, file: &str, pos: Pos, path: String, message: String, hint: Option<String>) {
        self.push(Severity::Warning, file, pos, path, message, hint);
    }

    fn push(
        &mut self,
        severity: Severity,
        file: &str,
        pos: Pos,
        path: String,
        message: String,
        hint: Option<String>,
    ) {
        self.diags.push(Diagnostic {
            severity,
            file: file.to_owned(),
            pos,
            path,
            message,
            hint,
        });
    }
}

/// Volume names Drone keeps for itself (the workspace, the Docker socket).
const RESERVED_VOLUMES: [&str; 3] = ["workspace", "_workspace", "_docker_socket"];

/// The name of the built-in clone step.
pub const CLONE_STEP: &str = "clone";

/// Validates the pipelines of one build (all its files together).
pub fn validate(pipelines: &[&Pipeline], scope: Scope, diags: &mut Diagnostics) {
    let mut report = Report { diags };
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, pipeline) in pipelines.iter().enumerate() {
        let name = pipeline.name.value.as_str();
        if let Some(&first) = by_name.get(name) {
            let first = pipelines[first];
            report.error(
                &pipeline.file,
                pipeline.name.pos,
                format!("pipeline[{name}]"),
                format!(
                    "two pipelines are named `{name}` (the first in {} at line {})",
                    first.file, first.name.pos.line
                ),
                Some("give every pipeline a unique `name`".into()),
            );
        } else {
            by_name.insert(name, i);
        }
    }
    let names: Vec<&str> = pipelines.iter().map(|p| p.name.value.as_str()).collect();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); pipelines.len()];
    for (i, pipeline) in pipelines.iter().enumerate() {
        for dep in &pipeline.depends_on {
            match by_name.get(dep.value.as_str()) {
                Some(&j) => parents[i].push(j),
                None if pipeline.optional_depends_on.contains(&dep.value) => {}
                None if scope == Scope::Alone => report.warn(
                    &pipeline.file,
                    dep.pos,
                    format!("pipeline[{}].depends_on", pipeline.name.value),
                    format!(
                        "depends_on names `{}`, which is not in this file",
                        dep.value
                    ),
                    Some(
                        "it is checked when the whole `.woodpecker/` folder is linted or built"
                            .into(),
                    ),
                ),
                None => unknown_reference(
                    &mut report,
                    pipeline,
                    dep,
                    "pipeline",
                    &names,
                    format!("pipeline[{}].depends_on", pipeline.name.value),
                ),
            }
        }
    }
    if let Err(cycle) = topological_order(&parents) {
        let first = pipelines[cycle[0]];
        report.error(
            &first.file,
            first.pos,
            format!("pipeline[{}].depends_on", first.name.value),
            format!(
                "pipelines depend on each other in a cycle: {}",
                describe_cycle(&cycle, &names)
            ),
            Some("remove one of these `depends_on` entries".into()),
        );
    }
    for pipeline in pipelines {
        validate_pipeline(&mut report, pipeline);
        validate_on_stop(&mut report, pipeline, pipelines);
    }
}

/// `deploy.on_stop` names another pipeline of the same file, which deploys nothing itself.
fn validate_on_stop(report: &mut Report<'_>, pipeline: &Pipeline, pipelines: &[&Pipeline]) {
    let Some(on_stop) = pipeline.deploy.as_ref().and_then(|d| d.on_stop.as_ref()) else {
        return;
    };
    let path = format!("pipeline[{}].deploy.on_stop", pipeline.name.value);
    let target = pipelines
        .iter()
        .find(|p| p.file == pipeline.file && p.name.value == on_stop.value);
    let problem = match target {
        None => Some(format!(
            "`on_stop` names `{}`, which is not a pipeline of {}",
            on_stop.value, pipeline.file
        )),
        Some(p) if p.name.value == pipeline.name.value => Some(
            "`on_stop` names the pipeline itself: it would deploy and tear down at once".to_owned(),
        ),
        Some(p) if p.deploy.is_some() => Some(format!(
            "`on_stop` names `{}`, which deploys an environment of its own",
            on_stop.value
        )),
        Some(_) => None,
    };
    if let Some(message) = problem {
        report.error(
            &pipeline.file,
            on_stop.pos,
            path,
            message,
            Some(
                "name a pipeline of this file that tears the environment down, e.g. `teardown`"
                    .into(),
            ),
        );
    }
}

fn describe_cycle(cycle: &[usize], names: &[&str]) -> String {
    // `cycle[i]` depends on `cycle[i + 1]`; print in execution order: a → b → a.
    let mut order: Vec<&str> = cycle.iter().rev().map(|&i| names[i]).collect();
    order.push(order[0]);
    order.join(" → ")
}

fn unknown_reference(
    report: &mut Report<'_>,
    pipeline: &Pipeline,
    dep: &Spanned<String>,
    what: &str,
    names: &[&str],
    path: String,
) {
    let hint = match did_you_mean(&dep.value, names.iter().copied()) {
        Some(near) => format!("did you mean `{near}`?"),
        None if names.is_empty() => format!("there is no {what} to depend on"),
        None => format!("known {what}s: {}", names.join(", ")),
    };
    report.error(
        &pipeline.file,
        dep.pos,
        path,
        format!("depends_on names an unknown {what} `{}`", dep.value),
        Some(hint),
    );
}

fn validate_pipeline(report: &mut Report<'_>, pipeline: &Pipeline) {
    let root = format!("pipeline[{}]", pipeline.name.value);
    let file = pipeline.file.as_str();
    if pipeline.steps.is_empty() {
        report.error(
            file,
            pipeline.pos,
            root.clone(),
            "the pipeline has no steps".into(),
            Some("add at least one step under `steps:`".into()),
        );
    }
    for volume in &pipeline.volumes {
        if RESERVED_VOLUMES.contains(&volume.name.as_str()) {
            report.error(
                file,
                volume.pos,
                format!("{root}.volumes"),
                format!("`{}` is a reserved volume name", volume.name),
                Some(format!(
                    "Drone keeps {} for itself; rename the volume",
                    RESERVED_VOLUMES.join(", ")
                )),
            );
        }
    }
    check_names(report, pipeline, &root);
    for step in pipeline.steps.iter().chain(&pipeline.services) {
        check_step(report, pipeline, &root, step);
    }
    check_step_graph(report, pipeline, &root);
}

/// Step and service names: unique among their kind, and across both where the dialect says so.
fn check_names(report: &mut Report<'_>, pipeline: &Pipeline, root: &str) {
    let file = pipeline.file.as_str();
    let mut seen_steps: HashMap<&str, &Step> = HashMap::new();
    let mut seen_services: HashMap<&str, &Step> = HashMap::new();
    for (is_service, step) in pipeline
        .steps
        .iter()
        .map(|s| (false, s))
        .chain(pipeline.services.iter().map(|s| (true, s)))
    {
        let name = step.name.value.as_str();
        let (same_kind, other_kind) = if is_service {
            (&mut seen_services, &seen_steps)
        } else {
            (&mut seen_steps, &seen_services)
        };
        if let Some(first) = same_kind.get(name) {
            let what = if is_service { "services" } else { "steps" };
            report.error(
                file,
                step.name.pos,
                format!("{root}.{what}[{name}]"),
                format!(
                    "two {what} are named `{name}` (the first at line {})",
                    first.name.pos.line
                ),
                Some("names must be unique in a pipeline".into()),
            );
        } else {
            if let Some(other) = other_kind.get(name) {
                let message = format!(
                    "a step and a service are both named `{name}` (the other at line {})",
                    other.name.pos.line
                );
                if pipeline.dialect == Dialect::Woodpecker {
                    // Woodpecker allows it (its own test pipeline does it): the name reaches
                    // the service.
                    report.warn(
                        file,
                        step.name.pos,
                        format!("{root}.services[{name}]"),
                        format!("{message}; on the stage's network the name reaches the service"),
                        Some("rename one of them if a step must be reachable by name".into()),
                    );
                } else {
                    // Drone's linter counts services among the steps: names are unique
                    // across both.
                    report.error(
                        file,
                        step.name.pos,
                        format!("{root}.services[{name}]"),
                        format!("{message}, which Drone's files do not allow"),
                        Some("rename one of them".into()),
                    );
                }
            }
            same_kind.insert(name, step);
        }
    }
}

/// What one step or service must be: a valid name, an image (or commands on the host), its
/// devices and volumes declared.
fn check_step(report: &mut Report<'_>, pipeline: &Pipeline, root: &str, step: &Step) {
    let file = pipeline.file.as_str();
    let name = step.name.value.as_str();
    if name == CLONE_STEP && !pipeline.clone.disable {
        report.error(
            file,
            step.name.pos,
            format!("{root}.steps[{name}]"),
            "`clone` is the name of the built-in clone step".into(),
            Some(
                "rename the step, or set `clone: {disable: true}` to replace the built-in clone"
                    .into(),
            ),
        );
    }
    if name.is_empty() || name.contains(['/', '\n']) {
        report.error(
            file,
            step.name.pos,
            format!("{root}.steps[{name}]"),
            format!("`{name}` is not a valid step name"),
            Some("use letters, digits, `-`, `_`, `.` and spaces".into()),
        );
    }
    let needs_image = pipeline.kind != PipelineType::Local;
    if needs_image
        && step
            .image
            .as_ref()
            .is_none_or(|i| i.value.trim().is_empty())
    {
        report.error(
            file,
            step.pos,
            format!("{root}.steps[{name}].image"),
            format!("step `{name}` has no image"),
            Some(
                "add `image:`, e.g. `image: alpine:3`, or use `type: exec` for host commands"
                    .into(),
            ),
        );
    }
    if !needs_image && step.commands.is_empty() {
        report.error(
            file,
            step.pos,
            format!("{root}.steps[{name}].commands"),
            format!("step `{name}` has no commands to run on the host"),
            Some("add `commands:`; plugins need a docker pipeline".into()),
        );
    }
    if !needs_image && !step.options.is_empty() {
        report.error(
            file,
            step.pos,
            format!("{root}.steps[{name}]"),
            format!("step `{name}` sets Docker container options, which a `type: exec` pipeline runs without a container to apply them to"),
            Some("remove them, or make it a `type: docker` pipeline".into()),
        );
    }
    for device in &step.options.devices {
        if let DeviceSource::Volume(volume) = &device.source {
            let host = pipeline
                .volumes
                .iter()
                .any(|v| &v.name == volume && matches!(v.source, VolumeSource::Host { .. }));
            if !host {
                report.error(
                    file,
                    step.pos,
                    format!("{root}.steps[{name}].devices"),
                    format!("device `{volume}` of step `{name}` is not a host volume of the pipeline"),
                    Some(format!("declare `volumes: [{{name: {volume}, host: {{path: /dev/...}}}}]`, or write the device as `/dev/...:/dev/...`")),
                );
            }
        }
    }
    for mount in &step.mounts {
        if let Mount::Named { name: volume, .. } = &mount.mount
            && RESERVED_VOLUMES.contains(&volume.as_str())
        {
            report.error(
                file,
                mount.pos,
                format!("{root}.steps[{name}].volumes"),
                format!("`{volume}` is a reserved volume name"),
                Some("the workspace is mounted in every step already; mount the Docker socket as a host volume (trusted repositories only)".into()),
            );
            continue;
        }
        // Woodpecker and Drone 0.8 steps name volumes without declaring them: they are
        // the repository's caches (see `compile`).
        if let Mount::Named { name: volume, .. } = &mount.mount
            && pipeline.dialect == Dialect::Gantry
            && !pipeline.volumes.iter().any(|v| &v.name == volume)
        {
            let known: Vec<&str> = pipeline.volumes.iter().map(|v| v.name.as_str()).collect();
            let hint = did_you_mean(volume, known.iter().copied())
                .map(|n| format!("did you mean `{n}`?"))
                .unwrap_or_else(|| format!("declare it in the pipeline's `volumes:` with `name: {volume}` and `temp: {{}}` or `host: {{path: ...}}`"));
            report.warn(
                file,
                mount.pos,
                format!("{root}.steps[{name}].volumes"),
                format!("step `{name}` mounts an undeclared volume `{volume}`: it gets an empty volume that lives as long as the stage"),
                Some(hint),
            );
        }
    }
}

/// The steps' `depends_on`: every name known (or optional), and no cycle.
fn check_step_graph(report: &mut Report<'_>, pipeline: &Pipeline, root: &str) {
    let file = pipeline.file.as_str();
    let names: Vec<&str> = pipeline
        .steps
        .iter()
        .map(|s| s.name.value.as_str())
        .collect();
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); pipeline.steps.len()];
    for (i, step) in pipeline.steps.iter().enumerate() {
        for dep in step.depends_on.iter().flatten() {
            match index.get(dep.value.as_str()) {
                Some(&j) => parents[i].push(j),
                None if dep.value == CLONE_STEP && !pipeline.clone.disable => {}
                None if step.optional_depends_on.contains(&dep.value) => {}
                None => unknown_reference(
                    report,
                    pipeline,
                    dep,
                    "step",
                    &names,
                    format!("{root}.steps[{}].depends_on", step.name.value),
                ),
            }
        }
    }
    if let Err(cycle) = topological_order(&parents) {
        let first = &pipeline.steps[cycle[0]];
        report.error(
            file,
            first.pos,
            format!("{root}.steps[{}].depends_on", first.name.value),
            format!(
                "steps depend on each other in a cycle: {}",
                describe_cycle(&cycle, &names)
            ),
            Some("remove one of these `depends_on` entries".into()),
        );
    }
}
