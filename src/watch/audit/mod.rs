//! Kernel access denials from the audit subsystem, over netlink, in-process.
//!
//! fanotify sees an open only once the kernel's own permission checks have passed, so a
//! non-root user failing to read a root-owned 0600 key is invisible to it. The audit subsystem
//! sees it: [`AuditWatch`] installs narrow exit rules (open-family syscalls, `exit=-EACCES` or
//! `exit=-EPERM`, `path=`/`dir=` per [`Target`], key `kmsentry-<pid>-<start>`), reads records from the
//! read-only multicast group (so auditd, if any, keeps its own connection), and joins each
//! event's records into a [`Denial`].
//!
//! Owns: the rules it installed (removed on drop, and stale ones of a killed earlier instance
//! removed on start), the audit enable flag if it had to turn audit on (restored on drop).
//! Must not: block longer than the timeout it is given, or report the daemon's own denials.
//! Design, limits and measurements: `docs/audit.md`.

mod correlate;
mod netlink;
mod record;
mod rule;

use std::collections::VecDeque;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

pub use netlink::Status;
pub use rule::{RuleSummary, MAX_RULES};

use crate::error::{Error, Result};
use crate::proc::ProcessInfo;

/// Something to watch: an absolute host path, a file (`path=` rule) or a directory and
/// everything beneath it (`dir=` rule).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub path: Vec<u8>,
    pub is_dir: bool,
}

/// One open the kernel refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// From `audit(SECS.MILLIS:SERIAL)`: millisecond precision.
    pub ts: jiff::Timestamp,
    pub serial: u64,
    /// Absolute path of the refused file: the target whose inode matched, else the name the
    /// process used (joined to its working directory when relative; as given when relative
    /// to another directory fd, which audit does not resolve).
    pub path: Vec<u8>,
    /// `open`, `openat`, `openat2`, `creat`, `truncate` (or `unknown`).
    pub syscall: &'static str,
    /// `EACCES` (13) or `EPERM` (1).
    pub errno: i32,
    /// pid, ppid, uid, euid, auid, exe, comm and cmdline from the records (`None` where the
    /// records lack one). `start_time` and `user` are `None`: audit does not carry them (the
    /// process has usually exited); the daemon fills in `user`.
    pub process: ProcessInfo,
}

