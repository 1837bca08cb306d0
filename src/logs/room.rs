//! [`LogRoom`]: the seam between whoever reads lines (`logs scan` here, a daemon thread
//! later) and the judging. It takes (source, line bytes, position) and yields
//! [`LogFinding`]s: Sigma detections and correlations from each source's engine, then the
//! source's `hours` and `first_seen` conditions. Time is the event's own (or, for a line
//! without one, the last time the source showed; failing that the caller's fallback), so a
//! replay judges as live reading would. No I/O apart from the learned-state database.

use super::parse::{parse, Skip};
use super::prefilter::Prefilter;
use super::rules::{engine_for, fits, RuleSet};
use super::state::LearnedState;
use crate::error::Result;
use crate::policy::logs::{Format, LogSource};
use rsigma_eval::{CorrelationEngine, JsonEvent};
use serde_json::{Map, Value};

/// Rule id of findings from a source's `hours` condition.
pub const HOURS_RULE: &str = "kmsentry-hours";
/// Rule id of findings from a source's `first_seen` condition.
pub const FIRST_SEEN_RULE: &str = "kmsentry-first-seen";

/// Where a line was read.
#[derive(Clone, Copy, Debug)]
pub struct Position<'a> {
    pub file: &'a [u8],
    pub offset: u64,
    /// Time to use when neither the line nor the source has shown one (e.g. the file's mtime).
    pub fallback_ts: Option<i64>,
}

/// Correlation facts of a finding.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Correlation {
    #[serde(rename = "type")]
    pub kind: String,
    pub count: f64,
    pub window_secs: u64,
    pub group_by: Map<String, Value>,
}

/// One judged match.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogFinding {
    pub rule: String,
    pub title: String,
    pub severity: &'static str,
    pub source: String,
    pub log: LogPos,
    /// The event's time, RFC 3339 UTC; absent when the line had none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub fields: Map<String, Value>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Correlation>,
}

/// File and byte offset of the line (for a correlation: of the line that completed it).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogPos {
    #[serde(serialize_with = "ser_name")]
    pub file: Vec<u8>,
    pub offset: u64,
}

fn ser_name<S: serde::Serializer>(v: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&crate::sanitize::JsonName(v), s)
}

/// What the room saw, per run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counts {
    pub lines: u64,
    pub events: u64,
    pub empty: u64,
    pub unparseable: u64,
    pub lossy: u64,
    pub oversized: u64,
    /// Events judged without a time of their own.
    pub without_time: u64,
}

struct Room {
    src: LogSource,
    engine: CorrelationEngine,
    rules: usize,
    last_ts: Option<i64>,
    sniffed: Option<Format>,
    /// Lines no rule can match are not evaluated (see [`super::prefilter`]).
    pre: Option<Prefilter>,
}

/// Judges lines of the policy's log sources.
pub struct LogRoom {
    rooms: Vec<Room>,
    state: LearnedState,
    pub counts: Counts,
}

fn severity(level: Option<rsigma_parser::Level>) -> &'static str {
    use rsigma_parser::Level::*;
    match level {
        Some(Critical) => "critical",
        Some(High) => "high",
        Some(Medium) => "medium",
        Some(Low) => "low",
        Some(Informational) => "info",
        None => "medium",
    }
}

/// `KMSENTRY_LOGS_PREFILTER=off` evaluates every line (the benchmark compares both paths).
fn prefilter_on() -> bool {
    std::env::var_os("KMSENTRY_LOGS_PREFILTER").is_none_or(|v| v != "off")
}

fn rfc3339(ts: i64) -> Option<String> {
    jiff::Timestamp::from_second(ts).ok().map(|t| t.to_string())
}

impl LogRoom {
    /// One engine per source, holding the rules whose logsource fits it.
    pub fn new(sources: &[LogSource], rules: &RuleSet, state: LearnedState) -> Result<LogRoom> {
        let mut rooms = Vec::new();
        for s in sources {
            let (engine, n) = engine_for(rules, &s.logsource)?;
            // `hours` and `first_seen` judge every event, so such a source is never filtered.
            let pre = (prefilter_on() && s.hours.is_none() && s.first_seen.is_empty())
                .then(|| {
                    Prefilter::build(
                        rules
                            .rules
                            .iter()
                            .filter(|(r, _)| fits(&r.logsource, &s.logsource))
                            .map(|(r, _)| r),
                    )
                })
                .flatten();
            rooms.push(Room {
                src: s.clone(),
                engine,
                rules: n,
                last_ts: None,
                sniffed: None,
                pre,
            });
        }
        Ok(LogRoom {
            rooms,
            state,
            counts: Counts::default(),
        })
    }

    /// Index of the source named `name`.
    pub fn source_index(&self, name: &str) -> Option<usize> {
        self.rooms.iter().position(|r| r.src.name == name)
    }

    /// Sources in policy order.
    pub fn sources(&self) -> impl Iterator<Item = &LogSource> {
        self.rooms.iter().map(|r| &r.src)
    }

    /// Rules (detections and correlations) loaded for source `i`.
    pub fn rule_count(&self, i: usize) -> usize {
        self.rooms.get(i).map_or(0, |r| r.rules)
    }

    /// A line longer than the reader's cap (counted, not judged).
    pub fn oversized(&mut self) {
        self.counts.oversized += 1;
        self.counts.lines += 1;
    }

