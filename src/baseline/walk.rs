//! The one walker: init, verify, `policy check`, and the daemon's reconciliation and
//! overflow rescans all enumerate policy paths through here.
//!
//! Invariants:
//! - Every child is classified with `statx(AT_SYMLINK_NOFOLLOW)` relative to its parent's fd;
//!   a symlink is recorded with `readlinkat` and never followed; FIFOs, sockets and devices
//!   are recorded and never opened.
//! - A regular file is opened `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_NOATIME` relative to its
//!   parent and `fstat` must show the (dev, ino, type) `statx` saw, else it was swapped and is
//!   treated as vanished. `O_NONBLOCK` means even a FIFO swapped in between the two calls
//!   cannot block the open; the type check then refuses to read it.
//! - Directories are descended only where some pattern could still match (pruning), opened
//!   `O_DIRECTORY | O_NOFOLLOW` relative to the parent, never by path from the root.
//! - Work is split per directory chunk over a rayon pool so both cores hash; results go to a
//!   caller's sink in no particular order (the store and export sort by path bytes).
//! - A per-entry failure becomes an [`Item::Error`] and the walk goes on; an entry that
//!   disappears mid-walk is simply absent (verify reports it `removed`).

use super::attrs::{self, Target};
use super::entry::{Entry, FileType, Hashes, Problem};
use super::hash::{self, Hashed};
use crate::fsroot::Root;
use crate::policy::glob::split;
use crate::policy::CompiledPolicy;
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

/// Names per unit of parallel work: small enough to balance two cores on one big directory,
/// large enough that scheduling costs nothing next to the syscalls.
const CHUNK_NAMES: usize = 128;

/// What the walker hands its sink.
#[derive(Debug)]
pub enum Item {
    Entry(Box<Entry>),
    Error(WalkError),
}

/// A per-entry failure: the path, what was attempted, and why it failed.
#[derive(Debug)]
pub struct WalkError {
    pub path: Vec<u8>,
    pub op: &'static str,
    pub error: std::io::Error,
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            crate::sanitize::Name(&self.path),
            self.op,
            self.error
        )
    }
}

/// Which content digests a walk computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hashing {
    /// Open no regular file: `policy check` only resolves paths.
    Off,
    /// BLAKE3 only: what every comparison uses (verify, the daemon's reconciliation).
    Compare,
    /// What each group's `hash:` records: BLAKE3, and SHA-256 where asked (init, update).
    Record,
}

/// How to walk.
#[derive(Clone, Copy, Debug)]
pub struct WalkOptions {
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// Which digests to compute for regular files.
    pub hash: Hashing,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            threads: 0,
            hash: Hashing::Record,
        }
    }
}

/// Called for each regular file the walk hashed, on the walker's thread, before the entry
/// reaches the sink: with the exact bytes that were hashed when the file was small enough to
/// be read whole ([`hash::CHUNK`]), else `None` (the callee reads it itself if it must).
pub type Inspect<'a> = &'a (dyn Fn(&Entry, Option<&[u8]>) + Sync);

struct Ctx<'a> {
    policy: &'a CompiledPolicy,
    sink: &'a (dyn Fn(Item) + Sync),
    hash: Hashing,
    inspect: Option<Inspect<'a>>,
}

impl Ctx<'_> {
    fn error(&self, path: &[u8], op: &'static str, e: impl Into<std::io::Error>) {
        (self.sink)(Item::Error(WalkError {
            path: path.to_vec(),
            op,
            error: e.into(),
        }));
    }
}

