//! The checker thread: the one place file events are routed. It takes [`Work`] from the
//! inputs, coalesces a path's events until they settle (a writer still writing is waited
//! for, at most [`MAX_DELAY`]), then checks each settled path in the order its first event
//! came: capture it now, keep its marks in step, turn its events and the capture into alerts
//! ([`super::changes`]), restore it when its group asks, and remember what it now is
//! ([`super::drift`]). Rescans ([`super::reconcile`]) and reloads ([`super::reload`]) run
//! here too, so the baseline, the marks and the drift state have a single writer.
//! Each action lives in its own module; this file only decides which runs when.
//! Must not: answer permission events or take part in a decision (a permission event never
//! waits on this thread); block the inputs (they `try_send`, and a full queue is a rescan).

use super::changes::{self, Observed};
use super::drift::Drift;
use super::kernel_audit::{AuditLink, AUDIT_UPDATE_EVERY};
use super::marks::{marks_for, Marker, NAMESPACE};
use super::paths::Marks;
use super::restore::{restores, Restorer};
use super::shared::{Shared, Work};
use super::touch::{Departures, Touch};
use super::Config;
use crate::alert::Alert;
use crate::baseline::diff::diff;
use crate::baseline::entry::{Entry, FileType};
use crate::baseline::walk;
use crate::fsroot::Root;
use crate::sanitize::Name;
use crate::store::Store;
use crate::users::Names;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Re-check a file still being written at most this often.
const WRITE_SETTLE: Duration = Duration::from_millis(50);
/// ... but never later than this after its first event.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// The checker's state: the actions it drives, and the events waiting to settle.
pub(super) struct Checker {
    pub shared: Arc<Shared>,
    pub root: Arc<Root>,
    pub store: Store,
    pub cfg: Config,
    pub alert: SyncSender<Box<Alert>>,
    pub marks: Marker,
    pub drift: Drift,
    pub restorer: Restorer,
    pub audit: AuditLink,
    /// Coalescing: path → its events since the last check.
    pending: HashMap<Vec<u8>, Touch>,
    /// Arrival order of pending paths.
    next_seq: u64,
    /// Departures reported before their namespace event came.
    departed: Departures,
    /// Owner and group names for alert details.
    pub names: Names,
}

impl Checker {
    pub fn new(
        shared: Arc<Shared>,
        root: Arc<Root>,
        store: Store,
        cfg: Config,
        alert: SyncSender<Box<Alert>>,
        marks: Marker,
        restorer: Restorer,
    ) -> Checker {
        Checker {
            drift: Drift::load(&cfg.db),
            names: Names::for_root(&root),
            shared,
            root,
            store,
            cfg,
            alert,
            marks,
            restorer,
            audit: AuditLink::none(),
            pending: HashMap::new(),
            next_seq: 0,
            departed: Departures::default(),
        }
    }

    /// Take work and check what settled until the daemon stops.
    pub fn run(&mut self, work: Receiver<Work>) {
        loop {
            if self.shared.stopping() {
                break;
            }
            let now = Instant::now();
            let next_due = self.pending.values().map(due).min();
            let wait = next_due
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            let wait = if self.marks.changed || self.drift.is_dirty() {
                wait.min(AUDIT_UPDATE_EVERY)
            } else {
                wait
            };
            match work.recv_timeout(wait) {
                Ok(w) => {
                    self.take(w);
                    // Drain what is already queued before checking anything.
                    while let Ok(w) = work.try_recv() {
                        self.take(w);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.check_due();
            // The kernel-audit rules follow the marked files.
            if self.marks.changed && self.audit.due() {
                self.marks.changed = !self.audit.send(&self.shared);
            }
            if self.drift.save_due() {
                self.drift.save();
            }
        }
    }

    fn take(&mut self, w: Work) {
        match w {
            Work::Touch { path, mask, who } => {
                self.shared.stats.queued.fetch_sub(1, Ordering::Relaxed);
                let now = Instant::now();
                let seq = self.next_seq;
                let t = self
                    .pending
                    .entry(path)
                    .or_insert_with(|| Touch::new(seq, now));
                if t.seq == seq {
                    self.next_seq += 1;
                }
                t.add(now, mask, who.map(|b| *b));
            }
            Work::Rescan(why) => self.rescan(why),
            Work::Reload => self.reload(),
        }
    }

    /// Check every path whose events have settled, in the order their first events came:
    /// what happened first is reported first.
    fn check_due(&mut self) {
        let now = Instant::now();
        let mut due: Vec<(u64, Vec<u8>)> = self
            .pending
            .iter()
            .filter(|(_, t)| due(t) <= now)
            .map(|(p, t)| (t.seq, p.clone()))
            .collect();
        due.sort_unstable();
        for (_, path) in due {
            if let Some(t) = self.pending.remove(&path) {
                self.check_path(&path, t);
            }
        }
    }

    /// Check `path` as if it had just had an event (rescans).
    pub(super) fn check_now(&mut self, path: &[u8]) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.check_path(path, Touch::new(seq, Instant::now()));
    }

    pub(super) fn baseline_entry(&self, path: &[u8]) -> Option<Entry> {
        match self.store.entry(path) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("baseline read for {}: {e}", Name(path));
                None
            }
        }
    }

