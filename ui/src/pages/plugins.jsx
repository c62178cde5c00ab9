import { useRef, useState } from "preact/hooks";
import { api, can, enc, splitList } from "../api.js";
import { navigate } from "../router.js";
import { Action, Json, Loading, Problem, useLoad } from "../components.jsx";

/** Another tenant's public plugin is named `publisher/name`. */
const foreign = (p) => p.name.includes("/");
const source = (p) => (p.builtin ? "built-in" : foreign(p) ? `${p.publisher} (public)` : `this tenant (${p.visibility})`);

function Upload({ onUploaded }) {
  const [dragging, setDragging] = useState(false);
  const [visibility, setVisibility] = useState("private");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(null);
  const input = useRef(null);

  async function send(file) {
    if (!file) return;
    setError(null);
    setBusy(file.name);
    const form = new FormData();
    form.append("component", file, file.name);
    form.append("visibility", visibility);
    try {
      onUploaded(await api("/v1/plugins", { method: "POST", form }));
    } catch (e) {
      setError(e);
    } finally {
      setBusy(null);
      if (input.current) input.current.value = "";
    }
  }

  return (
    <div class="card">
      <h2>Upload a component</h2>
      <div
        class={`dropzone${dragging ? " over" : ""}`}
        onDragOver={(e) => { e.preventDefault(); setDragging(true); }}
        onDragLeave={() => setDragging(false)}
        onDrop={(e) => { e.preventDefault(); setDragging(false); send(e.dataTransfer.files[0]); }}
      >
        <p>{busy ? `Uploading ${busy}…` : "Drop a .wasm component here, or"}</p>
        <label class="button" for="component-file">Choose a file</label>
        <input id="component-file" ref={input} type="file" accept=".wasm,application/wasm" class="visually-hidden"
          onChange={(e) => send(e.currentTarget.files[0])} />
        <label class="inline">
          Visibility
          <select value={visibility} onChange={(e) => setVisibility(e.currentTarget.value)}>
            <option value="private">private</option>
            <option value="public">public</option>
          </select>
        </label>
      </div>
      <Problem error={error} />
    </div>
  );
}

