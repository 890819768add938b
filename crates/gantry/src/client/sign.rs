//! `gantry sign`: signs a repository's pipeline file with its key.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::*;

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
