//! The alert thread: the one consumer of the alert queue. It batches what is queued (up to
//! 256 records: one write and one fsync per batch), counts alerts per kind for the status
//! document, fills in user names (NSS may block, so never on the threads that produce
//! alerts), and hands the batch to the sinks ([`crate::alert::Alerter`]); when the queue is
//! quiet it ticks for timed checkpoints. It ends when every sender is gone, after flushing.
//! Must not: be waited on by the permission path (producers there `try_send` and count a
//! drop), or change a record beyond the names it resolves.

use super::shared::{lock, spawn, Shared};
use crate::alert::{Alert, Alerter, Kind};
use crate::error::Result;
use crate::fsroot::Root;
use crate::users::Names;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// Start the alert thread on `alerts`.
pub(super) fn start(
    s: Arc<Shared>,
    root: &Root,
    mut alerter: Alerter,
    alerts: Receiver<Box<Alert>>,
) -> Result<std::thread::JoinHandle<()>> {
    let mut names = Names::for_root(root);
    spawn("kmsentry-alert", move || {
        // Batch what is queued into one write + one fsync; tick for timed checkpoints.
        loop {
            let first = match alerts.recv_timeout(Duration::from_millis(500)) {
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = alerter.tick() {
                        tracing::error!("alert checkpoint: {e}");
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            while batch.len() < 256 {
                match alerts.try_recv() {
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            {
                let mut counts = lock(&s.stats.alerts);
                for a in &batch {
                    *counts.entry(a.kind.as_str()).or_insert(0) += 1;
                }
            }
            let batch: Vec<Alert> = batch
                .into_iter()
                .map(|b| {
                    let mut a = *b;
                    // User names here, never on the permission thread: NSS may block.
                    if let Some(p) = &mut a.process {
                        if p.user.is_none() {
                            p.user = p.uid.and_then(|u| names.user(u));
                        }
                    }
                    a
                })
                .collect();
            let logs = batch.iter().filter(|a| a.kind == Kind::Log).count() as u64;
            if let Err(e) = alerter.emit_batch(batch) {
                tracing::error!("alert sink: {e}");
            }
            // After the write and fsync (or its failure, already reported): the log room may
            // now save the read positions of these lines.
            s.stats
                .log_alerts_written
                .fetch_add(logs, std::sync::atomic::Ordering::Release);
        }
        alerter.flush();
    })
}
