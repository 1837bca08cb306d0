//! Marks: which fanotify marks each watched path carries, placing and moving them, and the
//! two indexes the input threads resolve events with (file handle → path for notifications,
//! (dev, ino) → path for permission events).
//!
//! The narrow-inode rule: permission marks go on the exact inodes of regular files in
//! `enforce` or `audit` groups, never on directories or mounts, so an open of anything else
//! on the host never reaches the daemon; the permission thread finds the group from the
//! event fd's inode, so a hard link to a guarded key is guarded too. Directories carry
//! notification marks only (namespace events); symlinks and special files are watched
//! through their directory and never marked or opened.
//! A full placement builds the new set aside and swaps it in whole, so events keep
//! resolving against the old set meanwhile; every mark is placed through an `O_PATH` fd
//! resolved under the root, never by a path the kernel resolves again.
//! Must not: hash, read the baseline, or alert; it runs on the checker thread only.

use super::fanotify::{self, PermGroup};
use super::paths::{Builder, Marks, Watched};
use super::shared::{lock, read, write, Shared};
use crate::baseline::entry::FileType;
use crate::baseline::walk::{self, Item, WalkOptions};
use crate::error::Result;
use crate::fsroot::Root;
use crate::policy::schema::AccessMode;
use crate::policy::{Class, CompiledPolicy, Group};
use crate::sanitize::Name;
use nix::sys::fanotify::{Fanotify, MaskFlags};
use rustix::fs::OFlags;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

const NOTIFY_FILE: u32 = (libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF) as u32;
const NOTIFY_DIR: u32 = (libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_ATTRIB
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF
    | libc::FAN_ONDIR) as u32;
/// The event bits that change a directory's namespace (and name their entry by directory
/// handle + name).
pub(super) const NAMESPACE: u64 =
    libc::FAN_CREATE | libc::FAN_DELETE | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO;

/// The marks an entry of type `e_type` in `group` gets.
pub(super) fn marks_for(e_type: FileType, group: Option<&Group>) -> Marks {
    let mut m = Marks::default();
    match e_type {
        FileType::Dir => m.notify = NOTIFY_DIR,
        FileType::File => {
            m.notify = NOTIFY_FILE;
            if let Some(g) = group {
                // Audit mode too goes through the permission group, always answered allow:
                // the opener waits while its identity is read, so the alert names the
                // process that opened the file, not whatever holds its pid a moment later.
                if matches!(g.access.mode, AccessMode::Enforce | AccessMode::Audit) {
                    m.perm = libc::FAN_OPEN_PERM as u32;
                    if g.class == Class::ProviderBinary {
                        m.perm |= libc::FAN_OPEN_EXEC_PERM as u32;
                    }
                }
            }
        }
        // Symlinks, FIFOs, devices: watched through their directory (a change to them is a
        // delete + create there); never opened, so never marked themselves.
        _ => {}
    }
    m
}

/// Move one group's mark on `fd` from mask `from` to mask `to`: add `to` (an error if that
/// fails), then remove the bits no longer wanted (best effort: the inode may not carry them).
fn move_mask(
    fan: &Fanotify,
    fd: std::os::fd::BorrowedFd<'_>,
    from: u32,
    to: u32,
) -> nix::Result<()> {
    if to != 0 {
        fanotify::mark_fd(fan, fd, MaskFlags::from_bits_retain(u64::from(to)), false)?;
    }
    if from & !to != 0 {
        let _ = fanotify::mark_fd(
            fan,
            fd,
            MaskFlags::from_bits_retain(u64::from(from & !to)),
            true,
        );
    }
    Ok(())
}

/// What [`Marker::apply`] learned about the marked inode.
#[derive(Default)]
struct Applied {
    handle: Option<Vec<u8>>,
    inode: Option<(u64, u64)>,
}

/// Places and moves the marks of both groups and keeps the shared indexes in step.
pub(super) struct Marker {
    shared: Arc<Shared>,
    root: Arc<Root>,
    perm: Arc<PermGroup>,
    notify: Arc<Fanotify>,
    /// Walker threads for a full placement.
    threads: usize,
    /// The marked files changed since the kernel-audit targets were last sent
    /// ([`super::kernel_audit`] follows the marks).
    pub changed: bool,
}

impl Marker {
    pub fn new(
        shared: Arc<Shared>,
        root: Arc<Root>,
        perm: Arc<PermGroup>,
        notify: Arc<Fanotify>,
        threads: usize,
    ) -> Marker {
        Marker {
            shared,
            root,
            perm,
            notify,
            threads,
            changed: false,
        }
    }

