//! `kmsentry store verify | gc`, and the trusted-copy step of `baseline init/update --store`.

use super::{Common, DEFAULT_DB};
use crate::baseline::{Entry, FileType, Hashes};
use crate::error::Result;
use crate::exit::ExitCode;
use crate::fsroot::Root;
use crate::policy::{CompiledPolicy, OnChange};
use crate::sanitize::Name;
use crate::store::objects::{object_id, ObjectStore, Put};
use crate::store::Store;
use clap::Args;
use std::collections::HashSet;
use std::path::PathBuf;

/// Default trusted store.
pub const DEFAULT_STORE: &str = "/var/lib/kmsentry/store";

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Trusted store directory.
    #[arg(long, short = 's', default_value = DEFAULT_STORE)]
    store: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct GcArgs {
    /// Trusted store directory.
    #[arg(long, short = 's', default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// Baselines whose objects are kept (repeat for several); everything else is deleted.
    #[arg(long, short = 'd', default_value = DEFAULT_DB)]
    db: Vec<PathBuf>,
    /// Only say what would be deleted.
    #[arg(long)]
    dry_run: bool,
}

/// Open (creating if needed) the store named by `--store`, before any walking.
pub(crate) fn open_for_baseline(store: &Option<PathBuf>) -> Result<Option<ObjectStore>> {
    store.as_deref().map(ObjectStore::create).transpose()
}

/// Queue `e` for the store when it is a hashed regular file of a group that restores (or of
/// any group, with `all`).
pub(crate) fn select(
    policy: &CompiledPolicy,
    e: &Entry,
    all: bool,
    out: &mut Vec<(Vec<u8>, Hashes)>,
) {
    let Some(h) = e.hashes else { return };
    if e.ftype != FileType::File {
        return;
    }
    let restores = policy
        .group(&e.group)
        .is_some_and(|g| g.on_change.contains(&OnChange::Restore));
    if all || restores {
        out.push((e.path.clone(), h));
    }
}

/// Copy the queued files into the store; each failure is reported and makes the exit 3.
pub(crate) fn copy_in(
    store: Option<&ObjectStore>,
    root: &Root,
    items: &[(Vec<u8>, Hashes)],
    common: Common,
) -> ExitCode {
    let Some(store) = store else {
        return ExitCode::Clean;
    };
    let (mut stored, mut present, mut failed) = (0u64, 0u64, 0u64);
    for (path, h) in items {
        match store.put_from_root(root, path, h) {
            Ok(Put::Stored) => stored += 1,
            Ok(Put::Present) => present += 1,
            Err(e) => {
                failed += 1;
                eprintln!("kmsentry: error: trusted copy of {}: {e}", Name(path));
            }
        }
    }
    if !common.quiet {
        eprintln!(
            "kmsentry: trusted store {}: {stored} objects written, {present} already present{}",
            Name(std::os::unix::ffi::OsStrExt::as_bytes(
                store.path().as_os_str()
            )),
            if failed > 0 {
                format!(", {failed} files could not be copied (see above)")
            } else {
                String::new()
            }
        );
    }
    if failed > 0 {
        ExitCode::Integrity
    } else {
        ExitCode::Clean
    }
}

fn store_name(s: &ObjectStore) -> Vec<u8> {
    std::os::unix::ffi::OsStrExt::as_bytes(s.path().as_os_str()).to_vec()
}

pub(crate) fn verify(a: &VerifyArgs, common: Common) -> Result<ExitCode> {
    let store = ObjectStore::open(&a.store)?;
    let r = store.verify_all()?;
    for p in &r.problems {
        eprintln!("kmsentry: error: {}: {p}", Name(&store_name(&store)));
    }
    if !common.quiet {
        eprintln!(
            "kmsentry: {} objects ({} bytes) checked, {} problems",
            r.objects,
            r.bytes,
            r.problems.len()
        );
    }
    Ok(if r.problems.is_empty() {
        ExitCode::Clean
    } else {
        ExitCode::Integrity
    })
}

pub(crate) fn gc(a: &GcArgs, common: Common) -> Result<ExitCode> {
    let store = ObjectStore::open(&a.store)?;
    // Every baseline must load completely before anything is deleted: a database that fails
    // to open must not make its objects look unreferenced.
    let mut keep: HashSet<[u8; 32]> = HashSet::new();
    for db in &a.db {
        let s = Store::open(db, false)?;
        s.for_each_entry(|e| {
            if let Some(h) = e.hashes {
                keep.insert(h.blake3);
            }
            Ok(())
        })?;
    }
    let mut strays = Vec::new();
    let ids = store.list(&mut strays)?;
    let mut removed = 0u64;
    for id in ids.iter().filter(|id| !keep.contains(*id)) {
        if a.dry_run {
            println!("would delete {}", object_id(id));
        } else {
            store.remove(id)?;
            println!("deleted {}", object_id(id));
        }
        removed += 1;
    }
    let temps = if a.dry_run { 0 } else { store.remove_temps()? };
    if !common.quiet {
        eprintln!(
            "kmsentry: {} of {} objects {}deleted, {} kept; {temps} leftover temp files removed",
            removed,
            ids.len(),
            if a.dry_run { "would be " } else { "" },
            ids.len() as u64 - removed
        );
    }
    for s in &strays {
        eprintln!("kmsentry: warning: stray file in the store: {s}");
    }
    Ok(ExitCode::Clean)
}
