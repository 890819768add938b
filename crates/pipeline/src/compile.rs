//! `compile(config, context) -> Plan`: applies a parsed pipeline configuration to one build.
//! Substitutes `${VAR}`, expands matrices, evaluates `trigger` and `when`, orders steps,
//! resolves environments and scripts, and refuses what the repository is not trusted to do.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::conditions::{Scope, Skip, StageFacts, evaluate};
use crate::context::{Context, Event};
use crate::decode::Decoder;
use crate::diag::{Diagnostic, Diagnostics, Pos, Severity};
use crate::env::{
    build_variables, encode_setting, plugin_variable, script, stage_variables, step_variables,
};
use crate::envsubst::Lookup;
use crate::graph::topological_order;
use crate::model::{
    ContainerOptions, DeviceSource, Dialect, EnvValue, EnvVar, Mount, Pipeline, PipelineType,
    SettingValue, StatusFilter, Step, Volume, VolumeSource,
};
use crate::plan::{CacheSpec, CloneSpec, Plan, PlanStep, SecretEnv, Stage, StepKind};
use crate::trust::{self, Rule, Subject, Violation};
use crate::validate::CLONE_STEP;
use crate::{Config, PipelineFile};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The file is invalid for this build (e.g. a bad `${...}` substitution).
    #[error("the pipeline configuration is invalid:\n{0}")]
    Invalid(Diagnostics),
    /// The build would do what the repository is not trusted to do.
    #[error("the plan is refused because the repository is not trusted:\n{0}")]
    Untrusted(Diagnostics),
}

impl CompileError {
    pub fn diagnostics(&self) -> &Diagnostics {
        match self {
            CompileError::Invalid(d) | CompileError::Untrusted(d) => d,
        }
    }
}

/// Matrix axes over the build's variables.
struct Layered<'a> {
    top: &'a BTreeMap<String, String>,
    base: &'a BTreeMap<String, String>,
}

impl Lookup for Layered<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.top
            .get(name)
            .or_else(|| self.base.get(name))
            .map(String::as_str)
    }
}

/// A pipeline made concrete for this build, before it becomes a [`Stage`].
struct Candidate<'c> {
    pipeline: Cow<'c, Pipeline>,
    dialect: Dialect,
    matrix: BTreeMap<String, String>,
    name: String,
    /// Every variable of the stage: the build's, the stage's, the pipeline's `environment`
    /// and the matrix axes.
    environment: BTreeMap<String, String>,
    secrets: Vec<SecretEnv>,
}

impl Candidate<'_> {
    fn facts(&self) -> StageFacts<'_> {
        StageFacts {
            platform: &self.pipeline.platform,
            matrix: &self.matrix,
            variables: &self.environment,
        }
    }
}

/// Turns a condition verdict into run/skip, collecting conditions that cannot be decided.
fn decide(
    verdict: Result<StatusFilter, Skip>,
    file: &str,
    invalid: &mut Diagnostics,
) -> Result<StatusFilter, String> {
    verdict.map_err(|skip| match skip {
        Skip::Because(reason) => reason,
        Skip::Invalid { pos, message } => {
            invalid.push(Diagnostic {
                severity: Severity::Error,
                file: file.to_owned(),
                pos,
                path: String::new(),
                message: message.clone(),
                hint: None,
            });
            message
        }
    })
}

