//! The harness of the daemon tests: a test tree under /tmp with a policy, a baseline, and a
//! `kmsentry watch` that runs under a deadline (`--run-for`) and is killed on drop. Only the
//! test's own directory is ever marked.
#![allow(dead_code)]

use crate::util::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A test tree, its policy and baseline, and (when started) a daemon.
pub struct Watch {
    pub env: TestEnv,
    pub child: Option<Child>,
}

/// Every daemon stops by itself after this long, whatever the test does.
pub const DEADLINE_S: &str = "90";

impl Watch {
    pub fn new() -> Watch {
        Watch {
            env: TestEnv::new(),
            child: None,
        }
    }

    /// Host-absolute path inside the test tree (the daemon watches the live host).
    pub fn p(&self, rel: &str) -> PathBuf {
        self.env.dir.path().join("t").join(rel)
    }

    pub fn s(&self, rel: &str) -> String {
        self.p(rel).to_str().unwrap().to_string()
    }

    pub fn write(&self, rel: &str, data: &[u8], mode: u32) -> PathBuf {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// Make the test tree reachable by `nobody` (tempdirs are 0700): the test dir, `t` and
    /// every directory under it become 0755.
    pub fn open_to_all(&self) {
        let mut dirs = vec![self.env.dir.path().to_path_buf(), self.p("")];
        let mut i = 1;
        while i < dirs.len() {
            if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        dirs.push(e.path());
                    }
                }
            }
            i += 1;
        }
        for d in dirs {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    pub fn policy(&self, yaml: &str) {
        std::fs::write(self.env.path("policy.yaml"), yaml).unwrap();
    }

    pub fn init(&self) {
        let r = self.env.run(&[
            "baseline".as_ref(),
            "init".as_ref(),
            "--force".as_ref(),
            "--policy".as_ref(),
            self.env.path("policy.yaml").as_os_str(),
            "--db".as_ref(),
            self.env.db().as_os_str(),
        ]);
        assert_eq!(r.code, 0, "init: {}", r.stderr);
    }

    pub fn alerts_path(&self) -> PathBuf {
        self.env.path("alerts.jsonl")
    }

    pub fn socket(&self) -> PathBuf {
        self.env.path("status.sock")
    }

    /// `kmsentry watch` with this tree's policy, baseline, alert log and status socket.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kmsentry"));
        cmd.arg("watch")
            .arg("--policy")
            .arg(self.env.path("policy.yaml"))
            .arg("--db")
            .arg(self.env.db())
            .arg("--alerts")
            .arg(self.alerts_path())
            .arg("--status-socket")
            .arg(self.socket());
        if !extra.contains(&"--run-for") {
            cmd.args(["--run-for", DEADLINE_S]);
        }
        cmd.args(extra);
        cmd
    }

    /// Start the daemon and wait (bounded) for its `started` record.
    pub fn start(&mut self, extra: &[&str]) {
        let before = self.alerts().len();
        let mut cmd = self.command(extra);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        self.child = Some(cmd.spawn().unwrap());
        let t = Instant::now();
        while self
            .alerts()
            .iter()
            .skip(before)
            .all(|a| a["kind"] != "started")
        {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("the daemon exited ({st}); stderr: {}", self.stop());
            }
            if t.elapsed() > Duration::from_secs(30) {
                panic!("no `started` alert; stderr: {}", self.stop());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Run a second daemon with the same state to completion (bounded) and return how it
    /// ended.
    pub fn run_second(&self, extra: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.arg("30").arg(env!("CARGO_BIN_EXE_kmsentry"));
        let own = self.command(extra);
        cmd.args(own.get_args());
        cmd.output().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, wait (bounded), return stderr.
    pub fn stop(&mut self) -> String {
        let Some(c) = self.child.take() else {
            return String::new();
        };
        let pid = rustix::process::Pid::from_raw(c.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        Self::reap(c)
    }

    /// Wait (bounded) for a daemon told to stop some other way, return stderr.
    pub fn reap(mut c: Child) -> String {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let out = c.wait_with_output().unwrap();
        String::from_utf8(out.stderr).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.alerts_path()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn wait_for(
        &self,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let t = Instant::now();
        loop {
            if let Some(a) = self.alerts().into_iter().find(|a| pred(a)) {
                return Some(a);
            }
            if t.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until at least `n` alerts match, and return them all.
    pub fn wait_for_n(
        &self,
        within: Duration,
        n: usize,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let t = Instant::now();
        loop {
            let got: Vec<_> = self.alerts().into_iter().filter(|a| pred(a)).collect();
            if got.len() >= n || t.elapsed() > within {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let r = self.env.run(&[
            "status".as_ref(),
            "--format".as_ref(),
            "json".as_ref(),
            "--socket".as_ref(),
            self.socket().as_os_str(),
        ]);
        assert_eq!(r.code, 0, "status: {}", r.stderr);
        r.json()
    }

    /// `log verify` of the alert log; asserts it is intact.
    pub fn assert_log_intact(&self) {
        let r = self.env.run(&[
            "log".as_ref(),
            "verify".as_ref(),
            self.alerts_path().as_os_str(),
        ]);
        assert_eq!(r.code, 0, "log verify: {}{}", r.stdout, r.stderr);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A copy of /usr/bin/cat that an allow-list can name (so the real cat is "someone else").
pub fn allowed_reader(w: &Watch) -> PathBuf {
    let p = w.env.path("allowed-cat");
    std::fs::copy("/usr/bin/cat", &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A program run as `nobody` (uid and gid 65534, no supplementary groups), under a timeout.
pub fn as_nobody(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("timeout");
    c.args([
        "20",
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ])
    .arg(program);
    c
}

pub fn cat(path: &Path) -> Output {
    Command::new("/usr/bin/cat").arg(path).output().unwrap()
}

/// Poll `cond` until it holds or `within` passes.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Every process object of every alert: none may claim an identity the daemon did not learn.
pub fn processes(alerts: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    alerts
        .iter()
        .filter_map(|a| a.get("process"))
        .filter(|p| p.is_object())
        .collect()
}

/// The kernel-audit rules the daemon `pid` has installed, by path.
pub fn audit_rule_paths(pid: u32) -> Vec<Vec<u8>> {
    let prefix = format!("kmsentry-{pid}-");
    kmsentry::watch::audit::installed_rules()
        .unwrap()
        .into_iter()
        .filter(|r| {
            r.key
                .as_deref()
                .is_some_and(|k| k.starts_with(prefix.as_bytes()))
        })
        .filter_map(|r| r.path)
        .collect()
}
