//! Credential judgement inside a run: inspect the credential files and provider binaries the
//! walker records, then turn posture checks and certificate renewals into findings.
//!
//! `inspect` runs on the walker's threads, right after an entry was hashed (the file is in the
//! page cache); `judge` runs once at the end over everything inspected. The facts come from
//! `credential`; this module only connects them to entries, the policy and the baseline.

use super::diff::{Severity, Status};
pub use super::findings::LiveCred;
use super::findings::{Finding, Report};
use super::walk::WalkError;
use super::{Entry, FileType};
use crate::credential::elf::elf_facts;
use crate::credential::posture::{self, Posture, Rule, Subject};
use crate::credential::rotation::{self, Host, Live};
use crate::credential::{record, CredRecord, Scanned, SpkiSha256};
use crate::fsroot::Root;
use crate::policy::{Attr, Class, CompiledPolicy};
use std::collections::{HashMap, HashSet};

/// Provider binaries larger than this are not read for their build-id.
pub const ELF_MAX_BYTES: u64 = 256 << 20;

/// Whether [`inspect`] has anything to do for `e`.
pub fn relevant(e: &Entry) -> bool {
    record::wants(e)
        || (e.class == Class::ProviderBinary
            && matches!(e.ftype, FileType::File | FileType::Dir)
            && e.problem.is_none())
}

/// Inspect `e` (read under `root`). `None` when `e` needs no judgement; an error when its
/// content cannot be read now.
pub fn inspect(
    root: &Root,
    policy: &CompiledPolicy,
    e: &Entry,
    keep_ders: bool,
) -> Option<Result<LiveCred, WalkError>> {
    inspect_content(root, policy, e, None, keep_ders)
}

/// [`inspect`], given the bytes the walker hashed when it has them (see
/// [`crate::baseline::walk::Inspect`]); without them the file is read here.
pub fn inspect_content(
    root: &Root,
    policy: &CompiledPolicy,
    e: &Entry,
    content: Option<&[u8]>,
    keep_ders: bool,
) -> Option<Result<LiveCred, WalkError>> {
    if !relevant(e) {
        return None;
    }
    let fail = |op: &'static str, error: std::io::Error| WalkError {
        path: e.path.clone(),
        op,
        error,
    };
    let mut live = LiveCred {
        entry: e.clone(),
        scanned: None,
        elf: None,
    };
    if record::wants(e) {
        match content {
            Some(bytes) => live.scanned = record::scan_read(e, bytes, keep_ders),
            None => match record::scan(root, e, keep_ders) {
                Ok(s) => live.scanned = s,
                Err(err) => return Some(Err(fail("inspect credential", err))),
            },
        }
        if live.scanned.is_none() && e.class == Class::Generic {
            return None;
        }
    }
    if e.class == Class::ProviderBinary && e.ftype == FileType::File {
        let expects = policy.group(&e.group).is_some_and(|g| g.expect.is_some());
        if expects {
            live.elf = Some(if e.size > ELF_MAX_BYTES {
                Err(format!("{} bytes, over the ELF inspection limit", e.size))
            } else {
                match content {
                    Some(bytes) => elf_facts(bytes),
                    None => match record::read_file(root, &e.path, ELF_MAX_BYTES) {
                        Ok(bytes) => elf_facts(&bytes),
                        Err(err) => return Some(Err(fail("read provider binary", err))),
                    },
                }
            });
        }
    }
    Some(Ok(live))
}

/// Inspect every relevant entry of `entries` in parallel (for `baseline update`, which has
/// the live entries in memory); errors are returned beside the results.
pub fn inspect_all(
    root: &Root,
    policy: &CompiledPolicy,
    entries: &[Entry],
    keep_ders: bool,
) -> (Vec<LiveCred>, Vec<WalkError>) {
    use rayon::prelude::*;
    let results: Vec<Result<LiveCred, WalkError>> = entries
        .par_iter()
        .filter_map(|e| inspect(root, policy, e, keep_ders))
        .collect();
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(l) => ok.push(l),
            Err(e) => errors.push(e),
        }
    }
    (ok, errors)
}

/// The credential facts of one entry, for `baseline init` (called on the walker's threads).
pub fn record(
    root: &Root,
    e: &Entry,
    content: Option<&[u8]>,
) -> Option<Result<Scanned, WalkError>> {
    if !record::wants(e) {
        return None;
    }
    if let Some(bytes) = content {
        return record::scan_read(e, bytes, false).map(Ok);
    }
    match record::scan(root, e, false) {
        Ok(s) => s.map(Ok),
        Err(error) => Some(Err(WalkError {
            path: e.path.clone(),
            op: "inspect credential",
            error,
        })),
    }
}

/// Who may own or read private keys, resolved in one root.
#[derive(Clone, Debug, Default)]
pub struct Owners {
    /// The uids allowed to own each group's private keys besides root: the users and uids its
    /// access allow-list names.
    pub by_group: HashMap<String, Vec<u32>>,
    /// The gid of Debian's `ssl-cert` group, whose members (TLS services) may read the keys
    /// of `/etc/ssl/private` by design.
    pub tls_key_gid: Option<u32>,
}

/// [`Owners`] for `policy`, with names resolved in this root.
pub fn owners(policy: &CompiledPolicy, names: &crate::users::Names) -> Owners {
    let by_group = policy
        .groups
        .iter()
        .map(|g| {
            let mut uids: Vec<u32> = Vec::new();
            for rule in &g.access.allow {
                uids.extend(rule.uids.iter().copied());
                uids.extend(rule.users.iter().filter_map(|u| names.uid_of(u)));
            }
            uids.sort_unstable();
            uids.dedup();
            (g.name.clone(), uids)
        })
        .collect();
    Owners {
        by_group,
        tls_key_gid: names.gid_of("ssl-cert"),
    }
}

