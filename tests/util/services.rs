//! Real services started by the tests: each runs in the test's temp directory, on 127.0.0.1
//! or a unix socket in that directory, and never outlives the test (killed on drop, killed by
//! the kernel when the thread that started it dies, and killed by a two-minute watchdog).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A service process in its own process group, stopped and reaped on drop, and killed by the
/// kernel if the test thread that started it dies (`PR_SET_PDEATHSIG`); a watchdog kills it
/// after two minutes. Drop and the watchdog kill the whole group: servers fork helpers
/// (PyKMIP's multiprocessing manager, PostgreSQL's backends) that the death signal, reset on
/// fork, does not cover. Not wrapped in `timeout`: killing `timeout` would leave its child
/// running.
pub struct Service {
    child: Child,
    /// Sent first on drop (a database's fast shutdown), so it flushes its log and removes its
    /// shared memory; SIGKILL follows if it has not exited within ten seconds.
    stop: Option<nix::sys::signal::Signal>,
}

impl Service {
    /// Start `cmd` with stdin, stdout and stderr on /dev/null.
    pub fn spawn(cmd: &mut Command) -> Service {
        Self::start(cmd.stdout(Stdio::null()).stderr(Stdio::null()), None)
    }

    /// Start `cmd` with its stdout and stderr appended to `log` (as `pg_ctl -l` does), and
    /// `stop` (if any) sent on drop before SIGKILL.
    pub fn spawn_logging(
        cmd: &mut Command,
        log: &Path,
        stop: Option<nix::sys::signal::Signal>,
    ) -> Service {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let g = f.try_clone().unwrap();
        Self::start(cmd.stdout(g).stderr(f), stop)
    }

    fn start(cmd: &mut Command, stop: Option<nix::sys::signal::Signal>) -> Service {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
        // async-signal-safe. std runs it after any uid/gid change the caller asked for, so a
        // credential change cannot clear the death signal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.stdin(Stdio::null()).process_group(0).spawn().unwrap();
        let pid = child.id() as i32;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(120));
            // The pid may have been reaped and reused by then only if the test outlived the
            // service by two minutes; the test's own waits end far sooner.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        });
        Service { child, stop }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(sig) = self.stop {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            if nix::sys::signal::kill(pid, sig).is_ok() {
                let t = Instant::now();
                while self.running() && t.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        // The group first: helpers outlive a leader killed alone.
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `tool` (a program on PATH or an absolute path) exists; skips loudly when not, and
/// fails under `CI=true`, where scripts/test installs it.
pub fn need(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        || Path::new(tool).exists();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {tool} is missing (scripts/test installs it)"
        );
        eprintln!("skipped: needs {tool}");
    }
    found
}

pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// `run`, asserting success; the command's output is in the failure message.
pub fn run_ok(what: &str, cmd: &mut Command) -> std::process::Output {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{what} failed ({}): {}{}",
        o.status,
        String::from_utf8(o.stdout.clone()).unwrap_or_default(),
        String::from_utf8(o.stderr.clone()).unwrap_or_default()
    );
    o
}

/// A system account's (uid, gid), e.g. `postgres` or `mysql` as the server package made it.
pub fn account(name: &str) -> (u32, u32) {
    let u = nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no user {name}"));
    (u.uid.as_raw(), u.gid.as_raw())
}

/// Rule ids of a `logs scan --format json` result, in finding order.
pub fn rule_ids(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect()
}

/// Run `logs scan` with the shipped rules over one file source.
pub fn scan_source(
    env: &super::TestEnv,
    log: &Path,
    source: &str,
) -> (i32, serde_json::Value, String) {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let policy = env.policy(&format!(
        "version: 1\ngroups:\n  - name: g\n    paths: [/etc/kms]\nlogs:\n  - name: svc\n    source: {{file: {}}}\n{source}\nrules: [{}]\n",
        log.to_str().unwrap(),
        rules.to_str().unwrap()
    ));
    let args: [&std::ffi::OsStr; 6] = [
        "logs".as_ref(),
        "scan".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
    ];
    let r = env.run(&args);
    assert!(
        r.code == 0 || r.code == 1,
        "logs scan failed ({}): {}",
        r.code,
        r.stderr
    );
    (r.code, r.json(), r.stdout)
}
