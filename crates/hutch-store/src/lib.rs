//! Hutch persistence.
//!
//! Handlers talk to the object-safe [`Store`] trait (`Arc<dyn Store>`), so another backend
//! (PostgreSQL for many hosts) can be added without touching them. [`SqliteStore`] is the embedded
//! default: one SQLite file in WAL mode with foreign keys on and embedded migrations.
//!
//! Timestamps are stored as Unix milliseconds. Sandbox `env` values are user configuration: they
//! are kept here (the engine needs them on re-creation) but never leave the store through the
//! API-facing conversion [`SandboxRecord::to_api`].

mod error;
mod model;
mod network_store;
mod preview_store;
mod sqlite;
mod store;

pub use error::{Error, Result};
pub use model::StoredSecret;
pub use model::{EventFilter, NewEvent, SandboxFilter, SandboxRecord, StoredKey};
pub use network_store::{ApprovalFilter, Decision, NetworkStore};
pub use preview_store::PreviewStore;
pub use sqlite::SqliteStore;
pub use store::Store;