export function PluginsPage({ me }) {
  const [q, setQ] = useState("");
  const list = useLoad(() => api(`/v1/plugins?limit=100${q ? `&q=${enc(q)}` : ""}`), [q]);
  const [uploaded, setUploaded] = useState(null);
  return (
    <section aria-labelledby="plugins-title">
      <h1 id="plugins-title">Plugins</h1>
      {can(me, "plugins:publish") && (
        <Upload onUploaded={(p) => { setUploaded(p); list.reload(); }} />
      )}
      {uploaded && (
        <p class="notice" role="status">
          Uploaded <a href={`#/plugins/${enc(uploaded.name)}`}>{uploaded.name}@{uploaded.version}</a>.
          Grant it capabilities before a workflow uses them.
        </p>
      )}
      <div class="filters" role="search">
        <label>Search<input type="search" value={q} onInput={(e) => setQ(e.currentTarget.value)} placeholder="name or description" /></label>
      </div>
      <Problem error={list.error} />
      {list.loading ? <Loading what="plugins" /> : (
        <div class="table-wrap">
          <table>
            <thead><tr><th>Plugin</th><th>Version</th><th>Description</th><th>Capabilities</th><th>Source</th></tr></thead>
            <tbody>
              {list.value?.items.map((p) => (
                <tr>
                  <td><a href={`#/plugins/${enc(p.name)}`}><code>{p.name}</code></a></td>
                  <td>{p.version}{p.yanked ? <span class="muted"> yanked</span> : null}</td>
                  <td>{p.description}</td>
                  <td>{p.capabilities.join(", ") || "—"}</td>
                  <td>{source(p)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

function Grants({ name, me }) {
  const grants = useLoad(() => api(`/v1/plugins/${enc(name)}/grants`), [name]);
  const [draft, setDraft] = useState(null);
  if (grants.error) return <Problem error={grants.error} />;
  if (!grants.value) return <Loading what="grants" />;
  const g = draft || grants.value.granted;
  const edit = can(me, "plugins:publish");
  const set = (change) => setDraft({ ...g, ...change });
  return (
    <div class="card">
      <h2>Grants</h2>
      <p>Requested: {grants.value.requested.join(", ") || "nothing"}.{" "}
        {grants.value.ungranted.length > 0 && <strong>Not granted: {grants.value.ungranted.join(", ")}.</strong>}</p>
      <form class="schema-form" onSubmit={(e) => e.preventDefault()}>
        <div class="field">
          <label for="grant-hosts">Allowed hosts</label>
          <input id="grant-hosts" disabled={!edit} value={g.allowed_hosts.join(", ")}
            onInput={(e) => set({ allowed_hosts: splitList(e.currentTarget.value) })} />
        </div>
        <div class="field">
          <label for="grant-secrets">Secrets</label>
          <input id="grant-secrets" disabled={!edit} value={g.secrets.join(", ")}
            onInput={(e) => set({ secrets: splitList(e.currentTarget.value) })} />
        </div>
        {["mail", "kv", "files", "notify"].map((c) => (
          <div class="field check">
            <input id={`grant-${c}`} type="checkbox" disabled={!edit} checked={g[c]} onChange={(e) => set({ [c]: e.currentTarget.checked })} />
            <label for={`grant-${c}`}>{c}</label>
          </div>
        ))}
        {edit && (
          <Action label="Save grants" kind="primary" disabled={!draft}
            run={() => api(`/v1/plugins/${enc(name)}/grants`, { method: "PUT", body: g })}
            onDone={() => { setDraft(null); grants.reload(); }} />
        )}
      </form>
    </div>
  );
}

export function PluginPage({ name, me }) {
  const versions = useLoad(() => api(`/v1/plugins/${enc(name)}`), [name]);
  const [index, setIndex] = useState(0);
  if (versions.error) return <Problem error={versions.error} />;
  if (!versions.value) return <Loading what="the plugin" />;
  const items = versions.value.items;
  const p = items[index] || items[0];
  return (
    <section aria-labelledby="plugin-title">
      <p class="crumbs"><a href="#/plugins">Plugins</a> / <code>{name}</code></p>
      <h1 id="plugin-title">{p.name} <span class="muted">{p.version}</span></h1>
      <p>{p.description}</p>
      <div class="filters">
        <label>
          Version
          <select value={index} onChange={(e) => setIndex(Number(e.currentTarget.value))}>
            {items.map((v, i) => <option value={i}>{v.version}{v.yanked ? " (yanked)" : ""}</option>)}
          </select>
        </label>
      </div>
      <dl class="facts">
        <dt>Source</dt><dd>{source(p)}</dd>
        <dt>Capabilities</dt><dd>{p.capabilities.join(", ") || "none"}</dd>
        <dt>Size</dt><dd>{(p.size_bytes / 1024).toFixed(0)} KiB</dd>
        <dt>SHA-256</dt><dd><code class="hash">{p.sha256}</code></dd>
      </dl>
      {!p.builtin && !foreign(p) && can(me, "plugins:publish") && !p.yanked && (
        <Action label={`Yank ${p.version}`} kind="danger"
          run={() => api(`/v1/plugins/${enc(p.name)}/${enc(p.version)}`, { method: "DELETE" })}
          onDone={() => (items.length > 1 ? versions.reload() : navigate("/plugins"))} />
      )}
      <div class="grid2">
        <div><h2>Config schema</h2><Json value={p.config_schema} label="Config schema" /></div>
        <div><h2>Output schema</h2><Json value={p.output_schema} label="Output schema" /></div>
      </div>
      <h2>Input schema</h2>
      <Json value={p.input_schema} label="Input schema" />
      {!p.builtin && <Grants name={p.name} me={me} />}
    </section>
  );
}
