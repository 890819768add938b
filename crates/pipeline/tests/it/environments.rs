//! `deploy:` — the environment a pipeline deploys to, its variables, and its `on_stop`
//! pipeline, which runs only in a build that stops the environment.

use gantry_pipeline::context::StoppingEnvironment;
use gantry_pipeline::plan::DeployAction;
use gantry_pipeline::{Context, compile, parse};

use crate::support::{errors, plan, push};

const REVIEW: &str = "kind: pipeline
name: review
deploy:
  environment: review/${CI_COMMIT_REF_SLUG}
  url: https://${CI_COMMIT_REF_SLUG}.review.example.com
  on_stop: teardown
  auto_stop_in: 3d
steps:
  - name: deploy
    image: alpine/helm
    commands: [helm upgrade --install \"$CI_ENVIRONMENT_SLUG\" ./chart]
---
kind: pipeline
name: teardown
steps:
  - name: uninstall
    image: alpine/helm
    commands: [helm uninstall \"$CI_ENVIRONMENT_SLUG\"]
";

fn push_to(branch: &str) -> Context {
    let mut ctx = push();
    ctx.branch = branch.into();
    ctx.reference = format!("refs/heads/{branch}");
    ctx
}

#[test]
fn a_push_deploys_its_branchs_environment_and_its_steps_see_it() {
    let plan = plan(REVIEW, &push_to("feature/X"));
    let review = &plan.stages[0];
    assert!(review.run);
    let deploy = review.deploy.as_ref().expect("it deploys");
    assert_eq!(deploy.environment, "review/feature-x");
    assert_eq!(
        deploy.url.as_deref(),
        Some("https://feature-x.review.example.com")
    );
    assert_eq!(deploy.action, DeployAction::Start);
    assert_eq!(deploy.on_stop.as_deref(), Some("teardown"));
    assert_eq!(deploy.auto_stop_secs, Some(3 * 86_400));
    // One deployment at a time per environment: the stage holds its lock.
    assert_eq!(review.locks, ["environment:acme/app:review/feature-x"]);
    assert!(deploy.slug.starts_with("review-feature-x-") && deploy.slug.len() == 23);
    assert!(review.step("deploy").is_some());
    for (name, value) in [
        ("CI_ENVIRONMENT_NAME", "review/feature-x"),
        ("CI_ENVIRONMENT_SLUG", deploy.slug.as_str()),
        ("CI_ENVIRONMENT_URL", "https://feature-x.review.example.com"),
        ("CI_ENVIRONMENT_ACTION", "start"),
        ("DRONE_DEPLOY_TO", "review/feature-x"),
        ("CI_COMMIT_REF_SLUG", "feature-x"),
    ] {
        assert_eq!(
            review.environment.get(name).map(String::as_str),
            Some(value),
            "{name}"
        );
    }
    let teardown = &plan.stages[1];
    assert!(!teardown.run);
    assert_eq!(
        teardown.reason.as_deref(),
        Some(
            "runs only when environment `review/${CI_COMMIT_REF_SLUG}` of pipeline `review` stops (its `on_stop`)"
        )
    );
}

#[test]
fn a_stop_build_runs_only_the_on_stop_pipeline_with_the_environment() {
    let mut ctx = push_to("feature/x");
    ctx.stopping = Some(StoppingEnvironment {
        name: "review/feature-x".into(),
        url: Some("https://feature-x.review.example.com".into()),
        pipeline: "teardown".into(),
    });
    let plan_of = |ctx: &Context| plan(REVIEW, ctx);
    let plan = plan_of(&ctx);
    let review = &plan.stages[0];
    assert!(!review.run);
    assert_eq!(
        review.reason.as_deref(),
        Some("this build stops environment `review/feature-x`: only `teardown` runs")
    );
    let teardown = &plan.stages[1];
    assert!(teardown.run, "{:?}", teardown.reason);
    let deploy = teardown.deploy.as_ref().expect("it stops one");
    assert_eq!(deploy.action, DeployAction::Stop);
    assert_eq!(deploy.environment, "review/feature-x");
    assert!(teardown.step("uninstall").is_some());
    assert_eq!(
        teardown
            .environment
            .get("CI_ENVIRONMENT_ACTION")
            .map(String::as_str),
        Some("stop")
    );
    assert_eq!(
        teardown
            .environment
            .get("CI_ENVIRONMENT_URL")
            .map(String::as_str),
        Some("https://feature-x.review.example.com")
    );
    // Last deployed by a redeploy, whose context it inherits: the teardown runs all the same.
    ctx.redeploy = Some("review/feature-x".into());
    assert!(plan_of(&ctx).stages[1].run);
    ctx.redeploy = None;

    // The file at the deployed commit lost its `on_stop` pipeline: the build says so.
    let config = parse(".drone.yml", REVIEW).config.expect("valid");
    ctx.stopping = Some(StoppingEnvironment {
        name: "review/feature-x".into(),
        url: None,
        pipeline: "gone".into(),
    });
    let error = compile(&config, &ctx)
        .expect_err("no such pipeline")
        .to_string();
    assert!(
        error.contains("stopped by pipeline `gone`, which the file at this commit does not have"),
        "{error}"
    );
}

#[test]
fn lint_checks_on_stop_durations_and_names() {
    let with = |deploy: &str| {
        let yaml = format!(
            "kind: pipeline\nname: review\ndeploy: {deploy}\nsteps:\n  - name: a\n    image: alpine\n    commands: [true]\n---\nkind: pipeline\nname: teardown\nsteps:\n  - name: a\n    image: alpine\n    commands: [true]\n"
        );
        errors(".drone.yml", &yaml).join("\n")
    };
    assert_eq!(
        with("{environment: production, on_stop: teardown, auto_stop_in: 1 week}"),
        ""
    );
    let unknown = with("{environment: production, on_stop: tear-down}");
    assert!(
        unknown.contains("`on_stop` names `tear-down`, which is not a pipeline of .drone.yml"),
        "{unknown}"
    );
    let itself = with("{environment: production, on_stop: review}");
    assert!(itself.contains("names the pipeline itself"), "{itself}");
    let duration = with("{environment: production, auto_stop_in: soon}");
    assert!(duration.contains("`soon` is not a duration"), "{duration}");
    let name = with("{environment: \"prod:eu\"}");
    assert!(
        name.contains("`prod:eu` is not an environment name"),
        "{name}"
    );
    let missing = with("{url: https://example.com}");
    assert!(missing.contains("needs the `environment`"), "{missing}");
    let url = with("{environment: production, url: \"ftp://x\"}");
    assert!(url.contains("is not an http(s) URL"), "{url}");

    // A branch whose name makes no environment name fails the build with the reason.
    let yaml = "kind: pipeline\nname: review\ndeploy: {environment: \"review/${DRONE_BRANCH}\"}\nsteps:\n  - name: a\n    image: alpine\n    commands: [true]\n";
    let config = parse(".drone.yml", yaml).config.expect("valid");
    let error = compile(&config, &push_to("fix@home"))
        .expect_err("no such name")
        .to_string();
    assert!(
        error.contains("`review/fix@home` is not an environment name"),
        "{error}"
    );

    // Only where the pipeline runs: a promote pipeline deploys to `${DRONE_DEPLOY_TO}`,
    // empty in a push build, which skips it and builds.
    let yaml = "kind: pipeline\nname: deploy\ntrigger: {event: [promote]}\ndeploy: {environment: \"${DRONE_DEPLOY_TO}\"}\nsteps:\n  - name: a\n    image: alpine\n    commands: [true]\n";
    let config = parse(".drone.yml", yaml).config.expect("valid");
    let pushed = compile(&config, &push_to("main")).expect("a push skips it");
    assert!(!pushed.stages[0].run);
    let mut promoted = push_to("main");
    promoted.event = gantry_pipeline::Event::Promote;
    promoted.deploy_target = Some("production".into());
    let plan = compile(&config, &promoted).expect("deploys");
    assert_eq!(
        plan.stages[0]
            .deploy
            .as_ref()
            .map(|d| d.environment.as_str()),
        Some("production")
    );
}

#[test]
fn a_woodpecker_workflow_deploys_too() {
    let yaml = "deploy:\n  environment: staging\nsteps:\n  - name: ship\n    image: alpine\n    commands: [./ship]\n";
    assert_eq!(errors(".woodpecker.yml", yaml), Vec::<String>::new());
    let plan = plan(yaml, &push());
    assert_eq!(
        plan.stages[0]
            .deploy
            .as_ref()
            .map(|d| d.environment.as_str()),
        Some("staging")
    );
}

/// A fork's pull request would otherwise replace an environment's deployment, its `on_stop`
/// pipeline and its link, and supersede the deployments waiting for it.
#[test]
fn a_pull_request_from_a_fork_deploys_nowhere() {
    let mut ctx = push_to("feature/x");
    ctx.fork = true;
    let plan = plan(REVIEW, &ctx);
    let review = &plan.stages[0];
    assert!(!review.run);
    assert_eq!(review.deploy, None);
    assert_eq!(
        review.reason.as_deref(),
        Some(
            "a pull request from a fork deploys to no environment (`review/feature-x`): push its branch to the repository to deploy it"
        )
    );
    assert!(!review.environment.contains_key("CI_ENVIRONMENT_NAME"));
}

#[test]
fn a_redeploy_runs_only_the_deployment_again() {
    let file = "kind: pipeline
name: build
steps:
  - {name: compile, image: busybox, commands: [make]}
---
kind: pipeline
name: lint
steps:
  - {name: lint, image: busybox, commands: [make lint]}
---
kind: pipeline
name: staging
depends_on: [build]
deploy: {environment: staging}
steps:
  - {name: ship, image: busybox, commands: [./ship staging]}
---
kind: pipeline
name: production
depends_on: [staging]
deploy: {environment: production}
steps:
  - {name: ship, image: busybox, commands: [./ship production]}
";
    let mut ctx = push_to("main");
    ctx.redeploy = Some("staging".into());
    let redeploy = plan(file, &ctx);
    let runs: Vec<(&str, bool)> = redeploy
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.run))
        .collect();
    assert_eq!(
        runs,
        [
            ("build", false),
            ("lint", false),
            ("staging", true),
            ("production", false)
        ]
    );
    assert_eq!(
        redeploy.stages[3].reason.as_deref(),
        Some("this build redeploys environment `staging`: only `staging` runs again")
    );
    assert!(redeploy.stages[3].steps.iter().all(|s| !s.run));

    ctx.redeploy = Some("review/gone".into());
    let nowhere = plan(file, &ctx);
    assert!(nowhere.stages.iter().all(|s| !s.run));
    assert_eq!(
        nowhere.stages[0].reason.as_deref(),
        Some(
            "this build redeploys environment `review/gone`, which no pipeline of this commit deploys to"
        )
    );
}
