//! The store's suite, run against every backend: SQLite in a temporary
//! file, and Postgres in a fresh database when a server answers at
//! `WEFT_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`).
//! Without one the Postgres half is skipped with a notice, unless
//! `WEFT_REQUIRE_POSTGRES` is set (CI), where it fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection as _};

use super::runs::{self, RunRow, RunStatus, StepRow, StepStatus, Writes};
use super::{Db, Options, auth, plugins, schedules, slots, state, webhooks, workflows};

/// Each backend, opened fresh (the temporary directory lives as long as
/// the returned handle).
async fn backends() -> Vec<(&'static str, Db, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Db::open(
        &format!("sqlite://{}/weft.db", dir.path().display()),
        Options::default(),
    )
    .await
    .expect("open sqlite");
    let mut out = vec![("sqlite", sqlite, dir)];
    if let Some(url) = fresh_postgres().await {
        let db = Db::open(&url, Options::default())
            .await
            .expect("open postgres");
        out.push(("postgres", db, tempfile::tempdir().expect("tempdir")));
    }
    out
}

async fn fresh_postgres() -> Option<String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let server = std::env::var("WEFT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let mut admin = match sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("WEFT_REQUIRE_POSTGRES").is_none(),
                "WEFT_REQUIRE_POSTGRES is set but Postgres at {server} does not answer: {e}"
            );
            eprintln!("NOTICE: no Postgres at {server} ({e}); the store suite runs on SQLite only");
            return None;
        }
    };
    // Databases earlier runs left behind (not this process's, and not those
    // in use: DROP refuses them).
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let mut stale = Vec::new();
    if !SWEPT.is_completed() {
        SWEPT.call_once(|| {});
        stale = sqlx::query_scalar::<_, String>(
            "SELECT datname FROM pg_database WHERE datname LIKE 'weft\\_s\\_%'",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap_or_default();
    }
    let ours = format!("weft_s_{}_", std::process::id());
    for name in stale.iter().filter(|n| !n.starts_with(&ours)) {
        let _ = sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
            .execute(&mut admin)
            .await;
    }
    let name = format!(
        "weft_s_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .expect("drop");
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create");
    Some(format!("{server}/{name}"))
}

async fn tenant(db: &Db, id: &str) {
    let mut conn = db.writer().await.expect("writer");
    auth::insert_tenant(
        &mut conn,
        &auth::Tenant {
            id: id.into(),
            name: id.into(),
            created_at: 0,
        },
    )
    .await
    .expect("tenant");
}

fn run_row(id: &str, tenant: &str) -> RunRow {
    RunRow::pending(id.into(), tenant, "w", "0.1.0".into(), "{}".into(), 0)
}

fn ready_step(run: &str, id: &str, position: i64, due_at: i64) -> StepRow {
    let mut step = StepRow::new(run, id.into(), position, "plugin", StepStatus::Ready);
    step.due_at = Some(due_at);
    step
}

/// A run with `n` ready steps, due at 0.
async fn run_with_ready_steps(db: &Db, id: &str, tenant: &str, n: i64) {
    let run = run_row(id, tenant);
    let steps: Vec<StepRow> = (0..n)
        .map(|i| ready_step(id, &format!("s{i}"), i, 0))
        .collect();
    let refs: Vec<(&RunRow, &StepRow)> = steps.iter().map(|s| (&run, s)).collect();
    let mut conn = db.writer().await.expect("writer");
    Writes::default()
        .begin()
        .insert_run(&run)
        .upsert_steps(&refs)
        .commit()
        .execute(&mut conn)
        .await
        .expect("insert run");
}

async fn status(db: &Db, id: &str) -> RunStatus {
    let mut conn = db.reader().await.expect("reader");
    runs::get_run_unscoped(&mut conn, id)
        .await
        .expect("read")
        .expect("run")
        .status
}

/// The recorder's hand-managed transaction: begun with its read, ended by
/// the writes' `COMMIT`, or rolled back, after which the connection begins
/// again cleanly.
#[tokio::test]
async fn a_hand_begun_transaction_commits_with_its_writes_or_rolls_back() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        let mut run = run_row("r1", "t1");
        let mut conn = db.writer().await.expect("writer");
        Writes::default()
            .insert_run(&run)
            .execute(&mut conn)
            .await
            .expect("insert");

        let read = runs::begin_and_read_runs(&mut conn, &["r1", "missing"], &[], &[])
            .await
            .expect("begin and read");
        assert_eq!(read.runs.len(), 1, "{backend}: a missing run is left out");
        run.status = RunStatus::Running;
        Writes::default()
            .update_run(&run)
            .commit()
            .execute(&mut conn)
            .await
            .expect("write and commit");
        assert_eq!(status(&db, "r1").await, RunStatus::Running, "{backend}");

        runs::begin_and_read_runs(&mut conn, &["r1"], &[], &[])
            .await
            .expect("again");
        run.status = RunStatus::Failed;
        Writes::default()
            .update_run(&run)
            .execute(&mut conn)
            .await
            .expect("write");
        super::rollback(&mut conn).await.expect("rollback");
        assert_eq!(
            status(&db, "r1").await,
            RunStatus::Running,
            "{backend}: rolled back"
        );
        super::rollback(&mut conn)
            .await
            .expect("a rollback without a transaction is harmless");
        runs::begin_and_read_runs(&mut conn, &["r1"], &[], &[])
            .await
            .expect("the connection begins cleanly after a rollback");
        super::rollback(&mut conn).await.expect("rollback");
    }
}

