//! Request and response bodies, converted by hand from engine and db types.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::db::runs::{AttemptRow, EventRow, RunRow, StepRow};
use crate::db::workflows::{Version, Workflow};
use crate::engine::rfc3339;
use crate::engine::runs::RunView;

fn parse(text: &Option<String>) -> Value {
    text.as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// An RFC 9457 problem document.
#[derive(Serialize, ToSchema)]
pub struct ProblemDoc {
    /// Stable URI naming the kind of problem.
    pub r#type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For invalid definitions: each problem with the step it concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ProblemItem>>,
}

#[derive(Serialize, ToSchema)]
pub struct ProblemItem {
    pub step: Option<String>,
    pub message: String,
}

/// A workflow definition (the body of create and PUT).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DefinitionDoc {
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub input_schema: Option<Value>,
    pub steps: Vec<StepDoc>,
    pub max_duration_ms: Option<u64>,
    /// Overlap control: `{limit, on_limit: "queue" | "reject"}`.
    pub concurrency: Option<ConcurrencyDoc>,
    /// Manual starts closer together than this are refused with 409.
    pub min_interval_ms: Option<u64>,
    /// Template for the run's result; default: outputs of the final steps.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// For PUT: the new version (must be newer); default: next minor.
    pub version: Option<String>,
}

