//! One contract, every language: the same checks run against each
//! language's contract fixture — the Rust `testkit`, and
//! `tests/fixtures/{python,js,c,go}/contract` — which share their modes
//! and outputs.
//! A new language is added by adding its fixture to [`languages`].
//!
//! Checks: describe() metadata; JSON round trip of unicode and large
//! numbers; each step-error kind; the host capabilities (secrets, files,
//! key-value, outbound HTTP and mail, granted and denied; notifications,
//! progress and logs; the step context);
//! the limits (time, memory, output size). Then a Python plugin uploaded
//! to a real `weft serve` runs in a workflow through the HTTP API.
//!
//! Python and JavaScript components are built by host/build.rs with
//! componentize-py and componentize-js, C and Go ones by `weft plugin
//! build` with clang/wasi-libc and Go (`scripts/test` installs them all).
//! Without one, that language skips with a notice, unless
//! `WEFT_REQUIRE_PLUGIN_TOOLCHAINS` is set (CI): then it fails.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::Server;
use reqwest::Method;
use serde_json::{Value, json};
use weft::runtime::services::MemoryServices;
use weft::runtime::{
    AttemptError, Grants, Invocation, Limits, Plugin, Runtime, RuntimeConfig, StepContext,
};

/// (language, contract fixture component) for every language built here.
fn languages() -> Vec<(&'static str, Vec<u8>)> {
    common::guests::contract_fixtures()
}

fn context(attempt: u32) -> StepContext {
    StepContext {
        tenant: "t1".into(),
        run_id: "run-1".into(),
        step_id: "s".into(),
        attempt,
        idempotency_key: "run-1/s".into(),
    }
}

struct Subject {
    language: &'static str,
    runtime: Arc<Runtime>,
    plugin: Arc<Plugin>,
    /// `host:port` of a local HTTP server answering `GET /hello`.
    http_server: String,
}

impl Subject {
    async fn call(
        &self,
        config: Value,
        input: &str,
        memory: &MemoryServices,
        grants: Grants,
        limits: Limits,
    ) -> Result<String, AttemptError> {
        self.runtime
            .invoke(
                &self.plugin,
                Invocation {
                    context: context(1),
                    config: &config.to_string(),
                    input,
                    grants,
                    services: memory.services(),
                    limits,
                },
            )
            .await
            .result
    }

