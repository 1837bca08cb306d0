//! Compare the live state with a baseline: the engine behind `verify`, `baseline update` and
//! the daemon's reconciliation. Live entries stream from the walker straight into the
//! comparison on the walker's threads; only findings (and, when asked, the paths of clean
//! entries) are kept, so memory is the baseline plus the drift.

use super::diff::{diff, severity, Status};
use super::entry::{Entry, FileType};
pub use super::findings::{Clean, Finding, Report};
use super::packed::Packed;
use super::walk::{self, Item};
use crate::fsroot::Root;
use crate::policy::CompiledPolicy;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Live entries buffered while the baseline loads, at most.
const PENDING_MAX: usize = 4096;

/// Options for [`check`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Walker threads (0 = one per core).
    pub threads: usize,
    /// Keep the paths of clean entries.
    pub keep_clean: bool,
    /// Inspect credential files and provider binaries (into [`Report::credentials`]).
    pub credentials: bool,
}

/// Compare a live walk of `policy` under `root` with the baseline that `load` returns
/// (packed in path order, see [`Packed`]). `load` runs on its
/// own thread while the walk starts: live entries that arrive before the baseline is ready
/// wait in a buffer (bounded by how long loading takes), so the database read and `integrity_check`
/// overlap with hashing instead of delaying it. `on_entry` is called once per live entry.
pub fn check(
    root: &Root,
    policy: &CompiledPolicy,
    load: impl FnOnce() -> crate::error::Result<Packed> + Send,
    opts: CheckOptions,
    on_entry: &(dyn Fn() + Sync),
) -> crate::error::Result<Report> {
    let ready: OnceLock<(Packed, Vec<AtomicBool>)> = OnceLock::new();
    let failed = AtomicBool::new(false);
    // A packed entry that does not decode: a bug, never input; the run then fails.
    let undecodable = AtomicBool::new(false);
    let pending: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let loaded_cv = std::sync::Condvar::new();
    let findings = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let clean = Mutex::new(Vec::new());
    let creds = Mutex::new(Vec::new());
    let live_count = AtomicU64::new(0);
    let process = |(baseline, seen): &(Packed, Vec<AtomicBool>), live: Entry| {
        let base = match baseline.find(&live.path) {
            Some(i) => {
                seen[i].store(true, Ordering::Relaxed);
                let b = baseline.get(i);
                if b.is_none() {
                    undecodable.store(true, Ordering::Relaxed);
                }
                b
            }
            None => None,
        };
        match compare(policy, base.as_ref(), Some(live)) {
            Outcome::Finding(f) => lock(&findings).push(f),
            Outcome::Clean(c) if opts.keep_clean => lock(&clean).push(c),
            Outcome::Clean(_) | Outcome::Nothing => {}
        }
    };
    let drain = |b: &(Packed, Vec<AtomicBool>)| {
        let waiting = std::mem::take(&mut *lock(&pending));
        for live in waiting {
            process(b, live);
        }
    };
    let wopts = walk::WalkOptions {
        threads: opts.threads,
        hash: walk::Hashing::Compare,
    };
    let loaded = std::thread::scope(|sc| {
        let loader = sc.spawn(|| match load() {
            Ok(b) => {
                let seen = (0..b.len()).map(|_| AtomicBool::new(false)).collect();
                let r = ready.get_or_init(|| (b, seen));
                loaded_cv.notify_all();
                drain(r);
                Ok(())
            }
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                lock(&pending).clear();
                loaded_cv.notify_all();
                Err(e)
            }
        });
        let inspect_cred = |e: &Entry, content: Option<&[u8]>| {
            if !opts.credentials {
                return;
            }
            match super::credentials::inspect_content(root, policy, e, content, true) {
                Some(Ok(c)) => lock(&creds).push(c),
                Some(Err(e)) => lock(&errors).push(e),
                None => {}
            }
        };
        // Regular files the walk hashed are inspected from the bytes it read (the first
        // callback); every other entry here.
        walk::walk_inspecting(root, policy, wopts, &inspect_cred, &|item| match item {
            Item::Error(e) => lock(&errors).push(e),
            Item::Entry(live) => {
                on_entry();
                live_count.fetch_add(1, Ordering::Relaxed);
                if live.ftype != FileType::File {
                    inspect_cred(&live, None);
                }
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                match ready.get() {
                    Some(b) => process(b, *live),
                    None => {
                        let mut waiting = lock(&pending);
                        // Bounded: past this many, walkers wait for the loader rather than
                        // buffer the whole tree (memory stays the baseline plus the drift).
                        while waiting.len() >= PENDING_MAX
                            && ready.get().is_none()
                            && !failed.load(Ordering::Relaxed)
                        {
                            waiting = loaded_cv
                                .wait_timeout(waiting, std::time::Duration::from_millis(50))
                                .map(|(g, _)| g)
                                .unwrap_or_else(|p| p.into_inner().0);
                        }
                        waiting.push(*live);
                        drop(waiting);
                        // The loader may have drained just before our push.
                        if let Some(b) = ready.get() {
                            drain(b);
                        }
                    }
                }
            }
        });
        loader.join().unwrap_or_else(|_| {
            Err(crate::error::Error::Integrity(
                "the baseline loader panicked".into(),
            ))
        })
    });
    loaded?;
    let Some(b) = ready.get() else {
        return Err(crate::error::Error::Integrity(
            "the baseline was not loaded".into(),
        ));
    };
    drain(b);
    let (baseline, seen) = b;
    let mut findings = findings.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut outside = 0;
    for (i, s) in seen.iter().enumerate() {
        if s.load(Ordering::Relaxed) {
            continue;
        }
        let Some(b) = baseline.get(i) else {
            undecodable.store(true, Ordering::Relaxed);
            continue;
        };
        if policy.classify(&b.path).is_none() {
            outside += 1;
            continue;
        }
        if let Outcome::Finding(f) = compare(policy, Some(&b), None) {
            findings.push(f);
        }
    }
    if undecodable.load(Ordering::Relaxed) {
        return Err(crate::error::Error::Integrity(
            "internal error: a loaded baseline entry did not decode".into(),
        ));
    }
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    let removed = findings
        .iter()
        .filter(|f| f.status == Status::Removed)
        .count() as u64;
    let mut clean = clean.into_inner().unwrap_or_else(|p| p.into_inner());
    clean.sort_by(|a, b| a.path.cmp(&b.path));
    let mut credentials = creds.into_inner().unwrap_or_else(|p| p.into_inner());
    // Paths are unique, so the unstable sort orders alike, without the stable sort's
    // scratch copy (8 MB at 22k credential files).
    credentials.sort_unstable_by(|a, b| a.entry.path.cmp(&b.entry.path));
    Ok(Report {
        credentials,
        findings,
        errors: errors.into_inner().unwrap_or_else(|p| p.into_inner()),
        checked: live_count.into_inner() + removed,
        outside_policy: outside,
        clean,
    })
}

/// Lock, shrugging off poisoning: a panicking walker thread already failed the run, and the
/// data behind these locks (plain vectors) stays consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
            severity: super::diff::added_severity(l.class, &l),
            base: None,
            live: Some(Box::new(l)),
            rule: None,
            message: None,
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
                rule: None,
                message: None,
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
            let sev = super::diff::change_severity(l.class, b, &l, &changes);
            Outcome::Finding(Finding {
                path: l.path.clone(),
                status: Status::Changed,
                severity: sev,
                changes,
                group: l.group.clone(),
                class: l.class,
                base: Some(Box::new(b.clone())),
                live: Some(Box::new(l)),
                rule: None,
                message: None,
            })
        }
    }
}
