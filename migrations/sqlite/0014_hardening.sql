-- The server under attack (SQLite twin of ../postgres/0014_hardening.sql).

-- How often a delivery was taken up; one that keeps failing (or keeps killing the server
-- that processes it) is given up with its reason instead of being retried for ever.
ALTER TABLE deliveries ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
-- A delivery waits for the earlier pending ones of its repository (builds keep the order
-- of pushes); other repositories' go on meanwhile.
CREATE INDEX deliveries_repo_pending ON deliveries (repo_id, state, id);

-- The GitHub App installation token minted for a stage's lease, sealed: revoked when the
-- stage ends (or its lease is reaped), whichever server sees that.
ALTER TABLE stages ADD COLUMN scoped_token TEXT NOT NULL DEFAULT '';

-- A user is the GitHub account, not the login: a login can be renamed and then taken by
-- someone else, who must not inherit the first one's tokens, roles or admin flag.
ALTER TABLE users ADD COLUMN github_id BIGINT;
CREATE UNIQUE INDEX users_github_id ON users (github_id) WHERE github_id IS NOT NULL;

-- A token per runner (`gantry runner register`): stored as its SHA-256, shown once, revoked
-- by removing it. `owners` (JSON array, empty: any) restricts what the runner may claim.
CREATE TABLE runner_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT   NOT NULL UNIQUE,
    hash       TEXT   NOT NULL UNIQUE,
    owners     TEXT   NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
