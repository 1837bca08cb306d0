//! Where displaced entries go instead of being deleted: `<store>/quarantine/<timestamp>/`,
//! one item per restored path, named by the path with every byte outside `[A-Za-z0-9._-]`
//! percent-escaped (`%2Fetc%2Fkms%2Fclient.key`), beside a `.json` record of the tampered
//! entry's attributes and hashes and when it was taken. Directories 0700, records 0400: never
//! readable by anyone but root.
//!
//! The entry itself is moved with `renameat` from the directory fd restore holds; across file
//! systems (an image under `--root`, a store on another disk) a regular file is copied through
//! an `O_NOFOLLOW` fd and then unlinked, a symlink or device node lives on in the record alone,
//! and a directory is refused before anything was changed ([`Quarantine::same_fs`]).
//! Records are flushed together by [`Quarantine::sync`] at the end of a batch.

use crate::baseline::Entry;
use crate::sanitize::JsonName;
use crate::store::objects::ObjectStore;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;

/// Longest escaped name kept whole; longer ones are cut and suffixed with a hash.
const NAME_MAX: usize = 200;

/// One restore run's quarantine directory, created on first use. Shareable across threads.
#[derive(Debug)]
pub struct Quarantine {
    store_dir: OwnedFd,
    stamp: String,
    path: PathBuf,
    dir: Mutex<Option<OwnedFd>>,
    dev: u64,
}

/// What happened to the displaced entry's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    Moved,
    Copied,
    RecordOnly,
}

impl Kept {
    fn as_str(self) -> &'static str {
        match self {
            Kept::Moved => "moved",
            Kept::Copied => "copied",
            Kept::RecordOnly => "record_only",
        }
    }
}

