//! `when` / `trigger` semantics and status gating, each case asserting exactly which steps
//! start. Written against Drone's runner semantics (and Woodpecker's where the dialect differs).

use gantry_pipeline::{Context, Event};

use crate::support::{edges, pipeline, plan, push, started};

const DEFAULT: &str = "
  - name: a
    image: alpine
    commands: [echo a]";

/// `a`, then a step `b` with the given `when` body, then `c`.
fn with_when(when: &str) -> String {
    pipeline(&format!(
        "{DEFAULT}
  - name: b
    image: alpine
    commands: [echo b]
    when:
{when}
  - name: c
    image: alpine
    commands: [echo c]
"
    ))
}

fn check(when: &str, ctx: &Context, expect: &[&str]) {
    let yaml = with_when(when);
    assert_eq!(
        started(&yaml, ctx, &[]),
        expect,
        "when:\n{when}\ncontext: {:?} {}",
        ctx.event,
        ctx.branch
    );
}

fn pull_request(source: &str, target: &str) -> Context {
    let mut ctx = push();
    ctx.event = Event::PullRequest;
    ctx.action = Some("opened".into());
    ctx.branch = source.into();
    ctx.target_branch = Some(target.into());
    ctx.pull_request = Some(7);
    ctx.reference = "refs/pull/7/head".into();
    ctx
}

fn tag(name: &str) -> Context {
    let mut ctx = push();
    ctx.event = Event::Tag;
    ctx.branch = String::new();
    ctx.tag = Some(name.into());
    ctx.reference = format!("refs/tags/{name}");
    ctx
}

fn on_branch(branch: &str) -> Context {
    let mut ctx = Context::push("acme/app", branch);
    ctx.repo.default_branch = "main".into();
    ctx
}

#[test]
fn branch_as_string_list_and_glob() {
    check("      branch: main", &push(), &["a", "b", "c"]);
    check("      branch: develop", &push(), &["a", "c"]);
    check("      branch: [develop, main]", &push(), &["a", "b", "c"]);
    check(
        "      branch: feature/*",
        &on_branch("feature/login"),
        &["a", "b", "c"],
    );
    check(
        "      branch: feature/*",
        &on_branch("feature/a/b"),
        &["a", "c"],
    );
    check(
        "      branch: feature/**",
        &on_branch("feature/a/b"),
        &["a", "b", "c"],
    );
}

#[test]
fn branch_include_exclude() {
    check(
        "      branch:\n        exclude: [main]",
        &push(),
        &["a", "c"],
    );
    check(
        "      branch:\n        exclude: [main]",
        &on_branch("dev"),
        &["a", "b", "c"],
    );
    check(
        "      branch:\n        include: [m*]\n        exclude: [main]",
        &push(),
        &["a", "c"],
    );
    check(
        "      branch:\n        include: []\n        exclude: [x]",
        &push(),
        &["a", "b", "c"],
    );
}

#[test]
fn branch_compares_the_target_of_a_pull_request_and_never_a_tag() {
    check(
        "      branch: main",
        &pull_request("feature", "main"),
        &["a", "b", "c"],
    );
    check(
        "      branch: feature",
        &pull_request("feature", "main"),
        &["a", "c"],
    );
    check("      branch: main", &tag("v1.0.0"), &["a", "c"]);
    check(
        "      branch: ['*', 'refs/tags/*']",
        &tag("v1.0.0"),
        &["a", "c"],
    );
}

#[test]
fn event() {
    check("      event: push", &push(), &["a", "b", "c"]);
    check("      event: [pull_request]", &push(), &["a", "c"]);
    check(
        "      event: [pull_request]",
        &pull_request("f", "main"),
        &["a", "b", "c"],
    );
    check("      event: tag", &tag("v1"), &["a", "b", "c"]);
    check(
        "      event:\n        exclude: [tag]",
        &tag("v1"),
        &["a", "c"],
    );
    check(
        "      event:\n        exclude: [tag]",
        &push(),
        &["a", "b", "c"],
    );
    let mut cron = push();
    cron.event = Event::Cron;
    cron.cron = Some("nightly".into());
    check("      event: cron", &cron, &["a", "b", "c"]);
}

