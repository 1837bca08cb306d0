//! Sigma rules: load files and directories, check every document with the `rsigma` parser
//! and compiler, and build one correlation engine per log source from the rules whose
//! `logsource` fits that source. Every problem names file, line and what is wrong; a bad
//! rule never stops the others from being checked.

use crate::error::{Error, PolicyErrors, PolicyProblem, Result};
use crate::policy::logs::RawLogsource;
use rsigma_eval::{CorrelationConfig, CorrelationEngine};
use rsigma_parser::{parse_sigma_yaml, CorrelationRule, SigmaCollection, SigmaRule};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A rule file larger than this is refused (rule files are a few KiB).
pub const MAX_RULE_BYTES: u64 = 4 << 20;

/// Every rule that checked out, with the file each came from.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<(SigmaRule, Vec<u8>)>,
    pub correlations: Vec<(CorrelationRule, Vec<u8>)>,
    /// Files read.
    pub files: usize,
}

/// One problem found in a rule file.
fn problem(file: &Path, line: u64, msg: String) -> PolicyProblem {
    PolicyProblem {
        file: file.as_os_str().as_bytes().to_vec(),
        line,
        col: if line == 0 { 0 } else { 1 },
        msg,
    }
}

/// `*.yml` / `*.yaml` under each path (a file is taken as given), sorted, symlinks not
/// followed inside directories.
pub fn rule_files(paths: &[PathBuf], problems: &mut Vec<PolicyProblem>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut out, problems, 0),
            Ok(m) if m.is_file() => out.push(p.clone()),
            Ok(_) => problems.push(problem(
                p,
                0,
                "not a regular file or directory; expected Sigma rule files".into(),
            )),
            Err(e) => problems.push(problem(p, 0, format!("cannot read rules: {e}"))),
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, problems: &mut Vec<PolicyProblem>, depth: u32) {
    if depth > 16 {
        return;
    }
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(r) => r.filter_map(|e| e.ok()).collect(),
        Err(e) => {
            problems.push(problem(dir, 0, format!("cannot read rule directory: {e}")));
            return;
        }
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out, problems, depth + 1),
            Ok(t) if t.is_file() => {
                if matches!(p.extension().and_then(|x| x.to_str()), Some("yml" | "yaml")) {
                    out.push(p);
                }
            }
            _ => {}
        }
    }
}

/// Load and check every rule under `paths`. Returns the good rules and every problem.
pub fn load(paths: &[PathBuf]) -> (RuleSet, Vec<PolicyProblem>) {
    let mut problems = Vec::new();
    let mut set = RuleSet::default();
    for f in rule_files(paths, &mut problems) {
        set.files += 1;
        let text = match read_text(&f) {
            Ok(t) => t,
            Err(m) => {
                problems.push(problem(&f, 0, m));
                continue;
            }
        };
        check_text(&f, &text, &mut set, &mut problems);
    }
    let names: Vec<String> = set
        .rules
        .iter()
        .flat_map(|(r, _)| [r.id.clone(), r.name.clone()])
        .chain(
            set.correlations
                .iter()
                .flat_map(|(c, _)| [c.id.clone(), c.name.clone()]),
        )
        .flatten()
        .collect();
    set.correlations.retain(|(c, file)| {
        let missing: Vec<&String> = c.rules.iter().filter(|r| !names.contains(r)).collect();
        if missing.is_empty() {
            return true;
        }
        problems.push(PolicyProblem {
            file: file.clone(),
            line: 0,
            col: 0,
            msg: format!(
                "correlation `{}` refers to unknown rule(s) {}; expected the id or name of a detection rule",
                c.title,
                missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
            ),
        });
        false
    });
    (set, problems)
}

/// [`load`], failing with every problem when there is one.
pub fn load_strict(paths: &[PathBuf]) -> Result<RuleSet> {
    let (set, problems) = load(paths);
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(Error::Policy(PolicyErrors(problems)))
    }
}

