//! `gantry registry`: logins for private container registries, of a repository, an
//! organisation (`--org`) or the whole server (`--server-wide`); passwords are never read back.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::*;

#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: RegistryCommand,
}

/// Whose logins: OWNER/NAME, OWNER with `--org`, or the server's with `--server-wide`.
#[derive(Debug, Args)]
pub struct Scope {
    /// An owner's (organisation's) login, for all their repositories.
    #[arg(long, conflicts_with = "server_wide")]
    org: bool,
    /// A login for every repository on the server (server admins); give no OWNER/NAME.
    #[arg(long)]
    server_wide: bool,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Adds or replaces the login for a registry host: `add OWNER/NAME HOST`, `add --org
    /// OWNER HOST` or `add --server-wide HOST`. The password comes from --password-stdin or
    /// --password-file.
    Add {
        #[command(flatten)]
        scope: Scope,
        /// [OWNER/NAME | OWNER] HOST; the host and port, like ghcr.io or
        /// registry.example.com:5000 (docker.io for Docker Hub).
        #[arg(num_args = 1..=2, required = true, value_name = "SCOPE HOST")]
        targets: Vec<String>,
        #[arg(long)]
        username: String,
        /// Reads the password (or token) from standard input.
        #[arg(long, conflicts_with = "password_file")]
        password_stdin: bool,
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
        /// Builds of pull requests from forks may pull with it too.
        #[arg(long)]
        allow_pull_requests: bool,
    },
    /// Lists registry logins (never passwords): `ls OWNER/NAME`, `ls --org OWNER`, `ls --server-wide`.
    Ls {
        #[command(flatten)]
        scope: Scope,
        #[arg(num_args = 0..=1, value_name = "SCOPE")]
        targets: Vec<String>,
    },
    /// Removes the login for a registry host: `rm OWNER/NAME HOST`, `rm --org OWNER HOST`,
    /// `rm --server-wide HOST`.
    Rm {
        #[command(flatten)]
        scope: Scope,
        #[arg(num_args = 1..=2, required = true, value_name = "SCOPE HOST")]
        targets: Vec<String>,
    },
}

/// The API path of the scope's logins and the host argument, from the positional arguments
/// (`wants_host`: the command names a host after the scope).
fn registries_path<'a>(
    scope: &Scope,
    targets: &'a [String],
    wants_host: bool,
) -> anyhow::Result<(String, Option<&'a str>)> {
    let (named, host) = match (targets, wants_host) {
        ([host], true) if scope.server_wide => (None, Some(host.as_str())),
        ([named, host], true) if !scope.server_wide => (Some(named.as_str()), Some(host.as_str())),
        ([], false) if scope.server_wide => (None, None),
        ([named], false) if !scope.server_wide => (Some(named.as_str()), None),
        _ if scope.server_wide => bail!("with --server-wide, give no OWNER/NAME"),
        _ => bail!("give OWNER/NAME (or OWNER with --org) before the host, or --server-wide"),
    };
    let path = match named {
        None => "/api/registries".to_owned(),
        Some(owner) if scope.org => {
            if owner.is_empty() || owner.contains('/') {
                bail!("with --org, give the owner (e.g. acme), not OWNER/NAME");
            }
            format!("/api/orgs/{owner}/registries")
        }
        Some(repo) => {
            let (owner, name) = split_repo(repo)?;
            format!("/api/repos/{owner}/{name}/registries")
        }
    };
    Ok((path, host))
}

pub fn registry(args: &RegistryArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        let client = Client::new(&args.connection)?;
        match &args.command {
            RegistryCommand::Add {
                scope,
                targets,
                username,
                password_stdin,
                password_file,
                allow_pull_requests,
            } => {
                let (path, host) = registries_path(scope, targets, true)?;
                let password = match (password_stdin, password_file) {
                    (_, Some(file)) => std::fs::read_to_string(file)
                        .with_context(|| format!("while reading {}", file.display()))?,
                    (true, None) => {
                        let mut text = String::new();
                        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                            .context("while reading the password from standard input")?;
                        text
                    }
                    (false, None) => bail!(
                        "give the password with --password-stdin or --password-file (never on the command line, where other users and the shell's history see it)"
                    ),
                };
                let password = password.trim_end_matches(['\n', '\r']);
                let saved: gantry_api::Registry = client
                    .json(
                        reqwest::Method::POST,
                        &path,
                        Some(json!({
                            "host": host,
                            "username": username,
                            "password": password,
                            "allow_pull_requests": allow_pull_requests,
                        })),
                    )
                    .await?;
                println!("saved the login of {} for {}", saved.username, saved.host);
            }
            RegistryCommand::Ls { scope, targets } => {
                let (path, _) = registries_path(scope, targets, false)?;
                let logins: Vec<gantry_api::Registry> =
                    client.json(reqwest::Method::GET, &path, None).await?;
                for login in logins {
                    let forks = if login.allow_pull_requests {
                        "pull requests from forks too"
                    } else {
                        ""
                    };
                    println!("{:<30} {:<20} {forks}", login.host, login.username);
                }
            }
            RegistryCommand::Rm { scope, targets } => {
                let (path, host) = registries_path(scope, targets, true)?;
                let host = host.unwrap_or_default();
                client
                    .send(reqwest::Method::DELETE, &format!("{path}/{host}"), None)
                    .await?;
                println!("removed the login for {host}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(
        org: bool,
        server: bool,
        targets: &[&str],
        wants_host: bool,
    ) -> anyhow::Result<(String, Option<String>)> {
        let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        registries_path(
            &Scope {
                org,
                server_wide: server,
            },
            &targets,
            wants_host,
        )
        .map(|(path, host)| (path, host.map(str::to_owned)))
    }

    #[test]
    fn each_scope_has_its_path_and_a_wrong_one_says_how() {
        let repo = path(false, false, &["acme/app", "ghcr.io"], true).expect("a repository's");
        assert_eq!(
            repo,
            (
                "/api/repos/acme/app/registries".into(),
                Some("ghcr.io".into())
            )
        );
        let org = path(true, false, &["acme", "ghcr.io"], true).expect("an owner's");
        assert_eq!(org.0, "/api/orgs/acme/registries");
        let server = path(false, true, &["ghcr.io"], true).expect("the server's");
        assert_eq!(server, ("/api/registries".into(), Some("ghcr.io".into())));
        assert_eq!(
            path(false, true, &[], false).expect("ls --server-wide").0,
            "/api/registries"
        );
        assert_eq!(
            path(false, false, &["acme/app"], false).expect("ls").0,
            "/api/repos/acme/app/registries"
        );
        for (org, server, targets, wants_host, says) in [
            (
                false,
                true,
                &["acme/app", "ghcr.io"][..],
                true,
                "with --server-wide, give no OWNER/NAME",
            ),
            (
                false,
                false,
                &["ghcr.io"][..],
                true,
                "give OWNER/NAME (or OWNER with --org) before the host",
            ),
            (
                true,
                false,
                &["acme/app", "ghcr.io"][..],
                true,
                "with --org, give the owner",
            ),
        ] {
            let error = path(org, server, targets, wants_host)
                .expect_err(says)
                .to_string();
            assert!(error.contains(says), "{error}");
        }
    }
}
