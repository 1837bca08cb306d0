//! `kmsentry verify`: walk, compare with the baseline, report; exit 0 clean, 1 drift, 3 when
//! anything could not be checked (unreadable or unstable files, a corrupt baseline).
//! `verify` judges drift; posture (`KMS-*` rules, what `audit` reports) is shown and counted
//! only with `--posture`. Without it, human output ends with one hint line when there is any.

use super::{emit, open_root, progress, Common, DEFAULT_DB, DEFAULT_POLICY};
use crate::baseline::check::{check, CheckOptions};
use crate::baseline::diff::{Severity, Status};
use crate::baseline::packed::Packed;
use crate::error::Result;
use crate::exit::ExitCode;
use crate::store::Store;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// A typical packed baseline entry (path ~60 bytes, both hashes, varints): the arena's
/// first guess (it grows when the guess is short, and is trimmed once loaded).
const PACKED_BYTES_EACH: usize = 176;

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Policy file.
    #[arg(long, short = 'p', default_value = DEFAULT_POLICY)]
    policy: PathBuf,
    /// Baseline database.
    #[arg(long, short = 'd', default_value = DEFAULT_DB)]
    db: PathBuf,
    /// Read the policy's (host-absolute) paths under this directory, e.g. a mounted image.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Write the report to this file (atomically) instead of stdout.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Refuse a baseline not signed by this ed25519 public key (`K.pub` from `key gen`):
    /// an edited, deleted or swapped row exits 3.
    #[arg(long)]
    verify_key: Option<PathBuf>,
    /// Compare this host with a baseline recorded on another live host (normally exit 3;
    /// baselines recorded under --root verify anywhere without it).
    #[arg(long)]
    allow_other_host: bool,
    /// Also report credential posture (the `KMS-*` rules `audit` checks: expiry, loose key
    /// modes, weak keys...); posture findings then count towards the exit code.
    #[arg(long)]
    posture: bool,
    /// Exit 1 only for a finding at or above this severity (default: any drift).
    #[arg(long, value_enum, value_name = "SEVERITY")]
    fail_on: Option<FailOn>,
}

/// The lowest severity that makes `verify` or `audit` exit 1.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum FailOn {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl FailOn {
    pub(crate) fn severity(self) -> Severity {
        match self {
            FailOn::Info => Severity::Info,
            FailOn::Low => Severity::Low,
            FailOn::Medium => Severity::Medium,
            FailOn::High => Severity::High,
            FailOn::Critical => Severity::Critical,
        }
    }
}

/// How a report becomes an exit code and what the renderers may say beside the findings.
pub(crate) struct Verdict {
    /// Findings below this severity do not make the command exit 1 (`None`: every finding does).
    pub fail_on: Option<Severity>,
    /// Whether posture was judged into this report (`audit`, `verify --posture`): otherwise
    /// XCCDF marks the credential rules `notselected` and JSON has no posture count.
    pub posture: bool,
    /// A last line for human output (the posture `verify` left out).
    pub hint: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    Human,
    Json,
    Junit,
    Sarif,
    /// XCCDF 1.2 TestResult, for SCAP dashboards.
    Xccdf,
}

pub(crate) fn verify(a: &VerifyArgs, common: Common) -> Result<ExitCode> {
    let started = super::now();
    let policy = crate::policy::load(&a.policy)?;
    let verify_key = a
        .verify_key
        .as_deref()
        .map(crate::store::signing::load_verifying_key)
        .transpose()?;
    let root = open_root(&a.root)?;
    // Open (and so fail fast on a missing or foreign database) here; the full read and the
    // integrity check run beside the walk.
    let store = Store::open(&a.db, false)?;
    crate::store::check_origin(&store, &root, a.allow_other_host)?;
    if let Some(last) = store.runs()?.last() {
        if last.policy_digest != policy.digest {
            tracing::warn!(
                "the policy differs from the one the baseline was recorded with (run {} at {}); findings may reflect the policy change",
                last.id,
                last.started_at
            );
        }
    }
    let facts = crate::baseline::credentials::baseline_facts(store.credentials()?);
    let owners =
        crate::baseline::credentials::owners(&policy, &crate::users::Names::for_root(&root));
    let pb = progress(common, "verify");
    let mut report = check(
        &root,
        &policy,
        move || {
            // Every full read runs integrity_check and checks the seal in the same pass.
            // Packed as it streams: the baseline is never a `Vec<Entry>` (memory budget).
            let mut packed = Packed::with_capacity(store.entry_count()?, PACKED_BYTES_EACH);
            let digest = store.for_each_entry_with_digest(|e| {
                packed.push(&e).map_err(|_| {
                    crate::error::Error::Integrity(
                        "the baseline's entries are not in path order".into(),
                    )
                })
            })?;
            if let Some(k) = &verify_key {
                crate::store::signing::check_digest(&store, k, &digest)?;
            }
            packed.shrink();
            Ok(packed)
        },
        CheckOptions {
            threads: common.threads,
            keep_clean: a.format == Format::Junit,
            credentials: true,
        },
        &|| pb.inc(1),
    )?;
    pb.finish_and_clear();
    crate::baseline::credentials::judge(
        &root,
        &mut report,
        &policy,
        &facts,
        jiff::Timestamp::now().as_second(),
        &owners,
    );
    crate::baseline::grant::escalate_new_cas(&mut report, &facts);
    crate::baseline::grant::keep_cited_credentials(&mut report);
    drop(facts);
    let hint = if a.posture {
        None
    } else {
        let (posture, drift): (Vec<_>, Vec<_>) = std::mem::take(&mut report.findings)
            .into_iter()
            .partition(|f| f.status == Status::Posture);
        report.findings = drift;
        posture_hint(&posture, a)
    };
    // The walk's transient allocations (every live entry, freed after its comparison) leave
    // free but resident pages in the allocator's arenas; hand them back before rendering,
    // the other peak of a verify (docs/performance.md).
    trim_heap();
    let verdict = Verdict {
        fail_on: a.fail_on.map(FailOn::severity),
        posture: a.posture,
        hint,
    };
    finish(
        &report, a.format, &a.output, common, "verify", &started, &verdict,
    )
}

