-- An Idempotency-Key is reserved before the work it guards: `status` 0
-- marks a request in flight (its answer not stored yet). A run start
-- stores its key with the run, in the same transaction: `run_id` names the
-- run, and a repeated start answers with that run.
ALTER TABLE idempotency ADD COLUMN run_id TEXT;
