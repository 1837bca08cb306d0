//! Process identity: who opened or changed a file. A pid alone is reused; a pid plus its
//! start time (from `/proc/PID/stat`) names one process for its whole life.

/// What an alert says about a process. Names are bytes (a command line or an executable path
/// may hold anything); they are escaped only when written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// Executable path as the kernel reports it (`/proc/PID/exe`), if readable.
    pub exe: Option<Vec<u8>>,
    /// `comm` (at most 15 bytes).
    pub comm: Vec<u8>,
    /// Command line, arguments joined by single spaces, bounded in length.
    pub cmdline: Vec<u8>,
    pub uid: u32,
    pub euid: u32,
    /// Login uid; `None` when unset (4294967295).
    pub auid: Option<u32>,
    /// User name of `uid`, when known.
    pub user: Option<String>,
}

/// Longest command line kept, in bytes (the rest is cut and marked with `…`).
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
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub info: ProcessInfo,
    /// The executable's identity (`statx` through `/proc/PID/exe`), when readable.
    pub exe_id: Option<ExeId>,
    /// The parent's executable path.
    pub parent_exe: Option<Vec<u8>>,
}

/// Read what `/proc` says about `pid`. Never blocks on anything but procfs; missing pieces
/// (a process that exited, a kernel thread without an executable) stay empty.
pub fn identify(pid: u32) -> Identity {
    let mut id = identify_basic(pid, true);
    complete(&mut id);
    id
}

/// What a permission decision needs, in as few syscalls as possible: uids and ppid
/// (`status`), the executable's path and identity, and (when `with_parent`) the parent's
/// executable. [`complete`] adds the rest when an alert is to be written.
pub fn identify_basic(pid: u32, with_parent: bool) -> Identity {
    let mut info = ProcessInfo {
        pid,
        exe: exe_path(pid),
        ..ProcessInfo::default()
    };
    if let Some((uid, euid, ppid)) = status_ids(pid) {
        info.uid = uid;
        info.euid = euid;
        info.ppid = ppid;
    }
    let parent_exe = if with_parent && info.ppid > 0 {
        exe_path(info.ppid)
    } else {
        None
    };
    Identity {
        info,
        exe_id: exe_id(pid),
        parent_exe,
    }
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
pub fn status_ids(pid: u32) -> Option<(u32, u32, u32)> {
    let status = std::fs::read(format!("/proc/{pid}/status")).ok()?;
    let (uid, euid) = parse_status_uids(&status)?;
    Some((uid, euid, parse_status_ppid(&status).unwrap_or(0)))
}

/// Fill in start time, comm, login uid, command line and parent executable.
pub fn complete(id: &mut Identity) {
    let info = &mut id.info;
    let base = format!("/proc/{}", info.pid);
    if let Ok(stat) = std::fs::read(format!("{base}/stat")) {
        if let Some((comm, ppid, start)) = parse_stat(&stat) {
            info.comm = comm;
            info.ppid = ppid;
            info.start_time = start;
        }
    }
    info.auid = std::fs::read(format!("{base}/loginuid"))
        .ok()
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<u32>().ok())
        .filter(|&a| a != u32::MAX);
    if let Ok(raw) = read_bounded(&format!("{base}/cmdline"), CMDLINE_MAX + 1) {
        info.cmdline = cmdline_text(&raw);
    }
    if id.parent_exe.is_none() && info.ppid > 0 {
        id.parent_exe = read_link(&format!("/proc/{}/exe", info.ppid));
    }
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
/// [`CMDLINE_MAX`] bytes.
pub fn cmdline_text(raw: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = raw.strip_suffix(&[0]).unwrap_or(raw).to_vec();
    let cut = v.len() > CMDLINE_MAX;
    v.truncate(CMDLINE_MAX);
    for b in &mut v {
        if *b == 0 {
            *b = b' ';
        }
    }
    if cut {
        v.extend_from_slice("…".as_bytes());
    }
    v
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
    }

    #[test]
    fn cmdline_joined_and_bounded() {
        assert_eq!(cmdline_text(b"cat\0/etc/k ey\0"), b"cat /etc/k ey");
        let long = vec![b'a'; CMDLINE_MAX + 10];
        let t = cmdline_text(&long);
        assert!(t.ends_with("…".as_bytes()));
        assert_eq!(t.len(), CMDLINE_MAX + "…".len());
    }

    #[test]
    fn identifies_this_process() {
        let me = identify(std::process::id());
        assert_eq!(me.info.pid, std::process::id());
        assert!(me.info.exe.is_some());
        assert!(me.exe_id.is_some());
        assert!(me.info.start_time > 0);
        assert!(!me.info.cmdline.is_empty());
    }
}
