//! Schedules: cron expressions in a time zone that start runs.
//!
//! Each active schedule stores its next tick. The schedule loop fires every
//! schedule whose tick has come, in one transaction per schedule: claim the
//! tick (a primary key on (schedule, tick), so no tick ever fires twice,
//! whatever restarts or hosts are involved), start the run, and store the
//! next tick after *now*. After downtime a schedule therefore fires once,
//! for its latest missed tick, rather than once per missed tick.
//!
//! Time comes from [`Engine::now_ms`], which tests shift with
//! `EngineConfig::clock_offset_ms` instead of sleeping through minutes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::cron::Cron;
use super::runs::Origin;
use super::{Engine, EngineError};
use crate::db::schedules::{FireRow, ScheduleRow};
use crate::db::{self, DbError};

/// Most schedules one tenant may have.
pub const MAX_SCHEDULES_PER_TENANT: usize = 1000;

/// What a client sends to create a schedule.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub workflow: String,
    pub cron: String,
    pub timezone: Option<String>,
    pub input: Value,
    pub active: bool,
    /// The priority of the runs it starts (default 1).
    pub priority: Option<i64>,
}

/// What a PATCH may change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct SchedulePatch {
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub input: Option<Value>,
    pub active: Option<bool>,
    pub priority: Option<i64>,
}

fn to_datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The next tick strictly after `after_ms`, in ms.
fn next_tick(cron: &Cron, after_ms: i64) -> Option<i64> {
    cron.next_after(to_datetime(after_ms))
        .map(|t| t.timestamp_millis())
}

impl Engine {
    /// Now, as schedules see it: the wall clock shifted by the configured
    /// offset (zero outside tests).
    pub fn now_ms(&self) -> i64 {
        db::now_ms() + self.config.clock_offset_ms
    }

    pub async fn create_schedule(
        &self,
        tenant: &str,
        new: NewSchedule,
    ) -> Result<ScheduleRow, EngineError> {
        let timezone = new.timezone.unwrap_or_else(|| "UTC".into());
        let cron = Cron::parse(&new.cron, &timezone).map_err(EngineError::InvalidInput)?;
        let priority = super::runs::check_priority(new.priority)?;
        // The workflow must exist; its published version is looked up at
        // each tick, so publishing a new version changes what later ticks run.
        self.check_schedule_target(tenant, &new.workflow, &new.input)
            .await?;
        {
            let mut conn = self.db.reader().await?;
            let existing = db::schedules::list(&mut conn, tenant, None).await?;
            if existing.len() >= MAX_SCHEDULES_PER_TENANT {
                return Err(EngineError::Conflict(format!(
                    "a tenant may have at most {MAX_SCHEDULES_PER_TENANT} schedules"
                )));
            }
        }
        let now = self.now_ms();
        let row = ScheduleRow {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant.to_owned(),
            workflow_key: new.workflow,
            cron: new.cron.trim().to_owned(),
            timezone,
            input: new.input.to_string(),
            status: if new.active { "active" } else { "paused" }.into(),
            next_run_at: if new.active {
                next_tick(&cron, now)
            } else {
                None
            },
            last_run_id: None,
            last_fired_at: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            priority,
        };
        let mut conn = self.db.writer().await?;
        db::schedules::insert(&mut conn, &row).await?;
        drop(conn);
        self.wake_schedules();
        Ok(row)
    }