    async fn json(
        &self,
        config: Value,
        memory: &MemoryServices,
        grants: Grants,
    ) -> Result<Value, AttemptError> {
        self.call(config, "{}", memory, grants, Limits::DEFAULT)
            .await
            .map(|out| serde_json::from_str(&out).expect("output is JSON"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_keeps_the_contract() {
    // The test's HTTP server is on loopback, which only the operator can allow.
    let runtime = Arc::new(
        Runtime::new(RuntimeConfig {
            egress: weft::egress::EgressPolicy::new(false, vec!["127.0.0.1/32".parse().unwrap()]),
            ..RuntimeConfig::default()
        })
        .expect("runtime"),
    );
    let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello ✓" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_server = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    for (language, bytes) in languages() {
        let plugin = runtime
            .load(&bytes)
            .await
            .unwrap_or_else(|e| panic!("{language}: load: {e}"));
        let subject = Subject {
            language,
            runtime: runtime.clone(),
            plugin,
            http_server: http_server.clone(),
        };
        describe(&subject);
        json_round_trip(&subject).await;
        error_kinds(&subject).await;
        capabilities(&subject).await;
        limits(&subject).await;
        eprintln!("{language}: contract kept");
    }
}

fn describe(s: &Subject) {
    let info = &s.plugin.info;
    let l = s.language;
    assert!(
        !info.name.is_empty()
            && info
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "{l}: name {:?}",
        info.name
    );
    assert_eq!(info.version, semver::Version::new(0, 1, 0), "{l}");
    assert!(!info.description.is_empty(), "{l}: description");
    assert_eq!(
        info.config_schema["properties"]["mode"]["type"], "string",
        "{l}"
    );
    for schema in [&info.input_schema, &info.output_schema] {
        assert!(schema.is_object(), "{l}: schema {schema}");
    }
    for capability in ["kv", "mail", "files", "secret:*"] {
        assert!(
            info.capabilities.iter().any(|c| c == capability),
            "{l}: capabilities {:?}",
            info.capabilities
        );
    }
}

async fn json_round_trip(s: &Subject) {
    let input = json!({
        "text": "æøå — 你好 — 🎉 \u{0000} \"quoted\" \\",
        "big": 12_345_678_901_234_567_890_u64,
        "negative": -9_007_199_254_740_993_i64,
        "float": 1.5e300,
        "nested": {"list": [1, 2.5, null, true, {"k": []}]}
    });
    let out = s
        .call(
            json!({"mode": "echo"}),
            &input.to_string(),
            &MemoryServices::default(),
            Grants::default(),
            Limits::DEFAULT,
        )
        .await
        .unwrap_or_else(|e| panic!("{}: echo: {e}", s.language));
    let back: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(back, input, "{}", s.language);
}

async fn error_kinds(s: &Subject) {
    for kind in ["retryable", "fatal", "invalid_input"] {
        let error = s
            .json(
                json!({"mode": "fail", "kind": kind, "message": "nope ✗"}),
                &MemoryServices::default(),
                Grants::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(error.kind(), kind, "{}: {error}", s.language);
        assert!(
            error.to_string().contains("nope ✗"),
            "{}: {error}",
            s.language
        );
        assert_eq!(error.is_retryable(), kind == "retryable", "{}", s.language);
    }
    let error = s
        .json(
            json!({"mode": "no-such-mode"}),
            &MemoryServices::default(),
            Grants::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "invalid_input", "{}: {error}", s.language);
}

async fn capabilities(s: &Subject) {
    let l = s.language;
    let memory = MemoryServices::default();
    memory
        .secrets
        .values
        .lock()
        .unwrap()
        .insert("API_TOKEN".into(), "s3cret".into());
    memory
        .files
        .files
        .lock()
        .unwrap()
        .insert("f1".into(), b"hello".to_vec());
    let none = Grants::default();

    // Context.
    let ctx = s
        .json(json!({"mode": "context"}), &memory, none.clone())
        .await
        .unwrap();
    assert_eq!(ctx["idempotency_key"], "run-1/s", "{l}");
    assert_eq!(ctx["attempt"], 1, "{l}");

    // Logs, including a guest's stdout.
    let attempt = s
        .runtime
        .invoke(
            &s.plugin,
            Invocation {
                context: context(1),
                config: r#"{"mode":"log","lines":3}"#,
                input: "{}",
                grants: none.clone(),
                services: memory.services(),
                limits: Limits::DEFAULT,
            },
        )
        .await;
    assert!(attempt.result.is_ok(), "{l}: {:?}", attempt.result);
    let infos = attempt
        .logs
        .iter()
        .filter(|line| line.level == "info")
        .count();
    assert_eq!(infos, 3, "{l}: {:?}", attempt.logs);
    assert!(
        attempt
            .logs
            .iter()
            .any(|line| line.level == "stdout" && line.message.contains("to stdout")),
        "{l}: {:?}",
        attempt.logs
    );

    // Secrets: granted, and denied (indistinguishable from missing).
    let secret = json!({"mode": "secret", "name": "API_TOKEN"});
    assert_eq!(
        s.json(secret.clone(), &memory, none.clone()).await.unwrap(),
        json!({"value": null}),
        "{l}"
    );
    let granted = Grants {
        secrets: vec!["API_TOKEN".into()],
        ..Grants::default()
    };
    assert_eq!(
        s.json(secret, &memory, granted).await.unwrap(),
        json!({"value": "s3cret"}),
        "{l}"
    );

    // Files.
    let error = s
        .json(
            json!({"mode": "host_file", "file_id": "f1"}),
            &memory,
            none.clone(),
        )
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("not granted files"),
        "{l}: {error}"
    );
    assert_eq!(error.kind(), "fatal", "{l}: {error}");
    let files = Grants {
        files: true,
        ..Grants::default()
    };
    assert_eq!(
        s.json(
            json!({"mode": "host_file", "file_id": "f1"}),
            &memory,
            files
        )
        .await
        .unwrap(),
        json!({"size": 5}),
        "{l}"
    );

    // Key-value: denied, then set and read back.
    let error = s
        .json(json!({"mode": "kv_get", "key": "k"}), &memory, none.clone())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("access denied"), "{l}: {error}");
    assert_eq!(
        error.kind(),
        "retryable",
        "{l}: a store error is worth a retry"
    );
    let kv = Grants {
        kv: true,
        ..Grants::default()
    };
    s.json(
        json!({"mode": "kv_set", "key": "k", "value": {"n": 1}}),
        &memory,
        kv.clone(),
    )
    .await
    .unwrap();
    let read = s
        .json(json!({"mode": "kv_get", "key": "k"}), &memory, kv.clone())
        .await
        .unwrap();
    assert_eq!(read["value"], r#"{"n":1}"#, "{l}: {read}");
    assert!(
        read["keys"].as_array().unwrap().iter().any(|k| k == "k"),
        "{l}: {read}"
    );

    // Progress and notifications.
    s.json(json!({"mode": "sleep", "ms": 1}), &memory, none.clone())
        .await
        .unwrap();
    assert_eq!(
        *memory.progress.reports.lock().unwrap(),
        [(10, "sleeping".to_owned()), (100, "awake".to_owned())],
        "{l}"
    );
    let notify = json!({"mode": "notify", "title": "Done ✓", "body": "all of it"});
    let error = s
        .json(notify.clone(), &memory, none.clone())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not granted"), "{l}: {error}");
    assert_eq!(error.kind(), "fatal", "{l}: {error}");
    let granted = Grants {
        notify: true,
        ..Grants::default()
    };
    let notified = s.json(notify, &memory, granted).await.unwrap();
    let items = memory.notifications.items.lock().unwrap().clone();
    assert_eq!(items.len(), 1, "{l}: {items:?}");
    assert_eq!(notified["id"], items[0].1, "{l}");
    assert_eq!(
        (
            items[0].2.title.as_str(),
            items[0].2.body.as_str(),
            items[0].2.level.as_str()
        ),
        ("Done ✓", "all of it", "info"),
        "{l}"
    );

    // Outbound HTTP: through to a granted host, refused (as an error the
    // plugin sees) for any other.
    let url = format!("http://{}/hello", s.http_server);
    let http = json!({"mode": "http", "url": url});
    let granted = Grants {
        allowed_hosts: vec![s.http_server.clone()],
        ..Grants::default()
    };
    assert_eq!(
        s.json(http.clone(), &memory, granted).await.unwrap(),
        json!({"status": 200, "body": "hello ✓"}),
        "{l}"
    );
    let other_port = Grants {
        allowed_hosts: vec!["127.0.0.1:1".into()],
        ..Grants::default()
    };
    let error = s.json(http, &memory, other_port.clone()).await.unwrap_err();
    assert_eq!(error.kind(), "fatal", "{l}: {error}");
    assert!(error.to_string().contains("request denied"), "{l}: {error}");
    // The SDK's error kinds: a bad URL is invalid input, a granted host
    // that does not answer is worth a retry.
    let error = s
        .json(
            json!({"mode": "http", "url": "ftp://x/"}),
            &memory,
            other_port.clone(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "invalid_input", "{l}: {error}");
    let error = s
        .json(
            json!({"mode": "http", "url": "http://127.0.0.1:1/"}),
            &memory,
            other_port,
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "retryable", "{l}: {error}");

    // Mail: refused without the grant (retryable), sent once with it.
    let error = s
        .json(json!({"mode": "effect"}), &memory, kv.clone())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "retryable", "{l}: {error}");
    assert!(
        error.to_string().contains("not granted mail"),
        "{l}: {error}"
    );
    let mail = Grants {
        kv: true,
        mail: true,
        ..Grants::default()
    };
    let first = s
        .json(json!({"mode": "effect"}), &memory, mail.clone())
        .await
        .unwrap();
    let again = s
        .json(json!({"mode": "effect"}), &memory, mail)
        .await
        .unwrap();
    assert_eq!(
        first["message_id"], again["message_id"],
        "{l}: keyed by the idempotency key"
    );
}

async fn limits(s: &Subject) {
    let l = s.language;
    let memory = MemoryServices::default();
    let call =
        |config: Value, limits: Limits| s.call(config, "{}", &memory, Grants::default(), limits);
    let timeout = Limits {
        timeout: Duration::from_millis(500),
        ..Limits::DEFAULT
    };
    let error = call(json!({"mode": "loop"}), timeout).await.unwrap_err();
    assert_eq!(error.kind(), "timeout", "{l}: {error}");

    let error = call(json!({"mode": "memory"}), Limits::DEFAULT)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "memory_limit", "{l}: {error}");

    // Room to build a 1 MiB string (a JavaScript engine needs more than
    // the default 64 MiB for it); the output limit stops it anyway.
    let roomy = Limits {
        memory_bytes: 256 << 20,
        ..Limits::DEFAULT
    };
    let error = call(json!({"mode": "big_output", "mib": 1}), roomy)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "output_too_large", "{l}: {error}");

    // The host is fine afterwards.
    assert!(
        call(json!({"mode": "echo"}), Limits::DEFAULT).await.is_ok(),
        "{l}"
    );
}

/// A Python plugin uploaded by a tenant runs in a workflow through the API,
/// with the capabilities the tenant granted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_plugin_runs_in_a_workflow_through_the_api() {
    let Some(component) = common::guests::scripted("python", "contract") else {
        return;
    };
    let server = Server::start();
    upload(&server, component, json!({"kv": true, "mail": true})).await;
    // The same steps in Rust (the shared testkit) and in Python.
    server
        .publish(json!({"key": "py", "name": "Python beside Rust", "steps": [
            {"id": "rust", "uses": "testkit@0", "config": {"mode": "context"}},
            {"id": "python", "uses": "contract_python@0.1.0", "config": {"mode": "context"}},
            {"id": "mail", "uses": "contract_python@0.1.0", "depends_on": ["python"], "config": {"mode": "effect"}}
        ]}))
        .await;
    let run = server.run_sync("py", json!({"name": "Ada ✓"})).await;
    assert_eq!(run["status"], "completed", "{run}");
    let (rust, python) = (
        &common::step(&run, "rust")["output"],
        &common::step(&run, "python")["output"],
    );
    assert_eq!(rust["run_id"], python["run_id"], "{run}");
    assert_eq!(python["step_id"], "python", "{run}");
    assert_eq!(
        python["idempotency_key"],
        format!("{}/python", run["id"].as_str().unwrap()),
        "{run}"
    );
    let mail = &common::step(&run, "mail")["output"];
    assert!(
        mail["message_id"]
            .as_str()
            .is_some_and(|m| m.starts_with("msg_")),
        "{run}"
    );
    let (status, outbox) = server.get("/v1/outbox").await;
    assert_eq!(status, 200, "{outbox}");
    assert_eq!(
        outbox["items"].as_array().map(Vec::len),
        Some(1),
        "{outbox}"
    );
}

