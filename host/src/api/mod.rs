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
pub mod openapi;
pub mod ops;
pub mod outbox;
pub mod plugins;
pub mod presets;
pub mod runs;
pub mod schedules;
pub mod secrets;
pub mod server;
pub mod task_page;
pub mod tasks;
pub mod tenants;
pub mod webhooks;
pub mod workflows;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::OpenApi as _;
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
    /// Open and refused connections, for `/metrics`.
    pub connections: Arc<server::ConnectionStats>,
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
            connections: Arc::default(),
            jwt_max_lifetime: DEFAULT_JWT_MAX_LIFETIME,
        }
    }

    pub fn with_jwt_max_lifetime(mut self, max: Duration) -> Self {
        self.jwt_max_lifetime = max;
        self
    }
}

/// The router with its OpenAPI document, built from the same route list so
/// the two cannot drift.
pub fn router_and_openapi(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut spec) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(workflows::router())
        .merge(presets::router())
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
        .merge(tasks::router())
        .merge(jwt::router())
        .merge(ops::router())
        .split_for_parts();
    openapi::finish(&mut spec);
    let document = spec.clone();
    let router = router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document) }
            }),
        )
        .merge(dashboard::router())
        .merge(task_page::router())
        .fallback(|| async { ApiError::NotFound("this path".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state);
    (router, spec)
}

pub fn router(state: AppState) -> Router {
    router_and_openapi(state).0
}

/// Serves the API on an already-bound listener (see [`server::bind`])
/// until `shutdown` resolves, with connections bounded by `limits`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: server::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stats = state.connections.clone();
    server::serve(listener, router(state), limits, stats, shutdown).await
}

/// How long a request waits for another with the same `Idempotency-Key`
/// to answer before it gets `409 idempotency-in-flight` (with Retry-After).
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(10);

/// A reservation whose request has not answered for this long was left by
/// a process that died: another request with the key may take it over.
const ABANDONED_AFTER_MS: i64 = 60_000;

/// A request's `Idempotency-Key`: reserved for this request before any work
/// is done, or already answered by an earlier one.
pub enum Idempotency {
    /// The request has no key.
    Unkeyed,
    /// The key is this request's: do the work, then [`Reservation::finish`]
    /// (or [`Reservation::release`] on an error, so the key can be reused).
    Reserved(Reservation),
    /// An earlier request with the key and the same body answered this.
    Answered(db::state::IdempotentResponse),
}

/// An `Idempotency-Key` reserved for the request in hand.
pub struct Reservation {
    tenant: String,
    key: String,
    route: String,
}

impl Reservation {
    /// Stores the answer for later requests with the key.
    pub async fn finish(
        self,
        state: &AppState,
        status: StatusCode,
        response: &Value,
    ) -> Result<(), ApiError> {
        let mut conn = state.engine.db.writer().await?;
        db::state::idempotency_finish(
            &mut conn,
            &self.tenant,
            &self.key,
            &self.route,
            i64::from(status.as_u16()),
            &response.to_string(),
        )
        .await?;
        Ok(())
    }

    /// Frees the key after the request failed.
    pub async fn release(self, state: &AppState) {
        let released = async {
            let mut conn = state.engine.db.writer().await?;
            db::state::idempotency_release(&mut conn, &self.tenant, &self.key, &self.route).await
        };
        if let Err(e) = released.await {
            tracing::warn!(error = %e, key = %self.key, "releasing an idempotency key");
        }
    }
}

