//! Kernel audit denials against the real kernel (root only; under CI=true they must run).
//! The audit rule set is global to the host, so these tests take one lock each.

#[macro_use]
mod util;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kmsentry::watch::audit::{installed_rules, AuditWatch, Denial, Target, MAX_RULES};
use util::nix_is_root;

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A world-traversable temp dir (tempfile makes 0700 ones; nobody must reach the files so that
/// the kernel refuses the open of the file itself, not the lookup).
fn dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("kmsentry-audit-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// A root-owned 0600 file.
fn key(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, b"secret").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn file(p: &Path) -> Target {
    Target {
        path: p.as_os_str().as_bytes().to_vec(),
        is_dir: false,
    }
}

/// `cat` as nobody; it must fail. `cwd` lets the name be relative.
fn cat_as_nobody(path: &Path, cwd: &Path) {
    let out = Command::new("timeout")
        .args([
            "10",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "cat",
        ])
        .arg(path)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody could read {path:?}");
}

fn cat_as_root(path: &Path) {
    let out = Command::new("timeout")
        .arg("10")
        .arg("cat")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// Every denial within `within` (bounded wait).
fn collect(w: &mut AuditWatch, within: Duration) -> Vec<Denial> {
    let end = Instant::now() + within;
    let mut v = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Some(d) = w.recv(left.min(Duration::from_millis(100))).unwrap() {
            v.push(d);
        }
    }
    v
}

/// The first denial of `path` within `within`.
fn wait_for(w: &mut AuditWatch, path: &Path, within: Duration) -> Option<Denial> {
    let want = path.as_os_str().as_bytes();
    let end = Instant::now() + within;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Some(d) = w.recv(left.min(Duration::from_millis(100))).unwrap() {
            if d.path == want {
                return Some(d);
            }
        }
    }
    None
}

/// The paths of the rules installed under `key`. Other kmsentry daemons and test runs on this
/// host have rules of their own (`kmsentry-<their pid>-…`): only ours are ours to check.
fn rules_of(key: &str) -> Vec<Vec<u8>> {
    installed_rules()
        .unwrap()
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(key.as_bytes()))
        .map(|r| r.path.unwrap_or_default())
        .collect()
}

/// Every kmsentry rule key installed now.
fn kmsentry_keys() -> Vec<String> {
    installed_rules()
        .unwrap()
        .into_iter()
        .filter_map(|r| String::from_utf8(r.key?).ok())
        .filter(|k| k.starts_with("kmsentry-"))
        .collect()
}

#[test]
fn a_refused_read_of_a_root_only_key_is_reported() {
    require_root!();
    let _g = lock();
    let d = dir();
    let k = key(d.path(), "client.key");
    let mut w = AuditWatch::start(&[file(&k)]).unwrap();
    cat_as_nobody(&k, Path::new("/"));
    let den = wait_for(&mut w, &k, Duration::from_secs(10)).expect("no denial within 10 s");
    assert_eq!(den.errno, 13);
    assert_eq!(den.process.uid, Some(65534));
    assert_eq!(den.process.euid, Some(65534));
    assert_eq!(den.process.exe.as_deref(), Some(&b"/usr/bin/cat"[..]));
    assert_eq!(den.process.comm.as_deref(), Some(&b"cat"[..]));
    assert!(
        ["open", "openat", "openat2"].contains(&den.syscall),
        "{}",
        den.syscall
    );
    let cmdline = format!("cat {}", k.to_str().unwrap());
    assert_eq!(den.process.cmdline.as_deref(), Some(cmdline.as_bytes()));
    assert!(den.process.pid > 0 && den.process.ppid.is_some_and(|p| p > 0));
    assert!(den.serial > 0);
    let age = jiff::Timestamp::now().duration_since(den.ts);
    assert!(age.as_secs() < 10, "timestamp {} is off", den.ts);
}

