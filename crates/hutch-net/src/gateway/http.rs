//! HTTP on the gateway: transparent `:80` (Host header) and the proxy port (absolute-form and
//! CONNECT). Every request on a connection is checked against the policy of the moment, so a
//! keep-alive connection cannot carry a later request past a policy change or to another host.

use super::{Allowed, BLOCK_HEADER, Blocked, Gateway, sni, splice};
use crate::dlp::{Action, Finding};
use crate::policy::Host;
use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

type Body = BoxBody<Bytes, hyper::Error>;

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

/// Serve one client connection. `transparent_port` is `Some(port)` on a transparent listener,
/// `None` on the proxy port.
pub(crate) async fn serve_conn(
    gw: Arc<Gateway>,
    stream: TcpStream,
    peer: SocketAddr,
    transparent_port: Option<u16>,
) {
    let timeout = gw.client_timeout();
    let svc = service_fn(move |req| {
        let gw = gw.clone();
        async move { Ok::<_, Infallible>(handle(gw, req, peer, transparent_port).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "gateway http connection");
    }
}

async fn handle(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
    peer: SocketAddr,
    transparent_port: Option<u16>,
) -> Response<Body> {
    if req.method() == Method::CONNECT {
        if transparent_port.is_some() {
            return blocked(&Blocked::policy("CONNECT is only served on the proxy port"));
        }
        return connect(gw, req, peer).await;
    }
    let (host, port) = match destination(&req, transparent_port) {
        Ok(d) => d,
        Err(b) => {
            tracing::info!(%peer, method = %req.method(), reason = %gw.shown(&b.reason), "http blocked");
            return blocked(&b);
        }
    };
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let allowed = match gw
        .authorize(peer.ip(), &host, port, Some(&method), Some(&path))
        .await
    {
        Ok(a) => a,
        Err(b) => {
            // The path only, never the query string (it may carry secrets).
            tracing::info!(%peer, method, host = %gw.shown(&host), port, path = %gw.shown(&path), reason = %gw.shown(&b.reason), "http blocked");
            return blocked(&b);
        }
    };
    let req = match scan(&gw, req).await {
        Ok(r) => r,
        Err(b) => {
            tracing::info!(sandbox = %allowed.sandbox, method, host = %gw.shown(&host), port, path = %gw.shown(&path), reason = %gw.shown(&b.reason), "http blocked by dlp");
            return blocked(&b);
        }
    };
    tracing::info!(sandbox = %allowed.sandbox, method, host = %gw.shown(&host), port, path = %gw.shown(&path), rule = %allowed.rule, "http allowed");
    match forward(&gw, req, &allowed).await {
        Ok(resp) => resp,
        Err(b) => {
            tracing::info!(sandbox = %allowed.sandbox, host = %gw.shown(&host), reason = %gw.shown(&b.reason), "upstream failed");
            blocked(&b)
        }
    }
}

/// Host and port a request is for, with the name checks.
fn destination(
    req: &Request<Incoming>,
    transparent_port: Option<u16>,
) -> Result<(String, u16), Blocked> {
    let host_header = match req
        .headers()
        .get_all(HOST)
        .iter()
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => None,
        [one] => Some(
            one.to_str()
                .map_err(|_| Blocked::policy("Host header is not ASCII"))?
                .to_string(),
        ),
        _ => return Err(Blocked::policy("several Host headers")),
    };
    match req.uri().authority() {
        Some(auth) => {
            // Absolute-form (proxy requests).
            if transparent_port.is_some() {
                return Err(Blocked::policy(
                    "absolute-form request on a transparent listener",
                ));
            }
            if req.uri().scheme_str() != Some("http") {
                return Err(Blocked::policy(
                    "only http:// URLs are proxied; use CONNECT for https",
                ));
            }
            let port = auth.port_u16().unwrap_or(80);
            let host = auth
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            match &host_header {
                Some(h) if same_authority(h, &host, port, 80) => Ok((host, port)),
                Some(_) => Err(Blocked::policy(
                    "Host header does not match the request URL",
                )),
                None => Ok((host, port)),
            }
        }
        None => {
            let h = host_header.ok_or_else(|| Blocked::policy("missing Host header"))?;
            let (host, hport) =
                split_host_port(&h).ok_or_else(|| Blocked::policy("malformed Host header"))?;
            match transparent_port {
                Some(port) if hport.is_some_and(|p| p != port) => Err(Blocked::policy(format!(
                    "Host header names port {} on the port {port} listener",
                    hport.unwrap_or(0)
                ))),
                Some(port) => Ok((host, port)),
                None => Ok((host, hport.unwrap_or(80))),
            }
        }
    }
}

/// `host[:port]` or `[v6][:port]`.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((h.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), Some(p.parse().ok()?))),
        None => Some((s.to_string(), None)),
    }
}

