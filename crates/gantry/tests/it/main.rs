//! Integration tests of the `gantry` binary, and the repository's tidy checks.

mod cli;
#[path = "../common/mod.rs"]
mod common;
mod server;
mod tidy;
