//! The `logs:` and `rules:` keys of the policy: the serde mirror (with positions) and their
//! compilation into [`LogSource`]s. Pure: no file is opened here; a glob is only checked for
//! shape, a time zone only looked up in the compiled-in tz database.

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use std::collections::HashSet;

/// One `logs:` entry as typed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogSource {
    pub name: Spanned<String>,
    pub source: Spanned<RawSourceKind>,
    #[serde(default)]
    pub format: Option<Spanned<Format>>,
    /// `format: regex`: the pattern with named captures.
    #[serde(default)]
    pub pattern: Option<Spanned<String>>,
    #[serde(default)]
    pub logsource: Option<Spanned<RawLogsource>>,
    #[serde(default)]
    pub hours: Option<Spanned<RawHours>>,
    #[serde(default)]
    pub first_seen: Option<Spanned<OneOrManyFirstSeen>>,
}

/// Where the lines come from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RawSourceKind {
    File(Spanned<String>),
    Journald(RawJournald),
    Syslog(Spanned<String>),
}

/// `journald:` selector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJournald {
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default, rename = "match")]
    pub matches: Option<String>,
}

/// The Sigma logsource a source feeds.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawLogsource {
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
}

/// Line formats.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Auto,
    Json,
    Syslog,
    Pgaudit,
    MariadbAudit,
    Logfmt,
    Cef,
    Regex,
}

/// `hours:` as typed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHours {
    pub tz: Spanned<String>,
    #[serde(default)]
    pub days: Option<Vec<Spanned<Weekday>>>,
    pub start: Spanned<String>,
    pub end: Spanned<String>,
}

/// A day of the week, as `hours.days` spells it.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    fn index(self) -> u8 {
        match self {
            Weekday::Mon => 1,
            Weekday::Tue => 2,
            Weekday::Wed => 3,
            Weekday::Thu => 4,
            Weekday::Fri => 5,
            Weekday::Sat => 6,
            Weekday::Sun => 7,
        }
    }
}

/// `first_seen:` as typed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFirstSeen {
    pub field: Spanned<String>,
    pub learn: Spanned<String>,
}

/// One mapping or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrManyFirstSeen {
    One(RawFirstSeen),
    Many(Vec<RawFirstSeen>),
}

/// Where a compiled source reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A glob; rotated `.gz` files are matched only when the pattern names `.gz` itself.
    File(String),
    /// Declared and validated; not read by `logs scan`.
    Journald {
        unit: Option<String>,
        matches: Option<String>,
    },
    /// A local socket path; declared and validated, not read by `logs scan`.
    Syslog(String),
}

/// Business hours in a time zone.
#[derive(Clone, Debug)]
pub struct Hours {
    pub tz_name: String,
    pub tz: jiff::tz::TimeZone,
    /// ISO weekdays (1 = Monday) that are working days.
    pub days: Vec<u8>,
    /// Minutes after midnight, start inclusive, end exclusive.
    pub start_min: u16,
    pub end_min: u16,
}

impl Hours {
    /// Whether `ts` (Unix seconds) falls inside business hours.
    pub fn inside(&self, ts: i64) -> bool {
        let Ok(t) = jiff::Timestamp::from_second(ts) else {
            return false;
        };
        let z = t.to_zoned(self.tz.clone());
        let day = z.weekday().to_monday_one_offset() as u8;
        let min = z.hour() as u16 * 60 + z.minute() as u16;
        self.days.contains(&day) && min >= self.start_min && min < self.end_min
    }
}

/// A first-seen condition: a value of `field` not seen during `learn_secs` from the source's
/// first event is an alert (and then remembered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirstSeen {
    pub field: String,
    pub learn_secs: i64,
}

/// A compiled `logs:` entry.
#[derive(Clone, Debug)]
pub struct LogSource {
    pub name: String,
    pub kind: SourceKind,
    pub format: Format,
    pub regex: Option<regex::Regex>,
    pub logsource: RawLogsource,
    pub hours: Option<Hours>,
    pub first_seen: Vec<FirstSeen>,
}

/// Parse `learn:` durations: `30m`, `12h`, `7d`, `2w`.
pub fn parse_duration_secs(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(mul)
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
}

