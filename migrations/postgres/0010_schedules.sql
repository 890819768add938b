-- Schedules: named cron builds of a repository (PostgreSQL twin of ../sqlite/0010_schedules.sql).

-- `next_run_at` is the only clock state: a server runs a schedule when it is due by claiming
-- it (`claimed_until` a lease ahead, `claim_epoch` bumped), and the build it makes moves
-- `next_run_at` on in the build's own transaction, only while the epoch is still its own.
-- So a schedule makes one build per tick across servers and restarts, and ticks missed
-- while every server was down make one build, not one each.
CREATE TABLE schedules (
    id            BIGSERIAL PRIMARY KEY,
    repo_id       BIGINT NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    name          TEXT   NOT NULL,
    expression    TEXT   NOT NULL,
    timezone      TEXT   NOT NULL,
    branch        TEXT   NOT NULL,
    -- JSON object of parameters given to the build's steps.
    params        TEXT   NOT NULL,
    next_run_at   BIGINT NOT NULL,
    claimed_until BIGINT NOT NULL DEFAULT 0,
    claim_epoch   BIGINT NOT NULL DEFAULT 0,
    last_build_id BIGINT REFERENCES builds (id) ON DELETE SET NULL,
    last_run_at   BIGINT,
    -- Why the last tick made no build (the branch could not be read), until one does.
    last_error    TEXT,
    created_by    TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX schedules_name ON schedules (repo_id, name);
CREATE INDEX schedules_due ON schedules (next_run_at);
