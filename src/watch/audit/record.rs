//! Parses the text of one kernel audit record, as it arrives over netlink:
//! `audit(1700000000.123:456): key=value key="value" key=(null) ...` (the record type is the
//! netlink message type, not part of the text).
//!
//! Owns no state and does no I/O. Works on bytes and never panics: a malformed record yields
//! `None` or a field that is missing, never a crash (unit tests plus a proptest on garbage).
//!
//! Values come in three shapes, decided by the kernel per value: `"quoted"` when the string is
//! printable ASCII without `"` or spaces, unquoted hex when it is not (a name with a space,
//! a non-ASCII byte, a `proctitle` with NULs between arguments), and `(null)` when unset.
//! Numbers are unquoted and so look like hex: only fields the kernel writes through its
//! "untrusted string" encoder are hex-decoded ([`Record::bytes`]); numbers are read with
//! [`Record::num`].

/// One `key=value` value, undecoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// Inside double (or single) quotes, quotes removed.
    Quoted(&'a [u8]),
    /// Unquoted text up to the next space.
    Bare(&'a [u8]),
    /// The literal `(null)`.
    Null,
}

/// One parsed record: header plus fields in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub secs: i64,
    pub millis: u32,
    pub serial: u64,
    pub fields: Vec<(&'a [u8], Value<'a>)>,
}

/// Bound on fields per record: a SYSCALL record has about 30; anything far beyond is garbage
/// and must not make the parser allocate without limit.
const MAX_FIELDS: usize = 256;

/// Parses `audit(SECS.MILLIS:SERIAL): fields`. Trailing NULs and newlines are ignored.
pub fn parse(text: &[u8]) -> Option<Record<'_>> {
    let text = trim_end(text);
    let rest = text.strip_prefix(b"audit(")?;
    let close = rest.iter().position(|&b| b == b')')?;
    let (stamp, rest) = (&rest[..close], &rest[close + 1..]);
    let dot = stamp.iter().position(|&b| b == b'.')?;
    let colon = stamp.iter().position(|&b| b == b':')?;
    if colon < dot {
        return None;
    }
    let secs = dec_u64(&stamp[..dot]).and_then(|s| i64::try_from(s).ok())?;
    let millis = u32::try_from(dec_u64(&stamp[dot + 1..colon])?).ok()?;
    if millis > 999 {
        return None;
    }
    let serial = dec_u64(&stamp[colon + 1..])?;
    let rest = rest.strip_prefix(b":").unwrap_or(rest);
    Some(Record {
        secs,
        millis,
        serial,
        fields: parse_fields(rest),
    })
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [head @ .., last] = s {
        if *last == 0 || *last == b'\n' || *last == b' ' {
            s = head;
        } else {
            break;
        }
    }
    s
}

/// Splits `k=v k="v w" k=(null)` into pairs. A token without `=` is skipped; an unterminated
/// quote takes the rest of the text.
fn parse_fields(mut s: &[u8]) -> Vec<(&[u8], Value<'_>)> {
    let mut out = Vec::new();
    while out.len() < MAX_FIELDS {
        while let [b' ', tail @ ..] = s {
            s = tail;
        }
        if s.is_empty() {
            break;
        }
        let key_end = s
            .iter()
            .position(|&b| b == b'=' || b == b' ')
            .unwrap_or(s.len());
        let key = &s[..key_end];
        if s.get(key_end) != Some(&b'=') {
            s = &s[key_end..];
            continue;
        }
        let v = &s[key_end + 1..];
        let (value, used) = match v.first() {
            Some(&q @ (b'"' | b'\'')) => match v[1..].iter().position(|&b| b == q) {
                Some(end) => (Value::Quoted(&v[1..1 + end]), end + 2),
                None => (Value::Quoted(&v[1..]), v.len()),
            },
            _ => {
                let end = v.iter().position(|&b| b == b' ').unwrap_or(v.len());
                let raw = &v[..end];
                if raw == b"(null)" {
                    (Value::Null, end)
                } else {
                    (Value::Bare(raw), end)
                }
            }
        };
        out.push((key, value));
        s = &v[used..];
    }
    out
}

