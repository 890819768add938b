//! `gantry build`: list, show, start, restart, cancel, approve, decline and promote builds.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use gantry_server::human::took;
use serde_json::json;

use super::*;
use crate::pipeline_cmd::parse_param;

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: BuildCommand,
}

#[derive(Debug, Subcommand)]
pub enum BuildCommand {
    /// Lists a repository's builds, newest first.
    Ls {
        repo: String,
        #[arg(long)]
        branch: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 25)]
        limit: u32,
    },
    /// Shows a build with its stages and steps.
    Info { repo: String, number: u64 },
    /// Prints a step's log (STAGE and STEP are numbers, as in the step's URL).
    Logs {
        repo: String,
        number: u64,
        stage: u64,
        step: u64,
    },
    /// Which recent builds' steps printed a line matching PATTERN, newest first, with the
    /// line and a link to it: "when did this start failing?".
    Grep {
        repo: String,
        pattern: String,
        /// Only builds of this branch.
        #[arg(long)]
        branch: Option<String>,
        /// How many of the newest builds to search (at most 200).
        #[arg(long, default_value_t = 20)]
        last: u32,
        /// Only builds since then: a date (2026-11-30), a time (RFC 3339) or an age (36h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// PATTERN is a regular expression.
        #[arg(long, short = 'E')]
        regex: bool,
        /// Match case (ignored by default).
        #[arg(long)]
        case: bool,
    },
    /// Starts a new build of the same commit and context.
    Restart { repo: String, number: u64 },
    /// Cancels a build.
    Cancel { repo: String, number: u64 },
    /// Lets a blocked build (a pull request from a fork) run.
    Approve { repo: String, number: u64 },
    /// Ends a blocked build without running it.
    Decline { repo: String, number: u64 },
    /// Starts a build of a branch (its head, or --commit), with parameters.
    Create {
        repo: String,
        #[arg(long)]
        branch: Option<String>,
        #[arg(long)]
        commit: Option<String>,
        /// KEY=VALUE, given to steps as environment variables (repeatable).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Makes it a deployment (`promote`) to this target.
        #[arg(long)]
        deploy_to: Option<String>,
    },
    /// Deploys a finished build's commit to TARGET (event `promote`, `DRONE_DEPLOY_TO`),
    /// as a new build; pipelines pick it with a `target` condition.
    Promote {
        repo: String,
        number: u64,
        target: String,
        /// KEY=VALUE, given to steps as environment variables (repeatable).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
}

pub fn build(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        let client = Client::new(&args.connection)?;
        match &args.command {
            BuildCommand::Ls { repo, branch, status, limit } => {
                let (owner, name) = split_repo(repo)?;
                let mut path = format!("/api/repos/{owner}/{name}/builds?limit={limit}");
                if let Some(branch) = branch {
                    path.push_str(&format!("&branch={}", encode(branch)));
                }
                if let Some(status) = status {
                    path.push_str(&format!("&status={}", encode(status)));
                }
                let builds: Vec<gantry_api::Build> =
                    client.json(reqwest::Method::GET, &path, None).await?;
                for build in builds {
                    println!(
                        "#{:<6} {:<8} {:<12} {:<20} {:<10} {}",
                        build.number,
                        build.status.as_str(),
                        build.event,
                        build.branch,
                        took(build.started_at, build.finished_at),
                        build.message.lines().next().unwrap_or("")
                    );
                }
            }
            BuildCommand::Info { repo, number } => {
                let (owner, name) = split_repo(repo)?;
                let build: gantry_api::BuildDetail = client
                    .json(reqwest::Method::GET, &format!("/api/repos/{owner}/{name}/builds/{number}"), None)
                    .await?;
                print_build(&build);
            }
            BuildCommand::Logs { repo, number, stage, step } => {
                let (owner, name) = split_repo(repo)?;
                let response = client
                    .send(
                        reqwest::Method::GET,
                        &format!("/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}"),
                        None,
                    )
                    .await?;
                print!("{}", response.text().await.context("while reading the log")?);
            }
            BuildCommand::Grep { repo, pattern, branch, last, since, regex, case } => {
                let (owner, name) = split_repo(repo)?;
                let mut path = format!(
                    "/api/repos/{owner}/{name}/logs/search?q={}&last={last}&regex={regex}&case={case}",
                    encode(pattern)
                );
                if let Some(branch) = branch {
                    path.push_str(&format!("&branch={}", encode(branch)));
                }
                if let Some(since) = since {
                    path.push_str(&format!("&since={}", encode(since)));
                }
                let found: gantry_api::RepoLogSearch =
                    client.json(reqwest::Method::GET, &path, None).await?;
                for hit in &found.hits {
                    println!(
                        "#{} {} {} {}/{}:{}: {}\n    {}",
                        hit.build,
                        hit.status.as_str(),
                        hit.branch,
                        hit.stage,
                        hit.step,
                        hit.line,
                        hit.text,
                        hit.link
                    );
                }
                let builds = found.hits.iter().map(|h| h.build).collect::<std::collections::BTreeSet<_>>();
                eprintln!(
                    "{} matching line{} in {} of the {} build{} searched{}",
                    found.hits.len(),
                    if found.hits.len() == 1 { "" } else { "s" },
                    builds.len(),
                    found.builds_searched,
                    if found.builds_searched == 1 { "" } else { "s" },
                    found.stopped.map(|why| format!(" ({why})")).unwrap_or_default()
                );
                // As grep: 1 when nothing matched.
                if found.hits.is_empty() {
                    return Ok(ExitCode::from(1));
                }
            }
            BuildCommand::Restart { repo, number } => {
                let (owner, name) = split_repo(repo)?;
                let build: gantry_api::BuildDetail = client
                    .json(reqwest::Method::POST, &format!("/api/repos/{owner}/{name}/builds/{number}/restart"), None)
                    .await?;
                print_build(&build);
            }
            BuildCommand::Cancel { repo, number }
            | BuildCommand::Approve { repo, number }
            | BuildCommand::Decline { repo, number } => {
                let action = match &args.command {
                    BuildCommand::Cancel { .. } => "cancel",
                    BuildCommand::Approve { .. } => "approve",
                    _ => "decline",
                };
                let (owner, name) = split_repo(repo)?;
                let build: gantry_api::BuildDetail = client
                    .json(reqwest::Method::POST, &format!("/api/repos/{owner}/{name}/builds/{number}/{action}"), None)
                    .await?;
                print_build(&build);
            }
            BuildCommand::Create { repo, branch, commit, params, deploy_to } => {
                let (owner, name) = split_repo(repo)?;
                let params = params_json(params);
                let build: gantry_api::BuildDetail = client
                    .json(
                        reqwest::Method::POST,
                        &format!("/api/repos/{owner}/{name}/builds"),
                        Some(json!({ "branch": branch, "commit": commit, "params": params, "deploy_to": deploy_to })),
                    )
                    .await?;
                print_build(&build);
            }
            BuildCommand::Promote { repo, number, target, params } => {
                let (owner, name) = split_repo(repo)?;
                let build: gantry_api::BuildDetail = client
                    .json(
                        reqwest::Method::POST,
                        &format!("/api/repos/{owner}/{name}/builds/{number}/promote"),
                        Some(json!({ "target": target, "params": params_json(params) })),
                    )
                    .await?;
                print_build(&build);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
