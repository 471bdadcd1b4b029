//! A networked sandbox's life in the control plane: placeholders at validation, addresses,
//! files and policy before create, live updates, and restoring everything after a restart.

use http_body_util::BodyExt;
use hutch_api::network::NetworkSpec;
use hutch_api::sandbox::SandboxState;
use hutch_sandbox::SandboxSpec;
use hutch_store::{SandboxFilter, SandboxRecord};

use super::{SANDBOX_BUNDLE_PATH, validate};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Largest number of credential bindings per sandbox.
const MAX_CREDENTIALS: usize = 32;

fn is_env_name(k: &str) -> bool {
    let mut bytes = k.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && k.len() <= 256
}

/// Checks the credential bindings and gives each a fresh placeholder (what the sandbox sees
/// instead of the secret). Placeholders sent by the client are ignored.
pub fn assign_placeholders(spec: &mut NetworkSpec) -> AppResult<()> {
    if spec.credentials.len() > MAX_CREDENTIALS {
        return Err(AppError::invalid(
            "network",
            format!("at most {MAX_CREDENTIALS} credentials"),
        ));
    }
    let policy = super::policy_of(spec).map_err(|m| AppError::invalid("network", m))?;
    for (i, c) in spec.credentials.iter_mut().enumerate() {
        let field = format!("credentials[{i}]");
        if c.secret.is_empty() || c.secret.len() > 128 {
            return Err(AppError::invalid(
                "network",
                format!("{field}: bad secret name"),
            ));
        }
        if axum::http::HeaderName::from_bytes(c.header.as_bytes()).is_err() {
            return Err(AppError::invalid(
                "network",
                format!("{field}: bad header name"),
            ));
        }
        if !c.template.contains("{secret}") {
            return Err(AppError::invalid(
                "network",
                format!("{field}: template must contain {{secret}}"),
            ));
        }
        if c.path_prefix
            .as_deref()
            .is_some_and(|p| !p.starts_with('/'))
        {
            return Err(AppError::invalid(
                "network",
                format!("{field}: path_prefix must start with '/'"),
            ));
        }
        if let Some(env) = &c.env
            && !is_env_name(env)
        {
            return Err(AppError::invalid(
                "network",
                format!("{field}: bad env name"),
            ));
        }
        let bare = c.host.strip_prefix("*.").unwrap_or(&c.host);
        if !matches!(
            hutch_net::policy::Host::parse(bare),
            Ok(hutch_net::policy::Host::Name(_))
        ) {
            return Err(AppError::invalid("network", format!("{field}: bad host")));
        }
        // A credential for a host the sandbox may not reach would never be used.
        let probe = c.host.replace("*.", "x.");
        if policy.allows_name(&probe).is_none() {
            return Err(AppError::invalid(
                "network",
                format!("{field}: host {} is not in the allowlist", c.host),
            ));
        }
        if c.placeholder.is_none() {
            c.placeholder = Some(format!(
                "hutch_ph_{}",
                hex::encode(rand::random::<[u8; 16]>())
            ));
        }
    }
    Ok(())
}

/// Before a networked create: reserve the addresses, add the files and environment, and
/// install the policy (nothing runs inside the sandbox before it is in place).
pub async fn prepare_create(
    state: &AppState,
    record: &SandboxRecord,
    spec: &mut SandboxSpec,
) -> AppResult<()> {
    let (network, engine) = (state.network().clone(), state.engine().clone());
    let (id, template) = (record.id.clone(), record.template.clone());
    let prepared = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let bundle = if network.has_ca() {
            engine
                .templates()
                .read_file(&template, SANDBOX_BUNDLE_PATH.trim_start_matches('/'))
                .ok()
                .flatten()
        } else {
            None
        };
        let p = network.prepare(&id, bundle);
        tracing::debug!(sandbox = %id, elapsed_us = started.elapsed().as_micros() as u64, "network prepared");
        p
    })
    .await
    .map_err(|e| AppError::internal(format!("network setup panicked: {e}")))??;
    for (k, v) in prepared.env {
        spec.env.entry(k).or_insert(v);
    }
    for c in &record.network.credentials {
        if let (Some(env), Some(ph)) = (&c.env, &c.placeholder) {
            spec.env.insert(env.clone(), ph.clone());
        }
    }
    spec.files.extend(prepared.files);
    apply(state, &record.team_id, &record.id, &record.network).await
}

