//! Three `weft serve` processes share one Postgres database: 300 runs of a
//! DAG workflow started through all three, one host SIGKILLed midway and
//! restarted later. Every run completes, no step's side effect (a mail in
//! the outbox, keyed by the attempt's idempotency key) happens twice, and
//! the three hosts answer reads identically.
//!
//! Needs Postgres (see `common::pg`): skipped with a notice without one,
//! failed in CI (`WEFT_REQUIRE_POSTGRES`).

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Server, pg, step};
use serde_json::{Value, json};
use sqlx::Connection as _;

const RUNS: usize = 300;
const STEPS: [&str; 4] = ["fetch", "left", "right", "join"];
const SECRETS_KEY: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_the_work_and_survive_a_killed_one() {
    if !pg::available() {
        return;
    }
    // Built-ins only: the testkit is uploaded through host 0 as the
    // tenant's own plugin, so the other hosts must learn of the upload and
    // the grants from the database.
    let extra = ["--lease-ms", "1500", "--max-parallel", "8"];
    let (mut hosts, dirs, url) = three_hosts("multihost", &extra).await;
    let args = host_args(&url, &extra);

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

/// The flags of a host on the database at `url`.
fn host_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--database", url, "--secrets-key", SECRETS_KEY];
    args.extend_from_slice(extra);
    args
}

/// Three hosts with no plugin directory and the testkit uploaded through
/// host 0 (kv and mail granted), on a fresh database named after `name`.
async fn three_hosts(name: &str, extra: &[&str]) -> (Vec<Server>, Vec<tempfile::TempDir>, String) {
    let url = pg::fresh(&format!("{name}_{}", std::process::id()));
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let args = host_args(&url, extra);
    let hosts: Vec<Server> = dirs
        .iter()
        .map(|d| Server::start_with(d.path(), false, &args))
        .collect();
    let testkit = common::guests::rust("testkit");
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
    (hosts, dirs, url)
}

