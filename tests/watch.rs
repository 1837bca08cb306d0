//! The daemon on a real kernel: fanotify permission and notification groups on test
//! directories only, every daemon under a deadline (`--run-for`) and killed on drop.

mod daemon;
mod util;
use daemon::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use util::*;

fn keys_policy(w: &Watch, mode: &str, reader: &Path) -> String {
    format!(
        "version: 1\ngroups:\n  - name: keys\n    class: private-key\n    paths: [{}]\n    access:\n      mode: {mode}\n      allow:\n        - exe: {}\n  - name: conf\n    class: kms-config\n    paths: [{}]\n",
        w.s("keys"),
        reader.to_str().unwrap(),
        w.s("conf")
    )
}

#[test]
fn enforce_denies_others_and_allows_the_allowed_exe() {
    require_root!();
    let mut w = Watch::new();
    let key = w.write("keys/client.key", b"-----BEGIN PRIVATE KEY-----\n", 0o600);
    w.write("conf/kms.yaml", b"endpoint: x\n", 0o644);
    let reader = allowed_reader(&w);
    w.policy(&keys_policy(&w, "enforce", &reader));
    w.init();
    w.start(&[]);

    let out = cat(&key);
    assert!(!out.status.success(), "cat must be denied");
    assert!(
        std::str::from_utf8(&out.stderr)
            .unwrap()
            .contains("Operation not permitted"),
        "{}",
        std::str::from_utf8(&out.stderr).unwrap()
    );
    let a = w
        .wait_for(Duration::from_secs(2), |a| {
            a["kind"] == "access" && a["outcome"] == "denied"
        })
        .expect("an access/denied alert");
    assert_eq!(a["path"], key.to_str().unwrap());
    assert_eq!(a["group"], "keys");
    assert_eq!(a["process"]["exe"], "/usr/bin/cat");
    assert!(a["process"]["pid"].as_u64().unwrap() > 0);
    assert!(a["process"]["cmdline"]
        .as_str()
        .unwrap()
        .contains("client.key"));
    assert_eq!(a["process"]["user"], "root");
    assert!(a["prev"].is_string() || a["seq"].is_u64());

    let ok = Command::new(&reader).arg(&key).output().unwrap();
    assert!(ok.status.success(), "the allowed exe reads the key");
    assert_eq!(ok.stdout, b"-----BEGIN PRIVATE KEY-----\n");

    // A hard link from outside the policy is the same inode: still guarded.
    let link = w.env.path("outside-link");
    std::fs::hard_link(&key, &link).unwrap();
    assert!(
        !cat(&link).status.success(),
        "a hard link must not bypass enforce"
    );

    // Files outside enforce groups are untouched.
    assert!(cat(&w.p("conf/kms.yaml")).status.success());

    let st = w.status();
    assert_eq!(st["marks"]["perm"], 1);
    assert!(st["decisions"]["denied"].as_u64().unwrap() >= 1);
    assert!(st["decisions"]["allowed"].as_u64().unwrap() >= 1);
    let err = w.stop();
    assert!(
        w.wait_for(Duration::from_secs(2), |a| a["kind"] == "stopped")
            .is_some(),
        "{err}"
    );
    // After the daemon is gone, nothing is denied any more.
    assert!(cat(&key).status.success());
    // The daemon's log is an intact hash chain.
    let r = w.env.run(&[
        "log".as_ref(),
        "verify".as_ref(),
        w.alerts_path().as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

#[test]
fn signed_checkpoints_cover_a_stopped_daemons_log() {
    require_root!();
    let mut w = Watch::new();
    w.write("keys/client.key", b"k\n", 0o600);
    w.write("conf/kms.yaml", b"x\n", 0o644);
    let reader = allowed_reader(&w);
    w.policy(&keys_policy(&w, "enforce", &reader));
    w.init();
    let key = w.env.path("log.key");
    let r = w.env.run(&[
        "key".as_ref(),
        "gen".as_ref(),
        "--out".as_ref(),
        key.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    w.start(&[
        "--sign-key",
        key.to_str().unwrap(),
        "--checkpoint-every",
        "2",
    ]);
    assert!(!cat(&w.p("keys/client.key")).status.success());
    w.stop();
    let pubkey = w.env.path("log.key.pub");
    let log = w.alerts_path();
    let verify = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["log".as_ref(), "verify".as_ref()];
        args.push(log.as_os_str());
        args.extend(["--key".as_ref(), pubkey.as_os_str()]);
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        w.env.run(&args)
    };
    let r = verify(&["--stopped"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // Cut the tail (the stopped record and its checkpoint): detected.
    let text = std::fs::read_to_string(w.alerts_path()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines[..lines.len() - 2].join("\n") + "\n";
    std::fs::write(w.alerts_path(), cut).unwrap();
    assert_eq!(verify(&["--stopped"]).code, 3);
}

#[test]
fn a_replaced_allowed_binary_is_no_longer_allowed() {
    require_root!();
    let mut w = Watch::new();
    let key = w.write("keys/client.key", b"k\n", 0o600);
    w.write("conf/kms.yaml", b"x\n", 0o644);
    let reader = allowed_reader(&w);
    w.policy(&keys_policy(&w, "enforce", &reader));
    w.init();
    w.start(&[]);
    assert!(Command::new(&reader).arg(&key).status().unwrap().success());
    // Same path, other binary (head instead of cat): new inode, new content.
    std::fs::remove_file(&reader).unwrap();
    std::fs::copy("/usr/bin/head", &reader).unwrap();
    std::fs::set_permissions(&reader, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(&reader).arg(&key).output().unwrap();
    assert!(!out.status.success(), "a swapped binary must be denied");
    let a = w
        .wait_for(Duration::from_secs(2), |a| a["rule"] == "exe-replaced")
        .expect("exe-replaced alert");
    assert_eq!(a["outcome"], "denied");
    // Put the same content back under a new inode: allowed again (judged by hash).
    std::fs::remove_file(&reader).unwrap();
    std::fs::copy("/usr/bin/cat", &reader).unwrap();
    std::fs::set_permissions(&reader, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(Command::new(&reader).arg(&key).status().unwrap().success());
    w.stop();
}

#[test]
fn audit_mode_allows_and_alerts() {
    require_root!();
    let mut w = Watch::new();
    let key = w.write("keys/client.key", b"k\n", 0o600);
    w.write("conf/kms.yaml", b"x\n", 0o644);
    let reader = allowed_reader(&w);
    w.policy(&keys_policy(&w, "audit", &reader));
    w.init();
    w.start(&[]);
    // A long-lived opener, so its identity is still readable when the alert is built.
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "exec 3<'{}'; sleep 0.3; cat <&3",
            key.to_str().unwrap()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"k\n");
    let a = w
        .wait_for(Duration::from_secs(2), |a| {
            a["kind"] == "access" && a["outcome"] == "success"
        })
        .expect("access/success alert");
    assert_eq!(a["path"], key.to_str().unwrap());
    assert!(a["process"]["pid"].as_u64().unwrap() > 0);
    // The allowed reader raises nothing.
    let before = w.alerts().len();
    // Kept alive a moment (reading stdin after the key) so it can be identified: audit-mode
    // alerts are built after the open, from /proc.
    let ok = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "sleep 0.3 | '{}' '{}' -",
            reader.to_str().unwrap(),
            key.to_str().unwrap()
        ))
        .output()
        .unwrap();
    assert!(ok.status.success());
    std::thread::sleep(Duration::from_millis(300));
    let new: Vec<_> = w.alerts().into_iter().skip(before).collect();
    assert!(
        new.iter().all(|a| a["kind"] != "access"),
        "allowed reader raised {new:?}"
    );
    w.stop();
}

#[test]
fn modification_is_reported_within_two_seconds_with_who() {
    require_root!();
    let mut w = Watch::new();
    let conf = w.write("conf/kms.yaml", b"endpoint: a\n", 0o644);
    w.write("keys/k.key", b"k\n", 0o600);
    let reader = allowed_reader(&w);
    w.policy(&keys_policy(&w, "off", &reader).replace("      allow:\n        - exe: ", "      # "));
    w.init();
    w.start(&[]);
    let t = Instant::now();
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo 'endpoint: evil' >> '{}'; sleep 0.5",
            conf.to_str().unwrap()
        ))
        .spawn()
        .unwrap();
    let a = w
        .wait_for(Duration::from_secs(2), |a| a["kind"] == "modified")
        .expect("modified alert within 2 s");
    assert!(t.elapsed() < Duration::from_secs(2));
    let _ = child.wait();
    assert_eq!(a["path"], conf.to_str().unwrap());
    assert_eq!(a["changes"], serde_json::json!(["content", "size"]));
    assert_eq!(a["process"]["exe"], "/usr/bin/dash");
    assert!(a["detail"]["blake3_before"].is_string());
    assert_ne!(a["detail"]["blake3_before"], a["detail"]["blake3_after"]);

    // chmod: attrib; a new file in the watched directory: created; rm: deleted.
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o666)).unwrap();
    let a = w
        .wait_for(Duration::from_secs(2), |a| a["kind"] == "attrib")
        .expect("attrib");
    assert_eq!(a["changes"], serde_json::json!(["mode"]));
    assert_eq!(a["severity"], "high", "world-writable is at least high");
    let new = w.write("conf/extra.yaml", b"y\n", 0o644);
    w.wait_for(Duration::from_secs(2), |a| {
        a["kind"] == "created" && a["path"] == new.to_str().unwrap()
    })
    .expect("created");
    std::fs::remove_file(&conf).unwrap();
    w.wait_for(Duration::from_secs(2), |a| {
        a["kind"] == "deleted" && a["path"] == conf.to_str().unwrap()
    })
    .expect("deleted");
    // An atomic replace (write temp + rename over) is seen, and the new inode is watched.
    let k = w.p("keys/k.key");
    std::fs::write(w.p("keys/.tmp"), b"new key\n").unwrap();
    std::fs::rename(w.p("keys/.tmp"), &k).unwrap();
    w.wait_for(Duration::from_secs(2), |a| {
        a["path"] == k.to_str().unwrap() && a["kind"] == "renamed"
    })
    .expect("renamed over");
    std::fs::write(&k, b"NEW KEY\n").unwrap();
    w.wait_for(Duration::from_secs(2), |a| {
        // (Under load the truncate and the write may be seen apart: two alerts.)
        a["path"] == k.to_str().unwrap()
            && a["kind"] == "modified"
            && a["detail"]["blake3_after"] == blake3::hash(b"NEW KEY\n").to_hex().as_str()
    })
    .expect("the replacement inode is watched too");
    w.stop();
}

#[test]
fn changes_while_down_are_reconciled_after_kill_9() {
    require_root!();
    let mut w = Watch::new();
    let conf = w.write("conf/kms.yaml", b"a\n", 0o644);
    w.write("keys/k.key", b"k\n", 0o600);
    let reader = allowed_reader(&w);
    w.policy(&keys_policy(&w, "audit", &reader));
    w.init();
    w.start(&[]);
    w.kill9();
    std::fs::write(&conf, b"changed while nobody watched\n").unwrap();
    std::fs::remove_file(w.p("keys/k.key")).unwrap();
    let before = w.alerts().len();
    w.start(&[]);
    let after: Vec<_> = w.alerts().into_iter().skip(before).collect();
    let started = after.iter().position(|a| a["kind"] == "started").unwrap();
    let rec: Vec<_> = after[..started]
        .iter()
        .filter(|a| a["kind"] == "reconciled")
        .collect();
    assert_eq!(rec.len(), 2, "{after:?}");
    assert!(rec
        .iter()
        .any(|a| a["path"] == conf.to_str().unwrap() && a["changes"][0] == "content"));
    assert!(rec.iter().any(|a| a["detail"]["status"] == "removed"));
    w.stop();
}

#[test]
fn a_burst_of_200k_events_loses_no_change() {
    require_root!();
    let mut w = Watch::new();
    let conf = w.write("conf/kms.yaml", b"a\n", 0o644);
    w.write("keys/k.key", b"k\n", 0o600);
    let reader = allowed_reader(&w);
    // The noise names are excluded: the kernel still reports every event on them (the
    // directory is marked), the daemon maps and drops them.
    w.policy(&format!(
        "{}    exclude: [\"*.tmp\"]\n",
        keys_policy(&w, "audit", &reader)
    ));
    w.init();
    w.start(&[]);
    // 100k creates + 100k deletes of excluded names in the watched directory...
    let dir = w.p("conf");
    let burst = std::thread::spawn(move || {
        for i in 0..100_000u32 {
            let p = dir.join(format!("noise-{i}.tmp"));
            std::fs::write(&p, b"").unwrap();
            std::fs::remove_file(&p).unwrap();
        }
    });
    // ... while the watched file changes in the middle of it.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&conf, b"tampered during the storm\n").unwrap();
    burst.join().unwrap();
    let a = w
        .wait_for(Duration::from_secs(30), |a| {
            a["path"] == conf.to_str().unwrap() && a["kind"] == "modified"
        })
        .unwrap_or_else(|| {
            panic!(
                "change lost; alerts: {:?}",
                w.alerts()
                    .iter()
                    .map(|a| a["kind"].clone())
                    .collect::<Vec<_>>()
            )
        });
    assert_eq!(a["changes"][0], "content");
    w.stop();
}

#[test]
fn sighup_reloads_the_policy() {
    require_root!();
    let mut w = Watch::new();
    let key = w.write("keys/client.key", b"k\n", 0o600);
    w.write("conf/kms.yaml", b"x\n", 0o644);
    let reader = allowed_reader(&w);
    w.policy(&keys_policy(&w, "audit", &reader));
    w.init();
    w.start(&[]);
    assert!(cat(&key).status.success(), "audit mode allows");
    w.policy(&keys_policy(&w, "enforce", &reader));
    let pid = w.child.as_ref().unwrap().id() as i32;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    let a = w
        .wait_for(Duration::from_secs(10), |a| a["kind"] == "policy_reloaded")
        .expect("policy_reloaded");
    assert_eq!(a["outcome"], "success");
    assert!(!cat(&key).status.success(), "enforce after reload");
    // A broken policy is refused and the old one stays in force.
    w.policy("version: 1\ngroups: [\n");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    w.wait_for(Duration::from_secs(10), |a| {
        a["kind"] == "policy_reloaded" && a["outcome"] == "failure"
    })
    .expect("failed reload reported");
    assert!(!cat(&key).status.success(), "old policy still enforced");
    w.stop();
}

#[test]
fn only_test_directories_are_marked() {
    require_root!();
    let mut w = Watch::new();
    w.write("keys/client.key", b"k\n", 0o600);
    w.write("conf/kms.yaml", b"x\n", 0o644);
    let reader = allowed_reader(&w);
    w.policy(&keys_policy(&w, "enforce", &reader));
    w.init();
    w.start(&[]);
    let pid = w.child.as_ref().unwrap().id();
    // fdinfo of the fanotify fds lists every mark: inode marks only, no mount/sb marks.
    let mut inode_marks = 0;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let text = std::fs::read_to_string(fd.unwrap().path()).unwrap_or_default();
        if !text.contains("fanotify flags") {
            continue;
        }
        for line in text.lines() {
            assert!(!line.starts_with("fanotify mnt_id"), "mount mark: {line}");
            assert!(
                !line.starts_with("fanotify sdev"),
                "filesystem mark: {line}"
            );
            if line.starts_with("fanotify ino") {
                inode_marks += 1;
            }
        }
    }
    // keys/, keys/client.key (both groups), conf/, conf/kms.yaml, and the test root's dirs.
    assert!((4..=10).contains(&inode_marks), "{inode_marks} inode marks");
    w.stop();
}

#[test]
fn a_kernel_denial_of_a_non_root_reader_is_reported() {
    require_root!();
    let mut w = Watch::new();
    let key = w.write("keys/client.key", b"k\n", 0o600);
    w.write("conf/kms.yaml", b"x\n", 0o644);
    for d in [w.env.dir.path().to_path_buf(), w.p(""), w.p("keys")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let reader = allowed_reader(&w);
    w.policy(&keys_policy(&w, "audit", &reader));
    w.init();
    w.start(&[]);
    let st = w
        .alerts()
        .into_iter()
        .find(|a| a["kind"] == "started")
        .unwrap();
    assert_eq!(
        st["detail"]["kernel_audit"], true,
        "kernel audit must work here"
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/cat",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody cannot read a 0600 root key");
    let a = w
        .wait_for(Duration::from_secs(3), |a| {
            a["kind"] == "access" && a["outcome"] == "failure"
        })
        .expect("access/failure alert from the kernel's denial");
    assert_eq!(a["path"], key.to_str().unwrap());
    assert_eq!(a["process"]["uid"], 65534);
    assert_eq!(a["process"]["exe"], "/usr/bin/cat");
    assert_eq!(a["detail"]["errno"], "EACCES");
    assert_eq!(a["rule"], "kernel-denied");
    let pid = w.child.as_ref().unwrap().id();
    let key_of_daemon = format!("kmsentry-{pid}-");
    let has_rules = || {
        kmsentry::watch::audit::installed_rules()
            .unwrap()
            .iter()
            .any(|r| {
                r.key
                    .as_deref()
                    .is_some_and(|k| k.starts_with(key_of_daemon.as_bytes()))
            })
    };
    assert!(has_rules(), "the daemon installed its audit rules");
    w.stop();
    assert!(!has_rules(), "the daemon removed its audit rules on exit");
}

fn restore_policy(w: &Watch) -> String {
    format!(
        "version: 1\ngroups:\n  - name: conf\n    class: kms-config\n    paths: [{}]\n    on_change: [alert, restore]\n",
        w.s("conf")
    )
}

fn init_with_store(w: &Watch) -> PathBuf {
    let store = w.env.path("store");
    let r = w.env.run(&[
        "baseline".as_ref(),
        "init".as_ref(),
        "--force".as_ref(),
        "--policy".as_ref(),
        w.env.path("policy.yaml").as_os_str(),
        "--db".as_ref(),
        w.env.db().as_os_str(),
        "--store".as_ref(),
        store.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "init --store: {}", r.stderr);
    store
}

#[test]
fn a_tampered_file_is_restored_automatically_within_two_seconds() {
    require_root!();
    let mut w = Watch::new();
    let conf = w.write("conf/kms.yaml", b"endpoint: https://kms.example\n", 0o640);
    w.policy(&restore_policy(&w));
    let store = init_with_store(&w);
    w.start(&["--store", store.to_str().unwrap()]);
    let t = Instant::now();
    std::fs::write(&conf, b"endpoint: https://evil.example\n").unwrap();
    let a = w
        .wait_for(Duration::from_secs(2), |a| {
            a["kind"] == "restored" && a["outcome"] == "success"
        })
        .expect("restored within 2 s");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(a["path"], conf.to_str().unwrap());
    assert_eq!(
        a["detail"]["blake3_after"],
        blake3::hash(b"endpoint: https://kms.example\n")
            .to_hex()
            .as_str()
    );
    assert_eq!(
        a["detail"]["blake3_before"],
        blake3::hash(b"endpoint: https://evil.example\n")
            .to_hex()
            .as_str()
    );
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        b"endpoint: https://kms.example\n"
    );
    // The restored file (a new inode) is watched again: a second change is restored too.
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o666)).unwrap();
    w.wait_for(Duration::from_secs(2), |a| {
        a["kind"] == "restored" && a["changes"] == serde_json::json!(["mode"])
    })
    .expect("mode restored");
    assert_eq!(
        std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // A deleted file comes back.
    std::fs::remove_file(&conf).unwrap();
    w.wait_for(Duration::from_secs(2), |a| {
        a["kind"] == "restored" && a["detail"]["method"] == "recreate"
    })
    .expect("recreated");
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        b"endpoint: https://kms.example\n"
    );
    w.stop();
}

