//! Extractors whose rejections use the error envelope: [`ApiJson`] and [`ApiQuery`].

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// Largest JSON body accepted (1 MiB).
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// A JSON body: bad JSON → 400, a field that does not fit → 422 with `details.field`, more than
/// [`MAX_JSON_BYTES`] → 413.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_limited(req.into_body(), MAX_JSON_BYTES).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Reads a whole body of at most `limit` bytes (413 beyond).
pub async fn read_limited(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, AppError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            AppError::too_large(format!("body larger than {limit} bytes"))
        } else {
            AppError::bad_request("could not read the request body")
        }
    })
}

/// Parses JSON with the envelope's error mapping.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::bad_request("a JSON body is required"));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            let message = e.to_string();
            let field = field_of(&message).unwrap_or("body");
            AppError::invalid(field, strip_position(&message))
        }
        _ => AppError::bad_request(format!("invalid JSON: {}", strip_position(&e.to_string()))),
    })
}

/// The field a serde message names (`unknown field `x``, `missing field `x``).
fn field_of(message: &str) -> Option<&str> {
    for marker in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.split(marker).nth(1) {
            return rest.split('`').next();
        }
    }
    None
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Query parameters: a malformed query → 400 envelope.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded_from_str(query).map(ApiQuery)
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(query: &str) -> Result<T, AppError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| AppError::bad_request("invalid query string"))?,
    )
    .map(|q| q.0)
    .map_err(|e| AppError::bad_request(format!("invalid query: {}", e.body_text())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: u32,
    }

    #[test]
    fn json_errors_map_to_envelope_codes() {
        assert_eq!(parse_json::<T>(b"{").unwrap_err().0.status(), 400);
        assert_eq!(parse_json::<T>(b"").unwrap_err().0.status(), 400);
        let e = parse_json::<T>(b"{\"b\":1}").unwrap_err().0;
        assert_eq!(e.status(), 422);
        assert_eq!(e.details.unwrap()["field"], "b");
        let e = parse_json::<T>(b"{}").unwrap_err().0;
        assert_eq!(e.details.unwrap()["field"], "a");
        assert_eq!(
            parse_json::<T>(b"{\"a\":\"x\"}").unwrap_err().0.status(),
            422
        );
        assert!(parse_json::<T>(b"{\"a\":1}").is_ok());
    }
}
