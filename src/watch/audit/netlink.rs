//! The two `NETLINK_AUDIT` sockets: a control socket (status, rules; request and wait for the
//! kernel's answer, bounded by a receive timeout) and a reader bound to the read-only
//! multicast group `AUDIT_NLGRP_READLOG`, which gets a copy of every record without taking
//! auditd's unicast connection away.
//!
//! Safe code only: `rustix` does the system calls, messages are built and split here as
//! byte buffers in host byte order (netlink's order).

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const AUDIT_GET: u16 = 1000;
pub const AUDIT_SET: u16 = 1001;
pub const AUDIT_ADD_RULE: u16 = 1011;
pub const AUDIT_DEL_RULE: u16 = 1012;
pub const AUDIT_LIST_RULES: u16 = 1013;

pub const AUDIT_SYSCALL: u16 = 1300;
pub const AUDIT_PATH: u16 = 1302;
pub const AUDIT_CWD: u16 = 1307;
pub const AUDIT_EOE: u16 = 1320;
pub const AUDIT_PROCTITLE: u16 = 1327;
/// A fanotify listener's answer, logged because it asked (`FAN_AUDIT`).
pub const AUDIT_FANOTIFY: u16 = 1331;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const HDR: usize = 16;
const AUDIT_STATUS_ENABLED: u32 = 0x1;
/// `AUDIT_NLGRP_READLOG` is group 1: bit 0 of the bind mask.
const READLOG_GROUPS: u32 = 1;
/// Large enough for any audit message (the kernel caps records at 8970 bytes).
const RECV_BUF: usize = 64 * 1024;
/// Every control request is answered within this, or fails.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// One netlink message: its type and payload.
pub struct Message<'a> {
    pub kind: u16,
    pub payload: &'a [u8],
}

/// Splits a datagram into netlink messages; stops at the first malformed header.
pub fn split(mut buf: &[u8]) -> Vec<Message<'_>> {
    let mut out = Vec::new();
    while buf.len() >= HDR {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        // The audit subsystem has sent some records with nlmsg_len short of the payload
        // (only the header counted); take the rest of the datagram as the payload then.
        let (payload, next) = if len < HDR || len > buf.len() {
            (&buf[HDR..], buf.len())
        } else {
            (&buf[HDR..len], (len + 3) & !3)
        };
        out.push(Message { kind, payload });
        buf = buf.get(next..).unwrap_or(&[]);
    }
    out
}

fn open_socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::AUDIT),
    )?)
}

/// What `AUDIT_GET` reports (the fields we use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// 0 off, 1 on, 2 on and locked until reboot.
    pub enabled: u32,
    /// The pid of the audit daemon holding the unicast connection (0: none).
    pub pid: u32,
    /// Records the kernel dropped since boot (backlog full, rate limit, out of memory).
    pub lost: u32,
    /// How many records may wait in the kernel before it drops (or makes callers wait).
    pub backlog_limit: u32,
}

pub struct Control {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Control {
    pub fn open() -> io::Result<Control> {
        let fd = open_socket()?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(CONTROL_TIMEOUT),
        )?;
        Ok(Control {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    fn send(&mut self, kind: u16, flags: u16, payload: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = HDR + payload.len();
        let mut msg = Vec::with_capacity((len + 3) & !3);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg.resize((len + 3) & !3, 0);
        rustix::net::sendto(
            &self.fd,
            &msg,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )?;
        Ok(self.seq)
    }

    /// Receives replies to `seq`, handing each non-error message to `each`, until the kernel's
    /// acknowledgement (or `NLMSG_DONE` for a dump). An error acknowledgement becomes `Err`.
    fn replies(
        &mut self,
        seq: u32,
        dump: bool,
        mut each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        // Bounded: each recv waits at most CONTROL_TIMEOUT, and a dump has finitely many rules;
        // the count only guards against a kernel that never terminates the exchange.
        for _ in 0..1_000_000 {
            let (n, _) = rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::empty())?;
            let data = &self.buf[..n.min(self.buf.len())];
            let mut off = 0;
            while off + HDR <= data.len() {
                let h = &data[off..];
                let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let kind = u16::from_ne_bytes([h[4], h[5]]);
                let mseq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
                if len < HDR || len > h.len() {
                    break;
                }
                let payload = &h[HDR..len];
                off += (len + 3) & !3;
                if mseq != seq {
                    continue;
                }
                match kind {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc_eio());
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        if !dump {
                            return Ok(());
                        }
                    }
                    NLMSG_DONE => return Ok(()),
                    _ => {
                        each(kind, payload);
                        if !dump {
                            // AUDIT_GET answers with its data and no acknowledgement.
                            return Ok(());
                        }
                    }
                }
            }
        }
        Err(io::Error::from(io::ErrorKind::TimedOut))
    }

