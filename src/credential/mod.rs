//! Recognises credential files from their bytes and returns facts about them: what kind of
//! credential, which algorithm and size, validity dates, whether a key is encrypted, and the
//! SHA-256 of its SubjectPublicKeyInfo (SPKI), by which a certificate is matched to its key.
//!
//! Owns the dispatch from raw bytes (PEM with any number of blocks and junk around them, or a
//! single DER object) to the parsers in `x509`, `key` and `openssh`, and the fact types.
//! Must not: do I/O outside `record::read_file` (the one reader, through `fsroot`), verify
//! signatures outside `issued_by` (rotation checks), panic on any input, or hand out key
//! material. Judgement lives beside the facts: `posture` (rules), `rotation` (renewals),
//! `elf` (provider builds); all three are pure. Private key bytes stay in zeroized buffers inside
//! this module; no fact type holds them, so `Debug` on every fact type is safe to derive.
//! Strings in facts (subject, issuer) are chosen by whoever made the certificate: print them
//! through [`crate::sanitize`].

pub mod elf;
mod fingerprint;
mod key;
mod openssh;
mod pem;
pub mod posture;
pub mod record;
pub mod rotation;
mod x509;

pub use record::{CredRecord, Scanned};

#[cfg(test)]
mod fixtures;

use std::fmt;

/// Inputs larger than this are not inspected: credential files are kilobytes, and a sensor
/// must not spend seconds parsing a multi-gigabyte file someone dropped into a key directory.
pub const MAX_INPUT_BYTES: usize = 16 << 20;

/// At most this many PEM blocks are looked at; a real CA bundle has a few hundred.
pub const MAX_PEM_BLOCKS: usize = 10_000;

/// SHA-256 over the canonical DER of a SubjectPublicKeyInfo: equal for a certificate and the
/// private key that belongs to it (see `fingerprint.rs` for what "canonical" means).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpkiSha256(pub [u8; 32]);

impl serde::Serialize for SpkiSha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for SpkiSha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(SpkiSha256(out))
    }
}

impl fmt::Debug for SpkiSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spki-sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Display for SpkiSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// What a file holds, coarsely: what a policy group of credential files compares against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredKind {
    Certificate,
    CertificateBundle,
    PrivateKey,
    PublicKey,
    /// Several kinds in one file, e.g. a TLS server's key followed by its chain.
    Mixed,
    Unknown,
}

/// A public key algorithm and its size.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgo {
    Rsa {
        bits: u32,
    },
    /// `curve` is "P-256", "P-384", "P-521", "secp256k1", a brainpool name, or the dotted OID
    /// of a curve not in that list (then `bits` is 0).
    Ec {
        curve: String,
        bits: u32,
    },
    Ed25519,
    Ed448,
    Dsa {
        bits: u32,
    },
    /// Anything else, named by its OID or SSH algorithm name (X25519 and X448 are named).
    Other(String),
}

impl KeyAlgo {
    /// Why the key is too weak for a KMS credential (RSA or DSA under 2048 bits, EC under
    /// 256), or `None`.
    pub fn weakness(&self) -> Option<String> {
        match self {
            KeyAlgo::Rsa { bits } if *bits < 2048 => {
                Some(format!("RSA key of {bits} bits (< 2048)"))
            }
            KeyAlgo::Dsa { bits } if *bits < 2048 => {
                Some(format!("DSA key of {bits} bits (< 2048)"))
            }
            KeyAlgo::Ec { curve, bits } if *bits != 0 && *bits < 256 => {
                Some(format!("EC key on {curve}, {bits} bits (< 256)"))
            }
            _ => None,
        }
    }
}

impl fmt::Display for KeyAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgo::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyAlgo::Ec { curve, .. } => write!(f, "EC {curve}"),
            KeyAlgo::Ed25519 => f.write_str("Ed25519"),
            KeyAlgo::Ed448 => f.write_str("Ed448"),
            KeyAlgo::Dsa { bits } => write!(f, "DSA-{bits}"),
            KeyAlgo::Other(name) => f.write_str(name),
        }
    }
}

