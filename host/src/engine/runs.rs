//! Runs as the API sees them: start, read, list, cancel, terminate, resume
//! and the event log.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::advance::{self, Event};
use super::definition::{self, COLLECT_INPUTS, REQUEST_USER_ACTION};
use super::labels::{self, Labels};
use super::scheduler::Snapshot;
use super::workflows::Selector;
use super::{Engine, EngineError, lock};
use crate::db::runs::{AttemptRow, EventRow, RunRow, RunStatus, StepRow, StepStatus};
use crate::db::{self, DbError};

/// A tenant's pending runs as last counted (plus the starts since).
pub(crate) struct PendingCount {
    at: std::time::Instant,
    count: i64,
}

/// Longest concurrency key kept as rendered; a longer one is its hash.
const MAX_KEY_BYTES: usize = 256;

/// How many times a start that replaces busy runs is tried (20 ms apart).
const BUSY_TRIES: usize = 250;

/// Runs `attempt` until it is not refused as [`EngineError::Busy`] (a run
/// it must change is being written elsewhere) or by Postgres breaking a
/// deadlock, at most [`BUSY_TRIES`] times, 20 ms apart.
pub(crate) async fn until_not_busy<T, F, Fut>(mut attempt: F) -> Result<T, EngineError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EngineError>>,
{
    let mut last = None;
    for _ in 0..BUSY_TRIES {
        match attempt().await {
            Err(e @ EngineError::Busy(_)) => last = Some(e),
            Err(EngineError::Db(e)) if e.is_retryable() => {
                last = Some(EngineError::Busy(e.to_string()));
            }
            other => return other,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last.expect("tried at least once"))
}

/// How long a count of a tenant's pending runs is used.
const PENDING_COUNT_TTL: Duration = Duration::from_secs(1);

/// A run with its steps and attempts.
#[derive(Debug, Clone)]
pub struct RunView {
    pub run: RunRow,
    pub steps: Vec<StepRow>,
    pub attempts: Vec<AttemptRow>,
    pub detail: Detail,
    /// Item counts of the run's `for_each` steps that have begun, by step.
    pub items: Vec<(String, db::items::Counts)>,
}

/// How much of each attempt a run's view carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Detail {
    /// Status, host, times and error: what a long run's view can afford.
    #[default]
    Compact,
    /// Also each attempt's logs and rendered input.
    Full,
}

/// How a run is stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// No new steps; running attempts finish.
    Cancel,
    /// Running attempts are interrupted too.
    Terminate,
    /// The run passed `max_duration_ms`: it fails, attempts are interrupted.
    Deadline,
}

/// What a resume asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// Data for a `collect_inputs` step.
    Data(Value),
    /// One of a `request_user_action` step's actions.
    Action(String),
    /// Complete a step by hand with this output.
    Override(Value),
    /// Run a failed step again.
    Retry,
}

/// Who starts a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A client through the API: `min_interval_ms` applies; with the
    /// request's `Idempotency-Key`, stored with the run.
    Manual(Option<StartKey<'a>>),
    /// A schedule's tick (ms).
    Schedule { id: &'a str, tick: i64 },
    /// A re-run of a finished run (`min_interval_ms` does not apply).
    Rerun,
}

/// A start's `Idempotency-Key`, stored in the transaction that inserts the
/// run: the run and its key commit together or not at all, so a repeated
/// start (concurrent, or after a crash left the first in doubt) finds the
/// run the first one created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartKey<'a> {
    pub key: &'a str,
    /// The route the key is scoped to.
    pub route: &'a str,
    /// Hash of the request body: the same key with another body is refused.
    pub request_hash: &'a str,
}

/// What a start did.
#[derive(Debug, Clone)]
pub enum Started {
    Created(Box<RunRow>),
    /// The key was already used by a start with the same body: the id of
    /// the run that one created.
    Existing(String),
    /// The key was already used with another body.
    KeyReused,
}

/// A run as inserted: its steps, and those its start claimed to run on
/// this host at once ([`Engine::claim_first`]).
pub(crate) struct Inserted {
    pub(crate) run: RunRow,
    pub(crate) steps: Vec<StepRow>,
    pub(crate) claimed: Vec<StepRow>,
}

/// A run checked against its workflow, ready to be inserted.
#[derive(Clone)]
pub(crate) struct Prepared {
    definition: std::sync::Arc<definition::Definition>,
    version: String,
    input: Value,
    /// The starter's `traceparent` header, when it sent one.
    caller_trace: Option<String>,
    /// The definition's labels rendered over the input, then the start's.
    pub(crate) labels: Labels,
    /// A re-run: the run it re-runs and the steps whose records it keeps.
    pub(crate) rerun: Option<(String, Vec<StepRow>)>,
    /// The workflow's `concurrency.key` rendered over the input.
    concurrency_key: Option<String>,
    /// 1 (the default) to 3.
    pub(crate) priority: i64,
}

