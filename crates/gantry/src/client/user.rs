//! `gantry user` and `gantry role`: users, server admins, and their roles on repositories.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

use super::*;

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Adds a user by GitHub login (for tokens and roles before they sign in).
    Add {
        login: String,
        /// A server admin.
        #[arg(long)]
        admin: bool,
    },
    /// Lists users.
    Ls,
    /// Makes a user a server admin, or no longer one.
    Admin {
        login: String,
        #[arg(action = clap::ArgAction::Set)]
        admin: bool,
    },
    /// Removes a user with their tokens, sessions and roles.
    Rm { login: String },
    /// Who the token belongs to.
    Whoami,
}

pub fn user(args: &UserArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        let client = Client::new(&args.connection)?;
        match &args.command {
            UserCommand::Add { login, admin } => {
                let user: gantry_api::User = client
                    .json(
                        reqwest::Method::POST,
                        "/api/users",
                        Some(json!({ "login": login, "admin": admin })),
                    )
                    .await?;
                println!("added user {}", user.login);
            }
            UserCommand::Ls => {
                let users: Vec<gantry_api::User> = client
                    .json(reqwest::Method::GET, "/api/users", None)
                    .await?;
                for user in users {
                    let admin = if user.admin { "admin" } else { "" };
                    println!("{:<40} {admin}", user.login);
                }
            }
            UserCommand::Admin { login, admin } => {
                let _: gantry_api::User = client
                    .json(
                        reqwest::Method::PATCH,
                        &format!("/api/users/{}", encode(login)),
                        Some(json!({ "admin": admin })),
                    )
                    .await?;
                println!(
                    "{login} is {} server admin",
                    if *admin { "a" } else { "no longer a" }
                );
            }
            UserCommand::Rm { login } => {
                client
                    .send(
                        reqwest::Method::DELETE,
                        &format!("/api/users/{}", encode(login)),
                        None,
                    )
                    .await?;
                println!("removed user {login}");
            }
            UserCommand::Whoami => {
                let me: gantry_api::Whoami =
                    client.json(reqwest::Method::GET, "/api/user", None).await?;
                let admin = if me.admin { " (server admin)" } else { "" };
                match &me.login {
                    Some(login) => println!("{login}{admin}"),
                    None => println!("service token {}{admin}", me.token),
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: RoleCommand,
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Lists the roles known on a repository (set by an admin, or read from GitHub).
    Ls { repo: String },
    /// Sets a user's role on a repository: none, read, write or admin. It wins over GitHub's.
    Set {
        repo: String,
        login: String,
        role: String,
    },
    /// Removes the role an admin set; the user's GitHub permission applies again.
    Rm { repo: String, login: String },
}

pub fn role(args: &RoleArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        let client = Client::new(&args.connection)?;
        match &args.command {
            RoleCommand::Ls { repo } => {
                let (owner, name) = split_repo(repo)?;
                let roles: Vec<gantry_api::RepoRole> = client
                    .json(
                        reqwest::Method::GET,
                        &format!("/api/repos/{owner}/{name}/roles"),
                        None,
                    )
                    .await?;
                for role in roles {
                    let source = if role.source == "admin" {
                        "set by an admin"
                    } else {
                        "from GitHub"
                    };
                    println!("{:<40} {:<6} {source}", role.login, role.role);
                }
            }
            RoleCommand::Set { repo, login, role } => {
                let (owner, name) = split_repo(repo)?;
                let _: gantry_api::RoleSet = client
                    .json(
                        reqwest::Method::PUT,
                        &format!("/api/repos/{owner}/{name}/roles/{}", encode(login)),
                        Some(json!({ "role": role })),
                    )
                    .await?;
                println!("{login} has the {role} role on {repo}");
            }
            RoleCommand::Rm { repo, login } => {
                let (owner, name) = split_repo(repo)?;
                client
                    .send(
                        reqwest::Method::DELETE,
                        &format!("/api/repos/{owner}/{name}/roles/{}", encode(login)),
                        None,
                    )
                    .await?;
                println!("{login}'s role on {repo} comes from GitHub again");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
