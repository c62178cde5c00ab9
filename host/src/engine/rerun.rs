//! After an incident: pausing a run (no new step starts; attempts under way
//! finish) and unpausing it, re-running a finished run from one of its
//! steps, and retrying every failed run of a workflow at once.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::advance::{self, Event};
use super::definition::{COLLECT_INPUTS, Definition, REQUEST_USER_ACTION};
use super::runs::{Origin, reopen, retry_by_hand};
use super::{Engine, EngineError};
use crate::db::runs::{RunFilter, RunRow, RunStatus, StepStatus};
use crate::db::{self, DbError};

/// Most runs one `retry-failed` call retries; the answer says whether more
/// matched (call again: retried runs no longer match).
pub const MAX_RETRY_BATCH: i64 = 500;
/// Most failed runs one `retry-failed` call looks at (retried or not).
pub const MAX_RETRY_SCAN: i64 = 5_000;
/// Failed runs read at a time.
const RETRY_PAGE: i64 = 200;

/// What a bulk retry did.
#[derive(Debug, Clone, Default)]
pub struct Retried {
    /// Runs retried.
    pub retried: Vec<String>,
    /// Runs that matched but could not be retried, with why.
    pub not_retried: Vec<(String, String)>,
    /// More failed runs match than one call retries.
    pub more: bool,
}

