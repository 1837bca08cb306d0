//! `kmsentry logs scan` (judge log files with the policy's Sigma rules, `hours` and
//! `first_seen`; exit 0 no match, 1 matches, 2 rule or policy error, 3 a log unreadable)
//! and `kmsentry rules check [PATH…]` (validate Sigma rules; exit 2 on any bad rule).

use super::{emit, DEFAULT_POLICY};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::logs::room::{LogFinding, LogRoom, Position};
use crate::logs::state::LearnedState;
use crate::policy::logs::SourceKind;
use crate::sanitize::{escape, JsonName, Name};
use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    Human,
    Json,
    Sarif,
}

#[derive(Args, Debug)]
pub(crate) struct ScanArgs {
    /// Policy naming the log sources (`logs:`) and Sigma rules (`rules:`).
    #[arg(long, default_value = DEFAULT_POLICY)]
    policy: PathBuf,
    /// Judge only this source (and read FILEs as this source).
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    /// Keep `first_seen` learning in this SQLite file (default: learning lasts for the run,
    /// so a forensic scan never changes the daemon's state).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Write the report here (atomically) instead of stdout.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Log files to read instead of the sources' globs (`.gz` files are read when named).
    files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// Policy whose `rules:` are checked when no PATH is given.
    #[arg(long, default_value = DEFAULT_POLICY)]
    policy: PathBuf,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Sigma rule files or directories.
    paths: Vec<PathBuf>,
}

