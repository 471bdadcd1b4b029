//! `/v1/sandboxes/{id}/previews` and `/v1/sandboxes/{id}/ports/{port}/…`: preview access, preview
//! URLs and tokens, and port forwarding over WebSocket.

use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use chrono::Utc;
use http::{HeaderMap, header};
use hutch_api::ErrorBody;
use hutch_api::ports::{PREVIEW_TOKEN_QUERY, PreviewAccess, PreviewInfo};
use hutch_api::sandbox::SandboxState;
use hutch_store::SandboxRecord;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::auth::Caller;
use crate::error::{AppError, AppResult};
use crate::events;
use crate::extract::ApiJson;
use crate::previews::{self, Target};
use crate::routes::sandboxes::load;
use crate::state::AppState;
use crate::tunnel;

/// A port number 1-65535 (422 naming `port` otherwise).
fn parse_port(s: &str) -> AppResult<u16> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(AppError::invalid(
            "port",
            "port must be a number between 1 and 65535",
        )),
    }
}

fn require_running(sb: &SandboxRecord) -> AppResult<()> {
    match sb.state {
        SandboxState::Running => Ok(()),
        other => Err(AppError::conflict(format!("sandbox is {}", other.as_str()))),
    }
}

/// Who may open the sandbox's preview URLs.
#[utoipa::path(
    operation_id = "get_preview_access",
    get, path = "/v1/sandboxes/{id}/previews", tag = "sandbox: ports",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Preview access", body = PreviewAccess),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get_access(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<Json<PreviewAccess>> {
    let sb = load(&state, &caller, &id).await?;
    let public = state.store().preview_public(&sb.id).await?;
    Ok(Json(PreviewAccess { public }))
}

/// Make the sandbox's preview URLs public (anyone with the URL) or token-protected (the default).
#[utoipa::path(
    operation_id = "set_preview_access",
    put, path = "/v1/sandboxes/{id}/previews", tag = "sandbox: ports",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = PreviewAccess,
    responses(
        (status = 200, description = "Preview access", body = PreviewAccess),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 422, description = "Invalid body", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn set_access(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(access): ApiJson<PreviewAccess>,
) -> AppResult<Json<PreviewAccess>> {
    let sb = load(&state, &caller, &id).await?;
    let before = state.store().preview_public(&sb.id).await?;
    state
        .store()
        .set_preview_public(&sb.id, access.public, Utc::now())
        .await?;
    if before != access.public {
        events::emit(
            &state,
            &sb.team_id,
            &sb.id,
            events::PREVIEW_ACCESS,
            json!({ "public": access.public }),
        )
        .await;
    }
    Ok(Json(access))
}

/// The preview URL of a port and the sandbox's preview token.
#[utoipa::path(
    operation_id = "get_port_preview",
    get, path = "/v1/sandboxes/{id}/ports/{port}/preview", tag = "sandbox: ports",
    params(("id" = String, Path, description = "Sandbox id"),
           ("port" = u16, Path, description = "Port inside the sandbox")),
    responses(
        (status = 200, description = "URL and token", body = PreviewInfo),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 422, description = "Invalid port", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, port)): Path<(String, String)>,
    headers: HeaderMap,
) -> AppResult<Json<PreviewInfo>> {
    let port = parse_port(&port)?;
    let sb = load(&state, &caller, &id).await?;
    let token = previews::token(&state, &sb.id)
        .ok_or_else(|| AppError::internal("preview tokens are unavailable"))?;
    let public = state.store().preview_public(&sb.id).await?;
    // The URL reuses the port (and, behind a TLS proxy, the scheme) the API was reached on.
    let scheme = match headers.get("x-forwarded-proto").map(|v| v.as_bytes()) {
        Some(v) if v.eq_ignore_ascii_case(b"https") => "https",
        _ => "http",
    };
    let api_port = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map_or(Some(state.config().listen.port()), previews::host_port);
    let target = Target {
        port,
        sandbox_id: sb.id.clone(),
    };
    let url = previews::url(scheme, &state.config().preview_domain, &target, api_port);
    Ok(Json(PreviewInfo {
        sandbox_id: sb.id,
        port,
        url_with_token: format!("{url}?{PREVIEW_TOKEN_QUERY}={token}"),
        url,
        token,
        public,
    }))
}

/// Forward a TCP connection to a port inside the sandbox over WebSocket: binary messages carry
/// the bytes both ways, an empty binary message is a half-close (no more data from that side).
#[utoipa::path(
    operation_id = "connect_port",
    get, path = "/v1/sandboxes/{id}/ports/{port}/connect", tag = "sandbox: ports",
    params(("id" = String, Path, description = "Sandbox id"),
           ("port" = u16, Path, description = "Port inside the sandbox")),
    responses(
        (status = 101, description = "Switching to WebSocket"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Sandbox paused or stopped", body = ErrorBody),
        (status = 503, description = "Nothing listens on the port", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn connect(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, port)): Path<(String, String)>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> AppResult<Response> {
    let port = parse_port(&port)?;
    let sb = load(&state, &caller, &id).await?;
    require_running(&sb)?;
    let ws = ws.map_err(|e| AppError::bad_request(format!("WebSocket upgrade required: {e}")))?;
    // Connect before upgrading, so a closed port is an error answer, not a socket that closes.
    let upgraded = tunnel::open(&state, &sb.id, port).await?;
    tracing::debug!(sandbox_id = %sb.id, port, key_id = %caller.key_id, "port forward opened");
    Ok(ws
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "port forward upgrade failed"))
        .on_upgrade(move |socket| tunnel::bridge_websocket(socket, TokioIo::new(upgraded))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port("1").unwrap(), 1);
        assert!(parse_port("0").is_err());
        assert!(parse_port("65536").is_err());
        assert!(parse_port("x").is_err());
    }
}
