//! Tamper evidence for the baseline: ed25519 keys, a canonical digest of the database, and
//! the signature row that binds them.
//!
//! The digest (version 2) is BLAKE3 (derive-key mode, context `kmsentry baseline digest v2`)
//! over the schema version, then, per signed table in a fixed order (`entries`, `xattrs`,
//! `runs`, `accepted`, `credentials`), the table's name, its columns (name and declared type,
//! in table order) and a hash of every row, each value length-prefixed with its SQLite type.
//! Every table but `signatures` and `seal` is signed (a test checks the schema against
//! [`TABLES`]; the seal, see [`super::seal`], covers this digest and the signatures), every
//! column of each (`runs.machine_id` included): any edited, inserted or deleted row, and any
//! added column, changes it. The signing key lives outside the database (`key gen` writes it
//! 0600); hosts hold only the public key, so whoever can write the database but not the key
//! cannot produce a baseline that verifies.
//!
//! Digest version 1 (context `... v1`) left out `credentials` and the column lists. A baseline
//! signed with it is refused with exit 3 and told to re-sign; it is recognised (by checking the
//! signature against the version 1 digest, only after the version 2 check failed) so the
//! message can say so instead of calling it edited. Accepting it would leave credential facts,
//! which decide what counts as a certificate renewal, unprotected.
//!
//! Must not: accept an unsigned database when a verify key is given, accept a version 1
//! signature, or trust the public key stored beside the signature (it is only used to say
//! which key signed).

use super::Store;
use crate::error::{Error, Result};
use crate::sanitize::Name;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use rusqlite::types::ValueRef;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const CONTEXT: &str = "kmsentry baseline digest v2";
/// The retired digest, computed only to recognise an old signature and ask for a new one.
const CONTEXT_V1: &str = "kmsentry baseline digest v1";
/// What is signed: a domain tag and the digest, so the signature means nothing elsewhere.
/// (The digest versions differ by their BLAKE3 context, so the tag stayed.)
const DOMAIN: &[u8] = b"kmsentry-baseline-signature-v1\0";

/// Every signed table and the query that reads it in canonical order. `entries` and
/// `xattrs` are hashed by the caller's loading pass (see [`combine`]); the query here must
/// select the same columns in the same order (`super::ENTRY_COLUMNS` is every column).
const TABLES: [(&str, &str); 5] = [
    ("entries", "SELECT * FROM entries ORDER BY path"),
    ("xattrs", "SELECT * FROM xattrs ORDER BY path, name"),
    ("runs", "SELECT * FROM runs ORDER BY id"),
    (
        "accepted",
        "SELECT * FROM accepted ORDER BY run_id, path, rowid",
    ),
    ("credentials", "SELECT * FROM credentials ORDER BY path"),
];

thread_local! {
    /// One row's canonical encoding: built here, then hashed with a single `update` (a BLAKE3
    /// update per value costs more than the encoding at 24 columns × 100k rows).
    static ROW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Feed one row to a table's hasher: a row marker, then each value with its SQLite type
/// and, for text and blobs, its length.
pub(crate) fn hash_row(h: &mut blake3::Hasher, row: &rusqlite::Row<'_>) -> rusqlite::Result<()> {
    ROW.with(|buf| {
        let mut b = buf.borrow_mut();
        b.clear();
        b.push(0xfe);
        for i in 0..row.as_ref().column_count() {
            match row.get_ref(i)? {
                ValueRef::Null => b.push(0),
                ValueRef::Integer(v) => {
                    b.push(1);
                    b.extend_from_slice(&v.to_le_bytes());
                }
                ValueRef::Real(v) => {
                    b.push(2);
                    b.extend_from_slice(&v.to_le_bytes());
                }
                ValueRef::Text(t) => {
                    b.push(3);
                    b.extend_from_slice(&(t.len() as u64).to_le_bytes());
                    b.extend_from_slice(t);
                }
                ValueRef::Blob(x) => {
                    b.push(4);
                    b.extend_from_slice(&(x.len() as u64).to_le_bytes());
                    b.extend_from_slice(x);
                }
            }
        }
        h.update(&b);
        Ok(())
    })
}

pub(crate) fn table_hash(store: &Store, sql: &str) -> Result<[u8; 32]> {
    let err = |e| store.db_err("compute digest", e);
    let mut h = blake3::Hasher::new();
    let mut st = store.conn.prepare(sql).map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        hash_row(&mut h, row).map_err(err)?;
    }
    Ok(*h.finalize().as_bytes())
}

