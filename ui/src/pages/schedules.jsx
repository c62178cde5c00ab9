import { useState } from "preact/hooks";
import { api, can, when } from "../api.js";
import { Action, Loading, Problem, Status, useLoad } from "../components.jsx";

export function SchedulesPage({ me }) {
  const list = useLoad(() => api("/v1/schedules"), []);
  const manage = can(me, "schedules:manage");
  const [form, setForm] = useState({ workflow: "", cron: "0 9 * * *", timezone: "UTC" });
  return (
    <section aria-labelledby="schedules-title">
      <h1 id="schedules-title">Schedules</h1>
      <Problem error={list.error} />
      {list.loading ? <Loading what="schedules" /> : list.value?.items.length === 0 ? (
        <p class="empty">No schedules.</p>
      ) : (
        <div class="table-wrap">
          <table>
            <thead><tr><th>Workflow</th><th>Cron</th><th>Zone</th><th>Status</th><th>Next fire</th><th>Last fired</th><th><span class="sr">Actions</span></th></tr></thead>
            <tbody>
              {list.value?.items.map((s) => (
                <tr>
                  <td><a href={`#/workflows/${s.workflow}`}>{s.workflow}</a></td>
                  <td><code>{s.cron}</code></td>
                  <td>{s.timezone}</td>
                  <td><Status status={s.status} />{s.last_error ? <span class="error-text" title={s.last_error}> ⚠ {s.last_error}</span> : null}</td>
                  <td>{when(s.next_run_at)}</td>
                  <td>{s.last_run_id ? <a href={`#/runs/${s.last_run_id}`}>{when(s.last_fired_at)}</a> : when(s.last_fired_at)}</td>
                  <td>
                    {manage && (
                      <>
                        <Action label={s.status === "active" ? "Pause" : "Resume"}
                          run={() => api(`/v1/schedules/${s.id}`, { method: "PATCH", body: { status: s.status === "active" ? "paused" : "active" } })}
                          onDone={list.reload} />
                        <Action label="Delete" kind="danger" run={() => api(`/v1/schedules/${s.id}`, { method: "DELETE" })} onDone={list.reload} />
                      </>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {manage && (
        <div class="card">
          <h2>New schedule</h2>
          <form class="schema-form" onSubmit={(e) => e.preventDefault()}>
            {[["workflow", "Workflow key"], ["cron", "Cron (5 fields)"], ["timezone", "Time zone (IANA)"]].map(([k, label]) => (
              <div class="field">
                <label for={`schedule-${k}`}>{label}</label>
                <input id={`schedule-${k}`} value={form[k]} onInput={(e) => setForm({ ...form, [k]: e.currentTarget.value })} />
              </div>
            ))}
            <Action label="Create schedule" kind="primary" run={() => api("/v1/schedules", { method: "POST", body: form })} onDone={list.reload} />
          </form>
        </div>
      )}
    </section>
  );
}
