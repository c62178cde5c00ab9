//! Runs, their steps and attempts, and the append-only event log.

use std::sync::LazyLock;

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::sql::{self, Arg, Statement};
pub use super::status::{AttemptStatus, RunStatus, StepStatus};
use super::{Backend, Conn, DbError};

#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub tenant_id: String,
    pub workflow_key: String,
    pub workflow_version: String,
    pub status: RunStatus,
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
    /// The run span's W3C `traceparent`, when traces are exported: the
    /// parent of every attempt's span, on whichever host runs it.
    pub traceparent: Option<String>,
    /// The caller's span (hex), parent of the run span; `None` for a root.
    pub trace_parent_span_id: Option<String>,
    /// What the run is about: a JSON object of names to string values.
    pub labels: Option<String>,
    /// The run this one re-runs from one of its steps.
    pub rerun_of: Option<String>,
    /// When an operator paused the run: its ready steps are `held`, and
    /// no new step starts until it is unpaused.
    pub held_at: Option<i64>,
    /// The workflow's `concurrency.key` as rendered for this run.
    pub concurrency_key: Option<String>,
    /// 1 to 3: within a tenant, due steps of a higher priority are claimed
    /// first.
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub run_id: String,
    pub step_id: String,
    pub position: i64,
    pub kind: String,
    pub status: StepStatus,
    pub attempts: i64,
    pub due_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
}

impl RunRow {
    /// A new pending run, created at `created_at`.
    pub fn pending(
        id: String,
        tenant_id: &str,
        workflow_key: &str,
        workflow_version: String,
        input: String,
        created_at: i64,
    ) -> Self {
        Self {
            id,
            tenant_id: tenant_id.to_owned(),
            workflow_key: workflow_key.to_owned(),
            workflow_version,
            status: RunStatus::Pending,
            input,
            result: None,
            error: None,
            created_at,
            started_at: None,
            ended_at: None,
            deadline_at: None,
            queued: false,
            schedule_id: None,
            traceparent: None,
            trace_parent_span_id: None,
            labels: None,
            rerun_of: None,
            held_at: None,
            concurrency_key: None,
            priority: 1,
        }
    }

    /// The run's labels, name to value (empty without any).
    pub fn label_map(&self) -> serde_json::Map<String, serde_json::Value> {
        self.labels
            .as_deref()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default()
    }
}

impl StepRow {
    /// A step not yet attempted, with no lease, output or error.
    pub fn new(
        run_id: &str,
        step_id: String,
        position: i64,
        kind: &str,
        status: StepStatus,
    ) -> Self {
        Self {
            run_id: run_id.to_owned(),
            step_id,
            position,
            kind: kind.to_owned(),
            status,
            attempts: 0,
            due_at: None,
            lease_owner: None,
            lease_expires_at: None,
            output: None,
            error: None,
            started_at: None,
            ended_at: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub run_id: String,
    pub step_id: String,
    pub attempt: i64,
    pub status: AttemptStatus,
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

fn run(r: &AnyRow) -> Result<RunRow, DbError> {
    Ok(RunRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        workflow_key: r.try_get("workflow_key")?,
        workflow_version: r.try_get("workflow_version")?,
        status: RunStatus::parse(&r.try_get::<String, _>("status")?)?,
        input: r.try_get("input")?,
        result: r.try_get("result")?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        deadline_at: r.try_get("deadline_at")?,
        queued: r.try_get::<i64, _>("queued")? != 0,
        schedule_id: r.try_get("schedule_id")?,
        traceparent: r.try_get("traceparent")?,
        trace_parent_span_id: r.try_get("trace_parent_span_id")?,
        labels: r.try_get("labels")?,
        rerun_of: r.try_get("rerun_of")?,
        held_at: r.try_get("held_at")?,
        concurrency_key: r.try_get("concurrency_key")?,
        priority: r.try_get("priority")?,
    })
}

fn step(r: &AnyRow) -> Result<StepRow, DbError> {
    Ok(StepRow {
        run_id: r.try_get("run_id")?,
        step_id: r.try_get("step_id")?,
        position: r.try_get("position")?,
        kind: r.try_get("kind")?,
        status: StepStatus::parse(&r.try_get::<String, _>("status")?)?,
        attempts: r.try_get("attempts")?,
        due_at: r.try_get("due_at")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_expires_at: r.try_get("lease_expires_at")?,
        output: r.try_get("output")?,
        error: r.try_get("error")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
    })
}

fn attempt(r: &AnyRow) -> Result<AttemptRow, DbError> {
    Ok(AttemptRow {
        run_id: r.try_get("run_id")?,
        step_id: r.try_get("step_id")?,
        attempt: r.try_get("attempt")?,
        status: AttemptStatus::parse(&r.try_get::<String, _>("status")?)?,
        host: r.try_get("host")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        error_kind: r.try_get("error_kind")?,
        error: r.try_get("error")?,
        logs: r.try_get("logs")?,
        input: r.try_get("input")?,
    })
}

fn event(r: &AnyRow) -> Result<EventRow, DbError> {
    Ok(EventRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        run_id: r.try_get("run_id")?,
        kind: r.try_get("type")?,
        step_id: r.try_get("step_id")?,
        data: r.try_get("data")?,
        at: r.try_get("at")?,
    })
}

/// The run if it belongs to `tenant` (`None` for another tenant's run).
pub async fn get_run(conn: &mut Conn, tenant: &str, id: &str) -> Result<Option<RunRow>, DbError> {
    let row = sqlx::query("SELECT * FROM runs WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(run).transpose()
}

/// The run whatever its tenant: for the engine, never for the API.
pub async fn get_run_unscoped(conn: &mut Conn, id: &str) -> Result<Option<RunRow>, DbError> {
    let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(run).transpose()
}

/// The run (of `tenant`, if given), locked for this transaction: every
/// transaction that changes a run, or appends to its events, takes the
/// run's row lock first. On Postgres that orders one run's writes (and its
/// event ids) across hosts; SQLite's single writer already does.
pub async fn locked_run(
    conn: &mut Conn,
    tenant: Option<&str>,
    id: &str,
) -> Result<Option<RunRow>, DbError> {
    let sql = match Backend::of(conn) {
        Backend::Sqlite => "SELECT * FROM runs WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)",
        Backend::Postgres => {
            "SELECT * FROM runs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2) FOR UPDATE"
        }
    };
    let row = sqlx::query(sql)
        .bind(id)
        .bind(tenant)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(run).transpose()
}

/// What a list of runs is filtered by.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunFilter<'a> {
    pub workflow: Option<&'a str>,
    pub status: Option<RunStatus>,
    /// `(name, value)` pairs the run must all carry.
    pub labels: &'a [(String, String)],
    /// Runs that ended at or after this time (ms).
    pub ended_since: Option<i64>,
}

/// Runs of a tenant, newest first, before `cursor` (a run id). With
/// labels, one label's rows in `run_labels` (in run id order, from its
/// primary key) drive the read and each other label is one probe of that
/// key, so a page costs the same on a million runs. On SQLite the driving
/// label is the rarest (each counted up to [`LABEL_COUNT_CAP`]).
pub async fn list_runs(
    conn: &mut Conn,
    tenant: &str,
    filter: RunFilter<'_>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Vec<RunRow>, DbError> {
    // SQLite drives by the first label: make it the rarest (Postgres's
    // planner picks by itself).
    let mut ordered;
    let mut filter = filter;
    if filter.labels.len() > 1 && Backend::of(conn) == Backend::Sqlite {
        let counts = label_counts(conn, tenant, filter.labels).await?;
        ordered = filter.labels.to_vec();
        ordered.sort_by_key(|(name, value)| {
            counts
                .iter()
                .find(|(n, v, _)| n == name && v == value)
                .map_or(0, |(_, _, c)| *c)
        });
        filter.labels = &ordered;
    }
    let rows = list_runs_query("", tenant, filter, cursor, limit)
        .fetch_all(conn)
        .await?;
    rows.iter().map(run).collect()
}

/// How many runs carry each label, counted up to [`LABEL_COUNT_CAP`] (a
/// few index entries each: enough to tell a rare label from a broad one).
async fn label_counts<'l>(
    conn: &mut Conn,
    tenant: &str,
    labels: &'l [(String, String)],
) -> Result<Vec<(&'l str, &'l str, i64)>, DbError> {
    let mut query = Statement::new("");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            query.push(" UNION ALL ");
        }
        query
            .push(&format!(
                "SELECT {i}, count(*) FROM (SELECT 1 FROM run_labels WHERE tenant_id = "
            ))
            .bind(tenant)
            .push(" AND name = ")
            .bind(name.as_str())
            .push(" AND value = ")
            .bind(value.as_str())
            .push(&format!(" LIMIT {LABEL_COUNT_CAP})"));
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter()
        .map(|r| {
            let i: i64 = r.try_get(0)?;
            let (name, value) = &labels[usize::try_from(i).unwrap_or(0)];
            Ok((name.as_str(), value.as_str(), r.try_get(1)?))
        })
        .collect()
}

