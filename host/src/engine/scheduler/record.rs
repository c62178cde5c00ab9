//! Recording: finished attempts committed several to a transaction, each
//! with the state it moves its run to, its events, and the dependents this
//! host claims at once; the progress reports of running attempts go in
//! the same transactions.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::super::advance::{self, Event, catch_id};
use super::super::definition::Definition;
use super::super::{Engine, EngineError, lock, rfc3339};
use super::{Finished, Outcome, Recorded, Snapshot, ToRecord, event_rows};
use crate::db;
use crate::db::runs::{AttemptRow, AttemptStatus, ProgressEvent, RunRow, StepRow, StepStatus};

/// Most attempt results committed in one transaction.
const RECORD_BATCH: usize = 64;

/// How long a progress report whose run another transaction held is kept
/// for a later batch (Postgres) before it is dropped, from when it was
/// reported; and how soon a recorder with nothing else to do tries such
/// reports again.
const BUSY_REPORT_KEPT_MS: i64 = 5_000;
const BUSY_REPORT_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// What one recording transaction tracks across its attempts.
#[derive(Default)]
struct BatchState {
    /// Running steps per tenant: counted once per transaction, then kept
    /// up to date as attempts finish and dependents are claimed.
    running: HashMap<String, i64>,
    /// Per tenant, running steps gained (claims) less those lost (finished
    /// attempts) in this batch: its writes come at the end, so a count
    /// read from the database mid-batch is corrected by this.
    unwritten: HashMap<String, i64>,
    /// Steps claimed so far in this transaction: their slots are taken
    /// (`in_flight`) as they are claimed, and given back if it fails.
    claimed: usize,
    /// The gates of the tenants this transaction claims for (Postgres
    /// under a tenant cap), held until it ends.
    gates: Vec<tokio::sync::OwnedMutexGuard<()>>,
    /// Progress reports not written because another transaction held their
    /// run (Postgres): for a later batch.
    busy: Vec<ProgressEvent>,
}

