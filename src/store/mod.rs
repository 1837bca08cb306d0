//! The baseline database (SQLite): open, migrate, read and write entries and runs.
//!
//! One file, WAL, `foreign_keys=ON`, `synchronous=FULL` (a baseline is evidence and rarely
//! written). The schema is created and upgraded by the embedded, append-only migrations in
//! `migrations/`, applied in one transaction; the version lives in `PRAGMA user_version`, and a
//! database newer than this binary is refused. Paths are BLOBs (raw bytes).
//!
//! `baseline init` never writes the destination in place: it builds a new database beside it
//! and renames it over only once complete, so a failed or interrupted init loses nothing.
//! Every error here maps to exit status 3.
//!
//! Every full read of the entries ([`Store::entries`], [`Store::for_each_entry`],
//! [`Store::entries_with_digest`], [`Store::verify_seal`]) runs SQLite's `integrity_check`, hashes
//! every row in the same pass, and compares the result with the baseline's seal
//! ([`seal`]) inside one read transaction; single-row lookups ([`Store::entry`]) are refused
//! until a full read has checked the seal. So no command can read a baseline without checking it.

pub mod objects;
pub mod origin;
pub mod seal;
pub mod signing;

pub use origin::check_origin;

use crate::baseline::{Entry, FileType, Hashes, Problem, Xattr};
use crate::error::{Error, Result};
use crate::policy::Class;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Embedded migrations, in order; index + 1 is the schema version each produces.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_signatures.sql"),
    include_str!("migrations/0003_credentials.sql"),
    include_str!("migrations/0004_run_machine_id.sql"),
    include_str!("migrations/0005_seal.sql"),
];

/// The first schema version whose baselines carry a seal.
const SEALED_SINCE: i64 = 5;

/// Every column of `entries`, in table order: what is loaded, and what the signature digest
/// covers (a test checks it against the schema).
const ENTRY_COLUMNS: &str =
    "path, type, mode, uid, gid, owner_name, group_name, size, blake3, sha256, \
     link_target, rdev_major, rdev_minor, acl_access, acl_default, dev, ino, nlink, mtime_ns, \
     ctime_ns, policy_group, class, problem, run_id";

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// What one run was: recorded with every init and update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub id: i64,
    pub kind: String,
    pub started_at: String,
    pub finished_at: String,
    pub host: String,
    pub root: Vec<u8>,
    pub tool_version: String,
    pub policy_file: Vec<u8>,
    pub policy_digest: String,
    pub policy_text: String,
    pub reason: Option<String>,
    pub entries: i64,
    /// The recording host's `/etc/machine-id`, when it has one.
    pub machine_id: Option<String>,
}

/// One `credentials` row: path, BLAKE3 of the content the facts describe, the facts.
pub type CredentialRow = (Vec<u8>, [u8; 32], crate::credential::CredRecord);

/// One accepted change, for the update history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub path: Vec<u8>,
    pub status: String,
    pub changes: String,
    pub old_blake3: Option<[u8; 32]>,
    pub new_blake3: Option<[u8; 32]>,
}

/// An open baseline database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// For a database being created: where it goes once complete.
    install_to: Option<PathBuf>,
    /// Whether full reads must match a seal: false only while a database is being created,
    /// in memory (tests), or a baseline from before seals is being re-recorded by an update.
    sealed: bool,
    /// Whether a full read has matched the seal (single-row lookups wait for it).
    checked: std::cell::Cell<bool>,
    /// Opened for writing from a schema older than seals: the rows cannot be checked.
    legacy: bool,
}

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

impl Store {
    pub(crate) fn db_err(&self, what: &str, e: rusqlite::Error) -> Error {
        Error::Db {
            path: bytes(self.install_to.as_deref().unwrap_or(&self.path)),
            what: what.to_string(),
            source: e,
        }
    }