/// How many runs of a workflow may be unfinished at once.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ConcurrencyDoc {
    pub limit: u32,
    /// `queue` (default): wait in start order; `reject`: 409 naming a
    /// running run.
    pub on_limit: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct StepDoc {
    pub id: String,
    /// `plugin@major`, or `wait`, `collect_inputs`, `request_user_action`.
    pub uses: String,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    pub depends_on: Option<Vec<String>>,
    /// A condition: `"{{steps.a.output.n}} > 0"`, a template, or a boolean.
    #[serde(rename = "if")]
    #[schema(value_type = Option<Object>)]
    pub condition: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub retry: Option<Value>,
    pub timeout_ms: Option<u64>,
    #[schema(value_type = Option<Object>)]
    pub catch: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionOut {
    pub version: String,
    /// `draft` or `published`.
    pub status: String,
    pub created_at: String,
    pub published_at: Option<String>,
}

impl From<&Version> for VersionOut {
    fn from(v: &Version) -> Self {
        Self {
            version: v.version.to_string(),
            status: v.status.clone(),
            created_at: rfc3339(v.created_at),
            published_at: v.published_at.map(rfc3339),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WorkflowOut {
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    /// The version shown (for lists: the newest).
    pub version: String,
    /// `draft`, `published` or `archived`.
    pub status: String,
    pub archived: bool,
    pub created_at: String,
    pub updated_at: String,
    pub published_version: Option<String>,
    #[schema(value_type = Object)]
    pub definition: Value,
}

impl WorkflowOut {
    pub fn new(workflow: &Workflow, version: &Version, versions: &[Version]) -> Self {
        let definition: Value = serde_json::from_str(&version.definition).unwrap_or(Value::Null);
        Self {
            key: workflow.key.clone(),
            name: workflow.name.clone(),
            description: workflow.description.clone(),
            version: version.version.to_string(),
            status: if workflow.archived_at.is_some() {
                "archived".into()
            } else {
                version.status.clone()
            },
            archived: workflow.archived_at.is_some(),
            created_at: rfc3339(workflow.created_at),
            updated_at: rfc3339(workflow.updated_at),
            published_version: versions
                .iter()
                .find(|v| v.status == "published")
                .map(|v| v.version.to_string()),
            definition,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WorkflowList {
    pub items: Vec<WorkflowOut>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    pub key: String,
    pub items: Vec<VersionOut>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptOut {
    pub attempt: i64,
    /// running, completed, failed or interrupted.
    pub status: String,
    pub host: Option<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub logs: Value,
    /// The step's config as this attempt saw it, templates rendered (null
    /// for steps without a plugin, or if it could not be rendered).
    #[schema(value_type = Object)]
    pub input: Value,
}

#[derive(Serialize, ToSchema)]
pub struct StepOut {
    pub id: String,
    pub kind: String,
    /// pending, ready, running, paused, completed, skipped, failed or cancelled.
    pub status: String,
    pub attempts: i64,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub next_attempt_at: Option<String>,
    #[schema(value_type = Object)]
    pub output: Value,
    #[schema(value_type = Object)]
    pub error: Value,
    pub attempt_log: Vec<AttemptOut>,
}

fn attempt_out(a: &AttemptRow) -> AttemptOut {
    AttemptOut {
        attempt: a.attempt,
        status: a.status.clone(),
        host: a.host.clone(),
        started_at: rfc3339(a.started_at),
        ended_at: a.ended_at.map(rfc3339),
        duration_ms: a.ended_at.map(|e| e - a.started_at),
        error_kind: a.error_kind.clone(),
        error: a.error.clone(),
        logs: parse(&a.logs),
        input: parse(&a.input),
    }
}

fn step_out(s: &StepRow, attempts: &[AttemptRow]) -> StepOut {
    StepOut {
        id: s.step_id.clone(),
        kind: s.kind.clone(),
        status: s.status.clone(),
        attempts: s.attempts,
        started_at: s.started_at.map(rfc3339),
        ended_at: s.ended_at.map(rfc3339),
        duration_ms: s.started_at.zip(s.ended_at).map(|(a, b)| b - a),
        next_attempt_at: (s.status == "ready")
            .then_some(s.due_at)
            .flatten()
            .map(rfc3339),
        output: parse(&s.output),
        error: parse(&s.error),
        attempt_log: attempts
            .iter()
            .filter(|a| a.step_id == s.step_id)
            .map(attempt_out)
            .collect(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct RunOut {
    pub id: String,
    pub workflow: String,
    pub version: String,
    pub status: String,
    #[schema(value_type = Object)]
    pub input: Value,
    #[schema(value_type = Object)]
    pub result: Value,
    #[schema(value_type = Object)]
    pub error: Value,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// Steps waiting for a person or system. Absent where the answer does
    /// not load steps (a start's `202`); `GET /v1/runs/{id}` has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_on: Option<Vec<String>>,
    /// Why the run was cancelled or terminated, as the caller gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// True while the run waits for its workflow's concurrency limit
    /// (status `pending`, nothing scheduled yet).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
    /// The schedule that started the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    /// Absent in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepOut>>,
}

impl RunOut {
    /// The run without its steps; `paused_on` as given (see
    /// [`RunOut::paused_on`]).
    pub fn summary(run: &RunRow) -> Self {
        let error = parse(&run.error);
        Self {
            id: run.id.clone(),
            workflow: run.workflow_key.clone(),
            version: run.workflow_version.clone(),
            status: run.status.clone(),
            input: serde_json::from_str(&run.input).unwrap_or(Value::Null),
            result: parse(&run.result),
            reason: error["reason"].as_str().map(str::to_owned),
            error,
            created_at: rfc3339(run.created_at),
            started_at: run.started_at.map(rfc3339),
            ended_at: run.ended_at.map(rfc3339),
            duration_ms: run.started_at.zip(run.ended_at).map(|(a, b)| b - a),
            paused_on: (run.status != "paused").then(Vec::new),
            queued: run.queued,
            schedule_id: run.schedule_id.clone(),
            steps: None,
        }
    }

    pub fn full(view: &RunView) -> Self {
        let mut out = Self::summary(&view.run);
        out.paused_on = Some(
            view.steps
                .iter()
                .filter(|s| s.status == "paused")
                .map(|s| s.step_id.clone())
                .collect(),
        );
        out.steps = Some(
            view.steps
                .iter()
                .map(|s| step_out(s, &view.attempts))
                .collect(),
        );
        out
    }
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub items: Vec<RunOut>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RunStatus {
    pub id: String,
    pub status: String,
    /// Steps running, ready or paused.
    pub current_steps: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventOut {
    pub id: i64,
    pub r#type: String,
    pub run_id: String,
    pub step_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
    pub at: String,
}

impl From<&EventRow> for EventOut {
    fn from(e: &EventRow) -> Self {
        Self {
            id: e.id,
            r#type: e.kind.clone(),
            run_id: e.run_id.clone(),
            step_id: e.step_id.clone(),
            data: serde_json::from_str(&e.data).unwrap_or(Value::Null),
            at: rfc3339(e.at),
        }
    }
}

/// An event of any run of the tenant, with the run's workflow and current
/// status (`GET /v1/events`).
#[derive(Serialize, ToSchema)]
pub struct TenantEventOut {
    pub id: i64,
    pub r#type: String,
    pub run_id: String,
    pub step_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
    pub at: String,
    pub workflow: Option<String>,
    pub workflow_version: Option<String>,
    /// The run's status when the event was read (not when it happened).
    pub run_status: Option<String>,
}

impl From<&crate::db::webhooks::EventForDelivery> for TenantEventOut {
    fn from(e: &crate::db::webhooks::EventForDelivery) -> Self {
        Self {
            id: e.id,
            r#type: e.kind.clone(),
            run_id: e.run_id.clone(),
            step_id: e.step_id.clone(),
            data: serde_json::from_str(&e.data).unwrap_or(Value::Null),
            at: rfc3339(e.at),
            workflow: e.workflow_key.clone(),
            workflow_version: e.workflow_version.clone(),
            run_status: e.run_status.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TenantEventList {
    pub items: Vec<TenantEventOut>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    pub items: Vec<EventOut>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    pub workflow: String,
    /// Default: the published version.
    pub version: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Value,
    /// Wait up to this long (at most 60000) for the run to finish.
    pub wait_ms: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeRun {
    pub step_id: String,
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    pub action: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub override_output: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    pub version: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneWorkflow {
    pub new_key: String,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Terminate {
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PluginOut {
    /// How this tenant names it in `uses`: `name`, or `publisher/name` for
    /// another tenant's public plugin.
    pub name: String,
    pub version: String,
    pub description: String,
    /// Built into the host (or added by the operator): every tenant has it.
    pub builtin: bool,
    /// The uploading tenant's name; `null` for built-ins.
    pub publisher: Option<String>,
    /// `private` (the publisher only) or `public` (every tenant); built-ins
    /// are `public`.
    pub visibility: String,
    /// Yanked: runs pinned to it keep working; new definitions cannot use it.
    pub yanked: bool,
    pub capabilities: Vec<String>,
    #[schema(value_type = Object)]
    pub config_schema: Value,
    #[schema(value_type = Object)]
    pub input_schema: Value,
    #[schema(value_type = Object)]
    pub output_schema: Value,
    pub sha256: String,
    pub size_bytes: usize,
}

#[derive(Serialize, ToSchema)]
pub struct PluginList {
    pub items: Vec<PluginOut>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CatalogEntry {
    /// `send_email@1` style reference or a built-in step kind.
    pub uses: String,
    pub kind: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub config_schema: Value,
    /// What the step produces (absent for built-in kinds).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    /// Host capabilities the plugin asks for (`kv`, `mail`, `notify`, …).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// `summary` (must feed a delivery step) or `delivery`, if declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The exact version `uses` resolves to now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Catalog {
    pub items: Vec<CatalogEntry>,
}

/// The form of `POST /v1/plugins`.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documents the multipart form; the handler reads fields"
)]
pub struct PluginUpload {
    /// The component (`.wasm`).
    #[schema(value_type = String, format = Binary)]
    pub component: Vec<u8>,
    /// `private` (default) or `public`.
    pub visibility: Option<String>,
}

/// `PATCH /v1/plugins/{name}/{version}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginPatch {
    /// `private` or `public`.
    pub visibility: String,
}

/// What a tenant lets a plugin use; every field defaults to nothing.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantsDoc {
    /// `api.example.com`, `api.example.com:8443`, `*.example.com`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Secret names the plugin may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub mail: bool,
    #[serde(default)]
    pub kv: bool,
    #[serde(default)]
    pub files: bool,
    /// In-app notifications.
    #[serde(default)]
    pub notify: bool,
}

#[derive(Serialize, ToSchema)]
pub struct GrantsOut {
    /// `name` or `publisher/name`.
    pub plugin: String,
    /// What attempts of the plugin get in this tenant.
    pub granted: GrantsDoc,
    /// The capabilities the plugin declares in `describe()`.
    pub requested: Vec<String>,
    /// Requested but not granted.
    pub ungranted: Vec<String>,
}
