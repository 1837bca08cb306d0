//! RFC 5424 syslog: over a unix datagram socket (`/dev/log`), UDP, TCP with octet-counting
//! framing (RFC 6587), or TLS with a client certificate (RFC 5425, [`super::tls`], through a
//! bounded on-disk queue).
//!
//! Frame: `<PRI>1 TS HOST kmsentry PID KIND [kmsentry@32473 k="v" …] JSON` where PRI is
//! facility authpriv (10) × 8 + the severity (critical 2, high 3, medium 4, low 5, info 6),
//! MSGID is the alert kind, and MSG is the record's canonical JSON line (no BOM: the JSON is
//! always UTF-8 and a SIEM parses it as is). Structured-data values are names escaped for logs
//! ([`crate::sanitize::escape`]: no control characters) with `"`, `\` and `]` escaped as
//! RFC 5424 requires.
//!
//! Must not block for long: datagram sends and TCP writes time out after [`IO_TIMEOUT`], TCP
//! connects after [`CONNECT_TIMEOUT`]; a failed TCP connection is retried with backoff (1 s
//! doubling to 60 s) while records wait in a bounded queue ([`TCP_BACKLOG`], oldest dropped
//! and counted). Host names are resolved by the system resolver when (re)connecting, which can
//! be slow: prefer IP addresses.

use super::record::{syslog_severity, Rendered};
use super::tls::{TlsSink, TlsTarget};
use super::Alert;
use crate::error::Error;
use std::collections::VecDeque;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Private enterprise number used for the structured-data ID (`kmsentry@32473`; 32473 is the
/// IANA number reserved for documentation examples).
pub const SD_ID: &str = "kmsentry@32473";
/// Facility authpriv.
const FACILITY: u8 = 10;
/// Bound on a datagram send or a TCP write.
pub const IO_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on a TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Frames kept for a TCP collector while it is unreachable.
pub const TCP_BACKLOG: usize = 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where syslog records go: `unix:/dev/log`, `udp:HOST:PORT`, `tcp:HOST:PORT`,
/// `tls:HOST:PORT` (IPv6 hosts in brackets: `udp:[::1]:514`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyslogTarget {
    Unix(PathBuf),
    Udp {
        host: String,
        port: u16,
    },
    Tcp {
        host: String,
        port: u16,
    },
    /// RFC 5425; parsing gives the host and port, the caller adds certificates and queue.
    Tls(Box<TlsTarget>),
}

impl std::str::FromStr for SyslogTarget {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "syslog target `{}`: {why} (expected unix:/dev/log, udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT)",
                crate::sanitize::escape(s.as_bytes())
            ))
        };
        let (scheme, rest) = s.split_once(':').ok_or_else(|| bad("no scheme"))?;
        if scheme == "unix" {
            if !rest.starts_with('/') {
                return Err(bad("the socket path must be absolute"));
            }
            return Ok(SyslogTarget::Unix(PathBuf::from(rest)));
        }
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("bad port"))?;
        let host = match host.strip_prefix('[') {
            Some(h) => h.strip_suffix(']').ok_or_else(|| bad("unclosed `[`"))?,
            None if host.contains(':') => return Err(bad("put an IPv6 address in brackets")),
            None => host,
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let host = host.to_string();
        match scheme {
            "udp" => Ok(SyslogTarget::Udp { host, port }),
            "tcp" => Ok(SyslogTarget::Tcp { host, port }),
            "tls" => Ok(SyslogTarget::Tls(Box::new(TlsTarget::new(host, port)))),
            _ => Err(bad("unknown scheme")),
        }
    }
}

impl std::fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hp = |f: &mut std::fmt::Formatter<'_>, scheme, host: &str, port| {
            if host.contains(':') {
                write!(f, "{scheme}:[{host}]:{port}")
            } else {
                write!(f, "{scheme}:{host}:{port}")
            }
        };
        match self {
            SyslogTarget::Unix(p) => write!(
                f,
                "unix:{}",
                crate::sanitize::Name(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
            ),
            SyslogTarget::Udp { host, port } => hp(f, "udp", host, *port),
            SyslogTarget::Tcp { host, port } => hp(f, "tcp", host, *port),
            SyslogTarget::Tls(t) => hp(f, "tls", &t.host, t.port),
        }
    }
}