pub fn compile(config: &Config, ctx: &Context) -> Result<Plan, CompileError> {
    let vars = build_variables(ctx);
    let mut invalid = Diagnostics::default();
    let candidates = candidates(config, &vars, &mut invalid);
    let StageGraph {
        parents,
        verdicts,
        effective,
    } = stage_graph(&candidates, ctx, &mut invalid);
    let mut refused = Diagnostics::default();
    let mut stages = Vec::with_capacity(candidates.len());
    for (i, candidate) in candidates.iter().enumerate() {
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let mut stage = build_stage(candidate, number, ctx, &mut invalid);
        // On the stage as it will run, after the matrix and every substitution; as Drone's
        // linter: every pipeline of the file, whether this build runs it or not, and every
        // step of it, whatever its `when` (skipping is decided below).
        if !ctx.trusted {
            for violation in trust::check_stage(&stage) {
                refused.push(refusal(&candidate.pipeline, &violation));
            }
        }
        match &verdicts[i] {
            Ok(filter) => {
                stage.runs_on = if candidate.dialect == Dialect::Woodpecker {
                    candidate.pipeline.runs_on
                } else {
                    *filter
                };
                stage.depends_on = effective[i]
                    .iter()
                    .map(|&d| candidates[d].name.clone())
                    .collect();
            }
            Err(reason) => {
                stage.run = false;
                stage.reason = Some(reason.clone());
                stage.depends_on = parents[i]
                    .iter()
                    .map(|&d| candidates[d].name.clone())
                    .collect();
                for step in stage.steps.iter_mut().chain(stage.services.iter_mut()) {
                    step.run = false;
                    step.reason
                        .get_or_insert_with(|| "the stage does not run".to_owned());
                }
            }
        }
        stages.push(stage);
    }
    if invalid.has_errors() {
        return Err(CompileError::Invalid(Diagnostics(
            invalid.errors().cloned().collect(),
        )));
    }
    if refused.has_errors() {
        // Matrix combinations of one pipeline break a rule at the same place alike.
        refused
            .0
            .sort_by(|a, b| (&a.file, a.pos, &a.message).cmp(&(&b.file, b.pos, &b.message)));
        refused.0.dedup();
        return Err(CompileError::Untrusted(refused));
    }
    Ok(Plan { stages })
}

/// Every pipeline of the file, once per matrix combination, with this build's `${VAR}`s
/// substituted and its stage's variables.
fn candidates<'c>(
    config: &'c Config,
    vars: &BTreeMap<String, String>,
    invalid: &mut Diagnostics,
) -> Vec<Candidate<'c>> {
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    for file in &config.files {
        for (index, pipeline) in file.pipelines.iter().enumerate() {
            let combinations = match &pipeline.matrix {
                Some(matrix) => matrix.combinations.clone(),
                None => vec![BTreeMap::new()],
            };
            for matrix in combinations {
                let concrete = concretize(file, index, pipeline, &matrix, vars, invalid);
                let name = if matrix.is_empty() {
                    pipeline.name.value.clone()
                } else {
                    let axes: Vec<String> =
                        matrix.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{} ({})", pipeline.name.value, axes.join(", "))
                };
                let number = u32::try_from(candidates.len() + 1).unwrap_or(u32::MAX);
                let workspace = workspace_path(&concrete);
                let mut environment = vars.clone();
                environment.extend(stage_variables(&name, number, &workspace, &matrix));
                let mut secrets = Vec::new();
                apply_env(&concrete.environment, &mut environment, &mut secrets);
                candidates.push(Candidate {
                    pipeline: concrete,
                    dialect: file.dialect,
                    matrix,
                    name,
                    environment,
                    secrets,
                });
            }
        }
    }

    candidates
}

/// Which stages run, and on what they depend (through skipped ones), by candidate index.
struct StageGraph {
    /// What each depends on as written.
    parents: Vec<Vec<usize>>,
    /// Whether each runs (with the statuses it runs on), or why not.
    verdicts: Vec<Result<StatusFilter, String>>,
    /// What each depends on once skipped stages are looked through.
    effective: Vec<Vec<usize>>,
}

fn stage_graph(
    candidates: &[Candidate<'_>],
    ctx: &Context,
    invalid: &mut Diagnostics,
) -> StageGraph {
    let mut by_base: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        by_base
            .entry(c.pipeline.name.value.as_str())
            .or_default()
            .push(i);
    }
    let parents: Vec<Vec<usize>> = candidates
        .iter()
        .map(|c| {
            c.pipeline
                .depends_on
                .iter()
                .flat_map(|d| by_base.get(d.value.as_str()).cloned().unwrap_or_default())
                .collect()
        })
        .collect();
    let verdicts: Vec<Result<StatusFilter, String>> = candidates
        .iter()
        .map(|c| {
            let verdict = evaluate(&c.pipeline.trigger, ctx, c.facts(), Scope::Pipeline);
            decide(verdict, &c.pipeline.file, invalid)
        })
        .collect();
    let order = topological_order(&parents).unwrap_or_else(|_| (0..candidates.len()).collect());
    let mut effective: Vec<Vec<usize>> = vec![Vec::new(); candidates.len()];
    for &i in &order {
        let mut deps = Vec::new();
        for &p in &parents[i] {
            if verdicts[p].is_ok() {
                deps.push(p);
            } else {
                deps.extend(effective[p].iter().copied());
            }
        }
        deps.sort_unstable();
        deps.dedup();
        effective[i] = deps;
    }

    StageGraph {
        parents,
        verdicts,
        effective,
    }
}

