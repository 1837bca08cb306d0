//! SARIF 2.1.0: one rule per change kind (`added`, `removed`, `content`, `mode`, ...) and one
//! per credential check (`KMS-KEY-PERM`, ...); one result per (finding, change), located at
//! the host path as a `file://` URI.

use super::details;
use crate::baseline::check::Report;
use crate::baseline::diff::{Severity, Status};
use crate::credential::posture::Rule;
use crate::policy::Attr;
use crate::sanitize::escape;
use serde_json::{json, Value};

fn rule_text(id: &str) -> (&'static str, &'static str) {
    match id {
        "added" => (
            "EntryAdded",
            "A file appeared under a guarded path that is not in the baseline.",
        ),
        "removed" => ("EntryRemoved", "A baselined file is gone."),
        "type" => (
            "TypeChanged",
            "The entry's type (or device number) changed, e.g. a file replaced by a symlink.",
        ),
        "content" => (
            "ContentChanged",
            "The file's content no longer matches its baselined BLAKE3 hash.",
        ),
        "size" => ("SizeChanged", "The file's size changed."),
        "mode" => (
            "ModeChanged",
            "Permission bits (including setuid/setgid/sticky) changed.",
        ),
        "owner" => ("OwnerChanged", "The owning user changed."),
        "group" => ("GroupChanged", "The owning group changed."),
        "acl" => ("AclChanged", "A POSIX ACL changed."),
        "xattr" => (
            "XattrChanged",
            "An extended attribute (SELinux label, file capabilities, user.*) changed.",
        ),
        "link_target" => ("LinkTargetChanged", "A symlink points somewhere else."),
        "mtime" => ("MtimeChanged", "The modification time changed."),
        "ctime" => ("CtimeChanged", "The status-change time changed."),
        "inode" => ("InodeChanged", "The entry is a different inode (replaced)."),
        "nlink" => ("NlinkChanged", "The hard-link count changed."),
        _ => ("Other", "Other drift."),
    }
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// The level a rule's findings usually have (each finding carries its own).
pub fn default_severity(r: Rule) -> Severity {
    match r {
        Rule::KeyPerm | Rule::ProviderWritable | Rule::ProviderSetuid => Severity::Critical,
        Rule::KeyOwner
        | Rule::CertExpired
        | Rule::WeakKey
        | Rule::CaNotCa
        | Rule::ProviderVersion => Severity::High,
        Rule::CertNotYetValid | Rule::WeakSignature | Rule::CertNoKey | Rule::Unparseable => {
            Severity::Medium
        }
        Rule::CertExpiring | Rule::KeyNoCert | Rule::CertRotated => Severity::Low,
    }
}

/// `file://` URI for a host path: unreserved bytes as is, everything else percent-encoded.
pub fn file_uri(path: &[u8]) -> String {
    let mut s = String::from("file://");
    for &b in path {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Render the SARIF log.
pub fn sarif(report: &Report, version: &str) -> Value {
    let ids: Vec<&str> = ["added", "removed"]
        .into_iter()
        .chain(Attr::ALL.iter().map(|a| a.as_str()))
        .chain(Rule::ALL.iter().map(|r| r.id()))
        .collect();
    let rules: Vec<Value> = ids
        .iter()
        .map(|id| match Rule::parse(id) {
            // One rule per credential check, with its help text and default level.
            Some(r) => json!({"id": id, "name": r.id().replace('-', ""),
                   "shortDescription": {"text": r.title()},
                   "fullDescription": {"text": r.help()},
                   "help": {"text": format!("{} See docs/credentials.md.", r.help())},
                   "defaultConfiguration": {"level": level(default_severity(r))},
                   "properties": {"tags": ["security", "credentials"]}}),
            None => {
                let (name, text) = rule_text(id);
                json!({"id": id, "name": name, "shortDescription": {"text": text},
                       "help": {"text": format!("{text} See docs/policy.md (compare vocabulary).")}})
            }
        })
        .collect();
    let mut results = Vec::new();
    for f in &report.findings {
        let kinds: Vec<String> = match (f.status, f.rule) {
            (Status::Posture | Status::Rotated, Some(rule)) => vec![rule.to_string()],
            (Status::Changed, _) => f.changes.iter().map(|a| a.as_str().to_string()).collect(),
            (s, _) => vec![s.as_str().to_string()],
        };
        let det = details(f);
        for kind in kinds {
            let extra = match &f.message {
                Some(m) => format!(": {m}"),
                None => det
                    .iter()
                    .find(|(a, _)| a.as_str() == kind)
                    .map(|(_, (b, l))| format!(": {b} -> {l}"))
                    .unwrap_or_default(),
            };
            let rule_index = ids.iter().position(|i| *i == kind).unwrap_or(0);
            results.push(json!({
                "ruleId": kind,
                "ruleIndex": rule_index,
                "level": level(f.severity),
                "message": {"text": format!("{} {} ({} in group {}){extra}", escape(&f.path), f.status.as_str(), f.class.as_str(), f.group)},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": file_uri(&f.path)}}}],
                "properties": {"severity": f.severity.as_str(), "group": f.group, "class": f.class.as_str(), "status": f.status.as_str()}
            }));
        }
    }
    let notifications: Vec<Value> = report
        .errors
        .iter()
        .map(|e| json!({"level": "error", "message": {"text": e.to_string()},
                        "locations": [{"physicalLocation": {"artifactLocation": {"uri": file_uri(&e.path)}}}]}))
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "kmsentry", "version": version, "rules": rules}},
            "invocations": [{"executionSuccessful": report.errors.is_empty(), "toolExecutionNotifications": notifications}],
            "results": results
        }]
    })
}