/// Most runs a label is counted up to when choosing the label to drive by.
const LABEL_COUNT_CAP: i64 = 1000;

/// [`list_runs`]'s statement after `prefix` (`EXPLAIN …` in tests).
pub(crate) fn list_runs_query<'q>(
    prefix: &str,
    tenant: &'q str,
    filter: RunFilter<'q>,
    cursor: Option<&'q str>,
    limit: i64,
) -> Statement<'q> {
    let mut query = Statement::new(prefix);
    let id = match filter.labels.split_first() {
        None => {
            query
                .push("SELECT r.* FROM runs r WHERE r.tenant_id = ")
                .bind(tenant);
            "r.id"
        }
        Some(((name, value), rest)) => {
            query
                .push("SELECT r.* FROM run_labels l JOIN runs r ON r.id = l.run_id WHERE l.tenant_id = ")
                .bind(tenant)
                .push(" AND l.name = ")
                .bind(name.as_str())
                .push(" AND l.value = ")
                .bind(value.as_str());
            for (name, value) in rest {
                query
                    .push(" AND EXISTS (SELECT 1 FROM run_labels m WHERE m.tenant_id = ")
                    .bind(tenant)
                    .push(" AND m.name = ")
                    .bind(name.as_str())
                    .push(" AND m.value = ")
                    .bind(value.as_str())
                    .push(" AND m.run_id = l.run_id)");
            }
            "l.run_id"
        }
    };
    if let Some(workflow) = filter.workflow {
        query.push(" AND r.workflow_key = ").bind(workflow);
    }
    if let Some(status) = filter.status {
        query.push(" AND r.status = ").bind(status.as_str());
    }
    if let Some(since) = filter.ended_since {
        query.push(" AND r.ended_at >= ").bind(since);
    }
    if let Some(cursor) = cursor {
        query.push(&format!(" AND {id} < ")).bind(cursor);
    }
    query
        .push(&format!(" ORDER BY {id} DESC LIMIT "))
        .bind(limit)
        .push(" + 0");
    query
}

