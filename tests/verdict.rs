//! The verdict a pipeline can trust, through the real binary: `verify` judges drift and
//! `audit` judges posture (`--posture` brings posture into `verify`), `--fail-on` thresholds,
//! credential checks that need no class (a damaged PEM, a mismatched pair by name), stale
//! distribution trust bundles reported once per bundle, a bad `--root` as a usage error for
//! every command, and the README's main job on this host. Certificates and keys are made at
//! test time by one `openssl` shell script; nothing secret is committed.

mod util;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use util::*;

/// Makes, in the current directory: a CA (`ca.crt`), leaf certificates with their keys
/// (`good`, `expired`, `expiring` in 5 days, `other`) and three expired self-signed roots.
const MAKE_PKI: &str = r#"set -eu
cat > ca.cnf <<'EOF'
[ca]
default_ca = c
[c]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = p
unique_subject = no
copy_extensions = copy
[p]
commonName = supplied
[req]
distinguished_name = dn
[dn]
EOF
: > index.txt
echo 1000 > serial
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
csr() { n=$1; shift; key "$n"; openssl req -config ca.cnf -new -key "$n.key" -subj "/CN=$n" "$@" -out "$n.csr"; }
sign() { openssl ca -config ca.cnf -batch -notext -startdate "$2" -enddate "$3" -in "$1.csr" -out "$1.crt" $4 2>/dev/null; }
later() { date -u -d "$1" +%Y%m%d%H%M%SZ; }
key ca
openssl req -config ca.cnf -x509 -key ca.key -days 3650 -subj /CN=Verdict-Test-CA \
    -addext basicConstraints=critical,CA:TRUE -out ca.crt
for n in good other; do csr "$n"; sign "$n" 20200101000000Z "$(later '+300 days')" "-cert ca.crt -keyfile ca.key"; done
csr expired; sign expired 20200101000000Z 20200102000000Z "-cert ca.crt -keyfile ca.key"
csr expiring; sign expiring 20200101000000Z "$(later '+5 days')" "-cert ca.crt -keyfile ca.key"
for n in old-root-1 old-root-2 old-root-3; do
    csr "$n" -addext basicConstraints=critical,CA:TRUE
    sign "$n" 20100101000000Z 20200101000000Z "-selfsign -keyfile $n.key"
done
"#;

/// The directory holding the generated files, or `None` when `openssl` is missing outside CI.
fn pki() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    DIR.get_or_init(|| {
        if Command::new("openssl").arg("version").output().is_err() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but `openssl` is not on PATH"
            );
            eprintln!("skipped: needs the `openssl` CLI");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("sh")
            .args(["-c", MAKE_PKI])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "making the PKI failed: {}",
            std::str::from_utf8(&out.stderr).unwrap_or("(stderr not UTF-8)")
        );
        let path = dir.path().to_path_buf();
        Some((dir, path))
    })
    .as_ref()
    .map(|(_, p)| p)
}

macro_rules! require_pki {
    () => {
        match pki() {
            Some(p) => p,
            None => return,
        }
    };
}

fn read(dir: &std::path::Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const KMS_POLICY: &str = "version: 1
groups:
  - name: kms-keys
    class: private-key
    paths: [/etc/kms/keys]
  - name: kms-certs
    class: client-cert
    paths: [/etc/kms/certs]
  - name: kms-config
    class: kms-config
    paths: [/etc/kms]
";

/// A KMS client whose credentials are expired, expiring and loose: posture, no drift.
fn kms_env(pki: &std::path::Path) -> TestEnv {
    let env = TestEnv::new();
    env.policy(KMS_POLICY);
    env.write(
        "/etc/kms/client.conf",
        b"endpoint = https://kms.example:5696\n",
    );
    for n in ["good", "expired", "expiring"] {
        env.write(
            &format!("/etc/kms/certs/{n}.crt"),
            &read(pki, &format!("{n}.crt")),
        );
        let k = format!("/etc/kms/keys/{n}.key");
        env.write(&k, &read(pki, &format!("{n}.key")));
        env.chmod(&k, 0o600);
    }
    // Loose: its group can read it (high, not critical).
    env.chmod("/etc/kms/keys/good.key", 0o640);
    env
}

fn verify(env: &TestEnv, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec![OsStr::new("--format"), OsStr::new("json")];
    args.extend(extra.iter().map(OsStr::new));
    env.cmd(&["verify"], &args)
}

fn audit(env: &TestEnv, extra: &[&str]) -> Run {
    let (policy, root) = (env.path("policy.yaml"), env.root());
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("audit"),
        OsStr::new("--policy"),
        policy.as_os_str(),
        OsStr::new("--root"),
        root.as_os_str(),
        OsStr::new("--format"),
        OsStr::new("json"),
    ];
    args.extend(extra.iter().map(OsStr::new));
    env.run(&args)
}

