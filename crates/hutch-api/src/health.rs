//! Guest health and resource usage.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Health of a guest and the sandbox's resource usage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GuestHealth {
    pub status: String,
    pub version: String,
    pub uptime_ms: u64,
    /// Processes alive in the sandbox (including the guest).
    pub processes: u64,
    pub terminals: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usage_us: Option<u64>,
}
