//! `/v1/outbox`: the mail the tenant's steps queued, whether it went out,
//! and sending a failed message again.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::dto::ProblemDoc;
use super::{ApiError, AppState, page_limit, paginate};
use crate::db;
use crate::db::state::{OutboxMessage, Requeue};
use crate::engine::rfc3339;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(retry))
}

#[derive(Serialize, ToSchema)]
pub struct OutboxOut {
    pub message_id: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    /// The text; task links are hidden from keys without `runs:control`.
    pub body: String,
    /// queued, sent or failed.
    pub status: String,
    /// Delivery attempts since the message was queued (or queued again).
    pub attempts: i64,
    /// Why the last attempt failed: the relay's reply, or why it could not
    /// be reached.
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
    /// When a queued message is next tried (the sender backs off after a
    /// failure); absent once sent or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

impl From<OutboxMessage> for OutboxOut {
    fn from(m: OutboxMessage) -> Self {
        let queued = m.status == db::state::OutboxStatus::Queued;
        Self {
            message_id: m.message_id,
            run_id: m.run_id,
            step_id: m.step_id,
            to: m.to,
            cc: m.cc,
            subject: m.subject,
            body: m.body,
            status: m.status.as_str().to_owned(),
            attempts: m.attempts,
            last_error: m.last_error,
            created_at: rfc3339(m.created_at),
            sent_at: m.sent_at.map(rfc3339),
            next_attempt_at: queued.then(|| rfc3339(m.next_attempt_at)),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct OutboxList {
    pub items: Vec<OutboxOut>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this run's messages.
    run_id: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The tenant's outbox, newest first.
#[utoipa::path(get, path = "/v1/outbox", tag = "runs", params(ListQuery), responses((status = 200, body = OutboxList)))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<OutboxList>, ApiError> {
    principal.require("runs:read")?;
    let Query(query) = query?;
    let limit = page_limit(query.limit)?;
    let mut conn = state.engine.db.reader().await?;
    let rows = db::state::outbox_list(
        &mut conn,
        &principal.tenant_id,
        query.run_id.as_deref(),
        query.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = paginate(rows, limit, |m| m.message_id.clone());
    let control = principal.require("runs:control").is_ok();
    Ok(Json(OutboxList {
        items: rows
            .into_iter()
            .map(OutboxOut::from)
            .map(|mut m| {
                if !control {
                    m.body = super::tasks::hide_links(&m.body);
                }
                m
            })
            .collect(),
        next_cursor,
    }))
}

/// Queues a failed (or still queued) message to be sent now, its attempts
/// counted afresh. A message the relay already accepted is not sent again
/// (`409`).
#[utoipa::path(post, path = "/v1/outbox/{id}/retry", tag = "runs", params(("id" = String, Path, description = "The message id")),
    responses((status = 200, body = OutboxOut), (status = 403, body = ProblemDoc), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc)))]
async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<OutboxOut>, ApiError> {
    principal.require("runs:control")?;
    let mut conn = state.engine.db.writer().await?;
    match db::state::outbox_requeue(&mut conn, &principal.tenant_id, &id, db::now_ms()).await? {
        Requeue::Queued(message) => Ok(Json(OutboxOut::from(*message))),
        Requeue::AlreadySent => Err(ApiError::Conflict(format!(
            "message {id} was already sent; sending it again would deliver it twice"
        ))),
        Requeue::NotFound => Err(ApiError::NotFound(format!("outbox message {id:?}"))),
    }
}