#[test]
fn woodpecker_event_names_are_aliases() {
    let mut manual = push();
    manual.event = Event::Custom;
    check("      event: manual", &manual, &["a", "b", "c"]);
    check("      event: custom", &manual, &["a", "b", "c"]);
    let mut deploy = push();
    deploy.event = Event::Promote;
    deploy.deploy_target = Some("production".into());
    check("      event: deployment", &deploy, &["a", "b", "c"]);
    check("      event: promote", &deploy, &["a", "b", "c"]);
}

/// `a`, `b` with the given `when`, `c`, in a pipeline with the given `trigger`.
fn triggered(trigger: &str, when: &str) -> String {
    format!(
        "kind: pipeline\nname: ci\ntrigger:\n{trigger}\nsteps:\n{DEFAULT}\n  - name: b\n    image: alpine\n    commands: [echo b]\n    when:\n{when}\n  - name: c\n    image: alpine\n    commands: [echo c]\n"
    )
}

#[test]
fn delete_events_run_only_pipelines_that_name_them() {
    let mut delete = push();
    delete.event = Event::Delete;
    assert_eq!(
        started(&pipeline(DEFAULT), &delete, &[]),
        Vec::<String>::new()
    );
    check("      event: delete", &delete, &[]);
    let teardown = triggered("  event: [delete]", "      event: [push]");
    assert_eq!(started(&teardown, &delete, &[]), ["a", "c"]);
    let teardown = triggered("  event: [delete]\n  branch: main", "      branch: main");
    assert_eq!(started(&teardown, &delete, &[]), ["a", "b", "c"]);
    assert_eq!(started(&teardown, &push(), &[]), Vec::<String>::new());
}

#[test]
fn closed_pull_requests_run_only_pipelines_that_ask_for_them() {
    let mut closed = pull_request("feature", "main");
    closed.action = Some("closed".into());
    let normal = triggered(
        "  event: [push, pull_request]",
        "      event: [pull_request]",
    );
    assert_eq!(started(&normal, &closed, &[]), Vec::<String>::new());
    assert_eq!(
        started(&normal, &pull_request("feature", "main"), &[]),
        ["a", "b", "c"]
    );
    let woodpecker = triggered(
        "  event: pull_request_closed",
        "      event: [pull_request]",
    );
    assert_eq!(started(&woodpecker, &closed, &[]), ["a", "c"]);
    let drone = triggered(
        "  event: pull_request\n  action: closed",
        "      action: [opened]",
    );
    assert_eq!(started(&drone, &closed, &[]), ["a", "c"]);
    let drone = triggered(
        "  event: pull_request\n  action: [opened, synchronize]",
        "      event: push",
    );
    assert_eq!(started(&drone, &closed, &[]), Vec::<String>::new());
}

#[test]
fn action() {
    let mut sync = pull_request("feature", "main");
    sync.action = Some("synchronize".into());
    check("      action: synchronized", &sync, &["a", "b", "c"]);
    check("      action: [opened]", &sync, &["a", "c"]);
}

#[test]
fn reference() {
    check("      ref: refs/tags/v*", &tag("v1.2.3"), &["a", "b", "c"]);
    check("      ref: refs/tags/v*", &push(), &["a", "c"]);
    check("      ref: refs/heads/main", &push(), &["a", "b", "c"]);
    check(
        "      ref: ['refs/pull/**']",
        &pull_request("f", "main"),
        &["a", "b", "c"],
    );
    check(
        "      ref:\n        exclude: ['refs/pull/*/head']",
        &pull_request("f", "main"),
        &["a", "c"],
    );
}

#[test]
fn status_defaults_to_success_only() {
    let yaml = with_when("      branch: main");
    assert_eq!(started(&yaml, &push(), &[]), ["a", "b", "c"]);
    assert_eq!(started(&yaml, &push(), &["a"]), ["a"]);
}

#[test]
fn status_failure_runs_only_after_a_failure() {
    let yaml = with_when("      status: [failure]");
    assert_eq!(started(&yaml, &push(), &[]), ["a", "c"]);
    assert_eq!(started(&yaml, &push(), &["a"]), ["a", "b"]);
}

#[test]
fn status_success_and_failure_always_runs() {
    let yaml = with_when("      status: [success, failure]");
    assert_eq!(started(&yaml, &push(), &[]), ["a", "b", "c"]);
    assert_eq!(started(&yaml, &push(), &["a"]), ["a", "b"]);
    let yaml = with_when("      status:\n        exclude: [success]");
    assert_eq!(started(&yaml, &push(), &[]), ["a", "c"]);
    assert_eq!(started(&yaml, &push(), &["a"]), ["a", "b"]);
}

