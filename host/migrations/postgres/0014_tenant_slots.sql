-- Each host's share of a tenant's cap on running steps (`--tenant-max-running`):
-- a host claims steps of a tenant only while its own running steps of that
-- tenant are fewer than the share it holds, so hosts never wait for each
-- other to count a tenant's running steps. Shares are changed only under
-- the tenant's advisory lock, and the live ones never add up to more than
-- the cap: `slots` is the larger of the host's share and what it has
-- running, so a host whose share shrank keeps counting for the steps it
-- still runs. A host renews its rows every poll interval; a row past
-- `expires_at` (a host that died) counts for nothing.
CREATE TABLE tenant_slots (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    host_id     TEXT COLLATE "C" NOT NULL,
    slots       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, host_id)
);
-- A host counts its own running steps of a tenant.
DROP INDEX steps_running_by_tenant;
CREATE INDEX steps_running_by_tenant ON steps (tenant_id, lease_owner) WHERE status = 'running';
