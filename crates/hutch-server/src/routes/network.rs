//! `/v1/sandboxes/{id}/network`, `/v1/sandboxes/{id}/egress` and `/v1/approvals`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::StreamExt;
use hutch_api::ErrorBody;
use hutch_api::network::{
    AllowRule, AllowRuleSpec, Approval, ApprovalState, ApproveRequest, DenyRequest, EgressEntry,
    NetworkInfo, NetworkSpec,
};
use hutch_api::sandbox::{Page, SandboxState};
use hutch_store::{ApprovalFilter, Decision};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::error::{AppError, AppResult};
use crate::events;
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::sandboxes::{load, parse_limit};
use crate::state::AppState;

fn info(state: &AppState, id: &str, network: NetworkSpec) -> NetworkInfo {
    let link = state.network().link(id);
    NetworkInfo {
        network,
        address: link.as_ref().map(|l| l.address.to_string()),
        gateway: link.as_ref().map(|l| l.gateway.to_string()),
        proxy: link
            .as_ref()
            .map(|l| format!("http://{}:{}", l.gateway, state.config().network.proxy_port)),
    }
}

/// A sandbox's network settings and link.
#[utoipa::path(
    operation_id = "get_network",
    get, path = "/v1/sandboxes/{id}/network", tag = "network",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Network settings", body = NetworkInfo),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get_network(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<Json<NetworkInfo>> {
    let sb = load(&state, &caller, &id).await?;
    Ok(Json(info(&state, &id, sb.network)))
}

/// Replace a sandbox's network settings, live: new DNS queries, connections and requests follow
/// them at once; open connections stay open (and each request on them is checked again).
/// Switching `none` → `allowlist` gives a running sandbox its link (processes already running
/// reach the gateway through DNS rather than `HTTP_PROXY`); `allowlist` → `none` removes it.
#[utoipa::path(
    operation_id = "set_network",
    put, path = "/v1/sandboxes/{id}/network", tag = "network",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = NetworkSpec,
    responses(
        (status = 200, description = "Applied", body = NetworkInfo),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 422, description = "Invalid rules", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn set_network(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(mut spec): ApiJson<NetworkSpec>,
) -> AppResult<Json<NetworkInfo>> {
    let lock = state.network().spec_lock(&id);
    let _guard = lock.lock().await;
    let sb = load(&state, &caller, &id).await?;
    if !matches!(sb.state, SandboxState::Running | SandboxState::Paused) {
        return Err(AppError::conflict(format!(
            "sandbox {id} is {}",
            sb.state.as_str()
        )));
    }
    crate::network::validate(&spec)?;
    let switching = spec.is_networked() != sb.network.is_networked();
    if switching && sb.state != SandboxState::Running {
        return Err(AppError::conflict(format!(
            "sandbox {id} must be running to change its network mode"
        )));
    }
    // Bindings the sandbox already has keep their placeholders (its environment holds them).
    for c in spec.credentials.iter_mut() {
        c.placeholder = sb
            .network
            .credentials
            .iter()
            .find(|o| o.secret == c.secret && o.env == c.env)
            .and_then(|o| o.placeholder.clone());
    }
    crate::network::assign_placeholders(&mut spec)?;
    match (sb.network.is_networked(), spec.is_networked()) {
        (false, true) => {
            // `attach` installs the policy itself (before the link carries anything).
            crate::network::attach(&state, &sb, &spec).await?;
            if !state.store().set_sandbox_network(&id, &spec).await? {
                state.network().forget_blocking(&id).await;
                return Err(AppError::not_found(format!("sandbox {id} not found")));
            }
        }
        (true, false) => {
            if !state.store().set_sandbox_network(&id, &spec).await? {
                return Err(AppError::not_found(format!("sandbox {id} not found")));
            }
            state.network().forget_blocking(&id).await;
        }
        _ => apply_and_store(&state, &sb.team_id, &id, &spec).await?,
    }
    events::emit(
        &state,
        &sb.team_id,
        &id,
        events::NETWORK_UPDATED,
        json!({ "mode": spec.mode, "allow": spec.allow.len(), "credentials": spec.credentials.len() }),
    )
    .await;
    Ok(Json(info(&state, &id, spec)))
}

async fn apply_and_store(
    state: &AppState,
    team: &str,
    id: &str,
    spec: &NetworkSpec,
) -> AppResult<()> {
    if spec.is_networked() {
        crate::network::apply(state, team, id, spec).await?;
    }
    if !state.store().set_sandbox_network(id, spec).await? {
        return Err(AppError::not_found(format!("sandbox {id} not found")));
    }
    Ok(())
}

/// Query of `GET /v1/sandboxes/{id}/egress`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEgress {
    /// Only entries after this `seq` (`next_cursor` of the previous page).
    pub after: Option<String>,
    /// Page size (1-500, default 50).
    pub limit: Option<String>,
    /// `true`: stream entries as Server-Sent Events (backlog after `after`, then live).
    pub follow: Option<String>,
}

