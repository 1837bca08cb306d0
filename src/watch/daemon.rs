//! The daemon loop. Threads and what each may block on:
//!
//! | thread | blocks on | never does |
//! |---|---|---|
//! | `perm` | `poll` on the permission group | file I/O, alert I/O, hashing, NSS: it reads `/proc`, calls [`decide`], answers the kernel, then queues the record |
//! | `notify` | `poll` on the notification group | hashing; it maps events to paths, identifies the process (pidfd-checked), and queues them |
//! | `check` | its queue | answering permission events; it captures, hashes, diffs, marks new entries, keeps the audit rules in step, rescans, reloads |
//! | `exe-hash` | hashing an executable that needs it | holding an event past `stall`: `perm` answers with `on_stall` first |
//! | `alert` | the sinks (fsync, network), user-name lookups | anything else |
//! | `audit` | the audit netlink socket | |
//! | `signals` | the `signalfd` | |
//!
//! The daemon's own opens (reconcile, rescans, hashing an executable) raise permission
//! events like anyone's; `perm` allows its own pid before anything else, and never opens a
//! file itself, so no thread waits on an answer only it could give. Before any of this, the
//! instance locks ([`super::instance`]) make sure no other daemon runs on the same state.

use super::changes::{self, Observed};
use super::fanotify::{self, PermGroup};
use super::identity;
use super::instance::Instance;
use super::paths::{Builder, Marks, Watched};
use super::reported::{self, Reported};
use super::signals::{self, Request, StopCause};
use super::touch::{Departures, Touch};
use crate::alert::{Alert, AlertConfig, Alerter, Kind, Outcome};
use crate::baseline::diff::{diff, Severity, Status};
use crate::baseline::entry::Entry;
use crate::baseline::walk::{self, Item, WalkOptions};
use crate::decide::{decide, OpenKind, Trust, TrustedExe, Verdict};
use crate::error::{Error, Result};
use crate::fsroot::Root;
use crate::policy::schema::AccessMode;
use crate::policy::{Class, CompiledPolicy, Group};
use crate::proc::{ExeId, Identity, ProcessInfo};
use crate::sanitize::Name;
use crate::store::Store;
use crate::users::Names;
use nix::sys::fanotify::{Fanotify, FanotifyEvent, MaskFlags};
use rustix::fs::OFlags;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What to answer when a decision is not ready within the stall limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnStall {
    Allow,
    Deny,
}

/// How to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub policy: PathBuf,
    pub db: PathBuf,
    pub verify_key: Option<PathBuf>,
    /// Trusted content store: groups with `on_change: restore` are put back from it.
    pub store: Option<PathBuf>,
    /// Accept a live-host baseline recorded on another host.
    pub allow_other_host: bool,
    pub alerts: AlertConfig,
    pub on_stall: OnStall,
    pub stall: Duration,
    /// How long the permission thread keeps polling without sleeping after an event.
    pub spin: Duration,
    pub status_socket: Option<PathBuf>,
    pub metrics: Option<std::net::SocketAddr>,
    /// Use the kernel audit subsystem for the kernel's own access denials.
    pub audit: bool,
    pub threads: usize,
    /// Stop after this long (tests, benchmarks); `None` runs until SIGTERM.
    pub run_for: Option<Duration>,
}

/// The policy as the daemon applies it; swapped whole on SIGHUP.
struct Snapshot {
    policy: CompiledPolicy,
    trust: Trust,
    /// Trusted executable inode → the allowed path it was hashed at.
    by_id: HashMap<ExeId, Vec<u8>>,
}

impl Snapshot {
    fn new(policy: CompiledPolicy, trust: Trust) -> Snapshot {
        let mut by_id = HashMap::new();
        for (path, t) in &trust.exes {
            for id in &t.ids {
                by_id.insert(*id, path.clone());
            }
        }
        Snapshot {
            policy,
            trust,
            by_id,
        }
    }
}

/// Counters for `kmsentry status` and the metrics endpoint. Every permission event is
/// counted exactly once, when it is answered (in [`answer`]): allowed or denied, so the
/// status document's `events.perm` is their sum, and `pending_decisions` are the events read
/// but not answered yet.
#[derive(Default)]
pub(crate) struct Stats {
    pub allowed: AtomicU64,
    /// Of `allowed`: the daemon's own opens.
    pub allowed_self: AtomicU64,
    pub denied: AtomicU64,
    /// Answered per `--on-stall` (counted in `allowed` or `denied` too).
    pub stalled: AtomicU64,
    pub notify_events: AtomicU64,
    pub checks: AtomicU64,
    pub queued: AtomicU64,
    pub overflows: AtomicU64,
    pub alerts_dropped: AtomicU64,
    pub marks_notify: AtomicU64,
    pub marks_perm: AtomicU64,
    /// Decision latency (event read → answer written), µs buckets of [`LATENCY_BUCKETS`].
    pub latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    pub alerts: Mutex<BTreeMap<&'static str, u64>>,
}

/// Upper bounds (µs) of the decision latency histogram buckets; the last bucket is +Inf.
pub(crate) const LATENCY_BUCKETS: [u64; 13] =
    [2, 5, 10, 15, 20, 30, 50, 100, 200, 500, 1000, 5000, 20000];

impl Stats {
    fn observe_latency(&self, us: u64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
    }
}

struct Shared {
    snap: RwLock<Arc<Snapshot>>,
    /// Every watched path, its marks, and the file-handle index.
    watched: RwLock<Watched>,
    /// (dev, ino) of every inode in the permission group → the path it was marked at. The
    /// event fd's inode decides the group, whatever name (or hard link) it was opened by.
    perm_inodes: RwLock<HashMap<(u64, u64), Vec<u8>>>,
    stop: AtomicBool,
    stats: Stats,
    /// Executable identities hashed since start → BLAKE3.
    exe_cache: Mutex<HashMap<ExeId, [u8; 32]>>,
    /// Permission events waiting for an executable hash, by event fd.
    pending: Mutex<HashMap<i32, Pending>>,
    self_pid: u32,
    started: Instant,
    /// Why the daemon stops (set by the signal thread).
    stop_cause: Mutex<Option<StopCause>>,
}

struct Pending {
    event: FanotifyEvent,
    since: Instant,
    /// The group is in audit mode: a stall is answered allow, whatever `--on-stall` says.
    audit_mode: bool,
}

