//! Claiming, executing and recording step attempts.
//!
//! A step is claimed under a lease (`db::runs::claim`), which this host
//! renews while the attempt runs. If the host dies, the lease expires and
//! any host claims the step again: a new attempt with the same idempotency
//! key (`<run id>/<step id>`), so host capabilities keyed by it (the mail
//! outbox) take effect once. A result is committed, with the dependents it
//! makes ready and the events, before anything else is scheduled.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::advance::{self, Event, catch_id, run_is_terminal};
use super::definition::{Definition, StepDef};
use super::template;
use super::{DURATION_BUCKETS_MS, Engine, EngineError, lock, rfc3339, services};
use crate::db::runs::{AttemptRow, RunRow, StepRow};
use crate::db::{self, DbError};
use crate::runtime::{Attempt, AttemptError, Invocation, Limits, StepContext};

/// Most attempt results committed in one transaction.
const RECORD_BATCH: usize = 64;

/// The span of an attempt at `step`, a child of the run's `traceparent`.
fn attempt_span(
    run: &RunRow,
    step: &StepRow,
    plugin: &crate::runtime::Plugin,
    traceparent: &str,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        "step.attempt",
        weft.run_id = %run.id,
        weft.step_id = %step.step_id,
        weft.tenant = %run.tenant_id,
        weft.plugin = %plugin.info.name,
        weft.plugin.version = %plugin.info.version,
        weft.attempt = step.attempts,
        weft.attempt.outcome = tracing::field::Empty,
        weft.attempt.duration_ms = tracing::field::Empty,
        weft.error.kind = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    crate::telemetry::set_parent(&span, traceparent);
    span
}

/// How the attempt ended, on its span (`None`: interrupted).
fn record_attempt(span: &tracing::Span, attempt: Option<&Attempt>) {
    let Some(attempt) = attempt else {
        span.record("weft.attempt.outcome", "interrupted");
        span.record("otel.status_code", "error");
        return;
    };
    span.record(
        "weft.attempt.duration_ms",
        attempt.duration.as_secs_f64() * 1e3,
    );
    match &attempt.result {
        Ok(_) => {
            span.record("weft.attempt.outcome", "completed");
        }
        Err(e) => {
            span.record("weft.attempt.outcome", "failed");
            span.record("weft.error.kind", e.kind());
            span.record("otel.status_code", "error");
            span.record("otel.status_description", e.to_string());
        }
    }
}

/// A finished attempt, on its way to the recorder.
pub(crate) struct Finished {
    /// The step as claimed.
    step: StepRow,
    outcome: Outcome,
    /// What the runtime reported; none when no plugin ran (a `wait` step,
    /// a config that did not render, an interrupted attempt).
    attempt: Option<Attempt>,
    /// The config the step saw, rendered, as JSON text.
    rendered: Option<String>,
}

/// A run as a recording transaction left it: handed to the dependents it
/// claimed, so they render their config without reading the run again.
pub(crate) struct Snapshot {
    pub(super) run: RunRow,
    pub(super) steps: Vec<StepRow>,
}

/// A run's state as a recording transaction committed it, and the run's
/// version after that commit.
pub(crate) struct Recorded {
    snapshot: Arc<Snapshot>,
    version: i64,
}

/// What one recording transaction tracks across its attempts.
struct BatchState {
    /// Further steps this host may start now.
    budget: usize,
    /// Running steps per tenant: counted once per transaction, then kept
    /// up to date as attempts finish and dependents are claimed.
    running: HashMap<String, i64>,
    /// Per tenant, running steps gained (claims) less those lost (finished
    /// attempts) in this batch: its writes come at the end, so a count
    /// read from the database mid-batch is corrected by this.
    unwritten: HashMap<String, i64>,
    /// Steps claimed so far in this transaction.
    claimed: usize,
    /// Whether this transaction holds a tenant's lock (Postgres).
    holds_tenant_lock: bool,
}

/// How an attempt ended, as the scheduler records it.
pub(crate) enum Outcome {
    Completed(Value),
    Failed(AttemptError),
    /// Stopped from outside: terminate, or the run's deadline.
    Interrupted(String),
    /// Not run: its rate limit's minute is full. The step waits for the
    /// next minute (ms) and the attempt does not count.
    Deferred {
        until: i64,
        key: String,
    },
    /// Not finished: a `for_each` step whose run an operator paused, with
    /// items left to run. It waits, held, and goes on once unpaused; the
    /// attempt does not count.
    Held,
}

/// A rate limit's window.
pub(crate) const RATE_WINDOW_MS: i64 = 60_000;

