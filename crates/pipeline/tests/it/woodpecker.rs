//! Woodpecker 2 and 3 syntax: clone steps as a list, `evaluate` with member access and
//! arithmetic, `backend_options`, and one workflow of a `.woodpecker/` folder linted alone.

use gantry_pipeline::{Limits, Source, StepKind, parse, parse_files, parse_workflow_alone};

use crate::support::{edges, errors, plan, push, warnings};

#[test]
fn a_git_plugin_clone_step_is_done_by_the_built_in_clone_keeping_its_settings() {
    let yaml = "
clone:
  - name: git
    image: woodpeckerci/plugin-git:2.6
    settings:
      depth: 5
      tags: true
      lfs: false
steps:
  - name: build
    image: alpine
    commands: [make]
";
    let warnings = warnings(".woodpecker.yml", yaml);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("is done by gantry's built-in clone, which does not use `lfs`"),
        "{warnings:?}"
    );
    let plan = plan(yaml, &push());
    let clone = plan.stages[0].clone.as_ref().expect("the built-in clone");
    assert_eq!(clone.depth, Some(5));
    assert!(clone.tags);
    assert_eq!(plan.stages[0].steps[0].kind, StepKind::Clone);
}

/// A clone step of any other image runs as written, before every other step, instead of the
/// built-in clone.
#[test]
fn a_custom_clone_image_runs_first_in_place_of_the_built_in_clone() {
    let list = "
clone:
  - name: fetch
    image: alpine/git
    commands: [git clone https://example.com/app.git .]
steps:
  - name: build
    image: alpine
    commands: [make]
  - name: lint
    image: alpine
    commands: [make lint]
    depends_on: []
  - name: test
    image: alpine
    commands: [make test]
    depends_on: [build]
";
    let plan = plan(list, &push());
    let stage = &plan.stages[0];
    assert!(stage.clone.is_none());
    assert_eq!(
        edges(stage),
        vec![
            ("fetch", vec![]),
            ("build", vec!["fetch"]),
            ("lint", vec!["fetch"]),
            ("test", vec!["build"]),
        ]
    );
    assert_eq!(stage.steps[0].kind, StepKind::Commands);
    assert_eq!(stage.steps[0].image.as_deref(), Some("alpine/git"));

    // Woodpecker 1's map of clone steps, in a file of sequential steps.
    let map = "
clone:
  fetch:
    image: alpine/git
    commands: [git clone https://example.com/app.git .]
steps:
  build:
    image: alpine
    commands: [make]
";
    let plan = plan_of(map);
    let names: Vec<&str> = plan.stages[0]
        .steps
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["fetch", "build"]);
}

/// The error messages `.woodpecker.yml` with `yaml` gets.
fn lint_errors(yaml: &str) -> Vec<String> {
    parse(".woodpecker.yml", yaml)
        .diagnostics
        .errors()
        .map(|e| e.message.clone())
        .collect()
}

fn plan_of(yaml: &str) -> gantry_pipeline::Plan {
    plan(yaml, &push())
}

#[test]
fn evaluate_reads_members_and_does_arithmetic() {
    let yaml = r#"
steps:
  - name: main-only
    image: alpine
    commands: [true]
    when:
      evaluate: '$env.CI_COMMIT_BRANCH == "main" && len(CI_COMMIT_BRANCH) * 2 == 8'
  - name: other
    image: alpine
    commands: [true]
    when:
      evaluate: '$env["CI_COMMIT_BRANCH"] + "-x" == "dev-x"'
"#;
    let parsed = parse(".woodpecker.yml", yaml);
    assert!(parsed.diagnostics.is_empty(), "{}", parsed.diagnostics);
    let plan = plan(yaml, &push());
    let stage = &plan.stages[0];
    assert!(stage.step("main-only").expect("step").run);
    assert!(!stage.step("other").expect("step").run);
}

/// Woodpecker's `backend_options.kubernetes`: a container's settings stay the step's, what
/// Woodpecker sets on a step's own pod is asked of the stage's one pod, and the workflow runs
/// only on a runner that offers Kubernetes.
#[test]
fn kubernetes_backend_options_set_the_container_and_the_stages_pod() {
    let yaml = r#"
matrix:
  ARCH: [arm64]
steps:
  - name: build
    image: golang
    commands: [go build]
    backend_options:
      kubernetes:
        serviceAccountName: builder
        resources:
          requests: {memory: 128Mi, cpu: 500m}
          limits: {memory: 256Mi}
        nodeSelector:
          kubernetes.io/arch: "${ARCH}"
        tolerations:
          - {key: jobs, operator: Equal, value: ci, effect: NoSchedule, tolerationSeconds: 3600}
        runtimeClassName: gvisor
        labels: {team: web}
        annotations: {workflow-group: alpha}
        securityContext:
          runAsUser: 1000
          runAsGroup: 1000
          fsGroup: 2000
          runAsNonRoot: true
          seccompProfile: {type: RuntimeDefault}
          apparmorProfile: {type: Localhost, localhostProfile: deny-write}
  - name: test
    image: golang
    commands: [go test]
    backend_options:
      kubernetes:
        serviceAccountName: builder
        nodeSelector: {disk: ssd}
"#;
    assert_eq!(errors(".woodpecker.yml", yaml), Vec::<String>::new());
    assert_eq!(warnings(".woodpecker.yml", yaml), Vec::<String>::new());
    let mut ctx = push();
    ctx.trusted = true;
    let plan = plan(yaml, &ctx);
    let stage = &plan.stages[0];
    assert_eq!(
        stage.backend,
        gantry_pipeline::model::PipelineType::Kubernetes
    );
    let pod = &stage.pod;
    assert_eq!(pod.service_account.as_deref(), Some("builder"));
    assert_eq!(pod.runtime_class.as_deref(), Some("gvisor"));
    assert_eq!(pod.fs_group, Some(2000));
    let selector: Vec<(&str, &str)> = pod
        .node_selector
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(selector, [("disk", "ssd"), ("kubernetes.io/arch", "arm64")]);
    assert_eq!(pod.tolerations.len(), 1);
    assert_eq!(pod.tolerations[0].toleration_seconds, Some(3600));
    assert_eq!(pod.labels.get("team").map(String::as_str), Some("web"));
    assert_eq!(
        pod.annotations.get("workflow-group").map(String::as_str),
        Some("alpha")
    );
    let build = stage.step("build").expect("build");
    assert_eq!(build.user.as_deref(), Some("1000:1000"));
    assert_eq!(build.resources.requests.cpu_millis, Some(500));
    assert_eq!(build.resources.limits.memory_bytes, Some(256 << 20));
    assert_eq!(build.options.run_as_non_root, Some(true));
    assert_eq!(
        build.options.apparmor_profile,
        Some(gantry_pipeline::model::SecurityProfile::Localhost(
            "deny-write".into()
        ))
    );
    let test = stage.step("test").expect("test");
    assert_eq!(test.user, None);
    assert!(test.options.is_empty(), "{:?}", test.options);
}

/// Woodpecker's Docker backend option `user` is the step's user, on every backend.
#[test]
fn docker_backend_options_set_the_user() {
    let yaml = "steps:\n  - name: lint\n    image: golangci/golangci-lint\n    commands: [golangci-lint run]\n    backend_options:\n      docker:\n        user: 1000:1000\n";
    assert_eq!(errors(".woodpecker.yml", yaml), Vec::<String>::new());
    assert_eq!(warnings(".woodpecker.yml", yaml), Vec::<String>::new());
    let plan = plan(yaml, &push());
    let stage = &plan.stages[0];
    assert_eq!(stage.backend, gantry_pipeline::model::PipelineType::Docker);
    assert_eq!(
        stage.step("lint").and_then(|s| s.user.as_deref()),
        Some("1000:1000")
    );
}

/// What one pod cannot be, or gantry does not do, is an error naming the step and the key.
#[test]
fn kubernetes_backend_options_that_cannot_be_honoured_are_errors() {
    let errors = |options: &str| {
        let yaml = format!(
            "steps:\n  - name: a\n    image: alpine\n    commands: [id]\n    backend_options:\n      kubernetes: {{serviceAccountName: one}}\n  - name: b\n    image: alpine\n    commands: [id]\n    backend_options:\n{options}"
        );
        errors(".woodpecker.yml", &yaml).join("\n")
    };
    let two_accounts = errors("      kubernetes: {serviceAccountName: two}\n");
    assert!(
        two_accounts.contains("step `b` asks for the service account `two`")
            && two_accounts.contains("share one pod"),
        "{two_accounts}"
    );
    let mounted = errors(
        "      kubernetes:\n        secrets: [{name: aws, key: id, target: {env: AWS_ID}}]\n",
    );
    assert!(
        mounted.contains("does not mount Kubernetes Secrets") && mounted.contains("from_secret"),
        "{mounted}"
    );
    let gpu = errors("      kubernetes:\n        resources: {limits: {nvidia.com/gpu: 1}}\n");
    assert!(gpu.contains("not `nvidia.com/gpu`"), "{gpu}");
    let local = errors("      local: {shell: bash}\n");
    assert!(
        local.contains("gantry has no `local` backend options"),
        "{local}"
    );
    let two_users = errors(
        "      docker: {user: \"1000\"}\n      kubernetes:\n        securityContext: {runAsUser: 2000}\n",
    );
    assert!(
        two_users.contains("user is set twice: `1000` and `2000`"),
        "{two_users}"
    );
    let root = errors("      kubernetes:\n        securityContext: {runAsNonRoot: true}\n");
    assert!(
        root.contains("`runAsNonRoot` needs the user's id"),
        "{root}"
    );
    let profile =
        errors("      kubernetes:\n        securityContext: {seccompProfile: {type: Localhost}}\n");
    assert!(profile.contains("localhostProfile: NAME"), "{profile}");
}

/// `gantry lint .woodpecker/deploy.yml` checks that file alone: the workflow it depends on
/// lives in another file, so naming it is a warning; checked with its folder, an unknown one
/// is an error.
#[test]
fn one_workflow_linted_alone_warns_of_dependencies_in_other_files() {
    let deploy =
        "depends_on: [build]\nsteps:\n  deploy:\n    image: alpine\n    commands: [./deploy]\n";
    let alone = parse_workflow_alone(".woodpecker/deploy.yml", deploy);
    assert!(alone.config.is_some(), "{}", alone.diagnostics);
    let warnings: Vec<String> = alone
        .diagnostics
        .warnings()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        warnings,
        [
            ".woodpecker/deploy.yml:1:14: warning: depends_on names `build`, which is not in this file (at pipeline[deploy].depends_on); it is checked when the whole `.woodpecker/` folder is linted or built"
        ]
    );
    let folder = parse_files(
        &[Source {
            name: ".woodpecker/deploy.yml",
            text: deploy,
        }],
        &Limits::default(),
    );
    assert!(folder.config.is_none());
    assert!(
        folder
            .diagnostics
            .errors()
            .any(|e| e.message.contains("unknown pipeline `build`"))
    );
}