thread_local! {
    static HASH_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static XATTR_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Walk every path `policy` names under `root`. Blocks until done. `sink` is called from
/// worker threads.
pub fn walk(root: &Root, policy: &CompiledPolicy, opts: WalkOptions, sink: &(dyn Fn(Item) + Sync)) {
    walk_ctx(
        root,
        opts,
        Ctx {
            policy,
            sink,
            hash: opts.hash,
            inspect: None,
        },
    )
}

/// [`walk`], handing each hashed regular file's content to `inspect` first (credential
/// inspection reads the bytes the walk already has instead of opening the file again).
pub fn walk_inspecting(
    root: &Root,
    policy: &CompiledPolicy,
    opts: WalkOptions,
    inspect: Inspect<'_>,
    sink: &(dyn Fn(Item) + Sync),
) {
    walk_ctx(
        root,
        opts,
        Ctx {
            policy,
            sink,
            hash: opts.hash,
            inspect: Some(inspect),
        },
    )
}

fn walk_ctx(root: &Root, opts: WalkOptions, ctx: Ctx<'_>) {
    let policy = ctx.policy;
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .thread_name(|i| format!("kmsentry-walk-{i}"))
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            ctx.error(b"/", "start walker threads", std::io::Error::other(e));
            return;
        }
    };
    let bases = policy.bases();
    let ctx = &ctx;
    pool.scope(|s| {
        for base in bases {
            if base == b"/" {
                match root.resolve(b"/", OFlags::RDONLY | OFlags::DIRECTORY) {
                    Ok(fd) => visit_root(s, ctx, fd),
                    Err(e) => ctx.error(b"/", "open", e),
                }
                continue;
            }
            match root.open_parent(&base) {
                Ok((parent, name)) => {
                    let parent = Arc::new(parent);
                    s.spawn(move |s| visit_child(s, ctx, &parent, &name, base));
                }
                // A base that does not exist (or whose parent is not a directory) holds
                // nothing; verify reports baselined entries under it as removed.
                Err(e) if matches!(e.raw_os_error(), Some(c) if c == Errno::NOENT.raw_os_error() || c == Errno::NOTDIR.raw_os_error()) => {
                    tracing::debug!(path = %crate::sanitize::Name(&base), "policy path does not exist");
                }
                Err(e) => ctx.error(&base, "resolve", e),
            }
        }
    });
}

fn visit_root<'s>(s: &rayon::Scope<'s>, ctx: &'s Ctx<'s>, fd: OwnedFd) {
    let path = b"/".to_vec();
    let st = match rustix::fs::fstat(&fd) {
        Ok(st) => st,
        Err(e) => return ctx.error(&path, "stat", e),
    };
    if let Some(g) = ctx.policy.classify_comps(&[]) {
        let mut e = entry_from_stat(&path, &st, g);
        capture_xattrs(ctx, &mut e, &Target::Fd(fd.as_fd()));
        (ctx.sink)(Item::Entry(Box::new(e)));
    }
    read_dir(s, ctx, fd, path);
}

