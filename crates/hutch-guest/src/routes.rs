//! The route table.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use std::panic::AssertUnwindSafe;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::FutureExt;
use http::{Method, Uri};

use crate::error::GuestError;
use crate::state::GuestState;
use crate::{auth, files, health, process, terminal};

/// The guest's axum router (all routes require the token).
pub fn router(state: GuestState) -> Router {
    use process::routes as p;
    use terminal::routes as t;
    Router::new()
        .route("/health", get(health::health))
        .route("/exec", post(p::exec))
        .route("/processes", post(p::start).get(p::list))
        .route("/processes/{id}", get(p::get).delete(p::delete))
        .route("/processes/{id}/wait", post(p::wait))
        .route("/processes/{id}/stdin", post(p::stdin))
        .route("/processes/{id}/signal", post(p::signal))
        .route("/processes/{id}/output", get(p::output))
        .route("/terminals", post(t::create).get(t::list))
        .route("/terminals/{name}", get(t::get).delete(t::delete))
        .route("/terminals/{name}/screen", get(t::screen))
        .route("/terminals/{name}/input", post(t::input))
        .route("/terminals/{name}/resize", post(t::resize))
        .route("/terminals/{name}/attach", get(terminal::attach::attach))
        .route(
            "/files",
            get(files::read).put(files::write).delete(files::remove),
        )
        .route("/files/list", get(files::list))
        .route("/files/stat", get(files::stat))
        .route("/files/mkdir", post(files::mkdir))
        .route("/files/move", post(files::rename))
        .route(
            "/files/archive",
            get(files::archive::download).put(files::archive::upload),
        )
        .route("/files/watch", get(files::watch::watch))
        .route("/ports/{port}/connect", get(crate::ports::connect))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(middleware::from_fn(catch_panic))
        // Bodies are limited per route (JSON 1 MiB, uploads 1 GiB).
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Turn a panicking handler into a 500 envelope instead of a dropped connection.
async fn catch_panic(req: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(resp) => resp,
        Err(_) => GuestError::Internal("handler panicked".into()).into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> GuestError {
    GuestError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> GuestError {
    GuestError::NotFound(format!("method {method} not supported on {}", uri.path()))
}
