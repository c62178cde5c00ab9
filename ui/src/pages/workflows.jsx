import { useState } from "preact/hooks";
import { api, can, enc, when } from "../api.js";
import { navigate } from "../router.js";
import { Action, Dag, Json, Loading, Problem, SchemaForm, Status, useLoad } from "../components.jsx";

export function WorkflowsPage({ me }) {
  const [q, setQ] = useState("");
  const [status, setStatus] = useState("");
  const params = new URLSearchParams(Object.entries({ q, status }).filter(([, v]) => v)).toString();
  const list = useLoad(() => api(`/v1/workflows?limit=100${params ? `&${params}` : ""}`), [params]);
  return (
    <section aria-labelledby="wf-title">
      <h1 id="wf-title">Workflows</h1>
      <div class="filters" role="search">
        <label>Search<input type="search" value={q} onInput={(e) => setQ(e.currentTarget.value)} placeholder="key or name" /></label>
        <label>
          Status
          <select value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
            <option value="">any</option>
            <option value="draft">draft</option>
            <option value="published">published</option>
            <option value="archived">archived</option>
          </select>
        </label>
      </div>
      <Problem error={list.error} />
      {list.loading ? <Loading what="workflows" /> : list.value?.items.length === 0 ? (
        <p class="empty">No workflows{q || status ? " match" : " yet: create one with POST /v1/workflows"}.</p>
      ) : (
        <div class="table-wrap">
          <table>
            <thead><tr><th>Key</th><th>Name</th><th>Latest</th><th>Published</th><th>Updated</th></tr></thead>
            <tbody>
              {list.value?.items.map((w) => (
                <tr>
                  <td><a href={`#/workflows/${enc(w.key)}`}><code>{w.key}</code></a></td>
                  <td>{w.name}</td>
                  <td>{w.version} <Status status={w.status} /></td>
                  <td>{w.published_version || "—"}</td>
                  <td>{when(w.updated_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {!can(me, "workflows:write") && <p class="muted">This key can read workflows but not change them.</p>}
    </section>
  );
}

export function WorkflowPage({ wfKey, me }) {
  const versions = useLoad(() => api(`/v1/workflows/${enc(wfKey)}/versions`), [wfKey]);
  const [version, setVersion] = useState(null);
  const shown = version || "latest";
  const workflow = useLoad(() => api(`/v1/workflows/${enc(wfKey)}?version=${enc(shown)}`), [wfKey, shown]);
  const [newKey, setNewKey] = useState("");
  const [started, setStarted] = useState(null);
  const w = workflow.value;
  const reload = () => {
    versions.reload();
    workflow.reload();
  };
  const write = can(me, "workflows:write");

  if (workflow.error && !w) return <Problem error={workflow.error} />;
  if (!w) return <Loading what="the workflow" />;
  const definition = w.definition || {};

  return (
    <section aria-labelledby="wf-title">
      <p class="crumbs"><a href="#/workflows">Workflows</a> / <code>{w.key}</code></p>
      <div class="heading">
        <h1 id="wf-title">{w.name}</h1>
        <Status status={w.status} />
      </div>
      {w.description && <p>{w.description}</p>}
      <div class="filters">
        <label>
          Version
          <select value={w.version} onChange={(e) => setVersion(e.currentTarget.value)} name="version">
            {(versions.value?.items || []).map((v) => <option value={v.version}>{v.version} ({v.status})</option>)}
          </select>
        </label>
        <a href={`#/runs?workflow=${enc(w.key)}`}>Runs of this workflow</a>
      </div>
      {write && (
        <div class="buttons">
          {w.status === "draft" && !w.archived && (
            <Action label={`Publish ${w.version}`} kind="primary"
              run={() => api(`/v1/workflows/${enc(w.key)}/publish`, { method: "POST", body: { version: w.version } })} onDone={reload} />
          )}
          {w.archived ? (
            <Action label="Unarchive" run={() => api(`/v1/workflows/${enc(w.key)}/unarchive`, { method: "POST" })} onDone={reload} />
          ) : (
            <Action label="Archive" kind="danger" run={() => api(`/v1/workflows/${enc(w.key)}`, { method: "DELETE" })} onDone={reload} />
          )}
          <span class="inline-form">
            <label for="clone-key">Clone as</label>
            <input id="clone-key" value={newKey} onInput={(e) => setNewKey(e.currentTarget.value)} placeholder="new-key" />
            <Action label="Clone" disabled={!newKey}
              run={() => api(`/v1/workflows/${enc(w.key)}/clone`, { method: "POST", body: { new_key: newKey } })}
              onDone={(c) => navigate(`/workflows/${enc(c.key)}`)} />
          </span>
        </div>
      )}
      <h2>Graph</h2>
      <div class="dag-wrap"><Dag steps={definition.steps || []} /></div>
      {can(me, "runs:start") && !w.archived && (
        <div class="card">
          <h2>Start a run of {w.version}</h2>
          <SchemaForm key={w.version} idPrefix="input" schema={definition.input_schema || null} submitLabel="Start run"
            onSubmit={async (input) => {
              const run = await api("/v1/runs", { method: "POST", body: { workflow: w.key, version: w.version, input } });
              setStarted(run.id);
              navigate(`/runs/${run.id}`);
            }} />
          {started && <p>Started <a href={`#/runs/${started}`}>{started}</a>.</p>}
        </div>
      )}
      <h2>Steps</h2>
      <div class="table-wrap">
        <table>
          <thead><tr><th>Step</th><th>Uses</th><th>Depends on</th><th>Retry</th></tr></thead>
          <tbody>
            {(definition.steps || []).map((s) => (
              <tr>
                <td><code>{s.id}</code></td>
                <td>{s.uses}{s.catch ? <span class="muted"> (catch: {s.catch.uses})</span> : null}</td>
                <td>{(s.depends_on || []).join(", ") || "—"}</td>
                <td>{s.retry ? `${s.retry.max_attempts}×` : "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <details>
        <summary>Definition (JSON)</summary>
        <Json value={definition} label="Definition" />
      </details>
      <h2>Versions</h2>
      <ul class="versions">
        {(versions.value?.items || []).map((v) => (
          <li><button class="link" onClick={() => setVersion(v.version)}>{v.version}</button> <Status status={v.status} /> <span class="muted">{when(v.created_at)}</span></li>
        ))}
      </ul>
    </section>
  );
}
