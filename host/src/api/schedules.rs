//! `/v1/schedules`: cron schedules that start runs of a workflow.

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
use super::{ApiError, AppState, idempotent_create};
use crate::db::schedules::{FireRow, ScheduleRow};
use crate::engine::rfc3339;
use crate::engine::schedules::{NewSchedule, SchedulePatch};

const READ: [&str; 2] = ["schedules:manage", "workflows:read"];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, patch, delete))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleIn {
    /// Key of the workflow whose published version each tick starts.
    pub workflow: String,
    /// Five fields (minute hour day-of-month month day-of-week) or a macro
    /// such as `@daily`.
    pub cron: String,
    /// IANA time zone the expression is read in; default `UTC`.
    pub timezone: Option<String>,
    /// Input of every run it starts; default `{}`.
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// `active` (default) or `paused`.
    pub status: Option<String>,
    /// The priority of the runs it starts: 1 (the default) to 3.
    #[schema(minimum = 1, maximum = 3)]
    pub priority: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePatchIn {
    pub cron: Option<String>,
    pub timezone: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// `active` or `paused`. Resuming does not fire ticks missed while paused.
    pub status: Option<String>,
    /// The priority of the runs it starts, 1 to 3.
    #[schema(minimum = 1, maximum = 3)]
    pub priority: Option<i64>,
}

/// A fired tick: the run it started, or why it started none.
#[derive(Serialize, ToSchema)]
pub struct FireOut {
    pub tick: String,
    pub run_id: Option<String>,
    pub error: Option<String>,
    pub fired_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ScheduleOut {
    pub id: String,
    pub workflow: String,
    pub cron: String,
    pub timezone: String,
    #[schema(value_type = Object)]
    pub input: Value,
    pub status: String,
    /// The next tick (RFC 3339, UTC); absent while paused.
    pub next_run_at: Option<String>,
    pub last_fired_at: Option<String>,
    pub last_run_id: Option<String>,
    /// Why the last tick started no run (workflow not published, input
    /// invalid, concurrency limit with `reject`).
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The priority of the runs it starts, 1 to 3.
    pub priority: i64,
    /// The latest fired ticks, newest first (only on `GET /v1/schedules/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_fires: Option<Vec<FireOut>>,
}

impl ScheduleOut {
    fn from_row(row: &ScheduleRow) -> Self {
        Self {
            id: row.id.clone(),
            workflow: row.workflow_key.clone(),
            cron: row.cron.clone(),
            timezone: row.timezone.clone(),
            input: serde_json::from_str(&row.input).unwrap_or(Value::Null),
            status: row.status.clone(),
            next_run_at: row.next_run_at.map(rfc3339),
            last_fired_at: row.last_fired_at.map(rfc3339),
            last_run_id: row.last_run_id.clone(),
            last_error: row.last_error.clone(),
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
            priority: row.priority,
            recent_fires: None,
        }
    }
}

fn fire_out(f: &FireRow) -> FireOut {
    FireOut {
        tick: rfc3339(f.tick),
        run_id: f.run_id.clone(),
        error: f.error.clone(),
        fired_at: rfc3339(f.fired_at),
    }
}

#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    pub items: Vec<ScheduleOut>,
}

fn parse_status(status: Option<&str>) -> Result<Option<bool>, ApiError> {
    match status {
        None => Ok(None),
        Some("active") => Ok(Some(true)),
        Some("paused") => Ok(Some(false)),
        Some(other) => Err(ApiError::Unprocessable(format!(
            "status must be \"active\" or \"paused\", found {other:?}"
        ))),
    }
}

/// Creates a schedule. The cron expression and time zone are checked; the
/// workflow must exist (ticks before it is published record an error).
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = ScheduleIn, params(IdempotencyKey),
    responses((status = 201, body = ScheduleOut), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    principal.require("schedules:manage")?;
    let Json(body) = body?;
    let tenant = principal.tenant_id.clone();
    idempotent_create(
        &state,
        &tenant,
        &headers,
        "POST /v1/schedules",
        body,
        |body| async {
            let request: ScheduleIn = serde_json::from_value(body)
                .map_err(|e| ApiError::Unprocessable(format!("invalid request: {e}")))?;
            let active = parse_status(request.status.as_deref())?.unwrap_or(true);
            let row = state
                .engine
                .create_schedule(
                    &tenant,
                    NewSchedule {
                        workflow: request.workflow,
                        cron: request.cron,
                        timezone: request.timezone,
                        input: request.input.unwrap_or_else(|| serde_json::json!({})),
                        active,
                        priority: request.priority,
                    },
                )
                .await?;
            serde_json::to_value(ScheduleOut::from_row(&row))
                .map_err(|e| ApiError::Internal(e.to_string()))
        },
    )
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only this workflow's schedules.
    workflow: Option<String>,
}

/// The tenant's schedules with their next tick.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", params(ListQuery), responses((status = 200, body = ScheduleList)))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ScheduleList>, ApiError> {
    principal.require_any(&READ)?;
    let Query(query) = query?;
    let rows = state
        .engine
        .list_schedules(&principal.tenant_id, query.workflow.as_deref())
        .await?;
    Ok(Json(ScheduleList {
        items: rows.iter().map(ScheduleOut::from_row).collect(),
    }))
}

/// A schedule with its latest fired ticks.
#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, body = ScheduleOut), (status = 404, body = ProblemDoc)))]
async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ScheduleOut>, ApiError> {
    principal.require_any(&READ)?;
    let (row, fires) = state.engine.get_schedule(&principal.tenant_id, &id).await?;
    let mut out = ScheduleOut::from_row(&row);
    out.recent_fires = Some(fires.iter().map(fire_out).collect());
    Ok(Json(out))
}

/// Pauses, resumes or changes a schedule.
#[utoipa::path(patch, path = "/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path)), request_body = SchedulePatchIn,
    responses((status = 200, body = ScheduleOut), (status = 404, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn patch(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<Json<SchedulePatchIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ScheduleOut>, ApiError> {
    principal.require("schedules:manage")?;
    let Json(body) = body?;
    let patch = SchedulePatch {
        cron: body.cron,
        timezone: body.timezone,
        input: body.input,
        active: parse_status(body.status.as_deref())?,
        priority: body.priority,
    };
    let row = state
        .engine
        .update_schedule(&principal.tenant_id, &id, patch)
        .await?;
    Ok(Json(ScheduleOut::from_row(&row)))
}

/// Deletes a schedule; runs it started are kept.
#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ProblemDoc)))]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require("schedules:manage")?;
    state
        .engine
        .delete_schedule(&principal.tenant_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
