//! Streaming proxy from `/v1/sandboxes/{id}/<path>` to the sandbox's guest.
//!
//! Bodies are streamed both ways without buffering (except the small JSON bodies of process
//! starts, which are read to record the process tag). WebSocket upgrades are bridged with
//! `hyper::upgrade::on` on both sides. API keys are never forwarded into the sandbox.

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hutch_api::sandbox::SandboxState;
use hutch_sandbox::GuestBody;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::auth::Caller;
use crate::error::{AppError, AppResult};
use crate::events;
use crate::extract::{MAX_JSON_BYTES, read_limited};
use crate::routes::sandboxes::load;
use crate::state::AppState;

/// Largest process-start response read to record its id.
const MAX_SNIFF: usize = 16 * 1024;

/// Headers never forwarded (hop-by-hop, or credentials of the public API).
const DROPPED: &[&str] = &[
    "authorization",
    "x-api-key",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-hutch-token",
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, keep_upgrade: bool) {
    for (name, value) in from {
        let n = name.as_str();
        let upgrade_header = n == "connection" || n == "upgrade";
        if DROPPED.contains(&n) && !(keep_upgrade && upgrade_header) {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// What the proxy records about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ProcessStart,
    Exec,
    Other,
}

fn boxed(body: Body) -> GuestBody {
    body.map_err(std::io::Error::other).boxed_unsync()
}

fn full(bytes: Bytes) -> GuestBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Proxies one `/v1/sandboxes/{id}/…` request to the guest of sandbox `id`.
pub async fn proxy(state: AppState, caller: Caller, req: Request) -> Response {
    match proxy_inner(state, caller, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn proxy_inner(state: AppState, caller: Caller, mut req: Request) -> AppResult<Response> {
    // `/v1/sandboxes/{id}/…`
    let id = req
        .uri()
        .path()
        .split('/')
        .nth(3)
        .unwrap_or_default()
        .to_owned();
    let sb = load(&state, &caller, &id).await?;
    match sb.state {
        SandboxState::Running => {}
        SandboxState::Paused => return Err(AppError::conflict("sandbox is paused")),
        other => return Err(AppError::conflict(format!("sandbox is {}", other.as_str()))),
    }

    // Path inside the guest: strip `/v1/sandboxes/{id}`.
    let prefix = format!("/v1/sandboxes/{id}");
    let path = req.uri().path().strip_prefix(&prefix).unwrap_or("/");
    let path = if path.is_empty() { "/" } else { path };
    let guest_uri = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let kind = match (req.method(), path.trim_end_matches('/')) {
        (&Method::POST, "/processes") => Kind::ProcessStart,
        (&Method::POST, "/exec") => Kind::Exec,
        _ => Kind::Other,
    };

    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (parts, body) = req.into_parts();
    let mut builder = http::Request::builder()
        .method(parts.method.clone())
        .uri(guest_uri);
    if let Some(h) = builder.headers_mut() {
        copy_headers(&parts.headers, h, upgrade);
    }
    // Process starts and execs carry small JSON bodies: read them to record the tag.
    let (guest_body, tag) = if kind == Kind::Other {
        (boxed(body), None)
    } else {
        let bytes = read_limited(body, MAX_JSON_BYTES).await?;
        let tag = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("tag").and_then(|t| t.as_str()).map(str::to_owned));
        if let Some(h) = builder.headers_mut() {
            h.insert(header::CONTENT_LENGTH, bytes.len().into());
        }
        (full(bytes), tag)
    };
    let guest_req = builder
        .body(guest_body)
        .map_err(|_| AppError::bad_request("request cannot be forwarded"))?;

    // A map lookup: no need for a blocking-pool hop on the hot path.
    let guest = state.engine().guest(&id).map_err(AppError::from)?;
    let mut resp = guest.send(guest_req).await.map_err(AppError::from)?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(AppError::unavailable(
                "the guest switched protocols unexpectedly",
            ));
        };
        let guest_upgrade = hyper::upgrade::on(&mut resp);
        let sandbox_id = id.clone();
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, guest_upgrade) {
                Ok((client, guest)) => {
                    let mut client = TokioIo::new(client);
                    let mut guest = TokioIo::new(guest);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut guest).await {
                        tracing::debug!(%sandbox_id, error = %e, "websocket bridge ended");
                    }
                }
                Err(e) => tracing::debug!(%sandbox_id, error = %e, "websocket upgrade failed"),
            }
        });
        let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        if let Some(h) = out.headers_mut() {
            copy_headers(resp.headers(), h, true);
        }
        return out
            .body(Body::empty())
            .map_err(|_| AppError::internal("bad upgrade response"));
    }

    let status = resp.status();
    let (parts, incoming) = resp.into_parts();
    let mut out = Response::builder().status(status);
    if let Some(h) = out.headers_mut() {
        copy_headers(&parts.headers, h, false);
    }
    let streaming = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/x-ndjson") || ct.starts_with("text/event-stream")
        });

    let body = match kind {
        Kind::ProcessStart if status.is_success() && streaming => {
            let mut sniffer = StartSniffer::new(state.clone(), sb.team_id.clone(), id.clone(), tag);
            let stream = incoming.into_data_stream().map(move |chunk| {
                if let Ok(bytes) = &chunk {
                    sniffer.feed(bytes);
                }
                chunk
            });
            Body::from_stream(stream)
        }
        Kind::ProcessStart if status.is_success() => {
            let bytes = collect_limited(incoming).await?;
            let process_id = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned));
            record_process(&state, &sb.team_id, &id, process_id, tag).await;
            Body::from(bytes)
        }
        Kind::Exec => {
            // Recorded off the response path: the client waits for the output, not the store.
            let (state, team, sandbox) = (state.clone(), sb.team_id.clone(), id.clone());
            let data = json!({ "tag": tag, "status": status.as_u16() });
            tokio::spawn(async move {
                events::emit(&state, &team, &sandbox, events::SANDBOX_EXEC, data).await;
            });
            Body::new(incoming)
        }
        _ => Body::new(incoming),
    };
    out.body(body)
        .map_err(|_| AppError::internal("bad response"))
}

