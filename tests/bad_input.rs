//! Bad input: a clear message naming the file (and line:column), the right exit code, no
//! panic, nothing lost.

mod util;
use std::ffi::OsStr;
use util::*;

fn check(env: &TestEnv, yaml: &str) -> Run {
    let p = env.policy(yaml);
    env.run(&[
        OsStr::new("policy"),
        OsStr::new("check"),
        p.as_os_str(),
        OsStr::new("--no-resolve"),
    ])
}

fn assert_policy_error(yaml: &str, want: &str) {
    let env = TestEnv::new();
    let r = check(&env, yaml);
    assert_eq!(r.code, 2, "{yaml:?}: {}", r.stderr);
    assert!(
        r.stderr.contains(want),
        "{yaml:?}: want {want:?} in {}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"));
}

#[test]
fn malformed_yaml_names_file_line_and_column() {
    assert_policy_error(
        "version: 1\ngroups:\n  - name: a\n    paths: [/x\n",
        "policy.yaml:4:12: unclosed bracket",
    );
    assert_policy_error("version: 1\ngroups:\n\t- name: a\n", "policy.yaml:3:");
}

#[test]
fn unknown_keys_wrong_types_and_bad_values_are_located() {
    assert_policy_error(
        "version: 1\ngroups:\n  - name: a\n    pathz: [/x]\n",
        "policy.yaml:4:5: unknown field `pathz`, expected one of",
    );
    assert_policy_error(
        "version: 1\ngroups:\n  - name: a\n    paths: /x\n",
        "policy.yaml:4:12: expected a list",
    );
    assert_policy_error(
        "version: 1\ngroups:\n  - name: a\n    paths: [/x]\n    class: cert\n",
        "policy.yaml:5:12: unknown variant `cert`",
    );
    assert_policy_error(
        "version: 1\ngroups:\n  - name: a\n    paths: [/x]\n    compare: [contents]\n",
        "policy.yaml:5:15: unknown variant `contents`",
    );
    assert_policy_error(
        "version: 1\ngroups:\n  - name: a\n    paths: [/x]\n    access:\n      mode: deny\n",
        "policy.yaml:6:13: unknown variant `deny`",
    );
    assert_policy_error(
        "version: 3\ngroups:\n  - name: a\n    paths: [/x]\n",
        "policy.yaml:1:10: unsupported policy version 3",
    );
}

#[test]
fn empty_and_relative_paths_are_refused() {
    assert_policy_error(
        "version: 1\ngroups:\n  - name: a\n    paths: []\n",
        "policy.yaml:4:12: `paths` is empty",
    );
    assert_policy_error(
        "version: 1\ngroups:\n  - name: a\n    paths: [etc/kms]\n",
        "policy.yaml:4:13: path `etc/kms` is relative",
    );
    assert_policy_error("", "policy is empty");
}

#[test]
fn a_missing_policy_file_is_a_usage_error() {
    let env = TestEnv::new();
    let r = env.run(&["policy", "check", "/nonexistent/policy.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("/nonexistent/policy.yaml: cannot read policy: No such file or directory"),
        "{}",
        r.stderr
    );
    let r = env.run(&[
        "verify",
        "--policy",
        "/nonexistent/policy.yaml",
        "--db",
        "x.db",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn bad_command_lines_exit_2_and_help_exits_0() {
    let env = TestEnv::new();
    assert_eq!(env.run(&["verify", "--format", "xml"]).code, 2);
    assert_eq!(env.run(&["frobnicate"]).code, 2);
    assert_eq!(env.run(&["--help"]).code, 0);
    let v = env.run(&["--version"]);
    assert_eq!(v.code, 0);
    assert!(v.stdout.starts_with("kmsentry "));
}

fn env_with_baseline() -> TestEnv {
    let env = TestEnv::new();
    env.policy("version: 1\ngroups:\n  - name: a\n    class: kms-config\n    paths: [/etc/kms]\n");
    for i in 0..50 {
        env.write(
            &format!("/etc/kms/f{i}.yaml"),
            format!("k: {i}\n").as_bytes(),
        );
    }
    env.init();
    env
}

#[test]
fn missing_truncated_random_and_foreign_databases_exit_3() {
    let env = env_with_baseline();
    let verify_db = |db: &std::path::Path| {
        env.run(&[
            OsStr::new("verify"),
            OsStr::new("--policy"),
            p(&env.path("policy.yaml")),
            OsStr::new("--db"),
            p(db),
            OsStr::new("--root"),
            p(&env.root()),
        ])
    };
    let r = verify_db(&env.path("missing.db"));
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("missing.db: baseline database not found"),
        "{}",
        r.stderr
    );

    let good = std::fs::read(env.db()).unwrap();
    let trunc = env.path("trunc.db");
    std::fs::write(&trunc, &good[..good.len() / 2]).unwrap();
    let r = verify_db(&trunc);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("trunc.db"), "{}", r.stderr);

    let random = env.path("random.db");
    let noise: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&random, noise).unwrap();
    let r = verify_db(&random);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("random.db: baseline database"),
        "{}",
        r.stderr
    );

    let foreign = env.path("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE entries (x); PRAGMA user_version = 1;")
        .unwrap();
    let r = verify_db(&foreign);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("not a kmsentry baseline"), "{}", r.stderr);

    let newer = env.path("newer.db");
    std::fs::copy(env.db(), &newer).unwrap();
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version = 42;")
        .unwrap();
    let r = verify_db(&newer);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("newer than this kmsentry"),
        "{}",
        r.stderr
    );

    let dir = env.path("a-directory.db");
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(verify_db(&dir).code, 3);
}

