//! Reaching live entries without following symlinks: the parent walk from the root, one
//! `openat(O_NOFOLLOW | O_DIRECTORY)` per component, and [`inspect`], the live record of one
//! entry. Owns: every lookup a restore makes before it writes. Must not: follow a symlink
//! anywhere in a path, or open an entry that is not a regular file.

use super::RestoreError;
use crate::baseline::attrs::{self, Target};
use crate::baseline::hash::{self, Hashed};
use crate::baseline::{Entry, FileType, Problem};
use crate::fsroot::Root;
use crate::policy::Class;
use crate::sanitize::Name;
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// A directory could not be reached without following a symlink, or does not exist.
pub(super) enum DirError {
    Missing(Vec<u8>),
    Other(RestoreError),
}

impl From<DirError> for RestoreError {
    fn from(e: DirError) -> RestoreError {
        match e {
            DirError::Missing(p) => RestoreError::Unsupported(format!(
                "the directory {} does not exist and is not in the baseline",
                Name(&p)
            )),
            DirError::Other(e) => e,
        }
    }
}

pub(super) fn walk_dir(root: &Root, dir: &[u8]) -> Result<OwnedFd, DirError> {
    let mut cur = rustix::fs::openat(
        root.fd(),
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| DirError::Other(RestoreError::io("open root directory", e)))?;
    let mut walked = Vec::with_capacity(dir.len());
    for comp in dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        walked.push(b'/');
        walked.extend_from_slice(comp);
        if comp == b"." || comp == b".." {
            return Err(DirError::Other(RestoreError::Refused(format!(
                "{}: `.` and `..` are not allowed in a restored path",
                Name(&walked)
            ))));
        }
        let c = CString::new(comp)
            .map_err(|_| DirError::Other(RestoreError::Refused("a NUL byte in a path".into())))?;
        match rustix::fs::openat(
            &cur,
            c.as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => cur = fd,
            Err(Errno::NOENT) => return Err(DirError::Missing(walked)),
            Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                let is_link = rustix::fs::statx(
                    &cur,
                    c.as_c_str(),
                    AtFlags::SYMLINK_NOFOLLOW,
                    StatxFlags::TYPE,
                )
                .is_ok_and(|st| u32::from(st.stx_mode) & 0o170000 == 0o120000);
                return Err(DirError::Other(RestoreError::Refused(if is_link {
                    format!(
                        "{} is a symlink; restore never follows a symlink in a path",
                        Name(&walked)
                    )
                } else {
                    format!(
                        "{} is not a directory ({})",
                        Name(&walked),
                        std::io::Error::from(e)
                    )
                })));
            }
            Err(e) => {
                return Err(DirError::Other(RestoreError::Io {
                    op: "open directory",
                    msg: format!("{}: {}", Name(&walked), std::io::Error::from(e)),
                }))
            }
        }
    }
    Ok(cur)
}

/// Open the host-absolute directory `dir` under `root` one component at a time with
/// `O_NOFOLLOW | O_DIRECTORY`, refusing a symlink anywhere (even one that stays in the root).
pub fn open_dir_nofollow(root: &Root, dir: &[u8]) -> Result<OwnedFd, RestoreError> {
    walk_dir(root, dir).map_err(Into::into)
}

pub(super) fn dev_ino(fd: BorrowedFd<'_>) -> Result<(u64, u64), RestoreError> {
    let st = rustix::fs::fstat(fd).map_err(|e| RestoreError::io("stat directory", e))?;
    Ok((st.st_dev, st.st_ino))
}

/// The live record of `dir/name` (never followed), or None when absent. Regular files are
/// opened `O_NOFOLLOW` and hashed; a file swapped between `statx` and `open` reads as absent.
pub fn inspect(
    dir: BorrowedFd<'_>,
    name: &CStr,
    path: &[u8],
    group: &str,
    class: Class,
) -> std::io::Result<Option<Entry>> {
    let st = match rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
        StatxFlags::BASIC_STATS,
    ) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let ftype = FileType::from_mode(u32::from(st.stx_mode));
    let mut e = crate::baseline::walk::entry_from_statx(path, &st, group, class);
    let mut buf = Vec::new();
    match ftype {
        FileType::File | FileType::Dir => {
            let flags = if ftype == FileType::Dir {
                OFlags::RDONLY | OFlags::DIRECTORY
            } else {
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY
            };
            let fd = match rustix::fs::openat(
                dir,
                name,
                flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => return Ok(None),
                Err(err) => {
                    e.problem = Some(Problem::Unreadable(format!(
                        "open: {}",
                        std::io::Error::from(err)
                    )));
                    return Ok(Some(e));
                }
            };
            let f = rustix::fs::fstat(&fd)?;
            if f.st_ino != e.ino || f.st_dev != e.dev {
                return Ok(None); // swapped since statx
            }
            let c = attrs::capture(&Target::Fd(fd.as_fd()), &mut buf)?;
            (e.xattrs, e.acl_access, e.acl_default) = (c.xattrs, c.acl_access, c.acl_default);
            if ftype == FileType::File {
                let mut file = std::fs::File::from(fd);
                match hash::hash_file(
                    &mut file,
                    hash::Stamp::of(&f),
                    // Both: the digests go into the quarantine record as evidence.
                    hash::Want { sha256: true },
                    &mut Vec::new(),
                ) {
                    Ok(Hashed::Done(h, after)) => {
                        e.hashes = Some(h);
                        e.size = after.st_size as u64;
                        e.mode = after.st_mode & 0o7777;
                        e.uid = after.st_uid;
                        e.gid = after.st_gid;
                    }
                    Ok(Hashed::Unstable) => e.problem = Some(Problem::Unstable),
                    Err(err) => e.problem = Some(Problem::Unreadable(format!("read: {err}"))),
                }
            }
        }
        _ => {
            if ftype == FileType::Symlink {
                e.link_target = Some(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes());
            }
            match attrs::capture(&Target::Child(dir, name), &mut buf) {
                Ok(c) => {
                    (e.xattrs, e.acl_access, e.acl_default) =
                        (c.xattrs, c.acl_access, c.acl_default)
                }
                Err(err) if err.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                    return Ok(None)
                }
                Err(err) => return Err(err),
            }
        }
    }
    Ok(Some(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_walk_refuses_symlinks_even_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc/real")).unwrap();
        std::os::unix::fs::symlink("real", t.path().join("etc/link")).unwrap();
        let root = Root::open(t.path()).unwrap();
        open_dir_nofollow(&root, b"/etc/real").unwrap();
        let e = open_dir_nofollow(&root, b"/etc/link").unwrap_err();
        assert!(e.to_string().contains("/etc/link is a symlink"), "{e}");
        let e = open_dir_nofollow(&root, b"/etc/../etc").unwrap_err();
        assert!(matches!(e, RestoreError::Refused(_)), "{e}");
        assert!(matches!(
            walk_dir(&root, b"/etc/none/x"),
            Err(DirError::Missing(p)) if p == b"/etc/none"
        ));
    }
}
