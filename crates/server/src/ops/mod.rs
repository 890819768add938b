//! The operations layer: what a caller may ask of gantry, once for the API, the pages and
//! the CLI. Each operation takes the caller's identity and a typed request and does, in this
//! order, authorise (`access::authorize`, `access::require_admin`), validate (every check of
//! the request, each refusal an `OpError` naming the field), act (the store, git, the
//! trigger) and return what was made. `api` and `web` only extract a request, call an
//! operation and render.

pub mod builds;
pub mod notify;
pub mod repos;
pub mod retention;
pub mod runners;
pub mod schedules;
pub mod secrets;
pub mod tokens;
pub mod users;