/// `from` and every step that depends on it, directly or not.
fn downstream(definition: &Definition, from: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::from([from.to_owned()]);
    loop {
        let before = found.len();
        for step in &definition.steps {
            if step.depends_on.iter().any(|d| found.contains(d)) {
                found.insert(step.id.clone());
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

impl Engine {
    /// A new run of `id`'s workflow version that keeps the records of the
    /// steps `from_step` does not lead to (completed or skipped in `id`)
    /// and runs `from_step` and everything after it, with `input` if given
    /// (else `id`'s input). The new run carries `id`'s labels (with the
    /// workflow's own rendered again over new input) and `rerun_of: id`.
    pub async fn rerun(
        &self,
        tenant: &str,
        id: &str,
        from_step: &str,
        input: Option<Value>,
    ) -> Result<RunRow, EngineError> {
        self.check_backlog(tenant).await?;
        // A run it replaces (concurrency) may be being written elsewhere.
        super::runs::until_not_busy(|| self.rerun_once(tenant, id, from_step, input.clone())).await
    }

    async fn rerun_once(
        &self,
        tenant: &str,
        id: &str,
        from_step: &str,
        input: Option<Value>,
    ) -> Result<RunRow, EngineError> {
        // The old run locked first and read under the lock: it cannot be
        // reopened (retried, resumed) while it is copied.
        let mut tx = self.db.begin().await?;
        let old = db::runs::locked_run(&mut tx, Some(tenant), id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("run {id:?}")))?;
        if !old.status.is_terminal() {
            return Err(EngineError::Conflict(format!(
                "run {id} is {}; only a finished run can be re-run (cancel it first)",
                old.status
            )));
        }
        let steps = db::runs::steps_of(&mut tx, id).await?;
        let definition = self.definition_for_run(&old).await?;
        if definition.step(from_step).is_none() {
            let ids: Vec<&str> = definition.steps.iter().map(|s| s.id.as_str()).collect();
            return Err(EngineError::InvalidInput(format!(
                "from_step {from_step:?} is not a step of {}@{} (its steps: {})",
                old.workflow_key,
                old.workflow_version,
                ids.join(", ")
            )));
        }
        let rerun = downstream(&definition, from_step);
        let kept: Vec<_> = steps
            .into_iter()
            .filter(|s| !rerun.contains(&s.step_id))
            .filter(|s| matches!(s.status, StepStatus::Completed | StepStatus::Skipped))
            .collect();
        let new_input = input.is_some();
        let input = match input {
            Some(input) => input,
            None => serde_json::from_str(&old.input).unwrap_or(Value::Null),
        };
        let mut prepared = self
            .prepare_run(
                tenant,
                &old.workflow_key,
                Some(&old.workflow_version),
                input,
            )
            .await?;
        let mut labels: super::labels::Labels = old
            .label_map()
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
            .collect();
        if new_input {
            // What the workflow says the run is about, from the new input.
            labels.extend(std::mem::take(&mut prepared.labels));
        }
        prepared.labels = labels;
        prepared.rerun = Some((old.id.clone(), kept));
        prepared.priority = old.priority;
        let run = self
            .insert_run(
                &mut tx,
                tenant,
                &old.workflow_key,
                prepared,
                Origin::Rerun,
                false,
            )
            .await?
            .run;
        // The old run's feed says where it was re-run.
        let event = Event::run(
            "run.rerun",
            json!({"rerun_id": run.id, "from_step": from_step}),
        );
        let rows = super::scheduler::event_rows(&old, std::slice::from_ref(&event));
        let mut writes = db::runs::Writes::default();
        writes.append_events(&rows, db::now_ms());
        writes.execute(&mut tx).await?;
        tx.commit().await.map_err(DbError::from)?;
        self.changed(&run.id);
        self.changed(&old.id);
        self.wake.notify_one();
        Ok(run)
    }

    /// Pauses (`hold`) or unpauses a run. Paused, its ready steps are
    /// `held` and every step that becomes ready after is too (see
    /// [`advance::hold_ready`]); attempts under way finish and are recorded.
    /// Unpaused, held steps are ready again at their own due times. Either
    /// is a no-op when the run already is so; a finished run is a conflict.
    pub async fn hold_run(
        &self,
        tenant: &str,
        id: &str,
        hold: bool,
        reason: Option<&str>,
    ) -> Result<RunRow, EngineError> {
        let now = db::now_ms();
        let mut tx = self.db.begin().await?;
        let mut run = db::runs::locked_run(&mut tx, Some(tenant), id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("run {id:?}")))?;
        if run.status.is_terminal() {
            return Err(EngineError::Conflict(format!(
                "run {id} is already {}",
                run.status
            )));
        }
        if run.held_at.is_some() == hold {
            return Ok(run);
        }
        let definition = self.definition_for_run(&run).await?;
        let original_run = run.clone();
        let original = db::runs::steps_of(&mut tx, id).await?;
        let mut steps = original.clone();
        let mut events = Vec::new();
        if hold {
            run.held_at = Some(now);
            advance::hold_ready(&run, &mut steps);
            let held: Vec<&str> = steps
                .iter()
                .filter(|s| s.status == StepStatus::Held)
                .map(|s| s.step_id.as_str())
                .collect();
            let mut data = json!({"held_steps": held});
            if let Some(reason) = reason {
                data["reason"] = json!(reason);
            }
            events.push(Event::run("run.held", data));
        } else {
            run.held_at = None;
            for step in steps.iter_mut().filter(|s| s.status == StepStatus::Held) {
                if matches!(step.kind.as_str(), COLLECT_INPUTS | REQUEST_USER_ACTION) {
                    // Decided again: it pauses now, and gets its tasks.
                    step.status = StepStatus::Pending;
                } else {
                    step.status = StepStatus::Ready;
                    step.due_at = Some(step.due_at.unwrap_or(now));
                }
            }
            events.push(Event::run("run.unheld", json!({})));
            events.extend(advance::advance(&definition, &mut run, &mut steps, now));
        }
        self.commit_changes(tx, &original_run, &run, &original, &steps, &events, now)
            .await?;
        Ok(run)
    }

    /// Retries every failed step of each failed run of `workflow` that
    /// ended at or after `since` (ms), newest first, at most
    /// [`MAX_RETRY_BATCH`] runs a call. Runs it cannot retry are passed
    /// over (and reported), so they never hide older ones; at most
    /// [`MAX_RETRY_SCAN`] runs are looked at a call.
    pub async fn retry_failed(
        &self,
        tenant: &str,
        workflow: &str,
        since: Option<i64>,
    ) -> Result<Retried, EngineError> {
        let mut out = Retried::default();
        let mut cursor: Option<String> = None;
        let mut scanned = 0;
        loop {
            let page = {
                let mut conn = self.db.reader().await?;
                let filter = RunFilter {
                    workflow: Some(workflow),
                    status: Some(RunStatus::Failed),
                    ended_since: since,
                    ..RunFilter::default()
                };
                db::runs::list_runs(&mut conn, tenant, filter, cursor.as_deref(), RETRY_PAGE)
                    .await?
            };
            for run in &page {
                if out.retried.len() as i64 == MAX_RETRY_BATCH {
                    out.more = true;
                    return Ok(out);
                }
                match self.retry_run(tenant, &run.id).await {
                    Ok(()) => out.retried.push(run.id.clone()),
                    Err(EngineError::Db(e)) => return Err(EngineError::Db(e)),
                    Err(e) => out.not_retried.push((run.id.clone(), e.to_string())),
                }
            }
            scanned += page.len() as i64;
            if (page.len() as i64) < RETRY_PAGE {
                return Ok(out);
            }
            if scanned >= MAX_RETRY_SCAN {
                out.more = true;
                return Ok(out);
            }
            cursor = page.last().map(|r| r.id.clone());
        }
    }

    /// Retries every failed step of a failed run, in one transaction.
    async fn retry_run(&self, tenant: &str, id: &str) -> Result<(), EngineError> {
        let now = db::now_ms();
        let mut tx = self.db.begin().await?;
        let mut run = db::runs::locked_run(&mut tx, Some(tenant), id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("run {id:?}")))?;
        if run.status != RunStatus::Failed {
            // Retried or changed since it was listed.
            return Err(EngineError::Conflict(format!("run {id} is {}", run.status)));
        }
        if run.deadline_at.is_some_and(|d| d < now) {
            return Err(EngineError::Conflict(format!(
                "run {id} passed its max_duration_ms; start it again instead"
            )));
        }
        let definition = self.definition_for_run(&run).await?;
        super::runs::check_room(&mut tx, &run, &definition).await?;
        let original_run = run.clone();
        let original = db::runs::steps_of(&mut tx, id).await?;
        let mut steps = original.clone();
        if !steps.iter().any(|s| s.status == StepStatus::Failed) {
            return Err(EngineError::Conflict(format!(
                "run {id} has no failed step to retry"
            )));
        }
        reopen(&mut run, &mut steps);
        let mut events = Vec::new();
        for step in steps.iter_mut().filter(|s| s.status == StepStatus::Failed) {
            let retry = json!({"manual": true, "bulk": true});
            events.push(retry_by_hand(&mut tx, &definition, step, retry, now).await?);
        }
        events.extend(advance::advance(&definition, &mut run, &mut steps, now));
        self.commit_changes(tx, &original_run, &run, &original, &steps, &events, now)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downstream_follows_depends_on() {
        let definition: Definition = serde_json::from_value(json!({
            "key": "k", "name": "n",
            "steps": [
                {"id": "a", "uses": "echo"},
                {"id": "b", "uses": "echo", "depends_on": ["a"]},
                {"id": "c", "uses": "echo", "depends_on": ["b"]},
                {"id": "d", "uses": "echo", "depends_on": ["a"]},
                {"id": "e", "uses": "echo", "depends_on": ["c", "d"]}
            ]
        }))
        .unwrap();
        let ids = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>();
        assert_eq!(ids(downstream(&definition, "b")), ["b", "c", "e"]);
        assert_eq!(ids(downstream(&definition, "a")), ["a", "b", "c", "d", "e"]);
        assert_eq!(ids(downstream(&definition, "e")), ["e"]);
    }
}