/// The paused steps of `tenant`'s runs `ids` (at most a page), as
/// `(run id, step id)` in step order.
pub async fn paused_steps(
    conn: &mut Conn,
    tenant: &str,
    ids: &[&str],
) -> Result<Vec<(String, String)>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = Statement::new(
        "SELECT s.run_id, s.step_id FROM steps s JOIN runs r ON r.id = s.run_id WHERE r.tenant_id = ",
    );
    query
        .bind(tenant)
        .push(" AND s.status = 'paused' AND s.run_id IN ")
        .tuple(ids.iter().map(|id| Arg::from(*id)))
        .push(" ORDER BY s.run_id, s.position");
    let rows = query.fetch_all(conn).await?;
    rows.iter()
        .map(|r| Ok::<_, DbError>((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

pub async fn steps_of(conn: &mut Conn, run_id: &str) -> Result<Vec<StepRow>, DbError> {
    let rows = sqlx::query("SELECT * FROM steps WHERE run_id = $1 ORDER BY position")
        .bind(run_id)
        .fetch_all(conn)
        .await?;
    rows.iter().map(step).collect()
}

/// The claim on SQLite, in time that does not grow with the queue: the
/// tenants with ready steps are found by skipping through an index
/// (`steps_ready_by_tenant`, one probe per tenant), and of each priority
/// of each only the `limit` earliest due steps are ranked: `cut`
/// (materialized, so it is probed once per tenant and priority) finds the
/// `limit`-th in index order, and the range read stops there (a blob sorts
/// after any text: with no cut, the bound is the due time alone). The
/// `limit` first in priority order are among those. The range is the one
/// row-value comparison on the index's columns after the tenant and rank:
/// another bound on `due_at` beside it would make SQLite range on `due_at`
/// alone and read the whole queue. Running steps are counted per tenant
/// from the small partial index of running steps. The outer limit is
/// `$4 + 0`, not `$4`: with a bare parameter there, SQLite 3.51 (not 3.46)
/// prepares the whole statement again on every run after a rebind, as
/// every claim does (400 µs against 23 µs on an empty database).
const CLAIM_SQLITE: &str = "WITH RECURSIVE
     tenants(t) AS (
         SELECT (SELECT min(tenant_id) FROM steps WHERE status = 'ready')
         UNION ALL
         SELECT (SELECT min(tenant_id) FROM steps WHERE status = 'ready' AND tenant_id > tenants.t)
         FROM tenants WHERE tenants.t IS NOT NULL),
     ranks(rank) AS (VALUES (0), (1), (2)),
     running AS (
         SELECT tenant_id, COUNT(*) AS c FROM steps WHERE status = 'running' GROUP BY tenant_id),
     cut AS MATERIALIZED (
         SELECT t, rank,
                (SELECT x.due_at FROM steps x
                 WHERE x.status = 'ready' AND x.tenant_id = tenants.t AND x.priority_rank = ranks.rank
                   AND x.due_at <= $3
                 ORDER BY x.due_at, x.run_id, x.step_id LIMIT 1 OFFSET $4 - 1) AS due_at,
                (SELECT x.run_id FROM steps x
                 WHERE x.status = 'ready' AND x.tenant_id = tenants.t AND x.priority_rank = ranks.rank
                   AND x.due_at <= $3
                 ORDER BY x.due_at, x.run_id, x.step_id LIMIT 1 OFFSET $4 - 1) AS run_id,
                (SELECT x.step_id FROM steps x
                 WHERE x.status = 'ready' AND x.tenant_id = tenants.t AND x.priority_rank = ranks.rank
                   AND x.due_at <= $3
                 ORDER BY x.due_at, x.run_id, x.step_id LIMIT 1 OFFSET $4 - 1) AS step_id
         FROM tenants CROSS JOIN ranks WHERE t IS NOT NULL),
     due AS (
         SELECT s.run_id, s.step_id, s.due_at AS t, s.tenant_id,
                ROW_NUMBER() OVER (PARTITION BY s.tenant_id
                                   ORDER BY s.priority_rank, s.due_at, s.run_id, s.step_id) AS n
         FROM cut CROSS JOIN steps s
         WHERE s.status = 'ready' AND s.tenant_id = cut.t AND s.priority_rank = cut.rank
           AND (s.due_at, s.run_id, s.step_id)
               <= (IFNULL(cut.due_at, $3), IFNULL(cut.run_id, x'ff'), IFNULL(cut.step_id, x'ff'))),
     picked AS (
         SELECT run_id, step_id, 0 AS n, lease_expires_at AS t FROM steps
         WHERE $6 AND status = 'running' AND lease_expires_at < $3
         UNION ALL
         SELECT due.run_id, due.step_id, due.n, due.t FROM due LEFT JOIN running USING (tenant_id)
         WHERE due.n + COALESCE(running.c, 0) <= $5)
     UPDATE steps SET status = 'running', lease_owner = $1, lease_expires_at = $2,
            attempts = attempts + 1, started_at = COALESCE(started_at, $3)
     WHERE (run_id, step_id) IN (SELECT run_id, step_id FROM picked ORDER BY n, t LIMIT $4 + 0)
     RETURNING *";

/// The tenants with a ready step on Postgres, in tenant order, skipping
/// through `steps_ready_by_tenant` (one probe per tenant, however many
/// steps are queued): a CTE for the claim and [`DUE_TENANTS_POSTGRES`].
const READY_TENANTS_POSTGRES: &str = "every_tenant(t) AS (
         (SELECT tenant_id FROM steps WHERE status = 'ready' AND tenant_id IS NOT NULL
          ORDER BY tenant_id LIMIT 1)
         UNION ALL
         SELECT (SELECT s.tenant_id FROM steps s WHERE s.status = 'ready' AND s.tenant_id > every_tenant.t
                 ORDER BY s.tenant_id LIMIT 1)
         FROM every_tenant WHERE every_tenant.t IS NOT NULL)";

/// The claim on Postgres, in time that does not grow with the queue, as on
/// SQLite: of each tenant (those given with this host's share of their
/// cap, or every tenant with a ready step) and each priority, only the
/// `limit` earliest due steps are read from `steps_ready_by_tenant` and
/// ranked. The picked steps and their runs are locked `FOR UPDATE SKIP
/// LOCKED`, so hosts claiming at once never take the same step, a run
/// another transaction is changing is left for later (never waited for: a
/// claim cannot deadlock), and each row is checked again once locked.
/// Where the tenant cap applies, each tenant's steps are claimed within
/// this host's share of the cap ([`super::slots`]), counting the steps this
/// host has running; the caller holds the host's gate for those tenants,
/// so no other claim of this host counts at the same time.
static CLAIM_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH RECURSIVE {READY_TENANTS_POSTGRES},
     tenants(t, cap) AS (
         SELECT key COLLATE \"C\", value::int8 FROM json_each_text($7::json) WHERE $7::text IS NOT NULL
         UNION ALL
         SELECT t, $5 FROM every_tenant WHERE t IS NOT NULL AND $7::text IS NULL),
     due AS (
         SELECT c.run_id, c.step_id, c.due_at AS t, c.tenant_id, tenants.cap,
                ROW_NUMBER() OVER (PARTITION BY c.tenant_id
                                   ORDER BY c.priority_rank, c.due_at, c.run_id, c.step_id) AS n
         FROM tenants CROSS JOIN (VALUES (0), (1), (2)) AS ranks(rank) CROSS JOIN LATERAL (
             SELECT s.run_id, s.step_id, s.due_at, s.tenant_id, s.priority_rank FROM steps s
             WHERE s.status = 'ready' AND s.tenant_id = tenants.t AND s.priority_rank = ranks.rank
               AND s.due_at <= $3
             ORDER BY s.due_at, s.run_id, s.step_id LIMIT $4) c),
     running AS (
         SELECT s.tenant_id, COUNT(*) AS c FROM tenants JOIN steps s
           ON s.status = 'running' AND s.tenant_id = tenants.t
          AND ($7::text IS NULL OR s.lease_owner = $1)
         GROUP BY s.tenant_id),
     picked AS (
         SELECT run_id, step_id, 0 AS n, lease_expires_at AS t FROM steps
         WHERE $6 AND status = 'running' AND lease_expires_at < $3
         UNION ALL
         SELECT due.run_id, due.step_id, due.n, due.t FROM due LEFT JOIN running USING (tenant_id)
         WHERE due.n + COALESCE(running.c, 0) <= due.cap),
     locked AS (
         SELECT s.run_id, s.step_id FROM steps s
         JOIN (SELECT run_id, step_id, n, t FROM picked ORDER BY n, t LIMIT $4) p
           ON p.run_id = s.run_id AND p.step_id = s.step_id
         JOIN runs r ON r.id = s.run_id
         WHERE (s.status = 'ready' AND s.due_at <= $3) OR (s.status = 'running' AND s.lease_expires_at < $3)
         FOR UPDATE OF s, r SKIP LOCKED)
     UPDATE steps SET status = 'running', lease_owner = $1, lease_expires_at = $2,
            attempts = steps.attempts + 1, started_at = COALESCE(steps.started_at, $3)
     FROM locked WHERE steps.run_id = locked.run_id AND steps.step_id = locked.step_id
     RETURNING steps.*"
    )
});

/// Claims up to `limit` steps that are due, or, with `expired_leases`,
/// whose lease expired (their host died mid-attempt), for `host` until
/// `lease_until`; each claim counts as a new attempt.
///
/// The caller asks for expired leases only when [`next_lease_expiry`] says
/// there is one: on Postgres, every step that ran leaves an entry in the
/// index of leases until vacuum removes it, and the lowest expiry times
/// are those of steps long finished, so reading expired leases walks them
/// all.
///
/// Fair across tenants: due steps are taken round-robin by tenant (the
/// first due step of every tenant, then the second, …), and no tenant gets
/// more than `tenant_cap` steps running at once; the rest stay queued.
///
/// On Postgres, `tenants` (a JSON object of tenant ids to this host's share
/// of their cap, from [`super::slots::share`]) limits the due steps to
/// those tenants, each within its share less the steps this host has
/// running; `None` takes every tenant within `tenant_cap`, counting every
/// host's running steps (the engine passes `None` only when no cap is
/// enforced).
#[allow(clippy::too_many_arguments, reason = "one claim's parameters")]
pub async fn claim(
    conn: &mut Conn,
    host: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
    tenant_cap: i64,
    tenants: Option<&str>,
    expired_leases: bool,
) -> Result<Vec<StepRow>, DbError> {
    let rows = match Backend::of(conn) {
        Backend::Sqlite => sqlx::query(CLAIM_SQLITE),
        Backend::Postgres => sqlx::query(CLAIM_POSTGRES.as_str()),
    }
    .bind(host)
    .bind(lease_until)
    .bind(now)
    .bind(limit)
    .bind(tenant_cap)
    .bind(expired_leases);
    let rows = match Backend::of(conn) {
        Backend::Sqlite => rows,
        Backend::Postgres => rows.bind(tenants),
    }
    .fetch_all(conn)
    .await?;
    rows.iter().map(step).collect()
}

