//! Who caused an event, learnt in the order of trust DESIGN asks for: what the kernel gives
//! with the event first, `/proc` second, and nothing made up.
//!
//! - Permission events: the opener is blocked until answered, so `/proc` is read while it
//!   cannot exit or `exec` ([`Source::Blocked`]). [`for_decision`] reads only what `decide`
//!   needs; [`complete`] the rest, before answering, when an alert will be written.
//! - Notification events: the process may be gone. With `FAN_REPORT_PIDFD` the kernel says
//!   so (`FAN_NOPIDFD`), and otherwise gives a pidfd that [`Notify::who`] uses to check that
//!   the `/proc/PID` it read still belonged to that process afterwards (pids are reused): a
//!   process reaped meanwhile yields the pid alone ([`Source::Gone`]), never another
//!   process's identity.
//! - Kernel denials: the audit record's uid, euid, auid, exe and title ([`Source::Audit`]);
//!   `/proc` only to lengthen a title the kernel cut at 128 bytes ([`lengthen_title`]).
//!
//! Must not: resolve user names (the alert thread does, NSS may block), or hash anything.

use super::fanotify::PidRef;
use crate::policy::Group;
use crate::proc::{self, ExeId, Identity, ProcessInfo, Source};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// What `decide` needs to know about an opener, from a group's allow rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub uids: bool,
    pub parent: bool,
    pub args: bool,
}

/// Read only what deciding on `group` needs: the executable's identity (one `statx`; a
/// trusted inode names its path without a `readlink`), and uids, parent executable and
/// arguments only when a candidate allow rule constrains them.
pub fn for_decision(
    pid: u32,
    group: &Group,
    trusted_path: impl Fn(&ExeId) -> Option<Vec<u8>>,
    constrained: impl Fn(usize) -> bool,
) -> Identity {
    let mut who = Identity::pid_only(pid, Source::Blocked);
    who.exe_id = proc::exe_id(pid);
    who.info.exe = who
        .exe_id
        .as_ref()
        .and_then(&trusted_path)
        .or_else(|| proc::exe_path(pid));
    let exe = who.info.exe.as_deref().unwrap_or(b"");
    let mut needs = Needs::default();
    for (i, r) in group.access.allow.iter().enumerate() {
        if r.exe != exe {
            continue;
        }
        needs.uids |= constrained(i);
        needs.parent |= !r.parent_exe.is_empty() || !r.usual_parent_exe.is_empty();
        needs.args |= r.args.is_some();
    }
    if needs.uids || needs.parent {
        if let Some((uid, euid, ppid)) = proc::status_ids(pid) {
            who.info.uid = Some(uid);
            who.info.euid = Some(euid);
            who.info.ppid = ppid;
        }
        if needs.parent {
            if let Some(ppid) = who.info.ppid.filter(|&p| p > 0) {
                who.parent_exe = proc::exe_path(ppid);
            }
        }
    }
    if needs.args {
        who.args = proc::args(pid);
    }
    who
}

/// Everything an alert reports (uids, start time, comm, login uid, command line, parent),
/// added to what the decision already read.
pub fn complete(who: &Identity) -> Identity {
    let mut full = who.clone();
    proc::read_info(&mut full.info);
    if full.parent_exe.is_none() {
        if let Some(ppid) = full.info.ppid.filter(|&p| p > 0) {
            full.parent_exe = proc::exe_path(ppid);
        }
    }
    full
}

/// How long a notification event's identity is reused for the next events of the same pid
/// (a writer's `write`, `close` and `rename` come as separate events).
const REUSE: Duration = Duration::from_millis(100);

struct Cached {
    at: Instant,
    pidfd: Option<OwnedFd>,
    info: ProcessInfo,
}

/// Identities of notification events, cached per pid while the pidfd shows the same process.
#[derive(Default)]
pub struct Notify {
    cache: HashMap<u32, Cached>,
}

