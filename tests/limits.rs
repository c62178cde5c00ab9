//! Per-tenant limits: rate limits answer 429 with Retry-After, and a busy
//! tenant's queue does not hold back another tenant's run.

use crate::common;

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

/// Past `--tenant-max-pending` runs waiting to start, a start is refused
/// with 429, `backlog-full` and Retry-After; once the queue drains, starts
/// are accepted again. Nothing refused was created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_refuses_starts_until_it_drains() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        dir.path(),
        &["--tenant-max-pending", "3", "--max-parallel", "1"],
    );
    s.publish(json!({"key": "slow", "name": "Slow", "steps": [{"id": "nap", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 1500}}]}))
        .await;
    let start = || async {
        let response = s
            .req(reqwest::Method::POST, "/v1/runs")
            .json(&json!({"workflow": "slow", "input": {}}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        let body: Value = response.json().await.unwrap();
        (status, retry_after, body)
    };
    // One running (one slot), three waiting: the fifth start is refused.
    let mut accepted = 0;
    let refused = loop {
        let (status, retry_after, body) = start().await;
        match status {
            202 => accepted += 1,
            429 => break (retry_after, body),
            other => panic!("{other} {body}"),
        }
        assert!(accepted <= 4, "a fifth start was accepted: {body}");
    };
    assert!(accepted >= 3, "refused after {accepted} starts");
    let (retry_after, problem) = refused;
    assert_eq!(problem["type"], "https://weft.dev/problems/backlog-full");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("--tenant-max-pending 3"),
        "{problem}"
    );
    assert!(retry_after.is_some_and(|s| (1..=10).contains(&s)));
    let (_, runs) = s.get("/v1/runs?workflow=slow&limit=100").await;
    assert_eq!(runs["items"].as_array().unwrap().len(), accepted, "{runs}");
    // As runs start, the backlog has room again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = start().await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(Instant::now() < deadline, "never accepted again: {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `--retention`: finished runs are deleted with their steps, attempts and
/// events once they are older than it; a run still under way is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_past_the_retention_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &["--retention", "2s"]);
    s.publish(json!({"key": "brief", "name": "Brief", "steps": [
        {"id": "a", "uses": "testkit@0", "config": {"mode": "echo"}},
        {"id": "b", "uses": "testkit@0", "depends_on": ["a"], "config": {"mode": "echo"}}]}))
        .await;
    s.publish(json!({"key": "asks", "name": "Asks", "steps": [
        {"id": "form", "uses": "collect_inputs", "config": {"schema": {"type": "object"}}}]}))
        .await;
    let mut finished = Vec::new();
    for _ in 0..5 {
        let run = s.run_sync("brief", json!({})).await;
        assert_eq!(run["status"], "completed", "{run}");
        finished.push(run["id"].as_str().unwrap().to_owned());
    }
    let paused = s.run_sync("asks", json!({})).await;
    assert_eq!(paused["status"], "paused", "{paused}");
    let paused = paused["id"].as_str().unwrap().to_owned();

    let deadline = Instant::now() + Duration::from_secs(20);
    for id in &finished {
        loop {
            let (status, body) = s.get(&format!("/v1/runs/{id}")).await;
            if status == 404 {
                break;
            }
            assert_eq!(status, 200, "{body}");
            assert!(Instant::now() < deadline, "run {id} was kept: {body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (status, _) = s.get(&format!("/v1/runs/{id}/events")).await;
        assert_eq!(status, 404, "its events went with it");
    }
    let (_, feed) = s.get("/v1/events?limit=100").await;
    let feed = feed.to_string();
    assert!(
        finished.iter().all(|id| !feed.contains(id.as_str())),
        "the tenant feed no longer holds their events: {feed}"
    );
    let (status, run) = s.get(&format!("/v1/runs/{paused}")).await;
    assert_eq!(status, 200, "a paused run is kept: {run}");
    assert_eq!(run["status"], "paused");
    assert!(metric(&s, "weft_runs_deleted_total").await >= 5.0);
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
    let bytes = common::guests::rust("testkit");
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

/// The server's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// The server's RSS once it has settled: the allocator gives freed pages
/// back lazily, as it goes on working, so requests are made until two
/// readings half a second apart are within 2 MiB (at most 20 s).
async fn settled_rss(s: &Server) -> u64 {
    let pid = s.child.id();
    let mut last = rss_bytes(pid);
    for _ in 0..40 {
        for _ in 0..10 {
            assert_eq!(s.get("/v1/runs").await.0, 200);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rss_bytes(pid);
        if now.abs_diff(last) < 2 << 20 {
            return now;
        }
        last = now;
    }
    last
}

/// A gauge or counter from `/metrics`.
async fn metric(s: &Server, name: &str) -> f64 {
    let text = s.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
}

/// Polls `metric` until `done` holds (at most 20 s).
async fn metric_until(s: &Server, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = metric(s, name).await;
        if done(value) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn address(s: &Server) -> String {
    s.url.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_cost_little_memory_and_leave_the_server_answering() {
    const CONNECTIONS: usize = 2_000;
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let s = Server::start();
    let pid = s.child.id();
    let before = settled_rss(&s).await;

    // A burst of connects at once: the listen backlog must hold them all.
    // Half of them make a request first and keep the connection alive, the
    // other half send nothing.
    let addr = address(&s);
    let burst = || {
        let connects = (0..CONNECTIONS).map(|i| {
            let addr = addr.clone();
            async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut stream = tokio::net::TcpStream::connect(addr).await?;
                if i % 2 == 0 {
                    stream
                        .write_all(b"GET /healthz HTTP/1.1\r\nhost: weft\r\n\r\n")
                        .await?;
                    let mut answer = [0u8; 512];
                    let n = stream.read(&mut answer).await?;
                    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
                }
                Ok::<_, std::io::Error>(stream)
            }
        });
        async {
            futures::future::join_all(connects)
                .await
                .into_iter()
                .collect::<Result<Vec<tokio::net::TcpStream>, _>>()
                .expect("every connect of the burst accepted")
        }
    };
    let idle = burst().await;
    let open = metric_until(&s, "weft_http_connections", |n| n >= CONNECTIONS as f64).await;
    assert!(open >= CONNECTIONS as f64, "{open} connections open");
    let during = rss_bytes(pid);
    // The server still answers on a new connection.
    let health = s
        .client
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    drop(idle);
    let open = metric_until(&s, "weft_http_connections", |n| n <= 2.0).await;
    assert!(
        open <= 2.0,
        "{open} connections still open after the clients closed"
    );
    let after = settled_rss(&s).await;
    // What the connections held: the memory with them less the lower of
    // the readings without them (the allocator may still be giving back
    // start-up memory when the first is taken).
    let per_connection = during.saturating_sub(before.min(after)) / CONNECTIONS as u64;
    eprintln!(
        "RSS {} KiB before, {} KiB with {CONNECTIONS} idle connections, {} KiB after they closed: {per_connection} bytes each",
        before / 1024,
        during / 1024,
        after / 1024,
    );
    assert!(
        per_connection < 64 << 10,
        "{per_connection} bytes of RSS per idle connection"
    );
    if after <= before + (16 << 20) {
        return;
    }
    // The allocator may keep what the connections used, for reuse rather
    // than lost: a second burst then costs (almost) nothing more.
    let idle = burst().await;
    metric_until(&s, "weft_http_connections", |n| n >= CONNECTIONS as f64).await;
    drop(idle);
    metric_until(&s, "weft_http_connections", |n| n <= 2.0).await;
    let again = settled_rss(&s).await;
    assert!(
        again <= after + (16 << 20),
        "RSS {} KiB after a second burst closed, {} KiB after the first, {} KiB before, {} KiB with them",
        again / 1024,
        after / 1024,
        before / 1024,
        during / 1024
    );
}

#[tokio::test]
async fn silent_half_sent_and_idle_connections_are_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        dir.path(),
        &["--header-timeout-secs", "1", "--idle-timeout-secs", "2"],
    );
    let addr = address(&s);
    // Reads until the server closes the connection; what it sent, and when.
    async fn closed_after(mut stream: tokio::net::TcpStream) -> (String, Duration) {
        let started = Instant::now();
        let mut seen = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut seen));
        read.await.expect("the server closes the connection").ok();
        (
            String::from_utf8_lossy(&seen).into_owned(),
            started.elapsed(),
        )
    }

    // Connects and sends nothing.
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Sends half a request's headers, never the blank line.
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nhost: weft\r\nx-slow: ")
        .await
        .unwrap();
    // A whole request, then nothing on the kept-alive connection.
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: weft\r\n\r\n")
        .await
        .unwrap();
    let (silent, half, kept) =
        tokio::join!(closed_after(silent), closed_after(half), closed_after(kept));
    assert!(silent.1 < Duration::from_secs(10), "silent: {:?}", silent.1);
    assert!(half.1 < Duration::from_secs(10), "half-sent: {:?}", half.1);
    assert!(
        kept.0.starts_with("HTTP/1.1 200"),
        "the whole request was answered first: {:?}",
        kept.0
    );
    // An HTTP/1.1 connection kept alive waits for the next request's
    // headers: the header timeout is its idle limit.
    assert!(
        kept.1 >= Duration::from_secs(1) && kept.1 < Duration::from_secs(10),
        "kept alive: {:?}",
        kept.1
    );
}

#[tokio::test]
async fn past_the_connection_limit_a_client_gets_503_with_retry_after() {
    use tokio::io::AsyncReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &["--max-connections", "8"]);
    let addr = address(&s);
    // The test's client keeps one connection in its pool: with it and 7
    // more, every slot is taken.
    assert_eq!(s.get("/v1/runs").await.0, 200);
    let mut held = Vec::new();
    for _ in 0..7 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    metric_until(&s, "weft_http_connections", |n| n >= 8.0).await;
    let mut over = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), over.read_to_string(&mut answer))
        .await
        .expect("refused at once")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("too-many-connections"), "{answer}");

    drop(held);
    // Slots free again once the clients go: a new client is served.
    let fresh = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = fresh.get(format!("{}/healthz", s.url)).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never took a connection again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&s, "weft_http_connections_closed_total{reason=\"limit\"}").await >= 1.0);
}
