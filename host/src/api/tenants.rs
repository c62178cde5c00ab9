//! Tenants (operator only) and API keys (`admin` scope, within a tenant).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Principal, SCOPES, hash_key, new_key};
use super::dto::ProblemDoc;
use super::{ApiError, AppState};
use crate::db;
use crate::engine::rfc3339;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(me))
}

/// Who the presented credentials are: tenant, key and scopes. Clients (the
/// dashboard among them) use it to show only what the key may do.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub tenant_id: String,
    pub tenant_name: String,
    pub key_id: String,
    /// The key's scopes; `admin` implies all of them.
    pub scopes: Vec<String>,
    /// True for the operator's key, which alone manages tenants.
    pub operator: bool,
}

/// The caller's identity and scopes. Any valid key may ask.
#[utoipa::path(get, path = "/v1/me", tag = "tenants", responses((status = 200, body = Me), (status = 401, body = ProblemDoc)))]
async fn me(State(state): State<AppState>, principal: Principal) -> Result<Json<Me>, ApiError> {
    let mut conn = state.engine.db.reader().await?;
    let tenant = db::auth::tenant_by_id(&mut conn, &principal.tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("this tenant".into()))?;
    Ok(Json(Me {
        tenant_id: principal.tenant_id,
        tenant_name: tenant.name,
        key_id: principal.key_id,
        scopes: principal.scopes,
        operator: principal.operator,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Letters, digits, `-` and `_`.
    #[schema(pattern = r"^\s*[A-Za-z0-9_-]{1,64}\s*$")]
    pub name: String,
}

/// A scope an API key can hold (`admin` implies all).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the allowed values (auth::SCOPES)")]
pub enum ScopeDoc {
    #[serde(rename = "workflows:read")]
    WorkflowsRead,
    #[serde(rename = "workflows:write")]
    WorkflowsWrite,
    #[serde(rename = "runs:start")]
    RunsStart,
    #[serde(rename = "runs:read")]
    RunsRead,
    #[serde(rename = "runs:control")]
    RunsControl,
    #[serde(rename = "plugins:read")]
    PluginsRead,
    #[serde(rename = "plugins:publish")]
    PluginsPublish,
    #[serde(rename = "webhooks:manage")]
    WebhooksManage,
    #[serde(rename = "schedules:manage")]
    SchedulesManage,
    #[serde(rename = "files:write")]
    FilesWrite,
    #[serde(rename = "secrets:manage")]
    SecretsManage,
    #[serde(rename = "admin")]
    Admin,
}

#[derive(Serialize, ToSchema)]
pub struct TenantOut {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// Only in the response to create: the tenant's first admin key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TenantList {
    pub items: Vec<TenantOut>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
    #[schema(min_items = 1, value_type = Vec<ScopeDoc>)]
    pub scopes: Vec<String>,
    /// RFC 3339, in the future; the key stops working then.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// A `wft_test_` key instead of `wft_live_`.
    #[serde(default)]
    pub test: bool,
}

#[derive(Serialize, ToSchema)]
pub struct KeyOut {
    pub id: String,
    pub name: String,
    /// The first characters, to recognise the key.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    /// Only in the response to create: shown once, stored only as a hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyOut>,
    pub next_cursor: Option<String>,
}

fn key_out(k: &db::auth::ApiKey, key: Option<String>) -> KeyOut {
    KeyOut {
        id: k.id.clone(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        scopes: k.scopes.clone(),
        created_at: rfc3339(k.created_at),
        expires_at: k.expires_at.map(rfc3339),
        revoked_at: k.revoked_at.map(rfc3339),
        last_used_at: k.last_used_at.map(rfc3339),
        key,
    }
}

fn operator(principal: &Principal) -> Result<(), ApiError> {
    if principal.operator {
        Ok(())
    } else {
        Err(ApiError::Forbidden("operator".into()))
    }
}

/// Creates a tenant with a first admin key (operator key only).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, body = TenantOut), (status = 403, body = ProblemDoc), (status = 409, body = ProblemDoc)))]
async fn create_tenant(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<NewTenant>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<TenantOut>), ApiError> {
    operator(&principal)?;
    let Json(body) = body?;
    let name = body.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::Unprocessable(
            "name must be 1-64 letters, digits, - or _".into(),
        ));
    }
    let mut tx = state.engine.db.begin().await?;
    db::lock(&mut tx, &format!("tenant-name:{name}")).await?;
    if db::auth::tenant_by_name(&mut tx, name).await?.is_some() {
        return Err(ApiError::Conflict(format!("tenant {name:?} exists")));
    }
    let tenant = db::auth::Tenant {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_owned(),
        created_at: db::now_ms(),
    };
    db::auth::insert_tenant(&mut tx, &tenant).await?;
    let key = new_key("live");
    let record = db::auth::ApiKey {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant.id.clone(),
        name: "admin".into(),
        prefix: key.chars().take(13).collect(),
        scopes: vec!["admin".into()],
        operator: false,
        created_at: tenant.created_at,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    };
    db::auth::insert_key(&mut tx, &record, &hash_key(&key)).await?;
    tx.commit().await.map_err(db::DbError::from)?;
    Ok((
        StatusCode::CREATED,
        Json(TenantOut {
            id: tenant.id,
            name: tenant.name,
            created_at: rfc3339(tenant.created_at),
            admin_key: Some(key),
        }),
    ))
}

/// Every tenant (operator key only).
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", responses((status = 200, body = TenantList), (status = 403, body = ProblemDoc)))]
async fn list_tenants(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<TenantList>, ApiError> {
    operator(&principal)?;
    let mut conn = state.engine.db.reader().await?;
    let items = db::auth::list_tenants(&mut conn)
        .await?
        .into_iter()
        .map(|t| TenantOut {
            id: t.id,
            name: t.name,
            created_at: rfc3339(t.created_at),
            admin_key: None,
        })
        .collect();
    Ok(Json(TenantList {
        items,
        next_cursor: None,
    }))
}

/// Creates a key in the caller's tenant; the key is shown once.
#[utoipa::path(post, path = "/v1/api-keys", tag = "tenants", request_body = NewKey,
    responses((status = 201, body = KeyOut), (status = 403, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<NewKey>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<KeyOut>), ApiError> {
    principal.require("admin")?;
    let Json(body) = body?;
    if body.name.trim().is_empty() || body.name.chars().count() > 100 {
        return Err(ApiError::Unprocessable(
            "name must be 1-100 characters".into(),
        ));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::Unprocessable(
            "scopes must name at least one scope".into(),
        ));
    }
    if let Some(unknown) = body.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::Unprocessable(format!(
            "unknown scope {unknown:?}; scopes are {SCOPES:?}"
        )));
    }
    let expires_at = match &body.expires_at {
        None => None,
        Some(text) => {
            let at = chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    ApiError::Unprocessable(format!("expires_at {text:?} is not RFC 3339: {e}"))
                })?
                .timestamp_millis();
            if at <= db::now_ms() {
                return Err(ApiError::Unprocessable("expires_at is in the past".into()));
            }
            Some(at)
        }
    };
    let key = new_key(if body.test { "test" } else { "live" });
    let record = db::auth::ApiKey {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: principal.tenant_id.clone(),
        name: body.name.trim().to_owned(),
        prefix: key.chars().take(13).collect(),
        scopes: body.scopes,
        operator: false,
        created_at: db::now_ms(),
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    let mut conn = state.engine.db.writer().await?;
    db::auth::insert_key(&mut conn, &record, &hash_key(&key)).await?;
    Ok((StatusCode::CREATED, Json(key_out(&record, Some(key)))))
}

