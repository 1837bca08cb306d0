//! The `syslog` source: a unix datagram socket the daemon binds, so rsyslog (`omuxsock`),
//! syslog-ng (`unix-dgram()`) or `logger -u PATH` can forward lines to it. One datagram is
//! one line (a trailing `\n` or NUL is dropped); RFC 5424 and RFC 3164 are parsed by the
//! source's `format` like any line.
//!
//! Binding never follows a symlink and never removes what is not a stale socket:
//! - the name is `lstat`ed: a symlink, regular file, directory, FIFO or device there is
//!   refused (exit 2), never removed; a socket that someone still receives on (a `connect`
//!   succeeds) is refused too; a socket nobody listens on (a daemon that died) is stale;
//! - the socket is bound inside a fresh 0700 directory created beside the name, made 0600
//!   there (nobody else can reach it or swap it for a symlink before the `chmod`), and then
//!   renamed onto the name, which replaces a stale socket atomically;
//! - at drop the name is removed if it is still this socket (same inode).
//!
//! Must not: block (the socket is non-blocking; the caller polls it).

use crate::error::{Error, Result};
use crate::sanitize::Name;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Largest datagram read whole; longer ones are cut here and counted as oversized.
pub const MAX_DATAGRAM: usize = 64 << 10;

/// A bound syslog socket.
pub struct SyslogSocket {
    sock: UnixDatagram,
    path: PathBuf,
    ino: (u64, u64),
    /// Datagrams received since bind.
    pub seq: u64,
    buf: Vec<u8>,
}

fn refuse(path: &Path, why: &str) -> Error {
    Error::Usage(format!(
        "syslog source {}: {why}; expected a path where kmsentry may create its socket",
        Name(path.as_os_str().as_bytes())
    ))
}

impl SyslogSocket {
    /// Bind at `path` (see the module docs for what is refused).
    pub fn bind(path: &Path) -> Result<SyslogSocket> {
        let name = path.as_os_str().as_bytes().to_vec();
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| refuse(path, "no directory"))?;
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixDatagram::unbound()
                    .and_then(|s| s.connect(path))
                    .is_ok()
                {
                    return Err(refuse(path, "another process receives on this socket"));
                }
                // Stale: replaced by the rename below.
            }
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(path, "is a symlink (never followed or removed)"))
            }
            Ok(_) => return Err(refuse(path, "exists and is not a socket (never removed)")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("stat syslog socket", name, e)),
        }
        let pm = std::fs::symlink_metadata(parent).map_err(|e| {
            Error::io(
                "stat syslog socket directory",
                parent.as_os_str().as_bytes(),
                e,
            )
        })?;
        if !pm.is_dir() {
            return Err(refuse(
                path,
                "its directory is not a directory (or is a symlink)",
            ));
        }
        let mut tmpname = b".kmsentry-sock-".to_vec();
        tmpname.extend_from_slice(std::process::id().to_string().as_bytes());
        let tmpdir = parent.join(std::ffi::OsStr::from_bytes(&tmpname));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&tmpdir)
                .map_err(|e| {
                    Error::io("create socket directory", tmpdir.as_os_str().as_bytes(), e)
                })?;
        }
        let tmp = tmpdir.join("s");
        let res = (|| {
            let sock = UnixDatagram::bind(&tmp)
                .map_err(|e| Error::io("bind syslog socket", tmp.as_os_str().as_bytes(), e))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io("chmod syslog socket", tmp.as_os_str().as_bytes(), e))?;
            let m = std::fs::symlink_metadata(&tmp)
                .map_err(|e| Error::io("stat syslog socket", tmp.as_os_str().as_bytes(), e))?;
            std::fs::rename(&tmp, path)
                .map_err(|e| Error::io("place syslog socket", name.clone(), e))?;
            sock.set_nonblocking(true)
                .map_err(|e| Error::io("syslog socket", name.clone(), e))?;
            Ok(SyslogSocket {
                sock,
                path: path.to_path_buf(),
                ino: (m.dev(), m.ino()),
                seq: 0,
                buf: vec![0; MAX_DATAGRAM + 1],
            })
        })();
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_dir(&tmpdir);
        res
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// The next datagram, if one is waiting: (line, oversized).
    pub fn recv(&mut self) -> Option<(&[u8], bool)> {
        loop {
            match self.sock.recv(&mut self.buf) {
                Ok(n) => {
                    self.seq += 1;
                    let over = n > MAX_DATAGRAM;
                    let mut line = &self.buf[..n.min(MAX_DATAGRAM)];
                    while let [rest @ .., b'\n' | b'\0' | b'\r'] = line {
                        line = rest;
                    }
                    return Some((line, over));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }
}

impl Drop for SyslogSocket {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_0600_replaces_a_stale_socket_and_refuses_symlinks_and_files() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sys.sock");
        {
            let _stale = UnixDatagram::bind(&p).unwrap();
        }
        let mut s = SyslogSocket::bind(&p).unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        assert!(SyslogSocket::bind(&p).is_err(), "a live socket is refused");
        let c = UnixDatagram::unbound().unwrap();
        c.send_to(b"<13>Jan  2 03:04:05 h app: hello\n", &p)
            .unwrap();
        let (line, over) = s.recv().unwrap();
        assert_eq!(line, b"<13>Jan  2 03:04:05 h app: hello");
        assert!(!over);
        assert!(s.recv().is_none());
        drop(s);
        assert!(std::fs::symlink_metadata(&p).is_err(), "removed at drop");
        std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
        assert!(SyslogSocket::bind(&p).is_err());
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"x").unwrap();
        assert!(SyslogSocket::bind(&p).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"x", "never removed");
    }
}
