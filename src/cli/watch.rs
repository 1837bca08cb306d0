//! `kmsentry watch` (the daemon, in the foreground) and `kmsentry status`.

use super::{hostname, Common, DEFAULT_DB, DEFAULT_POLICY};
use crate::alert::{AlertConfig, SyslogTarget};
use crate::error::Result;
use crate::exit::ExitCode;
use crate::watch::{self as daemon, OnStall};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub(crate) struct WatchArgs {
    /// Policy file.
    #[arg(long, short = 'p', default_value = DEFAULT_POLICY)]
    policy: PathBuf,
    /// Baseline database.
    #[arg(long, short = 'd', default_value = DEFAULT_DB)]
    db: PathBuf,
    /// Append alerts (JSON lines, hash-chained) to this file.
    #[arg(long)]
    alerts: Option<PathBuf>,
    /// Rotate the alert file when it grows past this many bytes (the chain continues).
    #[arg(long, value_name = "BYTES")]
    alerts_max_bytes: Option<u64>,
    /// Rotated alert files to keep.
    #[arg(long, default_value_t = 10)]
    alerts_keep: usize,
    /// Also write alerts to stdout, one JSON object per line.
    #[arg(long)]
    stdout: bool,
    /// Also send alerts as RFC 5424 syslog: `unix:/dev/log`, `udp:HOST:PORT`, `tcp:HOST:PORT`,
    /// or `tls:HOST:PORT` (RFC 5425 with a client certificate, through an on-disk queue; needs
    /// --syslog-ca, --syslog-cert and --syslog-key).
    #[arg(long, value_name = "TARGET")]
    syslog: Vec<SyslogTarget>,
    /// CA certificates (PEM) a `tls:` receiver's certificate must chain to.
    #[arg(long, value_name = "CA.pem")]
    syslog_ca: Option<PathBuf>,
    /// Client certificate (PEM chain) presented to a `tls:` receiver.
    #[arg(long, value_name = "CERT.pem")]
    syslog_cert: Option<PathBuf>,
    /// Private key (PEM) of --syslog-cert.
    #[arg(long, value_name = "KEY.pem")]
    syslog_key: Option<PathBuf>,
    /// Name the `tls:` receiver's certificate must carry (default: the HOST of the target).
    #[arg(long, value_name = "NAME")]
    syslog_server_name: Option<String>,
    /// Directory of the on-disk queues for `tls:` receivers (one subdirectory per target).
    #[arg(long, value_name = "DIR", default_value = crate::alert::tls::DEFAULT_QUEUE_DIR)]
    syslog_queue: PathBuf,
    /// Bound of each `tls:` queue: past it, one `health` alert, then the oldest undelivered
    /// records are dropped.
    #[arg(long, value_name = "BYTES", default_value_t = crate::alert::tls::DEFAULT_QUEUE_BYTES)]
    syslog_queue_max_bytes: u64,
    /// Also send alerts to the systemd journal.
    #[arg(long)]
    journald: bool,
    /// Sign periodic checkpoints of the alert log with this ed25519 key (`key gen`).
    #[arg(long)]
    sign_key: Option<PathBuf>,
    /// Write a signed checkpoint every N alerts (with --sign-key).
    #[arg(long, value_name = "N", default_value_t = 100)]
    checkpoint_every: u64,
    /// Write a signed checkpoint at least this often, in seconds (with --sign-key).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    checkpoint_secs: u64,
    /// Refuse a baseline not signed by this ed25519 public key.
    #[arg(long)]
    verify_key: Option<PathBuf>,
    /// Trusted content store (`baseline init --store`): groups with `on_change: [alert,
    /// restore]` are put back from it when they change.
    #[arg(long, short = 's')]
    store: Option<PathBuf>,
    /// Accept a baseline recorded on another host (normally exit 3).
    #[arg(long)]
    allow_other_host: bool,
    /// What to answer when a permission decision is not ready within --stall-ms.
    #[arg(long, value_enum, default_value_t = OnStall::Deny)]
    on_stall: OnStall,
    /// How long an open may wait for a decision (ms).
    #[arg(long, default_value_t = 2000)]
    stall_ms: u64,
    /// After a permission event, keep the listener awake this long (µs) before sleeping, so
    /// a burst of opens does not pay a wake-up each; 0 always sleeps.
    #[arg(long, value_name = "MICROSECONDS", default_value_t = 200)]
    spin_us: u64,
    /// Root-only unix socket for `kmsentry status`.
    #[arg(long, default_value = crate::watch::status::DEFAULT_SOCKET)]
    status_socket: PathBuf,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9477); off by default.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Do not use the kernel audit subsystem (kernel access denials are then not reported).
    #[arg(long)]
    no_audit: bool,
    /// Apply the systemd unit's sandbox in the daemon itself (capabilities, umask,
    /// no_new_privs and the seccomp allow-list of `packaging/kmsentry.service`): `enforce`
    /// fails other system calls with EPERM, `kill` kills the daemon (for tests).
    #[arg(long, value_enum, env = "KMSENTRY_SECCOMP", default_value_t = crate::sandbox::Mode::Off)]
    seccomp: crate::sandbox::Mode,
    /// Stop after this many seconds (for tests and benchmarks).
    #[arg(long, hide = true)]
    run_for: Option<f64>,
}

