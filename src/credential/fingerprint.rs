//! The one place that turns a public key into SubjectPublicKeyInfo DER and hashes it, and
//! names algorithms and curves from their OIDs.
//!
//! A certificate is matched to its private key by comparing SPKI fingerprints, so both sides
//! must hash the same bytes. Certificates and private keys reach the same public key through
//! different encodings (an RSA certificate may omit the NULL parameters; a PKCS#1 key has no
//! SPKI at all), so every fingerprint, the certificate's included, is taken over the SPKI
//! rebuilt here from the key's numbers: RSA as `rsaEncryption` + NULL + `RSAPublicKey{n, e}`
//! (RSASSA-PSS keys too: the fingerprint names the key pair, not its usage restrictions),
//! EC as `id-ecPublicKey` + named curve + the point as stored, EdDSA with absent parameters.
//! An EC point stored compressed on one side and uncompressed on the other would not match:
//! converting needs curve arithmetic, and OpenSSL writes uncompressed points by default.
//! Must not: hash a private key, or see one.

use super::{KeyAlgo, SpkiSha256};
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, UintRef};
use der::{Decode, Encode, Tagged};
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

pub(super) const RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(super) const RSASSA_PSS: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
pub(super) const EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(super) const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
pub(super) const ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
pub(super) const X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
pub(super) const X448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.111");
pub(super) const DSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10040.4.1");

pub(super) const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(super) const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(super) const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// Curves by OID: name and field size in bits.
const CURVES: &[(ObjectIdentifier, &str, u32)] = &[
    (P256, "P-256", 256),
    (P384, "P-384", 384),
    (P521, "P-521", 521),
    (
        ObjectIdentifier::new_unwrap("1.3.132.0.10"),
        "secp256k1",
        256,
    ),
    (
        ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.1"),
        "P-192",
        192,
    ),
    (ObjectIdentifier::new_unwrap("1.3.132.0.33"), "P-224", 224),
    (
        ObjectIdentifier::new_unwrap("1.3.36.3.3.2.8.1.1.7"),
        "brainpoolP256r1",
        256,
    ),
    (
        ObjectIdentifier::new_unwrap("1.3.36.3.3.2.8.1.1.11"),
        "brainpoolP384r1",
        384,
    ),
    (
        ObjectIdentifier::new_unwrap("1.3.36.3.3.2.8.1.1.13"),
        "brainpoolP512r1",
        512,
    ),
];

/// The EC algorithm for a named curve (dotted OID and 0 bits for a curve not in the table).
pub(super) fn ec_algo(curve: ObjectIdentifier) -> KeyAlgo {
    match CURVES.iter().find(|(oid, _, _)| *oid == curve) {
        Some((_, name, bits)) => KeyAlgo::Ec {
            curve: (*name).to_owned(),
            bits: *bits,
        },
        None => KeyAlgo::Ec {
            curve: curve.to_string(),
            bits: 0,
        },
    }
}

/// Bit length of a big-endian unsigned integer (leading zero bytes ignored).
pub(super) fn uint_bits(be: &[u8]) -> u32 {
    let be = match be.iter().position(|b| *b != 0) {
        Some(i) => &be[i..],
        None => return 0,
    };
    let lead = be.first().map_or(0, |b| b.leading_zeros());
    u32::try_from(be.len())
        .unwrap_or(u32::MAX / 8)
        .saturating_mul(8)
        .saturating_sub(lead)
}

