// Weft step plugins in JavaScript: a thin layer over the bindings
// componentize-js generates for the `weft:plugin/step-plugin` world.
//
// Config, input and output are JavaScript values (integers beyond 2^53
// arrive as BigInt and go back out exactly); a step fails by throwing
// `Retryable`, `Fatal` or `InvalidInput` (anything else thrown is a fatal
// error naming it); the host's capabilities are functions.
//
//   import * as weft from './weft-sdk.js';
//
//   export const step = weft.plugin({
//     name: 'greet', version: '0.1.0', description: 'Greets someone.',
//     configSchema: { type: 'object', required: ['name'] },
//     run(ctx, config, input) {
//       weft.log('info', `greeting ${config.name}`);
//       return { greeting: `Hello, ${config.name}!` };
//     },
//   });
import * as host from 'weft:plugin/host@0.1.0';
import { open } from 'wasi:keyvalue/store@0.2.0-draft';
import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingBody, OutgoingRequest } from 'wasi:http/types@0.2.12';

export class StepError extends Error {}
/** A transient failure: the host retries if the step's policy allows. */
export class Retryable extends StepError {}
/** A permanent failure: not retried. */
export class Fatal extends StepError {}
/** The config or input makes no sense for this plugin: not retried. */
export class InvalidInput extends StepError {}

/** JSON text to a value; integers too large for a double become BigInt. */
export function parseJson(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === 'number' && !Number.isSafeInteger(value) && context &&
    /^-?\d+$/.test(context.source)
      ? BigInt(context.source)
      : value,
  );
}

/** A value to JSON text; BigInt is written exactly. */
export function stringifyJson(value) {
  return JSON.stringify(value, (key, v) =>
    typeof v === 'bigint' ? JSON.rawJSON(v.toString()) : v,
  );
}

/** The text of an error a host call threw (jco's ComponentError). */
function reason(e) {
  const payload = e && e.payload !== undefined ? e.payload : e;
  if (payload && typeof payload === 'object' && 'tag' in payload) {
    return payload.val !== undefined ? String(payload.val) : payload.tag.replace(/-/g, ' ');
  }
  return String(payload && payload.message !== undefined ? payload.message : payload);
}

const METHODS = ['get', 'head', 'post', 'put', 'delete', 'connect', 'options', 'trace', 'patch'];

function httpError(e) {
  const code = e && e.payload !== undefined ? e.payload : e;
  if (code && code.tag === 'HTTP-request-denied') {
    return new Fatal('request denied: the plugin is not granted this host');
  }
  return new Retryable(`http transport error: ${code && code.tag ? code.tag : String(code)}`);
}

/**
 * Sends an HTTP request through the host (which lets it through only to
 * granted hosts) and reads the whole response: `{status, headers, body}`
 * (headers: lowercase name to a list of values; body: Uint8Array) with
 * `text()` and `json()`. Throws InvalidInput for a bad URL, Fatal
 * ("request denied") for a host the plugin is not granted, Retryable when
 * the request fails in transit. Synchronous, unlike fetch().
 */