/// Writes behind the versions of runs held in memory (the recorder with
/// every run of its batch in hand, SQLite): they commit while each run is
/// at its version; once one moved, or is gone, the transaction fails and
/// nothing of it stays.
#[tokio::test]
async fn writes_behind_held_versions_fail_once_a_run_moved() {
    let (_, db, _dir) = backends().await.remove(0);
    tenant(&db, "t1").await;
    run_with_ready_steps(&db, "r1", "t1", 1).await;
    run_with_ready_steps(&db, "r2", "t1", 1).await;
    let mut conn = db.writer().await.expect("writer");
    let read = runs::begin_and_read_runs(&mut conn, &["r1", "r2"], &[], &[])
        .await
        .expect("read")
        .runs;
    super::rollback(&mut conn).await.expect("rollback");
    let held: Vec<(String, i64)> = read.iter().map(|r| (r.run.id.clone(), r.version)).collect();
    let mut r1 = read[0].run.clone();
    assert_eq!(r1.id, "r1");

    r1.status = RunStatus::Running;
    Writes::default()
        .begin()
        .expect_versions(&held)
        .update_run(&r1)
        .commit()
        .execute(&mut conn)
        .await
        .expect("every run at its version: committed");
    assert_eq!(status(&db, "r1").await, RunStatus::Running);

    // That write moved r1's version.
    r1.status = RunStatus::Failed;
    let mut r2 = read[1].run.clone();
    r2.status = RunStatus::Running;
    let moved = Writes::default()
        .begin()
        .expect_versions(&held)
        .update_run(&r2)
        .update_run(&r1)
        .commit()
        .execute(&mut conn)
        .await;
    assert!(
        moved.is_err_and(|e| runs::is_version_moved(&e)),
        "r1 moved: the writes fail"
    );
    super::rollback(&mut conn).await.expect("rollback");
    assert_eq!(status(&db, "r1").await, RunStatus::Running, "nothing stays");
    assert_eq!(status(&db, "r2").await, RunStatus::Pending, "nothing stays");

    let gone = vec![("r3".to_owned(), 0)];
    let missing = Writes::default()
        .begin()
        .expect_versions(&gone)
        .update_run(&r2)
        .commit()
        .execute(&mut conn)
        .await;
    assert!(
        missing.is_err_and(|e| runs::is_version_moved(&e)),
        "a run that is not there fails the writes"
    );
    super::rollback(&mut conn).await.expect("rollback");
    assert_eq!(status(&db, "r2").await, RunStatus::Pending);
}

/// A recorder's batch of progress reports alone: it begins a transaction
/// and locks the runs reported on where no other transaction holds them
/// (Postgres: it passes over a run another holds, and another transaction
/// cannot take one it locked), and the reports land in order, each at its
/// time; a report of a run that is gone is left out.
#[tokio::test]
async fn progress_reports_lock_their_free_runs_and_land_in_order() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        run_with_ready_steps(&db, "r1", "t1", 1).await;
        run_with_ready_steps(&db, "r2", "t1", 1).await;
        // Postgres: another transaction holds r2.
        let mut holder = None;
        if backend == "postgres" {
            let mut other = db.writer().await.expect("writer");
            sqlx::query("BEGIN")
                .execute(&mut *other)
                .await
                .expect("begin");
            sqlx::query("SELECT id FROM runs WHERE id = 'r2' FOR UPDATE")
                .fetch_all(&mut *other)
                .await
                .expect("lock r2");
            holder = Some(other);
        }
        let mut conn = db.writer().await.expect("writer");
        let read = runs::begin_and_read_runs(&mut conn, &[], &[], &["r2", "r1", "gone"])
            .await
            .expect("begin and lock");
        assert!(
            read.runs.is_empty(),
            "{backend}: runs only locked are not read"
        );
        if backend == "postgres" {
            assert_eq!(read.tried, ["r1"], "r2 is held, and no run is gone");
            let mut other = db.writer().await.expect("writer");
            let taken = sqlx::query("SELECT id FROM runs WHERE id = 'r1' FOR UPDATE NOWAIT")
                .fetch_all(&mut *other)
                .await;
            assert!(taken.is_err(), "r1 is locked by the batch");
        } else {
            assert_eq!(
                read.tried,
                ["gone", "r1", "r2"],
                "the writer's lock covers all"
            );
        }
        let report = |run: &str, percent: u8, at: i64| runs::ProgressEvent {
            tenant: "t1".into(),
            run_id: run.into(),
            step_id: "s0".into(),
            data: format!(r#"{{"percent":{percent}}}"#),
            at,
        };
        let reports = [
            report("r1", 100, 9),
            report("gone", 10, 4),
            report("r1", 10, 5),
            report("r1", 50, 7),
        ];
        Writes::default()
            .append_progress(&reports)
            .commit()
            .execute(&mut conn)
            .await
            .expect("write and commit");
        if let Some(mut holder) = holder {
            super::rollback(&mut holder).await.expect("rollback");
        }
        let events = runs::events_after(&mut conn, "r1", 0, 10)
            .await
            .expect("events");
        let got: Vec<(&str, &str, i64)> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.data.as_str(), e.at))
            .collect();
        assert_eq!(
            got,
            [
                ("step.progress", r#"{"percent":100}"#, 9),
                ("step.progress", r#"{"percent":10}"#, 5),
                ("step.progress", r#"{"percent":50}"#, 7),
            ],
            "{backend}: in the order given"
        );
        let gone = runs::events_after(&mut conn, "gone", 0, 10)
            .await
            .expect("events");
        assert!(gone.is_empty(), "{backend}: {gone:?}");
    }
}

/// Two recorders of one run, on different hosts: the second waits for the
/// first's lock on the run and then reads the run and its steps as the
/// first left them (not as they were when it began waiting), so neither
/// overwrites the other's step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_waiting_for_a_run_reads_what_the_holder_committed() {
    for (backend, db, _dir) in backends().await {
        if backend == "sqlite" {
            // One write connection: the second recorder could not start.
            continue;
        }
        tenant(&db, "t1").await;
        run_with_ready_steps(&db, "r1", "t1", 2).await;
        let mut first = db.writer().await.expect("writer");
        let read = runs::begin_and_read_runs(&mut first, &["r1"], &[], &[])
            .await
            .expect("read")
            .runs;
        let db2 = db.clone();
        let second = tokio::spawn(async move {
            let mut conn = db2.writer().await.expect("writer");
            let read = runs::begin_and_read_runs(&mut conn, &["r1"], &[], &[])
                .await
                .expect("read")
                .runs;
            super::rollback(&mut conn).await.expect("rollback");
            read
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut done = read[0].steps[0].clone();
        done.status = StepStatus::Completed;
        Writes::default()
            .upsert_steps(&[(&read[0].run, &done)])
            .commit()
            .execute(&mut first)
            .await
            .expect("write and commit");
        let seen = second.await.expect("task");
        assert_eq!(
            seen[0].steps[0].status,
            StepStatus::Completed,
            "{backend}: {seen:?}"
        );
    }
}

/// A claim takes due steps under a lease once; an expired lease makes the
/// step claimable again, by any host, as a new attempt; the tenant cap
/// holds.
#[tokio::test]
async fn claims_lease_due_steps_and_take_over_expired_leases() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        run_with_ready_steps(&db, "r1", "t1", 5).await;
        let claim = |host: &'static str, now: i64, cap: i64| {
            let db = db.clone();
            async move {
                let mut tx = db.begin().await.expect("begin");
                let steps = runs::claim(&mut tx, host, now, now + 1_000, 10, cap, None, true)
                    .await
                    .expect("claim");
                tx.commit().await.expect("commit");
                steps
            }
        };
        let first = claim("a", 100, 3).await;
        assert_eq!(first.len(), 3, "{backend}: the tenant cap is 3");
        assert!(first.iter().all(|s| s.status == StepStatus::Running
            && s.lease_owner.as_deref() == Some("a")
            && s.attempts == 1
            && s.lease_expires_at == Some(1_100)));
        assert!(
            claim("b", 200, 3).await.is_empty(),
            "{backend}: the cap is reached while the leases hold"
        );
        let more = claim("b", 200, 10).await;
        assert_eq!(more.len(), 2, "{backend}: the other two steps");
        assert!(
            claim("b", 300, 10).await.is_empty(),
            "{backend}: nothing left"
        );

        // Host a dies: its leases expire at 1100, b takes the steps over.
        let taken = claim("b", 1_101, 10).await;
        let mut ids: Vec<&str> = taken.iter().map(|s| s.step_id.as_str()).collect();
        ids.sort_unstable();
        let mut expected: Vec<&str> = first.iter().map(|s| s.step_id.as_str()).collect();
        expected.sort_unstable();
        assert_eq!(ids, expected, "{backend}");
        assert!(
            taken
                .iter()
                .all(|s| s.attempts == 2 && s.lease_owner.as_deref() == Some("b")),
            "{backend}: {taken:?}"
        );

        // Renewal keeps a lease; only its owner may renew.
        let mut conn = db.writer().await.expect("writer");
        assert!(
            runs::renew_lease(&mut conn, "r1", ids[0], "b", 5_000)
                .await
                .expect("renew")
        );
        assert!(
            !runs::renew_lease(&mut conn, "r1", ids[0], "a", 9_000)
                .await
                .expect("renew")
        );
    }
}

