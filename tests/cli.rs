//! The plugin author's local loop through the real `weft` binary:
//! `weft plugin inspect` and `weft plugin run`, including SMTP delivery to
//! a real (minimal) SMTP server listening on loopback.

use crate::common;

use std::process::Command;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn weft() -> Command {
    Command::new(common::weft_bin())
}

fn guest(name: &str) -> String {
    common::guests::path(name).display().to_string()
}

#[test]
fn inspect_prints_describe_and_the_world() {
    let out = weft()
        .args(["plugin", "inspect", &guest("send_email")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["name"], "send_email");
    assert_eq!(report["capabilities"], serde_json::json!(["mail"]));
    assert_eq!(
        report["config_schema"]["required"],
        serde_json::json!(["to", "subject", "body"])
    );
    assert_eq!(report["world"]["name"], "weft:plugin/step-plugin");
    let exports = report["world"]["exports"].as_array().unwrap();
    assert!(
        exports.iter().any(|e| e == "weft:plugin/step@0.1.0"),
        "{exports:?}"
    );
    let imports = report["world"]["imports"].as_array().unwrap();
    assert!(
        imports.iter().any(|e| e == "weft:plugin/host@0.1.0"),
        "{imports:?}"
    );

    // Built-ins can be named instead of a file.
    let out = weft()
        .args(["plugin", "inspect", "extract_document"])
        .output()
        .unwrap();
    assert!(out.status.success());

    let out = weft()
        .args(["plugin", "inspect", "/etc/hostname"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly component"));
}

#[test]
fn run_prints_output_and_the_key_value_store() {
    let out = weft()
        .args([
            "plugin",
            "run",
            "mark_invoices_overdue",
            "--config",
            r#"{"as_of":"2026-05-01"}"#,
        ])
        .args([
            "--kv",
            r#"{"invoices/a":{"due_date":"2026-04-01","amount":"10.10","status":"open"}}"#,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let output: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(output["newly_overdue"], 1);
    assert_eq!(output["newly_overdue_amount"], "10.1");
    assert!(stderr.contains("default/invoices/a = "), "{stderr}");
    assert!(stderr.contains(r#""status":"overdue""#), "{stderr}");
}

#[test]
fn run_reports_a_typed_error_and_fails() {
    let out = weft()
        .args([
            "plugin",
            "run",
            &guest("testkit"),
            "--config",
            r#"{"mode":"loop"}"#,
            "--timeout-ms",
            "300",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error (timeout): timed out after 300 ms"),
        "{stderr}"
    );
}

/// Speaks just enough SMTP to accept messages, and hands back each DATA.
async fn smtp_server() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test ESMTP\r\n").await.unwrap();
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(body) = &mut data {
                        if line == "." {
                            tx.send(std::mem::take(body)).unwrap();
                            data = None;
                            write.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            body.push_str(&line);
                            body.push('\n');
                        }
                        continue;
                    }
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 test\r\n",
                        "DATA" => {
                            data = Some(String::new());
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await.unwrap();
                            break;
                        }
                        _ => b"250 ok\r\n",
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn run_delivers_the_outbox_over_smtp() {
    let (port, mut received) = smtp_server().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["plugin", "run", "send_email", "--config"])
        .arg(r#"{"to":["ops@example.com"],"cc":["cfo@example.com"],"subject":"Receivables summary","body":"Overdue: 2 invoices, 1300.45 EUR."}"#)
        .args(["--smtp-url", &format!("smtp://127.0.0.1:{port}"), "--mail-from", "weft@example.com"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let output: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = output["message_id"].as_str().unwrap();
    assert!(
        stderr.contains(&format!("[smtp] delivered {id}")),
        "{stderr}"
    );
    let message = received.recv().await.unwrap();
    assert!(
        message.contains("Subject: Receivables summary"),
        "{message}"
    );
    assert!(message.contains("To: ops@example.com"), "{message}");
    assert!(message.contains("Cc: cfo@example.com"), "{message}");
    assert!(
        message.contains(&format!("Message-ID: <{id}@weft>")),
        "{message}"
    );
    assert!(
        message.contains("Overdue: 2 invoices, 1300.45 EUR."),
        "{message}"
    );
}

/// The server's outbox sender delivers what a workflow's send_email queued,
/// once, through the configured relay.
#[tokio::test]
async fn the_server_delivers_the_outbox_over_smtp() {
    let (port, mut received) = smtp_server().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("smtp://127.0.0.1:{port}");
    let server = common::Server::start_in(
        dir.path(),
        &["--smtp-url", &url, "--mail-from", "ar@example.com"],
    );
    server
        .publish(serde_json::json!({"key": "mail", "name": "Mail", "steps": [
            {"id": "send", "uses": "send_email@1", "config": {"to": ["ops@example.com"], "subject": "Receivables", "body": "All paid."}}]}))
        .await;
    let run = server.run_sync("mail", serde_json::json!({})).await;
    assert_eq!(run["status"], "completed", "{run}");
    let id = common::step(&run, "send")["output"]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = tokio::time::timeout(std::time::Duration::from_secs(15), received.recv())
        .await
        .expect("delivered within 15 s")
        .unwrap();
    assert!(message.contains("Subject: Receivables"), "{message}");
    assert!(message.contains("From: ar@example.com"), "{message}");
    assert!(
        message.contains(&format!("Message-ID: <{id}@weft>")),
        "{message}"
    );
    // Nothing is sent twice.
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(3), received.recv())
            .await
            .is_err()
    );
}
