//! The daemon's own sandbox (`watch --seccomp enforce|kill`): the restrictions
//! `packaging/kmsentry.service` asks systemd for, applied by the daemon itself, so that they
//! hold without systemd and so that the test suite runs the real daemon under them.
//!
//! [`apply`] runs once, in `kmsentry watch` before the daemon starts any thread, and:
//! - sets the umask to 0077 (`UMask=0077`);
//! - shrinks the capability bounding, permitted and effective sets to [`CAPABILITIES`], the
//!   unit's `CapabilityBoundingSet=` (with no inheritable or ambient capabilities);
//! - installs seccomp filters (seccompiler, the rust-vmm crate Firecracker uses: pure Rust, no
//!   libseccomp; see docs/dependencies.md) that also set `no_new_privs` (`NoNewPrivileges=yes`):
//!   - the allow-list [`SYSCALLS`], the unit's `SystemCallFilter=` (which also holds `execve`,
//!     needed by systemd to start the binary, and not by the running daemon); anything else
//!     fails with `EPERM` (`SystemCallErrorNumber=EPERM`), or kills the process in `kill`
//!     mode, which the tests use so that a missing call cannot go unnoticed;
//!   - the filter's architecture check (`SystemCallArchitectures=native`);
//!   - `socket()` only for `AF_UNIX` and `AF_NETLINK`, plus `AF_INET`/`AF_INET6` when a
//!     network sink (syslog over UDP/TCP/TLS, metrics) is configured
//!     (`RestrictAddressFamilies=`);
//!   - no `clone()` with a namespace flag, no `unshare`/`setns`, and `clone3` answered with
//!     `ENOSYS` so the C library falls back to `clone()` (`RestrictNamespaces=yes`, as systemd
//!     does it);
//!   - no writable-and-executable `mmap`, no `mprotect` adding `PROT_EXEC`
//!     (`MemoryDenyWriteExecute=yes`);
//!   - no `chmod` family call and no file creation with the set-user-ID or set-group-ID bit
//!     (`RestrictSUIDSGID=yes`);
//!   - and, by absence from the list, no `personality` (`LockPersonality=yes`), no real-time
//!     scheduling (`RestrictRealtime=yes`), no clock setting (`ProtectClock=yes`), no module
//!     loading (`ProtectKernelModules=yes`), no `syslog(2)` (`ProtectKernelLogs=yes`), no
//!     `sethostname` (`ProtectHostname=yes`), no `mount` (`ProtectSystem=`), no `ptrace`.
//!
//! Must not: leave a thread unfiltered (it runs before any thread exists); allow more than
//! the unit does (a test compares [`SYSCALLS`] with the unit file).

use crate::error::{Error, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use std::collections::BTreeMap;

/// What to do with a system call outside the allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// No sandbox (the default outside systemd's unit).
    Off,
    /// Fail it with EPERM, as the unit's `SystemCallErrorNumber=EPERM` does.
    Enforce,
    /// Kill the process (SIGSYS): for tests, so that a missing call cannot go unnoticed.
    Kill,
}

macro_rules! syscalls {
    ($($n:ident),* $(,)?) => { &[$((stringify!($n), libc::$n)),*] };
}

