//! The mail outbox against a real SMTP server (aiosmtpd): delivery after
//! an outage, permanent refusals, requeueing a failed message, paging.

use crate::common;

use std::time::{Duration, Instant};

use common::Server;
use common::smtp::{Relay, free_port};
use serde_json::{Value, json};

/// A server that sends mail to 127.0.0.1:`port` with short retry waits.
fn server_mailing(port: u16, extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("smtp://127.0.0.1:{port}");
    let mut args = vec!["--smtp-url", &url, "--mail-from", "ar@example.com"];
    args.extend_from_slice(extra);
    (Server::start_in(dir.path(), &args), dir)
}

/// Runs a one-step workflow that mails `to`; the message id.
async fn mail(s: &Server, key: &str, to: &str) -> String {
    s.publish(json!({"key": key, "name": key, "steps": [
        {"id": "send", "uses": "send_email@1", "config": {"to": [to], "subject": "Receivables", "body": "All paid."}}]}))
        .await;
    let run = s.run_sync(key, json!({})).await;
    assert_eq!(run["status"], "completed", "{run}");
    common::step(&run, "send")["output"]["message_id"]
        .as_str()
        .expect("message id")
        .to_owned()
}

async fn message(s: &Server, id: &str) -> Value {
    let (status, list) = s.get("/v1/outbox?limit=100").await;
    assert_eq!(status, 200, "{list}");
    list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|m| m["message_id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("no message {id} in {list}"))
}

/// Polls the outbox until the message has `status` (up to `timeout`).
async fn until_status(s: &Server, id: &str, status: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let m = message(s, id).await;
        if m["status"] == status {
            return m;
        }
        assert!(Instant::now() < deadline, "not {status} in time: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn mail_queued_during_a_20_second_relay_outage_is_delivered_when_it_returns() {
    let port = free_port();
    let (s, _dir) = server_mailing(
        port,
        &["--mail-retry-base-ms", "500", "--mail-retry-max-ms", "4000"],
    );
    let id = mail(&s, "outage", "ops@example.com").await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let waiting = message(&s, &id).await;
    assert_eq!(
        waiting["status"], "queued",
        "still queued after 20 s down: {waiting}"
    );
    assert!(waiting["attempts"].as_i64().unwrap() >= 3, "{waiting}");
    assert!(waiting["last_error"].is_string(), "{waiting}");
    assert!(waiting["next_attempt_at"].is_string(), "{waiting}");

    let relay = Relay::start(port);
    let got = relay
        .next(Duration::from_secs(15))
        .expect("delivered once the relay is back");
    assert!(got.starts_with(&format!("<{id}@weft> ")), "{got}");
    let sent = until_status(&s, &id, "sent", Duration::from_secs(5)).await;
    assert!(sent["sent_at"].is_string(), "{sent}");
    assert!(sent.get("next_attempt_at").is_none(), "{sent}");
    assert_eq!(relay.next(Duration::from_secs(3)), None, "sent once");
}

#[tokio::test]
async fn a_permanent_smtp_refusal_fails_the_message_at_once_with_the_reply() {
    let port = free_port();
    let _relay = Relay::start(port);
    let (s, _dir) = server_mailing(port, &["--mail-retry-base-ms", "500"]);
    let id = mail(&s, "bounce", "bounce@example.com").await;
    let failed = until_status(&s, &id, "failed", Duration::from_secs(10)).await;
    assert_eq!(failed["attempts"], 1, "{failed}");
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.contains("550") && error.contains("mailbox unavailable"),
        "{error}"
    );
}

#[tokio::test]
async fn retry_requeues_a_failed_message_and_it_is_delivered() {
    let port = free_port();
    let (s, _dir) = server_mailing(
        port,
        &["--mail-retry-base-ms", "200", "--mail-max-attempts", "2"],
    );
    let id = mail(&s, "requeue", "ops@example.com").await;
    let failed = until_status(&s, &id, "failed", Duration::from_secs(15)).await;
    assert_eq!(failed["attempts"], 2, "{failed}");
    let relay = Relay::start(port);
    assert_eq!(
        relay.next(Duration::from_secs(2)),
        None,
        "failed stays failed"
    );

    let retry = format!("/v1/outbox/{id}/retry");
    // Another tenant cannot see it; a read-only key may not send mail.
    let (status, other) = s.post("/v1/tenants", json!({"name": "other"})).await;
    assert_eq!(status, 201, "{other}");
    let other_key = other["admin_key"].as_str().unwrap();
    let (status, body) = s
        .call_as(other_key, reqwest::Method::POST, &retry, None)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, reader) = s
        .post(
            "/v1/api-keys",
            json!({"name": "reader", "scopes": ["runs:read"]}),
        )
        .await;
    assert_eq!(status, 201, "{reader}");
    let (status, body) = s
        .call_as(
            reader["key"].as_str().unwrap(),
            reqwest::Method::POST,
            &retry,
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");

    let (status, queued) = s.call(reqwest::Method::POST, &retry, None).await;
    assert_eq!(status, 200, "{queued}");
    assert_eq!(
        (queued["status"].as_str(), queued["attempts"].as_i64()),
        (Some("queued"), Some(0))
    );
    let got = relay
        .next(Duration::from_secs(10))
        .expect("delivered after the retry");
    assert!(got.starts_with(&format!("<{id}@weft> ")), "{got}");
    until_status(&s, &id, "sent", Duration::from_secs(5)).await;
    let (status, body) = s.call(reqwest::Method::POST, &retry, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("already sent"),
        "{body}"
    );
    let (status, body) = s
        .call(reqwest::Method::POST, "/v1/outbox/msg_nope/retry", None)
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn the_outbox_pages_past_100_messages_with_next_cursor() {
    let s = Server::start();
    let steps: Vec<Value> = (0..105)
        .map(|n| {
            json!({"id": format!("s{n}"), "uses": "send_email@1",
            "config": {"to": ["ops@example.com"], "subject": format!("n{n}"), "body": "b"}})
        })
        .collect();
    s.publish(json!({"key": "many", "name": "Many", "steps": steps}))
        .await;
    let run = s.run_sync("many", json!({})).await;
    assert_eq!(run["status"], "completed", "{run}");

    let mut seen = std::collections::BTreeSet::new();
    let mut path = "/v1/outbox?limit=100".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = s.get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for m in page["items"].as_array().unwrap() {
            assert!(
                seen.insert(m["message_id"].as_str().unwrap().to_owned()),
                "{m}"
            );
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/outbox?limit=100&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!((pages, seen.len()), (2, 105));
    let (status, body) = s.get("/v1/outbox?limit=101").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn a_task_link_arrives_by_smtp_and_answers_the_step() {
    let port = free_port();
    let relay = Relay::start(port);
    let (s, _dir) = server_mailing(port, &[]);
    s.publish(json!({"key": "mailed-task", "name": "Mailed task", "steps": [
        {"id": "ok", "uses": "request_user_action", "config": {
            "actions": ["approve", "decline"], "assignees": ["pat@example.com"],
            "title": "Approve the quarterly report",
            "description": "A long description line that makes the mail's lines long enough to be wrapped by the transfer encoding, which a link must survive intact."}}]}))
        .await;
    let (status, run) = s
        .post("/v1/runs", json!({"workflow": "mailed-task", "input": {}}))
        .await;
    assert_eq!(status, 202, "{run}");
    let got = relay.next(Duration::from_secs(20)).expect("the task mail");
    assert!(got.ends_with(" pat@example.com"), "{got}");
    let body = relay.next_body(Duration::from_secs(5)).expect("its body");
    assert!(body.contains("Approve the quarterly report"), "{body}");
    // The link as a mail client shows it, decoded from the wire.
    let start = body.find("http://").expect("a link");
    let link = body[start..].split_whitespace().next().unwrap().to_owned();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = browser.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200, "{link}");
    let answer = browser
        .post(&link)
        .form(&[("_action", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    let id = run["id"].as_str().unwrap();
    let done = s
        .wait_until(id, Duration::from_secs(20), |r| r["status"] == "completed")
        .await;
    assert_eq!(common::step(&done, "ok")["output"]["action"], "approve");
}
