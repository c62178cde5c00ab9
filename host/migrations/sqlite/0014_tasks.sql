-- People in the loop: one task per assignee of a paused human step, each
-- with a signed link (`/t/<token>`; the token is the task id and an HMAC of
-- it and `nonce` under the operator's key, so nothing secret is stored).
CREATE TABLE tasks (
    id               TEXT NOT NULL PRIMARY KEY,   -- UUIDv7
    tenant_id        TEXT NOT NULL,
    run_id           TEXT NOT NULL,
    step_id          TEXT NOT NULL,
    round            INTEGER NOT NULL,            -- when the step paused (its started_at)
    workflow_key     TEXT NOT NULL,
    kind             TEXT NOT NULL,               -- collect_inputs | request_user_action
    assignee         TEXT NOT NULL,
    status           TEXT NOT NULL,               -- open viewed completed declined expired revoked
    title            TEXT NOT NULL,
    description      TEXT,
    form             TEXT NOT NULL,               -- JSON {schema?, actions?, decline?}
    completion       TEXT NOT NULL,               -- any | all
    nonce            TEXT NOT NULL,
    answer           TEXT,                        -- JSON {data} or {action}
    reason           TEXT,                        -- why it closed without an answer
    remind_after_ms  INTEGER,
    max_reminders    INTEGER NOT NULL DEFAULT 0,
    reminders_sent   INTEGER NOT NULL DEFAULT 0,
    next_reminder_at INTEGER,
    expires_at       INTEGER,
    on_expiry        TEXT NOT NULL,               -- JSON: "fail" | "decline" | {"action": …}
    next_due_at      INTEGER,                     -- the earlier of next_reminder_at and expires_at
    created_at       INTEGER NOT NULL,
    viewed_at        INTEGER,
    answered_at      INTEGER,
    ended_at         INTEGER
);
CREATE INDEX tasks_by_tenant ON tasks (tenant_id, id);
CREATE INDEX tasks_of_step ON tasks (run_id, step_id, round);
CREATE INDEX tasks_due ON tasks (next_due_at) WHERE status IN ('open', 'viewed');
CREATE INDEX tasks_open ON tasks (run_id) WHERE status IN ('open', 'viewed');
-- Each pause of a human step is looked at once: its tasks (or none, when
-- the step names no assignees) are created in the transaction that
-- inserts its row here.
CREATE TABLE task_rounds (
    run_id  TEXT NOT NULL,
    step_id TEXT NOT NULL,
    round   INTEGER NOT NULL,
    PRIMARY KEY (run_id, step_id, round)
);
CREATE INDEX steps_paused ON steps (run_id) WHERE status = 'paused';