/// The allow-list (x86_64 names, as `SystemCallFilter=` spells them without the `SYS_`).
/// `packaging/kmsentry.service` lists exactly these, plus `execve`.
pub const SYSCALLS: &[(&str, libc::c_long)] = syscalls![
    // I/O on descriptors
    SYS_read,
    SYS_write,
    SYS_readv,
    SYS_writev,
    SYS_pread64,
    SYS_pwrite64,
    SYS_preadv,
    SYS_pwritev,
    SYS_preadv2,
    SYS_pwritev2,
    SYS_lseek,
    SYS_close,
    SYS_close_range,
    SYS_dup,
    SYS_dup2,
    SYS_dup3,
    SYS_fcntl,
    SYS_ioctl,
    SYS_flock,
    SYS_fsync,
    SYS_fdatasync,
    SYS_syncfs,
    SYS_sync_file_range,
    SYS_fallocate,
    SYS_ftruncate,
    SYS_copy_file_range,
    SYS_sendfile,
    SYS_fadvise64,
    // files: hashing, the baseline database, the store, restore (owner, mode, xattrs)
    SYS_open,
    SYS_openat,
    SYS_openat2,
    SYS_creat,
    SYS_stat,
    SYS_fstat,
    SYS_lstat,
    SYS_newfstatat,
    SYS_statx,
    SYS_statfs,
    SYS_fstatfs,
    SYS_access,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_readlink,
    SYS_readlinkat,
    SYS_getdents64,
    SYS_mkdir,
    SYS_mkdirat,
    SYS_rmdir,
    SYS_unlink,
    SYS_unlinkat,
    SYS_rename,
    SYS_renameat,
    SYS_renameat2,
    SYS_link,
    SYS_linkat,
    SYS_symlink,
    SYS_symlinkat,
    SYS_chmod,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_chown,
    SYS_fchown,
    SYS_fchownat,
    SYS_lchown,
    SYS_truncate,
    SYS_utimensat,
    SYS_getxattr,
    SYS_lgetxattr,
    SYS_fgetxattr,
    SYS_setxattr,
    SYS_lsetxattr,
    SYS_fsetxattr,
    SYS_listxattr,
    SYS_llistxattr,
    SYS_flistxattr,
    SYS_removexattr,
    SYS_lremovexattr,
    SYS_fremovexattr,
    SYS_getcwd,
    SYS_chdir,
    SYS_fchdir,
    SYS_umask,
    SYS_name_to_handle_at,
    // fanotify: the permission and notification groups (marks follow changes)
    SYS_fanotify_init,
    SYS_fanotify_mark,
    // memory
    SYS_mmap,
    SYS_munmap,
    SYS_mprotect,
    SYS_mremap,
    SYS_madvise,
    SYS_brk,
    SYS_msync,
    SYS_membarrier,
    // threads, signals, time, identity
    SYS_clone,
    SYS_clone3,
    SYS_exit,
    SYS_exit_group,
    SYS_futex,
    SYS_set_robust_list,
    SYS_get_robust_list,
    SYS_rseq,
    SYS_set_tid_address,
    SYS_gettid,
    SYS_getpid,
    SYS_getppid,
    SYS_getuid,
    SYS_geteuid,
    SYS_getgid,
    SYS_getegid,
    SYS_getresuid,
    SYS_getresgid,
    SYS_getgroups,
    SYS_sched_yield,
    SYS_sched_getaffinity,
    SYS_nanosleep,
    SYS_clock_nanosleep,
    SYS_clock_gettime,
    SYS_clock_getres,
    SYS_gettimeofday,
    SYS_time,
    SYS_rt_sigaction,
    SYS_rt_sigprocmask,
    SYS_rt_sigreturn,
    SYS_rt_sigtimedwait,
    // signalfd: the stop cause (signal and sender) is read from a signalfd
    SYS_signalfd4,
    SYS_sigaltstack,
    SYS_kill,
    SYS_tgkill,
    SYS_tkill,
    SYS_restart_syscall,
    SYS_prctl,
    SYS_arch_prctl,
    SYS_capget,
    SYS_capset,
    SYS_getrandom,
    SYS_uname,
    SYS_sysinfo,
    SYS_prlimit64,
    SYS_getrlimit,
    SYS_getrusage,
    // sockets: audit netlink, the status socket, sd_notify, journald, syslog, metrics
    SYS_socket,
    SYS_socketpair,
    SYS_connect,
    SYS_bind,
    SYS_listen,
    SYS_accept,
    SYS_accept4,
    SYS_sendto,
    SYS_recvfrom,
    SYS_sendmsg,
    SYS_recvmsg,
    SYS_sendmmsg,
    SYS_recvmmsg,
    SYS_shutdown,
    SYS_getsockname,
    SYS_getpeername,
    SYS_setsockopt,
    SYS_getsockopt,
    // waiting
    SYS_epoll_create,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_wait,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    SYS_poll,
    SYS_ppoll,
    SYS_select,
    SYS_pselect6,
    SYS_eventfd2,
    SYS_pipe,
    SYS_pipe2,
    SYS_timerfd_create,
    SYS_timerfd_settime,
];