impl Engine {
    /// Records finished attempts, several to a transaction: each one's
    /// outcome, the dependents it makes ready and its events are committed
    /// together before anything they unblock is claimed. Progress reports
    /// received with them (up to four per attempt of a full batch) go in
    /// the same transaction, first. A report whose run another transaction
    /// holds (Postgres) does not wait for it: it goes with a later batch,
    /// first, for up to [`BUSY_REPORT_KEPT_MS`] after it was reported.
    pub(super) async fn record_finished(
        self: Arc<Self>,
        mut received: mpsc::UnboundedReceiver<ToRecord>,
    ) {
        let mut busy: Vec<ProgressEvent> = Vec::new();
        loop {
            // The channel closes when the host stops.
            let first = if busy.is_empty() {
                match received.recv().await {
                    Some(item) => Some(item),
                    None => break,
                }
            } else {
                // Reports kept from the last batch are tried again with the
                // next item, or alone if none comes soon.
                match tokio::time::timeout(BUSY_REPORT_RETRY, received.recv()).await {
                    Ok(Some(item)) => Some(item),
                    Ok(None) => break,
                    Err(_) => None,
                }
            };
            let mut batch = Vec::new();
            let mut progress = std::mem::take(&mut busy);
            let mut next = first;
            while let Some(item) = next.take() {
                match item {
                    ToRecord::Finished(finished) => batch.push(*finished),
                    ToRecord::Progress(report) => progress.push(report),
                }
                if batch.len() < RECORD_BATCH && progress.len() < RECORD_BATCH * 4 {
                    next = received.try_recv().ok();
                }
            }
            let batch_len = batch.len();
            let mut state = BatchState::default();
            let result = if crate::telemetry::sample_db() {
                self.record_batch(batch, &mut progress, &mut state)
                    .instrument(self.db_span("record"))
                    .await
            } else {
                self.record_batch(batch, &mut progress, &mut state).await
            };
            let now = db::now_ms();
            let (kept, stale): (Vec<_>, Vec<_>) = std::mem::take(&mut state.busy)
                .into_iter()
                .partition(|p| now - p.at < BUSY_REPORT_KEPT_MS);
            busy = kept;
            if !stale.is_empty() {
                tracing::debug!(
                    progress_reports = stale.len(),
                    "dropped progress reports: their runs were held by other transactions (or are gone)"
                );
            }
            // The scheduler only needs this batch if it left steps ready
            // (retries, timers, no room to claim), ended a run (queued runs
            // start) or freed slots for work the scheduler saw due.
            // A batch of progress reports alone changes no step.
            let wake = match &result {
                Ok(_) if batch_len == 0 => false,
                Ok(runs) => {
                    self.backlog.load(Ordering::SeqCst)
                        || runs.iter().any(|c| {
                            c.steps.iter().any(|s| s.status == StepStatus::Ready)
                                || c.run.status.is_terminal()
                        })
                }
                Err(_) => true,
            };
            match result {
                Ok(runs) => {
                    for change in runs {
                        self.changed_to(&change.run);
                        if crate::telemetry::enabled()
                            && change.run.status.is_terminal()
                            && !change.original_run.status.is_terminal()
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
                        // Their slots were taken as they were claimed.
                        for step in claimed_next {
                            self.run_claimed(step, Some(snapshot.clone()));
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, progress_reports = progress.len(),
                        "could not commit attempt results; they will be retried after their leases expire, and the progress reports with them are dropped")
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

    /// One recording transaction (finished attempts and progress reports)
    /// in as few round trips to the writer's thread as SQLite allows. When
    /// this host holds every run of the batch as it last wrote it (or the
    /// batch is only progress), nothing is read: `BEGIN IMMEDIATE`, a
    /// check of each run's version, the writes and `COMMIT` go in one
    /// round trip. Otherwise `BEGIN IMMEDIATE` (on Postgres, with the
    /// runs' locks) and the read of the runs go in one, and the writes and
    /// `COMMIT` in another. Either way, a run that ended and releases
    /// queued runs adds the reads and writes of that release. The
    /// transaction is managed by hand, so that `BEGIN` shares a round
    /// trip: any error rolls it back, and a connection that cannot roll
    /// back is closed rather than reused.
    ///
    /// Reports whose runs another transaction holds (Postgres) are moved
    /// from `progress` to `state.busy`, unwritten.
    async fn record_batch(
        &self,
        batch: Vec<Finished>,
        progress: &mut Vec<ProgressEvent>,
        state: &mut BatchState,
    ) -> Result<Vec<RunChange>, EngineError> {
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
        if self.db.exclusive() && held.len() == ids.len() {
            // If a run's version moved (a call through the API changed it
            // meanwhile), the check fails, the transaction rolls back and
            // the batch is recorded again from what the database holds.
            let versions: Vec<(String, i64)> =
                held.iter().map(|(id, r)| (id.clone(), r.version)).collect();
            let runs = held.drain(..).map(|(_, r)| RunChange::held(r)).collect();
            let mut conn = db::HandTx::new(self.db.writer().await?);
            let result = self
                .record_runs(&mut conn, runs, &batch, progress, state, Some(&versions))
                .await;
            self.end_batch(conn, result.is_ok(), state).await;
            match result {
                Ok(runs) => return Ok(runs),
                Err(e) => {
                    *state = BatchState::default();
                    if db::runs::is_version_moved(&e) {
                        tracing::debug!(
                            "a run changed since it was recorded here; reading it again"
                        );
                    } else {
                        tracing::warn!(error = %e, "could not record attempt results; reading their runs and trying again");
                    }
                }
            }
        }
        let mut conn = db::HandTx::new(self.db.writer().await?);
        let known: Vec<(&str, i64)> = held
            .iter()
            .map(|(id, r)| (id.as_str(), r.version))
            .collect();
        let unknown: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !known.iter().any(|(k, _)| k == id))
            .collect();
        // Runs that only get progress events are locked too where free
        // (Postgres); the reports of the others wait for a later batch.
        let reported: Vec<&str> = progress.iter().map(|p| p.run_id.as_str()).collect();
        let read = db::runs::begin_and_read_runs(&mut conn, &unknown, &known, &reported)
            .await
            .map(|read| {
                let current: Vec<String> = read.current.into_iter().map(str::to_owned).collect();
                (read.runs, current, read.tried)
            });
        if let Ok((_, _, tried)) = &read {
            let (now, busy) = std::mem::take(progress)
                .into_iter()
                .partition(|p| ids.contains(&p.run_id.as_str()) || tried.contains(&p.run_id));
            *progress = now;
            state.busy = busy;
        }
        let result: Result<Vec<RunChange>, EngineError> = async {
            let (read, current, _) = read?;
            let mut runs: Vec<RunChange> = read
                .into_iter()
                .map(|r| RunChange::new(r.run, r.steps, r.version))
                .collect();
            runs.extend(
                held.drain(..)
                    .filter(|(id, _)| current.contains(id))
                    .map(|(_, recorded)| RunChange::held(recorded)),
            );
            self.record_runs(&mut conn, runs, &batch, progress, state, None)
                .await
        }
        .await;
        self.end_batch(conn, result.is_ok(), state).await;
        result
    }

    /// Ends a recording transaction as its writes went: committed, or
    /// rolled back with the slots its claims took given back.
    async fn end_batch(&self, conn: db::HandTx, committed: bool, state: &mut BatchState) {
        if committed {
            conn.committed();
        } else {
            conn.abandon().await;
            self.release_slots(state.claimed);
        }
        state.gates.clear();
    }

    /// Records each attempt of `batch` into its run of `runs`, in memory,
    /// then writes the progress reports and the runs that changed and
    /// commits: the transaction is open on `conn`, or begun by the writes
    /// when `held` (the runs' versions as held) is given.
    async fn record_runs(
        &self,
        conn: &mut db::Conn,
        mut runs: Vec<RunChange>,
        batch: &[Finished],
        progress: &[ProgressEvent],
        state: &mut BatchState,
        held: Option<&[(String, i64)]>,
    ) -> Result<Vec<RunChange>, EngineError> {
        let mut attempts = Vec::new();
        for finished in batch {
            let Some(change) = runs.iter_mut().find(|c| c.run.id == finished.step.run_id) else {
                continue;
            };
            if let Err(e) = self
                .record_in(conn, change, finished, &mut attempts, state)
                .await
            {
                tracing::error!(run_id = %finished.step.run_id, step_id = %finished.step.step_id, error = %e,
                    "could not record an attempt; it will be retried after its lease expires");
            }
        }
        runs.retain(RunChange::changed);
        self.write_batch(conn, &attempts, &runs, progress, held, db::now_ms())
            .await?;
        Ok(runs)
    }

    /// Records one attempt's outcome and moves its run on, in memory:
    /// `change` gets the new state, the events and the steps this made
    /// ready that this host claimed at once (within its free slots and the
    /// tenant's cap); `attempts` gets the attempt rows. On an error
    /// (the run's definition cannot be read) `change` is left as it was.
    /// The run's steps are changed in place: recording a step costs the
    /// same whatever the length of its run, bar `advance`'s walk.
    async fn record_in(
        &self,
        tx: &mut db::Conn,
        change: &mut RunChange,
        finished: &Finished,
        attempts: &mut Vec<AttemptRow>,
        state: &mut BatchState,
    ) -> Result<(), EngineError> {
        let now = db::now_ms();
        let Some(index) = change
            .steps
            .iter()
            .position(|s| s.step_id == finished.step.step_id)
        else {
            return Ok(());
        };
        let current = &change.steps[index];
        if current.status != StepStatus::Running
            || current.lease_owner.as_deref() != Some(&self.config.host_id)
            || current.attempts != finished.step.attempts
        {
            tracing::warn!("the lease was lost before the result was recorded; dropping it");
            return Ok(());
        }
        let definition = self.definition_for_run(&change.run).await?;
        let (run, steps) = (&mut change.run, &mut change.steps);
        // This step no longer runs (a count taken earlier in the transaction
        // still included it).
        if let Some(n) = state.running.get_mut(&run.tenant_id) {
            *n -= 1;
        }
        *state.unwritten.entry(run.tenant_id.clone()).or_default() -= 1;
        let mut attempt_rows = vec![self.ended_attempt(finished, now)];
        let duration_ms = finished
            .attempt
            .as_ref()
            .map(|a| a.duration.as_millis() as u64);
        let mut events = apply_outcome(
            &definition,
            run,
            steps,
            index,
            &finished.outcome,
            duration_ms,
            now,
        );
        let mut claimed_next = Vec::new();
        if !run.status.is_terminal() {
            events.extend(advance::advance(&definition, run, steps, now));
            // Without a count of the tenant's running steps nothing is
            // claimed here: the outcome is still recorded, and the steps it
            // made ready wait for the scheduler.
            claimed_next = self
                .claim_due(tx, run, steps, state, now, &mut events)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(run_id = %run.id, error = %e,
                        "could not count the tenant's running steps; the steps this made ready wait for the scheduler");
                    Vec::new()
                });
        }
        attempt_rows.extend(claimed_next.iter().map(|s| self.started_attempt(s, now)));
        attempts.extend(attempt_rows);
        change.events.extend(events);
        change.claimed_next.extend(claimed_next);
        Ok(())
    }

    /// The row of a finished attempt: how it ended, its logs and the config
    /// it ran with.
    fn ended_attempt(&self, finished: &Finished, now: i64) -> AttemptRow {
        let (status, error_kind, error) = match &finished.outcome {
            Outcome::Completed(_) => (AttemptStatus::Completed, None, None),
            Outcome::Failed(e) => (
                AttemptStatus::Failed,
                Some(e.kind().to_owned()),
                Some(e.to_string()),
            ),
            Outcome::Interrupted(why) => (
                AttemptStatus::Interrupted,
                Some("interrupted".to_owned()),
                Some(why.clone()),
            ),
            Outcome::Held => (AttemptStatus::Held, None, None),
            Outcome::Deferred { until, key } => (
                AttemptStatus::RateLimited,
                Some("rate_limited".to_owned()),
                Some(format!(
                    "rate limit {key:?} is used up for this minute; waiting until {}",
                    rfc3339(*until)
                )),
            ),
        };
        let attempt = finished.attempt.as_ref();
        AttemptRow {
            run_id: finished.step.run_id.clone(),
            step_id: finished.step.step_id.clone(),
            attempt: finished.step.attempts,
            status,
            host: Some(self.config.host_id.clone()),
            started_at: now - attempt.map_or(0, |a| a.duration.as_millis() as i64),
            ended_at: Some(now),
            error_kind,
            error,
            logs: attempt.map(|a| serde_json::to_string(&a.logs).unwrap_or_default()),
            input: finished.rendered.clone(),
        }
    }

    /// Claims the steps of `run` that are ready and due, as many as this
    /// host's free slots and the tenant's cap on running steps allow: their
    /// slots are taken, and they are marked running under this host's
    /// lease and returned, to start once the transaction commits.
    async fn claim_due(
        &self,
        tx: &mut db::Conn,
        run: &RunRow,
        steps: &mut [StepRow],
        state: &mut BatchState,
        now: i64,
        events: &mut Vec<Event>,
    ) -> Result<Vec<StepRow>, EngineError> {
        let due = super::claim::due_steps(steps, now);
        // What this host has in flight, this transaction's claims included.
        let local = self.in_flight.load(Ordering::SeqCst);
        if due.is_empty() || local >= self.config.max_parallel {
            return Ok(Vec::new());
        }
        // A host that owns its database alone (SQLite) runs every running
        // step itself: what it has in flight bounds any tenant's count, and
        // when that is under the cap no count is needed.
        let cap = self.config.tenant_max_running;
        let running = match state.running.get(&run.tenant_id) {
            Some(n) => *n,
            None if !self.capped() => 0,
            None if self.db.exclusive() && local < cap => local as i64,
            None => {
                let counted = if self.db.exclusive() {
                    Some(db::runs::count_running(tx, &run.tenant_id).await?)
                } else {
                    self.count_within_share(tx, &run.tenant_id, state).await?
                };
                // The database still counts this batch's finished steps and
                // not its claims: both are written later. No count: no room.
                let unwritten = state.unwritten.get(&run.tenant_id).copied().unwrap_or(0);
                let n = counted.map_or(i64::MAX, |n| n + unwritten);
                state.running.insert(run.tenant_id.clone(), n);
                n
            }
        };
        // Shared with other hosts, this host claims within its share of
        // the tenant's cap, counting only its own running steps: the share
        // cannot change while this transaction holds the tenant's gate.
        let cap = if self.shares_cap() {
            usize::try_from(self.share_of(&run.tenant_id)).unwrap_or(0)
        } else {
            cap
        };
        let room = cap
            .saturating_sub(usize::try_from(running).unwrap_or(0))
            .min(due.len());
        let taken = self.take_slots(room, self.config.max_parallel);
        let claimed: Vec<StepRow> = due
            .iter()
            .take(taken)
            .map(|&i| self.mark_claimed(&mut steps[i], now, events))
            .collect();
        state.claimed += claimed.len();
        if let Some(n) = state.running.get_mut(&run.tenant_id) {
            *n = n.saturating_add(claimed.len() as i64);
        }
        *state.unwritten.entry(run.tenant_id.clone()).or_default() += claimed.len() as i64;
        Ok(claimed)
    }

    /// Postgres under a tenant cap: takes `tenant`'s gate for this
    /// transaction and counts the steps of the tenant this host has
    /// running as committed; `None` (no room) when this host holds no
    /// share of the tenant's cap (the steps stay ready for the scheduler,
    /// whose claim sets one) or the gate is held elsewhere. A transaction
    /// waits for a gate only while it holds none (the first tenant of the
    /// batch); for more it takes only a free one (if the scheduler claims
    /// for that tenant now, the steps stay ready for it). So no two claims
    /// wait for each other: see ARCHITECTURE.md.
    async fn count_within_share(
        &self,
        tx: &mut db::Conn,
        tenant: &str,
        state: &mut BatchState,
    ) -> Result<Option<i64>, EngineError> {
        let gate = self.gate(tenant);
        let held = if state.gates.is_empty() {
            Some(gate.lock_owned().await)
        } else {
            gate.try_lock_owned().ok()
        };
        let Some(held) = held else {
            return Ok(None);
        };
        state.gates.push(held);
        if self.share_of(tenant) == 0 {
            return Ok(None);
        }
        let host = &self.config.host_id;
        Ok(Some(db::slots::running_here(tx, tenant, host).await?))
    }

    /// Writes a recording batch and commits it, in one round trip (one
    /// multi-statement query: the progress reports, the attempts, every
    /// changed or new step, each changed run, the events, `COMMIT`); when a
    /// run ended, releases queued runs of its workflow before committing.
    /// With `held` (versions), the same round trip begins the transaction
    /// and fails it unless each run is still at its version.
    async fn write_batch(
        &self,
        tx: &mut db::Conn,
        attempts: &[AttemptRow],
        runs: &[RunChange],
        progress: &[ProgressEvent],
        held: Option<&[(String, i64)]>,
        now: i64,
    ) -> Result<(), EngineError> {
        let written: Vec<(&RunRow, &StepRow)> = runs
            .iter()
            .flat_map(|c| c.written_steps().map(move |s| (&c.run, s)))
            .collect();
        let events: Vec<db::runs::RunEvent<'_>> = runs
            .iter()
            .flat_map(|c| event_rows(&c.run, &c.events))
            .collect();
        // One round trip for all of it.
        let mut writes = db::runs::Writes::default();
        if let Some(versions) = held {
            debug_assert!(self.db.exclusive(), "versions are kept on SQLite only");
            writes.begin().expect_versions(versions);
        }
        // Reports sent before a result are written before its events.
        writes
            .append_progress(progress)
            .insert_attempts(attempts)
            .upsert_steps(&written);
        for change in runs.iter().filter(|c| c.original_run != c.run) {
            writes.update_run(&change.run);
        }
        writes.append_events(&events, now);
        // Each workflow once, in order: releasing takes the workflow's lock,
        // and two transactions taking locks in one order never deadlock.
        let mut ended: Vec<(&str, &str, Option<&str>)> = runs
            .iter()
            .filter(|c| c.run.status.is_terminal() && !c.original_run.status.is_terminal())
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
        if run.status.is_terminal() && !original_run.status.is_terminal() {
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
        let written: Vec<(&RunRow, &StepRow)> =
            changed_steps(original, steps).map(|s| (run, s)).collect();
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
}

/// Moves the step at `index` on by its attempt's outcome: completed, failed
/// for good (and its `catch` made ready), retried after its backoff,
/// cancelled (interrupted), or back to ready without spending the attempt
/// (rate limited, held). The events to append, in order.
fn apply_outcome(
    definition: &Definition,
    run: &RunRow,
    steps: &mut Vec<StepRow>,
    index: usize,
    outcome: &Outcome,
    duration_ms: Option<u64>,
    now: i64,
) -> Vec<Event> {
    let mut events = Vec::new();
    let step = &mut steps[index];
    step.lease_owner = None;
    step.lease_expires_at = None;
    match outcome {
        // Not an attempt: the next claim takes this attempt's number
        // again (and its row), and no retry is spent.
        Outcome::Deferred { until, key } => {
            step.status = StepStatus::Ready;
            step.due_at = Some(*until);
            step.attempts -= 1;
            events.push(Event::step(
                "step.rate_limited",
                &step.step_id,
                json!({"key": key, "until": rfc3339(*until)}),
            ));
        }
        // Paused with items left: ready again, which the paused run
        // holds (`advance`), and no attempt spent.
        Outcome::Held => {
            step.status = StepStatus::Ready;
            step.due_at = Some(now);
            step.attempts -= 1;
        }
        Outcome::Completed(output) => {
            step.status = StepStatus::Completed;
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
            step.status = StepStatus::Cancelled;
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
            if error.is_retryable() && step.attempts < max_attempts && !run.status.is_terminal() {
                let backoff = step_def
                    .and_then(|s| s.retry.as_ref())
                    .map(|r| r.backoff.clone())
                    .unwrap_or_default();
                let delay = backoff.delay_ms(u32::try_from(step.attempts + 1).unwrap_or(u32::MAX));
                step.status = StepStatus::Ready;
                step.due_at = Some(now + delay as i64);
                step.error = Some(error_json.to_string());
                events.push(Event::step(
                    "step.retrying",
                    &step.step_id,
                    json!({"attempt": step.attempts, "error": error_json, "next_attempt_at": rfc3339(now + delay as i64)}),
                ));
            } else {
                step.status = StepStatus::Failed;
                step.ended_at = Some(now);
                step.error = Some(error_json.to_string());
                events.push(Event::step(
                    "step.failed",
                    &step.step_id,
                    error_json.clone(),
                ));
                let has_catch = step_def.is_some_and(|s| s.catch.is_some()) && step.kind != "catch";
                let catch = catch_id(&step.step_id);
                if has_catch && let Some(existing) = steps.iter_mut().find(|s| s.step_id == catch) {
                    // A retried step that fails again compensates again.
                    existing.status = StepStatus::Ready;
                    existing.due_at = Some(now);
                    existing.output = None;
                    existing.error = None;
                    existing.ended_at = None;
                } else if has_catch {
                    // Appended to `steps` so that the state machine sees
                    // the compensation pending; written as a new step.
                    let mut step = StepRow::new(
                        &run.id,
                        catch,
                        steps[index].position,
                        "catch",
                        StepStatus::Ready,
                    );
                    step.due_at = Some(now);
                    steps.push(step);
                }
            }
        }
    }
    events
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

    /// A run as this host last recorded it.
    fn held(recorded: Recorded) -> Self {
        let Snapshot { run, steps } =
            Arc::try_unwrap(recorded.snapshot).unwrap_or_else(|shared| Snapshot {
                run: shared.run.clone(),
                steps: shared.steps.clone(),
            });
        Self::new(run, steps, recorded.version)
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