/// The pipeline with this build's `${VAR}`s substituted, decoded again from its YAML only when
/// it contains a `$` at all.
fn concretize<'c>(
    file: &'c PipelineFile,
    index: usize,
    pipeline: &'c Pipeline,
    matrix: &BTreeMap<String, String>,
    vars: &BTreeMap<String, String>,
    invalid: &mut Diagnostics,
) -> Cow<'c, Pipeline> {
    let Some(node) = file.substitutable_node(index) else {
        return Cow::Borrowed(pipeline);
    };
    let lookup = Layered {
        top: matrix,
        base: vars,
    };
    let mut decoder = Decoder::new(&file.name, file.dialect, Some(&lookup));
    let decoded = decoder.pipeline(node, index, &pipeline.name.value);
    invalid.extend(Diagnostics(decoder.diags.errors().cloned().collect()));
    match decoded {
        Some(mut p) => {
            // The matrix and dependencies were validated on the file as written.
            p.name = pipeline.name.clone();
            p.depends_on = pipeline.depends_on.clone();
            Cow::Owned(p)
        }
        None => Cow::Borrowed(pipeline),
    }
}

fn workspace_path(pipeline: &Pipeline) -> String {
    let base = pipeline.workspace.base.as_deref().unwrap_or("/drone");
    match pipeline.workspace.path.as_deref() {
        Some(path) => in_workspace(path, base),
        None if pipeline.workspace.base.is_some() => base.to_owned(),
        None => "/drone/src".to_owned(),
    }
}

fn build_stage(
    candidate: &Candidate<'_>,
    number: u32,
    ctx: &Context,
    invalid: &mut Diagnostics,
) -> Stage {
    let pipeline = &*candidate.pipeline;
    let workspace = workspace_path(pipeline);
    let facts = candidate.facts();
    let volumes = stage_volumes(candidate, &workspace);
    let cache = volumes
        .iter()
        .any(|v| v.source == VolumeSource::Cache)
        .then(|| cache_spec(ctx));

    let clone = (!pipeline.clone.disable).then(|| CloneSpec {
        url: ctx.repo.clone_url.clone(),
        reference: ctx.reference.clone(),
        commit: ctx.commit.clone(),
        depth: pipeline.clone.depth,
        tags: pipeline.clone.tags || ctx.tag.is_some(),
        skip_verify: pipeline.clone.skip_verify,
    });

    let mut number_next = 1u32;
    let steps = plan_steps(
        candidate,
        ctx,
        clone.is_some(),
        &workspace,
        invalid,
        &mut number_next,
    );
    let services = pipeline
        .services
        .iter()
        .map(|service| {
            let verdict = decide(
                evaluate(&service.when, ctx, facts, Scope::Step),
                &pipeline.file,
                invalid,
            )
            .map(|_| StatusFilter::ALWAYS);
            let s = plan_step(
                service,
                number_next,
                Vec::new(),
                verdict,
                &workspace,
                pipeline,
                true,
            );
            number_next += 1;
            s
        })
        .collect();

    let locks = stage_locks(pipeline, ctx, &steps);
    Stage {
        name: candidate.name.clone(),
        number,
        run: true,
        reason: None,
        depends_on: Vec::new(),
        runs_on: pipeline.runs_on,
        file: pipeline.file.clone(),
        backend: pipeline.kind,
        platform: pipeline.platform.clone(),
        labels: pipeline.labels.clone(),
        matrix: candidate.matrix.clone(),
        workspace,
        clone,
        environment: candidate.environment.clone(),
        secrets: candidate.secrets.clone(),
        volumes,
        services,
        steps,
        timeout_secs: pipeline.timeout.as_ref().map(|t| t.value),
        notify: pipeline.notify.clone(),
        locks,
        concurrency: pipeline.concurrency.as_ref().map(|c| c.value),
        cache,
    }
}

