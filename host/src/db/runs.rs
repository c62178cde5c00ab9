//! Runs, their steps and attempts, and the append-only event log.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Conn, DbError};

#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub tenant_id: String,
    pub workflow_key: String,
    pub workflow_version: String,
    pub status: String,
    pub input: String,
    pub result: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub deadline_at: Option<i64>,
    /// Waiting for a run of its workflow to end (`concurrency.on_limit:
    /// queue`): pending, with no step scheduled yet.
    pub queued: bool,
    /// The schedule that started it, if one did.
    pub schedule_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub run_id: String,
    pub step_id: String,
    pub position: i64,
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub due_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub run_id: String,
    pub step_id: String,
    pub attempt: i64,
    pub status: String,
    pub host: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub logs: Option<String>,
    /// The config the attempt ran with, rendered (JSON text).
    pub input: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub id: i64,
    pub tenant_id: String,
    pub run_id: String,
    pub kind: String,
    pub step_id: Option<String>,
    pub data: String,
    pub at: i64,
}

fn run(r: &SqliteRow) -> RunRow {
    RunRow {
        id: r.get("id"),
        tenant_id: r.get("tenant_id"),
        workflow_key: r.get("workflow_key"),
        workflow_version: r.get("workflow_version"),
        status: r.get("status"),
        input: r.get("input"),
        result: r.get("result"),
        error: r.get("error"),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        ended_at: r.get("ended_at"),
        deadline_at: r.get("deadline_at"),
        queued: r.get::<i64, _>("queued") != 0,
        schedule_id: r.get("schedule_id"),
    }
}

fn step(r: &SqliteRow) -> StepRow {
    StepRow {
        run_id: r.get("run_id"),
        step_id: r.get("step_id"),
        position: r.get("position"),
        kind: r.get("kind"),
        status: r.get("status"),
        attempts: r.get("attempts"),
        due_at: r.get("due_at"),
        lease_owner: r.get("lease_owner"),
        lease_expires_at: r.get("lease_expires_at"),
        output: r.get("output"),
        error: r.get("error"),
        started_at: r.get("started_at"),
        ended_at: r.get("ended_at"),
    }
}

fn attempt(r: &SqliteRow) -> AttemptRow {
    AttemptRow {
        run_id: r.get("run_id"),
        step_id: r.get("step_id"),
        attempt: r.get("attempt"),
        status: r.get("status"),
        host: r.get("host"),
        started_at: r.get("started_at"),
        ended_at: r.get("ended_at"),
        error_kind: r.get("error_kind"),
        error: r.get("error"),
        logs: r.get("logs"),
        input: r.get("input"),
    }
}

fn event(r: &SqliteRow) -> EventRow {
    EventRow {
        id: r.get("id"),
        tenant_id: r.get("tenant_id"),
        run_id: r.get("run_id"),
        kind: r.get("type"),
        step_id: r.get("step_id"),
        data: r.get("data"),
        at: r.get("at"),
    }
}

/// The run if it belongs to `tenant` (`None` for another tenant's run).
pub async fn get_run(conn: &mut Conn, tenant: &str, id: &str) -> Result<Option<RunRow>, DbError> {
    let row = sqlx::query("SELECT * FROM runs WHERE id = ? AND tenant_id = ?")
        .bind(id)
        .bind(tenant)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(run))
}

