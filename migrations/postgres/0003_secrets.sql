-- Secrets (PostgreSQL twin of ../sqlite/0003_secrets.sql): values are sealed by the server
-- (XChaCha20-Poly1305, bound to their scope and name) before they reach the database.

CREATE TABLE secrets (
    id                  BIGSERIAL PRIMARY KEY,
    -- One of the two: a repository's secret, or an owner's (organisation's).
    repo_id             BIGINT REFERENCES repos (id) ON DELETE CASCADE,
    owner               TEXT,
    name                TEXT    NOT NULL,
    sealed              BYTEA    NOT NULL,
    allow_pull_requests BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL
);
CREATE UNIQUE INDEX secrets_repo_name ON secrets (repo_id, name) WHERE repo_id IS NOT NULL;
CREATE UNIQUE INDEX secrets_owner_name ON secrets (owner, name) WHERE owner IS NOT NULL;

-- Server settings; `secret_key_check` proves the configured key is the one in use.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- Whether a pull request build comes from a fork (it gets only secrets that allow it).
ALTER TABLE builds ADD COLUMN fork BOOLEAN NOT NULL DEFAULT FALSE;
