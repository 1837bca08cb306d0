//! The permission path: the `perm` thread reads the permission group's events, decides each
//! with [`decide`] and answers the kernel; every answer of the daemon goes through
//! [`answer`], which counts it, so each event is answered and counted exactly once.
//!
//! Order per event: own pid → allow at once; the group from the event fd's inode (the
//! narrow-inode index of [`super::marks`]), the opener's identity from `/proc` and the
//! in-memory caches; `decide`; answer; only then queue the alert (never blocking: a full
//! queue counts a dropped alert). An event whose verdict needs an executable hash is parked
//! in [`Waiting`] for the `exe-hash` thread and answered per `--on-stall` if that takes
//! longer than `--stall`.
//! Must not: do any file I/O, hashing, NSS lookup or alert I/O before the answer; block on a
//! channel; take a lock that slow code holds across I/O. The opener waits on this thread,
//! and so may the processes the alert sinks depend on (journald, a local syslog daemon).

use super::exe::HashJob;
use super::fanotify::PermGroup;
use super::identity;
use super::shared::{lock, queue_alert, read, Shared};
use super::OnStall;
use crate::alert::{Alert, Kind, Outcome};
use crate::baseline::diff::Severity;
use crate::decide::{decide, OpenKind, Verdict};
use crate::policy::schema::AccessMode;
use crate::policy::Group;
use crate::proc::Identity;
use nix::sys::fanotify::{FanotifyEvent, MaskFlags};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A permission event read but not answered yet: its decision waits for an executable hash.
pub(super) struct Pending {
    pub event: FanotifyEvent,
    pub since: Instant,
    /// The group is in audit mode: a stall is answered allow, whatever `--on-stall` says.
    pub audit_mode: bool,
}

/// The events waiting for a hash, by event fd. Whoever removes an event answers it.
#[derive(Default)]
pub(super) struct Waiting(Mutex<HashMap<i32, Pending>>);

impl Waiting {
    pub fn len(&self) -> usize {
        lock(&self.0).len()
    }

    fn is_empty(&self) -> bool {
        lock(&self.0).is_empty()
    }

    fn insert(&self, fd: i32, p: Pending) {
        lock(&self.0).insert(fd, p);
    }

    pub fn remove(&self, fd: i32) -> Option<Pending> {
        lock(&self.0).remove(&fd)
    }

    /// Take every event waiting for `stall` or longer.
    fn take_expired(&self, stall: Duration) -> Vec<Pending> {
        let mut p = lock(&self.0);
        let old: Vec<i32> = p
            .iter()
            .filter(|(_, v)| v.since.elapsed() >= stall)
            .map(|(k, _)| *k)
            .collect();
        old.into_iter().filter_map(|k| p.remove(&k)).collect()
    }

    fn drain(&self) -> Vec<Pending> {
        lock(&self.0).drain().map(|(_, v)| v).collect()
    }
}

/// Answer a permission event and count it (exactly once per event).
pub(super) fn answer(s: &Shared, perm: &PermGroup, ev: &FanotifyEvent, allow: bool) {
    perm.respond(ev, allow);
    if allow {
        s.stats.allowed.fetch_add(1, Ordering::Relaxed);
    } else {
        s.stats.denied.fetch_add(1, Ordering::Relaxed);
    }
}

fn event_path(ev: &FanotifyEvent) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    let fd = ev.fd()?;
    std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .ok()
    .map(|p| p.into_os_string().into_vec())
}

/// Answer an open whose verdict comes with an alert (a denial, an audited or unusual open):
/// read the opener's full identity while it still waits (procfs only), answer, then queue.
#[allow(clippy::too_many_arguments)]
pub(super) fn answer_and_alert(
    s: &Shared,
    perm: &PermGroup,
    alerts: &SyncSender<Box<Alert>>,
    ev: &FanotifyEvent,
    allow: bool,
    group: &Group,
    path: Vec<u8>,
    who: &Identity,
    severity: Severity,
    reason: &crate::decide::Reason,
    kind: OpenKind,
) {
    let who = identity::complete(who);
    answer(s, perm, ev, allow);
    let outcome = if allow {
        Outcome::Success
    } else {
        Outcome::Denied
    };
    queue_alert(
        s,
        alerts,
        super::access::access_alert(group, path, &who, outcome, severity, reason, kind),
    );
}

