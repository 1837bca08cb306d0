//! Reconciliation and rescans: the daemon's full comparisons of the live tree, run with the
//! one walker ([`crate::baseline::walk`]), the one per-entry comparison
//! ([`crate::baseline::check::compare`]) and the one differ ([`crate::baseline::diff`]) that
//! `verify` uses.
//!
//! - **Reconcile** (at start, before `started`, and silently after a reload): live state vs
//!   the baseline. At start every difference is a `reconciled` alert (saying whether an
//!   earlier run already reported that very state), groups that restore are put back, and
//!   the drift state is rebuilt; after a reload only the drift state is.
//! - **Rescan** (a queue overflow, a new directory): live state vs what was last observed;
//!   each path that differs is checked as if it had an event, so it is reported once, as a
//!   change.
//!
//! The walk streams (memory is bounded by a channel, not by the tree) and the marks are
//! already in place when it starts, so nothing slips between the comparison and the events.
//! Must not: keep a copy of the tree, or report the same state twice.

use super::checker::Checker;
use super::reported::{self, Reported};
use super::restore::restores;
use super::shared::{read, Shared};
use crate::baseline::diff::{diff, Status};
use crate::baseline::entry::Entry;
use crate::baseline::walk::{self, Item, WalkOptions};
use crate::error::Result;
use crate::fsroot::Root;
use crate::policy::{CompareSet, CompiledPolicy};
use std::collections::HashSet;
use std::sync::mpsc;

/// Walk and hash every policy path, handing each live entry to `f` on this thread (the walk
/// runs on its own threads; memory stays bounded by the channel, not the tree).
fn stream_live(root: &Root, threads: usize, policy: &CompiledPolicy, mut f: impl FnMut(Entry)) {
    let (tx, rx) = mpsc::sync_channel::<Item>(1024);
    std::thread::scope(|sc| {
        sc.spawn(move || {
            walk::walk(
                root,
                policy,
                WalkOptions {
                    threads,
                    hash: walk::Hashing::Compare,
                },
                &|item| {
                    let _ = tx.send(item);
                },
            );
        });
        for item in rx {
            match item {
                Item::Entry(e) => f(*e),
                Item::Error(e) => tracing::warn!("{e}"),
            }
        }
    });
}

/// Which paths a walk saw live: watched paths by index, any others by name.
struct Seen {
    watched: Vec<bool>,
    extra: HashSet<Vec<u8>>,
}

impl Seen {
    fn contains(&self, s: &Shared, path: &[u8]) -> bool {
        match read(&s.watched).index(path) {
            Some(i) => self.watched.get(i).copied().unwrap_or(false) || self.extra.contains(path),
            None => self.extra.contains(path),
        }
    }
}

/// Every live entry handed to `on_live`, and which paths were seen. One pass, no copy of
/// the tree.
fn compare_live(
    s: &Shared,
    root: &Root,
    threads: usize,
    policy: &CompiledPolicy,
    mut on_live: impl FnMut(Entry),
) -> Seen {
    let n = read(&s.watched).len();
    let mut seen = Seen {
        watched: vec![false; n],
        extra: HashSet::new(),
    };
    stream_live(root, threads, policy, |live| {
        match read(&s.watched).index(&live.path) {
            Some(i) if i < n => seen.watched[i] = true,
            _ => {
                seen.extra.insert(live.path.clone());
            }
        }
        on_live(live);
    });
    seen
}

