//! Traces through the real binary: `weft serve --otlp-endpoint` exports
//! OTLP/HTTP (protobuf) to a receiver in this test, decoded with the
//! official message definitions. A run started with a `traceparent` keeps
//! that trace across a restart: run → attempt → outbound request, and the
//! server the plugin called receives the request's `traceparent`.

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::{Server, step};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use reqwest::Method;
use serde_json::json;

/// What the receiver got: every span, with its resource's `service.name`.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP receiver on 127.0.0.1 accepting `POST /v1/traces`.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let spans = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| async move {
            assert_eq!(
                headers["content-type"], "application/x-protobuf",
                "OTLP over HTTP with protobuf bodies"
            );
            let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .as_ref()
                    .and_then(|r| string_attribute(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        spans.lock().unwrap().push((service.clone(), span));
                    }
                }
            }
            // An empty ExportTraceServiceResponse.
            (
                [("content-type", "application/x-protobuf")],
                Vec::<u8>::new(),
            )
        }),
    );
    (serve(app).await, received)
}

/// The server the plugin calls: it keeps the `traceparent` of each request.
async fn upstream() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::get(move |headers: HeaderMap| async move {
            log.lock().unwrap().push(
                headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            );
            "hello"
        }),
    );
    (serve(app).await, seen)
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Lets the built-in `http_request` reach this test's servers.
async fn grant_loopback(s: &Server) {
    let (status, body) = s
        .call(
            Method::PUT,
            "/v1/plugins/http_request/grants",
            Some(json!({"allowed_hosts": ["127.0.0.1"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Stops the server as an operator would (it flushes its spans first).
async fn stop(server: &mut Server) {
    drop(server.child.stdin.take());
    for _ in 0..300 {
        if server.child.try_wait().unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("weft serve did not stop");
}

fn string_attribute(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    match attribute(attributes, key)? {
        Any::StringValue(s) => Some(s),
        other => panic!("{key} is not a string: {other:?}"),
    }
}

fn attribute(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<Any> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn attributes(span: &Span) -> HashMap<String, Any> {
    span.attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
        .collect()
}

fn the_span<'a>(spans: &'a [(String, Span)], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
    found[0]
}

/// Publishes `fetch`: one `http_request` step to `{{input.url}}`.
async fn publish_fetch(s: &Server) {
    s.publish(json!({"key": "fetch", "name": "fetch", "steps": [
        {"id": "get", "uses": "http_request@1", "config": {"url": "{{input.url}}"}}
    ]}))
    .await;
}

/// Runs `fetch` against `upstream` to its end, with `traceparent` if
/// given; the completed run.
async fn run_fetch(s: &Server, upstream: &str, traceparent: Option<&str>) -> serde_json::Value {
    let mut request = s.req(Method::POST, "/v1/runs");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let body = json!({"workflow": "fetch", "wait_ms": 60000,
        "input": {"url": format!("{upstream}/hello")}});
    let (status, run) = common::send(request.json(&body)).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "completed", "{run}");
    run
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_its_attempt_and_its_outbound_request_join_the_callers_trace_across_a_restart() {
    let (otlp, received) = receiver().await;
    let (upstream, seen) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        common::ALLOW_LOOPBACK[0],
        common::ALLOW_LOOPBACK[1],
        "--otlp-endpoint",
        &otlp,
        "--otlp-db-sample-ratio",
        "1",
    ];
    let mut first = Server::start_in(dir.path(), &args);
    grant_loopback(&first).await;
    first
        .publish(json!({"key": "fetch", "name": "fetch", "steps": [
            {"id": "pause", "uses": "wait", "config": {"duration_ms": 1500}},
            {"id": "get", "uses": "http_request@1", "depends_on": ["pause"],
             "config": {"url": "{{input.url}}"}}
        ]}))
        .await;
    let (status, run) = common::send(
        first
            .req(Method::POST, "/v1/runs")
            .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01"))
            .json(&json!({"workflow": "fetch", "input": {"url": format!("{upstream}/hello")}})),
    )
    .await;
    assert_eq!(status, 202, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    // The run waits; this host stops and another process takes over with
    // nothing but the database.
    stop(&mut first).await;
    drop(first);
    let mut second = Server::start_in(dir.path(), &args);
    let run = second
        .wait_until(&run_id, Duration::from_secs(60), |r| {
            r["status"] == "completed" || r["status"] == "failed"
        })
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(step(&run, "get")["output"]["status"], 200, "{run}");
    stop(&mut second).await;

    let spans = received.lock().unwrap().clone();
    assert!(
        spans.iter().all(|(service, _)| service == "weft"),
        "{spans:#?}"
    );
    let trace: Vec<(String, Span)> = spans
        .iter()
        .filter(|(_, s)| hex::encode(&s.trace_id) == TRACE_ID)
        .cloned()
        .collect();

    // The run: a child of the caller's span, from creation to end.
    let run_span = the_span(&trace, "run");
    assert_eq!(hex::encode(&run_span.parent_span_id), CALLER_SPAN_ID);
    let a = attributes(run_span);
    assert_eq!(a["weft.run_id"], Any::StringValue(run_id.clone()));
    let tenant = a["weft.tenant"].clone();
    assert!(
        matches!(&tenant, Any::StringValue(t) if !t.is_empty()),
        "{a:?}"
    );
    assert_eq!(a["weft.workflow"], Any::StringValue("fetch".into()));
    assert_eq!(a["weft.run.status"], Any::StringValue("completed".into()));
    assert!(
        run_span.end_time_unix_nano - run_span.start_time_unix_nano >= 1_500_000_000,
        "the run span covers the wait"
    );

    // The attempt, on the second host: a child of the run span stored by
    // the first.
    let attempt = the_span(&trace, "step.attempt");
    assert_eq!(attempt.parent_span_id, run_span.span_id);
    let a = attributes(attempt);
    assert_eq!(a["weft.plugin"], Any::StringValue("http_request".into()));
    assert!(
        matches!(&a["weft.plugin.version"], Any::StringValue(v) if v.starts_with("1.")),
        "{a:?}"
    );
    assert_eq!(a["weft.attempt"], Any::IntValue(1));
    assert_eq!(
        a["weft.attempt.outcome"],
        Any::StringValue("completed".into())
    );
    assert_eq!(a["weft.tenant"], tenant);
    assert_eq!(a["weft.run_id"], Any::StringValue(run_id.clone()));
    assert_eq!(a["weft.step_id"], Any::StringValue("get".into()));
    assert!(
        matches!(a["weft.attempt.duration_ms"], Any::DoubleValue(ms) if ms > 0.0),
        "{a:?}"
    );

    // The plugin's request: a client span under the attempt, whose context
    // the upstream server received.
    let request = the_span(&trace, "http.client.request");
    assert_eq!(request.parent_span_id, attempt.span_id);
    assert_eq!(request.kind, SpanKind::Client as i32);
    let a = attributes(request);
    assert_eq!(a["http.request.method"], Any::StringValue("GET".into()));
    assert_eq!(a["http.response.status_code"], Any::IntValue(200));
    assert_eq!(a["server.address"], Any::StringValue("127.0.0.1".into()));
    let port: i64 = upstream.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(a["server.port"], Any::IntValue(port));
    assert_eq!(
        a["url.full"],
        Any::StringValue(format!("{upstream}/hello")),
        "{a:?}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Some(format!(
            "00-{TRACE_ID}-{}-01",
            hex::encode(&request.span_id)
        ))],
        "the upstream server got the request's traceparent"
    );

    // Database transactions on the hot path, sampled (here all of them),
    // in traces of their own.
    let db: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "db.transaction")
        .collect();
    assert!(!db.is_empty(), "{spans:#?}");
    for span in db {
        let a = attributes(span);
        assert!(
            matches!(&a["db.operation.name"], Any::StringValue(op) if op == "claim" || op == "record"),
            "{a:?}"
        );
        let system = if common::postgres() {
            "postgresql"
        } else {
            "sqlite"
        };
        assert_eq!(a["db.system.name"], Any::StringValue(system.into()));
        assert_eq!(span.kind, SpanKind::Client as i32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_no_traceparent_goes_out() {
    let (upstream, seen) = upstream().await;
    let mut s = Server::start_args(&common::ALLOW_LOOPBACK);
    grant_loopback(&s).await;
    publish_fetch(&s).await;
    run_fetch(
        &s,
        &upstream,
        Some(&format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")),
    )
    .await;
    assert_eq!(*seen.lock().unwrap(), vec![None]);
    stop(&mut s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_does_not_sample_gets_no_spans_and_its_flag_is_passed_on() {
    let (otlp, received) = receiver().await;
    let (upstream, seen) = upstream().await;
    let args = [
        common::ALLOW_LOOPBACK[0],
        common::ALLOW_LOOPBACK[1],
        "--otlp-endpoint",
        &otlp,
    ];
    let mut s = Server::start_args(&args);
    grant_loopback(&s).await;
    publish_fetch(&s).await;
    // The sampled flag off: the caller records nothing of this trace.
    run_fetch(
        &s,
        &upstream,
        Some(&format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-00")),
    )
    .await;
    // A run without a caller is traced, so the exporter is working.
    let traced = run_fetch(&s, &upstream, None).await;
    stop(&mut s).await;

    let spans = received.lock().unwrap().clone();
    assert!(
        spans
            .iter()
            .all(|(_, span)| hex::encode(&span.trace_id) != TRACE_ID),
        "spans of an unsampled trace were exported: {spans:#?}"
    );
    let traced_id = traced["id"].as_str().unwrap();
    assert!(
        spans.iter().any(|(_, span)| span.name == "run"
            && attributes(span).get("weft.run_id") == Some(&Any::StringValue(traced_id.into()))),
        "the caller-less run was not exported: {spans:#?}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let unsampled = seen[0]
        .as_deref()
        .expect("a traceparent on the first request");
    assert!(
        unsampled.starts_with(&format!("00-{TRACE_ID}-")) && unsampled.ends_with("-00"),
        "the caller's trace and its unsampled flag go out: {unsampled}"
    );
    let sampled = seen[1]
        .as_deref()
        .expect("a traceparent on the second request");
    assert!(
        !sampled.contains(TRACE_ID) && sampled.ends_with("-01"),
        "{sampled}"
    );
}
