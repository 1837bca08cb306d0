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
//!
//! Where each part lives: `schema` (migrations, version, pragmas, table checks), `entries`
//! (writes and every checked read), `runs` (runs, accepted rotations, credential facts),
//! [`seal`] and [`signing`] (the two digests over every row), [`origin`] (which host a baseline
//! was recorded on), [`objects`] (the trusted content store). This file: opening, creating,
//! installing and abandoning a database, and its transactions.

mod entries;
pub mod objects;
pub mod origin;
mod runs;
mod schema;
pub mod seal;
pub mod signing;

pub use runs::{Accepted, Run};
pub use schema::SCHEMA_VERSION;

pub use origin::check_origin;

use crate::baseline::{Entry, FileType, Hashes, Problem, Xattr};
use crate::error::{Error, Result};
use crate::policy::Class;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One `credentials` row: path, BLAKE3 of the content the facts describe, the facts.
pub type CredentialRow = (Vec<u8>, [u8; 32], crate::credential::CredRecord);

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

    /// Check the whole baseline against its seal (and SQLite's `integrity_check`) without keeping
    /// the rows: what a reader that only looks rows up one by one (the daemon) runs first.
    pub fn verify_seal(&self) -> Result<()> {
        self.read_all(|_| Ok(())).map(|_| ())
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

    /// Whether any signature was ever recorded.
    pub fn is_signed(&self) -> Result<bool> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM signatures)", [], |r| r.get(0))
            .map_err(|e| self.db_err("read signatures", e))
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
}

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

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
                sha256: Some([2; 32]),
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
        c.execute_batch(super::schema::MIGRATIONS[0]).unwrap();
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
