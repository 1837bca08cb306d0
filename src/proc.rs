//! Process identity: who opened or changed a file. A pid alone is reused; a pid plus its
//! start time (from `/proc/PID/stat`) names one process for its whole life.
//!
//! Identity is evidence, so every field a reader could not learn stays `None`: never a
//! default. A uid of 0 means root to every reader of an alert, so a process that exited before
//! its `/proc` entry was read has no uid at all, not uid 0.
//!
//! Owns the `/proc` readers (they take `&[u8]` and are tested on captured samples) and the
//! one read that keeps an identity consistent: [`read_info`] reads the executable before and
//! after the command line, so a process that `exec`s meanwhile is never reported with one
//! program's command line beside another program's executable.
//! Must not: resolve user names (NSS may block; the alert thread does that), hash anything.

use std::os::fd::{AsRawFd, BorrowedFd};

/// How the daemon learnt an identity; written as `process.identity`, so a reader can weigh it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Read from `/proc` while the process waited for the daemon's answer to its open: it
    /// could neither exit nor `exec` meanwhile.
    Blocked,
    /// From the kernel's audit records of the refused system call itself.
    Audit,
    /// Read from `/proc` after the event, checked to be the same process (its pidfd); an
    /// `exec` after the event shows as the new program.
    Procfs,
    /// The process had exited before it could be read: only what the kernel gave with the
    /// event (the pid) is known.
    Gone,
}

impl Source {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Blocked => "blocked",
            Source::Audit => "audit",
            Source::Procfs => "procfs",
            Source::Gone => "gone",
        }
    }
}

/// What an alert says about a process. Names are bytes (a command line or an executable path
/// may hold anything); they are escaped only when written. `None` is "not known", never "0".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: Option<u64>,
    /// Executable path as the kernel reports it (`/proc/PID/exe`, or audit's `exe=`).
    pub exe: Option<Vec<u8>>,
    /// `comm` (at most 15 bytes).
    pub comm: Option<Vec<u8>>,
    /// Command line, arguments joined by single spaces, at most [`CMDLINE_MAX`] bytes.
    pub cmdline: Option<Vec<u8>>,
    /// The command line was longer than what [`cmdline`](Self::cmdline) holds.
    pub cmdline_truncated: bool,
    /// Real uid.
    pub uid: Option<u32>,
    /// Effective uid (differs from `uid` for a setuid program).
    pub euid: Option<u32>,
    /// Login uid, when set (4294967295, "unset", is `None` too).
    pub auid: Option<u32>,
    /// User name of `uid`, when known.
    pub user: Option<String>,
    pub source: Source,
}

impl ProcessInfo {
    /// Only the pid: what the kernel's event carries.
    pub fn pid_only(pid: u32, source: Source) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: None,
            start_time: None,
            exe: None,
            comm: None,
            cmdline: None,
            cmdline_truncated: false,
            uid: None,
            euid: None,
            auid: None,
            user: None,
            source,
        }
    }
}

/// Longest command line kept, in bytes; longer ones are cut and flagged `cmdline_truncated`.
pub const CMDLINE_MAX: usize = 4096;

/// Identity of an executable file: a binary replaced at the same path has a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExeId {
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub size: u64,
}

impl ExeId {
    /// From a `statx` result.
    pub fn of(st: &rustix::fs::Statx) -> ExeId {
        let ns = |t: rustix::fs::StatxTimestamp| {
            i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
        };
        ExeId {
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            mtime_ns: ns(st.stx_mtime),
            ctime_ns: ns(st.stx_ctime),
            size: st.stx_size,
        }
    }
}

/// A process as the daemon sees it at one event.
#[derive(Clone, Debug)]
pub struct Identity {
    pub info: ProcessInfo,
    /// The executable's identity (`statx` through `/proc/PID/exe`), when readable.
    pub exe_id: Option<ExeId>,
    /// The parent's executable path.
    pub parent_exe: Option<Vec<u8>>,
    /// The arguments after `argv[0]`, when an allow rule constrains them (`None`: not read, or
    /// unreadable, or longer than [`CMDLINE_MAX`]: such a rule then does not match).
    pub args: Option<Vec<Vec<u8>>>,
}

impl Identity {
    /// Nothing but the pid.
    pub fn pid_only(pid: u32, source: Source) -> Identity {
        Identity {
            info: ProcessInfo::pid_only(pid, source),
            exe_id: None,
            parent_exe: None,
            args: None,
        }
    }
}

/// Everything `/proc` says about `pid` (uids, ppid, exe, comm, start time, login uid, command
/// line), read consistently (see [`read_info`]), plus the executable's identity and the
/// parent's executable. Missing pieces stay `None`.
pub fn identify(pid: u32, source: Source) -> Identity {
    let mut id = Identity::pid_only(pid, source);
    id.exe_id = exe_id(pid);
    read_info(&mut id.info);
    if let Some(ppid) = id.info.ppid.filter(|&p| p > 0) {
        id.parent_exe = exe_path(ppid);
    }
    id
}

