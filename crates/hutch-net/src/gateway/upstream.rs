//! Sending requests upstream. Each client connection keeps its last upstream connection and
//! reuses it for the next request to the same host, port, scheme and addresses (a client's
//! keep-alive connection usually talks to one host; intercepted HTTPS always does, and a fresh
//! TLS handshake per request would double the latency). Connections are never shared between
//! client connections, so never between sandboxes.

use super::http::Body;
use super::{Allowed, Blocked, Gateway};
use http::header::{CONNECTION, HOST, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// Headers that belong to one hop and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How long to wait for a kept connection to finish its previous exchange before opening a
/// new one.
const REUSE_WAIT: Duration = Duration::from_secs(1);

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The host name (or IP literal) as the client named it: the TLS server name.
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// Whether to speak TLS to the upstream.
    pub tls: bool,
}

/// The upstream connection a client connection keeps.
#[derive(Default)]
pub(crate) struct Pool(tokio::sync::Mutex<Option<Kept>>);

pub(crate) struct Kept {
    target: Target,
    addrs: Vec<SocketAddr>,
    sender: SendRequest<Body>,
}

/// Send `req` (origin-form or absolute-form; rewritten to origin-form) to `target` and return
/// the response head with its streaming body.
pub(crate) async fn forward(
    gw: &Gateway,
    req: Request<Body>,
    allowed: &Allowed,
    target: &Target,
    pool: &Pool,
) -> Result<Response<Incoming>, Blocked> {
    let (mut parts, body) = req.into_parts();
    if !parts.headers.contains_key(HOST)
        && let Some(auth) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(auth.as_str())
    {
        parts.headers.insert(HOST, v);
    }
    let origin = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .to_string();
    parts.uri = origin
        .parse::<Uri>()
        .map_err(|_| Blocked::policy("bad request path"))?;
    strip_hop_by_hop(&mut parts.headers);
    parts.version = http::Version::HTTP_11;
    let mut req = Request::from_parts(parts, body);

    let kept = pool.0.lock().await.take();
    if let Some(mut kept) =
        kept.filter(|k| k.target == *target && k.addrs == allowed.addrs && !k.sender.is_closed())
        && matches!(
            tokio::time::timeout(REUSE_WAIT, kept.sender.ready()).await,
            Ok(Ok(()))
        )
    {
        match kept.sender.try_send_request(req).await {
            Ok(resp) => {
                *pool.0.lock().await = Some(kept);
                return Ok(resp);
            }
            // Not sent (the connection went away meanwhile): send it on a new one.
            Err(mut e) => match e.take_message() {
                Some(r) => req = r,
                None => {
                    return Err(Blocked::upstream(format!(
                        "upstream request: {}",
                        e.into_error()
                    )));
                }
            },
        }
    }
    let mut sender = open(gw, allowed, target).await?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Blocked::upstream(format!("upstream request: {e}")))?;
    *pool.0.lock().await = Some(Kept {
        target: target.clone(),
        addrs: allowed.addrs.clone(),
        sender,
    });
    Ok(resp)
}

/// A new upstream connection.
async fn open(
    gw: &Gateway,
    allowed: &Allowed,
    target: &Target,
) -> Result<SendRequest<Body>, Blocked> {
    let tcp = gw
        .connect(&allowed.addrs)
        .await
        .map_err(|e| Blocked::upstream(format!("upstream connect: {e}")))?;
    if target.tls {
        let tls = gw.tls_connect(&target.host, tcp).await?;
        handshake(tls).await
    } else {
        handshake(tcp).await
    }
}

async fn handshake<S>(io: S) -> Result<SendRequest<Body>, Blocked>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Blocked::upstream(format!("upstream handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection");
        }
    });
    Ok(sender)
}

/// Remove hop-by-hop headers (the fixed list and those named in `Connection`).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}