/// Over a long queue, a claim still takes the earliest due steps of every
/// tenant in turns: a tenant with 300 steps due (all at one time, then
/// later ones) does not hide another's single step, equal due times are
/// taken in a stable order, and steps not yet due stay.
#[tokio::test]
async fn a_claim_over_a_long_queue_takes_each_tenants_earliest_in_turns() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "busy").await;
        tenant(&db, "quiet").await;
        run_with_ready_steps(&db, "r-busy", "busy", 300).await;
        let later: Vec<StepRow> = (0..5)
            .map(|i| ready_step("r-busy", &format!("later{i}"), 300 + i, 50))
            .collect();
        let future = ready_step("r-busy", "future", 400, 10_000);
        let run = run_row("r-quiet", "quiet");
        let quiet = ready_step("r-quiet", "only", 0, 20);
        let busy = run_row("r-busy", "busy");
        let mut conn = db.writer().await.expect("writer");
        let mut refs: Vec<(&RunRow, &StepRow)> = later.iter().map(|s| (&busy, s)).collect();
        refs.push((&busy, &future));
        Writes::default()
            .begin()
            .upsert_steps(&refs)
            .insert_run(&run)
            .upsert_steps(&[(&run, &quiet)])
            .commit()
            .execute(&mut conn)
            .await
            .expect("insert");
        drop(conn);
        let claim = |limit: i64| {
            let db = db.clone();
            async move {
                let mut tx = db.begin().await.expect("begin");
                let steps = runs::claim(&mut tx, "h", 100, 1_100, limit, 1_000, None, true)
                    .await
                    .expect("claim");
                tx.commit().await.expect("commit");
                steps
            }
        };
        let first = claim(4).await;
        let ids: Vec<&str> = first.iter().map(|s| s.step_id.as_str()).collect();
        assert_eq!(first.len(), 4, "{backend}: {ids:?}");
        assert!(
            ids.contains(&"only"),
            "{backend}: the quiet tenant's step: {ids:?}"
        );
        assert_eq!(
            first.iter().filter(|s| s.run_id == "r-busy").count(),
            3,
            "{backend}: {ids:?}"
        );
        assert!(
            first.iter().all(|s| !s.step_id.starts_with("later")),
            "{backend}: the earliest first: {ids:?}"
        );
        // Everything due, nothing twice, the future step left.
        let mut seen: std::collections::BTreeSet<String> =
            first.iter().map(|s| s.step_id.clone()).collect();
        loop {
            let more = claim(32).await;
            if more.is_empty() {
                break;
            }
            for step in more {
                assert!(
                    seen.insert(step.step_id.clone()),
                    "{backend}: twice: {step:?}"
                );
            }
        }
        assert_eq!(seen.len(), 300 + 5 + 1, "{backend}");
        assert!(!seen.contains("future"), "{backend}");
    }
}

/// A step row written without its tenant and priority (by hand, or by an
/// older writer) gets them from its run: the claim finds it, an urgent
/// run's step first, and the next wake-up is its due time.
#[tokio::test]
async fn a_step_written_without_its_tenant_is_still_claimed_in_priority_order() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        let mut urgent = run_row("r-urgent", "t1");
        urgent.priority = 3;
        let plain = run_row("r-plain", "t1");
        let mut conn = db.writer().await.expect("writer");
        Writes::default()
            .begin()
            .insert_run(&plain)
            .insert_run(&urgent)
            .commit()
            .execute(&mut conn)
            .await
            .expect("runs");
        for (run, due) in [("r-plain", 40), ("r-urgent", 60)] {
            sqlx::query(
                "INSERT INTO steps (run_id, step_id, position, kind, status, attempts, due_at)
                 VALUES ($1, 'only', 0, 'plugin', 'ready', 0, $2)",
            )
            .bind(run)
            .bind(due)
            .execute(&mut *conn)
            .await
            .expect("insert step");
        }
        drop(conn);
        let mut reader = db.reader().await.expect("reader");
        assert_eq!(
            runs::next_due(&mut reader).await.expect("wakeup"),
            Some(40),
            "{backend}"
        );
        drop(reader);
        let mut tx = db.begin().await.expect("begin");
        let claimed = runs::claim(&mut tx, "h", 100, 1_100, 1, 1_000, None, true)
            .await
            .expect("claim");
        tx.commit().await.expect("commit");
        let ids: Vec<&str> = claimed.iter().map(|s| s.run_id.as_str()).collect();
        assert_eq!(ids, ["r-urgent"], "{backend}: the urgent run's step first");
        let mut tx = db.begin().await.expect("begin");
        // On Postgres, within this host's share of the tenant's cap.
        let within = (backend == "postgres").then_some(r#"{"t1": 1000}"#);
        let claimed = runs::claim(&mut tx, "h", 100, 1_100, 5, 1_000, within, true)
            .await
            .expect("claim");
        tx.commit().await.expect("commit");
        let ids: Vec<&str> = claimed.iter().map(|s| s.run_id.as_str()).collect();
        assert_eq!(ids, ["r-plain"], "{backend}: then the other");
    }
}