fn schema_version(store: &Store) -> Result<i64> {
    store
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| store.db_err("compute digest", e))
}

/// A table's columns, name and declared type, in table order: a column added to a signed
/// table changes the digest even while every value in it is NULL.
fn columns_hash(store: &Store, table: &str) -> Result<[u8; 32]> {
    let err = |e| store.db_err("compute digest", e);
    let mut h = blake3::Hasher::new();
    let mut st = store
        .conn
        .prepare("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid")
        .map_err(err)?;
    let mut rows = st.query([table]).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        hash_row(&mut h, row).map_err(err)?;
    }
    Ok(*h.finalize().as_bytes())
}

/// The digest from the `entries` and `xattrs` table hashes (computed by the caller, e.g.
/// while loading) and the other tables, read here.
pub(crate) fn combine(store: &Store, entries: [u8; 32], xattrs: [u8; 32]) -> Result<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key(CONTEXT);
    h.update(&schema_version(store)?.to_le_bytes());
    let mut rows = [entries, xattrs, [0; 32], [0; 32], [0; 32]];
    for (i, (_, sql)) in TABLES.iter().enumerate().skip(2) {
        rows[i] = table_hash(store, sql)?;
    }
    for ((name, _), part) in TABLES.iter().zip(rows) {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&columns_hash(store, name)?);
        h.update(&part);
    }
    Ok(*h.finalize().as_bytes())
}

/// The canonical digest of everything the baseline records.
pub fn digest(store: &Store) -> Result<[u8; 32]> {
    combine(
        store,
        table_hash(store, TABLES[0].1)?,
        table_hash(store, TABLES[1].1)?,
    )
}

/// The version 1 digest (entries, xattrs, runs, accepted; no columns, no credentials), to
/// recognise a signature made before version 2. Never accepted as a signature.
fn digest_v1(store: &Store) -> Result<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key(CONTEXT_V1);
    h.update(&schema_version(store)?.to_le_bytes());
    for (name, sql) in &TABLES[..4] {
        h.update(name.as_bytes());
        h.update(&table_hash(store, sql)?);
    }
    Ok(*h.finalize().as_bytes())
}

/// Sign the database as it stands, attributing the signature to `run_id`.
pub fn sign(store: &mut Store, run_id: i64, key: &SigningKey, now: &str) -> Result<()> {
    let d = digest(store)?;
    let sig = key.sign(&message(&d));
    store
        .conn
        .execute(
            "INSERT INTO signatures (run_id, algorithm, public_key, digest, signature, signed_at)
             VALUES (?1, 'ed25519', ?2, ?3, ?4, ?5)",
            rusqlite::params![
                run_id,
                key.verifying_key().as_bytes().to_vec(),
                d.to_vec(),
                sig.to_bytes().to_vec(),
                now
            ],
        )
        .map_err(|e| store.db_err("record signature", e))?;
    Ok(())
}

fn message(d: &[u8; 32]) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(d);
    m
}

/// Check the newest signature against `key` and the database's current digest.
pub fn check(store: &Store, key: &VerifyingKey) -> Result<()> {
    check_digest(store, key, &digest(store)?)
}

