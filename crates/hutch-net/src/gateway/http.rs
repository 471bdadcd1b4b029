//! HTTP on the gateway: transparent `:80` (Host header), the proxy port (absolute-form and
//! CONNECT) and intercepted TLS (Host = SNI). Every request on a connection is checked against
//! the policy of the moment, so a keep-alive connection cannot carry a later request past a
//! policy change or to another host.

use super::egress::Pending;
use super::intercept::{self, Mode};
use super::upstream::{self, Pool, Target, strip_hop_by_hop};
use super::{
    Allowed, BLOCK_HEADER, Blocked, EgressKind, EgressRecord, Gateway, internal, is_internal, scan,
    sni, splice,
};
use crate::policy::Host;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Bodies the gateway sends and forwards.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// How a client connection reached the gateway.
#[derive(Debug, Clone)]
pub(crate) enum Via {
    /// The transparent plain-HTTP listener standing for destination `port`.
    Http {
        /// The destination port.
        port: u16,
    },
    /// The proxy port.
    Proxy,
    /// Intercepted TLS to `host:port` (the SNI, already checked).
    Tls {
        /// The TLS server name, lower case.
        host: String,
        /// The destination port.
        port: u16,
    },
}

impl Via {
    fn kind(&self) -> EgressKind {
        match self {
            Via::Tls { .. } => EgressKind::Https,
            _ => EgressKind::Http,
        }
    }
}

