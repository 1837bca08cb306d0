//! Rotation-aware drift: is a changed certificate file a renewal of what the baseline holds?
//!
//! A renewal keeps the subject and the issuer, is validly signed (signature checked) by an
//! issuer certificate present on this host (or by its own, unchanged key when self-signed),
//! names the same issuing key as before when both carry an authority key identifier, moves
//! the validity forward (a re-installed older certificate is a rollback, not a renewal), and
//! still pairs with a private key on the host when the old certificate did. Anything else
//! stays a plain `changed` finding. Pure apart from signature checks on given DER.

use super::{CertFacts, CredRecord, SpkiSha256};
use std::collections::HashSet;

/// The live side of the comparison.
pub struct Live<'a> {
    pub record: &'a CredRecord,
    /// The DER of the file's certificates, in file order.
    pub ders: &'a [Vec<u8>],
}

/// What else the host holds.
pub struct Host<'a> {
    /// Every certificate DER read in this run (issuer candidates).
    pub certs: &'a [&'a [u8]],
    /// SPKI SHA-256 of every private key in the baseline.
    pub baseline_keys: &'a HashSet<SpkiSha256>,
    /// SPKI SHA-256 of every private key on the host now.
    pub live_keys: &'a HashSet<SpkiSha256>,
}

/// `Ok(message)` when `live` renews `old`; `Err(reason)` when it does not.
pub fn renewal(old: &CredRecord, live: &Live<'_>, host: &Host<'_>) -> Result<String, String> {
    let new = live.record;
    if old.unparseable.is_some() || new.unparseable.is_some() {
        return Err("a side does not parse".into());
    }
    if !old.keys.is_empty() || !new.keys.is_empty() {
        return Err("the file holds a private key".into());
    }
    let (Some(o), Some(n)) = (old.certs.first(), new.certs.first()) else {
        return Err("not a certificate on both sides".into());
    };
    if old.certs.len() != new.certs.len() {
        return Err("the number of certificates changed".into());
    }
    // The rest of a bundle (the chain) must be the same certificates.
    for (a, b) in old.certs.iter().zip(&new.certs).skip(1) {
        if !same_cert(a, b) {
            return Err(format!("chain certificate {} changed", b.subject));
        }
    }
    if o.subject != n.subject {
        return Err(format!(
            "subject changed from `{}` to `{}`",
            o.subject, n.subject
        ));
    }
    if o.issuer != n.issuer {
        return Err(format!(
            "issuer changed from `{}` to `{}`",
            o.issuer, n.issuer
        ));
    }
    if same_cert(o, n) {
        return Err("the same certificate (re-encoded)".into());
    }
    if n.not_after <= o.not_after || n.not_before < o.not_before {
        return Err("the validity does not move forward (older or same-period certificate)".into());
    }
    if let (Some(a), Some(b)) = (&o.authority_key_id, &n.authority_key_id) {
        if a != b {
            return Err(
                "signed by a different issuer key (authority key identifier changed)".into(),
            );
        }
    }
    let Some(leaf_der) = live.ders.first() else {
        return Err("certificate DER unavailable".into());
    };
    if n.self_signed {
        if n.spki_sha256 != o.spki_sha256 {
            return Err("self-signed with a different key".into());
        }
        if !super::issued_by(leaf_der, leaf_der) {
            return Err("self-signature does not verify".into());
        }
    } else if !host
        .certs
        .iter()
        .any(|issuer| super::issued_by(leaf_der, issuer))
    {
        return Err(format!(
            "no certificate of issuer `{}` on this host verifies its signature",
            n.issuer
        ));
    }
    if host.baseline_keys.contains(&o.spki_sha256) && !host.live_keys.contains(&n.spki_sha256) {
        return Err(
            "its private key no longer matches (no key on this host has the new public key)".into(),
        );
    }
    Ok(format!(
        "renewed: serial {} -> {}, valid until {} (was {}){}",
        o.serial_hex,
        n.serial_hex,
        super::posture::date(n.not_after),
        super::posture::date(o.not_after),
        if n.spki_sha256 == o.spki_sha256 {
            ", same key"
        } else {
            ", new key"
        }
    ))
}

fn same_cert(a: &CertFacts, b: &CertFacts) -> bool {
    a.serial_hex == b.serial_hex && a.issuer == b.issuer && a.spki_sha256 == b.spki_sha256
}