/// Enumerate a directory and schedule its children in chunks.
fn read_dir<'s>(s: &rayon::Scope<'s>, ctx: &'s Ctx<'s>, fd: OwnedFd, path: Vec<u8>) {
    let fd = Arc::new(fd);
    let dir = match rustix::fs::Dir::read_from(&*fd) {
        Ok(d) => d,
        Err(e) => return ctx.error(&path, "read directory", e),
    };
    // Each name with whether the directory entry says "regular file" (a hint only: the
    // entry is checked on the open file before anything is recorded).
    let mut names: Vec<(CString, bool)> = Vec::new();
    for ent in dir {
        match ent {
            Ok(ent) => {
                let n = ent.file_name();
                if n != c"." && n != c".." {
                    let reg = ent.file_type() == rustix::fs::FileType::RegularFile;
                    names.push((n.to_owned(), reg));
                }
            }
            Err(e) => {
                ctx.error(&path, "read directory", e);
                break;
            }
        }
    }
    names.sort_unstable();
    let path = Arc::new(path);
    let mut chunks = names
        .chunks(CHUNK_NAMES)
        .map(<[(CString, bool)]>::to_vec)
        .peekable();
    while let Some(chunk) = chunks.next() {
        let (fd, path) = (Arc::clone(&fd), Arc::clone(&path));
        let job = move |s: &rayon::Scope<'s>| {
            for (name, reg) in &chunk {
                let child = join(&path, name.to_bytes());
                if *reg && ctx.hash != Hashing::Off {
                    match visit_regular(ctx, &fd, name, &child) {
                        Regular::Done => continue,
                        Regular::Check => {}
                    }
                }
                visit_child(s, ctx, &fd, name, child);
            }
        };
        // The last chunk runs here: most directories are one chunk, and this saves a spawn.
        if chunks.peek().is_none() {
            job(s);
        } else {
            s.spawn(job);
        }
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if !dir.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn is_gone(e: Errno) -> bool {
    e == Errno::NOENT || e == Errno::NOTDIR
}

/// What [`visit_regular`] did.
enum Regular {
    /// Recorded, vanished, or not claimed by the policy: nothing more to do.
    Done,
    /// Not what the directory entry said (or not openable as one): take the `statx` path.
    Check,
}

/// A child the directory entry says is a regular file: open it (`O_NOFOLLOW`, non-blocking)
/// and take every attribute from the open file's `fstat`, one `statx` fewer than
/// [`visit_child`]. Anything but a regular file behind the name goes back to the `statx`
/// path, which records it as what it is.
fn visit_regular(ctx: &Ctx<'_>, parent: &Arc<OwnedFd>, name: &CStr, path: &[u8]) -> Regular {
    let comps: Vec<&[u8]> = split(path).collect();
    let Some(group) = ctx.policy.classify_comps(&comps) else {
        // A regular file the policy does not claim: nothing to record and nothing below it.
        return Regular::Done;
    };
    drop(comps);
    let fd = match open_file(parent, name) {
        Ok(fd) => fd,
        Err(e) if is_gone(e) => return Regular::Done,
        // A symlink now (ELOOP), or unreadable: `statx` first, which records what it is.
        Err(_) => return Regular::Check,
    };
    let st = match rustix::fs::fstat(&fd) {
        Ok(st) if FileType::from_mode(st.st_mode) == FileType::File => st,
        _ => return Regular::Check,
    };
    let mut e = entry_from_stat(path, &st, group);
    hash_open(ctx, fd, &st, want(ctx, group), &mut e);
    (ctx.sink)(Item::Entry(Box::new(e)));
    Regular::Done
}

/// Open a regular file for hashing: never through a symlink, never blocking on a FIFO or
/// device that took its place, without updating its access time where allowed.
fn open_file(parent: &OwnedFd, name: &CStr) -> Result<OwnedFd, Errno> {
    let base =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, name, base | OFlags::NOATIME, Mode::empty()) {
        // O_NOATIME needs ownership or CAP_FOWNER; without it, open plainly.
        Err(Errno::PERM) => rustix::fs::openat(parent, name, base, Mode::empty()),
        r => r,
    }
}

fn visit_child<'s>(
    s: &rayon::Scope<'s>,
    ctx: &'s Ctx<'s>,
    parent: &Arc<OwnedFd>,
    name: &CStr,
    path: Vec<u8>,
) {
    let comps: Vec<&[u8]> = split(&path).collect();
    let group = ctx.policy.classify_comps(&comps);
    let st = match rustix::fs::statx(
        parent.as_fd(),
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
        StatxFlags::BASIC_STATS,
    ) {
        Ok(st) => st,
        Err(e) if is_gone(e) => return,
        Err(e) => return ctx.error(&path, "stat", e),
    };
    let ftype = FileType::from_mode(u32::from(st.stx_mode));
    let descend = ftype == FileType::Dir && ctx.policy.could_match_within_comps(&comps);
    drop(comps);
    let Some(group) = group else {
        if descend {
            if let Some(fd) = open_dir(ctx, parent, name, &path, &st) {
                read_dir(s, ctx, fd, path);
            }
        }
        return;
    };
    let Some((e, dir)) = capture_child(ctx, parent, name, &path, &st, group) else {
        return;
    };
    (ctx.sink)(Item::Entry(Box::new(e)));
    if let (Some(fd), true) = (dir, descend) {
        read_dir(s, ctx, fd, path);
    }
}

