//! Compare the live state with a baseline: the engine behind `verify`, `baseline update` and
//! the daemon's reconciliation. Live entries stream from the walker straight into the
//! comparison on the walker's threads; only findings (and, when asked, the paths of clean
//! entries) are kept, so memory is the baseline plus the drift.

use super::diff::{diff, severity, Severity, Status};
use super::entry::Entry;
use super::walk::{self, Item, WalkError};
use crate::fsroot::Root;
use crate::policy::{Attr, Class, CompiledPolicy};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// One difference between baseline and live state.
#[derive(Clone, Debug)]
pub struct Finding {
    pub path: Vec<u8>,
    pub status: Status,
    /// What differs (empty for added/removed).
    pub changes: Vec<Attr>,
    pub group: String,
    pub class: Class,
    pub severity: Severity,
    /// The baseline record (removed, changed).
    pub base: Option<Box<Entry>>,
    /// The live record (added, changed).
    pub live: Option<Box<Entry>>,
}

/// A clean entry, kept only when a report lists every entry checked (JUnit).
#[derive(Clone, Debug)]
pub struct Clean {
    pub path: Vec<u8>,
    pub group: String,
}

/// The outcome of one comparison.
#[derive(Debug, Default)]
pub struct Report {
    /// Sorted by path bytes.
    pub findings: Vec<Finding>,
    /// Per-entry failures: unreadable, unstable, vanished directories...
    pub errors: Vec<WalkError>,
    /// Distinct paths compared (live ∪ baseline within the policy).
    pub checked: u64,
    /// Baseline entries no group of this policy covers any more (not compared).
    pub outside_policy: u64,
    /// Clean entries, when requested.
    pub clean: Vec<Clean>,
}

impl Report {
    /// Count of findings with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }
}

/// Options for [`check`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Walker threads (0 = one per core).
    pub threads: usize,
    /// Keep the paths of clean entries.
    pub keep_clean: bool,
}

/// Compare a live walk of `policy` under `root` with `baseline` (sorted by path bytes, as
/// [`crate::store::Store::entries`] returns it). `on_entry` is called once per live entry
/// (progress).
pub fn check(
    root: &Root,
    policy: &CompiledPolicy,
    baseline: &[Entry],
    opts: CheckOptions,
    on_entry: &(dyn Fn() + Sync),
) -> Report {
    debug_assert!(baseline.windows(2).all(|w| w[0].path < w[1].path));
    let seen: Vec<AtomicBool> = baseline.iter().map(|_| AtomicBool::new(false)).collect();
    let findings = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let clean = Mutex::new(Vec::new());
    let live_count = AtomicU64::new(0);
    let push = |m: &Mutex<Vec<_>>, v| match m.lock() {
        Ok(mut g) => g.push(v),
        Err(p) => p.into_inner().push(v),
    };
    let wopts = walk::WalkOptions {
        threads: opts.threads,
        hash: true,
    };
    walk::walk(root, policy, wopts, &|item| match item {
        Item::Error(e) => push_err(&errors, e),
        Item::Entry(live) => {
            on_entry();
            live_count.fetch_add(1, Ordering::Relaxed);
            let base = match baseline.binary_search_by(|b| b.path.as_slice().cmp(&live.path)) {
                Ok(i) => {
                    seen[i].store(true, Ordering::Relaxed);
                    Some(&baseline[i])
                }
                Err(_) => None,
            };
            match compare(policy, base, Some(*live)) {
                Outcome::Finding(f) => push(&findings, f),
                Outcome::Clean(c) if opts.keep_clean => push_clean(&clean, c),
                Outcome::Clean(_) | Outcome::Nothing => {}
            }
        }
    });
    let mut findings = findings.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut outside = 0;
    for (b, s) in baseline.iter().zip(&seen) {
        if s.load(Ordering::Relaxed) {
            continue;
        }
        if policy.classify(&b.path).is_none() {
            outside += 1;
            continue;
        }
        if let Outcome::Finding(f) = compare(policy, Some(b), None) {
            findings.push(f);
        }
    }
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    let removed = findings
        .iter()
        .filter(|f| f.status == Status::Removed)
        .count() as u64;
    let mut clean = clean.into_inner().unwrap_or_else(|p| p.into_inner());
    clean.sort_by(|a, b| a.path.cmp(&b.path));
    Report {
        findings,
        errors: errors.into_inner().unwrap_or_else(|p| p.into_inner()),
        checked: live_count.into_inner() + removed,
        outside_policy: outside,
        clean,
    }
}

fn push_err(m: &Mutex<Vec<WalkError>>, e: WalkError) {
    match m.lock() {
        Ok(mut g) => g.push(e),
        Err(p) => p.into_inner().push(e),
    }
}

fn push_clean(m: &Mutex<Vec<Clean>>, c: Clean) {
    match m.lock() {
        Ok(mut g) => g.push(c),
        Err(p) => p.into_inner().push(c),
    }
}

/// The result of comparing one path.
#[derive(Debug)]
pub enum Outcome {
    Finding(Finding),
    Clean(Clean),
    Nothing,
}

/// Compare one path's baseline and live records under `policy`. Pure.
pub fn compare(policy: &CompiledPolicy, base: Option<&Entry>, live: Option<Entry>) -> Outcome {
    match (base, live) {
        (None, None) => Outcome::Nothing,
        (None, Some(l)) => Outcome::Finding(Finding {
            path: l.path.clone(),
            status: Status::Added,
            changes: Vec::new(),
            group: l.group.clone(),
            class: l.class,
            severity: severity(l.class, Status::Added, &[]),
            base: None,
            live: Some(Box::new(l)),
        }),
        (Some(b), None) => {
            // Group and class as the current policy sees the path, falling back to the
            // baseline's record.
            let (group, class) = policy
                .classify(&b.path)
                .map_or((b.group.clone(), b.class), |g| (g.name.clone(), g.class));
            Outcome::Finding(Finding {
                path: b.path.clone(),
                status: Status::Removed,
                changes: Vec::new(),
                severity: severity(class, Status::Removed, &[]),
                group,
                class,
                base: Some(Box::new(b.clone())),
                live: None,
            })
        }
        (Some(b), Some(l)) => {
            let compare = policy
                .group(&l.group)
                .map_or_else(crate::policy::CompareSet::default_set, |g| g.compare);
            let changes = diff(b, &l, compare);
            if changes.is_empty() {
                return Outcome::Clean(Clean {
                    path: l.path,
                    group: l.group,
                });
            }
            // Whatever the class, a newly set setuid/setgid bit or a newly world-writable entry
            // is how privilege escalation and tampering start.
            let gained = l.mode & !b.mode;
            let mut sev = severity(l.class, Status::Changed, &changes);
            if changes.contains(&crate::policy::Attr::Mode) && gained & 0o6002 != 0 {
                sev = sev.max(super::diff::Severity::High);
            }
            Outcome::Finding(Finding {
                path: l.path.clone(),
                status: Status::Changed,
                severity: sev,
                changes,
                group: l.group.clone(),
                class: l.class,
                base: Some(Box::new(b.clone())),
                live: Some(Box::new(l)),
            })
        }
    }
}
