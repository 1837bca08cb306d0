CREATE INDEX accepted_by_run ON accepted (run_id);
CREATE TABLE accepted (
    run_id     INTEGER NOT NULL REFERENCES runs (id),
    path       BLOB    NOT NULL,
    status     TEXT    NOT NULL,
    changes    TEXT    NOT NULL,
    old_blake3 BLOB,
    new_blake3 BLOB
);
CREATE TABLE credentials (
    path   BLOB PRIMARY KEY,
    blake3 BLOB NOT NULL,
    kind   TEXT NOT NULL,
    facts  TEXT NOT NULL
);
CREATE TABLE entries (
    path         BLOB    PRIMARY KEY,
    type         TEXT    NOT NULL,
    mode         INTEGER NOT NULL,
    uid          INTEGER NOT NULL,
    gid          INTEGER NOT NULL,
    owner_name   TEXT,
    group_name   TEXT,
    size         INTEGER NOT NULL,
    blake3       BLOB,
    sha256       BLOB,
    link_target  BLOB,
    rdev_major   INTEGER,
    rdev_minor   INTEGER,
    acl_access   TEXT,
    acl_default  TEXT,
    dev          INTEGER NOT NULL,
    ino          INTEGER NOT NULL,
    nlink        INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    ctime_ns     INTEGER NOT NULL,
    policy_group TEXT    NOT NULL,
    class        TEXT    NOT NULL,
    problem      TEXT,
    run_id       INTEGER NOT NULL REFERENCES runs (id)
) WITHOUT ROWID;
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('init', 'update')),
    started_at    TEXT    NOT NULL,
    finished_at   TEXT    NOT NULL,
    host          TEXT    NOT NULL,
    root          BLOB    NOT NULL,
    tool_version  TEXT    NOT NULL,
    policy_file   BLOB    NOT NULL,
    policy_digest TEXT    NOT NULL,
    policy_text   TEXT    NOT NULL,
    reason        TEXT,
    entries       INTEGER NOT NULL
, machine_id TEXT);
CREATE TABLE seal (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    digest    BLOB    NOT NULL,
    run_id    INTEGER NOT NULL REFERENCES runs (id),
    sealed_at TEXT    NOT NULL
);
CREATE TABLE signatures (
    id         INTEGER PRIMARY KEY,
    run_id     INTEGER NOT NULL REFERENCES runs (id),
    algorithm  TEXT    NOT NULL CHECK (algorithm = 'ed25519'),
    public_key BLOB    NOT NULL,
    digest     BLOB    NOT NULL,
    signature  BLOB    NOT NULL,
    signed_at  TEXT    NOT NULL
);
CREATE TABLE xattrs (
    path  BLOB NOT NULL REFERENCES entries (path) ON DELETE CASCADE,
    name  BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (path, name)
) WITHOUT ROWID;
