//! What the baseline records about a credential file ([`CredRecord`]: facts, never key
//! material), and the one place credential bytes are read from disk ([`scan`]).
//!
//! `scan` opens the file the walker just recorded through the run's [`Root`] (parent resolved
//! inside the root, the name opened `O_NOFOLLOW | O_NONBLOCK`, `fstat` must show a regular
//! file), reads at most [`super::MAX_INPUT_BYTES`] into a zeroizing buffer, and checks that the
//! bytes hash to the BLAKE3 the walker recorded: facts always describe the content the
//! baseline vouches for, never a file swapped in between the two reads.

use super::{inspect, CertFacts, CredKind, Facts, KeyFacts, PublicKeyFacts};
use crate::baseline::{Entry, FileType};
use crate::fsroot::Root;
use crate::policy::Class;
use rustix::fs::{Mode, OFlags};
use std::io::Read;
use zeroize::Zeroizing;

/// Generic files larger than this are not sniffed for credentials.
pub const SNIFF_MAX_BYTES: u64 = 1 << 20;

/// Facts about one credential file, as stored in the baseline (`credentials.facts`, JSON).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CredRecord {
    pub kind: CredKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<CertFacts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyFacts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<PublicKeyFacts>,
    /// Why a file that claims to be a credential does not parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unparseable: Option<String>,
}

impl CredRecord {
    /// The record for `facts`; `None` for a file that holds no credential.
    pub fn from_facts(facts: Facts) -> Option<CredRecord> {
        let kind = facts.kind();
        let mut r = CredRecord {
            kind,
            certs: Vec::new(),
            keys: Vec::new(),
            public_keys: Vec::new(),
            unparseable: None,
        };
        match facts {
            Facts::NotCredential => return None,
            Facts::Certs(c) => r.certs = c,
            Facts::Key(k) => r.keys.push(k),
            Facts::PublicKey(p) => r.public_keys.push(p),
            Facts::Mixed(items) => {
                for c in items {
                    match c {
                        super::Credential::Cert(x) => r.certs.push(x),
                        super::Credential::Key(x) => r.keys.push(x),
                        super::Credential::PublicKey(x) => r.public_keys.push(x),
                    }
                }
            }
            Facts::Unparseable { claimed, reason } => {
                r.kind = claimed;
                r.unparseable = Some(reason);
            }
        }
        Some(r)
    }

    /// Whether this unparseable file's PEM armour names a certificate or a private key
    /// (`-----BEGIN CERTIFICATE-----`, `PRIVATE KEY`, `RSA PRIVATE KEY`...): a damaged
    /// credential, whatever its group's class. PEM failures are the ones worded `PEM ...`
    /// (see `pem::PemError` and `inspect_pem`); DER shapes and size limits are not armour.
    pub fn armour_claims_credential(&self) -> bool {
        matches!(
            self.kind,
            CredKind::Certificate | CredKind::CertificateBundle | CredKind::PrivateKey
        ) && self
            .unparseable
            .as_deref()
            .is_some_and(|r| r.starts_with("PEM"))
    }

    /// The stored spelling of `kind`.
    pub fn kind_str(&self) -> &'static str {
        match self.kind {
            CredKind::Certificate => "certificate",
            CredKind::CertificateBundle => "certificate-bundle",
            CredKind::PrivateKey => "private-key",
            CredKind::PublicKey => "public-key",
            CredKind::Mixed => "mixed",
            CredKind::Unknown => "unknown",
        }
    }

    /// JSON for the database.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// From the database's JSON.
    pub fn from_json(text: &str) -> Result<CredRecord, String> {
        serde_json::from_str(text).map_err(|e| format!("credential facts: {e}"))
    }
}

/// A credential file as read during a run: its facts, the BLAKE3 of the bytes they came from,
/// and (when asked) the DER of its certificates for chain checks.
#[derive(Clone, Debug)]
pub struct Scanned {
    pub path: Vec<u8>,
    pub blake3: [u8; 32],
    pub record: CredRecord,
    pub cert_ders: Vec<Vec<u8>>,
}

/// Whether `e` is a file whose credentials are inspected: every regular file of a
/// `private-key`, `client-cert` or `ca-cert` group, and generic files up to
/// [`SNIFF_MAX_BYTES`] with a credential-like name (`.pem`, `.crt`, `.key`...), sniffed and
/// kept only when they hold a credential.
pub fn wants(e: &Entry) -> bool {
    if e.ftype != FileType::File || e.problem.is_some() {
        return false;
    }
    match e.class {
        Class::PrivateKey | Class::ClientCert | Class::CaCert => true,
        // Opening every generic file a second time would double the cost of a verify over
        // a large tree; credential files carry credential names in practice.
        Class::Generic => e.size <= SNIFF_MAX_BYTES && credential_name(&e.path),
        Class::KmsConfig | Class::ProviderBinary => false,
    }
}