/// The stage's volumes: the pipeline's own, then those its steps name without declaring
/// (Woodpecker and Drone 0.8 steps name volumes in the step only: like theirs, they persist
/// between builds as the repository's caches; an undeclared volume of a gantry file lives as
/// long as the stage), then one per `cache:` path.
fn stage_volumes(candidate: &Candidate<'_>, workspace: &str) -> Vec<Volume> {
    let pipeline = &*candidate.pipeline;
    let mut volumes = pipeline.volumes.clone();
    let undeclared = if candidate.dialect == Dialect::Gantry {
        VolumeSource::Temp { memory: false }
    } else {
        VolumeSource::Cache
    };
    for step in pipeline.steps.iter().chain(&pipeline.services) {
        for mount in &step.mounts {
            if let Mount::Named { name, .. } = &mount.mount
                && !volumes.iter().any(|v| &v.name == name)
            {
                volumes.push(Volume {
                    name: name.clone(),
                    source: undeclared.clone(),
                    pos: mount.pos,
                });
            }
        }
        for dir in &step.caches {
            let name = cache_volume_name(&dir.value, workspace);
            if !volumes.iter().any(|v| v.name == name) {
                volumes.push(Volume {
                    name,
                    source: VolumeSource::Cache,
                    pos: dir.pos,
                });
            }
        }
    }
    volumes
}

/// The stage's steps in the order they may run, the clone step first, each numbered from
/// `number_next` on and depending on its parents (or, without a graph, on the step before).
fn plan_steps(
    candidate: &Candidate<'_>,
    ctx: &Context,
    cloned: bool,
    workspace: &str,
    invalid: &mut Diagnostics,
    number_next: &mut u32,
) -> Vec<PlanStep> {
    let pipeline = &*candidate.pipeline;
    let facts = candidate.facts();
    let mut steps: Vec<PlanStep> = Vec::with_capacity(pipeline.steps.len() + 1);
    if cloned {
        steps.push(clone_step(workspace));
        *number_next += 1;
    }
    let names: HashMap<&str, usize> = pipeline
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.value.as_str(), i))
        .collect();
    let parents: Vec<Vec<usize>> = pipeline
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            if pipeline.graph {
                step.depends_on
                    .iter()
                    .flatten()
                    .filter_map(|d| names.get(d.value.as_str()).copied())
                    .collect()
            } else if i > 0 {
                vec![i - 1]
            } else {
                Vec::new()
            }
        })
        .collect();
    let order = topological_order(&parents).unwrap_or_else(|_| (0..pipeline.steps.len()).collect());
    for i in order {
        let step = &pipeline.steps[i];
        let mut depends_on: Vec<String> = parents[i]
            .iter()
            .map(|&p| pipeline.steps[p].name.value.clone())
            .collect();
        let explicit_clone = step
            .depends_on
            .iter()
            .flatten()
            .any(|d| d.value == CLONE_STEP);
        if cloned && (explicit_clone || depends_on.is_empty()) {
            depends_on.insert(0, CLONE_STEP.to_owned());
        }
        let verdict = decide(
            evaluate(&step.when, ctx, facts, Scope::Step),
            &pipeline.file,
            invalid,
        );
        steps.push(plan_step(
            step,
            *number_next,
            depends_on,
            verdict,
            workspace,
            pipeline,
            false,
        ));
        *number_next += 1;
    }
    steps
}

/// The locks a stage holds while it runs: the pipeline's, its group's, and those of its
/// steps that run.
fn stage_locks(pipeline: &Pipeline, ctx: &Context, steps: &[PlanStep]) -> Vec<String> {
    let mut locks: Vec<String> = pipeline
        .lock
        .iter()
        .map(|l| l.value.clone())
        .chain(
            pipeline
                .group
                .iter()
                .map(|g| format!("{}:{}", ctx.repo.full_name(), g.value)),
        )
        .chain(
            steps
                .iter()
                .filter(|planned| planned.run)
                .filter_map(|planned| {
                    let step = pipeline
                        .steps
                        .iter()
                        .find(|s| s.name.value == planned.name)?;
                    step.lock.as_ref().map(|l| l.value.clone())
                }),
        )
        .collect();
    locks.sort();
    locks.dedup();
    locks
}

/// The volume of a `cache:` path: named by where it is mounted.
fn cache_volume_name(dir: &str, workspace: &str) -> String {
    format!(
        "cache:{}",
        in_workspace(dir, workspace).trim_end_matches('/')
    )
}

