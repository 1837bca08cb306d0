//! The daemon's records as evidence: who did it (never a made-up identity), one daemon per
//! state, how the daemon itself started and stopped, and what an earlier run already said.
//! Real daemon, real kernel, test directories only, every daemon under a deadline.

mod daemon;
mod util;
use daemon::*;
use std::process::Command;
use std::time::Duration;
use util::*;

/// A [`tree`] with its policy, and the allowed reader (the daemon is not started yet).
fn new_tree() -> (Watch, std::path::PathBuf) {
    let w = Watch::new();
    let reader = allowed_reader(&w);
    tree(&w, &reader);
    (w, reader)
}

/// An enforce group (its key readable by anyone, so only the daemon refuses), an audit group
/// and a config directory, reachable by `nobody`.
fn tree(w: &Watch, reader: &std::path::Path) {
    w.write("keys/client.key", b"secret\n", 0o644);
    w.write("audited/ca.pem", b"ca\n", 0o644);
    w.write("conf/kms.yaml", b"endpoint: a\n", 0o666);
    w.policy(&format!(
        "version: 1\ngroups:\n  - name: keys\n    class: private-key\n    paths: [{}]\n    access:\n      mode: enforce\n      allow:\n        - exe: {}\n  - name: audited\n    class: ca-cert\n    paths: [{}]\n    access:\n      mode: audit\n  - name: conf\n    class: kms-config\n    paths: [{}]\n",
        w.s("keys"),
        reader.to_str().unwrap(),
        w.s("audited"),
        w.s("conf")
    ));
}