/// `rules check`.
pub(crate) fn check(a: &CheckArgs) -> Result<ExitCode> {
    let paths = if a.paths.is_empty() {
        let p = crate::policy::load(&a.policy)?;
        p.rules.iter().map(PathBuf::from).collect()
    } else {
        a.paths.clone()
    };
    if paths.is_empty() {
        return Err(Error::Usage(format!(
            "{}: policy names no `rules:`; expected rule paths on the command line or in the policy",
            Name(a.policy.as_os_str().as_bytes())
        )));
    }
    let (set, problems) = crate::logs::rules::load(&paths);
    let out = match a.format {
        Format::Json | Format::Sarif => {
            let v = json!({
                "problems": problems.iter().map(|p| json!({
                    "file": JsonName(&p.file), "line": p.line, "message": p.msg,
                })).collect::<Vec<_>>(),
                "summary": {"files": set.files, "rules": set.rules.len(),
                            "correlations": set.correlations.len(), "problems": problems.len()},
            });
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        Format::Human => {
            let mut s = String::new();
            for p in &problems {
                s.push_str(&format!("{p}\n"));
            }
            s.push_str(&format!(
                "{} file(s): {} detection rule(s), {} correlation(s), {} problem(s)\n",
                set.files,
                set.rules.len(),
                set.correlations.len(),
                problems.len()
            ));
            s
        }
    };
    emit(&None, out.as_bytes())?;
    Ok(if problems.is_empty() {
        ExitCode::Clean
    } else {
        ExitCode::Usage
    })
}

/// `logs scan`.
pub(crate) fn scan(a: &ScanArgs) -> Result<ExitCode> {
    let policy = crate::policy::load(&a.policy)?;
    let pname = a.policy.as_os_str().as_bytes();
    if policy.logs.is_empty() {
        return Err(Error::Usage(format!(
            "{}: policy declares no `logs:` sources",
            Name(pname)
        )));
    }
    if policy.rules.is_empty()
        && policy
            .logs
            .iter()
            .all(|l| l.hours.is_none() && l.first_seen.is_empty())
    {
        return Err(Error::Usage(format!(
            "{}: policy names no `rules:` and no source has `hours` or `first_seen`; nothing to judge",
            Name(pname)
        )));
    }
    let rules = crate::logs::rules::load_strict(
        &policy.rules.iter().map(PathBuf::from).collect::<Vec<_>>(),
    )?;
    let state = match &a.state {
        Some(p) => LearnedState::open(p)?,
        None => LearnedState::in_memory()?,
    };
    let mut room = LogRoom::new(&policy.logs, &rules, state)?;
    let chosen: Vec<usize> = match &a.source {
        Some(n) => vec![room.source_index(n).ok_or_else(|| {
            Error::Usage(format!(
                "no log source `{}` in the policy; expected one of: {}",
                escape(n.as_bytes()),
                room.sources()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?],
        None => (0..policy.logs.len()).collect(),
    };
    // (source, file, named on the command line)
    let mut work: Vec<(usize, PathBuf, bool)> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut worst = ExitCode::Clean;
    if a.files.is_empty() {
        for &i in &chosen {
            match &policy.logs[i].kind {
                SourceKind::File(glob) => {
                    for f in crate::logs::file::expand(glob)? {
                        work.push((i, f, false));
                    }
                }
                other => tracing::info!(
                    "source {} is {}; `logs scan` reads file sources only",
                    policy.logs[i].name,
                    if matches!(other, SourceKind::Journald { .. }) {
                        "journald"
                    } else {
                        "a syslog socket"
                    }
                ),
            }
        }
    } else {
        for f in &a.files {
            let i = match (&a.source, chosen.len()) {
                (Some(_), _) | (None, 1) => chosen[0],
                _ => {
                    let b = f.as_os_str().as_bytes();
                    let by_glob = chosen
                        .iter()
                        .copied()
                        .find(|&i| match &policy.logs[i].kind {
                            SourceKind::File(g) => {
                                crate::policy::glob::Pattern::new(g).is_ok_and(|p| p.matches(b))
                            }
                            _ => false,
                        });
                    by_glob.ok_or_else(|| {
                        Error::Usage(format!(
                            "{}: matches no source's file glob; expected --source NAME",
                            Name(b)
                        ))
                    })?
                }
            };
            work.push((i, f.clone(), true));
        }
    }
    let mut findings: Vec<LogFinding> = Vec::new();
    let mut files_read = 0u64;
    let mut bytes = 0u64;
    for (i, f, named) in &work {
        let name = f.as_os_str().as_bytes();
        let (reader, mtime) = match crate::logs::file::open(f, *named) {
            Ok(r) => r,
            Err(e) => {
                worst = worst.combine(ExitCode::Integrity);
                errors.push(e.to_string());
                continue;
            }
        };
        room.new_file(*i);
        let mut failed = None;
        let res = crate::logs::file::for_each_line(reader, name, |line, offset| {
            if failed.is_some() {
                return;
            }
            let pos = Position {
                file: name,
                offset,
                fallback_ts: Some(mtime),
            };
            if let Err(e) = room.feed(*i, line, pos, &mut findings) {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        match res {
            Ok(st) => {
                files_read += 1;
                bytes += st.bytes;
                for _ in 0..st.oversized {
                    room.oversized();
                }
            }
            Err(e) => {
                worst = worst.combine(ExitCode::Integrity);
                errors.push(e.to_string());
            }
        }
    }
    room.finish()?;
    let mut by_rule: Map<String, Value> = Map::new();
    for f in &findings {
        let n = by_rule.get(&f.rule).and_then(Value::as_u64).unwrap_or(0);
        by_rule.insert(f.rule.clone(), json!(n + 1));
    }
    let summary = json!({
        "files": files_read,
        "bytes": bytes,
        "counts": room.counts,
        "rules": rules.rules.len() + rules.correlations.len(),
        "findings": findings.len(),
        "by_rule": by_rule,
        "sources": chosen.iter().map(|&i| json!({
            "name": policy.logs[i].name, "rules": room.rule_count(i),
        })).collect::<Vec<_>>(),
        "errors": errors,
    });
    let out = match a.format {
        Format::Json => {
            let v = json!({"findings": findings, "summary": summary});
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        Format::Sarif => format!(
            "{}\n",
            serde_json::to_string_pretty(&sarif(&findings)).unwrap_or_default()
        ),
        Format::Human => human(&findings, &summary, &errors),
    };
    emit(&a.output, out.as_bytes())?;
    if !findings.is_empty() {
        worst = worst.combine(ExitCode::Drift);
    }
    Ok(worst)
}

fn human(findings: &[LogFinding], summary: &Value, errors: &[String]) -> String {
    let mut s = String::new();
    for f in findings {
        s.push_str(&format!(
            "{:<8} {} {}: {} ({}:{})\n",
            f.severity,
            escape(f.source.as_bytes()),
            escape(f.rule.as_bytes()),
            escape(f.title.as_bytes()),
            Name(&f.log.file),
            f.log.offset
        ));
        if let Some(c) = &f.correlation {
            s.push_str(&format!(
                "         {} {} in {}s",
                c.kind, c.count, c.window_secs
            ));
            for (k, v) in &c.group_by {
                s.push_str(&format!(
                    " {}={}",
                    escape(k.as_bytes()),
                    escape(v.as_str().unwrap_or("").as_bytes())
                ));
            }
            s.push('\n');
        }
        for (k, v) in &f.fields {
            let v = match v {
                Value::String(t) => t.clone(),
                other => other.to_string(),
            };
            s.push_str(&format!(
                "         {}: {}\n",
                escape(k.as_bytes()),
                escape(v.as_bytes())
            ));
        }
    }
    for e in errors {
        s.push_str(&format!("error: {e}\n"));
    }
    let c = &summary["counts"];
    s.push_str(&format!(
        "{} finding(s); {} file(s), {} line(s), {} event(s), {} unparseable, {} lossy, {} oversized\n",
        summary["findings"], summary["files"], c["lines"], c["events"], c["unparseable"], c["lossy"], c["oversized"]
    ));
    s
}

fn sarif(findings: &[LogFinding]) -> Value {
    let mut rules: Vec<(&str, &str)> = Vec::new();
    for f in findings {
        if !rules.iter().any(|(id, _)| *id == f.rule) {
            rules.push((&f.rule, &f.title));
        }
    }
    let level = |s: &str| match s {
        "critical" | "high" => "error",
        "medium" => "warning",
        _ => "note",
    };
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "kmsentry",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules.iter().map(|(id, title)| json!({
                    "id": id, "shortDescription": {"text": title},
                })).collect::<Vec<_>>(),
            }},
            "results": findings.iter().map(|f| json!({
                "ruleId": f.rule,
                "level": level(f.severity),
                "message": {"text": format!("{} (source {})", f.title, f.source)},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": JsonName(&f.log.file)},
                    "region": {"byteOffset": f.log.offset},
                }}],
                "properties": {"severity": f.severity, "fields": f.fields},
            })).collect::<Vec<_>>(),
        }],
    })
}