/// A public key as numbers and points, from whichever structure held it.
pub(super) enum PublicKey<'a> {
    /// Big-endian modulus and exponent, leading zeros allowed.
    Rsa {
        n: &'a [u8],
        e: &'a [u8],
    },
    /// A SEC1-encoded point on a named curve.
    Ec {
        curve: ObjectIdentifier,
        point: &'a [u8],
    },
    Ed25519(&'a [u8]),
    Ed448(&'a [u8]),
}

impl PublicKey<'_> {
    pub(super) fn algo(&self) -> KeyAlgo {
        match self {
            PublicKey::Rsa { n, .. } => KeyAlgo::Rsa { bits: uint_bits(n) },
            PublicKey::Ec { curve, .. } => ec_algo(*curve),
            PublicKey::Ed25519(_) => KeyAlgo::Ed25519,
            PublicKey::Ed448(_) => KeyAlgo::Ed448,
        }
    }

    /// The canonical SubjectPublicKeyInfo DER.
    pub(super) fn spki_der(&self) -> Result<Vec<u8>, String> {
        let rsa_key;
        let (oid, parameters, key): (_, Option<AnyRef<'_>>, &[u8]) = match self {
            PublicKey::Rsa { n, e } => {
                rsa_key = pkcs1::RsaPublicKey {
                    modulus: UintRef::new(n).map_err(der_err)?,
                    public_exponent: UintRef::new(e).map_err(der_err)?,
                }
                .to_der()
                .map_err(der_err)?;
                (RSA_ENCRYPTION, Some(AnyRef::NULL), &rsa_key)
            }
            PublicKey::Ec { curve, point } => (EC_PUBLIC_KEY, Some(AnyRef::from(curve)), point),
            PublicKey::Ed25519(k) => (ED25519, None, k),
            PublicKey::Ed448(k) => (ED448, None, k),
        };
        SubjectPublicKeyInfoRef {
            algorithm: AlgorithmIdentifierRef { oid, parameters },
            subject_public_key: BitStringRef::from_bytes(key).map_err(der_err)?,
        }
        .to_der()
        .map_err(der_err)
    }

    pub(super) fn sha256(&self) -> Result<SpkiSha256, String> {
        self.spki_der()
            .map(|der| SpkiSha256(Sha256::digest(der).into()))
    }
}

/// Algorithm and canonical fingerprint of a SubjectPublicKeyInfo as found in a certificate
/// or a `PUBLIC KEY` block.
pub(super) fn from_spki_der(der: &[u8]) -> Result<(KeyAlgo, SpkiSha256), String> {
    let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(der_err)?;
    let oid = spki.algorithm.oid;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("public key BIT STRING has unused bits")?;
    let public = if oid == RSA_ENCRYPTION || oid == RSASSA_PSS {
        let rsa = pkcs1::RsaPublicKey::from_der(key).map_err(|e| format!("RSA key: {e}"))?;
        Some(PublicKey::Rsa {
            n: rsa.modulus.as_bytes(),
            e: rsa.public_exponent.as_bytes(),
        })
    } else if oid == EC_PUBLIC_KEY {
        // Explicit curve parameters (no OID) are rare and deprecated: hashed as stored.
        spki.algorithm
            .parameters_oid()
            .ok()
            .map(|curve| PublicKey::Ec { curve, point: key })
    } else if oid == ED25519 {
        Some(PublicKey::Ed25519(key))
    } else if oid == ED448 {
        Some(PublicKey::Ed448(key))
    } else {
        None
    };
    match public {
        Some(p) => Ok((p.algo(), p.sha256()?)),
        None => {
            let algo = other_algo(&spki.algorithm);
            let canonical = spki.to_der().map_err(der_err)?;
            Ok((algo, SpkiSha256(Sha256::digest(canonical).into())))
        }
    }
}

/// Algorithms we recognise but do not rebuild an SPKI for.
pub(super) fn other_algo(alg: &AlgorithmIdentifierRef<'_>) -> KeyAlgo {
    match alg.oid {
        o if o == DSA => KeyAlgo::Dsa {
            bits: alg.parameters.map_or(0, dsa_p_bits),
        },
        o if o == EC_PUBLIC_KEY => KeyAlgo::Ec {
            curve: "explicit parameters".to_owned(),
            bits: 0,
        },
        o if o == X25519 => KeyAlgo::Other("X25519".to_owned()),
        o if o == X448 => KeyAlgo::Other("X448".to_owned()),
        o => KeyAlgo::Other(o.to_string()),
    }
}

