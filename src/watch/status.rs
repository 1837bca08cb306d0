//! Self-monitoring: the counters every daemon thread bumps ([`Stats`]), the status document
//! built from them, a root-only unix socket that answers one such document per connection
//! (`kmsentry status`), and an opt-in Prometheus text endpoint.
//!
//! Counting is a relaxed atomic add, so the permission thread pays nothing measurable for
//! it; the document is built on the socket's thread, on demand.
//! Must not: take a lock for longer than a read of one counter table, or change the
//! daemon's state: a status query is an observation.

use super::shared::{lock, read, Shared};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Produces the current status document.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Default status socket.
pub const DEFAULT_SOCKET: &str = "/run/kmsentry/status.sock";

/// The status socket while it is served: removed when dropped (a clean stop), unless
/// something else has been put at that path meanwhile.
pub struct StatusSocket {
    path: std::path::PathBuf,
    inode: Option<(u64, u64)>,
}

impl Drop for StatusSocket {
    fn drop(&mut self) {
        let same = std::fs::symlink_metadata(&self.path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        });
        if same.is_some() && same == self.inode {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Listen on `path` (its directory made 0700, the socket 0600) and answer each connection
/// with the status document. A socket left at `path` by a daemon that died is replaced; one
/// that a live process still answers on is not (the caller holds the instance lock, so that
/// can only be a daemon that does not take it).
pub fn serve(path: &Path, status: StatusFn) -> Result<StatusSocket> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let err = |op: &'static str, e: std::io::Error| {
        Error::io(op, path.as_os_str().as_bytes().to_vec(), e)
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| err("create status directory", e))?;
        }
    }
    // A stale socket from a previous run (never a regular file or a symlink).
    if let Ok(m) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !m.file_type().is_socket() {
            return Err(err(
                "bind status socket",
                std::io::Error::other("exists and is not a socket"),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(
                "bind status socket",
                std::io::Error::other("a running process still answers on it"),
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener =
        std::os::unix::net::UnixListener::bind(path).map_err(|e| err("bind status socket", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err("chmod status socket", e))?;
    let inode = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    std::thread::Builder::new()
        .name("kmsentry-status".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                let mut body = serde_json::to_vec_pretty(&status()).unwrap_or_default();
                body.push(b'\n');
                let _ = c.write_all(&body);
            }
        })
        .map_err(|e| err("start status thread", e))?;
    Ok(StatusSocket {
        path: path.to_path_buf(),
        inode,
    })
}

/// Ask a running daemon for its status.
pub fn query(path: &Path) -> Result<serde_json::Value> {
    let err = |op: &'static str, e: std::io::Error| {
        Error::io(op, path.as_os_str().as_bytes().to_vec(), e)
    };
    let c = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| err("connect to the daemon's status socket", e))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| err("set timeout", e))?;
    let mut buf = Vec::new();
    c.take(16 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| err("read status", e))?;
    serde_json::from_slice(&buf).map_err(|e| err("parse status", std::io::Error::other(e)))
}

/// Serve `GET /metrics` (Prometheus text format) on `addr` (meant for loopback).
pub fn serve_metrics(
    addr: std::net::SocketAddr,
    status: StatusFn,
) -> Result<std::thread::JoinHandle<()>> {
    let err = |op: &'static str, e: std::io::Error| Error::io(op, addr.to_string().into_bytes(), e);
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| err("bind metrics endpoint", e))?;
    std::thread::Builder::new()
        .name("kmsentry-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                let mut req = [0u8; 1024];
                let n = c.read(&mut req).unwrap_or(0);
                let ok = req[..n].starts_with(b"GET /metrics");
                let body = if ok { prometheus(&status()) } else { String::from("not found\n") };
                let head = format!(
                    "HTTP/1.1 {}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    if ok { "200 OK" } else { "404 Not Found" },
                    body.len()
                );
                let _ = c.write_all(head.as_bytes());
                let _ = c.write_all(body.as_bytes());
            }
        })
        .map_err(|e| err("start metrics thread", e))
}

/// The status document as Prometheus metrics.
pub fn prometheus(s: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let mut gauge = |name: &str, help: &str, kind: &str, v: f64| {
        let _ = writeln!(
            out,
            "# HELP kmsentry_{name} {help}\n# TYPE kmsentry_{name} {kind}\nkmsentry_{name} {v}"
        );
    };
    gauge(
        "marks_notify",
        "Inodes marked in the notification group.",
        "gauge",
        num(&s["marks"]["notify"]),
    );
    gauge(
        "marks_perm",
        "Inodes marked in the permission group.",
        "gauge",
        num(&s["marks"]["perm"]),
    );
    gauge(
        "queue_depth",
        "Events waiting for the checker.",
        "gauge",
        num(&s["queue_depth"]),
    );
    gauge(
        "perm_events_total",
        "Permission events answered.",
        "counter",
        num(&s["events"]["perm"]),
    );
    gauge(
        "notify_events_total",
        "Notification events read.",
        "counter",
        num(&s["events"]["notify"]),
    );
    gauge(
        "allowed_total",
        "Opens allowed.",
        "counter",
        num(&s["decisions"]["allowed"]),
    );
    gauge(
        "denied_total",
        "Opens denied.",
        "counter",
        num(&s["decisions"]["denied"]),
    );
    gauge(
        "stalled_total",
        "Decisions answered by on_stall.",
        "counter",
        num(&s["decisions"]["stalled"]),
    );
    gauge(
        "overflows_total",
        "Kernel queue overflows.",
        "counter",
        num(&s["overflows"]),
    );
    gauge(
        "alerts_dropped_total",
        "Alerts dropped because the sink queue was full.",
        "counter",
        num(&s["alerts_dropped"]),
    );
    gauge(
        "rss_bytes",
        "Resident set size.",
        "gauge",
        num(&s["rss_kib"]) * 1024.0,
    );
    let _ = writeln!(out, "# HELP kmsentry_alerts_total Alerts raised, by kind.\n# TYPE kmsentry_alerts_total counter");
    if let Some(m) = s["alerts"].as_object() {
        for (k, v) in m {
            let _ = writeln!(out, "kmsentry_alerts_total{{kind=\"{k}\"}} {}", num(v));
        }
    }
    let _ = writeln!(out, "# HELP kmsentry_decision_latency_us Permission decision latency.\n# TYPE kmsentry_decision_latency_us histogram");
    let mut cum = 0.0;
    if let Some(b) = s["decision_latency_us"].as_array() {
        for x in b {
            cum += num(&x["count"]);
            let le = x["le_us"].as_str().unwrap_or("+Inf");
            let _ = writeln!(
                out,
                "kmsentry_decision_latency_us_bucket{{le=\"{le}\"}} {cum}"
            );
        }
    }
    let _ = writeln!(out, "kmsentry_decision_latency_us_count {cum}");
    out
}

