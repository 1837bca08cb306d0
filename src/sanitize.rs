//! The one escaping family for names an attacker may have chosen.
//!
//! File names are bytes. Everywhere kmsentry prints one (human output, JSON, logs, alerts) it
//! goes through this module, so a crafted name can neither break a line-based parser nor drive
//! a terminal:
//! - a byte that is not part of valid UTF-8 becomes `\xNN` (lower-case hex);
//! - `\` becomes `\\`, which keeps the mapping one-to-one: two names never print alike, and
//!   [`unescape`] inverts every form;
//! - in human output and logs ([`Name`]) control characters (C0, DEL, C1) and invisible or
//!   bidirectional-override characters are escaped too, always (logs and CI pages render later,
//!   so "only on a terminal" is not enough);
//! - [`JsonName`] escapes only invalid bytes and `\`: the JSON encoder adds its own escapes
//!   for controls on top (a newline in a name is the JSON escape `\n`).
//! - [`ExportName`] is [`Name`] plus a space as `\x20`, for the space-separated manifest.
//!
//! Must not: allocate when nothing needs escaping (the common case), or lose information.

use std::borrow::Cow;
use std::fmt;

/// Which escapes apply on top of the always-on ones (invalid UTF-8 and `\`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Controls and invisible characters escaped: human output, logs, syslog.
    Human,
    /// Like `Human`, and a space too: the `baseline export` manifest.
    Export,
    /// Only invalid UTF-8 and `\`: the JSON serialiser escapes controls itself.
    Json,
}

/// Displays a name for humans and logs.
#[derive(Clone, Copy)]
pub struct Name<'a>(pub &'a [u8]);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0, Mode::Human)
    }
}

impl fmt::Debug for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Displays a name for the `baseline export` manifest (spaces escaped as `\x20`).
#[derive(Clone, Copy)]
pub struct ExportName<'a>(pub &'a [u8]);

impl fmt::Display for ExportName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0, Mode::Export)
    }
}

/// A name as a JSON string value: serialises as the escaped text.
#[derive(Clone, Copy)]
pub struct JsonName<'a>(pub &'a [u8]);

impl JsonName<'_> {
    /// The escaped text that goes into the JSON string (before JSON's own escapes).
    pub fn text(&self) -> Cow<'_, str> {
        escape_cow(self.0, Mode::Json)
    }
}

impl serde::Serialize for JsonName<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

/// The human/log escape of `name` as an owned or borrowed string.
pub fn escape(name: &[u8]) -> Cow<'_, str> {
    escape_cow(name, Mode::Human)
}

fn escape_cow(name: &[u8], mode: Mode) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(name) {
        if !s.chars().any(|c| needs_escape(c, mode)) {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(name.len() + 8);
    // Writing into a String cannot fail.
    let _ = write_escaped(&mut out, name, mode);
    Cow::Owned(out)
}

fn needs_escape(c: char, mode: Mode) -> bool {
    match mode {
        Mode::Json => c == '\\',
        Mode::Human => c == '\\' || is_control_or_invisible(c),
        Mode::Export => c == '\\' || c == ' ' || is_control_or_invisible(c),
    }
}

/// C0 and C1 controls, DEL, and the invisible / bidi-override characters that let a name look
/// like another or reorder a line (Trojan Source).
fn is_control_or_invisible(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{ad}'                      // soft hyphen
        | '\u{61c}'                     // Arabic letter mark
        | '\u{180e}'                    // Mongolian vowel separator
        | '\u{200b}'..='\u{200f}'       // zero-width space/joiners, LRM, RLM
        | '\u{2028}'..='\u{202e}'       // line/paragraph separators, bidi embeddings/overrides
        | '\u{2060}'..='\u{2064}'       // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}'       // bidi isolates
        | '\u{feff}'                    // zero-width no-break space / BOM
        | '\u{fff9}'..='\u{fffb}'       // interlinear annotation
    )
}