enum Work {
    Touch {
        path: Vec<u8>,
        mask: u64,
        /// Boxed: the queue preallocates every slot, so slots stay small.
        who: Option<Box<ProcessInfo>>,
    },
    Rescan(&'static str),
    Reload,
}

struct HashJob {
    fd: i32,
    kind: OpenKind,
    path: Vec<u8>,
    group: String,
    who: Identity,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

const NOTIFY_FILE: u32 = (libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF) as u32;
const NOTIFY_DIR: u32 = (libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_ATTRIB
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF
    | libc::FAN_ONDIR) as u32;
const NAMESPACE: u64 =
    libc::FAN_CREATE | libc::FAN_DELETE | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO;

fn marks_for(e_type: crate::baseline::entry::FileType, group: Option<&Group>) -> Marks {
    use crate::baseline::entry::FileType;
    let mut m = Marks::default();
    match e_type {
        FileType::Dir => m.notify = NOTIFY_DIR,
        FileType::File => {
            m.notify = NOTIFY_FILE;
            if let Some(g) = group {
                // Audit mode too goes through the permission group, always answered allow:
                // the opener waits while its identity is read, so the alert names the
                // process that opened the file, not whatever holds its pid a moment later.
                if matches!(g.access.mode, AccessMode::Enforce | AccessMode::Audit) {
                    m.perm = libc::FAN_OPEN_PERM as u32;
                    if g.class == Class::ProviderBinary {
                        m.perm |= libc::FAN_OPEN_EXEC_PERM as u32;
                    }
                }
            }
        }
        // Symlinks, FIFOs, devices: watched through their directory (a change to them is a
        // delete + create there); never opened, so never marked themselves.
        _ => {}
    }
    m
}

/// Run the daemon until SIGTERM/SIGINT (or `run_for`). Returns once every pending
/// permission event is answered and `stopped` is written.
pub fn run(cfg: Config) -> Result<()> {
    // First, before any thread exists: every thread inherits the blocked mask, so the
    // signals reach only the signalfd.
    let sigfd = signals::block().map_err(|e| {
        Error::io(
            "block signals",
            Vec::new(),
            std::io::Error::from_raw_os_error(e as i32),
        )
    })?;
    // Then the instance locks: a second daemon must not place a mark or read a watched file.
    let mut instance = Instance::acquire(&super::instance::resources(
        &cfg.db,
        cfg.alerts.file.as_deref(),
        cfg.status_socket.as_deref(),
    ))?;
    super::instance::raise_fd_limit();
    let root = Arc::new(Root::open(std::path::Path::new("/"))?);
    let policy = crate::policy::load(&cfg.policy)?;
    let store = open_baseline(&cfg, &root)?;
    let objects = match &cfg.store {
        Some(p) => Some(crate::store::objects::ObjectStore::open(p)?),
        None => None,
    };
    warn_restore_without_store(&policy, objects.is_some());
    let trust = build_trust(&policy, &root);
    let shared = Arc::new(Shared {
        snap: RwLock::new(Arc::new(Snapshot::new(policy, trust))),
        watched: RwLock::new(Watched::default()),
        perm_inodes: RwLock::new(HashMap::new()),
        stop: AtomicBool::new(false),
        stats: Stats::default(),
        exe_cache: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        self_pid: std::process::id(),
        started: Instant::now(),
        stop_cause: Mutex::new(None),
    });
    let perm = Arc::new(
        fanotify::init_perm().map_err(|e| fan_err("fanotify_init (permission group)", e))?,
    );
    if !perm.audit {
        tracing::warn!("fanotify audit responses are unavailable: a kernel-audit `access`/`failure` alert may repeat an enforce denial");
    }
    let (notify, pidfds) =
        fanotify::init_notify().map_err(|e| fan_err("fanotify_init (notification group)", e))?;
    if !pidfds {
        tracing::warn!("this kernel cannot report pidfds with events (Linux 5.15+): a changing process's /proc entry is read unverified");
    }
    let notify = Arc::new(notify);

    let mut alerter = Alerter::new(cfg.alerts.clone())?;
    let (alert_tx, alert_rx) = mpsc::sync_channel::<Box<Alert>>(16_384);
    let (work_tx, work_rx) = mpsc::sync_channel::<Work>(16_384);
    let (hash_tx, hash_rx) = mpsc::sync_channel::<HashJob>(1024);

    let mut threads = Vec::new();
    // The permission thread runs before the first mark exists: every open the daemon makes
    // from here on may need its answer.
    {
        let (s, f, a, h) = (
            shared.clone(),
            perm.clone(),
            alert_tx.clone(),
            hash_tx.clone(),
        );
        let (on_stall, stall, spin) = (cfg.on_stall, cfg.stall, cfg.spin);
        threads.push(spawn("kmsentry-perm", move || {
            perm_loop(&s, &f, &a, &h, on_stall, stall, spin)
        })?);
    }
    {
        let (s, f, a) = (shared.clone(), perm.clone(), alert_tx.clone());
        threads.push(spawn("kmsentry-exe-hash", move || {
            hash_loop(&s, &f, &a, hash_rx)
        })?);
    }

    let reported_path = reported::state_path(&cfg.db);
    let loaded = reported::load(&reported_path);
    let mut checker = Checker {
        shared: shared.clone(),
        root: root.clone(),
        perm: perm.clone(),
        notify: notify.clone(),
        store,
        cfg: cfg.clone(),
        alert: alert_tx.clone(),
        drift: HashMap::new(),
        pending: HashMap::new(),
        next_seq: 0,
        audit: None,
        audit_dirty: false,
        audit_sent: Instant::now(),
        objects,
        restores: HashMap::new(),
        departed: Departures::default(),
        names: Names::for_root(&root),
        reported_known: loaded.is_some(),
        reported: loaded.unwrap_or_default(),
        reported_path,
        reported_dirty: false,
        reported_saved: Instant::now(),
        reported_wait: REPORTED_SAVE_EVERY,
    };
    checker.place_marks()?;
    tracing::info!(
        "marks placed: {} paths, RSS {} KiB",
        read(&checker.shared.watched).len(),
        rss_kib()
    );
    {
        let (s, f, a, w) = (
            shared.clone(),
            notify.clone(),
            alert_tx.clone(),
            work_tx.clone(),
        );
        threads.push(spawn("kmsentry-notify", move || {
            notify_loop(&s, &f, &a, &w)
        })?);
    }
    let alert_thread = {
        let s = shared.clone();
        let mut names = Names::for_root(&root);
        spawn("kmsentry-alert", move || {
            // Batch what is queued into one write + one fsync; tick for timed checkpoints.
            loop {
                let first = match alert_rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(a) => a,
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(e) = alerter.tick() {
                            tracing::error!("alert checkpoint: {e}");
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match alert_rx.try_recv() {
                        Ok(a) => batch.push(a),
                        Err(_) => break,
                    }
                }
                {
                    let mut counts = lock(&s.stats.alerts);
                    for a in &batch {
                        *counts.entry(a.kind.as_str()).or_insert(0) += 1;
                    }
                }
                let batch: Vec<Alert> = batch
                    .into_iter()
                    .map(|b| {
                        let mut a = *b;
                        // User names here, never on the permission thread: NSS may block.
                        if let Some(p) = &mut a.process {
                            if p.user.is_none() {
                                p.user = p.uid.and_then(|u| names.user(u));
                            }
                        }
                        a
                    })
                    .collect();
                if let Err(e) = alerter.emit_batch(batch) {
                    tracing::error!("alert sink: {e}");
                }
            }
            alerter.flush();
        })?
    };

    // Reconcile: everything that changed while no daemon watched is reported before
    // `started`. The marks are already in place, so nothing slips between the two.
    let reconciled = checker.reconcile(true)?;
    tracing::info!(
        "reconciled: {reconciled} differences, RSS {} KiB",
        rss_kib()
    );
    let audit = if cfg.audit {
        start_audit(&shared, &checker, &alert_tx, &mut threads)
    } else {
        None
    };
    checker.audit = audit.clone();
    let status_socket = match &cfg.status_socket {
        // Its thread blocks in accept(2) and ends with the process; the guard removes the
        // socket at a clean stop.
        Some(sock) => match super::status::serve(sock, shared_status(&shared)) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!("status socket: {e}");
                None
            }
        },
        None => None,
    };
    if let Some(addr) = cfg.metrics {
        match super::status::serve_metrics(addr, shared_status(&shared)) {
            Ok(_) => {}
            Err(e) => tracing::warn!("metrics endpoint: {e}"),
        }
    }
    let mut started = Alert::new(Kind::Started, Severity::Info);
    started
        .detail
        .insert("version".into(), env!("CARGO_PKG_VERSION").into());
    started.detail.insert("pid".into(), shared.self_pid.into());
    started.detail.insert(
        "marks_notify".into(),
        shared.stats.marks_notify.load(Ordering::Relaxed).into(),
    );
    started.detail.insert(
        "marks_perm".into(),
        shared.stats.marks_perm.load(Ordering::Relaxed).into(),
    );
    started
        .detail
        .insert("reconciled".into(), reconciled.into());
    started
        .detail
        .insert("kernel_audit".into(), audit.is_some().into());
    started.detail.insert(
        "policy_digest".into(),
        read(&shared.snap).policy.digest.clone().into(),
    );
    if let Some(prev) = instance.previous() {
        if !prev.clean {
            started.severity = Severity::Medium;
        }
        started
            .detail
            .insert("previous_run".into(), prev.to_value());
    }
    let _ = alert_tx.send(Box::new(started));
    sd_notify("READY=1");