/// The line that tells a `verify` user what `audit` would show, or `None` when it has nothing.
fn posture_hint(posture: &[crate::baseline::check::Finding], a: &VerifyArgs) -> Option<String> {
    if posture.is_empty() {
        return None;
    }
    let name = |p: &std::path::Path| {
        crate::sanitize::Name(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).to_string()
    };
    let root = a
        .root
        .as_deref()
        .map_or_else(String::new, |r| format!(" --root {}", name(r)));
    Some(format!(
        "hint: {} posture finding{} ({}) not counted (verify judges drift); run `kmsentry audit --policy {}{root}` or `verify --posture` to see them",
        posture.len(),
        if posture.len() == 1 { "" } else { "s" },
        crate::report::severity_counts(posture.iter()),
        name(&a.policy),
    ))
}

/// Render `report`, write it, log its errors when the output is not for humans, and map it
/// to the exit code (1 with a finding at or above `verdict.fail_on`, 3 with errors): the end
/// of `verify` and `audit`.
pub(crate) fn finish(
    report: &crate::baseline::check::Report,
    format: Format,
    output: &Option<PathBuf>,
    common: Common,
    command: &str,
    started: &str,
    verdict: &Verdict,
) -> Result<ExitCode> {
    let data = render(
        report,
        format,
        common.color && output.is_none(),
        command,
        started,
        verdict,
    )?;
    emit(output, &data)?;
    if format != Format::Human && !common.quiet {
        for e in &report.errors {
            tracing::error!("{e}");
        }
    }
    let mut code = ExitCode::Clean;
    if report
        .findings
        .iter()
        .any(|f| verdict.fail_on.is_none_or(|t| f.severity >= t))
    {
        code = code.combine(ExitCode::Drift);
    }
    if !report.errors.is_empty() {
        code = code.combine(ExitCode::Integrity);
    }
    Ok(code)
}

/// The report in `format`; `command` and `started` name the run in XCCDF.
pub(crate) fn render(
    report: &crate::baseline::check::Report,
    format: Format,
    color: bool,
    command: &str,
    started: &str,
    verdict: &Verdict,
) -> Result<Vec<u8>> {
    Ok(match format {
        Format::Human => {
            let mut v = Vec::new();
            // `audit` has no baseline: its summary counts posture findings, not drift.
            let human = if command == "audit" {
                crate::report::human_audit
            } else {
                crate::report::human
            };
            human(&mut v, report, color)
                .map_err(|e| crate::error::Error::io("render", b"<report>".to_vec(), e))?;
            if let Some(h) = &verdict.hint {
                v.extend_from_slice(h.as_bytes());
                v.push(b'\n');
            }
            v
        }
        Format::Json => {
            let mut doc = crate::report::json(report);
            // Posture not judged into this report: no count, rather than a count of 0.
            if !verdict.posture {
                if let Some(s) = doc.get_mut("summary").and_then(|s| s.as_object_mut()) {
                    s.remove("posture");
                }
            }
            json_bytes(&doc)
        }
        Format::Junit => crate::report::junit(report).into_bytes(),
        Format::Sarif => json_bytes(&crate::report::sarif(report, env!("CARGO_PKG_VERSION"))),
        Format::Xccdf => crate::report::xccdf(
            report,
            &crate::report::XccdfRun {
                command,
                host: &super::hostname(),
                start: started,
                end: &super::now(),
                version: env!("CARGO_PKG_VERSION"),
                posture: verdict.posture,
            },
        )
        .into_bytes(),
    })
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Return free heap pages to the kernel (glibc `malloc_trim`; nothing elsewhere).
#[allow(unsafe_code)]
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it touches no live
    // allocation and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