impl Prepared {
    /// Adds a start's own labels (they win over the definition's).
    fn with_labels(mut self, labels: Labels) -> Result<Self, EngineError> {
        self.labels.extend(labels);
        labels::check(&self.labels).map_err(EngineError::InvalidInput)?;
        Ok(self)
    }
}

/// Most and least urgent run priorities.
pub const PRIORITIES: std::ops::RangeInclusive<i64> = 1..=3;

/// A start's priority, 1 when not given.
pub fn check_priority(priority: Option<i64>) -> Result<i64, EngineError> {
    match priority {
        None => Ok(1),
        Some(p) if PRIORITIES.contains(&p) => Ok(p),
        Some(p) => Err(EngineError::InvalidInput(format!(
            "priority must be 1, 2 or 3 (3 is claimed first), not {p}"
        ))),
    }
}

/// What a start asks for.
#[derive(Debug, Clone, Default)]
pub struct StartSpec<'a> {
    pub workflow: &'a str,
    /// Default: the published version.
    pub version: Option<&'a str>,
    pub input: Value,
    /// The start's own labels.
    pub labels: Labels,
    /// A preset of the workflow whose input goes under `input`.
    pub preset: Option<&'a str>,
    /// 1 to 3 (default 1): within the tenant, a higher priority's steps
    /// are claimed first.
    pub priority: Option<i64>,
}

impl Engine {
    /// Starts a run of `workflow` at `version` (default: the published one).
    pub async fn start_run(
        self: &Arc<Self>,
        tenant: &str,
        spec: StartSpec<'_>,
        key: Option<StartKey<'_>>,
        traceparent: Option<&str>,
    ) -> Result<Started, EngineError> {
        let StartSpec {
            workflow,
            version,
            input,
            mut labels,
            preset,
            priority,
        } = spec;
        labels::check(&labels).map_err(EngineError::InvalidInput)?;
        let priority = check_priority(priority)?;
        self.check_backlog(tenant).await?;
        let input = self
            .apply_preset(tenant, workflow, preset, input, &mut labels)
            .await?;
        let mut prepared = self
            .prepare_run(tenant, workflow, version, input)
            .await?
            .with_labels(labels)?;
        prepared.caller_trace = traceparent.map(str::to_owned);
        prepared.priority = priority;
        let replaces = prepared
            .definition
            .concurrency
            .as_ref()
            .is_some_and(|c| c.on_limit == definition::OnLimit::Replace);
        if !replaces {
            return self.start_prepared(tenant, workflow, prepared, key).await;
        }
        // A start that replaces a run being written elsewhere tries again.
        until_not_busy(|| self.start_prepared(tenant, workflow, prepared.clone(), key)).await
    }

    /// [`Self::start_run`] once its run is prepared.
    async fn start_prepared(
        self: &Arc<Self>,
        tenant: &str,
        workflow: &str,
        prepared: Prepared,
        key: Option<StartKey<'_>>,
    ) -> Result<Started, EngineError> {
        // A transaction by hand: without overlap control, BEGIN, the writes
        // and COMMIT go to the writer's thread in one round trip.
        let mut conn = db::HandTx::new(self.db.writer().await?);
        let inserted = self
            .insert_run(
                &mut conn,
                tenant,
                workflow,
                prepared,
                Origin::Manual(key),
                true,
            )
            .await;
        let Inserted {
            run,
            steps,
            claimed,
        } = match inserted {
            Ok(inserted) => {
                conn.committed();
                inserted
            }
            Err(EngineError::Db(e)) if e.is_unique_violation() && key.is_some() => {
                conn.abandon().await;
                return self.started_with(tenant, key).await;
            }
            // A concurrent start with the same key got in first and is
            // what the overlap control saw: answer with its run.
            Err(e @ EngineError::Overlap { .. }) if key.is_some() => {
                conn.abandon().await;
                return match self.started_with(tenant, key).await {
                    Ok(started @ Started::Existing(_)) => Ok(started),
                    _ => Err(e),
                };
            }
            Err(e) => {
                conn.abandon().await;
                return Err(e);
            }
        };
        self.changed(&run.id);
        // The scheduler only needs this start if it left steps ready.
        if claimed.is_empty() || steps.iter().any(|s| s.status == StepStatus::Ready) {
            self.wake.notify_one();
        }
        if !claimed.is_empty() {
            let snapshot = Arc::new(Snapshot {
                run: run.clone(),
                steps,
            });
            for step in claimed {
                self.run_claimed(step, Some(snapshot.clone()));
            }
        }
        Ok(Started::Created(Box::new(run)))
    }

