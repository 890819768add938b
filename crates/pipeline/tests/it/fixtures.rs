//! Every real-world pipeline file in the shared fixtures lints without errors and plans for a
//! push to its default branch.

use gantry_pipeline::{CompileError, Context, compile};
use gantry_test_support::pipeline_fixtures;

use crate::support::parse_fixture;

fn push_to(branch: &str, trusted: bool) -> Context {
    let mut ctx = Context::push("acme/app", branch);
    ctx.commit = "0123456789abcdef0123456789abcdef01234567".into();
    ctx.trusted = trusted;
    ctx
}

#[test]
fn every_fixture_lints_and_plans() {
    let mut failures = Vec::new();
    for (file, text) in pipeline_fixtures() {
        let parsed = parse_fixture(&file, &text);
        if parsed.diagnostics.has_errors() {
            failures.push(format!("{file}:\n{}", parsed.diagnostics));
            continue;
        }
        let config = parsed.config.expect("no errors means a configuration");
        for branch in ["main", "master"] {
            match compile(&config, &push_to(branch, true)) {
                Ok(plan) if plan.stages.is_empty() => failures.push(format!("{file}: no stages")),
                Ok(_) => {}
                Err(e) => failures.push(format!("{file} (push to {branch}): {e}")),
            }
            // Untrusted, a plan either comes out or is refused for a trust reason only.
            match compile(&config, &push_to(branch, false)) {
                Ok(_) | Err(CompileError::Untrusted(_)) => {}
                Err(e) => failures.push(format!("{file} (untrusted push to {branch}): {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn fixtures_cover_every_dialect() {
    let mut seen = std::collections::BTreeSet::new();
    for (file, text) in pipeline_fixtures() {
        let parsed = parse_fixture(&file, &text);
        for (_, dialect) in parsed.dialects {
            seen.insert(format!("{:?}", dialect.expect("known dialect")));
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["DroneLegacy", "Gantry", "Woodpecker"]
    );
}