#[test]
fn a_relative_name_is_joined_to_the_working_directory() {
    require_root!();
    let _g = lock();
    let d = dir();
    let sub = d.path().join("keys");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let k = key(&sub, "rel.key");
    let mut w = AuditWatch::start(&[Target {
        path: sub.as_os_str().as_bytes().to_vec(),
        is_dir: true,
    }])
    .unwrap();
    cat_as_nobody(Path::new("./rel.key"), &sub);
    let den = wait_for(&mut w, &k, Duration::from_secs(10)).expect("no denial within 10 s");
    assert_eq!(den.errno, 13);
}

#[test]
fn allowed_reads_and_files_outside_the_targets_are_not_reported() {
    require_root!();
    let _g = lock();
    let d = dir();
    let k = key(d.path(), "watched.key");
    let other = key(d.path(), "other.key");
    let mut w = AuditWatch::start(&[file(&k)]).unwrap();
    cat_as_root(&k);
    cat_as_nobody(&other, Path::new("/"));
    let got = collect(&mut w, Duration::from_millis(1500));
    assert!(got.is_empty(), "{got:?}");
    // The watch is alive: a refused read of the target does arrive.
    cat_as_nobody(&k, Path::new("/"));
    assert!(wait_for(&mut w, &k, Duration::from_secs(10)).is_some());
}

#[test]
fn dropping_the_watch_removes_every_rule() {
    require_root!();
    let _g = lock();
    let d = dir();
    let k = key(d.path(), "a.key");
    let w = AuditWatch::start(&[
        file(&k),
        Target {
            path: d.path().as_os_str().as_bytes().to_vec(),
            is_dir: true,
        },
    ])
    .unwrap();
    let key = w.key().to_string();
    let n = rules_of(&key).len();
    assert!(
        n >= 2 && n == w.rule_count(),
        "{n} rules, {} installed",
        w.rule_count()
    );
    drop(w);
    assert_eq!(rules_of(&key), Vec::<Vec<u8>>::new());
}

