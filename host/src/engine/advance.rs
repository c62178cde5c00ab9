//! The run state machine, as pure functions over a run's rows: which steps
//! become ready, skipped or paused, and what the run's status becomes.
//! The scheduler loads the rows, calls [`advance`], and writes back what
//! changed together with the events, in one transaction.
//!
//! Rules:
//! - A step is considered once every dependency is `completed` or
//!   `skipped`. If any dependency was skipped, it is skipped too (skips
//!   propagate); otherwise its `if` decides between running and `skipped`.
//! - A step that fails for good fails the run: steps not yet started are
//!   `cancelled`, running ones finish, and the step's `catch` runs.
//! - A run whose steps are all finished is `completed`; a run with a step
//!   waiting for a person or system and nothing else to do is `paused`.

use std::cell::OnceCell;
use std::collections::HashMap;

use serde_json::{Value, json};

use super::definition::{self, Definition};
use super::template::{self, Scope, Steps as _};
use crate::db::runs::{RunRow, RunStatus, StepRow, StepStatus};

/// An event to append to the run's log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: &'static str,
    pub step_id: Option<String>,
    pub data: Value,
}

impl Event {
    pub fn run(kind: &'static str, data: Value) -> Self {
        Self {
            kind,
            step_id: None,
            data,
        }
    }
    pub fn step(kind: &'static str, step_id: &str, data: Value) -> Self {
        Self {
            kind,
            step_id: Some(step_id.to_owned()),
            data,
        }
    }
}

/// Cancels every step that has not started (pending, ready, held or paused),
/// sparing catch steps if asked: they still compensate a failure.
pub fn cancel_unstarted(steps: &mut [StepRow], now: i64, message: &str, spare_catch: bool) {
    for step in steps
        .iter_mut()
        .filter(|s| s.status.is_unstarted() && !(spare_catch && s.kind == "catch"))
    {
        step.status = StepStatus::Cancelled;
        step.ended_at = Some(now);
        step.error = Some(json!({"kind": "cancelled", "message": message}).to_string());
    }
}

/// The catch step of `step_id`.
pub fn catch_id(step_id: &str) -> String {
    format!("{step_id}.catch")
}

/// What templates in a step of this run can see: each step's record,
/// decoded from its row the first time a template refers to it.
pub struct StepRecords<'a> {
    steps: &'a [StepRow],
    records: Vec<OnceCell<Value>>,
}

impl<'a> StepRecords<'a> {
    pub fn new(steps: &'a [StepRow]) -> Self {
        Self {
            steps,
            records: (0..steps.len()).map(|_| OnceCell::new()).collect(),
        }
    }
}

impl template::Steps for StepRecords<'_> {
    fn record(&self, id: &str) -> Option<&Value> {
        let i = self.steps.iter().position(|s| s.step_id == id)?;
        let step = &self.steps[i];
        Some(self.records[i].get_or_init(|| {
            let parse = |text: &Option<String>| {
                text.as_deref()
                    .and_then(|t| serde_json::from_str(t).ok())
                    .unwrap_or(Value::Null)
            };
            json!({"status": step.status, "output": parse(&step.output), "error": parse(&step.error)})
        }))
    }
}

