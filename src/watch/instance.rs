//! One daemon per state. A second `kmsentry watch` on the same baseline, alert log or status
//! socket would append to the same hash chain (duplicate `seq`: `log verify` fails from then
//! on), take over the status socket, and deny the first daemon's opens (and be denied by
//! it). So before anything else the daemon takes an exclusive `flock` on a lock file beside
//! each of them, and refuses to start, naming the holder, when one is taken.
//!
//! Lock files are `.NAME.lock` in the directory of each resource (hidden, so a glob such as
//! `alerts.jsonl*` never picks one up), created 0600 and opened `O_NOFOLLOW`. A `flock` dies
//! with its process, so a daemon killed with `kill -9` leaves no stale lock: the next one
//! simply takes it.
//!
//! The lock beside the baseline also records the run: `{"pid", "started", "state":
//! "running"}` while it runs and `"state": "stopped"` after a clean stop. The next daemon reads
//! it before writing its own, so its `started` record can say that the previous run ended
//! without `stopped` (killed, crashed, power lost).
//! Must not: block (every lock is non-blocking), or remove a lock file (another daemon may be
//! waiting to read it).

use crate::error::{Error, Result};
use crate::sanitize::Name;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A held lock.
struct Held {
    file: File,
}

/// What the previous daemon on this baseline left in its lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousRun {
    pub pid: Option<u32>,
    pub started: Option<String>,
    /// When it wrote `stopped` (a clean stop), if it did.
    pub stopped: Option<String>,
    /// It stopped cleanly (answered every event, wrote `stopped`).
    pub clean: bool,
}

impl PreviousRun {
    /// `detail.previous_run` of `started`.
    pub fn to_value(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("clean".into(), self.clean.into());
        if let Some(p) = self.pid {
            m.insert("pid".into(), p.into());
        }
        if let Some(s) = &self.started {
            m.insert("started".into(), s.clone().into());
        }
        if let Some(s) = &self.stopped {
            m.insert("stopped".into(), s.clone().into());
        }
        if !self.clean {
            m.insert(
                "message".into(),
                "the previous daemon on this baseline ended without `stopped` (killed, crashed, or the host went down): changes made after its last record were not watched until this start".into(),
            );
        }
        serde_json::Value::Object(m)
    }
}

/// The locks of one running daemon; released when dropped (or when the process dies).
pub struct Instance {
    held: Vec<Held>,
    /// Index in `held` of the lock that records the run state.
    state: Option<usize>,
    started: String,
    previous: Option<PreviousRun>,
}

/// The files whose state one daemon owns, each guarded by a lock: the baseline (which also
/// records the run state), the alert log, the status socket (whose directory is created
/// 0700 here when missing, so that its lock can be).
pub fn resources<'a>(
    db: &'a Path,
    alerts: Option<&'a Path>,
    socket: Option<&'a Path>,
) -> Vec<(&'static str, &'a Path, bool)> {
    let mut v = vec![("baseline", db, true)];
    if let Some(f) = alerts {
        v.push(("alert log", f, false));
    }
    if let Some(s) = socket {
        if let Some(dir) = s
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            use std::os::unix::fs::DirBuilderExt;
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        v.push(("status socket", s, false));
    }
    v
}

/// Pidfds (one per notification event) and event fds count against RLIMIT_NOFILE; running
/// out would make the kernel deny permission events it cannot give an fd. Raise the soft
/// limit towards the hard one.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(1 << 16);
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}

/// The lock file that guards `path`.
pub fn lock_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(OsStrExt::as_bytes).unwrap_or(b"state");
    let mut lock = b".".to_vec();
    lock.extend_from_slice(name);
    lock.extend_from_slice(b".lock");
    let lock = std::ffi::OsStr::from_bytes(&lock);
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(lock),
        _ => PathBuf::from(lock),
    }
}

