//! XCCDF 1.2 `TestResult`: a standalone result document SCAP dashboards import. One
//! `rule-result` per finding (`fail`, or `informational` for a certificate rotation), one
//! `pass` for every credential check that found nothing (`notselected` when posture was not judged), one `error` per file that could not
//! be checked, and a default-model score (the share of rule-results that did not fail).
//! Rule ids are `xccdf_io.kmsentry_rule_<id>`: `KMS-…` for credential checks, `drift-<kind>`
//! for baseline drift. Validated against the NIST schema in `tests/credentials.rs`.

use super::junit_xml as xml;
use crate::baseline::check::Report;
use crate::baseline::diff::{Severity, Status};
use crate::credential::posture::Rule;
use crate::sanitize::escape;
use std::collections::BTreeSet;
use std::fmt::Write as _;

const NS: &str = "http://checklists.nist.gov/xccdf/1.2";

/// How the document names the run.
pub struct XccdfRun<'a> {
    /// `audit` or `verify`.
    pub command: &'a str,
    pub host: &'a str,
    /// RFC 3339.
    pub start: &'a str,
    pub end: &'a str,
    pub version: &'a str,
    /// Whether the credential (posture) rules were judged: when not (`verify` without
    /// `--posture`), they are `notselected`, never `pass`.
    pub posture: bool,
}

fn rule_ref(id: &str) -> String {
    // XCCDF ids allow letters, digits, `-`, `.`, `_` after the prefix.
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("xccdf_io.kmsentry_rule_{clean}")
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
        Severity::Info => "info",
    }
}

fn message_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "info",
    }
}

/// Render the `TestResult` document.
pub fn xccdf(report: &Report, run: &XccdfRun<'_>) -> String {
    let mut body = String::new();
    let mut failed_rules: BTreeSet<&str> = BTreeSet::new();
    let (mut total, mut failed) = (0u64, 0u64);
    for f in &report.findings {
        let id = match (f.status, f.rule) {
            (Status::Posture | Status::Rotated, Some(r)) => r.to_string(),
            (Status::Changed, _) => format!(
                "drift-{}",
                f.changes.first().map_or("changed", |a| a.as_str())
            ),
            (s, _) => format!("drift-{}", s.as_str()),
        };
        let result = if f.status == Status::Rotated {
            "informational"
        } else {
            failed += 1;
            if let Some(r) = f.rule {
                failed_rules.insert(r);
            }
            "fail"
        };
        total += 1;
        let mut text = format!("{}: {}", escape(&f.path), f.status.as_str());
        if !f.changes.is_empty() {
            let _ = write!(
                text,
                " [{}]",
                f.changes
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(m) = &f.message {
            let _ = write!(text, ": {}", escape(m.as_bytes()));
        }
        let _ = write!(
            body,
            "  <rule-result idref=\"{}\" role=\"full\" severity=\"{}\" time=\"{}\">\n    <result>{result}</result>\n    <ident system=\"https://kmsentry.io/rules\">{}</ident>\n    <message severity=\"{}\">{}</message>\n    <instance context=\"file\">{}</instance>\n  </rule-result>\n",
            rule_ref(&id),
            severity(f.severity),
            xml(run.end),
            xml(&id),
            message_severity(f.severity),
            xml(&text),
            xml(&escape(&f.path)),
        );
    }
    for e in &report.errors {
        total += 1;
        let _ = write!(
            body,
            "  <rule-result idref=\"{}\" role=\"full\" severity=\"medium\" time=\"{}\">\n    <result>error</result>\n    <message severity=\"error\">{}</message>\n    <instance context=\"file\">{}</instance>\n  </rule-result>\n",
            rule_ref("read-error"),
            xml(run.end),
            xml(&e.to_string()),
            xml(&escape(&e.path)),
        );
    }
    for r in Rule::ALL {
        if r == Rule::CertRotated || failed_rules.contains(r.id()) {
            continue;
        }
        // Not-selected rules are not scored (XCCDF 1.2, default model).
        let result = if run.posture { "pass" } else { "notselected" };
        if run.posture {
            total += 1;
        }
        let _ = write!(
            body,
            "  <rule-result idref=\"{}\" role=\"full\" severity=\"{}\" time=\"{}\">\n    <result>{result}</result>\n    <ident system=\"https://kmsentry.io/rules\">{}</ident>\n  </rule-result>\n",
            rule_ref(r.id()),
            severity(super::sarif::default_severity(r)),
            xml(run.end),
            r.id(),
        );
    }
    let score = if total == 0 {
        100.0
    } else {
        100.0 * (total - failed) as f64 / total as f64
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<TestResult xmlns=\"{NS}\" id=\"xccdf_io.kmsentry_testresult_{cmd}\" start-time=\"{start}\" end-time=\"{end}\" version=\"{ver}\" test-system=\"cpe:/a:kmsentry:kmsentry:{ver}\">\n  <benchmark id=\"xccdf_io.kmsentry_benchmark_credentials\" href=\"https://kmsentry.io/benchmarks/credentials\"/>\n  <title>kmsentry {cmd}</title>\n  <target>{host}</target>\n  <target-facts>\n    <fact name=\"urn:xccdf:fact:asset:identifier:host_name\" type=\"string\">{host}</fact>\n    <fact name=\"urn:xccdf:fact:scanner:name\" type=\"string\">kmsentry</fact>\n  </target-facts>\n{body}  <score system=\"urn:xccdf:scoring:default\" maximum=\"100\">{score:.2}</score>\n</TestResult>\n",
        cmd = xml(run.command),
        start = xml(run.start),
        end = xml(run.end),
        ver = xml(run.version),
        host = xml(run.host),
    )
}