/// A file name that suggests a certificate or key.
fn credential_name(path: &[u8]) -> bool {
    const EXT: [&[u8]; 10] = [
        b".pem",
        b".crt",
        b".cer",
        b".cert",
        b".key",
        b".der",
        b".p8",
        b".pk8",
        b".ca-bundle",
        b".chain",
    ];
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    EXT.iter()
        .any(|x| name.len() > x.len() && name.to_ascii_lowercase().ends_with(x))
}

/// Read `e` under `root` and inspect it. `Ok(None)`: a generic file without credentials.
/// When `e` carries hashes, bytes that hash differently are an error (the file changed after
/// the walker read it; the next run sees it settled).
pub fn scan(root: &Root, e: &Entry, keep_ders: bool) -> std::io::Result<Option<Scanned>> {
    let limit = super::MAX_INPUT_BYTES as u64;
    let bytes = read_file(root, &e.path, limit + 1)?;
    let blake3 = *blake3::hash(&bytes).as_bytes();
    if let Some(h) = &e.hashes {
        if h.blake3 != blake3 {
            return Err(std::io::Error::other(
                "the file changed between hashing and credential inspection",
            ));
        }
    }
    Ok(scan_bytes(e, &bytes, blake3, keep_ders))
}

/// [`scan`] over content already read: `bytes` are the bytes `e`'s digests were computed
/// over (the walker hands them over), `blake3` their digest.
pub fn scan_read(e: &Entry, bytes: &[u8], keep_ders: bool) -> Option<Scanned> {
    let blake3 = e
        .hashes
        .map_or_else(|| *blake3::hash(bytes).as_bytes(), |h| h.blake3);
    scan_bytes(e, bytes, blake3, keep_ders)
}

fn scan_bytes(e: &Entry, bytes: &[u8], blake3: [u8; 32], keep_ders: bool) -> Option<Scanned> {
    if e.class == Class::Generic && !sniff(bytes) {
        return None;
    }
    let record = CredRecord::from_facts(inspect(bytes))?;
    // DERs are kept for files that hold a certificate able to issue others (a CA or a
    // self-signed root): they are the candidate issuers when a renewal is checked. A leaf's
    // own DER is re-read only if it turns out to be a rotation candidate, so a tree of
    // thousands of leaf certificates does not keep every one in memory.
    let issuer_like = record
        .certs
        .iter()
        .any(|c| c.is_ca == Some(true) || c.self_signed);
    let cert_ders = if keep_ders && issuer_like {
        super::certificate_ders(bytes)
    } else {
        Vec::new()
    };
    Some(Scanned {
        path: e.path.clone(),
        blake3,
        record,
        cert_ders,
    })
}

/// A cheap look before parsing a generic file: PEM armour somewhere, or a DER SEQUENCE start.
fn sniff(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x30) || bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Read up to `limit` bytes of the regular file at host-absolute `path` under `root`, never
/// following a symlink in its last component and never blocking on a FIFO swapped in.
pub fn read_file(root: &Root, path: &[u8], limit: u64) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let (dir, name) = root.open_parent(path)?;
    let fd = rustix::fs::openat(
        &dir,
        name.as_c_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_mode(st.st_mode) != FileType::File {
        return Err(std::io::Error::other("not a regular file"));
    }
    let size = u64::try_from(st.st_size).unwrap_or(0).min(limit);
    // Pre-sized so growing never leaves an unzeroed copy of key bytes behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(
        usize::try_from(size).unwrap_or(0).saturating_add(1),
    ));
    std::fs::File::from(fd).take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json() {
        let r = CredRecord {
            kind: CredKind::Unknown,
            certs: vec![],
            keys: vec![],
            public_keys: vec![],
            unparseable: Some("PEM block 1 (CERTIFICATE): bad".into()),
        };
        assert_eq!(CredRecord::from_json(&r.to_json()).unwrap(), r);
        assert!(CredRecord::from_json("{").is_err());
    }

    #[test]
    fn generic_files_are_sniffed_by_credential_names() {
        assert!(credential_name(b"/etc/x/client.PEM"));
        assert!(credential_name(b"/etc/x/tls.key"));
        assert!(!credential_name(b"/etc/x/.pem"));
        assert!(!credential_name(b"/etc/key.d/config.yaml"));
    }

    #[test]
    fn sniffing_needs_armour_or_der() {
        assert!(sniff(b"junk\n-----BEGIN CERTIFICATE-----\n"));
        assert!(sniff(b"\x30\x82"));
        assert!(!sniff(b"key = value\n"));
    }
}
