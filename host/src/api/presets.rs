//! `/v1/workflows/{key}/presets`: a workflow's saved inputs. A run started
//! with `"preset": "<name>"` gets the preset's input under its own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::dto::ProblemDoc;
use super::{ApiError, AppState};
use crate::engine::labels::Preset;
use crate::engine::rfc3339;

/// Whoever may read a workflow or start its runs may read its presets.
const READ: [&str; 2] = ["workflows:read", "runs:start"];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get, put, delete))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresetIn {
    /// A JSON object (at most 64 KiB), merged under each run's input.
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(max_length = 1000)]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PresetOut {
    pub workflow: String,
    pub name: String,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub input: Value,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Preset> for PresetOut {
    fn from(p: Preset) -> Self {
        Self {
            workflow: p.workflow,
            name: p.name,
            description: p.description,
            input: p.input,
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PresetList {
    pub items: Vec<PresetOut>,
}

/// The workflow's presets by name.
#[utoipa::path(get, path = "/v1/workflows/{key}/presets", tag = "workflows", params(("key" = String, Path)),
    responses((status = 200, body = PresetList), (status = 404, body = ProblemDoc)))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(key): Path<String>,
) -> Result<Json<PresetList>, ApiError> {
    principal.require_any(&READ)?;
    let presets = state
        .engine
        .list_presets(&principal.tenant_id, &key)
        .await?;
    Ok(Json(PresetList {
        items: presets.into_iter().map(PresetOut::from).collect(),
    }))
}

/// One preset.
#[utoipa::path(get, path = "/v1/workflows/{key}/presets/{name}", tag = "workflows",
    params(("key" = String, Path), ("name" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")),
    responses((status = 200, body = PresetOut), (status = 404, body = ProblemDoc)))]
async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path((key, name)): Path<(String, String)>,
) -> Result<Json<PresetOut>, ApiError> {
    principal.require_any(&READ)?;
    let preset = state
        .engine
        .get_preset(&principal.tenant_id, &key, &name)
        .await?;
    Ok(Json(preset.into()))
}

/// Creates (201) or replaces (200) a preset. Names are 1-64 letters,
/// digits, `_ - .`; a workflow has at most 100 presets.
#[utoipa::path(put, path = "/v1/workflows/{key}/presets/{name}", tag = "workflows",
    params(("key" = String, Path), ("name" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")), request_body = PresetIn,
    responses((status = 200, body = PresetOut), (status = 201, body = PresetOut), (status = 404, body = ProblemDoc),
        (status = 409, body = ProblemDoc, description = "The workflow already has 100 presets"), (status = 422, body = ProblemDoc)))]
async fn put(
    State(state): State<AppState>,
    principal: Principal,
    Path((key, name)): Path<(String, String)>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<PresetOut>), ApiError> {
    principal.require("workflows:write")?;
    let Json(body) = body?;
    let request: PresetIn = serde_json::from_value(body)
        .map_err(|e| ApiError::Unprocessable(format!("invalid request: {e}")))?;
    let (preset, created) = state
        .engine
        .put_preset(
            &principal.tenant_id,
            &key,
            &name,
            request.description,
            request.input,
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(preset.into())))
}

/// Deletes a preset; runs started from it keep their input and label.
#[utoipa::path(delete, path = "/v1/workflows/{key}/presets/{name}", tag = "workflows",
    params(("key" = String, Path), ("name" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")),
    responses((status = 204), (status = 404, body = ProblemDoc)))]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path((key, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    principal.require("workflows:write")?;
    state
        .engine
        .delete_preset(&principal.tenant_id, &key, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
