-- Signed pipeline files, as Drone's `drone sign` (SQLite twin of ../postgres/0013_signing.sql).

-- The key of the HMAC a repository's pipeline files must carry in a `kind: signature`
-- document, sealed like its other credentials; empty: files are not checked. `gantry sign`
-- makes it (and with it the check) the first time it signs a file of the repository.
ALTER TABLE repos ADD COLUMN signing_key TEXT NOT NULL DEFAULT '';
