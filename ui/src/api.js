// The dashboard's only way to the server: the public HTTP API, with the key
// the user signed in with. Errors carry the API's problem document.
import { fetchEventSource } from "@microsoft/fetch-event-source";

const KEY = "weft.key";

export const session = {
  key: () => sessionStorage.getItem(KEY),
  signIn: (key) => sessionStorage.setItem(KEY, key),
  signOut: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

function headers(extra = {}) {
  const key = session.key();
  return { ...(key ? { authorization: `Bearer ${key}` } : {}), ...extra };
}

/** Calls the API; resolves with the parsed JSON body (or null for 204). */
export async function api(path, { method = "GET", body, form } = {}) {
  const init = { method, headers: headers() };
  if (form) {
    init.body = form;
  } else if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let value = null;
  if (text) {
    try {
      value = JSON.parse(text);
    } catch {
      value = { detail: text };
    }
  }
  if (!response.ok) {
    if (response.status === 401) window.dispatchEvent(new CustomEvent("weft:unauthorized"));
    throw new ApiError(response.status, value);
  }
  return value;
}

/** Every item of a paginated list (stops after `max`). */
export async function all(path, max = 500) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

/**
 * Follows a server-sent event stream of the API (with the key in a header,
 * which EventSource cannot send) and calls `onEvent(parsed data)`;
 * `onOpen()` runs each time the stream is (re)connected, so a caller can
 * reload what may have changed while it was not listening. Reconnects on
 * errors; returns a function that stops it.
 */
export function follow(path, onEvent, onOpen = () => {}) {
  const controller = new AbortController();
  fetchEventSource(path, {
    headers: headers({ accept: "text/event-stream" }),
    signal: controller.signal,
    openWhenHidden: true,
    async onopen(response) {
      const type = response.headers.get("content-type") || "";
      if (!response.ok || !type.startsWith("text/event-stream")) {
        throw new ApiError(response.status, null);
      }
      onOpen();
    },
    onmessage(message) {
      if (!message.data) return;
      try {
        onEvent(JSON.parse(message.data));
      } catch {
        /* a keep-alive or a partial message */
      }
    },
    onerror() {
      // Retry after 2 s (fetch-event-source keeps the last event id).
      return 2000;
    },
  }).catch(() => {});
  return () => controller.abort();
}

export const enc = encodeURIComponent;

/** A comma-separated field as a list, blanks dropped. */
export function splitList(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

export function can(me, scope) {
  return !!me && (me.scopes.includes("admin") || me.scopes.includes(scope));
}

export function when(timestamp) {
  if (!timestamp) return "—";
  const d = new Date(timestamp);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const m = Math.floor(ms / 60_000);
  return `${m} min ${Math.round((ms % 60_000) / 1000)} s`;
}
