//! The operator's egress policy through the real binary: a tenant that
//! grants the built-in `http_request` every host (`*`) still cannot reach
//! loopback, link-local or any other non-public address, however it is
//! spelled, unless `weft serve` is told to allow it. (Webhooks: see
//! tests/webhooks.rs.)

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, step};
use reqwest::Method;
use serde_json::{Value, json};

/// A listener that counts the connections it accepts and answers `200 ok`.
async fn counting_listener(bind: &str) -> Option<(SocketAddr, Arc<AtomicUsize>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(bind).await.ok()?;
    let addr = listener.local_addr().ok()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    Some((addr, accepted))
}

/// A server whose `http_request` is granted every host, with a workflow
/// that fetches `input.url`.
async fn fetching_server(extra: &[&str]) -> Server {
    let s = Server::start_args(extra);
    let (status, body) = s
        .call(
            Method::PUT,
            "/v1/plugins/http_request/grants",
            Some(json!({"allowed_hosts": ["*"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.publish(json!({"key": "fetch", "name": "fetch", "steps": [
        {"id": "get", "uses": "http_request@1", "config": {"url": "{{input.url}}"}}
    ]}))
    .await;
    s
}

/// Runs the fetch workflow; the run with its attempts' logs.
async fn fetch(s: &Server, url: &str) -> Value {
    let run = s.run_sync("fetch", json!({"url": url})).await;
    let id = run["id"].as_str().expect("a run id");
    let (status, full) = s.get(&format!("/v1/runs/{id}?view=full")).await;
    assert_eq!(status, 200, "{full}");
    full
}

/// The run failed with "request denied", and the attempt's log says why
/// and how the operator would allow it.
fn assert_refused(run: &Value, url: &str, kind: &str) {
    assert_eq!(run["status"], "failed", "{url}: {run}");
    let get = step(run, "get");
    assert!(
        get["error"].to_string().contains("request denied"),
        "{url}: {get}"
    );
    let log = get["attempt_log"].to_string();
    assert!(log.contains("refused: "), "{url}: {log}");
    assert!(log.contains(kind), "{url}: {log}");
    assert!(
        log.contains("--egress-allow-private or --egress-allow <CIDR>"),
        "{url}: {log}"
    );
}

#[tokio::test]
async fn a_grant_of_every_host_reaches_no_loopback_address_by_default() {
    let (addr, accepted) = counting_listener("127.0.0.1:0").await.unwrap();
    let port = addr.port();
    let s = fetching_server(&[]).await;
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        // Another spelling of 127.0.0.1, resolved by the system.
        format!("http://127.1:{port}/"),
    ] {
        let run = fetch(&s, &url).await;
        assert_refused(&run, &url, "loopback address");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing connected");

    // IPv6 loopback, where this machine has it.
    if let Some((addr6, accepted6)) = counting_listener("[::1]:0").await {
        let url = format!("http://[::1]:{}/", addr6.port());
        let run = fetch(&s, &url).await;
        assert_refused(&run, &url, "loopback address");
        assert_eq!(accepted6.load(Ordering::SeqCst), 0, "nothing connected");
    }
}

#[tokio::test]
async fn cloud_metadata_is_refused_without_connecting() {
    let s = fetching_server(&[]).await;
    let started = Instant::now();
    let url = "http://169.254.169.254/latest/meta-data/";
    let run = fetch(&s, url).await;
    assert_refused(&run, url, "link-local address");
    // No connection was tried: nothing answers there, and a connect would
    // wait for its timeout.
    assert!(started.elapsed() < Duration::from_secs(10), "{run}");
}

#[tokio::test]
async fn the_operator_allows_loopback_with_egress_allow() {
    let (addr, accepted) = counting_listener("127.0.0.1:0").await.unwrap();
    let s = fetching_server(&common::ALLOW_LOOPBACK).await;
    for url in [
        format!("http://127.0.0.1:{}/", addr.port()),
        format!("http://localhost:{}/", addr.port()),
    ] {
        let run = fetch(&s, &url).await;
        assert_eq!(run["status"], "completed", "{url}: {run}");
        assert_eq!(step(&run, "get")["output"]["status"], 200, "{run}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // Only the block allowed: the rest of loopback stays refused.
    let url = format!("http://127.0.0.2:{}/", addr.port());
    assert_refused(&fetch(&s, &url).await, &url, "loopback address");
}

#[tokio::test]
async fn the_operator_allows_every_private_address_with_egress_allow_private() {
    let (addr, accepted) = counting_listener("127.0.0.1:0").await.unwrap();
    let s = fetching_server(&["--egress-allow-private"]).await;
    let run = fetch(&s, &format!("http://127.0.0.1:{}/", addr.port())).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