/// The tenants with a step due by `$1`, in tenant order: of each ready
/// tenant, the earliest due time of each priority (one probe each).
pub(super) static DUE_TENANTS_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH RECURSIVE {READY_TENANTS_POSTGRES},
         first_due(t, due_at) AS (
             SELECT every_tenant.t,
                    (SELECT MIN(s.due_at) FROM steps s
                     WHERE s.status = 'ready' AND s.tenant_id = every_tenant.t
                       AND s.priority_rank = ranks.rank)
             FROM every_tenant, (VALUES (0), (1), (2)) AS ranks(rank)
             WHERE every_tenant.t IS NOT NULL)
         SELECT DISTINCT t FROM first_due WHERE due_at <= $1 ORDER BY t"
    )
});

/// Extends a lease this host holds; false if the step is no longer ours.
pub async fn renew_lease(
    conn: &mut Conn,
    run_id: &str,
    step_id: &str,
    host: &str,
    until: i64,
) -> Result<bool, DbError> {
    let done = sqlx::query(
        "UPDATE steps SET lease_expires_at = $1 WHERE run_id = $2 AND step_id = $3 AND lease_owner = $4 AND status = 'running'",
    )
    .bind(until)
    .bind(run_id)
    .bind(step_id)
    .bind(host)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The earliest time a ready step is due, if any.
pub async fn next_due(conn: &mut Conn) -> Result<Option<i64>, DbError> {
    let sql = match Backend::of(conn) {
        Backend::Sqlite => "SELECT MIN(due_at) FROM steps WHERE status = 'ready'",
        // `priority_rank >= 0` selects the index `steps_next_due` (see its
        // migration).
        Backend::Postgres => {
            "SELECT MIN(due_at) FROM steps WHERE status = 'ready' AND priority_rank >= 0"
        }
    };
    Ok(sqlx::query_scalar(sql).fetch_one(conn).await?)
}

/// The earliest time a running step's lease expires (its host may have
/// died), if any. On Postgres this walks the index entries of every step
/// that ran since the table was last vacuumed (their expiry times are the
/// lowest), so the scheduler asks now and then, not at every wake-up.
pub async fn next_lease_expiry(conn: &mut Conn) -> Result<Option<i64>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT MIN(lease_expires_at) FROM steps WHERE status = 'running'")
            .fetch_one(conn)
            .await?,
    )
}

/// Unfinished runs past their deadline.
pub async fn overdue_runs(conn: &mut Conn, now: i64) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM runs WHERE status IN ('pending', 'running', 'paused') AND deadline_at IS NOT NULL AND deadline_at < $1",
    )
    .bind(now)
    .fetch_all(conn)
    .await?)
}

/// Deletes up to `limit` finished runs that ended before `ended_before`,
/// oldest first, with their steps, attempts and events, in one round trip
/// after the read of their ids. Returns how many runs it deleted.
pub async fn delete_finished_runs(
    conn: &mut Conn,
    ended_before: i64,
    limit: i64,
) -> Result<usize, DbError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM runs WHERE ended_at IS NOT NULL AND ended_at < $1
           AND status IN ('completed', 'failed', 'cancelled', 'terminated', 'declined')
         ORDER BY ended_at LIMIT $2 + 0",
    )
    .bind(ended_before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut statements = Vec::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        for sql in [
            "DELETE FROM events WHERE run_id IN ",
            "DELETE FROM tasks WHERE run_id IN ",
            "DELETE FROM task_rounds WHERE run_id IN ",
            "DELETE FROM run_labels WHERE run_id IN ",
            "DELETE FROM items WHERE run_id IN ",
            "DELETE FROM attempts WHERE run_id IN ",
            "DELETE FROM steps WHERE run_id IN ",
            "DELETE FROM runs WHERE id IN ",
        ] {
            let mut statement = Statement::new(sql);
            statement.tuple(chunk.iter().map(Arg::from));
            statements.push(statement);
        }
    }
    sql::execute_all(conn, &statements).await?;
    Ok(ids.len())
}

/// How many runs of `tenant` wait to start.
pub async fn count_pending(conn: &mut Conn, tenant: &str) -> Result<i64, DbError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE tenant_id = $1 AND status = 'pending'")
            .bind(tenant)
            .fetch_one(conn)
            .await?,
    )
}

/// A run's attempts, by step and attempt number; without their logs and
/// rendered input (the bulk of a long run's rows) unless `full`.
pub async fn attempts_of(
    conn: &mut Conn,
    run_id: &str,
    full: bool,
) -> Result<Vec<AttemptRow>, DbError> {
    let sql = if full {
        "SELECT * FROM attempts WHERE run_id = $1 ORDER BY step_id, attempt"
    } else {
        "SELECT run_id, step_id, attempt, status, host, started_at, ended_at, error_kind, error,
                CAST(NULL AS TEXT) AS logs, CAST(NULL AS TEXT) AS input
         FROM attempts WHERE run_id = $1 ORDER BY step_id, attempt"
    };
    let rows = sqlx::query(sql).bind(run_id).fetch_all(conn).await?;
    rows.iter().map(attempt).collect()
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
    // On Postgres the run's row lock is taken in the same statement, before
    // the event's id is drawn (one run's events in commit order).
    let sql = match Backend::of(conn) {
        Backend::Sqlite => {
            "INSERT INTO events (tenant_id, run_id, type, step_id, data, at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"
        }
        Backend::Postgres => {
            "INSERT INTO events (tenant_id, run_id, type, step_id, data, at)
             SELECT $1::text, r.id, $3::text, $4::text, $5::text, $6::bigint
             FROM (SELECT id FROM runs WHERE id = $2 FOR UPDATE) r RETURNING id"
        }
    };
    let id = sqlx::query_scalar(sql)
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
    let rows =
        sqlx::query("SELECT * FROM events WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3 + 0")
            .bind(run_id)
            .bind(after)
            .bind(limit)
            .fetch_all(conn)
            .await?;
    rows.iter().map(event).collect()
}

/// Runs per status, for metrics.
pub async fn run_counts(conn: &mut Conn) -> Result<Vec<(String, i64)>, DbError> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|r| Ok::<_, DbError>((r.try_get("status")?, r.try_get("n")?)))
        .collect()
}

