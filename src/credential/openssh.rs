//! Facts about OpenSSH private keys (`openssh-key-v1`, `BEGIN OPENSSH PRIVATE KEY`), via
//! the `ssh-key` crate.
//!
//! The format stores the public key in clear even when the private part is encrypted, so the
//! algorithm, size and SPKI fingerprint are reported for encrypted keys too; the fingerprint
//! is the one the same key has as a PKCS#8 or X.509 key (`ssh-keygen -e -m PKCS8`). Must
//! not: decrypt (the crate is built without its `encryption` feature), or keep the parsed
//! key beyond this call (`ssh-key` zeroizes private key data on drop).

use super::fingerprint::{uint_bits, PublicKey, P256, P384, P521};
use super::{KeyAlgo, KeyFacts, KeyFormat, SpkiSha256};
use ssh_key::public::{EcdsaPublicKey, KeyData};

/// `der` is the decoded body of the PEM block: OpenSSH's binary format, not DER.
pub(super) fn private_key(der: &[u8]) -> Result<KeyFacts, String> {
    let k = ssh_key::PrivateKey::from_bytes(der).map_err(|e| format!("OpenSSH key: {e}"))?;
    let (key, spki_sha256) = public_facts(k.public_key().key_data())?;
    let encrypted = k.is_encrypted();
    let encryption = encrypted.then(|| match k.kdf() {
        ssh_key::Kdf::Bcrypt { rounds, .. } => {
            format!("{}(bcrypt, {rounds} rounds)", k.cipher().as_str())
        }
        other => format!("{}({})", k.cipher().as_str(), other.algorithm().as_str()),
    });
    Ok(KeyFacts {
        format: KeyFormat::OpenSsh,
        encrypted,
        key: Some(key),
        spki_sha256,
        encryption,
    })
}

fn public_facts(data: &KeyData) -> Result<(KeyAlgo, Option<SpkiSha256>), String> {
    let public = match data {
        KeyData::Rsa(rsa) => {
            let n = rsa
                .n
                .as_positive_bytes()
                .ok_or("RSA modulus is not positive")?;
            let e = rsa
                .e
                .as_positive_bytes()
                .ok_or("RSA exponent is not positive")?;
            PublicKey::Rsa { n, e }
        }
        KeyData::Ecdsa(ec) => {
            let curve = match ec {
                EcdsaPublicKey::NistP256(_) => P256,
                EcdsaPublicKey::NistP384(_) => P384,
                EcdsaPublicKey::NistP521(_) => P521,
            };
            PublicKey::Ec {
                curve,
                point: ec.as_sec1_bytes(),
            }
        }
        KeyData::Ed25519(k) => PublicKey::Ed25519(&k.0),
        KeyData::Dsa(dsa) => {
            let bits = uint_bits(dsa.p.as_bytes());
            return Ok((KeyAlgo::Dsa { bits }, None));
        }
        // FIDO keys (sk-*) and algorithms the crate does not model: named, no SPKI (a
        // security key's public key is not used in X.509 certificates).
        other => return Ok((KeyAlgo::Other(other.algorithm().to_string()), None)),
    };
    Ok((public.algo(), Some(public.sha256()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error() {
        let e = private_key(b"openssh-key-v1\0\0\0").unwrap_err();
        assert!(e.starts_with("OpenSSH key: "), "{e}");
        assert!(private_key(b"").is_err());
    }
}
