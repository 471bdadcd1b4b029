//! HTTP handlers for `/processes` and `/exec`.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream;
use http::{HeaderMap, StatusCode};
use hutch_api::process::{
    ProcessEvent, ProcessInfo, ProcessState, RunResult, SignalRequest, StartProcess, StdinWrite,
    StreamKind,
};
use serde::Deserialize;

use super::output::{Cursor, OutputEvent};
use super::parse_signal;
use crate::error::GuestError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::GuestState;
use crate::stream::StreamFormat;

/// Default per-stream output limit of `exec`.
pub const DEFAULT_MAX_OUTPUT: u64 = 1024 * 1024;
/// Largest per-stream output limit of `exec`.
pub const MAX_MAX_OUTPUT: u64 = 16 * 1024 * 1024;

/// Query of `POST /processes`.
#[derive(Debug, Default, Deserialize)]
pub struct StartQuery {
    /// `ndjson` or `sse` for a streaming response.
    pub stream: Option<String>,
}

/// `POST /processes`: start a background process, or stream its events.
pub async fn start(
    State(state): State<GuestState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StartQuery>,
    ApiJson(req): ApiJson<StartProcess>,
) -> Result<Response, GuestError> {
    let format = StreamFormat::negotiate(&headers, q.stream.as_deref())?;
    let started = state.start_process(req, format.is_some()).await?;
    let entry = started.entry;
    match (format, started.consumer) {
        (Some(format), Some(cursor)) => {
            let start = ProcessEvent::Start {
                id: entry.id(),
                pid: entry.pid,
            };
            Ok(format.response(event_stream(format, Some(start), cursor)))
        }
        _ => Ok((StatusCode::CREATED, Json(entry.info())).into_response()),
    }
}

fn event_name(ev: &ProcessEvent) -> &'static str {
    match ev {
        ProcessEvent::Start { .. } => "start",
        ProcessEvent::Stdout { .. } => "stdout",
        ProcessEvent::Stderr { .. } => "stderr",
        ProcessEvent::Gap { .. } => "gap",
        ProcessEvent::Exit { .. } => "exit",
    }
}

/// Encode an optional first event and then everything a cursor yields.
fn event_stream(
    format: StreamFormat,
    first: Option<ProcessEvent>,
    cursor: Cursor,
) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    stream::unfold((first, cursor), move |(first, mut cursor)| async move {
        if let Some(ev) = first {
            return Some((format.encode(event_name(&ev), &ev), (None, cursor)));
        }
        let ev = cursor.next().await?.to_wire();
        Some((format.encode(event_name(&ev), &ev), (None, cursor)))
    })
}

/// Query of `POST /exec`.
#[derive(Debug, Default, Deserialize)]
pub struct ExecQuery {
    /// Bytes kept per stream (default 1 MiB, at most 16 MiB).
    pub max_output: Option<u64>,
}

/// `POST /exec`: run to completion and return the collected output.
pub async fn exec(
    State(state): State<GuestState>,
    ApiQuery(q): ApiQuery<ExecQuery>,
    ApiJson(req): ApiJson<StartProcess>,
) -> Result<Json<RunResult>, GuestError> {
    let max = q.max_output.unwrap_or(DEFAULT_MAX_OUTPUT);
    if max > MAX_MAX_OUTPUT {
        return Err(GuestError::invalid(
            "max_output",
            format!("max_output must be at most {MAX_MAX_OUTPUT}"),
        ));
    }
    let started = state.start_process(req, true).await?;
    let Some(mut cursor) = started.consumer else {
        return Err(GuestError::Internal("no output consumer".into()));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut truncated = false;
    let mut exit = None;
    while let Some(ev) = cursor.next().await {
        match ev {
            OutputEvent::Data { kind, data, .. } => {
                let buf = if kind == StreamKind::Stdout {
                    &mut stdout
                } else {
                    &mut stderr
                };
                let room = (max as usize).saturating_sub(buf.len());
                if data.len() > room {
                    truncated = true;
                }
                buf.extend_from_slice(&data[..data.len().min(room)]);
            }
            OutputEvent::Gap { .. } => truncated = true,
            OutputEvent::Exit(e) => exit = Some(e),
        }
    }
    let exit = exit.ok_or_else(|| GuestError::Internal("process ended without exit".into()))?;
    Ok(Json(RunResult {
        id: started.entry.id(),
        exit_code: exit.status.code,
        signal: exit.status.signal,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        duration_ms: exit.duration_ms,
        truncated,
        timed_out: exit.timed_out,
    }))
}

/// Query of `GET /processes`.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// `running` or `exited`.
    pub state: Option<ProcessState>,
    /// Only processes with this tag.
    pub tag: Option<String>,
}

