//! Line parsers: bytes in, an event (a JSON object of fields) and its own timestamp out.
//! Never panics and never fails a run: a line that does not parse is a [`Skip`] the caller
//! counts. Invalid UTF-8 is kept as `\xNN` text (counted as lossy), NUL bytes likewise.

use crate::policy::logs::Format;
use serde_json::{Map, Value};

/// A parsed line.
#[derive(Debug)]
pub struct Parsed {
    pub fields: Map<String, Value>,
    /// The event's own time (Unix seconds), when the line carries one.
    pub ts: Option<i64>,
    /// The line had bytes that are not UTF-8 (or NUL) and was read lossily.
    pub lossy: bool,
}

/// Why a line produced no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    Empty,
    Unparseable,
}

/// Text from bytes: valid UTF-8 borrowed as is; anything else (and NUL) as `\xNN`.
pub fn text(b: &[u8]) -> (std::borrow::Cow<'_, str>, bool) {
    match std::str::from_utf8(b) {
        Ok(s) if !s.contains('\0') => (std::borrow::Cow::Borrowed(s), false),
        _ => {
            let mut out = String::with_capacity(b.len() + 8);
            for c in b.utf8_chunks() {
                for ch in c.valid().chars() {
                    if ch == '\0' {
                        out.push_str("\\x00");
                    } else {
                        out.push(ch);
                    }
                }
                for x in c.invalid() {
                    out.push_str(&format!("\\x{x:02x}"));
                }
            }
            (std::borrow::Cow::Owned(out), true)
        }
    }
}

/// Guess the format of a line (`auto`).
pub fn sniff(line: &str) -> Format {
    let t = line.trim_start();
    if t.starts_with('{') {
        return Format::Json;
    }
    if t.starts_with("CEF:") || t.contains(" CEF:") {
        return Format::Cef;
    }
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    if digits(0..8) && b.get(8) == Some(&b' ') && b.get(17) == Some(&b',') {
        return Format::MariadbAudit;
    }
    if digits(0..4) && b.get(4) == Some(&b'-') && b.get(10) == Some(&b' ') && t.contains(" [") {
        return Format::Pgaudit;
    }
    if t.starts_with('<') || month(b).is_some() || (digits(0..4) && b.get(10) == Some(&b'T')) {
        return Format::Syslog;
    }
    if logfmt_like(t) {
        return Format::Logfmt;
    }
    Format::Syslog
}

/// At least two `key=value` tokens, keys made of word characters.
fn logfmt_like(t: &str) -> bool {
    t.split(' ')
        .filter(|w| {
            w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
            })
        })
        .count()
        >= 2
}

/// Parse one line in `format` (`auto` sniffs the line itself).
pub fn parse(format: Format, regex: Option<&regex::Regex>, line: &[u8]) -> Result<Parsed, Skip> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(Skip::Empty);
    }
    let (s, lossy) = text(line);
    let format = if format == Format::Auto {
        sniff(&s)
    } else {
        format
    };
    let (fields, ts) = match format {
        Format::Json | Format::Auto => json(line, &s)?,
        Format::Syslog => syslog(&s),
        Format::Pgaudit => pg(&s).ok_or(Skip::Unparseable)?,
        Format::MariadbAudit => mariadb(&s).ok_or(Skip::Unparseable)?,
        Format::Logfmt => {
            let mut m = Map::new();
            for (k, v) in logfmt(&s) {
                m.insert(k, Value::String(v));
            }
            if m.is_empty() {
                return Err(Skip::Unparseable);
            }
            let ts = ts_from_fields(&m);
            (m, ts)
        }
        Format::Cef => cef(&s).ok_or(Skip::Unparseable)?,
        Format::Regex => {
            let re = regex.ok_or(Skip::Unparseable)?;
            let caps = re.captures(&s).ok_or(Skip::Unparseable)?;
            let mut m = Map::new();
            for name in re.capture_names().flatten() {
                if let Some(c) = caps.name(name) {
                    m.insert(name.to_string(), Value::String(c.as_str().to_string()));
                }
            }
            let ts = ts_from_fields(&m);
            (m, ts)
        }
    };
    Ok(Parsed { fields, ts, lossy })
}

