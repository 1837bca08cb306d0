//! The chain check itself: one [`State`] fed every line of the files in order, then
//! [`State::finish`]. See the parent module for what it finds and how it names it.

use super::{
    Finding, LastCheckpoint, Options, Place, Report, Uncovered, MAX_DAMAGED_LINES, RECENT,
};
use crate::alert::checkpoint;
use crate::alert::jsonl::Damage;
use crate::alert::record::{line_hash, parse, ZERO_HASH};
use crate::alert::rfc5424;
use crate::error::{Error, Result};
use crate::sanitize::Name;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The record at the top of the chain (highest `seq` so far).
struct Head {
    seq: u64,
    hash: String,
    at: Place,
    kind: String,
}

/// A record remembered for duplicates and late arrivals.
struct Seen {
    hash: String,
    prev: String,
    at: Place,
}

/// Records missing between two that were read; filled by a late arrival, named at the end.
struct Gap {
    to: u64,
    /// The record after the gap.
    at: Place,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Jsonl,
    Syslog,
}

pub(super) struct State<'o> {
    opts: &'o Options,
    pub(super) report: Report,
    head: Option<Head>,
    recent: BTreeMap<u64, Seen>,
    /// A second, different record with a `seq` already seen.
    twins: HashMap<u64, (String, Place)>,
    /// Missing runs by first missing `seq`.
    gaps: BTreeMap<u64, Gap>,
    /// Places of records named as changed or forged.
    altered: BTreeSet<(usize, u64)>,
    damage: Vec<(Place, Vec<u8>, String)>,
    uncovered: Option<Uncovered>,
    last_place: Option<Place>,
    /// Kind of the record before the head.
    before_last: Option<String>,
    /// `health` records saying a sender's queue dropped `seq` a–b.
    dropped: Vec<(Place, u64, u64)>,
}

fn rel(at: &Place, other: &Place) -> String {
    if at.file == other.file {
        format!("line {}", other.line)
    } else {
        other.to_string()
    }
}

