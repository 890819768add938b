//! The variables a build gives its steps: gantry's `CI_*` (Woodpecker's names) and, so that
//! existing Drone plugins and scripts work unchanged, the `DRONE_*` ones.

use std::collections::BTreeMap;

use crate::context::{Context, Event};

/// The most changed files `CI_PIPELINE_FILES` lists; past it the variable is not set.
pub const MAX_PIPELINE_FILES: usize = 500;

/// Variables of the whole build; also what `${VAR}` in the file is substituted from.
pub fn build_variables(ctx: &Context) -> BTreeMap<String, String> {
    let facts = Facts::of(ctx);
    let mut v = BTreeMap::new();
    let mut set = |k: &str, val: &str| {
        v.insert(k.to_owned(), val.to_owned());
    };
    set("CI", "true");
    set("GANTRY", "true");
    set("DRONE", "true");
    ci_variables(ctx, &facts, &mut set);
    drone_variables(ctx, &facts, &mut set);
    for (k, val) in &ctx.params {
        set(k, val);
    }
    v
}

/// What several variables say, worked out once from the context.
struct Facts<'c> {
    repo: String,
    tag: &'c str,
    pr: String,
    target_branch: &'c str,
    source_branch: &'c str,
    deploy: &'c str,
    cron: &'c str,
    number: String,
    parent: String,
    commit_link: String,
    created: String,
    action: &'c str,
    before: &'c str,
    visibility: &'c str,
}

impl<'c> Facts<'c> {
    fn of(ctx: &'c Context) -> Self {
        let repo = ctx.repo.full_name();
        let tag = ctx.tag.as_deref().unwrap_or("");
        let pr = ctx.pull_request.map(|n| n.to_string()).unwrap_or_default();
        let target_branch = match ctx.event {
            Event::PullRequest => ctx.target_branch.as_deref().unwrap_or(&ctx.branch),
            _ => &ctx.branch,
        };
        let source_branch = &ctx.branch;
        let deploy = ctx.deploy_target.as_deref().unwrap_or("");
        let cron = ctx.cron.as_deref().unwrap_or("");
        let number = ctx.build_number.to_string();
        let parent = ctx.parent.map(|n| n.to_string()).unwrap_or_default();
        let commit_link = if ctx.repo.link.is_empty() || ctx.commit.is_empty() {
            String::new()
        } else {
            format!("{}/commit/{}", ctx.repo.link, ctx.commit)
        };
        let created = ctx.created.to_string();
        let action = ctx.action.as_deref().unwrap_or("");
        let before = ctx.before.as_deref().unwrap_or("");
        let visibility = if ctx.repo.private {
            "private"
        } else {
            "public"
        };
        Facts {
            repo,
            tag,
            pr,
            target_branch,
            source_branch,
            deploy,
            cron,
            number,
            parent,
            commit_link,
            created,
            action,
            before,
            visibility,
        }
    }
}

