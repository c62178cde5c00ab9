//! Tenant-uploaded plugins, the marketplace and capability grants, against
//! a real `weft serve` without `--plugin-dir`, so the `testkit` fixture can
//! be uploaded as a tenant's plugin.

use crate::common;

use std::path::PathBuf;

use common::cli::weft;
use common::{Server, guests, send, step};
use reqwest::Method;
use serde_json::{Value, json};

/// One server without the fixtures as shared plugins, for the whole binary.
fn server() -> Server {
    static SHARED: std::sync::OnceLock<(String, PathBuf)> = std::sync::OnceLock::new();
    let (url, data_dir) = SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        // Plugins reach a test server on loopback.
        let server = Server::start_with(&dir, false, &common::ALLOW_LOOPBACK);
        let url = server.url.clone();
        std::mem::forget(server);
        (url, dir)
    });
    Server::handle(url, data_dir)
}

/// A tenant of the server, with its admin key.
struct Tenant {
    name: String,
    key: String,
}

async fn new_tenant(s: &Server, prefix: &str) -> Tenant {
    let (name, key) = s.new_tenant(prefix).await;
    Tenant { name, key }
}

impl Tenant {
    fn req(&self, s: &Server, method: Method, path: &str) -> reqwest::RequestBuilder {
        s.client
            .request(method, format!("{}{path}", s.url))
            .bearer_auth(&self.key)
    }

    async fn call(
        &self,
        s: &Server,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.req(s, method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    async fn upload(&self, s: &Server, bytes: Vec<u8>, visibility: Option<&str>) -> (u16, Value) {
        let mut form = reqwest::multipart::Form::new().part(
            "component",
            reqwest::multipart::Part::bytes(bytes).file_name("plugin.wasm"),
        );
        if let Some(v) = visibility {
            form = form.text("visibility", v.to_owned());
        }
        send(self.req(s, Method::POST, "/v1/plugins").multipart(form)).await
    }

    /// Creates and publishes a workflow; returns the status and body of the
    /// create call (the publish is only attempted on 201).
    async fn define(&self, s: &Server, definition: Value) -> (u16, Value) {
        let key = definition["key"].as_str().expect("key").to_owned();
        let (status, body) = self
            .call(s, Method::POST, "/v1/workflows", Some(definition))
            .await;
        if status != 201 {
            return (status, body);
        }
        let (status, published) = self
            .call(
                s,
                Method::POST,
                &format!("/v1/workflows/{key}/publish"),
                Some(json!({"version": body["version"]})),
            )
            .await;
        assert_eq!(status, 200, "{published}");
        (201, body)
    }

    /// Starts a run and waits for it to end.
    async fn run(&self, s: &Server, workflow: &str) -> Value {
        let (status, run) = self
            .call(
                s,
                Method::POST,
                "/v1/runs",
                Some(json!({"workflow": workflow, "input": {}, "wait_ms": 60000})),
            )
            .await;
        assert_eq!(status, 200, "{run}");
        run
    }
}

fn echo_workflow(key: &str, uses: &str) -> Value {
    json!({"key": key, "name": key, "steps": [
        {"id": "a", "uses": uses, "config": {"mode": "echo"}}]})
}

#[tokio::test]
async fn upload_validates_the_component_and_refuses_duplicates() {
    let s = server();
    let t = new_tenant(&s, "up").await;

    let (status, body) = t.upload(&s, guests::rust("testkit"), None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "testkit");
    assert_eq!(body["version"], "0.1.0");
    assert_eq!(body["publisher"], t.name.as_str());
    assert_eq!(body["visibility"], "private");
    assert_eq!(body["yanked"], false);
    assert_eq!(body["builtin"], false);

    let (status, body) = t.upload(&s, guests::rust("testkit"), None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("already exists"),
        "{body}"
    );

    let (status, body) = t.upload(&s, b"definitely not wasm".to_vec(), None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["type"], "https://weft.dev/problems/bad-request");
    assert!(body["detail"].as_str().unwrap().contains("magic"), "{body}");

    let (status, body) = t.upload(&s, b"\0asm\x01\0\0\0".to_vec(), None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("core WebAssembly module"),
        "{body}"
    );

    let (status, body) = t.upload(&s, b"\0asm\x0d\0\x01\0".to_vec(), None).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("weft:plugin/step"),
        "{body}"
    );

    let (status, body) = t.upload(&s, guests::rust("send_email"), None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("built-in"),
        "{body}"
    );

    let (status, body) = t
        .upload(&s, guests::rust("testkit"), Some("everyone"))
        .await;
    assert_eq!(status, 422, "{body}");

    let (status, body) = send(
        t.req(&s, Method::POST, "/v1/plugins")
            .json(&json!({"component": "x"})),
    )
    .await;
    assert_eq!(status, 415, "{body}");

    // The tenant's catalog has it beside the built-ins, and it runs.
    let (status, list) = t.call(&s, Method::GET, "/v1/plugins?q=testkit", None).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        // Other tests' tenants may list theirs publicly as `publisher/testkit`.
        .filter(|name| !name.contains('/'))
        .collect();
    assert_eq!(names, ["testkit"]);
    let (status, body) = t.define(&s, echo_workflow("own", "testkit@0")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["definition"]["steps"][0]["plugin"], "testkit@0.1.0",
        "{body}"
    );
    let run = t.run(&s, "own").await;
    assert_eq!(run["status"], "completed", "{run}");
}

#[tokio::test]
async fn private_plugins_stay_private_and_public_ones_are_listed_as_publisher_name() {
    let s = server();
    let a = new_tenant(&s, "pub-a").await;
    let b = new_tenant(&s, "pub-b").await;
    let (status, body) = a.upload(&s, guests::rust("testkit"), None).await;
    assert_eq!(status, 201, "{body}");
    let foreign = format!("{}/testkit", a.name);

    let (_, list) = b
        .call(&s, Method::GET, "/v1/plugins?q=testkit&limit=100", None)
        .await;
    assert!(
        !list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"].as_str().unwrap().starts_with(a.name.as_str())),
        "{list}"
    );
    let path = format!("/v1/plugins/{}%2Ftestkit", a.name);
    let (status, _) = b.call(&s, Method::GET, &path, None).await;
    assert_eq!(status, 404);
    let (status, _) = b
        .call(&s, Method::GET, &format!("{path}/0.1.0"), None)
        .await;
    assert_eq!(status, 404);
    let (status, body) = b
        .define(&s, echo_workflow("foreign-early", &format!("{foreign}@0")))
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = b
        .call(&s, Method::DELETE, "/v1/plugins/testkit/0.1.0", None)
        .await;
    assert_eq!(status, 404, "another tenant's plugin cannot be yanked");

    // A lists it publicly.
    let (status, body) = a
        .call(
            &s,
            Method::PATCH,
            "/v1/plugins/testkit/0.1.0",
            Some(json!({"visibility": "public"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["visibility"], "public");

    let (_, list) = b.call(&s, Method::GET, "/v1/plugins?q=testkit", None).await;
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == foreign.as_str())
        .unwrap_or_else(|| panic!("{foreign} not listed: {list}"))
        .clone();
    assert_eq!(item["publisher"], a.name.as_str());
    assert_eq!(item["builtin"], false);
    let (status, _) = b
        .call(&s, Method::GET, &format!("{path}/0.1.0"), None)
        .await;
    assert_eq!(status, 200);

    let (status, body) = b
        .define(&s, echo_workflow("foreign", &format!("{foreign}@0")))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["definition"]["steps"][0]["plugin"],
        format!("{foreign}@0.1.0"),
        "{body}"
    );
    let run = b.run(&s, "foreign").await;
    assert_eq!(run["status"], "completed", "{run}");

    // A public upload is listed straight away.
    let c = new_tenant(&s, "pub-c").await;
    let (status, body) = c.upload(&s, guests::rust("testkit"), Some("public")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["visibility"], "public");
    let (_, list) = b
        .call(&s, Method::GET, "/v1/plugins?q=testkit&limit=100", None)
        .await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == format!("{}/testkit", c.name)),
        "{list}"
    );
}

