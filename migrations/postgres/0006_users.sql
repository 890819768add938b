-- Users and repository roles (PostgreSQL twin of ../sqlite/0006_users.sql).

-- A person: signed in with GitHub, or added by a server admin. GitHub logins are
-- case-insensitive, so are ours.
CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    login         TEXT    NOT NULL,
    admin         BOOLEAN NOT NULL DEFAULT FALSE,
    -- The user's GitHub OAuth token, sealed by the server (bound to `user:{id}/github_token`):
    -- it refreshes their roles from GitHub.
    github_token  BYTEA,
    created_at    BIGINT  NOT NULL,
    last_login_at BIGINT
);
CREATE UNIQUE INDEX users_login ON users (lower(login));

-- The user a token acts for; NULL for a service token (the first admin token, or one an
-- admin made with `admin: true`).
ALTER TABLE api_tokens ADD COLUMN user_id BIGINT REFERENCES users (id) ON DELETE CASCADE;
-- A browser session from a sign-in with GitHub (ended by signing out), not an API token.
ALTER TABLE api_tokens ADD COLUMN session BOOLEAN NOT NULL DEFAULT FALSE;

-- A user's role on a repository: `none`, `read`, `write` or `admin`. `source` is `github`
-- (their GitHub permission, cached at `fetched_at` and refreshed when stale) or `admin`
-- (set by a server admin; never refreshed, and it wins over GitHub's).
CREATE TABLE repo_roles (
    repo_id    BIGINT NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source     TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    fetched_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, user_id, source)
);
CREATE INDEX repo_roles_user ON repo_roles (user_id);
