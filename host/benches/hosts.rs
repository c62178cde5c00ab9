//! Several hosts on one database: real `weft serve` processes (the release
//! binary) on this machine.
//!
//! Prints steps per second for two workloads, each runs of a 10-step linear
//! workflow of the testkit fixture started round-robin through every host:
//! trivial steps (`echo`), on SQLite with one host and on Postgres with
//! one, two and three hosts at default settings; and steps that spend
//! 20 ms inside the plugin (`sleep`, like a call to an outside API), each
//! host `--max-parallel 32` with no tenant cap, on one, two and three
//! Postgres hosts. For every Postgres row, the time transactions spent
//! waiting for locks per step (`pg_stat_activity` sampled every 2 ms:
//! backends of the bench database waiting on a lock, heavyweight or
//! advisory). Then how long a SIGKILLed host's in-flight attempt takes to
//! be taken over by another host, for two lease lengths.
//!
//! Needs Postgres at `WEFT_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`); it creates and drops the
//! database `weft_bench_hosts`.
//!
//! Run: `cargo bench --bench hosts`

#![allow(clippy::print_stdout, reason = "a bench binary prints its figures")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../tests/common/guests.rs"]
mod guests;
mod shared;

use serde_json::{Value, json};
use shared::linear_steps;
use sqlx::Connection as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const KEY: &str = "wft_bench_hosts_key";
const SECRETS_KEY: &str = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b";
const RUNS: usize = 1_000;
const STEPS: usize = 10;
const DATABASE: &str = "weft_bench_hosts";

struct Host {
    child: Child,
    url: String,
}