    // Signals: TERM/INT stop, HUP reloads; `--run-for` stops too.
    {
        let (s, w) = (shared.clone(), work_tx.clone());
        let deadline = cfg.run_for.map(|d| (Instant::now() + d, d));
        threads.push(spawn("kmsentry-signals", move || {
            while !s.stop.load(Ordering::SeqCst) {
                if let Some((at, d)) = deadline {
                    if Instant::now() >= at {
                        lock(&s.stop_cause).get_or_insert(StopCause::RunFor(d));
                        s.stop.store(true, Ordering::SeqCst);
                        break;
                    }
                }
                match signals::next(&sigfd, Duration::from_millis(100)) {
                    Some(Request::Reload) => {
                        let _ = w.send(Work::Reload);
                    }
                    Some(Request::Stop(cause)) => {
                        lock(&s.stop_cause).get_or_insert(cause);
                        s.stop.store(true, Ordering::SeqCst);
                    }
                    None => {}
                }
            }
        })?);
    }

    // The checker runs on this thread until stop.
    checker.run(work_rx);

    // Shutdown: answer everything pending, say `stopped`, flush the sinks.
    shared.stop.store(true, Ordering::SeqCst);
    drop(audit);
    drop(work_tx);
    drop(hash_tx);
    for t in threads {
        let _ = t.join();
    }
    answer_all_pending(&shared, &perm, cfg.on_stall);
    checker.save_reported();
    let mut stopped = Alert::new(Kind::Stopped, Severity::Info);
    stopped
        .detail
        .insert("uptime_s".into(), shared.started.elapsed().as_secs().into());
    if let Some(cause) = lock(&shared.stop_cause).take() {
        cause.describe(&mut stopped);
    }
    let _ = alert_tx.send(Box::new(stopped));
    drop(checker);
    drop(alert_tx);
    let _ = alert_thread.join();
    drop(status_socket);
    instance.mark_stopped();
    sd_notify("STOPPING=1");
    Ok(())
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::io("start thread", name.as_bytes().to_vec(), e))
}

fn fan_err(what: &str, e: nix::Error) -> Error {
    let hint = match e {
        nix::Error::EPERM => " (the daemon needs root: CAP_SYS_ADMIN)",
        nix::Error::EINVAL | nix::Error::ENOSYS => {
            " (this kernel lacks fanotify permission events or FID reporting: Linux 5.9+ with CONFIG_FANOTIFY_ACCESS_PERMISSIONS)"
        }
        _ => "",
    };
    Error::Usage(format!("{what}: {e}{hint}"))
}

fn open_baseline(cfg: &Config, root: &Root) -> Result<Store> {
    let store = Store::open(&cfg.db, false)?;
    store.limit_cache(512)?;
    store.verify_seal()?;
    crate::store::check_origin(&store, root, cfg.allow_other_host)?;
    if let Some(k) = &cfg.verify_key {
        let key = crate::store::signing::load_verifying_key(k)?;
        crate::store::signing::check(&store, &key)?;
    }
    Ok(store)
}

