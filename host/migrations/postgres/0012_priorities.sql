-- A run's priority, 1 (the default) to 3: within a tenant, due steps of a
-- higher priority are claimed first.
ALTER TABLE runs ADD COLUMN priority BIGINT NOT NULL DEFAULT 1;
ALTER TABLE schedules ADD COLUMN priority BIGINT NOT NULL DEFAULT 1;
