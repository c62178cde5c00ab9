//! `/v1/outbox`: the mail the tenant's steps queued, and whether it went out.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::{ApiError, AppState, page_limit};
use crate::db;
use crate::engine::rfc3339;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Serialize, ToSchema)]
pub struct OutboxOut {
    pub message_id: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub body: String,
    /// queued, sent or failed.
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OutboxList {
    pub items: Vec<OutboxOut>,
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
    let items = db::state::outbox_list(
        &mut conn,
        &principal.tenant_id,
        query.run_id.as_deref(),
        limit,
    )
    .await?
    .into_iter()
    .map(|m| OutboxOut {
        message_id: m.message_id,
        run_id: m.run_id,
        step_id: m.step_id,
        to: m.to,
        cc: m.cc,
        subject: m.subject,
        body: m.body,
        status: m.status,
        attempts: m.attempts,
        last_error: m.last_error,
        created_at: rfc3339(m.created_at),
        sent_at: m.sent_at.map(rfc3339),
    })
    .collect();
    Ok(Json(OutboxList {
        items,
        next_cursor: None,
    }))
}
