//! `/v1/templates`: list, import (tar or tar.gz body), delete. Templates are shared by every
//! team; importing and deleting them needs an admin key.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use futures::StreamExt;
use hutch_api::sandbox::{Page, Template};
use hutch_api::{ApiError, ErrorBody, ErrorCode};
use hutch_sandbox::TemplateInfo;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::auth::{Admin, Caller};
use crate::error::{AppError, AppResult};
use crate::extract::ApiQuery;
use crate::ids;
use crate::state::AppState;

/// The template every sandbox uses by default; it cannot be deleted.
pub const BASE_TEMPLATE: &str = "base";

fn to_api(t: TemplateInfo, in_use: u64) -> Template {
    Template {
        name: t.name,
        size_bytes: t.size_bytes,
        created_at: t.created_at,
        in_use,
    }
}

/// Whether `name` is a valid template name (`[a-z0-9][a-z0-9._-]{0,62}`).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

/// List templates with the number of live sandboxes using each.
#[utoipa::path(
    operation_id = "list_templates",
    get, path = "/v1/templates", tag = "templates",
    responses((status = 200, description = "Templates", body = Page<Template>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> AppResult<Json<Page<Template>>> {
    let templates = state.blocking(|engine| engine.templates().list()).await?;
    let usage = state.store().template_usage().await?;
    let items = templates
        .into_iter()
        .map(|t| {
            let n = usage.get(&t.name).copied().unwrap_or(0);
            to_api(t, n)
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Query of `POST /v1/templates`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Name of the new template (`[a-z0-9][a-z0-9._-]{0,62}`).
    pub name: Option<String>,
}

/// Import a template from a tar (or gzip-compressed tar) of its root filesystem. The body is
/// streamed to disk, never held in memory.
#[utoipa::path(
    operation_id = "import_template",
    post, path = "/v1/templates", tag = "templates",
    params(ImportQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar",
                 description = "tar or tar.gz of the root filesystem"),
    responses(
        (status = 201, description = "Imported", body = Template),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 409, description = "A template with this name exists", body = ErrorBody),
        (status = 422, description = "Invalid name or archive", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn import(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<ImportQuery>,
    body: Body,
) -> AppResult<(StatusCode, Json<Template>)> {
    let name = q.name.unwrap_or_default();
    if !valid_name(&name) {
        return Err(AppError::invalid(
            "name",
            "must match [a-z0-9][a-z0-9._-]{0,62}",
        ));
    }
    if state.engine().templates().exists(&name) {
        return Err(AppError(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("template {name} already exists"),
        )));
    }
    let tmp_dir = state.config().data_dir.join("tmp");
    tokio::fs::create_dir_all(&tmp_dir).await.map_err(|e| {
        tracing::error!(error = %e, "cannot create the upload directory");
        AppError::internal("cannot store the upload")
    })?;
    let tmp = tmp_dir.join(ids::lower_id("upload-", 16));
    let result = import_from(&state, &name, body, &tmp).await;
    let _ = tokio::fs::remove_file(&tmp).await;
    let info = result?;
    tracing::info!(template = %info.name, size = info.size_bytes, "template imported");
    Ok((StatusCode::CREATED, Json(to_api(info, 0))))
}

async fn import_from(
    state: &AppState,
    name: &str,
    body: Body,
    tmp: &std::path::Path,
) -> AppResult<TemplateInfo> {
    let write_err = |e: std::io::Error| {
        tracing::error!(error = %e, "cannot write the upload");
        AppError::internal("cannot store the upload")
    };
    let mut file = tokio::fs::File::create(tmp).await.map_err(write_err)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| AppError::bad_request("the upload was interrupted"))?;
        total += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(write_err)?;
    }
    file.flush().await.map_err(write_err)?;
    drop(file);
    if total == 0 {
        return Err(AppError::invalid(
            "body",
            "a tar or tar.gz archive is required",
        ));
    }
    let (name, path) = (name.to_owned(), tmp.to_path_buf());
    state
        .blocking(move |engine| {
            let f = std::fs::File::open(&path).map_err(|source| hutch_sandbox::Error::Io {
                context: "opening the upload".into(),
                source,
            })?;
            engine
                .templates()
                .import_tar(&name, std::io::BufReader::new(f))
        })
        .await
        .map_err(|e| match e.0.code {
            // A broken archive is the client's fault, not the runtime's.
            ErrorCode::Unavailable | ErrorCode::Internal => {
                AppError::invalid("body", "the archive could not be imported")
            }
            _ => e,
        })
}

/// Delete a template (409 while a sandbox uses it).
#[utoipa::path(
    operation_id = "delete_template",
    delete, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 409, description = "In use, or the base template", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> AppResult<StatusCode> {
    if !valid_name(&name) || !state.engine().templates().exists(&name) {
        return Err(AppError::not_found(format!("template {name} not found")));
    }
    if name == BASE_TEMPLATE {
        return Err(AppError::conflict("the base template cannot be deleted"));
    }
    let in_use = state
        .store()
        .template_usage()
        .await?
        .get(&name)
        .copied()
        .unwrap_or(0);
    if in_use > 0 {
        return Err(AppError::conflict(format!(
            "template {name} is in use by {in_use} sandbox(es)"
        )));
    }
    let n = name.clone();
    state
        .blocking(move |engine| engine.templates().delete(&n))
        .await
        .map_err(|e| match e.0.code {
            ErrorCode::InvalidArgument => AppError::not_found(format!("template {name} not found")),
            _ => e,
        })?;
    Ok(StatusCode::NO_CONTENT)
}
