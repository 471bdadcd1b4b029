//! `GET /terminals/{name}/attach`: a WebSocket onto a terminal session.
//!
//! The server first sends a replay of the current screen, then raw PTY output as binary
//! frames. Clients send binary frames (raw input) or text frames with an `AttachControl`.
//! When the program exits, the server sends a close frame. Sessions outlive connections.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::response::Response;
use hutch_api::terminal::AttachControl;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::Session;
use crate::error::GuestError;
use crate::state::GuestState;

/// `GET /terminals/{name}/attach`.
pub async fn attach(
    State(state): State<GuestState>,
    Path(name): Path<String>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, GuestError> {
    let session = state.terminals().get(&name)?;
    let ws = ws.map_err(|e| GuestError::BadRequest(format!("WebSocket upgrade required: {e}")))?;
    Ok(ws.on_upgrade(move |socket| run(socket, session)))
}

async fn run(mut socket: WebSocket, session: Arc<Session>) {
    let (replay, mut rx) = session.snapshot_and_subscribe();
    if socket.send(Message::Binary(replay.into())).await.is_err() {
        return;
    }
    let mut done = session.done();
    loop {
        if *done.borrow_and_update() {
            // Flush what is left, then say goodbye.
            loop {
                match rx.try_recv() {
                    Ok(b) => {
                        if socket.send(Message::Binary(b)).await.is_err() {
                            return;
                        }
                    }
                    Err(TryRecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
            let frame = CloseFrame {
                code: close_code::NORMAL,
                reason: "program exited".into(),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
            return;
        }
        tokio::select! {
            out = rx.recv() => match out {
                Ok(b) => {
                    if socket.send(Message::Binary(b)).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::debug!(skipped = n, "attach client lagging"),
                Err(RecvError::Closed) => return,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if let Err(e) = session.write(&b).await {
                        tracing::debug!(error = %e, "attach input failed");
                    }
                }
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<AttachControl>(t.as_str()) {
                    Ok(AttachControl::Input { data }) => {
                        if let Err(e) = session.write(data.as_bytes()).await {
                            tracing::debug!(error = %e, "attach input failed");
                        }
                    }
                    Ok(AttachControl::Resize { cols, rows }) => {
                        if let Err(e) = session.resize(cols, rows) {
                            tracing::debug!(error = %e, "attach resize failed");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "bad attach control message"),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = done.changed() => {}
        }
    }
}
