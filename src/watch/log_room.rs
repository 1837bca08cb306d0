//! The log room (thread `logs`): reads the policy's `logs:` sources (files followed across
//! rotation by [`crate::logs::follow`], syslog datagrams on the daemon's own socket via
//! [`crate::logs::socket`]), judges every line in [`crate::logs::room::LogRoom`], and raises
//! each finding as a `kind: "log"` alert through the one alert queue ([`super::sinks`]), so
//! log alerts share the hash chain, checkpoints and sinks of file alerts.
//!
//! Exactly once into the alert log: a file's read position is persisted
//! ([`crate::logs::positions`], in `logs.db` beside the baseline) only once every `log`
//! alert queued before it has been written by the alert thread (which counts them in
//! `Stats::log_alerts_written` after the batch's write and fsync), so a restart resumes
//! after the last line whose alerts are on disk: nothing skipped. The two files cannot
//! commit together, so a crash between an alert's fsync and the next position save would
//! repeat lines; to close that, the start also reads the `log` alerts in the alert log's
//! tail ([`alerted_lines`]): each names its file's (dev, inode) and line offset, and a
//! resumed file skips every line up to and including the last one already alerted.
//!
//! Backpressure: this thread waits (never the permission path): at most
//! [`MAX_IN_FLIGHT`] log alerts are queued and not yet written, so a burst of log findings
//! leaves the rest of the 16k-slot queue to `access` and file alerts, whose producers
//! `try_send`.
//!
//! Reload: the checker swaps the snapshot only after the new policy's rules compiled
//! ([`super::reload::load_snapshot`] builds a room aside); this thread sees the new pointer,
//! commits the learned state, builds its room from the new snapshot and keeps the followed
//! files (and their positions) of every source that still reads the same place.
//!
//! The daemon's own reads of log files raise permission events only where a log is also a
//! guarded file; the permission thread allows the daemon's pid before anything else, and
//! this thread is never the one answering, so no read here waits on the daemon itself.
//!
//! Must not: block the permission path, open a log through a symlink, or save a position
//! ahead of its alerts.

use super::reload::Snapshot;
use super::shared::{lock, spawn, Shared};
use crate::alert::{Alert, Kind, LogFacts, LogOrigin};
use crate::baseline::diff::Severity;
use crate::error::Result;
use crate::logs::follow::{Follower, NoticeKind, Seen};
use crate::logs::positions::{FilePos, Positions};
use crate::logs::room::{LogFinding, LogRoom, Position};
use crate::logs::socket::SyslogSocket;
use crate::logs::state::LearnedState;
use crate::policy::logs::SourceKind;
use crate::sanitize::Name;
use rustix::event::{poll, PollFd, PollFlags};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Log alerts queued and not yet written, at most.
pub(super) const MAX_IN_FLIGHT: u64 = 4096;
/// How long one wait for input lasts (the line → alert latency floor for files).
const TICK: Duration = Duration::from_millis(10);
/// Positions are snapshotted at most this often while lines keep coming.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(20);

/// The learned state and positions database beside the baseline.
pub(super) fn state_path(db: &Path) -> PathBuf {
    db.with_file_name("logs.db")
}

/// Every file source's positions at one moment.
type PositionSet = Vec<(String, Vec<FilePos>)>;

enum Reader {
    File {
        glob: String,
        follower: Follower,
    },
    Socket {
        path: String,
        socket: SyslogSocket,
    },
    /// Declared but not read by this version (reported at start).
    Journald,
}

struct Input {
    source: String,
    reader: Reader,
}

impl Input {
    fn same_place(&self, kind: &SourceKind) -> bool {
        match (&self.reader, kind) {
            (Reader::File { glob, .. }, SourceKind::File(g)) => glob == g,
            (Reader::Socket { path, .. }, SourceKind::Syslog(p)) => path == p,
            (Reader::Journald, SourceKind::Journald { .. }) => true,
            _ => false,
        }
    }
}

/// The thread's state.
pub(super) struct LogThread {
    shared: Arc<Shared>,
    alerts: SyncSender<Box<Alert>>,
    state_path: PathBuf,
    snap: Arc<Snapshot>,
    room: LogRoom,
    inputs: Vec<Input>,
    positions: Positions,
    /// `log` alerts queued so far.
    sent: u64,
    /// Position snapshots waiting for their alerts to be written: (sent then, positions).
    waiting: VecDeque<(u64, PositionSet)>,
    last_snapshot: Instant,
    dirty: bool,
    notices: BTreeMap<&'static str, u64>,
    last_status: Instant,
}

