//! Learned state of the `first_seen` condition: per source, the time of its first event
//! (the learning window starts there) and every value seen per field. SQLite, a small file
//! of its own beside the baseline (`logs.db`), WAL with `synchronous=FULL`; learning is
//! written in transactions, so a crash keeps the values of the last commit and never half
//! a row. Values are stored masked ([`super::mask::mask_value`]): a secret never lands on disk.

use crate::error::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log_sources (name TEXT PRIMARY KEY, first_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log_seen (
    source TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL, first_ts INTEGER NOT NULL,
    PRIMARY KEY (source, field, value)
) WITHOUT ROWID;
";
/// Rows written per transaction.
const BATCH: usize = 4096;

/// The `first_seen` memory.
pub struct LearnedState {
    conn: Connection,
    path: Vec<u8>,
    starts: HashMap<String, i64>,
    seen: HashMap<(String, String), HashSet<String>>,
    in_tx: usize,
}

impl LearnedState {
    /// Open (creating) the state database at `path`.
    pub fn open(path: &Path) -> Result<LearnedState> {
        let name = path.as_os_str().as_bytes().to_vec();
        let conn = Connection::open(path).map_err(|e| db(&name, "open", e))?;
        Self::init(conn, name)
    }

    /// A state that lives only as long as the run (`logs scan` without `--state`).
    pub fn in_memory() -> Result<LearnedState> {
        let conn = Connection::open_in_memory().map_err(|e| db(b":memory:", "open", e))?;
        Self::init(conn, b":memory:".to_vec())
    }

    fn init(conn: Connection, path: Vec<u8>) -> Result<LearnedState> {
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| db(&path, "read schema version", e))?;
        if v > SCHEMA_VERSION {
            return Err(Error::DbSchema {
                path,
                what: format!(
                    "log state schema {v} is newer than this kmsentry ({SCHEMA_VERSION})"
                ),
            });
        }
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; BEGIN; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(|e| db(&path, "create schema", e))?;
        let mut starts = HashMap::new();
        {
            let mut st = conn
                .prepare("SELECT name, first_ts FROM log_sources")
                .map_err(|e| db(&path, "read", e))?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(|e| db(&path, "read", e))?;
            for r in rows {
                let (n, t) = r.map_err(|e| db(&path, "read", e))?;
                starts.insert(n, t);
            }
        }
        Ok(LearnedState {
            conn,
            path,
            starts,
            seen: HashMap::new(),
            in_tx: 0,
        })
    }

    fn begin(&mut self) -> Result<()> {
        if self.in_tx == 0 {
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| db(&self.path, "begin", e))?;
        }
        self.in_tx += 1;
        if self.in_tx >= BATCH {
            self.commit()?;
            return self.begin();
        }
        Ok(())
    }

    /// Commit what was learned since the last commit.
    pub fn commit(&mut self) -> Result<()> {
        if self.in_tx > 0 {
            self.in_tx = 0;
            self.conn
                .execute_batch("COMMIT")
                .map_err(|e| db(&self.path, "commit", e))?;
        }
        Ok(())
    }

    /// The time of `source`'s first event, recording `ts` when there is none yet.
    pub fn source_start(&mut self, source: &str, ts: i64) -> Result<i64> {
        if let Some(t) = self.starts.get(source) {
            return Ok(*t);
        }
        self.begin()?;
        self.conn
            .execute(
                "INSERT OR IGNORE INTO log_sources (name, first_ts) VALUES (?1, ?2)",
                params![source, ts],
            )
            .map_err(|e| db(&self.path, "write", e))?;
        self.starts.insert(source.to_string(), ts);
        Ok(ts)
    }

    /// Whether `value` of `field` was seen before on `source`; remembers it either way.
    pub fn seen_before(&mut self, source: &str, field: &str, value: &str, ts: i64) -> Result<bool> {
        let key = (source.to_string(), field.to_string());
        if !self.seen.contains_key(&key) {
            let mut set = HashSet::new();
            let mut st = self
                .conn
                .prepare_cached("SELECT value FROM log_seen WHERE source = ?1 AND field = ?2")
                .map_err(|e| db(&self.path, "read", e))?;
            let rows = st
                .query_map(params![source, field], |r| r.get::<_, String>(0))
                .map_err(|e| db(&self.path, "read", e))?;
            for r in rows {
                set.insert(r.map_err(|e| db(&self.path, "read", e))?);
            }
            drop(st);
            self.seen.insert(key.clone(), set);
        }
        let value = super::mask::mask_value(value);
        if self.seen.get(&key).is_some_and(|s| s.contains(&value)) {
            return Ok(true);
        }
        self.begin()?;
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO log_seen (source, field, value, first_ts) VALUES (?1, ?2, ?3, ?4)")
            .and_then(|mut s| s.execute(params![source, field, value, ts]))
            .map_err(|e| db(&self.path, "write", e))?;
        if let Some(s) = self.seen.get_mut(&key) {
            s.insert(value);
        }
        Ok(false)
    }

    /// Values remembered for (source, field) (tests, `logs scan` summary).
    pub fn count(&self, source: &str, field: &str) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM log_seen WHERE source = ?1 AND field = ?2",
                params![source, field],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.unwrap_or(0) as u64)
            .map_err(|e| db(&self.path, "read", e))
    }
}

fn db(path: &[u8], what: &str, source: rusqlite::Error) -> Error {
    Error::Db {
        path: path.to_vec(),
        what: format!("log state: {what}"),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_values_survive_a_reopen_and_secrets_are_stored_masked() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("logs.db");
        {
            let mut s = LearnedState::open(&p).unwrap();
            assert_eq!(s.source_start("vault", 100).unwrap(), 100);
            assert!(!s.seen_before("vault", "user", "alice", 100).unwrap());
            assert!(s.seen_before("vault", "user", "alice", 101).unwrap());
            assert!(!s
                .seen_before("vault", "tok", "-----BEGIN PRIVATE KEY----- x", 101)
                .unwrap());
            s.commit().unwrap();
        }
        let mut s = LearnedState::open(&p).unwrap();
        assert_eq!(s.source_start("vault", 999).unwrap(), 100);
        assert!(s.seen_before("vault", "user", "alice", 200).unwrap());
        assert!(!s.seen_before("vault", "user", "bob", 200).unwrap());
        let c: String = s
            .conn
            .query_row("SELECT value FROM log_seen WHERE field='tok'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(c, super::super::mask::MASK);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("logs.db");
        Connection::open(&p)
            .unwrap()
            .execute_batch("PRAGMA user_version=9")
            .unwrap();
        assert!(LearnedState::open(&p).is_err());
    }
}
