//! Applying a plan: build each entry under a temp name in its verified parent, swap it in,
//! quarantine what it displaced, and inspect the result; [`restore_entry`], the daemon's
//! one-call restore. The plan walk is in `walk`, lookups in `reach`, attributes in `setattr`.
//! See the module docs of [`crate::restore`] for the order of operations and why.

use super::plan::Method;
use super::reach::{dev_ino, inspect, open_dir_nofollow, walk_dir};
use super::setattr::{set_attrs_child, set_attrs_fd};
use super::walk::{plan_one, rebuilt_above, restorable, Scope};
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
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

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

/// How many items [`apply_all`] builds before one flush: each holds its parent directory open
/// until it is swapped in, so this bounds the open descriptors.
const BATCH: usize = 256;

/// Where the durability points of an apply are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// `fsync` each built entry before its swap and its directory after (one item at a time:
    /// the daemon, and [`apply_item`]).
    PerEntry,
    /// The caller flushes each file system once after building a batch and once after
    /// swapping it ([`apply_all`]): two flushes per batch instead of two per entry. The order
    /// is the same (content durable before it is renamed into place), so every entry still
    /// lands whole.
    Batch,
}

/// An item built under its temp name (or checked, for an in-place fix), not yet swapped in.
struct Prepared {
    dir: OwnedFd,
    dir_id: (u64, u64),
    cname: CString,
    live: Option<Entry>,
    stamp: String,
    method: Method,
    /// The temp entry and how to remove it again (replace and recreate only).
    tmp: Option<(CString, AtFlags)>,
}

impl Prepared {
    fn remove_tmp(&self) {
        if let Some((tmp, flags)) = &self.tmp {
            let _ = rustix::fs::unlinkat(&self.dir, tmp.as_c_str(), *flags);
        }
    }
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
    let p = prepare(root, store, item, quarantine, Durability::PerEntry)?;
    finish(root, item, p, quarantine, hooks, Durability::PerEntry)
}

/// Apply every item of a plan, in order, with the same checks as [`apply_item`] but batched
/// durability: up to [`BATCH`] entries are built, each file system they touch is flushed once
/// (`syncfs`), they are swapped in, and each file system is flushed again. An item under a
/// directory that an earlier item of the batch rebuilds waits for the next batch (it must
/// reach the new directory). One result per item, in order.
pub fn apply_all(
    root: &Root,
    store: Option<&ObjectStore>,
    items: &[PlanItem],
    quarantine: &Quarantine,
    hooks: &Hooks,
) -> Vec<Result<Restored, RestoreError>> {
    let mut out: Vec<Option<Result<Restored, RestoreError>>> = items.iter().map(|_| None).collect();
    let mut batch: Vec<(usize, Prepared)> = Vec::new();
    // Directories this batch rebuilds (the plan walk's own test of "rebuilt above").
    let mut rebuilt: HashSet<Vec<u8>> = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let under_rebuilt = rebuilt_above(&rebuilt, split_parent(&item.base.path).0);
        if batch.len() >= BATCH || under_rebuilt {
            flush_batch(root, items, &mut batch, &mut out, quarantine, hooks);
            rebuilt.clear();
        }
        match prepare(root, store, item, quarantine, Durability::Batch) {
            Ok(p) => {
                if item.base.ftype == FileType::Dir && p.tmp.is_some() {
                    rebuilt.insert(item.base.path.clone());
                }
                batch.push((i, p));
            }
            Err(e) => out[i] = Some(Err(e)),
        }
    }
    flush_batch(root, items, &mut batch, &mut out, quarantine, hooks);
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(RestoreError::Refused("not applied".into()))))
        .collect()
}

/// Flush what `batch` built, swap each in, flush again.
fn flush_batch(
    root: &Root,
    items: &[PlanItem],
    batch: &mut Vec<(usize, Prepared)>,
    out: &mut [Option<Result<Restored, RestoreError>>],
    quarantine: &Quarantine,
    hooks: &Hooks,
) {
    if batch.is_empty() {
        return;
    }
    // One descriptor per file system the batch touches, kept for the flush after the swaps.
    let mut seen = HashSet::new();
    let mut file_systems = Vec::new();
    for (_, p) in batch.iter() {
        if seen.insert(p.dir_id.0) {
            match rustix::io::fcntl_dupfd_cloexec(&p.dir, 0) {
                Ok(fd) => file_systems.push(fd),
                Err(e) => {
                    let e = RestoreError::io("keep a directory open", e);
                    for (i, p) in batch.drain(..) {
                        p.remove_tmp();
                        out[i] = Some(Err(e.clone()));
                    }
                    return;
                }
            }
        }
    }
    let sync = || -> Result<(), RestoreError> {
        for fd in &file_systems {
            rustix::fs::syncfs(fd).map_err(|e| RestoreError::io("sync file system", e))?;
        }
        Ok(())
    };
    if let Err(e) = sync() {
        for (i, p) in batch.drain(..) {
            p.remove_tmp();
            out[i] = Some(Err(e.clone()));
        }
        return;
    }
    let mut swapped = Vec::with_capacity(batch.len());
    for (i, p) in batch.drain(..) {
        out[i] = Some(finish(
            root,
            &items[i],
            p,
            quarantine,
            hooks,
            Durability::Batch,
        ));
        swapped.push(i);
    }
    if let Err(e) = sync() {
        // In place, but not known to be durable: say so rather than claim success.
        for i in swapped {
            if matches!(out[i], Some(Ok(_))) {
                out[i] = Some(Err(e.clone()));
            }
        }
    }
}

