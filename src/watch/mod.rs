//! `kmsentry watch`: the daemon. Inputs turn kernel and file data into events; one place
//! routes each event to [`crate::decide`] or to the checker; each action happens in one
//! module.
//!
//! # Data flow
//!
//! 0. **Start** ([`run`], this file, only wiring): signals blocked ([`signals`]) and the
//!    instance locks taken ([`instance`]) before anything else; the snapshot loaded
//!    ([`reload::load_snapshot`]: policy + baseline → [`reload::Snapshot`]); both fanotify
//!    groups created ([`fanotify`]); the threads started; every mark placed ([`marks`]);
//!    the live tree reconciled with the baseline ([`reconcile`]); kernel audit started
//!    ([`kernel_audit`]); then `started`.
//! 1. **Permission events** ([`permission`], thread `perm`): fd → group by the event fd's
//!    inode (the narrow-inode index of [`marks`]) → opener from `/proc` ([`identity`]) and the
//!    executable cache ([`exe`]) → [`crate::decide::decide`] → the answer (no file, alert
//!    or NSS I/O before it) → the `access` alert ([`access`]) queued. A verdict that needs an executable hash goes
//!    to the `exe-hash` thread ([`exe`]), which answers it; one that takes longer than
//!    `--stall` is answered per `--on-stall`.
//! 2. **Notifications** ([`notify`], thread `notify`): FID records → watched paths
//!    ([`paths`]) + the process that caused them → [`shared::Work::Touch`] on the checker's
//!    queue. A queue overflow (the kernel's or ours) → one rescan request.
//! 3. **Kernel denials** ([`audit`], thread `audit`, glue in [`kernel_audit`]): the kernel's
//!    own `EPERM`/`EACCES` on a watched file → an `access`/`failure` alert.
//! 4. **Signals** ([`signals`], thread `signals`): TERM/INT → stop; HUP → a reload request.
//! 5. **The checker** ([`checker`], the main thread): the one router of file events. It
//!    coalesces each path's events ([`touch`]), captures the path, keeps its marks in step
//!    ([`marks`]), builds the alerts ([`changes`], [`detail`]), restores when the group asks
//!    ([`restore`]), and remembers the drift ([`drift`], persisted through [`reported`]). It
//!    also runs rescans ([`reconcile`]), reloads ([`reload`]: load aside, swap one pointer)
//!    and hands the kernel-audit reader new targets ([`kernel_audit`]).
//! 6. **Alerts** ([`sinks`], thread `alert`): every alert goes through one bounded queue to
//!    this thread, which resolves user names and writes the sinks ([`crate::alert`]).
//! 7. **Logs** ([`log_room`], thread `logs`): the policy's `logs:` sources (files followed
//!    across rotation, a syslog socket) → [`crate::logs::room::LogRoom`] → `log` alerts on the
//!    same alert queue; read positions saved once their alerts are written.
//! 8. **Status** ([`status`]): counters bumped by every thread; the status socket and the
//!    metrics endpoint read them.
//!
//! Threads and what each may block on:
//!
//! | thread | blocks on | never does |
//! |---|---|---|
//! | `perm` | `poll` on the permission group | file I/O, alert I/O, hashing, NSS: it reads `/proc`, calls [`decide`](crate::decide::decide), answers the kernel, then queues the record |
//! | `notify` | `poll` on the notification group | hashing; it maps events to paths, identifies the process (pidfd-checked), and queues them |
//! | `check` (main) | its queue | answering permission events; it captures, hashes, diffs, marks new entries, keeps the audit rules in step, rescans, reloads |
//! | `exe-hash` | hashing an executable that needs it | holding an event past `stall`: `perm` answers with `on_stall` first |
//! | `alert` | the sinks (fsync, network), user-name lookups | anything else |
//! | `audit` | the audit netlink socket | |
//! | `logs` | its poll tick (10 ms) or a syslog datagram; the alert queue when more than 4096 of its alerts are unwritten | opening a symlink, FIFO or device; saving a position before its alerts are written |
//! | `signals` | the `signalfd` | |
//!
//! The daemon's own opens (reconcile, rescans, hashing an executable) raise permission
//! events like anyone's; `perm` allows its own pid before anything else, and never opens a
//! file itself, so no thread waits on an answer only it could give. What the threads share
//! is in [`shared`]; no lock there is held across I/O.

pub mod access;
pub mod audit;
pub mod changes;
mod checker;
pub mod detail;
mod drift;
mod exe;
pub mod fanotify;
pub mod identity;
pub mod instance;
mod kernel_audit;
mod log_room;
mod marks;
mod notify;
pub mod paths;
mod permission;
mod reconcile;
mod reload;
pub mod reported;
mod restore;
mod shared;
pub mod signals;
mod sinks;
pub mod status;
pub mod touch;

