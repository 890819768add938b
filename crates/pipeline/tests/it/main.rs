//! Integration tests of gantry-pipeline: one binary, one module per concern.

mod conditions;
mod container;
mod diagnostics;
mod dialects;
mod environments;
mod expr_budget;
mod fixtures;
mod fuzz;
mod limits;
mod notify;
mod snapshots;
mod support;
mod trust;
mod woodpecker;