#[test]
fn init_refuses_to_overwrite_without_force_and_force_replaces() {
    let env = env_with_baseline();
    let before = std::fs::read(env.db()).unwrap();
    let (policy, db, root) = (env.path("policy.yaml"), env.db(), env.root());
    let args = |force: bool| {
        let mut a = vec![
            OsStr::new("baseline"),
            OsStr::new("init"),
            OsStr::new("--policy"),
            p(&policy),
            OsStr::new("--db"),
            p(&db),
        ];
        a.extend([OsStr::new("--root"), p(&root)]);
        if force {
            a.push(OsStr::new("--force"));
        }
        env.run(&a)
    };
    let r = args(false);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("a baseline already exists; pass --force"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read(env.db()).unwrap(),
        before,
        "the old baseline was touched"
    );
    env.write("/etc/kms/new.yaml", b"n");
    assert_eq!(args(true).code, 0);
    assert_eq!(env.verify("json").code, 0);
}

#[test]
fn a_broken_policy_during_init_leaves_the_old_baseline_alone() {
    let env = env_with_baseline();
    let before = std::fs::read(env.db()).unwrap();
    env.policy("version: 1\ngroups:\n  - name: a\n    paths: [relative]\n");
    let r = env.run(&[
        OsStr::new("baseline"),
        OsStr::new("init"),
        OsStr::new("--force"),
        OsStr::new("--policy"),
        p(&env.path("policy.yaml")),
        OsStr::new("--db"),
        p(&env.db()),
    ]);
    assert_eq!(r.code, 2);
    assert_eq!(std::fs::read(env.db()).unwrap(), before);
}

#[test]
fn update_accepts_named_paths_only_and_records_the_reason() {
    let env = env_with_baseline();
    env.write("/etc/kms/f1.yaml", b"changed one\n");
    env.write("/etc/kms/f2.yaml", b"changed two\n");
    let r = env.cmd(
        &["baseline", "update"],
        &[
            OsStr::new("--reason"),
            OsStr::new("CHG-42 rotate"),
            OsStr::new("/etc/kms/f1.yaml"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("accepted changed /etc/kms/f1.yaml [content, size]")
            || r.stderr
                .contains("accepted changed /etc/kms/f1.yaml [content,size]"),
        "{}",
        r.stderr
    );
    let got = findings(&env.verify("json").json());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "/etc/kms/f2.yaml");
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let (reason, n): (String, i64) = conn
        .query_row("SELECT r.reason, count(a.path) FROM runs r JOIN accepted a ON a.run_id = r.id WHERE r.kind = 'update'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((reason.as_str(), n), ("CHG-42 rotate", 1));
    // Accept everything.
    let r = env.cmd(&["baseline", "update"], &[]);
    assert_eq!(r.code, 0);
    assert_eq!(env.verify("json").code, 0);
    // A path outside the policy is a usage error.
    let r = env.cmd(&["baseline", "update"], &[OsStr::new("/var/log")]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn export_is_sorted_by_raw_bytes_and_free_of_volatile_fields() {
    let env = env_with_baseline();
    let ex = env.export().stdout;
    let lines: Vec<&str> = ex.lines().skip(1).collect();
    assert_eq!(lines.len(), 51);
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
    assert!(!ex.contains("mtime") && !ex.contains("ino") && !ex.contains("ctime"));
    assert!(
        ex.starts_with("# kmsentry baseline export, format 1\n/etc/kms type=dir mode=0755 uid=")
    );
}

#[test]
fn a_closed_stdout_ends_output_quietly() {
    let env = env_with_baseline();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kmsentry"))
        .args([
            OsStr::new("baseline"),
            OsStr::new("export"),
            OsStr::new("--db"),
            p(&env.db()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.code().is_some(), "killed by a signal");
    assert!(!String::from_utf8(out.stderr)
        .unwrap_or_default()
        .contains("panicked"));
}

#[test]
fn policy_check_resolves_and_warns() {
    let env = TestEnv::new();
    env.write("/etc/ssl/private/host.key", b"k");
    env.write("/etc/ssl/certs/ca.pem", b"c");
    let p = env.policy(
        "version: 1\ngroups:\n  - name: keys\n    class: private-key\n    paths: [/etc/ssl/private]\n    access:\n      mode: enforce\n      allow:\n        - exe: /usr/sbin/kms-agent\n          users: [kms]\n  - name: ssl\n    class: ca-cert\n    paths: [/etc/ssl, /etc/nothing-here]\n",
    );
    let r = env.run(&[
        OsStr::new("policy"),
        OsStr::new("check"),
        p.as_os_str(),
        OsStr::new("--root"),
        env.root().as_os_str(),
        OsStr::new("--list"),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("path    /etc/ssl/private  (2 entries)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("    /etc/ssl/private/host.key"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("1 of the policy's paths match nothing on ")
            && r.stderr.contains("`/etc/nothing-here` (ssl)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("allow-list user `kms` does not exist"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("allow-list exe /usr/sbin/kms-agent does not exist"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("entries are covered by both `keys` and `ssl`"),
        "{}",
        r.stderr
    );
    // Warnings are diagnostics: on stderr, never mixed into what the policy resolves to.
    assert!(!r.stdout.contains("warning:"), "{}", r.stdout);
}
