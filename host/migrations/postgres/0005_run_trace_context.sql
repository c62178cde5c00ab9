-- A run's place in a distributed trace (W3C Trace Context), kept with the
-- run so an attempt executed later, on another host or after a restart,
-- joins the same trace. `traceparent` is the run span's own context (the
-- parent of its attempts' spans); `trace_parent_span_id` is the caller's
-- span (from the `traceparent` header of the start), the run span's
-- parent, or NULL for a run that began its own trace. Both NULL when the
-- host that created the run exported no traces.
ALTER TABLE runs ADD COLUMN traceparent TEXT;
ALTER TABLE runs ADD COLUMN trace_parent_span_id TEXT;
