//! Runs found by what they are about, and what operators do after an
//! incident, through the real binary: labels from a start, the definition
//! and a preset; `GET /v1/runs?label=…` with pages; presets; re-running a
//! finished run from a step with new input; retrying every failed run of a
//! workflow at once; and another tenant seeing none of it.

use crate::common;

use std::time::Duration;

use common::{Server, shared, step};
use reqwest::Method;
use serde_json::{Value, json};

async fn start(s: &Server, body: Value) -> Value {
    let (status, run) = s.post("/v1/runs", body).await;
    assert_eq!(status, 202, "{run}");
    run
}

/// Every run a `GET /v1/runs` query lists, reading pages of `limit`.
async fn every_page(s: &Server, query: &str, limit: u32) -> Vec<Value> {
    let mut runs = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = format!("/v1/runs?{query}&limit={limit}{cursor}");
        let (status, body) = s.get(&page).await;
        assert_eq!(status, 200, "{page}: {body}");
        runs.extend(body["items"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return runs,
        }
    }
}

/// The ids of the runs a `GET /v1/runs` query lists, in pages of two.
async fn listed(s: &Server, query: &str) -> Vec<String> {
    every_page(s, query, 2)
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn runs_are_found_by_labels_from_the_start_the_definition_and_a_preset() {
    let s = shared();
    s.publish(json!({"key": "labelled", "name": "Labelled",
        "labels": {"customer": "{{input.customer}}", "region": "{{input.region?}}"},
        "steps": [{"id": "a", "uses": "testkit@0", "config": {"mode": "echo"}}]}))
        .await;
    let a = start(
        &s,
        json!({"workflow": "labelled", "input": {"customer": "c-1", "region": "eu"},
        "labels": {"case": "k1"}}),
    )
    .await;
    let b = start(
        &s,
        json!({"workflow": "labelled", "input": {"customer": "c-2"},
        "labels": {"case": "k1"}}),
    )
    .await;
    let c = start(
        &s,
        json!({"workflow": "labelled", "input": {"customer": "c-1"},
        "labels": {"case": "k2", "customer": "c-1"}}),
    )
    .await;
    let id = |run: &Value| run["id"].as_str().unwrap().to_owned();
    assert_eq!(
        a["labels"],
        json!({"case": "k1", "customer": "c-1", "region": "eu"}),
        "the definition's templates and the start's own"
    );
    assert_eq!(
        b["labels"],
        json!({"case": "k1", "customer": "c-2"}),
        "a missing optional field sets no label"
    );

    assert_eq!(
        listed(&s, "label=customer:c-1").await,
        [id(&c), id(&a)],
        "newest first"
    );
    assert_eq!(
        listed(&s, "label=customer:c-1&label=case:k1").await,
        [id(&a)],
        "AND-ed"
    );
    assert_eq!(listed(&s, "label=case:k1").await, [id(&b), id(&a)]);
    for run in [&a, &b] {
        s.wait_until(&id(run), Duration::from_secs(30), |r| {
            r["status"] == "completed"
        })
        .await;
    }
    assert_eq!(
        listed(&s, "label=case:k1&workflow=labelled&status=completed").await,
        [id(&b), id(&a)],
        "with the other filters"
    );
    assert!(listed(&s, "label=case:k1&status=failed").await.is_empty());
    assert!(listed(&s, "label=case:k1&workflow=other").await.is_empty());
    assert!(listed(&s, "label=customer:c-404").await.is_empty());

    // The run's body, when done, carries its labels.
    let done = s
        .wait_until(&id(&a), Duration::from_secs(30), |r| {
            r["status"] == "completed"
        })
        .await;
    assert_eq!(done["labels"]["region"], "eu");

    // Bad filters and labels are named.
    let (status, body) = s.get("/v1/runs?label=customer").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("name:value"),
        "{body}"
    );
    let six = (0..6)
        .map(|i| format!("label=n{i}:v"))
        .collect::<Vec<_>>()
        .join("&");
    let (status, body) = s.get(&format!("/v1/runs?{six}")).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("at most 5"),
        "{body}"
    );
    let (status, body) = s.get("/v1/runs?labels=customer:c-1").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("labels"),
        "{body}"
    );
    let (status, body) = s
        .post(
            "/v1/runs",
            json!({"workflow": "labelled", "input": {"customer": "c-1"},
            "labels": {"bad name": "x"}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("bad name"),
        "{body}"
    );
    let (status, body) = s
        .post(
            "/v1/runs",
            json!({"workflow": "labelled", "input": {"customer": "c-1"},
            "labels": {"case": "x".repeat(257)}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("1-256"), "{body}");
    let (status, body) = s
        .post(
            "/v1/runs",
            json!({"workflow": "labelled", "input": {"customer": {"id": 1}}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("labels.customer"),
        "{body}"
    );
    // A definition whose labels read what a start cannot know is refused.
    let (status, body) = s
        .post(
            "/v1/workflows",
            json!({"key": "bad-labels", "name": "Bad",
            "labels": {"x": "{{steps.a.output}}"},
            "steps": [{"id": "a", "uses": "testkit@0"}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("input only"), "{body}");

    // Another tenant sees none of it.
    let (_, key) = s.new_tenant("labels-other").await;
    let (status, body) = s
        .call_as(&key, Method::GET, "/v1/runs?label=customer:c-1", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"], json!([]));
}

#[tokio::test]
async fn a_preset_goes_under_a_runs_input_and_names_it() {
    let s = shared();
    s.publish(json!({"key": "preset-flow", "name": "Preset flow",
        "input_schema": {"type": "object", "required": ["customer"]},
        "steps": [{"id": "a", "uses": "testkit@0", "config": {"mode": "echo", "input": "{{input}}"}}]}))
        .await;
    let path = "/v1/workflows/preset-flow/presets/big-customer";
    let preset = json!({"input": {"customer": "c-9", "options": {"tier": "gold", "notify": true}},
        "description": "Our biggest customer"});
    let (status, body) = s.call(Method::PUT, path, Some(preset.clone())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "big-customer");
    let (status, body) = s.call(Method::PUT, path, Some(preset)).await;
    assert_eq!(status, 200, "a replace: {body}");
    let (status, body) = s.get("/v1/workflows/preset-flow/presets").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["description"], "Our biggest customer");

    let (status, run) = s
        .post(
            "/v1/runs",
            json!({"workflow": "preset-flow", "preset": "big-customer",
            "input": {"options": {"notify": false}}, "wait_ms": 30000}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(
        run["input"],
        json!({"customer": "c-9", "options": {"tier": "gold", "notify": false}}),
        "merged under the run's own input"
    );
    assert_eq!(run["labels"]["preset"], "big-customer");
    assert_eq!(
        step(&run, "a")["output"]["options"]["tier"],
        "gold",
        "the step sees it"
    );
    assert_eq!(
        listed(&s, "label=preset:big-customer").await,
        [run["id"].as_str().unwrap()]
    );

    // Mistakes are named.
    let (status, body) = s
        .post(
            "/v1/runs",
            json!({"workflow": "preset-flow", "preset": "nope"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("preset \"nope\""),
        "{body}"
    );
    let (status, body) = s
        .post(
            "/v1/runs",
            json!({"workflow": "preset-flow", "preset": "big-customer", "input": [1]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = s
        .call(
            Method::PUT,
            "/v1/workflows/preset-flow/presets/x",
            Some(json!({"input": 5})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("JSON object"),
        "{body}"
    );
    let (status, body) = s
        .call(
            Method::PUT,
            "/v1/workflows/preset-flow/presets/bad%20name",
            Some(json!({"input": {}})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = s
        .call(
            Method::PUT,
            "/v1/workflows/no-such-flow/presets/x",
            Some(json!({"input": {}})),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // Another tenant can neither read nor use it.
    let (_, key) = s.new_tenant("presets-other").await;
    let (status, _) = s.call_as(&key, Method::GET, path, None).await;
    assert_eq!(status, 404);

    // Archiving the workflow keeps its presets, ready for an unarchive.
    let (status, body) = s
        .call(Method::DELETE, "/v1/workflows/preset-flow", None)
        .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let (status, body) = s.get(path).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.get("/v1/workflows/preset-flow/presets").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["name"], "big-customer", "{body}");
    let (status, body) = s
        .post("/v1/workflows/preset-flow/unarchive", json!({}))
        .await;
    assert!((200..300).contains(&status), "{status} {body}");

    let (status, _) = s.call(Method::DELETE, path, None).await;
    assert_eq!(status, 204);
    let (status, _) = s.get(path).await;
    assert_eq!(status, 404);
    let (status, _) = s.call(Method::DELETE, path, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_rerun_keeps_the_steps_before_and_runs_the_rest_with_new_input() {
    let s = shared();
    // fetch → parse → (notify, summarise): parse fails on the first input.
    s.publish(json!({"key": "rerun-flow", "name": "Rerun flow",
        "steps": [
            {"id": "fetch", "uses": "testkit@0", "config": {"mode": "echo"}},
            {"id": "side", "uses": "testkit@0", "config": {"mode": "echo", "side": true}},
            {"id": "parse", "uses": "testkit@0", "depends_on": ["fetch"],
             "config": {"mode": "{{input.parse_mode}}", "ms": "{{input.ms?}}"}, "retry": {"max_attempts": 1}},
            {"id": "summarise", "uses": "testkit@0", "depends_on": ["parse"],
             "config": {"mode": "echo", "fetched": "{{steps.fetch.output.source}}", "mode_was": "{{input.parse_mode}}"}}
        ]}))
        .await;
    let first = s
        .run_sync("rerun-flow", json!({"source": "s3", "parse_mode": "fail"}))
        .await;
    assert_eq!(first["status"], "failed", "{first}");
    let old = first["id"].as_str().unwrap();

    // Only a finished run, only a known step.
    let (status, body) = s
        .post(
            &format!("/v1/runs/{old}/rerun"),
            json!({"from_step": "nope"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("fetch, side, parse, summarise"),
        "{body}"
    );

    let (status, rerun) = s
        .post(
            &format!("/v1/runs/{old}/rerun"),
            json!({"from_step": "parse", "input": {"source": "changed", "parse_mode": "echo"}}),
        )
        .await;
    assert_eq!(status, 201, "{rerun}");
    assert_eq!(rerun["rerun_of"], old);
    let new = rerun["id"].as_str().unwrap();
    let done = s
        .wait_until(new, Duration::from_secs(30), |r| r["status"] == "completed")
        .await;
    // fetch and side kept: no attempt in the new run, the old outputs.
    for kept in ["fetch", "side"] {
        assert_eq!(step(&done, kept)["status"], "completed");
        assert_eq!(step(&done, kept)["attempts"], 0, "{done}");
    }
    assert_eq!(
        step(&done, "fetch")["output"]["source"],
        "s3",
        "the old output, not the new input"
    );
    assert_eq!(step(&done, "parse")["attempts"], 1);
    // summarise rendered its config from the kept output and the new input.
    let (_, full) = s.get(&format!("/v1/runs/{new}?view=full")).await;
    let rendered = &step(&full, "summarise")["attempt_log"][0]["input"];
    assert_eq!(rendered["fetched"], "s3", "{rendered}");
    assert_eq!(rendered["mode_was"], "echo", "{rendered}");
    assert_eq!(done["input"]["source"], "changed");

    // The old run says where it was re-run; the new one how it began.
    let (_, events) = s.get(&format!("/v1/runs/{old}/events?limit=100")).await;
    let rerun_event = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "run.rerun")
        .unwrap_or_else(|| panic!("{events}"));
    assert_eq!(rerun_event["data"]["rerun_id"], new);
    let (_, events) = s.get(&format!("/v1/runs/{new}/events?limit=100")).await;
    assert_eq!(events["items"][0]["data"]["rerun_of"], old);
    assert_eq!(
        events["items"][0]["data"]["reused_steps"],
        json!(["fetch", "side"])
    );

    // Re-run from the first step without input: everything again, same input.
    let (status, again) = s
        .post(
            &format!("/v1/runs/{new}/rerun"),
            json!({"from_step": "fetch"}),
        )
        .await;
    assert_eq!(status, 201, "{again}");
    let again = s
        .wait_until(
            again["id"].as_str().unwrap(),
            Duration::from_secs(30),
            |r| r["status"] == "completed",
        )
        .await;
    assert_eq!(
        step(&again, "fetch")["output"]["source"],
        "changed",
        "the new run's input"
    );
    assert_eq!(step(&again, "fetch")["attempts"], 1);
    assert_eq!(
        step(&again, "side")["attempts"],
        0,
        "side does not follow fetch"
    );

    // Not while it runs; not another tenant's.
    let running = start(
        &s,
        json!({"workflow": "rerun-flow",
        "input": {"source": "x", "parse_mode": "sleep", "ms": 5000}}),
    )
    .await;
    let running = running["id"].as_str().unwrap();
    let (status, body) = s
        .post(
            &format!("/v1/runs/{running}/rerun"),
            json!({"from_step": "parse"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (_, key) = s.new_tenant("rerun-other").await;
    let (status, _) = s
        .call_as(
            &key,
            Method::POST,
            &format!("/v1/runs/{old}/rerun"),
            Some(json!({"from_step": "parse"})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn every_failed_run_of_a_workflow_is_retried_at_once() {
    let s = shared();
    // Fails its first attempt, then succeeds: a retry completes the run.
    s.publish(json!({"key": "retry-all", "name": "Retry all",
    "steps": [
        {"id": "call", "uses": "testkit@0", "config": {"mode": "flaky", "times": 1},
         "retry": {"max_attempts": 1}},
        {"id": "after", "uses": "testkit@0", "depends_on": ["call"], "config": {"mode": "echo"}}
    ]}))
    .await;
    let mut failed = Vec::new();
    for _ in 0..5 {
        let run = s.run_sync("retry-all", json!({})).await;
        assert_eq!(run["status"], "failed", "{run}");
        failed.push(run["id"].as_str().unwrap().to_owned());
    }
    let (status, body) = s
        .post(
            "/v1/runs:retry-failed",
            json!({"workflow": "retry-all", "since": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retried"], 5, "{body}");
    assert_eq!(body["more"], false);
    for id in &failed {
        let run = s
            .wait_until(id, Duration::from_secs(30), |r| r["status"] == "completed")
            .await;
        assert_eq!(step(&run, "call")["attempts"], 2, "{run}");
    }
    // Nothing left to retry; a time after them matches none.
    let (status, body) = s
        .post("/v1/runs:retry-failed", json!({"workflow": "retry-all"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retried"], 0);
    let (status, body) = s
        .post(
            "/v1/runs:retry-failed",
            json!({"workflow": "retry-all", "since": "yesterday"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("RFC 3339"),
        "{body}"
    );
    let (status, _) = s
        .post("/v1/runs:retry-failed", json!({"workflow": "no-such-flow"}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_paused_run_starts_no_step_until_unpaused() {
    let s = shared();
    // slow runs while the run is paused; next and the retry wait.
    s.publish(json!({"key": "pausable", "name": "Pausable",
        "steps": [
            {"id": "slow", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 1500}},
            {"id": "other", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 1500}},
            {"id": "next", "uses": "testkit@0", "depends_on": ["slow"], "config": {"mode": "echo"}},
            {"id": "last", "uses": "testkit@0", "depends_on": ["next", "other"], "config": {"mode": "echo"}}
        ]}))
        .await;
    let run = start(&s, json!({"workflow": "pausable"})).await;
    let id = run["id"].as_str().unwrap().to_owned();
    s.wait_until(&id, Duration::from_secs(10), |r| {
        step(r, "slow")["status"] == "running"
    })
    .await;
    let (status, paused) = s
        .post(
            &format!("/v1/runs/{id}/pause"),
            json!({"reason": "incident 42"}),
        )
        .await;
    assert_eq!(status, 200, "{paused}");
    assert!(paused["held_at"].is_string(), "{paused}");
    let (status, again) = s.post(&format!("/v1/runs/{id}/pause"), json!({})).await;
    assert_eq!(status, 200, "pausing twice is harmless: {again}");
    assert_eq!(again["held_at"], paused["held_at"]);

    // The attempts under way finish; their dependents are held.
    let held = s
        .wait_until(&id, Duration::from_secs(20), |r| {
            step(r, "slow")["status"] == "completed" && step(r, "next")["status"] == "held"
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, still) = s.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(step(&still, "next")["status"], "held", "{still}");
    assert_eq!(step(&still, "next")["attempts"], 0, "{still}");
    assert_eq!(still["status"], "running");
    assert_eq!(held["held_at"], paused["held_at"]);
    let (_, found) = s.get("/v1/runs?workflow=pausable&status=running").await;
    assert!(
        found["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str() && r["held_at"].is_string())
    );

    let (status, unpaused) = s.post(&format!("/v1/runs/{id}/unpause"), json!({})).await;
    assert_eq!(status, 200, "{unpaused}");
    assert!(unpaused.get("held_at").is_none(), "{unpaused}");
    let done = s
        .wait_until(&id, Duration::from_secs(20), |r| r["status"] == "completed")
        .await;
    assert_eq!(step(&done, "last")["status"], "completed");
    let (_, events) = s.get(&format!("/v1/runs/{id}/events?limit=100")).await;
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    let held_at = kinds
        .iter()
        .position(|k| *k == "run.held")
        .expect("run.held");
    let unheld_at = kinds
        .iter()
        .position(|k| *k == "run.unheld")
        .expect("run.unheld");
    assert!(held_at < unheld_at, "{kinds:?}");
    let held_event = &events["items"][held_at];
    assert_eq!(held_event["data"]["reason"], "incident 42");

    // A paused run can still be cancelled; a finished one cannot be paused.
    let run = start(&s, json!({"workflow": "pausable"})).await;
    let other = run["id"].as_str().unwrap();
    let (status, _) = s.post(&format!("/v1/runs/{other}/pause"), json!({})).await;
    assert_eq!(status, 200);
    let (status, cancelled) = s.post(&format!("/v1/runs/{other}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    s.wait_until(other, Duration::from_secs(20), |r| {
        r["status"] == "cancelled"
    })
    .await;
    let (status, body) = s.post(&format!("/v1/runs/{id}/pause"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    let (_, key) = s.new_tenant("pause-other").await;
    let (status, _) = s
        .call_as(
            &key,
            Method::POST,
            &format!("/v1/runs/{other}/pause"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 404);
}

/// Starts `n` runs of `workflow` at once, customer `i % keys` each; their
/// ids in start order of the answers.
async fn start_many(s: &Server, workflow: &str, n: usize, keys: usize) -> Vec<(usize, u16, Value)> {
    let starts = (0..n).map(|i| {
        let body = json!({"workflow": workflow, "input": {"customer": format!("c-{}", i % keys)}});
        async move {
            let (status, run) = s.post("/v1/runs", body).await;
            (i % keys, status, run)
        }
    });
    futures::future::join_all(starts).await
}

/// Every run of the workflow once none is unfinished.
async fn all_finished(s: &Server, workflow: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let runs = every_page(s, &format!("workflow={workflow}"), 100).await;
        let done = runs
            .iter()
            .all(|r| ["completed", "cancelled", "failed"].contains(&r["status"].as_str().unwrap()));
        if runs.len() == n && done {
            return runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runs still going: {}",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_concurrency_key_limits_runs_per_customer_and_queues_in_order() {
    let s = shared();
    s.publish(json!({"key": "per-customer", "name": "Per customer",
        "concurrency": {"key": "{{input.customer}}", "limit": 1, "on_limit": "queue"},
        "steps": [{"id": "work", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 30}}]}))
        .await;
    let started = start_many(&s, "per-customer", 200, 10).await;
    assert!(
        started.iter().all(|(_, status, _)| *status == 202),
        "{started:?}"
    );
    let runs = all_finished(&s, "per-customer", 200).await;
    for key in 0..10 {
        let customer = format!("c-{key}");
        let of_key: Vec<&Value> = runs
            .iter()
            .filter(|r| r["concurrency_key"] == customer.as_str())
            .collect();
        assert_eq!(of_key.len(), 20, "{customer}");
        assert!(of_key.iter().all(|r| r["status"] == "completed"));
        // Never two at once, and in the order they were started.
        common::assert_one_at_a_time_in_order(&customer, of_key);
    }
}

#[tokio::test]
async fn a_replacing_key_leaves_only_the_newest_run_and_reject_refuses() {
    let s = shared();
    s.publish(json!({"key": "latest-wins", "name": "Latest wins",
        "concurrency": {"key": "{{input.customer}}", "limit": 1, "on_limit": "replace"},
        "steps": [{"id": "work", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 3000}}]}))
        .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let run = start(
            &s,
            json!({"workflow": "latest-wins", "input": {"customer": "c-1"}}),
        )
        .await;
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    // Another key is not touched.
    let other = start(
        &s,
        json!({"workflow": "latest-wins", "input": {"customer": "c-2"}}),
    )
    .await;
    let runs = all_finished(&s, "latest-wins", 6).await;
    let status_of = |id: &str| {
        runs.iter()
            .find(|r| r["id"] == id)
            .map(|r| r["status"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(status_of(&ids[4]), "completed");
    for id in &ids[..4] {
        assert_eq!(status_of(id), "cancelled", "{id}");
    }
    assert_eq!(status_of(other["id"].as_str().unwrap()), "completed");
    let (_, replaced) = s.get(&format!("/v1/runs/{}", ids[0])).await;
    assert_eq!(replaced["reason"], "replaced by a newer run", "{replaced}");

    // Concurrent replacing starts: still only one survives.
    let started = start_many(&s, "latest-wins", 30, 1).await;
    assert!(
        started.iter().all(|(_, status, _)| *status == 202),
        "{started:?}"
    );
    let runs = all_finished(&s, "latest-wins", 36).await;
    let survivors = runs
        .iter()
        .filter(|r| r["concurrency_key"] == "c-0" && r["status"] == "completed")
        .count();
    assert_eq!(
        survivors, 1,
        "one of the concurrent starts completes, the rest are replaced"
    );

    s.publish(json!({"key": "one-each", "name": "One each",
        "concurrency": {"key": "{{input.customer}}", "limit": 1, "on_limit": "reject"},
        "steps": [{"id": "work", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 2000}}]}))
        .await;
    let first = start(
        &s,
        json!({"workflow": "one-each", "input": {"customer": "c-1"}}),
    )
    .await;
    let (status, body) = s
        .post(
            "/v1/runs",
            json!({"workflow": "one-each", "input": {"customer": "c-1"}}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["run_id"], first["id"], "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("with key \"c-1\""),
        "{body}"
    );
    let (status, body) = s
        .post(
            "/v1/runs",
            json!({"workflow": "one-each", "input": {"customer": "c-2"}}),
        )
        .await;
    assert_eq!(status, 202, "another key starts: {body}");
    // A key that reads anything but input is refused at save.
    let (status, body) = s
        .post(
            "/v1/workflows",
            json!({"key": "bad-key", "name": "Bad",
            "concurrency": {"key": "{{steps.a.output}}", "limit": 1},
            "steps": [{"id": "a", "uses": "testkit@0"}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("concurrency.key"), "{body}");
}

#[tokio::test]
async fn a_rate_limit_lets_some_steps_wait_for_the_next_minute_and_none_fail() {
    let s = shared();
    s.publish(json!({"key": "partner-call", "name": "Partner call",
        "steps": [{"id": "call", "uses": "testkit@0", "config": {"mode": "echo"},
                   "rate_limit": {"key": "partner:{{input.partner}}", "per_minute": 3}}]}))
        .await;
    // All five starts within one minute.
    let second = chrono::Utc::now().timestamp() % 60;
    if second >= 45 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
    let mut ids = Vec::new();
    for _ in 0..5 {
        let run = start(
            &s,
            json!({"workflow": "partner-call", "input": {"partner": "acme"}}),
        )
        .await;
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    // Another key has its own allowance.
    let other = start(
        &s,
        json!({"workflow": "partner-call", "input": {"partner": "globex"}}),
    )
    .await;
    let other = other["id"].as_str().unwrap().to_owned();
    s.wait_until(&other, Duration::from_secs(20), |r| {
        r["status"] == "completed"
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (done, waiting) = loop {
        let mut done = Vec::new();
        let mut waiting = Vec::new();
        for id in &ids {
            let (_, run) = s.get(&format!("/v1/runs/{id}")).await;
            if run["status"] == "completed" {
                done.push(run);
            } else if step(&run, "call")["attempt_log"][0]["status"] == "rate_limited" {
                waiting.push(run);
            }
        }
        if done.len() == 3 && waiting.len() == 2 {
            break (done, waiting);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} done, {} waiting",
            done.len(),
            waiting.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for run in &waiting {
        let call = step(run, "call");
        assert_eq!(call["status"], "ready", "{run}");
        assert_eq!(call["attempts"], 0, "a deferral is not an attempt: {run}");
        let error = call["attempt_log"][0]["error"].as_str().unwrap();
        assert!(
            error.contains("rate limit \"partner:acme\" is used up"),
            "{error}"
        );
    }
    assert!(done.iter().all(|r| step(r, "call")["attempts"] == 1));
    // The next minute they run: waiting, never failing.
    for run in &waiting {
        let id = run["id"].as_str().unwrap();
        let finished = s
            .wait_until(id, Duration::from_secs(75), |r| r["status"] == "completed")
            .await;
        assert_eq!(step(&finished, "call")["attempts"], 1, "{finished}");
        let (_, events) = s.get(&format!("/v1/runs/{id}/events?limit=100")).await;
        assert!(
            events["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == "step.rate_limited"),
            "{events}"
        );
    }
    // A limit of nothing is refused at save.
    let (status, body) = s
        .post("/v1/workflows", json!({"key": "bad-rate", "name": "Bad",
            "steps": [{"id": "a", "uses": "testkit@0", "rate_limit": {"key": "x", "per_minute": 0}}]}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string()
            .contains("rate_limit.per_minute must be 1 to 1000000"),
        "{body}"
    );
}

#[tokio::test]
async fn a_paused_run_holds_a_human_step_and_creates_its_task_once_unpaused() {
    let s = shared();
    s.publish(
        json!({"key": "pause-human", "name": "Pause before a person",
        "steps": [
            {"id": "prepare", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 1000}},
            {"id": "approve", "uses": "request_user_action", "depends_on": ["prepare"],
             "config": {"actions": ["approve"], "assignees": ["ann@example.com"]}}
        ]}),
    )
    .await;
    let run = start(&s, json!({"workflow": "pause-human"})).await;
    let id = run["id"].as_str().unwrap().to_owned();
    s.wait_until(&id, Duration::from_secs(10), |r| {
        step(r, "prepare")["status"] == "running"
    })
    .await;
    let (status, _) = s.post(&format!("/v1/runs/{id}/pause"), json!({})).await;
    assert_eq!(status, 200);
    let held = s
        .wait_until(&id, Duration::from_secs(20), |r| {
            step(r, "approve")["status"] == "held"
        })
        .await;
    assert_eq!(
        held["status"], "running",
        "not waiting for a person yet: {held}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, tasks) = s.get(&format!("/v1/tasks?run_id={id}")).await;
    assert_eq!(tasks["items"], json!([]), "no task while paused");

    let (status, _) = s.post(&format!("/v1/runs/{id}/unpause"), json!({})).await;
    assert_eq!(status, 200);
    s.wait_until(&id, Duration::from_secs(20), |r| r["status"] == "paused")
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, tasks) = s.get(&format!("/v1/tasks?run_id={id}")).await;
        if tasks["items"].as_array().unwrap().len() == 1 {
            assert_eq!(tasks["items"][0]["assignee"], "ann@example.com");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{tasks}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_retry_waits_for_room_under_the_concurrency_limit() {
    let s = shared();
    s.publish(json!({"key": "one-at-a-time", "name": "One at a time",
        "concurrency": {"limit": 1, "on_limit": "reject"},
        "steps": [{"id": "work", "uses": "testkit@0",
                   "config": {"mode": "{{input.mode}}", "ms": 2500}, "retry": {"max_attempts": 1}}]}))
        .await;
    let failed = s.run_sync("one-at-a-time", json!({"mode": "fail"})).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let failed = failed["id"].as_str().unwrap();
    let busy = start(
        &s,
        json!({"workflow": "one-at-a-time", "input": {"mode": "sleep"}}),
    )
    .await;
    // Reopening the failed run would make two unfinished runs.
    let (status, body) = s
        .post(
            &format!("/v1/runs/{failed}/resume"),
            json!({"step_id": "work"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("concurrency limit"),
        "{body}"
    );
    let (status, body) = s
        .post(
            "/v1/runs:retry-failed",
            json!({"workflow": "one-at-a-time"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retried"], 0, "{body}");
    assert_eq!(body["not_retried"][0]["run_id"], failed, "{body}");
    s.wait_until(busy["id"].as_str().unwrap(), Duration::from_secs(20), |r| {
        r["status"] == "completed"
    })
    .await;
    let (status, body) = s
        .post(
            &format!("/v1/runs/{failed}/resume"),
            json!({"step_id": "work"}),
        )
        .await;
    assert_eq!(status, 200, "room again: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_tenants_urgent_runs_start_before_earlier_ones() {
    // One slot: the tenant is busy while the first run holds it.
    let s = Server::start_args(&["--max-parallel", "1", "--tenant-max-running", "1"]);
    s.publish(json!({"key": "prio", "name": "Priorities", "steps": [
        {"id": "work", "uses": "testkit@0", "config": {"mode": "sleep", "ms": "{{input.ms}}"}}]}))
        .await;
    // Long enough for the eight starts below on a busy machine.
    let blocker = start(&s, json!({"workflow": "prio", "input": {"ms": 4000}})).await;
    s.wait_until(
        blocker["id"].as_str().unwrap(),
        Duration::from_secs(30),
        |r| r["status"] == "running",
    )
    .await;
    let mut low = Vec::new();
    for _ in 0..4 {
        let run = start(&s, json!({"workflow": "prio", "input": {"ms": 20}})).await;
        assert_eq!(run["priority"], 1, "{run}");
        low.push(run["id"].as_str().unwrap().to_owned());
    }
    let mut high = Vec::new();
    for _ in 0..4 {
        let run = start(
            &s,
            json!({"workflow": "prio", "input": {"ms": 20}, "priority": 3}),
        )
        .await;
        assert_eq!(run["priority"], 3, "{run}");
        high.push(run["id"].as_str().unwrap().to_owned());
    }
    let high_started = started_times(&s, &high).await;
    let low_started = started_times(&s, &low).await;
    let last_high = high_started.iter().max().unwrap();
    let first_low = low_started.iter().min().unwrap();
    assert!(
        last_high < first_low,
        "priority-3 runs {high_started:?} before priority-1 runs {low_started:?}"
    );

    // Out of range: refused, naming the range.
    let (status, body) = s
        .post(
            "/v1/runs",
            json!({"workflow": "prio", "input": {"ms": 1}, "priority": 4}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("1, 2 or 3"),
        "{body}"
    );
    // A schedule's runs take its priority.
    let (status, body) = s
        .post(
            "/v1/schedules",
            json!({"workflow": "prio", "cron": "0 0 1 1 *", "priority": 0}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = s
        .post(
            "/v1/schedules",
            json!({"workflow": "prio", "cron": "0 0 1 1 *", "priority": 2, "input": {"ms": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["priority"], 2);
}

/// When each run started, once it completed.
async fn started_times(s: &Server, ids: &[String]) -> Vec<String> {
    let mut times = Vec::new();
    for id in ids {
        let run = s
            .wait_until(id, Duration::from_secs(60), |r| r["status"] == "completed")
            .await;
        times.push(run["started_at"].as_str().unwrap().to_owned());
    }
    times
}
