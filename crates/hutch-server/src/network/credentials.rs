//! Credential injection: a sandbox's credential bindings resolved to the secret values the
//! gateway puts on the wire. PENDING: wired once the secrets vault and the gateway's
//! injection land (same session).

use hutch_api::network::NetworkSpec;

use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The gateway injections for `spec`'s credentials.
pub async fn injections(_state: &AppState, _team_id: &str, spec: &NetworkSpec) -> AppResult<Vec<()>> {
    if spec.credentials.is_empty() {
        Ok(Vec::new())
    } else {
        Err(AppError::unavailable("credential injection is not available yet"))
    }
}
