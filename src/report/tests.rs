use super::*;
use crate::baseline::check::{compare, Outcome};
use crate::baseline::diff::Severity;
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
            sha256: Some([0xcd; 32]),
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
        sha256: Some([2; 32]),
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
        s.ends_with(
            "3 checked: 1 added, 1 removed, 1 changed, 0 errors\nby severity: 2 critical, 1 high\n"
        ),
        "{s}"
    );
    // The added entry lists its attributes (6 lines), like a changed one lists its changes.
    assert!(
        s.contains(
            "ADDED   high     /k/new  (keys/private-key)\n        type: file\n        mode: 0600\n"
        ),
        "{s}"
    );
    assert_eq!(s.lines().count(), 13, "{s}");
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

fn posture(path: &[u8], severity: Severity, rule: &'static str) -> Finding {
    Finding {
        path: path.to_vec(),
        status: Status::Posture,
        changes: vec![],
        group: "keys".into(),
        class: Class::PrivateKey,
        severity,
        base: None,
        live: None,
        rule: Some(rule),
        message: Some(format!("{rule} message")),
    }
}

#[test]
fn audit_human_summary_names_only_what_audit_finds() {
    let mut r = Report {
        checked: 5,
        findings: vec![
            posture(b"/k/a", Severity::Medium, "KMS-KEY-PERM"),
            posture(b"/k/b", Severity::High, "KMS-WEAK-KEY"),
            posture(b"/k/c", Severity::High, "KMS-CERT-EXPIRED"),
        ],
        ..Report::default()
    };
    let text = |r: &Report| {
        let mut out = Vec::new();
        human_audit(&mut out, r, false).unwrap();
        String::from_utf8(out).unwrap()
    };
    let s = text(&r);
    assert!(
        s.contains("POSTURE medium   /k/a  (keys/private-key)"),
        "{s}"
    );
    assert!(
        s.ends_with("5 checked: 3 posture findings (2 high, 1 medium)\n"),
        "{s}"
    );
    r.findings.truncate(1);
    r.errors.push(crate::baseline::walk::WalkError {
        path: b"/k/z".to_vec(),
        op: "open",
        error: std::io::Error::from_raw_os_error(13),
    });
    let s = text(&r);
    assert!(s.contains("ERROR   /k/z: open"), "{s}");
    assert!(
        s.ends_with("5 checked: 1 posture finding (1 medium), 1 error\n"),
        "{s}"
    );
    r.findings.clear();
    r.errors.clear();
    assert_eq!(text(&r), "5 checked: no posture findings\n");
}

#[test]
fn junit_has_one_testcase_per_path_listing_every_finding() {
    let mut r = report();
    // `/k/a...` changed and has two posture findings; `/k/ok` is clean by drift but has one;
    // `/k/new` could not be read either. Each is one testcase.
    r.findings.push(posture(
        b"/k/a\nb\xff.key",
        Severity::Critical,
        "KMS-KEY-PERM",
    ));
    r.findings
        .push(posture(b"/k/a\nb\xff.key", Severity::High, "KMS-WEAK-KEY"));
    r.findings
        .push(posture(b"/k/ok", Severity::Low, "KMS-CERT-EXPIRING"));
    r.findings.sort_by(|a, b| a.path.cmp(&b.path));
    for p in [&b"/k/ok"[..], b"/k/fine"] {
        r.clean.push(crate::baseline::check::Clean {
            path: p.to_vec(),
            group: "keys".into(),
        });
    }
    r.errors.push(crate::baseline::walk::WalkError {
        path: b"/k/new".to_vec(),
        op: "open",
        error: std::io::Error::from_raw_os_error(13),
    });
    r.errors.push(crate::baseline::walk::WalkError {
        path: b"/elsewhere".to_vec(),
        op: "open",
        error: std::io::Error::from_raw_os_error(13),
    });
    let x = junit(&r);
    // /k/a, /k/fine, /k/gone, /k/new, /k/ok in `keys`; /elsewhere in `errors`.
    assert!(
        x.contains("<testsuites name=\"kmsentry verify\" tests=\"6\" failures=\"3\" errors=\"2\">"),
        "{x}"
    );
    assert!(x.contains("<testsuite name=\"keys\" tests=\"5\" failures=\"3\" errors=\"1\">"));
    assert_eq!(x.matches("<testcase ").count(), 6, "{x}");
    for name in ["/k/a\\nb\\xff.key", "/k/ok", "/k/new", "/k/fine"] {
        assert_eq!(
            x.matches(&format!("name=\"{name}\"")).count(),
            1,
            "{name}: {x}"
        );
    }
    let a = &x[x.find("name=\"/k/a").unwrap()..];
    let a = &a[..a.find("</testcase>").unwrap()];
    assert_eq!(a.matches("<failure").count(), 1, "{a}");
    assert!(a.contains("type=\"changed, posture\""), "{a}");
    assert!(
        a.contains("message=\"critical: content, mode; critical: KMS-KEY-PERM KMS-KEY-PERM message; high: KMS-WEAK-KEY KMS-WEAK-KEY message\""),
        "{a}"
    );
    assert!(a.contains("mode: 0600 -&gt; 0644"), "{a}");
    // The unreadable, added file: an error, its finding kept in the text.
    let n = &x[x.find("name=\"/k/new\"").unwrap()..];
    let n = &n[..n.find("</testcase>").unwrap()];
    assert!(
        n.contains("<error message=\"open: ") && n.contains("added /k/new"),
        "{n}"
    );
    assert!(!n.contains("<failure"), "{n}");
    assert!(
        x.contains("classname=\"kmsentry.errors\" name=\"/elsewhere\""),
        "{x}"
    );
    assert!(x.contains("<testcase classname=\"kmsentry.keys\" name=\"/k/fine\"/>"));
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
