//! Claiming: due steps taken under a lease, their attempts recorded as
//! started, and the rate limits a step takes a place in before it runs.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::super::advance::Event;
use super::super::template::{self, Scope};
use super::super::{Engine, EngineError};
use super::{Outcome, RATE_WINDOW_MS, event_rows};
use crate::db::runs::{AttemptRow, AttemptStatus, RunRow, RunStatus, StepRow, StepStatus};
use crate::db::{self, DbError};

impl Engine {
    /// Claims up to `want` due steps (and, with `expired_leases`, steps whose
    /// lease expired), records their attempts as started,
    /// and moves their runs from `pending` to `running`, in one
    /// transaction. Their slots are taken once the transaction has begun
    /// (on SQLite, once this holds the writer, so a recorder or a start
    /// that held it meanwhile claimed with the slots free); those it finds
    /// no step for are given back.
    pub(super) async fn claim(
        &self,
        want: usize,
        expired_leases: bool,
    ) -> Result<Vec<StepRow>, EngineError> {
        // Hosts sharing the database under a tenant cap: each due tenant's
        // steps within this host's share, its gate taken once the
        // connection is (never the other way round) and held to the commit.
        let due = if self.shares_cap() {
            Some(self.due_for_claim().await?)
        } else {
            None
        };
        let tx = self.db.begin().await?;
        let shares = match due {
            Some(due) => Some(self.claim_gates(due).await),
            None => None,
        };
        let limit = self.take_slots(want, self.config.max_parallel);
        if limit == 0 {
            tx.rollback().await;
            return Ok(Vec::new());
        }
        let within = shares.as_ref().map(|s| s.json.as_str());
        let claimed = self.claim_in(tx, limit, expired_leases, within).await;
        let unused = limit.saturating_sub(claimed.as_ref().map_or(0, Vec::len));
        // Not `release_slots`: the scheduler calls this and need not wake.
        self.in_flight.fetch_sub(unused, Ordering::SeqCst);
        claimed
    }

    async fn claim_in(
        &self,
        mut tx: db::Tx,
        limit: usize,
        expired_leases: bool,
        within: Option<&str>,
    ) -> Result<Vec<StepRow>, EngineError> {
        let now = db::now_ms();
        let lease_until = now + self.config.lease.as_millis() as i64;
        let steps = db::runs::claim(
            &mut tx,
            &self.config.host_id,
            now,
            lease_until,
            limit as i64,
            i64::try_from(self.config.tenant_max_running).unwrap_or(i64::MAX),
            within,
            expired_leases,
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
        let starting: Vec<bool> = runs
            .iter()
            .map(|r| r.status == RunStatus::Pending)
            .collect();
        let mut events: Vec<Vec<Event>> = runs.iter().map(|_| Vec::new()).collect();
        for step in &steps {
            let Some(i) = runs.iter().position(|r| r.id == step.run_id) else {
                continue;
            };
            if runs[i].status == RunStatus::Pending {
                mark_started(&mut runs[i], now, &mut events[i]);
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
            self.changed_to(run);
        }
        Ok(steps)
    }

    /// Marks `step` running under this host's lease, a new attempt, with
    /// its `step.started` event: the claim of a step whose run is in hand.
    pub(super) fn mark_claimed(
        &self,
        step: &mut StepRow,
        now: i64,
        events: &mut Vec<Event>,
    ) -> StepRow {
        step.status = StepStatus::Running;
        step.lease_owner = Some(self.config.host_id.clone());
        step.lease_expires_at = Some(now + self.config.lease.as_millis() as i64);
        step.attempts += 1;
        step.started_at.get_or_insert(now);
        events.push(Event::step(
            "step.started",
            &step.step_id,
            self.started_data(step),
        ));
        step.clone()
    }

    /// The steps a new run starts with, claimed in the transaction that
    /// inserts it, so they run without a round through the scheduler: only
    /// on a host that owns its database (no other host claims, and what
    /// runs here bounds every tenant's count, as for a recorded result's
    /// dependents), only while the scheduler saw nothing else due (its
    /// order across tenants and priorities stands), and within the free
    /// slots and the tenant's cap. The slots are taken here; the caller
    /// gives them back ([`Self::release_slots`]) if the transaction fails,
    /// or runs the steps ([`Self::run_claimed`]) once it commits.
    pub(in crate::engine) fn claim_first(
        &self,
        run: &mut RunRow,
        steps: &mut [StepRow],
        now: i64,
        events: &mut Vec<Event>,
    ) -> Vec<StepRow> {
        if !self.db.exclusive()
            || self.backlog.load(Ordering::SeqCst)
            || run.status != RunStatus::Pending
        {
            return Vec::new();
        }
        let due = due_steps(steps, now);
        if due.is_empty() {
            return Vec::new();
        }
        let limit = self.config.max_parallel.min(self.config.tenant_max_running);
        let taken = self.take_slots(due.len(), limit);
        if taken == 0 {
            return Vec::new();
        }
        mark_started(run, now, events);
        due.iter()
            .take(taken)
            .map(|&i| self.mark_claimed(&mut steps[i], now, events))
            .collect()
    }

    /// Takes up to `want` of this host's slots, so that at most `limit`
    /// steps are in flight: how many it took. Every claim takes its slots
    /// this way before it commits, so that claims made at once (a start,
    /// the scheduler, the recorder) never together pass `max_parallel`.
    pub(in crate::engine) fn take_slots(&self, want: usize, limit: usize) -> usize {
        let mut taken = 0;
        let _ = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                taken = want.min(limit.saturating_sub(n));
                (taken > 0).then_some(n + taken)
            });
        taken
    }

