-- Where a run was recorded: the host's /etc/machine-id beside its hostname, so a baseline of
-- the live host can be told from another host's (see store::origin). Additive: NULL for runs
-- recorded before this column existed.
ALTER TABLE runs ADD COLUMN machine_id TEXT;
