//! Integration tests of the `gantry` binary, and the repository's tidy checks.

mod cli;
mod server;
mod tidy;
