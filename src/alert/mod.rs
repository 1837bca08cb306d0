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
