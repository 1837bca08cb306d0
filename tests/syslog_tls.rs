//! Alerts to another machine: RFC 5425 syslog over TLS with a client certificate, against a
//! real rsyslog (`rsyslog` + `rsyslog-gnutls`) on 127.0.0.1 started by each test, then
//! `kmsentry log verify` of the RFC 5424 file the receiver stored.

mod util;
use kmsentry::alert::tls::TlsTarget;
use kmsentry::alert::{Alert, AlertConfig, Alerter, Kind, SyslogTarget};
use kmsentry::baseline::diff::Severity;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::*;

/// Skip (loudly) without rsyslog and its TLS driver; under CI=true that is a failure.
fn have_rsyslog() -> bool {
    let gtls = ["/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"]
        .iter()
        .any(|p| Path::new(p).exists())
        || glob_gtls();
    let ok = Command::new("rsyslogd")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && gtls
        && Command::new("openssl")
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but rsyslogd, its gtls driver or openssl is missing (scripts/test installs them)"
        );
        eprintln!("skipped: needs rsyslogd with rsyslog-gnutls, and openssl");
    }
    ok
}

fn glob_gtls() -> bool {
    std::fs::read_dir("/usr/lib")
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.path().join("rsyslog/lmnsd_gtls.so").exists())
        })
        .unwrap_or(false)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8(out.stderr.clone()).unwrap_or_default()
    );
}

/// A CA and a certificate it signs for `cn` with `san` and `eku`.
fn issue(dir: &Path, ca: &str, name: &str, cn: &str, san: &str, eku: &str) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "[v3]\nsubjectAltName={san}\nextendedKeyUsage={eku}\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
            "-extensions",
            "v3",
        ],
    );
}

fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// Certificates for a test: `ca` signs the receiver (`server`, for 127.0.0.1) and the sender
/// (`client`, CN client.kmsentry.test); `other-ca` signs an impostor receiver (`impostor`).
fn pki(dir: &Path) {
    make_ca(dir, "ca");
    make_ca(dir, "other-ca");
    issue(
        dir,
        "ca",
        "server",
        "localhost",
        "DNS:localhost,IP:127.0.0.1",
        "serverAuth",
    );
    issue(
        dir,
        "ca",
        "client",
        "client.kmsentry.test",
        "DNS:client.kmsentry.test",
        "clientAuth",
    );
    issue(
        dir,
        "other-ca",
        "impostor",
        "localhost",
        "DNS:localhost,IP:127.0.0.1",
        "serverAuth",
    );
}

