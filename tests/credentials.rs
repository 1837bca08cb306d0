//! Credential judgement through the real binary: `audit` posture rules, facts in the baseline,
//! rotation-aware `verify` and `baseline update --accept-rotations`, XCCDF validated against
//! the NIST schema, and `policy suggest`. Keys and certificates are generated fresh with the
//! `openssl` CLI (and `ssh-keygen`) once per test process; nothing secret is committed.

mod util;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use util::*;

const CA_CONFIG: &str = "\
[req]
distinguished_name = dn
[dn]
[ca]
default_ca = ca_section
[ca_section]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = copy
[any]
commonName = supplied
";

/// Every generated file, by name.
struct Pki(HashMap<String, Vec<u8>>);

impl Pki {
    fn get(&self, name: &str) -> &[u8] {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("no generated file {name}"))
    }
}

fn openssl(dir: &Path, args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .env("OPENSSL_CONF", dir.join("openssl.cnf"))
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        std::str::from_utf8(&out.stderr).unwrap_or("(stderr not UTF-8)")
    );
}

/// The PKI, or `None` when `openssl` is missing outside CI.
fn pki() -> Option<&'static Pki> {
    static PKI: OnceLock<Option<Pki>> = OnceLock::new();
    PKI.get_or_init(|| {
        if !on_path("openssl") {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but `openssl` is not on PATH"
            );
            eprintln!("skipped: credential tests need the `openssl` CLI");
            return None;
        }
        Some(generate())
    })
    .as_ref()
}

macro_rules! require_pki {
    () => {
        match pki() {
            Some(p) => p,
            None => return,
        }
    };
}

