//! RFC 5425: syslog over TLS to a receiver on another machine, with a client certificate,
//! through the bounded on-disk [`Queue`].
//!
//! The alerter only appends to the queue ([`TlsSink::send`]); a sender thread owns the
//! connection: it connects (TCP, then a TLS 1.2/1.3 handshake with rustls: the receiver's
//! certificate must chain to `--syslog-ca` and name the host, ours is `--syslog-cert`), writes
//! octet-counted frames (RFC 5425 §4.3), and reconnects with backoff (0.5 s doubling to
//! 30 s). There is never a fall-back to plain text: a refused certificate is an error, said
//! once per outage, and a `health` alert.
//!
//! Delivery: TCP accepts bytes that a receiver which dies a moment later never stores, and a
//! syslog receiver sends no acknowledgements. So a frame is confirmed (leaves the queue) only
//! once it was written [`CONFIRM_AFTER`] ago on a connection that is still up (checked by
//! reading it: a receiver that closed, restarted or sent a TLS alert is noticed within
//! [`PROBE_EVERY`]); each new connection first resends everything unconfirmed. The receiver's
//! file may therefore hold exact duplicates; `log verify` counts them once. What this cannot
//! catch is a receiver that keeps the connection open for longer than [`CONFIRM_AFTER`] while
//! not storing what it read, then loses it.
//!
//! Must not: block the alerter (it never touches the socket); send before the handshake
//! verified the receiver; keep running past the daemon (on drop it drains for at most
//! [`DRAIN`]).

use super::queue::{Cursor, Queue};
use super::{Alert, Kind};
use crate::baseline::diff::Severity;
use crate::error::{Error, Result};
use crate::sanitize::Name;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A frame is confirmed once written this long ago on a connection still up.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(5);
/// How often an idle connection is checked for a close or an alert from the receiver.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// At shutdown, how long the sender may go on delivering the backlog.
pub const DRAIN: Duration = Duration::from_secs(3);
/// TCP connect bound.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A write that makes no progress for this long ends the connection (then it is resent).
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Default queue bound.
pub const DEFAULT_QUEUE_BYTES: u64 = 64 << 20;
/// Default queue directory (per target, a subdirectory of it).
pub const DEFAULT_QUEUE_DIR: &str = "/var/lib/kmsentry/syslog-queue";
/// The IANA port for syslog over TLS.
pub const DEFAULT_PORT: u16 = 6514;

/// `tls:HOST:PORT` with its certificates and queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsTarget {
    pub host: String,
    pub port: u16,
    /// CA certificates (PEM) the receiver's certificate must chain to.
    pub ca: PathBuf,
    /// Our client certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The name the receiver's certificate must carry; the host by default.
    pub server_name: Option<String>,
    /// Queue directory for this target.
    pub queue_dir: PathBuf,
    pub queue_max_bytes: u64,
}

