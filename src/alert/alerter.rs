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
    /// `stopped` when signing). Returns once the record is fsync'd in the file; fails only
    /// when the file could not take it. A failed checkpoint is warned about, not returned.
    pub fn emit(&mut self, a: Alert) -> Result<Emitted> {
        let stopped = a.kind == Kind::Stopped;
        let e = self.write(a)?;
        if self.signer.is_some() && (stopped || self.checkpoint_due()) {
            if let Err(err) = self.checkpoint() {
                tracing::warn!("alert checkpoint: {err}");
            }
        }
        Ok(e)
    }

    /// Write a checkpoint if the interval has passed since the last one and records came
    /// since. The daemon calls this now and then so a quiet period still gets signed.
    pub fn tick(&mut self) -> Result<()> {
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
        let Some(key) = &self.signer else {
            return Ok(None);
        };
        if self.head_seq == 0 {
            return Ok(None);
        }
        let mut a = Alert::new(Kind::Checkpoint, Severity::Info);
        a.detail = checkpoint::detail(key, self.head_seq, &self.head_hash);
        let e = self.write(a)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(Some(e))
    }

    fn write(&mut self, mut a: Alert) -> Result<Emitted> {
        let mut file_err = None;
        if let Some(f) = &mut self.file {
            if f.needs_recovery() {
                match f.reopen() {
                    Ok(tail) => {
                        // An empty file after a half-done rotation continues the chain.
                        if let Some((seq, hash)) = tail.last.clone() {
                            self.head_seq = seq;
                            self.head_hash = hash;
                        }
                        self.damage = tail.damaged.map(|d| d.to_value());
                    }
                    Err(e) => file_err = Some(e),
                }
            }
        }
        if let Some(d) = self.damage.take() {
            a.detail.insert("damaged_tail".into(), d);
        }
        let ts = now_ts();
        let seq = self.head_seq + 1;
        let stamp = Stamp {
            ts: &ts,
            seq,
            host: &self.host,
            prev: &self.head_hash,
        };
        let line = render(&a, &stamp);
        if file_err.is_none() {
            if let Some(f) = &mut self.file {
                if let Err(e) = f.append(line.as_bytes()) {
                    file_err = Some(Error::io("write alert log", name_of(f.path()), e));
                }
            }
        }
        let r = Rendered {
            line: &line,
            alert: &a,
            ts: &ts,
            seq,
            host: &self.host,
        };
        if let Some(fails) = &mut self.stdout {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if let Err(e) = out
                .write_all(line.as_bytes())
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
        if let Some(e) = file_err {
            return Err(e);
        }
        self.head_seq = seq;
        self.head_hash = line_hash(line.as_bytes());
        if a.kind != Kind::Checkpoint {
            self.since_checkpoint += 1;
        }
        Ok(Emitted {
            seq,
            hash: self.head_hash.clone(),
        })
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
