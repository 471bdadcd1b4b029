//! Hutch's sandbox networking: per-sandbox network namespaces, the DNS filter, the egress
//! gateway and the DLP scanner.

pub mod ca;
pub mod dlp;
pub mod dns;
pub mod error;
pub mod gateway;
pub mod gitgate;
pub mod netns;
pub mod policy;

pub use error::{Error, Result};
