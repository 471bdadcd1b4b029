//! HTTP/1.1 client for a sandbox's guest API over its Unix socket.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use hutch_api::health::GuestHealth;
use hutch_api::process::{RunResult, StartProcess};
use hutch_api::{ApiError, ErrorBody, ErrorCode, GUEST_TOKEN_HEADER};

use crate::error::{Error, Result};

/// Bound on connecting to a guest and the HTTP handshake.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Request body type the client sends (streamable).
pub type GuestBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// A cheap-to-clone handle on one sandbox's guest.
#[derive(Clone)]
pub struct GuestClient {
    socket: Arc<PathBuf>,
    token: Arc<str>,
}

impl std::fmt::Debug for GuestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("GuestClient")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl GuestClient {
    /// A client for the guest listening at `socket`, authenticating with `token`.
    pub fn new(socket: PathBuf, token: String) -> Self {
        GuestClient {
            socket: Arc::new(socket),
            token: token.into(),
        }
    }

    /// Send a request (URI = path and query). Upgrades (WebSocket) are supported: on a 101 use
    /// `hyper::upgrade::on(&mut response)`.
    pub async fn send(&self, mut req: Request<GuestBody>) -> Result<Response<Incoming>> {
        let token = http::HeaderValue::from_str(&self.token)
            .map_err(|_| Error::Guest("bad token".into()))?;
        req.headers_mut().insert(GUEST_TOKEN_HEADER, token);
        req.headers_mut().remove(http::header::AUTHORIZATION);
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("guest"));
        // Connecting is bounded (a guest whose accept backlog is full must not pin a request
        // forever); responses are not, since exec and waits legitimately take long.
        let connect = async {
            let stream = tokio::net::UnixStream::connect(&*self.socket)
                .await
                .map_err(|e| Error::Guest(format!("connect: {e}")))?;
            hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| Error::Guest(format!("handshake: {e}")))
        };
        let (mut sender, conn) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                Error::Guest("the guest did not accept the connection in time".into())
            })??;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender
            .send_request(req)
            .await
            .map_err(|e| Error::Guest(format!("request: {e}")))
    }

    /// Send a JSON request and decode a JSON answer; error envelopes become [`Error::Api`].
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| Error::Guest(e.to_string()))?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(
                Full::new(bytes)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|e| Error::Guest(e.to_string()))?;
        let resp = self.send(req).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Guest(format!("read: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(Error::Api(decode_error(status, &body)));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Guest(format!("decode: {e}")))
    }

    /// Run a command to completion (`POST /exec`).
    pub async fn exec(&self, req: &StartProcess) -> Result<RunResult> {
        self.json(Method::POST, "/exec", Some(req)).await
    }

    /// Guest health and usage.
    pub async fn health(&self) -> Result<GuestHealth> {
        self.json(Method::GET, "/health", None::<&()>).await
    }
}

fn decode_error(status: StatusCode, body: &[u8]) -> ApiError {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| {
            ApiError::new(
                ErrorCode::from_status(status.as_u16()),
                format!("guest answered {status}"),
            )
        })
}
