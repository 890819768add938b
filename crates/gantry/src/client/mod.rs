//! Client commands against a server's JSON API, one module per command (`gantry repo`,
//! `build`, `cron`, `notify`, `secret`, `token`, `user` and `role`, `sign`, `runner`'s
//! tokens). The server comes from `--server` / `GANTRY_SERVER`, the token from `--token` /
//! `GANTRY_TOKEN`. Refusals print the server's own message.

use anyhow::{Context as _, bail};
use clap::Args;
use gantry_server::human::took;
use serde_json::Value;

mod build;
mod cron;
mod env;
mod notify;
mod registry;
mod repo;
mod runner;
mod secret;
mod sign;
mod token;
mod user;

pub use build::{BuildArgs, build};
pub use cron::{CronArgs, cron};
pub use env::{EnvArgs, env};
pub use notify::{NotifyArgs, notify};
pub use registry::{RegistryArgs, registry};
pub use repo::{RepoArgs, repo};
pub use runner::{RunnerCommand, runner_tokens};
pub use secret::{SecretArgs, secret};
pub use sign::{SignArgs, sign};
pub use token::{TokenArgs, token};
pub use user::{RoleArgs, UserArgs, role, user};

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

pub(super) struct Client {
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

pub(super) fn split_repo(repo: &str) -> anyhow::Result<(&str, &str)> {
    repo.split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| anyhow::anyhow!("`{repo}` is not OWNER/NAME"))
}

pub(super) fn read_key(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("while reading the SSH key file {}", path.display()))
}

pub(super) fn params_json(params: &[(String, String)]) -> serde_json::Map<String, Value> {
    params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// Percent-encodes a query value.
pub(super) fn encode(value: &str) -> String {
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

pub(super) fn print_build(detail: &gantry_api::BuildDetail) {
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
        if let Some(deploy) = &stage.deploy {
            let verb = if deploy.action == "stop" {
                "stops"
            } else {
                "deploys to"
            };
            let url = deploy
                .url
                .as_deref()
                .map_or(String::new(), |u| format!(" {u}"));
            println!("    {verb} environment {}{url}", deploy.environment);
        }
        if let Some(by) = stage
            .approval
            .as_ref()
            .and_then(|a| a.decided_by.as_deref())
        {
            let verb = if stage.status == gantry_api::Status::Declined {
                "declined"
            } else {
                "approved"
            };
            println!("    {verb} by {by}");
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