/// Record one classified child that `statx` described: attributes, xattrs, link target,
/// and hashes. Returns the entry and, for a directory, its open fd; `None` when the entry
/// vanished or was swapped mid-capture (it is then not reported at all).
fn capture_child(
    ctx: &Ctx<'_>,
    parent: &OwnedFd,
    name: &CStr,
    path: &[u8],
    st: &rustix::fs::Statx,
    group: &crate::policy::Group,
) -> Option<(Entry, Option<OwnedFd>)> {
    let ftype = FileType::from_mode(u32::from(st.stx_mode));
    let mut e = entry_from_statx(path, st, &group.name, group.class);
    match ftype {
        FileType::File if ctx.hash != Hashing::Off => {
            if !hash_into(ctx, parent, name, st, want(ctx, group), &mut e) {
                return None; // vanished or swapped
            }
        }
        FileType::File => {}
        FileType::Dir => {
            let fd = open_dir(ctx, parent, name, path, st)?;
            capture_xattrs(ctx, &mut e, &Target::Fd(fd.as_fd()));
            return Some((e, Some(fd)));
        }
        FileType::Symlink => {
            match rustix::fs::readlinkat(parent.as_fd(), name, Vec::new()) {
                Ok(t) => e.link_target = Some(t.into_bytes()),
                Err(err) if is_gone(err) || err == Errno::INVAL => return None,
                Err(err) => {
                    e.problem = Some(Problem::Unreadable(format!(
                        "readlink: {}",
                        std::io::Error::from(err)
                    )))
                }
            }
            capture_xattrs(ctx, &mut e, &Target::Child(parent.as_fd(), name));
        }
        _ => capture_xattrs(ctx, &mut e, &Target::Child(parent.as_fd(), name)),
    }
    Some((e, None))
}

/// Capture one path the way the walker would, without descending: the daemon's per-event
/// re-check. `Ok(None)` when the path does not exist or the policy does not claim it.
pub fn capture_path(
    root: &Root,
    policy: &CompiledPolicy,
    path: &[u8],
) -> Result<Option<Entry>, WalkError> {
    let errors = std::sync::Mutex::new(None);
    let sink = |item: Item| {
        if let Item::Error(e) = item {
            if let Ok(mut g) = errors.lock() {
                g.get_or_insert(e);
            }
        }
    };
    let ctx = Ctx {
        policy,
        sink: &sink,
        hash: Hashing::Record,
        inspect: None,
    };
    let Some(group) = policy.classify(path) else {
        return Ok(None);
    };
    let fail = |op: &'static str, e: std::io::Error| WalkError {
        path: path.to_vec(),
        op,
        error: e,
    };
    let (parent, name) = match root.open_parent(path) {
        Ok(v) => v,
        Err(e) if matches!(e.raw_os_error(), Some(2) | Some(20)) => return Ok(None),
        Err(e) => return Err(fail("open parent", e)),
    };
    let st = match rustix::fs::statx(
        &parent,
        name.as_c_str(),
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
        StatxFlags::BASIC_STATS,
    ) {
        Ok(st) => st,
        Err(e) if is_gone(e) => return Ok(None),
        Err(e) => return Err(fail("stat", e.into())),
    };
    let got = capture_child(&ctx, &parent, name.as_c_str(), path, &st, group);
    let err = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    match (got, err) {
        (Some((e, _)), _) => Ok(Some(e)),
        (None, Some(err)) => Err(err),
        (None, None) => Ok(None),
    }
}

/// Open a directory child without following it and check it is the one `statx` saw.
fn open_dir(
    ctx: &Ctx<'_>,
    parent: &OwnedFd,
    name: &CStr,
    path: &[u8],
    st: &rustix::fs::Statx,
) -> Option<OwnedFd> {
    let fd = match rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // Gone, or replaced by a symlink / non-directory since `statx`.
        Err(e) if is_gone(e) || e == Errno::LOOP => return None,
        Err(e) => {
            ctx.error(path, "open directory", e);
            return None;
        }
    };
    match rustix::fs::fstat(&fd) {
        Ok(f) if same_inode(&f, st) => Some(fd),
        Ok(_) => None,
        Err(e) => {
            ctx.error(path, "stat directory", e);
            None
        }
    }
}

fn same_inode(f: &rustix::fs::Stat, st: &rustix::fs::Statx) -> bool {
    f.st_ino == st.stx_ino
        && f.st_dev == rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor)
        && (f.st_mode & 0o170000) == u32::from(st.stx_mode) & 0o170000
}

