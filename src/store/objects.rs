//! The trusted content store: a copy of every baselined regular file that may need restoring,
//! named by the BLAKE3 of its content (`<store>/objects/ab/cdef…`), so identical files are
//! kept once and an object's name is its own checksum.
//!
//! Invariants:
//! - The store directory and everything in it belong to root: directories 0700, objects 0400.
//!   Opening a store writable by group or others is refused (exit 3): whoever can write it
//!   chooses what `restore` puts back.
//! - Objects are written atomically (temp in the same directory, `fsync`, `renameat`, `fsync`
//!   the directory) and hashed while they are copied in; a source that does not hash to what
//!   the baseline recorded is not stored.
//! - Every object is re-hashed before it is used ([`ObjectStore::copy_verified`] checks BLAKE3
//!   and SHA-256 against the baseline entry while streaming; the caller renames the copy into
//!   place only after that check passed). A corrupt or missing object is an integrity error,
//!   never a silent restore of wrong bytes.
//!
//! Every file and directory is opened relative to the store's directory fd with `O_NOFOLLOW`;
//! no path is re-resolved from `/`. Usable from any thread (`&self` only).

use crate::baseline::Hashes;
use crate::error::{Error, Result};
use crate::fsroot::Root;
use crate::sanitize::Name;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use sha2::Digest;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const OBJECTS: &str = "objects";
/// Copy buffer.
const BUF: usize = 256 * 1024;

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A unique temp name for this process (never a name an object could have).
pub(crate) fn tmp_name(prefix: &str) -> String {
    format!(
        ".{prefix}-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// An object's id: the BLAKE3 of its content.
pub fn object_id(blake3: &[u8; 32]) -> String {
    hex::encode(blake3)
}

/// What [`ObjectStore::put_file`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// A new object was written.
    Stored,
    /// An intact object with this content was already there.
    Present,
}

/// The result of checking every object.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub objects: u64,
    pub bytes: u64,
    /// One message per corrupt or unreadable object, or stray file.
    pub problems: Vec<String>,
}

/// An opened content store.
#[derive(Debug)]
pub struct ObjectStore {
    dir: OwnedFd,
    objects: OwnedFd,
    path: PathBuf,
}

fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Usage("a name contains a NUL byte".into()))
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(Into::into)
}

/// `mkdirat` 0700, tolerating an existing directory.
fn ensure_dir_at(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<OwnedFd> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    open_dir_at(dir, name)
}