    /// Walk (without hashing) and mark every entry and the directories that lead to them;
    /// marks no longer wanted are removed. The new set is built aside and swapped in whole,
    /// so events keep resolving against the old one meanwhile.
    pub fn place(&mut self) -> Result<()> {
        let snap = self.shared.snap();
        let mut new = Watched::build(self.wanted(&snap.policy));
        let mut perm_inodes = HashMap::new();
        let mut failed = Vec::new();
        let mut path = Vec::new();
        for i in 0..new.len() {
            let Some((p, m, span)) = new.at(i) else { break };
            path.clear();
            path.extend_from_slice(p);
            let prev = read(&self.shared.watched).marks(&path);
            match self.apply(&path, prev, m) {
                Ok(applied) => {
                    if let Some(h) = applied.handle {
                        new.add_handle(&h, span);
                    }
                    if m.perm != 0 {
                        if let Some(ino) = applied.inode {
                            perm_inodes.insert(ino, path.clone());
                        }
                    }
                }
                Err(e) => {
                    if failed.len() < 20 {
                        tracing::warn!("cannot watch {}: {e}", Name(&path));
                    }
                    failed.push(path.clone());
                }
            }
        }
        for p in &failed {
            let _ = new.remove(p);
        }
        let failures = failed.len();
        let stale: Vec<(Vec<u8>, Marks)> = read(&self.shared.watched)
            .iter()
            .filter(|(p, _)| new.index(p).is_none())
            .map(|(p, m)| (p.to_vec(), m))
            .collect();
        for (path, m) in stale {
            let _ = self.apply(&path, m, Marks::default());
        }
        if failures > 20 {
            tracing::warn!("{failures} entries could not be watched in all");
        }
        *write(&self.shared.watched) = new;
        *write(&self.shared.perm_inodes) = perm_inodes;
        self.count();
        self.changed = true;
        Ok(())
    }

    /// Re-mark after the tree's shape changed (a new directory); a failure is a warning.
    pub fn place_quietly(&mut self) {
        if let Err(e) = self.place() {
            tracing::warn!("re-marking: {e}");
        }
    }

    /// The policy snapshot in force.
    pub fn snap(&self) -> Arc<super::reload::Snapshot> {
        self.shared.snap()
    }

    /// The marks `path` carries now.
    pub fn of(&self, path: &[u8]) -> Marks {
        read(&self.shared.watched).marks(path)
    }

    /// Mark one path (a new or replaced entry) and index it.
    pub fn mark_one(&mut self, path: &[u8], to: Marks) -> std::io::Result<()> {
        // The kernel-audit rules follow the marked files.
        self.changed = true;
        let from = self.of(path);
        let applied = self.apply(path, from, to)?;
        let mut w = write(&self.shared.watched);
        let span = w.set(path, to);
        if let (Some(h), Some(span)) = (applied.handle, span) {
            w.add_handle(&h, span);
        }
        drop(w);
        if let Some(ino) = applied.inode {
            if to.perm != 0 {
                write(&self.shared.perm_inodes).insert(ino, path.to_vec());
            } else if from.perm != 0 {
                write(&self.shared.perm_inodes).remove(&ino);
            }
        }
        self.count();
        Ok(())
    }

    /// Mark `path`, now an entry of type `ftype`, as the policy in force wants (best effort:
    /// a replaced entry is a new inode and needs its marks again).
    pub fn mark_as(&mut self, path: &[u8], ftype: FileType) {
        let want = marks_for(ftype, self.shared.snap().policy.classify(path));
        let _ = self.mark_one(path, want);
    }

    /// `path` is gone: drop it from the watched set (its inode took its marks with it).
    pub fn forget(&mut self, path: &[u8]) {
        if write(&self.shared.watched).remove(path) {
            self.changed = true;
        }
    }

    fn count(&self) {
        let (n, p) = read(&self.shared.watched)
            .iter()
            .fold((0, 0), |(n, p), (_, m)| {
                (n + u64::from(m.notify != 0), p + u64::from(m.perm != 0))
            });
        self.shared.stats.marks_notify.store(n, Ordering::Relaxed);
        self.shared.stats.marks_perm.store(p, Ordering::Relaxed);
    }