impl TlsTarget {
    /// A target with the default queue and no certificates yet (`--syslog-ca`,
    /// `--syslog-cert` and `--syslog-key` fill them in).
    pub fn new(host: String, port: u16) -> TlsTarget {
        TlsTarget {
            host,
            port,
            ca: PathBuf::new(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            server_name: None,
            queue_dir: PathBuf::new(),
            queue_max_bytes: DEFAULT_QUEUE_BYTES,
        }
    }

    /// `tls:HOST:PORT`.
    pub fn label(&self) -> String {
        if self.host.contains(':') {
            format!("tls:[{}]:{}", self.host, self.port)
        } else {
            format!("tls:{}:{}", self.host, self.port)
        }
    }

    /// The queue directory for `base` (`BASE/tls-HOST-PORT`, the host's odd bytes as `_`).
    pub fn queue_under(&self, base: &Path) -> PathBuf {
        let keep = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
        let host: String = self
            .host
            .chars()
            .map(|c| if keep(c) { c } else { '_' })
            .collect();
        base.join(format!("tls-{host}-{}", self.port))
    }

    /// Load the certificates and key and build the TLS client configuration: every problem
    /// with the files is a usage error naming the file, before the daemon starts.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let label = self.label();
        for (flag, p) in [
            ("--syslog-ca", &self.ca),
            ("--syslog-cert", &self.cert),
            ("--syslog-key", &self.key),
        ] {
            if p.as_os_str().is_empty() {
                return Err(Error::Usage(format!(
                    "syslog {label}: {flag} is required for a TLS receiver"
                )));
            }
        }
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| Error::io("read", p.as_os_str().as_bytes(), e));
        let bad = |p: &Path, what: String| {
            Error::Usage(format!(
                "syslog {label}: {}: {what}",
                Name(p.as_os_str().as_bytes())
            ))
        };
        let mut roots = rustls::RootCertStore::empty();
        let ca = read(&self.ca)?;
        for c in CertificateDer::pem_slice_iter(&ca) {
            let c = c.map_err(|e| bad(&self.ca, format!("not a PEM certificate ({e})")))?;
            roots
                .add(c)
                .map_err(|e| bad(&self.ca, format!("unusable CA certificate ({e})")))?;
        }
        if roots.is_empty() {
            return Err(bad(&self.ca, "no CA certificate in it".into()));
        }
        let certs = read(&self.cert)?;
        let chain = CertificateDer::pem_slice_iter(&certs)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(&self.cert, format!("not a PEM certificate ({e})")))?;
        if chain.is_empty() {
            return Err(bad(&self.cert, "no certificate in it".into()));
        }
        let key = read(&self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key)
            .map_err(|e| bad(&self.key, format!("no PEM private key in it ({e})")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Usage(format!("syslog {label}: TLS: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                bad(
                    &self.key,
                    format!("does not fit the certificate in --syslog-cert ({e})"),
                )
            })?;
        Ok(Arc::new(cfg))
    }

    fn server_name(&self) -> Result<ServerName<'static>> {
        let name = self.server_name.as_deref().unwrap_or(&self.host);
        ServerName::try_from(name.to_string()).map_err(|_| {
            Error::Usage(format!(
                "syslog {}: `{}` is not a DNS name or IP address to check the receiver's certificate against",
                self.label(),
                Name(name.as_bytes())
            ))
        })
    }

    /// Everything that can be checked before starting: files, key, name, queue directory.
    pub fn check(&self) -> Result<()> {
        self.client_config()?;
        self.server_name()?;
        Queue::open(&self.queue_dir, &self.label(), self.queue_max_bytes).map_err(|e| {
            Error::io(
                "open syslog queue",
                self.queue_dir.as_os_str().as_bytes(),
                e,
            )
        })?;
        Ok(())
    }
}

/// The alerter's handle: appends to the queue; the sender thread does the rest.
#[derive(Debug)]
pub struct TlsSink {
    queue: Arc<Queue>,
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsSink {
    /// Open the queue and start the sender. Unreachable receivers are not an error here.
    pub fn start(t: &TlsTarget) -> Result<TlsSink> {
        let cfg = t.client_config()?;
        let name = t.server_name()?;
        let queue = Arc::new(
            Queue::open(
                &t.queue_dir,
                &format!("syslog {}", t.label()),
                t.queue_max_bytes,
            )
            .map_err(|e| Error::io("open syslog queue", t.queue_dir.as_os_str().as_bytes(), e))?,
        );
        let (n, bytes) = queue.backlog();
        if n > 0 {
            tracing::info!(
                "syslog {}: {n} record(s) ({bytes} bytes) queued by an earlier run are sent first",
                t.label()
            );
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = Sender {
            target: t.clone(),
            label: format!("syslog {}", t.label()),
            cfg,
            name,
            queue: queue.clone(),
            conn: None,
            backoff: MIN_BACKOFF,
            next_try: Instant::now(),
            inflight: VecDeque::new(),
            outage: None,
            refused: None,
        };
        let d = done.clone();
        let thread = std::thread::Builder::new()
            .name("kmsentry-syslog-tls".into())
            .spawn(move || {
                sender.run();
                d.store(true, std::sync::atomic::Ordering::SeqCst);
            })
            .map_err(|e| Error::io("start syslog sender", t.label().into_bytes(), e))?;
        Ok(TlsSink {
            queue,
            done,
            thread: Some(thread),
        })
    }

    /// Queue one frame (never waits on the network).
    pub fn send(&mut self, frame: &[u8], seq: u64) -> std::io::Result<()> {
        self.queue.push(frame, seq)
    }

    /// Health alerts the queue or the sender wants written.
    pub fn take_health(&mut self) -> Vec<Alert> {
        self.queue.take_health()
    }
}

impl Drop for TlsSink {
    fn drop(&mut self) {
        self.queue.stop();
        let t = Instant::now();
        while !self.done.load(std::sync::atomic::Ordering::SeqCst)
            && t.elapsed() < DRAIN + Duration::from_secs(1)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.done.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(h) = self.thread.take() {
                let _ = h.join();
            }
        }
    }
}

struct Conn {
    tls: rustls::ClientConnection,
    sock: TcpStream,
    last_probe: Instant,
}

struct Sender {
    target: TlsTarget,
    label: String,
    cfg: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    queue: Arc<Queue>,
    conn: Option<Conn>,
    backoff: Duration,
    next_try: Instant,
    /// Written but unconfirmed: where each write ended, and when.
    inflight: VecDeque<(Cursor, Instant)>,
    /// Since when the receiver is unreachable, and when that was last said.
    outage: Option<(Instant, Instant)>,
    /// The last certificate refusal reported as a `health` alert.
    refused: Option<String>,
}

/// Why a connection attempt failed.
enum ConnectError {
    /// The receiver's certificate (or the TLS handshake) was refused: a security matter.
    Refused(String),
    Other(String),
}

fn describe_tls(e: &rustls::Error, label: &str) -> ConnectError {
    match e {
        rustls::Error::InvalidCertificate(c) => ConnectError::Refused(format!(
            "{label}: the receiver's certificate was refused ({c:?}): it is not signed by --syslog-ca or not issued for this host name; nothing was sent, and nothing ever goes in plain text"
        )),
        rustls::Error::AlertReceived(a) => ConnectError::Refused(format!(
            "{label}: the receiver refused the TLS handshake (alert {a:?}): does it accept our client certificate (--syslog-cert)?"
        )),
        other => ConnectError::Other(format!("{label}: TLS: {other}")),
    }
}

fn io_to_connect(e: std::io::Error, label: &str) -> ConnectError {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => describe_tls(t, label),
        None => ConnectError::Other(format!("{label}: {e}")),
    }
}

