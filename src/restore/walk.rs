//! The plan walk: every baselined path in scope, inspected and diffed against the baseline,
//! becomes a [`PlanItem`]; clean paths drop out. Owns: the scope of each path under the policy
//! and the order of the plan (entries under a directory rebuilt by the same plan come after
//! it). Must not: write anything (planning is read-only).

use super::plan::{plan_item, Method, UNRESTORABLE};
use super::{Plan, PlanItem, RestoreError};
use crate::baseline::diff::{diff, Status};
use crate::baseline::{Entry, FileType};
use crate::fsroot::{split_parent, Root};
use crate::policy::compile::is_within;
use crate::policy::{Class, CompareSet, CompiledPolicy};
use crate::sanitize::Name;
use crate::store::objects::ObjectStore;
use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::AsFd;

use super::reach::{dev_ino, inspect, walk_dir, DirError};

/// Which baselined paths a plan covers.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlanOptions {
    /// With no paths named: every group, not only those with `on_change: restore`.
    pub all_groups: bool,
}

/// How the policy sees one baselined path.
pub(super) struct Scope {
    /// What to compare, minus what the kernel sets.
    pub(super) compare: CompareSet,
    pub(super) group: String,
    pub(super) class: Class,
    /// The group restores, so the store must hold its content.
    pub(super) expects_object: bool,
}

/// The scope of `base` under `policy` (the default compare set when no group covers it).
fn scope_of(policy: &CompiledPolicy, base: &Entry) -> Scope {
    match policy.classify(&base.path) {
        Some(g) => Scope {
            compare: restorable(g.compare),
            group: g.name.clone(),
            class: g.class,
            expects_object: g.on_change.contains(&crate::policy::OnChange::Restore),
        },
        None => Scope {
            compare: restorable(CompareSet::default_set()),
            group: base.group.clone(),
            class: base.class,
            expects_object: false,
        },
    }
}

pub(super) fn restorable(set: CompareSet) -> CompareSet {
    CompareSet::from_attrs(set.iter().filter(|a| !UNRESTORABLE.contains(a)))
}

/// Whether `dir` or one of its ancestors is rebuilt by an earlier item of the plan.
pub(super) fn rebuilt_above(created_dirs: &HashSet<Vec<u8>>, dir: &[u8]) -> bool {
    let mut d = dir;
    loop {
        if created_dirs.contains(d) {
            return true;
        }
        if d == b"/" {
            return false;
        }
        d = split_parent(d).0;
    }
}

/// Plan one baselined entry: inspect it, diff it, decide. `None` when it is clean.
pub(super) fn plan_one(
    root: &Root,
    store: Option<&ObjectStore>,
    base: &Entry,
    scope: Scope,
    created_dirs: &HashSet<Vec<u8>>,
) -> Option<PlanItem> {
    let Scope {
        compare,
        group,
        class,
        expects_object,
    } = scope;
    let (pdir, name) = split_parent(&base.path);
    let mut item = PlanItem {
        path: base.path.clone(),
        group: group.clone(),
        class,
        status: Status::Changed,
        changes: Vec::new(),
        planned: Err(RestoreError::Unsupported(String::new())),
        base: base.clone(),
        live: None,
        parent: None,
        compare,
    };
    if name.is_empty() {
        item.planned = Err(RestoreError::Unsupported(
            "the root directory itself".into(),
        ));
        return Some(item);
    }
    let live = match walk_dir(root, pdir) {
        Ok(dir) => {
            item.parent = dev_ino(dir.as_fd()).ok();
            let Ok(cname) = CString::new(name) else {
                item.planned = Err(RestoreError::Refused("a NUL byte in a path".into()));
                return Some(item);
            };
            match inspect(dir.as_fd(), &cname, &base.path, &group, class) {
                Ok(l) => l,
                Err(e) => {
                    item.planned = Err(RestoreError::io("inspect", e));
                    return Some(item);
                }
            }
        }
        // The parent (or an ancestor) is missing or is not a directory, but will be rebuilt
        // earlier in this plan; apply walks the path again, without following anything.
        Err(DirError::Missing(_) | DirError::Other(_)) if rebuilt_above(created_dirs, pdir) => None,
        Err(e) => {
            item.planned = Err(e.into());
            return Some(item);
        }
    };
    let changes = match &live {
        Some(l) => {
            let c = diff(base, l, compare);
            if c.is_empty() && l.problem.is_none() {
                return None;
            }
            c
        }
        None => {
            item.status = Status::Removed;
            Vec::new()
        }
    };
    // In a group that restores, the store must hold the copy: its absence is tampering
    // with the store (exit 3, reported by the verification below), not a missing feature.
    let has_object = match (store, base.hashes) {
        (Some(s), Some(h)) => expects_object || s.contains(&h.blake3),
        _ => false,
    };
    item.planned = plan_item(base, live.as_ref(), &changes, has_object);
    if let (Ok(p), Some(s), Some(h)) = (&item.planned, store, base.hashes) {
        if p.needs_object {
            if let Err(e) = s.verify(&h) {
                item.planned = Err(RestoreError::Integrity(e.to_string()));
            }
        }
    }
    item.changes = changes;
    item.live = live;
    Some(item)
}

/// Plan the restore of `baseline` (sorted by path, as [`crate::store::Store::entries`] gives
/// it) under `root`: every drifted entry of groups with `on_change: restore` (all groups with
/// [`PlanOptions::all_groups`]), or, when `paths` are named, every baselined entry at or below
/// them. Every store object the plan needs is re-hashed here; one that fails is an item with
/// an [`RestoreError::Integrity`] error. A named path that is not in the baseline is a usage
/// error.
pub fn plan(
    root: &Root,
    baseline: &[Entry],
    store: Option<&ObjectStore>,
    policy: &CompiledPolicy,
    paths: &[Vec<u8>],
    opts: PlanOptions,
) -> crate::error::Result<Plan> {
    for p in paths {
        if !p.starts_with(b"/") {
            return Err(crate::error::Error::Usage(format!(
                "{}: expected a host-absolute path such as /etc/kms/client.key",
                Name(p)
            )));
        }
        if !baseline.iter().any(|b| is_within(&b.path, p)) {
            return Err(crate::error::Error::Usage(format!(
                "{}: not in the baseline; nothing to restore",
                Name(p)
            )));
        }
    }
    let mut plan = Plan::default();
    let mut created_dirs = HashSet::new();
    for base in baseline {
        let in_scope = if paths.is_empty() {
            opts.all_groups
                || policy
                    .classify(&base.path)
                    .is_some_and(|g| g.on_change.contains(&crate::policy::OnChange::Restore))
        } else {
            paths.iter().any(|p| is_within(&base.path, p))
        };
        if !in_scope {
            continue;
        }
        plan.checked += 1;
        if let Some(item) = plan_one(root, store, base, scope_of(policy, base), &created_dirs) {
            if base.ftype == FileType::Dir
                && matches!(&item.planned, Ok(p) if p.method != Method::InPlace)
            {
                created_dirs.insert(base.path.clone());
            }
            plan.items.push(item);
        }
    }
    Ok(plan)
}
