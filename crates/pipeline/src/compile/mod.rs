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
use crate::plan::{
    CacheSpec, CloneSpec, DeployAction, DeploySpec, Plan, PlanStep, SecretEnv, Stage, StepKind,
};
use crate::trust::{self, Rule, Subject, Violation};
use crate::validate::CLONE_STEP;
use crate::{Config, PipelineFile};

mod stage;

use stage::{apply_env, build_stage, workspace_path};

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
    /// The environment it deploys to or stops.
    deploy: Option<DeploySpec>,
    /// Why it does not run in this build whatever its trigger: an `on_stop` pipeline runs
    /// only in a build that stops its environment, and such a build runs nothing else.
    environment_skip: Option<String>,
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
    let candidates = candidates(config, ctx, &vars, &mut invalid);
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
            Ok(_) if !deploys_to_valid_name(&candidate.pipeline, &mut invalid) => {}
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
                stage.skip(reason.clone());
                stage.depends_on = parents[i]
                    .iter()
                    .map(|&d| candidates[d].name.clone())
                    .collect();
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
    // A stop of an environment a redeploy deployed runs its `on_stop` pipeline all the same.
    if let Some(environment) = ctx.redeploy.as_ref().filter(|_| ctx.stopping.is_none()) {
        keep_only_redeploy(&mut stages, environment);
    }
    Ok(Plan { stages })
}

/// Whether the environment a running pipeline deploys to has a valid name once this build's
/// variables are in it; if not, says so in `invalid`.
fn deploys_to_valid_name(pipeline: &Pipeline, invalid: &mut Diagnostics) -> bool {
    let Some(deploy) = &pipeline.deploy else {
        return true;
    };
    if crate::deploy::is_valid_name(&deploy.environment.value) {
        return true;
    }
    invalid.push(Diagnostic {
        severity: Severity::Error,
        file: pipeline.file.clone(),
        pos: deploy.environment.pos,
        path: format!("pipeline[{}].deploy.environment", pipeline.name.value),
        message: format!(
            "`{}` is not an environment name in this build: letters, digits, spaces and `- _ / .` only, not starting or ending with `/`, at most {} characters",
            deploy.environment.value,
            crate::deploy::MAX_NAME_LEN
        ),
        hint: Some("name it from slugs, e.g. `review/${CI_COMMIT_REF_SLUG}`".into()),
    });
    false
}

/// In a build that redeploys `environment`, skips every stage but those deploying there: a
/// rollback runs the deployment again, as GitLab reruns a deploy job, not the tests and
/// builds that ran before it in the build it comes from.
fn keep_only_redeploy(stages: &mut [Stage], environment: &str) {
    let deploys_there = |stage: &Stage| {
        stage.run
            && stage
                .deploy
                .as_ref()
                .is_some_and(|d| d.action == DeployAction::Start && d.environment == environment)
    };
    let deployers: Vec<String> = stages
        .iter()
        .filter(|s| deploys_there(s))
        .map(|s| format!("`{}`", s.name))
        .collect();
    let reason = if deployers.is_empty() {
        format!(
            "this build redeploys environment `{environment}`, which no pipeline of this commit deploys to"
        )
    } else {
        format!(
            "this build redeploys environment `{environment}`: only {} runs again",
            deployers.join(", ")
        )
    };
    for stage in stages.iter_mut().filter(|s| !deploys_there(s)) {
        if stage.run {
            stage.skip(reason.clone());
        }
    }
}

