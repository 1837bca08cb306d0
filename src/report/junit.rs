//! JUnit XML: one `<testsuite>` per policy group, one `<testcase>` per entry checked; an
//! entry with findings holds one `<failure>` listing all of them, an entry that could not be
//! read one `<error>`.

use super::details;
use crate::baseline::check::{Finding, Report};
use crate::baseline::diff::Status;
use crate::sanitize::escape;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// One path's testcase: every finding and error recorded for it.
#[derive(Default)]
struct Case<'a> {
    findings: Vec<&'a Finding>,
    errors: Vec<String>,
}

/// Render the JUnit document.
///
/// One `<testcase>` per path and suite: a path can be clean as far as drift goes and still
/// carry posture findings, or carry several findings (a changed file with a weak key), and a
/// report that listed it once per finding would count it as several tests. A testcase holds
/// at most one element: `<error>` when the path could not be (fully) read, else `<failure>`
/// listing every finding for it, so it stays valid under the strictest JUnit schemas (where
/// a testcase holds a failure or an error, not several).
pub fn junit(report: &Report) -> String {
    // suite → path → case; BTreeMaps keep suites and paths sorted (by raw path bytes).
    let mut suites: BTreeMap<&str, BTreeMap<&[u8], Case<'_>>> = BTreeMap::new();
    // Where each path lives, so an error lands on the path's own testcase.
    let mut group_of: HashMap<&[u8], &str> = HashMap::new();
    for c in &report.clean {
        group_of.insert(&c.path, &c.group);
        suites
            .entry(&c.group)
            .or_default()
            .entry(&c.path)
            .or_default();
    }
    for f in &report.findings {
        group_of.insert(&f.path, &f.group);
        suites
            .entry(&f.group)
            .or_default()
            .entry(&f.path)
            .or_default()
            .findings
            .push(f);
    }
    for e in &report.errors {
        let group = group_of.get(e.path.as_slice()).copied().unwrap_or("errors");
        suites
            .entry(group)
            .or_default()
            .entry(&e.path)
            .or_default()
            .errors
            .push(format!("{}: {}", e.op, e.error));
    }
    let (mut tests, mut failures, mut errors) = (0, 0, 0);
    let mut body = String::new();
    for (group, cases) in suites {
        let e = cases.values().filter(|c| !c.errors.is_empty()).count();
        let f = cases
            .values()
            .filter(|c| c.errors.is_empty() && !c.findings.is_empty())
            .count();
        tests += cases.len();
        failures += f;
        errors += e;
        let group = xml(group);
        let _ = writeln!(
            body,
            "  <testsuite name=\"{group}\" tests=\"{}\" failures=\"{f}\" errors=\"{e}\">",
            cases.len()
        );
        for (path, case) in cases {
            let name = xml(&escape(path));
            let open = format!("    <testcase classname=\"kmsentry.{group}\" name=\"{name}\"");
            let texts: Vec<String> = case.findings.iter().map(|f| finding_text(f)).collect();
            if !case.errors.is_empty() {
                let mut text = case.errors.join("\n");
                for t in &texts {
                    let _ = write!(text, "\n\n{t}");
                }
                let _ = writeln!(
                    body,
                    "{open}>\n      <error message=\"{}\">{}</error>\n    </testcase>",
                    xml(&case.errors.join("; ")),
                    xml(&text)
                );
            } else if !case.findings.is_empty() {
                let mut kinds: Vec<&str> = Vec::new();
                for f in &case.findings {
                    if !kinds.contains(&f.status.as_str()) {
                        kinds.push(f.status.as_str());
                    }
                }
                let message = case
                    .findings
                    .iter()
                    .map(|f| format!("{}: {}", f.severity.as_str(), what(f)))
                    .collect::<Vec<_>>()
                    .join("; ");
                let _ = writeln!(
                    body,
                    "{open}>\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>",
                    kinds.join(", "),
                    xml(&message),
                    xml(&texts.join("\n\n"))
                );
            } else {
                let _ = writeln!(body, "{open}/>");
            }
        }
        body.push_str("  </testsuite>\n");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"kmsentry verify\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">\n{body}</testsuites>\n"
    )
}

/// What a finding is about, in a few words: the attributes that changed, the rule and its
/// message, or the status.
fn what(f: &Finding) -> String {
    match f.status {
        Status::Changed => f
            .changes
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        Status::Posture | Status::Rotated => format!(
            "{} {}",
            f.rule.unwrap_or_default(),
            f.message.as_deref().unwrap_or_default()
        ),
        s => s.as_str().to_string(),
    }
}

/// A finding in full: status, path, class, severity, rule and message, details.
fn finding_text(f: &Finding) -> String {
    let mut text = format!(
        "{} {} ({}, {})",
        f.status.as_str(),
        escape(&f.path),
        f.class.as_str(),
        f.severity.as_str()
    );
    if let (Some(rule), Some(m)) = (f.rule, &f.message) {
        let _ = write!(text, "\n{rule}: {m}");
    }
    for (attr, (b, l)) in details(f) {
        let _ = write!(text, "\n{}: {b} -> {l}", attr.as_str());
    }
    text
}

/// XML-escape text that `sanitize` already made free of control characters.
pub(crate) fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            c if (c as u32) < 0x20 && c != '\t' => {
                let _ = write!(o, "\\x{:02x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}
