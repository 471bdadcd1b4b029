//! Wire types shared by `hutch server`, `hutch guest`, the CLI and the SDKs.
//!
//! The guest API and the public sandbox-scoped `/v1` routes use the same shapes, so the server can
//! proxy most sandbox requests to the guest after authenticating them.

pub mod error;
pub mod files;
pub mod health;
pub mod network;
pub mod ports;
pub mod process;
pub mod sandbox;
pub mod secrets;
pub mod terminal;

pub use error::{ApiError, ErrorBody, ErrorCode};

/// Header carrying the per-sandbox guest token (the public API uses API keys instead).
pub const GUEST_TOKEN_HEADER: &str = "x-hutch-token";
