//! Signals the daemon acts on, read through a `signalfd` so that each comes with what the
//! kernel says about its sender (`ssi_pid`, `ssi_uid`, `ssi_code`): `stopped` names the signal
//! and who sent it.
//!
//! [`block`] must run on the main thread before any other thread starts: every thread
//! inherits the mask, so the signals are only ever consumed here and never run a default
//! action (termination) on some worker. SIGTERM/SIGINT stop, SIGHUP reloads.
//! Must not: do more than read `/proc` of the sender and set flags; the checker does the
//! work.

use super::shared::{spawn, Shared, Work};
use crate::proc::{Identity, Source};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the daemon stopped; the `stopped` record says it.
#[derive(Clone, Debug)]
pub enum StopCause {
    /// A signal. `sender` is what the kernel said (`ssi_pid`, `ssi_uid`) plus what `/proc`
    /// still showed of that process when the signal was read.
    Signal {
        name: &'static str,
        number: i32,
        /// `ssi_code`: `SI_USER` (kill(2)), `SI_TKILL`, `SI_KERNEL`, ...
        code: &'static str,
        sender: Option<Box<Identity>>,
    },
    /// `--run-for` elapsed.
    RunFor(Duration),
}

impl StopCause {
    /// Say in `stopped` why: the signal and, as `process`, who sent it; or `--run-for`.
    pub fn describe(self, stopped: &mut crate::alert::Alert) {
        match self {
            StopCause::Signal {
                name,
                number,
                code,
                sender,
            } => {
                stopped.detail.insert("signal".into(), name.into());
                stopped.detail.insert("signal_number".into(), number.into());
                stopped.detail.insert("signal_code".into(), code.into());
                stopped.process = sender.map(|s| s.info);
                if stopped.process.is_none() {
                    stopped
                        .detail
                        .insert("sender".into(), "the kernel (no sending process)".into());
                }
            }
            StopCause::RunFor(d) => {
                stopped.detail.insert("reason".into(), "run_for".into());
                stopped
                    .detail
                    .insert("run_for_s".into(), d.as_secs_f64().into());
            }
        }
    }
}

/// Blocks the daemon's signals in the calling thread (and so in every thread it starts
/// later) and returns the `signalfd` that receives them.
pub fn block() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// What one read signal asks for.
#[derive(Debug)]
pub enum Request {
    Stop(StopCause),
    Reload,
}

/// Wait up to `timeout` for a signal.
pub fn next(fd: &SignalFd, timeout: Duration) -> Option<Request> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let ts = Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    if poll(&mut fds, Some(&ts)).unwrap_or(0) == 0 {
        return None;
    }
    let info = fd.read_signal().ok().flatten()?;
    let number = info.ssi_signo as i32;
    if number == libc::SIGHUP {
        return Some(Request::Reload);
    }
    Some(Request::Stop(StopCause::Signal {
        name: signal_name(number),
        number,
        code: code_name(info.ssi_code),
        sender: sender(info.ssi_pid, info.ssi_uid, info.ssi_code).map(Box::new),
    }))
}

/// The sender as the kernel gave it (pid and real uid, for a signal sent by a process) and
/// as `/proc` still shows it. A sender that already exited keeps pid and uid; a pid that
/// now belongs to a process with another uid is not read at all.
fn sender(pid: u32, uid: u32, code: i32) -> Option<Identity> {
    // SI_KERNEL (0x80) and other kernel-generated codes carry no sender.
    if pid == 0 || code == libc::SI_KERNEL {
        return None;
    }
    let mut id = crate::proc::identify(pid, Source::Procfs);
    if id.info.uid.is_some_and(|u| u != uid) {
        // Not the sender (the pid was reused): keep only what the kernel said.
        id = Identity::pid_only(pid, Source::Gone);
    } else if id.info.exe.is_none() && id.info.cmdline.is_none() {
        id.info.source = Source::Gone;
    }
    id.info.uid = Some(uid);
    Some(id)
}

fn signal_name(n: i32) -> &'static str {
    match n {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "other",
    }
}

fn code_name(code: i32) -> &'static str {
    match code {
        libc::SI_USER => "SI_USER",
        libc::SI_KERNEL => "SI_KERNEL",
        libc::SI_QUEUE => "SI_QUEUE",
        libc::SI_TKILL => "SI_TKILL",
        _ => "other",
    }
}

/// Start the signal thread: TERM/INT stop, HUP queues a reload for the checker; `run_for`
/// (from now) stops too.
pub(super) fn start(
    s: Arc<Shared>,
    sigfd: SignalFd,
    work: SyncSender<Work>,
    run_for: Option<Duration>,
) -> crate::error::Result<std::thread::JoinHandle<()>> {
    let deadline = run_for.map(|d| (Instant::now() + d, d));
    spawn("kmsentry-signals", move || {
        while !s.stop.load(Ordering::SeqCst) {
            if let Some((at, d)) = deadline {
                if Instant::now() >= at {
                    s.stop_for(StopCause::RunFor(d));
                    break;
                }
            }
            match next(&sigfd, Duration::from_millis(100)) {
                Some(Request::Reload) => {
                    let _ = work.send(Work::Reload);
                }
                Some(Request::Stop(cause)) => s.stop_for(cause),
                None => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(code_name(libc::SI_USER), "SI_USER");
        assert!(sender(0, 0, libc::SI_USER).is_none());
        assert!(sender(1234, 0, libc::SI_KERNEL).is_none());
        let me = sender(std::process::id(), rustix::process::getuid().as_raw(), 0).unwrap();
        assert_eq!(me.info.pid, std::process::id());
        assert!(me.info.exe.is_some());
    }
}
