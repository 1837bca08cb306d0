//! Test fixtures generated with the `openssl` CLI (and `ssh-keygen`) once per test process,
//! into a temporary directory whose files are read into memory and then removed. Nothing
//! secret is committed: every key is fresh on every run, and secret scanners stay quiet.
//!
//! Without `openssl` the tests skip loudly, except under `CI=true`, where they fail. Without
//! `ssh-keygen` the one unencrypted Ed25519 OpenSSH key is made with the `ssh-key` crate and
//! the other OpenSSH cases skip loudly.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

pub(super) struct Fixtures {
    files: HashMap<String, Vec<u8>>,
    /// Whether the OpenSSH keys come from `ssh-keygen` (all of them) or the crate (one).
    pub ssh_keygen: bool,
}

impl Fixtures {
    /// A generated file's bytes; panics on an unknown name (a bug in the test).
    pub fn get(&self, name: &str) -> &[u8] {
        self.files
            .get(name)
            .unwrap_or_else(|| panic!("no fixture {name}"))
    }

    /// SHA-256 of the SPKI DER that `openssl pkey -pubout -outform DER` (or `ssh-keygen -e`)
    /// wrote for a key: the reference every computed fingerprint is checked against.
    pub fn openssl_spki_sha256(&self, key: &str) -> [u8; 32] {
        Sha256::digest(self.get(&format!("{key}.pub.der"))).into()
    }
}

