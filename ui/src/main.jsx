import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, session } from "./api.js";
import { useRoute, navigate } from "./router.js";
import { RunsPage, RunPage } from "./pages/runs.jsx";
import { WorkflowsPage, WorkflowPage } from "./pages/workflows.jsx";
import { PluginsPage, PluginPage } from "./pages/plugins.jsx";
import { SchedulesPage } from "./pages/schedules.jsx";
import { WebhooksPage, WebhookPage } from "./pages/webhooks.jsx";
import { TasksPage } from "./pages/tasks.jsx";
import { Problem } from "./components.jsx";
import "./style.css";

const SECTIONS = [
  ["runs", "Runs"],
  ["tasks", "Tasks"],
  ["workflows", "Workflows"],
  ["plugins", "Plugins"],
  ["schedules", "Schedules"],
  ["webhooks", "Webhooks"],
];

function SignIn({ onSignedIn }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    session.signIn(key.trim());
    try {
      onSignedIn(await api("/v1/me"));
    } catch (err) {
      session.signOut();
      setError(err);
    } finally {
      setBusy(false);
    }
  }
  return (
    <main class="signin">
      <form onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">Weft</h1>
        <p>Sign in with an API key. It stays in this browser tab only.</p>
        <label for="api-key">API key</label>
        <input
          id="api-key"
          type="password"
          autocomplete="off"
          placeholder="wft_live_…"
          value={key}
          onInput={(e) => setKey(e.currentTarget.value)}
          required
          autofocus
        />
        <button type="submit" disabled={busy || !key.trim()}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        {error && <Problem error={error} />}
      </form>
    </main>
  );
}

function Page({ route, me }) {
  const [section, id] = route.parts;
  switch (section) {
    case "runs":
      return id ? <RunPage key={id} id={id} me={me} /> : <RunsPage me={me} query={route.query} />;
    case "workflows":
      return id ? <WorkflowPage key={id} wfKey={id} me={me} /> : <WorkflowsPage me={me} />;
    case "plugins":
      return id ? <PluginPage key={id} name={id} me={me} /> : <PluginsPage me={me} />;
    case "tasks":
      return <TasksPage me={me} query={route.query} />;
    case "schedules":
      return <SchedulesPage me={me} />;
    case "webhooks":
      return id ? <WebhookPage key={id} id={id} me={me} /> : <WebhooksPage me={me} />;
    default:
      navigate("/runs");
      return null;
  }
}

function App() {
  const [me, setMe] = useState(null);
  const [checking, setChecking] = useState(!!session.key());
  const route = useRoute();

  useEffect(() => {
    if (session.key()) {
      api("/v1/me")
        .then(setMe)
        .catch(() => session.signOut())
        .finally(() => setChecking(false));
    }
    const onUnauthorized = () => {
      session.signOut();
      setMe(null);
    };
    window.addEventListener("weft:unauthorized", onUnauthorized);
    return () => window.removeEventListener("weft:unauthorized", onUnauthorized);
  }, []);

  if (checking) return <p class="loading">Loading…</p>;
  if (!me) return <SignIn onSignedIn={setMe} />;

  return (
    <>
      <a class="skip" href="#main">Skip to content</a>
      <header class="top">
        <span class="brand">Weft</span>
        <nav aria-label="Sections">
          {SECTIONS.map(([path, label]) => (
            <a
              href={`#/${path}`}
              aria-current={route.parts[0] === path ? "page" : undefined}
            >
              {label}
            </a>
          ))}
        </nav>
        <span class="who" title={me.scopes.join(", ")}>
          {me.tenant_name}
        </span>
        <button
          class="link"
          onClick={() => {
            session.signOut();
            setMe(null);
          }}
        >
          Sign out
        </button>
      </header>
      <main id="main" tabindex="-1">
        <Page route={route} me={me} />
      </main>
    </>
  );
}

render(<App />, document.getElementById("app"));
