//! One alert as one canonical JSON line, and the hash that chains lines.
//!
//! Field order is fixed (DESIGN, "Alerts"): `ts`, `seq`, `kind`, `severity`, `host`, then when
//! present `path`, `group`, `class`, `outcome`, `process`, `changes`, `rule`, `detail`, and
//! last `prev`. The line is rendered once; every sink gets those exact bytes, and the next
//! record's `prev` is the BLAKE3 of them (without the newline), so `log verify` can recompute
//! the chain from the file alone.
//!
//! Must not: write a name except through [`JsonName`], or emit a newline inside a line (the
//! JSON encoder escapes control characters, so a name holding `\n` stays on its line).

use super::Alert;
use crate::sanitize::JsonName;
use serde_json::{Map, Value};

/// `prev` of the first record of a brand-new chain.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain hash of one line (its exact bytes, without the newline): lower-case hex BLAKE3.
pub fn line_hash(line: &[u8]) -> String {
    blake3::hash(line).to_hex().to_string()
}

/// What the alerter stamps on an alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp<'a> {
    /// RFC 3339, UTC, microseconds.
    pub ts: &'a str,
    pub seq: u64,
    pub host: &'a str,
    /// Hex BLAKE3 of the previous record's line, or [`ZERO_HASH`].
    pub prev: &'a str,
}

/// Now, RFC 3339 UTC with microseconds (`2026-01-02T03:04:05.678901Z`).
pub fn now_ts() -> String {
    format!("{:.6}", jiff::Timestamp::now())
}

fn name(bytes: &[u8]) -> Value {
    Value::String(JsonName(bytes).text().into_owned())
}

/// The record as a JSON object, keys in the documented order.
pub fn to_object(a: &Alert, st: &Stamp<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("ts".into(), st.ts.into());
    m.insert("seq".into(), st.seq.into());
    m.insert("kind".into(), a.kind.as_str().into());
    m.insert("severity".into(), a.severity.as_str().into());
    m.insert("host".into(), st.host.into());
    if let Some(p) = &a.path {
        m.insert("path".into(), name(p));
    }
    if let Some(g) = &a.group {
        m.insert("group".into(), g.as_str().into());
    }
    if let Some(c) = a.class {
        m.insert("class".into(), c.as_str().into());
    }
    if let Some(o) = a.outcome {
        m.insert("outcome".into(), o.as_str().into());
    }
    if let Some(p) = &a.process {
        m.insert("process".into(), Value::Object(process_object(p)));
    }
    if !a.changes.is_empty() {
        m.insert(
            "changes".into(),
            Value::Array(a.changes.iter().map(|c| Value::from(*c)).collect()),
        );
    }
    if let Some(r) = &a.rule {
        m.insert("rule".into(), r.as_str().into());
    }
    if let Some(l) = &a.log {
        log_fields(&mut m, l);
    }
    if !a.detail.is_empty() {
        m.insert("detail".into(), Value::Object(a.detail.clone()));
    }
    m.insert("prev".into(), st.prev.into());
    m
}

/// The top-level fields of a `log` alert (DESIGN, "Log early warning").
fn log_fields(m: &mut Map<String, Value>, l: &super::LogFacts) {
    m.insert("title".into(), l.title.as_str().into());
    m.insert("source".into(), l.source.as_str().into());
    let mut pos = Map::new();
    match &l.origin {
        super::LogOrigin::File { file, offset, id } => {
            pos.insert("file".into(), name(file));
            pos.insert("offset".into(), (*offset).into());
            if let Some((dev, ino)) = id {
                pos.insert("dev".into(), (*dev).into());
                pos.insert("inode".into(), (*ino).into());
            }
        }
        super::LogOrigin::Socket { socket, seq } => {
            pos.insert("socket".into(), name(socket));
            pos.insert("seq".into(), (*seq).into());
        }
    }
    if let Some(t) = &l.time {
        pos.insert("time".into(), t.as_str().into());
    }
    m.insert("log".into(), Value::Object(pos));
    m.insert("fields".into(), Value::Object(l.fields.clone()));
    if let Some((kind, count, window, group_by)) = &l.correlation {
        m.insert("correlation".into(), kind.as_str().into());
        // A count is a whole number of events; a value_count over a numeric field may not be.
        let count = if count.fract() == 0.0 && (0.0..9.0e15).contains(count) {
            Value::from(*count as u64)
        } else {
            serde_json::Number::from_f64(*count).map_or(Value::Null, Value::Number)
        };
        m.insert("count".into(), count);
        m.insert("window".into(), (*window).into());
        m.insert("group_by".into(), Value::Object(group_by.clone()));
    }
}

