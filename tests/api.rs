//! The HTTP API end to end: a real `weft serve` on SQLite, real components
//! built from `plugins/` and the testkit fixture.

use crate::common;

use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Server, shared, step};
use reqwest::Method;
use serde_json::{Value, json};

fn testkit(id: &str, config: Value) -> Value {
    json!({"id": id, "uses": "testkit@0", "config": config})
}

#[tokio::test]
async fn workflow_versions_are_drafted_published_and_immutable() {
    let s = shared();
    let def = json!({"key": "lifecycle", "name": "Lifecycle", "description": "versions", "input_schema": {"type": "object", "required": ["n"]},
        "steps": [testkit("a", json!({"mode": "echo"}))]});
    let (status, created) = s.post("/v1/workflows", def.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["version"], "0.1.0");
    assert_eq!(created["status"], "draft");
    assert_eq!(
        created["definition"]["steps"][0]["plugin"], "testkit@0.1.0",
        "uses is pinned"
    );

    let (status, _) = s.post("/v1/workflows", def.clone()).await;
    assert_eq!(status, 409, "a second create of the same key conflicts");

    let (status, published) = s
        .post(
            "/v1/workflows/lifecycle/publish",
            json!({"version": "0.1.0"}),
        )
        .await;
    assert_eq!(status, 200, "{published}");
    assert_eq!(published["status"], "published");
    let (status, _) = s
        .post(
            "/v1/workflows/lifecycle/publish",
            json!({"version": "0.1.0"}),
        )
        .await;
    assert_eq!(status, 409);

    let mut changed = def.clone();
    changed["name"] = json!("Lifecycle v2");
    changed["steps"] = json!([
        testkit("a", json!({"mode": "echo"})),
        testkit("b", json!({"mode": "echo"}))
    ]);
    let (status, put) = s
        .call(Method::PUT, "/v1/workflows/lifecycle", Some(changed))
        .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["version"], "0.2.0");
    assert_eq!(put["status"], "draft");

    let (_, old) = s.get("/v1/workflows/lifecycle?version=0.1.0").await;
    assert_eq!(
        old["definition"]["steps"].as_array().unwrap().len(),
        1,
        "the published version did not change"
    );
    let (_, published) = s.get("/v1/workflows/lifecycle?version=published").await;
    assert_eq!(published["version"], "0.1.0");
    let (_, latest) = s.get("/v1/workflows/lifecycle").await;
    assert_eq!(latest["version"], "0.2.0");
    let (_, versions) = s.get("/v1/workflows/lifecycle/versions").await;
    let listed: Vec<&str> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["0.2.0", "0.1.0"]);
    let (_, schema) = s.get("/v1/workflows/lifecycle/input-schema").await;
    assert_eq!(schema["required"], json!(["n"]));

    let (status, found) = s.get("/v1/workflows?q=Lifecycle%20v2").await;
    assert_eq!(status, 200);
    assert!(
        found["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["key"] == "lifecycle")
    );

    let (status, archived) = s
        .call(Method::DELETE, "/v1/workflows/lifecycle", None)
        .await;
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived["status"], "archived");
    let (_, listed) = s.get("/v1/workflows?status=archived").await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["key"] == "lifecycle")
    );
    let (status, _) = s
        .post(
            "/v1/runs",
            json!({"workflow": "lifecycle", "input": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 409, "archived workflows start no runs");
    let (status, _) = s.post("/v1/workflows/lifecycle/unarchive", json!({})).await;
    assert_eq!(status, 200);

    let (status, cloned) = s
        .post(
            "/v1/workflows/lifecycle/clone",
            json!({"new_key": "lifecycle-copy"}),
        )
        .await;
    assert_eq!(status, 201, "{cloned}");
    assert_eq!(cloned["version"], "0.1.0");
    assert_eq!(cloned["definition"]["steps"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn invalid_definitions_are_422_naming_the_step() {
    let s = shared();
    let cases = [
        (
            json!([testkit("a", json!({})), {"id": "b", "uses": "testkit@0", "depends_on": ["nope"]}]),
            "b",
            "unknown step \"nope\"",
        ),
        (
            json!([{"id": "a", "uses": "testkit@0", "depends_on": ["b"]}, {"id": "b", "uses": "testkit@0", "depends_on": ["a"]}]),
            "a",
            "cycle",
        ),
        (
            json!([{"id": "a", "uses": "no_such_plugin@1"}]),
            "a",
            "unknown plugin",
        ),
        (
            json!([{"id": "a", "uses": "send_email@7"}]),
            "a",
            "no version of plugin \"send_email\"",
        ),
        (
            json!([{"id": "a", "uses": "send_email@1", "config": {"to": "a@b.co", "subject": 5}}]),
            "a",
            "config",
        ),
        (
            json!([{"id": "a", "uses": "testkit@0", "config": {"x": "{{input.x"}}]),
            "a",
            "config",
        ),
        (
            json!([{"id": "a", "uses": "wait", "config": {}}]),
            "a",
            "duration_ms",
        ),
    ];
    for (i, (steps, step_id, message)) in cases.into_iter().enumerate() {
        let (status, problem) = s
            .post(
                "/v1/workflows",
                json!({"key": format!("invalid{i}"), "name": "x", "steps": steps}),
            )
            .await;
        assert_eq!(status, 422, "case {i}: {problem}");
        assert_eq!(
            problem["type"],
            "https://weft.dev/problems/invalid-definition"
        );
        let errors = problem["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["step"] == step_id && e["message"].as_str().unwrap().contains(message)),
            "case {i}: {problem}"
        );
    }
}

#[tokio::test]
async fn a_dag_runs_in_parallel_with_templates_conditions_and_retries() {
    let s = shared();
    s.publish(json!({
        "key": "dag", "name": "DAG",
        "steps": [
            {"id": "left", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 300}},
            {"id": "right", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 300}},
            {"id": "flaky", "uses": "testkit@0", "config": {"mode": "flaky", "times": 1}, "retry": {"max_attempts": 3, "backoff": {"initial_ms": 10}}},
            {"id": "join", "uses": "testkit@0", "depends_on": ["left", "right", "flaky"],
             "config": {"mode": "echo"}},
            {"id": "skipped", "uses": "testkit@0", "depends_on": ["join"], "if": "{{input.notify}}", "config": {"mode": "echo"}},
            {"id": "after_skip", "uses": "testkit@0", "depends_on": ["skipped"], "config": {"mode": "echo"}},
            {"id": "email", "uses": "send_email@1", "depends_on": ["join"],
             "config": {"to": "{{input.to}}", "subject": "Run {{run.id}}", "body": "Slept {{steps.left.output.slept_ms}} ms"}}
        ]
    }))
    .await;
    let started = Instant::now();
    let run = s
        .run_sync("dag", json!({"to": ["ops@example.com"], "notify": false}))
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "independent steps ran one after the other: {:?}",
        started.elapsed()
    );
    assert_eq!(step(&run, "flaky")["attempts"], 2);
    assert_eq!(
        step(&run, "flaky")["attempt_log"][0]["error_kind"],
        "retryable"
    );
    assert_eq!(step(&run, "skipped")["status"], "skipped");
    assert_eq!(
        step(&run, "after_skip")["status"],
        "skipped",
        "skips propagate"
    );
    assert_eq!(step(&run, "email")["status"], "completed");
    let (_, messages) = s
        .get(&format!("/v1/runs/{}/events", run["id"].as_str().unwrap()))
        .await;
    let kinds: Vec<&str> = messages["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for kind in [
        "run.created",
        "run.started",
        "step.started",
        "step.retrying",
        "step.skipped",
        "step.completed",
        "run.completed",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(
        run["result"]["email"]["message_id"].is_string(),
        "{}",
        run["result"]
    );
    let (status, outbox) = s
        .get(&format!(
            "/v1/outbox?run_id={}",
            run["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        outbox["items"][0]["message_id"],
        run["result"]["email"]["message_id"]
    );
    assert_eq!(outbox["items"][0]["to"], json!(["ops@example.com"]));
    assert_eq!(
        outbox["items"][0]["status"], "queued",
        "no relay is configured"
    );
}

#[tokio::test]
async fn a_failed_step_runs_its_catch_and_can_be_retried_or_overridden() {
    let s = shared();
    s.publish(json!({
        "key": "fulfil", "name": "Fulfil",
        "steps": [
            {"id": "charge", "uses": "testkit@0", "config": {"mode": "echo"}},
            {"id": "ship", "uses": "testkit@0", "depends_on": ["charge"], "config": {"mode": "fail", "kind": "fatal", "message": "no courier"},
             "catch": {"uses": "testkit@0", "config": {"mode": "echo", "refund": "{{failure.error}}"}}},
            {"id": "notify", "uses": "testkit@0", "depends_on": ["ship"], "config": {"mode": "echo"}}
        ]
    }))
    .await;
    let run = s.run_sync("fulfil", json!({"order": 7})).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let run = s
        .wait_until(&id, Duration::from_secs(10), |r| {
            step(r, "ship.catch")["status"] == "completed"
        })
        .await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["step_id"], "ship");
    assert_eq!(run["error"]["kind"], "fatal");
    assert_eq!(step(&run, "notify")["status"], "cancelled");

    // Retrying a step that fails again fails again.
    let (status, _) = s
        .post(&format!("/v1/runs/{id}/resume"), json!({"step_id": "ship"}))
        .await;
    assert_eq!(status, 200);
    let run = s
        .wait_until(&id, Duration::from_secs(10), |r| r["status"] == "failed")
        .await;
    assert_eq!(step(&run, "ship")["attempts"], 2);

    // A manual fix: complete it by hand, and the run goes on.
    let (status, body) = s
        .post(
            &format!("/v1/runs/{id}/resume"),
            json!({"step_id": "ship", "override_output": {"tracking": "T1"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = s
        .wait_until(&id, Duration::from_secs(10), |r| r["status"] == "completed")
        .await;
    assert_eq!(step(&run, "ship")["output"], json!({"tracking": "T1"}));
    assert_eq!(step(&run, "notify")["status"], "completed");

    let (status, problem) = s
        .post(&format!("/v1/runs/{id}/resume"), json!({"step_id": "ship"}))
        .await;
    assert_eq!(status, 409, "{problem}");
}

#[tokio::test]
async fn runs_pause_for_input_and_people_and_resume() {
    let s = shared();
    s.publish(json!({
        "key": "approval", "name": "Approval",
        "steps": [
            {"id": "details", "uses": "collect_inputs", "config": {"schema": {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}}},
            {"id": "approve", "uses": "request_user_action", "depends_on": ["details"], "config": {"actions": ["approve", "decline"], "decline": ["decline"]}},
            {"id": "done", "uses": "testkit@0", "depends_on": ["approve"], "config": {"mode": "echo"}}
        ]
    }))
    .await;
    for (action, final_status) in [("approve", "completed"), ("decline", "declined")] {
        let run = s.run_sync("approval", json!({})).await;
        assert_eq!(run["status"], "paused", "{run}");
        assert_eq!(run["paused_on"], json!(["details"]));
        let id = run["id"].as_str().unwrap();
        let (status, problem) = s
            .post(
                &format!("/v1/runs/{id}/resume"),
                json!({"step_id": "details", "data": {"amount": "lots"}}),
            )
            .await;
        assert_eq!(status, 422, "{problem}");
        let (status, run) = s
            .post(
                &format!("/v1/runs/{id}/resume"),
                json!({"step_id": "details", "data": {"amount": 12.5}}),
            )
            .await;
        assert_eq!(status, 200, "{run}");
        assert_eq!(run["paused_on"], json!(["approve"]));
        let (status, _) = s
            .post(
                &format!("/v1/runs/{id}/resume"),
                json!({"step_id": "approve", "action": "maybe"}),
            )
            .await;
        assert_eq!(status, 422);
        let (status, _) = s
            .post(
                &format!("/v1/runs/{id}/resume"),
                json!({"step_id": "approve", "action": action}),
            )
            .await;
        assert_eq!(status, 200);
        let run = s
            .wait_until(id, Duration::from_secs(10), |r| r["status"] == final_status)
            .await;
        assert_eq!(step(&run, "details")["output"], json!({"amount": 12.5}));
        let (status, _) = s
            .post(
                &format!("/v1/runs/{id}/resume"),
                json!({"step_id": "approve", "action": "approve"}),
            )
            .await;
        assert_eq!(status, 409, "a finished run is not resumable");
    }
}

#[tokio::test]
async fn cancel_lets_attempts_finish_and_terminate_interrupts_them() {
    let s = shared();
    s.publish(json!({"key": "busy", "name": "Busy", "steps": [
        {"id": "spin", "uses": "testkit@0", "config": {"mode": "loop"}},
        {"id": "next", "uses": "testkit@0", "depends_on": ["spin"], "config": {"mode": "echo"}}]}))
        .await;
    s.publish(json!({"key": "slow", "name": "Slow", "steps": [
        {"id": "nap", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 500}},
        {"id": "next", "uses": "testkit@0", "depends_on": ["nap"], "config": {"mode": "echo"}}]}))
        .await;

    let (_, run) = s
        .post("/v1/runs", json!({"workflow": "busy", "input": {}}))
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    s.wait_until(&id, Duration::from_secs(10), |r| {
        step(r, "spin")["status"] == "running"
    })
    .await;
    let asked = Instant::now();
    let (status, run) = s
        .post(
            &format!("/v1/runs/{id}/terminate"),
            json!({"reason": "test"}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "terminated");
    let run = s
        .wait_until(&id, Duration::from_secs(5), |r| {
            step(r, "spin")["status"] == "cancelled"
        })
        .await;
    assert!(
        asked.elapsed() < Duration::from_secs(1) + Duration::from_millis(200),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(step(&run, "next")["status"], "cancelled");
    assert_eq!(
        step(&run, "spin")["attempt_log"][0]["status"],
        "interrupted"
    );

    let (_, run) = s
        .post("/v1/runs", json!({"workflow": "slow", "input": {}}))
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    s.wait_until(&id, Duration::from_secs(10), |r| {
        step(r, "nap")["status"] == "running"
    })
    .await;
    let (status, run) = s.post(&format!("/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "cancelled");
    let run = s
        .wait_until(&id, Duration::from_secs(10), |r| {
            step(r, "nap")["status"] == "completed"
        })
        .await;
    assert_eq!(
        step(&run, "next")["status"],
        "cancelled",
        "nothing new is scheduled after cancel"
    );
    let (status, _) = s.post(&format!("/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn starting_runs_honours_wait_ms_idempotency_and_input_schema() {
    let s = shared();
    s.publish(json!({"key": "nap", "name": "Nap", "input_schema": {"type": "object", "required": ["ms"], "properties": {"ms": {"type": "integer"}}},
        "steps": [{"id": "nap", "uses": "testkit@0", "config": {"mode": "sleep", "ms": "{{input.ms}}"}}]}))
    .await;
    let (status, run) = s
        .post("/v1/runs", json!({"workflow": "nap", "input": {"ms": 10}}))
        .await;
    assert_eq!(status, 202);
    assert!(
        run["status"] == "pending" || run["status"] == "running",
        "{run}"
    );
    let (status, run) = s
        .post(
            "/v1/runs",
            json!({"workflow": "nap", "input": {"ms": 10}, "wait_ms": 5000}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(run["status"], "completed");
    let (status, run) = s
        .post(
            "/v1/runs",
            json!({"workflow": "nap", "input": {"ms": 2000}, "wait_ms": 100}),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let (status, problem) = s
        .post(
            "/v1/runs",
            json!({"workflow": "nap", "input": {"ms": "soon"}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("input_schema"));

    let send = |body: Value| {
        s.req(Method::POST, "/v1/runs")
            .header("Idempotency-Key", "start-once")
            .json(&body)
            .send()
    };
    let first = send(json!({"workflow": "nap", "input": {"ms": 1}}))
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = send(json!({"workflow": "nap", "input": {"ms": 1}}))
        .await
        .unwrap();
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        first["id"], again["id"],
        "the same key and body replay the first response"
    );
    let other = send(json!({"workflow": "nap", "input": {"ms": 2}}))
        .await
        .unwrap();
    assert_eq!(other.status(), 409);
}

/// A run's body is compact unless asked: each attempt's logs and rendered
/// input only with `?view=full` (on `GET /v1/runs/{id}` and on a start
/// with `wait_ms`); an unknown view is a 400 naming it.
#[tokio::test]
async fn attempt_logs_are_in_the_full_view_only() {
    let s = shared();
    s.publish(json!({"key": "talkative", "name": "Talkative",
        "steps": [testkit("say", json!({"mode": "log", "lines": 3}))]}))
        .await;
    let compact = s.run_sync("talkative", json!({})).await;
    assert_eq!(compact["status"], "completed", "{compact}");
    let attempt = &step(&compact, "say")["attempt_log"][0];
    assert_eq!(attempt["status"], "completed", "{attempt}");
    assert!(
        attempt.get("logs").is_none() && attempt.get("input").is_none(),
        "{attempt}"
    );
    let id = compact["id"].as_str().unwrap();

    let (status, full) = s.get(&format!("/v1/runs/{id}?view=full")).await;
    assert_eq!(status, 200, "{full}");
    let attempt = &step(&full, "say")["attempt_log"][0];
    let logs = attempt["logs"].as_array().expect("logs in the full view");
    assert!(
        logs.iter()
            .any(|l| l["message"].as_str().unwrap().starts_with("line 2")),
        "{attempt}"
    );
    assert_eq!(attempt["input"]["mode"], "log", "{attempt}");
    let (status, same) = s.get(&format!("/v1/runs/{id}?view=compact")).await;
    assert_eq!(status, 200);
    assert!(step(&same, "say")["attempt_log"][0].get("logs").is_none());

    let (status, waited) = s
        .post(
            "/v1/runs?view=full",
            json!({"workflow": "talkative", "input": {}, "wait_ms": 30000}),
        )
        .await;
    assert_eq!(status, 200, "{waited}");
    assert!(
        step(&waited, "say")["attempt_log"][0]["logs"].is_array(),
        "{waited}"
    );

    let (status, problem) = s.get(&format!("/v1/runs/{id}?view=everything")).await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("everything"),
        "{problem}"
    );
}

/// A long chain: each step's cost must not grow with the steps before it.
/// Loose, because the tests share the machine: the median time between
/// one step's end and the next's over the last 20 steps is under three
/// times that of the first 20 (at least 1 ms), in the best of three runs.
/// A cost per step that grows with the run's length fails all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_step_chain_costs_the_same_per_step_at_its_end() {
    const STEPS: usize = 200;
    let s = shared();
    let steps: Vec<Value> = (0..STEPS)
        .map(|i| {
            let mut step = testkit(&format!("s{i}"), json!({"mode": "echo"}));
            if i > 0 {
                // A template on the step before, as real chains have.
                step["config"]["after"] = json!(format!("{{{{steps.s{}.status}}}}", i - 1));
                step["depends_on"] = json!([format!("s{}", i - 1)]);
            }
            step
        })
        .collect();
    s.publish(json!({"key": "chain-200", "name": "Chain", "steps": steps}))
        .await;
    let median_gap = |ends: &[i64]| {
        let mut gaps: Vec<i64> = ends.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        gaps[gaps.len() / 2]
    };
    let mut tries = Vec::new();
    for _ in 0..3 {
        let run = s.run_sync("chain-200", json!({})).await;
        assert_eq!(run["status"], "completed", "{run}");
        let ends: Vec<i64> = (0..STEPS)
            .map(|i| {
                let step = step(&run, &format!("s{i}"));
                assert_eq!(step["status"], "completed", "{step}");
                let end = step["ended_at"].as_str().expect("ended_at");
                chrono::DateTime::parse_from_rfc3339(end)
                    .expect("an RFC 3339 time")
                    .timestamp_millis()
            })
            .collect();
        assert!(ends.windows(2).all(|w| w[0] <= w[1]), "in order: {ends:?}");
        let (first, last) = (median_gap(&ends[..21]), median_gap(&ends[STEPS - 21..]));
        if last <= 3 * first.max(1) {
            return;
        }
        tries.push((first, last));
    }
    panic!("the last steps' median cost (ms) is over 3x the first's: {tries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_starts_with_one_key_create_one_run() {
    let s = shared();
    s.publish(json!({"key": "once-only", "name": "Once only",
        "steps": [testkit("nap", json!({"mode": "sleep", "ms": 300}))]}))
        .await;
    let start = || {
        common::send(
            s.req(Method::POST, "/v1/runs")
                .header("Idempotency-Key", "order-42")
                .json(&json!({"workflow": "once-only", "input": {"order": 42}})),
        )
    };
    let answers = futures::future::join_all((0..50).map(|_| start())).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, run)| {
            assert_eq!(*status, 202, "{run}");
            run["id"].as_str().expect("a run id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one run for one key: {ids:?}");
    let (_, runs) = s.get("/v1/runs?workflow=once-only&limit=100").await;
    assert_eq!(runs["items"].as_array().unwrap().len(), 1, "{runs}");

    // The same key with another body is refused, even now.
    let (status, problem) = common::send(
        s.req(Method::POST, "/v1/runs")
            .header("Idempotency-Key", "order-42")
            .json(&json!({"workflow": "once-only", "input": {"order": 43}})),
    )
    .await;
    assert_eq!(status, 409, "{problem}");

    // A retry while the first start waits (wait_ms) answers with the same
    // run, and waits for it the same way.
    let keyed = |wait_ms: u64| {
        common::send(
            s.req(Method::POST, "/v1/runs")
                .header("Idempotency-Key", "order-44")
                .json(
                    &json!({"workflow": "once-only", "input": {"order": 44}, "wait_ms": wait_ms}),
                ),
        )
    };
    let first = keyed(5000);
    let retry = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        keyed(5000).await
    };
    let ((first_status, first), (retry_status, retry)) = tokio::join!(first, retry);
    assert_eq!((first_status, retry_status), (200, 200), "{first} {retry}");
    assert_eq!(first["id"], retry["id"]);
    assert_eq!(retry["status"], "completed", "{retry}");
    let (_, runs) = s.get("/v1/runs?workflow=once-only&limit=100").await;
    assert_eq!(runs["items"].as_array().unwrap().len(), 2, "{runs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_with_one_key_create_once_and_replay_the_answer() {
    let s = shared();
    let create = || {
        common::send(
            s.req(Method::POST, "/v1/workflows")
                .header("Idempotency-Key", "create-keyed-once")
                .json(&json!({"key": "keyed-once", "name": "Keyed once",
                    "steps": [testkit("a", json!({"mode": "echo"}))]})),
        )
    };
    let answers = futures::future::join_all((0..20).map(|_| create())).await;
    for (status, body) in &answers {
        assert_eq!(*status, 201, "every request gets the one answer: {body}");
        assert_eq!(body, &answers[0].1);
    }
    let (_, versions) = s.get("/v1/workflows/keyed-once/versions").await;
    assert_eq!(versions["items"].as_array().unwrap().len(), 1, "{versions}");

    // A failed request frees its key: the same key works once the body is fixed.
    let send = |body: Value| {
        common::send(
            s.req(Method::POST, "/v1/workflows")
                .header("Idempotency-Key", "create-after-a-failure")
                .json(&body),
        )
    };
    let (status, _) = send(json!({"key": "after-a-failure", "name": "Bad", "steps": []})).await;
    assert_eq!(status, 422);
    let (status, created) = send(json!({"key": "after-a-failure", "name": "Good",
        "steps": [testkit("a", json!({"mode": "echo"}))]}))
    .await;
    assert_eq!(status, 201, "{created}");
}

#[tokio::test]
async fn an_idempotency_key_outside_visible_ascii_is_refused_before_any_work() {
    let s = shared();
    for key in ["tab\tinside", "caf\u{e9}", &"k".repeat(256)] {
        let (status, body) = common::send(
            s.req(Method::POST, "/v1/workflows")
                .header(
                    "Idempotency-Key",
                    reqwest::header::HeaderValue::from_bytes(key.as_bytes()).unwrap(),
                )
                .json(&json!({"key": "badly-keyed", "name": "Badly keyed",
                    "steps": [testkit("a", json!({"mode": "echo"}))]})),
        )
        .await;
        assert_eq!(status, 400, "{key:?}: {body}");
    }
    let (status, _) = s.get("/v1/workflows/badly-keyed").await;
    assert_eq!(status, 404, "nothing was created");
    let (status, body) = common::send(
        s.req(Method::POST, "/v1/workflows")
            .header("Idempotency-Key", "spaces are fine inside")
            .json(&json!({"key": "well-keyed", "name": "Well keyed",
                "steps": [testkit("a", json!({"mode": "echo"}))]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_wait_ms_start_whose_run_pauses_answers_200() {
    let s = shared();
    s.publish(json!({"key": "pauses", "name": "Pauses", "steps": [
        {"id": "approve", "uses": "request_user_action", "config": {"actions": ["approve", "decline"]}}
    ]}))
    .await;
    let (status, run) = s
        .post(
            "/v1/runs",
            json!({"workflow": "pauses", "input": {}, "wait_ms": 5000}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "paused");
}

#[tokio::test]
async fn errors_are_problem_documents() {
    let s = shared();
    let raw = |body: &'static str| {
        s.req(Method::POST, "/v1/workflows")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let response = raw("{not json").await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "https://weft.dev/problems/bad-request");
    assert_eq!(problem["status"], 400);

    let big = format!(
        "{{\"key\":\"x\",\"name\":\"{}\",\"steps\":[]}}",
        "a".repeat(2 << 20)
    );
    // Its own connection: the server closes it after refusing the body.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/workflows", s.url))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    let (status, problem) = s
        .post(
            "/v1/workflows",
            json!({"key": "x", "name": "x", "steps": [], "colour": "blue"}),
        )
        .await;
    assert_eq!(status, 422, "unknown fields are refused: {problem}");
    let (status, _) = s.post("/v1/runs", json!({"workflow": 5})).await;
    assert_eq!(status, 422);
    let (status, _) = s.get("/v1/runs/01234567-89ab-7def-8123-456789abcdef").await;
    assert_eq!(status, 404);
    let (status, _) = s.get("/v1/workflows/nothing-here").await;
    assert_eq!(status, 404);
    let (status, _) = s.get("/v1/no/such/path").await;
    assert_eq!(status, 404);
    let (status, _) = s.get("/v1/runs?limit=1000").await;
    assert_eq!(status, 400);

    let response = s
        .client
        .get(format!("{}/v1/runs", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = s
        .client
        .get(format!("{}/v1/runs", s.url))
        .bearer_auth("wft_live_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = s
        .client
        .get(format!("{}/v1/runs", s.url))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Random and mutated JSON at every POST endpoint never gets a 500.
#[tokio::test]
async fn random_json_never_makes_the_server_fail() {
    let s = shared();
    s.publish(
        json!({"key": "fuzz", "name": "Fuzz", "steps": [testkit("a", json!({"mode": "echo"}))]}),
    )
    .await;
    let (_, run) = s
        .post("/v1/runs", json!({"workflow": "fuzz", "input": {}}))
        .await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let endpoints = [
        "/v1/workflows".to_owned(),
        "/v1/runs".to_owned(),
        "/v1/workflows/fuzz/publish".to_owned(),
        "/v1/workflows/fuzz/clone".to_owned(),
        "/v1/workflows/fuzz/unarchive".to_owned(),
        format!("/v1/runs/{run_id}/resume"),
        format!("/v1/runs/{run_id}/cancel"),
        format!("/v1/runs/{run_id}/terminate"),
        "/v1/schedules".to_owned(),
        "/v1/webhooks".to_owned(),
        "/v1/notifications/x/read".to_owned(),
        "/v1/webhooks/wh_x/deliveries/msg_x/redeliver".to_owned(),
    ];
    let seeds = [
        json!({"workflow": "fuzz", "cron": "*/5 * * * *", "timezone": "Europe/Oslo", "input": {}}),
        json!({"url": "http://127.0.0.1:9/hook", "events": ["run.completed"], "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
        json!({"key": "k", "name": "n", "steps": [{"id": "a", "uses": "testkit@0"}]}),
        json!({"workflow": "fuzz", "input": {}, "wait_ms": 10}),
        json!({"version": "0.1.0"}),
        json!({"new_key": "fuzz2"}),
        json!({"step_id": "a", "data": {}, "action": "x"}),
    ];
    let mut rng_state: u64 = 0x5eed;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let atoms = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1e308),
        json!("{{input.x"),
        json!(""),
        json!([]),
        json!({}),
        json!("a".repeat(300)),
        json!(18446744073709551616u128 as f64),
        json!("61 25 32 13 8"),
        json!(["*"]),
        json!("whsec_"),
    ];
    for round in 0..300 {
        let mut body = seeds[(next() % seeds.len() as u64) as usize].clone();
        if let Some(map) = body.as_object_mut() {
            let keys: Vec<String> = map.keys().cloned().collect();
            for _ in 0..(next() % 3) {
                let key = &keys[(next() % keys.len() as u64) as usize];
                map.insert(
                    key.clone(),
                    atoms[(next() % atoms.len() as u64) as usize].clone(),
                );
            }
            if next() % 5 == 0 {
                map.insert("extra".into(), json!(1));
            }
        }
        if next() % 7 == 0 {
            body = atoms[(next() % atoms.len() as u64) as usize].clone();
        }
        let endpoint = &endpoints[(next() % endpoints.len() as u64) as usize];
        let (status, answer) = s.post(endpoint, body.clone()).await;
        assert!(
            status < 500,
            "round {round}: POST {endpoint} {body} → {status} {answer}"
        );
    }
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document() {
    let s = shared();
    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/v1/workflows", "post"),
        ("/v1/workflows", "get"),
        ("/v1/workflows/{key}", "get"),
        ("/v1/workflows/{key}", "put"),
        ("/v1/workflows/{key}", "delete"),
        ("/v1/workflows/{key}/versions", "get"),
        ("/v1/workflows/{key}/publish", "post"),
        ("/v1/workflows/{key}/unarchive", "post"),
        ("/v1/workflows/{key}/clone", "post"),
        ("/v1/workflows/{key}/input-schema", "get"),
        ("/v1/runs", "post"),
        ("/v1/runs", "get"),
        ("/v1/runs/{id}", "get"),
        ("/v1/runs/{id}/status", "get"),
        ("/v1/runs/{id}/events", "get"),
        ("/v1/runs/{id}/steps/{step_id}/items", "get"),
        ("/v1/events", "get"),
        ("/v1/me", "get"),
        ("/v1/runs/{id}/cancel", "post"),
        ("/v1/runs/{id}/terminate", "post"),
        ("/v1/runs/{id}/resume", "post"),
        ("/v1/runs/{id}/rerun", "post"),
        ("/v1/runs/{id}/pause", "post"),
        ("/v1/runs/{id}/unpause", "post"),
        ("/v1/runs:retry-failed", "post"),
        ("/v1/workflows/{key}/presets", "get"),
        ("/v1/workflows/{key}/presets/{name}", "get"),
        ("/v1/workflows/{key}/presets/{name}", "put"),
        ("/v1/workflows/{key}/presets/{name}", "delete"),
        ("/v1/plugins", "get"),
        ("/v1/plugins/{name}", "get"),
        ("/v1/plugins/{name}/{version}", "get"),
        ("/v1/plugins", "post"),
        ("/v1/plugins/{name}/{version}", "delete"),
        ("/v1/plugins/{name}/{version}", "patch"),
        ("/v1/plugins/{name}/grants", "get"),
        ("/v1/plugins/{name}/grants", "put"),
        ("/v1/tenants", "post"),
        ("/v1/tenants", "get"),
        ("/v1/api-keys", "post"),
        ("/v1/api-keys", "get"),
        ("/v1/api-keys/{id}", "delete"),
        ("/v1/secrets", "get"),
        ("/v1/secrets/{name}", "put"),
        ("/v1/secrets/{name}", "delete"),
        ("/v1/files", "post"),
        ("/v1/files/{id}", "get"),
        ("/v1/tenant/jwt-secret", "post"),
        ("/v1/outbox", "get"),
        ("/v1/outbox/{id}/retry", "post"),
        ("/v1/notifications", "get"),
        ("/v1/notifications/{id}/read", "post"),
        ("/v1/kv/{bucket}", "get"),
        ("/v1/kv/{bucket}/{key}", "get"),
        ("/v1/kv/{bucket}/{key}", "put"),
        ("/v1/kv/{bucket}/{key}", "delete"),
        ("/v1/schedules", "post"),
        ("/v1/schedules", "get"),
        ("/v1/schedules/{id}", "get"),
        ("/v1/schedules/{id}", "patch"),
        ("/v1/schedules/{id}", "delete"),
        ("/v1/webhooks", "post"),
        ("/v1/webhooks", "get"),
        ("/v1/webhooks/{id}", "get"),
        ("/v1/webhooks/{id}", "patch"),
        ("/v1/webhooks/{id}", "delete"),
        ("/v1/webhooks/{id}/deliveries", "get"),
        (
            "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            "post",
        ),
        ("/v1/tasks", "get"),
        ("/v1/tasks/{id}", "get"),
        ("/v1/tasks/{id}/remind", "post"),
        ("/v1/tasks/{id}/reassign", "post"),
        ("/v1/tasks/{id}/revoke", "post"),
        ("/v1/action-catalog", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from /openapi.json"
        );
        // And the route answers something other than the fallback 404 page.
        let concrete = path
            .replace("{key}", "lifecycle")
            .replace("{id}", "x")
            .replace("{name}", "send_email")
            .replace("{bucket}", "default")
            .replace("{delivery_id}", "x")
            .replace("{step_id}", "x")
            .replace("{version}", "1.0.0");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = s.req(m, &concrete).send().await.unwrap();
        if response.status() == 404 {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(
                body["detail"], "this path not found",
                "{method} {path} is not routed"
            );
        }
    }
    assert_eq!(
        paths.len(),
        expected
            .iter()
            .map(|(p, _)| p)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        "undocumented extra paths: {:?}",
        paths.keys()
    );
}

/// Whether a JSON Schema (resolved against `doc`) admits `null`.
fn accepts_null(doc: &Value, schema: &Value) -> bool {
    if let Some(target) = schema["$ref"].as_str() {
        let name = target.rsplit('/').next().unwrap();
        return accepts_null(doc, &doc["components"]["schemas"][name]);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            return options.iter().any(|o| accepts_null(doc, o));
        }
    }
    match &schema["type"] {
        Value::Null => true,
        Value::String(t) => t == "null",
        Value::Array(types) => types.iter().any(|t| t == "null"),
        _ => false,
    }
}

/// The type names a schema allows (`type` as a string or a list).
fn types_of(schema: &Value) -> Vec<String> {
    match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(types) => types
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn openapi_document_describes_what_clients_receive() {
    let s = shared();
    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200);
    let open = ["/healthz", "/readyz", "/metrics"];
    let mut operations = 0;
    let mut operation_ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let at = format!("{method} {path}");
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{at} has no operationId"));
            assert!(
                operation_ids.insert(id.to_owned()),
                "{at}: operationId {id} is not unique"
            );
            // Parameters sit where they are read: a path parameter is in
            // the template, and every `{name}` of the template is one.
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: Vec<&str> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            for name in &in_path {
                assert!(
                    path.contains(&format!("{{{name}}}")),
                    "{at}: `{name}` is declared in: path"
                );
            }
            for segment in path.split('/').filter(|p| p.starts_with('{')) {
                let name = segment.trim_matches(['{', '}']);
                assert!(in_path.contains(&name), "{at}: `{name}` is not declared");
            }
            for p in &params {
                if p["name"] == "limit" {
                    assert_eq!(p["in"], "query", "{at}");
                    assert_eq!(p["required"], false, "{at}");
                    assert_eq!(
                        (
                            p["schema"]["minimum"].as_f64(),
                            p["schema"]["maximum"].as_f64()
                        ),
                        (Some(1.0), Some(100.0)),
                        "{at}"
                    );
                }
            }
            // Problems are problem+json, and every authenticated operation
            // documents the 401, 403 and 429 the key check can give.
            let responses = op["responses"].as_object().unwrap();
            for (code, response) in responses {
                let content = response["content"].as_object().cloned().unwrap_or_default();
                if (code.starts_with('4') || code.starts_with('5')) && !content.is_empty() {
                    assert!(
                        content.keys().all(|c| c == "application/problem+json"),
                        "{at} {code}: {content:?}"
                    );
                }
            }
            if !open.contains(&path.as_str()) {
                for code in ["401", "403", "429"] {
                    assert_eq!(
                        responses[code]["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/ProblemDoc",
                        "{at} {code}"
                    );
                }
            }
            if !in_path.is_empty() {
                assert!(responses.contains_key("404"), "{at} documents no 404");
            }
            if op["requestBody"]["content"]["application/json"].is_object() {
                assert!(responses.contains_key("422"), "{at} documents no 422");
            }
        }
    }
    assert!(operations >= 62, "{operations} operations");

    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    // Every reference resolves.
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            schema(name).is_object(),
            "#/components/schemas/{name} is missing"
        );
    }
    // Fields that hold any JSON, or null, are not typed `object`.
    for (owner, field) in [
        ("RunOut", "input"),
        ("RunOut", "result"),
        ("RunOut", "error"),
        ("RunOut", "ended_at"),
        ("StepOut", "output"),
        ("StepOut", "error"),
        ("StepOut", "started_at"),
        ("AttemptOut", "input"),
        ("AttemptOut", "logs"),
        ("AttemptOut", "error"),
        ("EventOut", "data"),
        ("EventOut", "step_id"),
    ] {
        let property = &schema(owner)["properties"][field];
        assert!(property.is_object(), "{owner}.{field} is missing");
        assert!(
            accepts_null(&doc, property),
            "{owner}.{field} cannot be null: {property}"
        );
    }
    // An array is typed as one.
    let logs = &schema("AttemptOut")["properties"]["logs"];
    assert!(types_of(logs).contains(&"array".to_owned()), "{logs}");
    assert_eq!(logs["items"]["$ref"], "#/components/schemas/LogLineOut");
    // `if` is an expression or a constant, not an object.
    let condition = &schema("StepDoc")["properties"]["if"];
    let shapes: Vec<String> = condition["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{condition}"))
        .iter()
        .flat_map(|o| {
            let resolved = match o["$ref"].as_str() {
                Some(r) => schema(r.rsplit('/').next().unwrap()),
                None => o.clone(),
            };
            match resolved["oneOf"].as_array() {
                Some(inner) => inner.iter().flat_map(types_of).collect(),
                None => types_of(&resolved),
            }
        })
        .collect();
    assert!(
        shapes.contains(&"string".to_owned()) && shapes.contains(&"boolean".to_owned()),
        "{condition}"
    );
    // Constraints the server enforces.
    assert_eq!(
        schema("StartRun")["properties"]["wait_ms"]["maximum"],
        60000
    );
    assert_eq!(schema("StartRun")["additionalProperties"], false);
    // Multipart bodies have a schema naming their fields.
    for (path, field) in [
        ("/v1/files", "file"),
        ("/v1/plugins", "component"),
        ("/v1/runs", "attachment"),
    ] {
        let form = &doc["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
            ["$ref"];
        let name = form
            .as_str()
            .unwrap_or_else(|| panic!("POST {path} has no multipart schema"));
        let properties = &schema(name.rsplit('/').next().unwrap())["properties"];
        assert_eq!(properties[field]["format"], "binary", "POST {path}");
    }

    // What the document calls an integer, the server takes as one: 936.0.
    s.publish(
        json!({"key": "integral", "name": "Integral", "max_duration_ms": 60000.0,
        "steps": [testkit("a", json!({"mode": "echo"}))]}),
    )
    .await;
    let (status, run) = s
        .post(
            "/v1/runs",
            json!({"workflow": "integral", "input": {"n": 1.0}, "wait_ms": 936.0}),
        )
        .await;
    assert!(status == 200 || status == 202, "{status} {run}");
    let (status, _) = s
        .post(
            "/v1/runs",
            json!({"workflow": "integral", "wait_ms": 936.5}),
        )
        .await;
    assert_eq!(status, 422, "a fraction is not an integer");
    // And a run read back matches the document's nullable fields.
    let (_, read) = s
        .get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
        .await;
    assert_eq!(read["input"], json!({"n": 1.0}), "input is kept as sent");
}

/// Progress a plugin reports is in its run's events, each report at the
/// time it was made, between the step's start and its result, for steps
/// running side by side and one after the other.
#[tokio::test]
async fn a_steps_progress_lands_between_its_start_and_its_result() {
    let s = shared();
    let nap = |id: &str, after: &[&str]| {
        let mut step = testkit(id, json!({"mode": "sleep", "ms": 60}));
        step["depends_on"] = json!(after);
        step
    };
    s.publish(json!({"key": "progress_order", "name": "Progress order", "steps": [
        nap("a", &[]), nap("b", &[]), nap("c", &[]), nap("d", &["a", "b", "c"]), nap("e", &["d"])
    ]}))
    .await;
    for _ in 0..3 {
        let run = s.run_sync("progress_order", json!({})).await;
        assert_eq!(run["status"], "completed", "{run}");
        let (status, events) = s
            .get(&format!("/v1/runs/{}/events", run["id"].as_str().unwrap()))
            .await;
        assert_eq!(status, 200, "{events}");
        let items = events["items"].as_array().unwrap();
        for id in ["a", "b", "c", "d", "e"] {
            let of_step: Vec<&Value> = items.iter().filter(|e| e["step_id"] == id).collect();
            let kinds: Vec<&str> = of_step
                .iter()
                .map(|e| e["type"].as_str().unwrap())
                .collect();
            assert_eq!(
                kinds,
                [
                    "step.started",
                    "step.progress",
                    "step.progress",
                    "step.completed"
                ],
                "step {id}: {events}"
            );
            assert_eq!(of_step[1]["data"]["percent"], 10, "{events}");
            assert_eq!(of_step[2]["data"]["percent"], 100, "{events}");
            // Reported as the plugin began and ended its 60 ms nap.
            let at = |e: &Value| {
                chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap())
                    .unwrap()
                    .timestamp_millis()
            };
            let slept = at(of_step[2]) - at(of_step[1]);
            assert!(
                (55..5_000).contains(&slept),
                "step {id} slept {slept} ms: {events}"
            );
        }
    }
}

#[tokio::test]
async fn events_stream_live_and_metrics_count() {
    let s = shared();
    s.publish(json!({"key": "stream", "name": "Stream", "steps": [
        {"id": "a", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 200}},
        {"id": "b", "uses": "testkit@0", "depends_on": ["a"], "config": {"mode": "echo"}}]}))
        .await;
    let (_, run) = s
        .post("/v1/runs", json!({"workflow": "stream", "input": {}}))
        .await;
    let id = run["id"].as_str().unwrap();
    let response = s
        .req(Method::GET, &format!("/v1/runs/{id}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("the stream ends with the run")
        .unwrap();
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds.first(), Some(&"run.created"), "{text}");
    assert_eq!(kinds.last(), Some(&"run.completed"), "{text}");

    let (status, status_body) = s.get(&format!("/v1/runs/{id}/status")).await;
    assert_eq!(status, 200);
    assert_eq!(
        status_body,
        json!({"id": id, "status": "completed", "current_steps": []})
    );

    let metrics = s.metrics().await;
    for needle in [
        "weft_runs{status=\"completed\"}",
        "weft_step_attempts_total{outcome=\"completed\"}",
        "weft_attempt_duration_seconds_bucket",
        "weft_queue_depth",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    let (status, _) = s.get("/readyz").await;
    assert_eq!(status, 200);
}

/// `GET /v1/events` pages every run's events of the caller's tenant and
/// streams new ones live; `GET /v1/me` names the caller's tenant and scopes.
#[tokio::test]
async fn the_tenant_event_feed_pages_and_streams_only_this_tenants_runs() {
    let s = shared();
    let (_, tenant) = s.post("/v1/tenants", json!({"name": "feed-other"})).await;
    let other = tenant["admin_key"].as_str().unwrap().to_owned();

    let (status, me) = s.call_as(&other, Method::GET, "/v1/me", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["tenant_name"], "feed-other");
    assert_eq!(me["scopes"], json!(["admin"]));
    assert_eq!(me["operator"], false);
    let (status, me) = s.get("/v1/me").await;
    assert_eq!(status, 200);
    assert_eq!(
        (me["tenant_name"].as_str(), me["operator"].as_bool()),
        (Some("default"), Some(true))
    );

    // The other tenant opens its live feed before anything happens in it.
    let stream = s
        .client
        .get(format!("{}/v1/events", s.url))
        .bearer_auth(&other)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut stream = stream.bytes_stream();

    s.publish(
        json!({"key": "feed", "name": "Feed", "steps": [testkit("a", json!({"mode": "echo"}))]}),
    )
    .await;
    let (_, run) = s
        .post(
            "/v1/runs",
            json!({"workflow": "feed", "input": {}, "wait_ms": 5000}),
        )
        .await;
    let id = run["id"].as_str().unwrap();
    // Paged as JSON from the start, with workflow and run status.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = s.get(&format!("/v1/events?limit=5{cursor}")).await;
        assert_eq!(status, 200, "{page}");
        for e in page["items"].as_array().unwrap() {
            if e["run_id"] == id {
                assert_eq!(e["workflow"], "feed");
                assert_eq!(e["run_status"], "completed");
                seen.push(e["type"].as_str().unwrap().to_owned());
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("run.created"));
    assert_eq!(seen.last().map(String::as_str), Some("run.completed"));

    // The other tenant's feed saw none of it, and does see its own run.
    let (status, other_feed) = s.call_as(&other, Method::GET, "/v1/events", None).await;
    assert_eq!(status, 200, "{other_feed}");
    assert_eq!(other_feed["items"], json!([]));
    let (status, published) = s
        .call_as(
            &other,
            Method::POST,
            "/v1/workflows",
            Some(json!({"key": "mine", "name": "Mine", "steps": [testkit("a", json!({"mode": "echo"}))]})),
        )
        .await;
    assert_eq!(status, 201, "{published}");
    let (status, started) = s
        .call_as(
            &other,
            Method::POST,
            "/v1/runs",
            Some(json!({"workflow": "mine", "version": "0.1.0", "input": {}})),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let mine = started["id"].as_str().expect("started").to_owned();
    let mut text = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        use futures::StreamExt as _;
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.contains("event: run.completed") {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the live feed did not deliver run.completed: {text}"
    );
    assert!(text.contains(&mine), "{text}");
    assert!(
        !text.contains(id),
        "another tenant's run leaked into the feed: {text}"
    );
}

#[tokio::test]
async fn the_first_start_prints_and_writes_an_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--stop-on-stdin-eof",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("WEFT_ADMIN_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = None;
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(key) = line.trim().strip_prefix("wft_live_") {
            printed = Some(format!("wft_live_{key}"));
        }
        if let Some(u) = line.strip_prefix("weft listening on ") {
            url = Some(u.to_owned());
            break;
        }
    }
    let key = printed.expect("the key is printed");
    let written = std::fs::read_to_string(dir.path().join("admin-key")).unwrap();
    assert_eq!(written.trim(), key);
    let response = reqwest::Client::new()
        .get(format!("{}/v1/runs", url.unwrap()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
    let _ = Server::start; // the helper is shared with the other tests
}

#[tokio::test]
async fn step_timeouts_run_deadlines_and_timers() {
    let s = shared();
    s.publish(json!({"key": "timers", "name": "Timers", "steps": [
        {"id": "pause", "uses": "wait", "config": {"duration_ms": 300}},
        {"id": "after", "uses": "testkit@0", "depends_on": ["pause"], "config": {"mode": "echo"}}]}))
    .await;
    let started = Instant::now();
    let run = s.run_sync("timers", json!({})).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(step(&run, "pause")["output"]["waited_until"].is_string());

    s.publish(
        json!({"key": "step-timeout", "name": "Step timeout", "steps": [
        {"id": "spin", "uses": "testkit@0", "timeout_ms": 300, "config": {"mode": "loop"}}]}),
    )
    .await;
    let run = s.run_sync("step-timeout", json!({})).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(step(&run, "spin")["error"]["kind"], "timeout");

    s.publish(
        json!({"key": "deadline", "name": "Deadline", "max_duration_ms": 500, "steps": [
        {"id": "nap", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 10000}}]}),
    )
    .await;
    let started = Instant::now();
    let run = s.run_sync("deadline", json!({})).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["kind"], "max_duration");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let id = run["id"].as_str().unwrap();
    let run = s
        .wait_until(id, Duration::from_secs(5), |r| {
            step(r, "nap")["status"] == "cancelled"
        })
        .await;
    assert_eq!(step(&run, "nap")["attempt_log"][0]["status"], "interrupted");
}

#[tokio::test]
async fn tenants_and_keys_are_managed_by_the_right_keys() {
    let s = shared();
    let (status, tenant) = s.post("/v1/tenants", json!({"name": "acme-keys"})).await;
    assert_eq!(status, 201, "{tenant}");
    let acme_admin = tenant["admin_key"].as_str().unwrap().to_owned();
    assert!(acme_admin.starts_with("wft_live_"));
    let (status, _) = s.post("/v1/tenants", json!({"name": "acme-keys"})).await;
    assert_eq!(status, 409);

    let as_key = |key: &str, method: Method, path: &str| {
        s.client
            .request(method, format!("{}{path}", s.url))
            .bearer_auth(key.to_owned())
    };
    // A tenant admin is not the operator.
    let response = as_key(&acme_admin, Method::GET, "/v1/tenants")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // It creates a narrow key, shown once.
    let response = as_key(&acme_admin, Method::POST, "/v1/api-keys")
        .json(&json!({"name": "reader", "scopes": ["runs:read"], "test": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let reader = created["key"].as_str().unwrap().to_owned();
    assert!(reader.starts_with("wft_test_"));
    let response = as_key(&reader, Method::GET, "/v1/runs")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = as_key(&reader, Method::POST, "/v1/workflows")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "a key without workflows:write");
    let listed: Value = as_key(&acme_admin, Method::GET, "/v1/api-keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key").is_none()),
        "keys are never listed: {listed}"
    );
    let response = as_key(&acme_admin, Method::POST, "/v1/api-keys")
        .json(&json!({"name": "bad", "scopes": ["everything"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);

    // Another tenant's things are 404, not 403.
    s.publish(json!({"key": "private-flow", "name": "Private", "steps": [testkit("a", json!({"mode": "echo"}))]})).await;
    let (_, run) = s
        .post("/v1/runs", json!({"workflow": "private-flow", "input": {}}))
        .await;
    let response = as_key(
        &acme_admin,
        Method::GET,
        &format!("/v1/runs/{}", run["id"].as_str().unwrap()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 404);
    let response = as_key(&acme_admin, Method::GET, "/v1/workflows/private-flow")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // Revocation takes effect at once.
    let id = created["id"].as_str().unwrap();
    let response = as_key(&acme_admin, Method::DELETE, &format!("/v1/api-keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = as_key(&reader, Method::GET, "/v1/runs")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn secrets_are_write_only_and_encrypted_at_rest() {
    let s = shared();
    let (status, body) = s
        .call(
            Method::PUT,
            "/v1/secrets/SMTP_PASSWORD",
            Some(json!({"value": "hunter2-plaintext"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "SMTP_PASSWORD");
    assert!(body.get("value").is_none());
    let (status, listed) = s.get("/v1/secrets").await;
    assert_eq!(status, 200);
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "SMTP_PASSWORD")
    );
    assert!(
        !listed.to_string().contains("hunter2"),
        "a value leaked: {listed}"
    );
    let (status, _) = s
        .call(
            Method::PUT,
            "/v1/secrets/bad%20name",
            Some(json!({"value": "x"})),
        )
        .await;
    assert_eq!(status, 422);

    let stored: Vec<Vec<u8>> = if common::postgres() {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&common::database_url(&s.data_dir))
            .await
            .unwrap();
        // Every stored column of every secret, as raw bytes.
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT name, sealed FROM secrets")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(!rows.is_empty());
        rows.into_iter()
            .flat_map(|(name, sealed)| [name.into_bytes(), sealed])
            .collect()
    } else {
        vec![
            std::fs::read(s.data_dir.join("weft.db")).unwrap(),
            std::fs::read(s.data_dir.join("weft.db-wal")).unwrap_or_default(),
        ]
    };
    for bytes in &stored {
        assert!(
            !bytes.windows(17).any(|w| w == b"hunter2-plaintext"),
            "the secret is stored in clear"
        );
    }

    let (_, tenant) = s
        .post("/v1/tenants", json!({"name": "other-secrets"}))
        .await;
    let other = tenant["admin_key"].as_str().unwrap();
    let listed: Value = s
        .client
        .get(format!("{}/v1/secrets", s.url))
        .bearer_auth(other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"], json!([]), "another tenant sees no names");
    let response = s
        .client
        .delete(format!("{}/v1/secrets/SMTP_PASSWORD", s.url))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let (status, _) = s
        .call(Method::DELETE, "/v1/secrets/SMTP_PASSWORD", None)
        .await;
    assert_eq!(status, 204);
}

/// Every route refuses a key without its scope (403) and hides another
/// tenant's resources (404).
#[tokio::test]
async fn every_route_checks_its_scope_and_tenant() {
    let s = shared();
    s.publish(json!({"key": "scoped", "name": "Scoped", "steps": [testkit("a", json!({"mode": "echo"}))]})).await;
    let (_, run) = s
        .post(
            "/v1/runs",
            json!({"workflow": "scoped", "input": {}, "wait_ms": 5000}),
        )
        .await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let (_, tenant) = s.post("/v1/tenants", json!({"name": "scope-walker"})).await;
    let other_admin = tenant["admin_key"].as_str().unwrap().to_owned();

    let key_with = |scope: &'static str| {
        let s = &s;
        async move {
            let (status, key) = s
                .post(
                    "/v1/api-keys",
                    json!({"name": format!("only {scope}"), "scopes": [scope]}),
                )
                .await;
            assert_eq!(status, 201, "{key}");
            key["key"].as_str().unwrap().to_owned()
        }
    };
    let routes: Vec<(Method, String, &str, Option<Value>)> = vec![
        (
            Method::POST,
            "/v1/workflows".into(),
            "workflows:write",
            Some(json!({})),
        ),
        (Method::GET, "/v1/workflows".into(), "workflows:read", None),
        (
            Method::GET,
            "/v1/workflows/scoped".into(),
            "workflows:read",
            None,
        ),
        (
            Method::PUT,
            "/v1/workflows/scoped".into(),
            "workflows:write",
            Some(json!({})),
        ),
        (
            Method::DELETE,
            "/v1/workflows/scoped".into(),
            "workflows:write",
            None,
        ),
        (
            Method::GET,
            "/v1/workflows/scoped/versions".into(),
            "workflows:read",
            None,
        ),
        (
            Method::POST,
            "/v1/workflows/scoped/publish".into(),
            "workflows:write",
            Some(json!({"version": "0.1.0"})),
        ),
        (
            Method::POST,
            "/v1/workflows/scoped/unarchive".into(),
            "workflows:write",
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/workflows/scoped/clone".into(),
            "workflows:write",
            Some(json!({"new_key": "scoped2"})),
        ),
        (
            Method::GET,
            "/v1/workflows/scoped/input-schema".into(),
            "workflows:read",
            None,
        ),
        (
            Method::POST,
            "/v1/runs".into(),
            "runs:start",
            Some(json!({"workflow": "scoped"})),
        ),
        (Method::GET, "/v1/runs".into(), "runs:read", None),
        (Method::GET, format!("/v1/runs/{run_id}"), "runs:read", None),
        (
            Method::GET,
            format!("/v1/runs/{run_id}/status"),
            "runs:read",
            None,
        ),
        (
            Method::GET,
            format!("/v1/runs/{run_id}/events"),
            "runs:read",
            None,
        ),
        (Method::GET, "/v1/events".into(), "runs:read", None),
        (
            Method::POST,
            format!("/v1/runs/{run_id}/cancel"),
            "runs:control",
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/runs/{run_id}/terminate"),
            "runs:control",
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/runs/{run_id}/resume"),
            "runs:control",
            Some(json!({"step_id": "a"})),
        ),
        (Method::GET, "/v1/plugins".into(), "plugins:read", None),
        (
            Method::GET,
            "/v1/plugins/send_email".into(),
            "plugins:read",
            None,
        ),
        (
            Method::GET,
            "/v1/plugins/send_email/1.0.0".into(),
            "plugins:read",
            None,
        ),
        (
            Method::GET,
            "/v1/plugins/send_email/grants".into(),
            "plugins:read",
            None,
        ),
        (
            Method::PUT,
            "/v1/plugins/send_email/grants".into(),
            "plugins:publish",
            Some(json!({"allowed_hosts": [], "secrets": [], "mail": true})),
        ),
        (
            Method::DELETE,
            "/v1/plugins/send_email/1.0.0".into(),
            "plugins:publish",
            None,
        ),
        (
            Method::GET,
            "/v1/action-catalog".into(),
            "workflows:read",
            None,
        ),
        (Method::GET, "/v1/secrets".into(), "secrets:manage", None),
        (
            Method::PUT,
            "/v1/secrets/X".into(),
            "secrets:manage",
            Some(json!({"value": "v"})),
        ),
        (
            Method::DELETE,
            "/v1/secrets/X".into(),
            "secrets:manage",
            None,
        ),
        (Method::GET, "/v1/api-keys".into(), "admin", None),
        (
            Method::POST,
            "/v1/api-keys".into(),
            "admin",
            Some(json!({"name": "n", "scopes": ["runs:read"]})),
        ),
        (Method::DELETE, "/v1/api-keys/nope".into(), "admin", None),
    ];
    let runs_read = key_with("runs:read").await;
    let workflows_read = key_with("workflows:read").await;
    for (method, path, scope, body) in &routes {
        let lacking = if *scope == "runs:read" {
            &workflows_read
        } else {
            &runs_read
        };
        let mut request = s
            .client
            .request(method.clone(), format!("{}{path}", s.url))
            .bearer_auth(lacking);
        if let Some(body) = body {
            request = request.json(body);
        }
        let status = request.send().await.unwrap().status();
        assert_eq!(status, 403, "{method} {path} without {scope}");
    }
    // Another tenant's admin: the workflow and the run do not exist for it.
    for (method, path, _, body) in routes
        .iter()
        .filter(|(_, p, _, _)| p.contains("scoped") || p.contains(&run_id))
    {
        let mut request = s
            .client
            .request(method.clone(), format!("{}{path}", s.url))
            .bearer_auth(&other_admin);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        assert_eq!(status, 404, "{method} {path} as another tenant");
    }
    // The operator-only routes refuse a tenant admin.
    for (method, path) in [(Method::GET, "/v1/tenants"), (Method::POST, "/v1/tenants")] {
        let status = s
            .client
            .request(method.clone(), format!("{}{path}", s.url))
            .bearer_auth(&other_admin)
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 403, "{method} {path}");
    }
}

/// A plugin run by tenant A reaches none of tenant B's key-value entries,
/// files or secrets, by any means the contract offers.
#[tokio::test]
async fn a_plugin_never_reaches_another_tenants_data() {
    let s = shared();
    let mut keys = Vec::new();
    for name in ["iso-a", "iso-b"] {
        let (status, tenant) = s.post("/v1/tenants", json!({"name": name})).await;
        assert_eq!(status, 201, "{tenant}");
        keys.push(tenant["admin_key"].as_str().unwrap().to_owned());
    }
    let (a, b) = (&keys[0], &keys[1]);
    let call = |key: &str, method: Method, path: &str, body: Option<Value>| {
        let mut request = s
            .client
            .request(method, format!("{}{path}", s.url))
            .bearer_auth(key.to_owned());
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let run_step = |key: &str, config: Value| {
        let key = key.to_owned();
        async move {
            let workflow = format!("iso-{}", uuid_like());
            let definition = json!({"key": workflow, "name": "iso", "steps": [{"id": "probe", "uses": "testkit@0", "config": config}]});
            let (status, body) = call(&key, Method::POST, "/v1/workflows", Some(definition)).await;
            assert_eq!(status, 201, "{body}");
            let (status, run) = call(&key, Method::POST, "/v1/runs", Some(json!({"workflow": workflow, "version": "0.1.0", "input": {}, "wait_ms": 10000}))).await;
            assert_eq!(status, 200, "{run}");
            step(&run, "probe").clone()
        }
    };

    // Tenant B's data: a key-value entry, a file, a secret its plugin may read.
    let written = run_step(
        b,
        json!({"mode": "kv_set", "key": "plan", "value": "B's plan"}),
    )
    .await;
    assert_eq!(written["status"], "completed", "{written}");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"B's contract".to_vec()).file_name("b.txt"),
    );
    let response = s
        .client
        .post(format!("{}/v1/files", s.url))
        .bearer_auth(b)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let file: Value = response.json().await.unwrap();
    let file_id = file["id"].as_str().unwrap().to_owned();
    assert_eq!(file["size"], 12);
    let (status, _) = call(
        b,
        Method::PUT,
        "/v1/secrets/PLAN_TOKEN",
        Some(json!({"value": "b-token"})),
    )
    .await;
    assert_eq!(status, 200);
    for key in [a, b] {
        let (status, body) = call(key, Method::PUT, "/v1/plugins/testkit/grants", Some(json!({"allowed_hosts": [], "secrets": ["PLAN_TOKEN"], "mail": true, "kv": true, "files": true}))).await;
        assert_eq!(status, 200, "{body}");
    }
    // B itself sees them.
    assert_eq!(
        run_step(b, json!({"mode": "kv_get", "key": "plan"})).await["output"]["value"],
        "\"B's plan\""
    );
    assert_eq!(
        run_step(b, json!({"mode": "host_file", "file_id": file_id})).await["output"]["size"],
        12
    );
    assert_eq!(
        run_step(b, json!({"mode": "secret", "name": "PLAN_TOKEN"})).await["output"]["value"],
        "b-token"
    );

    // A, naming the same things, finds nothing.
    let probe = run_step(a, json!({"mode": "kv_get", "key": "plan"})).await;
    assert_eq!(
        probe["output"],
        json!({"value": null, "keys": []}),
        "{probe}"
    );
    for bucket in ["default", "../iso-b", "iso-b/default", ""] {
        let probe = run_step(
            a,
            json!({"mode": "kv_get", "bucket": bucket, "key": "plan"}),
        )
        .await;
        assert_eq!(
            probe["output"]["value"],
            Value::Null,
            "bucket {bucket:?}: {probe}"
        );
    }
    let probe = run_step(a, json!({"mode": "host_file", "file_id": file_id})).await;
    assert_eq!(probe["status"], "failed");
    assert!(
        probe["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no file with id"),
        "{probe}"
    );
    let probe = run_step(a, json!({"mode": "secret", "name": "PLAN_TOKEN"})).await;
    assert_eq!(probe["output"]["value"], Value::Null, "{probe}");
    let (status, _) = call(a, Method::GET, &format!("/v1/files/{file_id}"), None).await;
    assert_eq!(status, 404);
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test]
async fn signed_jwts_are_accepted_as_bearer_tokens() {
    use base64::Engine as _;
    let s = shared();
    let (_, tenant) = s.post("/v1/tenants", json!({"name": "jwt-user"})).await;
    let admin = tenant["admin_key"].as_str().unwrap().to_owned();
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let response = s
        .client
        .post(format!("{}/v1/tenant/jwt-secret", s.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let secret: Value = response.json().await.unwrap();
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret["secret"].as_str().unwrap())
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    let get = |token: String| {
        let s = &s;
        async move {
            s.client
                .get(format!("{}/v1/runs", s.url))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let good = weft::api::jwt::sign(
        &key,
        &json!({"tid": tenant_id, "sub": "ci", "exp": now + 60, "scopes": ["runs:read"]}),
    );
    assert_eq!(get(good).await, 200);
    let narrow = weft::api::jwt::sign(
        &key,
        &json!({"tid": tenant_id, "exp": now + 60, "scope": "workflows:read"}),
    );
    assert_eq!(get(narrow).await, 403, "scopes come from the claim");
    let expired = weft::api::jwt::sign(
        &key,
        &json!({"tid": tenant_id, "exp": now - 5, "scopes": ["runs:read"]}),
    );
    assert_eq!(get(expired).await, 401);
    let forged = weft::api::jwt::sign(
        b"not the tenant's secret",
        &json!({"tid": tenant_id, "exp": now + 60, "scopes": ["admin"]}),
    );
    assert_eq!(get(forged).await, 401);
    let no_exp = weft::api::jwt::sign(&key, &json!({"tid": tenant_id, "scopes": ["runs:read"]}));
    assert_eq!(get(no_exp).await, 401);
}

#[tokio::test]
async fn a_file_upload_refuses_any_field_but_file() {
    let s = shared();
    let upload = |form: reqwest::multipart::Form| {
        common::send(s.req(Method::POST, "/v1/files").multipart(form))
    };
    let file = || reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("hello.txt");
    let (status, body) = upload(
        reqwest::multipart::Form::new()
            .text("note", "not a field of the form")
            .part("file", file()),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("\"note\""),
        "{body}"
    );
    let (status, body) = upload(reqwest::multipart::Form::new().text("note", "no file")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = upload(reqwest::multipart::Form::new().part("file", file())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["size"], 5);
}

/// The contract flow: a document arrives with the run, a plugin extracts its
/// parties, a person approves, and mail goes out.
#[tokio::test]
async fn a_run_started_with_an_attachment_hands_the_file_to_its_steps() {
    let s = shared();
    s.publish(json!({"key": "contract", "name": "Contract", "steps": [
        {"id": "extract", "uses": "extract_document@1"},
        {"id": "approve", "uses": "request_user_action", "depends_on": ["extract"], "config": {"actions": ["approve", "decline"]}},
        {"id": "notify", "uses": "send_email@1", "depends_on": ["approve"],
         "config": {"to": "{{input.notify}}", "subject": "Approved: {{steps.extract.output.title}}", "body": "Parties: {{steps.extract.output.parties}}"}}
    ]}))
    .await;
    let text = "SUPPLY AGREEMENT\nThis Agreement is made on 1 June 2026 between Acme Widgets Inc. and Globex Ltd.\nFee: EUR 4,000.00\n";
    let form = || {
        reqwest::multipart::Form::new()
            .text("workflow", "contract")
            .text("notify", "legal@example.com")
            .text("wait_ms", "10000")
            .part(
                "attachment",
                reqwest::multipart::Part::bytes(text.as_bytes().to_vec())
                    .file_name("contract.txt")
                    .mime_str("text/plain")
                    .unwrap(),
            )
    };
    let response = s
        .req(Method::POST, "/v1/runs")
        .header("Idempotency-Key", "contract-upload-1")
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "a start that waits answers 200 once the run pauses"
    );
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "paused", "{run}");
    assert_eq!(run["input"]["attachment"]["name"], "contract.txt");
    assert_eq!(run["input"]["file_id"], run["input"]["attachment"]["id"]);
    let extracted = &step(&run, "extract")["output"];
    let names: Vec<&str> = extracted["parties"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"Globex Ltd"), "{extracted}");
    assert_eq!(extracted["dates"][0]["date"], "2026-06-01");

    // The same key and the same document replay the first response.
    let again: Value = s
        .req(Method::POST, "/v1/runs")
        .header("Idempotency-Key", "contract-upload-1")
        .multipart(form())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["id"], run["id"]);

    let id = run["id"].as_str().unwrap();
    let (status, _) = s
        .post(
            &format!("/v1/runs/{id}/resume"),
            json!({"step_id": "approve", "action": "approve"}),
        )
        .await;
    assert_eq!(status, 200);
    let run = s
        .wait_until(id, Duration::from_secs(10), |r| r["status"] == "completed")
        .await;
    assert!(step(&run, "notify")["output"]["message_id"].is_string());

    let response = s
        .req(Method::POST, "/v1/runs")
        .header("content-type", "text/plain")
        .body("workflow=contract")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn cancel_and_terminate_keep_the_reason_in_the_event_and_the_run() {
    let s = shared();
    s.publish(json!({"key": "reasons", "name": "Reasons", "steps": [
        {"id": "form", "uses": "collect_inputs", "config": {"schema": {"type": "object"}}}]}))
        .await;
    for (action, event, reason) in [
        ("cancel", "run.cancelled", "the customer withdrew"),
        ("terminate", "run.terminated", "runaway loop"),
    ] {
        let (_, run) = s
            .post("/v1/runs", json!({"workflow": "reasons", "input": {}}))
            .await;
        let id = run["id"].as_str().unwrap().to_owned();
        let (status, run) = s
            .post(
                &format!("/v1/runs/{id}/{action}"),
                json!({"reason": reason}),
            )
            .await;
        assert_eq!(status, 200, "{run}");
        assert_eq!(run["reason"], reason, "{run}");
        let (_, run) = s.get(&format!("/v1/runs/{id}")).await;
        assert_eq!(run["reason"], reason, "{run}");
        assert_eq!(run["error"]["reason"], reason, "{run}");
        let (_, events) = s.get(&format!("/v1/runs/{id}/events")).await;
        let stopped = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == event)
            .unwrap_or_else(|| panic!("no {event} in {events}"));
        assert_eq!(stopped["data"]["reason"], reason, "{stopped}");
    }
    // Without a body (or with an empty one) the reason is simply absent.
    let (_, run) = s
        .post("/v1/runs", json!({"workflow": "reasons", "input": {}}))
        .await;
    let id = run["id"].as_str().unwrap();
    let (status, body) = common::send(s.req(Method::POST, &format!("/v1/runs/{id}/cancel"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert!(body.get("reason").is_none(), "{body}");
    let (status, _) = s
        .post(&format!("/v1/runs/{id}/terminate"), json!({"why": "x"}))
        .await;
    assert_eq!(status, 400, "unknown fields are refused");
}

#[tokio::test]
async fn paused_runs_say_what_they_are_paused_on_in_lists_and_starts() {
    let s = shared();
    s.publish(
        json!({"key": "paused-list", "name": "Paused list", "steps": [
        {"id": "form", "uses": "collect_inputs", "config": {"schema": {"type": "object"}}},
        {"id": "after", "uses": "testkit@0", "depends_on": ["form"], "config": {"mode": "echo"}}]}),
    )
    .await;
    let (_, started) = s
        .post("/v1/runs", json!({"workflow": "paused-list", "input": {}}))
        .await;
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!(started["status"], "paused", "{started}");
    assert_ne!(
        started["paused_on"],
        json!([]),
        "a start answer never claims a paused run waits on nothing: {started}"
    );
    s.wait_until(&id, Duration::from_secs(10), |r| r["status"] == "paused")
        .await;
    let (status, list) = s.get("/v1/runs?workflow=paused-list").await;
    assert_eq!(status, 200, "{list}");
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("run {id} not listed: {list}"));
    assert_eq!(item["status"], "paused", "{item}");
    assert_eq!(item["paused_on"], json!(["form"]), "{item}");
    let (_, run) = s.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(run["paused_on"], json!(["form"]), "{run}");
}

#[tokio::test]
async fn a_multipart_text_field_cannot_take_the_input_past_the_json_limit() {
    let s = shared();
    s.publish(json!({"key": "big-fields", "name": "Big fields", "steps": [testkit("a", json!({"mode": "echo"}))]}))
        .await;
    // Each on its own connection: the server closes it after refusing the body.
    let start = |form: reqwest::multipart::Form| {
        common::send(
            reqwest::Client::new()
                .post(format!("{}/v1/runs", s.url))
                .bearer_auth(ADMIN_KEY)
                .multipart(form),
        )
    };
    let huge = "x".repeat(5 << 20);
    let (status, problem) = start(
        reqwest::multipart::Form::new()
            .text("workflow", "big-fields")
            .text("notes", huge),
    )
    .await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["field"], "notes", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("notes"),
        "{problem}"
    );
    // Two fields under the limit each but over it together: the second is named.
    let half = "y".repeat(600 << 10);
    let (status, problem) = start(
        reqwest::multipart::Form::new()
            .text("workflow", "big-fields")
            .text("first", half.clone())
            .text("second", half),
    )
    .await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["field"], "second", "{problem}");
    // Text that JSON escaping grows past the limit is refused as the input.
    let quotes = "\"".repeat(700 << 10);
    let (status, problem) = start(
        reqwest::multipart::Form::new()
            .text("workflow", "big-fields")
            .text("quoted", quotes),
    )
    .await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["field"], "input", "{problem}");
    let (status, run) = start(
        reqwest::multipart::Form::new()
            .text("workflow", "big-fields")
            .text("notes", "y".repeat(100 << 10)),
    )
    .await;
    assert_eq!(status, 202, "{run}");
}
