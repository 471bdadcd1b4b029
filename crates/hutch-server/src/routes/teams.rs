//! `/v1/teams` (admin only).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use hutch_api::ErrorBody;
use hutch_api::sandbox::{CreateTeam, Page, Team};

use crate::auth::Admin;
use crate::error::{AppError, AppResult};
use crate::extract::ApiJson;
use crate::ids;
use crate::state::AppState;

/// Create a team.
#[utoipa::path(
    operation_id = "create_team",
    post, path = "/v1/teams", tag = "admin",
    request_body = CreateTeam,
    responses(
        (status = 201, description = "The new team", body = Team),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(req): ApiJson<CreateTeam>,
) -> AppResult<(StatusCode, Json<Team>)> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(AppError::invalid("name", "must be 1-128 characters"));
    }
    let team = Team {
        id: ids::team_id(),
        name: name.to_owned(),
        created_at: Utc::now(),
    };
    state.store().create_team(&team).await?;
    Ok((StatusCode::CREATED, Json(team)))
}

/// List teams.
#[utoipa::path(
    operation_id = "list_teams",
    get, path = "/v1/teams", tag = "admin",
    responses(
        (status = 200, description = "Teams", body = Page<Team>),
        (status = 403, description = "Not an admin key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list(State(state): State<AppState>, _admin: Admin) -> AppResult<Json<Page<Team>>> {
    let items = state.store().list_teams().await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}
