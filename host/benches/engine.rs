//! Engine throughput and latency on SQLite, through the real HTTP API:
//! a 10-step linear workflow of a trivial plugin (the testkit fixture in
//! `echo` mode).
//!
//! Prints: steps per second for 1,000 runs started at once; p50/p99 of a
//! synchronous run (`wait_ms`); and the engine's per-step overhead above the
//! runtime's invoke cost. Twice: with the default settings, and as a
//! one-tenant host (the tenant may use every slot).
//!
//! Run: `cargo bench --bench engine`; with `-- --otlp`, traces are
//! exported (as `weft serve --otlp-endpoint` would) to a receiver in this
//! process that decodes and counts them, to compare with traces off. With
//! `-- --history N`, the database first gets N finished steps of history
//! (N/10 completed 10-step runs, each with its attempts and 22 events,
//! written by direct inserts), to compare with an empty database. With
//! `-- --backlog N`, only the throughput while N runs of the workflow wait
//! to start (inserted directly, first steps due), over 20 s. With
//! `-- --sqlite-synchronous-full`, SQLite fsyncs every commit (as
//! `weft serve --sqlite-synchronous full`).

#![allow(clippy::print_stdout, reason = "a bench binary prints its figures")]

/// The allocator of the `weft` binary, so that the bench measures what a
/// server runs: with glibc's allocator for everything, SQLite's page-cache
/// churn hides in arenas that Rust's allocations keep large, while the
/// binary's glibc arenas hold only C allocations and give their pages back.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
#[path = "../../tests/common/guests.rs"]
mod guests;
mod shared;

use shared::{invocation, linear_steps, metric};
use weft::api::{self, AppState};
use weft::db::{Db, Options};
use weft::engine::plugins::Plugins;
use weft::engine::{Engine, EngineConfig};
use weft::runtime::services::MemoryServices;
use weft::runtime::{Runtime, RuntimeConfig};

const KEY: &str = "wft_bench_key";
const RUNS: usize = 1_000;
const STEPS: usize = 10;
const SYNC_RUNS: usize = 200;

/// SQLite's durability for every pass: `--sqlite-synchronous-full` or not.
static SYNCHRONOUS: std::sync::OnceLock<weft::db::Synchronous> = std::sync::OnceLock::new();

#[tokio::main]
async fn main() {
    // The defaults; then a one-tenant host, whose tenant may use every
    // slot (`--tenant-max-running` = `--max-parallel`): this bench has one
    // tenant, so under the default cap it measures the cap.
    let defaults = EngineConfig::default();
    let one_tenant = EngineConfig {
        tenant_max_running: defaults.max_parallel,
        ..EngineConfig::default()
    };
    let traces = if std::env::args().any(|a| a == "--otlp") {
        Some(export_traces().await)
    } else {
        None
    };
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--sqlite-synchronous-full");
    SYNCHRONOUS
        .set(if full {
            weft::db::Synchronous::Full
        } else {
            weft::db::Synchronous::Normal
        })
        .expect("set once");
    let history = args
        .iter()
        .position(|a| a == "--history")
        .and_then(|i| args.get(i + 1))
        .map_or(0, |n| {
            n.parse::<usize>()
                .expect("--history takes a number of steps")
        });
    if let Some(n) = args
        .iter()
        .position(|a| a == "--backlog")
        .and_then(|i| args.get(i + 1))
    {
        let n = n.parse().expect("--backlog takes a number of runs");
        measure(defaults, Part::Backlog(n), history).await;
        return;
    }
    if let Some(n) = args
        .iter()
        .position(|a| a == "--map")
        .and_then(|i| args.get(i + 1))
    {
        let n = n.parse().expect("--map takes a number of items");
        measure(defaults, Part::Map(n), history).await;
        return;
    }
    if args.iter().any(|a| a == "--chains") {
        // Only the chains (for a profiler): the default settings.
        measure(defaults, Part::Chains, history).await;
        return;
    }
    for config in [defaults, one_tenant] {
        measure(config, Part::All, history).await;
        println!();
    }
    if let Some((guard, spans)) = traces {
        // Flushing blocks this thread; the exporter runs on the workers.
        guard.shutdown();
        println!(
            "traces: {} spans received by the OTLP receiver",
            spans.load(std::sync::atomic::Ordering::SeqCst)
        );
    }
}