/// [`check`] with the digest already computed (by [`Store::entries_with_digest`]).
pub fn check_digest(store: &Store, key: &VerifyingKey, d: &[u8; 32]) -> Result<()> {
    let path = store.path.as_os_str().as_bytes().to_vec();
    let fail = |what: String| Error::Integrity(format!("{}: {what}", Name(&path)));
    let row: Option<(Vec<u8>, Vec<u8>, Vec<u8>)> = store
        .conn
        .query_row(
            "SELECT public_key, digest, signature FROM signatures ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(|e| store.db_err("read signature", e))?;
    let Some((signer, _stored_digest, sig)) = row else {
        return Err(fail(
            "the baseline is not signed, but a verify key was given (sign it with `baseline init --sign-key`)".into(),
        ));
    };
    if signer.as_slice() != key.as_bytes() {
        return Err(fail(format!(
            "the baseline was signed by another key ({}), not the verify key ({})",
            key_id(&signer),
            key_id(key.as_bytes())
        )));
    }
    let sig = ed25519_dalek::Signature::from_slice(&sig)
        .map_err(|_| fail("the stored signature is malformed".into()))?;
    if key.verify(&message(d), &sig).is_ok() {
        return Ok(());
    }
    // Only now, on the failure path, is the old digest worth a second read of the database.
    if key.verify(&message(&digest_v1(store)?), &sig).is_ok() {
        return Err(fail(
            "the baseline was signed by an older kmsentry whose signature does not cover the credential facts; \
             check it with `kmsentry verify` (without --verify-key), then sign it again with \
             `kmsentry baseline update --sign-key KEY`"
                .into(),
        ));
    }
    Err(fail(
        "the baseline signature does not verify: the database was changed after it was signed"
            .into(),
    ))
}

/// A short, stable name for a public key: the first 16 hex digits of its BLAKE3.
pub fn key_id(public: &[u8]) -> String {
    blake3::hash(public).to_hex()[..16].to_string()
}

/// Generate a new signing key.
pub fn generate() -> Result<SigningKey> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut())
        .map_err(|e| Error::Integrity(format!("no randomness for a new key: {e}")))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Write `key` to `out` (PKCS#8 PEM, 0600) and its public key to `out.pub` (SPKI PEM, 0644).
pub fn write_keypair(key: &SigningKey, out: &Path) -> Result<std::path::PathBuf> {
    let name = out.as_os_str().as_bytes();
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| Error::Integrity(format!("{}: encode key: {e}", Name(name))))?;
    crate::atomic::write_file(out, pem.as_bytes(), 0o600)?;
    let mut pub_path = out.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = std::path::PathBuf::from(pub_path);
    let pub_pem = key
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| Error::Integrity(format!("{}: encode public key: {e}", Name(name))))?;
    crate::atomic::write_file(&pub_path, pub_pem.as_bytes(), 0o644)?;
    Ok(pub_path)
}

fn read_key_file(path: &Path) -> Result<zeroize::Zeroizing<String>> {
    let name = path.as_os_str().as_bytes();
    let bytes = std::fs::read(path).map_err(|e| Error::io("read key", name, e))?;
    String::from_utf8(bytes)
        .map(zeroize::Zeroizing::new)
        .map_err(|_| Error::Usage(format!("{}: not a PEM key file", Name(name))))
}

/// Load a signing key written by [`write_keypair`] (or any ed25519 PKCS#8 PEM). Warns when
/// the file is readable by others.
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.as_os_str().as_bytes();
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "{}: signing key is readable or writable by group or others",
                Name(name)
            );
        }
    }
    let text = read_key_file(path)?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| {
        Error::Usage(format!(
            "{}: not an ed25519 private key in PKCS#8 PEM ({e}); create one with `kmsentry key gen`",
            Name(name)
        ))
    })
}