/// Hosts claiming at the same moment never take the same step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_never_share_a_step() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        for r in 0..10 {
            run_with_ready_steps(&db, &format!("r{r}"), "t1", 10).await;
        }
        let mut tasks = Vec::new();
        for host in ["a", "b", "c", "d"] {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let mut tx = db.begin().await.expect("begin");
                    let steps = runs::claim(&mut tx, host, 10, 10_000, 7, 1_000, None, true)
                        .await
                        .expect("claim");
                    tx.commit().await.expect("commit");
                    if steps.is_empty() {
                        // On Postgres a claim skips what another holds
                        // locked, so an empty claim can come while steps
                        // remain: done only when none is left.
                        let mut conn = db.reader().await.expect("reader");
                        if runs::queue_depth(&mut conn, 10).await.expect("depth") == 0 {
                            return mine;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    mine.extend(steps.into_iter().map(|s| (s.run_id, s.step_id)));
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        let total = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), total, "{backend}: a step was claimed twice");
        assert_eq!(total, 100, "{backend}: every step claimed");
    }
}

/// One run's event ids grow in commit order, so "the run's events after id
/// N" never skips one that commits late: an append outside any
/// transaction waits for a transaction that holds the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ids_follow_commit_order() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        run_with_ready_steps(&db, "r1", "t1", 1).await;
        let data = serde_json::json!({});
        let mut tx = db.begin().await.expect("begin");
        let first = runs::append_event(&mut tx, "t1", "r1", "first", None, &data, 1)
            .await
            .expect("append");
        let db2 = db.clone();
        let later = tokio::spawn(async move {
            let mut conn = db2.writer().await.expect("writer");
            runs::append_event(
                &mut conn,
                "t1",
                "r1",
                "second",
                None,
                &serde_json::json!({}),
                2,
            )
            .await
            .expect("append")
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !later.is_finished(),
            "{backend}: an append ran while an earlier transaction was open"
        );
        tx.commit().await.expect("commit");
        let second = later.await.expect("task");
        assert!(second > first, "{backend}: {second} after {first}");
        let mut conn = db.reader().await.expect("reader");
        let events = runs::events_after(&mut conn, "r1", 0, 10)
            .await
            .expect("events");
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["first", "second"], "{backend}");
    }
}

/// Search matches key, name and description whatever the case, treats `%`
/// and `_` literally, and pages by key in code-point order.
#[tokio::test]
async fn workflow_search_ignores_case_and_pages_by_key() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        let mut conn = db.writer().await.expect("writer");
        for (key, name, description) in [
            ("B-invoices", "Invoices", Some("Marks OVERDUE ones")),
            ("a_reports", "Reports 100%", None),
            ("Zeta", "zeta", Some("overdue too")),
        ] {
            workflows::insert(
                &mut conn,
                &workflows::Workflow {
                    tenant_id: "t1".into(),
                    key: key.into(),
                    name: name.into(),
                    description: description.map(Into::into),
                    archived_at: None,
                    created_at: 0,
                    updated_at: 0,
                },
            )
            .await
            .expect("insert");
        }
        let keys = |found: Vec<workflows::Workflow>| -> Vec<String> {
            found.into_iter().map(|w| w.key).collect()
        };
        let all = workflows::list(&mut conn, "t1", None, None, None, 10)
            .await
            .expect("list");
        assert_eq!(
            keys(all),
            ["B-invoices", "Zeta", "a_reports"],
            "{backend}: code-point order"
        );
        let overdue = workflows::list(&mut conn, "t1", Some("Overdue"), None, None, 10)
            .await
            .expect("search");
        assert_eq!(keys(overdue), ["B-invoices", "Zeta"], "{backend}");
        let percent = workflows::list(&mut conn, "t1", Some("0%"), None, None, 10)
            .await
            .expect("search");
        assert_eq!(keys(percent), ["a_reports"], "{backend}");
        let underscore = workflows::list(&mut conn, "t1", Some("_"), None, None, 10)
            .await
            .expect("search");
        assert_eq!(keys(underscore), ["a_reports"], "{backend}: `_` is literal");
        let page = workflows::list(&mut conn, "t1", None, None, Some("B-invoices"), 1)
            .await
            .expect("page");
        assert_eq!(keys(page), ["Zeta"], "{backend}");
    }
}