/// Postgres hosts commit in parallel, so an event can take its id before
/// another and commit after it. Forced here: transaction A appends an event
/// and stays open while a run commits later ids and the readers read; then
/// A commits. The JSON feed paged from its cursor, the live stream and the
/// webhook fan-out each deliver A exactly once, and the later run's events
/// once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feed_reader_delivers_an_event_that_commits_late_once() {
    if !pg::available() {
        return;
    }
    let (hosts, _dirs, url) = three_hosts("feed", &["--egress-allow-private"]).await;
    let host = &hosts[0];
    host.publish(json!({"key": "feed", "name": "Feed", "steps": [
        {"id": "a", "uses": "testkit@0", "config": {"mode": "echo"}}
    ]}))
    .await;
    let first = host.run_sync("feed", json!({})).await;
    assert_eq!(first["status"], "completed", "{first}");
    let first_id = first["id"].as_str().unwrap().to_owned();
    let (status, hook) = host
        .post(
            "/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    // Each JSON read pages from `cursor` to the end of the feed, moving it.
    let page_through = async |cursor: &mut String, read: &mut Vec<Value>| loop {
        let (status, page) = hosts[2].get(&format!("/v1/events?limit=2{cursor}")).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        read.extend(items.iter().cloned());
        if let Some(last) = items.last() {
            *cursor = format!("&cursor={}", last["id"]);
        }
        if page["next_cursor"].is_null() {
            return;
        }
    };
    // Every reader starts after the first run: the stream from the JSON
    // reader's cursor (a stream without one starts at the newest event
    // below the oldest transaction in flight on the whole server, which
    // other tests' databases can hold back).
    let mut cursor = String::new();
    page_through(&mut cursor, &mut Vec::new()).await;
    let stream = host
        .req(
            reqwest::Method::GET,
            &format!("/v1/events?{}", cursor.trim_start_matches('&')),
        )
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut stream = stream.bytes_stream();

    // A: takes an event id and stays open.
    let mut a = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut a).await.unwrap();
    let tenant: String = sqlx::query_scalar("SELECT tenant_id FROM runs WHERE id = $1")
        .bind(&first_id)
        .fetch_one(&mut a)
        .await
        .unwrap();
    let late: i64 = sqlx::query_scalar(
        "INSERT INTO events (tenant_id, run_id, type, step_id, data, at)
         VALUES ($1, $2, 'step.completed', 'late', '{\"late\": true}', 0) RETURNING id",
    )
    .bind(&tenant)
    .bind(&first_id)
    .fetch_one(&mut a)
    .await
    .unwrap();
    // B: a whole run commits with later ids, through another host.
    let second = hosts[1].run_sync("feed", json!({})).await;
    assert_eq!(second["status"], "completed", "{second}");
    let second_id = second["id"].as_str().unwrap().to_owned();
    // The readers read while A is open (the fan-out runs on every change).
    let mut read = Vec::new();
    page_through(&mut cursor, &mut read).await;
    assert!(read.iter().all(|e| e["id"] != late), "{read:?}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    sqlx::query("COMMIT").execute(&mut a).await.unwrap();
    page_through(&mut cursor, &mut read).await;

    let count =
        |events: &[Value], pick: &dyn Fn(&Value) -> bool| events.iter().filter(|e| pick(e)).count();
    let is_late = |e: &Value| e["id"] == late;
    let second_done = |e: &Value| e["run_id"] == second_id.as_str() && e["type"] == "run.completed";
    assert_eq!(count(&read, &is_late), 1, "JSON pages: {read:?}");
    assert_eq!(count(&read, &second_done), 1, "JSON pages: {read:?}");
    let ids: Vec<i64> = read.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "an event paged twice: {ids:?}");

    // The live stream: A once, and the second run's end.
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        use futures::StreamExt as _;
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert_eq!(
        text.matches(&format!("id: {late}\n")).count(),
        1,
        "live stream: {text}"
    );
    assert_eq!(
        text.matches("event: run.completed").count(),
        1,
        "live stream: {text}"
    );

    // The webhook fan-out: one delivery of A, one of the second run's end.
    let deliveries = loop {
        let (status, log) = host
            .get(&format!("/v1/webhooks/{hook_id}/deliveries?limit=100"))
            .await;
        assert_eq!(status, 200, "{log}");
        let items = log["items"].as_array().unwrap().clone();
        if items.iter().any(|d| d["event_id"] == late) {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let (_, log) = host
                .get(&format!("/v1/webhooks/{hook_id}/deliveries?limit=100"))
                .await;
            break log["items"].as_array().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        count(&deliveries, &|d: &Value| d["event_id"] == late),
        1,
        "{deliveries:?}"
    );
    assert_eq!(
        count(&deliveries, &|d: &Value| d["event_type"] == "run.completed"),
        1,
        "{deliveries:?}"
    );
}