/// Facts about one X.509 certificate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertFacts {
    /// One-line form in encoded order, as OpenSSL prints it: `C=US, O=Org, CN=name`.
    /// Chosen by whoever made the certificate: print through `sanitize`.
    pub subject: String,
    pub issuer: String,
    /// Lower-case hex of the serial's DER content bytes, no separators.
    pub serial_hex: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub spki_sha256: SpkiSha256,
    pub key: KeyAlgo,
    /// The registry's short name, e.g. `sha256WithRSAEncryption`, `ecdsa-with-SHA256`,
    /// `ed25519`; `rsassa-pss(sha256)` for PSS; the dotted OID when unnamed.
    pub signature_algorithm: String,
    /// basicConstraints `cA`; `None` when the certificate has no basicConstraints.
    pub is_ca: Option<bool>,
    /// Self-issued: issuer equals subject and, when both key identifiers are present, the
    /// authority key identifier equals the subject key identifier. The signature itself is
    /// not verified (that would need a crypto backend, and facts do not need it).
    pub self_signed: bool,
    /// Signed with MD2, MD4, MD5 or SHA-1 (including RSASSA-PSS over SHA-1).
    pub sha1_or_md5_signature: bool,
    /// subjectKeyIdentifier, lower-case hex, when present.
    #[serde(default)]
    pub subject_key_id: Option<String>,
    /// authorityKeyIdentifier's keyIdentifier, lower-case hex, when present: which issuer key
    /// signed this certificate, as the certificate claims it.
    #[serde(default)]
    pub authority_key_id: Option<String>,
}

/// How a key is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyFormat {
    /// PKCS#8 `PrivateKeyInfo` / `OneAsymmetricKey` (`BEGIN PRIVATE KEY`).
    Pkcs8,
    /// PKCS#8 `EncryptedPrivateKeyInfo` (`BEGIN ENCRYPTED PRIVATE KEY`).
    EncryptedPkcs8,
    /// PKCS#1 `RSAPrivateKey` (`BEGIN RSA PRIVATE KEY`), possibly with legacy PEM encryption.
    Pkcs1,
    /// SEC1 `ECPrivateKey` (`BEGIN EC PRIVATE KEY`), possibly with legacy PEM encryption.
    Sec1,
    /// OpenSSL's traditional DSA structure (`BEGIN DSA PRIVATE KEY`).
    DsaLegacy,
    /// `openssh-key-v1` (`BEGIN OPENSSH PRIVATE KEY`).
    OpenSsh,
    /// SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`).
    Spki,
    /// PKCS#1 `RSAPublicKey` (`BEGIN RSA PUBLIC KEY`).
    Pkcs1Public,
}

/// Facts about one private key. Holds no private bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyFacts {
    pub format: KeyFormat,
    pub encrypted: bool,
    /// `None` when the key is encrypted and its algorithm is not stated outside the
    /// ciphertext (encrypted PKCS#8, legacy-encrypted SEC1 has the curve hidden too).
    pub key: Option<KeyAlgo>,
    /// `None` when the public key is neither stored with the private key nor cheaply derived
    /// (encrypted keys; DSA, Ed448 and X25519/X448 keys without a stored public key).
    pub spki_sha256: Option<SpkiSha256>,
    /// How an encrypted key is protected, e.g. `PBES2(PBKDF2-hmacWithSHA256, aes-256-cbc)`,
    /// `AES-128-CBC` (legacy PEM `DEK-Info`), `aes256-ctr(bcrypt)` (OpenSSH).
    pub encryption: Option<String>,
}

/// Facts about one public key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublicKeyFacts {
    pub format: KeyFormat,
    pub key: KeyAlgo,
    pub spki_sha256: SpkiSha256,
}

/// One credential found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    Cert(CertFacts),
    Key(KeyFacts),
    PublicKey(PublicKeyFacts),
}

/// What [`inspect`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Facts {
    /// One or more certificates and nothing else, in file order.
    Certs(Vec<CertFacts>),
    /// Exactly one private key and nothing else.
    Key(KeyFacts),
    /// Exactly one public key and nothing else.
    PublicKey(PublicKeyFacts),
    /// Anything else that parsed: several keys, or keys and certificates together.
    Mixed(Vec<Credential>),
    /// PEM or DER that does not parse: a credential block that is damaged, PEM framing that
    /// is broken, a DER credential cut short, or an input over [`MAX_INPUT_BYTES`].
    /// `claimed` is what the PEM label or the DER shape said, `Unknown` when nothing did.
    Unparseable { claimed: CredKind, reason: String },
    /// No credential: no PEM block with a credential label, and not a DER credential.
    NotCredential,
}

impl Facts {
    /// The coarse kind, for policy checks.
    pub fn kind(&self) -> CredKind {
        match self {
            Facts::Certs(c) if c.len() == 1 => CredKind::Certificate,
            Facts::Certs(_) => CredKind::CertificateBundle,
            Facts::Key(_) => CredKind::PrivateKey,
            Facts::PublicKey(_) => CredKind::PublicKey,
            Facts::Mixed(_) => CredKind::Mixed,
            Facts::Unparseable { .. } | Facts::NotCredential => CredKind::Unknown,
        }
    }

