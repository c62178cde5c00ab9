//! The built-in step catalog end to end: every plugin through the HTTP API
//! of a real server, the action catalog, and the rule that a summary must
//! feed a delivery step.

use crate::common;

use common::{Server, shared, step};
use reqwest::Method;
use serde_json::{Value, json};

const CATALOG: [&str; 11] = [
    "send_email",
    "create_notification",
    "send_invoice_reminder",
    "generate_recurring_invoice",
    "mark_invoices_overdue",
    "invoicing_ar_summary",
    "forms_submission_digest",
    "payments_summary",
    "extract_document",
    "http_request",
    "transform",
];

async fn put_kv(s: &Server, key: &str, value: Value) {
    let key = key.replace('/', "%2F");
    let (status, body) = s
        .call(Method::PUT, &format!("/v1/kv/default/{key}"), Some(value))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_action_catalog_lists_every_built_in_with_schemas_and_roles() {
    let s = shared();
    let (status, catalog) = s.get("/v1/action-catalog").await;
    assert_eq!(status, 200);
    let items = catalog["items"].as_array().unwrap();
    for kind in ["wait", "collect_inputs", "request_user_action"] {
        assert!(items.iter().any(|i| i["uses"] == kind), "{kind}");
    }
    for name in CATALOG {
        let entry = items
            .iter()
            .find(|i| i["uses"] == format!("{name}@1"))
            .unwrap_or_else(|| panic!("{name} missing from {catalog}"));
        assert_eq!(entry["config_schema"]["type"], "object", "{entry}");
        assert!(entry["output_schema"].is_object(), "{entry}");
        assert!(!entry["description"].as_str().unwrap().is_empty());
    }
    let role = |name: &str| {
        items
            .iter()
            .find(|i| i["uses"] == format!("{name}@1"))
            .unwrap()["role"]
            .clone()
    };
    for summary in [
        "invoicing_ar_summary",
        "forms_submission_digest",
        "payments_summary",
    ] {
        assert_eq!(role(summary), "summary");
    }
    for delivery in [
        "send_email",
        "create_notification",
        "send_invoice_reminder",
        "http_request",
    ] {
        assert_eq!(role(delivery), "delivery");
    }
}

#[tokio::test]
async fn a_summary_that_feeds_no_delivery_step_is_refused() {
    let s = shared();
    let (status, problem) = s
        .post(
            "/v1/workflows",
            json!({"key": "lonely-summary", "name": "Lonely", "steps": [
                {"id": "mark", "uses": "mark_invoices_overdue@1"},
                {"id": "ar", "uses": "invoicing_ar_summary@1", "depends_on": ["mark"]},
                {"id": "reshape", "uses": "transform@1", "depends_on": ["ar"], "config": {"expression": ".summary"}}
            ]}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["step"], "ar", "{problem}");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no delivery step"),
        "{problem}"
    );
    // A delivery step downstream (even through another step) is enough.
    let (status, created) = s
        .post(
            "/v1/workflows",
            json!({"key": "delivered-summary", "name": "Delivered", "steps": [
                {"id": "ar", "uses": "invoicing_ar_summary@1"},
                {"id": "reshape", "uses": "transform@1", "depends_on": ["ar"], "config": {"expression": ".summary"}},
                {"id": "tell", "uses": "create_notification@1", "depends_on": ["reshape"],
                 "config": {"title": "AR", "body": "{{steps.reshape.output}}"}}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
}

#[tokio::test]
async fn billing_plugins_invoice_remind_summarise_notify_and_reshape() {
    let s = Server::start();
    s.publish(json!({"key": "billing", "name": "Billing", "steps": [
        {"id": "invoice", "uses": "generate_recurring_invoice@1", "config": {
            "series": "acme-hosting", "customer": "Acme", "customer_email": "ap@acme.example",
            "currency": "EUR", "period": "2026-01", "due_in_days": 14,
            "items": [{"description": "Hosting", "quantity": 2, "unit_price": "49.50"},
                      {"description": "Support", "quantity": 1, "unit_price": 25}]}},
        {"id": "remind", "uses": "send_invoice_reminder@1", "depends_on": ["invoice"]},
        {"id": "ar", "uses": "invoicing_ar_summary@1", "depends_on": ["remind"]},
        {"id": "tell", "uses": "create_notification@1", "depends_on": ["ar"], "config": {
            "title": "Receivables: {{steps.ar.output.overdue_count}} overdue",
            "body": "{{steps.ar.output.summary}}", "level": "warning", "audience": "finance", "link": "/runs/{{run.id}}"}},
        {"id": "shape", "uses": "transform@1", "depends_on": ["invoice"], "config": {
            "expression": "{id: .invoice_id, lines: [.invoice.lines[] | .description], total: (.total | tonumber)}",
            "data": "{{steps.invoice.output}}"}}
    ]}))
    .await;

    let run = s.run_sync("billing", json!({})).await;
    assert_eq!(run["status"], "completed", "{run}");
    let invoice = &step(&run, "invoice")["output"];
    assert_eq!(invoice["invoice_id"], "acme-hosting-2026-01");
    assert_eq!(invoice["created"], true);
    assert_eq!(invoice["due_date"], "2026-01-15");
    assert_eq!(
        invoice["total"].as_str().unwrap().parse::<f64>().unwrap(),
        124.0
    );

    let remind = &step(&run, "remind")["output"];
    assert_eq!(remind["sent"], 1, "{remind}");
    assert_eq!(remind["reminders"][0]["to"], "ap@acme.example");
    let (_, outbox) = s
        .get(&format!(
            "/v1/outbox?run_id={}",
            run["id"].as_str().unwrap()
        ))
        .await;
    let mail = outbox["items"].as_array().unwrap();
    assert_eq!(mail.len(), 1, "{outbox}");
    assert_eq!(mail[0]["to"], json!(["ap@acme.example"]));
    assert!(
        mail[0]["body"]
            .as_str()
            .unwrap()
            .contains("acme-hosting-2026-01"),
        "{}",
        mail[0]
    );

    let ar = &step(&run, "ar")["output"];
    assert_eq!(ar["overdue_count"], 1, "{ar}");
    assert_eq!(ar["currency"], "EUR");
    assert!(ar["summary"].as_str().unwrap().contains("Acme"), "{ar}");

    let (_, notes) = s
        .get(&format!(
            "/v1/notifications?run_id={}",
            run["id"].as_str().unwrap()
        ))
        .await;
    let notes = notes["items"].as_array().unwrap().clone();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["title"], "Receivables: 1 overdue");
    assert_eq!(notes[0]["level"], "warning");
    assert_eq!(notes[0]["audience"], "finance");
    assert_eq!(
        notes[0]["id"],
        step(&run, "tell")["output"]["notification_id"]
    );
    let (status, _) = s
        .post(
            &format!(
                "/v1/notifications/{}/read",
                notes[0]["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 204);
    let (_, unread) = s.get("/v1/notifications?unread=true").await;
    assert!(unread["items"].as_array().unwrap().is_empty(), "{unread}");

    assert_eq!(
        step(&run, "shape")["output"],
        json!({"id": "acme-hosting-2026-01", "lines": ["Hosting", "Support"], "total": 124})
    );

    // Again: the invoice exists (returned unchanged) and was reminded today.
    let again = s.run_sync("billing", json!({})).await;
    assert_eq!(again["status"], "completed", "{again}");
    assert_eq!(step(&again, "invoice")["output"]["created"], false);
    assert_eq!(step(&again, "remind")["output"]["sent"], 0);
    let (_, stored) = s
        .get("/v1/kv/default/invoices%2Facme-hosting-2026-01")
        .await;
    assert_eq!(stored["value"]["reminder_count"], 1, "{stored}");
}

#[tokio::test]
async fn payments_and_form_digests_summarise_the_store() {
    let s = Server::start();
    put_kv(&s, "payments/p1", json!({"amount": "100.00", "currency": "EUR", "method": "card", "status": "succeeded", "received_at": "2026-11-02"})).await;
    put_kv(&s, "payments/p2", json!({"amount": 50, "currency": "EUR", "method": "bank_transfer", "status": "succeeded", "received_at": "2026-11-10T12:00:00Z"})).await;
    put_kv(&s, "payments/p3", json!({"amount": "20", "currency": "EUR", "method": "card", "status": "failed", "received_at": "2026-11-11"})).await;
    put_kv(&s, "payments/p4", json!({"amount": "30", "currency": "EUR", "method": "card", "status": "refunded", "received_at": "2026-11-12"})).await;
    put_kv(&s, "payments/old", json!({"amount": "999", "currency": "EUR", "method": "card", "status": "succeeded", "received_at": "2026-10-01"})).await;
    put_kv(&s, "forms/contact/submissions/s1", json!({"submitted_at": "2026-11-20T09:00:00Z", "email": "a@example.com", "fields": {"topic": "pricing"}})).await;
    put_kv(&s, "forms/contact/submissions/s2", json!({"submitted_at": "2026-11-21T09:00:00Z", "email": "b@example.com", "fields": {"topic": "support"}})).await;
    put_kv(
        &s,
        "forms/signup/submissions/s3",
        json!({"submitted_at": "2026-11-21T10:00:00Z", "email": "c@example.com", "fields": {}}),
    )
    .await;

    s.publish(json!({"key": "weekly-digest", "name": "Weekly digest", "steps": [
        {"id": "payments", "uses": "payments_summary@1", "config": {"since": "2026-11-01", "until": "2026-11-30"}},
        {"id": "forms", "uses": "forms_submission_digest@1", "config": {"since": "2026-11-01"}},
        {"id": "email", "uses": "send_email@1", "depends_on": ["payments", "forms"], "config": {
            "to": ["ops@example.com"], "subject": "Weekly digest",
            "body": "{{steps.payments.output.summary}}\n\n{{steps.forms.output.summary}}"}}
    ]}))
    .await;
    let run = s.run_sync("weekly-digest", json!({})).await;
    assert_eq!(run["status"], "completed", "{run}");
    let payments = &step(&run, "payments")["output"];
    assert_eq!(payments["count"], 4, "{payments}");
    assert_eq!(payments["succeeded"]["count"], 2);
    assert_eq!(
        payments["succeeded"]["totals"]["EUR"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap(),
        150.0
    );
    assert_eq!(payments["failed_count"], 1);
    assert_eq!(payments["refunded"]["count"], 1);
    let forms = &step(&run, "forms")["output"];
    assert_eq!(forms["count"], 3, "{forms}");
    assert_eq!(forms["forms"], json!({"contact": 2, "signup": 1}));
    assert!(
        forms["summary"].as_str().unwrap().contains("b@example.com"),
        "{forms}"
    );
}

#[tokio::test]
async fn transform_errors_name_the_problem() {
    let s = shared();
    s.publish(json!({"key": "bad-jq", "name": "Bad jq", "steps": [
        {"id": "shape", "uses": "transform@1", "config": {"expression": ".items | map(.price"}}
    ]}))
    .await;
    let run = s.run_sync("bad-jq", json!({"items": []})).await;
    assert_eq!(run["status"], "failed");
    let error = &step(&run, "shape")["error"];
    assert_eq!(error["kind"], "invalid_input", "{error}");

    s.publish(json!({"key": "many-jq", "name": "Many", "steps": [
        {"id": "shape", "uses": "transform@1", "config": {"expression": ".items[] | .price * 2", "collect": true}}
    ]}))
    .await;
    let run = s
        .run_sync("many-jq", json!({"items": [{"price": 1}, {"price": 2.5}]}))
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(step(&run, "shape")["output"], json!([2, 5.0]));
}
