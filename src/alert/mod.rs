//! Alerts: the record type the daemon builds, its one canonical JSON line, the hash chain
//! over those lines, signed checkpoints, and the sinks (JSONL file, stdout, RFC 5424 syslog,
//! journald, and RFC 5425 over TLS to another machine through an on-disk queue).
//!
//! Owns: turning an [`Alert`] into exactly one line of bytes ([`record::render`]), chaining
//! each line to the previous one (`prev` = BLAKE3 of the previous line's exact bytes), and
//! delivering that same line to every sink ([`Alerter`]). [`verify`] checks a chain offline
//! (`kmsentry log verify`).
//!
//! Must not: put file content or key material in a record; let a failing network sink stop
//! the file sink or block for long; print a name without [`crate::sanitize`].
//! Layout: [`record`] (serialisation, hashing), [`jsonl`] (the file: append, fsync, rotation,
//! crash recovery), [`syslog`] (with [`tls`] and its [`queue`]; [`rfc5424`] reads a
//! receiver's lines back), [`journald`], [`checkpoint`] (ed25519 over the chain head),
//! [`alerter`] (stamping and fan-out), [`verify`].

pub mod alerter;
pub mod checkpoint;
pub mod journald;
pub mod jsonl;
pub mod queue;
pub mod record;
pub mod rfc5424;
pub mod syslog;
pub mod tls;
pub mod verify;

pub use alerter::{AlertConfig, Alerter, Emitted};
pub use syslog::SyslogTarget;

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
    /// A log rule matched (Sigma detection or correlation, `hours`, `first_seen`).
    Log,
    /// The daemon's own trouble (audit unavailable, a sink failing, a stalled decision).
    Health,
    /// A signature over the chain head (written by the [`Alerter`] itself, never by callers).
    Checkpoint,
}

impl Kind {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Started => "started",
            Kind::Stopped => "stopped",
            Kind::Modified => "modified",
            Kind::Created => "created",
            Kind::Deleted => "deleted",
            Kind::Renamed => "renamed",
            Kind::Attrib => "attrib",
            Kind::Access => "access",
            Kind::Restored => "restored",
            Kind::RestoreAbandoned => "restore_abandoned",
            Kind::Overflow => "overflow",
            Kind::Reconciled => "reconciled",
            Kind::PolicyReloaded => "policy_reloaded",
            Kind::Log => "log",
            Kind::Health => "health",
            Kind::Checkpoint => "checkpoint",
        }
    }
}

/// Whether the act the alert reports succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// One alert before the [`Alerter`] stamps `ts`, `seq`, `host` and `prev` on it.
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
    /// `kind: "log"` only: what the rule saw (rendered as the top-level `title`, `source`,
    /// `log`, `fields` and, for correlations, `correlation`, `count`, `window`, `group_by`).
    pub log: Option<Box<LogFacts>>,
}

/// Where a judged log line came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOrigin {
    /// A followed file and the byte offset where the line starts (for a correlation: the
    /// line that completed it).
    File {
        file: Vec<u8>,
        offset: u64,
        /// (dev, inode) of the file: which file, whatever its name is now; also how a
        /// restarted daemon recognises lines it already alerted.
        id: Option<(u64, u64)>,
    },
    /// A syslog datagram received on the daemon's socket; `seq` counts datagrams on it since
    /// the daemon started.
    Socket { socket: Vec<u8>, seq: u64 },
}

/// The facts a `log` alert carries beyond `rule` and `severity`.
#[derive(Clone, Debug)]
pub struct LogFacts {
    pub title: String,
    pub source: String,
    pub origin: LogOrigin,
    /// The event's own time (RFC 3339), when the line had one.
    pub time: Option<String>,
    /// The matched event's fields, names escaped, secrets masked (by the log room).
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// For a correlation: its type, count, window (seconds) and group-by values.
    pub correlation: Option<(String, f64, u64, serde_json::Map<String, serde_json::Value>)>,
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
            log: None,
        }
    }
}
