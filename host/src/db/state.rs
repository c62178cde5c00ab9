//! What plugins persist through host services (key-value entries, the mail
//! outbox, files) and the API's idempotency records. Every query names the
//! tenant: nothing here can reach across tenants.

use sqlx::Row;

use super::status::stored_words;
use super::{Conn, DbError};

pub async fn kv_get(
    conn: &mut Conn,
    tenant: &str,
    bucket: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, DbError> {
    Ok(
        sqlx::query_scalar(
            "SELECT value FROM kv WHERE tenant_id = $1 AND bucket = $2 AND key = $3",
        )
        .bind(tenant)
        .bind(bucket)
        .bind(key)
        .fetch_optional(conn)
        .await?,
    )
}

pub async fn kv_set(
    conn: &mut Conn,
    tenant: &str,
    bucket: &str,
    key: &str,
    value: &[u8],
    at: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO kv (tenant_id, bucket, key, value, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, bucket, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(bucket)
    .bind(key)
    .bind(value)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn kv_delete(
    conn: &mut Conn,
    tenant: &str,
    bucket: &str,
    key: &str,
) -> Result<(), DbError> {
    sqlx::query("DELETE FROM kv WHERE tenant_id = $1 AND bucket = $2 AND key = $3")
        .bind(tenant)
        .bind(bucket)
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn kv_keys(
    conn: &mut Conn,
    tenant: &str,
    bucket: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT key FROM kv WHERE tenant_id = $1 AND bucket = $2 ORDER BY key LIMIT $3 + 0 OFFSET $4 + 0",
    )
    .bind(tenant)
    .bind(bucket)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await?)
}

stored_words! {
    /// Where a message of the outbox stands.
    OutboxStatus, "outbox status" {
        /// Waiting for the SMTP sender (first try or a retry after backoff).
        Queued => "queued",
        /// Accepted by the relay.
        Sent => "sent",
        /// Refused for good (a permanent SMTP reply, a bad address) or still
        /// undeliverable when the retries ran out; `POST
        /// /v1/outbox/{id}/retry` queues it again.
        Failed => "failed",
    }
}

/// A message in a tenant's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub tenant_id: String,
    pub key: String,
    pub message_id: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub body: String,
    pub status: OutboxStatus,
    /// Delivery attempts since the message was queued (or queued again).
    pub attempts: i64,
    /// The last failure: the relay's reply, or why it could not be reached.
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    /// When a queued message is next due (ms); the sender's backoff.
    pub next_attempt_at: i64,
}

/// Queues `message` unless its key is already in the outbox; returns the
/// message id stored under the key either way.
pub async fn outbox_put(conn: &mut Conn, m: &OutboxMessage) -> Result<String, DbError> {
    let recipients = serde_json::json!({"to": m.to, "cc": m.cc}).to_string();
    sqlx::query(
        "INSERT INTO outbox (tenant_id, key, message_id, run_id, step_id, recipients, subject, body, status, attempts, created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, $9, $10)
         ON CONFLICT (tenant_id, key) DO NOTHING",
    )
    .bind(&m.tenant_id)
    .bind(&m.key)
    .bind(&m.message_id)
    .bind(&m.run_id)
    .bind(&m.step_id)
    .bind(recipients)
    .bind(&m.subject)
    .bind(&m.body)
    .bind(m.created_at)
    .bind(m.next_attempt_at)
    .execute(&mut *conn)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT message_id FROM outbox WHERE tenant_id = $1 AND key = $2")
            .bind(&m.tenant_id)
            .bind(&m.key)
            .fetch_one(conn)
            .await?,
    )
}

