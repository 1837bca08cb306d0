//! `log verify`: check an alert log's hash chain (and, with a key, its signed checkpoints)
//! and name every place where it breaks.
//!
//! The files of one chain are read oldest first as one stream. Each file is either the
//! daemon's JSONL log or what a syslog receiver stored (RFC 5424 lines, one per line, MSG
//! being the canonical JSON record, as rsyslog's `RSYSLOG_SyslogProtocol23Format` writes
//! them; recognised by a first line starting with `<`). Every record must parse, `seq` must
//! grow by one and `prev` must be the BLAKE3 of the previous record's exact bytes. How
//! tampering shows, and where it is named:
//! - an edited record: the next record's `prev` no longer matches; the edited record is
//!   named and not counted as verified (an edited last record shows only against a
//!   checkpoint);
//! - a deleted (or never delivered) record: `seq` jumps; the gap is named;
//! - an inserted record: a second record with a `seq` already seen, or one the next record
//!   does not chain to;
//! - a reordered record: it comes after a higher `seq`; it is named where it stands;
//! - a cut tail: the last line has no newline (cut mid-line); a clean cut at a line boundary
//!   shows only with `--key` (see [`Options`]).
//!
//! The check goes on after a break (the chain resumes at the record after it), so every
//! break is listed. In a receiver's file an exact duplicate of a record (same `seq`, same
//! bytes: the sender resends its unconfirmed tail after a reconnect) counts once, and lines
//! of other programs are skipped; in a JSONL log a duplicate is an insertion.
//!
//! Damaged lines (not records) are accepted only when the record right after them
//! acknowledges exactly those bytes in `detail.damaged_tail` (what the writer does after a
//! crash mid-write); they are reported as a note. The first record of the first file may
//! continue an earlier chain (`prev` not zero): accepted, and reported.
//!
//! With a key: every checkpoint must carry a valid signature by that key over the record
//! before it; at least one checkpoint must exist; a log whose last record is `stopped` must
//! end with its checkpoint; records after the last checkpoint are reported as not covered.
//! With `stopped` set the log must end with `stopped` and its checkpoint.

mod chain;

use crate::error::{Error, Result};
use crate::sanitize::Name;
use chain::{Source, State};
use ed25519_dalek::VerifyingKey;
use std::io::{BufRead, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A record longer than this is not one kmsentry wrote.
const MAX_LINE: u64 = 1 << 20;
/// More consecutive damaged lines than this is not a crash.
const MAX_DAMAGED_LINES: usize = 16;
/// How many recent records are remembered to recognise duplicates and late arrivals.
const RECENT: usize = 1 << 17;

/// What to require beyond the hash chain.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Check every checkpoint's signature with this key, and require checkpoints.
    pub key: Option<VerifyingKey>,
    /// The writer has stopped: the log must end with `stopped` and its checkpoint, so any
    /// cut of its tail is found. Needs `key`.
    pub stopped: bool,
    /// In a receiver's file, check the records of this host (the RFC 5424 HOSTNAME); other
    /// hosts' records are skipped. Without it the file must hold one host's records.
    pub host: Option<String>,
}

/// A line in one of the files (`line` is 1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub file: Vec<u8>,
    pub line: u64,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", Name(&self.file), self.line)
    }
}

/// Something said about a place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub at: Place,
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.what)
    }
}

/// A run of records no signature covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uncovered {
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
    pub from: Place,
    pub to: Place,
}

/// The last checkpoint seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastCheckpoint {
    pub at: Place,
    pub seq: u64,
    pub covers_seq: u64,
    pub key_id: String,
}

