//! Alert logs end to end: records written by the library's `Alerter`, checked by the real
//! binary's `log verify` (intact, edited, inserted, deleted, cut, rotated, signed), and the
//! syslog sinks against local listeners.

mod util;
use kmsentry::alert::{record, Alert, AlertConfig, Alerter, Kind, Outcome, SyslogTarget};
use kmsentry::baseline::diff::Severity;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use util::*;

fn cfg(file: &Path) -> AlertConfig {
    AlertConfig {
        host: "host-1".into(),
        file: Some(file.to_path_buf()),
        keep: 5,
        ..AlertConfig::default()
    }
}

fn alert(i: usize) -> Alert {
    let mut a = Alert::new(Kind::Modified, Severity::High);
    a.path = Some(format!("/etc/kms/key{i}.pem").into_bytes());
    a.group = Some("client-keys".into());
    a.changes = vec!["content"];
    a
}

/// started, n × modified, optionally stopped; with a key, signed checkpoints every 3.
fn write_log(file: &Path, n: usize, key: Option<&Path>, stop: bool) {
    let mut c = cfg(file);
    if let Some(k) = key {
        c.sign_key = Some(k.to_path_buf());
        c.checkpoint_every = Some(3);
    }
    let mut al = Alerter::new(c).unwrap();
    al.emit(Alert::new(Kind::Started, Severity::Info)).unwrap();
    for i in 0..n {
        al.emit(alert(i)).unwrap();
    }
    if stop {
        al.emit(Alert::new(Kind::Stopped, Severity::Info)).unwrap();
    }
}

fn keypair(env: &TestEnv) -> (PathBuf, PathBuf) {
    let k = env.path("alert.key");
    let key = kmsentry::store::signing::generate().unwrap();
    let public = kmsentry::store::signing::write_keypair(&key, &k).unwrap();
    (k, public)
}