/// Open, verify and hash a regular file into `e`. Returns false when the file vanished or
/// was swapped for another between `statx` and `open` (it is then not reported at all).
fn hash_into(
    ctx: &Ctx<'_>,
    parent: &OwnedFd,
    name: &CStr,
    st: &rustix::fs::Statx,
    want: hash::Want,
    e: &mut Entry,
) -> bool {
    let fd = match open_file(parent, name) {
        Ok(fd) => fd,
        Err(err) if is_gone(err) || err == Errno::LOOP => return false,
        Err(err) => {
            let ioe = std::io::Error::from(err);
            e.problem = Some(Problem::Unreadable(format!("open: {ioe}")));
            ctx.error(&e.path, "open", ioe);
            capture_xattrs(ctx, e, &Target::Child(parent.as_fd(), name));
            return true;
        }
    };
    let before = match rustix::fs::fstat(&fd) {
        Ok(f) if same_inode(&f, st) => f,
        Ok(_) => return false,
        Err(err) => {
            ctx.error(&e.path, "stat", err);
            return false;
        }
    };
    hash_open(ctx, fd, &before, want, e);
    true
}

/// The digests `ctx` asks of a file in `group`.
fn want(ctx: &Ctx<'_>, group: &crate::policy::Group) -> hash::Want {
    hash::Want {
        sha256: ctx.hash == Hashing::Record && group.sha256,
    }
}

/// Capture the xattrs of, and hash, a regular file open as `fd` whose `fstat` is `before`.
fn hash_open(
    ctx: &Ctx<'_>,
    fd: OwnedFd,
    before: &rustix::fs::Stat,
    want: hash::Want,
    e: &mut Entry,
) {
    if before.st_size > 1 << 20 {
        // Large files: ask for aggressive read-ahead on a cold cache; harmless when warm.
        let _ = rustix::fs::fadvise(&fd, 0, None, rustix::fs::Advice::Sequential);
    }
    capture_xattrs(ctx, e, &Target::Fd(fd.as_fd()));
    let mut file = std::fs::File::from(fd);
    HASH_BUF.with(|b| {
        let buf = &mut *b.borrow_mut();
        let outcome = hash::hash_file(&mut file, hash::Stamp::of(before), want, buf);
        hashed(ctx, e, outcome, buf);
    });
}

/// Record the outcome of hashing `e` (content in `buf` for a small file), then let the
/// inspector see the entry.
fn hashed(ctx: &Ctx<'_>, e: &mut Entry, outcome: std::io::Result<Hashed>, buf: &[u8]) {
    match outcome {
        Ok(Hashed::Done(h, after)) => {
            set_hashes(e, h, &after);
            if let Some(inspect) = ctx.inspect {
                let whole = usize::try_from(e.size)
                    .ok()
                    .filter(|n| *n <= hash::CHUNK)
                    .and_then(|n| buf.get(..n));
                inspect(e, whole);
            }
        }
        Ok(Hashed::Unstable) => {
            e.problem = Some(Problem::Unstable);
            ctx.error(
                &e.path,
                "hash",
                std::io::Error::other("the file changed while it was being hashed (unstable)"),
            );
        }
        Err(err) => {
            e.problem = Some(Problem::Unreadable(format!("read: {err}")));
            ctx.error(&e.path, "read", err);
        }
    }
}

/// Record hashes and the attributes of the state that was hashed.
fn set_hashes(e: &mut Entry, h: Hashes, st: &rustix::fs::Stat) {
    e.hashes = Some(h);
    e.size = st.st_size as u64;
    e.mode = st.st_mode & 0o7777;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.nlink = st.st_nlink;
    let stamp = hash::Stamp::of(st);
    e.mtime_ns = stamp.mtime_ns;
    e.ctime_ns = stamp.ctime_ns;
}

fn capture_xattrs(ctx: &Ctx<'_>, e: &mut Entry, target: &Target<'_>) {
    match XATTR_BUF.with(|b| attrs::capture(target, &mut b.borrow_mut())) {
        Ok(c) => {
            e.xattrs = c.xattrs;
            e.acl_access = c.acl_access;
            e.acl_default = c.acl_default;
        }
        Err(err) if err.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
        Err(err) => {
            if e.problem.is_none() {
                e.problem = Some(Problem::Unreadable(format!("xattrs: {err}")));
            }
            ctx.error(&e.path, "read xattrs", err);
        }
    }
}