/// The fixtures, or `None` (after saying why on stderr) when `openssl` is missing outside CI.
pub(super) fn fixtures() -> Option<&'static Fixtures> {
    static FIXTURES: OnceLock<Option<Fixtures>> = OnceLock::new();
    FIXTURES
        .get_or_init(|| {
            if !have("openssl") {
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

/// `let fx = require_fixtures!();` at the top of a test.
macro_rules! require_fixtures {
    () => {
        match crate::credential::fixtures::fixtures() {
            Some(fx) => fx,
            None => return,
        }
    };
}
pub(super) use require_fixtures;

/// `program` is an executable on `PATH`. Looked up, never run: `ssh-keygen -h` would start
/// generating a key and read a file name from stdin.
fn have(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

const CONFIG: &str = "\
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
[any]
commonName = supplied
";

const KEYS: &[(&str, &str)] = &[
    ("rsa2048", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048"),
    ("rsa1024", "-algorithm RSA -pkeyopt rsa_keygen_bits:1024"),
    ("p256", "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"),
    ("p384", "-algorithm EC -pkeyopt ec_paramgen_curve:P-384"),
    ("ed25519", "-algorithm ED25519"),
    ("ed448", "-algorithm ED448"),
];

/// openssl invocations after the keys, each a whitespace-split argument list.
const STEPS: &[&str] = &[
    "rsa -in rsa2048.pem -traditional -out rsa2048.pkcs1.pem",
    "rsa -in rsa2048.pem -traditional -outform DER -out rsa2048.pkcs1.der",
    "rsa -in rsa2048.pem -traditional -aes128 -passout pass:x -out rsa2048.legacy-enc.pem",
    "rsa -in rsa2048.pem -RSAPublicKey_out -out rsa2048.rsapub.pem",
    "ec -in p256.pem -out p256.sec1.pem",
    "ec -in p256.pem -outform DER -out p256.sec1.der",
    "pkcs8 -topk8 -v2 aes-256-cbc -passout pass:x -in rsa2048.pem -out rsa2048.enc.pem",
    "pkcs8 -topk8 -v2 aes-256-cbc -passout pass:x -in p256.pem -outform DER -out p256.enc.der",
    "req -x509 -key rsa2048.pem -days 1 -subj /CN=test -out rsa2048.crt",
    "req -x509 -key p256.pem -days 1 -subj /CN=test -out p256.crt",
    "req -x509 -key ed25519.pem -days 1 -subj /CN=test -out ed25519.crt",
    "req -x509 -key rsa1024.pem -days 1 -subj /CN=weak -sha1 -out sha1.crt",
    "req -x509 -key p384.pem -days 30 -subj /CN=ca -addext basicConstraints=critical,CA:TRUE \
     -addext subjectKeyIdentifier=hash -out ca.crt",
    "req -new -key p256.pem -subj /CN=leaf -out leaf.csr",
    "x509 -req -in leaf.csr -CA ca.crt -CAkey p384.pem -days 1 \
     -extfile leaf.ext -out leaf.crt",
    "x509 -in rsa2048.crt -outform DER -out rsa2048.crt.der",
    "ca -batch -selfsign -keyfile p256.pem -in leaf.csr -startdate 20200101000000Z \
     -enddate 20200102000000Z -notext -out expired.crt",
];

fn generate() -> Fixtures {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).expect("write");
    write("openssl.cnf", CONFIG);
    write("index.txt", "");
    write("serial", "01\n");
    write("leaf.ext", "basicConstraints=critical,CA:FALSE\n");
    for (name, how) in KEYS {
        let out = format!("{name}.pem");
        openssl(d, &format!("genpkey {how} -out {out}"));
        // `pkey -outform DER` writes RSA and EC keys in their traditional forms.
        openssl(
            d,
            &format!("pkcs8 -topk8 -nocrypt -in {out} -outform DER -out {name}.der"),
        );
        openssl(d, &format!("pkey -in {out} -pubout -out {name}.pub.pem"));
        openssl(
            d,
            &format!("pkey -in {out} -pubout -outform DER -out {name}.pub.der"),
        );
    }
    for step in STEPS {
        openssl(d, step);
    }
    let ssh_keygen = have("ssh-keygen");
    if ssh_keygen {
        let keys: [(&str, &[&str]); 4] = [
            ("ssh_ed25519", &["-t", "ed25519", "-N", ""]),
            ("ssh_rsa", &["-t", "rsa", "-b", "2048", "-N", ""]),
            ("ssh_ecdsa", &["-t", "ecdsa", "-b", "256", "-N", ""]),
            ("ssh_ed25519_enc", &["-t", "ed25519", "-N", "secret"]),
        ];
        for (name, args) in keys {
            let mut a = args.to_vec();
            a.extend(["-q", "-C", "test", "-f", name]);
            run(d, "ssh-keygen", &a);
        }
        // The PKCS#8 form of the OpenSSH public keys, as the fingerprint reference.
        for name in ["ssh_rsa", "ssh_ecdsa"] {
            let pem = run(
                d,
                "ssh-keygen",
                &["-e", "-m", "PKCS8", "-f", &format!("{name}.pub")],
            );
            std::fs::write(d.join(format!("{name}.pub.pem")), pem).expect("write");
            openssl(
                d,
                &format!("pkey -pubin -in {name}.pub.pem -outform DER -out {name}.pub.der"),
            );
        }
    } else {
        eprintln!("note: no ssh-keygen; one OpenSSH key is made with the ssh-key crate");
        std::fs::write(d.join("ssh_ed25519"), crate_made_openssh_key()).expect("write");
    }
    let mut files = HashMap::new();
    for entry in std::fs::read_dir(d).expect("read dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().into_string().expect("ASCII names");
        files.insert(name, std::fs::read(entry.path()).expect("read"));
    }
    Fixtures { files, ssh_keygen }
}

fn openssl(dir: &Path, args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    run(dir, "openssl", &args);
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("OPENSSL_CONF", dir.join("openssl.cnf"))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        std::str::from_utf8(&out.stderr).unwrap_or("(stderr not UTF-8)")
    );
    out.stdout
}

/// An unencrypted Ed25519 OpenSSH key with a fixed seed (test-only, never a real secret).
fn crate_made_openssh_key() -> Vec<u8> {
    let seed = [7u8; 32];
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    let mut pair = [0u8; 64];
    pair[..32].copy_from_slice(&seed);
    pair[32..].copy_from_slice(&public);
    let pair = ssh_key::private::Ed25519Keypair::from_bytes(&pair).expect("keypair");
    let key = ssh_key::PrivateKey::new(ssh_key::private::KeypairData::Ed25519(pair), "test")
        .expect("key");
    key.to_openssh(ssh_key::LineEnding::LF)
        .expect("encode")
        .as_bytes()
        .to_vec()
}
