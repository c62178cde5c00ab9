-- Weft schema for SQLite. Times are milliseconds since the Unix epoch (UTC).
-- Never edit an applied migration: add a new one.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,           -- first characters, to recognise a key
    key_hash      TEXT NOT NULL UNIQUE,    -- sha256 of the whole key; the key itself is never stored
    scopes        TEXT NOT NULL,           -- JSON array
    operator      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER
);

CREATE TABLE workflows (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    key          TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    archived_at  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE workflow_versions (
    tenant_id     TEXT NOT NULL,
    key           TEXT NOT NULL,
    version       TEXT NOT NULL,
    major         INTEGER NOT NULL,
    minor         INTEGER NOT NULL,
    patch         INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('draft', 'published')),
    definition    TEXT NOT NULL,           -- JSON, validated
    created_at    INTEGER NOT NULL,
    published_at  INTEGER,
    PRIMARY KEY (tenant_id, key, version),
    FOREIGN KEY (tenant_id, key) REFERENCES workflows(tenant_id, key)
);

CREATE TABLE runs (
    id                TEXT PRIMARY KEY,    -- UUIDv7: sorts by creation
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    workflow_key      TEXT NOT NULL,
    workflow_version  TEXT NOT NULL,
    status            TEXT NOT NULL,
    input             TEXT NOT NULL,
    result            TEXT,
    error             TEXT,                -- JSON {kind, message, step_id?}
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    ended_at          INTEGER,
    deadline_at       INTEGER              -- max_duration_ms, as a time
);
CREATE INDEX runs_by_tenant ON runs (tenant_id, id);
-- Unfinished runs only: stays small however much history accumulates.
CREATE INDEX runs_unfinished ON runs (deadline_at) WHERE status IN ('pending', 'running', 'paused');

CREATE TABLE steps (
    run_id            TEXT NOT NULL REFERENCES runs(id),
    step_id           TEXT NOT NULL,
    position          INTEGER NOT NULL,    -- order in the definition
    kind              TEXT NOT NULL,       -- 'plugin', 'wait', 'collect_inputs', 'request_user_action', 'catch'
    status            TEXT NOT NULL,       -- pending, ready, running, paused, completed, skipped, failed, cancelled
    attempts          INTEGER NOT NULL DEFAULT 0,
    due_at            INTEGER,             -- ready steps: not before this time (retry backoff, wait)
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    output            TEXT,
    error             TEXT,
    started_at        INTEGER,
    ended_at          INTEGER,
    PRIMARY KEY (run_id, step_id)
) WITHOUT ROWID;
-- The scheduler's hot queries touch only unfinished steps.
CREATE INDEX steps_ready ON steps (due_at) WHERE status = 'ready';
CREATE INDEX steps_leased ON steps (lease_expires_at) WHERE status = 'running';

CREATE TABLE attempts (
    run_id       TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    status       TEXT NOT NULL,            -- running, completed, failed, interrupted
    host         TEXT,
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER,
    error_kind   TEXT,
    error        TEXT,
    logs         TEXT,                     -- JSON array of {level, message, at}
    PRIMARY KEY (run_id, step_id, attempt)
) WITHOUT ROWID;

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    type       TEXT NOT NULL,
    step_id    TEXT,
    data       TEXT NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX events_by_run ON events (run_id, id);

CREATE TABLE kv (
    tenant_id   TEXT NOT NULL,
    bucket      TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BLOB NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, bucket, key)
) WITHOUT ROWID;

CREATE TABLE outbox (
    tenant_id   TEXT NOT NULL,
    key         TEXT NOT NULL,             -- idempotency key of the attempt and call
    message_id  TEXT NOT NULL UNIQUE,
    run_id      TEXT,
    step_id     TEXT,
    recipients  TEXT NOT NULL,             -- JSON {to, cc}
    subject     TEXT NOT NULL,
    body        TEXT NOT NULL,
    status      TEXT NOT NULL,             -- queued, sent, failed
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    sent_at     INTEGER,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX outbox_queued ON outbox (created_at) WHERE status = 'queued';

CREATE TABLE files (
    tenant_id     TEXT NOT NULL,
    id            TEXT NOT NULL,
    name          TEXT,
    content_type  TEXT,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    content       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE idempotency (
    tenant_id     TEXT NOT NULL,
    key           TEXT NOT NULL,
    route         TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        INTEGER NOT NULL,
    response      TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key, route)
);