/// Steps ready to run now, for metrics (`priority_rank >= 0`: through
/// `steps_next_due` on Postgres).
pub async fn queue_depth(conn: &mut Conn, now: i64) -> Result<i64, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM steps WHERE status = 'ready' AND priority_rank >= 0 AND due_at <= $1",
    )
    .bind(now)
    .fetch_one(conn)
    .await?)
}

/// SQLite: the tenant's running steps (one host runs them all).
pub async fn count_running(conn: &mut Conn, tenant: &str) -> Result<i64, DbError> {
    Ok(
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM steps WHERE status = 'running' AND tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(conn)
        .await?,
    )
}

/// A workflow's unfinished runs that count against its concurrency limit
/// (not queued ones), with `key` those with that concurrency key only:
/// (how many, the oldest's id).
pub async fn active_of_workflow(
    conn: &mut Conn,
    tenant: &str,
    workflow: &str,
    key: Option<&str>,
) -> Result<(i64, Option<String>), DbError> {
    let row = sqlx::query(match key {
        None => {
            "SELECT COUNT(*) AS n, MIN(id) AS oldest FROM runs
             WHERE tenant_id = $1 AND workflow_key = $2 AND status IN ('pending', 'running', 'paused') AND queued = 0"
        }
        Some(_) => {
            "SELECT COUNT(*) AS n, MIN(id) AS oldest FROM runs
             WHERE tenant_id = $1 AND workflow_key = $2 AND concurrency_key = $3
               AND status IN ('pending', 'running', 'paused') AND queued = 0"
        }
    })
    .bind(tenant)
    .bind(workflow)
    .bind(key)
    .fetch_one(conn)
    .await?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}

/// The ids of a workflow's unfinished runs with concurrency key `key`
/// (queued ones too), oldest first.
pub async fn unfinished_with_key(
    conn: &mut Conn,
    tenant: &str,
    workflow: &str,
    key: &str,
) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM runs
         WHERE tenant_id = $1 AND workflow_key = $2 AND concurrency_key = $3
           AND status IN ('pending', 'running', 'paused')
         ORDER BY id",
    )
    .bind(tenant)
    .bind(workflow)
    .bind(key)
    .fetch_all(conn)
    .await?)
}

/// The run locked for this transaction, unless another holds its lock
/// (Postgres; `None` then). SQLite's one writer never waits.
pub async fn try_lock_run(conn: &mut Conn, id: &str) -> Result<Option<RunRow>, DbError> {
    let sql = match Backend::of(conn) {
        Backend::Sqlite => "SELECT * FROM runs WHERE id = $1",
        Backend::Postgres => "SELECT * FROM runs WHERE id = $1 FOR UPDATE SKIP LOCKED",
    };
    let row = sqlx::query(sql).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(run).transpose()
}

