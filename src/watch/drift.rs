//! The daemon's memory of what differs from the baseline now: the last observed state of
//! each drifted path (what the next change of that path is compared with), and what was
//! reported of it, persisted for the next run through [`super::reported`] (debounced while
//! changes come, always at a clean stop).
//! A path absent from the map is as baselined; `Some(None)` means absent while the baseline
//! has it.
//! Must not: alert or touch the live file system; a slow save never costs the checker more
//! than about 5% of its time.

use super::reported::{self, Reported};
use crate::baseline::entry::Entry;
use crate::policy::Group;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The reported state is written at most this often while changes come (less often when a
/// write takes long).
const REPORTED_SAVE_EVERY: Duration = Duration::from_secs(1);

pub(super) struct Drift {
    /// Last observed state of paths that differ from the baseline (`None`: absent while the
    /// baseline has it). A path not here is as baselined.
    observed: HashMap<Vec<u8>, Option<Entry>>,
    /// What was last reported per drifted path, as persisted for the next run.
    reported: HashMap<Vec<u8>, Reported>,
    /// `reported` was loaded from an earlier run (so `reconciled` can say what it knew).
    reported_known: bool,
    path: PathBuf,
    dirty: bool,
    saved: Instant,
    /// How long after a save the next may come.
    wait: Duration,
}

impl Drift {
    /// Start from what an earlier run left beside the baseline `db` (if anything).
    pub fn load(db: &std::path::Path) -> Drift {
        let path = reported::state_path(db);
        let loaded = reported::load(&path);
        Drift {
            observed: HashMap::new(),
            reported_known: loaded.is_some(),
            reported: loaded.unwrap_or_default(),
            path,
            dirty: false,
            saved: Instant::now(),
            wait: REPORTED_SAVE_EVERY,
        }
    }

    /// What `path` was last observed as: its drifted state, or `base` when it is as
    /// baselined.
    pub fn last_observed(
        &self,
        path: &[u8],
        base: impl FnOnce() -> Option<Entry>,
    ) -> Option<Entry> {
        match self.observed.get(path) {
            Some(p) => p.clone(),
            None => base(),
        }
    }

    /// Record that `path` was last observed as `live` (it differs from the baseline), or,
    /// with `None` for `live` and `same_as_base`, that it is as baselined again.
    pub fn set(&mut self, path: &[u8], live: Option<Entry>, g: &Group, same_as_base: bool) {
        self.dirty = true;
        if same_as_base {
            self.observed.remove(path);
            self.reported.remove(path);
            return;
        }
        let state = live.as_ref().map(|l| reported::fingerprint(l, g.compare));
        self.reported.insert(
            path.to_vec(),
            Reported {
                state,
                ts: crate::alert::record::now_ts(),
            },
        );
        self.observed.insert(path.to_vec(), live);
    }

    /// Start over from a full comparison with the baseline: forget what was observed, and
    /// hand back what was reported so far (to be matched against the new findings), with
    /// whether it is known from an earlier run, which only a reporting reconcile says.
    pub fn restart(&mut self, report: bool) -> (HashMap<Vec<u8>, Reported>, bool) {
        self.observed.clear();
        self.dirty = true;
        let known = std::mem::replace(&mut self.reported_known, true) && report;
        (std::mem::take(&mut self.reported), known)
    }

    /// Record a finding of that comparison: `path` is `live` now, reported as `reported`.
    pub fn found(&mut self, path: Vec<u8>, live: Option<Entry>, reported: Reported) {
        self.reported.insert(path.clone(), reported);
        self.observed.insert(path, live);
    }

    /// Something changed since the last save.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// `path` was last seen absent while the baseline has it.
    pub fn known_absent(&self, path: &[u8]) -> bool {
        matches!(self.observed.get(path), Some(None))
    }

    /// The drifted paths that were last seen present.
    pub fn present(&self) -> impl Iterator<Item = &[u8]> {
        self.observed
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(p, _)| p.as_slice())
    }

    /// How many paths differ from the baseline now.
    pub fn len(&self) -> usize {
        self.observed.len()
    }

    /// A save may go now.
    pub fn save_due(&self) -> bool {
        self.dirty && self.saved.elapsed() >= self.wait
    }

    /// Persist what was reported (debounced while running; always at a clean stop).
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let t0 = Instant::now();
        if let Err(e) = reported::save(&self.path, &self.reported) {
            tracing::warn!("{e}");
        }
        // A large drift set costs a rewrite each time: never spend more than about 5% of
        // the checker's time on it.
        let took = t0.elapsed();
        self.wait = REPORTED_SAVE_EVERY.max(took * 20);
        self.saved = Instant::now();
    }
}
