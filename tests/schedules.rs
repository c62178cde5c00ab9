//! Schedules and overlap control through the real binary. The schedule
//! clock is shifted with `--clock-start`, so a test starts the server two
//! seconds before a tick instead of sleeping until it.

use crate::common;

use std::time::Duration;

use common::{Server, shared};
use reqwest::Method;
use serde_json::{Value, json};

async fn runs_of(s: &Server, workflow: &str) -> Vec<Value> {
    let (status, body) = s.get(&format!("/v1/runs?workflow={workflow}")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

async fn wait_for_runs(s: &Server, workflow: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let runs = runs_of(s, workflow).await;
        if runs.len() >= n {
            return runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} runs of {workflow}, have {}",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_schedule_fires_at_local_time_once_per_tick_and_once_after_downtime() {
    let dir = tempfile::tempdir().unwrap();
    // 08:59:58 in Oslo on the day summer time starts.
    let mut s = Server::start_in(dir.path(), &["--clock-start", "2026-03-29T08:59:58+02:00"]);
    s.publish(json!({"key": "sweep", "name": "Sweep",
        "steps": [{"id": "a", "uses": "testkit@0", "config": {"mode": "echo"}}]}))
        .await;
    let (status, schedule) = s
        .post(
            "/v1/schedules",
            json!({"workflow": "sweep", "cron": "0 9 * * *", "timezone": "Europe/Oslo", "input": {"who": "ar"}}),
        )
        .await;
    assert_eq!(status, 201, "{schedule}");
    assert_eq!(schedule["status"], "active");
    assert_eq!(
        schedule["next_run_at"], "2026-03-29T07:00:00.000Z",
        "09:00 CEST"
    );
    let id = schedule["id"].as_str().unwrap().to_owned();

    let runs = wait_for_runs(&s, "sweep", 1).await;
    assert_eq!(runs[0]["schedule_id"], id.as_str());
    assert_eq!(runs[0]["input"], json!({"who": "ar"}));
    let (_, got) = s.get(&format!("/v1/schedules/{id}")).await;
    assert_eq!(got["next_run_at"], "2026-03-30T07:00:00.000Z");
    assert_eq!(got["last_fired_at"], "2026-03-29T07:00:00.000Z");
    assert_eq!(got["recent_fires"].as_array().unwrap().len(), 1, "{got}");
    assert_eq!(got["recent_fires"][0]["run_id"], runs[0]["id"]);

    // Restarted a few seconds later, still on the same day: the tick that
    // already fired does not fire again.
    s.kill();
    let mut s = Server::start_in(dir.path(), &["--clock-start", "2026-03-29T09:00:30+02:00"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(runs_of(&s, "sweep").await.len(), 1);

    // Down for four days: one run, for the latest missed tick.
    s.kill();
    let s = Server::start_in(dir.path(), &["--clock-start", "2026-04-02T12:00:00+02:00"]);
    let runs = wait_for_runs(&s, "sweep", 2).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        runs_of(&s, "sweep").await.len(),
        2,
        "missed ticks fire once"
    );
    let (_, got) = s.get(&format!("/v1/schedules/{id}")).await;
    assert_eq!(got["last_fired_at"], "2026-04-02T07:00:00.000Z", "{got}");
    assert_eq!(got["next_run_at"], "2026-04-03T07:00:00.000Z");
    assert_eq!(got["recent_fires"].as_array().unwrap().len(), 2);
    let (_, events) = s
        .get(&format!(
            "/v1/runs/{}/events",
            runs[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        events["items"][0]["data"]["scheduled_for"], "2026-04-02T07:00:00.000Z",
        "{events}"
    );
}

#[tokio::test]
async fn schedules_are_listed_paused_resumed_and_validated() {
    let s = shared();
    s.publish(json!({"key": "sched-crud", "name": "Sched",
        "input_schema": {"type": "object", "required": ["n"]},
        "steps": [{"id": "a", "uses": "testkit@0", "config": {"mode": "echo"}}]}))
        .await;
    let bad = [
        (
            json!({"workflow": "sched-crud", "cron": "* * *", "input": {"n": 1}}),
            422,
            "3 fields",
        ),
        (
            json!({"workflow": "sched-crud", "cron": "61 * * * *", "input": {"n": 1}}),
            422,
            "minute",
        ),
        (
            json!({"workflow": "sched-crud", "cron": "0 9 * * *", "timezone": "Europe/Atlantis", "input": {"n": 1}}),
            422,
            "IANA",
        ),
        (
            json!({"workflow": "sched-crud", "cron": "0 9 * * *", "input": {}}),
            422,
            "input_schema",
        ),
        (
            json!({"workflow": "no-such", "cron": "0 9 * * *"}),
            404,
            "no-such",
        ),
        (
            json!({"workflow": "sched-crud", "cron": "0 9 * * *", "status": "sleeping", "input": {"n": 1}}),
            422,
            "status",
        ),
        (
            json!({"workflow": "sched-crud", "cron": "0 9 * * *", "every": 5}),
            422,
            "every",
        ),
    ];
    for (body, code, needle) in bad {
        let (status, problem) = s.post("/v1/schedules", body.clone()).await;
        assert_eq!(status, code, "{body} -> {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{body} -> {problem}"
        );
    }

    let (status, created) = s
        .post(
            "/v1/schedules",
            json!({"workflow": "sched-crud", "cron": "*/5 * * * *", "input": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["timezone"], "UTC");
    assert!(created["next_run_at"].is_string());

    let (status, listed) = s.get("/v1/schedules?workflow=sched-crud").await;
    assert_eq!(status, 200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    let path = format!("/v1/schedules/{id}");
    let (status, paused) = s
        .call(Method::PATCH, &path, Some(json!({"status": "paused"})))
        .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["status"], "paused");
    assert!(paused["next_run_at"].is_null());
    let (status, resumed) = s
        .call(
            Method::PATCH,
            &path,
            Some(json!({"status": "active", "cron": "0 12 * * mon-fri", "timezone": "America/New_York"})),
        )
        .await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["cron"], "0 12 * * mon-fri");
    let next = resumed["next_run_at"].as_str().unwrap();
    assert!(
        next.ends_with("T16:00:00.000Z") || next.ends_with("T17:00:00.000Z"),
        "{next}"
    );
    let (status, _) = s
        .call(Method::PATCH, &path, Some(json!({"cron": "nope"})))
        .await;
    assert_eq!(status, 422);

    let (status, _) = s.call(Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    let (status, _) = s.get(&path).await;
    assert_eq!(status, 404);
}

fn sleeper(key: &str, extra: Value) -> Value {
    let mut def = json!({"key": key, "name": key,
        "steps": [{"id": "nap", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 400}}]});
    for (k, v) in extra.as_object().unwrap() {
        def[k] = v.clone();
    }
    def
}

async fn start(s: &Server, workflow: &str) -> (u16, Value) {
    s.post("/v1/runs", json!({"workflow": workflow, "input": {}}))
        .await
}

#[tokio::test]
async fn concurrency_reject_refuses_a_second_run_naming_the_first() {
    let s = shared();
    s.publish(sleeper(
        "overlap-reject",
        json!({"concurrency": {"limit": 1, "on_limit": "reject"}}),
    ))
    .await;
    let (status, first) = start(&s, "overlap-reject").await;
    assert_eq!(status, 202, "{first}");
    let (status, refused) = start(&s, "overlap-reject").await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["type"], "https://weft.dev/problems/run-overlap");
    assert_eq!(refused["run_id"], first["id"]);
    let id = first["id"].as_str().unwrap();
    s.wait_until(id, Duration::from_secs(20), |r| r["status"] == "completed")
        .await;
    let (status, _) = start(&s, "overlap-reject").await;
    assert_eq!(status, 202, "free again once the first ended");
}

#[tokio::test]
async fn concurrency_queue_runs_one_at_a_time_in_start_order() {
    let s = shared();
    s.publish(sleeper(
        "overlap-queue",
        json!({"concurrency": {"limit": 1}}),
    ))
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, run) = start(&s, "overlap-queue").await;
        assert_eq!(status, 202, "{run}");
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    let (_, second) = s.get(&format!("/v1/runs/{}", ids[1])).await;
    assert_eq!(second["status"], "pending");
    assert_eq!(second["queued"], true, "{second}");
    let mut done = Vec::new();
    for id in &ids {
        done.push(
            s.wait_until(id, Duration::from_secs(30), |r| r["status"] == "completed")
                .await,
        );
    }
    for pair in done.windows(2) {
        let ended = pair[0]["ended_at"].as_str().unwrap();
        let started = pair[1]["started_at"].as_str().unwrap();
        assert!(started >= ended, "runs overlapped: {ended} then {started}");
    }
    assert!(done[2].get("queued").is_none(), "{}", done[2]);
}

#[tokio::test]
async fn min_interval_refuses_a_start_too_soon_after_the_last() {
    let s = shared();
    s.publish(sleeper(
        "overlap-interval",
        json!({"min_interval_ms": 60000}),
    ))
    .await;
    let (status, first) = start(&s, "overlap-interval").await;
    assert_eq!(status, 202);
    let (status, refused) = start(&s, "overlap-interval").await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["run_id"], first["id"]);
    assert!(
        refused["detail"].as_str().unwrap().contains("60000 ms"),
        "{refused}"
    );

    let (status, problem) = s
        .post(
            "/v1/workflows",
            sleeper("overlap-bad", json!({"concurrency": {"limit": 0}})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) = s
        .post(
            "/v1/workflows",
            sleeper(
                "overlap-bad2",
                json!({"concurrency": {"limit": 2, "on_limit": "drop"}}),
            ),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
}
