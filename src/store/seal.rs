//! The seal: a digest of every row of the baseline, kept in the baseline, so that a corrupt
//! page, a truncated file or a row edited with `sqlite3` is refused (exit 3) even when the
//! baseline is not signed.
//!
//! The sealed digest is BLAKE3 (derive-key mode, context `kmsentry baseline seal v1`) over the
//! signing digest of [`super::signing`] (every row and column of `entries`, `xattrs`, `runs`,
//! `accepted`, `credentials`, and the schema version) and a hash of every `signatures` row (so
//! a dropped signature is caught too). Only the `seal` row itself is outside it.
//!
//! What it protects against: damage and edits by anyone who does not also recompute the seal.
//! Someone who can write the database and run this code can re-seal it; a signature (a key
//! kept elsewhere, `--verify-key`) is what stands against that.
//!
//! Must not: hand out rows of a sealed baseline before the seal was checked (the full reads in
//! [`super::Store`] check it in the same pass; single-row lookups need [`super::Store::verify_seal`]
//! first), or accept a schema version 5+ baseline without a seal row.

use super::{signing, Store};
use crate::error::{Error, Result};
use crate::sanitize::Name;
use std::os::unix::ffi::OsStrExt;

const CONTEXT: &str = "kmsentry baseline seal v1";

/// What the seal of `store` must be, given the signing digest of its rows.
pub(crate) fn expected(store: &Store, rows: &[u8; 32]) -> Result<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key(CONTEXT);
    h.update(rows);
    h.update(&signing::table_hash(
        store,
        "SELECT * FROM signatures ORDER BY id",
    )?);
    Ok(*h.finalize().as_bytes())
}

/// Seal the database as it stands (the last write of every init and update, after signing).
pub(crate) fn write(store: &Store, run_id: i64, now: &str) -> Result<()> {
    let d = expected(store, &signing::digest(store)?)?;
    store
        .conn
        .execute(
            "INSERT OR REPLACE INTO seal (id, digest, run_id, sealed_at) VALUES (1, ?1, ?2, ?3)",
            rusqlite::params![d.to_vec(), run_id, now],
        )
        .map(|_| ())
        .map_err(|e| store.db_err("write seal", e))
}

/// The stored seal, if any.
pub(crate) fn stored(store: &Store) -> Result<Option<Vec<u8>>> {
    store
        .conn
        .query_row("SELECT digest FROM seal WHERE id = 1", [], |r| r.get(0))
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(|e| store.db_err("read seal", e))
}

/// A baseline whose schema requires a seal but which has none.
pub(crate) fn missing(path: &[u8]) -> Error {
    Error::Integrity(format!(
        "{}: the baseline has no seal (the digest of its rows that every baseline carries): \
         it was edited outside kmsentry or is damaged; {}",
        Name(path),
        crate::error::BAD_BASELINE_ADVICE
    ))
}

/// Compare the seal with the signing digest `rows` just computed from every row.
pub(crate) fn check(store: &Store, rows: &[u8; 32]) -> Result<()> {
    let path = store.path.as_os_str().as_bytes();
    let Some(sealed) = stored(store)? else {
        return Err(missing(path));
    };
    if sealed.as_slice() == expected(store, rows)?.as_slice() {
        return Ok(());
    }
    Err(Error::Integrity(format!(
        "{}: the baseline does not match its seal (the digest of its rows written by \
         `baseline init`/`update`): it is corrupt, or was edited outside kmsentry; {}",
        Name(path),
        crate::error::BAD_BASELINE_ADVICE
    )))
}
