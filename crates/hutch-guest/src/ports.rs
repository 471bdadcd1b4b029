//! `GET /ports/{port}/connect`: a raw TCP tunnel to a port inside the sandbox.
//!
//! A sandbox in network mode `none` only has `lo`, so the host cannot reach its ports directly;
//! the guest runs inside the sandbox's network namespace and can. The request must carry
//! `Connection: upgrade` and `Upgrade: hutch-tcp`. The guest connects to `127.0.0.1:{port}`
//! (then `[::1]:{port}`) *before* answering, so a closed port is an ordinary error envelope
//! (503 `unavailable`) instead of a tunnel that dies at once. On success it answers
//! `101 Switching Protocols` and splices bytes both ways; a half-close on one side is passed on
//! to the other.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hutch_api::ApiError;
use hutch_api::ports::TCP_TUNNEL_PROTOCOL;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::GuestError;

/// Bound on connecting to the port (it is local: anything slower is a wedged listener).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /ports/{port}/connect`.
pub async fn connect(Path(port): Path<String>, mut req: Request) -> Response {
    let port = match parse_port(&port) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !asks_for_tunnel(req.headers()) {
        return GuestError::BadRequest(format!(
            "this route needs `Connection: upgrade` and `Upgrade: {TCP_TUNNEL_PROTOCOL}`"
        ))
        .into_response();
    }
    let stream = match dial(port).await {
        Ok(s) => s,
        Err(message) => return unavailable(message),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(port, error = %e, "tunnel upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        let mut stream = stream;
        match tokio::io::copy_bidirectional(&mut client, &mut stream).await {
            Ok((up, down)) => tracing::debug!(port, up, down, "tunnel closed"),
            Err(e) => tracing::debug!(port, error = %e, "tunnel ended"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(
        header::UPGRADE,
        HeaderValue::from_static(TCP_TUNNEL_PROTOCOL),
    );
    resp
}

/// A port number 1-65535.
fn parse_port(s: &str) -> Result<u16, GuestError> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(GuestError::invalid(
            "port",
            format!("port must be a number between 1 and 65535, got {s:?}"),
        )),
    }
}

/// Whether the request asks to switch to the tunnel protocol.
fn asks_for_tunnel(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, want: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, TCP_TUNNEL_PROTOCOL)
}

/// Connects to the port on the loopback interface (IPv4 first, then IPv6 when IPv4 is
/// refused). The error is a message for the client.
async fn dial(port: u16) -> Result<TcpStream, String> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let first = match try_dial(v4).await {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    if first.kind() == std::io::ErrorKind::ConnectionRefused
        && let Ok(s) = try_dial(v6).await
    {
        return Ok(s);
    }
    Err(match first.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("nothing is listening on port {port} in the sandbox (connection refused)")
        }
        std::io::ErrorKind::TimedOut => {
            format!("port {port} in the sandbox did not accept the connection in time")
        }
        _ => format!("cannot connect to port {port} in the sandbox: {first}"),
    })
}

async fn try_dial(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    // Interactive traffic (terminals, WebSockets, dev servers): no Nagle delay.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// 503 `unavailable`: the port cannot be reached (the guest itself is fine).
fn unavailable(message: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(ApiError::unavailable(message).into_body()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port("8000").unwrap(), 8000);
        assert_eq!(parse_port("65535").unwrap(), 65535);
        for bad in ["0", "65536", "-1", "http", "", "80a"] {
            assert!(
                matches!(parse_port(bad), Err(GuestError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn upgrade_headers() {
        let mut h = HeaderMap::new();
        assert!(!asks_for_tunnel(&h));
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(!asks_for_tunnel(&h));
        h.insert(header::UPGRADE, "Hutch-TCP".parse().unwrap());
        assert!(asks_for_tunnel(&h));
    }
}
