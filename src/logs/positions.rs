//! Read positions of followed log files, so a restarted daemon neither repeats nor skips a
//! line. A file is known by (dev, inode) and a fingerprint of its first bytes (BLAKE3 of
//! the first `fp_len` bytes, `fp_len` ≤ [`FP_BYTES`]): an inode number reused by a new file
//! does not match, and a file rotated away while the daemon was down is found again by its
//! inode, or by its fingerprint when copytruncate gave it a new one.
//!
//! A table `log_positions` in the learned-state database beside the baseline (`logs.db`,
//! WAL, `synchronous=FULL`). [`Positions::save`] replaces a source's rows in one
//! transaction: a crash keeps the previous set whole. The daemon saves only offsets whose
//! alerts are already durable in the alert log (see `watch::log_room`).
//! Must not: hold a transaction open between saves (the learned state shares the file).

use crate::error::{Error, Result};
use rusqlite::{params, Connection};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Bytes of a file's beginning that identify it.
pub const FP_BYTES: usize = 4096;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log_positions (
    source TEXT NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL,
    fp_len INTEGER NOT NULL, fp BLOB NOT NULL, offset INTEGER NOT NULL, path BLOB NOT NULL,
    PRIMARY KEY (source, dev, ino)
) WITHOUT ROWID;
";

/// One followed file's position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePos {
    pub dev: u64,
    pub ino: u64,
    pub fp_len: u32,
    pub fp: [u8; 32],
    /// Where the first line not yet judged (or whose alerts are not yet durable) starts.
    pub offset: u64,
    /// The name it was last seen at.
    pub path: Vec<u8>,
}

/// The positions table.
pub struct Positions {
    conn: Connection,
    path: Vec<u8>,
}

fn db(path: &[u8], what: &str, e: rusqlite::Error) -> Error {
    Error::io(
        "log positions database",
        path.to_vec(),
        std::io::Error::other(format!("{what}: {e}")),
    )
}

impl Positions {
    /// Open (creating) the table in the database at `path`.
    pub fn open(path: &Path) -> Result<Positions> {
        let name = path.as_os_str().as_bytes().to_vec();
        let conn = Connection::open(path).map_err(|e| db(&name, "open", e))?;
        Self::init(conn, name)
    }

    /// Positions that last as long as the process (unit tests).
    pub fn in_memory() -> Result<Positions> {
        let conn = Connection::open_in_memory().map_err(|e| db(b":memory:", "open", e))?;
        Self::init(conn, b":memory:".to_vec())
    }

    fn init(conn: Connection, path: Vec<u8>) -> Result<Positions> {
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| db(&path, "busy timeout", e))?;
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; {SCHEMA}"
        ))
        .map_err(|e| db(&path, "create schema", e))?;
        Ok(Positions { conn, path })
    }

    /// Every stored position of `source`.
    pub fn load(&self, source: &str) -> Result<Vec<FilePos>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT dev, ino, fp_len, fp, offset, path FROM log_positions WHERE source = ?1",
            )
            .map_err(|e| db(&self.path, "read", e))?;
        let rows = st
            .query_map(params![source], |r| {
                let fp: Vec<u8> = r.get(3)?;
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    fp,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })
            .map_err(|e| db(&self.path, "read", e))?;
        let mut out = Vec::new();
        for r in rows {
            let (dev, ino, fp_len, fp, offset, path) = r.map_err(|e| db(&self.path, "read", e))?;
            // A row this binary did not write (wrong fingerprint size) is not trusted.
            let Ok(fp) = <[u8; 32]>::try_from(fp.as_slice()) else {
                continue;
            };
            out.push(FilePos {
                dev: dev as u64,
                ino: ino as u64,
                fp_len: u32::try_from(fp_len).unwrap_or(0),
                fp,
                offset: u64::try_from(offset).unwrap_or(0),
                path,
            });
        }
        Ok(out)
    }

    /// Whether `source` has ever been followed (it has rows).
    pub fn known(&self, source: &str) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM log_positions WHERE source = ?1)",
                params![source],
                |r| r.get::<_, bool>(0),
            )
            .map_err(|e| db(&self.path, "read", e))
    }

    /// Replace the positions of each `(source, files)` in one transaction.
    pub fn save(&mut self, sources: &[(String, Vec<FilePos>)]) -> Result<()> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| db(&self.path, "begin", e))?;
        for (source, files) in sources {
            tx.execute(
                "DELETE FROM log_positions WHERE source = ?1",
                params![source],
            )
            .map_err(|e| db(&self.path, "write", e))?;
            for f in files {
                tx.execute(
                    "INSERT OR REPLACE INTO log_positions (source, dev, ino, fp_len, fp, offset, path) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        source,
                        f.dev as i64,
                        f.ino as i64,
                        i64::from(f.fp_len),
                        &f.fp[..],
                        i64::try_from(f.offset).unwrap_or(i64::MAX),
                        &f.path
                    ],
                )
                .map_err(|e| db(&self.path, "write", e))?;
            }
        }
        tx.commit().map_err(|e| db(&self.path, "commit", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_replaces_the_sources_rows_whole() {
        let mut p = Positions::in_memory().unwrap();
        assert!(!p.known("a").unwrap());
        let f = |ino, offset| FilePos {
            dev: 1,
            ino,
            fp_len: 3,
            fp: [7; 32],
            offset,
            path: b"/l/a.log".to_vec(),
        };
        p.save(&[("a".into(), vec![f(1, 10), f(2, 0)])]).unwrap();
        p.save(&[("a".into(), vec![f(2, 5)])]).unwrap();
        assert_eq!(p.load("a").unwrap(), vec![f(2, 5)]);
        assert!(p.known("a").unwrap());
        assert!(p.load("b").unwrap().is_empty());
    }
}
