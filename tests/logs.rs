//! `logs scan` and `rules check` through the real binary: exit codes, policy and rule errors
//! with file and line, hostile log lines, masked secrets, `hours` and `first_seen` on event
//! time with learning that survives a restart (`--state`), `.gz` rotation ignored unless named.

mod util;
use std::ffi::OsStr;
use std::path::Path;
use util::*;

const RULE: &str = "title: Vault transit export\nid: t-export\nlevel: high\ndescription: d\nfalsepositives: [x]\nlogsource: {product: vault, service: audit}\ndetection:\n  sel:\n    request.path|startswith: transit/export/\n  condition: sel\n";

fn setup(env: &TestEnv, extra: &str) -> std::path::PathBuf {
    let rules = env.path("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("r.yml"), RULE).unwrap();
    let logs = env.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    env.policy(&format!(
        "version: 1\ngroups:\n  - name: g\n    paths: [/etc/kms]\nlogs:\n  - name: vault\n    source: {{file: {}/audit*.log}}\n    format: json\n    logsource: {{product: vault, service: audit}}\n{extra}rules: [{}]\n",
        logs.to_str().unwrap(),
        rules.to_str().unwrap()
    ))
}

fn line(path: &str, name: &str, t: &str) -> String {
    format!(
        r#"{{"time":"{t}","type":"response","auth":{{"client_token":"hvs.CAESIJ2lvaGFzaGVkdG9rZW5ib2R5MTIzNDU2","display_name":"{name}","policies":["default"]}},"request":{{"operation":"read","path":"{path}","remote_address":"10.0.0.1","data":{{"password":"hunter2"}}}}}}"#
    )
}

fn scan(env: &TestEnv, policy: &Path, extra: &[&str]) -> Run {
    let mut a: Vec<&OsStr> = vec![
        OsStr::new("logs"),
        OsStr::new("scan"),
        OsStr::new("--policy"),
        policy.as_os_str(),
        OsStr::new("-f"),
        OsStr::new("json"),
    ];
    a.extend(extra.iter().map(OsStr::new));
    env.run(&a)
}

#[test]
fn scan_exits_0_without_matches_and_1_with_them_and_masks_secrets() {
    let env = TestEnv::new();
    let p = setup(&env, "");
    std::fs::write(
        env.path("logs/audit.log"),
        line("transit/encrypt/k", "app", "2026-12-02T10:00:00Z") + "\n",
    )
    .unwrap();
    let r = scan(&env, &p, &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.json()["findings"].as_array().unwrap().len(), 0);

    let mut text = line("transit/encrypt/k", "app", "2026-12-02T10:00:00Z") + "\n";
    let at = text.len();
    text += &(line(
        "transit/export/encryption-key/k",
        "mallory",
        "2026-12-02T10:01:00Z",
    ) + "\n");
    std::fs::write(env.path("logs/audit.log"), &text).unwrap();
    let r = scan(&env, &p, &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let v = r.json();
    let f = &v["findings"][0];
    assert_eq!(f["rule"], "t-export");
    assert_eq!(f["severity"], "high");
    assert_eq!(f["source"], "vault");
    assert_eq!(f["log"]["offset"], at as u64);
    assert_eq!(f["time"], "2026-12-02T10:01:00Z");
    assert_eq!(f["fields"]["auth.display_name"], "mallory");
    assert_eq!(f["fields"]["request.data.password"], "<masked>");
    assert_eq!(f["fields"]["auth.client_token"], "<masked>");
    assert!(
        !r.stdout.contains("hunter2") && !r.stdout.contains("hvs.CAES"),
        "{}",
        r.stdout
    );
    assert_eq!(v["summary"]["findings"], 1);

    // Human and SARIF speak of the same finding.
    let r = env.run(&[
        OsStr::new("logs"),
        OsStr::new("scan"),
        OsStr::new("--policy"),
        p.as_os_str(),
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("t-export") && !r.stdout.contains("hunter2"),
        "{}",
        r.stdout
    );
    let r = env.run(&[
        OsStr::new("logs"),
        OsStr::new("scan"),
        OsStr::new("--policy"),
        p.as_os_str(),
        OsStr::new("-f"),
        OsStr::new("sarif"),
    ]);
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["runs"][0]["results"][0]["ruleId"], "t-export");
}

#[test]
fn hostile_lines_are_counted_never_fatal() {
    let env = TestEnv::new();
    let p = setup(&env, "");
    let mut d: Vec<u8> = Vec::new();
    d.extend_from_slice(b"{\"time\":\"2026-12-02T10:00:00Z\",\"request\":{\"path\":\"transit/ex\n"); // truncated JSON
    d.extend_from_slice(b"\xff\xfe\x00\x00garbage\n");
    d.extend(std::iter::repeat_n(b'{', 1 << 20));
    d.push(b'\n');
    d.extend(std::iter::repeat_n(b'a', 300 << 10));
    d.push(b'\n');
    d.extend_from_slice(
        line(
            "transit/export/x/k\\u202e\\n",
            "a\\u001b[31m",
            "2026-12-02T10:00:00Z",
        )
        .as_bytes(),
    );
    d.push(b'\n');
    std::fs::write(env.path("logs/audit.log"), &d).unwrap();
    let r = scan(&env, &p, &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let v = r.json();
    let c = &v["summary"]["counts"];
    assert_eq!(c["unparseable"], 2, "{c}");
    assert_eq!(c["oversized"], 2, "{c}");
    assert_eq!(c["events"], 1, "{c}");
    // Human output escapes what the log's writer chose.
    let r = env.run(&[
        OsStr::new("logs"),
        OsStr::new("scan"),
        OsStr::new("--policy"),
        p.as_os_str(),
    ]);
    assert!(
        !r.stdout.contains('\u{1b}') && !r.stdout.contains('\u{202e}'),
        "{:?}",
        r.stdout
    );
}

#[test]
fn bad_rules_and_bad_policies_exit_2_naming_file_and_line() {
    let env = TestEnv::new();
    let p = setup(&env, "");
    std::fs::write(
        env.path("rules/bad.yml"),
        RULE.replace("|startswith", "|startswiht")
            .replace("t-export", "t-bad"),
    )
    .unwrap();
    let r = env.run(&[
        OsStr::new("rules"),
        OsStr::new("check"),
        env.path("rules").as_os_str(),
    ]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("bad.yml:9:1:") && r.stdout.contains("startswiht"),
        "{}",
        r.stdout
    );
    let r = scan(&env, &p, &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("bad.yml:9"), "{}", r.stderr);
    std::fs::remove_file(env.path("rules/bad.yml")).unwrap();
    let r = env.run(&[
        OsStr::new("rules"),
        OsStr::new("check"),
        OsStr::new("--policy"),
        p.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    for (extra, want) in [
        (
            "    hours: {tz: Mars/Olympus, start: \"08:00\", end: \"18:00\"}\n",
            "policy.yaml:10:17: unknown time zone",
        ),
        (
            "    first_seen: {field: user, learn: soon}\n",
            "policy.yaml:10:17: `soon` is not a duration",
        ),
        ("    formt: json\n", "policy.yaml:10:5: unknown field"),
    ] {
        let p = setup(&env, extra);
        let r = scan(&env, &p, &[]);
        assert_eq!(r.code, 2, "{extra}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{extra}: {}", r.stderr);
    }
    // verify's verdict is untouched by the new keys: `policy check` still accepts the policy.
    let p = setup(&env, "");
    let r = env.run(&[OsStr::new("policy"), OsStr::new("check"), p.as_os_str()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

#[test]
fn first_seen_learns_on_event_time_and_remembers_across_runs_and_hours_judge_in_the_zone() {
    let env = TestEnv::new();
    let p = setup(
        &env,
        "    hours: {tz: Europe/Berlin, days: [mon, tue, wed, thu, fri], start: \"08:00\", end: \"18:00\"}\n    first_seen: {field: auth.display_name, learn: 1d}\n",
    );
    // Wednesday 2026-12-02: learning day; alice and bob seen. 10:00 UTC = 11:00 Berlin.
    let mut t = String::new();
    t += &(line("transit/decrypt/k", "alice", "2026-12-02T10:00:00Z") + "\n");
    t += &(line("transit/decrypt/k", "bob", "2026-12-02T11:00:00Z") + "\n");
    // Next day, inside hours: alice known, carol new.
    t += &(line("transit/decrypt/k", "alice", "2026-12-03T10:00:00Z") + "\n");
    t += &(line("transit/decrypt/k", "carol", "2026-12-03T10:05:00Z") + "\n");
    // Saturday 01:00 Berlin.
    t += &(line("transit/decrypt/k", "alice", "2026-12-05T00:00:00Z") + "\n");
    std::fs::write(env.path("logs/audit.log"), &t).unwrap();
    let state = env.path("logs.db");
    let r = scan(&env, &p, &["--state", state.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let v = r.json();
    let f: Vec<(String, String)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["fields"]["auth.display_name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        f,
        vec![
            ("kmsentry-first-seen".to_string(), "carol".to_string()),
            ("kmsentry-hours".to_string(), "alice".to_string())
        ]
    );
    // A later log, read by a new process: carol is now known, dave is new.
    let mut t = String::new();
    t += &(line("transit/decrypt/k", "carol", "2026-12-07T10:00:00Z") + "\n");
    t += &(line("transit/decrypt/k", "dave", "2026-12-07T10:00:01Z") + "\n");
    std::fs::write(env.path("logs/audit.log"), &t).unwrap();
    let r = scan(&env, &p, &["--state", state.to_str().unwrap()]);
    let v = r.json();
    let names: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fields"]["auth.display_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["dave"], "{v}");
    // Without --state nothing is remembered: the same log is all learning.
    let r = scan(&env, &p, &[]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn rotated_gz_files_are_ignored_unless_named_and_fifos_are_never_opened() {
    use std::io::Write;
    let env = TestEnv::new();
    let p = setup(&env, "");
    std::fs::write(
        env.path("logs/audit.log"),
        line("transit/encrypt/k", "app", "2026-12-02T10:00:00Z") + "\n",
    )
    .unwrap();
    let gz = env.path("logs/audit.log.1.gz");
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all((line("transit/export/k", "old", "2026-12-01T10:00:00Z") + "\n").as_bytes())
        .unwrap();
    e.finish().unwrap();
    let r = scan(&env, &p, &[]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let r = scan(&env, &p, &["--source", "vault", gz.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let fifo = env.path("logs/audit-fifo.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let r = scan(&env, &p, &[]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.json()["summary"]["errors"][0]
        .as_str()
        .unwrap()
        .contains("not a regular file"));
}