/// Woodpecker's `CI_*` variables.
fn ci_variables(ctx: &Context, f: &Facts<'_>, set: &mut impl FnMut(&str, &str)) {
    set("CI_REPO", &f.repo);
    set("CI_REPO_OWNER", &ctx.repo.owner);
    set("CI_REPO_NAME", &ctx.repo.name);
    set("CI_REPO_URL", &ctx.repo.link);
    set("CI_REPO_CLONE_URL", &ctx.repo.clone_url);
    set("CI_REPO_DEFAULT_BRANCH", &ctx.repo.default_branch);
    set(
        "CI_REPO_PRIVATE",
        if ctx.repo.private { "true" } else { "false" },
    );
    set(
        "CI_REPO_TRUSTED",
        if ctx.trusted { "true" } else { "false" },
    );
    set("CI_COMMIT_SHA", &ctx.commit);
    set("CI_COMMIT_REF", &ctx.reference);
    set(
        "CI_COMMIT_REF_SLUG",
        &crate::deploy::ref_slug(if f.tag.is_empty() { &ctx.branch } else { f.tag }),
    );
    set("CI_COMMIT_REFSPEC", &ctx.reference);
    set("CI_COMMIT_BRANCH", f.target_branch);
    set("CI_COMMIT_SOURCE_BRANCH", f.source_branch);
    set("CI_COMMIT_TARGET_BRANCH", f.target_branch);
    set("CI_COMMIT_TAG", f.tag);
    set("CI_COMMIT_PULL_REQUEST", &f.pr);
    set(
        "CI_COMMIT_PULL_REQUEST_LABELS",
        &ctx.pull_request_labels.join(","),
    );
    set("CI_COMMIT_MESSAGE", &ctx.message);
    set("CI_COMMIT_AUTHOR", &ctx.author);
    set("CI_COMMIT_AUTHOR_EMAIL", &ctx.author_email);
    set("CI_COMMIT_URL", &f.commit_link);
    set("CI_PREV_COMMIT_SHA", f.before);
    set("CI_PIPELINE_NUMBER", &f.number);
    set("CI_PIPELINE_PARENT", &f.parent);
    set("CI_PIPELINE_EVENT", ctx.event.woodpecker_name());
    set("CI_PIPELINE_URL", &ctx.link);
    set("CI_PIPELINE_DEPLOY_TARGET", f.deploy);
    set("CI_PIPELINE_CRON", f.cron);
    set("CI_PIPELINE_CREATED", &f.created);
    set("CI_BUILD_NUMBER", &f.number);
    set("CI_BUILD_EVENT", ctx.event.as_str());
    set("CI_BUILD_ACTION", f.action);
    // Woodpecker leaves it unset past 500 files: a whole tree would not fit in an
    // environment variable (Linux caps one at 128 KiB).
    if !ctx.changed_files.is_empty() && ctx.changed_files.len() <= MAX_PIPELINE_FILES {
        let files = serde_json::to_string(&ctx.changed_files).unwrap_or_default();
        set("CI_PIPELINE_FILES", &files);
    }
    set("CI_SYSTEM_HOST", &ctx.instance);
}

/// Drone's `DRONE_*` variables.
fn drone_variables(ctx: &Context, f: &Facts<'_>, set: &mut impl FnMut(&str, &str)) {
    set("DRONE_REPO", &f.repo);
    set("DRONE_REPO_OWNER", &ctx.repo.owner);
    set("DRONE_REPO_NAMESPACE", &ctx.repo.owner);
    set("DRONE_REPO_NAME", &ctx.repo.name);
    set("DRONE_REPO_LINK", &ctx.repo.link);
    set("DRONE_REPO_BRANCH", &ctx.repo.default_branch);
    set(
        "DRONE_REPO_PRIVATE",
        if ctx.repo.private { "true" } else { "false" },
    );
    set("DRONE_REPO_VISIBILITY", f.visibility);
    set("DRONE_REMOTE_URL", &ctx.repo.clone_url);
    set("DRONE_GIT_HTTP_URL", &ctx.repo.clone_url);
    set("DRONE_BRANCH", f.target_branch);
    set("DRONE_SOURCE_BRANCH", f.source_branch);
    set("DRONE_TARGET_BRANCH", f.target_branch);
    set("DRONE_COMMIT", &ctx.commit);
    set("DRONE_COMMIT_SHA", &ctx.commit);
    set("DRONE_COMMIT_BEFORE", f.before);
    set("DRONE_COMMIT_AFTER", &ctx.commit);
    set("DRONE_COMMIT_REF", &ctx.reference);
    set("DRONE_COMMIT_BRANCH", f.target_branch);
    set("DRONE_COMMIT_MESSAGE", &ctx.message);
    set("DRONE_COMMIT_AUTHOR", &ctx.author);
    set("DRONE_COMMIT_AUTHOR_NAME", &ctx.author);
    set("DRONE_COMMIT_AUTHOR_EMAIL", &ctx.author_email);
    set("DRONE_COMMIT_LINK", &f.commit_link);
    set("DRONE_TAG", f.tag);
    set("DRONE_PULL_REQUEST", &f.pr);
    set(
        "DRONE_PULL_REQUEST_TITLE",
        ctx.pull_request_title.as_deref().unwrap_or(""),
    );
    set("DRONE_DEPLOY_TO", f.deploy);
    set("DRONE_CRON", f.cron);
    set("DRONE_BUILD_NUMBER", &f.number);
    set("DRONE_BUILD_PARENT", &f.parent);
    set("DRONE_BUILD_EVENT", ctx.event.as_str());
    set("DRONE_BUILD_ACTION", f.action);
    set("DRONE_BUILD_LINK", &ctx.link);
    set("DRONE_BUILD_CREATED", &f.created);
    set("DRONE_SYSTEM_HOST", &ctx.instance);
    if let Some(version) = Semver::parse(f.tag) {
        set("DRONE_SEMVER", &version.full);
        set(
            "DRONE_SEMVER_SHORT",
            &format!("{}.{}.{}", version.major, version.minor, version.patch),
        );
        set("DRONE_SEMVER_MAJOR", &version.major);
        set("DRONE_SEMVER_MINOR", &version.minor);
        set("DRONE_SEMVER_PATCH", &version.patch);
        set("DRONE_SEMVER_PRERELEASE", &version.prerelease);
        set("DRONE_SEMVER_BUILD", &version.build);
    }
}

