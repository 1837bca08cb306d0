//! Facts about private keys in PKCS#8 (plain and encrypted), PKCS#1, SEC1 and OpenSSL's
//! traditional DSA form, and about public keys (SubjectPublicKeyInfo, PKCS#1).
//!
//! Reads the public half (modulus and exponent, curve and point, the Ed25519 public key) out
//! of the private structure so the key's SPKI fingerprint can be compared with a
//! certificate's. The private numbers are borrowed from the caller's zeroized buffer and never
//! copied, except the 32-byte Ed25519 seed, which lives in a zeroizing array just long enough
//! to derive the public key. Must not: decrypt anything, return or log private bytes, or do
//! arithmetic heavier than that one Ed25519 scalar multiplication (no DSA `g^x mod p`, no EC
//! point multiplication).

use super::fingerprint::{
    der_err, ec_algo, other_algo, uint_bits, PublicKey, EC_PUBLIC_KEY, ED25519, ED448, RSASSA_PSS,
    RSA_ENCRYPTION,
};
use super::{KeyAlgo, KeyFacts, KeyFormat, PublicKeyFacts, SpkiSha256};
use der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef, UintRef};
use der::{Decode, Reader, SliceReader, Tag, Tagged};
use spki::AlgorithmIdentifierRef;
use zeroize::Zeroizing;

/// PKCS#8 `PrivateKeyInfo` (v1) or `OneAsymmetricKey` (v2, may carry the public key).
pub(super) fn pkcs8(der: &[u8]) -> Result<KeyFacts, String> {
    let pki = pkcs8::PrivateKeyInfo::from_der(der).map_err(|e| e.to_string())?;
    let oid = pki.algorithm.oid;
    let (key, spki_sha256) = if oid == RSA_ENCRYPTION || oid == RSASSA_PSS {
        rsa(pki.private_key)?
    } else if oid == EC_PUBLIC_KEY {
        let curve = pki
            .algorithm
            .parameters_oid()
            .map_err(|e| format!("EC key names no curve: {e}"))?;
        let ec =
            sec1::EcPrivateKey::from_der(pki.private_key).map_err(|e| format!("EC key: {e}"))?;
        ec_public(curve, pki.public_key.or(ec.public_key))?
    } else if oid == ED25519 {
        let public = match pki.public_key {
            Some(p) => Some(PublicKey::Ed25519(p).sha256()?),
            None => Some(ed25519_public(pki.private_key)?),
        };
        (KeyAlgo::Ed25519, public)
    } else if oid == ED448 {
        // Deriving an Ed448 public key needs a crate we do not otherwise carry.
        let public = pki.public_key.map(|p| PublicKey::Ed448(p).sha256());
        (KeyAlgo::Ed448, public.transpose()?)
    } else {
        (other_algo(&pki.algorithm), None)
    };
    Ok(KeyFacts {
        format: KeyFormat::Pkcs8,
        encrypted: false,
        key: Some(key),
        spki_sha256,
        encryption: None,
    })
}

/// PKCS#8 `EncryptedPrivateKeyInfo ::= SEQUENCE { encryptionAlgorithm, encryptedData }`.
/// The key's algorithm is inside the ciphertext, so only the protection is reported.
pub(super) fn encrypted_pkcs8(der: &[u8]) -> Result<KeyFacts, String> {
    let mut reader = SliceReader::new(der).map_err(der_err)?;
    let alg = reader
        .sequence(|r| {
            let alg: AlgorithmIdentifierRef<'_> = r.decode()?;
            let _ciphertext: OctetStringRef<'_> = r.decode()?;
            Ok(alg)
        })
        .map_err(der_err)?;
    let alg = reader.finish(alg).map_err(der_err)?;
    Ok(KeyFacts {
        format: KeyFormat::EncryptedPkcs8,
        encrypted: true,
        key: None,
        spki_sha256: None,
        encryption: Some(describe_encryption(&alg)),
    })
}