/// Woodpecker's own schema test files, as its linter judges them and as gantry does now.
#[test]
fn woodpecker_schema_files_get_woodpeckers_verdicts() {
    // Valid in Woodpecker: `concurrency` with a group, and its shorthand.
    let grouped = "steps:\n  deploy:\n    image: alpine\n    commands: [echo deploying]\nconcurrency:\n  limit: 1\n  group: deploy-production\n";
    let parsed = parse(".woodpecker.yml", grouped);
    assert!(parsed.diagnostics.is_empty(), "{}", parsed.diagnostics);
    let stage = &plan(grouped, &push()).stages[0];
    assert_eq!(stage.concurrency, Some(1));
    assert_eq!(stage.locks, ["acme/app:deploy-production"]);
    let shorthand =
        "steps:\n  deploy:\n    image: alpine\n    commands: [echo deploying]\nconcurrency: 2\n";
    assert_eq!(plan(shorthand, &push()).stages[0].concurrency, Some(2));
    // Invalid in Woodpecker: a group without a limit, and a plugin with commands.
    assert!(
        lint_errors(
            "steps:\n  d:\n    image: alpine\n    commands: [x]\nconcurrency:\n  group: g\n"
        )
        .iter()
        .any(|e| e == "`concurrency` needs a `limit`")
    );
    assert_eq!(
        lint_errors(
            "steps:\n  publish:\n    image: plugins/docker\n    settings:\n      repo: foo/bar\n    commands:\n      - env\n"
        ),
        ["a step cannot have both `commands` and `settings`"]
    );
    // Valid in Woodpecker 3, refused by gantry with the way to write it.
    let cross = "steps:\n  build:\n    image: test\n    depends_on:\n      - workflow: auxiliaries\n        step: resolve-pins\n";
    assert_eq!(
        lint_errors(cross),
        ["gantry does not start a step after a step of another workflow"]
    );
    assert_eq!(
        lint_errors(
            "compile:\n  generate:\n    image: alpine\nsteps:\n  test:\n    image: golang\n    commands: [go test]\n"
        ),
        ["`compile` steps generate the workflow at build time, and gantry does not run them"]
    );
}

