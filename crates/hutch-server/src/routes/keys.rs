//! `/v1/keys` (admin only).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use hutch_api::ErrorBody;
use hutch_api::sandbox::{ApiKey, CreateApiKey, CreatedApiKey, Page};
use serde::Deserialize;

use crate::auth::{self, Admin};
use crate::error::{AppError, AppResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

/// Create an API key (its secret is returned only here).
#[utoipa::path(
    operation_id = "create_key",
    post, path = "/v1/keys", tag = "admin",
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "The new key with its secret", body = CreatedApiKey),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 422, description = "Invalid name or unknown team", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> AppResult<(StatusCode, Json<CreatedApiKey>)> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(AppError::invalid("name", "must be 1-128 characters"));
    }
    let team_id = req.team_id.unwrap_or(caller.team_id);
    if state.store().get_team(&team_id).await?.is_none() {
        return Err(AppError::invalid(
            "team_id",
            format!("team {team_id} not found"),
        ));
    }
    let created =
        auth::create_key(state.store(), state.hasher(), &team_id, name, req.admin).await?;
    tracing::info!(key_id = %created.meta.id, team_id = %team_id, admin = req.admin, "API key created");
    Ok((StatusCode::CREATED, Json(created)))
}

/// Query of `GET /v1/keys`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListKeys {
    /// Only keys of this team.
    pub team_id: Option<String>,
}

/// List API keys (metadata only).
#[utoipa::path(
    operation_id = "list_keys",
    get, path = "/v1/keys", tag = "admin",
    params(ListKeys),
    responses(
        (status = 200, description = "Keys", body = Page<ApiKey>),
        (status = 403, description = "Not an admin key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<ListKeys>,
) -> AppResult<Json<Page<ApiKey>>> {
    let items = state.store().list_keys(q.team_id.as_deref()).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Revoke an API key. It stops working at once.
#[utoipa::path(
    operation_id = "revoke_key",
    delete, path = "/v1/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 204, description = "Revoked (or already revoked)"),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    if state.store().get_key(&id).await?.is_none() {
        return Err(AppError::not_found(format!("key {id} not found")));
    }
    state.store().revoke_key(&id, Utc::now()).await?;
    tracing::info!(key_id = %id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
