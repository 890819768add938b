-- A build's row holds what a build shows, so a build is read with `SELECT *` and a new
-- column is added here, in its row and its view only. The compile context (large: the
-- commit message again, parameters, changed files) is read only to restart a build.
CREATE TABLE build_contexts (
    build_id BIGINT NOT NULL PRIMARY KEY REFERENCES builds (id) ON DELETE CASCADE,
    context  TEXT   NOT NULL
);
INSERT INTO build_contexts (build_id, context) SELECT id, context FROM builds;
ALTER TABLE builds DROP COLUMN context;
