//! The systemd unit's restrictions, each exercised without systemd (PID 1 here is not
//! systemd):
//! - the unit file itself: `systemd-analyze verify` is clean and `systemd-analyze security
//!   --offline=true` scores it at most 2.0;
//! - the seccomp ones (SystemCallFilter=, RestrictAddressFamilies=, RestrictNamespaces=,
//!   MemoryDenyWriteExecute=, RestrictSUIDSGID=, LockPersonality=, RestrictRealtime=,
//!   ProtectClock=, ProtectHostname=, ProtectKernelModules=/Logs= system calls), UMask=,
//!   NoNewPrivileges= and CapabilityBoundingSet=: a child process applies the daemon's own
//!   sandbox (`kmsentry::sandbox`, what `watch --seccomp` does) and every forbidden call fails,
//!   and a 32-bit system call kills it (SystemCallArchitectures=native);
//! - all of them together: the real daemon runs as a non-root user with only the unit's
//!   ambient capabilities (`setpriv`, as `User=` + `AmbientCapabilities=`), under its own
//!   seccomp filter in `kill` mode, in a mount namespace built the way systemd builds one for
//!   ProtectSystem=strict, ReadWritePaths=, ProtectHome=yes, PrivateTmp=, PrivateDevices=,
//!   ProtectKernelTunables=, ProtectControlGroups= and ProtectProc=invisible, and still
//!   denies, reports, sees kernel denials and restores (owner and xattrs included).

mod util;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use util::*;

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn have(tool: &str) -> bool {
    let ok = on_path(tool);
    if !ok {
        assert!(
            !ci(),
            "CI=true but {tool} is missing (scripts/test installs it)"
        );
        eprintln!("skipped: needs {tool}");
    }
    ok
}

fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/kmsentry.service"
    ))
    .unwrap()
    .replace("/usr/bin/kmsentry", env!("CARGO_BIN_EXE_kmsentry"));
    let p = dir.join("kmsentry.service");
    std::fs::write(&p, unit).unwrap();
    p
}

#[test]
fn the_unit_verifies_and_scores_at_most_2_0() {
    if !have("systemd-analyze") {
        return;
    }
    let env = TestEnv::new();
    let unit = unit_for_test(env.dir.path());
    // `man:kmsentry(1)` must resolve: the pages `kmsentry generate man` makes.
    let man = env.path("man");
    let r = env.run(&[
        "generate".as_ref(),
        "man".as_ref(),
        man.join("man1").as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", &man)
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap_or_default();
    assert!(out.status.success() && err.trim().is_empty(), "{err}");

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap_or_default();
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for kmsentry.service: ")
                .nth(1)
        })
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in: {text}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}

/// The unit's capabilities as a mask of capability numbers.
fn unit_caps_mask() -> u64 {
    kmsentry::sandbox::CAPABILITIES
        .iter()
        .fold(0, |m, (_, c)| m | c.bits())
}