/// For a line no rule can match: only whether it parses and its own time, exactly as
/// [`parse`] would find them, without building its fields. `None`: no such path for `format`
/// (or the line is one the short path cannot settle, e.g. JSON with a repeated time key).
pub fn stamp(format: Format, line: &[u8]) -> Option<Result<Parsed, Skip>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Some(Err(Skip::Empty));
    }
    let s = std::str::from_utf8(line)
        .ok()
        .filter(|s| !s.contains('\0'))?;
    let ts = match format {
        Format::Syslog => Ok(syslog_ts(s)),
        Format::Pgaudit => pg_ts(s).ok_or(Skip::Unparseable),
        Format::Json => json_ts(line)?,
        _ => return None,
    };
    Some(ts.map(|ts| Parsed {
        fields: Map::new(),
        ts,
        lossy: false,
    }))
}

/// [`syslog`]'s time alone.
fn syslog_ts(s: &str) -> Option<i64> {
    let mut rest = s;
    if let Some(r) = rest.strip_prefix('<') {
        if let Some(end) = r.find('>') {
            if r[..end].parse::<u8>().is_ok() {
                rest = &r[end + 1..];
            }
        }
    }
    if let Some(r) = rest.strip_prefix("1 ") {
        return r.split(' ').next().and_then(parse_time);
    }
    if let Some((t, _)) = bsd_time(rest) {
        return Some(t);
    }
    if rest.len() > 20 && rest.as_bytes()[10] == b'T' {
        let (t, _) = rest.split_once(' ').unwrap_or((rest, ""));
        return parse_time(t);
    }
    None
}

/// [`pg`]'s time alone (`None`: the line does not parse).
fn pg_ts(s: &str) -> Option<Option<i64>> {
    let open = s.find(" [")?;
    let ts = parse_time(&s[..open]);
    let r = &s[open + 2..];
    let close = r.find(']')?;
    r[close + 1..].trim_start().split_once(":  ")?;
    Some(ts)
}

/// The time keys of a JSON object; a repeated one makes serde fail, and then the full
/// parse (whose map keeps the last) decides.
#[derive(serde::Deserialize)]
struct TimeKeys {
    #[serde(rename = "@timestamp")]
    at_timestamp: Option<Value>,
    timestamp: Option<Value>,
    time: Option<Value>,
    #[serde(rename = "eventTime")]
    event_time: Option<Value>,
    ts: Option<Value>,
    asctime: Option<Value>,
    date: Option<Value>,
    rt: Option<Value>,
    #[serde(rename = "EventTime")]
    event_time2: Option<Value>,
}

/// [`json`]'s validity and time alone; `None` when the short path cannot tell.
fn json_ts(raw: &[u8]) -> Option<Result<Option<i64>, Skip>> {
    if !raw.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    let k: TimeKeys = serde_json::from_slice(raw).ok()?;
    let mut m = Map::new();
    for (name, v) in TIME_FIELDS.iter().zip([
        k.at_timestamp,
        k.timestamp,
        k.time,
        k.event_time,
        k.ts,
        k.asctime,
        k.date,
        k.rt,
        k.event_time2,
    ]) {
        if let Some(v) = v {
            m.insert((*name).to_string(), v);
        }
    }
    Some(Ok(ts_from_fields(&m)))
}

fn json(raw: &[u8], s: &str) -> Result<(Map<String, Value>, Option<i64>), Skip> {
    // Parse the bytes when they are clean UTF-8; else the lossy text.
    let v: Value = match std::str::from_utf8(raw) {
        Ok(_) => serde_json::from_slice(raw),
        Err(_) => serde_json::from_str(s),
    }
    .map_err(|_| Skip::Unparseable)?;
    match v {
        Value::Object(m) => {
            let ts = ts_from_fields(&m);
            Ok((m, ts))
        }
        _ => Err(Skip::Unparseable),
    }
}

/// Field names that carry an event's time, in the order they are tried.
pub const TIME_FIELDS: [&str; 9] = [
    "@timestamp",
    "timestamp",
    "time",
    "eventTime",
    "ts",
    "asctime",
    "date",
    "rt",
    "EventTime",
];

