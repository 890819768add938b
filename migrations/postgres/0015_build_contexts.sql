-- A build's row holds what a build shows (PostgreSQL twin of ../sqlite/0015_build_contexts.sql).
CREATE TABLE build_contexts (
    build_id BIGINT NOT NULL PRIMARY KEY REFERENCES builds (id) ON DELETE CASCADE,
    context  TEXT   NOT NULL
);
INSERT INTO build_contexts (build_id, context) SELECT id, context FROM builds;
ALTER TABLE builds DROP COLUMN context;
