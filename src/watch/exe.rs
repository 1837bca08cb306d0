//! Executable identity: the trust table built from the allow-lists (each allowed executable
//! hashed once, by inode identity), the cache of executables hashed since start, and the
//! `exe-hash` thread that hashes an opener's executable the table has not seen and then
//! finishes that permission event's decision.
//!
//! The permission thread never hashes: an event whose verdict needs a hash is parked in
//! [`super::permission::Waiting`] and handed here; whoever removes it from that table answers
//! it, so an event answered as stalled meanwhile is never answered twice.
//! Must not: hold an event past `--stall` (the permission thread answers it with `on_stall`
//! first), or hash while holding a lock the permission thread takes.

use super::permission::{answer, answer_and_alert};
use super::shared::{lock, Shared};
use crate::alert::Alert;
use crate::decide::{decide, OpenKind, Trust, TrustedExe, Verdict};
use crate::fsroot::Root;
use crate::policy::CompiledPolicy;
use crate::proc::{ExeId, Identity};
use crate::sanitize::Name;
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Mutex;

/// Executable identities hashed since start → BLAKE3. Looked up on the permission thread;
/// written only after a hash is done, never while one runs.
#[derive(Default)]
pub(super) struct ExeCache(Mutex<HashMap<ExeId, [u8; 32]>>);

impl ExeCache {
    pub fn get(&self, id: &ExeId) -> Option<[u8; 32]> {
        lock(&self.0).get(id).copied()
    }

    fn insert(&self, id: ExeId, h: [u8; 32]) {
        lock(&self.0).insert(id, h);
    }
}

/// A permission event whose decision waits for the opener's executable hash.
pub(super) struct HashJob {
    pub fd: i32,
    pub kind: OpenKind,
    pub path: Vec<u8>,
    pub group: String,
    pub who: Identity,
}

/// Hash every executable the allow-lists name, before any mark exists (so these opens need
/// no answer), and resolve user names to uids.
pub(super) fn build_trust(policy: &CompiledPolicy, root: &Root) -> Trust {
    let mut trust = Trust::default();
    let names = crate::users::Names::for_root(root);
    for g in &policy.groups {
        for (i, rule) in g.access.allow.iter().enumerate() {
            if !rule.users.is_empty() || !rule.uids.is_empty() {
                let mut set: HashSet<u32> = rule.uids.iter().copied().collect();
                for u in &rule.users {
                    match names.uid_of(u) {
                        Some(uid) => {
                            set.insert(uid);
                        }
                        None => tracing::warn!(
                            "group {}: allow-list user `{u}` does not exist on this host; the rule cannot match it",
                            g.name
                        ),
                    }
                }
                trust.uids.insert((g.name.clone(), i), set);
            }
            if trust.exes.contains_key(&rule.exe) {
                continue;
            }
            let t = match hash_exe_path(&rule.exe) {
                Ok((id, h)) => {
                    if let Some(want) = rule.exe_hash {
                        if want != h {
                            tracing::warn!(
                                "group {}: {} does not match its exe_hash; it will not be allowed",
                                g.name,
                                Name(&rule.exe)
                            );
                        }
                    }
                    TrustedExe {
                        ids: vec![id],
                        blake3: Some(rule.exe_hash.unwrap_or(h)),
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "group {}: allowed executable {}: {e}; it is trusted only by exe_hash",
                        g.name,
                        Name(&rule.exe)
                    );
                    TrustedExe {
                        ids: Vec::new(),
                        blake3: rule.exe_hash,
                    }
                }
            };
            trust.exes.insert(rule.exe.clone(), t);
        }
    }
    trust
}

/// Identity and BLAKE3 of the executable at `path` (symlinks followed: an allow rule names
/// what `/proc/PID/exe` will show, which is the resolved file).
fn hash_exe_path(path: &[u8]) -> std::io::Result<(ExeId, [u8; 32])> {
    use std::os::unix::ffi::OsStrExt;
    let f = std::fs::File::open(std::ffi::OsStr::from_bytes(path))?;
    hash_open_exe(f)
}

fn hash_open_exe(f: std::fs::File) -> std::io::Result<(ExeId, [u8; 32])> {
    let st = rustix::fs::statx(
        &f,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::BASIC_STATS,
    )?;
    let id = ExeId::of(&st);
    let mut h = blake3::Hasher::new();
    h.update_reader(&f)?;
    // A binary rewritten while hashed has a new ctime: not the identity we hashed.
    let after = rustix::fs::statx(
        &f,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::BASIC_STATS,
    )?;
    if ExeId::of(&after) != id {
        return Err(std::io::Error::other(
            "the executable changed while it was hashed",
        ));
    }
    Ok((id, *h.finalize().as_bytes()))
}

/// The `exe-hash` thread: hash executables whose inode the trust table has not seen, then
/// finish the decision.
pub(super) fn hash_loop(
    s: &Shared,
    perm: &super::fanotify::PermGroup,
    alerts: &SyncSender<Box<Alert>>,
    jobs: Receiver<HashJob>,
) {
    while let Ok(job) = jobs.recv() {
        let pid = job.who.info.pid;
        let hashed = std::fs::File::open(format!("/proc/{pid}/exe"))
            .and_then(hash_open_exe)
            .ok()
            .filter(|(id, _)| Some(*id) == job.who.exe_id);
        if let Some((id, h)) = hashed {
            s.exe_cache.insert(id, h);
        }
        let Some(p) = s.pending.remove(job.fd) else {
            continue; // answered as stalled already
        };
        let snap = s.snap();
        let Some(group) = snap.policy.group(&job.group) else {
            answer(s, perm, &p.event, true);
            continue;
        };
        // No hash (the process exited, or the binary changed under us) → judged as unknown.
        let h = hashed.map(|(_, h)| h).unwrap_or([0; 32]);
        match decide(s.self_pid, job.kind, group, &job.who, &snap.trust, Some(h)) {
            Verdict::Allow { alert: None } => answer(s, perm, &p.event, true),
            Verdict::Allow {
                alert: Some((sev, reason)),
            } => answer_and_alert(
                s, perm, alerts, &p.event, true, group, job.path, &job.who, sev, &reason, job.kind,
            ),
            Verdict::Deny { severity, reason } => answer_and_alert(
                s, perm, alerts, &p.event, false, group, job.path, &job.who, severity, &reason,
                job.kind,
            ),
            Verdict::NeedExeHash => answer(s, perm, &p.event, p.audit_mode),
        }
        s.stats
            .observe_latency(p.since.elapsed().as_micros() as u64);
    }
}