export function http(method, url, { headers = {}, body } = {}) {
  const match = /^(https?):\/\/([^/?#]*)([^#]*)/.exec(url);
  if (!match) throw new InvalidInput(`invalid url: ${JSON.stringify(url)} must start with http:// or https://`);
  const [, scheme, authority, rest] = match;
  if (!authority) throw new InvalidInput(`invalid url: ${JSON.stringify(url)} has no host`);
  const fields = new Fields();
  for (const [name, value] of Object.entries(headers)) {
    try {
      fields.append(name, new TextEncoder().encode(String(value)));
    } catch {
      throw new InvalidInput(`header ${JSON.stringify(name)} is not allowed`);
    }
  }
  const request = new OutgoingRequest(fields);
  const lower = method.toLowerCase();
  try {
    request.setMethod(METHODS.includes(lower) ? { tag: lower } : { tag: 'other', val: method.toUpperCase() });
    request.setScheme({ tag: scheme === 'https' ? 'HTTPS' : 'HTTP' });
    request.setAuthority(authority);
    request.setPathWithQuery(rest.startsWith('/') ? rest : `/${rest}`);
  } catch {
    throw new InvalidInput(`invalid url: ${JSON.stringify(url)} was refused`);
  }
  const outgoing = request.body();
  let pending;
  try {
    pending = handle(request, undefined);
  } catch (e) {
    throw httpError(e);
  }
  const data = typeof body === 'string' ? new TextEncoder().encode(body) : body || new Uint8Array();
  const stream = outgoing.write();
  try {
    for (let i = 0; i < data.length; i += 4096) stream.blockingWriteAndFlush(data.subarray(i, i + 4096));
  } catch {
    // The response says why.
  }
  stream[Symbol.dispose]?.();
  try {
    OutgoingBody.finish(outgoing, undefined);
  } catch (e) {
    throw httpError(e);
  }
  let got;
  while ((got = pending.get()) === undefined) pending.subscribe().block();
  if (got.tag === 'err') throw new Retryable('http transport error: response already taken');
  if (got.val.tag === 'err') throw httpError(got.val.val);
  const response = got.val.val;
  const found = {};
  for (const [name, value] of response.headers().entries()) {
    (found[name.toLowerCase()] ??= []).push(new TextDecoder('latin1').decode(value));
  }
  const input = response.consume().stream();
  const chunks = [];
  let length = 0;
  for (;;) {
    let chunk;
    try {
      chunk = input.blockingRead(65536n);
    } catch (e) {
      const why = e && e.payload !== undefined ? e.payload : e;
      if (why && why.tag === 'closed') break;
      throw new Retryable('http transport error: reading the response body failed');
    }
    chunks.push(chunk);
    length += chunk.length;
  }
  const all = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return {
    status: response.status(),
    headers: found,
    body: all,
    text: () => new TextDecoder().decode(all),
    json: () => parseJson(new TextDecoder().decode(all)),
  };
}

/** Appends a line to the attempt's log: trace, debug, info, warn, error. */
export function log(level, message) {
  host.log(level, String(message));
}

export function progress(percent, note = '') {
  host.progress(Math.max(0, Math.min(100, Math.round(percent))), note);
}

/** The tenant's secret, or undefined if it does not exist or is not granted. */
export function secret(name) {
  return host.secret(name);
}

/** Runs a host call; its error becomes `kind` (Fatal by default) with the host's words. */
function call(f, kind = Fatal) {
  try {
    return f();
  } catch (e) {
    throw new kind(reason(e));
  }
}

/** A key-value call: Retryable, as the Rust SDK's `?` makes it. */
function kvCall(f) {
  return call(f, Retryable);
}

/** An uploaded file's bytes (Uint8Array); throws Fatal naming the problem. */
export function readFile(fileId) {
  return call(() => host.readFile(fileId));
}

/** Queues a message in the outbox (once per attempt position); its id. `to` and `cc` are an address or a list. */
export function sendMail({ to, cc = [], subject, body }) {
  const list = (v) => (typeof v === 'string' ? [v] : [...v]);
  return call(() => host.sendMail({ to: list(to), cc: list(cc), subject, body }));
}

export function notify({ title, body = '', level = 'info', audience = '', link = '' }) {
  return call(() => host.notify({ title, body, level, audience, link }));
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * The tenant's key-value store: values are bytes (strings are stored as
 * UTF-8). Errors throw `Retryable` naming the problem.
 */
export const kv = {
  bucket(name = 'default') {
    return kvCall(() => open(name));
  },
  get(key, bucket = 'default') {
    const handle = this.bucket(bucket);
    return kvCall(() => handle.get(key));
  },
  set(key, value, bucket = 'default') {
    const bytes = typeof value === 'string' ? encoder.encode(value) : value;
    const handle = this.bucket(bucket);
    kvCall(() => handle.set(key, bytes));
  },
  delete(key, bucket = 'default') {
    const handle = this.bucket(bucket);
    kvCall(() => handle.delete(key));
  },
  keys(bucket = 'default') {
    const handle = this.bucket(bucket);
    const found = [];
    let cursor;
    for (;;) {
      const page = kvCall(() => handle.listKeys(cursor));
      found.push(...page.keys);
      if (page.cursor === undefined || page.cursor === null) return found;
      cursor = page.cursor;
    }
  },
  getText(key, bucket = 'default') {
    const value = this.get(key, bucket);
    return value === undefined || value === null ? undefined : decoder.decode(value);
  },
  getJson(key, bucket = 'default') {
    const text = this.getText(key, bucket);
    return text === undefined ? undefined : parseJson(text);
  },
  setJson(key, value, bucket = 'default') {
    this.set(key, stringifyJson(value), bucket);
  },
};

/**
 * The `step` export: `export const step = plugin({...})`. `run(ctx, config,
 * input)` returns the output; `ctx` has tenant, runId, stepId, attempt and
 * idempotencyKey. Schemas are JSON Schema documents (default: anything).
 */
export function plugin({
  name, version, description, run,
  configSchema = {}, inputSchema = {}, outputSchema = {}, capabilities = [],
}) {
  return {
    describe() {
      return {
        name, version, description,
        configSchema: JSON.stringify(configSchema),
        inputSchema: JSON.stringify(inputSchema),
        outputSchema: JSON.stringify(outputSchema),
        capabilities,
      };
    },
    run(ctx, config, input) {
      let configValue;
      let inputValue;
      try {
        configValue = config ? parseJson(config) : {};
      } catch (e) {
        throw { tag: 'invalid-input', val: `config is not JSON: ${e.message}` };
      }
      try {
        inputValue = input ? parseJson(input) : {};
      } catch (e) {
        throw { tag: 'invalid-input', val: `input is not JSON: ${e.message}` };
      }
      try {
        const output = run(ctx, configValue, inputValue);
        if (output && typeof output.then === 'function') {
          throw new Fatal('run returned a Promise: async steps are not supported; return the output');
        }
        let text;
        try {
          text = stringifyJson(output === undefined ? null : output);
        } catch (e) {
          throw new Fatal(`the output is not JSON: ${e.message}`);
        }
        return text;
      } catch (e) {
        if (e instanceof Retryable) throw { tag: 'retryable', val: e.message };
        if (e instanceof InvalidInput) throw { tag: 'invalid-input', val: e.message };
        if (e instanceof StepError) throw { tag: 'fatal', val: e.message };
        throw { tag: 'fatal', val: `${(e && e.name) || 'Error'}: ${(e && e.message) || e}` };
      }
    },
  };
}
