//! Applying a plan: build each entry under a temp name in its verified parent, swap it in,
//! quarantine what it displaced, and inspect the result; [`restore_entry`], the daemon's
//! one-call restore. The plan walk is in `walk`, lookups in `reach`, attributes in `setattr`.
//! See the module docs of [`crate::restore`] for the order of operations and why.

use super::plan::Method;
use super::reach::{dev_ino, inspect, open_dir_nofollow, walk_dir};
use super::setattr::{set_attrs_child, set_attrs_fd};
use super::walk::{plan_one, restorable, Scope};
use super::{PlanItem, Quarantine, RestoreError, Restored};
use crate::baseline::diff::diff;
use crate::baseline::{Entry, FileType};
use crate::fsroot::{split_parent, Root};
use crate::policy::CompareSet;
use crate::sanitize::Name;
use crate::store::objects::{tmp_name, ObjectStore};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// A callback given the path being restored.
pub type PathHook = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Test hooks: called at fixed points of [`apply_item`] so tests can race it
/// deterministically (swap a parent for a symlink after it was opened). Not for production.
#[derive(Default)]
pub struct Hooks {
    /// After the parent directory was opened and the new entry built, before it is swapped in.
    #[doc(hidden)]
    pub before_swap: Option<PathHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooks")
    }
}

/// Restore one baselined entry now, comparing `compare` (the group's set): the daemon's entry
/// point. Plans, applies and checks in one call; `Ok` with `method: None` when nothing
/// differs.
pub fn restore_entry(
    root: &Root,
    store: &ObjectStore,
    base: &Entry,
    compare: CompareSet,
    quarantine: &Quarantine,
) -> Result<Restored, RestoreError> {
    let item = plan_one(
        root,
        Some(store),
        base,
        Scope {
            compare: restorable(compare),
            group: base.group.clone(),
            class: base.class,
            expects_object: true,
        },
        &HashSet::new(),
    );
    match item {
        None => Ok(Restored {
            path: base.path.clone(),
            method: None,
            changes: Vec::new(),
            before: base.hashes,
            after: base.hashes,
            quarantined: None,
        }),
        Some(item) => {
            let r = apply_item(root, Some(store), &item, quarantine, &Hooks::default());
            quarantine
                .sync()
                .map_err(|e| RestoreError::io("sync quarantine", e))?;
            r
        }
    }
}

fn now() -> String {
    format!("{:.6}", jiff::Timestamp::now())
}

