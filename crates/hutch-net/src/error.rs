//! The crate's error type.

use std::io;

/// Errors from Hutch's networking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value (a rule, a pool, an address) is invalid.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// What was invalid.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// An I/O or system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// `nft` refused the host input filter.
    #[error("firewall: {0}")]
    Firewall(String),
    /// The address pool has no free block left.
    #[error("address pool {0} is exhausted")]
    PoolExhausted(String),
    /// The sandbox CA cannot be created, loaded or used.
    #[error("sandbox CA: {0}")]
    Ca(String),
    /// A `git push` the git gate cannot check (malformed, truncated, oversize or unsupported):
    /// refused, never forwarded unchecked.
    #[error("git push cannot be checked: {0}")]
    GitPush(String),
}

/// Result with the crate's [`Error`].
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
