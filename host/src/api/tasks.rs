//! `/v1/tasks`: the tasks of paused human steps (one per assignee), and
//! reminding, reassigning and revoking them. The assignees themselves
//! answer through their links (`/t/<token>`, [`super::task_page`]), with no
//! API key.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Principal;
use super::dto::ProblemDoc;
use super::{ApiError, AppState, page_limit, paginate};
use crate::db;
use crate::db::tasks::TaskRow;
use crate::engine::Engine;
use crate::engine::rfc3339;
use crate::engine::tasks::TaskAction;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get))
        .routes(routes!(remind))
        .routes(routes!(reassign))
        .routes(routes!(revoke))
}

/// Task statuses, in the order a task moves through them.
pub const STATUSES: [&str; 6] = [
    "open",
    "viewed",
    "completed",
    "declined",
    "expired",
    "revoked",
];

#[derive(Serialize, ToSchema)]
pub struct TaskOut {
    pub id: String,
    pub run_id: String,
    pub step_id: String,
    pub workflow: String,
    /// `collect_inputs` (a form) or `request_user_action` (buttons).
    pub kind: String,
    /// An email address (the link is mailed) or an opaque user id (deliver
    /// `link` yourself).
    pub assignee: String,
    /// open, viewed (the link was opened), completed, declined, expired or
    /// revoked.
    pub status: String,
    pub title: String,
    pub description: Option<String>,
    /// `any` (one answer completes the step) or `all`.
    pub completion: String,
    /// The assignee's link, while the task is open or viewed, to keys with
    /// `runs:control` (the link answers the task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// What the assignee answered: `{"data": …}` or `{"action": …}`.
    #[schema(value_type = Option<Object>)]
    pub answer: Option<Value>,
    /// Why the task closed without an answer (revoked, reassigned, expired,
    /// answered by another assignee, the step resumed through the API).
    pub reason: Option<String>,
    /// The form's JSON Schema (`collect_inputs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// The actions offered (`request_user_action`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
    pub reminders_sent: i64,
    pub max_reminders: i64,
    pub next_reminder_at: Option<String>,
    pub expires_at: Option<String>,
    /// `"fail"`, `"decline"` or `{"action": …}`: what expiry does.
    #[schema(value_type = Object)]
    pub on_expiry: Value,
    pub created_at: String,
    pub viewed_at: Option<String>,
    pub answered_at: Option<String>,
    pub ended_at: Option<String>,
}

impl TaskOut {
    pub fn new(engine: &Engine, t: TaskRow, with_link: bool) -> Self {
        let form: Value = serde_json::from_str(&t.form).unwrap_or(Value::Null);
        let link = (with_link && t.is_open())
            .then(|| engine.task_link(&t))
            .flatten();
        Self {
            link,
            answer: t
                .answer
                .as_deref()
                .and_then(|a| serde_json::from_str(a).ok()),
            schema: form.get("schema").cloned(),
            actions: form.get("actions").and_then(|a| {
                a.as_array().map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
            }),
            on_expiry: serde_json::from_str(&t.on_expiry).unwrap_or(Value::Null),
            next_reminder_at: t
                .is_open()
                .then_some(t.next_reminder_at)
                .flatten()
                .map(rfc3339),
            expires_at: t.expires_at.map(rfc3339),
            created_at: rfc3339(t.created_at),
            viewed_at: t.viewed_at.map(rfc3339),
            answered_at: t.answered_at.map(rfc3339),
            ended_at: t.ended_at.map(rfc3339),
            id: t.id,
            run_id: t.run_id,
            step_id: t.step_id,
            workflow: t.workflow_key,
            kind: t.kind,
            assignee: t.assignee,
            status: t.status,
            title: t.title,
            description: t.description,
            completion: t.completion,
            reason: t.reason,
            reminders_sent: t.reminders_sent,
            max_reminders: t.max_reminders,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    pub items: Vec<TaskOut>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Open,
    Viewed,
    Completed,
    Declined,
    Expired,
    Revoked,
}

impl TaskStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Viewed => "viewed",
            Self::Completed => "completed",
            Self::Declined => "declined",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only tasks in this status.
    #[param(inline)]
    status: Option<TaskStatus>,
    /// Only this assignee's tasks (exact match).
    assignee: Option<String>,
    /// Only this run's tasks.
    run_id: Option<String>,
    /// Only tasks of runs of this workflow (its key).
    workflow: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The tenant's tasks, newest first.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(ListQuery),
    responses((status = 200, body = TaskList), (status = 400, body = ProblemDoc)))]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskList>, ApiError> {
    principal.require("runs:read")?;
    let Query(query) = query?;
    let limit = page_limit(query.limit)?;
    let filter = db::tasks::Filter {
        status: query.status.map(TaskStatus::as_str),
        assignee: query.assignee.as_deref(),
        run_id: query.run_id.as_deref(),
        workflow: query.workflow.as_deref(),
    };
    let mut conn = state.engine.db.reader().await?;
    let rows = db::tasks::list(
        &mut conn,
        &principal.tenant_id,
        &filter,
        query.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = paginate(rows, limit, |t| t.id.clone());
    let control = principal.require("runs:control").is_ok();
    Ok(Json(TaskList {
        items: rows
            .into_iter()
            .map(|t| TaskOut::new(&state.engine, t, control))
            .collect(),
        next_cursor,
    }))
}

/// One task.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "The task id")),
    responses((status = 200, body = TaskOut), (status = 404, body = ProblemDoc)))]