fn status_field(pid: u32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Run in a child process (this test binary, re-executed): apply the sandbox, try what the
/// unit forbids, print one line per probe.
#[test]
fn sandbox_probe_child() {
    if std::env::var("KMSENTRY_SANDBOX_PROBE").as_deref() != Ok("1") {
        return;
    }
    kmsentry::sandbox::apply(kmsentry::sandbox::Mode::Enforce, false).unwrap();
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let say = |name: &str, rc: i64| {
        let e = if rc < 0 { errno() } else { 0 };
        println!("probe {name} {}", if rc < 0 { e } else { 0 });
    };
    let dir = std::env::var("KMSENTRY_SANDBOX_DIR").unwrap();
    let file = std::ffi::CString::new(format!("{dir}/f")).unwrap();
    let created = std::ffi::CString::new(format!("{dir}/suid")).unwrap();
    // SAFETY: each call gets valid arguments (NUL-terminated paths that outlive the call,
    // null pointers where the kernel accepts them); the results are only inspected.
    unsafe {
        say(
            "socket_unix",
            libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) as i64,
        );
        say(
            "socket_inet",
            libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) as i64,
        );
        say(
            "socket_packet",
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) as i64,
        );
        say("unshare_mnt", libc::unshare(libc::CLONE_NEWNS) as i64);
        say("unshare_net", libc::unshare(libc::CLONE_NEWNET) as i64);
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        say("mmap_rw", if p == libc::MAP_FAILED { -1 } else { 0 });
        say(
            "mprotect_x",
            libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC) as i64,
        );
        let q = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        say("mmap_wx", if q == libc::MAP_FAILED { -1 } else { 0 });
        say("chmod_plain", libc::chmod(file.as_ptr(), 0o640) as i64);
        say("chmod_suid", libc::chmod(file.as_ptr(), 0o4755) as i64);
        say("chmod_sgid", libc::chmod(file.as_ptr(), 0o2755) as i64);
        say(
            "create_suid",
            libc::open(created.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o4755) as i64,
        );
        say("personality", libc::personality(0xffff_ffff) as i64);
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        say(
            "clock_settime",
            libc::clock_settime(libc::CLOCK_REALTIME, &ts) as i64,
        );
        say("sethostname", libc::sethostname(c"x".as_ptr(), 1) as i64);
        say("ptrace", libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0));
        say(
            "mount",
            libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT,
                std::ptr::null(),
            ) as i64,
        );
        say(
            "syslog",
            libc::syscall(libc::SYS_syslog, 3, std::ptr::null_mut::<u8>(), 0),
        );
        say("init_module", libc::syscall(libc::SYS_init_module, 0, 0, 0));
        let param = libc::sched_param { sched_priority: 1 };
        say(
            "sched_fifo",
            libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) as i64,
        );
        say("setuid", libc::syscall(libc::SYS_setuid, 0));
        say(
            "execve",
            libc::syscall(libc::SYS_execve, c"/bin/true".as_ptr(), 0, 0),
        );
        say("shmget", libc::syscall(libc::SYS_shmget, 0, 4096, 0o1600));
    }
    // Threads still start (clone3 says ENOSYS, the C library falls back to clone).
    let t = std::thread::spawn(|| 7).join().unwrap();
    println!("probe thread {}", if t == 7 { 0 } else { 1 });
}