impl Instance {
    /// Lock every resource, in order: `(what, path, records_state)`. The first resource with
    /// `records_state` holds the run state. Fails (exit 2) naming the resource and the daemon
    /// that holds it; a lock that cannot even be created is an I/O error (exit 3), except on a
    /// read-only file system, where the resource goes unguarded with a warning.
    pub fn acquire(resources: &[(&str, &Path, bool)]) -> Result<Instance> {
        let started = crate::alert::record::now_ts();
        let mut inst = Instance {
            held: Vec::new(),
            state: None,
            started,
            previous: None,
        };
        for (what, path, records_state) in resources {
            let lock = lock_path(path);
            let lock_bytes = lock.as_os_str().as_bytes().to_vec();
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&lock)
            {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                    tracing::warn!(
                        "{}: read-only file system: the {what} is not guarded against a second daemon",
                        Name(&lock_bytes)
                    );
                    continue;
                }
                Err(e) => return Err(Error::io("create lock file", lock_bytes, e)),
            };
            if let Err(e) =
                rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            {
                if e == rustix::io::Errno::WOULDBLOCK {
                    let holder = read_state(&file);
                    return Err(Error::Usage(refusal(what, path, holder.as_ref())));
                }
                return Err(Error::io("lock", lock_bytes, e.into()));
            }
            if *records_state && inst.state.is_none() {
                inst.previous = read_state(&file);
                inst.state = Some(inst.held.len());
            }
            inst.held.push(Held { file });
        }
        inst.write_state(None);
        Ok(inst)
    }

    /// What the previous daemon on this baseline left, if anything was recorded.
    pub fn previous(&self) -> Option<&PreviousRun> {
        self.previous.as_ref()
    }

    /// Record a clean stop (called after `stopped` is written).
    pub fn mark_stopped(&mut self) {
        let now = crate::alert::record::now_ts();
        self.write_state(Some(&now));
    }

    fn write_state(&mut self, stopped: Option<&str>) {
        let Some(i) = self.state else { return };
        let Some(h) = self.held.get_mut(i) else {
            return;
        };
        let mut v = serde_json::json!({
            "pid": std::process::id(),
            "started": self.started,
            "state": if stopped.is_some() { "stopped" } else { "running" },
        });
        if let Some(s) = stopped {
            v["stopped"] = s.into();
        }
        let mut line = v.to_string();
        line.push('\n');
        let r = h
            .file
            .set_len(0)
            .and_then(|()| h.file.rewind())
            .and_then(|()| h.file.write_all(line.as_bytes()))
            .and_then(|()| h.file.sync_data());
        if let Err(e) = r {
            tracing::warn!("recording the daemon's run state: {e}");
        }
    }
}

/// What a lock file says about the daemon that wrote it.
fn read_state(mut f: &File) -> Option<PreviousRun> {
    let mut text = String::new();
    let _ = f.rewind();
    (&mut f).take(4096).read_to_string(&mut text).ok()?;
    let v: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
    Some(PreviousRun {
        pid: v
            .get("pid")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u32::try_from(p).ok()),
        started: s("started"),
        stopped: s("stopped"),
        clean: s("state").as_deref() == Some("stopped"),
    })
}

fn refusal(what: &str, path: &Path, holder: Option<&PreviousRun>) -> String {
    let who = match holder.and_then(|h| h.pid.map(|p| (p, h.started.clone()))) {
        Some((pid, Some(since))) => {
            format!("another kmsentry watch (pid {pid}, running since {since})")
        }
        Some((pid, None)) => format!("another kmsentry watch (pid {pid})"),
        None => "another kmsentry watch".to_string(),
    };
    format!(
        "{who} already uses the {what} {}: two daemons on one state would interleave their alert records and deny each other's opens; stop it first, or give this one its own --db, --alerts and --status-socket",
        Name(path.as_os_str().as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_files_are_hidden_beside_their_resource() {
        assert_eq!(
            lock_path(Path::new("/var/log/k/alerts.jsonl")),
            Path::new("/var/log/k/.alerts.jsonl.lock")
        );
        assert_eq!(lock_path(Path::new("a.db")), Path::new(".a.db.lock"));
    }

    #[test]
    fn a_second_instance_is_refused_and_the_run_state_survives() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("b.db");
        let log = t.path().join("alerts.jsonl");
        let first =
            Instance::acquire(&[("baseline", &db, true), ("alert log", &log, false)]).unwrap();
        assert_eq!(first.previous(), None);
        // flock is per open file description: a second open in this process conflicts too.
        let e = Instance::acquire(&[("alert log", &log, false)])
            .err()
            .expect("refused");
        assert_eq!(e.exit_code(), crate::exit::ExitCode::Usage);
        let msg = e.to_string();
        assert!(msg.contains("alert log"), "{msg}");
        assert!(msg.contains(log.to_str().unwrap()), "{msg}");
        drop(first);
        // Dropped without mark_stopped: as a killed daemon leaves it.
        let mut second = Instance::acquire(&[("baseline", &db, true)]).unwrap();
        let prev = second.previous().cloned().unwrap();
        assert!(!prev.clean);
        assert_eq!(prev.pid, Some(std::process::id()));
        assert_eq!(prev.to_value()["clean"], false);
        second.mark_stopped();
        drop(second);
        let third = Instance::acquire(&[("baseline", &db, true)]).unwrap();
        let prev = third.previous().unwrap();
        assert!(prev.clean);
        assert!(prev.stopped.is_some());
    }

    #[test]
    fn a_symlink_in_place_of_a_lock_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("b.db");
        std::os::unix::fs::symlink("/etc/passwd", lock_path(&db)).unwrap();
        let e = Instance::acquire(&[("baseline", &db, true)])
            .err()
            .expect("refused");
        assert_eq!(e.exit_code(), crate::exit::ExitCode::Integrity);
    }
}
