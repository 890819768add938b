-- Environments a repository's pipelines deploy to (`deploy:`), and each deployment to
-- them (SQLite twin of ../postgres/0018_environments.sql). A deployment is a stage: its status is
-- the stage's, so that every way a stage ends (a runner's report, a reaped lease, a cancel)
-- ends its deployment too.
CREATE TABLE environments (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id       BIGINT NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    name          TEXT   NOT NULL,
    slug          TEXT   NOT NULL,
    url           TEXT,
    -- The pipeline that stops it, as its last deployment named it.
    on_stop       TEXT,
    -- When it stops by itself (its last deployment's time plus `auto_stop_in`).
    auto_stop_at  BIGINT,
    -- The branch and pull request its last deployment came from.
    branch        TEXT   NOT NULL,
    pull_request  BIGINT,
    -- The build that stops it: set once, by the transaction that creates that build, so
    -- that it is stopped exactly once; cleared by the next deployment.
    stop_build_id BIGINT REFERENCES builds (id) ON DELETE SET NULL,
    -- When it was stopped without a pipeline (it has no `on_stop`).
    stopped_at    BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX environments_name ON environments (repo_id, name);
CREATE INDEX environments_auto_stop ON environments (auto_stop_at);

CREATE TABLE deployments (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    environment_id BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    build_id       BIGINT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    stage_id       BIGINT NOT NULL REFERENCES stages (id) ON DELETE CASCADE,
    -- `start` (a deployment) or `stop` (its `on_stop` pipeline).
    action         TEXT   NOT NULL,
    url            TEXT,
    commit_sha     TEXT   NOT NULL,
    branch         TEXT   NOT NULL,
    author         TEXT   NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX deployments_environment ON deployments (environment_id, id);
CREATE INDEX deployments_stage ON deployments (stage_id);