impl Sender {
    fn run(mut self) {
        let mut deadline = None;
        loop {
            if self.queue.stopping() {
                let d = *deadline.get_or_insert_with(|| Instant::now() + DRAIN);
                if Instant::now() >= d || (self.queue.all_sent() && self.conn.is_some()) {
                    break;
                }
                if self.conn.is_none() && Instant::now() + self.wait_for_retry() > d {
                    break;
                }
            }
            if self.conn.is_none() {
                let wait = self.wait_for_retry();
                if !wait.is_zero() {
                    self.queue.wait(wait.min(Duration::from_secs(1)));
                    continue;
                }
                self.connect();
                continue;
            }
            self.probe_if_due();
            if self.conn.is_none() {
                continue;
            }
            let mut done = None;
            while let Some((c, t)) = self.inflight.front().copied() {
                if t.elapsed() < CONFIRM_AFTER {
                    break;
                }
                done = Some(c);
                self.inflight.pop_front();
            }
            if let Some(c) = done {
                self.queue.confirm(c);
            }
            match self.queue.next_batch(64 << 10, PROBE_EVERY) {
                None => {}
                Some((data, end)) => {
                    if let Err(e) = self.write(&data) {
                        self.lost(&format!("{}: sending failed: {e}", self.label));
                    } else {
                        self.queue.mark_sent(end);
                        self.inflight.push_back((end, Instant::now()));
                    }
                }
            }
        }
        if let Some(mut c) = self.conn.take() {
            c.tls.send_close_notify();
            let _ = c.tls.write_tls(&mut c.sock);
        }
    }

    fn wait_for_retry(&self) -> Duration {
        self.next_try.saturating_duration_since(Instant::now())
    }

    fn connect(&mut self) {
        match self.try_connect() {
            Ok(c) => {
                let version = c
                    .tls
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                self.conn = Some(c);
                self.backoff = MIN_BACKOFF;
                self.refused = None;
                self.queue.rewind();
                self.inflight.clear();
                let (n, _) = self.queue.backlog();
                match self.outage.take() {
                    Some((since, _)) => tracing::warn!(
                        "{}: connected again ({version}) after {:.1} s; sending {n} queued record(s)",
                        self.label,
                        since.elapsed().as_secs_f64()
                    ),
                    None => tracing::info!("{}: connected ({version})", self.label),
                }
            }
            Err(e) => {
                self.next_try = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                let msg = match &e {
                    ConnectError::Refused(m) | ConnectError::Other(m) => m.clone(),
                };
                self.say_outage(&msg);
                if let ConnectError::Refused(m) = e {
                    if self.refused.as_deref() != Some(m.as_str()) {
                        tracing::error!("{m}");
                        let mut a = Alert::new(Kind::Health, Severity::High);
                        a.rule = Some("syslog-tls-refused".into());
                        a.detail.insert("sink".into(), self.label.clone().into());
                        a.detail.insert("message".into(), m.clone().into());
                        self.queue.post_health(a);
                        self.refused = Some(m);
                    }
                }
            }
        }
    }