/// Three hosts act on the same runs at once: a person's answer, a cancel
/// and a terminate arrive through different hosts while the steps the
/// answer starts finish on any host. Each run ends in one state that every
/// host reports, matching the one stop that succeeded (or completed if
/// none did); its log has one terminal event and starts no step after it;
/// no step's effect happens twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_racing_on_the_same_runs_leave_one_consistent_state() {
    if !pg::available() {
        return;
    }
    const RACES: usize = 24;
    let (hosts, _dirs, url) = three_hosts("race", &["--max-parallel", "8"]).await;
    let effect = |id: &str, after: &[&str]| json!({"id": id, "uses": "testkit@0", "depends_on": after, "config": {"mode": "effect", "ms": 20}});
    hosts[0]
        .publish(json!({"key": "race", "name": "Race", "steps": [
            {"id": "first", "uses": "testkit@0", "config": {"mode": "effect", "ms": 20}},
            {"id": "approve", "uses": "request_user_action", "depends_on": ["first"],
             "config": {"actions": ["approve"]}},
            effect("p1", &["approve"]),
            effect("p2", &["approve"]),
            effect("p3", &["approve"]),
            effect("last", &["p1", "p2", "p3"])
        ]}))
        .await;
    let mut ids = Vec::new();
    for i in 0..RACES {
        let (status, run) = hosts[i % 3]
            .post("/v1/runs", json!({"workflow": "race", "input": {"i": i}}))
            .await;
        assert_eq!(status, 202, "{run}");
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    for (i, id) in ids.iter().enumerate() {
        hosts[i % 3]
            .wait_until(id, Duration::from_secs(60), |r| r["status"] == "paused")
            .await;
    }
    // Every run at once: the answer through one host, then a cancel and a
    // terminate through the others, a few milliseconds apart (some land
    // while p1-p3 run or are being recorded).
    let races = ids.iter().enumerate().map(|(i, id)| {
        let hosts = &hosts;
        async move {
            let path = |what: &str| format!("/v1/runs/{id}/{what}");
            let resume_path = path("resume");
            let resume = hosts[i % 3].post(
                &resume_path,
                json!({"step_id": "approve", "action": "approve"}),
            );
            let cancel = async {
                tokio::time::sleep(Duration::from_millis((i as u64 * 7) % 40)).await;
                hosts[(i + 1) % 3].post(&path("cancel"), json!({})).await
            };
            let terminate = async {
                tokio::time::sleep(Duration::from_millis((i as u64 * 13) % 40)).await;
                hosts[(i + 2) % 3].post(&path("terminate"), json!({})).await
            };
            let (resumed, cancelled, terminated) = tokio::join!(resume, cancel, terminate);
            for (what, (status, body)) in [
                ("resume", &resumed),
                ("cancel", &cancelled),
                ("terminate", &terminated),
            ] {
                assert!(
                    *status == 200 || *status == 409,
                    "{what} of {id}: {status} {body}"
                );
            }
            (resumed.0, cancelled.0, terminated.0)
        }
    });
    let outcomes = futures::future::join_all(races).await;
    let (mut completed, mut stopped) = (0, 0);
    for ((i, id), (resumed, cancelled, terminated)) in ids.iter().enumerate().zip(outcomes) {
        let run = hosts[i % 3]
            .wait_until(id, Duration::from_secs(60), |r| {
                ["completed", "cancelled", "terminated", "failed"]
                    .contains(&r["status"].as_str().unwrap_or_default())
                    && r["steps"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|s| s["status"] != "running")
            })
            .await;
        let status = run["status"].as_str().unwrap().to_owned();
        let expected = match (cancelled, terminated) {
            (200, 200) => panic!("{id}: both the cancel and the terminate succeeded"),
            (200, _) => "cancelled",
            (_, 200) => "terminated",
            _ => "completed",
        };
        assert_eq!(
            status, expected,
            "{id}: resume {resumed}, cancel {cancelled}, terminate {terminated}: {run}"
        );
        if expected == "completed" {
            assert_eq!(resumed, 200, "{run}");
            completed += 1;
        } else {
            stopped += 1;
        }
        // One terminal event, the last run event; no step starts after it.
        let (_, events) = hosts[(i + 1) % 3]
            .get(&format!("/v1/runs/{id}/events?limit=100"))
            .await;
        let events = events["items"].as_array().unwrap().clone();
        let terminal: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                [
                    "run.completed",
                    "run.cancelled",
                    "run.terminated",
                    "run.failed",
                ]
                .contains(&e["type"].as_str().unwrap_or_default())
            })
            .map(|(n, _)| n)
            .collect();
        assert_eq!(terminal.len(), 1, "{id}: {events:?}");
        assert_eq!(events[terminal[0]]["type"], format!("run.{status}"));
        assert!(
            events[terminal[0]..]
                .iter()
                .all(|e| e["type"] != "step.started"
                    && !e["type"].as_str().unwrap().starts_with("run.")
                    || e == &events[terminal[0]]),
            "{id}: {events:?}"
        );
        let views = get_from_all(&hosts, &format!("/v1/runs/{id}")).await;
        assert!(views.iter().all(|v| v["status"] == status), "{views:?}");
    }
    eprintln!("{RACES} races: {completed} completed, {stopped} cancelled or terminated");

    // Each step's effect at most once; every step of a completed run once.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let twice: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT run_id, step_id, COUNT(*) FROM outbox GROUP BY run_id, step_id HAVING COUNT(*) > 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(twice.is_empty(), "side effects ran twice: {twice:?}");
}