/// The run whatever its tenant: for the engine, never for the API.
pub async fn get_run_unscoped(conn: &mut Conn, id: &str) -> Result<Option<RunRow>, DbError> {
    let row = sqlx::query("SELECT * FROM runs WHERE id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(run))
}

/// Runs of a tenant, newest first, before `cursor` (a run id).
pub async fn list_runs(
    conn: &mut Conn,
    tenant: &str,
    workflow: Option<&str>,
    status: Option<&str>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<RunRow>, DbError> {
    let rows = sqlx::query(
        "SELECT * FROM runs WHERE tenant_id = ?1
           AND (?2 IS NULL OR workflow_key = ?2)
           AND (?3 IS NULL OR status = ?3)
           AND (?4 IS NULL OR id < ?4)
         ORDER BY id DESC LIMIT ?5",
    )
    .bind(tenant)
    .bind(workflow)
    .bind(status)
    .bind(cursor)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.iter().map(run).collect())
}

pub async fn steps_of(conn: &mut Conn, run_id: &str) -> Result<Vec<StepRow>, DbError> {
    let rows = sqlx::query("SELECT * FROM steps WHERE run_id = ? ORDER BY position")
        .bind(run_id)
        .fetch_all(conn)
        .await?;
    Ok(rows.iter().map(step).collect())
}

/// Claims up to `limit` steps that are due, or whose lease expired (their
/// host died mid-attempt), for `host` until `lease_until`; each claim
/// counts as a new attempt.
///
/// Fair across tenants: due steps are taken round-robin by tenant (the
/// first due step of every tenant, then the second, …), and no tenant gets
/// more than `tenant_cap` steps running at once; the rest stay queued.
pub async fn claim(
    conn: &mut Conn,
    host: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
    tenant_cap: i64,
) -> Result<Vec<StepRow>, DbError> {
    let rows = sqlx::query(
        "WITH running AS (
             SELECT r.tenant_id, COUNT(*) AS c FROM steps s CROSS JOIN runs r ON r.id = s.run_id
             WHERE s.status = 'running' GROUP BY r.tenant_id),
         due AS (
             SELECT s.run_id, s.step_id, s.due_at AS t, r.tenant_id,
                    ROW_NUMBER() OVER (PARTITION BY r.tenant_id ORDER BY s.due_at) AS n
             FROM steps s CROSS JOIN runs r ON r.id = s.run_id
             WHERE s.status = 'ready' AND s.due_at <= ?3),
         picked AS (
             SELECT run_id, step_id, 0 AS n, lease_expires_at AS t FROM steps
             WHERE status = 'running' AND lease_expires_at < ?3
             UNION ALL
             SELECT due.run_id, due.step_id, due.n, due.t FROM due LEFT JOIN running USING (tenant_id)
             WHERE due.n + COALESCE(running.c, 0) <= ?5)
         UPDATE steps SET status = 'running', lease_owner = ?1, lease_expires_at = ?2,
                attempts = attempts + 1, started_at = COALESCE(started_at, ?3)
         WHERE (run_id, step_id) IN (SELECT run_id, step_id FROM picked ORDER BY n, t LIMIT ?4)
         RETURNING *",
    )
    .bind(host)
    .bind(lease_until)
    .bind(now)
    .bind(limit)
    .bind(tenant_cap)
    .fetch_all(conn)
    .await?;
    Ok(rows.iter().map(step).collect())
}

/// Extends a lease this host holds; false if the step is no longer ours.
pub async fn renew_lease(
    conn: &mut Conn,
    run_id: &str,
    step_id: &str,
    host: &str,
    until: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE steps SET lease_expires_at = ? WHERE run_id = ? AND step_id = ? AND lease_owner = ? AND status = 'running'",
    )
    .bind(until)
    .bind(run_id)
    .bind(step_id)
    .bind(host)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The earliest time the scheduler has work: a ready step becoming due or
/// a running step's lease expiring (its host may have died), if any.
pub async fn next_wakeup(conn: &mut Conn) -> Result<Option<i64>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT MIN(t) FROM (
             SELECT MIN(due_at) AS t FROM steps WHERE status = 'ready'
             UNION ALL
             SELECT MIN(lease_expires_at) FROM steps WHERE status = 'running')",
    )
    .fetch_one(conn)
    .await?)
}

/// Unfinished runs past their deadline.
pub async fn overdue_runs(conn: &mut Conn, now: i64) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM runs WHERE status IN ('pending', 'running', 'paused') AND deadline_at IS NOT NULL AND deadline_at < ?",
    )
    .bind(now)
    .fetch_all(conn)
    .await?)
}

pub async fn attempts_of(conn: &mut Conn, run_id: &str) -> Result<Vec<AttemptRow>, DbError> {
    let rows = sqlx::query("SELECT * FROM attempts WHERE run_id = ? ORDER BY step_id, attempt")
        .bind(run_id)
        .fetch_all(conn)
        .await?;
    Ok(rows.iter().map(attempt).collect())
}