/// Apply one planned item. Re-checks the parent against the plan, builds the new entry under a
/// temp name, swaps it in, quarantines what it displaced, and inspects the result.
pub fn apply_item(
    root: &Root,
    store: Option<&ObjectStore>,
    item: &PlanItem,
    quarantine: &Quarantine,
    hooks: &Hooks,
) -> Result<Restored, RestoreError> {
    let planned = item.planned.clone()?;
    let base = &item.base;
    let (pdir, name) = split_parent(&base.path);
    let cname = CString::new(name).map_err(|_| RestoreError::Refused("a NUL byte".into()))?;
    let dir = open_dir_nofollow(root, pdir)?;
    let dir_id = dev_ino(dir.as_fd())?;
    if item.parent.is_some_and(|p| p != dir_id) {
        return Err(RestoreError::Refused(format!(
            "{} is not the directory the plan saw (replaced since); plan again",
            Name(pdir)
        )));
    }
    let unswapped = || -> Result<(), RestoreError> {
        match walk_dir(root, pdir).map(|d| dev_ino(d.as_fd())) {
            Ok(Ok(id)) if id == dir_id => Ok(()),
            Ok(Ok(_)) => Err(RestoreError::Refused(format!(
                "{} was replaced by another directory during the restore",
                Name(pdir)
            ))),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(RestoreError::Refused(format!(
                "{} was swapped during the restore: {}",
                Name(pdir),
                RestoreError::from(e)
            ))),
        }
    };
    let live = inspect(dir.as_fd(), &cname, &base.path, &item.group, item.class)
        .map_err(|e| RestoreError::io("inspect", e))?;
    let before = live.as_ref().and_then(|l| l.hashes);
    let stamp = now();
    let quarantined;
    match planned.method {
        Method::InPlace => {
            let l = live.ok_or_else(|| {
                RestoreError::Refused("the entry vanished since the plan; plan again".into())
            })?;
            if l.ftype != base.ftype || (base.ftype == FileType::File && l.hashes != base.hashes) {
                return Err(RestoreError::Refused(
                    "the entry's type or content changed since the plan; plan again".into(),
                ));
            }
            if let Some(h) = &hooks.before_swap {
                h(&base.path);
            }
            unswapped()?;
            quarantined = Some(
                quarantine
                    .record(&l, &stamp)
                    .map_err(|e| RestoreError::io("write quarantine record", e))?,
            );
            fix_in_place(dir.as_fd(), &cname, base, &l)?;
        }
        Method::Recreate | Method::Replace => {
            if live.as_ref().is_some_and(|l| l.ftype == FileType::Dir)
                && !quarantine.same_fs(dir.as_fd())
            {
                return Err(RestoreError::Unsupported(
                    "the directory in the way cannot be moved into quarantine on another file system"
                        .into(),
                ));
            }
            let tmp = CString::new(tmp_name("kmsentry-restore"))
                .map_err(|_| RestoreError::Refused("temp name".into()))?;
            let remove_tmp = |flags| {
                let _ = rustix::fs::unlinkat(&dir, tmp.as_c_str(), flags);
            };
            let rmflags = if base.ftype == FileType::Dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            if let Err(e) = build(dir.as_fd(), &tmp, base, store) {
                remove_tmp(rmflags);
                return Err(e);
            }
            if let Some(h) = &hooks.before_swap {
                h(&base.path);
            }
            if let Err(e) = unswapped() {
                remove_tmp(rmflags);
                return Err(e);
            }
            let exchanged = match swap_in(dir.as_fd(), &tmp, &cname, live.is_some()) {
                Ok(x) => x,
                Err(e) => {
                    remove_tmp(rmflags);
                    return Err(e);
                }
            };
            quarantined = if exchanged {
                // What was there now sits under the temp name: record what it really is (it
                // may differ from what the plan saw) and move it aside.
                let displaced = inspect(dir.as_fd(), &tmp, &base.path, &item.group, item.class)
                    .map_err(|e| RestoreError::io("inspect displaced entry", e))?;
                match displaced {
                    Some(d) => Some(quarantine.keep(dir.as_fd(), &tmp, &d, &stamp).map_err(
                        |e| RestoreError::Io {
                            op: "quarantine",
                            msg: format!(
                                "restored, but the tampered version stays beside it as {}: {e}",
                                Name(tmp.to_bytes())
                            ),
                        },
                    )?),
                    None => None,
                }
            } else {
                None
            };
            rustix::fs::fsync(&dir).map_err(|e| RestoreError::io("sync directory", e))?;
        }
    }
    unswapped()?;
    let after = inspect(dir.as_fd(), &cname, &base.path, &item.group, item.class)
        .map_err(|e| RestoreError::io("inspect restored entry", e))?
        .ok_or_else(|| RestoreError::Refused("the restored entry vanished".into()))?;
    let left: Vec<&'static str> = diff(base, &after, item.compare)
        .iter()
        .map(|a| a.as_str())
        .collect();
    if !left.is_empty() {
        return Err(RestoreError::Incomplete(left));
    }
    Ok(Restored {
        path: base.path.clone(),
        method: Some(planned.method),
        changes: item.changes.clone(),
        before,
        after: after.hashes,
        quarantined,
    })
}

/// Rename `tmp` onto `name` atomically. Returns whether something was displaced (it is then
/// at `tmp`).
fn swap_in(
    dir: BorrowedFd<'_>,
    tmp: &CStr,
    name: &CStr,
    expect_existing: bool,
) -> Result<bool, RestoreError> {
    use rustix::fs::RenameFlags;
    let exchange = || rustix::fs::renameat_with(dir, tmp, dir, name, RenameFlags::EXCHANGE);
    let noreplace = || rustix::fs::renameat_with(dir, tmp, dir, name, RenameFlags::NOREPLACE);
    let r = if expect_existing {
        match exchange() {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => noreplace().map(|()| false),
            Err(e) => Err(e),
        }
    } else {
        match noreplace() {
            Ok(()) => Ok(false),
            Err(Errno::EXIST) => exchange().map(|()| true),
            Err(e) => Err(e),
        }
    };
    r.map_err(|e| RestoreError::io("rename into place", e))
}

pub(super) fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    p
}

