-- The notifier asks twice a second which builds changed since they were notified: an index
-- of just those builds keeps that cheap however many builds there are (SQLite twin of
-- ../postgres/0005_notify_index.sql).
CREATE INDEX builds_to_notify ON builds (id) WHERE notified_status IS NULL OR notified_status <> status;
