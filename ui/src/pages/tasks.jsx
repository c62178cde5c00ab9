import { useState } from "preact/hooks";
import { api, can, enc, when } from "../api.js";
import { Action, Loading, Problem, Status, useLoad } from "../components.jsx";

const TASK_STATUSES = ["open", "viewed", "completed", "declined", "expired", "revoked"];

/** Remind, reassign and revoke buttons for an open task. */
export function TaskActions({ task, me, onDone }) {
  const [assignee, setAssignee] = useState("");
  if (!can(me, "runs:control") || !["open", "viewed"].includes(task.status)) return null;
  const id = `reassign-${task.id}`;
  return (
    <div class="task-actions">
      <Action label="Remind" run={() => api(`/v1/tasks/${task.id}/remind`, { method: "POST", body: {} })} onDone={onDone} />
      <Action label="Revoke" kind="danger" run={() => api(`/v1/tasks/${task.id}/revoke`, { method: "POST", body: {} })} onDone={onDone} />
      <form class="inline" onSubmit={(e) => e.preventDefault()}>
        <label for={id} class="sr">Reassign {task.assignee}'s task to</label>
        <input id={id} type="text" placeholder="new assignee" value={assignee} onInput={(e) => setAssignee(e.currentTarget.value)} />
        <Action label="Reassign" disabled={!assignee.trim()}
          run={() => api(`/v1/tasks/${task.id}/reassign`, { method: "POST", body: { assignee: assignee.trim() } })}
          onDone={() => { setAssignee(""); onDone(); }} />
      </form>
    </div>
  );
}

/** One row per task: who, what, where it stands. */
export function TaskTable({ tasks, me, onDone, showRun = true }) {
  return (
    <div class="table-wrap">
      <table class="tasks">
        <thead>
          <tr>
            <th>Assignee</th><th>Task</th>{showRun && <th>Run</th>}<th>Status</th>
            <th>Created</th><th>Expires</th><th>Reminders</th><th><span class="sr">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          {tasks.map((t) => (
            <tr>
              <td>{t.assignee}</td>
              <td>{t.title}</td>
              {showRun && <td><a href={`#/runs/${t.run_id}`}>{t.workflow} · {t.step_id}</a></td>}
              <td><Status status={t.status} />{t.answer?.action ? ` ${t.answer.action}` : ""}</td>
              <td>{when(t.created_at)}</td>
              <td>{when(t.expires_at)}</td>
              <td>{t.reminders_sent}/{t.max_reminders}</td>
              <td><TaskActions task={t} me={me} onDone={onDone} /></td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function TasksPage({ me, query }) {
  const status = query.status ?? "open";
  const list = useLoad(() => api(`/v1/tasks?limit=100${status ? `&status=${enc(status)}` : ""}`), [status]);
  return (
    <section aria-labelledby="tasks-title">
      <h1 id="tasks-title">Tasks</h1>
      <p class="muted">What people are asked to do in paused runs, each through a link of their own.</p>
      <div class="filters" role="search">
        <label>
          Status
          <select value={status} name="status"
            onChange={(e) => { window.location.hash = `/tasks?status=${enc(e.currentTarget.value)}`; }}>
            <option value="">any</option>
            {TASK_STATUSES.map((s) => <option value={s}>{s}</option>)}
          </select>
        </label>
      </div>
      <Problem error={list.error} />
      {list.loading ? <Loading what="tasks" /> : list.value?.items.length === 0 ? (
        <p class="empty">No {status || ""} tasks.</p>
      ) : (
        <TaskTable tasks={list.value?.items || []} me={me} onDone={list.reload} />
      )}
    </section>
  );
}

/** The tasks of a paused step, on its run's page. */
export function StepTasks({ run, step, me }) {
  const list = useLoad(() => api(`/v1/tasks?run_id=${enc(run.id)}&limit=100`), [run.id, step.status]);
  const tasks = (list.value?.items || []).filter((t) => t.step_id === step.id);
  if (list.loading || tasks.length === 0) return <Problem error={list.error} />;
  return (
    <div class="card">
      <h3>Tasks</h3>
      <TaskTable tasks={tasks} me={me} onDone={list.reload} showRun={false} />
    </div>
  );
}