impl ObjectStore {
    /// Open an existing store. A missing store, one that is not a directory (or is a symlink),
    /// or one writable by group or others is an integrity error.
    pub fn open(path: &Path) -> Result<ObjectStore> {
        let name = bytes(path);
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            if e == Errno::NOENT {
                Error::Integrity(format!(
                    "{}: trusted store not found (create it with `kmsentry baseline init --store`)",
                    Name(&name)
                ))
            } else {
                Error::io("open trusted store", name.clone(), e.into())
            }
        })?;
        Self::check_private(&dir, &name)?;
        let objects = match open_dir_at(dir.as_fd(), OBJECTS) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                ensure_dir_at(dir.as_fd(), OBJECTS)
                    .map_err(|e| Error::io("create objects directory", name.clone(), e))?
            }
            Err(e) => return Err(Error::io("open objects directory", name, e)),
        };
        Self::check_private(&objects, &name)?;
        Ok(ObjectStore {
            dir,
            objects,
            path: path.to_path_buf(),
        })
    }

    /// Open the store at `path`, creating it (and missing parents, 0700) when absent.
    pub fn create(path: &Path) -> Result<ObjectStore> {
        use std::os::unix::fs::DirBuilderExt;
        if std::fs::symlink_metadata(path).is_err() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| Error::io("create trusted store", bytes(path), e))?;
        }
        Self::open(path)
    }

    fn check_private(fd: &OwnedFd, name: &[u8]) -> Result<()> {
        let st = rustix::fs::fstat(fd).map_err(|e| Error::io("stat", name.to_vec(), e.into()))?;
        if st.st_mode & 0o022 != 0 {
            return Err(Error::Integrity(format!(
                "{}: trusted store is writable by group or others (mode {:o}); it must be root-only (0700)",
                Name(name),
                st.st_mode & 0o7777
            )));
        }
        if st.st_mode & 0o077 != 0 {
            tracing::warn!(
                "{}: trusted store is readable by group or others; it should be 0700",
                Name(name)
            );
        }
        Ok(())
    }

    /// Where the store is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's directory fd (the quarantine lives beneath it).
    pub fn dir_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    fn split(blake3: &[u8; 32]) -> (String, String) {
        let id = object_id(blake3);
        (id[..2].to_string(), id[2..].to_string())
    }

    fn open_object(&self, blake3: &[u8; 32]) -> std::io::Result<std::fs::File> {
        let (sub, rest) = Self::split(blake3);
        let d = open_dir_at(self.objects.as_fd(), &sub)?;
        let fd = rustix::fs::openat(
            &d,
            rest.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if st.st_mode & 0o170000 != 0o100000 {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(std::fs::File::from(fd))
    }

    /// Whether an object with this content id exists (not whether it is intact).
    pub fn contains(&self, blake3: &[u8; 32]) -> bool {
        self.open_object(blake3).is_ok()
    }

    fn missing_or_io(&self, blake3: &[u8; 32], e: std::io::Error) -> Error {
        if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) {
            Error::Integrity(format!(
                "{}: object {} is missing from the trusted store",
                Name(&bytes(&self.path)),
                object_id(blake3)
            ))
        } else {
            Error::Integrity(format!(
                "{}: object {} cannot be read: {e}",
                Name(&bytes(&self.path)),
                object_id(blake3)
            ))
        }
    }

    /// Stream the object with the content `want` into `dst`, hashing as it goes. Returns the
    /// byte count once BLAKE3 and SHA-256 both match `want`; otherwise an integrity error,
    /// and the caller must discard what was written.
    pub fn copy_verified(&self, want: &Hashes, dst: &mut dyn Write) -> Result<u64> {
        let mut f = self
            .open_object(&want.blake3)
            .map_err(|e| self.missing_or_io(&want.blake3, e))?;
        let mut buf = vec![0u8; BUF];
        let mut b3 = blake3::Hasher::new();
        let mut sha = want.sha256.map(|_| sha2::Sha256::new());
        let mut n = 0u64;
        loop {
            let k = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.missing_or_io(&want.blake3, e)),
            };
            b3.update(&buf[..k]);
            if let Some(sha) = &mut sha {
                sha.update(&buf[..k]);
            }
            dst.write_all(&buf[..k])
                .map_err(|e| Error::io("write restored copy", bytes(&self.path), e))?;
            n += k as u64;
        }
        let got_sha: Option<[u8; 32]> = sha.map(|s| s.finalize().into());
        if *b3.finalize().as_bytes() != want.blake3 || got_sha != want.sha256 {
            return Err(Error::Integrity(format!(
                "{}: object {} is corrupt: its content no longer matches its hash",
                Name(&bytes(&self.path)),
                object_id(&want.blake3)
            )));
        }
        Ok(n)
    }

    /// Re-hash one object against `want` without using it.
    pub fn verify(&self, want: &Hashes) -> Result<u64> {
        self.copy_verified(want, &mut std::io::sink())
    }

    /// BLAKE3 of an object's current content (for `store verify`, which knows only names).
    fn rehash(&self, blake3: &[u8; 32]) -> std::io::Result<([u8; 32], u64)> {
        let mut f = self.open_object(blake3)?;
        let mut h = blake3::Hasher::new();
        let n = std::io::copy(&mut f, &mut h)?;
        Ok((*h.finalize().as_bytes(), n))
    }

    /// Store the content read from `src` (at its current offset) as the object `want`. The
    /// content is hashed while it is copied; if it does not hash to `want` (the file changed
    /// since it was baselined) nothing is stored and an error says so. An object already
    /// present is re-hashed and kept when intact, replaced when not.
    pub fn put_file(&self, src: &mut dyn Read, want: &Hashes, what: &[u8]) -> Result<Put> {
        if let Ok((h, _)) = self.rehash(&want.blake3) {
            if h == want.blake3 {
                return Ok(Put::Present);
            }
        }
        let (sub, rest) = Self::split(&want.blake3);
        let store_name = bytes(&self.path);
        let sub_fd = ensure_dir_at(self.objects.as_fd(), &sub)
            .map_err(|e| Error::io("create object directory", store_name.clone(), e))?;
        let tmp = tmp_name("obj");
        let fd = rustix::fs::openat(
            &sub_fd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o400),
        )
        .map_err(|e| Error::io("create object", store_name.clone(), e.into()))?;
        let mut out = std::fs::File::from(fd);
        let result = (|| -> Result<Put> {
            let mut buf = vec![0u8; BUF];
            let mut b3 = blake3::Hasher::new();
            let mut sha = want.sha256.map(|_| sha2::Sha256::new());
            loop {
                let k = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io("read", what.to_vec(), e)),
                };
                b3.update(&buf[..k]);
                if let Some(sha) = &mut sha {
                    sha.update(&buf[..k]);
                }
                out.write_all(&buf[..k])
                    .map_err(|e| Error::io("write object", store_name.clone(), e))?;
            }
            let got_sha: Option<[u8; 32]> = sha.map(|s| s.finalize().into());
            if *b3.finalize().as_bytes() != want.blake3 || got_sha != want.sha256 {
                return Err(Error::Integrity(format!(
                    "{}: changed since it was hashed; not copied to the trusted store",
                    Name(what)
                )));
            }
            out.sync_all()
                .map_err(|e| Error::io("sync object", store_name.clone(), e))?;
            rustix::fs::renameat(&sub_fd, tmp.as_str(), &sub_fd, rest.as_str())
                .map_err(|e| Error::io("install object", store_name.clone(), e.into()))?;
            rustix::fs::fsync(&sub_fd)
                .map_err(|e| Error::io("sync object directory", store_name.clone(), e.into()))?;
            Ok(Put::Stored)
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&sub_fd, tmp.as_str(), AtFlags::empty());
        }
        result
    }

    /// Copy the regular file at host-absolute `path` under `root` into the store, checking
    /// that it still hashes to `want`. The file is opened `O_NOFOLLOW` relative to its parent.
    pub fn put_from_root(&self, root: &Root, path: &[u8], want: &Hashes) -> Result<Put> {
        let (dir, name) = root
            .open_parent(path)
            .map_err(|e| Error::io("open parent directory", path.to_vec(), e))?;
        let fd = rustix::fs::openat(
            &dir,
            name.as_c_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", path.to_vec(), e.into()))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("stat", path.to_vec(), e.into()))?;
        if st.st_mode & 0o170000 != 0o100000 {
            return Err(Error::Integrity(format!(
                "{}: no longer a regular file; not copied to the trusted store",
                Name(path)
            )));
        }
        self.put_file(&mut std::fs::File::from(fd), want, path)
    }

    /// Every object id in the store, sorted; stray files are reported in `strays`.
    pub fn list(&self, strays: &mut Vec<String>) -> Result<Vec<[u8; 32]>> {
        let name = bytes(&self.path);
        let mut out = Vec::new();
        let top = rustix::fs::Dir::read_from(&self.objects)
            .map_err(|e| Error::io("read objects directory", name.clone(), e.into()))?;
        for ent in top {
            let ent =
                ent.map_err(|e| Error::io("read objects directory", name.clone(), e.into()))?;
            let sub = ent.file_name().to_bytes();
            if sub == b"." || sub == b".." {
                continue;
            }
            let Some(sub) = std::str::from_utf8(sub)
                .ok()
                .filter(|s| s.len() == 2 && hex::decode(s).is_ok())
            else {
                strays.push(format!("objects/{}", Name(sub)));
                continue;
            };
            let d = open_dir_at(self.objects.as_fd(), sub)
                .map_err(|e| Error::io("open object directory", name.clone(), e))?;
            let inner = rustix::fs::Dir::read_from(&d)
                .map_err(|e| Error::io("read object directory", name.clone(), e.into()))?;
            for ent in inner {
                let ent =
                    ent.map_err(|e| Error::io("read object directory", name.clone(), e.into()))?;
                let f = ent.file_name().to_bytes();
                if f == b"." || f == b".." {
                    continue;
                }
                let full = [sub.as_bytes(), f].concat();
                match hex::decode(&full)
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                {
                    Some(id) => out.push(id),
                    None => strays.push(format!("objects/{sub}/{}", Name(f))),
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Re-hash every object against its name.
    pub fn verify_all(&self) -> Result<VerifyReport> {
        let mut r = VerifyReport::default();
        let ids = self.list(&mut r.problems)?;
        for id in ids {
            r.objects += 1;
            match self.rehash(&id) {
                Ok((h, n)) if h == id => r.bytes += n,
                Ok(_) => r.problems.push(format!(
                    "object {} is corrupt: its content no longer matches its name",
                    object_id(&id)
                )),
                Err(e) => r
                    .problems
                    .push(format!("object {} cannot be read: {e}", object_id(&id))),
            }
        }
        Ok(r)
    }

    /// Delete one object (for `store gc`).
    pub fn remove(&self, blake3: &[u8; 32]) -> Result<()> {
        let (sub, rest) = Self::split(blake3);
        let name = bytes(&self.path);
        let d = open_dir_at(self.objects.as_fd(), &sub)
            .map_err(|e| Error::io("open object directory", name.clone(), e))?;
        rustix::fs::unlinkat(&d, rest.as_str(), AtFlags::empty())
            .map_err(|e| Error::io("remove object", name.clone(), e.into()))?;
        // Drop the fan-out directory once empty; ENOTEMPTY just means it still holds others.
        let _ = rustix::fs::unlinkat(&self.objects, cstr(&sub)?.as_c_str(), AtFlags::REMOVEDIR);
        Ok(())
    }

    /// Remove temp files a crashed writer left behind (names starting with `.`).
    pub fn remove_temps(&self) -> Result<u64> {
        let name = bytes(&self.path);
        let mut n = 0;
        let top = rustix::fs::Dir::read_from(&self.objects)
            .map_err(|e| Error::io("read objects directory", name.clone(), e.into()))?;
        for ent in top.flatten() {
            let sub = ent.file_name().to_bytes();
            if sub.len() != 2 {
                continue;
            }
            let Ok(sub) = std::str::from_utf8(sub) else {
                continue;
            };
            let Ok(d) = open_dir_at(self.objects.as_fd(), sub) else {
                continue;
            };
            let Ok(inner) = rustix::fs::Dir::read_from(&d) else {
                continue;
            };
            for ent in inner.flatten() {
                let f = ent.file_name();
                if f.to_bytes().starts_with(b".obj-")
                    && rustix::fs::unlinkat(&d, f, AtFlags::empty()).is_ok()
                {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn hashes(data: &[u8]) -> Hashes {
        Hashes {
            blake3: *blake3::hash(data).as_bytes(),
            sha256: Some(sha2::Sha256::digest(data).into()),
        }
    }

    fn object_path(s: &ObjectStore, data: &[u8]) -> PathBuf {
        let id = object_id(blake3::hash(data).as_bytes());
        s.path().join("objects").join(&id[..2]).join(&id[2..])
    }

    #[test]
    fn objects_are_deduplicated_private_and_verified_on_use() {
        let t = tempfile::tempdir().unwrap();
        let s = ObjectStore::create(&t.path().join("store")).unwrap();
        let h = hashes(b"key material");
        assert_eq!(
            s.put_file(&mut &b"key material"[..], &h, b"/k").unwrap(),
            Put::Stored
        );
        assert_eq!(
            s.put_file(&mut &b"key material"[..], &h, b"/k2").unwrap(),
            Put::Present
        );
        let p = object_path(&s, b"key material");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o400
        );
        assert_eq!(
            std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let mut out = Vec::new();
        assert_eq!(s.copy_verified(&h, &mut out).unwrap(), 12);
        assert_eq!(out, b"key material");
        let mut strays = Vec::new();
        assert_eq!(s.list(&mut strays).unwrap(), vec![h.blake3]);
        assert!(strays.is_empty());
    }

    #[test]
    fn a_source_that_changed_since_hashing_is_not_stored() {
        let t = tempfile::tempdir().unwrap();
        let s = ObjectStore::create(&t.path().join("store")).unwrap();
        let e = s
            .put_file(&mut &b"evil"[..], &hashes(b"good"), b"/etc/k")
            .unwrap_err();
        assert!(e.to_string().contains("/etc/k: changed since"), "{e}");
        assert!(!s.contains(&hashes(b"good").blake3));
        assert_eq!(s.remove_temps().unwrap(), 0, "the temp was removed");
    }

    #[test]
    fn corrupt_and_missing_objects_are_integrity_errors() {
        let t = tempfile::tempdir().unwrap();
        let s = ObjectStore::create(&t.path().join("store")).unwrap();
        let h = hashes(b"abc");
        s.put_file(&mut &b"abc"[..], &h, b"/a").unwrap();
        let p = object_path(&s, b"abc");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, b"abd").unwrap();
        let e = s.copy_verified(&h, &mut Vec::new()).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::ExitCode::Integrity);
        assert!(e.to_string().contains("is corrupt"), "{e}");
        let r = s.verify_all().unwrap();
        assert_eq!((r.objects, r.problems.len()), (1, 1));
        // A later put of the true content repairs it.
        assert_eq!(
            s.put_file(&mut &b"abc"[..], &h, b"/a").unwrap(),
            Put::Stored
        );
        s.verify(&h).unwrap();
        s.remove(&h.blake3).unwrap();
        let e = s.verify(&h).unwrap_err();
        assert!(e.to_string().contains("is missing"), "{e}");
        assert_eq!(e.exit_code(), crate::exit::ExitCode::Integrity);
    }

    #[test]
    fn a_world_writable_store_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("store");
        ObjectStore::create(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ObjectStore::open(&p).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        let e = ObjectStore::open(&t.path().join("nope")).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::ExitCode::Integrity);
    }
}