/// The caller's tenant's keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/api-keys", tag = "tenants", responses((status = 200, body = KeyList), (status = 403, body = ProblemDoc)))]
async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<KeyList>, ApiError> {
    principal.require("admin")?;
    let mut conn = state.engine.db.reader().await?;
    let items = db::auth::list_keys(&mut conn, &principal.tenant_id)
        .await?
        .iter()
        .map(|k| key_out(k, None))
        .collect();
    Ok(Json(KeyList {
        items,
        next_cursor: None,
    }))
}

/// Revokes a key at once.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ProblemDoc), (status = 404, body = ProblemDoc),
        (status = 409, description = "The operator's own key: only a restart with another `WEFT_ADMIN_KEY` replaces it.", body = ProblemDoc)))]
async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require("admin")?;
    let mut conn = state.engine.db.writer().await?;
    // The operator's key is refused (409): pinning another
    // `WEFT_ADMIN_KEY` is what replaces it.
    match db::auth::revoke_key(&mut conn, &principal.tenant_id, &id, db::now_ms()).await? {
        db::auth::Revoke::Revoked => Ok(StatusCode::NO_CONTENT),
        db::auth::Revoke::Operator => Err(ApiError::Conflict(format!(
            "api key {id} is the operator's key and cannot be revoked; to replace it, restart with another WEFT_ADMIN_KEY"
        ))),
        db::auth::Revoke::NotFound => Err(ApiError::NotFound(format!("api key {id:?}"))),
    }
}
