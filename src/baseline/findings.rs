//! What a comparison produces: findings, clean entries, the inspected credential files, and
//! the report that holds them. Shared by the comparison engine (`check`) and the credential
//! judgement (`credentials`), which both write into a [`Report`] without importing each other.

use super::diff::{Severity, Status};
use super::entry::Entry;
use super::walk::WalkError;
use crate::credential::elf::ElfFacts;
use crate::credential::Scanned;
use crate::policy::{Attr, Class};

/// One difference between baseline and live state.
#[derive(Clone, Debug)]
pub struct Finding {
    pub path: Vec<u8>,
    pub status: Status,
    /// What differs (empty for added/removed).
    pub changes: Vec<Attr>,
    pub group: String,
    pub class: Class,
    pub severity: Severity,
    /// The baseline record (removed, changed).
    pub base: Option<Box<Entry>>,
    /// The live record (added, changed).
    pub live: Option<Box<Entry>>,
    /// Posture and rotated findings: the rule id (`KMS-KEY-PERM`, `KMS-CERT-ROTATED`...).
    pub rule: Option<&'static str>,
    /// Posture and rotated findings: what was found, in words.
    pub message: Option<String>,
}

/// A clean entry, kept only when a report lists every entry checked (JUnit).
#[derive(Clone, Debug)]
pub struct Clean {
    pub path: Vec<u8>,
    pub group: String,
}

/// The outcome of one comparison.
#[derive(Debug, Default)]
pub struct Report {
    /// Sorted by path bytes.
    pub findings: Vec<Finding>,
    /// Per-entry failures: unreadable, unstable, vanished directories...
    pub errors: Vec<WalkError>,
    /// Distinct paths compared (live ∪ baseline within the policy).
    pub checked: u64,
    /// Baseline entries no group of this policy covers any more (not compared).
    pub outside_policy: u64,
    /// Clean entries, when requested.
    pub clean: Vec<Clean>,
    /// Credential files and provider binaries as inspected, when requested (sorted by path).
    pub credentials: Vec<LiveCred>,
}

impl Report {
    /// Count of findings with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }
}

/// One inspected live entry.
#[derive(Clone, Debug)]
pub struct LiveCred {
    pub entry: Entry,
    pub scanned: Option<Scanned>,
    pub elf: Option<Result<ElfFacts, String>>,
}
