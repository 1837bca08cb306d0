//! Finds PEM blocks (`-----BEGIN LABEL-----` … `-----END LABEL-----`) in arbitrary bytes and
//! decodes their base64 bodies into zeroized buffers.
//!
//! Lenient where real files are: text before, between and after blocks (OpenSSL's `-text`
//! dumps, PKCS#12 "Bag Attributes"), CRLF line ends, RFC 1421 headers (`Proc-Type`,
//! `DEK-Info` of legacy-encrypted keys). Strict where a lenient reading would hide damage: a
//! block without its END line, an END with another label, or base64 that does not decode is
//! an error naming the block. Must not: interpret the DER (that is the callers' job) or leave
//! decoded private bytes in memory it frees.

use base64ct::{Base64, Encoding};
use std::fmt;
use zeroize::Zeroizing;

/// One decoded PEM block.
pub(super) struct Block {
    /// 1-based position among the blocks of the input, for error messages.
    pub index: usize,
    pub label: String,
    /// RFC 1421 headers as (name, value), e.g. `("DEK-Info", "AES-128-CBC,…")`.
    pub headers: Vec<(String, String)>,
    pub der: Zeroizing<Vec<u8>>,
}

/// Why the PEM in an input cannot be trusted.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PemError {
    pub index: usize,
    /// The label of the block at fault, when one was read.
    pub label: Option<String>,
    pub reason: String,
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            Some(l) => write!(f, "PEM block {} ({l}): {}", self.index, self.reason),
            None => write!(f, "PEM: {}", self.reason),
        }
    }
}

/// Every PEM block in `input`, in order; empty when there is none. More than `max_blocks`
/// BEGIN lines is an error rather than a silent cut, so a bundle is never half-reported.
pub(super) fn scan(input: &[u8], max_blocks: usize) -> Result<Vec<Block>, PemError> {
    let mut blocks = Vec::new();
    let mut open: Option<Open> = None;
    let mut pos = 0;
    while pos <= input.len() {
        if open.is_none() {
            // Outside a block only a BEGIN line matters: jump to the next candidate instead
            // of looking at every line (most of a config or a binary is not PEM).
            let rest = input.get(pos..).unwrap_or_default();
            let Some(k) = memchr::memmem::find(rest, b"-----BEGIN ") else {
                break;
            };
            let at = pos + k;
            let before = input.get(pos..at).unwrap_or_default();
            let start = memchr::memrchr(b'\n', before).map_or(pos, |i| pos + i + 1);
            if !input
                .get(start..at)
                .unwrap_or_default()
                .iter()
                .all(u8::is_ascii_whitespace)
            {
                // Not at the start of its line: skip that line.
                pos = memchr::memchr(b'\n', input.get(at..).unwrap_or_default())
                    .map_or(input.len() + 1, |i| at + i + 1);
                continue;
            }
            pos = start;
        }
        let rest = input.get(pos..).unwrap_or_default();
        let end = memchr::memchr(b'\n', rest).map_or(input.len(), |i| pos + i);
        let line = input.get(pos..end).unwrap_or_default().trim_ascii();
        pos = end + 1;
        match open.as_mut() {
            None => {
                if let Some(label) = boundary(line, b"-----BEGIN ") {
                    if blocks.len() >= max_blocks {
                        return Err(PemError {
                            index: blocks.len() + 1,
                            label: None,
                            reason: format!("more than {max_blocks} blocks; not inspected"),
                        });
                    }
                    open = Some(Open::new(blocks.len() + 1, label, input.len()));
                }
            }
            Some(o) => {
                if let Some(end) = boundary(line, b"-----END ") {
                    if end != o.label {
                        return Err(o.error(format!("END line says {end:?}")));
                    }
                    if let Some(o) = open.take() {
                        blocks.push(o.finish()?);
                    }
                } else if boundary(line, b"-----BEGIN ").is_some() {
                    return Err(o.error("no END line before the next BEGIN".into()));
                } else {
                    o.line(line)?;
                }
            }
        }
    }
    match open {
        Some(o) => Err(o.error("no END line (truncated?)".into())),
        None => Ok(blocks),
    }
}

