//! Every shipped rule (rules/) against its samples (tests/logs/PACK/ID.match.log and
//! ID.nomatch.log): a detection rule must match at least one line of its match sample and no
//! line of its nomatch sample; a correlation must fire on its match sample and not on its
//! nomatch sample. Lines are parsed by the same parsers `logs scan` uses, in the format the
//! docs give for the pack's source.

use kmsentry::logs::room::{LogRoom, Position};
use kmsentry::logs::rules::{load, RuleSet};
use kmsentry::logs::state::LearnedState;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Sample directory → the `logs:` entry a user would write for that kind of log.
const PACKS: &[(&str, &str)] = &[
    ("vault", "format: json\n    logsource: {product: vault, service: audit}"),
    ("cloudtrail", "format: json\n    logsource: {product: aws, service: cloudtrail}"),
    ("pykmip", "format: regex\n    pattern: '^(?P<asctime>\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d,\\d+) - (?P<logger>\\S+) - (?P<level>[A-Z]+) - (?P<message>.*)$'\n    logsource: {product: pykmip, service: server}"),
    ("generic-kms", "format: json\n    logsource: {product: kms, service: audit}"),
    ("tls", "format: syslog\n    logsource: {product: linux, service: auth}"),
    ("kmsentry-alerts", "format: json\n    logsource: {product: kmsentry, service: alerts}"),
    ("pgaudit", "format: pgaudit\n    logsource: {product: postgresql, service: pgaudit}"),
    ("mariadb", "format: mariadb-audit\n    logsource: {product: mariadb, service: server_audit}"),
    ("sshd", "format: syslog\n    logsource: {product: linux, service: sshd}"),
    ("sudo", "format: syslog\n    logsource: {product: linux, service: sudo}"),
    ("auth", "format: syslog\n    logsource: {product: linux, service: auth}"),
    ("provider", "format: auto\n    logsource: {product: linux, service: auth}"),
];

fn policy() -> kmsentry::policy::CompiledPolicy {
    let mut y = String::from("version: 1\ngroups:\n  - name: g\n    paths: [/etc/kms]\nlogs:\n");
    for (name, body) in PACKS {
        y.push_str(&format!(
            "  - name: {name}\n    source: {{file: /var/log/{name}.log}}\n    {body}\n"
        ));
    }
    kmsentry::policy::parse_str(&y, b"packs.yaml").unwrap()
}

fn rules() -> RuleSet {
    let (set, problems) = load(&[root().join("rules")]);
    assert!(
        problems.is_empty(),
        "shipped rules have problems: {problems:?}"
    );
    set
}

fn lines(p: &Path) -> Vec<Vec<u8>> {
    std::fs::read(p)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}",
                kmsentry::sanitize::Name(p.as_os_str().as_encoded_bytes())
            )
        })
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// (pack, match sample, nomatch sample) of a rule id.
fn samples(id: &str) -> (String, PathBuf, PathBuf) {
    for (pack, _) in PACKS {
        let m = root().join(format!("tests/logs/{pack}/{id}.match.log"));
        if m.exists() {
            let n = root().join(format!("tests/logs/{pack}/{id}.nomatch.log"));
            assert!(n.exists(), "{id}: no nomatch sample");
            return (pack.to_string(), m, n);
        }
    }
    panic!("rule {id} has no sample under tests/logs/");
}

fn fires(set: &RuleSet, pack: &str, id: &str, sample: &Path) -> bool {
    let p = policy();
    let src = p.logs.iter().find(|l| l.name == pack).unwrap();
    if let Some((rule, _)) = set.rules.iter().find(|(r, _)| r.id.as_deref() == Some(id)) {
        assert!(
            kmsentry::logs::rules::fits(&rule.logsource, &src.logsource),
            "{id}: its logsource does not fit pack {pack}"
        );
        let compiled = rsigma_eval::compile_rule(rule).unwrap();
        return lines(sample).iter().any(|l| {
            let e = kmsentry::logs::parse::parse(src.format, src.regex.as_ref(), l).unwrap_or_else(
                |_| {
                    panic!(
                        "{id}: sample line does not parse: {}",
                        kmsentry::sanitize::Name(l)
                    )
                },
            );
            let v = serde_json::Value::Object(e.fields);
            rsigma_eval::evaluate_rule(&compiled, &rsigma_eval::JsonEvent::borrow(&v)).is_some()
        });
    }
    let mut room = LogRoom::new(
        std::slice::from_ref(src),
        set,
        LearnedState::in_memory().unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    for (n, l) in lines(sample).iter().enumerate() {
        let pos = Position {
            file: b"sample",
            offset: n as u64,
            fallback_ts: None,
        };
        room.feed(0, l, pos, &mut out).unwrap();
    }
    out.iter().any(|f| f.rule == id)
}

#[test]
fn every_shipped_rule_matches_its_sample_and_not_its_negative_sample() {
    let set = rules();
    let mut ids: Vec<(String, bool)> = Vec::new();
    for (r, f) in &set.rules {
        let id = r.id.clone().unwrap_or_else(|| {
            panic!(
                "{}: rule `{}` has no id",
                kmsentry::sanitize::Name(f),
                r.title
            )
        });
        assert!(r.level.is_some(), "{id}: no level");
        assert!(
            r.description.is_some() && !r.falsepositives.is_empty(),
            "{id}: no description or falsepositives note"
        );
        ids.push((id, false));
    }
    for (c, f) in &set.correlations {
        let id = c.id.clone().unwrap_or_else(|| {
            panic!(
                "{}: correlation `{}` has no id",
                kmsentry::sanitize::Name(f),
                c.title
            )
        });
        assert!(c.level.is_some(), "{id}: no level");
        assert!(
            c.description.is_some() && !c.falsepositives.is_empty(),
            "{id}: no description or falsepositives note"
        );
        ids.push((id, true));
    }
    assert!(
        ids.len() >= 30,
        "expected the shipped packs, found {} rules",
        ids.len()
    );
    let mut failures = Vec::new();
    for (id, _) in &ids {
        let (pack, m, n) = samples(id);
        if !fires(&set, &pack, id, &m) {
            failures.push(format!(
                "{id}: does not match {}",
                kmsentry::sanitize::Name(m.as_os_str().as_encoded_bytes())
            ));
        }
        if fires(&set, &pack, id, &n) {
            failures.push(format!(
                "{id}: matches its negative sample {}",
                kmsentry::sanitize::Name(n.as_os_str().as_encoded_bytes())
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_sample_belongs_to_a_shipped_rule() {
    let set = rules();
    let ids: Vec<String> = set
        .rules
        .iter()
        .filter_map(|(r, _)| r.id.clone())
        .chain(set.correlations.iter().filter_map(|(c, _)| c.id.clone()))
        .collect();
    for (pack, _) in PACKS {
        for e in std::fs::read_dir(root().join("tests/logs").join(pack)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let id = name.split('.').next().unwrap();
            assert!(
                ids.iter().any(|i| i == id),
                "tests/logs/{pack}/{name}: no rule {id}"
            );
        }
    }
}
