//! Token authentication for every guest route.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;

use crate::error::GuestError;
use crate::state::GuestState;

/// Middleware: reject requests without the guest token (`x-hutch-token` or bearer).
pub async fn require_token(State(state): State<GuestState>, req: Request, next: Next) -> Response {
    match presented_token(req.headers()) {
        Some(t) if constant_time_eq(t.as_bytes(), state.config().token.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => GuestError::Unauthorized("invalid token".into()).into_response(),
        None => GuestError::Unauthorized("missing token".into()).into_response(),
    }
}

/// The token a request presents, if any.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(hutch_api::GUEST_TOKEN_HEADER) {
        return v.to_str().ok();
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compare two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= u64::from(x ^ y);
    }
    diff == 0 && !b.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer() {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(presented_token(&h), Some("tok"));
        h.insert(hutch_api::GUEST_TOKEN_HEADER, "other".parse().unwrap());
        assert_eq!(presented_token(&h), Some("other"));
    }
}