/// Why kernel denials cannot be watched here. The daemon goes on without them and says so.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("kernel audit is not available here (this kernel has no audit support): kernel access denials will not be reported")]
    NoKernelSupport(#[source] io::Error),
    #[error("kernel audit is not available here (no CAP_AUDIT_CONTROL, or in a container): kernel access denials will not be reported")]
    NotPermitted(#[source] io::Error),
    #[error("kernel audit records cannot be read here (no CAP_AUDIT_READ, or in a container): kernel access denials will not be reported")]
    NoRead(#[source] io::Error),
    #[error("kernel audit records cannot be read in a private network namespace (e.g. systemd PrivateNetwork=yes): kernel access denials will not be reported")]
    PrivateNetwork,
    #[error("kernel audit rules are locked until reboot (enabled=2) and kmsentry's are not loaded: kernel access denials will not be reported")]
    Locked,
    #[error("kernel audit refused kmsentry's rules ({what}): kernel access denials will not be reported")]
    Refused {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Installed rules and the multicast reader. One per process: the key is
/// `kmsentry-<pid>-<start time>`.
pub struct AuditWatch {
    control: netlink::Control,
    reader: netlink::Reader,
    key: String,
    /// Encoded rules in the kernel, to delete on update and drop.
    installed: Vec<Vec<u8>>,
    /// `enabled` to put back on drop, when we had to switch audit on.
    restore_enabled: Option<u32>,
    correlator: correlate::Correlator,
    resolver: correlate::Resolver,
    ready: VecDeque<Denial>,
    skipped: Vec<Target>,
}

const KEY_PREFIX: &str = "kmsentry-";
const ENOENT: i32 = 2;
const ENOBUFS: i32 = 105;
const EEXIST: i32 = 17;

impl AuditWatch {
    /// Removes stale `kmsentry-` rules, installs rules for `targets` and starts reading.
    /// Targets whose directory does not exist are skipped (see [`AuditWatch::skipped`]).
    pub fn start(targets: &[Target]) -> std::result::Result<AuditWatch, Unavailable> {
        AuditWatch::start_with_key(targets, &own_key())
    }

    /// [`AuditWatch::start`] with a given rule key. Tests use it to leave rules behind as a
    /// killed instance would, and to stand in for another tool's rules.
    #[doc(hidden)]
    pub fn start_with_key(
        targets: &[Target],
        key: &str,
    ) -> std::result::Result<AuditWatch, Unavailable> {
        if key.is_empty() || key.len() > 200 || key.bytes().any(|b| b <= b' ' || b == b'"') {
            return Err(Unavailable::Refused {
                what: "rule key".into(),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        }
        let mut control = netlink::Control::open().map_err(Unavailable::NoKernelSupport)?;
        let status = control.status().map_err(Unavailable::NotPermitted)?;
        // The kernel multicasts records only in the initial network namespace; elsewhere the
        // reader would bind and then hear nothing. That namespace has a fixed inode number
        // (PROC_NET_INIT_INO, 0xEFFFFFF9, since Linux 3.8).
        if let Ok(own) = std::fs::read_link("/proc/self/ns/net") {
            if own.as_os_str().as_bytes() != b"net:[4026531833]" {
                return Err(Unavailable::PrivateNetwork);
            }
        }
        // Reader first: records of denials during rule setup must not be lost.
        let reader = netlink::Reader::open().map_err(Unavailable::NoRead)?;
        let mut restore_enabled = None;
        if status.enabled == 0 {
            control.set_enabled(1).map_err(Unavailable::NotPermitted)?;
            restore_enabled = Some(0);
        }
        let mut w = AuditWatch {
            control,
            reader,
            key: key.to_string(),
            installed: Vec::new(),
            restore_enabled,
            correlator: correlate::Correlator::new(key, std::process::id()),
            resolver: correlate::Resolver::default(),
            ready: VecDeque::new(),
            skipped: Vec::new(),
        };
        let refused = |e: io::Error, what: &str| {
            if status.enabled == 2 && e.raw_os_error() == Some(1) {
                Unavailable::Locked
            } else {
                Unavailable::Refused {
                    what: what.to_string(),
                    source: e,
                }
            }
        };
        w.remove_stale()
            .map_err(|e| refused(e, "removing stale rules"))?;
        w.install(targets).map_err(|e| refused(e, "adding rules"))?;
        Ok(w)
    }

    /// Replaces the rule set (on SIGHUP): new rules go in before old ones come out, so no
    /// target is unwatched in between.
    pub fn update(&mut self, targets: &[Target]) -> Result<()> {
        self.install(targets)
            .map_err(|e| Error::io("replace kernel audit rules", self.key.as_bytes(), e))
    }

    /// Waits up to `timeout` for the next denial. `Ok(None)` when none came. An error for
    /// which [`is_lost_records`] holds means records were dropped (raise an alert, go on).
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Denial>> {
        let deadline = Instant::now() + timeout;
        // At least one (non-blocking, for a zero timeout) read, then until the deadline; on a
        // busy host the records keep coming, so the deadline is checked after every read.
        loop {
            let now = Instant::now();
            let flushed = self.correlator.expire(now, &self.resolver);
            self.ready.extend(flushed);
            if let Some(d) = self.ready.pop_front() {
                return Ok(Some(d));
            }
            let mut wait = deadline.saturating_duration_since(now);
            if let Some(f) = self.correlator.next_deadline() {
                wait = wait.min(f.saturating_duration_since(now));
            }
            match self.reader.recv(wait) {
                Ok(n) => {
                    let now = Instant::now();
                    let buf = self.reader.buf.get(..n).unwrap_or(&[]);
                    for m in netlink::split(buf) {
                        if let Some(d) =
                            self.correlator.feed(m.kind, m.payload, now, &self.resolver)
                        {
                            self.ready.push_back(d);
                        }
                    }
                }
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    self.correlator.clear();
                    return Err(Error::io(
                        "kernel audit records lost (receive buffer overflowed)",
                        b"audit netlink".to_vec(),
                        e,
                    ));
                }
                Err(e) => {
                    return Err(Error::io(
                        "receive kernel audit records",
                        b"audit netlink".to_vec(),
                        e,
                    ))
                }
            }
            if Instant::now() >= deadline {
                let flushed = self.correlator.expire(Instant::now(), &self.resolver);
                self.ready.extend(flushed);
                return Ok(self.ready.pop_front());
            }
        }
    }

    /// Shrinks the reader's receive buffer. Tests use it to show how an overflow is reported
    /// without flooding the host's audit subsystem (which other readers share) with tens of
    /// thousands of records.
    #[doc(hidden)]
    pub fn set_receive_buffer(&self, bytes: usize) -> io::Result<()> {
        self.reader.set_recv_buffer(bytes)
    }

    /// The rule key, `kmsentry-<pid>-<start time>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Targets without rules because their directory (or a file's parent) does not exist.
    pub fn skipped(&self) -> &[Target] {
        &self.skipped
    }

    /// Whether there were too many targets and rules were widened to parent directories.
    pub fn widened(&self) -> bool {
        self.resolver.widened
    }

    /// Number of rules installed.
    pub fn rule_count(&self) -> usize {
        self.installed.len()
    }

    fn install(&mut self, targets: &[Target]) -> io::Result<()> {
        let abis = rule::abis();
        let per_target = abis.len() * 2;
        let (planned, widened) = rule::plan(targets, per_target, MAX_RULES);
        let mut new = Vec::new();
        let mut skipped = Vec::new();
        for t in &planned {
            let mut encoded = Vec::new();
            for abi in &abis {
                for errno in [rule::EACCES, rule::EPERM] {
                    encoded.push(
                        rule::Rule {
                            abi_arch: abi.arch,
                            syscalls: abi.syscalls.iter().map(|(n, _)| *n).collect(),
                            errno,
                            target: t.clone(),
                            key: self.key.clone(),
                        }
                        .encode(),
                    );
                }
            }
            let mut ok = true;
            for e in encoded {
                if self.installed.contains(&e) || new.contains(&e) {
                    new.push(e);
                    continue;
                }
                match self.control.add_rule(&e) {
                    Ok(()) => new.push(e),
                    Err(err) if err.raw_os_error() == Some(EEXIST) => new.push(e),
                    Err(err) if err.raw_os_error() == Some(ENOENT) => {
                        ok = false;
                        break;
                    }
                    Err(err) => {
                        // Leave the kernel as it was: the old set stays whole.
                        for n in &new {
                            if !self.installed.contains(n) {
                                let _ = self.control.del_rule(n);
                            }
                        }
                        return Err(err);
                    }
                }
            }
            if !ok {
                skipped.push(t.clone());
            }
        }
        for old in std::mem::take(&mut self.installed) {
            if !new.contains(&old) {
                if let Err(e) = self.control.del_rule(&old) {
                    tracing::warn!("removing a kernel audit rule: {e}");
                }
            }
        }
        self.installed = new;
        self.skipped = skipped;
        self.resolver = correlate::Resolver {
            targets: targets.to_vec(),
            inodes: inode_map(targets),
            widened,
        };
        Ok(())
    }

    /// Deletes rules keyed `kmsentry-<pid>[-<start>]` whose process is gone (see [`is_stale`]), or is
    /// this very process (an earlier watch in it that was leaked).
    fn remove_stale(&mut self) -> io::Result<()> {
        let own_exe = std::fs::read_link("/proc/self/exe").ok();
        for data in self.control.list_rules()? {
            let Some(key) = rule::decode(&data).and_then(|s| s.key) else {
                continue;
            };
            if key
                .split(|&b| b == 1)
                .any(|k| is_stale(k, own_exe.as_deref()))
            {
                match self.control.del_rule(&data) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// This process's rule key: `kmsentry-<pid>-<start time>`. The start time makes the key name
/// one process for its whole life, so a later instance can tell exactly whether the process
/// that installed a rule is still alive (a pid alone is reused).
fn own_key() -> String {
    let pid = std::process::id();
    match crate::proc::start_time(pid) {
        Some(start) => format!("{KEY_PREFIX}{pid}-{start}"),
        None => format!("{KEY_PREFIX}{pid}"),
    }
}

/// `kmsentry-<pid>[-<start time>]` → (pid, start time).
fn parse_key(key: &[u8]) -> Option<(u32, Option<u64>)> {
    let rest = key.strip_prefix(KEY_PREFIX.as_bytes())?;
    let text = std::str::from_utf8(rest).ok()?;
    let (pid, start) = match text.split_once('-') {
        Some((p, s)) => (p, Some(s.parse::<u64>().ok()?)),
        None => (text, None),
    };
    Some((pid.parse::<u32>().ok()?, start))
}

/// Whether a rule keyed `key` was left by a process that is gone. With a start time in the
/// key that is exact; an older key (`kmsentry-<pid>`) is judged by the program running
/// under that pid, keeping the rules of any live kmsentry (or a test binary of it).
fn is_stale(key: &[u8], own_exe: Option<&std::path::Path>) -> bool {
    if !key.starts_with(KEY_PREFIX.as_bytes()) {
        return false;
    }
    let Some((pid, start)) = parse_key(key) else {
        return true;
    };
    if pid == std::process::id() {
        // An earlier watch in this very process, leaked.
        return true;
    }
    if let Some(start) = start {
        return crate::proc::start_time(pid) != Some(start);
    }
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => !same_program(&exe, own_exe) && !is_test_binary(&exe),
        Err(_) => true,
    }
}

/// A cargo test binary (`NAME-<16 hex digits>`), whatever its name: such a process's old-style
/// rules belong to a test run still in progress.
fn is_test_binary(exe: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    exe.file_name()
        .map(|n| program_name(n.as_bytes()).len() != n.as_bytes().len())
        .unwrap_or(false)
}

/// Whether a live process's exe is a kmsentry (this binary, another build of it, or a binary
/// replaced on disk while it runs): its rules are not stale, whatever path it runs from, so two
/// daemons of different builds on one host (an upgrade, parallel test runs) keep each other's
/// rules. A pid reused by any other program is stale.
fn same_program(exe: &std::path::Path, own_exe: Option<&std::path::Path>) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if Some(exe) == own_exe {
        return true;
    }
    let name = |p: &std::path::Path| p.file_name().map(|n| n.as_bytes().to_vec());
    let Some(theirs) = name(exe) else {
        return false;
    };
    let theirs = program_name(&theirs);
    theirs.starts_with(b"kmsentry")
        || own_exe.and_then(name).as_deref().map(program_name) == Some(theirs)
}

/// An exe's file name without what a rebuild changes: the ` (deleted)` the kernel appends to
/// a replaced binary, and the `-<16 hex digits>` cargo appends to a test binary.
fn program_name(name: &[u8]) -> &[u8] {
    let name = name.strip_suffix(b" (deleted)").unwrap_or(name);
    match name.len().checked_sub(17) {
        Some(at) if name[at] == b'-' && name[at + 1..].iter().all(u8::is_ascii_hexdigit) => {
            &name[..at]
        }
        _ => name,
    }
}

/// `(dev, inode)` of each file target, in audit's `dev=` notation.
fn inode_map(targets: &[Target]) -> std::collections::HashMap<(Vec<u8>, u64), Vec<u8>> {
    let mut m = std::collections::HashMap::new();
    for t in targets.iter().filter(|t| !t.is_dir) {
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(&t.path));
        if let Ok(st) =
            rustix::fs::statat(rustix::fs::CWD, p, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        {
            let dev = format!(
                "{:02x}:{:02x}",
                rustix::fs::major(st.st_dev),
                rustix::fs::minor(st.st_dev)
            );
            m.insert((dev.into_bytes(), st.st_ino), t.path.clone());
        }
    }
    m
}

impl Drop for AuditWatch {
    fn drop(&mut self) {
        for r in std::mem::take(&mut self.installed) {
            if let Err(e) = self.control.del_rule(&r) {
                tracing::warn!("removing a kernel audit rule: {e}");
            }
        }
        if let Some(en) = self.restore_enabled {
            if let Err(e) = self.control.set_enabled(en) {
                tracing::warn!("restoring the kernel audit enabled flag: {e}");
            }
        }
    }
}

/// Whether an error from [`AuditWatch::recv`] means records were lost (`ENOBUFS`).
pub fn is_lost_records(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(ENOBUFS))
}

/// The kernel's audit status (`AUDIT_GET`; needs `CAP_AUDIT_CONTROL`). `lost` growing
/// between two calls means the kernel dropped records: a health alert.
pub fn kernel_status() -> Result<Status> {
    netlink::Control::open()
        .and_then(|mut c| c.status())
        .map_err(|e| Error::io("read kernel audit status", b"audit netlink".to_vec(), e))
}

/// The key and path of every kernel audit rule (needs `CAP_AUDIT_CONTROL`).
pub fn installed_rules() -> Result<Vec<RuleSummary>> {
    let list = netlink::Control::open()
        .and_then(|mut c| c.list_rules())
        .map_err(|e| Error::io("list kernel audit rules", b"audit netlink".to_vec(), e))?;
    Ok(list.iter().filter_map(|d| rule::decode(d)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_keys() {
        let own = std::fs::read_link("/proc/self/exe").ok();
        let own = own.as_deref();
        assert!(is_stale(b"kmsentry-999999999", own));
        assert!(is_stale(b"kmsentry-", own));
        assert!(is_stale(b"kmsentry-12-x", own));
        assert!(is_stale(
            format!("kmsentry-{}", std::process::id()).as_bytes(),
            own
        ));
        assert!(!is_stale(b"other-1", own));
        // pid 1 is alive and is not this program
        assert!(is_stale(b"kmsentry-1", own));
        // With a start time: alive exactly when that process is.
        let start1 = crate::proc::start_time(1).unwrap();
        assert!(!is_stale(format!("kmsentry-1-{start1}").as_bytes(), own));
        assert!(is_stale(
            format!("kmsentry-1-{}", start1 + 1).as_bytes(),
            own
        ));
        assert!(own_key().starts_with(&format!("kmsentry-{}-", std::process::id())));
        assert_eq!(parse_key(b"kmsentry-42-77"), Some((42, Some(77))));
        assert_eq!(parse_key(b"kmsentry-42"), Some((42, None)));
    }

    #[test]
    fn another_build_of_kmsentry_is_not_stale() {
        use std::path::Path;
        let own = Some(Path::new("/work/a/target/debug/kmsentry"));
        assert!(same_program(Path::new("/usr/bin/kmsentry"), own));
        assert!(same_program(
            Path::new("/work/b/target/debug/kmsentry (deleted)"),
            own
        ));
        assert!(!same_program(Path::new("/usr/bin/cat"), own));
        let test_bin = Some(Path::new("/w/target/debug/deps/audit-0123456789abcdef"));
        assert!(same_program(
            Path::new("/v/target/debug/deps/audit-fedcba9876543210"),
            test_bin
        ));
        assert!(!same_program(Path::new("/usr/bin/sleep"), test_bin));
    }

    #[test]
    fn unavailable_reads_as_one_sentence() {
        let e = Unavailable::NotPermitted(io::Error::from_raw_os_error(1));
        assert_eq!(e.to_string(), "kernel audit is not available here (no CAP_AUDIT_CONTROL, or in a container): kernel access denials will not be reported");
    }
}