    /// Refuses a start while the tenant has `tenant_max_pending` runs
    /// waiting to start. The count is read at most once a second per
    /// tenant (an index holds only pending runs); starts accepted since are
    /// added to it, so the limit errs on the side of refusing.
    pub(crate) async fn check_backlog(&self, tenant: &str) -> Result<(), EngineError> {
        let max = self.config.tenant_max_pending;
        if max == usize::MAX {
            return Ok(());
        }
        let fresh = lock(&self.pending)
            .get(tenant)
            .filter(|c| c.at.elapsed() < PENDING_COUNT_TTL)
            .map(|c| c.count);
        let count = match fresh {
            Some(n) => n,
            None => {
                let mut conn = self.db.reader().await?;
                let n = db::runs::count_pending(&mut conn, tenant).await?;
                let at = std::time::Instant::now();
                lock(&self.pending).insert(tenant.to_owned(), PendingCount { at, count: n });
                n
            }
        };
        if usize::try_from(count).unwrap_or(usize::MAX) >= max {
            return Err(EngineError::Backlog {
                message: format!(
                    "the tenant has {count} runs waiting to start, as many as it may (--tenant-max-pending {max}); retry once some have started"
                ),
                retry_after: PENDING_COUNT_TTL.as_secs().max(1),
            });
        }
        if let Some(c) = lock(&self.pending).get_mut(tenant) {
            c.count += 1;
        }
        Ok(())
    }

    /// What an earlier start with `key` did: the run it created, if it
    /// committed one.
    pub async fn started_with(
        &self,
        tenant: &str,
        key: Option<StartKey<'_>>,
    ) -> Result<Started, EngineError> {
        let Some(key) = key else {
            return Err(EngineError::NotFound("an idempotency key".into()));
        };
        let mut conn = self.db.reader().await?;
        let stored = db::state::idempotency_get(&mut conn, tenant, key.key, key.route)
            .await?
            .ok_or_else(|| EngineError::NotFound("the run of this idempotency key".into()))?;
        if stored.request_hash != key.request_hash {
            return Ok(Started::KeyReused);
        }
        stored
            .run_id
            .map(Started::Existing)
            .ok_or_else(|| EngineError::NotFound("the run of this idempotency key".into()))
    }