    /// Capture `path` now and alert on what its events and the capture show: every
    /// creation and deletion the kernel reported (even of a file already gone again), and
    /// any difference from what was last observed.
    fn check_path(&mut self, path: &[u8], t: Touch) {
        self.shared.stats.checks.fetch_add(1, Ordering::Relaxed);
        let snap = self.shared.snap();
        let group = snap.policy.classify(path);
        if group.is_none() {
            // A new directory that may hold watched entries: mark and scan everything.
            if t.mask & NAMESPACE != 0 && t.mask & libc::FAN_ONDIR != 0 {
                self.marks.place_quietly();
                self.rescan("a watched directory gained a subdirectory");
            }
            return;
        }
        let live = match walk::capture_path(&self.root, &snap.policy, path) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("{e}");
                return;
            }
        };
        // Keep the marks in step: a file replaced by rename is a new inode.
        if let Some(l) = &live {
            let want = marks_for(l.ftype, group);
            let have = self.marks.of(path);
            let moved = t.mask & (NAMESPACE | libc::FAN_DELETE_SELF | libc::FAN_MOVE_SELF) != 0;
            if (moved || have != want)
                && self.marks.mark_one(path, want).is_ok()
                && l.ftype == FileType::Dir
                && have == Marks::default()
            {
                // A new directory: its children may predate the mark.
                self.marks.place_quietly();
                self.rescan("a watched directory appeared");
            }
        } else {
            self.marks.forget(path);
        }
        let Some(g) = group else { return };
        let base = self.baseline_entry(path);
        let prev = self.drift.last_observed(path, || base.clone());
        let mut t = t;
        self.departed.pair(path, prev.is_some(), &mut t);
        let observed = Observed {
            path,
            group: g,
            base: base.as_ref(),
            prev: prev.as_ref(),
            live: live.as_ref(),
        };
        let alerts = changes::alerts(&observed, &t, &mut self.names);
        tracing::trace!(
            "check {} mask {:#x} ops {:?} prev {} live {} -> {:?}",
            Name(path),
            t.mask,
            t.ops.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            prev.is_some(),
            live.is_some(),
            alerts.iter().map(|a| a.kind).collect::<Vec<_>>()
        );
        self.departed.note(path, prev.is_some(), live.is_some(), &t);
        if alerts.is_empty() && prev.is_some() == live.is_some() {
            return;
        }
        for a in alerts {
            let _ = self.alert.send(Box::new(a));
        }
        let vs_base_empty = match (&base, &live) {
            (Some(b), Some(l)) => diff(b, l, g.compare).is_empty(),
            _ => false,
        };
        let differs_from_base = match (&base, &live) {
            (Some(_), None) => true,
            (Some(_), Some(_)) => !vs_base_empty,
            _ => false,
        };
        if differs_from_base && restores(g) {
            if let Some(b) = &base {
                if self.restorer.try_restore(
                    &mut self.marks,
                    path,
                    b,
                    g.compare,
                    g.class,
                    g.name.clone(),
                ) {
                    self.drift.set(path, None, g, true);
                    return;
                }
            }
        }
        // Update what "last observed" means for this path.
        let same_as_base = match (&base, &live) {
            (None, None) => true,
            (Some(_), Some(_)) => vs_base_empty,
            _ => false,
        };
        self.drift.set(path, live, g, same_as_base);
    }
}

/// When a path's events have settled.
fn due(t: &Touch) -> Instant {
    // Still being written (modified, not closed): wait for the writer to settle.
    let settling = t.mask & libc::FAN_MODIFY != 0 && t.mask & libc::FAN_CLOSE_WRITE == 0;
    if settling {
        (t.last + WRITE_SETTLE).min(t.first + MAX_DELAY)
    } else {
        t.last
    }
}