/// A sandbox's egress log, oldest first; or a live stream of it.
#[utoipa::path(
    operation_id = "list_egress",
    get, path = "/v1/sandboxes/{id}/egress", tag = "network",
    params(("id" = String, Path, description = "Sandbox id"), ListEgress),
    responses(
        (status = 200, description = "A page of entries (or `text/event-stream` with `follow=true`)", body = Page<EgressEntry>),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list_egress(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListEgress>,
) -> AppResult<Response> {
    load(&state, &caller, &id).await?;
    let after = match q.after.as_deref() {
        None => 0,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| AppError::invalid("after", "invalid cursor"))?,
    };
    let limit = parse_limit(q.limit.as_deref())?;
    let wants_sse = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let follow = match q.follow.as_deref() {
        None => wants_sse,
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(_) => return Err(AppError::invalid("follow", "must be true or false")),
    };
    if follow {
        return Ok(follow_egress(state, id, after).into_response());
    }
    let mut items = state.store().list_egress(&id, after, limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }).into_response())
}

/// Backlog from the store, then live entries (deduplicated by `seq`).
fn follow_egress(
    state: AppState,
    id: String,
    after: i64,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let live = state.network().egress().subscribe();
    let stream = async_stream_egress(state, id, after, live);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn async_stream_egress(
    state: AppState,
    id: String,
    after: i64,
    live: tokio::sync::broadcast::Receiver<EgressEntry>,
) -> impl futures::Stream<Item = Result<SseEvent, Infallible>> {
    struct S {
        state: AppState,
        id: String,
        last: i64,
        live: tokio::sync::broadcast::Receiver<EgressEntry>,
        backlog: std::collections::VecDeque<EgressEntry>,
        caught_up: bool,
    }
    let init = S {
        state,
        id,
        last: after,
        live,
        backlog: Default::default(),
        caught_up: false,
    };
    futures::stream::unfold(init, |mut s| async move {
        loop {
            if let Some(e) = s.backlog.pop_front() {
                s.last = e.seq;
                return Some((Ok(to_sse(&e)), s));
            }
            if !s.caught_up {
                match s.state.store().list_egress(&s.id, s.last, 500).await {
                    Ok(page) if !page.is_empty() => {
                        s.backlog.extend(page);
                        continue;
                    }
                    Ok(_) => s.caught_up = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "egress backlog");
                        return None;
                    }
                }
            }
            match s.live.recv().await {
                Ok(e) if e.sandbox_id == s.id && e.seq > s.last => {
                    s.last = e.seq;
                    return Some((Ok(to_sse(&e)), s));
                }
                Ok(_) => continue,
                // Fell behind the live channel: read the gap from the store.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => s.caught_up = false,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}

fn to_sse(e: &EgressEntry) -> SseEvent {
    SseEvent::default()
        .event("egress")
        .id(e.seq.to_string())
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// Query of `GET /v1/approvals`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListApprovals {
    /// `pending`, `approved` or `denied`.
    pub state: Option<String>,
    /// Only this sandbox's requests.
    pub sandbox_id: Option<String>,
    /// Page size (1-500, default 50).
    pub limit: Option<String>,
}

/// The team's access requests, newest first.
#[utoipa::path(
    operation_id = "list_approvals",
    get, path = "/v1/approvals", tag = "approvals",
    params(ListApprovals),
    responses(
        (status = 200, description = "Access requests", body = Page<Approval>),
        (status = 422, description = "Invalid filter", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list_approvals(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListApprovals>,
) -> AppResult<Json<Page<Approval>>> {
    let st = match q.state.as_deref() {
        None => None,
        Some(s) => Some(
            ApprovalState::parse(s)
                .ok_or_else(|| AppError::invalid("state", "must be pending, approved or denied"))?,
        ),
    };
    let items = state
        .store()
        .list_approvals(&ApprovalFilter {
            team_id: Some(caller.team_id),
            sandbox_id: q.sandbox_id,
            state: st,
            limit: Some(parse_limit(q.limit.as_deref())?),
        })
        .await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

async fn load_approval(state: &AppState, caller: &Caller, id: &str) -> AppResult<Approval> {
    match state.store().get_approval(id).await? {
        Some((team, a)) if team == caller.team_id => Ok(a),
        _ => Err(AppError::not_found(format!(
            "access request {id} not found"
        ))),
    }
}

/// One access request.
#[utoipa::path(
    operation_id = "get_approval",
    get, path = "/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "Access request id")),
    responses(
        (status = 200, description = "The request", body = Approval),
        (status = 404, description = "Not found", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get_approval(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<Json<Approval>> {
    Ok(Json(load_approval(&state, &caller, &id).await?))
}

/// Grant an access request (optionally narrowed): the rule is added to the sandbox's allowlist
/// live, and the waiting agent is told.
#[utoipa::path(
    operation_id = "approve",
    post, path = "/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = String, Path, description = "Access request id")),
    request_body = ApproveRequest,
    responses(
        (status = 200, description = "Approved and applied", body = Approval),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Already decided, or the sandbox is gone", body = ErrorBody),
        (status = 422, description = "The narrowing does not fit the request", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ApproveRequest>,
) -> AppResult<Json<Approval>> {
    let a = load_approval(&state, &caller, &id).await?;
    if a.state != ApprovalState::Pending {
        return Err(AppError::conflict(format!(
            "access request {id} is already {}",
            a.state.as_str()
        )));
    }
    let host = req.host.clone().unwrap_or_else(|| a.host.clone());
    if !crate::network::covers(&a.host, &host) {
        return Err(AppError::invalid(
            "host",
            format!("{host} is not within the requested {}", a.host),
        ));
    }
    let path = req.path.clone().or_else(|| a.path.clone());
    if let (Some(asked), Some(p)) = (&a.path, &req.path)
        && !p.starts_with(asked.as_str())
    {
        return Err(AppError::invalid(
            "path",
            format!("{p} is not within the requested {asked}"),
        ));
    }
    let grant = AllowRuleSpec {
        id: Some(format!("approval-{id}")),
        domain: Some(host),
        cidr: None,
        ports: a.ports.clone(),
        methods: req.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
        paths: path.into_iter().collect(),
    };
    // Read-modify-write of the sandbox's spec: serialised with PUT …/network and other approvals.
    let lock = state.network().spec_lock(&a.sandbox_id);
    let _guard = lock.lock().await;
    let sb = load(&state, &caller, &a.sandbox_id)
        .await
        .map_err(|_| AppError::conflict(format!("sandbox {} no longer exists", a.sandbox_id)))?;
    if !sb.network.is_networked() {
        return Err(AppError::conflict(format!(
            "sandbox {} has no network",
            a.sandbox_id
        )));
    }
    let mut spec = sb.network.clone();
    spec.allow.push(AllowRule::Rule(grant.clone()));
    crate::network::validate(&spec)?;
    let decision = Decision {
        state: ApprovalState::Approved,
        at: Utc::now(),
        note: req.note.clone(),
        granted: Some(grant.clone()),
    };
    if !state.store().decide_approval(&id, &decision).await? {
        return Err(AppError::conflict(format!(
            "access request {id} was decided meanwhile"
        )));
    }
    apply_and_store(&state, &sb.team_id, &sb.id, &spec).await?;
    state.network().decisions().decided(&id);
    events::emit(
        &state,
        &sb.team_id,
        &sb.id,
        events::APPROVAL_APPROVED,
        json!({ "approval_id": id, "granted": grant }),
    )
    .await;
    Ok(Json(load_approval(&state, &caller, &id).await?))
}

/// Refuse an access request; the waiting agent is told.
#[utoipa::path(
    operation_id = "deny",
    post, path = "/v1/approvals/{id}/deny", tag = "approvals",
    params(("id" = String, Path, description = "Access request id")),
    request_body = DenyRequest,
    responses(
        (status = 200, description = "Denied", body = Approval),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "Already decided", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn deny(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<DenyRequest>,
) -> AppResult<Json<Approval>> {
    let a = load_approval(&state, &caller, &id).await?;
    let decision = Decision {
        state: ApprovalState::Denied,
        at: Utc::now(),
        note: req.note,
        granted: None,
    };
    if !state.store().decide_approval(&id, &decision).await? {
        return Err(AppError::conflict(format!(
            "access request {id} is already {}",
            a.state.as_str()
        )));
    }
    state.network().decisions().decided(&id);
    events::emit(
        &state,
        &caller.team_id,
        &a.sandbox_id,
        events::APPROVAL_DENIED,
        json!({ "approval_id": id }),
    )
    .await;
    Ok(Json(load_approval(&state, &caller, &id).await?))
}

#[cfg(test)]
mod tests {
    use crate::network::covers;

    #[test]
    fn narrowing() {
        assert!(covers("*", "a.com"));
        assert!(covers("a.com", "a.com"));
        assert!(covers("*.a.com", "x.a.com"));
        assert!(covers("*.a.com", "*.b.a.com"));
        assert!(!covers("*.a.com", "a.com"));
        assert!(!covers("a.com", "x.a.com"));
        assert!(!covers("*.a.com", "xa.com"));
    }
}
