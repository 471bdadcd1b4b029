//! Preview URLs: `http://{port}-{sandbox id}.{preview_domain}` on the API listener reaches that
//! port inside the sandbox (any method, streamed bodies, WebSocket upgrades).
//!
//! [`route_by_host`] runs before routing: a request whose host is a preview host is never an
//! API request. The sandbox's port is reached through a guest tunnel ([`crate::tunnel`]) and
//! spoken to as HTTP/1.1.
//!
//! Access is per sandbox: token-protected by default, or public. The preview token is derived
//! from the server secret and the sandbox id (HMAC), so it needs no storage and dies with the
//! sandbox; it is accepted as the `X-Hutch-Preview-Token` header, the `hutch_preview_token` query
//! parameter (answered with an `HttpOnly` cookie for that host and a redirect that drops it from
//! the URL) or that cookie. The cookie only counts for requests without an `Origin` or from a
//! preview page of the same sandbox ([`cookie_origin_ok`]). Tokens never reach the sandbox: the
//! header, the parameter and the cookie are stripped, and so are Hutch API keys.
//!
//! Only the request's own host (`Host`, or the authority of an absolute URI) selects a preview:
//! `X-Forwarded-Host` is ignored, because a reverse proxy in front of Hutch can pass `Host`
//! through unchanged and trusting a client-settable header would buy nothing.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use hutch_api::ports::{PREVIEW_TOKEN_COOKIE, PREVIEW_TOKEN_HEADER, PREVIEW_TOKEN_QUERY};
use hutch_api::sandbox::SandboxState;
use hyper_util::rt::TokioIo;

use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::tunnel;

/// The default preview domain: browsers resolve `*.localhost` to the loopback interface.
pub const DEFAULT_DOMAIN: &str = "preview.localhost";

/// Prefix of preview tokens (so they are recognisable in logs and secret scanners).
pub const TOKEN_PREFIX: &str = "hpt_";

/// Request headers never forwarded to a preview (hop-by-hop, or Hutch credentials).
const DROPPED_REQUEST: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "x-api-key",
    PREVIEW_TOKEN_HEADER,
    hutch_api::GUEST_TOKEN_HEADER,
];

/// Response headers never passed back (hop-by-hop).
const DROPPED_RESPONSE: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Lowercases a configured domain and drops surrounding dots and blanks.
pub fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_matches('.').to_ascii_lowercase()
}

/// Whether `domain` is a (normalized) DNS name: dot-separated labels of `[a-z0-9-]`.
pub fn is_valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A port of a sandbox named by a preview host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The port inside the sandbox.
    pub port: u16,
    /// The sandbox.
    pub sandbox_id: String,
}

/// What a request's host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Not under the preview domain: an API request.
    Api,
    /// `{port}-{id}.{domain}`.
    Preview(Target),
    /// Under the preview domain but not a preview host.
    Malformed,
}

/// Classifies a host (with or without `:port`) against the preview domain.
pub fn match_host(host: &str, domain: &str) -> HostMatch {
    let host = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
    let Some(label) = host
        .strip_suffix(domain)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return HostMatch::Api;
    };
    if label.is_empty() || label.contains('.') {
        return HostMatch::Malformed;
    }
    let Some((port, id)) = label.split_once('-') else {
        return HostMatch::Malformed;
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return HostMatch::Malformed,
    };
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return HostMatch::Malformed;
    }
    HostMatch::Preview(Target {
        port,
        sandbox_id: id.to_owned(),
    })
}

