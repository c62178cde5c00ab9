//! Claiming, executing and recording step attempts: the engine's hot path,
//! read top to bottom as
//!
//! 1. [`claim`]: the scheduler loop ([`Engine::start`]) claims due steps
//!    under a lease, records their attempts as started and moves their runs
//!    from `pending` to `running`, in one transaction.
//! 2. [`execute`]: each claimed step runs on a task of its own
//!    ([`Engine::run_claimed`]): its config rendered from the run's state, the
//!    plugin invoked in a fresh sandbox, the lease renewed meanwhile. The
//!    result goes to the recorder as a [`Finished`], after any progress
//!    the plugin reported on the way.
//! 3. [`record`]: the recorder commits results several to a transaction,
//!    each with the dependents it makes ready, the events, and the
//!    dependents this host claims at once; those start without a round
//!    through the scheduler. Progress reports received with them are
//!    written first, in the same transaction.
//!
//! A step is claimed under a lease (`db::runs::claim`), which this host
//! renews while the attempt runs. If the host dies, the lease expires and
//! any host claims the step again: a new attempt with the same idempotency
//! key (`<run id>/<step id>`), so host capabilities keyed by it (the mail
//! outbox) take effect once. A result is committed, with the dependents it
//! makes ready and the events, before anything else is scheduled.

mod claim;
pub(in crate::engine) use claim::rate_key;
mod execute;
mod record;
mod shares;
pub(crate) use shares::Shares;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::advance::Event;
use super::definition::Definition;
use super::{Engine, EngineError, lock};
use crate::db;
use crate::db::runs::{RunRow, StepRow};
use crate::runtime::{Attempt, AttemptError};

/// What the recorder commits, batch by batch in the order it was sent.
pub(crate) enum ToRecord {
    /// An attempt that ended.
    Finished(Box<Finished>),
    /// A progress report of an attempt still running, written with the
    /// next batch, before the batch's results: it costs no transaction of
    /// its own (which would queue for the writer with the results), and
    /// its attempt's result, sent after it, is never written before it.
    Progress(db::runs::ProgressEvent),
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

/// The scheduler's view of the earliest lease expiry, read again once it
/// passes or is older than the poll interval. Between reads a lease can
/// only expire later than it says (a step ended or was renewed), or be
/// new, and a new lease (now plus `--lease-ms`) expires after the ones
/// already there unless hosts run with different `--lease-ms`: the poll
/// interval bounds how late a host notices that.
#[derive(Default)]
struct LeaseWatch {
    next: Option<i64>,
    read_at: Option<std::time::Instant>,
}

impl LeaseWatch {
    fn stale(&self, now: i64, every: Duration) -> bool {
        self.read_at.is_none_or(|at| at.elapsed() >= every) || self.next.is_some_and(|t| t <= now)
    }

    fn read(&mut self, next: Option<i64>) {
        self.next = next;
        self.read_at = Some(std::time::Instant::now());
    }
}

impl Engine {
    /// Runs the scheduler, the deadline watcher, the schedule loop and the
    /// outbox sender until
    /// `shutdown` is cancelled.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) {
        self.start_peers(&shutdown);
        if let Some(received) = lock(&self.to_record_rx).take() {
            let engine = self.clone();
            tokio::spawn(async move { engine.record_finished(received).await });
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
        let mut leases = LeaseWatch::default();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            self.renew_shares().await;
            // Ask a reader whether anything is due before taking the single
            // writer for a claim: most wake-ups (a recorded result, a slot
            // freed while steps were due) find nothing, because results
            // claim their dependents.
            let due = self.next_due_at().await;
            let now = db::now_ms();
            if leases.stale(now, self.config.poll) {
                leases.read(self.next_lease_expiry().await);
            }
            let expired = leases.next.is_some_and(|t| t <= now);
            let next = match (due, leases.next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.backlog
                .store(next.is_some_and(|t| t <= now), Ordering::SeqCst);
            // Free slots are counted after the store: a slot freed before
            // it is counted here, one freed after it sees the backlog and
            // wakes this loop (`run_claimed`).
            let free = self
                .config
                .max_parallel
                .saturating_sub(self.in_flight.load(Ordering::SeqCst));
            let mut claimed = 0;
            if free > 0 && next.is_some_and(|t| t <= now) {
                let claim = if crate::telemetry::sample_db() {
                    self.claim(free, expired)
                        .instrument(self.db_span("claim"))
                        .await
                } else {
                    self.claim(free, expired).await
                };
                match claim {
                    Ok(steps) => {
                        claimed = steps.len();
                        // Their slots were taken by the claim.
                        for step in steps {
                            self.run_claimed(step, None);
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
            // Shares of tenant caps are renewed on time: one not renewed
            // within half a lease lapses.
            let wait = self.shares_renew_in().map_or(wait, |renew| wait.min(renew));
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Runs a claimed step whose slot is already taken
    /// ([`Self::take_slots`]); gives the slot back when it is done.
    pub(in crate::engine) fn run_claimed(
        self: &Arc<Self>,
        step: StepRow,
        snapshot: Option<Arc<Snapshot>>,
    ) {
        let engine = self.clone();
        tokio::spawn(async move {
            engine.execute(step, snapshot).await;
            engine.in_flight.fetch_sub(1, Ordering::SeqCst);
            // A freed slot matters to the scheduler only when its last pass
            // found steps due; otherwise waking it costs a read per step,
            // beside the recorder (a chain's next step is claimed by the
            // recording of this one).
            if engine.backlog.load(Ordering::SeqCst) {
                engine.wake.notify_one();
            }
        });
    }

    /// The next time a step is due, read without taking the writer;
    /// `Some(0)` when the database cannot be read (claim anyway).
    async fn next_due_at(&self) -> Option<i64> {
        let Ok(mut conn) = self.db.reader().await else {
            return Some(0);
        };
        db::runs::next_due(&mut conn).await.unwrap_or(Some(0))
    }

    /// The next time a lease expires, like [`Self::next_due_at`].
    async fn next_lease_expiry(&self) -> Option<i64> {
        let Ok(mut conn) = self.db.reader().await else {
            return Some(0);
        };
        db::runs::next_lease_expiry(&mut conn)
            .await
            .unwrap_or(Some(0))
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