/// Woodpecker's `tag:` condition picks tags by name; a git plugin cloning another `remote`
/// is a step of its own (it brings a second repository), not the built-in clone.
#[test]
fn tag_conditions_and_clone_steps_of_other_repositories() {
    let yaml = "when:\n  - tag: 'v**'\n    event: tag\nclone:\n  - name: git\n    image: woodpeckerci/plugin-git\n  - name: testdata\n    image: woodpeckerci/plugin-git\n    settings:\n      remote: https://gitserver/owner/testdata.git\n      path: testdata\nsteps:\n  - name: build\n    image: golang\n    commands: [go build]\n";
    let tag = |name: &str| {
        let mut ctx = push();
        ctx.event = gantry_pipeline::Event::Tag;
        ctx.tag = Some(name.into());
        ctx.reference = format!("refs/tags/{name}");
        ctx.branch = String::new();
        ctx
    };
    assert!(plan(yaml, &tag("v1.2.0")).stages[0].run);
    assert!(!plan(yaml, &tag("nightly")).stages[0].run);
    let stage = plan(yaml, &tag("v1.2.0")).stages.remove(0);
    let names: Vec<&str> = stage.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["clone", "testdata", "build"]);
    assert_eq!(stage.steps[1].kind, StepKind::Plugin);
}