/// Fill every field of `info` that is still `None` from `/proc/PID/*`. The executable is read
/// before and after the command line: when they differ the process `exec`ed meanwhile, and
/// the command line and `comm` are read again (once) so that all three describe one program.
pub fn read_info(info: &mut ProcessInfo) {
    let pid = info.pid;
    let base = format!("/proc/{pid}");
    if info.uid.is_none() || info.euid.is_none() || info.ppid.is_none() {
        if let Ok(status) = std::fs::read(format!("{base}/status")) {
            if let Some((uid, euid)) = parse_status_uids(&status) {
                info.uid.get_or_insert(uid);
                info.euid.get_or_insert(euid);
            }
            if let Some(ppid) = parse_status_ppid(&status) {
                info.ppid.get_or_insert(ppid);
            }
        }
    }
    let had_exe = info.exe.is_some();
    if !had_exe {
        info.exe = exe_path(pid);
    }
    let read_image = |info: &mut ProcessInfo| {
        if let Ok(stat) = std::fs::read(format!("{base}/stat")) {
            if let Some((comm, ppid, start)) = parse_stat(&stat) {
                info.comm = Some(comm);
                info.ppid.get_or_insert(ppid);
                info.start_time.get_or_insert(start);
            }
        }
        if let Ok(raw) = read_bounded(&format!("{base}/cmdline"), CMDLINE_MAX + 1) {
            // A zombie (or a kernel thread) has an empty command line: not known.
            if !raw.is_empty() {
                let (text, cut) = cmdline_text(&raw);
                info.cmdline = Some(text);
                info.cmdline_truncated = cut;
            }
        }
    };
    if info.comm.is_none() || info.cmdline.is_none() {
        read_image(info);
        if !had_exe {
            let after = exe_path(pid);
            if after != info.exe {
                // exec'd between the two reads: read the image's facts once more, and keep
                // the executable that goes with them.
                info.exe = after;
                info.comm = None;
                info.cmdline = None;
                read_image(info);
                if exe_path(pid) != info.exe {
                    info.comm = None;
                    info.cmdline = None;
                    info.cmdline_truncated = false;
                }
            }
        }
    }
    if info.auid.is_none() {
        info.auid = std::fs::read(format!("{base}/loginuid"))
            .ok()
            .and_then(|v| parse_loginuid(&v));
    }
}

/// The arguments of `pid` after `argv[0]`, as the kernel separates them. `None` when they
/// cannot be read whole.
pub fn args(pid: u32) -> Option<Vec<Vec<u8>>> {
    let raw = read_bounded(&format!("/proc/{pid}/cmdline"), CMDLINE_MAX + 1).ok()?;
    if raw.is_empty() || raw.len() > CMDLINE_MAX {
        return None;
    }
    Some(split_args(&raw))
}

/// Split a NUL-separated command line into its arguments after `argv[0]`.
pub fn split_args(raw: &[u8]) -> Vec<Vec<u8>> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    raw.split(|&b| b == 0).skip(1).map(<[u8]>::to_vec).collect()
}

/// Identity of the executable of `pid` (`statx` through `/proc/PID/exe`): one syscall.
pub fn exe_id(pid: u32) -> Option<ExeId> {
    rustix::fs::statx(
        rustix::fs::CWD,
        format!("/proc/{pid}/exe"),
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::BASIC_STATS,
    )
    .ok()
    .map(|st| ExeId::of(&st))
}

/// Path of the executable of `pid`.
pub fn exe_path(pid: u32) -> Option<Vec<u8>> {
    read_link(&format!("/proc/{pid}/exe"))
}

/// Real uid, effective uid and parent pid of `pid`.
pub fn status_ids(pid: u32) -> Option<(u32, u32, Option<u32>)> {
    let status = std::fs::read(format!("/proc/{pid}/status")).ok()?;
    let (uid, euid) = parse_status_uids(&status)?;
    Some((uid, euid, parse_status_ppid(&status)))
}

/// Whether the process behind `pidfd` is still `pid` and not yet reaped: then a pid number
/// read meanwhile cannot have been reused. The kernel writes `Pid: -1` in the pidfd's fdinfo
/// once the process is reaped.
pub fn pidfd_still(pidfd: BorrowedFd<'_>, pid: u32) -> bool {
    std::fs::read(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
        .ok()
        .and_then(|t| parse_fdinfo_pid(&t))
        == Some(i64::from(pid))
}

/// `Pid:` of a pidfd's fdinfo (`-1` once the process is reaped).
pub fn parse_fdinfo_pid(fdinfo: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(fdinfo).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pid:"))?
        .trim()
        .parse()
        .ok()
}

/// `PPid:` from `/proc/PID/status`.
pub fn parse_status_ppid(status: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(status).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// `/proc/PID/loginuid`: `None` when unset (4294967295) or unparsable.
pub fn parse_loginuid(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v)
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|&a| a != u32::MAX)
}

fn read_link(p: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    std::fs::read_link(p)
        .ok()
        .map(|t| t.into_os_string().into_vec())
}