/// A test directory with the certificates, when rsyslog and openssl are here.
fn tls_env() -> Option<TestEnv> {
    if !have_rsyslog() {
        return None;
    }
    let env = TestEnv::new();
    pki(env.dir.path());
    Some(env)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private rsyslogd: TLS input on 127.0.0.1:port, every message into `received.log` in
/// RFC 5424 form. Killed on drop.
struct Receiver {
    dir: PathBuf,
    port: u16,
    cert: &'static str,
    child: Option<Child>,
}

impl Receiver {
    fn new(dir: &Path, cert: &'static str) -> Receiver {
        Receiver {
            dir: dir.to_path_buf(),
            port: free_port(),
            cert,
            child: None,
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("received.log")
    }

    fn start(&mut self) {
        let d = &self.dir;
        let work = d.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let conf = format!(
            r#"global(workDirectory="{work}" maxMessageSize="64k"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{d}/ca.pem"
       DefaultNetstreamDriverCertFile="{d}/{cert}.pem"
       DefaultNetstreamDriverKeyFile="{d}/{cert}.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.AuthMode="x509/name" PermittedPeer=["client.kmsentry.test"])
input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="remote")
ruleset(name="remote") {{
  action(type="omfile" file="{log}" template="RSYSLOG_SyslogProtocol23Format")
}}
"#,
            work = work.to_str().unwrap(),
            d = d.to_str().unwrap(),
            cert = self.cert,
            port = self.port,
            log = self.log().to_str().unwrap(),
        );
        std::fs::write(d.join("rsyslog.conf"), conf).unwrap();
        let child = Command::new("timeout")
            .args(["120", "rsyslogd", "-n", "-f"])
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("rsyslog.stderr")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "rsyslogd did not listen: {}",
                std::fs::read_to_string(d.join("rsyslog.stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (to timeout, which passes it on) and wait; then SIGKILL rsyslogd itself, by
    /// the pid it wrote, and timeout.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = rustix::process::Pid::from_raw(c.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let daemon = std::fs::read_to_string(self.dir.join("rsyslog.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw);
            if let Some(d) = daemon {
                let _ = rustix::process::kill_process(d, rustix::process::Signal::KILL);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The seqs of the kmsentry records stored so far (with duplicates).
    fn seqs(&self) -> Vec<u64> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.find(" {\"ts\"").map(|i| &l[i + 1..]))
            .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .filter_map(|v| v["seq"].as_u64())
            .collect()
    }

    fn wait_for_seq(&self, seq: u64, within: Duration) {
        let t = Instant::now();
        while !self.seqs().contains(&seq) {
            assert!(
                t.elapsed() < within,
                "seq {seq} never reached the receiver; it has {:?}; rsyslog: {}",
                self.seqs(),
                std::fs::read_to_string(self.dir.join("rsyslog.stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    /// SIGTERM first: `timeout` passes it on to rsyslogd, where a SIGKILL of `timeout` alone
    /// would leave rsyslogd running.
    fn drop(&mut self) {
        self.stop();
    }
}

fn target(dir: &Path, port: u16, queue_max: u64) -> TlsTarget {
    let mut t = TlsTarget::new("127.0.0.1".into(), port);
    t.ca = dir.join("ca.pem");
    t.cert = dir.join("client.pem");
    t.key = dir.join("client.key");
    t.queue_dir = dir.join("queue");
    t.queue_max_bytes = queue_max;
    t
}

fn alerter(env: &TestEnv, t: TlsTarget, sign: Option<&Path>) -> Alerter {
    Alerter::new(AlertConfig {
        host: "host-1".into(),
        file: Some(env.path("alerts.jsonl")),
        keep: 3,
        syslog: vec![SyslogTarget::Tls(Box::new(t))],
        sign_key: sign.map(Path::to_path_buf),
        checkpoint_every: sign.map(|_| 7),
        ..AlertConfig::default()
    })
    .unwrap()
}

fn modified(i: u64) -> Alert {
    let mut a = Alert::new(Kind::Modified, Severity::High);
    a.path = Some(format!("/etc/kms/key{i}.pem\nwith a newline and \u{e9}").into_bytes());
    a.group = Some("client-keys".into());
    a.changes = vec!["content"];
    a
}

/// Tick the alerter (as the daemon does) until the local log holds a record with `rule`.
fn wait_for_rule(
    env: &TestEnv,
    al: &mut Alerter,
    rule: &str,
    within: Duration,
) -> serde_json::Value {
    let t = Instant::now();
    loop {
        al.tick().unwrap();
        if let Some(a) = local_kinds(env).into_iter().find(|a| a["rule"] == rule) {
            return a;
        }
        assert!(t.elapsed() < within, "no `{rule}` alert");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_verify(env: &TestEnv, args: &[&OsStr]) -> Run {
    let mut a = vec![OsStr::new("log"), OsStr::new("verify")];
    a.extend_from_slice(args);
    env.run(&a)
}

fn local_kinds(env: &TestEnv) -> Vec<serde_json::Value> {
    std::fs::read_to_string(env.path("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_receiver_outage_and_restart_lose_nothing_and_its_file_verifies() {
    let Some(env) = tls_env() else { return };
    let d = env.dir.path();
    let key = env.path("log.key");
    kmsentry::store::signing::write_keypair(&kmsentry::store::signing::generate().unwrap(), &key)
        .unwrap();
    let mut rx = Receiver::new(d, "server");
    // The receiver is down at start: a warning and a backlog, not a failure.
    let mut al = alerter(&env, target(d, rx.port, 1 << 20), Some(&key));
    al.emit(Alert::new(Kind::Started, Severity::Info)).unwrap();
    for i in 0..20 {
        al.emit(modified(i)).unwrap();
    }
    rx.start();
    let last = al.head().0;
    rx.wait_for_seq(last, Duration::from_secs(30));

    // A restart mid-stream: records keep coming while it is down and while it comes back.
    for i in 20..40 {
        al.emit(modified(i)).unwrap();
    }
    rx.stop();
    for i in 40..60 {
        al.emit(modified(i)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    rx.start();
    for i in 60..80 {
        al.emit(modified(i)).unwrap();
    }
    al.emit(Alert::new(Kind::Stopped, Severity::Info)).unwrap();
    let last = al.head().0;
    rx.wait_for_seq(last, Duration::from_secs(60));
    drop(al);
    rx.stop();

    let log = rx.log();
    let pubkey = env.path("log.key.pub");
    let r = log_verify(
        &env,
        &[
            p(&log),
            OsStr::new("--key"),
            p(&pubkey),
            OsStr::new("--stopped"),
            OsStr::new("--format"),
            OsStr::new("json"),
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v = r.json();
    assert_eq!(v["records"], last, "{v}");
    assert_eq!(v["verified"], last);
    assert_eq!(v["host"], "host-1");
    assert!(v["checkpoints"].as_u64().unwrap() >= 10);
    // The local log says the same.
    let r = log_verify(&env, &[p(&env.path("alerts.jsonl"))]);
    assert_eq!(r.code, 0, "{}", r.stdout);

    // The receiver's file holds the canonical records byte for byte: tampering there is
    // named like in the JSONL log. Work on de-duplicated copies of its lines.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut seen = std::collections::HashSet::new();
    let uniq: Vec<&str> = text.lines().filter(|l| seen.insert(*l)).collect();
    let check = |lines: &[&str]| {
        let f = env.path("tampered.log");
        std::fs::write(&f, lines.join("\n") + "\n").unwrap();
        log_verify(&env, &[p(&f), OsStr::new("--format"), OsStr::new("json")])
    };
    let line_of = |seq: u64| {
        uniq.iter()
            .position(|l| l.contains("{\"ts\":") && l.contains(&format!(",\"seq\":{seq},")))
            .unwrap()
    };
    // Dropped.
    let mut ls = uniq.clone();
    ls.remove(line_of(30));
    let v = check(&ls).json();
    assert_eq!(v["intact"], false);
    assert!(v["problems"][0]["why"]
        .as_str()
        .unwrap()
        .contains("seq jumps from 29 to 31: 1 record(s) missing"));
    // Edited.
    let mut ls = uniq.clone();
    let i = line_of(33);
    let edited = ls[i].replacen("\"severity\":\"high\"", "\"severity\":\"low\"", 1);
    ls[i] = &edited;
    let v = check(&ls).json();
    assert_eq!(v["problems"][0]["line"], i as u64 + 1);
    assert!(v["problems"][0]["why"]
        .as_str()
        .unwrap()
        .contains("was changed"));
    assert_eq!(
        v["verified"].as_u64().unwrap() + 1,
        v["records"].as_u64().unwrap()
    );
    // Reordered.
    let mut ls = uniq.clone();
    let (a, b) = (line_of(40), line_of(41));
    ls.swap(a, b);
    let v = check(&ls).json();
    let why: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["why"].as_str().unwrap())
        .collect();
    assert!(
        why.iter()
            .any(|w| w.contains("seq 40 after 41: out of order")),
        "{why:?}"
    );
}

#[test]
fn a_receiver_with_the_wrong_certificate_is_refused_and_gets_nothing() {
    let Some(env) = tls_env() else { return };
    let d = env.dir.path();
    let mut rx = Receiver::new(d, "impostor");
    rx.start();
    let mut al = alerter(&env, target(d, rx.port, 1 << 20), None);
    al.emit(Alert::new(Kind::Started, Severity::Info)).unwrap();
    al.emit(modified(1)).unwrap();
    // The refusal becomes a health alert in the chain (via tick, as the daemon calls it).
    let refused = wait_for_rule(&env, &mut al, "syslog-tls-refused", Duration::from_secs(20));
    let msg = refused["detail"]["message"].as_str().unwrap();
    assert!(
        msg.contains("the receiver's certificate was refused") && msg.contains("plain text"),
        "{msg}"
    );
    assert_eq!(refused["kind"], "health");
    drop(al);
    rx.stop();
    assert!(rx.seqs().is_empty(), "an impostor received records");
    let stored = std::fs::read(rx.log()).unwrap_or_default();
    assert!(!String::from_utf8(stored)
        .unwrap_or_default()
        .contains("key1.pem"));
}

#[test]
fn a_full_queue_says_so_once_then_drops_the_oldest() {
    let Some(env) = tls_env() else { return };
    let d = env.dir.path();
    let mut rx = Receiver::new(d, "server");
    let mut al = alerter(&env, target(d, rx.port, 16 << 10), None);
    for i in 0..200 {
        al.emit(modified(i)).unwrap();
    }
    let local = local_kinds(&env);
    let full: Vec<&serde_json::Value> = local
        .iter()
        .filter(|a| a["rule"] == "syslog-queue-full")
        .collect();
    assert_eq!(full.len(), 1, "one alert for the whole episode");
    let full_seq = full[0]["seq"].as_u64().unwrap();
    // The receiver comes back: it gets the newest records, including the full alert.
    rx.start();
    let last = al.head().0;
    rx.wait_for_seq(last, Duration::from_secs(30));
    let got = rx.seqs();
    assert!(!got.contains(&1), "the oldest were dropped");
    assert!(got.contains(&full_seq) || got.iter().all(|s| *s > full_seq));
    // Drained: a second alert says what was dropped (after the frames are confirmed).
    let dropped = wait_for_rule(
        &env,
        &mut al,
        "syslog-queue-dropped",
        Duration::from_secs(30),
    );
    assert_eq!(dropped["detail"]["first_seq"], 1);
    let n = dropped["detail"]["dropped"].as_u64().unwrap();
    assert!(n > 0);
    let last = al.head().0;
    rx.wait_for_seq(last, Duration::from_secs(30));
    drop(al);
    rx.stop();
    // The receiver's file names the gap; the local log is intact.
    let r = log_verify(&env, &[p(&rx.log())]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    let last_dropped = dropped["detail"]["last_seq"].as_u64().unwrap();
    assert!(
        r.stdout.contains(&format!(
            "the sender says its queue for this receiver was full and dropped seq 1–{last_dropped}"
        )),
        "{}",
        r.stdout
    );
    assert_eq!(log_verify(&env, &[p(&env.path("alerts.jsonl"))]).code, 0);
}

#[test]
fn watch_refuses_a_tls_target_without_certificates_or_with_a_bad_key() {
    let env = TestEnv::new();
    let d = env.dir.path();
    let r = env.run(&["watch", "--syslog", "tls:127.0.0.1:6514", "--run-for", "1"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--syslog-ca is required"), "{}", r.stderr);
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(std::env::var("CI").as_deref() != Ok("true"));
        return;
    }
    pki(d);
    let r = env.run(&[
        OsStr::new("watch"),
        OsStr::new("--syslog"),
        OsStr::new("tls:127.0.0.1:6514"),
        OsStr::new("--syslog-ca"),
        p(&d.join("ca.pem")),
        OsStr::new("--syslog-cert"),
        p(&d.join("client.pem")),
        OsStr::new("--syslog-key"),
        p(&d.join("server.key")),
        OsStr::new("--syslog-queue"),
        p(&d.join("q")),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("server.key: does not fit the certificate"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_daemon_sends_its_whole_signed_log_to_the_receiver_and_it_verifies() {
    require_root!();
    let Some(env) = tls_env() else { return };
    let d = env.dir.path();
    let mut rx = Receiver::new(d, "server");
    rx.start();
    let conf = d.join("t/conf/kms.yaml");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(&conf, b"endpoint: kms.example\n").unwrap();
    let policy = env.path("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\ngroups:\n  - name: conf\n    class: kms-config\n    paths: [{}]\n",
            conf.parent().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    let r = env.run(&[
        OsStr::new("baseline"),
        OsStr::new("init"),
        OsStr::new("--policy"),
        p(&policy),
        OsStr::new("--db"),
        p(&env.db()),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let key = env.path("log.key");
    kmsentry::store::signing::write_keypair(&kmsentry::store::signing::generate().unwrap(), &key)
        .unwrap();
    let alerts = env.path("alerts.jsonl");
    let target = format!("tls:127.0.0.1:{}", rx.port);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kmsentry"))
        .arg("watch")
        .arg("--policy")
        .arg(&policy)
        .arg("--db")
        .arg(env.db())
        .arg("--alerts")
        .arg(&alerts)
        .arg("--status-socket")
        .arg(env.path("status.sock"))
        .args(["--syslog", &target])
        .arg("--syslog-ca")
        .arg(d.join("ca.pem"))
        .arg("--syslog-cert")
        .arg(d.join("client.pem"))
        .arg("--syslog-key")
        .arg(d.join("client.key"))
        .arg("--syslog-queue")
        .arg(env.path("queue"))
        .arg("--sign-key")
        .arg(&key)
        .args([
            "--checkpoint-every",
            "3",
            "--seccomp",
            "kill",
            "--run-for",
            "60",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.path("daemon.stderr")).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(env.path("daemon.stderr")).unwrap_or_default();
    let t = Instant::now();
    while !local_kinds(&env).iter().any(|a| a["kind"] == "started") {
        assert!(
            child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(30),
            "no `started`: {}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..5 {
        std::fs::write(&conf, format!("endpoint: kms{i}.example\n")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    while local_kinds(&env)
        .iter()
        .filter(|a| a["kind"] == "modified")
        .count()
        < 5
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{:?}",
            local_kinds(&env)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}: {}", stderr());
    // The daemon drained its queue before exiting: `stopped` and its checkpoint arrived.
    let last = local_kinds(&env).last().unwrap()["seq"].as_u64().unwrap();
    rx.wait_for_seq(last, Duration::from_secs(10));
    rx.stop();
    let r = log_verify(
        &env,
        &[
            p(&rx.log()),
            OsStr::new("--key"),
            p(&env.path("log.key.pub")),
            OsStr::new("--stopped"),
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("every record is covered by a signature"),
        "{}",
        r.stdout
    );
}

/// `cargo test --test syslog_tls measure -- --ignored --nocapture`: what the TLS sink adds to
/// the alerter's emit (file only vs file + TLS queue), and how fast a real rsyslog receives.
#[test]
#[ignore]
fn measure_tls_sink_cost() {
    let Some(env) = tls_env() else { return };
    let n = 2000u64;
    let d = env.dir.path();
    let mut rx = Receiver::new(d, "server");
    rx.start();
    let file_only = TestEnv::new();
    let mut plain = Alerter::new(AlertConfig {
        host: "host-1".into(),
        file: Some(file_only.path("alerts.jsonl")),
        ..AlertConfig::default()
    })
    .unwrap();
    let mut tls = alerter(&env, target(d, rx.port, 64 << 20), None);
    // The queue alone (no JSONL file, so no fsync): what the daemon's alert thread pays.
    let mut rx2 = Receiver::new(&d.join("rx2"), "server");
    std::fs::create_dir_all(d.join("rx2")).unwrap();
    for f in ["ca.pem", "server.pem", "server.key"] {
        std::fs::copy(d.join(f), d.join("rx2").join(f)).unwrap();
    }
    rx2.start();
    let mut t2 = target(d, rx2.port, 64 << 20);
    t2.queue_dir = d.join("queue2");
    let mut queue_only = Alerter::new(AlertConfig {
        host: "host-1".into(),
        syslog: vec![SyslogTarget::Tls(Box::new(t2))],
        ..AlertConfig::default()
    })
    .unwrap();
    let (mut t_plain, mut t_tls, mut t_queue) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    // Interleaved, so all see the same machine load.
    for i in 0..n {
        let t = Instant::now();
        plain.emit(modified(i)).unwrap();
        t_plain += t.elapsed();
        let t = Instant::now();
        tls.emit(modified(i)).unwrap();
        t_tls += t.elapsed();
        let t = Instant::now();
        queue_only.emit(modified(i)).unwrap();
        t_queue += t.elapsed();
    }
    eprintln!(
        "emit, TLS queue alone (no file), interleaved with the fsyncs of the others: {:?}/record",
        t_queue / n as u32
    );
    let t = Instant::now();
    for i in n..2 * n {
        queue_only.emit(modified(i)).unwrap();
    }
    eprintln!(
        "emit, TLS queue alone (no file), by itself: {:?}/record",
        t.elapsed() / n as u32
    );
    let sent = Instant::now();
    rx.wait_for_seq(n, Duration::from_secs(120));
    let drain = sent.elapsed();
    eprintln!(
        "emit, file only: {:?}/record; file + TLS queue: {:?}/record (ratio {:.2}); receiver had all {n} records {:?} after the last emit",
        t_plain / n as u32,
        t_tls / n as u32,
        t_tls.as_secs_f64() / t_plain.as_secs_f64(),
        drain
    );
}

#[test]
fn a_receiver_that_accepts_but_never_reads_does_not_slow_the_alerter() {
    let Some(env) = tls_env() else { return };
    let d = env.dir.path();
    // Accepts TCP connections and then does nothing: no handshake, no reads.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        l.set_nonblocking(true).unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(8) {
            if let Ok((c, _)) = l.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        conns.len()
    });
    let mut al = Alerter::new(AlertConfig {
        host: "host-1".into(),
        syslog: vec![SyslogTarget::Tls(Box::new(target(d, port, 1 << 20)))],
        ..AlertConfig::default()
    })
    .unwrap();
    let mut worst = Duration::ZERO;
    let t = Instant::now();
    for i in 0..500 {
        let e = Instant::now();
        al.emit(modified(i)).unwrap();
        worst = worst.max(e.elapsed());
    }
    assert!(
        worst < Duration::from_millis(200) && t.elapsed() < Duration::from_secs(5),
        "an emit waited {worst:?} ({:?} for 500) on a stuck receiver",
        t.elapsed()
    );
    assert!(held.join().unwrap() >= 1, "the sender never connected");
    // Everything is still queued on disk for when the receiver recovers.
    let queued: u64 = std::fs::read_dir(d.join("queue"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension() == Some("seg".as_ref()))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(queued > 500 * 100, "{queued} bytes queued");
}