fn ts_from_fields(m: &Map<String, Value>) -> Option<i64> {
    TIME_FIELDS.iter().find_map(|k| match m.get(*k)? {
        Value::String(s) => parse_time(s),
        Value::Number(n) => {
            let f = n.as_f64()?;
            Some(if f > 1e12 {
                (f / 1000.0) as i64
            } else {
                f as i64
            })
        }
        _ => None,
    })
}

/// RFC 3339, `YYYY-MM-DD HH:MM:SS[.f][ TZ]` (UTC when no zone), `YYYYMMDD HH:MM:SS`, epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_second());
    }
    if let Ok(n) = s.parse::<f64>() {
        if n > 1e8 {
            return Some(if n > 1e12 {
                (n / 1000.0) as i64
            } else {
                n as i64
            });
        }
    }
    let b = s.as_bytes();
    // YYYYMMDD HH:MM:SS (MariaDB audit).
    let s2;
    let s = if b.len() >= 17 && b[8] == b' ' && b[..8].iter().all(u8::is_ascii_digit) {
        s2 = format!("{}-{}-{}{}", &s[..4], &s[4..6], &s[6..8], &s[8..]);
        s2.as_str()
    } else {
        s
    };
    let (dt, zone) = match s.get(19..) {
        Some(rest) => {
            let frac = rest
                .strip_prefix(['.', ','])
                .map_or(0, |r| r.bytes().take_while(u8::is_ascii_digit).count() + 1);
            (s.get(..19 + frac)?, rest[frac..].trim())
        }
        None => (s, ""),
    };
    let dt: jiff::civil::DateTime = dt.replace(',', ".").parse().ok()?;
    let tz = match zone {
        "" | "UTC" | "GMT" | "Z" => jiff::tz::TimeZone::UTC,
        z => match fixed_offset(z) {
            Some(secs) => jiff::tz::TimeZone::fixed(jiff::tz::Offset::from_seconds(secs).ok()?),
            None => jiff::tz::TimeZone::get(z).ok()?,
        },
    };
    Some(dt.to_zoned(tz).ok()?.timestamp().as_second())
}

/// `+01:00`, `-0530`, `+02` as seconds east of UTC.
fn fixed_offset(z: &str) -> Option<i32> {
    let sign = match z.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let d: String = z[1..].chars().filter(|c| *c != ':').collect();
    if !d.bytes().all(|c| c.is_ascii_digit()) || !matches!(d.len(), 2 | 4) {
        return None;
    }
    let h: i32 = d[..2].parse().ok()?;
    let m: i32 = d.get(2..).map_or(Ok(0), str::parse).ok()?;
    Some(sign * (h * 3600 + m * 60))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn month(b: &[u8]) -> Option<i8> {
    let m = b.get(..3)?;
    (b.get(3) == Some(&b' '))
        .then(|| MONTHS.iter().position(|x| x.as_bytes() == m))
        .flatten()
        .map(|i| i as i8 + 1)
}

/// RFC 3164 time (`Dec  2 17:00:00`) has no year: the current year, or the previous one when
/// that would put the line more than a day in the future.
fn bsd_time(s: &str) -> Option<(i64, usize)> {
    let b = s.as_bytes();
    let mon = month(b)?;
    let day: i8 = s.get(4..6)?.trim().parse().ok()?;
    let hms = s.get(7..15)?;
    let t: jiff::civil::Time = hms.parse().ok()?;
    let now = jiff::Timestamp::now();
    let year = now.to_zoned(jiff::tz::TimeZone::UTC).year();
    let mk = |y: i16| {
        jiff::civil::Date::new(y, mon, day)
            .ok()
            .map(|d| d.to_datetime(t))
            .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|z| z.timestamp().as_second())
    };
    let mut ts = mk(year)?;
    if ts > now.as_second() + 86_400 {
        ts = mk(year - 1)?;
    }
    Some((ts, 15))
}

