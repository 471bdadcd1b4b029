//! The guest's error type and its mapping onto the `hutch_api::ErrorBody` envelope.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hutch_api::{ApiError, ErrorCode};

/// Everything that can go wrong while serving a guest request.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// A request field has an invalid value (422, `details.field` names it).
    #[error("{message}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such object (404).
    #[error("{0}")]
    NotFound(String),
    /// The object's state does not allow the operation (409).
    #[error("{0}")]
    Conflict(String),
    /// The object already exists (409).
    #[error("{0}")]
    AlreadyExists(String),
    /// The request body is too large (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A deadline passed (504).
    #[error("{0}")]
    Timeout(String),
    /// A bug or an unexpected system failure (500).
    #[error("{0}")]
    Internal(String),
    /// An unexpected I/O failure (500).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Shorthand for results carrying a [`GuestError`].
pub type Result<T, E = GuestError> = std::result::Result<T, E>;

impl GuestError {
    /// A field-level validation error.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        GuestError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Map a filesystem error on `path` onto a client-meaningful error.
    pub fn from_fs(err: std::io::Error, path: &str) -> Self {
        use std::io::ErrorKind as K;
        match err.kind() {
            K::NotFound => GuestError::NotFound(format!("no such file or directory: {path}")),
            K::PermissionDenied => GuestError::Forbidden(format!("permission denied: {path}")),
            K::AlreadyExists => GuestError::AlreadyExists(format!("already exists: {path}")),
            K::DirectoryNotEmpty => GuestError::Conflict(format!("directory not empty: {path}")),
            K::NotADirectory => GuestError::invalid("path", format!("not a directory: {path}")),
            K::IsADirectory => GuestError::invalid("path", format!("is a directory: {path}")),
            K::StorageFull => GuestError::Internal(format!("no space left on device: {path}")),
            _ => GuestError::Internal(format!("{path}: {err}")),
        }
    }

    /// The wire form of the error.
    pub fn to_api(&self) -> ApiError {
        match self {
            GuestError::Invalid { field, message } => ApiError::invalid(field, message.clone()),
            GuestError::BadRequest(m) => ApiError::bad_request(m.clone()),
            GuestError::Unauthorized(m) => ApiError::unauthorized(m.clone()),
            GuestError::Forbidden(m) => ApiError::new(ErrorCode::Forbidden, m.clone()),
            GuestError::NotFound(m) => ApiError::not_found(m.clone()),
            GuestError::Conflict(m) => ApiError::conflict(m.clone()),
            GuestError::AlreadyExists(m) => ApiError::new(ErrorCode::AlreadyExists, m.clone()),
            GuestError::PayloadTooLarge(m) => ApiError::too_large(m.clone()),
            GuestError::Timeout(m) => ApiError::new(ErrorCode::Timeout, m.clone()),
            GuestError::Internal(m) => ApiError::internal(m.clone()),
            GuestError::Io(e) => ApiError::internal(e.to_string()),
        }
    }
}

impl IntoResponse for GuestError {
    fn into_response(self) -> Response {
        let api = self.to_api();
        if api.code == ErrorCode::Internal {
            tracing::error!(error = %self, "internal error");
        }
        let status =
            StatusCode::from_u16(api.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(api.into_body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_codes_to_statuses() {
        let r = GuestError::invalid("cmd", "nope").into_response();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let r = GuestError::NotFound("x".into()).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = GuestError::AlreadyExists("x".into()).into_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let r = GuestError::Timeout("x".into()).into_response();
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn fs_errors() {
        let e = GuestError::from_fs(std::io::Error::from(std::io::ErrorKind::NotFound), "/x");
        assert!(matches!(e, GuestError::NotFound(_)));
    }
}