/// `host` without a trailing `:port` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The port of a `Host` value, if it names one.
pub fn host_port(host: &str) -> Option<u16> {
    let after = match host.rfind(']') {
        Some(i) => &host[i + 1..],
        None => host,
    };
    after.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// The host a request is addressed to: the URI's authority (absolute form, HTTP/2), else `Host`.
fn request_host(req: &Request) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The preview URL of a port: `{scheme}://{port}-{id}.{domain}[:{api_port}]/`.
pub fn url(scheme: &str, domain: &str, target: &Target, api_port: Option<u16>) -> String {
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = match api_port {
        Some(p) if p != default_port => format!(":{p}"),
        _ => String::new(),
    };
    format!(
        "{scheme}://{}-{}.{domain}{port}/",
        target.port, target.sandbox_id
    )
}

/// The preview token of a sandbox. `None` only if the server secret cannot key an HMAC, in which
/// case no token is valid (fail closed).
pub fn token(state: &AppState, sandbox_id: &str) -> Option<String> {
    let mac = state
        .hasher()
        .hash(&format!("hutch-preview-token-v1:{sandbox_id}"));
    (mac.len() == 64).then(|| format!("{TOKEN_PREFIX}{mac}"))
}

/// Compares two byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The tokens a request presents, by where they came from.
#[derive(Debug, Default)]
struct Presented {
    header: Option<String>,
    query: Option<String>,
    cookies: Vec<String>,
}

impl Presented {
    fn of(headers: &HeaderMap, query: Option<&str>) -> Self {
        let header = headers
            .get(PREVIEW_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned());
        let query = query.and_then(|q| {
            q.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == PREVIEW_TOKEN_QUERY).then(|| v.to_owned())
            })
        });
        let cookies = cookie_pairs(headers)
            .filter(|(k, _)| *k == PREVIEW_TOKEN_COOKIE)
            .map(|(_, v)| v.to_owned())
            .collect();
        Presented {
            header,
            query,
            cookies,
        }
    }

    fn any(&self) -> bool {
        self.header.is_some() || self.query.is_some() || !self.cookies.is_empty()
    }
}

/// `name=value` pairs of every `Cookie` header.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| {
            let c = c.trim();
            (!c.is_empty()).then(|| c.split_once('=').unwrap_or((c, "")))
        })
}

/// How an allowed request got in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// A valid token in the query string (answered with a cookie and a redirect when possible).
    QueryToken,
    /// A valid token in the header or a cookie, or public previews.
    Other,
}

/// Whether the request's `Origin` (if any) may use the preview cookie: absent, or a preview
/// host of the same sandbox.
///
/// Every preview host shares the preview domain, so browsers treat one sandbox's pages as
/// same-site with another's and `SameSite` does not stop them from sending requests (form posts,
/// WebSocket handshakes) that carry the other sandbox's cookie. Requests from other origins
/// need the token itself (header or query) or public previews.
fn cookie_origin_ok(headers: &HeaderMap, domain: &str, sandbox_id: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    matches!(
        host.map(|h| match_host(h, domain)),
        Some(HostMatch::Preview(t)) if t.sandbox_id == sandbox_id
    )
}

/// Decides whether a request may reach the sandbox's previews.
async fn authorize(
    state: &AppState,
    sandbox_id: &str,
    port: u16,
    presented: &Presented,
    cookie_allowed: bool,
) -> AppResult<Grant> {
    let mut foreign_cookie = false;
    if let Some(expected) = token(state, sandbox_id) {
        let ok = |t: &String| constant_time_eq(t.as_bytes(), expected.as_bytes());
        if presented.query.as_ref().is_some_and(ok) {
            return Ok(Grant::QueryToken);
        }
        if presented.header.as_ref().is_some_and(ok) {
            return Ok(Grant::Other);
        }
        if presented.cookies.iter().any(ok) {
            if cookie_allowed {
                return Ok(Grant::Other);
            }
            foreign_cookie = true;
        }
    }
    if state.store().preview_public(sandbox_id).await? {
        return Ok(Grant::Other);
    }
    if foreign_cookie {
        return Err(AppError::forbidden(
            "cross-origin request refused: the preview cookie only works from the sandbox's own \
             preview pages (send the token itself instead)",
        ));
    }
    if presented.any() {
        return Err(AppError::forbidden("invalid preview token"));
    }
    Err(AppError::unauthorized(format!(
        "this preview needs the sandbox's preview token (GET /v1/sandboxes/{sandbox_id}/ports/{port}/preview \
         returns it): send it as the {PREVIEW_TOKEN_HEADER} header or the {PREVIEW_TOKEN_QUERY} query parameter"
    )))
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The query without the token parameter (`None` when nothing is left).
fn query_without_token(query: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = query?
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && key != PREVIEW_TOKEN_QUERY
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

fn path_and_query(uri: &Uri) -> String {
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    match query_without_token(uri.query()) {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    }
}

/// Whether an `Authorization` value carries a Hutch API key.
fn is_api_key_auth(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split_once(' ').is_some_and(|(scheme, cred)| {
            scheme.eq_ignore_ascii_case("bearer")
                && cred.trim().starts_with(crate::auth::KEY_PREFIX)
        })
    })
}

