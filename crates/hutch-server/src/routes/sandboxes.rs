//! `/v1/sandboxes`: create, list, get, delete, timeout, keepalive, pause, resume.

use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{Duration, Utc};
use hutch_api::sandbox::{CreateSandbox, Page, Sandbox, SandboxState, SetTimeout};
use hutch_api::{ApiError, ErrorBody, ErrorCode};
use hutch_sandbox::SandboxSpec;
use hutch_store::{SandboxFilter, SandboxRecord};
use serde_json::json;

use crate::auth::Caller;
use crate::error::{AppError, AppResult};
use crate::events;
use crate::extract::{ApiJson, ApiQuery};
use crate::ids;
use crate::state::AppState;

/// Default page size of listings.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size of listings.
pub const MAX_LIMIT: u32 = 500;

const DEFAULT_TEMPLATE: &str = "base";
const DEFAULT_CPUS: f64 = 1.0;
const DEFAULT_MEMORY_MB: u64 = 512;
const DEFAULT_PIDS: u64 = 512;
const MAX_METADATA: usize = 64;
const MAX_ENV: usize = 256;

/// Loads a sandbox of the caller's team (another team's sandbox is 404, like a missing one).
pub async fn load(state: &AppState, caller: &Caller, id: &str) -> AppResult<SandboxRecord> {
    match state.store().get_sandbox(id).await? {
        Some(sb) if sb.team_id == caller.team_id => Ok(sb),
        _ => Err(AppError::not_found(format!("sandbox {id} not found"))),
    }
}

fn is_env_name(k: &str) -> bool {
    let mut bytes = k.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && k.len() <= 256
}

/// Validates a timeout against the server maximum.
pub fn check_timeout(state: &AppState, timeout_s: u64) -> AppResult<u64> {
    let max = state.config().max_timeout_s;
    if timeout_s == 0 || timeout_s > max {
        return Err(AppError::invalid(
            "timeout_s",
            format!("must be between 1 and {max}"),
        ));
    }
    Ok(timeout_s)
}

fn validate(state: &AppState, req: CreateSandbox) -> AppResult<(SandboxRecord, SandboxSpec)> {
    let template = req.template.unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned());
    if template.is_empty() || template.len() > 128 {
        return Err(AppError::invalid("template", "invalid template name"));
    }
    let cpus = req.cpus.unwrap_or(DEFAULT_CPUS);
    if !(cpus.is_finite() && (0.01..=64.0).contains(&cpus)) {
        return Err(AppError::invalid("cpus", "must be between 0.01 and 64"));
    }
    let memory_mb = req.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if !(16..=65_536).contains(&memory_mb) {
        return Err(AppError::invalid(
            "memory_mb",
            "must be between 16 and 65536",
        ));
    }
    let pids = req.pids.unwrap_or(DEFAULT_PIDS);
    if !(8..=65_536).contains(&pids) {
        return Err(AppError::invalid("pids", "must be between 8 and 65536"));
    }
    let timeout_s = check_timeout(
        state,
        req.timeout_s.unwrap_or(state.config().default_timeout_s),
    )?;
    if req.env.len() > MAX_ENV {
        return Err(AppError::invalid(
            "env",
            format!("at most {MAX_ENV} variables"),
        ));
    }
    for (k, v) in &req.env {
        if !is_env_name(k) {
            return Err(AppError::invalid(
                "env",
                "variable names must match [A-Za-z_][A-Za-z0-9_]*",
            ));
        }
        if v.contains('\0') {
            // Never echo the value: it may be a secret.
            return Err(AppError::invalid(
                "env",
                format!("value of {k} contains a NUL byte"),
            ));
        }
    }
    if req.metadata.len() > MAX_METADATA {
        return Err(AppError::invalid(
            "metadata",
            format!("at most {MAX_METADATA} entries"),
        ));
    }
    for (k, v) in &req.metadata {
        if k.is_empty() || k.len() > 128 || v.len() > 1024 {
            return Err(AppError::invalid(
                "metadata",
                "keys must be 1-128 bytes and values at most 1024 bytes",
            ));
        }
    }
    let mut network = req.network.unwrap_or_default();
    crate::network::validate(&network)?;
    for c in network.credentials.iter_mut() {
        // Placeholders are the server's to choose.
        c.placeholder = None;
    }
    crate::network::assign_placeholders(&mut network)?;
    let id = ids::sandbox_id();
    let spec = SandboxSpec {
        id: id.clone(),
        template: template.clone(),
        cpus: Some(cpus),
        memory_mb: Some(memory_mb),
        pids: Some(pids),
        env: req.env.clone(),
        network: network.is_networked(),
        files: Vec::new(),
    };
    let record = SandboxRecord {
        seq: 0,
        id,
        team_id: String::new(),
        template,
        state: SandboxState::Starting,
        cpus,
        memory_mb,
        pids,
        timeout_s,
        on_timeout: req.on_timeout,
        env: req.env,
        metadata: req.metadata,
        network,
        created_at: Utc::now(),
        started_at: None,
        expires_at: None,
        reason: None,
    };
    Ok((record, spec))
}

