//! Steps with `for_each`: the step's plugin runs once per item of a list.
//!
//! The host that claims a `for_each` step runs its items itself, at most
//! `max_parallel` at a time; beyond the first, each item running takes one
//! of the host's `--max-parallel` slots, so a map never runs more guests
//! than the host allows. Each item has its own attempts, retries (the
//! step's `retry`) and idempotency key (`<run>/<step>/<index>`).
//!
//! Items are rows of `items`, created when the step first runs. Items that
//! start and end are written in batches, with the step's progress event,
//! one transaction at a time while the next items run. If the host dies,
//! the step's lease expires and the next attempt of the step runs only the
//! items that had not ended (one that was running runs again, with the
//! same key). The host holds the list and at most `max_parallel` attempts
//! in memory; results go to the database as they come. When every item is
//! done, the step's output is the list of their outputs, in order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::advance::{self, Event};
use super::definition::{DEFAULT_ITEMS_PARALLEL, MAX_ITEMS, OnItemFailure, StepDef};
use super::scheduler::{Outcome, Snapshot, event_rows, rate_key};
use super::{Engine, EngineError, services, template};
use crate::db::items::{ItemRow, ItemStatus};
use crate::db::{self, DbError};
use crate::runtime::{AttemptError, Invocation, Limits, Plugin, StepContext};

/// Most `step.item_failed` events one attempt of a step appends; the
/// `step.items` counts and the items list have the rest.
const FAILURE_EVENTS: usize = 100;
/// Least time between two `step.items` progress events of a step.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often a map looks whether an operator paused its run.
const HOLD_CHECK: Duration = Duration::from_secs(1);
/// Most bytes the items' outputs may come to together: the step's output.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;

/// What a map's items share.
struct Job {
    snapshot: Arc<Snapshot>,
    /// The run's input, parsed once.
    input: Value,
    list: Vec<Value>,
    step_id: String,
    def: StepDef,
    plugin: Arc<Plugin>,
    /// The plugin as pinned.
    uses: String,
}

/// How one item's attempt ended.
enum ItemOutcome {
    Completed(Value),
    Failed(AttemptError),
    /// Stopped from outside: the item runs again in the step's next attempt.
    Interrupted,
}

struct ItemDone {
    index: usize,
    attempt: i64,
    started_at: i64,
    outcome: ItemOutcome,
    logs: Option<String>,
}

/// A map's running tally.
#[derive(Default)]
struct Tally {
    total: usize,
    completed: usize,
    failed: usize,
}