#[test]
fn a_restore_loop_is_abandoned_at_a_bounded_rate() {
    require_root!();
    let mut w = Watch::new();
    let conf = w.write("conf/kms.yaml", b"good\n", 0o644);
    w.policy(&restore_policy(&w));
    let store = init_with_store(&w);
    w.start(&["--store", store.to_str().unwrap()]);
    // Something rewrites the file over and over (bounded: at most 200 writes over ~10 s).
    for i in 0..200 {
        std::fs::write(&conf, format!("bad {i}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        if w.alerts().iter().any(|a| a["kind"] == "restore_abandoned") {
            break;
        }
    }
    let a = w
        .wait_for(Duration::from_secs(3), |a| a["kind"] == "restore_abandoned")
        .unwrap_or_else(|| {
            let kinds: Vec<String> = w
                .alerts()
                .iter()
                .map(|a| format!("{} {}", a["kind"], a["detail"]["message"]))
                .collect();
            panic!("no restore_abandoned: {kinds:?}\n{}", w.stop())
        });
    assert_eq!(a["path"], conf.to_str().unwrap());
    let restored = w
        .alerts()
        .iter()
        .filter(|a| a["kind"] == "restored" && a["outcome"] == "success")
        .count();
    assert!(restored <= 5, "{restored} restores before giving up");
    w.stop();
}

#[test]
fn a_change_made_while_down_is_restored_at_start() {
    require_root!();
    let mut w = Watch::new();
    let conf = w.write("conf/kms.yaml", b"good\n", 0o644);
    w.policy(&restore_policy(&w));
    let store = init_with_store(&w);
    std::fs::write(&conf, b"changed offline\n").unwrap();
    w.start(&["--store", store.to_str().unwrap()]);
    let all = w.alerts();
    assert!(all.iter().any(|a| a["kind"] == "reconciled"));
    assert!(all
        .iter()
        .any(|a| a["kind"] == "restored" && a["outcome"] == "success"));
    assert_eq!(std::fs::read(&conf).unwrap(), b"good\n");
    w.stop();
}

/// Allow rules narrowed by parent, arguments and user, and an alert (not a denial) when an
/// allowed program runs under an unusual parent: what keeps an allowed general-purpose tool
/// from copying the key for anyone who can start it.
#[test]
fn allow_rules_constrain_parent_arguments_and_user() {
    require_root!();
    let mut w = Watch::new();
    for d in ["parent", "args", "user", "usual"] {
        w.write(&format!("{d}/k.key"), b"secret\n", 0o644);
    }
    let reader = allowed_reader(&w);
    let r = reader.to_str().unwrap();
    let group = |name: &str, rule: &str| {
        format!(
            "  - name: {name}\n    class: private-key\n    paths: [{}]\n    access:\n      mode: enforce\n      allow:\n        - exe: {r}\n{rule}",
            w.s(&format!("{name}/k.key"))
        )
    };
    w.policy(&format!(
        "version: 1\ngroups:\n{}{}{}{}",
        group("parent", "          parent_exe: /usr/bin/dash\n"),
        group(
            "args",
            &format!("          args: [\"{}\"]\n", w.s("args/k.key"))
        ),
        group("user", "          users: [nobody]\n"),
        group("usual", "          usual_parent_exe: [/usr/bin/dash]\n"),
    ));
    w.init();
    w.open_to_all();
    w.start(&["--no-audit"]);
    let read = |cmd: &mut Command| cmd.output().unwrap().stdout == b"secret\n";
    let direct = |rel: &str| read(Command::new(&reader).arg(w.p(rel)));
    let via_sh = |rel: &str| {
        read(
            Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("'{r}' '{}'; true", w.s(rel))),
        )
    };
    let denied = |rel: &str, rule: &str| {
        w.wait_for(Duration::from_secs(5), |a| {
            a["path"] == w.s(rel) && a["outcome"] == "denied" && a["rule"] == rule
        })
        .unwrap_or_else(|| panic!("no {rule} denial of {rel}: {:?}", w.alerts()))
    };

    // parent_exe: started by the test (not dash) is refused; from sh it reads.
    assert!(!direct("parent/k.key"));
    let a = denied("parent/k.key", "parent-not-allowed");
    assert!(a["detail"]["message"]
        .as_str()
        .unwrap()
        .contains("/usr/bin/dash"));
    assert!(via_sh("parent/k.key"));

    // args: exactly the key as its one argument; anything more (an output file, another
    // input) is refused.
    assert!(direct("args/k.key"));
    let out = Command::new(&reader)
        .arg(w.p("args/k.key"))
        .arg("/etc/hostname")
        .output()
        .unwrap();
    assert!(!String::from_utf8(out.stdout)
        .unwrap_or_default()
        .contains("secret"));
    denied("args/k.key", "args-not-allowed");

    // users: nobody may, root may not.
    assert!(read(as_nobody(&reader).arg(w.p("user/k.key"))));
    assert!(!direct("user/k.key"));
    let a = denied("user/k.key", "user-not-allowed");
    assert_eq!(a["process"]["euid"], 0);

    // usual_parent_exe: allowed either way, alerted only outside the usual parent.
    assert!(via_sh("usual/k.key"));
    assert!(direct("usual/k.key"));
    let a = w
        .wait_for(Duration::from_secs(5), |a| a["rule"] == "unusual-parent")
        .expect("unusual-parent alert");
    assert_eq!(a["outcome"], "success");
    assert_eq!(a["kind"], "access");
    assert_eq!(a["path"], w.s("usual/k.key"));
    assert!(a["detail"]["parent_exe"].is_string());
    std::thread::sleep(Duration::from_millis(300));
    let usual: Vec<_> = w
        .alerts()
        .into_iter()
        .filter(|a| a["path"] == w.s("usual/k.key") && a["kind"] == "access")
        .collect();
    assert_eq!(
        usual.len(),
        1,
        "only the unusual read is alerted: {usual:?}"
    );
    w.stop();
    w.assert_log_intact();
}
