//! Executing: one claimed step's attempt, from the run's state to the
//! plugin's result, while its lease is renewed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::super::advance;
use super::super::definition::{Definition, StepDef};
use super::super::{DURATION_BUCKETS_MS, Engine, EngineError, lock, rfc3339, services, template};
use super::claim::rate_key;
use super::{Finished, Outcome, Snapshot, ToRecord};
use crate::db;
use crate::db::runs::{RunRow, RunStatus, StepRow};
use crate::runtime::{Attempt, AttemptError, Invocation, Limits, StepContext};

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

impl Engine {
    #[tracing::instrument(skip_all, fields(run_id = %step.run_id, step_id = %step.step_id, attempt = step.attempts))]
    pub(super) async fn execute(self: &Arc<Self>, step: StepRow, snapshot: Option<Arc<Snapshot>>) {
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
        if self
            .to_record
            .send(ToRecord::Finished(Box::new(finished)))
            .is_err()
        {
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
        let StepPlan {
            uses,
            config,
            timeout_ms,
            failure,
        } = match step_plan(&definition, &step.step_id, steps) {
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
        // The config and the rate limit's key, in one scope.
        let rate_limit = definition
            .step(&step.step_id)
            .and_then(|s| s.rate_limit.as_ref());
        let (config, rate_key) = advance::with_scope(run, steps, failure.as_ref(), |scope| {
            let config = config
                .as_ref()
                .map(|c| template::render(c, scope))
                .transpose();
            (config, rate_limit.and_then(|l| rate_key(&l.key, scope)))
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
        if let (Some(limit), Some(key)) = (rate_limit, rate_key)
            && let Some(deferred) = self
                .take_rate(&run.tenant_id, step, limit.per_minute, key)
                .await?
        {
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
                &self.to_record,
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
    pub(in crate::engine) fn check_config(
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
            super::super::marketplace::load_stored(&self.db, &self.runtime, &self.plugins).await?;
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

    pub(in crate::engine) fn observe(&self, attempt: &Attempt) {
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
                            r.status == RunStatus::Terminated
                                || (r.status == RunStatus::Failed && step.kind != "catch")
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
}

/// What to run for a step, from its definition.
struct StepPlan {
    /// The plugin pinned, `name@version`.
    uses: String,
    /// The config template, rendered against the run's state.
    config: Option<Value>,
    timeout_ms: Option<u64>,
    /// For a catch step, the failure it handles (`{{failure}}`).
    failure: Option<Value>,
}

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
        return Some(StepPlan {
            uses: catch.plugin.clone()?,
            config: catch.config.clone(),
            timeout_ms: *timeout_ms,
            failure: Some(failure),
        });
    }
    let step = def.step(step_id)?;
    Some(StepPlan {
        uses: step.plugin.clone()?,
        config: step.config.clone(),
        timeout_ms: step.timeout_ms,
        failure: None,
    })
}
