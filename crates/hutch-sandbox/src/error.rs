//! The engine's error type.

use std::io;

/// Errors from the sandbox engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error("template {0} not found")]
    TemplateNotFound(String),
    #[error("template {0} already exists")]
    TemplateExists(String),
    #[error("template {0} is in use by {1} sandbox(es)")]
    TemplateInUse(String, usize),
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("sandbox {id} is {state}: {message}")]
    State {
        id: String,
        state: String,
        message: String,
    },
    /// A setup step inside the new sandbox failed; the sandbox was not started (fail closed).
    #[error("sandbox setup failed at {step}: {source}")]
    Setup { step: String, source: io::Error },
    #[error("cgroup {path}: {source}")]
    Cgroup { path: String, source: io::Error },
    #[error("guest: {0}")]
    Guest(String),
    /// The guest answered with an error envelope.
    #[error(transparent)]
    Api(hutch_api::ApiError),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error(transparent)]
    Sys(#[from] nix::Error),
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach context to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