/// `weft plugin new` writes a project per language that builds with the
/// one documented command, `weft plugin build`, and runs: Rust always; the
/// others where their toolchain is installed (see [`languages`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_projects_build_with_one_command_and_run() {
    let built: Vec<&str> = languages().iter().map(|(l, _)| *l).collect();
    let dir = tempfile::tempdir().unwrap();
    let weft = env!("CARGO_BIN_EXE_weft");
    for (lang, name) in [
        ("rust", "greet_rs"),
        ("python", "greet_py"),
        ("js", "greet_js"),
        ("c", "greet_c"),
        ("go", "greet_go"),
    ] {
        if !built.contains(&lang) {
            continue;
        }
        let created = std::process::Command::new(weft)
            .args(["plugin", "new", "--lang", lang, name])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(created.status.success(), "{lang}: {created:?}");
        let project = dir.path().join(name);
        let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
        assert!(
            readme.contains("    weft plugin build\n"),
            "{lang}: {readme}"
        );
        let mut build = std::process::Command::new(weft);
        build.args(["plugin", "build"]).current_dir(&project);
        // Shared between runs: the Rust SDK's dependencies build once. (The
        // JavaScript project's `npm install`, run by `weft plugin build`, is
        // real: a few seconds with npm's cache warm.)
        if lang == "rust" {
            build.env(
                "CARGO_TARGET_DIR",
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold"),
            );
        }
        let output = build.output().unwrap();
        assert!(
            output.status.success(),
            "{lang}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains(&format!("({name} 0.1.0")),
            "{lang}: {output:?}"
        );
        let component = project.join(format!("{name}.wasm")).display().to_string();
        let ran = std::process::Command::new(weft)
            .args([
                "plugin",
                "run",
                &component,
                "--quiet",
                "--config",
                r#"{"name":"Ada"}"#,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&ran.stdout);
        assert!(ran.status.success(), "{lang}: {ran:?}");
        let output: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(output, json!({"greeting": "Hello, Ada!"}), "{lang}");
        let refused = std::process::Command::new(weft)
            .args(["plugin", "run", &component, "--config", "{}"])
            .output()
            .unwrap();
        assert!(!refused.status.success(), "{lang}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("invalid_input"),
            "{lang}: {refused:?}"
        );
    }
}

/// Uploads `component` as the tenant's own plugin and grants it `grants`.
async fn upload(server: &Server, component: Vec<u8>, grants: Value) {
    let (status, body) = server.upload_plugin(component).await;
    assert_eq!(status, 201, "{body}");
    let name = body["name"].as_str().unwrap().to_owned();
    let (status, granted) = server
        .call(
            Method::PUT,
            &format!("/v1/plugins/{name}/grants"),
            Some(grants),
        )
        .await;
    assert_eq!(status, 200, "{granted}");
}

/// A port of a catalog plugin against its Rust original, one step each in
/// one workflow: `good` completes on both (the run is returned), and each
/// of `bad` fails on both with the same error kind and message.
async fn compare_with_original(
    server: &Server,
    key: &str,
    (original, port): (&str, &str),
    (good, input): (Value, Value),
    bad: &[Value],
) -> Value {
    server
        .publish(json!({"key": key, "name": key, "steps": [
            {"id": "original", "uses": original, "config": good},
            {"id": "port", "uses": port, "config": good}
        ]}))
        .await;
    let run = server.run_sync(key, input).await;
    assert_eq!(run["status"], "completed", "{run}");
    for (n, config) in bad.iter().enumerate() {
        let mut errors = Vec::new();
        for (side, uses) in [("original", original), ("port", port)] {
            let bad_key = format!("{key}_bad{n}_{side}");
            server
                .publish(json!({"key": bad_key, "name": "Bad", "steps": [
                    {"id": "step", "uses": uses, "config": config}
                ]}))
                .await;
            let run = server.run_sync(&bad_key, json!({})).await;
            assert_eq!(run["status"], "failed", "{run}");
            let e = &common::step(&run, "step")["error"];
            errors.push(json!([e["kind"], e["message"]]));
        }
        assert_eq!(errors[0], errors[1], "{config}");
        assert_eq!(errors[1][0], "invalid_input", "{config}");
    }
    run
}

/// The JavaScript port of the `create_notification` catalog plugin,
/// uploaded to a real server, behaves like the built-in Rust original in
/// the same workflow: the same notification, the same errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_create_notification_matches_the_rust_one() {
    // Fails where the toolchains are required, skips with a notice
    // elsewhere.
    let Some(component) = common::guests::scripted("js", "create_notification_js") else {
        return;
    };
    let server = Server::start();
    upload(&server, component, json!({"notify": true})).await;
    let run = compare_with_original(
        &server,
        "notify_both",
        ("create_notification@1", "create_notification_js@1"),
        (
            json!({
                "title": " Overdue invoices ✓ ",
                "body": "{{input.summary}}",
                "level": "warning",
                "audience": " finance ",
                "link": "/ui/#/runs"
            }),
            json!({"summary": "3 invoices, 1,234.50 EUR"}),
        ),
        &[
            json!({"title": "t", "body": "b", "link": "javascript:alert(1)"}),
            json!({"title": "a\nb", "body": "b"}),
            json!({"title": "t", "body": "b", "audience": "fin\nance"}),
            json!({"title": "   ", "body": "b"}),
        ],
    )
    .await;
    let (status, list) = server.get("/v1/notifications").await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    let posted = |step: &str| {
        let n = items
            .iter()
            .find(|n| n["run_id"] == run["id"] && n["step_id"] == step)
            .unwrap_or_else(|| panic!("no notification from {step}: {list}"));
        assert_eq!(
            common::step(&run, step)["output"]["notification_id"],
            n["id"],
            "{run}"
        );
        json!([n["title"], n["body"], n["level"], n["audience"], n["link"]])
    };
    assert_eq!(posted("original"), posted("port"));
    assert_eq!(
        posted("port"),
        json!([
            "Overdue invoices ✓",
            "3 invoices, 1,234.50 EUR",
            "warning",
            "finance",
            "/ui/#/runs"
        ])
    );
}

/// The Python port of `send_email` against the built-in Rust one: the same
/// message in the outbox, the same refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_send_email_matches_the_rust_one() {
    let Some(component) = common::guests::scripted("python", "send_email_py") else {
        return;
    };
    let server = Server::start();
    upload(&server, component, json!({"mail": true})).await;
    let run = compare_with_original(
        &server,
        "mail_both",
        ("send_email@1", "send_email_py@1"),
        (
            json!({
                "to": ["ada@example.com", "bob@example.org"],
                "cc": "finance@example.com",
                "subject": "Receivables for {{input.day}} ✓",
                "body": "{{input.summary}}"
            }),
            json!({"day": "2026-11-23", "summary": "3 overdue, 1,234.50 EUR\nsee the dashboard"}),
        ),
        &[
            json!({"to": "not-an-address", "subject": "s", "body": "b"}),
            json!({"to": [], "subject": "s", "body": "b"}),
            json!({"to": "a@b.co", "subject": "two\nlines", "body": "b"}),
            json!({"to": "a@b.co", "cc": "x@y", "subject": "s", "body": "b"}),
        ],
    )
    .await;
    for step in ["original", "port"] {
        assert_eq!(common::step(&run, step)["output"]["recipients"], 3, "{run}");
    }
    let (status, outbox) = server.get("/v1/outbox").await;
    assert_eq!(status, 200, "{outbox}");
    let items = outbox["items"].as_array().unwrap();
    let queued = |step: &str| {
        let m = items
            .iter()
            .find(|m| m["run_id"] == run["id"] && m["step_id"] == step)
            .unwrap_or_else(|| panic!("no message from {step}: {outbox}"));
        json!([m["to"], m["cc"], m["subject"], m["body"]])
    };
    assert_eq!(queued("original"), queued("port"));
    assert_eq!(queued("port")[2], "Receivables for 2026-11-23 ✓");
}

