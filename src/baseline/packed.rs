//! The baseline as `verify` holds it while the walk runs: every entry encoded into one byte
//! arena, sorted by path, and decoded back into an [`Entry`] only when a live entry (or the
//! final pass for removed entries) meets it.
//!
//! Why: a `Vec<Entry>` costs the 312-byte struct per entry plus a heap block per path and
//! per group name, ~400 bytes an entry; the arena holds the same facts in ~190 (group and
//! class interned), which is most of what keeps `verify` under its memory budget at 100k
//! entries (docs/performance.md). Decoding one entry costs a few allocations, paid once per
//! live entry.
//!
//! Must not: lose or default a field (a round-trip test covers every one), or accept entries
//! out of path order (lookups are binary searches).

use super::{Entry, FileType, Hashes, Problem, Xattr};
use crate::policy::Class;

/// Sorted, encoded baseline entries.
#[derive(Default)]
pub struct Packed {
    arena: Vec<u8>,
    /// Where each entry starts in `arena`, in path order.
    starts: Vec<usize>,
    /// Interned (group, class) pairs; entries store an index.
    groups: Vec<(String, Class)>,
}

/// Why an entry could not be packed.
#[derive(Debug)]
pub struct OutOfOrder;

impl Packed {
    /// Room for `n` entries of about `bytes_each` encoded bytes.
    pub fn with_capacity(n: usize, bytes_each: usize) -> Packed {
        Packed {
            arena: Vec::with_capacity(n.saturating_mul(bytes_each)),
            starts: Vec::with_capacity(n),
            groups: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Append `e`, whose path must sort after every path already packed.
    pub fn push(&mut self, e: &Entry) -> Result<(), OutOfOrder> {
        if let Some(last) = self.starts.len().checked_sub(1) {
            if self.path(last) >= e.path.as_slice() {
                return Err(OutOfOrder);
            }
        }
        let g = match self
            .groups
            .iter()
            .position(|(n, c)| *n == e.group && *c == e.class)
        {
            Some(i) => i,
            None => {
                self.groups.push((e.group.clone(), e.class));
                self.groups.len() - 1
            }
        };
        self.starts.push(self.arena.len());
        let a = &mut self.arena;
        bytes(a, &e.path);
        a.push(ftype_code(e.ftype));
        // Integers as LEB128 varints (timestamps zigzag-encoded): most are small, and the
        // fixed-width form was a fifth of the arena.
        for v in [e.mode, e.uid, e.gid, g as u32] {
            varint(a, u64::from(v));
        }
        for v in [e.size, e.dev, e.ino, e.nlink] {
            varint(a, v);
        }
        for v in [e.mtime_ns, e.ctime_ns] {
            varint(a, ((v << 1) ^ (v >> 63)) as u64);
        }
        match &e.hashes {
            Some(h) => {
                a.push(if h.sha256.is_some() { 1 } else { 2 });
                a.extend_from_slice(&h.blake3);
                if let Some(sha) = &h.sha256 {
                    a.extend_from_slice(sha);
                }
            }
            None => a.push(0),
        }
        opt_bytes(a, e.link_target.as_deref());
        match e.rdev {
            Some((ma, mi)) => {
                a.push(1);
                varint(a, u64::from(ma));
                varint(a, u64::from(mi));
            }
            None => a.push(0),
        }
        opt_bytes(a, e.acl_access.as_deref().map(str::as_bytes));
        opt_bytes(a, e.acl_default.as_deref().map(str::as_bytes));
        varint(a, e.xattrs.len() as u64);
        for x in &e.xattrs {
            bytes(a, &x.name);
            bytes(a, &x.value);
        }
        match &e.problem {
            None => a.push(0),
            Some(Problem::Unstable) => a.push(1),
            Some(Problem::Unreadable(m)) => {
                a.push(2);
                bytes(a, m.as_bytes());
            }
        }
        Ok(())
    }

    /// Give back the unused capacity once loading is done.
    pub fn shrink(&mut self) {
        self.arena.shrink_to_fit();
        self.starts.shrink_to_fit();
    }

    /// The path of entry `i`.
    fn path(&self, i: usize) -> &[u8] {
        let mut r = Reader(self.arena.get(self.starts[i]..).unwrap_or_default());
        r.bytes().unwrap_or_default()
    }

    /// The index of the entry at `path`.
    pub fn find(&self, path: &[u8]) -> Option<usize> {
        self.starts
            .binary_search_by(|&s| {
                let mut r = Reader(self.arena.get(s..).unwrap_or_default());
                r.bytes().unwrap_or_default().cmp(path)
            })
            .ok()
    }

    /// Entry `i`, decoded; `None` only if the arena is damaged (a bug, never input).
    pub fn get(&self, i: usize) -> Option<Entry> {
        let mut r = Reader(self.arena.get(*self.starts.get(i)?..)?);
        let path = r.bytes()?.to_vec();
        let ftype = ftype_from(r.u8()?)?;
        let (mode, uid, gid, g) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
        let (size, dev, ino, nlink) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let unzig = |v: u64| ((v >> 1) as i64) ^ -((v & 1) as i64);
        let (mtime_ns, ctime_ns) = (unzig(r.u64()?), unzig(r.u64()?));
        let hashes = match r.u8()? {
            0 => None,
            tag => Some(Hashes {
                blake3: r.take(32)?.try_into().ok()?,
                sha256: match tag {
                    1 => Some(r.take(32)?.try_into().ok()?),
                    _ => None,
                },
            }),
        };
        let link_target = r.opt_bytes()?.map(<[u8]>::to_vec);
        let rdev = match r.u8()? {
            0 => None,
            _ => Some((r.u32()?, r.u32()?)),
        };
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8(b.to_vec()).ok());
        let acl_access = text(r.opt_bytes()?).map_or(Some(None), |t| t.map(Some))?;
        let acl_default = text(r.opt_bytes()?).map_or(Some(None), |t| t.map(Some))?;
        let n = r.u32()? as usize;
        let mut xattrs = Vec::with_capacity(n);
        for _ in 0..n {
            xattrs.push(Xattr {
                name: r.bytes()?.to_vec(),
                value: r.bytes()?.to_vec(),
            });
        }
        let problem = match r.u8()? {
            0 => None,
            1 => Some(Problem::Unstable),
            _ => Some(Problem::Unreadable(
                String::from_utf8(r.bytes()?.to_vec()).ok()?,
            )),
        };
        let (group, class) = self.groups.get(g as usize)?.clone();
        Some(Entry {
            path,
            ftype,
            mode,
            uid,
            gid,
            size,
            hashes,
            link_target,
            rdev,
            acl_access,
            acl_default,
            xattrs,
            dev,
            ino,
            nlink,
            mtime_ns,
            ctime_ns,
            group,
            class,
            problem,
        })
    }
}

impl FromIterator<Entry> for Result<Packed, OutOfOrder> {
    fn from_iter<I: IntoIterator<Item = Entry>>(it: I) -> Self {
        let mut p = Packed::default();
        for e in it {
            p.push(&e)?;
        }
        p.shrink();
        Ok(p)
    }
}

const FTYPES: [FileType; 8] = [
    FileType::File,
    FileType::Dir,
    FileType::Symlink,
    FileType::Fifo,
    FileType::Socket,
    FileType::CharDevice,
    FileType::BlockDevice,
    FileType::Unknown,
];

fn ftype_code(t: FileType) -> u8 {
    FTYPES.iter().position(|x| *x == t).unwrap_or(7) as u8
}

fn ftype_from(c: u8) -> Option<FileType> {
    FTYPES.get(usize::from(c)).copied()
}

fn varint(a: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        a.push((v as u8) | 0x80);
        v >>= 7;
    }
    a.push(v as u8);
}