/// `RSA PRIVATE KEY`, `EC PRIVATE KEY` or `DSA PRIVATE KEY`, possibly encrypted the legacy
/// OpenSSL way (`Proc-Type: 4,ENCRYPTED` and `DEK-Info: CIPHER,IV` headers).
pub(super) fn traditional(
    label: &str,
    headers: &[(String, String)],
    der: &[u8],
) -> Result<KeyFacts, String> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if header("Proc-Type").is_some_and(|v| v.contains("ENCRYPTED")) {
        let format = match label {
            "RSA PRIVATE KEY" => KeyFormat::Pkcs1,
            "EC PRIVATE KEY" => KeyFormat::Sec1,
            _ => KeyFormat::DsaLegacy,
        };
        let cipher = header("DEK-Info")
            .and_then(|v| v.split(',').next())
            .unwrap_or("unknown cipher");
        return Ok(KeyFacts {
            format,
            encrypted: true,
            key: None,
            spki_sha256: None,
            encryption: Some(cipher.to_owned()),
        });
    }
    match label {
        "RSA PRIVATE KEY" => pkcs1(der),
        "EC PRIVATE KEY" => sec1(der),
        _ => dsa_legacy(der),
    }
}

/// PKCS#1 `RSAPrivateKey`.
pub(super) fn pkcs1(der: &[u8]) -> Result<KeyFacts, String> {
    let (key, spki_sha256) = rsa(der)?;
    Ok(KeyFacts {
        format: KeyFormat::Pkcs1,
        encrypted: false,
        key: Some(key),
        spki_sha256,
        encryption: None,
    })
}

/// SEC1 `ECPrivateKey` standing alone (the curve should then be in its parameters).
pub(super) fn sec1(der: &[u8]) -> Result<KeyFacts, String> {
    let ec = sec1::EcPrivateKey::from_der(der).map_err(|e| e.to_string())?;
    let (key, spki_sha256) = match ec.parameters.and_then(|p| p.named_curve()) {
        Some(curve) => ec_public(curve, ec.public_key)?,
        None => (
            KeyAlgo::Ec {
                curve: "not stated".to_owned(),
                bits: 0,
            },
            None,
        ),
    };
    Ok(KeyFacts {
        format: KeyFormat::Sec1,
        encrypted: false,
        key: Some(key),
        spki_sha256,
        encryption: None,
    })
}

/// OpenSSL's `DSAPrivateKey ::= SEQUENCE { version, p, q, g, y, x INTEGER }`. The size is
/// reported; no fingerprint, DSA being too rare to carry an SPKI builder for.
fn dsa_legacy(der: &[u8]) -> Result<KeyFacts, String> {
    let mut reader = SliceReader::new(der).map_err(der_err)?;
    let p_bits = reader
        .sequence(|r| {
            let _version: UintRef<'_> = r.decode()?;
            let p: UintRef<'_> = r.decode()?;
            // q, g, y and x: read so the structure is checked whole, then dropped.
            for _ in 0..4 {
                let _: UintRef<'_> = r.decode()?;
            }
            Ok(uint_bits(p.as_bytes()))
        })
        .map_err(der_err)?;
    let p_bits = reader.finish(p_bits).map_err(der_err)?;
    Ok(KeyFacts {
        format: KeyFormat::DsaLegacy,
        encrypted: false,
        key: Some(KeyAlgo::Dsa { bits: p_bits }),
        spki_sha256: None,
        encryption: None,
    })
}

/// `PUBLIC KEY`: a SubjectPublicKeyInfo.
pub(super) fn spki_public(der: &[u8]) -> Result<PublicKeyFacts, String> {
    let (key, spki_sha256) = super::fingerprint::from_spki_der(der)?;
    Ok(PublicKeyFacts {
        format: KeyFormat::Spki,
        key,
        spki_sha256,
    })
}

/// `RSA PUBLIC KEY`: PKCS#1 `RSAPublicKey`.
pub(super) fn pkcs1_public(der: &[u8]) -> Result<PublicKeyFacts, String> {
    let rsa = pkcs1::RsaPublicKey::from_der(der).map_err(|e| e.to_string())?;
    let public = PublicKey::Rsa {
        n: rsa.modulus.as_bytes(),
        e: rsa.public_exponent.as_bytes(),
    };
    Ok(PublicKeyFacts {
        format: KeyFormat::Pkcs1Public,
        key: public.algo(),
        spki_sha256: public.sha256()?,
    })
}