/// The oldest queued run of a workflow with concurrency key `key` (`None`:
/// runs without one).
pub async fn oldest_queued(
    conn: &mut Conn,
    tenant: &str,
    workflow: &str,
    key: Option<&str>,
) -> Result<Option<RunRow>, DbError> {
    // Locked: a queued run being cancelled meanwhile is skipped (its
    // canceller releases the next one itself).
    let sql = format!(
        "SELECT * FROM runs
         WHERE tenant_id = $1 AND workflow_key = $2 AND status = 'pending' AND queued = 1
           AND concurrency_key {} $3
         ORDER BY created_at, id LIMIT 1{}",
        match Backend::of(conn) {
            Backend::Sqlite => "IS",
            Backend::Postgres => "IS NOT DISTINCT FROM",
        },
        match Backend::of(conn) {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(workflow)
        .bind(key)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(run).transpose()
}

/// The most recently created run of a workflow: (id, created_at).
pub async fn latest_of_workflow(
    conn: &mut Conn,
    tenant: &str,
    workflow: &str,
) -> Result<Option<(String, i64)>, DbError> {
    let row = sqlx::query(
        "SELECT id, created_at FROM runs WHERE tenant_id = $1 AND workflow_key = $2
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(tenant)
    .bind(workflow)
    .fetch_optional(conn)
    .await?;
    row.map(|r| Ok::<_, DbError>((r.try_get("id")?, r.try_get("created_at")?)))
        .transpose()
}

/// Rows per multi-row statement: well under SQLite's bound-variable limit.
const ROWS_PER_STATEMENT: usize = 200;

/// Statements gathered to run together ([`sql::execute_all`]): on SQLite
/// one multi-statement query, a single round trip to the connection's
/// thread. Multi-row statements hold at most [`ROWS_PER_STATEMENT`] rows.
///
/// On SQLite, every run whose row or steps they write gets its `version`
/// raised by one, once per [`Self::execute`].
#[derive(Default)]
pub struct Writes<'a> {
    statements: Vec<Statement<'a>>,
    /// Begins a transaction by hand before the statements.
    begin: bool,
    /// Ends them with `COMMIT`.
    commit: bool,
    /// Runs written, whose versions are raised.
    touched: Vec<&'a str>,
}

impl<'a> Writes<'a> {
    fn statement(&mut self, sql: &str) -> &mut Statement<'a> {
        self.statements.push(Statement::new(sql));
        self.statements.last_mut().expect("pushed")
    }

    /// The `Idempotency-Key` of the start that creates run `run_id`, stored
    /// with it: a second start with the key fails this (a unique violation),
    /// which rolls its run back. Put it first, before the run's rows.
    pub fn claim_idempotency(
        &mut self,
        tenant: &'a str,
        key: &'a str,
        route: &'a str,
        request_hash: &'a str,
        run_id: &'a str,
        at: i64,
    ) -> &mut Self {
        self.statement(
            "INSERT INTO idempotency (tenant_id, key, route, request_hash, status, response, created_at, run_id) VALUES ",
        )
        .tuple([
            Arg::from(tenant),
            Arg::from(key),
            Arg::from(route),
            Arg::from(request_hash),
            Arg::from(202),
            Arg::from(""),
            Arg::from(at),
            Arg::from(run_id),
        ]);
        self
    }

    /// A new run.
    pub fn insert_run(&mut self, r: &'a RunRow) -> &mut Self {
        self.statement(
            "INSERT INTO runs (id, tenant_id, workflow_key, workflow_version, status, input, result, error, created_at, started_at, ended_at, deadline_at, queued, schedule_id, traceparent, trace_parent_span_id, labels, rerun_of, concurrency_key, priority) ",
        )
        .values([r], |r| {
            [
                Arg::from(&r.id),
                Arg::from(&r.tenant_id),
                Arg::from(&r.workflow_key),
                Arg::from(&r.workflow_version),
                Arg::from(r.status.as_str()),
                Arg::from(&r.input),
                Arg::from(&r.result),
                Arg::from(&r.error),
                Arg::from(r.created_at),
                Arg::from(r.started_at),
                Arg::from(r.ended_at),
                Arg::from(r.deadline_at),
                Arg::from(i64::from(r.queued)),
                Arg::from(&r.schedule_id),
                Arg::from(&r.traceparent),
                Arg::from(&r.trace_parent_span_id),
                Arg::from(&r.labels),
                Arg::from(&r.rerun_of),
                Arg::from(&r.concurrency_key),
                Arg::from(r.priority),
            ]
        });
        let labels = r.label_map();
        if !labels.is_empty() {
            self.statement("INSERT INTO run_labels (tenant_id, name, value, run_id) ")
                .values(labels, |(name, value)| {
                    [
                        Arg::from(&r.tenant_id),
                        Arg::Owned(Some(name)),
                        Arg::Owned(Some(value.as_str().unwrap_or_default().to_owned())),
                        Arg::from(&r.id),
                    ]
                });
        }
        self
    }

    /// Raises the versions of these runs, whose rows changed otherwise.
    pub fn touch(&mut self, run_ids: impl IntoIterator<Item = &'a str>) -> &mut Self {
        self.touched.extend(run_ids);
        self
    }

    /// Items of `for_each` steps: every mutable column.
    pub fn upsert_items(&mut self, rows: &'a [super::items::ItemRow]) -> &mut Self {
        self.statements.extend(super::items::upserts(rows));
        self
    }

    /// New steps are inserted, existing ones get every mutable column; each
    /// with its run (whose tenant and priority the claim reads the step by).
    pub fn upsert_steps(&mut self, steps: &[(&'a RunRow, &'a StepRow)]) -> &mut Self {
        self.touched
            .extend(steps.iter().map(|(_, s)| s.run_id.as_str()));
        for chunk in steps.chunks(ROWS_PER_STATEMENT) {
            self.statement(
                "INSERT INTO steps (run_id, step_id, position, kind, status, attempts, due_at, lease_owner, lease_expires_at, output, error, started_at, ended_at, tenant_id, priority_rank) ",
            )
            .values(chunk, |&(run, s)| {
                debug_assert_eq!(run.id, s.run_id, "a step written with another run");
                [
                    Arg::from(&s.run_id),
                    Arg::from(&s.step_id),
                    Arg::from(s.position),
                    Arg::from(&s.kind),
                    Arg::from(s.status.as_str()),
                    Arg::from(s.attempts),
                    Arg::from(s.due_at),
                    Arg::from(&s.lease_owner),
                    Arg::from(s.lease_expires_at),
                    Arg::from(&s.output),
                    Arg::from(&s.error),
                    Arg::from(s.started_at),
                    Arg::from(s.ended_at),
                    Arg::from(&run.tenant_id),
                    Arg::from(3 - run.priority),
                ]
            })
            .push(
                " ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
                   due_at = excluded.due_at, lease_owner = excluded.lease_owner, lease_expires_at = excluded.lease_expires_at,
                   output = excluded.output, error = excluded.error, started_at = excluded.started_at, ended_at = excluded.ended_at,
                   tenant_id = excluded.tenant_id, priority_rank = excluded.priority_rank",
            );
        }
        self
    }

    /// Inserts (or replaces) attempt rows. A started attempt after the first
    /// marks an earlier attempt a dead host left `running` as interrupted.
    pub fn insert_attempts(&mut self, attempts: &'a [AttemptRow]) -> &mut Self {
        for a in attempts
            .iter()
            .filter(|a| a.attempt > 1 && a.status == AttemptStatus::Running)
        {
            self.statement("UPDATE attempts SET status = 'interrupted', ended_at = ")
                .bind(a.started_at)
                .push(" WHERE run_id = ")
                .bind(&a.run_id)
                .push(" AND step_id = ")
                .bind(&a.step_id)
                .push(" AND status = 'running'");
        }
        for chunk in attempts.chunks(ROWS_PER_STATEMENT) {
            self.statement(
                "INSERT INTO attempts (run_id, step_id, attempt, status, host, started_at, ended_at, error_kind, error, logs, input) ",
            )
            .values(chunk, |a| {
                [
                    Arg::from(&a.run_id),
                    Arg::from(&a.step_id),
                    Arg::from(a.attempt),
                    Arg::from(a.status.as_str()),
                    Arg::from(&a.host),
                    Arg::from(a.started_at),
                    Arg::from(a.ended_at),
                    Arg::from(&a.error_kind),
                    Arg::from(&a.error),
                    Arg::from(&a.logs),
                    Arg::from(&a.input),
                ]
            })
            .push(
                " ON CONFLICT (run_id, step_id, attempt) DO UPDATE SET status = excluded.status, host = excluded.host,
                   started_at = excluded.started_at, ended_at = excluded.ended_at, error_kind = excluded.error_kind,
                   error = excluded.error, logs = excluded.logs, input = excluded.input",
            );
        }
        self
    }

    /// Every mutable column of a run.
    pub fn update_run(&mut self, r: &'a RunRow) -> &mut Self {
        self.touched.push(&r.id);
        self.statement("UPDATE runs SET status = ")
            .bind(r.status.as_str())
            .push(", result = ")
            .bind(&r.result)
            .push(", error = ")
            .bind(&r.error)
            .push(", started_at = ")
            .bind(r.started_at)
            .push(", ended_at = ")
            .bind(r.ended_at)
            .push(", deadline_at = ")
            .bind(r.deadline_at)
            .push(", queued = ")
            .bind(i64::from(r.queued))
            .push(", held_at = ")
            .bind(r.held_at)
            .push(" WHERE id = ")
            .bind(&r.id);
        self
    }

    /// Events of any runs, appended in order.
    pub fn append_events(&mut self, events: &[RunEvent<'a>], at: i64) -> &mut Self {
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            self.statement("INSERT INTO events (tenant_id, run_id, type, step_id, data, at) ")
                .values(chunk, |(tenant, run_id, (kind, step_id, data))| {
                    [
                        Arg::from(*tenant),
                        Arg::from(*run_id),
                        Arg::from(*kind),
                        Arg::from(*step_id),
                        Arg::Owned(Some(data.to_string())),
                        Arg::from(at),
                    ]
                });
        }
        self
    }

    /// Appends progress reports as `step.progress` events, each at the time
    /// it was reported, in the order given; a report of a run that is gone
    /// (deleted while its attempt still ran) is left out.
    pub fn append_progress(&mut self, reports: &'a [ProgressEvent]) -> &mut Self {
        for chunk in reports.chunks(ROWS_PER_STATEMENT) {
            // Numbered, so that the filter cannot change their order.
            self.statement(
                "INSERT INTO events (tenant_id, run_id, type, step_id, data, at)
                 SELECT column2, column3, 'step.progress', column4, column5, column6 FROM (",
            )
            .values(chunk.iter().enumerate(), |(i, report)| {
                [
                    Arg::from(i as i64),
                    Arg::from(report.tenant.as_str()),
                    Arg::from(report.run_id.as_str()),
                    Arg::from(report.step_id.as_str()),
                    Arg::from(report.data.as_str()),
                    Arg::from(report.at),
                ]
            })
            .push(") AS reports WHERE column3 IN (SELECT id FROM runs) ORDER BY column1");
        }
        self
    }

    /// Fails the transaction unless each of `runs` is still at its version
    /// (SQLite, where versions are kept): writes worked out from a run's
    /// state held in memory then go in only if nothing changed the run
    /// since. Put it before any write, right after the `BEGIN`
    /// ([`Self::begin`]). It fails by giving `json()` text that is not JSON
    /// (a plain statement has no `RAISE`): [`is_version_moved`] tells that
    /// error from others.
    pub fn expect_versions(&mut self, runs: &'a [(String, i64)]) -> &mut Self {
        for chunk in runs.chunks(ROWS_PER_STATEMENT) {
            self.statement("SELECT json(CASE (SELECT count(*) FROM runs WHERE id IN ")
                .tuple(chunk.iter().map(|(id, _)| Arg::from(id.as_str())))
                .push(" AND (id, version) IN (")
                .values(chunk, |(id, version)| {
                    [Arg::from(id.as_str()), Arg::from(*version)]
                })
                .push(")) WHEN ")
                .bind(chunk.len() as i64)
                .push(" THEN '0' ELSE 'a run changed since it was read' END)");
        }
        self
    }

    /// Begins a transaction by hand before the gathered statements, in the
    /// same round trip.
    pub fn begin(&mut self) -> &mut Self {
        self.begin = true;
        self
    }

    /// Ends the gathered statements with `COMMIT`, for a transaction begun
    /// by hand ([`Self::begin`], [`begin_and_read_runs`]).
    pub fn commit(&mut self) -> &mut Self {
        self.commit = true;
        self
    }

    /// Runs every gathered statement.
    pub async fn execute(&mut self, conn: &mut Conn) -> Result<(), DbError> {
        if std::mem::take(&mut self.begin) {
            let begin = match Backend::of(conn) {
                Backend::Sqlite => "BEGIN IMMEDIATE",
                Backend::Postgres => super::PG_BEGIN,
            };
            self.statements.insert(0, Statement::new(begin));
        }
        let mut touched = std::mem::take(&mut self.touched);
        if Backend::of(conn) != Backend::Sqlite {
            // Versions are kept on SQLite only (see `run_versions`).
            touched.clear();
        }
        touched.sort_unstable();
        touched.dedup();
        for chunk in touched.chunks(ROWS_PER_STATEMENT) {
            self.statement("UPDATE runs SET version = version + 1 WHERE id IN ")
                .tuple(chunk.iter().map(|id| Arg::from(*id)));
        }
        if std::mem::take(&mut self.commit) {
            self.statement("COMMIT");
        }
        sql::execute_all(conn, &self.statements).await
    }
}

/// An event to append: type, step, data.
pub type NewEvent<'a> = (&'a str, Option<&'a str>, &'a serde_json::Value);

/// An event of some run: tenant, run id, the event.
pub type RunEvent<'a> = (&'a str, &'a str, NewEvent<'a>);

