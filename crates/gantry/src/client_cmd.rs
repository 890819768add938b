//! Client commands against a server's JSON API: `gantry repo ...` and `gantry build ...`.
//! The server comes from `--server` / `GANTRY_SERVER`, the token from `--token` /
//! `GANTRY_TOKEN`. Refusals print the server's own message.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use gantry_server::human::took;
use serde_json::{Value, json};

use crate::pipeline_cmd::parse_param;

#[derive(Debug, Args)]
pub struct Connection {
    /// The server's URL.
    #[arg(
        long,
        env = "GANTRY_SERVER",
        default_value = "http://localhost:8000",
        global = true
    )]
    pub server: String,
    /// An API token.
    #[arg(long, env = "GANTRY_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

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

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: BuildCommand,
}

#[derive(Debug, Subcommand)]
pub enum BuildCommand {
    /// Lists a repository's builds, newest first.
    Ls {
        repo: String,
        #[arg(long)]
        branch: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 25)]
        limit: u32,
    },
    /// Shows a build with its stages and steps.
    Info { repo: String, number: u64 },
    /// Prints a step's log (STAGE and STEP are numbers, as in the step's URL).
    Logs {
        repo: String,
        number: u64,
        stage: u64,
        step: u64,
    },
    /// Starts a new build of the same commit and context.
    Restart { repo: String, number: u64 },
    /// Cancels a build.
    Cancel { repo: String, number: u64 },
    /// Lets a blocked build (a pull request from a fork) run.
    Approve { repo: String, number: u64 },
    /// Ends a blocked build without running it.
    Decline { repo: String, number: u64 },
    /// Starts a build of a branch (its head, or --commit), with parameters.
    Create {
        repo: String,
        #[arg(long)]
        branch: Option<String>,
        #[arg(long)]
        commit: Option<String>,
        /// KEY=VALUE, given to steps as environment variables (repeatable).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Makes it a deployment (`promote`) to this target.
        #[arg(long)]
        deploy_to: Option<String>,
    },
    /// Deploys a finished build's commit to TARGET (event `promote`, `DRONE_DEPLOY_TO`),
    /// as a new build; pipelines pick it with a `target` condition.
    Promote {
        repo: String,
        number: u64,
        target: String,
        /// KEY=VALUE, given to steps as environment variables (repeatable).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
}

struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl Client {
    fn new(connection: &Connection) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .build()
                .context("while creating the HTTP client")?,
            server: connection.server.trim_end_matches('/').to_owned(),
            token: connection.token.clone(),
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.server);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "while connecting to {url} (is the server running? set --server or GANTRY_SERVER)"
            )
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .or_else(|| v.get("error"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or(text);
        bail!("the server answered {status}: {message}")
    }

    /// The server's answer, decoded as the API's type for it (`gantry_api`).
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<T> {
        let response = self.send(method, path, body).await?;
        response
            .json()
            .await
            .context("while reading the server's answer")
    }
}

fn split_repo(repo: &str) -> anyhow::Result<(&str, &str)> {
    repo.split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| anyhow::anyhow!("`{repo}` is not OWNER/NAME"))
}

fn read_key(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("while reading the SSH key file {}", path.display()))
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

fn print_build(detail: &gantry_api::BuildDetail) {
    let build = &detail.build;
    println!(
        "#{} {} {} {} {}",
        build.number, build.status, build.event, build.branch, detail.link
    );
    if let Some(error) = &build.error {
        println!("error:\n{error}");
    }
    for stage in &detail.stages {
        println!(
            "  stage {} {} {} {}",
            stage.number,
            stage.name,
            stage.status,
            took(stage.started_at, stage.finished_at)
        );
        if let Some(error) = &stage.error {
            println!("    {error}");
        }
        if let Some(waiting) = &stage.waiting {
            println!("    {waiting}");
        }
        for step in &stage.steps {
            let exit = step.exit_code.map(|c| c.to_string()).unwrap_or_default();
            println!(
                "    step {} {:<20} {:<8} exit {:<4} {}",
                step.number,
                step.name,
                step.status.as_str(),
                exit,
                took(step.started_at, step.finished_at)
            );
        }
    }
}