/// `dir` as an absolute path: relative ones are in the workspace.
fn in_workspace(dir: &str, workspace: &str) -> String {
    if dir.starts_with('/') {
        dir.to_owned()
    } else {
        format!(
            "{}/{}",
            workspace.trim_end_matches('/'),
            dir.trim_start_matches("./")
        )
    }
}

/// Where this build's caches live: its branch's, a pull request's own or a tag's own, each
/// starting from the default branch's. A pull request never writes to a branch's cache, so
/// a fork cannot poison what `main` builds with.
fn cache_spec(ctx: &Context) -> CacheSpec {
    let scope = match (ctx.event, ctx.pull_request, &ctx.tag) {
        (Event::PullRequest, Some(number), _) => format!("pull/{number}"),
        (_, _, Some(tag)) => format!("tag/{tag}"),
        _ => format!("branch/{}", ctx.branch),
    };
    let default = format!("branch/{}", ctx.repo.default_branch);
    CacheSpec {
        repo: ctx.repo.full_name(),
        fallback: (scope != default && !ctx.repo.default_branch.is_empty()).then_some(default),
        scope,
        max_bytes: ctx.cache_policy.max_bytes,
        max_age_secs: ctx.cache_policy.max_age_secs,
    }
}

fn apply_env(
    vars: &[EnvVar],
    environment: &mut BTreeMap<String, String>,
    secrets: &mut Vec<SecretEnv>,
) {
    for var in vars {
        match &var.value {
            EnvValue::Text(text) => {
                environment.insert(var.name.clone(), text.clone());
            }
            EnvValue::Secret(secret) => {
                environment.remove(&var.name);
                secrets.retain(|s| s.env != var.name);
                secrets.push(SecretEnv {
                    env: var.name.clone(),
                    secret: secret.clone(),
                });
            }
        }
    }
}

fn clone_step(workspace: &str) -> PlanStep {
    PlanStep {
        name: CLONE_STEP.to_owned(),
        number: 1,
        kind: StepKind::Clone,
        run: true,
        reason: None,
        depends_on: Vec::new(),
        run_on: StatusFilter::SUCCESS,
        image: None,
        pull: crate::model::Pull::IfNotExists,
        environment: step_variables(CLONE_STEP, 1).into_iter().collect(),
        secrets: Vec::new(),
        commands: Vec::new(),
        script: None,
        shell: "sh".to_owned(),
        entrypoint: Vec::new(),
        command: Vec::new(),
        failure: crate::model::Failure::Fail,
        detach: false,
        privileged: false,
        mounts: Vec::new(),
        network_mode: None,
        user: None,
        working_dir: workspace.to_owned(),
        resources: Default::default(),
        timeout_secs: None,
        retry: Default::default(),
        options: Default::default(),
    }
}

fn plan_step(
    step: &Step,
    number: u32,
    depends_on: Vec<String>,
    verdict: Result<StatusFilter, String>,
    workspace: &str,
    pipeline: &Pipeline,
    service: bool,
) -> PlanStep {
    let backend = pipeline.kind;
    let name = step.name.value.clone();
    let mut environment: BTreeMap<String, String> =
        step_variables(&name, number).into_iter().collect();
    let mut secrets = Vec::new();
    for setting in &step.settings {
        let variable = plugin_variable(&setting.name);
        match &setting.value {
            SettingValue::Value(value) => {
                environment.insert(variable, encode_setting(value));
            }
            SettingValue::Secret(secret) => secrets.push(SecretEnv {
                env: variable,
                secret: secret.clone(),
            }),
        }
    }
    apply_env(&step.environment, &mut environment, &mut secrets);
    let kind = if service {
        StepKind::Service
    } else if step.commands.is_empty() {
        StepKind::Plugin
    } else {
        StepKind::Commands
    };
    let working_dir = step
        .working_dir
        .as_deref()
        .map_or_else(|| workspace.to_owned(), |dir| in_workspace(dir, workspace));
    let (run, reason, run_on) = match verdict {
        Ok(filter) => (true, None, filter),
        Err(reason) => (false, Some(reason), StatusFilter::NEVER),
    };
    PlanStep {
        name,
        number,
        kind,
        run,
        reason,
        depends_on,
        run_on,
        image: if backend == PipelineType::Local {
            None
        } else {
            step.image.as_ref().map(|i| i.value.clone())
        },
        pull: step.pull,
        environment,
        secrets,
        commands: step.commands.clone(),
        script: (!step.commands.is_empty()).then(|| script(&step.commands)),
        shell: step.shell.clone().unwrap_or_else(|| "sh".to_owned()),
        entrypoint: step.entrypoint.clone(),
        command: step.command.clone(),
        failure: step.failure,
        detach: step.detach,
        privileged: step.privileged.value,
        mounts: step
            .mounts
            .iter()
            .map(|m| m.mount.clone())
            .chain(step.caches.iter().map(|dir| Mount::Named {
                name: cache_volume_name(&dir.value, workspace),
                path: in_workspace(&dir.value, workspace),
            }))
            .collect(),
        network_mode: step.network_mode.as_ref().map(|m| m.value.clone()),
        user: step.user.clone(),
        working_dir,
        resources: step.resources.clone(),
        timeout_secs: step.timeout.as_ref().map(|t| t.value),
        retry: step.retry.as_ref().map(|r| r.value).unwrap_or_default(),
        options: resolve_devices(&step.options, &pipeline.volumes),
    }
}

