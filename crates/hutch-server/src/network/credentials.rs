//! Credential injection: a sandbox's credential bindings resolved to the secret values the
//! gateway puts on the wire for the bound host only. The sandbox holds placeholders.

use hutch_api::network::NetworkSpec;
use hutch_net::policy::Injection;

use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The gateway injections for `spec`'s credentials (secret values read from the vault).
pub async fn injections(
    state: &AppState,
    team_id: &str,
    spec: &NetworkSpec,
) -> AppResult<Vec<Injection>> {
    let mut out = Vec::with_capacity(spec.credentials.len());
    for (i, c) in spec.credentials.iter().enumerate() {
        let field = format!("credentials[{i}]");
        // The secret says where it may go; a binding elsewhere could send it to a server that
        // echoes it back into the sandbox.
        let Some(meta) = state.secrets().get(team_id, &c.secret).await? else {
            return Err(AppError::invalid(
                "network",
                format!("{field}: the team has no secret named {}", c.secret),
            ));
        };
        let host = c.host.trim_end_matches('.').to_ascii_lowercase();
        if !meta
            .hosts
            .iter()
            .any(|allowed| super::covers(allowed, &host))
        {
            return Err(AppError::invalid(
                "network",
                format!(
                    "{field}: secret {} may only be sent to [{}] (set its hosts with PUT /v1/secrets/{})",
                    c.secret,
                    meta.hosts.join(", "),
                    c.secret
                ),
            ));
        }
        let Some(real) = state.secrets().reveal(team_id, &c.secret).await? else {
            return Err(AppError::invalid(
                "network",
                format!("{field}: the team has no secret named {}", c.secret),
            ));
        };
        let placeholder = c
            .placeholder
            .clone()
            .ok_or_else(|| AppError::internal(format!("{field}: no placeholder assigned")))?;
        let header = axum::http::HeaderName::from_bytes(c.header.as_bytes())
            .map_err(|_| AppError::invalid("network", format!("{field}: bad header name")))?;
        out.push(Injection {
            secret: c.secret.clone(),
            domain: c.host.clone(),
            path_prefix: c.path_prefix.clone(),
            header,
            value: c.template.replace("{secret}", &real),
            real: real.to_string(),
            placeholder,
        });
    }
    Ok(out)
}
