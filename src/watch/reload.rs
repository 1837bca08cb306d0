//! The policy snapshot and its reload. [`load_snapshot`] is the one place a policy and a
//! baseline become what the daemon applies (at start and on each SIGHUP): the policy
//! compiled, the baseline opened and checked (integrity, origin, signature), the allowed
//! executables hashed. On SIGHUP the checker loads a new snapshot completely, then swaps
//! one pointer: the permission thread sees the old snapshot or the new one, never a mix,
//! and never waits for the load. Then the marks move by difference, the drift state is
//! recomputed against the new baseline, and `policy_reloaded` says what changed.
//! A policy or baseline that fails to load is a `policy_reloaded`/`failure` alert and the
//! daemon keeps guarding with what it had.
//! Must not: swap in a half-built snapshot, or let a failed reload lose the old one.

use super::checker::Checker;
use super::exe::build_trust;
use super::restore::warn_restore_without_store;
use super::shared::{read, write};
use super::Config;
use crate::alert::{Alert, Kind, Outcome};
use crate::baseline::diff::Severity;
use crate::decide::Trust;
use crate::error::Result;
use crate::fsroot::Root;
use crate::logs::room::LogRoom;
use crate::logs::rules::RuleSet;
use crate::logs::state::LearnedState;
use crate::policy::CompiledPolicy;
use crate::proc::ExeId;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::Arc;

/// The policy as the daemon applies it; swapped whole on SIGHUP.
pub(super) struct Snapshot {
    pub policy: CompiledPolicy,
    pub trust: Trust,
    /// Trusted executable inode → the allowed path it was hashed at.
    pub by_id: HashMap<ExeId, Vec<u8>>,
    /// The Sigma rules of the policy's `rules:` (empty when it declares no `logs:`),
    /// checked and compiled into a room once before the snapshot is accepted.
    pub log_rules: Arc<RuleSet>,
}

impl Snapshot {
    fn new(policy: CompiledPolicy, trust: Trust, log_rules: RuleSet) -> Snapshot {
        let mut by_id = HashMap::new();
        for (path, t) in &trust.exes {
            for id in &t.ids {
                by_id.insert(*id, path.clone());
            }
        }
        Snapshot {
            policy,
            trust,
            by_id,
            log_rules: Arc::new(log_rules),
        }
    }
}

/// A snapshot and the baseline it was loaded with.
pub(super) struct Loaded {
    pub snapshot: Snapshot,
    pub store: Store,
}

/// Policy + baseline → snapshot: load and compile the policy, open and check the baseline,
/// hash the allowed executables. Every check a snapshot must pass before the daemon applies
/// it belongs here, so that start and reload run the same ones.
pub(super) fn load_snapshot(cfg: &Config, root: &Root) -> Result<Loaded> {
    let policy = crate::policy::load(&cfg.policy)?;
    let store = open_baseline(cfg, root)?;
    warn_restore_without_store(&policy, cfg.store.is_some());
    let log_rules = load_log_rules(&policy)?;
    let trust = build_trust(&policy, root);
    Ok(Loaded {
        snapshot: Snapshot::new(policy, trust, log_rules),
        store,
    })
}

/// The policy's Sigma rules, refused whole when one is bad (file, line and what is wrong),
/// and built into a throwaway room so that an engine that cannot take them fails here, on
/// the thread that loads, and never in the running log room.
fn load_log_rules(policy: &CompiledPolicy) -> Result<RuleSet> {
    if policy.logs.is_empty() {
        return Ok(RuleSet::default());
    }
    let paths: Vec<std::path::PathBuf> = policy.rules.iter().map(Into::into).collect();
    let rules = crate::logs::rules::load_strict(&paths)?;
    LogRoom::new(&policy.logs, &rules, LearnedState::in_memory()?)?;
    Ok(rules)
}

fn open_baseline(cfg: &Config, root: &Root) -> Result<Store> {
    let store = Store::open(&cfg.db, false)?;
    store.limit_cache(512)?;
    store.verify_seal()?;
    crate::store::check_origin(&store, root, cfg.allow_other_host)?;
    if let Some(k) = &cfg.verify_key {
        let key = crate::store::signing::load_verifying_key(k)?;
        crate::store::signing::check(&store, &key)?;
    }
    Ok(store)
}

impl Checker {
    /// SIGHUP: load a new snapshot aside, swap it in, move the marks, recompute the drift.
    pub fn reload(&mut self) {
        let loaded = match load_snapshot(&self.cfg, &self.root) {
            Ok(l) => l,
            Err(e) => {
                let mut a = Alert::new(Kind::PolicyReloaded, Severity::High);
                a.outcome = Some(Outcome::Failure);
                a.detail.insert("message".into(), format!("{e}").into());
                let _ = self.alert.send(Box::new(a));
                return;
            }
        };
        let digest = loaded.snapshot.policy.digest.clone();
        *write(&self.shared.snap) = Arc::new(loaded.snapshot);
        self.store = loaded.store;
        let before = read(&self.shared.watched).len();
        if let Err(e) = self.marks.place() {
            tracing::warn!("re-marking after reload: {e}");
        }
        let drift = match self.reconcile(false) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("reconcile after reload: {e}");
                self.drift.len()
            }
        };
        self.audit.send_now(&self.shared);
        let mut a = Alert::new(Kind::PolicyReloaded, Severity::Info);
        a.outcome = Some(Outcome::Success);
        a.detail.insert("policy_digest".into(), digest.into());
        a.detail.insert("marked_before".into(), before.into());
        a.detail
            .insert("marked".into(), read(&self.shared.watched).len().into());
        a.detail.insert("drift".into(), drift.into());
        let _ = self.alert.send(Box::new(a));
    }
}
