-- The items of a step with `for_each`: one row per item, created when the
-- step first runs. An item is recorded when it starts (running) and when it
-- ends (completed, or failed for good); a retry puts it back to pending.
CREATE TABLE items (
    run_id      TEXT NOT NULL,
    step_id     TEXT NOT NULL,
    idx         BIGINT NOT NULL,
    status      TEXT NOT NULL,       -- pending, running, completed, failed
    attempts    BIGINT NOT NULL DEFAULT 0,
    output      TEXT,
    error       TEXT,                -- JSON {kind, message, attempt}
    logs        TEXT,                -- the last attempt's, JSON
    host        TEXT,
    started_at  BIGINT,
    ended_at    BIGINT,
    PRIMARY KEY (run_id, step_id, idx)
);
