//! The HTTP client: base URL, API key, error decoding, JSON helpers and NDJSON streams.

use std::fmt;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use hutch_api::{ApiError, ErrorBody, ErrorCode};
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::config::Resolved;

/// An error the server returned (or one synthesised from a non-Hutch HTTP error).
#[derive(Debug, Clone)]
pub struct ServerError {
    /// HTTP status.
    pub status: u16,
    /// The decoded error.
    pub error: ApiError,
    /// Set when the request carried no API key (to hint at `hutch login` on 401).
    pub no_key: bool,
}

impl ServerError {
    /// The machine-readable code.
    pub fn code(&self) -> ErrorCode {
        self.error.code
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error.message)?;
        if let Some(field) = self
            .error
            .details
            .as_ref()
            .and_then(|d| d.get("field"))
            .and_then(|v| v.as_str())
        {
            write!(f, " (field: {field})")?;
        }
        if self.no_key && self.status == 401 {
            f.write_str(" (no API key: run `hutch login` or set HUTCH_API_KEY)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// Decode an error response body: the Hutch envelope, else the text of the body.
pub fn decode_error(status: u16, body: &[u8]) -> ApiError {
    if let Ok(env) = serde_json::from_slice::<ErrorBody>(body) {
        return env.error;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        format!("HTTP {status}")
    } else {
        let mut t: String = text.chars().take(300).collect();
        if t.len() < text.len() {
            t.push('…');
        }
        format!("HTTP {status}: {t}")
    };
    ApiError::new(ErrorCode::from_status(status), message)
}

/// True when `err` is a server error with code `not_found`.
pub fn is_not_found(err: &anyhow::Error) -> bool {
    err.downcast_ref::<ServerError>()
        .is_some_and(|e| e.code() == ErrorCode::NotFound)
}

/// A client for one server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    /// A client for the resolved settings.
    pub fn new(cfg: Resolved) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("hutch-cli/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            http,
            base: cfg.url,
            key: cfg.api_key,
        })
    }

    /// The server's base URL (no trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The API key, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// A request to `path` (starting with `/`), with the API key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.base, path));
        match &self.key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    /// Send a request; a non-2xx answer becomes a [`ServerError`].
    pub async fn send(&self, rb: RequestBuilder) -> anyhow::Result<Response> {
        let resp = rb.send().await.map_err(|e| self.connect_error(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let status = status.as_u16();
        Err(ServerError {
            status,
            error: decode_error(status, &body),
            no_key: self.key.is_none(),
        }
        .into())
    }

    fn connect_error(&self, e: reqwest::Error) -> anyhow::Error {
        if e.is_connect() {
            anyhow::anyhow!(
                "cannot reach the Hutch server at {}: {}",
                self.base,
                root_cause(&e)
            )
        } else {
            anyhow::anyhow!("request to {} failed: {}", self.base, root_cause(&e))
        }
    }

    /// `GET path?query` and decode JSON.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let resp = self
            .send(self.request(Method::GET, path).query(query))
            .await?;
        decode_json(resp).await
    }

    /// `POST path` with a JSON body and decode the JSON answer.
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let resp = self
            .send(self.request(Method::POST, path).json(body))
            .await?;
        decode_json(resp).await
    }

    /// `POST path` with a JSON body, ignoring the answer's body.
    pub async fn post_unit<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<()> {
        self.send(self.request(Method::POST, path).json(body))
            .await?;
        Ok(())
    }

