//! Restore in the daemon: a changed or removed entry of a group with `on_change: restore`
//! is put back as baselined from the trusted content store (`--store`), through the same
//! [`crate::restore::restore_entry`] that `kmsentry restore` applies (openat, `O_NOFOLLOW`,
//! temp + fsync + rename, the replaced content quarantined). Each attempt is one `restored`
//! alert (success or failure); the restored entry is a new inode and is marked again.
//! A path that keeps changing is restored at most [`RESTORE_BURST`] times per
//! [`RESTORE_WINDOW`], then left alone for [`RESTORE_BACKOFF`] (one `restore_abandoned`
//! alert): a writer fighting the daemon must not turn it into a busy loop.
//! Must not: restore without a store, or restore a group that did not ask for it.

use super::marks::Marker;
use crate::alert::{Alert, Kind, Outcome};
use crate::baseline::diff::Severity;
use crate::baseline::entry::Entry;
use crate::baseline::walk;
use crate::fsroot::Root;
use crate::policy::schema::OnChange;
use crate::policy::{Class, CompareSet, CompiledPolicy};
use crate::store::objects::ObjectStore;
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this many automatic restores of one path within [`RESTORE_WINDOW`] ...
const RESTORE_BURST: usize = 5;
const RESTORE_WINDOW: Duration = Duration::from_secs(60);
/// ... then the path is left alone (one `restore_abandoned` alert) for this long.
const RESTORE_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Default)]
struct RestoreLog {
    times: VecDeque<Instant>,
    abandoned_until: Option<Instant>,
}

/// Say at start (and at each reload) that groups asking for restore cannot have it.
pub(super) fn warn_restore_without_store(policy: &CompiledPolicy, have_store: bool) {
    if have_store {
        return;
    }
    for g in &policy.groups {
        if g.on_change.contains(&OnChange::Restore) {
            tracing::warn!(
                "group {} has `on_change: restore` but the daemon has no --store: changes are only reported",
                g.name
            );
        }
    }
}

/// Whether group `g` asks for its changes to be put back.
pub(super) fn restores(g: &crate::policy::Group) -> bool {
    g.on_change.contains(&OnChange::Restore)
}

pub(super) struct Restorer {
    root: Arc<Root>,
    alert: SyncSender<Box<Alert>>,
    /// The trusted content store (`--store`).
    objects: Option<ObjectStore>,
    /// Recent automatic restores per path (rate limit).
    log: HashMap<Vec<u8>, RestoreLog>,
}

impl Restorer {
    pub fn new(
        root: Arc<Root>,
        alert: SyncSender<Box<Alert>>,
        objects: Option<ObjectStore>,
    ) -> Restorer {
        Restorer {
            root,
            alert,
            objects,
            log: HashMap::new(),
        }
    }

    /// Put `path` back as baselined from the trusted store, at a bounded rate. True when it
    /// now matches the baseline.
    pub fn try_restore(
        &mut self,
        marks: &mut Marker,
        path: &[u8],
        base: &Entry,
        compare: CompareSet,
        class: Class,
        group: String,
    ) -> bool {
        let Some(objects) = &self.objects else {
            return false;
        };
        let now = Instant::now();
        let log = self.log.entry(path.to_vec()).or_default();
        if log.abandoned_until.is_some_and(|t| now < t) {
            return false;
        }
        while log
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTORE_WINDOW)
        {
            log.times.pop_front();
        }
        let mut a = Alert::new(Kind::Restored, Severity::Medium);
        a.path = Some(path.to_vec());
        a.group = Some(group);
        a.class = Some(class);
        if log.times.len() >= RESTORE_BURST {
            log.abandoned_until = Some(now + RESTORE_BACKOFF);
            a.kind = Kind::RestoreAbandoned;
            a.severity = Severity::High;
            a.outcome = Some(Outcome::Failure);
            a.detail.insert(
                "message".into(),
                format!(
                    "restored {} times within {} s and changed again; left alone for {} s",
                    log.times.len(),
                    RESTORE_WINDOW.as_secs(),
                    RESTORE_BACKOFF.as_secs()
                )
                .into(),
            );
            let _ = self.alert.send(Box::new(a));
            return false;
        }
        log.times.push_back(now);
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%S%.6fZ")
            .to_string();
        let result = crate::restore::Quarantine::new(objects, &stamp)
            .map_err(|e| crate::restore::RestoreError::Io {
                op: "create quarantine",
                msg: e.to_string(),
            })
            .and_then(|q| {
                let r = crate::restore::restore_entry(&self.root, objects, base, compare, &q);
                let _ = q.sync();
                r
            });
        match result {
            Ok(r) => {
                if r.method.is_none() {
                    return true;
                }
                a.outcome = Some(Outcome::Success);
                a.changes = r.changes.iter().map(|c| c.as_str()).collect();
                if let Some(m) = r.method {
                    a.detail.insert("method".into(), m.as_str().into());
                }
                if let Some(h) = r.before {
                    a.detail
                        .insert("blake3_before".into(), hex::encode(h.blake3).into());
                }
                if let Some(h) = r.after {
                    a.detail
                        .insert("blake3_after".into(), hex::encode(h.blake3).into());
                }
                if let Some(q) = &r.quarantined {
                    use std::os::unix::ffi::OsStrExt;
                    a.detail.insert(
                        "quarantine".into(),
                        crate::sanitize::JsonName(q.as_os_str().as_bytes())
                            .text()
                            .into_owned()
                            .into(),
                    );
                }
                let _ = self.alert.send(Box::new(a));
                // A replaced entry is a new inode: mark it like the old one.
                marks.mark_as(path, base.ftype);
                true
            }
            Err(e) => {
                a.severity = Severity::High;
                a.outcome = Some(Outcome::Failure);
                a.detail.insert("message".into(), e.to_string().into());
                let _ = self.alert.send(Box::new(a));
                // The restore may have put a new inode in place before it failed (a writer
                // changed it again meanwhile): mark whatever is there now, or its next change
                // goes unseen.
                let snap = marks.snap();
                if let Ok(Some(now)) = walk::capture_path(&self.root, &snap.policy, path) {
                    marks.mark_as(path, now.ftype);
                }
                false
            }
        }
    }
}
