//! Request extractors that report failures with the error envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::GuestError;

/// Largest accepted JSON request body.
pub const JSON_LIMIT: usize = 1024 * 1024;

/// A JSON body (at most [`JSON_LIMIT`] bytes) decoded into `T`.
#[derive(Debug, Clone, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = GuestError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_limited(req, JSON_LIMIT).await?;
        decode_json(&bytes).map(ApiJson)
    }
}

/// Decode a JSON document, mapping serde errors to 400.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GuestError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| GuestError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Read a whole body, failing with 413 past `limit` bytes.
pub async fn read_limited(req: Request, limit: usize) -> Result<Bytes, GuestError> {
    let too_large = || GuestError::PayloadTooLarge(format!("request body exceeds {limit} bytes"));
    if req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > limit as u64)
    {
        return Err(too_large());
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return too_large();
                }
                source = s.source();
            }
            GuestError::BadRequest(format!("failed to read body: {e}"))
        })
}

/// A query string decoded into `T`, failing with a 400 envelope.
#[derive(Debug, Clone, Default)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = GuestError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded_decode(q).map(ApiQuery)
    }
}

fn serde_urlencoded_decode<T: DeserializeOwned>(q: &str) -> Result<T, GuestError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{q}")
            .parse()
            .map_err(|_| GuestError::BadRequest("invalid query string".into()))?,
    )
    .map(|axum::extract::Query(v)| v)
    .map_err(|e| GuestError::BadRequest(format!("invalid query: {}", e.body_text())))
}
