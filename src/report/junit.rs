//! JUnit XML: one `<testsuite>` per policy group, one `<testcase>` per entry checked; a
//! finding is a `<failure>` naming what changed, a per-entry error an `<error>`.

use super::details;
use crate::baseline::check::Report;
use crate::baseline::diff::Status;
use crate::sanitize::escape;
use std::collections::BTreeMap;
use std::fmt::Write as _;

enum Case<'a> {
    Pass,
    Fail(&'a crate::baseline::check::Finding),
    Error(String),
}

/// Render the JUnit document.
pub fn junit(report: &Report) -> String {
    let mut suites: BTreeMap<String, Vec<(Vec<u8>, Case<'_>)>> = BTreeMap::new();
    for c in &report.clean {
        suites
            .entry(c.group.clone())
            .or_default()
            .push((c.path.clone(), Case::Pass));
    }
    for f in &report.findings {
        suites
            .entry(f.group.clone())
            .or_default()
            .push((f.path.clone(), Case::Fail(f)));
    }
    for e in &report.errors {
        suites.entry("errors".into()).or_default().push((
            e.path.clone(),
            Case::Error(format!("{}: {}", e.op, e.error)),
        ));
    }
    let (mut tests, mut failures, mut errors) = (0, 0, 0);
    let mut body = String::new();
    for (group, mut cases) in suites {
        cases.sort_by(|a, b| a.0.cmp(&b.0));
        let f = cases
            .iter()
            .filter(|c| matches!(c.1, Case::Fail(_)))
            .count();
        let e = cases
            .iter()
            .filter(|c| matches!(c.1, Case::Error(_)))
            .count();
        tests += cases.len();
        failures += f;
        errors += e;
        let _ = writeln!(
            body,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"{e}\">",
            xml(&group),
            cases.len()
        );
        for (path, case) in cases {
            let name = xml(&escape(&path));
            match case {
                Case::Pass => {
                    let _ = writeln!(
                        body,
                        "    <testcase classname=\"kmsentry.{}\" name=\"{name}\"/>",
                        xml(&group)
                    );
                }
                Case::Fail(f) => {
                    let what = match f.status {
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
                    };
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
                    let _ = writeln!(
                        body,
                        "    <testcase classname=\"kmsentry.{}\" name=\"{name}\">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>",
                        xml(&group),
                        f.status.as_str(),
                        xml(&format!("{}: {what}", f.severity.as_str())),
                        xml(&text)
                    );
                }
                Case::Error(msg) => {
                    let _ = writeln!(
                        body,
                        "    <testcase classname=\"kmsentry.errors\" name=\"{name}\">\n      <error message=\"{}\"/>\n    </testcase>",
                        xml(&msg)
                    );
                }
            }
        }
        body.push_str("  </testsuite>\n");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"kmsentry verify\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">\n{body}</testsuites>\n"
    )
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
