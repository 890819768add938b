-- Approvals (SQLite twin of ../postgres/0004_approvals.sql): pull requests from forks run,
-- or wait as `blocked` until a user with write access approves them.
ALTER TABLE repos ADD COLUMN fork_policy TEXT NOT NULL DEFAULT 'run';
