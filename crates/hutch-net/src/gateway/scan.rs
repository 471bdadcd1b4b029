//! What the gateway does to a request it can read before forwarding it: DLP on the URL, every
//! header and the (bounded, uncompressed) body, and credential injection.
//!
//! A sandbox's injected credentials (real values and placeholders) may appear in one place
//! only: the injected header of a request the injection matches, whose content is replaced
//! anyway. Anywhere else, or in a request to any other destination, they are exfiltration.

use super::http::Body;
use super::{Blocked, Gateway};
use crate::dlp::{Action, Finding};
use crate::policy::{Injection, Injections};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

/// Scan `req` (to `host`, lower case, with `path`) and inject `inj`'s matching credentials,
/// which needs `tls` (the request goes upstream over TLS). With neither a DLP scanner nor
/// injections the body streams through untouched.
pub(crate) async fn scan(
    gw: &Gateway,
    req: Request<Incoming>,
    inj: Option<&Injections>,
    host: &str,
    path: &str,
    tls: bool,
) -> Result<Request<Body>, Blocked> {
    let global = gw.scanner();
    if global.is_none() && inj.is_none() {
        return Ok(req.map(|b| b.boxed()));
    }
    let matching: Vec<&Injection> = inj
        .map(|i| i.list.iter().filter(|x| x.matches(host, path)).collect())
        .unwrap_or_default();
    // Injected over plain HTTP, the real secret would cross the network in clear text, to
    // whoever answers for the name. Fail closed: refuse the request (forwarding it without
    // the credential would only hide why it fails).
    if !tls && let Some(m) = matching.first() {
        return Err(Blocked::policy(format!(
            "the credential for {} is only sent over HTTPS (never injected over plain HTTP)",
            m.secret
        )));
    }
    let max_body = gw.max_scan_body();
    let (mut parts, body) = req.into_parts();
    let check = |data: &[u8], place: &str| -> Result<(), Blocked> {
        if let Some(g) = &global {
            dlp_verdict(g.scan_decoding(data), place)?;
        }
        if let Some(i) = inj {
            injected_verdict(i.scanner.scan_decoding(data), place)?;
        }
        Ok(())
    };
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    check(target.as_bytes(), "the URL")?;
    for (name, value) in &parts.headers {
        // Replaced below: nothing the sandbox put there leaves.
        if matching.iter().any(|m| m.header == name) {
            continue;
        }
        check(value.as_bytes(), &format!("header {name}"))?;
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
    if let Some(g) = &global {
        crate::gitgate::check(g, &parts, &body)?;
    }
    if let Some(i) = inj {
        crate::gitgate::check(&i.scanner, &parts, &body)?;
    }
    check(&body, "the body")?;
    let mut done: Vec<&http::HeaderName> = Vec::new();
    for m in matching {
        if done.contains(&&m.header) {
            continue; // the first matching injection for a header wins
        }
        let value = HeaderValue::from_str(&m.value).map_err(|_| {
            Blocked::policy(format!("credential {} is not a header value", m.secret))
        })?;
        parts.headers.insert(m.header.clone(), value);
        done.push(&m.header);
    }
    Ok(Request::from_parts(
        parts,
        Full::new(body).map_err(|never| match never {}).boxed(),
    ))
}

fn dlp_verdict(findings: Vec<Finding>, place: &str) -> Result<(), Blocked> {
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
}

fn injected_verdict(findings: Vec<Finding>, place: &str) -> Result<(), Blocked> {
    let Some(f) = findings.first() else {
        return Ok(());
    };
    let name = f.rule_id.strip_prefix("secret:").unwrap_or(&f.rule_id);
    tracing::warn!(
        secret = name,
        place,
        "injected credential outside its injection"
    );
    Err(Blocked::policy(format!(
        "{place} carries the secret {name}, which only the gateway may send, and only to its \
         own destination (exfiltration)"
    )))
}