fn severity(s: &str) -> Severity {
    match s {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        "low" => Severity::Low,
        _ => Severity::Info,
    }
}

/// A finding as the alert the sinks write.
pub(super) fn alert_of(f: LogFinding, origin: LogOrigin) -> Alert {
    let mut a = Alert::new(Kind::Log, severity(f.severity));
    a.rule = Some(f.rule);
    a.log = Some(Box::new(LogFacts {
        title: f.title,
        source: f.source,
        origin,
        time: f.time,
        fields: f.fields,
        correlation: f
            .correlation
            .map(|c| (c.kind, c.count, c.window_secs, c.group_by)),
    }));
    a
}

fn now_secs() -> Option<i64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
}

/// How much of the alert log's end is read at start for [`alerted_lines`].
const TAIL_BYTES: u64 = 8 << 20;

/// (dev, inode) → offset of the last line with a `log` alert in the alert log's last
/// [`TAIL_BYTES`]. A crash after an alert's fsync and before its position was saved leaves
/// the alert here and the position behind it: those lines are not judged again.
fn alerted_lines(alert_log: Option<&Path>) -> HashMap<(u64, u64), u64> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = HashMap::new();
    let Some(p) = alert_log else { return out };
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
    else {
        return out;
    };
    let Ok(m) = f.metadata() else { return out };
    if !m.is_file() {
        return out;
    }
    let start = m.len().saturating_sub(TAIL_BYTES);
    let mut buf = Vec::new();
    if f.seek(std::io::SeekFrom::Start(start)).is_err()
        || f.take(TAIL_BYTES).read_to_end(&mut buf).is_err()
    {
        return out;
    }
    let mut lines = buf.split(|&b| b == b'\n');
    if start > 0 {
        lines.next(); // a partial first line
    }
    for l in lines {
        // Cheap filter before parsing: only `log` alerts of files matter.
        const KIND: &[u8] = b"\"kind\":\"log\"";
        if !l.windows(KIND.len()).any(|w| w == KIND) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(l) else {
            continue;
        };
        let pos = &v["log"];
        if let (Some(dev), Some(ino), Some(off)) = (
            pos["dev"].as_u64(),
            pos["inode"].as_u64(),
            pos["offset"].as_u64(),
        ) {
            let e = out.entry((dev, ino)).or_insert(off);
            *e = (*e).max(off);
        }
    }
    out
}

fn source_health(source: &str, event: &str, msg: String) -> Alert {
    let mut a = Alert::new(Kind::Health, Severity::Medium);
    a.outcome = Some(crate::alert::Outcome::Failure);
    a.detail.insert("source".into(), source.into());
    a.detail.insert("log_event".into(), event.into());
    a.detail.insert("message".into(), msg.into());
    a
}

fn open_inputs(
    snap: &Snapshot,
    positions: &Positions,
    mut keep: Vec<Input>,
    alerted: &HashMap<(u64, u64), u64>,
    strict: bool,
    health: &mut Vec<Alert>,
) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    for src in &snap.policy.logs {
        if let Some(i) = keep
            .iter()
            .position(|k| k.source == src.name && k.same_place(&src.kind))
        {
            out.push(keep.swap_remove(i));
            continue;
        }
        let opened: Result<Reader> = match &src.kind {
            SourceKind::File(glob) => positions.load(&src.name).and_then(|stored| {
                let known = positions.known(&src.name)?;
                Ok(Reader::File {
                    glob: glob.clone(),
                    follower: Follower::resuming(glob, &stored, known, alerted)?,
                })
            }),
            SourceKind::Syslog(path) => {
                SyslogSocket::bind(Path::new(path)).map(|socket| Reader::Socket {
                    path: path.clone(),
                    socket,
                })
            }
            SourceKind::Journald { .. } => {
                let msg = format!(
                    "log source {}: journald sources are not read by `kmsentry watch` in this version; forward the unit to a `syslog:` source (e.g. rsyslog's imjournal + omuxsock) instead",
                    src.name
                );
                tracing::warn!("{msg}");
                health.push(source_health(&src.name, "unsupported", msg));
                Ok(Reader::Journald)
            }
        };
        let reader = match opened {
            Ok(r) => r,
            // At start a source that cannot be opened stops the daemon (exit 2); after a
            // reload the other sources go on and this one is reported.
            Err(e) if strict => return Err(e),
            Err(e) => {
                let msg = format!("log source {}: {e}; not read", src.name);
                tracing::error!("{msg}");
                health.push(source_health(&src.name, "unreadable", msg));
                continue;
            }
        };
        out.push(Input {
            source: src.name.clone(),
            reader,
        });
    }
    Ok(out)
}

