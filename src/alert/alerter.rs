//! Stamping and fan-out: the [`Alerter`] gives each [`Alert`] its `ts`, `seq`, `host` and
//! `prev`, renders the line once, and hands those bytes to every sink.
//!
//! The JSONL file is the chain of record: [`Alerter::emit`] fails only when the file could
//! not take the record (then the daemon must not report the alert as delivered), and returns
//! once the record is fsync'd. The record still goes to the other sinks, so a full disk does
//! not silence syslog. After a failed write the file's tail is re-read before the next record
//! and the chain continues from whatever actually reached the disk; a record that did not can
//! reappear in syslog/journald under the same `seq`.
//!
//! Other sinks (stdout, syslog, journald) never stop the file sink: their failures are
//! counted and warned about at most once per [`WARN_EVERY`] per sink.
//!
//! Checkpoints: with a signing key, a `checkpoint` record signs the chain head every
//! `checkpoint_every` records, when `checkpoint_interval` has passed since the last one (checked
//! on every emit and by [`Alerter::tick`]), and always right after `stopped`.

use super::checkpoint;
use super::journald::JournaldSink;
use super::jsonl::{JsonlFile, Tail};
use super::record::{line_hash, now_ts, render, Rendered, Stamp, ZERO_HASH};
use super::syslog::{SyslogSink, SyslogTarget};
use super::{Alert, Kind};
use crate::baseline::diff::Severity;
use crate::error::{Error, Result};
use ed25519_dalek::SigningKey;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A failing sink is warned about at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// Where alerts go and how the chain is kept.
#[derive(Clone, Debug, Default)]
pub struct AlertConfig {
    /// Written into every record's `host`.
    pub host: String,
    /// The JSONL alert log.
    pub file: Option<PathBuf>,
    /// Rotate the log before it would grow past this many bytes.
    pub max_bytes: Option<u64>,
    /// Rotated files to keep (`F.1` … `F.keep`).
    pub keep: usize,
    /// Also write each record to stdout.
    pub stdout: bool,
    pub syslog: Vec<SyslogTarget>,
    pub journald: bool,
    /// ed25519 signing key (`kmsentry key gen`) for checkpoints.
    pub sign_key: Option<PathBuf>,
    /// A checkpoint after this many records.
    pub checkpoint_every: Option<u64>,
    /// A checkpoint when this much time has passed since the last one (and records came).
    pub checkpoint_interval: Option<Duration>,
}

/// What [`Alerter::emit`] wrote: the record's `seq` and the hash of its line (the next
/// record's `prev`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emitted {
    pub seq: u64,
    pub hash: String,
}

/// Counts a sink's failures and rate-limits the warnings about them.
#[derive(Debug)]
struct Failures {
    name: String,
    total: u64,
    suppressed: u64,
    last_warn: Option<Instant>,
}

impl Failures {
    fn new(name: String) -> Failures {
        Failures {
            name,
            total: 0,
            suppressed: 0,
            last_warn: None,
        }
    }

    fn fail(&mut self, e: &dyn std::fmt::Display) {
        self.total += 1;
        if self.last_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            tracing::warn!(
                "alert sink {}: {e} ({} more failure(s) since the last warning)",
                self.name,
                self.suppressed
            );
        } else {
            tracing::warn!("alert sink {}: {e}", self.name);
        }
        self.suppressed = 0;
        self.last_warn = Some(Instant::now());
    }
}

/// A record stamped and rendered, not yet delivered.
#[derive(Debug)]
struct Staged {
    line: String,
    alert: Alert,
    ts: String,
    seq: u64,
}

/// The chain state, kept to undo staging when the file refuses a batch.
#[derive(Debug)]
struct Snapshot {
    head_seq: u64,
    head_hash: String,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    damage: Option<serde_json::Value>,
}

/// Stamps, chains and delivers alerts.
#[derive(Debug)]
pub struct Alerter {
    host: String,
    head_seq: u64,
    head_hash: String,
    file: Option<JsonlFile>,
    stdout: Option<Failures>,
    syslog: Vec<(SyslogSink, Failures)>,
    journald: Option<(JournaldSink, Failures)>,
    signer: Option<SigningKey>,
    checkpoint_every: Option<u64>,
    checkpoint_interval: Option<Duration>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// `detail.damaged_tail` for the next record.
    damage: Option<serde_json::Value>,
}

