//! The daemon's log room: lines appended to a followed log become `log` alerts in the
//! hash-chained alert log (fields masked, correlations with count/window/group-by), across
//! rename rotation and copytruncate, exactly once across a restart with a rotation while
//! down, through a bad-rule SIGHUP, from the syslog socket; a FIFO or symlink put in a log's
//! place is reported and never opened. Real daemon, test directories only, under deadlines.

mod daemon;
mod util;
use daemon::*;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::Duration;
use util::*;

const RULES: &str = r#"title: Test key export
id: test-key-export
status: test
description: A key exported.
level: high
logsource:
  product: testkms
  service: audit
detection:
  selection:
    action: export
  condition: selection
---
title: Test login failure
id: test-login-failure
status: test
level: low
logsource:
  product: testkms
  service: audit
detection:
  selection:
    action: login
    result: fail
  condition: selection
---
title: Test login failure burst
id: test-login-burst
status: test
level: critical
correlation:
  type: event_count
  rules: [test-login-failure]
  group-by: [user]
  timespan: 60s
  condition: {gte: 3}
---
title: Test agent decrypt failure
id: test-agent-decrypt-failure
status: test
level: medium
logsource:
  product: testhost
  service: agent
detection:
  selection:
    program: kms-agent
    message|contains: decrypt failed
  condition: selection
"#;

/// A daemon test tree with a followed log (`logs/app.log`, or `glob`) and a syslog socket.
fn setup(glob: &str) -> Watch {
    let w = Watch::new();
    w.write("cfg/client.conf", b"server = kms\n", 0o644);
    w.write("rules/test.yml", RULES.as_bytes(), 0o644);
    std::fs::create_dir_all(w.p("logs")).unwrap();
    std::fs::create_dir_all(w.p("run")).unwrap();
    w.write("logs/app.log", b"", 0o644);
    w.policy(&format!(
        "version: 1\ngroups:\n  - name: cfg\n    class: kms-config\n    paths: [{cfg}]\nlogs:\n  - name: app\n    source: {{file: \"{glob}\"}}\n    format: json\n    logsource: {{product: testkms, service: audit}}\n  - name: agent\n    source: {{syslog: {sock}}}\n    format: syslog\n    logsource: {{product: testhost, service: agent}}\nrules: [{rules}]\n",
        cfg = w.s("cfg"),
        glob = w.s(glob),
        sock = w.s("run/sys.sock"),
        rules = w.s("rules"),
    ));
    w.init();
    w
}

fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let secs = d.as_secs() as i64;
    // RFC 3339 UTC from Unix seconds, without a date crate.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, dd) = civil(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn export_line(n: u32) -> String {
    format!(
        "{{\"time\":\"{}\",\"action\":\"export\",\"user\":\"alice\",\"kid\":\"k{n}\",\"n\":{n},\"password\":\"hunter2-{n}\"}}\n",
        now()
    )
}

fn append(w: &Watch, rel: &str, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(w.p(rel))
        .unwrap();
    f.write_all(data).unwrap();
}

fn exports(w: &Watch) -> Vec<u64> {
    let mut v: Vec<u64> = w
        .alerts()
        .iter()
        .filter(|a| a["kind"] == "log" && a["rule"] == "test-key-export")
        .filter_map(|a| a["fields"]["n"].as_u64())
        .collect();
    v.sort_unstable();
    v
}

fn wait_exports(w: &Watch, want: &[u64]) -> Vec<u64> {
    let ok = wait_until(Duration::from_secs(10), || exports(w).len() >= want.len());
    let _ = ok;
    // Give a duplicate every chance to appear.
    std::thread::sleep(Duration::from_millis(400));
    exports(w)
}

fn health(w: &Watch, event: &str) -> Vec<serde_json::Value> {
    w.alerts()
        .into_iter()
        .filter(|a| a["kind"] == "health" && a["detail"]["log_event"] == event)
        .collect()
}

