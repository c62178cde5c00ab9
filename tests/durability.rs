//! A killed host loses no run: 20 runs of slow steps that send mail through
//! the outbox, SIGKILL while steps are in flight, restart on the same
//! database file; every run completes, every step's mail exists once, and
//! interrupted attempts were retried with the same idempotency key.
//! (Against SQLite, and against Postgres with `WEFT_TEST_BACKEND=postgres`.)

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Server, step};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_a_killed_host() {
    let dir = tempfile::tempdir().unwrap();
    // A short lease so the restarted host takes over the killed one's steps quickly.
    let args = ["--lease-ms", "1500", "--max-parallel", "8"];
    let mut server = Server::start_in(dir.path(), &args);
    server
        .publish(json!({"key": "effects", "name": "Effects", "steps": [
            {"id": "one", "uses": "testkit@0", "config": {"mode": "effect", "ms": 400}},
            {"id": "two", "uses": "testkit@0", "depends_on": ["one"], "config": {"mode": "effect", "ms": 400}},
            {"id": "three", "uses": "testkit@0", "depends_on": ["two"], "config": {"mode": "effect", "ms": 400}}
        ]}))
        .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, run) = server
            .post(
                "/v1/runs",
                json!({"workflow": "effects", "input": {"i": i}}),
            )
            .await;
        assert_eq!(status, 202, "{run}");
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    // Kill while attempts are running.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (_, running) = server.get("/v1/runs?status=running&limit=100").await;
    assert!(
        !running["items"].as_array().unwrap().is_empty(),
        "nothing was in flight at the kill"
    );
    server.kill();

    let server = Server::start_in(dir.path(), &args);
    let mut interrupted = 0;
    for id in &ids {
        let run = server
            .wait_until(id, Duration::from_secs(120), |r| {
                r["status"] == "completed" || r["status"] == "failed"
            })
            .await;
        assert_eq!(run["status"], "completed", "{run}");
        for step_id in ["one", "two", "three"] {
            let s = step(&run, step_id);
            let log = s["attempt_log"].as_array().unwrap();
            interrupted += log.iter().filter(|a| a["status"] == "interrupted").count();
            // Every attempt of a step shares the idempotency key; the output says which it used.
            assert_eq!(s["output"]["key"], format!("{id}/{step_id}"));
        }
    }
    assert!(interrupted > 0, "no attempt was interrupted by the kill");

    // Exactly one message per step in the outbox, whatever the retries.
    let outbox = common::outbox_rows(dir.path()).await;
    let mut per_step: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (run_id, step_id, _) in &outbox {
        *per_step
            .entry((run_id.clone(), step_id.clone()))
            .or_default() += 1;
    }
    assert_eq!(per_step.len(), 60, "every step sent its mail");
    assert!(
        per_step.values().all(|n| *n == 1),
        "a step sent twice: {per_step:?}"
    );
    // And each completed step reports the message id the outbox kept.
    for id in &ids {
        let (_, run) = server.get(&format!("/v1/runs/{id}")).await;
        for step_id in ["one", "two", "three"] {
            let message_id: &Value = &step(&run, step_id)["output"]["message_id"];
            assert!(
                outbox
                    .iter()
                    .any(|(r, s, m)| r == id && s == step_id && message_id == m),
                "{run}"
            );
        }
    }
}

#[tokio::test]
async fn a_second_server_on_the_same_database_is_refused() {
    if common::postgres() {
        // Several hosts sharing Postgres is the point (tests/multihost.rs).
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _first = Server::start_in(dir.path(), &[]);
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("WEFT_ADMIN_KEY", common::ADMIN_KEY)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another weft serve is using"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_in_doubt_after_a_kill_answers_with_the_run_it_created() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    server
        .publish(json!({"key": "slow", "name": "Slow", "steps": [
            {"id": "nap", "uses": "wait", "config": {"duration_ms": 2000}}
        ]}))
        .await;
    let body = json!({"workflow": "slow", "input": {"invoice": 7}, "wait_ms": 30000});
    // The start commits its run, then waits for it: the client is still
    // waiting for an answer when the server dies.
    let start = server
        .req(reqwest::Method::POST, "/v1/runs")
        .header("Idempotency-Key", "invoice-7")
        .json(&body)
        .send();
    let in_doubt = tokio::spawn(start);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, runs) = server.get("/v1/runs?workflow=slow").await;
        if !runs["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    assert!(
        in_doubt.await.unwrap().is_err(),
        "the client got no answer: it cannot know whether the run exists"
    );

    let server = Server::start_in(dir.path(), &[]);
    let (status, retried) = common::send(
        server
            .req(reqwest::Method::POST, "/v1/runs")
            .header("Idempotency-Key", "invoice-7")
            .json(&body),
    )
    .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["status"], "completed", "{retried}");
    let (_, runs) = server.get("/v1/runs?workflow=slow").await;
    let runs = runs["items"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "the retry made no second run: {runs:?}");
    assert_eq!(runs[0]["id"], retried["id"]);
}