pub async fn append_event(
    conn: &mut Conn,
    tenant: &str,
    run_id: &str,
    kind: &str,
    step_id: Option<&str>,
    data: &serde_json::Value,
    at: i64,
) -> Result<i64, DbError> {
    let id = sqlx::query_scalar(
        "INSERT INTO events (tenant_id, run_id, type, step_id, data, at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(tenant)
    .bind(run_id)
    .bind(kind)
    .bind(step_id)
    .bind(data.to_string())
    .bind(at)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// Events of a run after event id `after`, oldest first.
pub async fn events_after(
    conn: &mut Conn,
    run_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<EventRow>, DbError> {
    let rows = sqlx::query("SELECT * FROM events WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?")
        .bind(run_id)
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    Ok(rows.iter().map(event).collect())
}

/// Runs per status, for metrics.
pub async fn run_counts(conn: &mut Conn) -> Result<Vec<(String, i64)>, DbError> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
        .fetch_all(conn)
        .await?;
    Ok(rows.iter().map(|r| (r.get("status"), r.get("n"))).collect())
}

/// Steps ready to run now, for metrics.
pub async fn queue_depth(conn: &mut Conn, now: i64) -> Result<i64, DbError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM steps WHERE status = 'ready' AND due_at <= ?")
            .bind(now)
            .fetch_one(conn)
            .await?,
    )
}

/// Steps of a tenant running now (on any host).
pub async fn running_for_tenant(conn: &mut Conn, tenant: &str) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        // CROSS JOIN keeps SQLite on the small partial index of running steps
        // instead of walking every run of the tenant.
        "SELECT COUNT(*) FROM steps s CROSS JOIN runs r ON r.id = s.run_id WHERE s.status = 'running' AND r.tenant_id = ?",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await?)
}

/// An unfinished run of a workflow that counts against its concurrency
/// limit (not queued), oldest first, and how many there are.
pub async fn active_of_workflow(
    conn: &mut Conn,
    tenant: &str,
    workflow: &str,
) -> Result<(i64, Option<String>), DbError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(id) AS oldest FROM runs
         WHERE tenant_id = ? AND workflow_key = ? AND status IN ('pending', 'running', 'paused') AND queued = 0",
    )
    .bind(tenant)
    .bind(workflow)
    .fetch_one(conn)
    .await?;
    Ok((row.get("n"), row.get("oldest")))
}

/// The oldest queued run of a workflow.
pub async fn oldest_queued(
    conn: &mut Conn,
    tenant: &str,
    workflow: &str,
) -> Result<Option<RunRow>, DbError> {
    let row = sqlx::query(
        "SELECT * FROM runs
         WHERE tenant_id = ? AND workflow_key = ? AND status = 'pending' AND queued = 1
         ORDER BY created_at, id LIMIT 1",
    )
    .bind(tenant)
    .bind(workflow)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(run))
}

/// The most recently created run of a workflow: (id, created_at).
pub async fn latest_of_workflow(
    conn: &mut Conn,
    tenant: &str,
    workflow: &str,
) -> Result<Option<(String, i64)>, DbError> {
    let row = sqlx::query(
        "SELECT id, created_at FROM runs WHERE tenant_id = ? AND workflow_key = ?
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(tenant)
    .bind(workflow)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.get("id"), r.get("created_at"))))
}

/// Rows per multi-row statement: well under SQLite's bound-variable limit.
const ROWS_PER_STATEMENT: usize = 200;

/// Statements gathered into one multi-statement query: SQLite runs them in
/// order in a single round trip to the connection's thread, each binding
/// its own arguments in turn. Multi-row statements hold at most
/// [`ROWS_PER_STATEMENT`] rows.
pub struct Writes<'a> {
    query: sqlx::QueryBuilder<'a, sqlx::Sqlite>,
    statements: usize,
}

impl Default for Writes<'_> {
    fn default() -> Self {
        Self {
            query: sqlx::QueryBuilder::new(""),
            statements: 0,
        }
    }
}

