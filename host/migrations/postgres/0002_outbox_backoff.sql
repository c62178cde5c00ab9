-- The SMTP sender retries a message with backoff: `next_attempt_at` is when
-- a queued message is next due (ms). Messages already queued are due now.
ALTER TABLE outbox ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
DROP INDEX outbox_queued;
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'queued';
-- Pages of a tenant's outbox, newest first.
CREATE INDEX outbox_by_tenant ON outbox (tenant_id, created_at, message_id);
