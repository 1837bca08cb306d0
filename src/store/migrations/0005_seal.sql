-- The seal: one row holding a BLAKE3 digest of every row of every other table (the signing
-- digest of entries, xattrs, runs, accepted and credentials, plus the signatures), written by
-- every `baseline init` and `baseline update` and checked by every command that reads the
-- baseline, signed or not (see store::seal). A version 5 baseline without it is refused.
CREATE TABLE seal (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    digest    BLOB    NOT NULL,
    run_id    INTEGER NOT NULL REFERENCES runs (id),
    sealed_at TEXT    NOT NULL
);
