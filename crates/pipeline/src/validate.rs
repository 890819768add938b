//! Checks that need the whole file: names unique, `depends_on` pointing at something that
//! exists, no cycles, images where a backend needs them, volumes declared before use.

use std::collections::HashMap;

use crate::diag::{Diagnostic, Diagnostics, Pos, Severity, did_you_mean};
use crate::graph::topological_order;
use crate::model::{Dialect, Mount, Pipeline, PipelineType, Spanned, Step};

struct Report<'a> {
    diags: &'a mut Diagnostics,
}

impl Report<'_> {
    fn error(&mut self, file: &str, pos: Pos, path: String, message: String, hint: Option<String>) {
        self.diags.push(Diagnostic {
            severity: Severity::Error,
            file: file.to_owned(),
            pos,
            path,
            message,
            hint,
        });
    }
}

/// The name of the built-in clone step.
pub const CLONE_STEP: &str = "clone";

/// Validates the pipelines of one build (all its files together).
pub fn validate(pipelines: &[(Dialect, &Pipeline)], diags: &mut Diagnostics) {
    let mut report = Report { diags };
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, (_, pipeline)) in pipelines.iter().enumerate() {
        let name = pipeline.name.value.as_str();
        if let Some(&first) = by_name.get(name) {
            let first = &pipelines[first].1;
            report.error(
                &pipeline.file,
                pipeline.name.pos,
                format!("pipeline[{name}]"),
                format!("two pipelines are named `{name}` (the first in {} at line {})", first.file, first.name.pos.line),
                Some("give every pipeline a unique `name`".into()),
            );
        } else {
            by_name.insert(name, i);
        }
    }
    let names: Vec<&str> = pipelines.iter().map(|(_, p)| p.name.value.as_str()).collect();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); pipelines.len()];
    for (i, (_, pipeline)) in pipelines.iter().enumerate() {
        for dep in &pipeline.depends_on {
            match by_name.get(dep.value.as_str()) {
                Some(&j) => parents[i].push(j),
                None => unknown_reference(&mut report, pipeline, dep, "pipeline", &names, format!("pipeline[{}].depends_on", pipeline.name.value)),
            }
        }
    }
    if let Err(cycle) = topological_order(&parents) {
        let first = pipelines[cycle[0]].1;
        report.error(
            &first.file,
            first.pos,
            format!("pipeline[{}].depends_on", first.name.value),
            format!("pipelines depend on each other in a cycle: {}", describe_cycle(&cycle, &names)),
            Some("remove one of these `depends_on` entries".into()),
        );
    }
    for (dialect, pipeline) in pipelines {
        validate_pipeline(&mut report, *dialect, pipeline);
    }
}

fn describe_cycle(cycle: &[usize], names: &[&str]) -> String {
    // `cycle[i]` depends on `cycle[i + 1]`; print in execution order: a → b → a.
    let mut order: Vec<&str> = cycle.iter().rev().map(|&i| names[i]).collect();
    order.push(order[0]);
    order.join(" → ")
}

fn unknown_reference(report: &mut Report<'_>, pipeline: &Pipeline, dep: &Spanned<String>, what: &str, names: &[&str], path: String) {
    let hint = match did_you_mean(&dep.value, names.iter().copied()) {
        Some(near) => format!("did you mean `{near}`?"),
        None if names.is_empty() => format!("there is no {what} to depend on"),
        None => format!("known {what}s: {}", names.join(", ")),
    };
    report.error(&pipeline.file, dep.pos, path, format!("depends_on names an unknown {what} `{}`", dep.value), Some(hint));
}

fn validate_pipeline(report: &mut Report<'_>, dialect: Dialect, pipeline: &Pipeline) {
    let root = format!("pipeline[{}]", pipeline.name.value);
    let file = pipeline.file.as_str();
    if pipeline.steps.is_empty() {
        report.error(file, pipeline.pos, root.clone(), "the pipeline has no steps".into(), Some("add at least one step under `steps:`".into()));
    }
    let mut seen: HashMap<&str, &Step> = HashMap::new();
    for step in pipeline.steps.iter().chain(&pipeline.services) {
        let name = step.name.value.as_str();
        if let Some(first) = seen.get(name) {
            report.error(
                file,
                step.name.pos,
                format!("{root}.steps[{name}]"),
                format!("two steps or services are named `{name}` (the first at line {})", first.name.pos.line),
                Some("names must be unique in a pipeline: services and steps share one network".into()),
            );
        } else {
            seen.insert(name, step);
        }
        if name == CLONE_STEP && !pipeline.clone.disable {
            report.error(
                file,
                step.name.pos,
                format!("{root}.steps[{name}]"),
                "`clone` is the name of the built-in clone step".into(),
                Some("rename the step, or set `clone: {disable: true}` to replace the built-in clone".into()),
            );
        }
        if name.is_empty() || name.contains(['/', '\n']) {
            report.error(file, step.name.pos, format!("{root}.steps[{name}]"), format!("`{name}` is not a valid step name"), Some("use letters, digits, `-`, `_`, `.` and spaces".into()));
        }
        let needs_image = pipeline.kind != PipelineType::Local;
        if needs_image && step.image.as_ref().is_none_or(|i| i.value.trim().is_empty()) {
            report.error(
                file,
                step.pos,
                format!("{root}.steps[{name}].image"),
                format!("step `{name}` has no image"),
                Some("add `image:`, e.g. `image: alpine:3`, or use `type: exec` for host commands".into()),
            );
        }
        if !needs_image && step.commands.is_empty() {
            report.error(file, step.pos, format!("{root}.steps[{name}].commands"), format!("step `{name}` has no commands to run on the host"), Some("add `commands:`; plugins need a docker pipeline".into()));
        }
        for mount in &step.mounts {
            if let Mount::Named { name: volume, .. } = &mount.mount
                && dialect == Dialect::Gantry
                && !pipeline.volumes.iter().any(|v| &v.name == volume)
            {
                let known: Vec<&str> = pipeline.volumes.iter().map(|v| v.name.as_str()).collect();
                let hint = did_you_mean(volume, known.iter().copied())
                    .map(|n| format!("did you mean `{n}`?"))
                    .unwrap_or_else(|| format!("declare it in the pipeline's `volumes:` with `name: {volume}` and `temp: {{}}` or `host: {{path: ...}}`"));
                report.error(file, mount.pos, format!("{root}.steps[{name}].volumes"), format!("step `{name}` mounts an undeclared volume `{volume}`"), Some(hint));
            }
        }
    }
    // Step graph.
    let names: Vec<&str> = pipeline.steps.iter().map(|s| s.name.value.as_str()).collect();
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); pipeline.steps.len()];
    for (i, step) in pipeline.steps.iter().enumerate() {
        for dep in step.depends_on.iter().flatten() {
            match index.get(dep.value.as_str()) {
                Some(&j) => parents[i].push(j),
                None if dep.value == CLONE_STEP && !pipeline.clone.disable => {}
                None => unknown_reference(report, pipeline, dep, "step", &names, format!("{root}.steps[{}].depends_on", step.name.value)),
            }
        }
    }
    if let Err(cycle) = topological_order(&parents) {
        let first = &pipeline.steps[cycle[0]];
        report.error(
            file,
            first.pos,
            format!("{root}.steps[{}].depends_on", first.name.value),
            format!("steps depend on each other in a cycle: {}", describe_cycle(&cycle, &names)),
            Some("remove one of these `depends_on` entries".into()),
        );
    }
}
