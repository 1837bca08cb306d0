//! A literal prefilter per source: from the detection rules that fit a source, the literals
//! at least one of which a line must contain for any rule to match. A line that is plain
//! printable ASCII without `\` (so no parser escape, no lossy `\xNN` text and no CSV `""`
//! can make a field differ from the raw bytes) and contains none of them cannot match any
//! rule, so the room skips evaluating it (it is still parsed and counted).
//! Built only when every rule's condition can be proved to need one of its literals
//! (no `not`, no selectors, only `contains`/`startswith`/`endswith`/exact string values,
//! optionally `|all`/`|cased`), and never for a source with `hours` or `first_seen`, which
//! judge every event. Anything else: no prefilter, every line evaluated.

use aho_corasick::AhoCorasick;
use rsigma_parser::{
    ConditionExpr, Detection, DetectionItem, Modifier, SigmaRule, SigmaValue, StringPart,
};
use std::collections::HashMap;

/// Fields whose values a parser derives rather than copies from the line.
const DERIVED_FIELDS: [&str; 2] = ["facility", "severity"];

/// Shortest literal worth keeping; a rule needing a shorter one makes the source unfiltered.
const MIN_LITERAL: usize = 3;

/// The literals of a source's rules.
pub struct Prefilter {
    ac: AhoCorasick,
}

impl Prefilter {
    /// A prefilter for `rules`, or `None` when one of them cannot be proved to need a literal.
    pub fn build<'a>(rules: impl IntoIterator<Item = &'a SigmaRule>) -> Option<Prefilter> {
        let mut lits = Vec::new();
        let mut any = false;
        for r in rules {
            lits.extend(rule_literals(r)?);
            any = true;
        }
        if !any || lits.is_empty() {
            return None;
        }
        lits.sort();
        lits.dedup();
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&lits)
            .ok()?;
        Some(Prefilter { ac })
    }

    /// Whether no rule can match `line` (see the module docs for when that is provable).
    pub fn skips(&self, line: &[u8]) -> bool {
        line.iter()
            .all(|&b| (b == b'\t' || (0x20..0x7f).contains(&b)) && b != b'\\')
            && !self.ac.is_match(line)
    }
}

/// Literals one of which any event the rule matches must contain; `None`: not provable.
pub fn rule_literals(r: &SigmaRule) -> Option<Vec<String>> {
    let named = &r.detection.named;
    if r.detection.conditions.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for c in &r.detection.conditions {
        out.extend(cond(c, named)?);
    }
    Some(out)
}

fn cond(c: &ConditionExpr, named: &HashMap<String, Detection>) -> Option<Vec<String>> {
    match c {
        ConditionExpr::Identifier(n) => det(named.get(n)?),
        // Every part must hold, so any one part's literals are necessary: take the fewest.
        ConditionExpr::And(v) => v
            .iter()
            .filter_map(|x| cond(x, named))
            .max_by_key(|l| selectivity(l)),
        ConditionExpr::Or(v) => union(v.iter().map(|x| cond(x, named))),
        ConditionExpr::Not(_) | ConditionExpr::Selector { .. } => None,
    }
}

/// Which of several necessary literal sets to keep: the one whose shortest literal is longest
/// (a longer literal is rarer in a line), then the one with fewer literals.
fn selectivity(l: &[String]) -> (usize, std::cmp::Reverse<usize>) {
    (
        l.iter().map(String::len).min().unwrap_or(0),
        std::cmp::Reverse(l.len()),
    )
}

fn union(parts: impl Iterator<Item = Option<Vec<String>>>) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for p in parts {
        out.extend(p?);
    }
    Some(out)
}

fn det(d: &Detection) -> Option<Vec<String>> {
    match d {
        Detection::AllOf(items) => items.iter().filter_map(item).max_by_key(|l| selectivity(l)),
        Detection::AnyOf(v) => union(v.iter().map(det)),
        Detection::Keywords(vals) => values(vals),
        _ => None,
    }
}

fn item(i: &DetectionItem) -> Option<Vec<String>> {
    let ok = i.field.modifiers.iter().all(|m| {
        matches!(
            m,
            Modifier::Contains
                | Modifier::StartsWith
                | Modifier::EndsWith
                | Modifier::All
                | Modifier::Cased
        )
    });
    if i.field.modifiers == [Modifier::Re] {
        return union(i.values.iter().map(|v| match v {
            SigmaValue::String(s) => regex_literals(&s.original),
            _ => None,
        }));
    }
    if !ok
        || i.field
            .name
            .as_deref()
            .is_some_and(|n| DERIVED_FIELDS.contains(&n))
    {
        return None;
    }
    values(&i.values)
}

/// Prefix literals every match of `pattern` starts with (lower-cased; variants with non-ASCII
/// letters dropped, since a skipped line is ASCII), or `None` when the set is not finite or
/// a literal is too short.
fn regex_literals(pattern: &str) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::parse(pattern).ok()?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let mut out = Vec::new();
    for l in seq.literals()? {
        let b = l.as_bytes();
        if !b.is_ascii() {
            continue;
        }
        if b.len() < MIN_LITERAL || b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\') {
            return None;
        }
        out.push(String::from_utf8(b.to_ascii_lowercase()).ok()?);
    }
    out.sort();
    out.dedup();
    (!out.is_empty()).then_some(out)
}

fn values(vals: &[SigmaValue]) -> Option<Vec<String>> {
    if vals.is_empty() {
        return None;
    }
    vals.iter()
        .map(|v| match v {
            SigmaValue::String(s) => s
                .parts
                .iter()
                .filter_map(|p| match p {
                    StringPart::Plain(t) => Some(t),
                    StringPart::Special(_) => None,
                })
                .max_by_key(|t| t.len())
                .filter(|t| {
                    t.len() >= MIN_LITERAL
                        && t.bytes()
                            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
                })
                .cloned(),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(det: &str) -> SigmaRule {
        let y = format!("title: t\nlogsource: {{product: x}}\ndetection:\n{det}\n");
        rsigma_parser::parse_sigma_yaml(&y).unwrap().rules.remove(0)
    }

    #[test]
    fn literals_follow_the_condition() {
        let r =
            rule("  a:\n    type: response\n    path|startswith: transit/export/\n  condition: a");
        assert_eq!(
            rule_literals(&r).unwrap(),
            vec!["transit/export/".to_string()]
        );
        let r = rule("  a:\n    m|contains: x\n  condition: not a");
        assert!(rule_literals(&r).is_none());
        let r = rule("  a:\n    m|cidr: 10.0.0.0/8\n  condition: a");
        assert!(rule_literals(&r).is_none());
        let r = rule("  a:\n    m|re: '(?i)(drop\\s+x|alter\\s+system)'\n  condition: a");
        let l = rule_literals(&r).unwrap();
        assert!(
            l.iter().all(|x| "drop".starts_with(x.as_str())
                || x.starts_with("drop")
                || x.starts_with("alter")),
            "{l:?}"
        );
    }

    #[test]
    fn a_line_is_skipped_only_when_plain_and_without_literals() {
        let r = rule("  a:\n    m|contains: Failed password\n  condition: a");
        let p = Prefilter::build([&r]).unwrap();
        assert!(p.skips(b"Connection closed by 10.0.0.1"));
        assert!(!p.skips(b"x FAILED PASSWORD for root"));
        assert!(!p.skips(b"{\"m\":\"Failed\\u0020password\"}"));
        assert!(!p.skips("Connexion ferm\u{e9}e".as_bytes()));
        assert!(!p.skips(b"bad \xff byte"));
    }
}
