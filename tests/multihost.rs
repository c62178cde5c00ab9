//! Three `weft serve` processes share one Postgres database: 300 runs of a
//! DAG workflow started through all three, one host SIGKILLed midway and
//! restarted later. Every run completes, no step's side effect (a mail in
//! the outbox, keyed by the attempt's idempotency key) happens twice, and
//! the three hosts answer reads identically.
//!
//! Needs Postgres (see `common::pg`): skipped with a notice without one,
//! failed in CI (`WEFT_REQUIRE_POSTGRES`).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Server, pg, step};
use serde_json::{Value, json};

const RUNS: usize = 300;
const STEPS: [&str; 4] = ["fetch", "left", "right", "join"];
const SECRETS_KEY: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_the_work_and_survive_a_killed_one() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh(&format!("multihost_{}", std::process::id()));
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let args = [
        "--database",
        url.as_str(),
        "--lease-ms",
        "1500",
        "--max-parallel",
        "8",
        "--secrets-key",
        SECRETS_KEY,
    ];
    // Built-ins only: the testkit is uploaded through host 0 as the
    // tenant's own plugin, so the other hosts must learn of the upload and
    // the grants from the database.
    let mut hosts: Vec<Server> = dirs
        .iter()
        .map(|d| Server::start_with(d.path(), false, &args))
        .collect();
    let testkit = std::fs::read(format!("{}/testkit.wasm", env!("WEFT_GUEST_DIR"))).unwrap();
    let (status, uploaded) = hosts[0].upload_plugin(testkit).await;
    assert_eq!(status, 201, "{uploaded}");
    let (status, grants) = hosts[0]
        .call(
            reqwest::Method::PUT,
            "/v1/plugins/testkit/grants",
            Some(json!({"kv": true, "mail": true})),
        )
        .await;
    assert_eq!(status, 200, "{grants}");

    hosts[0]
        .publish(json!({"key": "fanout", "name": "Fan out", "steps": [
            {"id": "fetch", "uses": "testkit@0", "config": {"mode": "effect", "ms": 60}},
            {"id": "left", "uses": "testkit@0", "depends_on": ["fetch"], "config": {"mode": "effect", "ms": 60}},
            {"id": "right", "uses": "testkit@0", "depends_on": ["fetch"], "config": {"mode": "effect", "ms": 60}},
            {"id": "join", "uses": "testkit@0", "depends_on": ["left", "right"], "config": {"mode": "effect", "ms": 60}}
        ]}))
        .await;

    let started = Instant::now();
    let mut ids = Vec::with_capacity(RUNS);
    let mut killed = false;
    for i in 0..RUNS {
        // Through every live host in turn.
        let through = if killed && i % 3 == 1 { 2 } else { i % 3 };
        let (status, run) = hosts[through]
            .post("/v1/runs", json!({"workflow": "fanout", "input": {"i": i}}))
            .await;
        assert_eq!(status, 202, "{run}");
        ids.push(run["id"].as_str().unwrap().to_owned());
        if i == RUNS / 2 {
            // Midway: kill host 1 while it has attempts in flight.
            hosts[1].child.kill().unwrap();
            hosts[1].child.wait().unwrap();
            killed = true;
        }
    }
    // Runs started on the others keep going; restart the dead host later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    hosts[1] = Server::start_with(dirs[1].path(), false, &args);

    let mut interrupted = 0;
    let mut hosts_seen = BTreeMap::<String, usize>::new();
    for (i, id) in ids.iter().enumerate() {
        let run = hosts[i % 3]
            .wait_until(id, Duration::from_secs(180), |r| {
                r["status"] == "completed" || r["status"] == "failed"
            })
            .await;
        assert_eq!(run["status"], "completed", "{run}");
        for step_id in STEPS {
            let s = step(&run, step_id);
            assert_eq!(s["output"]["key"], format!("{id}/{step_id}"), "{run}");
            for attempt in s["attempt_log"].as_array().unwrap() {
                if attempt["status"] == "interrupted" {
                    interrupted += 1;
                }
                *hosts_seen
                    .entry(attempt["host"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
        }
    }
    eprintln!(
        "{RUNS} runs on 3 hosts in {:.1} s; {interrupted} attempts interrupted by the kill; attempts per host: {hosts_seen:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        hosts_seen.len() >= 3,
        "the work was not shared: {hosts_seen:?}"
    );
    assert!(interrupted > 0, "the killed host had nothing in flight");

    // No attempt ran twice: each attempt of a step bumps the step's counter
    // in the key-value store once (an interrupted one may not have got that
    // far), so a step's counter never exceeds its attempts.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let counters: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT key, value FROM kv WHERE key LIKE 'effects/%'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(counters.len(), RUNS * STEPS.len(), "every step counted");
    let mut attempts_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate().step_by(7) {
        let (_, run) = hosts[i % 3].get(&format!("/v1/runs/{id}")).await;
        for step_id in STEPS {
            let n = step(&run, step_id)["attempt_log"].as_array().unwrap().len();
            attempts_of.insert(format!("effects/{id}/{step_id}"), n);
        }
    }
    for (key, value) in &counters {
        let ran: usize = String::from_utf8_lossy(value).parse().unwrap();
        assert!(ran >= 1, "{key} never ran");
        if let Some(attempts) = attempts_of.get(key) {
            assert!(
                ran <= *attempts,
                "{key} ran {ran} times in {attempts} attempts"
            );
        }
    }

    // Exactly one mail per step, whatever the retries and takeovers.
    let outbox: Vec<(String, String)> = sqlx::query_as("SELECT run_id, step_id FROM outbox")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut per_step: BTreeMap<(String, String), usize> = BTreeMap::new();
    for key in outbox {
        *per_step.entry(key).or_default() += 1;
    }
    assert_eq!(
        per_step.len(),
        RUNS * STEPS.len(),
        "every step sent its mail"
    );
    let twice: Vec<_> = per_step.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "side effects ran twice: {twice:?}");

    // Reads agree whichever host answers.
    for id in ids.iter().step_by(10) {
        let views: Vec<Value> = get_from_all(&hosts, &format!("/v1/runs/{id}")).await;
        assert!(views.iter().all(|v| *v == views[0]), "{views:?}");
    }
    let lists: Vec<Value> = get_from_all(&hosts, "/v1/runs?status=completed&limit=100").await;
    assert!(lists.iter().all(|l| *l == lists[0]));
    let events: Vec<Value> = get_from_all(&hosts, "/v1/events?limit=100").await;
    assert!(events.iter().all(|e| *e == events[0]));

    // Grants revoked on host 0 hold on every host at once.
    hosts[0]
        .publish(json!({"key": "probe", "name": "Probe", "steps": [
            {"id": "read", "uses": "testkit@0", "config": {"mode": "kv_get", "key": "k"}}
        ]}))
        .await;
    for host in &hosts {
        assert_eq!(
            host.run_sync("probe", json!({})).await["status"],
            "completed"
        );
    }
    let (status, _) = hosts[0]
        .call(
            reqwest::Method::PUT,
            "/v1/plugins/testkit/grants",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for host in &hosts {
        for _ in 0..3 {
            let run = host.run_sync("probe", json!({})).await;
            assert_eq!(run["status"], "failed", "{run}");
            assert!(run.to_string().contains("access denied"), "{run}");
        }
    }
}

async fn get_from_all(hosts: &[Server], path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for host in hosts {
        let (status, body) = host.get(path).await;
        assert_eq!(status, 200, "{path} on {}: {body}", host.url);
        out.push(body);
    }
    out
}