/// Serve one client connection.
pub(crate) async fn serve_conn<S>(gw: Arc<Gateway>, stream: S, peer: SocketAddr, via: Via)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = gw.client_timeout();
    let pool = Arc::new(Pool::default());
    let svc = service_fn(move |req| {
        let gw = gw.clone();
        let via = via.clone();
        let pool = pool.clone();
        async move { Ok::<_, Infallible>(handle(gw, req, peer, &via, &pool).await) }
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
    via: &Via,
    pool: &Pool,
) -> Response<Body> {
    let method = req.method().as_str().to_string();
    // The path only, never the query string (it may carry secrets).
    let path = req.uri().path().to_string();
    if req.method() == Method::CONNECT {
        if !matches!(via, Via::Proxy) {
            let b = Blocked::policy("CONNECT is only served on the proxy port");
            let host = req.uri().host().unwrap_or("");
            let port = req.uri().port_u16().unwrap_or(0);
            let rec = gw.record_for(None, EgressKind::Connect, None, host, port, None);
            gw.record_blocked(peer.ip(), rec, &b);
            return blocked(&b);
        }
        return connect(gw, req, peer).await;
    }
    let kind = via.kind();
    let (host, port) = match destination(&req, via) {
        Ok(d) => d,
        Err(b) => {
            tracing::info!(%peer, method = %req.method(), reason = %gw.shown(&b.reason), "http blocked");
            // What the request named, as far as it can be told.
            let (hint, port) = match via {
                Via::Tls { host, port } => (host.as_str(), *port),
                _ => (
                    req.uri()
                        .host()
                        .or_else(|| req.headers().get(HOST).and_then(|v| v.to_str().ok()))
                        .unwrap_or(""),
                    0,
                ),
            };
            let rec = gw.record_for(None, kind, Some(&method), hint, port, Some(&path));
            gw.record_blocked(peer.ip(), rec, &b);
            return blocked(&b);
        }
    };
    let inj = gw
        .store()
        .sandbox_for(peer.ip())
        .and_then(|sb| gw.store().injections(&sb));
    let inj = inj.as_deref();
    if echoes_request(req.method()) {
        // TRACE answers with the request as the upstream got it: injected credentials
        // included, handed to the sandbox. No destination needs it.
        let b = Blocked::policy(format!(
            "method {method} is refused: it echoes the request (and any injected credential) back"
        ));
        let rec = gw.record_for(inj, kind, Some(&method), &host, port, Some(&path));
        tracing::info!(%peer, method, host = %rec.host, port, reason = %b.reason, "http blocked");
        if !is_internal(&host) {
            // hutch.internal traffic is no egress: never recorded.
            gw.record_blocked(peer.ip(), rec, &b);
        }
        return blocked(&b);
    }
    if is_internal(&host) && !matches!(via, Via::Tls { .. }) {
        return internal::serve(&gw, req, peer, port).await;
    }
    let rec = gw.record_for(inj, kind, Some(&method), &host, port, Some(&path));
    let (shown_host, shown_path) = (rec.host.clone(), rec.path.clone().unwrap_or_default());
    let allowed = match gw
        .authorize(peer.ip(), &host, port, Some(&method), Some(&path))
        .await
    {
        Ok(a) => a,
        Err(b) => {
            tracing::info!(%peer, method, host = %shown_host, port, path = %shown_path, reason = %gw.shown(&b.reason), "http blocked");
            gw.record_blocked(peer.ip(), rec, &b);
            return blocked(&b);
        }
    };
    let tls = matches!(via, Via::Tls { .. });
    let req = match scan::scan(&gw, req, inj, &host, &path, tls).await {
        Ok(r) => r,
        Err(b) => {
            tracing::info!(sandbox = %allowed.sandbox, method, host = %shown_host, port, path = %shown_path, reason = %gw.shown(&b.reason), "http blocked by dlp");
            gw.record_blocked(peer.ip(), rec, &b);
            return blocked(&b);
        }
    };
    tracing::info!(sandbox = %allowed.sandbox, method, host = %shown_host, port, path = %shown_path, rule = %allowed.rule, https = matches!(via, Via::Tls { .. }), "http allowed");
    let target = Target {
        host: host.clone(),
        port,
        tls: matches!(via, Via::Tls { .. }),
    };
    exchange(&gw, req, &allowed, target, pool, rec).await
}

/// Forward an allowed, scanned request and stream the answer back, recording it when the
/// response body ends.
async fn exchange(
    gw: &Gateway,
    req: Request<Body>,
    allowed: &Allowed,
    target: Target,
    pool: &Pool,
    mut rec: EgressRecord,
) -> Response<Body> {
    rec.sandbox = allowed.sandbox.clone();
    rec.allowed = true;
    rec.rule = Some(allowed.rule.clone());
    let shown_host = rec.host.clone();
    let pending = gw.sink().map(|sink| Pending::new(sink.clone(), rec));
    let req = match &pending {
        Some(p) => {
            let sent = p.sent.clone();
            req.map(|b| {
                b.map_frame(move |f| {
                    if let Some(d) = f.data_ref() {
                        sent.fetch_add(d.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    f
                })
                .boxed()
            })
        }
        None => req,
    };
    match upstream::forward(gw, req, allowed, &target, pool).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let body = match pending {
                Some(mut p) => {
                    p.set_status(parts.status.as_u16());
                    body.map_frame(move |f| {
                        if let Some(d) = f.data_ref() {
                            p.count_received(d.len());
                        }
                        f
                    })
                    .boxed()
                }
                None => body.boxed(),
            };
            Response::from_parts(parts, body)
        }
        Err(b) => {
            tracing::info!(sandbox = %allowed.sandbox, host = %shown_host, reason = %gw.shown(&b.reason), "upstream failed");
            if let Some(mut p) = pending {
                p.set_status(b.status);
                p.set_reason(gw.shown(&b.reason));
            }
            blocked(&b)
        }
    }
}

/// Whether `method` is TRACE or TRACK (any case: some servers read methods case-insensitively).
fn echoes_request(method: &Method) -> bool {
    let m = method.as_str();
    m.eq_ignore_ascii_case("TRACE") || m.eq_ignore_ascii_case("TRACK")
}

/// Host and port a request is for, with the name checks.
fn destination(req: &Request<Incoming>, via: &Via) -> Result<(String, u16), Blocked> {
    let transparent_port = match via {
        Via::Http { port } => Some(*port),
        Via::Proxy => None,
        Via::Tls { host, port } => return tls_destination(req, host, *port),
    };
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

/// Inside intercepted TLS: origin-form only, and the Host header must name the SNI (and port).
fn tls_destination(
    req: &Request<Incoming>,
    host: &str,
    port: u16,
) -> Result<(String, u16), Blocked> {
    if req.uri().authority().is_some() {
        return Err(Blocked::policy("absolute-form request inside TLS"));
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    let (Some(h), None) = (hosts.next(), hosts.next()) else {
        return Err(Blocked::policy(
            "an HTTPS request needs exactly one Host header",
        ));
    };
    let h = h
        .to_str()
        .map_err(|_| Blocked::policy("Host header is not ASCII"))?;
    if !same_authority(h, host, port, 443) {
        return Err(Blocked::policy(
            "Host header does not match the TLS server name (SNI)",
        ));
    }
    Ok((host.to_string(), port))
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

/// CONNECT: check the target, answer 200, then require a TLS ClientHello whose SNI is the
/// CONNECT host, and intercept or splice it (an IP-literal target allowed by a CIDR rule is
/// spliced as is).
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
    let name = match Host::parse(&host) {
        Ok(Host::Name(n)) => Some(n),
        _ => None,
    };
    let mode = match &name {
        Some(n) => gw.tls_mode_for(peer.ip(), n),
        None => Mode::Passthrough,
    };
    let rec = gw.record_for(None, EgressKind::Connect, None, &host, port, None);
    let verdict = if is_internal(&host) {
        Err(Blocked::policy(
            "hutch.internal is served over plain HTTP only",
        ))
    } else {
        match &mode {
            Mode::Refuse(reason) => Err(Blocked::policy(reason.clone())),
            Mode::Intercept => gw.check_connection(peer.ip(), &host, port),
            Mode::Passthrough => gw.authorize(peer.ip(), &host, port, None, None).await,
        }
    };
    let allowed = match verdict {
        Ok(a) => a,
        Err(b) => {
            tracing::info!(%peer, host = %gw.shown(&host), port, reason = %gw.shown(&b.reason), "connect blocked");
            gw.record_blocked(peer.ip(), rec, &b);
            return blocked(&b);
        }
    };
    tracing::info!(sandbox = %allowed.sandbox, host = %gw.shown(&host), port, rule = %allowed.rule, intercepted = (mode == Mode::Intercept), "connect allowed");
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
                    gw.record_blocked(
                        peer.ip(),
                        rec,
                        &Blocked::policy("a CONNECT tunnel to a name must carry TLS"),
                    );
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
                gw.record_blocked(
                    peer.ip(),
                    rec,
                    &Blocked::policy("the TLS SNI does not match the CONNECT host"),
                );
                return;
            }
            if mode == Mode::Intercept {
                intercept::intercept(gw, client, bytes, peer, name, port).await;
                return;
            }
            first = bytes;
        }
        splice(&gw, client, &allowed, &first, rec).await;
    });
    Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    )
}

/// A plain-text answer from the gateway itself.
pub(crate) fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The answer to a blocked request.
pub(crate) fn blocked(b: &Blocked) -> Response<Body> {
    let text = format!(
        "Blocked by Hutch's egress policy: {}\n\nTo get access, ask for it from inside the sandbox: \
         /.hutch/hutch request-access HOST --reason WHY --wait 300 \
         (or POST http://hutch.internal/v1/access-requests {{\"host\",\"justification\"}}); \
         the operator decides with `hutch approvals`.\n",
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
    if let Some((content_type, body)) = &b.answer {
        *resp.body_mut() = Full::new(body.clone())
            .map_err(|never| match never {})
            .boxed();
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
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

    #[test]
    fn trace_and_track_echo() {
        for m in ["TRACE", "TRACK", "trace", "Track"] {
            assert!(
                echoes_request(&Method::from_bytes(m.as_bytes()).expect("method")),
                "{m}"
            );
        }
        for m in ["GET", "POST", "OPTIONS", "TRACES"] {
            assert!(
                !echoes_request(&Method::from_bytes(m.as_bytes()).expect("method")),
                "{m}"
            );
        }
    }
}
