//! Alert records: one JSON object per line (see DESIGN, "Alerts").

use crate::baseline::diff::Severity;
use crate::policy::schema::Class;
use crate::proc::ProcessInfo;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Started,
    Stopped,
    Modified,
    Created,
    Deleted,
    Renamed,
    Attrib,
    Access,
    Restored,
    RestoreAbandoned,
    Overflow,
    Reconciled,
    PolicyReloaded,
    /// The daemon's own trouble (audit unavailable, a sink failing, a stalled decision).
    Health,
}

/// Whether the act the alert reports succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

/// One alert before the sink stamps `ts`, `host` and `prev` on it.
#[derive(Clone, Debug)]
pub struct Alert {
    pub kind: Kind,
    pub severity: Severity,
    pub path: Option<Vec<u8>>,
    pub group: Option<String>,
    pub class: Option<Class>,
    pub outcome: Option<Outcome>,
    pub process: Option<ProcessInfo>,
    pub changes: Vec<&'static str>,
    pub rule: Option<String>,
    /// Kind-specific extra fields (hashes before/after a restore, counts, a message).
    /// Never file content or key material.
    pub detail: serde_json::Map<String, serde_json::Value>,
}

impl Alert {
    pub fn new(kind: Kind, severity: Severity) -> Self {
        Alert {
            kind,
            severity,
            path: None,
            group: None,
            class: None,
            outcome: None,
            process: None,
            changes: Vec::new(),
            rule: None,
            detail: serde_json::Map::new(),
        }
    }
}

// --- minimal sink (replaced by the full alert pipeline) ---
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum SyslogTarget {
    Unix(PathBuf),
}

impl std::str::FromStr for SyslogTarget {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(SyslogTarget::Unix(PathBuf::from(s)))
    }
}

#[derive(Clone, Debug, Default)]
pub struct AlertConfig {
    pub host: String,
    pub file: Option<PathBuf>,
    pub max_bytes: Option<u64>,
    pub keep: usize,
    pub stdout: bool,
    pub syslog: Vec<SyslogTarget>,
    pub journald: bool,
    pub sign_key: Option<PathBuf>,
    pub checkpoint_every: Option<u64>,
    pub checkpoint_interval: Option<Duration>,
}

pub struct Alerter {
    cfg: AlertConfig,
    file: Option<std::fs::File>,
    seq: u64,
}

impl Alerter {
    pub fn new(cfg: AlertConfig) -> crate::error::Result<Alerter> {
        let file = match &cfg.file {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(p)
                    .map_err(|e| crate::error::Error::io("open", b"alerts".to_vec(), e))?,
            ),
            None => None,
        };
        Ok(Alerter { cfg, file, seq: 0 })
    }

    pub fn emit(&mut self, a: Alert) -> crate::error::Result<()> {
        use std::io::Write;
        let mut m = serde_json::Map::new();
        m.insert("ts".into(), jiff::Timestamp::now().to_string().into());
        m.insert("seq".into(), self.seq.into());
        self.seq += 1;
        m.insert(
            "kind".into(),
            serde_json::to_value(a.kind).unwrap_or_default(),
        );
        m.insert("severity".into(), a.severity.as_str().into());
        m.insert("host".into(), self.cfg.host.clone().into());
        if let Some(p) = &a.path {
            m.insert(
                "path".into(),
                crate::sanitize::JsonName(p).text().into_owned().into(),
            );
        }
        if let Some(g) = &a.group {
            m.insert("group".into(), g.clone().into());
        }
        if let Some(o) = a.outcome {
            m.insert(
                "outcome".into(),
                serde_json::to_value(o).unwrap_or_default(),
            );
        }
        if let Some(p) = &a.process {
            m.insert(
                "process".into(),
                serde_json::json!({"pid": p.pid, "ppid": p.ppid, "uid": p.uid, "auid": p.auid,
                    "exe": p.exe.as_deref().map(|e| crate::sanitize::JsonName(e).text().into_owned()),
                    "comm": crate::sanitize::JsonName(&p.comm).text().into_owned(),
                    "cmdline": crate::sanitize::JsonName(&p.cmdline).text().into_owned(),
                    "user": p.user}),
            );
        }
        if !a.changes.is_empty() {
            m.insert("changes".into(), a.changes.clone().into());
        }
        if let Some(r) = &a.rule {
            m.insert("rule".into(), r.clone().into());
        }
        if !a.detail.is_empty() {
            m.insert("detail".into(), a.detail.clone().into());
        }
        let mut line = serde_json::to_vec(&m).unwrap_or_default();
        line.push(b'\n');
        if let Some(f) = &mut self.file {
            let _ = f.write_all(&line);
            let _ = f.sync_data();
        }
        if self.cfg.stdout {
            let _ = std::io::stdout().write_all(&line);
        }
        Ok(())
    }

    pub fn flush(&mut self) {}
}
