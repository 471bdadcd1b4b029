//! DLP on requests the gateway can read: the URL, every header and the (bounded,
//! uncompressed) body.

use super::http::Body;
use super::{Blocked, Gateway};
use crate::dlp::{Action, Finding};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

/// DLP: scan the URL, every header and the (bounded, uncompressed) body. Without a scanner
/// the body streams through untouched.
pub(crate) async fn scan(gw: &Gateway, req: Request<Incoming>) -> Result<Request<Body>, Blocked> {
    let Some(scanner) = gw.scanner() else {
        return Ok(req.map(|b| b.boxed()));
    };
    let scanner = &*scanner;
    let max_body = gw.max_scan_body();
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
    crate::gitgate::check(scanner, &parts, &body)?;
    verdict(scanner.scan_decoding(&body), "the body")?;
    Ok(Request::from_parts(
        parts,
        Full::new(body).map_err(|never| match never {}).boxed(),
    ))
}