/// The names as the unit's `SystemCallFilter=` lists them (sorted, with `execve`).
pub fn unit_syscall_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = SYSCALLS
        .iter()
        .map(|(n, _)| n.trim_start_matches("SYS_"))
        .chain(["execve"])
        .collect();
    v.sort_unstable();
    v
}

/// The unit's `CapabilityBoundingSet=`, each with the reason the daemon needs it.
pub const CAPABILITIES: &[(&str, rustix::thread::CapabilitySet)] = {
    use rustix::thread::CapabilitySet as C;
    &[
        // fanotify_init/fanotify_mark (permission events, FID reporting)
        ("CAP_SYS_ADMIN", C::SYS_ADMIN),
        // read and hash every watched file whatever its mode
        ("CAP_DAC_READ_SEARCH", C::DAC_READ_SEARCH),
        // read /proc/PID/exe and the command line of other users' processes
        ("CAP_SYS_PTRACE", C::SYS_PTRACE),
        // install and remove its own narrow audit rules
        ("CAP_AUDIT_CONTROL", C::AUDIT_CONTROL),
        // read audit records from the multicast group
        ("CAP_AUDIT_READ", C::AUDIT_READ),
        // fanotify_init(FAN_ENABLE_AUDIT): denials are answered FAN_DENY|FAN_AUDIT, so the
        // kernel's record of a denial the daemon made is recognised (one alert per denial)
        ("CAP_AUDIT_WRITE", C::AUDIT_WRITE),
        // O_NOATIME on files it does not own; restore: set modes, times and xattrs
        ("CAP_FOWNER", C::FOWNER),
        // restore: set owner and group
        ("CAP_CHOWN", C::CHOWN),
        // restore: write into directories and files of other owners
        ("CAP_DAC_OVERRIDE", C::DAC_OVERRIDE),
        // restore: put back a provider binary's file capabilities (security.capability)
        ("CAP_SETFCAP", C::SETFCAP),
    ]
};

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| Error::Usage(format!("seccomp rule: {e}")))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule> {
    SeccompRule::new(conds).map_err(|e| Error::Usage(format!("seccomp rule: {e}")))
}

/// `arg & mask == value` for any of `values`: one rule each (rules are OR'ed).
fn masked(arg: u8, mask: u64, values: &[u64]) -> Result<Vec<SeccompRule>> {
    values
        .iter()
        .map(|v| rule(vec![cond(arg, SeccompCmpOp::MaskedEq(mask), *v)?]))
        .collect()
}

const SUID_SGID: u64 = (libc::S_ISUID | libc::S_ISGID) as u64;
const NEW_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;
/// `O_CREAT` and `__O_TMPFILE` (which also creates with a mode).
const CREATES: u64 = (libc::O_CREAT as u64) | 0o20000000;

/// The BPF programs for `mode`, in the order to install them: `clone3` → `ENOSYS`, then the
/// allow-list with its argument rules. `inet`: a network sink needs `AF_INET`/`AF_INET6` sockets.
pub fn filters(mode: Mode, inet: bool) -> Result<Vec<BpfProgram>> {
    let deny = match mode {
        Mode::Off => return Ok(Vec::new()),
        Mode::Enforce => SeccompAction::Errno(libc::EPERM as u32),
        Mode::Kill => SeccompAction::KillProcess,
    };
    let prot_wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u64;
    let mut families = vec![libc::AF_UNIX as u64, libc::AF_NETLINK as u64];
    if inet {
        families.extend([libc::AF_INET as u64, libc::AF_INET6 as u64]);
    }
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in SYSCALLS {
        let r = match *nr {
            libc::SYS_socket => families
                .iter()
                .map(|f| rule(vec![cond(0, SeccompCmpOp::Eq, *f)?]))
                .collect::<Result<_>>()?,
            libc::SYS_clone => masked(0, NEW_NAMESPACES, &[0])?,
            libc::SYS_mmap => masked(
                2,
                prot_wx,
                &[0, libc::PROT_WRITE as u64, libc::PROT_EXEC as u64],
            )?,
            libc::SYS_mprotect => masked(2, libc::PROT_EXEC as u64, &[0])?,
            libc::SYS_chmod | libc::SYS_fchmod => masked(1, SUID_SGID, &[0])?,
            libc::SYS_fchmodat => masked(2, SUID_SGID, &[0])?,
            libc::SYS_creat => masked(1, SUID_SGID, &[0])?,
            libc::SYS_open => {
                let mut v = masked(1, CREATES, &[0])?;
                v.extend(masked(2, SUID_SGID, &[0])?);
                v
            }
            libc::SYS_openat => {
                let mut v = masked(2, CREATES, &[0])?;
                v.extend(masked(3, SUID_SGID, &[0])?);
                v
            }
            _ => Vec::new(),
        };
        rules.insert(*nr, r);
    }
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| Error::Usage(format!("seccomp: {e}")))?;
    let allow = SeccompFilter::new(rules, deny, SeccompAction::Allow, arch)
        .map_err(|e| Error::Usage(format!("seccomp: {e}")))?;
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, Vec::new());
    let clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| Error::Usage(format!("seccomp: {e}")))?;
    // The allow-list last: it does not allow seccomp(2) itself.
    [clone3, allow]
        .into_iter()
        .map(|f| BpfProgram::try_from(f).map_err(|e| Error::Usage(format!("seccomp: {e}"))))
        .collect()
}