impl<'a> Writes<'a> {
    fn statement(&mut self, sql: &str) -> &mut sqlx::QueryBuilder<'a, sqlx::Sqlite> {
        if self.statements > 0 {
            self.query.push(";\n");
        }
        self.statements += 1;
        self.query.push(sql)
    }

    /// A new run.
    pub fn insert_run(&mut self, r: &'a RunRow) -> &mut Self {
        let query = self.statement(
            "INSERT INTO runs (id, tenant_id, workflow_key, workflow_version, status, input, result, error, created_at, started_at, ended_at, deadline_at, queued, schedule_id) ",
        );
        query.push_values([r], |mut row, r| {
            row.push_bind(&r.id)
                .push_bind(&r.tenant_id)
                .push_bind(&r.workflow_key)
                .push_bind(&r.workflow_version)
                .push_bind(&r.status)
                .push_bind(&r.input)
                .push_bind(&r.result)
                .push_bind(&r.error)
                .push_bind(r.created_at)
                .push_bind(r.started_at)
                .push_bind(r.ended_at)
                .push_bind(r.deadline_at)
                .push_bind(i64::from(r.queued))
                .push_bind(&r.schedule_id);
        });
        self
    }

    /// New steps are inserted, existing ones get every mutable column.
    pub fn upsert_steps(&mut self, steps: &[&'a StepRow]) -> &mut Self {
        for chunk in steps.chunks(ROWS_PER_STATEMENT) {
            self.statement(
                "INSERT INTO steps (run_id, step_id, position, kind, status, attempts, due_at, lease_owner, lease_expires_at, output, error, started_at, ended_at) ",
            )
            .push_values(chunk, |mut row, s| {
                row.push_bind(&s.run_id)
                    .push_bind(&s.step_id)
                    .push_bind(s.position)
                    .push_bind(&s.kind)
                    .push_bind(&s.status)
                    .push_bind(s.attempts)
                    .push_bind(s.due_at)
                    .push_bind(&s.lease_owner)
                    .push_bind(s.lease_expires_at)
                    .push_bind(&s.output)
                    .push_bind(&s.error)
                    .push_bind(s.started_at)
                    .push_bind(s.ended_at);
            })
            .push(
                " ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
                   due_at = excluded.due_at, lease_owner = excluded.lease_owner, lease_expires_at = excluded.lease_expires_at,
                   output = excluded.output, error = excluded.error, started_at = excluded.started_at, ended_at = excluded.ended_at",
            );
        }
        self
    }

    /// Inserts (or replaces) attempt rows. A started attempt after the first
    /// marks an earlier attempt a dead host left `running` as interrupted.
    pub fn insert_attempts(&mut self, attempts: &'a [AttemptRow]) -> &mut Self {
        for a in attempts
            .iter()
            .filter(|a| a.attempt > 1 && a.status == "running")
        {
            let query = self.statement("UPDATE attempts SET status = 'interrupted', ended_at = ");
            query.push_bind(a.started_at);
            query.push(" WHERE run_id = ");
            query.push_bind(&a.run_id);
            query.push(" AND step_id = ");
            query.push_bind(&a.step_id);
            query.push(" AND status = 'running'");
        }
        for chunk in attempts.chunks(ROWS_PER_STATEMENT) {
            self.statement(
                "INSERT OR REPLACE INTO attempts (run_id, step_id, attempt, status, host, started_at, ended_at, error_kind, error, logs, input) ",
            )
            .push_values(chunk, |mut row, a| {
                row.push_bind(&a.run_id)
                    .push_bind(&a.step_id)
                    .push_bind(a.attempt)
                    .push_bind(&a.status)
                    .push_bind(&a.host)
                    .push_bind(a.started_at)
                    .push_bind(a.ended_at)
                    .push_bind(&a.error_kind)
                    .push_bind(&a.error)
                    .push_bind(&a.logs)
                    .push_bind(&a.input);
            });
        }
        self
    }

    /// Every mutable column of a run.
    pub fn update_run(&mut self, r: &'a RunRow) -> &mut Self {
        let query = self.statement("UPDATE runs SET status = ");
        query.push_bind(&r.status);
        query.push(", result = ");
        query.push_bind(&r.result);
        query.push(", error = ");
        query.push_bind(&r.error);
        query.push(", started_at = ");
        query.push_bind(r.started_at);
        query.push(", ended_at = ");
        query.push_bind(r.ended_at);
        query.push(", deadline_at = ");
        query.push_bind(r.deadline_at);
        query.push(", queued = ");
        query.push_bind(i64::from(r.queued));
        query.push(" WHERE id = ");
        query.push_bind(&r.id);
        self
    }

    /// Events of any runs, appended in order.
    pub fn append_events(&mut self, events: &[RunEvent<'a>], at: i64) -> &mut Self {
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            self.statement("INSERT INTO events (tenant_id, run_id, type, step_id, data, at) ")
                .push_values(chunk, |mut row, (tenant, run_id, (kind, step_id, data))| {
                    row.push_bind(*tenant)
                        .push_bind(*run_id)
                        .push_bind(*kind)
                        .push_bind(*step_id)
                        .push_bind(data.to_string())
                        .push_bind(at);
                });
        }
        self
    }

    /// `BEGIN IMMEDIATE`, for a transaction managed by hand (the first
    /// statement gathered, or sent alone).
    pub fn begin(&mut self) -> &mut Self {
        self.statement("BEGIN IMMEDIATE");
        self
    }

    /// Ends the gathered statements with `COMMIT`, for a transaction begun
    /// by hand ([`Self::begin`], [`begin_and_read_runs`]).
    pub fn commit(&mut self) -> &mut Self {
        self.statement("COMMIT");
        self
    }

    /// Runs every gathered statement in one round trip.
    pub async fn execute(&mut self, conn: &mut Conn) -> Result<(), DbError> {
        if self.statements > 0 {
            // Its text varies with the row counts: kept out of the
            // connection's statement cache, which holds the fixed queries.
            self.query.build().persistent(false).execute(conn).await?;
        }
        Ok(())
    }
}

