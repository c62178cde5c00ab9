//! Schedules and the ticks they fired.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Conn, DbError};

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub id: String,
    pub tenant_id: String,
    pub workflow_key: String,
    pub cron: String,
    pub timezone: String,
    pub input: String,
    pub status: String,
    pub next_run_at: Option<i64>,
    pub last_run_id: Option<String>,
    pub last_fired_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The priority of the runs it starts, 1 to 3.
    pub priority: i64,
}

fn schedule(r: &AnyRow) -> Result<ScheduleRow, DbError> {
    Ok(ScheduleRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        workflow_key: r.try_get("workflow_key")?,
        cron: r.try_get("cron")?,
        timezone: r.try_get("timezone")?,
        input: r.try_get("input")?,
        status: r.try_get("status")?,
        next_run_at: r.try_get("next_run_at")?,
        last_run_id: r.try_get("last_run_id")?,
        last_fired_at: r.try_get("last_fired_at")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        priority: r.try_get("priority")?,
    })
}

pub async fn insert(conn: &mut Conn, s: &ScheduleRow) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO schedules (id, tenant_id, workflow_key, cron, timezone, input, status, next_run_at, created_at, updated_at, priority)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&s.id)
    .bind(&s.tenant_id)
    .bind(&s.workflow_key)
    .bind(&s.cron)
    .bind(&s.timezone)
    .bind(&s.input)
    .bind(&s.status)
    .bind(s.next_run_at)
    .bind(s.created_at)
    .bind(s.updated_at)
    .bind(s.priority)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes the settings a PATCH may change and the next tick.
pub async fn update(conn: &mut Conn, s: &ScheduleRow) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE schedules SET cron = $1, timezone = $2, input = $3, status = $4, next_run_at = $5, updated_at = $6,
             priority = $9
         WHERE id = $7 AND tenant_id = $8",
    )
    .bind(&s.cron)
    .bind(&s.timezone)
    .bind(&s.input)
    .bind(&s.status)
    .bind(s.next_run_at)
    .bind(s.updated_at)
    .bind(&s.id)
    .bind(&s.tenant_id)
    .bind(s.priority)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut Conn, tenant: &str, id: &str) -> Result<Option<ScheduleRow>, DbError> {
    let row = sqlx::query("SELECT * FROM schedules WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(schedule).transpose()
}

/// A tenant's schedules, optionally of one workflow, oldest first.
pub async fn list(
    conn: &mut Conn,
    tenant: &str,
    workflow: Option<&str>,
) -> Result<Vec<ScheduleRow>, DbError> {
    let rows = sqlx::query(
        "SELECT * FROM schedules WHERE tenant_id = $1 AND ($2 IS NULL OR workflow_key = $2) ORDER BY id",
    )
    .bind(tenant)
    .bind(workflow)
    .fetch_all(conn)
    .await?;
    rows.iter().map(schedule).collect()
}

/// Deletes a schedule and the record of its fired ticks (the runs stay).
pub async fn delete(conn: &mut Conn, tenant: &str, id: &str) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM schedules WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM schedule_fires WHERE schedule_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(true)
}

/// Active schedules whose next tick is at or before `now`.
pub async fn due(conn: &mut Conn, now: i64, limit: i64) -> Result<Vec<ScheduleRow>, DbError> {
    let rows = sqlx::query(
        "SELECT * FROM schedules WHERE status = 'active' AND next_run_at <= $1 ORDER BY next_run_at LIMIT $2 + 0",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(schedule).collect()
}

/// The earliest next tick of any active schedule.
pub async fn next_due(conn: &mut Conn) -> Result<Option<i64>, DbError> {
    let row = sqlx::query("SELECT MIN(next_run_at) AS t FROM schedules WHERE status = 'active'")
        .fetch_one(conn)
        .await?;
    Ok(row.try_get("t")?)
}

/// Claims `tick` of a schedule: false if it was fired before.
pub async fn claim_tick(
    conn: &mut Conn,
    schedule_id: &str,
    tick: i64,
    now: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO schedule_fires (schedule_id, tick, fired_at) VALUES ($1, $2, $3)
         ON CONFLICT (schedule_id, tick) DO NOTHING",
    )
    .bind(schedule_id)
    .bind(tick)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records what a fired tick did, and moves the schedule to its next tick.
#[allow(clippy::too_many_arguments, reason = "one firing's outcome")]
pub async fn record_fire(
    conn: &mut Conn,
    schedule_id: &str,
    tick: i64,
    run_id: Option<&str>,
    error: Option<&str>,
    next_run_at: Option<i64>,
    now: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE schedule_fires SET run_id = $1, error = $2 WHERE schedule_id = $3 AND tick = $4",
    )
    .bind(run_id)
    .bind(error)
    .bind(schedule_id)
    .bind(tick)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE schedules SET next_run_at = $1, last_fired_at = $2, last_run_id = COALESCE($3, last_run_id),
             last_error = $4, updated_at = $5
         WHERE id = $6",
    )
    .bind(next_run_at)
    .bind(tick)
    .bind(run_id)
    .bind(error)
    .bind(now)
    .bind(schedule_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves a schedule on without firing (its tick was fired before).
pub async fn set_next(
    conn: &mut Conn,
    schedule_id: &str,
    next_run_at: Option<i64>,
) -> Result<(), DbError> {
    sqlx::query("UPDATE schedules SET next_run_at = $1 WHERE id = $2")
        .bind(next_run_at)
        .bind(schedule_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A fired tick: when, and the run it started or why it started none.
#[derive(Debug, Clone)]
pub struct FireRow {
    pub tick: i64,
    pub run_id: Option<String>,
    pub error: Option<String>,
    pub fired_at: i64,
}

/// The latest fired ticks of a schedule, newest first.
pub async fn fires(
    conn: &mut Conn,
    schedule_id: &str,
    limit: i64,
) -> Result<Vec<FireRow>, DbError> {
    let rows = sqlx::query(
        "SELECT tick, run_id, error, fired_at FROM schedule_fires WHERE schedule_id = $1 ORDER BY tick DESC LIMIT $2 + 0",
    )
    .bind(schedule_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok::<_, DbError>(FireRow {
                tick: r.try_get("tick")?,
                run_id: r.try_get("run_id")?,
                error: r.try_get("error")?,
                fired_at: r.try_get("fired_at")?,
            })
        })
        .collect()
}
