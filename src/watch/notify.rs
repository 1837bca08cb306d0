//! Notifications: the `notify` thread reads the notification group, turns each FID record
//! into the path it names (file handle → watched path, or directory handle + name), learns
//! who caused it (pidfd-checked, [`identity::Notify`]), and queues one [`Work::Touch`] for the
//! checker. A kernel queue overflow, or a full checker queue, becomes one rescan request:
//! a lost event degrades to a rescan, never to a lost change.
//! Must not: hash, capture, read the baseline or block on the checker's queue; events of the
//! daemon's own pid are dropped here (its own reads and restores are not changes to report).

use super::fanotify;
use super::identity;
use super::marks::NAMESPACE;
use super::shared::{queue_alert, read, Shared, Work};
use crate::alert::{Alert, Kind};
use crate::baseline::diff::Severity;
use crate::sanitize::Name;
use nix::sys::fanotify::Fanotify;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

/// The notification thread: map events to paths, identify who caused them, queue them.
pub(super) fn notify_loop(
    s: &Shared,
    fan: &Fanotify,
    alerts: &SyncSender<Box<Alert>>,
    work: &SyncSender<Work>,
) {
    use rustix::event::{poll, PollFd, PollFlags};
    let tick = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut overflowed = false;
    let mut who_of = identity::Notify::default();
    while !s.stopping() {
        if overflowed && work.try_send(Work::Rescan("queue overflow")).is_ok() {
            overflowed = false;
        }
        let mut fds = [PollFd::new(fan, PollFlags::IN)];
        if poll(&mut fds, Some(&tick)).unwrap_or(0) == 0 {
            continue;
        }
        let n = match rustix::io::read(fan.as_fd(), &mut buf) {
            Ok(n) => n,
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!("reading notification events: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let (events, bad) = fanotify::parse_owned(&buf[..n]);
        if let Some(b) = bad {
            tracing::error!("malformed fanotify event: {}", b.0);
        }
        let snap = s.snap();
        for mut ev in events {
            s.stats.notify_events.fetch_add(1, Ordering::Relaxed);
            if ev.mask & libc::FAN_Q_OVERFLOW != 0 {
                s.stats.overflows.fetch_add(1, Ordering::Relaxed);
                let mut a = Alert::new(Kind::Overflow, Severity::Medium);
                a.detail.insert(
                    "message".into(),
                    "the kernel's event queue overflowed; every watched entry is rescanned".into(),
                );
                queue_alert(s, alerts, a);
                overflowed = true;
                continue;
            }
            if ev.pid.unsigned_abs() == s.self_pid {
                continue;
            }
            let Some(path) = resolve_event(s, &ev) else {
                continue;
            };
            let group = snap.policy.classify(&path);
            let namespace = ev.mask & NAMESPACE != 0;
            if group.is_none() {
                // A new directory that could hold watched entries must be marked and scanned.
                let is_dir = ev.mask & libc::FAN_ONDIR != 0;
                let comps: Vec<&[u8]> = crate::policy::glob::split(&path).collect();
                if !(namespace && is_dir && snap.policy.could_match_within_comps(&comps)) {
                    continue;
                }
            }
            tracing::trace!("event {:#x} pid {} {}", ev.mask, ev.pid, Name(&path));
            let who = (ev.pid > 0)
                .then(|| who_of.who(ev.pid.unsigned_abs(), std::mem::take(&mut ev.pidfd)));
            s.stats.queued.fetch_add(1, Ordering::Relaxed);
            if work
                .try_send(Work::Touch {
                    path,
                    mask: ev.mask,
                    who: who.map(Box::new),
                })
                .is_err()
            {
                s.stats.queued.fetch_sub(1, Ordering::Relaxed);
                overflowed = true;
            }
        }
    }
}

/// The path an event names: a namespace event (create, delete, move) by its directory's
/// handle and the entry name; any other by the object's own handle, else its directory's.
fn resolve_event(s: &Shared, ev: &fanotify::Event) -> Option<Vec<u8>> {
    let w = read(&s.watched);
    let by_dir = || {
        let (dh, name) = ev.dir.as_ref()?;
        let dir = w.by_handle(dh)?;
        if name.is_empty() || name == b"." {
            return Some(dir.to_vec());
        }
        let mut p = dir.to_vec();
        if !p.ends_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        Some(p)
    };
    if ev.mask & NAMESPACE != 0 {
        return by_dir();
    }
    ev.fid
        .as_ref()
        .and_then(|f| w.by_handle(f).map(<[u8]>::to_vec))
        .or_else(by_dir)
}