impl<'o> State<'o> {
    pub(super) fn new(opts: &'o Options, report: Report) -> State<'o> {
        State {
            opts,
            report,
            head: None,
            recent: BTreeMap::new(),
            twins: HashMap::new(),
            gaps: BTreeMap::new(),
            altered: BTreeSet::new(),
            damage: Vec::new(),
            uncovered: None,
            last_place: None,
            before_last: None,
            dropped: Vec::new(),
        }
    }

    pub(super) fn problem(&mut self, at: &Place, what: impl Into<String>) {
        self.report.problems.push(Finding {
            at: at.clone(),
            what: what.into(),
        });
    }

    fn note(&mut self, at: &Place, what: impl Into<String>) {
        self.report.notes.push(Finding {
            at: at.clone(),
            what: what.into(),
        });
    }

    fn key(&self, at: &Place) -> (usize, u64) {
        let i = self
            .report
            .files
            .iter()
            .position(|f| *f == at.file)
            .unwrap_or(usize::MAX);
        (i, at.line)
    }

    fn mark_altered(&mut self, at: &Place) {
        let k = self.key(at);
        self.altered.insert(k);
    }

    /// One line of a receiver's file: a kmsentry record of the chosen host, or skipped.
    pub(super) fn syslog_line(&mut self, at: Place, raw: &[u8]) -> Result<()> {
        let Ok(l) = rfc5424::parse(raw) else {
            self.report.foreign += 1;
            return Ok(());
        };
        if l.app_name != b"kmsentry" {
            self.report.foreign += 1;
            return Ok(());
        }
        let host = Name(l.hostname).to_string();
        match (&self.opts.host, &self.report.host) {
            (Some(want), _) if *want != host => {
                self.report.foreign += 1;
                return Ok(());
            }
            (None, Some(seen)) if *seen != host => {
                return Err(Error::Usage(format!(
                    "{at}: records of more than one host (`{seen}`, `{host}`): give --host to check one host's chain"
                )));
            }
            _ => self.report.host = Some(host),
        }
        self.record(at, l.msg, Source::Syslog);
        Ok(())
    }

    pub(super) fn record(&mut self, at: Place, line: &[u8], src: Source) {
        self.last_place = Some(at.clone());
        let rec = match parse(line) {
            Ok(r) => r,
            Err(why) => {
                self.damage.push((at, line.to_vec(), why));
                if self.damage.len() > MAX_DAMAGED_LINES {
                    let (first, _, why) = self.damage[0].clone();
                    self.problem(&first, format!("not an alert record: {why}"));
                    self.damage.clear();
                }
                return;
            }
        };
        let hash = line_hash(line);
        self.acknowledge(&at, &rec.detail);
        if rec.kind == "health" && rec.detail.contains_key("dropped") {
            let num = |k: &str| rec.detail.get(k).and_then(serde_json::Value::as_u64);
            if let (Some(a), Some(b)) = (num("first_seq"), num("last_seq")) {
                self.dropped.push((at.clone(), a, b));
            }
        }

        if let Some((seen_hash, first)) = self
            .recent
            .get(&rec.seq)
            .map(|s| (s.hash.clone(), s.at.clone()))
        {
            let top = self.head.as_ref().map_or(0, |h| h.seq);
            if seen_hash == hash && src == Source::Syslog {
                self.report.duplicates += 1;
                return;
            }
            let what = if seen_hash == hash {
                format!(
                    "seq {} after {top}: a line was inserted before this one, or this one was copied (the same bytes as {})",
                    rec.seq,
                    rel(&at, &first)
                )
            } else {
                format!(
                    "seq {} after {top}: a second record with seq {}, different from {}: one of the two was forged or changed",
                    rec.seq,
                    rec.seq,
                    rel(&at, &first)
                )
            };
            self.problem(&at, what);
            if seen_hash != hash {
                self.report.records += 1;
                self.mark_altered(&at);
                self.twins.insert(rec.seq, (hash, at));
            }
            return;
        }
        self.report.records += 1;
        self.recent.insert(
            rec.seq,
            Seen {
                hash: hash.clone(),
                prev: rec.prev.clone(),
                at: at.clone(),
            },
        );
        if self.recent.len() > RECENT {
            self.recent.pop_first();
        }

        let in_order = match &self.head {
            None => {
                if rec.prev == ZERO_HASH {
                    if rec.seq != 1 {
                        self.note(&at, format!("the chain starts at seq {}", rec.seq));
                    }
                } else {
                    self.note(
                        &at,
                        format!(
                            "continues an earlier chain (seq {}, prev {}…): the records before it were not given, so not checked",
                            rec.seq,
                            &rec.prev[..16]
                        ),
                    );
                }
                true
            }
            Some(h) if rec.seq == h.seq.wrapping_add(1) => {
                if rec.prev != h.hash {
                    let (hat, hseq) = (h.at.clone(), h.seq);
                    match self.twins.get(&hseq).cloned() {
                        Some((th, tat)) if th == rec.prev => {
                            self.problem(
                                &hat,
                                format!(
                                    "not part of the chain: {} chains to the other record with seq {hseq} ({}); this one was forged or changed",
                                    rel(&hat, &at),
                                    rel(&hat, &tat)
                                ),
                            );
                            let k = self.key(&tat);
                            self.altered.remove(&k);
                        }
                        _ => self.problem(
                            &hat,
                            format!(
                                "this record was changed: its hash does not match the prev of the next record ({})",
                                rel(&hat, &at)
                            ),
                        ),
                    }
                    self.mark_altered(&hat);
                }
                true
            }
            Some(h) if rec.seq > h.seq => {
                self.gaps.insert(
                    h.seq + 1,
                    Gap {
                        to: rec.seq - 1,
                        at: at.clone(),
                    },
                );
                true
            }
            Some(h) => {
                let top = h.seq;
                self.late(&at, rec.seq, top, &rec.prev, &hash);
                false
            }
        };
        if rec.kind == "checkpoint" {
            self.checkpoint(&at, &rec, in_order);
        } else if in_order {
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
        if in_order {
            let r = &mut self.report;
            r.first_seq.get_or_insert(rec.seq);
            r.last_seq = Some(rec.seq);
            r.head = Some(hash.clone());
            self.before_last = self.head.take().map(|p| p.kind);
            self.head = Some(Head {
                seq: rec.seq,
                hash,
                at,
                kind: rec.kind,
            });
        }
    }

    /// Damaged lines before this record must be acknowledged by it, exactly.
    fn acknowledge(&mut self, at: &Place, detail: &serde_json::Map<String, serde_json::Value>) {
        let ack = detail.get("damaged_tail").map(Damage::from_value);
        if !self.damage.is_empty() {
            let damage = std::mem::take(&mut self.damage);
            let lines: Vec<&[u8]> = damage.iter().map(|(_, l, _)| l.as_slice()).collect();
            let (first, _, why) = &damage[0];
            if ack == Some(Some(Damage::of(&lines))) {
                let what = format!(
                    "{} damaged line(s) (a crash mid-write), acknowledged by {}",
                    lines.len(),
                    rel(first, at)
                );
                self.note(first, what);
            } else {
                self.problem(first, format!("not an alert record: {why}"));
            }
        } else if let Some(ack) = ack {
            if self.head.is_some() {
                self.problem(
                    at,
                    "acknowledges damaged lines that are not before it: the lines before it were changed",
                );
            } else {
                let n = ack.map_or(0, |d| d.lines);
                self.note(
                    at,
                    format!("acknowledges {n} damaged line(s) in an earlier file"),
                );
            }
        }
    }

    /// A record older than the head that was not seen before: out of order.
    fn late(&mut self, at: &Place, seq: u64, top: u64, prev: &str, hash: &str) {
        let gap = self
            .gaps
            .range(..=seq)
            .next_back()
            .filter(|(_, g)| g.to >= seq)
            .map(|(from, g)| (*from, g.to, g.at.clone()));
        match gap {
            Some((from, to, gat)) => {
                self.gaps.remove(&from);
                if from < seq {
                    self.gaps.insert(
                        from,
                        Gap {
                            to: seq - 1,
                            at: gat.clone(),
                        },
                    );
                }
                if seq < to {
                    self.gaps.insert(
                        seq + 1,
                        Gap {
                            to,
                            at: gat.clone(),
                        },
                    );
                }
                self.problem(
                    at,
                    format!(
                        "seq {seq} after {top}: out of order, it belongs before {} (moved, or stored late)",
                        rel(at, &gat)
                    ),
                );
            }
            None => self.problem(
                at,
                format!("seq {seq} after {top}: out of order (moved, or from another chain)"),
            ),
        }
        let before = seq
            .checked_sub(1)
            .and_then(|s| self.recent.get(&s))
            .map(|s| (s.hash.clone(), s.at.clone()));
        if let Some((h, bat)) = before {
            if h != prev {
                let what = format!(
                    "this record was changed: its prev does not match the hash of seq {} ({})",
                    seq - 1,
                    rel(at, &bat)
                );
                self.problem(at, what);
                self.mark_altered(at);
                return;
            }
        }
        let after = self
            .recent
            .get(&(seq + 1))
            .map(|s| (s.prev.clone(), s.at.clone()));
        if let Some((p, aat)) = after {
            if p != hash {
                let what = format!(
                    "this record was changed: its hash does not match the prev of seq {} ({})",
                    seq + 1,
                    rel(at, &aat)
                );
                self.problem(at, what);
                self.mark_altered(at);
            }
        }
    }

    fn checkpoint(&mut self, at: &Place, rec: &crate::alert::record::Parsed, in_order: bool) {
        let c = match checkpoint::claim(&rec.detail) {
            Ok(c) => c,
            Err(why) => return self.problem(at, why),
        };
        if c.covers_seq != rec.seq.wrapping_sub(1) || c.covers_hash != rec.prev {
            return self.problem(
                at,
                format!(
                    "checkpoint claims to cover seq {}, not the record before it (seq {})",
                    c.covers_seq,
                    rec.seq.wrapping_sub(1)
                ),
            );
        }
        if let Some(key) = &self.opts.key {
            if let Err(why) = checkpoint::check(&c, key) {
                self.mark_altered(at);
                return self.problem(at, why);
            }
        }
        self.report.checkpoints += 1;
        if in_order {
            self.report.last_checkpoint = Some(LastCheckpoint {
                at: at.clone(),
                seq: rec.seq,
                covers_seq: c.covers_seq,
                key_id: c.key_id,
            });
            self.uncovered = None;
        }
    }

    pub(super) fn finish(&mut self) {
        if let Some((first, _, why)) = self.damage.first().cloned() {
            self.problem(
                &first,
                format!("not an alert record ({why}), and no record after it acknowledges it: the log was damaged or cut here"),
            );
        }
        let undelivered = if self.report.host.is_some() {
            "deleted, or never delivered"
        } else {
            "deleted"
        };
        for (at, a, b) in std::mem::take(&mut self.dropped) {
            let before_chain = self.report.first_seq.is_none_or(|f| a < f);
            let in_gap = self.gaps.iter().any(|(from, g)| *from <= b && g.to >= a);
            if before_chain || in_gap {
                self.problem(
                    &at,
                    format!(
                        "the sender says its queue for this receiver was full and dropped seq {a}–{b}: those records are only in the host's own log"
                    ),
                );
            }
        }
        for (from, g) in std::mem::take(&mut self.gaps) {
            let n = g.to - from + 1;
            self.problem(
                &g.at,
                format!(
                    "seq jumps from {} to {}: {n} record(s) missing before this line ({undelivered})",
                    from - 1,
                    g.to + 1
                ),
            );
        }
        if self.report.duplicates > 0 {
            let at = Place {
                file: self.report.files.first().cloned().unwrap_or_default(),
                line: 0,
            };
            let what = format!(
                "{} exact duplicate(s) of records (resent after a reconnect) counted once",
                self.report.duplicates
            );
            self.note(&at, what);
        }
        self.report.verified = self.report.records - self.altered.len() as u64;
        if self.opts.key.is_some() {
            self.finish_signed();
            self.report.uncovered = self.uncovered.clone();
        }
        let mut problems = std::mem::take(&mut self.report.problems);
        problems.sort_by_key(|f| self.key(&f.at));
        self.report.problems = problems;
    }

    fn finish_signed(&mut self) {
        let end = self.last_place.clone().unwrap_or(Place {
            file: self.report.files.last().cloned().unwrap_or_default(),
            line: 0,
        });
        if self.report.checkpoints == 0 {
            return self.problem(
                &end,
                "no checkpoint in the log: nothing in it is signed (was the daemon given a signing key?)",
            );
        }
        if let Some(p) = &self.head {
            if p.kind == "stopped" {
                let at = p.at.clone();
                return self.problem(
                    &at,
                    "the log ends with `stopped` but not with the checkpoint written right after it: its tail was cut",
                );
            }
        }
        if self.opts.stopped {
            let ends_well = self.head.as_ref().is_some_and(|p| p.kind == "checkpoint")
                && self.before_last.as_deref() == Some("stopped");
            if !ends_well {
                let kind = self.head.as_ref().map_or("nothing", |p| p.kind.as_str());
                let what = format!(
                    "the log of a stopped daemon must end with `stopped` and its checkpoint; it ends with `{kind}`: its tail was cut (or the daemon crashed or still runs)"
                );
                self.problem(&end, what);
            }
        }
    }
}