impl Notify {
    /// The identity of the process behind a notification event.
    pub fn who(&mut self, pid: u32, pidfd: PidRef) -> ProcessInfo {
        let now = Instant::now();
        if let Some(c) = self.cache.get(&pid) {
            let same = match &c.pidfd {
                Some(fd) => proc::pidfd_still(fd.as_fd(), pid),
                None => true,
            };
            if same && now.duration_since(c.at) < REUSE && !matches!(pidfd, PidRef::Exited) {
                return c.info.clone();
            }
        }
        let (info, fd) = match pidfd {
            // Gone before the event was read: /proc/PID may already be someone else.
            PidRef::Exited => (ProcessInfo::pid_only(pid, Source::Gone), None),
            PidRef::Fd(fd) => {
                let info = read(pid);
                if proc::pidfd_still(fd.as_fd(), pid) {
                    (info, Some(fd))
                } else {
                    // Reaped while we read: what we read may be another process's.
                    (ProcessInfo::pid_only(pid, Source::Gone), None)
                }
            }
            // No pidfd from this kernel: /proc unverified, as well as it can be done.
            PidRef::NotReported | PidRef::Failed | PidRef::Number(_) => {
                let info = read(pid);
                let info = if info.exe.is_none() && info.uid.is_none() {
                    ProcessInfo::pid_only(pid, Source::Gone)
                } else {
                    info
                };
                (info, None)
            }
        };
        if self.cache.len() > 256 {
            self.cache.retain(|_, c| now.duration_since(c.at) < REUSE);
        }
        if info.source != Source::Gone {
            self.cache.insert(
                pid,
                Cached {
                    at: now,
                    pidfd: fd,
                    info: info.clone(),
                },
            );
        } else {
            self.cache.remove(&pid);
        }
        info
    }
}

/// What `/proc` shows of `pid` now (no executable identity or parent: an alert about a change
/// does not need them).
fn read(pid: u32) -> ProcessInfo {
    let mut info = ProcessInfo::pid_only(pid, Source::Procfs);
    proc::read_info(&mut info);
    info
}

/// A kernel-denial title cut at the kernel's 128 bytes, lengthened from `/proc` when that
/// still shows the same program (same exe) with a command line that starts with the title.
pub fn lengthen_title(p: &mut ProcessInfo) {
    if !p.cmdline_truncated {
        return;
    }
    let Some(title) = p.cmdline.clone() else {
        return;
    };
    if proc::exe_path(p.pid) != p.exe {
        return;
    }
    let mut live = ProcessInfo::pid_only(p.pid, Source::Procfs);
    live.exe = p.exe.clone();
    proc::read_info(&mut live);
    if let Some(full) = live.cmdline {
        if full.len() > title.len() && full.starts_with(&title) {
            p.cmdline = Some(full);
            p.cmdline_truncated = live.cmdline_truncated;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exited_process_is_the_pid_alone() {
        let mut n = Notify::default();
        let me = std::process::id();
        let info = n.who(me, PidRef::Exited);
        assert_eq!(info, ProcessInfo::pid_only(me, Source::Gone));
    }

    #[test]
    fn a_live_process_is_read_and_checked_by_its_pidfd() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pid = child.id();
        let open = || {
            rustix::process::pidfd_open(
                rustix::process::Pid::from_raw(pid as i32).unwrap(),
                rustix::process::PidfdFlags::empty(),
            )
            .unwrap()
        };
        let mut n = Notify::default();
        let info = n.who(pid, PidRef::Fd(open()));
        assert_eq!(info.source, Source::Procfs);
        assert_eq!(info.exe.as_deref(), Some(&b"/usr/bin/sleep"[..]));
        assert_eq!(info.uid, Some(rustix::process::getuid().as_raw()));
        let fd = open();
        child.kill().unwrap();
        child.wait().unwrap();
        // Reaped: the cache no longer vouches for it, and /proc/PID is not read.
        let info = n.who(pid, PidRef::Fd(fd));
        assert_eq!(info, ProcessInfo::pid_only(pid, Source::Gone));
    }
}