    /// The workflow exists and is not archived; when it has a published
    /// version with an input schema, `input` meets it.
    async fn check_schedule_target(
        &self,
        tenant: &str,
        workflow: &str,
        input: &Value,
    ) -> Result<(), EngineError> {
        let (found, _) = self.workflow_versions(tenant, workflow).await?;
        if found.archived_at.is_some() {
            return Err(EngineError::Conflict(format!(
                "workflow {workflow:?} is archived"
            )));
        }
        match self
            .prepare_run(tenant, workflow, None, input.clone())
            .await
        {
            Ok(_) => Ok(()),
            // Not published yet: each tick reports it until it is.
            Err(EngineError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn list_schedules(
        &self,
        tenant: &str,
        workflow: Option<&str>,
    ) -> Result<Vec<ScheduleRow>, EngineError> {
        let mut conn = self.db.reader().await?;
        Ok(db::schedules::list(&mut conn, tenant, workflow).await?)
    }

    /// A schedule and its latest fired ticks, newest first.
    pub async fn get_schedule(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<(ScheduleRow, Vec<FireRow>), EngineError> {
        let mut conn = self.db.reader().await?;
        let row = db::schedules::get(&mut conn, tenant, id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("schedule {id:?}")))?;
        let fires = db::schedules::fires(&mut conn, id, 20).await?;
        Ok((row, fires))
    }

    pub async fn update_schedule(
        &self,
        tenant: &str,
        id: &str,
        patch: SchedulePatch,
    ) -> Result<ScheduleRow, EngineError> {
        let (mut row, _) = self.get_schedule(tenant, id).await?;
        if let Some(cron) = patch.cron {
            row.cron = cron.trim().to_owned();
        }
        if let Some(timezone) = patch.timezone {
            row.timezone = timezone;
        }
        let cron = Cron::parse(&row.cron, &row.timezone).map_err(EngineError::InvalidInput)?;
        if let Some(input) = patch.input {
            self.check_schedule_target(tenant, &row.workflow_key, &input)
                .await?;
            row.input = input.to_string();
        }
        if let Some(active) = patch.active {
            row.status = if active { "active" } else { "paused" }.into();
        }
        if let Some(priority) = patch.priority {
            row.priority = super::runs::check_priority(Some(priority))?;
        }
        let now = self.now_ms();
        // Resuming (or changing the expression) starts from now: ticks
        // missed while paused are not fired.
        row.next_run_at = if row.status == "active" {
            next_tick(&cron, now)
        } else {
            None
        };
        row.updated_at = now;
        let mut conn = self.db.writer().await?;
        db::schedules::update(&mut conn, &row).await?;
        drop(conn);
        self.wake_schedules();
        Ok(row)
    }

    pub async fn delete_schedule(&self, tenant: &str, id: &str) -> Result<(), EngineError> {
        let mut conn = self.db.writer().await?;
        if db::schedules::delete(&mut conn, tenant, id).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!("schedule {id:?}")))
        }
    }