/// Escape an SD-PARAM value: `"`, `\` and `]` get a backslash (RFC 5424 §6.3.3).
pub fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A header field: printable US-ASCII only, at most `max` bytes, `-` when empty.
fn header(v: &str, max: usize) -> String {
    let s: String = v
        .bytes()
        .take(max)
        .map(|b| {
            if (33..=126).contains(&b) {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// The structured-data element for a record.
pub fn structured_data(r: &Rendered<'_>) -> String {
    let a = r.alert;
    let mut params: Vec<(&str, String)> = vec![
        ("kind", a.kind.as_str().into()),
        ("severity", a.severity.as_str().into()),
        ("seq", r.seq.to_string()),
    ];
    if let Some(p) = &a.path {
        params.push(("path", crate::sanitize::escape(p).into_owned()));
    }
    if let Some(g) = &a.group {
        params.push(("group", crate::sanitize::escape(g.as_bytes()).into_owned()));
    }
    if let Some(c) = a.class {
        params.push(("class", c.as_str().into()));
    }
    if let Some(o) = a.outcome {
        params.push(("outcome", o.as_str().into()));
    }
    if let Some(p) = &a.process {
        params.push(("pid", p.pid.to_string()));
        if let Some(exe) = &p.exe {
            params.push(("exe", crate::sanitize::escape(exe).into_owned()));
        }
        if let Some(uid) = p.uid {
            params.push(("uid", uid.to_string()));
        }
        if let Some(u) = &p.user {
            params.push(("user", crate::sanitize::escape(u.as_bytes()).into_owned()));
        }
    }
    if let Some(rule) = &a.rule {
        params.push((
            "rule",
            crate::sanitize::escape(rule.as_bytes()).into_owned(),
        ));
    }
    let mut sd = format!("[{SD_ID}");
    for (k, v) in params {
        sd.push_str(&format!(" {k}=\"{}\"", sd_escape(&v)));
    }
    sd.push(']');
    sd
}

/// The RFC 5424 message for a record (no transport framing).
pub fn format(r: &Rendered<'_>) -> String {
    let pri = FACILITY * 8 + syslog_severity(r.alert.severity);
    format!(
        "<{pri}>1 {} {} kmsentry {} {} {} {}",
        header(r.ts, 64),
        header(r.host, 255),
        std::process::id(),
        header(r.alert.kind.as_str(), 32),
        structured_data(r),
        r.line
    )
}

/// RFC 6587 octet counting: `LEN SP MSG`.
pub fn frame_octet_counted(msg: &str) -> Vec<u8> {
    let mut v = format!("{} ", msg.len()).into_bytes();
    v.extend_from_slice(msg.as_bytes());
    v
}

/// Resolves `host:port` at most once per backoff period.
#[derive(Debug)]
struct Peer {
    host: String,
    port: u16,
    addr: Option<SocketAddr>,
}

impl Peer {
    fn addr(&mut self) -> std::io::Result<SocketAddr> {
        if let Some(a) = self.addr {
            return Ok(a);
        }
        let a = (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("host name has no address"))?;
        self.addr = Some(a);
        Ok(a)
    }
}

#[derive(Debug)]
enum Conn {
    Unix {
        path: PathBuf,
        sock: Option<UnixDatagram>,
    },
    Udp {
        peer: Peer,
        sock: Option<UdpSocket>,
    },
    Tcp {
        peer: Peer,
        stream: Option<TcpStream>,
        next_try: Instant,
        backoff: Duration,
        backlog: VecDeque<Vec<u8>>,
        dropped: u64,
    },
    /// The sender thread and its queue, or why they could not start.
    Tls(Result<TlsSink, String>),
}

/// One syslog destination.
#[derive(Debug)]
pub struct SyslogSink {
    target: SyslogTarget,
    conn: Conn,
}

impl SyslogSink {
    /// A sink for `target`; nothing is opened or resolved until the first record.
    pub fn new(target: &SyslogTarget) -> SyslogSink {
        let conn = match target {
            SyslogTarget::Unix(p) => Conn::Unix {
                path: p.clone(),
                sock: None,
            },
            SyslogTarget::Udp { host, port } => Conn::Udp {
                peer: Peer {
                    host: host.clone(),
                    port: *port,
                    addr: None,
                },
                sock: None,
            },
            SyslogTarget::Tcp { host, port } => Conn::Tcp {
                peer: Peer {
                    host: host.clone(),
                    port: *port,
                    addr: None,
                },
                stream: None,
                next_try: Instant::now(),
                backoff: Duration::from_secs(1),
                backlog: VecDeque::new(),
                dropped: 0,
            },
            SyslogTarget::Tls(t) => Conn::Tls(TlsSink::start(t).map_err(|e| e.to_string())),
        };
        SyslogSink {
            target: target.clone(),
            conn,
        }
    }

    /// The target, for messages.
    pub fn target(&self) -> &SyslogTarget {
        &self.target
    }

    /// Health alerts the sink wants written (a TLS receiver's queue filled up or drained,
    /// its certificate was refused). The alerter writes them into the chain like any alert.
    pub fn take_health(&mut self) -> Vec<Alert> {
        match &mut self.conn {
            Conn::Tls(Ok(t)) => t.take_health(),
            _ => Vec::new(),
        }
    }

    /// Send one record. An error means it was not delivered now (TCP and TLS keep it queued).
    pub fn send(&mut self, r: &Rendered<'_>) -> std::io::Result<()> {
        let msg = format(r);
        match &mut self.conn {
            Conn::Tls(Ok(t)) => t.send(&frame_octet_counted(&msg), r.seq),
            Conn::Tls(Err(e)) => Err(std::io::Error::other(e.clone())),
            Conn::Unix { path, sock } => {
                let s = match sock {
                    Some(s) => s,
                    None => {
                        let s = UnixDatagram::unbound()?;
                        s.set_write_timeout(Some(IO_TIMEOUT))?;
                        sock.insert(s)
                    }
                };
                s.send_to(msg.as_bytes(), &*path).map(drop)
            }
            Conn::Udp { peer, sock } => {
                let addr = peer.addr()?;
                let s = match sock {
                    Some(s) => s,
                    None => {
                        let local: SocketAddr = if addr.is_ipv6() {
                            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                        } else {
                            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                        };
                        let s = UdpSocket::bind(local)?;
                        s.set_write_timeout(Some(IO_TIMEOUT))?;
                        sock.insert(s)
                    }
                };
                s.send_to(msg.as_bytes(), addr).map(drop)
            }
            Conn::Tcp {
                peer,
                stream,
                next_try,
                backoff,
                backlog,
                dropped,
            } => {
                if backlog.len() >= TCP_BACKLOG {
                    backlog.pop_front();
                    *dropped += 1;
                }
                backlog.push_back(frame_octet_counted(&msg));
                if stream.is_none() {
                    if Instant::now() < *next_try {
                        return Err(std::io::Error::other(format!(
                            "not connected; {} record(s) queued, {} dropped",
                            backlog.len(),
                            dropped
                        )));
                    }
                    let connected = peer.addr().and_then(|a| {
                        let s = TcpStream::connect_timeout(&a, CONNECT_TIMEOUT)?;
                        s.set_write_timeout(Some(IO_TIMEOUT))?;
                        let _ = s.set_nodelay(true);
                        Ok(s)
                    });
                    match connected {
                        Ok(s) => *stream = Some(s),
                        Err(e) => {
                            // Resolve again next time: the collector may have moved.
                            peer.addr = None;
                            *next_try = Instant::now() + *backoff;
                            *backoff = (*backoff * 2).min(MAX_BACKOFF);
                            return Err(e);
                        }
                    }
                }
                let Some(s) = stream.as_mut() else {
                    return Err(std::io::Error::other("not connected"));
                };
                while let Some(front) = backlog.front() {
                    if let Err(e) = s.write_all(front) {
                        *stream = None;
                        *next_try = Instant::now() + *backoff;
                        *backoff = (*backoff * 2).min(MAX_BACKOFF);
                        return Err(e);
                    }
                    backlog.pop_front();
                }
                *backoff = Duration::from_secs(1);
                *dropped = 0;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Alert, Kind, Outcome};
    use crate::baseline::diff::Severity;

    #[test]
    fn targets_parse_and_print_back() {
        for (s, t) in [
            ("unix:/dev/log", SyslogTarget::Unix("/dev/log".into())),
            (
                "udp:127.0.0.1:514",
                SyslogTarget::Udp {
                    host: "127.0.0.1".into(),
                    port: 514,
                },
            ),
            (
                "tcp:siem.example:6514",
                SyslogTarget::Tcp {
                    host: "siem.example".into(),
                    port: 6514,
                },
            ),
            (
                "tls:siem.example:6514",
                SyslogTarget::Tls(Box::new(TlsTarget::new("siem.example".into(), 6514))),
            ),
            (
                "udp:[::1]:514",
                SyslogTarget::Udp {
                    host: "::1".into(),
                    port: 514,
                },
            ),
        ] {
            assert_eq!(s.parse::<SyslogTarget>().unwrap(), t, "{s}");
            assert_eq!(t.to_string(), s);
        }
        for bad in [
            "dev/log",
            "unix:dev/log",
            "udp:host",
            "udp:host:0",
            "udp:host:99999",
            "tcp::514",
            "tcp:::1:514",
            "tls:h",
            "http:h:1",
        ] {
            let e = bad.parse::<SyslogTarget>().unwrap_err();
            assert_eq!(e.exit_code(), crate::exit::ExitCode::Usage, "{bad}");
        }
    }

    #[test]
    fn sd_values_escape_quote_backslash_and_bracket() {
        assert_eq!(sd_escape(r#"a"b\c]d[e"#), r#"a\"b\\c\]d[e"#);
    }

    #[test]
    fn the_frame_is_rfc5424_with_authpriv_pri_and_escaped_sd() {
        let mut a = Alert::new(Kind::Access, Severity::Critical);
        a.path = Some(b"/etc/k]\"ey\n\xff".to_vec());
        a.outcome = Some(Outcome::Denied);
        let r = Rendered {
            line: "{\"x\":1}",
            alert: &a,
            ts: "2026-01-02T03:04:05.000001Z",
            seq: 5,
            host: "web 1",
        };
        let m = format(&r);
        let want = format!(
            "<82>1 2026-01-02T03:04:05.000001Z web_1 kmsentry {} access [kmsentry@32473 kind=\"access\" severity=\"critical\" seq=\"5\" path=\"/etc/k\\]\\\"ey\\\\n\\\\xff\" outcome=\"denied\"] {{\"x\":1}}",
            std::process::id()
        );
        assert_eq!(m, want);
        assert_eq!(frame_octet_counted("abc"), b"3 abc");
        let info = Alert::new(Kind::Started, Severity::Info);
        let r = Rendered { alert: &info, ..r };
        assert!(format(&r).starts_with("<86>1 "));
    }
}
