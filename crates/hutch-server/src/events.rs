//! Lifecycle and audit events. Event data never holds secrets: no env values, no argv, no output.

use chrono::Utc;
use hutch_store::NewEvent;

use crate::state::AppState;

/// A sandbox was accepted (row inserted).
pub const SANDBOX_CREATED: &str = "sandbox.created";
/// A sandbox's guest is ready.
pub const SANDBOX_STARTED: &str = "sandbox.started";
/// A sandbox was frozen.
pub const SANDBOX_PAUSED: &str = "sandbox.paused";
/// A sandbox was thawed.
pub const SANDBOX_RESUMED: &str = "sandbox.resumed";
/// A sandbox's timeout passed (`data.action` is `kill` or `pause`).
pub const SANDBOX_TIMED_OUT: &str = "sandbox.timed_out";
/// A sandbox was deleted through the API.
pub const SANDBOX_KILLED: &str = "sandbox.killed";
/// The kernel OOM-killed a process in a sandbox.
pub const SANDBOX_OOM: &str = "sandbox.oom";
/// A sandbox failed to start or broke.
pub const SANDBOX_ERROR: &str = "sandbox.error";
/// A sandbox died on its own.
pub const SANDBOX_EXITED: &str = "sandbox.exited";
/// A process was started in a sandbox (`data.process_id`, `data.tag`).
pub const PROCESS_STARTED: &str = "process.started";
/// A command was run to completion with `…/exec`.
pub const SANDBOX_EXEC: &str = "sandbox.exec";

/// Every event type, for documentation and validation of the `type` filter.
pub const ALL: &[&str] = &[
    SANDBOX_CREATED,
    SANDBOX_STARTED,
    SANDBOX_PAUSED,
    SANDBOX_RESUMED,
    SANDBOX_TIMED_OUT,
    SANDBOX_KILLED,
    SANDBOX_OOM,
    SANDBOX_ERROR,
    SANDBOX_EXITED,
    PROCESS_STARTED,
    SANDBOX_EXEC,
    PREVIEW_ACCESS,
    SECRET_CREATED,
    SECRET_UPDATED,
    SECRET_DELETED,
    NETWORK_UPDATED,
    APPROVAL_REQUESTED,
    APPROVAL_APPROVED,
    APPROVAL_DENIED,
];

/// A sandbox's network policy changed (`data.allow` count, `data.mode`).
pub const NETWORK_UPDATED: &str = "sandbox.network_updated";
/// A sandbox asked for more network access (`data.approval_id`, `data.host`).
pub const APPROVAL_REQUESTED: &str = "approval.requested";
/// An operator granted an access request (`data.approval_id`, `data.granted`).
pub const APPROVAL_APPROVED: &str = "approval.approved";
/// An operator refused an access request (`data.approval_id`).
pub const APPROVAL_DENIED: &str = "approval.denied";

/// A team secret was created (`data.name`; never the value).
pub const SECRET_CREATED: &str = "secret.created";
/// A team secret's value was rotated (`data.name`).
pub const SECRET_UPDATED: &str = "secret.updated";
/// A team secret was deleted (`data.name`).
pub const SECRET_DELETED: &str = "secret.deleted";

/// A sandbox's previews became public or token-protected (`data.public`).
pub const PREVIEW_ACCESS: &str = "preview.access";

/// Records an event about a sandbox. Failures are logged, never returned: an event must not
/// fail the operation it describes.
pub async fn emit(
    state: &AppState,
    team_id: &str,
    sandbox_id: &str,
    kind: &str,
    data: serde_json::Value,
) {
    let event = NewEvent {
        team_id: Some(team_id.to_owned()),
        sandbox_id: Some(sandbox_id.to_owned()),
        kind: kind.to_owned(),
        time: Utc::now(),
        data,
    };
    if let Err(e) = state.store().insert_event(&event).await {
        tracing::warn!(error = %e, kind, sandbox_id, "could not record event");
    }
}
