//! Signed checkpoints: tamper evidence for the tail of the chain.
//!
//! The hash chain finds an edited, inserted or deleted line anywhere but at the end: whoever
//! can write the log can cut its tail, or rewrite the last lines and re-chain them. A
//! checkpoint record signs the chain head (the record just before it) with an ed25519 key the
//! attacker does not hold, so everything up to that head is fixed.
//!
//! A checkpoint's `detail` holds `covers_seq` (the head's `seq`), `covers_hash` (hex BLAKE3 of
//! the head's line, equal to the checkpoint's own `prev`), `key_id` (first 16 hex digits of
//! BLAKE3 of the public key, as `key gen` prints it) and `signature`: standard base64 (with
//! padding) of the ed25519 signature over the canonical byte string
//!
//! ```text
//! "kmsentry-alert-checkpoint-v1" 0x00 || covers_seq (u64, big-endian) || BLAKE3(head line) (32 raw bytes)
//! ```
//!
//! Since every line's hash covers its `prev`, signing the head's hash signs the whole chain
//! behind it, back to its first record. The checkpoint record is itself part of the chain.

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{Map, Value};

const DOMAIN: &[u8] = b"kmsentry-alert-checkpoint-v1\0";

/// The bytes a checkpoint signs.
pub fn message(covers_seq: u64, covers_hash: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 8 + 32);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&covers_seq.to_be_bytes());
    m.extend_from_slice(covers_hash);
    m
}

fn decode_hash(hex_hash: &str) -> Option<[u8; 32]> {
    let v = hex::decode(hex_hash).ok()?;
    v.try_into().ok()
}

/// The `detail` of a checkpoint over the head `(covers_seq, covers_hash)`.
pub fn detail(key: &SigningKey, covers_seq: u64, covers_hash: &str) -> Map<String, Value> {
    use base64ct::{Base64, Encoding};
    let raw = decode_hash(covers_hash).unwrap_or([0; 32]);
    let sig = key.sign(&message(covers_seq, &raw));
    let mut d = Map::new();
    d.insert("covers_seq".into(), covers_seq.into());
    d.insert("covers_hash".into(), covers_hash.into());
    d.insert(
        "key_id".into(),
        crate::store::signing::key_id(key.verifying_key().as_bytes()).into(),
    );
    d.insert(
        "signature".into(),
        Base64::encode_string(&sig.to_bytes()).into(),
    );
    d
}

/// What a checkpoint claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub covers_seq: u64,
    pub covers_hash: String,
    pub key_id: String,
    signature: Vec<u8>,
}

/// Read a checkpoint's claim from its `detail`.
pub fn claim(detail: &Map<String, Value>) -> Result<Claim, String> {
    use base64ct::{Base64, Encoding};
    let covers_seq = detail
        .get("covers_seq")
        .and_then(Value::as_u64)
        .ok_or("checkpoint without a numeric `covers_seq`")?;
    let covers_hash = detail
        .get("covers_hash")
        .and_then(Value::as_str)
        .filter(|h| decode_hash(h).is_some())
        .ok_or("checkpoint without a `covers_hash` (64 hex digits)")?
        .to_string();
    let key_id = detail
        .get("key_id")
        .and_then(Value::as_str)
        .ok_or("checkpoint without a `key_id`")?
        .to_string();
    let signature = detail
        .get("signature")
        .and_then(Value::as_str)
        .and_then(|s| Base64::decode_vec(s).ok())
        .ok_or("checkpoint without a base64 `signature`")?;
    Ok(Claim {
        covers_seq,
        covers_hash,
        key_id,
        signature,
    })
}

/// Check a claim's signature with `key`.
pub fn check(c: &Claim, key: &VerifyingKey) -> Result<(), String> {
    let want = crate::store::signing::key_id(key.as_bytes());
    if c.key_id != want {
        return Err(format!(
            "checkpoint signed by another key ({}), not the given key ({want})",
            c.key_id
        ));
    }
    let raw = decode_hash(&c.covers_hash).ok_or("malformed `covers_hash`")?;
    let sig = ed25519_dalek::Signature::from_slice(&c.signature)
        .map_err(|_| "malformed checkpoint signature".to_string())?;
    key.verify(&message(c.covers_seq, &raw), &sig)
        .map_err(|_| "checkpoint signature does not verify".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::record::line_hash;

    #[test]
    fn a_checkpoint_verifies_with_its_key_and_nothing_else() {
        let k = crate::store::signing::generate().unwrap();
        let h = line_hash(b"{\"seq\":9}");
        let d = detail(&k, 9, &h);
        let c = claim(&d).unwrap();
        assert_eq!((c.covers_seq, c.covers_hash.as_str()), (9, h.as_str()));
        check(&c, &k.verifying_key()).unwrap();

        let other = crate::store::signing::generate().unwrap();
        assert!(check(&c, &other.verifying_key())
            .unwrap_err()
            .contains("another key"));

        let mut forged = c.clone();
        forged.covers_seq = 10;
        assert!(check(&forged, &k.verifying_key())
            .unwrap_err()
            .contains("does not verify"));
        let mut forged = c;
        forged.covers_hash = line_hash(b"other");
        assert!(check(&forged, &k.verifying_key()).is_err());
    }

    #[test]
    fn the_signed_bytes_are_the_documented_layout() {
        let m = message(0x0102, &[0xab; 32]);
        assert_eq!(&m[..29], b"kmsentry-alert-checkpoint-v1\0");
        assert_eq!(&m[29..37], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&m[37..], &[0xab; 32]);
    }

    #[test]
    fn malformed_claims_are_named() {
        let mut d = Map::new();
        assert!(claim(&d).unwrap_err().contains("covers_seq"));
        d.insert("covers_seq".into(), 1.into());
        d.insert("covers_hash".into(), "zz".into());
        assert!(claim(&d).unwrap_err().contains("covers_hash"));
    }
}
