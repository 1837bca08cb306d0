//! `kmsentry restore`: plan, show, then put files back as baselined. Exit 0 when everything
//! was restored (or nothing differed), 1 when some entry could not be (each says why; with
//! `--dry-run`: when anything differs), 3 on a store or baseline integrity error, in which
//! case nothing is written.

use super::store::DEFAULT_STORE;
use super::{emit, Common, DEFAULT_DB, DEFAULT_POLICY};
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::restore::{
    self, Hooks, Plan, PlanItem, PlanOptions, Quarantine, RestoreError, Restored,
};
use crate::sanitize::{JsonName, Name};
use crate::store::objects::ObjectStore;
use crate::store::Store;
use clap::{Args, ValueEnum};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct RestoreArgs {
    /// Policy file (groups, what to compare, which groups restore).
    #[arg(long, short = 'p', default_value = DEFAULT_POLICY)]
    policy: PathBuf,
    /// Baseline database.
    #[arg(long, short = 'd', default_value = DEFAULT_DB)]
    db: PathBuf,
    /// Trusted store (content copies; the quarantine lives beneath it).
    #[arg(long, short = 's', default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// Restore under this directory (a mounted image) instead of the live host.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Human)]
    format: Format,
    /// With no PATH: restore drift in every group, not only groups with `on_change: restore`.
    #[arg(long)]
    all: bool,
    /// Refuse a baseline not signed by this ed25519 public key.
    #[arg(long)]
    verify_key: Option<PathBuf>,
    /// Use a baseline recorded on another live host (normally exit 3).
    #[arg(long)]
    allow_other_host: bool,
    /// Host-absolute paths to restore (and everything baselined beneath them).
    paths: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    Human,
    Json,
}

type Outcome = Option<Result<Restored, RestoreError>>;

pub(crate) fn restore(a: &RestoreArgs, common: Common) -> Result<ExitCode> {
    let policy = crate::policy::load(&a.policy)?;
    let verify_key = a
        .verify_key
        .as_deref()
        .map(crate::store::signing::load_verifying_key)
        .transpose()?;
    let root = super::open_root(&a.root)?;
    let db = Store::open(&a.db, false)?;
    // Read (and so check the seal) before trusting what the runs say about its origin.
    let baseline = match &verify_key {
        Some(k) => {
            let (entries, digest) = db.entries_with_digest()?;
            crate::store::signing::check_digest(&db, k, &digest)?;
            entries
        }
        None => db.entries()?,
    };
    crate::store::check_origin(&db, &root, a.allow_other_host)?;
    let objects = ObjectStore::open(&a.store)?;
    let paths: Vec<Vec<u8>> = a
        .paths
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    let plan = restore::plan(
        &root,
        &baseline,
        Some(&objects),
        &policy,
        &paths,
        PlanOptions { all_groups: a.all },
    )?;
    let integrity = plan.has_integrity_errors();
    let mut outcomes: Vec<Outcome> = vec![None; plan.items.len()];
    if !a.dry_run && !integrity {
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%S%.6fZ")
            .to_string();
        let q = Quarantine::new(&objects, &stamp)
            .map_err(|e| Error::io("open quarantine", objects.path().as_os_str().as_bytes(), e))?;
        let hooks = Hooks::default();
        let results = restore::apply_all(&root, Some(&objects), &plan.items, &q, &hooks);
        for (r, out) in results.into_iter().zip(outcomes.iter_mut()) {
            *out = Some(r);
        }
        q.sync()
            .map_err(|e| Error::io("sync quarantine", q.path().as_os_str().as_bytes(), e))?;
    }
    let data = match a.format {
        Format::Human => human(&plan, &outcomes, a.dry_run, integrity).into_bytes(),
        Format::Json => {
            let mut v =
                serde_json::to_vec_pretty(&json(&plan, &outcomes, a.dry_run)).unwrap_or_default();
            v.push(b'\n');
            v
        }
    };
    emit(&None, &data)?;
    if integrity {
        if !common.quiet {
            eprintln!(
                "kmsentry: error: the trusted store failed its integrity check; nothing was restored (see `kmsentry store verify`)"
            );
        }
        return Ok(ExitCode::Integrity);
    }
    let failed = if a.dry_run {
        !plan.items.is_empty()
    } else {
        outcomes.iter().any(|o| !matches!(o, Some(Ok(_))))
    };
    if outcomes
        .iter()
        .any(|o| matches!(o, Some(Err(e)) if e.is_integrity()))
    {
        return Ok(ExitCode::Integrity);
    }
    Ok(if failed {
        ExitCode::Drift
    } else {
        ExitCode::Clean
    })
}

