//! The reaper: kills or pauses running sandboxes whose `expires_at` has passed.

use std::time::Duration;

use chrono::Utc;
use hutch_api::sandbox::{OnTimeout, SandboxState};
use hutch_store::SandboxRecord;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::events;
use crate::state::AppState;

/// Runs [`reap_once`] every `interval` until `stop` is cancelled.
pub async fn run(state: AppState, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = reap_once(&state).await {
            tracing::warn!(error = %e, "reaper pass failed");
        }
    }
}

/// Acts on every expired running sandbox once. Returns how many were handled.
pub async fn reap_once(state: &AppState) -> Result<usize, hutch_store::Error> {
    let expired = state.store().expired_sandboxes(Utc::now()).await?;
    let mut n = 0;
    for sb in expired {
        if expire(state, &sb).await {
            n += 1;
        }
    }
    Ok(n)
}

async fn expire(state: &AppState, sb: &SandboxRecord) -> bool {
    let id = sb.id.clone();
    let (to, action) = match sb.on_timeout {
        OnTimeout::Kill => (SandboxState::Stopped, "kill"),
        OnTimeout::Pause => (SandboxState::Paused, "pause"),
    };
    // Claim the transition first (only if still running and still expired), so a concurrent
    // keepalive, pause or delete wins cleanly.
    match state
        .store()
        .expire_sandbox(&id, Utc::now(), to, "timed out")
        .await
    {
        Ok(true) => {}
        Ok(false) => return false,
        Err(e) => {
            tracing::warn!(sandbox_id = %id, error = %e, "cannot expire sandbox");
            return false;
        }
    }
    tracing::info!(sandbox_id = %id, action, "sandbox timed out");
    events::emit(
        state,
        &sb.team_id,
        &id,
        events::SANDBOX_TIMED_OUT,
        json!({ "action": action }),
    )
    .await;
    let id2 = id.clone();
    let result = match sb.on_timeout {
        OnTimeout::Kill => state.blocking(move |engine| engine.destroy(&id2)).await,
        OnTimeout::Pause => state.blocking(move |engine| engine.pause(&id2)).await,
    };
    if let Err(e) = result {
        // Already paused in the runtime is fine; a sandbox that is gone is the reconciler's.
        if e.0.code != hutch_api::ErrorCode::Conflict {
            tracing::warn!(sandbox_id = %id, error = ?e.0, action, "timeout action failed");
        }
    }
    true
}