    /// A new file starts for source `i`: `auto` sniffs again.
    pub fn new_file(&mut self, i: usize) {
        if let Some(r) = self.rooms.get_mut(i) {
            r.sniffed = None;
        }
    }

    /// Judge one line of source `i`, pushing findings to `out`.
    pub fn feed(
        &mut self,
        i: usize,
        line: &[u8],
        pos: Position<'_>,
        out: &mut Vec<LogFinding>,
    ) -> Result<()> {
        self.counts.lines += 1;
        let Some(room) = self.rooms.get_mut(i) else {
            return Ok(());
        };
        // `auto` is settled on a file's first parseable line and kept for the rest of it, so a
        // message that happens to start with `{` does not switch the parser mid-file.
        let format = room.sniffed.unwrap_or(room.src.format);
        // A line the prefilter rules out only needs what the counts and `last_ts` need.
        let skip = format != Format::Auto && room.pre.as_ref().is_some_and(|p| p.skips(line));
        let parsed = match skip
            .then(|| super::parse::stamp(format, line))
            .flatten()
            .unwrap_or_else(|| parse(format, room.src.regex.as_ref(), line))
        {
            Ok(p) => p,
            Err(Skip::Empty) => {
                self.counts.empty += 1;
                return Ok(());
            }
            Err(Skip::Unparseable) => {
                self.counts.unparseable += 1;
                return Ok(());
            }
        };
        if room.src.format == Format::Auto && room.sniffed.is_none() {
            let (t, _) = super::parse::text(line);
            room.sniffed = Some(super::parse::sniff(&t));
        }
        self.counts.events += 1;
        if parsed.lossy {
            self.counts.lossy += 1;
        }
        let own_ts = parsed.ts;
        let ts = own_ts.or(room.last_ts).or(pos.fallback_ts);
        if own_ts.is_none() {
            self.counts.without_time += 1;
        }
        if let Some(t) = own_ts {
            room.last_ts = Some(t);
        }
        if skip {
            return Ok(());
        }
        let event = Value::Object(parsed.fields);
        let results = {
            let ev = JsonEvent::borrow(&event);
            match ts {
                Some(t) => room.engine.process_event_at(&ev, t),
                // No time at all: detections only; no window state is touched.
                None => room.engine.evaluate(&ev),
            }
        };
        let Value::Object(fields) = event else {
            return Ok(());
        };
        let log = LogPos {
            file: pos.file.to_vec(),
            offset: pos.offset,
        };
        let time = own_ts.and_then(rfc3339);
        let masked = || super::mask::fields(&fields);
        for r in results {
            let rule = r
                .header
                .rule_id
                .clone()
                .unwrap_or_else(|| r.header.rule_title.clone());
            let correlation = r.as_correlation().map(|c| Correlation {
                kind: c.correlation_type.as_str().to_string(),
                count: c.aggregated_value,
                window_secs: c.timespan_secs,
                group_by: c
                    .group_key
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(super::mask::mask_value(v))))
                    .collect(),
            });
            out.push(LogFinding {
                rule,
                title: r.header.rule_title.clone(),
                severity: severity(r.header.level),
                source: room.src.name.clone(),
                log: log.clone(),
                time: time.clone(),
                fields: if correlation.is_some() {
                    Map::new()
                } else {
                    masked()
                },
                correlation,
            });
        }
        let Some(t) = own_ts else { return Ok(()) };
        if let Some(h) = &room.src.hours {
            if !h.inside(t) {
                out.push(LogFinding {
                    rule: HOURS_RULE.into(),
                    title: format!("Activity outside business hours ({})", h.tz_name),
                    severity: "medium",
                    source: room.src.name.clone(),
                    log: log.clone(),
                    time: time.clone(),
                    fields: masked(),
                    correlation: None,
                });
            }
        }
        if room.src.first_seen.is_empty() {
            return Ok(());
        }
        let start = self.state.source_start(&room.src.name, t)?;
        for fs in &room.src.first_seen {
            let Some(v) = lookup(&fields, &fs.field) else {
                continue;
            };
            let known = self.state.seen_before(&room.src.name, &fs.field, &v, t)?;
            if !known && t >= start.saturating_add(fs.learn_secs) {
                let mut f = masked();
                f.insert("first_seen.field".into(), Value::String(fs.field.clone()));
                out.push(LogFinding {
                    rule: FIRST_SEEN_RULE.into(),
                    title: format!("First {} never seen while learning", fs.field),
                    severity: "medium",
                    source: room.src.name.clone(),
                    log: log.clone(),
                    time: time.clone(),
                    fields: f,
                    correlation: None,
                });
            }
        }
        Ok(())
    }

    /// Commit learned state.
    pub fn finish(&mut self) -> Result<()> {
        self.state.commit()
    }
}

/// A field by dotted name (a flat key wins, as in rsigma), as text.
fn lookup(m: &Map<String, Value>, name: &str) -> Option<String> {
    let v = m.get(name).or_else(|| {
        let mut cur = m;
        let mut parts = name.split('.').peekable();
        while let Some(p) = parts.next() {
            let v = cur.get(p)?;
            if parts.peek().is_none() {
                return Some(v);
            }
            cur = v.as_object()?;
        }
        None
    })?;
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
