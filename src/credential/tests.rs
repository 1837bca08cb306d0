//! Tests of [`inspect`] on files made by `openssl` and `ssh-keygen` (see `fixtures.rs`):
//! every format, the cert-to-key fingerprint match, damage, limits, and never panicking.

use super::fixtures::{fixtures, require_fixtures, Fixtures};
use super::*;
use base64ct::{Base64, Encoding};
use proptest::prelude::*;

fn key(bytes: &[u8]) -> KeyFacts {
    match inspect(bytes) {
        Facts::Key(k) => k,
        other => panic!("expected a key, got {other:?}"),
    }
}

fn certs(bytes: &[u8]) -> Vec<CertFacts> {
    match inspect(bytes) {
        Facts::Certs(c) => c,
        other => panic!("expected certificates, got {other:?}"),
    }
}

fn cert(bytes: &[u8]) -> CertFacts {
    let mut c = certs(bytes);
    assert_eq!(c.len(), 1);
    c.remove(0)
}

fn public(bytes: &[u8]) -> PublicKeyFacts {
    match inspect(bytes) {
        Facts::PublicKey(p) => p,
        other => panic!("expected a public key, got {other:?}"),
    }
}

fn unparseable(bytes: &[u8]) -> (CredKind, String) {
    match inspect(bytes) {
        Facts::Unparseable { claimed, reason } => (claimed, reason),
        other => panic!("expected Unparseable, got {other:?}"),
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn rsa(bits: u32) -> KeyAlgo {
    KeyAlgo::Rsa { bits }
}

fn ec(curve: &str, bits: u32) -> KeyAlgo {
    KeyAlgo::Ec {
        curve: curve.into(),
        bits,
    }
}

fn fp(fx: &Fixtures, key: &str) -> Option<SpkiSha256> {
    Some(SpkiSha256(fx.openssl_spki_sha256(key)))
}

#[test]
fn private_keys_in_every_format_give_algorithm_and_openssls_fingerprint() {
    let fx = require_fixtures!();
    let cases: &[(&str, KeyFormat, KeyAlgo, Option<&str>)] = &[
        ("rsa2048.pem", KeyFormat::Pkcs8, rsa(2048), Some("rsa2048")),
        ("rsa2048.der", KeyFormat::Pkcs8, rsa(2048), Some("rsa2048")),
        ("rsa1024.pem", KeyFormat::Pkcs8, rsa(1024), Some("rsa1024")),
        (
            "rsa2048.pkcs1.pem",
            KeyFormat::Pkcs1,
            rsa(2048),
            Some("rsa2048"),
        ),
        (
            "rsa2048.pkcs1.der",
            KeyFormat::Pkcs1,
            rsa(2048),
            Some("rsa2048"),
        ),
        ("p256.pem", KeyFormat::Pkcs8, ec("P-256", 256), Some("p256")),
        ("p256.der", KeyFormat::Pkcs8, ec("P-256", 256), Some("p256")),
        (
            "p256.sec1.pem",
            KeyFormat::Sec1,
            ec("P-256", 256),
            Some("p256"),
        ),
        (
            "p256.sec1.der",
            KeyFormat::Sec1,
            ec("P-256", 256),
            Some("p256"),
        ),
        ("p384.pem", KeyFormat::Pkcs8, ec("P-384", 384), Some("p384")),
        (
            "ed25519.pem",
            KeyFormat::Pkcs8,
            KeyAlgo::Ed25519,
            Some("ed25519"),
        ),
        (
            "ed25519.der",
            KeyFormat::Pkcs8,
            KeyAlgo::Ed25519,
            Some("ed25519"),
        ),
        // OpenSSL stores no public key in Ed448 PKCS#8, and deriving one is not done here.
        ("ed448.pem", KeyFormat::Pkcs8, KeyAlgo::Ed448, None),
    ];
    for (file, format, algo, reference) in cases {
        let k = key(fx.get(file));
        assert_eq!(k.format, *format, "{file}");
        assert_eq!(k.key.as_ref(), Some(algo), "{file}");
        assert!(!k.encrypted, "{file}");
        assert_eq!(k.encryption, None, "{file}");
        assert_eq!(k.spki_sha256, reference.and_then(|r| fp(fx, r)), "{file}");
    }
    assert_eq!(inspect(fx.get("p256.pem")).kind(), CredKind::PrivateKey);
}

#[test]
fn encrypted_keys_say_so_and_how_without_an_algorithm() {
    let fx = require_fixtures!();
    for file in ["rsa2048.enc.pem", "p256.enc.der"] {
        let k = key(fx.get(file));
        assert_eq!(k.format, KeyFormat::EncryptedPkcs8, "{file}");
        assert!(k.encrypted);
        assert_eq!(k.key, None);
        assert_eq!(k.spki_sha256, None);
        let how = k.encryption.unwrap();
        assert!(
            how.starts_with("PBES2(PBKDF2(hmacWithSHA256, ") && how.ends_with(", aes-256-cbc)"),
            "{how}"
        );
        assert!(how.contains(" iterations)"), "{how}");
    }
    let legacy = key(fx.get("rsa2048.legacy-enc.pem"));
    assert_eq!(legacy.format, KeyFormat::Pkcs1);
    assert!(legacy.encrypted);
    assert_eq!(legacy.encryption.as_deref(), Some("AES-128-CBC"));
}

/// The point of the fingerprint: a certificate and its private key hash alike, whatever
/// format the key is stored in, and both equal OpenSSL's own SPKI.
#[test]
fn a_certificate_and_its_private_key_have_the_same_spki_fingerprint() {
    let fx = require_fixtures!();
    let cases: &[(&str, &[&str])] = &[
        (
            "rsa2048",
            &["rsa2048.pem", "rsa2048.pkcs1.pem", "rsa2048.pkcs1.der"],
        ),
        ("p256", &["p256.pem", "p256.sec1.pem", "p256.der"]),
        ("ed25519", &["ed25519.pem", "ed25519.der"]),
    ];
    for (name, key_files) in cases {
        let c = cert(fx.get(&format!("{name}.crt")));
        assert_eq!(Some(c.spki_sha256), fp(fx, name), "{name}");
        for file in *key_files {
            assert_eq!(key(fx.get(file)).spki_sha256, Some(c.spki_sha256), "{file}");
        }
        let p = public(fx.get(&format!("{name}.pub.pem")));
        assert_eq!(p.spki_sha256, c.spki_sha256, "{name}.pub.pem");
    }
    let other = cert(fx.get("p256.crt")).spki_sha256;
    assert_ne!(key(fx.get("p384.pem")).spki_sha256, Some(other));
}

#[test]
fn certificate_facts() {
    let fx = require_fixtures!();
    let cases: &[(&str, KeyAlgo, &str)] = &[
        ("rsa2048.crt", rsa(2048), "sha256WithRSAEncryption"),
        ("p256.crt", ec("P-256", 256), "ecdsa-with-SHA256"),
        ("ed25519.crt", KeyAlgo::Ed25519, "ed25519"),
    ];
    let now = now();
    for (file, algo, sig) in cases {
        let c = cert(fx.get(file));
        assert_eq!(c.subject, "CN=test", "{file}");
        assert_eq!(c.issuer, "CN=test", "{file}");
        assert!(!c.serial_hex.is_empty() && hex::decode(&c.serial_hex).is_ok());
        assert!(c.not_before <= now + 60 && now < c.not_after, "{file}");
        assert_eq!(c.not_after - c.not_before, 86_400, "{file}");
        assert_eq!(&c.key, algo, "{file}");
        assert_eq!(c.signature_algorithm, *sig, "{file}");
        assert_eq!(c.is_ca, None, "{file}: no basicConstraints");
        assert!(c.self_signed, "{file}");
        assert!(!c.sha1_or_md5_signature, "{file}");
    }
    assert_eq!(inspect(fx.get("p256.crt")).kind(), CredKind::Certificate);
}

#[test]
fn weak_ca_leaf_and_expired_certificates() {
    let fx = require_fixtures!();
    let sha1 = cert(fx.get("sha1.crt"));
    assert!(sha1.sha1_or_md5_signature);
    assert_eq!(sha1.signature_algorithm, "sha1WithRSAEncryption");
    assert_eq!(sha1.key, rsa(1024));

    let ca = cert(fx.get("ca.crt"));
    assert_eq!(ca.is_ca, Some(true));
    assert!(ca.self_signed);
    assert_eq!(ca.key, ec("P-384", 384));
    assert_eq!(ca.signature_algorithm, "ecdsa-with-SHA256");

    let leaf = cert(fx.get("leaf.crt"));
    assert_eq!(leaf.is_ca, Some(false));
    assert!(!leaf.self_signed);
    assert_eq!(
        (leaf.subject.as_str(), leaf.issuer.as_str()),
        ("CN=leaf", "CN=ca")
    );
    assert_eq!(Some(leaf.spki_sha256), fp(fx, "p256"));

    let expired = cert(fx.get("expired.crt"));
    assert_eq!(expired.not_before, 1_577_836_800, "2020-01-01T00:00:00Z");
    assert_eq!(expired.not_after, 1_577_923_200, "2020-01-02T00:00:00Z");
    assert!(expired.not_after < now());
}

#[test]
fn bundles_der_and_mixed_files() {
    let fx = require_fixtures!();
    let mut bundle = b"# CA bundle\n".to_vec();
    for (i, f) in ["rsa2048.crt", "ca.crt", "leaf.crt"].iter().enumerate() {
        bundle.extend_from_slice(format!("subject {i}: some text\n").as_bytes());
        bundle.extend_from_slice(fx.get(f));
    }
    let found = certs(&bundle);
    let subjects: Vec<&str> = found.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["CN=test", "CN=ca", "CN=leaf"]);
    assert_eq!(inspect(&bundle).kind(), CredKind::CertificateBundle);

    assert_eq!(
        cert(fx.get("rsa2048.crt.der")),
        cert(fx.get("rsa2048.crt")),
        "DER and PEM give the same facts"
    );

    // A TLS server's usual file: key, then its chain; and any EC PARAMETERS block ignored.
    let mut server =
        b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n".to_vec();
    server.extend_from_slice(fx.get("p256.pem"));
    server.extend_from_slice(fx.get("leaf.crt"));
    server.extend_from_slice(fx.get("ca.crt"));
    match inspect(&server) {
        Facts::Mixed(items) => {
            assert_eq!(items.len(), 3);
            let (Credential::Key(k), Credential::Cert(c)) = (&items[0], &items[1]) else {
                panic!("{items:?}");
            };
            assert_eq!(k.spki_sha256, Some(c.spki_sha256), "key matches its leaf");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(inspect(&server).kind(), CredKind::Mixed);
}

#[test]
fn public_keys() {
    let fx = require_fixtures!();
    let cases: &[(&str, KeyFormat, KeyAlgo, &str)] = &[
        ("rsa2048.pub.pem", KeyFormat::Spki, rsa(2048), "rsa2048"),
        ("rsa2048.pub.der", KeyFormat::Spki, rsa(2048), "rsa2048"),
        (
            "rsa2048.rsapub.pem",
            KeyFormat::Pkcs1Public,
            rsa(2048),
            "rsa2048",
        ),
        ("p384.pub.pem", KeyFormat::Spki, ec("P-384", 384), "p384"),
        ("ed448.pub.pem", KeyFormat::Spki, KeyAlgo::Ed448, "ed448"),
    ];
    for (file, format, algo, reference) in cases {
        let p = public(fx.get(file));
        assert_eq!((p.format, &p.key), (*format, algo), "{file}");
        assert_eq!(Some(p.spki_sha256), fp(fx, reference), "{file}");
    }
    assert_eq!(inspect(fx.get("p384.pub.pem")).kind(), CredKind::PublicKey);
}

#[test]
fn openssh_keys_report_the_public_part_even_when_encrypted() {
    let fx = require_fixtures!();
    let k = key(fx.get("ssh_ed25519"));
    assert_eq!(k.format, KeyFormat::OpenSsh);
    assert!(!k.encrypted);
    assert_eq!(k.key, Some(KeyAlgo::Ed25519));
    assert!(k.spki_sha256.is_some());
    if !fx.ssh_keygen {
        eprintln!("skipped: OpenSSH RSA, ECDSA and encrypted keys need ssh-keygen");
        return;
    }
    for (file, algo) in [("ssh_rsa", rsa(2048)), ("ssh_ecdsa", ec("P-256", 256))] {
        let k = key(fx.get(file));
        assert_eq!(k.key, Some(algo), "{file}");
        // ssh-keygen's own PKCS#8 export of the same key is the reference.
        assert_eq!(k.spki_sha256, fp(fx, file), "{file}");
    }
    let enc = key(fx.get("ssh_ed25519_enc"));
    assert!(enc.encrypted);
    assert_eq!(enc.key, Some(KeyAlgo::Ed25519));
    assert!(enc.spki_sha256.is_some());
    let how = enc.encryption.unwrap();
    assert!(
        how.contains("(bcrypt, ") && how.ends_with(" rounds)"),
        "{how}"
    );
}

/// Replaces one base64 character in the body of the first PEM block.
fn mangle_base64(pem: &[u8], line: usize, with: u8) -> Vec<u8> {
    let mut out = pem.to_vec();
    let start = out
        .split(|b| *b == b'\n')
        .take(line)
        .map(|l| l.len() + 1)
        .sum::<usize>();
    let i = start + 10;
    out[i] = if out[i] == with { with ^ 1 } else { with };
    out
}

#[test]
fn damaged_files_are_unparseable_with_a_reason_naming_the_block() {
    let fx = require_fixtures!();
    let crt = fx.get("rsa2048.crt");
    let (claimed, reason) = unparseable(&mangle_base64(crt, 3, b'*'));
    assert_eq!(claimed, CredKind::Certificate);
    assert!(
        reason.contains("PEM block 1 (CERTIFICATE): byte 0x2a"),
        "{reason}"
    );

    // Valid base64, damaged DER: the certificate parser must say so.
    let (claimed, reason) = unparseable(&mangle_base64(crt, 1, b'A'));
    assert_eq!(claimed, CredKind::Certificate);
    assert!(
        reason.starts_with("PEM block 1 (CERTIFICATE): "),
        "{reason}"
    );

    let key_pem = fx.get("p256.pem");
    let cut = &key_pem[..key_pem.len() / 2];
    let (claimed, reason) = unparseable(cut);
    assert_eq!(claimed, CredKind::PrivateKey);
    assert!(reason.contains("no END line"), "{reason}");

    // A bundle with one bad member is not half-reported.
    let mut bundle = fx.get("ca.crt").to_vec();
    bundle.extend_from_slice(&mangle_base64(crt, 2, b'*'));
    let (_, reason) = unparseable(&bundle);
    assert!(reason.starts_with("PEM block 2 (CERTIFICATE)"), "{reason}");

    for (file, kind) in [
        ("rsa2048.crt.der", CredKind::Unknown),
        ("rsa2048.der", CredKind::PrivateKey),
        ("p256.sec1.der", CredKind::PrivateKey),
    ] {
        let der = fx.get(file);
        let (claimed, reason) = unparseable(&der[..der.len() - 7]);
        assert_eq!(claimed, kind, "{file}");
        assert!(reason.starts_with("DER truncated"), "{file}: {reason}");
    }
    let mut der = fx.get("rsa2048.crt.der").to_vec();
    der[30] ^= 0xff;
    let (claimed, reason) = unparseable(&der);
    assert_eq!(claimed, CredKind::Unknown);
    assert!(
        reason.starts_with("DER SEQUENCE is no known credential (certificate: "),
        "{reason}"
    );
    let mut der = fx.get("p256.sec1.der").to_vec();
    der[5] = 0x05; // SEC1: the private key OCTET STRING is retagged NULL
    let (claimed, reason) = unparseable(&der);
    assert_eq!(claimed, CredKind::PrivateKey);
    assert!(
        reason.starts_with("DER private key unreadable (PKCS#8: "),
        "{reason}"
    );
}

#[test]
fn other_files_are_not_credentials() {
    let cases: &[&[u8]] = &[
        b"",
        b"0\n",
        b"0 0 and some text that is long enough",
        b"0000\n",
        b"00000000000000000000000000000000000000000000000000000000000000\n",
        b"0\x82",
        b"[kms]\nendpoint = https://kms.example\n",
        b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n",
        b"\x7fELF\x02\x01\x01\x00\x00\x00\x00",
    ];
    for bytes in cases {
        assert_eq!(inspect(bytes), Facts::NotCredential, "{bytes:?}");
        assert_eq!(inspect(bytes).kind(), CredKind::Unknown);
    }
}

#[test]
fn oversized_inputs_and_too_many_blocks_are_refused_with_a_reason() {
    let big = vec![b'A'; MAX_INPUT_BYTES + 1];
    let (_, reason) = unparseable(&big);
    assert!(
        reason.contains("over the 16 MiB inspection limit"),
        "{reason}"
    );

    let many = b"-----BEGIN X-----\nAA==\n-----END X-----\n".repeat(MAX_PEM_BLOCKS + 1);
    let (_, reason) = unparseable(&many);
    assert!(reason.contains("more than 10000 blocks"), "{reason}");
}

/// No fact holds private bytes: the Debug text of every key's facts shares no 12-character
/// run with its base64 body, nor any 6-byte run (as hex) with its DER.
#[test]
fn facts_never_show_key_material() {
    let fx = require_fixtures!();
    for file in ["rsa2048.pem", "p256.sec1.pem", "ed25519.pem", "ssh_ed25519"] {
        let text = fx.get(file);
        let shown = format!("{:?}", inspect(text));
        let body: Vec<u8> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.starts_with(b"-----"))
            .flatten()
            .copied()
            .collect();
        for w in body.windows(12) {
            let w = std::str::from_utf8(w).unwrap();
            assert!(!shown.contains(w), "{file}: {w} shown in {shown}");
        }
        let der = Base64::decode_vec(std::str::from_utf8(&body).unwrap()).unwrap();
        for w in der.windows(6) {
            let h = hex::encode(w);
            assert!(!shown.contains(&h), "{file}: {h} shown in {shown}");
        }
    }
}

const MUTATED: &[&str] = &[
    "rsa2048.crt",
    "ca.crt",
    "rsa2048.pem",
    "p256.sec1.pem",
    "ed25519.pem",
    "rsa2048.pkcs1.pem",
    "rsa2048.enc.pem",
    "rsa2048.pub.pem",
    "ssh_ed25519",
];

const LABELS: &[&str] = &[
    "CERTIFICATE",
    "TRUSTED CERTIFICATE",
    "PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "RSA PRIVATE KEY",
    "EC PRIVATE KEY",
    "DSA PRIVATE KEY",
    "OPENSSH PRIVATE KEY",
    "PUBLIC KEY",
    "RSA PUBLIC KEY",
];

fn pem_wrap(label: &str, der: &[u8]) -> Vec<u8> {
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        Base64::encode_string(der)
    )
    .into_bytes()
}

fn first_block_der(pem: &[u8]) -> Vec<u8> {
    let blocks = super::pem::scan(pem, 10).unwrap();
    blocks[0].der.to_vec()
}

proptest! {
    #[test]
    fn never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = inspect(&bytes);
    }

    #[test]
    fn never_panics_on_random_der_under_credential_labels(
        label in prop::sample::select(LABELS),
        mut der in prop::collection::vec(any::<u8>(), 0..2048),
        seq in any::<bool>(),
    ) {
        if seq && der.len() > 4 {
            // Make the outer header plausible so the parsers get past the first byte.
            der[0] = 0x30;
            der[1] = 0x82;
            let len = u16::try_from(der.len() - 4).unwrap_or(u16::MAX);
            der[2..4].copy_from_slice(&len.to_be_bytes());
        }
        let _ = inspect(&pem_wrap(label, &der));
        let _ = inspect(&der);
    }

    #[test]
    fn never_panics_on_mutated_credentials(
        which in prop::sample::select(MUTATED),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let Some(fx) = fixtures() else { return Ok(()); };
        let pem = fx.get(which);
        let mut der = first_block_der(pem);
        let mut text = pem.to_vec();
        for (at, byte) in &edits {
            let i = at.index(der.len());
            der[i] = *byte;
            let j = at.index(text.len());
            text[j] = *byte;
        }
        if let Some(cut) = cut {
            der.truncate(cut.index(der.len() + 1));
            text.truncate(cut.index(text.len() + 1));
        }
        let _ = inspect(&text);
        let _ = inspect(&der);
        let label = LABELS[edits.len() % LABELS.len()];
        let _ = inspect(&pem_wrap(label, &der));
        // The DER under its own label reaches the matching parser past the base64 layer.
        let own = super::pem::scan(pem, 10).unwrap()[0].label.clone();
        let _ = inspect(&pem_wrap(&own, &der));
    }
}