/// The C and Go example plugins from `plugins/`, built with `weft plugin
/// build` and uploaded by a tenant, run one after the other in a workflow
/// through the HTTP API, with the key-value grant they ask for; without
/// it they fail with the host's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_and_go_plugins_run_in_a_workflow_through_the_api() {
    let (Some(c), Some(go)) = (
        common::guests::build("c", "plugins/c/hello_c"),
        common::guests::build("go", "plugins/go/hello_go"),
    ) else {
        return;
    };
    let server = Server::start();
    for component in [c, go] {
        upload(&server, component, json!({})).await;
    }
    server
        .publish(json!({"key": "hello", "name": "C then Go", "steps": [
            {"id": "c", "uses": "hello_c@1", "config": {"name": "{{input.name}}"}},
            {"id": "go", "uses": "hello_go@1", "depends_on": ["c"],
             "config": {"name": "{{steps.c.output.greeting}}", "greeting": "Hi"}}
        ]}))
        .await;
    // Not granted the key-value store yet.
    let run = server.run_sync("hello", json!({"name": "Ada ✓"})).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = &common::step(&run, "c")["error"];
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("access denied")),
        "{run}"
    );
    for name in ["hello_c", "hello_go"] {
        let (status, body) = server
            .call(
                Method::PUT,
                &format!("/v1/plugins/{name}/grants"),
                Some(json!({"kv": true})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for times in 1..=2 {
        let run = server.run_sync("hello", json!({"name": "Ada ✓"})).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(
            common::step(&run, "c")["output"],
            json!({"greeting": "Hello, Ada ✓!", "times": times, "language": "c"}),
            "{run}"
        );
        assert_eq!(
            common::step(&run, "go")["output"],
            json!({"greeting": "Hi, Hello, Ada ✓!!", "times": times, "language": "go"}),
            "{run}"
        );
    }
    // Bad config is the plugin's typed error, in either language.
    server
        .publish(json!({"key": "bad", "name": "Bad", "steps": [
            {"id": "go", "uses": "hello_go@1", "config": {"name": "Ada", "greeting": "a\nb"}}
        ]}))
        .await;
    let run = server.run_sync("bad", json!({})).await;
    let error = &common::step(&run, "go")["error"];
    assert_eq!(error["kind"], "invalid_input", "{run}");
}

/// A component built for a world that is not Weft's — the same package,
/// world and interface names, other function types — is refused, in every
/// language, as the wrong world, naming the mismatch, the same way every
/// time: by the runtime, by `weft plugin build`, and by the upload API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_for_the_wrong_world_is_refused_in_every_language() {
    let mut wrong = vec![("rust", common::guests::rust("wrong_world_rs"))];
    for (language, name) in [("python", "wrong_world_py"), ("js", "wrong_world_js")] {
        if let Some(bytes) = common::guests::scripted(language, name) {
            wrong.push((language, bytes));
        }
    }
    for language in ["c", "go"] {
        let project = format!("tests/fixtures/wrong_world/wrong_world_{language}");
        if let Some((bytes, said)) = common::guests::refused(language, &project) {
            assert!(
                said.contains("does not fit the weft:plugin/step-plugin world"),
                "{language}: {said}"
            );
            wrong.push((language, bytes));
        }
    }
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let server = Server::start();
    for (language, bytes) in wrong {
        let first = runtime.load(&bytes).await.unwrap_err();
        let again = runtime.load(&bytes).await.unwrap_err();
        assert!(
            matches!(first, weft::runtime::LoadError::WrongWorld(_)),
            "{language}: {first:?}"
        );
        let reason = first.to_string();
        assert_eq!(reason, again.to_string(), "{language}");
        assert!(
            reason.contains("weft:plugin/step@0.1.0") && reason.contains("describe"),
            "{language}: {reason}"
        );
        for _ in 0..2 {
            let (status, body) = server.upload_plugin(bytes.clone()).await;
            assert_eq!(status, 422, "{language}: {body}");
            assert!(
                body.to_string()
                    .contains("does not fit the weft:plugin/step-plugin world"),
                "{language}: {body}"
            );
        }
        eprintln!("{language}: refused: {reason}");
    }
}
