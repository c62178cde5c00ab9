-- People in the loop: one task per assignee of a paused human step, each
-- with a signed link (`/t/<token>`; the token is the task id and an HMAC of
-- it and `nonce` under the operator's key, so nothing secret is stored).
CREATE TABLE tasks (
    id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,   -- UUIDv7
    tenant_id        TEXT COLLATE "C" NOT NULL,
    run_id           TEXT COLLATE "C" NOT NULL,
    step_id          TEXT COLLATE "C" NOT NULL,
    round            BIGINT NOT NULL,            -- when the step paused (its started_at)
    workflow_key     TEXT COLLATE "C" NOT NULL,
    kind             TEXT COLLATE "C" NOT NULL,               -- collect_inputs | request_user_action
    assignee         TEXT COLLATE "C" NOT NULL,
    status           TEXT COLLATE "C" NOT NULL,               -- open viewed completed declined expired revoked
    title            TEXT COLLATE "C" NOT NULL,
    description      TEXT COLLATE "C",
    form             TEXT COLLATE "C" NOT NULL,               -- JSON {schema?, actions?, decline?}
    completion       TEXT COLLATE "C" NOT NULL,               -- any | all
    nonce            TEXT COLLATE "C" NOT NULL,
    answer           TEXT COLLATE "C",                        -- JSON {data} or {action}
    reason           TEXT COLLATE "C",                        -- why it closed without an answer
    remind_after_ms  BIGINT,
    max_reminders    BIGINT NOT NULL DEFAULT 0,
    reminders_sent   BIGINT NOT NULL DEFAULT 0,
    next_reminder_at BIGINT,
    expires_at       BIGINT,
    on_expiry        TEXT COLLATE "C" NOT NULL,               -- JSON: "fail" | "decline" | {"action": …}
    next_due_at      BIGINT,                     -- the earlier of next_reminder_at and expires_at
    created_at       BIGINT NOT NULL,
    viewed_at        BIGINT,
    answered_at      BIGINT,
    ended_at         BIGINT
);
CREATE INDEX tasks_by_tenant ON tasks (tenant_id, id);
CREATE INDEX tasks_of_step ON tasks (run_id, step_id, round);
CREATE INDEX tasks_due ON tasks (next_due_at) WHERE status IN ('open', 'viewed');
CREATE INDEX tasks_open ON tasks (run_id) WHERE status IN ('open', 'viewed');
-- Each pause of a human step is looked at once: its tasks (or none, when
-- the step names no assignees) are created in the transaction that
-- inserts its row here.
CREATE TABLE task_rounds (
    run_id  TEXT COLLATE "C" NOT NULL,
    step_id TEXT COLLATE "C" NOT NULL,
    round   BIGINT NOT NULL,
    PRIMARY KEY (run_id, step_id, round)
);
CREATE INDEX steps_paused ON steps (run_id) WHERE status = 'paused';
