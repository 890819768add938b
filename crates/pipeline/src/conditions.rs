//! Whether a `when` or `trigger` holds for a build, with Drone's semantics: the keys of a block
//! are ANDed; `exclude` beats `include`; an empty `include` matches anything; `branch` compares
//! the target branch of a pull request and never matches a tag; alternatives of a Woodpecker
//! list are ORed. `status` is not decided here: it depends on what happens at run time, so it
//! becomes a [`StatusFilter`] in the plan.
//!
//! Two events must be asked for by name in a pipeline's `trigger` (a Woodpecker workflow's
//! `when`), because a pipeline written for pushes must not run when they happen: `delete` (a
//! branch or tag was deleted) and a closed pull request (`pull_request_closed`, or
//! `pull_request` together with an `action` condition naming `closed`). Inside a pipeline that
//! asked for them, steps follow the usual rules.

use std::collections::BTreeMap;

use crate::context::{Context, Event};
use crate::diag::Pos;
use crate::glob::{Mode, glob_match};
use crate::model::{Conditions, Constraint, PathConstraint, Platform, StatusFilter};

/// What a condition is evaluated against besides the build: the stage's own facts.
#[derive(Debug, Clone, Copy)]
pub struct StageFacts<'a> {
    pub platform: &'a Platform,
    pub matrix: &'a BTreeMap<String, String>,
    /// The stage's variables, for `evaluate` expressions.
    pub variables: &'a BTreeMap<String, String>,
}

/// Why conditions do not let something run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// A condition does not hold; the text says which and why.
    Because(String),
    /// A condition cannot be decided (an `evaluate` expression failed): the build is in error.
    Invalid { pos: Pos, message: String },
}

impl Constraint {
    /// Drone's `Condition.Match`: excluded → no; included → yes; no include list → yes.
    pub fn matches(&self, value: &str) -> bool {
        self.matches_with(|pattern| glob_match(pattern, value, Mode::Path))
    }

    fn matches_with(&self, mut matches: impl FnMut(&str) -> bool) -> bool {
        if self.exclude.iter().any(|p| matches(p)) {
            return false;
        }
        self.include.is_empty() || self.include.iter().any(|p| matches(p))
    }
}

impl PathConstraint {
    /// Woodpecker's semantics: no files → `on_empty`; excluded when every file is excluded;
    /// included when any file is included. (`ignore_message` and the events it applies to
    /// are the caller's: [`Conditions::check`].)
    pub fn matches(&self, files: &[String]) -> bool {
        if files.is_empty() {
            return self.on_empty;
        }
        let any = |patterns: &[String], file: &str| {
            patterns.iter().any(|p| glob_match(p, file, Mode::Path))
        };
        if !self.exclude.is_empty() && files.iter().all(|f| any(&self.exclude, f)) {
            return false;
        }
        self.include.is_empty() || files.iter().any(|f| any(&self.include, f))
    }
}

fn normalize_event(name: &str) -> &str {
    match name {
        "manual" => "custom",
        "deployment" | "deploy" => "promote",
        other => other,
    }
}

fn normalize_action(name: &str) -> &str {
    match name {
        "synchronized" => "synchronize",
        "open" => "opened",
        other => other,
    }
}

impl Conditions {
    /// Every key but `status`; `Err` carries why it does not hold, for the plan's `reason`.
    pub fn check(&self, ctx: &Context, stage: StageFacts<'_>, scope: Scope) -> Result<(), Skip> {
        self.check_static(ctx, stage, scope)
            .map_err(Skip::Because)?;
        self.check_paths(ctx)?;
        if let Some(expression) = &self.evaluate {
            match crate::expr::evaluate(&expression.value, stage.variables) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Skip::Because(format!(
                        "`evaluate: {}` is false",
                        expression.value
                    )));
                }
                Err(e) => {
                    return Err(Skip::Invalid {
                        pos: expression.pos,
                        message: format!("`evaluate` failed: {e}"),
                    });
                }
            }
        }
        Ok(())
    }

    fn check_static(
        &self,
        ctx: &Context,
        stage: StageFacts<'_>,
        scope: Scope,
    ) -> Result<(), String> {
        self.check_event(ctx, scope)?;
        if !self.branch.is_empty() {
            if matches!(ctx.event, Event::Tag) {
                return Err(format!(
                    "when.branch {} never matches a tag",
                    describe(&self.branch)
                ));
            }
            let branch = ctx.condition_branch();
            if !self.branch.matches(branch) {
                return Err(format!(
                    "branch `{branch}` does not match {}",
                    describe(&self.branch)
                ));
            }
        }
        check(&self.reference, &ctx.reference, "ref")?;
        check(&self.repo, &ctx.repo.full_name(), "repo")?;
        check(
            &self.target,
            ctx.deploy_target.as_deref().unwrap_or(""),
            "target",
        )?;
        check(&self.cron, ctx.cron.as_deref().unwrap_or(""), "cron")?;
        check(&self.tag, ctx.tag.as_deref().unwrap_or(""), "tag")?;
        check(&self.instance, &ctx.instance, "instance")?;
        if !self.action.is_empty() {
            let action = normalize_action(ctx.action.as_deref().unwrap_or(""));
            let matched = self
                .action
                .matches_with(|p| glob_match(normalize_action(p), action, Mode::Path));
            if !matched {
                return Err(format!(
                    "action `{action}` does not match {}",
                    describe(&self.action)
                ));
            }
        }
        if !self.platform.is_empty() {
            let platform = format!(
                "{}/{}",
                stage.platform.os.as_deref().unwrap_or("linux"),
                stage.platform.arch.as_deref().unwrap_or("amd64")
            );
            check(&self.platform, &platform, "platform")?;
        }
        for (axis, want) in &self.matrix {
            let have = stage.matrix.get(axis).map(String::as_str).unwrap_or("");
            if have != want {
                return Err(format!("matrix {axis}=`{have}` is not `{want}`"));
            }
        }
        Ok(())
    }

    /// `path` / `paths`, as Woodpecker applies them: to pushes and pull requests only.
    fn check_paths(&self, ctx: &Context) -> Result<(), Skip> {
        let Some(paths) = &self.paths else {
            return Ok(());
        };
        if !matches!(ctx.event, Event::Push | Event::PullRequest) {
            return Ok(());
        }
        if let Some(marker) = &paths.ignore_message
            && ctx.message.to_lowercase().contains(&marker.to_lowercase())
        {
            return Ok(());
        }
        if ctx.changed_files_overflow {
            return Ok(());
        }
        if let Some(why) = &ctx.changed_files_error {
            return Err(Skip::Invalid {
                pos: paths.pos,
                message: format!("`path` cannot be decided: {why}"),
            });
        }
        if paths.matches(&ctx.changed_files) {
            return Ok(());
        }
        Err(Skip::Because(if ctx.changed_files.is_empty() {
            "no changed files, and `on_empty` is false".to_owned()
        } else {
            format!("no changed file matches paths {}", describe_paths(paths))
        }))
    }

    fn check_event(&self, ctx: &Context, scope: Scope) -> Result<(), String> {
        let name = if ctx.is_closed_pull_request() {
            "pull_request_closed"
        } else {
            ctx.event.as_str()
        };
        if self.event.is_empty() {
            if scope == Scope::Pipeline && opt_in_event(ctx) {
                return Err(format!(
                    "`{name}` events run only pipelines whose trigger names them in `event`"
                ));
            }
            return Ok(());
        }
        let names_closed_action = self.action.include.iter().any(|a| a == "closed");
        let matched = self.event.matches_with(|pattern| {
            let pattern = normalize_event(pattern);
            if ctx.is_closed_pull_request() {
                return pattern == "pull_request_closed"
                    || (pattern == "pull_request" && names_closed_action);
            }
            glob_match(pattern, name, Mode::Path)
        });
        if matched {
            Ok(())
        } else {
            Err(format!(
                "event `{name}` does not match {}",
                describe(&self.event)
            ))
        }
    }
}

