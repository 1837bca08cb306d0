//! What a finding grants, for triage: the entry-level grants of [`super::diff::grants`]
//! (capabilities, setuid/setgid, group/world write, `/etc/ld.so.preload`) plus the one that
//! needs credential facts, a certificate that makes a new CA trusted, whatever the group's
//! class. Also the subject of an added certificate, which `added` findings carry.
//!
//! Pure over a [`Report`] (the live credential facts were gathered during the walk) and the
//! baseline's credential facts: no I/O.

use super::check::{Finding, Report};
use super::credentials::{BaselineFacts, LiveCred};
use super::diff::{grants, Grant, Severity, Status};
use crate::credential::CredRecord;
use crate::policy::Attr;

/// The live credential facts of `path`, when it was inspected.
fn live_cred<'a>(report: &'a Report, path: &[u8]) -> Option<&'a LiveCred> {
    report
        .credentials
        .binary_search_by(|c| c.entry.path.as_slice().cmp(path))
        .ok()
        .and_then(|i| report.credentials.get(i))
}

fn record(lc: &LiveCred) -> Option<&CredRecord> {
    lc.scanned.as_ref().map(|s| &s.record)
}

/// Subjects of the CA certificates in `live` that `base` did not hold (a CA: basicConstraints
/// `cA` or self-issued; both are what a trust store anchors on).
fn new_cas(live: &CredRecord, base: Option<&CredRecord>) -> Vec<String> {
    live.certs
        .iter()
        .filter(|c| c.is_ca == Some(true) || c.self_signed)
        .filter(|c| {
            base.is_none_or(|b| {
                !b.certs
                    .iter()
                    .any(|o| o.spki_sha256 == c.spki_sha256 && o.subject == c.subject)
            })
        })
        .map(|c| c.subject.clone())
        .collect()
}

fn ca_grant(subjects: &[String]) -> Option<Grant> {
    let first = subjects.first()?;
    Some(Grant {
        severity: Severity::High,
        what: if subjects.len() == 1 {
            format!("a new trusted CA: {first}")
        } else {
            format!(
                "{} new trusted CAs: {first} and {} more",
                subjects.len(),
                subjects.len() - 1
            )
        },
    })
}

/// Raise added and changed findings that bring a new CA certificate to at least high
/// (`verify`, after the credential judgement). `baseline` says which CAs were there before.
pub fn escalate_new_cas(report: &mut Report, baseline: &BaselineFacts) {
    let mut raise = Vec::new();
    for (i, f) in report.findings.iter().enumerate() {
        let wanted = match f.status {
            Status::Added => true,
            Status::Changed => f.changes.contains(&Attr::Content),
            _ => false,
        };
        if !wanted || f.severity >= Severity::High {
            continue;
        }
        let Some(live) = live_cred(report, &f.path).and_then(record) else {
            continue;
        };
        let base = if f.status == Status::Added {
            None
        } else {
            // No facts for the old content: every CA in the new content counts as new.
            baseline.get(&f.path).map(|(_, r)| r)
        };
        if !new_cas(live, base).is_empty() {
            raise.push(i);
        }
    }
    for i in raise {
        if let Some(f) = report.findings.get_mut(i) {
            f.severity = f.severity.max(Severity::High);
        }
    }
}

/// What finding `f` grants, for display: the entry-level grants and, for an added
/// certificate file, the new CAs it brings.
pub fn of(report: &Report, f: &Finding) -> Vec<Grant> {
    let Some(live) = f.live.as_deref() else {
        return Vec::new();
    };
    let mut out = match (f.status, f.base.as_deref()) {
        (Status::Added, _) => grants(f.class, None, live),
        (Status::Changed, Some(b)) => grants(f.class, Some((b, &f.changes)), live),
        _ => Vec::new(),
    };
    if f.status == Status::Added {
        let cas = live_cred(report, &f.path)
            .and_then(record)
            .map(|r| new_cas(r, None))
            .unwrap_or_default();
        out.extend(ca_grant(&cas));
    }
    out
}

/// The subject of the (first) certificate of an added or changed file, and how many more
/// the file holds: what `added` findings carry for certificates.
pub fn subject(report: &Report, f: &Finding) -> Option<String> {
    let r = live_cred(report, &f.path).and_then(record)?;
    let first = r.certs.first()?;
    Some(match r.certs.len() {
        1 => first.subject.clone(),
        n => format!("{} (and {} more certificates)", first.subject, n - 1),
    })
}

/// Drop the live credential facts no finding cites any more (the judgement and the CA
/// escalation are done; renderers read them only for added findings' subjects and grants),
/// and give their memory back before the report is rendered: at 22k credential files they
/// are ~18 MB that would otherwise sit beside the rendered output (docs/performance.md).
pub fn keep_cited_credentials(report: &mut Report) {
    let cited: std::collections::HashSet<&[u8]> = report
        .findings
        .iter()
        .filter(|f| f.status == Status::Added)
        .map(|f| f.path.as_slice())
        .collect();
    let keep: Vec<bool> = report
        .credentials
        .iter()
        .map(|c| cited.contains(c.entry.path.as_slice()))
        .collect();
    let mut k = keep.iter();
    report
        .credentials
        .retain(|_| k.next().copied().unwrap_or(false));
    report.credentials.shrink_to_fit();
}
