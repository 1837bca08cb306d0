//! Human output for `verify` and `audit`: one line per finding, indented details, a summary
//! line that counts only what the command can find. Colour only when asked (the CLI asks only
//! for a terminal).

use super::details;
use crate::baseline::check::{Finding, Report};
use crate::baseline::diff::{Severity, Status};
use crate::sanitize::Name;
use std::io::Write;

fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Write the human report of `verify`: drift counts, errors, rotations and posture findings.
pub fn human(w: &mut dyn Write, report: &Report, color: bool) -> std::io::Result<()> {
    lines(w, report, color)?;
    writeln!(
        w,
        "{} checked: {} added, {} removed, {} changed, {} errors{}",
        report.checked,
        report.count(Status::Added),
        report.count(Status::Removed),
        report.count(Status::Changed),
        report.errors.len(),
        if report.count(Status::Rotated) + report.count(Status::Posture) > 0 {
            format!(
                "; {} rotated, {} posture",
                report.count(Status::Rotated),
                report.count(Status::Posture)
            )
        } else {
            String::new()
        }
    )?;
    if !report.findings.is_empty() {
        writeln!(
            w,
            "by severity: {}",
            severity_counts(report.findings.iter())
        )?;
    }
    if report.outside_policy > 0 {
        writeln!(
            w,
            "note: {} baseline entries lie outside this policy and were not compared (run `kmsentry baseline update` to drop them)",
            report.outside_policy
        )?;
    }
    Ok(())
}

/// Write the human report of `audit`, which has no baseline and so no drift: how many
/// entries were checked, the posture findings by severity, and errors when there were any.
pub fn human_audit(w: &mut dyn Write, report: &Report, color: bool) -> std::io::Result<()> {
    lines(w, report, color)?;
    let posture = report.count(Status::Posture);
    let mut summary = format!("{} checked: ", report.checked);
    if posture == 0 {
        summary.push_str("no posture findings");
    } else {
        let by_severity = severity_counts(
            report
                .findings
                .iter()
                .filter(|f| f.status == Status::Posture),
        );
        summary.push_str(&format!(
            "{posture} posture finding{} ({})",
            if posture == 1 { "" } else { "s" },
            by_severity
        ));
    }
    // Anything else a future audit rule reports still shows up in the count.
    let other = report.findings.len() - posture;
    if other > 0 {
        summary.push_str(&format!(", {other} other"));
    }
    match report.errors.len() {
        0 => {}
        1 => summary.push_str(", 1 error"),
        n => summary.push_str(&format!(", {n} errors")),
    }
    writeln!(w, "{summary}")
}

/// `2 high, 1 low`: how many of `findings` have each severity, highest first.
pub fn severity_counts<'a>(findings: impl Iterator<Item = &'a Finding> + Clone) -> String {
    [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ]
    .into_iter()
    .filter_map(|s| {
        let n = findings.clone().filter(|f| f.severity == s).count();
        (n > 0).then(|| format!("{n} {}", s.as_str()))
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// One line per finding with its rule and details, most severe first (then by path), then
/// one per error.
fn lines(w: &mut dyn Write, report: &Report, color: bool) -> std::io::Result<()> {
    let paint = |code: &str, text: &str| paint(color, code, text);
    let mut order: Vec<&Finding> = report.findings.iter().collect();
    order.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.path.cmp(&b.path))
    });
    for f in order {
        let status = match f.status {
            Status::Added => paint("1;33", "ADDED  "),
            Status::Removed => paint("1;31", "REMOVED"),
            Status::Changed => paint("1;31", "CHANGED"),
            Status::Rotated => paint("1;36", "ROTATED"),
            Status::Posture => paint("1;35", "POSTURE"),
        };
        let sev = match f.severity {
            Severity::Critical | Severity::High => paint("31", f.severity.as_str()),
            Severity::Medium => paint("33", f.severity.as_str()),
            _ => f.severity.as_str().to_string(),
        };
        let changes = if f.changes.is_empty() {
            String::new()
        } else {
            format!(
                " [{}]",
                f.changes
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        writeln!(
            w,
            "{status} {sev:<8} {}{changes}  ({}/{})",
            Name(&f.path),
            f.group,
            f.class.as_str()
        )?;
        if let (Some(rule), Some(msg)) = (f.rule, &f.message) {
            writeln!(
                w,
                "        {rule}: {}",
                crate::sanitize::escape(msg.as_bytes())
            )?;
        }
        for (attr, (b, l)) in details(f) {
            writeln!(w, "        {}: {b} -> {l}", attr.as_str())?;
        }
        if f.status == Status::Added {
            for (name, v) in super::added_details(report, f) {
                writeln!(w, "        {name}: {v}")?;
            }
        }
        for g in crate::baseline::grant::of(report, f) {
            writeln!(
                w,
                "        grants: {}",
                crate::sanitize::escape(g.what.as_bytes())
            )?;
        }
    }
    for e in &report.errors {
        writeln!(w, "{} {e}", paint("1;31", "ERROR  "))?;
    }
    Ok(())
}