/// Calls `f` with the scope a template in a step of `run` sees: the run's
/// input, its steps' records (decoded as templates refer to them), the
/// run's record and, in a catch step, the failure.
pub fn with_scope<T>(
    run: &RunRow,
    steps: &[StepRow],
    failure: Option<&Value>,
    f: impl FnOnce(&crate::engine::template::Scope<'_>) -> T,
) -> T {
    let input: Value = serde_json::from_str(&run.input).unwrap_or(Value::Null);
    scope_of(run, &input, steps, failure, None, f)
}

/// [`with_scope`] for one item of a `for_each` step: `item` and
/// `item_index` as well.
/// `input` is the run's input, parsed once for all the items.
pub fn with_item_scope<T>(
    run: &RunRow,
    input: &Value,
    steps: &[StepRow],
    item: (&Value, &Value),
    f: impl FnOnce(&crate::engine::template::Scope<'_>) -> T,
) -> T {
    scope_of(run, input, steps, None, Some(item), f)
}

/// The template scope of `run` with its `input` parsed.
fn scope_of<T>(
    run: &RunRow,
    input: &Value,
    steps: &[StepRow],
    failure: Option<&Value>,
    item: Option<(&Value, &Value)>,
    f: impl FnOnce(&crate::engine::template::Scope<'_>) -> T,
) -> T {
    let records = StepRecords::new(steps);
    let run_value = run_record(run);
    f(&crate::engine::template::Scope {
        input,
        steps: &records,
        run: &run_value,
        failure,
        item,
    })
}

pub fn run_record(run: &RunRow) -> Value {
    json!({
        "id": run.id,
        "workflow": run.workflow_key,
        "version": run.workflow_version,
        "created_at": crate::engine::rfc3339(run.created_at),
    })
}

/// Moves the run forward as far as it can go without running anything.
pub fn advance(def: &Definition, run: &mut RunRow, steps: &mut [StepRow], now: i64) -> Vec<Event> {
    let mut events = Vec::new();
    if run.status.is_terminal() {
        return events;
    }
    let input: Value = serde_json::from_str(&run.input).unwrap_or(Value::Null);
    // Each pass decides over the steps as they are, then applies; a pass
    // that decides nothing ends it.
    loop {
        let decisions = decide(def, run, steps, &input, now);
        if decisions.is_empty() {
            break;
        }
        for (i, decision) in decisions {
            let step = &mut steps[i];
            match decision {
                Decision::Skip(reason) => {
                    step.status = StepStatus::Skipped;
                    step.ended_at = Some(now);
                    events.push(Event::step(
                        "step.skipped",
                        &step.step_id,
                        json!({"reason": reason}),
                    ));
                }
                Decision::Fail(error) => {
                    step.status = StepStatus::Failed;
                    step.ended_at = Some(now);
                    step.error = Some(error.to_string());
                    events.push(Event::step("step.failed", &step.step_id, error));
                }
                // Paused by an operator: a human step waits too, with no
                // task yet (decided again once unpaused).
                Decision::Pause(_) if run.held_at.is_some() => {
                    step.status = StepStatus::Held;
                }
                Decision::Pause(kind) => {
                    step.status = StepStatus::Paused;
                    step.started_at = Some(now);
                    events.push(Event::step(
                        "step.paused",
                        &step.step_id,
                        json!({"kind": kind}),
                    ));
                }
                Decision::Ready(due_at) => {
                    step.status = StepStatus::Ready;
                    step.due_at = Some(due_at);
                }
            }
        }
    }
    hold_ready(run, steps);
    settle(def, run, steps, now, &mut events);
    events
}

/// While an operator has paused the run, its ready steps are `held`: out of
/// the claim's reach, with their due times kept for when it is unpaused
/// (human steps that would pause are held by `advance` itself).
pub fn hold_ready(run: &RunRow, steps: &mut [StepRow]) {
    if run.held_at.is_none() {
        return;
    }
    for step in steps.iter_mut().filter(|s| s.status == StepStatus::Ready) {
        step.status = StepStatus::Held;
    }
}

/// What becomes of a pending step whose dependencies are all done.
enum Decision {
    Skip(String),
    Fail(Value),
    Pause(String),
    /// Ready to run at this time.
    Ready(i64),
}

/// The pending steps that can move, and where to.
fn decide(
    def: &Definition,
    run: &RunRow,
    steps: &[StepRow],
    input: &Value,
    now: i64,
) -> Vec<(usize, Decision)> {
    let status_of: HashMap<&str, StepStatus> = steps
        .iter()
        .map(|s| (s.step_id.as_str(), s.status))
        .collect();
    let records = StepRecords::new(steps);
    let mut decisions = Vec::new();
    for (i, step) in steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status == StepStatus::Pending)
    {
        let Some(step_def) = def.step(&step.step_id) else {
            continue;
        };
        let status = |d: &String| {
            status_of
                .get(d.as_str())
                .copied()
                .unwrap_or(StepStatus::Pending)
        };
        if !step_def
            .depends_on
            .iter()
            .all(|d| status(d).lets_dependents_run())
        {
            continue;
        }
        if let Some(skipped) = step_def
            .depends_on
            .iter()
            .find(|d| status(d) == StepStatus::Skipped)
        {
            decisions.push((
                i,
                Decision::Skip(format!("dependency {skipped:?} was skipped")),
            ));
            continue;
        }
        if let Some(condition) = &step_def.condition {
            let run_value = run_record(run);
            let scope = Scope {
                input,
                steps: &records,
                run: &run_value,
                failure: None,
                item: None,
            };
            match template::condition(condition, &scope) {
                Ok(true) => {}
                Ok(false) => {
                    decisions.push((i, Decision::Skip("if condition is false".into())));
                    continue;
                }
                Err(e) => {
                    decisions.push((
                        i,
                        Decision::Fail(
                            json!({"kind": "invalid_input", "message": format!("if: {e}")}),
                        ),
                    ));
                    continue;
                }
            }
        }
        decisions.push((
            i,
            match step_def.uses.as_str() {
                definition::COLLECT_INPUTS | definition::REQUEST_USER_ACTION => {
                    Decision::Pause(step_def.uses.clone())
                }
                definition::WAIT => Decision::Ready(wait_until(
                    step_def.config.as_ref(),
                    input,
                    &records,
                    run,
                    now,
                )),
                _ => Decision::Ready(now),
            },
        ));
    }
    decisions
}

/// When a `wait` step is due.
fn wait_until(
    config: Option<&Value>,
    input: &Value,
    records: &StepRecords<'_>,
    run: &RunRow,
    now: i64,
) -> i64 {
    let run_value = run_record(run);
    let scope = Scope {
        input,
        steps: records,
        run: &run_value,
        failure: None,
        item: None,
    };
    let config = config
        .map(|c| template::render(c, &scope).unwrap_or_else(|_| c.clone()))
        .unwrap_or(Value::Null);
    if let Some(ms) = config["duration_ms"]
        .as_u64()
        .or_else(|| config["duration_ms"].as_str().and_then(|s| s.parse().ok()))
    {
        return now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX));
    }
    config["until"]
        .as_str()
        .and_then(|u| chrono::DateTime::parse_from_rfc3339(u).ok())
        .map_or(now, |t| t.timestamp_millis())
}

