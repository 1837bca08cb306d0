//! The daemon's side of the kernel audit reader ([`super::audit`], which owns the netlink
//! socket, the rules and record correlation): start it on the watched files, run its
//! thread (each kernel denial of a watched file → one `access`/`failure` alert; lost
//! records → one `overflow` alert), and keep its targets in step with the marks.
//! When audit is unavailable the daemon says so once (`health` alert
//! `kernel-audit-unavailable`) and guards on without it.
//! Must not: block the checker (targets are handed over with `try_send`, the latest set
//! wins), or decide anything: a kernel denial is already final.

use super::audit::{is_lost_records, AuditWatch, Target};
use super::shared::{queue_alert, read, spawn, Shared};
use crate::alert::{Alert, Kind};
use crate::baseline::diff::Severity;
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The audit targets follow the marks at most this often (a burst of creations is one
/// update).
pub(super) const AUDIT_UPDATE_EVERY: Duration = Duration::from_millis(50);

/// The checker's handle on the audit thread: where new target sets go.
pub(super) struct AuditLink {
    tx: Option<SyncSender<Vec<Target>>>,
    sent: Instant,
}

impl AuditLink {
    /// No kernel audit (`--no-audit`, or it could not start).
    pub fn none() -> AuditLink {
        AuditLink {
            tx: None,
            sent: Instant::now(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.tx.is_some()
    }

    /// An update may go now (the last one is [`AUDIT_UPDATE_EVERY`] old).
    pub fn due(&self) -> bool {
        self.sent.elapsed() >= AUDIT_UPDATE_EVERY
    }

    /// Hand the audit thread the current set of marked files. False when it is behind (the
    /// caller tries again at its next round).
    pub fn send(&mut self, s: &Shared) -> bool {
        self.sent = Instant::now();
        match &self.tx {
            Some(a) => a.try_send(targets(s)).is_ok(),
            None => true,
        }
    }

    /// Hand over the targets now, outside the rate limit (after a reload).
    pub fn send_now(&self, s: &Shared) {
        if let Some(a) = &self.tx {
            let _ = a.try_send(targets(s));
        }
    }
}

/// The kernel-audit targets: every regular file the policy watches.
fn targets(s: &Shared) -> Vec<Target> {
    let snap = s.snap();
    let mut t: Vec<Target> = read(&s.watched)
        .iter()
        .filter(|(p, m)| {
            u64::from(m.notify) & libc::FAN_ONDIR == 0 && snap.policy.classify(p).is_some()
        })
        .map(|(p, _)| Target {
            path: p.to_vec(),
            is_dir: false,
        })
        .collect();
    t.sort();
    t
}

/// Start the kernel-audit reader for the watched files; say once, clearly, when it cannot.
pub(super) fn start(
    shared: &Arc<Shared>,
    alerts: &SyncSender<Box<Alert>>,
    threads: &mut Vec<std::thread::JoinHandle<()>>,
) -> AuditLink {
    let targets = targets(shared);
    let mut watch = match AuditWatch::start(&targets) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("{e}");
            let mut a = Alert::new(Kind::Health, Severity::Medium);
            a.rule = Some("kernel-audit-unavailable".into());
            a.detail.insert("message".into(), e.to_string().into());
            let _ = alerts.send(Box::new(a));
            return AuditLink::none();
        }
    };
    if watch.widened() {
        tracing::info!(
            "kernel audit: {} targets watched through {} rules on their directories",
            targets.len(),
            watch.rule_count()
        );
    }
    let (tx, rx) = mpsc::sync_channel::<Vec<Target>>(4);
    let (s, a) = (shared.clone(), alerts.clone());
    let t = spawn("kmsentry-audit", move || {
        while !s.stopping() {
            // The latest target set only: a burst of creations sends several.
            if let Some(t) = rx.try_iter().last() {
                if let Err(e) = watch.update(&t) {
                    tracing::error!("kernel audit: {e}");
                }
            }
            // Short: target updates wait for this receive to end.
            match watch.recv(Duration::from_millis(50)) {
                Ok(Some(d)) => {
                    let snap = s.snap();
                    let Some(g) = snap.policy.classify(&d.path) else {
                        continue;
                    };
                    let al = super::access::kernel_denial_alert(g, &d);
                    queue_alert(&s, &a, al);
                }
                Ok(None) => {}
                Err(e) if is_lost_records(&e) => {
                    let mut al = Alert::new(Kind::Overflow, Severity::Medium);
                    al.rule = Some("kernel-audit-records-lost".into());
                    al.detail.insert(
                        "message".into(),
                        "kernel audit records were dropped before they could be read; some kernel denials may be missing".into(),
                    );
                    queue_alert(&s, &a, al);
                }
                Err(e) => {
                    tracing::error!("kernel audit: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        drop(watch); // removes the rules
    });
    match t {
        Ok(t) => {
            threads.push(t);
            AuditLink {
                tx: Some(tx),
                sent: Instant::now(),
            }
        }
        Err(e) => {
            tracing::warn!("kernel audit: {e}");
            AuditLink::none()
        }
    }
}
