-- Notifications (SQLite twin of ../postgres/0002_notifications.sql): chat targets, a token
-- for commit statuses, and an outbox that survives restarts.

ALTER TABLE repos ADD COLUMN github_token TEXT NOT NULL DEFAULT '';

-- The status a build's notifications were last made for; a build whose status differs is
-- due (so no change is missed, whichever path changed it).
ALTER TABLE builds ADD COLUMN notified_status TEXT;

CREATE TABLE notify_targets (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- NULL: the server-wide default, for repositories without targets of their own.
    repo_id     BIGINT REFERENCES repos (id) ON DELETE CASCADE,
    kind        TEXT   NOT NULL,
    url         TEXT   NOT NULL,
    -- failure, recovery, success, always (JSON list).
    rules       TEXT   NOT NULL DEFAULT '["failure","recovery"]',
    branches    TEXT   NOT NULL DEFAULT '[]',
    events      TEXT   NOT NULL DEFAULT '[]',
    created_at  BIGINT NOT NULL
);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    build_id        BIGINT REFERENCES builds (id) ON DELETE CASCADE,
    kind            TEXT   NOT NULL,
    url             TEXT   NOT NULL,
    body            TEXT   NOT NULL,
    -- An Authorization header value, for commit statuses.
    auth            TEXT,
    state           TEXT   NOT NULL DEFAULT 'pending',
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