/// The attributes `statx` gives, as an entry of `group`/`class` (no hashes, xattrs or link
/// target yet). Shared by the walker and restore's live inspection.
pub(crate) fn entry_from_statx(
    path: &[u8],
    st: &rustix::fs::Statx,
    group: &str,
    class: crate::policy::Class,
) -> Entry {
    let ftype = FileType::from_mode(u32::from(st.stx_mode));
    let ts = |t: &rustix::fs::StatxTimestamp| t.tv_sec * 1_000_000_000 + i64::from(t.tv_nsec);
    Entry {
        path: path.to_vec(),
        ftype,
        mode: u32::from(st.stx_mode) & 0o7777,
        uid: st.stx_uid,
        gid: st.stx_gid,
        size: st.stx_size,
        hashes: None,
        link_target: None,
        rdev: matches!(ftype, FileType::CharDevice | FileType::BlockDevice)
            .then_some((st.stx_rdev_major, st.stx_rdev_minor)),
        acl_access: None,
        acl_default: None,
        xattrs: Vec::new(),
        dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        nlink: u64::from(st.stx_nlink),
        mtime_ns: ts(&st.stx_mtime),
        ctime_ns: ts(&st.stx_ctime),
        group: group.to_string(),
        class,
        problem: None,
    }
}

fn entry_from_stat(path: &[u8], st: &rustix::fs::Stat, g: &crate::policy::Group) -> Entry {
    let stamp = hash::Stamp::of(st);
    Entry {
        path: path.to_vec(),
        ftype: FileType::from_mode(st.st_mode),
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        hashes: None,
        link_target: None,
        rdev: None,
        acl_access: None,
        acl_default: None,
        xattrs: Vec::new(),
        dev: st.st_dev,
        ino: st.st_ino,
        nlink: st.st_nlink,
        mtime_ns: stamp.mtime_ns,
        ctime_ns: stamp.ctime_ns,
        group: g.name.clone(),
        class: g.class,
        problem: None,
    }
}

