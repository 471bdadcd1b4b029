//! Records the store reads and writes, and the filters for listings.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hutch_api::sandbox::{ApiKey, NetworkSpec, OnTimeout, Sandbox, SandboxState};

/// A sandbox row: the desired state the control plane keeps for one sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    /// Insertion order; the pagination cursor. Ignored on insert.
    pub seq: i64,
    /// Public id (`sb-…`).
    pub id: String,
    /// Owning team.
    pub team_id: String,
    /// Template name.
    pub template: String,
    /// Lifecycle state.
    pub state: SandboxState,
    /// CPU quota in cores.
    pub cpus: f64,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    /// Max processes/threads.
    pub pids: u64,
    /// Timeout in seconds (the last one set).
    pub timeout_s: u64,
    /// What the reaper does at `expires_at`.
    pub on_timeout: OnTimeout,
    /// Environment of every process. Secret: never put it in responses, events or logs.
    pub env: BTreeMap<String, String>,
    /// User labels.
    pub metadata: BTreeMap<String, String>,
    /// Network settings.
    pub network: NetworkSpec,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// When the sandbox became running.
    pub started_at: Option<DateTime<Utc>>,
    /// When the reaper acts.
    pub expires_at: Option<DateTime<Utc>>,
    /// Why the sandbox is in `error` or `stopped`.
    pub reason: Option<String>,
}

impl SandboxRecord {
    /// The public shape (without the team and the environment).
    pub fn to_api(&self) -> Sandbox {
        Sandbox {
            id: self.id.clone(),
            template: self.template.clone(),
            state: self.state,
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            pids: self.pids,
            timeout_s: self.timeout_s,
            on_timeout: self.on_timeout,
            metadata: self.metadata.clone(),
            network: self.network.clone(),
            created_at: self.created_at,
            started_at: self.started_at,
            expires_at: self.expires_at,
            reason: self.reason.clone(),
        }
    }
}

/// Filter for [`crate::Store::list_sandboxes`]. Results are newest first.
#[derive(Debug, Clone, Default)]
pub struct SandboxFilter {
    /// Only this team's sandboxes (`None`: every team, for background loops).
    pub team_id: Option<String>,
    /// Only these states (empty: any).
    pub states: Vec<SandboxState>,
    /// Every `(key, value)` must be present in the metadata.
    pub metadata: Vec<(String, String)>,
    /// Only rows with `seq` strictly below this (the cursor of the previous page).
    pub before_seq: Option<i64>,
    /// Max rows (`None`: no limit).
    pub limit: Option<u32>,
}

/// A stored API key: its metadata plus the HMAC of the secret.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Public metadata.
    pub key: ApiKey,
    /// Hex HMAC-SHA-256 of the key with the server secret.
    pub hash: String,
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Owning team (`None` for server-wide events).
    pub team_id: Option<String>,
    /// Sandbox the event is about.
    pub sandbox_id: Option<String>,
    /// Event type, e.g. `sandbox.created`.
    pub kind: String,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// Structured details. Never secrets.
    pub data: serde_json::Value,
}

/// Filter for [`crate::Store::list_events`]. Results are newest first.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this team's events.
    pub team_id: Option<String>,
    /// Only events about this sandbox.
    pub sandbox_id: Option<String>,
    /// Only events of this type.
    pub kind: Option<String>,
    /// Only events with `id` strictly below this.
    pub before: Option<i64>,
    /// Max rows (`None`: no limit).
    pub limit: Option<u32>,
}

/// A stored secret: metadata plus the encrypted value. The store never sees the value in clear
/// (`hutch-server` encrypts and decrypts it).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecret {
    /// Owning team.
    pub team_id: String,
    /// Name, unique within the team.
    pub name: String,
    /// Free-text description (never the value).
    pub description: Option<String>,
    /// Domains the value may be injected into (exact or `*.example.com`).
    pub hosts: Vec<String>,
    /// AEAD nonce of the current value.
    pub nonce: Vec<u8>,
    /// The encrypted value (authentication tag included).
    pub ciphertext: Vec<u8>,
    /// When the secret was created.
    pub created_at: DateTime<Utc>,
    /// When the value or description last changed.
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for StoredSecret {
    // Ciphertexts are not secret, but dumping them into logs helps nobody.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("team_id", &self.team_id)
            .field("name", &self.name)
            .field("description", &self.description)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}
