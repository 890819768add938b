-- Claims on background work, so servers sharing a database do each piece once
-- (PostgreSQL twin of ../sqlite/0009_claims.sql).

-- A server takes a pending delivery or outbox message by moving its next_attempt_at past
-- a lease and bumping claim_epoch; it is done only where the epoch is still its own. A
-- server that dies holding a claim leaves it due again when the lease runs out.
ALTER TABLE deliveries ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN claim_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN claim_epoch BIGINT NOT NULL DEFAULT 0;

-- When the runner holding a stage's lease confirmed it has the stage (its first heartbeat,
-- sent before anything runs). A lapsed lease that was never confirmed goes back to the
-- queue; once confirmed, something may have run, so the stage errors instead of running
-- twice.
ALTER TABLE stages ADD COLUMN confirmed_at BIGINT;

-- Messages of one build to one address are sent in order (a commit's `pending` status never
-- lands after its `success`), so a claim looks for earlier ones.
CREATE INDEX outbox_order ON outbox (build_id, url, id);