async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<TaskOut>, ApiError> {
    principal.require("runs:read")?;
    let task = state.engine.get_task(&principal.tenant_id, &id).await?;
    let control = principal.require("runs:control").is_ok();
    Ok(Json(TaskOut::new(&state.engine, task, control)))
}

/// Mails the assignee a reminder now (counted in `reminders_sent`).
#[utoipa::path(post, path = "/v1/tasks/{id}/remind", tag = "tasks", params(("id" = String, Path, description = "The task id")),
    responses((status = 200, body = TaskOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc)))]
async fn remind(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<TaskOut>, ApiError> {
    act(&state, &principal, &id, TaskAction::Remind).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassignIn {
    /// The new assignee: an email address or a user id.
    #[schema(min_length = 1, max_length = 320)]
    pub assignee: String,
}

/// Gives the task to someone else: this task is revoked (its link stops
/// working) and a new one, with a new link, is created for `assignee`.
/// Returns the new task.
#[utoipa::path(post, path = "/v1/tasks/{id}/reassign", tag = "tasks", params(("id" = String, Path, description = "The task id")),
    request_body = ReassignIn,
    responses((status = 200, body = TaskOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc), (status = 422, body = ProblemDoc)))]
async fn reassign(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<TaskOut>, ApiError> {
    principal.require("runs:control")?;
    let Json(body) = body?;
    let request: ReassignIn = serde_json::from_value(body)
        .map_err(|e| ApiError::Unprocessable(format!("invalid request: {e}")))?;
    act(
        &state,
        &principal,
        &id,
        TaskAction::Reassign(request.assignee),
    )
    .await
}

/// Revokes the task: its link stops working. The step keeps waiting for
/// its other tasks (or a resume through the API).
#[utoipa::path(post, path = "/v1/tasks/{id}/revoke", tag = "tasks", params(("id" = String, Path, description = "The task id")),
    responses((status = 200, body = TaskOut), (status = 404, body = ProblemDoc), (status = 409, body = ProblemDoc)))]
async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<TaskOut>, ApiError> {
    act(&state, &principal, &id, TaskAction::Revoke).await
}

async fn act(
    state: &AppState,
    principal: &Principal,
    id: &str,
    action: TaskAction,
) -> Result<Json<TaskOut>, ApiError> {
    principal.require("runs:control")?;
    let task = state
        .engine
        .act_on_task(&principal.tenant_id, id, action)
        .await?;
    Ok(Json(TaskOut::new(&state.engine, task, true)))
}

/// `text` with the tokens of task links hidden: a mail in the outbox
/// shows a key without `runs:control` that a link was sent, not the link
/// (which answers the task).
pub fn hide_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("/t/") {
        out.push_str(&rest[..at + 3]);
        rest = &rest[at + 3..];
        let token_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            .count();
        let token = &rest[..token_len];
        if token.len() > 33 && token.as_bytes().get(32) == Some(&b'.') {
            out.push_str("(hidden: needs runs:control)");
        } else {
            out.push_str(token);
        }
        rest = &rest[token_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn task_link_tokens_are_hidden() {
        let body = "Open: http://h/t/0123456789abcdef0123456789abcdef.AbC-_x\nand http://h/t/other";
        assert_eq!(
            super::hide_links(body),
            "Open: http://h/t/(hidden: needs runs:control)\nand http://h/t/other"
        );
    }
}