/// Create a sandbox and wait until its guest is ready.
#[utoipa::path(
    operation_id = "create_sandbox",
    post, path = "/v1/sandboxes", tag = "sandboxes",
    request_body = CreateSandbox,
    responses(
        (status = 201, description = "The sandbox is running", body = Sandbox),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 422, description = "Invalid field (details.field)", body = ErrorBody),
        (status = 429, description = "The team is at its sandbox limit", body = ErrorBody),
        (status = 503, description = "The runtime failed", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateSandbox>,
) -> AppResult<(StatusCode, Json<Sandbox>)> {
    let (mut record, spec) = validate(&state, req)?;
    if !state.engine().templates().exists(&record.template) {
        return Err(AppError::invalid(
            "template",
            format!("template {} not found", record.template),
        ));
    }
    record.team_id = caller.team_id;
    let limit = state.config().max_sandboxes_per_team;
    if state.store().count_live_sandboxes(&record.team_id).await? >= limit {
        return Err(AppError(ApiError::new(
            ErrorCode::ResourceExhausted,
            format!(
                "the team already has {limit} live sandboxes (the server's max_sandboxes_per_team): delete one first"
            ),
        )));
    }
    // Run the creation in its own task so a client that disconnects cannot leave it half done.
    let task = tokio::spawn(create_task(state, record, spec));
    let sandbox = task.await??;
    Ok((StatusCode::CREATED, Json(sandbox)))
}

async fn create_task(
    state: AppState,
    mut record: SandboxRecord,
    spec: SandboxSpec,
) -> AppResult<Sandbox> {
    let mut spec = spec;
    record.seq = state.store().insert_sandbox(&record).await?;
    let (team, id) = (record.team_id.clone(), record.id.clone());
    if spec.network {
        // Addresses, files, environment and the live policy before anything runs inside.
        if let Err(e) = crate::network::prepare_create(&state, &record, &mut spec).await {
            state.network().forget_blocking(&id).await;
            state
                .store()
                .set_sandbox_state(
                    &id,
                    &[SandboxState::Starting],
                    SandboxState::Error,
                    Some(&e.0.message),
                )
                .await?;
            return Err(e);
        }
    }
    events::emit(
        &state,
        &team,
        &id,
        events::SANDBOX_CREATED,
        json!({ "template": record.template }),
    )
    .await;
    let started = Instant::now();
    let result = state.blocking(move |engine| engine.create(&spec)).await;
    match result {
        Ok(_info) => {
            state
                .metrics()
                .observe_create(started.elapsed().as_secs_f64());
            // OOM kills are counted from the sandbox's birth.
            state.swap_oom_count(&id, 0);
            let now = Utc::now();
            let expires = now + secs(record.timeout_s);
            if !state
                .store()
                .mark_sandbox_running(&id, now, expires)
                .await?
            {
                // Deleted while starting: do not leave it running.
                let id2 = id.clone();
                let _ = state.blocking(move |engine| engine.destroy(&id2)).await;
                return Err(AppError::not_found(format!(
                    "sandbox {id} was deleted while starting"
                )));
            }
            // Recorded off the response path (after `sandbox.created`, which is already in).
            let data = json!({ "ms": started.elapsed().as_millis() as u64 });
            let (st, t, i) = (state.clone(), team.clone(), id.clone());
            tokio::spawn(async move {
                events::emit(&st, &t, &i, events::SANDBOX_STARTED, data).await;
            });
            record.state = SandboxState::Running;
            record.started_at = Some(now);
            record.expires_at = Some(expires);
            Ok(record.to_api())
        }
        Err(err) => {
            let reason = err.0.message.clone();
            tracing::warn!(sandbox_id = %id, %reason, "sandbox failed to start");
            let id2 = id.clone();
            let _ = state.blocking(move |engine| engine.destroy(&id2)).await;
            state
                .store()
                .set_sandbox_state(
                    &id,
                    &[SandboxState::Starting],
                    SandboxState::Error,
                    Some(&reason),
                )
                .await?;
            events::emit(
                &state,
                &team,
                &id,
                events::SANDBOX_ERROR,
                json!({ "reason": reason }),
            )
            .await;
            Err(err)
        }
    }
}

