//! `kmsentry baseline init | update | export`.

use super::{emit, hostname, now, progress, root_path, Common, DEFAULT_DB, DEFAULT_POLICY};
use crate::baseline::check::{compare, Outcome};
use crate::baseline::diff::Status;
use crate::baseline::walk::{self, WalkOptions};
use crate::baseline::{Entry, FileType};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::fsroot::Root;
use crate::policy::compile::is_within;
use crate::sanitize::Name;
use crate::store::{signing, Accepted, Run, Store};
use clap::Args;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// Policy file.
    #[arg(long, short = 'p', default_value = DEFAULT_POLICY)]
    policy: PathBuf,
    /// Baseline database to create.
    #[arg(long, short = 'd', default_value = DEFAULT_DB)]
    db: PathBuf,
    /// Read the policy's (host-absolute) paths under this directory, e.g. a mounted image.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Replace an existing database (the old one stays until the new one is complete).
    #[arg(long)]
    force: bool,
    /// Sign the baseline with this ed25519 key (from `kmsentry key gen`).
    #[arg(long)]
    sign_key: Option<PathBuf>,
    /// Keep a trusted copy of every regular file of groups with `on_change: restore` in this
    /// content-addressed store (for `kmsentry restore` and the daemon).
    #[arg(long)]
    store: Option<PathBuf>,
    /// With --store: copy the files of every group, not only those with `on_change: restore`.
    #[arg(long, requires = "store")]
    store_all: bool,
}

#[derive(Args, Debug)]
pub(crate) struct UpdateArgs {
    /// Policy file.
    #[arg(long, short = 'p', default_value = DEFAULT_POLICY)]
    policy: PathBuf,
    /// Baseline database to update.
    #[arg(long, short = 'd', default_value = DEFAULT_DB)]
    db: PathBuf,
    /// Read the policy's (host-absolute) paths under this directory.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Why these changes are accepted (kept in the baseline's history).
    #[arg(long)]
    reason: Option<String>,
    /// Sign the updated baseline with this ed25519 key (a signed baseline must be re-signed).
    #[arg(long)]
    sign_key: Option<PathBuf>,
    /// Accept only certificate renewals (findings `verify` reports as `rotated`), nothing
    /// else; combines with PATH arguments.
    #[arg(long)]
    accept_rotations: bool,
    /// Keep a trusted copy of every regular file of groups with `on_change: restore` in this
    /// content-addressed store (for `kmsentry restore` and the daemon).
    #[arg(long)]
    store: Option<PathBuf>,
    /// With --store: copy the files of every group, not only those with `on_change: restore`.
    #[arg(long, requires = "store")]
    store_all: bool,
    /// Accept only these host-absolute paths (and what lies beneath them); all when omitted.
    paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    /// Baseline database.
    #[arg(long, short = 'd', default_value = DEFAULT_DB)]
    db: PathBuf,
}