use crate::alert::{Alert, AlertConfig, Alerter, Kind};
use crate::baseline::diff::Severity;
use crate::error::{Error, Result};
use crate::fsroot::Root;
use checker::Checker;
use instance::Instance;
use marks::Marker;
use restore::Restorer;
use shared::{lock, read, spawn, Shared, Work};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

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
    let mut instance = Instance::acquire(&instance::resources(
        &cfg.db,
        cfg.alerts.file.as_deref(),
        cfg.status_socket.as_deref(),
    ))?;
    instance::raise_fd_limit();
    let root = Arc::new(Root::open(std::path::Path::new("/"))?);
    // Before any mark exists: hashing the allowed executables needs no answer.
    let loaded = reload::load_snapshot(&cfg, &root)?;
    let objects = match &cfg.store {
        Some(p) => Some(crate::store::objects::ObjectStore::open(p)?),
        None => None,
    };
    let shared = Arc::new(Shared::new(loaded.snapshot));
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

    let alerter = Alerter::new(cfg.alerts.clone())?;
    let (alert_tx, alert_rx) = mpsc::sync_channel::<Box<Alert>>(16_384);
    let (work_tx, work_rx) = mpsc::sync_channel::<Work>(16_384);
    let (hash_tx, hash_rx) = mpsc::sync_channel::<exe::HashJob>(1024);

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
            permission::perm_loop(&s, &f, &a, &h, on_stall, stall, spin)
        })?);
    }
    {
        let (s, f, a) = (shared.clone(), perm.clone(), alert_tx.clone());
        threads.push(spawn("kmsentry-exe-hash", move || {
            exe::hash_loop(&s, &f, &a, hash_rx)
        })?);
    }

    let marker = Marker::new(
        shared.clone(),
        root.clone(),
        perm.clone(),
        notify.clone(),
        cfg.threads,
    );
    let restorer = Restorer::new(root.clone(), alert_tx.clone(), objects);
    let mut checker = Checker::new(
        shared.clone(),
        root.clone(),
        loaded.store,
        cfg.clone(),
        alert_tx.clone(),
        marker,
        restorer,
    );
    checker.marks.place()?;
    tracing::info!(
        "marks placed: {} paths, RSS {} KiB",
        read(&shared.watched).len(),
        status::rss_kib()
    );
    {
        let (s, f, a, w) = (
            shared.clone(),
            notify.clone(),
            alert_tx.clone(),
            work_tx.clone(),
        );
        threads.push(spawn("kmsentry-notify", move || {
            notify::notify_loop(&s, &f, &a, &w)
        })?);
    }
    let alert_thread = sinks::start(shared.clone(), &root, alerter, alert_rx)?;

    // Reconcile: everything that changed while no daemon watched is reported before
    // `started`. The marks are already in place, so nothing slips between the two.
    let reconciled = checker.reconcile(true)?;
    tracing::info!(
        "reconciled: {reconciled} differences, RSS {} KiB",
        status::rss_kib()
    );
    if cfg.audit {
        checker.audit = kernel_audit::start(&shared, &alert_tx, &mut threads);
    }
    // The log room: every source opened (a syslog socket that cannot be bound fails the
    // start) before `started`, so a line written after `started` is read.
    let logs = log_room::LogThread::open(&shared, &cfg.db, cfg.alerts.file.as_deref(), &alert_tx)?;
    let log_sources = logs.as_ref().map_or(0, log_room::LogThread::sources);
    if let Some(l) = logs {
        threads.push(l.start()?);
    }
    let status_socket =
        status::serve_configured(cfg.status_socket.as_deref(), cfg.metrics, &shared);
    let mut started = started_alert(
        &shared,
        reconciled,
        checker.audit.is_active(),
        instance.previous(),
    );
    if log_sources > 0 {
        started
            .detail
            .insert("log_sources".into(), log_sources.into());
    }
    let _ = alert_tx.send(Box::new(started));
    sd_notify("READY=1");
    threads.push(signals::start(
        shared.clone(),
        sigfd,
        work_tx.clone(),
        cfg.run_for,
    )?);

    // The checker runs on this thread until stop.
    checker.run(work_rx);

    // Shutdown: answer everything pending, say `stopped`, flush the sinks.
    shared.stop.store(true, Ordering::SeqCst);
    drop(work_tx);
    drop(hash_tx);
    for t in threads {
        let _ = t.join();
    }
    permission::answer_all_pending(&shared, &perm, cfg.on_stall);
    checker.drift.save();
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

/// `started`: written once every mark is in place and the reconciliation is reported.
fn started_alert(
    s: &Shared,
    reconciled: usize,
    kernel_audit: bool,
    previous: Option<&instance::PreviousRun>,
) -> Alert {
    let mut started = Alert::new(Kind::Started, Severity::Info);
    started
        .detail
        .insert("version".into(), env!("CARGO_PKG_VERSION").into());
    started.detail.insert("pid".into(), s.self_pid.into());
    started.detail.insert(
        "marks_notify".into(),
        s.stats.marks_notify.load(Ordering::Relaxed).into(),
    );
    started.detail.insert(
        "marks_perm".into(),
        s.stats.marks_perm.load(Ordering::Relaxed).into(),
    );
    started
        .detail
        .insert("reconciled".into(), reconciled.into());
    started
        .detail
        .insert("kernel_audit".into(), kernel_audit.into());
    started.detail.insert(
        "policy_digest".into(),
        read(&s.snap).policy.digest.clone().into(),
    );
    if let Some(prev) = previous {
        if !prev.clean {
            started.severity = Severity::Medium;
        }
        started
            .detail
            .insert("previous_run".into(), prev.to_value());
    }
    started
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