fn lines(p: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(p).unwrap();
    assert_eq!(data.last(), Some(&b'\n'));
    data[..data.len() - 1]
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn put_lines(p: &Path, ls: &[Vec<u8>]) {
    let mut data = ls.join(&b'\n');
    data.push(b'\n');
    std::fs::write(p, data).unwrap();
}

fn log_verify(env: &TestEnv, args: &[&OsStr]) -> Run {
    let mut a = vec![OsStr::new("log"), OsStr::new("verify")];
    a.extend_from_slice(args);
    env.run(&a)
}

fn replace(line: &[u8], from: &str, to: &str) -> Vec<u8> {
    let s = String::from_utf8(line.to_vec()).unwrap();
    assert!(s.contains(from), "{s}");
    s.replacen(from, to, 1).into_bytes()
}

#[test]
fn an_intact_log_verifies_with_exit_0() {
    let env = TestEnv::new();
    let f = env.path("alerts.jsonl");
    write_log(&f, 4, None, true);
    let r = log_verify(&env, &[p(&f)]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("intact: 6 record(s) (seq 1–6)"),
        "{}",
        r.stdout
    );

    let r = log_verify(&env, &[p(&f), OsStr::new("--format"), OsStr::new("json")]);
    assert_eq!(r.code, 0);
    let v = r.json();
    assert_eq!(v["intact"], true);
    assert_eq!(v["records"], 6);
    assert_eq!(v["problem"], serde_json::Value::Null);
    assert_eq!(
        v["head"].as_str().unwrap(),
        record::line_hash(lines(&f).last().unwrap())
    );
}

#[test]
fn an_edited_line_is_named_and_not_counted_as_verified() {
    let env = TestEnv::new();
    let f = env.path("alerts.jsonl");
    write_log(&f, 4, None, false);
    let mut ls = lines(&f);
    ls[2] = replace(&ls[2], "\"severity\":\"high\"", "\"severity\":\"low\"");
    put_lines(&f, &ls);
    let r = log_verify(&env, &[p(&f)]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    let first = r.stdout.lines().next().unwrap();
    assert!(
        first.ends_with(
            "alerts.jsonl:3: this record was changed: its hash does not match the prev of the next record (line 4)"
        ),
        "{first}"
    );
    assert!(
        r.stdout
            .contains("BROKEN: 1 problem(s); 4 of 5 record(s) verified"),
        "{}",
        r.stdout
    );

    let v = log_verify(&env, &[p(&f), OsStr::new("--format"), OsStr::new("json")]).json();
    assert_eq!(v["intact"], false);
    assert_eq!(v["problem"]["line"], 3);
    assert_eq!(v["verified"], 4);
    assert_eq!(v["records"], 5);
}

#[test]
fn every_break_is_listed_not_only_the_first() {
    let env = TestEnv::new();
    let f = env.path("alerts.jsonl");
    write_log(&f, 9, None, false);
    let mut ls = lines(&f);
    // Line 3 edited, line 6 deleted, lines 8 and 9 swapped.
    ls[2] = replace(&ls[2], "\"severity\":\"high\"", "\"severity\":\"low\"");
    ls.swap(7, 8);
    ls.remove(5);
    put_lines(&f, &ls);
    let v = log_verify(&env, &[p(&f), OsStr::new("--format"), OsStr::new("json")]).json();
    let probs: Vec<(u64, String)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["line"].as_u64().unwrap(),
                p["why"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(probs.len(), 3, "{probs:#?}");
    assert_eq!(probs[0].0, 3);
    assert!(probs[0].1.contains("was changed"), "{probs:#?}");
    assert_eq!(probs[1].0, 6);
    assert!(
        probs[1]
            .1
            .contains("seq jumps from 5 to 7: 1 record(s) missing"),
        "{probs:#?}"
    );
    // Seq 9 arrives before seq 8: 8 is named where it stands (line 8) as out of order.
    assert_eq!(probs[2].0, 8);
    assert!(
        probs[2].1.contains("seq 8 after 9: out of order"),
        "{probs:#?}"
    );
    assert_eq!(v["records"], 9);
    assert_eq!(v["verified"], 8);
}

#[test]
fn an_inserted_line_is_found() {
    let env = TestEnv::new();
    let f = env.path("alerts.jsonl");
    write_log(&f, 4, None, false);
    let orig = lines(&f);

    // A copy of line 2 put after it.
    let mut ls = orig.clone();
    ls.insert(2, orig[1].clone());
    put_lines(&f, &ls);
    let r = log_verify(&env, &[p(&f)]);
    assert_eq!(r.code, 3);
    assert!(
        r.stdout
            .contains("alerts.jsonl:3: seq 2 after 2: a line was inserted"),
        "{}",
        r.stdout
    );

    // A forged record that chains onto line 2 correctly: the line after it no longer follows.
    let mut forged = replace(&orig[1], "\"seq\":2", "\"seq\":3");
    let prev_now = format!("\"prev\":\"{}\"", record::line_hash(&orig[0]));
    forged = replace(
        &forged,
        &prev_now,
        &format!("\"prev\":\"{}\"", record::line_hash(&orig[1])),
    );
    let mut ls = orig.clone();
    ls.insert(2, forged);
    put_lines(&f, &ls);
    let r = log_verify(&env, &[p(&f)]);
    assert_eq!(r.code, 3);
    assert!(
        r.stdout
            .contains("alerts.jsonl:4: seq 3 after 3: a second record with seq 3"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("alerts.jsonl:3: not part of the chain"),
        "the forged record is named: {}",
        r.stdout
    );

    // Garbage inserted.
    let mut ls = orig;
    ls.insert(3, b"not json".to_vec());
    put_lines(&f, &ls);
    let r = log_verify(&env, &[p(&f)]);
    assert_eq!(r.code, 3);
    assert!(
        r.stdout.contains("alerts.jsonl:4: not an alert record"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_deleted_line_shows_as_a_seq_gap() {
    let env = TestEnv::new();
    let f = env.path("alerts.jsonl");
    write_log(&f, 4, None, false);
    let mut ls = lines(&f);
    ls.remove(2);
    put_lines(&f, &ls);
    let r = log_verify(&env, &[p(&f)]);
    assert_eq!(r.code, 3);
    assert!(
        r.stdout
            .contains("alerts.jsonl:3: seq jumps from 2 to 4: 1 record(s) missing"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_tail_cut_mid_line_is_found_without_a_key() {
    let env = TestEnv::new();
    let f = env.path("alerts.jsonl");
    write_log(&f, 3, None, false);
    let data = std::fs::read(&f).unwrap();
    std::fs::write(&f, &data[..data.len() - 20]).unwrap();
    let r = log_verify(&env, &[p(&f)]);
    assert_eq!(r.code, 3);
    assert!(
        r.stdout
            .contains("alerts.jsonl:4: the last line has no newline"),
        "{}",
        r.stdout
    );
}

#[test]
fn with_a_key_a_cut_tail_of_a_stopped_daemons_log_is_found() {
    let env = TestEnv::new();
    let (k, public) = keypair(&env);
    let f = env.path("alerts.jsonl");
    write_log(&f, 4, Some(&k), true);
    let ls = lines(&f);
    let kinds: Vec<String> = ls.iter().map(|l| record::parse(l).unwrap().kind).collect();
    assert_eq!(kinds.last().unwrap(), "checkpoint");
    assert_eq!(kinds[kinds.len() - 2], "stopped");

    let key = [OsStr::new("--key"), p(&public)];
    let r = log_verify(&env, &[p(&f), key[0], key[1]]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains("every record is covered by a signature"),
        "{}",
        r.stdout
    );
    let r = log_verify(&env, &[p(&f), key[0], key[1], OsStr::new("--stopped")]);
    assert_eq!(r.code, 0, "{}", r.stdout);

    // Cut the final checkpoint: the chain alone cannot tell, the key can.
    put_lines(&f, &ls[..ls.len() - 1]);
    assert_eq!(log_verify(&env, &[p(&f)]).code, 0);
    let r = log_verify(&env, &[p(&f), key[0], key[1]]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("ends with `stopped` but not with the checkpoint"),
        "{}",
        r.stdout
    );

    // Cut `stopped` and its checkpoint: looks like a running daemon's log, with uncovered
    // records reported; --stopped says the daemon stopped, so the cut is found.
    put_lines(&f, &ls[..ls.len() - 2]);
    let r = log_verify(&env, &[p(&f), key[0], key[1]]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains("not covered by any signature"),
        "{}",
        r.stdout
    );
    let v = log_verify(
        &env,
        &[
            p(&f),
            key[0],
            key[1],
            OsStr::new("--format"),
            OsStr::new("json"),
        ],
    )
    .json();
    assert!(v["uncovered"]["count"].as_u64().unwrap() >= 1);
    let r = log_verify(&env, &[p(&f), key[0], key[1], OsStr::new("--stopped")]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    assert!(r.stdout.contains("its tail was cut"), "{}", r.stdout);
}

#[test]
fn a_forged_or_foreign_checkpoint_fails_with_the_key() {
    let env = TestEnv::new();
    let (k, public) = keypair(&env);
    let f = env.path("alerts.jsonl");
    write_log(&f, 4, Some(&k), true);
    let ls = lines(&f);
    // Re-chain an edited record and everything after it, as an attacker without the key can:
    // the chain verifies, the checkpoint covering it does not.
    let mut forged = ls.clone();
    forged[1] = replace(&forged[1], "key0.pem", "kex0.pem");
    for i in 2..forged.len() {
        let prev = record::parse(&forged[i]).unwrap().prev;
        let now = record::line_hash(&forged[i - 1]);
        forged[i] = replace(
            &forged[i],
            &format!("\"prev\":\"{prev}\""),
            &format!("\"prev\":\"{now}\""),
        );
        let covers = format!("\"covers_hash\":\"{prev}\"");
        if std::str::from_utf8(&forged[i]).unwrap().contains(&covers) {
            forged[i] = replace(&forged[i], &covers, &format!("\"covers_hash\":\"{now}\""));
        }
    }
    put_lines(&f, &forged);
    assert_eq!(log_verify(&env, &[p(&f)]).code, 0);
    let r = log_verify(&env, &[p(&f), OsStr::new("--key"), p(&public)]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    assert!(
        r.stdout.contains("checkpoint signature does not verify"),
        "{}",
        r.stdout
    );

    put_lines(&f, &ls);
    let other = TestEnv::new();
    let (_, other_pub) = keypair(&other);
    let r = log_verify(&env, &[p(&f), OsStr::new("--key"), p(&other_pub)]);
    assert_eq!(r.code, 3);
    assert!(r.stdout.contains("signed by another key"), "{}", r.stdout);

    // No checkpoint at all, but a key given.
    let g = env.path("unsigned.jsonl");
    write_log(&g, 2, None, true);
    let r = log_verify(&env, &[p(&g), OsStr::new("--key"), p(&public)]);
    assert_eq!(r.code, 3);
    assert!(r.stdout.contains("no checkpoint"), "{}", r.stdout);
}

#[test]
fn rotated_files_verify_as_one_chain_oldest_first() {
    let env = TestEnv::new();
    let f = env.path("alerts.jsonl");
    let mut c = cfg(&f);
    c.max_bytes = Some(1000);
    let mut al = Alerter::new(c).unwrap();
    for i in 0..20 {
        al.emit(alert(i)).unwrap();
    }
    let f1 = kmsentry::alert::jsonl::rotated(&f, 1);
    let f2 = kmsentry::alert::jsonl::rotated(&f, 2);
    assert!(f2.exists());
    let r = log_verify(&env, &[p(&f2), p(&f1), p(&f)]);
    assert_eq!(r.code, 0, "{}", r.stdout);

    // The newest file alone: its first record continues an earlier chain; accepted, said.
    let r = log_verify(&env, &[p(&f)]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("alerts.jsonl:1: continues an earlier chain"),
        "{}",
        r.stdout
    );

    // Wrong order breaks at the first line of the second file.
    let r = log_verify(&env, &[p(&f1), p(&f2)]);
    assert_eq!(r.code, 3);
    assert!(r.stdout.contains("alerts.jsonl.2:1: seq"), "{}", r.stdout);
}

#[test]
fn a_crash_mid_write_is_acknowledged_and_accepted_but_a_cut_is_not() {
    let env = TestEnv::new();
    let f = env.path("alerts.jsonl");
    write_log(&f, 2, None, false);
    let mut data = std::fs::read(&f).unwrap();
    data.extend_from_slice(b"{\"ts\":\"2026-");
    std::fs::write(&f, &data).unwrap();
    let r = log_verify(&env, &[p(&f)]);
    assert_eq!(r.code, 3, "a partial line not yet recovered: {}", r.stdout);
    // The daemon restarts and acknowledges the damaged line.
    write_log(&f, 1, None, false);
    let r = log_verify(&env, &[p(&f)]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "alerts.jsonl:4: 1 damaged line(s) (a crash mid-write), acknowledged by line 5"
        ),
        "{}",
        r.stdout
    );
    // Editing the damaged bytes is found.
    let mut ls = lines(&f);
    ls[3] = b"{\"ts\":\"2027-".to_vec();
    put_lines(&f, &ls);
    let r = log_verify(&env, &[p(&f)]);
    assert_eq!(r.code, 3);
    assert!(
        r.stdout.contains("alerts.jsonl:4: not an alert record"),
        "{}",
        r.stdout
    );
}

#[test]
fn hostile_names_stay_on_one_line_and_the_log_verifies() {
    let env = TestEnv::new();
    let f = env.path("alerts.jsonl");
    let mut al = Alerter::new(cfg(&f)).unwrap();
    let mut a = Alert::new(Kind::Access, Severity::Critical);
    a.path = Some(b"/etc/kms/a\nforged\xff\x1b[2J".to_vec());
    a.outcome = Some(Outcome::Denied);
    al.emit(a).unwrap();
    al.emit(Alert::new(Kind::Stopped, Severity::Info)).unwrap();
    let ls = lines(&f);
    assert_eq!(ls.len(), 2);
    let v: serde_json::Value = serde_json::from_slice(&ls[0]).unwrap();
    assert_eq!(v["path"], "/etc/kms/a\nforged\\xff\u{1b}[2J");
    assert_eq!(log_verify(&env, &[p(&f)]).code, 0);
}

#[test]
fn usage_errors_exit_2_and_a_missing_file_exits_3() {
    let env = TestEnv::new();
    assert_eq!(log_verify(&env, &[]).code, 2);
    let f = env.path("alerts.jsonl");
    write_log(&f, 1, None, false);
    assert_eq!(log_verify(&env, &[p(&f), OsStr::new("--stopped")]).code, 2);
    let junk = env.path("junk.pub");
    std::fs::write(&junk, "nope").unwrap();
    assert_eq!(
        log_verify(&env, &[p(&f), OsStr::new("--key"), p(&junk)]).code,
        2
    );
    let r = log_verify(&env, &[p(&env.path("missing.jsonl"))]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("missing.jsonl"), "{}", r.stderr);
}

// ---- syslog sinks ----

fn syslog_cfg(file: &Path, target: &str) -> AlertConfig {
    AlertConfig {
        syslog: vec![target.parse::<SyslogTarget>().unwrap()],
        ..cfg(file)
    }
}

fn access_alert() -> Alert {
    let mut a = Alert::new(Kind::Access, Severity::Critical);
    a.path = Some(b"/etc/kms/k\"e]y".to_vec());
    a.outcome = Some(Outcome::Denied);
    a
}

/// Check one RFC 5424 message carries the file's line as MSG.
fn check_frame(msg: &str, line: &[u8]) {
    let pid = std::process::id();
    let head = "<82>1 ";
    assert!(msg.starts_with(head), "{msg}");
    let fields: Vec<&str> = msg.splitn(7, ' ').collect();
    assert_eq!(fields[2], "host-1");
    assert_eq!(fields[3], "kmsentry");
    assert_eq!(fields[4], pid.to_string());
    assert_eq!(fields[5], "access");
    assert!(
        fields[1].ends_with('Z') && fields[1].len() == 27,
        "{}",
        fields[1]
    );
    let rest = fields[6];
    assert!(
        rest.starts_with(
            r#"[kmsentry@32473 kind="access" severity="critical" seq="1" path="/etc/kms/k\"e\]y" outcome="denied"] "#
        ),
        "{rest}"
    );
    assert!(rest.ends_with(std::str::from_utf8(line).unwrap()), "{rest}");
}

#[test]
fn syslog_over_udp_sends_an_rfc5424_frame() {
    let env = TestEnv::new();
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let target = format!("udp:{}", rx.local_addr().unwrap());
    let f = env.path("alerts.jsonl");
    let mut al = Alerter::new(syslog_cfg(&f, &target)).unwrap();
    al.emit(access_alert()).unwrap();
    let mut buf = [0u8; 65536];
    let n = rx.recv(&mut buf).unwrap();
    check_frame(std::str::from_utf8(&buf[..n]).unwrap(), &lines(&f)[0]);
    assert_eq!(al.sink_failures(), 0);
}

#[test]
fn syslog_over_a_unix_datagram_socket_sends_an_rfc5424_frame() {
    let env = TestEnv::new();
    let sock = env.path("log.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let f = env.path("alerts.jsonl");
    let target = format!("unix:{}", sock.to_str().unwrap());
    let mut al = Alerter::new(syslog_cfg(&f, &target)).unwrap();
    al.emit(access_alert()).unwrap();
    let mut buf = [0u8; 65536];
    let n = rx.recv(&mut buf).unwrap();
    check_frame(std::str::from_utf8(&buf[..n]).unwrap(), &lines(&f)[0]);
}

/// Read `count` octet-counted frames (RFC 6587) from `s`.
fn read_frames(s: &mut std::net::TcpStream, count: usize) -> Vec<String> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut data = Vec::new();
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while frames.len() < count {
        assert!(Instant::now() < deadline, "timed out; got {frames:?}");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed; got {frames:?}");
        data.extend_from_slice(&buf[..n]);
        while let Some(sp) = data.iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&data[..sp]).unwrap().parse().unwrap();
            if data.len() < sp + 1 + len {
                break;
            }
            frames.push(String::from_utf8(data[sp + 1..sp + 1 + len].to_vec()).unwrap());
            data.drain(..sp + 1 + len);
        }
    }
    frames
}

fn accept(l: &std::net::TcpListener) -> std::net::TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no connection");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn syslog_over_tcp_uses_octet_counting() {
    let env = TestEnv::new();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp:{}", l.local_addr().unwrap());
    let f = env.path("alerts.jsonl");
    let mut al = Alerter::new(syslog_cfg(&f, &target)).unwrap();
    al.emit(access_alert()).unwrap();
    al.emit(Alert::new(Kind::Stopped, Severity::Info)).unwrap();
    let mut s = accept(&l);
    let frames = read_frames(&mut s, 2);
    let ls = lines(&f);
    check_frame(&frames[0], &ls[0]);
    assert!(frames[1].starts_with("<86>1 "), "{}", frames[1]);
    assert!(frames[1].ends_with(std::str::from_utf8(&ls[1]).unwrap()));
}

#[test]
fn an_unreachable_tcp_collector_neither_blocks_nor_stops_the_file() {
    let env = TestEnv::new();
    // A port nobody listens on: bind, learn it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let f = env.path("alerts.jsonl");
    let mut al = Alerter::new(syslog_cfg(&f, &format!("tcp:127.0.0.1:{port}"))).unwrap();
    let t = Instant::now();
    for i in 0..20 {
        al.emit(alert(i)).unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(lines(&f).len(), 20);
    assert!(al.sink_failures() >= 20);
    assert_eq!(log_verify(&env, &[p(&f)]).code, 0);
}

#[test]
fn journald_gets_native_protocol_fields() {
    let env = TestEnv::new();
    let sock = env.path("journal.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let f = env.path("alerts.jsonl");
    let mut al = Alerter::new(cfg(&f)).unwrap();
    al.set_journald_socket(&sock);
    let mut a = access_alert();
    a.path = Some(b"/etc/kms/a\nb".to_vec());
    al.emit(a).unwrap();
    let mut buf = [0u8; 65536];
    let n = rx.recv(&mut buf).unwrap();
    let got = &buf[..n];
    let mut want = b"MESSAGE=".to_vec();
    want.extend_from_slice(&lines(&f)[0]);
    want.extend_from_slice(
        b"\nPRIORITY=2\nSYSLOG_FACILITY=10\nSYSLOG_IDENTIFIER=kmsentry\nKMSENTRY_KIND=access\n",
    );
    assert!(got.starts_with(&want), "{}", kmsentry::sanitize::Name(got));
    assert!(
        got.windows(27)
            .any(|w| w == b"KMSENTRY_PATH=/etc/kms/a\\nb"),
        "{}",
        kmsentry::sanitize::Name(got)
    );
}

/// Not a benchmark, a sanity number for docs/alerts.md: the cost of one emit with fsync.
#[test]
fn emit_with_fsync_cost() {
    let env = TestEnv::new();
    let f = env.path("alerts.jsonl");
    let mut al = Alerter::new(cfg(&f)).unwrap();
    let n = 200;
    let t = Instant::now();
    for i in 0..n {
        al.emit(alert(i)).unwrap();
    }
    let per = t.elapsed() / n as u32;
    eprintln!("emit + fdatasync: {per:?} per record over {n} records");
    // Batches of 20: one write and one fdatasync each.
    let t = Instant::now();
    for b in 0..n / 20 {
        al.emit_batch((0..20).map(|i| alert(b * 20 + i)).collect())
            .unwrap();
    }
    eprintln!(
        "emit_batch of 20 + fdatasync: {:?} per record",
        t.elapsed() / n as u32
    );
    assert_eq!(lines(&f).len(), 2 * n);
    // The same records without the disk: rendering and hashing alone.
    let a = alert(1);
    let t = Instant::now();
    for i in 0..n {
        let st = record::Stamp {
            ts: "2026-01-02T03:04:05.678901Z",
            seq: i as u64,
            host: "host-1",
            prev: record::ZERO_HASH,
        };
        std::hint::black_box(record::line_hash(record::render(&a, &st).as_bytes()));
    }
    eprintln!(
        "render + hash only: {:?} per record",
        t.elapsed() / n as u32
    );
}