/// An event to append: type, step, data.
pub type NewEvent<'a> = (&'a str, Option<&'a str>, &'a serde_json::Value);

/// An event of some run: tenant, run id, the event.
pub type RunEvent<'a> = (&'a str, &'a str, NewEvent<'a>);

/// A run and its steps (in position order) in one round trip.
pub async fn run_with_steps(
    conn: &mut Conn,
    id: &str,
) -> Result<Option<(RunRow, Vec<StepRow>)>, DbError> {
    Ok(read_runs(conn, &[id], "").await?.pop())
}

/// Runs by id in one round trip (runs that do not exist are left out).
pub async fn runs_by_ids(conn: &mut Conn, ids: &[&str]) -> Result<Vec<RunRow>, DbError> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT * FROM runs WHERE id IN (");
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        query.push(")");
        let rows = query
            .build()
            .persistent(false)
            .fetch_all(&mut *conn)
            .await?;
        found.extend(rows.iter().map(run));
    }
    Ok(found)
}

/// `BEGIN IMMEDIATE` and a read of runs with their steps (in position
/// order; runs that do not exist are left out), in one round trip: what
/// recording a batch of attempts starts with. The caller ends the
/// transaction (`Writes::commit`, or [`rollback`](super::rollback) on any
/// error, this one included).
pub async fn begin_and_read_runs(
    conn: &mut Conn,
    ids: &[&str],
) -> Result<Vec<(RunRow, Vec<StepRow>)>, DbError> {
    read_runs(conn, ids, "BEGIN IMMEDIATE;\n").await
}

