//! `baseline init` + `verify` through the real binary: every change kind, every exit code,
//! odd file types and names, golden images.

mod util;
use std::ffi::OsStr;
use util::*;

const POLICY: &str = "\
version: 1
groups:
  - name: client-keys
    class: private-key
    paths: [/etc/kms/keys]
  - name: kms-config
    class: kms-config
    paths: [/etc/kms]
    exclude: [\"*.swp\"]
";

fn env_with_files() -> TestEnv {
    let env = TestEnv::new();
    env.policy(POLICY);
    env.write(
        "/etc/kms/keys/client.key",
        // Not PEM: a damaged PEM key would also be a KMS-CRED-UNPARSEABLE posture finding
        // (tests/credentials.rs covers those); these tests are about drift.
        b"placeholder bytes standing in for a private key\n",
    );
    env.chmod("/etc/kms/keys/client.key", 0o600);
    env.write(
        "/etc/kms/client.yaml",
        b"endpoint: https://kms.example:5696\n",
    );
    env.write("/etc/kms/ca.pem", b"-----BEGIN CERTIFICATE-----\n");
    std::os::unix::fs::symlink("ca.pem", env.at("/etc/kms/ca-link.pem")).unwrap();
    env
}

#[test]
fn a_fresh_baseline_verifies_clean_with_exit_0() {
    let env = env_with_files();
    env.init();
    let r = env.verify("json");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v = r.json();
    assert_eq!(v["findings"], serde_json::json!([]));
    assert_eq!(v["summary"]["checked"], 6);
    let h = env.verify("human");
    assert_eq!(h.code, 0);
    assert!(
        h.stdout
            .contains("6 checked: 0 added, 0 removed, 0 changed, 0 errors"),
        "{}",
        h.stdout
    );
}

#[test]
fn content_mode_owner_group_link_type_added_and_removed_are_reported_with_exit_1() {
    let env = env_with_files();
    env.write("/etc/kms/gone.yaml", b"x");
    env.init();
    env.write(
        "/etc/kms/client.yaml",
        b"endpoint: https://evil.example:5696\n",
    );
    env.chmod("/etc/kms/keys/client.key", 0o644);
    std::fs::remove_file(env.at("/etc/kms/ca-link.pem")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", env.at("/etc/kms/ca-link.pem")).unwrap();
    std::fs::remove_file(env.at("/etc/kms/gone.yaml")).unwrap();
    env.write("/etc/kms/keys/new.key", b"k");
    std::fs::remove_file(env.at("/etc/kms/ca.pem")).unwrap();
    std::fs::create_dir(env.at("/etc/kms/ca.pem")).unwrap();
    let r = env.verify("json");
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    let s = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        findings(&v),
        vec![
            (
                "/etc/kms/ca-link.pem".into(),
                "changed".into(),
                s(&["link_target"])
            ),
            (
                "/etc/kms/ca.pem".into(),
                "changed".into(),
                s(&["type", "mode"])
            ),
            (
                "/etc/kms/client.yaml".into(),
                "changed".into(),
                s(&["content", "size"])
            ),
            ("/etc/kms/gone.yaml".into(), "removed".into(), s(&[])),
            (
                "/etc/kms/keys/client.key".into(),
                "changed".into(),
                s(&["mode"])
            ),
            ("/etc/kms/keys/new.key".into(), "added".into(), s(&[])),
        ]
    );
    let key = &v["findings"][4];
    assert_eq!(key["severity"], "critical");
    assert_eq!(key["group"], "client-keys");
    assert_eq!(key["class"], "private-key");
    assert_eq!(
        v["summary"],
        serde_json::json!({"checked": 8, "added": 1, "removed": 1, "changed": 4, "rotated": 0, "errors": 0})
    );
}

#[test]
fn same_size_content_change_is_caught_by_hash() {
    let env = env_with_files();
    env.init();
    let p = env.at("/etc/kms/client.yaml");
    let mut data = std::fs::read(&p).unwrap();
    data[0] ^= 1;
    std::fs::write(&p, data).unwrap();
    let v = env.verify("json").json();
    assert_eq!(findings(&v)[0].2, vec!["content".to_string()]);
}

#[test]
fn owner_group_acl_and_xattr_changes_are_reported() {
    require_root!();
    let env = env_with_files();
    env.init();
    let key = env.at("/etc/kms/keys/client.key");
    std::os::unix::fs::chown(&key, Some(1000), Some(1000)).unwrap();
    let cfg = env.at("/etc/kms/client.yaml");
    sh(
        "setfacl",
        &[OsStr::new("-m"), OsStr::new("u:1000:r"), p(&cfg)],
    );
    let ca = env.at("/etc/kms/ca.pem");
    sh(
        "setfattr",
        &[
            OsStr::new("-n"),
            OsStr::new("user.origin"),
            OsStr::new("-v"),
            OsStr::new("tampered"),
            p(&ca),
        ],
    );
    let r = env.verify("json");
    assert_eq!(r.code, 1);
    let v = r.json();
    let got = findings(&v);
    let s = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(
        got.contains(&(
            "/etc/kms/keys/client.key".into(),
            "changed".into(),
            s(&["owner", "group"])
        )),
        "{got:?}"
    );
    // setfacl also rewrites the group bits into the mask.
    let cfg_f = got.iter().find(|f| f.0 == "/etc/kms/client.yaml").unwrap();
    assert!(cfg_f.2.contains(&"acl".to_string()), "{got:?}");
    assert!(
        got.contains(&("/etc/kms/ca.pem".into(), "changed".into(), s(&["xattr"]))),
        "{got:?}"
    );
    let details = &v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/kms/client.yaml")
        .unwrap()["details"]["acl"];
    assert!(
        details["live"].as_str().unwrap().contains("user:1000:r--"),
        "{details}"
    );
}

#[test]
fn file_capabilities_are_recorded_and_their_change_is_critical_for_providers() {
    require_root!();
    let env = TestEnv::new();
    env.policy("version: 1\ngroups:\n  - name: p11\n    class: provider-binary\n    paths: ['/usr/lib/*/pkcs11/*.so']\n");
    let so = env.write(
        "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
        b"\x7fELF",
    );
    env.init();
    // security.capability v2: cap_net_raw (13) permitted + effective.
    let mut v = Vec::new();
    for w in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    let f = std::fs::File::open(&so).unwrap();
    rustix::fs::fsetxattr(
        &f,
        "security.capability",
        &v,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let r = env.verify("json");
    assert_eq!(r.code, 1);
    let j = r.json();
    assert_eq!(j["findings"][0]["changes"], serde_json::json!(["xattr"]));
    assert_eq!(j["findings"][0]["severity"], "critical");
    assert!(
        j["findings"][0]["details"]["xattr"]["live"]
            .as_str()
            .unwrap()
            .contains("cap_net_raw=ep"),
        "{j}"
    );
}

#[test]
fn timestamps_and_inode_are_compared_only_when_the_policy_asks() {
    let env = env_with_files();
    env.init();
    // An atomic rewrite with identical content: new inode and times, nothing else.
    let p = env.at("/etc/kms/client.yaml");
    let data = std::fs::read(&p).unwrap();
    let tmp = env.at("/etc/kms/.client.yaml.new");
    std::fs::write(&tmp, &data).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    assert_eq!(env.verify("json").code, 0);
    env.policy(&POLICY.replace(
        "    exclude:",
        "    compare: [content, mode, inode, mtime]\n    exclude:",
    ));
    let v = env.verify("json");
    assert_eq!(v.code, 1);
    let got = findings(&v.json());
    // The rename also moved the directory's mtime: both are reported, nothing else.
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0],
        (
            "/etc/kms".to_string(),
            "changed".to_string(),
            vec!["mtime".to_string()]
        )
    );
    assert_eq!(got[1].0, "/etc/kms/client.yaml");
    assert!(got[1].2.contains(&"inode".to_string()));
}