fn name_of(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

impl Alerter {
    /// Open the sinks. With a file, continue its chain (or start one when it is new); load
    /// the signing key. Network sinks connect on first use.
    pub fn new(cfg: AlertConfig) -> Result<Alerter> {
        if cfg.checkpoint_every == Some(0) {
            return Err(Error::Usage(
                "checkpoint every 0 records: give at least 1".into(),
            ));
        }
        if cfg.max_bytes == Some(0) {
            return Err(Error::Usage("alert log max size 0: give at least 1".into()));
        }
        let signer = cfg
            .sign_key
            .as_deref()
            .map(crate::store::signing::load_signing_key)
            .transpose()?;
        let mut al = Alerter {
            host: cfg.host,
            head_seq: 0,
            head_hash: ZERO_HASH.to_string(),
            file: None,
            stdout: cfg.stdout.then(|| Failures::new("stdout".into())),
            syslog: cfg
                .syslog
                .iter()
                .map(|t| (SyslogSink::new(t), Failures::new(format!("syslog {t}"))))
                .collect(),
            journald: cfg.journald.then(|| {
                (
                    JournaldSink::new(Path::new(super::journald::SOCKET)),
                    Failures::new("journald".into()),
                )
            }),
            signer,
            checkpoint_every: cfg.checkpoint_every,
            checkpoint_interval: cfg.checkpoint_interval,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            damage: None,
        };
        if let Some(path) = &cfg.file {
            let (f, tail) = JsonlFile::open(path, cfg.max_bytes, cfg.keep)?;
            al.adopt(tail);
            al.file = Some(f);
        }
        Ok(al)
    }

    /// Send journald records to another socket (tests bind one in a temp dir).
    #[doc(hidden)]
    pub fn set_journald_socket(&mut self, path: &Path) {
        self.journald = Some((JournaldSink::new(path), Failures::new("journald".into())));
    }

    fn adopt(&mut self, tail: Tail) {
        if let Some((seq, hash)) = tail.last {
            self.head_seq = seq;
            self.head_hash = hash;
        }
        self.damage = tail.damaged.map(|d| {
            tracing::warn!(
                "alert log ends with {} damaged line(s) ({} bytes), likely a crash mid-write; the next record acknowledges them",
                d.lines,
                d.bytes
            );
            d.to_value()
        });
    }

    /// The chain head: the last record's `seq` (0 before the first) and its line's hash.
    pub fn head(&self) -> (u64, String) {
        (self.head_seq, self.head_hash.clone())
    }

    /// How many times the non-file sinks failed so far.
    pub fn sink_failures(&self) -> u64 {
        self.stdout.as_ref().map_or(0, |f| f.total)
            + self.syslog.iter().map(|(_, f)| f.total).sum::<u64>()
            + self.journald.as_ref().map_or(0, |(_, f)| f.total)
    }

    /// Stamp, chain and deliver one alert; then a checkpoint if one is due (always after
    /// `stopped` when signing). Returns once the record (and its checkpoint) is fsync'd in
    /// the file; fails only when the file could not take them.
    pub fn emit(&mut self, a: Alert) -> Result<Emitted> {
        let mut v = self.emit_batch(vec![a])?;
        v.pop()
            .ok_or_else(|| Error::Integrity("alert not written".into()))
    }

    /// [`emit`](Self::emit) for several alerts with one `write` and one `fdatasync`: when a
    /// queue has backed up, this spends one disk flush on all of them. Returns what each
    /// alert became (checkpoints written in between are not listed); on error none of them
    /// is known to be on disk.
    pub fn emit_batch(&mut self, alerts: Vec<Alert>) -> Result<Vec<Emitted>> {
        self.recover();
        let saved = self.snapshot();
        let mut staged = Vec::with_capacity(alerts.len() + 1);
        let mut out = Vec::with_capacity(alerts.len());
        for a in alerts {
            let stopped = a.kind == Kind::Stopped;
            out.push(self.stage(a, &mut staged));
            if self.signer.is_some() && (stopped || self.checkpoint_due()) {
                self.stage_checkpoint(&mut staged);
            }
        }
        if let Err(e) = self.commit(&staged) {
            self.restore(saved);
            return Err(e);
        }
        self.sink_health();
        Ok(out)
    }

    /// Health alerts the syslog sinks ask for (a TLS receiver's queue full or drained, its
    /// certificate refused), written into the chain like any other alert. A TLS queue drops
    /// records only after its "full" alert was taken here.
    fn sink_health(&mut self) {
        let health: Vec<Alert> = self
            .syslog
            .iter_mut()
            .flat_map(|(s, _)| s.take_health())
            .collect();
        if !health.is_empty() {
            if let Err(e) = self.emit_batch(health) {
                tracing::error!("alert sink health: {e}");
            }
        }
    }

    /// Write a checkpoint if the interval has passed since the last one and records came
    /// since. The daemon calls this now and then so a quiet period still gets signed.
    pub fn tick(&mut self) -> Result<()> {
        self.sink_health();
        if self.signer.is_some() && self.checkpoint_due() {
            self.checkpoint()?;
        }
        Ok(())
    }

    fn checkpoint_due(&self) -> bool {
        self.since_checkpoint > 0
            && (self
                .checkpoint_every
                .is_some_and(|n| self.since_checkpoint >= n)
                || self
                    .checkpoint_interval
                    .is_some_and(|d| self.last_checkpoint.elapsed() >= d))
    }

    /// Sign the chain head now. `None` without a key or before the first record.
    pub fn checkpoint(&mut self) -> Result<Option<Emitted>> {
        self.recover();
        let saved = self.snapshot();
        let mut staged = Vec::new();
        let Some(e) = self.stage_checkpoint(&mut staged) else {
            return Ok(None);
        };
        if let Err(err) = self.commit(&staged) {
            self.restore(saved);
            return Err(err);
        }
        Ok(Some(e))
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            head_seq: self.head_seq,
            head_hash: self.head_hash.clone(),
            since_checkpoint: self.since_checkpoint,
            last_checkpoint: self.last_checkpoint,
            damage: self.damage.clone(),
        }
    }

    fn restore(&mut self, s: Snapshot) {
        self.head_seq = s.head_seq;
        self.head_hash = s.head_hash;
        self.since_checkpoint = s.since_checkpoint;
        self.last_checkpoint = s.last_checkpoint;
        self.damage = s.damage;
    }

    fn stage_checkpoint(&mut self, staged: &mut Vec<Staged>) -> Option<Emitted> {
        let key = self.signer.as_ref()?;
        if self.head_seq == 0 {
            return None;
        }
        let mut a = Alert::new(Kind::Checkpoint, Severity::Info);
        a.detail = checkpoint::detail(key, self.head_seq, &self.head_hash);
        let e = self.stage(a, staged);
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Some(e)
    }

    /// After a failed write, re-read the file's tail: the chain continues from what reached
    /// the disk.
    fn recover(&mut self) {
        let Some(f) = &mut self.file else {
            return;
        };
        if !f.needs_recovery() {
            return;
        }
        // On error the file stays marked and `commit` reports it.
        if let Ok(tail) = f.reopen() {
            // An empty file after a half-done rotation continues the in-memory chain.
            if let Some((seq, hash)) = tail.last {
                self.head_seq = seq;
                self.head_hash = hash;
            }
            self.damage = tail.damaged.map(|d| d.to_value());
        }
    }

    /// Stamp and render one record, advancing the head (undone by the caller on failure).
    fn stage(&mut self, mut a: Alert, staged: &mut Vec<Staged>) -> Emitted {
        if let Some(d) = self.damage.take() {
            a.detail.insert("damaged_tail".into(), d);
        }
        let ts = now_ts();
        let seq = self.head_seq + 1;
        let line = render(
            &a,
            &Stamp {
                ts: &ts,
                seq,
                host: &self.host,
                prev: &self.head_hash,
            },
        );
        self.head_seq = seq;
        self.head_hash = line_hash(line.as_bytes());
        if a.kind != Kind::Checkpoint {
            self.since_checkpoint += 1;
        }
        staged.push(Staged {
            line,
            alert: a,
            ts,
            seq,
        });
        Emitted {
            seq,
            hash: self.head_hash.clone(),
        }
    }

    /// The file first (one write, one fdatasync), then every other sink, even when the file
    /// failed: a full disk must not silence syslog.
    fn commit(&mut self, staged: &[Staged]) -> Result<()> {
        let mut file_err = None;
        if let Some(f) = &mut self.file {
            let name = name_of(f.path());
            if f.needs_recovery() {
                file_err = Some(Error::io(
                    "write alert log",
                    name,
                    std::io::Error::other("the log could not be reopened"),
                ));
            } else {
                let lines: Vec<&[u8]> = staged.iter().map(|s| s.line.as_bytes()).collect();
                if let Err(e) = f.append_many(&lines) {
                    file_err = Some(Error::io("write alert log", name, e));
                }
            }
        }
        for s in staged {
            let r = Rendered {
                line: &s.line,
                alert: &s.alert,
                ts: &s.ts,
                seq: s.seq,
                host: &self.host,
            };
            if let Some(fails) = &mut self.stdout {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                if let Err(e) = out
                    .write_all(s.line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush())
                {
                    fails.fail(&e);
                }
            }
            for (sink, fails) in &mut self.syslog {
                if let Err(e) = sink.send(&r) {
                    fails.fail(&e);
                }
            }
            if let Some((sink, fails)) = &mut self.journald {
                if let Err(e) = sink.send(&r) {
                    fails.fail(&e);
                }
            }
        }
        match file_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Flush buffered output (the file is already fsync'd per record).
    pub fn flush(&mut self) {
        use std::io::Write;
        if let Some(fails) = &mut self.stdout {
            if let Err(e) = std::io::stdout().flush() {
                fails.fail(&e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::record::parse;

    fn cfg(file: &Path) -> AlertConfig {
        AlertConfig {
            host: "h".into(),
            file: Some(file.to_path_buf()),
            keep: 3,
            ..AlertConfig::default()
        }
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn records_chain_and_a_reopened_log_continues_the_chain() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        let mut al = Alerter::new(cfg(&p)).unwrap();
        assert_eq!(al.head(), (0, ZERO_HASH.to_string()));
        let e1 = al.emit(Alert::new(Kind::Started, Severity::Info)).unwrap();
        let e2 = al.emit(Alert::new(Kind::Modified, Severity::High)).unwrap();
        assert_eq!((e1.seq, e2.seq), (1, 2));
        drop(al);
        let mut al = Alerter::new(cfg(&p)).unwrap();
        assert_eq!(al.head(), (2, e2.hash.clone()));
        al.emit(Alert::new(Kind::Stopped, Severity::Info)).unwrap();
        let l = lines(&p);
        assert_eq!(l.len(), 3);
        let p0 = parse(l[0].as_bytes()).unwrap();
        assert_eq!(p0.prev, ZERO_HASH);
        for w in l.windows(2) {
            let (a, b) = (
                parse(w[0].as_bytes()).unwrap(),
                parse(w[1].as_bytes()).unwrap(),
            );
            assert_eq!(b.seq, a.seq + 1);
            assert_eq!(b.prev, line_hash(w[0].as_bytes()));
        }
    }

    #[test]
    fn checkpoints_every_n_records_and_after_stopped() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        let key = t.path().join("k");
        crate::store::signing::write_keypair(&crate::store::signing::generate().unwrap(), &key)
            .unwrap();
        let mut c = cfg(&p);
        c.sign_key = Some(key.clone());
        c.checkpoint_every = Some(2);
        let mut al = Alerter::new(c).unwrap();
        for _ in 0..3 {
            al.emit(Alert::new(Kind::Modified, Severity::High)).unwrap();
        }
        al.emit(Alert::new(Kind::Stopped, Severity::Info)).unwrap();
        let kinds: Vec<String> = lines(&p)
            .iter()
            .map(|l| parse(l.as_bytes()).unwrap().kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "modified",
                "modified",
                "checkpoint",
                "modified",
                "stopped",
                "checkpoint"
            ]
        );
        let l = lines(&p);
        let cp = parse(l[5].as_bytes()).unwrap();
        let claim = checkpoint::claim(&cp.detail).unwrap();
        assert_eq!(claim.covers_seq, 5);
        assert_eq!(claim.covers_hash, line_hash(l[4].as_bytes()));
        let vk = crate::store::signing::load_verifying_key(&t.path().join("k.pub")).unwrap();
        checkpoint::check(&claim, &vk).unwrap();
    }

    #[test]
    fn a_crash_mid_write_is_acknowledged_by_the_next_record() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        let mut al = Alerter::new(cfg(&p)).unwrap();
        al.emit(Alert::new(Kind::Started, Severity::Info)).unwrap();
        drop(al);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"{\"ts\":\"2026").unwrap();
        let mut al = Alerter::new(cfg(&p)).unwrap();
        al.emit(Alert::new(Kind::Started, Severity::Info)).unwrap();
        let l = lines(&p);
        assert_eq!(l.len(), 3);
        let r = parse(l[2].as_bytes()).unwrap();
        assert_eq!(r.seq, 2);
        assert_eq!(r.prev, line_hash(l[0].as_bytes()));
        assert_eq!(r.detail["damaged_tail"]["lines"], 1);
        assert_eq!(r.detail["damaged_tail"]["bytes"], 11);
    }

    #[test]
    fn rotation_continues_the_chain_into_the_new_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        let mut c = cfg(&p);
        c.max_bytes = Some(400);
        let mut al = Alerter::new(c).unwrap();
        for _ in 0..6 {
            al.emit(Alert::new(Kind::Modified, Severity::High)).unwrap();
        }
        let old = lines(&crate::alert::jsonl::rotated(&p, 1));
        let new = lines(&p);
        assert!(!old.is_empty() && !new.is_empty());
        let first = parse(new[0].as_bytes()).unwrap();
        assert_eq!(first.prev, line_hash(old.last().unwrap().as_bytes()));
    }

    #[test]
    fn a_batch_is_one_write_with_checkpoints_in_place() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        let key = t.path().join("k");
        crate::store::signing::write_keypair(&crate::store::signing::generate().unwrap(), &key)
            .unwrap();
        let mut c = cfg(&p);
        c.sign_key = Some(key);
        let mut al = Alerter::new(c).unwrap();
        let got = al
            .emit_batch(vec![
                Alert::new(Kind::Modified, Severity::High),
                Alert::new(Kind::Stopped, Severity::Info),
                Alert::new(Kind::Started, Severity::Info),
            ])
            .unwrap();
        assert_eq!(
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 4],
            "the checkpoint after `stopped` takes seq 3"
        );
        assert_eq!(al.head().0, 4);
        let kinds: Vec<String> = lines(&p)
            .iter()
            .map(|l| parse(l.as_bytes()).unwrap().kind)
            .collect();
        assert_eq!(kinds, ["modified", "stopped", "checkpoint", "started"]);
    }

    #[test]
    fn a_failed_write_is_an_error_and_the_chain_resumes_from_the_disk() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        let mut al = Alerter::new(cfg(&p)).unwrap();
        al.emit(Alert::new(Kind::Started, Severity::Info)).unwrap();
        // Replace the file with a directory: reopening fails until it is a file again.
        std::fs::rename(&p, t.path().join("moved")).unwrap();
        std::fs::create_dir(&p).unwrap();
        if let Some(f) = &mut al.file {
            f.mark_for_recovery();
        }
        assert!(al.emit(Alert::new(Kind::Modified, Severity::High)).is_err());
        assert_eq!(al.head().0, 1);
        std::fs::remove_dir(&p).unwrap();
        std::fs::rename(t.path().join("moved"), &p).unwrap();
        let e = al.emit(Alert::new(Kind::Modified, Severity::High)).unwrap();
        assert_eq!(e.seq, 2);
        assert_eq!(lines(&p).len(), 2);
    }

    #[test]
    fn bad_settings_are_usage_errors() {
        let c = AlertConfig {
            checkpoint_every: Some(0),
            ..AlertConfig::default()
        };
        assert_eq!(
            Alerter::new(c).unwrap_err().exit_code(),
            crate::exit::ExitCode::Usage
        );
    }
}