#[test]
fn rules_of_a_killed_instance_are_removed_at_start() {
    require_root!();
    let _g = lock();
    let d = dir();
    let k = key(d.path(), "a.key");
    // A live daemon's rules (a process that is alive, with its start time) must stay. It is
    // named like one, so that an older kmsentry on this host (which judges by name) keeps them.
    let sleeper = d.path().join("kmsentry-sleeper");
    std::fs::copy("/usr/bin/sleep", &sleeper).unwrap();
    std::fs::set_permissions(&sleeper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Command::new(&sleeper).arg("60").spawn().unwrap();
    let live_key = format!("kmsentry-{}-{}", child.id(), start_of(child.id()));
    let live = AuditWatch::start_with_key(&[file(&k)], &live_key).unwrap();
    // A leaked watch keeps its rules, as a kill -9 would; pid 999999999 cannot exist. (Each
    // start removes the rules of earlier watches of this very process, so one at a time.)
    std::mem::forget(AuditWatch::start_with_key(&[file(&k)], "kmsentry-999999999").unwrap());
    assert!(!rules_of("kmsentry-999999999").is_empty());
    let w = AuditWatch::start(&[file(&k)]).unwrap();
    assert!(rules_of("kmsentry-999999999").is_empty());
    assert!(!rules_of(w.key()).is_empty());
    assert!(!rules_of(&live_key).is_empty(), "{:?}", kmsentry_keys());
    drop(w);
    // One of a pid that is alive but is another process than the one that installed it (pid 1,
    // another start time).
    let reused = format!("kmsentry-1-{}", start_of(1) + 12345);
    std::mem::forget(AuditWatch::start_with_key(&[file(&k)], &reused).unwrap());
    assert!(!rules_of(&reused).is_empty());
    let w = AuditWatch::start(&[file(&k)]).unwrap();
    assert!(rules_of(&reused).is_empty());
    assert!(!rules_of(&live_key).is_empty());
    let key = w.key().to_string();
    drop(w);
    assert!(rules_of(&key).is_empty());
    drop(live);
    assert!(rules_of(&live_key).is_empty());
    let _ = child.kill();
    let _ = child.wait();
}

/// Start time of `pid` (`/proc/PID/stat` field 22).
fn start_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn update_replaces_the_targets() {
    require_root!();
    let _g = lock();
    let d = dir();
    let a = key(d.path(), "a.key");
    let b = key(d.path(), "b.key");
    let mut w = AuditWatch::start(&[file(&a)]).unwrap();
    w.update(&[file(&b)]).unwrap();
    let paths = rules_of(w.key());
    assert!(!paths.is_empty());
    assert!(
        paths.iter().all(|p| p == b.as_os_str().as_bytes()),
        "{paths:?}"
    );
    cat_as_nobody(&a, Path::new("/"));
    cat_as_nobody(&b, Path::new("/"));
    let got = collect(&mut w, Duration::from_millis(1500));
    let got: Vec<&[u8]> = got.iter().map(|d| d.path.as_slice()).collect();
    assert_eq!(got, vec![b.as_os_str().as_bytes()]);
    let key = w.key().to_string();
    drop(w);
    assert!(rules_of(&key).is_empty());
}

#[test]
fn too_many_targets_widen_to_directories_and_still_report_only_targets() {
    require_root!();
    let _g = lock();
    let d = dir();
    let keys: Vec<PathBuf> = (0..100)
        .map(|i| key(d.path(), &format!("k{i}.key")))
        .collect();
    let outside = key(d.path(), "not-a-target.key");
    let targets: Vec<Target> = keys.iter().map(|k| file(k)).collect();
    let mut w = AuditWatch::start(&targets).unwrap();
    assert!(w.widened());
    assert!(w.rule_count() <= MAX_RULES);
    assert!(rules_of(w.key())
        .iter()
        .all(|p| p == d.path().as_os_str().as_bytes()));
    cat_as_nobody(&outside, Path::new("/"));
    cat_as_nobody(&keys[42], Path::new("/"));
    let got = collect(&mut w, Duration::from_millis(1500));
    let got: Vec<&[u8]> = got.iter().map(|d| d.path.as_slice()).collect();
    assert_eq!(got, vec![keys[42].as_os_str().as_bytes()]);
}

#[test]
fn a_missing_directory_target_is_skipped_not_fatal() {
    require_root!();
    let _g = lock();
    let d = dir();
    let k = key(d.path(), "a.key");
    let missing = Target {
        path: d.path().join("nope").as_os_str().as_bytes().to_vec(),
        is_dir: true,
    };
    let w = AuditWatch::start(&[file(&k), missing.clone()]).unwrap();
    assert_eq!(w.skipped(), &[missing]);
    assert!(w.rule_count() >= 2);
}

/// Cost of a refused open with and without a rule on the file (and of an allowed open of an
/// unrelated file, which every process on the host pays once any audit rule exists), while a
/// thread drains the records as the daemon would. Medians of 5 rounds.
/// `cargo test --test audit -- --ignored --nocapture measure`.
#[test]
#[ignore]
fn measure_cost_per_open() {
    require_root!();
    let _g = lock();
    let d = dir();
    let k = key(d.path(), "bench.key");
    let free = d.path().join("free");
    std::fs::write(&free, b"x").unwrap();
    // `gap`: pause between opens, so the kernel's record queue is empty at each (an
    // isolated denial) instead of a flood paced by the kernel's audit thread.
    let run_gap = |path: &Path, refused: bool, n: u32, gap: Option<Duration>| -> f64 {
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            if refused {
                // This thread only: a raw setresuid changes one thread's credentials.
                let nobody = rustix::process::Uid::from_raw(65534);
                rustix::thread::set_thread_res_uid(nobody, nobody, nobody).unwrap();
            }
            let mut total = Duration::ZERO;
            for _ in 0..n {
                if let Some(g) = gap {
                    std::thread::sleep(g);
                }
                let t = Instant::now();
                let r =
                    rustix::fs::open(&path, rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty());
                total += t.elapsed();
                assert_eq!(r.is_err(), refused);
            }
            total.as_nanos() as f64 / f64::from(n)
        })
        .join()
        .unwrap()
    };
    let run = |path: &Path, refused: bool, n: u32| run_gap(path, refused, n, None);
    let one = |path: &Path| run_gap(path, true, 200, Some(Duration::from_millis(2)));
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut br, mut bo, mut rr, mut ro) = (vec![], vec![], vec![], vec![]);
    let (mut b1, mut r1) = (vec![], vec![]);
    for _ in 0..5 {
        b1.push(one(&k));
        br.push(run(&k, true, 5_000));
        bo.push(run(&free, false, 100_000));
        let w = AuditWatch::start(&[file(&k)]).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let drain = std::thread::spawn(move || {
            let mut w = w;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = w.recv(Duration::from_millis(20));
            }
            w
        });
        r1.push(one(&k));
        rr.push(run(&k, true, 5_000));
        ro.push(run(&free, false, 100_000));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(drain.join().unwrap());
    }
    let (br, bo, rr, ro) = (median(br), median(bo), median(rr), median(ro));
    let (b1, r1) = (median(b1), median(r1));
    println!(
        "isolated refused open: {b1:.0} ns without rules, {r1:.0} ns with (+{:.0} ns)",
        r1 - b1
    );
    println!(
        "flood of refused opens: {br:.0} ns without rules, {rr:.0} ns with (+{:.0} ns); \
         allowed open of another file: {bo:.0} ns without, {ro:.0} ns with (+{:.0} ns)",
        rr - br,
        ro - bo
    );
}