/// Every host runs the task loop: each pause gets its tasks once, each
/// reminder and expiry happens once, and a link mailed by one host is
/// answered on another (they share the secrets key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_create_remind_and_expire_each_task_once() {
    if !pg::available() {
        return;
    }
    const RUNS: usize = 6;
    // Small pools: this test runs beside the other three-host tests, and
    // the Postgres server allows 100 connections in all.
    let (hosts, _dirs, _url) = three_hosts("tasks", &["--db-max-connections", "4"]).await;
    hosts[0]
        .publish(json!({"key": "nag", "name": "Nag", "steps": [
            {"id": "ok", "uses": "request_user_action", "config": {
                "actions": ["approve", "decline"], "title": "Approve {{input.i}}",
                "assignees": ["ann@example.com", "bob@example.com"],
                "remind_after_ms": 1000, "max_reminders": 2,
                "expires_after_ms": 4500, "on_expiry": "fail"}}]}))
        .await;
    let mut ids = Vec::new();
    for i in 0..RUNS {
        let (status, run) = hosts[i % 3]
            .post("/v1/runs", json!({"workflow": "nag", "input": {"i": i}}))
            .await;
        assert_eq!(status, 202, "{run}");
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    // The first run is answered through host 2 with a link host 0 or 1 may
    // have mailed; the rest expire.
    let answered = &ids[0];
    let link = loop {
        let (_, tasks) = hosts[1].get(&format!("/v1/tasks?run_id={answered}")).await;
        if let Some(link) = tasks["items"]
            .as_array()
            .and_then(|t| t.first())
            .and_then(|t| t["link"].as_str())
        {
            break link.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let token = link.split("/t/").nth(1).unwrap();
    let answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/t/{token}", hosts[2].url))
        .form(&[("_action", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &ids[1..] {
        loop {
            let (_, run) = hosts[0].get(&format!("/v1/runs/{id}")).await;
            if run["status"] == "failed" {
                assert_eq!(step(&run, "ok")["error"]["kind"], "expired", "{run}");
                break;
            }
            assert!(Instant::now() < deadline, "run {id} did not expire: {run}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (_, run) = hosts[0].get(&format!("/v1/runs/{answered}")).await;
    assert_eq!(run["status"], "completed", "{run}");
    for id in &ids[1..] {
        let (_, mail) = hosts[1]
            .get(&format!("/v1/outbox?run_id={id}&limit=100"))
            .await;
        let mail = mail["items"].as_array().unwrap();
        for to in ["ann@example.com", "bob@example.com"] {
            let subjects: Vec<&str> = mail
                .iter()
                .filter(|m| m["to"][0] == to)
                .map(|m| m["subject"].as_str().unwrap())
                .collect();
            assert_eq!(
                subjects.len(),
                3,
                "one link and two reminders to {to}: {subjects:?}"
            );
            assert_eq!(
                subjects
                    .iter()
                    .filter(|s| s.starts_with("Reminder: "))
                    .count(),
                2
            );
        }
        let (_, events) = hosts[2]
            .get(&format!("/v1/runs/{id}/events?limit=100"))
            .await;
        let count = |kind: &str| {
            events["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == kind)
                .count()
        };
        assert_eq!(count("task.created"), 2, "{events}");
        assert_eq!(count("task.reminded"), 4, "{events}");
        assert_eq!(count("task.expired"), 2, "{events}");
    }
}

/// Concurrency keys across hosts: 90 starts for 6 customers spread over
/// three hosts, at most one run per customer at a time and each
/// customer's runs in start order; then 30 replacing starts for one key
/// through all three leave exactly one run of it completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_hold_a_concurrency_key_limit() {
    if !pg::available() {
        return;
    }
    let (hosts, _dirs, _url) = three_hosts("keys", &["--db-max-connections", "4"]).await;
    hosts[0]
        .publish(json!({"key": "per-customer", "name": "Per customer",
            "concurrency": {"key": "{{input.customer}}", "limit": 1},
            "steps": [{"id": "work", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 30}}]}))
        .await;
    hosts[0]
        .publish(json!({"key": "latest", "name": "Latest",
            "concurrency": {"key": "{{input.customer}}", "limit": 1, "on_limit": "replace"},
            "steps": [{"id": "work", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 4000}}]}))
        .await;
    let starts = (0..90).map(|i| {
        let host = &hosts[i % 3];
        async move {
            let (status, run) = host
                .post("/v1/runs", json!({"workflow": "per-customer", "input": {"customer": format!("c-{}", i % 6)}}))
                .await;
            assert_eq!(status, 202, "{run}");
        }
    });
    futures::future::join_all(starts).await;
    let replacing = (0..30).map(|i| {
        let host = &hosts[i % 3];
        async move {
            let (status, run) = host
                .post(
                    "/v1/runs",
                    json!({"workflow": "latest", "input": {"customer": "c-1"}}),
                )
                .await;
            assert_eq!(status, 202, "{run}");
        }
    });
    futures::future::join_all(replacing).await;

    let deadline = Instant::now() + Duration::from_secs(120);
    let runs = loop {
        let mut runs = Vec::new();
        let mut cursor = String::new();
        loop {
            let (_, page) = hosts[1].get(&format!("/v1/runs?limit=100{cursor}")).await;
            runs.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        let unfinished = runs
            .iter()
            .filter(|r| !["completed", "cancelled"].contains(&r["status"].as_str().unwrap()))
            .count();
        if runs.len() == 120 && unfinished == 0 {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "{unfinished} of {} unfinished",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for run in runs.iter().filter(|r| r["workflow"] == "per-customer") {
        assert_eq!(run["status"], "completed", "{run}");
        by_key
            .entry(run["concurrency_key"].as_str().unwrap().to_owned())
            .or_default()
            .push(run);
    }
    assert_eq!(by_key.len(), 6);
    for (key, of_key) in by_key {
        assert_eq!(of_key.len(), 15, "{key}");
        common::assert_one_at_a_time_in_order(&key, of_key);
    }
    let latest: Vec<&Value> = runs.iter().filter(|r| r["workflow"] == "latest").collect();
    let completed = latest.iter().filter(|r| r["status"] == "completed").count();
    assert_eq!(completed, 1, "one replacing start wins: {latest:?}");
}

/// A tenant's cap on running steps holds across hosts without a lock they
/// all wait for: each host claims the tenant's steps within its share of
/// the cap. 48 runs of a 200 ms step started through three hosts under a
/// cap of 4: never more than 4 running at once (sampled from the database
/// every 10 ms), every run completes, and more than one host runs them
/// (a host that held the whole cap gives part of it up once others have
/// work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_hold_a_tenant_cap() {
    if !pg::available() {
        return;
    }
    let (hosts, _dirs, url) = three_hosts(
        "tenantcap",
        &["--tenant-max-running", "4", "--db-max-connections", "4"],
    )
    .await;
    hosts[0]
        .publish(json!({"key": "slow", "name": "Slow",
            "steps": [{"id": "work", "uses": "testkit@0", "config": {"mode": "sleep", "ms": 200}}]}))
        .await;
    let starts = (0..48).map(|i| {
        let host = &hosts[i % 3];
        async move {
            let (status, run) = host
                .post("/v1/runs", json!({"workflow": "slow", "input": {}}))
                .await;
            assert_eq!(status, 202, "{run}");
        }
    });
    futures::future::join_all(starts).await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut most = 0;
    loop {
        let (running, completed): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM steps WHERE status = 'running'),
                    (SELECT COUNT(*) FROM runs WHERE status = 'completed')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(
            running <= 4,
            "{running} steps of the tenant running at once"
        );
        most = most.max(running);
        if completed == 48 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{completed} of 48 runs completed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(most >= 2, "at most {most} ran at once");
    let hosts_used: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT host) FROM attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        hosts_used >= 2,
        "only {hosts_used} host ran the tenant's steps"
    );
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 48, "one attempt per run");
}

/// A step's rate limit is one count in the database: 12 runs started
/// through three hosts within one minute, a limit of 5 a minute for their
/// key: 5 run, 7 wait for the next minute (none fails, none runs twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_a_rate_limit() {
    if !pg::available() {
        return;
    }
    let (hosts, _dirs, _url) = three_hosts("rates", &["--db-max-connections", "4"]).await;
    hosts[0]
        .publish(json!({"key": "partner", "name": "Partner",
            "steps": [{"id": "call", "uses": "testkit@0", "config": {"mode": "echo"},
                       "rate_limit": {"key": "partner", "per_minute": 5}}]}))
        .await;
    let second = chrono::Utc::now().timestamp() % 60;
    if second >= 40 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
    let starts = (0..12).map(|i| {
        let host = &hosts[i % 3];
        async move {
            let (status, run) = host
                .post(
                    "/v1/runs",
                    json!({"workflow": "partner", "input": {"i": i}}),
                )
                .await;
            assert_eq!(status, 202, "{run}");
            run["id"].as_str().unwrap().to_owned()
        }
    });
    let ids = futures::future::join_all(starts).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut completed = 0;
        let mut waiting = 0;
        for id in &ids {
            let (_, run) = hosts[2].get(&format!("/v1/runs/{id}")).await;
            let call = step(&run, "call");
            if run["status"] == "completed" {
                completed += 1;
            } else if call["status"] == "ready"
                && call["attempt_log"][0]["status"] == "rate_limited"
            {
                waiting += 1;
            }
            assert_ne!(run["status"], "failed", "{run}");
        }
        assert!(
            completed <= 5,
            "{completed} ran in one minute with a limit of 5"
        );
        if completed == 5 && waiting == 7 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{completed} completed, {waiting} waiting"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// On Postgres, a host's recorder writes the progress of a running
/// attempt with its next batch of results, locking the run. A run that
/// another transaction holds meanwhile (here: the test's, for a second)
/// does not hold back that batch: other runs go on completing, and the
/// held run's reports land once it is free, in order, before its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_held_elsewhere_does_not_hold_back_other_runs_results() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh(&format!("held_{}", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let host = Server::start_with(dir.path(), false, &host_args(&url, &[]));
    let (status, uploaded) = host.upload_plugin(common::guests::rust("testkit")).await;
    assert_eq!(status, 201, "{uploaded}");
    host.publish(json!({"key": "slow", "name": "Slow", "steps": [
        {"id": "nap", "uses": "testkit@0",
         "config": {"mode": "sleep", "ms": 2500, "report_every_ms": 100}}
    ]}))
    .await;
    let steps: Vec<Value> = (0..10)
        .map(|i| {
            let after: Vec<String> = (i > 0).then(|| format!("s{}", i - 1)).into_iter().collect();
            json!({"id": format!("s{i}"), "uses": "testkit@0", "depends_on": after,
                   "config": {"mode": "echo"}})
        })
        .collect();
    host.publish(json!({"key": "chain", "name": "Chain", "steps": steps}))
        .await;

    let (status, slow) = host.post("/v1/runs", json!({"workflow": "slow"})).await;
    assert_eq!(status, 202, "{slow}");
    let slow_id = slow["id"].as_str().unwrap().to_owned();
    // Once its first report is in, the test holds the run's row.
    let progress_of = async |id: &str| -> Vec<Value> {
        let (status, events) = host.get(&format!("/v1/runs/{id}/events?limit=100")).await;
        assert_eq!(status, 200, "{events}");
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["step_id"] == "nap")
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !progress_of(&slow_id)
        .await
        .iter()
        .any(|e| e["type"] == "step.progress")
    {
        assert!(Instant::now() < deadline, "no progress from {slow_id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT id FROM runs WHERE id = $1 FOR UPDATE")
        .bind(&slow_id)
        .fetch_all(&mut holder)
        .await
        .unwrap();
    // Chains run to the end meanwhile, over more than one of the slow
    // run's reports (one every 500 ms at most).
    let held_since = Instant::now();
    let mut chains = 0;
    while held_since.elapsed() < Duration::from_millis(1_200) {
        let (status, run) = host
            .post(
                "/v1/runs",
                json!({"workflow": "chain", "input": {}, "wait_ms": 10000}),
            )
            .await;
        assert!(status == 200 || status == 202, "{status} {run}");
        assert_eq!(run["status"], "completed", "while {slow_id} is held: {run}");
        chains += 1;
    }
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    host.wait_until(&slow_id, Duration::from_secs(30), |r| {
        r["status"] == "completed"
    })
    .await;
    let events = progress_of(&slow_id).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"step.started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"step.completed"), "{kinds:?}");
    let percents: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "step.progress")
        .map(|e| e["data"]["percent"].as_u64().unwrap())
        .collect();
    assert!(
        percents.len() >= 4 && percents.windows(2).all(|w| w[0] < w[1]),
        "reports before, while and after the run was held, in order ({chains} chains ran meanwhile): {percents:?}"
    );
    assert_eq!(percents.last(), Some(&100), "{percents:?}");
}
