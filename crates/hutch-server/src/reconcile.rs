//! The reconciler: makes the store (desired state) and the runtime (actual state) agree.
//!
//! At startup it first lets the engine reattach to sandboxes that survived a restart of the
//! server (`Engine::recover`). Then, and every few seconds after:
//! - a sandbox the store thinks is live but the runtime lost (or that died) becomes `stopped`
//!   with a `sandbox.exited` event;
//! - a runtime sandbox the store does not know (or deleted) is destroyed;
//! - a growing OOM-kill count produces a `sandbox.oom` event.

use std::collections::HashMap;
use std::time::Duration;

use hutch_api::sandbox::SandboxState;
use hutch_sandbox::{RuntimeState, SandboxInfo};
use hutch_store::SandboxFilter;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::error::AppResult;
use crate::events;
use crate::state::AppState;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Store rows marked stopped/error because the runtime lost them.
    pub exited: Vec<String>,
    /// Runtime sandboxes destroyed because the store does not want them.
    pub orphans: Vec<String>,
    /// Sandboxes with new OOM kills.
    pub oom: Vec<String>,
}

/// Startup: `engine.recover()` then one pass. `starting` rows are from a previous process that
/// died mid-creation: they become `error`.
pub async fn startup(state: &AppState) -> AppResult<ReconcileReport> {
    let report = state.blocking(|engine| engine.recover()).await?;
    tracing::info!(
        running = report.running.len(),
        cleaned = report.cleaned.len(),
        "runtime recovered"
    );
    let starting = state
        .store()
        .list_sandboxes(&SandboxFilter {
            states: vec![SandboxState::Starting],
            ..Default::default()
        })
        .await?;
    for sb in starting {
        let id = sb.id.clone();
        let _ = state.blocking(move |engine| engine.destroy(&id)).await;
        let reason = "the server restarted while the sandbox was starting";
        if state
            .store()
            .set_sandbox_state(
                &sb.id,
                &[SandboxState::Starting],
                SandboxState::Error,
                Some(reason),
            )
            .await?
        {
            events::emit(
                state,
                &sb.team_id,
                &sb.id,
                events::SANDBOX_ERROR,
                json!({ "reason": reason }),
            )
            .await;
        }
    }
    reconcile_once(state).await
}

/// Runs [`reconcile_once`] every `interval` until `stop` is cancelled.
pub async fn run(state: AppState, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = reconcile_once(&state).await {
            tracing::warn!(error = ?e.0, "reconcile pass failed");
        }
    }
}

/// One comparison of store and runtime.
pub async fn reconcile_once(state: &AppState) -> AppResult<ReconcileReport> {
    let mut report = ReconcileReport::default();
    // Read the runtime first: a sandbox created after this read is `starting` in the store
    // (skipped below), so it cannot be mistaken for a lost one.
    let runtime: HashMap<String, SandboxInfo> = state
        .blocking(|engine| Ok(engine.list()))
        .await?
        .into_iter()
        .map(|i| (i.id.clone(), i))
        .collect();
    let live = state
        .store()
        .list_sandboxes(&SandboxFilter {
            states: vec![
                SandboxState::Starting,
                SandboxState::Running,
                SandboxState::Paused,
            ],
            ..Default::default()
        })
        .await?;
    let wanted: HashMap<&str, _> = live.iter().map(|s| (s.id.as_str(), s)).collect();

    for sb in &live {
        if sb.state == SandboxState::Starting {
            continue;
        }
        let lost = match runtime.get(&sb.id) {
            None => true,
            Some(info) => info.state == RuntimeState::Dead,
        };
        if !lost {
            continue;
        }
        // Re-read: a delete or reaper pass may have raced with us.
        let from = [sb.state];
        if state
            .store()
            .set_sandbox_state(&sb.id, &from, SandboxState::Stopped, Some("exited"))
            .await?
        {
            tracing::warn!(sandbox_id = %sb.id, "sandbox exited on its own");
            events::emit(
                state,
                &sb.team_id,
                &sb.id,
                events::SANDBOX_EXITED,
                json!({ "previous_state": sb.state.as_str() }),
            )
            .await;
            let id = sb.id.clone();
            let _ = state.blocking(move |engine| engine.destroy(&id)).await;
            report.exited.push(sb.id.clone());
        }
    }

    for id in runtime.keys() {
        if wanted.contains_key(id.as_str()) {
            continue;
        }
        // Not live in the store: unknown, deleted, stopped or errored. Check again right before
        // destroying, in case it was inserted since the listing.
        match state.store().get_sandbox(id).await? {
            Some(sb)
                if matches!(
                    sb.state,
                    SandboxState::Starting | SandboxState::Running | SandboxState::Paused
                ) =>
            {
                continue;
            }
            _ => {}
        }
        let id2 = id.clone();
        match state.blocking(move |engine| engine.destroy(&id2)).await {
            Ok(()) => {
                tracing::info!(sandbox_id = %id, "destroyed a sandbox the store does not know");
                report.orphans.push(id.clone());
            }
            Err(e) => {
                tracing::warn!(sandbox_id = %id, error = ?e.0, "cannot destroy an orphan sandbox")
            }
        }
    }

    // OOM kills of running sandboxes.
    for sb in live.iter().filter(|s| s.state == SandboxState::Running) {
        if !runtime.contains_key(&sb.id) || report.exited.contains(&sb.id) {
            continue;
        }
        let id = sb.id.clone();
        let Ok(stats) = state.blocking(move |engine| engine.stats(&id)).await else {
            continue;
        };
        let prev = state.swap_oom_count(&sb.id, stats.oom_kills);
        if let Some(prev) = prev.filter(|p| stats.oom_kills > *p) {
            events::emit(
                state,
                &sb.team_id,
                &sb.id,
                events::SANDBOX_OOM,
                json!({ "oom_kills": stats.oom_kills, "new": stats.oom_kills - prev }),
            )
            .await;
            report.oom.push(sb.id.clone());
        }
    }
    state.retain_oom_counts(&|id| wanted.contains_key(id));
    Ok(report)
}