/// What `log verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub files: Vec<Vec<u8>>,
    /// Distinct records read (exact duplicates in a receiver's file count once).
    pub records: u64,
    /// Records not named as changed, forged or out of chain.
    pub verified: u64,
    /// Exact duplicates skipped in a receiver's file.
    pub duplicates: u64,
    /// Lines of other programs or hosts skipped in a receiver's file.
    pub foreign: u64,
    /// The host whose records a receiver's file was checked for.
    pub host: Option<String>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Hash of the last record of the chain (the highest `seq`).
    pub head: Option<String>,
    /// Every place the chain breaks, in file order; empty when intact.
    pub problems: Vec<Finding>,
    /// Accepted oddities: continuation of an earlier chain, acknowledged damage, duplicates.
    pub notes: Vec<Finding>,
    pub checkpoints: u64,
    /// Whether checkpoint signatures were checked (a key was given).
    pub signatures_checked: bool,
    pub last_checkpoint: Option<LastCheckpoint>,
    /// With a key: records after the last checkpoint.
    pub uncovered: Option<Uncovered>,
}

impl Report {
    /// No problem found.
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// The first problem, in file order.
    pub fn problem(&self) -> Option<&Finding> {
        self.problems.first()
    }
}

/// Verify the files of one chain, oldest first. I/O errors (a missing file) are errors; a
/// broken chain is a [`Report`] with `problems`.
pub fn verify_files(paths: &[PathBuf], opts: &Options) -> Result<Report> {
    if opts.stopped && opts.key.is_none() {
        return Err(Error::Usage(
            "checking that the log ends with a signed `stopped` needs a key".into(),
        ));
    }
    let mut st = State::new(
        opts,
        Report {
            files: paths
                .iter()
                .map(|p| p.as_os_str().as_bytes().to_vec())
                .collect(),
            signatures_checked: opts.key.is_some(),
            ..Report::default()
        },
    );
    for path in paths {
        let name = path.as_os_str().as_bytes().to_vec();
        let f = std::fs::File::open(path).map_err(|e| Error::io("open alert log", &*name, e))?;
        let mut rd = std::io::BufReader::with_capacity(1 << 16, f);
        let mut buf = Vec::new();
        let mut syslog = None;
        for n in 1u64.. {
            buf.clear();
            (&mut rd)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|e| Error::io("read alert log", &*name, e))?;
            let at = Place {
                file: name.clone(),
                line: n,
            };
            if buf.is_empty() {
                break;
            }
            if buf.last() != Some(&b'\n') {
                let what = if buf.len() as u64 > MAX_LINE {
                    "line longer than 1 MiB: not an alert record; the rest of this file is not checked"
                } else {
                    "the last line has no newline: it was cut (truncated log, or a crash mid-write not yet recovered)"
                };
                st.problem(&at, what);
                break;
            }
            buf.pop();
            if *syslog.get_or_insert(buf.first() == Some(&b'<')) {
                st.syslog_line(at, &buf)?;
            } else {
                st.record(at, &buf, Source::Jsonl);
            }
        }
    }
    st.finish();
    Ok(st.report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::record::line_hash;
    use crate::alert::{Alert, AlertConfig, Alerter, Kind};
    use crate::baseline::diff::Severity;
    use std::path::Path;

    fn log(p: &Path, n: usize) {
        let mut al = Alerter::new(AlertConfig {
            host: "h".into(),
            file: Some(p.to_path_buf()),
            ..AlertConfig::default()
        })
        .unwrap();
        for _ in 0..n {
            al.emit(Alert::new(Kind::Modified, Severity::High)).unwrap();
        }
    }

    fn check(p: &Path) -> Report {
        verify_files(&[p.to_path_buf()], &Options::default()).unwrap()
    }

    #[test]
    fn the_alerter_is_send_for_the_daemons_worker_thread() {
        fn send<T: Send>() {}
        send::<Alerter>();
    }

    #[test]
    fn an_intact_log_reports_its_range_and_head() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        log(&p, 3);
        let r = check(&p);
        assert!(r.intact(), "{:?}", r.problems);
        assert_eq!((r.records, r.first_seq, r.last_seq), (3, Some(1), Some(3)));
        assert!(r.notes.is_empty());
        let last = std::fs::read(&p).unwrap();
        let last = last[..last.len() - 1]
            .rsplit(|&b| b == b'\n')
            .next()
            .unwrap();
        assert_eq!(r.head.unwrap(), line_hash(last));
    }

    #[test]
    fn an_acknowledgement_without_damage_before_it_is_a_break() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        log(&p, 1);
        // A crash, a restart that acknowledges it, then the damaged line removed.
        let mut d = std::fs::read(&p).unwrap();
        d.extend_from_slice(b"{\"ts");
        std::fs::write(&p, &d).unwrap();
        log(&p, 1);
        assert!(check(&p).intact());
        let text = std::fs::read_to_string(&p).unwrap();
        let kept: Vec<&str> = text.lines().filter(|l| *l != "{\"ts").collect();
        std::fs::write(&p, kept.join("\n") + "\n").unwrap();
        let r = check(&p);
        let pr = r.problem().unwrap().clone();
        assert_eq!(pr.at.line, 2);
        assert!(
            pr.what.contains("acknowledges damaged lines"),
            "{}",
            pr.what
        );
    }

    #[test]
    fn an_empty_file_is_intact_and_an_overlong_line_is_not() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        std::fs::write(&p, "").unwrap();
        assert!(check(&p).intact());
        let mut big = vec![b'x'; (MAX_LINE + 10) as usize];
        big.push(b'\n');
        std::fs::write(&p, &big).unwrap();
        let pr = check(&p).problem().unwrap().clone();
        assert!(pr.what.contains("longer than 1 MiB"), "{}", pr.what);
        assert!(verify_files(
            std::slice::from_ref(&p),
            &Options {
                stopped: true,
                ..Options::default()
            }
        )
        .is_err());
    }

    fn as_syslog(host: &str, jsonl: &Path) -> Vec<String> {
        std::fs::read_to_string(jsonl)
            .unwrap()
            .lines()
            .map(|l| format!("<86>1 2026-01-01T00:00:00Z {host} kmsentry 1 modified - {l}"))
            .collect()
    }

    #[test]
    fn a_receivers_file_counts_duplicates_once_and_keeps_hosts_apart() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a.jsonl"), t.path().join("b.jsonl"));
        log(&a, 4);
        log(&b, 2);
        let la = as_syslog("web1", &a);
        // A reconnect resent records 2-3; another program's line in between.
        let mut lines = la.clone();
        lines.insert(3, "<13>1 - web1 sshd 9 - - Accepted publickey".into());
        lines.extend_from_slice(&la[1..3]);
        let f = t.path().join("received.log");
        std::fs::write(&f, lines.join("\n") + "\n").unwrap();
        let r = check(&f);
        assert!(r.intact(), "{:?}", r.problems);
        assert_eq!((r.records, r.duplicates, r.foreign), (4, 2, 1));
        assert_eq!(r.host.as_deref(), Some("web1"));
        // In the JSONL log the same copy is an insertion.
        let mut j: Vec<String> = std::fs::read_to_string(&a)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        j.push(j[1].clone());
        std::fs::write(&a, j.join("\n") + "\n").unwrap();
        assert!(!check(&a).intact());
        // Two hosts' chains in one file: pick one with --host.
        lines.extend(as_syslog("db1", &b));
        std::fs::write(&f, lines.join("\n") + "\n").unwrap();
        let e = verify_files(std::slice::from_ref(&f), &Options::default()).unwrap_err();
        assert!(e.to_string().contains("more than one host"), "{e}");
        let only = |h: &str| Options {
            host: Some(h.into()),
            ..Options::default()
        };
        let r = verify_files(std::slice::from_ref(&f), &only("db1")).unwrap();
        assert!(r.intact(), "{:?}", r.problems);
        assert_eq!(r.records, 2);
        let r = verify_files(std::slice::from_ref(&f), &only("web1")).unwrap();
        assert!(r.intact() && r.records == 4);
    }
}
