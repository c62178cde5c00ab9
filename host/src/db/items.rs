//! The items of a step with `for_each`: one row per item of the list, in
//! the order of the list.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::sql::{Arg, Statement};
pub use super::status::ItemStatus;
use super::{Backend, Conn, DbError};

/// Rows per multi-row statement.
const ROWS_PER_STATEMENT: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    pub run_id: String,
    pub step_id: String,
    pub index: i64,
    pub status: ItemStatus,
    pub attempts: i64,
    /// JSON text, once completed.
    pub output: Option<String>,
    /// JSON `{kind, message, attempt}` of the last failed attempt.
    pub error: Option<String>,
    /// The last attempt's log lines, JSON.
    pub logs: Option<String>,
    pub host: Option<String>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
}

fn item(r: &AnyRow) -> Result<ItemRow, DbError> {
    Ok(ItemRow {
        run_id: r.try_get("run_id")?,
        step_id: r.try_get("step_id")?,
        index: r.try_get("idx")?,
        status: ItemStatus::parse(&r.try_get::<String, _>("status")?)?,
        attempts: r.try_get("attempts")?,
        output: r.try_get("output")?,
        error: r.try_get("error")?,
        logs: r.try_get("logs")?,
        host: r.try_get("host")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
    })
}

/// How many items of a step are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
}

impl Counts {
    pub fn total(&self) -> i64 {
        self.pending + self.running + self.completed + self.failed
    }

    fn add(&mut self, status: ItemStatus, n: i64) {
        match status {
            ItemStatus::Running => self.running += n,
            ItemStatus::Completed => self.completed += n,
            ItemStatus::Failed => self.failed += n,
            ItemStatus::Pending => self.pending += n,
        }
    }
}

/// Creates the rows of items `0..n` that do not exist yet, as pending.
pub async fn create(conn: &mut Conn, run_id: &str, step_id: &str, n: i64) -> Result<(), DbError> {
    if n <= 0 {
        return Ok(());
    }
    let sql = match Backend::of(conn) {
        Backend::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $3)
             INSERT INTO items (run_id, step_id, idx, status, attempts)
             SELECT $1, $2, i, 'pending', 0 FROM n WHERE true
             ON CONFLICT (run_id, step_id, idx) DO NOTHING"
        }
        Backend::Postgres => {
            "INSERT INTO items (run_id, step_id, idx, status, attempts)
             SELECT $1, $2, i, 'pending', 0 FROM generate_series(0, $3 - 1) AS i
             ON CONFLICT (run_id, step_id, idx) DO NOTHING"
        }
    };
    sqlx::query(sql)
        .bind(run_id)
        .bind(step_id)
        .bind(n)
        .execute(conn)
        .await?;
    Ok(())
}

/// The items still to run (pending, or running when an earlier attempt of
/// the step was cut short), in list order: index and attempts so far.
pub async fn unfinished(
    conn: &mut Conn,
    run_id: &str,
    step_id: &str,
) -> Result<Vec<(i64, i64)>, DbError> {
    let rows = sqlx::query(
        "SELECT idx, attempts FROM items WHERE run_id = $1 AND step_id = $2
         AND status IN ('pending', 'running') ORDER BY idx",
    )
    .bind(run_id)
    .bind(step_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("idx")?, r.try_get("attempts")?)))
        .collect()
}