#[test]
fn fifos_sockets_devices_and_symlink_oddities_are_recorded_never_opened() {
    let env = env_with_files();
    let dir = env.at("/etc/kms");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(dir.join("agent.sock")).unwrap();
    std::os::unix::fs::symlink("loop-b", dir.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", dir.join("loop-b")).unwrap();
    std::os::unix::fs::symlink("/does/not/exist", dir.join("dangling")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../etc/passwd", dir.join("escape")).unwrap();
    let dev = nix_is_root()
        && rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(1, 3),
        )
        .is_ok();
    // If a FIFO were opened for reading, init would block forever: the timeout proves it is not.
    let start = std::time::Instant::now();
    env.init();
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
    let export = env.export().stdout;
    assert!(
        export.contains("/etc/kms/fifo type=fifo mode=0600"),
        "{export}"
    );
    assert!(
        export.contains("/etc/kms/agent.sock type=socket"),
        "{export}"
    );
    assert!(
        export.contains("/etc/kms/loop-a type=symlink mode=0777 uid="),
        "{export}"
    );
    assert!(export.contains("target=loop-b"), "{export}");
    assert!(
        export.contains("/etc/kms/escape type=symlink")
            && export.contains("target=../../../../../../../../etc/passwd")
    );
    if dev {
        assert!(
            export.contains("/etc/kms/null type=char-device mode=0600 uid=0 gid=0 rdev=1:3"),
            "{export}"
        );
    }
    assert_eq!(env.verify("json").code, 0);
    // Replacing the FIFO with a regular file is a type change.
    std::fs::remove_file(dir.join("fifo")).unwrap();
    std::fs::write(dir.join("fifo"), b"now a file").unwrap();
    env.chmod("/etc/kms/fifo", 0o600);
    let got = findings(&env.verify("json").json());
    assert_eq!(
        got,
        vec![(
            "/etc/kms/fifo".to_string(),
            "changed".to_string(),
            vec!["type".to_string()]
        )]
    );
}

#[test]
fn names_with_invalid_utf8_newlines_and_escapes_are_escaped_everywhere() {
    let env = env_with_files();
    env.init();
    let dir = env.at("/etc/kms/keys");
    std::fs::write(dir.join(os(b"evil\xff\nCHANGED critical fake.key")), b"x").unwrap();
    std::fs::write(dir.join(os(b"term\x1b]52;c;ZXZpbA==\x07")), b"x").unwrap();
    let h = env.verify("human");
    assert_eq!(h.code, 1);
    assert!(
        h.stdout
            .contains("/etc/kms/keys/evil\\xff\\nCHANGED critical fake.key"),
        "{}",
        h.stdout
    );
    assert!(!h.stdout.contains('\x1b') && !h.stdout.contains('\x07'));
    assert_eq!(
        h.stdout.lines().filter(|l| l.starts_with("ADDED")).count(),
        2
    );
    let v = env.verify("json").json();
    let paths: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/etc/kms/keys/evil\\xff\nCHANGED critical fake.key"),
        "{paths:?}"
    );
    // Baseline them, then the export keeps one line per entry.
    let r = env.cmd(&["baseline", "update"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ex = env.export().stdout;
    assert!(
        ex.contains("/etc/kms/keys/evil\\xff\\nCHANGED\\x20critical\\x20fake.key type=file"),
        "{ex}"
    );
    assert!(ex.lines().all(|l| !l.contains('\x1b')));
}

#[test]
fn deep_paths_and_a_big_file_are_handled() {
    let env = TestEnv::new();
    env.policy("version: 1\ngroups:\n  - name: deep\n    paths: [/opt/kms]\n");
    let mut rel = String::from("/opt/kms");
    for i in 0..32 {
        rel.push_str(&format!("/level-{i:02}-{}", "x".repeat(100)));
    }
    rel.push_str("/leaf.pem");
    assert!(rel.len() > 3000);
    // Longer than PATH_MAX once the root is prefixed: create it relative, level by level.
    let mut dir = std::fs::File::open(env.root()).unwrap();
    for comp in rel.trim_start_matches('/').split('/') {
        if comp == "leaf.pem" {
            let fd = rustix::fs::openat(
                &dir,
                comp,
                rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY,
                rustix::fs::Mode::from_raw_mode(0o600),
            )
            .unwrap();
            rustix::io::write(&fd, b"leaf").unwrap();
        } else {
            let _ = rustix::fs::mkdirat(&dir, comp, rustix::fs::Mode::from_raw_mode(0o755));
            dir = std::fs::File::from(
                rustix::fs::openat(
                    &dir,
                    comp,
                    rustix::fs::OFlags::DIRECTORY,
                    rustix::fs::Mode::empty(),
                )
                .unwrap(),
            );
        }
    }
    // A 1 GiB file (sparse: the hasher still reads every byte).
    let big = std::fs::File::create(env.at("/opt/kms/big.bin")).unwrap();
    big.set_len(1 << 30).unwrap();
    env.init();
    let ex = env.export().stdout;
    assert!(
        ex.contains(&format!("{rel} type=file mode=0600")),
        "deep leaf missing"
    );
    let zeros = blake3::Hasher::new().update(&vec![0u8; 1 << 20]).finalize();
    let _ = zeros;
    assert!(
        ex.contains("/opt/kms/big.bin type=file mode=0644 uid=") && ex.contains("size=1073741824")
    );
    assert_eq!(env.verify("json").code, 0);
}

#[test]
fn an_unreadable_file_is_an_error_naming_it_with_exit_3() {
    require_root!();
    let env = env_with_files();
    env.write("/etc/kms/secret.yaml", b"s");
    env.chmod("/etc/kms/secret.yaml", 0o000);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        env!("CARGO_BIN_EXE_kmsentry"),
    ]);
    let r = env.run_cmd(
        cmd,
        &[
            OsStr::new("baseline"),
            OsStr::new("init"),
            OsStr::new("--policy"),
            p(&env.path("policy.yaml")),
            OsStr::new("--db"),
            p(&env.path("nobody.db")),
            OsStr::new("--root"),
            p(&env.root()),
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("/etc/kms/secret.yaml: open: Permission denied"),
        "{}",
        r.stderr
    );
    // The rest was still recorded.
    assert!(env.path("nobody.db").exists());
}

#[test]
fn a_golden_image_baseline_verifies_another_image_and_stays_inside_the_root() {
    let a = env_with_files();
    // An absolute symlink inside the image must be recorded, not followed to the host.
    std::os::unix::fs::symlink("/etc/passwd", a.at("/etc/kms/host-passwd")).unwrap();
    a.init();
    let ex = a.export().stdout;
    assert!(ex.contains("/etc/kms/host-passwd type=symlink") && ex.contains("target=/etc/passwd"));
    assert!(!ex.contains("root:x:0:0"));
    // Image B: same content built again (new inodes and times), plus one tampered file.
    let b = env_with_files();
    std::os::unix::fs::symlink("/etc/passwd", b.at("/etc/kms/host-passwd")).unwrap();
    std::fs::copy(a.db(), b.db()).unwrap();
    assert_eq!(b.verify("json").code, 0, "{}", b.verify("human").stdout);
    b.write("/etc/kms/client.yaml", b"endpoint: https://attacker:5696\n");
    let r = b.verify("json");
    assert_eq!(r.code, 1);
    assert_eq!(findings(&r.json())[0].0, "/etc/kms/client.yaml");
    // Two builds of the same image export the same manifest.
    let b2 = env_with_files();
    std::os::unix::fs::symlink("/etc/passwd", b2.at("/etc/kms/host-passwd")).unwrap();
    b2.init();
    assert_eq!(a.export().stdout, b2.export().stdout);
}

#[test]
fn junit_and_sarif_outputs_are_written_atomically_to_output() {
    let env = env_with_files();
    env.init();
    env.chmod("/etc/kms/keys/client.key", 0o640);
    let out = env.path("report.sarif");
    let r = env.cmd(
        &["verify"],
        &[
            OsStr::new("--format"),
            OsStr::new("sarif"),
            OsStr::new("--output"),
            p(&out),
        ],
    );
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert_eq!(v["runs"][0]["results"][0]["ruleId"], "mode");
    assert_eq!(
        v["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "file:///etc/kms/keys/client.key"
    );
    let j = env.verify("junit");
    assert_eq!(j.code, 1);
    assert!(j.stdout.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"kmsentry verify\" tests=\"6\" failures=\"1\" errors=\"0\">"), "{}", j.stdout);
    assert!(j
        .stdout
        .contains("<failure type=\"changed\" message=\"critical: mode\">"));
    assert_eq!(j.stdout.matches("<testcase ").count(), 6);
}

#[test]
fn a_file_vanishing_after_baseline_is_removed_and_vanished_bases_are_not_errors() {
    let env = env_with_files();
    env.init();
    std::fs::remove_dir_all(env.at("/etc/kms/keys")).unwrap();
    let r = env.verify("json");
    assert_eq!(r.code, 1);
    let got = findings(&r.json());
    assert_eq!(
        got.iter().filter(|f| f.1 == "removed").count(),
        2,
        "{got:?}"
    );
    assert_eq!(r.json()["summary"]["errors"], 0);
}

#[test]
fn a_new_setuid_or_world_writable_bit_is_high_in_any_class() {
    let env = TestEnv::new();
    env.policy("version: 1\ngroups:\n  - name: misc\n    class: generic\n    paths: [/opt/tool]\n");
    env.write("/opt/tool/helper", b"#!/bin/sh\n");
    env.write("/opt/tool/notes", b"n");
    env.chmod("/opt/tool/helper", 0o755);
    env.chmod("/opt/tool/notes", 0o644);
    env.init();
    env.chmod("/opt/tool/helper", 0o4755);
    env.chmod("/opt/tool/notes", 0o646);
    let v = env.verify("json").json();
    let sev: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["severity"].as_str().unwrap())
        .collect();
    // Setuid on a root-owned executable is root for whoever runs it (docs/policy.md).
    let helper = if nix_is_root() { "critical" } else { "high" };
    assert_eq!(sev, vec![helper, "high"], "{v}");
}

