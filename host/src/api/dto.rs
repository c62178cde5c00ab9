//! Request and response bodies, converted by hand from engine and db types.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::db::runs::{self, AttemptRow, EventRow, RunRow, StepRow, StepStatus};
use crate::db::workflows::{Version, Workflow};
use crate::engine::rfc3339;
use crate::engine::runs::{Detail, RunView};

fn parse(text: &Option<String>) -> Value {
    text.as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// JSON Schema counts any number with a zero fraction as an `integer`, so
/// to a JSON Schema client `936.0` is a valid `wait_ms`; serde's integer
/// types refuse it. Rewrites such numbers as integers at `path` in a
/// request body (`*`: every element of an array), leaving the rest (user
/// data such as `input`) as sent.
pub fn integral_floats(value: &mut Value, path: &[&str]) {
    match path.split_first() {
        None => {
            if let Some(integer) = value.as_f64().filter(|_| value.is_f64()).and_then(integral) {
                *value = integer;
            }
        }
        Some((&"*", rest)) => {
            if let Value::Array(items) = value {
                for item in items {
                    integral_floats(item, rest);
                }
            }
        }
        Some((key, rest)) => {
            if let Some(inner) = value.get_mut(*key) {
                integral_floats(inner, rest);
            }
        }
    }
}

/// `n` as a JSON integer if it is one within the 64-bit range.
pub fn integral(n: f64) -> Option<Value> {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if n.fract() != 0.0 || !n.is_finite() {
        None
    } else if (0.0..2.0 * TWO_63).contains(&n) {
        Some(Value::from(n as u64))
    } else if (-TWO_63..0.0).contains(&n) {
        Some(Value::from(n as i64))
    } else {
        None
    }
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
    /// For a start refused by overlap control: the run in the way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ProblemItem {
    /// The step concerned; absent for the workflow as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub message: String,
}

/// A workflow definition (the body of create and PUT).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefinitionDoc {
    /// 1-64 letters, digits, `_` or `-`, starting with a letter.
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema the run input must meet.
    #[schema(value_type = Option<Object>)]
    pub input_schema: Option<Value>,
    pub steps: Vec<StepDoc>,
    /// A run that takes longer fails with `max_duration`.
    pub max_duration_ms: Option<u64>,
    /// Overlap control: `{limit, on_limit: "queue" | "reject" | "replace",
    /// key?}`.
    pub concurrency: Option<ConcurrencyDoc>,
    /// Manual starts closer together than this are refused with 409.
    pub min_interval_ms: Option<u64>,
    /// Labels every run gets: name to a template over `input` (e.g.
    /// `{"customer": "{{input.customer_id}}"}`), rendered at start; a
    /// start's own labels win.
    pub labels: Option<BTreeMap<String, String>>,
    /// Template for the run's result (any JSON, `{{…}}` templates
    /// rendered); default: outputs of the final steps.
    pub output: Option<Value>,
    /// For PUT: the new version (must be newer); default: next minor.
    pub version: Option<String>,
}

/// How many runs of a workflow may be unfinished at once.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyDoc {
    pub limit: u32,
    /// `queue` (default): wait in start order; `reject`: 409 naming a
    /// running run; `replace`: the oldest unfinished runs are cancelled
    /// (the newest start wins).
    #[schema(value_type = Option<OnLimitDoc>, nullable = false)]
    pub on_limit: Option<String>,
    /// A template over `input` (`{{input.customer_id}}`): the limit holds
    /// per value of it. A run whose key renders to null is not limited.
    pub key: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the allowed values")]
