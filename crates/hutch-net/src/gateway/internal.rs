//! `hutch.internal`: a name every sandbox can reach over plain HTTP (`:80` or the proxy port),
//! served by the control plane instead of the internet. No policy or DLP applies: it never
//! leaves the host.

use super::http::{Body, blocked, plain};
use super::upstream::strip_hop_by_hop;
use super::{Blocked, Gateway};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

/// The host name sandboxes use to reach the control plane.
pub const INTERNAL_HOST: &str = "hutch.internal";

/// Largest request body passed to the [`InternalService`].
pub const INTERNAL_MAX_BODY: usize = 64 * 1024;

/// A boxed response future of an [`InternalService`].
pub type InternalFuture = Pin<Box<dyn Future<Output = http::Response<Bytes>> + Send>>;

/// Serves `http://hutch.internal/...` for sandboxes. Calls may take minutes (long polls): the
/// gateway sets no timeout on them.
pub trait InternalService: Send + Sync {
    /// Answer `req` from `sandbox` (its id, established by the gateway from the peer address).
    fn handle(&self, sandbox: String, req: http::Request<Bytes>) -> InternalFuture;
}

/// Whether `host` (as in a Host header, URL, SNI or DNS query) names `hutch.internal`.
pub fn is_internal(host: &str) -> bool {
    host.trim_end_matches('.')
        .eq_ignore_ascii_case(INTERNAL_HOST)
}

/// Serve a request for `hutch.internal` arriving on port `port` from `peer`.
pub(crate) async fn serve(
    gw: &Gateway,
    req: Request<Incoming>,
    peer: SocketAddr,
    port: u16,
) -> Response<Body> {
    let Some(sandbox) = gw.store().sandbox_for(peer.ip()) else {
        return blocked(&Blocked::policy(
            "connection does not come from a known sandbox",
        ));
    };
    if port != 80 {
        return blocked(&Blocked::policy(format!(
            "{INTERNAL_HOST} is served on port 80 only"
        )));
    }
    let Some(service) = gw.internal() else {
        return plain(
            StatusCode::NOT_FOUND,
            &format!("{INTERNAL_HOST} is not served here"),
        );
    };
    let (mut parts, body) = req.into_parts();
    let body = match Limited::new(body, INTERNAL_MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body over {INTERNAL_MAX_BODY} bytes"),
            );
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    // The service sees origin-form, as if it were the server.
    if let Some(pq) = parts.uri.path_and_query()
        && let Ok(uri) = pq.as_str().parse()
    {
        parts.uri = uri;
    }
    let resp = service
        .handle(sandbox, http::Request::from_parts(parts, body))
        .await;
    resp.map(|b| Full::new(b).map_err(|never| match never {}).boxed())
}
