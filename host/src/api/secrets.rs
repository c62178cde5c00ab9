//! `/v1/secrets`: write-only tenant secrets. No endpoint ever returns a value.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::dto::ProblemDoc;
use super::{ApiError, AppState};
use crate::db;
use crate::engine::rfc3339;

/// Largest secret value, in bytes.
const MAX_SECRET_BYTES: usize = 64 << 10;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(put, delete))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretIn {
    pub value: String,
}

#[derive(Serialize, ToSchema)]
pub struct SecretOut {
    pub name: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct SecretList {
    pub items: Vec<SecretOut>,
    pub next_cursor: Option<String>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(
            "secret names are 1-128 letters, digits, _, - or .".into(),
        ))
    }
}

/// Sets a secret (encrypted at rest); plugins read it only if granted.
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)), request_body = SecretIn,
    responses((status = 200, body = SecretOut), (status = 422, body = ProblemDoc)))]
async fn put(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    body: Result<Json<SecretIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SecretOut>, ApiError> {
    principal.require("secrets:manage")?;
    let Json(body) = body?;
    check_name(&name)?;
    if body.value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::Unprocessable(format!(
            "secret values are at most {MAX_SECRET_BYTES} bytes"
        )));
    }
    let secrets = state
        .engine
        .config
        .secrets
        .as_ref()
        .ok_or_else(|| ApiError::Internal("no secrets key is configured".into()))?;
    let sealed = secrets.seal(&principal.tenant_id, &name, body.value.as_bytes());
    let now = db::now_ms();
    let mut conn = state.engine.db.writer().await?;
    db::state::secret_put(&mut conn, &principal.tenant_id, &name, &sealed, now).await?;
    Ok(Json(SecretOut {
        name,
        updated_at: rfc3339(now),
    }))
}

/// Names of the tenant's secrets, never their values.
#[utoipa::path(get, path = "/v1/secrets", tag = "secrets", responses((status = 200, body = SecretList)))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<SecretList>, ApiError> {
    principal.require("secrets:manage")?;
    let mut conn = state.engine.db.reader().await?;
    let items = db::state::secret_names(&mut conn, &principal.tenant_id)
        .await?
        .into_iter()
        .map(|(name, at)| SecretOut {
            name,
            updated_at: rfc3339(at),
        })
        .collect();
    Ok(Json(SecretList {
        items,
        next_cursor: None,
    }))
}

/// Deletes a secret.
#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ProblemDoc)))]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require("secrets:manage")?;
    let mut conn = state.engine.db.writer().await?;
    if db::state::secret_delete(&mut conn, &principal.tenant_id, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("secret {name:?}")))
    }
}
