//! The sandbox against real components built from `plugins/` and the
//! `testkit` fixture: hostile guests fail with typed reasons while the host
//! stays healthy, and the built-in plugins do their jobs. (Error kinds and
//! capabilities, granted and denied, are checked for every language by
//! tests/languages.rs.)

use crate::common::guests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft::egress::EgressPolicy;
use weft::runtime::services::MemoryServices;
use weft::runtime::{
    AttemptError, Grants, Invocation, Limits, LoadError, Plugin, Runtime, RuntimeConfig,
    StepContext,
};

fn runtime() -> Arc<Runtime> {
    Arc::new(Runtime::new(RuntimeConfig::default()).expect("runtime"))
}

fn context(step: &str) -> StepContext {
    StepContext {
        tenant: "t1".into(),
        run_id: "run-1".into(),
        step_id: step.into(),
        attempt: 1,
        idempotency_key: format!("run-1/{step}"),
    }
}

async fn invoke(
    runtime: &Runtime,
    plugin: &Plugin,
    config: Value,
    input: Value,
    memory: &MemoryServices,
    grants: Grants,
    limits: Limits,
) -> Result<Value, AttemptError> {
    let attempt = runtime
        .invoke(
            plugin,
            Invocation {
                context: context("s"),
                config: &config.to_string(),
                input: &input.to_string(),
                grants,
                services: memory.services(),
                limits,
            },
        )
        .await;
    attempt
        .result
        .map(|text| serde_json::from_str(&text).expect("output is JSON"))
}

async fn testkit(runtime: &Runtime, config: Value, limits: Limits) -> Result<Value, AttemptError> {
    let plugin = runtime
        .load(&guests::rust("testkit"))
        .await
        .expect("load testkit");
    invoke(
        runtime,
        &plugin,
        config,
        json!({}),
        &MemoryServices::default(),
        Grants::default(),
        limits,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_with_typed_reasons_while_a_normal_plugin_completes() {
    let runtime = runtime();
    let plugin = runtime.load(&guests::rust("testkit")).await.unwrap();
    let limits = Limits {
        timeout: Duration::from_secs(2),
        ..Limits::DEFAULT
    };
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "loop",
            json!({"mode": "loop"}),
            "timeout",
            "timed out after 2000 ms",
        ),
        (
            "memory",
            json!({"mode": "memory"}),
            "memory_limit",
            "memory limit of 67108864 bytes",
        ),
        (
            "recursion",
            json!({"mode": "recursion"}),
            "stack_overflow",
            "stack overflow",
        ),
        (
            "panic",
            json!({"mode": "panic"}),
            "trap",
            "testkit panicked on purpose",
        ),
        (
            "unreachable",
            json!({"mode": "unreachable"}),
            "trap",
            "unreachable",
        ),
        (
            "big_output",
            json!({"mode": "big_output", "mib": 10}),
            "output_too_large",
            "over the limit of 1048576 bytes",
        ),
        (
            "bad_json",
            json!({"mode": "bad_json"}),
            "invalid_output",
            "not JSON",
        ),
        (
            "read_file",
            json!({"mode": "read_file", "path": "/etc/passwd"}),
            "fatal",
            "reading /etc/passwd",
        ),
        (
            "env",
            json!({"mode": "env", "name": "HOME"}),
            "fatal",
            "0 variables visible",
        ),
        ("socket", json!({"mode": "socket"}), "fatal", "socket"),
        (
            "http",
            json!({"mode": "http", "url": "http://127.0.0.1:9/"}),
            "fatal",
            "request denied",
        ),
    ];
    let mut tasks = Vec::new();
    for (name, config, kind, message) in cases {
        let runtime = runtime.clone();
        let plugin = plugin.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let result = invoke(
                &runtime,
                &plugin,
                config,
                json!({}),
                &MemoryServices::default(),
                Grants::default(),
                limits,
            )
            .await;
            (name, kind, message, result, started.elapsed())
        }));
    }
    // A well-behaved attempt started alongside the hostile ones completes.
    let normal = {
        let runtime = runtime.clone();
        let plugin = plugin.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = invoke(
                &runtime,
                &plugin,
                json!({"mode": "sleep", "ms": 200}),
                json!({}),
                &MemoryServices::default(),
                Grants::default(),
                limits,
            )
            .await;
            (result, started.elapsed())
        })
    };
    for task in tasks {
        let (name, kind, message, result, elapsed) =
            task.await.expect("the host task never panics");
        let error = result.expect_err(name);
        assert_eq!(error.kind(), kind, "{name}: {error}");
        assert!(
            error.to_string().contains(message),
            "{name}: {error:?} lacks {message:?}"
        );
        if name == "loop" {
            assert!(
                elapsed < limits.timeout + Duration::from_secs(1),
                "loop stopped after {elapsed:?}"
            );
        }
    }
    let (result, elapsed) = normal.await.unwrap();
    assert_eq!(result.unwrap(), json!({"slept_ms": 200}));
    assert!(
        elapsed < limits.timeout,
        "the normal attempt was starved: {elapsed:?}"
    );

    // And the host still runs attempts afterwards.
    let echoed = invoke(
        &runtime,
        &plugin,
        json!({"mode": "echo"}),
        json!({"still": "alive"}),
        &MemoryServices::default(),
        Grants::default(),
        limits,
    )
    .await;
    assert_eq!(echoed.unwrap(), json!({"still": "alive"}));
}

