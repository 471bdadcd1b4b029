//! [`NetworkStore`]: the egress log, access requests and live network specs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hutch_api::network::{AllowRuleSpec, Approval, ApprovalState, EgressEntry, NetworkSpec};

use crate::Result;

/// A decision on a pending access request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// `approved` or `denied`.
    pub state: ApprovalState,
    /// When.
    pub at: DateTime<Utc>,
    /// The operator's note.
    pub note: Option<String>,
    /// What was granted (approvals).
    pub granted: Option<AllowRuleSpec>,
}

/// Filter for [`NetworkStore::list_approvals`]. Results are newest first.
#[derive(Debug, Clone, Default)]
pub struct ApprovalFilter {
    /// Only this team's requests.
    pub team_id: Option<String>,
    /// Only this sandbox's requests.
    pub sandbox_id: Option<String>,
    /// Only requests in this state.
    pub state: Option<ApprovalState>,
    /// Max rows.
    pub limit: Option<u32>,
}

/// Persistence for sandbox networking. A supertrait of [`crate::Store`].
#[async_trait]
pub trait NetworkStore: Send + Sync {
    /// Appends egress entries with the `seq` they carry (the writer numbers them, from
    /// [`NetworkStore::max_egress_seq`]).
    async fn insert_egress(&self, entries: &[EgressEntry]) -> Result<()>;
    /// The highest egress `seq` so far (0 when empty).
    async fn max_egress_seq(&self) -> Result<i64>;
    /// A sandbox's egress entries with `seq` above `after`, oldest first.
    async fn list_egress(
        &self,
        sandbox_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<EgressEntry>>;
    /// Removes the egress entries of a sandbox (after it is deleted).
    async fn delete_egress(&self, sandbox_id: &str) -> Result<u64>;

    /// Records a new (pending) access request of a team's sandbox.
    async fn insert_approval(&self, team_id: &str, approval: &Approval) -> Result<()>;
    /// One access request and its team.
    async fn get_approval(&self, id: &str) -> Result<Option<(String, Approval)>>;
    /// Access requests, newest first.
    async fn list_approvals(&self, filter: &ApprovalFilter) -> Result<Vec<Approval>>;
    /// Decides a pending request; false when it is no longer pending.
    async fn decide_approval(&self, id: &str, decision: &Decision) -> Result<bool>;

    /// Replaces a sandbox's network spec; false when the sandbox does not exist.
    async fn set_sandbox_network(&self, id: &str, network: &NetworkSpec) -> Result<bool>;
}
