//! Interactive terminals: raw mode, window size, and the WebSocket attach loop.

use std::hash::{BuildHasher, Hasher};
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use hutch_api::terminal::{AttachControl, CreateTerminal, TerminalInfo};
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use super::client::{Client, ServerError, decode_error, seg};
use super::pipe::spawn_stdin_reader;
use super::write_stdout;

/// Puts the local terminal in raw mode while alive (when stdin is a terminal).
pub struct RawMode {
    enabled: bool,
}

impl RawMode {
    /// Enable raw mode if stdin is a terminal.
    pub fn enable() -> Self {
        let enabled =
            std::io::stdin().is_terminal() && crossterm::terminal::enable_raw_mode().is_ok();
        RawMode { enabled }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.enabled {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// The local terminal's size as (cols, rows); 80x24 when there is no terminal.
pub fn local_size() -> (u16, u16) {
    if (std::io::stdin().is_terminal() || std::io::stdout().is_terminal())
        && let Ok((c, r)) = crossterm::terminal::size()
        && c > 0
        && r > 0
    {
        return (c, r);
    }
    (80, 24)
}

/// A fresh terminal session name like `exec-3f9a1c0b7d2e`.
pub fn session_name(prefix: &str) -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    format!("{prefix}-{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// How an attach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachEnd {
    /// The server closed the socket (the program exited, or the session was deleted).
    Closed,
    /// The user pressed the detach key.
    Detached,
}

/// The WebSocket URL for an API path.
pub fn ws_url(base: &str, path: &str) -> String {
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    format!("{base}{path}")
}

fn terminal_path(sandbox: &str, name: &str) -> String {
    format!("/v1/sandboxes/{}/terminals/{}", seg(sandbox), seg(name))
}

/// Create a terminal session, attach to it, and delete it once it ends. Returns the program's
/// exit code.
pub async fn run_session(
    client: &Client,
    sandbox: &str,
    req: CreateTerminal,
    input: bool,
) -> anyhow::Result<i32> {
    let info: TerminalInfo = client
        .post_json(&format!("/v1/sandboxes/{}/terminals", seg(sandbox)), &req)
        .await?;
    let result = async {
        attach(client, sandbox, &info.name, input, None).await?;
        wait_exit(client, sandbox, &info.name).await
    }
    .await;
    if let Err(e) = client
        .delete(&terminal_path(sandbox, &info.name), &[])
        .await
    {
        tracing::debug!(error = %e, "cannot delete the terminal session");
    }
    result
}

/// After the socket closed: the program's exit code (polling briefly while it is still marked
/// alive).
pub async fn wait_exit(client: &Client, sandbox: &str, name: &str) -> anyhow::Result<i32> {
    let path = terminal_path(sandbox, name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let info: TerminalInfo = client.get_json(&path, &[]).await?;
        if !info.alive {
            return Ok(info.exit_code.unwrap_or(0));
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("lost the connection to terminal {name} (it is still running)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Attach the local terminal to a session until the server closes the socket or the user
/// presses `detach_key`. Output goes to stdout; stdin is forwarded when `input` is set.
pub async fn attach(
    client: &Client,
    sandbox: &str,
    name: &str,
    input: bool,
    detach_key: Option<u8>,
) -> anyhow::Result<AttachEnd> {
    let url = ws_url(
        client.base(),
        &format!("{}/attach", terminal_path(sandbox, name)),
    );
    let mut request = url
        .as_str()
        .into_client_request()
        .context("bad WebSocket URL")?;
    if let Some(key) = client.key() {
        let value = format!("Bearer {key}")
            .parse()
            .context("the API key is not a valid header value")?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    let (ws, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(ok) => ok,
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.body().as_deref().unwrap_or_default();
            let error = decode_error(status, body);
            return Err(ServerError {
                status,
                error,
                no_key: client.key().is_none(),
            }
            .into());
        }
        Err(e) => return Err(anyhow::anyhow!("cannot attach to terminal {name}: {e}")),
    };
    let (mut sink, mut stream) = ws.split();

    let _raw = RawMode::enable();
    let mut stdin_rx = input.then(spawn_stdin_reader);
    let mut winch = signal(SignalKind::window_change()).context("cannot handle SIGWINCH")?;
    // Leave through the normal path (restoring the terminal, cleaning up) when told to stop.
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    let mut size = local_size();
    // Make the remote side match us from the start.
    send_resize(&mut sink, size).await;

    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => write_stdout(&b)?,
                Some(Ok(Message::Text(t))) => write_stdout(t.as_bytes())?,
                Some(Ok(Message::Close(_))) | None => return Ok(AttachEnd::Closed),
                Some(Ok(_)) => {}
                Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                    return Ok(AttachEnd::Closed);
                }
                Some(Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ))) => return Ok(AttachEnd::Closed),
                Some(Err(e)) => return Err(anyhow::anyhow!("terminal connection failed: {e}")),
            },
            chunk = recv_opt(&mut stdin_rx) => match chunk {
                Some(mut data) => {
                    let mut detach = false;
                    if let Some(k) = detach_key
                        && let Some(pos) = data.iter().position(|&b| b == k)
                    {
                        data.truncate(pos);
                        detach = true;
                    }
                    if !data.is_empty() && sink.send(Message::Binary(data.into())).await.is_err() {
                        return Ok(AttachEnd::Closed);
                    }
                    if detach {
                        let _ = sink.send(Message::Close(None)).await;
                        return Ok(AttachEnd::Detached);
                    }
                }
                // End of local input: keep showing output until the program ends.
                None => stdin_rx = None,
            },
            _ = term.recv() => anyhow::bail!("terminated"),
            _ = hup.recv() => anyhow::bail!("hung up"),
            _ = winch.recv() => resize_if_changed(&mut sink, &mut size).await,
            _ = poll.tick() => resize_if_changed(&mut sink, &mut size).await,
        }
    }
}

async fn recv_opt(rx: &mut Option<tokio::sync::mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn resize_if_changed<S>(sink: &mut S, size: &mut (u16, u16))
where
    S: futures::Sink<Message> + Unpin,
{
    let now = local_size();
    if now != *size {
        *size = now;
        send_resize(sink, now).await;
    }
}

async fn send_resize<S>(sink: &mut S, (cols, rows): (u16, u16))
where
    S: futures::Sink<Message> + Unpin,
{
    let msg = AttachControl::Resize { cols, rows };
    if let Ok(text) = serde_json::to_string(&msg) {
        let _ = sink.send(Message::Text(text.into())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(ws_url("http://h:1", "/v1/x"), "ws://h:1/v1/x");
        assert_eq!(ws_url("https://h", "/a"), "wss://h/a");
    }

    #[test]
    fn names() {
        let a = session_name("exec");
        let b = session_name("exec");
        assert!(a.starts_with("exec-") && a.len() == 17, "{a}");
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn resize_message() {
        let text = serde_json::to_string(&AttachControl::Resize {
            cols: 100,
            rows: 30,
        })
        .unwrap();
        assert_eq!(text, r#"{"type":"resize","cols":100,"rows":30}"#);
    }
}