/// Reserves the request's `Idempotency-Key` before any work is done, so of
/// several requests with one key exactly one does the work: the others wait
/// for its answer (at most [`IN_FLIGHT_WAIT`], then `409
/// idempotency-in-flight`) and replay it. The same key with another body
/// is a `409` conflict.
pub async fn idempotency_begin(
    state: &AppState,
    tenant: &str,
    headers: &HeaderMap,
    route: &str,
    body: &Value,
) -> Result<Idempotency, ApiError> {
    let Some(key) = idempotency_key(headers)? else {
        return Ok(Idempotency::Unkeyed);
    };
    let hash = body_hash(body);
    let reserved = || {
        Idempotency::Reserved(Reservation {
            tenant: tenant.to_owned(),
            key: key.clone(),
            route: route.to_owned(),
        })
    };
    let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
    loop {
        let now = db::now_ms();
        let mut conn = state.engine.db.writer().await?;
        if db::state::idempotency_reserve(&mut conn, tenant, &key, route, &hash, now).await? {
            return Ok(reserved());
        }
        let stored = db::state::idempotency_get(&mut conn, tenant, &key, route).await?;
        let abandoned_since = match stored {
            Some(stored) if stored.request_hash != hash => return Err(reused_key(&key)),
            Some(stored) if stored.status != db::state::IN_FLIGHT || stored.run_id.is_some() => {
                return Ok(Idempotency::Answered(stored));
            }
            Some(stored) if now - stored.created_at > ABANDONED_AFTER_MS => Some(stored.created_at),
            // In flight, or released just now: look again shortly.
            _ => None,
        };
        if let Some(reserved_at) = abandoned_since
            && db::state::idempotency_take_over(&mut conn, tenant, &key, route, reserved_at, now)
                .await?
        {
            return Ok(reserved());
        }
        drop(conn);
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::IdempotencyInFlight(key));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The conflict of a key used again with another body.
pub fn reused_key(key: &str) -> ApiError {
    ApiError::Conflict(format!(
        "Idempotency-Key {key:?} was already used with a different request body"
    ))
}

/// The stored answer as a response.
pub fn replay(stored: &db::state::IdempotentResponse) -> (StatusCode, axum::Json<Value>) {
    let status = u16::try_from(stored.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let value = serde_json::from_str(&stored.response).unwrap_or(Value::Null);
    (status, axum::Json(value))
}

/// A create endpoint with `Idempotency-Key` support ([`idempotency_begin`]):
/// runs `create` on the body once per key and answers `201` with what it
/// returns; a repeated key and body replays that answer.
pub async fn idempotent_create<F, Fut>(
    state: &AppState,
    tenant: &str,
    headers: &HeaderMap,
    route: &str,
    body: Value,
    create: F,
) -> Result<(StatusCode, axum::Json<Value>), ApiError>
where
    F: FnOnce(Value) -> Fut,
    Fut: std::future::Future<Output = Result<Value, ApiError>>,
{
    let status = StatusCode::CREATED;
    match idempotency_begin(state, tenant, headers, route, &body).await? {
        Idempotency::Answered(stored) => Ok(replay(&stored)),
        Idempotency::Unkeyed => Ok((status, axum::Json(create(body).await?))),
        Idempotency::Reserved(reservation) => match create(body).await {
            Ok(response) => {
                reservation.finish(state, status, &response).await?;
                Ok((status, axum::Json(response)))
            }
            Err(e) => {
                reservation.release(state).await;
                Err(e)
            }
        },
    }
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

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            // What the document's pattern says: visible ASCII, with spaces
            // only inside (a header value may also hold tabs and bytes past
            // ASCII; HTTP trims the spaces around it).
            let bytes = v.as_bytes();
            let visible = |b: &u8| b.is_ascii_graphic();
            if !bytes.iter().all(|b| visible(b) || *b == b' ')
                || !bytes.first().is_some_and(visible)
                || !bytes.last().is_some_and(visible)
            {
                return Err(ApiError::BadRequest(
                    "Idempotency-Key must be visible ASCII (spaces only inside)".into(),
                ));
            }
            if bytes.len() > 255 {
                return Err(ApiError::BadRequest(
                    "Idempotency-Key must be 1 to 255 characters".into(),
                ));
            }
            Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
        }
    }
}

pub(crate) fn body_hash(body: &Value) -> String {
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