    /// Groups credentials found in file order into the narrowest variant.
    fn from_credentials(mut found: Vec<Credential>) -> Facts {
        if found.is_empty() {
            return Facts::NotCredential;
        }
        if found.iter().all(|c| matches!(c, Credential::Cert(_))) {
            let certs = found
                .into_iter()
                .filter_map(|c| match c {
                    Credential::Cert(cert) => Some(cert),
                    _ => None,
                })
                .collect();
            return Facts::Certs(certs);
        }
        if found.len() == 1 {
            match found.pop() {
                Some(Credential::Key(k)) => return Facts::Key(k),
                Some(Credential::PublicKey(p)) => return Facts::PublicKey(p),
                Some(other) => found.push(other),
                None => {}
            }
        }
        Facts::Mixed(found)
    }
}

/// Facts about the credentials in `bytes`: PEM (any number of blocks, in any order, with text
/// around them) or a single DER certificate, PKCS#8 (plain or encrypted), PKCS#1, SEC1 or
/// SubjectPublicKeyInfo. Never panics; a block that claims to be a credential but does not
/// parse makes the whole file [`Facts::Unparseable`], since a half-read bundle is not a fact.
pub fn inspect(bytes: &[u8]) -> Facts {
    if bytes.len() > MAX_INPUT_BYTES {
        return Facts::Unparseable {
            claimed: CredKind::Unknown,
            reason: format!(
                "{} bytes, over the {} MiB inspection limit; not inspected",
                bytes.len(),
                MAX_INPUT_BYTES >> 20
            ),
        };
    }
    match pem::scan(bytes, MAX_PEM_BLOCKS) {
        Err(e) => Facts::Unparseable {
            claimed: e
                .label
                .as_deref()
                .map_or(CredKind::Unknown, claimed_by_label),
            reason: e.to_string(),
        },
        Ok(blocks) if blocks.is_empty() => inspect_der(bytes),
        Ok(blocks) => inspect_pem(&blocks),
    }
}

/// The DER of every certificate in `bytes` (PEM blocks labelled `CERTIFICATE`, or one DER
/// certificate), for chain checks. Certificates are public; key blocks are never returned.
pub fn certificate_ders(bytes: &[u8]) -> Vec<Vec<u8>> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Vec::new();
    }
    match pem::scan(bytes, MAX_PEM_BLOCKS) {
        Ok(blocks) if blocks.is_empty() => match x509::cert_facts(bytes, false) {
            Ok(_) => vec![bytes.to_vec()],
            Err(_) => Vec::new(),
        },
        Ok(blocks) => blocks
            .iter()
            .filter(|b| matches!(b.label.as_str(), "CERTIFICATE" | "X509 CERTIFICATE"))
            .map(|b| b.der.to_vec())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether certificate `child_der` is validly signed by the key of certificate `issuer_der`
/// and names its subject as issuer.
pub fn issued_by(child_der: &[u8], issuer_der: &[u8]) -> bool {
    x509::issued_by(child_der, issuer_der)
}

/// What a PEM label says the block is; `Unknown` for labels that are not credentials.
fn claimed_by_label(label: &str) -> CredKind {
    match label {
        "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE" => CredKind::Certificate,
        "PRIVATE KEY"
        | "ENCRYPTED PRIVATE KEY"
        | "RSA PRIVATE KEY"
        | "EC PRIVATE KEY"
        | "DSA PRIVATE KEY"
        | "OPENSSH PRIVATE KEY" => CredKind::PrivateKey,
        "PUBLIC KEY" | "RSA PUBLIC KEY" => CredKind::PublicKey,
        _ => CredKind::Unknown,
    }
}

fn inspect_pem(blocks: &[pem::Block]) -> Facts {
    let mut found = Vec::new();
    for b in blocks {
        let der: &[u8] = &b.der;
        let parsed = match b.label.as_str() {
            "CERTIFICATE" | "X509 CERTIFICATE" => {
                x509::cert_facts(der, false).map(Credential::Cert)
            }
            // OpenSSL appends its trust settings after the certificate's DER.
            "TRUSTED CERTIFICATE" => x509::cert_facts(der, true).map(Credential::Cert),
            "PRIVATE KEY" => key::pkcs8(der).map(Credential::Key),
            "ENCRYPTED PRIVATE KEY" => key::encrypted_pkcs8(der).map(Credential::Key),
            "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "DSA PRIVATE KEY" => {
                key::traditional(&b.label, &b.headers, der).map(Credential::Key)
            }
            "OPENSSH PRIVATE KEY" => openssh::private_key(der).map(Credential::Key),
            "PUBLIC KEY" => key::spki_public(der).map(Credential::PublicKey),
            "RSA PUBLIC KEY" => key::pkcs1_public(der).map(Credential::PublicKey),
            // Parameters, CRLs, requests, PKCS#7: not credentials in this module's sense.
            _ => continue,
        };
        match parsed {
            Ok(c) => found.push(c),
            Err(reason) => {
                return Facts::Unparseable {
                    claimed: claimed_by_label(&b.label),
                    reason: format!("PEM block {} ({}): {reason}", b.index, b.label),
                }
            }
        }
    }
    Facts::from_credentials(found)
}

