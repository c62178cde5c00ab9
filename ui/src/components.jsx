import { useCallback, useEffect, useMemo, useState } from "preact/hooks";
import dagre from "@dagrejs/dagre";
import { splitList } from "./api.js";

/** Loads with `load()` on mount and whenever `deps` change. */
export function useLoad(load, deps) {
  const [state, setState] = useState({ value: null, error: null, loading: true });
  const reload = useCallback(() => {
    let live = true;
    load().then(
      (value) => live && setState({ value, error: null, loading: false }),
      (error) => live && setState((s) => ({ ...s, error, loading: false })),
    );
    return () => (live = false);
  }, deps);
  useEffect(reload, [reload]);
  return { ...state, reload, set: (value) => setState((s) => ({ ...s, value })) };
}

/** An API error as the API stated it: title, detail, and per-step items. */
export function Problem({ error }) {
  if (!error) return null;
  const p = error.problem || {};
  return (
    <div class="problem" role="alert">
      <strong>{p.title || "Error"}{error.status ? ` (${error.status})` : ""}</strong>
      <p>{p.detail || error.message}</p>
      {p.errors?.length > 0 && (
        <ul>
          {p.errors.map((e) => (
            <li>{e.step ? <code>{e.step}</code> : null}{e.step ? ": " : ""}{e.message}</li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function Status({ status }) {
  return <span class={`status s-${status}`}>{status}</span>;
}

export function Json({ value, label }) {
  if (value === null || value === undefined) return <p class="muted">none</p>;
  return (
    <pre class="json" tabindex="0" aria-label={label}>
      {JSON.stringify(value, null, 2)}
    </pre>
  );
}

export function Loading({ what }) {
  return <p class="loading" aria-live="polite">Loading {what}…</p>;
}

/** An action button that shows its own progress and the API's error. */
export function Action({ label, run, onDone, kind = "", disabled }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  async function click() {
    setBusy(true);
    setError(null);
    try {
      const result = await run();
      onDone?.(result);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }
  return (
    <span class="action">
      <button class={kind} onClick={click} disabled={busy || disabled}>
        {busy ? `${label}…` : label}
      </button>
      {error && <Problem error={error} />}
    </span>
  );
}

const NODE_W = 150;
const NODE_H = 40;

/**
 * The workflow's steps as a graph laid out by dagre, left to right. Each
 * node is coloured by `statuses[id]` when given and is a button: Enter or
 * a click calls `onSelect(id)`.
 */
export function Dag({ steps, statuses = {}, selected, onSelect }) {
  const layout = useMemo(() => {
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 46, marginx: 8, marginy: 8 });
    g.setDefaultEdgeLabel(() => ({}));
    const ids = new Set(steps.map((s) => s.id));
    for (const s of steps) g.setNode(s.id, { width: NODE_W, height: NODE_H });
    for (const s of steps) {
      for (const d of s.depends_on || []) if (ids.has(d)) g.setEdge(d, s.id);
      if (s.catch) {
        const id = `${s.id}.catch`;
        g.setNode(id, { width: NODE_W, height: NODE_H, catchOf: s.id });
        g.setEdge(s.id, id, { dashed: true });
      }
    }
    dagre.layout(g);
    return {
      width: g.graph().width || NODE_W,
      height: g.graph().height || NODE_H,
      nodes: g.nodes().map((id) => ({ id, ...g.node(id) })),
      edges: g.edges().map((e) => ({ ...e, ...g.edge(e) })),
    };
  }, [steps]);

  return (
    <svg
      class="dag"
      viewBox={`0 0 ${layout.width} ${layout.height}`}
      width={layout.width}
      height={layout.height}
      role="group"
      aria-label="Workflow graph"
    >
      <defs>
        <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
          <path d="M0,0 L10,5 L0,10 z" class="arrowhead" />
        </marker>
      </defs>
      {layout.edges.map((e) => (
        <polyline
          class={`edge${e.dashed ? " dashed" : ""}`}
          points={e.points.map((p) => `${p.x},${p.y}`).join(" ")}
          marker-end="url(#arrow)"
        />
      ))}
      {layout.nodes.map((n) => {
        const status = statuses[n.id] || (n.catchOf ? "unused" : "idle");
        const label = n.id.length > 20 ? `${n.id.slice(0, 19)}…` : n.id;
        return (
          <g
            class={`node n-${status}${selected === n.id ? " selected" : ""}`}
            transform={`translate(${n.x - NODE_W / 2},${n.y - NODE_H / 2})`}
            tabindex={onSelect ? 0 : undefined}
            role={onSelect ? "button" : undefined}
            aria-label={`${n.id}: ${status}`}
            data-step={n.id}
            onClick={() => onSelect?.(n.id)}
            onKeyDown={(e) => {
              if (onSelect && (e.key === "Enter" || e.key === " ")) {
                e.preventDefault();
                onSelect(n.id);
              }
            }}
          >
            <rect width={NODE_W} height={NODE_H} rx="6" />
            <text x={NODE_W / 2} y={NODE_H / 2 + 4} text-anchor="middle">{label}</text>
          </g>
        );
      })}
    </svg>
  );
}

/**
 * A form generated from a JSON Schema object: one field per property
 * (strings, numbers, integers, booleans, enums, string lists), and a JSON
 * text area for anything else. Calls `onSubmit(value)`; the server checks
 * the value against the schema and its answer is shown as it is.
 */
export function SchemaForm({ schema, submitLabel, onSubmit, idPrefix = "f" }) {
  const props = schema?.type === "object" || schema?.properties ? schema.properties || {} : null;
  const required = new Set(schema?.required || []);
  const [values, setValues] = useState({});
  const [raw, setRaw] = useState("{}");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  function field(name, prop) {
    const id = `${idPrefix}-${name}`;
    const set = (v) => setValues((old) => ({ ...old, [name]: v }));
    const label = (
      <label for={id}>
        {prop.title || name}
        {required.has(name) ? <span aria-hidden="true"> *</span> : null}
      </label>
    );
    const help = prop.description ? <small>{prop.description}</small> : null;
    const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
    if (prop.enum) {
      return (
        <div class="field">
          {label}
          <select id={id} name={name} required={required.has(name)} onChange={(e) => set(e.currentTarget.value)}>
            <option value="">—</option>
            {prop.enum.map((v) => <option value={v}>{String(v)}</option>)}
          </select>
          {help}
        </div>
      );
    }
    if (type === "boolean") {
      return (
        <div class="field check">
          <input id={id} name={name} type="checkbox" onChange={(e) => set(e.currentTarget.checked)} />
          {label}
          {help}
        </div>
      );
    }
    if (type === "number" || type === "integer") {
      return (
        <div class="field">
          {label}
          <input id={id} name={name} type="number" step={type === "integer" ? "1" : "any"}
            required={required.has(name)}
            onInput={(e) => set(e.currentTarget.value === "" ? undefined : Number(e.currentTarget.value))} />
          {help}
        </div>
      );
    }
    if (type === "string") {
      const long = (prop.maxLength || 0) > 200 || prop.format === "textarea";
      const inputType = prop.format === "email" ? "email" : prop.format === "date" ? "date" : "text";
      return (
        <div class="field">
          {label}
          {long ? (
            <textarea id={id} name={name} required={required.has(name)} onInput={(e) => set(e.currentTarget.value)} />
          ) : (
            <input id={id} name={name} type={inputType} required={required.has(name)}
              onInput={(e) => set(e.currentTarget.value === "" ? undefined : e.currentTarget.value)} />
          )}
          {help}
        </div>
      );
    }
    if (type === "array" && prop.items?.type === "string") {
      return (
        <div class="field">
          {label}
          <input id={id} name={name} placeholder="comma, separated" required={required.has(name)}
            onInput={(e) => set(splitList(e.currentTarget.value))} />
          {help}
        </div>
      );
    }
    return (
      <div class="field">
        {label}
        <textarea id={id} name={name} class="code" placeholder="JSON"
          onInput={(e) => {
            try {
              set(e.currentTarget.value ? JSON.parse(e.currentTarget.value) : undefined);
            } catch {
              set(e.currentTarget.value);
            }
          }} />
        {help}
      </div>
    );
  }

  async function submit(e) {
    e.preventDefault();
    setError(null);
    let value;
    if (props) {
      value = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined));
    } else {
      try {
        value = JSON.parse(raw || "null");
      } catch (err) {
        setError({ message: `not valid JSON: ${err.message}` });
        return;
      }
    }
    setBusy(true);
    try {
      await onSubmit(value);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form class="schema-form" onSubmit={submit}>
      {props ? (
        Object.entries(props).map(([name, prop]) => field(name, prop || {}))
      ) : (
        <div class="field">
          <label for={`${idPrefix}-json`}>JSON</label>
          <textarea id={`${idPrefix}-json`} class="code" value={raw} onInput={(e) => setRaw(e.currentTarget.value)} />
        </div>
      )}
      <button type="submit" class="primary" disabled={busy}>{busy ? `${submitLabel}…` : submitLabel}</button>
      <Problem error={error} />
    </form>
  );
}