/// Hash every executable the allow-lists name, before any mark exists (so these opens need
/// no answer), and resolve user names to uids.
fn build_trust(policy: &CompiledPolicy, root: &Root) -> Trust {
    let mut trust = Trust::default();
    let names = crate::users::Names::for_root(root);
    for g in &policy.groups {
        for (i, rule) in g.access.allow.iter().enumerate() {
            if !rule.users.is_empty() || !rule.uids.is_empty() {
                let mut set: HashSet<u32> = rule.uids.iter().copied().collect();
                for u in &rule.users {
                    match names.uid_of(u) {
                        Some(uid) => {
                            set.insert(uid);
                        }
                        None => tracing::warn!(
                            "group {}: allow-list user `{u}` does not exist on this host; the rule cannot match it",
                            g.name
                        ),
                    }
                }
                trust.uids.insert((g.name.clone(), i), set);
            }
            if trust.exes.contains_key(&rule.exe) {
                continue;
            }
            let t = match hash_exe_path(&rule.exe) {
                Ok((id, h)) => {
                    if let Some(want) = rule.exe_hash {
                        if want != h {
                            tracing::warn!(
                                "group {}: {} does not match its exe_hash; it will not be allowed",
                                g.name,
                                Name(&rule.exe)
                            );
                        }
                    }
                    TrustedExe {
                        ids: vec![id],
                        blake3: Some(rule.exe_hash.unwrap_or(h)),
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "group {}: allowed executable {}: {e}; it is trusted only by exe_hash",
                        g.name,
                        Name(&rule.exe)
                    );
                    TrustedExe {
                        ids: Vec::new(),
                        blake3: rule.exe_hash,
                    }
                }
            };
            trust.exes.insert(rule.exe.clone(), t);
        }
    }
    trust
}

/// Identity and BLAKE3 of the executable at `path` (symlinks followed: an allow rule names
/// what `/proc/PID/exe` will show, which is the resolved file).
fn hash_exe_path(path: &[u8]) -> std::io::Result<(ExeId, [u8; 32])> {
    use std::os::unix::ffi::OsStrExt;
    let f = std::fs::File::open(std::ffi::OsStr::from_bytes(path))?;
    hash_open_exe(f)
}

fn hash_open_exe(f: std::fs::File) -> std::io::Result<(ExeId, [u8; 32])> {
    let st = rustix::fs::statx(
        &f,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::BASIC_STATS,
    )?;
    let id = ExeId::of(&st);
    let mut h = blake3::Hasher::new();
    h.update_reader(&f)?;
    // A binary rewritten while hashed has a new ctime: not the identity we hashed.
    let after = rustix::fs::statx(
        &f,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::BASIC_STATS,
    )?;
    if ExeId::of(&after) != id {
        return Err(std::io::Error::other(
            "the executable changed while it was hashed",
        ));
    }
    Ok((id, *h.finalize().as_bytes()))
}

/// Answer a permission event and count it (exactly once per event).
fn answer(s: &Shared, perm: &PermGroup, ev: &FanotifyEvent, allow: bool) {
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
fn answer_and_alert(
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
fn perm_loop(
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
    while !s.stop.load(Ordering::Relaxed) {
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(1024) || !lock(&s.pending).is_empty() {
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
            let snap = read(&s.snap).clone();
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
            let cached = who
                .exe_id
                .and_then(|id| lock(&s.exe_cache).get(&id).copied());
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
                    lock(&s.pending).insert(
                        fd,
                        Pending {
                            event: ev,
                            since: t0,
                            audit_mode: group.access.mode == AccessMode::Audit,
                        },
                    );
                    if hash.try_send(job).is_err() {
                        // The hasher is saturated: this is a stall.
                        if let Some(p) = lock(&s.pending).remove(&fd) {
                            answer_stalled(s, perm, alerts, p, on_stall);
                        }
                    }
                }
            }
        }
    }
}

