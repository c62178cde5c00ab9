//! A real `weft serve` process on an ephemeral port with a temporary data
//! directory, the built-in plugins and the test fixtures (`--plugin-dir`).
//!
//! The database is SQLite in the data directory, or, with
//! `WEFT_TEST_BACKEND=postgres`, a Postgres database of its own per data
//! directory (see [`pg`]), so the same tests run against both.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub const ADMIN_KEY: &str = "wft_test_operator_key_for_tests";

/// `weft serve` arguments that let plugins and webhooks reach the tests'
/// own servers on 127.0.0.1, which the egress policy refuses by default.
pub const ALLOW_LOOPBACK: [&str; 2] = ["--egress-allow", "127.0.0.1/32"];

pub mod cli;
pub mod guests;
pub mod pg;
pub mod smtp;

/// The `weft` binary the servers run: `WEFT_TEST_BIN` if set (a copy kept
/// apart when several work trees share one target directory, whose
/// `weft` the last build of any of them overwrites), else cargo's.
pub fn weft_bin() -> PathBuf {
    std::env::var_os("WEFT_TEST_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_weft")), PathBuf::from)
}

/// Whether the servers of this test run use Postgres.
pub fn postgres() -> bool {
    std::env::var("WEFT_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// The database URL of the server on `data_dir`.
pub fn database_url(data_dir: &Path) -> String {
    if postgres() {
        pg::database_for(data_dir)
    } else {
        format!("sqlite://{}/weft.db", data_dir.display())
    }
}

/// Every message in the outbox of the server on `data_dir`, read from its
/// database: run id, step id, message id.
pub async fn outbox_rows(data_dir: &Path) -> Vec<(String, String, String)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&database_url(data_dir))
        .await
        .unwrap();
    sqlx::query_as("SELECT run_id, step_id, message_id FROM outbox")
        .fetch_all(&pool)
        .await
        .unwrap()
}

pub struct Server {
    pub url: String,
    pub child: Child,
    pub data_dir: PathBuf,
    /// Keeps the directory alive as long as the server.
    _dir: Option<tempfile::TempDir>,
    pub client: reqwest::Client,
}

impl Server {
    pub fn start() -> Self {
        Self::start_args(&[])
    }

    /// [`Self::start`] with extra arguments for `weft serve`.
    pub fn start_args(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().to_path_buf();
        let mut server = Self::start_in(&data_dir, extra);
        server._dir = Some(dir);
        server
    }