/// Counters for `kmsentry status` and the metrics endpoint. Every permission event is
/// counted exactly once, when it is answered (in [`super::permission::answer`]): allowed or
/// denied, so the status document's `events.perm` is their sum, and `pending_decisions` are
/// the events read but not answered yet.
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
    /// `log` alerts the alert thread has handed to the sinks (written and fsynced, or
    /// failed and said so); the log room saves a read position only once this reaches the
    /// alerts queued before it.
    pub log_alerts_written: AtomicU64,
    /// The log room's own status document (sources, followed files, counts, notices).
    pub logs: Mutex<serde_json::Value>,
}

/// Upper bounds (µs) of the decision latency histogram buckets; the last bucket is +Inf.
pub(crate) const LATENCY_BUCKETS: [u64; 13] =
    [2, 5, 10, 15, 20, 30, 50, 100, 200, 500, 1000, 5000, 20000];

impl Stats {
    pub(super) fn observe_latency(&self, us: u64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Serve the status socket and the metrics endpoint the configuration asks for. Either
/// failing is a warning, never a reason not to guard. The returned guard removes the socket
/// at a clean stop; both threads block in accept(2) and end with the process.
pub(super) fn serve_configured(
    socket: Option<&Path>,
    metrics: Option<std::net::SocketAddr>,
    s: &Arc<Shared>,
) -> Option<StatusSocket> {
    let guard = match socket {
        Some(sock) => match serve(sock, status_fn(s)) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!("status socket: {e}");
                None
            }
        },
        None => None,
    };
    if let Some(addr) = metrics {
        match serve_metrics(addr, status_fn(s)) {
            Ok(_) => {}
            Err(e) => tracing::warn!("metrics endpoint: {e}"),
        }
    }
    guard
}

fn status_fn(s: &Arc<Shared>) -> StatusFn {
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
        "pending_decisions": s.pending.len(),
        "events": {"perm": perm, "notify": l(&st.notify_events)},
        "events_per_s": {"perm": perm as f64 / uptime, "notify": l(&st.notify_events) as f64 / uptime},
        "decisions": {"allowed": allowed, "denied": denied, "stalled": l(&st.stalled), "allowed_self": l(&st.allowed_self)},
        "decisions_per_s": perm as f64 / uptime,
        "decision_latency_us": buckets,
        "checks": l(&st.checks),
        "overflows": l(&st.overflows),
        "alerts_dropped": l(&st.alerts_dropped),
        "alerts": serde_json::to_value(&*lock(&st.alerts)).unwrap_or_default(),
        "logs": lock(&st.logs).clone(),
        "rss_kib": rss_kib,
        "policy_digest": read(&s.snap).policy.digest,
    })
}

/// Resident set size in KiB (0 when unknown).
pub(super) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_ascii_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_histogram_and_kinds() {
        let s = serde_json::json!({
            "marks": {"notify": 3, "perm": 1},
            "alerts": {"access": 2},
            "decision_latency_us": [{"le_us": "5", "count": 1}, {"le_us": "+Inf", "count": 2}],
        });
        let t = prometheus(&s);
        assert!(t.contains("kmsentry_marks_notify 3"));
        assert!(t.contains("kmsentry_alerts_total{kind=\"access\"} 2"));
        assert!(t.contains("kmsentry_decision_latency_us_bucket{le=\"+Inf\"} 3"));
    }

    #[test]
    fn socket_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("s/status.sock");
        let h = serve(&p, Arc::new(|| serde_json::json!({"pid": 7}))).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(query(&p).unwrap()["pid"], 7);
        // A live listener is never taken over.
        assert!(serve(&p, Arc::new(|| serde_json::json!({"pid": 8}))).is_err());
        assert_eq!(query(&p).unwrap()["pid"], 7);
        // A clean stop removes it.
        drop(h);
        assert!(std::fs::symlink_metadata(&p).is_err());
    }

    #[test]
    fn a_stale_socket_of_a_dead_daemon_is_replaced() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("status.sock");
        // Bound and closed: the file stays, nobody answers.
        drop(std::os::unix::net::UnixListener::bind(&p).unwrap());
        assert!(std::fs::symlink_metadata(&p).is_ok());
        let _h = serve(&p, Arc::new(|| serde_json::json!({"pid": 9}))).unwrap();
        assert_eq!(query(&p).unwrap()["pid"], 9);
    }
}