#[test]
fn the_enabled_flag_is_as_it_was_after_drop() {
    require_root!();
    let _g = lock();
    let before = kmsentry::watch::audit::kernel_status().unwrap();
    let d = dir();
    let k = key(d.path(), "a.key");
    let w = AuditWatch::start(&[file(&k)]).unwrap();
    assert_ne!(kmsentry::watch::audit::kernel_status().unwrap().enabled, 0);
    drop(w);
    let after = kmsentry::watch::audit::kernel_status().unwrap();
    assert_eq!(after.enabled, before.enabled);
    eprintln!("kernel audit status: {after:?}");
}

#[test]
fn eperm_is_reported_and_odd_names_arrive_as_bytes() {
    require_root!();
    let _g = lock();
    let d = dir();
    let name = std::ffi::OsStr::from_bytes(b"a key \xff\x1b.pem");
    let k = d.path().join(name);
    std::fs::write(&k, b"public").unwrap();
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut w = AuditWatch::start(&[Target {
        path: d.path().as_os_str().as_bytes().to_vec(),
        is_dir: true,
    }])
    .unwrap();
    // Readable by all, but O_NOATIME is for the owner only: the kernel answers EPERM.
    let mut arg = b"if=".to_vec();
    arg.extend_from_slice(k.as_os_str().as_bytes());
    let out = Command::new("timeout")
        .args([
            "10",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args(["dd", "iflag=noatime", "status=none"])
        .arg(std::ffi::OsStr::from_bytes(&arg))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let den = wait_for(&mut w, &k, Duration::from_secs(10)).expect("no denial within 10 s");
    assert_eq!(den.errno, 1);
    assert_eq!(den.process.comm.as_deref(), Some(&b"dd"[..]));
}

#[test]
fn a_flood_that_overflows_the_socket_is_reported_as_lost_records() {
    require_root!();
    let _g = lock();
    let d = dir();
    let k = key(d.path(), "flood.key");
    let mut w = AuditWatch::start(&[file(&k)]).unwrap();
    // A small receive buffer, so that a few thousand records overflow it: kernel audit is
    // shared with every other reader on the host, which a flood of tens of thousands would
    // slow down (the kernel's backlog) and overflow in turn.
    w.set_receive_buffer(32 * 1024).unwrap();
    // One shell refusing 3000 opens while nobody reads: far more than that buffer holds.
    // (Its stderr is closed, not sent to /dev/null: the test must not depend on that node.)
    let script = format!(
        "i=0; while [ $i -lt 3000 ]; do true < '{}'; i=$((i+1)); done 2>&-; exit 0",
        k.to_str().unwrap()
    );
    let out = Command::new("timeout")
        .args([
            "120",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let end = Instant::now() + Duration::from_secs(30);
    let mut lost = false;
    let mut seen = 0u32;
    while Instant::now() < end {
        match w.recv(Duration::from_millis(100)) {
            Ok(Some(_)) => seen += 1,
            Ok(None) => break,
            Err(e) => {
                assert!(kmsentry::watch::audit::is_lost_records(&e), "{e}");
                lost = true;
                break;
            }
        }
    }
    assert!(
        lost,
        "no ENOBUFS after 3000 refused opens ({seen} denials read)"
    );
    // The watch goes on after the loss.
    cat_as_nobody(&k, Path::new("/"));
    let end = Instant::now() + Duration::from_secs(10);
    let mut again = false;
    while Instant::now() < end && !again {
        again = matches!(w.recv(Duration::from_millis(100)), Ok(Some(_)));
    }
    assert!(again, "no denial after the loss");
}

#[test]
fn denials_logged_under_an_earlier_rule_of_another_tool_are_still_reported() {
    require_root!();
    let _g = lock();
    let d = dir();
    let k = key(d.path(), "a.key");
    // Another tool's rule, loaded first, matches first: the kernel logs its key, not ours.
    let other = AuditWatch::start_with_key(
        &[Target {
            path: d.path().as_os_str().as_bytes().to_vec(),
            is_dir: true,
        }],
        "test-access",
    )
    .unwrap();
    let mut w = AuditWatch::start(&[file(&k)]).unwrap();
    cat_as_nobody(&k, Path::new("/"));
    let den = wait_for(&mut w, &k, Duration::from_secs(10)).expect("no denial within 10 s");
    assert_eq!(den.errno, 13);
    drop(w);
    drop(other);
    assert!(installed_rules()
        .unwrap()
        .iter()
        .all(|r| r.key.as_deref() != Some(b"test-access")));
}

#[test]
fn the_watch_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<AuditWatch>();
}

#[test]
fn in_a_private_network_namespace_audit_is_unavailable() {
    require_root!();
    if std::env::var_os("KMSENTRY_TEST_IN_NETNS").is_some() {
        let e = AuditWatch::start(&[])
            .err()
            .expect("started in a private netns");
        assert!(
            matches!(e, kmsentry::watch::audit::Unavailable::PrivateNetwork),
            "{e}"
        );
        return;
    }
    let out = Command::new("timeout")
        .args(["60", "unshare", "--net"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "in_a_private_network_namespace_audit_is_unavailable",
        ])
        .env("KMSENTRY_TEST_IN_NETNS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[test]
fn a_zero_timeout_polls_without_blocking() {
    require_root!();
    let _g = lock();
    let d = dir();
    let k = key(d.path(), "a.key");
    let mut w = AuditWatch::start(&[file(&k)]).unwrap();
    let t = Instant::now();
    assert!(w.recv(Duration::ZERO).unwrap().is_none());
    assert!(t.elapsed() < Duration::from_millis(100));
    cat_as_nobody(&k, Path::new("/"));
    let end = Instant::now() + Duration::from_secs(10);
    let mut got = None;
    while got.is_none() && Instant::now() < end {
        got = w.recv(Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        got.expect("no denial within 10 s").path,
        k.as_os_str().as_bytes()
    );
}