/// RSA algorithm and fingerprint from an `RSAPrivateKey`, which carries `n` and `e`.
fn rsa(der: &[u8]) -> Result<(KeyAlgo, Option<SpkiSha256>), String> {
    let k = pkcs1::RsaPrivateKey::from_der(der).map_err(|e| format!("RSA key: {e}"))?;
    let public = PublicKey::Rsa {
        n: k.modulus.as_bytes(),
        e: k.public_exponent.as_bytes(),
    };
    Ok((public.algo(), Some(public.sha256()?)))
}

fn ec_public(
    curve: ObjectIdentifier,
    point: Option<&[u8]>,
) -> Result<(KeyAlgo, Option<SpkiSha256>), String> {
    let spki = point
        .map(|point| PublicKey::Ec { curve, point }.sha256())
        .transpose()?;
    Ok((ec_algo(curve), spki))
}

/// The Ed25519 public key's fingerprint from PKCS#8's `CurvePrivateKey ::= OCTET STRING`.
fn ed25519_public(private_key: &[u8]) -> Result<SpkiSha256, String> {
    let seed = OctetStringRef::from_der(private_key).map_err(|e| format!("Ed25519 key: {e}"))?;
    let mut bytes = Zeroizing::new([0u8; 32]);
    if seed.as_bytes().len() != bytes.len() {
        return Err(format!(
            "Ed25519 key is {} bytes, expected 32",
            seed.as_bytes().len()
        ));
    }
    bytes.copy_from_slice(seed.as_bytes());
    // SigningKey zeroizes itself on drop (ed25519-dalek's `zeroize` feature is on).
    let public = ed25519_dalek::SigningKey::from_bytes(&bytes)
        .verifying_key()
        .to_bytes();
    PublicKey::Ed25519(&public).sha256()
}

/// Names the protection of an encrypted PKCS#8 key, e.g.
/// `PBES2(PBKDF2(hmacWithSHA256, 2048 iterations), aes-256-cbc)`.
fn describe_encryption(alg: &AlgorithmIdentifierRef<'_>) -> String {
    if alg.oid != PBES2 {
        return oid_name(alg.oid);
    }
    let parts = alg.parameters.and_then(|p| {
        let mut r = SliceReader::new(sequence_body(p)?).ok()?;
        let kdf: AlgorithmIdentifierRef<'_> = r.decode().ok()?;
        let cipher: AlgorithmIdentifierRef<'_> = r.decode().ok()?;
        Some((kdf, cipher))
    });
    match parts {
        Some((kdf, cipher)) => format!("PBES2({}, {})", describe_kdf(&kdf), oid_name(cipher.oid)),
        None => "PBES2(unreadable parameters)".to_owned(),
    }
}

/// `PBKDF2-params ::= SEQUENCE { salt, iterationCount, keyLength OPTIONAL,
/// prf DEFAULT hmacWithSHA1 }`: the PRF and the iteration count are facts worth keeping
/// (a low count is a finding); the salt is not.
fn describe_kdf(kdf: &AlgorithmIdentifierRef<'_>) -> String {
    if kdf.oid != PBKDF2 {
        return oid_name(kdf.oid);
    }
    let parsed = kdf.parameters.and_then(|p| {
        let mut r = SliceReader::new(sequence_body(p)?).ok()?;
        let _salt: AnyRef<'_> = r.decode().ok()?;
        let iterations: UintRef<'_> = r.decode().ok()?;
        let mut prf = HMAC_WITH_SHA1;
        while !r.is_finished() {
            let next: AnyRef<'_> = r.decode().ok()?;
            if next.tag() == Tag::Sequence {
                prf = next.decode_as::<AlgorithmIdentifierRef<'_>>().ok()?.oid;
            }
        }
        let count = iterations.as_bytes().iter().try_fold(0u64, |acc, b| {
            acc.checked_mul(256).map(|a| a | u64::from(*b))
        })?;
        Some((prf, count))
    });
    match parsed {
        Some((prf, count)) => format!("PBKDF2({}, {count} iterations)", oid_name(prf)),
        None => "PBKDF2(unreadable parameters)".to_owned(),
    }
}