#[tokio::test]
async fn yank_keeps_pinned_runs_working_and_refuses_new_definitions() {
    let s = server();
    let t = new_tenant(&s, "yank").await;
    let (status, body) = t.upload(&s, guests::rust("testkit"), None).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = t.define(&s, echo_workflow("pinned", "testkit@0")).await;
    assert_eq!(status, 201, "{body}");

    let (status, body) = t
        .call(&s, Method::DELETE, "/v1/plugins/testkit/0.1.0", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["yanked"], true);
    let (status, _) = t
        .call(&s, Method::DELETE, "/v1/plugins/testkit/9.9.9", None)
        .await;
    assert_eq!(status, 404);

    let run = t.run(&s, "pinned").await;
    assert_eq!(run["status"], "completed", "{run}");

    let (status, body) = t.define(&s, echo_workflow("after-yank", "testkit@0")).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("yanked"),
        "{body}"
    );
}

/// Answers every request with `200 ok`.
async fn tiny_http_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
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
    port
}

#[tokio::test]
async fn uploaded_plugins_get_nothing_until_granted() {
    let s = server();
    let t = new_tenant(&s, "grant").await;
    let (status, body) = t.upload(&s, guests::rust("testkit"), None).await;
    assert_eq!(status, 201, "{body}");
    let port = tiny_http_server().await;
    let host = format!("127.0.0.1:{port}");
    let (status, body) = t
        .define(&s, json!({"key": "web", "name": "web", "steps": [
            {"id": "get", "uses": "testkit@0", "config": {"mode": "http", "url": format!("http://{host}/")}}]}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = t
        .define(&s, json!({"key": "sec", "name": "sec", "steps": [
            {"id": "read", "uses": "testkit@0", "config": {"mode": "secret", "name": "API_TOKEN"}}]}))
        .await;
    assert_eq!(status, 201, "{body}");
    // Secrets may not exist on this host yet: then the value stays null.
    let (status, _) = t
        .call(
            &s,
            Method::PUT,
            "/v1/secrets/API_TOKEN",
            Some(json!({"value": "s3cret"})),
        )
        .await;
    let secrets_stored = (200..300).contains(&status);

    let (status, grants) = t
        .call(&s, Method::GET, "/v1/plugins/testkit/grants", None)
        .await;
    assert_eq!(status, 200, "{grants}");
    assert_eq!(
        grants["requested"],
        json!(["kv", "mail", "http:*", "secret:*", "files"])
    );
    assert_eq!(grants["ungranted"], grants["requested"]);
    assert_eq!(
        grants["granted"],
        json!({"allowed_hosts": [], "secrets": [], "mail": false, "kv": false, "files": false, "notify": false})
    );

    let run = t.run(&s, "web").await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        step(&run, "get")["error"].to_string().contains("denied"),
        "{run}"
    );
    let run = t.run(&s, "sec").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(step(&run, "read")["output"]["value"], Value::Null, "{run}");

    let (status, grants) = t
        .call(
            &s,
            Method::PUT,
            "/v1/plugins/testkit/grants",
            Some(json!({"allowed_hosts": [host], "secrets": ["API_TOKEN"], "mail": true})),
        )
        .await;
    assert_eq!(status, 200, "{grants}");
    assert_eq!(grants["granted"]["allowed_hosts"], json!([host]));
    assert_eq!(
        grants["ungranted"],
        json!(["kv", "http:*", "secret:*", "files"])
    );
    let (_, again) = t
        .call(&s, Method::GET, "/v1/plugins/testkit/grants", None)
        .await;
    assert_eq!(again, grants);

    let run = t.run(&s, "web").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(step(&run, "get")["output"]["status"], 200, "{run}");
    let run = t.run(&s, "sec").await;
    assert_eq!(run["status"], "completed", "{run}");
    if secrets_stored {
        assert_eq!(step(&run, "read")["output"]["value"], "s3cret", "{run}");
    }

    // Another tenant's view of the same name: nothing to grant.
    let other = new_tenant(&s, "grant-other").await;
    let (status, _) = other
        .call(&s, Method::GET, "/v1/plugins/testkit/grants", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = other
        .call(
            &s,
            Method::PUT,
            "/v1/plugins/testkit/grants",
            Some(json!({"mail": true})),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn uploads_survive_a_restart_and_oversize_uploads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(dir.path(), false, &[]);
    let (status, body) = s.post("/v1/tenants", json!({"name": "restart"})).await;
    assert_eq!(status, 201, "{body}");
    let t = Tenant {
        name: "restart".into(),
        key: body["admin_key"].as_str().unwrap().to_owned(),
    };
    let (status, body) = t.upload(&s, guests::rust("testkit"), None).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = t.define(&s, echo_workflow("kept", "testkit@0")).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = t
        .call(
            &s,
            Method::PUT,
            "/v1/plugins/testkit/grants",
            Some(json!({"kv": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.kill();

    let s = Server::start_with(dir.path(), false, &["--max-upload-bytes", "4096"]);
    let (status, body) = t
        .call(&s, Method::GET, "/v1/plugins/testkit/0.1.0", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let run = t.run(&s, "kept").await;
    assert_eq!(run["status"], "completed", "{run}");
    let (_, grants) = t
        .call(&s, Method::GET, "/v1/plugins/testkit/grants", None)
        .await;
    assert_eq!(grants["granted"]["kv"], true, "{grants}");

    // Its own connection: the server may close it after refusing the body.
    let form = reqwest::multipart::Form::new().part(
        "component",
        reqwest::multipart::Part::bytes(guests::rust("testkit")).file_name("testkit.wasm"),
    );
    let response = reqwest::Client::new()
        .post(format!("{}/v1/plugins", s.url))
        .bearer_auth(&t.key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "https://weft.dev/problems/payload-too-large");
}

#[tokio::test]
async fn cli_pushes_lists_and_grants_through_the_api() {
    let s = server();
    let t = new_tenant(&s, "cli").await;
    let wasm = guests::path("testkit");
    let wasm = wasm.to_str().unwrap();

    let out = weft(&s, &t.key, &["plugin", "push", wasm, "--public"]);
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout.contains("published testkit@0.1.0 (public"),
        "{out:?}"
    );
    let out = weft(&s, &t.key, &["plugin", "push", wasm]);
    assert!(!out.ok());
    assert!(out.stderr.contains("409"), "{out:?}");

    let out = weft(&s, &t.key, &["plugin", "list", "-q", "testkit"]);
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("testkit ") && l.contains("public")),
        "{out:?}"
    );

    let out = weft(
        &s,
        &t.key,
        &[
            "plugin",
            "grant",
            "testkit",
            "--host",
            "api.example.com",
            "--secret",
            "TOKEN",
            "--mail",
        ],
    );
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout
            .contains("not granted: kv, http:*, secret:*, files"),
        "{out:?}"
    );
    let (_, grants) = t
        .call(&s, Method::GET, "/v1/plugins/testkit/grants", None)
        .await;
    assert_eq!(
        grants["granted"],
        json!({"allowed_hosts": ["api.example.com"], "secrets": ["TOKEN"], "mail": true, "kv": false, "files": false, "notify": false})
    );
}