/// The step's options with each device named by a pipeline volume (Drone's `{name, path}`)
/// replaced by that volume's host path; `validate` has refused names of other volumes.
fn resolve_devices(options: &ContainerOptions, volumes: &[Volume]) -> ContainerOptions {
    let mut options = options.clone();
    options.devices.retain_mut(|device| match &device.source {
        DeviceSource::Host(_) => true,
        DeviceSource::Volume(name) => match volumes.iter().find(|v| &v.name == name) {
            Some(Volume {
                source: VolumeSource::Host { path },
                ..
            }) => {
                device.source = DeviceSource::Host(path.clone());
                true
            }
            _ => false,
        },
    });
    options
}

/// A rule the stage breaks, pointed at where its pipeline says it.
fn refusal(pipeline: &Pipeline, violation: &Violation) -> Diagnostic {
    let pipeline_name = &pipeline.name.value;
    let root = format!("pipeline[{pipeline_name}]");
    let (pos, path) = match &violation.subject {
        Subject::Stage => (pipeline.pos, format!("{root}.{}", violation.rule.key())),
        Subject::Volume(name) => (
            pipeline
                .volumes
                .iter()
                .find(|v| &v.name == name)
                .map_or(pipeline.pos, |v| v.pos),
            format!("{root}.volumes"),
        ),
        Subject::Step(name) => {
            let step = pipeline
                .steps
                .iter()
                .chain(&pipeline.services)
                .find(|s| &s.name.value == name);
            let pos = step.map_or(pipeline.pos, |step| setting_pos(step, violation));
            (
                pos,
                format!("{root}.steps[{name}].{}", violation.rule.key()),
            )
        }
    };
    Diagnostic {
        severity: Severity::Error,
        file: pipeline.file.clone(),
        pos,
        path,
        message: violation.message(pipeline_name),
        // Who can trust a repository depends on where the plan is made (a server admin,
        // or `gantry exec --trusted`): the caller says it. The rule's name is what the
        // runner's own check would say.
        hint: Some(format!("trust rule `{}`", violation.rule.name())),
    }
}

/// Where the step sets what breaks the rule (its name when the file does not say).
fn setting_pos(step: &Step, violation: &Violation) -> Pos {
    match violation.rule {
        Rule::Privileged => step.privileged.pos,
        Rule::NetworkMode => step.network_mode.as_ref().map_or(step.pos, |m| m.pos),
        Rule::HostVolume | Rule::DockerSocket | Rule::RunDrone | Rule::MemoryVolume => {
            let value = violation.value.as_deref();
            step.mounts
                .iter()
                .find(|m| match &m.mount {
                    Mount::Host { host, path, .. } => {
                        value == Some(host.as_str()) || value == Some(path.as_str())
                    }
                    Mount::Named { path, .. } => value == Some(path.as_str()),
                })
                .map_or(step.pos, |m| m.pos)
        }
        Rule::HostPipeline => step.pos,
        Rule::Devices
        | Rule::Dns
        | Rule::DnsSearch
        | Rule::ExtraHosts
        | Rule::HostPorts
        | Rule::CapAdd
        | Rule::Tmpfs => step
            .trusted_only
            .iter()
            .find(|(rule, _)| *rule == violation.rule)
            .map_or(step.pos, |(_, pos)| *pos),
    }
}
