-- A run's version: every write to the run or its steps adds one, in the
-- same transaction. The recorder keeps the state it last wrote for a run
-- in memory and uses it instead of reading the run's steps again while the
-- version has not moved. (SQLite only: one host owns the database.)
ALTER TABLE runs ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
