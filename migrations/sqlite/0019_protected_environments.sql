-- Protected environments (SQLite twin of ../postgres/0019_protected_environments.sql): a repository's
-- rules for the environments whose names match a pattern. A stage that deploys to one
-- waits for approval by the named users or anyone with the role, and may deploy only from
-- the listed branches. Secrets may be kept for the stages that deploy to such environments.
CREATE TABLE protected_environments (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id       BIGINT NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    -- A glob over environment names (`production`, `review/*`).
    pattern       TEXT   NOT NULL,
    -- JSON list of user logins who may approve; with `approver_role`, either suffices.
    approvers     TEXT   NOT NULL DEFAULT '[]',
    -- `write` or `admin`: anyone with at least this role may approve.
    approver_role TEXT,
    -- JSON list of branch globs that may deploy; empty: any branch.
    branches      TEXT   NOT NULL DEFAULT '[]',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX protected_environments_pattern ON protected_environments (repo_id, pattern);

-- Who may approve a stage waiting for it (a JSON snapshot of its rule when the build was
-- made), and who approved or declined it.
ALTER TABLE stages ADD COLUMN approval TEXT;
ALTER TABLE stages ADD COLUMN decided_by TEXT;

-- A secret given only to stages that deploy to an environment matching this glob.
ALTER TABLE secrets ADD COLUMN environment TEXT;

-- The branch an environment was last deployed from was deleted, or its pull request closed.
ALTER TABLE environments ADD COLUMN branch_gone BOOLEAN NOT NULL DEFAULT FALSE;

-- The GitHub deployment a deployment was reported as (its id on GitHub), once created.
ALTER TABLE deployments ADD COLUMN github_id BIGINT;
