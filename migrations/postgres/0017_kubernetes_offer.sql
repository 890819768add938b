-- Runners that run stages in pods of a Kubernetes cluster (PostgreSQL twin of
-- ../sqlite/0017_kubernetes_offer.sql): what each offered when last seen, to say why a
-- stage waits.
ALTER TABLE runners ADD COLUMN offer_kubernetes BOOLEAN NOT NULL DEFAULT FALSE;
