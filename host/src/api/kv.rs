//! `/v1/kv/{bucket}`: the tenant's key-value store, the data plugins read
//! and write (`invoices/<id>`, `payments/<id>`, …). Integrators load their
//! records here and read back what steps changed. Values are JSON.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::dto::ProblemDoc;
use super::{ApiError, AppState, page_limit, paginate};
use crate::db;
use crate::engine::rfc3339;
use crate::runtime::services::{MAX_KV_KEY_BYTES, MAX_KV_VALUE_BYTES};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get, put, delete))
}

#[derive(Serialize, ToSchema)]
pub struct EntryOut {
    pub key: String,
    /// The stored JSON value, any JSON (a non-JSON value is returned as a
    /// string).
    pub value: Value,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct EntryList {
    pub items: Vec<EntryOut>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only keys starting with this, e.g. `invoices/`.
    prefix: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    cursor: Option<String>,
}

fn check_names(bucket: &str, key: Option<&str>) -> Result<(), ApiError> {
    if bucket.is_empty() || bucket.len() > 128 {
        return Err(ApiError::Unprocessable(
            "bucket names are 1 to 128 bytes".into(),
        ));
    }
    if let Some(key) = key
        && (key.is_empty() || key.len() > MAX_KV_KEY_BYTES)
    {
        return Err(ApiError::Unprocessable(format!(
            "keys are 1 to {MAX_KV_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

fn entry(key: String, value: &[u8], updated_at: i64) -> EntryOut {
    EntryOut {
        key,
        value: serde_json::from_slice(value)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(value).into_owned())),
        updated_at: rfc3339(updated_at),
    }
}

/// Entries of a bucket in key order (`default` is the bucket plugins use
/// unless configured otherwise).
#[utoipa::path(get, path = "/v1/kv/{bucket}", tag = "data", params(("bucket" = String, Path), ListQuery),
    responses((status = 200, body = EntryList), (status = 422, body = ProblemDoc, description = "A bucket name over 128 bytes")))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(bucket): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EntryList>, ApiError> {
    principal.require("workflows:read")?;
    let Query(query) = query?;
    check_names(&bucket, None)?;
    let limit = page_limit(query.limit)?;
    let mut conn = state.engine.db.reader().await?;
    let rows = db::state::kv_entries(
        &mut conn,
        &principal.tenant_id,
        &bucket,
        query.prefix.as_deref().unwrap_or(""),
        query.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = paginate(rows, limit, |(key, _, _)| key.clone());
    let items = rows
        .into_iter()
        .map(|(k, v, at)| entry(k, &v, at))
        .collect();
    Ok(Json(EntryList { items, next_cursor }))
}

/// One entry. A key containing `/` is sent URL-encoded: `invoices%2Finv-1`.
#[utoipa::path(get, path = "/v1/kv/{bucket}/{key}", tag = "data", params(("bucket" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = EntryOut), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc, description = "A name over its byte limit")))]
async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Json<EntryOut>, ApiError> {
    principal.require("workflows:read")?;
    check_names(&bucket, Some(&key))?;
    let mut conn = state.engine.db.reader().await?;
    let rows =
        db::state::kv_entries(&mut conn, &principal.tenant_id, &bucket, &key, None, 1).await?;
    match rows.into_iter().next() {
        Some((k, v, at)) if k == key => Ok(Json(entry(k, &v, at))),
        _ => Err(ApiError::NotFound(format!(
            "key {key:?} in bucket {bucket:?}"
        ))),
    }
}

/// Sets an entry to the JSON body.
#[utoipa::path(put, path = "/v1/kv/{bucket}/{key}", tag = "data", params(("bucket" = String, Path), ("key" = String, Path)),
    request_body(content = Value, description = "Any JSON value"), responses((status = 200, body = EntryOut), (status = 413, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn put(
    State(state): State<AppState>,
    principal: Principal,
    Path((bucket, key)): Path<(String, String)>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<EntryOut>, ApiError> {
    principal.require("workflows:write")?;
    let Json(value) = body?;
    check_names(&bucket, Some(&key))?;
    let bytes = value.to_string().into_bytes();
    if bytes.len() > MAX_KV_VALUE_BYTES {
        return Err(ApiError::PayloadTooLarge(MAX_KV_VALUE_BYTES));
    }
    let now = db::now_ms();
    let mut conn = state.engine.db.writer().await?;
    db::state::kv_set(&mut conn, &principal.tenant_id, &bucket, &key, &bytes, now).await?;
    Ok(Json(entry(key, &bytes, now)))
}

/// Removes an entry (204 whether or not it existed).
#[utoipa::path(delete, path = "/v1/kv/{bucket}/{key}", tag = "data", params(("bucket" = String, Path), ("key" = String, Path)),
    responses((status = 204), (status = 422, body = ProblemDoc, description = "A name over its byte limit")))]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    principal.require("workflows:write")?;
    check_names(&bucket, Some(&key))?;
    let mut conn = state.engine.db.writer().await?;
    db::state::kv_delete(&mut conn, &principal.tenant_id, &bucket, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