    /// `DELETE path?query`.
    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<()> {
        self.send(self.request(Method::DELETE, path).query(query))
            .await?;
        Ok(())
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Decode a JSON response body.
pub async fn decode_json<T: DeserializeOwned>(resp: Response) -> anyhow::Result<T> {
    let bytes = resp
        .bytes()
        .await
        .context("cannot read the server's answer")?;
    serde_json::from_slice(&bytes).context("cannot decode the server's answer")
}

/// Decode a list that the server returns either bare (`[...]`) or as a page (`{"items":[...]}`).
pub fn decode_list<T: DeserializeOwned>(value: serde_json::Value) -> anyhow::Result<Vec<T>> {
    let items = match value {
        serde_json::Value::Object(mut o) => o
            .remove("items")
            .unwrap_or(serde_json::Value::Array(Vec::new())),
        v => v,
    };
    serde_json::from_value(items).context("cannot decode the server's answer")
}

/// Percent-encode one path segment (ids and names are plain, but be safe).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits a byte stream into newline-terminated JSON values.
#[derive(Default)]
pub struct NdjsonDecoder {
    buf: BytesMut,
}

impl NdjsonDecoder {
    /// Feed bytes; returns every complete line decoded. Blank lines are skipped.
    pub fn feed<T: DeserializeOwned>(&mut self, data: &[u8]) -> anyhow::Result<Vec<T>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line = self.buf.split_to(pos + 1);
            if let Some(v) = decode_line(&line[..pos])? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The stream ended: decode a last unterminated line, if any.
    pub fn finish<T: DeserializeOwned>(&mut self) -> anyhow::Result<Option<T>> {
        let rest = self.buf.split();
        decode_line(&rest)
    }
}

fn decode_line<T: DeserializeOwned>(line: &[u8]) -> anyhow::Result<Option<T>> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(line).map(Some).with_context(|| {
        format!(
            "bad line in the server's stream: {}",
            String::from_utf8_lossy(line)
        )
    })
}

type ByteStream = futures::stream::BoxStream<'static, reqwest::Result<Bytes>>;

struct NdjsonState<T> {
    body: ByteStream,
    dec: NdjsonDecoder,
    queue: std::collections::VecDeque<T>,
    done: bool,
}

/// Turn a response into a stream of decoded NDJSON values.
pub fn ndjson_stream<T: DeserializeOwned + Send + 'static>(
    resp: Response,
) -> impl Stream<Item = anyhow::Result<T>> + Send + Unpin {
    let state = NdjsonState {
        body: resp.bytes_stream().boxed(),
        dec: NdjsonDecoder::default(),
        queue: std::collections::VecDeque::new(),
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(v) = st.queue.pop_front() {
                return Some((Ok(v), st));
            }
            if st.done {
                return None;
            }
            match st.body.next().await {
                Some(Ok(chunk)) => match st.dec.feed::<T>(&chunk) {
                    Ok(vs) => st.queue.extend(vs),
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                },
                Some(Err(e)) => {
                    st.done = true;
                    let err = anyhow::anyhow!("the server's stream broke: {}", root_cause(&e));
                    return Some((Err(err), st));
                }
                None => {
                    st.done = true;
                    match st.dec.finish::<T>() {
                        Ok(Some(v)) => st.queue.push_back(v),
                        Ok(None) => {}
                        Err(e) => return Some((Err(e), st)),
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hutch_api::process::ProcessEvent;

    #[test]
    fn ndjson_split_across_chunks() {
        let mut d = NdjsonDecoder::default();
        let a: Vec<ProcessEvent> = d
            .feed(b"{\"type\":\"start\",\"id\":\"p-1\",\"pid\":7}\n{\"type\":\"std")
            .unwrap();
        assert_eq!(a.len(), 1);
        assert!(matches!(&a[0], ProcessEvent::Start { id, pid: 7 } if id == "p-1"));
        let b: Vec<ProcessEvent> = d
            .feed(b"out\",\"offset\":0,\"data\":\"hi\\n\"}\n\n")
            .unwrap();
        assert!(matches!(&b[0], ProcessEvent::Stdout { offset: 0, data } if data == "hi\n"));
        let c: Vec<ProcessEvent> = d
            .feed(b"{\"type\":\"exit\",\"exit_code\":3,\"duration_ms\":5}")
            .unwrap();
        assert!(c.is_empty());
        let last: Option<ProcessEvent> = d.finish().unwrap();
        assert!(matches!(
            last,
            Some(ProcessEvent::Exit {
                exit_code: Some(3),
                signal: None,
                ..
            })
        ));
        assert!(d.finish::<ProcessEvent>().unwrap().is_none());
    }

    #[test]
    fn ndjson_bad_line() {
        let mut d = NdjsonDecoder::default();
        assert!(d.feed::<ProcessEvent>(b"not json\n").is_err());
        let mut d = NdjsonDecoder::default();
        let v: Vec<ProcessEvent> = d
            .feed(b"\r\n{\"type\":\"gap\",\"offset\":10,\"skipped\":4}\r\n")
            .unwrap();
        assert!(matches!(
            v[0],
            ProcessEvent::Gap {
                offset: 10,
                skipped: 4
            }
        ));
    }

    #[test]
    fn error_envelope() {
        let body = br#"{"error":{"code":"invalid_argument","message":"bad cpus","details":{"field":"cpus"}}}"#;
        let e = decode_error(422, body);
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        let se = ServerError {
            status: 422,
            error: e,
            no_key: false,
        };
        assert_eq!(se.to_string(), "bad cpus (field: cpus)");

        let e = decode_error(
            404,
            br#"{"error":{"code":"not_found","message":"sandbox x not found"}}"#,
        );
        let err: anyhow::Error = ServerError {
            status: 404,
            error: e,
            no_key: false,
        }
        .into();
        assert!(is_not_found(&err));
        assert_eq!(format!("{err:#}"), "sandbox x not found");
    }

    #[test]
    fn error_fallbacks() {
        let e = decode_error(502, b"Bad Gateway");
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(e.message, "HTTP 502: Bad Gateway");
        let e = decode_error(404, b"");
        assert_eq!(e.code, ErrorCode::NotFound);
        assert_eq!(e.message, "HTTP 404");
        let e = decode_error(
            401,
            br#"{"error":{"code":"unauthorized","message":"missing API key"}}"#,
        );
        let se = ServerError {
            status: 401,
            error: e,
            no_key: true,
        };
        assert!(se.to_string().starts_with("missing API key (no API key"));
    }

    #[test]
    fn lists() {
        let v: Vec<u32> = decode_list(serde_json::json!([1, 2])).unwrap();
        assert_eq!(v, vec![1, 2]);
        let v: Vec<u32> =
            decode_list(serde_json::json!({"items": [3], "next_cursor": null})).unwrap();
        assert_eq!(v, vec![3]);
    }

    #[test]
    fn segments() {
        assert_eq!(seg("sb-1_a.b"), "sb-1_a.b");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