fn bytes(p: &std::path::Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

pub(crate) fn init(a: &InitArgs, common: Common) -> Result<ExitCode> {
    let policy = crate::policy::load(&a.policy)?;
    // Load the key before any work, so a bad key fails fast and the walk is not wasted.
    let sign_key = a
        .sign_key
        .as_deref()
        .map(signing::load_signing_key)
        .transpose()?;
    let root_dir = root_path(&a.root);
    let root = super::open_root(&a.root)?;
    let objects = super::store::open_for_baseline(&a.store)?;
    let mut to_store = Vec::new();
    let started = now();
    let clock = std::time::Instant::now();
    let mut store = Store::create(&a.db, a.force)?;
    let pb = progress(common, "baseline");
    let mut names = crate::users::Names::for_root(&root);
    let mut errors = Vec::new();
    let mut stats = InitStats::new(&policy);
    // The walk runs on its own threads and streams entries here, where they are inserted
    // while hashing goes on: the database work overlaps the walk instead of following it.
    // Items travel in batches: one channel operation (and at most one wake-up of the
    // writer) per BATCH entries instead of per entry.
    const BATCH: usize = 256;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<walk::Item>>(16);
    let batch = std::sync::Mutex::new(Vec::with_capacity(BATCH));
    let creds = std::sync::Mutex::new(Vec::new());
    let cred_errors = std::sync::Mutex::new(Vec::new());
    let written = std::thread::scope(|sc| {
        sc.spawn(|| {
            let tx = tx;
            walk::walk_inspecting(
                &root,
                &policy,
                WalkOptions {
                    threads: common.threads,
                    hash: walk::Hashing::Record,
                },
                // Credential facts are read on the walker's threads, from the bytes it just
                // hashed (small files) or from the page cache (larger ones).
                &|e, content| match crate::baseline::credentials::record(&root, e, content) {
                    Some(Ok(s)) => lock(&creds).push(s),
                    Some(Err(err)) => lock(&cred_errors).push(err),
                    None => {}
                },
                // A send fails only once the writer gave up; the walk then just finishes.
                &|item| {
                    let full = {
                        let mut b = lock(&batch);
                        b.push(item);
                        (b.len() >= BATCH)
                            .then(|| std::mem::replace(&mut *b, Vec::with_capacity(BATCH)))
                    };
                    if let Some(full) = full {
                        let _ = tx.send(full);
                    }
                },
            );
            let rest = std::mem::take(&mut *lock(&batch));
            let _ = tx.send(rest);
        });
        let result = store.atomically(|s| {
            // Owned here, so it is dropped when this closure returns, even on an error: a walk
            // still sending then finishes instead of blocking on a full channel forever.
            let rx = rx;
            let id = s.add_run(&new_run("init", &policy, &root_dir, &started, None))?;
            let entries = rx.iter().flatten().filter_map(|item| match item {
                walk::Item::Entry(e) => {
                    pb.inc(1);
                    stats.add(&policy, &e);
                    if objects.is_some() {
                        super::store::select(&policy, &e, a.store_all, &mut to_store);
                    }
                    Some(e)
                }
                walk::Item::Error(e) => {
                    errors.push(e);
                    None
                }
            });
            let n = s.put_entries(id, entries, &mut names)?;
            // The channel is drained: every walker thread is done, every fact is in.
            s.put_credentials(lock(&creds).iter())?;
            s.finish_run(id, n as i64, &now())?;
            if let Some(k) = &sign_key {
                signing::sign(s, id, k, &now())?;
            }
            s.seal(id, &now())?;
            Ok(n)
        });
        result
    });
    pb.finish_and_clear();
    let n = match written {
        Ok(n) => n,
        Err(e) => {
            store.abandon();
            return Err(e);
        }
    };
    errors.extend(cred_errors.into_inner().unwrap_or_else(|p| p.into_inner()));
    let dest = store.install()?;
    let stored = super::store::copy_in(objects.as_ref(), &root, &to_store, common);
    stats.report_unmatched(&policy);
    for e in &errors {
        eprintln!("kmsentry: error: {e}");
    }
    if !common.quiet {
        eprintln!(
            "kmsentry: baseline of {n} entries ({} files, {} hashed) written to {} in {:.2?}{}",
            stats.files,
            human_bytes(stats.bytes_hashed),
            Name(&bytes(&dest)),
            clock.elapsed(),
            if errors.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} entries could not be fully read (see above)",
                    errors.len()
                )
            }
        );
    }
    Ok(if errors.is_empty() {
        stored
    } else {
        ExitCode::Integrity
    })
}

/// The run record every init and update writes first (entries and finish time follow).
fn new_run(
    kind: &str,
    policy: &crate::policy::CompiledPolicy,
    root_dir: &std::path::Path,
    started: &str,
    reason: Option<String>,
) -> Run {
    Run {
        id: 0,
        kind: kind.into(),
        started_at: started.into(),
        finished_at: started.into(),
        host: hostname(),
        root: bytes(root_dir),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        policy_file: policy.file.clone(),
        policy_digest: policy.digest.clone(),
        policy_text: policy.text.clone(),
        reason,
        entries: 0,
        machine_id: crate::store::origin::machine_id(),
    }
}

/// What `init` reports at the end, gathered as entries stream by.
struct InitStats {
    files: u64,
    bytes_hashed: u64,
    /// Per group, per pattern: matched anything?
    matched: Vec<Vec<bool>>,
}

impl InitStats {
    fn new(policy: &crate::policy::CompiledPolicy) -> InitStats {
        InitStats {
            files: 0,
            bytes_hashed: 0,
            matched: policy
                .groups
                .iter()
                .map(|g| vec![false; g.patterns.len()])
                .collect(),
        }
    }

    fn add(&mut self, policy: &crate::policy::CompiledPolicy, e: &Entry) {
        if e.ftype == FileType::File {
            self.files += 1;
        }
        if e.hashes.is_some() {
            self.bytes_hashed += e.size;
        }
        if let Some(gi) = policy.groups.iter().position(|g| g.name == e.group) {
            for (pi, p) in policy.groups[gi].patterns.iter().enumerate() {
                if !self.matched[gi][pi] && p.matches(&e.path) {
                    self.matched[gi][pi] = true;
                }
            }
        }
    }

    /// Patterns that matched nothing: usually a typo, or a host without that software.
    fn report_unmatched(&self, policy: &crate::policy::CompiledPolicy) {
        for (g, flags) in policy.groups.iter().zip(&self.matched) {
            for (p, hit) in g.patterns.iter().zip(flags) {
                if !hit {
                    tracing::info!(group = %g.name, "pattern `{}` matched nothing", p.as_str());
                }
            }
        }
    }
}

