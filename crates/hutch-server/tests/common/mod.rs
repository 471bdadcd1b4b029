//! A real server on an ephemeral port with a temporary data dir, and a small HTTP client.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hutch_server::{ConfigOverrides, Running, ServerConfig};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub url: String,
    pub admin: String,
    pub http: reqwest::Client,
}

/// Sandboxes of a server that is dropped while still running (a test that ended or panicked)
/// are destroyed, so failed tests do not leave sandboxes, links and addresses behind.
impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            let engine = r.state.engine();
            for sb in engine.list() {
                let _ = engine.destroy(&sb.id);
            }
        }
    }
}

pub fn config(data_dir: PathBuf, guest_exe: Option<PathBuf>) -> ServerConfig {
    ServerConfig::load_with_env(
        None,
        Vec::new(),
        ConfigOverrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(data_dir),
            guest_exe,
            max_timeout_s: Some(3600),
            reaper_interval_ms: Some(200),
            reconcile_interval_ms: Some(1000),
            ..Default::default()
        },
    )
    .unwrap()
}

impl TestServer {
    pub async fn start(guest_exe: Option<PathBuf>) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, guest_exe).await
    }

    pub async fn start_in(dir: tempfile::TempDir, guest_exe: Option<PathBuf>) -> TestServer {
        let cfg = config(dir.path().to_path_buf(), guest_exe);
        Self::start_with(dir, cfg).await
    }

    /// A server with an explicit configuration (its data dir must be `dir`).
    pub async fn start_with(dir: tempfile::TempDir, cfg: ServerConfig) -> TestServer {
        let running = hutch_server::spawn(cfg).await.expect("server starts");
        let admin = match &running.admin_key {
            Some(k) => k.clone(),
            None => std::fs::read_to_string(dir.path().join("admin.key"))
                .unwrap()
                .trim()
                .to_owned(),
        };
        TestServer {
            url: running.url(),
            running: Some(running),
            dir,
            admin,
            http: reqwest::Client::new(),
        }
    }

    /// Stops the server (sandboxes keep running) and returns the data dir.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    pub fn req(&self, method: Method, path: &str, key: Option<&str>) -> RequestBuilder {
        let b = self.http.request(method, format!("{}{path}", self.url));
        match key {
            Some(k) => b.bearer_auth(k),
            None => b,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut b = self.req(method, path, Some(key));
        if let Some(body) = body {
            b = b.json(&body);
        }
        json_of(b.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, key, None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, key, Some(body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, key, None).await
    }

    /// A new team with a non-admin key; returns (team_id, key).
    pub async fn team_key(&self, name: &str) -> (String, String) {
        let (s, team) = self
            .post(
                "/v1/teams",
                &self.admin,
                serde_json::json!({ "name": name }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{team}");
        let team_id = team["id"].as_str().unwrap().to_owned();
        let (s, key) = self
            .post(
                "/v1/keys",
                &self.admin,
                serde_json::json!({ "name": "k", "team_id": team_id }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{key}");
        (team_id, key["key"].as_str().unwrap().to_owned())
    }
}

pub async fn json_of(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// Asserts an error envelope with the given status and code.
pub fn assert_error(status: StatusCode, body: &Value, want: u16, code: &str) {
    assert_eq!(status.as_u16(), want, "body: {body}");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(body["error"]["message"].is_string(), "body: {body}");
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