/// Compile `logs:`; every problem goes to `report`.
pub fn compile_logs(
    raw: &[RawLogSource],
    report: &mut dyn FnMut(&Location, String),
) -> Vec<LogSource> {
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for r in raw {
        let mut ok = true;
        let mut fail = |l: &Location, m: String| {
            ok = false;
            report(l, m);
        };
        let name = r.name.value.clone();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            fail(
                &r.name.referenced,
                format!("log source name `{name}` is invalid; expected letters, digits, `-`, `_` or `.`"),
            );
        } else if !names.insert(name.clone()) {
            fail(
                &r.name.referenced,
                format!("duplicate log source name `{name}`; expected each name once"),
            );
        }
        let kind = match &r.source.value {
            RawSourceKind::File(p) => {
                if !p.value.starts_with('/') {
                    fail(
                        &p.referenced,
                        format!("log file `{}` is not absolute; expected a path or glob starting with `/`", p.value),
                    );
                } else if let Err(e) = super::glob::Pattern::new(&p.value) {
                    fail(&p.referenced, e.0);
                }
                SourceKind::File(p.value.clone())
            }
            RawSourceKind::Journald(j) => {
                if j.unit.is_none() && j.matches.is_none() {
                    fail(
                        &r.source.referenced,
                        "`journald` selects nothing; expected `unit:` or `match:`".into(),
                    );
                }
                SourceKind::Journald {
                    unit: j.unit.clone(),
                    matches: j.matches.clone(),
                }
            }
            RawSourceKind::Syslog(p) => {
                if !p.value.starts_with('/') {
                    fail(
                        &p.referenced,
                        "syslog socket path is not absolute; expected e.g. /run/kmsentry/syslog.sock".into(),
                    );
                }
                SourceKind::Syslog(p.value.clone())
            }
        };
        let format = r.format.as_ref().map_or(Format::Auto, |f| f.value);
        let regex = match (&r.pattern, format) {
            (Some(p), Format::Regex) => match regex::Regex::new(&p.value) {
                Ok(re) if re.capture_names().flatten().next().is_some() => Some(re),
                Ok(_) => {
                    fail(
                        &p.referenced,
                        "pattern has no named capture; expected `(?P<name>…)` groups".into(),
                    );
                    None
                }
                Err(e) => {
                    fail(&p.referenced, format!("pattern is not a valid regex: {e}"));
                    None
                }
            },
            (None, Format::Regex) => {
                let at = r
                    .format
                    .as_ref()
                    .map_or(&r.name.referenced, |f| &f.referenced);
                fail(
                    at,
                    "`format: regex` needs `pattern:` with named captures".into(),
                );
                None
            }
            (Some(p), _) => {
                fail(
                    &p.referenced,
                    "`pattern` applies only to `format: regex`".into(),
                );
                None
            }
            (None, _) => None,
        };
        let hours = r.hours.as_ref().and_then(|h| {
            let h = &h.value;
            let tz = match jiff::tz::TimeZone::get(&h.tz.value) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    fail(
                        &h.tz.referenced,
                        format!(
                            "unknown time zone `{}`; expected an IANA name such as Europe/Berlin",
                            h.tz.value
                        ),
                    );
                    None
                }
            };
            let start = parse_hhmm(&h.start.value);
            if start.is_none() {
                fail(
                    &h.start.referenced,
                    format!("`{}` is not a time; expected HH:MM", h.start.value),
                );
            }
            let end = parse_hhmm(&h.end.value);
            if end.is_none() {
                fail(
                    &h.end.referenced,
                    format!("`{}` is not a time; expected HH:MM", h.end.value),
                );
            }
            if let (Some(s), Some(e)) = (start, end) {
                if s >= e {
                    fail(
                        &h.end.referenced,
                        "`end` is not after `start`; expected e.g. start 08:00, end 18:00".into(),
                    );
                }
            }
            let days = match &h.days {
                None => vec![1, 2, 3, 4, 5],
                Some(d) => d.iter().map(|d| d.value.index()).collect(),
            };
            Some(Hours {
                tz_name: h.tz.value.clone(),
                tz: tz?,
                days,
                start_min: start?,
                end_min: end?,
            })
        });
        let mut first_seen = Vec::new();
        let list: Vec<&RawFirstSeen> = match r.first_seen.as_ref().map(|f| &f.value) {
            None => Vec::new(),
            Some(OneOrManyFirstSeen::One(f)) => vec![f],
            Some(OneOrManyFirstSeen::Many(v)) => v.iter().collect(),
        };
        // Inside the untagged one-or-list form serde keeps no positions; fall back to the
        // `first_seen` key's own, else the entry's `name`.
        let outer = r
            .first_seen
            .as_ref()
            .map(|f| f.referenced)
            .filter(|o| o.line() > 0);
        let name_at = r.name.referenced;
        let at = |l: &Location| match outer {
            _ if l.line() > 0 => *l,
            Some(o) => o,
            None => name_at,
        };
        for f in list {
            if f.field.value.is_empty() {
                fail(
                    &at(&f.field.referenced),
                    "`field` is empty; expected an event field such as auth.display_name".into(),
                );
            }
            match parse_duration_secs(&f.learn.value) {
                Some(secs) => first_seen.push(FirstSeen {
                    field: f.field.value.clone(),
                    learn_secs: secs,
                }),
                None => fail(
                    &at(&f.learn.referenced),
                    format!(
                        "`{}` is not a duration; expected e.g. 7d, 12h or 30m",
                        f.learn.value
                    ),
                ),
            }
        }
        if ok {
            out.push(LogSource {
                name,
                kind,
                format,
                regex,
                logsource: r
                    .logsource
                    .as_ref()
                    .map(|l| l.value.clone())
                    .unwrap_or_default(),
                hours,
                first_seen,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration_secs("7d"), Some(604_800));
        assert_eq!(parse_duration_secs("30m"), Some(1800));
        assert_eq!(parse_duration_secs("7"), None);
        assert_eq!(parse_duration_secs("d"), None);
        assert_eq!(parse_duration_secs("3y"), None);
    }

    #[test]
    fn hours_judge_in_the_zone() {
        let h = Hours {
            tz_name: "Europe/Berlin".into(),
            tz: jiff::tz::TimeZone::get("Europe/Berlin").unwrap(),
            days: vec![1, 2, 3, 4, 5],
            start_min: 8 * 60,
            end_min: 18 * 60,
        };
        // 2026-12-02 (Wednesday) 09:00 UTC = 10:00 Berlin.
        let wed = jiff::Timestamp::from_second(1_796_202_000).unwrap();
        assert_eq!(wed.to_zoned(jiff::tz::TimeZone::UTC).hour(), 9);
        assert!(h.inside(wed.as_second()));
        // 01:00 UTC = 02:00 Berlin.
        assert!(!h.inside(wed.as_second() - 8 * 3600));
        // Saturday.
        assert!(!h.inside(wed.as_second() + 3 * 86_400));
    }
}
