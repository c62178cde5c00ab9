//! Webhook subscriptions, their deliveries and every delivery attempt.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Arg, Backend, Conn, DbError, Statement};

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRow {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    /// JSON array of event types.
    pub events: String,
    /// Sealed `whsec_…` secret.
    pub secret: Vec<u8>,
    pub status: String,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i64,
    pub cursor: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

fn webhook(r: &AnyRow) -> Result<WebhookRow, DbError> {
    Ok(WebhookRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        url: r.try_get("url")?,
        events: r.try_get("events")?,
        secret: r.try_get("secret")?,
        status: r.try_get("status")?,
        disabled_reason: r.try_get("disabled_reason")?,
        consecutive_failures: r.try_get("consecutive_failures")?,
        cursor: r.try_get("cursor")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub tenant_id: String,
    pub event_id: i64,
    pub event_type: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub retry_index: i64,
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub created_at: i64,
}

fn delivery(r: &AnyRow) -> Result<DeliveryRow, DbError> {
    Ok(DeliveryRow {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        tenant_id: r.try_get("tenant_id")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        payload: r.try_get("payload")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        retry_index: r.try_get("retry_index")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        delivered_at: r.try_get("delivered_at")?,
        created_at: r.try_get("created_at")?,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub attempt: i64,
    pub at: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

pub async fn insert(conn: &mut Conn, w: &WebhookRow) -> Result<(), DbError> {
    let sql = format!(
        "INSERT INTO webhooks (id, tenant_id, url, events, secret, status, cursor, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, {}, $8, $9)",
        last_event_sql(Backend::of(conn), "$7")
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&w.id)
        .bind(&w.tenant_id)
        .bind(&w.url)
        .bind(&w.events)
        .bind(&w.secret)
        .bind(&w.status)
        .bind(&w.tenant_id)
        .bind(w.created_at)
        .bind(w.updated_at)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes what a PATCH may change. Re-enabling starts after the latest
/// event: what happened while disabled is not delivered.
pub async fn update(conn: &mut Conn, w: &WebhookRow, reenabled: bool) -> Result<(), DbError> {
    let sql = format!(
        "UPDATE webhooks SET url = $1, events = $2, status = $3, disabled_reason = $4, consecutive_failures = $5,
             cursor = CASE WHEN $6 = 1 THEN {} ELSE cursor END,
             updated_at = $8
         WHERE id = $9 AND tenant_id = $10",
        last_event_sql(Backend::of(conn), "$7")
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(&w.url)
        .bind(&w.events)
        .bind(&w.status)
        .bind(&w.disabled_reason)
        .bind(w.consecutive_failures)
        .bind(i64::from(reenabled))
        .bind(&w.tenant_id)
        .bind(w.updated_at)
        .bind(&w.id)
        .bind(&w.tenant_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get(conn: &mut Conn, tenant: &str, id: &str) -> Result<Option<WebhookRow>, DbError> {
    let row = sqlx::query("SELECT * FROM webhooks WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(webhook).transpose()
}

pub async fn list(conn: &mut Conn, tenant: &str) -> Result<Vec<WebhookRow>, DbError> {
    let rows = sqlx::query("SELECT * FROM webhooks WHERE tenant_id = $1 ORDER BY id")
        .bind(tenant)
        .fetch_all(conn)
        .await?;
    rows.iter().map(webhook).collect()
}

/// Deletes a subscription with its deliveries and their attempts.
pub async fn delete(conn: &mut Conn, tenant: &str, id: &str) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = $1)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(true)
}

/// Every active subscription (all tenants): the fan-out's work list.
pub async fn active(conn: &mut Conn) -> Result<Vec<WebhookRow>, DbError> {
    let rows = sqlx::query("SELECT * FROM webhooks WHERE status = 'active'")
        .fetch_all(conn)
        .await?;
    rows.iter().map(webhook).collect()
}

/// An event with what a payload needs of its run.
#[derive(Debug, Clone)]
pub struct EventForDelivery {
    pub id: i64,
    pub run_id: String,
    pub kind: String,
    pub step_id: Option<String>,
    pub data: String,
    pub at: i64,
    pub workflow_key: Option<String>,
    pub workflow_version: Option<String>,
    pub run_status: Option<String>,
    /// The run's labels (JSON text), if it has any.
    pub run_labels: Option<String>,
}

/// Where the event feed of a tenant stands.
///
/// On SQLite, one writer: event ids grow in commit order, and "everything
/// after id N" is the feed. On Postgres, transactions commit in parallel
/// from every host, so an event with a smaller id can commit after one
/// with a larger id that a reader has already passed. There the feed is
/// ordered by `(txid, id)`: `txid` is the id of the transaction that wrote
/// the event (raised to the run's previous event's, which keeps each run's
/// events in order: migrations/postgres/0004). A reader takes only events
/// whose `txid` is below `pg_snapshot_xmin(pg_current_snapshot())`, the
/// oldest transaction still in flight: every transaction that could still
/// commit an event has a `txid` at least that, so it sorts after anything
/// the reader passed, and is read once it has committed. A cursor is still
/// an event id: its position is its event's `(txid, id)`.
const FEED_POSTGRES: &str = "(e.txid, e.id) > (COALESCE((SELECT c.txid FROM events c WHERE c.id <= $2 ORDER BY c.id DESC LIMIT 1), 0), $2)
           AND e.txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
         ORDER BY e.txid, e.id";

/// The feed position of a tenant's newest event that every reader can
/// see (0 if it has none), as SQL with the tenant bound at `tenant`.
fn last_event_sql(backend: Backend, tenant: &str) -> String {
    match backend {
        Backend::Sqlite => {
            format!("(SELECT COALESCE(MAX(id), 0) FROM events WHERE tenant_id = {tenant})")
        }
        Backend::Postgres => format!(
            "(SELECT COALESCE((SELECT id FROM events WHERE tenant_id = {tenant}
                 AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
               ORDER BY txid DESC, id DESC LIMIT 1), 0))"
        ),
    }
}

/// The id of a tenant's newest event in feed order, 0 if it has none:
/// where a live feed with no cursor starts.
pub async fn last_event_id(conn: &mut Conn, tenant: &str) -> Result<i64, DbError> {
    let sql = format!("SELECT {}", last_event_sql(Backend::of(conn), "$1"));
    let id: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(tenant)
        .fetch_one(conn)
        .await?;
    Ok(id.unwrap_or(0))
}

/// A tenant's events after `cursor` (an event id; 0 for the beginning) in
/// feed order, oldest first: never one twice, never one skipped, on both
/// backends ([`FEED_POSTGRES`] tells how on Postgres).
pub async fn events_after(
    conn: &mut Conn,
    tenant: &str,
    cursor: i64,
    limit: i64,
) -> Result<Vec<EventForDelivery>, DbError> {
    let order = match Backend::of(conn) {
        Backend::Sqlite => "e.id > $2 ORDER BY e.id",
        Backend::Postgres => FEED_POSTGRES,
    };
    let sql = format!(
        "SELECT e.id, e.run_id, e.type, e.step_id, e.data, e.at,
                r.workflow_key, r.workflow_version, r.status AS run_status, r.labels AS run_labels
         FROM events e LEFT JOIN runs r ON r.id = e.run_id
         WHERE e.tenant_id = $1 AND {order} LIMIT $3 + 0"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(cursor)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(EventForDelivery {
                id: r.try_get("id")?,
                run_id: r.try_get("run_id")?,
                kind: r.try_get("type")?,
                step_id: r.try_get("step_id")?,
                data: r.try_get("data")?,
                at: r.try_get("at")?,
                workflow_key: r.try_get("workflow_key")?,
                workflow_version: r.try_get("workflow_version")?,
                run_status: r.try_get("run_status")?,
                run_labels: r.try_get("run_labels")?,
            })
        })
        .collect()
}

pub async fn insert_delivery(conn: &mut Conn, d: &DeliveryRow) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event_id, event_type, payload, status, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)
         ON CONFLICT (webhook_id, event_id) DO NOTHING",
    )
    .bind(&d.id)
    .bind(&d.webhook_id)
    .bind(&d.tenant_id)
    .bind(d.event_id)
    .bind(&d.event_type)
    .bind(&d.payload)
    .bind(d.next_attempt_at)
    .bind(d.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves a subscription's feed cursor; the caller holds the subscription
/// ([`lock_for_fan_out`]).
pub async fn set_cursor(conn: &mut Conn, webhook_id: &str, cursor: i64) -> Result<(), DbError> {
    sqlx::query("UPDATE webhooks SET cursor = $1 WHERE id = $2")
        .bind(cursor)
        .bind(webhook_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes an active subscription for fanning out its new events in this
/// transaction: its current cursor, or `None` when another host is fanning
/// it out now (Postgres: its row is locked; skipped, not waited for) or it
/// is no longer active.
pub async fn lock_for_fan_out(conn: &mut Conn, webhook_id: &str) -> Result<Option<i64>, DbError> {
    let sql = match Backend::of(conn) {
        Backend::Sqlite => "SELECT cursor FROM webhooks WHERE id = $1 AND status = 'active'",
        Backend::Postgres => {
            "SELECT cursor FROM webhooks WHERE id = $1 AND status = 'active' FOR UPDATE SKIP LOCKED"
        }
    };
    Ok(sqlx::query_scalar(sql)
        .bind(webhook_id)
        .fetch_optional(conn)
        .await?)
}

/// Takes up to `limit` due deliveries of active subscriptions, pushing
/// their next attempt `lease_ms` ahead so that a crash mid-send retries
/// them later rather than never.
pub async fn claim_due(
    conn: &mut Conn,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>, DbError> {
    // On Postgres, hosts claiming at once skip each other's rows.
    let lock = match Backend::of(conn) {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE OF d SKIP LOCKED",
    };
    let rows = sqlx::query(AssertSqlSafe(format!(
        "UPDATE webhook_deliveries SET next_attempt_at = $1 + $2
         WHERE id IN (
             SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND w.status = 'active'
             ORDER BY d.next_attempt_at LIMIT $3 + 0{lock})
         RETURNING *"
    )))
    .bind(now)
    .bind(lease_ms)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(delivery).collect()
}

/// The earliest next attempt of any pending delivery.
pub async fn next_due(conn: &mut Conn) -> Result<Option<i64>, DbError> {
    let row = sqlx::query(
        "SELECT MIN(next_attempt_at) AS t FROM webhook_deliveries WHERE status = 'pending'",
    )
    .fetch_one(conn)
    .await?;
    Ok(row.try_get("t")?)
}

pub async fn insert_attempt(conn: &mut Conn, a: &AttemptRow) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&a.delivery_id)
    .bind(a.attempt)
    .bind(a.at)
    .bind(a.status_code)
    .bind(&a.error)
    .bind(a.duration_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes a delivery's state after an attempt or a redelivery request.
pub async fn update_delivery(conn: &mut Conn, d: &DeliveryRow) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $1, attempts = $2, retry_index = $3, next_attempt_at = $4, delivered_at = $5
         WHERE id = $6",
    )
    .bind(&d.status)
    .bind(d.attempts)
    .bind(d.retry_index)
    .bind(d.next_attempt_at)
    .bind(d.delivered_at)
    .bind(&d.id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts a subscription's attempt: success resets the run of failures; a
/// failure that reaches `disable_after` (or a `410 Gone`) disables it.
/// Returns whether it is now disabled.
pub async fn record_outcome(
    conn: &mut Conn,
    webhook_id: &str,
    success: bool,
    disable_reason: Option<&str>,
    disable_after: i64,
    now: i64,
) -> Result<bool, DbError> {
    let row = sqlx::query(
        "UPDATE webhooks SET
             consecutive_failures = CASE WHEN $1 THEN 0 ELSE consecutive_failures + 1 END,
             status = CASE WHEN NOT $1 AND ($2 IS NOT NULL OR consecutive_failures + 1 >= $3) THEN 'disabled' ELSE status END,
             disabled_reason = CASE WHEN NOT $1 AND ($2 IS NOT NULL OR consecutive_failures + 1 >= $3)
                 THEN COALESCE($2, 'disabled after ' || $3 || ' consecutive failed delivery attempts') ELSE disabled_reason END,
             updated_at = $4
         WHERE id = $5
         RETURNING status",
    )
    .bind(success)
    .bind(disable_reason)
    .bind(disable_after)
    .bind(now)
    .bind(webhook_id)
    .fetch_optional(conn)
    .await?;
    match row {
        Some(r) => Ok(r.try_get::<String, _>("status")? == "disabled"),
        None => Ok(false),
    }
}

/// A subscription's deliveries, newest first, before `cursor` (an id).
pub async fn deliveries(
    conn: &mut Conn,
    webhook_id: &str,
    status: Option<&str>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, DbError> {
    let rows = sqlx::query(
        "SELECT * FROM webhook_deliveries WHERE webhook_id = $1
           AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4 + 0",
    )
    .bind(webhook_id)
    .bind(status)
    .bind(cursor)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(delivery).collect()
}

pub async fn get_delivery(
    conn: &mut Conn,
    webhook_id: &str,
    id: &str,
) -> Result<Option<DeliveryRow>, DbError> {
    let row = sqlx::query("SELECT * FROM webhook_deliveries WHERE webhook_id = $1 AND id = $2")
        .bind(webhook_id)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(delivery).transpose()
}

/// Attempts of the given deliveries, oldest first.
pub async fn attempts_of(
    conn: &mut Conn,
    delivery_ids: &[String],
) -> Result<Vec<AttemptRow>, DbError> {
    if delivery_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows = Vec::new();
    for chunk in delivery_ids.chunks(200) {
        rows.extend(
            Statement::new("SELECT * FROM webhook_attempts WHERE delivery_id IN ")
                .tuple(chunk.iter().map(Arg::from))
                .push(" ORDER BY delivery_id, attempt")
                .fetch_all(&mut *conn)
                .await?,
        );
    }
    rows.iter()
        .map(|r| {
            Ok::<_, DbError>(AttemptRow {
                delivery_id: r.try_get("delivery_id")?,
                attempt: r.try_get("attempt")?,
                at: r.try_get("at")?,
                status_code: r.try_get("status_code")?,
                error: r.try_get("error")?,
                duration_ms: r.try_get("duration_ms")?,
            })
        })
        .collect()
}