#[serde(rename_all = "snake_case")]
pub enum OnLimitDoc {
    Queue,
    Reject,
    Replace,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDoc {
    /// 1-64 letters, digits, `_` or `-`, starting with a letter.
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    pub id: String,
    /// `plugin@major`, or `wait`, `collect_inputs`, `request_user_action`.
    pub uses: String,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    #[schema(nullable = false)]
    pub depends_on: Option<Vec<String>>,
    /// A condition: `"{{steps.a.output.n}} > 0"`, a template, or a boolean.
    #[serde(rename = "if")]
    #[schema(value_type = Option<ConditionDoc>)]
    pub condition: Option<Value>,
    #[schema(value_type = Option<RetryDoc>)]
    pub retry: Option<Value>,
    pub timeout_ms: Option<u64>,
    #[schema(value_type = Option<CatchDoc>)]
    pub catch: Option<Value>,
    pub rate_limit: Option<RateLimitDoc>,
    /// A template that renders to a list (`"{{steps.find.output.invoices}}"`,
    /// at most 10,000 items): the step runs once per item, with `{{item}}`
    /// and `{{item_index}}` in its config and `rate_limit.key`. Each item
    /// has its own attempts (the step's `retry`) and idempotency key
    /// (`<run>/<step>/<index>`); the step's output is the list of the
    /// items' outputs, in order.
    pub for_each: Option<String>,
    /// With `for_each`: at most this many items at a time (default 10).
    #[schema(minimum = 1, maximum = 100)]
    pub max_parallel: Option<u32>,
    /// With `for_each`: `fail` (default): an item that fails for good stops
    /// the step, which fails once the items under way end; `continue`: its
    /// place in the output is `{"error": {kind, message, attempt}}` and
    /// the other items go on.
    #[schema(value_type = Option<OnItemFailureDoc>, nullable = false)]
    pub on_item_failure: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the allowed values")]
#[serde(rename_all = "snake_case")]
pub enum OnItemFailureDoc {
    Fail,
    Continue,
}

/// At most `per_minute` attempts a minute among the tenant's steps whose
/// `key` renders the same (a template like `config`: `"{{input.partner}}"`);
/// over it a step waits for the next minute, it never fails.
#[derive(Serialize, Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the shape; the engine parses it")]
#[serde(deny_unknown_fields)]
pub struct RateLimitDoc {
    pub key: String,
    #[schema(minimum = 1, maximum = 1000000)]
    pub per_minute: u32,
}

/// A step's `if`: an expression such as `"{{steps.a.output.n}} > 0"` or
/// `"{{input.send}}"`, or a constant.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the two shapes; the engine parses them")]
#[serde(untagged)]
pub enum ConditionDoc {
    Expression(String),
    Constant(bool),
}

/// Attempts and backoff of a step that fails with a retryable error.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the shape; the engine parses it")]
#[serde(deny_unknown_fields)]
pub struct RetryDoc {
    /// Attempts in all, the first included (1 = no retry).
    #[schema(minimum = 1, maximum = 20)]
    pub max_attempts: u32,
    #[schema(nullable = false)]
    pub backoff: Option<BackoffDoc>,
}

/// Exponential backoff with ±20% jitter: `initial_ms * multiplier^(n-1)`,
/// at most `max_ms`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the shape; the engine parses it")]
#[serde(deny_unknown_fields)]
pub struct BackoffDoc {
    /// Default 1000.
    #[schema(nullable = false)]
    pub initial_ms: Option<u64>,
    /// At least 1; default 2.
    #[schema(nullable = false, minimum = 1)]
    pub multiplier: Option<f64>,
    /// Default 300000.
    #[schema(nullable = false)]
    pub max_ms: Option<u64>,
}

/// A compensating step run when its step fails for good; its config may use
/// `{{failure.error}}` and `{{failure.step}}`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the shape; the engine parses it")]
#[serde(deny_unknown_fields)]
pub struct CatchDoc {
    pub uses: String,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
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
    /// What the attempt logged, oldest first (null if it logged nothing
    /// or is still running). Only in the full view (`?view=full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<LogLineOut>>)]
    pub logs: Option<Option<Vec<LogLineOut>>>,
    /// The step's config as this attempt saw it, templates rendered (null
    /// for steps without a plugin, or if it could not be rendered). Only in
    /// the full view (`?view=full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub input: Option<Value>,
}

/// A line an attempt logged (through `host.log`, stdout or stderr).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LogLineOut {
    /// `trace`..`error` for `host.log`, `stdout` or `stderr` for the streams.
    pub level: String,
    pub message: String,
    /// RFC 3339.
    pub at: String,
}

#[derive(Serialize, ToSchema)]
pub struct StepOut {
    pub id: String,
    pub kind: String,
    /// pending, ready, held (its run paused by an operator), running,
    /// paused, completed, skipped, failed or cancelled.
    pub status: String,
    pub attempts: i64,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub next_attempt_at: Option<String>,
    /// The step's output (any JSON; null until it completes).
    pub output: Value,
    /// Why the step failed (null unless it did).
    pub error: Value,
    pub attempt_log: Vec<AttemptOut>,
    /// A `for_each` step's items by status, once it has begun. The items
    /// themselves: `GET /v1/runs/{id}/steps/{step_id}/items`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<ItemCounts>,
}

/// How many items of a `for_each` step are in each status.
#[derive(Serialize, ToSchema)]
pub struct ItemCounts {
    pub total: i64,
    pub pending: i64,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
}

impl From<&crate::db::items::Counts> for ItemCounts {
    fn from(c: &crate::db::items::Counts) -> Self {
        Self {
            total: c.total(),
            pending: c.pending,
            running: c.running,
            completed: c.completed,
            failed: c.failed,
        }
    }
}

/// One item of a `for_each` step.
#[derive(Serialize, ToSchema)]
pub struct ItemOut {
    /// The item's place in the list, from 0.
    pub index: i64,
    /// pending, running, completed or failed.
    pub status: String,
    pub attempts: i64,
    /// The item's output (null until it completes).
    pub output: Value,
    /// The last failed attempt's `{kind, message, attempt}` (null if none).
    pub error: Value,
    pub host: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// What the last attempt logged. Only in the full view (`?view=full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<LogLineOut>>)]
    pub logs: Option<Option<Vec<LogLineOut>>>,
}

impl ItemOut {
    pub fn new(i: &crate::db::items::ItemRow, detail: Detail) -> Self {
        Self {
            index: i.index,
            status: i.status.as_str().to_owned(),
            attempts: i.attempts,
            output: parse(&i.output),
            error: parse(&i.error),
            host: i.host.clone(),
            started_at: i.started_at.map(rfc3339),
            ended_at: i.ended_at.map(rfc3339),
            duration_ms: i.started_at.zip(i.ended_at).map(|(a, b)| b - a),
            logs: (detail == Detail::Full)
                .then(|| i.logs.as_deref().and_then(|t| serde_json::from_str(t).ok())),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ItemList {
    pub items: Vec<ItemOut>,
    pub next_cursor: Option<String>,
}

fn attempt_out(a: &AttemptRow, detail: Detail) -> AttemptOut {
    let full = detail == Detail::Full;
    AttemptOut {
        attempt: a.attempt,
        status: a.status.as_str().to_owned(),
        host: a.host.clone(),
        started_at: rfc3339(a.started_at),
        ended_at: a.ended_at.map(rfc3339),
        duration_ms: a.ended_at.map(|e| e - a.started_at),
        error_kind: a.error_kind.clone(),
        error: a.error.clone(),
        logs: full.then(|| a.logs.as_deref().and_then(|t| serde_json::from_str(t).ok())),
        input: full.then(|| parse(&a.input)),
    }
}

fn step_out(s: &StepRow, attempts: &[&AttemptRow], detail: Detail) -> StepOut {
    StepOut {
        id: s.step_id.clone(),
        kind: s.kind.clone(),
        status: s.status.as_str().to_owned(),
        attempts: s.attempts,
        started_at: s.started_at.map(rfc3339),
        ended_at: s.ended_at.map(rfc3339),
        duration_ms: s.started_at.zip(s.ended_at).map(|(a, b)| b - a),
        next_attempt_at: (s.status == StepStatus::Ready)
            .then_some(s.due_at)
            .flatten()
            .map(rfc3339),
        output: parse(&s.output),
        error: parse(&s.error),
        attempt_log: attempts.iter().map(|a| attempt_out(a, detail)).collect(),
        items: None,
    }
}

#[derive(Serialize, ToSchema)]
pub struct RunOut {
    pub id: String,
    pub workflow: String,
    pub version: String,
    pub status: String,
    /// The run's input (any JSON).
    pub input: Value,
    /// The run's result (null until it completes).
    pub result: Value,
    /// Why the run failed (null unless it did).
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
    /// What the run is about, name to value (`{}` without any).
    #[schema(value_type = BTreeMap<String, String>)]
    pub labels: serde_json::Map<String, Value>,
    /// The run this one re-runs (`POST /v1/runs/{id}/rerun`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    /// Set while an operator has paused the run (`POST /v1/runs/{id}/pause`):
    /// no new step starts (their status is `held`); attempts under way
    /// finish. The run's `status` is unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_at: Option<String>,
    /// The workflow's `concurrency.key` as rendered for this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// 1 to 3: within the tenant, due steps of a higher priority are
    /// claimed first.
    pub priority: i64,
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
            status: run.status.as_str().to_owned(),
            input: serde_json::from_str(&run.input).unwrap_or(Value::Null),
            result: parse(&run.result),
            reason: error["reason"].as_str().map(str::to_owned),
            error,
            created_at: rfc3339(run.created_at),
            started_at: run.started_at.map(rfc3339),
            ended_at: run.ended_at.map(rfc3339),
            duration_ms: run.started_at.zip(run.ended_at).map(|(a, b)| b - a),
            paused_on: (run.status != runs::RunStatus::Paused).then(Vec::new),
            queued: run.queued,
            schedule_id: run.schedule_id.clone(),
            labels: run.label_map(),
            rerun_of: run.rerun_of.clone(),
            // A pause ends with the run.
            held_at: run
                .held_at
                .filter(|_| !run.status.is_terminal())
                .map(rfc3339),
            concurrency_key: run.concurrency_key.clone(),
            priority: run.priority,
            steps: None,
        }
    }

    pub fn full(view: &RunView) -> Self {
        let mut out = Self::summary(&view.run);
        out.paused_on = Some(
            view.steps
                .iter()
                .filter(|s| s.status == StepStatus::Paused)
                .map(|s| s.step_id.clone())
                .collect(),
        );
        let mut by_step: HashMap<&str, Vec<&AttemptRow>> = HashMap::new();
        for attempt in &view.attempts {
            by_step.entry(&attempt.step_id).or_default().push(attempt);
        }
        out.steps = Some(
            view.steps
                .iter()
                .map(|s| {
                    let attempts = by_step
                        .get(s.step_id.as_str())
                        .map_or(&[][..], Vec::as_slice);
                    let mut out = step_out(s, attempts, view.detail);
                    out.items = view
                        .items
                        .iter()
                        .find(|(id, _)| *id == s.step_id)
                        .map(|(_, c)| ItemCounts::from(c));
                    out
                })
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
    /// What the event carries; depends on `type`.
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
    /// What the event carries; depends on `type`.
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
    /// The run's input (any JSON, checked against the workflow's
    /// `input_schema`); default null.
    #[serde(default)]
    pub input: Value,
    /// Wait up to this long for the run to finish or pause.
    #[schema(maximum = 60000)]
    pub wait_ms: Option<u64>,
    /// What the run is about, name to value (at most 20; names 1-64
    /// letters, digits, `_ - . /`; values 1-256 characters). They win over the
    /// workflow's own `labels`. Runs are found by them:
    /// `GET /v1/runs?label=customer:c-42`.
    pub labels: Option<BTreeMap<String, String>>,
    /// A preset of the workflow: its input goes under `input` (objects
    /// merge, `input` wins), and the run gets the label `preset: <name>`.
    pub preset: Option<String>,
    /// 1 (the default) to 3: within the tenant, due steps of a higher
    /// priority are claimed first (tenants still share the host fairly).
    #[schema(minimum = 1, maximum = 3)]
    pub priority: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunRun {
    /// This step and every step after it run again; the records of the
    /// others (completed or skipped) are kept.
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    pub from_step: String,
    /// The new run's input; default: the old run's.
    pub input: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryFailed {
    /// Key of the workflow whose failed runs are retried.
    pub workflow: String,
    /// Only runs that failed at or after this time (RFC 3339).
    #[schema(format = DateTime)]
    pub since: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RetryFailedOut {
    /// How many runs were retried.
    pub retried: usize,
    /// Their ids, newest first.
    pub run_ids: Vec<String>,
    /// Runs that matched but were not retried, with why (for example a
    /// run past its `max_duration_ms`).
    pub not_retried: Vec<NotRetried>,
    /// More failed runs match than one call retries (500): call again.
    pub more: bool,
}

#[derive(Serialize, ToSchema)]
pub struct NotRetried {
    pub run_id: String,
    pub reason: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeRun {
    pub step_id: String,
    /// For `collect_inputs`: checked against the step's schema.
    pub data: Option<Value>,
    /// For `request_user_action`: one of the step's actions.
    pub action: Option<String>,
    /// Marks the step completed by hand with this output.
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
    /// 1-64 letters, digits, `_` or `-`, starting with a letter.
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
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
    /// The OCI artifact this version was pulled from; `null` for an
    /// uploaded component and for built-ins.
    pub oci: Option<PluginOciSource>,
}

/// Where a plugin version pulled from an OCI registry came from.
#[derive(Serialize, ToSchema)]
pub struct PluginOciSource {
    /// The reference as given (by tag or by digest), registry included.
    #[schema(example = "registry.example.com/acme/echo:1.0.0")]
    pub reference: String,
    /// The manifest digest the reference was pinned to when the plugin
    /// was stored: `<registry>/<repository>@<digest>` names these bytes.
    #[schema(example = "sha256:3b0c…")]
    pub digest: String,
}

/// `POST /v1/plugins` with `Content-Type: application/json`: the component
/// is pulled from an OCI registry the operator allows (`--oci-allow`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginFromOci {
    /// `host[:port]/namespace/name:tag` or `…/name@sha256:<digest>`; an
    /// `oci://` prefix is accepted. A tag is resolved and pinned to its
    /// manifest digest when the plugin is stored.
    #[schema(example = "registry.example.com/acme/echo:1.0.0")]
    pub oci: String,
    /// `private` (default) or `public`.
    #[schema(value_type = Option<PluginVisibility>, nullable = false)]
    pub visibility: Option<String>,
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

/// The form of `POST /v1/plugins`; other fields are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "documents the multipart form; the handler reads fields"
)]
pub struct PluginUpload {
    /// The component (`.wasm`).
    #[schema(value_type = String, format = Binary)]
    pub component: Vec<u8>,
    /// `private` (default) or `public`.
    #[schema(nullable = false)]
    pub visibility: Option<PluginVisibility>,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the allowed values")]
#[serde(rename_all = "lowercase")]
pub enum PluginVisibility {
    Private,
    Public,
}

/// The multipart form of `POST /v1/files`; other fields are refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "documents the multipart form; the handler reads fields"
)]
pub struct FileUpload {
    /// The content, at most 32 MiB; its file name and content type are kept.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// The multipart form of `POST /v1/runs`: the named fields below, and any
/// other text field becomes a field of the input. Field names are text
/// without control characters: a part header cannot carry them, so the
/// body would not parse (400).
pub struct StartRunForm;

impl utoipa::PartialSchema for StartRunForm {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, Type};
        use utoipa::openapi::{RefOr, schema::Object};
        let mut schema = StartRunFields::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.description = Some(
                "The multipart form of `POST /v1/runs`: any other text field becomes a \
                 field of the input. Field names are text without control characters."
                    .into(),
            );
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(true)));
            let names: Object = ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[^\x00-\x1F\x7F]*$"))
                .build();
            object.property_names = Some(Box::new(Schema::Object(names)));
        }
        schema
    }
}

impl ToSchema for StartRunForm {
    fn name() -> std::borrow::Cow<'static, str> {
        "StartRunForm".into()
    }
}

