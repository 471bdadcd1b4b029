//! Unauthenticated operational routes: `/healthz`, `/readyz`, `/metrics`, `/v1/openapi.json`,
//! `/docs`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use hutch_api::ErrorBody;
use serde::Serialize;

use crate::error::AppError;
use crate::routes::templates::BASE_TEMPLATE;
use crate::state::AppState;

/// Body of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok`.
    pub status: String,
}

fn ok() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Alive", body = Status)))]
pub async fn healthz() -> Json<Status> {
    ok()
}

/// Readiness: the store and the engine work.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "Ready", body = Status),
              (status = 503, description = "Store or engine unavailable", body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, AppError> {
    if let Err(e) = state.store().ping().await {
        tracing::warn!(error = %e, "store not ready");
        return Err(AppError::unavailable("the store is unavailable"));
    }
    let engine_ok = state
        .blocking(|engine| Ok(engine.templates().exists(BASE_TEMPLATE)))
        .await
        .unwrap_or(false);
    if !engine_ok {
        return Err(AppError::unavailable("the sandbox engine is not ready"));
    }
    Ok(ok())
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Metrics", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.store().count_sandboxes_by_state().await {
        Ok(counts) => state.metrics().set_sandbox_counts(&counts),
        Err(e) => tracing::warn!(error = %e, "cannot count sandboxes for metrics"),
    }
    state
        .metrics()
        .set_egress_dropped(state.network().egress().dropped());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().encode(),
    )
        .into_response()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI document", body = Object)))]
pub async fn openapi_json() -> Response {
    match crate::openapi::document().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(_) => AppError::internal("cannot render the OpenAPI document").into_response(),
    }
}

/// Human-readable API documentation (self-contained HTML).
#[utoipa::path(get, path = "/docs", tag = "ops",
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
pub async fn docs() -> Html<&'static str> {
    Html(crate::docs_page::HTML)
}
