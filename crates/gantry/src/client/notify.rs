//! `gantry notify`: chat and webhook targets, a repository's or the server's.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::*;

#[derive(Debug, Args)]
pub struct NotifyArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: NotifyCommand,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Adds a chat target to a repository (or, with --server-wide, the default for all).
    Add {
        /// OWNER/NAME; leave out with --server-wide.
        repo: Option<String>,
        #[arg(long)]
        server_wide: bool,
        /// slack, mattermost, rocketchat, discord, teams or googlechat.
        #[arg(long)]
        kind: String,
        /// The chat service's incoming webhook URL.
        #[arg(long)]
        url: String,
        /// When to send: failure, recovery, success, always (repeatable; default failure and
        /// recovery).
        #[arg(long = "on")]
        rules: Vec<String>,
        /// Only builds of this branch (repeatable).
        #[arg(long = "branch")]
        branches: Vec<String>,
        /// Only builds of this event (repeatable).
        #[arg(long = "event")]
        events: Vec<String>,
    },
    /// Lists the targets.
    Ls {
        repo: Option<String>,
        #[arg(long)]
        server_wide: bool,
    },
    /// Removes a target: `OWNER/NAME ID`, or `ID --server-wide`.
    Rm {
        #[arg(value_name = "OWNER/NAME | ID")]
        first: String,
        id: Option<i64>,
        #[arg(long)]
        server_wide: bool,
    },
    /// Sends a test message to a target: `OWNER/NAME ID`, or `ID --server-wide`.
    Test {
        #[arg(value_name = "OWNER/NAME | ID")]
        first: String,
        id: Option<i64>,
        #[arg(long)]
        server_wide: bool,
    },
}

/// `OWNER/NAME ID` or `ID --server-wide`: the targets' path and the id.
pub(super) fn target_of(
    first: &str,
    id: Option<i64>,
    server_wide: bool,
) -> anyhow::Result<(String, i64)> {
    match id {
        Some(id) => Ok((targets_path(Some(first), server_wide)?, id)),
        None => {
            let id = first
                .parse()
                .map_err(|_| anyhow::anyhow!("give OWNER/NAME ID, or ID --server-wide"))?;
            Ok((targets_path(None, server_wide)?, id))
        }
    }
}

pub(super) fn targets_path(repo: Option<&str>, server_wide: bool) -> anyhow::Result<String> {
    match (repo, server_wide) {
        (Some(_), true) => bail!("give OWNER/NAME or --server-wide, not both"),
        (None, true) => Ok("/api/notify".to_owned()),
        (Some(repo), false) => {
            let (owner, name) = split_repo(repo)?;
            Ok(format!("/api/repos/{owner}/{name}/notify"))
        }
        (None, false) => bail!("give the repository (OWNER/NAME), or --server-wide"),
    }
}

pub fn notify(args: &NotifyArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        let client = Client::new(&args.connection)?;
        match &args.command {
            NotifyCommand::Add {
                repo,
                server_wide,
                kind,
                url,
                rules,
                branches,
                events,
            } => {
                let path = targets_path(repo.as_deref(), *server_wide)?;
                let mut body =
                    json!({ "kind": kind, "url": url, "branches": branches, "events": events });
                if !rules.is_empty() {
                    body["rules"] = json!(rules);
                }
                let added: gantry_api::Target = client
                    .json(reqwest::Method::POST, &path, Some(body))
                    .await?;
                println!(
                    "added target #{} ({} to {})",
                    added.id, added.kind, added.url
                );
            }
            NotifyCommand::Ls { repo, server_wide } => {
                let path = targets_path(repo.as_deref(), *server_wide)?;
                let targets: Vec<gantry_api::Target> =
                    client.json(reqwest::Method::GET, &path, None).await?;
                for target in targets {
                    println!(
                        "#{:<4} {:<11} {:<40} on {} branches {} events {}",
                        target.id,
                        target.kind,
                        target.url,
                        json!(target.rules),
                        json!(target.branches),
                        json!(target.events)
                    );
                }
            }
            NotifyCommand::Rm {
                first,
                id,
                server_wide,
            } => {
                let (path, id) = target_of(first, *id, *server_wide)?;
                client
                    .send(reqwest::Method::DELETE, &format!("{path}/{id}"), None)
                    .await?;
                println!("removed target #{id}");
            }
            NotifyCommand::Test {
                first,
                id,
                server_wide,
            } => {
                let (path, id) = target_of(first, *id, *server_wide)?;
                let _: gantry_api::Queued = client
                    .json(reqwest::Method::POST, &format!("{path}/{id}/test"), None)
                    .await?;
                println!("queued a test message for target #{id}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