fn generate() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("openssl.cnf"), CA_CONFIG).unwrap();
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("serial"), "1000\n").unwrap();
    std::fs::write(
        d.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    )
    .unwrap();
    let ec = "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out";
    for k in [
        "ca", "rogue-ca", "client", "other", "orphan", "expired", "expiring",
    ] {
        openssl(d, &format!("{ec} {k}.key"));
    }
    openssl(
        d,
        "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out weak.key",
    );
    let ca = |key: &str, out: &str| {
        openssl(
            d,
            &format!(
                "req -x509 -key {key} -days 3650 -subj /CN=KMS-Test-CA \
                 -addext basicConstraints=critical,CA:TRUE -addext subjectKeyIdentifier=hash \
                 -out {out}"
            ),
        )
    };
    ca("ca.key", "ca.crt");
    // Same name as the real CA, different key: what an attacker would make.
    ca("rogue-ca.key", "rogue-ca.crt");
    let leaf = |key: &str, cn: &str, issuer: &str, extra: &str, out: &str| {
        openssl(
            d,
            &format!("req -new -key {key} -subj /CN={cn} -out {out}.csr"),
        );
        openssl(
            d,
            &format!(
                "x509 -req -in {out}.csr -CA {issuer}.crt -CAkey {issuer}.key {extra} \
                 -extfile leaf.ext -out {out}"
            ),
        );
    };
    leaf("client.key", "client", "ca", "-days 365", "client.crt");
    // The renewal: same key, subject and issuer, later validity.
    leaf(
        "client.key",
        "client",
        "ca",
        "-days 400",
        "client-renewed.crt",
    );
    leaf("other.key", "other", "ca", "-days 365", "other.crt");
    // Not a renewal: same subject and issuer name, signed by the rogue CA.
    leaf(
        "other.key",
        "other",
        "rogue-ca",
        "-days 400",
        "other-forged.crt",
    );
    leaf("expiring.key", "expiring", "ca", "-days 5", "expiring.crt");
    leaf("client.key", "sha1", "ca", "-days 365 -sha1", "sha1.crt");
    openssl(
        d,
        "req -x509 -key weak.key -days 365 -subj /CN=weak -out weak.crt",
    );
    // Expired: `openssl ca` is the only OpenSSL 3.0 command that sets past dates.
    openssl(
        d,
        "req -new -key expired.key -subj /CN=expired -out expired.csr",
    );
    openssl(
        d,
        "ca -batch -cert ca.crt -keyfile ca.key -in expired.csr -startdate 20200101000000Z \
         -enddate 20200102000000Z -notext -out expired.crt",
    );
    openssl(d, "x509 -in client.crt -outform DER -out client.crt.der");
    openssl(
        d,
        "pkcs8 -topk8 -v2 aes-256-cbc -passout pass:x -in other.key -out other-enc.key",
    );
    if on_path("ssh-keygen") {
        let st = Command::new("ssh-keygen")
            .args(["-t", "ed25519", "-N", "", "-q", "-C", "t", "-f", "ssh.key"])
            .current_dir(d)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let mut files = HashMap::new();
    for e in std::fs::read_dir(d).unwrap() {
        let e = e.unwrap();
        files.insert(
            e.file_name().into_string().unwrap(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    Pki(files)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn audit(env: &TestEnv, format: &str) -> Run {
    env.run(&[
        OsStr::new("audit"),
        OsStr::new("--policy"),
        env.path("policy.yaml").as_os_str(),
        OsStr::new("--root"),
        env.root().as_os_str(),
        OsStr::new("--format"),
        OsStr::new(format),
    ])
}

/// (path, rule) of every posture finding.
fn rules(v: &serde_json::Value) -> BTreeSet<(String, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "posture")
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const AUDIT_POLICY: &str = "\
version: 1
groups:
  - name: keys
    class: private-key
    paths: [/etc/kms/keys]
  - name: certs
    class: client-cert
    paths: [/etc/kms/certs]
  - name: ca
    class: ca-cert
    paths: [/etc/kms/ca]
";

/// An image with one file per posture case, plus a correct key/certificate pair.
fn posture_env(pki: &Pki) -> TestEnv {
    let env = TestEnv::new();
    env.policy(AUDIT_POLICY);
    let key = |name: &str, data: &[u8], mode: u32| {
        let p = format!("/etc/kms/keys/{name}");
        env.write(&p, data);
        env.chmod(&p, mode);
    };
    key("client.key", pki.get("client.key"), 0o600);
    key("other.key", pki.get("other-enc.key"), 0o640); // encrypted, group-readable
    key("orphan.key", pki.get("orphan.key"), 0o600); // no certificate anywhere
    key("weak.key", pki.get("weak.key"), 0o600);
    key("expired.key", pki.get("expired.key"), 0o600);
    key("expiring.key", pki.get("expiring.key"), 0o600);
    key(
        "corrupt.key",
        b"-----BEGIN PRIVATE KEY-----\nMIIB*not base64*\n-----END PRIVATE KEY-----\n",
        0o600,
    );
    if let Some(ssh) = pki.0.get("ssh.key") {
        key("ssh.key", ssh, 0o644); // OpenSSH key readable by everyone
    }
    let cert = |name: &str, data: &[u8]| env.write(&format!("/etc/kms/certs/{name}"), data);
    cert("client.crt", pki.get("client.crt"));
    cert("client.der", pki.get("client.crt.der"));
    cert("expired.crt", pki.get("expired.crt"));
    cert("expiring.crt", pki.get("expiring.crt"));
    cert("weak.crt", pki.get("weak.crt"));
    cert("sha1.crt", pki.get("sha1.crt"));
    // A certificate whose key is not on the host.
    cert("other.crt", pki.get("other.crt"));
    env.write("/etc/kms/ca/ca.crt", pki.get("ca.crt"));
    // A bundle whose second certificate is a leaf: not a CA.
    env.write(
        "/etc/kms/ca/bundle.pem",
        &cat(&[pki.get("ca.crt"), pki.get("client.crt")]),
    );
    env.write(
        "/etc/kms/ca/broken.pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n",
    );
    env
}

#[test]
fn audit_flags_every_posture_case_with_its_rule_and_exits_1() {
    let pki = require_pki!();
    let env = posture_env(pki);
    let r = audit(&env, "json");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let v = r.json();
    let got = rules(&v);
    let want = [
        ("/etc/kms/keys/other.key", "KMS-KEY-PERM"),
        ("/etc/kms/keys/orphan.key", "KMS-KEY-NO-CERT"),
        ("/etc/kms/keys/weak.key", "KMS-WEAK-KEY"),
        ("/etc/kms/keys/corrupt.key", "KMS-CRED-UNPARSEABLE"),
        ("/etc/kms/certs/expired.crt", "KMS-CERT-EXPIRED"),
        ("/etc/kms/certs/expiring.crt", "KMS-CERT-EXPIRING"),
        ("/etc/kms/certs/weak.crt", "KMS-WEAK-KEY"),
        ("/etc/kms/certs/sha1.crt", "KMS-WEAK-SIGNATURE"),
        ("/etc/kms/certs/other.crt", "KMS-CERT-NO-KEY"),
        ("/etc/kms/ca/bundle.pem", "KMS-CA-NOT-CA"),
        ("/etc/kms/ca/broken.pem", "KMS-CRED-UNPARSEABLE"),
    ];
    for (path, rule) in want {
        assert!(
            got.contains(&(path.to_string(), rule.to_string())),
            "missing {rule} on {path}; got {got:#?}"
        );
    }
    if pki.0.contains_key("ssh.key") {
        assert!(got.contains(&("/etc/kms/keys/ssh.key".into(), "KMS-KEY-PERM".into())));
    }
    // The correct pair (PEM and DER certificate), the CA and the encrypted key's
    // certificate question (its key is opaque) raise nothing else.
    for quiet in [
        "/etc/kms/keys/client.key",
        "/etc/kms/certs/client.crt",
        "/etc/kms/certs/client.der",
        "/etc/kms/ca/ca.crt",
    ] {
        assert!(
            !got.iter().any(|(p, _)| p == quiet),
            "{quiet} should be clean: {got:#?}"
        );
    }
    // Severity and message are there; an encrypted, group-readable key is not critical.
    let perm = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/kms/keys/other.key" && f["rule"] == "KMS-KEY-PERM")
        .unwrap();
    assert_eq!(perm["severity"], "medium");
    assert!(perm["message"].as_str().unwrap().contains("0640"));
    assert_eq!(v["summary"]["posture"], got.len());
    // Human output names rules; SARIF has one rule per check with help text.
    let h = audit(&env, "human");
    assert_eq!(h.code, 1);
    assert!(h.stdout.contains("POSTURE") && h.stdout.contains("KMS-CERT-EXPIRED"));
    let s = audit(&env, "sarif").json();
    let rules_defined: Vec<&str> = s["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        rules_defined.contains(&"KMS-KEY-PERM") && rules_defined.contains(&"KMS-PROVIDER-VERSION")
    );
    let results = s["runs"][0]["results"].as_array().unwrap();
    assert!(results
        .iter()
        .any(|r| r["ruleId"] == "KMS-CERT-EXPIRED" && r["level"] == "error"));
    let j = audit(&env, "junit");
    assert!(j.stdout.contains("KMS-WEAK-SIGNATURE") && j.stdout.contains("<testsuite"));
}

#[test]
fn key_owner_and_provider_binaries_are_judged() {
    require_root!();
    let pki = require_pki!();
    let Some(lib) = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib64/libc.so.6",
        "/lib/aarch64-linux-gnu/libc.so.6",
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok()) else {
        eprintln!("skipped: no libc.so.6 to stand in for a PKCS#11 module");
        return;
    };
    let env = TestEnv::new();
    env.policy(
        "version: 1\nexpiry_warning_days: 10\ngroups:\n  - name: keys\n    class: private-key\n    paths: [/etc/kms/keys]\n    access:\n      mode: audit\n      allow:\n        - exe: /usr/bin/kms-agent\n          uids: [4321]\n  - name: p11\n    class: provider-binary\n    paths: [/usr/lib/pkcs11]\n    expect:\n      build_id: \"00112233445566778899aabbccddeeff00112233\"\n      soname: libc.so.6\n",
    );
    env.write("/etc/kms/keys/a.key", pki.get("client.key"));
    env.write("/etc/kms/keys/b.key", pki.get("other.key"));
    env.chmod("/etc/kms/keys/a.key", 0o600);
    env.chmod("/etc/kms/keys/b.key", 0o600);
    std::os::unix::fs::chown(env.at("/etc/kms/keys/a.key"), Some(1234), None).unwrap();
    std::os::unix::fs::chown(env.at("/etc/kms/keys/b.key"), Some(4321), None).unwrap();
    env.write("/usr/lib/pkcs11/libgood.so", &lib);
    env.chmod("/usr/lib/pkcs11/libgood.so", 0o755);
    env.write("/usr/lib/pkcs11/libbad.so", &lib);
    env.chmod("/usr/lib/pkcs11/libbad.so", 0o4775);
    let v = audit(&env, "json").json();
    let got = rules(&v);
    assert!(
        got.contains(&("/etc/kms/keys/a.key".into(), "KMS-KEY-OWNER".into())),
        "{got:#?}"
    );
    // uid 4321 is allowed by the group's allow-list.
    assert!(
        !got.iter().any(|(p, _)| p == "/etc/kms/keys/b.key"),
        "{got:#?}"
    );
    for rule in [
        "KMS-PROVIDER-WRITABLE",
        "KMS-PROVIDER-SETUID",
        "KMS-PROVIDER-VERSION",
    ] {
        assert!(
            got.contains(&("/usr/lib/pkcs11/libbad.so".into(), rule.into())),
            "{rule}: {got:#?}"
        );
    }
    // The build-id differs (the SONAME matches): one version finding, no permission ones.
    let good: Vec<_> = got
        .iter()
        .filter(|(p, _)| p.ends_with("libgood.so"))
        .collect();
    assert_eq!(
        good,
        vec![&(
            "/usr/lib/pkcs11/libgood.so".to_string(),
            "KMS-PROVIDER-VERSION".to_string()
        )]
    );
    let msg = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/usr/lib/pkcs11/libgood.so")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("build-id") && !msg.contains("SONAME"), "{msg}");
}

#[test]
fn expiry_warning_days_sets_the_window() {
    let pki = require_pki!();
    let env = TestEnv::new();
    let policy = |days: u32| {
        env.policy(&format!(
            "version: 1\nexpiry_warning_days: {days}\ngroups:\n  - name: certs\n    class: ca-cert\n    paths: [/etc/kms/ca]\n"
        ));
    };
    env.write("/etc/kms/ca/ca.crt", pki.get("ca.crt"));
    env.write("/etc/kms/ca/soon.crt", pki.get("expiring.crt"));
    policy(30);
    let r = audit(&env, "json");
    assert!(rules(&r.json()).contains(&("/etc/kms/ca/soon.crt".into(), "KMS-CERT-EXPIRING".into())));
    policy(2);
    let got = rules(&audit(&env, "json").json());
    assert!(
        !got.iter().any(|(_, r)| r == "KMS-CERT-EXPIRING"),
        "{got:#?}"
    );
    // --at moves the clock: in ten years the CA itself has expired.
    let r = env.run(&[
        OsStr::new("audit"),
        OsStr::new("--policy"),
        env.path("policy.yaml").as_os_str(),
        OsStr::new("--root"),
        env.root().as_os_str(),
        OsStr::new("--format"),
        OsStr::new("json"),
        OsStr::new("--at"),
        OsStr::new("2046-01-01T00:00:00Z"),
    ]);
    assert!(rules(&r.json()).contains(&("/etc/kms/ca/ca.crt".into(), "KMS-CERT-EXPIRED".into())));
    let bad = env.run(&[
        OsStr::new("audit"),
        OsStr::new("--policy"),
        env.path("policy.yaml").as_os_str(),
        OsStr::new("--at"),
        OsStr::new("tomorrow"),
    ]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}

const ROTATION_POLICY: &str = "\
version: 1
groups:
  - name: keys
    class: private-key
    paths: [/etc/kms/keys]
  - name: certs
    class: client-cert
    paths: [/etc/kms/certs]
  - name: ca
    class: ca-cert
    paths: [/etc/kms/ca]
";

fn rotation_env(pki: &Pki) -> TestEnv {
    let env = TestEnv::new();
    env.policy(ROTATION_POLICY);
    for (name, key) in [("client.key", "client.key"), ("other.key", "other.key")] {
        env.write(&format!("/etc/kms/keys/{name}"), pki.get(key));
        env.chmod(&format!("/etc/kms/keys/{name}"), 0o600);
    }
    env.write("/etc/kms/certs/client.crt", pki.get("client.crt"));
    env.write("/etc/kms/certs/other.crt", pki.get("other.crt"));
    env.write("/etc/kms/ca/ca.crt", pki.get("ca.crt"));
    env.init();
    env
}

/// `verify --posture`: drift and the posture `audit` judges, in one report.
fn verify_posture(env: &TestEnv, format: &str) -> Run {
    env.cmd(
        &["verify"],
        &[
            OsStr::new("--format"),
            OsStr::new(format),
            OsStr::new("--posture"),
        ],
    )
}

fn status_of(v: &serde_json::Value, path: &str) -> Vec<(String, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["path"] == path)
        .map(|f| {
            (
                f["status"].as_str().unwrap().to_string(),
                f["rule"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_renewal_is_rotated_a_forgery_is_changed_and_accept_rotations_takes_only_renewals() {
    let pki = require_pki!();
    let env = rotation_env(pki);
    assert_eq!(env.verify("json").code, 0, "{}", env.verify("human").stdout);
    env.write("/etc/kms/certs/client.crt", pki.get("client-renewed.crt"));
    env.write("/etc/kms/certs/other.crt", pki.get("other-forged.crt"));
    let r = env.verify("json");
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(
        status_of(&v, "/etc/kms/certs/client.crt"),
        vec![("rotated".into(), "KMS-CERT-ROTATED".into())]
    );
    let client = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/kms/certs/client.crt")
        .unwrap();
    assert_eq!(client["severity"], "low");
    assert!(
        client["message"].as_str().unwrap().contains("same key"),
        "{client}"
    );
    assert_eq!(client["changes"][0], "content");
    assert_eq!(
        status_of(&v, "/etc/kms/certs/other.crt"),
        vec![("changed".into(), "".into())]
    );
    assert_eq!(v["summary"]["rotated"], 1);
    assert_eq!(v["summary"]["changed"], 1);

    let r = env.cmd(&["baseline", "update"], &[OsStr::new("--accept-rotations")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("accepted rotated /etc/kms/certs/client.crt"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("other.crt"), "{}", r.stderr);
    let v = env.verify("json").json();
    assert!(status_of(&v, "/etc/kms/certs/client.crt").is_empty(), "{v}");
    assert_eq!(
        status_of(&v, "/etc/kms/certs/other.crt"),
        vec![("changed".into(), "".into())]
    );
    // Put back the original: an older certificate is a rollback, not a renewal.
    env.write("/etc/kms/certs/client.crt", pki.get("client.crt"));
    let v = env.verify("json").json();
    assert_eq!(
        status_of(&v, "/etc/kms/certs/client.crt"),
        vec![("changed".into(), "".into())]
    );
}

#[test]
fn a_renewal_whose_key_no_longer_matches_is_not_a_rotation() {
    let pki = require_pki!();
    let env = rotation_env(pki);
    env.write("/etc/kms/certs/client.crt", pki.get("client-renewed.crt"));
    // The key was swapped too: the renewed certificate no longer pairs with any key.
    env.write("/etc/kms/keys/client.key", pki.get("orphan.key"));
    let v = verify_posture(&env, "json").json();
    let st = status_of(&v, "/etc/kms/certs/client.crt");
    assert!(st.contains(&("changed".into(), "".into())), "{st:?}");
    assert!(
        st.contains(&("posture".into(), "KMS-CERT-NO-KEY".into())),
        "{st:?}"
    );
}

#[test]
fn the_baseline_records_credential_facts_and_never_key_material() {
    let pki = require_pki!();
    let env = rotation_env(pki);
    let db = rusqlite::Connection::open(env.db()).unwrap();
    let mut st = db
        .prepare("SELECT path, kind, facts FROM credentials ORDER BY path")
        .unwrap();
    let rows: Vec<(Vec<u8>, String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let kinds: Vec<(String, String)> = rows
        .iter()
        .map(|(p, k, _)| (String::from_utf8(p.clone()).unwrap(), k.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("/etc/kms/ca/ca.crt".into(), "certificate".into()),
            ("/etc/kms/certs/client.crt".into(), "certificate".into()),
            ("/etc/kms/certs/other.crt".into(), "certificate".into()),
            ("/etc/kms/keys/client.key".into(), "private-key".into()),
            ("/etc/kms/keys/other.key".into(), "private-key".into()),
        ]
    );
    let client: serde_json::Value = serde_json::from_str(&rows[1].2).unwrap();
    let c = &client["certs"][0];
    assert_eq!(c["subject"], "CN=client");
    assert_eq!(c["issuer"], "CN=KMS-Test-CA");
    assert!(c["not_after"].as_i64().unwrap() > c["not_before"].as_i64().unwrap());
    assert_eq!(c["spki_sha256"].as_str().unwrap().len(), 64);
    let key: serde_json::Value = serde_json::from_str(&rows[3].2).unwrap();
    assert_eq!(key["keys"][0]["spki_sha256"], c["spki_sha256"]);
    assert_eq!(key["keys"][0]["encrypted"], false);
    // No 16-character run of the key file's base64 body appears in the facts.
    let pem = std::str::from_utf8(pki.get("client.key")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let all: String = rows.iter().map(|r| r.2.as_str()).collect();
    for i in (0..body.len().saturating_sub(16)).step_by(8) {
        assert!(!all.contains(&body[i..i + 16]), "key material in the facts");
    }
}

#[test]
fn xccdf_output_validates_against_the_xccdf_1_2_schema() {
    let pki = require_pki!();
    if !on_path("xmllint") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but `xmllint` (libxml2-utils) is not on PATH"
        );
        eprintln!("skipped: needs xmllint");
        return;
    }
    let env = posture_env(pki);
    let r = audit(&env, "xccdf");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.contains("xccdf_io.kmsentry_rule_KMS-CERT-EXPIRED"));
    assert!(
        r.stdout.contains("<result>pass</result>"),
        "checks without findings pass"
    );
    let out = env.path("result.xml");
    std::fs::write(&out, &r.raw_stdout).unwrap();
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/schemas/xccdf/1.2/xccdf_1.2.xsd"
    );
    let v = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema", schema])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "xmllint: {}",
        std::str::from_utf8(&v.stderr).unwrap_or("(stderr not UTF-8)")
    );
    // verify speaks XCCDF too.
    env.init_allowing_drift();
    let r = env.verify("xccdf");
    std::fs::write(&out, &r.raw_stdout).unwrap();
    let v = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema", schema])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "xmllint: {}",
        std::str::from_utf8(&v.stderr).unwrap_or("(stderr not UTF-8)")
    );
}

trait InitAnyway {
    fn init_allowing_drift(&self);
}

impl InitAnyway for TestEnv {
    fn init_allowing_drift(&self) {
        let r = self.cmd(&["baseline", "init"], &[]);
        assert!(r.code == 0 || r.code == 3, "{}", r.stderr);
    }
}

#[test]
fn policy_suggest_reads_installed_configuration_into_a_policy_that_checks() {
    let pki = require_pki!();
    let env = TestEnv::new();
    env.write(
        "/etc/ssl/openssl.cnf",
        b"openssl_conf = init\n[init]\nengines = e\n[e]\npkcs11 = p\n[p]\ndynamic_path = /usr/lib/engines/pkcs11.so\n",
    );
    env.write("/usr/lib/engines/pkcs11.so", b"\x7fELF not really");
    env.write(
        "/usr/share/p11-kit/modules/softhsm2.module",
        b"module: /usr/lib/softhsm/libsofthsm2.so\n",
    );
    env.write("/usr/lib/softhsm/libsofthsm2.so", b"\x7fELF");
    env.write(
        "/etc/pykmip/pykmip.conf",
        b"[client]\nhost=kms.example\ncertfile=/etc/pykmip/certs/client.crt\nkeyfile=/etc/pykmip/certs/client.key\nca_certs=/etc/pykmip/certs/ca.crt\n",
    );
    env.write("/etc/pykmip/certs/client.crt", pki.get("client.crt"));
    env.write("/etc/pykmip/certs/client.key", pki.get("client.key"));
    env.write("/etc/pykmip/certs/ca.crt", pki.get("ca.crt"));
    env.write("/etc/ssl/certs/ca-certificates.crt", pki.get("ca.crt"));
    let r = env.run(&[
        OsStr::new("policy"),
        OsStr::new("suggest"),
        OsStr::new("--root"),
        env.root().as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let y = &r.stdout;
    for want in [
        "# from: OpenSSL configuration /etc/ssl/openssl.cnf",
        "class: provider-binary",
        "\"/usr/lib/engines/pkcs11.so\"",
        "# from: p11-kit module file /usr/share/p11-kit/modules/softhsm2.module",
        "\"/usr/lib/softhsm/libsofthsm2.so\"",
        "# from: KMS client configuration /etc/pykmip/pykmip.conf",
        "class: client-cert",
        "class: private-key",
        "class: ca-cert",
        "\"/etc/pykmip/certs/client.key\"",
    ] {
        assert!(y.contains(want), "missing `{want}` in\n{y}");
    }
    let policy = env.path("suggested.yaml");
    std::fs::write(&policy, y).unwrap();
    let c = env.run(&[
        OsStr::new("policy"),
        OsStr::new("check"),
        policy.as_os_str(),
        OsStr::new("--root"),
        env.root().as_os_str(),
    ]);
    assert_eq!(c.code, 0, "{}\n{}", c.stderr, y);
    // And the suggested policy audits the host.
    std::fs::write(env.path("policy.yaml"), y).unwrap();
    env.chmod("/etc/pykmip/certs/client.key", 0o600);
    let a = audit(&env, "json");
    assert!(a.code == 0 || a.code == 1, "{}", a.stderr);
}

/// Validate JUnit XML against `tests/schemas/junit/junit.xsd` (one failure or error per
/// testcase, one testcase per path and suite).
fn assert_valid_junit(env: &TestEnv, xml: &[u8]) {
    let out = env.path("junit.xml");
    std::fs::write(&out, xml).unwrap();
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemas/junit/junit.xsd");
    let v = Command::new("xmllint")
        .args(["--noout", "--nonet", "--schema", schema])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "xmllint: {}\n{}",
        std::str::from_utf8(&v.stderr).unwrap_or("(stderr not UTF-8)"),
        std::str::from_utf8(xml).unwrap_or("(not UTF-8)")
    );
}

#[test]
fn junit_lists_each_path_once_with_every_finding_in_its_failure() {
    let pki = require_pki!();
    if !on_path("xmllint") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but `xmllint` (libxml2-utils) is not on PATH"
        );
        eprintln!("skipped: needs xmllint");
        return;
    }
    let env = posture_env(pki);
    env.init_allowing_drift();
    // Drift on a file that also has a posture finding: changed mode and KMS-KEY-PERM.
    env.chmod("/etc/kms/keys/client.key", 0o644);
    let r = verify_posture(&env, "junit");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_valid_junit(&env, &r.raw_stdout);
    let x = &r.stdout;
    // Files clean as far as drift goes but with posture findings are not also passing tests.
    let case = |path: &str| {
        let open = format!("name=\"{path}\"");
        assert_eq!(x.matches(&open).count(), 1, "{path} once:\n{x}");
        let at = x.find(&open).unwrap();
        let end = x[at..].find("</testcase>").map_or(x.len(), |e| at + e);
        x[at..end].to_string()
    };
    let expired = case("/etc/kms/certs/expired.crt");
    assert!(expired.contains("<failure") && expired.contains("KMS-CERT-EXPIRED"));
    let key = case("/etc/kms/keys/client.key");
    assert_eq!(key.matches("<failure").count(), 1, "{key}");
    assert!(key.contains("type=\"changed, posture\""), "{key}");
    assert!(
        key.contains("critical: mode") && key.contains("KMS-KEY-PERM"),
        "{key}"
    );
    // Counts are of testcases: every failing path once.
    let v = verify_posture(&env, "json").json();
    let paths: BTreeSet<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        x.contains(&format!("failures=\"{}\" errors=\"0\">", paths.len())),
        "{} failing paths:\n{x}",
        paths.len()
    );
    // audit writes the same shape.
    let a = audit(&env, "junit");
    assert_valid_junit(&env, &a.raw_stdout);
}

#[test]
fn audit_human_summary_counts_posture_findings_not_drift() {
    let pki = require_pki!();
    let env = posture_env(pki);
    let v = audit(&env, "json").json();
    let h = audit(&env, "human");
    assert_eq!(h.code, 1);
    let last = h.stdout.lines().last().unwrap();
    assert!(
        !last.contains("added") && !last.contains("removed") && !last.contains("changed"),
        "{last}"
    );
    let n = v["summary"]["posture"].as_u64().unwrap();
    let high = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "high")
        .count();
    assert!(
        last.starts_with(&format!(
            "{} checked: {n} posture findings (",
            v["summary"]["checked"]
        )) && last.contains(&format!("{high} high")),
        "{last}"
    );
    assert!(!last.contains("error"), "no errors, none mentioned: {last}");
}