/// Give every `tls:` target its certificates and queue, and check them before starting.
fn syslog_targets(a: &WatchArgs) -> Result<Vec<SyslogTarget>> {
    let mut out = Vec::with_capacity(a.syslog.len());
    for t in &a.syslog {
        let mut t = t.clone();
        if let SyslogTarget::Tls(tls) = &mut t {
            tls.ca = a.syslog_ca.clone().unwrap_or_default();
            tls.cert = a.syslog_cert.clone().unwrap_or_default();
            tls.key = a.syslog_key.clone().unwrap_or_default();
            tls.server_name = a.syslog_server_name.clone();
            tls.queue_dir = tls.queue_under(&a.syslog_queue);
            if a.syslog_queue_max_bytes < 4096 {
                return Err(crate::error::Error::Usage(
                    "--syslog-queue-max-bytes: give at least 4096".into(),
                ));
            }
            tls.queue_max_bytes = a.syslog_queue_max_bytes;
            tls.check()?;
        }
        out.push(t);
    }
    if out.iter().all(|t| !matches!(t, SyslogTarget::Tls(_)))
        && (a.syslog_ca.is_some() || a.syslog_cert.is_some() || a.syslog_key.is_some())
    {
        return Err(crate::error::Error::Usage(
            "--syslog-ca/--syslog-cert/--syslog-key are for a `--syslog tls:HOST:PORT` receiver, and none is given".into(),
        ));
    }
    Ok(out)
}

pub(crate) fn watch(a: &WatchArgs, common: Common) -> Result<ExitCode> {
    let syslog = syslog_targets(a)?;
    // Before the daemon starts any thread, so every thread runs under it.
    let inet = a.metrics.is_some() || syslog.iter().any(|t| !matches!(t, SyslogTarget::Unix(_)));
    crate::sandbox::apply(a.seccomp, inet)?;
    let cfg = daemon::Config {
        policy: a.policy.clone(),
        db: a.db.clone(),
        verify_key: a.verify_key.clone(),
        store: a.store.clone(),
        allow_other_host: a.allow_other_host,
        alerts: AlertConfig {
            host: hostname(),
            file: a.alerts.clone(),
            max_bytes: a.alerts_max_bytes,
            keep: a.alerts_keep,
            stdout: a.stdout,
            syslog,
            journald: a.journald,
            sign_key: a.sign_key.clone(),
            checkpoint_every: a.sign_key.as_ref().map(|_| a.checkpoint_every),
            checkpoint_interval: a
                .sign_key
                .as_ref()
                .map(|_| Duration::from_secs(a.checkpoint_secs.max(1))),
        },
        on_stall: a.on_stall,
        stall: Duration::from_millis(a.stall_ms.max(1)),
        spin: Duration::from_micros(a.spin_us.min(100_000)),
        status_socket: Some(a.status_socket.clone()),
        metrics: a.metrics,
        audit: !a.no_audit,
        threads: common.threads,
        run_for: a
            .run_for
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64),
    };
    daemon::run(cfg)?;
    Ok(ExitCode::Clean)
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum StatusFormat {
    Human,
    Json,
}

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// The daemon's status socket.
    #[arg(long, default_value = crate::watch::status::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = StatusFormat::Human)]
    format: StatusFormat,
}

pub(crate) fn status(a: &StatusArgs) -> Result<ExitCode> {
    let s = crate::watch::status::query(&a.socket)?;
    let text = match a.format {
        StatusFormat::Json => {
            let mut t = serde_json::to_string_pretty(&s).unwrap_or_default();
            t.push('\n');
            t
        }
        StatusFormat::Human => human(&s),
    };
    super::emit(&None, text.as_bytes())?;
    Ok(ExitCode::Clean)
}

fn human(s: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let _ = writeln!(
        o,
        "kmsentry watch, pid {}, up {} s",
        n(&s["pid"]),
        n(&s["uptime_s"])
    );
    let _ = writeln!(
        o,
        "marks:      {} watched, {} enforced",
        n(&s["marks"]["notify"]),
        n(&s["marks"]["perm"])
    );
    let _ = writeln!(
        o,
        "events:     {} permission, {} notification ({:.1}/s, {:.1}/s)",
        n(&s["events"]["perm"]),
        n(&s["events"]["notify"]),
        s["events_per_s"]["perm"].as_f64().unwrap_or(0.0),
        s["events_per_s"]["notify"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(
        o,
        "decisions:  {} allowed ({} the daemon's own), {} denied, {} stalled, {} pending ({:.1}/s)",
        n(&s["decisions"]["allowed"]),
        n(&s["decisions"]["allowed_self"]),
        n(&s["decisions"]["denied"]),
        n(&s["decisions"]["stalled"]),
        n(&s["pending_decisions"]),
        s["decisions_per_s"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(
        o,
        "queue:      {} waiting, {} overflows",
        n(&s["queue_depth"]),
        n(&s["overflows"])
    );
    if let Some(b) = s["decision_latency_us"].as_array() {
        let parts: Vec<String> = b
            .iter()
            .filter(|x| n(&x["count"]) > 0)
            .map(|x| {
                format!(
                    "≤{}µs:{}",
                    x["le_us"].as_str().unwrap_or("?"),
                    n(&x["count"])
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "latency:    {}",
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(" ")
            }
        );
    }
    if let Some(m) = s["alerts"].as_object() {
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{}", n(v))).collect();
        let _ = writeln!(
            o,
            "alerts:     {}",
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(" ")
            }
        );
    }
    let _ = writeln!(o, "rss:        {} KiB", n(&s["rss_kib"]));
    o
}