/// First half of an apply: re-check the parent, then build the new entry under a temp name
/// (replace, recreate) or check the live entry is still what the plan saw (in place).
fn prepare(
    root: &Root,
    store: Option<&ObjectStore>,
    item: &PlanItem,
    quarantine: &Quarantine,
    durability: Durability,
) -> Result<Prepared, RestoreError> {
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
    let live = inspect(dir.as_fd(), &cname, &base.path, &item.group, item.class)
        .map_err(|e| RestoreError::io("inspect", e))?;
    let mut p = Prepared {
        dir,
        dir_id,
        cname,
        live,
        stamp: now(),
        method: planned.method,
        tmp: None,
    };
    match planned.method {
        Method::InPlace => {
            let l = p.live.as_ref().ok_or_else(|| {
                RestoreError::Refused("the entry vanished since the plan; plan again".into())
            })?;
            if l.ftype != base.ftype
                || (base.ftype == FileType::File
                    && l.hashes.map(|h| h.blake3) != base.hashes.map(|h| h.blake3))
            {
                return Err(RestoreError::Refused(
                    "the entry's type or content changed since the plan; plan again".into(),
                ));
            }
        }
        Method::Recreate | Method::Replace => {
            if p.live.as_ref().is_some_and(|l| l.ftype == FileType::Dir)
                && !quarantine.same_fs(p.dir.as_fd())
            {
                return Err(RestoreError::Unsupported(
                    "the directory in the way cannot be moved into quarantine on another file system"
                        .into(),
                ));
            }
            let tmp = CString::new(tmp_name("kmsentry-restore"))
                .map_err(|_| RestoreError::Refused("temp name".into()))?;
            let rmflags = if base.ftype == FileType::Dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            p.tmp = Some((tmp, rmflags));
            if let Some((tmp, _)) = &p.tmp {
                if let Err(e) = build(
                    p.dir.as_fd(),
                    tmp,
                    base,
                    store,
                    durability == Durability::PerEntry,
                ) {
                    p.remove_tmp();
                    return Err(e);
                }
            }
        }
    }
    Ok(p)
}

/// Second half of an apply: prove the parent was not swapped, put the entry in place,
/// quarantine what it displaced, and inspect the result.
fn finish(
    root: &Root,
    item: &PlanItem,
    p: Prepared,
    quarantine: &Quarantine,
    hooks: &Hooks,
    durability: Durability,
) -> Result<Restored, RestoreError> {
    let base = &item.base;
    let (pdir, _) = split_parent(&base.path);
    let unswapped = || parent_unchanged(root, pdir, p.dir_id);
    let dir = p.dir.as_fd();
    let cname = p.cname.as_c_str();
    let before = p.live.as_ref().and_then(|l| l.hashes);
    let quarantined;
    match &p.tmp {
        None => {
            let Some(l) = &p.live else {
                return Err(RestoreError::Refused(
                    "the entry vanished since the plan; plan again".into(),
                ));
            };
            if let Some(h) = &hooks.before_swap {
                h(&base.path);
            }
            unswapped()?;
            quarantined = Some(
                quarantine
                    .record(l, &p.stamp)
                    .map_err(|e| RestoreError::io("write quarantine record", e))?,
            );
            fix_in_place(dir, cname, base, l)?;
        }
        Some((tmp, _)) => {
            if let Some(h) = &hooks.before_swap {
                h(&base.path);
            }
            if let Err(e) = unswapped() {
                p.remove_tmp();
                return Err(e);
            }
            let exchanged = match swap_in(dir, tmp, cname, p.live.is_some()) {
                Ok(x) => x,
                Err(e) => {
                    p.remove_tmp();
                    return Err(e);
                }
            };
            quarantined = if exchanged {
                // What was there now sits under the temp name: record what it really is (it
                // may differ from what the plan saw) and move it aside.
                let displaced = inspect(dir, tmp, &base.path, &item.group, item.class)
                    .map_err(|e| RestoreError::io("inspect displaced entry", e))?;
                match displaced {
                    Some(d) => Some(quarantine.keep(dir, tmp, &d, &p.stamp).map_err(|e| {
                        RestoreError::Io {
                            op: "quarantine",
                            msg: format!(
                                "restored, but the tampered version stays beside it as {}: {e}",
                                Name(tmp.to_bytes())
                            ),
                        }
                    })?),
                    None => None,
                }
            } else {
                None
            };
            if durability == Durability::PerEntry {
                rustix::fs::fsync(dir).map_err(|e| RestoreError::io("sync directory", e))?;
            }
        }
    }
    unswapped()?;
    let after = inspect(dir, cname, &base.path, &item.group, item.class)
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
        method: Some(p.method),
        changes: item.changes.clone(),
        before,
        after: after.hashes,
        quarantined,
    })
}

/// The parent `pdir` is still, reached again from the root without following a symlink, the
/// directory `dir_id` the item was built in.
fn parent_unchanged(root: &Root, pdir: &[u8], dir_id: (u64, u64)) -> Result<(), RestoreError> {
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
/// With `durable`, each file and directory built is `fsync`ed here; otherwise the caller
/// flushes its file system before the swap.
fn build(
    dir: BorrowedFd<'_>,
    tmp: &CStr,
    base: &Entry,
    store: Option<&ObjectStore>,
    durable: bool,
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
            if durable {
                f.sync_all().map_err(|e| RestoreError::io("sync", e))?;
            }
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
            if durable {
                rustix::fs::fsync(&fd).map_err(|e| io("sync", e))?;
            }
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
