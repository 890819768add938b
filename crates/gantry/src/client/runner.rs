//! `gantry runner register | tokens | revoke`: runners' own tokens.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;

use super::*;

/// `gantry runner register|tokens|revoke`: runners' own tokens (server admins).
#[derive(Debug, Subcommand)]
pub enum RunnerCommand {
    /// Makes runner NAME's own token and prints it once; start the runner with
    /// `--name NAME --token TOKEN`.
    Register {
        name: String,
        /// Only stages of these owners' repositories (comma-separated); by default any.
        #[arg(long, value_delimiter = ',')]
        owners: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Lists runners' tokens (names and owners, never the tokens).
    Tokens {
        #[command(flatten)]
        connection: Connection,
    },
    /// Revokes runner NAME's token at once.
    Revoke {
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
}

pub fn runner_tokens(command: &RunnerCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        match command {
            RunnerCommand::Register {
                name,
                owners,
                connection,
            } => {
                let client = Client::new(connection)?;
                let created: gantry_api::CreatedRunnerToken = client
                    .json(
                        reqwest::Method::POST,
                        "/api/runners/tokens",
                        Some(json!({ "name": name, "owners": owners })),
                    )
                    .await?;
                let scope = if created.owners.is_empty() {
                    "any owner's stages".to_owned()
                } else {
                    format!("stages of {} only", created.owners.join(", "))
                };
                println!(
                    "runner {} may take {scope}; its token (shown once; run it with --name {} --token TOKEN):",
                    created.name, created.name
                );
                println!("{}", created.token);
            }
            RunnerCommand::Tokens { connection } => {
                let client = Client::new(connection)?;
                let tokens: Vec<gantry_api::RunnerToken> = client
                    .json(reqwest::Method::GET, "/api/runners/tokens", None)
                    .await?;
                for token in tokens {
                    let owners = if token.owners.is_empty() {
                        "any owner".to_owned()
                    } else {
                        token.owners.join(",")
                    };
                    println!("{:<40} {owners}", token.name);
                }
            }
            RunnerCommand::Revoke { name, connection } => {
                let client = Client::new(connection)?;
                client
                    .send(
                        reqwest::Method::DELETE,
                        &format!("/api/runners/tokens/{name}"),
                        None,
                    )
                    .await?;
                println!("revoked runner {name}'s token");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