fn bytes(a: &mut Vec<u8>, b: &[u8]) {
    varint(a, b.len() as u64);
    a.extend_from_slice(b);
}

fn opt_bytes(a: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            a.push(1);
            bytes(a, b);
        }
        None => a.push(0),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (h, t) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.u64()?).ok()
    }
    /// A LEB128 varint.
    fn u64(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u64()?).ok()?;
        self.take(n)
    }
    fn opt_bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.u8()? {
            0 => Some(None),
            _ => self.bytes().map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::sample;

    #[test]
    fn every_field_round_trips_and_lookups_find_by_path() {
        let a = sample(b"/a");
        let mut b = sample(b"/b\xff");
        b.ftype = FileType::CharDevice;
        b.rdev = Some((1, 3));
        b.hashes = None;
        b.xattrs.clear();
        b.acl_access = None;
        b.acl_default = Some("user::rwx".into());
        b.problem = Some(Problem::Unreadable("EACCES".into()));
        b.link_target = Some(b"../x".to_vec());
        b.group = "other".into();
        b.class = Class::Generic;
        b.mtime_ns = -1;
        b.ctime_ns = i64::MIN;
        b.dev = u64::MAX;
        b.uid = u32::MAX;
        let mut c = sample(b"/c");
        c.problem = Some(Problem::Unstable);
        let p: Result<Packed, OutOfOrder> = [a.clone(), b.clone(), c.clone()].into_iter().collect();
        let p = p.unwrap();
        assert_eq!(p.len(), 3);
        for (i, e) in [a, b, c].iter().enumerate() {
            assert_eq!(p.get(i).as_ref(), Some(e));
            assert_eq!(p.find(&e.path), Some(i));
        }
        assert_eq!(p.find(b"/bb"), None);
        assert_eq!(p.get(3), None);
        let mut q = Packed::default();
        q.push(&sample(b"/b")).unwrap();
        assert!(q.push(&sample(b"/a")).is_err(), "out of order");
        assert!(q.push(&sample(b"/b")).is_err(), "duplicate");
    }
}