/// Bit length of `p` in DSA's `Dss-Parms ::= SEQUENCE { p, q, g INTEGER }`; 0 if unreadable.
fn dsa_p_bits(params: AnyRef<'_>) -> u32 {
    if params.tag() != der::Tag::Sequence {
        return 0;
    }
    first_tlv(params.value())
        .and_then(|p| UintRef::from_der(p).ok())
        .map_or(0, |p| uint_bits(p.as_bytes()))
}

/// The first TLV in a run of DER elements, by its header's length.
fn first_tlv(bytes: &[u8]) -> Option<&[u8]> {
    let header = der::Header::from_der(bytes).ok()?;
    let header_len = usize::try_from(header.encoded_len().ok()?).ok()?;
    let len = usize::try_from(header.length).ok()?;
    bytes.get(..header_len.checked_add(len)?)
}

pub(super) fn der_err(e: der::Error) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_lengths() {
        assert_eq!(uint_bits(&[]), 0);
        assert_eq!(uint_bits(&[0, 0]), 0);
        assert_eq!(uint_bits(&[1]), 1);
        assert_eq!(uint_bits(&[0, 0x80, 0]), 16);
        assert_eq!(uint_bits(&[0x01, 0xff]), 9);
    }

    #[test]
    fn curves_are_named_and_unknown_ones_keep_their_oid() {
        assert_eq!(
            ec_algo(P384),
            KeyAlgo::Ec {
                curve: "P-384".into(),
                bits: 384
            }
        );
        let odd = ObjectIdentifier::new_unwrap("1.2.3.4");
        assert_eq!(
            ec_algo(odd),
            KeyAlgo::Ec {
                curve: "1.2.3.4".into(),
                bits: 0
            }
        );
    }

    /// An RSA SPKI without the NULL parameters (seen in the wild) and one with leading zeros
    /// given to the builder must hash like the canonical form.
    #[test]
    fn rsa_spki_is_canonicalised() {
        let n = [0xc5u8; 128];
        let e = [0x01u8, 0x00, 0x01];
        let canonical = PublicKey::Rsa { n: &n, e: &e };
        let padded_n: Vec<u8> = [0u8, 0].iter().chain(n.iter()).copied().collect();
        let padded = PublicKey::Rsa {
            n: &padded_n,
            e: &e,
        };
        assert_eq!(canonical.sha256().unwrap(), padded.sha256().unwrap());

        let rsa_key = pkcs1::RsaPublicKey {
            modulus: UintRef::new(&n).unwrap(),
            public_exponent: UintRef::new(&e).unwrap(),
        }
        .to_der()
        .unwrap();
        let no_null = SubjectPublicKeyInfoRef {
            algorithm: AlgorithmIdentifierRef {
                oid: RSA_ENCRYPTION,
                parameters: None,
            },
            subject_public_key: BitStringRef::from_bytes(&rsa_key).unwrap(),
        }
        .to_der()
        .unwrap();
        let (algo, fp) = from_spki_der(&no_null).unwrap();
        assert_eq!(algo, KeyAlgo::Rsa { bits: 1024 });
        assert_eq!(fp, canonical.sha256().unwrap());
        assert_ne!(
            SpkiSha256(Sha256::digest(&no_null).into()),
            fp,
            "the raw bytes differ"
        );
    }

    #[test]
    fn unknown_algorithms_are_hashed_as_stored() {
        let odd = ObjectIdentifier::new_unwrap("1.2.3.4");
        let der = SubjectPublicKeyInfoRef {
            algorithm: AlgorithmIdentifierRef {
                oid: odd,
                parameters: None,
            },
            subject_public_key: BitStringRef::from_bytes(&[1, 2, 3]).unwrap(),
        }
        .to_der()
        .unwrap();
        let (algo, fp) = from_spki_der(&der).unwrap();
        assert_eq!(algo, KeyAlgo::Other("1.2.3.4".into()));
        assert_eq!(fp, SpkiSha256(Sha256::digest(&der).into()));
        assert!(from_spki_der(&der[..der.len() - 1]).is_err());
    }
}
