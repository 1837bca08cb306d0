//! Planning against the live state, and applying: every file system operation of a restore.
//! See the module docs of [`crate::restore`] for the order of operations and why.

use super::plan::{plan_item, Method, UNRESTORABLE};
use super::{Plan, PlanItem, Quarantine, RestoreError, Restored};
use crate::baseline::attrs::{self, Target};
use crate::baseline::diff::{diff, Status};
use crate::baseline::hash::{self, Hashed};
use crate::baseline::{Entry, FileType, Problem};
use crate::fsroot::{split_parent, Root};
use crate::policy::compile::is_within;
use crate::policy::{Class, CompareSet, CompiledPolicy};
use crate::sanitize::Name;
use crate::store::objects::{tmp_name, ObjectStore};
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

const ACL_ACCESS: &CStr = c"system.posix_acl_access";
const ACL_DEFAULT: &CStr = c"system.posix_acl_default";

/// Which baselined paths a plan covers.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlanOptions {
    /// With no paths named: every group, not only those with `on_change: restore`.
    pub all_groups: bool,
}

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

/// A directory could not be reached without following a symlink, or does not exist.
enum DirError {
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

fn walk_dir(root: &Root, dir: &[u8]) -> Result<OwnedFd, DirError> {
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

fn dev_ino(fd: BorrowedFd<'_>) -> Result<(u64, u64), RestoreError> {
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
                match hash::hash_file(&mut file, hash::Stamp::of(&f), &mut Vec::new()) {
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

/// How the policy sees one baselined path.
struct Scope {
    /// What to compare, minus what the kernel sets.
    compare: CompareSet,
    group: String,
    class: Class,
    /// The group restores, so the store must hold its content.
    expects_object: bool,
}

/// The scope of `base` under `policy` (the default compare set when no group covers it).
fn scope_of(policy: &CompiledPolicy, base: &Entry) -> Scope {
    match policy.classify(&base.path) {
        Some(g) => Scope {
            compare: restorable(g.compare),
            group: g.name.clone(),
            class: g.class,
            expects_object: g.on_change.contains(&crate::policy::OnChange::Restore),
        },
        None => Scope {
            compare: restorable(CompareSet::default_set()),
            group: base.group.clone(),
            class: base.class,
            expects_object: false,
        },
    }
}

fn restorable(set: CompareSet) -> CompareSet {
    CompareSet::from_attrs(set.iter().filter(|a| !UNRESTORABLE.contains(a)))
}

/// Whether `dir` or one of its ancestors is rebuilt by an earlier item of the plan.
fn rebuilt_above(created_dirs: &HashSet<Vec<u8>>, dir: &[u8]) -> bool {
    let mut d = dir;
    loop {
        if created_dirs.contains(d) {
            return true;
        }
        if d == b"/" {
            return false;
        }
        d = split_parent(d).0;
    }
}

/// Plan one baselined entry: inspect it, diff it, decide. `None` when it is clean.
fn plan_one(
    root: &Root,
    store: Option<&ObjectStore>,
    base: &Entry,
    scope: Scope,
    created_dirs: &HashSet<Vec<u8>>,
) -> Option<PlanItem> {
    let Scope {
        compare,
        group,
        class,
        expects_object,
    } = scope;
    let (pdir, name) = split_parent(&base.path);
    let mut item = PlanItem {
        path: base.path.clone(),
        group: group.clone(),
        class,
        status: Status::Changed,
        changes: Vec::new(),
        planned: Err(RestoreError::Unsupported(String::new())),
        base: base.clone(),
        live: None,
        parent: None,
        compare,
    };
    if name.is_empty() {
        item.planned = Err(RestoreError::Unsupported(
            "the root directory itself".into(),
        ));
        return Some(item);
    }
    let live = match walk_dir(root, pdir) {
        Ok(dir) => {
            item.parent = dev_ino(dir.as_fd()).ok();
            let Ok(cname) = CString::new(name) else {
                item.planned = Err(RestoreError::Refused("a NUL byte in a path".into()));
                return Some(item);
            };
            match inspect(dir.as_fd(), &cname, &base.path, &group, class) {
                Ok(l) => l,
                Err(e) => {
                    item.planned = Err(RestoreError::io("inspect", e));
                    return Some(item);
                }
            }
        }
        // The parent (or an ancestor) is missing or is not a directory, but will be rebuilt
        // earlier in this plan; apply walks the path again, without following anything.
        Err(DirError::Missing(_) | DirError::Other(_)) if rebuilt_above(created_dirs, pdir) => None,
        Err(e) => {
            item.planned = Err(e.into());
            return Some(item);
        }
    };
    let changes = match &live {
        Some(l) => {
            let c = diff(base, l, compare);
            if c.is_empty() && l.problem.is_none() {
                return None;
            }
            c
        }
        None => {
            item.status = Status::Removed;
            Vec::new()
        }
    };
    // In a group that restores, the store must hold the copy: its absence is tampering
    // with the store (exit 3, reported by the verification below), not a missing feature.
    let has_object = match (store, base.hashes) {
        (Some(s), Some(h)) => expects_object || s.contains(&h.blake3),
        _ => false,
    };
    item.planned = plan_item(base, live.as_ref(), &changes, has_object);
    if let (Ok(p), Some(s), Some(h)) = (&item.planned, store, base.hashes) {
        if p.needs_object {
            if let Err(e) = s.verify(&h) {
                item.planned = Err(RestoreError::Integrity(e.to_string()));
            }
        }
    }
    item.changes = changes;
    item.live = live;
    Some(item)
}

/// Plan the restore of `baseline` (sorted by path, as [`crate::store::Store::entries`] gives
/// it) under `root`: every drifted entry of groups with `on_change: restore` (all groups with
/// [`PlanOptions::all_groups`]), or, when `paths` are named, every baselined entry at or below
/// them. Every store object the plan needs is re-hashed here; one that fails is an item with
/// an [`RestoreError::Integrity`] error. A named path that is not in the baseline is a usage
/// error.
pub fn plan(
    root: &Root,
    baseline: &[Entry],
    store: Option<&ObjectStore>,
    policy: &CompiledPolicy,
    paths: &[Vec<u8>],
    opts: PlanOptions,
) -> crate::error::Result<Plan> {
    for p in paths {
        if !p.starts_with(b"/") {
            return Err(crate::error::Error::Usage(format!(
                "{}: expected a host-absolute path such as /etc/kms/client.key",
                Name(p)
            )));
        }
        if !baseline.iter().any(|b| is_within(&b.path, p)) {
            return Err(crate::error::Error::Usage(format!(
                "{}: not in the baseline; nothing to restore",
                Name(p)
            )));
        }
    }
    let mut plan = Plan::default();
    let mut created_dirs = HashSet::new();
    for base in baseline {
        let in_scope = if paths.is_empty() {
            opts.all_groups
                || policy
                    .classify(&base.path)
                    .is_some_and(|g| g.on_change.contains(&crate::policy::OnChange::Restore))
        } else {
            paths.iter().any(|p| is_within(&base.path, p))
        };
        if !in_scope {
            continue;
        }
        plan.checked += 1;
        if let Some(item) = plan_one(root, store, base, scope_of(policy, base), &created_dirs) {
            if base.ftype == FileType::Dir
                && matches!(&item.planned, Ok(p) if p.method != Method::InPlace)
            {
                created_dirs.insert(base.path.clone());
            }
            plan.items.push(item);
        }
    }
    Ok(plan)
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

fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> Vec<u8> {
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

/// Owner, ACLs, xattrs, then mode (last: chown clears setuid bits) on an open entry.
fn set_attrs_fd(
    fd: BorrowedFd<'_>,
    base: &Entry,
    chown: bool,
    acl: bool,
    xattrs: bool,
) -> Result<(), RestoreError> {
    if chown {
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(base.uid)),
            Some(rustix::fs::Gid::from_raw(base.gid)),
        )
        .map_err(|e| RestoreError::io("set owner", e))?;
    }
    if acl {
        set_acl(fd, ACL_ACCESS, base.acl_access.as_deref())?;
        if base.ftype == FileType::Dir {
            set_acl(fd, ACL_DEFAULT, base.acl_default.as_deref())?;
        }
    }
    if xattrs {
        sync_xattrs(&Target::Fd(fd), base)?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(base.mode))
        .map_err(|e| RestoreError::io("set mode", e))
}

/// Owner and xattrs of an entry that is never opened (symlink, device, FIFO).
fn set_attrs_child(
    dir: BorrowedFd<'_>,
    name: &CStr,
    base: &Entry,
    chown: bool,
    xattrs: bool,
) -> Result<(), RestoreError> {
    if chown {
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(base.uid)),
            Some(rustix::fs::Gid::from_raw(base.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| RestoreError::io("set owner", e))?;
    }
    if xattrs {
        sync_xattrs(&Target::Child(dir, name), base)?;
    }
    Ok(())
}

fn set_acl(fd: BorrowedFd<'_>, name: &CStr, text: Option<&str>) -> Result<(), RestoreError> {
    match text {
        Some(t) => {
            let v = super::acl::encode(t).ok_or_else(|| {
                RestoreError::Unsupported(format!("the baseline ACL `{t}` does not parse"))
            })?;
            rustix::fs::fsetxattr(fd, name, &v, rustix::fs::XattrFlags::empty())
                .map_err(|e| RestoreError::io("set ACL", e))
        }
        None => match rustix::fs::fremovexattr(fd, name) {
            Ok(()) | Err(Errno::NODATA | Errno::OPNOTSUPP) => Ok(()),
            Err(e) => Err(RestoreError::io("remove ACL", e)),
        },
    }
}

/// Make the entry's xattrs (other than ACLs) exactly the baseline's: remove extras, set
/// what is missing or different.
fn sync_xattrs(target: &Target<'_>, base: &Entry) -> Result<(), RestoreError> {
    let now =
        attrs::capture(target, &mut Vec::new()).map_err(|e| RestoreError::io("read xattrs", e))?;
    let proc = match target {
        Target::Child(d, n) => Some(proc_path(*d, n)),
        Target::Fd(_) => None,
    };
    let set = |name: &CStr, value: &[u8]| -> rustix::io::Result<()> {
        match (target, &proc) {
            (Target::Fd(fd), _) => {
                rustix::fs::fsetxattr(fd, name, value, rustix::fs::XattrFlags::empty())
            }
            (_, Some(p)) => {
                rustix::fs::lsetxattr(p.as_slice(), name, value, rustix::fs::XattrFlags::empty())
            }
            _ => Err(Errno::INVAL),
        }
    };
    let remove = |name: &CStr| -> rustix::io::Result<()> {
        match (target, &proc) {
            (Target::Fd(fd), _) => rustix::fs::fremovexattr(fd, name),
            (_, Some(p)) => rustix::fs::lremovexattr(p.as_slice(), name),
            _ => Err(Errno::INVAL),
        }
    };
    let cname = |n: &[u8]| {
        CString::new(n).map_err(|_| RestoreError::Refused("a NUL byte in an xattr name".into()))
    };
    for x in &now.xattrs {
        if base.xattrs.iter().any(|b| b.name == x.name) {
            continue;
        }
        match remove(cname(&x.name)?.as_c_str()) {
            Ok(()) | Err(Errno::NODATA) => {}
            // The kernel labels every file on an SELinux system; a baseline taken without one
            // cannot ask for its removal.
            Err(_) if x.name == b"security.selinux" => {}
            Err(e) => {
                return Err(RestoreError::Io {
                    op: "remove xattr",
                    msg: format!("{}: {}", Name(&x.name), std::io::Error::from(e)),
                })
            }
        }
    }
    for x in &base.xattrs {
        if now
            .xattrs
            .iter()
            .any(|n| n.name == x.name && n.value == x.value)
        {
            continue;
        }
        set(cname(&x.name)?.as_c_str(), &x.value).map_err(|e| RestoreError::Io {
            op: "set xattr",
            msg: format!("{}: {}", Name(&x.name), std::io::Error::from(e)),
        })?;
    }
    Ok(())
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
