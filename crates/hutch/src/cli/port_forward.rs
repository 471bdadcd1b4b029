//! `hutch port-forward ID [LOCAL:]REMOTE…`: listen on local ports and carry every accepted
//! connection to a port inside the sandbox, one WebSocket per connection
//! (`GET /v1/sandboxes/{id}/ports/{port}/connect`: binary messages are the TCP bytes, an empty
//! binary message is a half-close).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use futures::{SinkExt, StreamExt};
use hutch_api::sandbox::{Sandbox, SandboxState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use super::ConnArgs;
use super::client::{Client, ServerError, decode_error, seg};
use super::tty::ws_url;

/// Largest chunk read from a local connection before it is sent as one message.
const CHUNK: usize = 64 * 1024;

/// One `[LOCAL:]REMOTE` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    /// Local port (0: any free port).
    pub local: u16,
    /// Port inside the sandbox.
    pub remote: u16,
}

impl FromStr for PortSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str, what: &str, zero_ok: bool| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(n) if n != 0 || zero_ok => Ok(n),
                _ => Err(format!("invalid {what} port {p:?} in {s:?}")),
            }
        };
        match s.split_once(':') {
            Some((local, remote)) => Ok(PortSpec {
                local: port(local, "local", true)?,
                remote: port(remote, "remote", false)?,
            }),
            None => {
                let remote = port(s, "remote", false)?;
                Ok(PortSpec {
                    local: remote,
                    remote,
                })
            }
        }
    }
}

/// `hutch port-forward`.
#[derive(Args, Debug)]
pub struct PortForwardArgs {
    /// Sandbox id.
    pub id: String,
    /// Ports as `[LOCAL:]REMOTE` (LOCAL defaults to REMOTE; 0 picks a free local port).
    #[arg(required = true, value_name = "[LOCAL:]REMOTE")]
    pub ports: Vec<PortSpec>,
    /// Local address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub address: IpAddr,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Forwards until Ctrl-C (or SIGTERM).
pub async fn port_forward(args: PortForwardArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let sb: Sandbox = client
        .get_json(&format!("/v1/sandboxes/{}", seg(&args.id)), &[])
        .await?;
    if sb.state != SandboxState::Running {
        anyhow::bail!("sandbox {} is {}", sb.id, sb.state.as_str());
    }
    let mut listeners = Vec::with_capacity(args.ports.len());
    for spec in &args.ports {
        let addr = SocketAddr::new(args.address, spec.local);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        println!("Forwarding {bound} -> {}:{}", sb.id, spec.remote);
        listeners.push((listener, spec.remote));
    }
    super::write_stdout(b"")?;
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, remote) in listeners {
        tasks.spawn(serve(listener, client.clone(), sb.id.clone(), remote));
    }
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        Some(res) = tasks.join_next() => {
            // A listener only stops on an accept error.
            res.context("a listener failed")??;
        }
    }
    tasks.abort_all();
    Ok(())
}

/// Accepts local connections and forwards each on its own task.
async fn serve(
    listener: TcpListener,
    client: Client,
    sandbox: String,
    remote: u16,
) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await.context("accepting a connection")?;
        let _ = stream.set_nodelay(true);
        let (client, sandbox) = (client.clone(), sandbox.clone());
        tokio::spawn(async move {
            if let Err(e) = forward(&client, &sandbox, remote, stream).await {
                let _ = super::write_stderr(
                    format!("hutch: connection from {peer} to {sandbox}:{remote}: {e:#}\n")
                        .as_bytes(),
                );
            }
        });
    }
}

/// Opens the WebSocket for one connection and carries its bytes until both sides are done.
async fn forward(
    client: &Client,
    sandbox: &str,
    remote: u16,
    stream: TcpStream,
) -> anyhow::Result<()> {
    let url = ws_url(
        client.base(),
        &format!("/v1/sandboxes/{}/ports/{remote}/connect", seg(sandbox)),
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
    // No Nagle delay: small writes (a request, a half-close) must not wait for a delayed ACK.
    let ws = match tokio_tungstenite::connect_async_with_config(request, None, true).await {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp.body().as_deref().unwrap_or_default();
            return Err(ServerError {
                status,
                error: decode_error(status, body),
                no_key: client.key().is_none(),
            }
            .into());
        }
        Err(e) => return Err(anyhow::anyhow!("cannot reach the Hutch server: {e}")),
    };
    bridge(ws, stream).await;
    Ok(())
}

/// Why one direction stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// No more data from that side; the other direction goes on.
    HalfClosed,
    /// The connection is over.
    Closed,
}

async fn bridge<S>(ws: tokio_tungstenite::WebSocketStream<S>, stream: TcpStream)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut rd, mut wr) = stream.into_split();
    {
        let up = async {
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
        let down = async {
            while let Some(msg) = ws_rx.next().await {
                let data = match msg {
                    Ok(Message::Binary(b)) => b,
                    Ok(Message::Text(t)) => Bytes::copy_from_slice(t.as_bytes()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            "8000".parse::<PortSpec>().unwrap(),
            PortSpec {
                local: 8000,
                remote: 8000
            }
        );
        assert_eq!(
            "9000:80".parse::<PortSpec>().unwrap(),
            PortSpec {
                local: 9000,
                remote: 80
            }
        );
        assert_eq!(
            "0:80".parse::<PortSpec>().unwrap(),
            PortSpec {
                local: 0,
                remote: 80
            }
        );
        for bad in ["0", "80:0", "x", "1:2:3", "70000", ":80", "80:"] {
            assert!(bad.parse::<PortSpec>().is_err(), "{bad}");
        }
    }
}
