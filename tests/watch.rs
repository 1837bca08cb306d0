//! The daemon on a real kernel: fanotify permission and notification groups on test
//! directories only, every daemon under a deadline (`--run-for`) and killed on drop.

mod util;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::*;

/// A test tree under /tmp with a policy, a baseline, and a daemon.
struct Watch {
    env: TestEnv,
    child: Option<Child>,
}

const DEADLINE_S: &str = "60";

impl Watch {
    fn new() -> Watch {
        Watch {
            env: TestEnv::new(),
            child: None,
        }
    }

    /// Host-absolute path inside the test tree (the daemon watches the live host).
    fn p(&self, rel: &str) -> PathBuf {
        self.env.dir.path().join("t").join(rel)
    }

    fn s(&self, rel: &str) -> String {
        self.p(rel).to_str().unwrap().to_string()
    }

    fn write(&self, rel: &str, data: &[u8], mode: u32) -> PathBuf {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn policy(&self, yaml: &str) {
        std::fs::write(self.env.path("policy.yaml"), yaml).unwrap();
    }

    fn init(&self) {
        let r = self.env.run(&[
            "baseline".as_ref(),
            "init".as_ref(),
            "--force".as_ref(),
            "--policy".as_ref(),
            self.env.path("policy.yaml").as_os_str(),
            "--db".as_ref(),
            self.env.db().as_os_str(),
        ]);
        assert_eq!(r.code, 0, "init: {}", r.stderr);
    }

    fn alerts_path(&self) -> PathBuf {
        self.env.path("alerts.jsonl")
    }

    fn start(&mut self, extra: &[&str]) {
        let before = self.alerts().len();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmsentry"));
        cmd.arg("watch")
            .arg("--policy")
            .arg(self.env.path("policy.yaml"))
            .arg("--db")
            .arg(self.env.db())
            .arg("--alerts")
            .arg(self.alerts_path())
            .arg("--status-socket")
            .arg(self.env.path("status.sock"))
            .args(["--run-for", DEADLINE_S])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        self.child = Some(cmd.spawn().unwrap());
        let t = Instant::now();
        while self
            .alerts()
            .iter()
            .skip(before)
            .all(|a| a["kind"] != "started")
        {
            if t.elapsed() > Duration::from_secs(20) {
                panic!("no `started` alert; stderr: {}", self.stop());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, wait (bounded), return stderr.
    fn stop(&mut self) -> String {
        let Some(mut c) = self.child.take() else {
            return String::new();
        };
        let pid = rustix::process::Pid::from_raw(c.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let out = c.wait_with_output().unwrap();
        String::from_utf8(out.stderr).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn alerts(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.alerts_path()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn wait_for(
        &self,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let t = Instant::now();
        loop {
            if let Some(a) = self.alerts().into_iter().find(|a| pred(a)) {
                return Some(a);
            }
            if t.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn status(&self) -> serde_json::Value {
        let r = self.env.run(&[
            "status".as_ref(),
            "--format".as_ref(),
            "json".as_ref(),
            "--socket".as_ref(),
            self.env.path("status.sock").as_os_str(),
        ]);
        assert_eq!(r.code, 0, "status: {}", r.stderr);
        r.json()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A copy of /usr/bin/cat that the allow-list names (so the real cat is "someone else").
fn allowed_reader(w: &Watch) -> PathBuf {
    let p = w.env.path("allowed-cat");
    std::fs::copy("/usr/bin/cat", &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn keys_policy(w: &Watch, mode: &str, reader: &Path) -> String {
    format!(
        "version: 1\ngroups:\n  - name: keys\n    class: private-key\n    paths: [{}]\n    access:\n      mode: {mode}\n      allow:\n        - exe: {}\n  - name: conf\n    class: kms-config\n    paths: [{}]\n",
        w.s("keys"),
        reader.to_str().unwrap(),
        w.s("conf")
    )
}

fn cat(path: &Path) -> std::process::Output {
    Command::new("/usr/bin/cat").arg(path).output().unwrap()
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
    w.policy(&keys_policy(&w, "audit", &reader));
    w.init();
    w.start(&[]);
    // 100k creates + 100k deletes of unwatched names in the watched directory...
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
        .expect("restore_abandoned");
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