fn outbox_message(r: &sqlx::any::AnyRow) -> Result<OutboxMessage, DbError> {
    let recipients: serde_json::Value = serde_json::from_str(r.try_get::<&str, _>("recipients")?)?;
    let list = |field: &str| -> Vec<String> {
        recipients[field]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(OutboxMessage {
        tenant_id: r.try_get("tenant_id")?,
        key: r.try_get("key")?,
        message_id: r.try_get("message_id")?,
        run_id: r.try_get("run_id")?,
        step_id: r.try_get("step_id")?,
        to: list("to"),
        cc: list("cc"),
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        status: OutboxStatus::parse(&r.try_get::<String, _>("status")?)?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        sent_at: r.try_get("sent_at")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
    })
}

/// A page of a tenant's outbox, newest first, optionally only one run's
/// messages: those after the message `cursor` (a message id), if given.
pub async fn outbox_list(
    conn: &mut Conn,
    tenant: &str,
    run_id: Option<&str>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<OutboxMessage>, DbError> {
    let rows = sqlx::query(
        "SELECT * FROM outbox WHERE tenant_id = $1 AND ($2 IS NULL OR run_id = $2)
           AND ($3 IS NULL OR created_at < (SELECT c.created_at FROM outbox c WHERE c.tenant_id = $1 AND c.message_id = $3)
                OR (created_at = (SELECT c.created_at FROM outbox c WHERE c.tenant_id = $1 AND c.message_id = $3)
                    AND message_id < $3))
         ORDER BY created_at DESC, message_id DESC LIMIT $4 + 0",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(cursor)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(outbox_message).collect()
}

/// One message of a tenant's outbox.
pub async fn outbox_get(
    conn: &mut Conn,
    tenant: &str,
    message_id: &str,
) -> Result<Option<OutboxMessage>, DbError> {
    let row = sqlx::query("SELECT * FROM outbox WHERE tenant_id = $1 AND message_id = $2")
        .bind(tenant)
        .bind(message_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(outbox_message).transpose()
}

/// Queued messages due by `now` for the SMTP sender, longest waiting first.
pub async fn outbox_due(
    conn: &mut Conn,
    now: i64,
    limit: i64,
) -> Result<Vec<OutboxMessage>, DbError> {
    let rows = sqlx::query(
        "SELECT * FROM outbox WHERE status = 'queued' AND next_attempt_at <= $1
         ORDER BY next_attempt_at, created_at, message_id LIMIT $2 + 0",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(outbox_message).collect()
}

/// The outcome of one delivery attempt of a queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery<'a> {
    Sent,
    /// Try again at `next_attempt_at`.
    Retry {
        error: &'a str,
        next_attempt_at: i64,
    },
    Failed {
        error: &'a str,
    },
}

/// Records one delivery attempt of a message the sender took while queued.
/// A message queued again meanwhile (`retry`) keeps its new schedule unless
/// this attempt sent it.
pub async fn outbox_record(
    conn: &mut Conn,
    message_id: &str,
    delivery: &Delivery<'_>,
    at: i64,
) -> Result<(), DbError> {
    let (status, error, next) = match delivery {
        Delivery::Sent => (OutboxStatus::Sent, None, at),
        Delivery::Retry {
            error,
            next_attempt_at,
        } => (OutboxStatus::Queued, Some(*error), *next_attempt_at),
        Delivery::Failed { error } => (OutboxStatus::Failed, Some(*error), at),
    };
    sqlx::query(
        "UPDATE outbox SET status = $1, last_error = $2, attempts = attempts + 1, next_attempt_at = $3,
                sent_at = CASE WHEN $1 = 'sent' THEN $4 ELSE sent_at END
         WHERE message_id = $5 AND status = 'queued'",
    )
    .bind(status.as_str())
    .bind(error)
    .bind(next)
    .bind(at)
    .bind(message_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// What asking to send a message again found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// Queued, due at once, its attempts counted afresh.
    Queued(Box<OutboxMessage>),
    /// The relay already accepted it: sending again would duplicate it.
    AlreadySent,
    NotFound,
}

/// Queues a failed or queued message of `tenant` to be sent at `now`.
pub async fn outbox_requeue(
    conn: &mut Conn,
    tenant: &str,
    message_id: &str,
    now: i64,
) -> Result<Requeue, DbError> {
    sqlx::query(
        "UPDATE outbox SET status = 'queued', attempts = 0, next_attempt_at = $1
         WHERE tenant_id = $2 AND message_id = $3 AND status <> 'sent'",
    )
    .bind(now)
    .bind(tenant)
    .bind(message_id)
    .execute(&mut *conn)
    .await?;
    Ok(match outbox_get(conn, tenant, message_id).await? {
        None => Requeue::NotFound,
        Some(m) if m.status == OutboxStatus::Sent => Requeue::AlreadySent,
        Some(m) => Requeue::Queued(Box::new(m)),
    })
}

/// An uploaded file.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub tenant_id: String,
    pub id: String,
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub size: i64,
    pub sha256: String,
    pub created_at: i64,
}

pub async fn file_put(conn: &mut Conn, f: &FileRow, content: &[u8]) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO files (tenant_id, id, name, content_type, size, sha256, content, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&f.tenant_id)
    .bind(&f.id)
    .bind(&f.name)
    .bind(&f.content_type)
    .bind(f.size)
    .bind(&f.sha256)
    .bind(content)
    .bind(f.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The file's size and, if it is at most `max_bytes`, its content.
pub async fn file_content(
    conn: &mut Conn,
    tenant: &str,
    id: &str,
    max_bytes: i64,
) -> Result<Option<(i64, Option<Vec<u8>>)>, DbError> {
    let row = sqlx::query(
        "SELECT size, CASE WHEN size <= $1 THEN content END AS content FROM files WHERE tenant_id = $2 AND id = $3",
    )
    .bind(max_bytes)
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok::<_, DbError>((r.try_get("size")?, r.try_get("content")?)))
        .transpose()
}

/// An `Idempotency-Key` as stored: reserved while its request is in flight
/// (`status` 0), then the stored answer, or for a run start the run it
/// created.
#[derive(Debug, Clone)]
pub struct IdempotentResponse {
    pub request_hash: String,
    /// The answer's HTTP status; 0 while the request is in flight.
    pub status: i64,
    pub response: String,
    /// A run start: the run created with the key, in the same transaction.
    pub run_id: Option<String>,
    /// When the key was reserved (ms), to take over one a crashed request
    /// left in flight.
    pub created_at: i64,
}

/// The status of a key whose request is in flight.
pub const IN_FLIGHT: i64 = 0;

pub async fn idempotency_get(
    conn: &mut Conn,
    tenant: &str,
    key: &str,
    route: &str,
) -> Result<Option<IdempotentResponse>, DbError> {
    let row = sqlx::query("SELECT request_hash, status, response, run_id, created_at FROM idempotency WHERE tenant_id = $1 AND key = $2 AND route = $3")
        .bind(tenant)
        .bind(key)
        .bind(route)
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        Ok(IdempotentResponse {
            request_hash: r.try_get("request_hash")?,
            status: r.try_get("status")?,
            response: r.try_get("response")?,
            run_id: r.try_get("run_id")?,
            created_at: r.try_get("created_at")?,
        })
    })
    .transpose()
}

/// Reserves `key` for a request in flight; false if the key is taken
/// (in flight or answered).
pub async fn idempotency_reserve(
    conn: &mut Conn,
    tenant: &str,
    key: &str,
    route: &str,
    request_hash: &str,
    at: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO idempotency (tenant_id, key, route, request_hash, status, response, created_at) VALUES ($1, $2, $3, $4, $5, '', $6)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(key)
    .bind(route)
    .bind(request_hash)
    .bind(IN_FLIGHT)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes over a reservation left in flight since `reserved_at` (its
/// request's process died); false if another request took it first or it
/// was answered meanwhile.
pub async fn idempotency_take_over(
    conn: &mut Conn,
    tenant: &str,
    key: &str,
    route: &str,
    reserved_at: i64,
    at: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE idempotency SET created_at = $1 WHERE tenant_id = $2 AND key = $3 AND route = $4 AND status = $5 AND run_id IS NULL AND created_at = $6",
    )
    .bind(at)
    .bind(tenant)
    .bind(key)
    .bind(route)
    .bind(IN_FLIGHT)
    .bind(reserved_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores the answer of a reserved request.
pub async fn idempotency_finish(
    conn: &mut Conn,
    tenant: &str,
    key: &str,
    route: &str,
    status: i64,
    response: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE idempotency SET status = $1, response = $2 WHERE tenant_id = $3 AND key = $4 AND route = $5",
    )
    .bind(status)
    .bind(response)
    .bind(tenant)
    .bind(key)
    .bind(route)
    .execute(conn)
    .await?;
    Ok(())
}

/// Frees a reservation whose request failed, so the key can be used again.
pub async fn idempotency_release(
    conn: &mut Conn,
    tenant: &str,
    key: &str,
    route: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "DELETE FROM idempotency WHERE tenant_id = $1 AND key = $2 AND route = $3 AND status = $4 AND run_id IS NULL",
    )
    .bind(tenant)
    .bind(key)
    .bind(route)
    .bind(IN_FLIGHT)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn secret_put(
    conn: &mut Conn,
    tenant: &str,
    name: &str,
    sealed: &[u8],
    at: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO secrets (tenant_id, name, sealed, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(name)
    .bind(sealed)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn secret_get(
    conn: &mut Conn,
    tenant: &str,
    name: &str,
) -> Result<Option<Vec<u8>>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT sealed FROM secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .fetch_optional(conn)
            .await?,
    )
}

/// Names and update times of a tenant's secrets (never the values).
pub async fn secret_names(conn: &mut Conn, tenant: &str) -> Result<Vec<(String, i64)>, DbError> {
    let rows =
        sqlx::query("SELECT name, updated_at FROM secrets WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant)
            .fetch_all(conn)
            .await?;
    rows.iter()
        .map(|r| Ok::<_, DbError>((r.try_get("name")?, r.try_get("updated_at")?)))
        .collect()
}

pub async fn secret_delete(conn: &mut Conn, tenant: &str, name: &str) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM secrets WHERE tenant_id = $1 AND name = $2")
        .bind(tenant)
        .bind(name)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn file_meta(
    conn: &mut Conn,
    tenant: &str,
    id: &str,
) -> Result<Option<FileRow>, DbError> {
    let row = sqlx::query("SELECT tenant_id, id, name, content_type, size, sha256, created_at FROM files WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        Ok::<_, DbError>(FileRow {
            tenant_id: r.try_get("tenant_id")?,
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            content_type: r.try_get("content_type")?,
            size: r.try_get("size")?,
            sha256: r.try_get("sha256")?,
            created_at: r.try_get("created_at")?,
        })
    })
    .transpose()
}

/// An in-app notification a plugin recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRow {
    pub id: String,
    pub tenant_id: String,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub title: String,
    pub body: String,
    pub level: String,
    pub audience: String,
    pub link: String,
    pub created_at: i64,
    pub read_at: Option<i64>,
}

/// Records a notification under `key`; a key seen before keeps the first
/// one. Returns the notification's id.
pub async fn notification_put(
    conn: &mut Conn,
    key: &str,
    n: &NotificationRow,
) -> Result<String, DbError> {
    sqlx::query(
        "INSERT INTO notifications (id, tenant_id, idempotency_key, run_id, step_id, title, body, level, audience, link, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
    )
    .bind(&n.id)
    .bind(&n.tenant_id)
    .bind(key)
    .bind(&n.run_id)
    .bind(&n.step_id)
    .bind(&n.title)
    .bind(&n.body)
    .bind(&n.level)
    .bind(&n.audience)
    .bind(&n.link)
    .bind(n.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar(
        "SELECT id FROM notifications WHERE tenant_id = $1 AND idempotency_key = $2",
    )
    .bind(&n.tenant_id)
    .bind(key)
    .fetch_one(conn)
    .await?)
}

/// A tenant's notifications, newest first, before `cursor` (an id).
pub async fn notifications(
    conn: &mut Conn,
    tenant: &str,
    run_id: Option<&str>,
    unread_only: bool,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<NotificationRow>, DbError> {
    let rows = sqlx::query(
        "SELECT * FROM notifications WHERE tenant_id = $1
           AND ($2 IS NULL OR run_id = $2) AND (NOT $3 OR read_at IS NULL) AND ($4 IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5 + 0",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(unread_only)
    .bind(cursor)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok::<_, DbError>(NotificationRow {
                id: r.try_get("id")?,
                tenant_id: r.try_get("tenant_id")?,
                run_id: r.try_get("run_id")?,
                step_id: r.try_get("step_id")?,
                title: r.try_get("title")?,
                body: r.try_get("body")?,
                level: r.try_get("level")?,
                audience: r.try_get("audience")?,
                link: r.try_get("link")?,
                created_at: r.try_get("created_at")?,
                read_at: r.try_get("read_at")?,
            })
        })
        .collect()
}

/// Marks a notification read; false if the tenant has no such notification.
pub async fn notification_read(
    conn: &mut Conn,
    tenant: &str,
    id: &str,
    now: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE notifications SET read_at = COALESCE(read_at, $1) WHERE tenant_id = $2 AND id = $3",
    )
    .bind(now)
    .bind(tenant)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Entries of a bucket whose key starts with `prefix`, after key `after`,
/// in key order: (key, value, updated_at).
pub async fn kv_entries(
    conn: &mut Conn,
    tenant: &str,
    bucket: &str,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, Vec<u8>, i64)>, DbError> {
    let rows = sqlx::query(
        "SELECT key, value, updated_at FROM kv
         WHERE tenant_id = $1 AND bucket = $2 AND substr(key, 1, length($3)) = $3 AND ($4 IS NULL OR key > $4)
         ORDER BY key LIMIT $5 + 0",
    )
    .bind(tenant)
    .bind(bucket)
    .bind(prefix)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok::<_, DbError>((
                r.try_get("key")?,
                r.try_get("value")?,
                r.try_get("updated_at")?,
            ))
        })
        .collect()
}

/// Takes one of `per_minute` places of the rate-limit window starting at
/// `window_start` for `tenant`'s `key`; false when the window is full. One
/// statement, atomic on both backends (concurrent takers across hosts
/// serialize on the window's row).
pub async fn take_rate(
    conn: &mut Conn,
    tenant: &str,
    key: &str,
    window_start: i64,
    per_minute: i64,
) -> Result<bool, DbError> {
    let taken: Option<i64> = sqlx::query_scalar(
        "INSERT INTO rate_windows (tenant_id, key, window_start, used) VALUES ($1, $2, $3, 1)
         ON CONFLICT (tenant_id, key, window_start)
         DO UPDATE SET used = rate_windows.used + 1 WHERE rate_windows.used < $4
         RETURNING used",
    )
    .bind(tenant)
    .bind(key)
    .bind(window_start)
    .bind(per_minute)
    .fetch_optional(conn)
    .await?;
    Ok(taken.is_some())
}

/// Deletes rate-limit windows that started before `before` (ms).
pub async fn sweep_rate_windows(conn: &mut Conn, before: i64) -> Result<u64, DbError> {
    let done = sqlx::query("DELETE FROM rate_windows WHERE window_start < $1")
        .bind(before)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
