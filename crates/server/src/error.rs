//! `OpError`: every refusal an operation gives, with its kind, for the API, the pages and the
//! runner protocol alike. Its HTTP status is decided here and nowhere else; the API answers
//! `{"error": kind, "message", "field"?, "needed"?}`. Server-side failures are logged with
//! their cause and shown as an opaque message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gantry_proto::ErrorBody;
use gantry_store::{LeaseError, Role, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The request is wrong; `field` names the part of it, when one does.
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    /// No identity, or not a valid one.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller lacks a right; `needed` is the role that would do.
    #[error("{message}")]
    Forbidden {
        needed: Option<Role>,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    /// The server already does as much of this as it will at once.
    #[error("{0}")]
    Busy(String),
    /// A service gantry asked on the caller's behalf (git, GitHub) gave no usable answer.
    #[error("{0}")]
    Upstream(String),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Logged; the caller sees only that it failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl OpError {
    pub fn invalid(message: impl Into<String>) -> Self {
        OpError::Invalid {
            field: None,
            message: message.into(),
        }
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        OpError::Invalid {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        OpError::Forbidden {
            needed: None,
            message: message.into(),
        }
    }

    pub fn needs(role: Role, message: impl Into<String>) -> Self {
        OpError::Forbidden {
            needed: Some(role),
            message: message.into(),
        }
    }

    /// The kind, as the API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            OpError::Invalid { .. } => "invalid",
            OpError::Unauthorized(_) => "unauthorized",
            OpError::Forbidden { .. } => "forbidden",
            OpError::NotFound(_) => "not_found",
            OpError::Conflict(_) => "conflict",
            OpError::TooLarge(_) => "too_large",
            OpError::Busy(_) => "busy",
            OpError::Upstream(_) => "upstream",
            OpError::Unavailable(_) => "unavailable",
            OpError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            OpError::Invalid { .. } => StatusCode::BAD_REQUEST,
            OpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            OpError::Forbidden { .. } => StatusCode::FORBIDDEN,
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::Conflict(_) => StatusCode::CONFLICT,
            OpError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            OpError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            OpError::Upstream(_) => StatusCode::BAD_GATEWAY,
            OpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            OpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the caller is shown: the message, except for failures of the server itself,
    /// which are logged and shown opaquely.
    pub fn public_message(&self) -> String {
        match self {
            OpError::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                "internal error; the server's log has the cause".to_owned()
            }
            OpError::Unavailable(cause) => {
                tracing::error!(%cause, "request failed");
                "the database is unavailable; try again shortly".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => OpError::NotFound(format!("{what} not found")),
            StoreError::Conflict(message) => OpError::Conflict(message),
            e if e.is_unavailable() => OpError::Unavailable(e.to_string()),
            other => OpError::Internal(other.to_string()),
        }
    }
}

impl From<LeaseError> for OpError {
    fn from(e: LeaseError) -> Self {
        match e {
            LeaseError::Lost { .. } => OpError::Conflict(e.to_string()),
            LeaseError::NoSuchStep { .. } | LeaseError::LineOutOfRange { .. } => {
                OpError::invalid(e.to_string())
            }
            LeaseError::Store(inner) => inner.into(),
        }
    }
}

impl IntoResponse for OpError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.kind().to_owned(),
            message: self.public_message(),
            field: match &self {
                OpError::Invalid { field, .. } => field.clone(),
                _ => None,
            },
            needed: match &self {
                OpError::Forbidden { needed, .. } => needed.map(|r| r.as_str().to_owned()),
                _ => None,
            },
        };
        (self.status(), Json(body)).into_response()
    }
}

pub type OpResult<T> = Result<T, OpError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status_and_name() {
        let cases = [
            (OpError::invalid_field("timeout", "x"), 400, "invalid"),
            (OpError::Unauthorized("x".into()), 401, "unauthorized"),
            (OpError::needs(Role::Admin, "x"), 403, "forbidden"),
            (OpError::NotFound("x".into()), 404, "not_found"),
            (OpError::Conflict("x".into()), 409, "conflict"),
            (OpError::TooLarge("x".into()), 413, "too_large"),
            (OpError::Upstream("x".into()), 502, "upstream"),
            (OpError::Unavailable("x".into()), 503, "unavailable"),
            (OpError::Internal("x".into()), 500, "internal"),
        ];
        for (error, status, kind) in cases {
            assert_eq!((error.status().as_u16(), error.kind()), (status, kind));
        }
        assert_eq!(
            OpError::Internal("the cause".into()).public_message(),
            "internal error; the server's log has the cause"
        );
    }
}