#[tokio::test]
async fn json_round_trips_unicode_and_large_numbers() {
    let runtime = runtime();
    let plugin = runtime.load(&guests::rust("testkit")).await.unwrap();
    let input = r#"{"text":"æøå — 你好 — 🎉","big":123456789012345678901234567890,"precise":0.1000000000000000055511151231257827}"#;
    let attempt = runtime
        .invoke(
            &plugin,
            Invocation {
                context: context("s"),
                config: r#"{"mode":"echo"}"#,
                input,
                grants: Grants::default(),
                services: MemoryServices::default().services(),
                limits: Limits::DEFAULT,
            },
        )
        .await;
    assert_eq!(attempt.result.unwrap(), input);
}

#[tokio::test]
async fn logs_are_captured_and_capped() {
    let runtime = runtime();
    let plugin = runtime.load(&guests::rust("testkit")).await.unwrap();
    let attempt = runtime
        .invoke(
            &plugin,
            Invocation {
                context: context("s"),
                config: r#"{"mode":"log","lines":2000}"#,
                input: "{}",
                grants: Grants::default(),
                services: MemoryServices::default().services(),
                limits: Limits {
                    log_bytes: 10_000,
                    ..Limits::DEFAULT
                },
            },
        )
        .await;
    assert!(attempt.result.is_ok());
    let kept: usize = attempt.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= 10_000, "{kept} bytes kept");
    assert!(
        attempt.dropped_log_lines > 1900,
        "{} dropped",
        attempt.dropped_log_lines
    );
    assert!(
        attempt
            .logs
            .iter()
            .all(|l| l.level == "info" || l.level == "stdout")
    );
}

