//! The HTTP API (`/v1`, JSON, RFC 9457 errors, OpenAPI at `/openapi.json`).
//! The only module that imports axum and holds the wire format.
//!
//! # Layout
//! - [`error`]: `ApiError`, the one error type.
//! - [`auth`]: API keys and scopes.
//! - [`workflows`], [`runs`], [`plugins`], [`ops`]: one router per resource.
//! - [`dto`]: request and response bodies.

pub mod auth;
pub mod dashboard;
pub mod dto;
pub mod error;
pub mod files;
pub mod jwt;
pub mod kv;
pub mod limits;
pub mod notifications;
pub mod ops;
pub mod outbox;
pub mod plugins;
pub mod runs;
pub mod schedules;
pub mod secrets;
pub mod tenants;
pub mod webhooks;
pub mod workflows;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use error::ApiError;

use crate::db;
use crate::engine::Engine;

/// Largest JSON body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub limiter: Arc<limits::Limiter>,
    /// Longest a JWT may live (`exp − iat`); longer ones are refused.
    pub jwt_max_lifetime: Duration,
}

/// Default for [`AppState::jwt_max_lifetime`]: a day.
pub const DEFAULT_JWT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

impl AppState {
    pub fn new(engine: Arc<Engine>, limits: limits::RateLimits) -> Self {
        Self {
            engine,
            limiter: Arc::new(limits::Limiter::new(limits)),
            jwt_max_lifetime: DEFAULT_JWT_MAX_LIFETIME,
        }
    }

    pub fn with_jwt_max_lifetime(mut self, max: Duration) -> Self {
        self.jwt_max_lifetime = max;
        self
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Weft", description = "A workflow host whose step types are sandboxed WebAssembly components."),
    modifiers(&SecurityAddon),
    security(("api_key" = [])),
)]
struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The router with its OpenAPI document, built from the same route list so
/// the two cannot drift.
pub fn router_and_openapi(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(workflows::router())
        .merge(runs::router())
        .merge(plugins::router())
        .merge(tenants::router())
        .merge(secrets::router())
        .merge(files::router())
        .merge(outbox::router())
        .merge(notifications::router())
        .merge(kv::router())
        .merge(schedules::router())
        .merge(webhooks::router())
        .merge(jwt::router())
        .merge(ops::router())
        .split_for_parts();
    let document = openapi.clone();
    let router = router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document) }
            }),
        )
        .merge(dashboard::router())
        .fallback(|| async { ApiError::NotFound("this path".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state);
    (router, openapi)
}

pub fn router(state: AppState) -> Router {
    router_and_openapi(state).0
}

/// Serves the API on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The stored response for a repeated `Idempotency-Key`, or a conflict if
/// the key was used with another body.
pub async fn idempotency_replay(
    state: &AppState,
    tenant: &str,
    headers: &HeaderMap,
    route: &str,
    body: &Value,
) -> Result<Option<(axum::http::StatusCode, Value)>, ApiError> {
    let Some(key) = idempotency_key(headers)? else {
        return Ok(None);
    };
    let mut conn = state.engine.db.reader().await?;
    let Some(stored) = db::state::idempotency_get(&mut conn, tenant, &key, route).await? else {
        return Ok(None);
    };
    if stored.request_hash != body_hash(body) {
        return Err(ApiError::Conflict(format!(
            "Idempotency-Key {key:?} was already used with a different request body"
        )));
    }
    let status = axum::http::StatusCode::from_u16(stored.status as u16)
        .unwrap_or(axum::http::StatusCode::OK);
    let value = serde_json::from_str(&stored.response).unwrap_or(Value::Null);
    Ok(Some((status, value)))
}

/// Remembers the response to a request made with an `Idempotency-Key`.
pub async fn idempotency_store(
    state: &AppState,
    tenant: &str,
    headers: &HeaderMap,
    route: &str,
    body: &Value,
    status: axum::http::StatusCode,
    response: &Value,
) -> Result<(), ApiError> {
    let Some(key) = idempotency_key(headers)? else {
        return Ok(());
    };
    let mut conn = state.engine.db.writer().await?;
    let stored = db::state::IdempotentResponse {
        request_hash: body_hash(body),
        status: i64::from(status.as_u16()),
        response: response.to_string(),
    };
    db::state::idempotency_put(&mut conn, tenant, &key, route, &stored, db::now_ms()).await?;
    Ok(())
}

/// A create endpoint with `Idempotency-Key` support: replays the stored
/// response for a repeated key and body, else runs `create` on the body and
/// stores its `201` response.
pub async fn idempotent_create<F, Fut>(
    state: &AppState,
    tenant: &str,
    headers: &HeaderMap,
    route: &str,
    body: Value,
    create: F,
) -> Result<(axum::http::StatusCode, axum::Json<Value>), ApiError>
where
    F: FnOnce(Value) -> Fut,
    Fut: std::future::Future<Output = Result<Value, ApiError>>,
{
    if let Some((status, value)) = idempotency_replay(state, tenant, headers, route, &body).await? {
        return Ok((status, axum::Json(value)));
    }
    let response = create(body.clone()).await?;
    let status = axum::http::StatusCode::CREATED;
    idempotency_store(state, tenant, headers, route, &body, status, &response).await?;
    Ok((status, axum::Json(response)))
}

/// Cuts rows fetched with `limit + 1` to a page of `limit`, with the
/// cursor of the next page when there is one.
pub fn paginate<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit.max(0) as usize);
    let next = if more {
        rows.last().map(cursor_of)
    } else {
        None
    };
    (rows, next)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let key = v.to_str().map_err(|_| {
                ApiError::BadRequest("Idempotency-Key must be visible ASCII".into())
            })?;
            if key.is_empty() || key.len() > 255 {
                return Err(ApiError::BadRequest(
                    "Idempotency-Key must be 1 to 255 characters".into(),
                ));
            }
            Ok(Some(key.to_owned()))
        }
    }
}

fn body_hash(body: &Value) -> String {
    hex::encode(Sha256::digest(body.to_string().as_bytes()))
}

/// Room for multipart boundaries and headers around an uploaded file.
pub(crate) const MULTIPART_OVERHEAD: usize = 64 << 10;

/// Refuses an upload whose declared `Content-Length` already exceeds
/// `limit` (plus multipart overhead), before reading any of it.
pub(crate) fn refuse_declared_over(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(MULTIPART_OVERHEAD)) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(())
}

/// A multipart read error: 413 if the body hit the limit, else 400.
pub(crate) fn multipart_error(
    limit: usize,
) -> impl Fn(axum::extract::multipart::MultipartError) -> ApiError + Copy {
    move |e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text()))
        }
    }
}

/// A multipart field's bytes, refused with 413 past `limit`.
pub(crate) async fn read_field(
    field: &mut axum::extract::multipart::Field<'_>,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error(limit))? {
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// `?limit=` within 1..=100, default 25.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(25),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit must be 1 to 100, got {n}"
        ))),
    }
}