impl Checker {
    /// Compare the live state with the baseline. With `report`, every difference is a
    /// `reconciled` alert (and restoring groups are put back); without, only the drift state
    /// is recomputed (after a reload). A `reconciled` alert says whether an earlier run
    /// already reported that very state (`detail.already_reported`), when that is known.
    pub fn reconcile(&mut self, report: bool) -> Result<usize> {
        use crate::baseline::check::{compare, Finding, Outcome as CmpOutcome};
        let snap = self.shared.snap();
        let mut findings: Vec<Finding> = Vec::new();
        let mut db_error = None;
        let seen = compare_live(
            &self.shared,
            &self.root,
            self.cfg.threads,
            &snap.policy,
            |live| {
                let base = match self.store.entry(&live.path) {
                    Ok(b) => b,
                    Err(e) => {
                        db_error.get_or_insert(e);
                        return;
                    }
                };
                if let CmpOutcome::Finding(f) = compare(&snap.policy, base.as_ref(), Some(live)) {
                    findings.push(f);
                }
            },
        );
        if let Some(e) = db_error {
            return Err(e);
        }
        self.store.for_each_entry(|b| {
            if !seen.contains(&self.shared, &b.path) {
                if let CmpOutcome::Finding(f) = compare(&snap.policy, Some(&b), None) {
                    findings.push(f);
                }
            }
            Ok(())
        })?;
        let (mut before, known) = self.drift.restart(report);
        let now = crate::alert::record::now_ts();
        let n = findings.len();
        for f in findings {
            let compare_set = snap
                .policy
                .group(&f.group)
                .map_or_else(CompareSet::default_set, |g| g.compare);
            let state = f
                .live
                .as_deref()
                .map(|l| reported::fingerprint(l, compare_set));
            let earlier = before.remove(&f.path).filter(|r| r.state == state);
            if report {
                let a = reported::reconciled_alert(
                    &f,
                    known.then_some(earlier.as_ref()),
                    &mut self.names,
                );
                let _ = self.alert.send(Box::new(a));
                // Changed while no daemon watched, in a group that restores: put it back.
                if let (Some(b), Some(g)) = (f.base.as_deref(), snap.policy.group(&f.group)) {
                    if matches!(f.status, Status::Changed | Status::Removed)
                        && restores(g)
                        && self.restorer.try_restore(
                            &mut self.marks,
                            &f.path,
                            b,
                            g.compare,
                            g.class,
                            g.name.clone(),
                        )
                    {
                        continue;
                    }
                }
            }
            let reported = earlier.unwrap_or(Reported {
                state,
                ts: now.clone(),
            });
            self.drift.found(f.path, f.live.map(|b| *b), reported);
        }
        // Reported as drifted by an earlier run, as baselined now: put back while down.
        if known {
            let mut back: Vec<Vec<u8>> = before.into_keys().collect();
            back.sort();
            for path in back {
                if let Some(g) = snap.policy.classify(&path) {
                    let _ = self
                        .alert
                        .send(Box::new(reported::back_as_baseline_alert(path, g)));
                }
            }
        }
        Ok(n)
    }

    /// Compare every watched entry with what was last observed; alert on each difference.
    pub fn rescan(&mut self, why: &'static str) {
        let snap = self.shared.snap();
        let mut touches = Vec::new();
        let seen = compare_live(
            &self.shared,
            &self.root,
            self.cfg.threads,
            &snap.policy,
            |l| {
                let prev = self
                    .drift
                    .last_observed(&l.path, || self.baseline_entry(&l.path));
                let differs = match &prev {
                    None => true,
                    Some(p) => {
                        let cmp = snap
                            .policy
                            .group(&l.group)
                            .map_or_else(CompareSet::default_set, |g| g.compare);
                        !diff(p, &l, cmp).is_empty()
                    }
                };
                if differs {
                    touches.push(l.path);
                }
            },
        );
        // Baselined or drifted paths that are gone.
        let _ = self.store.for_each_entry(|e| {
            if !seen.contains(&self.shared, &e.path) && !self.drift.known_absent(&e.path) {
                touches.push(e.path);
            }
            Ok(())
        });
        for p in self.drift.present() {
            if !seen.contains(&self.shared, p) {
                touches.push(p.to_vec());
            }
        }
        touches.sort();
        touches.dedup();
        let changed = touches.len();
        for p in touches {
            self.check_now(&p);
        }
        tracing::info!("rescan ({why}): {changed} entries differ from what was last seen");
    }
}