    /// Warn when an outage starts, then at most once a minute while it lasts.
    fn say_outage(&mut self, msg: &str) {
        let now = Instant::now();
        let (n, bytes) = self.queue.backlog();
        match &mut self.outage {
            None => {
                tracing::warn!(
                    "{msg}; records are queued in {} ({n} now, {bytes} bytes) and sent when it is back",
                    Name(self.target.queue_dir.as_os_str().as_bytes())
                );
                self.outage = Some((now, now));
            }
            Some((since, said)) if said.elapsed() >= Duration::from_secs(60) => {
                tracing::warn!(
                    "{msg} (unreachable for {:.0} s; {n} record(s), {bytes} bytes queued)",
                    since.elapsed().as_secs_f64()
                );
                *said = now;
            }
            Some(_) => tracing::debug!("{msg}"),
        }
    }

    fn lost(&mut self, why: &str) {
        self.conn = None;
        self.inflight.clear();
        self.queue.rewind();
        // Try again at once (a receiver restart is quick), then back off.
        self.next_try = Instant::now();
        self.say_outage(why);
    }

    fn try_connect(&self) -> std::result::Result<Conn, ConnectError> {
        let label = &self.label;
        let addrs: Vec<_> = (self.target.host.as_str(), self.target.port)
            .to_socket_addrs()
            .map_err(|e| ConnectError::Other(format!("{label}: cannot resolve the host: {e}")))?
            .collect();
        let mut last = None;
        let mut sock = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut sock = sock.ok_or_else(|| {
            ConnectError::Other(format!(
                "{label}: unreachable: {}",
                last.map_or("no address".to_string(), |e| e.to_string())
            ))
        })?;
        let setup = sock
            .set_write_timeout(Some(IO_TIMEOUT))
            .and_then(|()| sock.set_read_timeout(Some(IO_TIMEOUT)));
        setup.map_err(|e| ConnectError::Other(format!("{label}: {e}")))?;
        let _ = sock.set_nodelay(true);
        let mut tls = rustls::ClientConnection::new(self.cfg.clone(), self.name.clone())
            .map_err(|e| describe_tls(&e, label))?;
        while tls.is_handshaking() {
            tls.complete_io(&mut sock)
                .map_err(|e| io_to_connect(e, label))?;
        }
        let mut c = Conn {
            tls,
            sock,
            last_probe: Instant::now() - PROBE_EVERY,
        };
        // A receiver that refuses our certificate says so right after a TLS 1.3 handshake.
        std::thread::sleep(Duration::from_millis(50));
        probe(&mut c).map_err(|e| match e {
            Probe::Tls(t) => describe_tls(&t, label),
            Probe::Closed(m) => ConnectError::Refused(format!(
                "{label}: the receiver closed the connection right after the handshake ({m}): does it accept our client certificate (--syslog-cert)?"
            )),
        })?;
        Ok(c)
    }

    fn probe_if_due(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        if c.last_probe.elapsed() < PROBE_EVERY {
            return;
        }
        c.last_probe = Instant::now();
        if let Err(e) = probe(c) {
            let why = match e {
                Probe::Tls(t) => match describe_tls(&t, &self.label) {
                    ConnectError::Refused(m) | ConnectError::Other(m) => m,
                },
                Probe::Closed(m) => {
                    format!("{}: the receiver closed the connection ({m})", self.label)
                }
            };
            self.lost(&why);
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let Some(c) = self.conn.as_mut() else {
            return Err(std::io::Error::other("not connected"));
        };
        c.tls.writer().write_all(data)?;
        while c.tls.wants_write() {
            c.tls.write_tls(&mut c.sock)?;
        }
        Ok(())
    }
}

enum Probe {
    Tls(rustls::Error),
    Closed(String),
}

/// Read whatever the receiver sent without waiting: nothing (alive), session tickets (alive),
/// a close, EOF or a TLS alert (gone).
fn probe(c: &mut Conn) -> std::result::Result<(), Probe> {
    if c.sock.set_nonblocking(true).is_err() {
        return Err(Probe::Closed("socket error".into()));
    }
    let r = loop {
        match c.tls.read_tls(&mut c.sock) {
            Ok(0) => break Err(Probe::Closed("end of stream".into())),
            Ok(_) => {
                if let Err(e) = c.tls.process_new_packets() {
                    break Err(Probe::Tls(e));
                }
                let mut buf = [0u8; 512];
                match c.tls.reader().read(&mut buf) {
                    Ok(0) => break Err(Probe::Closed("close_notify".into())),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => break Err(Probe::Closed(e.to_string())),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) => break Err(Probe::Closed(e.to_string())),
        }
    };
    if c.sock.set_nonblocking(false).is_err() {
        return Err(Probe::Closed("socket error".into()));
    }
    r
}
