//! Integration tests of gantry-server: the real server on a loopback port, real git
//! repositories, and a runner played by the test over the runner protocol. Each test runs
//! on SQLite and on PostgreSQL.

mod access;
mod api;
mod browser;
mod credentials;
mod environments;
mod gates;
mod github_app;
mod log_view;
mod metrics;
mod notify;
mod oauth;
mod openapi;
mod ops;
mod protocol;
mod retention;
mod schedules;
mod secrets;
mod servers;
mod support;
mod webhooks;
