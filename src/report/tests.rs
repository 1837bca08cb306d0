use super::*;
use crate::baseline::check::{compare, Outcome};
use crate::baseline::{Hashes, Problem};
use crate::policy::{parse_str, Class};

fn entry(path: &[u8]) -> Entry {
    Entry {
        path: path.to_vec(),
        ftype: FileType::File,
        mode: 0o600,
        uid: 0,
        gid: 0,
        size: 4,
        hashes: Some(Hashes {
            blake3: [0xab; 32],
            sha256: [0xcd; 32],
        }),
        link_target: None,
        rdev: None,
        acl_access: None,
        acl_default: None,
        xattrs: vec![],
        dev: 1,
        ino: 2,
        nlink: 1,
        mtime_ns: 0,
        ctime_ns: 0,
        group: "keys".into(),
        class: Class::PrivateKey,
        problem: None,
    }
}

fn report() -> Report {
    let policy = parse_str(
        "version: 1\ngroups:\n  - name: keys\n    class: private-key\n    paths: [/k]\n",
        b"p",
    )
    .unwrap();
    let b = entry(b"/k/a\nb\xff.key");
    let mut l = b.clone();
    l.mode = 0o644;
    l.hashes = Some(Hashes {
        blake3: [1; 32],
        sha256: [2; 32],
    });
    let mut findings = Vec::new();
    for (base, live) in [
        (Some(&b), Some(l)),
        (None, Some(entry(b"/k/new"))),
        (Some(&entry(b"/k/gone")), None),
    ] {
        if let Outcome::Finding(f) = compare(&policy, base, live) {
            findings.push(f);
        }
    }
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    Report {
        findings,
        errors: vec![],
        checked: 3,
        outside_policy: 0,
        clean: vec![],
        credentials: vec![],
    }
}

#[test]
fn json_has_the_design_fields_and_escapes_names() {
    let v = json(&report());
    let f = &v["findings"][0];
    assert_eq!(f["path"], "/k/a\nb\\xff.key");
    assert_eq!(f["status"], "changed");
    assert_eq!(f["changes"], serde_json::json!(["content", "mode"]));
    assert_eq!(f["group"], "keys");
    assert_eq!(f["class"], "private-key");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["details"]["mode"]["baseline"], "0600");
    assert_eq!(
        v["summary"],
        serde_json::json!({"checked": 3, "added": 1, "removed": 1, "changed": 1, "rotated": 0, "posture": 0, "errors": 0})
    );
    let text = serde_json::to_string(&v).unwrap();
    assert!(text.contains(r#""/k/a\nb\\xff.key""#));
}

#[test]
fn human_output_escapes_and_summarises() {
    let mut out = Vec::new();
    human(&mut out, &report(), false).unwrap();
    let s = String::from_utf8(out).unwrap();
    assert!(
        s.contains("CHANGED critical /k/a\\nb\\xff.key [content, mode]  (keys/private-key)"),
        "{s}"
    );
    assert!(s.contains("mode: 0600 -> 0644"));
    assert!(
        s.ends_with("3 checked: 1 added, 1 removed, 1 changed, 0 errors\n"),
        "{s}"
    );
    assert_eq!(s.lines().count(), 6, "{s}");
}

#[test]
fn junit_is_well_formed_with_one_failure_per_finding() {
    let x = junit(&report());
    assert!(x.starts_with("<?xml"));
    assert!(x.contains("tests=\"3\" failures=\"3\" errors=\"0\""));
    assert!(x.contains("name=\"/k/a\\nb\\xff.key\""), "{x}");
    assert!(!x.contains('\u{1b}'));
    assert_eq!(x.matches("<failure").count(), 3);
}

#[test]
fn sarif_has_rules_and_one_result_per_change() {
    let v = sarif(&report(), "0.1.0");
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    assert!(run["tool"]["driver"]["rules"].as_array().unwrap().len() >= 15);
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 4); // content + mode, added, removed
    assert_eq!(results[0]["ruleId"], "content");
    assert_eq!(results[0]["level"], "error");
    assert_eq!(
        results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "file:///k/a%0Ab%FF.key"
    );
}

#[test]
fn export_lines_are_stable_and_unambiguous() {
    let mut e = entry(b"/etc/my key.pem");
    e.mtime_ns = 12345;
    e.ino = 99;
    let line = export_line(&e);
    assert_eq!(
        line,
        format!(
            "/etc/my\\x20key.pem type=file mode=0600 uid=0 gid=0 size=4 blake3={} sha256={} group=keys class=private-key",
            "ab".repeat(32),
            "cd".repeat(32)
        )
    );
    e.problem = Some(Problem::Unstable);
    e.hashes = None;
    assert!(export_line(&e).contains("content=unknown"));
}
