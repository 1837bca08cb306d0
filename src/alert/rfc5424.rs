//! Reading RFC 5424 lines back: what a syslog receiver stored of kmsentry's records.
//!
//! A receiver such as rsyslog with `template="RSYSLOG_SyslogProtocol23Format"` writes one
//! line per message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`. kmsentry puts
//! its whole canonical JSON record in MSG ([`super::syslog::format`]), so the record's chain
//! can be checked from the receiver's file alone: [`parse`] splits a line into its header
//! fields and hands back MSG byte for byte.
//!
//! Must not: alter MSG in any way (the chain hashes its exact bytes); accept a line whose
//! structured data does not close (the MSG boundary would be a guess).

/// The fields of one RFC 5424 line that `log verify` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub hostname: &'a [u8],
    pub app_name: &'a [u8],
    pub msgid: &'a [u8],
    /// Everything after the structured data and its separating space.
    pub msg: &'a [u8],
}

/// Split one line (without its newline). `Err` says why it is not RFC 5424.
pub fn parse(line: &[u8]) -> Result<Line<'_>, &'static str> {
    let rest = line
        .strip_prefix(b"<")
        .ok_or("does not start with `<PRI>`")?;
    let close = rest
        .iter()
        .take(4)
        .position(|&b| b == b'>')
        .ok_or("no `>` after PRI")?;
    let pri = &rest[..close];
    if pri.is_empty() || !pri.iter().all(u8::is_ascii_digit) {
        return Err("PRI is not a number");
    }
    let rest = &rest[close + 1..];
    let rest = rest
        .strip_prefix(b"1 ")
        .ok_or("not syslog protocol version 1 (RFC 5424)")?;
    let mut fields = [&b""[..]; 5];
    let mut rest = rest;
    for f in &mut fields {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("a header field is missing")?;
        *f = &rest[..sp];
        rest = &rest[sp + 1..];
    }
    let [_ts, hostname, app_name, _procid, msgid] = fields;
    let after_sd = structured_data_end(rest)?;
    let msg = match &rest[after_sd..] {
        [] => &[][..],
        [b' ', m @ ..] => m,
        _ => return Err("no space after the structured data"),
    };
    // A UTF-8 BOM may start MSG (RFC 5424 §6.4); kmsentry never writes one.
    let msg = msg.strip_prefix(b"\xef\xbb\xbf").unwrap_or(msg);
    Ok(Line {
        hostname,
        app_name,
        msgid,
        msg,
    })
}

/// Where the structured data ends: after `-`, or after the last `]` of one or more
/// `[ID k="v" …]` elements (values may hold `\"`, `\\` and `\]`).
fn structured_data_end(s: &[u8]) -> Result<usize, &'static str> {
    if s.first() == Some(&b'-') {
        return Ok(1);
    }
    let mut i = 0;
    if s.first() != Some(&b'[') {
        return Err("structured data is neither `-` nor `[…]`");
    }
    while s.get(i) == Some(&b'[') {
        i += 1;
        let mut in_value = false;
        loop {
            match s.get(i) {
                None => return Err("structured data does not close"),
                Some(b'\\') if in_value => i += 2,
                Some(b'"') => {
                    in_value = !in_value;
                    i += 1;
                }
                Some(b']') if !in_value => {
                    i += 1;
                    break;
                }
                Some(_) => i += 1,
            }
        }
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_as_rsyslog_stores_it_gives_back_the_message_byte_for_byte() {
        let l = br#"<86>1 2026-01-02T03:04:05.000001+00:00 web1 kmsentry 42 started [kmsentry@32473 kind="started" path="/a\]\"b\\"] {"seq":1}"#;
        let p = parse(l).unwrap();
        assert_eq!(p.hostname, b"web1");
        assert_eq!(p.app_name, b"kmsentry");
        assert_eq!(p.msgid, b"started");
        assert_eq!(p.msg, br#"{"seq":1}"#);
    }

    #[test]
    fn nil_and_several_sd_elements_and_a_bom_are_understood() {
        let p = parse(b"<13>1 - h app - - - hello world").unwrap();
        assert_eq!(p.msg, b"hello world");
        let p = parse(b"<13>1 - h app - - [a x=\"1\"][b y=\"]\"] \xef\xbb\xbfm").unwrap();
        assert_eq!(p.msg, b"m");
        assert_eq!(parse(b"<13>1 - h app - - -").unwrap().msg, b"");
    }

    #[test]
    fn what_is_not_rfc5424_is_named() {
        for (l, why) in [
            (&b"Jan  1 00:00:00 h app: x"[..], "`<PRI>`"),
            (b"<13>Jan  1 00:00:00 h app: x", "version 1"),
            (b"<x>1 - h a - - - m", "PRI"),
            (b"<13>1 - h a - - [a x=\"1\" m", "does not close"),
            (b"<13>1 - h", "missing"),
        ] {
            let e = parse(l).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