#[test]
fn sha256_is_recorded_only_where_the_group_asks_and_verify_still_catches_changes() {
    let env = TestEnv::new();
    env.policy(
        "version: 1
groups:
  - name: modules
    class: provider-binary
    hash: [blake3, sha256]
    paths: [/usr/lib/pkcs11]
  - name: kms-config
    class: kms-config
    paths: [/etc/kms]
",
    );
    let module = b"\x7fELF stand-in for a PKCS#11 module\n";
    env.write("/usr/lib/pkcs11/libvendor.so", module);
    env.write("/etc/kms/client.yaml", b"endpoint: https://kms:5696\n");
    assert_eq!(env.init().code, 0);
    let ex = env.export();
    assert_eq!(ex.code, 0, "{}", ex.stderr);
    let line = |p: &str| {
        ex.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{p} ")))
            .unwrap_or_else(|| panic!("{p} not exported: {}", ex.stdout))
            .to_string()
    };
    use sha2::Digest;
    let want_sha = hex::encode(sha2::Sha256::digest(module));
    let want_b3 = blake3::hash(module).to_hex().to_string();
    let m = line("/usr/lib/pkcs11/libvendor.so");
    assert!(m.contains(&format!(" sha256={want_sha} ")), "{m}");
    assert!(m.contains(&format!(" blake3={want_b3} ")), "{m}");
    let c = line("/etc/kms/client.yaml");
    assert!(c.contains(" blake3="), "{c}");
    assert!(!c.contains("sha256="), "{c}");
    // The untouched tree verifies clean; a same-size change to either file is caught.
    assert_eq!(env.verify("json").code, 0);
    env.write("/etc/kms/client.yaml", b"endpoint: https://kmz:5696\n");
    env.write(
        "/usr/lib/pkcs11/libvendor.so",
        b"\x7fELF stand-in for a PKCS#11 modulf\n",
    );
    let r = env.verify("json");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let f = findings(&r.json());
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(
        f.iter()
            .all(|(_, s, c)| s == "changed" && c == &vec!["content".to_string()]),
        "{f:?}"
    );
}
