//! The store's error type.

/// Errors from a [`crate::Store`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed (connection, I/O, constraint, …).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded (corrupt JSON, unknown enum value, bad timestamp).
    #[error("corrupt {what} in row {id}")]
    Corrupt {
        /// Which column could not be decoded.
        what: &'static str,
        /// Row identifier.
        id: String,
    },
    /// A unique constraint was violated (the object already exists).
    #[error("{0} already exists")]
    Conflict(String),
}

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
