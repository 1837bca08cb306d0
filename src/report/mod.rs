//! Renders a [`Report`] for people and pipelines: human text, JSON (DESIGN's contract), JUnit
//! XML and SARIF 2.1.0, plus the `baseline export` manifest. Every name goes through
//! `sanitize`; nothing here ever sees file content or key material (only hashes).
//! Pure: produces bytes, the CLI decides where they go.

mod export;
mod human;
mod junit;
mod sarif;
mod xccdf;

use junit::xml as junit_xml;

pub use export::export_line;
pub use human::{human, human_audit, severity_counts};
pub use junit::junit;
pub use sarif::sarif;
pub use xccdf::{xccdf, XccdfRun};

use crate::baseline::check::{Finding, Report};
use crate::baseline::diff::Status;
use crate::baseline::entry::{Entry, FileType};
use crate::baseline::{attrs, Xattr};
use crate::policy::Attr;
use crate::sanitize::{escape, JsonName};
use serde_json::{json, Map, Value};

/// The `verify --format json` document.
pub fn json(report: &Report) -> Value {
    let findings: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let mut o = Map::new();
            o.insert("path".into(), json!(JsonName(&f.path)));
            o.insert("status".into(), json!(f.status.as_str()));
            o.insert(
                "changes".into(),
                json!(f.changes.iter().map(|a| a.as_str()).collect::<Vec<_>>()),
            );
            o.insert("group".into(), json!(f.group));
            o.insert("class".into(), json!(f.class.as_str()));
            o.insert("severity".into(), json!(f.severity.as_str()));
            if let Some(rule) = f.rule {
                o.insert("rule".into(), json!(rule));
            }
            if let Some(m) = &f.message {
                o.insert("message".into(), json!(m));
            }
            if matches!(f.status, Status::Changed | Status::Rotated) {
                let mut d = Map::new();
                for (attr, (b, l)) in details(f) {
                    d.insert(attr.as_str().into(), json!({"baseline": b, "live": l}));
                }
                o.insert("details".into(), Value::Object(d));
            }
            if f.status == Status::Added {
                // The new entry's attributes, named like a changed finding's details.
                let d: Map<String, Value> = added_details(report, f)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), json!({ "live": v })))
                    .collect();
                o.insert("details".into(), Value::Object(d));
            }
            let grants = crate::baseline::grant::of(report, f);
            if !grants.is_empty() {
                o.insert(
                    "grants".into(),
                    json!(grants.iter().map(|g| g.what.as_str()).collect::<Vec<_>>()),
                );
            }
            Value::Object(o)
        })
        .collect();
    let errors: Vec<Value> = report
        .errors
        .iter()
        .map(|e| json!({"path": JsonName(&e.path), "op": e.op, "error": e.error.to_string()}))
        .collect();
    json!({
        "findings": findings,
        "summary": {
            "checked": report.checked,
            "added": report.count(Status::Added),
            "removed": report.count(Status::Removed),
            "changed": report.count(Status::Changed),
            "rotated": report.count(Status::Rotated),
            "posture": report.count(Status::Posture),
            "errors": report.errors.len(),
        },
        "errors": errors,
    })
}

/// For a changed finding: each change with its baseline and live values as display text.
pub fn details(f: &Finding) -> Vec<(Attr, (String, String))> {
    let (Some(b), Some(l)) = (&f.base, &f.live) else {
        return Vec::new();
    };
    f.changes.iter().map(|a| (*a, detail(*a, b, l))).collect()
}

/// For an added finding: the new entry's attributes as display text, each named like the
/// attribute in a changed finding's details (`type`, `mode`, `owner`, `group`, `size`,
/// `content`, `acl`, `xattr` with decoded capabilities, `link_target`), plus `subject` for a
/// certificate file. Attributes the entry does not have are left out, never defaulted.
pub fn added_details(report: &Report, f: &Finding) -> Vec<(&'static str, String)> {
    let Some(l) = f.live.as_deref() else {
        return Vec::new();
    };
    let mut attrs = vec![Attr::Type, Attr::Mode, Attr::Owner, Attr::Group];
    if l.ftype == FileType::File {
        attrs.extend([Attr::Size, Attr::Content]);
    }
    if l.acl_access.is_some() || l.acl_default.is_some() {
        attrs.push(Attr::Acl);
    }
    if l.link_target.is_some() {
        attrs.push(Attr::LinkTarget);
    }
    let mut out: Vec<(&'static str, String)> = attrs
        .into_iter()
        .map(|a| (a.as_str(), detail(a, l, l).1))
        .collect();
    if !l.xattrs.is_empty() {
        out.push((Attr::Xattr.as_str(), xattr_delta(&[], &l.xattrs).1));
    }
    if let Some(s) = crate::baseline::grant::subject(report, f) {
        out.push(("subject", escape(s.as_bytes()).into_owned()));
    }
    out
}

fn detail(attr: Attr, b: &Entry, l: &Entry) -> (String, String) {
    let both = |f: &dyn Fn(&Entry) -> String| (f(b), f(l));
    match attr {
        Attr::Type => both(&|e| match e.rdev {
            Some((ma, mi)) => format!("{} {ma}:{mi}", e.ftype.as_str()),
            None => e.ftype.as_str().to_string(),
        }),
        Attr::Content => both(&|e| match (&e.hashes, e.ftype) {
            (Some(h), _) => format!("blake3:{}", hex::encode(h.blake3)),
            (None, FileType::File) => "unknown".into(),
            (None, t) => t.as_str().to_string(),
        }),
        Attr::Size => both(&|e| e.size.to_string()),
        Attr::Mode => both(&|e| format!("{:04o}", e.mode)),
        Attr::Owner => both(&|e| e.uid.to_string()),
        Attr::Group => both(&|e| e.gid.to_string()),
        Attr::Acl => both(&|e| {
            let a = e.acl_access.as_deref().unwrap_or("none");
            match &e.acl_default {
                Some(d) => format!("{a} default:{d}"),
                None => a.to_string(),
            }
        }),
        Attr::Xattr => xattr_delta(&b.xattrs, &l.xattrs),
        Attr::LinkTarget => both(&|e| {
            e.link_target
                .as_deref()
                .map_or_else(|| "none".to_string(), |t| escape(t).into_owned())
        }),
        Attr::Mtime => both(&|e| ns_time(e.mtime_ns)),
        Attr::Ctime => both(&|e| ns_time(e.ctime_ns)),
        Attr::Inode => both(&|e| format!("{}:{}", e.dev, e.ino)),
        Attr::Nlink => both(&|e| e.nlink.to_string()),
    }
}

/// Only the xattrs that differ, each side listing its value.
fn xattr_delta(b: &[Xattr], l: &[Xattr]) -> (String, String) {
    let show = |xs: &[Xattr], other: &[Xattr]| -> String {
        let parts: Vec<String> = xs
            .iter()
            .filter(|x| !other.contains(x))
            .map(|x| {
                format!(
                    "{}={}",
                    escape(&x.name),
                    attrs::value_text(&x.name, &x.value)
                )
            })
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    };
    (show(b, l), show(l, b))
}

/// Nanoseconds since the epoch as RFC 3339 UTC.
pub fn ns_time(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map_or_else(|_| format!("{ns}ns"), |t| t.to_string())
}

#[cfg(test)]
mod tests;