fn write_escaped<W: fmt::Write>(w: &mut W, name: &[u8], mode: Mode) -> fmt::Result {
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if !needs_escape(c, mode) {
                w.write_char(c)?;
                continue;
            }
            match c {
                '\\' => w.write_str("\\\\")?,
                '\n' => w.write_str("\\n")?,
                '\t' => w.write_str("\\t")?,
                '\r' => w.write_str("\\r")?,
                c if (c as u32) < 0x80 => write!(w, "\\x{:02x}", c as u32)?,
                c => write!(w, "\\u{{{:x}}}", c as u32)?,
            }
        }
        for b in chunk.invalid() {
            write!(w, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

/// Error from [`unescape`]: the text is not something [`escape`] produces.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad escape at byte {0}")]
pub struct UnescapeError(pub usize);

/// Inverse of every escape in this module: `unescape(escape(x)) == x`.
pub fn unescape(text: &str) -> Result<Vec<u8>, UnescapeError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let at = i;
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'n') => {
                out.push(b'\n');
                i += 2;
            }
            Some(b't') => {
                out.push(b'\t');
                i += 2;
            }
            Some(b'r') => {
                out.push(b'\r');
                i += 2;
            }
            Some(b'x') => {
                let hex = text.get(i + 2..i + 4).ok_or(UnescapeError(at))?;
                let b = u8::from_str_radix(hex, 16).map_err(|_| UnescapeError(at))?;
                out.push(b);
                i += 4;
            }
            Some(b'u') => {
                let rest = text.get(i + 2..).ok_or(UnescapeError(at))?;
                let body = rest.strip_prefix('{').ok_or(UnescapeError(at))?;
                let end = body.find('}').ok_or(UnescapeError(at))?;
                let cp = u32::from_str_radix(&body[..end], 16).map_err(|_| UnescapeError(at))?;
                let c = char::from_u32(cp).ok_or(UnescapeError(at))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += 2 + 1 + end + 1;
            }
            _ => return Err(UnescapeError(at)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn human(b: &[u8]) -> String {
        Name(b).to_string()
    }

    #[test]
    fn clean_names_are_borrowed_unchanged() {
        assert!(matches!(
            escape(b"/etc/ssl/private/key.pem"),
            Cow::Borrowed(_)
        ));
        assert_eq!(human("/etc/é/ключ".as_bytes()), "/etc/é/ключ");
    }

    #[test]
    fn invalid_utf8_becomes_lower_case_hex() {
        assert_eq!(human(b"/tmp/a\xffb"), "/tmp/a\\xffb");
        assert_eq!(JsonName(b"a\xfe").text(), "a\\xfe");
    }

    #[test]
    fn backslash_is_doubled_so_names_never_print_alike() {
        // A file literally named `a\xff` (ASCII) must not print like `a` + byte 0xff.
        assert_ne!(human(b"a\\xff"), human(b"a\xff"));
        assert_eq!(human(b"a\\xff"), "a\\\\xff");
    }

    #[test]
    fn newline_cannot_forge_a_second_line() {
        let s = human(b"key.pem\nchanged /etc/fake");
        assert!(!s.contains('\n'));
        assert_eq!(s, "key.pem\\nchanged /etc/fake");
    }

    #[test]
    fn carriage_return_overwrite_attack_is_escaped() {
        assert_eq!(human(b"evil\rgood"), "evil\\rgood");
    }

    #[test]
    fn osc52_clipboard_and_osc8_link_sequences_are_escaped() {
        let s = human(b"\x1b]52;c;ZXZpbA==\x07name");
        assert!(!s.contains('\x1b') && !s.contains('\x07'));
        let s = human(b"\x1b]8;;http://evil\x1b\\x\x1b]8;;\x1b\\");
        assert!(!s.contains('\x1b'));
    }

    #[test]
    fn trojan_source_bidi_overrides_are_escaped() {
        let s = human("key\u{202e}mep.txt".as_bytes());
        assert_eq!(s, "key\\u{202e}mep.txt");
        assert_eq!(human("a\u{200b}b".as_bytes()), "a\\u{200b}b");
    }

    #[test]
    fn c1_controls_are_escaped() {
        assert_eq!(human("a\u{85}b".as_bytes()), "a\\u{85}b");
    }

    #[test]
    fn json_leaves_controls_to_the_json_encoder() {
        let v = serde_json::to_string(&JsonName(b"a\nb\xff")).unwrap();
        assert_eq!(v, r#""a\nb\\xff""#);
    }

    #[test]
    fn export_escapes_spaces() {
        assert_eq!(
            ExportName(b"/etc/my key.pem").to_string(),
            "/etc/my\\x20key.pem"
        );
        assert_eq!(unescape("/etc/my\\x20key.pem").unwrap(), b"/etc/my key.pem");
    }

    #[test]
    fn unescape_rejects_garbage() {
        assert!(unescape("a\\q").is_err());
        assert!(unescape("a\\x1").is_err());
        assert!(unescape("a\\u{110000}").is_err());
        assert!(unescape("trailing\\").is_err());
    }

    proptest! {
        #[test]
        fn unescape_inverts_every_mode(name in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(unescape(&human(&name)).unwrap(), name.clone());
            prop_assert_eq!(unescape(&ExportName(&name).to_string()).unwrap(), name.clone());
            prop_assert_eq!(unescape(&JsonName(&name).text()).unwrap(), name);
        }

        #[test]
        fn human_output_has_no_control_characters(name in proptest::collection::vec(any::<u8>(), 0..64)) {
            let s = human(&name);
            prop_assert!(!s.chars().any(is_control_or_invisible));
        }

        #[test]
        fn human_escape_of_arbitrary_strings_round_trips(s in "\\PC*") {
            prop_assert_eq!(unescape(&human(s.as_bytes())).unwrap(), s.as_bytes().to_vec());
        }
    }
}
