//! `gantry repo`: add, list, show, update and remove repositories, and their keys.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::*;

#[derive(Debug, Args)]
pub struct RepoArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: RepoCommand,
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Registers a repository.
    Add {
        /// OWNER/NAME, as on GitHub.
        repo: String,
        /// Where gantry fetches it from (never taken from webhooks).
        #[arg(long)]
        clone_url: String,
        /// The webhook secret, the same as in the GitHub webhook's settings.
        #[arg(long)]
        secret: String,
        #[arg(long)]
        config_path: Option<String>,
        #[arg(long, default_value = "main")]
        default_branch: String,
        /// public, internal or private; by default what GitHub says (private when the server
        /// cannot ask it).
        #[arg(long)]
        visibility: Option<String>,
        /// Allows privileged steps and host volumes.
        #[arg(long)]
        trusted: bool,
        /// The repository's web page (for links to commits).
        #[arg(long)]
        link: Option<String>,
        /// A GitHub token with read access: fetches and clones a private repository, and
        /// posts its commit statuses (else the server's token is used).
        #[arg(long, env = "GANTRY_REPO_GITHUB_TOKEN", hide_env_values = true)]
        github_token: Option<String>,
        /// The private key of a deploy key (a file), for an ssh:// or git@host: clone URL.
        #[arg(long)]
        ssh_key_file: Option<std::path::PathBuf>,
    },
    /// Changes a repository's settings (those given; needs its admin role).
    Update {
        repo: String,
        #[arg(long)]
        clone_url: Option<String>,
        /// A new webhook secret (set the same in GitHub's webhook settings).
        #[arg(long)]
        secret: Option<String>,
        #[arg(long)]
        config_path: Option<String>,
        #[arg(long)]
        default_branch: Option<String>,
        /// public, internal or private.
        #[arg(long)]
        visibility: Option<String>,
        /// Allows privileged steps and host volumes (a server admin sets this).
        #[arg(long)]
        trusted: Option<bool>,
        /// Pull requests from forks: run, or approve (held until approved).
        #[arg(long)]
        fork_policy: Option<String>,
        /// The build timeout in minutes.
        #[arg(long)]
        timeout: Option<i64>,
        #[arg(long)]
        link: Option<String>,
        /// The repository's own GitHub token; an empty value removes it (the server's
        /// token is then used).
        #[arg(long, env = "GANTRY_REPO_GITHUB_TOKEN", hide_env_values = true)]
        github_token: Option<String>,
        /// The private key of a deploy key (a file), for an ssh:// or git@host: clone URL.
        #[arg(long, conflicts_with = "remove_ssh_key")]
        ssh_key_file: Option<std::path::PathBuf>,
        /// Removes the repository's deploy key.
        #[arg(long)]
        remove_ssh_key: bool,
    },
    /// Lists repositories.
    Ls,
    /// Shows one repository.
    Info { repo: String },
    /// Removes a repository with its builds and logs.
    Rm { repo: String },
}

pub fn repo(args: &RepoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        let client = Client::new(&args.connection)?;
        match &args.command {
            RepoCommand::Add {
                repo,
                clone_url,
                secret,
                config_path,
                default_branch,
                visibility,
                trusted,
                link,
                github_token,
                ssh_key_file,
            } => {
                let (owner, name) = split_repo(repo)?;
                let ssh_key = ssh_key_file.as_deref().map(read_key).transpose()?;
                let created: gantry_api::Repo = client
                    .json(
                        reqwest::Method::POST,
                        "/api/repos",
                        Some(json!({
                            "owner": owner, "name": name, "clone_url": clone_url,
                            "webhook_secret": secret, "config_path": config_path.clone().unwrap_or_default(),
                            "default_branch": default_branch, "visibility": visibility,
                            "trusted": trusted, "link": link.clone().unwrap_or_default(),
                            "github_token": github_token.clone().unwrap_or_default(),
                            "ssh_key": ssh_key.unwrap_or_default(),
                        })),
                    )
                    .await?;
                println!("added {}", created.full_name);
                println!(
                    "point the GitHub webhook (content type application/json, same secret) at {}",
                    created.webhook_url
                );
            }
            RepoCommand::Update {
                repo,
                clone_url,
                secret,
                config_path,
                default_branch,
                visibility,
                trusted,
                fork_policy,
                timeout,
                link,
                github_token,
                ssh_key_file,
                remove_ssh_key,
            } => {
                let (owner, name) = split_repo(repo)?;
                let mut changes = serde_json::Map::new();
                let mut set = |key: &str, value: Option<Value>| {
                    if let Some(value) = value {
                        changes.insert(key.to_owned(), value);
                    }
                };
                set("clone_url", clone_url.clone().map(Value::from));
                set("webhook_secret", secret.clone().map(Value::from));
                set("config_path", config_path.clone().map(Value::from));
                set("default_branch", default_branch.clone().map(Value::from));
                set("visibility", visibility.clone().map(Value::from));
                set("trusted", trusted.map(Value::from));
                set("fork_policy", fork_policy.clone().map(Value::from));
                set("timeout_secs", timeout.map(|m| Value::from(m * 60)));
                set("link", link.clone().map(Value::from));
                set("github_token", github_token.clone().map(Value::from));
                let ssh_key = match ssh_key_file {
                    Some(path) => Some(read_key(path)?),
                    None if *remove_ssh_key => Some(String::new()),
                    None => None,
                };
                set("ssh_key", ssh_key.map(Value::from));
                if changes.is_empty() {
                    bail!("nothing to change: give one or more settings (see gantry repo update --help)");
                }
                let _: gantry_api::Repo = client
                    .json(
                        reqwest::Method::PATCH,
                        &format!("/api/repos/{owner}/{name}"),
                        Some(Value::Object(changes)),
                    )
                    .await?;
                println!("updated {repo}");
            }
            RepoCommand::Ls => {
                let repos: Vec<gantry_api::Repo> =
                    client.json(reqwest::Method::GET, "/api/repos", None).await?;
                for repo in repos {
                    println!(
                        "{:<40} {:<9} {}",
                        repo.full_name, repo.visibility, repo.clone_url
                    );
                }
            }
            RepoCommand::Info { repo } => {
                let (owner, name) = split_repo(repo)?;
                let found: gantry_api::Repo = client
                    .json(reqwest::Method::GET, &format!("/api/repos/{owner}/{name}"), None)
                    .await?;
                println!("{}", serde_json::to_string_pretty(&found)?);
            }
            RepoCommand::Rm { repo } => {
                let (owner, name) = split_repo(repo)?;
                client
                    .send(reqwest::Method::DELETE, &format!("/api/repos/{owner}/{name}"), None)
                    .await?;
                println!("removed {repo}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
