//! `gantry cron`: a repository's schedules.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use super::*;
use crate::pipeline_cmd::parse_param;

#[derive(Debug, Args)]
pub struct CronArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: CronCommand,
}

#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// Adds a schedule: a build of BRANCH's head (event `cron`) at each tick of EXPRESSION.
    Add {
        repo: String,
        name: String,
        /// Five fields (`0 3 * * 1-5`: minute hour day-of-month month day-of-week), Drone's
        /// six with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly.
        expression: String,
        /// The repository's default branch when not given.
        #[arg(long)]
        branch: Option<String>,
        /// The IANA time zone the expression is read in (`Europe/Berlin`); UTC by default.
        #[arg(long)]
        timezone: Option<String>,
        /// KEY=VALUE, given to steps as environment variables (repeatable).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Lists a repository's schedules with their next run and last build.
    Ls { repo: String },
    /// Removes a schedule.
    Rm { repo: String, name: String },
    /// Runs a schedule now (its next tick stays as it is).
    Run { repo: String, name: String },
}

pub fn cron(args: &CronArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        let client = Client::new(&args.connection)?;
        match &args.command {
            CronCommand::Add {
                repo,
                name,
                expression,
                branch,
                timezone,
                params,
            } => {
                let (owner, repo_name) = split_repo(repo)?;
                let schedule: gantry_api::Schedule = client
                    .json(
                        reqwest::Method::POST,
                        &format!("/api/repos/{owner}/{repo_name}/cron"),
                        Some(json!({
                            "name": name,
                            "expression": expression,
                            "branch": branch,
                            "timezone": timezone,
                            "params": params_json(params),
                        })),
                    )
                    .await?;
                println!(
                    "added schedule {} ({} {}, branch {}): next run {}",
                    schedule.name,
                    schedule.expression,
                    schedule.timezone,
                    schedule.branch,
                    gantry_server::human::at_ms(schedule.next_run_at)
                );
            }
            CronCommand::Ls { repo } => {
                let (owner, repo_name) = split_repo(repo)?;
                let schedules: Vec<gantry_api::Schedule> = client
                    .json(
                        reqwest::Method::GET,
                        &format!("/api/repos/{owner}/{repo_name}/cron"),
                        None,
                    )
                    .await?;
                if schedules.is_empty() {
                    println!(
                        "no schedules (add one with `gantry cron add {repo} NAME EXPRESSION`)"
                    );
                }
                for s in schedules {
                    let last = match (&s.last_build, &s.last_error) {
                        (_, Some(error)) => format!("last run failed: {error}"),
                        (Some(build), None) => {
                            format!("last build #{} {}", build.number, build.status)
                        }
                        (None, None) => "not run yet".to_owned(),
                    };
                    println!(
                        "{:<20} {:<16} {:<14} {:<12} next {}  {last}",
                        s.name,
                        s.expression,
                        s.timezone,
                        s.branch,
                        gantry_server::human::at_ms(s.next_run_at)
                    );
                }
            }
            CronCommand::Rm { repo, name } => {
                let (owner, repo_name) = split_repo(repo)?;
                client
                    .send(
                        reqwest::Method::DELETE,
                        &format!("/api/repos/{owner}/{repo_name}/cron/{}", encode(name)),
                        None,
                    )
                    .await?;
                println!("removed schedule {name}");
            }
            CronCommand::Run { repo, name } => {
                let (owner, repo_name) = split_repo(repo)?;
                let build: gantry_api::BuildDetail = client
                    .json(
                        reqwest::Method::POST,
                        &format!("/api/repos/{owner}/{repo_name}/cron/{}/run", encode(name)),
                        None,
                    )
                    .await?;
                print_build(&build);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