fn read_bounded(p: &str, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(p)?
        .take(max as u64)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// `comm`, ppid and start time from `/proc/PID/stat`. `comm` may hold spaces and `)`, so
/// the fields after it are found from the last `)`.
pub fn parse_stat(stat: &[u8]) -> Option<(Vec<u8>, u32, u64)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = stat[open + 1..close].to_vec();
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is state (field 3); ppid is field 4, starttime field 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

/// Start time of `pid` (clock ticks since boot), if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, _, s)| s)
}

/// Real and effective uid from `/proc/PID/status`.
pub fn parse_status_uids(status: &[u8]) -> Option<(u32, u32)> {
    let text = std::str::from_utf8(status).ok()?;
    let line = text.lines().find(|l| l.starts_with("Uid:"))?;
    let mut it = line["Uid:".len()..].split_ascii_whitespace();
    let uid = it.next()?.parse().ok()?;
    let euid = it.next()?.parse().ok()?;
    Some((uid, euid))
}

/// Arguments joined by single spaces (the kernel separates them with NULs), cut at
/// [`CMDLINE_MAX`] bytes; the flag says whether it was cut. No marker is put into the text
/// itself: the command line stays what the process had, byte for byte, up to the cut.
pub fn cmdline_text(raw: &[u8]) -> (Vec<u8>, bool) {
    let mut v: Vec<u8> = raw.strip_suffix(&[0]).unwrap_or(raw).to_vec();
    let cut = v.len() > CMDLINE_MAX;
    v.truncate(CMDLINE_MAX);
    for b in &mut v {
        if *b == 0 {
            *b = b' ';
        }
    }
    (v, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm() {
        let s = b"123 (a) b) c) S 7 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        let (comm, ppid, start) = parse_stat(s).unwrap();
        assert_eq!(comm, b"a) b) c");
        assert_eq!(ppid, 7);
        assert_eq!(start, 98765);
        assert!(parse_stat(b"garbage").is_none());
        assert!(parse_stat(b"1 (x) S").is_none());
    }

    #[test]
    fn status_uids() {
        let s = b"Name:\tcat\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_status_uids(s), Some((1000, 0)));
        assert_eq!(parse_status_uids(b"Name: x\n"), None);
        assert_eq!(parse_status_ppid(b"Name:\tx\nPPid:\t42\n"), Some(42));
        assert_eq!(parse_loginuid(b"4294967295"), None);
        assert_eq!(parse_loginuid(b"1000\n"), Some(1000));
        assert_eq!(parse_loginuid(b""), None);
    }

    #[test]
    fn fdinfo_pid() {
        let live =
            b"pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nPid:\t4242\nNSpid:\t4242\n";
        assert_eq!(parse_fdinfo_pid(live), Some(4242));
        assert_eq!(
            parse_fdinfo_pid(b"pos:\t0\nPid:\t-1\nNSpid:\t-1\n"),
            Some(-1)
        );
        assert_eq!(parse_fdinfo_pid(b"pos:\t0\n"), None);
    }

    #[test]
    fn cmdline_joined_and_bounded_without_an_in_band_marker() {
        assert_eq!(
            cmdline_text(b"cat\0/etc/k ey\0"),
            (b"cat /etc/k ey".to_vec(), false)
        );
        let long = vec![b'a'; CMDLINE_MAX + 10];
        let (t, cut) = cmdline_text(&long);
        assert!(cut);
        assert_eq!(t.len(), CMDLINE_MAX);
        assert!(t.iter().all(|&b| b == b'a'));
        assert_eq!(
            split_args(b"openssl\0pkey\0-in\0a b\0"),
            vec![b"pkey".to_vec(), b"-in".to_vec(), b"a b".to_vec()]
        );
        assert_eq!(split_args(b"x\0"), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn identifies_this_process() {
        let me = identify(std::process::id(), Source::Procfs);
        assert_eq!(me.info.pid, std::process::id());
        assert!(me.info.exe.is_some());
        assert!(me.exe_id.is_some());
        assert!(me.info.start_time.is_some());
        assert!(me.info.cmdline.is_some());
        assert_eq!(me.info.uid, Some(rustix::process::getuid().as_raw()));
    }

    #[test]
    fn a_pid_that_does_not_exist_is_unknown_not_root() {
        // pid_max is at most 2^22: this pid cannot exist.
        let id = identify(4_999_999, Source::Procfs);
        assert_eq!(id.info.uid, None);
        assert_eq!(id.info.euid, None);
        assert_eq!(id.info.ppid, None);
        assert_eq!(id.info.exe, None);
        assert_eq!(id.info.cmdline, None);
        assert_eq!(id.info.comm, None);
    }

    #[test]
    fn a_pidfd_tells_a_reaped_process_from_a_live_one() {
        use std::os::fd::AsFd;
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pid = child.id();
        let fd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        assert!(pidfd_still(fd.as_fd(), pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!pidfd_still(fd.as_fd(), pid));
    }
}
