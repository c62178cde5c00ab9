//! Workflow definitions: their shape, and validation into a form the
//! scheduler can trust (a DAG, resolved plugins, valid configs and
//! templates).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::plugins::Plugins;
use super::template;

/// Step kinds that need no plugin.
pub const WAIT: &str = "wait";
pub const COLLECT_INPUTS: &str = "collect_inputs";
pub const REQUEST_USER_ACTION: &str = "request_user_action";

/// Most steps in one workflow.
pub const MAX_STEPS: usize = 200;
/// Most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 20;

/// A workflow definition as stored: what the API accepted, with every
/// `uses` resolved to an exact plugin version in `plugin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub key: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema the run input must meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    pub steps: Vec<StepDef>,
    /// A run that takes longer fails with `max_duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_ms: Option<u64>,
    /// The run's result, as a template over `input` and `steps`; default:
    /// the outputs of the steps nothing depends on, by step id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// How many runs of this workflow may be unfinished at once, and what
    /// happens to a start beyond that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// A manual start sooner than this after the previous run's start is
    /// refused (409). Schedules are not affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval_ms: Option<u64>,
    /// Labels every run gets: name to a template over `input`, rendered at
    /// start (see [`super::labels`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Overlap control for a workflow's runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Most unfinished (pending, running or paused) runs at once.
    pub limit: u32,
    #[serde(default)]
    pub on_limit: OnLimit,
    /// A template over `input` (`{{input.customer_id}}`): the limit then
    /// holds per value, among the runs with the same key. A run whose key
    /// renders to null is not limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What a start beyond the concurrency limit does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    /// The run is created and waits, in start order, until one ends.
    #[default]
    Queue,
    /// The start is refused with 409 naming a running run.
    Reject,
    /// The oldest unfinished runs (queued or running) are cancelled to make
    /// room: the newest start wins (debounce).
    Replace,
}

/// Most runs a concurrency limit may allow.
pub const MAX_CONCURRENCY: u32 = 10_000;

/// The `x-weft-role` a plugin declares at the top of its output schema:
/// `summary` plugins compute a report that is useless unless a `delivery`
/// plugin (mail, notification, HTTP) sends it somewhere.
pub const ROLE_KEY: &str = "x-weft-role";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    pub id: String,
    /// `name@major` (or `name@1.2`, `name@1.2.3`, `name`), or a built-in
    /// kind: `wait`, `collect_inputs`, `request_user_action`.
    pub uses: String,
    /// Set on save: the exact plugin version `uses` resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch: Option<CatchDef>,
    /// At most `per_minute` attempts a minute among the tenant's steps with
    /// the same key; over it the step waits for the next minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// A template that renders to a list: the step runs once per item
    /// (`{{item}}`, `{{item_index}}` in its config), each item its own
    /// attempts; its output is the list of the items' outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// With `for_each`: at most this many items run at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// With `for_each`: what an item that fails for good does to the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_item_failure: Option<OnItemFailure>,
}

/// What an item of a `for_each` step that fails for good does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnItemFailure {
    /// No further item starts; the step fails once those under way end.
    #[default]
    Fail,
    /// The item's place in the output holds `{"error": …}`; the step
    /// completes.
    Continue,
}

/// Most items a `for_each` list may have.
pub const MAX_ITEMS: usize = 10_000;
/// Most items of one step that may run at a time.
pub const MAX_ITEMS_PARALLEL: u32 = 100;
/// Items of one step that run at a time when `max_parallel` is not given.
pub const DEFAULT_ITEMS_PARALLEL: u32 = 10;

/// A step's rate limit: a key (a template, rendered like `config`) shared
/// by every step of the tenant that names it, and its allowance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub key: String,
    pub per_minute: u32,
}

/// Most attempts a minute a rate limit may allow.
pub const MAX_PER_MINUTE: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff: Backoff,
}

/// Exponential backoff with ±20% jitter: `initial_ms * multiplier^(n-1)`,
/// at most `max_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub initial_ms: u64,
    pub multiplier: f64,
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_ms: 1_000,
            multiplier: 2.0,
            max_ms: 5 * 60_000,
        }
    }
}

impl Backoff {
    /// Delay before attempt `next` (2 for the first retry), jittered.
    pub fn delay_ms(&self, next: u32) -> u64 {
        let exponent = next.saturating_sub(2).min(64) as i32;
        let base =
            (self.initial_ms as f64 * self.multiplier.powi(exponent)).min(self.max_ms as f64);
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        (base * jitter).round().max(0.0) as u64
    }
}

