//! The [`Store`] trait: everything the control plane persists.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hutch_api::sandbox::{ApiKey, Event, SandboxState, Team};

use crate::{EventFilter, NewEvent, Result, SandboxFilter, SandboxRecord, StoredKey};

/// Persistence for teams, API keys, sandboxes and events. Object-safe: use `Arc<dyn Store>`.
#[async_trait]
pub trait Store: crate::NetworkStore + crate::PreviewStore + Send + Sync + 'static {
    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    /// Inserts a team.
    async fn create_team(&self, team: &Team) -> Result<()>;
    /// One team.
    async fn get_team(&self, id: &str) -> Result<Option<Team>>;
    /// Every team, oldest first.
    async fn list_teams(&self) -> Result<Vec<Team>>;

    /// Inserts an API key with the HMAC of its secret.
    async fn create_key(&self, key: &StoredKey) -> Result<()>;
    /// The key whose HMAC is `hash` (revoked keys included: check `revoked_at`).
    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>>;
    /// One key.
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>>;
    /// Keys, oldest first, optionally of one team.
    async fn list_keys(&self, team_id: Option<&str>) -> Result<Vec<ApiKey>>;
    /// Marks a key revoked. False when it does not exist or was already revoked.
    async fn revoke_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool>;
    /// Number of keys (revoked included).
    async fn count_keys(&self) -> Result<u64>;

    /// Inserts a sandbox (`seq` is assigned by the store and returned).
    async fn insert_sandbox(&self, sandbox: &SandboxRecord) -> Result<i64>;
    /// One sandbox that has not been deleted.
    async fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>>;
    /// Sandboxes of a team that are starting, running or paused (quota checks).
    async fn count_live_sandboxes(&self, team_id: &str) -> Result<u64>;
    /// Sandboxes that have not been deleted, newest first.
    async fn list_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<SandboxRecord>>;
    /// Sets the state (and reason) if the current state is one of `from` (empty: any).
    /// Returns whether a row changed, so concurrent transitions do not both win.
    async fn set_sandbox_state(
        &self,
        id: &str,
        from: &[SandboxState],
        to: SandboxState,
        reason: Option<&str>,
    ) -> Result<bool>;
    /// Marks a `starting` sandbox `running` with its start and expiry times.
    async fn mark_sandbox_running(
        &self,
        id: &str,
        started_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool>;
    /// Sets the timeout and the expiry time.
    async fn set_sandbox_expiry(
        &self,
        id: &str,
        timeout_s: u64,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<bool>;
    /// Soft-deletes a sandbox: it disappears from `get`/`list` (events keep referring to it).
    async fn delete_sandbox(&self, id: &str, at: DateTime<Utc>) -> Result<bool>;
    /// Moves a running sandbox whose `expires_at` is at or before `now` to `to` (with `reason`).
    /// False when it is no longer running or its expiry was pushed back meanwhile.
    async fn expire_sandbox(
        &self,
        id: &str,
        now: DateTime<Utc>,
        to: SandboxState,
        reason: &str,
    ) -> Result<bool>;
    /// Running sandboxes whose `expires_at` is at or before `now`.
    async fn expired_sandboxes(&self, now: DateTime<Utc>) -> Result<Vec<SandboxRecord>>;
    /// Number of non-deleted sandboxes per state.
    async fn count_sandboxes_by_state(&self) -> Result<HashMap<SandboxState, u64>>;
    /// Number of live (starting, running, paused) sandboxes per template.
    async fn template_usage(&self) -> Result<BTreeMap<String, u64>>;

    /// Records an event and returns its id.
    async fn insert_event(&self, event: &NewEvent) -> Result<i64>;
    /// Events, newest first.
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>>;

    // Secrets (values are encrypted by the caller; see `StoredSecret`).
    /// Inserts a secret ([`crate::Error::Conflict`] when the team already has one of that name).
    async fn insert_secret(&self, secret: &crate::StoredSecret) -> Result<()>;
    /// Replaces the value, nonce, description and `updated_at` of an existing secret (matched by
    /// team and name). False when it does not exist.
    async fn update_secret(&self, secret: &crate::StoredSecret) -> Result<bool>;
    /// One secret of a team.
    async fn get_secret(&self, team_id: &str, name: &str) -> Result<Option<crate::StoredSecret>>;
    /// Secrets ordered by team and name, of one team or (`None`) of every team.
    async fn list_secrets(&self, team_id: Option<&str>) -> Result<Vec<crate::StoredSecret>>;
    /// Deletes a secret. False when it does not exist.
    async fn delete_secret(&self, team_id: &str, name: &str) -> Result<bool>;
    /// Number of secrets of every team.
    async fn count_secrets(&self) -> Result<u64>;
}