async fn collect_limited(incoming: hyper::body::Incoming) -> AppResult<Bytes> {
    let limited = http_body_util::Limited::new(incoming, MAX_SNIFF.max(MAX_JSON_BYTES));
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| AppError::unavailable("the guest's response could not be read"))
}

async fn record_process(
    state: &AppState,
    team_id: &str,
    sandbox_id: &str,
    process_id: Option<String>,
    tag: Option<String>,
) {
    events::emit(
        state,
        team_id,
        sandbox_id,
        events::PROCESS_STARTED,
        json!({ "process_id": process_id, "tag": tag }),
    )
    .await;
}

/// Watches the first lines of a process output stream (NDJSON or SSE) for the `start` event and
/// records `process.started` with its id. Never looks at output data beyond the first event.
struct StartSniffer {
    state: AppState,
    team_id: String,
    sandbox_id: String,
    tag: Option<String>,
    buf: Vec<u8>,
    done: bool,
}

impl StartSniffer {
    fn new(state: AppState, team_id: String, sandbox_id: String, tag: Option<String>) -> Self {
        StartSniffer {
            state,
            team_id,
            sandbox_id,
            tag,
            buf: Vec::new(),
            done: false,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.done {
            return;
        }
        self.buf.extend_from_slice(chunk);
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            if let Some(process_id) = start_id(&line) {
                self.finish(Some(process_id));
                return;
            }
        }
        if self.buf.len() > MAX_SNIFF {
            self.finish(None);
        }
    }

    fn finish(&mut self, process_id: Option<String>) {
        self.done = true;
        self.buf = Vec::new();
        let state = self.state.clone();
        let (team, sb, tag) = (
            self.team_id.clone(),
            self.sandbox_id.clone(),
            self.tag.take(),
        );
        tokio::spawn(async move { record_process(&state, &team, &sb, process_id, tag).await });
    }
}

impl Drop for StartSniffer {
    fn drop(&mut self) {
        if !self.done {
            self.finish(None);
        }
    }
}

/// The process id of a `start` event line (`{"type":"start","id":…}` or `data: {…}`).
fn start_id(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?.trim();
    let text = text.strip_prefix("data:").map_or(text, str::trim);
    if !text.starts_with('{') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let kind = v.get("type").and_then(|t| t.as_str());
    if kind.is_some_and(|k| k != "start") {
        return None;
    }
    v.get("id").and_then(|i| i.as_str()).map(str::to_owned)
}

/// Name of the header that must never reach the guest from a client.
pub fn is_dropped(name: &HeaderName) -> bool {
    DROPPED.contains(&name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_lines() {
        assert_eq!(
            start_id(br#"{"type":"start","id":"p-1","pid":3}"#).as_deref(),
            Some("p-1")
        );
        assert_eq!(
            start_id(br#"data: {"type":"start","id":"p-2","pid":3}"#).as_deref(),
            Some("p-2")
        );
        assert_eq!(
            start_id(br#"{"type":"stdout","offset":0,"data":"x"}"#),
            None
        );
        assert_eq!(start_id(b"event: start"), None);
    }

    #[test]
    fn credentials_are_not_forwarded() {
        let mut from = HeaderMap::new();
        from.insert("authorization", "Bearer hk_x".parse().unwrap());
        from.insert("x-api-key", "hk_x".parse().unwrap());
        from.insert("content-type", "application/json".parse().unwrap());
        let mut to = HeaderMap::new();
        copy_headers(&from, &mut to, true);
        assert_eq!(to.len(), 1);
        assert!(is_dropped(&HeaderName::from_static("authorization")));
    }
}
