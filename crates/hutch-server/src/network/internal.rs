//! `http://hutch.internal/`: the gateway's in-sandbox API. An agent asks for more access
//! (`POST /v1/access-requests`), waits for a human's decision (`GET …/{id}?wait=60`) and can
//! read its current allowlist (`GET /v1/policy`). Requests are identified by the sandbox
//! address they come from, so a sandbox only ever sees its own requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::{Method, Request, Response, StatusCode};
use hutch_api::network::{AccessRequest, Approval, ApprovalState};
use hutch_api::{ApiError, ErrorCode};
use hutch_net::policy::PolicyStore;
use hutch_store::{ApprovalFilter, NewEvent, Store};
use serde_json::json;
use tokio::sync::broadcast;

use crate::events;

/// Most pending requests a sandbox may have.
const MAX_PENDING: usize = 20;
/// Longest a requester may wait for a decision in one call.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Tells waiters that an access request was decided.
#[derive(Debug, Clone)]
pub struct Decisions(broadcast::Sender<String>);

impl Decisions {
    /// A fresh channel.
    pub fn new() -> Self {
        Decisions(broadcast::channel(256).0)
    }
    /// Announces that request `id` was decided.
    pub fn decided(&self, id: &str) {
        let _ = self.0.send(id.to_owned());
    }
    fn subscribe(&self) -> broadcast::Receiver<String> {
        self.0.subscribe()
    }
}

impl Default for Decisions {
    fn default() -> Self {
        Self::new()
    }
}

/// The service behind `hutch.internal`.
pub struct Internal {
    store: Arc<dyn Store>,
    policies: Arc<PolicyStore>,
    decisions: Decisions,
}

const HELP: &str = "Hutch sandbox API (hutch.internal)\n\n\
GET  /v1/policy                        this sandbox's current allowlist\n\
POST /v1/access-requests               ask for access: {\"host\":\"api.example.com\",\"path\":\"/v1/\",\"ports\":[443],\"justification\":\"why\"}\n\
GET  /v1/access-requests               your requests\n\
GET  /v1/access-requests/ID?wait=60    one request; waits up to 'wait' seconds for a decision\n\n\
Shortcut: /.hutch/hutch request-access HOST --reason TEXT [--wait 300]\n";

fn respond(status: StatusCode, body: serde_json::Value) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response<Bytes> {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::to_value(ApiError::new(code, message).into_body())
        .unwrap_or_else(|_| json!({}));
    respond(status, body)
}

impl Internal {
    /// A service answering from `store` and `policies`.
    pub fn new(store: Arc<dyn Store>, policies: Arc<PolicyStore>, decisions: Decisions) -> Self {
        Internal {
            store,
            policies,
            decisions,
        }
    }