impl LogThread {
    /// Build the room and open every source (a syslog socket that cannot be bound fails the
    /// start). `None` when the policy declares no log source.
    pub(super) fn open(
        shared: &Arc<Shared>,
        db: &Path,
        alert_log: Option<&Path>,
        alerts: &SyncSender<Box<Alert>>,
    ) -> Result<Option<LogThread>> {
        let snap = shared.snap();
        if snap.policy.logs.is_empty() {
            return Ok(None);
        }
        let state_path = state_path(db);
        let room = LogRoom::new(
            &snap.policy.logs,
            &snap.log_rules,
            LearnedState::open(&state_path)?,
        )?;
        let positions = Positions::open(&state_path)?;
        let mut health = Vec::new();
        let alerted = alerted_lines(alert_log);
        let inputs = open_inputs(&snap, &positions, Vec::new(), &alerted, true, &mut health)?;
        if snap.policy.rules.is_empty()
            && snap
                .policy
                .logs
                .iter()
                .all(|l| l.hours.is_none() && l.first_seen.is_empty())
        {
            tracing::warn!("the policy has `logs:` sources but no `rules:` and no `hours`/`first_seen`: lines are read and counted, nothing can alert");
        }
        for a in health {
            let _ = alerts.send(Box::new(a));
        }
        let mut t = LogThread {
            shared: shared.clone(),
            alerts: alerts.clone(),
            state_path,
            snap,
            room,
            inputs,
            positions,
            sent: 0,
            waiting: VecDeque::new(),
            last_snapshot: Instant::now(),
            dirty: true,
            notices: BTreeMap::new(),
            last_status: Instant::now(),
        };
        t.report_notices();
        t.publish_status();
        Ok(Some(t))
    }

    /// Sources read (for `started`).
    pub(super) fn sources(&self) -> usize {
        self.inputs.len()
    }

    /// Run on its own thread until the daemon stops.
    pub(super) fn start(mut self) -> Result<std::thread::JoinHandle<()>> {
        spawn("kmsentry-logs", move || {
            while !self.shared.stopping() {
                self.round();
            }
            self.finish();
        })
    }

    fn round(&mut self) {
        let now = self.shared.snap();
        if !Arc::ptr_eq(&now, &self.snap) {
            self.reload(now);
        }
        self.wait_input();
        self.read_sockets();
        self.read_files();
        self.report_notices();
        let busy = self.dirty;
        if self.dirty && self.last_snapshot.elapsed() >= SNAPSHOT_EVERY {
            self.snapshot();
        }
        self.commit_written();
        let since = self.last_status.elapsed();
        if since >= Duration::from_secs(1) || (busy && since >= Duration::from_millis(100)) {
            self.publish_status();
        }
    }