/// Where a DER object starts with a SEQUENCE, the outer length must cover the input exactly
/// (trailing whitespace aside) and the first inner element must be a SEQUENCE or an INTEGER,
/// as in every structure tried here. That keeps a text file starting with `0` from being
/// reported as a broken credential.
fn inspect_der(bytes: &[u8]) -> Facts {
    let (header_len, content_len) = match der_outer(bytes) {
        Some(lens) => lens,
        None => return Facts::NotCredential,
    };
    let key_shaped = bytes.get(header_len) == Some(&0x02);
    let total = header_len.saturating_add(content_len);
    if total > bytes.len() {
        return Facts::Unparseable {
            claimed: if key_shaped {
                CredKind::PrivateKey
            } else {
                CredKind::Unknown
            },
            reason: format!(
                "DER truncated: the outer SEQUENCE claims {total} bytes, the file has {}",
                bytes.len()
            ),
        };
    }
    let (der, rest) = bytes.split_at(total);
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Facts::NotCredential;
    }
    // The first inner element tells the families apart: a version INTEGER opens every
    // private key tried here; a SEQUENCE opens a certificate (TBSCertificate), an encrypted
    // PKCS#8 key (its AlgorithmIdentifier) and an SPKI. Trying one family keeps the reason
    // for a damaged file to the parsers that could have read it.
    let mut reasons = Vec::new();
    if key_shaped {
        type KeyParser = fn(&[u8]) -> Result<KeyFacts, String>;
        let parsers: [(&str, KeyParser); 3] = [
            ("PKCS#8", key::pkcs8),
            ("PKCS#1", key::pkcs1),
            ("SEC1", key::sec1),
        ];
        for (name, parse) in parsers {
            match parse(der) {
                Ok(k) => return Facts::Key(k),
                Err(e) => reasons.push(format!("{name}: {e}")),
            }
        }
        return Facts::Unparseable {
            claimed: CredKind::PrivateKey,
            reason: format!("DER private key unreadable ({})", reasons.join("; ")),
        };
    }
    match x509::cert_facts(der, false) {
        Ok(c) => return Facts::Certs(vec![c]),
        Err(e) => reasons.push(format!("certificate: {e}")),
    }
    match key::encrypted_pkcs8(der) {
        Ok(k) => return Facts::Key(k),
        Err(e) => reasons.push(format!("encrypted PKCS#8: {e}")),
    }
    match key::spki_public(der) {
        Ok(p) => return Facts::PublicKey(p),
        Err(e) => reasons.push(format!("public key: {e}")),
    }
    Facts::Unparseable {
        claimed: CredKind::Unknown,
        reason: format!(
            "DER SEQUENCE is no known credential ({})",
            reasons.join("; ")
        ),
    }
}

/// `(header length, content length)` of what looks like a DER SEQUENCE holding a SEQUENCE
/// or INTEGER first; `None` when `bytes` does not look like one. Text can look like a short
/// DER header ("00" is `30 30`), never like a long one (`30 82`: 0x82 is not ASCII), so a
/// short header also needs a binary byte right after the inner tag (`02 01` for a version,
/// a length under 0x20 or over 0x7f for a SEQUENCE).
fn der_outer(bytes: &[u8]) -> Option<(usize, usize)> {
    if bytes.first() != Some(&0x30) {
        return None;
    }
    let first_len = *bytes.get(1)?;
    let long_form = first_len >= 0x80;
    let (header_len, content_len) = if !long_form {
        (2, usize::from(first_len))
    } else {
        // 1 to 4 length bytes (4 GiB is far beyond MAX_INPUT_BYTES anyway).
        let n = usize::from(first_len & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len_bytes = bytes.get(2..2 + n)?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (2 + n, len)
    };
    let binary_next = bytes
        .get(header_len + 1)
        .is_some_and(|b| !(b.is_ascii_graphic() || b.is_ascii_whitespace()));
    match bytes.get(header_len) {
        Some(0x30 | 0x02) if long_form || binary_next => Some((header_len, content_len)),
        // A file cut right after a long header is still reported as truncated DER.
        None if long_form => Some((header_len, content_len)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