#[test]
fn failure_ignore_records_and_goes_on_as_passing() {
    let yaml = pipeline(
        "
  - name: flaky
    image: alpine
    commands: [exit 1]
    failure: ignore
  - name: next
    image: alpine
    commands: [echo next]
  - name: on-failure
    image: alpine
    commands: [echo failed]
    when:
      status: [failure]
",
    );
    assert_eq!(started(&yaml, &push(), &["flaky"]), ["flaky", "next"]);
    assert_eq!(
        started(&yaml, &push(), &["next"]),
        ["flaky", "next", "on-failure"]
    );
}

#[test]
fn a_migration_never_starts_after_a_failure() {
    let yaml = pipeline(
        "
  - name: build
    image: alpine
    commands: [make]
  - name: migrate
    image: alpine
    commands: [make migrate]
  - name: deploy
    image: alpine
    commands: [make deploy]
  - name: notify
    image: plugins/slack
    when:
      status: [success, failure]
",
    );
    assert_eq!(started(&yaml, &push(), &["build"]), ["build", "notify"]);
    assert_eq!(
        started(&yaml, &push(), &["migrate"]),
        ["build", "migrate", "notify"]
    );
}

#[test]
fn repo_target_cron_instance() {
    check("      repo: acme/*", &push(), &["a", "b", "c"]);
    check("      repo: other/app", &push(), &["a", "c"]);
    let mut deploy = push();
    deploy.event = Event::Promote;
    deploy.deploy_target = Some("production".into());
    check("      target: production", &deploy, &["a", "b", "c"]);
    check("      target: [staging]", &deploy, &["a", "c"]);
    check("      environment: production", &deploy, &["a", "b", "c"]);
    check("      target: production", &push(), &["a", "c"]);
    let mut cron = push();
    cron.event = Event::Cron;
    cron.cron = Some("nightly".into());
    check("      cron: nightly", &cron, &["a", "b", "c"]);
    check("      cron: [weekly]", &cron, &["a", "c"]);
    let mut instance = push();
    instance.instance = "ci.example.com".into();
    check(
        "      instance: ci.example.com",
        &instance,
        &["a", "b", "c"],
    );
    check(
        "      instance: [other.example.com]",
        &instance,
        &["a", "c"],
    );
}

#[test]
fn paths_of_changed_files() {
    let mut ctx = push();
    ctx.changed_files = vec!["docs/index.md".into(), "README.md".into()];
    check("      paths: ['**/*.go']", &ctx, &["a", "c"]);
    check("      paths: ['docs/**']", &ctx, &["a", "b", "c"]);
    check(
        "      path:\n        include: ['**/*.md']\n        exclude: ['docs/**']",
        &ctx,
        &["a", "b", "c"],
    );
    check(
        "      path:\n        exclude: ['**/*.md']",
        &ctx,
        &["a", "c"],
    );
    let unknown = push();
    check("      paths: ['**/*.go']", &unknown, &["a", "b", "c"]);
    check(
        "      path:\n        include: ['**/*.go']\n        on_empty: false",
        &unknown,
        &["a", "c"],
    );
}

#[test]
fn paths_filter_pushes_and_pull_requests_only() {
    let when = "      paths: ['services/api/**']";
    let mut pr = pull_request("feature", "main");
    pr.changed_files = vec!["services/web/index.html".into()];
    check(when, &pr, &["a", "c"]);
    pr.changed_files.push("services/api/main.go".into());
    check(when, &pr, &["a", "b", "c"]);
    // Woodpecker applies path conditions to pushes and pull requests alone: a tag, a cron
    // or a manual build has no list of changes to filter on.
    let mut release = tag("v1.0.0");
    release.changed_files = vec!["README.md".into()];
    check(when, &release, &["a", "b", "c"]);
    let mut manual = push();
    manual.event = Event::Custom;
    check(
        "      path:\n        include: ['services/api/**']\n        on_empty: false",
        &manual,
        &["a", "b", "c"],
    );
}

#[test]
fn too_many_changed_files_let_every_path_condition_hold() {
    let mut ctx = push();
    ctx.changed_files_overflow = true;
    check(
        "      path:\n        include: ['src/**']\n        on_empty: false",
        &ctx,
        &["a", "b", "c"],
    );
}