/// (path, rule) of every finding with a rule.
fn rules(v: &serde_json::Value) -> BTreeSet<(String, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| Some((f["path"].as_str()?.into(), f["rule"].as_str()?.into())))
        .collect()
}

#[test]
fn verify_judges_drift_and_posture_counts_only_with_posture() {
    let pki = require_pki!();
    let env = kms_env(pki);
    env.init();
    let r = verify(&env, &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v = r.json();
    assert_eq!(v["findings"], serde_json::json!([]), "{v}");
    // Posture was not judged into this report: no count rather than a count of 0.
    assert!(v["summary"].get("posture").is_none(), "{v}");
    assert_eq!(v["summary"]["changed"], 0);
    // Human output says what `audit` would show, on one line.
    let h = env.cmd(&["verify"], &[]);
    assert_eq!(h.code, 0, "{}", h.stdout);
    let hints: Vec<&str> = h
        .stdout
        .lines()
        .filter(|l| l.starts_with("hint:"))
        .collect();
    assert_eq!(hints.len(), 1, "{}", h.stdout);
    assert!(
        hints[0].contains("posture finding") && hints[0].contains("kmsentry audit --policy"),
        "{}",
        hints[0]
    );
    assert!(!h.stdout.contains("POSTURE"), "{}", h.stdout);
    // No posture in the other formats either (JUnit lists every file, none failing).
    for format in ["sarif", "junit", "xccdf"] {
        let r = env.cmd(&["verify"], &[OsStr::new("--format"), OsStr::new(format)]);
        assert_eq!(r.code, 0, "{format}: {}", r.stderr);
        let leaked = match format {
            "junit" => r.stdout.contains("<failure"),
            "sarif" => !r.json()["runs"][0]["results"]
                .as_array()
                .unwrap()
                .is_empty(),
            _ => r.stdout.contains("<result>fail"),
        };
        assert!(!leaked, "{format}: {}", r.stdout);
    }
    let x = env.cmd(&["verify"], &[OsStr::new("--format"), OsStr::new("xccdf")]);
    assert!(
        x.stdout.contains("<result>notselected</result>") && !x.stdout.contains("<result>pass"),
        "{}",
        x.stdout
    );

    // --posture brings them back, and they count.
    let r = verify(&env, &["--posture"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    let got = rules(&v);
    for want in [
        ("/etc/kms/certs/expired.crt", "KMS-CERT-EXPIRED"),
        ("/etc/kms/certs/expiring.crt", "KMS-CERT-EXPIRING"),
        ("/etc/kms/keys/good.key", "KMS-KEY-PERM"),
    ] {
        assert!(
            got.contains(&(want.0.into(), want.1.into())),
            "{want:?} in {got:?}"
        );
    }
    assert!(v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["status"] == "posture"));
    // The host's own client certificate expiring is high, like an expired one.
    for f in v["findings"].as_array().unwrap() {
        if f["path"] == "/etc/kms/certs/expiring.crt" {
            assert_eq!(f["severity"], "high", "{f}");
        }
    }
    assert_eq!(v["summary"]["posture"], got.len());

    // One edited file: exactly one finding.
    env.write(
        "/etc/kms/client.conf",
        b"endpoint = https://evl.example:5696\n",
    );
    let r = verify(&env, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        findings(&r.json()),
        vec![(
            "/etc/kms/client.conf".to_string(),
            "changed".to_string(),
            vec!["content".to_string()]
        )]
    );
}

#[test]
fn fail_on_sets_the_threshold_for_audit_and_verify_posture() {
    let pki = require_pki!();
    let env = kms_env(pki);
    env.init();
    // The worst finding is high (expired certificate, group-readable key).
    for (cmd, extra, want) in [
        ("audit", vec![], 1),
        ("audit", vec!["--fail-on", "high"], 1),
        ("audit", vec!["--fail-on", "critical"], 0),
        ("verify", vec!["--posture", "--fail-on", "high"], 1),
        ("verify", vec!["--posture", "--fail-on", "critical"], 0),
        ("verify", vec!["--posture", "--fail-on", "info"], 1),
        ("verify", vec!["--fail-on", "info"], 0),
    ] {
        let r = if cmd == "audit" {
            audit(&env, &extra)
        } else {
            verify(&env, &extra)
        };
        assert_eq!(r.code, want, "{cmd} {extra:?}: {}{}", r.stdout, r.stderr);
        // The threshold decides the exit code, never what is reported.
        if cmd == "audit" || extra.contains(&"--posture") {
            assert!(!r.json()["findings"].as_array().unwrap().is_empty());
        }
    }
    // A low finding alone passes audit's default threshold (medium).
    let low = TestEnv::new();
    low.policy(KMS_POLICY);
    low.write("/etc/kms/certs/ca.crt", &read(pki, "ca.crt"));
    low.write("/etc/kms/keys/ca.key", &read(pki, "ca.key"));
    low.chmod("/etc/kms/keys/ca.key", 0o600);
    let other = low.write("/etc/kms/keys/other.key", &read(pki, "other.key"));
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let r = audit(&low, &[]);
    let v = r.json();
    assert!(
        rules(&v).contains(&("/etc/kms/keys/other.key".into(), "KMS-KEY-NO-CERT".into())),
        "{v}"
    );
    assert_eq!(r.code, 0, "{v}");
    assert_eq!(audit(&low, &["--fail-on", "low"]).code, 1);
    // A bad threshold is a usage error.
    for cmd in ["audit", "verify"] {
        let r = if cmd == "audit" {
            audit(&env, &["--fail-on", "severe"])
        } else {
            verify(&env, &["--fail-on", "severe"])
        };
        assert_eq!(r.code, 2, "{cmd}: {}", r.stderr);
        assert!(r.stderr.contains("--fail-on"), "{}", r.stderr);
    }
}

#[test]
fn damaged_pem_and_mismatched_pairs_are_found_in_any_class() {
    let pki = require_pki!();
    let env = TestEnv::new();
    env.policy(
        "version: 1\ngroups:\n  - name: pki\n    class: generic\n    paths: [/etc/pki/tls]\n",
    );
    let good = read(pki, "good.crt");
    let text = String::from_utf8(good.clone()).unwrap();
    // Corrupt base64 in the middle of the body.
    let mid = text.len() / 2;
    let broken = format!("{}!!!!{}", &text[..mid], &text[mid + 4..]);
    env.write("/etc/pki/tls/broken.pem", broken.as_bytes());
    env.write("/etc/pki/tls/pair.pem", &good);
    env.write("/etc/pki/tls/pair.key", &read(pki, "expired.key"));
    env.write("/etc/pki/tls/svc-cert.pem", &read(pki, "other.crt"));
    env.write("/etc/pki/tls/svc-key.pem", &read(pki, "good.key"));
    // A matching pair, and a `.pem` that holds no armour: silent.
    env.write("/etc/pki/tls/ok.crt", &read(pki, "other.crt"));
    env.write("/etc/pki/tls/ok.key", &read(pki, "other.key"));
    env.write(
        "/etc/pki/tls/notes.pem",
        b"these are not the keys you are looking for\n",
    );
    env.write(
        "/etc/pki/tls/params.pem",
        b"-----BEGIN X9.42 DH PARAMETERS-----\n!!\n-----END X9.42 DH PARAMETERS-----\n",
    );
    for k in ["pair.key", "svc-key.pem", "ok.key"] {
        env.chmod(&format!("/etc/pki/tls/{k}"), 0o600);
    }
    let r = audit(&env, &["--fail-on", "info"]);
    let v = r.json();
    let got = rules(&v);
    let want: BTreeSet<(String, String)> = [
        ("/etc/pki/tls/broken.pem", "KMS-CRED-UNPARSEABLE"),
        ("/etc/pki/tls/pair.pem", "KMS-CERT-NO-KEY"),
        ("/etc/pki/tls/svc-cert.pem", "KMS-CERT-NO-KEY"),
    ]
    .into_iter()
    .map(|(p, r)| (p.to_string(), r.to_string()))
    .collect();
    assert_eq!(got, want, "{v}");
    assert_eq!(r.code, 1, "{v}");
    let pair = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/pki/tls/pair.pem")
        .unwrap();
    assert!(
        pair["message"]
            .as_str()
            .unwrap()
            .contains("/etc/pki/tls/pair.key"),
        "{pair}"
    );
}

#[test]
fn stale_distribution_bundles_are_one_low_finding_each_and_a_kms_ca_stays_high() {
    let pki = require_pki!();
    let env = TestEnv::new();
    env.policy("version: 1\ngroups:\n  - name: trust\n    class: ca-cert\n    paths: [/etc/ssl/certs, /usr/share/ca-certificates, /etc/kms/ca]\n");
    let roots: Vec<Vec<u8>> = ["old-root-1", "old-root-2", "old-root-3", "ca"]
        .iter()
        .map(|n| read(pki, &format!("{n}.crt")))
        .collect();
    env.write("/etc/ssl/certs/ca-certificates.crt", &roots.concat());
    env.write("/usr/share/ca-certificates/mozilla/Old_1.crt", &roots[0]);
    env.write("/usr/share/ca-certificates/mozilla/Old_2.crt", &roots[1]);
    env.write("/usr/share/ca-certificates/mozilla/Good.crt", &roots[3]);
    // The KMS endpoint's own pinned CA, expired: that one matters.
    env.write("/etc/kms/ca/kms-ca.pem", &roots[2]);
    let r = audit(&env, &["--fail-on", "info"]);
    let v = r.json();
    let expired: Vec<&serde_json::Value> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "KMS-CERT-EXPIRED")
        .collect();
    let by_path = |p: &str| -> Vec<&serde_json::Value> {
        expired.iter().copied().filter(|f| f["path"] == p).collect()
    };
    let bundle = by_path("/etc/ssl/certs/ca-certificates.crt");
    assert_eq!(bundle.len(), 1, "{v}");
    assert_eq!(bundle[0]["severity"], "low");
    let m = bundle[0]["message"].as_str().unwrap();
    assert!(m.starts_with("3 expired trust anchors"), "{m}");
    for cn in ["old-root-1", "old-root-2", "old-root-3"] {
        assert!(m.contains(cn), "{cn} in {m}");
    }
    let dir = by_path("/usr/share/ca-certificates/mozilla");
    assert_eq!(dir.len(), 1, "{v}");
    assert_eq!(dir[0]["severity"], "low");
    let m = dir[0]["message"].as_str().unwrap();
    assert!(
        m.starts_with("2 expired") && m.contains("Old_1.crt") && m.contains("Old_2.crt"),
        "{m}"
    );
    assert!(by_path("/usr/share/ca-certificates/mozilla/Old_1.crt").is_empty());
    let kms = by_path("/etc/kms/ca/kms-ca.pem");
    assert_eq!(kms.len(), 1, "{v}");
    assert_eq!(kms[0]["severity"], "high");
    assert_eq!(expired.len(), 3, "{v}");
    // Only the KMS CA is at or above audit's default threshold.
    assert_eq!(r.code, 1);
    std::fs::remove_file(env.at("/etc/kms/ca/kms-ca.pem")).unwrap();
    assert_eq!(audit(&env, &[]).code, 0);
}

#[test]
fn a_missing_or_non_directory_root_is_a_usage_error_for_every_command() {
    let env = TestEnv::new();
    let policy =
        env.policy("version: 1\ngroups:\n  - name: a\n    class: generic\n    paths: [/etc/kms]\n");
    env.write("/etc/kms/a.conf", b"a\n");
    env.init();
    let (db, store) = (env.db(), env.path("store"));
    let file = env.path("policy.yaml");
    for bad in [env.path("nonexistent"), file] {
        let cmds: Vec<Vec<&OsStr>> = vec![
            vec![
                OsStr::new("baseline"),
                OsStr::new("init"),
                OsStr::new("--force"),
            ],
            vec![OsStr::new("baseline"), OsStr::new("update")],
            vec![OsStr::new("verify")],
            vec![OsStr::new("audit")],
            vec![
                OsStr::new("restore"),
                OsStr::new("--dry-run"),
                OsStr::new("--store"),
                store.as_os_str(),
            ],
        ];
        for mut args in cmds {
            let name = format!("{args:?}");
            args.extend([OsStr::new("--policy"), policy.as_os_str()]);
            if name != "[\"audit\"]" {
                args.extend([OsStr::new("--db"), db.as_os_str()]);
            }
            args.extend([OsStr::new("--root"), bad.as_os_str()]);
            let r = env.run(&args);
            assert_eq!(r.code, 2, "{name} --root {bad:?}: {}", r.stderr);
            assert!(r.stderr.contains("--root"), "{name}: {}", r.stderr);
        }
        for args in [
            vec![
                OsStr::new("policy"),
                OsStr::new("check"),
                policy.as_os_str(),
            ],
            vec![
                OsStr::new("policy"),
                OsStr::new("check"),
                policy.as_os_str(),
                OsStr::new("--no-resolve"),
            ],
            vec![OsStr::new("policy"), OsStr::new("suggest")],
        ] {
            let mut args = args;
            args.extend([OsStr::new("--root"), bad.as_os_str()]);
            let r = env.run(&args);
            assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        }
    }
    // Nothing was lost: the baseline still verifies.
    assert_eq!(env.verify("json").code, 0);
}

/// README's main job on this host, as a new user runs it: exit 0 on an untouched host.
#[test]
fn the_readme_main_job_exits_0_on_this_host() {
    require_root!();
    let env = TestEnv::new();
    let policy =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/kms-client-host.yaml");
    let db = env.db();
    let r = env.run(&[
        OsStr::new("baseline"),
        OsStr::new("init"),
        OsStr::new("--force"),
        OsStr::new("--policy"),
        policy.as_os_str(),
        OsStr::new("--db"),
        db.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "init: {}", r.stderr);
    let r = env.run(&[
        OsStr::new("verify"),
        OsStr::new("--policy"),
        policy.as_os_str(),
        OsStr::new("--db"),
        db.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "verify: {}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("0 added, 0 removed, 0 changed"),
        "{}",
        r.stdout
    );
}