fn check(constraint: &Constraint, value: &str, key: &str) -> Result<(), String> {
    if constraint.matches(value) {
        Ok(())
    } else {
        Err(format!(
            "{key} `{value}` does not match {}",
            describe(constraint)
        ))
    }
}

fn describe(c: &Constraint) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (c.include.is_empty(), c.exclude.is_empty()) {
        (false, true) => format!("[{}]", list(&c.include)),
        (true, false) => format!("exclude [{}]", list(&c.exclude)),
        _ => format!(
            "include [{}] exclude [{}]",
            list(&c.include),
            list(&c.exclude)
        ),
    }
}

fn describe_paths(p: &PathConstraint) -> String {
    describe(&Constraint {
        include: p.include.clone(),
        exclude: p.exclude.clone(),
        pos: p.pos,
    })
}

/// Statuses under which something gated by these alternatives may run: the default is
/// "only while passing"; `status: [failure]` is "only after a failure".
pub(crate) fn status_filter(alternatives: &[Conditions]) -> StatusFilter {
    if alternatives.is_empty() {
        return StatusFilter::SUCCESS;
    }
    alternatives
        .iter()
        .map(|c| c.status_filter())
        .fold(StatusFilter::NEVER, StatusFilter::union)
}

impl Conditions {
    /// The statuses this block's `status` key allows, success only when it is absent.
    pub fn status_filter(&self) -> StatusFilter {
        if self.status.is_empty() {
            return StatusFilter::SUCCESS;
        }
        let allows = |s: &str| {
            let included =
                self.status.include.is_empty() || self.status.include.iter().any(|p| p == s);
            let excluded = self.status.exclude.iter().any(|p| p == s);
            included && !excluded
        };
        StatusFilter {
            success: allows("success"),
            failure: allows("failure"),
        }
    }
}

/// What the conditions gate: a whole pipeline (`trigger`) or a step (`when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Pipeline,
    Step,
}

/// Events only pipelines that name them run (see the module comment).
fn opt_in_event(ctx: &Context) -> bool {
    ctx.event == Event::Delete || ctx.is_closed_pull_request()
}

/// Evaluates ORed alternatives: which statuses let it run, or why none of them holds.
/// No alternatives at all means "run while passing".
pub fn evaluate(
    alternatives: &[Conditions],
    ctx: &Context,
    stage: StageFacts<'_>,
    scope: Scope,
) -> Result<StatusFilter, Skip> {
    if alternatives.is_empty() {
        return match Conditions::default().check_event(ctx, scope) {
            Ok(()) => Ok(StatusFilter::SUCCESS),
            Err(reason) => Err(Skip::Because(reason)),
        };
    }
    let mut filter = StatusFilter::NEVER;
    let mut reasons = Vec::new();
    for alternative in alternatives {
        match alternative.check(ctx, stage, scope) {
            Ok(()) => filter = filter.union(alternative.status_filter()),
            Err(Skip::Because(reason)) => reasons.push(reason),
            Err(invalid) => return Err(invalid),
        }
    }
    if filter == StatusFilter::NEVER {
        if reasons.is_empty() {
            return Err(Skip::Because(
                "its `status` condition allows neither success nor failure".to_owned(),
            ));
        }
        return Err(Skip::Because(reasons.join("; or ")));
    }
    Ok(filter)
}
