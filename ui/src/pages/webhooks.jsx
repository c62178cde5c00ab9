import { useState } from "preact/hooks";
import { api, can, duration, enc, splitList, when } from "../api.js";
import { Action, Json, Loading, Problem, Status, useLoad } from "../components.jsx";

export function WebhooksPage({ me }) {
  const manage = can(me, "webhooks:manage");
  const list = useLoad(() => (manage ? api("/v1/webhooks") : Promise.resolve({ items: [] })), [manage]);
  const [url, setUrl] = useState("");
  const [events, setEvents] = useState("run.completed, run.failed");
  const [created, setCreated] = useState(null);
  if (!manage) return <section><h1>Webhooks</h1><p class="muted">This key lacks webhooks:manage.</p></section>;
  return (
    <section aria-labelledby="webhooks-title">
      <h1 id="webhooks-title">Webhooks</h1>
      <Problem error={list.error} />
      {list.loading ? <Loading what="webhooks" /> : list.value?.items.length === 0 ? <p class="empty">No webhooks.</p> : (
        <div class="table-wrap">
          <table>
            <thead><tr><th>URL</th><th>Events</th><th>Status</th><th>Failures in a row</th></tr></thead>
            <tbody>
              {list.value.items.map((w) => (
                <tr>
                  <td><a href={`#/webhooks/${w.id}`}>{w.url}</a></td>
                  <td>{w.events.join(", ")}</td>
                  <td><Status status={w.status} />{w.disabled_reason ? <span class="muted"> {w.disabled_reason}</span> : null}</td>
                  <td>{w.consecutive_failures}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <div class="card">
        <h2>New webhook</h2>
        <form class="schema-form" onSubmit={(e) => e.preventDefault()}>
          <div class="field"><label for="webhook-url">URL</label><input id="webhook-url" type="url" value={url} onInput={(e) => setUrl(e.currentTarget.value)} /></div>
          <div class="field"><label for="webhook-events">Events (comma separated, or *)</label><input id="webhook-events" value={events} onInput={(e) => setEvents(e.currentTarget.value)} /></div>
          <Action label="Create webhook" kind="primary"
            run={() => api("/v1/webhooks", { method: "POST", body: { url, events: splitList(events) } })}
            onDone={(w) => { setCreated(w); list.reload(); }} />
        </form>
        {created?.secret && <p class="notice" role="status">Signing secret (shown once): <code>{created.secret}</code></p>}
      </div>
    </section>
  );
}

export function WebhookPage({ id }) {
  const hook = useLoad(() => api(`/v1/webhooks/${enc(id)}`), [id]);
  const deliveries = useLoad(() => api(`/v1/webhooks/${enc(id)}/deliveries?limit=50`), [id]);
  const reload = () => { hook.reload(); deliveries.reload(); };
  if (hook.error) return <Problem error={hook.error} />;
  if (!hook.value) return <Loading what="the webhook" />;
  const w = hook.value;
  return (
    <section aria-labelledby="webhook-title">
      <p class="crumbs"><a href="#/webhooks">Webhooks</a> / <code>{w.id}</code></p>
      <div class="heading"><h1 id="webhook-title">{w.url}</h1><Status status={w.status} /></div>
      <p>Events: {w.events.join(", ")}. {w.disabled_reason}</p>
      <div class="buttons">
        <Action label={w.status === "active" ? "Disable" : "Enable"}
          run={() => api(`/v1/webhooks/${w.id}`, { method: "PATCH", body: { status: w.status === "active" ? "disabled" : "active" } })} onDone={reload} />
        <Action label="Delete" kind="danger" run={() => api(`/v1/webhooks/${w.id}`, { method: "DELETE" })} onDone={() => (window.location.hash = "/webhooks")} />
      </div>
      <h2>Deliveries</h2>
      <Problem error={deliveries.error} />
      {!deliveries.value ? <Loading what="deliveries" /> : deliveries.value.items.length === 0 ? <p class="empty">No deliveries yet.</p> : (
        <ol class="attempts">
          {deliveries.value.items.map((d) => (
            <li>
              <p>
                <strong>{d.event_type}</strong> <Status status={d.status} /> {when(d.created_at)} · {d.attempts} attempt{d.attempts === 1 ? "" : "s"}
                {d.next_attempt_at ? ` · next ${when(d.next_attempt_at)}` : ""}{" "}
                <Action label="Redeliver" run={() => api(`/v1/webhooks/${w.id}/deliveries/${d.id}/redeliver`, { method: "POST" })} onDone={reload} />
              </p>
              <ul>
                {d.attempt_log.map((a) => (
                  <li>#{a.attempt} {when(a.at)}: {a.status_code ?? "no response"} {a.error || ""} ({duration(a.duration_ms)})</li>
                ))}
              </ul>
              <details><summary>Payload</summary><Json value={d.payload} label="Payload" /></details>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
