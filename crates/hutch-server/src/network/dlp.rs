//! Keeps the gateway in step with the registered secrets: the DLP scanner (any team's secret
//! value leaving any sandbox is a leak) and the credential injections of live sandboxes. Both
//! are refreshed at start and after every secret change.

use std::sync::Arc;

use hutch_net::dlp::{Action, Scanner, Secret};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Rebuilds the scanner now and whenever the secrets change, until `stop`.
pub async fn run(state: AppState, stop: CancellationToken) {
    let mut changes = state.secrets().subscribe();
    // The first pass repeats the build done before networks were restored: a secret changed
    // between that build and this subscription would otherwise be missed.
    let mut first = true;
    loop {
        refresh(&state).await;
        if !first {
            super::lifecycle::refresh_credentials(&state).await;
        }
        first = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// Builds the scanner from the current secrets (also called once before sandboxes' networks are
/// restored at start, so no request is scanned without them).
pub async fn refresh(state: &AppState) {
    if !state.config().network.dlp {
        return;
    }
    let values = match state.secrets().all_values().await {
        Ok(v) => v,
        Err(e) => {
            // Keep the previous scanner (built-in rules at least): never scan with less.
            tracing::error!(error = %e.0.message, "DLP: cannot read the registered secrets");
            return;
        }
    };
    let secrets: Vec<Secret> = values
        .into_iter()
        // Shorter values cannot be scanned for (they would flag ordinary traffic).
        .filter(|(_, _, v)| v.len() >= hutch_net::dlp::MIN_SECRET_LEN)
        // One name for every registered secret: findings end up in 403 reasons and egress
        // logs of any team's sandbox, and must not reveal another team's secret names.
        .map(|(_, _name, value)| Secret {
            name: "registered".into(),
            value: value.to_vec(),
            action: Action::Block,
        })
        .collect();
    let count = secrets.len();
    match tokio::task::spawn_blocking(move || Scanner::with_builtin(secrets)).await {
        Ok(Ok(scanner)) => {
            state.network().gateway().set_dlp(Some(Arc::new(scanner)));
            tracing::info!(secrets = count, "DLP scanner updated");
        }
        Ok(Err(e)) => tracing::error!(error = %e, "DLP: building the scanner"),
        Err(e) => tracing::error!(error = %e, "DLP: building the scanner panicked"),
    }
}