/// A duration of `s` seconds (saturating).
pub fn secs(s: u64) -> Duration {
    Duration::seconds(
        i64::try_from(s)
            .unwrap_or(i64::MAX / 1000)
            .min(i64::MAX / 1000),
    )
}

/// Query of `GET /v1/sandboxes` (plus `metadata.KEY=VALUE` filters).
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListSandboxes {
    /// Only sandboxes in these states (comma-separated).
    pub state: Option<String>,
    /// Page size (1-500, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `metadata.KEY=VALUE`: only sandboxes with this metadata entry (repeatable).
    #[param(rename = "metadata.{key}")]
    pub metadata: Option<String>,
}

/// Parses a page size.
pub fn parse_limit(v: Option<&str>) -> AppResult<u32> {
    match v {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(AppError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            )),
        },
    }
}

/// Parses a numeric cursor.
pub fn parse_cursor(field: &str, v: Option<&str>) -> AppResult<Option<i64>> {
    v.map(|v| {
        v.parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| AppError::invalid(field, "invalid cursor"))
    })
    .transpose()
}

/// List the team's sandboxes, newest first.
#[utoipa::path(
    operation_id = "list_sandboxes",
    get, path = "/v1/sandboxes", tag = "sandboxes",
    params(ListSandboxes),
    responses(
        (status = 200, description = "A page of sandboxes", body = Page<Sandbox>),
        (status = 422, description = "Invalid filter", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> AppResult<Json<Page<Sandbox>>> {
    let mut filter = SandboxFilter {
        team_id: Some(caller.team_id),
        ..Default::default()
    };
    let mut limit = None;
    let mut cursor = None;
    for (k, v) in &query {
        match k.as_str() {
            "state" => {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    let st = SandboxState::parse(s)
                        .ok_or_else(|| AppError::invalid("state", format!("unknown state {s}")))?;
                    filter.states.push(st);
                }
            }
            "limit" => limit = Some(v.as_str()),
            "cursor" => cursor = Some(v.as_str()),
            other => {
                if let Some(key) = other.strip_prefix("metadata.") {
                    filter.metadata.push((key.to_owned(), v.clone()));
                }
            }
        }
    }
    let limit = parse_limit(limit)?;
    filter.before_seq = parse_cursor("cursor", cursor)?;
    filter.limit = Some(limit + 1);
    let mut rows = state.store().list_sandboxes(&filter).await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    Ok(Json(Page {
        items: rows.iter().map(SandboxRecord::to_api).collect(),
        next_cursor,
    }))
}

/// Get one sandbox.
#[utoipa::path(
    operation_id = "get_sandbox",
    get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The sandbox", body = Sandbox),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<Json<Sandbox>> {
    Ok(Json(load(&state, &caller, &id).await?.to_api()))
}