    fn wanted(&self, policy: &CompiledPolicy) -> Builder {
        let want = Mutex::new(Builder::default());
        // The nearest existing directory of each base, so a base created later is seen.
        for base in policy.bases() {
            let mut dir: &[u8] = &base;
            loop {
                if let Ok(fd) = self
                    .root
                    .resolve(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC)
                {
                    drop(fd);
                    lock(&want).add(
                        dir,
                        Marks {
                            notify: NOTIFY_DIR,
                            perm: 0,
                        },
                    );
                    break;
                }
                let (parent, _) = crate::fsroot::split_parent(dir);
                if parent == dir || parent.is_empty() {
                    break;
                }
                dir = parent;
            }
        }
        walk::walk(
            &self.root,
            policy,
            WalkOptions {
                threads: self.threads,
                hash: walk::Hashing::Off,
            },
            &|item| {
                if let Item::Entry(e) = item {
                    let m = marks_for(e.ftype, policy.classify(&e.path));
                    let (parent, _) = crate::fsroot::split_parent(&e.path);
                    let mut w = lock(&want);
                    w.add(&e.path, m);
                    w.add_dir(
                        parent,
                        Marks {
                            notify: NOTIFY_DIR,
                            perm: 0,
                        },
                    );
                }
            },
        );
        want.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Move `path` from marks `from` to marks `to` (race-free: through an `O_PATH` fd).
    /// Returns the handle (when it now has notification marks) and the inode.
    fn apply(&self, path: &[u8], from: Marks, to: Marks) -> std::io::Result<Applied> {
        let fd = self
            .root
            .resolve(path, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC)?;
        let st = rustix::fs::fstat(&fd)?;
        let ftype = st.st_mode & 0o170000;
        if ftype != 0o040000 && ftype != 0o100000 {
            // Symlinks and specials: watched via their directory.
            return Ok(Applied::default());
        }
        let io = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
        move_mask(&self.notify, fd.as_fd(), from.notify, to.notify).map_err(io)?;
        move_mask(&self.perm.fan, fd.as_fd(), from.perm, to.perm).map_err(io)?;
        let handle = if to.notify != 0 {
            Some(fanotify::handle_of(fd.as_fd())?)
        } else {
            None
        };
        Ok(Applied {
            handle,
            inode: Some((st.st_dev, st.st_ino)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CompiledPolicy {
        crate::policy::parse_str(
            "version: 1\ngroups:\n\
             \x20 - name: keys\n    class: private-key\n    paths: [/k]\n    access: {mode: enforce, allow: [{exe: /usr/bin/true}]}\n\
             \x20 - name: seen\n    class: private-key\n    paths: [/s]\n    access: {mode: audit, allow: [{exe: /usr/bin/true}]}\n\
             \x20 - name: libs\n    class: provider-binary\n    paths: [/p]\n    access: {mode: enforce, allow: [{exe: /usr/bin/true}]}\n\
             \x20 - name: conf\n    class: kms-config\n    paths: [/c]\n",
            b"t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn permission_marks_go_on_files_of_enforce_and_audit_groups_only() {
        let p = policy();
        let g = |n: &str| p.group(n);
        let open = libc::FAN_OPEN_PERM as u32;
        let exec = libc::FAN_OPEN_EXEC_PERM as u32;
        assert_eq!(marks_for(FileType::File, g("keys")).perm, open);
        assert_eq!(marks_for(FileType::File, g("seen")).perm, open);
        assert_eq!(marks_for(FileType::File, g("libs")).perm, open | exec);
        assert_eq!(marks_for(FileType::File, g("conf")).perm, 0);
        assert_eq!(marks_for(FileType::File, None).perm, 0);
        // Directories: namespace events only, never a permission mark, whatever the group.
        for n in ["keys", "libs", "conf"] {
            let m = marks_for(FileType::Dir, g(n));
            assert_eq!((m.notify, m.perm), (NOTIFY_DIR, 0), "{n}");
        }
        // Files are watched for content and attribute changes.
        assert_eq!(marks_for(FileType::File, g("conf")).notify, NOTIFY_FILE);
    }

    #[test]
    fn symlinks_and_special_files_are_never_marked() {
        let p = policy();
        for t in [
            FileType::Symlink,
            FileType::Fifo,
            FileType::Socket,
            FileType::CharDevice,
            FileType::BlockDevice,
        ] {
            assert_eq!(marks_for(t, p.group("keys")), Marks::default(), "{t:?}");
        }
    }
}