/// Posture findings over `live`.
pub fn assess(
    policy: &CompiledPolicy,
    live: &[LiveCred],
    now: i64,
    owners: &Owners,
) -> Vec<Posture> {
    let subjects: Vec<Subject<'_>> = live
        .iter()
        .map(|l| Subject {
            entry: &l.entry,
            record: l.scanned.as_ref().map(|s| &s.record),
            elf: l.elf.as_ref(),
        })
        .collect();
    let none = Vec::new();
    let owner_fn = |g: &str| owners.by_group.get(g).unwrap_or(&none).clone();
    posture::assess(
        &subjects,
        &posture::Context {
            policy,
            now,
            owners: &owner_fn,
            tls_key_gid: owners.tls_key_gid,
        },
    )
}

/// A posture finding as a report finding.
pub fn to_finding(p: Posture) -> Finding {
    Finding {
        path: p.path,
        status: Status::Posture,
        changes: Vec::new(),
        group: p.group,
        class: p.class,
        severity: p.severity,
        base: None,
        live: None,
        rule: Some(p.rule.id()),
        message: Some(p.message),
    }
}

/// Baseline facts by path: the BLAKE3 of the content they were read from, and the facts.
/// A row is used for a finding only when that hash equals the baseline entry's, so facts
/// always describe the content the baseline vouches for.
pub type BaselineFacts = HashMap<Vec<u8>, ([u8; 32], CredRecord)>;

/// Index the store's rows.
pub fn baseline_facts(rows: Vec<(Vec<u8>, [u8; 32], CredRecord)>) -> BaselineFacts {
    rows.into_iter().map(|(p, h, r)| (p, (h, r))).collect()
}

/// Which changed certificate findings are renewals: path → message.
pub fn rotations(
    root: &Root,
    findings: &[Finding],
    live: &[LiveCred],
    baseline: &BaselineFacts,
) -> HashMap<Vec<u8>, String> {
    let by_path: HashMap<&[u8], &Scanned> = live
        .iter()
        .filter_map(|l| l.scanned.as_ref().map(|s| (s.path.as_slice(), s)))
        .collect();
    let certs: Vec<&[u8]> = live
        .iter()
        .filter_map(|l| l.scanned.as_ref())
        .flat_map(|s| s.cert_ders.iter().map(Vec::as_slice))
        .collect();
    let keys = |it: &mut dyn Iterator<Item = &CredRecord>| -> HashSet<SpkiSha256> {
        it.flat_map(|r| r.keys.iter().filter_map(|k| k.spki_sha256))
            .collect()
    };
    let baseline_keys = keys(&mut baseline.values().map(|(_, r)| r));
    let live_keys = keys(
        &mut live
            .iter()
            .filter_map(|l| l.scanned.as_ref().map(|s| &s.record)),
    );
    let host = Host {
        certs: &certs,
        baseline_keys: &baseline_keys,
        live_keys: &live_keys,
    };
    let mut out = HashMap::new();
    for f in findings {
        if f.status != Status::Changed
            || !matches!(f.class, Class::ClientCert | Class::CaCert | Class::Generic)
            || !f.changes.contains(&Attr::Content)
        {
            continue;
        }
        // Only content may differ: a renewal that also changed mode or owner is drift too.
        if f.changes
            .iter()
            .any(|a| !matches!(a, Attr::Content | Attr::Size))
        {
            continue;
        }
        let (Some((old_hash, old)), Some(new)) =
            (baseline.get(&f.path), by_path.get(f.path.as_slice()))
        else {
            continue;
        };
        let base_hash = f.base.as_ref().and_then(|b| b.hashes).map(|h| h.blake3);
        if base_hash != Some(*old_hash) {
            continue;
        }
        // A leaf's DER was not kept: read it again, and only if it is still the content
        // that was inspected.
        let reread;
        let ders: &[Vec<u8>] = if new.cert_ders.is_empty() {
            match record::read_file(root, &f.path, crate::credential::MAX_INPUT_BYTES as u64) {
                Ok(bytes) if *blake3::hash(&bytes).as_bytes() == new.blake3 => {
                    reread = crate::credential::certificate_ders(&bytes);
                    &reread
                }
                _ => continue,
            }
        } else {
            &new.cert_ders
        };
        match rotation::renewal(
            old,
            &Live {
                record: &new.record,
                ders,
            },
            &host,
        ) {
            Ok(msg) => {
                out.insert(f.path.clone(), msg);
            }
            Err(why) => {
                tracing::debug!(path = %crate::sanitize::Name(&f.path), "not a renewal: {why}")
            }
        }
    }
    out
}

/// Add credential judgement to a verify report: renewals become `rotated` (severity low),
/// posture findings are appended; findings stay sorted by path.
pub fn judge(
    root: &Root,
    report: &mut Report,
    policy: &CompiledPolicy,
    baseline: &BaselineFacts,
    now: i64,
    owners: &Owners,
) {
    let rotated = rotations(root, &report.findings, &report.credentials, baseline);
    for f in &mut report.findings {
        if let Some(msg) = rotated.get(&f.path) {
            f.status = Status::Rotated;
            f.severity = Severity::Low;
            f.rule = Some(Rule::CertRotated.id());
            f.message = Some(msg.clone());
        }
    }
    let posture = assess(policy, &report.credentials, now, owners);
    report.findings.extend(posture.into_iter().map(to_finding));
    report
        .findings
        .sort_by(|a, b| a.path.cmp(&b.path).then(a.status.cmp(&b.status)));
}