fn queue_alert(s: &Shared, alerts: &SyncSender<Box<Alert>>, a: Alert) {
    match alerts.try_send(Box::new(a)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            s.stats.alerts_dropped.fetch_add(1, Ordering::Relaxed);
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
    let expired: Vec<Pending> = {
        let mut p = lock(&s.pending);
        let old: Vec<i32> = p
            .iter()
            .filter(|(_, v)| v.since.elapsed() >= stall)
            .map(|(k, _)| *k)
            .collect();
        old.into_iter().filter_map(|k| p.remove(&k)).collect()
    };
    for p in expired {
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

fn answer_all_pending(s: &Shared, perm: &PermGroup, on_stall: OnStall) {
    let all: Vec<Pending> = lock(&s.pending).drain().map(|(_, v)| v).collect();
    for p in all {
        answer(
            s,
            perm,
            &p.event,
            p.audit_mode || on_stall == OnStall::Allow,
        );
    }
}

/// Hash executables whose inode the trust table has not seen, then finish the decision.
fn hash_loop(
    s: &Shared,
    perm: &PermGroup,
    alerts: &SyncSender<Box<Alert>>,
    jobs: Receiver<HashJob>,
) {
    while let Ok(job) = jobs.recv() {
        let pid = job.who.info.pid;
        let hashed = std::fs::File::open(format!("/proc/{pid}/exe"))
            .and_then(hash_open_exe)
            .ok()
            .filter(|(id, _)| Some(*id) == job.who.exe_id);
        if let Some((id, h)) = hashed {
            lock(&s.exe_cache).insert(id, h);
        }
        let Some(p) = lock(&s.pending).remove(&job.fd) else {
            continue; // answered as stalled already
        };
        let snap = read(&s.snap).clone();
        let Some(group) = snap.policy.group(&job.group) else {
            answer(s, perm, &p.event, true);
            continue;
        };
        // No hash (the process exited, or the binary changed under us) → judged as unknown.
        let h = hashed.map(|(_, h)| h).unwrap_or([0; 32]);
        match decide(s.self_pid, job.kind, group, &job.who, &snap.trust, Some(h)) {
            Verdict::Allow { alert: None } => answer(s, perm, &p.event, true),
            Verdict::Allow {
                alert: Some((sev, reason)),
            } => answer_and_alert(
                s, perm, alerts, &p.event, true, group, job.path, &job.who, sev, &reason, job.kind,
            ),
            Verdict::Deny { severity, reason } => answer_and_alert(
                s, perm, alerts, &p.event, false, group, job.path, &job.who, severity, &reason,
                job.kind,
            ),
            Verdict::NeedExeHash => answer(s, perm, &p.event, p.audit_mode),
        }
        s.stats
            .observe_latency(p.since.elapsed().as_micros() as u64);
    }
}

/// The notification thread: map events to paths, identify who caused them, queue them.
fn notify_loop(
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
    while !s.stop.load(Ordering::Relaxed) {
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
        let snap = read(&s.snap).clone();
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

/// Move one group's mark on `fd` from mask `from` to mask `to`: add `to` (an error if that
/// fails), then remove the bits no longer wanted (best effort: the inode may not carry them).
fn move_mask(
    fan: &Fanotify,
    fd: std::os::fd::BorrowedFd<'_>,
    from: u32,
    to: u32,
) -> nix::Result<()> {
    if to != 0 {
        fanotify::mark_fd(fan, fd, MaskFlags::from_bits_retain(u64::from(to)), false)?;
    }
    if from & !to != 0 {
        let _ = fanotify::mark_fd(
            fan,
            fd,
            MaskFlags::from_bits_retain(u64::from(from & !to)),
            true,
        );
    }
    Ok(())
}

/// What [`Checker::apply_marks`] learned about the marked inode.
#[derive(Default)]
struct Applied {
    handle: Option<Vec<u8>>,
    inode: Option<(u64, u64)>,
}

/// Everything that touches the baseline, the marks and the live file system.
struct Checker {
    shared: Arc<Shared>,
    root: Arc<Root>,
    perm: Arc<PermGroup>,
    notify: Arc<Fanotify>,
    store: Store,
    cfg: Config,
    alert: SyncSender<Box<Alert>>,
    /// Last observed state of paths that differ from the baseline (`None`: absent while the
    /// baseline has it). A path not here is as baselined.
    drift: HashMap<Vec<u8>, Option<Entry>>,
    /// Coalescing: path → its events since the last check.
    pending: HashMap<Vec<u8>, Touch>,
    /// Arrival order of pending paths.
    next_seq: u64,
    /// New kernel-audit targets (after a reload, and whenever the marked files change).
    audit: Option<SyncSender<Vec<super::audit::Target>>>,
    /// The marked files changed since the audit targets were last sent.
    audit_dirty: bool,
    audit_sent: Instant,
    /// The trusted content store (`--store`).
    objects: Option<crate::store::objects::ObjectStore>,
    /// Recent automatic restores per path (rate limit).
    restores: HashMap<Vec<u8>, RestoreLog>,
    /// Departures reported before their namespace event came.
    departed: Departures,
    /// Owner and group names for alert details.
    names: Names,
    /// What was last reported per drifted path, as persisted for the next run.
    reported: HashMap<Vec<u8>, Reported>,
    /// `reported` was loaded from an earlier run (so `reconciled` can say what it knew).
    reported_known: bool,
    reported_path: PathBuf,
    reported_dirty: bool,
    reported_saved: Instant,
    /// How long after a save the next may come.
    reported_wait: Duration,
}

/// The audit targets follow the marks at most this often (a burst of creations is one
/// update).
const AUDIT_UPDATE_EVERY: Duration = Duration::from_millis(50);
/// The reported state is written at most this often while changes come (less often when a
/// write takes long).
const REPORTED_SAVE_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct RestoreLog {
    times: std::collections::VecDeque<Instant>,
    abandoned_until: Option<Instant>,
}

/// At most this many automatic restores of one path within [`RESTORE_WINDOW`] ...
const RESTORE_BURST: usize = 5;
const RESTORE_WINDOW: Duration = Duration::from_secs(60);
/// ... then the path is left alone (one `restore_abandoned` alert) for this long.
const RESTORE_BACKOFF: Duration = Duration::from_secs(600);

fn warn_restore_without_store(policy: &CompiledPolicy, have_store: bool) {
    if have_store {
        return;
    }
    for g in &policy.groups {
        if g.on_change
            .contains(&crate::policy::schema::OnChange::Restore)
        {
            tracing::warn!(
                "group {} has `on_change: restore` but the daemon has no --store: changes are only reported",
                g.name
            );
        }
    }
}

/// Re-check a file still being written at most this often.
const WRITE_SETTLE: Duration = Duration::from_millis(50);
/// ... but never later than this after its first event.
const MAX_DELAY: Duration = Duration::from_secs(1);

impl Checker {
    fn snap(&self) -> Arc<Snapshot> {
        read(&self.shared.snap).clone()
    }

    /// Walk (without hashing) and mark every entry and the directories that lead to them;
    /// marks no longer wanted are removed. The new set is built aside and swapped in whole,
    /// so events keep resolving against the old one meanwhile.
    fn place_marks(&mut self) -> Result<()> {
        let snap = self.snap();
        let mut new = Watched::build(self.wanted_marks(&snap.policy));
        let mut perm_inodes = HashMap::new();
        let mut failed = Vec::new();
        let mut path = Vec::new();
        for i in 0..new.len() {
            let Some((p, m, span)) = new.at(i) else { break };
            path.clear();
            path.extend_from_slice(p);
            let prev = read(&self.shared.watched).marks(&path);
            match self.apply_marks(&path, prev, m) {
                Ok(applied) => {
                    if let Some(h) = applied.handle {
                        new.add_handle(&h, span);
                    }
                    if m.perm != 0 {
                        if let Some(ino) = applied.inode {
                            perm_inodes.insert(ino, path.clone());
                        }
                    }
                }
                Err(e) => {
                    if failed.len() < 20 {
                        tracing::warn!("cannot watch {}: {e}", Name(&path));
                    }
                    failed.push(path.clone());
                }
            }
        }
        for p in &failed {
            let _ = new.remove(p);
        }
        let failures = failed.len();
        let stale: Vec<(Vec<u8>, Marks)> = read(&self.shared.watched)
            .iter()
            .filter(|(p, _)| new.index(p).is_none())
            .map(|(p, m)| (p.to_vec(), m))
            .collect();
        for (path, m) in stale {
            let _ = self.apply_marks(&path, m, Marks::default());
        }
        if failures > 20 {
            tracing::warn!("{failures} entries could not be watched in all");
        }
        *write(&self.shared.watched) = new;
        *write(&self.shared.perm_inodes) = perm_inodes;
        self.count_marks();
        self.audit_dirty = true;
        Ok(())
    }

    /// Mark one path (a new or replaced entry) and index it.
    fn mark_one(&mut self, path: &[u8], to: Marks) -> std::io::Result<()> {
        // The kernel-audit rules follow the marked files.
        self.audit_dirty = true;
        let from = read(&self.shared.watched).marks(path);
        let applied = self.apply_marks(path, from, to)?;
        let mut w = write(&self.shared.watched);
        let span = w.set(path, to);
        if let (Some(h), Some(span)) = (applied.handle, span) {
            w.add_handle(&h, span);
        }
        drop(w);
        if let Some(ino) = applied.inode {
            if to.perm != 0 {
                write(&self.shared.perm_inodes).insert(ino, path.to_vec());
            } else if from.perm != 0 {
                write(&self.shared.perm_inodes).remove(&ino);
            }
        }
        self.count_marks();
        Ok(())
    }

    fn count_marks(&self) {
        let (n, p) = read(&self.shared.watched)
            .iter()
            .fold((0, 0), |(n, p), (_, m)| {
                (n + u64::from(m.notify != 0), p + u64::from(m.perm != 0))
            });
        self.shared.stats.marks_notify.store(n, Ordering::Relaxed);
        self.shared.stats.marks_perm.store(p, Ordering::Relaxed);
    }

    fn wanted_marks(&self, policy: &CompiledPolicy) -> Builder {
        let want = Mutex::new(Builder::default());
        // The nearest existing directory of each base, so a base created later is seen.
        for base in policy.bases() {
            let mut dir: &[u8] = &base;
            loop {
                if let Ok(fd) = self
                    .root
                    .resolve(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC)
                {
                    drop(fd);
                    lock(&want).add(
                        dir,
                        Marks {
                            notify: NOTIFY_DIR,
                            perm: 0,
                        },
                    );
                    break;
                }
                let (parent, _) = crate::fsroot::split_parent(dir);
                if parent == dir || parent.is_empty() {
                    break;
                }
                dir = parent;
            }
        }
        walk::walk(
            &self.root,
            policy,
            WalkOptions {
                threads: self.cfg.threads,
                hash: false,
            },
            &|item| {
                if let Item::Entry(e) = item {
                    let m = marks_for(e.ftype, policy.classify(&e.path));
                    let (parent, _) = crate::fsroot::split_parent(&e.path);
                    let mut w = lock(&want);
                    w.add(&e.path, m);
                    w.add_dir(
                        parent,
                        Marks {
                            notify: NOTIFY_DIR,
                            perm: 0,
                        },
                    );
                }
            },
        );
        want.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Move `path` from marks `from` to marks `to` (race-free: through an `O_PATH` fd).
    /// Returns the handle (when it now has notification marks) and the inode.
    fn apply_marks(&self, path: &[u8], from: Marks, to: Marks) -> std::io::Result<Applied> {
        let fd = self
            .root
            .resolve(path, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC)?;
        let st = rustix::fs::fstat(&fd)?;
        let ftype = st.st_mode & 0o170000;
        if ftype != 0o040000 && ftype != 0o100000 {
            // Symlinks and specials: watched via their directory.
            return Ok(Applied::default());
        }
        let io = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
        move_mask(&self.notify, fd.as_fd(), from.notify, to.notify).map_err(io)?;
        move_mask(&self.perm.fan, fd.as_fd(), from.perm, to.perm).map_err(io)?;
        let handle = if to.notify != 0 {
            Some(fanotify::handle_of(fd.as_fd())?)
        } else {
            None
        };
        Ok(Applied {
            handle,
            inode: Some((st.st_dev, st.st_ino)),
        })
    }

    /// Walk and hash every policy path, handing each live entry to `f` on this thread (the
    /// walk runs on its own threads; memory stays bounded by the channel, not the tree).
    fn stream_live(&self, policy: &CompiledPolicy, mut f: impl FnMut(Entry)) {
        let (tx, rx) = mpsc::sync_channel::<Item>(1024);
        let root = &self.root;
        let threads = self.cfg.threads;
        std::thread::scope(|sc| {
            sc.spawn(move || {
                walk::walk(
                    root,
                    policy,
                    WalkOptions {
                        threads,
                        hash: true,
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

    /// Live entries compared with `prev_of` (the baseline, or what was last observed), plus
    /// the paths `known` lists that were not seen live. One pass, no copy of the tree.
    fn compare_live(
        &self,
        policy: &CompiledPolicy,
        mut on_live: impl FnMut(Entry),
    ) -> (Vec<bool>, HashSet<Vec<u8>>) {
        let n = read(&self.shared.watched).len();
        let mut seen = vec![false; n];
        let mut extra = HashSet::new();
        self.stream_live(policy, |live| {
            match read(&self.shared.watched).index(&live.path) {
                Some(i) if i < n => seen[i] = true,
                _ => {
                    extra.insert(live.path.clone());
                }
            }
            on_live(live);
        });
        (seen, extra)
    }

    fn was_seen(&self, seen: &[bool], extra: &HashSet<Vec<u8>>, path: &[u8]) -> bool {
        match read(&self.shared.watched).index(path) {
            Some(i) => seen.get(i).copied().unwrap_or(false) || extra.contains(path),
            None => extra.contains(path),
        }
    }

    /// Compare the live state with the baseline. With `report`, every difference is a
    /// `reconciled` alert (and restoring groups are put back); without, only the drift state
    /// is recomputed (after a reload). A `reconciled` alert says whether an earlier run
    /// already reported that very state (`detail.already_reported`), when that is known.
    fn reconcile(&mut self, report: bool) -> Result<usize> {
        use crate::baseline::check::{compare, Finding, Outcome as CmpOutcome};
        let snap = self.snap();
        let mut findings: Vec<Finding> = Vec::new();
        let mut db_error = None;
        let (seen, extra) = self.compare_live(&snap.policy, |live| {
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
        });
        if let Some(e) = db_error {
            return Err(e);
        }
        self.store.for_each_entry(|b| {
            if !self.was_seen(&seen, &extra, &b.path) {
                if let CmpOutcome::Finding(f) = compare(&snap.policy, Some(&b), None) {
                    findings.push(f);
                }
            }
            Ok(())
        })?;
        self.drift.clear();
        let mut before = std::mem::take(&mut self.reported);
        self.reported_dirty = true;
        let known = std::mem::replace(&mut self.reported_known, true) && report;
        let now = crate::alert::record::now_ts();
        let n = findings.len();
        for f in findings {
            let compare_set = snap
                .policy
                .group(&f.group)
                .map_or_else(crate::policy::CompareSet::default_set, |g| g.compare);
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
                        && g.on_change
                            .contains(&crate::policy::schema::OnChange::Restore)
                        && self.try_restore(&f.path, b, g.compare, g.class, g.name.clone())
                    {
                        continue;
                    }
                }
            }
            self.reported.insert(
                f.path.clone(),
                earlier.unwrap_or(Reported {
                    state,
                    ts: now.clone(),
                }),
            );
            self.drift.insert(f.path, f.live.map(|b| *b));
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

    /// Record that `path` was last observed as `live` (it differs from the baseline), or,
    /// with `None` for `live` and `same_as_base`, that it is as baselined again.
    fn set_drift(&mut self, path: &[u8], live: Option<Entry>, g: &Group, same_as_base: bool) {
        self.reported_dirty = true;
        if same_as_base {
            self.drift.remove(path);
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
        self.drift.insert(path.to_vec(), live);
    }

    /// Persist what was reported (debounced while running; always at a clean stop).
    fn save_reported(&mut self) {
        if !self.reported_dirty {
            return;
        }
        self.reported_dirty = false;
        let t0 = Instant::now();
        if let Err(e) = reported::save(&self.reported_path, &self.reported) {
            tracing::warn!("{e}");
        }
        // A large drift set costs a rewrite each time: never spend more than about 5% of
        // the checker's time on it.
        let took = t0.elapsed();
        self.reported_wait = REPORTED_SAVE_EVERY.max(took * 20);
        self.reported_saved = Instant::now();
    }

    fn run(&mut self, work: Receiver<Work>) {
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let now = Instant::now();
            let next_due = self.pending.values().map(|t| self.due(t)).min();
            let wait = next_due
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            let wait = if self.audit_dirty || self.reported_dirty {
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
            if self.audit_dirty && self.audit_sent.elapsed() >= AUDIT_UPDATE_EVERY {
                self.send_audit_targets();
            }
            if self.reported_dirty && self.reported_saved.elapsed() >= self.reported_wait {
                self.save_reported();
            }
        }
    }

    /// Hand the audit thread the current set of marked files (rules follow the marks).
    fn send_audit_targets(&mut self) {
        self.audit_dirty = false;
        self.audit_sent = Instant::now();
        if let Some(a) = &self.audit {
            if a.try_send(audit_targets(self)).is_err() {
                // The audit thread is behind; try again at the next round.
                self.audit_dirty = true;
            }
        }
    }

    fn due(&self, t: &Touch) -> Instant {
        // Still being written (modified, not closed): wait for the writer to settle.
        let settling = t.mask & libc::FAN_MODIFY != 0 && t.mask & libc::FAN_CLOSE_WRITE == 0;
        if settling {
            (t.last + WRITE_SETTLE).min(t.first + MAX_DELAY)
        } else {
            t.last
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
            .filter(|(_, t)| self.due(t) <= now)
            .map(|(p, t)| (t.seq, p.clone()))
            .collect();
        due.sort_unstable();
        for (_, path) in due {
            if let Some(t) = self.pending.remove(&path) {
                self.check_path(&path, t);
            }
        }
    }

    fn baseline_entry(&self, path: &[u8]) -> Option<Entry> {
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
        let snap = self.snap();
        let group = snap.policy.classify(path);
        if group.is_none() {
            // A new directory that may hold watched entries: mark and scan everything.
            if t.mask & NAMESPACE != 0 && t.mask & libc::FAN_ONDIR != 0 {
                self.rescan_quiet_marks();
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
            let have = read(&self.shared.watched).marks(path);
            let moved = t.mask & (NAMESPACE | libc::FAN_DELETE_SELF | libc::FAN_MOVE_SELF) != 0;
            if (moved || have != want)
                && self.mark_one(path, want).is_ok()
                && l.ftype == crate::baseline::entry::FileType::Dir
                && have == Marks::default()
            {
                // A new directory: its children may predate the mark.
                self.rescan_quiet_marks();
                self.rescan("a watched directory appeared");
            }
        } else if write(&self.shared.watched).remove(path) {
            self.audit_dirty = true;
        }
        let Some(g) = group else { return };
        let base = self.baseline_entry(path);
        let prev: Option<Entry> = match self.drift.get(path) {
            Some(p) => p.clone(),
            None => base.clone(),
        };
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
        if differs_from_base
            && g.on_change
                .contains(&crate::policy::schema::OnChange::Restore)
        {
            if let Some(b) = &base {
                if self.try_restore(path, b, g.compare, g.class, g.name.clone()) {
                    self.set_drift(path, None, g, true);
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
        self.set_drift(path, live, g, same_as_base);
    }

    /// Put `path` back as baselined from the trusted store, at a bounded rate. True when it
    /// now matches the baseline.
    fn try_restore(
        &mut self,
        path: &[u8],
        base: &Entry,
        compare: crate::policy::CompareSet,
        class: Class,
        group: String,
    ) -> bool {
        let Some(objects) = &self.objects else {
            return false;
        };
        let now = Instant::now();
        let log = self.restores.entry(path.to_vec()).or_default();
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
                let snap = self.snap();
                let want = marks_for(base.ftype, snap.policy.classify(path));
                let _ = self.mark_one(path, want);
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
                if let Ok(Some(now)) = walk::capture_path(&self.root, &self.snap().policy, path) {
                    let want = marks_for(now.ftype, self.snap().policy.classify(path));
                    let _ = self.mark_one(path, want);
                }
                false
            }
        }
    }

    /// Re-mark after the tree's shape changed (a new directory).
    fn rescan_quiet_marks(&mut self) {
        if let Err(e) = self.place_marks() {
            tracing::warn!("re-marking: {e}");
        }
    }

    /// Compare every watched entry with what was last observed; alert on each difference.
    fn rescan(&mut self, why: &'static str) {
        let snap = self.snap();
        let mut touches = Vec::new();
        let (seen, extra) = self.compare_live(&snap.policy, |l| {
            let prev = match self.drift.get(&l.path) {
                Some(p) => p.clone(),
                None => self.baseline_entry(&l.path),
            };
            let differs = match &prev {
                None => true,
                Some(p) => {
                    let cmp = snap
                        .policy
                        .group(&l.group)
                        .map_or_else(crate::policy::CompareSet::default_set, |g| g.compare);
                    !diff(p, &l, cmp).is_empty()
                }
            };
            if differs {
                touches.push(l.path);
            }
        });
        // Baselined or drifted paths that are gone.
        let _ = self.store.for_each_entry(|e| {
            if !self.was_seen(&seen, &extra, &e.path)
                && !matches!(self.drift.get(&e.path), Some(None))
            {
                touches.push(e.path);
            }
            Ok(())
        });
        for (p, v) in &self.drift {
            if v.is_some() && !self.was_seen(&seen, &extra, p) {
                touches.push(p.clone());
            }
        }
        touches.sort();
        touches.dedup();
        let changed = touches.len();
        for p in touches {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.check_path(&p, Touch::new(seq, Instant::now()));
        }
        tracing::info!("rescan ({why}): {changed} entries differ from what was last seen");
    }

    fn reload(&mut self) {
        let policy = match crate::policy::load(&self.cfg.policy) {
            Ok(p) => p,
            Err(e) => {
                let mut a = Alert::new(Kind::PolicyReloaded, Severity::High);
                a.outcome = Some(Outcome::Failure);
                a.detail.insert("message".into(), format!("{e}").into());
                let _ = self.alert.send(Box::new(a));
                return;
            }
        };
        warn_restore_without_store(&policy, self.objects.is_some());
        let store = match open_baseline(&self.cfg, &self.root) {
            Ok(s) => s,
            Err(e) => {
                let mut a = Alert::new(Kind::PolicyReloaded, Severity::High);
                a.outcome = Some(Outcome::Failure);
                a.detail.insert("message".into(), format!("{e}").into());
                let _ = self.alert.send(Box::new(a));
                return;
            }
        };
        let trust = build_trust(&policy, &self.root);
        let digest = policy.digest.clone();
        *write(&self.shared.snap) = Arc::new(Snapshot::new(policy, trust));
        self.store = store;
        let before = read(&self.shared.watched).len();
        if let Err(e) = self.place_marks() {
            tracing::warn!("re-marking after reload: {e}");
        }
        let drift = match self.reconcile(false) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("reconcile after reload: {e}");
                self.drift.len()
            }
        };
        if let Some(a) = &self.audit {
            let _ = a.try_send(audit_targets(self));
        }
        let mut a = Alert::new(Kind::PolicyReloaded, Severity::Info);
        a.outcome = Some(Outcome::Success);
        a.detail.insert("policy_digest".into(), digest.into());
        a.detail.insert("marked_before".into(), before.into());
        a.detail
            .insert("marked".into(), read(&self.shared.watched).len().into());
        a.detail.insert("drift".into(), drift.into());
        let _ = self.alert.send(Box::new(a));
    }
}

/// The kernel-audit targets: every regular file the policy watches.
fn audit_targets(c: &Checker) -> Vec<super::audit::Target> {
    let snap = c.snap();
    let mut t: Vec<super::audit::Target> = read(&c.shared.watched)
        .iter()
        .filter(|(p, m)| {
            u64::from(m.notify) & libc::FAN_ONDIR == 0 && snap.policy.classify(p).is_some()
        })
        .map(|(p, _)| super::audit::Target {
            path: p.to_vec(),
            is_dir: false,
        })
        .collect();
    t.sort();
    t
}

/// Start the kernel-audit reader for the watched files; say once, clearly, when it cannot.
/// Returns the sender that hands it new targets after a reload.
fn start_audit(
    shared: &Arc<Shared>,
    checker: &Checker,
    alerts: &SyncSender<Box<Alert>>,
    threads: &mut Vec<std::thread::JoinHandle<()>>,
) -> Option<SyncSender<Vec<super::audit::Target>>> {
    use super::audit::{is_lost_records, AuditWatch};
    let targets = audit_targets(checker);
    let mut watch = match AuditWatch::start(&targets) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("{e}");
            let mut a = Alert::new(Kind::Health, Severity::Medium);
            a.rule = Some("kernel-audit-unavailable".into());
            a.detail.insert("message".into(), e.to_string().into());
            let _ = alerts.send(Box::new(a));
            return None;
        }
    };
    if watch.widened() {
        tracing::info!(
            "kernel audit: {} targets watched through {} rules on their directories",
            targets.len(),
            watch.rule_count()
        );
    }
    let (tx, rx) = mpsc::sync_channel::<Vec<super::audit::Target>>(4);
    let (s, a) = (shared.clone(), alerts.clone());
    let t = spawn("kmsentry-audit", move || {
        while !s.stop.load(Ordering::Relaxed) {
            // The latest target set only: a burst of creations sends several.
            if let Some(t) = rx.try_iter().last() {
                if let Err(e) = watch.update(&t) {
                    tracing::error!("kernel audit: {e}");
                }
            }
            // Short: target updates wait for this receive to end.
            match watch.recv(Duration::from_millis(50)) {
                Ok(Some(d)) => {
                    let snap = read(&s.snap).clone();
                    let Some(g) = snap.policy.classify(&d.path) else {
                        continue;
                    };
                    let al = super::access::kernel_denial_alert(g, &d);
                    queue_alert(&s, &a, al);
                }
                Ok(None) => {}
                Err(e) if is_lost_records(&e) => {
                    let mut al = Alert::new(Kind::Overflow, Severity::Medium);
                    al.rule = Some("kernel-audit-records-lost".into());
                    al.detail.insert(
                        "message".into(),
                        "kernel audit records were dropped before they could be read; some kernel denials may be missing".into(),
                    );
                    queue_alert(&s, &a, al);
                }
                Err(e) => {
                    tracing::error!("kernel audit: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        drop(watch); // removes the rules
    });
    match t {
        Ok(t) => {
            threads.push(t);
            Some(tx)
        }
        Err(e) => {
            tracing::warn!("kernel audit: {e}");
            None
        }
    }
}

fn shared_status(s: &Arc<Shared>) -> Arc<dyn Fn() -> serde_json::Value + Send + Sync> {
    let s = s.clone();
    Arc::new(move || status_json(&s))
}

fn status_json(s: &Shared) -> serde_json::Value {
    let st = &s.stats;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let uptime = s.started.elapsed().as_secs_f64().max(0.001);
    let mut buckets = Vec::new();
    for (i, b) in st.latency.iter().enumerate() {
        let le = LATENCY_BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_string(), |v| v.to_string());
        buckets.push(serde_json::json!({"le_us": le, "count": l(b)}));
    }
    let rss_kib = rss_kib();
    // Every answered permission event is either allowed or denied: `events.perm` is their
    // sum, read once, so the document is consistent however fast events come.
    let (allowed, denied) = (l(&st.allowed), l(&st.denied));
    let perm = allowed + denied;
    serde_json::json!({
        "pid": s.self_pid,
        "uptime_s": uptime as u64,
        "marks": {"notify": l(&st.marks_notify), "perm": l(&st.marks_perm)},
        "queue_depth": l(&st.queued),
        "pending_decisions": lock(&s.pending).len(),
        "events": {"perm": perm, "notify": l(&st.notify_events)},
        "events_per_s": {"perm": perm as f64 / uptime, "notify": l(&st.notify_events) as f64 / uptime},
        "decisions": {"allowed": allowed, "denied": denied, "stalled": l(&st.stalled), "allowed_self": l(&st.allowed_self)},
        "decisions_per_s": perm as f64 / uptime,
        "decision_latency_us": buckets,
        "checks": l(&st.checks),
        "overflows": l(&st.overflows),
        "alerts_dropped": l(&st.alerts_dropped),
        "alerts": serde_json::to_value(&*lock(&st.alerts)).unwrap_or_default(),
        "rss_kib": rss_kib,
        "policy_digest": read(&s.snap).policy.digest,
    })
}

/// Resident set size in KiB (0 when unknown).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_ascii_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// Tell systemd (Type=notify) about our state, when it is listening.
fn sd_notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let addr = if let Some(abs) = bytes.strip_prefix(b"@") {
        std::os::unix::net::SocketAddr::from_abstract_name(abs)
    } else {
        std::os::unix::net::SocketAddr::from_pathname(std::path::Path::new(&path))
    };
    let Ok(addr) = addr else { return };
    if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = sock.send_to_addr(state.as_bytes(), &addr);
    }
}