    /// Create a new, empty database that will replace `dest` on [`Store::install`].
    /// Refuses an existing `dest` unless `force`.
    pub fn create(dest: &Path, force: bool) -> Result<Store> {
        if !force && std::fs::symlink_metadata(dest).is_ok() {
            return Err(Error::Usage(format!(
                "{}: a baseline already exists; pass --force to replace it (or `baseline update` to accept changes)",
                crate::sanitize::Name(&bytes(dest))
            )));
        }
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| Error::io("create database directory", bytes(&dir), e))?;
        }
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Usage("the database path names no file".into()))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = tmp.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
        // Create the file 0600 before SQLite opens it: a baseline reveals what is guarded.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io("create database", bytes(&tmp), e))?;
        let conn = Connection::open_with_flags(
            &tmp,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::Db {
            path: bytes(&tmp),
            what: "create".into(),
            source: e,
        })?;
        let mut s = Store {
            conn,
            path: tmp,
            install_to: Some(dest.to_path_buf()),
            sealed: false,
            checked: std::cell::Cell::new(false),
            legacy: false,
        };
        // A private temp file that is fsynced and renamed into place only when complete:
        // a journal would protect nothing the rename does not, and costs a second write of
        // every page. Larger pages and cache suit one bulk load.
        s.conn
            .execute_batch(
                "PRAGMA page_size=8192; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
                 PRAGMA foreign_keys=ON; PRAGMA cache_size=-65536;",
            )
            .map_err(|e| s.db_err("create", e))?;
        s.migrate()?;
        Ok(s)
    }

    /// Open an existing database; `write` for `baseline update`.
    pub fn open(path: &Path, write: bool) -> Result<Store> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::DbMissing { path: bytes(path) })
            }
            Err(e) => return Err(Error::io("open database", bytes(path), e)),
            Ok(m) if !m.is_file() => {
                return Err(Error::DbSchema {
                    path: bytes(path),
                    what: "not a regular file; expected a kmsentry baseline database".into(),
                })
            }
            Ok(_) => {}
        }
        let flags = if write {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        } else {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| Error::Db {
            path: bytes(path),
            what: "open".into(),
            source: e,
        })?;
        let mut s = Store {
            conn,
            path: path.to_path_buf(),
            install_to: None,
            sealed: true,
            checked: std::cell::Cell::new(false),
            legacy: false,
        };
        s.pragmas(write)?;
        s.check_schema(write)?;
        Ok(s)
    }

    /// Whether the baseline at `path` predates seals (a schema older than version 5), read
    /// without changing it (a writer's open would migrate it). `false` when it cannot tell:
    /// [`Store::open`] then reports why.
    pub fn predates_seal(path: &Path) -> bool {
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)))
            .is_ok_and(|v| v > 0 && v < SEALED_SINCE)
    }

    fn pragmas(&mut self, write: bool) -> Result<()> {
        let r = if write {
            self.conn.execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL;",
            )
        } else {
            self.conn.execute_batch("PRAGMA foreign_keys=ON;")
        };
        r.map_err(|e| self.db_err("not a usable SQLite database", e))
    }

    fn user_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.db_err("not a usable SQLite database", e))
    }

    fn migrate(&mut self) -> Result<()> {
        let from = self.user_version()?;
        if from >= SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self.conn.transaction().map_err(|e| Error::Db {
            path: bytes(&self.path),
            what: "migrate".into(),
            source: e,
        })?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            tx.execute_batch(sql).map_err(|e| Error::Db {
                path: bytes(&self.path),
                what: format!("apply migration {}", i + 1),
                source: e,
            })?;
        }
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .and_then(|()| tx.commit())
            .map_err(|e| Error::Db {
                path: bytes(&self.path),
                what: "migrate".into(),
                source: e,
            })
    }

    fn check_schema(&mut self, write: bool) -> Result<()> {
        let v = self.user_version()?;
        let path = bytes(&self.path);
        let schema_err = |what: String| Error::DbSchema {
            path: path.clone(),
            what,
        };
        if v > SCHEMA_VERSION {
            return Err(schema_err(format!(
                "baseline schema version {v} is newer than this kmsentry understands ({SCHEMA_VERSION}); upgrade kmsentry"
            )));
        }
        if v == 0 {
            return Err(schema_err(
                "not a kmsentry baseline (no schema version); expected a database made by `kmsentry baseline init`".into(),
            ));
        }
        // The tables this version must have come first: a foreign database that happens to
        // carry a small user_version must read as foreign, not as "older".
        self.require_tables(v, &path)?;
        if v < SCHEMA_VERSION {
            if !write && v < SEALED_SINCE {
                return Err(schema_err(format!(
                    "this baseline (schema version {v}) was written before baselines carried a seal (a digest of \
                     all their rows), so kmsentry cannot show that it is intact; re-create it from a trusted state \
                     with `kmsentry baseline init --force`, or re-record and seal it with a full \
                     `kmsentry baseline update` (it accepts the live state, so review what it lists)"
                )));
            }
            if !write {
                return Err(schema_err(format!(
                    "baseline schema version {v} is older than {SCHEMA_VERSION}; run `kmsentry baseline update` to upgrade it"
                )));
            }
            self.migrate()?;
            self.require_tables(SCHEMA_VERSION, &path)?;
            if v < SEALED_SINCE {
                // Nothing to check the old rows against: only a full update may proceed, and
                // it re-records every entry before sealing (see `baseline update`).
                self.sealed = false;
                self.legacy = true;
            }
        }
        Ok(())
    }

    fn require_tables(&self, version: i64, path: &[u8]) -> Result<()> {
        const BY_VERSION: [&[&str]; 5] = [
            &["runs", "entries", "xattrs", "accepted"],
            &["signatures"],
            &["credentials"],
            // 0004: a column of `runs`, no new table.
            &[],
            &["seal"],
        ];
        let wanted = BY_VERSION
            .iter()
            .take(version.clamp(0, SCHEMA_VERSION) as usize);
        for table in wanted.flat_map(|t| t.iter()) {
            let found: Option<String> = self
                .conn
                .query_row(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.db_err("read schema", e))?;
            if found.is_none() {
                return Err(Error::DbSchema {
                    path: path.to_vec(),
                    what: format!("not a kmsentry baseline: table `{table}` is missing"),
                });
            }
        }
        Ok(())
    }

    /// Cap SQLite's page cache at `kib` KiB (the daemon keeps the database open for its
    /// lifetime and looks rows up one at a time; the default cache is 2 MiB).
    pub fn limit_cache(&self, kib: u32) -> Result<()> {
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{kib}"))
            .map_err(|e| self.db_err("set cache size", e))
    }

    /// SQLite's own consistency check of every page, index and constraint (catches
    /// truncation and corruption before they can pass for "removed" findings). Chosen over
    /// `quick_check`, which skips index and constraint checks: 0.07 s against 0.04 s on a
    /// 108k-entry baseline, about 1 % of a verify (docs/performance.md).
    pub fn integrity_check(&self) -> Result<()> {
        let res: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.db_err("integrity check", e))?;
        if res == "ok" {
            Ok(())
        } else {
            Err(Error::DbSchema {
                path: bytes(&self.path),
                what: format!(
                    "the baseline database is corrupt (SQLite integrity_check: {res}); do not trust its verdict: \
                     restore it from a known-good copy, or re-create it from a trusted state with \
                     `kmsentry baseline init --force`"
                ),
            })
        }
    }

    /// Run `f` in one transaction: everything it writes lands together or not at all.
    pub fn atomically<T>(&mut self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.db_err("begin transaction", e))?;
        match f(self) {
            Ok(v) => {
                self.conn
                    .execute_batch("COMMIT")
                    .map_err(|e| self.db_err("commit", e))?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Record a run and return its id.
    pub fn add_run(&mut self, run: &Run) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO runs (kind, started_at, finished_at, host, root, tool_version, policy_file, policy_digest, policy_text, reason, entries, machine_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    run.kind,
                    run.started_at,
                    run.finished_at,
                    run.host,
                    run.root,
                    run.tool_version,
                    run.policy_file,
                    run.policy_digest,
                    run.policy_text,
                    run.reason,
                    run.entries,
                    run.machine_id
                ],
            )
            .map_err(|e| self.db_err("record run", e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Set the entry count and finish time of run `id`.
    pub fn finish_run(&mut self, id: i64, entries: i64, finished_at: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET entries = ?1, finished_at = ?2 WHERE id = ?3",
                params![entries, finished_at, id],
            )
            .map(|_| ())
            .map_err(|e| self.db_err("record run", e))
    }

    /// Insert or replace `entries` (with their xattrs) in one transaction, attributed to `run`.
    /// `names` resolves owner and group names.
    pub fn put_entries<E: std::borrow::Borrow<Entry>>(
        &mut self,
        run: i64,
        entries: impl IntoIterator<Item = E>,
        names: &mut crate::users::Names,
    ) -> Result<usize> {
        let path = bytes(self.install_to.as_deref().unwrap_or(&self.path));
        // A database being created holds no xattr rows to replace.
        let fresh = self.install_to.is_some();
        let err = |what: &str, e: rusqlite::Error| Error::Db {
            path: path.clone(),
            what: what.to_string(),
            source: e,
        };
        let tx = self.conn.savepoint().map_err(|e| err("write entries", e))?;
        let mut n = 0;
        {
            let mut del_x = tx
                .prepare_cached("DELETE FROM xattrs WHERE path = ?1")
                .map_err(|e| err("write entries", e))?;
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO entries (path, type, mode, uid, gid, owner_name, group_name, size, blake3, sha256, link_target,
                        rdev_major, rdev_minor, acl_access, acl_default, dev, ino, nlink, mtime_ns, ctime_ns, policy_group, class, problem, run_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
                )
                .map_err(|e| err("write entries", e))?;
            let mut ins_x = tx
                .prepare_cached("INSERT INTO xattrs (path, name, value) VALUES (?1, ?2, ?3)")
                .map_err(|e| err("write entries", e))?;
            for e in entries {
                let e: &Entry = std::borrow::Borrow::borrow(&e);
                if !fresh {
                    del_x
                        .execute([&e.path])
                        .map_err(|x| err("write entries", x))?;
                }
                ins.execute(params![
                    e.path,
                    e.ftype.as_str(),
                    e.mode,
                    e.uid,
                    e.gid,
                    names.user(e.uid),
                    names.group(e.gid),
                    e.size as i64,
                    e.hashes.map(|h| h.blake3.to_vec()),
                    e.hashes.map(|h| h.sha256.to_vec()),
                    e.link_target,
                    e.rdev.map(|r| r.0),
                    e.rdev.map(|r| r.1),
                    e.acl_access,
                    e.acl_default,
                    e.dev as i64,
                    e.ino as i64,
                    e.nlink as i64,
                    e.mtime_ns,
                    e.ctime_ns,
                    e.group,
                    e.class.as_str(),
                    e.problem.as_ref().map(problem_text),
                    run
                ])
                .map_err(|x| err("write entries", x))?;
                for x in &e.xattrs {
                    ins_x
                        .execute(params![e.path, x.name, x.value])
                        .map_err(|x| err("write entries", x))?;
                }
                n += 1;
            }
        }
        tx.commit().map_err(|e| err("write entries", e))?;
        Ok(n)
    }

    /// Remove entries (and their xattrs).
    pub fn delete_entries<'a>(&mut self, paths: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
        let path = bytes(&self.path);
        let err = |e| Error::Db {
            path: path.clone(),
            what: "delete entries".into(),
            source: e,
        };
        let tx = self.conn.savepoint().map_err(err)?;
        {
            let mut del = tx
                .prepare_cached("DELETE FROM entries WHERE path = ?1")
                .map_err(err)?;
            for p in paths {
                del.execute([p]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Record (or replace) the credential facts of these files.
    pub fn put_credentials<'a>(
        &mut self,
        items: impl IntoIterator<Item = &'a crate::credential::Scanned>,
    ) -> Result<()> {
        let path = bytes(&self.path);
        let err = |e| Error::Db {
            path: path.clone(),
            what: "write credential facts".into(),
            source: e,
        };
        let tx = self.conn.savepoint().map_err(err)?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO credentials (path, blake3, kind, facts) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            for s in items {
                put.execute(params![
                    s.path,
                    &s.blake3[..],
                    s.record.kind_str(),
                    s.record.to_json()
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Forget the credential facts of these files.
    pub fn delete_credentials<'a>(
        &mut self,
        paths: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        let path = bytes(&self.path);
        let err = |e| Error::Db {
            path: path.clone(),
            what: "delete credential facts".into(),
            source: e,
        };
        let tx = self.conn.savepoint().map_err(err)?;
        {
            let mut del = tx
                .prepare_cached("DELETE FROM credentials WHERE path = ?1")
                .map_err(err)?;
            for p in paths {
                del.execute([p]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Forget credential facts whose file is no longer an entry.
    pub fn drop_orphan_credentials(&mut self) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM credentials WHERE path NOT IN (SELECT path FROM entries)",
                [],
            )
            .map(|_| ())
            .map_err(|e| self.db_err("delete credential facts", e))
    }

    /// Every credential facts row: (path, BLAKE3 of the content they describe, facts).
    pub fn credentials(&self) -> Result<Vec<CredentialRow>> {
        let err = |e| self.db_err("read credential facts", e);
        let mut st = self
            .conn
            .prepare("SELECT path, blake3, facts FROM credentials ORDER BY path")
            .map_err(err)?;
        let mut rows = st.query([]).map_err(err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err)? {
            let path: Vec<u8> = r.get(0).map_err(err)?;
            let hash: Vec<u8> = r.get(1).map_err(err)?;
            let facts: String = r.get(2).map_err(err)?;
            let schema = |what: String| Error::DbSchema {
                path: bytes(&self.path),
                what,
            };
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| schema("credential facts: blake3 is not 32 bytes".into()))?;
            let record = crate::credential::CredRecord::from_json(&facts).map_err(schema)?;
            out.push((path, hash, record));
        }
        Ok(out)
    }

    /// Record accepted changes of run `run`.
    pub fn add_accepted(&mut self, run: i64, items: &[Accepted]) -> Result<()> {
        let path = bytes(&self.path);
        let err = |e| Error::Db {
            path: path.clone(),
            what: "record accepted changes".into(),
            source: e,
        };
        let tx = self.conn.savepoint().map_err(err)?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO accepted (run_id, path, status, changes, old_blake3, new_blake3) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(err)?;
            for a in items {
                ins.execute(params![
                    run,
                    a.path,
                    a.status,
                    a.changes,
                    a.old_blake3.map(|h| h.to_vec()),
                    a.new_blake3.map(|h| h.to_vec())
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Every entry, sorted by raw path bytes; the seal checked in the same pass.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        Ok(self.entries_with_digest()?.0)
    }

    /// Stream every entry, sorted by raw path bytes, without holding them all. The seal is
    /// checked when the stream ends: on an error, discard whatever `f` gathered.
    pub fn for_each_entry(&self, f: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        self.read_all(f).map(|_| ())
    }

    /// Stream every entry (sorted by path bytes) to `f` and return the signature digest;
    /// the seal is checked when the stream ends (on an error, discard what `f` gathered).
    pub fn for_each_entry_with_digest(
        &self,
        f: impl FnMut(Entry) -> Result<()>,
    ) -> Result<[u8; 32]> {
        self.read_all(f)
    }

    /// The number of entries (to size a buffer before streaming them).
    pub fn entry_count(&self) -> Result<usize> {
        self.count_entries()
    }

    /// Check the whole baseline against its seal (and SQLite's `integrity_check`) without keeping
    /// the rows: what a reader that only looks rows up one by one (the daemon) runs first.
    pub fn verify_seal(&self) -> Result<()> {
        self.read_all(|_| Ok(())).map(|_| ())
    }

    /// Every entry (sorted by path bytes) and the signature digest of the database, in one
    /// pass over the rows that also checks the seal: checking a signature then costs no
    /// second read of the baseline.
    pub fn entries_with_digest(&self) -> Result<(Vec<Entry>, [u8; 32])> {
        // Sized up front: growing by doubling would briefly hold the old and the new buffer,
        // half again the baseline's memory at 100k entries.
        let mut out = Vec::with_capacity(self.count_entries()?);
        let d = self.read_all(|e| {
            out.push(e);
            Ok(())
        })?;
        Ok((out, d))
    }

    /// Whether this baseline was written before seals (opened for writing and migrated): its
    /// rows cannot be checked, so only a full re-recording may seal it.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// Seal the database as it stands: the last write of every `init` and `update`.
    pub fn seal(&mut self, run_id: i64, now: &str) -> Result<()> {
        seal::write(self, run_id, now)
    }

    /// The one full read: `integrity_check`, then every row streamed to `f` and hashed, then the
    /// digest compared with the seal, all in one read transaction (a concurrent `baseline
    /// update` cannot make the rows and the seal come from different states). Returns the
    /// signing digest.
    fn read_all(&self, f: impl FnMut(Entry) -> Result<()>) -> Result<[u8; 32]> {
        self.conn
            .execute_batch("SAVEPOINT kmsentry_read")
            .map_err(|e| self.db_err("read entries", e))?;
        let r = self.read_all_inner(f);
        let _ = self.conn.execute_batch("RELEASE kmsentry_read");
        if r.is_ok() {
            self.checked.set(true);
        }
        r
    }

    fn read_all_inner(&self, f: impl FnMut(Entry) -> Result<()>) -> Result<[u8; 32]> {
        self.integrity_check()?;
        let mut hx = (blake3::Hasher::new(), blake3::Hasher::new());
        self.scan(f, Some(&mut hx))?;
        let d = signing::combine(
            self,
            *hx.0.finalize().as_bytes(),
            *hx.1.finalize().as_bytes(),
        )?;
        if self.sealed {
            seal::check(self, &d)?;
        }
        Ok(d)
    }

    fn count_entries(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
            .map_err(|e| self.db_err("read entries", e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Stream entries; with `hashers`, also feed the rows of `entries` and `xattrs` to them in
    /// the digest's canonical encoding.
    fn scan(
        &self,
        mut f: impl FnMut(Entry) -> Result<()>,
        mut hashers: Option<&mut (blake3::Hasher, blake3::Hasher)>,
    ) -> Result<()> {
        let err = |e| self.db_err("read entries", e);
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {ENTRY_COLUMNS} FROM entries ORDER BY path"
            ))
            .map_err(err)?;
        let mut xs = self
            .conn
            .prepare("SELECT path, name, value FROM xattrs ORDER BY path, name")
            .map_err(err)?;
        let mut xrows = xs.query([]).map_err(err)?;
        let mut pending: Option<(Vec<u8>, Xattr)> = None;
        let mut rows = st.query([]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            if let Some(h) = hashers.as_deref_mut() {
                signing::hash_row(&mut h.0, r).map_err(err)?;
            }
            let mut e = row_to_entry(r).map_err(|m| Error::DbSchema {
                path: bytes(&self.path),
                what: m,
            })?;
            // Merge the xattr rows that belong to this path (both sides sorted by path).
            loop {
                if pending.is_none() {
                    pending = match xrows.next().map_err(err)? {
                        Some(x) => {
                            if let Some(h) = hashers.as_deref_mut() {
                                signing::hash_row(&mut h.1, x).map_err(err)?;
                            }
                            Some((
                                x.get(0).map_err(err)?,
                                Xattr {
                                    name: x.get(1).map_err(err)?,
                                    value: x.get(2).map_err(err)?,
                                },
                            ))
                        }
                        None => None,
                    };
                }
                match &pending {
                    Some((p, _)) if *p == e.path => {
                        if let Some((_, x)) = pending.take() {
                            e.xattrs.push(x);
                        }
                    }
                    Some((p, _)) if *p < e.path => pending = None, // orphan row
                    _ => break,
                }
            }
            f(e)?;
        }
        // xattr rows past the last entry (orphans) are part of the database too.
        if let Some(h) = hashers {
            while let Some(x) = xrows.next().map_err(err)? {
                signing::hash_row(&mut h.1, x).map_err(err)?;
            }
        }
        Ok(())
    }

    /// One entry by path. Refused until a full read (e.g. [`Store::verify_seal`]) checked
    /// the seal: a lookup alone cannot tell an intact row from an edited one.
    pub fn entry(&self, path: &[u8]) -> Result<Option<Entry>> {
        if self.sealed && !self.checked.get() {
            return Err(Error::Integrity(format!(
                "{}: a baseline row was looked up before the baseline's seal was checked",
                crate::sanitize::Name(&bytes(&self.path))
            )));
        }
        let err = |e| self.db_err("read entry", e);
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM entries WHERE path = ?1"
            ))
            .map_err(err)?;
        let mut rows = st.query([path]).map_err(err)?;
        let Some(r) = rows.next().map_err(err)? else {
            return Ok(None);
        };
        let mut e = row_to_entry(r).map_err(|m| Error::DbSchema {
            path: bytes(&self.path),
            what: m,
        })?;
        let mut xs = self
            .conn
            .prepare_cached("SELECT name, value FROM xattrs WHERE path = ?1 ORDER BY name")
            .map_err(err)?;
        let mut xr = xs.query([path]).map_err(err)?;
        while let Some(x) = xr.next().map_err(err)? {
            e.xattrs.push(Xattr {
                name: x.get(0).map_err(err)?,
                value: x.get(1).map_err(err)?,
            });
        }
        Ok(Some(e))
    }

    /// Whether any signature was ever recorded.
    pub fn is_signed(&self) -> Result<bool> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM signatures)", [], |r| r.get(0))
            .map_err(|e| self.db_err("read signatures", e))
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<Run>> {
        let err = |e| self.db_err("read runs", e);
        let mut st = self
            .conn
            .prepare(
                "SELECT id, kind, started_at, finished_at, host, root, tool_version, policy_file, policy_digest, policy_text, reason, entries, machine_id
                 FROM runs ORDER BY id",
            )
            .map_err(err)?;
        let rows = st
            .query_map([], |r| {
                Ok(Run {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    host: r.get(4)?,
                    root: r.get(5)?,
                    tool_version: r.get(6)?,
                    policy_file: r.get(7)?,
                    policy_digest: r.get(8)?,
                    policy_text: r.get(9)?,
                    reason: r.get(10)?,
                    entries: r.get(11)?,
                    machine_id: r.get(12)?,
                })
            })
            .map_err(err)?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(err)
    }

    /// Finish a database made by [`Store::create`]: checkpoint, close, fsync, rename over the
    /// destination, fsync the directory. Before this, the destination is untouched.
    pub fn install(self) -> Result<PathBuf> {
        let Store {
            conn,
            path,
            install_to,
            ..
        } = self;
        let Some(dest) = install_to else {
            return Ok(path);
        };
        let dberr = |e| Error::Db {
            path: bytes(&dest),
            what: "finish".into(),
            source: e,
        };
        // At rest the file is self-contained in rollback-journal mode, so it can be read from
        // read-only media (a WAL database needs a writable directory for its -shm even to
        // read); writers (`baseline update`) switch to WAL while they work.
        conn.execute_batch("PRAGMA journal_mode=DELETE;")
            .map_err(dberr)?;
        conn.close().map_err(|(_, e)| dberr(e))?;
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("sync database", bytes(&path), e))?;
        std::fs::rename(&path, &dest)
            .map_err(|e| Error::io("install database", bytes(&dest), e))?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io("sync directory", bytes(dir), e))?;
        }
        Ok(dest)
    }

    /// Drop a database made by [`Store::create`] that will not be installed.
    pub fn abandon(self) {
        let Store {
            conn,
            path,
            install_to,
            ..
        } = self;
        drop(conn);
        if install_to.is_some() {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// Open an in-memory database with the current schema (tests).
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory().map_err(|e| Error::Db {
            path: b":memory:".to_vec(),
            what: "open".into(),
            source: e,
        })?;
        let mut s = Store {
            conn,
            path: PathBuf::from(":memory:"),
            install_to: None,
            sealed: false,
            checked: std::cell::Cell::new(false),
            legacy: false,
        };
        s.pragmas(false)?;
        s.migrate()?;
        Ok(s)
    }

    /// The schema as SQL text, for the golden schema test.
    pub fn schema_sql(&self) -> Result<String> {
        let mut st = self
            .conn
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name")
            .map_err(|e| self.db_err("read schema", e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.db_err("read schema", e))?;
        let mut out = String::new();
        for r in rows {
            out.push_str(&r.map_err(|e| self.db_err("read schema", e))?);
            out.push_str(";\n");
        }
        Ok(out)
    }
}

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

fn problem_text(p: &Problem) -> String {
    match p {
        Problem::Unstable => "unstable".into(),
        Problem::Unreadable(m) => format!("unreadable: {m}"),
    }
}

fn parse_problem(s: &str) -> Problem {
    match s {
        "unstable" => Problem::Unstable,
        other => Problem::Unreadable(
            other
                .strip_prefix("unreadable: ")
                .unwrap_or(other)
                .to_string(),
        ),
    }
}

fn hash32(v: Option<Vec<u8>>, what: &str) -> std::result::Result<Option<[u8; 32]>, String> {
    match v {
        None => Ok(None),
        Some(b) => b
            .try_into()
            .map(Some)
            .map_err(|_| format!("corrupt row: {what} is not 32 bytes")),
    }
}

fn row_to_entry(r: &rusqlite::Row<'_>) -> std::result::Result<Entry, String> {
    let g = |e: rusqlite::Error| format!("corrupt row: {e}");
    let path: Vec<u8> = r.get(0).map_err(g)?;
    let ty: String = r.get(1).map_err(g)?;
    let ftype = FileType::parse(&ty).ok_or_else(|| format!("corrupt row: unknown type `{ty}`"))?;
    let b3 = hash32(r.get(8).map_err(g)?, "blake3")?;
    let sha = hash32(r.get(9).map_err(g)?, "sha256")?;
    let hashes = match (b3, sha) {
        (Some(blake3), Some(sha256)) => Some(Hashes { blake3, sha256 }),
        (None, None) => None,
        _ => return Err("corrupt row: one hash without the other".into()),
    };
    let rmaj: Option<u32> = r.get(11).map_err(g)?;
    let rmin: Option<u32> = r.get(12).map_err(g)?;
    let class: String = r.get(21).map_err(g)?;
    let problem: Option<String> = r.get(22).map_err(g)?;
    Ok(Entry {
        path,
        ftype,
        mode: r.get(2).map_err(g)?,
        uid: r.get(3).map_err(g)?,
        gid: r.get(4).map_err(g)?,
        size: r.get::<_, i64>(7).map_err(g)? as u64,
        hashes,
        link_target: r.get(10).map_err(g)?,
        rdev: rmaj.zip(rmin),
        acl_access: r.get(13).map_err(g)?,
        acl_default: r.get(14).map_err(g)?,
        xattrs: Vec::new(),
        dev: r.get::<_, i64>(15).map_err(g)? as u64,
        ino: r.get::<_, i64>(16).map_err(g)? as u64,
        nlink: r.get::<_, i64>(17).map_err(g)? as u64,
        mtime_ns: r.get(18).map_err(g)?,
        ctime_ns: r.get(19).map_err(g)?,
        group: r.get(20).map_err(g)?,
        class: Class::parse(&class)
            .ok_or_else(|| format!("corrupt row: unknown class `{class}`"))?,
        problem: problem.as_deref().map(parse_problem),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(path: &[u8]) -> Entry {
        Entry {
            path: path.to_vec(),
            ftype: FileType::File,
            mode: 0o600,
            uid: 0,
            gid: 0,
            size: 3,
            hashes: Some(Hashes {
                blake3: [1; 32],
                sha256: [2; 32],
            }),
            link_target: None,
            rdev: None,
            acl_access: Some("user::rw-,user:1000:r--,group::---,mask::r--,other::---".into()),
            acl_default: None,
            xattrs: vec![
                Xattr {
                    name: b"security.selinux".to_vec(),
                    value: b"system_u:object_r:cert_t:s0\0".to_vec(),
                },
                Xattr {
                    name: b"user.a".to_vec(),
                    value: vec![0xff],
                },
            ],
            dev: u64::MAX,
            ino: 42,
            nlink: 1,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: -5,
            group: "keys".into(),
            class: Class::PrivateKey,
            problem: None,
        }
    }

    pub(crate) fn run() -> Run {
        Run {
            id: 0,
            kind: "init".into(),
            started_at: "t0".into(),
            finished_at: "t1".into(),
            host: "h".into(),
            root: b"/".to_vec(),
            tool_version: "0".into(),
            policy_file: b"p".to_vec(),
            policy_digest: "d".into(),
            policy_text: "version: 1".into(),
            reason: None,
            entries: 0,
            machine_id: None,
        }
    }

    #[test]
    fn entries_round_trip_with_xattrs_in_path_order() {
        let mut s = Store::open_in_memory().unwrap();
        let id = s.add_run(&run()).unwrap();
        let t = tempfile::tempdir().unwrap();
        let mut names =
            crate::users::Names::for_root(&crate::fsroot::Root::open(t.path()).unwrap());
        let mut b = sample(b"/b\xff");
        b.xattrs.clear();
        b.ftype = FileType::CharDevice;
        b.rdev = Some((1, 3));
        b.hashes = None;
        b.problem = Some(Problem::Unstable);
        let a = sample(b"/a");
        let c = sample(b"/c");
        s.put_entries(id, [&c, &b, &a], &mut names).unwrap();
        let got = s.entries().unwrap();
        assert_eq!(got, vec![a.clone(), b, c]);
        assert_eq!(s.entry(b"/a").unwrap(), Some(a));
        assert_eq!(s.entry(b"/nope").unwrap(), None);
        s.delete_entries([&b"/a"[..]]).unwrap();
        assert_eq!(s.entries().unwrap().len(), 2);
    }

    #[test]
    fn schema_matches_the_golden_file() {
        let s = Store::open_in_memory().unwrap();
        let golden_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/schema.sql");
        let got = s.schema_sql().unwrap();
        if std::env::var("KMSENTRY_BLESS").as_deref() == Ok("1") {
            std::fs::write(golden_path, &got).unwrap();
        }
        let golden = std::fs::read_to_string(golden_path).unwrap();
        assert_eq!(
            got, golden,
            "schema changed: update tests/golden/schema.sql with a new migration"
        );
    }

    #[test]
    fn missing_garbage_newer_and_foreign_databases_are_integrity_errors() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("none.db");
        assert!(matches!(
            Store::open(&missing, false),
            Err(Error::DbMissing { .. })
        ));

        let junk = t.path().join("junk.db");
        std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
        let e = Store::open(&junk, false).err().unwrap();
        assert_eq!(e.exit_code(), crate::exit::ExitCode::Integrity, "{e}");

        let foreign = t.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x);")
            .unwrap();
        let e = Store::open(&foreign, false).err().unwrap();
        assert!(e.to_string().contains("not a kmsentry baseline"), "{e}");

        let newer = t.path().join("newer.db");
        let s = Store::create(&newer, false).unwrap();
        s.install().unwrap();
        Connection::open(&newer)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99;")
            .unwrap();
        let e = Store::open(&newer, false).err().unwrap();
        assert!(e.to_string().contains("newer than this kmsentry"), "{e}");
        assert_eq!(e.exit_code(), crate::exit::ExitCode::Integrity);
    }

    #[test]
    fn a_version_1_baseline_is_refused_read_only_and_upgraded_by_a_writer() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("v1.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.execute_batch("PRAGMA user_version = 1;").unwrap();
        drop(c);
        let e = Store::open(&p, false).err().unwrap();
        assert!(
            e.to_string().contains("before baselines carried a seal"),
            "{e}"
        );
        assert!(e.to_string().contains("baseline init --force"), "{e}");
        let mut s = Store::open(&p, true).unwrap();
        assert_eq!(s.user_version().unwrap(), SCHEMA_VERSION);
        assert!(!s.is_signed().unwrap());
        assert!(s.is_legacy());
        // Migrated but never sealed: a reader refuses it.
        drop(s);
        let r = Store::open(&p, false).unwrap();
        let e = r.entries().unwrap_err();
        assert!(e.to_string().contains("has no seal"), "{e}");
        assert!(r.entry(b"/a").is_err(), "lookups wait for the seal check");
        drop(r);
        // Sealed by a writer (what a full `baseline update` ends with), it reads.
        s = Store::open(&p, true).unwrap();
        let id = s.add_run(&run()).unwrap();
        s.seal(id, "now").unwrap();
        drop(s);
        let r = Store::open(&p, false).unwrap();
        assert!(r.entries().unwrap().is_empty());
        assert_eq!(r.entry(b"/a").unwrap(), None);
    }

    #[test]
    fn a_sealed_baseline_reads_and_any_edit_breaks_the_seal() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("b.db");
        let mut s = Store::create(&p, false).unwrap();
        let id = s.add_run(&run()).unwrap();
        let mut names =
            crate::users::Names::for_root(&crate::fsroot::Root::open(t.path()).unwrap());
        s.put_entries(id, [sample(b"/a"), sample(b"/b")], &mut names)
            .unwrap();
        s.seal(id, "now").unwrap();
        s.install().unwrap();
        let good = std::fs::read(&p).unwrap();
        assert_eq!(Store::open(&p, false).unwrap().entries().unwrap().len(), 2);
        let edits = [
            "UPDATE entries SET mode = 420 WHERE path = CAST('/a' AS BLOB)",
            "DELETE FROM xattrs WHERE path = CAST('/b' AS BLOB)",
            "UPDATE runs SET reason = 'x'",
            "INSERT INTO signatures (run_id, algorithm, public_key, digest, signature, signed_at) VALUES (1, 'ed25519', x'00', x'00', x'00', 'now')",
            "DELETE FROM seal",
        ];
        for sql in edits {
            std::fs::write(&p, &good).unwrap();
            Connection::open(&p).unwrap().execute_batch(sql).unwrap();
            let r = Store::open(&p, false).unwrap();
            let e = r.entries().unwrap_err();
            assert_eq!(e.exit_code(), crate::exit::ExitCode::Integrity, "{sql}");
            assert!(e.to_string().contains("seal"), "{sql}: {e}");
            assert!(r.for_each_entry(|_| Ok(())).is_err(), "{sql}");
            assert!(r.verify_seal().is_err(), "{sql}");
        }
    }

    #[test]
    fn create_refuses_an_existing_database_without_force_and_installs_atomically() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("sub/dir/b.db");
        let mut s = Store::create(&db, false).unwrap();
        assert!(!db.exists(), "destination must not exist before install");
        s.add_run(&run()).unwrap();
        s.install().unwrap();
        assert!(db.exists());
        let e = Store::create(&db, false).err().unwrap();
        assert_eq!(e.exit_code(), crate::exit::ExitCode::Usage);
        let s = Store::create(&db, true).unwrap();
        s.abandon();
        // The abandoned rebuild left the old baseline intact.
        assert_eq!(Store::open(&db, false).unwrap().runs().unwrap().len(), 1);
        let leftovers: Vec<_> = std::fs::read_dir(db.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
