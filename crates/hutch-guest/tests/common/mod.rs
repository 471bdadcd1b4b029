//! Test harness: a real guest on a Unix socket and a small hyper client.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hutch_guest::{GuestConfig, Listener};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{UnixListener, UnixStream};

pub const TOKEN: &str = "test-token-123";

/// A guest serving on a Unix socket in a temp dir.
pub struct Guest {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub _task: tokio::task::JoinHandle<()>,
}

impl Guest {
    pub async fn start() -> Guest {
        Self::start_with(GuestConfig {
            token: TOKEN.into(),
            env: [("HUTCH_TEST_ENV".to_string(), "from-config".to_string())].into(),
            hostname: None,
        })
        .await
    }

    pub async fn start_with(config: GuestConfig) -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("guest.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            hutch_guest::serve(Listener::Unix(listener), config, move || {
                let _ = tx.send(());
            })
            .await
            .unwrap();
        });
        rx.await.unwrap();
        Guest {
            dir,
            socket,
            _task: task,
        }
    }

    /// A path inside the guest's temp dir.
    pub fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).to_string_lossy().into_owned()
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        let stream = UnixStream::connect(&self.socket).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender.send_request(req).await.unwrap()
    }

    pub fn request(method: Method, path: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("http://guest{path}"))
            .header("x-hutch-token", TOKEN)
    }

    /// Send raw bytes, get status, headers and the whole body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
    ) -> (StatusCode, hyper::HeaderMap, Bytes) {
        let body = body.into();
        let req = Self::request(method, path).body(Full::new(body)).unwrap();
        let resp = self.send(req).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes)
    }

    /// JSON in, JSON out (`Value::Null` for an empty body).
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let (status, _, out) = self.raw(method, path, bytes).await;
        let v = if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out).into()))
        };
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.json(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.json(Method::POST, path, Some(body)).await
    }

    /// Start a streaming request; returns the response to read line by line.
    pub async fn stream(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        body: Option<Value>,
    ) -> Response<Incoming> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut b = Self::request(method, path);
        if let Some(a) = accept {
            b = b.header("accept", a);
        }
        self.send(b.body(Full::new(bytes)).unwrap()).await
    }

    /// Poll a terminal screen until `pred` holds (generous deadline).
    pub async fn wait_screen(&self, name: &str, pred: impl Fn(&str) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (st, v) = self.get(&format!("/terminals/{name}/screen")).await;
            assert_eq!(st, StatusCode::OK, "{v}");
            if pred(v["text"].as_str().unwrap_or("")) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "screen never matched; last:\n{}",
                v["text"].as_str().unwrap_or("")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads a streaming body as lines.
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
}

impl Lines {
    pub fn new(resp: Response<Incoming>) -> Lines {
        Lines {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }

    /// Next line (without the newline), or None at the end of the body.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            let frame = tokio::time::timeout(Duration::from_secs(60), self.body.frame())
                .await
                .expect("stream stalled")?;
            if let Ok(data) = frame.unwrap().into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// Next non-empty NDJSON document.
    pub async fn next_json(&mut self) -> Option<Value> {
        loop {
            let l = self.next().await?;
            if !l.trim().is_empty() {
                return Some(serde_json::from_str(&l).unwrap());
            }
        }
    }

    /// Next SSE event as (event, data JSON).
    pub async fn next_sse(&mut self) -> Option<(String, Value)> {
        let mut event = String::new();
        let mut data = String::new();
        loop {
            let l = self.next().await?;
            if l.is_empty() {
                if !data.is_empty() {
                    return Some((event, serde_json::from_str(&data).unwrap()));
                }
                continue;
            }
            if let Some(e) = l.strip_prefix("event:") {
                event = e.trim().to_string();
            } else if let Some(d) = l.strip_prefix("data:") {
                data.push_str(d.trim_start());
            }
        }
    }
}

/// The error code of an envelope.
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no envelope>")
}