/// A compensating step run when its step fails for good. Its config may use
/// `{{failure.error}}` and `{{failure.step}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatchDef {
    pub uses: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

/// One problem in a definition, naming the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub message: String,
}

impl Problem {
    pub(crate) fn step(step: &str, message: String) -> Self {
        Self {
            step: Some(step.to_owned()),
            message,
        }
    }
    fn workflow(message: String) -> Self {
        Self {
            step: None,
            message,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.step {
            Some(step) => write!(f, "step {step:?}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub fn is_builtin_kind(uses: &str) -> bool {
    matches!(uses, WAIT | COLLECT_INPUTS | REQUEST_USER_ACTION)
}

impl Definition {
    pub fn step(&self, id: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Steps no other step depends on.
    pub fn sinks(&self) -> Vec<&StepDef> {
        let needed: BTreeSet<&str> = self
            .steps
            .iter()
            .flat_map(|s| s.depends_on.iter().map(String::as_str))
            .collect();
        self.steps
            .iter()
            .filter(|s| !needed.contains(s.id.as_str()))
            .collect()
    }

    /// Checks the definition and pins every `uses` to an exact plugin
    /// version. Returns every problem found, each naming its step.
    pub fn validate(&mut self, plugins: &Plugins, tenant: &str) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        if !valid_id(&self.key) {
            problems.push(Problem::workflow(format!(
                "key {:?} must be 1-64 letters, digits, _ or -, starting with a letter",
                self.key
            )));
        }
        if self.name.trim().is_empty() {
            problems.push(Problem::workflow("name must not be empty".into()));
        }
        if self.steps.is_empty() {
            problems.push(Problem::workflow(
                "a workflow needs at least one step".into(),
            ));
        }
        if self.steps.len() > MAX_STEPS {
            problems.push(Problem::workflow(format!(
                "at most {MAX_STEPS} steps, found {}",
                self.steps.len()
            )));
        }
        if let Some(c) = &self.concurrency
            && (c.limit == 0 || c.limit > MAX_CONCURRENCY)
        {
            problems.push(Problem::workflow(format!(
                "concurrency.limit must be 1 to {MAX_CONCURRENCY}"
            )));
        }
        if let Some(key) = self.concurrency.as_ref().and_then(|c| c.key.as_ref()) {
            let one = BTreeMap::from([("key".to_owned(), key.clone())]);
            problems.extend(
                super::labels::check_templates(&one)
                    .into_iter()
                    .map(|p| Problem::workflow(p.replace("labels", "concurrency"))),
            );
        }
        if self.min_interval_ms == Some(0) {
            problems.push(Problem::workflow(
                "min_interval_ms must be positive (leave it out for no minimum)".into(),
            ));
        }
        if let Some(labels) = &self.labels {
            problems.extend(
                super::labels::check_templates(labels)
                    .into_iter()
                    .map(Problem::workflow),
            );
        }
        if let Some(schema) = &self.input_schema
            && let Err(e) = jsonschema::validator_for(schema)
        {
            problems.push(Problem::workflow(format!(
                "input_schema is not a valid JSON Schema: {e}"
            )));
        }
        let mut seen = BTreeSet::new();
        for step in &self.steps {
            if !valid_id(&step.id) {
                problems.push(Problem::step(
                    &step.id,
                    "ids must be 1-64 letters, digits, _ or -, starting with a letter".into(),
                ));
            }
            if !seen.insert(step.id.clone()) {
                problems.push(Problem::step(&step.id, "duplicate step id".into()));
            }
        }
        for step in &self.steps {
            for dep in &step.depends_on {
                if !seen.contains(dep) {
                    problems.push(Problem::step(
                        &step.id,
                        format!("depends_on names unknown step {dep:?}"),
                    ));
                } else if dep == &step.id {
                    problems.push(Problem::step(&step.id, "depends on itself".into()));
                }
            }
        }
        if problems.is_empty()
            && let Some(cycle) = find_cycle(&self.steps)
        {
            problems.push(Problem::step(
                &cycle[0],
                format!("cycle in depends_on: {}", cycle.join(" -> ")),
            ));
        }
        let ancestors = if problems.is_empty() {
            ancestors(&self.steps)
        } else {
            BTreeMap::new()
        };
        for step in &mut self.steps {
            check_step(
                step,
                plugins,
                tenant,
                ancestors.get(&step.id),
                &mut problems,
            );
        }
        if problems.is_empty() {
            self.check_summaries_are_delivered(plugins, tenant, &ancestors, &mut problems);
        }
        if let Some(output) = &self.output {
            match template::references(output) {
                Ok(refs) => {
                    for r in refs {
                        if let template::Root::Step(id) = &r.root
                            && !seen.contains(id)
                        {
                            problems.push(Problem::workflow(format!(
                                "output: {} names unknown step {id:?}",
                                r.text
                            )));
                        }
                    }
                }
                Err(e) => problems.push(Problem::workflow(format!("output: {e}"))),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

impl Definition {
    /// Every step of a `summary` plugin must feed (be an ancestor of) a
    /// step of a `delivery` plugin: a report nobody receives is a mistake.
    fn check_summaries_are_delivered(
        &self,
        plugins: &Plugins,
        tenant: &str,
        ancestors: &BTreeMap<String, BTreeSet<String>>,
        problems: &mut Vec<Problem>,
    ) {
        let role = |pinned: &Option<String>| -> Option<String> {
            let plugin = plugins.exact(tenant, pinned.as_deref()?)?;
            plugin.info.output_schema[ROLE_KEY]
                .as_str()
                .map(str::to_owned)
        };
        let deliveries: Vec<&StepDef> = self
            .steps
            .iter()
            .filter(|s| role(&s.plugin).as_deref() == Some("delivery"))
            .collect();
        for step in &self.steps {
            if role(&step.plugin).as_deref() != Some("summary") {
                continue;
            }
            let delivered = deliveries
                .iter()
                .any(|d| ancestors.get(&d.id).is_some_and(|up| up.contains(&step.id)));
            if !delivered {
                problems.push(Problem::step(
                    &step.id,
                    format!(
                        "{} produces a summary that no delivery step receives: add a step such as send_email, create_notification or http_request that depends on {:?} and uses its output",
                        step.uses, step.id
                    ),
                ));
            }
        }
    }
}

fn check_step(
    step: &mut StepDef,
    plugins: &Plugins,
    tenant: &str,
    upstream: Option<&BTreeSet<String>>,
    problems: &mut Vec<Problem>,
) {
    let id = step.id.clone();
    if let Some(retry) = &step.retry {
        if retry.max_attempts == 0 || retry.max_attempts > MAX_ATTEMPTS {
            problems.push(Problem::step(
                &id,
                format!("retry.max_attempts must be 1 to {MAX_ATTEMPTS}"),
            ));
        }
        if retry.backoff.multiplier < 1.0 || !retry.backoff.multiplier.is_finite() {
            problems.push(Problem::step(
                &id,
                "retry.backoff.multiplier must be at least 1".into(),
            ));
        }
    }
    if step.timeout_ms == Some(0) {
        problems.push(Problem::step(&id, "timeout_ms must be positive".into()));
    }
    let mapped = step.for_each.is_some();
    let check_refs = |what: &str,
                      refs: Result<Vec<template::Reference>, template::TemplateError>,
                      problems: &mut Vec<Problem>,
                      allow_failure: bool,
                      allow_item: bool| {
        match refs {
            Err(e) => problems.push(Problem::step(&id, format!("{what}: {e}"))),
            Ok(refs) => {
                for r in refs {
                    match &r.root {
                        template::Root::Step(other)
                            if upstream.is_some_and(|up| !up.contains(other)) =>
                        {
                            problems.push(Problem::step(
                                &id,
                                format!("{what}: {} refers to step {other:?}, which is not among this step's dependencies", r.text),
                            ));
                        }
                        template::Root::Failure if !allow_failure => {
                            problems.push(Problem::step(
                                &id,
                                format!("{what}: {} is only available in catch", r.text),
                            ));
                        }
                        template::Root::Item | template::Root::ItemIndex if !allow_item => {
                            let hint = if mapped {
                                "in config and rate_limit.key"
                            } else {
                                "in a step with for_each"
                            };
                            problems.push(Problem::step(
                                &id,
                                format!("{what}: {} is only available {hint}", r.text),
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
    };
    if let Some(config) = &step.config {
        check_refs(
            "config",
            template::references(config),
            problems,
            false,
            mapped,
        );
    }
    if let Some(limit) = &step.rate_limit {
        if limit.per_minute == 0 || limit.per_minute > MAX_PER_MINUTE {
            problems.push(Problem::step(
                &id,
                format!("rate_limit.per_minute must be 1 to {MAX_PER_MINUTE}"),
            ));
        }
        if limit.key.trim().is_empty() {
            problems.push(Problem::step(
                &id,
                "rate_limit.key must not be empty".into(),
            ));
        }
        check_refs(
            "rate_limit.key",
            template::references(&Value::String(limit.key.clone())),
            problems,
            false,
            mapped,
        );
    }
    if let Some(condition) = &step.condition {
        check_refs(
            "if",
            template::condition_references(condition),
            problems,
            false,
            false,
        );
    }
    check_map(step, problems);
    if let Some(list) = &step.for_each {
        check_refs(
            "for_each",
            template::references(&Value::String(list.clone())),
            problems,
            false,
            false,
        );
    }
    match step.uses.as_str() {
        WAIT => check_wait(&id, step.config.as_ref(), problems),
        COLLECT_INPUTS | REQUEST_USER_ACTION => {
            super::tasks::check_config(&id, &step.uses, step.config.as_ref(), problems);
        }
        _ => {}
    }
    match step.uses.as_str() {
        WAIT => {}
        COLLECT_INPUTS => {
            let schema = step.config.as_ref().and_then(|c| c.get("schema"));
            match schema {
                None => {}
                Some(schema) => {
                    if let Err(e) = jsonschema::validator_for(schema) {
                        problems.push(Problem::step(
                            &id,
                            format!("config.schema is not a valid JSON Schema: {e}"),
                        ));
                    }
                }
            }
        }
        REQUEST_USER_ACTION => {
            let actions = step
                .config
                .as_ref()
                .and_then(|c| c.get("actions"))
                .and_then(Value::as_array);
            match actions {
                Some(list) if !list.is_empty() && list.iter().all(Value::is_string) => {}
                _ => problems.push(Problem::step(
                    &id,
                    "config.actions must be a non-empty list of action names".into(),
                )),
            }
        }
        uses => match plugins.resolve(tenant, uses) {
            Err(e) => problems.push(Problem::step(&id, e)),
            Ok(entry) => {
                step.plugin = Some(entry.pinned());
                if let Some(config) = &step.config
                    && !has_templates(config)
                {
                    check_schema(
                        &id,
                        "config",
                        &entry.plugin.info.config_schema,
                        config,
                        problems,
                    );
                }
            }
        },
    }
    if let Some(catch) = &mut step.catch {
        if let Some(config) = &catch.config {
            check_refs(
                "catch.config",
                template::references(config),
                problems,
                true,
                false,
            );
        }
        match plugins.resolve(tenant, &catch.uses) {
            Err(e) => problems.push(Problem::step(&id, format!("catch: {e}"))),
            Ok(entry) => catch.plugin = Some(entry.pinned()),
        }
    }
}

/// A `for_each` step's own settings: a template on a plugin step, a
/// `max_parallel` in range, and neither setting without `for_each`.
fn check_map(step: &StepDef, problems: &mut Vec<Problem>) {
    let id = &step.id;
    let Some(list) = &step.for_each else {
        if step.max_parallel.is_some() || step.on_item_failure.is_some() {
            problems.push(Problem::step(
                id,
                "max_parallel and on_item_failure apply only to a step with for_each".into(),
            ));
        }
        return;
    };
    if matches!(
        step.uses.as_str(),
        WAIT | COLLECT_INPUTS | REQUEST_USER_ACTION
    ) {
        problems.push(Problem::step(
            id,
            format!(
                "for_each runs a plugin once per item; {} steps cannot have it",
                step.uses
            ),
        ));
    }
    if !list.contains("{{") {
        problems.push(Problem::step(
            id,
            "for_each must be a template that renders to a list, such as \"{{steps.find.output.items}}\"".into(),
        ));
    }
    if let Some(n) = step.max_parallel
        && !(1..=MAX_ITEMS_PARALLEL).contains(&n)
    {
        problems.push(Problem::step(
            id,
            format!("max_parallel must be 1 to {MAX_ITEMS_PARALLEL}"),
        ));
    }
}

/// Whether any string in `value` holds a template (then the config can only
/// be checked against the schema once rendered, at run time).
fn has_templates(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("{{"),
        Value::Array(items) => items.iter().any(has_templates),
        Value::Object(map) => map.values().any(has_templates),
        _ => false,
    }
}

pub fn check_schema(
    id: &str,
    what: &str,
    schema: &Value,
    value: &Value,
    problems: &mut Vec<Problem>,
) {
    match jsonschema::validator_for(schema) {
        Err(e) => problems.push(Problem::step(
            id,
            format!("the plugin's {what} schema is invalid: {e}"),
        )),
        Ok(validator) => report_errors(&validator, id, what, value, problems),
    }
}

/// Adds a problem for every way `value` fails `validator`, with its path.
pub fn report_errors(
    validator: &jsonschema::Validator,
    id: &str,
    what: &str,
    value: &Value,
    problems: &mut Vec<Problem>,
) {
    for error in validator.iter_errors(value) {
        let path = error.instance_path.to_string();
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(" at {path}")
        };
        problems.push(Problem::step(id, format!("{what}{at}: {error}")));
    }
}

fn check_wait(id: &str, config: Option<&Value>, problems: &mut Vec<Problem>) {
    let duration = config.and_then(|c| c.get("duration_ms"));
    let until = config.and_then(|c| c.get("until"));
    match (duration, until) {
        (Some(d), None) if d.as_u64().is_some() || d.as_str().is_some_and(|s| s.contains("{{")) => {
        }
        (None, Some(Value::String(u)))
            if u.contains("{{") || chrono::DateTime::parse_from_rfc3339(u).is_ok() => {}
        _ => problems.push(Problem::step(
            id,
            "wait needs config.duration_ms (milliseconds) or config.until (RFC 3339)".into(),
        )),
    }
}

/// A cycle as a list of step ids, if there is one (steps must have known deps).
fn find_cycle(steps: &[StepDef]) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, &[String]> = steps
        .iter()
        .map(|s| (s.id.as_str(), s.depends_on.as_slice()))
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        id: &'a str,
        deps: &BTreeMap<&'a str, &'a [String]>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(id) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|s| *s == id).unwrap_or(0);
                let mut cycle: Vec<String> =
                    stack[start..].iter().map(|s| (*s).to_owned()).collect();
                cycle.push(id.to_owned());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(id, 1);
        stack.push(id);
        for dep in deps.get(id).copied().unwrap_or_default() {
            if let Some(cycle) = visit(dep, deps, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(id, 2);
        None
    }
    for step in steps {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(&step.id, &deps, &mut state, &mut stack) {
            return Some(cycle);
        }
    }
    None
}

/// For each step, every step it transitively depends on.
fn ancestors(steps: &[StepDef]) -> BTreeMap<String, BTreeSet<String>> {
    let deps: BTreeMap<&str, &[String]> = steps
        .iter()
        .map(|s| (s.id.as_str(), s.depends_on.as_slice()))
        .collect();
    let mut out = BTreeMap::new();
    for step in steps {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = step.depends_on.iter().map(String::as_str).collect();
        while let Some(id) = todo.pop() {
            if seen.insert(id.to_owned()) {
                todo.extend(
                    deps.get(id)
                        .copied()
                        .unwrap_or_default()
                        .iter()
                        .map(String::as_str),
                );
            }
        }
        out.insert(step.id.clone(), seen);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, deps: &[&str]) -> StepDef {
        StepDef {
            id: id.into(),
            uses: WAIT.into(),
            plugin: None,
            config: Some(serde_json::json!({"duration_ms": 1})),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            condition: None,
            retry: None,
            timeout_ms: None,
            catch: None,
            rate_limit: None,
            for_each: None,
            max_parallel: None,
            on_item_failure: None,
        }
    }

    #[test]
    fn find_cycle_names_the_loop() {
        assert_eq!(find_cycle(&[step("a", &[]), step("b", &["a"])]), None);
        let cycle = find_cycle(&[step("a", &["c"]), step("b", &["a"]), step("c", &["b"])]).unwrap();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
    }

    #[test]
    fn ancestors_are_transitive() {
        let map = ancestors(&[step("a", &[]), step("b", &["a"]), step("c", &["b"])]);
        assert_eq!(
            map["c"],
            ["a".to_owned(), "b".to_owned()].into_iter().collect()
        );
        assert!(map["a"].is_empty());
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff {
            initial_ms: 100,
            multiplier: 2.0,
            max_ms: 1000,
        };
        for (next, base) in [(2, 100.0), (3, 200.0), (4, 400.0), (10, 1000.0)] {
            let d = b.delay_ms(next) as f64;
            assert!(
                d >= base * 0.8 - 1.0 && d <= base * 1.2 + 1.0,
                "attempt {next}: {d}"
            );
        }
    }
}
