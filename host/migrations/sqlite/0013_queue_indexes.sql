-- Each unfinished step carries its run's tenant, so the claim takes a few
-- due steps per tenant from an index however long the queue is (it used
-- to rank every due step). Set on insert by a trigger; steps already
-- finished never need it.
ALTER TABLE steps ADD COLUMN tenant_id TEXT;
UPDATE steps SET tenant_id = (SELECT r.tenant_id FROM runs r WHERE r.id = steps.run_id)
WHERE status IN ('pending', 'ready', 'running', 'paused');
CREATE TRIGGER steps_tenant AFTER INSERT ON steps WHEN NEW.tenant_id IS NULL
BEGIN
    UPDATE steps SET tenant_id = (SELECT r.tenant_id FROM runs r WHERE r.id = NEW.run_id)
    WHERE run_id = NEW.run_id AND step_id = NEW.step_id;
END;
CREATE INDEX steps_ready_by_tenant ON steps (tenant_id, due_at) WHERE status = 'ready';
CREATE INDEX steps_running_by_tenant ON steps (tenant_id) WHERE status = 'running';
-- A workflow's queued runs (overlap control) oldest first, without
-- walking the tenant's other pending runs each time a run ends.
CREATE INDEX runs_queued ON runs (tenant_id, workflow_key, created_at) WHERE status = 'pending' AND queued = 1;