/// `process`: what is known about the process, keys in a fixed order. A field that could not
/// be learnt is absent (never 0, never "root"); `identity` says how the rest was learnt.
pub fn process_object(p: &crate::proc::ProcessInfo) -> Map<String, Value> {
    let mut pm = Map::new();
    pm.insert("pid".into(), p.pid.into());
    if let Some(ppid) = p.ppid {
        pm.insert("ppid".into(), ppid.into());
    }
    if let Some(exe) = &p.exe {
        pm.insert("exe".into(), name(exe));
    }
    if let Some(comm) = &p.comm {
        pm.insert("comm".into(), name(comm));
    }
    if let Some(cmdline) = &p.cmdline {
        pm.insert("cmdline".into(), name(cmdline));
        if p.cmdline_truncated {
            pm.insert("cmdline_truncated".into(), true.into());
        }
    }
    if let Some(uid) = p.uid {
        pm.insert("uid".into(), uid.into());
    }
    if let Some(euid) = p.euid {
        pm.insert("euid".into(), euid.into());
    }
    if let Some(u) = &p.user {
        pm.insert("user".into(), name(u.as_bytes()));
    }
    if let Some(auid) = p.auid {
        pm.insert("auid".into(), auid.into());
    }
    pm.insert("identity".into(), p.source.as_str().into());
    pm
}

/// The record's line, without the newline.
pub fn render(a: &Alert, st: &Stamp<'_>) -> String {
    // Serialising a map of strings and numbers cannot fail; fall back to an empty object
    // rather than panic.
    serde_json::to_string(&Value::Object(to_object(a, st))).unwrap_or_else(|_| "{}".into())
}

/// A record as the sinks see it: the rendered line and what it was rendered from (syslog
/// and journald lift a few fields out of it as structured data).
#[derive(Clone, Copy, Debug)]
pub struct Rendered<'a> {
    /// The canonical line, without the newline.
    pub line: &'a str,
    pub alert: &'a Alert,
    pub ts: &'a str,
    pub seq: u64,
    pub host: &'a str,
}

/// Syslog severity (RFC 5424 numeric) for an alert severity; also journald's `PRIORITY`.
pub fn syslog_severity(s: crate::baseline::diff::Severity) -> u8 {
    use crate::baseline::diff::Severity;
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// The chain fields of a line that parses as a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub seq: u64,
    pub prev: String,
    pub kind: String,
    pub detail: Map<String, Value>,
}

