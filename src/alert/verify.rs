//! `log verify`: check an alert log's hash chain (and, with a key, its signed checkpoints)
//! and name the first place where it breaks.
//!
//! The files of one chain are read oldest first as one stream. Every line must parse as a
//! record, `seq` must grow by one and `prev` must be the BLAKE3 of the previous line's exact
//! bytes. How tampering shows:
//! - an edited line: the *next* line's `prev` no longer matches (an edited last line shows
//!   only against a checkpoint);
//! - a deleted line: `seq` jumps and `prev` does not match;
//! - an inserted line: it, or the line after it, does not follow;
//! - a cut tail: the last line has no newline (cut mid-line); a clean cut at a line boundary
//!   shows only with `--key` (see [`Options`]).
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

use super::checkpoint;
use super::jsonl::Damage;
use super::record::{line_hash, parse, ZERO_HASH};
use crate::error::{Error, Result};
use crate::sanitize::Name;
use ed25519_dalek::VerifyingKey;
use std::io::{BufRead, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A record longer than this is not one kmsentry wrote.
const MAX_LINE: u64 = 1 << 20;
/// More consecutive damaged lines than this is not a crash.
const MAX_DAMAGED_LINES: usize = 16;

/// What to require beyond the hash chain.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Check every checkpoint's signature with this key, and require checkpoints.
    pub key: Option<VerifyingKey>,
    /// The writer has stopped: the log must end with `stopped` and its checkpoint, so any
    /// cut of its tail is found. Needs `key`.
    pub stopped: bool,
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
    /// Records read up to the end or up to the problem.
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Hash of the last good record's line.
    pub head: Option<String>,
    /// The first place the chain breaks; `None` when intact.
    pub problem: Option<Finding>,
    /// Accepted oddities: continuation of an earlier chain, acknowledged damage.
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
        self.problem.is_none()
    }
}

struct Prev {
    seq: u64,
    hash: String,
    at: Place,
    kind: String,
}

struct State<'o> {
    opts: &'o Options,
    report: Report,
    prev: Option<Prev>,
    damage: Vec<(Place, Vec<u8>, String)>,
    uncovered: Option<Uncovered>,
    last_place: Option<Place>,
    /// Kind of the record before the last one.
    before_last: Option<String>,
}

/// Stop at the first problem.
type Flow = std::result::Result<(), Finding>;

fn fail(at: &Place, what: impl Into<String>) -> Flow {
    Err(Finding {
        at: at.clone(),
        what: what.into(),
    })
}

fn rel(at: &Place, other: &Place) -> String {
    if at.file == other.file {
        format!("line {}", other.line)
    } else {
        other.to_string()
    }
}