/// The headers sent to the sandbox's port.
fn forward_headers(from: &HeaderMap, upgrade: bool, host: &str) -> HeaderMap {
    // Headers named by `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
    let listed: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "upgrade")
        .collect();
    let mut to = HeaderMap::with_capacity(from.len() + 2);
    for (name, value) in from {
        let n = name.as_str();
        if DROPPED_REQUEST.contains(&n) || listed.iter().any(|l| l == n) || n == "cookie" {
            continue;
        }
        if name == header::AUTHORIZATION && is_api_key_auth(value) {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
    let cookies: Vec<String> = cookie_pairs(from)
        .filter(|(k, _)| *k != PREVIEW_TOKEN_COOKIE)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !cookies.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cookies.join("; "))
    {
        to.insert(header::COOKIE, v);
    }
    if upgrade {
        for name in [header::CONNECTION, header::UPGRADE] {
            for v in from.get_all(&name) {
                to.append(name.clone(), v.clone());
            }
        }
        to.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        to.insert(header::HOST, v.clone());
        to.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
    if !to.contains_key("x-forwarded-proto") {
        to.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("http"),
        );
    }
    to
}

fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap, upgrade: bool) {
    for (name, value) in from {
        let n = name.as_str();
        let upgrade_header = n == "connection" || n == "upgrade";
        if DROPPED_RESPONSE.contains(&n) && !(upgrade && upgrade_header) {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// Middleware: serves requests addressed to a preview host; everything else goes on to the API.
pub async fn route_by_host(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(host) = request_host(&req) else {
        return next.run(req).await;
    };
    match match_host(&host, &state.config().preview_domain) {
        HostMatch::Api => next.run(req).await,
        HostMatch::Malformed => AppError::not_found(format!(
            "no preview at {}: preview hosts look like {{port}}-{{sandbox id}}.{}",
            strip_port(&host),
            state.config().preview_domain
        ))
        .into_response(),
        HostMatch::Preview(target) => match serve(&state, &target, &host, req).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        },
    }
}

/// A redirect to the same URL without the token, setting the token cookie for this host.
fn redirect_with_cookie(uri: &Uri, token: &str, secure: bool) -> AppResult<Response> {
    let location = path_and_query(uri);
    let cookie = format!(
        "{PREVIEW_TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    );
    Response::builder()
        .status(StatusCode::TEMPORARY_REDIRECT)
        .header(header::LOCATION, location)
        .header(header::SET_COOKIE, cookie)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::empty())
        .map_err(|_| AppError::internal("bad redirect"))
}

async fn serve(
    state: &AppState,
    target: &Target,
    host: &str,
    mut req: Request,
) -> AppResult<Response> {
    let id = &target.sandbox_id;
    let port = target.port;
    let Some(sb) = state.store().get_sandbox(id).await? else {
        return Err(AppError::not_found(format!("sandbox {id} not found")));
    };
    let presented = Presented::of(req.headers(), req.uri().query());
    let cookie_allowed = cookie_origin_ok(req.headers(), &state.config().preview_domain, id);
    let grant = authorize(state, id, port, &presented, cookie_allowed).await?;
    let upgrade = is_upgrade(req.headers());
    if grant == Grant::QueryToken
        && !upgrade
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && let Some(t) = presented.query.as_deref()
    {
        let secure = req
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        return redirect_with_cookie(req.uri(), t, secure);
    }
    if sb.state != SandboxState::Running {
        return Err(AppError::unavailable(format!(
            "sandbox {id} is {}",
            sb.state.as_str()
        )));
    }

    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut builder = http::Request::builder()
        .method(parts.method.clone())
        .uri(path_and_query(&parts.uri))
        .version(Version::HTTP_11);
    if let Some(h) = builder.headers_mut() {
        *h = forward_headers(&parts.headers, upgrade, host);
    }
    let app_req = builder
        .body(body)
        .map_err(|_| AppError::bad_request("request cannot be forwarded"))?;

    let upgraded = tunnel::open(state, id, port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(upgraded)
        .await
        .map_err(|e| {
            tracing::debug!(sandbox_id = %id, port, error = %e, "preview handshake failed");
            AppError::unavailable(format!("cannot talk HTTP to port {port} in sandbox {id}"))
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "preview connection ended");
        }
    });
    let mut resp = sender.send_request(app_req).await.map_err(|e| {
        tracing::debug!(sandbox_id = %id, port, error = %e, "preview request failed");
        AppError::unavailable(format!(
            "port {port} in sandbox {id} did not answer with HTTP"
        ))
    })?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(AppError::unavailable(format!(
                "port {port} in sandbox {id} switched protocols unasked"
            )));
        };
        let app_upgrade = hyper::upgrade::on(&mut resp);
        let (sandbox_id, port) = (id.clone(), port);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, app_upgrade) {
                Ok((client, app)) => {
                    let mut client = TokioIo::new(client);
                    let mut app = TokioIo::new(app);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut app).await {
                        tracing::debug!(%sandbox_id, port, error = %e, "preview upgrade ended");
                    }
                }
                Err(e) => tracing::debug!(%sandbox_id, port, error = %e, "preview upgrade failed"),
            }
        });
    }

    let status = resp.status();
    let (parts, incoming) = resp.into_parts();
    let mut out = Response::builder().status(status);
    if let Some(h) = out.headers_mut() {
        copy_response_headers(&parts.headers, h, status == StatusCode::SWITCHING_PROTOCOLS);
    }
    let body = if status == StatusCode::SWITCHING_PROTOCOLS {
        Body::empty()
    } else {
        Body::new(incoming)
    };
    out.body(body)
        .map_err(|_| AppError::internal("bad preview response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "preview.localhost";

    fn preview(port: u16, id: &str) -> HostMatch {
        HostMatch::Preview(Target {
            port,
            sandbox_id: id.to_owned(),
        })
    }

    #[test]
    fn hosts() {
        assert_eq!(
            match_host("8000-sb-abc123.preview.localhost", D),
            preview(8000, "sb-abc123")
        );
        assert_eq!(
            match_host("8000-SB-ABC.Preview.Localhost.:7070", D),
            preview(8000, "sb-abc")
        );
        assert_eq!(match_host("127.0.0.1:7070", D), HostMatch::Api);
        assert_eq!(match_host("preview.localhost", D), HostMatch::Api);
        assert_eq!(match_host("xpreview.localhost", D), HostMatch::Api);
        assert_eq!(match_host("[::1]:7070", D), HostMatch::Api);
        for bad in [
            "a.8000-sb-x.preview.localhost",
            "sb-x.preview.localhost",
            "0-sb-x.preview.localhost",
            "70000-sb-x.preview.localhost",
            "+80-sb-x.preview.localhost",
            "8000-.preview.localhost",
            "8000-sb_x.preview.localhost",
            ".preview.localhost",
        ] {
            assert_eq!(match_host(bad, D), HostMatch::Malformed, "{bad}");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(
            normalize_domain(" Preview.Example.COM. "),
            "preview.example.com"
        );
        assert!(is_valid_domain("preview.localhost"));
        assert!(is_valid_domain("localhost"));
        for bad in ["", "a..b", "-a.b", "a_b.c", "a b", "a.b:80"] {
            assert!(!is_valid_domain(bad), "{bad}");
        }
    }

    #[test]
    fn urls_and_ports() {
        let t = Target {
            port: 8000,
            sandbox_id: "sb-x".into(),
        };
        assert_eq!(
            url("http", D, &t, Some(7070)),
            "http://8000-sb-x.preview.localhost:7070/"
        );
        assert_eq!(
            url("http", D, &t, Some(80)),
            "http://8000-sb-x.preview.localhost/"
        );
        assert_eq!(
            url("https", D, &t, None),
            "https://8000-sb-x.preview.localhost/"
        );
        assert_eq!(host_port("127.0.0.1:7070"), Some(7070));
        assert_eq!(host_port("[::1]:9"), Some(9));
        assert_eq!(host_port("[::1]"), None);
        assert_eq!(host_port("example.com"), None);
    }

    #[test]
    fn token_is_stripped_from_queries() {
        assert_eq!(query_without_token(Some("hutch_preview_token=x")), None);
        assert_eq!(
            query_without_token(Some("a=1&hutch_preview_token=x&b")).as_deref(),
            Some("a=1&b")
        );
        let uri: Uri = "/p/q?hutch_preview_token=t&z=2".parse().unwrap();
        assert_eq!(path_and_query(&uri), "/p/q?z=2");
    }

    #[test]
    fn credentials_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer hk_secret".parse().unwrap());
        h.insert("x-api-key", "hk_secret".parse().unwrap());
        h.insert(PREVIEW_TOKEN_HEADER, "hpt_x".parse().unwrap());
        h.append(
            header::COOKIE,
            "a=1; hutch_preview_token=hpt_x".parse().unwrap(),
        );
        h.append(header::COOKIE, "b=2".parse().unwrap());
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("accept", "text/html".parse().unwrap());
        let out = forward_headers(&h, false, "8000-sb-x.preview.localhost:7070");
        assert!(out.get(header::AUTHORIZATION).is_none());
        assert!(out.get("x-api-key").is_none());
        assert!(out.get(PREVIEW_TOKEN_HEADER).is_none());
        assert!(out.get("x-private").is_none());
        assert!(out.get(header::CONNECTION).is_none());
        assert_eq!(out.get(header::COOKIE).unwrap(), "a=1; b=2");
        assert_eq!(out.get("accept").unwrap(), "text/html");
        assert_eq!(
            out.get(header::HOST).unwrap(),
            "8000-sb-x.preview.localhost:7070"
        );
        // An app's own credentials pass.
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic dTpw".parse().unwrap());
        let out = forward_headers(&h, false, "h");
        assert_eq!(out.get(header::AUTHORIZATION).unwrap(), "Basic dTpw");
    }

    #[test]
    fn cookie_origins() {
        let with = |o: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, o.parse().unwrap());
            h
        };
        assert!(cookie_origin_ok(&HeaderMap::new(), D, "sb-a"));
        assert!(cookie_origin_ok(
            &with("http://3000-sb-a.preview.localhost:7070"),
            D,
            "sb-a"
        ));
        for bad in [
            "http://3000-sb-b.preview.localhost:7070",
            "https://evil.example",
            "null",
            "http://preview.localhost",
        ] {
            assert!(!cookie_origin_ok(&with(bad), D, "sb-a"), "{bad}");
        }
    }

    #[test]
    fn presented_tokens() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "hutch_preview_token=a; hutch_preview_token=b"
                .parse()
                .unwrap(),
        );
        let p = Presented::of(&h, Some("x=1&hutch_preview_token=q"));
        assert_eq!(p.cookies, vec!["a", "b"]);
        assert_eq!(p.query.as_deref(), Some("q"));
        assert!(p.header.is_none());
        assert!(p.any());
        assert!(!Presented::of(&HeaderMap::new(), Some("a=b")).any());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
