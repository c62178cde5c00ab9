-- Each step carries its run's tenant and priority rank (3 - priority: 0 is
-- the most urgent), so the claim takes a tenant's most urgent due steps
-- from an index however long the queue is, and counts a tenant's running
-- steps without joining runs. The engine writes both with every step
-- (a finished step made ready again gets them then); the trigger fills
-- them in for a row inserted without a tenant. Finished steps are not
-- back-filled: on a long history that would rewrite the whole table.
ALTER TABLE steps ADD COLUMN tenant_id TEXT COLLATE "C";
ALTER TABLE steps ADD COLUMN priority_rank INTEGER NOT NULL DEFAULT 2;
UPDATE steps s SET tenant_id = r.tenant_id, priority_rank = 3 - r.priority
FROM runs r
WHERE r.id = s.run_id AND s.status NOT IN ('completed', 'skipped', 'failed', 'cancelled');
CREATE FUNCTION steps_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT r.tenant_id, 3 - r.priority INTO NEW.tenant_id, NEW.priority_rank
    FROM runs r WHERE r.id = NEW.run_id;
    RETURN NEW;
END $$;
CREATE TRIGGER steps_tenant BEFORE INSERT ON steps
FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION steps_tenant();
CREATE INDEX steps_ready_by_tenant ON steps (tenant_id, priority_rank, due_at, run_id, step_id)
WHERE status = 'ready';
CREATE INDEX steps_running_by_tenant ON steps (tenant_id) WHERE status = 'running';
-- The earliest due step (the scheduler's next wake-up) and the due count
-- read ready steps by due time. The claim must not: through such an index
-- the planner may walk every tenant's due steps in time order, filtering
-- by tenant and rank. This index's predicate keeps it out of the claim's
-- reach: the claim's rank is a parameter, from which the planner cannot
-- prove `priority_rank >= 0`; the queries meant for it say so literally.
DROP INDEX steps_ready;
CREATE INDEX steps_next_due ON steps (due_at) WHERE status = 'ready' AND priority_rank >= 0;
