//! Severity by what a change grants, whatever the group's class: file capabilities,
//! setuid/setgid, group/world write on binaries and credentials, `/etc/ld.so.preload`, a new
//! trusted CA, for `added` entries as much as for `changed` ones. `added` findings carry the
//! new entry's attributes; human output leads with the most severe finding.

mod util;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use util::*;

/// A generic group over /usr/bin and /etc (the class that ranks everything low by itself).
fn generic_env() -> TestEnv {
    let env = TestEnv::new();
    env.policy(
        "version: 1\ngroups:\n  - name: system\n    class: generic\n    paths: [/usr/bin, /etc]\n",
    );
    env.write("/usr/bin/openssl", b"\x7fELF fake openssl\n");
    env.chmod("/usr/bin/openssl", 0o755);
    env.write("/usr/bin/tool", b"\x7fELF fake tool\n");
    env.chmod("/usr/bin/tool", 0o755);
    env.write("/etc/hosts", b"127.0.0.1 localhost\n");
    env.init();
    env
}

/// A VFS caps v2 `security.capability` value granting `bits` as permitted + effective.
fn caps(bits: u64) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [0x0200_0001u32, bits as u32, 0, (bits >> 32) as u32, 0] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

fn set_caps(path: &std::path::Path, bits: u64) {
    rustix::fs::setxattr(
        path,
        "security.capability",
        &caps(bits),
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
}

fn finding<'a>(doc: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no finding for {path}: {doc}"))
}

