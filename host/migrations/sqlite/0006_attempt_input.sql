-- The config each attempt ran with, templates rendered (JSON text), so a
-- run's page can show what a step was given.
ALTER TABLE attempts ADD COLUMN input TEXT;