async fn read_runs(
    conn: &mut Conn,
    ids: &[&str],
    mut prefix: &str,
) -> Result<Vec<(RunRow, Vec<StepRow>)>, DbError> {
    let mut found: Vec<(RunRow, Vec<StepRow>)> = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(std::mem::take(&mut prefix));
        query.push(
            "SELECT r.id, r.tenant_id, r.workflow_key, r.workflow_version, r.status, r.input, r.result,
                    r.error, r.created_at, r.started_at, r.ended_at, r.deadline_at, r.queued, r.schedule_id,
                    s.run_id, s.step_id, s.position, s.kind, s.status, s.attempts, s.due_at, s.lease_owner,
                    s.lease_expires_at, s.output, s.error, s.started_at, s.ended_at
             FROM runs r LEFT JOIN steps s ON s.run_id = r.id
             WHERE r.id IN (",
        );
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        query.push(") ORDER BY r.id, s.position");
        let rows = query
            .build()
            .persistent(false)
            .fetch_all(&mut *conn)
            .await?;
        for r in &rows {
            let id: String = r.get(0);
            if found.last().is_none_or(|(run, _)| run.id != id) {
                found.push((
                    RunRow {
                        id,
                        tenant_id: r.get(1),
                        workflow_key: r.get(2),
                        workflow_version: r.get(3),
                        status: r.get(4),
                        input: r.get(5),
                        result: r.get(6),
                        error: r.get(7),
                        created_at: r.get(8),
                        started_at: r.get(9),
                        ended_at: r.get(10),
                        deadline_at: r.get(11),
                        queued: r.get::<i64, _>(12) != 0,
                        schedule_id: r.get(13),
                    },
                    Vec::new(),
                ));
            }
            if r.get::<Option<String>, _>(14).is_some() {
                let (_, steps) = found.last_mut().expect("pushed above");
                steps.push(StepRow {
                    run_id: r.get(14),
                    step_id: r.get(15),
                    position: r.get(16),
                    kind: r.get(17),
                    status: r.get(18),
                    attempts: r.get(19),
                    due_at: r.get(20),
                    lease_owner: r.get(21),
                    lease_expires_at: r.get(22),
                    output: r.get(23),
                    error: r.get(24),
                    started_at: r.get(25),
                    ended_at: r.get(26),
                });
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, Synchronous, auth};

    async fn status(db: &Db, id: &str) -> String {
        let mut conn = db.reader().await.expect("reader");
        get_run_unscoped(&mut conn, id)
            .await
            .expect("read")
            .expect("run")
            .status
    }

    /// The recorder's hand-managed transaction: begun with its read, ended
    /// by the writes' `COMMIT`, or rolled back, after which the connection
    /// begins again cleanly.
    #[tokio::test]
    async fn a_hand_begun_transaction_commits_with_its_writes_or_rolls_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(
            &format!("sqlite://{}/weft.db", dir.path().display()),
            Synchronous::Normal,
        )
        .await
        .expect("open");
        let mut conn = db.writer().await.expect("writer");
        auth::insert_tenant(
            &mut conn,
            &auth::Tenant {
                id: "t1".into(),
                name: "t1".into(),
                created_at: 0,
            },
        )
        .await
        .expect("tenant");
        let mut run = RunRow {
            id: "r1".into(),
            tenant_id: "t1".into(),
            workflow_key: "w".into(),
            workflow_version: "0.1.0".into(),
            status: "pending".into(),
            input: "{}".into(),
            result: None,
            error: None,
            created_at: 0,
            started_at: None,
            ended_at: None,
            deadline_at: None,
            queued: false,
            schedule_id: None,
        };
        Writes::default()
            .insert_run(&run)
            .execute(&mut conn)
            .await
            .expect("insert");

        let read = begin_and_read_runs(&mut conn, &["r1", "missing"])
            .await
            .expect("begin and read");
        assert_eq!(read.len(), 1, "a missing run is left out");
        run.status = "running".into();
        Writes::default()
            .update_run(&run)
            .commit()
            .execute(&mut conn)
            .await
            .expect("write and commit");
        assert_eq!(status(&db, "r1").await, "running");

        begin_and_read_runs(&mut conn, &["r1"])
            .await
            .expect("again");
        run.status = "failed".into();
        Writes::default()
            .update_run(&run)
            .execute(&mut conn)
            .await
            .expect("write");
        crate::db::rollback(&mut conn).await.expect("rollback");
        assert_eq!(status(&db, "r1").await, "running", "rolled back");
        crate::db::rollback(&mut conn)
            .await
            .expect("a rollback without a transaction is harmless");
        begin_and_read_runs(&mut conn, &["r1"])
            .await
            .expect("the connection begins cleanly after a rollback");
        crate::db::rollback(&mut conn).await.expect("rollback");
    }
}
