-- SSH deploy keys (SQLite twin of ../postgres/0008_deploy_keys.sql).

-- A repository's SSH private key for ssh:// and git@host: clone URLs, sealed like its GitHub
-- token (bound to the repository and the column); empty: none.
ALTER TABLE repos ADD COLUMN ssh_key TEXT NOT NULL DEFAULT '';
