-- Counting a tenant's runs waiting to start (`--tenant-max-pending`)
-- reads only those runs, however many have finished.
CREATE INDEX runs_pending ON runs (tenant_id) WHERE status = 'pending';
-- Finished runs oldest first, for `--retention`.
CREATE INDEX runs_ended ON runs (ended_at) WHERE ended_at IS NOT NULL;