/// Delete a sandbox: kill everything in it and forget it (later reads are 404).
#[utoipa::path(
    operation_id = "delete_sandbox",
    delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such sandbox", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    let sb = load(&state, &caller, &id).await?;
    if !state.store().delete_sandbox(&id, Utc::now()).await? {
        return Err(AppError::not_found(format!("sandbox {id} not found")));
    }
    let id2 = id.clone();
    if let Err(e) = state.blocking(move |engine| engine.destroy(&id2)).await {
        // The reconciler destroys runtime sandboxes the store no longer knows.
        tracing::warn!(sandbox_id = %id, error = ?e.0, "destroy failed; the reconciler will retry");
    }
    events::emit(
        &state,
        &sb.team_id,
        &id,
        events::SANDBOX_KILLED,
        json!({ "previous_state": sb.state.as_str() }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

fn require_live(sb: &SandboxRecord) -> AppResult<()> {
    match sb.state {
        SandboxState::Starting | SandboxState::Running | SandboxState::Paused => Ok(()),
        other => Err(AppError::conflict(format!("sandbox is {}", other.as_str()))),
    }
}

async fn extend(state: &AppState, sb: &SandboxRecord, timeout_s: u64) -> AppResult<Sandbox> {
    let expires = Utc::now() + secs(timeout_s);
    state
        .store()
        .set_sandbox_expiry(&sb.id, timeout_s, Some(expires))
        .await?;
    let mut sb = sb.clone();
    sb.timeout_s = timeout_s;
    sb.expires_at = Some(expires);
    Ok(sb.to_api())
}

/// Set a new timeout, counted from now.
#[utoipa::path(
    operation_id = "set_sandbox_timeout",
    post, path = "/v1/sandboxes/{id}/timeout", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = SetTimeout,
    responses(
        (status = 200, description = "The sandbox with its new expiry", body = Sandbox),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is stopped", body = ErrorBody),
        (status = 422, description = "Timeout out of range", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn set_timeout(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetTimeout>,
) -> AppResult<Json<Sandbox>> {
    let sb = load(&state, &caller, &id).await?;
    let timeout_s = check_timeout(&state, req.timeout_s)?;
    require_live(&sb)?;
    Ok(Json(extend(&state, &sb, timeout_s).await?))
}

/// Push the expiry back by the sandbox's timeout, counted from now.
#[utoipa::path(
    operation_id = "keepalive_sandbox",
    post, path = "/v1/sandboxes/{id}/keepalive", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The sandbox with its new expiry", body = Sandbox),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is stopped", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn keepalive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<Json<Sandbox>> {
    let sb = load(&state, &caller, &id).await?;
    require_live(&sb)?;
    let timeout_s = sb.timeout_s;
    Ok(Json(extend(&state, &sb, timeout_s).await?))
}

/// Freeze every process of a running sandbox.
#[utoipa::path(
    operation_id = "pause_sandbox",
    post, path = "/v1/sandboxes/{id}/pause", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The paused sandbox", body = Sandbox),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<Json<Sandbox>> {
    let sb = load(&state, &caller, &id).await?;
    if sb.state != SandboxState::Running {
        return Err(AppError::conflict(format!(
            "sandbox is {}",
            sb.state.as_str()
        )));
    }
    let id2 = id.clone();
    state.blocking(move |engine| engine.pause(&id2)).await?;
    if !state
        .store()
        .set_sandbox_state(&id, &[SandboxState::Running], SandboxState::Paused, None)
        .await?
    {
        return Err(AppError::conflict("sandbox changed state concurrently"));
    }
    events::emit(&state, &sb.team_id, &id, events::SANDBOX_PAUSED, json!({})).await;
    Ok(Json(load(&state, &caller, &id).await?.to_api()))
}

/// Thaw a paused sandbox. Its expiry restarts from now.
#[utoipa::path(
    operation_id = "resume_sandbox",
    post, path = "/v1/sandboxes/{id}/resume", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The running sandbox", body = Sandbox),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not paused", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> AppResult<Json<Sandbox>> {
    let sb = load(&state, &caller, &id).await?;
    if sb.state != SandboxState::Paused {
        return Err(AppError::conflict(format!(
            "sandbox is {}",
            sb.state.as_str()
        )));
    }
    let id2 = id.clone();
    state.blocking(move |engine| engine.resume(&id2)).await?;
    // Restart the clock first so the reaper does not see a running sandbox already expired.
    let expires = Utc::now() + secs(sb.timeout_s);
    state
        .store()
        .set_sandbox_expiry(&id, sb.timeout_s, Some(expires))
        .await?;
    if !state
        .store()
        .set_sandbox_state(&id, &[SandboxState::Paused], SandboxState::Running, None)
        .await?
    {
        return Err(AppError::conflict("sandbox changed state concurrently"));
    }
    events::emit(&state, &sb.team_id, &id, events::SANDBOX_RESUMED, json!({})).await;
    Ok(Json(load(&state, &caller, &id).await?.to_api()))
}
