//! `GET /v1/events`.

use axum::Json;
use axum::extract::State;
use hutch_api::ErrorBody;
use hutch_api::sandbox::{Event, Page};
use hutch_store::EventFilter;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{AppError, AppResult};
use crate::events;
use crate::extract::ApiQuery;
use crate::routes::sandboxes::{parse_cursor, parse_limit};
use crate::state::AppState;

/// Query of `GET /v1/events`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEvents {
    /// Only events about this sandbox.
    pub sandbox_id: Option<String>,
    /// Only events of this type (e.g. `sandbox.created`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// Only events older than this id (`next_cursor` of the previous page).
    pub before: Option<String>,
    /// Page size (1-500, default 50).
    pub limit: Option<String>,
}

/// The team's events, newest first.
#[utoipa::path(
    operation_id = "list_events",
    get, path = "/v1/events", tag = "events",
    params(ListEvents),
    responses(
        (status = 200, description = "A page of events", body = Page<Event>),
        (status = 422, description = "Invalid filter", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListEvents>,
) -> AppResult<Json<Page<Event>>> {
    if let Some(kind) = q
        .kind
        .as_ref()
        .filter(|k| !events::ALL.contains(&k.as_str()))
    {
        return Err(AppError::invalid(
            "type",
            format!("unknown event type {kind}"),
        ));
    }
    let limit = parse_limit(q.limit.as_deref())?;
    let filter = EventFilter {
        team_id: Some(caller.team_id),
        sandbox_id: q.sandbox_id,
        kind: q.kind,
        before: parse_cursor("before", q.before.as_deref())?,
        limit: Some(limit + 1),
    };
    let mut items = state.store().list_events(&filter).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|e| e.id.to_string())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}
