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
