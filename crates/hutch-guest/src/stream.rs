//! Event streams as NDJSON lines or server-sent events.

use std::convert::Infallible;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::error::GuestError;

/// Wire format of an event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// One JSON document per line (`application/x-ndjson`).
    Ndjson,
    /// Server-sent events (`text/event-stream`).
    Sse,
}

impl StreamFormat {
    /// Pick a format from `?stream=` or the `Accept` header; `None` when neither asks for one.
    pub fn negotiate(headers: &HeaderMap, query: Option<&str>) -> Result<Option<Self>, GuestError> {
        match query.map(str::to_ascii_lowercase).as_deref() {
            Some("ndjson") | Some("jsonl") => return Ok(Some(StreamFormat::Ndjson)),
            Some("sse") => return Ok(Some(StreamFormat::Sse)),
            Some("") | Some("false") | Some("none") | None => {}
            Some(other) => {
                return Err(GuestError::BadRequest(format!(
                    "unknown stream format {other:?} (use ndjson or sse)"
                )));
            }
        }
        let accept = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        if accept.contains("application/x-ndjson") || accept.contains("application/jsonl") {
            Ok(Some(StreamFormat::Ndjson))
        } else if accept.contains("text/event-stream") {
            Ok(Some(StreamFormat::Sse))
        } else {
            Ok(None)
        }
    }

    /// The `Content-Type` of the stream.
    pub fn content_type(self) -> &'static str {
        match self {
            StreamFormat::Ndjson => "application/x-ndjson",
            StreamFormat::Sse => "text/event-stream",
        }
    }

    /// Encode one event; `event` names it for SSE.
    pub fn encode<T: Serialize>(self, event: &str, value: &T) -> Bytes {
        let json = serde_json::to_string(value).unwrap_or_else(|e| {
            serde_json::json!({ "type": "error", "message": e.to_string() }).to_string()
        });
        match self {
            StreamFormat::Ndjson => Bytes::from(format!("{json}\n")),
            StreamFormat::Sse => Bytes::from(format!("event: {event}\ndata: {json}\n\n")),
        }
    }

    /// A streaming 200 response of the encoded events.
    pub fn response<S>(self, events: S) -> Response
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        let body = Body::from_stream(events.map(Ok::<_, Infallible>));
        let mut resp = (StatusCode::OK, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type()),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates() {
        let mut h = HeaderMap::new();
        assert_eq!(StreamFormat::negotiate(&h, None).unwrap(), None);
        assert_eq!(
            StreamFormat::negotiate(&h, Some("sse")).unwrap(),
            Some(StreamFormat::Sse)
        );
        assert!(StreamFormat::negotiate(&h, Some("xml")).is_err());
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/x-ndjson"),
        );
        assert_eq!(
            StreamFormat::negotiate(&h, None).unwrap(),
            Some(StreamFormat::Ndjson)
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        assert_eq!(
            StreamFormat::negotiate(&h, None).unwrap(),
            Some(StreamFormat::Sse)
        );
    }

    #[test]
    fn encodes() {
        let v = serde_json::json!({"a": 1});
        assert_eq!(&StreamFormat::Ndjson.encode("x", &v)[..], b"{\"a\":1}\n");
        assert_eq!(
            &StreamFormat::Sse.encode("x", &v)[..],
            b"event: x\ndata: {\"a\":1}\n\n"
        );
    }
}