/// Label filters: the runs carrying every label, of this tenant only,
/// newest first in cursor pages; and the plan reads the labels' primary key
/// in run id order (no scan of the tenant's runs, no sort), so a page
/// costs the same however many runs there are.
#[tokio::test]
async fn label_filters_read_the_label_index_in_run_order() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        tenant(&db, "t2").await;
        let mut runs_made = Vec::new();
        for t in ["t1", "t2"] {
            for i in 0..3000 {
                let mut run = run_row(&format!("{t}-r{i:05}"), t);
                run.labels = Some(
                    serde_json::json!({"customer": format!("c-{}", i % 100), "case": format!("k-{}", i % 7)})
                        .to_string(),
                );
                runs_made.push(run);
            }
        }
        let mut conn = db.writer().await.expect("writer");
        for chunk in runs_made.chunks(200) {
            let mut writes = Writes::default();
            writes.begin();
            for run in chunk {
                writes.insert_run(run);
            }
            writes
                .commit()
                .execute(&mut conn)
                .await
                .expect("insert runs");
        }
        if backend == "postgres" {
            sqlx::query("ANALYZE")
                .execute(&mut *conn)
                .await
                .expect("analyze");
        }
        let one = [("customer".to_owned(), "c-5".to_owned())];
        let both = [
            ("customer".to_owned(), "c-5".to_owned()),
            ("case".to_owned(), "k-3".to_owned()),
        ];
        let filter = |labels| runs::RunFilter {
            labels,
            ..runs::RunFilter::default()
        };
        let ids = |found: Vec<RunRow>| -> Vec<String> { found.into_iter().map(|r| r.id).collect() };
        let expected: Vec<String> = (0..3000)
            .rev()
            .filter(|i| i % 100 == 5)
            .map(|i| format!("t1-r{i:05}"))
            .collect();
        let found = runs::list_runs(&mut conn, "t1", filter(&one), None, 1000)
            .await
            .expect("list");
        assert_eq!(
            ids(found),
            expected,
            "{backend}: one label, t1 only, newest first"
        );
        let expected_both: Vec<String> = (0..3000)
            .rev()
            .filter(|i| i % 100 == 5 && i % 7 == 3)
            .map(|i| format!("t1-r{i:05}"))
            .collect();
        // Either order of the labels (the rarer drives on SQLite).
        let reversed = [both[1].clone(), both[0].clone()];
        let all = runs::list_runs(&mut conn, "t1", filter(&reversed), None, 1000)
            .await
            .expect("reversed");
        assert_eq!(
            ids(all),
            expected_both,
            "{backend}: labels in another order"
        );
        let first = runs::list_runs(&mut conn, "t1", filter(&both), None, 2)
            .await
            .expect("page 1");
        let first = ids(first);
        assert_eq!(first, expected_both[..2], "{backend}: both labels");
        let rest = runs::list_runs(&mut conn, "t1", filter(&both), Some(&first[1]), 100)
            .await
            .expect("page 2");
        assert_eq!(ids(rest), expected_both[2..], "{backend}: the next page");
        let done = runs::RunFilter {
            labels: &one,
            status: Some(RunStatus::Completed),
            ..runs::RunFilter::default()
        };
        let none = runs::list_runs(&mut conn, "t1", done, None, 10)
            .await
            .expect("list");
        assert!(none.is_empty(), "{backend}: and the status");

        let explain = match backend {
            "sqlite" => "EXPLAIN QUERY PLAN ",
            _ => "EXPLAIN ",
        };
        let plan = runs::list_runs_query(explain, "t1", filter(&both), Some("t1-r02000"), 51)
            .fetch_all(&mut conn)
            .await
            .expect("explain");
        let plan: Vec<String> = plan
            .iter()
            .map(|row| {
                use sqlx::Row as _;
                match backend {
                    "sqlite" => row.try_get::<String, _>(3).expect("detail"),
                    _ => row.try_get::<String, _>(0).expect("plan line"),
                }
            })
            .collect();
        let text = plan.join("\n");
        match backend {
            "sqlite" => {
                assert!(
                    text.contains("SEARCH l USING PRIMARY KEY (tenant_id=? AND name=? AND value=? AND run_id<?)"),
                    "{backend}: the first label's key drives the read:\n{text}"
                );
                assert!(
                    // SQLite 3.54 writes `SEARCH m EXISTS USING` for it.
                    plan.iter().any(|line| line.starts_with("SEARCH m ")
                        && line.contains(" USING ")
                        && ["run_id=?", "tenant_id=?", "name=?", "value=?"]
                            .iter()
                            .all(|c| line.contains(c))),
                    "{backend}: each other label is one probe:\n{text}"
                );
                assert!(!text.contains("TEMP B-TREE"), "{backend}: no sort:\n{text}");
            }
            _ => {
                assert!(
                    text.contains("Index Only Scan Backward using run_labels_pkey on run_labels l")
                        || text
                            .contains("Index Scan Backward using run_labels_pkey on run_labels l"),
                    "{backend}: the first label's key drives the read:\n{text}"
                );
                assert!(!text.contains("Seq Scan"), "{backend}: no scan:\n{text}");
                assert!(!text.contains("Sort"), "{backend}: no sort:\n{text}");
            }
        }
    }
}

/// Bytes, large integers and sums come back as stored.
#[tokio::test]
async fn values_round_trip() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        let mut conn = db.writer().await.expect("writer");
        let bytes: Vec<u8> = (0..=255).collect();
        state::kv_set(&mut conn, "t1", "b", "k", &bytes, i64::MAX)
            .await
            .expect("set");
        assert_eq!(
            state::kv_get(&mut conn, "t1", "b", "k").await.expect("get"),
            Some(bytes.clone()),
            "{backend}"
        );
        plugins::put_blob(&mut conn, "abc", &bytes)
            .await
            .expect("blob");
        plugins::put_blob(&mut conn, "abc", &bytes)
            .await
            .expect("the same blob twice is fine");
        assert_eq!(
            plugins::blob(&mut conn, "abc").await.expect("blob"),
            Some(bytes),
            "{backend}"
        );
        assert_eq!(
            plugins::storage_used(&mut conn, "t1").await.expect("sum"),
            0,
            "{backend}"
        );
        assert!(!auth::operator_key_exists(&mut conn).await.expect("keys"));
    }
}

/// A hand-begun transaction, or one from `Db::begin`, whose task is
/// dropped midway (an HTTP client that hung up), even mid-statement,
/// leaves nothing behind: its writes are gone, and the next writer is not
/// stuck behind it or inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_hand_transaction_leaves_nothing_open() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        let run = run_row("r1", "t1");
        {
            let mut conn = super::HandTx::new(db.writer().await.expect("writer"));
            Writes::default()
                .begin()
                .insert_run(&run)
                .execute(&mut conn)
                .await
                .expect("begin and insert");
            // Dropped here without COMMIT.
        }
        {
            let mut tx = db.begin().await.expect("begin");
            Writes::default()
                .insert_run(&run_row("r2", "t1"))
                .execute(&mut tx)
                .await
                .expect("insert");
            // Dropped here without commit.
        }
        {
            let mut tx = db.begin().await.expect("begin");
            // Cancelled at its first await: the statement may be sent, its
            // answer is never read.
            let _ = tokio::time::timeout(
                Duration::ZERO,
                Writes::default()
                    .insert_run(&run_row("r3", "t1"))
                    .execute(&mut tx),
            )
            .await;
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut tx = db.begin().await.expect("begin");
            state::kv_set(&mut tx, "t1", "b", "k", b"v", 0)
                .await
                .expect("write");
            tx.commit().await.expect("commit");
        })
        .await
        .unwrap_or_else(|_| panic!("{backend}: the next writer waited on the dropped one"));
        let mut conn = db.reader().await.expect("reader");
        for (id, transaction) in [
            ("r1", "dropped hand-begun"),
            ("r2", "dropped begun"),
            ("r3", "cancelled"),
        ] {
            assert!(
                runs::get_run_unscoped(&mut conn, id)
                    .await
                    .expect("read")
                    .is_none(),
                "{backend}: the {transaction} transaction's run {id} is gone"
            );
        }
    }
}