/// A progress report of a running attempt, as its `step.progress` event.
#[derive(Debug)]
pub struct ProgressEvent {
    pub tenant: String,
    pub run_id: String,
    pub step_id: String,
    /// The event's data, as JSON text.
    pub data: String,
    /// When it was reported.
    pub at: i64,
}

/// A run and its steps (in position order) in one round trip.
pub async fn run_with_steps(
    conn: &mut Conn,
    id: &str,
) -> Result<Option<(RunRow, Vec<StepRow>)>, DbError> {
    let (mut found, _, _) = read_runs(conn, &[id], &[], None).await?;
    Ok(found.pop().map(|r| (r.run, r.steps)))
}

/// Runs by id in one round trip (runs that do not exist are left out).
pub async fn runs_by_ids(conn: &mut Conn, ids: &[&str]) -> Result<Vec<RunRow>, DbError> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let rows = Statement::new("SELECT * FROM runs WHERE id IN ")
            .tuple(chunk.iter().map(|id| Arg::from(*id)))
            .fetch_all(&mut *conn)
            .await?;
        for r in &rows {
            found.push(run(r)?);
        }
    }
    Ok(found)
}

/// A run as read, with its steps and version (SQLite; 0 on Postgres).
#[derive(Debug)]
pub struct ReadRun {
    pub run: RunRow,
    pub steps: Vec<StepRow>,
    pub version: i64,
}

/// Whether `error` is the failure of [`Writes::expect_versions`]: a run
/// moved from the version held (or is gone).
pub fn is_version_moved(error: &(impl std::fmt::Display + ?Sized)) -> bool {
    error.to_string().contains("malformed JSON")
}

/// What [`begin_and_read_runs`] found.
#[derive(Debug)]
pub struct BatchRead<'a> {
    /// The runs read, with their steps.
    pub runs: Vec<ReadRun>,
    /// The known runs whose version did not move.
    pub current: Vec<&'a str>,
    /// Of the runs asked to be tried (`try_lock`), those the transaction
    /// holds: on Postgres, those no other transaction held and that exist;
    /// on SQLite, all of them (the writer's lock covers every run).
    pub tried: Vec<String>,
}

/// Begins a write transaction by hand and reads runs with their steps (in
/// position order; runs that do not exist are left out), each run locked
/// for the transaction first (`ids` sorted: two transactions locking runs
/// in one order never deadlock): what recording a batch of attempts starts
/// with. Runs the caller already holds as of a version (`known`, SQLite
/// only) are read only if their version moved. In one round trip (two
/// when a known run moved).
///
/// Runs `try_lock` are locked after those, but only where no other
/// transaction holds them (Postgres, `SKIP LOCKED`: it never waits, so it
/// cannot deadlock), and not read: runs the transaction appends events to
/// without changing them. The caller ends the transaction
/// (`Writes::commit`, or [`rollback`](super::rollback) on any error, this
/// one included).
pub async fn begin_and_read_runs<'a>(
    conn: &mut Conn,
    ids: &[&str],
    known: &[(&'a str, i64)],
    try_lock: &[&str],
) -> Result<BatchRead<'a>, DbError> {
    let known_ids: Vec<&str> = known.iter().map(|(id, _)| *id).collect();
    let mut locked: Vec<&str> = ids.iter().chain(&known_ids).copied().collect();
    locked.sort_unstable();
    locked.dedup();
    let mut to_try: Vec<&str> = try_lock
        .iter()
        .copied()
        .filter(|id| locked.binary_search(id).is_err())
        .collect();
    to_try.sort_unstable();
    to_try.dedup();
    let lock = Locks {
        wait: &locked,
        skip_locked: &to_try,
    };
    let (mut found, versions, tried) = read_runs(conn, ids, &known_ids, Some(lock)).await?;
    let mut current = Vec::new();
    let mut moved = Vec::new();
    for (id, version) in known {
        if versions.iter().any(|(v_id, v)| v_id == id && v == version) {
            current.push(*id);
        } else {
            moved.push(*id);
        }
    }
    if !moved.is_empty() {
        let (more, _, _) = read_runs(conn, &moved, &[], None).await?;
        found.extend(more);
    }
    Ok(BatchRead {
        runs: found,
        current,
        tried,
    })
}

/// The runs a transaction begun by [`read_runs`] locks (Postgres), sorted.
struct Locks<'q> {
    /// Waiting for another transaction that holds one.
    wait: &'q [&'q str],
    /// Passing over those another transaction holds.
    skip_locked: &'q [&'q str],
}