fn same_authority(header: &str, host: &str, port: u16, default_port: u16) -> bool {
    match split_host_port(header) {
        Some((h, p)) => {
            h.trim_end_matches('.')
                .eq_ignore_ascii_case(host.trim_end_matches('.'))
                && p.unwrap_or(default_port) == port
        }
        None => false,
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

/// DLP: scan the URL, every header and the (bounded, uncompressed) body. Without a scanner
/// the body streams through untouched.
async fn scan(gw: &Gateway, req: Request<Incoming>) -> Result<Request<Body>, Blocked> {
    let Some((scanner, max_body)) = gw.dlp() else {
        return Ok(req.map(|b| b.boxed()));
    };
    let (parts, body) = req.into_parts();
    let verdict = |findings: Vec<Finding>, place: &str| -> Result<(), Blocked> {
        for f in &findings {
            tracing::warn!(rule = %f.rule_id, action = ?f.action, place, "dlp finding");
        }
        match findings.iter().find(|f| f.action == Action::Block) {
            Some(f) => Err(Blocked::policy(format!(
                "{place} carries a secret (DLP rule {})",
                f.rule_id
            ))),
            None => Ok(()),
        }
    };
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    verdict(scanner.scan_decoding(target.as_bytes()), "the URL")?;
    for (name, value) in &parts.headers {
        verdict(
            scanner.scan_decoding(value.as_bytes()),
            &format!("header {name}"),
        )?;
    }
    let encoded = parts
        .headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(Blocked::policy(
            "compressed request bodies cannot be scanned for secrets",
        ));
    }
    let body = http_body_util::Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|_| {
            Blocked::policy(format!(
                "request body over {max_body} bytes cannot be scanned for secrets"
            ))
        })?
        .to_bytes();
    verdict(scanner.scan_decoding(&body), "the body")?;
    Ok(Request::from_parts(
        parts,
        Full::new(body).map_err(|never| match never {}).boxed(),
    ))
}

/// Send the request upstream on a fresh connection and stream the response back.
async fn forward(
    gw: &Gateway,
    req: Request<Body>,
    allowed: &Allowed,
) -> Result<Response<Body>, Blocked> {
    let upstream = gw
        .connect(&allowed.addrs)
        .await
        .map_err(|e| Blocked::upstream(format!("upstream connect: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(upstream))
        .await
        .map_err(|e| Blocked::upstream(format!("upstream handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection");
        }
    });
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
    let resp = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| Blocked::upstream(format!("upstream request: {e}")))?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed()))
}

/// CONNECT: check the target, answer 200, then require a TLS ClientHello whose SNI is the
/// CONNECT host (an IP-literal target allowed by a CIDR rule is spliced as is).
async fn connect(gw: Arc<Gateway>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let Some(auth) = req.uri().authority().cloned() else {
        return blocked(&Blocked::policy("CONNECT needs host:port"));
    };
    let Some(port) = auth.port_u16() else {
        return blocked(&Blocked::policy("CONNECT needs host:port"));
    };
    let host = auth
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let allowed = match gw.authorize(peer.ip(), &host, port, None, None).await {
        Ok(a) => a,
        Err(b) => {
            tracing::info!(%peer, host = %gw.shown(&host), port, reason = %gw.shown(&b.reason), "connect blocked");
            return blocked(&b);
        }
    };
    let name = match Host::parse(&host) {
        Ok(Host::Name(n)) => Some(n),
        _ => None,
    };
    tracing::info!(sandbox = %allowed.sandbox, host = %gw.shown(&host), port, rule = %allowed.rule, "connect allowed");
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "connect upgrade");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        let mut first = Vec::new();
        if let Some(name) = name {
            let (bytes, hello) = match sni::read_client_hello(&mut client, gw.client_timeout())
                .await
            {
                Ok(x) => x,
                Err(e) => {
                    tracing::info!(sandbox = %allowed.sandbox, host = %gw.shown(&name), error = %e, "connect tunnel blocked: not TLS");
                    return;
                }
            };
            let sni_ok = hello
                .sni
                .as_deref()
                .is_some_and(|s| s.trim_end_matches('.').eq_ignore_ascii_case(&name));
            if hello.ech || !sni_ok {
                tracing::info!(sandbox = %allowed.sandbox, host = %gw.shown(&name), sni = %gw.shown(hello.sni.as_deref().unwrap_or("")), ech = hello.ech,
                    "connect tunnel blocked: SNI does not match the CONNECT host");
                return;
            }
            first = bytes;
        }
        splice(&gw, client, &allowed, &first).await;
    });
    Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    )
}

/// The answer to a blocked request.
fn blocked(b: &Blocked) -> Response<Body> {
    let text = format!(
        "Blocked by Hutch's egress policy: {}\n\nTo get access, ask the sandbox's operator to add a rule to its \
         network policy (or request approval: hutch approvals).\n",
        b.reason
    );
    let mut resp = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::from_u16(b.status).unwrap_or(StatusCode::FORBIDDEN);
    let clean: String = b
        .reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(300)
        .collect();
    resp.headers_mut().insert(
        BLOCK_HEADER,
        HeaderValue::from_str(&clean).unwrap_or(HeaderValue::from_static("blocked")),
    );
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("a.com"), Some(("a.com".into(), None)));
        assert_eq!(
            split_host_port("a.com:8080"),
            Some(("a.com".into(), Some(8080)))
        );
        assert_eq!(split_host_port("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(split_host_port("[::1]"), Some(("::1".into(), None)));
        assert_eq!(split_host_port("a.com:x"), None);
        assert!(same_authority("A.com", "a.com", 80, 80));
        assert!(same_authority("a.com:80", "a.com", 80, 80));
        assert!(!same_authority("a.com:81", "a.com", 80, 80));
        assert!(!same_authority("b.com", "a.com", 80, 80));
    }
}