    /// Starts `weft serve` on `data_dir` (again, after a kill, for restarts).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(data_dir, true, extra)
    }

    /// Starts `weft serve` on `data_dir`, with the test fixtures as shared
    /// plugins (`--plugin-dir`) or with the built-ins only (so a test can
    /// upload a fixture as a tenant's plugin).
    pub fn start_with(data_dir: &Path, plugin_dir: bool, extra: &[&str]) -> Self {
        Self::start_with_env(data_dir, plugin_dir, extra, &[])
    }

    /// [`Self::start_with`] with environment variables set after the
    /// defaults (`("WEFT_ADMIN_KEY", "")` starts with no pinned key).
    pub fn start_with_env(
        data_dir: &Path,
        plugin_dir: bool,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(weft_bin());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        if plugin_dir {
            command.arg("--plugin-dir").arg(guests::dir());
        }
        if postgres() && !extra.contains(&"--database") {
            command.arg("--database").arg(database_url(data_dir));
        }
        let mut child = command
            .args(extra)
            .arg("--stop-on-stdin-eof")
            .stdin(Stdio::piped())
            .env("WEFT_ADMIN_KEY", ADMIN_KEY)
            // Tests share keys across many parallel requests; the limits get their own test.
            .env("WEFT_RATE_LIMIT_PER_KEY", "100000")
            .env("WEFT_RUNS_PER_MINUTE", "1000000")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weft serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("weft serve exited before listening")
                .expect("read stdout");
            if let Some(url) = line.strip_prefix("weft listening on ") {
                break url.trim().to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            url,
            child,
            data_dir: data_dir.to_path_buf(),
            _dir: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_KEY)
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_as(ADMIN_KEY, method, path, body).await
    }

    /// [`Self::call`] with another key.
    pub async fn call_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    /// Uploads a component as the admin tenant's plugin (`POST
    /// /v1/plugins`); the status and body.
    pub async fn upload_plugin(&self, component: Vec<u8>) -> (u16, Value) {
        let form = reqwest::multipart::Form::new().part(
            "component",
            reqwest::multipart::Part::bytes(component).file_name("plugin.wasm"),
        );
        send(
            self.req(reqwest::Method::POST, "/v1/plugins")
                .multipart(form),
        )
        .await
    }

    /// Creates a tenant named `<prefix>-<unique suffix>` as the operator;
    /// its name and admin key.
    pub async fn new_tenant(&self, prefix: &str) -> (String, String) {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        let (status, body) = self.post("/v1/tenants", json!({"name": name})).await;
        assert_eq!(status, 201, "{body}");
        let key = body["admin_key"].as_str().expect("admin_key").to_owned();
        (name, key)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text")
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Creates and publishes a workflow; panics with the problem otherwise.
    pub async fn publish(&self, definition: Value) -> Value {
        let key = definition["key"].as_str().expect("key").to_owned();
        let (status, body) = self.post("/v1/workflows", definition).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = self
            .post(
                &format!("/v1/workflows/{key}/publish"),
                json!({"version": body["version"]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Starts a run without waiting (202); its id.
    pub async fn start_run(&self, workflow: &str, input: Value) -> String {
        let (status, run) = self
            .post("/v1/runs", json!({"workflow": workflow, "input": input}))
            .await;
        assert_eq!(status, 202, "{run}");
        run["id"].as_str().unwrap().to_owned()
    }

    /// Starts a run and waits for it to end (up to 60 s).
    pub async fn run_sync(&self, workflow: &str, input: Value) -> Value {
        let (status, body) = self
            .post(
                "/v1/runs",
                json!({"workflow": workflow, "input": input, "wait_ms": 60000}),
            )
            .await;
        assert!(status == 200 || status == 202, "{status} {body}");
        body
    }

    /// Polls a run until `done(run)` or the timeout.
    pub async fn wait_until(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (status, run) = self.get(&format!("/v1/runs/{id}")).await;
            assert_eq!(status, 200, "{run}");
            if done(&run) {
                return run;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting on run {id}: {run}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One server shared by the tests of a binary (each test makes its own
/// client: a client is bound to the runtime that made it).
pub fn shared() -> Server {
    static SHARED: std::sync::OnceLock<(String, PathBuf)> = std::sync::OnceLock::new();
    let (url, data_dir) = SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let server = Server::start_in(&dir, &[]);
        let url = server.url.clone();
        // The process lives as long as the test binary.
        std::mem::forget(server);
        (url, dir)
    });
    Server::handle(url, data_dir)
}

impl Server {
    /// A handle on a server started elsewhere and kept alive for the whole
    /// test binary (dropping the handle does not stop it).
    pub fn handle(url: &str, data_dir: &Path) -> Self {
        Server {
            url: url.to_owned(),
            child: Command::new("true").spawn().expect("placeholder child"),
            data_dir: data_dir.to_path_buf(),
            _dir: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a request; its status and body (JSON, or the text as a string).
pub async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no step {id} in {run}"))
}

/// Runs limited to one at a time (a concurrency key): in the order they
/// started, none starts before the previous one ended, and after the first
/// (which may have taken the workflow's lock before runs created earlier)
/// they start in the order queued runs are released, creation time then id.
pub fn assert_one_at_a_time_in_order(key: &str, mut runs: Vec<&Value>) {
    let text = |r: &Value, field: &str| r[field].as_str().unwrap_or_default().to_owned();
    runs.sort_by_key(|r| text(r, "started_at"));
    for pair in runs.windows(2) {
        let (earlier, later) = (pair[0], pair[1]);
        assert!(
            text(later, "started_at") >= text(earlier, "ended_at"),
            "{key}: {earlier} overlaps {later}"
        );
    }
    for pair in runs[1.min(runs.len())..].windows(2) {
        let (earlier, later) = (pair[0], pair[1]);
        assert!(
            (text(earlier, "created_at"), text(earlier, "id"))
                <= (text(later, "created_at"), text(later, "id")),
            "{key}: {later} was created first but started after {earlier}"
        );
    }
}
