//! Tasks: one per assignee of a paused human step, with the rounds of
//! pauses already looked at. Every write happens under the run's lock
//! (`runs::locked_run`), so a task's changes are serial across hosts.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::sql::{Arg, Statement};
use super::{Conn, DbError};

/// Statuses in which a task can still be answered.
pub const OPEN: [&str; 2] = ["open", "viewed"];

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub id: String,
    pub tenant_id: String,
    pub run_id: String,
    pub step_id: String,
    /// When the step paused: a step paused again (after its run was
    /// reopened) gets new tasks.
    pub round: i64,
    pub workflow_key: String,
    pub kind: String,
    pub assignee: String,
    pub status: String,
    pub title: String,
    pub description: Option<String>,
    /// JSON `{schema}` or `{actions, decline}`.
    pub form: String,
    pub completion: String,
    /// Part of what the link signs: a new nonce kills the old link.
    pub nonce: String,
    /// JSON `{"data": …}` or `{"action": …}`.
    pub answer: Option<String>,
    pub reason: Option<String>,
    pub remind_after_ms: Option<i64>,
    pub max_reminders: i64,
    pub reminders_sent: i64,
    pub next_reminder_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// JSON: `"fail"`, `"decline"` or `{"action": …}`.
    pub on_expiry: String,
    pub created_at: i64,
    pub viewed_at: Option<i64>,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
}

impl TaskRow {
    pub fn is_open(&self) -> bool {
        OPEN.contains(&self.status.as_str())
    }