/// A block between its BEGIN line and its END line.
struct Open {
    index: usize,
    label: String,
    headers: Vec<(String, String)>,
    /// Headers are only allowed before the first base64 line.
    in_body: bool,
    body: Zeroizing<Vec<u8>>,
}

impl Open {
    fn new(index: usize, label: String, input_len: usize) -> Open {
        // Sized up front so the base64 of a private key is never copied by a reallocation
        // into memory that is freed without being zeroed. Capped: a 16 MiB input with many
        // blocks must not reserve 16 MiB per block.
        let capacity = input_len.min(64 << 10);
        Open {
            index,
            label,
            headers: Vec::new(),
            in_body: false,
            body: Zeroizing::new(Vec::with_capacity(capacity)),
        }
    }

    fn error(&self, reason: String) -> PemError {
        PemError {
            index: self.index,
            label: Some(self.label.clone()),
            reason,
        }
    }

    fn line(&mut self, line: &[u8]) -> Result<(), PemError> {
        if line.is_empty() {
            return Ok(());
        }
        if !self.in_body {
            if let Some(colon) = line.iter().position(|b| *b == b':') {
                let (name, value) = line.split_at(colon);
                let name = text(name).map_err(|r| self.error(r))?;
                let value = text(value.get(1..).unwrap_or_default()).map_err(|r| self.error(r))?;
                self.headers
                    .push((name.trim().to_owned(), value.trim().to_owned()));
                return Ok(());
            }
            // RFC 1421 continuation of a long header value.
            if matches!(line.first(), Some(b' ' | b'\t')) && !self.headers.is_empty() {
                return Ok(());
            }
        }
        self.in_body = true;
        if let Some(bad) = line.iter().find(|b| !is_base64(**b)) {
            return Err(self.error(format!("byte 0x{bad:02x} in the base64 body")));
        }
        if self.body.len() + line.len() > self.body.capacity() {
            // Grow by hand into a fresh zeroized buffer, so the old one is wiped on drop.
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                (self.body.len() + line.len()).saturating_mul(2),
            ));
            bigger.extend_from_slice(&self.body);
            self.body = bigger;
        }
        self.body.extend_from_slice(line);
        Ok(())
    }

    fn finish(self) -> Result<Block, PemError> {
        if self.body.is_empty() {
            return Err(self.error("empty body".into()));
        }
        let mut der = Zeroizing::new(vec![0u8; self.body.len() / 4 * 3 + 3]);
        let n = match Base64::decode(&*self.body, &mut der) {
            Ok(decoded) => decoded.len(),
            Err(e) => return Err(self.error(format!("base64: {e}"))),
        };
        der.truncate(n);
        Ok(Block {
            index: self.index,
            label: self.label,
            headers: self.headers,
            der,
        })
    }
}

/// The label of a `-----BEGIN label-----` (or END) line; `None` when `line` is not one.
/// Labels are printable ASCII, so a binary file that happens to contain the prefix is not
/// taken for PEM.
fn boundary(line: &[u8], prefix: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(prefix)?;
    let label = rest.strip_suffix(b"-----")?;
    if label.is_empty() || label.len() > 64 {
        return None;
    }
    if !label.iter().all(|b| (0x20..0x7f).contains(b))
        || label.starts_with(b"-")
        || label.ends_with(b"-")
    {
        return None;
    }
    std::str::from_utf8(label).ok().map(str::to_owned)
}

fn is_base64(b: u8) -> bool {
    BASE64[usize::from(b)]
}

/// The bytes of a base64 body line (standard alphabet and padding), as a table: the body of
/// every certificate in a bundle goes through this check byte by byte.
const BASE64: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=';
        i += 1;
    }
    t
};

fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| "header is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(input: &[u8]) -> Vec<String> {
        scan(input, 100)
            .unwrap()
            .into_iter()
            .map(|b| b.label)
            .collect()
    }

    #[test]
    fn finds_blocks_among_junk_with_crlf() {
        let input = b"Bag Attributes\r\n  localKeyID: 01\r\n-----BEGIN CERTIFICATE-----\r\nAAEC\r\n-----END CERTIFICATE-----\r\nsubject=/CN=x\n  -----BEGIN PRIVATE KEY-----\nAwQF\nBg==\n-----END PRIVATE KEY-----\ntrailing";
        let blocks = scan(input, 100).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "CERTIFICATE");
        assert_eq!(&blocks[0].der[..], &[0, 1, 2]);
        assert_eq!(blocks[1].index, 2);
        assert_eq!(&blocks[1].der[..], &[3, 4, 5, 6]);
    }

    #[test]
    fn no_pem_is_empty_and_binary_lookalikes_are_not_boundaries() {
        assert!(labels(b"just text\n").is_empty());
        assert!(labels(b"").is_empty());
        assert!(labels(b"-----BEGIN \xff\xfe-----\nAA==\n").is_empty());
        assert!(labels(b"-----BEGIN -----\n").is_empty());
    }

    #[test]
    fn a_begin_inside_a_line_is_not_a_boundary_and_the_search_resumes_after_it() {
        // Mid-line BEGIN (a log line quoting PEM), then a real block; one at the very end
        // without a newline; BEGIN as the input's first bytes.
        let input = b"log: -----BEGIN CERTIFICATE-----\nAAEC\n\t-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\nx -----BEGIN KEY-----";
        assert_eq!(labels(input), vec!["CERTIFICATE"]);
        let first = b"-----BEGIN A-----\nAAEC\n-----END A-----";
        assert_eq!(labels(first), vec!["A"]);
        assert!(
            scan(b"\n\n-----BEGIN A-----\nAAEC\n", 10).is_err(),
            "truncated block"
        );
        assert!(
            labels(b"-----BEGIN A-----x\n-----BEGIN B-----\nAA==\n-----END B-----\n") == vec!["B"]
        );
    }

    #[test]
    fn legacy_encryption_headers_are_kept() {
        let input = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00FF\n\nAAEC\n-----END RSA PRIVATE KEY-----\n";
        let blocks = scan(input, 100).unwrap();
        assert_eq!(
            blocks[0].headers,
            vec![
                ("Proc-Type".to_owned(), "4,ENCRYPTED".to_owned()),
                ("DEK-Info".to_owned(), "AES-128-CBC,00FF".to_owned())
            ]
        );
        assert_eq!(&blocks[0].der[..], &[0, 1, 2]);
    }

    #[test]
    fn damage_is_an_error_naming_the_block() {
        let cases: &[(&[u8], &str)] = &[
            (b"-----BEGIN CERTIFICATE-----\nAAEC\n", "no END line"),
            (
                b"-----BEGIN CERTIFICATE-----\nAAEC\n-----END PRIVATE KEY-----\n",
                "END line says",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nAA*C\n-----END CERTIFICATE-----\n",
                "byte 0x2a",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nAAE\n-----END CERTIFICATE-----\n",
                "base64",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
                "empty body",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nAAEC\n-----BEGIN CERTIFICATE-----\n",
                "before the next BEGIN",
            ),
        ];
        for (input, want) in cases {
            let e = scan(input, 100).err().expect("must fail");
            assert_eq!(e.label.as_deref(), Some("CERTIFICATE"));
            let msg = e.to_string();
            assert!(msg.starts_with("PEM block 1 (CERTIFICATE): "), "{msg}");
            assert!(msg.contains(want), "{msg} lacks {want}");
        }
    }

    #[test]
    fn block_count_is_capped() {
        let one = b"-----BEGIN X-----\nAA==\n-----END X-----\n";
        let input: Vec<u8> = one.repeat(4);
        assert_eq!(scan(&input, 4).unwrap().len(), 4);
        let e = scan(&input, 3).err().expect("over the cap");
        assert!(e.to_string().contains("more than 3 blocks"), "{e}");
    }
}