/// RFC 5424, RFC 3164 (with or without `<PRI>`), the RFC 3339 file format rsyslog writes,
/// or a bare message (sshd -E): whatever header is present becomes fields.
fn syslog(s: &str) -> (Map<String, Value>, Option<i64>) {
    let mut m = Map::new();
    let mut rest = s;
    if let Some(r) = rest.strip_prefix('<') {
        if let Some(end) = r.find('>') {
            if let Ok(pri) = r[..end].parse::<u8>() {
                m.insert("facility".into(), Value::from(pri >> 3));
                m.insert("severity".into(), Value::from(pri & 7));
                rest = &r[end + 1..];
            }
        }
    }
    let mut ts = None;
    if let Some(r) = rest.strip_prefix("1 ") {
        // RFC 5424: TS HOST APP PROCID MSGID SD MSG
        let mut it = r.splitn(6, ' ');
        let (t, host, app, pid, msgid) = (it.next(), it.next(), it.next(), it.next(), it.next());
        ts = t.and_then(parse_time);
        for (k, v) in [
            ("host", host),
            ("program", app),
            ("pid", pid),
            ("msgid", msgid),
        ] {
            if let Some(v) = v.filter(|v| *v != "-") {
                m.insert(k.into(), Value::String(v.into()));
            }
        }
        let mut msg = it.next().unwrap_or("");
        if let Some(sd) = msg.strip_prefix("- ") {
            msg = sd;
        } else if msg == "-" {
            msg = "";
        } else if msg.starts_with('[') {
            let end = sd_end(msg);
            m.insert("structured_data".into(), Value::String(msg[..end].into()));
            msg = msg[end..].trim_start();
        }
        m.insert(
            "message".into(),
            Value::String(msg.trim_start_matches('\u{feff}').into()),
        );
        return (m, ts);
    }
    let header = if let Some((t, n)) = bsd_time(rest) {
        ts = Some(t);
        Some(&rest[n..])
    } else if rest.len() > 20 && rest.as_bytes()[10] == b'T' {
        let (t, r) = rest.split_once(' ').unwrap_or((rest, ""));
        ts = parse_time(t);
        ts.map(|_| r)
    } else {
        None
    };
    let mut msg = rest;
    if let Some(h) = header {
        let h = h.trim_start();
        if let Some((host, tail)) = h.split_once(' ') {
            m.insert("host".into(), Value::String(host.into()));
            msg = tail;
            if let Some((tag, body)) = tail.split_once(": ") {
                if !tag.contains(' ') {
                    let (prog, pid) = match tag.split_once('[') {
                        Some((p, pid)) => (p, pid.strip_suffix(']')),
                        None => (tag, None),
                    };
                    m.insert("program".into(), Value::String(prog.into()));
                    if let Some(pid) = pid {
                        m.insert("pid".into(), Value::String(pid.into()));
                    }
                    msg = body;
                }
            }
        }
    }
    m.insert("message".into(), Value::String(msg.into()));
    (m, ts)
}

