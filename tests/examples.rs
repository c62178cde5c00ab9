//! The examples under `examples/`, run as shipped through the HTTP
//! API of a real server with the built-in plugins.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, step};
use reqwest::Method;
use serde_json::{Value, json};

fn example(path: &str) -> Value {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

async fn outbox(s: &Server, run_id: &str) -> Vec<Value> {
    let (status, body) = s.get(&format!("/v1/outbox?run_id={run_id}")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn daily_overdue_sweep_runs_on_its_schedule_and_emails_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    // Three seconds before 09:00 in Oslo.
    let s = Server::start_in(dir.path(), &["--clock-start", "2026-11-23T08:59:57+01:00"]);
    for invoice in example("daily-overdue-sweep/invoices.json")
        .as_array()
        .unwrap()
    {
        let id = invoice["id"].as_str().unwrap();
        let (status, body) = s
            .call(
                Method::PUT,
                &format!("/v1/kv/default/invoices%2F{id}"),
                Some(invoice.clone()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    s.publish(example("daily-overdue-sweep/workflow.json"))
        .await;
    let (status, schedule) = s
        .post(
            "/v1/schedules",
            example("daily-overdue-sweep/schedule.json"),
        )
        .await;
    assert_eq!(status, 201, "{schedule}");
    assert_eq!(schedule["next_run_at"], "2026-11-23T08:00:00.000Z");

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let run_id = loop {
        let (_, runs) = s.get("/v1/runs?workflow=daily-overdue-sweep").await;
        if let Some(run) = runs["items"].as_array().and_then(|r| r.first()) {
            break run["id"].as_str().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule did not fire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let run = s
        .wait_until(&run_id, Duration::from_secs(30), |r| {
            r["status"] != "pending" && r["status"] != "running"
        })
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    let mark = &step(&run, "mark")["output"];
    assert_eq!(mark["newly_overdue"], 2, "{mark}");
    let summary = &step(&run, "summary")["output"];
    assert_eq!(summary["overdue_count"], 2, "{summary}");

    let mail = outbox(&s, &run_id).await;
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mail[0]["to"], json!(["finance@example.com"]));
    assert!(
        mail[0]["subject"].as_str().unwrap().contains("2 overdue"),
        "{}",
        mail[0]
    );
    assert!(
        mail[0]["body"].as_str().unwrap().contains("Initech"),
        "{}",
        mail[0]
    );

    let (_, invoice) = s.get("/v1/kv/default/invoices%2Finv-1001").await;
    assert_eq!(invoice["value"]["status"], "overdue", "{invoice}");
    let (_, invoice) = s.get("/v1/kv/default/invoices%2Finv-1003").await;
    assert_eq!(invoice["value"]["status"], "open", "not due yet: {invoice}");
}

async fn start_contract_run(s: &Server, pdf: &[u8]) -> String {
    let form = reqwest::multipart::Form::new()
        .text("workflow", "contract-approval")
        .text("notify", "legal@acme.example")
        .part(
            "attachment",
            reqwest::multipart::Part::bytes(pdf.to_vec())
                .file_name("contract.pdf")
                .mime_str("application/pdf")
                .unwrap(),
        );
    let response = s
        .req(Method::POST, "/v1/runs")
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn contract_flow_extracts_asks_a_person_then_notifies_or_ends_declined() {
    let s = Server::start();
    s.publish(example("contract-approval/workflow.json")).await;
    let pdf = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/contract-approval/contract.pdf"),
    )
    .unwrap();

    let approved = start_contract_run(&s, &pdf).await;
    let run = s
        .wait_until(&approved, Duration::from_secs(30), |r| {
            r["status"] == "paused"
        })
        .await;
    assert_eq!(run["paused_on"], json!(["approve"]));
    let extracted = &step(&run, "extract")["output"];
    let parties = extracted["parties"].to_string();
    assert!(
        parties.contains("Acme Corporation") && parties.contains("Globex Limited"),
        "{extracted}"
    );
    assert!(
        extracted["dates"].to_string().contains("2026-12-01"),
        "{extracted}"
    );
    let (status, _) = s
        .post(
            &format!("/v1/runs/{approved}/resume"),
            json!({"step_id": "approve", "action": "approve"}),
        )
        .await;
    assert_eq!(status, 200);
    let run = s
        .wait_until(&approved, Duration::from_secs(30), |r| {
            r["status"] == "completed"
        })
        .await;
    let mail = outbox(&s, &approved).await;
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mail[0]["to"], json!(["legal@acme.example"]));
    assert!(
        mail[0]["subject"]
            .as_str()
            .unwrap()
            .contains("Service Agreement"),
        "{}",
        mail[0]
    );
    assert_eq!(step(&run, "notify")["status"], "completed");

    let declined = start_contract_run(&s, &pdf).await;
    s.wait_until(&declined, Duration::from_secs(30), |r| {
        r["status"] == "paused"
    })
    .await;
    let (status, _) = s
        .post(
            &format!("/v1/runs/{declined}/resume"),
            json!({"step_id": "approve", "action": "decline"}),
        )
        .await;
    assert_eq!(status, 200);
    let run = s
        .wait_until(&declined, Duration::from_secs(30), |r| {
            r["status"] == "declined"
        })
        .await;
    assert_eq!(step(&run, "notify")["status"], "cancelled", "{run}");
    assert!(outbox(&s, &declined).await.is_empty());
}

/// A shop's payments and warehouse API: records every call; shipping
/// fails until fixed by hand.
async fn shop() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let record = |calls: Arc<Mutex<Vec<(String, Value)>>>,
                  path: &'static str,
                  status: u16,
                  answer: Value| {
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let calls = calls.clone();
            let answer = answer.clone();
            async move {
                calls.lock().unwrap().push((path.to_owned(), body));
                // Charging and reserving take a while: long enough to see
                // that they run at the same time.
                tokio::time::sleep(Duration::from_millis(300)).await;
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    axum::Json(answer),
                )
            }
        })
    };
    let app = axum::Router::new()
        .route(
            "/payments/charges",
            record(calls.clone(), "charge", 201, json!({"charge_id": "ch_1"})),
        )
        .route(
            "/warehouse/reservations",
            record(
                calls.clone(),
                "reserve",
                201,
                json!({"reservation_id": "res_1"}),
            ),
        )
        .route(
            "/warehouse/shipments",
            record(
                calls.clone(),
                "ship",
                422,
                json!({"error": "the delivery address is incomplete"}),
            ),
        )
        .route(
            "/payments/refunds",
            record(calls.clone(), "refund", 201, json!({"refund_id": "re_1"})),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

#[tokio::test]
async fn order_fulfilment_refunds_when_shipping_fails_and_completes_after_a_manual_fix() {
    // The shop listens on loopback.
    let s = Server::start_args(&common::ALLOW_LOOPBACK);
    let (shop_url, calls) = shop().await;
    let host = shop_url.trim_start_matches("http://");
    let (status, grants) = s
        .call(
            Method::PUT,
            "/v1/plugins/http_request/grants",
            Some(json!({"allowed_hosts": [host]})),
        )
        .await;
    assert_eq!(status, 200, "{grants}");
    s.publish(example("order-fulfilment/workflow.json")).await;

    let run = s
        .run_sync(
            "order-fulfilment",
            json!({"order_id": "ord-7", "amount": "49.90", "sku": "LAMP-1", "shop_url": shop_url}),
        )
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let (charge, reserve, ship) = (
        step(&run, "charge"),
        step(&run, "reserve"),
        step(&run, "ship"),
    );
    assert_eq!(charge["status"], "completed");
    assert_eq!(reserve["status"], "completed");
    // Independent steps overlap in time.
    assert!(charge["started_at"].as_str() < reserve["ended_at"].as_str());
    assert!(reserve["started_at"].as_str() < charge["ended_at"].as_str());
    assert_eq!(ship["status"], "failed");
    assert!(ship["error"].to_string().contains("422"), "{ship}");
    let refund = step(&run, "ship.catch");
    assert_eq!(refund["status"], "completed", "{run}");

    let seen = calls.lock().unwrap().clone();
    let refunds: Vec<&Value> = seen
        .iter()
        .filter(|(p, _)| p == "refund")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(refunds.len(), 1, "{seen:?}");
    assert_eq!(refunds[0]["charge_id"], "ch_1");
    assert!(
        refunds[0]["reason"].as_str().unwrap().contains("address"),
        "{refunds:?}"
    );
    let ship_call = seen.iter().find(|(p, _)| p == "ship").unwrap();
    assert_eq!(ship_call.1["reservation_id"], "res_1");

    // Someone fixes the address and books the shipment by hand.
    let (status, resumed) = s
        .post(
            &format!("/v1/runs/{run_id}/resume"),
            json!({"step_id": "ship", "override_output": {"status": 201, "body": {"tracking": "MANUAL-42"}}}),
        )
        .await;
    assert_eq!(status, 200, "{resumed}");
    let run = s
        .wait_until(&run_id, Duration::from_secs(30), |r| {
            r["status"] == "completed"
        })
        .await;
    assert_eq!(
        run["result"],
        json!({"charge": "ch_1", "tracking": "MANUAL-42"})
    );
}

/// The link in a task mail's body.
fn link_in(mail: &Value) -> String {
    let body = mail["body"].as_str().unwrap();
    let start = body.find("http://").expect("a link in the mail");
    body[start..].split_whitespace().next().unwrap().to_owned()
}

async fn task_mail(s: &Server, run_id: &str, to: &str, count: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mail: Vec<Value> = outbox(s, run_id)
            .await
            .into_iter()
            .filter(|m| m["to"][0] == to)
            .collect();
        if mail.len() >= count {
            return mail;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {count} mails to {to}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn contract_signing_collects_two_signatures_in_order_by_link_with_reminders() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &["--clock-start", "2026-12-01T09:00:00Z"]);
    s.publish(example("contract-signing/workflow.json")).await;
    let (status, run) = s
        .post(
            "/v1/runs",
            json!({"workflow": "contract-signing", "input": {
                "contract": "Lease of unit 4B", "first_signer": "ann@tenant.example",
                "second_signer": "ben@landlord.example"}}),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let first = task_mail(&s, &run_id, "ann@tenant.example", 1).await;
    assert_eq!(first[0]["subject"], "Sign: Lease of unit 4B");
    assert!(
        outbox(&s, &run_id).await.len() == 1,
        "the second signer waits for the first"
    );

    // A day and a minute later (after a restart): one reminder to Ann.
    s.kill();
    let s = Server::start_in(dir.path(), &["--clock-start", "2026-12-02T09:01:00Z"]);
    let ann = task_mail(&s, &run_id, "ann@tenant.example", 2).await;
    assert!(
        ann.iter()
            .any(|m| m["subject"] == "Reminder: Sign: Lease of unit 4B"),
        "{ann:?}"
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The links as this server serves them (the port changed with the restart).
    let here = |link: String| format!("{}/t/{}", s.url, link.split("/t/").nth(1).unwrap());
    let sign = |link: String| {
        let link = here(link);
        let client = client.clone();
        async move {
            let page = client.get(&link).send().await.unwrap();
            assert_eq!(page.status(), 200);
            assert!(page.text().await.unwrap().contains("Lease of unit 4B"));
            let answer = client
                .post(&link)
                .form(&[("_action", "sign")])
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 303);
        }
    };
    sign(link_in(&ann[0])).await;
    let ben = task_mail(&s, &run_id, "ben@landlord.example", 1).await;
    sign(link_in(&ben[0])).await;
    let run = s
        .wait_until(&run_id, Duration::from_secs(30), |r| {
            r["status"] == "completed"
        })
        .await;
    assert_eq!(step(&run, "second_signature")["output"]["action"], "sign");
    let done = outbox(&s, &run_id).await;
    assert!(
        done.iter()
            .any(|m| m["subject"] == "Signed: Lease of unit 4B"),
        "{done:?}"
    );
}
