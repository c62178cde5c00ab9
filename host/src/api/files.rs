//! `/v1/files`: uploads steps read through the host's `read-file`
//! capability (never the file system), scoped to the tenant.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::dto::{FileUpload, ProblemDoc};
use super::{ApiError, AppState};
use crate::db;
use crate::engine::rfc3339;
use crate::runtime::MAX_FILE_BYTES;

pub fn router() -> OpenApiRouter<AppState> {
    let (schemas, paths, upload_route) = routes!(upload);
    OpenApiRouter::new()
        .routes((
            schemas,
            paths,
            upload_route.layer(DefaultBodyLimit::disable()),
        ))
        .routes(routes!(get))
}

#[derive(Serialize, ToSchema)]
pub struct FileOut {
    pub id: String,
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub size: i64,
    pub sha256: String,
    pub created_at: String,
}

/// Stores a file (multipart field `file`) for steps to read by id; at most
/// 32 MiB (`413` past it).
#[utoipa::path(post, path = "/v1/files", tag = "files",
    request_body(content = FileUpload, content_type = "multipart/form-data"),
    responses((status = 201, body = FileOut), (status = 400, body = ProblemDoc), (status = 413, body = ProblemDoc)))]
async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<FileOut>), ApiError> {
    principal.require("files:write")?;
    super::refuse_declared_over(&headers, MAX_FILE_BYTES)?;
    let mut form = form.map_err(|_| {
        ApiError::Unsupported("send multipart/form-data with a `file` field".into())
    })?;
    let mut stored = None;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("file") {
            return Err(ApiError::BadRequest(format!(
                "unknown form field {:?}: send the content as `file`",
                field.name().unwrap_or_default()
            )));
        }
        stored = Some(store_field(&state, &principal.tenant_id, field).await?);
    }
    let row = stored.ok_or_else(|| ApiError::BadRequest("no `file` field".into()))?;
    Ok((StatusCode::CREATED, Json(file_out(row))))
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    super::multipart_error(MAX_FILE_BYTES)(e)
}

/// Reads a file field (at most [`MAX_FILE_BYTES`]) and stores it for `tenant`.
async fn store_field(
    state: &AppState,
    tenant: &str,
    mut field: axum::extract::multipart::Field<'_>,
) -> Result<db::state::FileRow, ApiError> {
    let name = field.file_name().map(str::to_owned);
    let content_type = field.content_type().map(str::to_owned);
    let bytes = super::read_field(&mut field, MAX_FILE_BYTES).await?;
    let row = db::state::FileRow {
        tenant_id: tenant.to_owned(),
        id: format!("file_{}", uuid::Uuid::now_v7().simple()),
        name,
        content_type,
        size: bytes.len() as i64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        created_at: db::now_ms(),
    };
    let mut conn = state.engine.db.writer().await?;
    db::state::file_put(&mut conn, &row, &bytes).await?;
    Ok(row)
}

/// The JSON body of a multipart run start, and its identity for
/// idempotency (the attachment named by content hash, not by its new id).
/// Text fields together may not take the input past the JSON body limit
/// ([`super::MAX_BODY_BYTES`]): the field that would is refused with 413.
pub(crate) async fn multipart_run_body(
    state: &AppState,
    principal: &Principal,
    mut form: Multipart,
) -> Result<(serde_json::Value, serde_json::Value), ApiError> {
    use serde_json::{Map, Value, json};
    let limit = super::MAX_BODY_BYTES;
    let mut body = Map::new();
    let mut input = Map::new();
    let mut attachment = None;
    // Bytes of text taken so far: what the JSON body would have carried.
    let mut used = 0;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "attachment" {
            attachment = Some(store_field(state, &principal.tenant_id, field).await?);
            continue;
        }
        let too_large = || ApiError::FieldTooLarge {
            field: name.clone(),
            limit,
        };
        let room = limit.saturating_sub(used + name.len());
        let bytes = match super::read_field(&mut field, room).await {
            Ok(bytes) => bytes,
            Err(ApiError::PayloadTooLarge(_)) => {
                // Read (a bounded amount of) the rest, so a client still
                // sending gets the 413 rather than a reset connection.
                let mut budget = drain(&mut field, DRAIN_BYTES).await;
                drop(field);
                while budget > 0 {
                    match form.next_field().await {
                        Ok(Some(mut next)) => budget = drain(&mut next, budget).await,
                        _ => break,
                    }
                }
                return Err(too_large());
            }
            Err(other) => return Err(other),
        };
        used += name.len() + bytes.len();
        let text = String::from_utf8(bytes)
            .map_err(|_| ApiError::BadRequest(format!("field {name:?} is not UTF-8 text")))?;
        match name.as_str() {
            "workflow" | "version" => {
                body.insert(name, Value::String(text));
            }
            "wait_ms" => {
                // As in JSON, `936.0` is the integer 936.
                let ms = text
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(super::dto::integral)
                    .filter(Value::is_u64)
                    .ok_or_else(|| {
                        ApiError::Unprocessable(format!(
                            "wait_ms {text:?} is not a number of milliseconds"
                        ))
                    })?;
                body.insert(name, ms);
            }
            "input" => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(fields)) => input.extend(fields),
                _ => {
                    return Err(ApiError::Unprocessable(
                        "the `input` field must be a JSON object".into(),
                    ));
                }
            },
            _ => {
                input.insert(name, Value::String(text));
            }
        }
    }
    // JSON escaping can grow text (quotes, control characters): the input
    // as JSON must fit too.
    let input_bytes = serde_json::to_vec(&input).map_or(usize::MAX, |v| v.len());
    if input_bytes > limit {
        return Err(ApiError::FieldTooLarge {
            field: "input".into(),
            limit,
        });
    }
    let mut identity_input = input.clone();
    if let Some(file) = attachment {
        let described = json!({"id": file.id, "name": file.name, "size": file.size, "sha256": file.sha256, "content_type": file.content_type});
        identity_input.insert("attachment".into(), json!({"sha256": file.sha256}));
        input
            .entry("file_id")
            .or_insert_with(|| Value::String(file.id.clone()));
        input.insert("attachment".into(), described);
    }
    let mut identity = body.clone();
    body.insert("input".into(), Value::Object(input));
    identity.insert("input".into(), Value::Object(identity_input));
    Ok((Value::Object(body), Value::Object(identity)))
}

/// The most of a refused multipart run start read and dropped after the
/// refusal.
const DRAIN_BYTES: usize = 16 << 20;

/// Reads and drops up to `budget` bytes of `field`; what is left of the budget.
async fn drain(field: &mut axum::extract::multipart::Field<'_>, mut budget: usize) -> usize {
    while budget > 0 {
        match field.chunk().await {
            Ok(Some(chunk)) => budget = budget.saturating_sub(chunk.len()),
            _ => break,
        }
    }
    budget
}

fn file_out(f: db::state::FileRow) -> FileOut {
    FileOut {
        id: f.id,
        name: f.name,
        content_type: f.content_type,
        size: f.size,
        sha256: f.sha256,
        created_at: rfc3339(f.created_at),
    }
}

/// A file's metadata.
#[utoipa::path(get, path = "/v1/files/{id}", tag = "files", params(("id" = String, Path)),
    responses((status = 200, body = FileOut), (status = 404, body = ProblemDoc)))]
async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<FileOut>, ApiError> {
    principal.require("runs:read")?;
    let mut conn = state.engine.db.reader().await?;
    db::state::file_meta(&mut conn, &principal.tenant_id, &id)
        .await?
        .map(|f| Json(file_out(f)))
        .ok_or_else(|| ApiError::NotFound(format!("file {id:?}")))
}