/// `a/b c` → `a%2Fb%20c`, bounded in length.
pub fn escape_path(path: &[u8]) -> String {
    let mut s = String::with_capacity(path.len());
    for &b in path {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if s.len() > NAME_MAX {
        let h = blake3::hash(path).to_hex();
        s.truncate(NAME_MAX - 17);
        s.push('~');
        s.push_str(&h[..16]);
    }
    s
}

impl Quarantine {
    /// The quarantine of `store`, for a run stamped `stamp` (a timestamp; `:` is avoided so
    /// the name is portable).
    pub fn new(store: &ObjectStore, stamp: &str) -> std::io::Result<Quarantine> {
        let store_dir = rustix::fs::openat(
            store.dir_fd(),
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let dev = rustix::fs::fstat(&store_dir)?.st_dev;
        let stamp: String = stamp
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(Quarantine {
            path: store.path().join("quarantine").join(&stamp),
            store_dir,
            stamp,
            dir: Mutex::new(None),
            dev,
        })
    }

    /// Where this run's quarantine is (it may not exist yet).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether `dir` is on the quarantine's file system (a directory can only be moved).
    pub fn same_fs(&self, dir: BorrowedFd<'_>) -> bool {
        rustix::fs::fstat(dir).is_ok_and(|st| st.st_dev == self.dev)
    }

    fn with_dir<T>(
        &self,
        f: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let mut g = self.dir.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            let mk = |at: BorrowedFd<'_>, name: &str| -> std::io::Result<OwnedFd> {
                match rustix::fs::mkdirat(at, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                Ok(rustix::fs::openat(
                    at,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?)
            };
            let top = mk(self.store_dir.as_fd(), "quarantine")?;
            *g = Some(mk(top.as_fd(), &self.stamp)?);
        }
        match g.as_ref() {
            Some(d) => f(d.as_fd()),
            None => Err(std::io::Error::other("quarantine directory unavailable")),
        }
    }

    /// A name not yet used in the quarantine directory.
    fn free_name(dir: BorrowedFd<'_>, base: &str) -> std::io::Result<String> {
        for i in 0..1000 {
            let name = if i == 0 {
                base.to_string()
            } else {
                format!("{base}.{i}")
            };
            let json = format!("{name}.json");
            let taken = |n: &str| {
                rustix::fs::statx(
                    dir,
                    n,
                    AtFlags::SYMLINK_NOFOLLOW,
                    rustix::fs::StatxFlags::TYPE,
                )
                .is_ok()
            };
            if !taken(&name) && !taken(&json) {
                return Ok(name);
            }
        }
        Err(std::io::Error::other(
            "too many quarantined versions of one path",
        ))
    }

    /// Make everything quarantined so far durable: one `syncfs` of the store's file system
    /// instead of an `fsync` per record and per rename (a restore of 1,000 files would
    /// otherwise wait for 2,000 more flushes). Call it once a batch of restores is done.
    pub fn sync(&self) -> std::io::Result<()> {
        let g = self.dir.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(d) => rustix::fs::syncfs(d).map_err(Into::into),
            None => Ok(()),
        }
    }

    /// Move the displaced entry `from_dir/from_name` (recorded as `entry`) into quarantine
    /// with its record. Returns where it went.
    pub fn keep(
        &self,
        from_dir: BorrowedFd<'_>,
        from_name: &CStr,
        entry: &Entry,
        now: &str,
    ) -> std::io::Result<PathBuf> {
        self.with_dir(|q| {
            let name = Self::free_name(q, &escape_path(&entry.path))?;
            let cname = CString::new(name.clone()).map_err(std::io::Error::other)?;
            let kept = match rustix::fs::renameat_with(
                from_dir,
                from_name,
                q,
                cname.as_c_str(),
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Ok(()) => Kept::Moved,
                Err(Errno::XDEV) => {
                    let kept = copy_across(from_dir, from_name, q, &cname)?;
                    let flags = if entry.ftype == crate::baseline::FileType::Dir {
                        AtFlags::REMOVEDIR
                    } else {
                        AtFlags::empty()
                    };
                    rustix::fs::unlinkat(from_dir, from_name, flags)?;
                    kept
                }
                Err(e) => return Err(e.into()),
            };
            write_record(q, &name, entry, kept, now)?;
            Ok(self.path.join(&name))
        })
    }

    /// Record the attributes of an entry fixed in place (its content is the baseline's, so
    /// only the tampered metadata is kept).
    pub fn record(&self, entry: &Entry, now: &str) -> std::io::Result<PathBuf> {
        self.with_dir(|q| {
            let name = Self::free_name(q, &escape_path(&entry.path))?;
            write_record(q, &name, entry, Kept::RecordOnly, now)?;
            Ok(self.path.join(format!("{name}.json")))
        })
    }
}

/// Copy a regular file across file systems (0400); anything else keeps only its record.
fn copy_across(
    from_dir: BorrowedFd<'_>,
    from_name: &CStr,
    q: BorrowedFd<'_>,
    name: &CStr,
) -> std::io::Result<Kept> {
    // Classify before opening: opening a device node can have side effects (a tape rewinds).
    let kind = rustix::fs::statx(
        from_dir,
        from_name,
        AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::TYPE,
    )?
    .stx_mode
        & 0o170000;
    match u32::from(kind) {
        0o100000 => {}
        0o040000 => {
            return Err(std::io::Error::other(
                "a directory cannot be moved into quarantine across file systems",
            ))
        }
        _ => return Ok(Kept::RecordOnly),
    }
    let src = rustix::fs::openat(
        from_dir,
        from_name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if rustix::fs::fstat(&src)?.st_mode & 0o170000 != 0o100000 {
        return Ok(Kept::RecordOnly); // swapped since statx: keep the record only
    }
    let dst = rustix::fs::openat(
        q,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o400),
    )?;
    let mut dst = std::fs::File::from(dst);
    std::io::copy(&mut std::fs::File::from(src), &mut dst)?;
    Ok(Kept::Copied)
}

fn write_record(
    q: BorrowedFd<'_>,
    name: &str,
    e: &Entry,
    kept: Kept,
    now: &str,
) -> std::io::Result<()> {
    let xattrs: Vec<serde_json::Value> = e
        .xattrs
        .iter()
        .map(|x| {
            serde_json::json!({
                "name": JsonName(&x.name),
                "value_hex": hex::encode(&x.value),
                "display": crate::baseline::attrs::value_text(&x.name, &x.value),
            })
        })
        .collect();
    let rec = serde_json::json!({
        "path": JsonName(&e.path),
        "quarantined_at": now,
        "content": kept.as_str(),
        "type": e.ftype.as_str(),
        "mode": format!("{:04o}", e.mode),
        "uid": e.uid,
        "gid": e.gid,
        "size": e.size,
        "blake3": e.hashes.map(|h| hex::encode(h.blake3)),
        "sha256": e.hashes.and_then(|h| h.sha256).map(hex::encode),
        "link_target": e.link_target.as_deref().map(JsonName),
        "rdev": e.rdev.map(|(a, b)| format!("{a}:{b}")),
        "acl_access": e.acl_access,
        "acl_default": e.acl_default,
        "xattrs": xattrs,
        "dev": e.dev,
        "ino": e.ino,
        "nlink": e.nlink,
        "mtime_ns": e.mtime_ns,
        "ctime_ns": e.ctime_ns,
        "problem": e.problem.as_ref().map(ToString::to_string),
    });
    let mut data = serde_json::to_vec_pretty(&rec).map_err(std::io::Error::other)?;
    data.push(b'\n');
    let json = format!("{name}.json");
    let fd = rustix::fs::openat(
        q,
        json.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o400),
    )?;
    std::fs::File::from(fd).write_all(&data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn across_file_systems_a_file_is_copied_and_a_symlink_kept_as_its_record() {
        let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("skipped: no /dev/shm");
            return;
        };
        let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let dev = |p: &std::path::Path| {
            std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).unwrap())
        };
        if dev(shm.path()) == dev(disk.path()) {
            eprintln!("skipped: /dev/shm is on the same file system");
            return;
        }
        let store = ObjectStore::create(&shm.path().join("store")).unwrap();
        let q = Quarantine::new(&store, "t").unwrap();
        std::fs::write(disk.path().join("f"), b"tampered").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", disk.path().join("l")).unwrap();
        let dir = rustix::fs::open(
            disk.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let mut e = crate::store::tests::sample(b"/etc/kms/f");
        let got = q.keep(dir.as_fd(), c"f", &e, "now").unwrap();
        assert_eq!(std::fs::read(&got).unwrap(), b"tampered");
        assert!(!disk.path().join("f").exists());
        e.path = b"/etc/kms/l".to_vec();
        e.ftype = crate::baseline::FileType::Symlink;
        let got = q.keep(dir.as_fd(), c"l", &e, "now").unwrap();
        assert!(!got.exists(), "a symlink lives on in its record only");
        let mut rec = got.into_os_string();
        rec.push(".json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(rec).unwrap()).unwrap();
        assert_eq!(v["content"], "record_only");
        assert!(std::fs::symlink_metadata(disk.path().join("l")).is_err());
        q.sync().unwrap();
    }

    #[test]
    fn paths_escape_to_one_safe_bounded_name() {
        assert_eq!(escape_path(b"/etc/kms/a b.key"), "%2Fetc%2Fkms%2Fa%20b.key");
        assert_eq!(escape_path(b"/x\xff\n"), "%2Fx%FF%0A");
        let long = vec![b'a'; 500];
        let e = escape_path(&long);
        assert!(e.len() <= NAME_MAX, "{}", e.len());
        assert_ne!(e, escape_path(&[b'a'; 501]));
    }
}
