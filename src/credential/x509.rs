//! Facts about one X.509 certificate, from its DER, via `x509-parser`.
//!
//! `x509-parser` reads real-world certificates that are not strict DER (serials with the high
//! bit set, explicitly encoded defaults), which a sensor must report rather than call broken.
//! The public key goes through `fingerprint` so it hashes like the matching private
//! key. Must not: verify signatures when reading facts (only [`issued_by`], asked by the
//! rotation check, does, with `x509-parser`'s ring backend), consult the clock (expiry is the caller's comparison), or accept trailing bytes unless told to.

use super::{fingerprint, CertFacts};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::oid::Oid;
use x509_parser::extensions::ParsedExtension;
use x509_parser::objects::{oid2sn, oid_registry};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::X509Name;

/// Parses one certificate. `allow_trailing` is for OpenSSL's `TRUSTED CERTIFICATE`, whose
/// trust settings follow the certificate's DER.
pub(super) fn cert_facts(der: &[u8], allow_trailing: bool) -> Result<CertFacts, String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    if !allow_trailing && !rest.is_empty() {
        return Err(format!("{} bytes after the certificate", rest.len()));
    }
    let (key, spki_sha256) = fingerprint::from_spki_der(cert.public_key().raw)
        .map_err(|e| format!("subject public key: {e}"))?;
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| format!("basicConstraints: {e}"))?
        .map(|bc| bc.value.ca);
    let (signature_algorithm, weak) = signature(&cert);
    Ok(CertFacts {
        subject: name(cert.subject()),
        issuer: name(cert.issuer()),
        serial_hex: hex::encode(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        spki_sha256,
        key,
        signature_algorithm,
        is_ca,
        self_signed: self_issued(&cert),
        sha1_or_md5_signature: weak,
        subject_key_id: ski(&cert).map(hex::encode),
        authority_key_id: aki(&cert).map(hex::encode),
    })
}

/// Whether the certificate `child_der` carries a valid signature by the key of the
/// certificate `issuer_der` (and names it as issuer). Uses `x509-parser`'s `verify` feature
/// (ring); nothing else in this module needs a crypto backend.
pub(super) fn issued_by(child_der: &[u8], issuer_der: &[u8]) -> bool {
    let (Ok((_, child)), Ok((_, issuer))) = (
        x509_parser::parse_x509_certificate(child_der),
        x509_parser::parse_x509_certificate(issuer_der),
    ) else {
        return false;
    };
    child.issuer().as_raw() == issuer.subject().as_raw()
        && child.verify_signature(Some(issuer.public_key())).is_ok()
}

/// `C=US, O=Org, CN=name` in encoded order; an undisplayable name as `#` and its DER in hex,
/// so two different names never print alike.
fn name(n: &X509Name<'_>) -> String {
    n.to_string_with_registry(oid_registry())
        .unwrap_or_else(|_| format!("#{}", hex::encode(n.as_raw())))
}

/// Issuer equals subject, and the key identifiers agree when both are present: a CA that
/// issues under its own name with a new key (rollover) is then not taken for self-signed.
fn self_issued(cert: &X509Certificate<'_>) -> bool {
    if cert.subject().as_raw() != cert.issuer().as_raw() {
        return false;
    }
    match (ski(cert), aki(cert)) {
        (Some(s), Some(a)) => s == a,
        _ => true,
    }
}

fn ski<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
        .ok()
        .flatten()
        .and_then(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        })
}

fn aki<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
        .ok()
        .flatten()
        .and_then(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        })
}

/// The signature algorithm's name and whether its hash is MD2/MD4/MD5/SHA-1.
fn signature(cert: &X509Certificate<'_>) -> (String, bool) {
    let alg = &cert.signature_algorithm;
    let oid = alg.algorithm.to_id_string();
    if let Ok(SignatureAlgorithm::RSASSA_PSS(params)) = SignatureAlgorithm::try_from(alg) {
        // Absent PSS parameters mean SHA-1 (RFC 4055), which hash_algorithm_oid reports.
        let hash = params.hash_algorithm_oid().to_id_string();
        let weak = WEAK_HASHES.contains(&hash.as_str());
        return (format!("rsassa-pss({})", hash_name(&hash)), weak);
    }
    let weak = WEAK_SIGNATURES.contains(&oid.as_str());
    let name = registry_name(&alg.algorithm)
        .or_else(|| {
            SIGNATURE_NAMES
                .iter()
                .find(|(o, _)| *o == oid)
                .map(|(_, n)| (*n).to_owned())
        })
        .unwrap_or(oid);
    (name, weak)
}

fn registry_name(oid: &Oid<'_>) -> Option<String> {
    oid2sn(oid, oid_registry()).ok().map(str::to_owned)
}

fn hash_name(dotted: &str) -> String {
    match HASH_NAMES.iter().find(|(o, _)| *o == dotted) {
        Some((_, n)) => (*n).to_owned(),
        None => dotted.to_owned(),
    }
}

/// Signature algorithms over MD2, MD4, MD5 or SHA-1.
const WEAK_SIGNATURES: &[&str] = &[
    "1.2.840.113549.1.1.2", // md2WithRSAEncryption
    "1.2.840.113549.1.1.3", // md4WithRSAEncryption
    "1.2.840.113549.1.1.4", // md5WithRSAEncryption
    "1.2.840.113549.1.1.5", // sha1WithRSAEncryption
    "1.3.14.3.2.3",         // md5WithRSA (OIW)
    "1.3.14.3.2.25",        // md5WithRSASignature (OIW)
    "1.3.14.3.2.29",        // sha1WithRSASignature (OIW)
    "1.2.840.10040.4.3",    // dsa-with-sha1
    "1.2.840.10045.4.1",    // ecdsa-with-SHA1
    "1.3.14.3.2.27",        // dsaWithSHA1 (OIW)
];

/// Names the OID registry lacks.
const SIGNATURE_NAMES: &[(&str, &str)] = &[
    ("1.2.840.10045.4.1", "ecdsa-with-SHA1"),
    ("1.2.840.10040.4.3", "dsa-with-sha1"),
    ("1.3.14.3.2.29", "sha1WithRSASignature"),
    ("1.3.14.3.2.27", "dsaWithSHA1"),
];

const WEAK_HASHES: &[&str] = &["1.3.14.3.2.26", "1.2.840.113549.2.5", "1.2.840.113549.2.2"];

const HASH_NAMES: &[(&str, &str)] = &[
    ("1.3.14.3.2.26", "sha1"),
    ("1.2.840.113549.2.5", "md5"),
    ("2.16.840.1.101.3.4.2.4", "sha224"),
    ("2.16.840.1.101.3.4.2.1", "sha256"),
    ("2.16.840.1.101.3.4.2.2", "sha384"),
    ("2.16.840.1.101.3.4.2.3", "sha512"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_certificate_and_trailing_bytes_are_errors() {
        let e = cert_facts(b"\x30\x03\x02\x01\x00", false).unwrap_err();
        assert!(e.starts_with("not an X.509 certificate"), "{e}");
        assert!(cert_facts(b"", false).is_err());
    }

    #[test]
    fn hash_names() {
        assert_eq!(hash_name("2.16.840.1.101.3.4.2.1"), "sha256");
        assert_eq!(hash_name("1.2.3"), "1.2.3");
    }
}