/// The items of a step in list order, from index `after + 1`, at most
/// `limit`, only those in `status` if given.
pub async fn list(
    conn: &mut Conn,
    run_id: &str,
    step_id: &str,
    status: Option<ItemStatus>,
    after: i64,
    limit: i64,
) -> Result<Vec<ItemRow>, DbError> {
    let sql = match status {
        Some(_) => {
            "SELECT * FROM items WHERE run_id = $1 AND step_id = $2 AND idx > $3
             AND status = $5 ORDER BY idx LIMIT $4 + 0"
        }
        None => {
            "SELECT * FROM items WHERE run_id = $1 AND step_id = $2 AND idx > $3
             ORDER BY idx LIMIT $4 + 0"
        }
    };
    let mut query = sqlx::query(sql)
        .bind(run_id)
        .bind(step_id)
        .bind(after)
        .bind(limit);
    if let Some(status) = status {
        query = query.bind(status.as_str());
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter().map(item).collect()
}

/// Each step's item counts, for the steps of `run_id` that have items.
pub async fn counts(conn: &mut Conn, run_id: &str) -> Result<Vec<(String, Counts)>, DbError> {
    let rows = sqlx::query(
        "SELECT step_id, status, COUNT(*) AS n FROM items WHERE run_id = $1
         GROUP BY step_id, status ORDER BY step_id",
    )
    .bind(run_id)
    .fetch_all(conn)
    .await?;
    let mut out: Vec<(String, Counts)> = Vec::new();
    for r in &rows {
        let step: String = r.try_get("step_id")?;
        let status = ItemStatus::parse(&r.try_get::<String, _>("status")?)?;
        let n: i64 = r.try_get("n")?;
        match out.last_mut() {
            Some((last, counts)) if *last == step => counts.add(status, n),
            _ => {
                let mut counts = Counts::default();
                counts.add(status, n);
                out.push((step, counts));
            }
        }
    }
    Ok(out)
}

/// The step's items' outcomes in list order: status, output, error. Read
/// in pages, so no statement holds more than a page.
pub async fn outcomes(
    conn: &mut Conn,
    run_id: &str,
    step_id: &str,
) -> Result<Vec<(ItemStatus, Option<String>, Option<String>)>, DbError> {
    let mut out = Vec::new();
    let mut after = -1;
    loop {
        let rows = sqlx::query(
            "SELECT idx, status, output, error FROM items WHERE run_id = $1 AND step_id = $2
             AND idx > $3 ORDER BY idx LIMIT 1000",
        )
        .bind(run_id)
        .bind(step_id)
        .bind(after)
        .fetch_all(&mut *conn)
        .await?;
        for r in &rows {
            after = r.try_get("idx")?;
            out.push((
                ItemStatus::parse(&r.try_get::<String, _>("status")?)?,
                r.try_get("output")?,
                r.try_get("error")?,
            ));
        }
        if rows.len() < 1000 {
            return Ok(out);
        }
    }
}

/// Puts a step's failed items back to pending (a retry of the step by
/// hand; their attempts go on counting, as a step's do); returns how many.
pub async fn reset_failed(conn: &mut Conn, run_id: &str, step_id: &str) -> Result<u64, DbError> {
    let done = sqlx::query(
        "UPDATE items SET status = 'pending', ended_at = NULL
         WHERE run_id = $1 AND step_id = $2 AND status = 'failed'",
    )
    .bind(run_id)
    .bind(step_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Statements that write these items' every mutable column.
pub(super) fn upserts(rows: &[ItemRow]) -> Vec<Statement<'_>> {
    rows.chunks(ROWS_PER_STATEMENT)
        .map(|chunk| {
            let mut s = Statement::new(
                "INSERT INTO items (run_id, step_id, idx, status, attempts, output, error, logs, host, started_at, ended_at) ",
            );
            s.values(chunk, |i| {
                [
                    Arg::from(&i.run_id),
                    Arg::from(&i.step_id),
                    Arg::from(i.index),
                    Arg::from(i.status.as_str()),
                    Arg::from(i.attempts),
                    Arg::from(&i.output),
                    Arg::from(&i.error),
                    Arg::from(&i.logs),
                    Arg::from(&i.host),
                    Arg::from(i.started_at),
                    Arg::from(i.ended_at),
                ]
            })
            // An item that ended stays as it ended: a host that lost the
            // step's lease cannot undo another's result.
            .push(
                " ON CONFLICT (run_id, step_id, idx) DO UPDATE SET status = excluded.status,
                  attempts = excluded.attempts, output = excluded.output, error = excluded.error,
                  logs = excluded.logs, host = excluded.host, started_at = excluded.started_at,
                  ended_at = excluded.ended_at
                  WHERE items.status NOT IN ('completed', 'failed')",
            );
            s
        })
        .collect()
}

/// Whether `host` still holds the lease of attempt `attempt` of the step.
pub async fn holds_lease(
    conn: &mut Conn,
    run_id: &str,
    step_id: &str,
    host: &str,
    attempt: i64,
) -> Result<bool, DbError> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT attempts FROM steps WHERE run_id = $1 AND step_id = $2
         AND status = 'running' AND lease_owner = $3",
    )
    .bind(run_id)
    .bind(step_id)
    .bind(host)
    .fetch_optional(conn)
    .await?;
    Ok(found == Some(attempt))
}

/// The bytes of a step's items' outputs and errors together.
pub async fn output_bytes(conn: &mut Conn, run_id: &str, step_id: &str) -> Result<i64, DbError> {
    let bytes: Option<i64> = sqlx::query_scalar(
        "SELECT CAST(SUM(COALESCE(LENGTH(output), 0) + COALESCE(LENGTH(error), 0)) AS BIGINT)
         FROM items WHERE run_id = $1 AND step_id = $2",
    )
    .bind(run_id)
    .bind(step_id)
    .fetch_one(conn)
    .await?;
    Ok(bytes.unwrap_or(0))
}
