//! Raw TCP tunnels to ports inside sandboxes, through the sandbox's guest.
//!
//! The host cannot reach a sandbox's ports (network mode `none` has only `lo`), but the guest
//! can: [`open`] asks it for `GET /ports/{port}/connect` with `Upgrade: hutch-tcp` over its Unix
//! socket and returns the upgraded connection, which then carries the port's bytes. Previews
//! speak HTTP over it; port forwarding bridges it to a WebSocket ([`bridge_websocket`]).

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hutch_api::ports::TCP_TUNNEL_PROTOCOL;
use hutch_api::{ApiError, ErrorBody, ErrorCode};
use hyper::upgrade::Upgraded;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Largest chunk read from a tunnel before it is sent on as one WebSocket message.
const CHUNK: usize = 64 * 1024;

/// Largest error body read from the guest.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Opens a tunnel to `port` inside sandbox `sandbox_id` (which must be running). A port nobody
/// listens on is a 503 `unavailable` naming the port.
pub async fn open(state: &AppState, sandbox_id: &str, port: u16) -> AppResult<Upgraded> {
    let guest = state.engine().guest(sandbox_id).map_err(AppError::from)?;
    let req = http::Request::builder()
        .method(http::Method::GET)
        .uri(format!("/ports/{port}/connect"))
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, TCP_TUNNEL_PROTOCOL)
        .body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|_| AppError::internal("cannot build the tunnel request"))?;
    let mut resp = guest.send(req).await.map_err(AppError::from)?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(AppError(guest_error(status, &body, port)));
    }
    hyper::upgrade::on(&mut resp).await.map_err(|e| {
        tracing::debug!(sandbox_id, port, error = %e, "tunnel upgrade failed");
        AppError::unavailable(format!("cannot open a tunnel to port {port}"))
    })
}

/// The guest's error answer, or a generic one when it is not an envelope.
fn guest_error(status: StatusCode, body: &[u8], port: u16) -> ApiError {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| {
            ApiError::new(
                ErrorCode::from_status(status.as_u16()),
                format!("the guest refused the tunnel to port {port} ({status})"),
            )
        })
}

/// Why one direction of a bridge stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The sender finished writing (EOF): the other direction may go on.
    HalfClosed,
    /// The connection is over (close frame, error).
    Closed,
}

/// Carries a tunnel over a WebSocket until both sides are done: binary messages are TCP bytes
/// (text messages count as their UTF-8 bytes); an empty binary message means "no more data from
/// this side" (TCP half-close), in both directions; a close frame ends the connection.
pub async fn bridge_websocket<T>(ws: WebSocket, tunnel: T)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(tunnel);
    {
        let up = async {
            while let Some(msg) = ws_rx.next().await {
                let data = match msg {
                    Ok(Message::Binary(b)) => b,
                    Ok(Message::Text(t)) => Bytes::copy_from_slice(t.as_str().as_bytes()),
                    Ok(Message::Close(_)) | Err(_) => return End::Closed,
                    Ok(_) => continue,
                };
                if data.is_empty() {
                    let _ = wr.shutdown().await;
                    return End::HalfClosed;
                }
                if wr.write_all(&data).await.is_err() {
                    return End::Closed;
                }
            }
            End::Closed
        };
        let down = async {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) => {
                        return match ws_tx.send(Message::Binary(Bytes::new())).await {
                            Ok(()) => End::HalfClosed,
                            Err(_) => End::Closed,
                        };
                    }
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(&buf[..n]);
                        if ws_tx.send(Message::Binary(chunk)).await.is_err() {
                            return End::Closed;
                        }
                    }
                    Err(_) => return End::Closed,
                }
            }
        };
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        while !(up_done && down_done) {
            tokio::select! {
                end = &mut up, if !up_done => {
                    up_done = true;
                    if end == End::Closed {
                        break;
                    }
                }
                end = &mut down, if !down_done => {
                    down_done = true;
                    if end == End::Closed {
                        break;
                    }
                }
            }
        }
    }
    let _ = ws_tx.send(Message::Close(None)).await;
    let _ = ws_tx.close().await;
}
