//! `logs scan` over a real PyKMIP server's log: the server runs from the venv scripts/test
//! makes (`pip install pykmip`; `KMSENTRY_PYKMIP` names another venv), on a high 127.0.0.1
//! port with client-certificate TLS and its own CA, certificates made by the test with
//! openssl; it is killed on drop and never outlives the test. PyKMIP's own client creates,
//! gets and destroys a key with a good certificate, then connects with a certificate from a
//! CA the server does not trust, a trusted certificate for servers only, and a trusted one
//! without any extended key usage. Root only (as the other service tests); under CI=true it runs or fails.

mod util;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use util::services::*;
use util::*;

fn venv() -> PathBuf {
    std::env::var_os("KMSENTRY_PYKMIP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/kmsentry-test/pykmip"))
}

fn openssl(d: &Path, args: &[&str]) {
    run_ok(
        &format!("openssl {}", args.join(" ")),
        Command::new("openssl").args(args).current_dir(d),
    );
}

/// A key and certificate `name` with common name `cn` and extended key usage `eku`, signed by
/// `ca` (or the CA itself when `ca` is None); no extended key usage when `eku` is empty.
fn cert(d: &Path, name: &str, cn: &str, eku: &str, ca: Option<&str>) {
    let key = format!("{name}.key");
    let crt = format!("{name}.crt");
    let subj = format!("/CN={cn}");
    match ca {
        None => openssl(
            d,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-subj", &subj,
                "-days", "2", "-out", &crt,
            ],
        ),
        Some(ca) => {
            let csr = format!("{name}.csr");
            let ext = format!("{name}.ext");
            std::fs::write(
                d.join(&ext),
                format!(
                    "basicConstraints=CA:FALSE\n{}subjectAltName=IP:127.0.0.1,DNS:localhost\n",
                    if eku.is_empty() {
                        String::new()
                    } else {
                        format!("extendedKeyUsage={eku}\n")
                    }
                ),
            )
            .unwrap();
            openssl(
                d,
                &[
                    "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-subj",
                    &subj, "-out", &csr,
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &format!("{ca}.crt"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &crt,
                ],
            );
        }
    }
}

/// `pykmip-server`, with every process it forks (multiprocessing's manager, the policy
/// monitor) dying with its parent: the death signal is reset on fork, so the child sets it
/// again, and leaves at once if the parent is already gone.
const SERVER: &str = r#"import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
parent = [0]
def before():
    parent[0] = os.getpid()
def after_in_child():
    if libc.prctl(1, int(signal.SIGKILL)) != 0:  # PR_SET_PDEATHSIG
        os._exit(70)
    if os.getppid() != parent[0]:
        os._exit(0)
os.register_at_fork(before=before, after_in_child=after_in_child)
from kmip.services.server.server import main
sys.exit(main())
"#;

const CLIENT: &str = r#"import sys
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient
d, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = ProxyKmipClient(hostname="127.0.0.1", port=port, cert=f"{d}/{name}.crt",
                    key=f"{d}/{name}.key", ca=f"{d}/ca.crt", ssl_version="PROTOCOL_SSLv23",
                    config_file=f"{d}/client.conf")
try:
    with c:
        uid = c.create(enums.CryptographicAlgorithm.AES, 256)
        c.get(uid)
        c.destroy(uid)
except Exception as e:
    print("refused:", type(e).__name__, e)
    sys.exit(3)
print("ok", uid)
"#;

