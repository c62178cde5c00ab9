import { StepTasks } from "./tasks.jsx";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, all, can, duration, enc, follow, when } from "../api.js";
import { navigate } from "../router.js";
import { Action, Dag, Json, Loading, Problem, SchemaForm, Status, useLoad } from "../components.jsx";

const RUN_STATUSES = ["pending", "running", "paused", "completed", "failed", "cancelled", "terminated", "declined"];
const TERMINAL = new Set(["completed", "failed", "cancelled", "terminated", "declined"]);

/** Calls `fn` at most once per `ms`, trailing. */
function useThrottled(fn, ms) {
  const timer = useRef(null);
  const latest = useRef(fn);
  latest.current = fn;
  useEffect(() => () => clearTimeout(timer.current), []);
  return () => {
    if (timer.current) return;
    timer.current = setTimeout(() => {
      timer.current = null;
      latest.current();
    }, ms);
  };
}

export function RunsPage({ me, query }) {
  const status = query.status || "";
  const workflow = query.workflow || "";
  // One label, `name:value` (the value may hold spaces and colons).
  const label = query.label || "";
  const params = new URLSearchParams(Object.entries({ status, workflow, label }).filter(([, v]) => v)).toString();
  const [labelText, setLabelText] = useState(label);
  useEffect(() => setLabelText(label), [label]);
  const runs = useLoad(() => api(`/v1/runs?limit=50${params ? `&${params}` : ""}`), [params]);
  const workflows = useLoad(() => all("/v1/workflows"), []);
  const [live, setLive] = useState(false);
  const refresh = useThrottled(runs.reload, 400);
  // Older pages, fetched on request; the live reload refreshes the newest.
  const [older, setOlder] = useState({ items: [], cursor: undefined });
  useEffect(() => setOlder({ items: [], cursor: undefined }), [params]);
  const cursor = older.cursor === undefined ? runs.value?.next_cursor : older.cursor;
  const shown = [...(runs.value?.items || []), ...older.items.filter((o) => !runs.value?.items.some((r) => r.id === o.id))];

  useEffect(() => {
    // Reload once connected: covers what happened between the first load
    // and the subscription.
    const stop = follow("/v1/events", () => refresh(), () => {
      setLive(true);
      refresh();
    });
    return () => {
      setLive(false);
      stop();
    };
  }, [params]);

  const filter = (change) => navigate("/runs", { status, workflow, label, ...change });

  return (
    <section aria-labelledby="runs-title">
      <div class="heading">
        <h1 id="runs-title">Runs</h1>
        <span class={`live${live ? " on" : ""}`} aria-live="polite">{live ? "live" : "offline"}</span>
      </div>
      <div class="filters" role="search">
        <label>
          Status
          <select value={status} onChange={(e) => filter({ status: e.currentTarget.value })} name="status">
            <option value="">any</option>
            {RUN_STATUSES.map((s) => <option value={s}>{s}</option>)}
          </select>
        </label>
        <label>
          Workflow
          <select value={workflow} onChange={(e) => filter({ workflow: e.currentTarget.value })} name="workflow">
            <option value="">any</option>
            {(workflows.value || []).map((w) => <option value={w.key}>{w.key}</option>)}
          </select>
        </label>
        <form class="label-filter" onSubmit={(e) => { e.preventDefault(); filter({ label: labelText.trim() }); }}>
          <label>
            Labels
            <input name="label" value={labelText} placeholder="customer:c-42" onInput={(e) => setLabelText(e.currentTarget.value)} />
          </label>
          <button type="submit">Filter</button>
        </form>
      </div>
      <Problem error={runs.error} />
      {runs.loading ? (
        <Loading what="runs" />
      ) : runs.value?.items.length === 0 ? (
        <p class="empty">No runs{status || workflow || label ? " match these filters" : " yet: start one from a workflow"}.</p>
      ) : (
        <div class="table-wrap">
          <table class="runs">
            <thead>
              <tr><th>Run</th><th>Workflow</th><th>Status</th><th>Started</th><th class="wide-only">Duration</th><th class="wide-only">Labels</th></tr>
            </thead>
            <tbody>
              {shown.map((r) => (
                <tr data-run={r.id} data-status={r.status}>
                  <td><a href={`#/runs/${r.id}`}><code>{r.id.slice(-12)}</code></a></td>
                  <td>{r.workflow} <span class="muted">{r.version}</span></td>
                  <td><Status status={r.status} />{r.queued ? <span class="muted"> queued</span> : null}{r.held_at ? <span class="muted"> on hold</span> : null}</td>
                  <td class="when">{when(r.created_at)}</td>
                  <td class="wide-only">{duration(r.duration_ms)}</td>
                  <td class="wide-only"><Labels labels={r.labels} /></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {cursor && (
        <Action label="Show older runs" run={() => api(`/v1/runs?limit=50&cursor=${enc(cursor)}${params ? `&${params}` : ""}`)}
          onDone={(page) => setOlder((o) => ({ items: [...o.items, ...page.items], cursor: page.next_cursor }))} />
      )}
      {!can(me, "runs:read") && <p class="muted">This key lacks runs:read.</p>}
    </section>
  );
}

/** A run's labels as chips; each filters the list by it. */
function Labels({ labels }) {
  return (
    <span class="labels">
      {Object.entries(labels || {}).map(([name, value]) => (
        <a class="chip" href={`#/runs?label=${enc(`${name}:${value}`)}`} title={`Runs labelled ${name}:${value}`}>{name}: {value}</a>
      ))}
    </span>
  );
}

/** Attempt bars on one time axis, from the run's start to now or its end. */
function Timeline({ run, onSelect }) {
  const start = Date.parse(run.started_at || run.created_at);
  const end = run.ended_at ? Date.parse(run.ended_at) : Date.now();
  const span = Math.max(end - start, 1);
  const rows = (run.steps || []).filter((s) => s.attempt_log.length > 0 || s.started_at);
  if (rows.length === 0) return <p class="muted">No attempts yet.</p>;
  return (
    <ol class="timeline" aria-label="Attempts over time">
      {rows.map((s) => (
        <li>
          <button class="link step-name" onClick={() => onSelect(s.id)}>{s.id}</button>
          <div class="track">
            {(s.attempt_log.length ? s.attempt_log : [{ attempt: 1, status: s.status, started_at: s.started_at, ended_at: s.ended_at }]).map((a) => {
              const from = Date.parse(a.started_at) - start;
              const to = (a.ended_at ? Date.parse(a.ended_at) : end) - start;
              // Clamped so an instant attempt at either end still shows.
              const left = Math.min(99, Math.max(0, (from / span) * 100));
              const width = Math.max(1, ((to - from) / span) * 100);
              const text = `attempt ${a.attempt}: ${a.status}, ${duration(a.ended_at ? to - from : null)}`;
              return (
                <span class={`bar b-${a.status}`} style={{ left: `${left}%`, width: `${Math.min(width, 100 - left)}%` }} title={text}>
                  <span class="sr">{text}</span>
                </span>
              );
            })}
          </div>
          <span class="muted">{s.attempts > 1 ? `${s.attempts} attempts` : duration(s.duration_ms)}</span>
        </li>
      ))}
    </ol>
  );
}

const ITEM_STATUSES = ["completed", "failed", "running", "pending"];

/** A `for_each` step's items: counts, and the items themselves on demand. */
function StepItems({ run, step }) {
  const counts = step.items;
  const [status, setStatus] = useState("");
  const [open, setOpen] = useState(false);
  const [items, setItems] = useState([]);
  const [cursor, setCursor] = useState(null);
  const [error, setError] = useState(null);
  // Only the latest request's answer is shown (the filter may change while
  // one is under way).
  const latest = useRef(0);
  const load = async (from) => {
    const params = new URLSearchParams({ limit: "100", view: "full" });
    if (status) params.set("status", status);
    if (from) params.set("cursor", from);
    const ticket = ++latest.current;
    try {
      const page = await api(`/v1/runs/${enc(run.id)}/steps/${enc(step.id)}/items?${params}`);
      if (ticket !== latest.current) return;
      setItems((before) => (from ? [...before, ...page.items] : page.items));
      setCursor(page.next_cursor);
      setError(null);
    } catch (e) {
      setError(e);
    }
  };
  useEffect(() => {
    if (open) load(null);
  }, [open, status, counts.completed, counts.failed]);
  const done = counts.completed + counts.failed;
  return (
    <div class="card items">
      <h3>Items</h3>
      <p>
        <meter min="0" max={counts.total || 1} value={done} aria-label="Items done">{done} of {counts.total}</meter>{" "}
        {done} of {counts.total} done
      </p>
      <ul class="counts" aria-label="Items by status">
        {ITEM_STATUSES.map((s) => (
          <li><Status status={s} /> {counts[s]}</li>
        ))}
      </ul>
      <details open={open} onToggle={(e) => setOpen(e.currentTarget.open)}>
        <summary>Show items</summary>
        <label for={`items-status-${step.id}`}>Status</label>{" "}
        <select id={`items-status-${step.id}`} value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
          <option value="">Any</option>
          {ITEM_STATUSES.map((s) => <option value={s}>{s}</option>)}
        </select>
        {error && <Problem error={error} />}
        <table class="items-table">
          <thead><tr><th>#</th><th>Status</th><th>Attempts</th><th>Duration</th><th>Output or error</th></tr></thead>
          <tbody>
            {items.map((item) => (
              <tr>
                <td>{item.index}</td>
                <td><Status status={item.status} /></td>
                <td>{item.attempts}</td>
                <td>{duration(item.duration_ms)}</td>
                <td><code class="clip">{JSON.stringify(item.status === "failed" || item.output === null ? item.error : item.output)}</code></td>
              </tr>
            ))}
          </tbody>
        </table>
        {cursor && <button type="button" onClick={() => load(cursor)}>More items</button>}
      </details>
    </div>
  );
}

function StepDetail({ run, step, definitionStep, me, onChanged }) {
  const control = can(me, "runs:control") && !["cancelled", "terminated"].includes(run.status);
  const [override, setOverride] = useState("{}");
  const latest = step.attempt_log[step.attempt_log.length - 1];
  const paused = run.status === "paused" && run.paused_on.includes(step.id);
  const resume = (body) => api(`/v1/runs/${run.id}/resume`, { method: "POST", body: { step_id: step.id, ...body } });

  return (
    <section class="step-detail" aria-labelledby="step-title">
      <h2 id="step-title">
        Step <code>{step.id}</code> <Status status={step.status} />
      </h2>
      <p class="muted">
        {definitionStep?.uses || step.kind} · {step.attempts} attempt{step.attempts === 1 ? "" : "s"} · {duration(step.duration_ms)}
        {step.next_attempt_at ? ` · next attempt ${when(step.next_attempt_at)}` : ""}
      </p>

      {(paused || step.kind === "collect_inputs" || step.kind === "request_user_action") && definitionStep?.config?.assignees && (
        <StepTasks run={run} step={step} me={me} />
      )}
      {paused && definitionStep?.uses === "collect_inputs" && (
        <div class="card">
          <h3>Provide the input this step waits for</h3>
          {control ? (
            <SchemaForm idPrefix={`resume-${step.id}`} schema={definitionStep.config?.schema} submitLabel="Submit"
              onSubmit={async (data) => { await resume({ data }); onChanged(); }} />
          ) : <p class="muted">This key cannot resume runs (runs:control).</p>}
        </div>
      )}
      {paused && definitionStep?.uses === "request_user_action" && (
        <div class="card">
          <h3>Choose an action</h3>
          {control ? (
            <div class="buttons">
              {(definitionStep.config?.actions || []).map((action) => (
                <Action label={action} kind={(definitionStep.config?.decline || []).includes(action) ? "danger" : "primary"}
                  run={() => resume({ action })} onDone={onChanged} />
              ))}
            </div>
          ) : <p class="muted">This key cannot resume runs (runs:control).</p>}
        </div>
      )}

      {step.items && <StepItems run={run} step={step} />}
      {step.status === "failed" && (
        <div class="card failure">
          <h3>Error</h3>
          <Json value={step.error} label="Step error" />
          {control && (
            <>
              <div class="buttons">
                <Action label="Retry step" kind="primary" run={() => resume({})} onDone={onChanged} />
              </div>
              <details>
                <summary>Override the output and continue</summary>
                <label for={`override-${step.id}`}>Output (JSON)</label>
                <textarea id={`override-${step.id}`} class="code" value={override} onInput={(e) => setOverride(e.currentTarget.value)} />
                <Action label="Complete with this output" run={() => resume({ override_output: JSON.parse(override) })} onDone={onChanged} />
              </details>
            </>
          )}
        </div>
      )}

      <div class="grid2">
        <div>
          <h3>{latest?.input ? "Input" : "Config"}</h3>
          <Json value={latest?.input ?? definitionStep?.config ?? null} label="Step input" />
        </div>
        <div>
          <h3>Output</h3>
          <Json value={step.output} label="Step output" />
        </div>
      </div>
      <h3>Attempts</h3>
      {step.attempt_log.length === 0 ? <p class="muted">None.</p> : (
        <ol class="attempts">
          {step.attempt_log.map((a) => (
            <li>
              <p>
                <strong>#{a.attempt}</strong> <Status status={a.status} /> {when(a.started_at)} · {duration(a.duration_ms)}
                {a.host ? <span class="muted"> · {a.host}</span> : null}
              </p>
              {a.error && <p class="error-text">{a.error_kind}: {a.error}</p>}
              {Array.isArray(a.logs) && a.logs.length > 0 && (
                <pre class="logs" tabindex="0" aria-label={`Logs of attempt ${a.attempt}`}>
                  {a.logs.map((l) => `${l.level ?? ""} ${l.message ?? JSON.stringify(l)}`).join("\n")}
                </pre>
              )}
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}

export function RunPage({ id, me }) {
  const run = useLoad(() => api(`/v1/runs/${enc(id)}?view=full`), [id]);
  const r = run.value;
  const definition = useLoad(
    () => (r ? api(`/v1/workflows/${enc(r.workflow)}?version=${enc(r.version)}`).then((w) => w.definition) : Promise.resolve(null)),
    [r?.workflow, r?.version],
  );
  const [selected, setSelected] = useState(null);
  const [terminating, setTerminating] = useState(false);
  const [reason, setReason] = useState("");
  const [rerunFrom, setRerunFrom] = useState("");
  const refresh = useThrottled(run.reload, 250);

  useEffect(() => {
    if (!r || TERMINAL.has(r.status)) return undefined;
    return follow(`/v1/runs/${enc(id)}/events`, () => refresh(), () => refresh());
  }, [id, r && TERMINAL.has(r.status)]);

  const steps = definition.value?.steps || [];
  const statuses = useMemo(() => Object.fromEntries((r?.steps || []).map((s) => [s.id, s.status])), [r]);
  useEffect(() => {
    if (!selected && r?.steps?.length) {
      const interesting = r.steps.find((s) => r.paused_on.includes(s.id)) || r.steps.find((s) => s.status === "failed");
      if (interesting) setSelected(interesting.id);
    }
  }, [r]);

  if (run.error && !r) return <Problem error={run.error} />;
  if (!r) return <Loading what="the run" />;
  const control = can(me, "runs:control");
  const step = r.steps?.find((s) => s.id === selected);
  const definitionStep = steps.find((s) => s.id === selected) || (selected?.endsWith(".catch") ? steps.find((s) => `${s.id}.catch` === selected)?.catch : null);

  return (
    <section aria-labelledby="run-title">
      <p class="crumbs"><a href="#/runs">Runs</a> / <code>{r.id}</code></p>
      <div class="heading">
        <h1 id="run-title">
          <a href={`#/workflows/${enc(r.workflow)}`}>{r.workflow}</a> <span class="muted">{r.version}</span>
        </h1>
        <Status status={r.status} />
      </div>
      <dl class="facts">
        <dt>Created</dt><dd>{when(r.created_at)}</dd>
        <dt>Ended</dt><dd>{when(r.ended_at)}</dd>
        <dt>Duration</dt><dd>{duration(r.duration_ms)}</dd>
        {r.paused_on.length > 0 && (<><dt>Waiting on</dt><dd>{r.paused_on.map((s) => <button class="link" onClick={() => setSelected(s)}>{s}</button>)}</dd></>)}
        {Object.keys(r.labels || {}).length > 0 && (<><dt>Labels</dt><dd><Labels labels={r.labels} /></dd></>)}
        {r.rerun_of && (<><dt>Re-run of</dt><dd><a href={`#/runs/${enc(r.rerun_of)}`}><code>{r.rerun_of.slice(-12)}</code></a></dd></>)}
        {r.held_at && (<><dt>Paused</dt><dd>by an operator {when(r.held_at)}: no new step starts</dd></>)}
      </dl>
      {can(me, "runs:start") && TERMINAL.has(r.status) && steps.length > 0 && (
        <div class="buttons run-actions">
          <span class="inline-form">
            <label for="rerun-from">Re-run from</label>
            <select id="rerun-from" value={rerunFrom} onChange={(e) => setRerunFrom(e.currentTarget.value)}>
              <option value="">choose a step</option>
              {steps.map((s) => <option value={s.id}>{s.id}</option>)}
            </select>
            {rerunFrom && (
              <Action label="Re-run" run={() => api(`/v1/runs/${r.id}/rerun`, { method: "POST", body: { from_step: rerunFrom } })}
                onDone={(created) => navigate(`/runs/${created.id}`)} />
            )}
          </span>
        </div>
      )}
      {control && !TERMINAL.has(r.status) && (
        <div class="buttons run-actions">
          {r.held_at ? (
            <Action label="Unpause run" run={() => api(`/v1/runs/${r.id}/unpause`, { method: "POST" })} onDone={run.reload} />
          ) : (
            <Action label="Pause run" run={() => api(`/v1/runs/${r.id}/pause`, { method: "POST" })} onDone={run.reload} />
          )}
          <Action label="Cancel run" run={() => api(`/v1/runs/${r.id}/cancel`, { method: "POST" })} onDone={run.reload} />
          {!terminating ? (
            <button class="danger" onClick={() => setTerminating(true)}>Terminate…</button>
          ) : (
            <span class="inline-form">
              <label for="terminate-reason">Reason</label>
              <input id="terminate-reason" value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
              <Action label="Terminate now" kind="danger"
                run={() => api(`/v1/runs/${r.id}/terminate`, { method: "POST", body: reason ? { reason } : {} })}
                onDone={() => { setTerminating(false); run.reload(); }} />
              <button class="link" onClick={() => setTerminating(false)}>Keep running</button>
            </span>
          )}
        </div>
      )}
      {r.error && Object.keys(r.error).length > 0 && (
        <div class="card failure"><h2>Run error</h2><Json value={r.error} label="Run error" /></div>
      )}
      <h2>Graph</h2>
      <div class="dag-wrap">
        {steps.length > 0 ? <Dag steps={steps} statuses={statuses} selected={selected} onSelect={setSelected} /> : <Loading what="the definition" />}
      </div>
      <p class="legend" aria-hidden="true">
        {["pending", "running", "held", "paused", "completed", "failed", "skipped", "cancelled"].map((s) => <span class={`status s-${s}`}>{s}</span>)}
      </p>
      <h2>Timeline</h2>
      <Timeline run={r} onSelect={setSelected} />
      {step ? (
        <StepDetail run={r} step={step} definitionStep={definitionStep} me={me} onChanged={run.reload} />
      ) : (
        <p class="muted">Select a step in the graph to see its input, output, error and logs.</p>
      )}
      <div class="grid2">
        <div><h2>Run input</h2><Json value={r.input} label="Run input" /></div>
        <div><h2>Run result</h2><Json value={r.result} label="Run result" /></div>
      </div>
    </section>
  );
}