/// Woodpecker before 2 filtered a workflow's branches at the top (`branches:`), as Drone 0.8
/// did; it was read as an unknown key and ignored, so the workflow ran on every branch.
#[test]
fn a_top_level_branches_filter_picks_the_branches() {
    let on = |yaml: &str, branch: &str| {
        let mut ctx = push();
        ctx.branch = branch.into();
        ctx.reference = format!("refs/heads/{branch}");
        plan(yaml, &ctx).stages[0].run
    };
    let plain = "branches: main\nsteps:\n  build:\n    image: golang\n    commands: [go test]\n";
    assert!(on(plain, "main"));
    assert!(!on(plain, "develop"));
    let include = "branches:\n  include: [main, 'release/*']\n  exclude: [release/old]\nwhen:\n  event: push\nsteps:\n  build:\n    image: golang\n    commands: [go test]\n";
    assert!(on(include, "release/1"));
    assert!(!on(include, "release/old"));
    assert!(!on(include, "feature"));
    assert_eq!(warnings(".woodpecker.yml", plain), Vec::<String>::new());
}

/// Woodpecker 3's `depends_on` objects: `{name: X}` is `X`, and with `optional: true` a
/// workflow or step the build does not have is dropped instead of refused.
#[test]
fn depends_on_objects_name_workflows_and_steps_and_may_be_optional() {
    let compile_folder = |files: &[(&str, &str)]| {
        let sources: Vec<Source<'_>> = files
            .iter()
            .map(|(name, text)| Source { name, text })
            .collect();
        let parsed = parse_files(&sources, &Limits::default());
        let config = parsed
            .config
            .unwrap_or_else(|| panic!("invalid:\n{}", parsed.diagnostics));
        assert!(parsed.diagnostics.is_empty(), "{}", parsed.diagnostics);
        gantry_pipeline::compile(&config, &push()).expect("compiles")
    };
    let build = "steps:\n  make:\n    image: alpine\n    commands: [make]\n";
    let deploy = "depends_on:\n  - name: build\n  - name: docs\n    optional: true\nsteps:\n  ship:\n    image: alpine\n    commands: [./ship]\n";
    let plan = compile_folder(&[
        (".woodpecker/build.yml", build),
        (".woodpecker/deploy.yml", deploy),
    ]);
    let deploy_stage = plan
        .stages
        .iter()
        .find(|s| s.name == "deploy")
        .expect("deploy");
    assert_eq!(
        deploy_stage.depends_on,
        ["build"],
        "docs is not in this build"
    );

    // Not optional, a workflow the build does not have is still an error.
    let strict =
        "depends_on:\n  - name: docs\nsteps:\n  ship:\n    image: alpine\n    commands: [./ship]\n";
    let parsed = parse_files(
        &[Source {
            name: ".woodpecker/deploy.yml",
            text: strict,
        }],
        &Limits::default(),
    );
    assert!(
        parsed
            .diagnostics
            .errors()
            .any(|e| e.message.contains("unknown pipeline `docs`")),
        "{}",
        parsed.diagnostics
    );

    // Steps: the same forms.
    let steps = "steps:\n  lint:\n    image: alpine\n    commands: [lint]\n  test:\n    image: alpine\n    commands: [test]\n    depends_on:\n      - name: lint\n      - name: generate\n        optional: true\n";
    let stage = &plan_of(steps).stages[0];
    let test = stage.steps.iter().find(|s| s.name == "test").expect("test");
    assert_eq!(test.depends_on, ["lint"]);
    assert_eq!(
        lint_errors(
            "steps:\n  test:\n    image: alpine\n    commands: [test]\n    depends_on:\n      - optional: true\n"
        ),
        ["a `depends_on` entry written as a map needs `name`"]
    );
}
