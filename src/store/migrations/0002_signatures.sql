-- Signatures over the baseline: an ed25519 signature of a canonical digest of every other
-- table (entries, xattrs, runs, accepted). The newest row is the one `verify` checks.
CREATE TABLE signatures (
    id         INTEGER PRIMARY KEY,
    run_id     INTEGER NOT NULL REFERENCES runs (id),
    algorithm  TEXT    NOT NULL CHECK (algorithm = 'ed25519'),
    public_key BLOB    NOT NULL,
    digest     BLOB    NOT NULL,
    signature  BLOB    NOT NULL,
    signed_at  TEXT    NOT NULL
);