impl Engine {
    /// Runs the items of `step` (a step with `for_each`) that have not
    /// ended, and returns the step's outcome: its output once every item
    /// ended, a failure, or [`Outcome::Held`] if its run was paused.
    #[allow(clippy::too_many_lines, reason = "one loop: launch, write, wait")]
    pub(super) async fn run_map(
        self: &Arc<Self>,
        snapshot: Arc<Snapshot>,
        step: &crate::db::runs::StepRow,
        def: &StepDef,
        plugin: Arc<Plugin>,
        uses: String,
        token: CancellationToken,
    ) -> Result<Outcome, EngineError> {
        let (run, steps) = (&snapshot.run, &snapshot.steps);
        let for_each = def.for_each.clone().unwrap_or_default();
        let rendered = advance::with_scope(run, steps, None, |scope| {
            template::render(&Value::String(for_each), scope)
        });
        let invalid = |m: String| Ok(Outcome::Failed(AttemptError::InvalidInput(m)));
        let list = match rendered {
            Ok(Value::Array(list)) if list.len() <= MAX_ITEMS => list,
            Ok(Value::Array(list)) => {
                return invalid(format!(
                    "for_each: the list has {} items; a step maps over at most {MAX_ITEMS}",
                    list.len()
                ));
            }
            Ok(other) => {
                return invalid(format!(
                    "for_each: expected a list, got {}",
                    type_name(&other)
                ));
            }
            Err(e) => return invalid(format!("for_each: {e}")),
        };
        let total = list.len();
        {
            let mut conn = self.db.writer().await?;
            db::items::create(&mut conn, &run.id, &step.step_id, total as i64).await?;
        }
        let (todo, before) = {
            let mut conn = self.db.reader().await?;
            let todo = db::items::unfinished(&mut conn, &run.id, &step.step_id).await?;
            let counts = db::items::counts(&mut conn, &run.id).await?;
            let before = counts
                .into_iter()
                .find(|(id, _)| *id == step.step_id)
                .map(|(_, c)| c)
                .unwrap_or_default();
            (todo, before)
        };
        if before.total() > total as i64 {
            // Only a change upstream could do this (a step's output edited
            // by an override): the rows no longer match the list.
            return invalid(format!(
                "for_each: the list has {total} items, but this step already has {} items",
                before.total()
            ));
        }
        let job = Arc::new(Job {
            snapshot: snapshot.clone(),
            input: serde_json::from_str(&run.input).unwrap_or(Value::Null),
            list,
            step_id: step.step_id.clone(),
            def: def.clone(),
            plugin,
            uses,
        });
        let mode = def.on_item_failure.unwrap_or_default();
        let parallel = def.max_parallel.unwrap_or(DEFAULT_ITEMS_PARALLEL).max(1) as usize;
        let max_attempts = def.retry.as_ref().map_or(1, |r| i64::from(r.max_attempts));
        let backoff = def
            .retry
            .as_ref()
            .map(|r| r.backoff.clone())
            .unwrap_or_default();

        let mut tally = Tally {
            total,
            completed: usize::try_from(before.completed).unwrap_or(0),
            failed: usize::try_from(before.failed).unwrap_or(0),
        };
        let mut queue: VecDeque<(usize, i64)> = todo
            .into_iter()
            .filter_map(|(i, a)| Some((usize::try_from(i).ok()?, a)))
            .collect();
        // Items waiting for a retry: (due, index, attempts so far).
        let mut retries: BinaryHeap<Reverse<(i64, usize, i64)>> = BinaryHeap::new();
        let mut running: JoinSet<ItemDone> = JoinSet::new();
        let mut launched: HashMap<tokio::task::Id, (usize, i64, i64)> = HashMap::new();
        // Host slots taken, beyond the step's own.
        let mut slots = 0usize;
        let mut rows: Vec<ItemRow> = Vec::new();
        let mut events: Vec<Event> = Vec::new();
        let mut first_failure: Option<String> = None;
        let mut failure_events = 0;
        let mut stopping = mode == OnItemFailure::Fail && tally.failed > 0;
        let mut held = false;
        let mut checked_hold = Instant::now();
        let mut reported: Option<Instant> = None;
        let mut interrupted = false;
        // Set when the step's lease is lost: nothing more is written.
        let mut lost = false;
        let attempt = (step.step_id.as_str(), step.attempts);

        loop {
            let now = db::now_ms();
            if checked_hold.elapsed() >= HOLD_CHECK {
                checked_hold = Instant::now();
                if let Ok(mut conn) = self.db.reader().await
                    && let Ok(Some(current)) = db::runs::get_run_unscoped(&mut conn, &run.id).await
                {
                    held = current.held_at.is_some();
                }
            }
            // Start what there is room for: retries that are due first.
            while !stopping && !held && !interrupted && running.len() < parallel {
                let due = retries.peek().is_some_and(|Reverse((at, _, _))| *at <= now);
                let next = if due {
                    retries.pop().map(|Reverse((_, i, a))| (i, a))
                } else {
                    queue.pop_front()
                };
                let Some((index, attempts)) = next else {
                    break;
                };
                if !running.is_empty() {
                    if self.take_slots(1, self.config.max_parallel) == 0 {
                        queue.push_front((index, attempts));
                        break;
                    }
                    slots += 1;
                }
                let attempt = attempts + 1;
                rows.push(self.item_row(
                    run,
                    &job.step_id,
                    index,
                    ItemStatus::Running,
                    attempt,
                    now,
                ));
                let handle = running.spawn(run_item(
                    self.clone(),
                    job.clone(),
                    index,
                    attempt,
                    token.child_token(),
                ));
                launched.insert(handle.id(), (index, attempt, now));
            }
            let more = !queue.is_empty() || !retries.is_empty();
            if running.is_empty() && (stopping || held || interrupted || !more) {
                break;
            }
            if !rows.is_empty() || !events.is_empty() {
                if reported.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                    reported = Some(Instant::now());
                    events.push(progress(&job.step_id, &tally, running.len()));
                }
                match self.write_items(run, attempt, &rows, &events).await {
                    Ok(()) => {
                        rows.clear();
                        events.clear();
                    }
                    Err(EngineError::Conflict(why)) => {
                        // Another host runs the step now: stop here.
                        tracing::warn!(%why, "a map stops");
                        token.cancel();
                        lost = true;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not write a map's items; trying again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            // A retry's time matters only if it could start then.
            let can_start = !stopping && !held && !interrupted && running.len() < parallel;
            let next_retry = retries
                .peek()
                .map(|Reverse((at, _, _))| *at)
                .filter(|_| can_start);
            let wait = next_retry.map_or(HOLD_CHECK, |at| {
                Duration::from_millis(u64::try_from(at - db::now_ms()).unwrap_or(0)).min(HOLD_CHECK)
            });
            let mut finished = Vec::new();
            tokio::select! {
                Some(done) = running.join_next_with_id() => {
                    finished.push(done);
                    while let Some(done) = running.try_join_next_with_id() {
                        finished.push(done);
                    }
                }
                () = tokio::time::sleep(wait) => {}
                () = token.cancelled(), if !interrupted => {
                    interrupted = true;
                }
            }
            let now = db::now_ms();
            for done in finished {
                let done = match done {
                    Ok((id, done)) => {
                        launched.remove(&id);
                        done
                    }
                    Err(e) => {
                        // The item's task failed (not the guest: the runtime
                        // reports its failures): the item failed for good.
                        tracing::error!(error = %e, "an item's task failed");
                        let Some((index, attempt, started_at)) = launched.remove(&e.id()) else {
                            continue;
                        };
                        ItemDone {
                            index,
                            attempt,
                            started_at,
                            outcome: ItemOutcome::Failed(AttemptError::Fatal(format!(
                                "the host failed running the item: {e}"
                            ))),
                            logs: None,
                        }
                    }
                };
                let index = done.index;
                let mut row = self.item_row(
                    run,
                    &job.step_id,
                    index,
                    ItemStatus::Running,
                    done.attempt,
                    now,
                );
                row.started_at = Some(done.started_at);
                row.logs = done.logs;
                match done.outcome {
                    ItemOutcome::Interrupted => {
                        interrupted = true;
                        continue;
                    }
                    ItemOutcome::Completed(output) => {
                        row.status = ItemStatus::Completed;
                        row.output = Some(output.to_string());
                        row.ended_at = Some(now);
                        tally.completed += 1;
                    }
                    ItemOutcome::Failed(error) => {
                        let error_json = json!({"kind": error.kind(), "message": error.to_string(), "attempt": done.attempt});
                        row.error = Some(error_json.to_string());
                        if error.is_retryable() && (done.attempt < max_attempts || stopping) {
                            // Again after the backoff; or, once the step
                            // stops, left for a retry of the step.
                            row.status = ItemStatus::Pending;
                            if !stopping {
                                let delay = backoff
                                    .delay_ms(u32::try_from(done.attempt + 1).unwrap_or(u32::MAX));
                                retries.push(Reverse((now + delay as i64, index, done.attempt)));
                            }
                        } else {
                            row.status = ItemStatus::Failed;
                            row.ended_at = Some(now);
                            tally.failed += 1;
                            first_failure.get_or_insert_with(|| format!("item {index}: {error}"));
                            if failure_events < FAILURE_EVENTS {
                                failure_events += 1;
                                events.push(Event::step(
                                    "step.item_failed",
                                    &job.step_id,
                                    json!({"index": index, "error": error_json}),
                                ));
                            }
                            if mode == OnItemFailure::Fail {
                                stopping = true;
                            }
                        }
                    }
                }
                rows.push(row);
            }
            // Give back the host slots the items that ended held.
            while slots > running.len().saturating_sub(1) {
                slots -= 1;
                self.release_slots(1);
            }
        }
        while slots > 0 {
            slots -= 1;
            self.release_slots(1);
        }
        if lost {
            return Ok(Outcome::Interrupted("the step's lease was lost".into()));
        }
        events.push(progress(&job.step_id, &tally, 0));
        self.write_items(run, attempt, &rows, &events).await?;

        if interrupted {
            return Ok(Outcome::Interrupted("interrupted".into()));
        }
        if tally.failed > 0 && mode == OnItemFailure::Fail {
            let first = first_failure.map_or_else(String::new, |f| format!("; the first: {f}"));
            return Ok(Outcome::Failed(AttemptError::Fatal(format!(
                "{} of {total} items failed{first}",
                tally.failed
            ))));
        }
        if held && tally.completed + tally.failed < total {
            return Ok(Outcome::Held);
        }
        self.map_output(run, &job.step_id).await
    }

    /// The output of a map whose items all ended: their outputs in list
    /// order, `{"error": …}` for an item that failed.
    async fn map_output(
        &self,
        run: &db::runs::RunRow,
        step_id: &str,
    ) -> Result<Outcome, EngineError> {
        let outcomes = {
            let mut conn = self.db.reader().await?;
            let size = db::items::output_bytes(&mut conn, &run.id, step_id).await?;
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > MAX_OUTPUT_BYTES {
                return Ok(Outcome::Failed(AttemptError::OutputTooLarge {
                    size,
                    limit: MAX_OUTPUT_BYTES,
                }));
            }
            db::items::outcomes(&mut conn, &run.id, step_id).await?
        };
        let mut output = Vec::with_capacity(outcomes.len());
        for (status, out, error) in outcomes {
            let value = match status {
                ItemStatus::Completed => out
                    .as_deref()
                    .and_then(|o| serde_json::from_str(o).ok())
                    .unwrap_or(Value::Null),
                ItemStatus::Failed => json!({"error": error
                    .as_deref()
                    .and_then(|e| serde_json::from_str::<Value>(e).ok())
                    .unwrap_or(Value::Null)}),
                // Not ended: written since by a host that took the step
                // over. This attempt leaves it to that one.
                _ => {
                    return Err(EngineError::Conflict(format!(
                        "an item of step {step_id:?} of run {} has not ended",
                        run.id
                    )));
                }
            };
            output.push(value);
        }
        Ok(Outcome::Completed(Value::Array(output)))
    }

    /// An item's row as of now, with nothing of an outcome yet.
    fn item_row(
        &self,
        run: &db::runs::RunRow,
        step_id: &str,
        index: usize,
        status: ItemStatus,
        attempts: i64,
        now: i64,
    ) -> ItemRow {
        ItemRow {
            run_id: run.id.clone(),
            step_id: step_id.to_owned(),
            index: index as i64,
            status,
            attempts,
            output: None,
            error: None,
            logs: None,
            host: Some(self.config.host_id.clone()),
            started_at: Some(now),
            ended_at: None,
        }
    }

    /// Writes items and events in one transaction.
    async fn write_items(
        &self,
        run: &db::runs::RunRow,
        (step_id, attempt): (&str, i64),
        rows: &[ItemRow],
        events: &[Event],
    ) -> Result<(), EngineError> {
        if rows.is_empty() && events.is_empty() {
            return Ok(());
        }
        // An item's last row only: a batch may hold its start and its end.
        let mut last: HashMap<i64, usize> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            last.insert(row.index, i);
        }
        let rows: Vec<ItemRow> = rows
            .iter()
            .enumerate()
            .filter(|(i, row)| last.get(&row.index) == Some(i))
            .map(|(_, row)| row.clone())
            .collect();
        let now = db::now_ms();
        let mut tx = self.db.begin().await?;
        if !db::items::holds_lease(&mut tx, &run.id, step_id, &self.config.host_id, attempt).await?
        {
            return Err(EngineError::Conflict(format!(
                "the lease of step {step_id:?} of run {} was lost",
                run.id
            )));
        }
        let events = event_rows(run, events);
        let mut writes = db::runs::Writes::default();
        writes.upsert_items(&rows).append_events(&events, now);
        writes.execute(&mut tx).await?;
        tx.commit().await.map_err(DbError::from)?;
        self.changed(&run.id);
        Ok(())
    }
}

/// The JSON type of `value`, for messages.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A `step.items` event: the map's counts.
fn progress(step_id: &str, tally: &Tally, running: usize) -> Event {
    let ended = tally.completed + tally.failed;
    Event::step(
        "step.items",
        step_id,
        json!({
            "total": tally.total,
            "completed": tally.completed,
            "failed": tally.failed,
            "running": running,
            "pending": tally.total.saturating_sub(ended + running),
        }),
    )
}

/// One attempt of one item: its config rendered with `item` and
/// `item_index`, checked, within the step's rate limit, run.
async fn run_item(
    engine: Arc<Engine>,
    job: Arc<Job>,
    index: usize,
    attempt: i64,
    token: CancellationToken,
) -> ItemDone {
    let started_at = db::now_ms();
    let done = |outcome, logs| ItemDone {
        index,
        attempt,
        started_at,
        outcome,
        logs,
    };
    let run = &job.snapshot.run;
    let steps = &job.snapshot.steps;
    let Some(item) = job.list.get(index) else {
        let error = AttemptError::Fatal(format!("the list has no item {index}"));
        return done(ItemOutcome::Failed(error), None);
    };
    let index_value = Value::from(index);
    // The config and the rate limit's key, in one scope.
    let (config, key) =
        advance::with_item_scope(run, &job.input, steps, (item, &index_value), |scope| {
            let config = job
                .def
                .config
                .as_ref()
                .map(|c| template::render(c, scope))
                .transpose();
            let key = job
                .def
                .rate_limit
                .as_ref()
                .and_then(|l| rate_key(&l.key, scope));
            (config, key)
        });
    let config = match config {
        Ok(config) => config.unwrap_or(Value::Object(Default::default())),
        Err(e) => {
            let error = AttemptError::InvalidInput(format!("config: {e}"));
            return done(ItemOutcome::Failed(error), None);
        }
    };
    if let Err(e) = engine.check_config(&job.step_id, &job.plugin, &config) {
        return done(ItemOutcome::Failed(e), None);
    }
    // Over the rate limit, the item waits for the next minute; waiting is
    // not an attempt.
    if let (Some(limit), Some(key)) = (&job.def.rate_limit, key) {
        loop {
            let spread = (attempt * 7919 + index as i64 * 104_729).rem_euclid(1000);
            let until = match engine
                .take_rate_key(&run.tenant_id, &key, limit.per_minute, spread)
                .await
            {
                Ok(None) => break,
                Ok(Some(until)) => until,
                Err(e) => {
                    tracing::warn!(error = %e, "could not count an item against its rate limit");
                    db::now_ms() + 1_000
                }
            };
            let wait = Duration::from_millis(u64::try_from(until - db::now_ms()).unwrap_or(0));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = token.cancelled() => return done(ItemOutcome::Interrupted, None),
            }
        }
    }
    let mut limits = Limits::DEFAULT;
    if let Some(ms) = job.def.timeout_ms {
        limits.timeout = Duration::from_millis(ms);
    }
    let item_step = format!("{}[{index}]", job.step_id);
    let invocation = Invocation {
        context: StepContext {
            tenant: run.tenant_id.clone(),
            run_id: run.id.clone(),
            step_id: item_step.clone(),
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
            idempotency_key: format!("{}/{}/{index}", run.id, job.step_id),
        },
        config: &config.to_string(),
        input: &run.input,
        grants: engine
            .plugins
            .grants(&run.tenant_id, &job.uses, &job.plugin),
        services: services::for_item(
            &engine.db,
            engine.config.secrets.clone(),
            &run.tenant_id,
            &run.id,
            &item_step,
        ),
        limits,
    };
    let attempt_run = engine.runtime.invoke_traced(&job.plugin, invocation, None);
    let result = tokio::select! {
        attempt = attempt_run => Some(attempt),
        () = token.cancelled() => None,
    };
    let Some(result) = result else {
        return done(ItemOutcome::Interrupted, None);
    };
    engine.observe(&result);
    let logs =
        (!result.logs.is_empty()).then(|| serde_json::to_string(&result.logs).unwrap_or_default());
    let outcome = match result.result {
        Ok(text) => ItemOutcome::Completed(serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(e) => ItemOutcome::Failed(e),
    };
    done(outcome, logs)
}