    /// Serves one request from sandbox `sandbox`.
    pub async fn handle(&self, sandbox: String, req: Request<Bytes>) -> Response<Bytes> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method().clone(), segments.as_slice()) {
            (Method::GET, [""]) => {
                let mut r = Response::new(Bytes::from_static(HELP.as_bytes()));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            (Method::GET, ["v1", "policy"]) => {
                let policy = self.policies.get(&sandbox).unwrap_or_default();
                respond(
                    StatusCode::OK,
                    json!({ "sandbox_id": sandbox, "rules": policy.rules }),
                )
            }
            (Method::POST, ["v1", "access-requests"]) => self.create(sandbox, req.body()).await,
            (Method::GET, ["v1", "access-requests"]) => self.list(&sandbox).await,
            (Method::GET, ["v1", "access-requests", id]) => {
                let wait = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("wait="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or_default()
                    .min(MAX_WAIT);
                self.get(&sandbox, id, wait).await
            }
            _ => error(
                ErrorCode::NotFound,
                format!("no route for {path}; see GET /"),
            ),
        }
    }

    async fn create(&self, sandbox: String, body: &Bytes) -> Response<Bytes> {
        let req: AccessRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return error(ErrorCode::BadRequest, format!("invalid JSON: {e}")),
        };
        if let Err(m) = check_request(&req) {
            return error(ErrorCode::InvalidArgument, m);
        }
        let team = match self.store.get_sandbox(&sandbox).await {
            Ok(Some(sb)) => sb.team_id,
            Ok(None) => return error(ErrorCode::NotFound, "unknown sandbox"),
            Err(e) => return error(ErrorCode::Unavailable, format!("store: {e}")),
        };
        let pending = self
            .store
            .list_approvals(&ApprovalFilter {
                sandbox_id: Some(sandbox.clone()),
                state: Some(ApprovalState::Pending),
                limit: Some(MAX_PENDING as u32 + 1),
                ..Default::default()
            })
            .await;
        match pending {
            Ok(p) if p.len() >= MAX_PENDING => {
                return error(
                    ErrorCode::ResourceExhausted,
                    format!("this sandbox already has {MAX_PENDING} pending requests"),
                );
            }
            Ok(_) => {}
            Err(e) => return error(ErrorCode::Unavailable, format!("store: {e}")),
        }
        let approval = Approval {
            id: format!("ar-{}", hex::encode(rand::random::<[u8; 8]>())),
            sandbox_id: sandbox.clone(),
            host: req.host.trim_end_matches('.').to_ascii_lowercase(),
            path: req.path,
            ports: req.ports,
            justification: req.justification,
            state: ApprovalState::Pending,
            created_at: Utc::now(),
            decided_at: None,
            note: None,
            granted: None,
        };
        if let Err(e) = self.store.insert_approval(&team, &approval).await {
            return error(ErrorCode::Unavailable, format!("store: {e}"));
        }
        let event = NewEvent {
            team_id: Some(team),
            sandbox_id: Some(sandbox),
            kind: events::APPROVAL_REQUESTED.into(),
            time: Utc::now(),
            data: json!({ "approval_id": approval.id, "host": approval.host, "path": approval.path }),
        };
        if let Err(e) = self.store.insert_event(&event).await {
            tracing::warn!(error = %e, "recording approval.requested");
        }
        tracing::info!(approval = %approval.id, sandbox = %approval.sandbox_id, host = %approval.host, "access requested");
        respond(
            StatusCode::CREATED,
            serde_json::to_value(&approval).unwrap_or_default(),
        )
    }

    async fn list(&self, sandbox: &str) -> Response<Bytes> {
        match self
            .store
            .list_approvals(&ApprovalFilter {
                sandbox_id: Some(sandbox.to_owned()),
                limit: Some(100),
                ..Default::default()
            })
            .await
        {
            Ok(items) => respond(StatusCode::OK, json!({ "items": items })),
            Err(e) => error(ErrorCode::Unavailable, format!("store: {e}")),
        }
    }

    async fn get(&self, sandbox: &str, id: &str, wait: Duration) -> Response<Bytes> {
        let deadline = tokio::time::Instant::now() + wait;
        // Subscribe before reading, so a decision between the read and the wait is not missed.
        let mut rx = self.decisions.subscribe();
        loop {
            let approval = match self.store.get_approval(id).await {
                Ok(Some((_, a))) if a.sandbox_id == sandbox => a,
                Ok(_) => {
                    return error(
                        ErrorCode::NotFound,
                        format!("access request {id} not found"),
                    );
                }
                Err(e) => return error(ErrorCode::Unavailable, format!("store: {e}")),
            };
            if approval.state != ApprovalState::Pending || tokio::time::Instant::now() >= deadline {
                return respond(
                    StatusCode::OK,
                    serde_json::to_value(&approval).unwrap_or_default(),
                );
            }
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Ok(decided)) if decided != id => continue,
                    // Decided, lagged (re-read to be sure) or timed out: read again.
                    _ => break,
                }
            }
        }
    }
}

fn check_request(req: &AccessRequest) -> Result<(), String> {
    // Operators read these in a terminal: no control characters that could rewrite the screen.
    let text = [
        Some(req.host.as_str()),
        req.path.as_deref(),
        Some(req.justification.as_str()),
    ];
    if text
        .iter()
        .flatten()
        .any(|t| t.chars().any(|c| c.is_control() && c != '\n'))
    {
        return Err("control characters are not allowed".into());
    }
    // A wildcard must sit below a registered domain (`*.example.com`, not `*.com` or `*`).
    let labels = req.host.trim_start_matches("*.").split('.').count();
    if req.host == "*" || labels < 2 {
        return Err(
            "ask for a domain (api.example.com) or a wildcard below one (*.example.com)".into(),
        );
    }
    let bare = req.host.strip_prefix("*.").unwrap_or(&req.host);
    if !matches!(
        hutch_net::policy::Host::parse(bare),
        Ok(hutch_net::policy::Host::Name(_))
    ) {
        return Err("host must be a domain name (exact or *.example.com)".into());
    }
    if req
        .path
        .as_deref()
        .is_some_and(|p| !p.starts_with('/') || p.len() > 1024)
    {
        return Err("path must start with '/' (at most 1024 bytes)".into());
    }
    if req.ports.len() > 16 || req.ports.contains(&0) {
        return Err("at most 16 ports, none 0".into());
    }
    let j = req.justification.trim();
    if j.is_empty() || j.len() > 2000 {
        return Err("justification is required (at most 2000 bytes)".into());
    }
    Ok(())
}

/// The gateway calls this for `http://hutch.internal/…`.
pub struct Service(pub Arc<Internal>);

impl hutch_net::gateway::InternalService for Service {
    fn handle(&self, sandbox: String, req: Request<Bytes>) -> hutch_net::gateway::InternalFuture {
        let inner = self.0.clone();
        Box::pin(async move { inner.handle(sandbox, req).await })
    }
}
