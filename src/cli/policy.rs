//! `kmsentry policy check P`: parse and compile with the code every command uses, then show
//! what the policy resolves to on this host (or under `--root`), with lint warnings. Resolving
//! walks the paths without opening or hashing any file.

use super::{root_path, Common};
use crate::baseline::walk::{self, Item, WalkOptions};
use crate::error::Result;
use crate::exit::ExitCode;
use crate::policy::AccessMode;
use crate::sanitize::Name;
use clap::Args;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// The policy file to check.
    policy: PathBuf,
    /// Resolve paths under this directory (an image) instead of this host.
    #[arg(long)]
    root: Option<PathBuf>,
    /// List every path the policy resolves to.
    #[arg(long)]
    list: bool,
    /// Only validate; do not look at the file system.
    #[arg(long)]
    no_resolve: bool,
}

pub(crate) fn check(a: &CheckArgs, common: Common) -> Result<ExitCode> {
    let policy = crate::policy::load(&a.policy)?;
    let mut out = String::new();
    let mut warnings = policy.lints();
    let _ = writeln!(
        out,
        "{}: valid policy, {} groups, digest {}",
        Name(a.policy.as_os_str().as_bytes()),
        policy.groups.len(),
        &policy.digest[..16]
    );
    // Resolve on the target: per-group and per-pattern counts, and real overlaps.
    let mut per_group: BTreeMap<String, (u64, Vec<Vec<u8>>)> = BTreeMap::new();
    let mut per_pattern: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut overlaps: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut errors = Vec::new();
    let root_dir = root_path(&a.root);
    // A bad --root is a usage error even when nothing is resolved.
    let root = super::open_root(&a.root)?;
    if !a.no_resolve {
        let found = Mutex::new(Vec::new());
        walk::walk(
            &root,
            &policy,
            WalkOptions {
                threads: common.threads,
                hash: walk::Hashing::Off,
            },
            &|item| {
                let mut g = found.lock().unwrap_or_else(|p| p.into_inner());
                g.push(item);
            },
        );
        for item in found.into_inner().unwrap_or_else(|p| p.into_inner()) {
            match item {
                Item::Entry(e) => {
                    let slot = per_group.entry(e.group.clone()).or_default();
                    slot.0 += 1;
                    if a.list {
                        slot.1.push(e.path.clone());
                    }
                    if let Some(g) = policy.group(&e.group) {
                        for p in g.patterns.iter().filter(|p| p.matches(&e.path)) {
                            *per_pattern
                                .entry((g.name.clone(), p.as_str().to_string()))
                                .or_default() += 1;
                        }
                    }
                    let claim = policy.claimants(&e.path);
                    if claim.len() > 1 {
                        for other in claim.iter().filter(|g| g.name != e.group) {
                            *overlaps
                                .entry((e.group.clone(), other.name.clone()))
                                .or_default() += 1;
                        }
                    }
                }
                Item::Error(e) => errors.push(e),
            }
        }
        let names = crate::users::Names::for_root(&root);
        for g in &policy.groups {
            for rule in &g.access.allow {
                for u in &rule.users {
                    if names.uid_of(u).is_none() {
                        warnings.push(format!(
                            "group `{}`: allow-list user `{u}` does not exist on {}",
                            g.name,
                            Name(root_dir.as_os_str().as_bytes())
                        ));
                    }
                }
                if root.resolve(&rule.exe, rustix::fs::OFlags::PATH).is_err() {
                    warnings.push(format!(
                        "group `{}`: allow-list exe {} does not exist on {}",
                        g.name,
                        Name(&rule.exe),
                        Name(root_dir.as_os_str().as_bytes())
                    ));
                }
            }
        }
    }
    let mut unmatched = Vec::new();
    for g in &policy.groups {
        let access = match g.access.mode {
            AccessMode::Off => "off".to_string(),
            m => format!("{} ({} allow rules)", m.as_str(), g.access.allow.len()),
        };
        let _ = writeln!(
            out,
            "\ngroup {}  class={}  access={access}  on_change={}",
            g.name,
            g.class.as_str(),
            g.on_change
                .iter()
                .map(|o| format!("{o:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(",")
        );
        let _ = writeln!(
            out,
            "  compare: {}",
            g.compare
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for p in &g.patterns {
            if a.no_resolve {
                let _ = writeln!(out, "  path    {}", p.as_str());
            } else {
                let n = per_pattern
                    .get(&(g.name.clone(), p.as_str().to_string()))
                    .copied()
                    .unwrap_or(0);
                let _ = writeln!(out, "  path    {}  ({n} entries)", p.as_str());
                if n == 0 {
                    unmatched.push(format!("`{}` ({})", p.as_str(), g.name));
                }
            }
        }
        for x in &g.excludes {
            let _ = writeln!(out, "  exclude {}", x.as_str());
        }
        if let Some((n, paths)) = per_group.get(&g.name) {
            let _ = writeln!(out, "  total   {n} entries");
            for p in paths {
                let _ = writeln!(out, "    {}", Name(p));
            }
        }
    }
    if !unmatched.is_empty() {
        // One line: a policy written for several vendors' layouts matches little on any one
        // host, and that is not a mistake.
        warnings.push(format!(
            "{} of the policy's paths match nothing on {}: {}",
            unmatched.len(),
            Name(root_dir.as_os_str().as_bytes()),
            unmatched.join(", ")
        ));
    }
    for ((a_, b_), n) in &overlaps {
        warnings.push(format!(
            "{n} entries are covered by both `{a_}` and `{b_}`; they belong to `{a_}` (more specific)"
        ));
    }
    warnings.sort();
    warnings.dedup();
    super::emit(&None, out.as_bytes())?;
    // Diagnostics go to stderr, so stdout stays what the policy resolves to.
    let mut diag = String::new();
    for w in &warnings {
        let _ = writeln!(diag, "warning: {w}");
    }
    for e in &errors {
        let _ = writeln!(diag, "error: {e}");
    }
    {
        use std::io::Write as _;
        let _ = std::io::stderr().lock().write_all(diag.as_bytes());
    }
    Ok(if errors.is_empty() {
        ExitCode::Clean
    } else {
        ExitCode::Integrity
    })
}