/// Load a public key (`K.pub`, SPKI PEM).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey> {
    let name = path.as_os_str().as_bytes();
    let text = read_key_file(path)?;
    VerifyingKey::from_public_key_pem(&text).map_err(|e| {
        Error::Usage(format!(
            "{}: not an ed25519 public key in PEM ({e}); expected the `.pub` file from `kmsentry key gen`",
            Name(name)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{run, sample};

    fn signed_store() -> (Store, SigningKey) {
        let mut s = Store::open_in_memory().unwrap();
        let id = s.add_run(&run()).unwrap();
        let t = tempfile::tempdir().unwrap();
        let mut names =
            crate::users::Names::for_root(&crate::fsroot::Root::open(t.path()).unwrap());
        s.put_entries(id, [sample(b"/a"), sample(b"/b")], &mut names)
            .unwrap();
        s.conn
            .execute_batch(
                "INSERT INTO credentials (path, blake3, kind, facts)
                 VALUES (CAST('/a' AS BLOB), zeroblob(32), 'certificate', '{\"not_after\":1}')",
            )
            .unwrap();
        let k = generate().unwrap();
        sign(&mut s, id, &k, "now").unwrap();
        (s, k)
    }

    #[test]
    fn a_signed_baseline_verifies_with_its_key() {
        let (s, k) = signed_store();
        check(&s, &k.verifying_key()).unwrap();
        // The one-pass digest taken while loading is the same digest.
        let (entries, d) = s.entries_with_digest().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(d, digest(&s).unwrap());
    }

    #[test]
    fn the_loaded_columns_are_every_column_in_table_order() {
        let s = Store::open_in_memory().unwrap();
        let mut st = s.conn.prepare("PRAGMA table_info(entries)").unwrap();
        let cols: Vec<String> = st
            .query_map([], |r| r.get(1))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        assert_eq!(
            cols.join(", "),
            super::super::entries::ENTRY_COLUMNS.replace(" \\\n    ", " ")
        );
    }

    #[test]
    fn any_edited_inserted_or_deleted_row_breaks_the_signature() {
        let edits = [
            "UPDATE entries SET mode = 420 WHERE path = CAST('/a' AS BLOB)",
            "DELETE FROM entries WHERE path = CAST('/b' AS BLOB)",
            "UPDATE xattrs SET value = x'00' WHERE path = CAST('/a' AS BLOB)",
            "UPDATE runs SET host = 'elsewhere'",
            "INSERT INTO accepted (run_id, path, status, changes) VALUES (1, x'2f63', 'added', '')",
            "UPDATE credentials SET facts = '{\"not_after\":2}'",
            "UPDATE credentials SET blake3 = x'00'",
            "DELETE FROM credentials",
            "INSERT INTO credentials (path, blake3, kind, facts) VALUES (x'2f62', zeroblob(32), 'unknown', '{}')",
            "UPDATE runs SET machine_id = 'elsewhere'",
            "ALTER TABLE credentials ADD COLUMN extra TEXT",
        ];
        for sql in edits {
            let (s, k) = signed_store();
            s.conn.execute_batch(sql).unwrap();
            let e = check(&s, &k.verifying_key()).unwrap_err();
            assert!(
                e.to_string().contains("changed after it was signed"),
                "{sql}: {e}"
            );
            assert_eq!(e.exit_code(), crate::exit::ExitCode::Integrity);
        }
    }

    #[test]
    fn every_table_but_signatures_is_signed() {
        let s = Store::open_in_memory().unwrap();
        let mut st = s
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let mut tables: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|c| c.unwrap())
            .filter(|t| t != "signatures" && t != "seal")
            .collect();
        let mut signed: Vec<String> = TABLES.iter().map(|(t, _)| t.to_string()).collect();
        tables.sort();
        signed.sort();
        assert_eq!(
            tables, signed,
            "a new table must join the digest (and its version)"
        );
    }

    #[test]
    fn a_version_1_signature_is_refused_with_a_way_out() {
        let (mut s, k) = signed_store();
        // What an older kmsentry wrote: the same database signed over the version 1 digest.
        let sig = k.sign(&message(&digest_v1(&s).unwrap()));
        s.conn
            .execute(
                "UPDATE signatures SET signature = ?1",
                [sig.to_bytes().to_vec()],
            )
            .unwrap();
        let e = check(&s, &k.verifying_key()).unwrap_err();
        assert!(e.to_string().contains("signed by an older kmsentry"), "{e}");
        assert!(e.to_string().contains("baseline update --sign-key"), "{e}");
        assert_eq!(e.exit_code(), crate::exit::ExitCode::Integrity);
        // Signing again (what `baseline update --sign-key` does) makes it verify.
        sign(&mut s, 1, &k, "later").unwrap();
        check(&s, &k.verifying_key()).unwrap();
        // The version 1 digest is blind to credential facts, which is why it is retired.
        let before = digest_v1(&s).unwrap();
        s.conn
            .execute_batch("UPDATE credentials SET facts = '{}'")
            .unwrap();
        assert_eq!(digest_v1(&s).unwrap(), before);
    }

    #[test]
    fn another_key_or_no_signature_is_refused() {
        let (s, _) = signed_store();
        let other = generate().unwrap();
        let e = check(&s, &other.verifying_key()).unwrap_err();
        assert!(e.to_string().contains("signed by another key"), "{e}");
        let unsigned = Store::open_in_memory().unwrap();
        let e = check(&unsigned, &other.verifying_key()).unwrap_err();
        assert!(e.to_string().contains("not signed"), "{e}");
    }

    #[test]
    fn keys_round_trip_through_pem_files_with_safe_modes() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let k = generate().unwrap();
        let pubp = write_keypair(&k, &t.path().join("k")).unwrap();
        assert_eq!(
            std::fs::metadata(t.path().join("k"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(
            load_signing_key(&t.path().join("k")).unwrap().to_bytes(),
            k.to_bytes()
        );
        assert_eq!(load_verifying_key(&pubp).unwrap(), k.verifying_key());
        assert!(std::fs::read_to_string(&pubp)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----"));
        std::fs::write(t.path().join("junk"), "nope").unwrap();
        assert_eq!(
            load_verifying_key(&t.path().join("junk"))
                .unwrap_err()
                .exit_code(),
            crate::exit::ExitCode::Usage
        );
    }
}