/// A tag read as a semantic version (`v1.2.3-rc.1+build.5`), for the `DRONE_SEMVER*`
/// variables Drone sets only when the tag is one.
struct Semver {
    full: String,
    major: String,
    minor: String,
    patch: String,
    prerelease: String,
    build: String,
}

impl Semver {
    fn parse(tag: &str) -> Option<Self> {
        let full = tag.strip_prefix('v').unwrap_or(tag);
        let (rest, build) = full.split_once('+').unwrap_or((full, ""));
        let (core, prerelease) = rest.split_once('-').unwrap_or((rest, ""));
        let mut parts = core.split('.');
        let number = |p: Option<&str>| {
            p.filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_owned)
        };
        let (major, minor, patch) = (
            number(parts.next())?,
            number(parts.next())?,
            number(parts.next())?,
        );
        let identifiers_ok = |s: &str| {
            s.split('.')
                .all(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        };
        if parts.next().is_some()
            || (rest.contains('-') && !identifiers_ok(prerelease))
            || (full.contains('+') && !identifiers_ok(build))
        {
            return None;
        }
        Some(Self {
            full: full.to_owned(),
            major,
            minor,
            patch,
            prerelease: prerelease.to_owned(),
            build: build.to_owned(),
        })
    }
}

/// Variables that name the stage, for every step of it.
pub fn stage_variables(
    name: &str,
    number: u32,
    workspace: &str,
    matrix: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let number = number.to_string();
    let mut v: BTreeMap<String, String> = [
        ("CI_WORKFLOW_NAME", name),
        ("CI_WORKFLOW_NUMBER", &number),
        ("CI_WORKSPACE", workspace),
        ("DRONE_STAGE_NAME", name),
        ("DRONE_STAGE_NUMBER", &number),
        ("DRONE_WORKSPACE", workspace),
        ("DRONE_WORKSPACE_PATH", workspace),
    ]
    .into_iter()
    .map(|(k, val)| (k.to_owned(), val.to_owned()))
    .collect();
    v.extend(matrix.iter().map(|(k, val)| (k.clone(), val.clone())));
    v
}

/// Variables that name the step.
pub fn step_variables(name: &str, number: u32) -> [(String, String); 4] {
    let number = number.to_string();
    [
        ("CI_STEP_NAME".to_owned(), name.to_owned()),
        ("CI_STEP_NUMBER".to_owned(), number.clone()),
        ("DRONE_STEP_NAME".to_owned(), name.to_owned()),
        ("DRONE_STEP_NUMBER".to_owned(), number),
    ]
}

