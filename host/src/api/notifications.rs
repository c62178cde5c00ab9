//! `/v1/notifications`: in-app notifications the tenant's steps recorded
//! (the `create_notification` plugin), for a product's inbox or bell.

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
use crate::db::state::NotificationRow;
use crate::engine::rfc3339;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(mark_read))
}

#[derive(Serialize, ToSchema)]
pub struct NotificationOut {
    pub id: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub title: String,
    pub body: String,
    /// info, success, warning or error.
    pub level: String,
    /// A user, team or role; empty for everyone in the tenant.
    pub audience: String,
    pub link: String,
    pub created_at: String,
    pub read_at: Option<String>,
}

fn out(n: NotificationRow) -> NotificationOut {
    NotificationOut {
        id: n.id,
        run_id: n.run_id,
        step_id: n.step_id,
        title: n.title,
        body: n.body,
        level: n.level,
        audience: n.audience,
        link: n.link,
        created_at: rfc3339(n.created_at),
        read_at: n.read_at.map(rfc3339),
    }
}

#[derive(Serialize, ToSchema)]
pub struct NotificationList {
    pub items: Vec<NotificationOut>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this run's notifications.
    run_id: Option<String>,
    /// Only those not yet marked read.
    unread: Option<bool>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The tenant's notifications, newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "runs", params(ListQuery), responses((status = 200, body = NotificationList)))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<NotificationList>, ApiError> {
    principal.require("runs:read")?;
    let Query(query) = query?;
    let limit = page_limit(query.limit)?;
    let mut conn = state.engine.db.reader().await?;
    let rows = db::state::notifications(
        &mut conn,
        &principal.tenant_id,
        query.run_id.as_deref(),
        query.unread.unwrap_or(false),
        query.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = paginate(rows, limit, |n| n.id.clone());
    let items = rows.into_iter().map(out).collect();
    Ok(Json(NotificationList { items, next_cursor }))
}

/// Marks a notification read.
#[utoipa::path(post, path = "/v1/notifications/{id}/read", tag = "runs", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ProblemDoc)))]
async fn mark_read(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    principal.require("runs:read")?;
    let mut conn = state.engine.db.writer().await?;
    if db::state::notification_read(&mut conn, &principal.tenant_id, &id, db::now_ms()).await? {
        Ok(axum::http::StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("notification {id:?}")))
    }
}