/// Every pipeline of the file, once per matrix combination, with this build's `${VAR}`s
/// substituted and its stage's variables.
fn candidates<'c>(
    config: &'c Config,
    ctx: &Context,
    vars: &BTreeMap<String, String>,
    invalid: &mut Diagnostics,
) -> Vec<Candidate<'c>> {
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    if let Some(stopping) = &ctx.stopping
        && !config
            .files
            .iter()
            .flat_map(|f| &f.pipelines)
            .any(|p| p.name.value == stopping.pipeline)
    {
        invalid.push(Diagnostic {
            severity: Severity::Error,
            file: String::new(),
            pos: Pos::default(),
            path: String::new(),
            message: format!(
                "environment `{}` is stopped by pipeline `{}`, which the file at this commit does not have",
                stopping.name, stopping.pipeline
            ),
            hint: Some("stop it by hand, or deploy it again from a commit that has its `on_stop` pipeline".into()),
        });
    }
    for file in &config.files {
        // `on_stop` pipelines of this file, with the pipeline whose environment each stops.
        let stoppers: HashMap<&str, &Pipeline> = file
            .pipelines
            .iter()
            .filter_map(|p| {
                let on_stop = p.deploy.as_ref()?.on_stop.as_ref()?;
                Some((on_stop.value.as_str(), p))
            })
            .collect();
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
                let (deploy, environment_skip) =
                    environment_role(&concrete, stoppers.get(pipeline.name.value.as_str()), ctx);
                if let Some(deploy) = &deploy {
                    environment.extend(deploy.variables());
                }
                let mut secrets = Vec::new();
                apply_env(&concrete.environment, &mut environment, &mut secrets);
                candidates.push(Candidate {
                    pipeline: concrete,
                    dialect: file.dialect,
                    matrix,
                    name,
                    environment,
                    secrets,
                    deploy,
                    environment_skip,
                });
            }
        }
    }

    candidates
}

/// What the pipeline does to an environment in this build, and why it does not run when an
/// environment decides that: a build that stops an environment runs only its `on_stop`
/// pipeline, and that pipeline runs in no other build. `stopped` is the pipeline whose
/// environment this one stops, if it is an `on_stop`.
fn environment_role(
    pipeline: &Pipeline,
    stopped: Option<&&Pipeline>,
    ctx: &Context,
) -> (Option<DeploySpec>, Option<String>) {
    let name = pipeline.name.value.as_str();
    if ctx.fork
        && let Some(deploy) = &pipeline.deploy
    {
        // Its code would replace the environment's deployment, its `on_stop` pipeline and
        // its link, and supersede deployments waiting for it.
        return (
            None,
            Some(format!(
                "a pull request from a fork deploys to no environment (`{}`): push its branch to the repository to deploy it",
                deploy.environment.value
            )),
        );
    }
    if let Some(stopping) = &ctx.stopping {
        if name != stopping.pipeline {
            return (
                None,
                Some(format!(
                    "this build stops environment `{}`: only `{}` runs",
                    stopping.name, stopping.pipeline
                )),
            );
        }
        let spec = DeploySpec {
            environment: stopping.name.clone(),
            slug: crate::deploy::slug(&stopping.name),
            url: stopping.url.clone(),
            action: DeployAction::Stop,
            on_stop: None,
            auto_stop_secs: None,
        };
        return (Some(spec), None);
    }
    if let Some(deployer) = stopped {
        let environment = deployer
            .deploy
            .as_ref()
            .map(|d| d.environment.value.as_str())
            .unwrap_or_default();
        return (
            None,
            Some(format!(
                "runs only when environment `{environment}` of pipeline `{}` stops (its `on_stop`)",
                deployer.name.value
            )),
        );
    }
    let spec = pipeline.deploy.as_ref().map(|d| DeploySpec {
        environment: d.environment.value.clone(),
        slug: crate::deploy::slug(&d.environment.value),
        url: d.url.clone(),
        action: DeployAction::Start,
        on_stop: d.on_stop.as_ref().map(|s| s.value.clone()),
        auto_stop_secs: d.auto_stop_secs,
    });
    (spec, None)
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
            if let Some(reason) = &c.environment_skip {
                return Err(reason.clone());
            }
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
        // Pod keys: the stage breaks them, wherever the file sets them.
        Rule::HostPipeline
        | Rule::ServiceAccount
        | Rule::Tolerations
        | Rule::PodAnnotations
        | Rule::PodDns
        | Rule::HostAliases
        | Rule::RuntimeClass => step.pos,
        Rule::Devices
        | Rule::Dns
        | Rule::DnsSearch
        | Rule::ExtraHosts
        | Rule::HostPorts
        | Rule::CapAdd
        | Rule::Tmpfs
        | Rule::SecurityProfile => step
            .trusted_only
            .iter()
            .find(|(rule, _)| *rule == violation.rule)
            .map_or(step.pos, |(_, pos)| *pos),
    }
}
