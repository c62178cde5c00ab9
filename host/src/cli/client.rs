//! The integrator's commands (`weft workflow …`, `weft run …`, and the
//! administrator's `weft tenant …`, `weft key …`): a thin
//! client of the HTTP API and nothing else, so what it does an integrator's
//! own code can do too. `task` lists and manages the tasks of paused
//! human steps.
//!
//! # Layout
//!
//! This file holds the connection options, the HTTP client and the error a
//! problem document becomes; `workflow` applies definitions, `run` starts and
//! controls runs, `watch` follows one run until it settles, and `admin`
//! manages tenants and API keys.

mod admin;
mod run;
mod task;
mod watch;
mod workflow;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde_json::Value;

pub use admin::{KeyArgs, TenantArgs, key as key_command, tenant as tenant_command};
pub use run::{RunArgs, run as run_command};
pub use task::{TaskArgs, task as task_command};
pub use workflow::{WorkflowArgs, run as workflow_command};

/// How long one request may take (a run is watched by many short ones).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server to talk to and as whom; accepted by every client command.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// Base URL of the server.
    #[arg(
        long,
        env = "WEFT_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// API key; default: the one in `./weft-data/admin-key` (or under
    /// `$WEFT_DATA_DIR`), which `weft serve` writes on first start.
    #[arg(long, env = "WEFT_KEY", hide_env_values = true, global = true)]
    key: Option<String>,
}

impl Connection {
    /// The key given, else the local server's admin key if there is one.
    fn resolve_key(&self) -> anyhow::Result<Option<String>> {
        if let Some(key) = &self.key {
            return Ok(Some(key.trim().to_owned()));
        }
        let dir =
            std::env::var_os("WEFT_DATA_DIR").map_or_else(|| "weft-data".into(), PathBuf::from);
        let path = dir.join("admin-key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned()).filter(|k| !k.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("reading the API key from {}", path.display()))
            }
        }
    }
}

/// A 4xx or 5xx answer, from its RFC 9457 problem document when it has one.
#[derive(Debug)]
pub struct ApiProblem {
    pub status: StatusCode,
    pub detail: String,
    /// `errors[]` of an invalid definition: the step (if any) and the message.
    pub errors: Vec<(Option<String>, String)>,
    /// Whether the request went without credentials (for a hint on 401).
    anonymous: bool,
}

impl ApiProblem {
    fn new(status: StatusCode, body: &Value, anonymous: bool) -> Self {
        let detail = match body {
            Value::String(text) if !text.trim().is_empty() => text.trim().to_owned(),
            _ => body["detail"]
                .as_str()
                .or_else(|| body["title"].as_str())
                .or_else(|| status.canonical_reason())
                .unwrap_or("request failed")
                .to_owned(),
        };
        let errors = body["errors"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|e| {
                        let message = e["message"]
                            .as_str()
                            .map_or_else(|| e.to_string(), str::to_owned);
                        (e["step"].as_str().map(str::to_owned), message)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            status,
            detail,
            errors,
            anonymous,
        }
    }
}

impl std::fmt::Display for ApiProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.detail, self.status.as_u16())?;
        for (step, message) in &self.errors {
            match step {
                Some(step) => write!(f, "\n  step {step}: {message}")?,
                None => write!(f, "\n  {message}")?,
            }
        }
        if self.status == StatusCode::UNAUTHORIZED && self.anonymous {
            write!(
                f,
                "\n  no API key was sent: pass --key or set WEFT_KEY (or run from the directory holding weft-data/)"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiProblem {}

/// The HTTP API as the CLI sees it: JSON in, JSON out, problems as errors.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: Option<String>,
}

impl Client {
    pub fn new(connection: &Connection) -> anyhow::Result<Self> {
        let base = Url::parse(&connection.url)
            .with_context(|| format!("--url {:?} is not a URL", connection.url))?;
        if base.cannot_be_a_base() {
            anyhow::bail!("--url {:?} cannot be a base URL", connection.url);
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("weft-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base,
            key: connection.resolve_key()?,
        })
    }

    /// `base` joined with percent-encoded path segments.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request with credentials, for callers that need more than `call`.
    pub fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let request = self.http.request(method, self.url(segments));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends a request; any status comes back with the body (JSON if it
    /// parses, else a string).
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
        let request = request.build().context("building the request")?;
        let what = format!("{} {}", request.method(), request.url());
        let response = self
            .http
            .execute(request)
            .await
            .with_context(|| format!("{what}: cannot reach the server"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{what}: reading the response"))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }

    /// Sends a JSON request and returns the body of a 2xx answer; anything
    /// else is an [`ApiProblem`].
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.request(method, segments);
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, body) = self.send(request).await?;
        self.expect_success(status, body)
    }

    pub async fn get(&self, segments: &[&str]) -> anyhow::Result<Value> {
        self.call(Method::GET, segments, None).await
    }

    pub async fn post(&self, segments: &[&str], body: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, segments, Some(body)).await
    }

    /// `GET` with query parameters.
    pub async fn get_query(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        let request = self.request(Method::GET, segments).query(query);
        let (status, body) = self.send(request).await?;
        self.expect_success(status, body)
    }

    /// `GET`, with `404` as `None`.
    pub async fn get_optional(&self, segments: &[&str]) -> anyhow::Result<Option<Value>> {
        let (status, body) = self.send(self.request(Method::GET, segments)).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.expect_success(status, body).map(Some)
    }

    fn expect_success(&self, status: StatusCode, body: Value) -> anyhow::Result<Value> {
        if status.is_success() {
            Ok(body)
        } else {
            Err(ApiProblem::new(status, &body, self.key.is_none()).into())
        }
    }
}

/// Pretty JSON for people (and still valid JSON for scripts).
fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
