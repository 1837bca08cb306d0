//! Entries: writing them, and every read. A full read runs `integrity_check`, hashes each row
//! in the same pass and compares with the seal; a single-row lookup is refused until a full
//! read has checked it. Must not: hand out a row that was not checked.

use super::*;

/// Every column of `entries`, in table order: what is loaded, and what the signature digest
/// covers (a test checks it against the schema).
pub(super) const ENTRY_COLUMNS: &str =
    "path, type, mode, uid, gid, owner_name, group_name, size, blake3, sha256, \
     link_target, rdev_major, rdev_minor, acl_access, acl_default, dev, ino, nlink, mtime_ns, \
     ctime_ns, policy_group, class, problem, run_id";

pub(super) fn problem_text(p: &Problem) -> String {
    match p {
        Problem::Unstable => "unstable".into(),
        Problem::Unreadable(m) => format!("unreadable: {m}"),
    }
}

pub(super) fn parse_problem(s: &str) -> Problem {
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

pub(super) fn hash32(
    v: Option<Vec<u8>>,
    what: &str,
) -> std::result::Result<Option<[u8; 32]>, String> {
    match v {
        None => Ok(None),
        Some(b) => b
            .try_into()
            .map(Some)
            .map_err(|_| format!("corrupt row: {what} is not 32 bytes")),
    }
}

pub(super) fn row_to_entry(r: &rusqlite::Row<'_>) -> std::result::Result<Entry, String> {
    let g = |e: rusqlite::Error| format!("corrupt row: {e}");
    let path: Vec<u8> = r.get(0).map_err(g)?;
    let ty: String = r.get(1).map_err(g)?;
    let ftype = FileType::parse(&ty).ok_or_else(|| format!("corrupt row: unknown type `{ty}`"))?;
    let b3 = hash32(r.get(8).map_err(g)?, "blake3")?;
    let sha = hash32(r.get(9).map_err(g)?, "sha256")?;
    let hashes = match (b3, sha) {
        (Some(blake3), sha256) => Some(Hashes { blake3, sha256 }),
        (None, None) => None,
        (None, Some(_)) => return Err("corrupt row: a SHA-256 without its BLAKE3".into()),
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

impl Store {
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
                    e.hashes.and_then(|h| h.sha256).map(|s| s.to_vec()),
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

    /// The one full read: `integrity_check`, then every row streamed to `f` and hashed, then the
    /// digest compared with the seal, all in one read transaction (a concurrent `baseline
    /// update` cannot make the rows and the seal come from different states). Returns the
    /// signing digest.
    pub(super) fn read_all(&self, f: impl FnMut(Entry) -> Result<()>) -> Result<[u8; 32]> {
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

    pub(super) fn read_all_inner(&self, f: impl FnMut(Entry) -> Result<()>) -> Result<[u8; 32]> {
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

    pub(super) fn count_entries(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
            .map_err(|e| self.db_err("read entries", e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Stream entries; with `hashers`, also feed the rows of `entries` and `xattrs` to them in
    /// the digest's canonical encoding.
    pub(super) fn scan(
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
}
