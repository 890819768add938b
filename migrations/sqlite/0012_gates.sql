-- What may hold a stage back besides runners: locks and concurrency limits (SQLite twin of
-- ../postgres/0012_gates.sql).

-- The lock names the stage holds while it runs (JSON array; `lock:` of the pipeline and of
-- its steps), and `concurrency: {limit}` of its pipeline. The claim takes a stage only while
-- no running stage holds one of its locks and fewer than its limit of its pipeline run in
-- its repository; a lock is released when the stage stops running (it ends, or its lease
-- lapses and the reaper takes it).
ALTER TABLE stages ADD COLUMN locks TEXT NOT NULL DEFAULT '[]';
ALTER TABLE stages ADD COLUMN concurrency BIGINT;
