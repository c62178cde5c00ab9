-- Schedules, overlap control, outbound webhooks and in-app notifications.

CREATE TABLE schedules (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    workflow_key TEXT NOT NULL,
    cron         TEXT NOT NULL,
    timezone     TEXT NOT NULL,
    input        TEXT NOT NULL,          -- JSON
    status       TEXT NOT NULL,          -- active | paused
    next_run_at  INTEGER,                -- ms; NULL while paused
    last_run_id  TEXT,
    last_fired_at INTEGER,               -- the tick last fired, ms
    last_error   TEXT,                   -- why the last tick started no run
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX schedules_by_tenant ON schedules (tenant_id, id);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE status = 'active';

-- One row per fired tick: the primary key makes a second firing of the same
-- tick impossible, whatever restarts happen in between.
CREATE TABLE schedule_fires (
    schedule_id TEXT NOT NULL,
    tick        INTEGER NOT NULL,
    run_id      TEXT,
    error       TEXT,
    fired_at    INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, tick)
) WITHOUT ROWID;

-- Overlap control: a queued run waits (pending, no steps scheduled) until a
-- run of its workflow ends.
ALTER TABLE runs ADD COLUMN queued INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN schedule_id TEXT;
CREATE INDEX runs_active_by_workflow ON runs (tenant_id, workflow_key, created_at)
    WHERE status IN ('pending', 'running', 'paused');
CREATE INDEX runs_by_workflow ON runs (tenant_id, workflow_key, created_at);

-- Webhook fan-out reads each tenant's events in order.
CREATE INDEX events_by_tenant ON events (tenant_id, id);

CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    url           TEXT NOT NULL,
    events        TEXT NOT NULL,         -- JSON array of event types
    secret        BLOB NOT NULL,         -- whsec_<base64>, sealed
    status        TEXT NOT NULL,         -- active | disabled
    disabled_reason TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    cursor        INTEGER NOT NULL,      -- last event id fanned out
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX webhooks_by_tenant ON webhooks (tenant_id, id);

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,    -- msg_<uuid>: the webhook-id header
    webhook_id      TEXT NOT NULL,
    tenant_id       TEXT NOT NULL,
    event_id        INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,       -- pending | delivered | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    retry_index     INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    delivered_at    INTEGER,
    created_at      INTEGER NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;

CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    idempotency_key TEXT NOT NULL,
    run_id      TEXT,
    step_id     TEXT,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    level       TEXT NOT NULL,
    audience    TEXT NOT NULL,
    link        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    read_at     INTEGER,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX notifications_by_tenant ON notifications (tenant_id, id);