fn read_text(f: &Path) -> std::result::Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(f).map_err(|e| format!("cannot read rule file: {e}"))?;
    let mut buf = Vec::new();
    file.take(MAX_RULE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read rule file: {e}"))?;
    if buf.len() as u64 > MAX_RULE_BYTES {
        return Err(format!(
            "larger than {MAX_RULE_BYTES} bytes; expected a Sigma rule file"
        ));
    }
    String::from_utf8(buf).map_err(|e| {
        format!(
            "not UTF-8 (invalid byte at offset {}); expected a YAML Sigma rule",
            e.utf8_error().valid_up_to()
        )
    })
}

/// The YAML documents of a file with the line each starts on.
fn documents(text: &str) -> Vec<(u64, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, l) in text.lines().enumerate() {
        if l.trim_end() == "---" {
            docs.push((start, std::mem::take(&mut cur)));
            start = i as u64 + 2;
            continue;
        }
        cur.push_str(l);
        cur.push('\n');
    }
    docs.push((start, cur));
    docs.retain(|(_, d)| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// The line in `doc` (starting at `start`) a message points at: the quoted token it names,
/// else the `condition:` line for condition errors, else the document's first line.
fn locate(doc: &str, start: u64, msg: &str) -> u64 {
    let token = msg.split('\'').nth(1).filter(|t| !t.is_empty());
    let find = |needle: &str| {
        doc.lines()
            .position(|l| l.contains(needle))
            .map(|i| start + i as u64)
    };
    token
        .and_then(|t| find(&format!("|{t}")).or_else(|| find(t)))
        .or_else(|| {
            msg.to_ascii_lowercase()
                .contains("condition")
                .then(|| find("condition:"))
                .flatten()
        })
        .or_else(|| {
            msg.to_ascii_lowercase()
                .contains("timespan")
                .then(|| find("timespan:"))
                .flatten()
        })
        .unwrap_or(start)
}

/// Check one file's text; good rules go into `set`, problems into `problems`.
pub fn check_text(f: &Path, text: &str, set: &mut RuleSet, problems: &mut Vec<PolicyProblem>) {
    let file = f.as_os_str().as_bytes().to_vec();
    let docs = documents(text);
    if docs.is_empty() {
        problems.push(problem(
            f,
            0,
            "no Sigma rule in file; expected `title:`, `logsource:` and `detection:`".into(),
        ));
    }
    // Documents are parsed one at a time so each problem names its own line; a global
    // `action: global` document is not split off (kmsentry rules are single documents).
    for (start, doc) in docs {
        let coll: SigmaCollection = match parse_sigma_yaml(&doc) {
            Ok(c) => c,
            Err(e) => {
                let m = e.to_string();
                problems.push(problem(f, locate(&doc, start, &m), m));
                continue;
            }
        };
        for m in &coll.errors {
            problems.push(problem(f, locate(&doc, start, m), m.clone()));
        }
        for r in coll.rules {
            match rsigma_eval::compile_rule(&r) {
                Ok(_) => set.rules.push((r, file.clone())),
                Err(e) => {
                    let m = format!("rule `{}`: {e}", r.title);
                    problems.push(problem(f, locate(&doc, start, &m), m));
                }
            }
        }
        for c in coll.correlations {
            let mut probe = CorrelationEngine::new(CorrelationConfig::default());
            match probe.add_correlation(&c) {
                Ok(()) => set.correlations.push((c, file.clone())),
                Err(e) => {
                    let m = format!("correlation `{}`: {e}", c.title);
                    problems.push(problem(f, locate(&doc, start, &m), m));
                }
            }
        }
    }
}

/// Whether a rule's `logsource` fits a source's: each of product, service and category the
/// rule names must be the source's (case-insensitive); what the rule leaves out fits anything.
pub fn fits(rule: &rsigma_parser::LogSource, src: &RawLogsource) -> bool {
    let eq = |r: &Option<String>, s: &Option<String>| match (r, s) {
        (None, _) => true,
        (Some(r), Some(s)) => r.eq_ignore_ascii_case(s),
        (Some(_), None) => false,
    };
    eq(&rule.product, &src.product)
        && eq(&rule.service, &src.service)
        && eq(&rule.category, &src.category)
}

/// A correlation engine for one source: the detection rules that fit it and the
/// correlations whose every referenced rule is among them. Event time drives windows.
pub fn engine_for(set: &RuleSet, src: &RawLogsource) -> Result<(CorrelationEngine, usize)> {
    let config = CorrelationConfig {
        timestamp_fallback: rsigma_eval::TimestampFallback::Skip,
        // Sigma: rules a correlation refers to do not alert on their own unless it says
        // `generate: true`.
        emit_detections: false,
        ..CorrelationConfig::default()
    };
    let mut eng = CorrelationEngine::new(config);
    let mut names = Vec::new();
    let mut n = 0;
    for (r, _) in set.rules.iter().filter(|(r, _)| fits(&r.logsource, src)) {
        eng.add_rule(r)
            .map_err(|e| Error::Usage(format!("rule `{}`: {e}", r.title)))?;
        names.extend(r.id.iter().chain(r.name.iter()).cloned());
        n += 1;
    }
    // Correlations may build on correlations: add in rounds until nothing more fits.
    let mut pending: Vec<&CorrelationRule> = set.correlations.iter().map(|(c, _)| c).collect();
    loop {
        let before = pending.len();
        let mut rest = Vec::new();
        for c in pending {
            if c.rules.iter().all(|r| names.contains(r)) {
                eng.add_correlation(c)
                    .map_err(|e| Error::Usage(format!("correlation `{}`: {e}", c.title)))?;
                names.extend(c.id.iter().chain(c.name.iter()).cloned());
                n += 1;
            } else {
                rest.push(c);
            }
        }
        pending = rest;
        if pending.len() == before || pending.is_empty() {
            break;
        }
    }
    Ok((eng, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> (RuleSet, Vec<PolicyProblem>) {
        let mut set = RuleSet::default();
        let mut p = Vec::new();
        check_text(Path::new("r.yml"), text, &mut set, &mut p);
        (set, p)
    }

    const GOOD: &str = "title: t\nid: r1\nlevel: high\nlogsource: {product: linux, service: sshd}\ndetection:\n  sel:\n    message|contains: Failed password\n  condition: sel\n";

    #[test]
    fn a_good_rule_checks_out() {
        let (set, p) = check(GOOD);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(set.rules.len(), 1);
    }

    #[test]
    fn an_unknown_modifier_names_its_line() {
        let bad = GOOD.replace("|contains", "|containz");
        let (_, p) = check(&bad);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, 7, "{}", p[0]);
        assert!(p[0].msg.contains("containz"), "{}", p[0]);
    }

    #[test]
    fn a_bad_condition_names_the_condition_line() {
        let bad = GOOD.replace("condition: sel", "condition: sel and and");
        let (_, p) = check(&bad);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, 8, "{}", p[0]);
    }

    #[test]
    fn second_document_problems_count_from_the_separator() {
        let two = format!("{GOOD}---\ntitle: x\nlogsource: {{product: linux}}\ndetection:\n  sel:\n    a|nope: 1\n  condition: sel\n");
        let (set, p) = check(&two);
        assert_eq!(set.rules.len(), 1);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, 14, "{}", p[0]);
    }

    #[test]
    fn logsource_fit_is_per_named_key() {
        let mut r = rsigma_parser::LogSource::default();
        let src = RawLogsource {
            product: Some("linux".into()),
            service: Some("sshd".into()),
            category: None,
        };
        assert!(fits(&r, &src));
        r.product = Some("Linux".into());
        assert!(fits(&r, &src));
        r.service = Some("sudo".into());
        assert!(!fits(&r, &src));
    }
}
