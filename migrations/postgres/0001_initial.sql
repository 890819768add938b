-- gantry's first schema (PostgreSQL twin of ../sqlite/0001_initial.sql).
-- Times are milliseconds since the Unix epoch, UTC.

CREATE TABLE repos (
    id                 BIGSERIAL PRIMARY KEY,
    owner              TEXT    NOT NULL,
    name               TEXT    NOT NULL,
    clone_url          TEXT    NOT NULL,
    link               TEXT    NOT NULL DEFAULT '',
    webhook_secret     TEXT    NOT NULL DEFAULT '',
    config_path        TEXT    NOT NULL DEFAULT '',
    default_branch     TEXT    NOT NULL DEFAULT 'main',
    trusted            BOOLEAN NOT NULL DEFAULT FALSE,
    visibility         TEXT    NOT NULL DEFAULT 'public',
    timeout_secs       BIGINT  NOT NULL DEFAULT 3600,
    active             BOOLEAN NOT NULL DEFAULT TRUE,
    next_build_number  BIGINT  NOT NULL DEFAULT 1,
    created_at         BIGINT  NOT NULL,
    updated_at         BIGINT  NOT NULL,
    UNIQUE (owner, name)
);

CREATE TABLE builds (
    id              BIGSERIAL PRIMARY KEY,
    repo_id         BIGINT  NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    number          BIGINT  NOT NULL,
    parent          BIGINT,
    event           TEXT    NOT NULL,
    action          TEXT,
    ref             TEXT    NOT NULL DEFAULT '',
    branch          TEXT    NOT NULL DEFAULT '',
    tag             TEXT,
    commit_sha      TEXT    NOT NULL DEFAULT '',
    message         TEXT    NOT NULL DEFAULT '',
    author          TEXT    NOT NULL DEFAULT '',
    sender          TEXT    NOT NULL DEFAULT '',
    pull_request    BIGINT,
    source_branch   TEXT,
    target_branch   TEXT,
    deploy_to       TEXT,
    params          TEXT    NOT NULL DEFAULT '{}',
    context         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    error           TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      BIGINT  NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    UNIQUE (repo_id, number)
);
CREATE INDEX builds_repo_branch ON builds (repo_id, branch, number);
CREATE INDEX builds_unfinished ON builds (status) WHERE finished_at IS NULL;

CREATE TABLE stages (
    id               BIGSERIAL PRIMARY KEY,
    build_id         BIGINT  NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    number           BIGINT  NOT NULL,
    name             TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    error            TEXT,
    depends_on       TEXT    NOT NULL DEFAULT '[]',
    runs_on          TEXT    NOT NULL DEFAULT '{"success":true,"failure":false}',
    labels           TEXT    NOT NULL DEFAULT '{}',
    platform         TEXT    NOT NULL DEFAULT '',
    plan             TEXT    NOT NULL,
    runner           TEXT,
    runner_instance  TEXT,
    lease_epoch      BIGINT  NOT NULL DEFAULT 0,
    lease_expires_at BIGINT,
    created_at       BIGINT  NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    UNIQUE (build_id, number)
);
CREATE INDEX stages_queue ON stages (status, id);

CREATE TABLE steps (
    id          BIGSERIAL PRIMARY KEY,
    stage_id    BIGINT  NOT NULL REFERENCES stages (id) ON DELETE CASCADE,
    number      BIGINT  NOT NULL,
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    exit_code   BIGINT,
    error       TEXT,
    started_at  BIGINT,
    finished_at BIGINT,
    UNIQUE (stage_id, name)
);

-- A step's log in chunks of consecutive lines: `text` holds the lines joined by '\n',
-- `times` their offsets from the step's start (a JSON array of milliseconds).
CREATE TABLE log_chunks (
    step_id     BIGINT NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
    first_line  BIGINT NOT NULL,
    line_count  BIGINT NOT NULL,
    text        TEXT   NOT NULL,
    times       TEXT   NOT NULL,
    PRIMARY KEY (step_id, first_line)
);

CREATE TABLE deliveries (
    id           BIGSERIAL PRIMARY KEY,
    delivery_id  TEXT   NOT NULL UNIQUE,
    event        TEXT   NOT NULL,
    repo_id      BIGINT REFERENCES repos (id) ON DELETE SET NULL,
    state        TEXT   NOT NULL,
    outcome      TEXT   NOT NULL DEFAULT '',
    payload      BYTEA,
    build_id     BIGINT,
    received_at  BIGINT NOT NULL,
    processed_at BIGINT
);
CREATE INDEX deliveries_pending ON deliveries (state, id);

CREATE TABLE runners (
    name        TEXT PRIMARY KEY,
    instance    TEXT   NOT NULL,
    labels      TEXT   NOT NULL DEFAULT '{}',
    platform    TEXT   NOT NULL DEFAULT '',
    capacity    BIGINT NOT NULL DEFAULT 1,
    last_seen_at BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT    NOT NULL,
    hash        TEXT    NOT NULL UNIQUE,
    admin       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT  NOT NULL,
    last_used_at BIGINT
);