/// A plugin setting as Drone passes it: text as is, lists of scalars comma-joined, mappings
/// and lists of mappings as JSON.
pub fn encode_setting(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items)
            if items
                .iter()
                .all(|i| !matches!(i, Value::Array(_) | Value::Object(_))) =>
        {
            items
                .iter()
                .map(encode_setting)
                .collect::<Vec<_>>()
                .join(",")
        }
        Value::Array(_) | Value::Object(_) => serde_json::to_string(value).unwrap_or_default(),
    }
}

/// `PLUGIN_` + the setting's name in upper case, with anything but letters and digits as `_`.
pub fn plugin_variable(name: &str) -> String {
    let mut out = String::with_capacity(7 + name.len());
    out.push_str("PLUGIN_");
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    out
}

/// The script a `commands` list becomes: POSIX sh, stop at the first failure, each command
/// echoed as `+ command` before it runs (as Drone does). `printf` rather than `echo`, because
/// some shells' `echo` interprets backslashes.
pub fn script(commands: &[String]) -> String {
    let mut out = String::from("set -e\n");
    for command in commands {
        out.push('\n');
        out.push_str("printf '+ %s\\n' ");
        out.push_str(&shell_quote(command));
        out.push('\n');
        out.push_str(command);
        out.push('\n');
    }
    out
}

/// Single-quotes `text` for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn settings_encode_as_drone_does() {
        assert_eq!(encode_setting(&json!("x")), "x");
        assert_eq!(encode_setting(&json!(true)), "true");
        assert_eq!(encode_setting(&json!(42)), "42");
        assert_eq!(encode_setting(&json!(["a", "b", 1])), "a,b,1");
        assert_eq!(encode_setting(&json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(encode_setting(&json!([{"a": 1}])), r#"[{"a":1}]"#);
        assert_eq!(encode_setting(&json!(null)), "");
        assert_eq!(plugin_variable("build-args.x"), "PLUGIN_BUILD_ARGS_X");
    }

    #[test]
    fn script_echoes_each_command_safely() {
        let s = script(&["echo 'hi'".into(), "make test".into()]);
        assert_eq!(
            s,
            "set -e\n\nprintf '+ %s\\n' 'echo '\\''hi'\\'''\necho 'hi'\n\nprintf '+ %s\\n' 'make test'\nmake test\n"
        );
    }

    #[test]
    fn semver_variables_only_for_version_tags() {
        let mut ctx = Context::push("o/r", "");
        ctx.event = Event::Tag;
        ctx.tag = Some("v1.2.3-rc.1+build.5".into());
        let v = build_variables(&ctx);
        assert_eq!(v["DRONE_SEMVER"], "1.2.3-rc.1+build.5");
        assert_eq!(v["DRONE_SEMVER_SHORT"], "1.2.3");
        assert_eq!(v["DRONE_SEMVER_MAJOR"], "1");
        assert_eq!(v["DRONE_SEMVER_PRERELEASE"], "rc.1");
        assert_eq!(v["DRONE_SEMVER_BUILD"], "build.5");
        for tag in ["release-x", "v1.2", "1.2.3.4", "v1.2.x", "1.2.3-"] {
            ctx.tag = Some(tag.into());
            assert!(!build_variables(&ctx).contains_key("DRONE_SEMVER"), "{tag}");
        }
    }

    #[test]
    fn pull_requests_compare_target_branches() {
        let mut ctx = Context::push("o/r", "feature");
        ctx.event = Event::PullRequest;
        ctx.target_branch = Some("main".into());
        ctx.pull_request = Some(7);
        let v = build_variables(&ctx);
        assert_eq!(v["DRONE_BRANCH"], "main");
        assert_eq!(v["DRONE_SOURCE_BRANCH"], "feature");
        assert_eq!(v["DRONE_PULL_REQUEST"], "7");
        assert_eq!(v["CI_COMMIT_SOURCE_BRANCH"], "feature");
    }
}
