//! The operations layer: what a caller may ask of gantry, once for the API, the pages and
//! the CLI. Each operation takes the caller's identity and a typed request and does, in this
//! order, authorise (`access::authorize`, `access::require_admin`), validate (every check of
//! the request, each refusal an `OpError` naming the field), act (the store, git, the
//! trigger) and return what was made. `api` and `web` only extract a request, call an
//! operation and render.

pub mod builds;
pub mod environments;
pub mod logs;
pub mod notify;
pub mod registries;
pub mod repos;
pub mod retention;
pub mod runners;
pub mod schedules;
pub mod secrets;
pub mod tokens;
pub mod users;

/// A name a user gives a thing (a secret, a schedule): letters, digits, `_`, `-` and `.`, at
/// most 100 of them, or an error naming the `field`.
pub(crate) fn check_name(what: &str, field: &str, name: &str) -> crate::error::OpResult<()> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(crate::error::OpError::invalid_field(
            field,
            format!("{what} `{name}` is not valid: use letters, digits, `_`, `-` and `.`"),
        ))
    }
}
