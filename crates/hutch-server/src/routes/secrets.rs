//! `/v1/secrets`: a team's secrets. Values go in and never come back out: every answer is
//! metadata, and errors about a request body never quote it.

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use hutch_api::ErrorBody;
use hutch_api::sandbox::Page;
use hutch_api::secrets::{CreateSecret, Secret, UpdateSecret};
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::auth::Caller;
use crate::error::{AppError, AppResult};
use crate::extract::{MAX_JSON_BYTES, read_limited};
use crate::state::AppState;

/// A JSON body holding a secret value. Unlike `ApiJson`, parse errors keep serde's description
/// of the input out of the message (serde quotes offending values, e.g. `invalid type: integer
/// 12345`); the raw body is wiped once parsed.
pub struct SecretJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for SecretJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &AppState) -> Result<Self, AppError> {
        let body = Zeroizing::new(
            read_limited(req.into_body(), MAX_JSON_BYTES)
                .await?
                .to_vec(),
        );
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(AppError::bad_request("a JSON body is required"));
        }
        serde_json::from_slice(&body).map(SecretJson).map_err(|e| {
            if e.classify() != serde_json::error::Category::Data {
                return AppError::bad_request("invalid JSON");
            }
            let message = e.to_string();
            // Only our own field names are quoted back: an unknown key is user text and could
            // be the value pasted in the wrong place.
            if let Some(field) = message
                .split("missing field `")
                .nth(1)
                .and_then(|rest| rest.split('`').next())
                .filter(|f| ["name", "value"].contains(f))
            {
                return AppError::invalid(field, format!("`{field}` is required"));
            }
            if message.starts_with("unknown field") {
                return AppError::invalid(
                    "body",
                    "unknown field (the fields are name, value and description)",
                );
            }
            AppError::invalid(
                "body",
                "expected {\"name\": string, \"value\": string, \"description\"?: string}",
            )
        })
    }
}

/// Create a secret. The value is stored encrypted and never returned.
#[utoipa::path(
    operation_id = "create_secret",
    post, path = "/v1/secrets", tag = "secrets",
    request_body = CreateSecret,
    responses(
        (status = 201, description = "The new secret's metadata", body = Secret),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "The team already has a secret of that name", body = ErrorBody),
        (status = 422, description = "Invalid name, value (empty or over 64 KiB) or description", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    SecretJson(req): SecretJson<CreateSecret>,
) -> AppResult<(StatusCode, Json<Secret>)> {
    let value = Zeroizing::new(req.value);
    let secret = state
        .secrets()
        .create(
            &caller.team_id,
            &req.name,
            &value,
            req.description.as_deref(),
            &req.hosts,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(secret)))
}

/// List the team's secrets (metadata only), by name.
#[utoipa::path(
    operation_id = "list_secrets",
    get, path = "/v1/secrets", tag = "secrets",
    responses(
        (status = 200, description = "Secrets", body = Page<Secret>),
    ),
    security(("api_key" = []))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> AppResult<Json<Page<Secret>>> {
    let items = state.secrets().list(&caller.team_id).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// One secret's metadata.
#[utoipa::path(
    operation_id = "get_secret",
    get, path = "/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "Secret name")),
    responses(
        (status = 200, description = "The secret's metadata", body = Secret),
        (status = 404, description = "No such secret in this team", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> AppResult<Json<Secret>> {
    match state.secrets().get(&caller.team_id, &name).await? {
        Some(s) => Ok(Json(s)),
        None => Err(not_found(&name)),
    }
}

/// Rotate a secret: replace its value (and, when given, its description).
#[utoipa::path(
    operation_id = "update_secret",
    put, path = "/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "Secret name")),
    request_body = UpdateSecret,
    responses(
        (status = 200, description = "The secret's metadata", body = Secret),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such secret in this team", body = ErrorBody),
        (status = 422, description = "Invalid name, value or description", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    SecretJson(req): SecretJson<UpdateSecret>,
) -> AppResult<Json<Secret>> {
    let value = Zeroizing::new(req.value);
    match state
        .secrets()
        .rotate(
            &caller.team_id,
            &name,
            &value,
            req.description.as_deref(),
            req.hosts.as_deref(),
        )
        .await?
    {
        Some(s) => Ok(Json(s)),
        None => Err(not_found(&name)),
    }
}

/// Delete a secret.
#[utoipa::path(
    operation_id = "delete_secret",
    delete, path = "/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "Secret name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such secret in this team", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> AppResult<StatusCode> {
    if state.secrets().delete(&caller.team_id, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&name))
    }
}

fn not_found(name: &str) -> AppError {
    AppError::not_found(format!("secret {name} not found"))
}