/// Lock, shrugging off poisoning (a panicking walker already failed the run).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn update(a: &UpdateArgs, common: Common) -> Result<ExitCode> {
    let policy = crate::policy::load(&a.policy)?;
    let root_dir = root_path(&a.root);
    let root = super::open_root(&a.root)?;
    let mut filters = Vec::new();
    for p in &a.paths {
        let b = bytes(p);
        if !b.starts_with(b"/") {
            return Err(Error::Usage(format!(
                "{}: expected a host-absolute path such as /etc/kms/client.key",
                Name(&b)
            )));
        }
        if policy.classify(&b).is_none()
            && !policy
                .groups
                .iter()
                .any(|g| g.patterns.iter().any(|pat| pat.could_match_within(&b)))
        {
            return Err(Error::Usage(format!(
                "{}: not covered by any group of the policy",
                Name(&b)
            )));
        }
        filters.push(b);
    }
    let sign_key = a
        .sign_key
        .as_deref()
        .map(signing::load_signing_key)
        .transpose()?;
    let objects = super::store::open_for_baseline(&a.store)?;
    // Written before seals: its rows cannot be checked. Only a full update, which re-records
    // every entry from the live tree, may seal it; a partial one would seal rows nobody
    // checked. Asked before the writer's open, which would migrate it.
    if Store::predates_seal(&a.db) && (!filters.is_empty() || a.accept_rotations) {
        return Err(Error::Integrity(format!(
                "{}: this baseline was written before baselines carried a seal, so its rows cannot be checked; \
                 seal it with a full `kmsentry baseline update` (no paths, no --accept-rotations: every entry is \
                 re-recorded from the live tree) or re-create it with `kmsentry baseline init --force`",
            Name(&bytes(&a.db))
        )));
    }
    let mut store = Store::open(&a.db, true)?;
    if store.is_legacy() {
        tracing::warn!(
            "this baseline was written before baselines carried a seal: every entry is re-recorded from the live tree and the baseline is sealed; its earlier history (runs, accepted changes) is kept unchecked"
        );
    }
    if sign_key.is_none() && store.is_signed()? {
        tracing::warn!(
            "this baseline is signed: an update without --sign-key invalidates the signature, and `verify --verify-key` will refuse the baseline until it is signed again"
        );
    }
    let baseline = store.entries()?;
    let started = now();
    let pb = progress(common, "update");
    let (live, errors) = walk::collect(
        &root,
        &policy,
        WalkOptions {
            threads: common.threads,
            hash: walk::Hashing::Record,
        },
        &|| pb.inc(1),
    );
    pb.finish_and_clear();
    if !errors.is_empty() {
        // An unreadable directory would make everything beneath it look removed; accepting
        // that would silently drop guarded entries from the baseline. Change nothing.
        for e in &errors {
            eprintln!("kmsentry: error: {e}");
        }
        return Err(Error::Integrity(format!(
            "{} entries could not be read; the baseline was not changed (fix the errors above, then update again)",
            errors.len()
        )));
    }
    let (live_creds, cred_errors) =
        crate::baseline::credentials::inspect_all(&root, &policy, &live, a.accept_rotations);
    if !cred_errors.is_empty() {
        for e in &cred_errors {
            eprintln!("kmsentry: error: {e}");
        }
        return Err(Error::Integrity(format!(
            "{} credential files could not be inspected; the baseline was not changed",
            cred_errors.len()
        )));
    }
    let rotated = if a.accept_rotations {
        rotated_paths(&root, &policy, &baseline, &live, &live_creds, &store)?
    } else {
        std::collections::HashMap::new()
    };
    let selected = |p: &[u8]| {
        (filters.is_empty() || filters.iter().any(|f| is_within(p, f)))
            && (!a.accept_rotations || rotated.contains_key(p))
    };
    // Merge the two sorted lists into findings.
    let mut accepted: Vec<Accepted> = Vec::new();
    let mut put: Vec<&Entry> = Vec::new();
    let mut delete: Vec<&[u8]> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < baseline.len() || j < live.len() {
        let ord = match (baseline.get(i), live.get(j)) {
            (Some(b), Some(l)) => b.path.cmp(&l.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let (b, l) = match ord {
            std::cmp::Ordering::Less => {
                i += 1;
                (Some(&baseline[i - 1]), None)
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                (None, Some(&live[j - 1]))
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
                (Some(&baseline[i - 1]), Some(&live[j - 1]))
            }
        };
        let path = b
            .map_or_else(|| l.map(|x| x.path.as_slice()), |x| Some(x.path.as_slice()))
            .unwrap_or_default();
        if !selected(path) {
            continue;
        }
        if let Some(base) = b {
            if l.is_none() && policy.classify(&base.path).is_none() && filters.is_empty() {
                // Outside the policy now: dropped when accepting everything.
                delete.push(&base.path);
                accepted.push(Accepted {
                    path: base.path.clone(),
                    status: "dropped".into(),
                    changes: String::new(),
                    old_blake3: base.hashes.map(|h| h.blake3),
                    new_blake3: None,
                });
                continue;
            }
        }
        match compare(&policy, b, l.cloned()) {
            Outcome::Finding(f) => {
                accepted.push(Accepted {
                    path: f.path.clone(),
                    status: if rotated.contains_key(&f.path) {
                        "rotated".into()
                    } else {
                        f.status.as_str().into()
                    },
                    changes: f
                        .changes
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    old_blake3: b.and_then(|x| x.hashes.map(|h| h.blake3)),
                    new_blake3: l.and_then(|x| x.hashes.map(|h| h.blake3)),
                });
                match (f.status, l) {
                    (Status::Removed, _) => delete.push(b.map_or(&[][..], |x| x.path.as_slice())),
                    (_, Some(l)) => put.push(l),
                    _ => {}
                }
            }
            // Unchanged, but refresh group, class and volatile fields.
            Outcome::Clean(_) => put.extend(l),
            Outcome::Nothing => {}
        }
    }
    let reason = a.reason.clone();
    let legacy = store.is_legacy();
    let mut names = crate::users::Names::for_root(&root);
    let n_put = put.len();
    store.atomically(|s| {
        let id = s.add_run(&new_run("update", &policy, &root_dir, &started, reason))?;
        s.put_entries(id, put.iter().copied(), &mut names)?;
        s.delete_entries(delete.iter().copied())?;
        s.add_accepted(id, &accepted)?;
        // Facts follow the entries: dropped with them, replaced where an entry is written.
        s.delete_credentials(
            delete
                .iter()
                .copied()
                .chain(put.iter().map(|e| e.path.as_slice())),
        )?;
        let written: std::collections::HashSet<&[u8]> =
            put.iter().map(|e| e.path.as_slice()).collect();
        s.put_credentials(
            live_creds
                .iter()
                .filter_map(|l| l.scanned.as_ref())
                .filter(|sc| written.contains(sc.path.as_slice())),
        )?;
        s.finish_run(id, n_put as i64, &now())?;
        if legacy {
            s.drop_orphan_credentials()?;
        }
        if let Some(k) = &sign_key {
            signing::sign(s, id, k, &now())?;
        }
        s.seal(id, &now())?;
        Ok(())
    })?;
    let mut to_store = Vec::new();
    if objects.is_some() {
        for e in &put {
            super::store::select(&policy, e, a.store_all, &mut to_store);
        }
    }
    let stored = super::store::copy_in(objects.as_ref(), &root, &to_store, common);
    if !common.quiet {
        for acc in &accepted {
            eprintln!(
                "accepted {} {}{}",
                acc.status,
                Name(&acc.path),
                if acc.changes.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", acc.changes)
                }
            );
        }
        for f in &filters {
            if !accepted.iter().any(|x| is_within(&x.path, f)) {
                eprintln!("kmsentry: note: no drift at {}", Name(f));
            }
        }
        eprintln!(
            "kmsentry: baseline updated: {} changes accepted",
            accepted.len()
        );
    }
    Ok(stored)
}

