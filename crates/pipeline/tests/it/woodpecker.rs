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

#[test]
fn backend_options_are_accepted_with_the_reason_they_do_nothing() {
    let yaml = "
steps:
  - name: build
    image: alpine
    commands: [make]
    backend_options:
      kubernetes:
        resources:
          limits: {memory: 1Gi}
";
    assert_eq!(errors(".woodpecker.yml", yaml), Vec::<String>::new());
    let warnings = warnings(".woodpecker.yml", yaml);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .contains("`backend_options` is ignored: gantry reads no per-step backend options"),
        "{warnings:?}"
    );
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
