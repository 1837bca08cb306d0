//! `logs scan` over what real services wrote, each started by the test in its temp
//! directory and never outliving it (tests/util/services.rs): an sshd on a high 127.0.0.1
//! port (`sshd -E`) with real failed password logins followed by a real public-key login, and
//! a real sudo refusing wrong passwords, logged through a private rsyslogd (Debian's file
//! format) whose socket is bound over /dev/log only inside a private mount namespace. Root
//! only; under CI=true they run or fail.

mod util;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use util::services::*;
use util::*;

fn scan(env: &TestEnv, log: &Path, logsource: &str) -> (i32, serde_json::Value) {
    let (code, v, _) = scan_source(
        env,
        log,
        &format!("    format: auto\n    logsource: {logsource}"),
    );
    (code, v)
}

#[test]
fn sshd_failed_logins_then_a_success_raise_the_brute_force_rule() {
    require_root!();
    if !need("/usr/sbin/sshd") || !need("sshpass") || !need("ssh") {
        return;
    }
    let env = TestEnv::new();
    let d = env.dir.path();
    let _ = std::fs::create_dir_all("/run/sshd");
    let key = d.join("host_ed25519");
    let id = d.join("id_ed25519");
    for k in [&key, &id] {
        let o = run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(k));
        assert!(o.status.success(), "ssh-keygen: {o:?}");
    }
    std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys")).unwrap();
    let port = free_port();
    let log = d.join("sshd.log");
    let conf = d.join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nMaxAuthTries 3\nLogLevel INFO\n",
            key.to_str().unwrap(),
            d.join("sshd.pid").to_str().unwrap(),
            d.join("authorized_keys").to_str().unwrap()
        ),
    )
    .unwrap();
    let _sshd = Service::spawn(
        Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(&conf)
            .arg("-E")
            .arg(&log),
    );
    wait_for("sshd to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let known = d.join("known_hosts");
    let ssh_opts = |c: &mut Command| {
        c.arg("-p")
            .arg(port.to_string())
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.to_str().unwrap()));
        for o in [
            "UpdateHostKeys=no",
            "StrictHostKeyChecking=no",
            "ConnectTimeout=10",
            "LogLevel=ERROR",
        ] {
            c.args(["-o", o]);
        }
    };
    for _ in 0..3 {
        let mut c = Command::new("timeout");
        c.args(["30", "sshpass", "-p", "not-the-password", "ssh"]);
        ssh_opts(&mut c);
        c.args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "NumberOfPasswordPrompts=1",
        ]);
        c.arg("kmsentry-no-such-user@127.0.0.1").arg("true");
        let o = run(&mut c);
        assert!(!o.status.success(), "a wrong password logged in: {o:?}");
    }
    let mut c = Command::new("timeout");
    c.args(["30", "ssh"]);
    ssh_opts(&mut c);
    c.args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(&id)
        .arg("root@127.0.0.1")
        .arg("true");
    let o = run(&mut c);
    assert!(
        o.status.success(),
        "public-key login failed: {}",
        String::from_utf8(o.stderr).unwrap_or_default()
    );
    wait_for(
        "sshd to log the accepted login",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Accepted publickey for root")
        },
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("Failed password for invalid user kmsentry-no-such-user"),
        "sshd log: {text}"
    );

    let (code, v) = scan(&env, &log, "{product: linux, service: sshd}");
    let ids = rule_ids(&v);
    assert_eq!(code, 1, "{v}");
    assert!(
        ids.iter().any(|i| i == "kmsentry-sshd-failure-burst"),
        "{ids:?}"
    );
    assert!(
        ids.iter().any(|i| i == "kmsentry-sshd-brute-success"),
        "{ids:?}"
    );
    // Inputs of a correlation do not alert on their own.
    assert!(
        !ids.iter().any(|i| i == "kmsentry-sshd-accepted"),
        "{ids:?}"
    );
    let brute = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "kmsentry-sshd-brute-success")
        .unwrap();
    assert_eq!(brute["severity"], "critical");
    assert_eq!(brute["type"], "temporal_ordered");
    assert!(brute["log"]["offset"].as_u64().unwrap() > 0);

    // Only the failures, no success: the burst, but no brute force that worked.
    let only_failures: String = text
        .lines()
        .filter(|l| !l.contains("Accepted"))
        .map(|l| format!("{l}\n"))
        .collect();
    let f = d.join("failures.log");
    std::fs::write(&f, only_failures).unwrap();
    let (_, v) = scan(&env, &f, "{product: linux, service: sshd}");
    let ids = rule_ids(&v);
    assert!(
        ids.iter().any(|i| i == "kmsentry-sshd-failure-burst"),
        "{ids:?}"
    );
    assert!(
        !ids.iter().any(|i| i == "kmsentry-sshd-brute-success"),
        "{ids:?}"
    );
}

#[test]
fn sudo_wrong_passwords_logged_by_a_real_rsyslog_raise_the_sudo_rules() {
    require_root!();
    if !need("sudo") || !need("rsyslogd") || !need("unshare") || !need("runuser") {
        return;
    }
    let env = TestEnv::new();
    let d = env.dir.path();
    // rsyslogd and sudo must reach the directory as `nobody` would not need to; keep it 0755.
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sock = d.join("log.sock");
    let auth = d.join("auth.log");
    let conf = d.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{dir}\")\nmodule(load=\"imuxsock\" SysSock.Use=\"off\")\ninput(type=\"imuxsock\" Socket=\"{sock}\")\nauth,authpriv.* action(type=\"omfile\" file=\"{auth}\" template=\"RSYSLOG_FileFormat\")\n",
            dir = d.to_str().unwrap(),
            sock = sock.to_str().unwrap(),
            auth = auth.to_str().unwrap()
        ),
    )
    .unwrap();
    let _rsyslog = Service::spawn(
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(d.join("rsyslog.pid")),
    );
    wait_for("rsyslogd's socket", Duration::from_secs(20), || {
        sock.exists()
    });
    // A private /dev for sudo only: the real device nodes bound in, `log` pointing at the
    // private socket. Nothing outside this mount namespace sees it.
    let script = format!(
        r#"set -e
D={dir}/dev; mkdir -p "$D"
for n in null zero random urandom tty full; do touch "$D/$n"; mount --bind "/dev/$n" "$D/$n"; done
ln -s /proc/self/fd "$D/fd"; ln -s {sock} "$D/log"
mount --rbind "$D" /dev
for i in 1 2 3; do printf 'wrong\nwrong\nwrong\n' | timeout 30 runuser -u nobody -- sudo -S -k -p '' true || true; done
"#,
        dir = d.to_str().unwrap(),
        sock = sock.to_str().unwrap()
    );
    let o = run(Command::new("timeout").args([
        "90",
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    assert!(o.status.success(), "sudo runs failed: {o:?}");
    wait_for(
        "rsyslogd to write sudo's lines",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&auth)
                .unwrap_or_default()
                .matches("sudo")
                .count()
                >= 3
        },
    );
    let text = std::fs::read_to_string(&auth).unwrap();
    let (code, v) = scan(&env, &auth, "{product: linux, service: sudo}");
    let ids = rule_ids(&v);
    assert_eq!(code, 1, "auth.log: {text}\n{v}");
    assert!(
        ids.iter().any(|i| i == "kmsentry-sudo-failure-burst"),
        "auth.log: {text}\n{ids:?}"
    );
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "kmsentry-sudo-failure-burst")
        .unwrap();
    assert!(f["time"].is_null() || f["time"].is_string());
    assert_eq!(v["summary"]["counts"]["unparseable"], 0, "{v}");
}