fn changes(item: &PlanItem) -> Vec<&'static str> {
    item.changes.iter().map(|c| c.as_str()).collect()
}

fn what(item: &PlanItem) -> String {
    match &item.planned {
        Ok(p) => format!(
            "{}: {}",
            p.method.as_str(),
            p.actions
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => e.to_string(),
    }
}

fn short(h: Option<crate::baseline::Hashes>) -> String {
    h.map_or_else(|| "-".into(), |h| hex::encode(&h.blake3[..8]))
}

fn human(plan: &Plan, outcomes: &[Outcome], dry_run: bool, integrity: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "restore plan: {} of {} baselined entries differ",
        plan.items.len(),
        plan.checked
    );
    for item in &plan.items {
        let c = changes(item);
        let _ = writeln!(
            s,
            "  {} {}{} -> {}",
            item.status.as_str(),
            Name(&item.path),
            if c.is_empty() {
                String::new()
            } else {
                format!(" [{}]", c.join(", "))
            },
            what(item)
        );
    }
    if dry_run {
        s.push_str("dry run: nothing was changed\n");
        return s;
    }
    if integrity {
        s.push_str("integrity error in the trusted store: nothing was changed\n");
        return s;
    }
    let (mut ok, mut bad) = (0, 0);
    for (item, out) in plan.items.iter().zip(outcomes) {
        match out {
            Some(Ok(r)) => {
                ok += 1;
                let _ = writeln!(
                    s,
                    "restored {} (blake3 {} -> {}){}",
                    Name(&item.path),
                    short(r.before),
                    short(r.after),
                    r.quarantined.as_ref().map_or_else(String::new, |q| format!(
                        "; tampered version kept in {}",
                        Name(q.as_os_str().as_bytes())
                    ))
                );
            }
            Some(Err(e)) => {
                bad += 1;
                let _ = writeln!(s, "failed {}: {e}", Name(&item.path));
            }
            None => {}
        }
    }
    let _ = writeln!(s, "{ok} restored, {bad} could not be restored");
    s
}

fn json(plan: &Plan, outcomes: &[Outcome], dry_run: bool) -> serde_json::Value {
    let hx = |h: Option<crate::baseline::Hashes>| h.map(|h| hex::encode(h.blake3));
    let items: Vec<serde_json::Value> = plan
        .items
        .iter()
        .zip(outcomes)
        .map(|(item, out)| {
            let mut o = serde_json::json!({
                "path": JsonName(&item.path),
                "status": item.status.as_str(),
                "changes": changes(item),
                "group": item.group,
                "class": item.class.as_str(),
            });
            match &item.planned {
                Ok(p) => {
                    o["method"] = p.method.as_str().into();
                    o["actions"] = p
                        .actions
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .into();
                }
                Err(e) => o["error"] = e.to_string().into(),
            }
            o["result"] = match out {
                None if dry_run => "planned".into(),
                None => "not_attempted".into(),
                Some(Ok(r)) => {
                    o["before_blake3"] = hx(r.before).into();
                    o["after_blake3"] = hx(r.after).into();
                    o["quarantine"] = r
                        .quarantined
                        .as_ref()
                        .map(|q| JsonName(q.as_os_str().as_bytes()).text().into_owned())
                        .into();
                    "restored".into()
                }
                Some(Err(e)) => {
                    o["error"] = e.to_string().into();
                    "failed".into()
                }
            };
            o
        })
        .collect();
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    serde_json::json!({
        "dry_run": dry_run,
        "items": items,
        "summary": {
            "checked": plan.checked,
            "differ": plan.items.len(),
            "restored": count(&|o| matches!(o, Some(Ok(_)))),
            "failed": count(&|o| matches!(o, Some(Err(_)))),
        }
    })
}
