//! Guest configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Configuration handed to the guest (by the engine as JSON on a pipe fd; or built from CLI
/// flags standalone).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct GuestConfig {
    /// Token required on every request (`x-hutch-token` or `Authorization: Bearer`).
    pub token: String,
    /// Environment for every process/terminal started, on top of a sane default
    /// (`PATH`, `HOME`, `TERM`, …).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Hostname to set when running as PID 1.
    #[serde(default)]
    pub hostname: Option<String>,
}
