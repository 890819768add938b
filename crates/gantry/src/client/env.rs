//! `gantry env`: a repository's environments (`deploy:` in its pipelines).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use super::*;

#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: EnvCommand,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Lists a repository's environments: state, URL, last deployment, when it stops.
    Ls { repo: String },
    /// Stops an environment: runs its `on_stop` pipeline from the commit it was deployed
    /// from (one without is marked stopped).
    Stop { repo: String, name: String },
}

pub fn env(args: &EnvArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        let client = Client::new(&args.connection)?;
        match &args.command {
            EnvCommand::Ls { repo } => {
                let (owner, repo_name) = split_repo(repo)?;
                let environments: Vec<gantry_api::Environment> = client
                    .json(
                        reqwest::Method::GET,
                        &format!("/api/repos/{owner}/{repo_name}/environments"),
                        None,
                    )
                    .await?;
                if environments.is_empty() {
                    println!(
                        "no environments (a pipeline deploys to one with `deploy: {{environment: NAME}}`)"
                    );
                }
                for e in environments {
                    let last = e.deployments.first().map_or(String::new(), |d| {
                        format!(
                            "#{} {} {} {}",
                            d.build,
                            d.status,
                            d.commit.chars().take(8).collect::<String>(),
                            d.author
                        )
                    });
                    let stops = e.auto_stop_at.map_or(String::new(), |at| {
                        format!("  stops {}", gantry_server::human::at_ms(at))
                    });
                    println!(
                        "{:<28} {:<12} {:<40} {last}{stops}",
                        e.name,
                        e.state,
                        e.url.as_deref().unwrap_or("-"),
                    );
                }
            }
            EnvCommand::Stop { repo, name } => {
                let (owner, repo_name) = split_repo(repo)?;
                let response = client
                    .send(
                        reqwest::Method::POST,
                        &format!("/api/repos/{owner}/{repo_name}/environments/stop"),
                        Some(json!({ "name": name })),
                    )
                    .await?;
                if response.status() == reqwest::StatusCode::NO_CONTENT {
                    println!("stopped environment {name} (it has no on_stop pipeline)");
                } else {
                    let build: gantry_api::BuildDetail = response
                        .json()
                        .await
                        .context("while reading the stop build")?;
                    println!("stopping environment {name}:");
                    print_build(&build);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