#[test]
fn a_line_appended_is_a_log_alert_with_secrets_masked_and_bad_lines_counted() {
    require_root!();
    let mut w = setup("logs/app.log");
    w.start(&[]);
    let st = w
        .alerts()
        .into_iter()
        .find(|a| a["kind"] == "started")
        .unwrap();
    assert_eq!(st["detail"]["log_sources"], 2, "{st}");
    // Hostile lines first: invalid UTF-8, a NUL, truncated JSON, a 1 MiB line. None is fatal.
    let mut junk = b"\xff\xfe{\"action\":\"export\"\n{\"a\":\"b\0c\"}\n{\"truncated\":\n{\"action\":\"noise\",\"note\":\"a\xffb\"}\n".to_vec();
    junk.extend(std::iter::repeat_n(b'x', 1 << 20));
    junk.push(b'\n');
    append(&w, "logs/app.log", &junk);
    let line = export_line(1);
    append(&w, "logs/app.log", line.as_bytes());
    let a = w
        .wait_for(Duration::from_secs(10), |a| {
            a["kind"] == "log" && a["rule"] == "test-key-export"
        })
        .expect("a log alert for the export");
    assert_eq!(a["severity"], "high");
    assert_eq!(a["title"], "Test key export");
    assert_eq!(a["source"], "app");
    assert_eq!(a["log"]["file"], w.s("logs/app.log"));
    assert_eq!(a["log"]["offset"], junk.len() as u64);
    assert_eq!(a["fields"]["user"], "alice");
    assert_eq!(a["fields"]["kid"], "k1");
    assert!(a["fields"]["password"].is_string());
    let text = std::fs::read_to_string(w.alerts_path()).unwrap();
    assert!(
        !text.contains("hunter2"),
        "a password reached the alert log"
    );

    // A correlation: three failures of one user within the window.
    for _ in 0..3 {
        append(
            &w,
            "logs/app.log",
            format!(
                "{{\"time\":\"{}\",\"action\":\"login\",\"result\":\"fail\",\"user\":\"bob\"}}\n",
                now()
            )
            .as_bytes(),
        );
    }
    let c = w
        .wait_for(Duration::from_secs(10), |a| a["rule"] == "test-login-burst")
        .expect("the burst correlation");
    assert_eq!(c["kind"], "log");
    assert_eq!(c["severity"], "critical");
    assert_eq!(c["correlation"], "event_count");
    assert_eq!(c["count"], 3);
    assert_eq!(c["window"], 60);
    assert_eq!(c["group_by"]["user"], "bob");
    // Referenced detections do not alert alone (Sigma `generate` semantics).
    assert!(w.alerts().iter().all(|a| a["rule"] != "test-login-failure"));

    assert!(wait_until(Duration::from_secs(5), || w.status()["logs"]
        ["counts"]["lines"]
        .as_u64()
        .unwrap_or(0)
        >= 9));
    let status = w.status();
    let counts = &status["logs"]["counts"];
    assert!(counts["oversized"].as_u64().unwrap() >= 1, "{status}");
    // Invalid UTF-8, a raw NUL, truncated JSON: not JSON, counted, never fatal.
    assert!(counts["unparseable"].as_u64().unwrap() >= 4, "{status}");
    w.stop();
    w.assert_log_intact();
}

