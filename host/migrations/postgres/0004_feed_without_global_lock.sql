-- Writers no longer take one global advisory lock: transactions of
-- unrelated runs commit in parallel from any host, so event ids no longer
-- grow in commit order. The tenant feed (GET /v1/events, its live stream,
-- the webhook fan-out) orders events by (txid, id) instead and reads only
-- events whose txid is below the oldest transaction still in flight
-- (pg_snapshot_xmin): no transaction that could still commit an event
-- sorts before what a reader has passed. See src/db/webhooks.rs.
DROP TRIGGER events_in_commit_order ON events;
DROP FUNCTION weft_lock_writers();

-- Events written before this migration keep txid 0: they sort first, in id
-- order (they were written in commit order).
ALTER TABLE events ADD COLUMN txid BIGINT NOT NULL DEFAULT 0;

-- The writing transaction's id, raised to the run's latest event's txid:
-- every transaction that appends to a run holds the run's row lock, so the
-- run's earlier events are committed and this keeps one run's events in
-- the order they were written, even when an older transaction (a smaller
-- id) waited for the lock behind a younger one. Raising it never lets a
-- reader pass an event early: a txid below a reader's xmin is at least the
-- writer's own id, so the writer has ended.
CREATE FUNCTION weft_event_txid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.txid := GREATEST(
        pg_current_xact_id()::text::bigint,
        COALESCE((SELECT e.txid FROM events e WHERE e.run_id = NEW.run_id
                  ORDER BY e.id DESC LIMIT 1), 0));
    RETURN NEW;
END;
$$;
CREATE TRIGGER events_txid BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION weft_event_txid();

CREATE INDEX events_feed ON events (tenant_id, txid, id);