impl<'a> Record<'a> {
    /// The first value named `key`.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        self.fields
            .iter()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| *v)
    }

    /// A string the kernel wrote as untrusted (`comm`, `exe`, `name`, `cwd`, `key`,
    /// `proctitle`): quoted as is, unquoted hex decoded. `None` for `(null)`, a missing field
    /// or hex that does not decode.
    pub fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        match self.get(key)? {
            Value::Quoted(v) => Some(v.to_vec()),
            Value::Bare(v) => unhex(v),
            Value::Null => None,
        }
    }

    /// An unquoted field as text (`success`, `nametype`, `dev`...).
    pub fn word(&self, key: &str) -> Option<&'a [u8]> {
        match self.get(key)? {
            Value::Bare(v) | Value::Quoted(v) => Some(v),
            Value::Null => None,
        }
    }

    /// A decimal field, signed (`exit=-13`, `pid=42`).
    pub fn num(&self, key: &str) -> Option<i64> {
        let w = self.word(key)?;
        match w.strip_prefix(b"-") {
            Some(d) => dec_u64(d).and_then(|v| i64::try_from(v).ok()).map(|v| -v),
            None => dec_u64(w).and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// A hexadecimal field without `0x` (`arch=c000003e`, `a0=ffffff9c`).
    pub fn hex_num(&self, key: &str) -> Option<u64> {
        let w = self.word(key)?;
        if w.is_empty() || w.len() > 16 {
            return None;
        }
        let mut v: u64 = 0;
        for &b in w {
            v = (v << 4) | u64::from(hex_digit(b)?);
        }
        Some(v)
    }
}

fn dec_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the kernel's hex encoding of an untrusted string (upper-case, two digits a byte).
pub fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2)
        .map(|p| Some(hex_digit(p[0])? << 4 | hex_digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSCALL: &[u8] = b"audit(1700000000.123:456): arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c a1=7ffd a2=0 a3=0 items=1 ppid=10 pid=11 auid=4294967295 uid=65534 gid=65534 euid=65534 suid=65534 fsuid=65534 egid=65534 sgid=65534 fsgid=65534 tty=pts0 ses=4294967295 comm=\"cat\" exe=\"/usr/bin/cat\" subj=unconfined key=\"kmsentry-1\"\0";

    #[test]
    fn parses_a_syscall_record() {
        let r = parse(SYSCALL).unwrap();
        assert_eq!((r.secs, r.millis, r.serial), (1_700_000_000, 123, 456));
        assert_eq!(r.num("exit"), Some(-13));
        assert_eq!(r.num("pid"), Some(11));
        assert_eq!(r.num("auid"), Some(4_294_967_295));
        assert_eq!(r.hex_num("arch"), Some(0xc000_003e));
        assert_eq!(r.hex_num("a0"), Some(0xffff_ff9c));
        assert_eq!(r.word("success"), Some(&b"no"[..]));
        assert_eq!(r.bytes("comm").unwrap(), b"cat");
        assert_eq!(r.bytes("exe").unwrap(), b"/usr/bin/cat");
        assert_eq!(r.bytes("key").unwrap(), b"kmsentry-1");
    }

    #[test]
    fn decodes_hex_and_null_values() {
        // name="/etc/a b" with a space, proctitle "cat\0/etc/k", key unset
        let r = parse(b"audit(1.000:2): item=0 name=2F65746320612062 proctitle=636174002F6574632F6B key=(null) cwd=\"/\"").unwrap();
        assert_eq!(r.bytes("name").unwrap(), b"/etc a b");
        assert_eq!(r.bytes("proctitle").unwrap(), b"cat\0/etc/k");
        assert_eq!(r.get("key"), Some(Value::Null));
        assert_eq!(r.bytes("key"), None);
        assert_eq!(r.bytes("cwd").unwrap(), b"/");
        assert_eq!(r.bytes("missing"), None);
    }

    #[test]
    fn rejects_or_tolerates_garbage() {
        for bad in [
            &b""[..],
            b"audit(",
            b"audit()",
            b"audit(1:2.3): a=b",
            b"audit(x.1:2): a=b",
            b"audit(1.5000:2): a=b",
            b"audit(99999999999999999999999.1:2): a=b",
            b"type=SYSCALL msg=audit(1.1:2): a=b",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        let r = parse(b"audit(1.001:2): =x noequals name=\"unterminated a=b").unwrap();
        assert_eq!(r.bytes("name").unwrap(), b"unterminated a=b");
        assert_eq!(r.get(""), Some(Value::Bare(b"x")));
        let r = parse(b"audit(1.001:2): name=ABC exit=-x pid=99999999999999999999").unwrap();
        assert_eq!(r.bytes("name"), None, "odd-length hex");
        assert_eq!(r.num("exit"), None);
        assert_eq!(r.num("pid"), None);
        let r = parse(b"audit(1.001:2): msg='op=add key=\"x\" res=1' a=1").unwrap();
        assert_eq!(r.num("a"), Some(1));
    }

    #[test]
    fn field_count_is_bounded() {
        let mut t = b"audit(1.001:2):".to_vec();
        for _ in 0..10_000 {
            t.extend_from_slice(b" a=1");
        }
        assert_eq!(parse(&t).unwrap().fields.len(), MAX_FIELDS);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut t = b"audit(1.001:2): ".to_vec();
            t.extend_from_slice(&data);
            if let Some(r) = parse(&t) {
                for k in ["name", "exit", "arch", "key", "proctitle"] {
                    let _ = (r.bytes(k), r.num(k), r.hex_num(k), r.word(k));
                }
            }
            let _ = parse(&data);
        }

        #[test]
        fn quoted_and_hex_round_trip(name in proptest::collection::vec(1u8..=255, 1..64)) {
            let hex: String = name.iter().map(|b| format!("{b:02X}")).collect();
            let t = format!("audit(5.5:6): name={hex} x=1");
            let r = parse(t.as_bytes()).unwrap();
            proptest::prop_assert_eq!(r.bytes("name").unwrap(), name);
        }
    }
}