/// The changed certificate files of `live` that renew what the baseline holds.
fn rotated_paths(
    root: &Root,
    policy: &crate::policy::CompiledPolicy,
    baseline: &[Entry],
    live: &[Entry],
    live_creds: &[crate::baseline::credentials::LiveCred],
    store: &Store,
) -> Result<std::collections::HashMap<Vec<u8>, String>> {
    let facts = crate::baseline::credentials::baseline_facts(store.credentials()?);
    let findings: Vec<_> = live
        .iter()
        .filter(|l| facts.contains_key(&l.path))
        .filter_map(|l| {
            let i = baseline
                .binary_search_by(|b| b.path.as_slice().cmp(&l.path))
                .ok()?;
            match compare(policy, Some(&baseline[i]), Some(l.clone())) {
                Outcome::Finding(f) => Some(f),
                _ => None,
            }
        })
        .collect();
    Ok(crate::baseline::credentials::rotations(
        root, &findings, live_creds, &facts,
    ))
}

pub(crate) fn export(a: &ExportArgs) -> Result<ExitCode> {
    // The stream checks the seal when it ends; nothing is printed before that.
    let store = Store::open(&a.db, false)?;
    let mut out = Vec::with_capacity(1 << 20);
    out.extend_from_slice(b"# kmsentry baseline export, format 1\n");
    store.for_each_entry(|e| {
        out.extend_from_slice(crate::report::export_line(&e).as_bytes());
        out.push(b'\n');
        Ok(())
    })?;
    emit(&None, &out)?;
    Ok(ExitCode::Clean)
}
