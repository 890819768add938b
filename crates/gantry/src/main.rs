//! The `gantry` binary: one command line for everything gantry does: the server and the
//! runner, the client commands against a server's API, and the commands that need no server
//! (`lint`, `plan`, `exec`).
//!
//! # Code map
//!
//! `main.rs` parses the command line (clap); `server_cmd.rs` runs `server` (the server plus an
//! embedded `RemoteRunner` against it on loopback) and `runner`, owns signals, the generated
//! runner secret and a runner's identity (`RunnerIdentity`: its name and lineage kept in its data
//! folder, locked while it runs; it presents itself before it sweeps what an earlier life left); `client/` implements `repo`, `build` (with `promote`), `cron`, `env`, `notify`, `secret`, `token`,
//! `user`, `role` and `runner register|tokens|revoke` against the API;
//! `pipeline_cmd.rs` implements `lint` and `plan`:
//! reads files or a folder, prints diagnostics, builds a `Context` from flags (`BuildArgs`, shared
//! with `exec`). `exec_cmd.rs` runs the plan's stages in dependency order on the executor with a
//! terminal `Reporter`, turns Ctrl-C/SIGTERM into cancellation, and sweeps what killed exec runs
//! left. Exit codes: 0 valid or passed, 1 invalid, refused or failed, 2 a usage or I/O error.

mod client;
mod exec_cmd;
mod pipeline_cmd;
mod server_cmd;

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
    /// Runs the HTTP server (webhooks, API, runner protocol) with an embedded runner.
    Server(Box<server_cmd::ServerArgs>),
    /// Runs a runner that takes stages from a server.
    Runner(Box<server_cmd::RunnerArgs>),
    /// Manages repositories on a server.
    Repo(client::RepoArgs),
    /// Lists, inspects, restarts, cancels and creates builds on a server.
    Build(client::BuildArgs),
    /// Schedules of a repository: cron builds (add, ls, rm, run).
    Cron(client::CronArgs),
    /// Environments of a repository: review apps, staging, production (ls, stop).
    Env(client::EnvArgs),
    /// Signs a pipeline file for a repository (a `kind: signature` document), as `drone
    /// sign`; the first signature makes the repository build only signed files.
    Sign(client::SignArgs),
    /// Chat notification targets on a server.
    Notify(client::NotifyArgs),
    /// Secrets of a repository or an owner on a server (values are never shown).
    Secret(client::SecretArgs),
    /// Logins for private container registries, of a repository, an owner or the server.
    Registry(client::RegistryArgs),
    /// API tokens on a server.
    Token(client::TokenArgs),
    /// Users on a server (server admins only).
    User(client::UserArgs),
    /// Users' roles on a repository: read, write, admin.
    Role(client::RoleArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lint(args) => pipeline_cmd::lint(&args),
        Command::Plan(args) => pipeline_cmd::plan(&args),
        Command::Exec(args) => exec_cmd::exec(&args),
        Command::Server(args) => server_cmd::server(&args),
        Command::Runner(args) => server_cmd::runner(&args),
        Command::Repo(args) => client::repo(&args),
        Command::Build(args) => client::build(&args),
        Command::Cron(args) => client::cron(&args),
        Command::Env(args) => client::env(&args),
        Command::Sign(args) => client::sign(&args),
        Command::Notify(args) => client::notify(&args),
        Command::Secret(args) => client::secret(&args),
        Command::Registry(args) => client::registry(&args),
        Command::Token(args) => client::token(&args),
        Command::User(args) => client::user(&args),
        Command::Role(args) => client::role(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("gantry: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand's flags and arguments are consistent (clap checks this only when
    /// a command is used).
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
