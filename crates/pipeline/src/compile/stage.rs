//! One stage of the plan from one candidate pipeline: its volumes (declared, named by steps,
//! caches), its steps in the order they may run with their dependencies and verdicts, its
//! services, locks, clone and workspace.

use super::*;

pub(super) fn workspace_path(pipeline: &Pipeline) -> String {
    let base = pipeline.workspace.base.as_deref().unwrap_or("/drone");
    match pipeline.workspace.path.as_deref() {
        Some(path) => in_workspace(path, base),
        None if pipeline.workspace.base.is_some() => base.to_owned(),
        None => "/drone/src".to_owned(),
    }
}

pub(super) fn build_stage(
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

    let mut locks = stage_locks(pipeline, ctx, &steps);
    // One deployment at a time per environment.
    if let Some(deploy) = &candidate.deploy {
        locks.push(environment_lock(&ctx.repo.full_name(), &deploy.environment));
        locks.sort();
        locks.dedup();
    }
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
        pull_secrets: pipeline.pull_secrets.clone(),
        locks,
        concurrency: pipeline.concurrency.as_ref().map(|c| c.value),
        cache,
        pod: pipeline.pod.clone(),
        deploy: candidate.deploy.clone(),
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

/// The lock a stage holds while it deploys to or stops an environment of a repository.
fn environment_lock(repo: &str, environment: &str) -> String {
    format!("environment:{repo}:{environment}")
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

pub(super) fn apply_env(
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