    /// Sleep until a socket has a datagram or a tick passed.
    fn wait_input(&mut self) {
        let socks: Vec<&SyslogSocket> = self
            .inputs
            .iter()
            .filter_map(|i| match &i.reader {
                Reader::Socket { socket, .. } => Some(socket),
                _ => None,
            })
            .collect();
        if socks.is_empty() {
            std::thread::sleep(TICK);
            return;
        }
        let mut fds: Vec<PollFd<'_>> = socks
            .iter()
            .map(|s| PollFd::from_borrowed_fd(s.fd(), PollFlags::IN))
            .collect();
        let ts = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: TICK.as_nanos() as i64,
        };
        let _ = poll(&mut fds, Some(&ts));
    }

    /// Queue one alert, waiting while too many log alerts are unwritten.
    fn queue(&mut self, a: Alert) {
        let t = Instant::now();
        while self.sent.saturating_sub(self.written()) >= MAX_IN_FLIGHT
            && !(self.shared.stopping() && t.elapsed() > Duration::from_secs(2))
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        if self.alerts.send(Box::new(a)).is_ok() {
            self.sent += 1;
        }
    }

    fn written(&self) -> u64 {
        self.shared.stats.log_alerts_written.load(Ordering::Acquire)
    }

    fn read_sockets(&mut self) {
        let mut found: Vec<(LogFinding, LogOrigin)> = Vec::new();
        let mut oversized = 0;
        for input in &mut self.inputs {
            let Reader::Socket { path, socket } = &mut input.reader else {
                continue;
            };
            let Some(i) = self.room.source_index(&input.source) else {
                continue;
            };
            // A bounded number per round, so files are read between bursts.
            for _ in 0..4096 {
                let seq = socket.seq + 1;
                let Some((line, over)) = socket.recv() else {
                    break;
                };
                if over {
                    oversized += 1;
                    continue;
                }
                let mut out = Vec::new();
                let pos = Position {
                    file: path.as_bytes(),
                    offset: seq,
                    fallback_ts: now_secs(),
                };
                if let Err(e) = self.room.feed(i, line, pos, &mut out) {
                    tracing::error!("log source {}: {e}", input.source);
                }
                for f in out {
                    found.push((
                        f,
                        LogOrigin::Socket {
                            socket: path.as_bytes().to_vec(),
                            seq,
                        },
                    ));
                }
            }
        }
        for _ in 0..oversized {
            self.room.oversized();
        }
        for (f, o) in found {
            self.queue(alert_of(f, o));
        }
    }

    fn read_files(&mut self) {
        for k in 0..self.inputs.len() {
            let mut found: Vec<(LogFinding, (u64, u64))> = Vec::new();
            let mut oversized = 0u64;
            let mut any = false;
            {
                let input = &mut self.inputs[k];
                let Reader::File { follower, .. } = &mut input.reader else {
                    continue;
                };
                let Some(i) = self.room.source_index(&input.source) else {
                    continue;
                };
                let room = &mut self.room;
                let source = &input.source;
                follower.poll(&mut |seen| {
                    any = true;
                    match seen {
                        Seen::Line {
                            file,
                            id,
                            offset,
                            line,
                            mtime,
                        } => {
                            let pos = Position {
                                file,
                                offset,
                                fallback_ts: Some(mtime),
                            };
                            let mut out = Vec::new();
                            if let Err(e) = room.feed(i, line, pos, &mut out) {
                                tracing::error!("log source {source}: {e}");
                            }
                            found.extend(out.into_iter().map(|f| (f, id)));
                        }
                        Seen::Oversized => oversized += 1,
                    }
                });
                if follower
                    .notices
                    .iter()
                    .any(|n| matches!(n.what, NoticeKind::Opened | NoticeKind::Truncated))
                {
                    room.new_file(i);
                }
            }
            for _ in 0..oversized {
                self.room.oversized();
            }
            if any {
                self.dirty = true;
            }
            for (f, id) in found {
                let origin = LogOrigin::File {
                    file: f.log.file.clone(),
                    offset: f.log.offset,
                    id: Some(id),
                };
                self.queue(alert_of(f, origin));
            }
        }
    }

    /// Tell the operator what happened to followed names: routine rotation in the daemon's
    /// log, tampering or loss (a symlink, FIFO or device in a log's place; a log deleted; a
    /// position whose file is gone) also as a `health` alert.
    fn report_notices(&mut self) {
        let mut alerts = Vec::new();
        let mut any = false;
        for input in &mut self.inputs {
            let Reader::File { follower, .. } = &mut input.reader else {
                continue;
            };
            for n in follower.notices.drain(..) {
                any = true;
                *self.notices.entry(n.what.as_str()).or_insert(0) += 1;
                let msg = match n.what {
                    NoticeKind::Opened => "following",
                    NoticeKind::Rotated => "rotated (left its name): finishing the old file, then reading what replaced it",
                    NoticeKind::Truncated => "truncated in place (copytruncate): reading again from its start",
                    NoticeKind::Deleted => "deleted, and nothing took its name: no longer followed",
                    NoticeKind::Symlink => "is a symlink: never followed (a log is expected to be a regular file)",
                    NoticeKind::NotRegular => "is a FIFO, socket or device: never opened (a log is expected to be a regular file)",
                    NoticeKind::Lost => "was not found again after a restart (rotated and compressed or deleted while the daemon was down): lines after its last position were not read",
                    NoticeKind::Unreadable => "cannot be opened: not followed",
                };
                let text = format!("log source {}: {} {msg}", input.source, Name(&n.path));
                if n.what.is_alarm() || n.what == NoticeKind::Unreadable {
                    tracing::warn!("{text}");
                    let mut a = Alert::new(Kind::Health, Severity::Medium);
                    a.path = Some(n.path.clone());
                    a.detail
                        .insert("source".into(), input.source.clone().into());
                    a.detail.insert("log_event".into(), n.what.as_str().into());
                    a.detail.insert("message".into(), text.into());
                    alerts.push(a);
                } else {
                    tracing::info!("{text}");
                }
            }
        }
        for a in alerts {
            // Not counted as `log` alerts: they carry no position.
            let _ = self.alerts.send(Box::new(a));
        }
        if any {
            self.publish_status();
        }
    }

    fn snapshot(&mut self) {
        let mut set = Vec::new();
        for input in &mut self.inputs {
            if let Reader::File { follower, .. } = &mut input.reader {
                set.push((input.source.clone(), follower.positions()));
            }
        }
        self.waiting.push_back((self.sent, set));
        self.last_snapshot = Instant::now();
        self.dirty = false;
    }

    /// Save the newest snapshot whose alerts are all written.
    fn commit_written(&mut self) {
        let written = self.written();
        let mut ready = None;
        while self.waiting.front().is_some_and(|(s, _)| *s <= written) {
            ready = self.waiting.pop_front();
        }
        let Some((_, set)) = ready else { return };
        // Learned values first: a crash after this keeps them, and the lines are re-read
        // only if their position was not saved.
        if let Err(e) = self.room.finish() {
            tracing::error!("log learned state: {e}");
        }
        if let Err(e) = self.positions.save(&set) {
            tracing::error!("log positions: {e}");
        }
    }

    fn reload(&mut self, snap: Arc<Snapshot>) {
        if let Err(e) = self.room.finish() {
            tracing::error!("log learned state: {e}");
        }
        let room = LearnedState::open(&self.state_path)
            .and_then(|st| LogRoom::new(&snap.policy.logs, &snap.log_rules, st));
        let room = match room {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("log rules after reload: {e}; the previous rules keep running");
                self.snap = snap;
                return;
            }
        };
        // Positions of what is dropped are saved first, so nothing is read twice.
        self.snapshot();
        let keep = std::mem::take(&mut self.inputs);
        let mut health = Vec::new();
        // Not strict: never fails, a source that cannot be opened is reported and skipped.
        self.inputs = open_inputs(
            &snap,
            &self.positions,
            keep,
            &HashMap::new(),
            false,
            &mut health,
        )
        .unwrap_or_default();
        for a in health {
            let _ = self.alerts.send(Box::new(a));
        }
        self.room = room;
        self.snap = snap;
    }

    fn publish_status(&mut self) {
        self.last_status = Instant::now();
        let sources: Vec<serde_json::Value> = self
            .inputs
            .iter()
            .map(|i| match &i.reader {
                Reader::File { glob, follower } => serde_json::json!({
                    "name": i.source, "file": glob,
                    "files": follower.files().map(|(p, o)| serde_json::json!({
                        "path": crate::sanitize::JsonName(p).text(), "offset": o}))
                        .collect::<Vec<_>>(),
                }),
                Reader::Socket { path, socket } => serde_json::json!({
                    "name": i.source, "syslog": path, "datagrams": socket.seq,
                }),
                Reader::Journald => serde_json::json!({
                    "name": i.source, "journald": "not read by this version",
                }),
            })
            .collect();
        *lock(&self.shared.stats.logs) = serde_json::json!({
            "sources": sources,
            "counts": self.room.counts,
            "alerts": self.sent,
            "alerts_written": self.written(),
            "notices": self.notices,
        });
    }

    /// At stop: wait (bounded) for the queued alerts to be written, then save positions.
    fn finish(&mut self) {
        self.snapshot();
        let t = Instant::now();
        while self.written() < self.sent && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.commit_written();
        if let Err(e) = self.room.finish() {
            tracing::error!("log learned state: {e}");
        }
    }
}