    pub fn status(&mut self) -> io::Result<Status> {
        let seq = self.send(AUDIT_GET, 0, &[])?;
        let mut st = None;
        self.replies(seq, false, |kind, p| {
            if kind == AUDIT_GET {
                let w = |i: usize| {
                    p.get(i * 4..i * 4 + 4)
                        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                };
                if let (Some(enabled), Some(pid), Some(backlog_limit), Some(lost)) =
                    (w(1), w(3), w(5), w(6))
                {
                    st = Some(Status {
                        enabled,
                        pid,
                        lost,
                        backlog_limit,
                    });
                }
            }
        })?;
        st.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))
    }

    /// `AUDIT_SET` of `enabled` alone.
    pub fn set_enabled(&mut self, enabled: u32) -> io::Result<()> {
        // struct audit_status: mask, enabled, then nine more u32 we leave at 0 (masked out).
        let mut p = Vec::with_capacity(44);
        p.extend_from_slice(&AUDIT_STATUS_ENABLED.to_ne_bytes());
        p.extend_from_slice(&enabled.to_ne_bytes());
        p.resize(44, 0);
        let seq = self.send(AUDIT_SET, NLM_F_ACK, &p)?;
        self.replies(seq, false, |_, _| {})
    }

    pub fn add_rule(&mut self, data: &[u8]) -> io::Result<()> {
        let seq = self.send(AUDIT_ADD_RULE, NLM_F_ACK, data)?;
        self.replies(seq, false, |_, _| {})
    }

    pub fn del_rule(&mut self, data: &[u8]) -> io::Result<()> {
        let seq = self.send(AUDIT_DEL_RULE, NLM_F_ACK, data)?;
        self.replies(seq, false, |_, _| {})
    }

    /// Every installed rule, as the kernel encodes it (ready to be sent back to delete it).
    pub fn list_rules(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let seq = self.send(AUDIT_LIST_RULES, NLM_F_ACK, &[])?;
        let mut out = Vec::new();
        self.replies(seq, true, |kind, p| {
            if kind == AUDIT_LIST_RULES {
                out.push(p.to_vec());
            }
        })?;
        Ok(out)
    }
}

fn libc_eio() -> i32 {
    rustix::io::Errno::IO.raw_os_error()
}

/// The multicast reader.
pub struct Reader {
    fd: OwnedFd,
    pub buf: Vec<u8>,
}

/// The receive buffer we ask for: bursts of denials (a brute-force loop over keys) must not
/// overflow it while the daemon is busy; `SO_RCVBUFFORCE` lets root exceed `rmem_max`.
const READER_RCVBUF: usize = 8 * 1024 * 1024;

impl Reader {
    pub fn open() -> io::Result<Reader> {
        let fd = open_socket()?;
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, READER_RCVBUF).is_err() {
            rustix::net::sockopt::set_socket_recv_buffer_size(&fd, READER_RCVBUF)?;
        }
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, READLOG_GROUPS))?;
        Ok(Reader {
            fd,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Sets the receive buffer (tests shrink it to overflow it with few records).
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        rustix::net::sockopt::set_socket_recv_buffer_size_force(&self.fd, bytes)
            .or_else(|_| rustix::net::sockopt::set_socket_recv_buffer_size(&self.fd, bytes))
            .map_err(io::Error::from)
    }

    /// Waits up to `timeout` for a datagram; returns its length (0 when none came).
    /// `ENOBUFS` (records were dropped because the buffer was full) is returned as an error.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<usize> {
        let ts = rustix::event::Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = [rustix::event::PollFd::new(
            &self.fd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => return Ok(0),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
        match rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::DONTWAIT) {
            Ok((n, _)) => Ok(n.min(self.buf.len())),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((HDR + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        m.resize((m.len() + 3) & !3, 0);
        m
    }

    #[test]
    fn splits_datagrams_and_survives_bad_lengths() {
        let mut d = msg(AUDIT_SYSCALL, b"abc");
        d.extend(msg(AUDIT_EOE, b"audit(1.0:1): "));
        let m = split(&d);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].kind, m[0].payload), (AUDIT_SYSCALL, &b"abc"[..]));
        assert_eq!(m[1].kind, AUDIT_EOE);
        let mut bad = msg(AUDIT_PATH, b"xyz");
        bad[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        let m = split(&bad);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].payload, b"xyz\0");
        assert!(split(&[1, 2, 3]).is_empty());
        let mut zero = msg(AUDIT_PATH, b"");
        zero[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(split(&zero).len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn split_never_panics(d in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = split(&d);
        }
    }
}