/// Hosts firing a schedule at once fire each tick once; hosts sending
/// webhooks at once never take the same delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_ticks_and_webhook_deliveries_are_taken_once() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        let mut conn = db.writer().await.expect("writer");
        schedules::insert(
            &mut conn,
            &schedules::ScheduleRow {
                id: "s1".into(),
                tenant_id: "t1".into(),
                workflow_key: "w".into(),
                cron: "* * * * *".into(),
                timezone: "UTC".into(),
                input: "{}".into(),
                status: "active".into(),
                next_run_at: Some(60_000),
                last_run_id: None,
                last_fired_at: None,
                last_error: None,
                created_at: 0,
                updated_at: 0,
                priority: 1,
            },
        )
        .await
        .expect("schedule");
        webhooks::insert(
            &mut conn,
            &webhooks::WebhookRow {
                id: "wh1".into(),
                tenant_id: "t1".into(),
                url: "https://example.com/hook".into(),
                events: "[\"*\"]".into(),
                secret: vec![1, 2, 3],
                status: "active".into(),
                disabled_reason: None,
                consecutive_failures: 0,
                cursor: 0,
                created_at: 0,
                updated_at: 0,
            },
        )
        .await
        .expect("webhook");
        for event_id in 1..=40 {
            webhooks::insert_delivery(
                &mut conn,
                &webhooks::DeliveryRow {
                    id: format!("msg_{event_id}"),
                    webhook_id: "wh1".into(),
                    tenant_id: "t1".into(),
                    event_id,
                    event_type: "run.completed".into(),
                    payload: "{}".into(),
                    status: "pending".into(),
                    attempts: 0,
                    retry_index: 0,
                    next_attempt_at: Some(0),
                    delivered_at: None,
                    created_at: 0,
                },
            )
            .await
            .expect("delivery");
        }
        drop(conn);

        let mut tasks = Vec::new();
        for _ in 0..4 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = db.begin().await.expect("begin");
                let fired = schedules::claim_tick(&mut tx, "s1", 60_000, 61_000)
                    .await
                    .expect("claim tick");
                tx.commit().await.expect("commit");
                let mut conn = db.writer().await.expect("writer");
                let mut sent = Vec::new();
                loop {
                    let due = webhooks::claim_due(&mut conn, 1_000, 30_000, 3)
                        .await
                        .expect("claim deliveries");
                    if due.is_empty() {
                        return (fired, sent);
                    }
                    sent.extend(due.into_iter().map(|d| d.id));
                }
            }));
        }
        let mut fired = 0;
        let mut sent = Vec::new();
        for task in tasks {
            let (f, s) = task.await.expect("task");
            fired += usize::from(f);
            sent.extend(s);
        }
        assert_eq!(fired, 1, "{backend}: a tick fired {fired} times");
        let total = sent.len();
        sent.sort();
        sent.dedup();
        assert_eq!(sent.len(), total, "{backend}: a delivery was taken twice");
        assert_eq!(total, 40, "{backend}");
    }
}

/// A step whose lease expired (its host died) is claimed again only by a
/// claim that asks for expired leases, which the scheduler does once the
/// earliest lease expiry has passed.
#[tokio::test]
async fn an_expired_lease_is_claimed_when_asked_for() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        run_with_ready_steps(&db, "r1", "t1", 1).await;
        let claim = |now: i64, expired: bool| {
            let db = db.clone();
            async move {
                let mut tx = db.begin().await.expect("begin");
                let steps = runs::claim(&mut tx, "h", now, now + 100, 10, 1_000, None, expired)
                    .await
                    .expect("claim");
                tx.commit().await.expect("commit");
                steps
            }
        };
        assert_eq!(claim(10, false).await.len(), 1, "{backend}: the due step");
        let mut reader = db.reader().await.expect("reader");
        assert_eq!(runs::next_due(&mut reader).await.expect("due"), None);
        assert_eq!(
            runs::next_lease_expiry(&mut reader).await.expect("lease"),
            Some(110),
            "{backend}"
        );
        drop(reader);
        assert!(
            claim(200, false).await.is_empty(),
            "{backend}: not asked for"
        );
        let again = claim(200, true).await;
        assert_eq!(again.len(), 1, "{backend}: the expired lease");
        assert_eq!(again[0].attempts, 2, "{backend}");
        assert_eq!(again[0].lease_expires_at, Some(300), "{backend}");
    }
}

/// On Postgres the claim itself skips rows another transaction holds
/// (`FOR UPDATE SKIP LOCKED`), its steps' and their runs': a second claim
/// at the same moment takes other runs' steps without waiting. (SQLite has
/// one writer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claims_skip_locked_steps() {
    for (backend, db, _dir) in backends().await {
        if backend != "postgres" {
            continue;
        }
        tenant(&db, "t1").await;
        run_with_ready_steps(&db, "r1", "t1", 3).await;
        let mut a = db.begin().await.expect("begin a");
        let first = runs::claim(&mut a, "a", 10, 10_000, 2, 100, None, true)
            .await
            .expect("claim a");
        run_with_ready_steps(&db, "r2", "t1", 3).await;
        let mut b = db.begin().await.expect("begin b");
        let second = tokio::time::timeout(
            Duration::from_secs(5),
            runs::claim(&mut b, "b", 10, 10_000, 10, 100, None, true),
        )
        .await
        .expect("the second claim waited for the first instead of skipping its rows")
        .expect("claim b");
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|s| s.run_id == "r1"));
        let ids: Vec<(&str, &str)> = second
            .iter()
            .map(|s| (s.run_id.as_str(), s.step_id.as_str()))
            .collect();
        let mut ids = ids;
        ids.sort_unstable();
        assert_eq!(
            ids,
            [("r2", "s0"), ("r2", "s1"), ("r2", "s2")],
            "only the run a does not hold"
        );
        a.commit().await.expect("commit a");
        b.commit().await.expect("commit b");
        let mut c = db.begin().await.expect("begin c");
        let rest = runs::claim(&mut c, "c", 10, 10_000, 10, 100, None, true)
            .await
            .expect("claim c");
        c.commit().await.expect("commit c");
        assert_eq!(rest.len(), 1, "r1's third step, once a committed");
    }
}