#[test]
fn the_daemons_own_sandbox_refuses_what_the_unit_refuses() {
    require_root!();
    let env = TestEnv::new();
    std::fs::write(env.path("f"), b"x").unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sandbox_probe_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KMSENTRY_SANDBOX_PROBE", "1")
        .env("KMSENTRY_SANDBOX_DIR", env.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap_or_default();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8(out.stderr).unwrap_or_default()
    );
    let got: std::collections::BTreeMap<&str, i32> = text
        .lines()
        .filter_map(|l| l.find("probe ").map(|i| &l[i + 6..]))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    let ok = ["socket_unix", "mmap_rw", "chmod_plain", "thread"];
    for k in ok {
        assert_eq!(got.get(k), Some(&0), "{k} must work: {text}");
    }
    for k in [
        "socket_inet",
        "socket_packet",
        "unshare_mnt",
        "unshare_net",
        "mprotect_x",
        "mmap_wx",
        "chmod_suid",
        "chmod_sgid",
        "create_suid",
        "personality",
        "clock_settime",
        "sethostname",
        "ptrace",
        "mount",
        "syslog",
        "init_module",
        "sched_fifo",
        "setuid",
        "execve",
        "shmget",
    ] {
        assert_eq!(
            got.get(k),
            Some(&libc::EPERM),
            "{k} must fail with EPERM: {text}"
        );
    }
    assert!(!env.path("suid").exists());
    assert_eq!(
        std::fs::metadata(env.path("f"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o640
    );
}

// ---- the real daemon, as the unit runs it ----

/// The mount namespace systemd builds for the unit, then `setpriv` to the daemon's user with
/// the unit's ambient capabilities, then the daemon. Arguments: state dir, restore dir, the
/// new /dev's build dir, then the daemon's command line.
const UNIT_NAMESPACE: &str = r#"
set -eu
state=$1 restore=$2 newdev=$3 uid=$4 caps=$5; shift 5
mount --make-rprivate /
# PrivateDevices=yes: a /dev with only the pseudo devices.
mount -t tmpfs -o mode=0755,nosuid,noexec tmpfs "$newdev"
for d in null zero full random urandom tty; do
  touch "$newdev/$d"; mount --bind "/dev/$d" "$newdev/$d"
done
ln -s /proc/self/fd "$newdev/fd"
mkdir "$newdev/shm"; mount -t tmpfs -o mode=1777 tmpfs "$newdev/shm"
mount --move "$newdev" /dev
# ProtectProc=invisible: a proc instance that hides processes of other users.
mount -t proc -o hidepid=invisible,nosuid,nodev,noexec proc /proc
# ProtectKernelTunables=yes.
mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro /proc/sys
# PrivateTmp=yes.
mount -t tmpfs -o mode=1777 tmpfs /tmp; mount -t tmpfs -o mode=1777 tmpfs /var/tmp
# ProtectHome=yes.
for h in /home /root /run/user; do
  [ -d "$h" ] && mount -t tmpfs -o ro,mode=0755 tmpfs "$h"
done
# ReadWritePaths= (state, logs, socket; with --store, the directories it restores into).
for p in "$state" "$restore"; do mount --bind "$p" "$p"; done
# ProtectSystem=strict, ProtectControlGroups=yes: everything else read-only, /sys included.
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r mp; do
  case "$mp" in
    /proc|/proc/*|/dev|/dev/*|/tmp|/var/tmp|"$state"|"$restore") continue;;
  esac
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
touch /usr/.kmsentry-rw-probe 2>/dev/null && { echo "ProtectSystem emulation failed" >&2; exit 97; }
exec setpriv --reuid="$uid" --regid="$uid" --clear-groups \
  --bounding-set=-all,"$caps" --inh-caps=-all,"$caps" --ambient-caps=-all,"$caps" -- "$@"
"#;

#[test]
fn the_daemon_works_under_every_restriction_of_the_unit() {
    require_root!();
    if !have("setpriv") || !have("unshare") {
        return;
    }
    // Not under /tmp (PrivateTmp) nor /root (ProtectHome): where the daemon can see it.
    let t = tempfile::Builder::new()
        .prefix("kmsentry-sandbox-test.")
        .tempdir_in("/var/lib")
        .unwrap();
    let d = t.path();
    let (state, restore, newdev) = (d.join("state"), d.join("conf"), d.join("newdev"));
    for p in [&state, &restore, &newdev, &d.join("keys")] {
        std::fs::create_dir_all(p).unwrap();
    }
    let key = d.join("keys/client.key");
    std::fs::write(&key, b"key\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let conf = restore.join("kms.yaml");
    std::fs::write(&conf, b"endpoint: kms.example\n").unwrap();
    sh("chown", &["4242:4242".as_ref(), conf.as_os_str()]);
    sh(
        "setfattr",
        &[
            "-n".as_ref(),
            "user.kms".as_ref(),
            "-v".as_ref(),
            "1".as_ref(),
            conf.as_os_str(),
        ],
    );
    let reader = d.join("allowed-cat");
    std::fs::copy("/usr/bin/cat", &reader).unwrap();
    let policy = d.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\ngroups:\n  - name: keys\n    class: private-key\n    paths: [{}]\n    access:\n      mode: enforce\n      allow:\n        - exe: {}\n  - name: conf\n    class: kms-config\n    paths: [{}]\n    on_change: [alert, restore]\n",
            d.join("keys").to_str().unwrap(),
            reader.to_str().unwrap(),
            restore.to_str().unwrap()
        ),
    )
    .unwrap();
    let (db, store) = (state.join("baseline.db"), state.join("store"));
    let env = TestEnv::new();
    let r = env.run(&[
        "baseline".as_ref(),
        "init".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--db".as_ref(),
        db.as_os_str(),
        "--store".as_ref(),
        store.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // systemd hands StateDirectory= to the service's user.
    let uid = "61616";
    sh(
        "chown",
        &[
            "-R".as_ref(),
            format!("{uid}:{uid}").as_ref(),
            state.as_os_str(),
        ],
    );
    let caps: Vec<String> = kmsentry::sandbox::CAPABILITIES
        .iter()
        .map(|(n, _)| format!("+{}", n.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let alerts = state.join("alerts.jsonl");
    let script = d.join("unit-namespace.sh");
    std::fs::write(&script, UNIT_NAMESPACE).unwrap();
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh"])
        .arg(&script)
        .args([&state, &restore, &newdev])
        .args([uid, &caps.join(",")])
        .arg(env!("CARGO_BIN_EXE_kmsentry"))
        .arg("watch")
        .arg("--policy")
        .arg(&policy)
        .arg("--db")
        .arg(&db)
        .arg("--store")
        .arg(&store)
        .arg("--alerts")
        .arg(&alerts)
        .arg("--status-socket")
        .arg(state.join("status.sock"))
        .args(["--seccomp", "kill", "--run-for", "60"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("daemon.stderr")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stderr = || std::fs::read_to_string(d.join("daemon.stderr")).unwrap_or_default();
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&alerts)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let wait_for = |what: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        let t = Instant::now();
        loop {
            if let Some(a) = read().into_iter().find(|a| pred(a)) {
                return a;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no {what}: {:#?}\ndaemon stderr: {}",
                read(),
                stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let t = Instant::now();
    while !read().iter().any(|a| a["kind"] == "started") {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "the daemon exited ({st}) under the unit's restrictions: {}",
                stderr()
            );
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no `started`");
        std::thread::sleep(Duration::from_millis(20));
    }
    // What /proc says about the running daemon: the unit's user, capabilities and filters.
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().next(),
        Some(uid)
    );
    let eff = u64::from_str_radix(&status_field(pid, "CapEff"), 16).unwrap();
    let bnd = u64::from_str_radix(&status_field(pid, "CapBnd"), 16).unwrap();
    assert_eq!((eff, bnd), (unit_caps_mask(), unit_caps_mask()));
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    assert_eq!(status_field(pid, "Umask"), "0077");

    // Enforce: root's cat is denied; the allowed exe reads.
    let denied = Command::new("cat").arg(&key).output().unwrap();
    assert!(!denied.status.success());
    wait_for("access/denied", &|a| {
        a["kind"] == "access" && a["outcome"] == "denied" && a["process"]["exe"] == "/usr/bin/cat"
    });
    let allowed = Command::new(&reader).arg(&key).output().unwrap();
    assert_eq!(allowed.stdout, b"key\n");
    // Restore: a tampered config comes back with its content, owner and xattr.
    std::fs::write(&conf, b"endpoint: evil.example\n").unwrap();
    sh("chown", &["0:0".as_ref(), conf.as_os_str()]);
    wait_for("restored", &|a| a["kind"] == "restored");
    let t = Instant::now();
    loop {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&conf).unwrap();
        if std::fs::read(&conf).unwrap() == b"endpoint: kms.example\n" && m.uid() == 4242 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "not restored");
        std::thread::sleep(Duration::from_millis(20));
    }
    let x = Command::new("getfattr")
        .args(["--only-values", "-n", "user.kms"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(x.stdout, b"1");

    // A clean stop under the filter (signals, the stopped record, the exit path).
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    );
    let t = Instant::now();
    let st = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = stderr();
    assert!(st.success(), "exit {st}: {err}");
    assert!(read().iter().any(|a| a["kind"] == "stopped"), "{err}");
    let r = env.run(&["log".as_ref(), "verify".as_ref(), alerts.as_os_str()]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

/// `getpid` through the 32-bit entry point (`int 0x80`, i386 number 20).
#[cfg(target_arch = "x86_64")]
fn int80_getpid() -> i64 {
    let mut ret: i64 = 20;
    // SAFETY: `int 0x80` with eax = 20 is i386 getpid: no memory is read or written; the
    // kernel clobbers only rax (the result) and r8-r11, which are declared.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inout("rax") ret,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack)
        );
    }
    ret
}

/// Child role: optionally apply the sandbox, then make a 32-bit system call.
#[cfg(target_arch = "x86_64")]
#[test]
fn sandbox_int80_child() {
    let Ok(apply) = std::env::var("KMSENTRY_SANDBOX_INT80") else {
        return;
    };
    if apply == "1" {
        kmsentry::sandbox::apply(kmsentry::sandbox::Mode::Enforce, false).unwrap();
    }
    println!("int80 {}", int80_getpid());
}

/// SystemCallArchitectures=native: the filter kills a process that enters through another
/// architecture's entry point (here the i386 one, which this kernel offers: shown first).
#[cfg(target_arch = "x86_64")]
#[test]
fn the_sandbox_kills_a_system_call_of_another_architecture() {
    use std::os::unix::process::ExitStatusExt;
    require_root!();
    if !Path::new("/proc/sys/abi/vsyscall32").exists() {
        assert!(
            !ci(),
            "CI=true but this kernel has no IA32 emulation to test against"
        );
        eprintln!("skipped: no IA32 emulation in this kernel");
        return;
    }
    let run = |apply: &str| {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sandbox_int80_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KMSENTRY_SANDBOX_INT80", apply)
            .output()
            .unwrap()
    };
    let free = run("0");
    let text = String::from_utf8(free.stdout).unwrap_or_default();
    let pid: i64 = text
        .split("int80 ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(free.status.success() && pid > 0, "{text}");
    let boxed = run("1");
    assert_eq!(boxed.status.signal(), Some(libc::SIGSYS), "{boxed:?}");
    assert!(!String::from_utf8(boxed.stdout)
        .unwrap_or_default()
        .contains("int80 "));
}