/// Shrink the capability sets to [`CAPABILITIES`].
fn drop_capabilities() -> Result<()> {
    use rustix::thread::{self, CapabilitySet, CapabilitySets};
    let keep = CAPABILITIES
        .iter()
        .fold(CapabilitySet::empty(), |a, (_, c)| a | *c);
    let err = |what: &str, e: rustix::io::Errno| {
        Error::Usage(format!("sandbox: {what}: {e} (watch --seccomp needs root)"))
    };
    for bit in 0..64u32 {
        let Some(c) = CapabilitySet::from_bits(1u64 << bit) else {
            continue;
        };
        if keep.contains(c) {
            continue;
        }
        // Not in the bounding set already (systemd's CapabilityBoundingSet=, or setpriv
        // --bounding-set for a non-root daemon, which cannot drop it without CAP_SETPCAP).
        if !thread::capability_is_in_bounding_set(c).unwrap_or(false) {
            continue;
        }
        match thread::remove_capability_from_bounding_set(c) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(err("drop from the bounding set", e)),
        }
    }
    let now = thread::capabilities(None).map_err(|e| err("read capabilities", e))?;
    thread::set_capabilities(
        None,
        CapabilitySets {
            effective: now.effective & keep,
            permitted: now.permitted & keep,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| err("set capabilities", e))?;
    thread::clear_ambient_capability_set().map_err(|e| err("clear ambient capabilities", e))
}

/// Apply the sandbox to this process. Call before any thread is started.
pub fn apply(mode: Mode, inet: bool) -> Result<()> {
    if mode == Mode::Off {
        return Ok(());
    }
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    drop_capabilities()?;
    for f in filters(mode, inet)? {
        seccompiler::apply_filter(&f)
            .map_err(|e| Error::Usage(format!("sandbox: install the seccomp filter: {e}")))?;
    }
    tracing::debug!(
        "sandbox: seccomp allow-list of {} calls ({mode:?})",
        SYSCALLS.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/kmsentry.service"
        ))
        .unwrap()
    }

    fn unit_values(key: &str) -> Vec<String> {
        let mut v: Vec<String> = unit()
            .lines()
            .filter_map(|l| l.strip_prefix(key))
            .flat_map(|rest| {
                rest.split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_unit_allows_exactly_the_daemons_system_calls() {
        let want: Vec<String> = unit_syscall_names().iter().map(|s| s.to_string()).collect();
        assert_eq!(unit_values("SystemCallFilter="), want);
    }

    #[test]
    fn the_unit_bounds_exactly_the_daemons_capabilities() {
        let mut want: Vec<String> = CAPABILITIES.iter().map(|(n, _)| n.to_string()).collect();
        want.sort();
        assert_eq!(unit_values("CapabilityBoundingSet="), want);
    }

    #[test]
    fn the_filters_compile_for_every_mode() {
        assert!(filters(Mode::Off, true).unwrap().is_empty());
        for m in [Mode::Enforce, Mode::Kill] {
            let f = filters(m, false).unwrap();
            assert_eq!(f.len(), 2);
            assert!(f[1].len() > SYSCALLS.len());
        }
    }
}
