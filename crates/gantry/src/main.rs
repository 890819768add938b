//! The `gantry` binary: one command line for everything gantry does. For now the commands
//! that need no server: `lint`, `plan` and `exec`.

mod exec_cmd;
mod pipeline_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "gantry",
    version,
    about = "A self-hosted CI/CD server",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validates pipeline files; exits 0 when every file is valid (warnings are printed).
    Lint(pipeline_cmd::LintArgs),
    /// Prints which stages and steps a build would run, and in what order.
    Plan(Box<pipeline_cmd::PlanArgs>),
    /// Runs a pipeline file of the current folder on this machine; exits 0 when it passed.
    Exec(Box<exec_cmd::ExecArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lint(args) => pipeline_cmd::lint(&args),
        Command::Plan(args) => pipeline_cmd::plan(&args),
        Command::Exec(args) => exec_cmd::exec(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("gantry: {error:#}");
            ExitCode::from(2)
        }
    }
}