#[tokio::test]
async fn limits_never_exceed_the_operator_ceiling() {
    let ceiling = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::CEILING
    };
    let runtime = Runtime::new(RuntimeConfig {
        ceiling,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let asked = Limits {
        timeout: Duration::from_secs(60),
        ..Limits::DEFAULT
    };
    let started = Instant::now();
    let error = testkit(&runtime, json!({"mode": "loop"}), asked)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        AttemptError::Timeout {
            limit: Duration::from_millis(300)
        }
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn http_request_reaches_only_granted_hosts() {
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::post(|body: String| async move { axum::Json(json!({"you_sent": body})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The server is on loopback, which only the operator can allow.
    let runtime = Runtime::new(RuntimeConfig {
        egress: EgressPolicy::new(false, vec!["127.0.0.1/32".parse().unwrap()]),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let plugin = runtime.load(&guests::rust("http_request")).await.unwrap();
    let config = json!({"method": "POST", "url": format!("http://{addr}/hello"), "body": "ping"});
    let memory = MemoryServices::default();

    let granted = Grants {
        allowed_hosts: vec![format!("127.0.0.1:{}", addr.port())],
        ..Grants::default()
    };
    let output = invoke(
        &runtime,
        &plugin,
        config.clone(),
        json!({}),
        &memory,
        granted,
        Limits::DEFAULT,
    )
    .await
    .unwrap();
    assert_eq!(output["status"], 200);
    assert_eq!(output["body"], json!({"you_sent": "ping"}));

    let other_port = Grants {
        allowed_hosts: vec!["127.0.0.1:1".into()],
        ..Grants::default()
    };
    let error = invoke(
        &runtime,
        &plugin,
        config,
        json!({}),
        &memory,
        other_port,
        Limits::DEFAULT,
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.kind(),
        "fatal",
        "a denied request is an error the plugin sees, not a trap"
    );
    assert!(error.to_string().contains("request denied"), "{error}");
}

/// A listener on loopback that counts the connections it accepts and hands
/// back the first bytes of each (answering `200 ok`).
async fn counting_listener() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                record.lock().unwrap().push(buf[..n].to_vec());
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Runs `http_request` granted every host; the result and the log text.
async fn request_anywhere(runtime: &Runtime, url: &str) -> (Result<Value, AttemptError>, String) {
    let plugin = runtime.load(&guests::rust("http_request")).await.unwrap();
    let memory = MemoryServices::default();
    let attempt = runtime
        .invoke(
            &plugin,
            Invocation {
                context: context("s"),
                config: &json!({"url": url}).to_string(),
                input: "{}",
                grants: Grants {
                    allowed_hosts: vec!["*".into()],
                    ..Grants::default()
                },
                services: memory.services(),
                limits: Limits::DEFAULT,
            },
        )
        .await;
    let logs = attempt
        .logs
        .iter()
        .map(|l| l.message.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let result = attempt
        .result
        .map(|text| serde_json::from_str(&text).expect("output is JSON"));
    (result, logs)
}

#[tokio::test]
async fn a_grant_of_every_host_does_not_reach_loopback_unless_the_operator_allows_it() {
    let (addr, seen) = counting_listener().await;
    let refusing = runtime();
    for url in [
        format!("http://{addr}/"),
        format!("http://localhost:{}/", addr.port()),
        format!("http://[::ffff:127.0.0.1]:{}/", addr.port()),
    ] {
        let (result, logs) = request_anywhere(&refusing, &url).await;
        let error = result.unwrap_err();
        assert_eq!(error.kind(), "fatal", "{url}: {error}");
        assert!(
            error.to_string().contains("request denied"),
            "{url}: {error}"
        );
        assert!(logs.contains("loopback address"), "{url}: {logs}");
        assert!(
            logs.contains("--egress-allow-private or --egress-allow <CIDR>"),
            "{url}: {logs}"
        );
    }
    assert!(seen.lock().unwrap().is_empty(), "nothing connected");

    let allowing = Runtime::new(RuntimeConfig {
        egress: EgressPolicy::new(false, vec!["127.0.0.1/32".parse().unwrap()]),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let (result, logs) =
        request_anywhere(&allowing, &format!("http://localhost:{}/", addr.port())).await;
    let output = result.unwrap_or_else(|e| panic!("{e}: {logs}"));
    assert_eq!(output["status"], 200, "{output}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// The connection goes to the checked address, and TLS is spoken with the
/// name the plugin asked for: the ClientHello names `localhost`.
#[tokio::test]
async fn https_connects_to_the_checked_address_with_the_name_asked_for() {
    let (addr, seen) = counting_listener().await;
    let allowing = Runtime::new(RuntimeConfig {
        egress: EgressPolicy::new(false, vec!["127.0.0.1/32".parse().unwrap()]),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let (result, _) =
        request_anywhere(&allowing, &format!("https://localhost:{}/", addr.port())).await;
    // The listener speaks plain HTTP, so the handshake fails after the hello.
    let error = result.unwrap_err();
    assert_eq!(error.kind(), "retryable", "{error}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].first(), Some(&0x16), "a TLS handshake record");
    assert!(
        seen[0]
            .windows(b"localhost".len())
            .any(|w| w == b"localhost"),
        "the server name is in the hello"
    );
}

#[tokio::test]
async fn send_email_retried_with_the_same_key_sends_once() {
    let runtime = runtime();
    let plugin = runtime.load(&guests::rust("send_email")).await.unwrap();
    let memory = MemoryServices::default();
    let config = json!({"to": ["ops@example.com"], "cc": "audit@example.com", "subject": "Daily summary", "body": "All good."});
    let mut ids = Vec::new();
    for attempt in 1..=2 {
        let result = runtime
            .invoke(
                &plugin,
                Invocation {
                    context: StepContext {
                        attempt,
                        ..context("email")
                    },
                    config: &config.to_string(),
                    input: "{}",
                    grants: Grants::requested(&plugin.info.capabilities),
                    services: memory.services(),
                    limits: Limits::DEFAULT,
                },
            )
            .await;
        let output: Value = serde_json::from_str(&result.result.unwrap()).unwrap();
        ids.push(output["message_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[0], ids[1]);
    {
        let outbox = memory.outbox.messages.lock().unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].2.to, ["ops@example.com"]);
        assert_eq!(outbox[0].2.cc, ["audit@example.com"]);
    }
    let error = invoke(
        &runtime,
        &plugin,
        json!({"to": "not-an-address", "subject": "x", "body": "y"}),
        json!({}),
        &memory,
        Grants::all(),
        Limits::DEFAULT,
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), "invalid_input");
    assert!(error.to_string().contains("not-an-address"));
}

#[tokio::test]
async fn mark_invoices_overdue_marks_unpaid_invoices_past_due() {
    let runtime = runtime();
    let plugin = runtime
        .load(&guests::rust("mark_invoices_overdue"))
        .await
        .unwrap();
    let memory = MemoryServices::default();
    {
        let mut kv = memory.kv.entries.lock().unwrap();
        let invoices = [
            (
                "inv-1",
                json!({"due_date": "2026-01-10", "amount": 1200.50, "status": "open"}),
            ),
            (
                "inv-2",
                json!({"due_date": "2026-02-01", "amount": "99.95", "status": "sent"}),
            ),
            (
                "inv-3",
                json!({"due_date": "2026-01-05", "amount": 500, "status": "paid"}),
            ),
            (
                "inv-4",
                json!({"due_date": "2026-03-01", "amount": 10, "status": "open"}),
            ),
            (
                "inv-5",
                json!({"due_date": "2025-12-01", "amount": 40, "status": "overdue"}),
            ),
            (
                "inv-6",
                json!({"due_date": "someday", "amount": 1, "status": "open"}),
            ),
        ];
        for (id, invoice) in invoices {
            kv.insert(
                ("default".into(), format!("invoices/{id}")),
                invoice.to_string().into_bytes(),
            );
        }
        kv.insert(("default".into(), "unrelated".into()), b"{}".to_vec());
    }
    let output = invoke(
        &runtime,
        &plugin,
        json!({"as_of": "2026-02-15"}),
        json!({}),
        &memory,
        Grants::requested(&plugin.info.capabilities),
        Limits::DEFAULT,
    )
    .await
    .unwrap();
    assert_eq!(output["as_of"], "2026-02-15");
    assert_eq!(output["checked"], 5);
    assert_eq!(output["newly_overdue"], 2);
    assert_eq!(output["marked"], json!(["inv-1", "inv-2"]));
    assert_eq!(output["newly_overdue_amount"], "1300.45");
    assert_eq!(output["overdue"], 3);
    assert_eq!(output["overdue_amount"], "1340.45");
    assert_eq!(output["skipped"][0]["id"], "inv-6");
    let kv = memory.kv.entries.lock().unwrap();
    let inv1: Value =
        serde_json::from_slice(&kv[&("default".to_owned(), "invoices/inv-1".to_owned())]).unwrap();
    assert_eq!(inv1["status"], "overdue");
    let inv4: Value =
        serde_json::from_slice(&kv[&("default".to_owned(), "invoices/inv-4".to_owned())]).unwrap();
    assert_eq!(inv4["status"], "open");
}

/// A real PDF with a text content stream, written with lopdf.
fn contract_pdf(lines: &[&str]) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};

    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(
        dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica"},
    );
    let resources_id = doc.add_object(dictionary! {"Font" => dictionary! {"F1" => font_id}});
    let mut operations = vec![
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec!["F1".into(), 11.into()]),
        Operation::new("TL", vec![14.into()]),
        Operation::new("Td", vec![50.into(), 780.into()]),
    ];
    for line in lines {
        operations.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
        operations.push(Operation::new("T*", vec![]));
    }
    operations.push(Operation::new("ET", vec![]));
    let content = Content { operations };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
    let page_id = doc
        .add_object(dictionary! {"Type" => "Page", "Parent" => pages_id, "Contents" => content_id});
    let pages = dictionary! {
        "Type" => "Pages",
        "Kids" => vec![page_id.into()],
        "Count" => 1,
        "Resources" => resources_id,
        "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
    };
    doc.objects.insert(pages_id, Object::Dictionary(pages));
    let info_id = doc
        .add_object(dictionary! {"Title" => Object::string_literal("Master Services Agreement")});
    let catalog_id = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    doc.trailer.set("Root", catalog_id);
    doc.trailer.set("Info", info_id);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    bytes
}

#[tokio::test]
async fn extract_document_reads_a_real_pdf() {
    let pdf = contract_pdf(&[
        "MASTER SERVICES AGREEMENT",
        "This Agreement is made on 3 March 2026 between Acme Widgets Inc. and Globex Ltd.",
        "Client: Globex Ltd",
        "Supplier: Acme Widgets Inc.",
        "The fee is USD 12,500.00, due by 2026-04-01.",
        "The term ends December 31, 2026. Notices to legal@acme.example.com.",
    ]);
    assert!(pdf.starts_with(b"%PDF-"));
    let runtime = runtime();
    let plugin = runtime
        .load(&guests::rust("extract_document"))
        .await
        .unwrap();
    let memory = MemoryServices::default();
    memory
        .files
        .files
        .lock()
        .unwrap()
        .insert("file-1".into(), pdf);
    let output = invoke(
        &runtime,
        &plugin,
        json!({}),
        json!({"file_id": "file-1"}),
        &memory,
        Grants::requested(&plugin.info.capabilities),
        Limits::DEFAULT,
    )
    .await
    .unwrap();
    assert_eq!(output["kind"], "pdf");
    assert_eq!(output["pages"], 1);
    assert_eq!(output["title"], "Master Services Agreement");
    let text = output["text"].as_str().unwrap();
    assert!(
        text.contains("between Acme Widgets Inc. and Globex Ltd"),
        "{text}"
    );
    let names: Vec<&str> = output["parties"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(names.contains(&"Globex Ltd"), "{names:?}");
    assert!(names.contains(&"Acme Widgets Inc."), "{names:?}");
    let dates: Vec<&str> = output["dates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["date"].as_str())
        .collect();
    for date in ["2026-03-03", "2026-04-01", "2026-12-31"] {
        assert!(dates.contains(&date), "{date} not in {dates:?}");
    }
    assert!(
        output["amounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["currency"] == "USD" && a["value"] == "12500.00"),
        "{}",
        output["amounts"]
    );
    assert_eq!(output["emails"], json!(["legal@acme.example.com"]));

    let error = invoke(
        &runtime,
        &plugin,
        json!({"file_id": "missing"}),
        json!({}),
        &memory,
        Grants::all(),
        Limits::DEFAULT,
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), "invalid_input");
    memory
        .files
        .files
        .lock()
        .unwrap()
        .insert("garbage".into(), vec![0xff, 0xfe, 0x00, 0x12]);
    let error = invoke(
        &runtime,
        &plugin,
        json!({"file_id": "garbage"}),
        json!({}),
        &memory,
        Grants::all(),
        Limits::DEFAULT,
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("neither a PDF nor UTF-8 text"),
        "{error}"
    );
}

#[tokio::test]
async fn uploads_that_are_not_step_plugins_are_rejected_with_the_reason() {
    let runtime = runtime();
    let cases: [(&[u8], &str); 4] = [
        (b"hello world", "magic bytes"),
        (b"\0asm\x01\0\0\0", "core WebAssembly module"),
        (
            b"\0asm\x0d\0\x01\0",
            "missing export `weft:plugin/step@0.1.0`",
        ),
        (b"\0asm\x0d\0\x01\0\xff\xff", "not a WebAssembly component"),
    ];
    for (bytes, expected) in cases {
        let error = runtime.load(bytes).await.unwrap_err();
        assert!(
            error.to_string().contains(expected),
            "{error} lacks {expected:?}"
        );
        assert!(
            matches!(
                error,
                LoadError::NotAComponent(_) | LoadError::WrongWorld(_)
            ),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn compiled_components_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let bytes = guests::rust("extract_document");
    let first = Runtime::new(config.clone())
        .unwrap()
        .load(&bytes)
        .await
        .unwrap();
    assert!(!first.from_disk_cache);
    let second = Runtime::new(config).unwrap().load(&bytes).await.unwrap();
    assert!(
        second.from_disk_cache,
        "a new runtime on the same cache dir recompiled"
    );
    assert_eq!(first.info, second.info);
}