/// Build `base` as `dir/tmp` with every attribute, content streamed from the store.
fn build(
    dir: BorrowedFd<'_>,
    tmp: &CStr,
    base: &Entry,
    store: Option<&ObjectStore>,
) -> Result<(), RestoreError> {
    let io = RestoreError::io;
    match base.ftype {
        FileType::File => {
            let (Some(store), Some(h)) = (store, base.hashes) else {
                return Err(RestoreError::Unsupported("no trusted copy".into()));
            };
            let fd = rustix::fs::openat(
                dir,
                tmp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| io("create temp file", e))?;
            let mut f = std::fs::File::from(fd);
            store.copy_verified(&h, &mut f).map_err(|e| match e {
                crate::error::Error::Integrity(m) => RestoreError::Integrity(m),
                other => RestoreError::Io {
                    op: "copy from store",
                    msg: other.to_string(),
                },
            })?;
            set_attrs_fd(f.as_fd(), base, true, true, true)?;
            set_mtime(f.as_fd(), base);
            f.sync_all().map_err(|e| RestoreError::io("sync", e))?;
        }
        FileType::Dir => {
            rustix::fs::mkdirat(dir, tmp, Mode::from_raw_mode(0o700))
                .map_err(|e| io("create directory", e))?;
            let fd = rustix::fs::openat(
                dir,
                tmp,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io("open directory", e))?;
            set_attrs_fd(fd.as_fd(), base, true, true, true)?;
            set_mtime(fd.as_fd(), base);
            rustix::fs::fsync(&fd).map_err(|e| io("sync", e))?;
        }
        FileType::Symlink => {
            let target = base
                .link_target
                .as_deref()
                .ok_or_else(|| RestoreError::Unsupported("no link target".into()))?;
            let target = CString::new(target)
                .map_err(|_| RestoreError::Refused("a NUL byte in a link target".into()))?;
            rustix::fs::symlinkat(target.as_c_str(), dir, tmp)
                .map_err(|e| io("create symlink", e))?;
            set_attrs_child(dir, tmp, base, true, true)?;
        }
        FileType::Fifo | FileType::CharDevice | FileType::BlockDevice => {
            let (kind, dev) = match base.ftype {
                FileType::Fifo => (rustix::fs::FileType::Fifo, 0),
                FileType::CharDevice => (
                    rustix::fs::FileType::CharacterDevice,
                    base.rdev.map_or(0, |(a, b)| rustix::fs::makedev(a, b)),
                ),
                _ => (
                    rustix::fs::FileType::BlockDevice,
                    base.rdev.map_or(0, |(a, b)| rustix::fs::makedev(a, b)),
                ),
            };
            rustix::fs::mknodat(dir, tmp, kind, Mode::from_raw_mode(0o600), dev)
                .map_err(|e| io("create node", e))?;
            set_attrs_child(dir, tmp, base, true, true)?;
            rustix::fs::chmodat(dir, tmp, Mode::from_raw_mode(base.mode), AtFlags::empty())
                .map_err(|e| io("set mode", e))?;
        }
        FileType::Socket | FileType::Unknown => {
            return Err(RestoreError::Unsupported(format!(
                "a {} cannot be recreated",
                base.ftype.as_str()
            )))
        }
    }
    Ok(())
}

fn set_mtime(fd: BorrowedFd<'_>, base: &Entry) {
    let t = rustix::fs::Timespec {
        tv_sec: base.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: base.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    // Best effort: mtime is not compared by default, and a failure changes nothing else.
    let _ = rustix::fs::futimens(
        fd,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
    );
}

/// Fix attributes of the existing entry `dir/name` (whose live record is `live`).
fn fix_in_place(
    dir: BorrowedFd<'_>,
    name: &CStr,
    base: &Entry,
    live: &Entry,
) -> Result<(), RestoreError> {
    let chown = live.uid != base.uid || live.gid != base.gid;
    let acl = live.acl_access != base.acl_access || live.acl_default != base.acl_default;
    // A chown clears setuid bits and file capabilities: put them back after it.
    let xattrs = chown || live.xattrs != base.xattrs;
    match base.ftype {
        FileType::File | FileType::Dir => {
            let flags = if base.ftype == FileType::Dir {
                OFlags::RDONLY | OFlags::DIRECTORY
            } else {
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY
            };
            let fd = rustix::fs::openat(
                dir,
                name,
                flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| RestoreError::io("open", e))?;
            let st = rustix::fs::fstat(&fd).map_err(|e| RestoreError::io("stat", e))?;
            if st.st_ino != live.ino || st.st_dev != live.dev {
                return Err(RestoreError::Refused(
                    "the entry was replaced while it was being restored".into(),
                ));
            }
            set_attrs_fd(fd.as_fd(), base, chown, acl, xattrs)
        }
        FileType::Symlink => set_attrs_child(dir, name, base, chown, xattrs),
        _ => Err(RestoreError::Unsupported(
            "special files are recreated, not fixed in place".into(),
        )),
    }
}
