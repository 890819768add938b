-- Retention: old builds, logs, deliveries and sent messages are removed in small batches by
-- one server at a time (SQLite twin of ../postgres/0011_retention.sql).

-- When a build's step logs were removed (its build row, stages and steps stay).
ALTER TABLE builds ADD COLUMN logs_removed_at BIGINT;
CREATE INDEX builds_finished ON builds (finished_at);
CREATE INDEX deliveries_received ON deliveries (received_at);
CREATE INDEX outbox_created ON outbox (state, created_at);

-- Background work of the whole installation that runs now and then (retention): claimed like
-- a schedule, so one server does each run.
CREATE TABLE maintenance (
    name          TEXT   PRIMARY KEY,
    next_run_at   BIGINT NOT NULL,
    claimed_until BIGINT NOT NULL DEFAULT 0,
    claim_epoch   BIGINT NOT NULL DEFAULT 0,
    last_run_at   BIGINT,
    -- What the last run did (JSON).
    last_report   TEXT
);
