//! Errors: [`Error`] for starting the server, [`AppError`] for handlers (always rendered as the
//! one JSON envelope `{"error":{"code","message","details"?}}`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hutch_api::{ApiError, ErrorCode};
use hutch_sandbox::Error as EngineError;

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] hutch_store::Error),
    /// The sandbox engine failed.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// Encrypting or decrypting with the secrets key failed (wrong key, corrupt or moved data).
    /// The message never holds key material or plaintext.
    #[error("secrets: {0}")]
    Crypto(String),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with context.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// A handler error: an [`ApiError`] rendered with its status.
#[derive(Debug)]
pub struct AppError(pub ApiError);

/// Result of a handler.
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError(ApiError::bad_request(message))
    }
    /// 422 `invalid_argument` naming `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        AppError(ApiError::invalid(field, message))
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        AppError(ApiError::not_found(message))
    }
    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        AppError(ApiError::conflict(message))
    }
    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        AppError(ApiError::unauthorized(message))
    }
    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        AppError(ApiError::new(ErrorCode::Forbidden, message))
    }
    /// 413 `payload_too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        AppError(ApiError::too_large(message))
    }
    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        AppError(ApiError::unavailable(message))
    }
    /// 500 `internal`. The message must not contain secrets.
    pub fn internal(message: impl Into<String>) -> Self {
        AppError(ApiError::internal(message))
    }
}

impl From<ApiError> for AppError {
    fn from(e: ApiError) -> Self {
        AppError(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0.into_body())).into_response()
    }
}

impl From<hutch_store::Error> for AppError {
    fn from(e: hutch_store::Error) -> Self {
        match e {
            hutch_store::Error::Conflict(what) => AppError(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("{what} already exists"),
            )),
            other => {
                tracing::error!(error = %other, "store error");
                AppError::unavailable("the store is unavailable")
            }
        }
    }
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(_) => AppError::not_found("sandbox not found"),
            EngineError::TemplateNotFound(name) => {
                AppError::invalid("template", format!("template {name} not found"))
            }
            EngineError::TemplateExists(name) => AppError(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("template {name} already exists"),
            )),
            EngineError::TemplateInUse(name, n) => {
                AppError::conflict(format!("template {name} is in use by {n} sandbox(es)"))
            }
            EngineError::Invalid { field, message } => AppError::invalid(field, message),
            EngineError::State { state, message, .. } => {
                AppError::conflict(format!("sandbox is {state}: {message}"))
            }
            EngineError::Guest(message) => {
                tracing::warn!(%message, "guest unavailable");
                AppError::unavailable("the sandbox's guest is unavailable")
            }
            EngineError::Setup { step, source } => {
                tracing::error!(%step, error = %source, "sandbox setup failed");
                AppError::unavailable(format!("sandbox setup failed at {step}"))
            }
            other => {
                tracing::error!(error = %other, "runtime error");
                AppError::unavailable("the sandbox runtime failed")
            }
        }
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "blocking task failed");
        AppError::internal("internal error")
    }
}