impl Host {
    fn start(data_dir: &Path, database: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--database", database, "--secrets-key", SECRETS_KEY])
            .arg("--plugin-dir")
            .arg(guests::dir())
            .args(extra)
            .arg("--stop-on-stdin-eof")
            .env("WEFT_ADMIN_KEY", KEY)
            .env("WEFT_RATE_LIMIT_PER_KEY", "1000000")
            .env("WEFT_RUNS_PER_MINUTE", "100000000")
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weft serve");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("weft serve exited before listening")
                .expect("stdout");
            if let Some(url) = line.strip_prefix("weft listening on ") {
                break url.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self { child, url }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

fn postgres_server() -> String {
    std::env::var("WEFT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// An empty bench database; its URL.
async fn fresh_postgres() -> String {
    let server = postgres_server();
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| panic!("this bench needs Postgres at {server}: {e}"));
    for sql in [
        format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
        format!("CREATE DATABASE {DATABASE}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .execute(&mut admin)
            .await
            .expect(&sql);
    }
    format!("{server}/{DATABASE}")
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Value {
    let mut request = client.request(method, url).bearer_auth(KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

async fn publish(client: &reqwest::Client, url: &str, key: &str, steps: Vec<Value>) {
    call(
        client,
        reqwest::Method::POST,
        format!("{url}/v1/workflows"),
        Some(json!({"key": key, "name": key, "steps": steps})),
    )
    .await;
    call(
        client,
        reqwest::Method::POST,
        format!("{url}/v1/workflows/{key}/publish"),
        Some(json!({"version": "0.1.0"})),
    )
    .await;
}

/// Completed runs, from a host's `/metrics` (the database's count).
async fn completed(client: &reqwest::Client, url: &str) -> usize {
    shared::metric(client, url, "weft_runs{status=\"completed\"}")
        .await
        .map_or(0, |n| n as usize)
}

/// What each step of the benchmark workflow does.
#[derive(Clone, Copy)]
enum Work {
    /// Returns its input at once.
    Echo,
    /// Sleeps 20 ms inside the plugin.
    Sleep,
}

/// A finished throughput run: steps per second, and milliseconds spent
/// waiting for locks per step (Postgres only).
struct Measured {
    steps_per_second: f64,
    lock_wait_ms_per_step: Option<f64>,
}

/// Samples `pg_stat_activity` every 2 ms until `stop`: how many backends of
/// the bench database wait on a lock; each sample stands for 2 ms of
/// waiting per waiting backend.
fn sample_lock_waits(database: &str, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let url = database.to_owned();
    tokio::spawn(async move {
        let mut waits = 0_u64;
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("sampler");
        while !stop.load(Ordering::SeqCst) {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap_or(0);
            waits += n as u64;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        waits * 2
    })
}

/// Steps per second for [`RUNS`] runs started through `hosts` in turn.
async fn throughput(
    client: &reqwest::Client,
    database: &str,
    hosts: usize,
    work: Work,
) -> Measured {
    let dirs: Vec<tempfile::TempDir> = (0..hosts)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let extra: &[&str] = match work {
        Work::Echo => &[],
        Work::Sleep => &["--max-parallel", "32", "--tenant-max-running", "0"],
    };
    let running: Vec<Host> = dirs
        .iter()
        .map(|d| Host::start(d.path(), database, extra))
        .collect();
    let urls: Vec<&str> = running.iter().map(|h| h.url.as_str()).collect();
    let mut steps = linear_steps(STEPS);
    if let Work::Sleep = work {
        for step in &mut steps {
            step["config"] = json!({"mode": "sleep", "ms": 20});
        }
    }
    publish(client, urls[0], "linear", steps).await;
    // Warm-up: every host compiles and instantiates once.
    let mut warm = 0;
    for url in &urls {
        for _ in 0..10 {
            call(
                client,
                reqwest::Method::POST,
                format!("{url}/v1/runs"),
                Some(json!({"workflow": "linear", "input": {}, "wait_ms": 10000})),
            )
            .await;
            warm += 1;
        }
    }
    while completed(client, urls[0]).await < warm {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = database
        .starts_with("postgres")
        .then(|| sample_lock_waits(database, stop.clone()));
    let started = Instant::now();
    for chunk in 0..RUNS / 50 {
        let batch: Vec<_> = (0..50)
            .map(|i| {
                let n = chunk * 50 + i;
                call(
                    client,
                    reqwest::Method::POST,
                    format!("{}/v1/runs", urls[n % hosts]),
                    Some(json!({"workflow": "linear", "input": {"n": n}})),
                )
            })
            .collect();
        futures::future::join_all(batch).await;
    }
    while completed(client, urls[0]).await < RUNS + warm {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let lock_wait_ms_per_step = match sampler {
        Some(sampler) => Some(sampler.await.expect("sampler") as f64 / (RUNS * STEPS) as f64),
        None => None,
    };
    Measured {
        steps_per_second: (RUNS * STEPS) as f64 / elapsed,
        lock_wait_ms_per_step,
    }
}

/// Seconds from SIGKILLing the host running an attempt to the attempt's
/// retry starting on the other host.
async fn takeover(client: &reqwest::Client, database: &str, lease_ms: &str) -> f64 {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let args = ["--lease-ms", lease_ms];
    let mut a = Host::start(a_dir.path(), database, &args);
    publish(
        client,
        &a.url,
        "slow",
        vec![json!({"id": "nap", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 60_000}})],
    )
    .await;
    let run = call(
        client,
        reqwest::Method::POST,
        format!("{}/v1/runs", a.url),
        Some(json!({"workflow": "slow", "input": {}})),
    )
    .await;
    let id = run["id"].as_str().expect("id").to_owned();
    let b = Host::start(b_dir.path(), database, &args);
    let view = || {
        call(
            client,
            reqwest::Method::GET,
            format!("{}/v1/runs/{id}", b.url),
            None,
        )
    };
    // Host a has the attempt (b started after the claim).
    loop {
        let run = view().await;
        if run["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let a's lease be renewed at least once, as in a long attempt.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let killed_at = chrono::Utc::now();
    a.kill();
    loop {
        let run = view().await;
        let attempts = run["steps"][0]["attempt_log"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(second) = attempts.get(1) {
            let started: chrono::DateTime<chrono::Utc> = second["started_at"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("started_at");
            return (started - killed_at).num_milliseconds() as f64 / 1000.0;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let client = reqwest::Client::new();
    println!(
        "{RUNS} runs of a {STEPS}-step linear workflow (testkit echo), started round-robin through every host, this machine ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}/weft.db", dir.path().display());
    let print = |label: &str, m: &Measured| match m.lock_wait_ms_per_step {
        Some(wait) => println!(
            "  {label}: {:>6.0} steps/s, lock wait {wait:.3} ms/step",
            m.steps_per_second
        ),
        None => println!("  {label}: {:>6.0} steps/s", m.steps_per_second),
    };
    for (work, title) in [
        (
            Work::Echo,
            "trivial steps (testkit echo), default settings:",
        ),
        (
            Work::Sleep,
            "steps of 20 ms inside the plugin (testkit sleep), --max-parallel 32 per host, no tenant cap:",
        ),
    ] {
        println!("{title}");
        if let Work::Echo = work {
            print(
                "SQLite,   1 host ",
                &throughput(&client, &sqlite, 1, work).await,
            );
        }
        for hosts in 1..=3 {
            let database = fresh_postgres().await;
            let label = format!(
                "Postgres, {hosts} host{}",
                if hosts == 1 { " " } else { "s" }
            );
            print(&label, &throughput(&client, &database, hosts, work).await);
        }
    }
    println!("takeover of a SIGKILLed host's in-flight attempt (Postgres, 2 hosts):");
    for lease_ms in ["15000", "3000"] {
        let database = fresh_postgres().await;
        let seconds = takeover(&client, &database, lease_ms).await;
        println!(
            "  --lease-ms {lease_ms:>5}: retried on the other host {seconds:.2} s after the kill"
        );
    }
    let server = postgres_server();
    if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
    }
}
