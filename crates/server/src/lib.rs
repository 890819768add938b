//! gantry's HTTP server (being built: webhooks, API, runner protocol).