impl State<'_> {
    fn line(&mut self, at: Place, line: &[u8]) -> Flow {
        self.last_place = Some(at.clone());
        let rec = match parse(line) {
            Ok(r) => r,
            Err(why) => {
                self.damage.push((at, line.to_vec(), why));
                if self.damage.len() > MAX_DAMAGED_LINES {
                    let (first, _, why) = &self.damage[0];
                    return fail(first, format!("not an alert record: {why}"));
                }
                return Ok(());
            }
        };
        let hash = line_hash(line);
        let ack = rec.detail.get("damaged_tail").map(Damage::from_value);
        if !self.damage.is_empty() {
            let lines: Vec<&[u8]> = self.damage.iter().map(|(_, l, _)| l.as_slice()).collect();
            let (first, _, why) = &self.damage[0];
            if ack != Some(Some(Damage::of(&lines))) {
                return fail(first, format!("not an alert record: {why}"));
            }
            self.report.notes.push(Finding {
                at: first.clone(),
                what: format!(
                    "{} damaged line(s) (a crash mid-write), acknowledged by {}",
                    lines.len(),
                    rel(first, &at)
                ),
            });
            self.damage.clear();
        } else if let Some(ack) = ack {
            if self.prev.is_some() {
                return fail(
                    &at,
                    "acknowledges damaged lines that are not before it: the lines before it were changed",
                );
            }
            let n = ack.map_or(0, |d| d.lines);
            self.report.notes.push(Finding {
                at: at.clone(),
                what: format!("acknowledges {n} damaged line(s) in an earlier file"),
            });
        }
        match &self.prev {
            Some(p) if rec.prev != p.hash => {
                let what = if rec.seq == p.seq.wrapping_add(1) {
                    format!(
                        "prev does not match the hash of {}: that line was changed",
                        rel(&at, &p.at)
                    )
                } else if rec.seq > p.seq {
                    format!(
                        "seq jumps from {} to {}: {} record(s) missing before this line (deleted)",
                        p.seq,
                        rec.seq,
                        rec.seq - p.seq - 1
                    )
                } else {
                    format!(
                        "seq {} after {}: a line was inserted before this one, or this one was copied",
                        rec.seq, p.seq
                    )
                };
                return fail(&at, what);
            }
            Some(p) if rec.seq != p.seq.wrapping_add(1) => {
                return fail(
                    &at,
                    format!(
                        "seq {} should be {} (prev matches {}): this line was changed",
                        rec.seq,
                        p.seq.wrapping_add(1),
                        rel(&at, &p.at)
                    ),
                );
            }
            Some(_) => {}
            None if rec.prev == ZERO_HASH => {
                if rec.seq != 1 {
                    self.report.notes.push(Finding {
                        at: at.clone(),
                        what: format!("the chain starts at seq {}", rec.seq),
                    });
                }
            }
            None => self.report.notes.push(Finding {
                at: at.clone(),
                what: format!(
                    "continues an earlier chain (seq {}, prev {}…): the records before it were not given, so not checked",
                    rec.seq,
                    &rec.prev[..16]
                ),
            }),
        }
        if rec.kind == "checkpoint" {
            let c = match checkpoint::claim(&rec.detail) {
                Ok(c) => c,
                Err(why) => return fail(&at, why),
            };
            if c.covers_seq != rec.seq.wrapping_sub(1) || c.covers_hash != rec.prev {
                return fail(
                    &at,
                    format!(
                        "checkpoint claims to cover seq {}, not the record before it (seq {})",
                        c.covers_seq,
                        rec.seq.wrapping_sub(1)
                    ),
                );
            }
            if let Some(key) = &self.opts.key {
                if let Err(why) = checkpoint::check(&c, key) {
                    return fail(&at, why);
                }
            }
            self.report.checkpoints += 1;
            self.report.last_checkpoint = Some(LastCheckpoint {
                at: at.clone(),
                seq: rec.seq,
                covers_seq: c.covers_seq,
                key_id: c.key_id,
            });
            self.uncovered = None;
        } else {
            match &mut self.uncovered {
                Some(u) => {
                    u.last_seq = rec.seq;
                    u.count += 1;
                    u.to = at.clone();
                }
                None => {
                    self.uncovered = Some(Uncovered {
                        first_seq: rec.seq,
                        last_seq: rec.seq,
                        count: 1,
                        from: at.clone(),
                        to: at.clone(),
                    })
                }
            }
        }
        let r = &mut self.report;
        r.records += 1;
        r.first_seq.get_or_insert(rec.seq);
        r.last_seq = Some(rec.seq);
        r.head = Some(hash.clone());
        self.before_last = self.prev.take().map(|p| p.kind);
        self.prev = Some(Prev {
            seq: rec.seq,
            hash,
            at,
            kind: rec.kind,
        });
        Ok(())
    }

    fn finish(&mut self) -> Flow {
        if let Some((first, _, why)) = self.damage.first() {
            return fail(
                first,
                format!("not an alert record ({why}), and no record after it acknowledges it: the log was damaged or cut here"),
            );
        }
        if self.opts.key.is_none() {
            return Ok(());
        }
        let end = self.last_place.clone().unwrap_or(Place {
            file: self.report.files.last().cloned().unwrap_or_default(),
            line: 0,
        });
        if self.report.checkpoints == 0 {
            return fail(
                &end,
                "no checkpoint in the log: nothing in it is signed (was the daemon given a signing key?)",
            );
        }
        if let Some(p) = &self.prev {
            if p.kind == "stopped" {
                return fail(
                    &p.at,
                    "the log ends with `stopped` but not with the checkpoint written right after it: its tail was cut",
                );
            }
        }
        if self.opts.stopped {
            let ends_well = self.prev.as_ref().is_some_and(|p| p.kind == "checkpoint")
                && self.before_last.as_deref() == Some("stopped");
            if !ends_well {
                let kind = self.prev.as_ref().map_or("nothing", |p| p.kind.as_str());
                return fail(
                    &end,
                    format!(
                        "the log of a stopped daemon must end with `stopped` and its checkpoint; it ends with `{kind}`: its tail was cut (or the daemon crashed or still runs)"
                    ),
                );
            }
        }
        self.report.uncovered = self.uncovered.clone();
        Ok(())
    }
}

/// Verify the files of one chain, oldest first. I/O errors (a missing file) are errors; a
/// broken chain is a [`Report`] with a `problem`.
pub fn verify_files(paths: &[PathBuf], opts: &Options) -> Result<Report> {
    if opts.stopped && opts.key.is_none() {
        return Err(Error::Usage(
            "checking that the log ends with a signed `stopped` needs a key".into(),
        ));
    }
    let mut st = State {
        opts,
        report: Report {
            files: paths
                .iter()
                .map(|p| p.as_os_str().as_bytes().to_vec())
                .collect(),
            signatures_checked: opts.key.is_some(),
            ..Report::default()
        },
        prev: None,
        damage: Vec::new(),
        uncovered: None,
        last_place: None,
        before_last: None,
    };
    let mut flow = Ok(());
    'files: for path in paths {
        let name = path.as_os_str().as_bytes().to_vec();
        let f = std::fs::File::open(path).map_err(|e| Error::io("open alert log", &*name, e))?;
        let mut rd = std::io::BufReader::with_capacity(1 << 16, f);
        let mut buf = Vec::new();
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
                flow = fail(
                    &at,
                    if buf.len() as u64 > MAX_LINE {
                        "line longer than 1 MiB: not an alert record".to_string()
                    } else {
                        "the last line has no newline: it was cut (truncated log, or a crash mid-write not yet recovered)".to_string()
                    },
                );
                break 'files;
            }
            buf.pop();
            flow = st.line(at, &buf);
            if flow.is_err() {
                break 'files;
            }
        }
    }
    if flow.is_ok() {
        flow = st.finish();
    }
    if let Err(problem) = flow {
        st.report.problem = Some(problem);
    }
    Ok(st.report)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(r.intact(), "{:?}", r.problem);
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
        let pr = r.problem.unwrap();
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
        let pr = check(&p).problem.unwrap();
        assert!(pr.what.contains("longer than 1 MiB"), "{}", pr.what);
        assert!(verify_files(
            std::slice::from_ref(&p),
            &Options {
                key: None,
                stopped: true
            }
        )
        .is_err());
    }
}
