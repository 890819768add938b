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
    /// Deploys an earlier successful deployment again (a rollback): a build of that
    /// build's commit running only what deploys to the environment.
    Redeploy {
        repo: String,
        name: String,
        /// The number of the build whose deployment to run again (`gantry env ls`, history
        /// on the Environments page).
        build: i64,
    },
    /// Approves a deployment to a protected environment that waits for it.
    Approve {
        repo: String,
        build: i64,
        /// The stage's number; by default, the build's one stage waiting for approval.
        #[arg(long)]
        stage: Option<i64>,
        /// Declines it instead: the stage ends `declined` and nothing after it runs.
        #[arg(long)]
        decline: bool,
    },
    /// Protects environments matching a pattern: who approves their deployments, which
    /// branches may deploy. Replaces the pattern's rule. Needs admin.
    Protect {
        repo: String,
        /// A glob over environment names: `production`, `review/*`.
        pattern: String,
        /// A login who may approve (repeatable).
        #[arg(long = "approver")]
        approvers: Vec<String>,
        /// Anyone with at least this role (write or admin) may approve.
        #[arg(long)]
        approver_role: Option<String>,
        /// A branch glob that may deploy (repeatable; `refs/tags/v*` for tags); none: any.
        #[arg(long = "branch")]
        branches: Vec<String>,
    },
    /// Removes the rule of a pattern.
    Unprotect { repo: String, pattern: String },
    /// Lists the protected environment rules.
    Protected { repo: String },
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
            EnvCommand::Redeploy { repo, name, build } => {
                let (owner, repo_name) = split_repo(repo)?;
                let created: gantry_api::BuildDetail = client
                    .json(
                        reqwest::Method::POST,
                        &format!("/api/repos/{owner}/{repo_name}/environments/redeploy"),
                        Some(json!({ "name": name, "build": build })),
                    )
                    .await?;
                println!("redeploying build #{build} to {name}:");
                print_build(&created);
            }
            EnvCommand::Approve { repo, build, stage, decline } => {
                let (owner, repo_name) = split_repo(repo)?;
                let stage = match stage {
                    Some(stage) => *stage,
                    None => waiting_stage(&client, owner, repo_name, *build).await?,
                };
                let decision = if *decline { "decline" } else { "approve" };
                let decided: gantry_api::BuildDetail = client
                    .json(
                        reqwest::Method::POST,
                        &format!(
                            "/api/repos/{owner}/{repo_name}/builds/{build}/stages/{stage}/{decision}"
                        ),
                        None,
                    )
                    .await?;
                println!("{decision}d stage {stage} of build #{build}:");
                print_build(&decided);
            }
            EnvCommand::Protect { repo, pattern, approvers, approver_role, branches } => {
                let (owner, repo_name) = split_repo(repo)?;
                let rule: gantry_api::ProtectedEnvironment = client
                    .json(
                        reqwest::Method::PUT,
                        &format!("/api/repos/{owner}/{repo_name}/environments/protected"),
                        Some(json!({
                            "pattern": pattern,
                            "approvers": approvers,
                            "approver_role": approver_role,
                            "branches": branches,
                        })),
                    )
                    .await?;
                print_rule(&rule);
            }
            EnvCommand::Unprotect { repo, pattern } => {
                let (owner, repo_name) = split_repo(repo)?;
                client
                    .send(
                        reqwest::Method::POST,
                        &format!("/api/repos/{owner}/{repo_name}/environments/unprotect"),
                        Some(json!({ "pattern": pattern })),
                    )
                    .await?;
                println!("environments matching {pattern} are no longer protected");
            }
            EnvCommand::Protected { repo } => {
                let (owner, repo_name) = split_repo(repo)?;
                let rules: Vec<gantry_api::ProtectedEnvironment> = client
                    .json(
                        reqwest::Method::GET,
                        &format!("/api/repos/{owner}/{repo_name}/environments/protected"),
                        None,
                    )
                    .await?;
                if rules.is_empty() {
                    println!("no protected environments (`gantry env protect` adds one)");
                }
                for rule in &rules {
                    print_rule(rule);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn print_rule(rule: &gantry_api::ProtectedEnvironment) {
    let mut who = rule.approvers.clone();
    if let Some(role) = &rule.approver_role {
        who.push(format!("any {role}"));
    }
    let approval = if who.is_empty() {
        "no approval".to_owned()
    } else {
        format!("approved by {}", who.join(", "))
    };
    let branches = if rule.branches.is_empty() {
        "any branch".to_owned()
    } else {
        format!("branches {}", rule.branches.join(", "))
    };
    println!("{:<28} {approval}; {branches}", rule.pattern);
}

/// The one stage of the build waiting for an approval, or an error naming them.
async fn waiting_stage(
    client: &Client,
    owner: &str,
    repo: &str,
    build: i64,
) -> anyhow::Result<i64> {
    let detail: gantry_api::BuildDetail = client
        .json(
            reqwest::Method::GET,
            &format!("/api/repos/{owner}/{repo}/builds/{build}"),
            None,
        )
        .await?;
    let waiting: Vec<&gantry_api::Stage> = detail
        .stages
        .iter()
        .filter(|s| s.status == gantry_api::Status::Blocked && s.approval.is_some())
        .collect();
    match waiting.as_slice() {
        [one] => Ok(one.number),
        [] => bail!("build #{build} has no stage waiting for an approval"),
        many => bail!(
            "build #{build} has {} stages waiting for an approval ({}): choose one with --stage",
            many.len(),
            many.iter()
                .map(|s| format!("{} `{}`", s.number, s.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