#[test]
fn a_real_pykmip_server_logs_a_destroy_and_refused_client_certificates() {
    require_root!();
    let server_bin = venv().join("bin/pykmip-server");
    let python = venv().join("bin/python");
    if !need(server_bin.to_str().unwrap()) || !need("openssl") {
        return;
    }
    let env = TestEnv::new();
    let d = env.dir.path();
    cert(d, "ca", "kmsentry test CA", "", None);
    cert(d, "rogue", "rogue CA", "", None);
    cert(d, "server", "localhost", "serverAuth", Some("ca"));
    cert(d, "client", "kms-client", "clientAuth", Some("ca"));
    cert(d, "untrusted", "kms-client", "clientAuth", Some("rogue"));
    cert(d, "serveronly", "kms-client", "serverAuth", Some("ca"));
    cert(d, "noeku", "kms-client", "", Some("ca"));
    std::fs::create_dir(d.join("policies")).unwrap();
    std::fs::write(d.join("client.conf"), "").unwrap();
    let port = free_port();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    std::fs::write(
        d.join("server.conf"),
        format!(
            "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={}\nkey_path={}\nca_path={}\nauth_suite=TLS1.2\npolicy_path={}\nenable_tls_client_auth=True\nlogging_level=INFO\ndatabase_path={}\n",
            p("server.crt"),
            p("server.key"),
            p("ca.crt"),
            p("policies"),
            p("kmip.db")
        ),
    )
    .unwrap();
    let log = d.join("server.log");
    let mut server = Service::spawn_logging(
        Command::new(&python)
            .args(["-c", SERVER])
            .arg("-f")
            .arg(d.join("server.conf"))
            // An absolute path: PyKMIP creates the log's directory and fails on "".
            .arg("-l")
            .arg(&log)
            .current_dir(d),
        &d.join("server.out"),
        // Python's logging flushes every record: nothing to lose to SIGKILL.
        None,
    );
    // The log line, not a probe: a bare TCP connect would itself be a failed handshake.
    wait_for("pykmip-server to serve", Duration::from_secs(60), || {
        assert!(
            server.running(),
            "pykmip-server exited: {}",
            std::fs::read_to_string(d.join("server.out")).unwrap_or_default()
        );
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Starting connection service")
    });
    std::fs::write(d.join("client.py"), CLIENT).unwrap();
    let client = |name: &str| {
        run(Command::new("timeout")
            .arg("60")
            .arg(&python)
            .arg(d.join("client.py"))
            .arg(d)
            .arg(port.to_string())
            .arg(name)
            .current_dir(d))
    };
    let o = client("client");
    assert!(o.status.success(), "good client refused: {o:?}");
    let good = std::fs::read_to_string(&log).unwrap();
    for name in ["untrusted", "serveronly", "noeku"] {
        let o = client(name);
        assert_eq!(o.status.code(), Some(3), "{name} was not refused: {o:?}");
    }
    let t = std::time::Instant::now();
    let refused = |t: &str| {
        t.matches(" - ERROR - [SSL: CERTIFICATE_VERIFY_FAILED]")
            .count()
            == 2
            && t.contains("Failure verifying the client certificate")
    };
    while !refused(&std::fs::read_to_string(&log).unwrap_or_default())
        && t.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(refused(&text), "the refusals were not logged: {text}");
    drop(server);
    assert!(text.contains("Processing operation: Destroy"), "{text}");

    let source = "    format: regex\n    pattern: '^(?P<asctime>\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d,\\d+) - (?P<logger>\\S+) - (?P<level>[A-Z]+) - (?P<message>.*)$'\n    logsource: {product: pykmip, service: server}";
    // The good client's session alone: its Destroy, no TLS failure.
    let quiet = d.join("good.log");
    std::fs::write(&quiet, &good).unwrap();
    let (code, v, _) = scan_source(&env, &quiet, source);
    assert_eq!(code, 1, "{good}\n{v}");
    assert_eq!(rule_ids(&v), ["kmsentry-pykmip-destroy"], "{good}\n{v}");

    let (code, v, _) = scan_source(&env, &log, source);
    assert_eq!(code, 1, "{text}\n{v}");
    let ids = rule_ids(&v);
    assert_eq!(
        ids.iter()
            .filter(|i| *i == "kmsentry-pykmip-destroy")
            .count(),
        1,
        "{ids:?}"
    );
    let tls: Vec<_> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "kmsentry-pykmip-tls-failure")
        .collect();
    // One per refused client. OpenSSL refuses the untrusted CA and the serverAuth-only
    // certificate in the handshake; PyKMIP itself refuses the certificate without any
    // extended key usage.
    assert_eq!(tls.len(), 3, "{text}\n{v}");
    assert!(tls.iter().all(|f| f["severity"] == "high"), "{v}");
    let msg = |i: usize| tls[i]["fields"]["message"].as_str().unwrap().to_string();
    assert!(
        msg(0).contains("unable to get local issuer certificate"),
        "{v}"
    );
    assert!(msg(1).contains("unsuitable certificate purpose"), "{v}");
    assert_eq!(msg(2), "Failure verifying the client certificate.", "{v}");
}