/// Decides the run's status from its steps.
fn settle(
    def: &Definition,
    run: &mut RunRow,
    steps: &mut [StepRow],
    now: i64,
    events: &mut Vec<Event>,
) {
    if let Some(failed) = steps
        .iter()
        .find(|s| s.status == StepStatus::Failed && s.kind != "catch")
        .cloned()
    {
        let error: Value = failed
            .error
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or(Value::Null);
        cancel_unstarted(
            steps,
            now,
            &format!("step {:?} failed", failed.step_id),
            true,
        );
        // The run fails once its compensation (catch steps) has run, so that
        // `run.failed` means "failed and compensated".
        if steps.iter().any(|s| {
            s.kind == "catch"
                && matches!(
                    s.status,
                    StepStatus::Ready | StepStatus::Held | StepStatus::Running
                )
        }) {
            return;
        }
        run.status = RunStatus::Failed;
        run.ended_at = Some(now);
        let run_error = json!({
            "step_id": failed.step_id,
            "kind": error["kind"],
            "message": error["message"],
        });
        run.error = Some(run_error.to_string());
        events.push(Event::run("run.failed", run_error));
        return;
    }
    let all_done = steps.iter().all(|s| s.status.is_done());
    if all_done {
        run.status = RunStatus::Completed;
        run.ended_at = Some(now);
        let result = result_of(def, run, steps);
        run.result = Some(result.to_string());
        events.push(Event::run("run.completed", json!({"result": result})));
        return;
    }
    let busy = steps.iter().any(|s| {
        matches!(
            s.status,
            StepStatus::Ready | StepStatus::Held | StepStatus::Running
        )
    });
    let paused = steps.iter().any(|s| s.status == StepStatus::Paused);
    if paused && !busy && run.status != RunStatus::Paused {
        run.status = RunStatus::Paused;
        let on: Vec<&str> = steps
            .iter()
            .filter(|s| s.status == StepStatus::Paused)
            .map(|s| s.step_id.as_str())
            .collect();
        events.push(Event::run("run.paused", json!({"paused_on": on})));
    } else if run.status == RunStatus::Paused && busy {
        run.status = RunStatus::Running;
        events.push(Event::run("run.resumed", json!({})));
    }
}