/// `GET /processes`.
pub async fn list(
    State(state): State<GuestState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Json<Vec<ProcessInfo>> {
    let infos = state
        .processes()
        .list()
        .iter()
        .map(|p| p.info())
        .filter(|i| q.state.is_none_or(|s| s == i.state))
        .filter(|i| q.tag.as_ref().is_none_or(|t| i.tag.as_ref() == Some(t)))
        .collect();
    Json(infos)
}

/// `GET /processes/{id}`.
pub async fn get(
    State(state): State<GuestState>,
    Path(id): Path<String>,
) -> Result<Json<ProcessInfo>, GuestError> {
    Ok(Json(state.processes().get(&id)?.info()))
}

/// Query of `POST /processes/{id}/wait`.
#[derive(Debug, Default, Deserialize)]
pub struct WaitQuery {
    /// Give up (504) after this many milliseconds.
    pub timeout_ms: Option<u64>,
}

/// `POST /processes/{id}/wait`.
pub async fn wait(
    State(state): State<GuestState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Json<ProcessInfo>, GuestError> {
    let p = state.processes().get(&id)?;
    match q.timeout_ms {
        Some(ms) => {
            tokio::time::timeout(Duration::from_millis(ms), p.output.wait_exit())
                .await
                .map_err(|_| {
                    GuestError::Timeout(format!("process {id} still running after {ms} ms"))
                })?;
        }
        None => {
            p.output.wait_exit().await;
        }
    }
    Ok(Json(p.info()))
}

/// `POST /processes/{id}/stdin`.
pub async fn stdin(
    State(state): State<GuestState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<StdinWrite>,
) -> Result<StatusCode, GuestError> {
    let p = state.processes().get(&id)?;
    p.write_stdin(req.data.as_bytes(), req.close).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /processes/{id}/signal`.
pub async fn signal(
    State(state): State<GuestState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SignalRequest>,
) -> Result<StatusCode, GuestError> {
    let p = state.processes().get(&id)?;
    let sig = parse_signal(&req.signal)?;
    p.signal(sig)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /processes/{id}/output`.
#[derive(Debug, Default, Deserialize)]
pub struct OutputQuery {
    /// Byte offset to start from (default 0).
    #[serde(default)]
    pub offset: u64,
    /// Keep streaming live output until the exit.
    #[serde(default)]
    pub follow: bool,
    /// `ndjson` (default) or `sse`.
    pub stream: Option<String>,
}

/// `GET /processes/{id}/output`.
pub async fn output(
    State(state): State<GuestState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<OutputQuery>,
) -> Result<Response, GuestError> {
    let p = state.processes().get(&id)?;
    let format =
        StreamFormat::negotiate(&headers, q.stream.as_deref())?.unwrap_or(StreamFormat::Ndjson);
    let cursor = p.cursor(q.offset, q.follow);
    Ok(format.response(event_stream(format, None, cursor)))
}

/// `DELETE /processes/{id}`: kill the group if running, forget the process.
pub async fn delete(
    State(state): State<GuestState>,
    Path(id): Path<String>,
) -> Result<StatusCode, GuestError> {
    let p = state.processes().get(&id)?;
    if p.output.exit().is_none() {
        if p.is_alive() {
            let _ = p.signal(nix::sys::signal::Signal::SIGKILL);
        }
        if tokio::time::timeout(Duration::from_secs(10), p.output.wait_exit())
            .await
            .is_err()
        {
            tracing::warn!(%id, "process did not finish after SIGKILL; forgetting it anyway");
        }
    }
    state.processes().remove(p.num);
    Ok(StatusCode::NO_CONTENT)
}
