//! People in the loop through the real binary: tasks created for a paused
//! human step's assignees, their links mailed through the outbox, the
//! link's page answered with no API key, reminders and expiry on the
//! stored clock (`--clock-start`) across restarts, and tenant isolation.

use crate::common;

use std::time::Duration;

use common::{Server, shared, step};
use reqwest::Method;
use serde_json::{Value, json};

/// A client with no key that does not follow redirects: what a person's
/// browser sends.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn open(link: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let response = browser().get(link).send().await.expect("GET link");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.text().await.expect("page"), headers)
}

async fn submit(link: &str, fields: &[(&str, &str)]) -> (u16, String, Option<String>) {
    let response = browser()
        .post(link)
        .form(fields)
        .send()
        .await
        .expect("POST link");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (status, response.text().await.expect("page"), location)
}

/// The run's tasks once `count` exist.
async fn tasks_of(s: &Server, run: &str, count: usize) -> Vec<Value> {
    for _ in 0..200 {
        let (status, body) = s.get(&format!("/v1/tasks?run_id={run}")).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        if items.len() >= count {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run} never had {count} tasks");
}

/// The run's mail, oldest first.
async fn mail_of(s: &Server, run: &str) -> Vec<Value> {
    let (status, body) = s.get(&format!("/v1/outbox?run_id={run}&limit=100")).await;
    assert_eq!(status, 200, "{body}");
    let mut items = body["items"].as_array().unwrap().clone();
    items.reverse();
    items
}

/// The task link in a mail's body.
fn link_in(mail: &Value) -> String {
    let body = mail["body"].as_str().unwrap();
    let start = body.find("http://").expect("a link in the mail");
    body[start..].split_whitespace().next().unwrap().to_owned()
}

async fn events_of(s: &Server, run: &str) -> Vec<Value> {
    let (status, body) = s.get(&format!("/v1/runs/{run}/events?limit=100")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_approval_link_needs_no_key_and_answers_once() {
    let s = shared();
    s.publish(
        json!({"key": "approval-link", "name": "Approval by link", "steps": [
        {"id": "approve", "uses": "request_user_action", "config": {
            "actions": ["approve", "decline"],
            "assignees": ["ann@example.com", "{{input.second}}"],
            "title": "Approve the order for {{input.customer}}",
            "description": "Order **#42**: <b>3 chairs</b>. [Terms](https://example.com/terms) Note: {{input.note}}"}},
        {"id": "ship", "uses": "testkit@0", "depends_on": ["approve"],
         "config": {"mode": "echo", "action": "{{steps.approve.output.action}}"}}]}),
    )
    .await;
    let run = s
        .start_run(
            "approval-link",
            json!({"customer": "Acme", "second": "bob@example.com",
               "note": "[Sign here](https://evil.example) *now*"}),
        )
        .await;
    let tasks = tasks_of(&s, &run, 2).await;
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let assignees: Vec<&str> = tasks
        .iter()
        .map(|t| t["assignee"].as_str().unwrap())
        .collect();
    assert!(assignees.contains(&"ann@example.com") && assignees.contains(&"bob@example.com"));
    assert!(tasks.iter().all(|t| t["status"] == "open"
        && t["title"] == "Approve the order for Acme"
        && t["kind"] == "request_user_action"));

    // Two mails, one link each, sent through the outbox.
    let mail = mail_of(&s, &run).await;
    assert_eq!(mail.len(), 2, "{mail:?}");
    let ann_mail = mail
        .iter()
        .find(|m| m["to"][0] == "ann@example.com")
        .unwrap();
    let bob_mail = mail
        .iter()
        .find(|m| m["to"][0] == "bob@example.com")
        .unwrap();
    assert_eq!(ann_mail["subject"], "Approve the order for Acme");
    let ann = link_in(ann_mail);
    let bob = link_in(bob_mail);
    assert!(ann.starts_with(&format!("{}/t/", s.url)), "{ann}");
    assert_ne!(ann, bob);

    // Opened without a key: the title, the description rendered safely,
    // the buttons; no scripts, no other origins.
    let (status, page, headers) = open(&ann).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Approve the order for Acme"), "{page}");
    assert!(page.contains("<strong>#42</strong>"), "{page}");
    assert!(page.contains("&lt;b&gt;3 chairs&lt;/b&gt;"), "{page}");
    assert!(page.contains("value=\"approve\""), "{page}");
    // A value from the run's input is text, not Markdown.
    assert!(
        page.contains("Note: [Sign here](https://evil.example) *now*"),
        "{page}"
    );
    assert!(!page.contains("href=\"https://evil.example"), "{page}");
    assert!(!page.contains("<script"), "{page}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let task = s
        .get(&format!(
            "/v1/tasks/{}",
            tasks
                .iter()
                .find(|t| t["assignee"] == "ann@example.com")
                .unwrap()["id"]
                .as_str()
                .unwrap()
        ))
        .await
        .1;
    assert_eq!(task["status"], "viewed", "{task}");

    // An unknown action is refused on the page; approving resumes the run.
    let (status, page, _) = submit(&ann, &[("_action", "ship-it")]).await;
    assert_eq!(status, 422, "{page}");
    // A post with no action (a form's fields instead) does not answer it.
    let (status, page, _) = submit(&ann, &[("f/x", "1")]).await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("choose one of the actions"), "{page}");
    let (status, _, location) = submit(&ann, &[("_action", "approve")]).await;
    assert_eq!(status, 303);
    assert!(location.unwrap().ends_with("?answered=1"));
    let done = s
        .wait_until(&run, Duration::from_secs(20), |r| {
            r["status"] == "completed"
        })
        .await;
    assert_eq!(step(&done, "approve")["output"]["action"], "approve");
    assert_eq!(step(&done, "ship")["status"], "completed");
    let (status, page, _) = open(&format!("{ann}?answered=1")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Thank you"), "{page}");

    // Used once: the same link again says so; the other assignee's link
    // is no longer needed; a tampered token shows nothing.
    let (status, page, _) = open(&ann).await;
    assert!(page.contains("Already answered"), "{status} {page}");
    let (status, page, _) = submit(&ann, &[("_action", "decline")]).await;
    assert_eq!(status, 409, "{page}");
    let (status, page, _) = open(&bob).await;
    assert_eq!(status, 410, "{page}");
    assert!(!page.contains("ann@example.com"), "{page}");
    let mut tampered = ann.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (status, page, _) = open(&tampered).await;
    assert_eq!(status, 404, "{page}");
    assert!(!page.contains("Acme"), "{page}");
    let (status, _, _) = open(&format!("{}/t/not-a-token", s.url)).await;
    assert_eq!(status, 404);

    // Who answered and when: the task, the events, the attempt log.
    let tasks = tasks_of(&s, &run, 2).await;
    let ann_task = tasks
        .iter()
        .find(|t| t["assignee"] == "ann@example.com")
        .unwrap();
    assert_eq!(ann_task["status"], "completed");
    assert_eq!(ann_task["answer"], json!({"action": "approve"}));
    let bob_task = tasks
        .iter()
        .find(|t| t["assignee"] == "bob@example.com")
        .unwrap();
    assert_eq!(bob_task["status"], "revoked");
    assert!(bob_task.get("link").is_none(), "{bob_task}");
    let kinds: Vec<String> = events_of(&s, &run)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    for kind in [
        "task.created",
        "task.viewed",
        "task.completed",
        "task.revoked",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| *k == "task.created").count(), 2);
    // The tenant's feed (what webhooks fan out) has them too.
    let mut cursor = String::new();
    let mut found = false;
    for _ in 0..1000 {
        let (status, feed) = s.get(&format!("/v1/events?limit=100{cursor}")).await;
        assert_eq!(status, 200, "{feed}");
        found |= feed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["run_id"] == run.as_str() && e["type"] == "task.completed");
        match feed["next_cursor"].as_str() {
            Some(next) if !found => cursor = format!("&cursor={next}"),
            _ => break,
        }
    }
    assert!(found, "task.completed of run {run} in the tenant feed");
    let (_, full) = s.get(&format!("/v1/runs/{run}?view=full")).await;
    let logs = step(&full, "approve")["attempt_log"].to_string();
    assert!(logs.contains("answered by ann@example.com"), "{full}");
}

#[tokio::test]
async fn a_form_task_refuses_data_against_its_schema_and_takes_valid_data_as_output() {
    let s = shared();
    s.publish(json!({"key": "form-link", "name": "Form by link", "steps": [
        {"id": "details", "uses": "collect_inputs", "config": {
            "assignees": ["carol@example.com"],
            "title": "Your shipping details",
            "schema": {"type": "object", "required": ["name", "address", "items"], "properties": {
                "name": {"type": "string", "minLength": 2},
                "urgent": {"type": "boolean"},
                "address": {"type": "object", "required": ["city"], "properties": {
                    "city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{4,5}$"}}},
                "items": {"type": "array", "minItems": 1, "items": {"type": "object",
                    "required": ["sku", "qty"],
                    "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}}}}}},
        {"id": "after", "uses": "testkit@0", "depends_on": ["details"], "config": {"mode": "echo"}}]}))
        .await;
    let run = s.start_run("form-link", json!({})).await;
    tasks_of(&s, &run, 1).await;
    let link = link_in(&mail_of(&s, &run).await[0]);
    let (status, page, _) = open(&link).await;
    assert_eq!(status, 200, "{page}");
    for name in [
        "f/name",
        "f/urgent",
        "f/address/city",
        "f/address/zip",
        "f/items/0/sku",
        "f/items/0/qty",
    ] {
        assert!(
            page.contains(&format!("name=\"{name}\"")),
            "{name} in {page}"
        );
    }

    // Bad data: the schema's messages, on the page, with what was typed.
    let (status, page, _) = submit(
        &link,
        &[
            ("f/name", "Carol"),
            ("f/address/zip", "12"),
            ("f/items/0/sku", "A-1"),
            ("f/items/0/qty", "0"),
        ],
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("role=\"alert\""), "{page}");
    assert!(
        page.contains("&quot;city&quot; is a required property"),
        "{page}"
    );
    assert!(page.contains("0 is less than the minimum of 1"), "{page}");
    assert!(page.contains("value=\"Carol\""), "{page}");

    // Add and Remove only touch arrays of the schema: a forged, deeply
    // nested pointer is ignored.
    let deep = "/items".repeat(50_000);
    let (status, page, _) = submit(&link, &[("f/name", "Carol"), ("_add", &deep)]).await;
    assert_eq!(status, 200, "{page}");
    let (status, page, _) = submit(&link, &[("_remove", "/name/0")]).await;
    assert_eq!(status, 200, "{page}");

    // Adding a row works without scripts.
    let (status, page, _) = submit(
        &link,
        &[
            ("f/name", "Carol"),
            ("f/items/0/sku", "A-1"),
            ("_add", "/items"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("name=\"f/items/1/sku\""), "{page}");

    let (status, _, _) = submit(
        &link,
        &[
            ("f/name", "Carol"),
            ("f/urgent", "true"),
            ("f/address/city", "Oslo"),
            ("f/address/zip", "0150"),
            ("f/items/0/sku", "A-1"),
            ("f/items/0/qty", "2"),
            ("f/items/1/sku", "B-2"),
            ("f/items/1/qty", "1"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let done = s
        .wait_until(&run, Duration::from_secs(20), |r| {
            r["status"] == "completed"
        })
        .await;
    assert_eq!(
        step(&done, "details")["output"],
        json!({"name": "Carol", "urgent": true, "address": {"city": "Oslo", "zip": "0150"},
               "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}]})
    );
}

#[tokio::test]
async fn every_assignee_answers_when_completion_is_all_and_reassigning_moves_the_link() {
    let s = shared();
    s.publish(json!({"key": "all-sign", "name": "All sign", "steps": [
        {"id": "sign", "uses": "request_user_action", "config": {
            "actions": ["sign", "decline"], "completion": "all",
            "assignees": ["dan@example.com", "eve@example.com"], "title": "Sign"}}]}))
        .await;
    let run = s.start_run("all-sign", json!({})).await;
    let tasks = tasks_of(&s, &run, 2).await;
    let eve = tasks
        .iter()
        .find(|t| t["assignee"] == "eve@example.com")
        .unwrap();
    // Eve hands it to Frank: her link dies, Frank gets one.
    let (status, frank) = s
        .post(
            &format!("/v1/tasks/{}/reassign", eve["id"].as_str().unwrap()),
            json!({"assignee": "frank@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{frank}");
    assert_eq!(frank["assignee"], "frank@example.com");
    assert_eq!(frank["status"], "open");
    let eve_link = eve["link"].as_str().unwrap();
    let (status, _, _) = open(eve_link).await;
    assert_eq!(status, 410);
    let mail = mail_of(&s, &run).await;
    assert_eq!(mail.len(), 3, "{mail:?}");
    let frank_link = link_in(
        mail.iter()
            .find(|m| m["to"][0] == "frank@example.com")
            .unwrap(),
    );
    assert_eq!(frank_link, frank["link"].as_str().unwrap());

    let dan_link = tasks
        .iter()
        .find(|t| t["assignee"] == "dan@example.com")
        .unwrap()["link"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(submit(&dan_link, &[("_action", "sign")]).await.0, 303);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, waiting) = s.get(&format!("/v1/runs/{run}")).await;
    assert_eq!(waiting["status"], "paused", "one of two signed: {waiting}");
    assert_eq!(submit(&frank_link, &[("_action", "sign")]).await.0, 303);
    let done = s
        .wait_until(&run, Duration::from_secs(20), |r| {
            r["status"] == "completed"
        })
        .await;
    let output = &step(&done, "sign")["output"];
    assert_eq!(output["action"], "sign");
    let answers: Vec<&str> = output["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["assignee"].as_str().unwrap())
        .collect();
    assert_eq!(answers.len(), 2, "{output}");
    assert!(answers.contains(&"dan@example.com") && answers.contains(&"frank@example.com"));

    // A decline by anyone declines the run.
    let run = s.start_run("all-sign", json!({})).await;
    let tasks = tasks_of(&s, &run, 2).await;
    let link = tasks[0]["link"].as_str().unwrap();
    assert_eq!(submit(link, &[("_action", "decline")]).await.0, 303);
    s.wait_until(&run, Duration::from_secs(20), |r| r["status"] == "declined")
        .await;

    // One signs, the other's task is revoked: the step has every answer it
    // will get and completes with the one.
    let run = s.start_run("all-sign", json!({})).await;
    let tasks = tasks_of(&s, &run, 2).await;
    assert_eq!(
        submit(tasks[0]["link"].as_str().unwrap(), &[("_action", "sign")])
            .await
            .0,
        303
    );
    let (status, _) = s
        .post(
            &format!("/v1/tasks/{}/revoke", tasks[1]["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let done = s
        .wait_until(&run, Duration::from_secs(20), |r| {
            r["status"] == "completed"
        })
        .await;
    assert_eq!(
        step(&done, "sign")["output"]["answers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn reminders_and_expiry_follow_the_stored_clock_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let at = |t: &str| format!("2026-06-01T{t}Z");
    let mut s = Server::start_in(dir.path(), &["--clock-start", &at("10:00:00")]);
    s.publish(json!({"key": "remind", "name": "Remind", "steps": [
        {"id": "ok", "uses": "request_user_action", "config": {
            "actions": ["approve", "reject"], "decline": ["reject"],
            "assignees": ["gus@example.com"], "title": "Please approve",
            "remind_after_ms": 60000, "max_reminders": 2,
            "expires_after_ms": 300000, "on_expiry": {"action": "reject"}}},
        {"id": "after", "uses": "testkit@0", "depends_on": ["ok"], "config": {"mode": "echo"}}]}))
        .await;
    let run = s.start_run("remind", json!({})).await;
    let task = tasks_of(&s, &run, 1).await.remove(0);
    assert!(
        task["next_reminder_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-06-01T10:01:0"),
        "{task}"
    );
    assert!(
        task["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-06-01T10:05:0"),
        "{task}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        mail_of(&s, &run).await.len(),
        1,
        "no reminder before its time"
    );

    // Restarted a minute later: one reminder, however long it runs.
    s.kill();
    let mut s = Server::start_in(dir.path(), &["--clock-start", &at("10:01:01")]);
    wait_for_mail(&s, &run, 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mail = mail_of(&s, &run).await;
    assert_eq!(mail.len(), 2, "{mail:?}");
    assert_eq!(mail[1]["subject"], "Reminder: Please approve");
    let token = |m: &Value| link_in(m).split("/t/").nth(1).unwrap().to_owned();
    assert_eq!(token(&mail[1]), token(&mail[0]), "the same link");

    // Two more minutes: the second and last reminder.
    s.kill();
    let mut s = Server::start_in(dir.path(), &["--clock-start", &at("10:02:05")]);
    wait_for_mail(&s, &run, 3).await;
    s.kill();
    let mut s = Server::start_in(dir.path(), &["--clock-start", &at("10:04:00")]);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(mail_of(&s, &run).await.len(), 3, "at most max_reminders");
    let (_, task) = s
        .get(&format!("/v1/tasks/{}", task["id"].as_str().unwrap()))
        .await;
    assert_eq!(task["reminders_sent"], 2, "{task}");
    assert_eq!(task["status"], "open");

    // Past expiry: on_expiry picks "reject", a declining action.
    s.kill();
    let s = Server::start_in(dir.path(), &["--clock-start", &at("10:05:01")]);
    let done = s
        .wait_until(&run, Duration::from_secs(20), |r| r["status"] == "declined")
        .await;
    assert_eq!(step(&done, "ok")["output"]["action"], "reject");
    assert_eq!(step(&done, "after")["status"], "cancelled");
    let (_, task) = s
        .get(&format!("/v1/tasks/{}", task["id"].as_str().unwrap()))
        .await;
    assert_eq!(task["status"], "expired", "{task}");
    // The link as this server serves it (the port changed with each restart).
    let link = link_in(&mail_of(&s, &run).await[0]);
    let link = format!("{}/t/{}", s.url, link.split("/t/").nth(1).unwrap());
    let (status, page, _) = open(&link).await;
    assert_eq!(status, 410);
    assert!(page.contains("expired"), "{page}");
    let kinds: Vec<String> = events_of(&s, &run)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "task.reminded").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "task.expired").count(),
        1,
        "{kinds:?}"
    );
}

async fn wait_for_mail(s: &Server, run: &str, count: usize) {
    for _ in 0..100 {
        if mail_of(s, run).await.len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "run {run} never had {count} mails: {:?}",
        mail_of(s, run).await
    );
}

#[tokio::test]
async fn expiry_can_fail_the_step_and_a_revoked_link_stops_working() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &["--clock-start", "2026-06-01T10:00:00Z"]);
    s.publish(json!({"key": "expire", "name": "Expire", "steps": [
        {"id": "form", "uses": "collect_inputs", "config": {
            "assignees": ["hal@example.com", "ivy@example.com"], "title": "Fill in",
            "schema": {"type": "object"}, "expires_after_ms": 60000}}]}))
        .await;
    let run = s.start_run("expire", json!({})).await;
    let tasks = tasks_of(&s, &run, 2).await;
    let (status, revoked) = s
        .post(
            &format!("/v1/tasks/{}/revoke", tasks[0]["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    let (status, _, _) = open(tasks[0]["link"].as_str().unwrap()).await;
    assert_eq!(status, 410);
    let (status, again) = s
        .post(
            &format!("/v1/tasks/{}/revoke", tasks[0]["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    s.kill();
    let s = Server::start_in(dir.path(), &["--clock-start", "2026-06-01T10:01:01Z"]);
    let done = s
        .wait_until(&run, Duration::from_secs(20), |r| r["status"] == "failed")
        .await;
    assert_eq!(step(&done, "form")["error"]["kind"], "expired", "{done}");
    let (_, open_tasks) = s
        .get(&format!("/v1/tasks?run_id={run}&status=expired"))
        .await;
    assert_eq!(
        open_tasks["items"].as_array().unwrap().len(),
        1,
        "{open_tasks}"
    );
}

#[tokio::test]
async fn task_routes_and_links_never_cross_tenants() {
    let s = shared();
    let (_, other) = s.new_tenant("tasks-other").await;
    s.publish(json!({"key": "iso-task", "name": "Isolated", "steps": [
        {"id": "ok", "uses": "request_user_action", "config": {
            "actions": ["approve"], "assignees": ["jo@example.com"], "title": "Secret title"}}]}))
        .await;
    let run = s.start_run("iso-task", json!({})).await;
    let task = tasks_of(&s, &run, 1).await.remove(0);
    let id = task["id"].as_str().unwrap();
    for (method, path, body) in [
        (Method::GET, format!("/v1/tasks/{id}"), None),
        (
            Method::POST,
            format!("/v1/tasks/{id}/remind"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/tasks/{id}/revoke"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/tasks/{id}/reassign"),
            Some(json!({"assignee": "mallory@example.com"})),
        ),
    ] {
        let (status, body) = s.call_as(&other, method, &path, body).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, list) = s
        .call_as(
            &other,
            Method::GET,
            &format!("/v1/tasks?run_id={run}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"], json!([]));
    // The task is untouched; a remind by its own tenant mails once more.
    let (status, reminded) = s.post(&format!("/v1/tasks/{id}/remind"), json!({})).await;
    assert_eq!(status, 200, "{reminded}");
    assert_eq!(reminded["reminders_sent"], 1);
    assert_eq!(mail_of(&s, &run).await.len(), 2);
    let (status, list) = s.get("/v1/tasks?status=bogus").await;
    assert_eq!(status, 400, "{list}");

    // A read-only key sees the task, not its link (which answers it),
    // neither in the task nor in the outbox.
    let (status, reader) = s
        .post(
            "/v1/api-keys",
            json!({"name": "task-reader", "scopes": ["runs:read"]}),
        )
        .await;
    assert_eq!(status, 201, "{reader}");
    let reader = reader["key"].as_str().unwrap();
    let (status, seen) = s
        .call_as(reader, Method::GET, &format!("/v1/tasks/{id}"), None)
        .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["title"], "Secret title");
    assert!(seen.get("link").is_none(), "{seen}");
    let (_, mail) = s
        .call_as(
            reader,
            Method::GET,
            &format!("/v1/outbox?run_id={run}"),
            None,
        )
        .await;
    let body = mail["items"][0]["body"].as_str().unwrap();
    assert!(body.contains("/t/(hidden: needs runs:control)"), "{body}");
    let (status, _) = s
        .call_as(
            reader,
            Method::POST,
            &format!("/v1/tasks/{id}/remind"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_misnamed_task_setting_is_refused_with_a_hint() {
    let s = shared();
    let (status, body) = s
        .post(
            "/v1/workflows",
            json!({"key": "bad-task", "name": "Bad", "steps": [
                {"id": "ok", "uses": "request_user_action",
                 "config": {"actions": ["approve"], "assignee": "kim@example.com"}}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string().contains("did you mean \\\"assignees\\\""),
        "{body}"
    );
    let (status, body) = s
        .post(
            "/v1/workflows",
            json!({"key": "bad-task", "name": "Bad", "steps": [
                {"id": "ok", "uses": "request_user_action",
                 "config": {"actions": ["approve"], "assignees": ["kim@example.com"],
                            "expires_after_ms": 60000, "on_expiry": {"action": "ship"}}}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("on_expiry.action"), "{body}");
    for (config, wanted) in [
        (
            json!({"actions": ["approve"], "assignees": []}),
            "config.assignees is empty",
        ),
        (
            json!({"actions": ["approve"], "assignees": ["kim@example.com"], "on_expiry": "decline"}),
            "config.on_expiry needs config.expires_after_ms",
        ),
        (
            json!({"actions": ["approve"], "assignees": ["kim@example.com"], "remind_after_ms": 100}),
            "from 1000 to",
        ),
    ] {
        let (status, body) = s
            .post(
                "/v1/workflows",
                json!({"key": "bad-task", "name": "Bad", "steps": [
                    {"id": "ok", "uses": "request_user_action", "config": config}]}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert!(body.to_string().contains(wanted), "{wanted}: {body}");
    }
}