/// The fields of [`StartRunForm`] that have names of their own.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documents the multipart form; the handler reads fields"
)]
struct StartRunFields {
    pub workflow: String,
    /// Default: the published version.
    #[schema(nullable = false)]
    pub version: Option<String>,
    /// Wait up to this long for the run to finish or pause.
    #[schema(nullable = false, maximum = 60000)]
    pub wait_ms: Option<u64>,
    /// JSON text of an object whose fields start the input.
    #[schema(nullable = false)]
    pub input: Option<String>,
    /// A file stored like `POST /v1/files`; the input gets
    /// `attachment: {id, name, size, sha256, content_type}` and `file_id`.
    #[schema(value_type = Option<String>, format = Binary, nullable = false)]
    pub attachment: Option<Vec<u8>>,
}

/// The `Idempotency-Key` header of a POST that creates.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "documents the header; the handler reads it")]
pub struct IdempotencyKey {
    /// The same key with the same body replays the first response; with
    /// another body it is 409. Visible ASCII, 1 to 255 characters.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = r"^[\x21-\x7E]([\x20-\x7E]*[\x21-\x7E])?$"
    )]
    pub key: Option<String>,
}

/// The caller's W3C Trace Context (`POST /v1/runs`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "documents the header; the handler reads it")]
pub struct TraceParent {
    /// When the host exports traces, the run's span becomes a child of
    /// this one and every attempt joins its trace; an invalid value is
    /// ignored (the run starts a trace of its own), as W3C Trace Context
    /// asks.
    #[param(
        rename = "traceparent",
        example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        pattern = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
    )]
    pub traceparent: Option<String>,
}

