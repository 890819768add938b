-- Logins for private container registries (SQLite twin of ../postgres/0016_registries.sql):
-- a repository's, an owner's, or the server's (both NULL). The password is sealed by the
-- server, bound to its scope and host, like a secret's value.
CREATE TABLE registries (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id             BIGINT REFERENCES repos (id) ON DELETE CASCADE,
    owner               TEXT,
    host                TEXT    NOT NULL,
    username            TEXT    NOT NULL,
    sealed              BLOB    NOT NULL,
    allow_pull_requests BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL
);
CREATE UNIQUE INDEX registries_repo_host ON registries (repo_id, host) WHERE repo_id IS NOT NULL;
CREATE UNIQUE INDEX registries_owner_host ON registries (owner, host) WHERE owner IS NOT NULL;
CREATE UNIQUE INDEX registries_server_host ON registries (host) WHERE repo_id IS NULL AND owner IS NULL;