fn sd_end(s: &str) -> usize {
    let b = s.as_bytes();
    let (mut i, mut depth, mut quoted) = (0, 0i32, false);
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'[' if !quoted => depth += 1,
            b']' if !quoted => {
                depth -= 1;
                if depth == 0 && b.get(i + 1) != Some(&b'[') {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// PostgreSQL stderr log with the default `%m [%p] ` prefix (also `%t`, and `user@db`
/// after the pid); pgaudit's `AUDIT:` CSV becomes fields.
fn pg(s: &str) -> Option<(Map<String, Value>, Option<i64>)> {
    let open = s.find(" [")?;
    let ts = parse_time(&s[..open]);
    let r = &s[open + 2..];
    let close = r.find(']')?;
    let mut m = Map::new();
    m.insert("pid".into(), Value::String(r[..close].into()));
    let r = r[close + 1..].trim_start();
    let (prefix, body) = r.split_once(":  ")?;
    let level = match prefix.rsplit_once(' ') {
        Some((who, lvl)) => {
            if let Some((u, d)) = who.split_once('@') {
                m.insert("user".into(), Value::String(u.into()));
                m.insert("database".into(), Value::String(d.into()));
            }
            lvl
        }
        None => prefix,
    };
    m.insert("level".into(), Value::String(level.into()));
    m.insert("message".into(), Value::String(body.into()));
    if let Some(a) = body.strip_prefix("AUDIT: ") {
        let cols = csv(a);
        let names = [
            "audit_type",
            "statement_id",
            "substatement_id",
            "class",
            "command",
            "object_type",
            "object_name",
            "statement",
            "parameter",
        ];
        for (k, v) in names.iter().zip(cols) {
            m.insert((*k).into(), Value::String(v));
        }
    }
    Some((m, ts))
}

/// MariaDB server_audit: `timestamp,serverhost,username,host,connectionid,queryid,operation,
/// database,object,retcode`; the object (a query) is single-quoted with `\'` escapes.
fn mariadb(s: &str) -> Option<(Map<String, Value>, Option<i64>)> {
    let mut cols = Vec::new();
    let mut r = s;
    for _ in 0..8 {
        let (c, rest) = r.split_once(',')?;
        cols.push(c.to_string());
        r = rest;
    }
    // object and retcode: retcode is after the last comma.
    let (object, retcode) = r.rsplit_once(',').unwrap_or((r, ""));
    let object = object
        .strip_prefix('\'')
        .and_then(|o| o.strip_suffix('\''))
        .map_or(object.to_string(), |o| o.replace("\\'", "'"));
    let mut m = Map::new();
    let names = [
        "timestamp",
        "serverhost",
        "username",
        "host",
        "connectionid",
        "queryid",
        "operation",
        "database",
    ];
    for (k, v) in names.iter().zip(cols) {
        m.insert((*k).into(), Value::String(v));
    }
    m.insert("object".into(), Value::String(object));
    m.insert("retcode".into(), Value::String(retcode.into()));
    let ts = m
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(parse_time);
    Some((m, ts))
}

/// A CSV record (double quotes, `""` escapes), as pgaudit writes it.
fn csv(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// logfmt pairs: `key=value`, `key="quoted \" value"`; a bare key is `true`.
pub fn logfmt(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        if i == ks {
            i += 1;
            continue;
        }
        let key = &s[ks..i];
        if i >= b.len() || b[i] == b' ' {
            out.push((key.to_string(), "true".into()));
            continue;
        }
        i += 1;
        let mut val = String::new();
        if b.get(i) == Some(&b'"') {
            i += 1;
            let start = i;
            let mut esc = false;
            while i < b.len() && (esc || b[i] != b'"') {
                esc = !esc && b[i] == b'\\';
                i += 1;
            }
            val.push_str(&s[start..i.min(b.len())].replace("\\\"", "\""));
            i += 1;
        } else {
            let start = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            val.push_str(&s[start..i]);
        }
        out.push((key.to_string(), val));
    }
    out
}

/// CEF: `CEF:Version|Vendor|Product|Version|SignatureID|Name|Severity|ext`, possibly after a
/// syslog header; extension values run until the next ` key=`.
fn cef(s: &str) -> Option<(Map<String, Value>, Option<i64>)> {
    let at = s.find("CEF:")?;
    let mut m = Map::new();
    let mut ts = None;
    if at > 0 {
        let (h, t) = syslog(s[..at].trim_end());
        ts = t;
        for k in ["host", "program"] {
            if let Some(v) = h.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
    }
    let body = &s[at + 4..];
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = body.chars();
    while parts.len() < 7 {
        match chars.next()? {
            '\\' => cur.push(chars.next()?),
            '|' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    let ext: String = chars.collect();
    let names = [
        "cefVersion",
        "deviceVendor",
        "deviceProduct",
        "deviceVersion",
        "signatureId",
        "name",
        "severity",
    ];
    for (k, v) in names.iter().zip(parts) {
        m.insert((*k).into(), Value::String(v));
    }
    // Keys are \w+ followed by '='; a value runs to the next such key.
    let key_at: Vec<(usize, usize)> = {
        let b = ext.as_bytes();
        let mut v = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if i == 0 || b[i - 1] == b' ' {
                let ks = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.')
                {
                    i += 1;
                }
                if i > ks
                    && b.get(i) == Some(&b'=')
                    && (ks == 0 || b.get(ks.wrapping_sub(2)) != Some(&b'\\'))
                {
                    v.push((ks, i));
                }
            }
            i += 1;
        }
        v
    };
    for (n, (ks, ke)) in key_at.iter().enumerate() {
        let end = key_at
            .get(n + 1)
            .map_or(ext.len(), |(s, _)| s.saturating_sub(1));
        let val = ext.get(ke + 1..end.max(ke + 1)).unwrap_or("");
        m.insert(
            ext[*ks..*ke].to_string(),
            Value::String(val.replace("\\=", "=").replace("\\\\", "\\")),
        );
    }
    if ts.is_none() {
        ts = ts_from_fields(&m);
    }
    Some((m, ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(f: Format, s: &[u8]) -> Parsed {
        parse(f, None, s).unwrap()
    }

    #[test]
    fn json_lines_and_truncated_json() {
        let e = p(
            Format::Json,
            br#"{"time":"2026-12-02T17:00:00Z","type":"request","auth":{"display_name":"app"}}"#,
        );
        assert_eq!(e.ts, Some(1_796_230_800));
        assert_eq!(e.fields["auth"]["display_name"], "app");
        assert_eq!(
            parse(Format::Json, None, br#"{"time":"2026-1"#).unwrap_err(),
            Skip::Unparseable
        );
        assert_eq!(
            parse(Format::Json, None, b"[1,2]").unwrap_err(),
            Skip::Unparseable
        );
    }

    #[test]
    fn syslog_rfc5424_and_rfc3164_and_rsyslog_file_format() {
        let e = p(
            Format::Syslog,
            b"<38>1 2026-12-02T17:00:00.5Z kms1 sshd 812 - [x@1 a=\"b]\"] Failed password for root",
        );
        assert_eq!(e.ts, Some(1_796_230_800));
        assert_eq!(e.fields["program"], "sshd");
        assert_eq!(e.fields["message"], "Failed password for root");
        let e = p(
            Format::Syslog,
            b"<38>Dec  2 17:00:00 kms1 sshd[812]: Accepted password for bob",
        );
        assert_eq!(e.fields["pid"], "812");
        assert_eq!(e.fields["host"], "kms1");
        assert!(e.ts.is_some());
        let e = p(
            Format::Syslog,
            b"2026-12-02T17:00:00.123456+01:00 kms1 sudo: bob : 3 incorrect password attempts",
        );
        assert_eq!(e.ts, Some(1_796_227_200));
        assert_eq!(e.fields["program"], "sudo");
        let e = p(
            Format::Syslog,
            b"Failed password for invalid user x from 127.0.0.1 port 5 ssh2",
        );
        assert_eq!(e.ts, None);
        assert_eq!(
            e.fields["message"],
            "Failed password for invalid user x from 127.0.0.1 port 5 ssh2"
        );
    }

    #[test]
    fn pgaudit_records_become_fields() {
        let e = p(Format::Auto, b"2026-12-02 17:00:00.123 UTC [4242] LOG:  AUDIT: SESSION,1,1,ROLE,ALTER ROLE,,,\"ALTER ROLE admin PASSWORD 'x,y'\",<not logged>");
        assert_eq!(e.ts, Some(1_796_230_800));
        assert_eq!(e.fields["class"], "ROLE");
        assert_eq!(e.fields["command"], "ALTER ROLE");
        assert_eq!(e.fields["statement"], "ALTER ROLE admin PASSWORD 'x,y'");
    }

    #[test]
    fn mariadb_audit_csv() {
        let e = p(Format::Auto, b"20261202 17:00:00,db1,root,localhost,5,12,QUERY,,'SET PASSWORD FOR \\'app\\'@\\'%\\' = PASSWORD(\\'s\\')',0");
        assert_eq!(e.ts, Some(1_796_230_800));
        assert_eq!(e.fields["operation"], "QUERY");
        assert_eq!(e.fields["username"], "root");
        assert!(e.fields["object"]
            .as_str()
            .unwrap()
            .starts_with("SET PASSWORD FOR 'app'"));
    }

    #[test]
    fn logfmt_cef_and_regex() {
        let e = p(
            Format::Logfmt,
            br#"ts=2026-12-02T17:00:00Z level=error msg="key not found" key=k1 debug"#,
        );
        assert_eq!(e.fields["msg"], "key not found");
        assert_eq!(e.fields["debug"], "true");
        assert_eq!(e.ts, Some(1_796_230_800));
        let e = p(Format::Auto, br"CEF:0|Thales|CipherTrust|2.1|KEY_EXPORT|Key exported|8|suser=alice msg=export of k1 cs1=a\=b");
        assert_eq!(e.fields["signatureId"], "KEY_EXPORT");
        assert_eq!(e.fields["suser"], "alice");
        assert_eq!(e.fields["msg"], "export of k1");
        assert_eq!(e.fields["cs1"], "a=b");
        let re = regex::Regex::new(r"^(?P<user>\w+) did (?P<what>.+)$").unwrap();
        let e = parse(Format::Regex, Some(&re), b"bob did decrypt").unwrap();
        assert_eq!(e.fields["what"], "decrypt");
        assert_eq!(
            parse(Format::Regex, Some(&re), b"nothing").unwrap_err(),
            Skip::Unparseable
        );
    }

    #[test]
    fn auto_sniffs_each_shape() {
        assert_eq!(sniff("{\"a\":1}"), Format::Json);
        assert_eq!(sniff("level=info msg=x"), Format::Logfmt);
        assert_eq!(
            sniff("2026-12-02 10:00:00,123 - kmip.server - INFO - a=b c"),
            Format::Syslog
        );
        assert_eq!(
            sniff("<13>1 2026-12-02T10:00:00Z h a - - - m"),
            Format::Syslog
        );
        assert_eq!(sniff("Dec  2 10:00:00 h sshd[1]: m"), Format::Syslog);
        assert_eq!(
            sniff("20261202 10:00:00,h,u,l,1,2,QUERY,,'x',0"),
            Format::MariadbAudit
        );
        assert_eq!(
            sniff("2026-12-02 10:00:00.1 UTC [1] LOG:  x"),
            Format::Pgaudit
        );
        assert_eq!(sniff("CEF:0|a|b|c|d|e|1|"), Format::Cef);
    }

    #[test]
    fn hostile_bytes_are_lossy_never_fatal() {
        let e = p(Format::Syslog, b"a\xff\x00b");
        assert!(e.lossy);
        assert_eq!(e.fields["message"], "a\\xff\\x00b");
        let big = vec![b'{'; 1 << 20];
        assert!(parse(Format::Auto, None, &big).is_err());
        let big = vec![b'a'; 1 << 20];
        assert!(parse(Format::Auto, None, &big).is_ok());
        for f in [
            Format::Cef,
            Format::Pgaudit,
            Format::MariadbAudit,
            Format::Logfmt,
            Format::Syslog,
        ] {
            for s in [
                &b"CEF:|"[..],
                b"<",
                b"<999>1",
                b"2026-12-02 17:00:00 [",
                b"20261202 17:00:00,",
                b"=",
                b"\"",
                b"<1>1 - - - - - [",
            ] {
                let _ = parse(f, None, s);
            }
        }
    }

    #[test]
    fn stamp_agrees_with_parse() {
        let cases: [(Format, &[u8]); 12] = [
            (Format::Syslog, b"2026-12-02T10:00:00.5+00:00 kms sshd[1]: Connection closed"),
            (Format::Syslog, b"<34>Dec  2 10:00:00 kms sshd[1]: x"),
            (Format::Syslog, b"<13>1 2026-12-02T10:00:00Z h app - - - msg"),
            (Format::Syslog, b"no header at all"),
            (Format::Syslog, b"   "),
            (Format::Pgaudit, b"2026-12-02 10:00:00.123 UTC [42] LOG:  AUDIT: SESSION,1,1,READ,SELECT,,,\"SELECT 1\",<x>"),
            (Format::Pgaudit, b"2026-12-02 10:00:00 UTC [42] no level"),
            (Format::Pgaudit, b"garbage"),
            (Format::Json, br#"{"time":"2026-12-02T10:00:00Z","a":{"b":1}}"#),
            (Format::Json, br#"{"ts":1764669600,"time":null}"#),
            (Format::Json, br#"{"time":"2026-12-02T10:00:00Z","#),
            (Format::Json, br#"{"x":1}"#),
        ];
        for (f, l) in cases {
            let full = parse(f, None, l).map(|p| p.ts);
            if let Some(short) = stamp(f, l) {
                assert_eq!(short.map(|p| p.ts), full, "{l:?}");
            }
        }
    }
}