impl Engine {
    /// Runs the scheduler, the deadline watcher, the schedule loop and the
    /// outbox sender until
    /// `shutdown` is cancelled.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) {
        self.start_peers(&shutdown);
        if let Some(finished) = lock(&self.finished_rx).take() {
            let engine = self.clone();
            tokio::spawn(async move { engine.record_finished(finished).await });
        }
        let engine = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { engine.schedule(stop).await });
        let engine = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { engine.watch_deadlines(stop).await });
        let engine = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { engine.run_schedules(stop).await });
        let engine = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { engine.run_webhooks(stop).await });
        let engine = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { engine.run_tasks(stop).await });
        if self.config.retention.is_some() {
            let engine = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { engine.expire_runs(stop).await });
        }
        if self.config.smtp.is_some() {
            let engine = self.clone();
            tokio::spawn(async move { engine.send_mail(shutdown).await });
        }
    }

    async fn schedule(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::info!(host = %self.config.host_id, "scheduler started");
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let free = self
                .config
                .max_parallel
                .saturating_sub(self.in_flight.load(Ordering::SeqCst));
            // Ask a reader whether anything is due before taking the single
            // writer for a claim: most wake-ups (a recorded result, a freed
            // slot) find nothing, because results claim their dependents.
            let next = self.next_due_at().await;
            let now = db::now_ms();
            self.backlog
                .store(next.is_some_and(|t| t <= now), Ordering::SeqCst);
            let mut claimed = 0;
            if free > 0 && next.is_some_and(|t| t <= now) {
                let claim = if crate::telemetry::sample_db() {
                    self.claim(free).instrument(self.db_span("claim")).await
                } else {
                    self.claim(free).await
                };
                match claim {
                    Ok(steps) => {
                        claimed = steps.len();
                        for step in steps {
                            self.dispatch(step, None);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "claiming steps failed; retrying"),
                }
            }
            if claimed > 0 && claimed == free {
                continue;
            }
            let poll = self.config.poll;
            let wait = match next {
                // Due but not claimable now (no free slot, tenant caps):
                // wait for a wake-up, polling at the usual rate.
                Some(t) if t <= now => poll,
                Some(t) => Duration::from_millis((t - now) as u64).min(poll),
                None => poll,
            };
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Runs a claimed step on this host, counting it against `max_parallel`.
    fn dispatch(self: &Arc<Self>, step: StepRow, snapshot: Option<Arc<Snapshot>>) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let engine = self.clone();
        tokio::spawn(async move {
            engine.execute(step, snapshot).await;
            engine.in_flight.fetch_sub(1, Ordering::SeqCst);
            engine.wake.notify_one();
        });
    }

    /// The attempt row of a step this host just claimed.
    fn started_attempt(&self, step: &StepRow, now: i64) -> AttemptRow {
        AttemptRow {
            run_id: step.run_id.clone(),
            step_id: step.step_id.clone(),
            attempt: step.attempts,
            status: "running".into(),
            host: Some(self.config.host_id.clone()),
            started_at: now,
            ended_at: None,
            error_kind: None,
            error: None,
            logs: None,
            input: None,
        }
    }

    /// The data of a `step.started` event.
    fn started_data(&self, step: &StepRow) -> Value {
        json!({"attempt": step.attempts, "host": self.config.host_id})
    }

    /// The next time a step is due or a lease expires, read without taking
    /// the writer; `Some(0)` when the database cannot be read (claim anyway).
    async fn next_due_at(&self) -> Option<i64> {
        let Ok(mut conn) = self.db.reader().await else {
            return Some(0);
        };
        db::runs::next_wakeup(&mut conn).await.unwrap_or(Some(0))
    }

    /// Claims due steps, records their attempts as started, and moves their
    /// runs from `pending` to `running`, in one transaction.
    async fn claim(&self, limit: usize) -> Result<Vec<StepRow>, EngineError> {
        let now = db::now_ms();
        let lease_until = now + self.config.lease.as_millis() as i64;
        let mut tx = self.db.begin().await?;
        // Several hosts share the database: the tenants whose cap this
        // claim counts against are locked first.
        let tenants = if self.db.exclusive() || !self.capped() {
            None
        } else {
            Some(db::runs::claim_tenants(&mut tx, now).await?)
        };
        let steps = db::runs::claim(
            &mut tx,
            &self.config.host_id,
            now,
            lease_until,
            limit as i64,
            i64::try_from(self.config.tenant_max_running).unwrap_or(i64::MAX),
            tenants.as_deref(),
        )
        .await?;
        let attempts: Vec<AttemptRow> =
            steps.iter().map(|s| self.started_attempt(s, now)).collect();
        // Every run of the claimed steps in one read; the attempts, the
        // runs that start and the events in one write.
        let mut ids: Vec<&str> = steps.iter().map(|s| s.run_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut runs = db::runs::runs_by_ids(&mut tx, &ids).await?;
        // Runs still pending start with their first claimed step.
        let starting: Vec<bool> = runs.iter().map(|r| r.status == "pending").collect();
        let mut events: Vec<Vec<Event>> = runs.iter().map(|_| Vec::new()).collect();
        for step in &steps {
            let Some(i) = runs.iter().position(|r| r.id == step.run_id) else {
                continue;
            };
            if runs[i].status == "pending" {
                runs[i].status = "running".into();
                runs[i].started_at = Some(now);
                events[i].push(Event::run("run.started", json!({})));
            }
            events[i].push(Event::step(
                "step.started",
                &step.step_id,
                self.started_data(step),
            ));
        }
        let rows: Vec<db::runs::RunEvent<'_>> = runs
            .iter()
            .zip(&events)
            .flat_map(|(run, events)| event_rows(run, events))
            .collect();
        let mut writes = db::runs::Writes::default();
        // The claimed steps changed: their runs' versions move.
        writes
            .insert_attempts(&attempts)
            .touch(steps.iter().map(|s| s.run_id.as_str()));
        for (run, _) in runs.iter().zip(&starting).filter(|(_, s)| **s) {
            writes.update_run(run);
        }
        writes.append_events(&rows, now);
        writes.execute(&mut tx).await?;
        tx.commit().await.map_err(DbError::from)?;
        for run in &runs {
            self.changed(&run.id);
        }
        Ok(steps)
    }

    /// Takes a place in the step's rate limit for this minute, if it has
    /// one: `None` to run now, or the deferral to the next minute when this
    /// one is full. A key that cannot be rendered is a deferral too short
    /// to matter: the step then fails on its config like any other.
    async fn take_rate(
        &self,
        run: &RunRow,
        step: &StepRow,
        definition: &Definition,
        steps: &[StepRow],
    ) -> Result<Option<Outcome>, EngineError> {
        let Some(limit) = definition
            .step(&step.step_id)
            .and_then(|s| s.rate_limit.as_ref())
        else {
            return Ok(None);
        };
        let rendered = advance::with_scope(run, steps, None, |scope| {
            template::render(&Value::String(limit.key.clone()), scope)
        });
        let key = match rendered {
            Ok(Value::String(key)) => key,
            Ok(Value::Null) | Err(_) => return Ok(None),
            Ok(other) => other.to_string(),
        };
        // The next minute, spread over its first second so the steps that
        // waited do not all arrive at once; one that finds it full again
        // waits again.
        let spread = (step.attempts * 7919 + step.step_id.len() as i64 * 104_729).rem_euclid(1000);
        let until = self
            .take_rate_key(&run.tenant_id, &key, limit.per_minute, spread)
            .await?;
        Ok(until.map(|until| Outcome::Deferred { until, key }))
    }

    /// Takes a place in `key`'s rate limit for this minute: `None` when
    /// taken, or when to try again (the next minute, `spread` ms in).
    pub(super) async fn take_rate_key(
        &self,
        tenant: &str,
        key: &str,
        per_minute: u32,
        spread: i64,
    ) -> Result<Option<i64>, EngineError> {
        let now = db::now_ms();
        let window = now - now.rem_euclid(RATE_WINDOW_MS);
        let mut conn = self.db.writer().await?;
        let taken =
            db::state::take_rate(&mut conn, tenant, key, window, i64::from(per_minute)).await?;
        Ok((!taken).then_some(window + RATE_WINDOW_MS + spread))
    }

    #[tracing::instrument(skip_all, fields(run_id = %step.run_id, step_id = %step.step_id, attempt = step.attempts))]
    async fn execute(self: &Arc<Self>, step: StepRow, snapshot: Option<Arc<Snapshot>>) {
        let mut rendered = None;
        let (outcome, attempt) = match self.prepare_and_run(&step, snapshot, &mut rendered).await {
            Ok(ran) => ran,
            Err(e) => {
                tracing::error!(error = %e, "could not run the step; it will be retried after its lease expires");
                return;
            }
        };
        let finished = Finished {
            step,
            outcome,
            attempt,
            rendered,
        };
        if self.finished.send(finished).is_err() {
            tracing::error!(
                "the recorder stopped; the attempt will be retried after its lease expires"
            );
        }
    }

    async fn prepare_and_run(
        self: &Arc<Self>,
        step: &StepRow,
        snapshot: Option<Arc<Snapshot>>,
        rendered: &mut Option<String>,
    ) -> Result<(Outcome, Option<Attempt>), EngineError> {
        let snapshot = match snapshot {
            Some(snapshot) => snapshot,
            None => {
                let mut conn = self.db.reader().await?;
                let (run, steps) = db::runs::run_with_steps(&mut conn, &step.run_id)
                    .await?
                    .ok_or_else(|| EngineError::NotFound(format!("run {}", step.run_id)))?;
                Arc::new(Snapshot { run, steps })
            }
        };
        let (run, steps) = (&snapshot.run, &snapshot.steps);
        let definition = self.definition_for_run(run).await?;
        if step.kind == "wait" {
            let due = step.due_at.unwrap_or_else(db::now_ms);
            return Ok((
                Outcome::Completed(json!({"waited_until": rfc3339(due)})),
                None,
            ));
        }
        let (uses, config, timeout_ms, failure) = match step_plan(&definition, &step.step_id, steps)
        {
            Some(plan) => plan,
            None => {
                return Ok((
                    Outcome::Failed(AttemptError::Fatal(format!(
                        "step {:?} is not in the run's definition",
                        step.step_id
                    ))),
                    None,
                ));
            }
        };
        let map = definition
            .step(&step.step_id)
            .filter(|s| s.for_each.is_some() && step.kind != "catch");
        if let Some(def) = map {
            let Some(plugin) = self.find_plugin(&run.tenant_id, &uses).await? else {
                return Ok((
                    Outcome::Failed(AttemptError::Fatal(format!(
                        "plugin {uses} is not available on this host"
                    ))),
                    None,
                ));
            };
            let (token, renewal) = self.track(step);
            let outcome = self
                .run_map(snapshot.clone(), step, def, plugin, uses, token)
                .await;
            renewal.abort();
            lock(&self.running).remove(&(step.run_id.clone(), step.step_id.clone()));
            return Ok((outcome?, None));
        }
        let config = advance::with_scope(run, steps, failure.as_ref(), |scope| {
            config
                .as_ref()
                .map(|c| template::render(c, scope))
                .transpose()
        });
        let config = match config {
            Ok(config) => {
                let config = config.unwrap_or(Value::Object(Default::default()));
                *rendered = Some(config.to_string());
                config
            }
            Err(e) => {
                return Ok((
                    Outcome::Failed(AttemptError::InvalidInput(format!("config: {e}"))),
                    None,
                ));
            }
        };
        let Some(plugin) = self.find_plugin(&run.tenant_id, &uses).await? else {
            return Ok((
                Outcome::Failed(AttemptError::Fatal(format!(
                    "plugin {uses} is not available on this host"
                ))),
                None,
            ));
        };
        if let Err(e) = self.check_config(&step.step_id, &plugin, &config) {
            return Ok((Outcome::Failed(e), None));
        }
        if let Some(deferred) = self.take_rate(run, step, &definition, steps).await? {
            return Ok((deferred, None));
        }
        let mut limits = Limits::DEFAULT;
        if let Some(ms) = timeout_ms {
            limits.timeout = Duration::from_millis(ms);
        }
        let key = (step.run_id.clone(), step.step_id.clone());
        let (token, renewal) = self.track(step);
        // The attempt's span, a child of the run's wherever this runs.
        let span = match run.traceparent.as_deref() {
            Some(traceparent) if crate::telemetry::enabled() => {
                Some(attempt_span(run, step, &plugin, traceparent))
            }
            _ => None,
        };
        let invocation = Invocation {
            context: StepContext {
                tenant: run.tenant_id.clone(),
                run_id: run.id.clone(),
                step_id: step.step_id.clone(),
                attempt: u32::try_from(step.attempts).unwrap_or(u32::MAX),
                idempotency_key: format!("{}/{}", run.id, step.step_id),
            },
            config: &config.to_string(),
            input: &run.input,
            grants: self.plugins.grants(&run.tenant_id, &uses, &plugin),
            services: services::for_attempt(
                &self.db,
                self.config.secrets.clone(),
                &run.tenant_id,
                &run.id,
                &step.step_id,
            ),
            limits,
        };
        let invoke = self
            .runtime
            .invoke_traced(&plugin, invocation, span.clone())
            .instrument(span.clone().unwrap_or_else(tracing::Span::none));
        let result = tokio::select! {
            attempt = invoke => Some(attempt),
            () = token.cancelled() => None,
        };
        if let Some(span) = &span {
            record_attempt(span, result.as_ref());
        }
        renewal.abort();
        lock(&self.running).remove(&key);
        Ok(match result {
            None => (Outcome::Interrupted("interrupted".into()), None),
            Some(attempt) => {
                self.observe(&attempt);
                let outcome = match &attempt.result {
                    Ok(text) => {
                        Outcome::Completed(serde_json::from_str(text).unwrap_or(Value::Null))
                    }
                    Err(e) => Outcome::Failed(e.clone()),
                };
                (outcome, Some(attempt))
            }
        })
    }

    /// Checks a rendered config against the plugin's schema: every problem,
    /// as one invalid-input error.
    pub(super) fn check_config(
        &self,
        step_id: &str,
        plugin: &crate::runtime::Plugin,
        config: &Value,
    ) -> Result<(), AttemptError> {
        let mut problems = Vec::new();
        self.check_against(
            step_id,
            "config",
            &plugin.info.config_schema,
            config,
            &mut problems,
        );
        if problems.is_empty() {
            return Ok(());
        }
        let message = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Err(AttemptError::InvalidInput(message))
    }

    /// The plugin pinned as `uses` for `tenant`; one uploaded on another
    /// host moments ago is found by reading the catalog again.
    async fn find_plugin(
        &self,
        tenant: &str,
        uses: &str,
    ) -> Result<Option<Arc<crate::runtime::Plugin>>, EngineError> {
        let mut found = self.plugins.exact(tenant, uses);
        if found.is_none() && !self.db.exclusive() {
            super::marketplace::load_stored(&self.db, &self.runtime, &self.plugins).await?;
            found = self.plugins.exact(tenant, uses);
        }
        Ok(found)
    }

    /// Registers an attempt of `step` as running here (so a stop can
    /// interrupt it) and renews its lease: the token that interrupts it,
    /// and the renewal to abort once it ends.
    fn track(self: &Arc<Self>, step: &StepRow) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let token = CancellationToken::new();
        let key = (step.run_id.clone(), step.step_id.clone());
        lock(&self.running).insert(key, token.clone());
        let renewal = self
            .clone()
            .renew_while_running(step.clone(), token.clone());
        (token, renewal)
    }

    /// A sampled hot-path transaction's span (`operation`: claim, record).
    fn db_span(&self, operation: &'static str) -> tracing::Span {
        let system = match self.db.backend() {
            db::Backend::Sqlite => "sqlite",
            db::Backend::Postgres => "postgresql",
        };
        tracing::info_span!(
            target: crate::telemetry::TARGET,
            "db.transaction",
            otel.kind = "client",
            db.system.name = system,
            db.operation.name = operation,
        )
    }

    pub(super) fn observe(&self, attempt: &Attempt) {
        let counter = if attempt.result.is_ok() {
            &self.metrics.attempts_completed
        } else {
            &self.metrics.attempts_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let ms = attempt.duration.as_secs_f64() * 1e3;
        let bucket = DURATION_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(DURATION_BUCKETS_MS.len());
        self.metrics.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.metrics
            .duration_sum_us
            .fetch_add(attempt.duration.as_micros() as u64, Ordering::Relaxed);
    }

    /// Renews the step's lease every third of its length; cancels `token`
    /// when the lease is lost or the run was stopped from another host.
    fn renew_while_running(
        self: Arc<Self>,
        step: StepRow,
        token: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let every = (self.config.lease / 3).min(Duration::from_secs(1));
            loop {
                tokio::time::sleep(every).await;
                let until = db::now_ms() + self.config.lease.as_millis() as i64;
                let renewed = match self.db.writer().await {
                    Ok(mut conn) => {
                        db::runs::renew_lease(
                            &mut conn,
                            &step.run_id,
                            &step.step_id,
                            &self.config.host_id,
                            until,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                let stopped = match self.db.reader().await {
                    Ok(mut conn) => db::runs::get_run_unscoped(&mut conn, &step.run_id)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|r| {
                            r.status == "terminated"
                                || (r.status == "failed" && step.kind != "catch")
                        }),
                    Err(_) => false,
                };
                if matches!(renewed, Ok(false)) || stopped {
                    token.cancel();
                    return;
                }
            }
        })
    }

    pub(crate) async fn definition_for_run(
        &self,
        run: &RunRow,
    ) -> Result<Arc<Definition>, EngineError> {
        let cache_key = (
            run.tenant_id.clone(),
            run.workflow_key.clone(),
            run.workflow_version.clone(),
        );
        if let Some(found) = lock(&self.definitions).get(&cache_key) {
            return Ok(found.clone());
        }
        let version = semver::Version::parse(&run.workflow_version).map_err(|e| {
            EngineError::InvalidInput(format!("run {} has a bad version: {e}", run.id))
        })?;
        let found = self
            .get_workflow(
                &run.tenant_id,
                &run.workflow_key,
                &super::workflows::Selector::Exact(version),
            )
            .await?;
        Ok(found.definition)
    }

    /// Records finished attempts, several to a transaction: each one's
    /// outcome, the dependents it makes ready and its events are committed
    /// together before anything they unblock is claimed.
    async fn record_finished(self: Arc<Self>, mut finished: mpsc::UnboundedReceiver<Finished>) {
        while let Some(first) = finished.recv().await {
            let mut batch = vec![first];
            while batch.len() < RECORD_BATCH {
                match finished.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            let mut state = BatchState {
                budget: self
                    .config
                    .max_parallel
                    .saturating_sub(self.in_flight.load(Ordering::SeqCst)),
                running: HashMap::new(),
                unwritten: HashMap::new(),
                claimed: 0,
                holds_tenant_lock: false,
            };
            let result = if crate::telemetry::sample_db() {
                self.record_batch(batch, &mut state)
                    .instrument(self.db_span("record"))
                    .await
            } else {
                self.record_batch(batch, &mut state).await
            };
            // The scheduler only needs this batch if it left steps ready
            // (retries, timers, no room to claim), ended a run (queued runs
            // start) or freed slots for work the scheduler saw due.
            let wake = match &result {
                Ok(runs) => {
                    self.backlog.load(Ordering::SeqCst)
                        || runs.iter().any(|c| {
                            c.steps.iter().any(|s| s.status == "ready")
                                || run_is_terminal(&c.run.status)
                        })
                }
                Err(_) => true,
            };
            match result {
                Ok(runs) => {
                    for change in runs {
                        self.changed(&change.run.id);
                        if crate::telemetry::enabled()
                            && run_is_terminal(&change.run.status)
                            && !run_is_terminal(&change.original_run.status)
                        {
                            crate::telemetry::run_ended(&change.run);
                        }
                        // Dependents claimed in the same transaction start
                        // now, without a round through the scheduler.
                        let version = change.version + i64::from(change.rewrites());
                        let RunChange {
                            run,
                            steps,
                            claimed_next,
                            ..
                        } = change;
                        if claimed_next.is_empty() {
                            continue;
                        }
                        let snapshot = Arc::new(Snapshot { run, steps });
                        if self.db.exclusive() {
                            self.remember(snapshot.clone(), version);
                        }
                        for step in claimed_next {
                            self.dispatch(step, Some(snapshot.clone()));
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not commit attempt results; they will be retried after their leases expire")
                }
            }
            if wake {
                self.wake.notify_one();
            }
        }
    }

    /// Keeps a run's state as just committed, for the record of the steps
    /// it dispatched. Entries leave when those steps are recorded; an
    /// attempt that never is (its lease expires) leaves one behind, so the
    /// map is emptied if it outgrows what can be in flight.
    fn remember(&self, snapshot: Arc<Snapshot>, version: i64) {
        let mut recorded = lock(&self.recorded);
        if recorded.len() > 2 * self.config.max_parallel + 64 {
            recorded.clear();
        }
        recorded.insert(snapshot.run.id.clone(), Recorded { snapshot, version });
    }

    /// One recording transaction in as few round trips to the writer's
    /// thread as SQLite allows: `BEGIN IMMEDIATE` and the read of every run
    /// of the batch in one, the writes and `COMMIT` in another (a third
    /// only when a run ended and queued runs are released). The transaction
    /// is managed by hand for that: any error rolls it back, and a
    /// connection that cannot roll back is closed rather than reused.
    async fn record_batch(
        &self,
        batch: Vec<Finished>,
        state: &mut BatchState,
    ) -> Result<Vec<RunChange>, EngineError> {
        let mut conn = db::HandTx::new(self.db.writer().await?);
        let mut ids: Vec<&str> = batch.iter().map(|f| f.step.run_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        // Runs whose state this host last wrote are read again only if
        // their version moved since (SQLite: one host owns the database).
        let mut held: Vec<(String, Recorded)> = if self.db.exclusive() {
            let mut recorded = lock(&self.recorded);
            ids.iter()
                .filter_map(|id| recorded.remove_entry(*id))
                .collect()
        } else {
            Vec::new()
        };
        let known: Vec<(&str, i64)> = held
            .iter()
            .map(|(id, r)| (id.as_str(), r.version))
            .collect();
        let unknown: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !known.iter().any(|(k, _)| k == id))
            .collect();
        let read = db::runs::begin_and_read_runs(&mut conn, &unknown, &known)
            .await
            .map(|(read, current)| {
                let current: Vec<String> = current.into_iter().map(str::to_owned).collect();
                (read, current)
            });
        let result: Result<Vec<RunChange>, EngineError> = async {
            // Each attempt changes its run in memory; the batch is written
            // at the end.
            let (read, current) = read?;
            let mut runs: Vec<RunChange> = read
                .into_iter()
                .map(|r| RunChange::new(r.run, r.steps, r.version))
                .collect();
            for (id, recorded) in held.drain(..) {
                if current.contains(&id) {
                    let Snapshot { run, steps } = Arc::try_unwrap(recorded.snapshot)
                        .unwrap_or_else(|shared| Snapshot {
                            run: shared.run.clone(),
                            steps: shared.steps.clone(),
                        });
                    runs.push(RunChange::new(run, steps, recorded.version));
                }
            }
            let mut attempts = Vec::new();
            for finished in batch {
                let Some(change) = runs.iter_mut().find(|c| c.run.id == finished.step.run_id)
                else {
                    continue;
                };
                let (run_id, step_id) =
                    (finished.step.run_id.clone(), finished.step.step_id.clone());
                if let Err(e) = self
                    .record_in(&mut conn, change, finished, &mut attempts, state)
                    .await
                {
                    tracing::error!(%run_id, %step_id, error = %e,
                        "could not record an attempt; it will be retried after its lease expires");
                }
            }
            runs.retain(RunChange::changed);
            self.write_batch(&mut conn, &attempts, &runs, db::now_ms())
                .await?;
            Ok(runs)
        }
        .await;
        match result {
            Ok(_) => conn.committed(),
            Err(_) => conn.abandon().await,
        }
        result
    }

    /// Records one attempt's outcome and moves its run on, in memory:
    /// `change` gets the new state, the events and the steps this made
    /// ready that this host claimed at once (at most `budget`, within the
    /// tenant's cap); `attempts` gets the attempt rows. On an error
    /// `change` is left as it was.
    async fn record_in(
        &self,
        tx: &mut db::Conn,
        change: &mut RunChange,
        finished: Finished,
        attempts: &mut Vec<AttemptRow>,
        state: &mut BatchState,
    ) -> Result<(), EngineError> {
        let Finished {
            step: claimed,
            outcome,
            attempt,
            rendered,
        } = finished;
        let claimed = &claimed;
        let now = db::now_ms();
        let mut run = change.run.clone();
        let mut steps = change.steps.clone();
        let Some(index) = steps.iter().position(|s| s.step_id == claimed.step_id) else {
            return Ok(());
        };
        {
            let current = &steps[index];
            if current.status != "running"
                || current.lease_owner.as_deref() != Some(&self.config.host_id)
                || current.attempts != claimed.attempts
            {
                tracing::warn!("the lease was lost before the result was recorded; dropping it");
                return Ok(());
            }
        }
        let definition = self.definition_for_run(&run).await?;
        let mut events = Vec::new();
        let logs = attempt
            .as_ref()
            .map(|a| serde_json::to_string(&a.logs).unwrap_or_default());
        let (attempt_status, error_kind, error_text) = match &outcome {
            Outcome::Completed(_) => ("completed", None, None),
            Outcome::Failed(e) => ("failed", Some(e.kind().to_owned()), Some(e.to_string())),
            Outcome::Interrupted(why) => (
                "interrupted",
                Some("interrupted".to_owned()),
                Some(why.clone()),
            ),
            Outcome::Held => ("held", None, None),
            Outcome::Deferred { until, key } => (
                "rate_limited",
                Some("rate_limited".to_owned()),
                Some(format!(
                    "rate limit {key:?} is used up for this minute; waiting until {}",
                    rfc3339(*until)
                )),
            ),
        };
        // This step no longer runs (a count taken earlier in the transaction
        // still included it).
        if let Some(n) = state.running.get_mut(&run.tenant_id) {
            *n -= 1;
        }
        *state.unwritten.entry(run.tenant_id.clone()).or_default() -= 1;
        let mut attempt_rows = vec![AttemptRow {
            run_id: run.id.clone(),
            step_id: claimed.step_id.clone(),
            attempt: claimed.attempts,
            status: attempt_status.into(),
            host: Some(self.config.host_id.clone()),
            started_at: now
                - attempt
                    .as_ref()
                    .map_or(0, |a| a.duration.as_millis() as i64),
            ended_at: Some(now),
            error_kind,
            error: error_text,
            logs,
            input: rendered,
        }];

        let step = &mut steps[index];
        step.lease_owner = None;
        step.lease_expires_at = None;
        let duration_ms = attempt.as_ref().map(|a| a.duration.as_millis() as u64);
        match outcome {
            // Not an attempt: the next claim takes this attempt's number
            // again (and its row), and no retry is spent.
            Outcome::Deferred { until, key } => {
                step.status = "ready".into();
                step.due_at = Some(until);
                step.attempts -= 1;
                events.push(Event::step(
                    "step.rate_limited",
                    &step.step_id,
                    json!({"key": key, "until": rfc3339(until)}),
                ));
            }
            // Paused with items left: ready again, which the paused run
            // holds (`advance`), and no attempt spent.
            Outcome::Held => {
                step.status = "ready".into();
                step.due_at = Some(now);
                step.attempts -= 1;
            }
            Outcome::Completed(output) => {
                step.status = "completed".into();
                step.output = Some(output.to_string());
                step.error = None;
                step.ended_at = Some(now);
                events.push(Event::step(
                    "step.completed",
                    &step.step_id,
                    json!({"attempt": step.attempts, "duration_ms": duration_ms}),
                ));
            }
            Outcome::Interrupted(why) => {
                step.status = "cancelled".into();
                step.ended_at = Some(now);
                step.error = Some(json!({"kind": "interrupted", "message": why}).to_string());
                events.push(Event::step(
                    "step.cancelled",
                    &step.step_id,
                    json!({"attempt": step.attempts, "reason": why}),
                ));
            }
            Outcome::Failed(error) => {
                let step_def = definition.step(&step.step_id);
                let max_attempts = step_def
                    .and_then(|s| s.retry.as_ref())
                    .map_or(1, |r| i64::from(r.max_attempts));
                let error_json = json!({"kind": error.kind(), "message": error.to_string(), "attempt": step.attempts});
                if error.is_retryable()
                    && step.attempts < max_attempts
                    && !run_is_terminal(&run.status)
                {
                    let backoff = step_def
                        .and_then(|s| s.retry.as_ref())
                        .map(|r| r.backoff.clone())
                        .unwrap_or_default();
                    let delay =
                        backoff.delay_ms(u32::try_from(step.attempts + 1).unwrap_or(u32::MAX));
                    step.status = "ready".into();
                    step.due_at = Some(now + delay as i64);
                    step.error = Some(error_json.to_string());
                    events.push(Event::step(
                        "step.retrying",
                        &step.step_id,
                        json!({"attempt": step.attempts, "error": error_json, "next_attempt_at": rfc3339(now + delay as i64)}),
                    ));
                } else {
                    step.status = "failed".into();
                    step.ended_at = Some(now);
                    step.error = Some(error_json.to_string());
                    events.push(Event::step(
                        "step.failed",
                        &step.step_id,
                        error_json.clone(),
                    ));
                    let has_catch =
                        step_def.is_some_and(|s| s.catch.is_some()) && step.kind != "catch";
                    let catch = catch_id(&step.step_id);
                    if has_catch
                        && let Some(existing) = steps.iter_mut().find(|s| s.step_id == catch)
                    {
                        // A retried step that fails again compensates again.
                        existing.status = "ready".into();
                        existing.due_at = Some(now);
                        existing.output = None;
                        existing.error = None;
                        existing.ended_at = None;
                    } else if has_catch {
                        // Appended to `steps` so that the state machine sees
                        // the compensation pending; written as a new step.
                        let mut step =
                            StepRow::new(&run.id, catch, steps[index].position, "catch", "ready");
                        step.due_at = Some(now);
                        steps.push(step);
                    }
                }
            }
        }
        let mut claimed_next = Vec::new();
        if !run_is_terminal(&run.status) {
            events.extend(advance::advance(&definition, &mut run, &mut steps, now));
            let due: Vec<usize> = (0..steps.len())
                .filter(|&i| {
                    steps[i].status == "ready" && steps[i].due_at.is_some_and(|d| d <= now)
                })
                .collect();
            if !due.is_empty() && state.budget > 0 {
                // A host that owns its database alone (SQLite) runs every
                // running step itself: what it has in flight plus what this
                // transaction claimed bounds any tenant's count, and when
                // that is under the cap no count is needed.
                let local = self.in_flight.load(Ordering::SeqCst) + state.claimed;
                let running = match state.running.get(&run.tenant_id) {
                    Some(n) => *n,
                    None if self.db.exclusive() && local < self.config.tenant_max_running => {
                        local as i64
                    }
                    None if !self.capped() => 0,
                    None => {
                        // Shared with other hosts: the tenant's lock first.
                        // A transaction waits for a tenant's lock only
                        // while it holds none (the first tenant of the
                        // batch); for more it takes only a free one (if
                        // another transaction claims for that tenant now,
                        // the steps stay ready for the scheduler). So no
                        // two transactions wait for each other's tenant
                        // locks: see ARCHITECTURE.md.
                        let wait = !state.holds_tenant_lock;
                        let counted =
                            db::runs::lock_and_count_running(tx, &run.tenant_id, wait).await?;
                        state.holds_tenant_lock |= counted.is_some();
                        let n = match counted {
                            // The database still counts this batch's
                            // finished steps and not its claims: both are
                            // written later.
                            Some(n) => {
                                n + state.unwritten.get(&run.tenant_id).copied().unwrap_or(0)
                            }
                            None => i64::MAX,
                        };
                        state.running.insert(run.tenant_id.clone(), n);
                        n
                    }
                };
                let room = self
                    .config
                    .tenant_max_running
                    .saturating_sub(usize::try_from(running).unwrap_or(0))
                    .min(state.budget);
                for &i in due.iter().take(room) {
                    let step = &mut steps[i];
                    step.status = "running".into();
                    step.lease_owner = Some(self.config.host_id.clone());
                    step.lease_expires_at = Some(now + self.config.lease.as_millis() as i64);
                    step.attempts += 1;
                    step.started_at.get_or_insert(now);
                    claimed_next.push(step.clone());
                    events.push(Event::step(
                        "step.started",
                        &step.step_id,
                        self.started_data(step),
                    ));
                }
                state.budget -= claimed_next.len();
                state.claimed += claimed_next.len();
                if let Some(n) = state.running.get_mut(&run.tenant_id) {
                    *n = n.saturating_add(claimed_next.len() as i64);
                }
                *state.unwritten.entry(run.tenant_id.clone()).or_default() +=
                    claimed_next.len() as i64;
            }
        }
        attempt_rows.extend(claimed_next.iter().map(|s| self.started_attempt(s, now)));
        attempts.extend(attempt_rows);
        change.run = run;
        change.steps = steps;
        change.events.extend(events);
        change.claimed_next.extend(claimed_next);
        Ok(())
    }

    /// Writes a recording batch and commits it, in one round trip (one
    /// multi-statement query: the attempts, every changed or new step, each
    /// changed run, the events, `COMMIT`); when a run ended, releases queued
    /// runs of its workflow before committing.
    async fn write_batch(
        &self,
        tx: &mut db::Conn,
        attempts: &[AttemptRow],
        runs: &[RunChange],
        now: i64,
    ) -> Result<(), EngineError> {
        let written: Vec<&StepRow> = runs.iter().flat_map(RunChange::written_steps).collect();
        let events: Vec<db::runs::RunEvent<'_>> = runs
            .iter()
            .flat_map(|c| event_rows(&c.run, &c.events))
            .collect();
        // One round trip for all of it.
        let mut writes = db::runs::Writes::default();
        writes.insert_attempts(attempts).upsert_steps(&written);
        for change in runs.iter().filter(|c| c.original_run != c.run) {
            writes.update_run(&change.run);
        }
        writes.append_events(&events, now);
        // Each workflow once, in order: releasing takes the workflow's lock,
        // and two transactions taking locks in one order never deadlock.
        let mut ended: Vec<(&str, &str, Option<&str>)> = runs
            .iter()
            .filter(|c| run_is_terminal(&c.run.status) && !run_is_terminal(&c.original_run.status))
            .map(|c| {
                (
                    c.run.tenant_id.as_str(),
                    c.run.workflow_key.as_str(),
                    c.run.concurrency_key.as_deref(),
                )
            })
            .collect();
        ended.sort_unstable();
        ended.dedup();
        if ended.is_empty() {
            writes.commit();
            writes.execute(tx).await?;
            return Ok(());
        }
        writes.execute(tx).await?;
        for (tenant, workflow, key) in ended {
            self.release_queued(tx, tenant, workflow, key, now).await?;
        }
        db::runs::Writes::default().commit().execute(tx).await?;
        Ok(())
    }

    /// Writes the steps and run that changed and the events. `steps` is
    /// `original` after the change; steps past `original`'s length are new.
    #[allow(
        clippy::too_many_arguments,
        reason = "one transaction's worth of changes"
    )]
    pub(crate) async fn write_changes(
        &self,
        tx: &mut db::Conn,
        original_run: &RunRow,
        run: &RunRow,
        original: &[StepRow],
        steps: &[StepRow],
        events: &[Event],
        now: i64,
    ) -> Result<(), EngineError> {
        self.write_rows(tx, original_run, run, original, steps, events, now)
            .await?;
        if run_is_terminal(&run.status) && !run_is_terminal(&original_run.status) {
            // Written, about to be committed by the caller.
            crate::telemetry::run_ended(run);
            let key = run.concurrency_key.as_deref();
            self.release_queued(tx, &run.tenant_id, &run.workflow_key, key, now)
                .await?;
        }
        Ok(())
    }

    /// [`Self::write_changes`] in `tx`, then commits it and tells those
    /// waiting on the run and the scheduler.
    #[allow(clippy::too_many_arguments, reason = "the parts of one change")]
    pub(crate) async fn commit_changes(
        &self,
        mut tx: db::Tx,
        original_run: &RunRow,
        run: &RunRow,
        original: &[StepRow],
        steps: &[StepRow],
        events: &[Event],
        now: i64,
    ) -> Result<(), EngineError> {
        self.write_changes(&mut tx, original_run, run, original, steps, events, now)
            .await?;
        tx.commit().await.map_err(crate::db::DbError::from)?;
        self.changed(&run.id);
        self.wake.notify_one();
        Ok(())
    }

    /// [`Self::write_changes`] without releasing queued runs.
    #[allow(clippy::too_many_arguments, reason = "the parts of one change")]
    pub(crate) async fn write_rows(
        &self,
        tx: &mut db::Conn,
        original_run: &RunRow,
        run: &RunRow,
        original: &[StepRow],
        steps: &[StepRow],
        events: &[Event],
        now: i64,
    ) -> Result<(), EngineError> {
        // Changed and new steps, the run and the events in one round trip:
        // the fewer round trips per step, the faster the engine.
        let written: Vec<&StepRow> = changed_steps(original, steps).collect();
        let rows = event_rows(run, events);
        let mut writes = db::runs::Writes::default();
        writes.upsert_steps(&written);
        if original_run != run {
            writes.update_run(run);
        }
        writes.append_events(&rows, now);
        writes.execute(tx).await?;
        Ok(())
    }

    /// Interrupts attempts of `run_id` running on this host.
    pub(crate) fn interrupt(&self, run_id: &str) {
        for ((run, _), token) in lock(&self.running).iter() {
            if run == run_id {
                token.cancel();
            }
        }
    }
}

/// A run's events as rows to append.
pub(crate) fn event_rows<'a>(run: &'a RunRow, events: &'a [Event]) -> Vec<db::runs::RunEvent<'a>> {
    events
        .iter()
        .map(|e| {
            (
                run.tenant_id.as_str(),
                run.id.as_str(),
                (e.kind, e.step_id.as_deref(), &e.data),
            )
        })
        .collect()
}

/// The steps of `steps` that differ from `original` or are new (past its
/// length).
fn changed_steps<'a>(
    original: &'a [StepRow],
    steps: &'a [StepRow],
) -> impl Iterator<Item = &'a StepRow> {
    original
        .iter()
        .zip(steps)
        .filter(|(before, after)| before != after)
        .map(|(_, after)| after)
        .chain(&steps[original.len().min(steps.len())..])
}