    /// Loads the workflow version and checks the input against its schema.
    pub(crate) async fn prepare_run(
        &self,
        tenant: &str,
        workflow: &str,
        version: Option<&str>,
        input: Value,
    ) -> Result<Prepared, EngineError> {
        let selector = match version {
            None => Selector::Published,
            Some(v) => Selector::parse(Some(v))?,
        };
        let found = self.get_workflow(tenant, workflow, &selector).await?;
        if found.workflow.archived_at.is_some() {
            return Err(EngineError::Conflict(format!(
                "workflow {workflow:?} is archived"
            )));
        }
        let definition = found.definition;
        if let Some(schema) = &definition.input_schema {
            let mut problems = Vec::new();
            self.check_against("input", "input", schema, &input, &mut problems);
            if !problems.is_empty() {
                let message = problems
                    .iter()
                    .map(|p| p.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(EngineError::InvalidInput(format!(
                    "input does not match the workflow's input_schema: {message}"
                )));
            }
        }
        let labels = match &definition.labels {
            Some(templates) => labels::render(templates, &input)
                .map_err(|e| EngineError::InvalidInput(format!("the workflow's {e}")))?,
            None => Labels::new(),
        };
        let concurrency_key = match definition.concurrency.as_ref().and_then(|c| c.key.as_ref()) {
            Some(template) => labels::render_one("concurrency.key", template, &input)
                .map_err(|e| EngineError::InvalidInput(format!("the workflow's {e}")))?
                .map(|key| {
                    // Kept whole in the index up to a bound; a longer key
                    // is its hash.
                    if key.len() <= MAX_KEY_BYTES {
                        key
                    } else {
                        use sha2::Digest as _;
                        format!(
                            "sha256:{}",
                            hex::encode(sha2::Sha256::digest(key.as_bytes()))
                        )
                    }
                }),
            None => None,
        };
        Ok(Prepared {
            definition,
            version: found.version.version.to_string(),
            input,
            caller_trace: None,
            labels,
            rerun: None,
            concurrency_key,
            priority: 1,
        })
    }

    /// Inserts a prepared run in `tx`, applying the workflow's overlap
    /// control: a start over `concurrency.limit` is queued or refused, a
    /// manual start within `min_interval_ms` of the last one is refused.
    /// With `own_transaction`, `tx` is outside any transaction and this
    /// begins and commits one itself, in as few round trips as it can; on
    /// an error the caller rolls it back (`db::HandTx::abandon`).
    pub(crate) async fn insert_run(
        &self,
        tx: &mut db::Conn,
        tenant: &str,
        workflow: &str,
        prepared: Prepared,
        origin: Origin<'_>,
        own_transaction: bool,
    ) -> Result<Inserted, EngineError> {
        let Prepared {
            definition,
            version,
            input,
            caller_trace,
            labels,
            rerun,
            concurrency_key,
            priority,
        } = prepared;
        let now = db::now_ms();
        let reads = matches!(origin, Origin::Manual(_)) && definition.min_interval_ms.is_some()
            || definition.concurrency.is_some();
        // Overlap control reads inside the transaction: begin it first, and
        // take the workflow's lock (hosts starting runs of it at once count
        // one at a time).
        if own_transaction && reads {
            db::runs::Writes::default().begin().execute(tx).await?;
        }
        if reads {
            db::lock(tx, &db::workflow_lock(tenant, workflow)).await?;
        }
        if let (Some(min), Origin::Manual(_)) = (definition.min_interval_ms, origin)
            && let Some((last, at)) = db::runs::latest_of_workflow(tx, tenant, workflow).await?
            && now - at < min as i64
        {
            return Err(EngineError::Overlap {
                message: format!(
                    "workflow {workflow:?} allows one start every {min} ms; run {last} started {} ms ago",
                    now - at
                ),
                run_id: last,
            });
        }
        let mut queued = false;
        if let Some(limit) = &definition.concurrency {
            // With a key, the limit holds among the runs with the same key;
            // a run whose key rendered to null is not limited.
            let keyed = limit.key.is_some();
            let key = concurrency_key.as_deref();
            let (active, oldest) = if keyed && key.is_none() {
                (0, None)
            } else {
                db::runs::active_of_workflow(tx, tenant, workflow, key).await?
            };
            if active >= i64::from(limit.limit) {
                let oldest = oldest.unwrap_or_default();
                let of_key = key.map(|k| format!(" with key {k:?}")).unwrap_or_default();
                match limit.on_limit {
                    definition::OnLimit::Reject => {
                        return Err(EngineError::Overlap {
                            message: format!(
                                "workflow {workflow:?} allows {} unfinished run(s){of_key} at once and has {active}; run {oldest} is still going",
                                limit.limit
                            ),
                            run_id: oldest,
                        });
                    }
                    definition::OnLimit::Queue => queued = true,
                    definition::OnLimit::Replace => {
                        let excess = active - i64::from(limit.limit) + 1;
                        self.replace_oldest(tx, tenant, workflow, key, excess, now)
                            .await?;
                    }
                }
            }
        }
        let mut run = RunRow::pending(
            uuid::Uuid::now_v7().to_string(),
            tenant,
            workflow,
            version,
            input.to_string(),
            now,
        );
        run.queued = queued;
        if let Some((own, parent)) = crate::telemetry::new_run(caller_trace.as_deref()) {
            run.traceparent = Some(own);
            run.trace_parent_span_id = parent;
        }
        run.schedule_id = match origin {
            Origin::Schedule { id, .. } => Some(id.to_owned()),
            Origin::Manual(_) | Origin::Rerun => None,
        };
        run.labels = labels::to_column(&labels);
        run.concurrency_key = concurrency_key;
        run.priority = priority;
        let (rerun_of, reused) = rerun.unzip();
        run.rerun_of = rerun_of;
        let mut steps: Vec<StepRow> = definition
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let kind = match s.uses.as_str() {
                    definition::WAIT => "wait",
                    COLLECT_INPUTS => COLLECT_INPUTS,
                    REQUEST_USER_ACTION => REQUEST_USER_ACTION,
                    _ => "plugin",
                };
                let kept = reused.iter().flatten().find(|kept| kept.step_id == s.id);
                match kept {
                    // A re-run keeps the step's record, not its attempts.
                    Some(kept) => StepRow {
                        run_id: run.id.clone(),
                        position: i as i64,
                        attempts: 0,
                        lease_owner: None,
                        lease_expires_at: None,
                        due_at: None,
                        ..kept.clone()
                    },
                    None => {
                        StepRow::new(&run.id, s.id.clone(), i as i64, kind, StepStatus::Pending)
                    }
                }
            })
            .collect();
        let mut created = json!({"workflow": workflow, "version": run.workflow_version});
        if !labels.is_empty() {
            created["labels"] = json!(labels);
        }
        if let (Some(of), Some(reused)) = (&run.rerun_of, &reused) {
            created["rerun_of"] = json!(of);
            created["reused_steps"] = json!(reused.iter().map(|s| &s.step_id).collect::<Vec<_>>());
        }
        if let Origin::Schedule { id, tick } = origin {
            created["schedule_id"] = json!(id);
            created["scheduled_for"] = json!(super::rfc3339(tick));
        }
        let mut events = vec![Event::run("run.created", created)];
        if !queued {
            run.deadline_at = definition.max_duration_ms.map(|ms| now + ms as i64);
        }
        if queued {
            events.push(Event::run(
                "run.queued",
                json!({"reason": "the workflow's concurrency limit is reached"}),
            ));
        } else {
            events.extend(advance::advance(&definition, &mut run, &mut steps, now));
        }
        // A start through the API, in a transaction of its own, claims the
        // steps it can start with (its COMMIT is in the round trip below).
        let claimed = if own_transaction && matches!(origin, Origin::Manual(_)) {
            self.claim_first(&mut run, &mut steps, now, &mut events)
        } else {
            Vec::new()
        };
        let attempts: Vec<AttemptRow> = claimed
            .iter()
            .map(|s| self.started_attempt(s, now))
            .collect();
        // The run as advanced, its steps, attempts and events in one round
        // trip.
        let all: Vec<(&RunRow, &StepRow)> = steps.iter().map(|s| (&run, s)).collect();
        let rows = super::scheduler::event_rows(&run, &events);
        let mut writes = db::runs::Writes::default();
        if own_transaction && !reads {
            writes.begin();
        }
        if let Origin::Manual(Some(key)) = origin {
            writes.claim_idempotency(tenant, key.key, key.route, key.request_hash, &run.id, now);
        }
        writes
            .insert_run(&run)
            .upsert_steps(&all)
            .insert_attempts(&attempts)
            .append_events(&rows, now);
        // Every step skipped: queued runs of the workflow may start.
        let ended = run.status.is_terminal();
        if own_transaction && !ended {
            writes.commit();
        }
        if let Err(e) = writes.execute(tx).await {
            self.release_slots(claimed.len());
            return Err(e.into());
        }
        if ended {
            let key = run.concurrency_key.as_deref();
            self.release_queued(tx, &run.tenant_id, &run.workflow_key, key, now)
                .await?;
            if own_transaction {
                db::runs::Writes::default().commit().execute(tx).await?;
            }
        }
        Ok(Inserted {
            run,
            steps,
            claimed,
        })
    }

    /// After a run of `workflow` with concurrency key `key` ended in `tx`:
    /// starts queued runs of that workflow and key, oldest first, while the
    /// limit allows.
    pub(crate) async fn release_queued(
        &self,
        tx: &mut db::Conn,
        tenant: &str,
        workflow: &str,
        key: Option<&str>,
        now: i64,
    ) -> Result<(), EngineError> {
        db::lock(tx, &db::workflow_lock(tenant, workflow)).await?;
        // A released run can end at once (every step skipped): go on then.
        while let Some(run) = self.release_one(tx, tenant, workflow, key, now).await? {
            self.changed(&run.id);
            if !run.status.is_terminal() {
                break;
            }
        }
        Ok(())
    }

    async fn release_one(
        &self,
        tx: &mut db::Conn,
        tenant: &str,
        workflow: &str,
        key: Option<&str>,
        now: i64,
    ) -> Result<Option<RunRow>, EngineError> {
        let Some(mut run) = db::runs::oldest_queued(tx, tenant, workflow, key).await? else {
            return Ok(None);
        };
        let definition = self.definition_for_run(&run).await?;
        let limit = definition
            .concurrency
            .as_ref()
            .map_or(u32::MAX, |c| c.limit);
        let (active, _) = db::runs::active_of_workflow(tx, tenant, workflow, key).await?;
        if active >= i64::from(limit) {
            return Ok(None);
        }
        let mut steps = db::runs::steps_of(tx, &run.id).await?;
        let original_run = run.clone();
        let original = steps.clone();
        run.queued = false;
        run.deadline_at = definition.max_duration_ms.map(|ms| now + ms as i64);
        let mut events = vec![Event::run("run.dequeued", json!({}))];
        events.extend(advance::advance(&definition, &mut run, &mut steps, now));
        self.write_rows(tx, &original_run, &run, &original, &steps, &events, now)
            .await?;
        Ok(Some(run))
    }

    pub async fn get_run(
        &self,
        tenant: &str,
        id: &str,
        detail: Detail,
    ) -> Result<RunView, EngineError> {
        let mut conn = self.db.reader().await?;
        let run = db::runs::get_run(&mut conn, tenant, id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("run {id:?}")))?;
        let steps = db::runs::steps_of(&mut conn, id).await?;
        let attempts = db::runs::attempts_of(&mut conn, id, detail == Detail::Full).await?;
        // Only a run with a `for_each` step has items to count.
        let mapped = match self.definition_for_run(&run).await {
            Ok(definition) => definition.steps.iter().any(|s| s.for_each.is_some()),
            Err(_) => true,
        };
        let items = if mapped {
            db::items::counts(&mut conn, id).await?
        } else {
            Vec::new()
        };
        Ok(RunView {
            run,
            steps,
            attempts,
            detail,
            items,
        })
    }

    /// A page of the items of a run's `for_each` step, in list order from
    /// index `after + 1`; only those in `status` if given.
    pub async fn step_items(
        &self,
        tenant: &str,
        id: &str,
        step_id: &str,
        status: Option<db::items::ItemStatus>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<db::items::ItemRow>, EngineError> {
        let mut conn = self.db.reader().await?;
        let run = db::runs::get_run(&mut conn, tenant, id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("run {id:?}")))?;
        let definition = self.definition_for_run(&run).await?;
        match definition.step(step_id) {
            None => {
                return Err(EngineError::NotFound(format!(
                    "run {id} has no step {step_id:?}"
                )));
            }
            Some(step) if step.for_each.is_none() => {
                return Err(EngineError::NotFound(format!(
                    "step {step_id:?} has no for_each, so no items"
                )));
            }
            Some(_) => {}
        }
        Ok(db::items::list(&mut conn, id, step_id, status, after, limit).await?)
    }

    /// Waits up to `wait` for the run to end (or pause); returns it as it is then.
    pub async fn wait_for_run(
        &self,
        tenant: &str,
        id: &str,
        wait: Duration,
        detail: Detail,
    ) -> Result<RunView, EngineError> {
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Only the run's row while waiting; the whole view once at the end.
            let run = {
                let mut conn = self.db.reader().await?;
                db::runs::get_run(&mut conn, tenant, id)
                    .await?
                    .ok_or_else(|| EngineError::NotFound(format!("run {id:?}")))?
            };
            if settles(run.status) {
                return self.get_run(tenant, id, detail).await;
            }
            loop {
                // Looks again every second even without news: on Postgres
                // another host's notification may have been lost.
                let until = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
                match tokio::time::timeout_at(until, changes.recv()).await {
                    Err(_) if until == deadline => return self.get_run(tenant, id, detail).await,
                    Err(_) => break,
                    Ok(Ok(changed)) if changed.id != id => continue,
                    // A change that says the run goes on needs no read.
                    Ok(Ok(changed)) if changed.status.is_some_and(|s| !settles(s)) => continue,
                    Ok(_) => break,
                }
            }
        }
    }

    pub async fn list_runs(
        &self,
        tenant: &str,
        filter: db::runs::RunFilter<'_>,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RunRow>, EngineError> {
        if filter.labels.len() > labels::MAX_FILTERS {
            return Err(EngineError::InvalidInput(format!(
                "at most {} label filters, found {}",
                labels::MAX_FILTERS,
                filter.labels.len()
            )));
        }
        let mut conn = self.db.reader().await?;
        Ok(db::runs::list_runs(&mut conn, tenant, filter, cursor, limit).await?)
    }

    /// Cancels, terminates or (deadline) fails a run. `tenant` `None` is the
    /// engine itself. A caller's `reason` is kept in the run's `error` and
    /// the event.
    pub async fn stop_run(
        &self,
        tenant: Option<&str>,
        id: &str,
        how: Stop,
        reason: Option<&str>,
    ) -> Result<RunRow, EngineError> {
        // Postgres may break a deadlock with a claim of the run's step
        // (the claim holds the step, this the run): again.
        until_not_busy(|| self.stop_run_once(tenant, id, how, reason)).await
    }

    async fn stop_run_once(
        &self,
        tenant: Option<&str>,
        id: &str,
        how: Stop,
        reason: Option<&str>,
    ) -> Result<RunRow, EngineError> {
        let now = db::now_ms();
        let mut tx = self.db.begin().await?;
        let run = db::runs::locked_run(&mut tx, tenant, id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("run {id:?}")))?;
        if run.status.is_terminal() {
            return Err(EngineError::Conflict(format!(
                "run {id} is already {}",
                run.status
            )));
        }
        let run = self.stop_locked(&mut tx, run, how, reason, now).await?;
        tx.commit().await.map_err(DbError::from)?;
        if how != Stop::Cancel {
            self.interrupt(id);
        }
        self.changed(id);
        Ok(run)
    }

    /// Stops `run`, already locked in `tx` and unfinished, in `tx`.
    async fn stop_locked(
        &self,
        tx: &mut db::Conn,
        run: RunRow,
        how: Stop,
        reason: Option<&str>,
        now: i64,
    ) -> Result<RunRow, EngineError> {
        // Now that the run is held: a lock waited for must not make it end
        // before what its holder wrote.
        let now = now.max(db::now_ms());
        let original_run = run.clone();
        let mut run = run;
        let original = db::runs::steps_of(tx, &run.id).await?;
        let mut steps = original.clone();
        let (status, event, kind, message) = match how {
            Stop::Cancel => (
                RunStatus::Cancelled,
                "run.cancelled",
                "cancelled",
                "the run was cancelled",
            ),
            Stop::Terminate => (
                RunStatus::Terminated,
                "run.terminated",
                "terminated",
                "the run was terminated",
            ),
            Stop::Deadline => (
                RunStatus::Failed,
                "run.failed",
                "max_duration",
                "the run exceeded its max_duration_ms",
            ),
        };
        advance::cancel_unstarted(&mut steps, now, message, false);
        run.status = status;
        run.ended_at = Some(now);
        let mut error = json!({"kind": kind, "message": message});
        let mut data = json!({"reason": message});
        if let Some(reason) = reason {
            error["reason"] = json!(reason);
            data["reason"] = json!(reason);
        }
        run.error = Some(error.to_string());
        let events = [Event::run(event, data)];
        self.write_changes(tx, &original_run, &run, &original, &steps, &events, now)
            .await?;
        Ok(run)
    }

    /// Cancels the `excess` oldest unfinished runs of `workflow` with
    /// concurrency key `key` (`on_limit: replace`), in `tx`, which holds
    /// the workflow's lock. A run another transaction holds (its attempt
    /// being recorded) makes this [`EngineError::Busy`]: the start is tried
    /// again, never waiting for a run's lock while holding the workflow's
    /// (a recorder takes them in the other order).
    async fn replace_oldest(
        &self,
        tx: &mut db::Conn,
        tenant: &str,
        workflow: &str,
        key: Option<&str>,
        excess: i64,
        now: i64,
    ) -> Result<(), EngineError> {
        let older = match key {
            Some(key) => db::runs::unfinished_with_key(tx, tenant, workflow, key).await?,
            None => db::runs::active_of_workflow(tx, tenant, workflow, None)
                .await?
                .1
                .into_iter()
                .collect(),
        };
        for id in older.iter().take(usize::try_from(excess).unwrap_or(0)) {
            let Some(run) = db::runs::try_lock_run(tx, id).await? else {
                return Err(EngineError::Busy(format!(
                    "run {id}, which this start replaces, is being written; try again"
                )));
            };
            if run.status.is_terminal() {
                continue;
            }
            self.stop_locked(tx, run, Stop::Cancel, Some("replaced by a newer run"), now)
                .await?;
            self.changed(id);
        }
        Ok(())
    }

    /// Resumes a paused step, completes one by hand, or retries a failed one.
    pub async fn resume(
        &self,
        tenant: &str,
        id: &str,
        step_id: &str,
        resume: Resume,
    ) -> Result<RunRow, EngineError> {
        let now = db::now_ms();
        let mut tx = self.db.begin().await?;
        let mut run = db::runs::locked_run(&mut tx, Some(tenant), id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("run {id:?}")))?;
        let definition = self.definition_for_run(&run).await?;
        let original_run = run.clone();
        let original = db::runs::steps_of(&mut tx, id).await?;
        let mut steps = original.clone();
        let index = steps
            .iter()
            .position(|s| s.step_id == step_id)
            .ok_or_else(|| {
                EngineError::InvalidInput(format!("run {id} has no step {step_id:?}"))
            })?;
        let not_resumable =
            |why: String| EngineError::Conflict(format!("run {id} is {}: {why}", run.status));
        let resumable_run = matches!(
            run.status,
            RunStatus::Running | RunStatus::Paused | RunStatus::Pending | RunStatus::Failed
        );
        if !resumable_run {
            return Err(not_resumable(
                "only running, paused or failed runs can be resumed".into(),
            ));
        }
        let step_def = definition.step(step_id);
        let mut events = Vec::new();
        let step_status = steps[index].status;
        if run.status == RunStatus::Failed && matches!(resume, Resume::Retry | Resume::Override(_))
        {
            // Reopened, the run counts against its workflow's limit again.
            check_room(&mut tx, &run, &definition).await?;
        }
        match resume {
            Resume::Data(data) => {
                if steps[index].kind != COLLECT_INPUTS || step_status != StepStatus::Paused {
                    return Err(not_resumable(format!(
                        "step {step_id:?} is {step_status}, not a paused collect_inputs step"
                    )));
                }
                if let Some(schema) = step_def
                    .and_then(|s| s.config.as_ref())
                    .and_then(|c| c.get("schema"))
                {
                    let mut problems = Vec::new();
                    self.check_against(step_id, "data", schema, &data, &mut problems);
                    if !problems.is_empty() {
                        let message = problems
                            .iter()
                            .map(|p| p.message.clone())
                            .collect::<Vec<_>>()
                            .join("; ");
                        return Err(EngineError::InvalidInput(format!(
                            "data does not match the step's schema: {message}"
                        )));
                    }
                }
                complete(&mut steps[index], &data, now);
                events.push(Event::step(
                    "step.completed",
                    step_id,
                    json!({"resumed": true}),
                ));
            }
            Resume::Action(action) => {
                if steps[index].kind != REQUEST_USER_ACTION || step_status != StepStatus::Paused {
                    return Err(not_resumable(format!(
                        "step {step_id:?} is {step_status}, not a paused request_user_action step"
                    )));
                }
                let config = step_def
                    .and_then(|s| s.config.clone())
                    .unwrap_or(Value::Null);
                let allowed: Vec<&str> = config["actions"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if !allowed.contains(&action.as_str()) {
                    return Err(EngineError::InvalidInput(format!(
                        "action {action:?} is not one of {allowed:?}"
                    )));
                }
                let declines: Vec<&str> = match config["decline"].as_array() {
                    Some(list) => list.iter().filter_map(Value::as_str).collect(),
                    None => vec!["decline"],
                };
                complete(&mut steps[index], &json!({"action": action}), now);
                events.push(Event::step(
                    "step.completed",
                    step_id,
                    json!({"action": action}),
                ));
                if declines.contains(&action.as_str()) {
                    advance::cancel_unstarted(
                        &mut steps,
                        now,
                        &format!("declined with {action:?}"),
                        false,
                    );
                    run.status = RunStatus::Declined;
                    run.ended_at = Some(now);
                    run.result =
                        Some(json!({"declined": {"step": step_id, "action": action}}).to_string());
                    events.push(Event::run(
                        "run.declined",
                        json!({"step_id": step_id, "action": action}),
                    ));
                }
            }
            Resume::Override(output) => {
                if !matches!(
                    step_status,
                    StepStatus::Failed | StepStatus::Paused | StepStatus::Cancelled
                ) {
                    return Err(not_resumable(format!(
                        "step {step_id:?} is {step_status}; only failed, paused or cancelled steps can be overridden"
                    )));
                }
                reopen(&mut run, &mut steps);
                complete(&mut steps[index], &output, now);
                events.push(Event::step(
                    "step.completed",
                    step_id,
                    json!({"overridden": true}),
                ));
            }
            Resume::Retry => {
                if step_status != StepStatus::Failed {
                    return Err(not_resumable(format!(
                        "step {step_id:?} is {step_status}; only a failed step can be retried"
                    )));
                }
                reopen(&mut run, &mut steps);
                let retry = json!({"manual": true});
                let step = &mut steps[index];
                events.push(retry_by_hand(&mut tx, &definition, step, retry, now).await?);
            }
        }
        if !run.status.is_terminal() {
            events.extend(advance::advance(&definition, &mut run, &mut steps, now));
        }
        self.commit_changes(tx, &original_run, &run, &original, &steps, &events, now)
            .await?;
        Ok(run)
    }

    pub async fn events(
        &self,
        tenant: &str,
        id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, EngineError> {
        let mut conn = self.db.reader().await?;
        if db::runs::get_run(&mut conn, tenant, id).await?.is_none() {
            return Err(EngineError::NotFound(format!("run {id:?}")));
        }
        Ok(db::runs::events_after(&mut conn, id, after, limit).await?)
    }

    /// A tenant's events (every run) after event id `after`, oldest first.
    pub async fn tenant_events(
        &self,
        tenant: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<db::webhooks::EventForDelivery>, EngineError> {
        let mut conn = self.db.reader().await?;
        Ok(db::webhooks::events_after(&mut conn, tenant, after, limit).await?)
    }

    /// The id of a tenant's newest event (0 if none): where a live stream
    /// without a cursor starts.
    pub async fn last_event_id(&self, tenant: &str) -> Result<i64, EngineError> {
        let mut conn = self.db.reader().await?;
        Ok(db::webhooks::last_event_id(&mut conn, tenant).await?)
    }
}

/// Whether a run in `status` is done waiting for: ended, or paused.
fn settles(status: RunStatus) -> bool {
    status.is_terminal() || status == RunStatus::Paused
}

pub(crate) fn complete(step: &mut StepRow, output: &Value, now: i64) {
    step.status = StepStatus::Completed;
    step.output = Some(output.to_string());
    step.error = None;
    step.ended_at = Some(now);
    step.started_at.get_or_insert(now);
}

/// A failed run becomes running again: steps cancelled because of the
/// failure go back to pending.
/// Whether the workflow's concurrency limit has room for `run`, failed and
/// locked in `tx`, to become unfinished again (a retry reopens it): it
/// counts like a start, under the workflow's lock (taken after the run's,
/// as a recorder takes them). A conflict naming the limit if not.
pub(crate) async fn check_room(
    tx: &mut db::Conn,
    run: &RunRow,
    definition: &definition::Definition,
) -> Result<(), EngineError> {
    let Some(limit) = &definition.concurrency else {
        return Ok(());
    };
    let key = run.concurrency_key.as_deref();
    if limit.key.is_some() && key.is_none() {
        return Ok(());
    }
    let (tenant, workflow) = (&run.tenant_id, &run.workflow_key);
    db::lock(tx, &db::workflow_lock(tenant, workflow)).await?;
    let (active, _) = db::runs::active_of_workflow(tx, tenant, workflow, key).await?;
    if active >= i64::from(limit.limit) {
        let of_key = key.map(|k| format!(" with key {k:?}")).unwrap_or_default();
        return Err(EngineError::Conflict(format!(
            "workflow {workflow:?} already has {active} unfinished run(s){of_key}, its concurrency limit; retry once one ends"
        )));
    }
    Ok(())
}

/// Makes a failed step ready now, retried by hand (`data` is its
/// `step.retrying` event's): a `for_each` step's failed items go back to
/// pending, and those that completed keep their outputs.
pub(crate) async fn retry_by_hand(
    tx: &mut db::Conn,
    definition: &definition::Definition,
    step: &mut StepRow,
    data: Value,
    now: i64,
) -> Result<Event, EngineError> {
    if definition
        .step(&step.step_id)
        .is_some_and(|s| s.for_each.is_some())
    {
        db::items::reset_failed(tx, &step.run_id, &step.step_id).await?;
    }
    step.status = StepStatus::Ready;
    step.due_at = Some(now);
    step.ended_at = None;
    Ok(Event::step("step.retrying", &step.step_id, data))
}

pub(crate) fn reopen(run: &mut RunRow, steps: &mut [StepRow]) {
    if run.status != RunStatus::Failed {
        return;
    }
    run.status = RunStatus::Running;
    run.error = None;
    run.ended_at = None;
    // A pause ends with the run.
    run.held_at = None;
    for step in steps
        .iter_mut()
        .filter(|s| s.status == StepStatus::Cancelled)
    {
        step.status = StepStatus::Pending;
        step.error = None;
        step.ended_at = None;
    }
}