/// Turns traces on, exporting to an OTLP/HTTP receiver on 127.0.0.1 that
/// counts the spans it decodes. The ratio of traced database transactions
/// is the default.
async fn export_traces() -> (weft::telemetry::Guard, Arc<std::sync::atomic::AtomicUsize>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let spans = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            let request = ExportTraceServiceRequest::decode(body).expect("OTLP");
            let n: usize = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            count.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            Vec::<u8>::new()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    let (tracer, guard) = weft::telemetry::init(&weft::telemetry::Config {
        endpoint: Some(endpoint),
        db_sample_ratio: weft::telemetry::DEFAULT_DB_SAMPLE_RATIO,
    })
    .expect("exporter")
    .expect("traces on");
    tracing_subscriber::registry()
        .with(weft::telemetry::layer(tracer))
        .init();
    println!("traces: on (OTLP/HTTP to a local receiver)");
    (guard, spans)
}

/// What a pass over one configuration measures.
#[derive(PartialEq)]
enum Part {
    All,
    Chains,
    /// Throughput while this many runs wait to start.
    Backlog(usize),
    /// One run whose step maps over this many items.
    Map(usize),
}

async fn measure(config: EngineConfig, part: Part, history: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(
        &format!("sqlite://{}/weft.db", dir.path().display()),
        Options {
            synchronous: *SYNCHRONOUS.get().expect("set in main"),
            ..Options::default()
        },
    )
    .await
    .expect("db");
    api::auth::bootstrap(&db, Some(KEY))
        .await
        .expect("bootstrap");
    if history > 0 {
        fill_history(&db, history / 10).await;
    }
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).expect("runtime"));
    let plugins = Plugins::default();
    let testkit = guests::rust("testkit");
    let plugin = plugins
        .add_shared(&runtime, &testkit)
        .await
        .expect("load testkit");
    plugins
        .add_shared(&runtime, &guests::rust("transform"))
        .await
        .expect("load transform");
    println!(
        "engine: --max-parallel {}, --tenant-max-running {}, --sqlite-synchronous {:?}",
        config.max_parallel,
        config.tenant_max_running,
        SYNCHRONOUS.get().expect("set in main")
    );
    let engine = Engine::new(db, runtime.clone(), plugins, config);
    let shutdown = tokio_util::sync::CancellationToken::new();
    engine.start(shutdown.clone());
    let listener = api::server::bind("127.0.0.1:0".parse().expect("an address")).expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(api::serve(
        listener,
        AppState::new(
            engine.clone(),
            api::limits::RateLimits {
                requests_per_second: 1e9,
                runs_per_minute: 1e9,
            },
        ),
        api::server::Limits::default(),
        std::future::pending(),
    ));
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{url}{path}"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
    };

    // The same chain of the built-in `transform`, to compare per step.
    let transforms: Vec<Value> = (0..STEPS)
        .map(|i| {
            let mut step = json!({"id": format!("t{i}"), "uses": "transform@1",
                "config": {"expression": "{n: (.n + 1), total: ([.n, 2] | add)}"}});
            if i > 0 {
                step["depends_on"] = json!([format!("t{}", i - 1)]);
            }
            step
        })
        .collect();
    for (key, steps) in [
        ("linear", linear_steps(STEPS)),
        ("chain-1", linear_steps(1)),
        ("chain-100", linear_steps(100)),
        ("transform-10", transforms),
    ] {
        let created = post(
            "/v1/workflows",
            json!({"key": key, "name": key, "steps": steps}),
        )
        .await
        .expect("create");
        assert_eq!(created.status(), 201);
        let published = post(
            &format!("/v1/workflows/{key}/publish"),
            json!({"version": "0.1.0"}),
        )
        .await
        .expect("publish");
        assert_eq!(published.status(), 200);
    }
    if part == Part::Chains {
        chains(&post).await;
        shutdown.cancel();
        return;
    }

    // Warm-up.
    for _ in 0..20 {
        post(
            "/v1/runs",
            json!({"workflow": "linear", "input": {"n": 1}, "wait_ms": 10000}),
        )
        .await
        .expect("warm-up");
    }

    if let Part::Map(n) = part {
        map(&post, &client, &url, n).await;
        shutdown.cancel();
        return;
    }

    if let Part::Backlog(n) = part {
        fill_backlog(&engine.db, n).await;
        let completed = || async {
            metric(
                &client,
                &url,
                "weft_step_attempts_total{outcome=\"completed\"}",
            )
            .await
            .expect("the attempts counter")
        };
        // The scheduler finds the backlog on its next poll.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (before, t) = (completed().await, Instant::now());
        tokio::time::sleep(Duration::from_secs(20)).await;
        let steps = completed().await - before;
        println!(
            "with {n} runs waiting to start: {:.0} steps/s over {:.0} s",
            steps / t.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
        shutdown.cancel();
        return;
    }

    // Throughput: 1,000 runs started as fast as the API takes them.
    let started = Instant::now();
    let mut ids = Vec::with_capacity(RUNS);
    for chunk in 0..RUNS / 50 {
        let batch: Vec<_> = (0..50)
            .map(|i| {
                post(
                    "/v1/runs",
                    json!({"workflow": "linear", "input": {"n": chunk * 50 + i}}),
                )
            })
            .collect();
        for response in futures::future::join_all(batch).await {
            let run: Value = response.expect("start").json().await.expect("json");
            ids.push(run["id"].as_str().expect("id").to_owned());
        }
    }
    let accepted = started.elapsed();
    loop {
        let body: Value = client
            .get(format!("{url}/v1/runs?status=completed&limit=1"))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let _ = body;
        let done = metric(&client, &url, "weft_runs{status=\"completed\"}")
            .await
            .map_or(0, |n| n as usize);
        // The warm-up's 20 and any stored history's runs are completed too.
        if done >= RUNS + 20 + history / 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let steps_per_sec = (RUNS * STEPS) as f64 / elapsed.as_secs_f64();

    // Latency of a synchronous run.
    let mut latencies = Vec::with_capacity(SYNC_RUNS);
    for _ in 0..SYNC_RUNS {
        let t = Instant::now();
        let response = post(
            "/v1/runs",
            json!({"workflow": "linear", "input": {"n": 1}, "wait_ms": 10000}),
        )
        .await
        .expect("sync run");
        assert_eq!(response.status(), 200);
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let p50 = latencies[SYNC_RUNS / 2];
    let p99 = latencies[SYNC_RUNS * 99 / 100];

    // The runtime's invoke cost for the same step, to separate engine overhead.
    let memory = MemoryServices::default();
    let rounds = 2_000;
    let t = Instant::now();
    for _ in 0..rounds {
        let attempt = runtime
            .invoke(
                &plugin,
                invocation(r#"{"mode":"echo"}"#, r#"{"n":1}"#, &memory),
            )
            .await;
        assert!(attempt.result.is_ok());
    }
    let invoke = t.elapsed() / rounds;
    let per_step_sync = p50 / STEPS as u32;
    let overhead = per_step_sync.saturating_sub(invoke);

    println!("SQLite, one host, {RUNS} runs x {STEPS} steps (testkit echo):");
    println!(
        "  runs accepted in {:.2} s; all completed in {:.2} s",
        accepted.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("  throughput: {steps_per_sec:.0} steps/s");
    // The log is reused from its start once checkpointed, so its file's
    // size is the longest it grew.
    println!(
        "  write-ahead log file after it: {:.1} MiB",
        wal_mib(dir.path())
    );
    println!(
        "sync run of {STEPS} steps ({SYNC_RUNS} runs, one at a time): p50 {:.2} ms, p99 {:.2} ms",
        ms(p50),
        ms(p99)
    );
    println!(
        "runtime invoke cost: {:.1} µs/step",
        invoke.as_secs_f64() * 1e6
    );
    println!(
        "engine per-step overhead (sync p50 / {STEPS} - invoke): {:.3} ms",
        ms(overhead)
    );

    // What one statement costs through the single writer connection: the
    // unit the engine's per-step overhead is made of.
    let rounds = 2_000;
    let mut conn = engine.db.writer().await.expect("writer");
    let t = Instant::now();
    for _ in 0..rounds {
        sqlx::query("SELECT 1")
            .execute(&mut *conn)
            .await
            .expect("select");
    }
    let round_trip = t.elapsed() / rounds;
    drop(conn);
    println!(
        "one statement through the writer connection (sqlx round trip): {:.1} µs",
        round_trip.as_secs_f64() * 1e6
    );
    chains(&post).await;
    println!(
        "write-ahead log file at the end: {:.1} MiB",
        wal_mib(dir.path())
    );
    shutdown.cancel();
}

/// The size of the database's write-ahead log file in `dir`, in MiB.
fn wal_mib(dir: &std::path::Path) -> f64 {
    std::fs::metadata(dir.join("weft.db-wal")).map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64)
}

/// Latency of synchronous runs of chains of 1, 10 and 100 sequential
/// steps, one run at a time: the engine's cost per step should not grow
/// with the length of the run.
async fn chains<F, R>(post: &F)
where
    F: Fn(&str, Value) -> R,
    R: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    for (key, n, runs) in [
        ("chain-1", 1, 200),
        ("linear", STEPS, 200),
        ("chain-100", 100, 40),
        ("transform-10", STEPS, 200),
    ] {
        let mut latencies = Vec::with_capacity(runs);
        for i in 0..runs + 5 {
            let t = Instant::now();
            let response = post(
                "/v1/runs",
                json!({"workflow": key, "input": {"n": 1}, "wait_ms": 60000}),
            )
            .await
            .expect("sync run");
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["status"], "completed");
            // The first five warm up.
            if i >= 5 {
                latencies.push(t.elapsed());
            }
        }
        latencies.sort();
        let p50 = latencies[runs / 2];
        println!(
            "{key}: chain of {n} steps ({runs} sync runs): p50 {:.2} ms, p99 {:.2} ms, {:.3} ms/step",
            ms(p50),
            ms(latencies[runs * 99 / 100]),
            ms(p50) / n as f64
        );
    }
}

/// Rows `i` in 0..$1 (`n`) and steps `j` in 0..10 (`s`), for the inserts
/// of [`fill_history`] and [`fill_backlog`].
const SERIES: &str =
    "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1),
                  s(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM s WHERE j < 9)";

/// Runs `statements` in one transaction on the writer, each bound to the
/// number of runs ($1), the bench's tenant ($2) and a time ($3).
/// One run of a step with `for_each` over `n` trivial items, 50 at a
/// time, three times: items per second from the start to the run's end,
/// and the most this process's resident memory grew over its size before
/// the start (sampled every 20 ms).
async fn map<F, R>(post: &F, client: &reqwest::Client, url: &str, n: usize)
where
    F: Fn(&str, Value) -> R,
    R: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let created = post(
        "/v1/workflows",
        json!({"key": "map", "name": "map", "steps": [
            {"id": "each", "uses": "testkit@0", "for_each": "{{input.items}}", "max_parallel": 50,
             "config": {"mode": "sleep", "ms": 0}}
        ]}),
    )
    .await
    .expect("create");
    assert_eq!(created.status(), 201);
    let published = post("/v1/workflows/map/publish", json!({"version": "0.1.0"}))
        .await
        .expect("publish");
    assert_eq!(published.status(), 200);
    let items: Vec<usize> = (0..n).collect();
    for _ in 0..3 {
        let before = resident_kib();
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
        let sampler = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(resident_kib(), std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let started = Instant::now();
        let run: Value = post(
            "/v1/runs",
            json!({"workflow": "map", "input": {"items": items}}),
        )
        .await
        .expect("start")
        .json()
        .await
        .expect("the run");
        let id = run["id"].as_str().expect("an id").to_owned();
        loop {
            let status: Value = client
                .get(format!("{url}/v1/runs/{id}/status"))
                .bearer_auth(KEY)
                .send()
                .await
                .expect("status")
                .json()
                .await
                .expect("the status");
            if status["status"] != "running" && status["status"] != "pending" {
                assert_eq!(status["status"], "completed", "{status}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed();
        sampler.abort();
        let grew = peak
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(before);
        println!(
            "map of {n} items, 50 at a time: {:.0} items/s ({:.2} s); resident memory grew by at most {:.1} MiB",
            n as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            grew as f64 / 1024.0
        );
    }
}

/// This process's resident memory, KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn insert_series(db: &Db, runs: usize, at: i64, statements: &[String]) {
    let mut conn = db.writer().await.expect("writer");
    let tenant: String = sqlx::query_scalar("SELECT tenant_id FROM api_keys LIMIT 1")
        .fetch_one(&mut *conn)
        .await
        .expect("the bench tenant");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .expect("begin");
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(runs as i64)
            .bind(&tenant)
            .bind(at)
            .execute(&mut *conn)
            .await
            .expect("generated rows");
    }
    sqlx::query("COMMIT")
        .execute(&mut *conn)
        .await
        .expect("commit");
}

/// Writes `runs` finished 10-step runs of the bench's tenant, as the
/// engine would have left them (steps with outputs, one attempt each with
/// its rendered input, 22 events), with ids older than any new run's.
async fn fill_history(db: &Db, runs: usize) {
    let started = Instant::now();
    let day_ago = weft::db::now_ms() - 86_400_000;
    let series = SERIES;
    let id = "'00000000-0000-7000-8000-' || printf('%012d', i)";
    let statements = [
        format!(
            "INSERT INTO runs (id, tenant_id, workflow_key, workflow_version, status, input, result, created_at, started_at, ended_at)
             {series} SELECT {id}, $2, 'history', '0.1.0', 'completed', '{{\"n\":' || i || '}}',
                 '{{\"s9\":{{\"n\":' || i || '}}}}', $3 + i, $3 + i, $3 + i + 10 FROM n"
        ),
        format!(
            "INSERT INTO steps (run_id, step_id, position, kind, status, attempts, output, started_at, ended_at)
             {series} SELECT {id}, 's' || j, j, 'plugin', 'completed', 1, '{{\"n\":' || i || ',\"invoice\":\"inv-' || i || '\",\"amount\":12.5}}',
                 $3 + i + j, $3 + i + j + 1 FROM n, s"
        ),
        format!(
            "INSERT INTO attempts (run_id, step_id, attempt, status, host, started_at, ended_at, input)
             {series} SELECT {id}, 's' || j, 1, 'completed', 'host-bench', $3 + i + j, $3 + i + j + 1,
                 '{{\"mode\":\"echo\"}}' FROM n, s"
        ),
        format!(
            "INSERT INTO events (tenant_id, run_id, type, step_id, data, at)
             {series}, e(k, type) AS (VALUES (0, 'step.started'), (1, 'step.completed'))
             SELECT $2, {id}, e.type, 's' || j, '{{\"attempt\":1}}', $3 + i + j FROM n, s, e
             UNION ALL SELECT $2, {id}, 'run.started', NULL, '{{}}', $3 + i FROM n
             UNION ALL SELECT $2, {id}, 'run.completed', NULL, '{{}}', $3 + i + 10 FROM n"
        ),
    ];
    insert_series(db, runs, day_ago, &statements).await;
    println!(
        "history: {runs} finished runs, {} steps, {} events, written in {:.1} s",
        runs * 10,
        runs * 22,
        started.elapsed().as_secs_f64()
    );
}

/// Writes `runs` pending runs of the `linear` workflow, as a start leaves
/// them: the first step ready and due now, the others pending.
async fn fill_backlog(db: &Db, runs: usize) {
    let started = Instant::now();
    let now = weft::db::now_ms();
    let series = SERIES;
    let id = "'00000000-0000-7000-9000-' || printf('%012d', i)";
    let statements = [
        format!(
            "INSERT INTO runs (id, tenant_id, workflow_key, workflow_version, status, input, created_at)
             {series} SELECT {id}, $2, 'linear', '0.1.0', 'pending', '{{\"n\":' || i || '}}', $3 FROM n"
        ),
        format!(
            "INSERT INTO steps (run_id, step_id, position, kind, status, due_at)
             {series} SELECT {id}, 's' || j, j, 'plugin', CASE j WHEN 0 THEN 'ready' ELSE 'pending' END,
                 CASE j WHEN 0 THEN $3 END FROM n, s"
        ),
    ];
    insert_series(db, runs, now, &statements).await;
    println!(
        "backlog: {runs} pending runs written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
