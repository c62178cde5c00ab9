//! Steps with `for_each`, through the real binary: each item its own
//! attempts, retries and idempotency key; outputs in list order; a failed
//! item under `fail` and `continue`; a retry by hand runs only what did not
//! complete; a pause holds the items not started; a killed host loses no
//! item and sends no item's mail twice.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Server, shared, step};
use reqwest::Method;
use serde_json::{Value, json};

/// Every item of a step, reading pages of 100.
async fn all_items(s: &Server, run: &str, step: &str, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/v1/runs/{run}/steps/{step}/items?limit=100{query}{cursor}");
        let (status, body) = s.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        items.extend(body["items"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return items,
        }
    }
}

/// Waits for a run to end, pause or fail (up to three minutes).
async fn settled(s: &Server, id: &str) -> Value {
    s.wait_until(id, Duration::from_secs(180), |r| {
        r["status"] != "pending" && r["status"] != "running"
    })
    .await
}

/// 1,000 items: every 100th fails once (then succeeds on its retry), item
/// 500 is `failing`.
fn thousand_items(failing: &Value) -> Value {
    let items: Vec<Value> = (0..1000)
        .map(|i| match i {
            500 => failing.clone(),
            i if i % 100 == 7 => json!({"mode": "flaky"}),
            _ => json!({"mode": "context"}),
        })
        .collect();
    json!({"items": items})
}