#[test]
fn rename_rotation_and_copytruncate_while_running_lose_and_repeat_nothing() {
    require_root!();
    let mut w = setup("logs/app.log");
    w.start(&[]);
    append(&w, "logs/app.log", export_line(1).as_bytes());
    assert_eq!(wait_exports(&w, &[1]), [1]);
    // Rename rotation; the writer still appends to its old file before reopening.
    std::fs::rename(w.p("logs/app.log"), w.p("logs/app.log.1")).unwrap();
    append(&w, "logs/app.log.1", export_line(2).as_bytes());
    append(&w, "logs/app.log", export_line(3).as_bytes());
    assert_eq!(wait_exports(&w, &[1, 2, 3]), [1, 2, 3]);
    let order: Vec<u64> = w
        .alerts()
        .iter()
        .filter(|a| a["rule"] == "test-key-export")
        .filter_map(|a| a["fields"]["n"].as_u64())
        .collect();
    assert_eq!(
        order,
        [1, 2, 3],
        "the old file is finished before the new one"
    );
    // copytruncate: copy, truncate in place, the writer goes on at the start.
    append(&w, "logs/app.log", export_line(4).as_bytes());
    assert_eq!(wait_exports(&w, &[1, 2, 3, 4]), [1, 2, 3, 4]);
    std::fs::copy(w.p("logs/app.log"), w.p("logs/app.log.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(w.p("logs/app.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    append(&w, "logs/app.log", export_line(5).as_bytes());
    assert_eq!(wait_exports(&w, &[1, 2, 3, 4, 5]), [1, 2, 3, 4, 5]);
    let st = w.status();
    assert!(
        st["logs"]["notices"]["truncated"].as_u64().unwrap() >= 1,
        "{st}"
    );
    assert!(
        st["logs"]["notices"]["rotated"].as_u64().unwrap() >= 1,
        "{st}"
    );
    w.stop();
    w.assert_log_intact();
}

#[test]
fn a_restart_with_a_rotation_while_down_alerts_each_line_exactly_once() {
    require_root!();
    let mut w = setup("logs/app.log");
    w.start(&[]);
    for n in 1..=3 {
        append(&w, "logs/app.log", export_line(n).as_bytes());
    }
    assert_eq!(wait_exports(&w, &[1, 2, 3]), [1, 2, 3]);
    w.stop();
    // While down: more lines, a rename rotation, lines in the new file.
    append(&w, "logs/app.log", export_line(4).as_bytes());
    append(&w, "logs/app.log", export_line(5).as_bytes());
    std::fs::rename(w.p("logs/app.log"), w.p("logs/app.log.1")).unwrap();
    append(&w, "logs/app.log", export_line(6).as_bytes());
    append(&w, "logs/app.log", export_line(7).as_bytes());
    w.start(&[]);
    assert_eq!(
        wait_exports(&w, &[1, 2, 3, 4, 5, 6, 7]),
        [1, 2, 3, 4, 5, 6, 7]
    );
    // And a plain restart with nothing new repeats nothing.
    w.stop();
    append(&w, "logs/app.log", export_line(8).as_bytes());
    w.start(&[]);
    assert_eq!(
        wait_exports(&w, &[1, 2, 3, 4, 5, 6, 7, 8]),
        [1, 2, 3, 4, 5, 6, 7, 8]
    );
    w.stop();
    w.assert_log_intact();
}

#[test]
fn a_bad_rule_on_sighup_keeps_the_daemon_up_and_the_old_rules_running() {
    require_root!();
    let mut w = setup("logs/app.log");
    w.start(&[]);
    w.write(
        "rules/bad.yml",
        b"title: Broken\nid: broken\nlogsource: {product: testkms}\ndetection:\n  sel:\n    action|nosuchmodifier: x\n  condition: sel and missing\n",
        0o644,
    );
    let pid = rustix::process::Pid::from_raw(w.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    let f = w
        .wait_for(Duration::from_secs(10), |a| {
            a["kind"] == "policy_reloaded" && a["outcome"] == "failure"
        })
        .expect("the reload fails");
    let msg = f["detail"]["message"].as_str().unwrap();
    assert!(msg.contains("bad.yml"), "{msg}");
    append(&w, "logs/app.log", export_line(1).as_bytes());
    assert_eq!(wait_exports(&w, &[1]), [1], "the old rules keep running");
    // A good reload swaps the rules and keeps the position.
    std::fs::remove_file(w.p("rules/bad.yml")).unwrap();
    w.write(
        "rules/more.yml",
        b"title: Test key delete\nid: test-key-delete\nstatus: test\nlevel: high\nlogsource: {product: testkms, service: audit}\ndetection:\n  sel:\n    action: delete\n  condition: sel\n",
        0o644,
    );
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    w.wait_for(Duration::from_secs(10), |a| {
        a["kind"] == "policy_reloaded" && a["outcome"] == "success"
    })
    .expect("the reload succeeds");
    std::thread::sleep(Duration::from_millis(200));
    append(
        &w,
        "logs/app.log",
        format!(
            "{{\"time\":\"{}\",\"action\":\"delete\",\"key\":\"k9\"}}\n",
            now()
        )
        .as_bytes(),
    );
    append(&w, "logs/app.log", export_line(2).as_bytes());
    w.wait_for(Duration::from_secs(10), |a| a["rule"] == "test-key-delete")
        .expect("the new rule runs");
    assert_eq!(wait_exports(&w, &[1, 2]), [1, 2], "nothing read twice");
    w.stop();
    w.assert_log_intact();
}

#[test]
fn a_syslog_datagram_on_the_socket_is_a_log_alert() {
    require_root!();
    let mut w = setup("logs/app.log");
    w.start(&[]);
    let sock = w.p("run/sys.sock");
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.mode() & 0o777, 0o600);
    let c = std::os::unix::net::UnixDatagram::unbound().unwrap();
    c.send_to(
        b"<11>Jan  2 03:04:05 kmshost kms-agent[42]: decrypt failed for key k7 token=s.abcdefghijklmnopqrstuvwx\n",
        &sock,
    )
    .unwrap();
    // RFC 5424 too.
    c.send_to(
        b"<11>1 2026-01-02T03:04:05Z kmshost kms-agent 43 - - decrypt failed again",
        &sock,
    )
    .unwrap();
    let got = w.wait_for_n(Duration::from_secs(10), 2, |a| {
        a["rule"] == "test-agent-decrypt-failure"
    });
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["kind"], "log");
    assert_eq!(got[0]["source"], "agent");
    assert_eq!(got[0]["log"]["socket"], sock.to_str().unwrap());
    assert_eq!(got[0]["log"]["seq"], 1);
    assert_eq!(got[1]["log"]["seq"], 2);
    assert_eq!(got[0]["fields"]["program"], "kms-agent");
    w.stop();
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "the socket is removed at stop"
    );
    w.assert_log_intact();
}