/// The content of a SEQUENCE-tagged ANY.
fn sequence_body(any: AnyRef<'_>) -> Option<&[u8]> {
    (any.tag() == Tag::Sequence).then(|| any.value())
}

const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const PBKDF2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.12");
const HMAC_WITH_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.2.7");

/// Names for the OIDs that appear in encrypted PKCS#8 keys; others print dotted.
const ENCRYPTION_NAMES: &[(&str, &str)] = &[
    ("1.2.840.113549.1.5.13", "PBES2"),
    ("1.2.840.113549.1.5.12", "PBKDF2"),
    ("1.3.6.1.4.1.11591.4.11", "scrypt"),
    ("1.2.840.113549.2.7", "hmacWithSHA1"),
    ("1.2.840.113549.2.8", "hmacWithSHA224"),
    ("1.2.840.113549.2.9", "hmacWithSHA256"),
    ("1.2.840.113549.2.10", "hmacWithSHA384"),
    ("1.2.840.113549.2.11", "hmacWithSHA512"),
    ("2.16.840.1.101.3.4.1.2", "aes-128-cbc"),
    ("2.16.840.1.101.3.4.1.22", "aes-192-cbc"),
    ("2.16.840.1.101.3.4.1.42", "aes-256-cbc"),
    ("2.16.840.1.101.3.4.1.6", "aes-128-gcm"),
    ("2.16.840.1.101.3.4.1.46", "aes-256-gcm"),
    ("1.2.840.113549.3.7", "des-ede3-cbc"),
    ("1.3.14.3.2.7", "des-cbc"),
    ("1.2.840.113549.1.5.3", "pbeWithMD5AndDES-CBC"),
    ("1.2.840.113549.1.5.6", "pbeWithMD5AndRC2-CBC"),
    ("1.2.840.113549.1.5.10", "pbeWithSHA1AndDES-CBC"),
    ("1.2.840.113549.1.5.11", "pbeWithSHA1AndRC2-CBC"),
    ("1.2.840.113549.1.12.1.1", "pbeWithSHAAnd128BitRC4"),
    ("1.2.840.113549.1.12.1.3", "pbeWithSHAAnd3-KeyTripleDES-CBC"),
    ("1.2.840.113549.1.12.1.6", "pbeWithSHAAnd40BitRC2-CBC"),
];

fn oid_name(oid: ObjectIdentifier) -> String {
    let dotted = oid.to_string();
    ENCRYPTION_NAMES
        .iter()
        .find(|(o, _)| *o == dotted)
        .map_or(dotted.clone(), |(_, name)| (*name).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_names_fall_back_to_the_dotted_oid() {
        assert_eq!(oid_name(PBES2), "PBES2");
        assert_eq!(oid_name(ObjectIdentifier::new_unwrap("1.2.3.4")), "1.2.3.4");
    }

    #[test]
    fn legacy_encrypted_pem_reports_the_cipher_without_parsing_the_ciphertext() {
        let headers = vec![
            ("Proc-Type".to_owned(), "4,ENCRYPTED".to_owned()),
            ("DEK-Info".to_owned(), "AES-128-CBC,0011".to_owned()),
        ];
        let k = traditional("EC PRIVATE KEY", &headers, b"not der at all").unwrap();
        assert_eq!(k.format, KeyFormat::Sec1);
        assert!(k.encrypted);
        assert_eq!(k.key, None);
        assert_eq!(k.encryption.as_deref(), Some("AES-128-CBC"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x30",
            b"\x30\x03\x02\x01\x00",
            b"\x30\x80\x00\x00",
        ] {
            assert!(pkcs8(bad).is_err());
            assert!(encrypted_pkcs8(bad).is_err());
            assert!(pkcs1(bad).is_err());
            assert!(sec1(bad).is_err());
            assert!(dsa_legacy(bad).is_err());
            assert!(spki_public(bad).is_err());
            assert!(pkcs1_public(bad).is_err());
        }
    }
}