/// The tenant feed on Postgres, where transactions commit in parallel: an
/// event whose transaction took its id first and commits last is neither
/// skipped nor read twice, and a later event waits for it; each run's
/// events stay in the order they were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_feed_never_passes_an_event_that_commits_late() {
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        run_with_ready_steps(&db, "r1", "t1", 1).await;
        run_with_ready_steps(&db, "r2", "t1", 1).await;
        let data = serde_json::json!({});
        // A transaction open anywhere on the server (another test's) holds
        // the feed back for a moment: a read that expects `n` events waits
        // for them, up to 10 s.
        let feed_n = |after: i64, n: usize| {
            let db = db.clone();
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    let mut conn = db.reader().await.expect("reader");
                    let read: Vec<(i64, String)> =
                        webhooks::events_after(&mut conn, "t1", after, 100)
                            .await
                            .expect("feed")
                            .into_iter()
                            .map(|e| (e.id, e.kind))
                            .collect();
                    if read.len() >= n || std::time::Instant::now() > deadline {
                        return read;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let feed = |after: i64| feed_n(after, 0);
        let mut conn = db.writer().await.expect("writer");
        runs::append_event(&mut conn, "t1", "r2", "before", None, &data, 1)
            .await
            .expect("append");
        drop(conn);
        let passed = feed_n(0, 1).await;
        assert_eq!(passed.len(), 1, "{backend}: {passed:?}");
        let cursor = passed[0].0;
        if backend == "sqlite" {
            // One writer: nothing commits out of order.
            continue;
        }
        // A takes an id first and stays open.
        let mut a = db.begin().await.expect("begin a");
        let late = runs::append_event(&mut a, "t1", "r1", "late", None, &data, 2)
            .await
            .expect("append a");
        // B takes a later id and commits.
        let mut b = db.begin().await.expect("begin b");
        let early = runs::append_event(&mut b, "t1", "r2", "early", None, &data, 3)
            .await
            .expect("append b");
        b.commit().await.expect("commit b");
        assert!(late < early);
        assert_eq!(
            feed(cursor).await,
            [],
            "{backend}: B waits for A, which may still commit before it"
        );
        a.commit().await.expect("commit a");
        let read = feed_n(cursor, 2).await;
        assert_eq!(
            read,
            [(late, "late".to_owned()), (early, "early".to_owned())],
            "{backend}"
        );
        assert_eq!(feed(early).await, [], "{backend}: read once");
        assert_eq!(
            feed_n(late, 1).await,
            [(early, "early".to_owned())],
            "{backend}"
        );

        // A transaction that waited for a run behind a younger one: the
        // run's events stay in the order they were written.
        let mut old = db.begin().await.expect("begin old");
        runs::append_event(&mut old, "t1", "r2", "old-first", None, &data, 4)
            .await
            .expect("append");
        let mut young = db.begin().await.expect("begin young");
        runs::append_event(&mut young, "t1", "r1", "young-r1", None, &data, 5)
            .await
            .expect("append");
        let db2 = db.clone();
        let waiting = tokio::spawn(async move {
            // `old` appends to r1 too: it waits for `young`'s lock on r1.
            let mut old = old;
            runs::append_event(
                &mut old,
                "t1",
                "r1",
                "old-r1",
                None,
                &serde_json::json!({}),
                6,
            )
            .await
            .expect("append");
            old.commit().await.expect("commit old");
            drop(db2);
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        young.commit().await.expect("commit young");
        waiting.await.expect("task");
        let kinds: Vec<String> = feed_n(early, 3).await.into_iter().map(|(_, k)| k).collect();
        let at = |k: &str| kinds.iter().position(|x| x == k).expect(k);
        assert!(at("young-r1") < at("old-r1"), "{backend}: {kinds:?}");
        assert_eq!(kinds.len(), 3, "{backend}: {kinds:?}");
    }
}

fn outbox_message(tenant: &str, n: i64) -> state::OutboxMessage {
    state::OutboxMessage {
        tenant_id: tenant.into(),
        key: format!("run/step/{n}"),
        message_id: format!("msg_{tenant}_{n:03}"),
        run_id: Some("run".into()),
        step_id: Some("step".into()),
        to: vec!["ops@example.com".into()],
        cc: Vec::new(),
        subject: "s".into(),
        body: "b".into(),
        status: state::OutboxStatus::Queued,
        attempts: 0,
        last_error: None,
        created_at: 1_000 + n / 2,
        sent_at: None,
        next_attempt_at: 1_000 + n,
    }
}

/// The outbox pages newest first past any page size, the sender takes only
/// messages due, a retry waits out its backoff, and a requeue brings back
/// a failed message but never a sent one.
#[tokio::test]
async fn outbox_pages_backs_off_and_requeues() {
    use state::{Delivery, OutboxStatus, Requeue};
    for (backend, db, _dir) in backends().await {
        tenant(&db, "t1").await;
        tenant(&db, "t2").await;
        let mut conn = db.writer().await.expect("writer");
        for n in 0..7 {
            state::outbox_put(&mut conn, &outbox_message("t1", n))
                .await
                .expect("put");
        }
        state::outbox_put(&mut conn, &outbox_message("t2", 0))
            .await
            .expect("put");
        // Pages of 3 (fetching 4 to know there is more), keyed by the last id.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = state::outbox_list(&mut conn, "t1", None, cursor.as_deref(), 3)
                .await
                .expect("list");
            seen.extend(page.iter().map(|m| m.message_id.clone()));
            if page.len() < 3 {
                break;
            }
            cursor = page.last().map(|m| m.message_id.clone());
        }
        let expected: Vec<String> = (0..7).rev().map(|n| format!("msg_t1_{n:03}")).collect();
        assert_eq!(seen, expected, "{backend}");

        let due = state::outbox_due(&mut conn, 1_002, 50).await.expect("due");
        let ids: Vec<&str> = due.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(
            ids,
            ["msg_t1_000", "msg_t2_000", "msg_t1_001", "msg_t1_002"],
            "{backend}"
        );

        let retry = Delivery::Retry {
            error: "Connection error: refused",
            next_attempt_at: 5_000,
        };
        state::outbox_record(&mut conn, "msg_t1_000", &retry, 1_002)
            .await
            .expect("record");
        let due = state::outbox_due(&mut conn, 4_999, 50).await.expect("due");
        assert!(
            due.iter().all(|m| m.message_id != "msg_t1_000"),
            "{backend}: backing off"
        );
        let due = state::outbox_due(&mut conn, 5_000, 50).await.expect("due");
        let again = due
            .iter()
            .find(|m| m.message_id == "msg_t1_000")
            .expect("due again");
        assert_eq!(again.attempts, 1, "{backend}");
        assert_eq!(
            again.last_error.as_deref(),
            Some("Connection error: refused"),
            "{backend}"
        );

        let refused = Delivery::Failed {
            error: "permanent error (550): no such mailbox",
        };
        state::outbox_record(&mut conn, "msg_t1_000", &refused, 5_000)
            .await
            .expect("record");
        state::outbox_record(&mut conn, "msg_t1_001", &Delivery::Sent, 5_000)
            .await
            .expect("record");
        let failed = state::outbox_get(&mut conn, "t1", "msg_t1_000")
            .await
            .expect("get")
            .expect("found");
        assert_eq!(failed.status, OutboxStatus::Failed, "{backend}");
        assert_eq!(failed.attempts, 2, "{backend}");

        assert_eq!(
            state::outbox_requeue(&mut conn, "t2", "msg_t1_000", 6_000)
                .await
                .expect("requeue"),
            Requeue::NotFound,
            "{backend}: another tenant's message"
        );
        assert_eq!(
            state::outbox_requeue(&mut conn, "t1", "msg_t1_001", 6_000)
                .await
                .expect("requeue"),
            Requeue::AlreadySent,
            "{backend}"
        );
        let Requeue::Queued(requeued) = state::outbox_requeue(&mut conn, "t1", "msg_t1_000", 6_000)
            .await
            .expect("requeue")
        else {
            panic!("{backend}: a failed message is queued again");
        };
        assert_eq!(
            (requeued.status, requeued.attempts, requeued.next_attempt_at),
            (OutboxStatus::Queued, 0, 6_000),
            "{backend}"
        );
        let sent = state::outbox_get(&mut conn, "t1", "msg_t1_001")
            .await
            .expect("get")
            .expect("found");
        assert_eq!(
            (sent.status, sent.sent_at),
            (OutboxStatus::Sent, Some(5_000)),
            "{backend}"
        );
    }
}

/// Hosts sharing a Postgres database split a tenant's cap: each claims
/// only within its share, counting its own running steps, and the shares
/// of live hosts never add up to more than the cap; a host without work
/// gives its share back, and an expired one counts for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hosts_claim_within_their_shares_of_a_tenant_cap() {
    for (backend, db, _dir) in backends().await {
        if backend != "postgres" {
            continue;
        }
        tenant(&db, "t1").await;
        for r in 0..4 {
            run_with_ready_steps(&db, &format!("r{r}"), "t1", 5).await;
        }
        let share = |host: &'static str, due: bool, now: i64| {
            let db = db.clone();
            async move {
                let mut tx = db.begin().await.expect("begin");
                let set = slots::share(
                    &mut tx,
                    host,
                    &[("t1".to_owned(), due)],
                    6,
                    32,
                    now,
                    now + 1_000,
                )
                .await
                .expect("share");
                tx.commit().await.expect("commit");
                set[0].1.unwrap_or(0)
            }
        };
        let claim = |host: &'static str, share: i64| {
            let db = db.clone();
            async move {
                let mut tx = db.begin().await.expect("begin");
                let within = format!(r#"{{"t1": {share}}}"#);
                let steps = runs::claim(&mut tx, host, 10, 100_000, 32, 6, Some(&within), false)
                    .await
                    .expect("claim");
                tx.commit().await.expect("commit");
                steps.len()
            }
        };
        // Alone, a host takes the whole cap, and claims up to it.
        assert_eq!(share("a", true, 10).await, 6);
        assert_eq!(claim("a", 6).await, 6);
        assert_eq!(claim("a", 6).await, 0, "its share is running");
        // A second host finds nothing left until the first shrinks.
        assert_eq!(share("b", true, 20).await, 0);
        assert_eq!(claim("b", 0).await, 0);
        // The first, seeing a contender, shrinks to half: it still counts
        // the six it runs, so the second still gets nothing.
        assert_eq!(share("a", true, 30).await, 3);
        assert_eq!(share("b", true, 40).await, 0);
        // Three of the first's steps end.
        sqlx::query(
            "UPDATE steps SET status = 'completed' WHERE run_id = 'r0' AND step_id IN ('s0', 's1', 's2')",
        )
        .execute(&mut *db.writer().await.expect("writer"))
        .await
        .expect("complete");
        let mut conn = db.reader().await.expect("reader");
        assert_eq!(
            slots::running_here(&mut conn, "t1", "a")
                .await
                .expect("count"),
            3
        );
        drop(conn);
        assert_eq!(share("a", true, 50).await, 3);
        assert_eq!(claim("a", 3).await, 0, "the first runs its share");
        assert_eq!(share("b", true, 60).await, 3);
        assert_eq!(claim("b", 3).await, 3);
        // Never more than the cap running across hosts.
        let running: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM steps WHERE status = 'running'")
                .fetch_one(&mut *db.reader().await.expect("reader"))
                .await
                .expect("running");
        assert_eq!(running, 6);
        // The first host dies: its row expired at 1,050, but its three
        // running steps still count until another host takes them over.
        assert_eq!(share("b", true, 2_000).await, 3);
        sqlx::query("UPDATE steps SET lease_owner = 'b' WHERE lease_owner = 'a'")
            .execute(&mut *db.writer().await.expect("writer"))
            .await
            .expect("take over");
        // Taken over, they are the second host's: it may run the whole cap.
        assert_eq!(share("b", true, 2_010).await, 6);
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT host_id FROM tenant_slots ORDER BY host_id")
                .fetch_all(&mut *db.reader().await.expect("reader"))
                .await
                .expect("rows");
        assert_eq!(rows, ["b"], "the expired row is removed");
        // A host with nothing due and nothing running gives its share back.
        sqlx::query("UPDATE steps SET status = 'completed' WHERE lease_owner = 'b'")
            .execute(&mut *db.writer().await.expect("writer"))
            .await
            .expect("complete");
        assert_eq!(share("b", false, 2_100).await, 0, "no row");
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenant_slots")
            .fetch_one(&mut *db.reader().await.expect("reader"))
            .await
            .expect("rows");
        assert_eq!(left, 0);
    }
}

