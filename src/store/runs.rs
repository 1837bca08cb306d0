//! Runs (one per init and update), accepted rotations, and the credential facts recorded with
//! the entries. Must not: write outside the transaction of the run that owns the rows.

use super::*;

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

/// One accepted change, for the update history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub path: Vec<u8>,
    pub status: String,
    pub changes: String,
    pub old_blake3: Option<[u8; 32]>,
    pub new_blake3: Option<[u8; 32]>,
}

impl Store {
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
}
