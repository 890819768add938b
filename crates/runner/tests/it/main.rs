//! Integration tests of gantry-runner: the same semantic cases run on every backend.

mod cases;
mod docker;
mod local;
mod support;
