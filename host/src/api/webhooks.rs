//! `/v1/webhooks`: subscriptions to run and step events, their delivery
//! log, and redelivery.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::dto::{IdempotencyKey, ProblemDoc};
use super::{ApiError, AppState, idempotent_create, page_limit, paginate};
use crate::db::webhooks::{AttemptRow, DeliveryRow, WebhookRow};
use crate::engine::rfc3339;
use crate::engine::webhooks::{NewWebhook, WebhookPatch};

const SCOPE: &str = "webhooks:manage";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, patch, delete))
        .routes(routes!(deliveries))
        .routes(routes!(redeliver))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookIn {
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    /// Event types to receive, or `["*"]` for all: `run.started`,
    /// `run.completed`, `run.failed`, `run.cancelled`, `run.terminated`,
    /// `run.paused`, `run.declined`, `run.held` (paused by an operator),
    /// `run.unheld`, `run.rerun`, `step.started`, `step.completed`,
    /// `step.failed`, `task.created`, `task.viewed`, `task.reminded`,
    /// `task.completed`, `task.declined`, `task.expired`, `task.revoked`.
    pub events: Vec<String>,
    /// Signing secret `whsec_<base64 of 24–64 bytes>`; default: generated.
    pub secret: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatchIn {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `active` (re-enables a disabled subscription; events from while it
    /// was disabled are not sent) or `disabled`.
    pub status: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookOut {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// `active` or `disabled`.
    pub status: String,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i64,
    /// The signing secret: only in the response that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl WebhookOut {
    fn from_row(row: &WebhookRow) -> Self {
        Self {
            id: row.id.clone(),
            url: row.url.clone(),
            events: serde_json::from_str(&row.events).unwrap_or_default(),
            status: row.status.clone(),
            disabled_reason: row.disabled_reason.clone(),
            consecutive_failures: row.consecutive_failures,
            secret: None,
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookOut>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptOut {
    pub attempt: i64,
    pub at: String,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryOut {
    /// The `webhook-id` header: receivers dedupe on it.
    pub id: String,
    pub event_type: String,
    pub event_id: i64,
    /// `pending`, `delivered` or `failed` (retries exhausted).
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub created_at: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub attempt_log: Vec<AttemptOut>,
}

fn delivery_out(d: &DeliveryRow, attempts: &[AttemptRow]) -> DeliveryOut {
    DeliveryOut {
        id: d.id.clone(),
        event_type: d.event_type.clone(),
        event_id: d.event_id,
        status: d.status.clone(),
        attempts: d.attempts,
        next_attempt_at: d
            .next_attempt_at
            .filter(|_| d.status == "pending")
            .map(rfc3339),
        delivered_at: d.delivered_at.map(rfc3339),
        created_at: rfc3339(d.created_at),
        payload: serde_json::from_str(&d.payload).unwrap_or(Value::Null),
        attempt_log: attempts
            .iter()
            .filter(|a| a.delivery_id == d.id)
            .map(|a| AttemptOut {
                attempt: a.attempt,
                at: rfc3339(a.at),
                status_code: a.status_code,
                error: a.error.clone(),
                duration_ms: a.duration_ms,
            })
            .collect(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryOut>,
    pub next_cursor: Option<String>,
}

/// Subscribes a URL to events. The response carries the signing secret,
/// which is never shown again.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = WebhookIn, params(IdempotencyKey),
    responses((status = 201, body = WebhookOut), (status = 422, body = ProblemDoc)))]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require(SCOPE)?;
    let Json(body) = body?;
    let tenant = principal.tenant_id.clone();
    idempotent_create(
        &state,
        &tenant,
        &headers,
        "POST /v1/webhooks",
        body,
        |body| async {
            let request: WebhookIn = serde_json::from_value(body)
                .map_err(|e| ApiError::Unprocessable(format!("invalid request: {e}")))?;
            let (row, secret) = state
                .engine
                .create_webhook(
                    &tenant,
                    NewWebhook {
                        url: request.url,
                        events: request.events,
                        secret: request.secret,
                    },
                )
                .await?;
            let mut out = WebhookOut::from_row(&row);
            out.secret = Some(secret);
            serde_json::to_value(out).map_err(|e| ApiError::Internal(e.to_string()))
        },
    )
    .await
}

/// The tenant's webhook subscriptions.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses((status = 200, body = WebhookList)))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<WebhookList>, ApiError> {
    principal.require(SCOPE)?;
    let rows = state.engine.list_webhooks(&principal.tenant_id).await?;
    Ok(Json(WebhookList {
        items: rows.iter().map(WebhookOut::from_row).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = WebhookOut), (status = 404, body = ProblemDoc)))]
async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<WebhookOut>, ApiError> {
    principal.require(SCOPE)?;
    let row = state.engine.get_webhook(&principal.tenant_id, &id).await?;
    Ok(Json(WebhookOut::from_row(&row)))
}

/// Changes the URL or events, disables, or re-enables a subscription.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)), request_body = WebhookPatchIn,
    responses((status = 200, body = WebhookOut), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn patch(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<Json<WebhookPatchIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<WebhookOut>, ApiError> {
    principal.require(SCOPE)?;
    let Json(body) = body?;
    let active = match body.status.as_deref() {
        None => None,
        Some("active") => Some(true),
        Some("disabled") => Some(false),
        Some(other) => {
            return Err(ApiError::Unprocessable(format!(
                "status must be \"active\" or \"disabled\", found {other:?}"
            )));
        }
    };
    let row = state
        .engine
        .update_webhook(
            &principal.tenant_id,
            &id,
            WebhookPatch {
                url: body.url,
                events: body.events,
                active,
            },
        )
        .await?;
    Ok(Json(WebhookOut::from_row(&row)))
}

/// Deletes a subscription and its delivery log.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ProblemDoc)))]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(SCOPE)?;
    state
        .engine
        .delete_webhook(&principal.tenant_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    /// `pending`, `delivered` or `failed`.
    #[param(value_type = Option<DeliveryStatusDoc>, inline)]
    status: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    cursor: Option<String>,
}

/// A delivery's status.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the allowed values")]
#[serde(rename_all = "lowercase")]
enum DeliveryStatusDoc {
    Pending,
    Delivered,
    Failed,
}

/// The delivery log: every delivery with every attempt, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path), DeliveryQuery),
    responses((status = 200, body = DeliveryList), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc, description = "An unknown status")))]
async fn deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    principal.require(SCOPE)?;
    let Query(query) = query?;
    if let Some(status) = &query.status
        && !["pending", "delivered", "failed"].contains(&status.as_str())
    {
        return Err(ApiError::Unprocessable(format!(
            "status must be pending, delivered or failed, found {status:?}"
        )));
    }
    let limit = page_limit(query.limit)?;
    let (rows, attempts) = state
        .engine
        .webhook_deliveries(
            &principal.tenant_id,
            &id,
            query.status.as_deref(),
            query.cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let (rows, next_cursor) = paginate(rows, limit, |d| d.id.clone());
    let items = rows.iter().map(|d| delivery_out(d, &attempts)).collect();
    Ok(Json(DeliveryList { items, next_cursor }))
}

/// Sends a delivery again now (whatever its status), with a fresh retry
/// schedule. The `webhook-id` stays the same.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "webhooks",
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, body = DeliveryOut), (status = 404, body = ProblemDoc)))]
async fn redeliver(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeliveryOut>), ApiError> {
    principal.require(SCOPE)?;
    let row = state
        .engine
        .redeliver(&principal.tenant_id, &id, &delivery_id)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(delivery_out(&row, &[]))))
}
