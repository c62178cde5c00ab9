// `create_notification_js`: the `create_notification` catalog plugin
// written in JavaScript — records an in-app notification for the people of
// the run's tenant through the host's `notify` capability; they read it at
// `GET /v1/notifications`. It behaves as the Rust plugin does: the same
// config, checks, messages and output.
//
// The host keys each notification by the attempt's idempotency key and the
// call's position, so a retried attempt returns the same id and creates
// nothing twice.
//
// Config: `title` (one line, at most 200 characters), `body` (plain text,
// at most 10,000 characters), `level` (`info` by default, `success`,
// `warning` or `error`), `audience` (a user, team or role name; absent for
// everyone) and `link` (an `http(s)://` URL or a path starting with `/`).
// Output: `{notification_id}`.
import * as weft from './weft-sdk.js';

const MAX_TITLE = 200;
const MAX_BODY = 10_000;
const MAX_AUDIENCE = 200;
const MAX_LINK = 2_000;
const LEVELS = ['info', 'success', 'warning', 'error'];
const FIELDS = ['title', 'body', 'level', 'audience', 'link'];

const invalid = (message) => new weft.InvalidInput(message);
const chars = (s) => [...s].length;

function optionalString(config, key) {
  const value = config[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') {
    throw invalid(`${key} must be a string, found ${weft.stringifyJson(value)}`);
  }
  return value;
}

/** An absolute http(s) URL with a host, or a path within the app. */
export function isLink(link) {
  // Bytes, as the Rust original counts them.
  if (new TextEncoder().encode(link).length > MAX_LINK || /[\s\u0000-\u001f\u007f-\u009f]/.test(link)) {
    return false;
  }
  for (const scheme of ['https://', 'http://']) {
    if (link.startsWith(scheme)) {
      const rest = link.slice(scheme.length);
      return rest !== '' && !['/', '?', '#'].includes(rest[0]);
    }
  }
  return link.startsWith('/') && !link.startsWith('//');
}

/** The notification a config describes, checked. */
export function notification(config) {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw invalid(`config must be an object, found ${weft.stringifyJson(config)}`);
  }
  const unknown = Object.keys(config).find((k) => !FIELDS.includes(k));
  if (unknown !== undefined) {
    throw invalid(`config has an unknown field ${JSON.stringify(unknown)}; known fields: ${FIELDS.join(', ')}`);
  }
  const rawTitle = optionalString(config, 'title');
  if (rawTitle === undefined) throw invalid('title is required');
  if (rawTitle.trim() === '') throw invalid('title must not be empty');
  const title = rawTitle.trim();
  if (/[\r\n]/.test(title) || chars(title) > MAX_TITLE) {
    throw invalid(`title must be one line of at most ${MAX_TITLE} characters`);
  }
  const body = optionalString(config, 'body');
  if (body === undefined) throw invalid('body is required');
  if (chars(body) > MAX_BODY) {
    throw invalid(`body has ${chars(body)} characters; at most ${MAX_BODY} fit in a notification`);
  }
  const level = (optionalString(config, 'level') ?? 'info').toLowerCase();
  if (!LEVELS.includes(level)) {
    throw invalid(`level ${JSON.stringify(level)} is not one of ${LEVELS.join(', ')}`);
  }
  const audience = (optionalString(config, 'audience') ?? '').trim();
  if (chars(audience) > MAX_AUDIENCE || /[\r\n]/.test(audience)) {
    throw invalid(`audience must be one name of at most ${MAX_AUDIENCE} characters`);
  }
  const link = (optionalString(config, 'link') ?? '').trim();
  if (link !== '' && !isLink(link)) {
    throw invalid(`link ${JSON.stringify(link)} must be an http(s):// URL or a path starting with /`);
  }
  return { title, body, level, audience, link };
}

export const step = weft.plugin({
  name: 'create_notification_js',
  version: '1.0.0',
  description:
    "Posts an in-app notification to the tenant's people; retried attempts never post twice. (create_notification, in JavaScript.)",
  configSchema: {
    type: 'object',
    additionalProperties: false,
    required: ['title', 'body'],
    properties: {
      title: { type: 'string', minLength: 1, maxLength: MAX_TITLE, description: 'One-line headline shown in notification lists' },
      body: { type: 'string', maxLength: MAX_BODY, description: "Plain-text body, e.g. a summary step's `summary` output" },
      level: { type: ['string', 'null'], enum: ['info', 'success', 'warning', 'error', null], default: 'info', description: 'Severity, for styling and filtering' },
      audience: { type: ['string', 'null'], maxLength: MAX_AUDIENCE, description: 'A user, team or role name; omit for everyone in the tenant' },
      link: { type: ['string', 'null'], maxLength: MAX_LINK, description: 'Where the notification points: an http(s):// URL or an app path starting with /' },
    },
  },
  outputSchema: {
    'x-weft-role': 'delivery',
    type: 'object',
    required: ['notification_id'],
    properties: {
      notification_id: { type: 'string', description: 'Id of the notification, as listed at GET /v1/notifications' },
    },
  },
  capabilities: ['notify'],
  run(ctx, config) {
    const n = notification(config);
    let id;
    try {
      id = weft.notify(n);
    } catch (e) {
      throw new weft.Retryable(`notify capability: ${e.message}`);
    }
    weft.log('info', `posted ${n.level} notification ${id}`);
    return { notification_id: id };
  },
});
