//! Integration tests of gantry-runner: the same semantic cases run on every backend.

mod cases;
mod clone;
mod docker;
mod fake;
mod local;
mod support;