    /// Fires every schedule due at `now`; returns how many ticks fired.
    pub async fn fire_due_schedules(&self, now: i64) -> Result<usize, EngineError> {
        let due = {
            let mut conn = self.db.reader().await?;
            db::schedules::due(&mut conn, now, 100).await?
        };
        let mut fired = 0;
        for schedule in due {
            match self.fire(&schedule, now).await {
                Ok(true) => fired += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(schedule_id = %schedule.id, error = %e, "could not fire a schedule");
                }
            }
        }
        Ok(fired)
    }

    /// Fires one due schedule for its latest tick at or before `now`.
    async fn fire(&self, schedule: &ScheduleRow, now: i64) -> Result<bool, EngineError> {
        let Some(due) = schedule.next_run_at else {
            return Ok(false);
        };
        let cron = match Cron::parse(&schedule.cron, &schedule.timezone) {
            Ok(c) => c,
            Err(e) => {
                // Stored expressions were valid when saved; a time zone
                // database change could still retire a zone.
                let mut tx = self.db.begin().await?;
                db::schedules::record_fire(&mut tx, &schedule.id, due, None, Some(&e), None, now)
                    .await?;
                tx.commit().await.map_err(DbError::from)?;
                return Ok(false);
            }
        };
        let tick = latest_tick(&cron, due, now);
        let next = next_tick(&cron, now);
        let input: Value = serde_json::from_str(&schedule.input).unwrap_or(Value::Null);
        // Read-only checks first; the run is inserted with the tick's claim.
        let prepared = self
            .prepare_run(&schedule.tenant_id, &schedule.workflow_key, None, input)
            .await
            .map(|mut prepared| {
                prepared.priority = schedule.priority;
                prepared
            });
        let mut tx = self.db.begin().await?;
        if !db::schedules::claim_tick(&mut tx, &schedule.id, tick, now).await? {
            db::schedules::set_next(&mut tx, &schedule.id, next).await?;
            tx.commit().await.map_err(DbError::from)?;
            return Ok(false);
        }
        let outcome = match prepared {
            Ok(prepared) => {
                self.insert_run(
                    &mut tx,
                    &schedule.tenant_id,
                    &schedule.workflow_key,
                    prepared,
                    Origin::Schedule {
                        id: &schedule.id,
                        tick,
                    },
                    false,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let (run_id, error) = match outcome {
            Ok(inserted) => (Some(inserted.run.id), None),
            // Rolled back (nothing of a partial replace is kept): the tick
            // is fired again on the next pass.
            Err(EngineError::Db(e)) => return Err(EngineError::Db(e)),
            Err(e @ EngineError::Busy(_)) => return Err(e),
            Err(e) => (None, Some(e.to_string())),
        };
        db::schedules::record_fire(
            &mut tx,
            &schedule.id,
            tick,
            run_id.as_deref(),
            error.as_deref(),
            next,
            now,
        )
        .await?;
        tx.commit().await.map_err(DbError::from)?;
        match &run_id {
            Some(id) => {
                tracing::info!(schedule_id = %schedule.id, run_id = %id, tick = %super::rfc3339(tick), "schedule fired");
                self.changed(id);
                self.wake.notify_one();
            }
            None => {
                tracing::warn!(schedule_id = %schedule.id, error = error.as_deref().unwrap_or_default(), "schedule fired but started no run");
            }
        }
        Ok(true)
    }

    /// Wakes the schedule loop to re-read the next tick.
    fn wake_schedules(&self) {
        self.schedule_wake.notify_one();
    }

    /// Fires due schedules until shutdown: sleeps until the earliest next
    /// tick (at most a second, so clock shifts and other hosts' changes are
    /// seen), or until a schedule changes.
    pub(crate) async fn run_schedules(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let now = self.now_ms();
            if let Err(e) = self.fire_due_schedules(now).await {
                tracing::warn!(error = %e, "firing schedules");
            }
            let next = match self.db.reader().await {
                Ok(mut conn) => db::schedules::next_due(&mut conn).await.ok().flatten(),
                Err(_) => None,
            };
            let wait = next.map_or(1000, |t| (t - self.now_ms()).clamp(0, 1000));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                () = self.schedule_wake.notified() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// The latest tick at or before `now`, given that `due` (a tick) has come:
/// after downtime, the one run fired stands for the most recent tick.
fn latest_tick(cron: &Cron, due: i64, now: i64) -> i64 {
    const TWO_DAYS: i64 = 2 * 24 * 3600 * 1000;
    let at = to_datetime(now);
    // Search the last two days first: cheap for frequent schedules; the
    // whole gap only for rare ones.
    cron.latest_at_or_before(to_datetime((due - 1).max(now - TWO_DAYS)), at)
        .or_else(|| cron.latest_at_or_before(to_datetime(due - 1), at))
        .map_or(due, |t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_tick_collapses_missed_ticks() {
        let cron = Cron::parse("0 * * * *", "UTC").unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis();
        // Due at 01:00, now 05:30: one firing, for 05:00.
        assert_eq!(
            latest_tick(&cron, t("2026-01-01T01:00:00Z"), t("2026-01-01T05:30:00Z")),
            t("2026-01-01T05:00:00Z")
        );
        // Due now: that tick.
        assert_eq!(
            latest_tick(&cron, t("2026-01-01T01:00:00Z"), t("2026-01-01T01:00:00Z")),
            t("2026-01-01T01:00:00Z")
        );
        // A yearly schedule missed for three years.
        let yearly = Cron::parse("0 0 1 1 *", "UTC").unwrap();
        assert_eq!(
            latest_tick(
                &yearly,
                t("2023-01-01T00:00:00Z"),
                t("2026-06-01T00:00:00Z")
            ),
            t("2026-01-01T00:00:00Z")
        );
    }
}
