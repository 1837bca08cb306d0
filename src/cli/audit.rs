//! `kmsentry audit`: posture of the credential files and provider binaries a policy guards,
//! with no baseline. Walks the policy's paths without hashing, reads each credential file
//! once (on the walker's threads), judges, reports. Exit 0 clean, 1 with a posture finding at
//! or above `--fail-on` (default medium), 3 when a file could not be read.

use super::verify::{FailOn, Format, Verdict};
use super::{open_root, progress, Common, DEFAULT_POLICY};
use crate::baseline::check::{Clean, Report};
use crate::baseline::credentials::{self, LiveCred};
use crate::baseline::walk::{self, Item, WalkOptions};
use crate::error::Result;
use crate::exit::ExitCode;
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    /// Policy file.
    #[arg(long, short = 'p', default_value = DEFAULT_POLICY)]
    policy: PathBuf,
    /// Read the policy's (host-absolute) paths under this directory, e.g. a mounted image.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Write the report to this file (atomically) instead of stdout.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Judge expiry as of this time (RFC 3339, e.g. 2027-01-01T00:00:00Z) instead of now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Exit 1 only for a finding at or above this severity.
    #[arg(long, value_enum, value_name = "SEVERITY", default_value_t = FailOn::Medium)]
    fail_on: FailOn,
}

pub(crate) fn audit(a: &AuditArgs, common: Common) -> Result<ExitCode> {
    let started = super::now();
    let policy = crate::policy::load(&a.policy)?;
    let now = match &a.at {
        None => jiff::Timestamp::now().as_second(),
        Some(t) => t
            .parse::<jiff::Timestamp>()
            .map_err(|e| {
                crate::error::Error::Usage(format!(
                    "--at `{t}`: {e}; expected an RFC 3339 time such as 2027-01-01T00:00:00Z"
                ))
            })?
            .as_second(),
    };
    let root = open_root(&a.root)?;
    let owners = credentials::owners(&policy, &crate::users::Names::for_root(&root));
    let pb = progress(common, "audit");
    let found: Mutex<Vec<LiveCred>> = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let checked = AtomicU64::new(0);
    walk::walk(
        &root,
        &policy,
        WalkOptions {
            threads: common.threads,
            hash: walk::Hashing::Off,
        },
        &|item| match item {
            Item::Entry(e) => {
                pb.inc(1);
                checked.fetch_add(1, Ordering::Relaxed);
                match credentials::inspect(&root, &policy, &e, false) {
                    Some(Ok(c)) => found.lock().unwrap_or_else(|p| p.into_inner()).push(c),
                    Some(Err(err)) => errors.lock().unwrap_or_else(|p| p.into_inner()).push(err),
                    None => {}
                }
            }
            Item::Error(err) => errors.lock().unwrap_or_else(|p| p.into_inner()).push(err),
        },
    );
    pb.finish_and_clear();
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    found.sort_by(|x, y| x.entry.path.cmp(&y.entry.path));
    let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    errors.sort_by(|x, y| x.path.cmp(&y.path));
    let mut findings: Vec<_> = credentials::assess(&policy, &found, now, &owners)
        .into_iter()
        .map(credentials::to_finding)
        .collect();
    findings.sort_by(|x, y| x.path.cmp(&y.path));
    // JUnit lists every file judged; the others need only the findings.
    let clean = if a.format == Format::Junit {
        found
            .iter()
            .filter(|c| {
                findings
                    .binary_search_by(|f| f.path.cmp(&c.entry.path))
                    .is_err()
            })
            .map(|c| Clean {
                path: c.entry.path.clone(),
                group: c.entry.group.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let report = Report {
        findings,
        errors,
        checked: checked.into_inner(),
        clean,
        ..Report::default()
    };
    let verdict = Verdict {
        fail_on: Some(a.fail_on.severity()),
        posture: true,
        hint: None,
    };
    super::verify::finish(
        &report, a.format, &a.output, common, "audit", &started, &verdict,
    )
}