/// Walk and collect everything (entries sorted by path bytes, errors in walk order);
/// `on_item` is called once per item (progress).
pub fn collect(
    root: &Root,
    policy: &CompiledPolicy,
    opts: WalkOptions,
    on_item: &(dyn Fn() + Sync),
) -> (Vec<Entry>, Vec<WalkError>) {
    let out = std::sync::Mutex::new((Vec::new(), Vec::new()));
    walk(root, policy, opts, &|item| {
        on_item();
        let mut g = match out.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match item {
            Item::Entry(e) => g.0.push(*e),
            Item::Error(e) => g.1.push(e),
        }
    });
    let (mut entries, errors) = match out.into_inner() {
        Ok(v) => v,
        Err(p) => p.into_inner(),
    };
    entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    (entries, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    fn policy(y: &str) -> CompiledPolicy {
        crate::policy::parse_str(y, b"t.yaml").unwrap()
    }

    fn paths(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| crate::sanitize::escape(&e.path).into_owned())
            .collect()
    }

    #[test]
    fn walks_records_and_never_follows_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc/kms/keys")).unwrap();
        std::fs::create_dir_all(r.join("outside")).unwrap();
        std::fs::write(r.join("etc/kms/keys/a.key"), b"secret").unwrap();
        std::fs::set_permissions(
            r.join("etc/kms/keys/a.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(r.join("outside/x"), b"x").unwrap();
        std::os::unix::fs::symlink("/outside", r.join("etc/kms/escape")).unwrap();
        std::os::unix::fs::symlink("loop2", r.join("etc/kms/loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", r.join("etc/kms/loop2")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            r.join("etc/kms/fifo").as_os_str(),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let p = policy(
            "version: 1\ngroups:\n  - name: kms\n    class: private-key\n    paths: [/etc/kms]\n",
        );
        let root = Root::open(r).unwrap();
        let (entries, errors) = collect(
            &root,
            &p,
            WalkOptions {
                threads: 2,
                hash: Hashing::Record,
            },
            &|| {},
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            paths(&entries),
            [
                "/etc/kms",
                "/etc/kms/escape",
                "/etc/kms/fifo",
                "/etc/kms/keys",
                "/etc/kms/keys/a.key",
                "/etc/kms/loop1",
                "/etc/kms/loop2"
            ]
        );
        let key = &entries[4];
        assert_eq!(key.ftype, FileType::File);
        assert_eq!(key.mode, 0o600);
        assert_eq!(key.size, 6);
        assert_eq!(
            key.hashes.unwrap().blake3,
            *blake3::hash(b"secret").as_bytes()
        );
        assert_eq!(key.group, "kms");
        let esc = &entries[1];
        assert_eq!(esc.ftype, FileType::Symlink);
        assert_eq!(esc.link_target.as_deref(), Some(&b"/outside"[..]));
        assert_eq!(entries[2].ftype, FileType::Fifo);
        assert!(entries[2].hashes.is_none());
    }

    #[test]
    fn globs_prune_and_odd_names_survive() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu/pkcs11")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu/other")).unwrap();
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/pkcs11/p11.so"), b"elf").unwrap();
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/pkcs11/notes.txt"), b"t").unwrap();
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/other/p.so"), b"e").unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"bad\xff\nname.so");
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/pkcs11").join(odd), b"z").unwrap();
        let p = policy("version: 1\ngroups:\n  - name: p\n    paths: ['/usr/lib/*/pkcs11/*.so']\n");
        let (entries, errors) = collect(
            &Root::open(r).unwrap(),
            &p,
            WalkOptions {
                threads: 2,
                hash: Hashing::Record,
            },
            &|| {},
        );
        assert!(errors.is_empty());
        assert_eq!(
            paths(&entries),
            [
                "/usr/lib/x86_64-linux-gnu/pkcs11/bad\\xff\\nname.so",
                "/usr/lib/x86_64-linux-gnu/pkcs11/p11.so"
            ]
        );
    }

    #[test]
    fn entries_vanishing_mid_walk_are_absent_not_errors() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("kms");
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..600 {
            std::fs::write(dir.join(format!("f{i:03}")), b"x").unwrap();
        }
        let p = policy("version: 1\ngroups:\n  - name: a\n    paths: [/kms]\n");
        let root = Root::open(t.path()).unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let errors = std::sync::Mutex::new(Vec::new());
        let once = std::sync::Once::new();
        // One thread: the directory is listed, then everything in it is deleted as the first
        // file arrives, so the remaining children vanish between `getdents` and `statx`.
        walk(
            &root,
            &p,
            WalkOptions {
                threads: 1,
                hash: Hashing::Record,
            },
            &|item| match item {
                // The directory's own entry comes before its listing: wait for a file.
                Item::Entry(e) if e.path != b"/kms" => {
                    once.call_once(|| {
                        for i in 0..600 {
                            let _ = std::fs::remove_file(dir.join(format!("f{i:03}")));
                        }
                    });
                    seen.lock().unwrap().push(e.path.clone());
                }
                Item::Entry(e) => seen.lock().unwrap().push(e.path.clone()),
                Item::Error(e) => errors.lock().unwrap().push(e.to_string()),
            },
        );
        let errors = errors.into_inner().unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let seen = seen.into_inner().unwrap();
        // The directory and the file that triggered the deletion; the other 599 were listed,
        // then vanished, and are simply absent.
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.contains(&b"/kms".to_vec()));
    }

    #[test]
    fn a_deep_tree_and_a_big_directory_are_walked_completely() {
        let t = tempfile::tempdir().unwrap();
        let mut d = t.path().join("deep");
        for i in 0..40 {
            d = d.join(format!("level{i:02}"));
        }
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("leaf.pem"), b"leaf").unwrap();
        std::fs::create_dir_all(t.path().join("wide")).unwrap();
        for i in 0..1000 {
            std::fs::write(t.path().join(format!("wide/f{i}")), i.to_string()).unwrap();
        }
        let p = policy("version: 1\ngroups:\n  - name: a\n    paths: [/deep, /wide]\n");
        let (entries, errors) = collect(
            &Root::open(t.path()).unwrap(),
            &p,
            WalkOptions {
                threads: 2,
                hash: Hashing::Record,
            },
            &|| {},
        );
        assert!(errors.is_empty());
        assert_eq!(entries.len(), 41 + 1 + 1 + 1000);
        assert!(entries
            .iter()
            .any(|e| e.path.ends_with(b"level39/leaf.pem") && e.hashes.is_some()));
    }
}
