//! `gantry token`: API tokens.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use super::*;

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates a token and prints it once.
    Create {
        /// Who or what uses it.
        name: String,
        /// A service token with every right, acting for no user (a server admin makes one).
        #[arg(long, conflicts_with = "user")]
        admin: bool,
        /// The user it acts for (default: yours; someone else's needs a server admin).
        #[arg(long)]
        user: Option<String>,
    },
    /// Lists tokens (names, never the tokens): yours, or every one for a server admin.
    Ls,
    /// Revokes a token at once.
    Revoke { id: i64 },
}

pub fn token(args: &TokenArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        let client = Client::new(&args.connection)?;
        match &args.command {
            TokenCommand::Create { name, admin, user } => {
                let created: gantry_api::CreatedToken = client
                    .json(
                        reqwest::Method::POST,
                        "/api/tokens",
                        Some(json!({ "name": name, "admin": admin, "user": user })),
                    )
                    .await?;
                let acts_for = match &created.user {
                    Some(login) => format!(", acting for {login}"),
                    None => ", a service token".to_owned(),
                };
                println!(
                    "token #{} {}{acts_for} (shown once):",
                    created.id, created.name
                );
                println!("{}", created.token);
            }
            TokenCommand::Ls => {
                let tokens: Vec<gantry_api::Token> = client
                    .json(reqwest::Method::GET, "/api/tokens", None)
                    .await?;
                for token in tokens {
                    let kind = match (token.admin, token.session) {
                        (true, _) => "admin",
                        (_, true) => "session",
                        _ => "",
                    };
                    let user = match token.user_id {
                        Some(id) => format!("user #{id}"),
                        None => String::new(),
                    };
                    println!("#{:<5} {:<40} {:<10} {kind}", token.id, token.name, user);
                }
            }
            TokenCommand::Revoke { id } => {
                client
                    .send(reqwest::Method::DELETE, &format!("/api/tokens/{id}"), None)
                    .await?;
                println!("revoked token #{id}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