#[test]
fn ignore_message_lets_the_path_condition_hold() {
    let mut ctx = push();
    ctx.changed_files = vec!["docs/index.md".into()];
    let when = "      path:\n        include: ['src/**']\n        ignore_message: '[ALL]'";
    check(when, &ctx, &["a", "c"]);
    ctx.message = "Bump everything [all]".into();
    check(when, &ctx, &["a", "b", "c"]);
}

#[test]
fn unknown_changed_files_error_the_build_instead_of_guessing() {
    let yaml = "steps:\n  a:\n    image: alpine\n    when:\n      path: 'src/**'\n";
    let config = gantry_pipeline::parse(".woodpecker.yml", yaml)
        .config
        .expect("valid syntax");
    let mut ctx = push();
    ctx.changed_files_error = Some("the commit before the push could not be fetched".into());
    let text = gantry_pipeline::compile(&config, &ctx)
        .expect_err("cannot decide")
        .to_string();
    assert!(
        text.contains(".woodpecker.yml:5:13: error: `path` cannot be decided: the commit before the push could not be fetched"),
        "{text}"
    );
    // Without a path condition, the same context compiles.
    let plain = gantry_pipeline::parse(".woodpecker.yml", "steps:\n  a:\n    image: alpine\n")
        .config
        .expect("valid syntax");
    assert!(gantry_pipeline::compile(&plain, &ctx).is_ok());
}

#[test]
fn keys_are_anded() {
    check(
        "      branch: main\n      event: push",
        &push(),
        &["a", "b", "c"],
    );
    check("      branch: main\n      event: tag", &push(), &["a", "c"]);
    check("      branch: dev\n      event: push", &push(), &["a", "c"]);
}

#[test]
fn woodpecker_when_lists_are_ored() {
    let yaml = "
steps:
  a:
    image: alpine
    commands: [echo a]
  b:
    image: alpine
    commands: [echo b]
    when:
      - event: pull_request
      - event: push
        branch: ${CI_REPO_DEFAULT_BRANCH}
";
    assert_eq!(started(yaml, &push(), &[]), ["a", "b"]);
    assert_eq!(started(yaml, &on_branch("dev"), &[]), ["a"]);
    assert_eq!(started(yaml, &pull_request("dev", "main"), &[]), ["a", "b"]);
}

#[test]
fn woodpecker_platform_and_matrix_conditions() {
    let yaml = "
matrix:
  GO: ['1.21', '1.22']
labels:
  platform: linux/arm64
steps:
  test:
    image: golang:${GO}
    commands: [go test]
  only-new:
    image: golang:${GO}
    commands: [go vet]
    when:
      matrix:
        GO: '1.22'
  only-amd64:
    image: golang:${GO}
    commands: [echo amd64]
    when:
      platform: linux/amd64
";
    let plan = plan(yaml, &push());
    let running = plan.running_steps();
    assert_eq!(
        running,
        vec![
            ("gantry (GO=1.21)", vec!["clone", "test"]),
            ("gantry (GO=1.22)", vec!["clone", "test", "only-new"]),
        ]
    );
    assert_eq!(
        plan.stages[1].steps[1].image.as_deref(),
        Some("golang:1.22")
    );
    assert_eq!(plan.stages[0].environment["GO"], "1.21");
}

#[test]
fn trigger_skips_a_whole_pipeline_with_its_reason() {
    let yaml = "
kind: pipeline
name: deploy
trigger:
  branch: [production]
steps:
  - name: deploy
    image: alpine
    commands: [make deploy]
";
    let plan = plan(yaml, &push());
    let stage = &plan.stages[0];
    assert!(!stage.run);
    assert_eq!(
        stage.reason.as_deref(),
        Some("branch `main` does not match [`production`]")
    );
    assert!(stage.steps.iter().all(|s| !s.run));
}

#[test]
fn skipped_steps_say_which_condition_skipped_them() {
    let plan = plan(&with_when("      event: [tag]"), &push());
    let b = plan.stages[0].step("b").expect("step b");
    assert!(!b.run);
    assert_eq!(
        b.reason.as_deref(),
        Some("event `push` does not match [`tag`]")
    );
}

