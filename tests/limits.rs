//! Per-tenant limits: rate limits answer 429 with Retry-After, and a busy
//! tenant's queue does not hold back another tenant's run.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};

#[tokio::test]
async fn over_a_rate_limit_is_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        dir.path(),
        &["--runs-per-minute", "3", "--rate-limit-per-key", "1000"],
    );
    s.publish(json!({"key": "tick", "name": "Tick", "steps": [{"id": "a", "uses": "testkit@0", "config": {"mode": "echo"}}]}))
        .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let response = s
            .req(reqwest::Method::POST, "/v1/runs")
            .json(&json!({"workflow": "tick", "input": {}}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["type"], "https://weft.dev/problems/rate-limited");
        }
    }
    assert_eq!(statuses, [202, 202, 202, 429, 429]);
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=20).contains(&seconds), "{seconds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_tenant_does_not_hold_back_another() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        dir.path(),
        &["--max-parallel", "8", "--tenant-max-running", "4"],
    );
    s.publish(json!({"key": "slow", "name": "Slow", "steps": [{"id": "a", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 300}}]}))
        .await;
    let (_, tenant) = s.post("/v1/tenants", json!({"name": "quiet"})).await;
    let quiet = tenant["admin_key"].as_str().unwrap().to_owned();
    let as_quiet = |path: &str| {
        s.client
            .post(format!("{}{path}", s.url))
            .bearer_auth(&quiet)
    };
    let create = as_quiet("/v1/workflows")
        .json(&json!({"key": "quick", "name": "Quick", "steps": [{"id": "a", "uses": "testkit@0", "config": {"mode": "echo"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);
    let publish = as_quiet("/v1/workflows/quick/publish")
        .json(&json!({"version": "0.1.0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(publish.status(), 200);

    // The noisy tenant queues 200 slow runs: 15 s of work at its cap of 4.
    for _ in 0..200 {
        let (status, _) = s
            .post("/v1/runs", json!({"workflow": "slow", "input": {}}))
            .await;
        assert_eq!(status, 202);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let response = as_quiet("/v1/runs")
        .json(&json!({"workflow": "quick", "input": {}, "wait_ms": 30000}))
        .send()
        .await
        .unwrap();
    let latency = started.elapsed();
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    eprintln!("quiet tenant's run behind 200 queued runs of a noisy tenant: {latency:?}");
    assert!(
        latency < Duration::from_millis(1500),
        "the quiet tenant waited {latency:?}"
    );

    // The noisy tenant never has more than its cap running.
    let (_, status) = s.get("/metrics").await;
    let _ = status;
    let (_, runs) = s.get("/v1/runs?status=running&limit=100").await;
    assert!(
        runs["items"].as_array().unwrap().len() <= 4,
        "{}",
        runs["items"].as_array().unwrap().len()
    );
}

#[tokio::test]
async fn plugin_storage_has_a_quota_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        dir.path(),
        false,
        &["--tenant-plugin-storage-bytes", "100000"],
    );
    let bytes = std::fs::read(format!("{}/testkit.wasm", env!("WEFT_GUEST_DIR"))).unwrap();
    let (status, problem) = s.upload_plugin(bytes).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["type"], "https://weft.dev/problems/quota-exceeded");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("plugin storage"),
        "{problem}"
    );
}