/// Installs a sandbox's policy (and credential injections) in the gateway: applies to the next
/// DNS query, connection and request.
pub async fn apply(state: &AppState, team_id: &str, id: &str, spec: &NetworkSpec) -> AppResult<()> {
    let policy = validate(spec)?;
    let injections = super::credentials::injections(state, team_id, spec).await?;
    let policies = state.network().policies();
    policies
        .set_injections(id, injections)
        .map_err(|e| AppError::invalid("network", e.to_string()))?;
    policies
        .set(id, policy)
        .map_err(|e| AppError::invalid("network", e.to_string()))?;
    Ok(())
}

/// After a secret changed: live sandboxes with credential bindings get the current values. A
/// binding whose secret is gone loses its injection (its requests go out without the header).
pub async fn refresh_credentials(state: &AppState) {
    let live = match state
        .store()
        .list_sandboxes(&SandboxFilter {
            states: vec![SandboxState::Running, SandboxState::Paused],
            ..Default::default()
        })
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "refreshing credential injections");
            return;
        }
    };
    for sb in live.iter().filter(|sb| !sb.network.credentials.is_empty()) {
        if let Err(e) = apply(state, &sb.team_id, &sb.id, &sb.network).await {
            tracing::warn!(sandbox = %sb.id, error = %e.0.message, "credential injection removed");
            let _ = state
                .network()
                .policies()
                .set_injections(&sb.id, Vec::new());
        }
    }
}

/// After a restart: policies for every live networked sandbox, listeners on their links, and
/// cleanup of links whose sandbox is gone.
pub async fn restore(state: &AppState) -> AppResult<()> {
    let live = state
        .store()
        .list_sandboxes(&SandboxFilter {
            states: vec![
                SandboxState::Running,
                SandboxState::Paused,
                SandboxState::Starting,
            ],
            ..Default::default()
        })
        .await?;
    for sb in live.iter().filter(|sb| sb.network.is_networked()) {
        if let Err(e) = apply(state, &sb.team_id, &sb.id, &sb.network).await {
            tracing::warn!(sandbox = %sb.id, error = %e.0.message, "restoring the network policy");
        }
    }
    let running: std::collections::HashSet<String> =
        state.engine().list().into_iter().map(|i| i.id).collect();
    let network = state.network().clone();
    tokio::task::spawn_blocking(move || network.reattach(&|id| running.contains(id)))
        .await
        .map_err(|e| AppError::internal(format!("network restore panicked: {e}")))?;
    Ok(())
}

/// Gives a running sandbox created without a network one (mode `none` → `allowlist`): link,
/// listeners, `/etc/resolv.conf`, `/etc/hosts` and the CA bundle (written through its guest),
/// and the policy. Processes already running keep their environment, so they reach the gateway
/// through DNS and the transparent :80/:443 listeners rather than `HTTP_PROXY`.
pub async fn attach(state: &AppState, record: &SandboxRecord, spec: &NetworkSpec) -> AppResult<()> {
    let (network, engine) = (state.network().clone(), state.engine().clone());
    let (id, template) = (record.id.clone(), record.template.clone());
    let prepared = tokio::task::spawn_blocking(move || -> AppResult<super::Prepared> {
        let bundle = engine
            .templates()
            .read_file(&template, SANDBOX_BUNDLE_PATH.trim_start_matches('/'))
            .ok()
            .flatten();
        let prepared = network.prepare(&id, bundle)?;
        let pid = engine.info(&id)?.pid;
        network
            .attach(&id, pid)
            .map_err(|e| AppError::unavailable(format!("network setup: {e}")))?;
        Ok(prepared)
    })
    .await
    .map_err(|e| AppError::internal(format!("network setup panicked: {e}")))?;
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            state.network().forget_blocking(&record.id).await;
            return Err(e);
        }
    };
    let result = async {
        let guest = state.engine().guest(&record.id)?;
        for f in &prepared.files {
            let req = http::Request::builder()
                .method(http::Method::PUT)
                .uri(format!(
                    "/files?path={}&mode={:o}",
                    f.path.display(),
                    f.mode
                ))
                .body(
                    http_body_util::Full::new(bytes::Bytes::from(f.contents.clone()))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .map_err(|e| AppError::internal(e.to_string()))?;
            let resp = guest.send(req).await?;
            if !resp.status().is_success() {
                return Err(AppError::unavailable(format!(
                    "writing {} in the sandbox: {}",
                    f.path.display(),
                    resp.status()
                )));
            }
        }
        apply(state, &record.team_id, &record.id, spec).await
    }
    .await;
    if result.is_err() {
        state.network().forget_blocking(&record.id).await;
    }
    result
}
