-- A run's priority, 1 (the default) to 3: within a tenant, due steps of a
-- higher priority are claimed first. Unfinished steps carry it as a rank
-- (3 - priority: 0 is the most urgent), set on insert with their tenant,
-- so the claim takes a tenant's most urgent due steps from an index.
ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
ALTER TABLE schedules ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
ALTER TABLE steps ADD COLUMN priority_rank INTEGER NOT NULL DEFAULT 2;
DROP TRIGGER steps_tenant;
CREATE TRIGGER steps_tenant AFTER INSERT ON steps WHEN NEW.tenant_id IS NULL
BEGIN
    UPDATE steps SET tenant_id = (SELECT r.tenant_id FROM runs r WHERE r.id = NEW.run_id),
                     priority_rank = (SELECT 3 - r.priority FROM runs r WHERE r.id = NEW.run_id)
    WHERE run_id = NEW.run_id AND step_id = NEW.step_id;
END;
DROP INDEX steps_ready_by_tenant;
CREATE INDEX steps_ready_by_tenant ON steps (tenant_id, priority_rank, due_at) WHERE status = 'ready';