/// Reads runs `ids` with their steps, and the versions of runs `versions`
/// (SQLite), in one round trip; with `begin`, begins the transaction first
/// and takes its locks (Postgres; each kind in one statement). Returns the
/// runs, the versions and the runs locked of `begin.skip_locked` (on
/// SQLite, all of them).
async fn read_runs<'q>(
    conn: &mut Conn,
    ids: &'q [&'q str],
    versions: &'q [&'q str],
    mut begin: Option<Locks<'q>>,
) -> Result<(Vec<ReadRun>, Vec<(String, i64)>, Vec<String>), DbError> {
    let backend = Backend::of(conn);
    let mut found: Vec<ReadRun> = Vec::with_capacity(ids.len());
    let mut current: Vec<(String, i64)> = Vec::with_capacity(versions.len());
    let mut tried: Vec<String> = match (&begin, backend) {
        (Some(locks), Backend::Sqlite) => locks
            .skip_locked
            .iter()
            .map(|id| (*id).to_owned())
            .collect(),
        _ => Vec::new(),
    };
    let rounds = ids
        .len()
        .max(versions.len())
        .div_ceil(ROWS_PER_STATEMENT)
        .max(1);
    for round in 0..rounds {
        let part = |all: &'q [&'q str]| {
            let start = (round * ROWS_PER_STATEMENT).min(all.len());
            &all[start..(start + ROWS_PER_STATEMENT).min(all.len())]
        };
        let (chunk, known) = (part(ids), part(versions));
        let locks = begin.take();
        let mut query = Statement::new(match (&locks, backend) {
            (None, _) => "",
            (Some(_), Backend::Sqlite) => "BEGIN IMMEDIATE;\n",
            (Some(_), Backend::Postgres) => "BEGIN ISOLATION LEVEL READ COMMITTED;\n",
        });
        // Postgres: the runs are locked (in id order) by a statement of
        // their own, so the read after it takes its snapshot once the locks
        // are held and sees what their previous holders committed. (One
        // statement that locks as it reads would, in READ COMMITTED, get a
        // locked run's new row but its steps as they were when it began.)
        let (wait, skip_locked) = match (locks, backend) {
            (Some(locks), Backend::Postgres) => (locks.wait, locks.skip_locked),
            _ => (&[][..], &[][..]),
        };
        let locking = !wait.is_empty();
        if locking {
            query
                .push("SELECT count(*) FROM (SELECT id FROM runs WHERE id IN ")
                .tuple(wait.iter().map(|id| Arg::from(*id)))
                .push(" ORDER BY id FOR UPDATE) locked;\n");
        }
        // Then, holding those, the others where free: one row (the id) for
        // each run locked.
        if !skip_locked.is_empty() {
            query
                .push("SELECT id FROM runs WHERE id IN ")
                .tuple(skip_locked.iter().map(|id| Arg::from(*id)))
                .push(" ORDER BY id FOR UPDATE SKIP LOCKED;\n");
        }
        if !known.is_empty() {
            query
                .push("SELECT id, version FROM runs WHERE id IN ")
                .tuple(known.iter().map(|id| Arg::from(*id)))
                .push(";\n");
        }
        if !chunk.is_empty() {
            query
                .push(
                    "SELECT r.id, r.tenant_id, r.workflow_key, r.workflow_version, r.status, r.input, r.result,
                    r.error, r.created_at, r.started_at, r.ended_at, r.deadline_at, r.queued, r.schedule_id,
                    r.traceparent, r.trace_parent_span_id, r.labels, r.rerun_of, r.held_at, r.concurrency_key,
                    r.priority, s.run_id, s.step_id, s.position, s.kind, s.status, s.attempts, s.due_at, s.lease_owner,
                    s.lease_expires_at, s.output, s.error, s.started_at, s.ended_at, ",
                )
                // Postgres: each run's steps through the primary key, one
                // run at a time (`OFFSET 0` keeps the planner from turning
                // it back into a join). As a plain join, the planner picks
                // a hash join over a scan of every step whenever its
                // statistics are stale, as they are on a table that grew
                // since autovacuum last analysed it: the same batch read
                // then took 7-20 ms instead of about 1.
                .push(match backend {
                    Backend::Sqlite => "r.version FROM runs r LEFT JOIN steps s ON s.run_id = r.id",
                    Backend::Postgres => {
                        "CAST(0 AS BIGINT) AS version FROM runs r LEFT JOIN LATERAL
                         (SELECT * FROM steps WHERE steps.run_id = r.id OFFSET 0) s ON true"
                    }
                })
                .push(" WHERE r.id IN ")
                .tuple(chunk.iter().map(|id| Arg::from(*id)))
                .push(" ORDER BY r.id, s.position");
        }
        let rows = query.fetch_all(&mut *conn).await?;
        // The locking statement's one row (its count) comes first, then
        // the runs locked where free (one column), the versions (two), and
        // the runs' rows.
        for r in &rows[usize::from(locking).min(rows.len())..] {
            if r.len() == 1 {
                tried.push(r.try_get(0)?);
                continue;
            }
            if r.len() == 2 {
                current.push((r.try_get(0)?, r.try_get(1)?));
                continue;
            }
            let id: String = r.try_get(0)?;
            if found.last().is_none_or(|read| read.run.id != id) {
                found.push(ReadRun {
                    run: RunRow {
                        id,
                        tenant_id: r.try_get(1)?,
                        workflow_key: r.try_get(2)?,
                        workflow_version: r.try_get(3)?,
                        status: RunStatus::parse(&r.try_get::<String, _>(4)?)?,
                        input: r.try_get(5)?,
                        result: r.try_get(6)?,
                        error: r.try_get(7)?,
                        created_at: r.try_get(8)?,
                        started_at: r.try_get(9)?,
                        ended_at: r.try_get(10)?,
                        deadline_at: r.try_get(11)?,
                        queued: r.try_get::<i64, _>(12)? != 0,
                        schedule_id: r.try_get(13)?,
                        traceparent: r.try_get(14)?,
                        trace_parent_span_id: r.try_get(15)?,
                        labels: r.try_get(16)?,
                        rerun_of: r.try_get(17)?,
                        held_at: r.try_get(18)?,
                        concurrency_key: r.try_get(19)?,
                        priority: r.try_get(20)?,
                    },
                    steps: Vec::new(),
                    version: r.try_get(34)?,
                });
            }
            if r.try_get::<Option<String>, _>(21)?.is_some() {
                let read = found.last_mut().expect("pushed above");
                read.steps.push(StepRow {
                    run_id: r.try_get(21)?,
                    step_id: r.try_get(22)?,
                    position: r.try_get(23)?,
                    kind: r.try_get(24)?,
                    status: StepStatus::parse(&r.try_get::<String, _>(25)?)?,
                    attempts: r.try_get(26)?,
                    due_at: r.try_get(27)?,
                    lease_owner: r.try_get(28)?,
                    lease_expires_at: r.try_get(29)?,
                    output: r.try_get(30)?,
                    error: r.try_get(31)?,
                    started_at: r.try_get(32)?,
                    ended_at: r.try_get(33)?,
                });
            }
        }
    }
    Ok((found, current, tried))
}
