-- A workflow's queued runs (overlap control) oldest first, without
-- walking the tenant's other pending runs each time a run ends.
CREATE INDEX runs_queued ON runs (tenant_id, workflow_key, created_at) WHERE status = 'pending' AND queued = 1;