#[test]
fn sqlite_versions_parse_and_order() {
    assert_eq!(super::sqlite_version("3.51.3"), Some((3, 51, 3)));
    assert_eq!(super::sqlite_version("3.54"), Some((3, 54, 0)));
    assert_eq!(super::sqlite_version("3.x.1"), None);
    assert!(super::sqlite_version("3.46.0") < Some(super::CONCURRENT_CHECKPOINT_SINCE));
    assert!(super::sqlite_version("3.51.3") >= Some(super::CONCURRENT_CHECKPOINT_SINCE));
}

/// The SQLite built into the binary is one that checkpoints beside the
/// writer safely, and the checkpointer copies the whole log into the
/// database file soon after the last commit: the writer alone would leave
/// the last commits in the log until its next checkpoint.
#[tokio::test]
async fn sqlite_checkpoints_the_log_beside_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(
        &format!("sqlite://{}/weft.db", dir.path().display()),
        Options::default(),
    )
    .await
    .expect("open sqlite");
    assert!(
        db._checkpointer.is_some(),
        "this SQLite cannot checkpoint beside the writer"
    );
    tenant(&db, "t1").await;
    for i in 0..100 {
        run_with_ready_steps(&db, &format!("r{i:03}"), "t1", 3).await;
    }
    let size = {
        let mut conn = db.reader().await.expect("reader");
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut *conn)
            .await
            .expect("page_count");
        let page: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut *conn)
            .await
            .expect("page_size");
        u64::try_from(pages * page).expect("size")
    };
    let file = dir.path().join("weft.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(super::CHECKPOINT_EVERY).await;
        let copied = std::fs::metadata(&file).expect("the file").len();
        if copied == size {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file holds {copied} of {size} bytes: the log was not checkpointed"
        );
    }
}
