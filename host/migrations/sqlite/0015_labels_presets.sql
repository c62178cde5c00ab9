-- What a run is about: labels (name → value, a JSON object on the run,
-- and one row each in run_labels so `?label=name:value` filters read an
-- index in run id order however many runs there are), and the run it
-- re-runs, if it does; and whether an operator paused it.
ALTER TABLE runs ADD COLUMN labels TEXT;
ALTER TABLE runs ADD COLUMN rerun_of TEXT;
-- Paused by an operator (POST /v1/runs/{id}/pause): no new step starts.
ALTER TABLE runs ADD COLUMN held_at INTEGER;
-- A workflow's concurrency key, rendered at start: its limit counts the
-- unfinished runs with the same key.
ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
CREATE INDEX runs_active_by_key ON runs (tenant_id, workflow_key, concurrency_key)
    WHERE status IN ('pending', 'running', 'paused') AND concurrency_key IS NOT NULL;
CREATE TABLE run_labels (
    tenant_id TEXT NOT NULL,
    name      TEXT NOT NULL,
    value     TEXT NOT NULL,
    run_id    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name, value, run_id)
) WITHOUT ROWID;
-- Retention deletes a run's labels by run.
CREATE INDEX run_labels_of_run ON run_labels (run_id);

-- Saved inputs of a workflow: a run started with `"preset": name` gets the
-- preset's input under its own.
CREATE TABLE presets (
    tenant_id    TEXT NOT NULL,
    workflow_key TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    input        TEXT NOT NULL,   -- JSON
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, workflow_key, name)
);

-- Steps' rate limits: how many attempts each key of a tenant started in a
-- minute (window_start in ms, a multiple of 60000). Old windows are swept.
CREATE TABLE rate_windows (
    tenant_id    TEXT NOT NULL,
    key          TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    used         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key, window_start)
) WITHOUT ROWID;