fn map_workflow(key: &str, on_item_failure: &str) -> Value {
    json!({"key": key, "name": key, "steps": [
        {"id": "each", "uses": "testkit@0",
         "for_each": "{{input.items}}", "max_parallel": 50, "on_item_failure": on_item_failure,
         "retry": {"max_attempts": 3, "backoff": {"initial_ms": 20, "max_ms": 50}},
         "config": {"mode": "{{item.mode}}", "times": "{{item.times?}}", "ms": "{{item.ms?}}",
                    "message": "item {{item_index}} refused"}},
        {"id": "after", "uses": "testkit@0", "depends_on": ["each"],
         "config": {"mode": "echo"}}
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_runs_each_item_with_its_own_retries_and_keeps_going_past_a_failed_item() {
    let s = Server::start_args(&["--max-parallel", "64"]);
    s.publish(map_workflow("map-continue", "continue")).await;
    let id = s
        .start_run("map-continue", thousand_items(&json!({"mode": "fail"})))
        .await;
    let run = settled(&s, &id).await;
    assert_eq!(run["status"], "completed", "{run}");
    let each = step(&run, "each");
    assert_eq!(
        each["items"],
        json!({"total": 1000, "pending": 0, "running": 0, "completed": 999, "failed": 1})
    );
    let output = each["output"].as_array().expect("a list");
    assert_eq!(output.len(), 1000);
    for (i, out) in output.iter().enumerate() {
        match i {
            500 => {
                assert_eq!(out["error"]["kind"], "fatal", "{out}");
                assert_eq!(out["error"]["message"], "item 500 refused");
            }
            i if i % 100 == 7 => assert_eq!(out, &json!({"attempt": 2}), "item {i}"),
            _ => {
                // In list order, each with its own key and step name.
                assert_eq!(out["idempotency_key"], format!("{id}/each/{i}"), "{out}");
                assert_eq!(out["step_id"], format!("each[{i}]"));
                assert_eq!(out["attempt"], 1);
            }
        }
    }
    // The dependent ran once every item was done.
    assert_eq!(step(&run, "after")["status"], "completed");

    let items = all_items(&s, &id, "each", "").await;
    assert_eq!(items.len(), 1000);
    assert!(
        items.iter().enumerate().all(|(i, item)| item["index"] == i),
        "items in list order"
    );
    let flaky: Vec<&Value> = items.iter().filter(|i| i["attempts"] == 2).collect();
    assert_eq!(flaky.len(), 10, "every 100th retried once");
    let failed = all_items(&s, &id, "each", "&status=failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["index"], 500);
    assert_eq!(failed[0]["error"]["message"], "item 500 refused");

    // Progress and the failure are in the run's events.
    let (_, events) = s.get(&format!("/v1/runs/{id}/events?limit=100")).await;
    let events = events["items"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "step.item_failed" && e["data"]["index"] == 500),
        "{events:?}"
    );
    let last = events
        .iter()
        .rev()
        .find(|e| e["type"] == "step.items")
        .expect("a step.items event");
    assert_eq!(last["data"]["completed"], 999);
    assert_eq!(last["data"]["failed"], 1);

    // Another tenant sees none of it.
    let (_, other) = s.new_tenant("map-other").await;
    let path = format!("/v1/runs/{id}/steps/each/items");
    let (status, _) = s.call_as(&other, Method::GET, &path, None).await;
    assert_eq!(status, 404);
    // Bad queries name the problem.
    let (status, body) = s.get(&format!("/v1/runs/{id}/steps/after/items")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("no for_each"));
    let (status, _) = s
        .get(&format!("/v1/runs/{id}/steps/each/items?status=odd"))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_fail_a_failed_item_stops_the_map_and_a_retry_runs_only_what_did_not_complete() {
    let s = Server::start_args(&["--max-parallel", "64"]);
    s.publish(map_workflow("map-fail", "fail")).await;
    // The items after the failing one take 100 ms each, so that at 50 at a
    // time some are still to start when item 500 fails for good (its three
    // attempts take under 100 ms): instant items could all have started by
    // then on a quiet machine.
    let mut input = thousand_items(&json!({"mode": "flaky", "times": 3}));
    for (index, item) in input["items"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        if index > 500 && index % 100 != 7 {
            *item = json!({"mode": "sleep", "ms": 100});
        }
    }
    let id = s.start_run("map-fail", input).await;
    let run = settled(&s, &id).await;
    assert_eq!(run["status"], "failed", "{run}");
    let each = step(&run, "each");
    assert_eq!(each["status"], "failed");
    let message = each["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1 of 1000 items failed; the first: item 500: attempt 3 fails"),
        "{message}"
    );
    assert_eq!(step(&run, "after")["status"], "cancelled");
    let counts = &each["items"];
    assert_eq!(counts["failed"], 1);
    assert_eq!(counts["running"], 0, "items under way were waited for");
    assert!(
        counts["pending"].as_i64().unwrap() > 0,
        "no item started after the failure: {counts}"
    );
    let done_before: BTreeSet<i64> = all_items(&s, &id, "each", "&status=completed")
        .await
        .iter()
        .map(|i| i["index"].as_i64().unwrap())
        .collect();

    // A retry by hand runs the failed item (its fourth attempt succeeds)
    // and those never started; the completed ones keep their outputs and
    // their single attempt.
    let (status, body) = s
        .post(&format!("/v1/runs/{id}/resume"), json!({"step_id": "each"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let run = settled(&s, &id).await;
    assert_eq!(run["status"], "completed", "{}", step(&run, "each"));
    let each = step(&run, "each");
    assert_eq!(
        each["items"],
        json!({"total": 1000, "pending": 0, "running": 0, "completed": 1000, "failed": 0})
    );
    assert_eq!(each["output"][500], json!({"attempt": 4}));
    assert_eq!(step(&run, "after")["status"], "completed");
    let items = all_items(&s, &id, "each", "").await;
    for index in &done_before {
        let item = &items[usize::try_from(*index).unwrap()];
        let expected = if index % 100 == 7 { 2 } else { 1 };
        assert_eq!(item["attempts"], expected, "ran again: {item}");
    }
}

#[tokio::test]
async fn for_each_is_checked_at_save_and_at_run_time() {
    let s = shared();
    let cases = [
        (
            json!({"id": "w", "uses": "wait", "for_each": "{{input.x}}", "config": {"duration_ms": 1}}),
            "cannot have it",
        ),
        (
            json!({"id": "a", "uses": "testkit@0", "max_parallel": 5}),
            "only to a step with for_each",
        ),
        (
            json!({"id": "a", "uses": "testkit@0", "config": {"mode": "{{item}}"}}),
            "only available in a step with for_each",
        ),
        (
            json!({"id": "a", "uses": "testkit@0", "for_each": "{{input.x}}", "max_parallel": 0}),
            "max_parallel must be 1 to 100",
        ),
        (
            json!({"id": "a", "uses": "testkit@0", "for_each": "[1, 2]"}),
            "must be a template",
        ),
        (
            json!({"id": "a", "uses": "testkit@0", "for_each": "{{input.x}}",
                   "if": "{{item}}"}),
            "only available in config and rate_limit.key",
        ),
        (
            json!({"id": "a", "uses": "testkit@0", "for_each": "{{input.x}}",
                   "on_item_failure": "ignore"}),
            "unknown variant",
        ),
    ];
    for (i, (step, expected)) in cases.into_iter().enumerate() {
        let (status, body) = s
            .post(
                "/v1/workflows",
                json!({"key": format!("bad-map-{i}"), "name": "bad", "steps": [step]}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert!(body.to_string().contains(expected), "{expected}: {body}");
    }

    s.publish(json!({"key": "map-small", "name": "small", "steps": [
        {"id": "each", "uses": "testkit@0", "for_each": "{{input.list}}",
         "config": {"mode": "context"}}
    ]}))
    .await;
    let run = s
        .run_sync("map-small", json!({"list": {"not": "a list"}}))
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        step(&run, "each")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("for_each: expected a list, got an object"),
        "{run}"
    );
    let run = s.run_sync("map-small", json!({"list": []})).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(step(&run, "each")["output"], json!([]));
    let run = s
        .run_sync("map-small", json!({"list": ["a", "b", "c"]}))
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    let keys: Vec<&str> = step(&run, "each")["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["each[0]", "each[1]", "each[2]"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_map_starts_no_item_until_unpaused() {
    let s = shared();
    s.publish(json!({"key": "map-pause", "name": "pause", "steps": [
        {"id": "each", "uses": "testkit@0", "for_each": "{{input.list}}", "max_parallel": 4,
         "config": {"mode": "sleep", "ms": 150}}
    ]}))
    .await;
    let list: Vec<i64> = (0..40).collect();
    let id = s.start_run("map-pause", json!({"list": list})).await;
    s.wait_until(&id, Duration::from_secs(30), |r| {
        step(r, "each")["items"]["completed"].as_i64().unwrap_or(0) >= 4
    })
    .await;
    let (status, body) = s.post(&format!("/v1/runs/{id}/pause"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    // Items under way finish; the step is then held.
    let run = s
        .wait_until(&id, Duration::from_secs(30), |r| {
            step(r, "each")["status"] == "held"
        })
        .await;
    let held = step(&run, "each")["items"].clone();
    assert_eq!(held["running"], 0, "{held}");
    assert!(held["pending"].as_i64().unwrap() > 0, "{held}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, still) = s.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(
        step(&still, "each")["items"],
        held,
        "an item started while paused"
    );

    let (status, body) = s.post(&format!("/v1/runs/{id}/unpause"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let run = s
        .wait_until(&id, Duration::from_secs(60), |r| r["status"] == "completed")
        .await;
    let output = step(&run, "each")["output"].as_array().unwrap().clone();
    assert_eq!(output.len(), 40);
    assert!(output.iter().all(|o| o["slept_ms"] == 150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_loses_no_item_and_sends_no_items_mail_twice() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--lease-ms", "1500", "--max-parallel", "16"];
    let mut server = Server::start_in(dir.path(), &args);
    server
        .publish(json!({"key": "map-effects", "name": "effects", "steps": [
            {"id": "each", "uses": "testkit@0", "for_each": "{{input.list}}", "max_parallel": 12,
             "config": {"mode": "effect", "ms": 150}}
        ]}))
        .await;
    let list: Vec<i64> = (0..120).collect();
    let id = server.start_run("map-effects", json!({"list": list})).await;
    let run = server
        .wait_until(&id, Duration::from_secs(60), |r| {
            step(r, "each")["items"]["completed"].as_i64().unwrap_or(0) >= 30
        })
        .await;
    let before = all_items(&server, &id, "each", "&status=completed").await;
    assert!(
        step(&run, "each")["items"]["completed"].as_i64().unwrap() < 120,
        "the map ended before the kill"
    );
    server.kill();

    let server = Server::start_in(dir.path(), &args);
    let run = server
        .wait_until(&id, Duration::from_secs(120), |r| {
            r["status"] == "completed" || r["status"] == "failed"
        })
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    let each = step(&run, "each");
    let output = each["output"].as_array().unwrap();
    assert_eq!(output.len(), 120);
    // Items recorded before the kill kept their outputs.
    for item in &before {
        let i = usize::try_from(item["index"].as_i64().unwrap()).unwrap();
        assert_eq!(output[i], item["output"], "item {i} changed");
    }

    // Exactly one message per item in the outbox, whatever ran twice.
    let outbox = common::outbox_rows(dir.path()).await;
    let mut per_item: BTreeMap<String, usize> = BTreeMap::new();
    for (run_id, step_id, _) in &outbox {
        assert_eq!(run_id, &id);
        *per_item.entry(step_id.clone()).or_default() += 1;
    }
    assert_eq!(per_item.len(), 120, "every item sent its mail");
    assert!(
        per_item.values().all(|n| *n == 1),
        "an item sent twice: {per_item:?}"
    );
    for (i, out) in output.iter().enumerate() {
        assert_eq!(out["key"], format!("{id}/each/{i}"));
        assert!(
            outbox
                .iter()
                .any(|(_, s, m)| *s == format!("each[{i}]") && out["message_id"] == *m),
            "item {i}: {out}"
        );
    }
}

/// A map's items take places in its rate limit one by one, under the key
/// each item renders: what a minute has no room for waits for the next
/// minute, without failing and without spending an attempt, while another
/// key has its own allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maps_items_share_its_rate_limit_by_key_and_wait_for_the_next_minute() {
    let s = shared();
    s.publish(json!({"key": "map-rate", "name": "rate", "steps": [
        {"id": "each", "uses": "testkit@0", "for_each": "{{input.list}}", "max_parallel": 4,
         "rate_limit": {"key": "partner:{{item.k}}", "per_minute": 2},
         "config": {"mode": "echo"}}
    ]}))
    .await;
    // Every item starts within one minute.
    let second = chrono::Utc::now().timestamp() % 60;
    if second >= 45 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
    let list = json!([{"k": "a"}, {"k": "a"}, {"k": "a"}, {"k": "b"}]);
    let id = s.start_run("map-rate", json!({"list": list})).await;
    s.wait_until(&id, Duration::from_secs(20), |r| {
        step(r, "each")["items"]["completed"] == 3
    })
    .await;
    let items = all_items(&s, &id, "each", "").await;
    let waiting: Vec<&Value> = items
        .iter()
        .filter(|i| i["status"] != "completed")
        .collect();
    assert_eq!(waiting.len(), 1, "{items:?}");
    assert!(waiting[0]["index"].as_i64().unwrap() < 3, "{items:?}");
    assert_eq!(items[3]["status"], "completed", "b has its own allowance");

    let run = s
        .wait_until(&id, Duration::from_secs(75), |r| r["status"] == "completed")
        .await;
    assert_eq!(step(&run, "each")["items"]["completed"], 4, "{run}");
    let items = all_items(&s, &id, "each", "").await;
    assert!(items.iter().all(|i| i["attempts"] == 1), "{items:?}");
    let ended = |i: &Value| {
        chrono::DateTime::parse_from_rfc3339(i["ended_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let index = waiting[0]["index"].as_i64().unwrap() as usize;
    let first_minute = items
        .iter()
        .filter(|i| i["index"] != index)
        .map(|i| ended(i) - ended(i).rem_euclid(60_000))
        .max()
        .unwrap();
    assert!(
        ended(&items[index]) >= first_minute + 60_000,
        "the waiting item ran in the next minute: {items:?}"
    );
}