#[test]
fn short_lived_processes_as_nobody_are_never_reported_as_root() {
    require_root!();
    let (mut w, _) = new_tree();
    // conf is world-writable so that nobody can create files in it.
    w.init();
    w.open_to_all();
    std::fs::set_permissions(
        w.p("conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    w.start(&[]);
    let rounds = 25;
    for i in 0..rounds {
        // Each exits within microseconds of its act.
        let ok = as_nobody("/usr/bin/touch")
            .arg(w.p(&format!("conf/n{i}.yaml")))
            .status()
            .unwrap();
        assert!(ok.success());
        assert!(as_nobody("/usr/bin/cat")
            .arg(w.p("audited/ca.pem"))
            .output()
            .unwrap()
            .status
            .success());
        assert!(!as_nobody("/usr/bin/cat")
            .arg(w.p("keys/client.key"))
            .output()
            .unwrap()
            .status
            .success());
    }
    for i in 0..rounds {
        assert!(as_nobody("/usr/bin/rm")
            .arg(w.p(&format!("conf/n{i}.yaml")))
            .status()
            .unwrap()
            .success());
    }
    let created = w.wait_for_n(Duration::from_secs(20), rounds, |a| a["kind"] == "created");
    let deleted = w.wait_for_n(Duration::from_secs(20), rounds, |a| a["kind"] == "deleted");
    // Once each: the file's own DELETE_SELF and the directory's DELETE are one deletion.
    std::thread::sleep(Duration::from_millis(500));
    let deleted_again: Vec<_> = w
        .alerts()
        .into_iter()
        .filter(|a| a["kind"] == "deleted")
        .collect();
    assert_eq!(deleted.len(), rounds);
    assert_eq!(deleted_again.len(), rounds, "{deleted_again:?}");
    let audited = w.wait_for_n(Duration::from_secs(20), rounds, |a| {
        a["kind"] == "access" && a["outcome"] == "success"
    });
    let denied = w.wait_for_n(Duration::from_secs(20), rounds, |a| {
        a["kind"] == "access" && a["outcome"] == "denied"
    });
    assert_eq!(created.len(), rounds, "{:?}", w.alerts());
    assert_eq!(audited.len(), rounds);
    assert_eq!(denied.len(), rounds);
    let all = w.alerts();
    for p in processes(&all) {
        assert_ne!(p["uid"], 0, "an alert claims root: {p}");
        assert_ne!(p["euid"], 0, "an alert claims root: {p}");
        assert_ne!(p["user"], "root", "an alert claims root: {p}");
        assert!(p["pid"].as_u64().unwrap() > 0);
        assert!(
            ["blocked", "procfs", "gone", "audit"].contains(&p["identity"].as_str().unwrap()),
            "{p}"
        );
        if p["identity"] == "gone" {
            // Only what the kernel gave: the pid.
            assert!(p.get("uid").is_none() && p.get("exe").is_none(), "{p}");
        } else {
            assert_eq!(p["uid"], 65534, "{p}");
        }
    }
    // Opens of enforce and audit files are identified while the opener waits: exactly.
    for a in audited.iter().chain(&denied) {
        assert_eq!(a["process"]["identity"], "blocked", "{a}");
        assert_eq!(a["process"]["uid"], 65534);
        assert_eq!(a["process"]["user"], "nobody");
        assert_eq!(a["process"]["exe"], "/usr/bin/cat");
    }
    // A group without an allow-list does not say "not allowed".
    assert!(
        audited.iter().all(|a| a["rule"] == "audit-all"),
        "{audited:?}"
    );
    w.stop();
    w.assert_log_intact();
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused_and_a_stale_socket_is_replaced() {
    require_root!();
    let (mut w, _) = new_tree();
    w.init();
    w.start(&[]);
    let first = w.pid();
    let lines_before = std::fs::read_to_string(w.alerts_path()).unwrap();

    // Same state: refused at once, with a message naming the holder; nothing written.
    let out = w.run_second(&[]);
    let err = String::from_utf8(out.stderr.clone()).unwrap_or_default();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("another kmsentry watch (pid {first}")),
        "{err}"
    );
    assert!(err.contains("baseline"), "{err}");
    // Its own alert log and socket, but the same baseline: still refused (it would deny
    // the first daemon's opens).
    let other_log = w.env.path("other.jsonl");
    let other_sock = w.env.path("other.sock");
    let mut c = Command::new("timeout");
    c.arg("30")
        .arg(env!("CARGO_BIN_EXE_kmsentry"))
        .arg("watch")
        .arg("--policy")
        .arg(w.env.path("policy.yaml"))
        .arg("--db")
        .arg(w.env.db())
        .arg("--alerts")
        .arg(&other_log)
        .arg("--status-socket")
        .arg(&other_sock)
        .args(["--run-for", "5"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!other_log.exists() || std::fs::read(&other_log).unwrap().is_empty());

    assert_eq!(
        std::fs::read_to_string(w.alerts_path()).unwrap(),
        lines_before,
        "the refused daemon wrote to the log"
    );
    assert_eq!(
        w.status()["pid"],
        first,
        "the socket still answers for the first"
    );
    // The first daemon still decides, and its reads were never denied by a second.
    assert!(!cat(&w.p("keys/client.key")).status.success());
    assert!(w
        .wait_for(Duration::from_secs(5), |a| a["outcome"] == "denied")
        .is_some());

    // Killed: the socket file stays behind, stale. The next daemon replaces it and says
    // that the previous run ended without `stopped`.
    w.kill9();
    assert!(std::fs::symlink_metadata(w.socket()).is_ok());
    w.start(&[]);
    let second = w.pid();
    assert_eq!(w.status()["pid"], second);
    let started = w
        .alerts()
        .into_iter()
        .rev()
        .find(|a| a["kind"] == "started")
        .unwrap();
    let prev = &started["detail"]["previous_run"];
    assert_eq!(prev["clean"], false, "{started}");
    assert_eq!(prev["pid"], first);
    assert!(prev["message"]
        .as_str()
        .unwrap()
        .contains("without `stopped`"));
    assert_eq!(started["severity"], "medium");

    // A clean stop removes the socket; the next start says the previous run was clean.
    w.stop();
    assert!(
        std::fs::symlink_metadata(w.socket()).is_err(),
        "the status socket outlived a clean stop"
    );
    w.start(&[]);
    let started = w
        .alerts()
        .into_iter()
        .rev()
        .find(|a| a["kind"] == "started")
        .unwrap();
    assert_eq!(started["detail"]["previous_run"]["clean"], true);
    assert_eq!(started["detail"]["previous_run"]["pid"], second);
    assert_eq!(started["severity"], "info");
    w.stop();
    // One chain, one writer at a time: intact across all three daemons.
    w.assert_log_intact();
}

#[test]
fn stopped_names_the_signal_and_who_sent_it() {
    require_root!();
    let (mut w, _) = new_tree();
    w.init();
    w.start(&[]);
    let daemon = w.pid();
    // A shell that sends SIGTERM and lingers a moment, so /proc still shows it.
    let mut sender = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("kill -TERM {daemon}; sleep 2"))
        .spawn()
        .unwrap();
    let sender_pid = sender.id();
    let child = w.child.take().unwrap();
    Watch::reap(child);
    let _ = sender.wait();
    let stopped = w
        .alerts()
        .into_iter()
        .find(|a| a["kind"] == "stopped")
        .expect("stopped");
    assert_eq!(stopped["detail"]["signal"], "SIGTERM", "{stopped}");
    assert_eq!(stopped["detail"]["signal_code"], "SI_USER");
    assert_eq!(stopped["process"]["pid"], sender_pid);
    assert_eq!(stopped["process"]["uid"], 0);
    assert_eq!(stopped["process"]["exe"], "/usr/bin/dash");
    assert!(stopped["process"]["cmdline"]
        .as_str()
        .unwrap()
        .contains("kill -TERM"));
    // --run-for says so instead.
    w.start(&["--run-for", "1"]);
    let child = w.child.take().unwrap();
    Watch::reap(child);
    let stopped = w
        .alerts()
        .into_iter()
        .rev()
        .find(|a| a["kind"] == "stopped")
        .unwrap();
    assert_eq!(stopped["detail"]["reason"], "run_for");
    assert!(stopped.get("process").is_none());
}

#[test]
fn a_setuid_helper_is_reported_with_its_effective_uid() {
    require_root!();
    let (mut w, _) = new_tree();
    w.write("keys/root-only.key", b"secret\n", 0o600);
    w.init();
    w.open_to_all();
    let suid = w.env.path("suid-cat");
    std::fs::copy("/usr/bin/cat", &suid).unwrap();
    std::fs::set_permissions(&suid, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    w.start(&[]);
    // nobody runs a setuid-root cat: the kernel lets it open the 0600 key (euid 0); the
    // daemon refuses it, and says both uids.
    let out = as_nobody(&suid)
        .arg(w.p("keys/root-only.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let a = w
        .wait_for(Duration::from_secs(5), |a| a["outcome"] == "denied")
        .expect("denied");
    assert_eq!(a["process"]["uid"], 65534, "{a}");
    assert_eq!(a["process"]["euid"], 0, "{a}");
    assert_eq!(a["process"]["user"], "nobody");
    assert_eq!(a["process"]["exe"], suid.to_str().unwrap());
    w.stop();
}

#[test]
fn command_lines_are_whole_or_marked_cut_and_of_one_program() {
    require_root!();
    let (mut w, _) = new_tree();
    w.write("private/k.key", b"k\n", 0o600);
    let yaml = std::fs::read_to_string(w.env.path("policy.yaml")).unwrap();
    w.policy(&format!(
        "{yaml}  - name: private\n    class: private-key\n    paths: [{}]\n",
        w.s("private")
    ));
    w.init();
    w.open_to_all();
    w.start(&[]);
    // A denied opener with a command line far over the daemon's 4096-byte bound.
    let long = "x".repeat(5000);
    let _ = Command::new("/usr/bin/cat")
        .arg(w.p("keys/client.key"))
        .arg(&long)
        .output()
        .unwrap();
    let a = w
        .wait_for(Duration::from_secs(5), |a| a["outcome"] == "denied")
        .expect("denied");
    let cmd = a["process"]["cmdline"].as_str().unwrap();
    assert_eq!(cmd.len(), 4096, "cut at the bound");
    assert_eq!(a["process"]["cmdline_truncated"], true);
    assert!(!cmd.contains('…'), "no marker inside the evidence itself");

    // Kernel denials: the audit record carries 128 bytes of the command line. A process
    // still alive is read whole from /proc; any title left at 128 bytes is marked cut.
    let pad = "p".repeat(300);
    let _ = as_nobody("/bin/sh")
        .arg("-c")
        .arg(format!(
            "{{ true < '{}'; }} 2>&-; sleep 1",
            w.s("private/k.key")
        ))
        .arg("sh")
        .arg(&pad)
        .output()
        .unwrap();
    let _ = as_nobody("/usr/bin/cat")
        .arg(w.p("private/k.key"))
        .arg(&pad)
        .output()
        .unwrap();
    let kd = w.wait_for_n(Duration::from_secs(20), 2, |a| a["rule"] == "kernel-denied");
    assert_eq!(kd.len(), 2, "{:?}", w.alerts());
    for a in &kd {
        let p = &a["process"];
        let cmd = p["cmdline"].as_str().unwrap();
        assert_eq!(p["identity"], "audit");
        if p["cmdline_truncated"] == true {
            assert_eq!(cmd.len(), 128, "{p}");
        } else {
            assert!(cmd.ends_with(&pad), "whole: {p}");
        }
    }
    let sh = kd
        .iter()
        .find(|a| a["process"]["exe"] == "/usr/bin/dash")
        .expect("the shell's denial");
    assert!(
        sh["process"]["cmdline"].as_str().unwrap().ends_with(&pad),
        "a live process's title is read whole: {sh}"
    );
    assert!(sh["process"].get("cmdline_truncated").is_none());

    // A writer that execs right after its write: its alert shows one program (the shell
    // before the exec, or sleep after it), never one's exe with the other's command line.
    let _ = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo x >> '{}'; exec sleep 0.5",
            w.s("conf/kms.yaml")
        ))
        .output()
        .unwrap();
    let m = w
        .wait_for(Duration::from_secs(5), |a| a["kind"] == "modified")
        .expect("modified");
    let p = &m["process"];
    match p["exe"].as_str() {
        Some("/usr/bin/dash") => assert!(p["cmdline"].as_str().unwrap().starts_with("/bin/sh")),
        Some("/usr/bin/sleep") => assert!(p["cmdline"].as_str().unwrap().starts_with("sleep")),
        None => assert!(p.get("cmdline").is_none(), "{p}"),
        Some(other) => panic!("{other}: {p}"),
    }
    w.stop();
}

#[test]
fn reconciled_tells_an_already_reported_change_from_a_new_one() {
    require_root!();
    let (mut w, _) = new_tree();
    w.write("conf/a.yaml", b"a\n", 0o644);
    w.write("conf/b.yaml", b"b\n", 0o644);
    w.write("conf/c.yaml", b"c\n", 0o644);
    w.init();
    w.start(&[]);
    // Reported while the daemon runs.
    std::fs::write(w.p("conf/a.yaml"), b"changed while watched\n").unwrap();
    std::fs::write(w.p("conf/c.yaml"), b"changed, then put back while down\n").unwrap();
    for f in ["conf/a.yaml", "conf/c.yaml"] {
        w.wait_for(Duration::from_secs(5), |x| {
            x["kind"] == "modified" && x["path"] == w.s(f)
        })
        .expect("modified");
    }
    w.stop();
    // While down: b changes, c goes back to its baselined content.
    std::fs::write(w.p("conf/b.yaml"), b"changed while down\n").unwrap();
    std::fs::write(w.p("conf/c.yaml"), b"c\n").unwrap();
    let before = w.alerts().len();
    w.start(&[]);
    let rec: Vec<_> = w
        .alerts()
        .into_iter()
        .skip(before)
        .filter(|a| a["kind"] == "reconciled")
        .collect();
    let of = |f: &str| {
        rec.iter()
            .find(|a| a["path"] == w.s(f))
            .unwrap_or_else(|| panic!("no reconciled for {f}: {rec:?}"))
    };
    assert_eq!(of("conf/a.yaml")["detail"]["already_reported"], true);
    assert!(of("conf/a.yaml")["detail"]["reported_at"].is_string());
    assert_eq!(of("conf/b.yaml")["detail"]["already_reported"], false);
    assert_eq!(of("conf/c.yaml")["detail"]["status"], "as_baseline");
    assert_eq!(rec.len(), 3, "{rec:?}");
    // And a change during this run, after a kill -9, is not lost for the next.
    std::fs::write(w.p("conf/b.yaml"), b"changed again\n").unwrap();
    w.wait_for(Duration::from_secs(5), |x| {
        x["kind"] == "modified" && x["path"] == w.s("conf/b.yaml")
    })
    .expect("modified");
    // (the state is written within a second)
    std::thread::sleep(Duration::from_millis(1500));
    w.kill9();
    let before = w.alerts().len();
    w.start(&[]);
    let b = w
        .alerts()
        .into_iter()
        .skip(before)
        .find(|a| a["kind"] == "reconciled" && a["path"] == w.s("conf/b.yaml"))
        .expect("reconciled b");
    assert_eq!(b["detail"]["already_reported"], true, "{b}");
    w.stop();
}

#[test]
fn status_counts_every_permission_event_once() {
    require_root!();
    let (mut w, reader) = new_tree();
    w.init();
    w.start(&[]);
    for _ in 0..7 {
        assert!(!cat(&w.p("keys/client.key")).status.success());
    }
    for _ in 0..5 {
        assert!(Command::new(&reader)
            .arg(w.p("keys/client.key"))
            .status()
            .unwrap()
            .success());
    }
    assert_eq!(
        w.wait_for_n(Duration::from_secs(5), 7, |a| a["outcome"] == "denied")
            .len(),
        7
    );
    let st = w.status();
    let (allowed, denied) = (
        st["decisions"]["allowed"].as_u64().unwrap(),
        st["decisions"]["denied"].as_u64().unwrap(),
    );
    assert_eq!(denied, 7, "{st}");
    assert!(allowed >= 5, "{st}");
    assert_eq!(
        st["events"]["perm"].as_u64().unwrap(),
        allowed + denied,
        "{st}"
    );
    assert_eq!(st["pending_decisions"], 0);
    w.stop();
}
