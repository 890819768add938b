//! Snapshots of the plans of representative files: what runs, in what order, and why not.

use gantry_pipeline::{Context, Event, compile};
use gantry_test_support::pipeline_fixtures;

use crate::support::parse_fixture;

fn fixture(name: &str) -> (String, String) {
    pipeline_fixtures()
        .into_iter()
        .find(|(file, _)| file == name)
        .unwrap_or_else(|| panic!("fixture {name} not found"))
}

fn plan_text(file: &str, ctx: &Context) -> String {
    let (name, text) = fixture(file);
    let parsed = parse_fixture(&name, &text);
    let config = parsed
        .config
        .unwrap_or_else(|| panic!("{}", parsed.diagnostics));
    compile(&config, ctx)
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
}

fn push(branch: &str) -> Context {
    let mut ctx = Context::push("acme/app", branch);
    ctx.trusted = true;
    ctx
}

#[test]
fn gitea_push_to_master() {
    insta::assert_snapshot!(plan_text("go-gitea__gitea__.drone.yml", &push("master")));
}

#[test]
fn gitea_tag() {
    let mut ctx = push("master");
    ctx.event = Event::Tag;
    ctx.tag = Some("v1.21.0".into());
    ctx.branch = String::new();
    ctx.reference = "refs/tags/v1.21.0".into();
    insta::assert_snapshot!(plan_text("go-gitea__gitea__.drone.yml", &ctx));
}

#[test]
fn woodpecker_test_pull_request() {
    let mut ctx = push("feature");
    ctx.event = Event::PullRequest;
    ctx.target_branch = Some("main".into());
    ctx.pull_request = Some(12);
    ctx.reference = "refs/pull/12/head".into();
    ctx.changed_files = vec!["server/api/repo.go".into()];
    insta::assert_snapshot!(plan_text(
        "woodpecker-ci__woodpecker__.woodpecker_test.yaml",
        &ctx
    ));
}

#[test]
fn akkoma_legacy_release_branch() {
    insta::assert_snapshot!(plan_text(
        "BDX-town__Akkoma__.woodpecker.yml",
        &push("stable")
    ));
}

#[test]
fn akkoma_matrix_pull_request() {
    let mut ctx = push("feature");
    ctx.event = Event::PullRequest;
    ctx.target_branch = Some("develop".into());
    ctx.pull_request = Some(3);
    insta::assert_snapshot!(plan_text("BDX-town__Akkoma__.woodpecker_test.yml", &ctx));
}

#[test]
fn photoprism_exec_pipelines() {
    insta::assert_snapshot!(plan_text(
        "photoprism__photoprism__.drone.yml",
        &push("develop")
    ));
}

#[test]
fn gotosocial_cron() {
    let mut ctx = push("main");
    ctx.repo.owner = "superseriousbusiness".into();
    ctx.repo.name = "gotosocial".into();
    ctx.event = Event::Cron;
    ctx.cron = Some("nightly".into());
    insta::assert_snapshot!(plan_text(
        "superseriousbusiness__gotosocial__.drone.yml",
        &ctx
    ));
}

#[test]
fn full_json_of_a_small_plan() {
    let (name, text) = fixture("drone__drone-cli__.drone.yml");
    let parsed = parse_fixture(&name, &text);
    let config = parsed.config.expect("valid");
    let mut ctx = push("master");
    ctx.commit = "0123456789abcdef0123456789abcdef01234567".into();
    ctx.build_number = 42;
    ctx.link = "https://ci.example.com/acme/app/42".into();
    let plan = compile(&config, &ctx).expect("plans");
    insta::assert_json_snapshot!(plan);
}
