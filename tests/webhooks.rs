//! Outbound webhooks through the real binary, received by a local HTTP
//! server; signatures are checked by an independent implementation of
//! Standard Webhooks verification (Python's standard library).

use crate::common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Server;
use reqwest::Method;
use serde_json::{Value, json};

/// What the receiver saw: (webhook-id, webhook-timestamp, webhook-signature, body).
type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

struct Receiver {
    url: String,
    seen: Seen,
    /// The status the receiver answers with.
    answer: Arc<AtomicU16>,
}

async fn receiver() -> Receiver {
    let seen: Seen = Arc::default();
    let answer = Arc::new(AtomicU16::new(200));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (seen2, answer2) = (seen.clone(), answer.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen2.clone();
            let answer = answer2.clone();
            async move {
                let h = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let code = answer.load(Ordering::SeqCst);
                if code == 200 {
                    seen.lock().unwrap().push((
                        h("webhook-id"),
                        h("webhook-timestamp"),
                        h("webhook-signature"),
                        body,
                    ));
                }
                axum::http::StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, seen, answer }
}

/// Verifies every message with Python's hmac/hashlib/base64, following
/// the Standard Webhooks specification; returns how many verified.
fn verify_independently(secret: &str, seen: &[(String, String, String, String)]) -> usize {
    let messages: Vec<Value> = seen
        .iter()
        .map(|(id, ts, sig, body)| json!({"id": id, "ts": ts, "sig": sig, "body": body}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.json");
    std::fs::write(&path, serde_json::to_vec(&messages).unwrap()).unwrap();
    let script = r#"
import base64, hashlib, hmac, json, sys, time
secret, path = sys.argv[1], sys.argv[2]
key = base64.b64decode(secret.removeprefix("whsec_"))
ok = 0
for m in json.load(open(path)):
    assert abs(time.time() - int(m["ts"])) < 600, "stale timestamp"
    signed = f'{m["id"]}.{m["ts"]}.{m["body"]}'.encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    sigs = [s.split(",", 1)[1] for s in m["sig"].split(" ") if s.startswith("v1,")]
    if any(hmac.compare_digest(expected, s) for s in sigs):
        ok += 1
    else:
        print("bad signature", m["id"], file=sys.stderr)
print(ok)
"#;
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(secret)
        .arg(&path)
        .output()
        .expect("python3 runs the independent verifier");
    assert!(
        output.status.success(),
        "verifier failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

async fn wait_for(seen: &Seen, n: usize, secs: u64) -> Vec<(String, String, String, String)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let got = seen.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} deliveries, got {}: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn two_steps(key: &str) -> Value {
    json!({"key": key, "name": key, "steps": [
        {"id": "a", "uses": "testkit@0", "config": {"mode": "echo"}},
        {"id": "b", "uses": "testkit@0", "config": {"mode": "echo"}, "depends_on": ["a"]}
    ]})
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receivers here listen on loopback, which a server refuses by default.
const LOCAL: &str = "--egress-allow-private";

/// The first attempt of the subscription's first delivery, once made.
async fn first_attempt(s: &Server, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, log) = s.get(&format!("/v1/webhooks/{id}/deliveries")).await;
        if let Some(a) = log["items"][0]["attempt_log"]
            .as_array()
            .and_then(|a| a.first())
        {
            return a.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn private_addresses_are_refused_by_default() {
    let rx = receiver().await;
    let s = Server::start();
    s.publish(two_steps("private-hook")).await;
    // The same receiver as an IP literal, a name (checked by the resolver,
    // on what it resolves to) and an IPv4-mapped IPv6 literal.
    let urls = [
        rx.url.clone(),
        rx.url.replace("127.0.0.1", "localhost"),
        rx.url.replace("127.0.0.1", "[::ffff:127.0.0.1]"),
    ];
    let mut ids = Vec::new();
    for url in &urls {
        let (status, hook) = s
            .post(
                "/v1/webhooks",
                json!({"url": url, "events": ["run.completed"]}),
            )
            .await;
        assert_eq!(status, 201, "{hook}");
        ids.push(hook["id"].as_str().unwrap().to_owned());
    }
    s.run_sync("private-hook", json!({})).await;
    for (url, id) in urls.iter().zip(&ids) {
        let attempt = first_attempt(&s, id).await;
        let error = attempt["error"].as_str().unwrap();
        assert!(error.contains("not a public address"), "{attempt}");
        assert!(error.starts_with("refused: "), "{url}: {attempt}");
        assert!(error.contains("loopback address"), "{url}: {attempt}");
        assert!(
            error.contains("--egress-allow-private or --egress-allow <CIDR>"),
            "{url}: {attempt}"
        );
        assert!(attempt["status_code"].is_null());
    }
    assert!(rx.seen.lock().unwrap().is_empty());
}

/// `--webhook-allow-private-networks` is a deprecated alias of
/// `--egress-allow-private`: integrators' setups keep delivering.
#[tokio::test]
async fn the_deprecated_webhook_flag_still_allows_loopback() {
    let rx = receiver().await;
    let s = Server::start_args(&["--webhook-allow-private-networks"]);
    s.publish(two_steps("alias-hook")).await;
    let url = rx.url.replace("127.0.0.1", "localhost");
    let (status, hook) = s
        .post(
            "/v1/webhooks",
            json!({"url": url, "events": ["run.completed"]}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    s.run_sync("alias-hook", json!({})).await;
    wait_for(&rx.seen, 1, 20).await;
}

#[tokio::test]
async fn the_operator_allows_a_listed_block_only() {
    let rx = receiver().await;
    let s = Server::start_args(&common::ALLOW_LOOPBACK);
    s.publish(two_steps("listed-hook")).await;
    let outside = rx.url.replace("127.0.0.1", "127.0.0.2");
    let mut ids = Vec::new();
    for url in [&rx.url, &outside] {
        let (status, hook) = s
            .post(
                "/v1/webhooks",
                json!({"url": url, "events": ["run.completed"]}),
            )
            .await;
        assert_eq!(status, 201, "{hook}");
        ids.push(hook["id"].as_str().unwrap().to_owned());
    }
    s.run_sync("listed-hook", json!({})).await;
    wait_for(&rx.seen, 1, 20).await;
    let attempt = first_attempt(&s, &ids[1]).await;
    let error = attempt["error"].as_str().unwrap();
    assert!(
        error.starts_with("refused: 127.0.0.2 is a loopback address"),
        "{attempt}"
    );
}

#[tokio::test]
async fn deliveries_are_signed_filtered_and_logged() {
    let rx = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &[LOCAL]);
    s.publish(two_steps("hooked")).await;
    let (status, hook) = s
        .post(
            "/v1/webhooks",
            json!({"url": rx.url, "events": ["run.started", "step.completed", "run.completed"], "secret": SECRET}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["secret"], SECRET, "the secret is shown once");
    let id = hook["id"].as_str().unwrap().to_owned();
    let (_, again) = s.get(&format!("/v1/webhooks/{id}")).await;
    assert!(again.get("secret").is_none(), "{again}");

    let (status, run) = s
        .post(
            "/v1/runs",
            json!({"workflow": "hooked", "labels": {"customer": "c-42"}, "wait_ms": 60000}),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "completed");
    let seen = wait_for(&rx.seen, 4, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen_now = rx.seen.lock().unwrap().clone();
    assert_eq!(
        seen_now.len(),
        4,
        "only the subscribed events: {seen_now:?}"
    );
    assert_eq!(verify_independently(SECRET, &seen), 4);

    let bodies: Vec<Value> = seen
        .iter()
        .map(|(_, _, _, b)| serde_json::from_str(b).unwrap())
        .collect();
    let mut types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "run.completed",
            "run.started",
            "step.completed",
            "step.completed"
        ]
    );
    for body in &bodies {
        assert_eq!(body["data"]["run_id"], run["id"]);
        assert_eq!(body["data"]["workflow"], "hooked");
        assert_eq!(
            body["data"]["labels"],
            json!({"customer": "c-42"}),
            "{body}"
        );
        assert!(body["timestamp"].is_string());
    }
    let completed = bodies
        .iter()
        .find(|b| b["type"] == "run.completed")
        .unwrap();
    assert!(completed["data"]["result"].is_object(), "{completed}");

    let (status, log) = s.get(&format!("/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(status, 200);
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{log}");
    for d in items {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["attempt_log"].as_array().unwrap().len(), 1);
        assert_eq!(d["attempt_log"][0]["status_code"], 200);
    }
    let ids: Vec<&str> = seen.iter().map(|(id, ..)| id.as_str()).collect();
    assert!(
        items
            .iter()
            .all(|d| ids.contains(&d["id"].as_str().unwrap()))
    );

    // Bad subscriptions name the problem.
    for (body, needle) in [
        (json!({"url": "ftp://x", "events": ["*"]}), "http"),
        (
            json!({"url": rx.url, "events": ["run.exploded"]}),
            "run.exploded",
        ),
        (json!({"url": rx.url, "events": []}), "at least one"),
        (
            json!({"url": rx.url, "events": ["*"], "secret": "hunter2"}),
            "whsec_",
        ),
    ] {
        let (status, problem) = s.post("/v1/webhooks", body.clone()).await;
        assert_eq!(status, 422, "{body} -> {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn failures_are_retried_then_disable_the_subscription_and_redelivery_works() {
    let rx = receiver().await;
    rx.answer.store(500, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        dir.path(),
        &[
            LOCAL,
            "--webhook-retry-base-ms",
            "200",
            "--webhook-disable-after",
            "3",
        ],
    );
    s.publish(two_steps("flaky-hook")).await;
    let (_, hook) = s
        .post(
            "/v1/webhooks",
            json!({"url": rx.url, "events": ["run.completed"]}),
        )
        .await;
    let id = hook["id"].as_str().unwrap().to_owned();
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    s.run_sync("flaky-hook", json!({})).await;

    // Three failed attempts (200 ms, then 800 ms apart) disable it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let hook = loop {
        let (_, hook) = s.get(&format!("/v1/webhooks/{id}")).await;
        if hook["status"] == "disabled" {
            break hook;
        }
        assert!(std::time::Instant::now() < deadline, "{hook}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        hook["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("3 consecutive"),
        "{hook}"
    );
    let (_, log) = s.get(&format!("/v1/webhooks/{id}/deliveries")).await;
    let delivery = &log["items"][0];
    let attempts = delivery["attempt_log"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{delivery}");
    assert!(attempts.iter().all(|a| a["status_code"] == 500));
    assert!(attempts[0]["error"].as_str().unwrap().contains("500"));
    assert_eq!(
        delivery["status"], "pending",
        "retries remain, held while disabled"
    );

    // The receiver is fixed: re-enable and redeliver by hand.
    rx.answer.store(200, Ordering::SeqCst);
    let (status, _) = s
        .call(
            Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(status, 200);
    let delivery_id = delivery["id"].as_str().unwrap();
    let (status, _) = s
        .post(
            &format!("/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(status, 202);
    let seen = wait_for(&rx.seen, 1, 10).await;
    assert_eq!(seen[0].0, delivery_id, "the same webhook-id");
    assert_eq!(verify_independently(&secret, &seen), 1);
    let (status, _) = s
        .post(
            &format!("/v1/webhooks/{id}/deliveries/msg_nope/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn no_delivery_is_lost_when_the_host_dies_between_commit_and_delivery() {
    let rx = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    // Deliveries are queued with each transition but held back.
    let mut s = Server::start_in(dir.path(), &[LOCAL, "--hold-webhooks"]);
    s.publish(two_steps("durable-hook")).await;
    let (_, hook) = s
        .post("/v1/webhooks", json!({"url": rx.url, "events": ["*"]}))
        .await;
    let id = hook["id"].as_str().unwrap().to_owned();
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let mut run_ids = Vec::new();
    for _ in 0..5 {
        let run = s.run_sync("durable-hook", json!({})).await;
        assert_eq!(run["status"], "completed");
        run_ids.push(run["id"].as_str().unwrap().to_owned());
    }
    // run.started, 2 × step.started, 2 × step.completed, run.completed.
    let expected = 5 * 6;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, log) = s
            .get(&format!(
                "/v1/webhooks/{id}/deliveries?status=pending&limit=100"
            ))
            .await;
        if log["items"].as_array().unwrap().len() == expected {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rx.seen.lock().unwrap().is_empty());

    s.kill();
    let _s = Server::start_in(dir.path(), &[LOCAL]);
    wait_for(&rx.seen, expected, 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = rx.seen.lock().unwrap().clone();
    let mut ids: Vec<&str> = seen.iter().map(|(id, ..)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), expected, "every event");
    assert_eq!(seen.len(), expected, "once");
    let mut per_run = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (_, _, _, body) in &seen {
        let body: Value = serde_json::from_str(body).unwrap();
        per_run
            .entry(body["data"]["run_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["type"].as_str().unwrap().to_owned());
    }
    for run_id in &run_ids {
        let mut types = per_run[run_id].clone();
        types.sort_unstable();
        types.dedup();
        assert_eq!(
            types,
            [
                "run.completed",
                "run.started",
                "step.completed",
                "step.started"
            ],
            "{run_id}"
        );
    }
    assert_eq!(verify_independently(&secret, &seen), expected);
}