pub fn build(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        let client = Client::new(&args.connection)?;
        match &args.command {
            BuildCommand::Ls { repo, branch, status, limit } => {
                let (owner, name) = split_repo(repo)?;
                let mut path = format!("/api/repos/{owner}/{name}/builds?limit={limit}");
                if let Some(branch) = branch {
                    path.push_str(&format!("&branch={}", encode(branch)));
                }
                if let Some(status) = status {
                    path.push_str(&format!("&status={}", encode(status)));
                }
                let builds: Vec<gantry_api::Build> =
                    client.json(reqwest::Method::GET, &path, None).await?;
                for build in builds {
                    println!(
                        "#{:<6} {:<8} {:<12} {:<20} {:<10} {}",
                        build.number,
                        build.status.as_str(),
                        build.event,
                        build.branch,
                        took(build.started_at, build.finished_at),
                        build.message.lines().next().unwrap_or("")
                    );
                }
            }
            BuildCommand::Info { repo, number } => {
                let (owner, name) = split_repo(repo)?;
                let build: gantry_api::BuildDetail = client
                    .json(reqwest::Method::GET, &format!("/api/repos/{owner}/{name}/builds/{number}"), None)
                    .await?;
                print_build(&build);
            }
            BuildCommand::Logs { repo, number, stage, step } => {
                let (owner, name) = split_repo(repo)?;
                let response = client
                    .send(
                        reqwest::Method::GET,
                        &format!("/api/repos/{owner}/{name}/builds/{number}/logs/{stage}/{step}"),
                        None,
                    )
                    .await?;
                print!("{}", response.text().await.context("while reading the log")?);
            }
            BuildCommand::Restart { repo, number } => {
                let (owner, name) = split_repo(repo)?;
                let build: gantry_api::BuildDetail = client
                    .json(reqwest::Method::POST, &format!("/api/repos/{owner}/{name}/builds/{number}/restart"), None)
                    .await?;
                print_build(&build);
            }
            BuildCommand::Cancel { repo, number }
            | BuildCommand::Approve { repo, number }
            | BuildCommand::Decline { repo, number } => {
                let action = match &args.command {
                    BuildCommand::Cancel { .. } => "cancel",
                    BuildCommand::Approve { .. } => "approve",
                    _ => "decline",
                };
                let (owner, name) = split_repo(repo)?;
                let build: gantry_api::BuildDetail = client
                    .json(reqwest::Method::POST, &format!("/api/repos/{owner}/{name}/builds/{number}/{action}"), None)
                    .await?;
                print_build(&build);
            }
            BuildCommand::Create { repo, branch, commit, params, deploy_to } => {
                let (owner, name) = split_repo(repo)?;
                let params = params_json(params);
                let build: gantry_api::BuildDetail = client
                    .json(
                        reqwest::Method::POST,
                        &format!("/api/repos/{owner}/{name}/builds"),
                        Some(json!({ "branch": branch, "commit": commit, "params": params, "deploy_to": deploy_to })),
                    )
                    .await?;
                print_build(&build);
            }
            BuildCommand::Promote { repo, number, target, params } => {
                let (owner, name) = split_repo(repo)?;
                let build: gantry_api::BuildDetail = client
                    .json(
                        reqwest::Method::POST,
                        &format!("/api/repos/{owner}/{name}/builds/{number}/promote"),
                        Some(json!({ "target": target, "params": params_json(params) })),
                    )
                    .await?;
                print_build(&build);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn params_json(params: &[(String, String)]) -> serde_json::Map<String, Value> {
    params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

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

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

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
fn target_of(first: &str, id: Option<i64>, server_wide: bool) -> anyhow::Result<(String, i64)> {
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

fn targets_path(repo: Option<&str>, server_wide: bool) -> anyhow::Result<String> {
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

fn secrets_path(scope: &str, org: bool) -> anyhow::Result<String> {
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
            SecretCommand::Add { scope, name, value, file, allow_pull_requests, org } => {
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
                        Some(json!({ "name": name, "value": value, "allow_pull_requests": allow_pull_requests })),
                    )
                    .await?;
                println!("saved secret {name}");
            }
            SecretCommand::Ls { scope, org } => {
                let secrets: Vec<gantry_api::Secret> =
                    client.json(reqwest::Method::GET, &secrets_path(scope, *org)?, None).await?;
                for secret in secrets {
                    let forks = if secret.allow_pull_requests { "pull requests from forks too" } else { "" };
                    println!("{:<30} {forks}", secret.name);
                }
            }
            SecretCommand::Rm { scope, name, org } => {
                let path = secrets_path(scope, *org)?;
                client.send(reqwest::Method::DELETE, &format!("{path}/{name}"), None).await?;
                println!("removed secret {name}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

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

#[derive(Debug, Args)]
pub struct SignArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// OWNER/NAME.
    pub repo: String,
    /// The pipeline file to sign (Drone 1.x format: `kind: pipeline` documents).
    #[arg(default_value = ".drone.yml")]
    pub file: std::path::PathBuf,
    /// Writes the signature into the file (replacing any), instead of printing it.
    #[arg(long, conflicts_with = "disable")]
    pub save: bool,
    /// Stops requiring signed pipeline files for the repository.
    #[arg(long)]
    pub disable: bool,
}

/// `gantry sign`, as `drone sign`: the server signs the file with the repository's key (made
/// by the first signature, which from then on makes the repository build only signed files).
pub fn sign(args: &SignArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("while starting the runtime")?;
    runtime.block_on(async {
        let client = Client::new(&args.connection)?;
        let (owner, name) = split_repo(&args.repo)?;
        let path = format!("/api/repos/{owner}/{name}/sign");
        if args.disable {
            client.send(reqwest::Method::DELETE, &path, None).await?;
            println!("{}/{name} no longer requires signed pipeline files", owner);
            return Ok(ExitCode::SUCCESS);
        }
        let file = &args.file;
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("while reading {}", file.display()))?;
        let signed: gantry_api::Signed = client
            .json(reqwest::Method::POST, &path, Some(json!({ "data": text })))
            .await?;
        if args.save {
            let with = gantry_pipeline::signature::with_signature(&text, &signed.hmac)
                .with_context(|| format!("while signing {}", file.display()))?;
            std::fs::write(file, with)
                .with_context(|| format!("while writing {}", file.display()))?;
            println!(
                "signed {} for {owner}/{name}: commit it; {owner}/{name} now builds only signed pipeline files",
                file.display()
            );
        } else {
            println!("{}", signed.hmac);
        }
        Ok(ExitCode::SUCCESS)
    })
}

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
