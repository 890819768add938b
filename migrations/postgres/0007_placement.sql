-- Where a stage may run (PostgreSQL twin of ../sqlite/0007_placement.sql).

-- The pipeline's `type` (docker, exec, kubernetes...): a runner is handed only stages its
-- offer can run (`gantry_proto::place`), so an untrusted repository never runs on a host.
ALTER TABLE stages ADD COLUMN backend TEXT NOT NULL DEFAULT 'docker';
UPDATE stages SET backend = COALESCE(plan::json ->> 'backend', 'docker');

-- What each runner offered when last seen, to say why a stage waits.
ALTER TABLE runners ADD COLUMN offer_docker BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE runners ADD COLUMN offer_host BOOLEAN NOT NULL DEFAULT FALSE;
