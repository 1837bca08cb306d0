//! What the daemon's threads share: the policy snapshot, the watched set and its inode index,
//! the counters, the executable-hash cache, the permission events waiting for a hash, and
//! the stop flag; plus the one queue type the inputs feed the checker with ([`Work`]).
//!
//! Every lock here is held for a lookup or a swap, never across I/O, a channel send or a
//! hash: the permission thread takes them (snapshot, inode index, cache, waiting table)
//! between reading an event and answering it, so slow code that held one would hold every
//! open of a guarded file. Writers build aside and swap ([`super::reload`],
//! [`super::marks`]).
//! Must not: own behaviour. Each field's module says how it changes.

use super::exe::ExeCache;
use super::paths::Watched;
use super::permission::Waiting;
use super::reload::Snapshot;
use super::signals::StopCause;
use super::status::Stats;
use crate::alert::Alert;
use crate::error::{Error, Result};
use crate::proc::ProcessInfo;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

pub(super) struct Shared {
    pub snap: RwLock<Arc<Snapshot>>,
    /// Every watched path, its marks, and the file-handle index.
    pub watched: RwLock<Watched>,
    /// (dev, ino) of every inode in the permission group → the path it was marked at. The
    /// event fd's inode decides the group, whatever name (or hard link) it was opened by.
    pub perm_inodes: RwLock<HashMap<(u64, u64), Vec<u8>>>,
    pub stop: AtomicBool,
    pub stats: Stats,
    /// Executable identities hashed since start → BLAKE3.
    pub exe_cache: ExeCache,
    /// Permission events waiting for an executable hash, by event fd.
    pub pending: Waiting,
    pub self_pid: u32,
    pub started: Instant,
    /// Why the daemon stops (set by the signal thread).
    pub stop_cause: Mutex<Option<StopCause>>,
}

impl Shared {
    pub fn new(snap: Snapshot) -> Shared {
        Shared {
            snap: RwLock::new(Arc::new(snap)),
            watched: RwLock::new(Watched::default()),
            perm_inodes: RwLock::new(HashMap::new()),
            stop: AtomicBool::new(false),
            stats: Stats::default(),
            exe_cache: ExeCache::default(),
            pending: Waiting::default(),
            self_pid: std::process::id(),
            started: Instant::now(),
            stop_cause: Mutex::new(None),
        }
    }

    /// The policy snapshot in force now (a clone of the pointer: a reload swaps it whole).
    pub fn snap(&self) -> Arc<Snapshot> {
        read(&self.snap).clone()
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Stop for `cause`, unless a cause was already recorded.
    pub fn stop_for(&self, cause: StopCause) {
        lock(&self.stop_cause).get_or_insert(cause);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What the inputs hand the checker thread.
pub(super) enum Work {
    Touch {
        path: Vec<u8>,
        mask: u64,
        /// Boxed: the queue preallocates every slot, so slots stay small.
        who: Option<Box<ProcessInfo>>,
    },
    Rescan(&'static str),
    Reload,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// Queue an alert without ever blocking: a full queue counts a dropped alert. For threads
/// that must not wait on the sinks (permission, exe-hash, notification, audit).
pub(super) fn queue_alert(s: &Shared, alerts: &SyncSender<Box<Alert>>, a: Alert) {
    match alerts.try_send(Box::new(a)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            s.stats
                .alerts_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

pub(super) fn spawn(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::io("start thread", name.as_bytes().to_vec(), e))
}