    /// Gives back slots taken ([`Self::take_slots`]) for steps that will
    /// not run, and wakes the scheduler, which may use them.
    pub(in crate::engine) fn release_slots(&self, n: usize) {
        if n > 0 {
            self.in_flight.fetch_sub(n, Ordering::SeqCst);
            self.wake.notify_one();
        }
    }

    /// The attempt row of a step this host just claimed.
    pub(in crate::engine) fn started_attempt(&self, step: &StepRow, now: i64) -> AttemptRow {
        AttemptRow {
            run_id: step.run_id.clone(),
            step_id: step.step_id.clone(),
            attempt: step.attempts,
            status: AttemptStatus::Running,
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
    pub(super) fn started_data(&self, step: &StepRow) -> Value {
        json!({"attempt": step.attempts, "host": self.config.host_id})
    }

    /// Takes a place in the step's rate limit for this minute, under `key`
    /// as [`rate_key`] rendered it: `None` to run now, or the deferral to
    /// the next minute when this one is full.
    pub(super) async fn take_rate(
        &self,
        tenant: &str,
        step: &StepRow,
        per_minute: u32,
        key: String,
    ) -> Result<Option<Outcome>, EngineError> {
        // The next minute, spread over its first second so the steps that
        // waited do not all arrive at once; one that finds it full again
        // waits again.
        let spread = (step.attempts * 7919 + step.step_id.len() as i64 * 104_729).rem_euclid(1000);
        let until = self.take_rate_key(tenant, &key, per_minute, spread).await?;
        Ok(until.map(|until| Outcome::Deferred { until, key }))
    }

    /// Takes a place in `key`'s rate limit for this minute: `None` when
    /// taken, or when to try again (the next minute, `spread` ms in).
    pub(in crate::engine) async fn take_rate_key(
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
}

/// The indexes of the steps of a run in hand that are ready and due at
/// `now`: what a claim of that run takes, in order, as far as it has room.
pub(super) fn due_steps(steps: &[StepRow], now: i64) -> Vec<usize> {
    (0..steps.len())
        .filter(|&i| {
            steps[i].status == StepStatus::Ready && steps[i].due_at.is_some_and(|d| d <= now)
        })
        .collect()
}

/// Moves a pending run to running as its first step is claimed, with its
/// `run.started` event.
fn mark_started(run: &mut RunRow, now: i64, events: &mut Vec<Event>) {
    run.status = RunStatus::Running;
    run.started_at = Some(now);
    events.push(Event::run("run.started", json!({})));
}

/// A rate limit's `key` template rendered in `scope`: its text (a value
/// other than a string as JSON), or `None` when it renders to null or not
/// at all, which takes no place in any limit (a key that cannot be
/// rendered fails the step on its config like any other template).
pub(in crate::engine) fn rate_key(key: &str, scope: &Scope<'_>) -> Option<String> {
    match template::render(&Value::String(key.to_owned()), scope) {
        Ok(Value::String(key)) => Some(key),
        Ok(Value::Null) | Err(_) => None,
        Ok(other) => Some(other.to_string()),
    }
}
