//! HTTP handlers for `/terminals`.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use hutch_api::terminal::{
    CreateTerminal, TerminalInfo, TerminalInput, TerminalResize, TerminalScreen,
};
use serde::Deserialize;

use super::keys::key_bytes;
use crate::error::GuestError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::GuestState;

/// `POST /terminals`.
pub async fn create(
    State(state): State<GuestState>,
    ApiJson(req): ApiJson<CreateTerminal>,
) -> Result<(StatusCode, Json<TerminalInfo>), GuestError> {
    let s = state
        .terminals()
        .create(req, &state.config().env, state.users())
        .await?;
    Ok((StatusCode::CREATED, Json(s.info())))
}

/// `GET /terminals`.
pub async fn list(State(state): State<GuestState>) -> Json<Vec<TerminalInfo>> {
    Json(state.terminals().list().iter().map(|s| s.info()).collect())
}

/// `GET /terminals/{name}`.
pub async fn get(
    State(state): State<GuestState>,
    Path(name): Path<String>,
) -> Result<Json<TerminalInfo>, GuestError> {
    Ok(Json(state.terminals().get(&name)?.info()))
}

/// Query of `GET /terminals/{name}/screen`.
#[derive(Debug, Default, Deserialize)]
pub struct ScreenQuery {
    /// Lines of scrollback to include.
    #[serde(default)]
    pub scrollback: usize,
}

/// `GET /terminals/{name}/screen`.
pub async fn screen(
    State(state): State<GuestState>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<ScreenQuery>,
) -> Result<Json<TerminalScreen>, GuestError> {
    Ok(Json(state.terminals().get(&name)?.screen(q.scrollback)))
}

/// `POST /terminals/{name}/input`: text, then named keys.
pub async fn input(
    State(state): State<GuestState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<TerminalInput>,
) -> Result<StatusCode, GuestError> {
    let s = state.terminals().get(&name)?;
    let app_cursor = s.application_cursor();
    let mut data = req.text.unwrap_or_default().into_bytes();
    for k in &req.keys {
        let bytes = key_bytes(k, app_cursor)
            .ok_or_else(|| GuestError::invalid("keys", format!("unknown key: {k}")))?;
        data.extend(bytes);
    }
    if !s.alive() {
        return Err(GuestError::Conflict(format!("terminal {name} has exited")));
    }
    s.write(&data).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /terminals/{name}/resize`.
pub async fn resize(
    State(state): State<GuestState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<TerminalResize>,
) -> Result<Json<TerminalInfo>, GuestError> {
    let s = state.terminals().get(&name)?;
    s.resize(req.cols, req.rows)?;
    Ok(Json(s.info()))
}

/// `DELETE /terminals/{name}`.
pub async fn delete(
    State(state): State<GuestState>,
    Path(name): Path<String>,
) -> Result<StatusCode, GuestError> {
    state.terminals().remove(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