/// A run through a recording batch: as read, as changed so far, the events
/// to append and the steps claimed to start once the batch commits.
struct RunChange {
    original_run: RunRow,
    run: RunRow,
    original: Vec<StepRow>,
    steps: Vec<StepRow>,
    events: Vec<Event>,
    claimed_next: Vec<StepRow>,
    /// The run's version as read.
    version: i64,
}

impl RunChange {
    fn new(run: RunRow, steps: Vec<StepRow>, version: i64) -> Self {
        Self {
            original_run: run.clone(),
            run,
            original: steps.clone(),
            steps,
            events: Vec::new(),
            claimed_next: Vec::new(),
            version,
        }
    }

    /// Whether writing this change raises the run's version: its row or a
    /// step changed.
    fn rewrites(&self) -> bool {
        self.original_run != self.run || self.written_steps().next().is_some()
    }

    fn changed(&self) -> bool {
        !self.events.is_empty() || self.original_run != self.run || self.original != self.steps
    }

    fn written_steps(&self) -> impl Iterator<Item = &StepRow> {
        changed_steps(&self.original, &self.steps)
    }
}

/// What to run for a step: pinned plugin, config template, timeout, and the
/// failure a catch step handles.
/// Pinned plugin, config template, timeout, and the failure a catch handles.
type StepPlan = (String, Option<Value>, Option<u64>, Option<Value>);

fn step_plan(def: &Definition, step_id: &str, steps: &[StepRow]) -> Option<StepPlan> {
    if let Some(base) = step_id.strip_suffix(".catch")
        && let Some(StepDef {
            catch: Some(catch),
            timeout_ms,
            ..
        }) = def.step(base)
    {
        let failed = steps.iter().find(|s| s.step_id == base);
        let error: Value = failed
            .and_then(|s| s.error.as_deref())
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or(Value::Null);
        let failure = json!({"step": base, "error": error["message"], "kind": error["kind"]});
        return Some((
            catch.plugin.clone()?,
            catch.config.clone(),
            *timeout_ms,
            Some(failure),
        ));
    }
    let step = def.step(step_id)?;
    Some((
        step.plugin.clone()?,
        step.config.clone(),
        step.timeout_ms,
        None,
    ))
}