/// `PATCH /v1/plugins/{name}/{version}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginPatch {
    /// `private` or `public`.
    #[schema(value_type = PluginVisibility)]
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::integral_floats;

    #[test]
    fn integral_floats_become_integers_only_where_named() {
        let cases = [
            (
                json!({"wait_ms": 936.0}),
                &["wait_ms"][..],
                json!({"wait_ms": 936}),
            ),
            (
                json!({"wait_ms": 936.5}),
                &["wait_ms"],
                json!({"wait_ms": 936.5}),
            ),
            (
                json!({"wait_ms": -1.0}),
                &["wait_ms"],
                json!({"wait_ms": -1}),
            ),
            (
                json!({"wait_ms": 1e30}),
                &["wait_ms"],
                json!({"wait_ms": 1e30}),
            ),
            (
                json!({"wait_ms": "5"}),
                &["wait_ms"],
                json!({"wait_ms": "5"}),
            ),
            (
                json!({"input": {"n": 2.0}}),
                &["wait_ms"],
                json!({"input": {"n": 2.0}}),
            ),
            (
                json!({"steps": [{"timeout_ms": 5.0}, {"id": "b"}, {"retry": {"max_attempts": 3.0}}]}),
                &["steps", "*", "timeout_ms"],
                json!({"steps": [{"timeout_ms": 5}, {"id": "b"}, {"retry": {"max_attempts": 3.0}}]}),
            ),
        ];
        for (mut body, path, expected) in cases {
            integral_floats(&mut body, path);
            assert_eq!(body, expected, "{path:?}");
        }
    }
}
