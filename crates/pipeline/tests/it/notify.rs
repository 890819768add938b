//! A pipeline's `notify:` block: decoded into the plan, and clear errors for what is wrong.

use gantry_pipeline::{Context, compile, parse};

const HEAD: &str =
    "kind: pipeline\nname: ci\nsteps:\n  - name: t\n    image: alpine\n    commands: [true]\n";

#[test]
fn notify_targets_reach_the_plan() {
    let yaml = format!(
        "{HEAD}notify:\n  - kind: slack\n    url: https://hooks.example/T/B/x\n  - kind: discord\n    url: {{from_secret: discord_hook}}\n    on: [always]\n    branch: main\n    event: [push, tag]\n"
    );
    let parsed = parse(".gantry.yml", &yaml);
    assert!(!parsed.diagnostics.has_errors(), "{}", parsed.diagnostics);
    let plan = compile(
        &parsed.config.expect("valid"),
        &Context::push("acme/app", "main"),
    )
    .expect("plans");
    let notify = &plan.stages[0].notify;
    assert_eq!(notify.len(), 2);
    assert_eq!(notify[0].kind, "slack");
    assert_eq!(
        notify[0].url.as_deref(),
        Some("https://hooks.example/T/B/x")
    );
    assert_eq!(notify[0].on, ["failure", "recovery"], "the default rules");
    assert_eq!(notify[1].url_secret.as_deref(), Some("discord_hook"));
    assert_eq!(notify[1].on, ["always"]);
    assert_eq!(notify[1].branches, ["main"]);
    assert_eq!(notify[1].events, ["push", "tag"]);
}

#[test]
fn a_wrong_notify_entry_is_an_error_at_its_place() {
    let yaml = format!(
        "{HEAD}notify:\n  - kind: irc\n    url: https://x\n  - kind: slack\n    url: ftp://x\n  - kind: teams\n    url: https://x\n    on: [sometimes]\n"
    );
    let parsed = parse(".gantry.yml", &yaml);
    let text = parsed.diagnostics.to_string();
    assert!(
        text.contains(".gantry.yml:8:11: error: unknown chat service `irc`"),
        "{text}"
    );
    assert!(
        text.contains(".gantry.yml:11:10: error: url must be an http(s) webhook URL"),
        "{text}"
    );
    assert!(text.contains("unknown rule `sometimes`"), "{text}");
}