fn result_of(def: &Definition, run: &RunRow, steps: &[StepRow]) -> Value {
    let records = StepRecords::new(steps);
    if let Some(output) = &def.output {
        let input: Value = serde_json::from_str(&run.input).unwrap_or(Value::Null);
        let run_value = run_record(run);
        let scope = Scope {
            input: &input,
            steps: &records,
            run: &run_value,
            failure: None,
            item: None,
        };
        return template::render(output, &scope)
            .unwrap_or_else(|e| json!({"error": e.to_string()}));
    }
    let mut result = serde_json::Map::new();
    for sink in def.sinks() {
        if let Some(record) = records.record(&sink.id)
            && record["status"] == "completed"
        {
            result.insert(sink.id.clone(), record["output"].clone());
        }
    }
    Value::Object(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::definition::StepDef;

    fn def(steps: Vec<StepDef>) -> Definition {
        Definition {
            key: "k".into(),
            name: "n".into(),
            description: None,
            input_schema: None,
            steps,
            max_duration_ms: None,
            output: None,
            concurrency: None,
            min_interval_ms: None,
            labels: None,
        }
    }

    fn step_def(id: &str, uses: &str, deps: &[&str], condition: Option<Value>) -> StepDef {
        StepDef {
            id: id.into(),
            uses: uses.into(),
            plugin: None,
            config: None,
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            condition,
            retry: None,
            timeout_ms: None,
            catch: None,
            rate_limit: None,
            for_each: None,
            max_parallel: None,
            on_item_failure: None,
        }
    }

    fn row(id: &str, status: &str) -> StepRow {
        StepRow::new(
            "r",
            id.into(),
            0,
            "plugin",
            StepStatus::parse(status).unwrap(),
        )
    }

    fn run(input: Value) -> RunRow {
        RunRow::pending("r".into(), "t", "k", "0.1.0".into(), input.to_string(), 0)
    }

    fn statuses(steps: &[StepRow]) -> Vec<(&str, &str)> {
        steps
            .iter()
            .map(|s| (s.step_id.as_str(), s.status.as_str()))
            .collect()
    }

    #[test]
    fn roots_become_ready_and_dependents_wait() {
        let d = def(vec![
            step_def("a", "p@1", &[], None),
            step_def("b", "p@1", &[], None),
            step_def("c", "p@1", &["a", "b"], None),
        ]);
        let mut r = run(json!({}));
        let mut steps = vec![
            row("a", "pending"),
            row("b", "pending"),
            row("c", "pending"),
        ];
        advance(&d, &mut r, &mut steps, 5);
        assert_eq!(
            statuses(&steps),
            [("a", "ready"), ("b", "ready"), ("c", "pending")]
        );
        steps[0].status = StepStatus::Completed;
        advance(&d, &mut r, &mut steps, 6);
        assert_eq!(steps[2].status, StepStatus::Pending);
        steps[1].status = StepStatus::Completed;
        advance(&d, &mut r, &mut steps, 7);
        assert_eq!(steps[2].status, StepStatus::Ready);
    }

    #[test]
    fn false_conditions_skip_and_skips_propagate() {
        let d = def(vec![
            step_def("a", "p@1", &[], Some(json!("{{input.go}}"))),
            step_def("b", "p@1", &["a"], None),
            step_def("c", "p@1", &[], None),
        ]);
        let mut r = run(json!({"go": false}));
        let mut steps = vec![
            row("a", "pending"),
            row("b", "pending"),
            row("c", "pending"),
        ];
        let events = advance(&d, &mut r, &mut steps, 1);
        assert_eq!(
            statuses(&steps),
            [("a", "skipped"), ("b", "skipped"), ("c", "ready")]
        );
        assert_eq!(
            events.iter().filter(|e| e.kind == "step.skipped").count(),
            2
        );
        steps[2].status = StepStatus::Completed;
        steps[2].output = Some("{\"ok\":true}".into());
        let events = advance(&d, &mut r, &mut steps, 2);
        assert_eq!(r.status, RunStatus::Completed);
        assert_eq!(r.result.as_deref(), Some("{\"c\":{\"ok\":true}}"));
        assert!(events.iter().any(|e| e.kind == "run.completed"));
    }

    #[test]
    fn a_failed_step_fails_the_run_and_cancels_what_has_not_started() {
        let d = def(vec![
            step_def("a", "p@1", &[], None),
            step_def("b", "p@1", &["a"], None),
            step_def("c", "p@1", &[], None),
        ]);
        let mut r = run(json!({}));
        let mut steps = vec![row("a", "failed"), row("b", "pending"), row("c", "running")];
        steps[0].error = Some(json!({"kind": "fatal", "message": "boom"}).to_string());
        advance(&d, &mut r, &mut steps, 1);
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(
            statuses(&steps),
            [("a", "failed"), ("b", "cancelled"), ("c", "running")]
        );
        let error: Value = serde_json::from_str(r.error.as_deref().unwrap()).unwrap();
        assert_eq!(
            error,
            json!({"step_id": "a", "kind": "fatal", "message": "boom"})
        );
    }

    #[test]
    fn a_step_waiting_for_a_person_pauses_the_run() {
        let d = def(vec![
            step_def("approve", "request_user_action", &[], None),
            step_def("after", "p@1", &["approve"], None),
        ]);
        let mut r = run(json!({}));
        let mut steps = vec![row("approve", "pending"), row("after", "pending")];
        let events = advance(&d, &mut r, &mut steps, 1);
        assert_eq!(r.status, RunStatus::Paused);
        assert_eq!(steps[0].status, StepStatus::Paused);
        assert!(events.iter().any(|e| e.kind == "run.paused"));
        steps[0].status = StepStatus::Completed;
        let events = advance(&d, &mut r, &mut steps, 2);
        assert_eq!(steps[1].status, StepStatus::Ready);
        assert_eq!(r.status, RunStatus::Running);
        assert!(events.iter().any(|e| e.kind == "run.resumed"));
    }
}