#[test]
fn a_symlink_or_fifo_in_place_of_a_followed_log_is_reported_and_never_opened() {
    require_root!();
    let mut w = setup("logs/app.log");
    // A file the symlink will point at, holding what would alert if it were read.
    let bait = w.write("elsewhere/secret.log", export_line(99).as_bytes(), 0o644);
    w.start(&[]);
    append(&w, "logs/app.log", export_line(1).as_bytes());
    assert_eq!(wait_exports(&w, &[1]), [1]);
    std::fs::remove_file(w.p("logs/app.log")).unwrap();
    std::os::unix::fs::symlink(&bait, w.p("logs/app.log")).unwrap();
    let s = w
        .wait_for(Duration::from_secs(10), |a| {
            a["kind"] == "health" && a["detail"]["log_event"] == "symlink"
        })
        .expect("the symlink is reported");
    assert_eq!(s["path"], w.s("logs/app.log"));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(exports(&w), [1], "the symlink's target was read");
    // Now a FIFO: opening it would block; the daemon must go on answering.
    std::fs::remove_file(w.p("logs/app.log")).unwrap();
    nix::unistd::mkfifo(
        &w.p("logs/app.log"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    w.wait_for(Duration::from_secs(10), |a| {
        a["kind"] == "health" && a["detail"]["log_event"] == "not_regular"
    })
    .expect("the FIFO is reported");
    assert_eq!(health(&w, "not_regular").len(), 1, "reported once");
    let st = w.status();
    assert!(st["logs"].is_object(), "{st}");
    // A regular file again: followed from its start.
    std::fs::remove_file(w.p("logs/app.log")).unwrap();
    append(&w, "logs/app.log", export_line(2).as_bytes());
    assert_eq!(wait_exports(&w, &[1, 2]), [1, 2]);
    w.stop();
    w.assert_log_intact();
}

#[test]
fn the_daemons_own_access_denials_read_back_raise_the_burst_rule() {
    require_root!();
    let mut w = Watch::new();
    let key = w.write("keys/client.key", b"secret\n", 0o644);
    let reader = allowed_reader(&w);
    let pack = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/tls/client-cert.yml");
    w.policy(&format!(
        "version: 1\ngroups:\n  - name: keys\n    class: private-key\n    paths: [{keys}]\n    access:\n      mode: enforce\n      allow:\n        - exe: {reader}\nlogs:\n  - name: own\n    source: {{file: \"{alerts}\"}}\n    format: json\n    logsource: {{product: kmsentry, service: alerts}}\n  - name: journal\n    source: {{journald: {{unit: ssh.service}}}}\n    logsource: {{product: linux, service: sshd}}\nrules: [{pack}]\n",
        keys = w.s("keys"),
        reader = reader.to_str().unwrap(),
        alerts = w.alerts_path().to_str().unwrap(),
    ));
    w.init();
    w.start(&[]);
    // journald is not read by this version: said at start, never silently ignored.
    let j = w
        .wait_for(Duration::from_secs(5), |a| {
            a["kind"] == "health" && a["detail"]["log_event"] == "unsupported"
        })
        .expect("the journald source is reported");
    assert_eq!(j["detail"]["source"], "journal");
    for _ in 0..3 {
        assert!(!cat(&key).status.success(), "enforce denies cat");
    }
    let burst = w
        .wait_for(Duration::from_secs(15), |a| {
            a["kind"] == "log" && a["rule"] == "kmsentry-alert-access-burst"
        })
        .expect("the burst of denials read back from the alert log");
    assert_eq!(burst["severity"], "critical");
    assert_eq!(burst["count"], 3);
    assert_eq!(burst["source"], "own");
    w.stop();
    w.assert_log_intact();
}

#[test]
fn a_crash_after_the_alerts_but_before_the_position_repeats_nothing() {
    require_root!();
    let mut w = setup("logs/app.log");
    w.start(&[]);
    for n in 1..=3 {
        append(&w, "logs/app.log", export_line(n).as_bytes());
    }
    assert_eq!(wait_exports(&w, &[1, 2, 3]), [1, 2, 3]);
    w.kill9();
    // As if the daemon died after the alerts' fsync, before their position was saved.
    let db = rusqlite::Connection::open(w.env.path("logs.db")).unwrap();
    let rows = db
        .execute("UPDATE log_positions SET offset = 0", [])
        .unwrap();
    assert_eq!(rows, 1);
    drop(db);
    append(&w, "logs/app.log", export_line(4).as_bytes());
    w.start(&[]);
    assert_eq!(wait_exports(&w, &[1, 2, 3, 4]), [1, 2, 3, 4]);
    w.stop();
    w.assert_log_intact();
}

#[test]
fn watch_refuses_to_start_on_a_bad_rule_or_a_symlink_at_the_socket_path() {
    require_root!();
    let w = setup("logs/app.log");
    std::os::unix::fs::symlink("/etc/passwd", w.p("run/sys.sock")).unwrap();
    let out = w.run_second(&[]);
    let err = String::from_utf8(out.stderr.clone()).unwrap_or_default();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("symlink"), "{err}");
    assert!(
        std::fs::symlink_metadata(w.p("run/sys.sock"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "never removed"
    );
    std::fs::remove_file(w.p("run/sys.sock")).unwrap();
    w.write(
        "rules/bad.yml",
        b"title: Broken\nid: broken\nlogsource: {product: testkms}\ndetection:\n  sel:\n    action|nosuchmodifier: x\n  condition: sel\n",
        0o644,
    );
    let out = w.run_second(&[]);
    let err = String::from_utf8(out.stderr.clone()).unwrap_or_default();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.yml"), "{err}");
}
