//! `gantry secret`: a repository's or an organisation's secrets (values are never read back).

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::*;

#[derive(Debug, Args)]
pub struct SecretArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Adds or replaces a secret. The value comes from --value, --file, or standard input.
    Add {
        /// OWNER/NAME, or OWNER with --org.
        scope: String,
        name: String,
        #[arg(long, conflicts_with = "file")]
        value: Option<String>,
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Builds of pull requests from forks may have it too.
        #[arg(long)]
        allow_pull_requests: bool,
        /// Only stages that deploy to an environment this glob matches get it (a protected
        /// environment's own secret), e.g. `production`.
        #[arg(long)]
        environment: Option<String>,
        /// An owner's (organisation's) secret, for all their repositories.
        #[arg(long)]
        org: bool,
    },
    /// Lists secret names and settings (never values).
    Ls {
        scope: String,
        #[arg(long)]
        org: bool,
    },
    /// Removes a secret.
    Rm {
        scope: String,
        name: String,
        #[arg(long)]
        org: bool,
    },
}

pub(super) fn secrets_path(scope: &str, org: bool) -> anyhow::Result<String> {
    if org {
        if scope.is_empty() || scope.contains('/') {
            bail!("with --org, give the owner (e.g. acme), not OWNER/NAME");
        }
        Ok(format!("/api/orgs/{scope}/secrets"))
    } else {
        let (owner, name) = split_repo(scope)?;
        Ok(format!("/api/repos/{owner}/{name}/secrets"))
    }
}

pub fn secret(args: &SecretArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        let client = Client::new(&args.connection)?;
        match &args.command {
            SecretCommand::Add {
                scope,
                name,
                value,
                file,
                allow_pull_requests,
                environment,
                org,
            } => {
                let path = secrets_path(scope, *org)?;
                let value = match (value, file) {
                    (Some(value), _) => value.clone(),
                    (None, Some(file)) => std::fs::read_to_string(file)
                        .with_context(|| format!("while reading {}", file.display()))?,
                    (None, None) => {
                        let mut text = String::new();
                        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                            .context("while reading the value from standard input")?;
                        text.trim_end_matches('\n').to_owned()
                    }
                };
                let _: gantry_api::SecretSaved = client
                    .json(
                        reqwest::Method::POST,
                        &path,
                        Some(json!({
                            "name": name,
                            "value": value,
                            "allow_pull_requests": allow_pull_requests,
                            "environment": environment,
                        })),
                    )
                    .await?;
                println!("saved secret {name}");
            }
            SecretCommand::Ls { scope, org } => {
                let secrets: Vec<gantry_api::Secret> = client
                    .json(reqwest::Method::GET, &secrets_path(scope, *org)?, None)
                    .await?;
                for secret in secrets {
                    let forks = if secret.allow_pull_requests {
                        "pull requests from forks too"
                    } else {
                        ""
                    };
                    let kept = secret
                        .environment
                        .map_or(String::new(), |e| format!("only deployments to {e}  "));
                    println!("{:<30} {kept}{forks}", secret.name);
                }
            }
            SecretCommand::Rm { scope, name, org } => {
                let path = secrets_path(scope, *org)?;
                client
                    .send(reqwest::Method::DELETE, &format!("{path}/{name}"), None)
                    .await?;
                println!("removed secret {name}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
