//! journald's native protocol: one datagram per record to `/run/systemd/journal/socket`.
//!
//! Each field is `NAME=value\n`, or, when the value holds a newline, the binary-safe form
//! `NAME\n` + value length (u64 little-endian) + value + `\n`. Fields: `MESSAGE` (the record's
//! JSON line), `PRIORITY` (as syslog), `SYSLOG_FACILITY=10`, `SYSLOG_IDENTIFIER=kmsentry`, and
//! `KMSENTRY_*` for the fields a journal query filters on (`KMSENTRY_KIND`, `KMSENTRY_PATH`, …;
//! names escaped for logs). When the socket is absent (no systemd), that is said once and the
//! sink stays quiet until it appears.

use super::record::{syslog_severity, Rendered};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// journald's native socket.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// Encode fields in the native protocol.
pub fn encode(fields: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        out.extend_from_slice(k.as_bytes());
        if v.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        } else {
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// The journal fields for a record.
pub fn fields(r: &Rendered<'_>) -> Vec<(&'static str, String)> {
    let esc = |b: &[u8]| crate::sanitize::escape(b).into_owned();
    let a = r.alert;
    let mut f = vec![
        ("MESSAGE", r.line.to_string()),
        ("PRIORITY", syslog_severity(a.severity).to_string()),
        ("SYSLOG_FACILITY", "10".to_string()),
        ("SYSLOG_IDENTIFIER", "kmsentry".to_string()),
        ("KMSENTRY_KIND", a.kind.as_str().to_string()),
        ("KMSENTRY_SEVERITY", a.severity.as_str().to_string()),
        ("KMSENTRY_SEQ", r.seq.to_string()),
    ];
    if let Some(p) = &a.path {
        f.push(("KMSENTRY_PATH", esc(p)));
    }
    if let Some(g) = &a.group {
        f.push(("KMSENTRY_GROUP", esc(g.as_bytes())));
    }
    if let Some(c) = a.class {
        f.push(("KMSENTRY_CLASS", c.as_str().to_string()));
    }
    if let Some(o) = a.outcome {
        f.push(("KMSENTRY_OUTCOME", o.as_str().to_string()));
    }
    if let Some(p) = &a.process {
        f.push(("KMSENTRY_PROCESS_PID", p.pid.to_string()));
        if let Some(exe) = &p.exe {
            f.push(("KMSENTRY_PROCESS_EXE", esc(exe)));
        }
        if let Some(uid) = p.uid {
            f.push(("KMSENTRY_PROCESS_UID", uid.to_string()));
        }
        if let Some(u) = &p.user {
            f.push(("KMSENTRY_PROCESS_USER", esc(u.as_bytes())));
        }
    }
    if let Some(rule) = &a.rule {
        f.push(("KMSENTRY_RULE", esc(rule.as_bytes())));
    }
    f
}

/// The journald sink.
#[derive(Debug)]
pub struct JournaldSink {
    path: PathBuf,
    sock: Option<UnixDatagram>,
    absent: bool,
}

impl JournaldSink {
    /// A sink sending to `path` (normally [`SOCKET`]).
    pub fn new(path: &Path) -> JournaldSink {
        JournaldSink {
            path: path.to_path_buf(),
            sock: None,
            absent: false,
        }
    }

    /// Send one record. A missing socket is reported once (as a warning) and then ignored.
    pub fn send(&mut self, r: &Rendered<'_>) -> std::io::Result<()> {
        let sock = match &mut self.sock {
            Some(s) => s,
            None => {
                let s = UnixDatagram::unbound()?;
                s.set_write_timeout(Some(super::syslog::IO_TIMEOUT))?;
                self.sock.insert(s)
            }
        };
        match sock.send_to(&encode(&fields(r)), &self.path) {
            Ok(_) => {
                if self.absent {
                    self.absent = false;
                    tracing::info!("journald socket is back; sending alerts to the journal");
                }
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                if !self.absent {
                    self.absent = true;
                    tracing::warn!(
                        "journald socket {} is absent ({e}); alerts are not sent to the journal until it appears",
                        crate::sanitize::Name(std::os::unix::ffi::OsStrExt::as_bytes(
                            self.path.as_os_str()
                        ))
                    );
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Alert, Kind};
    use crate::baseline::diff::Severity;

    #[test]
    fn values_with_newlines_use_the_length_prefixed_form() {
        let b = encode(&[
            ("MESSAGE", "one line".into()),
            ("KMSENTRY_PATH", "a\nb".into()),
        ]);
        let mut want = b"MESSAGE=one line\nKMSENTRY_PATH\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\n");
        assert_eq!(b, want);
    }

    #[test]
    fn fields_carry_priority_identifier_and_escaped_names() {
        let mut a = Alert::new(Kind::Modified, Severity::High);
        a.path = Some(b"/etc/k\ney".to_vec());
        let r = Rendered {
            line: "{}",
            alert: &a,
            ts: "t",
            seq: 3,
            host: "h",
        };
        let f = fields(&r);
        let get = |k: &str| f.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PRIORITY"), Some("3"));
        assert_eq!(get("SYSLOG_IDENTIFIER"), Some("kmsentry"));
        assert_eq!(get("KMSENTRY_KIND"), Some("modified"));
        assert_eq!(get("KMSENTRY_PATH"), Some("/etc/k\\ney"));
        assert_eq!(get("KMSENTRY_SEQ"), Some("3"));
    }

    #[test]
    fn a_datagram_reaches_a_bound_socket_and_an_absent_one_is_not_an_error() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("journal.sock");
        let rx = UnixDatagram::bind(&p).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let a = Alert::new(Kind::Started, Severity::Info);
        let r = Rendered {
            line: "{\"kind\":\"started\"}",
            alert: &a,
            ts: "t",
            seq: 1,
            host: "h",
        };
        let mut s = JournaldSink::new(&p);
        s.send(&r).unwrap();
        let mut buf = [0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"MESSAGE={\"kind\":\"started\"}\nPRIORITY=6\n"));
        let mut gone = JournaldSink::new(&t.path().join("nope.sock"));
        gone.send(&r).unwrap();
        assert!(gone.absent);
    }
}