/// The permission thread: answer first, then queue the record.
pub(super) fn perm_loop(
    s: &Shared,
    perm: &PermGroup,
    alerts: &SyncSender<Box<Alert>>,
    hash: &SyncSender<HashJob>,
    on_stall: OnStall,
    stall: Duration,
    spin: Duration,
) {
    use rustix::event::{poll, PollFd, PollFlags};
    let fan = &perm.fan;
    let tick = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    // After a burst, keep reading without sleeping for a moment: a process opening files
    // in a loop then finds the listener awake instead of paying a scheduler wake-up per open.
    let mut busy_until = Instant::now();
    let mut polls = 0u32;
    while !s.stopping() {
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(1024) || !s.pending.is_empty() {
            expire_pending(s, perm, alerts, on_stall, stall);
        }
        let events = match fan.read_events() {
            Ok(v) if !v.is_empty() => v,
            Ok(_) | Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {
                if Instant::now() < busy_until {
                    std::hint::spin_loop();
                    continue;
                }
                let mut fds = [PollFd::new(fan, PollFlags::IN)];
                let _ = poll(&mut fds, Some(&tick));
                expire_pending(s, perm, alerts, on_stall, stall);
                continue;
            }
            Err(e) => {
                tracing::error!("reading permission events: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        busy_until = Instant::now() + spin;
        for ev in events {
            let t0 = Instant::now();
            let pid = ev.pid().unsigned_abs();
            if pid == s.self_pid {
                answer(s, perm, &ev, true);
                s.stats.allowed_self.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let kind = if ev.mask().contains(MaskFlags::FAN_OPEN_EXEC_PERM) {
                OpenKind::Exec
            } else {
                OpenKind::Open
            };
            let snap = s.snap();
            let marked = ev
                .fd()
                .and_then(|fd| rustix::fs::fstat(fd).ok())
                .and_then(|st| read(&s.perm_inodes).get(&(st.st_dev, st.st_ino)).cloned());
            let Some(path) = marked.or_else(|| event_path(&ev)) else {
                answer(s, perm, &ev, true);
                continue;
            };
            let Some(group) = snap.policy.classify(&path) else {
                // A mark left on an inode the policy no longer claims.
                answer(s, perm, &ev, true);
                continue;
            };
            let who = identity::for_decision(
                pid,
                group,
                |id| snap.by_id.get(id).cloned(),
                |i| snap.trust.uids.contains_key(&(group.name.clone(), i)),
            );
            let cached = who.exe_id.and_then(|id| s.exe_cache.get(&id));
            let verdict = decide(s.self_pid, kind, group, &who, &snap.trust, cached);
            match verdict {
                Verdict::Allow { alert: None } => {
                    answer(s, perm, &ev, true);
                    s.stats.observe_latency(t0.elapsed().as_micros() as u64);
                }
                // The opener is blocked until answered, so this is the one moment its identity
                // is certain to be readable: take it, then answer.
                Verdict::Allow {
                    alert: Some((sev, reason)),
                } => {
                    answer_and_alert(
                        s, perm, alerts, &ev, true, group, path, &who, sev, &reason, kind,
                    );
                    s.stats.observe_latency(t0.elapsed().as_micros() as u64);
                }
                Verdict::Deny { severity, reason } => {
                    answer_and_alert(
                        s, perm, alerts, &ev, false, group, path, &who, severity, &reason, kind,
                    );
                    s.stats.observe_latency(t0.elapsed().as_micros() as u64);
                }
                Verdict::NeedExeHash => {
                    let Some(fd) = ev.fd().map(|f| std::os::fd::AsRawFd::as_raw_fd(&f)) else {
                        continue;
                    };
                    let job = HashJob {
                        fd,
                        kind,
                        path,
                        group: group.name.clone(),
                        who,
                    };
                    s.pending.insert(
                        fd,
                        Pending {
                            event: ev,
                            since: t0,
                            audit_mode: group.access.mode == AccessMode::Audit,
                        },
                    );
                    if hash.try_send(job).is_err() {
                        // The hasher is saturated: this is a stall.
                        if let Some(p) = s.pending.remove(fd) {
                            answer_stalled(s, perm, alerts, p, on_stall);
                        }
                    }
                }
            }
        }
    }
}

fn expire_pending(
    s: &Shared,
    perm: &PermGroup,
    alerts: &SyncSender<Box<Alert>>,
    on_stall: OnStall,
    stall: Duration,
) {
    for p in s.pending.take_expired(stall) {
        answer_stalled(s, perm, alerts, p, on_stall);
    }
}

fn answer_stalled(
    s: &Shared,
    perm: &PermGroup,
    alerts: &SyncSender<Box<Alert>>,
    p: Pending,
    on_stall: OnStall,
) {
    // Audit mode never refuses an open, stalled or not.
    let allow = p.audit_mode || on_stall == OnStall::Allow;
    answer(s, perm, &p.event, allow);
    s.stats.stalled.fetch_add(1, Ordering::Relaxed);
    let mut a = Alert::new(Kind::Health, Severity::Medium);
    a.rule = Some("decision-stalled".into());
    a.path = event_path(&p.event);
    a.outcome = Some(if allow {
        Outcome::Success
    } else {
        Outcome::Denied
    });
    a.detail.insert(
        "message".into(),
        format!(
            "no decision within {} ms; answered {}{}",
            p.since.elapsed().as_millis(),
            if allow { "allow" } else { "deny" },
            if p.audit_mode {
                " (audit mode)"
            } else {
                " (on_stall)"
            }
        )
        .into(),
    );
    queue_alert(s, alerts, a);
}

/// At shutdown: answer every event still waiting, per `--on-stall` (audit mode: allow).
pub(super) fn answer_all_pending(s: &Shared, perm: &PermGroup, on_stall: OnStall) {
    for p in s.pending.drain() {
        answer(
            s,
            perm,
            &p.event,
            p.audit_mode || on_stall == OnStall::Allow,
        );
    }
}