    /// When the task loop next has something to do with it.
    pub fn next_due_at(&self) -> Option<i64> {
        if !self.is_open() {
            return None;
        }
        match (self.next_reminder_at, self.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn task(r: &AnyRow) -> Result<TaskRow, DbError> {
    Ok(TaskRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        run_id: r.try_get("run_id")?,
        step_id: r.try_get("step_id")?,
        round: r.try_get("round")?,
        workflow_key: r.try_get("workflow_key")?,
        kind: r.try_get("kind")?,
        assignee: r.try_get("assignee")?,
        status: r.try_get("status")?,
        title: r.try_get("title")?,
        description: r.try_get("description")?,
        form: r.try_get("form")?,
        completion: r.try_get("completion")?,
        nonce: r.try_get("nonce")?,
        answer: r.try_get("answer")?,
        reason: r.try_get("reason")?,
        remind_after_ms: r.try_get("remind_after_ms")?,
        max_reminders: r.try_get("max_reminders")?,
        reminders_sent: r.try_get("reminders_sent")?,
        next_reminder_at: r.try_get("next_reminder_at")?,
        expires_at: r.try_get("expires_at")?,
        on_expiry: r.try_get("on_expiry")?,
        created_at: r.try_get("created_at")?,
        viewed_at: r.try_get("viewed_at")?,
        answered_at: r.try_get("answered_at")?,
        ended_at: r.try_get("ended_at")?,
    })
}

fn tasks(rows: &[AnyRow]) -> Result<Vec<TaskRow>, DbError> {
    rows.iter().map(task).collect()
}

pub async fn insert(conn: &mut Conn, t: &TaskRow) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO tasks (id, tenant_id, run_id, step_id, round, workflow_key, kind, assignee, status,
           title, description, form, completion, nonce, answer, reason, remind_after_ms, max_reminders,
           reminders_sent, next_reminder_at, expires_at, on_expiry, next_due_at, created_at, viewed_at,
           answered_at, ended_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
           $20, $21, $22, $23, $24, $25, $26, $27)",
    )
    .bind(&t.id)
    .bind(&t.tenant_id)
    .bind(&t.run_id)
    .bind(&t.step_id)
    .bind(t.round)
    .bind(&t.workflow_key)
    .bind(&t.kind)
    .bind(&t.assignee)
    .bind(&t.status)
    .bind(&t.title)
    .bind(&t.description)
    .bind(&t.form)
    .bind(&t.completion)
    .bind(&t.nonce)
    .bind(&t.answer)
    .bind(&t.reason)
    .bind(t.remind_after_ms)
    .bind(t.max_reminders)
    .bind(t.reminders_sent)
    .bind(t.next_reminder_at)
    .bind(t.expires_at)
    .bind(&t.on_expiry)
    .bind(t.next_due_at())
    .bind(t.created_at)
    .bind(t.viewed_at)
    .bind(t.answered_at)
    .bind(t.ended_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes what can change in a task.
pub async fn update(conn: &mut Conn, t: &TaskRow) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE tasks SET assignee = $1, status = $2, nonce = $3, answer = $4, reason = $5,
           reminders_sent = $6, next_reminder_at = $7, expires_at = $8, next_due_at = $9,
           viewed_at = $10, answered_at = $11, ended_at = $12
         WHERE id = $13",
    )
    .bind(&t.assignee)
    .bind(&t.status)
    .bind(&t.nonce)
    .bind(&t.answer)
    .bind(&t.reason)
    .bind(t.reminders_sent)
    .bind(t.next_reminder_at)
    .bind(t.expires_at)
    .bind(t.next_due_at())
    .bind(t.viewed_at)
    .bind(t.answered_at)
    .bind(t.ended_at)
    .bind(&t.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The task if it belongs to `tenant` (any tenant's when `None`: a link
/// names no tenant, its signature decides).
pub async fn get(
    conn: &mut Conn,
    tenant: Option<&str>,
    id: &str,
) -> Result<Option<TaskRow>, DbError> {
    let row = sqlx::query("SELECT * FROM tasks WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
        .bind(id)
        .bind(tenant)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(task).transpose()
}

/// What `GET /v1/tasks` filters on.
#[derive(Debug, Default, Clone)]
pub struct Filter<'a> {
    pub status: Option<&'a str>,
    pub assignee: Option<&'a str>,
    pub run_id: Option<&'a str>,
    pub workflow: Option<&'a str>,
}

/// A tenant's tasks, newest first, before `cursor` (a task id).
pub async fn list(
    conn: &mut Conn,
    tenant: &str,
    filter: &Filter<'_>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<TaskRow>, DbError> {
    let rows = sqlx::query(
        "SELECT * FROM tasks WHERE tenant_id = $1
           AND ($2 IS NULL OR status = $2)
           AND ($3 IS NULL OR assignee = $3)
           AND ($4 IS NULL OR run_id = $4)
           AND ($5 IS NULL OR workflow_key = $5)
           AND ($6 IS NULL OR id < $6)
         ORDER BY id DESC LIMIT $7 + 0",
    )
    .bind(tenant)
    .bind(filter.status)
    .bind(filter.assignee)
    .bind(filter.run_id)
    .bind(filter.workflow)
    .bind(cursor)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    tasks(&rows)
}

/// The tasks of one pause of a step, oldest first.
pub async fn of_round(
    conn: &mut Conn,
    run_id: &str,
    step_id: &str,
    round: i64,
) -> Result<Vec<TaskRow>, DbError> {
    let rows = sqlx::query(
        "SELECT * FROM tasks WHERE run_id = $1 AND step_id = $2 AND round = $3 ORDER BY id",
    )
    .bind(run_id)
    .bind(step_id)
    .bind(round)
    .fetch_all(conn)
    .await?;
    tasks(&rows)
}

/// A run's tasks, oldest first.
pub async fn of_run(conn: &mut Conn, tenant: &str, run_id: &str) -> Result<Vec<TaskRow>, DbError> {
    let rows = sqlx::query("SELECT * FROM tasks WHERE tenant_id = $1 AND run_id = $2 ORDER BY id")
        .bind(tenant)
        .bind(run_id)
        .fetch_all(conn)
        .await?;
    tasks(&rows)
}

/// Marks a pause of a step as looked at; false if it already was.
pub async fn claim_round(
    conn: &mut Conn,
    run_id: &str,
    step_id: &str,
    round: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO task_rounds (run_id, step_id, round) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(run_id)
    .bind(step_id)
    .bind(round)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Paused human steps whose pause nobody has looked at yet, as
/// `(run id, step id, round)`.
pub async fn new_rounds(
    conn: &mut Conn,
    limit: i64,
) -> Result<Vec<(String, String, i64)>, DbError> {
    let rows = sqlx::query(
        "SELECT s.run_id, s.step_id, s.started_at FROM steps s
         WHERE s.status = 'paused' AND s.started_at IS NOT NULL
           AND s.kind IN ('collect_inputs', 'request_user_action')
           AND NOT EXISTS (SELECT 1 FROM task_rounds r
                           WHERE r.run_id = s.run_id AND r.step_id = s.step_id AND r.round = s.started_at)
         LIMIT $1 + 0",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// [`new_rounds`] of the runs `ids` only (found by primary key).
pub async fn new_rounds_of(
    conn: &mut Conn,
    ids: &[String],
) -> Result<Vec<(String, String, i64)>, DbError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let mut query = Statement::new(
            "SELECT s.run_id, s.step_id, s.started_at FROM steps s WHERE s.run_id IN ",
        );
        query.tuple(chunk.iter().map(|id| Arg::from(id.as_str()))).push(
            " AND s.status = 'paused' AND s.started_at IS NOT NULL
              AND s.kind IN ('collect_inputs', 'request_user_action')
              AND NOT EXISTS (SELECT 1 FROM task_rounds r
                              WHERE r.run_id = s.run_id AND r.step_id = s.step_id AND r.round = s.started_at)",
        );
        for r in query.fetch_all(conn).await? {
            out.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
        }
    }
    Ok(out)
}

/// [`stale`] among the tasks of the runs `ids` only.
pub async fn stale_of(conn: &mut Conn, ids: &[String]) -> Result<Vec<(String, String)>, DbError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let mut query = Statement::new(
            "SELECT t.run_id, t.id FROM tasks t
             LEFT JOIN steps s ON s.run_id = t.run_id AND s.step_id = t.step_id
             WHERE t.run_id IN ",
        );
        query
            .tuple(chunk.iter().map(|id| Arg::from(id.as_str())))
            .push(
                " AND t.status IN ('open', 'viewed')
              AND (s.status IS NULL OR s.status <> 'paused' OR s.started_at <> t.round)",
            );
        for r in query.fetch_all(conn).await? {
            out.push((r.try_get(0)?, r.try_get(1)?));
        }
    }
    Ok(out)
}

/// Open tasks whose step no longer waits on them (answered through the
/// API, cancelled, its run ended), as `(run id, task id)`.
pub async fn stale(conn: &mut Conn, limit: i64) -> Result<Vec<(String, String)>, DbError> {
    let rows = sqlx::query(
        "SELECT t.run_id, t.id FROM tasks t
         LEFT JOIN steps s ON s.run_id = t.run_id AND s.step_id = t.step_id
         WHERE t.status IN ('open', 'viewed')
           AND (s.status IS NULL OR s.status <> 'paused' OR s.started_at <> t.round)
         LIMIT $1 + 0",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Open tasks with a reminder or expiry due at `now`, as `(run id, task id)`.
pub async fn due(conn: &mut Conn, now: i64, limit: i64) -> Result<Vec<(String, String)>, DbError> {
    let rows = sqlx::query(
        "SELECT run_id, id FROM tasks WHERE status IN ('open', 'viewed') AND next_due_at <= $1
         ORDER BY next_due_at LIMIT $2 + 0",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// When the earliest reminder or expiry of an open task is due.
pub async fn next_due(conn: &mut Conn) -> Result<Option<i64>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT MIN(next_due_at) FROM tasks WHERE status IN ('open', 'viewed')")
            .fetch_one(conn)
            .await?,
    )
}