fn sev_rank(s: &str) -> u8 {
    match s {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

#[test]
fn capabilities_and_setuid_on_changed_binaries_are_high_or_critical() {
    require_root!();
    let env = generic_env();
    // cap_dac_read_search (bit 2): any user of openssl can then read every key.
    set_caps(&env.at("/usr/bin/openssl"), 1 << 2);
    // cap_net_bind_service (bit 10): a grant, not root-equivalent.
    set_caps(&env.at("/usr/bin/tool"), 1 << 10);
    env.chmod("/etc/hosts", 0o4755);
    let r = env.verify("json");
    assert_eq!(r.code, 1, "{}", r.stderr);
    let doc = r.json();
    let f = finding(&doc, "/usr/bin/openssl");
    assert_eq!(f["status"], "changed");
    assert_eq!(f["severity"], "critical", "{f}");
    assert!(
        f["grants"][0]
            .as_str()
            .unwrap()
            .contains("cap_dac_read_search=ep"),
        "{f}"
    );
    assert!(
        f["details"]["xattr"]["live"]
            .as_str()
            .unwrap()
            .contains("cap_dac_read_search"),
        "{f}"
    );
    let t = finding(&doc, "/usr/bin/tool");
    assert_eq!(t["severity"], "high", "{t}");
    // A root-owned setuid file is root for whoever runs it.
    let h = finding(&doc, "/etc/hosts");
    assert_eq!(h["severity"], "critical", "{h}");
    assert!(
        h["grants"][0].as_str().unwrap().contains("setuid root"),
        "{h}"
    );
}

#[test]
fn group_and_world_write_on_a_binary_are_high() {
    let env = generic_env();
    env.chmod("/usr/bin/openssl", 0o775);
    env.chmod("/usr/bin/tool", 0o757);
    env.chmod("/etc/hosts", 0o664); // not a binary or credential: stays low
    let doc = env.verify("json").json();
    assert_eq!(finding(&doc, "/usr/bin/openssl")["severity"], "high");
    assert_eq!(finding(&doc, "/usr/bin/tool")["severity"], "high");
    let h = finding(&doc, "/etc/hosts");
    assert_ne!(h["severity"], "high");
    assert!(h.get("grants").is_none(), "{h}");
}

#[test]
fn added_entries_are_ranked_by_what_they_grant_and_carry_their_attributes() {
    require_root!();
    let env = generic_env();
    // A new setuid-root shell.
    let sh = env.write("/usr/bin/rootsh", &std::fs::read("/bin/sh").unwrap());
    std::os::unix::fs::lchown(&sh, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o4755)).unwrap();
    // A new binary with file capabilities (cap_sys_admin, bit 21).
    let capped = env.write("/usr/bin/capped", b"\x7fELF capped\n");
    env.chmod("/usr/bin/capped", 0o755);
    set_caps(&capped, 1 << 21);
    // A preload entry: every process loads it.
    env.write("/etc/ld.so.preload", b"/usr/lib/libevil.so\n");
    // A harmless new file and a new symlink stay low.
    env.write("/etc/motd", b"hello\n");
    std::os::unix::fs::symlink("hosts", env.at("/etc/hosts.link")).unwrap();
    let r = env.verify("json");
    assert_eq!(r.code, 1, "{}", r.stderr);
    let doc = r.json();

    let s = finding(&doc, "/usr/bin/rootsh");
    assert_eq!(s["status"], "added");
    assert_eq!(s["severity"], "critical", "{s}");
    assert_eq!(s["details"]["type"]["live"], "file");
    assert_eq!(s["details"]["mode"]["live"], "4755");
    assert_eq!(s["details"]["owner"]["live"], "0");
    assert_eq!(s["details"]["group"]["live"], "0");
    assert!(s["details"]["content"]["live"]
        .as_str()
        .unwrap()
        .starts_with("blake3:"));
    assert!(s["details"].get("link_target").is_none(), "{s}");

    let c = finding(&doc, "/usr/bin/capped");
    assert_eq!(c["severity"], "critical", "{c}");
    assert!(
        c["details"]["xattr"]["live"]
            .as_str()
            .unwrap()
            .contains("security.capability=cap_sys_admin=ep"),
        "{c}"
    );

    let p = finding(&doc, "/etc/ld.so.preload");
    assert_eq!(p["severity"], "critical", "{p}");

    let m = finding(&doc, "/etc/motd");
    assert_eq!(m["severity"], "low");
    assert!(m.get("grants").is_none(), "{m}");
    assert_eq!(m["details"]["mode"]["live"], "0644");
    let l = finding(&doc, "/etc/hosts.link");
    assert_eq!(l["severity"], "low");
    assert_eq!(l["details"]["type"]["live"], "symlink");
    assert_eq!(l["details"]["link_target"]["live"], "hosts");

    // Human output: most severe first, then by path; the summary counts by severity; added
    // entries show their attributes and what they grant.
    let h = env.verify("human");
    assert_eq!(h.code, 1);
    let ranks: Vec<(u8, String)> = h
        .stdout
        .lines()
        .filter(|l| l.starts_with("ADDED") || l.starts_with("CHANGED"))
        .map(|l| {
            let mut w = l.split_whitespace();
            w.next();
            (sev_rank(w.next().unwrap()), w.next().unwrap().to_string())
        })
        .collect();
    let mut sorted = ranks.clone();
    sorted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    assert_eq!(ranks, sorted, "{}", h.stdout);
    assert_eq!(ranks[0].0, 4, "{}", h.stdout);
    assert!(h.stdout.contains("by severity: 3 critical"), "{}", h.stdout);
    assert!(h.stdout.contains("        mode: 4755"), "{}", h.stdout);
    assert!(
        h.stdout.contains("        grants: setuid root"),
        "{}",
        h.stdout
    );
}

#[test]
fn a_new_trusted_ca_is_high_in_any_class_and_shows_its_subject() {
    let env = generic_env();
    let dir = tempfile::tempdir().unwrap();
    let (key, crt) = (dir.path().join("ca.key"), dir.path().join("ca.crt"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "3650", "-subj", "/CN=Evil Root CA"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but openssl cannot make a certificate"
        );
        eprintln!("skipped: no openssl");
        return;
    }
    env.write("/etc/ssl/certs/evil.pem", &std::fs::read(&crt).unwrap());
    let r = env.cmd(&["verify"], &[OsStr::new("--format"), OsStr::new("json")]);
    let doc = r.json();
    let f = finding(&doc, "/etc/ssl/certs/evil.pem");
    assert_eq!(f["status"], "added");
    assert_eq!(f["severity"], "high", "{f}");
    assert_eq!(f["details"]["subject"]["live"], "CN=Evil Root CA", "{f}");
    assert!(
        f["grants"][0]
            .as_str()
            .unwrap()
            .contains("a new trusted CA: CN=Evil Root CA"),
        "{f}"
    );
}