#[test]
fn stages_depend_through_skipped_ones_and_keep_their_status_filter() {
    let yaml = "
kind: pipeline
name: build
steps:
  - {name: build, image: alpine, commands: [make]}
---
kind: pipeline
name: release
trigger:
  event: [tag]
depends_on: [build]
steps:
  - {name: release, image: alpine, commands: [make release]}
---
kind: pipeline
name: notify
depends_on: [release]
trigger:
  status: [success, failure]
steps:
  - {name: notify, image: plugins/slack}
";
    let plan = plan(yaml, &push());
    let names: Vec<(&str, bool, Vec<String>)> = plan
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.run, s.depends_on.clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("build", true, vec![]),
            ("release", false, vec!["build".to_owned()]),
            ("notify", true, vec!["build".to_owned()]),
        ]
    );
    let notify = plan.stage("notify").expect("notify");
    assert!(notify.runs_on.success && notify.runs_on.failure);
}

#[test]
fn graph_steps_start_when_their_own_parents_are_done() {
    let yaml = pipeline(
        "
  - {name: lint, image: alpine, commands: [lint]}
  - {name: unit, image: alpine, commands: [unit], depends_on: []}
  - {name: build, image: alpine, commands: [build], depends_on: [lint]}
  - {name: e2e, image: alpine, commands: [e2e], depends_on: [build, unit]}
",
    );
    let plan = plan(&yaml, &push());
    let edges = edges(&plan.stages[0]);
    assert_eq!(
        edges,
        vec![
            ("clone", vec![]),
            ("lint", vec!["clone"]),
            ("unit", vec!["clone"]),
            ("build", vec!["lint"]),
            ("e2e", vec!["build", "unit"]),
        ]
    );
}

#[test]
fn sequential_steps_each_wait_for_the_previous() {
    let plan = plan(&with_when("      event: push"), &push());
    let edges: Vec<Vec<&str>> = edges(&plan.stages[0])
        .into_iter()
        .map(|(_, deps)| deps)
        .collect();
    assert_eq!(edges, vec![vec![], vec!["clone"], vec!["a"], vec!["b"]]);
}

#[test]
fn woodpecker_evaluate_expressions() {
    let yaml = r#"
steps:
  publish:
    image: plugins/docker
    when:
      - evaluate: 'CI_COMMIT_PULL_REQUEST_LABELS contains "build_pr_images"'
  dryrun:
    image: plugins/docker
    when:
      - evaluate: 'not (CI_COMMIT_PULL_REQUEST_LABELS contains "build_pr_images")'
        event: pull_request
  release:
    image: plugins/docker
    when:
      event: tag
      evaluate: '"${CI_COMMIT_TAG}" matches ''^v[0-9]+\.[0-9]+\.[0-9]+$'''
"#;
    let mut pr = pull_request("feature", "main");
    assert_eq!(started(yaml, &pr, &[]), ["dryrun"]);
    pr.pull_request_labels = vec!["bug".into(), "build_pr_images".into()];
    assert_eq!(started(yaml, &pr, &[]), ["publish"]);
    assert_eq!(started(yaml, &tag("v1.2.3"), &[]), ["release"]);
    assert_eq!(
        started(yaml, &tag("v1.2.3-rc.1"), &[]),
        Vec::<String>::new()
    );
    let skipped = plan(yaml, &tag("v1.2.3-rc.1"));
    let reason = skipped.stages[0]
        .step("release")
        .and_then(|s| s.reason.clone());
    assert_eq!(
        reason.as_deref(),
        Some(r#"`evaluate: "v1.2.3-rc.1" matches '^v[0-9]+\.[0-9]+\.[0-9]+$'` is false"#)
    );
}

#[test]
fn evaluate_errors_make_the_build_invalid_not_skipped() {
    let yaml = "steps:\n  a:\n    image: alpine\n    when:\n      evaluate: 'fromJSON(CI_COMMIT_MESSAGE) == nil'\n";
    let config = gantry_pipeline::parse(".woodpecker.yml", yaml)
        .config
        .expect("valid syntax");
    let mut ctx = push();
    ctx.message = "not json".into();
    let err = gantry_pipeline::compile(&config, &ctx).expect_err("cannot decide");
    let text = err.to_string();
    assert!(
        text.contains(".woodpecker.yml:5:17: error: `evaluate` failed: fromJSON:"),
        "{text}"
    );
    let lint = gantry_pipeline::lint(".woodpecker.yml", &yaml.replace("== nil", "=="));
    assert!(
        lint.to_string().starts_with(".woodpecker.yml:5:17: error: invalid `evaluate` expression: the expression ends too early"),
        "{lint}"
    );
}