/// Why a line is not a record.
pub fn parse(line: &[u8]) -> Result<Parsed, String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON ({e})"))?;
    let Value::Object(mut m) = v else {
        return Err("not a JSON object".into());
    };
    let seq = m
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or("no numeric `seq`")?;
    let prev = match m.get("prev").and_then(Value::as_str) {
        Some(p) if p.len() == 64 && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            p.to_string()
        }
        _ => return Err("no `prev` hash (64 lower-case hex digits)".into()),
    };
    let kind = m
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("no `kind`")?
        .to_string();
    let detail = match m.remove("detail") {
        Some(Value::Object(d)) => d,
        Some(_) => return Err("`detail` is not an object".into()),
        None => Map::new(),
    };
    Ok(Parsed {
        seq,
        prev,
        kind,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Kind, Outcome};
    use crate::baseline::diff::Severity;
    use crate::policy::schema::Class;
    use crate::proc::{ProcessInfo, Source};

    fn stamp() -> Stamp<'static> {
        Stamp {
            ts: "2026-01-02T03:04:05.678901Z",
            seq: 7,
            host: "h1",
            prev: ZERO_HASH,
        }
    }

    fn full() -> Alert {
        let mut a = Alert::new(Kind::Access, Severity::Critical);
        a.path = Some(b"/etc/kms/key\n\xffx\\y.pem".to_vec());
        a.group = Some("client-keys".into());
        a.class = Some(Class::PrivateKey);
        a.outcome = Some(Outcome::Denied);
        a.process = Some(ProcessInfo {
            pid: 42,
            ppid: Some(1),
            start_time: Some(9),
            exe: Some(b"/usr/bin/c\xfeat".to_vec()),
            comm: Some(b"cat\n".to_vec()),
            cmdline: Some(b"cat /etc/kms/key".to_vec()),
            cmdline_truncated: true,
            uid: Some(65534),
            euid: Some(0),
            auid: Some(1000),
            user: Some("nobody".into()),
            source: Source::Blocked,
        });
        a.changes = vec!["content", "mode"];
        a.rule = Some("client-keys/allow[0]".into());
        a.detail.insert("count".into(), 3.into());
        a
    }

    #[test]
    fn fields_come_in_the_documented_order() {
        let line = render(&full(), &stamp());
        let keys: Vec<String> = serde_json::from_str::<Map<String, Value>>(&line)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "ts", "seq", "kind", "severity", "host", "path", "group", "class", "outcome",
                "process", "changes", "rule", "detail", "prev"
            ]
        );
        let p: Value = serde_json::from_str(&line).unwrap();
        let pk: Vec<&String> = p["process"].as_object().unwrap().keys().collect();
        assert_eq!(
            pk,
            [
                "pid",
                "ppid",
                "exe",
                "comm",
                "cmdline",
                "cmdline_truncated",
                "uid",
                "euid",
                "user",
                "auid",
                "identity"
            ]
        );
        assert_eq!(p["process"]["euid"], 0);
        assert_eq!(p["process"]["identity"], "blocked");
    }

    #[test]
    fn an_unknown_uid_is_absent_never_root() {
        let mut a = Alert::new(Kind::Created, Severity::Low);
        a.process = Some(ProcessInfo::pid_only(77, Source::Gone));
        let line = render(&a, &stamp());
        let v: Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&String> = v["process"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["pid", "identity"], "{line}");
        assert_eq!(v["process"]["identity"], "gone");
        assert!(!line.contains("root"));
    }

    #[test]
    fn names_with_newlines_and_invalid_utf8_stay_on_one_escaped_line() {
        let line = render(&full(), &stamp());
        assert!(!line.contains('\n'));
        assert!(
            line.contains(r#""path":"/etc/kms/key\n\\xffx\\\\y.pem""#),
            "{line}"
        );
        assert!(line.contains(r#""exe":"/usr/bin/c\\xfeat""#), "{line}");
        assert!(line.contains(r#""comm":"cat\n""#), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        let back = crate::sanitize::unescape(v["path"].as_str().unwrap()).unwrap();
        assert_eq!(back, b"/etc/kms/key\n\xffx\\y.pem");
    }

    #[test]
    fn a_bare_alert_has_only_the_always_present_fields() {
        let line = render(&Alert::new(Kind::Started, Severity::Info), &stamp());
        assert_eq!(
            line,
            format!(
                r#"{{"ts":"2026-01-02T03:04:05.678901Z","seq":7,"kind":"started","severity":"info","host":"h1","prev":"{ZERO_HASH}"}}"#
            )
        );
        let p = parse(line.as_bytes()).unwrap();
        assert_eq!(
            (p.seq, p.kind.as_str(), p.prev.as_str()),
            (7, "started", ZERO_HASH)
        );
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let ts = now_ts();
        assert_eq!(ts.len(), "2026-01-02T03:04:05.678901Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn the_hash_is_over_the_exact_bytes() {
        assert_eq!(line_hash(b"abc"), blake3::hash(b"abc").to_hex().to_string());
        assert_ne!(line_hash(b"abc"), line_hash(b"abc "));
        assert!(parse(b"{\"seq\":1}").is_err());
        assert!(parse(b"{\"seq\":1,\"prev\":\"xyz\",\"kind\":\"a\"}").is_err());
        assert!(parse(b"[1]").is_err());
    }
}
